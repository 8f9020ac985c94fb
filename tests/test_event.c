/*
 * test_event.c - unit tests of event parsing, validation and apply
 * (include/atp/event.h, protocol/EVENTS.md), suite `unit`.
 *
 * Every event type parses into the fields EVENTS.md names; every dead-letter
 * reason is produced by at least one input and carries its slug; out-params
 * are untouched on failure; every prefix of a valid event is rejected; the
 * parser never reads past the input (checked against a guard page); and a
 * valid event applied to a store changes exactly what it says.
 */
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

#include "atp/event.h"
#include "atp/store.h"

#define SENTINEL 0xA5
#define T0       UINT64_C(1700000000000000)

struct fx {
    struct atp_event_parser *p;
    struct atp_store *s;
};

static const struct atp_channel_config channels[] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 2, .cap = -1},
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 1024;
    cfg.max_skus = 1024;
    cfg.max_reservations = 64;
    cfg.max_overrides = 64;
    cfg.nshards = 4;
    cfg.channels = channels;
    cfg.nchannels = 2;
    if (!f || atp_event_parser_new(NULL, &f->p) != 0 || atp_store_new(&cfg, &f->s) != 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    atp_event_parser_free(f->p);
    atp_store_free(f->s);
    free(f);
    return 0;
}

static int parse(struct fx *f, const char *s, struct atp_event *ev, struct atp_event_error *err)
{
    return atp_event_parse(f->p, s, strlen(s), ev, err);
}

/* Parse must fail with `code` and `reason`, leaving *ev untouched. */
static void expect_reject(struct fx *f, const char *s, int code, int reason)
{
    struct atp_event ev, before;
    struct atp_event_error err;
    memset(&ev, SENTINEL, sizeof(ev));
    memcpy(&before, &ev, sizeof(ev));
    memset(&err, 0, sizeof(err));
    int rc = parse(f, s, &ev, &err);
    if (rc != code || err.reason != reason)
        print_error("input: %s\n  rc %d (want %d), reason %s (want %s): %s\n", s, rc, code,
                    atp_dlq_reason_slug(err.reason), atp_dlq_reason_slug(reason), err.detail);
    assert_int_equal(rc, code);
    assert_int_equal(err.reason, reason);
    assert_true(err.detail[0] != '\0');
    assert_memory_equal(&ev, &before, sizeof(ev));
}

static void expect_ok(struct fx *f, const char *s, struct atp_event *ev)
{
    struct atp_event_error err;
    memset(&err, SENTINEL, sizeof(err));
    struct atp_event_error before = err;
    int rc = parse(f, s, ev, &err);
    if (rc != 0)
        print_error("input: %s\n  rc %d: %s: %s\n", s, rc, atp_dlq_reason_slug(err.reason),
                    err.detail);
    assert_int_equal(rc, 0);
    assert_memory_equal(&err, &before, sizeof(err)); /* untouched on success */
}

static void assert_str(const char *p, uint32_t len, const char *want)
{
    assert_int_equal(len, strlen(want));
    assert_memory_equal(p, want, len);
}

/* --- valid events ----------------------------------------------------------- */

static void test_adjust(void **state)
{
    struct fx *f = *state;
    struct atp_event ev;
    expect_ok(f,
              "{\"event_id\":\"e-1\",\"type\":\"adjust\",\"sku\":\"SKU-1\",\"loc\":\"DC1\","
              "\"delta\":5,\"reason\":\"receipt\",\"ts\":1700000000000}",
              &ev);
    assert_int_equal(ev.type, ATP_EV_ADJUST);
    assert_str(ev.event_id, ev.event_id_len, "e-1");
    assert_str(ev.sku, ev.sku_len, "SKU-1");
    assert_str(ev.loc, ev.loc_len, "DC1");
    assert_int_equal(ev.qty, 5);
    assert_int_equal(ev.reason, ATP_ADJ_RECEIPT);
    assert_int_equal(ev.ts_ms, INT64_C(1700000000000));

    expect_ok(f,
              " {\"type\":\"adjust\",\"event_id\":\"e-2\",\"sku\":\"S\",\"loc\":\"L\","
              "\"delta\":-3,\"reason\":\"pick\"}\n",
              &ev);
    assert_int_equal(ev.qty, -3);
    assert_int_equal(ev.reason, ATP_ADJ_PICK);
    assert_int_equal(ev.ts_ms, -1);

    /* count_correction takes either sign; every reason name round-trips. */
    expect_ok(f,
              "{\"type\":\"adjust\",\"event_id\":\"e-3\",\"sku\":\"S\",\"loc\":\"L\","
              "\"delta\":-549755813887,\"reason\":\"count_correction\"}",
              &ev);
    assert_int_equal(ev.qty, -ATP_QTY_MAX);
    static const char *const names[] = {"receipt",          "pick",        "return",      "damage",
                                        "count_correction", "transfer_in", "transfer_out"};
    for (int r = 1; r <= 7; r++)
        assert_string_equal(atp_adjust_reason_name(r), names[r - 1]);
    assert_string_equal(atp_adjust_reason_name(0), "?");
}

