/*
 * test_http_metrics.c - the metrics registry and its exposition
 * (src/metrics.c), suite `unit`.
 *
 * The rendered text is checked by a small parser of the Prometheus text
 * format written here (every family typed once, before its samples, never
 * split; names in the metric charset with the atp_ prefix; counters end in
 * _total; histogram buckets cumulative and ending in +Inf equal to _count),
 * and by `promtool check metrics` when promtool is installed (Debian's
 * prometheus package). Also: counts from several threads add up, statistics
 * sources are mapped (server and Kafka names, labels, ms to seconds), and
 * unknown source names are still exposed. Knows metrics.h and cmd.h.
 */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/store.h"
#include "cmd.h"
#include "metrics.h"

/* A source that emits what the server and the Kafka ingest emit. */
static void fake_sources(void *arg, atp_stat_emit_fn emit, void *emit_arg)
{
    (void)arg;
    emit(emit_arg, "server_connections_open", 3);
    emit(emit_arg, "server_connections_accepted", 10);
    emit(emit_arg, "server_connections_rejected_max", 2);
    emit(emit_arg, "server_connections_closed_idle", 1);
    emit(emit_arg, "server_connections_closed_peer", 6);
    emit(emit_arg, "ingest_applied", 100);
    emit(emit_arg, "ingest_duplicates", 4);
    emit(emit_arg, "ingest_dead_lettered", 2);
    emit(emit_arg, "ingest_dead_lettered{reason=\"not-json\"}", 1);
    emit(emit_arg, "ingest_dead_lettered{reason=\"bad-sku\"}", 1);
    emit(emit_arg, "ingest_lag{topic=\"atp.events\",partition=\"0\"}", 12);
    emit(emit_arg, "ingest_next_offset{topic=\"atp.events\",partition=\"0\"}", 500);
    emit(emit_arg, "ingest_lag{topic=\"atp.events\",partition=\"1\"}", 0);
    emit(emit_arg, "ingest_next_offset{topic=\"atp.events\",partition=\"1\"}", 7);
    emit(emit_arg, "ingest_freshness_ms_bucket{le=\"1\"}", 5);
    emit(emit_arg, "ingest_freshness_ms_bucket{le=\"10\"}", 9);
    emit(emit_arg, "ingest_freshness_ms_bucket{le=\"+Inf\"}", 10);
    emit(emit_arg, "ingest_freshness_count", 10);
    emit(emit_arg, "ingest_freshness_us_sum", 25000);
    emit(emit_arg, "ingest_last_event_ms{topic=\"atp.events\",partition=\"0\"}", 1750000000123);
    emit(emit_arg, "weird-name.x", 7);
    emit(emit_arg, "durable_pos_synced", 41);
    emit(emit_arg, "durable_fsync_sum_us", 1500000);
    emit(emit_arg, "durable_snapshot_us", 250000);
    emit(emit_arg, "thing_latency_us", 2500);
}

struct fx {
    struct atp_store *store;
    struct atp_buf out;
};

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    static const struct atp_channel_config channels[] = {
        {.name = "web", .cap = -1},
        {.name = "app", .cap = -1},
    };
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 1024;
    cfg.max_skus = 1024;
    cfg.max_reservations = 256;
    cfg.max_overrides = 16;
    cfg.nshards = 2;
    cfg.channels = channels;
    cfg.nchannels = 2;
    assert_int_equal(atp_store_new(&cfg, &x->store), 0);
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

static const char *render(struct fx *x)
{
    static const struct atp_stats_source src[] = {{fake_sources, NULL}};
    struct atp_metrics_scrape s = {
        .store = x->store, .sources = src, .nsources = 1, .version = "9.9.9"};
    x->out.len = 0;
    assert_int_equal(atp_metrics_render(&s, &x->out), 0);
    assert_non_null(atp_buf_reserve(&x->out, 1));
    x->out.data[x->out.len] = '\0';
    return (const char *)x->out.data;
}

/* The value of one exact series ("name{labels}"); fails when absent. */
static double value_of(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *p = text; (p = strstr(p, series)) != NULL; p += n)
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    fail_msg("series %s not found", series);
    return 0;
}

/* --- a strict reader of the text format -------------------------------------------- */

