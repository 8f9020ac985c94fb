/*
 * test_ingest.c - the Kafka consumer against librdkafka's mock cluster
 * (include/atp/ingest.h, protocol/EVENTS.md), suite `integration`.
 *
 * Each test starts its own mock cluster in-process (or lets the ingest start
 * its embedded one), produces events with librdkafka, and checks what the
 * store shows and what the ingest counted: events become visible; duplicates
 * and stale sets are skipped; every dead-letter reason lands on the DLQ topic
 * with its headers; a poison message does not stop its partition; a restart
 * resumes from atpd's own offsets; broker faults lose nothing and apply
 * nothing twice; a retention gap is detected every time; events and
 * reservations interleave without oversell. Every wait is bounded.
 *
 * ATP_TEST_VERBOSE=1 prints the ingest's log lines.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "atp/event.h"
#include "atp/ingest.h"
#include "atp/store.h"

#define WAIT_MS 20000 /* longest wait for anything that should happen */

static int verbose;

/* --- helpers ---------------------------------------------------------------- */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static _Atomic int log_errors;

static void test_log(void *arg, int level, const char *msg)
{
    if (level >= ATP_INGEST_LOG_ERROR)
        atomic_fetch_add(&log_errors, 1);
    if (verbose)
        fprintf(stderr, "  [%s] %s%s\n", (const char *)arg,
                level == 3   ? "ERROR "
                : level == 2 ? "WARN "
                             : "",
                msg);
}

static const struct atp_channel_config channels[] = {
    {.name = "web", .cap = -1},
};

static struct atp_store *new_store(void)
{
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 1 << 14;
    cfg.max_skus = 1 << 14;
    cfg.max_reservations = 1 << 12;
    cfg.max_overrides = 64;
    cfg.nshards = 8;
    cfg.channels = channels;
    cfg.nchannels = 1;
    struct atp_store *s = NULL;
    assert_int_equal(atp_store_new(&cfg, &s), 0);
    return s;
}

/* A mock cluster of the test's own, for fault injection. */
struct cluster {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mc;
    const char *bootstrap;
};

static void cluster_start(struct cluster *c, int brokers)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    c->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(c->rk);
    c->mc = rd_kafka_mock_cluster_new(c->rk, brokers);
    assert_non_null(c->mc);
    c->bootstrap = rd_kafka_mock_cluster_bootstraps(c->mc);
}

static void cluster_topic(struct cluster *c, const char *topic, int partitions)
{
    char dlq[256];
    assert_int_equal(rd_kafka_mock_topic_create(c->mc, topic, partitions, 1), 0);
    snprintf(dlq, sizeof(dlq), "%s.dlq", topic);
    assert_int_equal(rd_kafka_mock_topic_create(c->mc, dlq, 1, 1), 0);
}

static void cluster_stop(struct cluster *c)
{
    rd_kafka_mock_cluster_destroy(c->mc);
    rd_kafka_destroy(c->rk);
}

