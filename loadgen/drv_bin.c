/*
 * drv_bin.c - the atpd binary protocol driver of atp-loadgen.
 *
 * Every frame is built and read by the shared codec (include/atp/proto.h);
 * this file only maps load-generator requests onto codec calls. Request ids
 * are 1, 2, 3... per connection and every response must echo the next one
 * (or be an unattributed error, id 0), so a server that answers out of
 * order or drops a response is caught, not silently mis-timed.
 */
#include "lg.h"

#include <errno.h>
#include <string.h>

#include "atp/proto.h"

struct bin_state {
    uint64_t sent_id; /* last request id written */
    uint64_t recv_id; /* last response id matched */
};

/* Scratch for MGET: key structs and their sku names (per thread). */
static _Thread_local struct atp_proto_key mget_keys[LG_MAX_MGET];
static _Thread_local char mget_skus[LG_MAX_MGET][72];

static struct atp_slice slice(const char *p, uint32_t len)
{
    return (struct atp_slice){p, len};
}

static struct atp_slice loc_slice(const struct lg_run *run, uint16_t loc)
{
    if (loc == UINT16_MAX)
        return slice("", 0); /* network ATP */
    const char *l = run->wl->locations[loc];
    return slice(l, (uint32_t)strlen(l));
}

/* Run an snprintf-style codec encoder into out, growing it once if needed. */
#define ENCODE(out, call_with_buf_cap)                                                             \
    do {                                                                                           \
        size_t cap_ = (out)->cap - (out)->len;                                                     \
        if (cap_ < 512) {                                                                          \
            if (!lg_buf_reserve((out), 512))                                                       \
                return -ENOMEM;                                                                    \
            cap_ = (out)->cap - (out)->len;                                                        \
        }                                                                                          \
        uint8_t *buf = (out)->data + (out)->len;                                                   \
        size_t cap = cap_;                                                                         \
        ssize_t n_ = (call_with_buf_cap);                                                          \
        if (n_ < 0)                                                                                \
            return -EINVAL;                                                                        \
        if ((size_t)n_ > cap) {                                                                    \
            if (!lg_buf_reserve((out), (size_t)n_))                                                \
                return -ENOMEM;                                                                    \
            buf = (out)->data + (out)->len;                                                        \
            cap = (out)->cap - (out)->len;                                                         \
            n_ = (call_with_buf_cap);                                                              \
            if (n_ < 0 || (size_t)n_ > cap)                                                        \
                return -EINVAL;                                                                    \
        }                                                                                          \
        (out)->len += (size_t)n_;                                                                  \
    } while (0)

/*
 * GET frames from a template. A GET differs from the next only in its id and
 * its sku, and every sku of a key space usually has the same length; the
 * codec encoding a whole frame per request was a tenth of atp-loadgen's CPU
 * at pipeline 16. So the codec encodes one frame per location (and
 * breakdown flag), the bytes that hold the id and the sku are found by
 * encoding it again with another id and another sku of the same length, and
 * the template is checked once against the codec on a third request before
 * it is used. A sku of another length, or a template that failed its check,
 * goes through the codec as before.
 */
struct get_tmpl {
    bool built, ok;
    uint32_t sku_len;
    uint32_t len, id_off, sku_off;
    uint8_t frame[320];
};

static _Thread_local struct get_tmpl get_tmpls[2][LG_MAX_LOCATIONS + 1];

static ssize_t tmpl_codec(const struct lg_run *run, uint16_t loc, bool breakdown, uint64_t id,
                          const char *sku, uint32_t sku_len, uint8_t *buf, size_t cap)
{
    const char *chan = run->wl->channel;
    struct atp_proto_get_req g = {
        .key = {.sku = slice(sku, sku_len),
                .channel = slice(chan, (uint32_t)strlen(chan)),
                .loc = loc_slice(run, loc)},
        .breakdown = breakdown,
    };
    return atp_proto_enc_get_req(buf, cap, id, &g);
}

static void tmpl_fill(const struct get_tmpl *t, uint8_t *p, uint64_t id, const char *sku)
{
    uint8_t le[8]; /* the id, little-endian, stored in one go */
    for (unsigned i = 0; i < 8; i++)
        le[i] = (uint8_t)(id >> (8 * i));
    memcpy(p, t->frame, t->len);
    memcpy(p + t->sku_off, sku, t->sku_len);
    memcpy(p + t->id_off, le, 8);
}

/* The byte range in which a and b differ: its start, or -1 unless it is
 * exactly `want` bytes long. */