struct fam {
    char name[128];
    char type[32];
    bool closed; /* another family came after it */
};

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_' || s[0] == ':'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == ':'))
            return false;
    return true;
}

/* Which family does a sample name belong to, given the families typed? */
static struct fam *owner(struct fam *f, int nf, const char *name)
{
    for (int i = 0; i < nf; i++) {
        size_t k = strlen(f[i].name);
        if (strncmp(name, f[i].name, k) != 0)
            continue;
        const char *suf = name + k;
        if (*suf == '\0')
            return &f[i];
        if (strcmp(f[i].type, "histogram") == 0 &&
            (!strcmp(suf, "_bucket") || !strcmp(suf, "_sum") || !strcmp(suf, "_count")))
            return &f[i];
    }
    return NULL;
}

static void check_exposition(const char *text)
{
    static struct fam f[512];
    int nf = 0;
    struct fam *cur = NULL;
    char line[1024];
    const char *p = text;
    /* histogram state: last bucket value per label set (without le) */
    char last_hist_key[640] = "";
    double last_bucket = -1, inf_bucket = -1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        assert_non_null(nl); /* every line ends in \n */
        size_t len = (size_t)(nl - p);
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            for (int i = 0; i < nf; i++)
                if (strcmp(f[i].name, name) == 0)
                    fail_msg("family %s typed twice", name);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            assert_true(strncmp(name, "atp_", 4) == 0);
            if (strcmp(type, "counter") == 0 && strcmp(name + strlen(name) - 6, "_total") != 0)
                fail_msg("counter %s does not end in _total", name);
            if (cur)
                cur->closed = true;
            assert_true(nf < 512);
            cur = &f[nf++];
            snprintf(cur->name, sizeof(cur->name), "%s", name);
            snprintf(cur->type, sizeof(cur->type), "%s", type);
            continue;
        }
        assert_true(line[0] != '#');
        /* sample: name[{labels}] value */
        size_t nlen = strcspn(line, "{ ");
        if (!name_ok(line, nlen))
            fail_msg("bad sample name in '%s'", line);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)nlen, line);
        struct fam *o = owner(f, nf, name);
        if (!o)
            fail_msg("sample %s has no TYPE before it", name);
        if (o != cur)
            fail_msg("family %s is split (sample '%s')", o->name, line);
        const char *rest = line + nlen;
        char labels[512] = "";
        if (*rest == '{') {
            const char *end = strchr(rest, '}');
            assert_non_null(end);
            snprintf(labels, sizeof(labels), "%.*s", (int)(end - rest - 1), rest + 1);
            /* label pairs: name="value", comma separated */
            const char *q = labels;
            while (*q) {
                size_t ln = strcspn(q, "=");
                if (!name_ok(q, ln))
                    fail_msg("bad label name in '%s'", line);
                assert_true(q[ln] == '=' && q[ln + 1] == '"');
                const char *v = strchr(q + ln + 2, '"');
                assert_non_null(v);
                q = v + 1;
                if (*q == ',')
                    q++;
            }
            rest = end + 1;
        }
        assert_true(*rest == ' ');
        char *endp;
        double v = strtod(rest + 1, &endp);
        if (*endp != '\0')
            fail_msg("bad value in '%s'", line);
        /* Histograms: cumulative buckets, +Inf last, equal to _count. */
        size_t sl = strlen(name);
        if (sl > 7 && strcmp(name + sl - 7, "_bucket") == 0) {
            char *le = strstr(labels, "le=\"");
            assert_non_null(le);
            char key[600];
            snprintf(key, sizeof(key), "%s|%.*s", name, (int)(le - labels), labels);
            if (strcmp(key, last_hist_key) != 0) {
                snprintf(last_hist_key, sizeof(last_hist_key), "%s", key);
                last_bucket = -1;
            }
            if (v < last_bucket)
                fail_msg("bucket not cumulative: '%s'", line);
            last_bucket = v;
            if (strncmp(le + 4, "+Inf\"", 5) == 0)
                inf_bucket = v;
        }
        if (sl > 6 && strcmp(name + sl - 6, "_count") == 0 && strcmp(o->type, "histogram") == 0) {
            if (v != inf_bucket)
                fail_msg("%s %g differs from its +Inf bucket %g", name, v, inf_bucket);
        }
    }
}