static void test_set(void **state)
{
    struct fx *f = *state;
    struct atp_event ev;
    expect_ok(f,
              "{\"event_id\":\"s1\",\"type\":\"set\",\"sku\":\"A\",\"loc\":\"B\",\"on_hand\":0,"
              "\"seq\":9223372036854775807}",
              &ev);
    assert_int_equal(ev.type, ATP_EV_SET);
    assert_int_equal(ev.qty, 0);
    assert_true(ev.seq == (uint64_t)INT64_MAX);
    /* Without seq the source timestamp is the guard. */
    expect_ok(f,
              "{\"event_id\":\"s2\",\"type\":\"set\",\"sku\":\"A\",\"loc\":\"B\",\"on_hand\":7,"
              "\"ts\":1700000000123}",
              &ev);
    assert_int_equal(ev.seq, UINT64_C(1700000000123));
    assert_int_equal(ev.qty, 7);
}

static void test_allocate_fulfill_safety_resync(void **state)
{
    struct fx *f = *state;
    struct atp_event ev;
    expect_ok(f,
              "{\"event_id\":\"a\",\"type\":\"allocate\",\"sku\":\"A\",\"loc\":\"B\",\"qty\":3,"
              "\"order\":\"EDI-77\"}",
              &ev);
    assert_int_equal(ev.type, ATP_EV_ALLOCATE);
    assert_int_equal(ev.qty, 3);
    expect_ok(f,
              "{\"event_id\":\"d\",\"type\":\"deallocate\",\"sku\":\"A\",\"loc\":\"B\",\"qty\":1}",
              &ev);
    assert_int_equal(ev.type, ATP_EV_DEALLOCATE);
    expect_ok(
        f,
        "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"A\",\"key\":\"order-1\",\"line\":31}",
        &ev);
    assert_int_equal(ev.type, ATP_EV_FULFILL);
    assert_str(ev.key, ev.key_len, "order-1");
    assert_int_equal(ev.line, 31);
    expect_ok(f,
              "{\"event_id\":\"x\",\"type\":\"safety_stock\",\"sku\":\"A\",\"channel\":\"web\","
              "\"units\":4}",
              &ev);
    assert_int_equal(ev.type, ATP_EV_SAFETY_STOCK);
    assert_int_equal(ev.loc_len, 0);
    assert_int_equal(ev.qty, 4);
    assert_false(ev.remove);
    expect_ok(f,
              "{\"event_id\":\"y\",\"type\":\"safety_stock\",\"sku\":\"A\",\"loc\":\"B\","
              "\"channel\":\"app\",\"units\":null}",
              &ev);
    assert_true(ev.remove);
    assert_str(ev.loc, ev.loc_len, "B");
    expect_ok(f, "{\"event_id\":\"r\",\"type\":\"resync_complete\",\"ts\":5}", &ev);
    assert_int_equal(ev.type, ATP_EV_RESYNC_COMPLETE);
    /* Extension members are ignored, nested or not. */
    expect_ok(f,
              "{\"event_id\":\"z\",\"type\":\"resync_complete\",\"x-src\":{\"a\":[1,2]},"
              "\"x-n\":1.5}",
              &ev);
    for (int t = ATP_EV_ADJUST; t <= ATP_EV_RESYNC_COMPLETE; t++)
        assert_string_not_equal(atp_event_type_name(t), "?");
    assert_string_equal(atp_event_type_name(0), "?");
    assert_string_equal(atp_event_type_name(99), "?");
}

static void test_limits_at_edge(void **state)
{
    struct fx *f = *state;
    struct atp_event ev;
    char buf[512];
    char sku[ATP_SKU_MAX + 1], loc[ATP_LOC_MAX + 1], id[ATP_EVENT_ID_MAX + 1];
    memset(sku, 'S', ATP_SKU_MAX);
    sku[ATP_SKU_MAX] = 0;
    memset(loc, 'L', ATP_LOC_MAX);
    loc[ATP_LOC_MAX] = 0;
    memset(id, '~', ATP_EVENT_ID_MAX);
    id[ATP_EVENT_ID_MAX] = 0;
    snprintf(buf, sizeof(buf),
             "{\"event_id\":\"%s\",\"type\":\"adjust\",\"sku\":\"%s\",\"loc\":\"%s\","
             "\"delta\":549755813887,\"reason\":\"return\"}",
             id, sku, loc);
    expect_ok(f, buf, &ev);
    assert_int_equal(ev.sku_len, ATP_SKU_MAX);
    assert_int_equal(ev.loc_len, ATP_LOC_MAX);
    assert_int_equal(ev.event_id_len, ATP_EVENT_ID_MAX);
    assert_int_equal(ev.qty, ATP_QTY_MAX);
}

