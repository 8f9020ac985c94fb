/*
 * test_codec.c - unit tests of the pure protocol codec (include/atp/proto.h).
 *
 * Round trips with edge values, every strict prefix of every sample frame is
 * "need more", every decoder runs against a guard page (the frame ends flush
 * against a PROT_NONE page, so an over-read crashes), truncated and padded
 * bodies are malformed, counts over limits are refused, out-parameters are
 * untouched on failure, and encoders refuse what the wire cannot carry.
 * Knows the codec only.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/proto.h"

/* --- sample frames: one or more per op and direction --------------------- */

#define MAX_SAMPLES 64
#define SAMPLE_CAP  (64 * 1024)

struct sample {
    char name[48];
    uint8_t *buf;
    size_t len;
};

static struct sample samples[MAX_SAMPLES];
static int nsamples;

static void add_sample(const char *name, const uint8_t *buf, ssize_t len)
{
    assert_true(len >= ATP_PROTO_HDR_SIZE && len <= SAMPLE_CAP);
    assert_true(nsamples < MAX_SAMPLES);
    struct sample *s = &samples[nsamples++];
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->buf = malloc((size_t)len);
    assert_non_null(s->buf);
    memcpy(s->buf, buf, (size_t)len);
    s->len = (size_t)len;
}

/* A slice initializer usable in static data (ATP_SLICE is a compound literal). */
#define S(lit)                                                                                     \
    {                                                                                              \
        (lit), (uint32_t)(sizeof(lit) - 1)                                                         \
    }

static const struct atp_line_req lines3[] = {
    {S("SKU-1"), S("DC-1"), 2},
    {S("SKU-2"), S(""), 1},
    {S("SKU-3"), S("STORE-42"), 7},
};

static void fill_resv(struct atp_proto_resv *r, uint32_t nlines)
{
    memset(r, 0, sizeof(*r));
    r->id = 77;
    r->state = ATP_RES_HELD;
    r->channel = ATP_SLICE("web");
    r->key = ATP_SLICE("order-77");
    r->created_us = 1000;
    r->expires_us = 61000;
    r->ttl_ms = 60;
    r->nlines = nlines;
    for (uint32_t i = 0; i < nlines; i++) {
        r->lines[i].sku = ATP_SLICE("SKU-X");
        r->lines[i].loc = ATP_SLICE("DC-9");
        r->lines[i].qty = (int64_t)i + 1;
        r->lines[i].fulfilled = i & 1;
    }
}

