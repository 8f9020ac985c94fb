/*
 * metrics.c - per-thread request metrics, pulled statistics and the
 * Prometheus text exposition (metrics.h).
 *
 * Knows the store's statistics, the status table and the names the
 * statistics sources emit (one mapping table below); knows nothing about
 * sockets or HTTP, and never logs.
 *
 * Shards. Every thread that records gets one `struct shard` (about 30 KiB)
 * on a lock-free list. A shard is never freed (a counter must never go
 * backwards, so an exited thread's counts stay), but when its thread exits
 * it is released, and the next thread that starts recording adopts it and
 * counts on from there: the list is as long as the most threads that ever
 * recorded at once, however many servers a process starts and stops. Its
 * owner is the only writer: an increment is a relaxed load and a relaxed
 * store (plain instructions on x86; no lock prefix, no cache line shared
 * with another writer). A scrape reads each word with a relaxed load:
 * each value is whole, the set is not a snapshot, which Prometheus accepts.
 */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "atp/error.h"
#include "atp/store.h"

/* --- names ------------------------------------------------------------------ */

static const char *const op_names[ATP_MOP_COUNT] = {
    [ATP_MOP_OTHER] = "other",     [ATP_MOP_HELLO] = "hello",
    [ATP_MOP_PING] = "ping",       [ATP_MOP_GET] = "get",
    [ATP_MOP_MGET] = "mget",       [ATP_MOP_RESERVE] = "reserve",
    [ATP_MOP_COMMIT] = "commit",   [ATP_MOP_RELEASE] = "release",
    [ATP_MOP_EXTEND] = "extend",   [ATP_MOP_GET_RESERVATION] = "get_reservation",
    [ATP_MOP_ADJUST] = "adjust",   [ATP_MOP_SET] = "set",
    [ATP_MOP_STATS] = "stats",     [ATP_MOP_HEALTH] = "health",
    [ATP_MOP_CHANGES] = "changes",
};

/* Operations each protocol has: their series exist (at 0) from the start,
 * so rate() works before the first request. */
#define OPBIT(o) (1u << (o))
static const uint32_t proto_ops[ATP_MPROTO_COUNT] = {
    [ATP_MPROTO_BIN] = OPBIT(ATP_MOP_OTHER) | OPBIT(ATP_MOP_HELLO) | OPBIT(ATP_MOP_PING) |
                       OPBIT(ATP_MOP_GET) | OPBIT(ATP_MOP_MGET) | OPBIT(ATP_MOP_RESERVE) |
                       OPBIT(ATP_MOP_COMMIT) | OPBIT(ATP_MOP_RELEASE) | OPBIT(ATP_MOP_EXTEND) |
                       OPBIT(ATP_MOP_GET_RESERVATION) | OPBIT(ATP_MOP_ADJUST) | OPBIT(ATP_MOP_SET) |
                       OPBIT(ATP_MOP_STATS) | OPBIT(ATP_MOP_CHANGES),
    [ATP_MPROTO_HTTP] = OPBIT(ATP_MOP_OTHER) | OPBIT(ATP_MOP_GET) | OPBIT(ATP_MOP_MGET) |
                        OPBIT(ATP_MOP_RESERVE) | OPBIT(ATP_MOP_COMMIT) | OPBIT(ATP_MOP_RELEASE) |
                        OPBIT(ATP_MOP_EXTEND) | OPBIT(ATP_MOP_GET_RESERVATION) |
                        OPBIT(ATP_MOP_ADJUST) | OPBIT(ATP_MOP_SET) | OPBIT(ATP_MOP_STATS) |
                        OPBIT(ATP_MOP_HEALTH) | OPBIT(ATP_MOP_CHANGES),
};

const char *atp_metrics_op_name(int op)
{
    return op >= 0 && op < ATP_MOP_COUNT ? op_names[op] : op_names[ATP_MOP_OTHER];
}

const char *atp_metrics_proto_name(int proto)
{
    return proto == ATP_MPROTO_HTTP ? "http" : "bin";
}

/* 10 us .. 1 s in a 1-2.5-5 progression: 16 bounds cover five decades. */
const uint64_t atp_metrics_bucket_ns[ATP_METRICS_BUCKETS] = {
    10000,   25000,    50000,    100000,   250000,    500000,    1000000,   2500000,
    5000000, 10000000, 25000000, 50000000, 100000000, 250000000, 500000000, 1000000000,
};

uint64_t atp_metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Status codes as small indexes: the rows of the status table, then one
 * slot for -errno and anything else. */
static const int code_list[] = {
#define ATP_M_CODE(name, code, wire, http, slug, msg) code,
    ATP_ERRORS(ATP_M_CODE)
#undef ATP_M_CODE
};
#define NCODES (sizeof(code_list) / sizeof(code_list[0]) + 1)

static unsigned code_index(int code)
{
    for (unsigned i = 0; i < NCODES - 1; i++)
        if (code_list[i] == code)
            return i;
    return NCODES - 1;
}

static int code_at(unsigned idx)
{
    return idx < NCODES - 1 ? code_list[idx] : -EIO; /* any -errno names "esystem" */
}

/* --- shards ------------------------------------------------------------------ */