static rd_kafka_t *producer(const char *bootstrap, const char *const *extra)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    assert_int_equal(
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    rd_kafka_conf_set(conf, "linger.ms", "2", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", verbose ? "6" : "0", NULL, 0);
    if (getenv("ATP_TEST_PDEBUG")) /* producer debug contexts, e.g. msg,broker */
        rd_kafka_conf_set(conf, "debug", getenv("ATP_TEST_PDEBUG"), NULL, 0);
    for (; extra && extra[0]; extra += 2)
        assert_int_equal(rd_kafka_conf_set(conf, extra[0], extra[1], errstr, sizeof(errstr)),
                         RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(rk);
    return rk;
}

/* Produce one message (key may be NULL); partition -1: by key. */
static void produce(rd_kafka_t *p, const char *topic, int32_t partition, const char *key,
                    const void *value, size_t len)
{
    rd_kafka_resp_err_t err;
    for (int i = 0; i < 1000; i++) {
        err = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(topic),
            RD_KAFKA_V_PARTITION(partition < 0 ? RD_KAFKA_PARTITION_UA : partition),
            RD_KAFKA_V_KEY(key, key ? strlen(key) : 0), RD_KAFKA_V_VALUE((void *)value, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(p, 10);
    }
    assert_int_equal(err, 0);
}

static void producef(rd_kafka_t *p, const char *topic, int32_t partition, const char *key,
                     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void producef(rd_kafka_t *p, const char *topic, int32_t partition, const char *key,
                     const char *fmt, ...)
{
    char buf[8192];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof(buf));
    produce(p, topic, partition, key, buf, (size_t)n);
}

static void flush(rd_kafka_t *p)
{
    assert_int_equal(rd_kafka_flush(p, WAIT_MS), 0);
}

/* An adjust event: +delta receipt of sku at loc. */
static void produce_adjust(rd_kafka_t *p, const char *topic, const char *sku, const char *loc,
                           int64_t delta, const char *event_id)
{
    producef(p, topic, -1, sku,
             "{\"event_id\":\"%s\",\"type\":\"adjust\",\"sku\":\"%s\",\"loc\":\"%s\","
             "\"delta\":%lld,\"reason\":\"%s\"}",
             event_id, sku, loc, (long long)delta, delta > 0 ? "receipt" : "pick");
}

static const char *session_ms = "3000";

static struct atp_ingest *ingest_new(const char *name, const char *bootstrap, const char *topic,
                                     const char *group, struct atp_store *store,
                                     struct atp_ingest_config *cfg_in)
{
    struct atp_ingest_config cfg;
    if (cfg_in)
        cfg = *cfg_in;
    else
        atp_ingest_config_defaults(&cfg);
    const char *topics[] = {topic, NULL};
    cfg.brokers = bootstrap;
    cfg.topics = topics;
    cfg.group_id = group;
    cfg.log = test_log;
    cfg.log_arg = (void *)name;
    /* Short sessions: the mock cluster makes a member that joins after
     * another left wait for the session timeout (less 1 s). */
    static struct atp_ingest_kv kv[4];
    if (!cfg.kafka) {
        kv[0] = (struct atp_ingest_kv){"session.timeout.ms", session_ms};
        kv[1] = (struct atp_ingest_kv){"heartbeat.interval.ms", "500"};
        kv[2] = (struct atp_ingest_kv){"debug", getenv("ATP_TEST_DEBUG")}; /* e.g. cgrp,fetch */
        if (!kv[2].value)
            kv[2].key = NULL;
        cfg.kafka = kv;
    }
    struct atp_ingest *ing = NULL;
    assert_int_equal(atp_ingest_new(&cfg, store, &ing), 0);
    assert_non_null(ing);
    return ing;
}

static struct atp_ingest_stats stats(const struct atp_ingest *ing)
{
    struct atp_ingest_stats s;
    atp_ingest_stats(ing, &s);
    return s;
}

/* Wait until the ingest has settled `n` messages (consumed). */
static void wait_consumed(const struct atp_ingest *ing, uint64_t n)
{
    /* consumed counts a message when its handling starts; wait for its
     * outcome too, so the counters (and the store) include its effect. */
    uint64_t deadline = mono_ms() + WAIT_MS;
    for (;;) {
        struct atp_ingest_stats s = stats(ing);
        uint64_t settled = s.applied + s.duplicates + s.stale_sets + s.dead_lettered;
        if ((s.consumed >= n && settled == s.consumed) || mono_ms() >= deadline)
            break;
        sleep_ms(10);
    }
    struct atp_ingest_stats s = stats(ing);
    if (s.consumed != n)
        print_error("consumed %llu, want %llu\n", (unsigned long long)s.consumed,
                    (unsigned long long)n);
    assert_int_equal(s.consumed, n);
}

static bool wait_ready(const struct atp_ingest *ing, bool want, unsigned ms)
{
    uint64_t deadline = mono_ms() + ms;
    while (atp_ingest_ready(ing) != want && mono_ms() < deadline)
        sleep_ms(10);
    return atp_ingest_ready(ing) == want;
}

static int64_t on_hand(struct atp_store *s, const char *sku, const char *loc)
{
    struct atp_breakdown b;
    int rc = atp_store_get(s, atp_slice_cstr(sku), atp_slice_cstr(loc), 0, &b);
    return rc == 0 ? b.on_hand : rc;
}

/* Every settled message is exactly one of these. */
static void assert_balanced(const struct atp_ingest_stats *s)
{
    assert_int_equal(s->consumed, s->applied + s->duplicates + s->stale_sets + s->dead_lettered);
    uint64_t by_reason = 0;
    for (int r = 0; r < ATP_DLQ_COUNT; r++)
        by_reason += s->dead_by_reason[r];
    assert_int_equal(by_reason, s->dead_lettered);
}

/* --- reading the dead-letter topic ------------------------------------------ */

struct dead {
    char reason[64];
    char detail[200];
    char error[64];
    char src_topic[128];
    int64_t src_partition;
    int64_t src_offset;
    char *value;
    size_t len;
    char key[128];
};

static void hdr(rd_kafka_headers_t *h, const char *name, char *out, size_t cap)
{
    const void *v;
    size_t n;
    out[0] = 0;
    if (h && rd_kafka_header_get_last(h, name, &v, &n) == 0 && v) {
        n = n < cap - 1 ? n : cap - 1;
        memcpy(out, v, n);
        out[n] = 0;
    }
}

/* Read exactly `want` dead letters from partition 0 of `topic`. */
static size_t read_dlq(const char *bootstrap, const char *topic, struct dead *out, size_t want)
{
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "group.id", "dlq-reader", NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    assert_non_null(c);
    rd_kafka_poll_set_consumer(c);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(c, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    size_t n = 0;
    uint64_t deadline = mono_ms() + WAIT_MS;
    while (n < want && mono_ms() < deadline) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 100);
        if (!m)
            continue;
        if (!m->err) {
            struct dead *d = &out[n++];
            rd_kafka_headers_t *h = NULL;
            char num[32];
            rd_kafka_message_headers(m, &h);
            hdr(h, "atp-reason", d->reason, sizeof(d->reason));
            hdr(h, "atp-detail", d->detail, sizeof(d->detail));
            hdr(h, "atp-error", d->error, sizeof(d->error));
            hdr(h, "atp-source-topic", d->src_topic, sizeof(d->src_topic));
            hdr(h, "atp-source-partition", num, sizeof(num));
            d->src_partition = num[0] ? strtoll(num, NULL, 10) : -1;
            hdr(h, "atp-source-offset", num, sizeof(num));
            d->src_offset = num[0] ? strtoll(num, NULL, 10) : -1;
            d->len = m->len;
            d->value = malloc(m->len + 1);
            memcpy(d->value, m->payload, m->len);
            d->value[m->len] = 0;
            size_t kl = m->key_len < sizeof(d->key) - 1 ? m->key_len : sizeof(d->key) - 1;
            memcpy(d->key, m->key, kl);
            d->key[kl] = 0;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(c);
    rd_kafka_destroy(c);
    return n;
}

static void collect_count(void *arg, const char *name, int64_t value)
{
    (void)name;
    (void)value;
    (*(int *)arg)++;
}

/* --- tests ------------------------------------------------------------------ */

/* No brokers configured: the embedded cluster; events become visible. */
static void test_embedded_visible(void **state)
{
    (void)state;
    struct atp_store *store = new_store();
    struct atp_ingest *ing = ingest_new("embedded", NULL, "atp.events", "g-embedded", store, NULL);
    const char *bs = atp_ingest_bootstrap(ing);
    assert_true(atp_ingest_embedded(ing));
    assert_non_null(strstr(bs, "127.0.0.1:"));
    assert_false(atp_ingest_ready(ing)); /* not started */

    uint64_t t0 = mono_ms();
    assert_int_equal(atp_ingest_start(ing), 0);
    assert_int_equal(atp_ingest_start(ing), -EBUSY);
    rd_kafka_t *p = producer(bs, NULL);
    char id[32], sku[32];
    for (int i = 0; i < 100; i++) {
        snprintf(id, sizeof(id), "e-%d", i);
        snprintf(sku, sizeof(sku), "SKU-%d", i % 10);
        produce_adjust(p, "atp.events", sku, "DC1", i + 1, id);
    }
    flush(p);
    wait_consumed(ing, 100);
    if (verbose)
        fprintf(stderr, "  100 events applied %llu ms after start\n",
                (unsigned long long)(mono_ms() - t0));
    struct atp_ingest_stats s = stats(ing);
    assert_int_equal(s.applied, 100);
    assert_balanced(&s);
    for (int k = 0; k < 10; k++) {
        int64_t want = 0;
        for (int i = k; i < 100; i += 10)
            want += i + 1;
        snprintf(sku, sizeof(sku), "SKU-%d", k);
        assert_int_equal(on_hand(store, sku, "DC1"), want);
    }
    assert_true(wait_ready(ing, true, WAIT_MS));
    struct atp_ingest_status st;
    atp_ingest_status(ing, &st);
    assert_true(st.running && st.assigned && st.ready);
    assert_int_equal(st.partitions, 4); /* embedded topics have 4 partitions */
    assert_int_equal(st.max_lag, 0);
    assert_int_equal(s.fresh_count, 100);
    assert_true(s.fresh_sum_us > 0);

    int n = 0;
    atp_ingest_collect(ing, collect_count, &n);
    assert_true(n > 20);

    rd_kafka_destroy(p);
    atp_ingest_stop(ing);
    atp_ingest_stop(ing); /* twice is fine */
    assert_false(atp_ingest_ready(ing));
    atp_ingest_free(ing);
    atp_ingest_free(NULL);
    atp_store_free(store);
}

/*
 * The on_applied hook: every settled message once, in offset order. It runs
 * on the consumer thread, after the counters move, so the test reads what it
 * recorded under its mutex once it has seen as many calls as it waits for.
 */
struct outcomes {
    pthread_mutex_t mu;
    int n[5];
    int calls;
    int64_t last_offset;
    bool ordered;
};

static void count_outcome(void *arg, const struct atp_ingest_applied *a)
{
    struct outcomes *o = arg;
    pthread_mutex_lock(&o->mu);
    if (a->outcome >= 1 && a->outcome <= 4)
        o->n[a->outcome]++;
    if (a->offset != o->last_offset + 1 || a->stale || !a->topic ||
        (a->outcome != ATP_INGEST_DEAD_LETTERED && !a->ev))
        o->ordered = false;
    o->last_offset = a->offset;
    o->calls++;
    pthread_mutex_unlock(&o->mu);
}

/* A copy of what the hook recorded once it has been called `calls` times. */
static struct outcomes outcomes_after(struct outcomes *o, int calls)
{
    uint64_t deadline = mono_ms() + WAIT_MS;
    struct outcomes copy;
    for (;;) {
        pthread_mutex_lock(&o->mu);
        copy = *o;
        pthread_mutex_unlock(&o->mu);
        if (copy.calls >= calls || mono_ms() >= deadline)
            break;
        sleep_ms(10);
    }
    assert_int_equal(copy.calls, calls);
    return copy;
}

/* Duplicates inside the window, stale sets, and the window's bounds. */
static void test_duplicates_and_stale(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "dup", 1);
    struct atp_store *store = new_store();
    struct atp_ingest_config cfg;
    atp_ingest_config_defaults(&cfg);
    cfg.dedupe_events = 4;
    cfg.dedupe_ms = 1500;
    struct outcomes oc = {.mu = PTHREAD_MUTEX_INITIALIZER, .last_offset = -1, .ordered = true};
    cfg.on_applied = count_outcome;
    cfg.on_applied_arg = &oc;
    struct atp_ingest *ing = ingest_new("dup", c.bootstrap, "dup", "g-dup", store, &cfg);
    assert_int_equal(atp_ingest_start(ing), 0);
    rd_kafka_t *p = producer(c.bootstrap, NULL);

    const char *set = "{\"event_id\":\"%s\",\"type\":\"set\",\"sku\":\"A\",\"loc\":\"L\","
                      "\"on_hand\":%d,\"seq\":%d}";
    produce_adjust(p, "dup", "A", "L", 10, "e1");   /* applied: 10 */
    produce_adjust(p, "dup", "A", "L", 10, "e1");   /* duplicate */
    producef(p, "dup", -1, "A", set, "s5", 100, 5); /* applied: 100 */
    producef(p, "dup", -1, "A", set, "s4", 50, 4);  /* stale: older */
    producef(p, "dup", -1, "A", set, "s5b", 60, 5); /* stale: not newer */
    producef(p, "dup", -1, "A", set, "s5", 100, 5); /* duplicate (and stale) */
    produce_adjust(p, "dup", "A", "L", 1, "e6");    /* applied: 101; e1 leaves the window */
    produce_adjust(p, "dup", "A", "L", 10, "e1");   /* outside the window: applied, 111 */
    flush(p);
    wait_consumed(ing, 8);
    struct atp_ingest_stats s = stats(ing);
    assert_int_equal(s.applied, 4);
    assert_int_equal(s.duplicates, 2);
    assert_int_equal(s.stale_sets, 2);
    assert_int_equal(s.dead_lettered, 0);
    assert_balanced(&s);
    assert_int_equal(on_hand(store, "A", "L"), 111);
    struct outcomes seen = outcomes_after(&oc, 8);
    assert_true(seen.ordered);
    assert_int_equal(seen.n[ATP_INGEST_APPLIED], 4);
    assert_int_equal(seen.n[ATP_INGEST_DUPLICATE], 2);
    assert_int_equal(seen.n[ATP_INGEST_STALE], 2);
    assert_int_equal(seen.n[ATP_INGEST_DEAD_LETTERED], 0);

    /* Within 1.5 s e6 is a duplicate; after that, it has aged out. */
    produce_adjust(p, "dup", "A", "L", 1, "e6");
    flush(p);
    wait_consumed(ing, 9);
    assert_int_equal(stats(ing).duplicates, 3);
    sleep_ms(1600);
    produce_adjust(p, "dup", "A", "L", 1, "e6");
    flush(p);
    wait_consumed(ing, 10);
    assert_int_equal(stats(ing).applied, 5);
    assert_int_equal(on_hand(store, "A", "L"), 112);

    rd_kafka_destroy(p);
    atp_ingest_free(ing);
    atp_store_free(store);
    cluster_stop(&c);
}

/* Every dead-letter reason reaches the DLQ topic with its headers and bytes. */
static void test_dead_letters(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "bad", 1);
    struct atp_store *store = new_store();
    struct atp_ingest_config cfg;
    atp_ingest_config_defaults(&cfg);
    cfg.limits.max_bytes = 1024;
    struct atp_ingest *ing = ingest_new("dlq", c.bootstrap, "bad", "g-dlq", store, &cfg);
    assert_int_equal(atp_ingest_start(ing), 0);
    rd_kafka_t *p = producer(c.bootstrap, NULL);

    char big[2000], deep[512], longsku[80];
    memset(big, ' ', sizeof(big));
    big[0] = '{';
    big[sizeof(big) - 1] = '}';
    int n =
        snprintf(deep, sizeof(deep), "{\"event_id\":\"d\",\"type\":\"resync_complete\",\"x-a\":");
    for (int i = 0; i < 20; i++)
        deep[n++] = '[';
    for (int i = 0; i < 20; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = 0;
    memset(longsku, 'S', 65);
    longsku[65] = 0;
    char longsku_ev[256];
    snprintf(longsku_ev, sizeof(longsku_ev),
             "{\"event_id\":\"l\",\"type\":\"adjust\",\"sku\":\"%s\",\"loc\":\"L\",\"delta\":1,"
             "\"reason\":\"receipt\"}",
             longsku);

    static const char nonutf8[] = "{\"event_id\":\"\xff\xfe\",\"type\":\"resync_complete\"}";
    struct {
        const char *key;
        const char *value;
        size_t len;
        const char *reason;
    } cases[] = {
        {"S", "not json at all", 0, "not-json"},
        {"S", nonutf8, 0, "not-json"},
        {"S", big, sizeof(big), "too-large"},
        {"S", deep, 0, "too-deep"},
        {"S", "[1,2,3]", 0, "not-object"},
        {"S", "{\"event_id\":\"u\",\"type\":\"teleport\",\"sku\":\"S\"}", 0, "unknown-type"},
        {"S",
         "{\"event_id\":\"m\",\"type\":\"adjust\",\"sku\":\"S\",\"loc\":\"L\",\"reason\":\"pick\"}",
         0, "missing-field"},
        {"S",
         "{\"event_id\":\"i\",\"type\":\"adjust\",\"sku\":\"S\",\"loc\":\"L\",\"delta\":\"x\","
         "\"reason\":\"pick\"}",
         0, "invalid-field"},
        {"S",
         "{\"event_id\":\"f\",\"type\":\"adjust\",\"sku\":\"S\",\"loc\":\"L\",\"delta\":1,"
         "\"reason\":\"receipt\",\"colour\":\"red\"}",
         0, "unknown-field"},
        {longsku, longsku_ev, 0, "invalid-sku"},
        {"S",
         "{\"event_id\":\"o\",\"type\":\"adjust\",\"sku\":\"S\",\"loc\":\"bad loc\",\"delta\":1,"
         "\"reason\":\"receipt\"}",
         0, "invalid-location"},
        {"T",
         "{\"event_id\":\"k\",\"type\":\"adjust\",\"sku\":\"S\",\"loc\":\"L\",\"delta\":1,"
         "\"reason\":\"receipt\"}",
         0, "key-mismatch"},
        {NULL,
         "{\"event_id\":\"k2\",\"type\":\"adjust\",\"sku\":\"S\",\"loc\":\"L\",\"delta\":1,"
         "\"reason\":\"receipt\"}",
         0, "key-mismatch"},
        {"S",
         "{\"event_id\":\"r\",\"type\":\"safety_stock\",\"sku\":\"S\",\"channel\":\"nope\","
         "\"units\":1}",
         0, "rejected"},
    };
    size_t ncases = sizeof(cases) / sizeof(cases[0]);
    produce_adjust(p, "bad", "S", "L", 5, "v1"); /* offset 0 */
    for (size_t i = 0; i < ncases; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].value);
        produce(p, "bad", 0, cases[i].key, cases[i].value, len);
    }
    produce_adjust(p, "bad", "S", "L", 7, "v2");
    flush(p);
    wait_consumed(ing, ncases + 2);
    struct atp_ingest_stats s = stats(ing);
    assert_int_equal(s.applied, 2);
    assert_int_equal(s.dead_lettered, ncases);
    assert_balanced(&s);
    assert_int_equal(on_hand(store, "S", "L"), 12);
    /* Every reason of the table was produced at least once. */
    for (int r = 1; r < ATP_DLQ_COUNT; r++) {
        if (s.dead_by_reason[r] == 0)
            print_error("reason %s never produced\n", atp_dlq_reason_slug(r));
        assert_true(s.dead_by_reason[r] >= 1);
    }
    atp_ingest_stop(ing); /* flushes the dead letters */

    struct dead d[32];
    size_t got = read_dlq(c.bootstrap, "bad.dlq", d, ncases);
    assert_int_equal(got, ncases);
    for (size_t i = 0; i < ncases; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].value);
        if (strcmp(d[i].reason, cases[i].reason) != 0)
            print_error("dead letter %zu: reason %s, want %s\n", i, d[i].reason, cases[i].reason);
        assert_string_equal(d[i].reason, cases[i].reason);
        assert_true(d[i].detail[0] != 0);
        assert_string_equal(d[i].src_topic, "bad");
        assert_int_equal(d[i].src_partition, 0);
        assert_int_equal(d[i].src_offset, (int64_t)i + 1);
        assert_int_equal(d[i].len, len); /* the original bytes, unchanged */
        assert_memory_equal(d[i].value, cases[i].value, len);
        assert_string_equal(d[i].key, cases[i].key ? cases[i].key : "");
        assert_string_equal(d[i].error, strcmp(cases[i].reason, "rejected") ? "" : "ENOCHANNEL");
        free(d[i].value);
    }

    rd_kafka_destroy(p);
    atp_ingest_free(ing);
    atp_store_free(store);
    cluster_stop(&c);
}