static void build_samples(void)
{
    static uint8_t b[SAMPLE_CAP];
    ssize_t n;
    nsamples = 0;

    struct atp_proto_hello_req hq = {1, 1, ATP_SLICE("test")};
    add_sample("hello req", b, atp_proto_enc_hello_req(b, sizeof(b), 1, &hq));
    struct atp_proto_hello_resp hr = {1, ATP_PROTO_MAX_FRAME, 1000, 32, ATP_SLICE("atpd x")};
    add_sample("hello resp", b, atp_proto_enc_hello_resp(b, sizeof(b), 1, &hr));

    add_sample("ping req empty", b, atp_proto_enc_ping_req(b, sizeof(b), 2, (struct atp_slice){0}));
    add_sample("ping req", b, atp_proto_enc_ping_req(b, sizeof(b), 2, ATP_SLICE("payload")));
    add_sample("ping resp", b, atp_proto_enc_ping_resp(b, sizeof(b), 2, ATP_SLICE("payload")));

    struct atp_proto_get_req gq = {{ATP_SLICE("SKU-1"), ATP_SLICE("web"), ATP_SLICE("DC-1")}, true};
    add_sample("get req", b, atp_proto_enc_get_req(b, sizeof(b), 3, &gq));
    gq.key.loc = (struct atp_slice){"", 0};
    gq.breakdown = false;
    add_sample("get req network", b, atp_proto_enc_get_req(b, sizeof(b), 3, &gq));
    struct atp_proto_get_resp gr = {true, {100, 5, 3, 7, 85}};
    add_sample("get resp breakdown", b, atp_proto_enc_get_resp(b, sizeof(b), 3, &gr));
    gr.breakdown = false;
    add_sample("get resp", b, atp_proto_enc_get_resp(b, sizeof(b), 3, &gr));

    struct atp_proto_key keys[3] = {
        {ATP_SLICE("SKU-1"), ATP_SLICE("web"), ATP_SLICE("DC-1")},
        {ATP_SLICE("SKU-2"), ATP_SLICE("app"), {"", 0}},
        {ATP_SLICE("S"), ATP_SLICE("w"), ATP_SLICE("L")},
    };
    add_sample("mget req", b, atp_proto_enc_mget_req(b, sizeof(b), 4, true, keys, 3));
    for (int bd = 0; bd < 2; bd++) {
        size_t sz = atp_proto_mget_resp_size(3, bd);
        atp_proto_enc_mget_resp_begin(b, 4, 3, bd);
        struct atp_breakdown x = {10, 1, 2, 3, 4};
        atp_proto_enc_mget_resp_put(b, 0, bd, 0, &x);
        atp_proto_enc_mget_resp_put(b, 1, bd, ATP_ENOTFOUND, NULL);
        atp_proto_enc_mget_resp_put(b, 2, bd, 0, &x);
        add_sample(bd ? "mget resp breakdown" : "mget resp", b, (ssize_t)sz);
    }

    struct atp_proto_changes_req cq = {ATP_SLICE("web"), 0, 1000, false, 0};
    add_sample("changes req start", b, atp_proto_enc_changes_req(b, sizeof(b), 12, &cq));
    cq.cursor = UINT64_C(0x5a3c000000001000);
    cq.max = 2;
    cq.network = true;
    add_sample("changes req network", b, atp_proto_enc_changes_req(b, sizeof(b), 12, &cq));
    static const struct atp_change ch[2] = {{S("SKU-1"), S("DC-1"), 42}, {S("SKU-2"), S(""), -1}};
    add_sample("changes resp", b,
               atp_proto_enc_changes_resp(b, sizeof(b), 12, false, 77, true, ch, 2));
    add_sample("changes resp empty", b,
               atp_proto_enc_changes_resp(b, sizeof(b), 12, true, 78, false, NULL, 0));
    add_sample("changes cursor expired", b,
               atp_proto_enc_error(b, sizeof(b), ATP_OP_CHANGES, 12, ATP_ECURSOR,
                                   ATP_SLICE("cursor expired"), NULL, 0));

    add_sample("reserve req", b,
               atp_proto_enc_reserve_req(b, sizeof(b), 5, ATP_SLICE("order-1"), ATP_SLICE("web"),
                                         900000, lines3, 3));
    struct atp_proto_resv rv;
    fill_resv(&rv, 3);
    add_sample("reserve resp", b,
               atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_RESERVE, 5, true, &rv));
    struct atp_shortfall sf[2] = {{5, 4}, {1, 0}};
    add_sample("reserve insufficient", b,
               atp_proto_enc_error(b, sizeof(b), ATP_OP_RESERVE, 5, ATP_EINSUFFICIENT,
                                   ATP_SLICE("insufficient stock"), sf, 2));

    struct atp_proto_id_req iq = {77, 600000};
    add_sample("commit req", b, atp_proto_enc_id_req(b, sizeof(b), ATP_OP_COMMIT, 6, &iq));
    add_sample("release req", b, atp_proto_enc_id_req(b, sizeof(b), ATP_OP_RELEASE, 6, &iq));
    add_sample("extend req", b, atp_proto_enc_id_req(b, sizeof(b), ATP_OP_EXTEND, 6, &iq));
    add_sample("commit resp", b,
               atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_COMMIT, 6, false, &rv));
    add_sample("extend resp", b,
               atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_EXTEND, 6, false, &rv));

    struct atp_proto_getres_req grq = {.by_key = false, .res_id = 77};
    add_sample("getres req id", b, atp_proto_enc_getres_req(b, sizeof(b), 7, &grq));
    grq.by_key = true;
    grq.key = ATP_SLICE("order-77");
    add_sample("getres req key", b, atp_proto_enc_getres_req(b, sizeof(b), 7, &grq));
    fill_resv(&rv, 0);
    add_sample("getres resp no lines", b,
               atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_GET_RESERVATION, 7, false, &rv));

    struct atp_proto_adjust_req aq = {ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), -3};
    add_sample("adjust req", b, atp_proto_enc_adjust_req(b, sizeof(b), 8, &aq));
    add_sample("adjust resp", b, atp_proto_enc_adjust_resp(b, sizeof(b), 8, 139));

    struct atp_proto_set_req sq = {ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), 80, 17};
    add_sample("set req", b, atp_proto_enc_set_req(b, sizeof(b), 9, &sq));
    add_sample("set resp", b, atp_proto_enc_empty_resp(b, sizeof(b), ATP_OP_SET, 9));

    add_sample("stats req", b, atp_proto_enc_stats_req(b, sizeof(b), 10));
    struct atp_proto_stats_enc se;
    atp_proto_enc_stats_begin(&se, b, sizeof(b), 10);
    atp_proto_enc_stats_add(&se, ATP_SLICE("items"), 3);
    atp_proto_enc_stats_add(&se, ATP_SLICE("x"), -1);
    n = atp_proto_enc_stats_end(&se);
    add_sample("stats resp", b, n);

    add_sample("error resp", b,
               atp_proto_enc_error(b, sizeof(b), ATP_OP_GET, 11, ATP_ENOTFOUND,
                                   ATP_SLICE("not found"), NULL, 0));
    add_sample("error unattributed", b,
               atp_proto_enc_error(b, sizeof(b), ATP_OP_NONE, 0, ATP_EBADMAGIC,
                                   ATP_SLICE("bad frame magic"), NULL, 0));
}

static int setup_samples(void **state)
{
    build_samples();
    return 0;
}

static int teardown_samples(void **state)
{
    for (int i = 0; i < nsamples; i++)
        free(samples[i].buf);
    nsamples = 0;
    return 0;
}

/*
 * Decode a frame's body with the decoder its opcode calls for, walking every
 * iterator to the end. Returns the decoder's result.
 */
