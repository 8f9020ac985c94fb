/*
 * test_config.c - unit tests of atpd's configuration (src/config.c) and of
 * the log line renderer (src/log.c), the two executable modules that need
 * no sockets.
 *
 * Covers every directive kind, errors with their line numbers, the layer
 * precedence defaults < file < environment < flags, the dump round trip and
 * the logfmt / JSON quoting rules.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/error.h"
#include "config.h"
#include "log.h"

static int load(struct atp_config *cfg, const char *text, char *err, size_t errlen)
{
    return atp_config_load_text(cfg, text, strlen(text), "test.conf", err, errlen);
}

static void test_defaults(void **state)
{
    (void)state;
    struct atp_config cfg;
    char err[256];
    atp_config_init(&cfg);
    assert_string_equal(cfg.bind, "127.0.0.1");
    assert_int_equal(cfg.port, 7400);
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.nchannels, 3);
    assert_string_equal(cfg.channels[0].name, "web");
    assert_string_equal(cfg.channels[2].name, "marketplace");
    assert_int_equal(cfg.channels[2].cap, 50);
    assert_int_equal(cfg.channels[2].nlocations, 2);
    assert_int_equal(cfg.max_frame, 1u << 20);
    assert_int_equal(cfg.shutdown_timeout_ms, 5000);
    assert_int_equal(cfg.feed_wait_max_ms, 30000);
    assert_false(cfg.demo);
    assert_null(cfg.kafka_brokers);
    assert_int_equal(atp_config_validate(&cfg, err, sizeof(err)), 0);
    atp_config_free(&cfg);
}

static void test_every_directive(void **state)
{
    (void)state;
    static const char text[] = "# a comment\n"
                               "\n"
                               "   # an indented comment\n"
                               "bind ::1\n"
                               "port 0\n"
                               "port-file /tmp/atpd.port\n"
                               "workers 3\n"
                               "recv-mode plain\n"
                               "max-connections 17\n"
                               "max-frame 64kb\n"
                               "max-keys 50\n"
                               "max-lines 8\n"
                               "idle-timeout 1500ms\n"
                               "output-buffer-limit 2m\n"
                               "shutdown-timeout 7\n"
                               "log-level debug\n"
                               "log-format json\n"
                               "max-items 300000\n"
                               "max-reservations 200\n"
                               "max-ttl 2h\n"
                               "idempotency-window 15m\n"
                               "feed-size 5000\n"
                               "feed-wait-max 2500ms\n"
                               "channel web safety=2 pct=0 cap=-1 locations=all\r\n"
                               "channel marketplace-x safety=5 pct=10 cap=50 locations=DC1,DC2\n"
                               "demo yes\n"
                               "kafka-brokers \"localhost:9092,localhost:9093\"\n"
                               "kafka-topic inventory\n"
                               "kafka-group atpd-1\n"
                               "kafka.security.protocol plaintext\n"
                               "kafka.client.id atpd test\n";
    struct atp_config cfg;
    char err[256] = "";
    atp_config_init(&cfg);
    assert_int_equal(load(&cfg, text, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_string_equal(cfg.bind, "::1");
    assert_int_equal(cfg.port, 0);
    assert_string_equal(cfg.port_file, "/tmp/atpd.port");
    assert_int_equal(cfg.workers, 3);
    assert_int_equal(cfg.recv_mode, ATP_RECV_PLAIN);
    assert_int_equal(cfg.max_connections, 17);
    assert_int_equal(cfg.max_frame, 65536);
    assert_int_equal(cfg.max_keys, 50);
    assert_int_equal(cfg.max_lines, 8);
    assert_int_equal(cfg.idle_timeout_ms, 1500);
    assert_int_equal(cfg.output_buffer_limit, 2u << 20);
    assert_int_equal(cfg.shutdown_timeout_ms, 7000); /* a bare number is seconds */
    assert_int_equal(cfg.log_level, ATP_LOG_DEBUG);
    assert_int_equal(cfg.log_format, ATP_LOG_JSON);
    assert_int_equal(cfg.max_items, 300000);
    assert_int_equal(cfg.max_reservations, 200);
    assert_int_equal(cfg.max_ttl_ms, 2 * 3600 * 1000);
    assert_int_equal(cfg.idempotency_window_ms, 15 * 60 * 1000);
    assert_int_equal(cfg.feed_records, 5000);
    assert_int_equal(cfg.feed_wait_max_ms, 2500);
    struct atp_config_store sc;
    atp_config_to_store(&cfg, &sc);
    assert_int_equal(sc.store.feed_records, 8192); /* the next power of two */
    /* The file's channels replace the default set. */
    assert_int_equal(cfg.nchannels, 2);
    assert_string_equal(cfg.channels[0].name, "web");
    assert_int_equal(cfg.channels[0].safety_units, 2);
    assert_int_equal(cfg.channels[0].cap, -1);
    assert_int_equal(cfg.channels[0].nlocations, 0);
    assert_string_equal(cfg.channels[1].name, "marketplace-x");
    assert_int_equal(cfg.channels[1].safety_units, 5);
    assert_int_equal(cfg.channels[1].safety_pct, 10);
    assert_int_equal(cfg.channels[1].cap, 50);
    assert_int_equal(cfg.channels[1].nlocations, 2);
    assert_string_equal(cfg.channels[1].locations[0], "DC1");
    assert_string_equal(cfg.channels[1].locations[1], "DC2");
    assert_true(cfg.demo);
    assert_string_equal(cfg.kafka_brokers, "localhost:9092,localhost:9093");
    assert_string_equal(cfg.kafka_topic, "inventory");
    assert_string_equal(cfg.kafka_group, "atpd-1");
    assert_int_equal(cfg.nkafka_props, 2);
    assert_string_equal(cfg.kafka_props[0].key, "security.protocol");
    assert_string_equal(cfg.kafka_props[0].value, "plaintext");
    assert_string_equal(cfg.kafka_props[1].key, "client.id");
    assert_string_equal(cfg.kafka_props[1].value, "atpd test");
    assert_int_equal(atp_config_validate(&cfg, err, sizeof(err)), 0);

    /* A later line wins, for a kafka property too. */
    assert_int_equal(load(&cfg, "kafka.client.id other\nport 9\n", err, sizeof(err)), 0);
    assert_int_equal(cfg.nkafka_props, 2);
    assert_string_equal(cfg.kafka_props[1].value, "other");
    assert_int_equal(cfg.port, 9);
    atp_config_free(&cfg);
}