/* A poison message in the middle of a partition: the rest is applied. */
static void test_poison_in_the_middle(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "poison", 1);
    struct atp_store *store = new_store();
    struct atp_ingest *ing = ingest_new("poison", c.bootstrap, "poison", "g-poison", store, NULL);
    rd_kafka_t *p = producer(c.bootstrap, NULL);
    char id[32];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "a%d", i);
        produce_adjust(p, "poison", "P", "DC1", 1, id);
    }
    static const char poison[] = "\x00\xff\x01{\"event_id\":";
    produce(p, "poison", 0, "P", poison, sizeof(poison) - 1);
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof(id), "b%d", i);
        produce_adjust(p, "poison", "P", "DC1", 1, id);
    }
    flush(p);
    /* Started after producing: the poison is met mid-partition. */
    assert_int_equal(atp_ingest_start(ing), 0);
    wait_consumed(ing, 101);
    struct atp_ingest_stats s = stats(ing);
    assert_int_equal(s.applied, 100);
    assert_int_equal(s.dead_by_reason[ATP_DLQ_NOT_JSON], 1);
    assert_int_equal(on_hand(store, "P", "DC1"), 100);
    atp_ingest_stop(ing);
    struct dead d[1];
    assert_int_equal(read_dlq(c.bootstrap, "poison.dlq", d, 1), 1);
    assert_string_equal(d[0].reason, "not-json");
    assert_int_equal(d[0].src_offset, 50);
    assert_int_equal(d[0].len, sizeof(poison) - 1);
    assert_memory_equal(d[0].value, poison, sizeof(poison) - 1);
    free(d[0].value);
    rd_kafka_destroy(p);
    atp_ingest_free(ing);
    atp_store_free(store);
    cluster_stop(&c);
}

