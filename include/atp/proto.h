/*
 * atp/proto.h - the pure codec of the atpd binary protocol.
 *
 * protocol/PROTOCOL.md is the contract; this is its C form, shared by the
 * server (src/cmd.c), the client library, atpctl and the load generator.
 *
 * The codec knows frames, field layouts and limits. It knows nothing about
 * sockets, the store's behaviour, threads or memory management: no malloc,
 * no I/O, no globals, no clock.
 *
 * Decoding is zero-copy: every struct atp_slice a decoder fills points into
 * the input buffer and is valid as long as that buffer is. Decoders read
 * only the bytes they are given (tested against a guard page).
 *
 * Encoding follows snprintf: an encoder writes into (buf, cap) and returns
 * the size of the whole frame. If that is more than cap, the contents of buf
 * are unspecified and the caller retries with a buffer at least that large.
 * buf may be NULL when cap is 0 (to learn the size). A negative return is an
 * ATP_* code: the values cannot be represented on the wire (a string longer
 * than its length prefix allows, a count over 65535, a body over 4 GiB).
 */
#ifndef ATP_PROTO_H
#define ATP_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "atp/error.h"
#include "atp/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATP_PROTO_MAGIC0   0x41 /* 'A' */
#define ATP_PROTO_MAGIC1   0x54 /* 'T' */
#define ATP_PROTO_VERSION  1
#define ATP_PROTO_HDR_SIZE 20

/* Default limits (PROTOCOL.md "Limits"); a server may announce lower ones. */
#define ATP_PROTO_MAX_FRAME (1u << 20) /* header + body */
#define ATP_PROTO_MAX_KEYS  1000       /* keys per MGET */
#define ATP_PROTO_MAX_LINES ATP_MAX_LINES
#define ATP_PROTO_MAX_COUNT 65535 /* every count is a u16 */

enum atp_op {
    ATP_OP_NONE = 0x00,
    ATP_OP_HELLO = 0x01,
    ATP_OP_PING = 0x02,
    ATP_OP_GET = 0x10,
    ATP_OP_MGET = 0x11,
    ATP_OP_CHANGES = 0x12,
    ATP_OP_RESERVE = 0x20,
    ATP_OP_COMMIT = 0x21,
    ATP_OP_RELEASE = 0x22,
    ATP_OP_EXTEND = 0x23,
    ATP_OP_GET_RESERVATION = 0x24,
    ATP_OP_ADJUST = 0x30,
    ATP_OP_SET = 0x31,
    ATP_OP_STATS = 0x40,
};

#define ATP_OP_RESPONSE 0x80 /* set in the opcode of every response */

/* Name of an opcode ("GET"), with or without the response bit; NULL if unknown. */
const char *atp_proto_op_name(unsigned opcode);

/* Flags (PROTOCOL.md "Flags"); each is defined for the named operations only. */
#define ATP_FLAG_BREAKDOWN 0x0001 /* GET, MGET request and response */
#define ATP_FLAG_REPLAYED  0x0001 /* RESERVE response */
#define ATP_FLAG_BY_KEY    0x0001 /* GET_RESERVATION request */
#define ATP_FLAG_NETWORK   0x0001 /* CHANGES request and response */
#define ATP_FLAG_WAIT      0x0002 /* CHANGES request: a u32 wait_ms follows max */

/* A frame: the decoded header and where its body is. */
struct atp_frame {
    uint8_t version;
    uint8_t opcode;
    uint16_t flags;
    uint16_t status; /* wire status; 0 in requests */
    uint64_t id;     /* request id */
    uint32_t body_len;
    const uint8_t *body; /* into the input; NULL when body_len is 0 */
};

/*
 * Find the frame at the start of `in`.
 *   > 0  the whole frame is there: its size (header + body); *ret is filled.
 *   0    need more bytes (every strict prefix of a valid frame says this).
 *   < 0  broken framing: ATP_EBADMAGIC (checked from the first byte),
 *        ATP_EVERSION, or ATP_ETOOLARGE (header + body over max_frame).
 *        For EVERSION and ETOOLARGE the header fields are in *ret (body NULL,
 *        body_len as sent) so the error can echo the request id; for
 *        EBADMAGIC *ret is untouched.
 * max_frame 0 means ATP_PROTO_MAX_FRAME.
 */
ssize_t atp_proto_frame(const uint8_t *in, size_t len, uint32_t max_frame, struct atp_frame *ret);

/*
 * Bytes the frame at the start of `in` occupies once complete: the header
 * size while fewer than 20 bytes are there, else header + body length (no
 * checks; for sizing a receive buffer after atp_proto_frame said 0).
 */
size_t atp_proto_frame_need(const uint8_t *in, size_t len);