static int decode_any(const struct atp_frame *f)
{
    if (f->opcode & ATP_OP_RESPONSE) {
        if (f->status) {
            struct atp_proto_error e;
            int rc = atp_proto_dec_error(f, &e);
            for (uint32_t i = 0; rc == 0 && i < e.nshort; i++) {
                struct atp_shortfall s;
                atp_proto_error_shortfall(&e, i, &s);
            }
            return rc;
        }
        switch (f->opcode & ~ATP_OP_RESPONSE) {
        case ATP_OP_HELLO: {
            struct atp_proto_hello_resp r;
            return atp_proto_dec_hello_resp(f, &r);
        }
        case ATP_OP_PING: {
            struct atp_slice p;
            return atp_proto_dec_ping_resp(f, &p);
        }
        case ATP_OP_GET: {
            struct atp_proto_get_resp r;
            return atp_proto_dec_get_resp(f, &r);
        }
        case ATP_OP_MGET: {
            struct atp_proto_mget_resp r;
            int rc = atp_proto_dec_mget_resp(f, &r);
            for (uint32_t i = 0; rc == 0 && i < r.count; i++) {
                struct atp_breakdown x;
                atp_proto_mget_resp_entry(&r, i, &x);
            }
            return rc;
        }
        case ATP_OP_CHANGES: {
            struct atp_proto_changes_resp r;
            struct atp_change c;
            int rc = atp_proto_dec_changes_resp(f, &r);
            uint32_t seen = 0;
            while (rc == 0 && atp_proto_changes_next(&r, &c))
                seen++;
            if (rc == 0)
                assert_int_equal(seen, r.count);
            return rc;
        }
        case ATP_OP_RESERVE:
        case ATP_OP_COMMIT:
        case ATP_OP_RELEASE:
        case ATP_OP_EXTEND:
        case ATP_OP_GET_RESERVATION: {
            static struct atp_proto_resv r;
            return atp_proto_dec_resv_resp(f, &r, NULL);
        }
        case ATP_OP_ADJUST: {
            int64_t v;
            return atp_proto_dec_adjust_resp(f, &v);
        }
        case ATP_OP_SET:
            return atp_proto_dec_empty_resp(f);
        case ATP_OP_STATS: {
            struct atp_proto_stats_resp r;
            struct atp_slice name;
            int64_t v;
            int rc = atp_proto_dec_stats_resp(f, &r);
            uint32_t seen = 0;
            while (rc == 0 && atp_proto_stats_next(&r, &name, &v))
                seen++;
            if (rc == 0)
                assert_int_equal(seen, r.count);
            return rc;
        }
        }
        fail_msg("no decoder for 0x%02x", f->opcode);
    }
    switch (f->opcode) {
    case ATP_OP_HELLO: {
        struct atp_proto_hello_req r;
        return atp_proto_dec_hello_req(f, &r);
    }
    case ATP_OP_PING: {
        struct atp_slice p;
        return atp_proto_dec_ping_req(f, &p);
    }
    case ATP_OP_GET: {
        struct atp_proto_get_req r;
        return atp_proto_dec_get_req(f, &r);
    }
    case ATP_OP_MGET: {
        struct atp_proto_mget_req r;
        struct atp_proto_key k;
        int rc = atp_proto_dec_mget_req(f, 0, &r);
        uint32_t seen = 0;
        while (rc == 0 && atp_proto_mget_next(&r, &k))
            seen++;
        if (rc == 0)
            assert_int_equal(seen, r.count);
        return rc;
    }
    case ATP_OP_CHANGES: {
        struct atp_proto_changes_req r;
        return atp_proto_dec_changes_req(f, &r);
    }
    case ATP_OP_RESERVE: {
        static struct atp_proto_reserve_req r;
        return atp_proto_dec_reserve_req(f, &r);
    }
    case ATP_OP_COMMIT:
    case ATP_OP_RELEASE:
    case ATP_OP_EXTEND: {
        struct atp_proto_id_req r;
        return atp_proto_dec_id_req(f, &r);
    }
    case ATP_OP_GET_RESERVATION: {
        struct atp_proto_getres_req r;
        return atp_proto_dec_getres_req(f, &r);
    }
    case ATP_OP_ADJUST: {
        struct atp_proto_adjust_req r;
        return atp_proto_dec_adjust_req(f, &r);
    }
    case ATP_OP_SET: {
        struct atp_proto_set_req r;
        return atp_proto_dec_set_req(f, &r);
    }
    case ATP_OP_STATS:
        return atp_proto_dec_stats_req(f);
    }
    fail_msg("no decoder for 0x%02x", f->opcode);
    return -1;
}

/* Opaque bodies: any length is valid. */
static bool opaque_body(const struct atp_frame *f)
{
    return (f->opcode & ~ATP_OP_RESPONSE) == ATP_OP_PING;
}

/* --- guard page ------------------------------------------------------------ */

struct guard {
    uint8_t *base;
    size_t page;
};

static struct guard guard_new(void)
{
    struct guard g;
    g.page = (size_t)sysconf(_SC_PAGESIZE);
    /* Samples are at most 64 KiB: enough pages before the guard. */
    size_t usable = ((SAMPLE_CAP + g.page - 1) / g.page) * g.page;
    g.base =
        mmap(NULL, usable + g.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g.base != MAP_FAILED);
    assert_int_equal(mprotect(g.base + usable, g.page, PROT_NONE), 0);
    g.page = usable; /* from here on: bytes before the guard */
    return g;
}

static void guard_free(struct guard *g)
{
    munmap(g->base, g->page + (size_t)sysconf(_SC_PAGESIZE));
}

/* Copy len bytes so that they end exactly at the guard page. */
static uint8_t *flush(struct guard *g, const uint8_t *src, size_t len)
{
    assert_true(len <= g->page);
    uint8_t *p = g->base + g->page - len;
    if (len)
        memcpy(p, src, len);
    return p;
}

/* --- tests ---------------------------------------------------------------- */

static void test_samples_decode(void **state)
{
    struct guard g = guard_new();
    for (int i = 0; i < nsamples; i++) {
        struct sample *s = &samples[i];
        const uint8_t *p = flush(&g, s->buf, s->len);
        struct atp_frame f;
        assert_int_equal(atp_proto_frame(p, s->len, 0, &f), (ssize_t)s->len);
        if (decode_any(&f) != 0)
            fail_msg("sample %s does not decode", s->name);
    }
    guard_free(&g);
}

static void test_every_prefix_needs_more(void **state)
{
    struct guard g = guard_new();
    for (int i = 0; i < nsamples; i++) {
        struct sample *s = &samples[i];
        for (size_t k = 0; k < s->len; k++) {
            const uint8_t *p = flush(&g, s->buf, k);
            struct atp_frame f;
            memset(&f, 0xa5, sizeof(f));
            ssize_t rc = atp_proto_frame(p, k, 0, &f);
            if (rc != 0)
                fail_msg("%s: prefix of %zu/%zu bytes gives %zd", s->name, k, s->len, rc);
        }
    }
    guard_free(&g);
}

/*
 * The header claims a shorter (or longer) body than the decoder needs: every
 * truncation of every body, and one extra byte, is EMALFORMED and never reads
 * past the frame (the frame ends at the guard page).
 */
static void test_truncated_bodies_are_malformed(void **state)
{
    struct guard g = guard_new();
    static uint8_t tmp[SAMPLE_CAP + 1];
    for (int i = 0; i < nsamples; i++) {
        struct sample *s = &samples[i];
        size_t body = s->len - ATP_PROTO_HDR_SIZE;
        for (size_t cut = 0; cut <= body + 1; cut++) {
            if (cut == body)
                continue;
            memcpy(tmp, s->buf, s->len);
            tmp[s->len] = 0; /* the extra byte when cut == body + 1 */
            tmp[16] = (uint8_t)cut;
            tmp[17] = (uint8_t)(cut >> 8);
            tmp[18] = (uint8_t)(cut >> 16);
            tmp[19] = 0;
            size_t len = ATP_PROTO_HDR_SIZE + cut;
            const uint8_t *p = flush(&g, tmp, len);
            struct atp_frame f;
            assert_int_equal(atp_proto_frame(p, len, 0, &f), (ssize_t)len);
            int rc = decode_any(&f);
            if (opaque_body(&f))
                assert_int_equal(rc, 0);
            else if (rc != ATP_EMALFORMED && rc != ATP_ETOOMANY)
                fail_msg("%s: body cut to %zu/%zu gives %d", s->name, cut, body, rc);
        }
    }
    guard_free(&g);
}