static int64_t sum_offsets(const struct atp_ingest *ing, struct atp_ingest_offset *out, size_t cap,
                           size_t *ret_n)
{
    size_t n = atp_ingest_offsets(ing, out, cap);
    assert_true(n <= cap);
    int64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += out[i].next_offset > 0 ? out[i].next_offset : 0;
    *ret_n = n;
    return sum;
}

static int64_t total_on_hand(struct atp_store *s, int nskus)
{
    int64_t t = 0;
    char sku[32];
    for (int i = 0; i < nskus; i++) {
        snprintf(sku, sizeof(sku), "R-%d", i);
        int64_t v = on_hand(s, sku, "DC1");
        t += v > 0 ? v : 0;
    }
    return t;
}

static void produce_range(rd_kafka_t *p, const char *topic, int from, int to, int nskus)
{
    char id[32], sku[32];
    for (int i = from; i < to; i++) {
        snprintf(id, sizeof(id), "r-%d", i);
        snprintf(sku, sizeof(sku), "R-%d", i % nskus);
        produce_adjust(p, topic, sku, "DC1", 1, id);
    }
    flush(p);
}

/*
 * Stop and restart: the consumer resumes from atpd's own offsets (same
 * object, then a new ingest given the offsets), nothing applied twice or
 * skipped; Kafka's committed offsets (monitoring) match; and an ingest with
 * no offsets of its own ignores the group's committed offsets.
 */
static void test_restart_own_offsets(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "rs", 3);
    struct atp_store *store = new_store();
    struct atp_ingest *a = ingest_new("A", c.bootstrap, "rs", "g-rs", store, NULL);
    rd_kafka_t *p = producer(c.bootstrap, NULL);
    struct atp_ingest_offset off[8];
    size_t n;

    assert_int_equal(atp_ingest_start(a), 0);
    produce_range(p, "rs", 0, 60, 7);
    wait_consumed(a, 60);
    atp_ingest_stop(a);
    assert_int_equal(sum_offsets(a, off, 8, &n), 60);
    assert_int_equal(n, 3);
    assert_int_equal(total_on_hand(store, 7), 60);

    /* Kafka's committed offsets follow atpd's (for lag tools). */
    {
        char errstr[256];
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "bootstrap.servers", c.bootstrap, NULL, 0);
        rd_kafka_conf_set(conf, "group.id", "g-rs", NULL, 0);
        rd_kafka_conf_set(conf, "log_level", "0", NULL, 0);
        rd_kafka_t *q = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
        for (size_t i = 0; i < n; i++)
            rd_kafka_topic_partition_list_add(l, "rs", off[i].partition);
        assert_int_equal(rd_kafka_committed(q, l, WAIT_MS), 0);
        for (int i = 0; i < l->cnt; i++)
            for (size_t j = 0; j < n; j++)
                if (off[j].partition == l->elems[i].partition)
                    assert_int_equal(l->elems[i].offset, off[j].next_offset);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_destroy(q);
    }

    /* Same object again. */
    produce_range(p, "rs", 60, 100, 7);
    assert_int_equal(atp_ingest_start(a), 0);
    wait_consumed(a, 100);
    atp_ingest_stop(a);
    assert_int_equal(stats(a).applied, 100);
    assert_int_equal(total_on_hand(store, 7), 100);
    assert_int_equal(sum_offsets(a, off, 8, &n), 100);

    /* A new ingest on the same store, given the offsets (a restore). */
    produce_range(p, "rs", 100, 130, 7);
    struct atp_ingest *b = ingest_new("B", c.bootstrap, "rs", "g-rs", store, NULL);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(atp_ingest_set_offset(b, off[i].topic, off[i].partition,
                                               off[i].next_offset, off[i].stale),
                         0);
    assert_int_equal(atp_ingest_set_offset(b, "rs", -1, 0, false), ATP_EINVAL);
    assert_int_equal(atp_ingest_start(b), 0);
    assert_int_equal(atp_ingest_set_offset(b, "rs", 0, 0, false), -EBUSY);
    wait_consumed(b, 30);
    sleep_ms(300); /* nothing more arrives */
    assert_int_equal(stats(b).consumed, 30);
    assert_int_equal(stats(b).applied, 30);
    assert_int_equal(total_on_hand(store, 7), 130);
    atp_ingest_free(b);
    atp_ingest_free(a);

    /* No offsets of its own: from the beginning, not from the group's
     * committed offsets (which stand at the end). */
    struct atp_store *fresh = new_store();
    struct atp_ingest *f = ingest_new("C", c.bootstrap, "rs", "g-rs", fresh, NULL);
    assert_int_equal(atp_ingest_start(f), 0);
    wait_consumed(f, 130);
    assert_int_equal(total_on_hand(fresh, 7), 130);
    assert_int_equal(stats(f).gaps, 0);
    atp_ingest_free(f);
    atp_store_free(fresh);

    rd_kafka_destroy(p);
    atp_store_free(store);
    cluster_stop(&c);
}