/* --- rejections: one block per reason ---------------------------------------- */

#define ADJ(fields) "{\"event_id\":\"e\",\"type\":\"adjust\"," fields "}"
#define ADJ_OK      "\"sku\":\"S\",\"loc\":\"L\",\"delta\":1,\"reason\":\"receipt\""

static void test_reject_not_json(void **state)
{
    struct fx *f = *state;
    const char *bad[] = {
        "hello",
        "{",
        "{\"event_id\":",
        "{\"a\":1}}",
        "{\"a\":1} x",
        "{\"a\":'x'}",
        "{\"a\":1,}",
        "{\"a\":01}",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xc3\"}",
        " ",
        "\n",
        "{\"a\":1}{\"b\":2}",
        "{\"a\":tru}",
        "{a:1}",
        "{\"a\":1/*c*/}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(f, bad[i], ATP_EMALFORMED, ATP_DLQ_NOT_JSON);

    /* Empty, and an embedded NUL after a valid object. */
    struct atp_event ev;
    struct atp_event_error err;
    assert_int_equal(atp_event_parse(f->p, "", 0, &ev, &err), ATP_EMALFORMED);
    assert_int_equal(err.reason, ATP_DLQ_NOT_JSON);
    static const char nul[] = "{\"event_id\":\"r\",\"type\":\"resync_complete\"}\0zz";
    assert_int_equal(atp_event_parse(f->p, nul, sizeof(nul) - 1, &ev, &err), ATP_EMALFORMED);
    assert_int_equal(err.reason, ATP_DLQ_NOT_JSON);
    /* A NUL inside a string is not a valid event either. */
    static const char nul2[] = "{\"event_id\":\"r\0x\",\"type\":\"resync_complete\"}";
    assert_int_not_equal(atp_event_parse(f->p, nul2, sizeof(nul2) - 1, &ev, &err), 0);
}

static void test_reject_not_object(void **state)
{
    struct fx *f = *state;
    const char *bad[] = {"[1,2]", "\"str\"", "true", "null", "[]", "[{}]"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(f, bad[i], ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT);
    expect_reject(f, "42", ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT);
    expect_reject(f, " -1.5e3 ", ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT);
}

static void test_reject_too_large(void **state)
{
    struct fx *f = *state;
    struct atp_event_parser *p;
    struct atp_event_limits lim = {.max_bytes = 100, .max_depth = 0};
    assert_int_equal(atp_event_parser_new(&lim, &p), 0);
    char buf[256];
    int n = snprintf(buf, sizeof(buf), ADJ(ADJ_OK ",\"x-pad\":\"%s\""),
                     "0123456789012345678901234567890123456789");
    struct atp_event ev;
    struct atp_event_error err;
    assert_true(n > 100);
    assert_int_equal(atp_event_parse(p, buf, (size_t)n, &ev, &err), ATP_ETOOLARGE);
    assert_int_equal(err.reason, ATP_DLQ_TOO_LARGE);
    /* The same parser still accepts an event at the limit. */
    n = snprintf(buf, sizeof(buf), ADJ(ADJ_OK));
    assert_true(n <= 100);
    assert_int_equal(atp_event_parse(p, buf, (size_t)n, &ev, &err), 0);
    atp_event_parser_free(p);

    /* The default limit. */
    size_t big = ATP_EVENT_DEFAULT_BYTES + 1;
    char *s = malloc(big + 1);
    memset(s, ' ', big);
    memcpy(s, "{}", 2);
    s[big] = 0;
    expect_reject(f, s, ATP_ETOOLARGE, ATP_DLQ_TOO_LARGE);
    free(s);
}

static void test_reject_too_deep(void **state)
{
    struct fx *f = *state;
    /* Depth 8 is the default: 7 nested levels inside an extension parse. */
    expect_reject(f, ADJ(ADJ_OK ",\"x-a\":[[[[[[[[[[1]]]]]]]]]]"), ATP_EMALFORMED,
                  ATP_DLQ_TOO_DEEP);
    struct atp_event ev;
    expect_ok(f, ADJ(ADJ_OK ",\"x-a\":[[[[[[1]]]]]]"), &ev);
    /* Thousands of levels cost nothing but the limit. */
    char *s = malloc(20001);
    memset(s, '[', 20000);
    s[20000] = 0;
    expect_reject(f, s, ATP_EMALFORMED, ATP_DLQ_TOO_DEEP);
    free(s);

    struct atp_event_parser *p = NULL;
    struct atp_event_limits lim = {.max_depth = ATP_EVENT_MAX_DEPTH + 1};
    assert_int_equal(atp_event_parser_new(&lim, &p), ATP_EINVAL);
    assert_null(p);
}

static void test_reject_type(void **state)
{
    struct fx *f = *state;
    expect_reject(f, "{\"event_id\":\"e\",\"type\":\"adjustment\"}", ATP_EINVAL,
                  ATP_DLQ_UNKNOWN_TYPE);
    expect_reject(f, "{\"event_id\":\"e\",\"type\":\"\"}", ATP_EINVAL, ATP_DLQ_UNKNOWN_TYPE);
    expect_reject(f, "{\"event_id\":\"e\",\"type\":\"ADJUST\"}", ATP_EINVAL, ATP_DLQ_UNKNOWN_TYPE);
    expect_reject(f, "{\"event_id\":\"e\"}", ATP_EINVAL, ATP_DLQ_MISSING_FIELD);
    expect_reject(f, "{}", ATP_EINVAL, ATP_DLQ_MISSING_FIELD);
    expect_reject(f, "{\"event_id\":\"e\",\"type\":7}", ATP_EINVAL, ATP_DLQ_INVALID_FIELD);
    expect_reject(f, "{\"event_id\":\"e\",\"type\":null}", ATP_EINVAL, ATP_DLQ_INVALID_FIELD);
}

static void test_reject_missing(void **state)
{
    struct fx *f = *state;
    const char *bad[] = {
        "{\"type\":\"resync_complete\"}",
        ADJ("\"loc\":\"L\",\"delta\":1,\"reason\":\"receipt\""),
        ADJ("\"sku\":\"S\",\"delta\":1,\"reason\":\"receipt\""),
        ADJ("\"sku\":\"S\",\"loc\":\"L\",\"reason\":\"receipt\""),
        ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":1"),
        "{\"event_id\":\"e\",\"type\":\"set\",\"sku\":\"S\",\"loc\":\"L\",\"seq\":1}",
        "{\"event_id\":\"e\",\"type\":\"set\",\"sku\":\"S\",\"loc\":\"L\",\"on_hand\":1}",
        "{\"event_id\":\"e\",\"type\":\"set\",\"sku\":\"S\",\"loc\":\"L\",\"on_hand\":1,\"ts\":0}",
        "{\"event_id\":\"e\",\"type\":\"allocate\",\"sku\":\"S\",\"loc\":\"L\"}",
        "{\"event_id\":\"e\",\"type\":\"fulfill\",\"sku\":\"S\",\"key\":\"k\"}",
        "{\"event_id\":\"e\",\"type\":\"fulfill\",\"key\":\"k\",\"line\":0}",
        "{\"event_id\":\"e\",\"type\":\"safety_stock\",\"sku\":\"S\",\"units\":1}",
        "{\"event_id\":\"e\",\"type\":\"safety_stock\",\"sku\":\"S\",\"channel\":\"web\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(f, bad[i], ATP_EINVAL, ATP_DLQ_MISSING_FIELD);
}

static void test_reject_unknown_field(void **state)
{
    struct fx *f = *state;
    const char *bad[] = {
        ADJ(ADJ_OK ",\"detla\":1"),
        ADJ(ADJ_OK ",\"qty\":1"),     /* a field, but not of adjust */
        ADJ(ADJ_OK ",\"X-upper\":1"), /* the extension prefix is lower case */
        "{\"event_id\":\"e\",\"type\":\"resync_complete\",\"sku\":\"S\"}",
        "{\"event_id\":\"e\",\"type\":\"fulfill\",\"sku\":\"S\",\"key\":\"k\",\"line\":0,"
        "\"loc\":\"L\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(f, bad[i], ATP_EINVAL, ATP_DLQ_UNKNOWN_FIELD);
}

static void test_reject_invalid_field(void **state)
{
    struct fx *f = *state;
    struct {
        const char *s;
        int code;
    } bad[] = {
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":0,\"reason\":\"count_correction\""),
         ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":\"5\",\"reason\":\"receipt\""), ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":1.5,\"reason\":\"receipt\""), ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":5e1,\"reason\":\"receipt\""), ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":549755813888,\"reason\":\"receipt\""),
         ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":18446744073709551615,\"reason\":\"receipt\""),
         ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":99999999999999999999999,\"reason\":"
             "\"receipt\""),
         ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":-3,\"reason\":\"receipt\""), ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":3,\"reason\":\"damage\""), ATP_ERANGE},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":3,\"reason\":\"theft\""), ATP_EINVAL},
        {ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":3,\"reason\":null"), ATP_EINVAL},
        {ADJ(ADJ_OK ",\"ts\":-1"), ATP_EINVAL},
        {ADJ(ADJ_OK ",\"ts\":\"2024-01-01\""), ATP_EINVAL},
        {"{\"event_id\":\"\",\"type\":\"resync_complete\"}", ATP_EINVAL},
        {"{\"event_id\":\"a b\",\"type\":\"resync_complete\"}", ATP_EINVAL},
        {"{\"event_id\":\"\\u00e9\",\"type\":\"resync_complete\"}", ATP_EINVAL},
        {"{\"event_id\":17,\"type\":\"resync_complete\"}", ATP_EINVAL},
        {"{\"event_id\":\"e\",\"type\":\"set\",\"sku\":\"S\",\"loc\":\"L\",\"on_hand\":-1,"
         "\"seq\":1}",
         ATP_ERANGE},
        {"{\"event_id\":\"e\",\"type\":\"set\",\"sku\":\"S\",\"loc\":\"L\",\"on_hand\":1,"
         "\"seq\":0}",
         ATP_EINVAL},
        {"{\"event_id\":\"e\",\"type\":\"allocate\",\"sku\":\"S\",\"loc\":\"L\",\"qty\":0}",
         ATP_ERANGE},
        {"{\"event_id\":\"e\",\"type\":\"allocate\",\"sku\":\"S\",\"loc\":\"L\",\"qty\":1,"
         "\"order\":\"\"}",
         ATP_EINVAL},
        {"{\"event_id\":\"e\",\"type\":\"fulfill\",\"sku\":\"S\",\"key\":\"k\",\"line\":32}",
         ATP_EINVAL},
        {"{\"event_id\":\"e\",\"type\":\"fulfill\",\"sku\":\"S\",\"key\":\"k\",\"line\":-1}",
         ATP_EINVAL},
        {"{\"event_id\":\"e\",\"type\":\"fulfill\",\"sku\":\"S\",\"key\":\"a key\",\"line\":0}",
         ATP_EKEY},
        {"{\"event_id\":\"e\",\"type\":\"safety_stock\",\"sku\":\"S\",\"channel\":\"w b\","
         "\"units\":1}",
         ATP_EINVAL},
        {"{\"event_id\":\"e\",\"type\":\"safety_stock\",\"sku\":\"S\",\"channel\":\"web\","
         "\"units\":-1}",
         ATP_ERANGE},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_reject(f, bad[i].s, bad[i].code, ATP_DLQ_INVALID_FIELD);
}

