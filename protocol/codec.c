/*
 * codec.c - encoder and decoder of the atpd binary protocol (PROTOCOL.md).
 *
 * Pure: no malloc, no I/O, no globals, no clock. Knows frame and body layouts
 * and the protocol limits; knows nothing about what the operations do.
 *
 * Two tiny cursors do all the work. The writer (struct wr) always advances
 * its position but stores bytes only while they fit, so one pass both writes
 * a frame and measures it (the snprintf contract of proto.h). The reader
 * (struct rd) never reads past its end: every get checks the remaining length
 * first and latches `bad`, so a decoder checks once at the end instead of
 * after every field. Integers are assembled from bytes, which compilers turn
 * into single unaligned loads on little-endian machines.
 */
#include "atp/proto.h"

#include <string.h>

/* --- writer ------------------------------------------------------------- */

struct wr {
    uint8_t *p;
    size_t cap;
    size_t pos;
    bool bad; /* a value cannot be represented */
};

static void put_bytes(struct wr *w, const void *src, size_t n)
{
    if (n && w->pos <= w->cap && n <= w->cap - w->pos)
        memcpy(w->p + w->pos, src, n);
    w->pos += n;
}

static void put_u8(struct wr *w, uint8_t v)
{
    if (w->pos < w->cap)
        w->p[w->pos] = v;
    w->pos++;
}

/* Fixed-width little-endian stores: one unaligned store each on
 * little-endian machines (a byte loop with a variable width was not always
 * merged, and the header of every response goes through here). */
static inline void store_le16(uint8_t *p, uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap16(v);
#endif
    memcpy(p, &v, sizeof(v));
}

static inline void store_le32(uint8_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, sizeof(v));
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, sizeof(v));
}

/* Room for n more bytes at the writer's position. */
static inline bool wr_fits(const struct wr *w, size_t n)
{
    return w->pos <= w->cap && n <= w->cap - w->pos;
}

static void put_u16(struct wr *w, uint16_t v)
{
    if (wr_fits(w, 2))
        store_le16(w->p + w->pos, v);
    w->pos += 2;
}

static void put_u32(struct wr *w, uint32_t v)
{
    if (wr_fits(w, 4))
        store_le32(w->p + w->pos, v);
    w->pos += 4;
}

static void put_u64(struct wr *w, uint64_t v)
{
    if (wr_fits(w, 8))
        store_le64(w->p + w->pos, v);
    w->pos += 8;
}

static void put_i64(struct wr *w, int64_t v)
{
    put_u64(w, (uint64_t)v);
}

static void put_count(struct wr *w, uint32_t n)
{
    if (n > ATP_PROTO_MAX_COUNT)
        w->bad = true;
    put_u16(w, (uint16_t)n);
}

static void put_str8(struct wr *w, struct atp_slice s)
{
    if (s.len > 255) {
        w->bad = true;
        return;
    }
    put_u8(w, (uint8_t)s.len);
    put_bytes(w, s.p, s.len);
}

static void put_str16(struct wr *w, struct atp_slice s)
{
    if (s.len > 65535) {
        w->bad = true;
        return;
    }
    put_u16(w, (uint16_t)s.len);
    put_bytes(w, s.p, s.len);
}

/* The 20 header bytes, written whole (the caller checked the room). */
static inline void hdr_store(uint8_t *p, uint8_t opcode, uint16_t flags, uint16_t status,
                             uint64_t id, uint32_t body_len)
{
    p[0] = ATP_PROTO_MAGIC0;
    p[1] = ATP_PROTO_MAGIC1;
    p[2] = ATP_PROTO_VERSION;
    p[3] = opcode;
    store_le16(p + 4, flags);
    store_le16(p + 6, status);
    store_le64(p + 8, id);
    store_le32(p + 16, body_len);
}

/* Start a frame: the header, with body_len patched by wr_end. */
static void wr_begin(struct wr *w, uint8_t *buf, size_t cap, uint8_t opcode, uint16_t flags,
                     uint16_t status, uint64_t id)
{
    w->p = buf;
    w->cap = buf ? cap : 0;
    w->pos = 0;
    w->bad = false;
    /* Without room for the header the frame does not fit, and an encoder's
     * buffer is then unspecified (proto.h): only the size is counted. */
    if (w->cap >= ATP_PROTO_HDR_SIZE)
        hdr_store(buf, opcode, flags, status, id, 0);
    w->pos = ATP_PROTO_HDR_SIZE;
}

static ssize_t wr_end(struct wr *w)
{
    if (w->bad)
        return ATP_EINVAL;
    size_t body = w->pos - ATP_PROTO_HDR_SIZE;
    if (body > UINT32_MAX)
        return ATP_ETOOLARGE;
    if (w->pos <= w->cap)
        store_le32(w->p + 16, (uint32_t)body);
    return (ssize_t)w->pos;
}

/* --- reader ------------------------------------------------------------- */

struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
    bool bad;
};

static struct rd rd_body(const struct atp_frame *f)
{
    return (struct rd){.p = f->body, .len = f->body_len, .pos = 0, .bad = false};
}

