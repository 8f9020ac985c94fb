/*
 * test_store.c - unit tests of the ATP store API (include/atp/store.h),
 * suite `unit`.
 *
 * Every public function with its failure paths, written against the header
 * and SPEC.md, not against the implementation: validation of skus,
 * locations, keys, quantities and TTLs; channels, safety stock (configured,
 * per sku, per item), caps and location lists; "any" location choice;
 * network ATP; reservations (idempotency, commit, release, extend, fulfill,
 * expiry with explicit times and lateness statistics); capacities; the
 * quantity range; and that out-parameters are left untouched on error.
 * Time is always explicit (the store never reads a clock itself).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "atp/store.h"

#define T0       UINT64_C(1700000000000000) /* an arbitrary "now", in us */
#define MS       UINT64_C(1000)
#define SENTINEL 0xA5

/* Channel ids of the fixture, in configuration order. */
enum { WEB, APP, MKT, B2B, ZERO, MIX, NCH };

static const char *const b2b_locs[] = {"DC2", "DC1"};

static const struct atp_channel_config fixture_channels[NCH] = {
    [WEB] = {.name = "web", .cap = -1},
    [APP] = {.name = "app", .safety_units = 2, .cap = -1},
    [MKT] = {.name = "marketplace-x", .safety_pct = 10, .cap = 50},
    [B2B] = {.name = "b2b", .cap = -1, .locations = b2b_locs, .nlocations = 2},
    [ZERO] = {.name = "zero", .cap = 0},
    [MIX] = {.name = "mix", .safety_units = 3, .safety_pct = 10, .cap = -1},
};

static struct atp_slice S(const char *s) {
    return atp_slice_cstr(s);
}

static void
fixture_config(struct atp_store_config *cfg)
{
    atp_store_config_defaults(cfg);
    cfg->max_items = 4096;
    cfg->max_skus = 4096;
    cfg->max_reservations = 1024;
    cfg->max_overrides = 256;
    cfg->nshards = 4;
    cfg->channels = fixture_channels;
    cfg->nchannels = NCH;
}

static int setup(void **state)
{
    struct atp_store_config cfg;
    fixture_config(&cfg);
    struct atp_store *s = NULL;
    int rc = atp_store_new(&cfg, &s);
    if (rc != 0 || s == NULL)
        return -1;
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    atp_store_free(*state);
    return 0;
}

static void fill(void *p, size_t n)
{
    memset(p, SENTINEL, n);
}

static void untouched_(const void *p, size_t n, const char *what, int line)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i] != SENTINEL)
            fail_msg("line %d: out-parameter %s byte %zu written on error", line, what, i);
}
#define UNTOUCHED(x) untouched_(&(x), sizeof(x), #x, __LINE__)

static struct atp_breakdown bd_(struct atp_store *s, const char *sku, const char *loc, uint32_t ch,
                                int line)
{
    struct atp_breakdown b;
    int rc = atp_store_get(s, S(sku), S(loc), ch, &b);
    if (rc != 0)
        fail_msg("line %d: get %s@%s ch %u: %s", line, sku, loc, ch, atp_error_name(rc));
    return b;
}
#define BD(s, sku, loc, ch)  bd_((s), (sku), (loc), (ch), __LINE__)
#define ATP(s, sku, loc, ch) (BD((s), (sku), (loc), (ch)).atp)

static struct atp_breakdown net_(struct atp_store *s, const char *sku, uint32_t ch, int line)
{
    struct atp_breakdown b;
    int rc = atp_store_get_network(s, S(sku), ch, &b);
    if (rc != 0)
        fail_msg("line %d: get_network %s ch %u: %s", line, sku, ch, atp_error_name(rc));
    return b;
}
#define NET(s, sku, ch) net_((s), (sku), (ch), __LINE__)

static void set_(struct atp_store *s, const char *sku, const char *loc, int64_t q, int line)
{
    int rc = atp_store_set(s, S(sku), S(loc), q, 0);
    if (rc != 0)
        fail_msg("line %d: set %s@%s=%lld: %s", line, sku, loc, (long long)q, atp_error_name(rc));
}
#define SET(s, sku, loc, q) set_((s), (sku), (loc), (q), __LINE__)

#define RC(expected, call)                                                                         \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_ != (expected))                                                                     \
            fail_msg("%s\n  returned %d (%s), expected %d (%s)", #call, rc_, atp_error_name(rc_),  \
                     (int)(expected), atp_error_name(expected));                                   \
    } while (0)

/* A one-line reserve. loc NULL or "" means "any". */
static int reserve1(struct atp_store *s, const char *key, uint32_t ch, const char *sku,
                    const char *loc, int64_t qty, uint64_t ttl_ms, uint64_t now,
                    struct atp_reservation *ret, bool *replayed, struct atp_shortfall *sh)
{
    struct atp_line_req line = {S(sku), loc ? S(loc) : (struct atp_slice){"", 0}, qty};
    struct atp_reserve_req req = {S(key), ch, ttl_ms, &line, 1};
    struct atp_reservation r;
    bool rp = false;
    return atp_store_reserve(s, &req, now, ret ? ret : &r, replayed ? replayed : &rp, sh);
}

/* Reserve that must succeed (not replayed); returns the id. */
static uint64_t hold_(struct atp_store *s, const char *key, uint32_t ch, const char *sku,
                      const char *loc, int64_t qty, uint64_t ttl_ms, uint64_t now, int line)
{
    struct atp_reservation r;
    bool rp = true;
    int rc = reserve1(s, key, ch, sku, loc, qty, ttl_ms, now, &r, &rp, NULL);
    if (rc != 0)
        fail_msg("line %d: reserve %s %s@%s x%lld: %s", line, key, sku, loc ? loc : "any",
                 (long long)qty, atp_error_name(rc));
    if (rp)
        fail_msg("line %d: fresh reserve %s reported replayed", line, key);
    if (r.id == 0)
        fail_msg("line %d: reservation id 0", line);
    return r.id;
}
#define HOLD(s, key, ch, sku, loc, qty, ttl, now)                                                  \
    hold_((s), (key), (ch), (sku), (loc), (qty), (ttl), (now), __LINE__)

static int state_of(struct atp_store *s, uint64_t id)
{
    struct atp_reservation r;
    int rc = atp_store_reservation_get(s, id, &r);
    return rc ? rc : r.state;
}

static bool slice_eq(struct atp_slice a, const char *b)
{
    return a.len == strlen(b) && memcmp(a.p, b, a.len) == 0;
}

/* ---------------------------------------------------------------------- */
/* creation, configuration, channels                                      */
/* ---------------------------------------------------------------------- */

static void test_config_defaults(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    memset(&cfg, 0x5a, sizeof(cfg));
    atp_store_config_defaults(&cfg);
    assert_int_equal(cfg.max_items, 1u << 20);
    /* "default max_items": 0 stands for "as many as max_items" */
    assert_true(cfg.max_skus == 0 || cfg.max_skus == cfg.max_items);
    assert_int_equal(cfg.max_reservations, 256u << 10);
    assert_int_equal(cfg.max_overrides, 64u << 10);
    assert_int_equal(cfg.nshards, 64);
    assert_int_equal(cfg.max_ttl_ms, 24ull * 3600 * 1000);
    assert_int_equal(cfg.idempotency_window_ms, 10ull * 60 * 1000);
    assert_null(cfg.channels);
    assert_int_equal(cfg.nchannels, 0);
}

static void expect_new_fails(const struct atp_store_config *cfg, const char *why)
{
    struct atp_store *s;
    fill(&s, sizeof(s));
    int rc = atp_store_new(cfg, &s);
    if (rc >= 0)
        fail_msg("atp_store_new accepted a bad config (%s)", why);
    UNTOUCHED(s);
}

static void test_new_rejects_bad_config(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    struct atp_channel_config ch[ATP_MAX_CHANNELS + 1];
    memset(ch, 0, sizeof(ch));
    for (int i = 0; i <= ATP_MAX_CHANNELS; i++) {
        static char names[ATP_MAX_CHANNELS + 1][8];
        snprintf(names[i], sizeof(names[i]), "c%d", i);
        ch[i].name = names[i];
        ch[i].cap = -1;
    }
    atp_store_config_defaults(&cfg);
    cfg.max_items = 64;
    cfg.max_reservations = 64;
    cfg.max_overrides = 64;
    cfg.channels = ch;

    cfg.nchannels = 0;
    expect_new_fails(&cfg, "no channels");
    cfg.nchannels = ATP_MAX_CHANNELS + 1;
    expect_new_fails(&cfg, "33 channels");
    cfg.nchannels = 1;
    cfg.nshards = 3;
    expect_new_fails(&cfg, "nshards not a power of two");
    cfg.nshards = 4;

    struct atp_channel_config bad = {.name = "web", .cap = -1};
    cfg.channels = &bad;
    bad.name = "";
    expect_new_fails(&cfg, "empty channel name");
    bad.name = "we b";
    expect_new_fails(&cfg, "channel name with a space");
    bad.name = "012345678901234567890123456789012"; /* 33 bytes */
    expect_new_fails(&cfg, "channel name of 33 bytes");
    bad.name = NULL;
    expect_new_fails(&cfg, "NULL channel name");
    bad.name = "web";
    bad.safety_units = -1;
    expect_new_fails(&cfg, "negative safety units");
    bad.safety_units = 0;
    bad.safety_pct = 101;
    expect_new_fails(&cfg, "safety percent over 100");
    bad.safety_pct = 0;
    const char *badlocs[] = {"DC1", "D C2"};
    bad.locations = badlocs;
    bad.nlocations = 2;
    expect_new_fails(&cfg, "invalid location in a channel list");
    const char *duplocs[] = {"DC1", "DC1"};
    bad.locations = duplocs;
    expect_new_fails(&cfg, "location listed twice");
    bad.locations = NULL;
    bad.nlocations = 0;

    struct atp_channel_config two[2] = {{.name = "web", .cap = -1}, {.name = "web", .cap = -1}};
    cfg.channels = two;
    cfg.nchannels = 2;
    expect_new_fails(&cfg, "duplicate channel name");

    /* and the good ones do work */
    cfg.channels = ch;
    cfg.nchannels = ATP_MAX_CHANNELS;
    struct atp_store *s = NULL;
    RC(0, atp_store_new(&cfg, &s));
    assert_non_null(s);
    assert_int_equal(atp_store_channel_count(s), ATP_MAX_CHANNELS);
    atp_store_free(s);
    atp_store_free(NULL);
}

static void test_channels(void **state)
{
    struct atp_store *s = *state;
    assert_int_equal(atp_store_channel_count(s), NCH);
    for (uint32_t i = 0; i < NCH; i++) {
        uint32_t id = 999;
        RC(0, atp_store_channel_find(s, S(fixture_channels[i].name), &id));
        assert_int_equal(id, i);
        assert_true(slice_eq(atp_store_channel_name(s, i), fixture_channels[i].name));
    }
    assert_int_equal(atp_store_channel_name(s, NCH).len, 0); /* out of range: empty */
    uint32_t id;
    fill(&id, sizeof(id));
    RC(ATP_ENOCHANNEL, atp_store_channel_find(s, S("nope"), &id));
    RC(ATP_ENOCHANNEL, atp_store_channel_find(s, S("we"), &id));
    RC(ATP_ENOCHANNEL, atp_store_channel_find(s, S("webx"), &id));
    RC(ATP_ENOCHANNEL, atp_store_channel_find(s, S(""), &id));
    RC(ATP_ENOCHANNEL, atp_store_channel_find(s, S("WEB"), &id));
    UNTOUCHED(id);

    /* an unknown channel id is refused everywhere it is taken */
    SET(s, "A", "DC1", 10);
    struct atp_breakdown b;
    fill(&b, sizeof(b));
    RC(ATP_ENOCHANNEL, atp_store_get(s, S("A"), S("DC1"), NCH, &b));
    RC(ATP_ENOCHANNEL, atp_store_get(s, S("A"), S("DC1"), UINT32_MAX, &b));
    RC(ATP_ENOCHANNEL, atp_store_get_network(s, S("A"), NCH, &b));
    UNTOUCHED(b);
    RC(ATP_ENOCHANNEL, atp_store_set_safety(s, S("A"), S("DC1"), NCH, 1));
    RC(ATP_ENOCHANNEL, atp_store_set_safety(s, S("A"), S(""), NCH, 1));
    struct atp_reservation r;
    bool rp;
    fill(&r, sizeof(r));
    fill(&rp, sizeof(rp));
    RC(ATP_ENOCHANNEL, reserve1(s, "k", NCH, "A", "DC1", 1, 1000, T0, &r, &rp, NULL));
    UNTOUCHED(r);
    UNTOUCHED(rp);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);
}

static void test_misc_helpers(void **state)
{
    (void)state;
    struct atp_slice sl = atp_slice_cstr("abc");
    assert_int_equal(sl.len, 3);
    assert_memory_equal(sl.p, "abc", 3);
    assert_int_equal(atp_slice_cstr("").len, 0);
    struct atp_slice lit = ATP_SLICE("hello");
    assert_int_equal(lit.len, 5);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t mine = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint64_t now = atp_now_us();
    assert_true(now + 1000000 > mine && now < mine + 1000000);

    int states[] = {ATP_RES_HELD, ATP_RES_COMMITTED, ATP_RES_FULFILLED, ATP_RES_RELEASED,
                    ATP_RES_EXPIRED};
    for (int i = 0; i < 5; i++) {
        const char *n = atp_res_state_name(states[i]);
        assert_non_null(n);
        assert_true(strlen(n) > 0);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(n, atp_res_state_name(states[j]));
    }
    assert_non_null(atp_res_state_name(0));
    assert_non_null(atp_res_state_name(99));
}

/* ---------------------------------------------------------------------- */
/* validation                                                             */
/* ---------------------------------------------------------------------- */

static void test_validate(void **state)
{
    (void)state;
    char buf[128];
    RC(0, atp_validate_sku(S("SKU-1")));
    RC(0, atp_validate_sku(S("aZ09._:/-")));
    RC(0, atp_validate_loc(S("DC1/aisle:3.b_x-y")));
    memset(buf, 'x', sizeof(buf));
    RC(0, atp_validate_sku((struct atp_slice){buf, 64}));
    RC(ATP_EINVAL_SKU, atp_validate_sku((struct atp_slice){buf, 65}));
    RC(ATP_EINVAL_SKU, atp_validate_sku((struct atp_slice){buf, 100}));
    RC(0, atp_validate_loc((struct atp_slice){buf, 32}));
    RC(ATP_EINVAL_LOC, atp_validate_loc((struct atp_slice){buf, 33}));
    RC(ATP_EINVAL_SKU, atp_validate_sku((struct atp_slice){"", 0}));
    RC(ATP_EINVAL_LOC, atp_validate_loc((struct atp_slice){"", 0}));
    RC(ATP_EINVAL_SKU, atp_validate_sku((struct atp_slice){NULL, 0}));

    /* every byte outside [A-Za-z0-9._:/-] is refused, anywhere in the key */
    for (int c = 0; c < 256; c++) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
        char k[3] = {'a', (char)c, 'b'};
        int want_sku = ok ? 0 : ATP_EINVAL_SKU;
        int want_loc = ok ? 0 : ATP_EINVAL_LOC;
        if (atp_validate_sku((struct atp_slice){k, 3}) != want_sku)
            fail_msg("sku with byte 0x%02x: expected %s", c, atp_error_name(want_sku));
        if (atp_validate_loc((struct atp_slice){k, 3}) != want_loc)
            fail_msg("loc with byte 0x%02x: expected %s", c, atp_error_name(want_loc));
        k[0] = (char)c;
        if (atp_validate_sku((struct atp_slice){k, 1}) != want_sku)
            fail_msg("1-byte sku 0x%02x: expected %s", c, atp_error_name(want_sku));
    }
}

