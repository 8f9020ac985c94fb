/*
 * test_crash.c - kill -9 crash test of atpd's durability, suite `stress`.
 *
 *   test_crash ATPD DEVBROKER [ITERATIONS] [--no-events]
 *
 * Starts the standalone dev broker once, then ITERATIONS times (default 20):
 * starts atpd on the same data folder (appendfsync always, a snapshot every
 * second, so crashes also land in the middle of snapshots), runs
 * reservations from several client threads through the client library while
 * a producer thread publishes adjust events to Kafka, and kills atpd with
 * SIGKILL at a random moment. After every restart: every reservation a client
 * saw acknowledged is there, in its acknowledged state or a later one. At the
 * end (events still flowing during the crashes, and while atpd was down):
 *   - every produced event applied exactly once: each item's on_hand equals
 *     its initial stock plus the sum of the deltas produced for it, and stays
 *     so;
 *   - no item is oversold: on_hand - allocated - reserved >= 0;
 *   - the state equals a model rebuilt from the client log and the events:
 *     each reservation in an allowed state (its acknowledged one, or one an
 *     unacknowledged request in flight at the crash could have led to), and
 *     each item's reserved and allocated the sums of its held and committed
 *     reservations.
 * --no-events leaves Kafka out (reservations only).
 *
 * Processes it starts are stopped by pid. Ports are ephemeral (port files).
 * A longer run: test_crash ATPD DEVBROKER 200 (see docs/BENCHMARKS.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "atp/client.h"
#include "atp/error.h"
#include "atp/store.h"

#define NSKU        12
#define NLOC        2
#define NCLIENTS    4
#define KEYS_PER_IT 8000 /* reservation keys one atpd life can make, at most */
#define INITIAL     3000 /* admin stock per item before the events */
#define TOPIC       "crash.events"
#define EVENTS_RATE 1000 /* per second */

static const char *const locs[NLOC] = {"DC1", "DC2"};

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static pid_t atpd_pid = -1, broker_pid = -1;

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    if (atpd_pid > 0)
        kill(atpd_pid, SIGKILL);
    if (broker_pid > 0)
        kill(broker_pid, SIGTERM);
    exit(1);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int item_index(const char *sku, const char *loc)
{
    int s = atoi(sku + 3);
    int l = strcmp(loc, "DC1") == 0 ? 0 : 1;
    return s * NLOC + l;
}

/* --- the client log ---------------------------------------------------------------- */

enum { A_NONE = 0 }; /* acked state; else enum atp_res_state */
enum { P_NONE = 0, P_RESERVE, P_COMMIT, P_RELEASE };

struct rec {
    char key[40];
    int iter;    /* iteration that made it */
    int acked;   /* A_NONE: no reservation acknowledged (never, or refused) */
    int pending; /* a request whose answer never came */
    uint64_t id;
    int nlines;
    int item[2];
    int qty[2];
};

static struct rec *recs;
static int max_keys;
static char max_res[24]; /* atpd's max-reservations: every key may still be held */
static int initial = INITIAL;
static atomic_int nrecs;

static struct rec *rec_new(void)
{
    int i = atomic_fetch_add(&nrecs, 1);
    if (i >= max_keys)
        die("too many keys (%d)", max_keys);
    return &recs[i];
}

/* --- processes ------------------------------------------------------------------------- */

static char *dir, *workdir, *bootstrap;
static const char *atpd_bin;
static bool with_events = true;

