/*
 * bench_ingest - atpd's Kafka ingest rate against the raw consume rate of
 * the same messages, measured in one run (issue 4's benchmark).
 *
 *   bench_ingest [-n EVENTS] [-p PARTITIONS] [-r ROUNDS] [-k SKUS] [-w] [-q]
 *
 * It starts librdkafka's mock cluster in this process (127.0.0.1, as the
 * embedded broker does), produces EVENTS inventory events in the format of
 * protocol/EVENTS.md (adjust with every reason, set guarded by a per-item
 * seq, allocate, deallocate and safety_stock, over SKUS skus at three
 * locations, keyed by sku, each with a source ts) and then, ROUNDS times,
 * interleaved:
 *
 *   raw     a bare librdkafka consumer (its own group, the same fetch
 *           settings as atpd's consumer) reads all EVENTS messages and does
 *           nothing with them: the limit;
 *   ingest  atpd's ingest (src/ingest.c, its own group) reads the same
 *           messages into a fresh store: every event parsed, validated,
 *           checked against the duplicate window and applied. The first
 *           event naming an item creates it (about 3 in 10 events with the
 *           defaults); with -w every item of the catalogue is created first
 *           (on_hand 0, set seq 0, outside the timed window), as in a
 *           running atpd whose store was loaded from its snapshot, so every
 *           event writes an item that exists.
 *
 * Rates run from the first message seen to the last (group joins excluded):
 * raw timestamps its own messages; the ingest's counters are sampled every
 * millisecond from this thread. Each round prints both rates, the cores the
 * process used meanwhile (CPU time of all its threads, the mock broker's
 * included, over wall time: well below the machine's 2, something else
 * had the CPU), the CPU time per message that makes (us/msg, us/ev: what
 * each consumer costs, whatever the machine's load), ingest/raw, and for
 * the ingest's consumer thread (atp-ingest) alone its CPU time per event
 * (thr.us) and how long per event it waited for a CPU while runnable
 * (wait.us), from the scheduler's accounting; the end prints the median
 * ratio and its spread.
 *
 * A consumer does not start all its partitions at once: each first finds
 * its start offset. raw.st and ing.st are the milliseconds from a
 * consumer's first message to the first message of the last partition to
 * start (raw: delivered; ingest: applied, from atp_ingest_offsets), and
 * `steady` is the ratio of the two rates from that moment on:
 * what each consumer does once all partitions flow, apart from how long
 * its start took.
 *
 * Results are checked, not trusted: the produced log must be whole (every
 * partition starts at offset 0 and the offsets add up to EVENTS), the raw
 * consumer must see EVENTS messages, and after each ingest round every
 * message must have been applied (no duplicate, stale or dead letter) and
 * every item's on_hand and allocated must equal what this program computed
 * while generating the events. Any mismatch exits with status 1.
 *
 * The mock cluster keeps about 5 MiB per partition; keep EVENTS/PARTITIONS
 * under ~25k (checked: a truncated log is an error).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "atp/event.h"
#include "atp/ingest.h"
#include "atp/store.h"

#define TOPIC      "bench.events"
#define NLOCS      3
#define MAX_ROUNDS 32
#define WAIT_MS    120000 /* longest wait for one round */

