/*
 * test_cmd.c - unit tests of the command layer (src/cmd.c): encoded request
 * frames go through atp_cmd_handle against a real store with three channels,
 * and the response frames are decoded and checked, including every error
 * class and the framing rules (need more, broken framing closes, everything
 * else carries on). Knows the codec, the store API and cmd.h.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "atp/proto.h"
#include "cmd.h"
#include "metrics.h"

#define T0 1750000000000000ULL /* now_us used by every request */

struct fx {
    struct atp_store *store;
    struct atp_cmd_ctx ctx;
    struct atp_buf out;
    volatile int refuse;
    uint8_t req[128 * 1024];
    ssize_t req_len;
    uint64_t next_id;
};

static const char *const b2b_locs[] = {"DC-2", "DC-1"};

static void source_collect(void *arg, atp_stat_emit_fn emit, void *emit_arg)
{
    emit(emit_arg, "test_source_value", *(int64_t *)arg);
}

static int64_t source_value = 4242;

/* The store every test starts from: three channels, four shards. */
static void new_store(struct atp_store **ret)
{
    static const struct atp_channel_config channels[] = {
        {.name = "web", .safety_units = 0, .cap = -1},
        {.name = "app", .safety_units = 5, .cap = 50},
        {.name = "b2b", .safety_units = 0, .cap = -1, .locations = b2b_locs, .nlocations = 2},
    };
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 4096;
    cfg.max_skus = 4096;
    cfg.max_reservations = 1024;
    cfg.max_overrides = 64;
    cfg.nshards = 4;
    cfg.feed_records = 1024; /* the smallest change-feed window */
    cfg.channels = channels;
    cfg.nchannels = 3;
    assert_int_equal(atp_store_new(&cfg, ret), 0);
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    new_store(&x->store);
    x->ctx.store = x->store;
    x->ctx.build = "atpd test";
    x->ctx.refuse_writes = &x->refuse;
    x->ctx.sources[0] = (struct atp_stats_source){source_collect, &source_value};
    x->ctx.nsources = 1;
    x->next_id = 1;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    atp_buf_free(&x->out);
    atp_store_free(x->store);
    free(x);
    return 0;
}

/* --- helpers ------------------------------------------------------------- */

/* Run the request in x->req; the output holds exactly one response frame. */
static ssize_t run(struct fx *x)
{
    assert_true(x->req_len > 0 && (size_t)x->req_len <= sizeof(x->req));
    x->out.len = 0;
    ssize_t rc = atp_cmd_handle(&x->ctx, x->req, (size_t)x->req_len, &x->out, T0);
    return rc;
}

/* The one response frame in the output. */
static struct atp_frame response(struct fx *x)
{
    struct atp_frame f;
    assert_int_equal(atp_proto_frame(x->out.data, x->out.len, 0, &f), (ssize_t)x->out.len);
    return f;
}

/* Run and expect a complete, carried-on exchange; returns the response. */
static struct atp_frame exchange(struct fx *x)
{
    assert_int_equal(run(x), x->req_len);
    struct atp_frame f = response(x);
    assert_int_equal(f.id, x->next_id - 1);
    return f;
}

static void expect_error(struct fx *x, int code)
{
    struct atp_frame f = exchange(x);
    struct atp_proto_error e;
    if (f.status == 0)
        fail_msg("expected %s, got success", atp_error_name(code));
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    if (e.code != code)
        fail_msg("expected %s, got %s (%.*s)", atp_error_name(code), atp_error_name(e.code),
                 (int)e.message.len, e.message.p);
    assert_true(e.message.len > 0);
}

static uint64_t id(struct fx *x)
{
    return x->next_id++;
}

static void req_adjust(struct fx *x, const char *sku, const char *loc, int64_t delta)
{
    struct atp_proto_adjust_req r = {atp_slice_cstr(sku), atp_slice_cstr(loc), delta};
    x->req_len = atp_proto_enc_adjust_req(x->req, sizeof(x->req), id(x), &r);
}

static void adjust_ok(struct fx *x, const char *sku, const char *loc, int64_t delta,
                      int64_t want_on_hand)
{
    req_adjust(x, sku, loc, delta);
    struct atp_frame f = exchange(x);
    int64_t on_hand;
    assert_int_equal(atp_proto_dec_adjust_resp(&f, &on_hand), 0);
    assert_int_equal(on_hand, want_on_hand);
}

static void req_get(struct fx *x, const char *sku, const char *channel, const char *loc,
                    bool breakdown)
{
    struct atp_proto_get_req r = {
        {atp_slice_cstr(sku), atp_slice_cstr(channel), atp_slice_cstr(loc)}, breakdown};
    x->req_len = atp_proto_enc_get_req(x->req, sizeof(x->req), id(x), &r);
}

static struct atp_breakdown get_ok(struct fx *x, const char *sku, const char *channel,
                                   const char *loc)
{
    req_get(x, sku, channel, loc, true);
    struct atp_frame f = exchange(x);
    struct atp_proto_get_resp r;
    assert_int_equal(atp_proto_dec_get_resp(&f, &r), 0);
    assert_true(r.breakdown);
    return r.b;
}

static void req_reserve(struct fx *x, const char *key, const char *channel, uint64_t ttl,
                        const struct atp_line_req *lines, uint32_t n)
{
    x->req_len = atp_proto_enc_reserve_req(x->req, sizeof(x->req), id(x), atp_slice_cstr(key),
                                           atp_slice_cstr(channel), ttl, lines, n);
}

static void resv_of(struct fx *x, struct atp_proto_resv *r, bool *replayed)
{
    struct atp_frame f = exchange(x);
    if (f.status) {
        struct atp_proto_error e;
        assert_int_equal(atp_proto_dec_error(&f, &e), 0);
        fail_msg("reservation call failed: %s", atp_error_name(e.code));
    }
    assert_int_equal(atp_proto_dec_resv_resp(&f, r, replayed), 0);
}

static void req_id(struct fx *x, uint8_t op, uint64_t res_id, uint64_t ttl)
{
    struct atp_proto_id_req r = {res_id, ttl};
    x->req_len = atp_proto_enc_id_req(x->req, sizeof(x->req), op, id(x), &r);
}

#define LINE(sku, loc, qty) ((struct atp_line_req){ATP_SLICE(sku), ATP_SLICE(loc), (qty)})

static bool slice_is(struct atp_slice s, const char *c)
{
    return s.len == strlen(c) && memcmp(s.p, c, s.len) == 0;
}

/* --- tests --------------------------------------------------------------- */

static void test_hello_and_ping(void **state)
{
    struct fx *x = *state;
    struct atp_proto_hello_req h = {1, 3, ATP_SLICE("test")};
    x->req_len = atp_proto_enc_hello_req(x->req, sizeof(x->req), id(x), &h);
    struct atp_frame f = exchange(x);
    struct atp_proto_hello_resp hr;
    assert_int_equal(atp_proto_dec_hello_resp(&f, &hr), 0);
    assert_int_equal(hr.version, 1);
    assert_int_equal(hr.max_frame, ATP_PROTO_MAX_FRAME);
    assert_int_equal(hr.max_keys, ATP_PROTO_MAX_KEYS);
    assert_int_equal(hr.max_lines, ATP_MAX_LINES);
    assert_true(slice_is(hr.build, "atpd test"));

    /* Configured limits are announced. */
    x->ctx.max_frame = 65536;
    x->ctx.max_keys = 10;
    x->ctx.max_lines = 4;
    x->req_len = atp_proto_enc_hello_req(x->req, sizeof(x->req), id(x), &h);
    f = exchange(x);
    assert_int_equal(atp_proto_dec_hello_resp(&f, &hr), 0);
    assert_int_equal(hr.max_frame, 65536);
    assert_int_equal(hr.max_keys, 10);
    assert_int_equal(hr.max_lines, 4);

    /* No common version: EVERSION, but the connection carries on. */
    h.min_version = 2;
    x->req_len = atp_proto_enc_hello_req(x->req, sizeof(x->req), id(x), &h);
    expect_error(x, ATP_EVERSION);

    x->req_len = atp_proto_enc_ping_req(x->req, sizeof(x->req), id(x), ATP_SLICE("abc"));
    f = exchange(x);
    struct atp_slice p;
    assert_int_equal(atp_proto_dec_ping_resp(&f, &p), 0);
    assert_true(slice_is(p, "abc"));
}