static void test_reject_sku_loc(void **state)
{
    struct fx *f = *state;
    char buf[512];
    char sku[ATP_SKU_MAX + 2], loc[ATP_LOC_MAX + 2];
    memset(sku, 'S', ATP_SKU_MAX + 1);
    sku[ATP_SKU_MAX + 1] = 0;
    memset(loc, 'L', ATP_LOC_MAX + 1);
    loc[ATP_LOC_MAX + 1] = 0;
    snprintf(buf, sizeof(buf),
             ADJ("\"sku\":\"%s\",\"loc\":\"L\",\"delta\":1,\"reason\":\"receipt\""), sku);
    expect_reject(f, buf, ATP_EINVAL_SKU, ATP_DLQ_INVALID_SKU);
    snprintf(buf, sizeof(buf),
             ADJ("\"sku\":\"S\",\"loc\":\"%s\",\"delta\":1,\"reason\":\"receipt\""), loc);
    expect_reject(f, buf, ATP_EINVAL_LOC, ATP_DLQ_INVALID_LOC);
    expect_reject(f, ADJ("\"sku\":\"\",\"loc\":\"L\",\"delta\":1,\"reason\":\"receipt\""),
                  ATP_EINVAL_SKU, ATP_DLQ_INVALID_SKU);
    expect_reject(f, ADJ("\"sku\":\"a b\",\"loc\":\"L\",\"delta\":1,\"reason\":\"receipt\""),
                  ATP_EINVAL_SKU, ATP_DLQ_INVALID_SKU);
    expect_reject(f, ADJ("\"sku\":5,\"loc\":\"L\",\"delta\":1,\"reason\":\"receipt\""),
                  ATP_EINVAL_SKU, ATP_DLQ_INVALID_SKU);
    expect_reject(f, ADJ("\"sku\":\"S\",\"loc\":\"L#1\",\"delta\":1,\"reason\":\"receipt\""),
                  ATP_EINVAL_LOC, ATP_DLQ_INVALID_LOC);
    expect_reject(f, ADJ("\"sku\":\"S\",\"loc\":\"\",\"delta\":1,\"reason\":\"receipt\""),
                  ATP_EINVAL_LOC, ATP_DLQ_INVALID_LOC);
}