struct shard {
    struct shard *next; /* immutable once published */
    _Atomic int owned;  /* a live thread writes here */
    uint64_t req[ATP_MPROTO_COUNT][ATP_MOP_COUNT];
    uint64_t err[ATP_MPROTO_COUNT][ATP_MOP_COUNT][NCODES];
    uint64_t hist[ATP_MPROTO_COUNT][ATP_MOP_COUNT][ATP_METRICS_BUCKETS + 1];
    uint64_t sum_ns[ATP_MPROTO_COUNT][ATP_MOP_COUNT];
    uint64_t resv_rejected[ATP_MAX_CHANNELS][NCODES];
};

/* M1: the release CAS that pushes a shard (shard_adopt) pairs with the
 * acquire in every reader. A shard is never freed and its next never
 * changes, so readers may walk the list while shards are pushed. A thread
 * that records after its last key destructor (or a child after fork())
 * keeps its shard owned for good: one shard, not a race. */
static _Atomic(struct shard *) shards;
static _Thread_local struct shard *my_shard;
static pthread_key_t shard_key; /* its destructor releases an exiting thread's shard */
static bool shard_key_ok;       /* else shards are never released (out of keys) */
static pthread_once_t shard_key_once = PTHREAD_ONCE_INIT;

/* M2: the release store pairs with the acquire CAS that adopts the shard,
 * so the next owner's plain increments follow the last ones made here. */
static void shard_release(void *arg)
{
    struct shard *s = arg;
    if (my_shard == s)
        my_shard = NULL; /* a later destructor that records adopts again */
    atomic_store_explicit(&s->owned, 0, memory_order_release);
}

static void shard_key_init(void)
{
    shard_key_ok = pthread_key_create(&shard_key, shard_release) == 0;
}