/* Every single-byte change of a body either decodes or fails cleanly. */
static void test_body_bitflips_stay_in_bounds(void **state)
{
    struct guard g = guard_new();
    static uint8_t tmp[SAMPLE_CAP];
    for (int i = 0; i < nsamples; i++) {
        struct sample *s = &samples[i];
        for (size_t at = ATP_PROTO_HDR_SIZE; at < s->len; at++) {
            static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0xff};
            for (size_t v = 0; v < sizeof(vals); v++) {
                memcpy(tmp, s->buf, s->len);
                tmp[at] = vals[v];
                const uint8_t *p = flush(&g, tmp, s->len);
                struct atp_frame f;
                assert_int_equal(atp_proto_frame(p, s->len, 0, &f), (ssize_t)s->len);
                int rc = decode_any(&f);
                assert_true(rc == 0 || rc == ATP_EMALFORMED || rc == ATP_ETOOMANY);
            }
        }
    }
    guard_free(&g);
}

static void test_header_errors(void **state)
{
    uint8_t b[64];
    struct atp_frame f;
    struct guard g = guard_new();

    /* Bad magic is seen from the first byte. */
    const uint8_t http[] = "GET / HTTP/1.1\r\n";
    assert_int_equal(atp_proto_frame(flush(&g, http, 1), 1, 0, &f), ATP_EBADMAGIC);
    const uint8_t half[] = {0x41, 0x00};
    assert_int_equal(atp_proto_frame(flush(&g, half, 2), 2, 0, &f), ATP_EBADMAGIC);
    assert_int_equal(atp_proto_frame(flush(&g, half, 1), 1, 0, &f), 0);
    assert_int_equal(atp_proto_frame(flush(&g, half, 0), 0, 0, &f), 0);

    /* Wrong version: the header is still reported so the error echoes the id. */
    ssize_t n = atp_proto_enc_stats_req(b, sizeof(b), 4242);
    b[2] = 2;
    memset(&f, 0, sizeof(f));
    assert_int_equal(atp_proto_frame(flush(&g, b, (size_t)n), (size_t)n, 0, &f), ATP_EVERSION);
    assert_int_equal(f.id, 4242);
    assert_int_equal(f.opcode, ATP_OP_STATS);

    /* A length over the limit, including one that would wrap a 32-bit sum. */
    n = atp_proto_enc_hdr(b, sizeof(b), ATP_OP_PING, 0, 0, 99, 0xffffffffu);
    assert_int_equal(n, ATP_PROTO_HDR_SIZE);
    memset(&f, 0, sizeof(f));
    assert_int_equal(atp_proto_frame(flush(&g, b, 20), 20, 0, &f), ATP_ETOOLARGE);
    assert_int_equal(f.id, 99);
    assert_int_equal(f.body_len, 0xffffffffu);
    assert_null(f.body);
    n = atp_proto_enc_hdr(b, sizeof(b), ATP_OP_PING, 0, 0, 1, ATP_PROTO_MAX_FRAME - 20);
    assert_int_equal(atp_proto_frame(flush(&g, b, 20), 20, 0, &f), 0); /* fits: need more */
    n = atp_proto_enc_hdr(b, sizeof(b), ATP_OP_PING, 0, 0, 1, ATP_PROTO_MAX_FRAME - 19);
    assert_int_equal(atp_proto_frame(flush(&g, b, 20), 20, 0, &f), ATP_ETOOLARGE);
    /* A server-chosen lower limit. */
    n = atp_proto_enc_hdr(b, sizeof(b), ATP_OP_PING, 0, 0, 1, 100);
    assert_int_equal(atp_proto_frame(flush(&g, b, 20), 20, 120, &f), 0);
    assert_int_equal(atp_proto_frame(flush(&g, b, 20), 20, 119, &f), ATP_ETOOLARGE);

    /* Bad magic leaves *ret alone. */
    struct atp_frame before;
    memset(&f, 0x5a, sizeof(f));
    before = f;
    assert_int_equal(atp_proto_frame(flush(&g, http, 16), 16, 0, &f), ATP_EBADMAGIC);
    assert_memory_equal(&f, &before, sizeof(f));

    /* Sizing a receive buffer: the header size, then header + body. */
    n = atp_proto_enc_hdr(b, sizeof(b), ATP_OP_PING, 0, 0, 1, 300);
    assert_int_equal(atp_proto_frame_need(b, 0), ATP_PROTO_HDR_SIZE);
    assert_int_equal(atp_proto_frame_need(b, 19), ATP_PROTO_HDR_SIZE);
    assert_int_equal(atp_proto_frame_need(b, 20), 320);

    /* Two frames back to back: the first is reported, the rest waits. */
    uint8_t two[64];
    ssize_t a = atp_proto_enc_stats_req(two, sizeof(two), 1);
    ssize_t c = atp_proto_enc_ping_req(two + a, sizeof(two) - (size_t)a, 2, ATP_SLICE("xy"));
    assert_int_equal(atp_proto_frame(two, (size_t)(a + c), 0, &f), a);
    assert_int_equal(f.id, 1);
    assert_int_equal(atp_proto_frame(two + a, (size_t)c, 0, &f), c);
    assert_int_equal(f.id, 2);
    guard_free(&g);
}

static struct atp_frame frame_of(const uint8_t *b, ssize_t n)
{
    struct atp_frame f;
    assert_true(n > 0);
    assert_int_equal(atp_proto_frame(b, (size_t)n, 0, &f), n);
    return f;
}