struct bad_case {
    const char *text;
    const char *expect; /* substring of the message, line number included */
};

static void test_errors_with_line_numbers(void **state)
{
    (void)state;
    static const struct bad_case cases[] = {
        {"port 1\n\n# c\nbogus 3\n", "test.conf:4: unknown directive 'bogus'"},
        {"port 70000\n", "test.conf:1: port: expected an integer in 0..65535"},
        {"port -1\n", "test.conf:1: port"},
        {"port 12abc\n", "test.conf:1: port"},
        {"port\n", "test.conf:1: port: missing value"},
        {"workers many\n", "workers"},
        {"bind localhost\n", "bind: expected a numeric IPv4 or IPv6 address"},
        {"\n\nidle-timeout 5x\n", "test.conf:3: idle-timeout: expected a duration"},
        {"max-ttl 0\n", "max-ttl"},
        {"max-frame 10\n", "max-frame: expected a size"},
        {"max-frame 4q\n", "max-frame"},
        {"output-buffer-limit 99999999999999999999\n", "output-buffer-limit"},
        {"max-lines 33\n", "max-lines"},
        {"demo maybe\n", "demo: expected yes or no"},
        {"log-level loud\n", "log-level"},
        {"log-format xml\n", "log-format"},
        {"recv-mode fast\n", "recv-mode"},
        {"channel web pct=101\n", "channel web: pct must be an integer in 0..100"},
        {"channel web safety=-1\n", "safety"},
        {"channel web cap=x\n", "cap"},
        {"channel we$b\n", "channel: invalid name"},
        {"channel web colour=red\n", "unknown attribute 'colour'"},
        {"channel web safety\n", "expected key=value"},
        {"channel web locations=DC1,DC1\n", "listed twice"},
        {"channel web locations=DC1,,DC2\n", "invalid location"},
        {"channel web locations=D@1\n", "invalid location"},
        {"channel abcdefghijabcdefghijabcdefghijabc\n", "channel: invalid name"},
        {"kafka. x\n", "property name"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct atp_config cfg;
        char err[512] = "";
        atp_config_init(&cfg);
        int rc = load(&cfg, cases[i].text, err, sizeof(err));
        if (rc == 0 || strstr(err, cases[i].expect) == NULL)
            fail_msg("case %zu (%s): rc %d, message '%s', expected '%s'", i, cases[i].text, rc, err,
                     cases[i].expect);
        atp_config_free(&cfg);
    }
}

static void test_too_many_channels(void **state)
{
    (void)state;
    char text[4096] = "";
    size_t n = 0;
    for (int i = 0; i <= ATP_MAX_CHANNELS; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "channel c%d safety=1\n", i);
    struct atp_config cfg;
    char err[256] = "";
    atp_config_init(&cfg);
    assert_int_equal(load(&cfg, text, err, sizeof(err)), ATP_EINVAL);
    char expect[64];
    snprintf(expect, sizeof(expect), "test.conf:%d:", ATP_MAX_CHANNELS + 1);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "more than"));
    atp_config_free(&cfg);
}