static int quiet;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* CPU time of the whole process (every thread, the mock broker's too). */
static uint64_t cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

/* One timed window: messages per second and the cores the process used;
 * for the ingest also the CPU time per event of its consumer thread and how
 * long per event that thread waited for a CPU (run queue). */
struct rate {
    double per_s;
    double cores;
    double consumer_us, consumer_wait_us;
    double start_ms;     /* first message to the first of the last partition to start */
    double steady_per_s; /* rate from that moment to the last message */
};

/* The steady part of a round: from the moment every partition had delivered
 * (raw) or applied (ingest) a message, t_all with `done` messages behind it,
 * to the last one at t_last. */
static void rate_steady(struct rate *r, uint64_t n, uint64_t t_first, uint64_t t_all, uint64_t done,
                        uint64_t t_last)
{
    r->start_ms = (double)(t_all - t_first) / 1e6;
    r->steady_per_s = t_last > t_all ? (double)(n - done) / ((double)(t_last - t_all) / 1e9) : 0;
}

/* Run and run-queue wait time (ns) of this process's threads named comm,
 * from /proc/self/task/N/schedstat (the scheduler's own accounting). */
static void thread_ns(const char *comm, uint64_t *ret_run, uint64_t *ret_wait)
{
    uint64_t run = 0, wait = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[300], name[64] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        if (!fgets(name, sizeof(name), f))
            name[0] = '\0';
        fclose(f);
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, comm) != 0)
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
        unsigned long long r, w;
        if ((f = fopen(path, "r"))) {
            if (fscanf(f, "%llu %llu", &r, &w) == 2) {
                run += r;
                wait += w;
            }
            fclose(f);
        }
    }
    if (d)
        closedir(d);
    *ret_run = run;
    *ret_wait = wait;
}

