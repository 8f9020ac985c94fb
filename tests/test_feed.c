/*
 * test_feed.c - the change feed's internals that no public call can reach
 * on demand (suite `unit`): a ring slot overwritten while an answer reads
 * it, cursors across the 64-bit wrap, and one record per item per scan.
 * The feed's behaviour through the public API is in test_store.c, against
 * a model in test_model.c and under concurrency in test_stress.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "store_int.h"

static const struct atp_channel_config chans[] = {{.name = "web", .cap = -1}};

static struct atp_store *new_store(void)
{
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 4096;
    cfg.max_reservations = 1024;
    cfg.nshards = 4;
    cfg.feed_records = 1024;
    cfg.channels = chans;
    cfg.nchannels = 1;
    struct atp_store *s = NULL;
    assert_int_equal(atp_store_new(&cfg, &s), 0);
    return s;
}

static void set_items(struct atp_store *s, const char *prefix, int n, int64_t qty)
{
    char sku[32];
    for (int i = 0; i < n; i++) {
        snprintf(sku, sizeof(sku), "%s%d", prefix, i);
        assert_int_equal(atp_store_set(s, atp_slice_cstr(sku), atp_slice_cstr("DC1"), qty, 0), 0);
    }
}

/*
 * A scan that has claimed the slot of a record the answer reads (the ring
 * went round past the cursor while the answer read it): the answer is
 * ECURSOR and writes nothing, not a record of another number.
 */
static void test_overwritten_while_read(void **state)
{
    (void)state;
    struct atp_store *s = new_store();
    uint64_t c = atp_store_changes_cursor(s);
    set_items(s, "O", 5, 3);
    (void)atp_store_changes_cursor(s); /* scanned: 5 records after c, no marks left */
    uint64_t head = atomic_load(&s->feed.head);
    assert_int_equal(head, 5);
    /* a scan in flight that has claimed record (c's record) + ring size */
    atomic_store(&s->feed.claim, head - 5 + 1024 + 1);
    struct atp_change out[8];
    memset(out, 0xA5, sizeof(out));
    uint32_t n = 77;
    uint64_t next = 88;
    bool more = true;
    assert_int_equal(atp_store_changes(s, 0, c, 0, 8, out, &n, &next, &more), ATP_ECURSOR);
    assert_int_equal(n, 77);
    assert_true(next == 88 && more);
    for (size_t i = 0; i < sizeof(out); i++)
        assert_int_equal(((unsigned char *)out)[i], 0xA5);
    /* one record short of that is still safe to read */
    atomic_store(&s->feed.claim, head - 5 + 1024);
    assert_int_equal(atp_store_changes(s, 0, c, 0, 8, out, &n, &next, &more), 0);
    assert_int_equal(n, 5);
    assert_false(more);
    assert_int_equal(out[0].atp, 3);
    atp_store_free(s);
}

/* Cursors are base + record number; the arithmetic holds across 2^64. */
static void test_cursor_wrap(void **state)
{
    (void)state;
    struct atp_store *s = new_store();
    s->feed.base = UINT64_MAX - 2; /* white-box: the wrap three records in */
    uint64_t c = atp_store_changes_cursor(s);
    assert_true(c == UINT64_MAX - 2);
    set_items(s, "W", 10, 1);
    uint32_t total = 0;
    bool more = true;
    while (more) {
        struct atp_change out[3];
        uint32_t n;
        assert_int_equal(atp_store_changes(s, 0, c, 0, 3, out, &n, &c, &more), 0);
        total += n;
    }
    assert_int_equal(total, 10);
    assert_true(c == UINT64_MAX - 2 + 10); /* wrapped: 7 */
    struct atp_change out[3];
    uint32_t n;
    uint64_t next;
    assert_int_equal(atp_store_changes(s, 0, c, 0, 3, out, &n, &next, &more), 0);
    assert_int_equal(n, 0);
    assert_true(next == c);
    /* before record 0 (inside the window's width, but nothing was ever
     * numbered there), ahead of the feed, and far behind it */
    assert_int_equal(atp_store_changes(s, 0, UINT64_MAX - 3, 0, 3, out, &n, &next, &more),
                     ATP_ECURSOR);
    assert_int_equal(atp_store_changes(s, 0, c + 1, 0, 3, out, &n, &next, &more), ATP_ECURSOR);
    assert_int_equal(atp_store_changes(s, 0, c - 2000, 0, 3, out, &n, &next, &more), ATP_ECURSOR);
    atp_store_free(s);
}

/* A hot item is one record per scan however often it changes: one leaf
 * bit stays set until the scan, which clears every bit it takes. */
static void test_one_record_per_scan(void **state)
{
    (void)state;
    struct atp_store *s = new_store();
    set_items(s, "H", 1, 1000);
    uint64_t c = atp_store_changes_cursor(s);
    struct atp_store_stats st;
    atp_store_stats(s, &st);
    uint64_t before = st.feed_records;
    for (int i = 0; i < 100; i++)
        assert_int_equal(
            atp_store_adjust(s, atp_slice_cstr("H0"), atp_slice_cstr("DC1"), i % 2 ? 1 : -1, NULL),
            0);
    uint32_t n;
    struct atp_change out[4];
    bool more;
    /* the marks, before the scan */
    int lit = 0;
    for (size_t w = 0; w < s->feed.leaf_words; w++)
        lit += __builtin_popcountll(atomic_load(&s->feed.leaf[w]));
    assert_int_equal(lit, 1);
    assert_int_equal(atp_store_changes(s, 0, c, 0, 4, out, &n, &c, &more), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].atp, 1000);
    atp_store_stats(s, &st);
    assert_int_equal(st.feed_records - before, 1);
    for (size_t w = 0; w < s->feed.leaf_words; w++)
        assert_int_equal(atomic_load(&s->feed.leaf[w]), 0);
    for (size_t w = 0; w < s->feed.top_words; w++)
        assert_int_equal(atomic_load(&s->feed.top[w]), 0);
    atp_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_overwritten_while_read),
        cmocka_unit_test(test_cursor_wrap),
        cmocka_unit_test(test_one_record_per_scan),
    };
    return cmocka_run_group_tests_name("feed", tests, NULL, NULL);
}