static pid_t spawn(char *const argv[], int out_fd)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        if (out_fd >= 0) {
            dup2(out_fd, 1);
            close(out_fd);
        }
        int log = open("/dev/null", O_WRONLY);
        char *p = getenv("ATP_CRASH_LOG");
        if (p)
            log = open(p, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(log, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int iteration;

static uint16_t start_atpd(void)
{
    /*
     * A consumer group of its own per start: atpd seeks to the offsets it
     * recovered, never to Kafka's, so nothing depends on the group, and a new
     * member is assigned at once instead of waiting for the killed one's
     * session to time out.
     */
    char group[32];
    snprintf(group, sizeof(group), "atpd-crash-%d", iteration);
    char portfile[512];
    snprintf(portfile, sizeof(portfile), "%s/port", workdir);
    unlink(portfile);
    char *argv[] = {(char *)atpd_bin,
                    "--port",
                    "0",
                    "--port-file",
                    portfile,
                    "-o",
                    "http no",
                    "--workers",
                    "2",
                    "--dir",
                    dir,
                    "--appendfsync",
                    "always",
                    "--snapshot-interval",
                    "1s",
                    "--max-items",
                    "1024",
                    "--max-reservations",
                    max_res,
                    "--kafka-brokers",
                    with_events ? bootstrap : "",
                    "--kafka-topic",
                    TOPIC,
                    "--kafka-group",
                    group,
                    NULL};
    if (!with_events)
        argv[19] = NULL; /* no Kafka options */
    atpd_pid = spawn(argv, -1);
    uint64_t t0 = now_ms();
    for (;;) {
        FILE *f = fopen(portfile, "r");
        unsigned port = 0;
        if (f) {
            int n = fscanf(f, "%u", &port);
            fclose(f);
            if (n == 1 && port)
                return (uint16_t)port;
        }
        int st;
        if (waitpid(atpd_pid, &st, WNOHANG) == atpd_pid) {
            atpd_pid = -1;
            die("atpd exited at start-up (status %d); set ATP_CRASH_LOG=FILE to see why", st);
        }
        if (now_ms() - t0 > 30000)
            die("atpd did not start within 30 s");
        sleep_ms(10);
    }
}

static void kill_atpd(int sig)
{
    if (atpd_pid <= 0)
        return;
    kill(atpd_pid, sig);
    int st;
    waitpid(atpd_pid, &st, 0);
    if (sig == SIGTERM && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        die("atpd did not stop cleanly on SIGTERM (status %d)", st);
    atpd_pid = -1;
}

static void start_broker(const char *bin)
{
    int fds[2];
    if (pipe(fds))
        die("pipe");
    char *argv[] = {(char *)bin, "-p", "2", "-t", TOPIC, NULL};
    broker_pid = spawn(argv, fds[1]);
    close(fds[1]);
    char line[512];
    FILE *f = fdopen(fds[0], "r");
    if (!fgets(line, sizeof(line), f))
        die("atp-devbroker printed no address");
    line[strcspn(line, "\r\n")] = 0;
    bootstrap = strdup(line);
    fclose(f);
}

/* --- Kafka producer ------------------------------------------------------------------------ */

static atomic_long delivered[NSKU * NLOC]; /* sum of deltas acknowledged by the broker */
static atomic_long produced_events;
static atomic_int producer_stop;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        die("event not delivered: %s", rd_kafka_err2str(m->err));
    long idx_delta = (long)(intptr_t)m->_private;
    atomic_fetch_add(&delivered[idx_delta >> 8], idx_delta & 0xff);
    atomic_fetch_add(&produced_events, 1);
}

static void *producer_main(void *arg)
{
    (void)arg;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "acks", "all", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "enable.idempotence", "true", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "linger.ms", "2", err, sizeof(err)))
        die("producer config: %s", err);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk)
        die("producer: %s", err);
    unsigned seed = 99;
    long n = 0;
    uint64_t t0 = now_ms();
    while (!atomic_load(&producer_stop)) {
        int s = (int)(rand_r(&seed) % NSKU), l = (int)(rand_r(&seed) % NLOC);
        int delta = 1 + (int)(rand_r(&seed) % 5);
        char sku[16], value[256];
        snprintf(sku, sizeof(sku), "CR-%02d", s);
        int len = snprintf(value, sizeof(value),
                           "{\"event_id\":\"crash-%ld\",\"type\":\"adjust\",\"sku\":\"%s\","
                           "\"loc\":\"%s\",\"delta\":%d,\"reason\":\"receipt\"}",
                           n, sku, locs[l], delta);
        long tag = ((long)(s * NLOC + l) << 8) | delta;
        rd_kafka_resp_err_t e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(sku, strlen(sku)),
            RD_KAFKA_V_VALUE(value, (size_t)len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_OPAQUE((void *)(intptr_t)tag), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 10);
            continue;
        }
        if (e)
            die("produce: %s", rd_kafka_err2str(e));
        n++;
        rd_kafka_poll(rk, 0);
        /* Pace: EVENTS_RATE per second. */
        uint64_t due = t0 + (uint64_t)n * 1000 / EVENTS_RATE;
        uint64_t now = now_ms();
        if (due > now)
            rd_kafka_poll(rk, (int)(due - now));
    }
    if (rd_kafka_flush(rk, 30000))
        die("producer flush timed out");
    rd_kafka_destroy(rk);
    return NULL;
}

