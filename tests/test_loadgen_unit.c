/*
 * test_loadgen_unit.c - unit tests of atp-loadgen's parts that know nothing
 * about sockets: the log-linear histogram, the key distributions and the
 * workload-file parser.
 *
 * Statistical checks use fixed seeds and tolerances several times wider
 * than the sampling error (quoted at each check), so they are deterministic
 * yet still fail if the generator is wrong by more than a few percent.
 *
 * argv[1] (optional): the folder of the shipped workload files, each of
 * which must parse and pass the cross-field checks.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hist.h"
#include "keygen.h"
#include "workload.h"

static const char *workload_dir;

/* --- histogram ------------------------------------------------------------ */

static struct lg_hist *new_hist(void)
{
    struct lg_hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    lg_hist_init(h);
    return h;
}

static void assert_rel(double got, double want, double tol)
{
    double err = fabs(got - want) / (want != 0 ? fabs(want) : 1);
    if (err > tol)
        fail_msg("got %.3f, want %.3f (relative error %.4f > %.4f)", got, want, err, tol);
}

/* Every value lies in its bucket, and buckets are at most 1/128 wide. */
static void test_hist_buckets(void **state)
{
    uint32_t last = 0;
    for (uint64_t v = 0; v < (1ull << 41); v = v < 4096 ? v + 1 : v + v / 97 + 1) {
        uint32_t i = lg_hist_index(v);
        assert_true(i < LG_HIST_NBUCKETS);
        assert_true(i >= last); /* monotonic */
        last = i;
        if (v < (1ull << LG_HIST_MAX_BITS)) {
            assert_true(lg_hist_lowest(i) <= v);
            assert_true(v <= lg_hist_highest(i));
            double width = (double)(lg_hist_highest(i) - lg_hist_lowest(i) + 1);
            assert_true(width <= 1.0 || width / (double)lg_hist_lowest(i) <= 1.0 / 128 + 1e-12);
        }
    }
    /* Adjacent buckets tile the range without gaps. */
    for (uint32_t i = 0; i + 1 < LG_HIST_NBUCKETS; i++)
        assert_int_equal(lg_hist_highest(i) + 1, lg_hist_lowest(i + 1));
}

/* Uniform 1..1,000,000: percentile p is p% of 1e6, within the bucket width. */
static void test_hist_uniform_percentiles(void **state)
{
    struct lg_hist *h = new_hist();
    for (uint64_t v = 1; v <= 1000000; v++)
        lg_hist_record(h, v);
    assert_int_equal(h->total, 1000000);
    assert_int_equal(h->min, 1);
    assert_int_equal(h->max, 1000000);
    const double ps[] = {1, 10, 50, 90, 99, 99.9, 99.99};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        assert_rel((double)lg_hist_percentile(h, ps[i]), ps[i] * 10000.0, 1.0 / 128);
    assert_int_equal(lg_hist_percentile(h, 0), 1);
    assert_int_equal(lg_hist_percentile(h, 100), 1000000);
    assert_rel(lg_hist_mean(h), 500000.5, 1e-9);
    free(h);
}

/* Exponential latencies (mean 100 us in ns, by inversion of a fixed
 * uniform grid): the p-th percentile is -mean * ln(1 - p). */
static void test_hist_exponential_percentiles(void **state)
{
    struct lg_hist *h = new_hist();
    const double mean = 100000.0;
    const int n = 2000000;
    for (int i = 0; i < n; i++) {
        double u = (i + 0.5) / n;
        lg_hist_record(h, (uint64_t)(-mean * log(1 - u)));
    }
    const double ps[] = {50, 90, 99, 99.9};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double want = -mean * log(1 - ps[i] / 100);
        assert_rel((double)lg_hist_percentile(h, ps[i]), want, 1.0 / 128 + 0.002);
    }
    free(h);
}