static void sleep_us(unsigned us)
{
    struct timespec ts = {0, (long)us * 1000L};
    nanosleep(&ts, NULL);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_ingest: FAIL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void log_cb(void *arg, int level, const char *msg)
{
    (void)arg;
    if (level >= ATP_INGEST_LOG_WARN && !quiet)
        fprintf(stderr, "  ingest: %s\n", msg);
}

/* --- the events ----------------------------------------------------------- */

static const char *const locs[NLOCS] = {"DC1", "DC2", "DC3"};

/* What the store must show after all events: one entry per item. */
struct item {
    int64_t on_hand;
    int64_t allocated;
    uint64_t seq; /* last set's guard */
};

struct mix {
    uint32_t nskus;
    struct item *items; /* nskus * NLOCS */
    uint64_t rng;
    uint64_t counts[8]; /* per event type, for the summary */
};

static uint32_t rnd(struct mix *m, uint32_t n)
{
    /* xorshift64*: reproducible, seeded below */
    m->rng ^= m->rng >> 12;
    m->rng ^= m->rng << 25;
    m->rng ^= m->rng >> 27;
    return (uint32_t)(((m->rng * UINT64_C(2685821657736338717)) >> 32) % n);
}

/*
 * Event i into buf: returns its length, the key (the sku) in key. The mix,
 * roughly what a WMS and an ERP send: 55% adjust (receipts, picks, returns,
 * damage, transfers, count corrections), 15% set (cycle counts), 15%
 * allocate, 10% deallocate, 5% safety_stock. Quantities keep on_hand and
 * allocated non-negative so every event applies.
 */
static int make_event(struct mix *m, uint64_t i, uint64_t ts, char *buf, size_t cap, char *key,
                      int *keylen)
{
    uint32_t s = rnd(m, m->nskus), l = rnd(m, NLOCS);
    struct item *it = &m->items[s * NLOCS + l];
    *keylen = snprintf(key, 32, "SKU-%07" PRIu32, s);
    char head[160];
    snprintf(head, sizeof(head), "{\"event_id\":\"wms-%010" PRIu64 "\",\"type\":", i);
    uint32_t pick = rnd(m, 100);
    uint32_t q = 1 + rnd(m, 20);
    int n;
    if (pick < 55) {
        static const struct {
            const char *name;
            int sign;
        } reasons[] = {{"receipt", 1},       {"pick", -1},           {"pick", -1},
                       {"return", 1},        {"damage", -1},         {"transfer_in", 1},
                       {"transfer_out", -1}, {"count_correction", 0}};
        uint32_t r = rnd(m, 8);
        int64_t delta = reasons[r].sign < 0 ? -(int64_t)q : (int64_t)q;
        if (reasons[r].sign == 0 && rnd(m, 2))
            delta = -delta;
        if (it->on_hand + delta < 0) { /* not enough to pick: a receipt instead */
            r = 0;
            delta = q;
        }
        it->on_hand += delta;
        m->counts[ATP_EV_ADJUST]++;
        n = snprintf(buf, cap,
                     "%s\"adjust\",\"sku\":\"%s\",\"loc\":\"%s\",\"delta\":%" PRId64
                     ",\"reason\":\"%s\",\"ts\":%" PRIu64 "}",
                     head, key, locs[l], delta, reasons[r].name, ts);
    } else if (pick < 70) {
        int64_t v = rnd(m, 1000);
        it->on_hand = v;
        it->seq++;
        m->counts[ATP_EV_SET]++;
        n = snprintf(buf, cap,
                     "%s\"set\",\"sku\":\"%s\",\"loc\":\"%s\",\"on_hand\":%" PRId64
                     ",\"seq\":%" PRIu64 ",\"ts\":%" PRIu64 "}",
                     head, key, locs[l], v, it->seq, ts);
    } else if (pick < 85 || it->allocated < q) {
        it->allocated += q;
        m->counts[ATP_EV_ALLOCATE]++;
        n = snprintf(buf, cap,
                     "%s\"allocate\",\"sku\":\"%s\",\"loc\":\"%s\",\"qty\":%" PRIu32
                     ",\"order\":\"EDI-%08" PRIu64 "\",\"ts\":%" PRIu64 "}",
                     head, key, locs[l], q, i, ts);
    } else if (pick < 95) {
        it->allocated -= q;
        m->counts[ATP_EV_DEALLOCATE]++;
        n = snprintf(buf, cap,
                     "%s\"deallocate\",\"sku\":\"%s\",\"loc\":\"%s\",\"qty\":%" PRIu32
                     ",\"ts\":%" PRIu64 "}",
                     head, key, locs[l], q, ts);
    } else {
        m->counts[ATP_EV_SAFETY_STOCK]++;
        if (rnd(m, 2))
            n = snprintf(buf, cap,
                         "%s\"safety_stock\",\"sku\":\"%s\",\"channel\":\"web\",\"units\":%" PRIu32
                         ",\"ts\":%" PRIu64 "}",
                         head, key, q, ts);
        else
            n = snprintf(buf, cap,
                         "%s\"safety_stock\",\"sku\":\"%s\",\"loc\":\"%s\",\"channel\":\"app\","
                         "\"units\":%s,\"ts\":%" PRIu64 "}",
                         head, key, locs[l], rnd(m, 4) ? "3" : "null", ts);
    }
    return n;
}

/* --- the cluster and the producer ----------------------------------------- */

struct cluster {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    const char *bootstrap;
};

static void cluster_start(struct cluster *c, int partitions)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "3", NULL, 0);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!c->rk)
        die("mock cluster handle: %s", errstr);
    c->mc = rd_kafka_mock_cluster_new(c->rk, 1);
    if (!c->mc)
        die("cannot start the mock cluster");
    c->bootstrap = rd_kafka_mock_cluster_bootstraps(c->mc);
    if (rd_kafka_mock_topic_create(c->mc, TOPIC, partitions, 1) ||
        rd_kafka_mock_topic_create(c->mc, TOPIC ".dlq", 1, 1))
        die("cannot create the topics");
}

static void conf_or_die(rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
        die("%s=%s: %s", k, v, errstr);
}

static _Atomic uint64_t delivery_errors;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (m->err)
        atomic_fetch_add(&delivery_errors, 1);
}