/* --- broker faults ---------------------------------------------------------- */

struct pacer {
    rd_kafka_t *p;
    const char *topic;
    int nskus;
    unsigned every_ms;
    _Atomic int produced;
    _Atomic int delivered;
    _Atomic int failed;
    _Atomic bool stop;
    pthread_t thread;
};

static void pacer_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct pacer *pc = opaque;
    if (m->err)
        atomic_fetch_add(&pc->failed, 1);
    else
        atomic_fetch_add(&pc->delivered, 1);
}

static void *pacer_main(void *arg)
{
    struct pacer *pc = arg;
    char id[32], sku[32];
    for (int i = 0; !atomic_load(&pc->stop); i++) {
        snprintf(id, sizeof(id), "p-%d", i);
        snprintf(sku, sizeof(sku), "F-%d", i % pc->nskus);
        produce_adjust(pc->p, pc->topic, sku, "DC1", 1, id);
        atomic_fetch_add(&pc->produced, 1);
        rd_kafka_poll(pc->p, 0);
        sleep_ms(pc->every_ms);
    }
    return NULL;
}

static void pacer_start(struct pacer *pc, const char *bootstrap, const char *topic, int nskus,
                        unsigned every_ms)
{
    char errstr[256];
    memset(pc, 0, sizeof(*pc));
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, NULL, 0);
    rd_kafka_conf_set(conf, "linger.ms", "2", NULL, 0);
    rd_kafka_conf_set(conf, "enable.idempotence", "true", NULL, 0);
    rd_kafka_conf_set(conf, "message.timeout.ms", "60000", NULL, 0);
    rd_kafka_conf_set(conf, "reconnect.backoff.max.ms", "500", NULL, 0);
    rd_kafka_conf_set(conf, "log_level", verbose ? "4" : "0", NULL, 0);
    rd_kafka_conf_set_dr_msg_cb(conf, pacer_dr);
    rd_kafka_conf_set_opaque(conf, pc);
    pc->p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    assert_non_null(pc->p);
    pc->topic = topic;
    pc->nskus = nskus;
    pc->every_ms = every_ms;
    assert_int_equal(pthread_create(&pc->thread, NULL, pacer_main, pc), 0);
}

static void pacer_stop(struct pacer *pc)
{
    atomic_store(&pc->stop, true);
    pthread_join(pc->thread, NULL);
    assert_int_equal(rd_kafka_flush(pc->p, 30000), 0);
    assert_int_equal(atomic_load(&pc->failed), 0);
    assert_int_equal(atomic_load(&pc->delivered), atomic_load(&pc->produced));
    rd_kafka_destroy(pc->p);
}

/* Lookups keep being served while the consumer suffers. */
struct reader {
    struct atp_store *store;
    int nskus;
    _Atomic bool stop;
    _Atomic uint64_t reads, errors;
    pthread_t thread;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    char sku[32];
    for (unsigned i = 0; !atomic_load(&r->stop); i++) {
        struct atp_breakdown b;
        snprintf(sku, sizeof(sku), "F-%u", i % (unsigned)r->nskus);
        int rc = atp_store_get(r->store, atp_slice_cstr(sku), ATP_SLICE("DC1"), 0, &b);
        if (rc != 0 && rc != ATP_ENOTFOUND)
            atomic_fetch_add(&r->errors, 1);
        atomic_fetch_add(&r->reads, 1);
        if (i % 64 == 0)
            sleep_ms(1);
    }
    return NULL;
}

/* Wait until `applied` moves past `from`; returns the ms it took (or WAIT_MS). */
static uint64_t wait_progress(const struct atp_ingest *ing, uint64_t from)
{
    uint64_t t0 = mono_ms();
    while (stats(ing).applied <= from && mono_ms() - t0 < WAIT_MS)
        sleep_ms(5);
    return mono_ms() - t0;
}