/* --- reservation clients --------------------------------------------------------------- */

static uint16_t port;

struct cl {
    int id;
    unsigned seed;
    long acked_ops;
};

static void *client_main(void *arg)
{
    struct cl *cl = arg;
    struct atp_client *c;
    if (atp_client_connect("127.0.0.1", port, &c))
        return NULL;
    atp_client_set_timeout(c, 5000);
    for (int n = 0;; n++) {
        struct rec local = {0}, *r = &local;
        snprintf(r->key, sizeof(r->key), "i%d-c%d-%d", iteration, cl->id, n);
        r->iter = iteration;
        r->nlines = 1 + (int)(rand_r(&cl->seed) % 2);
        struct atp_client_line lines[2];
        char skus[2][16];
        for (int i = 0; i < r->nlines; i++) {
            int s = (int)(rand_r(&cl->seed) % NSKU), l = (int)(rand_r(&cl->seed) % NLOC);
            if (i == 1 && s * NLOC + l == r->item[0])
                s = (s + 1) % NSKU;
            snprintf(skus[i], sizeof(skus[i]), "CR-%02d", s);
            r->item[i] = s * NLOC + l;
            r->qty[i] = 1 + (int)(rand_r(&cl->seed) % 3);
            lines[i] = (struct atp_client_line){skus[i], locs[l], r->qty[i]};
        }
        struct atp_client_resv res;
        int rc =
            atp_client_reserve(c, r->key, "web", 3600000, lines, (uint32_t)r->nlines, &res, NULL);
        if (rc == ATP_EINSUFFICIENT) {
            sleep_ms(1); /* out of stock until events bring more */
            continue;
        }
        /* From here on the key is in the client log. */
        r = rec_new();
        *r = local;
        r->pending = P_RESERVE;
        if (rc)
            break; /* atpd died: the reserve is pending */
        if (res.state != ATP_RES_HELD || res.replayed)
            die("reserve %s answered state %d replayed %d", r->key, res.state, res.replayed);
        r->id = res.id;
        r->acked = ATP_RES_HELD;
        r->pending = P_NONE;
        cl->acked_ops++;
        unsigned what = rand_r(&cl->seed) % 10;
        if (what < 5) {
            r->pending = P_COMMIT;
            if (atp_client_commit(c, r->id, &res))
                break;
            if (res.state != ATP_RES_COMMITTED)
                die("commit of %s answered state %d", r->key, res.state);
            r->acked = ATP_RES_COMMITTED;
        } else if (what < 8) {
            r->pending = P_RELEASE;
            if (atp_client_release(c, r->id, &res))
                break;
            r->acked = ATP_RES_RELEASED;
        }
        r->pending = P_NONE;
        cl->acked_ops++;
    }
    atp_client_close(c);
    return NULL;
}

/* --- STATS ------------------------------------------------------------------------------- */

struct stat_want {
    const char *name;
    int64_t value;
};

static int stat_cb(void *arg, const char *name, int64_t value)
{
    struct stat_want *w = arg;
    if (strcmp(name, w->name) == 0)
        w->value = value;
    return 0;
}

static int64_t stat_get(struct atp_client *c, const char *name)
{
    struct stat_want w = {name, -1};
    if (atp_client_stats(c, stat_cb, &w))
        return -1;
    return w.value;
}

/* Wait until atpd's consumer owns both partitions (events flow). */
static void wait_consuming(struct atp_client *c)
{
    uint64_t t0 = now_ms();
    while (stat_get(c, "ingest_partitions_assigned") < 2) {
        if (now_ms() - t0 > 30000)
            die("atpd's Kafka consumer got no assignment within 30 s");
        sleep_ms(20);
    }
}

/* --- checks ------------------------------------------------------------------------------ */

static bool allowed(const struct rec *r, int state)
{
    int a = r->acked;
    if (a == ATP_RES_COMMITTED || a == ATP_RES_RELEASED)
        return state == a;
    if (a == ATP_RES_HELD)
        return state == ATP_RES_HELD || state == ATP_RES_EXPIRED ||
               (r->pending == P_COMMIT && state == ATP_RES_COMMITTED) ||
               (r->pending == P_RELEASE && state == ATP_RES_RELEASED);
    /* nothing acknowledged: only an unanswered reserve may have made it */
    return r->pending == P_RESERVE;
}