static void test_precedence(void **state)
{
    (void)state;
    struct atp_config cfg;
    char err[256] = "";
    char *env[] = {
        "ATPD_PORT=2000",
        "ATPD_MAX_CONNECTIONS=55",
        "ATPD_IDLE_TIMEOUT=2s",
        "ATPD_CHANNEL=envweb safety=1; envapp cap=3 locations=X1",
        "ATPD_BIN=/some/path/not/a/directive", /* other ATPD_ names are ignored */
        "PORT=1",
        NULL,
    };

    /* defaults < file */
    atp_config_init(&cfg);
    assert_int_equal(load(&cfg,
                          "port 1000\nworkers 2\nmax-connections 9\n"
                          "channel filechan safety=4\n",
                          err, sizeof(err)),
                     0);
    assert_int_equal(cfg.port, 1000);
    assert_int_equal(cfg.nchannels, 1);
    assert_int_equal(cfg.channels_layer, ATP_CONF_FILE);

    /* file < environment */
    assert_int_equal(atp_config_load_env(&cfg, env, err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 2000);
    assert_int_equal(cfg.workers, 2); /* untouched by the environment */
    assert_int_equal(cfg.max_connections, 55);
    assert_int_equal(cfg.idle_timeout_ms, 2000);
    assert_int_equal(cfg.nchannels, 2); /* the environment's set replaced the file's */
    assert_string_equal(cfg.channels[0].name, "envweb");
    assert_string_equal(cfg.channels[1].name, "envapp");
    assert_int_equal(cfg.channels[1].cap, 3);
    assert_string_equal(cfg.channels[1].locations[0], "X1");

    /* environment < flags */
    assert_int_equal(atp_config_set(&cfg, ATP_CONF_FLAG, "port", "3000", err, sizeof(err)), 0);
    assert_int_equal(atp_config_set(&cfg, ATP_CONF_FLAG, "channel", "flagchan", err, sizeof(err)),
                     0);
    assert_int_equal(
        atp_config_set(&cfg, ATP_CONF_FLAG, "channel", "flagchan2 cap=1", err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 3000);
    assert_int_equal(cfg.max_connections, 55);
    assert_int_equal(cfg.nchannels, 2);
    assert_string_equal(cfg.channels[0].name, "flagchan");
    assert_string_equal(cfg.channels[1].name, "flagchan2");
    atp_config_free(&cfg);

    /* The demo needs room for its catalogue. */
    atp_config_init(&cfg);
    assert_int_equal(load(&cfg, "demo yes\nmax-items 1000\n", err, sizeof(err)), 0);
    assert_int_equal(atp_config_validate(&cfg, err, sizeof(err)), ATP_EINVAL);
    assert_non_null(strstr(err, "demo needs max-items"));
    atp_config_free(&cfg);

    /* A bad environment value names the variable. */
    char *bad[] = {"ATPD_WORKERS=lots", NULL};
    atp_config_init(&cfg);
    assert_int_equal(atp_config_load_env(&cfg, bad, err, sizeof(err)), ATP_EINVAL);
    assert_non_null(strstr(err, "ATPD_WORKERS"));
    atp_config_free(&cfg);

    /* Unknown names fail through atp_config_set as well. */
    atp_config_init(&cfg);
    assert_int_equal(atp_config_set(&cfg, ATP_CONF_FLAG, "prot", "1", err, sizeof(err)),
                     ATP_EINVAL);
    assert_non_null(strstr(err, "unknown directive 'prot'"));
    atp_config_free(&cfg);
}

static void test_duration_and_size(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(atp_config_parse_duration_ms("250ms", 1000, &v), 0);
    assert_int_equal(v, 250);
    assert_int_equal(atp_config_parse_duration_ms("3", 1000, &v), 0);
    assert_int_equal(v, 3000);
    assert_int_equal(atp_config_parse_duration_ms("2m", 1000, &v), 0);
    assert_int_equal(v, 120000);
    assert_int_equal(atp_config_parse_duration_ms("1d", 1000, &v), 0);
    assert_int_equal(v, 86400000);
    v = 77;
    assert_int_equal(atp_config_parse_duration_ms("", 1000, &v), ATP_EINVAL);
    assert_int_equal(atp_config_parse_duration_ms("-1s", 1000, &v), ATP_EINVAL);
    assert_int_equal(atp_config_parse_duration_ms("1 s", 1000, &v), ATP_EINVAL);
    assert_int_equal(atp_config_parse_duration_ms("99999999999999999d", 1000, &v), ATP_EINVAL);
    assert_int_equal(v, 77); /* untouched on failure */
    assert_int_equal(atp_config_parse_size("4kb", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(atp_config_parse_size("1G", &v), 0);
    assert_int_equal(v, 1u << 30);
    assert_int_equal(atp_config_parse_size("12", &v), 0);
    assert_int_equal(v, 12);
    assert_int_equal(atp_config_parse_size("12t", &v), ATP_EINVAL);
    assert_int_equal(v, 12);
}

static char *dump(const struct atp_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    atp_config_dump(cfg, f);
    fclose(f);
    return buf;
}

static void test_dump_round_trip(void **state)
{
    (void)state;
    struct atp_config a, b;
    char err[256] = "";
    atp_config_init(&a);
    assert_int_equal(load(&a,
                          "port 0\nidle-timeout 1500ms\nmax-ttl 90m\noutput-buffer-limit 100000\n"
                          "kafka-brokers a:1\nkafka.acks all\nkafka.client.id \"x y\"\n"
                          "channel c1 safety=3 pct=7 cap=9 locations=L1,L2,L3\nchannel c2\n",
                          err, sizeof(err)),
                     0);
    char *t1 = dump(&a);
    atp_config_init(&b);
    assert_int_equal(load(&b, t1, err, sizeof(err)), 0);
    char *t2 = dump(&b);
    assert_string_equal(t1, t2);
    assert_non_null(strstr(t1, "idle-timeout 1500ms\n"));
    assert_non_null(strstr(t1, "max-ttl 90m\n"));
    assert_non_null(strstr(t1, "channel c1 safety=3 pct=7 cap=9 locations=L1,L2,L3\n"));
    assert_non_null(strstr(t1, "kafka.client.id \"x y\"\n"));
    free(t1);
    free(t2);
    atp_config_free(&a);
    atp_config_free(&b);

    /* The defaults dump and load back too. */
    atp_config_init(&a);
    t1 = dump(&a);
    atp_config_init(&b);
    assert_int_equal(load(&b, t1, err, sizeof(err)), 0);
    t2 = dump(&b);
    assert_string_equal(t1, t2);
    free(t1);
    free(t2);
    atp_config_free(&a);
    atp_config_free(&b);
}

static void test_load_file(void **state)
{
    (void)state;
    struct atp_config cfg;
    char err[512] = "";
    atp_config_init(&cfg);
    assert_int_equal(atp_config_load_file(&cfg, "/nonexistent/atpd.conf", err, sizeof(err)),
                     -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/atpd.conf"));

    char path[] = "/tmp/atpd-test-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "port 4242\nmax-keys 7\nnonsense here\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)sizeof(text) - 1);
    close(fd);
    assert_int_equal(atp_config_load_file(&cfg, path, err, sizeof(err)), ATP_EINVAL);
    char expect[128];
    snprintf(expect, sizeof(expect), "%s:3: unknown directive 'nonsense'", path);
    assert_string_equal(err, expect);
    assert_int_equal(cfg.port, 4242); /* lines before the error were applied */
    unlink(path);
    atp_config_free(&cfg);
}

static void test_to_store(void **state)
{
    (void)state;
    struct atp_config cfg;
    struct atp_config_store sc;
    char err[256];
    atp_config_init(&cfg);
    assert_int_equal(
        load(&cfg, "max-items 5000\nmax-reservations 300\nmax-ttl 1h\n", err, sizeof(err)), 0);
    atp_config_to_store(&cfg, &sc);
    assert_int_equal(sc.store.max_items, 5000);
    assert_int_equal(sc.store.max_skus, 5000);
    assert_int_equal(sc.store.max_reservations, 300);
    assert_int_equal(sc.store.max_ttl_ms, 3600 * 1000);
    assert_int_equal(sc.store.nchannels, 3);
    assert_string_equal(sc.store.channels[2].name, "marketplace");
    assert_int_equal(sc.store.channels[2].nlocations, 2);
    assert_string_equal(sc.store.channels[2].locations[1], "DC2");
    assert_null(sc.store.channels[0].locations);
    /* The store accepts what the config describes. */
    struct atp_store *store = NULL;
    assert_int_equal(atp_store_new(&sc.store, &store), 0);
    assert_int_equal(atp_store_channel_count(store), 3);
    atp_store_free(store);
    atp_config_free(&cfg);
}

static void test_directive_table(void **state)
{
    (void)state;
    /* Every directive the issue names is there, and each has help text. */
    static const char *const must[] = {
        "bind",
        "port",
        "workers",
        "max-connections",
        "max-frame",
        "idle-timeout",
        "output-buffer-limit",
        "log-level",
        "log-format",
        "max-items",
        "max-reservations",
        "max-ttl",
        "idempotency-window",
        "feed-size",
        "feed-wait-max",
        "channel",
        "demo",
        "kafka-brokers",
        "kafka-topic",
        "kafka-group",
    };
    for (size_t m = 0; m < sizeof(must) / sizeof(must[0]); m++) {
        bool found = false;
        for (size_t i = 0; atp_config_directive(i); i++)
            if (strcmp(atp_config_directive(i)->name, must[m]) == 0) {
                found = true;
                assert_true(strlen(atp_config_directive(i)->help) > 0);
            }
        if (!found)
            fail_msg("directive %s missing", must[m]);
    }
}

/* The sample atpd.conf parses and states exactly the built-in defaults. */
static const char *g_sample_path;

static void test_sample_file_is_the_defaults(void **state)
{
    (void)state;
    if (g_sample_path == NULL)
        skip();
    struct atp_config a, b;
    char err[512] = "";
    atp_config_init(&a);
    atp_config_init(&b);
    if (atp_config_load_file(&b, g_sample_path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(atp_config_validate(&b, err, sizeof(err)), 0);
    char *ta = dump(&a), *tb = dump(&b);
    assert_string_equal(ta, tb);
    free(ta);
    free(tb);
    atp_config_free(&a);
    atp_config_free(&b);
}

/* --- log rendering --------------------------------------------------------- */

static void test_log_logfmt(void **state)
{
    (void)state;
    char line[512];
    const struct atp_log_field fields[] = {
        LOG_STR("addr", "127.0.0.1:7400"),
        LOG_UINT("workers", 2),
        LOG_INT("delta", -5),
        LOG_STR("note", "two words"),
        LOG_STR("q", "a\"b"),
        LOG_STR("empty", ""),
        LOG_BOOL("ok", true),
        {NULL, ATP_LOG_F_END, {.u = 0}},
    };
    size_t n = atp_log_render(line, sizeof(line), ATP_LOG_LOGFMT, 1700000000123456ull, ATP_LOG_INFO,
                              "listening", fields);
    line[n] = '\0';
    assert_string_equal(line, "ts=2023-11-14T22:13:20.123Z level=info msg=listening "
                              "addr=127.0.0.1:7400 workers=2 delta=-5 note=\"two words\" "
                              "q=\"a\\\"b\" empty=\"\" ok=true\n");
    n = atp_log_render(line, sizeof(line), ATP_LOG_LOGFMT, 0, ATP_LOG_WARN, "two words", NULL);
    line[n] = '\0';
    assert_string_equal(line, "ts=1970-01-01T00:00:00.000Z level=warn msg=\"two words\"\n");
}

static void test_log_json(void **state)
{
    (void)state;
    char line[512];
    const struct atp_log_field fields[] = {
        LOG_STR("addr", "127.0.0.1:7400"),
        LOG_UINT("n", 3),
        LOG_STR("ctl", "a\nb\x01"),
        {NULL, ATP_LOG_F_END, {.u = 0}},
    };
    size_t n = atp_log_render(line, sizeof(line), ATP_LOG_JSON, 1700000000123456ull, ATP_LOG_ERROR,
                              "listening", fields);
    line[n] = '\0';
    assert_string_equal(line, "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"level\":\"error\","
                              "\"msg\":\"listening\",\"addr\":\"127.0.0.1:7400\",\"n\":3,"
                              "\"ctl\":\"a\\nb\\u0001\"}\n");
}

static void test_log_truncation(void **state)
{
    (void)state;
    char big[3000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const struct atp_log_field fields[] = {
        LOG_UINT("first", 1),
        LOG_STR("big", big),
        LOG_UINT("after", 2),
        {NULL, ATP_LOG_F_END, {.u = 0}},
    };
    char line[256];
    for (int fmt = 0; fmt < 2; fmt++) {
        size_t n = atp_log_render(line, sizeof(line), (enum atp_log_format)fmt, 0, ATP_LOG_INFO,
                                  "m", fields);
        assert_true(n <= sizeof(line));
        assert_int_equal(line[n - 1], '\n');
        line[n - 1] = '\0';
        assert_null(strstr(line, "xxx")); /* the field that did not fit is left out */
        assert_null(strstr(line, "after"));
        if (fmt == ATP_LOG_JSON)
            assert_non_null(strstr(line, "\"first\":1,\"truncated\":true}"));
        else
            assert_non_null(strstr(line, "first=1 truncated=true"));
    }
    assert_int_equal(atp_log_level_parse("warn"), ATP_LOG_WARN);
    assert_int_equal(atp_log_level_parse("loud"), -1);
    assert_int_equal(atp_log_format_parse("json"), ATP_LOG_JSON);
    assert_int_equal(atp_log_format_parse("yaml"), -1);
}

int main(int argc, char **argv)
{
    g_sample_path = argc > 1 ? argv[1] : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_directive),
        cmocka_unit_test(test_errors_with_line_numbers),
        cmocka_unit_test(test_too_many_channels),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_duration_and_size),
        cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_to_store),
        cmocka_unit_test(test_directive_table),
        cmocka_unit_test(test_sample_file_is_the_defaults),
        cmocka_unit_test(test_log_logfmt),
        cmocka_unit_test(test_log_json),
        cmocka_unit_test(test_log_truncation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