static void test_broker_faults(void **state)
{
    (void)state;
    enum { NSKUS = 50, FETCH = 1 /* Kafka ApiKey of Fetch */ };
    struct cluster c;
    cluster_start(&c, 3);
    assert_int_equal(rd_kafka_mock_topic_create(c.mc, "ft", 4, 3), 0);
    assert_int_equal(rd_kafka_mock_topic_create(c.mc, "ft.dlq", 1, 3), 0);
    struct atp_store *store = new_store();
    session_ms = "10000"; /* brokers are down for 5 s: the session outlives it */
    struct atp_ingest *ing = ingest_new("faults", c.bootstrap, "ft", "g-ft", store, NULL);
    session_ms = "3000";
    struct reader r = {.store = store, .nskus = NSKUS};
    assert_int_equal(pthread_create(&r.thread, NULL, reader_main, &r), 0);
    struct pacer pc;
    pacer_start(&pc, c.bootstrap, "ft", NSKUS, 3);
    assert_int_equal(atp_ingest_start(ing), 0);
    assert_true(wait_progress(ing, 0) < WAIT_MS);

    /* 1. Fetch errors, then a disconnect on a fetch. */
    rd_kafka_mock_push_request_errors(
        c.mc, FETCH, 6, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART, RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR__TRANSPORT, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR__TRANSPORT);
    sleep_ms(500);
    uint64_t ms = wait_progress(ing, stats(ing).applied);
    if (verbose)
        fprintf(stderr, "  fetch errors: progress within %llu ms\n", (unsigned long long)ms);
    assert_true(ms < 5000);

    /* 2. Every broker down for 5 s, then up. */
    for (int b = 1; b <= 3; b++)
        assert_int_equal(rd_kafka_mock_broker_set_down(c.mc, b), 0);
    sleep_ms(5000);
    uint64_t before = stats(ing).applied;
    for (int b = 1; b <= 3; b++)
        assert_int_equal(rd_kafka_mock_broker_set_up(c.mc, b), 0);
    ms = wait_progress(ing, before);
    if (verbose)
        fprintf(stderr, "  brokers back: consuming again after %llu ms\n", (unsigned long long)ms);
    assert_true(ms < 5000);

    /* 3. Leader change of every partition. */
    for (int p = 0; p < 4; p++)
        assert_int_equal(rd_kafka_mock_partition_set_leader(c.mc, "ft", p, (p + 1) % 3 + 1), 0);
    sleep_ms(300);
    ms = wait_progress(ing, stats(ing).applied);
    if (verbose)
        fprintf(stderr, "  leader change: progress within %llu ms\n", (unsigned long long)ms);
    assert_true(ms < 5000);

    /* 4. 300 ms of added latency on every broker for 2 s. */
    assert_int_equal(rd_kafka_mock_broker_set_rtt(c.mc, -1, 300), 0);
    sleep_ms(2000);
    ms = wait_progress(ing, stats(ing).applied);
    assert_true(ms < 5000);
    assert_int_equal(rd_kafka_mock_broker_set_rtt(c.mc, -1, 0), 0);

    pacer_stop(&pc);
    int n = atomic_load(&pc.delivered);
    uint64_t deadline = mono_ms() + WAIT_MS;
    while (stats(ing).applied < (uint64_t)n && mono_ms() < deadline)
        sleep_ms(10);
    sleep_ms(300);
    atomic_store(&r.stop, true);
    pthread_join(r.thread, NULL);

    struct atp_ingest_stats s = stats(ing);
    if (verbose)
        fprintf(stderr,
                "  produced %d, consumed %llu, applied %llu, duplicates %llu, replayed %llu, "
                "kafka errors %llu, reads %llu\n",
                n, (unsigned long long)s.consumed, (unsigned long long)s.applied,
                (unsigned long long)s.duplicates, (unsigned long long)s.replayed,
                (unsigned long long)s.kafka_errors, (unsigned long long)atomic_load(&r.reads));
    if (s.applied != (uint64_t)n) /* none lost, none twice; say where it stood */
        fail_msg("broker faults: produced %d, consumed %llu, applied %llu, duplicates %llu, "
                 "kafka errors %llu, %d ms after the producer stopped",
                 n, (unsigned long long)s.consumed, (unsigned long long)s.applied,
                 (unsigned long long)s.duplicates, (unsigned long long)s.kafka_errors,
                 WAIT_MS + 300);
    assert_balanced(&s);
    assert_int_equal(s.dead_lettered, 0);
    assert_int_equal(s.gaps, 0); /* faults are not gaps */
    char sku[32];
    for (int k = 0; k < NSKUS; k++) {
        snprintf(sku, sizeof(sku), "F-%d", k);
        assert_int_equal(on_hand(store, sku, "DC1"), n / NSKUS + (k < n % NSKUS));
    }
    assert_int_equal(atomic_load(&r.errors), 0);
    assert_true(atomic_load(&r.reads) > 1000);

    atp_ingest_free(ing);
    atp_store_free(store);
    cluster_stop(&c);
}

/*
 * Duplicates in the log itself: produce responses delayed past the
 * producer's request timeout make it retry, and the mock cluster appends the
 * retried batches again. Every duplicate is skipped and counted.
 */
static void test_log_duplicates(void **state)
{
    (void)state;
    enum { PRODUCE = 0 /* Kafka ApiKey of Produce */, N = 40 };
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "ld", 1);
    struct atp_store *store = new_store();
    struct atp_ingest *ing = ingest_new("logdup", c.bootstrap, "ld", "g-ld", store, NULL);
    assert_int_equal(atp_ingest_start(ing), 0);

    const char *extra[] = {"enable.idempotence",
                           "true",
                           "request.timeout.ms",
                           "300",
                           "socket.timeout.ms",
                           "300",
                           "message.timeout.ms",
                           "30000",
                           "retry.backoff.ms",
                           "10",
                           "linger.ms",
                           "0",
                           NULL};
    rd_kafka_t *p = producer(c.bootstrap, extra);
    /* Warm up the connection, then delay the next produce responses past
     * the request timeout (librdkafka scans for timeouts once a second). */
    produce_adjust(p, "ld", "D", "L", 1, "d-0");
    flush(p);
    assert_int_equal(rd_kafka_mock_broker_push_request_error_rtts(c.mc, 1, PRODUCE, 2,
                                                                  RD_KAFKA_RESP_ERR_NO_ERROR, 2500,
                                                                  RD_KAFKA_RESP_ERR_NO_ERROR, 2500),
                     0);
    char id[32];
    for (int i = 1; i < N; i++) {
        snprintf(id, sizeof(id), "d-%d", i);
        produce_adjust(p, "ld", "D", "L", 1, id);
        if (i % 10 == 0)
            sleep_ms(50);
    }
    flush(p);

    /* How many records the log holds: the high watermark. */
    int64_t lo = 0, hi = 0;
    assert_int_equal(rd_kafka_query_watermark_offsets(p, "ld", 0, &lo, &hi, WAIT_MS), 0);
    if (verbose)
        fprintf(stderr, "  %d events, %lld records in the log\n", N, (long long)hi);
    assert_true(hi > N); /* the retries did duplicate */
    wait_consumed(ing, (uint64_t)hi);
    struct atp_ingest_stats s = stats(ing);
    assert_int_equal(s.applied, N);
    assert_int_equal(s.duplicates, (uint64_t)hi - N);
    assert_balanced(&s);
    assert_int_equal(on_hand(store, "D", "L"), N);

    rd_kafka_destroy(p);
    atp_ingest_free(ing);
    atp_store_free(store);
    cluster_stop(&c);
}

/* --- retention gaps --------------------------------------------------------- */

/* Produce ~7 MB of valid padded events: more than the mock keeps (5 MiB). */
static void overflow_retention(rd_kafka_t *p, const char *topic, int round)
{
    static char pad[8000];
    memset(pad, 'x', sizeof(pad) - 1);
    char id[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(id, sizeof(id), "pad-%d-%d", round, i);
        producef(p, topic, 0, "PAD",
                 "{\"event_id\":\"%s\",\"type\":\"adjust\",\"sku\":\"PAD\",\"loc\":\"DC1\","
                 "\"delta\":1,\"reason\":\"receipt\",\"x-pad\":\"%.7000s\"}",
                 id, pad);
        if (i % 50 == 0)
            rd_kafka_poll(p, 0);
    }
    flush(p);
}

static void wait_caught_up(const struct atp_ingest *ing)
{
    uint64_t deadline = mono_ms() + WAIT_MS;
    int steady = 0;
    while (mono_ms() < deadline && steady < 3) {
        struct atp_ingest_status st;
        atp_ingest_status(ing, &st);
        steady = st.partitions > 0 && st.max_lag == 0 ? steady + 1 : 0;
        sleep_ms(100);
    }
    assert_int_equal(steady, 3);
}

static int check(const struct atp_ingest *ing, const char *sku, const char *loc)
{
    return atp_ingest_check_item(ing, atp_slice_cstr(sku), atp_slice_cstr(loc));
}

/* Poll for a condition that depends on librdkafka's statistics (1 s). */
static void wait_check(const struct atp_ingest *ing, const char *sku, const char *loc, int want)
{
    uint64_t deadline = mono_ms() + 5000;
    while (check(ing, sku, loc) != want && mono_ms() < deadline)
        sleep_ms(20);
    assert_int_equal(check(ing, sku, loc), want);
}

