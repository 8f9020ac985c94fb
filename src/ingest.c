/*
 * ingest.c - the Kafka consumer that applies inventory events exactly once.
 *
 * It knows librdkafka (consumer group, dead-letter producer, the built-in
 * mock cluster), the event module (parse, validate, apply) and the store
 * API. It knows nothing about sockets, the wire protocol or config files,
 * and it never logs by itself: messages go to the config's log callback.
 *
 * Design notes
 *
 * Offsets. atpd owns them: `parts[]` holds the next offset of every
 * (topic, partition) this ingest has applied events from. The rebalance
 * callback rewrites the offsets of an assignment to those before it assigns,
 * so Kafka's committed offsets are only ever read when atpd has none, and
 * even then the start is explicit (the beginning, or the end when the user
 * set auto.offset.reset to latest). After a message's fate is settled its
 * offset is stored for librdkafka's auto-commit, for monitoring only.
 *
 * Exactly once. One thread consumes and applies, so nothing is applied
 * while the rebalance callback runs (librdkafka calls it from inside the
 * poll call on this thread). Two guards cover what a batch may still hold
 * when the callback returns: a message for a partition that is no longer
 * assigned is dropped unapplied, and a message below the partition's next
 * offset is dropped as a replay. With those, a revocation, a reassignment, a
 * seek or a broker's retransmission can never apply an offset twice.
 *
 * Gaps. auto.offset.reset=error makes librdkafka report an offset out of
 * range (a stored offset that fell out of retention) instead of skipping
 * data silently. The partition is then marked stale (counter, readiness,
 * atp_ingest_check_item) and consumption restarts at the earliest retained
 * offset: later events still apply, and a resync (EVENTS.md) clears the mark.
 *
 * Memory is bounded: the partition table is fixed (ATP_INGEST_MAX_PARTITIONS),
 * the duplicate window is a ring of `dedupe_events` 128-bit id hashes with
 * an open-addressing index (2x the ring, so probes stay short), the resync
 * set is allocated on the first gap with a fixed capacity, and librdkafka's
 * own queues are bounded by its configuration.
 *
 * Concurrency. The consumer thread is the only writer of everything below
 * except the librdkafka handles' internal state. Other threads read counters
 * and partition fields through relaxed atomics (each value is current, the
 * set of them is not a snapshot); nparts is published with release (P1) and
 * read with acquire (P2) so a reader never sees a half-filled entry.
 */
#include "atp/ingest.h"
#include "store_int.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <xxhash.h>

#define BATCH_MAX      256  /* messages taken from librdkafka per call */
#define POLL_MS        100  /* longest wait in one consume call (stop latency) */
#define WATERMARK_MS   100  /* how often cached high watermarks are read */
#define DLQ_RETRY_MS   1000 /* longest wait for room in the producer queue */
#define DEDUPE_DEFAULT (1u << 20)
#define RESYNC_DEFAULT (1u << 20)
#define LAG_DEFAULT    1000

typedef int32_t (*partitioner_fn)(const rd_kafka_topic_t *rkt, const void *key, size_t keylen,
                                  int32_t partition_cnt, void *rkt_opaque, void *msg_opaque);

struct topic {
    char *name;
    _Atomic int32_t npartitions; /* from librdkafka statistics; 0 unknown */
};

struct part {
    const char *topic; /* topics[tidx].name */
    uint32_t tidx;
    int32_t partition;
    _Atomic int64_t next_offset; /* -1: none */
    _Atomic int64_t hi;          /* high watermark (LSO when read_committed); -1 unknown */
    _Atomic int64_t kafka_lag;   /* librdkafka's consumer_lag; -1 unknown */
    _Atomic bool assigned;
    _Atomic bool stale;
    _Atomic uint64_t stale_epoch;  /* unique per gap; keys the resync set */
    _Atomic int64_t last_event_ms; /* timestamp of the last applied event; 0 none */
    bool fresh;                    /* consumer thread: started without an atpd offset */
    /* Consumer thread: restarted after a gap and nothing read since. */
    bool restarted;
    /* Consumer thread: the last settled message of the current batch, whose
     * offset is stored for auto-commit once the batch is done. */
    rd_kafka_topic_t *store_rkt; /* NULL: nothing to store */
    int64_t store_offset;
};

struct dd_entry {
    uint64_t lo, hi; /* XXH3-128 of the event_id */
    uint64_t at_ms;  /* arrival, for the age bound */
};

/* One message of a batch, parsed ahead of applying (consumer_main). */
struct parsed {
    int rc; /* atp_event_parse's */
    struct atp_event ev;
    struct atp_event_error err;
    XXH128_hash_t h;  /* of ev.event_id when rc == 0 */
    uint64_t made_us; /* applied: its timestamp, for the freshness histogram (0: none) */
};

/* A batch's item lookups, made only to bring the items into the cache. */
struct warm {
    struct atp_get_req req[BATCH_MAX];
    struct atp_breakdown bd[BATCH_MAX];
    int rc[BATCH_MAX];
};

/* The duplicate window; the consumer thread's alone. */
struct dedupe {
    struct dd_entry *ring;
    uint32_t cap;    /* ring slots */
    uint32_t oldest; /* ring index of the oldest entry */
    uint32_t count;
    uint32_t *index;     /* ring index + 1; 0 is empty */
    uint32_t mask;       /* index slots - 1 */
    uint64_t max_age_ms; /* 0: none */
};

/* consumed .. stale_sets and fresh_* are written by the consumer thread
 * only (bump1, C1); the rest by whichever thread a callback runs on. */
struct counters {
    _Atomic uint64_t consumed, applied, duplicates, stale_sets, dead_lettered, dlq_failed;
    _Atomic uint64_t replayed, revoked_skipped, gaps, resyncs, kafka_errors, rebalances;
    _Atomic uint64_t dead_by_reason[ATP_DLQ_COUNT];
    _Atomic uint64_t fresh_buckets[ATP_INGEST_FRESH_BUCKETS];
    _Atomic uint64_t fresh_count, fresh_sum_us, fresh_max_us;
};

struct atp_ingest {
    struct atp_store *store;
    char *bootstrap; /* effective bootstrap.servers */
    char *group;
    char *dlq_topic;
    struct topic topics[ATP_INGEST_MAX_TOPICS];
    _Atomic uint32_t ntopics;
    uint32_t nsubscribed;        /* the first nsubscribed topics are the config's */
    struct atp_ingest_kv *kafka; /* deep copy, {NULL, NULL}-terminated */
    int64_t lag_threshold;
    partitioner_fn partitioner; /* NULL: unknown */
    bool trust_truncated_start;
    int64_t start_offset; /* RD_KAFKA_OFFSET_BEGINNING or _END */
    atp_ingest_log_fn log;
    void *log_arg;
    atp_ingest_applied_fn on_applied;
    void *on_applied_arg;
    void (*on_apply)(void *arg); /* just before an event is applied */

    struct part *parts;      /* ATP_INGEST_MAX_PARTITIONS entries */
    _Atomic uint32_t nparts; /* P1/P2 */
    struct part *last;       /* consumer thread: last looked up */
    _Atomic uint32_t nstale;
    _Atomic uint32_t nassigned;
    _Atomic bool assigned_once;
    _Atomic bool running;
    _Atomic bool stop;
    uint64_t epoch; /* consumer thread: last stale epoch handed out */

    _Atomic(_Atomic uint64_t *) resynced; /* item hashes; allocated on the first gap */
    uint32_t resync_cap;
    uint32_t resync_count; /* consumer thread */

    struct dedupe dd;
    struct atp_event_parser *parser;
    struct parsed *parsed; /* consumer thread: BATCH_MAX slots, see consumer_main */
    struct warm *warm;     /* consumer thread: BATCH_MAX slots, see warm_items */
    struct counters c;

    rd_kafka_t *mock_rk; /* owns the embedded cluster's bookkeeping */
    rd_kafka_mock_cluster_t *mock;
    rd_kafka_t *dlq_rk;
    rd_kafka_t *rk; /* the consumer while running */
    rd_kafka_queue_t *q;
    pthread_t thread;
    uint64_t last_watermark_ms;
    uint64_t batch_ms;                /* consumer thread: clock at the batch's start */
    struct part *to_store[BATCH_MAX]; /* consumer thread: parts with store_rkt set */
    uint32_t nto_store;
};

/* --- small helpers -------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void bump(_Atomic uint64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/*
 * A counter only the consumer thread writes (C1: readers load it relaxed):
 * a plain load and store, no locked read-modify-write. Five of them per
 * event cost ~40 ns as atomic adds.
 */