static int diff_range(const uint8_t *a, const uint8_t *b, size_t len, uint32_t want)
{
    size_t i = 0, j = len;
    while (i < len && a[i] == b[i])
        i++;
    while (j > i && a[j - 1] == b[j - 1])
        j--;
    return j - i == want ? (int)i : -1;
}

static void tmpl_build(const struct lg_run *run, struct get_tmpl *t, uint16_t loc, bool breakdown,
                       uint32_t sku_len)
{
    t->built = true;
    t->ok = false;
    t->sku_len = sku_len;
    if (sku_len == 0 || sku_len > 64)
        return;
    char sa[64], sb[64], sc[64];
    memset(sa, 'A', sizeof(sa));
    memset(sb, 'B', sizeof(sb));
    for (uint32_t i = 0; i < sizeof(sc); i++)
        sc[i] = (char)('a' + i % 26);
    const uint64_t id_a = 0x0102030405060708ull, id_b = 0xf1f2f3f4f5f6f7f8ull;
    uint8_t fb[sizeof(t->frame)], fc[sizeof(t->frame)], ft[sizeof(t->frame)];
    ssize_t n = tmpl_codec(run, loc, breakdown, id_a, sa, sku_len, t->frame, sizeof(t->frame));
    if (n <= 0 || (size_t)n > sizeof(t->frame))
        return;
    t->len = (uint32_t)n;
    /* the sku: same id, another name */
    if (tmpl_codec(run, loc, breakdown, id_a, sb, sku_len, fb, sizeof(fb)) != n)
        return;
    int sku_off = diff_range(t->frame, fb, t->len, sku_len);
    /* the id: same name, another id (all eight bytes differ) */
    if (tmpl_codec(run, loc, breakdown, id_b, sa, sku_len, fb, sizeof(fb)) != n)
        return;
    int id_off = diff_range(t->frame, fb, t->len, 8);
    if (sku_off < 0 || id_off < 0)
        return;
    t->sku_off = (uint32_t)sku_off;
    t->id_off = (uint32_t)id_off;
    /* the check: a third request, by the codec and by the template */
    if (tmpl_codec(run, loc, breakdown, 977, sc, sku_len, fc, sizeof(fc)) != n)
        return;
    tmpl_fill(t, ft, 977, sc);
    t->ok = memcmp(ft, fc, t->len) == 0;
}

/* Encode a GET from the template; false when the codec must do it. */
static bool get_from_tmpl(const struct lg_run *run, uint16_t loc, bool breakdown, uint64_t id,
                          const char *sku, uint32_t sku_len, struct lg_buf *out)
{
    uint32_t li = loc == UINT16_MAX ? LG_MAX_LOCATIONS : loc;
    if (li > LG_MAX_LOCATIONS)
        return false;
    struct get_tmpl *t = &get_tmpls[breakdown][li];
    if (!t->built)
        tmpl_build(run, t, loc, breakdown, sku_len);
    if (!t->ok || t->sku_len != sku_len)
        return false;
    uint8_t *p = lg_buf_reserve(out, t->len);
    if (!p)
        return false;
    tmpl_fill(t, p, id, sku);
    out->len += t->len;
    return true;
}