/*
 * Every reservation in an allowed state; with `full`, item counters equal
 * the sums of their reservations and nothing is oversold. Returns the
 * reservations found.
 */
static long check_reservations(struct atp_client *c, bool full, long *held_qty, long *comm_qty)
{
    long found = 0;
    int n = atomic_load(&nrecs);
    for (int i = 0; i < n; i++) {
        struct rec *r = &recs[i];
        if (!full && r->iter < iteration - 2)
            continue; /* after a restart: the last iterations' keys (all at the end) */
        struct atp_client_resv res;
        int rc = atp_client_get_reservation(c, 0, r->key, &res);
        if (rc == ATP_ENOTFOUND) {
            if (r->acked != A_NONE)
                die("acknowledged reservation %s (state %s) is lost", r->key,
                    atp_res_state_name(r->acked));
            continue;
        }
        if (rc)
            die("get reservation %s: %s", r->key, atp_strerror(rc));
        if (!allowed(r, res.state))
            die("reservation %s is %s, acknowledged %s, pending op %d", r->key,
                atp_res_state_name(res.state), r->acked ? atp_res_state_name(r->acked) : "none",
                r->pending);
        if ((int)res.nlines != r->nlines)
            die("reservation %s has %u lines, asked %d", r->key, res.nlines, r->nlines);
        found++;
        for (int k = 0; k < r->nlines && full; k++) {
            if (item_index(res.lines[k].sku, res.lines[k].loc) != r->item[k] ||
                res.lines[k].qty != r->qty[k])
                die("reservation %s line %d differs from the request", r->key, k);
            if (res.state == ATP_RES_HELD)
                held_qty[r->item[k]] += r->qty[k];
            if (res.state == ATP_RES_COMMITTED)
                comm_qty[r->item[k]] += r->qty[k];
        }
    }
    return found;
}