/* Every function that takes a sku and a location validates them. */
static void test_validation_everywhere(void **state)
{
    struct atp_store *s = *state;
    char long_sku[66], long_loc[34];
    memset(long_sku, 's', 65);
    long_sku[65] = 0;
    memset(long_loc, 'l', 33);
    long_loc[33] = 0;
    const char *bad_skus[] = {"", long_sku, "a b", "sku@1", "é", "a,b", "x\ty"};
    const char *bad_locs[] = {long_loc, "D C", "dc#1", "x\n"};
    struct atp_breakdown b;
    int64_t oh;
    struct atp_reservation r;
    bool rp;
    struct atp_shortfall sh;

    SET(s, "OK", "DC1", 5);
    for (size_t i = 0; i < sizeof(bad_skus) / sizeof(bad_skus[0]); i++) {
        const char *k = bad_skus[i];
        fill(&b, sizeof(b));
        fill(&oh, sizeof(oh));
        fill(&r, sizeof(r));
        fill(&rp, sizeof(rp));
        fill(&sh, sizeof(sh));
        RC(ATP_EINVAL_SKU, atp_store_adjust(s, S(k), S("DC1"), 1, &oh));
        RC(ATP_EINVAL_SKU, atp_store_set(s, S(k), S("DC1"), 1, 0));
        RC(ATP_EINVAL_SKU, atp_store_allocate(s, S(k), S("DC1"), 1));
        RC(ATP_EINVAL_SKU, atp_store_deallocate(s, S(k), S("DC1"), 1));
        RC(ATP_EINVAL_SKU, atp_store_set_safety(s, S(k), S("DC1"), WEB, 1));
        RC(ATP_EINVAL_SKU, atp_store_set_safety(s, S(k), S(""), WEB, 1));
        RC(ATP_EINVAL_SKU, atp_store_get(s, S(k), S("DC1"), WEB, &b));
        RC(ATP_EINVAL_SKU, atp_store_get_network(s, S(k), WEB, &b));
        RC(ATP_EINVAL_SKU, reserve1(s, "k1", WEB, k, "DC1", 1, 1000, T0, &r, &rp, &sh));
        RC(ATP_EINVAL_SKU, reserve1(s, "k1", WEB, k, NULL, 1, 1000, T0, &r, &rp, &sh));
        UNTOUCHED(b);
        UNTOUCHED(oh);
        UNTOUCHED(r);
        UNTOUCHED(rp);
        UNTOUCHED(sh);
    }
    for (size_t i = 0; i < sizeof(bad_locs) / sizeof(bad_locs[0]); i++) {
        const char *l = bad_locs[i];
        fill(&b, sizeof(b));
        fill(&oh, sizeof(oh));
        fill(&r, sizeof(r));
        fill(&rp, sizeof(rp));
        RC(ATP_EINVAL_LOC, atp_store_adjust(s, S("OK"), S(l), 1, &oh));
        RC(ATP_EINVAL_LOC, atp_store_set(s, S("OK"), S(l), 1, 0));
        RC(ATP_EINVAL_LOC, atp_store_allocate(s, S("OK"), S(l), 1));
        RC(ATP_EINVAL_LOC, atp_store_deallocate(s, S("OK"), S(l), 1));
        RC(ATP_EINVAL_LOC, atp_store_set_safety(s, S("OK"), S(l), WEB, 1));
        RC(ATP_EINVAL_LOC, atp_store_get(s, S("OK"), S(l), WEB, &b));
        RC(ATP_EINVAL_LOC, reserve1(s, "k1", WEB, "OK", l, 1, 1000, T0, &r, &rp, NULL));
        UNTOUCHED(b);
        UNTOUCHED(oh);
        UNTOUCHED(r);
        UNTOUCHED(rp);
    }
    /* an item read needs a location: empty is invalid there */
    RC(ATP_EINVAL_LOC, atp_store_get(s, S("OK"), S(""), WEB, &b));
    RC(ATP_EINVAL_LOC, atp_store_adjust(s, S("OK"), S(""), 1, &oh));
    RC(ATP_EINVAL_LOC, atp_store_set(s, S("OK"), S(""), 1, 0));

    /* nothing was created or changed by any of the above */
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 1);
    assert_int_equal(st.skus, 1);
    assert_int_equal(st.reserves_granted, 0);
    assert_int_equal(st.overrides, 0);
    b = BD(s, "OK", "DC1", WEB);
    assert_int_equal(b.on_hand, 5);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.reserved, 0);

    /* 64-byte sku and 32-byte location are fine */
    char sku64[65], loc32[33];
    memset(sku64, 'S', 64);
    sku64[64] = 0;
    memset(loc32, 'L', 32);
    loc32[32] = 0;
    SET(s, sku64, loc32, 7);
    assert_int_equal(ATP(s, sku64, loc32, WEB), 7);
    HOLD(s, "long", WEB, sku64, loc32, 2, 1000, T0);
    assert_int_equal(ATP(s, sku64, loc32, WEB), 5);
}

static void test_reserve_request_validation(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 100);
    SET(s, "B", "DC1", 100);
    struct atp_reservation r;
    bool rp;
    struct atp_shortfall sh[ATP_MAX_LINES + 1];
    fill(&r, sizeof(r));
    fill(&rp, sizeof(rp));
    fill(sh, sizeof(sh));

    /* quantities */
    RC(ATP_EQTY, reserve1(s, "q0", WEB, "A", "DC1", 0, 1000, T0, &r, &rp, sh));
    RC(ATP_EQTY, reserve1(s, "q1", WEB, "A", "DC1", -1, 1000, T0, &r, &rp, sh));
    RC(ATP_EQTY, reserve1(s, "q2", WEB, "A", "DC1", INT64_MIN, 1000, T0, &r, &rp, sh));
    RC(ATP_EQTY, reserve1(s, "q3", WEB, "A", NULL, 0, 1000, T0, &r, &rp, sh));

    /* TTL: 1..max_ttl_ms */
    uint64_t max_ttl = 24ull * 3600 * 1000;
    RC(ATP_ETTL, reserve1(s, "t0", WEB, "A", "DC1", 1, 0, T0, &r, &rp, sh));
    RC(ATP_ETTL, reserve1(s, "t1", WEB, "A", "DC1", 1, max_ttl + 1, T0, &r, &rp, sh));
    RC(ATP_ETTL, reserve1(s, "t2", WEB, "A", "DC1", 1, UINT64_MAX, T0, &r, &rp, sh));

    /* keys: 1..64 printable ASCII */
    char key65[66];
    memset(key65, 'k', 65);
    key65[65] = 0;
    RC(ATP_EKEY, reserve1(s, "", WEB, "A", "DC1", 1, 1000, T0, &r, &rp, sh));
    RC(ATP_EKEY, reserve1(s, key65, WEB, "A", "DC1", 1, 1000, T0, &r, &rp, sh));
    RC(ATP_EKEY, reserve1(s, "a\nb", WEB, "A", "DC1", 1, 1000, T0, &r, &rp, sh));
    RC(ATP_EKEY, reserve1(s, "a\x7f", WEB, "A", "DC1", 1, 1000, T0, &r, &rp, sh));
    RC(ATP_EKEY, reserve1(s, "\xc3\xa9", WEB, "A", "DC1", 1, 1000, T0, &r, &rp, sh));
    {
        struct atp_line_req line = {S("A"), S("DC1"), 1};
        struct atp_reserve_req req = {{"a\0b", 3}, WEB, 1000, &line, 1};
        RC(ATP_EKEY, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    }

    /* line counts: 1..ATP_MAX_LINES */
    struct atp_line_req lines[ATP_MAX_LINES + 1];
    char skus[ATP_MAX_LINES + 1][8];
    for (int i = 0; i <= ATP_MAX_LINES; i++) {
        snprintf(skus[i], sizeof(skus[i]), "M%d", i);
        SET(s, skus[i], "DC1", 10);
        lines[i] = (struct atp_line_req){S(skus[i]), S("DC1"), 1};
    }
    struct atp_reserve_req req = {S("lines"), WEB, 1000, lines, 0};
    int rc = atp_store_reserve(s, &req, T0, &r, &rp, sh);
    if (rc != ATP_EINVAL && rc != ATP_ETOOMANY)
        fail_msg("reserve with 0 lines: %s, expected EINVAL", atp_error_name(rc));
    req.nlines = ATP_MAX_LINES + 1;
    RC(ATP_ETOOMANY, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    req.lines = NULL;
    req.nlines = 1;
    rc = atp_store_reserve(s, &req, T0, &r, &rp, sh);
    assert_true(rc < 0);
    UNTOUCHED(r);
    UNTOUCHED(rp);
    UNTOUCHED(sh);

    /* nothing reserved by any refused request */
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.reserves_granted, 0);
    assert_int_equal(st.reservations_live, 0);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 0);

    /* the limits themselves are fine */
    req.lines = lines;
    req.nlines = ATP_MAX_LINES;
    RC(0, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    assert_int_equal(r.nlines, ATP_MAX_LINES);
    assert_false(rp);
    for (int i = 0; i < ATP_MAX_LINES; i++)
        assert_int_equal(ATP(s, skus[i], "DC1", WEB), 9);
    char key64[65];
    memset(key64, '~', 64);
    key64[64] = 0;
    HOLD(s, key64, WEB, "A", "DC1", 1, max_ttl, T0);
    HOLD(s, "!order/123:retry#2~", WEB, "A", "DC1", 1, 1, T0);
}

/* ---------------------------------------------------------------------- */
/* reads and event mutations                                              */
/* ---------------------------------------------------------------------- */

/* Batched lookups answer exactly like single ones, error for error. */
static void test_get_many(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    SET(s, "A", "DC2", 20);
    SET(s, "B", "DC3", 30);
    RC(0, atp_store_allocate(s, S("A"), S("DC2"), 4));
    HOLD(s, "g1", WEB, "B", "DC3", 5, 1000, T0);
    RC(0, atp_store_set_safety(s, S("A"), S("DC1"), APP, 3));
    const char *sk[] = {"A", "A", "B", "A", "nope", "a b", "A", "B", "A"};
    const char *lc[] = {"DC1", "DC2", "DC3", "DC3", "DC1", "DC1", "D C", "DC3", ""};
    enum { NK = 9, N = 40 };
    struct atp_get_req reqs[N];
    for (int i = 0; i < N; i++) /* more than one prefetch group, every key and channel */
        reqs[i] = (struct atp_get_req){S(sk[i % NK]), S(lc[i % NK]), (uint32_t)(i % (NCH + 1))};
    struct atp_breakdown out[N];
    int rcs[N];
    memset(rcs, 0x5a, sizeof(rcs));
    atp_store_get_many(s, reqs, N, out, rcs);
    for (int i = 0; i < N; i++) {
        struct atp_breakdown b;
        int rc = atp_store_get(s, reqs[i].sku, reqs[i].loc, reqs[i].channel, &b);
        if (rcs[i] != rc)
            fail_msg("key %d (%s@%s ch %u): get_many %s, get %s", i, sk[i % NK], lc[i % NK],
                     reqs[i].channel, atp_error_name(rcs[i]), atp_error_name(rc));
        if (rc == 0)
            assert_memory_equal(&out[i], &b, sizeof(b));
    }
    /* a spot check of values, not only agreement */
    assert_int_equal(rcs[0], 0);
    assert_int_equal(out[0].atp, 10);
    assert_int_equal(rcs[1], 0);
    assert_int_equal(out[1].allocated, 4);
    assert_int_equal(rcs[4], ATP_ENOTFOUND);
    assert_int_equal(rcs[5], ATP_EINVAL_SKU);
    assert_int_equal(rcs[6], ATP_ENOCHANNEL); /* channel 6 of 6 */
    assert_int_equal(rcs[8], ATP_EINVAL_LOC); /* empty location */
    atp_store_get_many(s, reqs, 0, out, rcs); /* nothing to do */
    atp_store_get_many(s, reqs, 1, out, rcs);
    assert_int_equal(rcs[0], 0);
}

static void test_unknown_items(void **state)
{
    struct atp_store *s = *state;
    struct atp_breakdown b;
    fill(&b, sizeof(b));
    RC(ATP_ENOTFOUND, atp_store_get(s, S("nope"), S("DC1"), WEB, &b));
    RC(ATP_ENOTFOUND, atp_store_get_network(s, S("nope"), WEB, &b));
    SET(s, "A", "DC1", 3);
    RC(ATP_ENOTFOUND, atp_store_get(s, S("A"), S("DC2"), WEB, &b));
    RC(ATP_ENOTFOUND, atp_store_get(s, S("B"), S("DC1"), WEB, &b));
    UNTOUCHED(b);
    /* reads never create */
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 1);
}

static void test_adjust(void **state)
{
    struct atp_store *s = *state;
    struct atp_store_stats st0;
    atp_store_stats(s, &st0); /* channel location lists may already name locations */
    int64_t oh = -1;
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), 10, &oh));
    assert_int_equal(oh, 10);
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), -3, &oh));
    assert_int_equal(oh, 7);
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), 5, NULL));
    struct atp_breakdown b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.on_hand, 12);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.reserved, 0);
    assert_int_equal(b.safety, 0);
    assert_int_equal(b.atp, 12);

    fill(&oh, sizeof(oh));
    int rc = atp_store_adjust(s, S("A"), S("DC1"), 0, &oh);
    if (rc != ATP_EQTY && rc != ATP_EINVAL)
        fail_msg("adjust by 0: %s, expected EQTY or EINVAL", atp_error_name(rc));
    UNTOUCHED(oh);
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 12);

    /* a shrink below zero is a fact (damage, count): on_hand goes negative, ATP clamps */
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), -20, &oh));
    assert_int_equal(oh, -8);
    b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.on_hand, -8);
    assert_int_equal(b.atp, 0);
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), 9, &oh));
    assert_int_equal(ATP(s, "A", "DC1", WEB), 1);

    /* the first adjust creates the item, negative or not */
    RC(0, atp_store_adjust(s, S("C"), S("DC9"), -2, &oh));
    assert_int_equal(oh, -2);
    assert_int_equal(ATP(s, "C", "DC9", WEB), 0);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 2);
    assert_int_equal(st.skus, 2);
    assert_true(st.locations >= 2 && st.locations <= st0.locations + 2);
}

