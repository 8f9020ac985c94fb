/*
 * cmd.h - the command layer between the wire protocols and the store.
 *
 * The binary protocol (and later the HTTP facade) reach the store through
 * here: one call executes one complete request frame and appends exactly one
 * response frame. It knows the codec and the store; it knows nothing about
 * sockets, io_uring or threads. The server owns the buffers.
 */
#ifndef ATP_CMD_H
#define ATP_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atp/store.h"

/* A growable output buffer owned by the caller (one per connection). */
struct atp_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t limit; /* atp_buf_reserve fails beyond this many bytes (0: none) */
};

/* Make room for `need` more bytes; returns a pointer to data+len or NULL. */
uint8_t *atp_buf_reserve(struct atp_buf *b, size_t need);
void atp_buf_free(struct atp_buf *b);

/* Statistics sources: anything that has counters registers one. */
typedef void (*atp_stat_emit_fn)(void *emit_arg, const char *name, int64_t value);
struct atp_stats_source {
    void (*collect)(void *arg, atp_stat_emit_fn emit, void *emit_arg);
    void *arg;
};

#define ATP_CMD_MAX_SOURCES 8

/*
 * A feed request that asks to wait (binary CHANGES with the WAIT flag, HTTP
 * /v1/changes with `wait`) and would report nothing (no entries, and no
 * more records waiting to be examined) is held instead of answered: the
 * call stops before it, consuming nothing and appending nothing, and sets
 * `parked`. The caller keeps the request's input and calls again later (the
 * server: every few milliseconds), and the request is answered as soon as
 * the feed has something for it after its cursor, or with nothing once its
 * wait is over. One per connection, since it remembers the deadline of the
 * request at the head of that connection's input and where its last look
 * ended.
 */
struct atp_wait {
    uint32_t max_ms;   /* set by the caller: the longest wait granted; 0 answers at once */
    uint64_t until_us; /* 0, or when the held request must be answered (now_us's clock) */
    uint64_t wait_us;  /* the held request's wait: until_us is at most this far off */
    uint64_t from;     /* the held request's last look ended at this cursor */
    uint32_t held;     /* requests held for the first time (the caller counts and clears) */
    bool parked;       /* out: the last call stopped at a held request */
};

/* Is the held request still within its wait at now_us? A deadline further
 * off than its wait means the clock went back: no (answer rather than wait
 * longer than promised). */
static inline bool atp_wait_pending(const struct atp_wait *w, uint64_t now_us)
{
    return now_us < w->until_us && w->until_us - now_us <= w->wait_us;
}

struct atp_cmd_ctx {
    struct atp_store *store;
    struct atp_stats_source sources[ATP_CMD_MAX_SOURCES]; /* for STATS */
    uint32_t nsources;
    const char *build;  /* build string for HELLO, e.g. "atpd 0.1.0" */
    uint32_t max_frame; /* negotiated limits announced in HELLO */
    uint32_t max_keys;
    uint32_t max_lines;
    /* Set by the server: 0 while serving normally, else a code such as
     * ATP_EUNAVAILABLE that reservations are refused with. */
    const volatile int *refuse_writes;
    /* Set by the server before each call: the connection's, or NULL (feed
     * requests are then answered at once whatever they ask). */
    struct atp_wait *wait;
};

#define ATP_CMD_HELD 1 /* atp_cmd_changes: the request is held, nothing to answer yet */

/*
 * The feed call of a request (binary CHANGES, HTTP /v1/changes), waiting as
 * above when wait_ms > 0 and ctx->wait is set: cursor 0 answers the feed's
 * position now (no entries); any other cursor is atp_store_changes after
 * it, or after where the same request's last look ended when it was held
 * before (the records in between were all of items the channel does not
 * sell from). Returns 0 with the out-parameters written, a store error, or
 * ATP_CMD_HELD (ctx->wait->parked set, nothing written): the caller answers
 * nothing now and handles the same request again later.
 */
int atp_cmd_changes(struct atp_cmd_ctx *ctx, uint32_t channel, uint64_t cursor, uint32_t flags,
                    uint32_t max, uint32_t wait_ms, uint64_t now_us, struct atp_change *ret,
                    uint32_t *ret_n, uint64_t *ret_next, bool *ret_more);

/*
 * Handle the frame at the start of `in`.
 *   > 0  bytes consumed; one response appended to `out`;
 *   0    `in` holds less than one whole frame: read more; or (ctx->wait
 *        set, and its `parked` then true) the frame is held: call again;
 *   < 0  broken framing (bad magic, version, or a length over the limit):
 *        an error response was appended; the caller flushes `out` and closes.
 *        -ENOMEM: `out` could not grow (its limit or malloc) to hold even an
 *        error response; nothing was appended; the caller closes.
 * The response is appended even for malformed bodies and unknown opcodes
 * (returning > 0): the connection carries on.
 */
ssize_t atp_cmd_handle(struct atp_cmd_ctx *ctx, const uint8_t *in, size_t len, struct atp_buf *out,
                       uint64_t now_us);

/*
 * Handle every whole frame at the start of `in`, in order, with the same
 * responses, metrics and store effects as that many atp_cmd_handle calls,
 * but faster for pipelined lookups: consecutive GET frames are read from the
 * store together (atp_store_get_many), their responses still appended one
 * per frame in frame order. Before each frame outside such a run, stops if
 * out->len >= out_stop (the caller's backpressure; a run of GETs may go past
 * it by at most 64 GET responses).
 *
 * Metrics: one clock read (atp_metrics_now_ns) per frame, or per run of
 * GETs, each frame's duration counted from the end of the previous one. The
 * first counts from *io_t_ns when io_t_ns is not NULL and *io_t_ns is not 0
 * (a reading the caller already has, taken when it began handling this
 * input), else from a reading taken on entry; on return *io_t_ns is the
 * clock at the end of the last frame handled (the reading it started from
 * when no frame was handled), so a caller handling several inputs in a row
 * chains them with no clock read in between.
 *
 * Returns the bytes consumed: whole frames answered; it stops at a partial
 * frame, at out_stop, or at a held frame (ctx->wait->parked is then
 * true). *ret_frames counts the frames handled (a broken one included).
 * *ret_err is 0, or what atp_cmd_handle would have returned for the frame
 * that ended the call (broken framing with its error appended, or -ENOMEM);
 * the caller then flushes `out` and closes, and the return value means
 * nothing more.
 */
size_t atp_cmd_handle_many(struct atp_cmd_ctx *ctx, const uint8_t *in, size_t len,
                           struct atp_buf *out, uint64_t now_us, size_t out_stop, uint64_t *io_t_ns,
                           uint32_t *ret_frames, int *ret_err);

/*
 * Append an error response frame that answers no particular request (for
 * example "too many connections" or "idle timeout" before closing), or that
 * answers `request_id`. `detail` may be NULL. 0 or -ENOMEM.
 */
int atp_cmd_error(struct atp_buf *out, uint64_t request_id, int code, const char *detail);

#endif /* ATP_CMD_H */
