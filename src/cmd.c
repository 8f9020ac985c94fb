/*
 * cmd.c - the command layer: executes one binary-protocol request frame
 * against the store and appends exactly one response frame (src/cmd.h).
 *
 * It knows the codec (include/atp/proto.h) and the store API; it knows
 * nothing about sockets, io_uring, threads or time sources (now_us comes in).
 * Operations are a table indexed by opcode. Nothing here allocates per
 * request except growing the caller's output buffer; decoded strings are
 * slices into the caller's input, and responses are encoded straight into
 * the output buffer (MGET writes its entries in place, one per key).
 */
#include "cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atp/durable.h"
#include "atp/proto.h"
#include "metrics.h"

/* --- output buffer -------------------------------------------------------- */

uint8_t *atp_buf_reserve(struct atp_buf *b, size_t need)
{
    if (need <= b->cap - b->len)
        return b->data + b->len;
    size_t want = b->len + need;
    if (want < b->len || (b->limit && want > b->limit))
        return NULL;
    /* Double from 4 KiB: a connection's buffer settles after a few growths. */
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    if (b->limit && cap > b->limit)
        cap = b->limit;
    uint8_t *p = realloc(b->data, cap);
    if (!p)
        return NULL;
    b->data = p;
    b->cap = cap;
    return p + b->len;
}