static void test_set_sequence(void **state)
{
    struct atp_store *s = *state;
    RC(0, atp_store_set(s, S("A"), S("DC1"), 100, 5));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 100);
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC1"), 50, 4));
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC1"), 50, 5)); /* equal is not newer */
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 100);
    RC(0, atp_store_set(s, S("A"), S("DC1"), 70, 6));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 70);
    /* seq 0: unguarded admin set, always applied, does not move the sequence */
    RC(0, atp_store_set(s, S("A"), S("DC1"), 10, 0));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 10);
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC1"), 20, 6));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 10);
    RC(0, atp_store_set(s, S("A"), S("DC1"), 20, 7));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 20);
    /* adjusts do not touch the sequence either */
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), 5, NULL));
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC1"), 1, 7));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 25);
    /* sequences are per item */
    RC(0, atp_store_set(s, S("A"), S("DC2"), 3, 1));
    RC(0, atp_store_set(s, S("B"), S("DC1"), 3, 1));
    RC(0, atp_store_set(s, S("A"), S("DC2"), 4, UINT64_MAX));
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC2"), 5, UINT64_MAX));

    /* negative absolute on_hand is refused, nothing changes */
    int rc = atp_store_set(s, S("A"), S("DC1"), -1, 8);
    if (rc != ATP_EQTY && rc != ATP_EINVAL && rc != ATP_ERANGE)
        fail_msg("set -1: %s, expected EQTY", atp_error_name(rc));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 25);
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC1"), 1, 7)); /* seq 8 not consumed */
    RC(0, atp_store_set(s, S("A"), S("DC1"), 0, 8));
    assert_int_equal(BD(s, "A", "DC1", WEB).atp, 0);

    /* a set keeps reservations and allocations: free = set - allocated - reserved */
    RC(0, atp_store_set(s, S("R"), S("DC1"), 10, 1));
    HOLD(s, "r1", WEB, "R", "DC1", 4, 1000, T0);
    RC(0, atp_store_allocate(s, S("R"), S("DC1"), 1));
    RC(0, atp_store_set(s, S("R"), S("DC1"), 8, 2));
    struct atp_breakdown b = BD(s, "R", "DC1", WEB);
    assert_int_equal(b.on_hand, 8);
    assert_int_equal(b.reserved, 4);
    assert_int_equal(b.allocated, 1);
    assert_int_equal(b.atp, 3);
    RC(0, atp_store_set(s, S("R"), S("DC1"), 2, 3));
    assert_int_equal(ATP(s, "R", "DC1", WEB), 0);
}

struct view_find {
    const char *sku, *loc;
    struct atp_item_view v;
    int found;
    int visited;
};

static int find_view(const struct atp_item_view *v, void *arg)
{
    struct view_find *f = arg;
    f->visited++;
    if (slice_eq(v->sku, f->sku) && slice_eq(v->loc, f->loc)) {
        f->v = *v;
        f->found++;
    }
    return 0;
}

static int stop_at_two(const struct atp_item_view *v, void *arg)
{
    int *n = arg;
    (void)v;
    return ++*n == 2 ? 42 : 0;
}

static void test_foreach_item(void **state)
{
    struct atp_store *s = *state;
    RC(0, atp_store_set(s, S("A"), S("DC1"), 100, 9));
    RC(0, atp_store_set(s, S("A"), S("DC2"), 5, 0));
    RC(0, atp_store_adjust(s, S("B"), S("DC1"), 3, NULL));
    RC(0, atp_store_allocate(s, S("A"), S("DC1"), 4));
    HOLD(s, "r", WEB, "A", "DC1", 6, 1000, T0);
    struct view_find f = {.sku = "A", .loc = "DC1"};
    RC(0, atp_store_foreach_item(s, find_view, &f));
    assert_int_equal(f.visited, 3);
    assert_int_equal(f.found, 1);
    assert_int_equal(f.v.on_hand, 100);
    assert_int_equal(f.v.allocated, 4);
    assert_int_equal(f.v.reserved, 6);
    assert_int_equal(f.v.set_seq, 9);
    struct view_find g = {.sku = "A", .loc = "DC2"};
    RC(0, atp_store_foreach_item(s, find_view, &g));
    assert_int_equal(g.found, 1);
    assert_int_equal(g.v.set_seq, 0);
    int n = 0;
    RC(42, atp_store_foreach_item(s, stop_at_two, &n));
    assert_int_equal(n, 2);
}

static void test_allocate_deallocate(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    RC(0, atp_store_allocate(s, S("A"), S("DC1"), 3));
    struct atp_breakdown b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.allocated, 3);
    assert_int_equal(b.atp, 7);
    /* an external order is a fact: it may take ATP below zero (shown as 0) */
    RC(0, atp_store_allocate(s, S("A"), S("DC1"), 9));
    b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.allocated, 12);
    assert_int_equal(b.atp, 0);
    RC(0, atp_store_deallocate(s, S("A"), S("DC1"), 5));
    b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.allocated, 7);
    assert_int_equal(b.atp, 3);
    RC(ATP_EQTY, atp_store_allocate(s, S("A"), S("DC1"), 0));
    RC(ATP_EQTY, atp_store_allocate(s, S("A"), S("DC1"), -2));
    RC(ATP_EQTY, atp_store_deallocate(s, S("A"), S("DC1"), 0));
    RC(ATP_EQTY, atp_store_deallocate(s, S("A"), S("DC1"), -2));
    assert_int_equal(BD(s, "A", "DC1", WEB).allocated, 7);

    /* an allocation on an item never seen creates it, like every event */
    RC(0, atp_store_allocate(s, S("N"), S("DC5"), 2));
    b = BD(s, "N", "DC5", WEB);
    assert_int_equal(b.allocated, 2);
    assert_int_equal(b.on_hand, 0);
}

/*
 * Deallocating more than is allocated (a duplicate or reordered EDI event)
 * must not manufacture stock: allocated never goes negative, so ATP never
 * shows more than on_hand. The header: ATP_ERANGE, and nothing changes.
 */
static void test_deallocate_beyond_allocated(void **state)
{
    struct atp_store *s = *state;
    SET(s, "D", "DC1", 10);
    RC(0, atp_store_allocate(s, S("D"), S("DC1"), 2));
    int rc = atp_store_deallocate(s, S("D"), S("DC1"), 7);
    struct atp_breakdown b = BD(s, "D", "DC1", WEB);
    if (b.allocated < 0 || b.atp > b.on_hand)
        fail_msg("deallocate 7 of 2 allocated returned %s and left allocated %lld, "
                 "atp %lld with on_hand %lld",
                 atp_error_name(rc), (long long)b.allocated, (long long)b.atp,
                 (long long)b.on_hand);
    RC(ATP_ERANGE, rc);
    assert_int_equal(b.allocated, 2);
    assert_int_equal(b.atp, 8);
    /* exactly what is allocated is fine */
    RC(0, atp_store_deallocate(s, S("D"), S("DC1"), 2));
    assert_int_equal(BD(s, "D", "DC1", WEB).allocated, 0);
    RC(ATP_ERANGE, atp_store_deallocate(s, S("D"), S("DC1"), 1));
    /* and so a channel can never hold more than is physically there */
    struct atp_shortfall sh;
    rc = reserve1(s, "over", WEB, "D", "DC1", 11, 1000, T0, NULL, NULL, &sh);
    assert_int_equal(rc, ATP_EINSUFFICIENT);
}

static void test_quantity_range(void **state)
{
    struct atp_store *s = *state;
    const int64_t M = ATP_QTY_MAX;
    int64_t oh;
    RC(0, atp_store_set(s, S("A"), S("DC1"), M, 0));
    assert_int_equal(ATP(s, "A", "DC1", WEB), M);
    fill(&oh, sizeof(oh));
    RC(ATP_ERANGE, atp_store_adjust(s, S("A"), S("DC1"), 1, &oh));
    RC(ATP_ERANGE, atp_store_adjust(s, S("A"), S("DC1"), INT64_MAX, &oh));
    UNTOUCHED(oh);
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, M);
    RC(ATP_ERANGE, atp_store_set(s, S("A"), S("DC1"), M + 1, 0));
    RC(ATP_ERANGE, atp_store_set(s, S("A"), S("DC1"), INT64_MAX, 0));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, M);

    /* free = on_hand - allocated - reserved must stay in range too */
    RC(0, atp_store_set(s, S("B"), S("DC1"), 0, 0));
    RC(0, atp_store_allocate(s, S("B"), S("DC1"), M));
    RC(ATP_ERANGE, atp_store_allocate(s, S("B"), S("DC1"), 1));
    RC(ATP_ERANGE, atp_store_allocate(s, S("B"), S("DC1"), INT64_MAX));
    RC(ATP_ERANGE, atp_store_adjust(s, S("B"), S("DC1"), -1, NULL));
    struct atp_breakdown b = BD(s, "B", "DC1", WEB);
    assert_int_equal(b.allocated, M);
    assert_int_equal(b.on_hand, 0);
    assert_int_equal(b.atp, 0);
    RC(0, atp_store_deallocate(s, S("B"), S("DC1"), M));

    /* adjust down to -M works, one more is out of range; a huge negative delta too */
    RC(0, atp_store_set(s, S("C"), S("DC1"), 0, 0));
    RC(0, atp_store_adjust(s, S("C"), S("DC1"), -M, &oh));
    assert_int_equal(oh, -M);
    RC(ATP_ERANGE, atp_store_adjust(s, S("C"), S("DC1"), -1, NULL));
    RC(ATP_ERANGE, atp_store_adjust(s, S("C"), S("DC1"), INT64_MIN, NULL));
    RC(ATP_ERANGE, atp_store_adjust(s, S("D"), S("DC1"), M + 1, NULL));

    /* a reserve of more than the range never overflows into a grant */
    struct atp_shortfall sh;
    int rc = reserve1(s, "big", WEB, "A", "DC1", INT64_MAX, 1000, T0, NULL, NULL, &sh);
    if (rc != ATP_ERANGE && rc != ATP_EINSUFFICIENT)
        fail_msg("reserve INT64_MAX: %s, expected ERANGE or EINSUFFICIENT", atp_error_name(rc));
    rc = reserve1(s, "big2", WEB, "A", "DC1", M + 1, 1000, T0, NULL, NULL, &sh);
    if (rc != ATP_ERANGE && rc != ATP_EINSUFFICIENT)
        fail_msg("reserve M+1: %s, expected ERANGE or EINSUFFICIENT", atp_error_name(rc));
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 0);
    /* the whole range can be held */
    HOLD(s, "all", WEB, "A", "DC1", M, 1000, T0);
    b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.reserved, M);
    assert_int_equal(b.atp, 0);
}

/* ---------------------------------------------------------------------- */
/* safety stock, caps, channel location lists                             */
/* ---------------------------------------------------------------------- */

static void test_channel_safety_and_cap(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 95);
    /* app: 2 units */
    struct atp_breakdown b = BD(s, "A", "DC1", APP);
    assert_int_equal(b.safety, 2);
    assert_int_equal(b.atp, 93);
    /* marketplace-x: 10 % of 95 rounded up = 10, capped at 50 */
    b = BD(s, "A", "DC1", MKT);
    assert_int_equal(b.safety, 10);
    assert_int_equal(b.atp, 50);
    SET(s, "A", "DC1", 41);
    b = BD(s, "A", "DC1", MKT);
    assert_int_equal(b.safety, 5); /* 4.1 -> 5 */
    assert_int_equal(b.atp, 36);
    SET(s, "A", "DC1", 40);
    assert_int_equal(BD(s, "A", "DC1", MKT).safety, 4); /* exactly 4 */
    /* the percentage is of on_hand, not of what is free */
    RC(0, atp_store_allocate(s, S("A"), S("DC1"), 20));
    b = BD(s, "A", "DC1", MKT);
    assert_int_equal(b.safety, 4);
    assert_int_equal(b.atp, 16);
    /* units and percent together: the larger of the two */
    SET(s, "C", "DC1", 20);
    assert_int_equal(BD(s, "C", "DC1", MIX).safety, 3); /* 3 vs 2 */
    SET(s, "C", "DC1", 100);
    assert_int_equal(BD(s, "C", "DC1", MIX).safety, 10); /* 3 vs 10 */
    assert_int_equal(ATP(s, "C", "DC1", MIX), 90);
    SET(s, "C", "DC1", 0);
    RC(0, atp_store_adjust(s, S("C"), S("DC1"), -10, NULL));
    assert_int_equal(BD(s, "C", "DC1", MIX).safety, 3); /* no percent of a negative */
    /* cap 0 never shows anything */
    assert_int_equal(ATP(s, "A", "DC1", ZERO), 0);
    /* safety never makes ATP negative */
    SET(s, "B", "DC1", 1);
    b = BD(s, "B", "DC1", APP);
    assert_int_equal(b.atp, 0);
    assert_int_equal(b.on_hand, 1);
    /* web sees it all */
    assert_int_equal(ATP(s, "B", "DC1", WEB), 1);
}

static void test_safety_overrides(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 100);
    SET(s, "A", "DC2", 100);
    SET(s, "B", "DC1", 100);
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 2);

    /* a sku-level override needs the sku; removing a missing one is fine */
    RC(ATP_ENOTFOUND, atp_store_set_safety(s, S("NOSKU"), S(""), APP, 1));
    RC(0, atp_store_set_safety(s, S("A"), S(""), WEB, -1));
    /* sku-level override for app: both locations of A, not B, not web */
    RC(0, atp_store_set_safety(s, S("A"), S(""), APP, 7));
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 7);
    assert_int_equal(BD(s, "A", "DC2", APP).safety, 7);
    assert_int_equal(ATP(s, "A", "DC2", APP), 93);
    assert_int_equal(BD(s, "B", "DC1", APP).safety, 2);
    assert_int_equal(BD(s, "A", "DC1", WEB).safety, 0);

    /* item-level override wins over the sku-level one */
    RC(0, atp_store_set_safety(s, S("A"), S("DC1"), APP, 20));
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 20);
    assert_int_equal(ATP(s, "A", "DC1", APP), 80);
    assert_int_equal(BD(s, "A", "DC2", APP).safety, 7);

    /* an override of zero is an override: it beats the channel's 2 units */
    RC(0, atp_store_set_safety(s, S("B"), S("DC1"), APP, 0));
    assert_int_equal(BD(s, "B", "DC1", APP).safety, 0);
    assert_int_equal(ATP(s, "B", "DC1", APP), 100);

    /* overrides replace the channel's percentage as well */
    RC(0, atp_store_set_safety(s, S("A"), S(""), MKT, 1));
    assert_int_equal(BD(s, "A", "DC1", MKT).safety, 1);

    /* replacing an override */
    RC(0, atp_store_set_safety(s, S("A"), S("DC1"), APP, 30));
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 30);

    /* removal: item override gone -> sku override applies again */
    RC(0, atp_store_set_safety(s, S("A"), S("DC1"), APP, -1));
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 7);
    /* sku override gone -> channel config applies again */
    RC(0, atp_store_set_safety(s, S("A"), S(""), APP, -1));
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 2);
    assert_int_equal(BD(s, "A", "DC2", APP).safety, 2);
    /* item override without a sku override */
    RC(0, atp_store_set_safety(s, S("A"), S("DC2"), APP, 50));
    assert_int_equal(BD(s, "A", "DC2", APP).safety, 50);
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 2);

    /* network reads apply the per-item safety */
    struct atp_breakdown n = NET(s, "A", APP);
    assert_int_equal(n.on_hand, 200);
    assert_int_equal(n.safety, 52);
    assert_int_equal(n.atp, 148);

    /* the override governs reservations too */
    struct atp_shortfall sh;
    RC(ATP_EINSUFFICIENT, reserve1(s, "o1", APP, "A", "DC2", 51, 1000, T0, NULL, NULL, &sh));
    assert_int_equal(sh.requested, 51);
    assert_int_equal(sh.available, 50);
    HOLD(s, "o2", APP, "A", "DC2", 50, 1000, T0);
    assert_int_equal(ATP(s, "A", "DC2", APP), 0);
    assert_int_equal(ATP(s, "A", "DC2", WEB), 50);

    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_true(st.overrides >= 3);
}