static void test_request_header_fields_checked(void **state)
{
    uint8_t b[256];
    struct atp_proto_get_req gq = {{ATP_SLICE("S"), ATP_SLICE("web"), {"", 0}}, false};
    ssize_t n = atp_proto_enc_get_req(b, sizeof(b), 1, &gq);
    struct atp_proto_get_req out;

    b[4] = 0x02; /* an undefined flag */
    struct atp_frame f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_get_req(&f, &out), ATP_EMALFORMED);
    b[4] = 0;
    b[6] = 1; /* a status in a request */
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_get_req(&f, &out), ATP_EMALFORMED);
    b[6] = 0;
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_get_req(&f, &out), 0);

    /* BREAKDOWN is not a flag of STATS. */
    n = atp_proto_enc_stats_req(b, sizeof(b), 1);
    b[4] = 1;
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_stats_req(&f), ATP_EMALFORMED);
}

static void test_roundtrip_edges(void **state)
{
    static uint8_t b[SAMPLE_CAP];
    char big[256];
    memset(big, 'A', sizeof(big));

    /* str8 of 255 bytes and integer extremes. */
    struct atp_proto_set_req sq = {{big, 255}, {big, 32}, INT64_MIN, UINT64_MAX};
    ssize_t n = atp_proto_enc_set_req(b, sizeof(b), UINT64_MAX, &sq);
    struct atp_frame f = frame_of(b, n);
    assert_int_equal(f.id, UINT64_MAX);
    struct atp_proto_set_req so;
    assert_int_equal(atp_proto_dec_set_req(&f, &so), 0);
    assert_int_equal(so.sku.len, 255);
    assert_ptr_equal(so.sku.p, b + ATP_PROTO_HDR_SIZE + 1); /* zero copy */
    assert_int_equal(so.loc.len, 32);
    assert_true(so.on_hand == INT64_MIN);
    assert_true(so.seq == UINT64_MAX);

    /* Too long for str8: the encoder refuses. */
    sq.sku.len = 256;
    assert_int_equal(atp_proto_enc_set_req(b, sizeof(b), 1, &sq), ATP_EINVAL);

    /* RESERVE with the maximum number of lines. */
    struct atp_line_req lines[ATP_MAX_LINES + 1];
    for (int i = 0; i <= ATP_MAX_LINES; i++)
        lines[i] = (struct atp_line_req){ATP_SLICE("SKU"), {"", 0}, INT64_MAX - i};
    n = atp_proto_enc_reserve_req(b, sizeof(b), 5, ATP_SLICE("k"), ATP_SLICE("web"), 1, lines,
                                  ATP_MAX_LINES);
    f = frame_of(b, n);
    static struct atp_proto_reserve_req rq;
    assert_int_equal(atp_proto_dec_reserve_req(&f, &rq), 0);
    assert_int_equal(rq.nlines, ATP_MAX_LINES);
    assert_true(rq.lines[ATP_MAX_LINES - 1].qty == INT64_MAX - (ATP_MAX_LINES - 1));
    assert_int_equal(rq.lines[3].loc.len, 0);

    /* One line more is ETOOMANY, and *ret is untouched. */
    n = atp_proto_enc_reserve_req(b, sizeof(b), 5, ATP_SLICE("k"), ATP_SLICE("web"), 1, lines,
                                  ATP_MAX_LINES + 1);
    f = frame_of(b, n);
    memset(&rq, 0x5a, sizeof(rq));
    static struct atp_proto_reserve_req before;
    before = rq;
    assert_int_equal(atp_proto_dec_reserve_req(&f, &rq), ATP_ETOOMANY);
    assert_memory_equal(&rq, &before, sizeof(rq));

    /* A truncated reserve leaves *ret untouched too. */
    n = atp_proto_enc_reserve_req(b, sizeof(b), 5, ATP_SLICE("k"), ATP_SLICE("web"), 1, lines, 2);
    b[16]--; /* body one byte shorter */
    f = frame_of(b, n - 1);
    assert_int_equal(atp_proto_dec_reserve_req(&f, &rq), ATP_EMALFORMED);
    assert_memory_equal(&rq, &before, sizeof(rq));

    /* The reservation record with the maximum number of lines. */
    static struct atp_proto_resv rv, ro;
    fill_resv(&rv, ATP_MAX_LINES);
    n = atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_RESERVE, 9, true, &rv);
    f = frame_of(b, n);
    bool replayed = false;
    assert_int_equal(atp_proto_dec_resv_resp(&f, &ro, &replayed), 0);
    assert_true(replayed);
    assert_int_equal(ro.nlines, ATP_MAX_LINES);
    assert_int_equal(ro.id, 77);
    assert_int_equal(ro.lines[5].qty, 6);
    assert_true(ro.lines[5].fulfilled);
    assert_false(ro.lines[4].fulfilled);
    assert_memory_equal(ro.key.p, "order-77", 8);
    /* REPLAYED only belongs to RESERVE. */
    assert_int_equal(atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_COMMIT, 9, true, &rv),
                     ATP_EINVAL);
    rv.nlines = ATP_MAX_LINES + 1;
    assert_int_equal(atp_proto_enc_resv_resp(b, sizeof(b), ATP_OP_COMMIT, 9, false, &rv),
                     ATP_EINVAL);
}