static void bump1(_Atomic uint64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static uint64_t rd(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static void ilog(const struct atp_ingest *ing, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ilog(const struct atp_ingest *ing, int level, const char *fmt, ...)
{
    if (!ing->log)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    ing->log(ing->log_arg, level, buf);
}

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    const struct atp_ingest *ing = rd_kafka_opaque(rk);
    if (!ing)
        return;
    /* librdkafka uses syslog levels: 0..3 errors, 4 warning, 5..6 info. */
    int lvl = level <= 3   ? ATP_INGEST_LOG_ERROR
              : level == 4 ? ATP_INGEST_LOG_WARN
              : level <= 6 ? ATP_INGEST_LOG_INFO
                           : ATP_INGEST_LOG_DEBUG;
    ilog(ing, lvl, "kafka %s %s: %s", rd_kafka_name(rk), fac, buf);
}

static void kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct atp_ingest *ing = opaque;
    bump(&ing->c.kafka_errors);
    int fatal = err == RD_KAFKA_RESP_ERR__FATAL;
    /* librdkafka's log already has a line for every failed connection. */
    int level = fatal                                 ? ATP_INGEST_LOG_ERROR
                : err == RD_KAFKA_RESP_ERR__TRANSPORT ? ATP_INGEST_LOG_DEBUG
                                                      : ATP_INGEST_LOG_WARN;
    ilog(ing, level, "kafka %s: %s: %s", rd_kafka_name(rk),
         rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

/* --- freshness ------------------------------------------------------------ */

static const uint64_t fresh_bounds_ms[ATP_INGEST_FRESH_BUCKETS] = {
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, UINT64_MAX,
};

uint64_t atp_ingest_fresh_bound_ms(unsigned k)
{
    return k < ATP_INGEST_FRESH_BUCKETS ? fresh_bounds_ms[k] : UINT64_MAX;
}

static void record_freshness(struct atp_ingest *ing, uint64_t fresh_us)
{
    unsigned k = 0;
    while (k < ATP_INGEST_FRESH_BUCKETS - 1 && fresh_us > fresh_bounds_ms[k] * 1000u)
        k++;
    bump1(&ing->c.fresh_buckets[k]);
    bump1(&ing->c.fresh_count);
    atomic_store_explicit(&ing->c.fresh_sum_us, rd(&ing->c.fresh_sum_us) + fresh_us,
                          memory_order_relaxed);
    if (fresh_us > rd(&ing->c.fresh_max_us))
        atomic_store_explicit(&ing->c.fresh_max_us, fresh_us, memory_order_relaxed);
}

/* --- duplicate window ----------------------------------------------------- */

static int dd_init(struct dedupe *d, uint32_t cap, uint64_t max_age_ms)
{
    uint32_t slots = 16;
    while (slots < 2 * (uint64_t)cap)
        slots <<= 1;
    /* Zeroed mappings on transparent huge pages where the kernel gives
     * them: every event probes the index at random, and with 4 KiB pages
     * each probe also missed the TLB. */
    d->ring = store_map((size_t)cap * sizeof(*d->ring));
    d->index = store_map((size_t)slots * sizeof(*d->index));
    if (!d->ring || !d->index) {
        store_unmap(d->ring, (size_t)cap * sizeof(*d->ring));
        store_unmap(d->index, (size_t)slots * sizeof(*d->index));
        return -ENOMEM;
    }
    /* Touched now, not by the consumer thread: a first touch of a huge page
     * zeroes 2 MiB (and may compact memory) in the middle of a batch, which
     * in a fresh ingest was ~3% of that thread's samples and would land on
     * freshness. The window fills up to its capacity anyway. */
    store_prefault(d->ring, (size_t)cap * sizeof(*d->ring));
    store_prefault(d->index, (size_t)slots * sizeof(*d->index));
    d->cap = cap;
    d->mask = slots - 1;
    d->max_age_ms = max_age_ms;
    return 0;
}

static void dd_free(struct dedupe *d)
{
    store_unmap(d->ring, (size_t)d->cap * sizeof(*d->ring));
    store_unmap(d->index, ((size_t)d->mask + 1) * sizeof(*d->index));
}

/* Remove the oldest entry: find its index slot, then shift the cluster back. */
static void dd_evict_oldest(struct dedupe *d)
{
    uint32_t r = d->oldest;
    uint32_t i = (uint32_t)d->ring[r].lo & d->mask;
    while (d->index[i] != r + 1)
        i = (i + 1) & d->mask;
    /* Backward-shift deletion keeps every probe chain unbroken. */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & d->mask;
        if (d->index[j] == 0)
            break;
        uint32_t k = (uint32_t)d->ring[d->index[j] - 1].lo & d->mask;
        /* Move j into the hole at i unless its home k lies cyclically in (i, j]. */
        bool home_between = i <= j ? (k > i && k <= j) : (k > i || k <= j);
        if (!home_between) {
            d->index[i] = d->index[j];
            i = j;
        }
    }
    d->index[i] = 0;
    d->oldest = (d->oldest + 1) % d->cap;
    d->count--;
}

/* The index slot where a lookup of h starts: fetched ahead of the lookup. */
static void dd_prefetch(const struct dedupe *d, XXH128_hash_t h)
{
    __builtin_prefetch(&d->index[(uint32_t)h.low64 & d->mask]);
}

static bool dd_seen(struct dedupe *d, XXH128_hash_t h, uint64_t now)
{
    while (d->count && d->max_age_ms && d->ring[d->oldest].at_ms + d->max_age_ms < now)
        dd_evict_oldest(d);
    for (uint32_t i = (uint32_t)h.low64 & d->mask; d->index[i]; i = (i + 1) & d->mask) {
        const struct dd_entry *e = &d->ring[d->index[i] - 1];
        if (e->lo == h.low64 && e->hi == h.high64)
            return true;
    }
    return false;
}

static void dd_add(struct dedupe *d, XXH128_hash_t h, uint64_t now)
{
    if (d->count == d->cap)
        dd_evict_oldest(d);
    uint32_t r = (d->oldest + d->count) % d->cap;
    d->ring[r] = (struct dd_entry){h.low64, h.high64, now};
    d->count++;
    uint32_t i = (uint32_t)h.low64 & d->mask;
    while (d->index[i])
        i = (i + 1) & d->mask;
    d->index[i] = r + 1;
}

/* --- topics and partitions ------------------------------------------------ */

static int topic_find(const struct atp_ingest *ing, const char *name)
{
    uint32_t n = atomic_load_explicit(&ing->ntopics, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(ing->topics[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* Controlling thread or consumer thread, never both at once (see header). */
static int topic_intern(struct atp_ingest *ing, const char *name)
{
    int t = topic_find(ing, name);
    if (t >= 0)
        return t;
    uint32_t n = atomic_load_explicit(&ing->ntopics, memory_order_relaxed);
    if (n == ATP_INGEST_MAX_TOPICS)
        return -1;
    ing->topics[n].name = strdup(name);
    if (!ing->topics[n].name)
        return -1;
    atomic_store_explicit(&ing->ntopics, n + 1, memory_order_release);
    return (int)n;
}

static struct part *part_find(const struct atp_ingest *ing, uint32_t tidx, int32_t partition)
{
    uint32_t n = atomic_load_explicit(&ing->nparts, memory_order_acquire); /* P2 */
    for (uint32_t i = 0; i < n; i++)
        if (ing->parts[i].tidx == tidx && ing->parts[i].partition == partition)
            return &ing->parts[i];
    return NULL;
}

static struct part *part_get(struct atp_ingest *ing, const char *topic, int32_t partition)
{
    struct part *p = ing->last;
    if (p && p->partition == partition && strcmp(p->topic, topic) == 0)
        return p;
    int t = topic_intern(ing, topic);
    if (t < 0)
        return NULL;
    p = part_find(ing, (uint32_t)t, partition);
    if (!p) {
        uint32_t n = atomic_load_explicit(&ing->nparts, memory_order_relaxed);
        if (n == ATP_INGEST_MAX_PARTITIONS)
            return NULL;
        p = &ing->parts[n];
        p->topic = ing->topics[t].name;
        p->tidx = (uint32_t)t;
        p->partition = partition;
        atomic_init(&p->next_offset, -1);
        atomic_init(&p->hi, -1);
        atomic_init(&p->kafka_lag, -1);
        atomic_init(&p->assigned, false);
        atomic_init(&p->stale, false);
        atomic_init(&p->stale_epoch, 0);
        p->restarted = false;
        p->fresh = false;
        atomic_store_explicit(&ing->nparts, n + 1, memory_order_release); /* P1 */
    }
    ing->last = p;
    return p;
}

static int64_t part_lag(const struct part *p)
{
    int64_t hi = atomic_load_explicit(&p->hi, memory_order_relaxed);
    int64_t next = atomic_load_explicit(&p->next_offset, memory_order_relaxed);
    if (hi < 0)
        return -1;
    if (next < 0)
        return hi; /* nothing applied yet: at most everything */
    return hi > next ? hi - next : 0;
}

/* --- stale partitions and resync ------------------------------------------ */

static uint64_t item_hash(struct atp_slice sku, struct atp_slice loc, uint64_t epoch)
{
    char buf[ATP_SKU_MAX + 1 + ATP_LOC_MAX];
    memcpy(buf, sku.p, sku.len);
    buf[sku.len] = '\0'; /* never in a sku: keeps (ab, c) apart from (a, bc) */
    memcpy(buf + sku.len + 1, loc.p, loc.len);
    uint64_t h = XXH3_64bits_withSeed(buf, sku.len + 1 + loc.len, epoch);
    return h ? h : 1;
}

static bool resynced_has(const struct atp_ingest *ing, uint64_t h)
{
    _Atomic uint64_t *set = atomic_load_explicit(&ing->resynced, memory_order_acquire);
    if (!set)
        return false;
    uint32_t mask = ing->resync_cap - 1;
    for (uint32_t i = (uint32_t)h & mask, n = 0; n <= mask; i = (i + 1) & mask, n++) {
        uint64_t v = atomic_load_explicit(&set[i], memory_order_relaxed);
        if (v == h)
            return true;
        if (v == 0)
            return false;
    }
    return false;
}

static void resynced_add(struct atp_ingest *ing, uint64_t h)
{
    _Atomic uint64_t *set = atomic_load_explicit(&ing->resynced, memory_order_relaxed);
    /* Past 1/2 load the set stops growing: such items stay stale until
     * resync_complete, which errs on the safe side. */
    if (!set || ing->resync_count >= ing->resync_cap / 2)
        return;
    uint32_t mask = ing->resync_cap - 1;
    uint32_t i = (uint32_t)h & mask;
    for (;;) {
        uint64_t v = atomic_load_explicit(&set[i], memory_order_relaxed);
        if (v == h)
            return;
        if (v == 0)
            break;
        i = (i + 1) & mask;
    }
    atomic_store_explicit(&set[i], h, memory_order_relaxed);
    ing->resync_count++;
}

static void resynced_clear(struct atp_ingest *ing)
{
    _Atomic uint64_t *set = atomic_load_explicit(&ing->resynced, memory_order_relaxed);
    if (!set || ing->resync_count == 0)
        return;
    for (uint32_t i = 0; i < ing->resync_cap; i++)
        atomic_store_explicit(&set[i], 0, memory_order_relaxed);
    ing->resync_count = 0;
}

/*
 * The partition count of a topic, for mapping skus to partitions in
 * atp_ingest_check_item(). librdkafka's statistics list the partitions it
 * knows from metadata; when a partition goes stale the count is also asked
 * for directly (the consumer thread may block here up to 2 s, once per gap).
 * It never shrinks: Kafka topics only gain partitions.
 */
static void raise_npartitions(struct atp_ingest *ing, uint32_t tidx, int32_t count)
{
    _Atomic int32_t *np = &ing->topics[tidx].npartitions;
    int32_t cur = atomic_load_explicit(np, memory_order_relaxed);
    while (count > cur && !atomic_compare_exchange_weak_explicit(
                              np, &cur, count, memory_order_relaxed, memory_order_relaxed))
        ;
}

static void query_npartitions(struct atp_ingest *ing, uint32_t tidx)
{
    if (!ing->rk)
        return;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(ing->rk, ing->topics[tidx].name, NULL);
    const struct rd_kafka_metadata *md = NULL;
    if (rkt && rd_kafka_metadata(ing->rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->topic_cnt == 1 && !md->topics[0].err)
            raise_npartitions(ing, tidx, md->topics[0].partition_cnt);
        rd_kafka_metadata_destroy(md);
    }
    if (rkt)
        rd_kafka_topic_destroy(rkt);
}

static void mark_stale(struct atp_ingest *ing, struct part *p, const char *why)
{
    query_npartitions(ing, p->tidx);
    if (!atomic_load_explicit(&ing->resynced, memory_order_relaxed)) {
        _Atomic uint64_t *set = calloc(ing->resync_cap, sizeof(*set));
        if (set)
            atomic_store_explicit(&ing->resynced, set, memory_order_release);
    }
    /* A new epoch for every gap: items resynced after an earlier gap may
     * have missed events in this one. */
    atomic_store_explicit(&p->stale_epoch, ++ing->epoch, memory_order_relaxed);
    if (!atomic_exchange(&p->stale, true))
        atomic_fetch_add(&ing->nstale, 1);
    bump(&ing->c.gaps);
    ilog(ing, ATP_INGEST_LOG_ERROR,
         "partition %s [%" PRId32 "] is stale: %s; reservations on its items are refused "
         "until a resync (a set per item, or resync_complete)",
         p->topic, p->partition, why);
}

static void clear_stale(struct atp_ingest *ing, struct part *p)
{
    if (!atomic_exchange(&p->stale, false))
        return;
    bump(&ing->c.resyncs);
    if (atomic_fetch_sub(&ing->nstale, 1) == 1)
        resynced_clear(ing);
    ilog(ing, ATP_INGEST_LOG_INFO, "partition %s [%" PRId32 "] resynced", p->topic, p->partition);
}

int atp_ingest_check_item(const struct atp_ingest *ing, struct atp_slice sku, struct atp_slice loc)
{
    if (atomic_load_explicit(&ing->nstale, memory_order_acquire) == 0)
        return 0;
    if (sku.len == 0 || sku.len > ATP_SKU_MAX || loc.len > ATP_LOC_MAX)
        return 0; /* not an item: the store rejects it */
    for (uint32_t t = 0; t < ing->nsubscribed; t++) {
        int32_t n = atomic_load_explicit(&ing->topics[t].npartitions, memory_order_relaxed);
        uint32_t np = atomic_load_explicit(&ing->nparts, memory_order_acquire);
        if (n <= 0 || !ing->partitioner) {
            /* The partition of the sku is unknown: any stale partition of
             * the topic may hold its events. */
            for (uint32_t i = 0; i < np; i++)
                if (ing->parts[i].tidx == t &&
                    atomic_load_explicit(&ing->parts[i].stale, memory_order_relaxed))
                    return ATP_EUNAVAILABLE;
            continue;
        }
        int32_t pid = ing->partitioner(NULL, sku.p, sku.len, n, NULL, NULL);
        const struct part *p = part_find(ing, t, pid);
        if (!p || !atomic_load_explicit(&p->stale, memory_order_relaxed))
            continue;
        uint64_t epoch = atomic_load_explicit(&p->stale_epoch, memory_order_relaxed);
        if (loc.len > 0 && resynced_has(ing, item_hash(sku, loc, epoch)))
            continue;
        return ATP_EUNAVAILABLE;
    }
    return 0;
}

/* --- dead letters --------------------------------------------------------- */

static void dlq_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct atp_ingest *ing = opaque;
    if (m->err) {
        bump(&ing->c.dlq_failed);
        ilog(ing, ATP_INGEST_LOG_ERROR, "dead letter not delivered to %s: %s",
             rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    }
}

static void header_add(rd_kafka_headers_t *h, const char *name, const char *value)
{
    rd_kafka_header_add(h, name, -1, value, -1);
}

static void dead_letter(struct atp_ingest *ing, const rd_kafka_message_t *m, int reason,
                        const char *detail, int store_rc)
{
    char num[32];
    bump(&ing->c.dead_lettered);
    bump(&ing->c.dead_by_reason[reason]);
    ilog(ing, ATP_INGEST_LOG_WARN, "dead letter %s [%" PRId32 "] @%" PRId64 ": %s: %s",
         rd_kafka_topic_name(m->rkt), m->partition, m->offset, atp_dlq_reason_slug(reason), detail);

    const void *value = m->payload;
    size_t len = m->len;
    for (int attempt = 0; attempt < 2; attempt++) {
        rd_kafka_headers_t *h = rd_kafka_headers_new(8);
        header_add(h, "atp-reason", atp_dlq_reason_slug(reason));
        header_add(h, "atp-detail", detail);
        if (store_rc)
            header_add(h, "atp-error", atp_error_name(store_rc));
        header_add(h, "atp-source-topic", rd_kafka_topic_name(m->rkt));
        snprintf(num, sizeof(num), "%" PRId32, m->partition);
        header_add(h, "atp-source-partition", num);
        snprintf(num, sizeof(num), "%" PRId64, m->offset);
        header_add(h, "atp-source-offset", num);
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(m, &tstype);
        if (tstype != RD_KAFKA_TIMESTAMP_NOT_AVAILABLE) {
            snprintf(num, sizeof(num), "%" PRId64, ts);
            header_add(h, "atp-source-timestamp", num);
        }
        if (attempt == 1) {
            snprintf(num, sizeof(num), "%zu", m->len);
            header_add(h, "atp-truncated", num);
        }

        rd_kafka_resp_err_t err;
        uint64_t deadline = now_ms() + DLQ_RETRY_MS;
        for (;;) {
            err = rd_kafka_producev(
                ing->dlq_rk, RD_KAFKA_V_TOPIC(ing->dlq_topic), RD_KAFKA_V_KEY(m->key, m->key_len),
                RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_END);
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL || now_ms() >= deadline)
                break;
            rd_kafka_poll(ing->dlq_rk, 10);
        }
        if (!err)
            return; /* the headers now belong to librdkafka */
        rd_kafka_headers_destroy(h);
        if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && attempt == 0) {
            /* Too big to forward whole: send the headers, say so. */
            value = NULL;
            len = 0;
            continue;
        }
        bump(&ing->c.dlq_failed);
        ilog(ing, ATP_INGEST_LOG_ERROR, "dead letter not queued for %s: %s", ing->dlq_topic,
             rd_kafka_err2str(err));
        return;
    }
}

/* --- applying one message ------------------------------------------------- */

static void settle(struct atp_ingest *ing, struct part *p, const rd_kafka_message_t *m, int outcome,
                   const struct atp_event *ev)
{
    atomic_store_explicit(&p->next_offset, m->offset + 1, memory_order_release);
    p->restarted = false;
    /* Monitoring only: auto-commit writes it to Kafka. Stored once per
     * partition and batch (store_offsets), not per message: each store takes
     * two of librdkafka's locks. */
    if (!p->store_rkt && ing->nto_store < BATCH_MAX)
        ing->to_store[ing->nto_store++] = p;
    p->store_rkt = m->rkt;
    p->store_offset = m->offset;
    if (ing->on_applied) {
        struct atp_ingest_applied a = {
            p->topic, p->partition, m->offset,
            outcome,  ev,           atomic_load_explicit(&p->stale, memory_order_relaxed)};
        ing->on_applied(ing->on_applied_arg, &a);
    }
}

/*
 * After an offset-out-of-range error librdkafka stops fetching the partition
 * and refuses a seek (its fetch state is "none"), so the partition is
 * assigned again: at `offset` (the earliest retained one, or a logical
 * offset), and every other partition at atpd's own next offset (eager
 * assignors replace the whole assignment).
 */
static void restart_at(struct atp_ingest *ing, const struct part *p, int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = NULL;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (strcmp(rd_kafka_rebalance_protocol(ing->rk), "COOPERATIVE") == 0) {
        l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = offset;
        e = rd_kafka_incremental_unassign(ing->rk, l);
        if (!e)
            e = rd_kafka_incremental_assign(ing->rk, l);
    } else if (!(err = rd_kafka_assignment(ing->rk, &l))) {
        for (int i = 0; i < l->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &l->elems[i];
            const struct part *q = part_get(ing, tp->topic, tp->partition);
            int64_t next = q ? atomic_load(&q->next_offset) : -1;
            tp->offset = q == p ? offset : next >= 0 ? next : ing->start_offset;
        }
        err = rd_kafka_assign(ing->rk, l);
    }
    if (e || err)
        ilog(ing, ATP_INGEST_LOG_ERROR, "restart %s [%" PRId32 "]: %s", p->topic, p->partition,
             e ? rd_kafka_error_string(e) : rd_kafka_err2str(err));
    else if (offset == RD_KAFKA_OFFSET_BEGINNING)
        ilog(ing, ATP_INGEST_LOG_WARN, "%s [%" PRId32 "] continues at its earliest offset",
             p->topic, p->partition);
    else
        ilog(ing, ATP_INGEST_LOG_WARN, "%s [%" PRId32 "] continues at offset %" PRId64, p->topic,
             p->partition, offset);
    if (e)
        rd_kafka_error_destroy(e);
    if (l)
        rd_kafka_topic_partition_list_destroy(l);
}

static void consume_error(struct atp_ingest *ing, const rd_kafka_message_t *m)
{
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
        return;
    bump(&ing->c.kafka_errors);
    if (m->rkt && (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                   m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE)) {
        struct part *p = part_get(ing, rd_kafka_topic_name(m->rkt), m->partition);
        if (!p)
            return;
        char why[320];
        snprintf(why, sizeof(why), "offset %" PRId64 " is out of range (%s)",
                 atomic_load(&p->next_offset), rd_kafka_message_errstr(m));
        mark_stale(ing, p, why);
        p->fresh = false;
        atomic_store(&p->next_offset, -1); /* whatever comes next is new to atpd */
        int64_t at = RD_KAFKA_OFFSET_BEGINNING, lo, hi;
        /* Out of range again before anything was read since the last
         * restart: retention deletes the earliest offsets before a fetch
         * for them arrives (a log that keeps under a second of events, as
         * the mock cluster's does at tens of thousands of events/s), and
         * restarting there again would loop for ever. Restart halfway into
         * what the log holds: the partition is stale already, and the
         * events skipped besides are lost to it alike. */
        bool known = p->restarted && rd_kafka_query_watermark_offsets(
                                         ing->rk, p->topic, p->partition, &lo, &hi, 1000) == 0;
        if (known && hi > lo)
            at = lo + (hi - lo) / 2;
        restart_at(ing, p, at);
        p->restarted = true;
        return;
    }
    ilog(ing, ATP_INGEST_LOG_WARN, "consumer: %s [%" PRId32 "]: %s",
         m->rkt ? rd_kafka_topic_name(m->rkt) : "-", m->partition, rd_kafka_message_errstr(m));
}

/*
 * The part of a message's handling that depends on nothing but its bytes:
 * parse, validate, hash the event id and prefetch its duplicate-window slot.
 * consumer_main runs it over a whole batch before applying any of it, so
 * the window's cache misses (an 8 MiB index, ~10% of the thread's time when
 * taken one at a time) overlap.
 */
static void parse_message(struct atp_ingest *ing, const rd_kafka_message_t *m, struct parsed *pm)
{
    pm->made_us = 0;
    if (m->err)
        return;
    pm->rc = atp_event_parse(ing->parser, m->payload, m->len, &pm->ev, &pm->err);
    if (pm->rc == 0) {
        pm->h = XXH3_128bits(pm->ev.event_id, pm->ev.event_id_len);
        dd_prefetch(&ing->dd, pm->h);
    }
}

/*
 * Look up the items a parsed batch will write, all at once and only for the
 * cache: atp_store_get_many overlaps the memory latencies of its keys (it
 * prefetches every slot and item before reading any), where the writes
 * after it each stall on their own item when taken one by one (the store's
 * item lookup was a quarter of the consumer thread's time). The answers are
 * thrown away; the writes look the items up again, now in the cache. An
 * item created meanwhile or a lookup of an item that does not exist yet
 * changes nothing but the cache.
 */
static void warm_items(struct atp_ingest *ing, const rd_kafka_message_t *const *batch, ssize_t n)
{
    struct warm *w = ing->warm;
    uint32_t k = 0;
    for (ssize_t i = 0; i < n; i++) {
        const struct parsed *pm = &ing->parsed[i];
        if (batch[i]->err || pm->rc || pm->ev.loc_len == 0 || pm->ev.sku_len == 0)
            continue;
        w->req[k++] =
            (struct atp_get_req){{pm->ev.sku, pm->ev.sku_len}, {pm->ev.loc, pm->ev.loc_len}, 0};
    }
    if (k > 1)
        atp_store_get_many(ing->store, w->req, k, w->bd, w->rc);
}

/* Settle one message, in offset order; pm is parse_message's result. */
static void handle_message(struct atp_ingest *ing, rd_kafka_message_t *m, struct parsed *pm)
{
    if (m->err) {
        consume_error(ing, m);
        return;
    }
    struct part *p = part_get(ing, rd_kafka_topic_name(m->rkt), m->partition);
    if (!p) {
        /* Table full: never apply what atpd cannot track the offset of. */
        bump(&ing->c.revoked_skipped);
        return;
    }
    if (!atomic_load_explicit(&p->assigned, memory_order_relaxed)) {
        bump(&ing->c.revoked_skipped);
        return;
    }
    int64_t next = atomic_load_explicit(&p->next_offset, memory_order_relaxed);
    if (next >= 0 && m->offset < next) {
        bump(&ing->c.replayed);
        return;
    }
    if (p->fresh) {
        p->fresh = false;
        if (m->offset > 0 && !ing->trust_truncated_start) {
            char why[128];
            snprintf(why, sizeof(why),
                     "the log starts at offset %" PRId64 ": history before it was deleted "
                     "before atpd read it",
                     m->offset);
            mark_stale(ing, p, why);
        }
    }
    bump1(&ing->c.consumed);

    const struct atp_event *ev = &pm->ev;
    int rc = pm->rc;
    if (rc) {
        dead_letter(ing, m, pm->err.reason, pm->err.detail, 0);
        settle(ing, p, m, ATP_INGEST_DEAD_LETTERED, NULL);
        return;
    }
    if (ev->type != ATP_EV_RESYNC_COMPLETE &&
        (m->key_len != ev->sku_len || memcmp(m->key, ev->sku, ev->sku_len) != 0)) {
        dead_letter(ing, m, ATP_DLQ_KEY_MISMATCH,
                    m->key ? "message key must equal the sku" : "message has no key (the sku)", 0);
        settle(ing, p, m, ATP_INGEST_DEAD_LETTERED, ev);
        return;
    }
    XXH128_hash_t h = pm->h;
    uint64_t t = ing->batch_ms;
    if (ing->on_apply)
        ing->on_apply(ing->on_applied_arg); /* before the store sees the event */
    if (dd_seen(&ing->dd, h, t)) {
        bump1(&ing->c.duplicates);
        settle(ing, p, m, ATP_INGEST_DUPLICATE, ev);
        return;
    }

    rc = atp_event_apply(ing->store, ev);
    if (rc == ATP_ESTALE) {
        dd_add(&ing->dd, h, t);
        bump1(&ing->c.stale_sets);
        settle(ing, p, m, ATP_INGEST_STALE, ev);
        return;
    }
    if (rc) {
        dead_letter(ing, m, ATP_DLQ_REJECTED, atp_strerror(rc), rc);
        settle(ing, p, m, ATP_INGEST_DEAD_LETTERED, ev);
        return;
    }
    dd_add(&ing->dd, h, t);
    bump1(&ing->c.applied);

    if (atomic_load_explicit(&p->stale, memory_order_relaxed)) {
        if (ev->type == ATP_EV_RESYNC_COMPLETE)
            clear_stale(ing, p);
        else if (ev->type == ATP_EV_SET)
            resynced_add(ing, item_hash((struct atp_slice){ev->sku, ev->sku_len},
                                        (struct atp_slice){ev->loc, ev->loc_len},
                                        atomic_load(&p->stale_epoch)));
    }

    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    if (tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
        ts = ev->ts_ms;
    if (ts > 0) {
        pm->made_us = (uint64_t)ts * 1000u; /* its freshness is taken after the batch */
        atomic_store_explicit(&p->last_event_ms, ts, memory_order_relaxed);
    }
    settle(ing, p, m, ATP_INGEST_APPLIED, ev);
}

/* --- rebalance and statistics --------------------------------------------- */

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct atp_ingest *ing = opaque;
    bool coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    rd_kafka_error_t *e = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
    bump(&ing->c.rebalances);

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            rd_kafka_topic_partition_t *tp = &parts->elems[i];
            struct part *p = part_get(ing, tp->topic, tp->partition);
            if (!p) {
                ilog(ing, ATP_INGEST_LOG_ERROR, "too many partitions; %s [%" PRId32 "] ignored",
                     tp->topic, tp->partition);
                continue;
            }
            int64_t next = atomic_load(&p->next_offset);
            /* atpd's own offset, never the committed one. */
            tp->offset = next >= 0 ? next : ing->start_offset;
            p->fresh = next < 0 && ing->start_offset == RD_KAFKA_OFFSET_BEGINNING &&
                       !atomic_load(&p->stale);
            atomic_store(&p->hi, -1);
            atomic_store(&p->assigned, true);
            atomic_fetch_add(&ing->nassigned, 1);
            if (next >= 0)
                ilog(ing, ATP_INGEST_LOG_INFO, "assigned %s [%" PRId32 "] at offset %" PRId64,
                     tp->topic, tp->partition, next);
            else
                ilog(ing, ATP_INGEST_LOG_INFO,
                     "assigned %s [%" PRId32 "] at its %s (no offset yet)", tp->topic,
                     tp->partition, ing->start_offset == RD_KAFKA_OFFSET_END ? "end" : "beginning");
        }
        if (coop)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        atomic_store(&ing->assigned_once, true);
    } else {
        /* Revoked or lost. Nothing is being applied (this thread is here),
         * and from now on nothing will be for these partitions. */
        bool lost = err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS || rd_kafka_assignment_lost(rk);
        for (int i = 0; i < parts->cnt; i++) {
            struct part *p = part_get(ing, parts->elems[i].topic, parts->elems[i].partition);
            if (p && atomic_exchange(&p->assigned, false))
                atomic_fetch_sub(&ing->nassigned, 1);
        }
        if (!lost)
            rd_kafka_commit(rk, NULL, 1); /* monitoring only: async */
        ilog(ing, lost ? ATP_INGEST_LOG_WARN : ATP_INGEST_LOG_INFO, "%s %d partition(s)%s%s",
             lost ? "lost" : "revoked", parts->cnt,
             err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? "" : ": ",
             err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS ? "" : rd_kafka_err2str(err));
        if (coop && err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
    }
    if (e) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "assignment: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else if (aerr) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "assignment: %s", rd_kafka_err2str(aerr));
    }
}

static int64_t json_int(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
        return -1;
    return json_object_get_int64(v);
}

/*
 * librdkafka's statistics (statistics.interval.ms): the partition count of
 * every topic (for atp_ingest_check_item) and consumer_lag per partition.
 */
static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    struct atp_ingest *ing = opaque;
    struct json_object *root = json_tokener_parse(json);
    struct json_object *topics;
    if (!root)
        return 0;
    if (json_object_object_get_ex(root, "topics", &topics) &&
        json_object_is_type(topics, json_type_object)) {
        json_object_object_foreach(topics, tname, tobj)
        {
            int t = topic_find(ing, tname);
            struct json_object *partitions;
            if (t < 0 || !json_object_object_get_ex(tobj, "partitions", &partitions) ||
                !json_object_is_type(partitions, json_type_object))
                continue;
            int32_t count = 0;
            json_object_object_foreach(partitions, pname, pobj)
            {
                long id = strtol(pname, NULL, 10);
                if (id < 0 || id > INT32_MAX)
                    continue; /* -1 is librdkafka's unassigned-partition queue */
                count++;
                struct part *p = part_find(ing, (uint32_t)t, (int32_t)id);
                if (!p)
                    continue;
                atomic_store_explicit(&p->kafka_lag, json_int(pobj, "consumer_lag"),
                                      memory_order_relaxed);
                int64_t hi = json_int(pobj, "ls_offset");
                if (hi < 0)
                    hi = json_int(pobj, "hi_offset");
                if (hi > atomic_load_explicit(&p->hi, memory_order_relaxed))
                    atomic_store_explicit(&p->hi, hi, memory_order_relaxed);
            }
            raise_npartitions(ing, (uint32_t)t, count);
        }
    }
    json_object_put(root);
    return 0; /* librdkafka frees json */
}

/* Cached high watermarks (no request): refreshed by every fetch response. */
static void refresh_watermarks(struct atp_ingest *ing)
{
    uint64_t t = now_ms();
    if (t - ing->last_watermark_ms < WATERMARK_MS)
        return;
    ing->last_watermark_ms = t;
    uint32_t n = atomic_load(&ing->nparts);
    for (uint32_t i = 0; i < n; i++) {
        struct part *p = &ing->parts[i];
        int64_t lo, hi;
        if (!atomic_load_explicit(&p->assigned, memory_order_relaxed))
            continue;
        if (rd_kafka_get_watermark_offsets(ing->rk, p->topic, p->partition, &lo, &hi) == 0 &&
            hi >= 0)
            atomic_store_explicit(&p->hi, hi, memory_order_relaxed);
    }
}

/* --- the consumer thread -------------------------------------------------- */

static void store_offsets(struct atp_ingest *ing)
{
    for (uint32_t i = 0; i < ing->nto_store; i++) {
        struct part *p = ing->to_store[i];
        if (p->store_rkt)
            rd_kafka_offset_store(p->store_rkt, p->partition, p->store_offset);
        p->store_rkt = NULL;
    }
    ing->nto_store = 0;
}

static void *consumer_main(void *arg)
{
    struct atp_ingest *ing = arg;
    rd_kafka_message_t *batch[BATCH_MAX];

    while (!atomic_load_explicit(&ing->stop, memory_order_acquire)) {
        /* Wait for the first message only: consume_batch_queue with a
         * timeout waits to fill the whole batch, which would add up to
         * POLL_MS of latency at low rates. Then take what is there. */
        ssize_t n = 0;
        rd_kafka_message_t *first = rd_kafka_consumer_poll(ing->rk, POLL_MS);
        if (first) {
            batch[0] = first;
            n = rd_kafka_consume_batch_queue(ing->q, 0, batch + 1, BATCH_MAX - 1);
            n = n < 0 ? 1 : n + 1;
        }
        ing->batch_ms = now_ms();
        for (ssize_t i = 0; i < n; i++)
            parse_message(ing, batch[i], &ing->parsed[i]);
        warm_items(ing, (const rd_kafka_message_t *const *)batch, n);
        for (ssize_t i = 0; i < n; i++)
            handle_message(ing, batch[i], &ing->parsed[i]);
        /* Freshness: one clock read for the batch, once all of it is
         * visible, so an event's figure is at most the rest of its batch's
         * apply late (~0.3 ms for 256 events), never early. */
        uint64_t now = n ? atp_now_us() : 0;
        for (ssize_t i = 0; i < n; i++) {
            uint64_t at = ing->parsed[i].made_us;
            if (at)
                record_freshness(ing, now > at ? now - at : 0);
        }
        store_offsets(ing); /* before the messages (and their topic refs) go */
        for (ssize_t i = 0; i < n; i++)
            rd_kafka_message_destroy(batch[i]);
        rd_kafka_poll(ing->dlq_rk, 0); /* delivery reports */
        refresh_watermarks(ing);
    }
    /* Revokes (the callback runs here), commits, leaves the group. */
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(ing->rk);
    if (err)
        ilog(ing, ATP_INGEST_LOG_WARN, "consumer close: %s", rd_kafka_err2str(err));
    return NULL;
}

/* --- configuration -------------------------------------------------------- */

static int conf_set(struct atp_ingest *ing, rd_kafka_conf_t *conf, const char *k, const char *v)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "kafka.%s %s: %s", k, v, errstr);
        return ATP_EINVAL;
    }
    return 0;
}