static void test_get(void **state)
{
    struct fx *x = *state;
    adjust_ok(x, "SKU-1", "DC-1", 100, 100);
    adjust_ok(x, "SKU-1", "DC-2", 30, 30);
    adjust_ok(x, "SKU-1", "DC-1", -10, 90);

    struct atp_breakdown b = get_ok(x, "SKU-1", "web", "DC-1");
    assert_int_equal(b.on_hand, 90);
    assert_int_equal(b.atp, 90);
    b = get_ok(x, "SKU-1", "web", "");
    assert_int_equal(b.atp, 120);
    /* app: safety 5 per item, cap 50. */
    b = get_ok(x, "SKU-1", "app", "DC-1");
    assert_int_equal(b.safety, 5);
    assert_int_equal(b.atp, 50);
    b = get_ok(x, "SKU-1", "app", "DC-2");
    assert_int_equal(b.atp, 25);

    /* Without the breakdown only atp comes back. */
    req_get(x, "SKU-1", "web", "DC-2", false);
    struct atp_frame f = exchange(x);
    struct atp_proto_get_resp r;
    assert_int_equal(atp_proto_dec_get_resp(&f, &r), 0);
    assert_false(r.breakdown);
    assert_int_equal(r.b.atp, 30);
    assert_int_equal(f.body_len, 8);

    req_get(x, "NOPE", "web", "DC-1", false);
    expect_error(x, ATP_ENOTFOUND);
    req_get(x, "NOPE", "web", "", false);
    expect_error(x, ATP_ENOTFOUND);
    req_get(x, "SKU-1", "tv", "DC-1", false);
    expect_error(x, ATP_ENOCHANNEL);
    req_get(x, "SKU 1", "web", "DC-1", false);
    expect_error(x, ATP_EINVAL_SKU);
    req_get(x, "SKU-1", "web", "DC#1", false);
    expect_error(x, ATP_EINVAL_LOC);
}

static void test_mget(void **state)
{
    struct fx *x = *state;
    adjust_ok(x, "A", "DC-1", 10, 10);
    adjust_ok(x, "B", "DC-2", 20, 20);
    struct atp_proto_key keys[] = {
        {ATP_SLICE("A"), ATP_SLICE("web"), ATP_SLICE("DC-1")},
        {ATP_SLICE("B"), ATP_SLICE("web"), {"", 0}},
        {ATP_SLICE("C"), ATP_SLICE("web"), {"", 0}},
        {ATP_SLICE("A"), ATP_SLICE("tv"), {"", 0}},
        {ATP_SLICE("A b"), ATP_SLICE("web"), {"", 0}},
        {ATP_SLICE("B"), ATP_SLICE("app"), ATP_SLICE("DC-2")},
    };
    static const int want_code[] = {0, 0, ATP_ENOTFOUND, ATP_ENOCHANNEL, ATP_EINVAL_SKU, 0};
    static const int64_t want_atp[] = {10, 20, 0, 0, 0, 15};
    for (int bd = 0; bd < 2; bd++) {
        x->req_len = atp_proto_enc_mget_req(x->req, sizeof(x->req), id(x), bd, keys, 6);
        struct atp_frame f = exchange(x);
        assert_int_equal(f.status, 0);
        struct atp_proto_mget_resp r;
        assert_int_equal(atp_proto_dec_mget_resp(&f, &r), 0);
        assert_int_equal(r.count, 6);
        assert_int_equal(r.breakdown, bd);
        for (uint32_t i = 0; i < 6; i++) {
            struct atp_breakdown b;
            assert_int_equal(atp_proto_mget_resp_entry(&r, i, &b), want_code[i]);
            assert_int_equal(b.atp, want_atp[i]);
            if (bd && i == 5)
                assert_int_equal(b.safety, 5);
        }
    }
    /* Over the configured limit. */
    x->ctx.max_keys = 5;
    x->req_len = atp_proto_enc_mget_req(x->req, sizeof(x->req), id(x), false, keys, 6);
    expect_error(x, ATP_ETOOMANY);
    x->ctx.max_keys = 0;
    /* The default limit of 1000. */
    static struct atp_proto_key many[ATP_PROTO_MAX_KEYS + 1];
    for (int i = 0; i <= ATP_PROTO_MAX_KEYS; i++)
        many[i] = keys[i % 2];
    x->req_len =
        atp_proto_enc_mget_req(x->req, sizeof(x->req), id(x), true, many, ATP_PROTO_MAX_KEYS);
    struct atp_frame f = exchange(x);
    struct atp_proto_mget_resp r;
    assert_int_equal(atp_proto_dec_mget_resp(&f, &r), 0);
    assert_int_equal(r.count, ATP_PROTO_MAX_KEYS);
    x->req_len =
        atp_proto_enc_mget_req(x->req, sizeof(x->req), id(x), true, many, ATP_PROTO_MAX_KEYS + 1);
    expect_error(x, ATP_ETOOMANY);
}

static void req_changes(struct fx *x, const char *channel, uint64_t cursor, uint32_t max,
                        bool network)
{
    struct atp_proto_changes_req r = {atp_slice_cstr(channel), cursor, max, network, 0};
    x->req_len = atp_proto_enc_changes_req(x->req, sizeof(x->req), id(x), &r);
}

/* A CHANGES answer, its entries copied out as "SKU@LOC=ATP" in order. */
struct changes_out {
    uint64_t next;
    bool more;
    uint32_t n;
    char e[16][128];
};

/* A CHANGES answer f (to a request with max and network) into *ret. */
static void changes_of(struct atp_frame f, uint32_t max, bool network, struct changes_out *ret)
{
    if (f.status) {
        struct atp_proto_error e;
        assert_int_equal(atp_proto_dec_error(&f, &e), 0);
        fail_msg("CHANGES failed: %s", atp_error_name(e.code));
    }
    assert_int_equal(f.flags, network ? ATP_FLAG_NETWORK : 0);
    struct atp_proto_changes_resp r;
    assert_int_equal(atp_proto_dec_changes_resp(&f, &r), 0);
    assert_true(r.count <= 16 && r.count <= max);
    ret->next = r.next_cursor;
    ret->more = r.more;
    ret->n = r.count;
    struct atp_change c;
    for (uint32_t i = 0; atp_proto_changes_next(&r, &c); i++)
        snprintf(ret->e[i], sizeof(ret->e[i]), "%.*s@%.*s=%lld", (int)c.sku.len, c.sku.p,
                 (int)c.loc.len, c.loc.p, (long long)c.atp);
}

static void changes_ok(struct fx *x, const char *channel, uint64_t cursor, uint32_t max,
                       bool network, struct changes_out *ret)
{
    req_changes(x, channel, cursor, max, network);
    changes_of(exchange(x), max, network, ret);
}

/* Entry `want` is among the n entries of o. */
static bool has_change(const struct changes_out *o, const char *want)
{
    for (uint32_t i = 0; i < o->n; i++)
        if (strcmp(o->e[i], want) == 0)
            return true;
    return false;
}

