/*
 * atp/client.h - a C client for the atpd binary protocol.
 *
 * One struct atp_client is one TCP connection, used by one thread at a time.
 * It knows sockets and the codec (atp/proto.h), nothing about the server's
 * insides. Used by atpctl, the tests and anyone embedding atpd access in C.
 *
 * Two ways to talk:
 *   - blocking calls (atp_client_get, _reserve, ...): send one request, wait
 *     for its answer, fill a result struct;
 *   - pipelining: queue any number of requests (atp_client_queue_*), send
 *     them with atp_client_flush, then read the answers in order with
 *     atp_client_read and decode each with atp_client_decode_* (or the codec).
 * Do not mix the two while pipelined answers are unread: a blocking call
 * returns ATP_EINVAL while atp_client_pending() is not 0.
 *
 * Returns: 0 on success; a negative ATP_* code when the server answered with
 * an error status (the server's message is in atp_client_last_error); -errno
 * for a socket error (-ETIMEDOUT when a timeout is set and expires,
 * -ECONNRESET when the server closed); ATP_EMALFORMED when the answer cannot
 * be decoded or does not match the request. After a socket error, a closed
 * connection or a malformed answer the client is broken: every later call
 * returns -ENOTCONN. Out-parameters are written only on success, except that
 * reserve's shortfalls are written on ATP_EINSUFFICIENT.
 *
 * Strings passed in are NUL-terminated C strings; loc NULL or "" means no
 * location (network ATP for reads, "any" for reservation lines).
 */
#ifndef ATP_CLIENT_H
#define ATP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atp/proto.h"
#include "atp/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATP_CLIENT_DEFAULT_PORT 7400

struct atp_client;

/*
 * Connect to host:port (a name or an address, IPv4 or IPv6). No HELLO is
 * sent; call atp_client_hello to learn the server's limits.
 * -EHOSTUNREACH when the name does not resolve, else -errno of connect.
 */
int atp_client_connect(const char *host, uint16_t port, struct atp_client **ret_client);
/* Close the connection and free; NULL is fine. */
void atp_client_close(struct atp_client *c);

/* Socket timeout for each send and receive, 0 for none (the default). */
int atp_client_set_timeout(struct atp_client *c, uint32_t ms);
int atp_client_fd(const struct atp_client *c);
/* True after a socket error, a close by the server or a malformed answer. */
bool atp_client_is_broken(const struct atp_client *c);
/*
 * The message of the last error answer (or a description of the last local
 * failure); "" after a success. Valid until the next call on this client.
 */
const char *atp_client_last_error(const struct atp_client *c);

/* --- results ------------------------------------------------------------- */

struct atp_client_hello {
    uint8_t version;
    uint32_t max_frame;
    uint32_t max_keys;
    uint32_t max_lines;
    char build[128];
};

struct atp_client_key {
    const char *sku;
    const char *channel;
    const char *loc; /* NULL or "": network */
};

struct atp_client_item {
    int status; /* 0 or an ATP_* code for this key */
    struct atp_breakdown b;
};

struct atp_client_line {
    const char *sku;
    const char *loc; /* NULL or "": any location */
    int64_t qty;
};

/* A reservation, copied out of the answer (owned by the caller). */
struct atp_client_resv {
    uint64_t id;
    int state; /* enum atp_res_state */
    bool replayed;
    char channel[ATP_CHANNEL_MAX + 1];
    char key[ATP_KEY_MAX + 1];
    uint64_t created_us;
    uint64_t expires_us;
    uint64_t ttl_ms;
    uint32_t nlines;
    struct {
        char sku[ATP_SKU_MAX + 1];
        char loc[ATP_LOC_MAX + 1];
        int64_t qty;
        bool fulfilled;
    } lines[ATP_MAX_LINES];
};

/* A change-feed entry, copied out of the answer (owned by the caller). */
struct atp_client_change {
    char sku[ATP_SKU_MAX + 1];
    char loc[ATP_LOC_MAX + 1]; /* "" in a network answer */
    int64_t atp;               /* for the channel asked, when the server answered */
};

/* --- blocking calls ------------------------------------------------------- */

int atp_client_hello(struct atp_client *c, struct atp_client_hello *ret);
int atp_client_ping(struct atp_client *c);
int atp_client_get(struct atp_client *c, const char *sku, const char *channel, const char *loc,
                   bool breakdown, struct atp_breakdown *ret);
/* One result per key, in order; the call fails only if the whole request does. */
int atp_client_mget(struct atp_client *c, const struct atp_client_key *keys, uint32_t n,
                    bool breakdown, struct atp_client_item *ret);
/*
 * ret_short (may be NULL, else room for n entries) is filled on
 * ATP_EINSUFFICIENT with one entry per line.
 */
int atp_client_reserve(struct atp_client *c, const char *key, const char *channel, uint64_t ttl_ms,
                       const struct atp_client_line *lines, uint32_t n, struct atp_client_resv *ret,
                       struct atp_shortfall *ret_short);
int atp_client_commit(struct atp_client *c, uint64_t id, struct atp_client_resv *ret);
int atp_client_release(struct atp_client *c, uint64_t id, struct atp_client_resv *ret);
int atp_client_extend(struct atp_client *c, uint64_t id, uint64_t ttl_ms,
                      struct atp_client_resv *ret);
/* By idempotency key when key is not NULL, else by id. */
int atp_client_get_reservation(struct atp_client *c, uint64_t id, const char *key,
                               struct atp_client_resv *ret);
