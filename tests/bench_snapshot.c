/*
 * bench_snapshot.c - how long atpd takes to write and to load a snapshot of
 * N items (default 10M: 2.5M skus x 4 locations), plus some reservations.
 * Not a test: run by hand, figures go to docs/BENCHMARKS.md ("Durability").
 *
 *   build/tests/bench_snapshot [ITEMS] [DIR]
 *
 * The load is the real start-up path: atp_durable_recover() into a fresh
 * store (snapshot verified block by block, every item restored). The result
 * is checked: item count and a sum of on_hand must match what was written.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "atp/durable.h"
#include "atp/store.h"
#include "durable_check.h"
#include "durable_int.h"

static const struct atp_channel_config chans[] = {{.name = "web", .cap = -1}};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void cfg_for(struct atp_store_config *c, uint32_t items)
{
    atp_store_config_defaults(c);
    c->max_items = items + 1024;
    c->max_skus = items / 4 + 1024;
    c->max_reservations = 65536;
    c->channels = chans;
    c->nchannels = 1;
}

struct sum {
    uint64_t n;
    int64_t on_hand;
};

static int sum_item(const struct atp_item_view *it, void *arg)
{
    struct sum *s = arg;
    s->n++;
    s->on_hand += it->on_hand;
    return 0;
}

int main(int argc, char **argv)
{
    uint32_t items = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 10) : 10000000u;
    char *dir = argc > 2 ? strdup(argv[2]) : tmp_dir("bench-snap");
    struct atp_store_config scfg;
    cfg_for(&scfg, items);

    /* Build the store (no journal: this part is not what is measured). */
    struct atp_store *s;
    if (atp_store_new(&scfg, &s)) {
        fprintf(stderr, "store_new failed\n");
        return 1;
    }
    double t = now_s();
    char sku[32], loc[8];
    for (uint32_t i = 0; i < items; i++) {
        snprintf(sku, sizeof(sku), "SKU-%08u", i / 4);
        snprintf(loc, sizeof(loc), "DC%u", i % 4);
        if (atp_store_adjust(s, atp_slice_cstr(sku), atp_slice_cstr(loc), 1 + i % 1000, NULL)) {
            fprintf(stderr, "adjust failed at %u\n", i);
            return 1;
        }
    }
    for (uint32_t i = 0; i < 50000; i++) {
        char key[32];
        snprintf(key, sizeof(key), "order-%u", i);
        snprintf(sku, sizeof(sku), "SKU-%08u", (i * 7919u) % (items / 4));
        struct atp_line_req l = {atp_slice_cstr(sku), atp_slice_cstr("DC1"), 1};
        struct atp_reserve_req req = {atp_slice_cstr(key), 0, 3600000, &l, 1};
        struct atp_reservation r;
        bool rp;
        atp_store_reserve(s, &req, atp_now_us(), &r, &rp, NULL);
    }
    double build_s = now_s() - t;
    struct sum want = {0};
    atp_store_foreach_item(s, sum_item, &want);

    /* Write it as the snapshot at position 1 with its (empty) log segment. */
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY);
    uint64_t bytes = 0;
    char msg[512];
    t = now_s();
    if (snap_write(dirfd, s, &scfg, 1, NULL, &bytes, msg, sizeof(msg))) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    double write_s = now_s() - t;
    int fd;
    uint64_t len;
    if (seg_create(dirfd, 1, 0, &scfg, &fd, &len)) {
        fprintf(stderr, "segment\n");
        return 1;
    }
    close(fd);
    close(dirfd);
    atp_store_free(s);

    /* Load: the start-up path. */
    struct atp_durable_config dc;
    atp_durable_config_defaults(&dc);
    dc.dir = dir;
    dc.snapshot_interval_ms = UINT64_MAX;
    dc.snapshot_log_bytes = UINT64_MAX;
    struct atp_durable *d;
    if (atp_durable_open(&dc, &d, msg)) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    scfg.journal = atp_durable_journal(d);
    t = now_s();
    if (atp_store_new(&scfg, &s))
        return 1;
    struct atp_recovery_report rep;
    if (atp_durable_recover(d, s, &scfg, &rep)) {
        fprintf(stderr, "%s\n", atp_durable_errmsg(d));
        return 1;
    }
    double load_s = now_s() - t;
    struct sum got = {0};
    atp_store_foreach_item(s, sum_item, &got);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    int ok = got.n == want.n && got.on_hand == want.on_hand && rep.items == items;
    printf("items=%u reservations=%" PRIu64 " snapshot_bytes=%" PRIu64
           " (%.1f B/item) build_s=%.2f write_s=%.2f load_s=%.2f (of which snapshot %.2f) "
           "load_items_per_s=%.2fM maxrss_mb=%ld check=%s\n",
           items, rep.reservations, bytes, (double)bytes / items, build_s, write_s, load_s,
           (double)rep.snapshot_us / 1e6, items / load_s / 1e6, ru.ru_maxrss / 1024,
           ok ? "ok" : "MISMATCH");
    atp_durable_free(d);
    atp_store_free(s);
    if (argc <= 2)
        rm_rf(dir);
    free(dir);
    return ok ? 0 : 1;
}