static void test_changes(void **state)
{
    struct fx *x = *state;
    struct changes_out o, o2;
    uint64_t calls0 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES);

    /* Cursor 0: a cursor to follow, no entries. */
    changes_ok(x, "web", 0, 100, false, &o);
    uint64_t c0 = o.next;
    assert_true(c0 != 0);
    assert_int_equal(o.n, 0);
    assert_false(o.more);
    /* Nothing changed since: the same cursor back, no entries. */
    changes_ok(x, "web", c0, 100, false, &o);
    assert_int_equal(o.n, 0);
    assert_false(o.more);
    assert_true(o.next == c0);

    /* An adjust after the cursor is reported with the item's ATP now. */
    adjust_ok(x, "SKU-1", "DC-1", 10, 10);
    changes_ok(x, "web", c0, 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "SKU-1@DC-1=10");
    assert_false(o.more);
    assert_true(o.next != c0);
    uint64_t c1 = o.next;
    /* The same cursor again gives the same answer (level, not edge); the
     * new one gives nothing. */
    changes_ok(x, "web", c0, 100, false, &o2);
    assert_int_equal(o2.n, 1);
    assert_string_equal(o2.e[0], "SKU-1@DC-1=10");
    assert_true(o2.next == c1);
    changes_ok(x, "web", c1, 100, false, &o);
    assert_int_equal(o.n, 0);

    /* Three items of two skus change, one of them twice: each once, the
     * ATP per channel (app: safety 5 per item). */
    adjust_ok(x, "SKU-1", "DC-2", 3, 3);
    adjust_ok(x, "SKU-2", "DC-1", 5, 5);
    adjust_ok(x, "SKU-2", "DC-2", 7, 7);
    adjust_ok(x, "SKU-2", "DC-2", 1, 8);
    changes_ok(x, "web", c1, 100, false, &o);
    assert_int_equal(o.n, 3);
    assert_true(has_change(&o, "SKU-1@DC-2=3"));
    assert_true(has_change(&o, "SKU-2@DC-1=5"));
    assert_true(has_change(&o, "SKU-2@DC-2=8"));
    changes_ok(x, "app", c1, 100, false, &o);
    assert_int_equal(o.n, 3);
    assert_true(has_change(&o, "SKU-1@DC-2=0"));
    assert_true(has_change(&o, "SKU-2@DC-1=0"));
    assert_true(has_change(&o, "SKU-2@DC-2=3"));

    /* NETWORK: one entry per sku, network ATP, empty location. */
    changes_ok(x, "web", c1, 100, true, &o);
    assert_int_equal(o.n, 2);
    assert_true(has_change(&o, "SKU-1@=13"));
    assert_true(has_change(&o, "SKU-2@=13"));
    uint64_t c2 = o.next;

    /* max 1: one entry and `more`; the rest from the cursor it gave. */
    changes_ok(x, "web", c1, 1, true, &o);
    assert_int_equal(o.n, 1);
    assert_true(o.more);
    changes_ok(x, "web", o.next, 1, true, &o2);
    assert_int_equal(o2.n, 1);
    assert_string_not_equal(o2.e[0], o.e[0]);
    assert_true(has_change(&o2, "SKU-1@=13") || has_change(&o2, "SKU-2@=13"));

    /* Items at a location the channel may not sell from are not reported:
     * b2b sells from DC-1 and DC-2 only. */
    adjust_ok(x, "SKU-3", "DC-3", 4, 4);
    adjust_ok(x, "SKU-3", "DC-1", 2, 2);
    changes_ok(x, "b2b", c2, 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "SKU-3@DC-1=2");
    changes_ok(x, "web", c2, 100, false, &o);
    assert_int_equal(o.n, 2);
    assert_true(has_change(&o, "SKU-3@DC-3=4"));
    assert_true(has_change(&o, "SKU-3@DC-1=2"));
    changes_ok(x, "b2b", c2, 100, true, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "SKU-3@=2");

    /* A hold changes ATP too. */
    uint64_t c3 = o.next;
    struct atp_line_req one[] = {LINE("SKU-1", "DC-1", 4)};
    req_reserve(x, "feed-1", "web", 60000, one, 1);
    static struct atp_proto_resv rv;
    resv_of(x, &rv, NULL);
    changes_ok(x, "web", c3, 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "SKU-1@DC-1=6");

    /* Cursors that are not this store's, or ahead of it: ECURSOR. */
    req_changes(x, "web", 12345, 100, false);
    expect_error(x, ATP_ECURSOR);
    req_changes(x, "web", c3 + 1000000, 100, false);
    expect_error(x, ATP_ECURSOR);
    req_changes(x, "web", c3 ^ (UINT64_C(1) << 63), 100, true);
    expect_error(x, ATP_ECURSOR);

    /* More changes than the feed window (1024 records) since a cursor: it
     * has expired; a new one from cursor 0 is followed again. */
    for (int i = 0; i < 1100; i++) {
        char sku[16];
        snprintf(sku, sizeof(sku), "W-%d", i);
        assert_int_equal(
            atp_store_adjust(x->store, atp_slice_cstr(sku), ATP_SLICE("DC-1"), 1, NULL), 0);
    }
    req_changes(x, "web", c3, 100, false);
    expect_error(x, ATP_ECURSOR);
    changes_ok(x, "web", 0, 100, false, &o);
    c3 = o.next;
    adjust_ok(x, "W-7", "DC-1", 1, 2);
    changes_ok(x, "web", c3, 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "W-7@DC-1=2");

    /* max 0: EINVAL (also with cursor 0). Over 1000, or over a lower
     * max_keys: ETOOMANY. Unknown channel: ENOCHANNEL. */
    req_changes(x, "web", c3, 0, false);
    expect_error(x, ATP_EINVAL);
    req_changes(x, "web", 0, 0, false);
    expect_error(x, ATP_EINVAL);
    req_changes(x, "web", c3, ATP_CHANGES_MAX + 1, false);
    expect_error(x, ATP_ETOOMANY);
    changes_ok(x, "web", c3, ATP_CHANGES_MAX, false, &o);
    x->ctx.max_keys = 5;
    req_changes(x, "web", c3, 6, false);
    expect_error(x, ATP_ETOOMANY);
    changes_ok(x, "web", c3, 5, false, &o);
    x->ctx.max_keys = 5000; /* a higher max_keys does not raise the 1000 */
    req_changes(x, "web", c3, ATP_CHANGES_MAX + 1, false);
    expect_error(x, ATP_ETOOMANY);
    x->ctx.max_keys = 0;
    req_changes(x, "tv", c3, 100, false);
    expect_error(x, ATP_ENOCHANNEL);
    req_changes(x, "tv", 0, 100, false);
    expect_error(x, ATP_ENOCHANNEL);

    /* Undefined flag bits and bodies of the wrong length: EMALFORMED. */
    req_changes(x, "web", c3, 100, false);
    x->req[4] = 0x04;
    expect_error(x, ATP_EMALFORMED);
    req_changes(x, "web", c3, 100, false);
    x->req[16]--;
    x->req_len--;
    expect_error(x, ATP_EMALFORMED);
    req_changes(x, "web", c3, 100, false);
    x->req[x->req_len] = 0;
    x->req[16]++;
    x->req_len++;
    expect_error(x, ATP_EMALFORMED);

    /* Every call above went to the CHANGES metrics. */
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES) - calls0, 32);
}

/* --- CHANGES with WAIT (struct atp_wait) ---------------------------------- */

static void req_changes_wait(struct fx *x, const char *channel, uint64_t cursor, uint32_t max,
                             bool network, uint32_t wait_ms)
{
    struct atp_proto_changes_req r = {atp_slice_cstr(channel), cursor, max, network, wait_ms};
    x->req_len = atp_proto_enc_changes_req(x->req, sizeof(x->req), id(x), &r);
    assert_true(x->req_len > 0);
}

/* The request in x->req handled at now_us: held (0, nothing appended,
 * parked) with this deadline. parked is cleared first: the call must set it. */
static void expect_held_(struct fx *x, uint64_t now_us, uint64_t until_us, int line)
{
    x->out.len = 0;
    x->ctx.wait->parked = false;
    ssize_t rc = atp_cmd_handle(&x->ctx, x->req, (size_t)x->req_len, &x->out, now_us);
    if (rc != 0 || x->out.len != 0 || !x->ctx.wait->parked)
        fail_msg("line %d: not held (returned %zd, %zu bytes answered, parked %d)", line, rc,
                 x->out.len, x->ctx.wait->parked);
    if (x->ctx.wait->until_us != until_us)
        fail_msg("line %d: deadline T0%+lld, want T0%+lld", line,
                 (long long)(x->ctx.wait->until_us - T0), (long long)(until_us - T0));
}
#define expect_held(x, now_us, until_us) expect_held_((x), (now_us), (until_us), __LINE__)

/* The request in x->req handled at now_us: answered (the whole frame
 * consumed, its response appended, any wait forgotten). parked is set first:
 * the call must clear it. */
static struct atp_frame expect_answered_(struct fx *x, uint64_t now_us, int line)
{
    x->out.len = 0;
    if (x->ctx.wait)
        x->ctx.wait->parked = true;
    ssize_t rc = atp_cmd_handle(&x->ctx, x->req, (size_t)x->req_len, &x->out, now_us);
    if (rc != x->req_len)
        fail_msg("line %d: not answered (returned %zd of %zd)", line, rc, x->req_len);
    if (x->ctx.wait && (x->ctx.wait->parked || x->ctx.wait->until_us != 0))
        fail_msg("line %d: answered, but parked %d and deadline %llu left", line,
                 x->ctx.wait->parked, (unsigned long long)x->ctx.wait->until_us);
    struct atp_frame f = response(x);
    assert_int_equal(f.id, x->next_id - 1);
    return f;
}
#define expect_answered(x, now_us) expect_answered_((x), (now_us), __LINE__)

/* The request in x->req answered at once with the error `code`. */
static void expect_wait_error(struct fx *x, int code)
{
    struct atp_frame f = expect_answered(x, T0);
    struct atp_proto_error e;
    if (f.status == 0)
        fail_msg("expected %s, got success", atp_error_name(code));
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    if (e.code != code)
        fail_msg("expected %s, got %s", atp_error_name(code), atp_error_name(e.code));
}

/* An answer with nothing new: no entries, the request's cursor back. */
static void expect_nothing_new(struct atp_frame f, uint64_t cursor)
{
    struct changes_out o;
    changes_of(f, 100, false, &o);
    assert_int_equal(o.n, 0);
    assert_false(o.more);
    assert_true(o.next == cursor);
}

static void store_adjust(struct fx *x, const char *sku, const char *loc, int64_t delta)
{
    assert_int_equal(
        atp_store_adjust(x->store, atp_slice_cstr(sku), atp_slice_cstr(loc), delta, NULL), 0);
}

static uint64_t feed_cursor(struct fx *x, const char *channel)
{
    struct changes_out o;
    changes_ok(x, channel, 0, 100, false, &o);
    assert_true(o.next != 0);
    return o.next;
}