static void test_retention_gap(void **state)
{
    (void)state;
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "rg", 1);
    struct atp_store *store = new_store();
    struct atp_ingest *ing = ingest_new("gap", c.bootstrap, "rg", "g-rg", store, NULL);
    rd_kafka_t *p = producer(c.bootstrap, NULL);
    char id[32], sku[32];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof(id), "g-%d", i);
        snprintf(sku, sizeof(sku), "G-%d", i);
        produce_adjust(p, "rg", sku, "DC1", 5, id);
    }
    flush(p);
    assert_int_equal(atp_ingest_start(ing), 0);
    wait_consumed(ing, 10);
    assert_true(wait_ready(ing, true, WAIT_MS));
    assert_int_equal(check(ing, "G-1", "DC1"), 0);

    for (int round = 1; round <= 2; round++) {
        atp_ingest_stop(ing);
        struct atp_ingest_offset off[2];
        assert_int_equal(atp_ingest_offsets(ing, off, 2), 1);
        int64_t stored = off[0].next_offset;
        overflow_retention(p, "rg", round);
        int64_t lo = 0, hi = 0;
        assert_int_equal(rd_kafka_query_watermark_offsets(p, "rg", 0, &lo, &hi, WAIT_MS), 0);
        if (verbose)
            fprintf(stderr, "  round %d: atpd at offset %lld, log now %lld..%lld\n", round,
                    (long long)stored, (long long)lo, (long long)hi);
        assert_true(lo > stored); /* the events atpd needs next are gone */

        uint64_t applied0 = stats(ing).applied;
        assert_int_equal(atp_ingest_start(ing), 0);
        uint64_t deadline = mono_ms() + WAIT_MS;
        while (stats(ing).gaps < (uint64_t)round && mono_ms() < deadline)
            sleep_ms(10);
        /* Detected, every time, and loudly. */
        assert_int_equal(stats(ing).gaps, round);
        struct atp_ingest_status st;
        atp_ingest_status(ing, &st);
        assert_int_equal(st.stale, 1);
        assert_false(st.ready);
        assert_int_equal(atp_ingest_offsets(ing, off, 2), 1);
        assert_true(off[0].stale);
        assert_int_equal(check(ing, "G-1", "DC1"), ATP_EUNAVAILABLE);
        assert_int_equal(check(ing, "G-2", "DC1"), ATP_EUNAVAILABLE);

        /* What is still in the log is applied, from the earliest offset. */
        wait_caught_up(ing);
        assert_int_equal(stats(ing).applied - applied0, (uint64_t)(hi - lo));
        assert_false(atp_ingest_ready(ing));

        /* A set resyncs its item only; the whole sku ("any") stays stale. */
        producef(p, "rg", 0, "G-1",
                 "{\"event_id\":\"set-%d\",\"type\":\"set\",\"sku\":\"G-1\",\"loc\":\"DC1\","
                 "\"on_hand\":7,\"seq\":%d}",
                 round, round);
        flush(p);
        wait_check(ing, "G-1", "DC1", 0);
        assert_int_equal(on_hand(store, "G-1", "DC1"), 7);
        assert_int_equal(check(ing, "G-2", "DC1"), ATP_EUNAVAILABLE);
        assert_int_equal(check(ing, "G-1", ""), ATP_EUNAVAILABLE);

        /* resync_complete on the partition clears it. */
        producef(p, "rg", 0, NULL, "{\"event_id\":\"resync-%d\",\"type\":\"resync_complete\"}",
                 round);
        flush(p);
        assert_true(wait_ready(ing, true, WAIT_MS));
        assert_int_equal(check(ing, "G-2", "DC1"), 0);
        assert_int_equal(stats(ing).resyncs, round);
        assert_int_equal(atp_ingest_offsets(ing, off, 2), 1);
        assert_false(off[0].stale);
    }
    atp_ingest_free(ing);

    /* A fresh atpd on a log that no longer starts at 0: stale too. The log
     * is first filled past retention once more, so that the resync_complete
     * of round 2 is gone (a fast consumer would otherwise apply it before
     * readiness is looked at, and be ready again, rightly). */
    overflow_retention(p, "rg", 3);
    struct atp_store *fresh = new_store();
    ing = ingest_new("fresh", c.bootstrap, "rg", "g-rg2", fresh, NULL);
    assert_int_equal(atp_ingest_start(ing), 0);
    uint64_t deadline = mono_ms() + WAIT_MS;
    while (stats(ing).gaps < 1 && mono_ms() < deadline)
        sleep_ms(10);
    assert_int_equal(stats(ing).gaps, 1);
    assert_false(atp_ingest_ready(ing));
    atp_ingest_free(ing);
    atp_store_free(fresh);

    rd_kafka_destroy(p);
    atp_store_free(store);
    cluster_stop(&c);
}

/*
 * The log's start is deleted again before the restart at the earliest
 * offset reads anything (retention outrunning the fetches, as in a log
 * holding under a second of events): the second restart goes halfway into
 * the log instead of looping at a start that keeps disappearing. The two
 * out-of-range answers are injected into the first two fetches.
 */
static void test_gap_start_keeps_moving(void **state)
{
    (void)state;
    enum { FETCH = 1 /* Kafka ApiKey of Fetch */, N = 100 };
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "mv", 1);
    struct atp_store *store = new_store();
    struct atp_ingest *ing = ingest_new("moving", c.bootstrap, "mv", "g-mv", store, NULL);
    rd_kafka_t *p = producer(c.bootstrap, NULL);
    char id[32], sku[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "mv-%d", i);
        snprintf(sku, sizeof(sku), "MV-%d", i);
        produce_adjust(p, "mv", sku, "DC1", 5, id);
    }
    flush(p);
    rd_kafka_mock_push_request_errors(c.mc, FETCH, 2, RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE,
                                      RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE);
    assert_int_equal(atp_ingest_start(ing), 0);
    wait_caught_up(ing);
    /* Both detected; consumption went on from offset N/2, not from 0. */
    assert_int_equal(stats(ing).gaps, 2);
    assert_int_equal(stats(ing).applied, N / 2);
    assert_int_equal(on_hand(store, "MV-0", "DC1"), ATP_ENOTFOUND); /* never applied */
    assert_int_equal(on_hand(store, "MV-49", "DC1"), ATP_ENOTFOUND);
    assert_int_equal(on_hand(store, "MV-50", "DC1"), 5);
    assert_int_equal(on_hand(store, "MV-99", "DC1"), 5);
    assert_false(atp_ingest_ready(ing));
    assert_int_equal(check(ing, "MV-50", "DC1"), ATP_EUNAVAILABLE);
    atp_ingest_free(ing);
    rd_kafka_destroy(p);
    atp_store_free(store);
    cluster_stop(&c);
}

/* --- events and reservations interleaved ------------------------------------ */

struct reserver {
    struct atp_store *store;
    int id;
    _Atomic int *granted;
    int target;
    _Atomic uint64_t *violations;
    pthread_t thread;
};