/* Properties only a consumer understands: not passed to the DLQ producer. */
static bool consumer_only(const char *k)
{
    static const char *const prefixes[] = {
        "group.",
        "partition.assignment.strategy",
        "session.timeout.ms",
        "heartbeat.interval.ms",
        "coordinator.query.interval.ms",
        "max.poll.interval.ms",
        "enable.auto.",
        "auto.commit.",
        "auto.offset.reset",
        "queued.",
        "fetch.",
        "isolation.level",
        "enable.partition.eof",
        "check.crcs",
        "offset.store.",
        "consume.callback.max.messages",
        "allow.auto.create.topics",
    };
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (strncmp(k, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    return false;
}

static rd_kafka_conf_t *base_conf(struct atp_ingest *ing)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_opaque(conf, ing);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    rd_kafka_conf_set_error_cb(conf, kafka_error_cb);
    return conf;
}

static rd_kafka_conf_t *consumer_conf(struct atp_ingest *ing)
{
    rd_kafka_conf_t *conf = base_conf(ing);
    /* atpd's defaults; `kafka.*` directives below override them. */
    static const char *const defaults[][2] = {
        {"client.id", "atpd"},
        {"enable.auto.commit", "true"},        /* commits for monitoring ... */
        {"enable.auto.offset.store", "false"}, /* ... of offsets stored after apply */
        {"auto.commit.interval.ms", "1000"},
        {"auto.offset.reset", "error"}, /* gaps are reported, never skipped */
        {"statistics.interval.ms", "1000"},
        {"reconnect.backoff.ms", "50"},
        {"reconnect.backoff.max.ms", "1000"}, /* back within ~1 s of a broker's return */
        {"enable.partition.eof", "false"},
        /* A dead atpd's partitions move within 10 s (Kafka's default is 45 s;
         * brokers accept 6 s and up). The mock cluster also makes a member
         * that joins after another left wait for this long, less 1 s. */
        {"session.timeout.ms", "10000"},
        {"heartbeat.interval.ms", "1000"},
        /* Idle fetches return within 100 ms; see below for the mock. */
        {"fetch.wait.max.ms", "100"},
        /* librdkafka 2.0 stops fetching when this many messages are queued
         * (over all partitions, as counted through the consumer queue) and
         * looks again only ~1 s later, so a consumer slower than the fetch
         * idled half the time catching up (130-230k events/s); with 300k it
         * did 285-390k/s. Memory stays bounded by queued.max.messages.kbytes
         * (64 MiB). librdkafka 2.1 has fetch.queue.backoff.ms for this. */
        {"queued.min.messages", "300000"},
        {"isolation.level", "read_committed"},
    };
    bool ok = conf_set(ing, conf, "bootstrap.servers", ing->bootstrap) == 0 &&
              conf_set(ing, conf, "group.id", ing->group) == 0;
    for (size_t i = 0; ok && i < sizeof(defaults) / sizeof(defaults[0]); i++)
        ok = conf_set(ing, conf, defaults[i][0], defaults[i][1]) == 0;
    /* The mock cluster holds every fetch for fetch.wait.max.ms even when data
     * arrives meanwhile: with 100 ms, freshness at 50k events/s averaged
     * 81 ms; with 5 ms, 5 ms (98% within 10 ms). Real brokers answer as soon
     * as data arrives, so there 100 ms only paces idle fetches. */
    if (ok && ing->mock)
        ok = conf_set(ing, conf, "fetch.wait.max.ms", "5") == 0;
    for (const struct atp_ingest_kv *kv = ing->kafka; ok && kv->key; kv++)
        ok = conf_set(ing, conf, kv->key, kv->value) == 0;
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    return conf;
}

static rd_kafka_conf_t *producer_conf(struct atp_ingest *ing)
{
    rd_kafka_conf_t *conf = base_conf(ing);
    static const char *const defaults[][2] = {
        {"client.id", "atpd-dlq"},
        {"linger.ms", "5"},
        {"enable.idempotence", "true"},
        {"reconnect.backoff.ms", "50"},
        {"reconnect.backoff.max.ms", "1000"},
    };
    bool ok = conf_set(ing, conf, "bootstrap.servers", ing->bootstrap) == 0;
    for (size_t i = 0; ok && i < sizeof(defaults) / sizeof(defaults[0]); i++)
        ok = conf_set(ing, conf, defaults[i][0], defaults[i][1]) == 0;
    for (const struct atp_ingest_kv *kv = ing->kafka; ok && kv->key; kv++)
        if (!consumer_only(kv->key))
            ok = conf_set(ing, conf, kv->key, kv->value) == 0;
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, dlq_dr_cb);
    return conf;
}