/* Held while nothing is new, answered by a change or at the deadline. */
static void test_changes_wait(void **state)
{
    struct fx *x = *state;
    struct atp_wait w = {.max_ms = 1000};
    x->ctx.wait = &w;
    struct changes_out o;
    uint64_t c0 = feed_cursor(x, "web");
    uint64_t calls0 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES);

    /* Nothing new: held until now + wait_ms (under max_ms), and again with
     * the same deadline until it passes; a held call is no request yet. */
    req_changes_wait(x, "web", c0, 100, false, 300);
    expect_held(x, T0, T0 + 300000);
    expect_held(x, T0 + 1, T0 + 300000);
    expect_held(x, T0 + 299999, T0 + 300000);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES), calls0);

    /* A change (on another connection: the store) answers it at once. */
    store_adjust(x, "WAIT-1", "DC-1", 4);
    changes_of(expect_answered(x, T0 + 100000), 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "WAIT-1@DC-1=4");
    assert_true(o.next != c0);
    uint64_t c1 = o.next;
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES), calls0 + 1);

    /* The next request starts a wait of its own; at its deadline it is
     * answered with nothing new and its own cursor. */
    req_changes_wait(x, "web", c1, 100, false, 300);
    expect_held(x, T0 + 500000, T0 + 800000);
    expect_held(x, T0 + 799999, T0 + 800000);
    expect_nothing_new(expect_answered(x, T0 + 800000), c1);
    /* and past it (a late look) the same */
    req_changes_wait(x, "web", c1, 100, false, 300);
    expect_held(x, T0 + 900000, T0 + 1200000);
    expect_nothing_new(expect_answered(x, T0 + 5000000), c1);
    /* A clock that went back (the deadline further off than the wait):
     * answered rather than held past the wait asked for. */
    req_changes_wait(x, "web", c1, 100, false, 300);
    expect_held(x, T0 + 2000000, T0 + 2300000);
    expect_nothing_new(expect_answered(x, T0 + 1000000), c1);

    /* A change before the request: answered at once, never held. */
    store_adjust(x, "WAIT-1", "DC-2", 2);
    req_changes_wait(x, "web", c1, 100, false, 300);
    changes_of(expect_answered(x, T0), 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "WAIT-1@DC-2=2");
    uint64_t c2 = o.next;

    /* NETWORK with WAIT: held, then answered per sku; the answer's flags
     * are NETWORK alone (WAIT is a request flag). */
    req_changes_wait(x, "web", c2, 100, true, 300);
    expect_held(x, T0, T0 + 300000);
    store_adjust(x, "WAIT-2", "DC-1", 3);
    changes_of(expect_answered(x, T0 + 5000), 100, true, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "WAIT-2@=3");

    /* A change the channel does not report (b2b sells from DC-1 and DC-2
     * only) neither ends the wait nor is reported: at the deadline the
     * answer has no entries and a cursor past that change, so the next
     * request does not look at it again. A change the channel reports ends
     * the next wait, with that change alone. */
    uint64_t b0 = feed_cursor(x, "b2b");
    req_changes_wait(x, "b2b", b0, 100, false, 300);
    expect_held(x, T0, T0 + 300000);
    store_adjust(x, "WAIT-3", "DC-3", 1);
    expect_held(x, T0 + 5000, T0 + 300000);
    expect_held(x, T0 + 10000, T0 + 300000);
    changes_of(expect_answered(x, T0 + 300000), 100, false, &o);
    assert_int_equal(o.n, 0);
    assert_false(o.more);
    assert_true(o.next != b0);
    uint64_t b1 = o.next;
    req_changes_wait(x, "b2b", b1, 100, false, 300);
    expect_held(x, T0 + 400000, T0 + 700000);
    store_adjust(x, "WAIT-3", "DC-3", 1);
    expect_held(x, T0 + 405000, T0 + 700000);
    store_adjust(x, "WAIT-3", "DC-1", 2);
    changes_of(expect_answered(x, T0 + 410000), 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "WAIT-3@DC-1=2");
    assert_true(o.next != b1);
    /* Asked again from b1 without waiting: the same entry, the same cursor
     * (the unreported changes before it are passed over either way). */
    uint64_t b2 = o.next;
    changes_ok(x, "b2b", b1, 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "WAIT-3@DC-1=2");
    assert_true(o.next == b2);
}

/* How long: wait_ms cut to max_ms; never held without a wait to give. */
static void test_changes_wait_limits(void **state)
{
    struct fx *x = *state;
    struct atp_wait w = {.max_ms = 200};
    x->ctx.wait = &w;
    uint64_t c0 = feed_cursor(x, "web");

    /* 5 s asked, 200 ms granted. */
    req_changes_wait(x, "web", c0, 100, false, 5000);
    expect_held(x, T0, T0 + 200000);
    expect_held(x, T0 + 199999, T0 + 200000);
    expect_nothing_new(expect_answered(x, T0 + 200000), c0);
    /* Less than max_ms asked: that. */
    req_changes_wait(x, "web", c0, 100, false, 50);
    expect_held(x, T0, T0 + 50000);
    expect_nothing_new(expect_answered(x, T0 + 50000), c0);

    /* max_ms 0 (feed-wait-max 0, or a draining server): answered at once. */
    w.max_ms = 0;
    req_changes_wait(x, "web", c0, 100, false, 5000);
    expect_nothing_new(expect_answered(x, T0), c0);
    /* A request held under a max_ms that then drops to 0 is answered. */
    w.max_ms = 200;
    expect_held(x, T0, T0 + 200000);
    w.max_ms = 0;
    expect_nothing_new(expect_answered(x, T0 + 1000), c0);

    /* No atp_wait (a caller that cannot hold): answered at once. */
    x->ctx.wait = NULL;
    req_changes_wait(x, "web", c0, 100, false, 5000);
    expect_nothing_new(expect_answered(x, T0), c0);
    x->ctx.wait = &w;
    w.max_ms = 200;

    /* Cursor 0 with WAIT: the cursor to follow, at once. */
    req_changes_wait(x, "web", 0, 100, false, 5000);
    struct changes_out o;
    changes_of(expect_answered(x, T0), 100, false, &o);
    assert_int_equal(o.n, 0);
    assert_true(o.next == c0);

    /* Errors are never held: ECURSOR, ENOCHANNEL, EINVAL, ETOOMANY. */
    req_changes_wait(x, "web", 12345, 100, false, 5000);
    expect_wait_error(x, ATP_ECURSOR);
    req_changes_wait(x, "web", c0 + 1000000, 100, false, 5000);
    expect_wait_error(x, ATP_ECURSOR);
    req_changes_wait(x, "tv", c0, 100, false, 5000);
    expect_wait_error(x, ATP_ENOCHANNEL);
    req_changes_wait(x, "web", c0, 0, false, 5000);
    expect_wait_error(x, ATP_EINVAL);
    req_changes_wait(x, "web", c0, ATP_CHANGES_MAX + 1, false, 5000);
    expect_wait_error(x, ATP_ETOOMANY);

    /* A held request whose cursor expires meanwhile (more changes than the
     * feed window, 1024 records): answered with ECURSOR, its wait over. */
    req_changes_wait(x, "web", c0, 100, false, 5000);
    expect_held(x, T0, T0 + 200000);
    for (int i = 0; i < 1100; i++) {
        char sku[16];
        snprintf(sku, sizeof(sku), "WX-%d", i);
        store_adjust(x, sku, "DC-1", 1);
    }
    expect_wait_error(x, ATP_ECURSOR);

    /* The WAIT flag without its u32, with part of it, or the u32 without
     * the flag: EMALFORMED, at once. */
    uint64_t c1 = feed_cursor(x, "web");
    req_changes_wait(x, "web", c1, 100, false, 300);
    x->req[16] -= 4; /* body length (little-endian, under 256) */
    x->req_len -= 4;
    expect_error(x, ATP_EMALFORMED);
    req_changes_wait(x, "web", c1, 100, false, 300);
    x->req[16] -= 1;
    x->req_len -= 1;
    expect_error(x, ATP_EMALFORMED);
    req_changes_wait(x, "web", c1, 100, false, 300);
    x->req[4] &= (uint8_t)~ATP_FLAG_WAIT;
    expect_error(x, ATP_EMALFORMED);
    assert_true(w.until_us == 0);
    /* The flag with the u32 in place is fine: held. */
    req_changes_wait(x, "web", c1, 100, false, 300);
    expect_held(x, T0, T0 + 200000);
}