/* promtool, when installed: 0 pass, 77 not installed. */
static int promtool(const char *text)
{
    if (system("command -v promtool >/dev/null 2>&1") != 0)
        return 77;
    char path[] = "/tmp/atp-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    int rc = system(cmd);
    unlink(path);
    return rc;
}

/* --- tests --------------------------------------------------------------------------- */

static void test_exposition_valid(void **state)
{
    struct fx *x = *state;
    atp_metrics_request(ATP_MPROTO_HTTP, ATP_MOP_GET, 0, 12000);
    atp_metrics_request(ATP_MPROTO_BIN, ATP_MOP_RESERVE, ATP_EINSUFFICIENT, 3000000000ull);
    atp_metrics_reservation(1, ATP_EINSUFFICIENT, false);
    const char *text = render(x);
    check_exposition(text);
    int rc = promtool(text);
    if (rc == 77)
        print_message("promtool not installed: only the built-in check ran\n");
    else
        assert_int_equal(rc, 0);
}

static void test_counters_move(void **state)
{
    struct fx *x = *state;
    const char *s = "atp_requests_total{protocol=\"http\",operation=\"mget\"}";
    double before = value_of(render(x), s);
    atp_metrics_request(ATP_MPROTO_HTTP, ATP_MOP_MGET, 0, 5000);                   /* <= 10 us */
    atp_metrics_request(ATP_MPROTO_HTTP, ATP_MOP_MGET, 0, 20000);                  /* <= 25 us */
    atp_metrics_request(ATP_MPROTO_HTTP, ATP_MOP_MGET, ATP_EINVAL, 2000000000ull); /* +Inf */
    const char *text = render(x);
    assert_true(value_of(text, s) == before + 3);
    assert_true(value_of(text, "atp_request_errors_total{protocol=\"http\",operation=\"mget\","
                               "code=\"einval\"}") >= 1);
    double b10 = value_of(text, "atp_request_duration_seconds_bucket{protocol=\"http\","
                                "operation=\"mget\",le=\"1e-05\"}");
    double b25 = value_of(text, "atp_request_duration_seconds_bucket{protocol=\"http\","
                                "operation=\"mget\",le=\"2.5e-05\"}");
    double b1s = value_of(text, "atp_request_duration_seconds_bucket{protocol=\"http\","
                                "operation=\"mget\",le=\"1\"}");
    double inf = value_of(text, "atp_request_duration_seconds_bucket{protocol=\"http\","
                                "operation=\"mget\",le=\"+Inf\"}");
    assert_true(b10 >= 1 && b25 >= b10 + 1 && inf >= b1s + 1);
    assert_true(atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_MGET) == (uint64_t)inf);
    /* Reservation refusals per channel; the store's own counters. */
    atp_metrics_reservation(0, ATP_ECONFLICT, false);
    text = render(x);
    assert_true(value_of(text, "atp_reservations_rejected_total{channel=\"web\",reason="
                               "\"idempotency-conflict\"}") >= 1);
    assert_true(value_of(text, "atp_reservations_rejected_total{channel=\"app\",reason="
                               "\"insufficient-stock\"}") >= 0);
    assert_true(value_of(text, "atp_channels") == 2);
    int64_t oh;
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("A"), ATP_SLICE("L"), 5, &oh), 0);
    assert_true(value_of(render(x), "atp_items") == 1);
}