static void test_reasons_table(void **state)
{
    (void)state;
    /* Every reason has a distinct slug and a message; none is "?". */
    for (int r = 1; r < ATP_DLQ_COUNT; r++) {
        assert_string_not_equal(atp_dlq_reason_slug(r), "?");
        assert_true(strlen(atp_dlq_reason_message(r)) > 5);
        for (int q = 1; q < r; q++)
            assert_string_not_equal(atp_dlq_reason_slug(r), atp_dlq_reason_slug(q));
    }
    assert_string_equal(atp_dlq_reason_slug(ATP_DLQ_COUNT), "?");
    assert_string_equal(atp_dlq_reason_slug(-1), "?");
    assert_string_equal(atp_dlq_reason_slug(ATP_DLQ_NOT_JSON), "not-json");
    assert_string_equal(atp_dlq_reason_slug(ATP_DLQ_TOO_DEEP), "too-deep");
}

/* Every strict prefix of a valid event is rejected, never accepted. */
static void test_prefixes(void **state)
{
    struct fx *f = *state;
    const char *s = "{\"event_id\":\"e-9\",\"type\":\"set\",\"sku\":\"SKU\",\"loc\":\"DC\","
                    "\"on_hand\":12,\"seq\":3,\"x-n\":[1,{\"a\":null}]}";
    size_t n = strlen(s);
    struct atp_event ev;
    struct atp_event_error err;
    for (size_t i = 0; i < n; i++) {
        int rc = atp_event_parse(f->p, s, i, &ev, &err);
        assert_int_equal(rc, ATP_EMALFORMED);
    }
    assert_int_equal(atp_event_parse(f->p, s, n, &ev, &err), 0);
}