static partitioner_fn partitioner_by_name(const char *name)
{
    static const struct {
        const char *name;
        partitioner_fn fn;
    } table[] = {
        {"consistent_random", rd_kafka_msg_partitioner_consistent_random},
        {"consistent", rd_kafka_msg_partitioner_consistent},
        {"murmur2_random", rd_kafka_msg_partitioner_murmur2_random},
        {"murmur2", rd_kafka_msg_partitioner_murmur2},
        {"fnv1a_random", rd_kafka_msg_partitioner_fnv1a_random},
        {"fnv1a", rd_kafka_msg_partitioner_fnv1a},
    };
    if (!name || !*name)
        name = "consistent_random";
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(table[i].name, name) == 0)
            return table[i].fn;
    return NULL;
}

static int start_embedded(struct atp_ingest *ing, const struct atp_ingest_config *cfg)
{
    char errstr[256];
    rd_kafka_conf_t *conf = base_conf(ing);
    /* This handle only keeps the cluster's books and never connects: no
     * bootstrap.servers, and its "no bootstrap" warning is not worth a line. */
    if (conf_set(ing, conf, "client.id", "atpd-embedded") != 0 ||
        conf_set(ing, conf, "log_level", "3") != 0) {
        rd_kafka_conf_destroy(conf);
        return ATP_EINTERNAL;
    }
    ing->mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!ing->mock_rk) {
        rd_kafka_conf_destroy(conf);
        ilog(ing, ATP_INGEST_LOG_ERROR, "embedded broker: %s", errstr);
        return ATP_EINTERNAL;
    }
    int nbrokers = cfg->embedded_brokers ? (int)cfg->embedded_brokers : 1;
    int npart = cfg->embedded_partitions ? (int)cfg->embedded_partitions : 4;
    ing->mock = rd_kafka_mock_cluster_new(ing->mock_rk, nbrokers);
    if (!ing->mock) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "embedded broker: cannot start the mock cluster");
        return ATP_EINTERNAL;
    }
    ing->bootstrap = strdup(rd_kafka_mock_cluster_bootstraps(ing->mock));
    if (!ing->bootstrap)
        return -ENOMEM;
    for (uint32_t t = 0; t <= ing->nsubscribed; t++) {
        const char *name = t < ing->nsubscribed ? ing->topics[t].name : ing->dlq_topic;
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(ing->mock, name, npart, 1);
        if (err) {
            ilog(ing, ATP_INGEST_LOG_ERROR, "embedded broker: topic %s: %s", name,
                 rd_kafka_err2str(err));
            return ATP_EINTERNAL;
        }
    }
    ilog(ing, ATP_INGEST_LOG_INFO,
         "embedded Kafka broker (librdkafka mock cluster) at %s, %d partition(s) per topic",
         ing->bootstrap, npart);
    return 0;
}