static uint64_t load_le(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint16_t load_le16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap16(v);
#endif
    return v;
}

static inline uint32_t load_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static bool rd_has(struct rd *r, size_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint64_t get_le(struct rd *r, unsigned n)
{
    if (!rd_has(r, n))
        return 0;
    uint64_t v = load_le(r->p + r->pos, n);
    r->pos += n;
    return v;
}

static uint8_t get_u8(struct rd *r)
{
    return (uint8_t)get_le(r, 1);
}

static uint16_t get_u16(struct rd *r)
{
    return (uint16_t)get_le(r, 2);
}

static uint32_t get_u32(struct rd *r)
{
    return (uint32_t)get_le(r, 4);
}

static uint64_t get_u64(struct rd *r)
{
    return get_le(r, 8);
}

static int64_t get_i64(struct rd *r)
{
    return (int64_t)get_le(r, 8);
}

static struct atp_slice get_bytes(struct rd *r, size_t n)
{
    struct atp_slice s = {NULL, 0};
    if (!rd_has(r, n))
        return s;
    s.p = (const char *)r->p + r->pos;
    s.len = (uint32_t)n;
    r->pos += n;
    return s;
}

static struct atp_slice get_str8(struct rd *r)
{
    size_t n = get_u8(r);
    return get_bytes(r, n);
}

static struct atp_slice get_str16(struct rd *r)
{
    size_t n = get_u16(r);
    return get_bytes(r, n);
}

static void skip(struct rd *r, size_t n)
{
    if (rd_has(r, n))
        r->pos += n;
}

static void skip_str8(struct rd *r)
{
    size_t n = get_u8(r);
    skip(r, n);
}

/* The body was consumed exactly. */
static int rd_end(const struct rd *r)
{
    return r->bad || r->pos != r->len ? ATP_EMALFORMED : 0;
}

/* Header checks shared by the request decoders. */
static int req_check(const struct atp_frame *f, uint16_t allowed_flags)
{
    if (f->status != 0 || (f->flags & ~allowed_flags))
        return ATP_EMALFORMED;
    return 0;
}

/* --- frames ------------------------------------------------------------- */

const char *atp_proto_op_name(unsigned opcode)
{
    switch (opcode & ~(unsigned)ATP_OP_RESPONSE) {
    case ATP_OP_NONE:
        return opcode & ATP_OP_RESPONSE ? "ERROR" : NULL;
    case ATP_OP_HELLO:
        return "HELLO";
    case ATP_OP_PING:
        return "PING";
    case ATP_OP_GET:
        return "GET";
    case ATP_OP_MGET:
        return "MGET";
    case ATP_OP_CHANGES:
        return "CHANGES";
    case ATP_OP_RESERVE:
        return "RESERVE";
    case ATP_OP_COMMIT:
        return "COMMIT";
    case ATP_OP_RELEASE:
        return "RELEASE";
    case ATP_OP_EXTEND:
        return "EXTEND";
    case ATP_OP_GET_RESERVATION:
        return "GET_RESERVATION";
    case ATP_OP_ADJUST:
        return "ADJUST";
    case ATP_OP_SET:
        return "SET";
    case ATP_OP_STATS:
        return "STATS";
    }
    return NULL;
}

ssize_t atp_proto_frame(const uint8_t *in, size_t len, uint32_t max_frame, struct atp_frame *ret)
{
    /* Reject a wrong magic from its first byte: text sent to this port gets
     * an answer at once instead of hanging until 20 bytes arrive. */
    if ((len >= 1 && in[0] != ATP_PROTO_MAGIC0) || (len >= 2 && in[1] != ATP_PROTO_MAGIC1))
        return ATP_EBADMAGIC;
    if (len < ATP_PROTO_HDR_SIZE)
        return 0;
    if (max_frame == 0)
        max_frame = ATP_PROTO_MAX_FRAME;

    struct atp_frame f = {
        .version = in[2],
        .opcode = in[3],
        .flags = load_le16(in + 4),
        .status = load_le16(in + 6),
        .id = load_le64(in + 8),
        .body_len = load_le32(in + 16),
        .body = NULL,
    };
    if (f.version != ATP_PROTO_VERSION) {
        *ret = f;
        return ATP_EVERSION;
    }
    /* 64-bit sum: body_len + 20 cannot wrap. */
    uint64_t size = (uint64_t)f.body_len + ATP_PROTO_HDR_SIZE;
    if (size > max_frame) {
        *ret = f;
        return ATP_ETOOLARGE;
    }
    if (len < size)
        return 0;
    /* Field by field: the caller reads the opcode and id at once, and a
     * whole-struct copy (vector stores) made those loads wait. */
    ret->version = f.version;
    ret->opcode = f.opcode;
    ret->flags = f.flags;
    ret->status = f.status;
    ret->id = f.id;
    ret->body_len = f.body_len;
    ret->body = f.body_len ? in + ATP_PROTO_HDR_SIZE : NULL;
    return (ssize_t)size;
}

size_t atp_proto_frame_need(const uint8_t *in, size_t len)
{
    if (len < ATP_PROTO_HDR_SIZE)
        return ATP_PROTO_HDR_SIZE;
    return ATP_PROTO_HDR_SIZE + (size_t)load_le32(in + 16);
}

ssize_t atp_proto_enc_hdr(uint8_t *buf, size_t cap, uint8_t opcode, uint16_t flags, uint16_t status,
                          uint64_t id, uint32_t body_len)
{
    struct wr w;
    wr_begin(&w, buf, cap, opcode, flags, status, id);
    if (w.pos <= w.cap)
        store_le32(w.p + 16, body_len);
    return (ssize_t)w.pos;
}

/* --- requests ----------------------------------------------------------- */

int atp_proto_dec_hello_req(const struct atp_frame *f, struct atp_proto_hello_req *ret)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_hello_req v;
    v.min_version = get_u8(&r);
    v.max_version = get_u8(&r);
    v.client = get_str16(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_hello_req(uint8_t *buf, size_t cap, uint64_t id,
                                const struct atp_proto_hello_req *req)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_HELLO, 0, 0, id);
    put_u8(&w, req->min_version);
    put_u8(&w, req->max_version);
    put_str16(&w, req->client);
    return wr_end(&w);
}