static void check_items(struct atp_client *c, const long *held_qty, const long *comm_qty,
                        bool exact_on_hand, long *ret_short)
{
    long shortfall = 0;
    for (int s = 0; s < NSKU; s++)
        for (int l = 0; l < NLOC; l++) {
            char sku[16];
            snprintf(sku, sizeof(sku), "CR-%02d", s);
            struct atp_breakdown b;
            int rc = atp_client_get(c, sku, "web", locs[l], true, &b);
            if (rc)
                die("get %s@%s: %s", sku, locs[l], atp_strerror(rc));
            int i = s * NLOC + l;
            long want = initial + atomic_load(&delivered[i]);
            if (b.reserved != held_qty[i] || b.allocated != comm_qty[i])
                die("%s@%s: reserved %" PRId64 " allocated %" PRId64
                    ", its reservations hold %ld and commit %ld",
                    sku, locs[l], b.reserved, b.allocated, held_qty[i], comm_qty[i]);
            if (b.on_hand - b.allocated - b.reserved < 0)
                die("%s@%s oversold: on_hand %" PRId64 " allocated %" PRId64 " reserved %" PRId64,
                    sku, locs[l], b.on_hand, b.allocated, b.reserved);
            if (b.on_hand > want)
                die("%s@%s on_hand %" PRId64 " exceeds the %ld produced: an event applied twice",
                    sku, locs[l], b.on_hand, want);
            if (exact_on_hand && b.on_hand != want)
                die("%s@%s on_hand %" PRId64 ", produced %ld", sku, locs[l], b.on_hand, want);
            shortfall += want - b.on_hand;
        }
    *ret_short = shortfall;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_crash ATPD DEVBROKER [ITERATIONS] [--no-events]\n");
        return 2;
    }
    atpd_bin = argv[1];
    int iterations = argc > 3 ? atoi(argv[3]) : 20;
    for (int i = 3; i < argc; i++)
        if (!strcmp(argv[i], "--no-events"))
            with_events = false;
    signal(SIGPIPE, SIG_IGN);
    if (!with_events)
        initial = 100000; /* no events bring stock: start with plenty */
    max_keys = KEYS_PER_IT * (iterations + 1);
    snprintf(max_res, sizeof(max_res), "%d", max_keys);
    recs = calloc((size_t)max_keys, sizeof(*recs));
    if (!recs)
        die("no memory for %d keys", max_keys);
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    if (asprintf(&workdir, "%s/atp-crash-XXXXXX", tmp) < 0 || !mkdtemp(workdir))
        die("mkdtemp");
    if (asprintf(&dir, "%s/data", workdir) < 0)
        die("asprintf");
    if (with_events)
        start_broker(argv[2]);

    /* Initial stock, acknowledged before any event is produced. */
    port = start_atpd();
    struct atp_client *c;
    if (atp_client_connect("127.0.0.1", port, &c))
        die("connect");
    for (int s = 0; s < NSKU; s++)
        for (int l = 0; l < NLOC; l++) {
            char sku[16];
            snprintf(sku, sizeof(sku), "CR-%02d", s);
            if (atp_client_set(c, sku, locs[l], initial, 0))
                die("set %s: %s", sku, atp_client_last_error(c));
        }
    atp_client_close(c);

    pthread_t prod;
    if (with_events)
        pthread_create(&prod, NULL, producer_main, NULL);
    unsigned seed = (unsigned)getpid();
    long acked_total = 0;
    int lives_with_events = 0; /* atpd lives that applied events before their kill */
    for (iteration = 0; iteration < iterations; iteration++) {
        if (iteration > 0)
            port = start_atpd();
        /* After each restart: nothing acknowledged is lost. */
        if (atp_client_connect("127.0.0.1", port, &c))
            die("connect after restart");
        atp_client_set_timeout(c, 10000);
        long held[NSKU * NLOC] = {0}, comm[NSKU * NLOC] = {0};
        check_reservations(c, false, held, comm);
        if (with_events)
            wait_consuming(c);

        struct cl cls[NCLIENTS];
        pthread_t th[NCLIENTS];
        for (int i = 0; i < NCLIENTS; i++) {
            cls[i] = (struct cl){.id = i, .seed = seed + (unsigned)i * 7u + (unsigned)iteration};
            pthread_create(&th[i], NULL, client_main, &cls[i]);
        }
        sleep_ms(150 + rand_r(&seed) % 900);
        if (with_events && stat_get(c, "ingest_applied") > 0)
            lives_with_events++;
        atp_client_close(c);
        /* Now and then a graceful stop (final snapshot) instead of a crash. */
        bool graceful = iteration % 7 == 6;
        kill_atpd(graceful ? SIGTERM : SIGKILL);
        for (int i = 0; i < NCLIENTS; i++) {
            pthread_join(th[i], NULL);
            acked_total += cls[i].acked_ops;
        }
        if (!with_events || iteration % 4 == 3)
            sleep_ms(200); /* events pile up while atpd is down */
    }
    if (with_events) {
        atomic_store(&producer_stop, 1);
        pthread_join(prod, NULL);
    }

    /* Crashes in the middle of consumption are what this test is about. */
    if (with_events && lives_with_events < iterations / 2)
        die("only %d of %d atpd lives applied events before being killed", lives_with_events,
            iterations);

    /* Final: catch up with every event, then the full model check. */
    port = start_atpd();
    if (atp_client_connect("127.0.0.1", port, &c))
        die("connect");
    atp_client_set_timeout(c, 10000);
    long held[NSKU * NLOC], comm[NSKU * NLOC], shortfall = 0;
    uint64_t t0 = now_ms();
    do {
        memset(held, 0, sizeof(held));
        memset(comm, 0, sizeof(comm));
        check_reservations(c, true, held, comm);
        check_items(c, held, comm, false, &shortfall);
        if (shortfall && now_ms() - t0 > 60000)
            die("events not applied after 60 s: %ld units short (does atpd consume Kafka "
                "with --kafka-brokers?)",
                shortfall);
        if (shortfall)
            sleep_ms(200);
    } while (shortfall);
    sleep_ms(1500); /* nothing is applied twice later either */
    memset(held, 0, sizeof(held));
    memset(comm, 0, sizeof(comm));
    long found = check_reservations(c, true, held, comm);
    check_items(c, held, comm, true, &shortfall);
    atp_client_close(c);
    kill_atpd(SIGTERM);
    if (broker_pid > 0) {
        kill(broker_pid, SIGTERM);
        waitpid(broker_pid, NULL, 0);
    }
    printf("ok: %d crashes (%d while consuming events), %ld acknowledged operations, %d "
           "reservation keys (%ld present), %ld events applied exactly once\n",
           iterations, lives_with_events, acked_total, atomic_load(&nrecs), found,
           atomic_load(&produced_events));
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", workdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", workdir);
    return 0;
}
