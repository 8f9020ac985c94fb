/*
 * test_vectors.c - checks the C codec against the golden vectors in
 * protocol/vectors/ (written by an independent Python encoder).
 *
 * For every vector: the meaning line is encoded with the codec and must give
 * exactly the hex bytes; the hex bytes are decoded with the codec and printed
 * back, and must give exactly the meaning line. Knows the vector file format
 * (PROTOCOL.md, "Golden vectors") and the codec; nothing else.
 *
 * Usage: test_vectors VECTOR_DIR
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "atp/proto.h"

static const char *vector_dir;

/* --- meaning tokens ------------------------------------------------------ */

#define MAX_TOKENS 256

struct tok {
    char name[32];
    char value[256];
};

struct toks {
    struct tok t[MAX_TOKENS];
    int n;
    int at; /* next token to consume */
    const char *direction;
};

/* Split `name=value name="quoted value" ...` (after the "request:" word). */
static void tokenize(const char *s, struct toks *ts)
{
    ts->n = 0;
    ts->at = 0;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s || *s == '\n')
            break;
        assert_true(ts->n < MAX_TOKENS);
        struct tok *t = &ts->t[ts->n++];
        const char *eq = strchr(s, '=');
        assert_non_null(eq);
        assert_true((size_t)(eq - s) < sizeof(t->name));
        memcpy(t->name, s, (size_t)(eq - s));
        t->name[eq - s] = 0;
        s = eq + 1;
        size_t len;
        if (*s == '"') {
            const char *q = strchr(s + 1, '"');
            assert_non_null(q);
            len = (size_t)(q - s - 1);
            assert_true(len < sizeof(t->value));
            memcpy(t->value, s + 1, len);
            s = q + 1;
        } else {
            len = strcspn(s, " \n");
            assert_true(len < sizeof(t->value));
            memcpy(t->value, s, len);
            s += len;
        }
        t->value[len] = 0;
    }
}

static const char *take(struct toks *ts, const char *name)
{
    if (ts->at >= ts->n)
        fail_msg("expected %s, found the end", name);
    struct tok *t = &ts->t[ts->at++];
    if (strcmp(t->name, name) != 0)
        fail_msg("expected %s, found %s", name, t->name);
    return t->value;
}

static bool next_is(const struct toks *ts, const char *name)
{
    return ts->at < ts->n && strcmp(ts->t[ts->at].name, name) == 0;
}

static struct atp_slice take_str(struct toks *ts, const char *name)
{
    return atp_slice_cstr(take(ts, name));
}

static uint64_t take_u(struct toks *ts, const char *name)
{
    return strtoull(take(ts, name), NULL, 0);
}

static int64_t take_i(struct toks *ts, const char *name)
{
    return strtoll(take(ts, name), NULL, 0);
}