int atp_proto_dec_ping_req(const struct atp_frame *f, struct atp_slice *ret_payload)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    ret_payload->p = (const char *)f->body;
    ret_payload->len = f->body_len;
    return 0;
}

static ssize_t enc_opaque(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id,
                          struct atp_slice payload)
{
    struct wr w;
    wr_begin(&w, buf, cap, opcode, 0, 0, id);
    put_bytes(&w, payload.p, payload.len);
    return wr_end(&w);
}

ssize_t atp_proto_enc_ping_req(uint8_t *buf, size_t cap, uint64_t id, struct atp_slice payload)
{
    return enc_opaque(buf, cap, ATP_OP_PING, id, payload);
}

static struct atp_proto_key get_key(struct rd *r)
{
    struct atp_proto_key k;
    k.sku = get_str8(r);
    k.channel = get_str8(r);
    k.loc = get_str8(r);
    return k;
}

static void put_key(struct wr *w, const struct atp_proto_key *k)
{
    put_str8(w, k->sku);
    put_str8(w, k->channel);
    put_str8(w, k->loc);
}

/*
 * One str8 at *pos of a body of len bytes: its offset and length, and *pos
 * moved past it; false if it runs past the end.
 */
static inline bool str8_at(const uint8_t *p, size_t len, size_t *pos, size_t *ret_off,
                           size_t *ret_n)
{
    if (*pos >= len)
        return false;
    size_t n = p[*pos], off = *pos + 1;
    if (n > len - off)
        return false;
    *ret_off = off;
    *ret_n = n;
    *pos = off + n;
    return true;
}

/*
 * The body of a GET is three str8: read with one bound check each instead
 * of the reader's latch (pipelined lookups decode one per frame), kept in
 * scalars and stored field by field (building the slices on the stack and
 * copying them out stalled on store forwarding: half this function's time).
 * Same answers as get_key + rd_end: EMALFORMED for a string that runs past
 * the end or for bytes left over, *ret untouched then.
 */
int atp_proto_dec_get_req(const struct atp_frame *f, struct atp_proto_get_req *ret)
{
    int rc = req_check(f, ATP_FLAG_BREAKDOWN);
    if (rc)
        return rc;
    const uint8_t *p = f->body;
    size_t len = f->body_len, pos = 0;
    size_t o_sku, n_sku, o_ch, n_ch, o_loc, n_loc;
    if (!str8_at(p, len, &pos, &o_sku, &n_sku) || !str8_at(p, len, &pos, &o_ch, &n_ch) ||
        !str8_at(p, len, &pos, &o_loc, &n_loc) || pos != len)
        return ATP_EMALFORMED;
    ret->key.sku.p = (const char *)p + o_sku;
    ret->key.sku.len = (uint32_t)n_sku;
    ret->key.channel.p = (const char *)p + o_ch;
    ret->key.channel.len = (uint32_t)n_ch;
    ret->key.loc.p = (const char *)p + o_loc;
    ret->key.loc.len = (uint32_t)n_loc;
    ret->breakdown = (f->flags & ATP_FLAG_BREAKDOWN) != 0;
    return 0;
}

ssize_t atp_proto_enc_get_req(uint8_t *buf, size_t cap, uint64_t id,
                              const struct atp_proto_get_req *req)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_GET, req->breakdown ? ATP_FLAG_BREAKDOWN : 0, 0, id);
    put_key(&w, &req->key);
    return wr_end(&w);
}

int atp_proto_dec_mget_req(const struct atp_frame *f, uint32_t max_keys,
                           struct atp_proto_mget_req *ret)
{
    int rc = req_check(f, ATP_FLAG_BREAKDOWN);
    if (rc)
        return rc;
    if (max_keys == 0)
        max_keys = ATP_PROTO_MAX_KEYS;
    struct rd r = rd_body(f);
    uint32_t count = get_u16(&r);
    if (r.bad)
        return ATP_EMALFORMED;
    if (count > max_keys)
        return ATP_ETOOMANY;
    size_t first = r.pos;
    for (uint32_t i = 0; i < count && !r.bad; i++) {
        skip_str8(&r);
        skip_str8(&r);
        skip_str8(&r);
    }
    if ((rc = rd_end(&r)))
        return rc;
    ret->count = count;
    ret->breakdown = (f->flags & ATP_FLAG_BREAKDOWN) != 0;
    ret->keys = f->body + first;
    ret->end = f->body + f->body_len;
    return 0;
}