static void produce_all(const struct cluster *c, struct mix *m, uint64_t n, int partitions,
                        uint64_t *ret_bytes)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_or_die(conf, "bootstrap.servers", c->bootstrap);
    conf_or_die(conf, "linger.ms", "20");
    conf_or_die(conf, "batch.num.messages", "5000");
    conf_or_die(conf, "queue.buffering.max.messages", "1000000");
    conf_or_die(conf, "log_level", "3");
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk)
        die("producer: %s", errstr);

    uint64_t ts = (uint64_t)time(NULL) * 1000u, bytes = 0;
    char buf[512], key[32];
    for (uint64_t i = 0; i < n; i++) {
        int keylen;
        int len = make_event(m, i, ts + i / 1000, buf, sizeof(buf), key, &keylen);
        bytes += (uint64_t)len;
        rd_kafka_resp_err_t err;
        while ((err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_KEY(key, keylen),
                                        RD_KAFKA_V_VALUE(buf, (size_t)len),
                                        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                        RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        if (err)
            die("produce: %s", rd_kafka_err2str(err));
        rd_kafka_poll(rk, 0);
    }
    if (rd_kafka_flush(rk, 60000))
        die("produce: %d messages not delivered", rd_kafka_outq_len(rk));
    if (atomic_load(&delivery_errors))
        die("produce: %" PRIu64 " delivery errors", atomic_load(&delivery_errors));

    /* The log must be whole: retention in the mock would make the benchmark
     * read fewer messages than it believes. */
    int64_t total = 0;
    for (int p = 0; p < partitions; p++) {
        int64_t lo, hi;
        if (rd_kafka_query_watermark_offsets(rk, TOPIC, p, &lo, &hi, 10000))
            die("watermarks of partition %d", p);
        if (lo != 0)
            die("partition %d starts at %" PRId64 ": the mock deleted messages (use more "
                "partitions or fewer events)",
                p, lo);
        total += hi;
    }
    if (total != (int64_t)n)
        die("the topic holds %" PRId64 " messages, %" PRIu64 " were produced", total, n);
    rd_kafka_destroy(rk);
    *ret_bytes = bytes;
}

/*
 * The fetch settings atpd's consumer runs with against this cluster (see
 * consumer_conf() in src/ingest.c), so that both consumers fetch alike.
 */
static const char *const fetch_props[][2] = {
    {"fetch.wait.max.ms", "5"},
    {"queued.min.messages", "300000"},
    {"isolation.level", "read_committed"},
    {"enable.partition.eof", "false"},
};
#define NFETCH (sizeof(fetch_props) / sizeof(fetch_props[0]))

/* --- raw: a bare consumer ------------------------------------------------- */

static struct rate run_raw(const char *bootstrap, int round, uint64_t n, int partitions)
{
    char errstr[256], group[64];
    snprintf(group, sizeof(group), "bench-raw-%d", round);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    conf_or_die(conf, "bootstrap.servers", bootstrap);
    conf_or_die(conf, "group.id", group);
    conf_or_die(conf, "auto.offset.reset", "earliest");
    conf_or_die(conf, "enable.auto.commit", "false");
    conf_or_die(conf, "log_level", "3");
    for (size_t i = 0; i < NFETCH; i++)
        conf_or_die(conf, fetch_props[i][0], fetch_props[i][1]);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk)
        die("raw consumer: %s", errstr);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, TOPIC, RD_KAFKA_PARTITION_UA);
    if (rd_kafka_subscribe(rk, subs))
        die("raw consumer: subscribe");
    rd_kafka_topic_partition_list_destroy(subs);

    /* The loop shape of atpd's consumer thread, minus the work: wait for
     * one message, then take what is queued, up to 256. */
    rd_kafka_message_t *batch[256];
    uint64_t got = 0, t_first = 0, t_last = 0, cpu_first = 0, cpu_last = 0;
    bool *seen = calloc((size_t)partitions, sizeof(*seen)); /* partitions that delivered */
    int nseen = 0;
    uint64_t t_all = 0, got_all = 0;
    if (!seen)
        die("out of memory");
    uint64_t deadline = now_ns() + WAIT_MS * 1000000ull;
    while (got < n) {
        if (now_ns() > deadline)
            die("raw consumer: %" PRIu64 " of %" PRIu64 " messages in %d s", got, n,
                WAIT_MS / 1000);
        rd_kafka_message_t *first = rd_kafka_consumer_poll(rk, 100);
        if (!first)
            continue;
        batch[0] = first;
        ssize_t k = rd_kafka_consume_batch_queue(q, 0, batch + 1, 255);
        k = k < 0 ? 1 : k + 1;
        for (ssize_t i = 0; i < k; i++) {
            if (!batch[i]->err) {
                if (got++ == 0) {
                    t_first = now_ns();
                    cpu_first = cpu_ns();
                }
                int32_t part = batch[i]->partition;
                if (part >= 0 && part < partitions && !seen[part]) {
                    seen[part] = true;
                    nseen++;
                }
                if (!t_all && nseen == partitions) {
                    t_all = now_ns();
                    got_all = got;
                }
            }
            rd_kafka_message_destroy(batch[i]);
        }
        t_last = now_ns();
    }
    cpu_last = cpu_ns();
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(seen);
    if (got != n)
        die("raw consumer read %" PRIu64 " messages, %" PRIu64 " were produced", got, n);
    double secs = (double)(t_last - t_first) / 1e9;
    struct rate r = {
        (double)(n - 1) / secs, (double)(cpu_last - cpu_first) / 1e9 / secs, 0, 0, 0, 0};
    rate_steady(&r, n, t_first, t_all ? t_all : t_last, got_all, t_last);
    return r;
}