void atp_ingest_config_defaults(struct atp_ingest_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->lag_threshold = -1;
}

static int copy_kv(struct atp_ingest *ing, const struct atp_ingest_kv *kv)
{
    size_t n = 0;
    while (kv && kv[n].key)
        n++;
    ing->kafka = calloc(n + 1, sizeof(*ing->kafka));
    if (!ing->kafka)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!kv[i].value)
            return ATP_EINVAL;
        ing->kafka[i].key = strdup(kv[i].key);
        ing->kafka[i].value = strdup(kv[i].value);
        if (!ing->kafka[i].key || !ing->kafka[i].value)
            return -ENOMEM;
    }
    return 0;
}

static int64_t start_position(const struct atp_ingest *ing)
{
    for (const struct atp_ingest_kv *kv = ing->kafka; kv->key; kv++)
        if (strcmp(kv->key, "auto.offset.reset") == 0 &&
            (strcmp(kv->value, "latest") == 0 || strcmp(kv->value, "largest") == 0 ||
             strcmp(kv->value, "end") == 0))
            return RD_KAFKA_OFFSET_END;
    return RD_KAFKA_OFFSET_BEGINNING;
}

/*
 * Checked before anything connects, so a typo is one clear error at start
 * rather than a subscription that never matches, and so every name fits the
 * metric labels that carry it, unescaped.
 */