static void test_location_lists(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    SET(s, "A", "DC2", 20);
    SET(s, "A", "DC3", 40);
    /* b2b sells from DC2 and DC1 only: DC3 reads as zero, stock still shown */
    struct atp_breakdown b = BD(s, "A", "DC3", B2B);
    assert_int_equal(b.on_hand, 40);
    assert_int_equal(b.atp, 0);
    assert_int_equal(ATP(s, "A", "DC1", B2B), 10);
    assert_int_equal(ATP(s, "A", "DC2", B2B), 20);
    struct atp_breakdown n = NET(s, "A", B2B);
    assert_int_equal(n.atp, 30);
    assert_int_equal(n.on_hand, 30);
    n = NET(s, "A", WEB);
    assert_int_equal(n.atp, 70);
    assert_int_equal(n.on_hand, 70);
    /* reserving at a location the channel may not sell from is refused */
    struct atp_shortfall sh;
    struct atp_reservation r;
    fill(&r, sizeof(r));
    RC(ATP_EINSUFFICIENT, reserve1(s, "x", B2B, "A", "DC3", 1, 1000, T0, &r, NULL, &sh));
    UNTOUCHED(r);
    assert_int_equal(sh.requested, 1);
    assert_int_equal(sh.available, 0);
    assert_int_equal(BD(s, "A", "DC3", WEB).reserved, 0);

    /* a sku with items only outside the list exists, but has nothing for b2b */
    SET(s, "Z", "DC3", 5);
    n = NET(s, "Z", B2B);
    assert_int_equal(n.atp, 0);
    assert_int_equal(n.on_hand, 0);
}

static void test_network_four_locations(void **state)
{
    struct atp_store *s = *state;
    const char *locs[] = {"DC1", "DC2", "DC3", "DC4"};
    int64_t oh[] = {10, 0, 100, 7};
    for (int i = 0; i < 4; i++)
        SET(s, "N", locs[i], oh[i]);
    RC(0, atp_store_allocate(s, S("N"), S("DC3"), 30));
    HOLD(s, "n1", WEB, "N", "DC1", 4, 1000, T0);
    struct atp_breakdown n = NET(s, "N", WEB);
    assert_int_equal(n.on_hand, 117);
    assert_int_equal(n.allocated, 30);
    assert_int_equal(n.reserved, 4);
    assert_int_equal(n.safety, 0);
    assert_int_equal(n.atp, 6 + 0 + 70 + 7);
    /* app: 2 units per location, each item clamped at 0 before summing */
    n = NET(s, "N", APP);
    assert_int_equal(n.safety, 8);
    assert_int_equal(n.atp, 4 + 0 + 68 + 5);
    /* marketplace-x: 10 % per item (1, 0, 10, 1), cap 50 per item */
    n = NET(s, "N", MKT);
    assert_int_equal(n.safety, 1 + 0 + 10 + 1);
    assert_int_equal(n.atp, 5 + 0 + 50 + 6);
    /* a negative item does not subtract from the others */
    RC(0, atp_store_adjust(s, S("N"), S("DC2"), -50, NULL));
    n = NET(s, "N", WEB);
    assert_int_equal(n.on_hand, 67);
    assert_int_equal(n.atp, 6 + 0 + 70 + 7);
    /* zero channel */
    assert_int_equal(NET(s, "N", ZERO).atp, 0);
}

/* ---------------------------------------------------------------------- */
/* reservations                                                           */
/* ---------------------------------------------------------------------- */

static void test_reserve_basic(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    SET(s, "B", "DC2", 5);
    struct atp_line_req lines[] = {{S("A"), S("DC1"), 3}, {S("B"), S("DC2"), 5}};
    struct atp_reserve_req req = {S("order-1"), APP, 15 * 60 * 1000, lines, 2};
    struct atp_reservation r;
    bool rp = true;
    struct atp_shortfall sh[2];
    fill(sh, sizeof(sh));
    int rc = atp_store_reserve(s, &req, T0, &r, &rp, sh);
    /* app keeps 2 units of safety: B has 5, so 5 cannot be granted for app */
    RC(ATP_EINSUFFICIENT, rc);
    assert_int_equal(sh[0].requested, 3);
    assert_int_equal(sh[0].available, 8);
    assert_int_equal(sh[1].requested, 5);
    assert_int_equal(sh[1].available, 3);
    /* all or nothing: A untouched */
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 0);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);

    req.channel = WEB;
    rc = atp_store_reserve(s, &req, T0, &r, &rp, NULL);
    RC(0, rc);
    assert_false(rp);
    assert_int_not_equal(r.id, 0);
    assert_int_equal(r.state, ATP_RES_HELD);
    assert_int_equal(r.channel, WEB);
    assert_int_equal(r.created_us, T0);
    assert_int_equal(r.ttl_ms, 15 * 60 * 1000);
    assert_int_equal(r.expires_us, T0 + 15ull * 60 * 1000 * 1000);
    assert_int_equal(r.key_len, 7);
    assert_memory_equal(r.key, "order-1", 7);
    assert_int_equal(r.nlines, 2);
    assert_true(slice_eq(r.lines[0].sku, "A"));
    assert_true(slice_eq(r.lines[0].loc, "DC1"));
    assert_int_equal(r.lines[0].qty, 3);
    assert_false(r.lines[0].fulfilled);
    assert_true(slice_eq(r.lines[1].sku, "B"));
    assert_true(slice_eq(r.lines[1].loc, "DC2"));
    assert_int_equal(r.lines[1].qty, 5);
    assert_false(r.lines[0].any);
    assert_false(r.lines[1].any);

    struct atp_breakdown b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.reserved, 3);
    assert_int_equal(b.atp, 7);
    assert_int_equal(BD(s, "A", "DC1", APP).atp, 5);
    assert_int_equal(ATP(s, "B", "DC2", WEB), 0);

    /* the reservation reads back by id and by key */
    struct atp_reservation g;
    RC(0, atp_store_reservation_get(s, r.id, &g));
    assert_int_equal(g.id, r.id);
    assert_int_equal(g.state, ATP_RES_HELD);
    assert_int_equal(g.nlines, 2);
    assert_int_equal(g.expires_us, r.expires_us);
    RC(0, atp_store_reservation_find(s, S("order-1"), &g));
    assert_int_equal(g.id, r.id);
    fill(&g, sizeof(g));
    RC(ATP_ENOTFOUND, atp_store_reservation_get(s, r.id + 1000, &g));
    RC(ATP_ENOTFOUND, atp_store_reservation_get(s, 0, &g));
    RC(ATP_ENOTFOUND, atp_store_reservation_find(s, S("order-2"), &g));
    UNTOUCHED(g);

    /* the next request sees what is left: insufficient, with availability per line */
    fill(&r, sizeof(r));
    fill(&rp, sizeof(rp));
    lines[0].qty = 8;
    lines[1].qty = 1;
    req.key = S("order-2");
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    UNTOUCHED(r);
    UNTOUCHED(rp);
    assert_int_equal(sh[0].requested, 8);
    assert_int_equal(sh[0].available, 7);
    assert_int_equal(sh[1].requested, 1);
    assert_int_equal(sh[1].available, 0);

    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.reserves_granted, 1);
    assert_int_equal(st.reserves_rejected, 2);
    assert_int_equal(st.reservations_held, 1);
    assert_int_equal(st.reservations_live, 1);
}

/* Two lines on one item are counted together: all or nothing. */
static void test_reserve_same_item_twice(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 8);
    struct atp_line_req lines[] = {{S("A"), S("DC1"), 5}, {S("A"), S("DC1"), 5}};
    struct atp_reserve_req req = {S("dup"), WEB, 1000, lines, 2};
    struct atp_reservation r;
    bool rp;
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    assert_int_equal(ATP(s, "A", "DC1", WEB), 8);
    lines[1].qty = 3;
    RC(0, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    assert_int_equal(ATP(s, "A", "DC1", WEB), 0);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 8);
}

static void test_reserve_unknown_item(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 8);
    struct atp_line_req lines[] = {{S("A"), S("DC1"), 1}, {S("NOPE"), S("DC1"), 1}};
    struct atp_reserve_req req = {S("u"), WEB, 1000, lines, 2};
    struct atp_reservation r;
    bool rp;
    struct atp_shortfall sh[2];
    /* nothing there is nothing available: insufficient, available 0 */
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    assert_int_equal(sh[0].available, 8);
    assert_int_equal(sh[1].requested, 1);
    assert_int_equal(sh[1].available, 0);
    lines[1].loc = S("");
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    assert_int_equal(sh[1].available, 0);
    lines[1].sku = S("A");
    lines[1].loc = S("DC7");
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    assert_int_equal(sh[1].available, 0);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 8);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 1); /* reserve never creates items */
    assert_int_equal(st.reservations_live, 0);
}

static void test_reserve_any(void **state)
{
    struct atp_store *s = *state;
    /* b2b: priority DC2 then DC1, DC3 not allowed */
    SET(s, "A", "DC1", 100);
    SET(s, "A", "DC2", 5);
    SET(s, "A", "DC3", 1000);
    struct atp_reservation r;
    RC(0, reserve1(s, "a1", B2B, "A", NULL, 3, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC2")); /* first in priority that fits */
    RC(0, reserve1(s, "a2", B2B, "A", NULL, 3, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC1")); /* DC2 has 2 left: never split */
    RC(0, reserve1(s, "a3", B2B, "A", NULL, 2, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC2"));
    struct atp_shortfall sh;
    RC(ATP_EINSUFFICIENT, reserve1(s, "a4", B2B, "A", NULL, 98, 1000, T0, &r, NULL, &sh));
    assert_int_equal(sh.requested, 98);
    assert_int_equal(sh.available, 97); /* the best location */
    assert_int_equal(ATP(s, "A", "DC3", WEB), 1000);

    /* web (no list): the location with most ATP */
    SET(s, "B", "DC1", 6);
    SET(s, "B", "DC2", 9);
    SET(s, "B", "DC3", 7);
    RC(0, reserve1(s, "b1", WEB, "B", NULL, 1, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC2"));
    RC(0, reserve1(s, "b2", WEB, "B", NULL, 2, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC2")); /* 8 > 7 */
    RC(0, reserve1(s, "b3", WEB, "B", NULL, 2, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC3")); /* 7 > 6 = DC2 */
    /* never split: 5 + 6 + 6 = 17 on the network, but no single location has 7 */
    RC(ATP_EINSUFFICIENT, reserve1(s, "b4", WEB, "B", NULL, 7, 1000, T0, &r, NULL, &sh));
    assert_int_equal(sh.available, 6);
    assert_int_equal(NET(s, "B", WEB).atp, 17);

    /* most available is measured for the asking channel (item safety override) */
    SET(s, "C", "DC1", 10);
    SET(s, "C", "DC2", 12);
    RC(0, atp_store_set_safety(s, S("C"), S("DC2"), APP, 5));
    RC(0, reserve1(s, "c1", APP, "C", NULL, 1, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC1")); /* 8 vs 7 for app */
    RC(0, reserve1(s, "c2", WEB, "C", NULL, 1, 1000, T0, &r, NULL, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC2")); /* 12 vs 9 for web */

    /* an "any" line and an explicit one in the same request */
    SET(s, "D", "DC1", 4);
    struct atp_line_req lines[] = {{S("D"), S(""), 4}, {S("C"), S("DC1"), 1}};
    struct atp_reserve_req req = {S("mixed"), WEB, 1000, lines, 2};
    bool rp;
    RC(0, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    assert_true(slice_eq(r.lines[0].loc, "DC1"));
    assert_true(slice_eq(r.lines[1].loc, "DC1"));
    assert_true(r.lines[0].any);
    assert_false(r.lines[1].any);
    assert_int_equal(ATP(s, "D", "DC1", WEB), 0);
}

static void test_idempotency(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    SET(s, "A", "DC2", 10);
    struct atp_reservation r1, r2;
    bool rp = true;
    RC(0, reserve1(s, "order-7", WEB, "A", "DC1", 4, 60000, T0, &r1, &rp, NULL));
    assert_false(rp);
    /* same key, same content: the original, nothing reserved twice */
    rp = false;
    RC(0, reserve1(s, "order-7", WEB, "A", "DC1", 4, 60000, T0 + 5 * MS, &r2, &rp, NULL));
    assert_true(rp);
    assert_int_equal(r2.id, r1.id);
    assert_int_equal(r2.created_us, r1.created_us);
    assert_int_equal(r2.expires_us, r1.expires_us);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 4);
    /* a replay does not need stock: it is the same reservation */
    SET(s, "A", "DC1", 4);
    rp = false;
    RC(0, reserve1(s, "order-7", WEB, "A", "DC1", 4, 60000, T0 + 6 * MS, &r2, &rp, NULL));
    assert_true(rp);
    assert_int_equal(r2.id, r1.id);

    /* same key, other content: conflict, whatever differs */
    struct atp_reservation r3;
    fill(&r3, sizeof(r3));
    fill(&rp, sizeof(rp));
    RC(ATP_ECONFLICT, reserve1(s, "order-7", WEB, "A", "DC1", 5, 60000, T0, &r3, &rp, NULL));
    RC(ATP_ECONFLICT, reserve1(s, "order-7", WEB, "A", "DC2", 4, 60000, T0, &r3, &rp, NULL));
    RC(ATP_ECONFLICT, reserve1(s, "order-7", APP, "A", "DC1", 4, 60000, T0, &r3, &rp, NULL));
    RC(ATP_ECONFLICT, reserve1(s, "order-7", WEB, "B", "DC1", 4, 60000, T0, &r3, &rp, NULL));
    RC(ATP_ECONFLICT, reserve1(s, "order-7", WEB, "A", NULL, 4, 60000, T0, &r3, &rp, NULL));
    RC(ATP_ECONFLICT, reserve1(s, "order-7", WEB, "A", "DC1", 4, 60001, T0, &r3, &rp, NULL));
    {
        struct atp_line_req two[] = {{S("A"), S("DC1"), 4}, {S("A"), S("DC2"), 1}};
        struct atp_reserve_req req = {S("order-7"), WEB, 60000, two, 2};
        RC(ATP_ECONFLICT, atp_store_reserve(s, &req, T0, &r3, &rp, NULL));
    }
    UNTOUCHED(r3);
    UNTOUCHED(rp);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 4);
    assert_int_equal(BD(s, "A", "DC2", WEB).reserved, 0);

    /* replay holds in every state: after release the original (released) comes back */
    RC(0, atp_store_release(s, r1.id, T0 + 10 * MS, NULL));
    rp = false;
    RC(0, reserve1(s, "order-7", WEB, "A", "DC1", 4, 60000, T0 + 11 * MS, &r2, &rp, NULL));
    assert_true(rp);
    assert_int_equal(r2.id, r1.id);
    assert_int_equal(r2.state, ATP_RES_RELEASED);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 0);

    /* an "any" request replays as "any" even though a location was chosen */
    RC(0, reserve1(s, "order-8", WEB, "A", NULL, 2, 60000, T0, &r1, &rp, NULL));
    rp = false;
    RC(0, reserve1(s, "order-8", WEB, "A", NULL, 2, 60000, T0, &r2, &rp, NULL));
    assert_true(rp);
    assert_int_equal(r2.id, r1.id);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.reserves_replayed, 4);
    assert_int_equal(st.reserves_granted, 2);

    /* a refused reserve leaves no key behind */
    RC(ATP_EINSUFFICIENT,
       reserve1(s, "order-9", WEB, "A", "DC1", 500, 60000, T0, NULL, NULL, NULL));
    RC(ATP_ENOTFOUND, atp_store_reservation_find(s, S("order-9"), &r3));
    HOLD(s, "order-9", WEB, "A", "DC1", 1, 60000, T0);
}

static void test_commit_release(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    uint64_t id = HOLD(s, "c", WEB, "A", "DC1", 4, 1000, T0);
    struct atp_reservation r;
    RC(0, atp_store_commit(s, id, T0 + 10 * MS, &r));
    assert_int_equal(r.state, ATP_RES_COMMITTED);
    assert_int_equal(r.id, id);
    struct atp_breakdown b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.reserved, 0);
    assert_int_equal(b.allocated, 4);
    assert_int_equal(b.atp, 6);
    /* commit twice: no-op success, nothing moves */
    RC(0, atp_store_commit(s, id, T0 + 20 * MS, &r));
    assert_int_equal(r.state, ATP_RES_COMMITTED);
    /* even after its TTL would have passed, a committed reservation stays */
    RC(0, atp_store_commit(s, id, T0 + 5000 * MS, NULL));
    b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.allocated, 4);
    assert_int_equal(b.reserved, 0);
    /* release a committed one: ESTATE */
    RC(ATP_ESTATE, atp_store_release(s, id, T0 + 30 * MS, NULL));
    RC(ATP_ESTATE, atp_store_extend(s, id, 1000, T0 + 30 * MS, NULL));
    assert_int_equal(BD(s, "A", "DC1", WEB).allocated, 4);

    /* release returns the stock; twice is ESTATE; commit after release is ESTATE */
    uint64_t id2 = HOLD(s, "r", WEB, "A", "DC1", 5, 1000, T0);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 1);
    RC(0, atp_store_release(s, id2, T0 + 1 * MS, &r));
    assert_int_equal(r.state, ATP_RES_RELEASED);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 6);
    RC(ATP_ESTATE, atp_store_release(s, id2, T0 + 2 * MS, NULL));
    RC(ATP_ESTATE, atp_store_commit(s, id2, T0 + 2 * MS, NULL));
    RC(ATP_ESTATE, atp_store_extend(s, id2, 1000, T0 + 2 * MS, NULL));
    assert_int_equal(ATP(s, "A", "DC1", WEB), 6);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 0);

    /* unknown ids */
    fill(&r, sizeof(r));
    RC(ATP_ENOTFOUND, atp_store_commit(s, 0, T0, &r));
    RC(ATP_ENOTFOUND, atp_store_commit(s, id2 + 12345, T0, &r));
    RC(ATP_ENOTFOUND, atp_store_release(s, id2 + 12345, T0, &r));
    RC(ATP_ENOTFOUND, atp_store_extend(s, id2 + 12345, 1000, T0, &r));
    UNTOUCHED(r);

    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.commits, 1);
    assert_int_equal(st.releases, 1);
    assert_int_equal(st.reservations_committed, 1);
    assert_int_equal(st.reservations_held, 0);
    assert_int_equal(st.reservations_live, 1);
}

static void test_commit_expired(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    uint64_t id = HOLD(s, "e", WEB, "A", "DC1", 4, 1000, T0);
    /* exactly at the deadline it has expired (expire uses expires_at <= now) */
    struct atp_reservation r;
    RC(ATP_EEXPIRED, atp_store_commit(s, id, T0 + 1000 * MS, &r));
    /* expired on the spot: stock back, state expired, never again */
    assert_int_equal(state_of(s, id), ATP_RES_EXPIRED);
    struct atp_breakdown b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.reserved, 0);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.atp, 10);
    RC(ATP_EEXPIRED, atp_store_commit(s, id, T0 + 1001 * MS, NULL));
    RC(ATP_EEXPIRED, atp_store_release(s, id, T0 + 1001 * MS, NULL));
    RC(ATP_EEXPIRED, atp_store_extend(s, id, 1000, T0 + 1001 * MS, NULL));
    assert_int_equal(atp_store_expire(s, T0 + 5000 * MS), 0);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);

    /* release past the deadline: EEXPIRED, stock back exactly once */
    uint64_t id2 = HOLD(s, "e2", WEB, "A", "DC1", 3, 1000, T0);
    RC(ATP_EEXPIRED, atp_store_release(s, id2, T0 + 2000 * MS, NULL));
    assert_int_equal(state_of(s, id2), ATP_RES_EXPIRED);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);
    assert_int_equal(atp_store_expire(s, T0 + 5000 * MS), 0);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);

    /* extend past the deadline: EEXPIRED */
    uint64_t id3 = HOLD(s, "e3", WEB, "A", "DC1", 3, 1000, T0);
    RC(ATP_EEXPIRED, atp_store_extend(s, id3, 1000, T0 + 1000 * MS, NULL));
    assert_int_equal(state_of(s, id3), ATP_RES_EXPIRED);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);

    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.expirations, 3);
    assert_int_equal(st.reservations_live, 0);
    assert_int_equal(st.commits, 0);
    assert_int_equal(st.releases, 0);
}