static void test_sources_mapped(void **state)
{
    struct fx *x = *state;
    const char *t = render(x);
    assert_true(value_of(t, "atp_connections_open") == 3);
    assert_true(value_of(t, "atp_connections_rejected_total{reason=\"max_connections\"}") == 2);
    assert_true(value_of(t, "atp_connections_closed_total{reason=\"peer\"}") == 6);
    assert_true(value_of(t, "atp_kafka_events_total{outcome=\"applied\"}") == 100);
    assert_true(value_of(t, "atp_kafka_events_total{outcome=\"dead_lettered\"}") == 2);
    assert_true(value_of(t, "atp_kafka_dead_lettered_total{reason=\"not-json\"}") == 1);
    assert_true(value_of(t, "atp_kafka_consumer_lag{topic=\"atp.events\",partition=\"0\"}") == 12);
    /* ms buckets become seconds; the us sum becomes seconds */
    assert_true(value_of(t, "atp_kafka_event_freshness_seconds_bucket{le=\"0.01\"}") == 9);
    assert_true(value_of(t, "atp_kafka_event_freshness_seconds_sum") == 0.025);
    assert_true(value_of(t, "atp_kafka_last_event_timestamp_seconds{topic=\"atp.events\","
                            "partition=\"0\"}") == 1750000000.123);
    /* an unknown name is still there, in the metric charset */
    assert_true(value_of(t, "atp_weird_name_x") == 7);
    /* durability: positions labelled by stage, microseconds to seconds */
    assert_true(value_of(t, "atp_wal_position{stage=\"synced\"}") == 41);
    assert_true(value_of(t, "atp_wal_fsync_seconds_total") == 1.5);
    assert_true(value_of(t, "atp_snapshot_duration_seconds") == 0.25);
    /* an unknown name with a unit suffix is exposed in base units */
    assert_true(value_of(t, "atp_thing_latency_seconds") == 0.0025);
    assert_non_null(strstr(t, "atp_build_info{version=\"9.9.9\"} 1"));
    assert_non_null(strstr(t, "atp_process_cpu_seconds_total "));
    assert_non_null(strstr(t, "atp_process_resident_memory_bytes "));
    assert_true(value_of(t, "atp_process_open_fds") >= 3);
}

#define NTHREADS 4
#define PER      100000

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < PER; i++)
        atp_metrics_request(ATP_MPROTO_BIN, ATP_MOP_PING, 0, (uint64_t)i);
    return NULL;
}

static void test_threads_add_up(void **state)
{
    (void)state;
    uint64_t before = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_PING);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    /* Exited threads' counts stay. */
    assert_true(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_PING) ==
                before + (uint64_t)NTHREADS * PER);
}

static void *record_few(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10; i++)
        atp_metrics_request(ATP_MPROTO_BIN, ATP_MOP_HELLO, 0, 1000);
    return NULL;
}

/*
 * A process that starts and stops servers creates threads without end:
 * the shards stay as many as the most threads that recorded at once, and
 * every count of the exited ones stays.
 */
static void test_thread_churn(void **state)
{
    (void)state;
    atp_metrics_request(ATP_MPROTO_BIN, ATP_MOP_HELLO, 0, 1000); /* this thread's shard */
    uint64_t before = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_HELLO);
    size_t shards = atp_metrics_shards();
    for (int round = 0; round < 300; round++) {
        pthread_t t[2];
        for (int i = 0; i < 2; i++)
            assert_int_equal(pthread_create(&t[i], NULL, record_few, NULL), 0);
        for (int i = 0; i < 2; i++)
            pthread_join(t[i], NULL);
    }
    assert_true(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_HELLO) == before + 300 * 2 * 10);
    assert_true(atp_metrics_shards() <= shards + 2);
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(atp_metrics_op_name(ATP_MOP_GET), "get");
    assert_string_equal(atp_metrics_op_name(-1), "other");
    assert_string_equal(atp_metrics_op_name(ATP_MOP_COUNT), "other");
    assert_string_equal(atp_metrics_proto_name(ATP_MPROTO_HTTP), "http");
    assert_string_equal(atp_metrics_proto_name(ATP_MPROTO_BIN), "bin");
    for (int i = 1; i < ATP_METRICS_BUCKETS; i++)
        assert_true(atp_metrics_bucket_ns[i] > atp_metrics_bucket_ns[i - 1]);
    assert_true(atp_metrics_bucket_ns[0] == 10000);
    assert_true(atp_metrics_bucket_ns[ATP_METRICS_BUCKETS - 1] == 1000000000);
    /* out-of-range arguments count as OTHER rather than writing anywhere */
    uint64_t before = atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_OTHER);
    atp_metrics_request(ATP_MPROTO_BIN, 999, 0, 1);
    assert_true(atp_metrics_requests(ATP_MPROTO_BIN, ATP_MOP_OTHER) == before + 1);
    atp_metrics_reservation(ATP_MAX_CHANNELS, ATP_EINSUFFICIENT, false); /* ignored */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exposition_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_counters_move, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sources_mapped, setup, teardown),
        cmocka_unit_test(test_threads_add_up),
        cmocka_unit_test(test_thread_churn),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