static void test_hist_empty_and_merge(void **state)
{
    struct lg_hist *a = new_hist(), *b = new_hist(), *c = new_hist();
    assert_int_equal(lg_hist_percentile(a, 50), 0);
    assert_int_equal(lg_hist_percentile(a, 100), 0);
    for (uint64_t v = 0; v < 5000; v++) {
        lg_hist_record(v % 2 ? a : b, v * 37);
        lg_hist_record(c, v * 37);
    }
    lg_hist_merge(a, b);
    assert_int_equal(a->total, c->total);
    assert_int_equal(a->min, c->min);
    assert_int_equal(a->max, c->max);
    assert_memory_equal(a->counts, c->counts, sizeof(a->counts));
    /* Values beyond the resolved range are kept in the top bucket, max exact. */
    lg_hist_record(c, UINT64_C(1) << 50);
    assert_int_equal(c->max, UINT64_C(1) << 50);
    assert_int_equal(lg_hist_percentile(c, 100), UINT64_C(1) << 50);
    free(a);
    free(b);
    free(c);
}

/* The .hgrm file ends with the whole count at percentile 1.0, and its
 * percentile column never decreases. */
static void test_hist_hgrm(void **state)
{
    struct lg_hist *h = new_hist();
    for (uint64_t v = 1; v <= 10000; v++)
        lg_hist_record(h, v * 1000);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(lg_hist_write_hgrm(h, f, 1e6), 0);
    fclose(f);
    assert_non_null(strstr(text, "Value     Percentile TotalCount"));
    assert_non_null(strstr(text, "#[Max     =       10.000, Total count    =        10000]"));
    double last_p = -1, value, p;
    unsigned long long count, last_count = 0;
    int rows = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (sscanf(line, "%lf %lf %llu", &value, &p, &count) == 3) {
            assert_true(p >= last_p);
            assert_true(count >= last_count);
            last_p = p;
            last_count = count;
            rows++;
        }
    }
    assert_true(rows > 20);
    assert_true(last_p == 1.0);
    assert_int_equal(last_count, 10000);
    free(text);
    free(h);
}

/* --- key distributions ----------------------------------------------------- */

static void test_rng_below_uniform(void **state)
{
    struct lg_rng r;
    lg_rng_seed(&r, 7);
    enum { N = 10, DRAWS = 1000000 };
    unsigned counts[N] = {0};
    for (int i = 0; i < DRAWS; i++) {
        uint64_t v = lg_rng_below(&r, N);
        assert_true(v < N);
        counts[v]++;
    }
    /* expected 100000 each, sd ~300: 2% is > 6 sd */
    for (int i = 0; i < N; i++)
        assert_rel(counts[i], DRAWS / N, 0.02);
    /* same seed, same stream */
    struct lg_rng a, b;
    lg_rng_seed(&a, 99);
    lg_rng_seed(&b, 99);
    for (int i = 0; i < 100; i++)
        assert_int_equal(lg_rng_next(&a), lg_rng_next(&b));
}

/* Zipfian 0.99 over 1000 keys: rank frequencies match 1/k^0.99 / H, drawn
 * from the alias table and by rejection-inversion alike. */
static void test_zipfian_frequencies(void **state)
{
    enum { N = 1000, DRAWS = 2000000 };
    for (int table = 1; table >= 0; table--) {
        struct lg_keygen g;
        assert_int_equal(lg_keygen_init(&g, LG_DIST_ZIPFIAN, N, 0.99, false, 0, 0), 0);
        assert_non_null(g.alias);
        if (!table)
            lg_keygen_drop_table(&g);
        assert_true((g.alias != NULL) == table);
        struct lg_rng r;
        lg_rng_seed(&r, 42);
        unsigned *counts = calloc(N, sizeof(*counts));
        assert_non_null(counts);
        for (int i = 0; i < DRAWS; i++) {
            uint64_t k = lg_keygen_next(&g, &r);
            assert_true(k < N);
            counts[k]++;
        }
        double z = 0;
        for (int k = 1; k <= N; k++)
            z += pow(k, -0.99);
        /* Top ten ranks: expected 258k down to 26k draws; 3% is > 6 sd. */
        for (int k = 0; k < 10; k++)
            assert_rel(counts[k], DRAWS * pow(k + 1, -0.99) / z, 0.03);
        /* Whole distribution: total variation distance from theory. */
        double tv = 0;
        for (int k = 0; k < N; k++)
            tv += fabs((double)counts[k] / DRAWS - pow(k + 1, -0.99) / z);
        assert_true(tv / 2 < 0.01);
        /* A generator that ignored theta (uniform) would give rank 0 ~0.1%. */
        assert_true(counts[0] > 100 * counts[N - 1]);
        free(counts);
        lg_keygen_free(&g);
        lg_keygen_free(&g); /* twice is fine */
    }
    /* A steeper exponent through the table: rank 1 holds 1/zeta-ish of the mass. */
    struct lg_keygen g;
    assert_int_equal(lg_keygen_init(&g, LG_DIST_ZIPFIAN, 50, 2.0, false, 0, 0), 0);
    struct lg_rng r;
    lg_rng_seed(&r, 7);
    unsigned c1 = 0, c2 = 0;
    for (int i = 0; i < 1000000; i++) {
        uint64_t k = lg_zipf_rank(&g, &r);
        assert_true(k >= 1 && k <= 50);
        c1 += k == 1;
        c2 += k == 2;
    }
    double z = 0;
    for (int k = 1; k <= 50; k++)
        z += pow(k, -2.0);
    assert_rel(c1, 1e6 / z, 0.01);
    assert_rel(c2, 1e6 * 0.25 / z, 0.02);
    lg_keygen_free(&g);
}