/* The input sits right before an unreadable page: any over-read faults. */
static void test_guard_page(void **state)
{
    struct fx *f = *state;
    long pg = sysconf(_SC_PAGESIZE);
    char *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
#define ALLOC "{\"event_id\":\"e\",\"type\":\"allocate\",\"sku\":\"S\",\"loc\":\"L\",\"qty\":"
    static const struct {
        const char *s;
        int rc, reason;
    } inputs[] = {
        {ALLOC "12", ATP_EMALFORMED, ATP_DLQ_NOT_JSON},
        {ALLOC "12}", 0, 0},
        {ALLOC "\"", ATP_EMALFORMED, ATP_DLQ_NOT_JSON},
        {"{", ATP_EMALFORMED, ATP_DLQ_NOT_JSON},
        {"1", ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT},
        {"\"", ATP_EMALFORMED, ATP_DLQ_NOT_JSON},
        {"tr", ATP_EMALFORMED, ATP_DLQ_NOT_JSON},
        {"true", ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT},
    };
#undef ALLOC
    for (size_t i = 0; i < sizeof(inputs) / sizeof(inputs[0]); i++) {
        size_t n = strlen(inputs[i].s);
        char *p = m + pg - n;
        memcpy(p, inputs[i].s, n);
        struct atp_event ev;
        struct atp_event_error err = {0};
        int rc = atp_event_parse(f->p, p, n, &ev, &err);
        assert_int_equal(rc, inputs[i].rc);
        assert_int_equal(err.reason, inputs[i].reason);
    }
    munmap(m, (size_t)pg * 2);
}

/*
 * Two parsers, one verdict (src/event.c): simdjson decides the common case
 * and json-c everything else, as before simdjson was added. These inputs
 * take the json-c path or sit at the edge between the two; each must come
 * out as json-c alone decided it.
 */