static void test_mget_limits(void **state)
{
    static uint8_t b[SAMPLE_CAP * 2];
    static struct atp_proto_key keys[ATP_PROTO_MAX_KEYS + 1];
    char sku[16][8];
    for (int i = 0; i < 16; i++)
        snprintf(sku[i], sizeof(sku[i]), "S%d", i);
    for (int i = 0; i <= ATP_PROTO_MAX_KEYS; i++)
        keys[i] = (struct atp_proto_key){atp_slice_cstr(sku[i % 16]), ATP_SLICE("web"), {"", 0}};

    ssize_t n = atp_proto_enc_mget_req(b, sizeof(b), 1, false, keys, ATP_PROTO_MAX_KEYS);
    struct atp_frame f = frame_of(b, n);
    struct atp_proto_mget_req r;
    assert_int_equal(atp_proto_dec_mget_req(&f, 0, &r), 0);
    assert_int_equal(r.count, ATP_PROTO_MAX_KEYS);
    struct atp_proto_key k;
    for (int i = 0; i < ATP_PROTO_MAX_KEYS; i++) {
        assert_true(atp_proto_mget_next(&r, &k));
        assert_int_equal(k.sku.len, strlen(sku[i % 16]));
        assert_memory_equal(k.sku.p, sku[i % 16], k.sku.len);
    }
    assert_false(atp_proto_mget_next(&r, &k));
    /* A server limit lower than the default. */
    assert_int_equal(atp_proto_dec_mget_req(&f, 999, &r), ATP_ETOOMANY);

    n = atp_proto_enc_mget_req(b, sizeof(b), 1, false, keys, ATP_PROTO_MAX_KEYS + 1);
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_mget_req(&f, 0, &r), ATP_ETOOMANY);

    /* The response: 1000 entries at computable offsets. */
    size_t size = atp_proto_mget_resp_size(ATP_PROTO_MAX_KEYS, true);
    assert_int_equal(size, 20 + 2 + 42 * ATP_PROTO_MAX_KEYS);
    atp_proto_enc_mget_resp_begin(b, 3, ATP_PROTO_MAX_KEYS, true);
    for (uint32_t i = 0; i < ATP_PROTO_MAX_KEYS; i++) {
        struct atp_breakdown x = {i, i + 1, i + 2, i + 3, (int64_t)i * 10};
        atp_proto_enc_mget_resp_put(b, ATP_PROTO_MAX_KEYS - 1 - i, true, i % 3 ? 0 : ATP_ENOCHANNEL,
                                    &x);
    }
    f = frame_of(b, (ssize_t)size);
    struct atp_proto_mget_resp mr;
    assert_int_equal(atp_proto_dec_mget_resp(&f, &mr), 0);
    assert_int_equal(mr.count, ATP_PROTO_MAX_KEYS);
    for (uint32_t j = 0; j < ATP_PROTO_MAX_KEYS; j++) {
        uint32_t i = ATP_PROTO_MAX_KEYS - 1 - j;
        struct atp_breakdown x;
        int code = atp_proto_mget_resp_entry(&mr, j, &x);
        if (i % 3) {
            assert_int_equal(code, 0);
            assert_int_equal(x.atp, (int64_t)i * 10);
            assert_int_equal(x.safety, i + 3);
        } else {
            assert_int_equal(code, ATP_ENOCHANNEL);
            assert_int_equal(x.atp, 0); /* errors carry zeros */
            assert_int_equal(x.on_hand, 0);
        }
    }

    /* Counts the wire cannot carry. */
    assert_int_equal(atp_proto_enc_mget_req(NULL, 0, 1, false, keys, 65536), ATP_EINVAL);
}