bool atp_proto_mget_next(struct atp_proto_mget_req *req, struct atp_proto_key *ret)
{
    if (req->keys == NULL || req->keys >= req->end)
        return false;
    /* Validated by atp_proto_dec_mget_req; the reader still bounds itself. */
    struct rd r = {.p = req->keys, .len = (size_t)(req->end - req->keys), .pos = 0, .bad = false};
    struct atp_proto_key k = get_key(&r);
    if (r.bad)
        return false;
    req->keys += r.pos;
    *ret = k;
    return true;
}

ssize_t atp_proto_enc_mget_req(uint8_t *buf, size_t cap, uint64_t id, bool breakdown,
                               const struct atp_proto_key *keys, uint32_t count)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_MGET, breakdown ? ATP_FLAG_BREAKDOWN : 0, 0, id);
    put_count(&w, count);
    for (uint32_t i = 0; i < count && !w.bad; i++)
        put_key(&w, &keys[i]);
    return wr_end(&w);
}

int atp_proto_dec_changes_req(const struct atp_frame *f, struct atp_proto_changes_req *ret)
{
    int rc = req_check(f, ATP_FLAG_NETWORK | ATP_FLAG_WAIT);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_changes_req v;
    v.channel = get_str8(&r);
    v.cursor = get_u64(&r);
    v.max = get_u16(&r);
    v.wait_ms = (f->flags & ATP_FLAG_WAIT) ? get_u32(&r) : 0;
    v.network = (f->flags & ATP_FLAG_NETWORK) != 0;
    if ((rc = rd_end(&r)))
        return rc;
    if ((f->flags & ATP_FLAG_WAIT) && v.wait_ms == 0)
        return ATP_EMALFORMED; /* a wait of 0 is written without the flag */
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_changes_req(uint8_t *buf, size_t cap, uint64_t id,
                                  const struct atp_proto_changes_req *req)
{
    struct wr w;
    uint16_t flags = (req->network ? ATP_FLAG_NETWORK : 0) | (req->wait_ms ? ATP_FLAG_WAIT : 0);
    wr_begin(&w, buf, cap, ATP_OP_CHANGES, flags, 0, id);
    put_str8(&w, req->channel);
    put_u64(&w, req->cursor);
    put_count(&w, req->max);
    if (req->wait_ms)
        put_u32(&w, req->wait_ms);
    return wr_end(&w);
}

int atp_proto_dec_reserve_req(const struct atp_frame *f, struct atp_proto_reserve_req *ret)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_slice key = get_str8(&r);
    struct atp_slice channel = get_str8(&r);
    uint64_t ttl = get_u64(&r);
    uint32_t n = get_u16(&r);
    if (r.bad)
        return ATP_EMALFORMED;
    if (n > ATP_PROTO_MAX_LINES)
        return ATP_ETOOMANY;
    /* Decode lines straight into ret only once the whole body checks out:
     * a first pass measures, so *ret stays untouched on failure. */
    size_t first = r.pos;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        skip_str8(&r);
        skip_str8(&r);
        skip(&r, 8);
    }
    if ((rc = rd_end(&r)))
        return rc;
    r.pos = first;
    ret->key = key;
    ret->channel = channel;
    ret->ttl_ms = ttl;
    ret->nlines = n;
    for (uint32_t i = 0; i < n; i++) {
        ret->lines[i].sku = get_str8(&r);
        ret->lines[i].loc = get_str8(&r);
        ret->lines[i].qty = get_i64(&r);
    }
    return 0;
}

ssize_t atp_proto_enc_reserve_req(uint8_t *buf, size_t cap, uint64_t id, struct atp_slice key,
                                  struct atp_slice channel, uint64_t ttl_ms,
                                  const struct atp_line_req *lines, uint32_t nlines)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_RESERVE, 0, 0, id);
    put_str8(&w, key);
    put_str8(&w, channel);
    put_u64(&w, ttl_ms);
    put_count(&w, nlines);
    for (uint32_t i = 0; i < nlines && !w.bad; i++) {
        put_str8(&w, lines[i].sku);
        put_str8(&w, lines[i].loc);
        put_i64(&w, lines[i].qty);
    }
    return wr_end(&w);
}

