/*
 * atp/durable.h - durability: write-ahead log, snapshots, crash recovery.
 *
 * The store hands every change to a journal (store.h, struct atp_journal)
 * with a position; this module is that journal. It writes the records in
 * position order to log segments in a data folder (group commit through
 * io_uring: one write and one fdatasync per batch), keeps the Kafka offsets
 * of applied events in the same log, takes snapshots, and at start-up
 * rebuilds a store from the latest snapshot and the log after it.
 * docs/DURABILITY.md has the file formats, the recovery order and why every
 * event counts exactly once.
 *
 * It knows the store API, files, io_uring and threads of its own (one log
 * writer, one snapshotter); it knows nothing about sockets, the wire protocol,
 * Kafka itself or the config file. Library code: it never logs; failures are
 * codes plus a message (atp_durable_errmsg).
 *
 * Life cycle (main.c):
 *   atp_durable_open(cfg)                  lock the folder, nothing read yet
 *   store cfg.journal = atp_durable_journal(d); atp_store_new(...)
 *   atp_durable_recover(d, store, &scfg)   snapshot + log replay, writer starts
 *   atp_durable_offsets(d, ...)            -> atp_ingest_set_offset(...)
 *   ... serve (the store's expirer, server, ingest may now run) ...
 *   stop server, ingest, expirer           the store must be quiescent
 *   atp_durable_close(d, store)            final snapshot, threads stop
 *   atp_store_free(store); atp_durable_free(d)
 *
 * Acknowledgements. With `appendfsync always` (the default) a change may be
 * acknowledged only once its position is durable: after handling a batch of
 * requests the caller compares atp_durable_tls_pos() before and after and,
 * if it moved, holds the responses until atp_durable_acked(d, pos) (or
 * atp_durable_wait). With `everysec` and `no` acked() is true at once.
 * After a write or fsync error nothing is ever acknowledged again
 * (atp_durable_failed() says ATP_EREADONLY); the fsync is never retried.
 */
#ifndef ATP_DURABLE_H
#define ATP_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atp/error.h"
#include "atp/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Redis's appendfsync policies. */
enum atp_fsync_policy {
    ATP_FSYNC_ALWAYS = 0,   /* fdatasync every batch before acknowledging it */
    ATP_FSYNC_EVERYSEC = 1, /* write every batch, fdatasync once a second */
    ATP_FSYNC_NO = 2,       /* write every batch, let the kernel flush */
};

/* "always", "everysec", "no" -> enum; 0 or ATP_EINVAL. */
int atp_fsync_policy_parse(const char *s, int *ret_policy);
const char *atp_fsync_policy_name(int policy);

#define ATP_DURABLE_TOPIC_MAX 249 /* bytes of a Kafka topic name */

struct atp_durable_config {
    const char *dir;               /* data folder; created if missing */
    int fsync;                     /* enum atp_fsync_policy */
    uint32_t ring_slots;           /* records in flight, power of two; 0: 16384 */
    uint64_t snapshot_interval_ms; /* periodic snapshot when the log grew; 0: 300 s;
                                      UINT64_MAX: only on request and at close */
    uint64_t snapshot_log_bytes;   /* ... or as soon as the log holds this much
                                      (0: 256 MiB; UINT64_MAX: never by size) */
    bool repair;                   /* cut the log at its first damaged record even when
                                      valid records follow (they are lost): an operator's
                                      choice after a refusal, never a default */
};

/* Fill with the defaults above (dir NULL, policy always). */
void atp_durable_config_defaults(struct atp_durable_config *cfg);

struct atp_durable;

/*
 * Create the folder if needed, take its lock (a second atpd on the same
 * folder gets -EBUSY), remove leftover temporary files. Reads nothing else.
 * 0, -errno or ATP_EINVAL; *ret untouched on failure (a message is in
 * *ret_msg if given, 256 bytes).
 */
int atp_durable_open(const struct atp_durable_config *cfg, struct atp_durable **ret,
                     char ret_msg[256]);

/* The journal to put into atp_store_config.journal. Lives as long as d. */
const struct atp_journal *atp_durable_journal(struct atp_durable *d);

struct atp_recovery_report {
    uint64_t snapshot_pos; /* 0: no snapshot */
    uint64_t snapshot_bytes;
    uint64_t items, overrides, reservations, offsets; /* loaded from the snapshot */
    uint64_t segments;                                /* log segments read */
    uint64_t records;                                 /* log records replayed */
    uint64_t next_pos;                                /* first position of this run */
    uint64_t torn_bytes;                              /* torn tail dropped from the last segment */
    uint64_t repaired_bytes;                          /* damaged log dropped because cfg.repair */
    uint64_t snapshot_us, replay_us;
};

/*
 * Rebuild `store` and start logging. `store` must be new, created with
 * `scfg` whose journal is atp_durable_journal(d); `scfg` (and the channel
 * table it points to) must outlive d: snapshots rebuild a second store with
 * it. Loads the latest snapshot, replays every later record with the
 * journal switched off, drops a torn final record (never acknowledged),
 * then starts the writer and snapshot threads.
 * 0; ATP_EINVAL when a snapshot or log is damaged (a corrupt record followed
 * by valid ones is damage, not a torn tail), missing or does not match the
 * configuration; -errno for I/O. atp_durable_errmsg() says what and where.
 * Nothing is served from a store whose recovery failed.
 */
int atp_durable_recover(struct atp_durable *d, struct atp_store *store,
                        const struct atp_store_config *scfg, struct atp_recovery_report *ret);

/* Recovery done and no failure: the durability half of readiness. */
bool atp_durable_ready(const struct atp_durable *d);

/* The last error's message ("" if none); lives as long as d. */
const char *atp_durable_errmsg(const struct atp_durable *d);