static int bin_encode(struct lg_run *run, void *state, const struct lg_req *r, struct lg_buf *out)
{
    struct bin_state *st = state;
    uint64_t id = ++st->sent_id;
    const struct lg_workload *wl = run->wl;
    char sku[72];
    if (r->op == LG_OP_GET && !r->sku_override) {
        /* the common case first, before anything it does not need */
        uint32_t n = lg_sku(run, r->keys[0].key, sku);
        if (get_from_tmpl(run, r->keys[0].loc, wl->breakdown, id, sku, n, out))
            return 0;
    }
    struct atp_slice chan = slice(wl->channel, (uint32_t)strlen(wl->channel));
    switch (r->op) {
    case LG_OP_GET:
    case LG_XOP_INSPECT: {
        uint32_t n;
        if (r->sku_override) {
            n = (uint32_t)strlen(r->sku_override);
            memcpy(sku, r->sku_override, n + 1);
        } else {
            n = lg_sku(run, r->keys[0].key, sku); /* (again, for a GET the template refused) */
        }
        struct atp_proto_get_req g = {
            .key = {.sku = slice(sku, n), .channel = chan, .loc = loc_slice(run, r->keys[0].loc)},
            .breakdown = r->op == LG_XOP_INSPECT || wl->breakdown,
        };
        ENCODE(out, atp_proto_enc_get_req(buf, cap, id, &g));
        return 0;
    }
    case LG_OP_MGET: {
        uint32_t n = r->nkeys;
        for (uint32_t i = 0; i < n; i++) {
            uint32_t len = lg_sku(run, r->keys[i].key, mget_skus[i]);
            mget_keys[i].sku = slice(mget_skus[i], len);
            mget_keys[i].channel = chan;
            mget_keys[i].loc = loc_slice(run, r->keys[i].loc);
        }
        ENCODE(out, atp_proto_enc_mget_req(buf, cap, id, wl->breakdown, mget_keys, n));
        return 0;
    }
    case LG_OP_RESERVE: {
        struct atp_line_req lines[LG_MAX_LINES];
        char names[LG_MAX_LINES][72];
        for (uint32_t i = 0; i < r->nkeys; i++) {
            uint32_t len = lg_sku(run, r->keys[i].key, names[i]);
            lines[i].sku = slice(names[i], len);
            lines[i].loc = loc_slice(run, r->keys[i].loc);
            lines[i].qty = r->keys[i].qty;
        }
        ENCODE(out, atp_proto_enc_reserve_req(buf, cap, id, slice(r->idem, r->idem_len), chan,
                                              wl->ttl_ms, lines, r->nkeys));
        return 0;
    }
    case LG_OP_COMMIT:
    case LG_OP_RELEASE: {
        struct atp_proto_id_req q = {.res_id = r->res_id};
        uint8_t opc = r->op == LG_OP_COMMIT ? ATP_OP_COMMIT : ATP_OP_RELEASE;
        ENCODE(out, atp_proto_enc_id_req(buf, cap, opc, id, &q));
        return 0;
    }
    case LG_XOP_SET: {
        uint32_t n =
            r->sku_override ? (uint32_t)strlen(r->sku_override) : lg_sku(run, r->keys[0].key, sku);
        if (r->sku_override)
            memcpy(sku, r->sku_override, n + 1);
        struct atp_proto_set_req q = {
            .sku = slice(sku, n), .loc = loc_slice(run, r->keys[0].loc), .on_hand = r->value};
        ENCODE(out, atp_proto_enc_set_req(buf, cap, id, &q));
        return 0;
    }
    default:
        st->sent_id--;
        return -EINVAL;
    }
}

static ssize_t bin_decode(struct lg_run *run, void *state, const uint8_t *in, size_t len, int op,
                          struct lg_resp *ret)
{
    struct bin_state *st = state;
    struct atp_frame f;
    ssize_t n = atp_proto_frame(in, len, 0, &f);
    if (n <= 0)
        return n == 0 ? 0 : -EPROTO;
    if (f.id != st->recv_id + 1 && !(f.id == 0 && f.opcode == ATP_OP_RESPONSE))
        return -EPROTO; /* out of order or a lost response */
    st->recv_id++;
    ret->status = NULL;
    if (f.status != 0) {
        ret->status = atp_error_name(atp_error_from_wire(f.status));
        return n;
    }
    switch (op) {
    case LG_OP_GET:
    case LG_XOP_INSPECT: {
        struct atp_proto_get_resp g;
        if (atp_proto_dec_get_resp(&f, &g))
            return -EPROTO;
        ret->atp = g.b.atp;
        ret->on_hand = g.b.on_hand;
        ret->allocated = g.b.allocated;
        ret->reserved = g.b.reserved;
        ret->safety = g.b.safety;
        return n;
    }
    case LG_OP_MGET: {
        struct atp_proto_mget_resp m;
        if (atp_proto_dec_mget_resp(&f, &m))
            return -EPROTO;
        uint32_t ok = 0;
        for (uint32_t i = 0; i < m.count; i++) {
            struct atp_breakdown b;
            if (atp_proto_mget_resp_entry(&m, i, &b) == 0)
                ok++;
        }
        ret->nok = ok;
        return n;
    }
    case LG_OP_RESERVE:
    case LG_OP_COMMIT:
    case LG_OP_RELEASE: {
        /* Only the id is needed: it is the first 8 bytes of the record,
         * but decode the whole record so a malformed answer is caught. */
        struct atp_proto_resv rv;
        bool replayed = false;
        if (atp_proto_dec_resv_resp(&f, &rv, &replayed))
            return -EPROTO;
        ret->res_id = rv.id;
        if (replayed && op == LG_OP_RESERVE)
            ret->status = "REPLAYED"; /* never expected: keys are unique per run */
        return n;
    }
    case LG_XOP_SET:
        if (atp_proto_dec_empty_resp(&f))
            return -EPROTO;
        return n;
    default:
        return -EPROTO;
    }
}

const struct lg_driver lg_driver_bin = {
    .name = "bin",
    .default_port = 7400,
    .state_size = sizeof(struct bin_state),
    .encode = bin_encode,
    .decode = bin_decode,
};