int atp_proto_dec_id_req(const struct atp_frame *f, struct atp_proto_id_req *ret)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_id_req v = {0, 0};
    v.res_id = get_u64(&r);
    if (f->opcode == ATP_OP_EXTEND)
        v.ttl_ms = get_u64(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_id_req(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id,
                             const struct atp_proto_id_req *req)
{
    if (opcode != ATP_OP_COMMIT && opcode != ATP_OP_RELEASE && opcode != ATP_OP_EXTEND)
        return ATP_EINVAL;
    struct wr w;
    wr_begin(&w, buf, cap, opcode, 0, 0, id);
    put_u64(&w, req->res_id);
    if (opcode == ATP_OP_EXTEND)
        put_u64(&w, req->ttl_ms);
    return wr_end(&w);
}

int atp_proto_dec_getres_req(const struct atp_frame *f, struct atp_proto_getres_req *ret)
{
    int rc = req_check(f, ATP_FLAG_BY_KEY);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_getres_req v = {.by_key = (f->flags & ATP_FLAG_BY_KEY) != 0};
    if (v.by_key)
        v.key = get_str8(&r);
    else
        v.res_id = get_u64(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_getres_req(uint8_t *buf, size_t cap, uint64_t id,
                                 const struct atp_proto_getres_req *req)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_GET_RESERVATION, req->by_key ? ATP_FLAG_BY_KEY : 0, 0, id);
    if (req->by_key)
        put_str8(&w, req->key);
    else
        put_u64(&w, req->res_id);
    return wr_end(&w);
}

int atp_proto_dec_adjust_req(const struct atp_frame *f, struct atp_proto_adjust_req *ret)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_adjust_req v;
    v.sku = get_str8(&r);
    v.loc = get_str8(&r);
    v.delta = get_i64(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_adjust_req(uint8_t *buf, size_t cap, uint64_t id,
                                 const struct atp_proto_adjust_req *req)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_ADJUST, 0, 0, id);
    put_str8(&w, req->sku);
    put_str8(&w, req->loc);
    put_i64(&w, req->delta);
    return wr_end(&w);
}

int atp_proto_dec_set_req(const struct atp_frame *f, struct atp_proto_set_req *ret)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_set_req v;
    v.sku = get_str8(&r);
    v.loc = get_str8(&r);
    v.on_hand = get_i64(&r);
    v.seq = get_u64(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_set_req(uint8_t *buf, size_t cap, uint64_t id,
                              const struct atp_proto_set_req *req)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_SET, 0, 0, id);
    put_str8(&w, req->sku);
    put_str8(&w, req->loc);
    put_i64(&w, req->on_hand);
    put_u64(&w, req->seq);
    return wr_end(&w);
}

int atp_proto_dec_stats_req(const struct atp_frame *f)
{
    int rc = req_check(f, 0);
    if (rc)
        return rc;
    return f->body_len ? ATP_EMALFORMED : 0;
}

ssize_t atp_proto_enc_stats_req(uint8_t *buf, size_t cap, uint64_t id)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_STATS, 0, 0, id);
    return wr_end(&w);
}

/* --- responses ---------------------------------------------------------- */

/* A success response of `op` with at most `allowed_flags`. */
static int resp_check(const struct atp_frame *f, uint8_t op, uint16_t allowed_flags)
{
    if (f->opcode != (ATP_OP_RESPONSE | op) || f->status != 0 || (f->flags & ~allowed_flags))
        return ATP_EMALFORMED;
    return 0;
}

int atp_proto_dec_error(const struct atp_frame *f, struct atp_proto_error *ret)
{
    if (f->status == 0 || !(f->opcode & ATP_OP_RESPONSE) || f->flags != 0)
        return ATP_EMALFORMED;
    struct rd r = rd_body(f);
    struct atp_proto_error v = {.code = atp_error_from_wire(f->status)};
    v.message = get_str16(&r);
    v.nshort = 0;
    v.shortfall = NULL;
    /* Shortfalls: RESERVE answered with EINSUFFICIENT always carries them,
     * nothing else does. */
    if (f->opcode == (ATP_OP_RESPONSE | ATP_OP_RESERVE) && v.code == ATP_EINSUFFICIENT) {
        v.nshort = get_u16(&r);
        if (rd_has(&r, 0))
            v.shortfall = r.p + r.pos;
        skip(&r, (size_t)v.nshort * 16);
    }
    int rc = rd_end(&r);
    if (rc)
        return rc;
    *ret = v;
    return 0;
}

void atp_proto_error_shortfall(const struct atp_proto_error *e, uint32_t i,
                               struct atp_shortfall *ret)
{
    const uint8_t *p = e->shortfall + (size_t)i * 16;
    ret->requested = (int64_t)load_le64(p);
    ret->available = (int64_t)load_le64(p + 8);
}

ssize_t atp_proto_enc_error(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id, int code,
                            struct atp_slice message, const struct atp_shortfall *shortfalls,
                            uint32_t nshort)
{
    unsigned wire = atp_error_wire(code);
    bool with_short = opcode == ATP_OP_RESERVE && code == ATP_EINSUFFICIENT;
    if (code == 0 || wire == 0 || wire > 65535 || (nshort && !with_short))
        return ATP_EINVAL;
    if (message.len > 65535)
        message.len = 65535; /* a message is for humans: cut, never fail */
    struct wr w;
    wr_begin(&w, buf, cap, (uint8_t)(ATP_OP_RESPONSE | opcode), 0, (uint16_t)wire, id);
    put_str16(&w, message);
    if (with_short) {
        put_count(&w, nshort);
        for (uint32_t i = 0; i < nshort && !w.bad; i++) {
            put_i64(&w, shortfalls[i].requested);
            put_i64(&w, shortfalls[i].available);
        }
    }
    return wr_end(&w);
}

