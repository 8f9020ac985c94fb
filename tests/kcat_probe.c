/*
 * kcat_probe.c - consume events with the ingest module and print what the
 * store shows; the checking half of tests/kcat_test.sh.
 *
 *   kcat_probe BOOTSTRAP TOPIC COUNT SKU/LOC...
 *
 * Starts an ingest on BOOTSTRAP (a running atp-devbroker) for TOPIC, waits
 * (at most 20 s) until COUNT messages were consumed and the consumer caught
 * up, then prints one line of counters and one line per item:
 *
 *   consumed=6 applied=4 duplicates=1 stale=0 dead=1 ready=1
 *   SKU-1 DC1 on_hand=15
 *
 * Exit 0 when COUNT messages were consumed, 1 otherwise. It knows the
 * ingest and store APIs only.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atp/ingest.h"
#include "atp/store.h"

static void log_line(void *arg, int level, const char *msg)
{
    if (level >= ATP_INGEST_LOG_WARN || getenv("ATP_TEST_VERBOSE"))
        fprintf(stderr, "kcat_probe: %s\n", msg);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: kcat_probe BOOTSTRAP TOPIC COUNT SKU/LOC...\n");
        return 2;
    }
    uint64_t want = strtoull(argv[3], NULL, 10);
    static const struct atp_channel_config web = {.name = "web", .cap = -1};
    struct atp_store_config scfg;
    atp_store_config_defaults(&scfg);
    scfg.max_items = 4096;
    scfg.max_skus = 4096;
    scfg.max_reservations = 1024;
    scfg.channels = &web;
    scfg.nchannels = 1;
    struct atp_store *store;
    if (atp_store_new(&scfg, &store) != 0)
        return 1;

    const char *topics[] = {argv[2], NULL};
    static const struct atp_ingest_kv kafka[] = {
        {"session.timeout.ms", "3000"}, {"heartbeat.interval.ms", "500"}, {NULL, NULL}};
    struct atp_ingest_config cfg;
    atp_ingest_config_defaults(&cfg);
    cfg.brokers = argv[1];
    cfg.topics = topics;
    cfg.group_id = "kcat-probe";
    cfg.kafka = kafka;
    cfg.log = log_line;
    struct atp_ingest *ing;
    if (atp_ingest_new(&cfg, store, &ing) != 0 || atp_ingest_start(ing) != 0)
        return 1;

    struct atp_ingest_stats s;
    uint64_t deadline = mono_ms() + 20000;
    do {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
        atp_ingest_stats(ing, &s);
    } while ((s.consumed < want || !atp_ingest_ready(ing)) && mono_ms() < deadline);
    bool ready = atp_ingest_ready(ing);
    atp_ingest_stop(ing); /* flushes dead letters */

    printf("consumed=%llu applied=%llu duplicates=%llu stale=%llu dead=%llu ready=%d\n",
           (unsigned long long)s.consumed, (unsigned long long)s.applied,
           (unsigned long long)s.duplicates, (unsigned long long)s.stale_sets,
           (unsigned long long)s.dead_lettered, ready);
    for (int i = 4; i < argc; i++) {
        char *slash = strchr(argv[i], '/');
        if (!slash)
            continue;
        *slash = '\0';
        struct atp_breakdown b;
        int rc = atp_store_get(store, atp_slice_cstr(argv[i]), atp_slice_cstr(slash + 1), 0, &b);
        if (rc == 0)
            printf("%s %s on_hand=%lld\n", argv[i], slash + 1, (long long)b.on_hand);
        else
            printf("%s %s %s\n", argv[i], slash + 1, atp_error_name(rc));
    }
    atp_ingest_free(ing);
    atp_store_free(store);
    return s.consumed == want ? 0 : 1;
}