/* Partitions of which the ingest has applied a message: its next offset
 * for them is past 0. */
static int ingest_started(const struct atp_ingest *ing, struct atp_ingest_offset *offs, size_t cap)
{
    size_t n = atp_ingest_offsets(ing, offs, cap);
    int started = 0;
    for (size_t i = 0; i < n && i < cap; i++)
        started += offs[i].next_offset > 0;
    return started;
}

/* --- ingest: atpd's consumer into a real store ---------------------------- */

static const struct atp_channel_config channels[] = {
    {.name = "web", .safety_units = 1, .cap = -1},
    {.name = "app", .safety_units = 2, .cap = -1},
};

static struct rate run_ingest(const char *bootstrap, int round, uint64_t n, const struct mix *m,
                              int warm, int partitions)
{
    struct atp_store_config sc;
    atp_store_config_defaults(&sc);
    sc.max_items = m->nskus * NLOCS * 2;
    sc.max_skus = m->nskus * 2;
    sc.max_overrides = m->nskus * 4;
    sc.channels = channels;
    sc.nchannels = 2;
    struct atp_store *store;
    if (atp_store_new(&sc, &store))
        die("store");
    for (uint32_t s = 0; warm && s < m->nskus; s++) {
        char sku[32];
        snprintf(sku, sizeof(sku), "SKU-%07" PRIu32, s);
        for (int l = 0; l < NLOCS; l++)
            if (atp_store_set(store, atp_slice_cstr(sku), atp_slice_cstr(locs[l]), 0, 0))
                die("creating %s@%s", sku, locs[l]);
    }

    char group[64];
    snprintf(group, sizeof(group), "bench-ingest-%d", round);
    const char *topics[] = {TOPIC, NULL};
    struct atp_ingest_kv kv[NFETCH + 1] = {{NULL, NULL}};
    for (size_t i = 0; i < NFETCH; i++)
        kv[i] = (struct atp_ingest_kv){fetch_props[i][0], fetch_props[i][1]};
    struct atp_ingest_config ic;
    atp_ingest_config_defaults(&ic);
    ic.brokers = bootstrap;
    ic.topics = topics;
    ic.group_id = group;
    ic.kafka = kv;
    ic.log = log_cb;
    struct atp_ingest *ing;
    if (atp_ingest_new(&ic, store, &ing) || atp_ingest_start(ing))
        die("ingest");

    struct atp_ingest_stats st;
    uint64_t t_first = 0, t_last = 0, c_first = 0, cpu_first = 0, cpu_last = 0;
    uint64_t run0 = 0, run1 = 0, wait0 = 0, wait1 = 0, t_all = 0, c_all = 0;
    struct atp_ingest_offset *offs = calloc((size_t)partitions, sizeof(*offs));
    if (!offs)
        die("out of memory");
    uint64_t deadline = now_ns() + WAIT_MS * 1000000ull;
    for (;;) {
        atp_ingest_stats(ing, &st);
        uint64_t t = now_ns();
        if (st.consumed > 0 && t_first == 0) {
            t_first = t;
            c_first = st.consumed;
            cpu_first = cpu_ns();
            thread_ns("atp-ingest", &run0, &wait0);
        }
        if (t_first && !t_all && ingest_started(ing, offs, (size_t)partitions) == partitions) {
            t_all = t;
            c_all = st.consumed;
        }
        if (st.consumed >= n) {
            t_last = t;
            cpu_last = cpu_ns();
            thread_ns("atp-ingest", &run1, &wait1);
            break;
        }
        if (t > deadline)
            die("ingest: %" PRIu64 " of %" PRIu64 " events in %d s", st.consumed, n,
                WAIT_MS / 1000);
        sleep_us(1000);
    }
    free(offs);
    atp_ingest_stop(ing);
    atp_ingest_stats(ing, &st);
    if (st.consumed != n || st.applied != n || st.duplicates || st.stale_sets || st.dead_lettered ||
        st.replayed)
        die("ingest round %d: consumed %" PRIu64 " applied %" PRIu64 " duplicates %" PRIu64
            " stale %" PRIu64 " dead %" PRIu64 " replayed %" PRIu64 " (want all %" PRIu64
            " applied)",
            round, st.consumed, st.applied, st.duplicates, st.stale_sets, st.dead_lettered,
            st.replayed, n);

    /* Every item shows exactly what the events computed. */
    uint64_t items = 0;
    for (uint32_t s = 0; s < m->nskus; s++) {
        char sku[32];
        snprintf(sku, sizeof(sku), "SKU-%07" PRIu32, s);
        for (int l = 0; l < NLOCS; l++) {
            const struct item *it = &m->items[s * NLOCS + l];
            struct atp_breakdown b;
            int rc = atp_store_get(store, atp_slice_cstr(sku), atp_slice_cstr(locs[l]), 0, &b);
            if (rc == ATP_ENOTFOUND && it->on_hand == 0 && it->allocated == 0 && it->seq == 0)
                continue; /* no event named it */
            if (rc || b.on_hand != it->on_hand || b.allocated != it->allocated)
                die("ingest round %d: %s@%s on_hand %" PRId64 " allocated %" PRId64
                    " (rc %d), want %" PRId64 " and %" PRId64,
                    round, sku, locs[l], b.on_hand, b.allocated, rc, it->on_hand, it->allocated);
            items++;
        }
    }
    if (items == 0)
        die("ingest round %d: no item checked", round);
    atp_ingest_free(ing);
    atp_store_free(store);
    double secs = (double)(t_last - t_first) / 1e9;
    double evs = (double)(n - c_first);
    struct rate r = {evs / secs,
                     (double)(cpu_last - cpu_first) / 1e9 / secs,
                     (double)(run1 - run0) / 1e3 / evs,
                     (double)(wait1 - wait0) / 1e3 / evs,
                     0,
                     0};
    rate_steady(&r, n, t_first, t_all ? t_all : t_last, c_all, t_last);
    return r;
}