static void test_fast_path_edges(void **state)
{
    struct fx *f = *state;
    struct atp_event ev;
#define RC(extra) "{\"event_id\":\"e\",\"type\":\"resync_complete\"" extra "}"
    /* Forms json-c accepts and strict JSON does not (EVENTS.md): still
     * harmless inside x- members. */
    expect_ok(f, RC(",\"x-n\":1."), &ev);
    expect_ok(f, RC(",\"x-n\":NaN"), &ev);
    expect_ok(f, RC(",'x-n':1"), &ev);
    expect_ok(f, RC(",\"x-s\":\"\\ud800\""), &ev);
    expect_ok(f, RC(",\"x-n\":1e400"), &ev);
    expect_ok(f, RC(",\"x-n\":-9223372036854775809"), &ev);
    /* A member given twice: the last value counts, at the first place. */
    expect_ok(f,
              ADJ("\"sku\":\"S\",\"loc\":\"L\",\"delta\":\"x\",\"reason\":\"receipt\","
                  "\"delta\":5"),
              &ev);
    assert_int_equal(ev.qty, 5);
    expect_ok(f, "{\"event_id\":\"e\",\"type\":\"bogus\",\"type\":\"resync_complete\"}", &ev);
    assert_int_equal(ev.type, ATP_EV_RESYNC_COMPLETE);
    expect_reject(f, ADJ(ADJ_OK ",\"x-a\":1,\"x-a\":2,\"detla\":1"), ATP_EINVAL,
                  ATP_DLQ_UNKNOWN_FIELD);
    /* Depth: the default 8 takes 7 levels (the object and 6 arrays). */
    expect_ok(f, RC(",\"x-a\":[[[[[[1]]]]]]"), &ev);
    expect_reject(f, RC(",\"x-a\":[[[[[[[1]]]]]]]"), ATP_EMALFORMED, ATP_DLQ_TOO_DEEP);
    expect_reject(f, RC(",\"x-a\":[[[[[[{\"b\":1}]]]]]]"), ATP_EMALFORMED, ATP_DLQ_TOO_DEEP);

    /* More members than the fast path lists. */
    char buf[2048];
    int n = snprintf(buf, sizeof(buf), "{\"event_id\":\"e\",\"type\":\"resync_complete\"");
    for (int i = 0; i < 40; i++)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"x-%d\":%d", i, i);
    snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
    expect_ok(f, buf, &ev);
    buf[n] = 0;
    snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"bogus\":1}");
    expect_reject(f, buf, ATP_EINVAL, ATP_DLQ_UNKNOWN_FIELD);

    /* Another depth limit counts alike in both parsers. */
    struct atp_event_parser *p;
    struct atp_event_limits lim = {.max_depth = 3};
    assert_int_equal(atp_event_parser_new(&lim, &p), 0);
    struct atp_event_error err;
    const char *ok = RC(",\"x-a\":[1]");
    const char *deep = RC(",\"x-a\":[[1]]");
    assert_int_equal(atp_event_parse(p, ok, strlen(ok), &ev, &err), 0);
    assert_int_equal(atp_event_parse(p, deep, strlen(deep), &ev, &err), ATP_EMALFORMED);
    assert_int_equal(err.reason, ATP_DLQ_TOO_DEEP);
    atp_event_parser_free(p);
#undef RC
}

/* The same parser, many events in a row: nothing of one leaks into the next. */
static void test_reuse(void **state)
{
    struct fx *f = *state;
    struct atp_event ev;
    expect_ok(f,
              "{\"event_id\":\"long-event-id-1\",\"type\":\"safety_stock\",\"sku\":\"SKU-LONG\","
              "\"loc\":\"DC-LONG\",\"channel\":\"web\",\"units\":null}",
              &ev);
    assert_true(ev.remove);
    expect_reject(f, "{\"event_id\":\"e\",\"type\":\"adjust\"}", ATP_EINVAL, ATP_DLQ_MISSING_FIELD);
    expect_ok(f, "{\"event_id\":\"e2\",\"type\":\"resync_complete\"}", &ev);
    assert_str(ev.event_id, ev.event_id_len, "e2");
    assert_int_equal(ev.sku_len, 0);
    assert_int_equal(ev.loc_len, 0);
    assert_int_equal(ev.channel_len, 0);
    assert_false(ev.remove);
    assert_int_equal(ev.ts_ms, -1);
}

/* --- apply ------------------------------------------------------------------- */

static void apply_json(struct fx *f, const char *s, int want)
{
    struct atp_event ev;
    expect_ok(f, s, &ev);
    int rc = atp_event_apply(f->s, &ev);
    if (rc != want)
        print_error("apply %s: %s (want %s)\n", s, atp_error_name(rc), atp_error_name(want));
    assert_int_equal(rc, want);
}

static struct atp_breakdown get(struct fx *f, const char *sku, const char *loc, uint32_t ch)
{
    struct atp_breakdown b;
    assert_int_equal(atp_store_get(f->s, atp_slice_cstr(sku), atp_slice_cstr(loc), ch, &b), 0);
    return b;
}

