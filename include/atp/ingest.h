/*
 * atp/ingest.h - the Kafka consumer that applies inventory events.
 *
 * One ingest owns one librdkafka consumer (a member of a consumer group) on
 * a thread of its own, one producer for the dead-letter topic and, when no
 * brokers are configured, librdkafka's built-in mock cluster, started
 * in-process on 127.0.0.1 (the "embedded broker").
 *
 * What it guarantees (protocol/EVENTS.md states the contract):
 *   - atpd owns its offsets. The ingest keeps the next offset of every
 *     partition it has applied events from; on assignment it seeks to them,
 *     never to the offsets committed in Kafka. Offsets are committed to Kafka
 *     after apply for monitoring only (so standard lag tools work). Set them
 *     before start (atp_ingest_set_offset) when state is restored.
 *   - An event is applied at most once per offset: a message below the
 *     partition's next offset is never applied again, and applying stops
 *     before a revocation returns (nothing is applied for a partition the
 *     consumer no longer owns).
 *   - Gaps are never silent: with auto.offset.reset=error (the default), an
 *     offset that fell out of retention marks the partition stale: a counter,
 *     readiness false, and atp_ingest_check_item() refusing its items, until
 *     a resync (a `set` for the item, or a `resync_complete` event on the
 *     partition). Consumption then continues from the earliest retained
 *     offset.
 *   - Duplicates (an event_id seen within the window) and stale sets are
 *     skipped and counted; bad events go to the dead-letter topic with the
 *     original bytes and the reason in headers, and never stall the consumer.
 *
 * It knows librdkafka, the event module and the store API; it knows nothing
 * about sockets, the wire protocol or the config file syntax. Library code
 * does not log: messages go to the optional log callback.
 *
 * Threads: atp_ingest_new/start/stop/free/set_offset from one controlling
 * thread; the query calls (bootstrap, offsets, status, stats, collect,
 * check_item) from any thread at any time between new and free.
 */
#ifndef ATP_INGEST_H
#define ATP_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atp/event.h"
#include "atp/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATP_INGEST_DEFAULT_TOPIC  "atp.events"
#define ATP_INGEST_DEFAULT_GROUP  "atpd"
#define ATP_INGEST_MAX_TOPICS     16
#define ATP_INGEST_TOPIC_MAX      249  /* bytes of a topic name, [A-Za-z0-9._-] as Kafka's */
#define ATP_INGEST_MAX_PARTITIONS 4096 /* (topic, partition) pairs tracked */
#define ATP_INGEST_FRESH_BUCKETS  16   /* freshness histogram, see below */

/*
 * A name Kafka accepts for a topic: 1..ATP_INGEST_TOPIC_MAX bytes of
 * [A-Za-z0-9._-], other than "." and "..". The ingest refuses any other
 * configured name, and recovery any other name in a stored offset.
 */
bool atp_ingest_topic_ok(struct atp_slice name);

/* Log levels; the numbers match enum atp_log_level in src/log.h. */
enum atp_ingest_log_level {
    ATP_INGEST_LOG_DEBUG = 0,
    ATP_INGEST_LOG_INFO = 1,
    ATP_INGEST_LOG_WARN = 2,
    ATP_INGEST_LOG_ERROR = 3,
};
/* Called from the consumer thread and from librdkafka's threads. */
typedef void (*atp_ingest_log_fn)(void *arg, int level, const char *msg);

/* One `kafka.<property> value` directive: key without the "kafka." prefix. */
struct atp_ingest_kv {
    const char *key;
    const char *value;
};

/* What happened to one consumed message. */
enum atp_ingest_outcome {
    ATP_INGEST_APPLIED = 1,
    ATP_INGEST_DUPLICATE = 2,     /* event_id within the window */
    ATP_INGEST_STALE = 3,         /* set older than the item's last set */
    ATP_INGEST_DEAD_LETTERED = 4, /* sent to the dead-letter topic */
};

struct atp_ingest_applied {
    const char *topic;
    int32_t partition;
    int64_t offset;             /* of the message; next offset is offset + 1 */
    int outcome;                /* enum atp_ingest_outcome */
    const struct atp_event *ev; /* NULL when the event did not parse */
    bool stale;                 /* the partition is stale after this message */
};
/*
 * Called on the consumer thread once a message's fate is settled and before
 * the next message is looked at (for the write-ahead log of the durability
 * work). It must not call back into the ingest except the query calls.
 */