bool atp_ingest_topic_ok(struct atp_slice name)
{
    if (name.len == 0 || name.len > ATP_INGEST_TOPIC_MAX)
        return false;
    if ((name.len == 1 && name.p[0] == '.') ||
        (name.len == 2 && name.p[0] == '.' && name.p[1] == '.'))
        return false; /* Kafka refuses these two as well */
    for (size_t i = 0; i < name.len; i++) {
        char c = name.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int topic_name_check(const struct atp_ingest *ing, const char *what, const char *name)
{
    if (atp_ingest_topic_ok(atp_slice_cstr(name)))
        return 0;
    ilog(ing, ATP_INGEST_LOG_ERROR,
         "%s '%.80s%s': expected 1..%d bytes of [A-Za-z0-9._-], as Kafka names topics", what, name,
         strlen(name) > 80 ? "..." : "", ATP_INGEST_TOPIC_MAX);
    return ATP_EINVAL;
}

static int ingest_init(struct atp_ingest *ing, const struct atp_ingest_config *cfg)
{
    int rc;
    static const char *const default_topics[] = {ATP_INGEST_DEFAULT_TOPIC, NULL};
    const char *const *topics = cfg->topics && cfg->topics[0] ? cfg->topics : default_topics;
    for (size_t i = 0; topics[i]; i++) {
        if (!*topics[i] || i == ATP_INGEST_MAX_TOPICS || topic_find(ing, topics[i]) >= 0) {
            ilog(ing, ATP_INGEST_LOG_ERROR, "kafka topics: empty, repeated or more than %d",
                 ATP_INGEST_MAX_TOPICS);
            return ATP_EINVAL;
        }
        if ((rc = topic_name_check(ing, "kafka topic", topics[i])))
            return rc;
        if (topic_intern(ing, topics[i]) < 0)
            return -ENOMEM;
    }
    ing->nsubscribed = atomic_load(&ing->ntopics);
    ing->group = strdup(cfg->group_id && *cfg->group_id ? cfg->group_id : ATP_INGEST_DEFAULT_GROUP);
    if (cfg->dlq_topic && *cfg->dlq_topic) {
        ing->dlq_topic = strdup(cfg->dlq_topic);
    } else if (ing->topics[0].name) {
        size_t n = strlen(ing->topics[0].name) + 5;
        ing->dlq_topic = malloc(n);
        if (ing->dlq_topic)
            snprintf(ing->dlq_topic, n, "%s.dlq", ing->topics[0].name);
    }
    if (!ing->group || !ing->dlq_topic)
        return -ENOMEM;
    if ((rc = topic_name_check(ing, "dead-letter topic", ing->dlq_topic)))
        return rc;
    if (topic_find(ing, ing->dlq_topic) >= 0) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "the dead-letter topic %s is also consumed",
             ing->dlq_topic);
        return ATP_EINVAL;
    }
    if ((rc = copy_kv(ing, cfg->kafka)))
        return rc;
    ing->start_offset = start_position(ing);
    ing->lag_threshold = cfg->lag_threshold >= 0 ? cfg->lag_threshold : LAG_DEFAULT;
    ing->partitioner = partitioner_by_name(cfg->partitioner);
    if (!ing->partitioner)
        ilog(ing, ATP_INGEST_LOG_WARN,
             "unknown partitioner '%s': a stale partition makes its whole topic stale",
             cfg->partitioner);
    ing->trust_truncated_start = cfg->trust_truncated_start;
    uint32_t rcap = cfg->resync_items ? cfg->resync_items : RESYNC_DEFAULT;
    ing->resync_cap = 16;
    while (ing->resync_cap < 2 * (uint64_t)rcap && ing->resync_cap < (1u << 31))
        ing->resync_cap <<= 1;
    ing->on_applied = cfg->on_applied;
    ing->on_applied_arg = cfg->on_applied_arg;
    ing->on_apply = cfg->on_apply;

    ing->parts = calloc(ATP_INGEST_MAX_PARTITIONS, sizeof(*ing->parts));
    if (!ing->parts)
        return -ENOMEM;
    if ((rc = dd_init(&ing->dd, cfg->dedupe_events ? cfg->dedupe_events : DEDUPE_DEFAULT,
                      cfg->dedupe_ms)))
        return rc;
    ing->parsed = calloc(BATCH_MAX, sizeof(*ing->parsed));
    ing->warm = calloc(1, sizeof(*ing->warm));
    if (!ing->parsed || !ing->warm)
        return -ENOMEM;
    if ((rc = atp_event_parser_new(&cfg->limits, &ing->parser))) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "event limits: depth must be 1..%d", ATP_EVENT_MAX_DEPTH);
        return rc;
    }

    if (cfg->brokers && *cfg->brokers) {
        if (!(ing->bootstrap = strdup(cfg->brokers)))
            return -ENOMEM;
    } else if ((rc = start_embedded(ing, cfg))) {
        return rc;
    }

    char errstr[256];
    rd_kafka_conf_t *conf = producer_conf(ing);
    if (!conf)
        return ATP_EINVAL;
    ing->dlq_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!ing->dlq_rk) {
        rd_kafka_conf_destroy(conf);
        ilog(ing, ATP_INGEST_LOG_ERROR, "dead-letter producer: %s", errstr);
        return ATP_EINTERNAL;
    }
    return 0;
}