/* --- main ----------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sort v[0..n) (n >= 1) and return its median. */
static double sort_median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(v[0]), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static uint64_t parse_num(const char *s, const char *what, uint64_t lo, uint64_t hi)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi) {
        fprintf(stderr, "bench_ingest: %s: expected %" PRIu64 "..%" PRIu64 "\n", what, lo, hi);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    uint64_t n = 200000;
    int partitions = 8, rounds = 5, warm = 0, opt;
    uint32_t nskus = 20000;
    while ((opt = getopt(argc, argv, "n:p:r:k:wqh")) != -1) {
        switch (opt) {
        case 'n':
            n = parse_num(optarg, "-n", 1000, 100000000);
            break;
        case 'p':
            partitions = (int)parse_num(optarg, "-p", 1, 256);
            break;
        case 'r':
            rounds = (int)parse_num(optarg, "-r", 1, MAX_ROUNDS);
            break;
        case 'k':
            nskus = (uint32_t)parse_num(optarg, "-k", 1, 1000000);
            break;
        case 'w':
            warm = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        default:
            fprintf(stderr,
                    "usage: bench_ingest [-n EVENTS] [-p PARTITIONS] [-r ROUNDS] [-k SKUS] [-w] "
                    "[-q]\n"
                    "  defaults: -n 200000 -p 8 -r 5 -k 20000 (three locations per sku)\n"
                    "  -w: every item exists before the ingest starts (a loaded store)\n");
            return opt == 'h' ? 0 : 2;
        }
    }

    struct mix m = {.nskus = nskus, .rng = UINT64_C(0x9e3779b97f4a7c15)};
    m.items = calloc((size_t)nskus * NLOCS, sizeof(*m.items));
    if (!m.items)
        die("out of memory");

    struct cluster c;
    cluster_start(&c, partitions);
    uint64_t bytes;
    uint64_t t0 = now_ns();
    produce_all(&c, &m, n, partitions, &bytes);
    printf("produced %" PRIu64 " events (%.0f bytes each on average) to %d partition(s) in %.1f s:"
           " adjust %" PRIu64 ", set %" PRIu64 ", allocate %" PRIu64 ", deallocate %" PRIu64
           ", safety_stock %" PRIu64 "; %" PRIu32 " skus x %d locations\n",
           n, (double)bytes / (double)n, partitions, (double)(now_ns() - t0) / 1e9,
           m.counts[ATP_EV_ADJUST], m.counts[ATP_EV_SET], m.counts[ATP_EV_ALLOCATE],
           m.counts[ATP_EV_DEALLOCATE], m.counts[ATP_EV_SAFETY_STOCK], nskus, NLOCS);
    printf("%-6s %12s %6s %7s %12s %6s %7s %7s %7s %7s %8s %8s %7s\n", "round", "raw msg/s",
           "cores", "us/msg", "ingest ev/s", "cores", "us/ev", "ratio", "thr.us", "wait.us",
           "raw.st", "ing.st", "steady");
    fflush(stdout);

    double ratios[MAX_ROUNDS], steady[MAX_ROUNDS];
    for (int r = 0; r < rounds; r++) {
        struct rate raw = run_raw(c.bootstrap, r, n, partitions);
        struct rate ing = run_ingest(c.bootstrap, r, n, &m, warm, partitions);
        ratios[r] = ing.per_s / raw.per_s;
        steady[r] = raw.steady_per_s > 0 ? ing.steady_per_s / raw.steady_per_s : 0;
        printf("%-6d %12.0f %6.2f %7.2f %12.0f %6.2f %7.2f %7.3f %7.2f %7.2f %8.1f %8.1f %7.3f\n",
               r + 1, raw.per_s, raw.cores, raw.cores / raw.per_s * 1e6, ing.per_s, ing.cores,
               ing.cores / ing.per_s * 1e6, ratios[r], ing.consumer_us, ing.consumer_wait_us,
               raw.start_ms, ing.start_ms, steady[r]);
        fflush(stdout);
    }
    double median = sort_median(ratios, rounds), smedian = sort_median(steady, rounds);
    printf("median ingest/raw %.3f (min %.3f, max %.3f) over %d interleaved rounds, %s; "
           "every round checked: all %" PRIu64 " events applied, every item's on_hand and "
           "allocated as computed\n",
           median, ratios[0], ratios[rounds - 1], rounds,
           warm ? "items created before each ingest (-w)" : "a fresh store each ingest", n);
    printf("median steady ingest/raw %.3f (min %.3f, max %.3f): both rates taken from the moment "
           "every partition had delivered (raw) or applied (ingest) a message\n",
           smedian, steady[0], steady[rounds - 1]);

    rd_kafka_mock_cluster_destroy(c.mc);
    rd_kafka_destroy(c.rk);
    free(m.items);
    return 0;
}