static void test_reserve_lifecycle(void **state)
{
    struct fx *x = *state;
    adjust_ok(x, "SKU-1", "DC-1", 10, 10);
    adjust_ok(x, "SKU-2", "DC-2", 5, 5);

    struct atp_line_req lines[] = {LINE("SKU-1", "DC-1", 2), LINE("SKU-2", "", 1)};
    req_reserve(x, "order-1", "web", 900000, lines, 2);
    static struct atp_proto_resv r;
    bool replayed = true;
    resv_of(x, &r, &replayed);
    assert_false(replayed);
    assert_int_equal(r.state, ATP_RES_HELD);
    assert_true(slice_is(r.channel, "web"));
    assert_true(slice_is(r.key, "order-1"));
    assert_int_equal(r.ttl_ms, 900000);
    assert_int_equal(r.created_us, T0);
    assert_int_equal(r.expires_us, T0 + 900000ULL * 1000);
    assert_int_equal(r.nlines, 2);
    assert_true(slice_is(r.lines[1].loc, "DC-2")); /* "any" resolved */
    uint64_t res_id = r.id;
    assert_true(res_id != 0);
    assert_int_equal(get_ok(x, "SKU-1", "web", "DC-1").reserved, 2);

    /* Retry: the same reservation, REPLAYED. */
    req_reserve(x, "order-1", "web", 900000, lines, 2);
    resv_of(x, &r, &replayed);
    assert_true(replayed);
    assert_int_equal(r.id, res_id);
    assert_int_equal(get_ok(x, "SKU-1", "web", "DC-1").reserved, 2);

    /* Same key, other content. */
    lines[0].qty = 3;
    req_reserve(x, "order-1", "web", 900000, lines, 2);
    expect_error(x, ATP_ECONFLICT);

    /* By id and by key. */
    struct atp_proto_getres_req g = {.by_key = false, .res_id = res_id};
    x->req_len = atp_proto_enc_getres_req(x->req, sizeof(x->req), id(x), &g);
    resv_of(x, &r, NULL);
    assert_int_equal(r.id, res_id);
    g = (struct atp_proto_getres_req){.by_key = true, .key = ATP_SLICE("order-1")};
    x->req_len = atp_proto_enc_getres_req(x->req, sizeof(x->req), id(x), &g);
    resv_of(x, &r, NULL);
    assert_int_equal(r.id, res_id);
    g.key = ATP_SLICE("order-404");
    x->req_len = atp_proto_enc_getres_req(x->req, sizeof(x->req), id(x), &g);
    expect_error(x, ATP_ENOTFOUND);

    /* Extend, commit (twice: a retry is fine), then release is ESTATE. */
    req_id(x, ATP_OP_EXTEND, res_id, 60000);
    resv_of(x, &r, NULL);
    assert_int_equal(r.expires_us, T0 + 60000ULL * 1000);
    req_id(x, ATP_OP_EXTEND, res_id, 0);
    expect_error(x, ATP_ETTL);
    req_id(x, ATP_OP_COMMIT, res_id, 0);
    resv_of(x, &r, NULL);
    assert_int_equal(r.state, ATP_RES_COMMITTED);
    req_id(x, ATP_OP_COMMIT, res_id, 0);
    resv_of(x, &r, NULL);
    assert_int_equal(r.state, ATP_RES_COMMITTED);
    struct atp_breakdown b = get_ok(x, "SKU-1", "web", "DC-1");
    assert_int_equal(b.allocated, 2);
    assert_int_equal(b.reserved, 0);
    req_id(x, ATP_OP_RELEASE, res_id, 0);
    expect_error(x, ATP_ESTATE);
    req_id(x, ATP_OP_COMMIT, 999999, 0);
    expect_error(x, ATP_ENOTFOUND);

    /* Hold and release; releasing twice is ESTATE. */
    struct atp_line_req one[] = {LINE("SKU-1", "DC-1", 1)};
    req_reserve(x, "order-2", "web", 60000, one, 1);
    resv_of(x, &r, NULL);
    req_id(x, ATP_OP_RELEASE, r.id, 0);
    resv_of(x, &r, NULL);
    assert_int_equal(r.state, ATP_RES_RELEASED);
    req_id(x, ATP_OP_RELEASE, r.id, 0);
    expect_error(x, ATP_ESTATE);
}

static void test_reserve_errors(void **state)
{
    struct fx *x = *state;
    adjust_ok(x, "SKU-1", "DC-1", 10, 10);
    adjust_ok(x, "SKU-2", "DC-2", 3, 3);

    /* Insufficient: one shortfall per line, nothing held. */
    struct atp_line_req lines[] = {LINE("SKU-1", "DC-1", 4), LINE("SKU-2", "", 7)};
    req_reserve(x, "order-x", "web", 60000, lines, 2);
    struct atp_frame f = exchange(x);
    struct atp_proto_error e;
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_EINSUFFICIENT);
    assert_int_equal(e.nshort, 2);
    struct atp_shortfall s;
    atp_proto_error_shortfall(&e, 0, &s);
    assert_int_equal(s.requested, 4);
    assert_int_equal(s.available, 10);
    atp_proto_error_shortfall(&e, 1, &s);
    assert_int_equal(s.requested, 7);
    assert_int_equal(s.available, 3);
    assert_int_equal(get_ok(x, "SKU-1", "web", "DC-1").reserved, 0);

    struct atp_line_req bad[] = {LINE("SKU-1", "DC-1", 0)};
    req_reserve(x, "o1", "web", 60000, bad, 1);
    expect_error(x, ATP_EQTY);
    bad[0].qty = -1;
    req_reserve(x, "o1", "web", 60000, bad, 1);
    expect_error(x, ATP_EQTY);
    bad[0].qty = 1;
    req_reserve(x, "o1", "web", 0, bad, 1);
    expect_error(x, ATP_ETTL);
    req_reserve(x, "o1", "tv", 60000, bad, 1);
    expect_error(x, ATP_ENOCHANNEL);
    req_reserve(x, "", "web", 60000, bad, 1);
    expect_error(x, ATP_EKEY);
    req_reserve(x, "o1", "web", 60000, bad, 0);
    expect_error(x, ATP_EINVAL);
    bad[0].sku = ATP_SLICE("SKU*1");
    req_reserve(x, "o1", "web", 60000, bad, 1);
    expect_error(x, ATP_EINVAL_SKU);

    static struct atp_line_req many[ATP_MAX_LINES + 1];
    for (int i = 0; i <= ATP_MAX_LINES; i++)
        many[i] = LINE("SKU-1", "DC-1", 1);
    req_reserve(x, "o2", "web", 60000, many, ATP_MAX_LINES + 1);
    expect_error(x, ATP_ETOOMANY);
    /* A configured lower limit. */
    x->ctx.max_lines = 2;
    req_reserve(x, "o2", "web", 60000, many, 3);
    expect_error(x, ATP_ETOOMANY);
    x->ctx.max_lines = 0;

    /* Expiry: a 1 ms hold committed 2 ms later. */
    req_reserve(x, "o3", "web", 1, many, 1);
    static struct atp_proto_resv r;
    resv_of(x, &r, NULL);
    req_id(x, ATP_OP_COMMIT, r.id, 0);
    x->out.len = 0;
    assert_int_equal(atp_cmd_handle(&x->ctx, x->req, (size_t)x->req_len, &x->out, T0 + 2000),
                     x->req_len);
    f = response(x);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_EEXPIRED);
}

static void test_set(void **state)
{
    struct fx *x = *state;
    struct atp_proto_set_req s = {ATP_SLICE("SKU-9"), ATP_SLICE("DC-1"), 80, 17};
    x->req_len = atp_proto_enc_set_req(x->req, sizeof(x->req), id(x), &s);
    struct atp_frame f = exchange(x);
    assert_int_equal(atp_proto_dec_empty_resp(&f), 0);
    assert_int_equal(get_ok(x, "SKU-9", "web", "DC-1").on_hand, 80);
    s.seq = 16;
    s.on_hand = 95;
    x->req_len = atp_proto_enc_set_req(x->req, sizeof(x->req), id(x), &s);
    expect_error(x, ATP_ESTALE);
    assert_int_equal(get_ok(x, "SKU-9", "web", "DC-1").on_hand, 80);
    s.seq = 0; /* unguarded */
    x->req_len = atp_proto_enc_set_req(x->req, sizeof(x->req), id(x), &s);
    f = exchange(x);
    assert_int_equal(atp_proto_dec_empty_resp(&f), 0);
    assert_int_equal(get_ok(x, "SKU-9", "web", "DC-1").on_hand, 95);
    s.on_hand = -1;
    x->req_len = atp_proto_enc_set_req(x->req, sizeof(x->req), id(x), &s);
    expect_error(x, ATP_EQTY);
    req_adjust(x, "SKU-9", "DC-1", 0);
    expect_error(x, ATP_EQTY);
}

static void test_stats(void **state)
{
    struct fx *x = *state;
    adjust_ok(x, "A", "DC-1", 1, 1);
    adjust_ok(x, "B", "DC-1", 1, 1);
    x->req_len = atp_proto_enc_stats_req(x->req, sizeof(x->req), id(x));
    struct atp_frame f = exchange(x);
    struct atp_proto_stats_resp r;
    assert_int_equal(atp_proto_dec_stats_resp(&f, &r), 0);
    struct atp_slice name;
    int64_t v;
    int64_t items = -1, source = -1, bucket = -1;
    uint32_t seen = 0;
    while (atp_proto_stats_next(&r, &name, &v)) {
        if (slice_is(name, "items"))
            items = v;
        if (slice_is(name, "test_source_value"))
            source = v;
        if (slice_is(name, "lateness_le_inf"))
            bucket = v;
        seen++;
    }
    assert_int_equal(seen, r.count);
    assert_int_equal(items, 2);
    assert_int_equal(source, 4242);
    assert_int_equal(bucket, 0);

    /* STATS with a body is malformed. */
    x->req_len = atp_proto_enc_ping_req(x->req, sizeof(x->req), id(x), ATP_SLICE("x"));
    x->req[3] = ATP_OP_STATS;
    expect_error(x, ATP_EMALFORMED);
}