static void test_extend(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    uint64_t id = HOLD(s, "x", WEB, "A", "DC1", 4, 1000, T0);
    struct atp_reservation r;
    RC(0, atp_store_extend(s, id, 5000, T0 + 999 * MS, &r));
    assert_int_equal(r.state, ATP_RES_HELD);
    assert_int_equal(r.expires_us, T0 + 999 * MS + 5000 * MS);
    /* the old deadline no longer applies */
    assert_int_equal(atp_store_expire(s, T0 + 1000 * MS), 0);
    assert_int_equal(atp_store_expire(s, T0 + 5998 * MS), 0);
    assert_int_equal(state_of(s, id), ATP_RES_HELD);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 6);
    /* extend may also shorten */
    RC(0, atp_store_extend(s, id, 1, T0 + 2000 * MS, &r));
    assert_int_equal(r.expires_us, T0 + 2001 * MS);
    /* TTL bounds */
    fill(&r, sizeof(r));
    RC(ATP_ETTL, atp_store_extend(s, id, 0, T0 + 2000 * MS, &r));
    RC(ATP_ETTL, atp_store_extend(s, id, 24ull * 3600 * 1000 + 1, T0 + 2000 * MS, &r));
    UNTOUCHED(r);
    assert_int_equal(atp_store_expire(s, T0 + 2001 * MS), 1);
    assert_int_equal(state_of(s, id), ATP_RES_EXPIRED);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);
    /* the new deadline is in the record */
    RC(0, atp_store_reservation_get(s, id, &r));
    assert_int_equal(r.expires_us, T0 + 2001 * MS);
}

/*
 * allocated holds what allocate events allocated and what commits did; a
 * deallocate may take only the first: a commit's units leave allocated only
 * with their shipment. (When a deallocate could take them, its shipment
 * afterwards left allocated at -4 and showed stock that had left.)
 */
static void test_deallocate_leaves_commits(void **state)
{
    struct atp_store *s = *state;
    SET(s, "D", "DC1", 10);
    struct atp_line_req lines[] = {{S("D"), S("DC1"), 4}, {S("D"), S("DC1"), 3}};
    struct atp_reserve_req req = {S("d1"), WEB, 1000, lines, 2};
    struct atp_reservation r;
    bool rp;
    RC(0, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    RC(0, atp_store_commit(s, r.id, T0 + 1, NULL));
    RC(0, atp_store_allocate(s, S("D"), S("DC1"), 2)); /* an EDI order */
    assert_int_equal(BD(s, "D", "DC1", WEB).allocated, 9);
    /* the ERP deallocates 4: only its own 2 are there to take */
    RC(ATP_ERANGE, atp_store_deallocate(s, S("D"), S("DC1"), 4));
    RC(ATP_ERANGE, atp_store_deallocate(s, S("D"), S("DC1"), 3));
    struct atp_breakdown b = BD(s, "D", "DC1", WEB);
    assert_int_equal(b.allocated, 9);
    assert_int_equal(b.atp, 1);
    /* line 0 ships 4: on_hand 6, allocated 5 (3 committed, 2 the EDI's) */
    RC(0, atp_store_fulfill(s, S("d1"), 0, NULL));
    b = BD(s, "D", "DC1", WEB);
    assert_int_equal(b.on_hand, 6);
    assert_int_equal(b.allocated, 5);
    assert_int_equal(b.atp, 1);
    RC(0, atp_store_deallocate(s, S("D"), S("DC1"), 2)); /* the EDI order is cancelled */
    RC(ATP_ERANGE, atp_store_deallocate(s, S("D"), S("DC1"), 1));
    RC(0, atp_store_fulfill(s, S("d1"), 1, &r));
    assert_int_equal(r.state, ATP_RES_FULFILLED);
    b = BD(s, "D", "DC1", WEB);
    assert_int_equal(b.on_hand, 3);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.atp, 3);
}

/*
 * A commit leaves the free stock (on_hand - allocated - reserved) as it is;
 * after a cycle count took on_hand below what is held it is refused (the
 * hold stays held), and granted again once the units are back. Safety stock
 * is not looked at again: it was applied when the hold was granted.
 */
static void test_commit_needs_stock(void **state)
{
    struct atp_store *s = *state;
    SET(s, "C", "DC1", 50);
    uint64_t id = HOLD(s, "c1", WEB, "C", "DC1", 40, 60000, T0);
    struct atp_reservation r;
    RC(0, atp_store_set(s, S("C"), S("DC1"), 10, 2)); /* the count found 10 */
    struct atp_breakdown b = BD(s, "C", "DC1", WEB);
    assert_int_equal(b.reserved, 40);
    assert_int_equal(b.atp, 0);
    fill(&r, sizeof(r));
    RC(ATP_EINSUFFICIENT, atp_store_commit(s, id, T0 + 1, &r));
    UNTOUCHED(r);
    assert_int_equal(state_of(s, id), ATP_RES_HELD);
    b = BD(s, "C", "DC1", WEB);
    assert_int_equal(b.reserved, 40);
    assert_int_equal(b.allocated, 0);
    /* 29 more: still 1 short */
    RC(0, atp_store_adjust(s, S("C"), S("DC1"), 29, NULL));
    RC(ATP_EINSUFFICIENT, atp_store_commit(s, id, T0 + 2, NULL));
    /* exactly enough: ATP 0 after the commit, granted */
    RC(0, atp_store_adjust(s, S("C"), S("DC1"), 1, NULL));
    RC(0, atp_store_commit(s, id, T0 + 3, &r));
    assert_int_equal(r.state, ATP_RES_COMMITTED);
    b = BD(s, "C", "DC1", WEB);
    assert_int_equal(b.allocated, 40);
    assert_int_equal(b.reserved, 0);
    assert_int_equal(b.atp, 0);
    /* a retried commit is still a success, whatever the stock now */
    RC(0, atp_store_set(s, S("C"), S("DC1"), 5, 3));
    RC(0, atp_store_commit(s, id, T0 + 4, NULL));
    /* APP keeps 2 units of safety stock: it holds 8 of 10, then WEB (no
     * safety stock) holds the last 2, which takes APP's ATP before the clamp
     * to -2; all 10 units are on hand for the two orders, so both commit */
    SET(s, "E", "DC1", 10);
    uint64_t app_id = HOLD(s, "c2", APP, "E", "DC1", 8, 60000, T0);
    uint64_t web_id = HOLD(s, "c3", WEB, "E", "DC1", 2, 60000, T0);
    RC(0, atp_store_commit(s, app_id, T0 + 1, NULL));
    RC(0, atp_store_commit(s, web_id, T0 + 1, NULL));
    /* one unit fewer on hand than held and allocated: the next commit fails */
    SET(s, "F", "DC1", 5);
    id = HOLD(s, "c4", WEB, "F", "DC1", 5, 60000, T0);
    RC(0, atp_store_adjust(s, S("F"), S("DC1"), -1, NULL));
    RC(ATP_EINSUFFICIENT, atp_store_commit(s, id, T0 + 1, NULL));
}

/*
 * A snapshot written before commits' allocation was kept apart may hold less
 * allocation than its committed reservations' unshipped lines (a deallocate
 * could take a commit's units then). Restoring counts the lines in full and
 * raises the allocation: ATP never shows units a committed order will ship.
 */
static void test_restore_commits_beyond_allocation(void **state)
{
    struct atp_store *s = *state;
    RC(0, atp_store_restore_item(s, S("R"), S("DC1"), 6, 2, 0));
    struct atp_reservation in;
    memset(&in, 0, sizeof(in));
    in.id = (UINT64_C(2) << 32) | 1;
    in.state = ATP_RES_COMMITTED;
    in.channel = WEB;
    in.nlines = 1;
    in.key_len = 2;
    memcpy(in.key, "k1", 2);
    in.created_us = T0;
    in.ttl_ms = 1000;
    in.lines[0].sku = S("R");
    in.lines[0].loc = S("DC1");
    in.lines[0].qty = 5;
    RC(0, atp_store_restore_reservation(s, &in));
    atp_store_restore_done(s);
    struct atp_breakdown b = BD(s, "R", "DC1", WEB);
    assert_int_equal(b.on_hand, 6);
    assert_int_equal(b.allocated, 5);
    assert_int_equal(b.atp, 1);
    RC(ATP_ERANGE, atp_store_deallocate(s, S("R"), S("DC1"), 1)); /* none of it is the events' */
    RC(0, atp_store_fulfill(s, S("k1"), 0, NULL));
    b = BD(s, "R", "DC1", WEB);
    assert_int_equal(b.on_hand, 1);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.atp, 1);
}