/* The table draws random numbers LG_ZIPF_AHEAD draws ahead (to prefetch
 * their slots), but the k-th draw of a fresh generator still decides with
 * the k-th xoshiro output: the same ranks as drawing each on the spot. */
static void test_zipfian_lookahead_stream(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct lg_keygen g;
    assert_int_equal(lg_keygen_init(&g, LG_DIST_ZIPFIAN, N, 0.99, false, 0, 0), 0);
    assert_non_null(g.alias);
    struct lg_rng a, b;
    lg_rng_seed(&a, 2026);
    lg_rng_seed(&b, 2026);
    for (int d = 0; d < 10 * LG_ZIPF_AHEAD + 3; d++) {
        uint64_t x = lg_rng_next(&b);
        uint32_t i = (uint32_t)(((x >> 32) * N) >> 32);
        uint64_t want = (uint32_t)x < g.alias[i].cut ? i + 1 : g.alias[i].to + 1;
        assert_int_equal(lg_zipf_rank(&g, &a), want);
    }
    /* seeding again starts the stream over */
    lg_rng_seed(&a, 2026);
    lg_rng_seed(&b, 2026);
    uint64_t x = lg_rng_next(&b);
    uint32_t i = (uint32_t)(((x >> 32) * N) >> 32);
    assert_int_equal(lg_zipf_rank(&g, &a),
                     (uint32_t)x < g.alias[i].cut ? i + 1 : g.alias[i].to + 1);
    lg_keygen_free(&g);
}

/* Scrambled: same popularity profile, but the popular key is fnv(0) mod n. */
static void test_zipfian_scrambled(void **state)
{
    enum { N = 100000, DRAWS = 1000000 };
    struct lg_keygen g;
    assert_int_equal(lg_keygen_init(&g, LG_DIST_ZIPFIAN, N, 0.99, true, 0, 0), 0);
    struct lg_rng r;
    lg_rng_seed(&r, 3);
    unsigned *counts = calloc(N, sizeof(*counts));
    assert_non_null(counts);
    for (int i = 0; i < DRAWS; i++)
        counts[lg_keygen_next(&g, &r)]++;
    uint64_t top = lg_fnv1a64(0) % N;
    double z = 0;
    for (int k = 1; k <= N; k++)
        z += pow(k, -0.99);
    /* expected ~82k draws; 3% is > 8 sd */
    assert_rel(counts[top], DRAWS / z, 0.03);
    for (int k = 0; k < N; k++)
        assert_true(counts[k] <= counts[top]);
    /* The key of every rank comes from a table: the same keys as
     * scrambling each draw, as without the table. */
    assert_non_null(g.scr);
    for (uint64_t k = 0; k < N; k++)
        assert_int_equal(g.scr[k], lg_fnv1a64(k) % N);
    struct lg_rng r2;
    lg_rng_seed(&r, 11);
    lg_rng_seed(&r2, 11);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(lg_keygen_next(&g, &r), lg_fnv1a64(lg_zipf_rank(&g, &r2) - 1) % N);
    free(counts);
    lg_keygen_free(&g);
    assert_null(g.scr);
}

