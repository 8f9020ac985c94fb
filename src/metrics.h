/*
 * metrics.h - atpd's metrics registry and its Prometheus text exposition.
 *
 * Two kinds of numbers reach /metrics:
 *
 *   Pushed, on the request path: request counts, errors and durations per
 *   protocol and operation, and reservation outcomes per channel. Each thread
 *   writes its own shard (taken on its first call: one an exited thread left,
 *   counts and all, or a new one; never freed), with plain relaxed loads and
 *   stores: no lock, no atomic read-modify-write, no shared cache line. A
 *   scrape sums the shards.
 *
 *   Pulled, at scrape time: the store's statistics (atp_store_stats), every
 *   statistics source (struct atp_stats_source in cmd.h: the server's
 *   connections, the Kafka ingest's lag, outcomes and freshness, ...) and
 *   the process (CPU, memory, open files from /proc/self). Source names are
 *   mapped to Prometheus families by one table in metrics.c; a name the
 *   table does not know is still exposed, as a gauge atp_<name>.
 *
 * Conventions: every family starts with atp_, values are in base units
 * (seconds, bytes), counters end in _total, histograms have real buckets
 * (request durations: 10 us to 1 s), and no label ever carries a sku,
 * location, key or id: label values come from small fixed sets (protocol,
 * operation, status name, channel, Kafka topic/partition).
 *
 * It knows the store's statistics, the status table and cmd.h's statistics
 * sources; it knows nothing about sockets or HTTP. Library code: it never
 * logs.
 */
#ifndef ATP_METRICS_H
#define ATP_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cmd.h"

enum atp_metrics_proto {
    ATP_MPROTO_BIN = 0,
    ATP_MPROTO_HTTP = 1,
    ATP_MPROTO_COUNT,
};

/* Operations, as the `operation` label. Names: atp_metrics_op_name(). */
enum atp_metrics_op {
    ATP_MOP_OTHER = 0, /* unknown operation, unroutable or malformed request */
    ATP_MOP_HELLO,
    ATP_MOP_PING,
    ATP_MOP_GET,
    ATP_MOP_MGET,
    ATP_MOP_RESERVE,
    ATP_MOP_COMMIT,
    ATP_MOP_RELEASE,
    ATP_MOP_EXTEND,
    ATP_MOP_GET_RESERVATION,
    ATP_MOP_ADJUST,
    ATP_MOP_SET,
    ATP_MOP_STATS,   /* binary STATS and HTTP GET /metrics */
    ATP_MOP_HEALTH,  /* /livez, /readyz */
    ATP_MOP_CHANGES, /* change feed */
    ATP_MOP_COUNT,
};

const char *atp_metrics_op_name(int op);
const char *atp_metrics_proto_name(int proto);

/* Request-duration histogram: upper bounds in nanoseconds, 10 us .. 1 s,
 * then +Inf. */
#define ATP_METRICS_BUCKETS 16
extern const uint64_t atp_metrics_bucket_ns[ATP_METRICS_BUCKETS];

/* Monotonic clock in nanoseconds (for durations). */
uint64_t atp_metrics_now_ns(void);

/*
 * One request answered: `code` is its status (0 or an ATP_* / -errno code),
 * `duration_ns` from the first byte handled to the response appended.
 * Thread-safe, lock-free, about 20 ns. Out-of-range proto/op count as OTHER.
 */
void atp_metrics_request(int proto, int op, int code, uint64_t duration_ns);

/*
 * A reserve answered for `channel` (a store channel id): 0 created, a
 * replay (replayed true), or refused with `code` (ATP_EINSUFFICIENT is an
 * oversell attempt refused). Feeds atp_reservations_created_total{channel}
 * and atp_reservations_rejected_total{channel,reason}.
 */
void atp_metrics_reservation(uint32_t channel, int code, bool replayed);

/* What a scrape reads besides the per-thread shards. */
struct atp_metrics_scrape {
    struct atp_store *store;                /* may be NULL */
    const struct atp_stats_source *sources; /* may be NULL */
    uint32_t nsources;
    const char *version; /* build info label, e.g. "0.1.0" */
};

/*
 * Append the whole exposition (text format 0.0.4) to `out`. 0, or -ENOMEM
 * when the buffer cannot grow (out->len is then back where it was).
 */
int atp_metrics_render(const struct atp_metrics_scrape *s, struct atp_buf *out);

/* Sum of atp_requests_total over every shard, for one protocol and
 * operation (tests, and the server's own log line). */
uint64_t atp_metrics_requests(int proto, int op);

/*
 * Per-thread shards in existence: at most the most threads that ever
 * recorded at the same time, since an exited thread's shard is adopted by
 * the next thread that records (tests).
 */
size_t atp_metrics_shards(void);

#endif /* ATP_METRICS_H */