void atp_buf_free(struct atp_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/*
 * Append the frame an encoder call produces, then `return 0` from the calling
 * function. `call` writes to (P, C); it runs once into the spare room, and
 * once more with exactly the room it asked for (the snprintf contract of
 * proto.h). Returns the encoder's negative code, or -ENOMEM when the buffer
 * cannot grow.
 */
#define RETURN_EMIT(out, call)                                                                     \
    do {                                                                                           \
        uint8_t *P = (out)->data ? (out)->data + (out)->len : NULL;                                \
        size_t C = (out)->cap - (out)->len;                                                        \
        ssize_t n_ = (call);                                                                       \
        if (n_ >= 0 && (size_t)n_ > C) {                                                           \
            if (!(P = atp_buf_reserve((out), (size_t)n_)))                                         \
                return -ENOMEM;                                                                    \
            C = (size_t)n_;                                                                        \
            n_ = (call);                                                                           \
        }                                                                                          \
        if (n_ < 0)                                                                                \
            return (int)n_;                                                                        \
        (out)->len += (size_t)n_;                                                                  \
        return 0;                                                                                  \
    } while (0)

static int append_error(struct atp_buf *out, uint8_t opcode, uint64_t id, int code,
                        const char *detail, const struct atp_shortfall *sf, uint32_t nshort)
{
    char msg[256];
    struct atp_slice m;
    if (detail) {
        int n = snprintf(msg, sizeof(msg), "%s: %s", atp_strerror(code), detail);
        m.p = msg;
        m.len = n < 0 ? 0 : (uint32_t)(n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1);
    } else {
        m = atp_slice_cstr(atp_strerror(code));
    }
    RETURN_EMIT(out, atp_proto_enc_error(P, C, opcode, id, code, m, sf, nshort));
}

int atp_cmd_error(struct atp_buf *out, uint64_t request_id, int code, const char *detail)
{
    if (code == 0)
        code = ATP_EINTERNAL;
    int rc = append_error(out, ATP_OP_NONE, request_id, code, detail, NULL, 0);
    return rc ? -ENOMEM : 0;
}

/* --- operations ----------------------------------------------------------- */

/*
 * A handler appends its success response and returns 0, or returns a code
 * for which atp_cmd_handle appends the error response. Handlers that need a
 * richer error frame (RESERVE's shortfalls) append it themselves.
 */
typedef int (*op_fn)(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                     uint64_t now_us);

static int refused(const struct atp_cmd_ctx *ctx)
{
    return ctx->refuse_writes ? *ctx->refuse_writes : 0;
}

static uint32_t max_keys(const struct atp_cmd_ctx *ctx)
{
    uint32_t v = ctx->max_keys ? ctx->max_keys : ATP_PROTO_MAX_KEYS;
    return v > ATP_PROTO_MAX_COUNT ? ATP_PROTO_MAX_COUNT : v;
}

static uint32_t max_lines(const struct atp_cmd_ctx *ctx)
{
    uint32_t v = ctx->max_lines ? ctx->max_lines : ATP_PROTO_MAX_LINES;
    return v > ATP_PROTO_MAX_LINES ? ATP_PROTO_MAX_LINES : v;
}

static int op_hello(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                    uint64_t now_us)
{
    struct atp_proto_hello_req req;
    int rc = atp_proto_dec_hello_req(f, &req);
    if (rc)
        return rc;
    /* This server speaks version 1 only: the highest common version. */
    if (req.min_version > ATP_PROTO_VERSION || req.max_version < ATP_PROTO_VERSION ||
        req.min_version > req.max_version)
        return ATP_EVERSION;
    struct atp_proto_hello_resp resp = {
        .version = ATP_PROTO_VERSION,
        .max_frame = ctx->max_frame ? ctx->max_frame : ATP_PROTO_MAX_FRAME,
        .max_keys = (uint16_t)max_keys(ctx),
        .max_lines = (uint16_t)max_lines(ctx),
        .build = atp_slice_cstr(ctx->build ? ctx->build : "atpd"),
    };
    RETURN_EMIT(out, atp_proto_enc_hello_resp(P, C, f->id, &resp));
}

static int op_ping(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                   uint64_t now_us)
{
    struct atp_slice payload;
    int rc = atp_proto_dec_ping_req(f, &payload);
    if (rc)
        return rc;
    RETURN_EMIT(out, atp_proto_enc_ping_resp(P, C, f->id, payload));
}

/* ATP of one key: item or network, for a named channel. */
static int read_key(struct atp_store *store, const struct atp_proto_key *k,
                    struct atp_breakdown *ret)
{
    uint32_t channel;
    int rc = atp_store_channel_find(store, k->channel, &channel);
    if (rc)
        return rc;
    if (k->loc.len)
        return atp_store_get(store, k->sku, k->loc, channel, ret);
    return atp_store_get_network(store, k->sku, channel, ret);
}

static int op_get(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                  uint64_t now_us)
{
    struct atp_proto_get_req req;
    int rc = atp_proto_dec_get_req(f, &req);
    if (rc)
        return rc;
    struct atp_proto_get_resp resp = {.breakdown = req.breakdown};
    rc = read_key(ctx->store, &req.key, &resp.b);
    if (rc)
        return rc;
    RETURN_EMIT(out, atp_proto_enc_get_resp(P, C, f->id, &resp));
}

static int op_mget(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                   uint64_t now_us)
{
    struct atp_proto_mget_req req;
    int rc = atp_proto_dec_mget_req(f, max_keys(ctx), &req);
    if (rc)
        return rc;
    /* Entries are fixed size: reserve the whole answer, then write each
     * key's entry as it is read, with no array of results in between. */
    size_t size = atp_proto_mget_resp_size(req.count, req.breakdown);
    uint8_t *p = atp_buf_reserve(out, size);
    if (!p)
        return -ENOMEM;
    atp_proto_enc_mget_resp_begin(p, f->id, req.count, req.breakdown);
    struct atp_proto_key k;
    for (uint32_t i = 0; atp_proto_mget_next(&req, &k); i++) {
        struct atp_breakdown b;
        int krc = read_key(ctx->store, &k, &b);
        atp_proto_enc_mget_resp_put(p, i, req.breakdown, krc, krc ? NULL : &b);
    }
    out->len += size;
    return 0;
}

/*
 * For a feed request asking to wait wait_ms: true to hold it now (sets
 * w->parked, and the deadline the first time), false to answer it. `empty`:
 * the answer would report nothing. w may be NULL (a caller that cannot
 * hold: answer at once). atp_cmd_changes forgets the request's wait state
 * when it answers, whatever the answer.
 */
static bool wait_hold(struct atp_wait *w, bool empty, uint32_t wait_ms, uint64_t now_us)
{
    if (!w || !empty || wait_ms == 0 || w->max_ms == 0)
        return false;
    if (w->until_us == 0) {
        w->wait_us = (uint64_t)(wait_ms < w->max_ms ? wait_ms : w->max_ms) * 1000u;
        w->until_us = now_us + w->wait_us;
        w->held++; /* a request held, for the caller's count */
    }
    if (!atp_wait_pending(w, now_us))
        return false;
    w->parked = true;
    return true;
}

int atp_cmd_changes(struct atp_cmd_ctx *ctx, uint32_t channel, uint64_t cursor, uint32_t flags,
                    uint32_t max, uint32_t wait_ms, uint64_t now_us, struct atp_change *ret,
                    uint32_t *ret_n, uint64_t *ret_next, bool *ret_more)
{
    struct atp_wait *w = ctx->wait;
    int rc = 0;
    if (cursor == 0) {
        *ret_n = 0;
        *ret_next = atp_store_changes_cursor(ctx->store);
        *ret_more = false;
    } else {
        /* A request held before goes on from where its last look ended: the
         * records between its cursor and there were all of items the
         * channel does not sell from (else it would have been answered). */
        uint64_t since = w && w->until_us && w->from ? w->from : cursor;
        uint32_t n;
        uint64_t next;
        bool more;
        rc = atp_store_changes(ctx->store, channel, since, flags, max, ret, &n, &next, &more);
        if (rc == 0 && wait_hold(w, n == 0 && !more, wait_ms, now_us)) {
            w->from = next;
            return ATP_CMD_HELD;
        }
        if (rc == 0) {
            *ret_n = n;
            *ret_next = next;
            *ret_more = more;
        }
    }
    /* Answered (an error too): the request's wait is over. A request held
     * before is the same bytes again, so it reaches this call every time. */
    if (w)
        w->until_us = w->from = 0;
    return rc;
}

/* Returned by an operation that holds its request (nothing appended). */
#define OP_HELD ATP_CMD_HELD

/*
 * CHANGES: cursor 0 answers the feed's position now; any other cursor reads
 * the store's feed after it, and with WAIT an answer of nothing new may be
 * held (atp_cmd_changes). The entries (at most ATP_CHANGES_MAX, 40 KB) are
 * on the stack: their slices point into the store, and the encoder copies
 * the bytes into the answer.
 */
static int op_changes(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                      uint64_t now_us)
{
    struct atp_proto_changes_req req;
    int rc = atp_proto_dec_changes_req(f, &req);
    if (rc)
        return rc;
    if (req.max == 0)
        return ATP_EINVAL;
    uint32_t limit = max_keys(ctx);
    if (req.max > (limit < ATP_CHANGES_MAX ? limit : ATP_CHANGES_MAX))
        return ATP_ETOOMANY;
    uint32_t channel;
    if ((rc = atp_store_channel_find(ctx->store, req.channel, &channel)))
        return rc;
    struct atp_change changes[ATP_CHANGES_MAX];
    uint32_t n;
    uint64_t next;
    bool more;
    rc = atp_cmd_changes(ctx, channel, req.cursor, req.network ? ATP_CHANGES_NETWORK : 0, req.max,
                         req.wait_ms, now_us, changes, &n, &next, &more);
    if (rc)
        return rc; /* OP_HELD too */
    RETURN_EMIT(out, atp_proto_enc_changes_resp(P, C, f->id, req.network, next, more, changes, n));
}

/* The store's reservation in wire form; slices point into r and the store. */
static void resv_to_wire(struct atp_store *store, const struct atp_reservation *r,
                         struct atp_proto_resv *w)
{
    w->id = r->id;
    w->state = (uint8_t)r->state;
    w->channel = atp_store_channel_name(store, r->channel);
    w->key.p = r->key;
    w->key.len = r->key_len;
    w->created_us = r->created_us;
    w->expires_us = r->expires_us;
    w->ttl_ms = r->ttl_ms;
    w->nlines = r->nlines;
    for (uint32_t i = 0; i < r->nlines; i++) {
        w->lines[i].sku = r->lines[i].sku;
        w->lines[i].loc = r->lines[i].loc;
        w->lines[i].qty = r->lines[i].qty;
        w->lines[i].fulfilled = r->lines[i].fulfilled;
    }
}

static int emit_resv(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                     bool replayed, const struct atp_reservation *r)
{
    struct atp_proto_resv w;
    resv_to_wire(ctx->store, r, &w);
    RETURN_EMIT(out, atp_proto_enc_resv_resp(P, C, f->opcode, f->id, replayed, &w));
}

static int op_reserve(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                      uint64_t now_us)
{
    struct atp_proto_reserve_req req;
    int rc = atp_proto_dec_reserve_req(f, &req);
    if (rc)
        return rc;
    if (req.nlines > max_lines(ctx))
        return ATP_ETOOMANY;
    if ((rc = refused(ctx)))
        return rc;
    struct atp_reserve_req sr = {
        .key = req.key,
        .ttl_ms = req.ttl_ms,
        .lines = req.lines,
        .nlines = req.nlines,
    };
    rc = atp_store_channel_find(ctx->store, req.channel, &sr.channel);
    if (rc)
        return rc;
    struct atp_reservation res;
    struct atp_shortfall sf[ATP_PROTO_MAX_LINES];
    bool replayed = false;
    rc = atp_store_reserve(ctx->store, &sr, now_us, &res, &replayed, sf);
    atp_metrics_reservation(sr.channel, rc, replayed);
    if (rc == 0 && replayed)
        atp_durable_tls_barrier(); /* the original may still be on its way to the log */
    if (rc == ATP_EINSUFFICIENT)
        return append_error(out, f->opcode, f->id, rc, NULL, sf, req.nlines);
    if (rc)
        return rc;
    return emit_resv(ctx, f, out, replayed, &res);
}

static int op_by_id(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                    uint64_t now_us)
{
    struct atp_proto_id_req req;
    int rc = atp_proto_dec_id_req(f, &req);
    if (rc)
        return rc;
    if (f->opcode != ATP_OP_RELEASE && (rc = refused(ctx)))
        return rc;
    struct atp_reservation res;
    uint64_t pos0 = atp_durable_tls_pos();
    switch (f->opcode) {
    case ATP_OP_COMMIT:
        rc = atp_store_commit(ctx->store, req.res_id, now_us, &res);
        break;
    case ATP_OP_RELEASE:
        rc = atp_store_release(ctx->store, req.res_id, now_us, &res);
        break;
    default:
        rc = atp_store_extend(ctx->store, req.res_id, req.ttl_ms, now_us, &res);
        break;
    }
    if (rc == 0 && atp_durable_tls_pos() == pos0)
        atp_durable_tls_barrier(); /* a repeated commit: answered from state */
    if (rc)
        return rc;
    return emit_resv(ctx, f, out, false, &res);
}

static int op_get_reservation(struct atp_cmd_ctx *ctx, const struct atp_frame *f,
                              struct atp_buf *out, uint64_t now_us)
{
    struct atp_proto_getres_req req;
    int rc = atp_proto_dec_getres_req(f, &req);
    if (rc)
        return rc;
    struct atp_reservation res;
    rc = req.by_key ? atp_store_reservation_find(ctx->store, req.key, &res)
                    : atp_store_reservation_get(ctx->store, req.res_id, &res);
    if (rc)
        return rc;
    return emit_resv(ctx, f, out, false, &res);
}

static int op_adjust(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                     uint64_t now_us)
{
    struct atp_proto_adjust_req req;
    int rc = atp_proto_dec_adjust_req(f, &req);
    if (rc)
        return rc;
    if ((rc = refused(ctx)))
        return rc;
    int64_t on_hand;
    rc = atp_store_adjust(ctx->store, req.sku, req.loc, req.delta, &on_hand);
    if (rc)
        return rc;
    RETURN_EMIT(out, atp_proto_enc_adjust_resp(P, C, f->id, on_hand));
}

static int op_set(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                  uint64_t now_us)
{
    struct atp_proto_set_req req;
    int rc = atp_proto_dec_set_req(f, &req);
    if (rc)
        return rc;
    if ((rc = refused(ctx)))
        return rc;
    rc = atp_store_set(ctx->store, req.sku, req.loc, req.on_hand, req.seq);
    if (rc)
        return rc;
    RETURN_EMIT(out, atp_proto_enc_empty_resp(P, C, ATP_OP_SET, f->id));
}

static void stat_emit(void *arg, const char *name, int64_t value)
{
    atp_proto_enc_stats_add(arg, atp_slice_cstr(name), value);
}

/* Every store counter, then every registered source, as name/value pairs. */
static void stats_collect(struct atp_cmd_ctx *ctx, struct atp_proto_stats_enc *e)
{
    struct atp_store_stats s;
    atp_store_stats(ctx->store, &s);
    static const struct {
        const char *name;
        size_t off;
    } fields[] = {
#define F(x) {#x, offsetof(struct atp_store_stats, x)}
        F(items),
        F(skus),
        F(locations),
        F(overrides),
        F(reservations_live),
        F(reservations_held),
        F(reservations_committed),
        F(reserves_granted),
        F(reserves_rejected),
        F(reserves_replayed),
        F(commits),
        F(releases),
        F(expirations),
        F(fulfillments),
        F(lateness_max_us),
        F(lateness_sum_us),
        F(feed_records),
        F(feed_expired),
#undef F
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        uint64_t v;
        memcpy(&v, (const char *)&s + fields[i].off, sizeof(v));
        stat_emit(e, fields[i].name, (int64_t)v);
    }
    /* Expiry lateness histogram: bucket k counts lateness <= 64us * 2^k. */
    for (unsigned k = 0; k < ATP_LATENESS_BUCKETS; k++) {
        char name[48];
        if (k + 1 < ATP_LATENESS_BUCKETS)
            snprintf(name, sizeof(name), "lateness_le_%lluus", 64ULL << k);
        else
            snprintf(name, sizeof(name), "lateness_le_inf");
        stat_emit(e, name, (int64_t)s.lateness_buckets[k]);
    }
    stat_emit(e, "bytes_reserved", (int64_t)s.bytes_reserved);
    for (uint32_t i = 0; i < ctx->nsources && i < ATP_CMD_MAX_SOURCES; i++)
        if (ctx->sources[i].collect)
            ctx->sources[i].collect(ctx->sources[i].arg, stat_emit, e);
}

static int op_stats(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                    uint64_t now_us)
{
    int rc = atp_proto_dec_stats_req(f);
    if (rc)
        return rc;
    /* Sources may add a pair between two passes: retry a few times with slack. */
    for (int attempt = 0; attempt < 4; attempt++) {
        uint8_t *p = out->data ? out->data + out->len : NULL;
        size_t cap = out->cap - out->len;
        struct atp_proto_stats_enc e;
        atp_proto_enc_stats_begin(&e, p, cap, f->id);
        stats_collect(ctx, &e);
        ssize_t n = atp_proto_enc_stats_end(&e);
        if (n < 0)
            return (int)n;
        if ((size_t)n <= cap) {
            out->len += (size_t)n;
            return 0;
        }
        if (!atp_buf_reserve(out, (size_t)n + 1024))
            return -ENOMEM;
    }
    return ATP_EINTERNAL;
}

static const struct {
    op_fn fn;
} ops[ATP_OP_RESPONSE] = {
    [ATP_OP_HELLO] = {op_hello},     [ATP_OP_PING] = {op_ping},
    [ATP_OP_GET] = {op_get},         [ATP_OP_MGET] = {op_mget},
    [ATP_OP_CHANGES] = {op_changes}, [ATP_OP_RESERVE] = {op_reserve},
    [ATP_OP_COMMIT] = {op_by_id},    [ATP_OP_RELEASE] = {op_by_id},
    [ATP_OP_EXTEND] = {op_by_id},    [ATP_OP_GET_RESERVATION] = {op_get_reservation},
    [ATP_OP_ADJUST] = {op_adjust},   [ATP_OP_SET] = {op_set},
    [ATP_OP_STATS] = {op_stats},
};

/* --- entry point ---------------------------------------------------------- */

static int metrics_op(uint8_t opcode)
{
    switch (opcode) {
    case ATP_OP_HELLO:
        return ATP_MOP_HELLO;
    case ATP_OP_PING:
        return ATP_MOP_PING;
    case ATP_OP_GET:
        return ATP_MOP_GET;
    case ATP_OP_MGET:
        return ATP_MOP_MGET;
    case ATP_OP_CHANGES:
        return ATP_MOP_CHANGES;
    case ATP_OP_RESERVE:
        return ATP_MOP_RESERVE;
    case ATP_OP_COMMIT:
        return ATP_MOP_COMMIT;
    case ATP_OP_RELEASE:
        return ATP_MOP_RELEASE;
    case ATP_OP_EXTEND:
        return ATP_MOP_EXTEND;
    case ATP_OP_GET_RESERVATION:
        return ATP_MOP_GET_RESERVATION;
    case ATP_OP_ADJUST:
        return ATP_MOP_ADJUST;
    case ATP_OP_SET:
        return ATP_MOP_SET;
    case ATP_OP_STATS:
        return ATP_MOP_STATS;
    default:
        return ATP_MOP_OTHER;
    }
}

/* Answer a frame atp_proto_frame refused (size < 0): 0 or -ENOMEM. */
static int framing_error(struct atp_buf *out, ssize_t size, const struct atp_frame *f,
                         uint32_t max_frame)
{
    char detail[96];
    if (size == ATP_EBADMAGIC)
        return append_error(out, ATP_OP_NONE, 0, ATP_EBADMAGIC, NULL, NULL, 0);
    if (size == ATP_EVERSION)
        snprintf(detail, sizeof(detail), "version %u, this server speaks %u", f->version,
                 ATP_PROTO_VERSION);
    else
        snprintf(detail, sizeof(detail), "frame of %llu bytes, the limit is %u",
                 (unsigned long long)f->body_len + ATP_PROTO_HDR_SIZE, max_frame);
    return append_error(out, f->opcode, f->id, (int)size, detail, NULL, 0);
}

/*
 * Execute one whole frame and append its response. Returns 0, OP_HELD when
 * the frame is held (nothing appended, see struct atp_wait), or -ENOMEM
 * when not even an error response fitted. *ret_code is the request's status
 * for the metrics.
 */
static int run_frame(struct atp_cmd_ctx *ctx, const struct atp_frame *f, struct atp_buf *out,
                     uint64_t now_us, int *ret_code)
{
    int rc, code;
    size_t start = out->len;
    if (f->opcode < ATP_OP_RESPONSE && ops[f->opcode].fn) {
        rc = code = ops[f->opcode].fn(ctx, f, out, now_us);
        if (rc == OP_HELD)
            return OP_HELD; /* no answer yet, no metrics */
        if (rc)
            rc = append_error(out, f->opcode, f->id, rc, NULL, NULL, 0);
    } else {
        char detail[32];
        snprintf(detail, sizeof(detail), "opcode 0x%02x", f->opcode);
        code = ATP_EUNKNOWNOP;
        rc = append_error(out, f->opcode, f->id, ATP_EUNKNOWNOP, detail, NULL, 0);
    }
    /* A handler that appended its own error (RESERVE's shortfalls) returned
     * 0; its status is read back from the frame it wrote. GET never does. */
    struct atp_frame rf;
    if (code == 0 && rc == 0 && f->opcode != ATP_OP_GET &&
        atp_proto_frame(out->data + start, out->len - start, UINT32_MAX, &rf) > 0 && rf.status)
        code = atp_error_from_wire(rf.status);
    *ret_code = code;
    return rc ? -ENOMEM : 0;
}

ssize_t atp_cmd_handle(struct atp_cmd_ctx *ctx, const uint8_t *in, size_t len, struct atp_buf *out,
                       uint64_t now_us)
{
    uint32_t max_frame = ctx->max_frame ? ctx->max_frame : ATP_PROTO_MAX_FRAME;
    struct atp_frame f;
    ssize_t size = atp_proto_frame(in, len, max_frame, &f);
    if (size == 0)
        return 0;
    if (size < 0) /* broken framing: answer, and let the caller close */
        return framing_error(out, size, &f, max_frame) ? -ENOMEM : size;
    uint64_t t0 = atp_metrics_now_ns();
    int code;
    if (ctx->wait)
        ctx->wait->parked = false;
    int rc = run_frame(ctx, &f, out, now_us, &code);
    if (rc == OP_HELD)
        return 0;
    atp_metrics_request(ATP_MPROTO_BIN, metrics_op(f.opcode), code, atp_metrics_now_ns() - t0);
    return rc ? -ENOMEM : size;
}

/* --- pipelined frames: consecutive GETs read together -------------------- */

/*
 * Up to GET_BATCH consecutive GET frames are decoded first, their item
 * lookups go to the store in one atp_store_get_many call (which overlaps
 * the cache misses of independent keys: 2-3 dependent misses per key, so
 * the batch costs little more than its slowest key), then the responses
 * are appended in frame order. A batch ends at any other opcode, so a
 * write in the same buffer is seen by the GETs after it and not by those
 * before, as if the frames ran one by one.
 */
#define GET_BATCH 64

enum { G_ITEM, G_NETWORK, G_ERROR };

struct get_frame {
    struct atp_proto_get_req req; /* decoded; slices into the input */
    uint64_t id;
    uint8_t kind; /* how it is answered, below; set by batch_run */
    int rc;       /* G_ERROR: the answer; after batch_run: every frame's status */
    uint32_t idx; /* G_ITEM: index into reqs; G_NETWORK: the channel id */
};

struct get_batch {
    uint32_t n, nreq;
    struct get_frame f[GET_BATCH];
    struct atp_get_req reqs[GET_BATCH];
    struct atp_breakdown res[GET_BATCH];
    int rcs[GET_BATCH];
};

/* Decode a GET frame into the batch (a decode error is kept as its answer,
 * exactly as op_get would return it). The decoded key is looked at only in
 * batch_run: reading it back at once stalled on store forwarding. */
static void batch_add(struct get_batch *b, const struct atp_frame *f)
{
    struct get_frame *g = &b->f[b->n++];
    g->id = f->id;
    g->rc = atp_proto_dec_get_req(f, &g->req);
}

/* Byte equality of two short names, inline (a channel name is a few bytes:
 * cheaper than a call to memcmp). */
static inline bool same_name(struct atp_slice a, struct atp_slice b)
{
    if (a.len != b.len)
        return false;
    for (uint32_t i = 0; i < a.len; i++)
        if (a.p[i] != b.p[i])
            return false;
    return true;
}

/* Sort the decoded frames: channel errors, network reads, item reads. The
 * channels are fixed when the store is made, so looking them up here
 * rather than frame by frame changes nothing, and a frame naming the same
 * channel as the last one found reuses its id (the lookup and its memcmp
 * were a tenth of this path's instructions). */
static void batch_classify(struct atp_cmd_ctx *ctx, struct get_batch *b)
{
    struct atp_slice last = {NULL, 0};
    uint32_t last_id = 0;
    bool have_last = false;
    for (uint32_t i = 0; i < b->n; i++) {
        struct get_frame *g = &b->f[i];
        uint32_t channel = last_id;
        if (g->rc == 0 && !(have_last && same_name(g->req.key.channel, last))) {
            g->rc = atp_store_channel_find(ctx->store, g->req.key.channel, &channel);
            if (g->rc == 0) {
                last = g->req.key.channel;
                last_id = channel;
                have_last = true;
            }
        }
        if (g->rc) {
            g->kind = G_ERROR;
        } else if (g->req.key.loc.len == 0) {
            g->kind = G_NETWORK;
            g->idx = channel;
        } else {
            g->kind = G_ITEM;
            g->idx = b->nreq++;
            b->reqs[g->idx] = (struct atp_get_req){g->req.key.sku, g->req.key.loc, channel};
        }
    }
}

/*
 * Read and answer the batch; every frame's metrics carry `t_begin` to the
 * end of the batch (each response exists only then). Returns 0, or
 * -ENOMEM with *ret_done frames answered before the failure.
 */
static int batch_run(struct atp_cmd_ctx *ctx, struct get_batch *b, struct atp_buf *out,
                     uint64_t t_begin, uint64_t *ret_t_end, uint32_t *ret_done)
{
    batch_classify(ctx, b);
    if (b->nreq)
        atp_store_get_many(ctx->store, b->reqs, b->nreq, b->res, b->rcs);
    int err = 0;
    uint32_t i;
    for (i = 0; i < b->n && !err; i++) {
        struct get_frame *g = &b->f[i];
        struct atp_proto_get_resp resp = {.breakdown = false};
        if (g->kind == G_ITEM) {
            g->rc = b->rcs[g->idx];
            resp.b = b->res[g->idx];
        } else if (g->kind == G_NETWORK) {
            g->rc = atp_store_get_network(ctx->store, g->req.key.sku, g->idx, &resp.b);
        }
        ssize_t n = -1;
        if (g->rc == 0) {
            /* g->req is written only when the frame decoded (rc 0 then). */
            resp.breakdown = g->req.breakdown;
            size_t cap = out->cap - out->len;
            uint8_t *p = out->data ? out->data + out->len : NULL;
            n = atp_proto_enc_get_resp(p, cap, g->id, &resp);
            if (n >= 0 && (size_t)n > cap) {
                p = atp_buf_reserve(out, (size_t)n);
                n = p ? atp_proto_enc_get_resp(p, (size_t)n, g->id, &resp) : -ENOMEM;
            }
            if (n >= 0)
                out->len += (size_t)n;
            else
                g->rc = (int)n; /* answered as an error, like op_get's failed emit */
        }
        if (g->rc && append_error(out, ATP_OP_GET, g->id, g->rc, NULL, NULL, 0))
            err = -ENOMEM;
    }
    uint64_t t_end = atp_metrics_now_ns();
    for (uint32_t k = 0; k < i; k++)
        atp_metrics_request(ATP_MPROTO_BIN, ATP_MOP_GET, b->f[k].rc, t_end - t_begin);
    *ret_t_end = t_end;
    *ret_done = i;
    b->n = b->nreq = 0;
    return err;
}

size_t atp_cmd_handle_many(struct atp_cmd_ctx *ctx, const uint8_t *in, size_t len,
                           struct atp_buf *out, uint64_t now_us, size_t out_stop, uint64_t *io_t_ns,
                           uint32_t *ret_frames, int *ret_err)
{
    uint32_t max_frame = ctx->max_frame ? ctx->max_frame : ATP_PROTO_MAX_FRAME;
    struct get_batch b;
    b.n = b.nreq = 0;
    size_t off = 0, batch_off = 0;
    uint32_t frames = 0;
    int err = 0;
    /* One clock read per frame (or per GET batch): each frame's duration
     * runs from the end of the previous one, the first from *io_t_ns (the
     * caller's reading, which saves one per call) or from now. */
    uint64_t t = io_t_ns && *io_t_ns ? *io_t_ns : atp_metrics_now_ns();
    if (ctx->wait)
        ctx->wait->parked = false;
    for (;;) {
        struct atp_frame f;
        ssize_t size = 0;
        /* The output limit is looked at before each frame outside a batch:
         * a batch may overshoot it by its GET responses (<= GET_BATCH). */
        if (b.n == 0 && out->len >= out_stop)
            break;
        if (off < len && b.n < GET_BATCH)
            size = atp_proto_frame(in + off, len - off, max_frame, &f);
        if (size > 0 && f.opcode == ATP_OP_GET) {
            if (b.n == 0)
                batch_off = off;
            batch_add(&b, &f);
            off += (size_t)size;
            continue;
        }
        if (b.n) {
            uint32_t done;
            err = batch_run(ctx, &b, out, t, &t, &done);
            frames += done;
            if (err) {
                off = batch_off; /* the caller closes: what was consumed no longer matters */
                break;
            }
            continue; /* look at the limit, then this frame again */
        }
        if (size == 0)
            break;
        frames++;
        if (size < 0) {
            err = framing_error(out, size, &f, max_frame) ? -ENOMEM : (int)size;
            break;
        }
        int code;
        err = run_frame(ctx, &f, out, now_us, &code);
        if (err == OP_HELD) {
            err = 0;
            frames--; /* held, not handled: the caller keeps it */
            break;
        }
        uint64_t t1 = atp_metrics_now_ns();
        atp_metrics_request(ATP_MPROTO_BIN, metrics_op(f.opcode), code, t1 - t);
        t = t1;
        if (err)
            break;
        off += (size_t)size;
    }
    if (io_t_ns)
        *io_t_ns = t;
    *ret_frames = frames;
    *ret_err = err;
    return off;
}