static void test_hotspot(void **state)
{
    enum { N = 10000, DRAWS = 1000000 };
    struct lg_keygen g;
    assert_int_equal(lg_keygen_init(&g, LG_DIST_HOTSPOT, N, 0, false, 0.2, 0.8), 0);
    struct lg_rng r;
    lg_rng_seed(&r, 5);
    unsigned hot = 0;
    for (int i = 0; i < DRAWS; i++) {
        uint64_t k = lg_keygen_next(&g, &r);
        assert_true(k < N);
        hot += k < N / 5;
    }
    /* expected 800k, sd 400 */
    assert_rel(hot, 0.8 * DRAWS, 0.005);
    assert_int_equal(lg_keygen_init(&g, LG_DIST_HOTSPOT, N, 0, false, 0, 0.8), -EINVAL);
    assert_int_equal(lg_keygen_init(&g, LG_DIST_ZIPFIAN, N, 0, false, 0, 0), -EINVAL);
    assert_int_equal(lg_keygen_init(&g, LG_DIST_UNIFORM, 0, 0, false, 0, 0), -EINVAL);
}

/* --- workload parser ---------------------------------------------------------- */

static void test_workload_parses(void **state)
{
    struct lg_workload w;
    lg_workload_defaults(&w);
    char err[256] = "";
    const char *text = "# a comment\n"
                       "name = t1\n"
                       "\n"
                       "recordcount=500   # trailing comment\n"
                       "locations = A,B:1,c-2\n"
                       "requestdistribution = hotspot\n"
                       "hot_data_fraction = 0.1\n"
                       "get_proportion = 0.5\n"
                       "reserve_proportion = 0.5\n"
                       "mget_min = 3\n"
                       "mget_max = 7\n"
                       "verify_oversell = true\n"
                       "channel_cap = -1\n";
    assert_int_equal(lg_workload_parse(&w, text, err, sizeof(err)), 0);
    assert_string_equal(w.name, "t1");
    assert_int_equal(w.recordcount, 500);
    assert_int_equal(w.nlocations, 3);
    assert_string_equal(w.locations[1], "B:1");
    assert_int_equal(w.dist, LG_DIST_HOTSPOT);
    assert_true(w.verify_oversell);
    assert_int_equal(lg_workload_check(&w, err, sizeof(err)), 0);
    char sku[80];
    lg_workload_sku(&w, 41, sku, sizeof(sku));
    assert_string_equal(sku, "SKU-000042");
}

/* sku names are formatted by hand: the same bytes as "%s%0*llu", cut alike. */
static void test_sku_names(void **state)
{
    (void)state;
    struct lg_workload w;
    lg_workload_defaults(&w);
    static const struct {
        const char *prefix;
        uint32_t digits;
        uint64_t start, i;
    } cases[] = {
        {"SKU-", 6, 1, 0},      {"SKU-", 6, 1, 999998},
        {"SKU-", 6, 1, 999999}, {"SKU-", 6, 1, 12345678},
        {"", 0, 0, 0},          {"P", 0, 7, 3},
        {"X_", 20, 0, 42},      {"abc", 3, 1000000000000ull, 99999999},
        {"Q-", 7, 5, 1234},     {"LONG-PREFIX-", 5, 0, 77},
        {"", 1, 0, 9},          {"Z", 19, 0, 9999999999999999999ull},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        snprintf(w.sku_prefix, sizeof(w.sku_prefix), "%s", cases[c].prefix);
        w.sku_digits = cases[c].digits;
        w.sku_start = cases[c].start;
        for (size_t len = 1; len <= 40; len++) {
            char want[64], got[64];
            memset(got, 'z', sizeof(got));
            int n = snprintf(want, len, "%s%0*llu", w.sku_prefix, (int)w.sku_digits,
                             (unsigned long long)(w.sku_start + cases[c].i));
            uint32_t wn = (size_t)n >= len ? (uint32_t)len - 1 : (uint32_t)n;
            assert_int_equal(lg_workload_sku(&w, cases[c].i, got, len), wn);
            assert_string_equal(got, want);
        }
    }
}

struct bad_case {
    const char *text;
    unsigned line;
    const char *words; /* must appear in the message */
};