static void test_changes(void **state)
{
    static uint8_t b[SAMPLE_CAP * 4];
    struct atp_frame f;

    /* Request: every field back, the slice into the frame, NETWORK as a flag. */
    struct atp_proto_changes_req q = {ATP_SLICE("marketplace"), UINT64_MAX, 65535, true, 0};
    ssize_t n = atp_proto_enc_changes_req(b, sizeof(b), 5, &q);
    assert_int_equal(n, 20 + 1 + 11 + 8 + 2);
    f = frame_of(b, n);
    assert_int_equal(f.opcode, ATP_OP_CHANGES);
    assert_int_equal(f.flags, ATP_FLAG_NETWORK);
    struct atp_proto_changes_req r;
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), 0);
    assert_int_equal(r.channel.len, 11);
    assert_ptr_equal(r.channel.p, b + ATP_PROTO_HDR_SIZE + 1);
    assert_true(r.cursor == UINT64_MAX);
    assert_int_equal(r.max, 65535);
    assert_true(r.network);
    q.network = false;
    q.cursor = 0;
    n = atp_proto_enc_changes_req(b, sizeof(b), 5, &q);
    f = frame_of(b, n);
    assert_int_equal(f.flags, 0);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), 0);
    assert_false(r.network);
    assert_true(r.cursor == 0);
    assert_int_equal(r.wait_ms, 0);

    /* WAIT: the flag and a u32 after max, only when wait_ms is not 0. */
    struct atp_proto_changes_req qw = {ATP_SLICE("web"), 77, 10, true, 0xfedcba98u};
    n = atp_proto_enc_changes_req(b, sizeof(b), 6, &qw);
    assert_int_equal(n, 20 + 1 + 3 + 8 + 2 + 4);
    f = frame_of(b, n);
    assert_int_equal(f.flags, ATP_FLAG_NETWORK | ATP_FLAG_WAIT);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), 0);
    assert_true(r.wait_ms == 0xfedcba98u);
    assert_true(r.network);
    assert_true(r.cursor == 77);
    assert_int_equal(r.max, 10);
    /* WAIT without its u32, or the u32 without WAIT: EMALFORMED. */
    f = frame_of(b, n);
    f.body_len -= 4;
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), ATP_EMALFORMED);
    f = frame_of(b, n);
    f.flags = ATP_FLAG_NETWORK;
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), ATP_EMALFORMED);
    /* WAIT with a wait of 0 (which the encoder never writes): EMALFORMED. */
    memset(b + n - 4, 0, 4);
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), ATP_EMALFORMED);

    n = atp_proto_enc_changes_req(b, sizeof(b), 5, &q);
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), 0);
    assert_int_equal(r.wait_ms, 0);

    /* An undefined flag, a body one byte short, one byte over: EMALFORMED,
     * and *ret untouched. */
    struct atp_proto_changes_req before;
    memset(&r, 0x5a, sizeof(r));
    before = r;
    b[4] = 0x04;
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), ATP_EMALFORMED);
    b[4] = 0;
    b[16]--;
    f = frame_of(b, n - 1);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), ATP_EMALFORMED);
    b[16] += 2;
    b[n] = 0;
    f = frame_of(b, n + 1);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), ATP_EMALFORMED);
    assert_memory_equal(&r, &before, sizeof(r));
    /* The length restored: the same bytes decode again. */
    b[16] -= 1;
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_req(&f, &r), 0);

    /* The encoder refuses what a u16 or a str8 cannot carry. */
    q.max = 65536;
    assert_int_equal(atp_proto_enc_changes_req(b, sizeof(b), 5, &q), ATP_EINVAL);
    char big[256];
    memset(big, 'c', sizeof(big));
    q.max = 1;
    q.channel = (struct atp_slice){big, 256};
    assert_int_equal(atp_proto_enc_changes_req(b, sizeof(b), 5, &q), ATP_EINVAL);

    /* Response: 1000 entries of the longest names, walked back in order. */
    static struct atp_change ch[ATP_CHANGES_MAX];
    for (uint32_t i = 0; i < ATP_CHANGES_MAX; i++)
        ch[i] = (struct atp_change){
            {big, ATP_SKU_MAX - (i % 7)}, {big, i % 3 ? ATP_LOC_MAX : 0}, (int64_t)i - 500};
    n = atp_proto_enc_changes_resp(b, sizeof(b), 6, false, UINT64_C(0xfedc000000000001), true, ch,
                                   ATP_CHANGES_MAX);
    assert_true(n > 0 && (size_t)n <= sizeof(b));
    f = frame_of(b, n);
    assert_int_equal(f.opcode, ATP_OP_RESPONSE | ATP_OP_CHANGES);
    struct atp_proto_changes_resp cr;
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), 0);
    assert_true(cr.next_cursor == UINT64_C(0xfedc000000000001));
    assert_true(cr.more);
    assert_false(cr.network);
    assert_int_equal(cr.count, ATP_CHANGES_MAX);
    struct atp_proto_changes_resp again = cr;
    struct atp_change c;
    for (uint32_t i = 0; i < ATP_CHANGES_MAX; i++) {
        assert_true(atp_proto_changes_next(&cr, &c));
        assert_int_equal(c.sku.len, ATP_SKU_MAX - (i % 7));
        assert_int_equal(c.loc.len, i % 3 ? ATP_LOC_MAX : 0);
        assert_int_equal(c.atp, (int64_t)i - 500);
        assert_true((const uint8_t *)c.sku.p > b && (const uint8_t *)c.sku.p < b + n);
    }
    assert_false(atp_proto_changes_next(&cr, &c));
    assert_true(atp_proto_changes_next(&again, &c)); /* a copy restarts */
    assert_int_equal(c.atp, -500);

    /* No entries, NETWORK: the flag comes back, the iterator is empty. */
    n = atp_proto_enc_changes_resp(b, sizeof(b), 7, true, 9, false, NULL, 0);
    assert_int_equal(n, 20 + 8 + 1 + 2);
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), 0);
    assert_true(cr.network);
    assert_false(cr.more);
    assert_int_equal(cr.next_cursor, 9);
    assert_false(atp_proto_changes_next(&cr, &c));

    /* `more` other than 0 or 1, an undefined flag, a count past the end,
     * trailing bytes, another op's opcode: malformed, *ret untouched. */
    struct atp_proto_changes_resp rbefore;
    memset(&cr, 0x5a, sizeof(cr));
    rbefore = cr;
    n = atp_proto_enc_changes_resp(b, sizeof(b), 8, false, 9, true, ch, 1);
    b[ATP_PROTO_HDR_SIZE + 8] = 2;
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), ATP_EMALFORMED);
    b[ATP_PROTO_HDR_SIZE + 8] = 1;
    b[4] = 0x02;
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), ATP_EMALFORMED);
    b[4] = 0;
    b[ATP_PROTO_HDR_SIZE + 9] = 2; /* count 2, one entry */
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), ATP_EMALFORMED);
    b[ATP_PROTO_HDR_SIZE + 9] = 1;
    b[16]++;
    b[n] = 0;
    f = frame_of(b, n + 1);
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), ATP_EMALFORMED);
    b[16]--;
    f = frame_of(b, n);
    f.opcode = ATP_OP_RESPONSE | ATP_OP_MGET;
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), ATP_EMALFORMED);
    assert_memory_equal(&cr, &rbefore, sizeof(cr));
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_changes_resp(&f, &cr), 0);
    assert_int_equal(cr.count, 1);

    /* Counts and names the wire cannot carry. */
    assert_int_equal(atp_proto_enc_changes_resp(NULL, 0, 1, false, 1, false, ch, 65536),
                     ATP_EINVAL);
    ch[0].sku.len = 256;
    assert_int_equal(atp_proto_enc_changes_resp(b, sizeof(b), 1, false, 1, false, ch, 1),
                     ATP_EINVAL);
}