static void test_refuse_writes(void **state)
{
    struct fx *x = *state;
    adjust_ok(x, "SKU-1", "DC-1", 10, 10);
    struct atp_line_req one[] = {LINE("SKU-1", "DC-1", 1)};
    req_reserve(x, "held", "web", 60000, one, 1);
    static struct atp_proto_resv r;
    resv_of(x, &r, NULL);

    x->refuse = ATP_EREADONLY;
    req_reserve(x, "o1", "web", 60000, one, 1);
    expect_error(x, ATP_EREADONLY);
    req_id(x, ATP_OP_COMMIT, r.id, 0);
    expect_error(x, ATP_EREADONLY);
    req_id(x, ATP_OP_EXTEND, r.id, 1000);
    expect_error(x, ATP_EREADONLY);
    req_adjust(x, "SKU-1", "DC-1", 1);
    expect_error(x, ATP_EREADONLY);
    struct atp_proto_set_req s = {ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), 5, 0};
    x->req_len = atp_proto_enc_set_req(x->req, sizeof(x->req), id(x), &s);
    expect_error(x, ATP_EREADONLY);
    /* Reads and release still work. */
    assert_int_equal(get_ok(x, "SKU-1", "web", "DC-1").on_hand, 10);
    req_id(x, ATP_OP_RELEASE, r.id, 0);
    resv_of(x, &r, NULL);
    assert_int_equal(r.state, ATP_RES_RELEASED);

    x->refuse = ATP_EUNAVAILABLE;
    req_reserve(x, "o1", "web", 60000, one, 1);
    expect_error(x, ATP_EUNAVAILABLE);
    x->refuse = 0;
    req_reserve(x, "o1", "web", 60000, one, 1);
    resv_of(x, &r, NULL);
}

static void test_framing(void **state)
{
    struct fx *x = *state;
    struct atp_frame f;
    struct atp_proto_error e;

    /* Every strict prefix: 0 and nothing appended. */
    req_get(x, "SKU-1", "web", "DC-1", true);
    for (ssize_t k = 0; k < x->req_len; k++) {
        x->out.len = 0;
        assert_int_equal(atp_cmd_handle(&x->ctx, x->req, (size_t)k, &x->out, T0), 0);
        assert_int_equal(x->out.len, 0);
    }

    /* Two frames in one buffer: one call handles one frame. */
    ssize_t first = x->req_len;
    ssize_t second =
        atp_proto_enc_ping_req(x->req + first, sizeof(x->req) - (size_t)first, 77, ATP_SLICE("z"));
    x->out.len = 0;
    assert_int_equal(atp_cmd_handle(&x->ctx, x->req, (size_t)(first + second), &x->out, T0), first);
    f = response(x);
    assert_int_equal(f.opcode, ATP_OP_RESPONSE | ATP_OP_GET);
    assert_int_equal(atp_cmd_handle(&x->ctx, x->req + first, (size_t)second, &x->out, T0), second);

    /* Bad magic: negative, an unattributed EBADMAGIC frame. */
    memcpy(x->req, "GET / HTTP/1.1\r\n\r\n", 18);
    x->req_len = 18;
    assert_int_equal(run(x), ATP_EBADMAGIC);
    f = response(x);
    assert_int_equal(f.opcode, ATP_OP_RESPONSE);
    assert_int_equal(f.id, 0);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_EBADMAGIC);
    /* ... seen from the first byte. */
    x->out.len = 0;
    assert_true(atp_cmd_handle(&x->ctx, x->req, 1, &x->out, T0) < 0);

    /* Unsupported version: negative, echoes the id. */
    x->req_len = atp_proto_enc_stats_req(x->req, sizeof(x->req), 555);
    x->req[2] = 9;
    assert_int_equal(run(x), ATP_EVERSION);
    f = response(x);
    assert_int_equal(f.id, 555);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_EVERSION);

    /* Over the frame limit, known from the header alone. */
    x->ctx.max_frame = 4096;
    x->req_len = atp_proto_enc_hdr(x->req, sizeof(x->req), ATP_OP_PING, 0, 0, 556, 5000);
    assert_int_equal(run(x), ATP_ETOOLARGE);
    f = response(x);
    assert_int_equal(f.id, 556);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_ETOOLARGE);
    x->ctx.max_frame = 0;

    /* Unknown opcode: an error frame that echoes it, and the connection goes on. */
    x->req_len = atp_proto_enc_hdr(x->req, sizeof(x->req), 0x55, 0, 0, id(x), 0);
    expect_error(x, ATP_EUNKNOWNOP);
    assert_int_equal(response(x).opcode, 0xd5);
    x->req_len = atp_proto_enc_hdr(x->req, sizeof(x->req), ATP_OP_NONE, 0, 0, id(x), 0);
    expect_error(x, ATP_EUNKNOWNOP);
    /* A request with the response bit set is unknown too. */
    x->req_len =
        atp_proto_enc_hdr(x->req, sizeof(x->req), ATP_OP_RESPONSE | ATP_OP_GET, 0, 0, id(x), 0);
    expect_error(x, ATP_EUNKNOWNOP);

    /* Malformed bodies carry on: a string running past the end, trailing bytes,
     * undefined flags. */
    req_get(x, "SKU-1", "web", "DC-1", false);
    x->req[20] = 200;
    expect_error(x, ATP_EMALFORMED);
    req_get(x, "SKU-1", "web", "DC-1", false);
    x->req[x->req_len] = 0;
    x->req[16]++;
    x->req_len++;
    expect_error(x, ATP_EMALFORMED);
    req_get(x, "SKU-1", "web", "DC-1", false);
    x->req[5] = 0x80;
    expect_error(x, ATP_EMALFORMED);
}

static void test_buffer_limit(void **state)
{
    struct fx *x = *state;
    /* A buffer that cannot hold the answer: -ENOMEM, nothing appended. */
    struct atp_buf small = {.limit = 8};
    x->req_len = atp_proto_enc_stats_req(x->req, sizeof(x->req), id(x));
    assert_int_equal(atp_cmd_handle(&x->ctx, x->req, (size_t)x->req_len, &small, T0), -ENOMEM);
    assert_int_equal(small.len, 0);
    atp_buf_free(&small);
    atp_buf_free(NULL);

    /* Appends accumulate: pipelined responses land in request order. */
    x->out.len = 0;
    for (uint64_t i = 1; i <= 100; i++) {
        ssize_t n = atp_proto_enc_ping_req(x->req, sizeof(x->req), i, ATP_SLICE("p"));
        assert_int_equal(atp_cmd_handle(&x->ctx, x->req, (size_t)n, &x->out, T0), n);
    }
    size_t off = 0;
    for (uint64_t i = 1; i <= 100; i++) {
        struct atp_frame f;
        ssize_t n = atp_proto_frame(x->out.data + off, x->out.len - off, 0, &f);
        assert_true(n > 0);
        assert_int_equal(f.id, i);
        off += (size_t)n;
    }
    assert_int_equal(off, x->out.len);

    /* The capacity settles: no growth once the buffer is big enough. */
    size_t cap = x->out.cap;
    uint8_t *data = x->out.data;
    for (int i = 0; i < 1000; i++) {
        x->out.len = 0;
        req_get(x, "SKU-1", "web", "", true);
        atp_cmd_handle(&x->ctx, x->req, (size_t)x->req_len, &x->out, T0);
    }
    assert_int_equal(x->out.cap, cap);
    assert_ptr_equal(x->out.data, data);
}

static void test_cmd_error(void **state)
{
    struct atp_buf b = {0};
    assert_int_equal(atp_cmd_error(&b, 0, ATP_ETOOMANYCONN, NULL), 0);
    assert_int_equal(atp_cmd_error(&b, 9, ATP_ETIMEDOUT, "idle for 300 s"), 0);
    struct atp_frame f;
    struct atp_proto_error e;
    ssize_t n = atp_proto_frame(b.data, b.len, 0, &f);
    assert_true(n > 0);
    assert_int_equal(f.opcode, ATP_OP_RESPONSE);
    assert_int_equal(f.id, 0);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_ETOOMANYCONN);
    assert_true(slice_is(e.message, "connection limit reached"));
    assert_int_equal(atp_proto_frame(b.data + n, b.len - (size_t)n, 0, &f), b.len - (size_t)n);
    assert_int_equal(f.id, 9);
    assert_int_equal(atp_proto_dec_error(&f, &e), 0);
    assert_int_equal(e.code, ATP_ETIMEDOUT);
    assert_true(slice_is(e.message, "client too slow or idle too long: idle for 300 s"));
    atp_buf_free(&b);

    struct atp_buf tiny = {.limit = 4};
    assert_int_equal(atp_cmd_error(&tiny, 0, ATP_EINTERNAL, NULL), -ENOMEM);
    atp_buf_free(&tiny);
}