typedef void (*atp_ingest_applied_fn)(void *arg, const struct atp_ingest_applied *a);

struct atp_ingest_config {
    const char *brokers;       /* NULL or "": start the embedded mock cluster */
    const char *const *topics; /* NULL-terminated; NULL: {ATP_INGEST_DEFAULT_TOPIC}; */
                               /* names as Kafka's: 1..249 bytes of [A-Za-z0-9._-] */
    const char *group_id;      /* NULL: ATP_INGEST_DEFAULT_GROUP */
    const char *dlq_topic;     /* NULL: "<first topic>.dlq" (a legal name too) */
    /*
     * Duplicate window: the most recent `dedupe_events` event ids (0: 1 Mi,
     * which costs 32 MiB), and of those only ids that arrived within
     * `dedupe_ms` (0: no age bound).
     */
    uint32_t dedupe_events;
    uint64_t dedupe_ms;
    /* `kafka.<property> value` directives, {NULL, NULL}-terminated, may be
     * NULL. Passed unchanged to the consumer (after atpd's own defaults, so
     * they win), and to the dead-letter producer except consumer-only ones. */
    const struct atp_ingest_kv *kafka;
    int64_t lag_threshold;          /* caught up when every lag <= this; < 0: 1000 */
    struct atp_event_limits limits; /* size and nesting limits of one event */
    /*
     * How producers map a sku (the message key) to a partition, so
     * atp_ingest_check_item() finds the partition of an item: "consistent_random"
     * (librdkafka's and kcat's default; NULL means this), "murmur2_random"
     * (the Java client's default), "consistent", "murmur2", "fnv1a",
     * "fnv1a_random". Anything else: a stale partition makes every item of
     * its topic count as stale.
     */
    const char *partitioner;
    /*
     * A partition atpd has no offset for is read from its beginning. If the
     * log no longer starts at offset 0 (retention deleted history atpd never
     * saw), the partition is marked stale unless this is true.
     */
    bool trust_truncated_start;
    uint32_t resync_items; /* items tracked as resynced while stale; 0: 1 Mi */
    /* Embedded mock cluster only. */
    uint32_t embedded_brokers;    /* 0: 1 */
    uint32_t embedded_partitions; /* partitions of each topic it creates; 0: 4 */
    atp_ingest_log_fn log;        /* may be NULL */
    void *log_arg;
    atp_ingest_applied_fn on_applied; /* may be NULL */
    void *on_applied_arg;
    /*
     * Called on the consumer thread just before an event is applied to the
     * store (with on_applied_arg), so that the durability work can write the
     * store record the event makes together with its offset (on_applied).
     * May be NULL.
     */
    void (*on_apply)(void *arg);
};

/* Zero the config: every field then means its default. */
void atp_ingest_config_defaults(struct atp_ingest_config *cfg);

struct atp_ingest;

/*
 * Create an ingest for `store` (borrowed; it must outlive the ingest). Starts
 * the embedded cluster and the dead-letter producer, not the consumer.
 * 0, ATP_EINVAL (bad config; the log callback says why), ATP_EINTERNAL
 * (librdkafka refused; likewise) or -ENOMEM. *ret untouched on failure.
 */
int atp_ingest_new(const struct atp_ingest_config *cfg, struct atp_store *store,
                   struct atp_ingest **ret);

/* Start the consumer thread. 0, -EBUSY if running, ATP_EINTERNAL. */
int atp_ingest_start(struct atp_ingest *ing);

/*
 * Stop consuming: the current message finishes, the partitions are revoked
 * (nothing more is applied), offsets are committed to Kafka, the consumer
 * leaves the group and the thread is joined; pending dead letters are
 * flushed (up to 5 s). The ingest keeps its offsets, counters and window;
 * atp_ingest_start() may start it again. No-op if not running.
 */
void atp_ingest_stop(struct atp_ingest *ing);

/* Stop if running, then free everything. NULL is fine. */
void atp_ingest_free(struct atp_ingest *ing);

/*
 * bootstrap.servers of the cluster in use: the embedded cluster's address
 * ("127.0.0.1:port,...") or the configured brokers. Lives as long as the
 * ingest.
 */
const char *atp_ingest_bootstrap(const struct atp_ingest *ing);
/* True when the ingest runs the embedded mock cluster. */
bool atp_ingest_embedded(const struct atp_ingest *ing);

/* --- offsets (atpd's own; the durability work stores them) --------------- */