static void test_error_frames(void **state)
{
    uint8_t b[512];
    struct atp_proto_error e;

    assert_int_equal(atp_proto_enc_error(b, sizeof(b), ATP_OP_GET, 1, 0, ATP_SLICE("x"), NULL, 0),
                     ATP_EINVAL);
    /* -errno travels as the system status and reads back as EINTERNAL. */
    ssize_t n = atp_proto_enc_error(b, sizeof(b), ATP_OP_GET, 1, -ENOMEM,
                                    ATP_SLICE("out of memory"), NULL, 0);
    struct atp_frame f = frame_of(b, n);
    assert_int_equal(f.status, ATP_WIRE_SYSTEM);
    assert_int_equal(f.opcode, ATP_OP_RESPONSE | ATP_OP_GET);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_EINTERNAL);
    assert_int_equal(e.message.len, 13);

    /* Shortfalls belong to RESERVE/EINSUFFICIENT only. */
    struct atp_shortfall sf[1] = {{3, 1}};
    assert_int_equal(
        atp_proto_enc_error(b, sizeof(b), ATP_OP_GET, 1, ATP_EINSUFFICIENT, ATP_SLICE("m"), sf, 1),
        ATP_EINVAL);
    assert_int_equal(
        atp_proto_enc_error(b, sizeof(b), ATP_OP_RESERVE, 1, ATP_ECONFLICT, ATP_SLICE("m"), sf, 1),
        ATP_EINVAL);
    /* RESERVE/EINSUFFICIENT always carries the count, even when it is 0. */
    n = atp_proto_enc_error(b, sizeof(b), ATP_OP_RESERVE, 1, ATP_EINSUFFICIENT, ATP_SLICE("m"), sf,
                            0);
    assert_int_equal(n, 20 + 2 + 1 + 2);
    n = atp_proto_enc_error(b, sizeof(b), ATP_OP_RESERVE, 1, ATP_EINSUFFICIENT, ATP_SLICE("m"), sf,
                            1);
    f = frame_of(b, n);
    /* The same bytes under another opcode or status are malformed. */
    f.opcode = ATP_OP_RESPONSE | ATP_OP_GET;
    assert_int_equal(atp_proto_dec_error(&f, &e), ATP_EMALFORMED);
    f.opcode = ATP_OP_RESPONSE | ATP_OP_RESERVE;
    f.status = (uint16_t)atp_error_wire(ATP_ECONFLICT);
    assert_int_equal(atp_proto_dec_error(&f, &e), ATP_EMALFORMED);
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_EINSUFFICIENT);
    assert_int_equal(e.nshort, 1);
    struct atp_shortfall s;
    atp_proto_error_shortfall(&e, 0, &s);
    assert_int_equal(s.requested, 3);
    assert_int_equal(s.available, 1);

    /* A success decoder refuses an error frame, and vice versa. */
    struct atp_proto_get_resp gr;
    assert_int_equal(atp_proto_dec_get_resp(&f, &gr), ATP_EMALFORMED);
    n = atp_proto_enc_adjust_resp(b, sizeof(b), 1, 5);
    f = frame_of(b, n);
    assert_int_equal(atp_proto_dec_error(&f, &e), ATP_EMALFORMED);
    /* ... and a response for another op. */
    int64_t v;
    assert_int_equal(atp_proto_dec_adjust_resp(&f, &v), 0);
    assert_int_equal(v, 5);
    f.opcode = ATP_OP_RESPONSE | ATP_OP_GET;
    assert_int_equal(atp_proto_dec_adjust_resp(&f, &v), ATP_EMALFORMED);

    /* Every status in the table round-trips through the wire. */
#define CHECK_ROW(NAME, CODE, WIRE, HTTP, SLUG, MSG)                                               \
    if (CODE != 0) {                                                                               \
        n = atp_proto_enc_error(b, sizeof(b), ATP_OP_PING, 7, CODE, ATP_SLICE(MSG), NULL, 0);      \
        f = frame_of(b, n);                                                                        \
        assert_int_equal(f.status, WIRE);                                                          \
        assert_int_equal(atp_proto_dec_error(&f, &e), 0);                                          \
        assert_int_equal(e.code, CODE);                                                            \
        assert_int_equal(e.message.len, strlen(MSG));                                              \
    }
    ATP_ERRORS(CHECK_ROW)
#undef CHECK_ROW
}

static void test_snprintf_contract(void **state)
{
    /* Every sample re-encoded into too small a buffer reports its full size and
     * never writes past cap. */
    uint8_t b[SAMPLE_CAP + 16];
    struct atp_proto_get_req gq = {{ATP_SLICE("SKU-1"), ATP_SLICE("web"), ATP_SLICE("DC-1")}, true};
    ssize_t full = atp_proto_enc_get_req(NULL, 0, 3, &gq);
    assert_true(full > ATP_PROTO_HDR_SIZE);
    for (ssize_t cap = 0; cap <= full; cap++) {
        memset(b, 0xee, sizeof(b));
        assert_int_equal(atp_proto_enc_get_req(b, (size_t)cap, 3, &gq), full);
        for (size_t i = (size_t)cap; i < sizeof(b); i++)
            assert_int_equal(b[i], 0xee);
    }
    /* The stats builder likewise. */
    for (size_t cap = 0; cap < 64; cap++) {
        memset(b, 0xee, sizeof(b));
        struct atp_proto_stats_enc se;
        atp_proto_enc_stats_begin(&se, b, cap, 1);
        atp_proto_enc_stats_add(&se, ATP_SLICE("items"), 3);
        atp_proto_enc_stats_add(&se, ATP_SLICE("skus"), 4);
        assert_int_equal(atp_proto_enc_stats_end(&se), 20 + 2 + 6 + 8 + 5 + 8);
        for (size_t i = cap; i < sizeof(b); i++)
            assert_int_equal(b[i], 0xee);
    }
    /* A stat name over 255 bytes is refused. */
    char big[300];
    memset(big, 'n', sizeof(big));
    struct atp_proto_stats_enc se;
    atp_proto_enc_stats_begin(&se, b, sizeof(b), 1);
    atp_proto_enc_stats_add(&se, (struct atp_slice){big, 256}, 1);
    assert_int_equal(atp_proto_enc_stats_end(&se), ATP_EINVAL);
    /* Unknown opcodes for the id encoder. */
    struct atp_proto_id_req iq = {1, 1};
    assert_int_equal(atp_proto_enc_id_req(b, sizeof(b), ATP_OP_GET, 1, &iq), ATP_EINVAL);
}

static void test_op_names(void **state)
{
    assert_string_equal(atp_proto_op_name(ATP_OP_GET), "GET");
    assert_string_equal(atp_proto_op_name(ATP_OP_CHANGES), "CHANGES");
    assert_string_equal(atp_proto_op_name(ATP_OP_RESPONSE | ATP_OP_STATS), "STATS");
    assert_string_equal(atp_proto_op_name(ATP_OP_RESPONSE), "ERROR");
    assert_null(atp_proto_op_name(0x55));
    assert_null(atp_proto_op_name(ATP_OP_NONE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_samples_decode, setup_samples, teardown_samples),
        cmocka_unit_test_setup_teardown(test_every_prefix_needs_more, setup_samples,
                                        teardown_samples),
        cmocka_unit_test_setup_teardown(test_truncated_bodies_are_malformed, setup_samples,
                                        teardown_samples),
        cmocka_unit_test_setup_teardown(test_body_bitflips_stay_in_bounds, setup_samples,
                                        teardown_samples),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_request_header_fields_checked),
        cmocka_unit_test(test_roundtrip_edges),
        cmocka_unit_test(test_mget_limits),
        cmocka_unit_test(test_changes),
        cmocka_unit_test(test_error_frames),
        cmocka_unit_test(test_snprintf_contract),
        cmocka_unit_test(test_op_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