static void test_fulfill(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    SET(s, "B", "DC1", 10);
    struct atp_line_req lines[] = {{S("A"), S("DC1"), 3}, {S("B"), S(""), 2}};
    struct atp_reserve_req req = {S("ship"), WEB, 1000, lines, 2};
    struct atp_reservation r;
    bool rp;
    RC(0, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    uint64_t id = r.id;
    /* held: not yet */
    fill(&r, sizeof(r));
    RC(ATP_ESTATE, atp_store_fulfill(s, S("ship"), 0, &r));
    UNTOUCHED(r);
    RC(0, atp_store_commit(s, id, T0 + 1, NULL));
    RC(ATP_ENOTFOUND, atp_store_fulfill(s, S("nope"), 0, &r));
    RC(ATP_EINVAL, atp_store_fulfill(s, S("ship"), 2, &r));
    RC(ATP_EINVAL, atp_store_fulfill(s, S("ship"), UINT32_MAX, &r));
    RC(ATP_EKEY, atp_store_fulfill(s, S(""), 0, &r));
    UNTOUCHED(r);

    RC(0, atp_store_fulfill(s, S("ship"), 0, &r));
    assert_int_equal(r.state, ATP_RES_COMMITTED);
    assert_true(r.lines[0].fulfilled);
    assert_false(r.lines[1].fulfilled);
    struct atp_breakdown b = BD(s, "A", "DC1", WEB);
    assert_int_equal(b.on_hand, 7);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.atp, 7);
    assert_int_equal(BD(s, "B", "DC1", WEB).allocated, 2);
    RC(ATP_ESTATE, atp_store_fulfill(s, S("ship"), 0, &r));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 7);

    RC(0, atp_store_fulfill(s, S("ship"), 1, &r));
    assert_int_equal(r.state, ATP_RES_FULFILLED);
    b = BD(s, "B", "DC1", WEB);
    assert_int_equal(b.on_hand, 8);
    assert_int_equal(b.allocated, 0);
    assert_int_equal(b.atp, 8);
    RC(0, atp_store_reservation_get(s, id, &r));
    assert_int_equal(r.state, ATP_RES_FULFILLED);
    RC(ATP_ESTATE, atp_store_fulfill(s, S("ship"), 1, NULL));
    /* a retried commit of a shipped reservation is still a success */
    RC(0, atp_store_commit(s, id, T0 + 2, &r));
    assert_int_equal(r.state, ATP_RES_FULFILLED);
    RC(ATP_ESTATE, atp_store_release(s, id, T0 + 2, NULL));
    RC(ATP_ESTATE, atp_store_extend(s, id, 10, T0 + 2, NULL));

    /* released and expired reservations cannot be fulfilled */
    uint64_t id2 = HOLD(s, "rel", WEB, "A", "DC1", 1, 1000, T0);
    RC(0, atp_store_release(s, id2, T0 + 1, NULL));
    RC(ATP_ESTATE, atp_store_fulfill(s, S("rel"), 0, NULL));
    HOLD(s, "exp", WEB, "A", "DC1", 1, 1000, T0);
    assert_int_equal(atp_store_expire(s, T0 + 1000 * MS), 1);
    RC(ATP_ESTATE, atp_store_fulfill(s, S("exp"), 0, NULL));
    assert_int_equal(BD(s, "A", "DC1", WEB).on_hand, 7);

    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.fulfillments, 2);
    assert_int_equal(st.reservations_live, 0);
}

/* ---------------------------------------------------------------------- */
/* expiry                                                                 */
/* ---------------------------------------------------------------------- */

static void test_expire(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 100);
    uint64_t a = HOLD(s, "a", WEB, "A", "DC1", 1, 1000, T0); /* expires T0+1s */
    uint64_t b = HOLD(s, "b", WEB, "A", "DC1", 2, 2000, T0); /* T0+2s */
    uint64_t c = HOLD(s, "c", WEB, "A", "DC1", 4, 3000, T0); /* T0+3s, committed */
    uint64_t d = HOLD(s, "d", WEB, "A", "DC1", 8, 3000, T0); /* T0+3s, released */
    uint64_t e = HOLD(s, "e", WEB, "A", "DC1", 16, 1, T0);   /* T0+1ms */
    RC(0, atp_store_commit(s, c, T0 + 1, NULL));
    RC(0, atp_store_release(s, d, T0 + 1, NULL));
    assert_int_equal(ATP(s, "A", "DC1", WEB), 100 - 1 - 2 - 4 - 16);

    assert_int_equal(atp_store_expire(s, T0), 0);
    assert_int_equal(atp_store_expire(s, T0 + 999), 0);
    assert_int_equal(atp_store_expire(s, T0 + 1000), 1); /* e, exactly on time */
    assert_int_equal(state_of(s, e), ATP_RES_EXPIRED);
    assert_int_equal(atp_store_expire(s, T0 + 1000), 0);
    assert_int_equal(atp_store_expire(s, T0 + 999999), 0);
    assert_int_equal(state_of(s, a), ATP_RES_HELD);
    assert_int_equal(atp_store_expire(s, T0 + 1000000), 1); /* a, on time */
    assert_int_equal(ATP(s, "A", "DC1", WEB), 100 - 2 - 4);

    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.expirations, 2);
    assert_int_equal(st.lateness_max_us, 0);
    assert_int_equal(st.lateness_sum_us, 0);
    assert_int_equal(st.lateness_buckets[0], 2);

    /* b is expired 5 ms late; c is committed and d released: never expired */
    assert_int_equal(atp_store_expire(s, T0 + 2005000), 1);
    assert_int_equal(state_of(s, b), ATP_RES_EXPIRED);
    assert_int_equal(atp_store_expire(s, T0 + 100000000), 0);
    assert_int_equal(state_of(s, c), ATP_RES_COMMITTED);
    assert_int_equal(state_of(s, d), ATP_RES_RELEASED);
    struct atp_breakdown bd = BD(s, "A", "DC1", WEB);
    assert_int_equal(bd.reserved, 0);
    assert_int_equal(bd.allocated, 4);
    assert_int_equal(bd.atp, 96);

    atp_store_stats(s, &st);
    assert_int_equal(st.expirations, 3);
    assert_int_equal(st.lateness_max_us, 5000);
    assert_int_equal(st.lateness_sum_us, 5000);
    /* 5000 us lies in (4096, 8192]: bucket 7 */
    uint64_t total = 0;
    for (int i = 0; i < ATP_LATENESS_BUCKETS; i++)
        total += st.lateness_buckets[i];
    assert_int_equal(total, 3);
    assert_int_equal(st.lateness_buckets[7], 1);
    assert_int_equal(st.reservations_held, 0);
    assert_int_equal(st.reservations_live, 1);

    /* a very late expiry lands in the last bucket */
    HOLD(s, "late", WEB, "A", "DC1", 1, 1, T0 + 200000000);
    assert_int_equal(atp_store_expire(s, T0 + 200000000 + 1000 + 10000000), 1);
    atp_store_stats(s, &st);
    assert_int_equal(st.lateness_max_us, 10000000);
    assert_int_equal(st.lateness_buckets[ATP_LATENESS_BUCKETS - 1], 1);
}

/*
 * Deadlines with a now that is not on a millisecond: never early, and the
 * deadline the record reports is the one expiry honours. (The header says
 * expires_at = now + ttl; the store keeps milliseconds, so it may round up,
 * by less than a millisecond.)
 */
static void test_expiry_precision(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    uint64_t now = T0 + 1234;
    struct atp_reservation r;
    RC(0, reserve1(s, "p", WEB, "A", "DC1", 1, 10, now, &r, NULL, NULL));
    assert_true(r.expires_us >= now + 10 * MS);
    assert_true(r.expires_us < now + 11 * MS);
    /* the header: now + ttl, rounded up to the millisecond */
    assert_int_equal(r.expires_us, (now + 999) / 1000 * 1000 + 10 * MS);
    assert_int_equal(atp_store_expire(s, now + 10 * MS - 1), 0);
    assert_int_equal(atp_store_expire(s, r.expires_us - 1), 0);
    assert_int_equal(state_of(s, r.id), ATP_RES_HELD);
    RC(0, atp_store_commit(s, r.id, r.expires_us - 1, NULL)); /* still in time */
    uint64_t id2;
    RC(0, reserve1(s, "p2", WEB, "A", "DC1", 1, 10, now, &r, NULL, NULL));
    id2 = r.id;
    assert_int_equal(atp_store_expire(s, r.expires_us), 1);
    assert_int_equal(state_of(s, id2), ATP_RES_EXPIRED);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.lateness_max_us, 0);
    /* extend from an odd now: same rule */
    RC(0, reserve1(s, "p3", WEB, "A", "DC1", 1, 10, now, &r, NULL, NULL));
    RC(0, atp_store_extend(s, r.id, 20, now + 5 * MS + 7, &r));
    assert_true(r.expires_us >= now + 25 * MS + 7);
    assert_true(r.expires_us < now + 26 * MS + 7);
    assert_int_equal(atp_store_expire(s, now + 25 * MS + 6), 0);
    assert_int_equal(atp_store_expire(s, r.expires_us), 1);
}

/* Many reservations with spread deadlines: each expires exactly once, on time. */
static void test_expire_many(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 100000);
    enum { N = 500 };
    uint64_t ids[N];
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        /* ttl 1..N ms, created at T0 + i us */
        ids[i] = HOLD(s, key, WEB, "A", "DC1", 1, (uint64_t)(N - i), T0 + (uint64_t)i);
    }
    int total = 0;
    uint64_t t;
    for (t = T0; t < T0 + (N + 5) * MS; t += 250) {
        int n = atp_store_expire(s, t);
        assert_true(n >= 0);
        total += n;
        /* every reservation with expires <= t is gone, every later one is held */
        if ((t - T0) % (50 * MS) == 0) {
            for (int i = 0; i < N; i++) {
                uint64_t exp = T0 + (uint64_t)i + (uint64_t)(N - i) * MS;
                int st = state_of(s, ids[i]);
                if (exp <= t && st != ATP_RES_EXPIRED)
                    fail_msg("reservation %d (expires %llu) not expired at %llu", i,
                             (unsigned long long)(exp - T0), (unsigned long long)(t - T0));
                if (exp > t && st != ATP_RES_HELD)
                    fail_msg("reservation %d expired early", i);
            }
        }
    }
    assert_int_equal(total, N);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 100000);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.expirations, N);
    assert_true(st.lateness_max_us < 250);
}

static void test_idempotency_window(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.idempotency_window_ms = 1000;
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));
    SET(s, "A", "DC1", 10);
    uint64_t rel = HOLD(s, "rel", WEB, "A", "DC1", 1, 60000, T0);
    uint64_t com = HOLD(s, "com", WEB, "A", "DC1", 1, 60000, T0);
    uint64_t hel = HOLD(s, "hel", WEB, "A", "DC1", 1, 60000, T0);
    RC(0, atp_store_release(s, rel, T0, NULL));
    RC(0, atp_store_commit(s, com, T0, NULL));
    assert_int_equal(atp_store_expire(s, T0 + 500 * MS), 0);
    assert_int_equal(state_of(s, rel), ATP_RES_RELEASED);
    /* well past the window: the released one is reclaimed, its key is free */
    assert_int_equal(atp_store_expire(s, T0 + 10000 * MS), 0);
    assert_int_equal(state_of(s, rel), ATP_ENOTFOUND);
    struct atp_reservation r;
    RC(ATP_ENOTFOUND, atp_store_reservation_find(s, S("rel"), &r));
    /* live ones are never reclaimed */
    assert_int_equal(state_of(s, com), ATP_RES_COMMITTED);
    assert_int_equal(state_of(s, hel), ATP_RES_HELD);
    bool rp = true;
    RC(0, reserve1(s, "rel", WEB, "A", "DC1", 1, 60000, T0 + 10001 * MS, &r, &rp, NULL));
    assert_false(rp);
    assert_int_not_equal(r.id, rel);
    /* the held one expires, then is reclaimed a window later */
    assert_int_equal(atp_store_expire(s, T0 + 60000 * MS), 1);
    assert_int_equal(state_of(s, hel), ATP_RES_EXPIRED);
    assert_int_equal(atp_store_expire(s, T0 + 200000 * MS), 1); /* the new "rel" */
    assert_int_equal(state_of(s, hel), ATP_ENOTFOUND);
    assert_int_equal(state_of(s, com), ATP_RES_COMMITTED);
    atp_store_free(s);
}

/*
 * Network ATP both ways: all locations probed at once while the store knows
 * at most 16, the sku's item list walked beyond; the sums agree with the
 * items', and a sku without items at a listed channel's locations reads 0.
 */
static void test_network_many_locations(void **state)
{
    struct atp_store *s = *state;
    char loc[16];
    int64_t want = 0;
    /* the fixture interned DC1 and DC2 (b2b's list): 14 more keep it <= 16 */
    for (int i = 0; i < 14; i++) {
        snprintf(loc, sizeof(loc), "L%02d", i);
        SET(s, "N", loc, i + 1);
        want += i + 1;
    }
    SET(s, "M", "L03", 7);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.locations, 16);
    assert_int_equal(NET(s, "N", WEB).atp, want);
    assert_int_equal(NET(s, "N", WEB).on_hand, want);
    assert_int_equal(NET(s, "M", WEB).atp, 7);
    assert_int_equal(NET(s, "N", B2B).atp, 0); /* none at DC1, DC2 */
    struct atp_breakdown b;
    RC(ATP_ENOTFOUND, atp_store_get_network(s, S("nope"), WEB, &b));
    RC(ATP_EINVAL_SKU, atp_store_get_network(s, S("a b"), WEB, &b));
    /* past 16 locations: the list walk */
    for (int i = 14; i < 24; i++) {
        snprintf(loc, sizeof(loc), "L%02d", i);
        SET(s, "N", loc, i + 1);
        want += i + 1;
    }
    atp_store_stats(s, &st);
    assert_true(st.locations > 16);
    assert_int_equal(NET(s, "N", WEB).atp, want);
    assert_int_equal(NET(s, "N", APP).safety, 2 * 24);
    assert_int_equal(NET(s, "M", WEB).atp, 7);
    SET(s, "N", "DC2", 5);
    assert_int_equal(NET(s, "N", B2B).atp, 5);
    RC(ATP_ENOTFOUND, atp_store_get_network(s, S("nope"), WEB, &b));
    RC(ATP_EINVAL_SKU, atp_store_get_network(s, S("a b"), WEB, &b));
}

/*
 * A key-table rotation that takes several reaper ticks (more claims than the
 * reaper visits in one): every live key keeps answering with its reservation
 * before, during and after it, and new keys work meanwhile.
 */
static void test_rotation_in_steps(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.max_reservations = 16384;
    cfg.idempotency_window_ms = 1000;
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));
    SET(s, "A", "DC1", 1000000);
    enum { N = 6000 };
    static uint64_t ids[N];
    char key[32];
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof(key), "rot-%d", i);
        ids[i] = HOLD(s, key, WEB, "A", "DC1", 1, 600000, T0);
    }
    assert_int_equal(atp_store_expire(s, T0), 0);
    int fresh = 0;
    /* the first rotation (due at T0 + 1 s) moves the N keys to the previous
     * table; the second (T0 + 2.5 s) carries them, over several 1 ms ticks */
    for (uint64_t t = T0 + 999 * MS; t < T0 + 2512 * MS; t += (t < T0 + 2490 * MS ? 500 : 1) * MS) {
        assert_int_equal(atp_store_expire(s, t), 0);
        for (int i = (int)(t / MS % 7); i < N; i += 211) {
            snprintf(key, sizeof(key), "rot-%d", i);
            struct atp_reservation r;
            bool rp = false;
            RC(0, reserve1(s, key, WEB, "A", "DC1", 1, 600000, t, &r, &rp, NULL));
            if (!rp || r.id != ids[i])
                fail_msg("key %s at t+%llu ms: replayed %d, id %llu, want %llu", key,
                         (unsigned long long)((t - T0) / MS), rp, (unsigned long long)r.id,
                         (unsigned long long)ids[i]);
        }
        snprintf(key, sizeof(key), "new-%d", fresh++);
        uint64_t id = HOLD(s, key, WEB, "A", "DC1", 1, 600000, t);
        struct atp_reservation r;
        RC(0, atp_store_reservation_find(s, S(key), &r));
        assert_int_equal(r.id, id);
    }
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.reservations_held, N + fresh);
    assert_int_equal(st.reserves_granted, N + fresh);
    atp_store_free(s);
}