int atp_client_adjust(struct atp_client *c, const char *sku, const char *loc, int64_t delta,
                      int64_t *ret_on_hand);
int atp_client_set(struct atp_client *c, const char *sku, const char *loc, int64_t on_hand,
                   uint64_t seq);
/*
 * CHANGES (PROTOCOL.md "CHANGES"): up to max changes for channel after
 * cursor, one entry per sku with its network ATP when network is set.
 * cursor 0 asks for the feed's position now: no entries, *ret_next is the
 * cursor to follow (read everything first, e.g. with atp_client_mget).
 * max is 1..ATP_CHANGES_MAX and at most the server's max_keys; ret has room
 * for max entries. *ret_n entries are written to ret, *ret_next is the
 * cursor to ask from next, *ret_more says more records wait (ask again at
 * once). ATP_ECURSOR: the cursor expired or belongs to another start of the
 * server; start again from cursor 0.
 */
int atp_client_changes(struct atp_client *c, const char *channel, uint64_t cursor, bool network,
                       uint32_t max, struct atp_client_change *ret, uint32_t *ret_n,
                       uint64_t *ret_next, bool *ret_more);
/*
 * The same, but when there is nothing new after cursor the server holds the
 * answer for up to wait_ms (cut to its feed-wait-max) and answers as soon as
 * a change for the channel arrives: a subscription rather than a poll. The
 * answer after a wait with nothing has no entries; *ret_next is where to go
 * on from, as always (past changes of items at locations the channel does
 * not sell from, which never end a wait). The socket
 * timeout (atp_client_set_timeout) is stretched by wait_ms for this call.
 * wait_ms 0 is atp_client_changes.
 */
int atp_client_changes_wait(struct atp_client *c, const char *channel, uint64_t cursor,
                            bool network, uint32_t max, uint32_t wait_ms,
                            struct atp_client_change *ret, uint32_t *ret_n, uint64_t *ret_next,
                            bool *ret_more);
/*
 * fn is called for each pair, name NUL-terminated and valid for the call;
 * a non-zero return from fn stops the walk (the call still returns 0).
 */
int atp_client_stats(struct atp_client *c, int (*fn)(void *arg, const char *name, int64_t value),
                     void *arg);

/* --- pipelining ----------------------------------------------------------- */
/*
 * Each queue call encodes one request into the client's output buffer and
 * stores its request id in *ret_id (may be NULL). Nothing is sent until
 * atp_client_flush. Ids count up from 1 on each connection.
 */
int atp_client_queue_ping(struct atp_client *c, uint64_t *ret_id);
int atp_client_queue_get(struct atp_client *c, const char *sku, const char *channel,
                         const char *loc, bool breakdown, uint64_t *ret_id);
int atp_client_queue_mget(struct atp_client *c, const struct atp_client_key *keys, uint32_t n,
                          bool breakdown, uint64_t *ret_id);
int atp_client_queue_reserve(struct atp_client *c, const char *key, const char *channel,
                             uint64_t ttl_ms, const struct atp_client_line *lines, uint32_t n,
                             uint64_t *ret_id);
/* op: ATP_OP_COMMIT, ATP_OP_RELEASE or ATP_OP_EXTEND (ttl_ms for EXTEND only). */
int atp_client_queue_id(struct atp_client *c, uint8_t op, uint64_t id, uint64_t ttl_ms,
                        uint64_t *ret_id);
int atp_client_queue_adjust(struct atp_client *c, const char *sku, const char *loc, int64_t delta,
                            uint64_t *ret_id);
int atp_client_queue_set(struct atp_client *c, const char *sku, const char *loc, int64_t on_hand,
                         uint64_t seq, uint64_t *ret_id);
int atp_client_queue_changes(struct atp_client *c, const char *channel, uint64_t cursor,
                             bool network, uint32_t max, uint64_t *ret_id);
/* A raw, already encoded frame (tests use it to send malformed input). */
int atp_client_queue_raw(struct atp_client *c, const void *frame, size_t len);

/* Send everything queued. */
int atp_client_flush(struct atp_client *c);
/* Requests sent or queued whose answers have not been read yet. */
uint32_t atp_client_pending(const struct atp_client *c);
/*
 * Wait for the next answer. *ret (body included) stays valid until the next
 * call on this client. An error answer is returned here as a frame like any
 * other (its status is not 0): decode it with atp_client_decode_*.
 */
int atp_client_read(struct atp_client *c, struct atp_frame *ret);

/*
 * Decoders for answers read with atp_client_read: 0, the answer's error code,
 * or ATP_EMALFORMED. `c` (may be NULL) receives the error message for
 * atp_client_last_error.
 */
int atp_client_decode_status(struct atp_client *c, const struct atp_frame *f);
int atp_client_decode_get(struct atp_client *c, const struct atp_frame *f,
                          struct atp_breakdown *ret);
int atp_client_decode_resv(struct atp_client *c, const struct atp_frame *f,
                           struct atp_client_resv *ret, struct atp_shortfall *ret_short,
                           uint32_t nshort);
/*
 * A CHANGES answer: at most cap entries are accepted (more is ATP_EMALFORMED);
 * the out-parameters are as for atp_client_changes, and *ret_network (may
 * be NULL) receives the answer's NETWORK flag.
 */
int atp_client_decode_changes(struct atp_client *c, const struct atp_frame *f,
                              struct atp_client_change *ret, uint32_t cap, uint32_t *ret_n,
                              uint64_t *ret_next, bool *ret_more, bool *ret_network);

#ifdef __cplusplus
}
#endif

#endif /* ATP_CLIENT_H */