int atp_proto_dec_hello_resp(const struct atp_frame *f, struct atp_proto_hello_resp *ret)
{
    int rc = resp_check(f, ATP_OP_HELLO, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_hello_resp v;
    v.version = get_u8(&r);
    v.max_frame = get_u32(&r);
    v.max_keys = get_u16(&r);
    v.max_lines = get_u16(&r);
    v.build = get_str16(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_hello_resp(uint8_t *buf, size_t cap, uint64_t id,
                                 const struct atp_proto_hello_resp *resp)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_RESPONSE | ATP_OP_HELLO, 0, 0, id);
    put_u8(&w, resp->version);
    put_u32(&w, resp->max_frame);
    put_u16(&w, resp->max_keys);
    put_u16(&w, resp->max_lines);
    put_str16(&w, resp->build);
    return wr_end(&w);
}

int atp_proto_dec_ping_resp(const struct atp_frame *f, struct atp_slice *ret_payload)
{
    int rc = resp_check(f, ATP_OP_PING, 0);
    if (rc)
        return rc;
    ret_payload->p = (const char *)f->body;
    ret_payload->len = f->body_len;
    return 0;
}

ssize_t atp_proto_enc_ping_resp(uint8_t *buf, size_t cap, uint64_t id, struct atp_slice payload)
{
    return enc_opaque(buf, cap, ATP_OP_RESPONSE | ATP_OP_PING, id, payload);
}

static void get_breakdown(struct rd *r, bool breakdown, struct atp_breakdown *b)
{
    b->atp = get_i64(r);
    if (breakdown) {
        b->on_hand = get_i64(r);
        b->allocated = get_i64(r);
        b->reserved = get_i64(r);
        b->safety = get_i64(r);
    } else {
        b->on_hand = b->allocated = b->reserved = b->safety = 0;
    }
}

/* A GET answer's counters (8 bytes, or 40 with the breakdown), stored
 * whole when they fit: one bound check, fixed-width stores. */
static void put_breakdown(struct wr *w, bool breakdown, const struct atp_breakdown *b)
{
    size_t n = breakdown ? 5 * 8 : 8;
    if (wr_fits(w, n)) {
        uint8_t *p = w->p + w->pos;
        store_le64(p, (uint64_t)b->atp);
        if (breakdown) {
            store_le64(p + 8, (uint64_t)b->on_hand);
            store_le64(p + 16, (uint64_t)b->allocated);
            store_le64(p + 24, (uint64_t)b->reserved);
            store_le64(p + 32, (uint64_t)b->safety);
        }
    }
    w->pos += n;
}

int atp_proto_dec_get_resp(const struct atp_frame *f, struct atp_proto_get_resp *ret)
{
    int rc = resp_check(f, ATP_OP_GET, ATP_FLAG_BREAKDOWN);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_get_resp v;
    v.breakdown = (f->flags & ATP_FLAG_BREAKDOWN) != 0;
    get_breakdown(&r, v.breakdown, &v.b);
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

ssize_t atp_proto_enc_get_resp(uint8_t *buf, size_t cap, uint64_t id,
                               const struct atp_proto_get_resp *resp)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_RESPONSE | ATP_OP_GET, resp->breakdown ? ATP_FLAG_BREAKDOWN : 0,
             0, id);
    put_breakdown(&w, resp->breakdown, &resp->b);
    return wr_end(&w);
}

static size_t mget_entry_size(bool breakdown)
{
    return breakdown ? 2 + 5 * 8 : 2 + 8;
}

size_t atp_proto_mget_resp_size(uint32_t count, bool breakdown)
{
    return ATP_PROTO_HDR_SIZE + 2 + (size_t)count * mget_entry_size(breakdown);
}

void atp_proto_enc_mget_resp_begin(uint8_t *buf, uint64_t id, uint32_t count, bool breakdown)
{
    size_t size = atp_proto_mget_resp_size(count, breakdown);
    struct wr w;
    wr_begin(&w, buf, size, ATP_OP_RESPONSE | ATP_OP_MGET, breakdown ? ATP_FLAG_BREAKDOWN : 0, 0,
             id);
    put_u16(&w, (uint16_t)count);
    store_le32(buf + 16, (uint32_t)(size - ATP_PROTO_HDR_SIZE));
}

void atp_proto_enc_mget_resp_put(uint8_t *buf, uint32_t i, bool breakdown, int code,
                                 const struct atp_breakdown *b)
{
    static const struct atp_breakdown zero;
    size_t esz = mget_entry_size(breakdown);
    struct wr w = {.p = buf + ATP_PROTO_HDR_SIZE + 2 + (size_t)i * esz, .cap = esz, .pos = 0};
    put_u16(&w, (uint16_t)atp_error_wire(code));
    put_breakdown(&w, breakdown, code == 0 && b ? b : &zero);
}