/* The store's own expirer thread, with the real clock. */
static void test_expirer_thread(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    RC(0, atp_store_start_expirer(s, 1000));
    uint64_t now = atp_now_us();
    uint64_t id = HOLD(s, "t", WEB, "A", "DC1", 3, 5, now);
    uint64_t keep = HOLD(s, "keep", WEB, "A", "DC1", 2, 3600 * 1000, now);
    int st = ATP_RES_HELD;
    for (int i = 0; i < 2000 && st == ATP_RES_HELD; i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        st = state_of(s, id);
    }
    assert_int_equal(st, ATP_RES_EXPIRED);
    assert_int_equal(state_of(s, keep), ATP_RES_HELD);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 8);
    atp_store_stop_expirer(s);
    atp_store_stop_expirer(s); /* twice is harmless */
    struct atp_store_stats stt;
    atp_store_stats(s, &stt);
    assert_int_equal(stt.expirations, 1);
}

static void sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

static uint64_t expirer_wakeups(struct atp_store *s)
{
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    return st.expirer_wakeups;
}

/*
 * An expirer with nothing due sleeps (up to 100 ms at a time) instead of
 * waking every tick: over 500 ms, with or without a far-off hold, it wakes a
 * handful of times (it used to wake 500 times).
 */
static void test_expirer_idle_sleeps(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    RC(0, atp_store_start_expirer(s, 1000));
    sleep_us(50000);
    uint64_t w0 = expirer_wakeups(s);
    sleep_us(500000);
    uint64_t w1 = expirer_wakeups(s);
    if (w1 - w0 > 15)
        fail_msg("idle expirer woke %llu times in 500 ms", (unsigned long long)(w1 - w0));
    HOLD(s, "far", WEB, "A", "DC1", 1, 3600 * 1000, atp_now_us());
    sleep_us(50000);
    w0 = expirer_wakeups(s);
    sleep_us(500000);
    w1 = expirer_wakeups(s);
    if (w1 - w0 > 15)
        fail_msg("expirer with a far hold woke %llu times in 500 ms",
                 (unsigned long long)(w1 - w0));
    assert_true(w1 > 0);
    atp_store_stop_expirer(s);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Poll until reservation id is no longer held; how late that was seen (us). */
static uint64_t seen_late_us(struct atp_store *s, uint64_t id, uint64_t expires_us)
{
    int st = ATP_RES_HELD;
    uint64_t t0 = atp_now_us(), now = t0;
    while (st == ATP_RES_HELD && now - t0 < 2000000) {
        sleep_us(200);
        st = state_of(s, id);
        now = atp_now_us();
    }
    assert_int_equal(st, ATP_RES_EXPIRED);
    return now > expires_us ? now - expires_us : 0;
}

/*
 * A hold made (or extended) while the expirer sleeps towards a later
 * wake-up still expires on time: the reserve or extend wakes it. Each round
 * starts 20 ms after the previous expiry, when the idle expirer plans to
 * sleep until ~100 ms after it, and the hold is due 10 ms later: not woken,
 * it would expire ~70 ms late. The median of 5 rounds (robust to a round
 * whose thread the machine descheduled) must be within 35 ms.
 */
static void test_expirer_woken_early(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 100);
    RC(0, atp_store_start_expirer(s, 1000));
    uint64_t keep = HOLD(s, "keep", WEB, "A", "DC1", 1, 3600 * 1000, atp_now_us());
    uint64_t late_res[5], late_ext[5];
    char key[32];
    for (int i = 0; i < 5; i++) {
        sleep_us(20000);
        snprintf(key, sizeof(key), "res-%d", i);
        struct atp_reservation r;
        bool rp;
        RC(0, reserve1(s, key, WEB, "A", "DC1", 1, 10, atp_now_us(), &r, &rp, NULL));
        late_res[i] = seen_late_us(s, r.id, r.expires_us);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof(key), "ext-%d", i);
        uint64_t id = HOLD(s, key, WEB, "A", "DC1", 1, 3600 * 1000, atp_now_us());
        sleep_us(20000);
        struct atp_reservation r;
        RC(0, atp_store_extend(s, id, 10, atp_now_us(), &r));
        late_ext[i] = seen_late_us(s, id, r.expires_us);
    }
    qsort(late_res, 5, sizeof(late_res[0]), cmp_u64);
    qsort(late_ext, 5, sizeof(late_ext[0]), cmp_u64);
    if (late_res[2] > 35000 || late_ext[2] > 35000)
        fail_msg("median lateness seen: reserve %llu us, extend %llu us",
                 (unsigned long long)late_res[2], (unsigned long long)late_ext[2]);
    assert_int_equal(state_of(s, keep), ATP_RES_HELD);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 99);
    atp_store_stop_expirer(s);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.expirations, 10);
}

/* ---------------------------------------------------------------------- */
/* capacities                                                             */
/* ---------------------------------------------------------------------- */

static void test_capacity(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.nshards = 1;
    cfg.max_items = 4;
    cfg.max_skus = 3;
    cfg.max_reservations = 3;
    cfg.max_overrides = 2;
    cfg.idempotency_window_ms = 1000;
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));

    SET(s, "A", "DC1", 10);
    SET(s, "A", "DC2", 10);
    SET(s, "B", "DC1", 10);
    SET(s, "C", "DC1", 10);
    /* a fifth item: full; a fourth sku: full */
    RC(ATP_EFULL, atp_store_set(s, S("C"), S("DC2"), 1, 0));
    int64_t oh;
    fill(&oh, sizeof(oh));
    RC(ATP_EFULL, atp_store_adjust(s, S("C"), S("DC2"), 1, &oh));
    UNTOUCHED(oh);
    int rc = atp_store_adjust(s, S("D"), S("DC1"), 1, &oh);
    assert_int_equal(rc, ATP_EFULL);
    /* existing items carry on */
    RC(0, atp_store_adjust(s, S("C"), S("DC1"), 1, &oh));
    assert_int_equal(oh, 11);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 4);
    assert_int_equal(st.skus, 3);

    /* overrides */
    RC(0, atp_store_set_safety(s, S("A"), S(""), APP, 1));
    RC(0, atp_store_set_safety(s, S("A"), S("DC1"), APP, 1));
    RC(ATP_EFULL, atp_store_set_safety(s, S("B"), S(""), APP, 1));
    RC(0, atp_store_set_safety(s, S("A"), S("DC1"), APP, 3)); /* replacing is fine */
    assert_int_equal(BD(s, "A", "DC1", APP).safety, 3);

    /* reservations */
    uint64_t r1 = HOLD(s, "r1", WEB, "A", "DC1", 1, 1000, T0);
    HOLD(s, "r2", WEB, "A", "DC1", 1, 1000, T0);
    HOLD(s, "r3", WEB, "A", "DC1", 1, 1000, T0);
    struct atp_reservation r;
    bool rp;
    fill(&r, sizeof(r));
    fill(&rp, sizeof(rp));
    RC(ATP_EFULL, reserve1(s, "r4", WEB, "A", "DC1", 1, 1000, T0, &r, &rp, NULL));
    UNTOUCHED(r);
    UNTOUCHED(rp);
    assert_int_equal(BD(s, "A", "DC1", WEB).reserved, 3);
    /* a replay needs no new record */
    RC(0, reserve1(s, "r1", WEB, "A", "DC1", 1, 1000, T0, &r, &rp, NULL));
    assert_true(rp);
    assert_int_equal(r.id, r1);
    /* once finished and older than the window, records are free again */
    RC(0, atp_store_release(s, r1, T0 + 1, NULL));
    assert_int_equal(atp_store_expire(s, T0 + 1000 * MS), 2);
    atp_store_expire(s, T0 + 100000 * MS);
    atp_store_expire(s, T0 + 200000 * MS);
    HOLD(s, "r4", WEB, "A", "DC1", 1, 1000, T0 + 200000 * MS);
    HOLD(s, "r5", WEB, "A", "DC1", 1, 1000, T0 + 200000 * MS);
    HOLD(s, "r6", WEB, "A", "DC1", 1, 1000, T0 + 200000 * MS);
    RC(ATP_EFULL, reserve1(s, "r7", WEB, "A", "DC1", 1, 1000, T0 + 200000 * MS, &r, &rp, NULL));
    atp_store_free(s);
}

/*
 * A finished reservation is kept for the idempotency window after it
 * finished, then its record and key are reclaimed (header: "reclaim finished
 * reservations older than the idempotency window"), whatever TTL it was
 * created with: a release long before the TTL frees the record a window
 * later, not a window after the original deadline.
 */
static void test_reclaim_after_release(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.max_reservations = 2;
    cfg.idempotency_window_ms = 1000;
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));
    SET(s, "A", "DC1", 10);
    atp_store_expire(s, T0); /* the reaper has been running all along */
    uint64_t a = HOLD(s, "a", WEB, "A", "DC1", 1, 3600 * 1000, T0); /* 1 h TTL */
    uint64_t b = HOLD(s, "b", WEB, "A", "DC1", 1, 3600 * 1000, T0);
    RC(0, atp_store_release(s, a, T0 + 1 * MS, NULL));
    RC(0, atp_store_commit(s, b, T0 + 1 * MS, NULL));
    RC(0, atp_store_fulfill(s, S("b"), 0, NULL));
    for (uint64_t t = T0 + 2 * MS; t <= T0 + 10000 * MS; t += 1 * MS)
        atp_store_expire(s, t);
    /* both finished 10 s ago with a 1 s window: gone, keys and records free */
    assert_int_equal(state_of(s, a), ATP_ENOTFOUND);
    assert_int_equal(state_of(s, b), ATP_ENOTFOUND);
    struct atp_reservation r;
    bool rp = true;
    RC(0, reserve1(s, "c", WEB, "A", "DC1", 1, 1000, T0 + 10000 * MS, &r, &rp, NULL));
    RC(0, reserve1(s, "a", WEB, "A", "DC1", 1, 1000, T0 + 10000 * MS, &r, &rp, NULL));
    assert_false(rp);
    atp_store_free(s);
}

/*
 * A refused reserve leaves nothing behind: many more refusals than the key
 * tables have slots, with no reaper running, and a good reserve still works.
 */
static void test_refusals_leave_nothing(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.max_reservations = 4; /* key tables of 16 slots */
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));
    SET(s, "A", "DC1", 10);
    for (int i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "refused-%d", i % 3 ? i : 7);
        RC(ATP_EINSUFFICIENT, reserve1(s, key, WEB, "A", "DC1", 11, 1000, T0, NULL, NULL, NULL));
        RC(ATP_EINSUFFICIENT, reserve1(s, key, WEB, "NOPE", "DC1", 1, 1000, T0, NULL, NULL, NULL));
    }
    struct atp_reservation r;
    bool rp = true;
    RC(0, reserve1(s, "good", WEB, "A", "DC1", 10, 1000, T0, &r, &rp, NULL));
    assert_false(rp);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 0);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.reserves_rejected, 2000);
    atp_store_free(s);
}

static int admit_calls;
static int refuse_blocked(void *arg, struct atp_slice sku, struct atp_slice loc)
{
    (void)loc;
    admit_calls++;
    const char *blocked = arg;
    return sku.len == strlen(blocked) && memcmp(sku.p, blocked, sku.len) == 0 ? ATP_EUNAVAILABLE
                                                                              : 0;
}

/* The admission hook refuses a whole reservation and gives everything back. */
static void test_admission_hook(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    SET(s, "B", "DC1", 10);
    atp_store_set_admit(s, refuse_blocked, "B");
    struct atp_line_req lines[] = {{S("A"), S("DC1"), 3}, {S("B"), S(""), 2}};
    struct atp_reserve_req req = {S("gated"), WEB, 1000, lines, 2};
    struct atp_reservation r;
    fill(&r, sizeof(r));
    bool rp = false;
    admit_calls = 0;
    RC(ATP_EUNAVAILABLE, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    UNTOUCHED(r);
    assert_true(admit_calls >= 1);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 10);
    assert_int_equal(ATP(s, "B", "DC1", WEB), 10);
    struct atp_reservation found;
    RC(ATP_ENOTFOUND, atp_store_reservation_find(s, S("gated"), &found));
    /* the same key goes through once the hook lets it */
    atp_store_set_admit(s, NULL, NULL);
    RC(0, atp_store_reserve(s, &req, T0, &r, &rp, NULL));
    assert_false(rp);
    assert_int_equal(ATP(s, "A", "DC1", WEB), 7);
}

/* A refused insert (capacity) must not use up capacity or count as an item. */
static void test_capacity_failed_insert(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.nshards = 1;
    cfg.max_items = 8;
    cfg.max_skus = 2;
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));
    SET(s, "A", "DC1", 1);
    SET(s, "B", "DC1", 1);
    for (int i = 0; i < 10; i++)
        RC(ATP_EFULL, atp_store_adjust(s, S("C"), S("DC1"), 1, NULL));
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 2);
    assert_int_equal(st.skus, 2);
    /* six more items of the existing skus still fit */
    const char *locs[] = {"L1", "L2", "L3"};
    for (int i = 0; i < 3; i++) {
        SET(s, "A", locs[i], 1);
        SET(s, "B", locs[i], 1);
    }
    RC(ATP_EFULL, atp_store_set(s, S("A"), S("L4"), 1, 0));
    atp_store_stats(s, &st);
    assert_int_equal(st.items, 8);
    atp_store_free(s);
}

/* ---------------------------------------------------------------------- */
/* out-parameters on error, in one place                                  */
/* ---------------------------------------------------------------------- */

/* --- change feed ------------------------------------------------------------------------- */

struct feed_ans {
    struct atp_change c[ATP_CHANGES_MAX];
    uint32_t n;
    uint64_t next;
    bool more;
};

static struct feed_ans *changes_(struct atp_store *s, uint32_t ch, uint64_t since, uint32_t flags,
                                 uint32_t max, int line)
{
    static struct feed_ans a;
    memset(&a, 0, sizeof(a));
    int rc = atp_store_changes(s, ch, since, flags, max, a.c, &a.n, &a.next, &a.more);
    if (rc != 0)
        fail_msg("line %d: changes ch %u since %llx: %s", line, ch, (unsigned long long)since,
                 atp_error_name(rc));
    return &a;
}
#define CHANGES(s, ch, since, flags, max) changes_((s), (ch), (since), (flags), (max), __LINE__)

/* The entry for sku@loc in an answer (loc "" for network), or NULL. */
static const struct atp_change *find_change(const struct feed_ans *a, const char *sku,
                                            const char *loc)
{
    const struct atp_change *hit = NULL;
    for (uint32_t i = 0; i < a->n; i++) {
        if (a->c[i].sku.len == strlen(sku) && memcmp(a->c[i].sku.p, sku, a->c[i].sku.len) == 0 &&
            a->c[i].loc.len == strlen(loc) && memcmp(a->c[i].loc.p, loc, a->c[i].loc.len) == 0) {
            if (hit)
                fail_msg("%s@%s reported twice in one answer", sku, loc);
            hit = &a->c[i];
        }
    }
    return hit;
}