/* --- Kafka offsets ------------------------------------------------------- */

struct atp_durable_offset {
    char topic[ATP_DURABLE_TOPIC_MAX + 1];
    int32_t partition;
    int64_t next_offset; /* next offset to apply */
    bool stale;          /* a gap was reported for the partition */
};

/*
 * The next offset of every partition after recovery (and as noted since).
 * Copies up to cap, returns how many there are.
 */
size_t atp_durable_offsets(struct atp_durable *d, struct atp_durable_offset *out, size_t cap);

/*
 * Exactly-once ingestion. The ingest thread calls event_start() before it
 * applies one event, then note_offset() once the event's fate is settled
 * (applied, duplicate, dead-lettered...). The store record the event made
 * on this thread in between is held back and written together with the
 * offset as one record, so a crash keeps both or neither; when the event made
 * no record, note_offset() writes the offset alone. Call both on the same
 * thread. note_offset: 0, ATP_EINVAL (not a name Kafka allows for a topic,
 * atp_ingest_topic_ok: the offset is not logged, and an event record held
 * for it is written alone), ATP_EREADONLY.
 */
void atp_durable_event_start(struct atp_durable *d);
int atp_durable_note_offset(struct atp_durable *d, const char *topic, int32_t partition,
                            int64_t next_offset, bool stale);

/* --- acknowledgement ----------------------------------------------------- */

/* Highest position begun on the calling thread (by any durable; 0: none). */
uint64_t atp_durable_tls_pos(void);
/*
 * Answers read from state that another thread may still be logging (an
 * idempotent replay of a reservation, a repeated commit) made no position of
 * their own: the command layer calls tls_barrier() after such an answer,
 * and the server, seeing tls_take_barrier() true after a batch, holds the
 * batch until atp_durable_pos_begun() (everything begun so far) is acked.
 */
void atp_durable_tls_barrier(void);
bool atp_durable_tls_take_barrier(void); /* read and clear */

/* Highest position begun by anyone so far. */
uint64_t atp_durable_pos_begun(const struct atp_durable *d);
/* Every position <= this one is on disk and fdatasync'ed. */
uint64_t atp_durable_pos_synced(const struct atp_durable *d);

/*
 * May a response that depends on position `pos` be sent? always: once pos is
 * synced; everysec/no: at once. Never after a failure.
 */
bool atp_durable_acked(const struct atp_durable *d, uint64_t pos);

/*
 * Block until acked(pos): 0; ATP_EREADONLY after a failure; -ETIMEDOUT after
 * timeout_ms (0: no limit).
 */
int atp_durable_wait(struct atp_durable *d, uint64_t pos, uint64_t timeout_ms);

/*
 * Register an eventfd (owned by the caller, up to 64) that the writer adds 1
 * to whenever the synced position moves or the log fails, so an event loop
 * can wait for it (for example an io_uring read on it). 0 or ATP_EFULL.
 */
int atp_durable_notify_add(struct atp_durable *d, int eventfd);
/* Stop signalling it (before closing it). */
void atp_durable_notify_remove(struct atp_durable *d, int eventfd);

/* 0, or ATP_EREADONLY once a write or fsync failed (final). */
int atp_durable_failed(const struct atp_durable *d);

/*
 * A word that reads 0 while writes may be accepted and ATP_EREADONLY after a
 * failure: suitable for atp_cmd_ctx.refuse_writes.
 */
const volatile int *atp_durable_refuse_flag(const struct atp_durable *d);

/* --- snapshots and shutdown --------------------------------------------- */

/*
 * Take a snapshot now, on the calling thread, as the periodic one does on
 * the snapshot thread: the log is rotated after everything begun so far, a
 * second store is rebuilt from the previous snapshot and the closed log,
 * written, and the log before it deleted. 0, or the error (the log stays
 * whole on failure).
 */
int atp_durable_snapshot(struct atp_durable *d);

/*
 * Graceful shutdown: wait for the log to drain, snapshot the (quiescent:
 * no server, ingest or expirer running) store directly, delete the log
 * before it, stop the threads. 0 or the error; d must still be freed.
 */
int atp_durable_close(struct atp_durable *d, struct atp_store *store);

/* Stop threads (without a snapshot) and free. NULL is fine. */
void atp_durable_free(struct atp_durable *d);

/* --- statistics ---------------------------------------------------------- */

struct atp_durable_stats {
    int fsync_policy;
    int failed; /* 0 or ATP_EREADONLY */
    bool ready;
    uint64_t pos_begun;   /* positions handed out */
    uint64_t pos_written; /* every position <= this is written */
    uint64_t pos_synced;  /* ... and fdatasync'ed */
    uint64_t records;     /* log records written */
    uint64_t bytes;       /* log bytes written */
    uint64_t batches;     /* writes */
    uint64_t fsyncs;
    uint64_t fsync_max_us;
    uint64_t fsync_sum_us;
    uint64_t ring_waits; /* begin() waited for a free slot */
    uint64_t log_bytes;  /* in the log since the last snapshot */
    uint64_t snapshots;
    uint64_t snapshot_failures;
    uint64_t snapshot_pos;   /* position of the latest snapshot */
    uint64_t snapshot_bytes; /* its size */
    uint64_t snapshot_us;    /* how long the latest one took */
};
void atp_durable_stats(const struct atp_durable *d, struct atp_durable_stats *ret);

/* Stats source (struct atp_stats_source in src/cmd.h): arg is the durable.
 * Names are "durable_<counter>". */
typedef void (*atp_durable_emit_fn)(void *emit_arg, const char *name, int64_t value);
void atp_durable_collect(void *arg, atp_durable_emit_fn emit, void *emit_arg);

#ifdef __cplusplus
}
#endif

#endif /* ATP_DURABLE_H */
