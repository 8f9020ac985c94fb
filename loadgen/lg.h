/*
 * lg.h - internals shared by the parts of atp-loadgen.
 *
 * The load generator is: a configuration (flags plus a workload file), a
 * driver per protocol that encodes requests and decodes responses into
 * memory (no I/O of its own), an engine that owns the sockets (one io_uring
 * per thread, open or closed loop, pipelining), per-thread statistics merged
 * at the end, and reports (table, JSON, .hgrm, sweep CSV).
 *
 * Time is CLOCK_MONOTONIC nanoseconds throughout (lg_now_ns).
 */
#ifndef LG_H
#define LG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "hist.h"
#include "keygen.h"
#include "workload.h"

#define LG_VERSION "0.1.0"

uint64_t lg_now_ns(void);

/* Open loop: a request written this long after its intended time is "late". */
#define LG_LATE_NS 100000ull

/* --- a growable byte buffer ------------------------------------------- */

struct lg_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* Room for `need` more bytes at data+len; NULL when out of memory. */
uint8_t *lg_buf_reserve(struct lg_buf *b, size_t need);
int lg_buf_append(struct lg_buf *b, const void *p, size_t n);
void lg_buf_free(struct lg_buf *b);

/* --- configuration ------------------------------------------------------ */

enum lg_protocol {
    LG_PROTO_BIN = 0,
    LG_PROTO_HTTP,
    LG_PROTO_RESP,
    LG_PROTO_KAFKA,
};

const char *lg_protocol_name(enum lg_protocol p);

struct lg_config {
    char server[256];
    uint16_t port; /* 0 until resolved: the protocol's default */
    enum lg_protocol protocol;
    uint32_t threads;
    uint32_t conns;     /* per thread */
    uint32_t pipeline;  /* requests in flight per connection */
    double test_time_s; /* 0 when -n drives the run */
    uint64_t requests;  /* per connection; 0: run for test_time */
    double warmup_s;
    uint64_t seed;
    bool closed_loop;
    double rate; /* open loop: total requests per second */
    char workload_path[512];
    char json_out[512];
    char hdr_prefix[512];
    bool sweep;
    double sweep_start, sweep_stop, sweep_step;
    char sweep_prefix[512];
    bool populate;           /* force setup=set */
    int server_pid;          /* > 0: measure its CPU too */
    char redis_scripts[512]; /* bench/redis */
    char kafka_brokers[256];
    char kafka_topic[128]; /* overrides the workload's */
    double drain_s;        /* wait for outstanding responses at the end */
    double spin_us;        /* open loop: poll instead of sleeping this close to a send */
    bool quiet;
    char label[128];
    struct lg_workload wl;
};

/* --- requests and responses (the driver interface) ----------------------- */

/* Operations only the setup and checks use (beyond enum lg_op). */
enum lg_xop {
    LG_XOP_SET = 32,     /* admin: set on_hand of one item (populate) */
    LG_XOP_INSPECT = 33, /* read on_hand/allocated/reserved/atp of one item */
    LG_XOP_RAW = 34,     /* driver-specific (SCRIPT LOAD, ...) */
};

struct lg_line {
    uint32_t key; /* sku index in [0, recordcount) */
    uint16_t loc; /* index into wl.locations */
    uint32_t qty;
};

struct lg_req {
    int op;                     /* enum lg_op or enum lg_xop */
    uint64_t id;                /* request id, per connection */
    const struct lg_line *keys; /* GET: 1, MGET: n, RESERVE: lines, SET/INSPECT: 1 */
    uint32_t nkeys;
    uint64_t res_id;  /* COMMIT / RELEASE */
    const char *idem; /* RESERVE idempotency key */
    uint32_t idem_len;
    int64_t value;            /* SET: on_hand */
    const char *raw;          /* RAW: driver-specific request text */
    const char *sku_override; /* when set, the sku name instead of keys[0].key */
};

struct lg_resp {
    const char *status; /* NULL: success; else a static status name ("EINSUFFICIENT") */
    uint64_t res_id;    /* RESERVE */
    int64_t atp, on_hand, allocated, reserved, safety; /* GET/INSPECT */
    uint32_t nok;                                      /* MGET: entries with status 0 */
    bool conn_close; /* the server will close the connection after this response */
    char text[128];  /* RAW: e.g. a script sha */
};

struct lg_run;

struct lg_driver {
    const char *name;
    uint16_t default_port;
    size_t state_size; /* per-connection driver state, zeroed */
    /* Once before the run over a blocking connection (scripts, ...); may be NULL. */
    int (*prepare)(struct lg_run *run, int fd);
    /* Per connection after connect; may be NULL. */
    int (*conn_init)(struct lg_run *run, void *state);
    /* Append one request; 0 or a negative errno. */
    int (*encode)(struct lg_run *run, void *state, const struct lg_req *r, struct lg_buf *out);
    /*
     * Decode the response at the start of in (answering a request of `op`):
     * > 0 bytes consumed (*ret filled), 0 need more, < 0 the stream is broken.
     */
    ssize_t (*decode)(struct lg_run *run, void *state, const uint8_t *in, size_t len, int op,
                      struct lg_resp *ret);
    void (*conn_free)(void *state);
};