int atp_ingest_new(const struct atp_ingest_config *cfg, struct atp_store *store,
                   struct atp_ingest **ret)
{
    if (!cfg || !store || !ret)
        return ATP_EINVAL;
    struct atp_ingest *ing = calloc(1, sizeof(*ing));
    if (!ing)
        return -ENOMEM;
    ing->store = store;
    ing->log = cfg->log;
    ing->log_arg = cfg->log_arg;
    int rc = ingest_init(ing, cfg);
    if (rc) {
        atp_ingest_free(ing);
        return rc;
    }
    *ret = ing;
    return 0;
}

int atp_ingest_start(struct atp_ingest *ing)
{
    char errstr[256];
    if (atomic_load(&ing->running))
        return -EBUSY;
    rd_kafka_conf_t *conf = consumer_conf(ing);
    if (!conf)
        return ATP_EINVAL;
    ing->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!ing->rk) {
        rd_kafka_conf_destroy(conf);
        ilog(ing, ATP_INGEST_LOG_ERROR, "consumer: %s", errstr);
        return ATP_EINTERNAL;
    }
    rd_kafka_poll_set_consumer(ing->rk); /* callbacks are served by the consume calls */
    ing->q = rd_kafka_queue_get_consumer(ing->rk);

    rd_kafka_topic_partition_list_t *subs =
        rd_kafka_topic_partition_list_new((int)ing->nsubscribed);
    for (uint32_t t = 0; t < ing->nsubscribed; t++)
        rd_kafka_topic_partition_list_add(subs, ing->topics[t].name, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(ing->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "subscribe: %s", rd_kafka_err2str(err));
        goto fail;
    }
    atomic_store(&ing->stop, false);
    atomic_store(&ing->assigned_once, false);
    ing->last = NULL;
    if (pthread_create(&ing->thread, NULL, consumer_main, ing) != 0) {
        ilog(ing, ATP_INGEST_LOG_ERROR, "cannot start the consumer thread");
        goto fail;
    }
    pthread_setname_np(ing->thread, "atp-ingest"); /* for top, perf and gdb */
    atomic_store(&ing->running, true);
    ilog(ing, ATP_INGEST_LOG_INFO, "consuming from %s as group %s (dead letters to %s)",
         ing->bootstrap, ing->group, ing->dlq_topic);
    return 0;
fail:
    rd_kafka_queue_destroy(ing->q);
    rd_kafka_consumer_close(ing->rk);
    rd_kafka_destroy(ing->rk);
    ing->q = NULL;
    ing->rk = NULL;
    return ATP_EINTERNAL;
}

void atp_ingest_stop(struct atp_ingest *ing)
{
    if (!ing || !atomic_load(&ing->running))
        return;
    atomic_store_explicit(&ing->stop, true, memory_order_release);
    pthread_join(ing->thread, NULL);
    rd_kafka_queue_destroy(ing->q);
    rd_kafka_destroy(ing->rk);
    ing->q = NULL;
    ing->rk = NULL;
    /* The consumer is gone: nothing is assigned any more. */
    uint32_t n = atomic_load(&ing->nparts);
    for (uint32_t i = 0; i < n; i++)
        atomic_store(&ing->parts[i].assigned, false);
    atomic_store(&ing->nassigned, 0);
    if (rd_kafka_flush(ing->dlq_rk, 5000))
        ilog(ing, ATP_INGEST_LOG_ERROR, "%d dead letter(s) still undelivered at stop",
             rd_kafka_outq_len(ing->dlq_rk));
    rd_kafka_poll(ing->dlq_rk, 0);
    atomic_store(&ing->running, false);
}