/*
 * Write a bare 20-byte header (for tests and for callers that build bodies
 * themselves). Returns ATP_PROTO_HDR_SIZE or the size needed.
 */
ssize_t atp_proto_enc_hdr(uint8_t *buf, size_t cap, uint8_t opcode, uint16_t flags, uint16_t status,
                          uint64_t id, uint32_t body_len);

/* --- request bodies ----------------------------------------------------- */
/*
 * Decoders take a frame from atp_proto_frame and return 0, or ATP_EMALFORMED
 * (truncated or trailing bytes, undefined flags, non-zero status) or
 * ATP_ETOOMANY (a count over the limit); *ret is written only on success.
 * Encoders take the request id and return as described at the top.
 */

struct atp_proto_hello_req {
    uint8_t min_version;
    uint8_t max_version;
    struct atp_slice client; /* free text, may be empty */
};
int atp_proto_dec_hello_req(const struct atp_frame *f, struct atp_proto_hello_req *ret);
ssize_t atp_proto_enc_hello_req(uint8_t *buf, size_t cap, uint64_t id,
                                const struct atp_proto_hello_req *req);

/* PING: the whole body is an opaque payload. */
int atp_proto_dec_ping_req(const struct atp_frame *f, struct atp_slice *ret_payload);
ssize_t atp_proto_enc_ping_req(uint8_t *buf, size_t cap, uint64_t id, struct atp_slice payload);

/* One (sku, channel, location) key: GET, and each key of MGET. */
struct atp_proto_key {
    struct atp_slice sku;
    struct atp_slice channel;
    struct atp_slice loc; /* len 0: network ATP */
};

struct atp_proto_get_req {
    struct atp_proto_key key;
    bool breakdown;
};
int atp_proto_dec_get_req(const struct atp_frame *f, struct atp_proto_get_req *ret);
ssize_t atp_proto_enc_get_req(uint8_t *buf, size_t cap, uint64_t id,
                              const struct atp_proto_get_req *req);

/*
 * MGET: the decoder checks every key and the count (<= max_keys, 0 means
 * ATP_PROTO_MAX_KEYS) up front, then atp_proto_mget_next walks the keys
 * without further checks. No array of keys is ever built.
 */
struct atp_proto_mget_req {
    uint32_t count;
    bool breakdown;
    const uint8_t *keys; /* first key; internal to the iterator */
    const uint8_t *end;
};
int atp_proto_dec_mget_req(const struct atp_frame *f, uint32_t max_keys,
                           struct atp_proto_mget_req *ret);
/* Next key; false after the last. Advances req->keys (copy req to restart). */
bool atp_proto_mget_next(struct atp_proto_mget_req *req, struct atp_proto_key *ret);
ssize_t atp_proto_enc_mget_req(uint8_t *buf, size_t cap, uint64_t id, bool breakdown,
                               const struct atp_proto_key *keys, uint32_t count);

/*
 * CHANGES: cursor 0 asks for the feed's position now (no entries). max is
 * a u16 on the wire; the command layer checks its range (1..ATP_CHANGES_MAX
 * and max_keys), the codec does not. wait_ms (on the wire only with
 * ATP_FLAG_WAIT, which the encoder sets when it is not 0, and which the
 * decoder refuses with a 0): how long the server may hold an answer that
 * would report nothing.
 */
struct atp_proto_changes_req {
    struct atp_slice channel;
    uint64_t cursor;
    uint32_t max;
    bool network; /* ATP_FLAG_NETWORK */
    uint32_t wait_ms;
};
int atp_proto_dec_changes_req(const struct atp_frame *f, struct atp_proto_changes_req *ret);
/* ATP_EINVAL when max is over 65535 or the channel over 255 bytes. */
ssize_t atp_proto_enc_changes_req(uint8_t *buf, size_t cap, uint64_t id,
                                  const struct atp_proto_changes_req *req);

/*
 * RESERVE: lines land in a fixed array (at most ATP_PROTO_MAX_LINES; more is
 * ATP_ETOOMANY), ready to hand to atp_store_reserve. Zero lines decode fine;
 * the command layer refuses them.
 */
struct atp_proto_reserve_req {
    struct atp_slice key;
    struct atp_slice channel;
    uint64_t ttl_ms;
    uint32_t nlines;
    struct atp_line_req lines[ATP_PROTO_MAX_LINES];
};
int atp_proto_dec_reserve_req(const struct atp_frame *f, struct atp_proto_reserve_req *ret);
/* The encoder takes any number of lines up to 65535 (so tests can send too many). */
ssize_t atp_proto_enc_reserve_req(uint8_t *buf, size_t cap, uint64_t id, struct atp_slice key,
                                  struct atp_slice channel, uint64_t ttl_ms,
                                  const struct atp_line_req *lines, uint32_t nlines);