int atp_proto_dec_mget_resp(const struct atp_frame *f, struct atp_proto_mget_resp *ret)
{
    int rc = resp_check(f, ATP_OP_MGET, ATP_FLAG_BREAKDOWN);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_mget_resp v;
    v.breakdown = (f->flags & ATP_FLAG_BREAKDOWN) != 0;
    v.count = get_u16(&r);
    v.entries = NULL;
    if (!r.bad && v.count)
        v.entries = r.p + r.pos;
    skip(&r, (size_t)v.count * mget_entry_size(v.breakdown));
    if ((rc = rd_end(&r)))
        return rc;
    *ret = v;
    return 0;
}

int atp_proto_mget_resp_entry(const struct atp_proto_mget_resp *mr, uint32_t i,
                              struct atp_breakdown *ret)
{
    size_t esz = mget_entry_size(mr->breakdown);
    struct rd r = {.p = mr->entries + (size_t)i * esz, .len = esz, .pos = 0, .bad = false};
    unsigned wire = get_u16(&r);
    get_breakdown(&r, mr->breakdown, ret);
    return wire == 0 ? 0 : atp_error_from_wire(wire);
}

ssize_t atp_proto_enc_changes_resp(uint8_t *buf, size_t cap, uint64_t id, bool network,
                                   uint64_t next_cursor, bool more,
                                   const struct atp_change *changes, uint32_t count)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_RESPONSE | ATP_OP_CHANGES, network ? ATP_FLAG_NETWORK : 0, 0, id);
    put_u64(&w, next_cursor);
    put_u8(&w, more ? 1 : 0);
    put_count(&w, count);
    for (uint32_t i = 0; i < count && !w.bad; i++) {
        put_str8(&w, changes[i].sku);
        put_str8(&w, changes[i].loc);
        put_i64(&w, changes[i].atp);
    }
    return wr_end(&w);
}

int atp_proto_dec_changes_resp(const struct atp_frame *f, struct atp_proto_changes_resp *ret)
{
    int rc = resp_check(f, ATP_OP_CHANGES, ATP_FLAG_NETWORK);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    struct atp_proto_changes_resp v;
    v.next_cursor = get_u64(&r);
    uint8_t more = get_u8(&r);
    v.count = get_u16(&r);
    if (r.bad || more > 1)
        return ATP_EMALFORMED;
    size_t first = r.pos;
    for (uint32_t i = 0; i < v.count && !r.bad; i++) {
        skip_str8(&r);
        skip_str8(&r);
        skip(&r, 8);
    }
    if ((rc = rd_end(&r)))
        return rc;
    v.more = more != 0;
    v.network = (f->flags & ATP_FLAG_NETWORK) != 0;
    v.next = v.count ? f->body + first : NULL;
    v.end = f->body + f->body_len;
    *ret = v;
    return 0;
}

bool atp_proto_changes_next(struct atp_proto_changes_resp *cr, struct atp_change *ret)
{
    if (cr->next == NULL || cr->next >= cr->end)
        return false;
    /* Validated by atp_proto_dec_changes_resp; the reader still bounds itself. */
    struct rd r = {.p = cr->next, .len = (size_t)(cr->end - cr->next), .pos = 0, .bad = false};
    struct atp_change c;
    c.sku = get_str8(&r);
    c.loc = get_str8(&r);
    c.atp = get_i64(&r);
    if (r.bad)
        return false;
    cr->next += r.pos;
    *ret = c;
    return true;
}

int atp_proto_dec_resv_resp(const struct atp_frame *f, struct atp_proto_resv *ret,
                            bool *ret_replayed)
{
    uint8_t op = f->opcode & (uint8_t)~ATP_OP_RESPONSE;
    if (op != ATP_OP_RESERVE && op != ATP_OP_COMMIT && op != ATP_OP_RELEASE &&
        op != ATP_OP_EXTEND && op != ATP_OP_GET_RESERVATION)
        return ATP_EMALFORMED;
    int rc = resp_check(f, op, op == ATP_OP_RESERVE ? ATP_FLAG_REPLAYED : 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    uint64_t id = get_u64(&r);
    uint8_t state = get_u8(&r);
    struct atp_slice channel = get_str8(&r);
    struct atp_slice key = get_str8(&r);
    uint64_t created = get_u64(&r);
    uint64_t expires = get_u64(&r);
    uint64_t ttl = get_u64(&r);
    uint32_t n = get_u16(&r);
    if (r.bad || n > ATP_PROTO_MAX_LINES)
        return ATP_EMALFORMED;
    size_t first = r.pos;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        skip_str8(&r);
        skip_str8(&r);
        skip(&r, 9);
    }
    if ((rc = rd_end(&r)))
        return rc;
    r.pos = first;
    ret->id = id;
    ret->state = state;
    ret->channel = channel;
    ret->key = key;
    ret->created_us = created;
    ret->expires_us = expires;
    ret->ttl_ms = ttl;
    ret->nlines = n;
    for (uint32_t i = 0; i < n; i++) {
        ret->lines[i].sku = get_str8(&r);
        ret->lines[i].loc = get_str8(&r);
        ret->lines[i].qty = get_i64(&r);
        ret->lines[i].fulfilled = get_u8(&r) != 0;
    }
    if (ret_replayed)
        *ret_replayed = (f->flags & ATP_FLAG_REPLAYED) != 0;
    return 0;
}