static void *reserver_main(void *arg)
{
    struct reserver *rv = arg;
    char key[32];
    uint64_t deadline = mono_ms() + WAIT_MS;
    for (int i = 0; atomic_load(rv->granted) < rv->target && mono_ms() < deadline; i++) {
        const char *sku = (i & 1) ? "O1" : "O2";
        /* Reserve only when stock shows, as a storefront would: every
         * refusal also costs the store a key-table slot until it is
         * reclaimed, and this test is about the race, not about refusals. */
        struct atp_breakdown pre;
        if (atp_store_get(rv->store, atp_slice_cstr(sku), ATP_SLICE("DC1"), 0, &pre) != 0 ||
            pre.atp < 1) {
            sleep_ms(1);
            continue;
        }
        struct atp_line_req line = {atp_slice_cstr(sku), ATP_SLICE("DC1"), 1};
        snprintf(key, sizeof(key), "k-%d-%d", rv->id, i);
        struct atp_reserve_req req = {atp_slice_cstr(key), 0, 600000, &line, 1};
        struct atp_reservation res;
        bool replayed;
        int rc = atp_store_reserve(rv->store, &req, atp_now_us(), &res, &replayed, NULL);
        if (rc == 0)
            atomic_fetch_add(rv->granted, 1);
        else if (rc != ATP_EINSUFFICIENT && rc != ATP_ENOTFOUND &&
                 atomic_fetch_add(rv->violations, 1) == 0)
            print_error("reserve: %s\n", atp_error_name(rc));
        struct atp_breakdown b;
        if (atp_store_get(rv->store, atp_slice_cstr(sku), ATP_SLICE("DC1"), 0, &b) == 0 &&
            (b.on_hand - b.allocated - b.reserved < 0 || b.atp < 0) &&
            atomic_fetch_add(rv->violations, 1) == 0)
            print_error("%s: on_hand %lld allocated %lld reserved %lld atp %lld\n", sku,
                        (long long)b.on_hand, (long long)b.allocated, (long long)b.reserved,
                        (long long)b.atp);
    }
    return NULL;
}

static void test_events_and_reservations(void **state)
{
    (void)state;
    enum { UNITS = 400 };
    struct cluster c;
    cluster_start(&c, 1);
    cluster_topic(&c, "ov", 2);
    struct atp_store *store = new_store();
    struct atp_ingest *ing = ingest_new("oversell", c.bootstrap, "ov", "g-ov", store, NULL);
    assert_int_equal(atp_ingest_start(ing), 0);

    _Atomic int granted = 0;
    _Atomic uint64_t violations = 0;
    struct reserver rv[3];
    for (int i = 0; i < 3; i++) {
        rv[i] = (struct reserver){store, i, &granted, UNITS, &violations, 0};
        assert_int_equal(pthread_create(&rv[i].thread, NULL, reserver_main, &rv[i]), 0);
    }
    rd_kafka_t *p = producer(c.bootstrap, NULL);
    char id[32];
    for (int i = 0; i < UNITS; i++) {
        snprintf(id, sizeof(id), "o-%d", i);
        produce_adjust(p, "ov", (i & 1) ? "O1" : "O2", "DC1", 1, id);
        if (i % 20 == 0) {
            rd_kafka_poll(p, 0);
            sleep_ms(5);
        }
    }
    flush(p);
    for (int i = 0; i < 3; i++)
        pthread_join(rv[i].thread, NULL);
    wait_consumed(ing, UNITS);

    /* Every unit received was reserved once, none more. */
    assert_int_equal(atomic_load(&violations), 0);
    assert_int_equal(atomic_load(&granted), UNITS);
    for (int k = 0; k < 2; k++) {
        struct atp_breakdown b;
        assert_int_equal(
            atp_store_get(store, atp_slice_cstr(k ? "O1" : "O2"), ATP_SLICE("DC1"), 0, &b), 0);
        assert_int_equal(b.on_hand, UNITS / 2);
        assert_int_equal(b.reserved, UNITS / 2);
        assert_int_equal(b.atp, 0);
    }
    rd_kafka_destroy(p);
    atp_ingest_free(ing);
    atp_store_free(store);
    cluster_stop(&c);
}

/* Topic names as Kafka's, checked before anything connects: a bad one is a
 * clear ATP_EINVAL from atp_ingest_new, the dead-letter topic included. */
static void test_topic_names(void **state)
{
    (void)state;
    struct atp_store *store = new_store();
    /* 249 bytes (legal) and 250; a name whose default dead-letter topic
     * (name + ".dlq") is 249 bytes, and one whose would be 250. */
    char longest[ATP_INGEST_TOPIC_MAX + 1], too_long[ATP_INGEST_TOPIC_MAX + 2];
    char dlq_longest[ATP_INGEST_TOPIC_MAX - 3], dlq_too_long[ATP_INGEST_TOPIC_MAX - 2];
    memset(longest, 'a', sizeof(longest));
    memset(too_long, 'a', sizeof(too_long));
    memset(dlq_longest, 'b', sizeof(dlq_longest));
    memset(dlq_too_long, 'b', sizeof(dlq_too_long));
    longest[sizeof(longest) - 1] = too_long[sizeof(too_long) - 1] = '\0';
    dlq_longest[sizeof(dlq_longest) - 1] = dlq_too_long[sizeof(dlq_too_long) - 1] = '\0';
    static const char *const bad[] = {"inv entory", "inv\"entory", "^inv.*", "inv/x", "ïnv"};
    struct {
        const char *topic, *dlq;
        int rc;
    } cases[] = {
        {"inventory.events_1-A", NULL, 0},
        {longest, "inventory.dlq", 0},
        {dlq_longest, NULL, 0},
        {"inventory", "dead letters", ATP_EINVAL},
        {bad[0], NULL, ATP_EINVAL},
        {bad[1], NULL, ATP_EINVAL},
        {bad[2], NULL, ATP_EINVAL},
        {bad[3], NULL, ATP_EINVAL},
        {bad[4], NULL, ATP_EINVAL},
        {"..", "inventory.dlq", ATP_EINVAL},
        {"inventory", ".", ATP_EINVAL},
        {"...", NULL, 0},
        {too_long, NULL, ATP_EINVAL},
        {dlq_too_long, NULL, ATP_EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct atp_ingest_config cfg;
        atp_ingest_config_defaults(&cfg);
        const char *topics[] = {cases[i].topic, NULL};
        cfg.brokers = "127.0.0.1:9"; /* never contacted: atp_ingest_start is not called */
        cfg.topics = topics;
        cfg.dlq_topic = cases[i].dlq;
        cfg.log = test_log;
        cfg.log_arg = (void *)"names";
        struct atp_ingest *ing = NULL;
        int rc = atp_ingest_new(&cfg, store, &ing);
        if (rc != cases[i].rc)
            fail_msg("topic '%.40s' dlq '%s': rc %d, want %d", cases[i].topic,
                     cases[i].dlq ? cases[i].dlq : "(default)", rc, cases[i].rc);
        assert_true((ing != NULL) == (rc == 0));
        atp_ingest_free(ing);
    }
    atp_store_free(store);
}

int main(void)
{
    verbose = getenv("ATP_TEST_VERBOSE") != NULL;
    if (getenv("ATP_TEST_FILTER")) /* e.g. ATP_TEST_FILTER='test_restart*' */
        cmocka_set_test_filter(getenv("ATP_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topic_names),
        cmocka_unit_test(test_embedded_visible),
        cmocka_unit_test(test_duplicates_and_stale),
        cmocka_unit_test(test_dead_letters),
        cmocka_unit_test(test_poison_in_the_middle),
        cmocka_unit_test(test_restart_own_offsets),
        cmocka_unit_test(test_broker_faults),
        cmocka_unit_test(test_log_duplicates),
        cmocka_unit_test(test_retention_gap),
        cmocka_unit_test(test_gap_start_keeps_moving),
        cmocka_unit_test(test_events_and_reservations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