/* COMMIT, RELEASE (ttl_ms unused), EXTEND. */
struct atp_proto_id_req {
    uint64_t res_id;
    uint64_t ttl_ms; /* EXTEND only */
};
int atp_proto_dec_id_req(const struct atp_frame *f, struct atp_proto_id_req *ret);
/* opcode: ATP_OP_COMMIT, ATP_OP_RELEASE or ATP_OP_EXTEND. */
ssize_t atp_proto_enc_id_req(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id,
                             const struct atp_proto_id_req *req);

struct atp_proto_getres_req {
    bool by_key;
    uint64_t res_id;      /* when !by_key */
    struct atp_slice key; /* when by_key */
};
int atp_proto_dec_getres_req(const struct atp_frame *f, struct atp_proto_getres_req *ret);
ssize_t atp_proto_enc_getres_req(uint8_t *buf, size_t cap, uint64_t id,
                                 const struct atp_proto_getres_req *req);

struct atp_proto_adjust_req {
    struct atp_slice sku;
    struct atp_slice loc;
    int64_t delta;
};
int atp_proto_dec_adjust_req(const struct atp_frame *f, struct atp_proto_adjust_req *ret);
ssize_t atp_proto_enc_adjust_req(uint8_t *buf, size_t cap, uint64_t id,
                                 const struct atp_proto_adjust_req *req);

struct atp_proto_set_req {
    struct atp_slice sku;
    struct atp_slice loc;
    int64_t on_hand;
    uint64_t seq;
};
int atp_proto_dec_set_req(const struct atp_frame *f, struct atp_proto_set_req *ret);
ssize_t atp_proto_enc_set_req(uint8_t *buf, size_t cap, uint64_t id,
                              const struct atp_proto_set_req *req);

/* STATS has an empty body; the decoder only checks that. */
int atp_proto_dec_stats_req(const struct atp_frame *f);
ssize_t atp_proto_enc_stats_req(uint8_t *buf, size_t cap, uint64_t id);

/* --- response bodies ---------------------------------------------------- */
/*
 * Response decoders expect status 0 (use atp_proto_dec_error otherwise) and
 * return 0 or ATP_EMALFORMED. `opcode` arguments of encoders are request
 * opcodes; the encoder sets ATP_OP_RESPONSE.
 */

/*
 * Error response (status != 0): message, and for RESERVE/EINSUFFICIENT the
 * shortfalls. shortfalls may be NULL when nshort is 0.
 */
struct atp_proto_error {
    int code; /* atp_error_from_wire(status) */
    struct atp_slice message;
    uint32_t nshort;          /* shortfall entries */
    const uint8_t *shortfall; /* internal: read with atp_proto_error_shortfall */
};
int atp_proto_dec_error(const struct atp_frame *f, struct atp_proto_error *ret);
/* Entry i < e->nshort. */
void atp_proto_error_shortfall(const struct atp_proto_error *e, uint32_t i,
                               struct atp_shortfall *ret);
/*
 * code is an ATP_* code or -errno (sent as ATP_WIRE_SYSTEM); it must not be 0.
 * opcode ATP_OP_NONE gives the unattributed error frame (opcode 0x80).
 */
ssize_t atp_proto_enc_error(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id, int code,
                            struct atp_slice message, const struct atp_shortfall *shortfalls,
                            uint32_t nshort);

struct atp_proto_hello_resp {
    uint8_t version;
    uint32_t max_frame;
    uint16_t max_keys;
    uint16_t max_lines;
    struct atp_slice build;
};
int atp_proto_dec_hello_resp(const struct atp_frame *f, struct atp_proto_hello_resp *ret);
ssize_t atp_proto_enc_hello_resp(uint8_t *buf, size_t cap, uint64_t id,
                                 const struct atp_proto_hello_resp *resp);

int atp_proto_dec_ping_resp(const struct atp_frame *f, struct atp_slice *ret_payload);
ssize_t atp_proto_enc_ping_resp(uint8_t *buf, size_t cap, uint64_t id, struct atp_slice payload);

/* GET: with breakdown all five numbers are on the wire, else only atp (the rest 0). */
struct atp_proto_get_resp {
    bool breakdown;
    struct atp_breakdown b;
};
int atp_proto_dec_get_resp(const struct atp_frame *f, struct atp_proto_get_resp *ret);
ssize_t atp_proto_enc_get_resp(uint8_t *buf, size_t cap, uint64_t id,
                               const struct atp_proto_get_resp *resp);

/*
 * MGET response, written in place: reserve atp_proto_mget_resp_size bytes,
 * write the header with _begin, then each entry with _put (any order).
 */