/* --- pipelined frames (atp_cmd_handle_many) ------------------------------- */

/* Append one encoded frame to buf; returns its length. */
#define PUT(call)                                                                                  \
    do {                                                                                           \
        ssize_t n_ = (call);                                                                       \
        assert_true(n_ > 0 && (size_t)n_ <= sizeof(pl->buf) - pl->len);                            \
        pl->len += (size_t)n_;                                                                     \
        pl->nframes++;                                                                             \
    } while (0)

struct pipeline {
    uint8_t buf[64 * 1024];
    size_t len;
    uint32_t nframes, ngets;
};

static void pl_get(struct pipeline *pl, uint64_t id, const char *sku, const char *channel,
                   const char *loc, bool breakdown)
{
    struct atp_proto_get_req r = {
        {atp_slice_cstr(sku), atp_slice_cstr(channel), atp_slice_cstr(loc)}, breakdown};
    PUT(atp_proto_enc_get_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, id, &r));
    pl->ngets++;
}

/*
 * GETs of every kind (item, network, breakdown or not, unknown sku, unknown
 * channel, bad names, a malformed body) in runs longer than one store batch,
 * between writes they must see (or not), pings, an unknown opcode, a
 * reservation and a stats frame.
 */
static void pl_build(struct pipeline *pl)
{
    static const char *const skus[] = {"SKU-1", "SKU-2", "SKU-3", "NOPE"};
    static const char *const locs[] = {"DC-1", "DC-2", ""};
    static const char *const chans[] = {"web", "app", "b2b"};
    uint64_t id = 1;
    memset(pl, 0, sizeof(*pl));
    for (int i = 0; i < 150; i++) /* a run over two batches */
        pl_get(pl, id++, skus[i % 4], chans[i % 3], locs[i % 3], i % 2);
    struct atp_proto_adjust_req adj = {ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 7};
    PUT(atp_proto_enc_adjust_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, id++, &adj));
    pl_get(pl, id++, "SKU-2", "web", "DC-1", true); /* sees the +7 */
    pl_get(pl, id++, "SKU-2", "web", "", false);
    pl_get(pl, id++, "SKU-1", "tv", "DC-1", false);  /* ENOCHANNEL */
    pl_get(pl, id++, "SKU 1", "web", "DC-1", false); /* EINVAL_SKU */
    pl_get(pl, id++, "SKU-1", "web", "DC#1", false); /* EINVAL_LOC */
    pl_get(pl, id++, "SKU 1", "web", "", false);     /* network, EINVAL_SKU */
    pl_get(pl, id++, "NOPE", "b2b", "", true);       /* network, ENOTFOUND */
    size_t bad = pl->len;
    pl_get(pl, id++, "SKU-1", "web", "DC-1", false);
    pl->buf[bad + 20] = 200; /* a string past the end: EMALFORMED */
    PUT(atp_proto_enc_ping_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, id++, ATP_SLICE("x")));
    pl_get(pl, id++, "SKU-3", "app", "DC-2", true);
    PUT(atp_proto_enc_hdr(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 0x55, 0, 0, id++, 0));
    pl_get(pl, id++, "SKU-3", "app", "DC-2", true);
    struct atp_line_req lines[] = {LINE("SKU-3", "DC-2", 4)};
    PUT(atp_proto_enc_reserve_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, id++,
                                  ATP_SLICE("order-1"), ATP_SLICE("web"), 60000, lines, 1));
    pl_get(pl, id++, "SKU-3", "web", "DC-2", true); /* sees the hold */
    struct atp_line_req big[] = {LINE("SKU-1", "DC-1", 1000000)};
    PUT(atp_proto_enc_reserve_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, id++,
                                  ATP_SLICE("order-2"), ATP_SLICE("web"), 60000, big, 1));
    for (int i = 0; i < 40; i++)
        pl_get(pl, id++, skus[i % 3], "web", locs[i % 2], false);
    PUT(atp_proto_enc_stats_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, id++));
    pl_get(pl, id++, "SKU-1", "web", "DC-2", false);
}

static void pl_stock(struct atp_store *s)
{
    int64_t v;
    assert_int_equal(atp_store_adjust(s, ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), 100, &v), 0);
    assert_int_equal(atp_store_adjust(s, ATP_SLICE("SKU-1"), ATP_SLICE("DC-2"), 30, &v), 0);
    assert_int_equal(atp_store_adjust(s, ATP_SLICE("SKU-2"), ATP_SLICE("DC-2"), 9, &v), 0);
    assert_int_equal(atp_store_adjust(s, ATP_SLICE("SKU-3"), ATP_SLICE("DC-2"), 60, &v), 0);
}

/* Frame by frame through atp_cmd_handle: the reference answers. */
static size_t pl_one_by_one(struct atp_cmd_ctx *ctx, const uint8_t *in, size_t len,
                            struct atp_buf *out, ssize_t *ret_last)
{
    size_t off = 0;
    *ret_last = 0;
    while (off < len) {
        ssize_t r = atp_cmd_handle(ctx, in + off, len - off, out, T0);
        *ret_last = r;
        if (r <= 0)
            break;
        off += (size_t)r;
    }
    return off;
}

/* The same requests on a second, identical store through handle_many, fed
 * in pieces of `chunk` bytes (what is not consumed is offered again with the
 * next piece, as the server keeps a partial frame) and with the output
 * stopped every `stop` bytes. */
static void pl_many(struct fx *x, const struct pipeline *pl, size_t chunk, size_t stop,
                    struct atp_buf *out, uint32_t *ret_frames)
{
    struct atp_store *store;
    new_store(&store);
    pl_stock(store);
    struct atp_cmd_ctx ctx = x->ctx;
    ctx.store = store;
    size_t off = 0, avail = 0;
    uint32_t frames = 0;
    uint64_t t = 0; /* chained from call to call, as the server does */
    while (off < pl->len) {
        avail = avail + chunk > pl->len - off ? pl->len - off : avail + chunk;
        uint32_t nf = 99;
        int err = 1;
        uint64_t t_before = t;
        size_t used = atp_cmd_handle_many(&ctx, pl->buf + off, avail, out, T0, out->len + stop, &t,
                                          &nf, &err);
        assert_int_equal(err, 0);
        assert_true(t != 0 && t >= t_before);
        assert_true(used <= avail);
        frames += nf;
        off += used;
        avail -= used;
    }
    *ret_frames = frames;
    atp_store_free(store);
}

static void test_pipelined(void **state)
{
    struct fx *x = *state;
    static struct pipeline pl;
    pl_build(&pl);
    pl_stock(x->store);

    struct atp_buf ref = {0};
    uint64_t gets0 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_GET);
    ssize_t last;
    assert_int_equal(pl_one_by_one(&x->ctx, pl.buf, pl.len, &ref, &last), pl.len);
    uint64_t gets1 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_GET);
    assert_int_equal(gets1 - gets0, pl.ngets);

    /* Whole, in pieces of every awkward size, with and without backpressure. */
    static const size_t chunks[] = {SIZE_MAX / 2, 1, 7, 40, 1000};
    static const size_t stops[] = {SIZE_MAX / 2, 1, 500};
    for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
        for (size_t s = 0; s < sizeof(stops) / sizeof(stops[0]); s++) {
            struct atp_buf out = {0};
            uint32_t frames = 0;
            uint64_t g0 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_GET);
            pl_many(x, &pl, chunks[c], stops[s], &out, &frames);
            assert_int_equal(frames, pl.nframes);
            /* one GET metric per GET frame, batched or not */
            assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_GET) - g0, pl.ngets);
            assert_int_equal(out.len, ref.len);
            assert_memory_equal(out.data, ref.data, ref.len);
            atp_buf_free(&out);
        }
    }

    /* A limit already reached consumes nothing. */
    struct atp_buf out = {0};
    uint32_t frames = 9;
    int err = 9;
    assert_int_equal(atp_cmd_handle_many(&x->ctx, pl.buf, pl.len, &out, T0, 0, NULL, &frames, &err),
                     0);
    assert_int_equal(frames, 0);
    assert_int_equal(err, 0);
    assert_int_equal(out.len, 0);
    atp_buf_free(&out);
    atp_buf_free(&ref);
}

/* The metrics clock handed in and out: read on entry when 0, kept when no
 * frame was handled, the end of the last frame otherwise. */