struct atp_ingest_offset {
    const char *topic; /* lives as long as the ingest */
    int32_t partition;
    int64_t next_offset; /* next offset to apply; -1: none yet */
    bool stale;          /* a gap was detected and not yet resynced */
};

/*
 * Copy up to `cap` partition offsets into out[] (NULL with cap 0 to count);
 * returns how many partitions there are. The offsets are those of events
 * already applied (each one's fate settled).
 */
size_t atp_ingest_offsets(const struct atp_ingest *ing, struct atp_ingest_offset *out, size_t cap);

/*
 * Set the next offset (and the stale flag) of a partition before start, for
 * example from a snapshot. next_offset -1 forgets it. 0, -EBUSY while
 * running, ATP_EINVAL for a bad argument, ATP_EFULL if too many topics or
 * partitions.
 */
int atp_ingest_set_offset(struct atp_ingest *ing, const char *topic, int32_t partition,
                          int64_t next_offset, bool stale);

/* --- readiness and gaps -------------------------------------------------- */

struct atp_ingest_status {
    bool running;
    bool assigned;       /* a group assignment was received */
    bool ready;          /* running, assigned, nothing stale, all caught up */
    uint32_t partitions; /* assigned now */
    uint32_t stale;      /* stale partitions (assigned or not) */
    int64_t max_lag;     /* over assigned partitions; -1 unknown */
    int64_t lag_threshold;
};
void atp_ingest_status(const struct atp_ingest *ing, struct atp_ingest_status *ret);
bool atp_ingest_ready(const struct atp_ingest *ing);

/*
 * May reservations touch this item? 0, or ATP_EUNAVAILABLE while the item's
 * partition is stale and the item was not resynced by a `set` since. loc of
 * length 0 ("any" location) asks about the sku as a whole: unavailable while
 * its partition is stale. Lock-free and cheap when nothing is stale.
 */
int atp_ingest_check_item(const struct atp_ingest *ing, struct atp_slice sku, struct atp_slice loc);

/* --- statistics ---------------------------------------------------------- */

/*
 * Freshness: time from the event's Kafka timestamp (the producer's
 * CreateTime; else the event's ts) to the moment it was applied. Bucket k
 * counts events with freshness <= atp_ingest_fresh_bound_ms(k) (not
 * cumulative); the last bucket is +inf.
 */
uint64_t atp_ingest_fresh_bound_ms(unsigned k); /* UINT64_MAX for the last */

struct atp_ingest_stats {
    uint64_t consumed; /* messages whose fate was decided */
    uint64_t applied;
    uint64_t duplicates;
    uint64_t stale_sets;
    uint64_t dead_lettered; /* sum of dead_by_reason */
    uint64_t dead_by_reason[ATP_DLQ_COUNT];
    uint64_t dlq_failed;      /* dead letters the producer could not deliver */
    uint64_t replayed;        /* delivered again below the next offset: skipped */
    uint64_t revoked_skipped; /* for a partition no longer assigned: skipped */
    uint64_t gaps;            /* times a partition was marked stale */
    uint64_t resyncs;         /* times a stale partition was resynced */
    uint64_t kafka_errors;    /* consumer and client errors reported */
    uint64_t rebalances;
    uint64_t fresh_buckets[ATP_INGEST_FRESH_BUCKETS];
    uint64_t fresh_count;
    uint64_t fresh_sum_us;
    uint64_t fresh_max_us;
};
void atp_ingest_stats(const struct atp_ingest *ing, struct atp_ingest_stats *ret);

/*
 * Stats source for STATS and /metrics, compatible with struct
 * atp_stats_source in src/cmd.h (the emit type is the same function type
 * as atp_stat_emit_fn): arg is the struct atp_ingest. Names are
 * "ingest_<counter>", with labels in Prometheus syntax where they vary:
 *   ingest_dead_lettered{reason="not-json"}, ingest_lag{topic="t",partition="0"},
 *   ingest_kafka_lag{...} (librdkafka's own consumer_lag from its statistics),
 *   ingest_freshness_ms_bucket{le="10"} (cumulative), ingest_freshness_us_sum,
 *   ingest_freshness_count, ingest_ready, ingest_partitions_stale, ...
 */
typedef void (*atp_ingest_emit_fn)(void *emit_arg, const char *name, int64_t value);
void atp_ingest_collect(void *arg, atp_ingest_emit_fn emit, void *emit_arg);

#ifdef __cplusplus
}
#endif

#endif /* ATP_INGEST_H */