/* Status name ("ENOTFOUND") to an ATP_* code. */
static int code_by_name(const char *name)
{
#define CODE_BY_NAME(n, code, wire, http, slug, msg)                                               \
    if (strcmp(name, #n) == 0)                                                                     \
        return code;
    ATP_ERRORS(CODE_BY_NAME)
#undef CODE_BY_NAME
    fail_msg("unknown status %s", name);
    return 0;
}

static uint8_t op_by_name(const char *name)
{
    if (strncmp(name, "0x", 2) == 0)
        return (uint8_t)strtoul(name, NULL, 16);
    if (strcmp(name, "NONE") == 0)
        return ATP_OP_NONE;
    for (unsigned op = 1; op < 0x80; op++) {
        const char *n = atp_proto_op_name(op);
        if (n && strcmp(n, name) == 0)
            return (uint8_t)op;
    }
    fail_msg("unknown op %s", name);
    return 0;
}

/* --- meaning -> bytes ----------------------------------------------------- */

static ssize_t encode_request(struct toks *ts, uint8_t op, uint64_t id, uint16_t flags,
                              uint8_t *buf, size_t cap)
{
    switch (op) {
    case ATP_OP_HELLO: {
        struct atp_proto_hello_req r;
        r.min_version = (uint8_t)take_u(ts, "min_version");
        r.max_version = (uint8_t)take_u(ts, "max_version");
        r.client = take_str(ts, "client");
        return atp_proto_enc_hello_req(buf, cap, id, &r);
    }
    case ATP_OP_PING: {
        struct atp_slice payload = {NULL, 0};
        if (next_is(ts, "payload"))
            payload = take_str(ts, "payload");
        return atp_proto_enc_ping_req(buf, cap, id, payload);
    }
    case ATP_OP_GET: {
        struct atp_proto_get_req r;
        r.key.sku = take_str(ts, "sku");
        r.key.channel = take_str(ts, "channel");
        r.key.loc = take_str(ts, "loc");
        r.breakdown = flags & ATP_FLAG_BREAKDOWN;
        return atp_proto_enc_get_req(buf, cap, id, &r);
    }
    case ATP_OP_MGET: {
        uint32_t n = (uint32_t)take_u(ts, "count");
        struct atp_proto_key keys[16];
        assert_true(n <= 16);
        for (uint32_t i = 0; i < n; i++) {
            keys[i].sku = take_str(ts, "sku");
            keys[i].channel = take_str(ts, "channel");
            keys[i].loc = take_str(ts, "loc");
        }
        return atp_proto_enc_mget_req(buf, cap, id, flags & ATP_FLAG_BREAKDOWN, keys, n);
    }
    case ATP_OP_CHANGES: {
        struct atp_proto_changes_req r;
        r.channel = take_str(ts, "channel");
        r.cursor = take_u(ts, "cursor");
        r.max = (uint32_t)take_u(ts, "max");
        r.network = flags & ATP_FLAG_NETWORK;
        r.wait_ms = flags & ATP_FLAG_WAIT ? (uint32_t)take_u(ts, "wait_ms") : 0;
        return atp_proto_enc_changes_req(buf, cap, id, &r);
    }
    case ATP_OP_RESERVE: {
        struct atp_slice key = take_str(ts, "key");
        struct atp_slice channel = take_str(ts, "channel");
        uint64_t ttl = take_u(ts, "ttl_ms");
        uint32_t n = (uint32_t)take_u(ts, "count");
        struct atp_line_req lines[ATP_MAX_LINES];
        assert_true(n <= ATP_MAX_LINES);
        for (uint32_t i = 0; i < n; i++) {
            lines[i].sku = take_str(ts, "sku");
            lines[i].loc = take_str(ts, "loc");
            lines[i].qty = take_i(ts, "qty");
        }
        return atp_proto_enc_reserve_req(buf, cap, id, key, channel, ttl, lines, n);
    }
    case ATP_OP_COMMIT:
    case ATP_OP_RELEASE:
    case ATP_OP_EXTEND: {
        struct atp_proto_id_req r = {0, 0};
        r.res_id = take_u(ts, "res_id");
        if (op == ATP_OP_EXTEND)
            r.ttl_ms = take_u(ts, "ttl_ms");
        return atp_proto_enc_id_req(buf, cap, op, id, &r);
    }
    case ATP_OP_GET_RESERVATION: {
        struct atp_proto_getres_req r = {.by_key = flags & ATP_FLAG_BY_KEY};
        if (r.by_key)
            r.key = take_str(ts, "key");
        else
            r.res_id = take_u(ts, "res_id");
        return atp_proto_enc_getres_req(buf, cap, id, &r);
    }
    case ATP_OP_ADJUST: {
        struct atp_proto_adjust_req r;
        r.sku = take_str(ts, "sku");
        r.loc = take_str(ts, "loc");
        r.delta = take_i(ts, "delta");
        return atp_proto_enc_adjust_req(buf, cap, id, &r);
    }
    case ATP_OP_SET: {
        struct atp_proto_set_req r;
        r.sku = take_str(ts, "sku");
        r.loc = take_str(ts, "loc");
        r.on_hand = take_i(ts, "on_hand");
        r.seq = take_u(ts, "seq");
        return atp_proto_enc_set_req(buf, cap, id, &r);
    }
    case ATP_OP_STATS:
        return atp_proto_enc_stats_req(buf, cap, id);
    default: /* an unknown opcode: a bare header */
        return atp_proto_enc_hdr(buf, cap, op, flags, 0, id, 0);
    }
}

static void take_resv(struct toks *ts, struct atp_proto_resv *r)
{
    r->id = take_u(ts, "res_id");
    r->state = (uint8_t)take_u(ts, "state");
    r->channel = take_str(ts, "channel");
    r->key = take_str(ts, "key");
    r->created_us = take_u(ts, "created_us");
    r->expires_us = take_u(ts, "expires_us");
    r->ttl_ms = take_u(ts, "ttl_ms");
    r->nlines = (uint32_t)take_u(ts, "count");
    assert_true(r->nlines <= ATP_MAX_LINES);
    for (uint32_t i = 0; i < r->nlines; i++) {
        r->lines[i].sku = take_str(ts, "sku");
        r->lines[i].loc = take_str(ts, "loc");
        r->lines[i].qty = take_i(ts, "qty");
        r->lines[i].fulfilled = take_u(ts, "fulfilled") != 0;
    }
}

static void take_breakdown(struct toks *ts, bool breakdown, struct atp_breakdown *b)
{
    memset(b, 0, sizeof(*b));
    b->atp = take_i(ts, "atp");
    if (breakdown) {
        b->on_hand = take_i(ts, "on_hand");
        b->allocated = take_i(ts, "allocated");
        b->reserved = take_i(ts, "reserved");
        b->safety = take_i(ts, "safety");
    }
}

static ssize_t encode_response(struct toks *ts, uint8_t op, uint64_t id, uint16_t flags, int code,
                               uint8_t *buf, size_t cap)
{
    if (code != 0) {
        struct atp_slice msg = take_str(ts, "message");
        struct atp_shortfall sf[ATP_MAX_LINES];
        uint32_t n = 0;
        if (next_is(ts, "count")) {
            n = (uint32_t)take_u(ts, "count");
            assert_true(n <= ATP_MAX_LINES);
            for (uint32_t i = 0; i < n; i++) {
                sf[i].requested = take_i(ts, "requested");
                sf[i].available = take_i(ts, "available");
            }
        }
        return atp_proto_enc_error(buf, cap, op, id, code, msg, sf, n);
    }
    switch (op) {
    case ATP_OP_HELLO: {
        struct atp_proto_hello_resp r;
        r.version = (uint8_t)take_u(ts, "version");
        r.max_frame = (uint32_t)take_u(ts, "max_frame");
        r.max_keys = (uint16_t)take_u(ts, "max_keys");
        r.max_lines = (uint16_t)take_u(ts, "max_lines");
        r.build = take_str(ts, "build");
        return atp_proto_enc_hello_resp(buf, cap, id, &r);
    }
    case ATP_OP_PING: {
        struct atp_slice payload = {NULL, 0};
        if (next_is(ts, "payload"))
            payload = take_str(ts, "payload");
        return atp_proto_enc_ping_resp(buf, cap, id, payload);
    }
    case ATP_OP_GET: {
        struct atp_proto_get_resp r = {.breakdown = flags & ATP_FLAG_BREAKDOWN};
        take_breakdown(ts, r.breakdown, &r.b);
        return atp_proto_enc_get_resp(buf, cap, id, &r);
    }
    case ATP_OP_MGET: {
        bool bd = flags & ATP_FLAG_BREAKDOWN;
        uint32_t n = (uint32_t)take_u(ts, "count");
        /* Written in place into a scratch frame, copied out if it fits. */
        static uint8_t tmp[8192];
        size_t size = atp_proto_mget_resp_size(n, bd);
        assert_true(size <= sizeof(tmp));
        atp_proto_enc_mget_resp_begin(tmp, id, n, bd);
        for (uint32_t i = 0; i < n; i++) {
            int ecode = code_by_name(take(ts, "status"));
            struct atp_breakdown b;
            take_breakdown(ts, bd, &b);
            atp_proto_enc_mget_resp_put(tmp, i, bd, ecode, &b);
        }
        if (size <= cap)
            memcpy(buf, tmp, size);
        return (ssize_t)size;
    }
    case ATP_OP_CHANGES: {
        uint64_t next = take_u(ts, "next_cursor");
        bool more = take_u(ts, "more") != 0;
        uint32_t n = (uint32_t)take_u(ts, "count");
        struct atp_change c[16];
        assert_true(n <= 16);
        for (uint32_t i = 0; i < n; i++) {
            c[i].sku = take_str(ts, "sku");
            c[i].loc = take_str(ts, "loc");
            c[i].atp = take_i(ts, "atp");
        }
        return atp_proto_enc_changes_resp(buf, cap, id, flags & ATP_FLAG_NETWORK, next, more, c, n);
    }
    case ATP_OP_RESERVE:
    case ATP_OP_COMMIT:
    case ATP_OP_RELEASE:
    case ATP_OP_EXTEND:
    case ATP_OP_GET_RESERVATION: {
        struct atp_proto_resv r;
        take_resv(ts, &r);
        return atp_proto_enc_resv_resp(buf, cap, op, id, flags & ATP_FLAG_REPLAYED, &r);
    }
    case ATP_OP_ADJUST:
        return atp_proto_enc_adjust_resp(buf, cap, id, take_i(ts, "on_hand"));
    case ATP_OP_SET:
        return atp_proto_enc_empty_resp(buf, cap, op, id);
    case ATP_OP_STATS: {
        uint32_t n = (uint32_t)take_u(ts, "count");
        struct atp_proto_stats_enc e;
        atp_proto_enc_stats_begin(&e, buf, cap, id);
        for (uint32_t i = 0; i < n; i++) {
            struct atp_slice name = take_str(ts, "name");
            atp_proto_enc_stats_add(&e, name, take_i(ts, "value"));
        }
        return atp_proto_enc_stats_end(&e);
    }
    }
    fail_msg("no success response for op 0x%02x", op);
    return -1;
}

/* Encode a meaning; returns the frame size (written only if <= cap). */
static size_t encode_meaning(const char *line, uint8_t *buf, size_t cap)
{
    struct toks *ts = calloc(1, sizeof(*ts));
    assert_non_null(ts);
    bool response = strncmp(line, "response:", 9) == 0;
    assert_true(response || strncmp(line, "request:", 8) == 0);
    tokenize(strchr(line, ':') + 1, ts);
    uint8_t op = op_by_name(take(ts, "op"));
    uint64_t id = take_u(ts, "id");
    int code = response ? code_by_name(take(ts, "status")) : 0;
    uint16_t flags = next_is(ts, "flags") ? (uint16_t)take_u(ts, "flags") : 0;
    ssize_t n = response ? encode_response(ts, op, id, flags, code, buf, cap)
                         : encode_request(ts, op, id, flags, buf, cap);
    if (ts->at != ts->n)
        fail_msg("unused field %s in: %s", ts->t[ts->at].name, line);
    free(ts);
    assert_true(n > 0);
    return (size_t)n;
}

/* --- bytes -> meaning ----------------------------------------------------- */

struct out {
    char s[8192];
    size_t len;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->s + o->len, sizeof(o->s) - o->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(o->s) - o->len);
    o->len += (size_t)n;
}

static void out_str(struct out *o, const char *name, struct atp_slice s)
{
    outf(o, " %s=\"%.*s\"", name, (int)s.len, s.p ? s.p : "");
}

static void out_breakdown(struct out *o, bool bd, const struct atp_breakdown *b)
{
    outf(o, " atp=%lld", (long long)b->atp);
    if (bd)
        outf(o, " on_hand=%lld allocated=%lld reserved=%lld safety=%lld", (long long)b->on_hand,
             (long long)b->allocated, (long long)b->reserved, (long long)b->safety);
}

static void out_op(struct out *o, uint8_t opcode)
{
    uint8_t op = opcode & (uint8_t)~ATP_OP_RESPONSE;
    const char *name = op == ATP_OP_NONE ? "NONE" : atp_proto_op_name(op);
    if (name)
        outf(o, " op=%s", name);
    else
        outf(o, " op=0x%02x", op);
}

static void decode_request(struct out *o, const struct atp_frame *f)
{
    switch (f->opcode) {
    case ATP_OP_HELLO: {
        struct atp_proto_hello_req r;
        assert_int_equal(atp_proto_dec_hello_req(f, &r), 0);
        outf(o, " min_version=%u max_version=%u", r.min_version, r.max_version);
        out_str(o, "client", r.client);
        return;
    }
    case ATP_OP_PING: {
        struct atp_slice p;
        assert_int_equal(atp_proto_dec_ping_req(f, &p), 0);
        if (p.len)
            out_str(o, "payload", p);
        return;
    }
    case ATP_OP_GET: {
        struct atp_proto_get_req r;
        assert_int_equal(atp_proto_dec_get_req(f, &r), 0);
        out_str(o, "sku", r.key.sku);
        out_str(o, "channel", r.key.channel);
        out_str(o, "loc", r.key.loc);
        assert_int_equal(r.breakdown, (f->flags & ATP_FLAG_BREAKDOWN) != 0);
        return;
    }
    case ATP_OP_MGET: {
        struct atp_proto_mget_req r;
        struct atp_proto_key k;
        assert_int_equal(atp_proto_dec_mget_req(f, 0, &r), 0);
        outf(o, " count=%u", r.count);
        uint32_t seen = 0;
        while (atp_proto_mget_next(&r, &k)) {
            out_str(o, "sku", k.sku);
            out_str(o, "channel", k.channel);
            out_str(o, "loc", k.loc);
            seen++;
        }
        assert_int_equal(seen, r.count);
        return;
    }
    case ATP_OP_CHANGES: {
        struct atp_proto_changes_req r;
        assert_int_equal(atp_proto_dec_changes_req(f, &r), 0);
        out_str(o, "channel", r.channel);
        outf(o, " cursor=%llu max=%u", (unsigned long long)r.cursor, r.max);
        if (f->flags & ATP_FLAG_WAIT)
            outf(o, " wait_ms=%u", r.wait_ms);
        else
            assert_int_equal(r.wait_ms, 0);
        assert_int_equal(r.network, (f->flags & ATP_FLAG_NETWORK) != 0);
        return;
    }
    case ATP_OP_RESERVE: {
        struct atp_proto_reserve_req r;
        assert_int_equal(atp_proto_dec_reserve_req(f, &r), 0);
        out_str(o, "key", r.key);
        out_str(o, "channel", r.channel);
        outf(o, " ttl_ms=%llu count=%u", (unsigned long long)r.ttl_ms, r.nlines);
        for (uint32_t i = 0; i < r.nlines; i++) {
            out_str(o, "sku", r.lines[i].sku);
            out_str(o, "loc", r.lines[i].loc);
            outf(o, " qty=%lld", (long long)r.lines[i].qty);
        }
        return;
    }
    case ATP_OP_COMMIT:
    case ATP_OP_RELEASE:
    case ATP_OP_EXTEND: {
        struct atp_proto_id_req r;
        assert_int_equal(atp_proto_dec_id_req(f, &r), 0);
        outf(o, " res_id=%llu", (unsigned long long)r.res_id);
        if (f->opcode == ATP_OP_EXTEND)
            outf(o, " ttl_ms=%llu", (unsigned long long)r.ttl_ms);
        return;
    }
    case ATP_OP_GET_RESERVATION: {
        struct atp_proto_getres_req r;
        assert_int_equal(atp_proto_dec_getres_req(f, &r), 0);
        if (r.by_key)
            out_str(o, "key", r.key);
        else
            outf(o, " res_id=%llu", (unsigned long long)r.res_id);
        return;
    }
    case ATP_OP_ADJUST: {
        struct atp_proto_adjust_req r;
        assert_int_equal(atp_proto_dec_adjust_req(f, &r), 0);
        out_str(o, "sku", r.sku);
        out_str(o, "loc", r.loc);
        outf(o, " delta=%lld", (long long)r.delta);
        return;
    }
    case ATP_OP_SET: {
        struct atp_proto_set_req r;
        assert_int_equal(atp_proto_dec_set_req(f, &r), 0);
        out_str(o, "sku", r.sku);
        out_str(o, "loc", r.loc);
        outf(o, " on_hand=%lld seq=%llu", (long long)r.on_hand, (unsigned long long)r.seq);
        return;
    }
    case ATP_OP_STATS:
        assert_int_equal(atp_proto_dec_stats_req(f), 0);
        return;
    default:
        assert_int_equal(f->body_len, 0);
        return;
    }
}

static void decode_response(struct out *o, const struct atp_frame *f)
{
    if (f->status != 0) {
        struct atp_proto_error e;
        assert_int_equal(atp_proto_dec_error(f, &e), 0);
        out_str(o, "message", e.message);
        if (e.nshort) {
            outf(o, " count=%u", e.nshort);
            for (uint32_t i = 0; i < e.nshort; i++) {
                struct atp_shortfall s;
                atp_proto_error_shortfall(&e, i, &s);
                outf(o, " requested=%lld available=%lld", (long long)s.requested,
                     (long long)s.available);
            }
        }
        return;
    }
    uint8_t op = f->opcode & (uint8_t)~ATP_OP_RESPONSE;
    switch (op) {
    case ATP_OP_HELLO: {
        struct atp_proto_hello_resp r;
        assert_int_equal(atp_proto_dec_hello_resp(f, &r), 0);
        outf(o, " version=%u max_frame=%u max_keys=%u max_lines=%u", r.version, r.max_frame,
             r.max_keys, r.max_lines);
        out_str(o, "build", r.build);
        return;
    }
    case ATP_OP_PING: {
        struct atp_slice p;
        assert_int_equal(atp_proto_dec_ping_resp(f, &p), 0);
        if (p.len)
            out_str(o, "payload", p);
        return;
    }
    case ATP_OP_GET: {
        struct atp_proto_get_resp r;
        assert_int_equal(atp_proto_dec_get_resp(f, &r), 0);
        out_breakdown(o, r.breakdown, &r.b);
        return;
    }
    case ATP_OP_MGET: {
        struct atp_proto_mget_resp r;
        assert_int_equal(atp_proto_dec_mget_resp(f, &r), 0);
        outf(o, " count=%u", r.count);
        for (uint32_t i = 0; i < r.count; i++) {
            struct atp_breakdown b;
            int code = atp_proto_mget_resp_entry(&r, i, &b);
            outf(o, " status=%s", atp_error_name(code));
            out_breakdown(o, r.breakdown, &b);
        }
        return;
    }
    case ATP_OP_CHANGES: {
        struct atp_proto_changes_resp r;
        struct atp_change c;
        assert_int_equal(atp_proto_dec_changes_resp(f, &r), 0);
        assert_int_equal(r.network, (f->flags & ATP_FLAG_NETWORK) != 0);
        outf(o, " next_cursor=%llu more=%d count=%u", (unsigned long long)r.next_cursor, r.more,
             r.count);
        uint32_t seen = 0;
        while (atp_proto_changes_next(&r, &c)) {
            out_str(o, "sku", c.sku);
            out_str(o, "loc", c.loc);
            outf(o, " atp=%lld", (long long)c.atp);
            seen++;
        }
        assert_int_equal(seen, r.count);
        return;
    }
    case ATP_OP_RESERVE:
    case ATP_OP_COMMIT:
    case ATP_OP_RELEASE:
    case ATP_OP_EXTEND:
    case ATP_OP_GET_RESERVATION: {
        struct atp_proto_resv *r = malloc(sizeof(*r));
        bool replayed = false;
        assert_non_null(r);
        assert_int_equal(atp_proto_dec_resv_resp(f, r, &replayed), 0);
        assert_int_equal(replayed, (f->flags & ATP_FLAG_REPLAYED) != 0);
        outf(o, " res_id=%llu state=%u", (unsigned long long)r->id, r->state);
        out_str(o, "channel", r->channel);
        out_str(o, "key", r->key);
        outf(o, " created_us=%llu expires_us=%llu ttl_ms=%llu count=%u",
             (unsigned long long)r->created_us, (unsigned long long)r->expires_us,
             (unsigned long long)r->ttl_ms, r->nlines);
        for (uint32_t i = 0; i < r->nlines; i++) {
            out_str(o, "sku", r->lines[i].sku);
            out_str(o, "loc", r->lines[i].loc);
            outf(o, " qty=%lld fulfilled=%d", (long long)r->lines[i].qty, r->lines[i].fulfilled);
        }
        free(r);
        return;
    }
    case ATP_OP_ADJUST: {
        int64_t v;
        assert_int_equal(atp_proto_dec_adjust_resp(f, &v), 0);
        outf(o, " on_hand=%lld", (long long)v);
        return;
    }
    case ATP_OP_SET:
        assert_int_equal(atp_proto_dec_empty_resp(f), 0);
        return;
    case ATP_OP_STATS: {
        struct atp_proto_stats_resp r;
        struct atp_slice name;
        int64_t value;
        assert_int_equal(atp_proto_dec_stats_resp(f, &r), 0);
        outf(o, " count=%u", r.count);
        while (atp_proto_stats_next(&r, &name, &value)) {
            out_str(o, "name", name);
            outf(o, " value=%lld", (long long)value);
        }
        return;
    }
    }
    fail_msg("success response with unknown op 0x%02x", op);
}

static void decode_to_meaning(const uint8_t *bytes, size_t len, struct out *o)
{
    struct atp_frame f;
    assert_int_equal(atp_proto_frame(bytes, len, 0, &f), (ssize_t)len);
    bool response = f.opcode & ATP_OP_RESPONSE;
    o->len = 0;
    outf(o, "%s", response ? "response:" : "request:");
    out_op(o, f.opcode);
    outf(o, " id=%llu", (unsigned long long)f.id);
    if (response)
        outf(o, " status=%s", atp_error_name(atp_error_from_wire(f.status)));
    if (f.flags)
        outf(o, " flags=0x%04x", f.flags);
    if (response)
        decode_response(o, &f);
    else
        decode_request(o, &f);
}

/* --- the test ------------------------------------------------------------- */

static size_t parse_hex(const char *s, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    while (*s) {
        while (*s == ' ')
            s++;
        if (!*s || *s == '\n')
            break;
        char *end;
        unsigned long v = strtoul(s, &end, 16);
        assert_true(end == s + 2 && v <= 255);
        assert_true(n < cap);
        buf[n++] = (uint8_t)v;
        s = end;
    }
    return n;
}

static void check_file(void **state)
{
    const char *name = *state;
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.txt", vector_dir, name);
    FILE *fp = fopen(path, "r");
    if (!fp)
        fail_msg("cannot open %s", path);

    static char line[16384], meaning[16384];
    static uint8_t want[8192], got[8192];
    int vectors = 0;
    bool have_meaning = false;
    while (fgets(line, sizeof(line), fp)) {
        line[strcspn(line, "\n")] = 0;
        if (line[0] == '#' || line[0] == 0)
            continue;
        if (strncmp(line, "hex:", 4) != 0) {
            assert_false(have_meaning);
            snprintf(meaning, sizeof(meaning), "%s", line);
            have_meaning = true;
            continue;
        }
        assert_true(have_meaning);
        have_meaning = false;
        size_t wlen = parse_hex(line + 4, want, sizeof(want));

        /* meaning -> bytes */
        size_t glen = encode_meaning(meaning, got, sizeof(got));
        assert_true(glen <= sizeof(got));
        if (glen != wlen || memcmp(got, want, wlen) != 0) {
            print_error("encoded bytes differ for: %s\n", meaning);
            for (size_t i = 0; i < glen; i++)
                print_error("%02x ", got[i]);
            print_error("\n");
            fail();
        }
        /* a pass without room reports the same size (the snprintf contract) */
        assert_int_equal(encode_meaning(meaning, got, 0), glen);
        assert_int_equal(encode_meaning(meaning, got, glen - 1), glen);

        /* bytes -> meaning */
        static struct out o;
        decode_to_meaning(want, wlen, &o);
        if (strcmp(o.s, meaning) != 0)
            fail_msg("decoded meaning differs:\n  want %s\n  got  %s", meaning, o.s);
        vectors++;
    }
    fclose(fp);
    assert_false(have_meaning);
    assert_true(vectors >= 2);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s VECTOR_DIR\n", argv[0]);
        return 2;
    }
    vector_dir = argv[1];
    /* One file per operation, and the error frames: a missing file fails. */
    static const char *files[] = {"hello",   "ping",   "get",     "mget",   "changes",
                                  "reserve", "commit", "release", "extend", "get_reservation",
                                  "adjust",  "set",    "stats",   "errors"};
    struct CMUnitTest tests[sizeof(files) / sizeof(files[0])];
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        tests[i] = (struct CMUnitTest){.name = files[i],
                                       .test_func = check_file,
                                       .setup_func = NULL,
                                       .teardown_func = NULL,
                                       .initial_state = (void *)files[i]};
    }
    return _cmocka_run_group_tests("vectors", tests, sizeof(tests) / sizeof(tests[0]), NULL, NULL);
}