static void test_pipelined_clock(void **state)
{
    struct fx *x = *state;
    static struct pipeline plb;
    memset(&plb, 0, sizeof(plb));
    struct pipeline *pl = &plb;
    pl_stock(x->store);
    for (int i = 0; i < 3; i++)
        pl_get(pl, (uint64_t)i + 1, "SKU-1", "web", "DC-1", false);
    PUT(atp_proto_enc_ping_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 4, ATP_SLICE("x")));

    struct atp_buf out = {0};
    uint32_t frames;
    int err;
    uint64_t t = 0, before = atp_metrics_now_ns();
    assert_int_equal(
        atp_cmd_handle_many(&x->ctx, pl->buf, 0, &out, T0, SIZE_MAX, &t, &frames, &err), 0);
    assert_true(t >= before && t <= atp_metrics_now_ns());
    uint64_t kept = t;
    assert_int_equal(
        atp_cmd_handle_many(&x->ctx, pl->buf, 0, &out, T0, SIZE_MAX, &t, &frames, &err), 0);
    assert_int_equal(t, kept);
    assert_int_equal(
        atp_cmd_handle_many(&x->ctx, pl->buf, pl->len, &out, T0, SIZE_MAX, &t, &frames, &err),
        pl->len);
    assert_int_equal(frames, 4);
    assert_true(t >= kept && t <= atp_metrics_now_ns());
    atp_buf_free(&out);
}

/* Broken framing after a run of GETs: their answers, then the error frame,
 * as frame by frame; an output that cannot grow ends the call with -ENOMEM. */
static void test_pipelined_errors(void **state)
{
    struct fx *x = *state;
    static struct pipeline pl;
    memset(&pl, 0, sizeof(pl));
    struct pipeline *p = &pl;
    pl_stock(x->store);
    for (int i = 0; i < 10; i++)
        pl_get(p, (uint64_t)i + 1, "SKU-1", "web", i % 2 ? "DC-1" : "", true);
    memcpy(pl.buf + pl.len, "GET / HTTP/1.1\r\n\r\n", 18);
    pl.len += 18;

    struct atp_buf ref = {0}, out = {0};
    ssize_t last;
    size_t used = pl_one_by_one(&x->ctx, pl.buf, pl.len, &ref, &last);
    assert_int_equal(last, ATP_EBADMAGIC);
    uint32_t frames = 0;
    int err = 0;
    size_t used2 =
        atp_cmd_handle_many(&x->ctx, pl.buf, pl.len, &out, T0, SIZE_MAX, NULL, &frames, &err);
    assert_int_equal(err, ATP_EBADMAGIC);
    assert_int_equal(frames, 11);
    assert_int_equal(used2, used);
    assert_int_equal(out.len, ref.len);
    assert_memory_equal(out.data, ref.data, ref.len);
    atp_buf_free(&out);
    atp_buf_free(&ref);

    /* Room for a few answers only: -ENOMEM, what fitted is in order. */
    struct atp_buf small = {.limit = 100};
    err = 0;
    atp_cmd_handle_many(&x->ctx, pl.buf, pl.len, &small, T0, SIZE_MAX, NULL, &frames, &err);
    assert_int_equal(err, -ENOMEM);
    size_t off = 0;
    uint64_t want = 1;
    struct atp_frame f;
    ssize_t n;
    while ((n = atp_proto_frame(small.data + off, small.len - off, 0, &f)) > 0) {
        assert_int_equal(f.id, want++);
        off += (size_t)n;
    }
    assert_int_equal(off, small.len);
    atp_buf_free(&small);
}
/* The frame at `off` of out: its id, and the offset after it. */
static struct atp_frame frame_at(const struct atp_buf *out, size_t *off)
{
    struct atp_frame f;
    ssize_t n = atp_proto_frame(out->data + *off, out->len - *off, 0, &f);
    assert_true(n > 0);
    *off += (size_t)n;
    return f;
}

/* A held CHANGES in a pipeline: the frames before it are answered, it and
 * the ones behind it wait (nothing of them consumed, counted or answered),
 * and once it is answered the rest follow in order. */
static void test_pipelined_wait(void **state)
{
    struct fx *x = *state;
    struct atp_wait w = {.max_ms = 1000};
    x->ctx.wait = &w;
    uint64_t c0 = feed_cursor(x, "web");

    static struct pipeline plb;
    memset(&plb, 0, sizeof(plb));
    struct pipeline *pl = &plb;
    PUT(atp_proto_enc_ping_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 1, ATP_SLICE("a")));
    size_t first = pl->len;
    struct atp_proto_changes_req r = {ATP_SLICE("web"), c0, 100, false, 300};
    PUT(atp_proto_enc_changes_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 2, &r));
    PUT(atp_proto_enc_ping_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 3, ATP_SLICE("c")));

    uint64_t pings0 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_PING);
    uint64_t calls0 = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES);
    struct atp_buf out = {0};
    uint32_t frames = 99;
    int err = 99;
    size_t used =
        atp_cmd_handle_many(&x->ctx, pl->buf, pl->len, &out, T0, SIZE_MAX, NULL, &frames, &err);
    assert_int_equal(used, first);
    assert_int_equal(frames, 1);
    assert_int_equal(err, 0);
    assert_true(w.parked);
    assert_true(w.until_us == T0 + 300000);
    size_t off = 0;
    struct atp_frame f = frame_at(&out, &off);
    assert_int_equal(f.id, 1);
    assert_int_equal(off, out.len);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_PING) - pings0, 1);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES) - calls0, 0);

    /* Offered again with nothing new: held at its head, nothing consumed. */
    w.parked = false;
    frames = 99;
    used = atp_cmd_handle_many(&x->ctx, pl->buf + first, pl->len - first, &out, T0 + 1000, SIZE_MAX,
                               NULL, &frames, &err);
    assert_int_equal(used, 0);
    assert_int_equal(frames, 0);
    assert_int_equal(err, 0);
    assert_true(w.parked);
    assert_true(w.until_us == T0 + 300000);
    assert_int_equal(out.len, off);

    /* A change: the CHANGES answer, then the PING behind it. */
    store_adjust(x, "WAIT-9", "DC-1", 6);
    used = atp_cmd_handle_many(&x->ctx, pl->buf + first, pl->len - first, &out, T0 + 2000, SIZE_MAX,
                               NULL, &frames, &err);
    assert_int_equal(used, pl->len - first);
    assert_int_equal(frames, 2);
    assert_int_equal(err, 0);
    assert_false(w.parked);
    assert_true(w.until_us == 0);
    f = frame_at(&out, &off);
    assert_int_equal(f.id, 2);
    struct changes_out o;
    changes_of(f, 100, false, &o);
    assert_int_equal(o.n, 1);
    assert_string_equal(o.e[0], "WAIT-9@DC-1=6");
    f = frame_at(&out, &off);
    assert_int_equal(f.id, 3);
    struct atp_slice p;
    assert_int_equal(atp_proto_dec_ping_resp(&f, &p), 0);
    assert_true(slice_is(p, "c"));
    assert_int_equal(off, out.len);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_PING) - pings0, 2);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_CHANGES) - calls0, 1);

    /* Held first in the input: nothing at all; at its deadline, all of it. */
    out.len = 0;
    r.cursor = o.next;
    memset(pl, 0, sizeof(*pl));
    PUT(atp_proto_enc_changes_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 4, &r));
    PUT(atp_proto_enc_ping_req(pl->buf + pl->len, sizeof(pl->buf) - pl->len, 5, ATP_SLICE("e")));
    used = atp_cmd_handle_many(&x->ctx, pl->buf, pl->len, &out, T0 + 3000, SIZE_MAX, NULL, &frames,
                               &err);
    assert_int_equal(used, 0);
    assert_int_equal(frames, 0);
    assert_int_equal(out.len, 0);
    assert_true(w.parked);
    assert_true(w.until_us == T0 + 303000);
    used = atp_cmd_handle_many(&x->ctx, pl->buf, pl->len, &out, T0 + 303000, SIZE_MAX, NULL,
                               &frames, &err);
    assert_int_equal(used, pl->len);
    assert_int_equal(frames, 2);
    assert_false(w.parked);
    assert_true(w.until_us == 0);
    off = 0;
    f = frame_at(&out, &off);
    assert_int_equal(f.id, 4);
    changes_of(f, 100, false, &o);
    assert_int_equal(o.n, 0);
    assert_true(o.next == r.cursor);
    assert_int_equal(frame_at(&out, &off).id, 5);
    assert_int_equal(off, out.len);

    /* Without an atp_wait the same input is answered whole, at once. */
    x->ctx.wait = NULL;
    out.len = 0;
    used = atp_cmd_handle_many(&x->ctx, pl->buf, pl->len, &out, T0, SIZE_MAX, NULL, &frames, &err);
    assert_int_equal(used, pl->len);
    assert_int_equal(frames, 2);
    atp_buf_free(&out);
}
#undef PUT

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_hello_and_ping),
        T(test_get),
        T(test_mget),
        T(test_changes),
        T(test_changes_wait),
        T(test_changes_wait_limits),
        T(test_reserve_lifecycle),
        T(test_reserve_errors),
        T(test_set),
        T(test_stats),
        T(test_refuse_writes),
        T(test_framing),
        T(test_buffer_limit),
        T(test_cmd_error),
        T(test_pipelined),
        T(test_pipelined_errors),
        T(test_pipelined_clock),
        T(test_pipelined_wait),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