size_t atp_proto_mget_resp_size(uint32_t count, bool breakdown);
/* Writes header and count into buf (which holds mget_resp_size bytes). */
void atp_proto_enc_mget_resp_begin(uint8_t *buf, uint64_t id, uint32_t count, bool breakdown);
/* Entry i: code is an ATP_* code (0 for found); b may be NULL for zeros. */
void atp_proto_enc_mget_resp_put(uint8_t *buf, uint32_t i, bool breakdown, int code,
                                 const struct atp_breakdown *b);

struct atp_proto_mget_resp {
    uint32_t count;
    bool breakdown;
    const uint8_t *entries; /* internal: read with atp_proto_mget_resp_entry */
};
int atp_proto_dec_mget_resp(const struct atp_frame *f, struct atp_proto_mget_resp *ret);
/* Entry i < r->count: its status as an ATP_* code, and its numbers. */
int atp_proto_mget_resp_entry(const struct atp_proto_mget_resp *r, uint32_t i,
                              struct atp_breakdown *ret);

/*
 * CHANGES response. The encoder takes the store's entries as they are (a
 * NETWORK answer has empty locations); the decoder checks every entry and
 * the `more` byte (0 or 1) up front, then atp_proto_changes_next walks the
 * entries, its slices pointing into the frame.
 */
ssize_t atp_proto_enc_changes_resp(uint8_t *buf, size_t cap, uint64_t id, bool network,
                                   uint64_t next_cursor, bool more,
                                   const struct atp_change *changes, uint32_t count);

struct atp_proto_changes_resp {
    uint64_t next_cursor;
    bool more;
    bool network; /* ATP_FLAG_NETWORK */
    uint32_t count;
    const uint8_t *next; /* internal: iterator position */
    const uint8_t *end;
};
int atp_proto_dec_changes_resp(const struct atp_frame *f, struct atp_proto_changes_resp *ret);
/* Next entry; false after the last. Advances r->next (copy r to restart). */
bool atp_proto_changes_next(struct atp_proto_changes_resp *r, struct atp_change *ret);

/* The reservation record (RESERVE, COMMIT, RELEASE, EXTEND, GET_RESERVATION). */
struct atp_proto_resv_line {
    struct atp_slice sku;
    struct atp_slice loc;
    int64_t qty;
    bool fulfilled;
};
struct atp_proto_resv {
    uint64_t id;
    uint8_t state; /* enum atp_res_state */
    struct atp_slice channel;
    struct atp_slice key;
    uint64_t created_us;
    uint64_t expires_us;
    uint64_t ttl_ms;
    uint32_t nlines;
    struct atp_proto_resv_line lines[ATP_PROTO_MAX_LINES];
};
/* *ret_replayed (may be NULL) receives the REPLAYED flag. */
int atp_proto_dec_resv_resp(const struct atp_frame *f, struct atp_proto_resv *ret,
                            bool *ret_replayed);
/* opcode: the request's (RESERVE, COMMIT, ...); replayed only with RESERVE. */
ssize_t atp_proto_enc_resv_resp(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id,
                                bool replayed, const struct atp_proto_resv *resv);

int atp_proto_dec_adjust_resp(const struct atp_frame *f, int64_t *ret_on_hand);
ssize_t atp_proto_enc_adjust_resp(uint8_t *buf, size_t cap, uint64_t id, int64_t on_hand);

/* A success response with an empty body (SET). */
int atp_proto_dec_empty_resp(const struct atp_frame *f);
ssize_t atp_proto_enc_empty_resp(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id);

/*
 * STATS response, built incrementally because the pairs come from callbacks:
 * _begin, any number of _add, then _end returns the frame size (or a negative
 * code). Like every encoder, if the size is over cap the caller grows the
 * buffer and builds again.
 */
struct atp_proto_stats_enc {
    uint8_t *buf;
    size_t cap;
    size_t pos;
    uint32_t count;
    bool bad; /* a name over 255 bytes or more than 65535 pairs */
};
void atp_proto_enc_stats_begin(struct atp_proto_stats_enc *e, uint8_t *buf, size_t cap,
                               uint64_t id);
void atp_proto_enc_stats_add(struct atp_proto_stats_enc *e, struct atp_slice name, int64_t value);
ssize_t atp_proto_enc_stats_end(struct atp_proto_stats_enc *e);

struct atp_proto_stats_resp {
    uint32_t count;
    const uint8_t *next; /* internal: iterator position */
    const uint8_t *end;
};
int atp_proto_dec_stats_resp(const struct atp_frame *f, struct atp_proto_stats_resp *ret);
/* Next pair; false after the last. */
bool atp_proto_stats_next(struct atp_proto_stats_resp *r, struct atp_slice *ret_name,
                          int64_t *ret_value);

#ifdef __cplusplus
}
#endif

#endif /* ATP_PROTO_H */