/* Every kind of change is reported, once, with the ATP of the asking channel. */
static void test_changes_report(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 10);
    uint64_t c0 = atp_store_changes_cursor(s);
    assert_true(c0 != 0);
    struct feed_ans *a = CHANGES(s, WEB, c0, 0, 100);
    assert_int_equal(a->n, 0);
    assert_false(a->more);
    assert_true(a->next == c0);

    /* an event, then a hold: one entry, the ATP after both */
    RC(0, atp_store_adjust(s, S("A"), S("DC1"), 5, NULL));
    uint64_t id = HOLD(s, "k1", WEB, "A", "DC1", 3, 1000, T0);
    a = CHANGES(s, APP, c0, 0, 100);
    assert_int_equal(a->n, 1);
    const struct atp_change *e = find_change(a, "A", "DC1");
    assert_non_null(e);
    assert_int_equal(e->atp, 15 - 3 - 2); /* app keeps 2 units of safety stock */
    uint64_t c1 = a->next;
    assert_true(c1 != c0);
    assert_int_equal(CHANGES(s, WEB, c1, 0, 100)->n, 0);

    /* a hold alone */
    uint64_t id0 = HOLD(s, "k0", WEB, "A", "DC1", 1, 1000, T0);
    a = CHANGES(s, WEB, c1, 0, 100);
    assert_int_equal(a->n, 1);
    assert_int_equal(find_change(a, "A", "DC1")->atp, 15 - 3 - 1);
    RC(0, atp_store_release(s, id0, T0 + 1, NULL));
    c1 = CHANGES(s, WEB, a->next, 0, 100)->next;

    /* a release */
    RC(0, atp_store_release(s, id, T0 + 1, NULL));
    a = CHANGES(s, WEB, c1, 0, 100);
    assert_int_equal(a->n, 1);
    assert_int_equal(find_change(a, "A", "DC1")->atp, 15);
    uint64_t c2 = a->next;

    /* an expiry */
    HOLD(s, "k2", WEB, "A", "DC1", 4, 10, T0);
    uint64_t c3 = CHANGES(s, WEB, c2, 0, 100)->next;
    assert_int_equal(atp_store_expire(s, T0 + 20 * MS), 1);
    a = CHANGES(s, WEB, c3, 0, 100);
    assert_int_equal(a->n, 1);
    assert_int_equal(find_change(a, "A", "DC1")->atp, 15);
    uint64_t c4 = a->next;

    /* a commit changes no ATP; its shipment changes the safety in percent */
    uint64_t id3 = HOLD(s, "k3", MKT, "A", "DC1", 5, 1000, T0);
    RC(0, atp_store_commit(s, id3, T0 + 1, NULL));
    uint64_t c5 = CHANGES(s, MKT, c4, 0, 100)->next;
    RC(0, atp_store_fulfill(s, S("k3"), 0, NULL));
    a = CHANGES(s, MKT, c5, 0, 100);
    assert_int_equal(a->n, 1);
    /* on_hand 10, nothing allocated: 10 - 10% */
    assert_int_equal(find_change(a, "A", "DC1")->atp, 9);
    uint64_t c6 = a->next;

    /* allocate, deallocate, a safety override per item and per sku */
    SET(s, "A", "DC2", 8);
    uint64_t c7 = CHANGES(s, WEB, c6, 0, 100)->next;
    RC(0, atp_store_allocate(s, S("A"), S("DC2"), 3));
    a = CHANGES(s, WEB, c7, 0, 100);
    assert_int_equal(a->n, 1);
    assert_int_equal(find_change(a, "A", "DC2")->atp, 5);
    RC(0, atp_store_deallocate(s, S("A"), S("DC2"), 1));
    a = CHANGES(s, WEB, a->next, 0, 100);
    assert_int_equal(find_change(a, "A", "DC2")->atp, 6);
    RC(0, atp_store_set_safety(s, S("A"), S("DC2"), WEB, 4));
    a = CHANGES(s, WEB, a->next, 0, 100);
    assert_int_equal(a->n, 1);
    assert_int_equal(find_change(a, "A", "DC2")->atp, 2);
    RC(0, atp_store_set_safety(s, S("A"), S(""), APP, 7));
    a = CHANGES(s, APP, a->next, 0, 100);
    assert_int_equal(a->n, 2); /* both of the sku's items */
    assert_int_equal(find_change(a, "A", "DC1")->atp, 10 - 7);
    assert_int_equal(find_change(a, "A", "DC2")->atp, 6 - 7 < 0 ? 0 : 6 - 7);

    /* a refused reserve, a set to the same value, a stale set: no change */
    uint64_t c8 = a->next;
    RC(ATP_EINSUFFICIENT, reserve1(s, "k4", WEB, "A", "DC1", 99, 1000, T0, NULL, NULL, NULL));
    RC(0, atp_store_set(s, S("A"), S("DC1"), 10, 5));
    RC(ATP_ESTALE, atp_store_set(s, S("A"), S("DC1"), 3, 4));
    a = CHANGES(s, WEB, c8, 0, 100);
    assert_int_equal(a->n, 0);
    assert_true(a->next == c8);
}

/* Channels see only their locations; network scope is one entry per sku. */
static void test_changes_scope(void **state)
{
    struct atp_store *s = *state;
    uint64_t c0 = atp_store_changes_cursor(s);
    SET(s, "N", "DC1", 4);
    SET(s, "N", "DC2", 6);
    SET(s, "N", "DC3", 100);
    SET(s, "M", "DC3", 1);

    struct feed_ans *a = CHANGES(s, B2B, c0, 0, 100); /* sells from DC2, DC1 */
    assert_int_equal(a->n, 2);
    assert_int_equal(find_change(a, "N", "DC1")->atp, 4);
    assert_int_equal(find_change(a, "N", "DC2")->atp, 6);
    assert_null(find_change(a, "N", "DC3"));
    assert_false(a->more);

    a = CHANGES(s, WEB, c0, 0, 100);
    assert_int_equal(a->n, 4);

    a = CHANGES(s, B2B, c0, ATP_CHANGES_NETWORK, 100);
    assert_int_equal(a->n, 1);
    assert_int_equal(find_change(a, "N", "")->atp, 10);
    a = CHANGES(s, MKT, c0, ATP_CHANGES_NETWORK, 100); /* cap 50 per item, 10% */
    assert_int_equal(a->n, 2);
    assert_int_equal(find_change(a, "N", "")->atp, (4 - 1) + (6 - 1) + 50);
    assert_int_equal(find_change(a, "M", "")->atp, 0);
    struct atp_breakdown b = NET(s, "N", MKT);
    assert_int_equal(b.atp, 58);
}

/* max splits an answer; the rest follows from the returned cursor. */
static void test_changes_paging(void **state)
{
    struct atp_store *s = *state;
    uint64_t c0 = atp_store_changes_cursor(s);
    char sku[16];
    for (int i = 0; i < 5; i++) {
        snprintf(sku, sizeof(sku), "P%d", i);
        SET(s, sku, "DC1", i + 1);
    }
    struct feed_ans *a = CHANGES(s, WEB, c0, 0, 2);
    assert_int_equal(a->n, 2);
    assert_true(a->more);
    int64_t seen = 0;
    uint32_t total = 0;
    uint64_t cur = c0;
    for (;;) {
        a = CHANGES(s, WEB, cur, 0, 2);
        for (uint32_t i = 0; i < a->n; i++)
            seen |= INT64_C(1) << a->c[i].atp;
        total += a->n;
        cur = a->next;
        if (!a->more)
            break;
    }
    assert_int_equal(total, 5);
    assert_int_equal(seen, 0x3e); /* ATP 1..5, each once */
    assert_int_equal(CHANGES(s, WEB, cur, 0, 2)->n, 0);
}

/* Bad arguments and cursors: clear codes, nothing written. */
static void test_changes_errors(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 1);
    uint64_t c = atp_store_changes_cursor(s);
    struct atp_change out[2];
    fill(out, sizeof(out));
    uint32_t n = 77;
    uint64_t next = 88;
    bool more = true;
    RC(ATP_ENOCHANNEL, atp_store_changes(s, NCH, c, 0, 2, out, &n, &next, &more));
    RC(ATP_EINVAL, atp_store_changes(s, WEB, c, 0, 0, out, &n, &next, &more));
    RC(ATP_EINVAL, atp_store_changes(s, WEB, c, 0, ATP_CHANGES_MAX + 1, out, &n, &next, &more));
    RC(ATP_EINVAL, atp_store_changes(s, WEB, c, 2, 2, out, &n, &next, &more));
    RC(ATP_ECURSOR, atp_store_changes(s, WEB, 0, 0, 2, out, &n, &next, &more));
    RC(ATP_ECURSOR, atp_store_changes(s, WEB, c + 1000, 0, 2, out, &n, &next, &more));
    RC(ATP_ECURSOR,
       atp_store_changes(s, WEB, c ^ (UINT64_C(1) << 60), 0, 2, out, &n, &next, &more));
    assert_int_equal(n, 77);
    assert_true(next == 88);
    assert_true(more);
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(((unsigned char *)out)[i], SENTINEL);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    assert_int_equal(st.feed_expired, 3);
    assert_true(st.feed_records >= 1);

    /* another store's cursor is not this one's (a restart) */
    struct atp_store_config cfg;
    fixture_config(&cfg);
    struct atp_store *other;
    RC(0, atp_store_new(&cfg, &other));
    uint64_t oc = atp_store_changes_cursor(other);
    RC(ATP_ECURSOR, atp_store_changes(s, WEB, oc, 0, 2, out, &n, &next, &more));
    atp_store_free(other);

    /* the window: feed_records must be a power of two of at least 1024 */
    fixture_config(&cfg);
    cfg.feed_records = 1000;
    assert_int_equal(atp_store_new(&cfg, &other), ATP_EINVAL);
    cfg.feed_records = 512;
    assert_int_equal(atp_store_new(&cfg, &other), ATP_EINVAL);
}

/* A cursor older than the window is refused, never answered with gaps. */
static void test_changes_window(void **state)
{
    (void)state;
    struct atp_store_config cfg;
    fixture_config(&cfg);
    cfg.feed_records = 1024;
    struct atp_store *s;
    RC(0, atp_store_new(&cfg, &s));
    uint64_t c0 = atp_store_changes_cursor(s);
    char sku[16];
    for (int i = 0; i < 1024; i++) {
        snprintf(sku, sizeof(sku), "W%d", i);
        SET(s, sku, "DC1", 1);
    }
    /* exactly the window: still answered */
    struct feed_ans *a = CHANGES(s, WEB, c0, 0, 1000);
    assert_int_equal(a->n, 1000);
    assert_true(a->more);
    uint64_t c1 = a->next;
    SET(s, "W-last", "DC1", 1);
    struct atp_change out[1];
    uint32_t n;
    uint64_t next;
    bool more;
    RC(ATP_ECURSOR, atp_store_changes(s, WEB, c0, 0, 1, out, &n, &next, &more));
    a = CHANGES(s, WEB, c1, 0, 1000);
    assert_int_equal(a->n, 25);
    assert_non_null(find_change(a, "W-last", "DC1"));
    atp_store_free(s);
}

static void test_outparams_untouched(void **state)
{
    struct atp_store *s = *state;
    SET(s, "A", "DC1", 5);
    uint64_t id = HOLD(s, "k", WEB, "A", "DC1", 1, 1000, T0);
    RC(0, atp_store_release(s, id, T0 + 1, NULL));

    struct atp_reservation r;
    bool rp;
    struct atp_shortfall sh[2];
    struct atp_breakdown b;
    int64_t oh;
    uint32_t cid;
    struct atp_store *ns;
    fill(&r, sizeof(r));
    fill(&rp, sizeof(rp));
    fill(&b, sizeof(b));
    fill(&oh, sizeof(oh));
    fill(&cid, sizeof(cid));
    fill(&ns, sizeof(ns));

    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg); /* no channels */
    assert_true(atp_store_new(&cfg, &ns) < 0);
    RC(ATP_ENOCHANNEL, atp_store_channel_find(s, S("x"), &cid));
    RC(ATP_ENOTFOUND, atp_store_get(s, S("Q"), S("DC1"), WEB, &b));
    RC(ATP_ENOTFOUND, atp_store_get_network(s, S("Q"), WEB, &b));
    RC(ATP_EINVAL_SKU, atp_store_adjust(s, S("a b"), S("DC1"), 1, &oh));
    RC(ATP_ECONFLICT, reserve1(s, "k", WEB, "A", "DC1", 2, 1000, T0, &r, &rp, NULL));
    RC(ATP_ESTATE, atp_store_release(s, id, T0 + 2, &r));
    RC(ATP_ESTATE, atp_store_commit(s, id, T0 + 2, &r));
    RC(ATP_ESTATE, atp_store_extend(s, id, 1, T0 + 2, &r));
    RC(ATP_ENOTFOUND, atp_store_reservation_get(s, id + 99, &r));
    RC(ATP_ENOTFOUND, atp_store_reservation_find(s, S("zz"), &r));
    RC(ATP_ESTATE, atp_store_fulfill(s, S("k"), 0, &r));

    /* insufficient: ret and replayed untouched, the shortfall filled */
    fill(sh, sizeof(sh));
    struct atp_line_req lines[] = {{S("A"), S("DC1"), 2}, {S("A"), S("DC1"), 9}};
    struct atp_reserve_req req = {S("k2"), WEB, 1000, lines, 2};
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, sh));
    assert_int_equal(sh[0].requested, 2);
    assert_int_equal(sh[1].requested, 9);
    assert_true(sh[1].available < 9);
    /* a NULL shortfall is allowed */
    RC(ATP_EINSUFFICIENT, atp_store_reserve(s, &req, T0, &r, &rp, NULL));

    UNTOUCHED(r);
    UNTOUCHED(rp);
    UNTOUCHED(b);
    UNTOUCHED(oh);
    UNTOUCHED(cid);
    UNTOUCHED(ns);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults),
        cmocka_unit_test(test_new_rejects_bad_config),
        cmocka_unit_test(test_misc_helpers),
        cmocka_unit_test(test_validate),
        cmocka_unit_test_setup_teardown(test_channels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_request_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_items, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_many, setup, teardown),
        cmocka_unit_test(test_rotation_in_steps),
        cmocka_unit_test_setup_teardown(test_network_many_locations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adjust, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreach_item, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocate_deallocate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deallocate_beyond_allocated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry_precision, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quantity_range, setup, teardown),
        cmocka_unit_test_setup_teardown(test_channel_safety_and_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_safety_overrides, setup, teardown),
        cmocka_unit_test_setup_teardown(test_location_lists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_network_four_locations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_basic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_same_item_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_unknown_item, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_any, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_extend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fulfill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_needs_stock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deallocate_leaves_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restore_commits_beyond_allocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire_many, setup, teardown),
        cmocka_unit_test(test_idempotency_window),
        cmocka_unit_test_setup_teardown(test_expirer_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expirer_idle_sleeps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expirer_woken_early, setup, teardown),
        cmocka_unit_test(test_capacity),
        cmocka_unit_test(test_reclaim_after_release),
        cmocka_unit_test(test_capacity_failed_insert),
        cmocka_unit_test(test_refusals_leave_nothing),
        cmocka_unit_test_setup_teardown(test_admission_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_outparams_untouched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_report, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_scope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_errors, setup, teardown),
        cmocka_unit_test(test_changes_window),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