extern const struct lg_driver lg_driver_bin;
extern const struct lg_driver lg_driver_resp;
extern const struct lg_driver lg_driver_http;

/* --- statistics --------------------------------------------------------- */

#define LG_MAX_STATUSES 48

struct lg_status_count {
    const char *name;
    uint64_t count[LG_OP_NMEASURED];
};

struct lg_stats {
    struct lg_hist hist[LG_OP_NMEASURED];
    uint64_t sent[LG_OP_NMEASURED]; /* measured requests sent */
    uint64_t ok[LG_OP_NMEASURED];
    uint64_t err[LG_OP_NMEASURED];
    uint64_t unanswered[LG_OP_NMEASURED]; /* no response by the end of the drain */
    struct lg_status_count status[LG_MAX_STATUSES];
    uint32_t nstatus;
    uint64_t keys_read;         /* MGET/GET keys answered */
    uint64_t followups_dropped; /* commit/release that found no room */
    uint64_t conn_errors;       /* connections closed or broken */
    uint64_t reconnects;        /* of which opened again */
    uint64_t server_closes;     /* of which announced (HTTP Connection: close) */
    uint64_t late_sends;        /* open loop: sent > LG_LATE_NS after their intended time */
    struct lg_hist send_delay;  /* open loop: actual send - intended send time */
    struct lg_hist own_delay; /* open loop: the part of send_delay after a pipeline slot was free */
    int64_t *granted;         /* verify: net units granted per item, or NULL */
    size_t ngranted;
};

void lg_stats_init(struct lg_stats *s);
void lg_stats_count_error(struct lg_stats *s, int op, const char *status);
void lg_stats_merge(struct lg_stats *dst, const struct lg_stats *src);
void lg_stats_free(struct lg_stats *s);

/* --- a run -------------------------------------------------------------- */

struct lg_run {
    const struct lg_config *cfg;
    const struct lg_workload *wl;
    const struct lg_driver *drv;
    struct lg_keygen keygen;
    double cum[LG_OP_NMEASURED]; /* cumulative op proportions */
    double rate;                 /* this run's offered rate (sweeps change it) */
    /* resp driver: script shas */
    char sha_get[48], sha_mget[48], sha_reserve[48], sha_commit[48], sha_release[48], sha_set[48];
    /* results */
    struct lg_stats stats;
    uint64_t t_start, t_measure, t_end; /* ns */
    double duration_s;                  /* the measured window */
    double client_cpu_s, client_user_s, client_sys_s;
    double server_cpu_s;                                                  /* < 0 when unknown */
    double cpu_mark_client, cpu_mark_user, cpu_mark_sys, cpu_mark_server; /* at t_measure */
    uint64_t cpu_mark_wall;
    double wall_measured_s; /* between the two CPU marks */
    /* The whole machine over the same window (/proc/stat, all cores): the
     * share of CPU time that was busy, and that the hypervisor took (steal;
     * a virtual CPU that is not running wakes late and answers late). < 0
     * when unknown. */
    uint64_t machine_mark[3];
    bool machine_mark_ok;
    double machine_busy, machine_steal;
    bool abort_run;   /* set before the start barrier */
    uint64_t spin_ns; /* open loop: poll this long before a send */
    /* verify (flash-sale) */
    int64_t *stock_before; /* ATP per item at setup */
    int64_t *held_before;  /* reserved + allocated per item at setup */
    int64_t oversold;
    int64_t granted_total;
    int64_t server_granted_total;
    bool verify_ran;
    bool verify_ok;
    char verify_msg[256];
};

/* sku name of key index i into buf (>= 72 bytes); returns its length. */
uint32_t lg_sku(const struct lg_run *run, uint64_t i, char *buf);

/* Blocking helpers over a plain socket (setup, populate, checks). */
int lg_connect(const struct lg_config *cfg, int *ret_fd);
int lg_sync_call(struct lg_run *run, int fd, void *state, const struct lg_req *r,
                 struct lg_resp *ret);
/* Send many requests pipelined in chunks; the status of failures is counted into *ret_failed. */
int lg_sync_batch(struct lg_run *run, int fd, void *state, const struct lg_req *reqs, size_t n,
                  struct lg_resp *resps, uint64_t *ret_failed);

/* The engine: run the workload with cfg->threads threads; fills run->stats and times. */
int lg_engine_run(struct lg_run *run);

/* Kafka producer + freshness probe (ingest). */
int lg_kafka_run(struct lg_run *run);

/* Setup (populate, initial stock for verify) and the oversell check. */
int lg_setup(struct lg_run *run);
int lg_verify(struct lg_run *run);

/* CPU of this process (and of cfg->server_pid): phase 0 at the start of the
 * measured window, phase 1 at its end (fills client_cpu_s, server_cpu_s...). */
void lg_cpu_mark(struct lg_run *run, int phase);

/* Reports. */
void lg_report_table(const struct lg_run *run, FILE *f);
int lg_report_json(const struct lg_run *run, const char *path);
int lg_report_hgrm(const struct lg_run *run, const char *prefix);
/* Client CPU per completed request in the measured window, microseconds. */
double lg_client_us_per_request(const struct lg_run *run);

#endif /* LG_H */