static void test_apply(void **state)
{
    struct fx *f = *state;
    apply_json(f, ADJ("\"sku\":\"A\",\"loc\":\"DC1\",\"delta\":10,\"reason\":\"receipt\""), 0);
    assert_int_equal(get(f, "A", "DC1", 0).on_hand, 10);
    apply_json(f,
               "{\"event_id\":\"e\",\"type\":\"adjust\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"delta\":-4,\"reason\":\"pick\"}",
               0);
    assert_int_equal(get(f, "A", "DC1", 0).on_hand, 6);

    /* set: newer seq applies, older or equal is ATP_ESTALE and changes nothing */
    apply_json(f,
               "{\"event_id\":\"s\",\"type\":\"set\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"on_hand\":50,\"seq\":5}",
               0);
    assert_int_equal(get(f, "A", "DC1", 0).on_hand, 50);
    apply_json(f,
               "{\"event_id\":\"s\",\"type\":\"set\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"on_hand\":1,\"seq\":4}",
               ATP_ESTALE);
    apply_json(f,
               "{\"event_id\":\"s\",\"type\":\"set\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"on_hand\":1,\"seq\":5}",
               ATP_ESTALE);
    assert_int_equal(get(f, "A", "DC1", 0).on_hand, 50);

    apply_json(f,
               "{\"event_id\":\"a\",\"type\":\"allocate\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"qty\":8}",
               0);
    struct atp_breakdown b = get(f, "A", "DC1", 0);
    assert_int_equal(b.allocated, 8);
    assert_int_equal(b.atp, 42);
    apply_json(f,
               "{\"event_id\":\"d\",\"type\":\"deallocate\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"qty\":3}",
               0);
    assert_int_equal(get(f, "A", "DC1", 0).allocated, 5);

    /* safety stock per sku, per item, removal; unknown channel is refused */
    apply_json(f,
               "{\"event_id\":\"x\",\"type\":\"safety_stock\",\"sku\":\"A\","
               "\"channel\":\"web\",\"units\":10}",
               0);
    assert_int_equal(get(f, "A", "DC1", 0).atp, 35);
    apply_json(f,
               "{\"event_id\":\"x\",\"type\":\"safety_stock\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"channel\":\"web\",\"units\":20}",
               0);
    assert_int_equal(get(f, "A", "DC1", 0).atp, 25);
    apply_json(f,
               "{\"event_id\":\"x\",\"type\":\"safety_stock\",\"sku\":\"A\",\"loc\":\"DC1\","
               "\"channel\":\"web\",\"units\":null}",
               0);
    assert_int_equal(get(f, "A", "DC1", 0).atp, 35);
    apply_json(f,
               "{\"event_id\":\"x\",\"type\":\"safety_stock\",\"sku\":\"A\","
               "\"channel\":\"nope\",\"units\":1}",
               ATP_ENOCHANNEL);

    /* resync_complete touches nothing */
    apply_json(f, "{\"event_id\":\"r\",\"type\":\"resync_complete\"}", 0);
    assert_int_equal(get(f, "A", "DC1", 0).on_hand, 50);
}

static void test_apply_fulfill(void **state)
{
    struct fx *f = *state;
    apply_json(f, ADJ("\"sku\":\"B\",\"loc\":\"DC1\",\"delta\":10,\"reason\":\"receipt\""), 0);
    struct atp_line_req line = {atp_slice_cstr("B"), atp_slice_cstr("DC1"), 4};
    struct atp_reserve_req req = {ATP_SLICE("order-9"), 0, 60000, &line, 1};
    struct atp_reservation r;
    bool replayed;
    assert_int_equal(atp_store_reserve(f->s, &req, T0, &r, &replayed, NULL), 0);

    /* Not committed yet: refused. */
    apply_json(f,
               "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"B\",\"key\":\"order-9\","
               "\"line\":0}",
               ATP_ESTATE);
    assert_int_equal(atp_store_commit(f->s, r.id, T0, NULL), 0);
    /* Wrong sku for the line, line out of range, unknown key. */
    apply_json(f,
               "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"C\",\"key\":\"order-9\","
               "\"line\":0}",
               ATP_EINVAL);
    apply_json(f,
               "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"B\",\"key\":\"order-9\","
               "\"line\":1}",
               ATP_EINVAL);
    apply_json(f,
               "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"B\",\"key\":\"order-0\","
               "\"line\":0}",
               ATP_ENOTFOUND);
    apply_json(f,
               "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"B\",\"key\":\"order-9\","
               "\"line\":0}",
               0);
    struct atp_breakdown b = get(f, "B", "DC1", 0);
    assert_int_equal(b.on_hand, 6);
    assert_int_equal(b.allocated, 0);
    apply_json(f,
               "{\"event_id\":\"f\",\"type\":\"fulfill\",\"sku\":\"B\",\"key\":\"order-9\","
               "\"line\":0}",
               ATP_ESTATE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_adjust, setup, teardown),
        cmocka_unit_test_setup_teardown(test_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_allocate_fulfill_safety_resync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits_at_edge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_not_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_not_object, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_too_deep, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_unknown_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_invalid_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reject_sku_loc, setup, teardown),
        cmocka_unit_test(test_reasons_table),
        cmocka_unit_test_setup_teardown(test_prefixes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guard_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_path_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_apply_fulfill, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