static struct shard *shard_adopt(void)
{
    for (struct shard *s = atomic_load_explicit(&shards, memory_order_acquire); s; s = s->next) {
        int free_ = 0;
        if (atomic_load_explicit(&s->owned, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong_explicit(&s->owned, &free_, 1, memory_order_acquire,
                                                    memory_order_relaxed))
            return s;
    }
    struct shard *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL; /* out of memory: this thread's counts are lost */
    atomic_init(&s->owned, 1);
    struct shard *head = atomic_load_explicit(&shards, memory_order_relaxed);
    do
        s->next = head;
    while (!atomic_compare_exchange_weak_explicit(&shards, &head, s, memory_order_release,
                                                  memory_order_relaxed));
    return s;
}

static struct shard *shard_get(void)
{
    struct shard *s = my_shard;
    if (__builtin_expect(s != NULL, 1))
        return s;
    pthread_once(&shard_key_once, shard_key_init);
    if ((s = shard_adopt()) == NULL)
        return NULL;
    if (shard_key_ok && pthread_setspecific(shard_key, s) != 0) {
        /* Without the destructor the shard would stay owned after the
         * thread: give it back now and count nothing here. */
        shard_release(s);
        return NULL;
    }
    my_shard = s;
    return s;
}

size_t atp_metrics_shards(void)
{
    size_t n = 0;
    for (struct shard *s = atomic_load_explicit(&shards, memory_order_acquire); s; s = s->next)
        n++;
    return n;
}

/* Single writer: a relaxed load and store, never a locked add. */
static inline void bump(uint64_t *p, uint64_t n)
{
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline uint64_t rd(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void atp_metrics_request(int proto, int op, int code, uint64_t duration_ns)
{
    struct shard *s = shard_get();
    if (s == NULL)
        return;
    if (proto < 0 || proto >= ATP_MPROTO_COUNT)
        proto = ATP_MPROTO_BIN;
    if (op < 0 || op >= ATP_MOP_COUNT)
        op = ATP_MOP_OTHER;
    bump(&s->req[proto][op], 1);
    if (code != 0)
        bump(&s->err[proto][op][code_index(code)], 1);
    unsigned b = 0;
    while (b < ATP_METRICS_BUCKETS && duration_ns > atp_metrics_bucket_ns[b])
        b++;
    bump(&s->hist[proto][op][b], 1);
    bump(&s->sum_ns[proto][op], duration_ns);
}

void atp_metrics_reservation(uint32_t channel, int code, bool replayed)
{
    (void)replayed; /* the store counts replays; per channel only refusals */
    if (code == 0 || channel >= ATP_MAX_CHANNELS)
        return;
    struct shard *s = shard_get();
    if (s != NULL)
        bump(&s->resv_rejected[channel][code_index(code)], 1);
}

uint64_t atp_metrics_requests(int proto, int op)
{
    if (proto < 0 || proto >= ATP_MPROTO_COUNT || op < 0 || op >= ATP_MOP_COUNT)
        return 0;
    uint64_t n = 0;
    for (struct shard *s = atomic_load_explicit(&shards, memory_order_acquire); s; s = s->next)
        n += rd(&s->req[proto][op]);
    return n;
}

/* --- text writer --------------------------------------------------------------- */

struct wr {
    struct atp_buf *out;
    int err;
};

static void put(struct wr *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct wr *w, const char *fmt, ...)
{
    if (w->err)
        return;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = w->out->cap - w->out->len;
        char *p = w->out->data ? (char *)w->out->data + w->out->len : NULL;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(p, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            w->err = -EINVAL;
            return;
        }
        if ((size_t)n < room) {
            w->out->len += (size_t)n;
            return;
        }
        if (!atp_buf_reserve(w->out, (size_t)n + 1 + 4096)) {
            w->err = -ENOMEM;
            return;
        }
    }
    w->err = -ENOMEM;
}

static void family(struct wr *w, const char *name, const char *type, const char *help)
{
    put(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A float the way Prometheus' own clients print one ("1e-05", "0.25", "3"). */
static void fmt_float(char *buf, size_t len, double v)
{
    snprintf(buf, len, "%.17g", v);
    /* Prefer the shortest form that reads back to the same double. */
    for (int prec = 1; prec < 17; prec++) {
        char t[40];
        snprintf(t, sizeof(t), "%.*g", prec, v);
        if (strtod(t, NULL) == v) {
            snprintf(buf, len, "%s", t);
            return;
        }
    }
}

/* --- request metrics ----------------------------------------------------------- */

struct req_totals {
    uint64_t req[ATP_MPROTO_COUNT][ATP_MOP_COUNT];
    uint64_t err[ATP_MPROTO_COUNT][ATP_MOP_COUNT][NCODES];
    uint64_t hist[ATP_MPROTO_COUNT][ATP_MOP_COUNT][ATP_METRICS_BUCKETS + 1];
    uint64_t sum_ns[ATP_MPROTO_COUNT][ATP_MOP_COUNT];
    uint64_t resv_rejected[ATP_MAX_CHANNELS][NCODES];
};

static void sum_shards(struct req_totals *t)
{
    memset(t, 0, sizeof(*t));
    for (struct shard *s = atomic_load_explicit(&shards, memory_order_acquire); s; s = s->next) {
        for (int p = 0; p < ATP_MPROTO_COUNT; p++) {
            for (int o = 0; o < ATP_MOP_COUNT; o++) {
                t->req[p][o] += rd(&s->req[p][o]);
                t->sum_ns[p][o] += rd(&s->sum_ns[p][o]);
                for (unsigned c = 0; c < NCODES; c++)
                    t->err[p][o][c] += rd(&s->err[p][o][c]);
                for (unsigned b = 0; b <= ATP_METRICS_BUCKETS; b++)
                    t->hist[p][o][b] += rd(&s->hist[p][o][b]);
            }
        }
        for (unsigned ch = 0; ch < ATP_MAX_CHANNELS; ch++)
            for (unsigned c = 0; c < NCODES; c++)
                t->resv_rejected[ch][c] += rd(&s->resv_rejected[ch][c]);
    }
}

static bool series_shown(const struct req_totals *t, int p, int o)
{
    return (proto_ops[p] & OPBIT(o)) || t->req[p][o] != 0;
}

static void lower_name(char *dst, size_t len, int code)
{
    const char *n = atp_error_name(code);
    size_t i = 0;
    for (; n[i] && i + 1 < len; i++)
        dst[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] - 'A' + 'a' : n[i]);
    dst[i] = '\0';
}

static void render_requests(struct wr *w, const struct req_totals *t)
{
    family(w, "atp_requests_total", "counter", "Requests answered, per protocol and operation.");
    for (int p = 0; p < ATP_MPROTO_COUNT; p++)
        for (int o = 0; o < ATP_MOP_COUNT; o++)
            if (series_shown(t, p, o))
                put(w, "atp_requests_total{protocol=\"%s\",operation=\"%s\"} %llu\n",
                    atp_metrics_proto_name(p), op_names[o], (unsigned long long)t->req[p][o]);

    family(w, "atp_request_errors_total", "counter",
           "Requests answered with a non-zero status, per protocol, operation and status "
           "name (the problem code).");
    for (int p = 0; p < ATP_MPROTO_COUNT; p++)
        for (int o = 0; o < ATP_MOP_COUNT; o++)
            for (unsigned c = 0; c < NCODES; c++) {
                if (t->err[p][o][c] == 0)
                    continue;
                char code[32];
                lower_name(code, sizeof(code), code_at(c));
                put(w,
                    "atp_request_errors_total{protocol=\"%s\",operation=\"%s\",code=\"%s\"} %llu\n",
                    atp_metrics_proto_name(p), op_names[o], code,
                    (unsigned long long)t->err[p][o][c]);
            }

    family(w, "atp_request_duration_seconds", "histogram",
           "Time from a request's bytes being handled to its response being ready.");
    for (int p = 0; p < ATP_MPROTO_COUNT; p++)
        for (int o = 0; o < ATP_MOP_COUNT; o++) {
            if (!series_shown(t, p, o))
                continue;
            const char *pn = atp_metrics_proto_name(p);
            uint64_t cum = 0;
            for (unsigned b = 0; b <= ATP_METRICS_BUCKETS; b++) {
                cum += t->hist[p][o][b];
                char le[40];
                if (b < ATP_METRICS_BUCKETS)
                    fmt_float(le, sizeof(le), (double)atp_metrics_bucket_ns[b] / 1e9);
                else
                    snprintf(le, sizeof(le), "+Inf");
                put(w,
                    "atp_request_duration_seconds_bucket{protocol=\"%s\",operation=\"%s\","
                    "le=\"%s\"} %llu\n",
                    pn, op_names[o], le, (unsigned long long)cum);
            }
            char sum[40];
            fmt_float(sum, sizeof(sum), (double)t->sum_ns[p][o] / 1e9);
            put(w, "atp_request_duration_seconds_sum{protocol=\"%s\",operation=\"%s\"} %s\n", pn,
                op_names[o], sum);
            put(w, "atp_request_duration_seconds_count{protocol=\"%s\",operation=\"%s\"} %llu\n",
                pn, op_names[o], (unsigned long long)cum);
        }
}

/* --- store ------------------------------------------------------------------- */

static void gauge1(struct wr *w, const char *name, const char *help, uint64_t v)
{
    family(w, name, "gauge", help);
    put(w, "%s %llu\n", name, (unsigned long long)v);
}

static void counter1(struct wr *w, const char *name, const char *help, uint64_t v)
{
    family(w, name, "counter", help);
    put(w, "%s %llu\n", name, (unsigned long long)v);
}

static void render_store(struct wr *w, struct atp_store *store, const struct req_totals *t)
{
    struct atp_store_stats s;
    atp_store_stats(store, &s);
    gauge1(w, "atp_items", "Items (sku, location pairs) in the store.", s.items);
    gauge1(w, "atp_skus", "Distinct skus in the store.", s.skus);
    gauge1(w, "atp_locations", "Distinct locations in the store.", s.locations);
    gauge1(w, "atp_channels", "Configured sales channels.", atp_store_channel_count(store));
    gauge1(w, "atp_safety_overrides", "Safety-stock overrides per sku or item.", s.overrides);
    gauge1(w, "atp_store_reserved_bytes", "Address space the store set aside at start.",
           s.bytes_reserved);

    family(w, "atp_reservations", "gauge", "Reservations by current state.");
    put(w, "atp_reservations{state=\"held\"} %llu\n", (unsigned long long)s.reservations_held);
    put(w, "atp_reservations{state=\"committed\"} %llu\n",
        (unsigned long long)s.reservations_committed);

    counter1(w, "atp_reservations_granted_total", "Reservations granted (held).",
             s.reserves_granted);
    counter1(w, "atp_reservations_replayed_total",
             "Reserve requests answered with an existing reservation (same idempotency key).",
             s.reserves_replayed);
    counter1(w, "atp_reservations_committed_total", "Reservations committed.", s.commits);
    counter1(w, "atp_reservations_released_total", "Reservations released by clients.", s.releases);
    counter1(w, "atp_reservations_expired_total", "Held reservations expired by their TTL.",
             s.expirations);
    counter1(w, "atp_reservations_fulfilled_total", "Reservation lines shipped (fulfill events).",
             s.fulfillments);
    counter1(w, "atp_feed_records_total",
             "Change-feed records written (items found changed by feed calls).", s.feed_records);
    counter1(w, "atp_feed_cursor_expired_total",
             "Change-feed calls refused because their cursor had expired or was not this "
             "instance's.",
             s.feed_expired);
    counter1(w, "atp_oversell_refused_total",
             "Reservations refused because granting them would have oversold (insufficient "
             "stock).",
             s.reserves_rejected);

    /* Refusals per channel and reason, from the protocol layers. */
    family(w, "atp_reservations_rejected_total", "counter",
           "Reserve requests refused, per channel and reason (the problem type).");
    uint32_t nch = atp_store_channel_count(store);
    unsigned insuff = code_index(ATP_EINSUFFICIENT);
    for (uint32_t ch = 0; ch < nch && ch < ATP_MAX_CHANNELS; ch++) {
        struct atp_slice name = atp_store_channel_name(store, ch);
        for (unsigned c = 0; c < NCODES; c++) {
            if (c != insuff && t->resv_rejected[ch][c] == 0)
                continue;
            put(w, "atp_reservations_rejected_total{channel=\"%.*s\",reason=\"%s\"} %llu\n",
                (int)name.len, name.p, atp_error_slug(code_at(c)),
                (unsigned long long)t->resv_rejected[ch][c]);
        }
    }

    /* Expiry lateness: the store's buckets are 64 us * 2^k, not cumulative. */
    family(w, "atp_reservation_expiry_lateness_seconds", "histogram",
           "How late held reservations expired after their expires_at.");
    uint64_t cum = 0;
    for (unsigned k = 0; k < ATP_LATENESS_BUCKETS; k++) {
        cum += s.lateness_buckets[k];
        char le[40];
        if (k + 1 < ATP_LATENESS_BUCKETS)
            fmt_float(le, sizeof(le), (double)(UINT64_C(64) << k) / 1e6);
        else
            snprintf(le, sizeof(le), "+Inf");
        put(w, "atp_reservation_expiry_lateness_seconds_bucket{le=\"%s\"} %llu\n", le,
            (unsigned long long)cum);
    }
    char sum[40];
    fmt_float(sum, sizeof(sum), (double)s.lateness_sum_us / 1e6);
    put(w, "atp_reservation_expiry_lateness_seconds_sum %s\n", sum);
    put(w, "atp_reservation_expiry_lateness_seconds_count %llu\n", (unsigned long long)cum);
    char mx[40];
    fmt_float(mx, sizeof(mx), (double)s.lateness_max_us / 1e6);
    family(w, "atp_reservation_expiry_lateness_max_seconds", "gauge",
           "Worst expiry lateness seen since start.");
    put(w, "atp_reservation_expiry_lateness_max_seconds %s\n", mx);
}

/* --- process -------------------------------------------------------------------- */

static void render_process(struct wr *w)
{
    long tick = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tick <= 0)
        tick = 100;
    if (page <= 0)
        page = 4096;

    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    /* Fields after the command name (which may hold spaces): from field 3. */
    char *p = strrchr(buf, ')');
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, threads = 0;
    long long rss = 0;
    if (p &&
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %llu %*d "
               "%llu %llu %lld",
               &utime, &stime, &threads, &start, &vsize, &rss) == 6) {
        char v[40];
        fmt_float(v, sizeof(v), (double)(utime + stime) / (double)tick);
        family(w, "atp_process_cpu_seconds_total", "counter",
               "User and system CPU time of the process.");
        put(w, "atp_process_cpu_seconds_total %s\n", v);
        gauge1(w, "atp_process_resident_memory_bytes", "Resident memory of the process.",
               (uint64_t)(rss > 0 ? rss : 0) * (uint64_t)page);
        gauge1(w, "atp_process_virtual_memory_bytes", "Virtual memory of the process.", vsize);
        gauge1(w, "atp_process_threads", "Threads of the process.", threads);
        /* Start time: boot time (/proc/stat btime) plus the start in ticks. */
        f = fopen("/proc/stat", "re");
        unsigned long long btime = 0;
        char line[256];
        while (f && fgets(line, sizeof(line), f))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        if (f)
            fclose(f);
        if (btime) {
            fmt_float(v, sizeof(v), (double)btime + (double)start / (double)tick);
            family(w, "atp_process_start_time_seconds", "gauge",
                   "Start time of the process since the Unix epoch.");
            put(w, "atp_process_start_time_seconds %s\n", v);
        }
    }

    uint64_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                fds++;
        closedir(d);
        gauge1(w, "atp_process_open_fds", "Open file descriptors (sockets included).",
               fds > 0 ? fds - 1 : 0); /* minus the one opendir holds */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        gauge1(w, "atp_process_max_fds", "Limit on open file descriptors.", rl.rlim_cur);
}

/* --- statistics sources ----------------------------------------------------------- */

/*
 * How a source's name becomes a sample. `src` is the name before any '{';
 * `labeled` says whether the rule is for the form with labels. The value is
 * divided by `div`; for LE_MS the le label is in milliseconds and is
 * rewritten in seconds. `extra` labels are prepended.
 */
enum { T_GAUGE, T_COUNTER, T_HISTOGRAM };
enum { F_NONE = 0, F_LE_MS = 1 };

struct rule {
    const char *src;
    bool labeled;
    const char *family; /* the family name */
    const char *suffix; /* appended to the family for the sample ("_bucket", ...) */
    int type;
    const char *extra;
    double div; /* the value is divided by it (ms and us to seconds) */
    int flags;
    const char *help;
};

static const struct rule rules[] = {
    /* the server (src/server.c) */
    {"server_workers", false, "atp_server_workers", "", T_GAUGE, NULL, 1, 0,
     "Worker threads (one io_uring ring each)."},
    {"server_recv_multishot", false, "atp_server_recv_multishot", "", T_GAUGE, NULL, 1, 0,
     "1 when the receive path uses multishot recv with a provided-buffer ring."},
    {"server_connections_open", false, "atp_connections_open", "", T_GAUGE, NULL, 1, 0,
     "Client connections open now."},
    {"server_connections_accepted", false, "atp_connections_accepted_total", "", T_COUNTER, NULL, 1,
     0, "Client connections accepted."},
    {"server_connections_rejected_max", false, "atp_connections_rejected_total", "", T_COUNTER,
     "reason=\"max_connections\"", 1, 0, "Client connections refused, by reason."},
    {"server_connections_closed_idle", false, "atp_connections_closed_total", "", T_COUNTER,
     "reason=\"idle\"", 1, 0, "Client connections closed, by reason."},
    {"server_connections_closed_slow", false, "atp_connections_closed_total", "", T_COUNTER,
     "reason=\"slow_request\"", 1, 0, "Client connections closed, by reason."},
    {"server_connections_closed_protocol", false, "atp_connections_closed_total", "", T_COUNTER,
     "reason=\"protocol\"", 1, 0, "Client connections closed, by reason."},
    {"server_connections_closed_peer", false, "atp_connections_closed_total", "", T_COUNTER,
     "reason=\"peer\"", 1, 0, "Client connections closed, by reason."},
    {"server_connections_closed_drain", false, "atp_connections_closed_total", "", T_COUNTER,
     "reason=\"drain\"", 1, 0, "Client connections closed, by reason."},
    {"server_recv_restarts", false, "atp_recv_restarts_total", "", T_COUNTER, NULL, 1, 0,
     "Multishot receives restarted by the quiet check: after a second without a completion "
     "the connection's socket held an end of file, an error or bytes (most often a close "
     "whose completion was on its way; rarely one the kernel never reported)."},
    {"server_requests", false, "atp_server_requests_total", "", T_COUNTER, NULL, 1, 0,
     "Requests handled by the network workers (all protocols)."},
    {"server_bytes_in", false, "atp_network_receive_bytes_total", "", T_COUNTER, NULL, 1, 0,
     "Bytes received from clients."},
    {"server_bytes_out", false, "atp_network_transmit_bytes_total", "", T_COUNTER, NULL, 1, 0,
     "Bytes sent to clients."},
    {"server_backpressure_pauses", false, "atp_backpressure_pauses_total", "", T_COUNTER, NULL, 1,
     0, "Times reading from a client paused because its responses were not being read."},
    {"server_feed_waits", false, "atp_feed_waits_total", "", T_COUNTER, NULL, 1, 0,
     "Change-feed requests held until a change or the end of their wait."},
    {"server_feed_waiting", false, "atp_feed_waiting", "", T_GAUGE, NULL, 1, 0,
     "Connections whose change-feed request is being held now."},
    /* durability: write-ahead log and snapshots (src/wal.c, src/recover.c) */
    {"durable_ready", false, "atp_durable_ready", "", T_GAUGE, NULL, 1, 0,
     "1 when the write-ahead log is open and has not failed."},
    {"durable_failed", false, "atp_durable_failed", "", T_GAUGE, NULL, 1, 0,
     "1 after durable storage failed (reservations are refused: read-only)."},
    {"durable_fsync_policy", false, "atp_durable_fsync_policy", "", T_GAUGE, NULL, 1, 0,
     "appendfsync in force (enum atp_fsync_policy of durable.h)."},
    {"durable_pos_begun", false, "atp_wal_position", "", T_GAUGE, "stage=\"begun\"", 1, 0,
     "Write-ahead log positions: handed out, written, and written and synced."},
    {"durable_pos_written", false, "atp_wal_position", "", T_GAUGE, "stage=\"written\"", 1, 0,
     "Write-ahead log positions: handed out, written, and written and synced."},
    {"durable_pos_synced", false, "atp_wal_position", "", T_GAUGE, "stage=\"synced\"", 1, 0,
     "Write-ahead log positions: handed out, written, and written and synced."},
    {"durable_records", false, "atp_wal_records_total", "", T_COUNTER, NULL, 1, 0,
     "Records written to the write-ahead log."},
    {"durable_bytes", false, "atp_wal_written_bytes_total", "", T_COUNTER, NULL, 1, 0,
     "Bytes written to the write-ahead log."},
    {"durable_batches", false, "atp_wal_writes_total", "", T_COUNTER, NULL, 1, 0,
     "Writes of the write-ahead log (each carries a batch of records)."},
    {"durable_fsyncs", false, "atp_wal_fsyncs_total", "", T_COUNTER, NULL, 1, 0,
     "fdatasync calls on the write-ahead log."},
    {"durable_fsync_max_us", false, "atp_wal_fsync_max_seconds", "", T_GAUGE, NULL, 1e6, 0,
     "Longest fdatasync of the write-ahead log since start."},
    {"durable_fsync_sum_us", false, "atp_wal_fsync_seconds_total", "", T_COUNTER, NULL, 1e6, 0,
     "Time spent in fdatasync of the write-ahead log."},
    {"durable_ring_waits", false, "atp_wal_ring_waits_total", "", T_COUNTER, NULL, 1, 0,
     "Times a change waited for a free slot in the log's ring."},
    {"durable_log_bytes", false, "atp_wal_size_bytes", "", T_GAUGE, NULL, 1, 0,
     "Bytes in the write-ahead log since the last snapshot."},
    {"durable_snapshots", false, "atp_snapshots_total", "", T_COUNTER, NULL, 1, 0,
     "Snapshots taken."},
    {"durable_snapshot_failures", false, "atp_snapshot_failures_total", "", T_COUNTER, NULL, 1, 0,
     "Snapshots that failed."},
    {"durable_snapshot_pos", false, "atp_snapshot_position", "", T_GAUGE, NULL, 1, 0,
     "Log position the latest snapshot covers."},
    {"durable_snapshot_bytes", false, "atp_snapshot_size_bytes", "", T_GAUGE, NULL, 1, 0,
     "Size of the latest snapshot."},
    {"durable_snapshot_us", false, "atp_snapshot_duration_seconds", "", T_GAUGE, NULL, 1e6, 0,
     "How long the latest snapshot took."},
    /* the Kafka ingest (src/ingest.c) */
    {"ingest_consumed", false, "atp_kafka_messages_total", "", T_COUNTER, NULL, 1, 0,
     "Kafka messages whose fate was decided."},
    {"ingest_applied", false, "atp_kafka_events_total", "", T_COUNTER, "outcome=\"applied\"", 1, 0,
     "Inventory events consumed, by outcome."},
    {"ingest_duplicates", false, "atp_kafka_events_total", "", T_COUNTER, "outcome=\"duplicate\"",
     1, 0, "Inventory events consumed, by outcome."},
    {"ingest_stale_sets", false, "atp_kafka_events_total", "", T_COUNTER, "outcome=\"stale\"", 1, 0,
     "Inventory events consumed, by outcome."},
    {"ingest_dead_lettered", false, "atp_kafka_events_total", "", T_COUNTER,
     "outcome=\"dead_lettered\"", 1, 0, "Inventory events consumed, by outcome."},
    {"ingest_dead_lettered", true, "atp_kafka_dead_lettered_total", "", T_COUNTER, NULL, 1, 0,
     "Events sent to the dead-letter topic, by reason."},
    {"ingest_dlq_failed", false, "atp_kafka_dead_letter_failures_total", "", T_COUNTER, NULL, 1, 0,
     "Dead letters the producer could not deliver."},
    {"ingest_replayed", false, "atp_kafka_redelivered_skipped_total", "", T_COUNTER, NULL, 1, 0,
     "Messages delivered again below the applied offset, skipped."},
    {"ingest_revoked_skipped", false, "atp_kafka_revoked_skipped_total", "", T_COUNTER, NULL, 1, 0,
     "Messages of a partition no longer assigned, skipped."},
    {"ingest_gaps", false, "atp_kafka_gaps_total", "", T_COUNTER, NULL, 1, 0,
     "Times a partition was marked stale (offsets lost to retention)."},
    {"ingest_resyncs", false, "atp_kafka_resyncs_total", "", T_COUNTER, NULL, 1, 0,
     "Times a stale partition was resynced."},
    {"ingest_kafka_errors", false, "atp_kafka_errors_total", "", T_COUNTER, NULL, 1, 0,
     "Consumer and client errors reported by librdkafka."},
    {"ingest_rebalances", false, "atp_kafka_rebalances_total", "", T_COUNTER, NULL, 1, 0,
     "Consumer group rebalances."},
    {"ingest_running", false, "atp_kafka_consumer_running", "", T_GAUGE, NULL, 1, 0,
     "1 while the Kafka consumer runs."},
    {"ingest_ready", false, "atp_kafka_ready", "", T_GAUGE, NULL, 1, 0,
     "1 when assigned, nothing stale and every partition's lag under the threshold."},
    {"ingest_partitions_assigned", false, "atp_kafka_partitions_assigned", "", T_GAUGE, NULL, 1, 0,
     "Partitions assigned to this instance."},
    {"ingest_partitions_stale", false, "atp_kafka_partitions_stale", "", T_GAUGE, NULL, 1, 0,
     "Partitions with a detected gap, not yet resynced."},
    {"ingest_lag_max", false, "atp_kafka_consumer_lag_max", "", T_GAUGE, NULL, 1, 0,
     "Largest consumer lag over the assigned partitions (messages; -1 unknown)."},
    {"ingest_lag", true, "atp_kafka_consumer_lag", "", T_GAUGE, NULL, 1, 0,
     "Consumer lag per partition: high watermark minus the next offset to apply (messages)."},
    {"ingest_kafka_lag", true, "atp_kafka_client_consumer_lag", "", T_GAUGE, NULL, 1, 0,
     "Consumer lag per partition as librdkafka's statistics report it (-1 unknown)."},
    {"ingest_next_offset", true, "atp_kafka_next_offset", "", T_GAUGE, NULL, 1, 0,
     "Next offset to apply per partition (-1: none yet)."},
    {"ingest_stale", true, "atp_kafka_partition_stale", "", T_GAUGE, NULL, 1, 0,
     "1 while a partition is stale."},
    {"ingest_last_event_ms", true, "atp_kafka_last_event_timestamp_seconds", "", T_GAUGE, NULL, 1e3,
     0, "Kafka timestamp of the last event applied per partition."},
    {"ingest_freshness_ms_bucket", true, "atp_kafka_event_freshness_seconds", "_bucket",
     T_HISTOGRAM, NULL, 1, F_LE_MS,
     "Time from an event's Kafka timestamp to its being visible in the store."},
    {"ingest_freshness_count", false, "atp_kafka_event_freshness_seconds", "_count", T_HISTOGRAM,
     NULL, 1, 0, NULL},
    {"ingest_freshness_us_sum", false, "atp_kafka_event_freshness_seconds", "_sum", T_HISTOGRAM,
     NULL, 1e6, 0, NULL},
    {"ingest_freshness_us_max", false, "atp_kafka_event_freshness_max_seconds", "", T_GAUGE, NULL,
     1e6, 0, "Worst event freshness seen since start."},
};
#define NRULES (sizeof(rules) / sizeof(rules[0]))

struct sample {
    char fam[96];     /* family name */
    char name[112];   /* sample name (family + suffix) */
    char labels[320]; /* without braces; may be empty */
    double value;
    int rule; /* index into rules, -1 for an unknown name */
    unsigned rank, seq;
};

struct collect {
    struct sample *v;
    size_t n, cap;
    char fams[128][96]; /* distinct families in order of first appearance */
    unsigned nfams;
    int err;
};

static const struct rule *find_rule(const char *base, size_t blen, bool labeled)
{
    for (size_t i = 0; i < NRULES; i++)
        if (rules[i].labeled == labeled && strlen(rules[i].src) == blen &&
            memcmp(rules[i].src, base, blen) == 0)
            return &rules[i];
    return NULL;
}

/* Rewrite le="<ms>" to seconds in a label list. */
static void le_ms_to_s(char *labels, size_t cap)
{
    char *le = strstr(labels, "le=\"");
    if (!le)
        return;
    char *v = le + 4, *end = strchr(v, '"');
    if (!end || strncmp(v, "+Inf", 4) == 0)
        return;
    char num[40];
    fmt_float(num, sizeof(num), strtod(v, NULL) / 1e3);
    char rest[320];
    snprintf(rest, sizeof(rest), "%s", end);
    snprintf(v, cap - (size_t)(v - labels), "%s%s", num, rest);
}

static void collect_emit(void *arg, const char *name, int64_t value)
{
    struct collect *c = arg;
    if (c->err)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct sample *v = realloc(c->v, cap * sizeof(*v));
        if (!v) {
            c->err = -ENOMEM;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    struct sample *s = &c->v[c->n];
    const char *brace = strchr(name, '{');
    size_t blen = brace ? (size_t)(brace - name) : strlen(name);
    const struct rule *r = find_rule(name, blen, brace != NULL);
    char labels[320] = "";
    if (brace) {
        const char *close = strrchr(brace, '}');
        size_t llen = close && close > brace ? (size_t)(close - brace - 1) : strlen(brace + 1);
        if (llen >= sizeof(labels))
            return; /* absurd label set: dropped rather than cut */
        memcpy(labels, brace + 1, llen);
        labels[llen] = '\0';
    }
    if (r) {
        snprintf(s->fam, sizeof(s->fam), "%s", r->family);
        snprintf(s->name, sizeof(s->name), "%s%s", r->family, r->suffix);
        if (r->flags & F_LE_MS)
            le_ms_to_s(labels, sizeof(labels));
        if (r->extra)
            snprintf(s->labels, sizeof(s->labels), "%s%s%s", r->extra, labels[0] ? "," : "",
                     labels);
        else
            snprintf(s->labels, sizeof(s->labels), "%s", labels);
        s->value = (double)value / r->div;
        s->rule = (int)(r - rules);
    } else {
        /* Unknown: a gauge named after the source, in the metric charset. */
        size_t k = 0;
        k += (size_t)snprintf(s->fam, sizeof(s->fam), "atp_");
        for (size_t i = 0; i < blen && k + 1 < sizeof(s->fam); i++) {
            char ch = name[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '_' || ch == ':';
            s->fam[k++] = ok ? ch : '_';
        }
        s->fam[k] = '\0';
        /* Base units: a _us or _ms suffix becomes _seconds. */
        double div = 1;
        if (k > 7 && (strcmp(s->fam + k - 3, "_us") == 0 || strcmp(s->fam + k - 3, "_ms") == 0)) {
            div = s->fam[k - 2] == 'u' ? 1e6 : 1e3;
            snprintf(s->fam + k - 3, sizeof(s->fam) - (k - 3), "_seconds");
        }
        snprintf(s->name, sizeof(s->name), "%s", s->fam);
        snprintf(s->labels, sizeof(s->labels), "%s", labels);
        s->value = (double)value / div;
        s->rule = -1;
    }
    unsigned rank = 0;
    while (rank < c->nfams && strcmp(c->fams[rank], s->fam) != 0)
        rank++;
    if (rank == c->nfams) {
        if (c->nfams == sizeof(c->fams) / sizeof(c->fams[0]))
            return; /* more than 128 families from sources: the rest is dropped */
        snprintf(c->fams[c->nfams++], sizeof(c->fams[0]), "%s", s->fam);
    }
    s->rank = rank;
    s->seq = (unsigned)c->n;
    c->n++;
}

static int sample_cmp(const void *a, const void *b)
{
    const struct sample *x = a, *y = b;
    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static void render_sources(struct wr *w, const struct atp_stats_source *src, uint32_t n)
{
    struct collect c;
    memset(&c, 0, sizeof(c));
    for (uint32_t i = 0; i < n; i++)
        if (src[i].collect)
            src[i].collect(src[i].arg, collect_emit, &c);
    if (c.err) {
        w->err = c.err;
        free(c.v);
        return;
    }
    qsort(c.v, c.n, sizeof(*c.v), sample_cmp);
    for (size_t i = 0; i < c.n; i++) {
        const struct sample *s = &c.v[i];
        if (i == 0 || s->rank != c.v[i - 1].rank) {
            /* The first rule for the family that has a help text names it. */
            const char *help = "Statistic reported by a statistics source.";
            int type = T_GAUGE;
            for (size_t k = 0; k < NRULES; k++)
                if (strcmp(rules[k].family, s->fam) == 0) {
                    type = rules[k].type;
                    if (rules[k].help) {
                        help = rules[k].help;
                        break;
                    }
                }
            family(w, s->fam,
                   type == T_COUNTER     ? "counter"
                   : type == T_HISTOGRAM ? "histogram"
                                         : "gauge",
                   help);
        }
        char v[40];
        fmt_float(v, sizeof(v), s->value);
        if (s->labels[0])
            put(w, "%s{%s} %s\n", s->name, s->labels, v);
        else
            put(w, "%s %s\n", s->name, v);
    }
    free(c.v);
}

/* --- render ---------------------------------------------------------------------- */

int atp_metrics_render(const struct atp_metrics_scrape *s, struct atp_buf *out)
{
    size_t start = out->len;
    struct wr w = {.out = out, .err = 0};
    /* The totals are large (per code and bucket): on the heap, not the stack
     * of a worker thread. */
    struct req_totals *t = malloc(sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    sum_shards(t);

    family(&w, "atp_build_info", "gauge", "Build of this atpd; the value is always 1.");
    put(&w, "atp_build_info{version=\"%s\"} 1\n", s->version ? s->version : "unknown");
    render_process(&w);
    render_requests(&w, t);
    if (s->store)
        render_store(&w, s->store, t);
    if (s->sources && s->nsources)
        render_sources(&w, s->sources, s->nsources);
    free(t);
    if (w.err) {
        out->len = start;
        return w.err;
    }
    return 0;
}