ssize_t atp_proto_enc_resv_resp(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id,
                                bool replayed, const struct atp_proto_resv *resv)
{
    if (resv->nlines > ATP_PROTO_MAX_LINES || (replayed && opcode != ATP_OP_RESERVE))
        return ATP_EINVAL;
    struct wr w;
    wr_begin(&w, buf, cap, (uint8_t)(ATP_OP_RESPONSE | opcode), replayed ? ATP_FLAG_REPLAYED : 0, 0,
             id);
    put_u64(&w, resv->id);
    put_u8(&w, resv->state);
    put_str8(&w, resv->channel);
    put_str8(&w, resv->key);
    put_u64(&w, resv->created_us);
    put_u64(&w, resv->expires_us);
    put_u64(&w, resv->ttl_ms);
    put_count(&w, resv->nlines);
    for (uint32_t i = 0; i < resv->nlines; i++) {
        put_str8(&w, resv->lines[i].sku);
        put_str8(&w, resv->lines[i].loc);
        put_i64(&w, resv->lines[i].qty);
        put_u8(&w, resv->lines[i].fulfilled ? 1 : 0);
    }
    return wr_end(&w);
}

int atp_proto_dec_adjust_resp(const struct atp_frame *f, int64_t *ret_on_hand)
{
    int rc = resp_check(f, ATP_OP_ADJUST, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    int64_t v = get_i64(&r);
    if ((rc = rd_end(&r)))
        return rc;
    *ret_on_hand = v;
    return 0;
}

ssize_t atp_proto_enc_adjust_resp(uint8_t *buf, size_t cap, uint64_t id, int64_t on_hand)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_RESPONSE | ATP_OP_ADJUST, 0, 0, id);
    put_i64(&w, on_hand);
    return wr_end(&w);
}

int atp_proto_dec_empty_resp(const struct atp_frame *f)
{
    if (!(f->opcode & ATP_OP_RESPONSE) || f->status != 0 || f->flags != 0)
        return ATP_EMALFORMED;
    return f->body_len ? ATP_EMALFORMED : 0;
}

ssize_t atp_proto_enc_empty_resp(uint8_t *buf, size_t cap, uint8_t opcode, uint64_t id)
{
    struct wr w;
    wr_begin(&w, buf, cap, (uint8_t)(ATP_OP_RESPONSE | opcode), 0, 0, id);
    return wr_end(&w);
}

void atp_proto_enc_stats_begin(struct atp_proto_stats_enc *e, uint8_t *buf, size_t cap, uint64_t id)
{
    struct wr w;
    wr_begin(&w, buf, cap, ATP_OP_RESPONSE | ATP_OP_STATS, 0, 0, id);
    put_u16(&w, 0); /* count, patched by _end */
    e->buf = w.p;
    e->cap = w.cap;
    e->pos = w.pos;
    e->count = 0;
    e->bad = false;
}

void atp_proto_enc_stats_add(struct atp_proto_stats_enc *e, struct atp_slice name, int64_t value)
{
    struct wr w = {.p = e->buf, .cap = e->cap, .pos = e->pos, .bad = e->bad};
    put_str8(&w, name);
    put_i64(&w, value);
    e->pos = w.pos;
    e->bad = w.bad || e->count >= ATP_PROTO_MAX_COUNT;
    e->count++;
}

ssize_t atp_proto_enc_stats_end(struct atp_proto_stats_enc *e)
{
    struct wr w = {.p = e->buf, .cap = e->cap, .pos = e->pos, .bad = e->bad};
    if (!w.bad && w.pos <= w.cap)
        store_le16(w.p + ATP_PROTO_HDR_SIZE, (uint16_t)e->count);
    return wr_end(&w);
}

int atp_proto_dec_stats_resp(const struct atp_frame *f, struct atp_proto_stats_resp *ret)
{
    int rc = resp_check(f, ATP_OP_STATS, 0);
    if (rc)
        return rc;
    struct rd r = rd_body(f);
    uint32_t n = get_u16(&r);
    size_t first = r.pos;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        skip_str8(&r);
        skip(&r, 8);
    }
    if ((rc = rd_end(&r)))
        return rc;
    ret->count = n;
    ret->next = n ? f->body + first : NULL;
    ret->end = f->body ? f->body + f->body_len : NULL;
    return 0;
}

bool atp_proto_stats_next(struct atp_proto_stats_resp *sr, struct atp_slice *ret_name,
                          int64_t *ret_value)
{
    if (sr->next == NULL || sr->next >= sr->end)
        return false;
    struct rd r = {.p = sr->next, .len = (size_t)(sr->end - sr->next), .pos = 0, .bad = false};
    struct atp_slice name = get_str8(&r);
    int64_t value = get_i64(&r);
    if (r.bad)
        return false;
    sr->next += r.pos;
    *ret_name = name;
    *ret_value = value;
    return true;
}