void atp_ingest_free(struct atp_ingest *ing)
{
    if (!ing)
        return;
    atp_ingest_stop(ing);
    if (ing->dlq_rk)
        rd_kafka_destroy(ing->dlq_rk);
    if (ing->mock)
        rd_kafka_mock_cluster_destroy(ing->mock);
    if (ing->mock_rk)
        rd_kafka_destroy(ing->mock_rk);
    atp_event_parser_free(ing->parser);
    free(ing->parsed);
    free(ing->warm);
    dd_free(&ing->dd);
    free((void *)atomic_load(&ing->resynced));
    free(ing->parts);
    for (uint32_t t = 0; t < ATP_INGEST_MAX_TOPICS; t++)
        free(ing->topics[t].name);
    for (struct atp_ingest_kv *kv = ing->kafka; kv && (kv->key || kv->value); kv++) {
        free((void *)kv->key);
        free((void *)kv->value);
    }
    free(ing->kafka);
    free(ing->bootstrap);
    free(ing->group);
    free(ing->dlq_topic);
    free(ing);
}

const char *atp_ingest_bootstrap(const struct atp_ingest *ing)
{
    return ing->bootstrap;
}

bool atp_ingest_embedded(const struct atp_ingest *ing)
{
    return ing->mock != NULL;
}

/* --- offsets, status, statistics ------------------------------------------ */

size_t atp_ingest_offsets(const struct atp_ingest *ing, struct atp_ingest_offset *out, size_t cap)
{
    uint32_t n = atomic_load_explicit(&ing->nparts, memory_order_acquire);
    for (uint32_t i = 0; i < n && i < cap; i++) {
        const struct part *p = &ing->parts[i];
        out[i] = (struct atp_ingest_offset){
            p->topic, p->partition, atomic_load_explicit(&p->next_offset, memory_order_acquire),
            atomic_load_explicit(&p->stale, memory_order_relaxed)};
    }
    return n;
}

int atp_ingest_set_offset(struct atp_ingest *ing, const char *topic, int32_t partition,
                          int64_t next_offset, bool stale)
{
    if (atomic_load(&ing->running))
        return -EBUSY;
    if (!topic || !*topic || partition < 0 || next_offset < -1)
        return ATP_EINVAL;
    struct part *p = part_get(ing, topic, partition);
    if (!p)
        return ATP_EFULL;
    atomic_store(&p->next_offset, next_offset);
    if (stale && !atomic_load(&p->stale)) {
        mark_stale(ing, p, "stale when atpd's state was saved");
    } else if (!stale && atomic_exchange(&p->stale, false)) {
        atomic_fetch_sub(&ing->nstale, 1);
    }
    return 0;
}

void atp_ingest_status(const struct atp_ingest *ing, struct atp_ingest_status *ret)
{
    struct atp_ingest_status s = {0};
    s.running = atomic_load(&ing->running);
    s.assigned = atomic_load(&ing->assigned_once);
    s.stale = atomic_load(&ing->nstale);
    s.lag_threshold = ing->lag_threshold;
    s.max_lag = 0;
    bool caught_up = true;
    uint32_t n = atomic_load_explicit(&ing->nparts, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        const struct part *p = &ing->parts[i];
        if (!atomic_load_explicit(&p->assigned, memory_order_relaxed))
            continue;
        s.partitions++;
        int64_t lag = part_lag(p);
        if (lag < 0) {
            caught_up = false;
            s.max_lag = -1;
        } else if (s.max_lag >= 0 && lag > s.max_lag) {
            s.max_lag = lag;
        }
        if (lag > ing->lag_threshold)
            caught_up = false;
    }
    s.ready = s.running && s.assigned && s.stale == 0 && caught_up;
    *ret = s;
}

bool atp_ingest_ready(const struct atp_ingest *ing)
{
    struct atp_ingest_status s;
    atp_ingest_status(ing, &s);
    return s.ready;
}

void atp_ingest_stats(const struct atp_ingest *ing, struct atp_ingest_stats *ret)
{
    const struct counters *c = &ing->c;
    struct atp_ingest_stats s;
    memset(&s, 0, sizeof(s));
    s.consumed = rd(&c->consumed);
    s.applied = rd(&c->applied);
    s.duplicates = rd(&c->duplicates);
    s.stale_sets = rd(&c->stale_sets);
    s.dead_lettered = rd(&c->dead_lettered);
    for (int r = 0; r < ATP_DLQ_COUNT; r++)
        s.dead_by_reason[r] = rd(&c->dead_by_reason[r]);
    s.dlq_failed = rd(&c->dlq_failed);
    s.replayed = rd(&c->replayed);
    s.revoked_skipped = rd(&c->revoked_skipped);
    s.gaps = rd(&c->gaps);
    s.resyncs = rd(&c->resyncs);
    s.kafka_errors = rd(&c->kafka_errors);
    s.rebalances = rd(&c->rebalances);
    for (int k = 0; k < ATP_INGEST_FRESH_BUCKETS; k++)
        s.fresh_buckets[k] = rd(&c->fresh_buckets[k]);
    s.fresh_count = rd(&c->fresh_count);
    s.fresh_sum_us = rd(&c->fresh_sum_us);
    s.fresh_max_us = rd(&c->fresh_max_us);
    *ret = s;
}

void atp_ingest_collect(void *arg, atp_ingest_emit_fn emit, void *emit_arg)
{
    const struct atp_ingest *ing = arg;
    struct atp_ingest_stats s;
    struct atp_ingest_status st;
    char name[384];
    atp_ingest_stats(ing, &s);
    atp_ingest_status(ing, &st);

    static const struct {
        const char *name;
        size_t off;
    } counters[] = {
#define C(x) {"ingest_" #x, offsetof(struct atp_ingest_stats, x)}
        C(consumed),      C(applied),    C(duplicates),   C(stale_sets),
        C(dead_lettered), C(dlq_failed), C(replayed),     C(revoked_skipped),
        C(gaps),          C(resyncs),    C(kafka_errors), C(rebalances),
#undef C
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        emit(emit_arg, counters[i].name,
             (int64_t) * (const uint64_t *)((const char *)&s + counters[i].off));
    for (int r = 1; r < ATP_DLQ_COUNT; r++) {
        snprintf(name, sizeof(name), "ingest_dead_lettered{reason=\"%s\"}", atp_dlq_reason_slug(r));
        emit(emit_arg, name, (int64_t)s.dead_by_reason[r]);
    }
    emit(emit_arg, "ingest_running", st.running);
    emit(emit_arg, "ingest_ready", st.ready);
    emit(emit_arg, "ingest_partitions_assigned", st.partitions);
    emit(emit_arg, "ingest_partitions_stale", st.stale);
    emit(emit_arg, "ingest_lag_max", st.max_lag);

    uint32_t n = atomic_load_explicit(&ing->nparts, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        const struct part *p = &ing->parts[i];
        snprintf(name, sizeof(name), "ingest_lag{topic=\"%s\",partition=\"%" PRId32 "\"}", p->topic,
                 p->partition);
        emit(emit_arg, name, part_lag(p));
        snprintf(name, sizeof(name), "ingest_kafka_lag{topic=\"%s\",partition=\"%" PRId32 "\"}",
                 p->topic, p->partition);
        emit(emit_arg, name, atomic_load_explicit(&p->kafka_lag, memory_order_relaxed));
        snprintf(name, sizeof(name), "ingest_next_offset{topic=\"%s\",partition=\"%" PRId32 "\"}",
                 p->topic, p->partition);
        emit(emit_arg, name, atomic_load_explicit(&p->next_offset, memory_order_relaxed));
        snprintf(name, sizeof(name), "ingest_stale{topic=\"%s\",partition=\"%" PRId32 "\"}",
                 p->topic, p->partition);
        emit(emit_arg, name, atomic_load_explicit(&p->stale, memory_order_relaxed));
        int64_t last = atomic_load_explicit(&p->last_event_ms, memory_order_relaxed);
        if (last > 0) {
            snprintf(name, sizeof(name),
                     "ingest_last_event_ms{topic=\"%s\",partition=\"%" PRId32 "\"}", p->topic,
                     p->partition);
            emit(emit_arg, name, last);
        }
    }

    uint64_t cum = 0;
    for (int k = 0; k < ATP_INGEST_FRESH_BUCKETS; k++) {
        cum += s.fresh_buckets[k];
        if (fresh_bounds_ms[k] == UINT64_MAX)
            snprintf(name, sizeof(name), "ingest_freshness_ms_bucket{le=\"+Inf\"}");
        else
            snprintf(name, sizeof(name), "ingest_freshness_ms_bucket{le=\"%" PRIu64 "\"}",
                     fresh_bounds_ms[k]);
        emit(emit_arg, name, (int64_t)cum);
    }
    emit(emit_arg, "ingest_freshness_count", (int64_t)s.fresh_count);
    emit(emit_arg, "ingest_freshness_us_sum", (int64_t)s.fresh_sum_us);
    emit(emit_arg, "ingest_freshness_us_max", (int64_t)s.fresh_max_us);
}