static void test_workload_rejects_bad_lines(void **state)
{
    static const struct bad_case cases[] = {
        {"name=a\nnoequals\n", 2, "expected key=value"},
        {"name=a\n\n# c\nbogus_key = 1\n", 4, "unknown key"},
        {"recordcount = ten\n", 1, "recordcount"},
        {"recordcount = 0\n", 1, "recordcount"},
        {"recordcount = -5\n", 1, "recordcount"},
        {"get_proportion = 1.5\n", 1, "get_proportion"},
        {"get_proportion = nan\n", 1, "get_proportion"},
        {"requestdistribution = gaussian\n", 1, "uniform, zipfian or hotspot"},
        {"a=1\n", 1, "unknown key"},
        {"name=x\nname=y\n", 2, "given twice"},
        {"locations = A,,B\n", 1, "locations"},
        {"locations = A B\n", 1, "locations"},
        {"channel = we b\n", 1, "channel"},
        {"verify_oversell = maybe\n", 1, "true or false"},
        {"lines_max = 33\n", 1, "lines_max"},
        {"name = \n", 1, "empty"},
        {" = 3\n", 1, "missing key"},
        {"ok=1\r\n", 1, "unknown key"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct lg_workload w;
        lg_workload_defaults(&w);
        char err[256] = "";
        int rc = lg_workload_parse(&w, cases[i].text, err, sizeof(err));
        if (rc != -EINVAL)
            fail_msg("case %zu (%s) was accepted", i, cases[i].text);
        char want[32];
        snprintf(want, sizeof(want), "line %u: ", cases[i].line);
        if (strncmp(err, want, strlen(want)) || !strstr(err, cases[i].words))
            fail_msg("case %zu: message \"%s\", want \"%s...%s\"", i, err, want, cases[i].words);
    }
}

static void test_workload_cross_checks(void **state)
{
    static const char *const texts[] = {
        "mget_min = 10\nmget_max = 5\n",
        "qty_min = 3\nqty_max = 2\n",
        "get_proportion = 0\n",
        "commit_fraction = 0.8\nrelease_fraction = 0.5\n",
        "recordcount = 1\nlocations = A\nlines_min = 2\nlines_max = 2\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct lg_workload w;
        lg_workload_defaults(&w);
        char err[256] = "";
        assert_int_equal(lg_workload_parse(&w, texts[i], err, sizeof(err)), 0);
        if (lg_workload_check(&w, err, sizeof(err)) != -EINVAL)
            fail_msg("cross-check %zu passed: %s", i, texts[i]);
        assert_true(err[0] != 0);
    }
    /* An override line (no line number) reports without one. */
    struct lg_workload w;
    lg_workload_defaults(&w);
    char err[256] = "";
    assert_int_equal(lg_workload_line(&w, "zipfian_constant=0", 0, NULL, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "zipfian_constant"));
    assert_null(strstr(err, "line "));
}

static void test_shipped_workloads(void **state)
{
    if (!workload_dir)
        skip();
    static const char *const names[] = {"checkout", "orchestrator", "marketplace-poll",
                                        "flash-sale", "ingest"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[1024], err[256] = "";
        snprintf(path, sizeof(path), "%s/%s", workload_dir, names[i]);
        struct lg_workload w;
        lg_workload_defaults(&w);
        if (lg_workload_load(&w, path, err, sizeof(err)) || lg_workload_check(&w, err, sizeof(err)))
            fail_msg("%s: %s", path, err);
        assert_string_equal(w.name, names[i]);
    }
}

int main(int argc, char **argv)
{
    if (argc > 1)
        workload_dir = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets),
        cmocka_unit_test(test_hist_uniform_percentiles),
        cmocka_unit_test(test_hist_exponential_percentiles),
        cmocka_unit_test(test_hist_empty_and_merge),
        cmocka_unit_test(test_hist_hgrm),
        cmocka_unit_test(test_rng_below_uniform),
        cmocka_unit_test(test_zipfian_frequencies),
        cmocka_unit_test(test_zipfian_lookahead_stream),
        cmocka_unit_test(test_zipfian_scrambled),
        cmocka_unit_test(test_hotspot),
        cmocka_unit_test(test_workload_parses),
        cmocka_unit_test(test_sku_names),
        cmocka_unit_test(test_workload_rejects_bad_lines),
        cmocka_unit_test(test_workload_cross_checks),
        cmocka_unit_test(test_shipped_workloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
