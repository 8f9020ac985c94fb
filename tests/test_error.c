/*
 * test_error.c - the status table of include/atp/error.h (suite `unit`).
 *
 * Every code of ATP_ERRORS has a non-empty message, name and slug, all
 * distinct; wire statuses are distinct and round-trip through
 * atp_error_from_wire; -errno codes and unknown statuses map as documented.
 * Knows nothing but error.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <ctype.h>

#include <cmocka.h>

#include "atp/error.h"

struct row {
    const char *cname; /* NAME as written in the table */
    int code;
    unsigned wire;
    int http;
    const char *slug;
    const char *msg;
};

static const struct row rows[] = {
#define ROW(name, code, wire, http, slug, msg) {#name, code, wire, http, slug, msg},
    ATP_ERRORS(ROW)
#undef ROW
};
#define NROWS (sizeof(rows) / sizeof(rows[0]))

static void test_table_shape(void **state)
{
    (void)state;
    assert_true(NROWS >= 20);
    assert_int_equal(rows[0].code, 0);
    assert_int_equal(ATP_OK, 0);
    for (size_t i = 1; i < NROWS; i++) {
        /* domain codes sit far below -errno */
        assert_true(rows[i].code <= -10001);
        assert_true(rows[i].wire != 0);
        assert_true(rows[i].wire != ATP_WIRE_SYSTEM);
        assert_true(rows[i].http >= 400 && rows[i].http <= 599);
    }
}

static void test_messages_names_slugs(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++) {
        int c = rows[i].code;
        const char *m = atp_strerror(c);
        const char *n = atp_error_name(c);
        const char *s = atp_error_slug(c);
        assert_non_null(m);
        assert_non_null(n);
        assert_non_null(s);
        assert_true(strlen(m) > 0);
        assert_true(strlen(n) > 0);
        assert_true(strlen(s) > 0);
        assert_string_equal(m, rows[i].msg);
        assert_string_equal(n, rows[i].cname);
        assert_string_equal(s, rows[i].slug);
        assert_int_equal(atp_error_http(c), rows[i].http);
        /* slugs are URL path segments: lower case, digits and '-' */
        for (const char *p = s; *p; p++)
            assert_true(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-');
        for (size_t j = 0; j < i; j++) {
            if (strcmp(m, atp_strerror(rows[j].code)) == 0 ||
                strcmp(n, atp_error_name(rows[j].code)) == 0 ||
                strcmp(s, atp_error_slug(rows[j].code)) == 0)
                fail_msg("codes %d and %d share a message, name or slug", c, rows[j].code);
            if (rows[i].code == rows[j].code)
                fail_msg("code %d appears twice", c);
        }
    }
}

static void test_wire_round_trip(void **state)
{
    (void)state;
    for (size_t i = 0; i < NROWS; i++) {
        unsigned w = atp_error_wire(rows[i].code);
        assert_int_equal(w, rows[i].wire);
        assert_int_equal(atp_error_from_wire(w), rows[i].code);
        for (size_t j = 0; j < i; j++)
            if (rows[j].wire == w)
                fail_msg("wire status %u used by %d and %d", w, rows[i].code, rows[j].code);
    }
    /* unknown statuses */
    assert_int_equal(atp_error_from_wire(65535), ATP_EINTERNAL);
    assert_int_equal(atp_error_from_wire(12345), ATP_EINTERNAL);
    assert_int_equal(atp_error_from_wire(0), ATP_OK);
}

static void test_errno_codes(void **state)
{
    (void)state;
    int codes[] = {-ENOMEM, -EINVAL, -EAGAIN, -ECONNRESET, -1, -4095};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        int c = codes[i];
        const char *m = atp_strerror(c);
        assert_non_null(m);
        assert_true(strlen(m) > 0);
        assert_string_equal(atp_error_slug(c), "system-error");
        assert_string_equal(atp_error_name(c), "ESYSTEM");
        assert_int_equal(atp_error_wire(c), ATP_WIRE_SYSTEM);
        assert_int_equal(atp_error_http(c), 500);
    }
    assert_string_equal(atp_strerror(-ENOMEM), strerror(ENOMEM));
    /* not in the table and not -errno */
    assert_non_null(atp_strerror(-20000));
    assert_true(strlen(atp_strerror(-20000)) > 0);
    assert_non_null(atp_strerror(7));
}

static void test_enum_values(void **state)
{
    (void)state;
    assert_int_equal(ATP_EINVAL_SKU, -10001);
    assert_int_equal(ATP_EINSUFFICIENT, -10011);
    assert_int_equal(atp_error_wire(ATP_EINSUFFICIENT), 300);
    assert_int_equal(atp_error_http(ATP_ECONFLICT), 422);
    assert_string_equal(atp_error_name(ATP_EINSUFFICIENT), "EINSUFFICIENT");
    assert_string_equal(atp_error_slug(ATP_EINSUFFICIENT), "insufficient-stock");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_shape),     cmocka_unit_test(test_messages_names_slugs),
        cmocka_unit_test(test_wire_round_trip), cmocka_unit_test(test_errno_codes),
        cmocka_unit_test(test_enum_values),
    };
    return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
