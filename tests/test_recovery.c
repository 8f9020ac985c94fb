/*
 * test_recovery.c - snapshots and recovery (src/snapshot.c, src/recover.c),
 * suite `unit` (a few seconds).
 *
 *  - snapshot + log round trip: a store with items, sku and item overrides on
 *    several channels, reservations in every state (multi-line, "any"
 *    locations, partly fulfilled) and Kafka offsets comes back equal, item
 *    by item, override by override, reservation by reservation, key by key;
 *  - periodic snapshots (a second store rebuilt from the closed log) and the
 *    log deleted before them;
 *  - a damaged, truncated or orphaned snapshot refuses to start, clearly;
 *  - the journal under concurrent reservations (several threads), events,
 *    the expirer reclaiming records whose slots and keys are then reused,
 *    and snapshots taken while it runs, replays to the very same state.
 */
#include <errno.h>
#include <pthread.h>
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

#include <cmocka.h>

#include "atp/durable.h"
#include "atp/store.h"
#include "durable_check.h"

#define T0 UINT64_C(1700000000000000)
#define MS UINT64_C(1000)

static const char *const b2b_locs[] = {"DC2", "DC1"};
static const struct atp_channel_config chans[] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 2, .cap = -1},
    {.name = "b2b", .cap = -1, .locations = b2b_locs, .nlocations = 2},
};

struct env {
    struct atp_durable *d;
    struct atp_store *s;
    struct atp_store_config scfg;
    struct atp_recovery_report rep;
};

static struct atp_slice S(const char *s) {
    return atp_slice_cstr(s);
}

static int
env_open_rc(struct env *e, const char *dir, uint32_t max_res, uint64_t window_ms)
{
    memset(e, 0, sizeof(*e));
    struct atp_durable_config dc;
    atp_durable_config_defaults(&dc);
    dc.dir = dir;
    dc.snapshot_interval_ms = UINT64_MAX;
    dc.snapshot_log_bytes = UINT64_MAX;
    char msg[256];
    int rc = atp_durable_open(&dc, &e->d, msg);
    assert_int_equal(rc, 0);
    assert_false(atp_durable_ready(e->d));
    atp_store_config_defaults(&e->scfg);
    e->scfg.max_items = 8192;
    e->scfg.max_skus = 8192;
    e->scfg.max_reservations = max_res;
    e->scfg.max_overrides = 512;
    e->scfg.nshards = 8;
    e->scfg.channels = chans;
    e->scfg.nchannels = 3;
    if (window_ms)
        e->scfg.idempotency_window_ms = window_ms;
    e->scfg.journal = atp_durable_journal(e->d);
    assert_int_equal(atp_store_new(&e->scfg, &e->s), 0);
    return atp_durable_recover(e->d, e->s, &e->scfg, &e->rep);
}

static void env_open(struct env *e, const char *dir)
{
    int rc = env_open_rc(e, dir, 1024, 0);
    if (rc)
        fprintf(stderr, "recover: %s\n", atp_durable_errmsg(e->d));
    assert_int_equal(rc, 0);
    assert_true(atp_durable_ready(e->d));
}

static void env_crash(struct env *e)
{
    atp_store_stop_expirer(e->s);
    atp_durable_free(e->d);
    atp_store_free(e->s);
    e->d = NULL;
    e->s = NULL;
}

/* Every reservation is found by its key in `s`, with the same id. */
static int check_key(const struct atp_reservation *r, void *arg)
{
    struct atp_reservation got;
    assert_int_equal(atp_store_reservation_find(arg, (struct atp_slice){r->key, r->key_len}, &got),
                     0);
    assert_int_equal(got.id, r->id);
    return 0;
}

static void assert_same(struct atp_store *want, struct atp_store *got)
{
    char *a = store_dump(want), *b = store_dump(got);
    if (strcmp(a, b))
        dump_diff(a, b);
    assert_string_equal(b, a);
    free(a);
    free(b);
    atp_store_foreach_reservation(want, check_key, got);
}

static uint64_t reserve(struct atp_store *s, const char *key, uint32_t ch, uint64_t ttl_ms,
                        const struct atp_line_req *lines, uint32_t n, uint64_t now)
{
    struct atp_reserve_req req = {S(key), ch, ttl_ms, lines, n};
    struct atp_reservation r;
    bool replayed;
    assert_int_equal(atp_store_reserve(s, &req, now, &r, &replayed, NULL), 0);
    return r.id;
}

/* A store with something of everything. */
static void populate(struct env *e)
{
    struct atp_store *s = e->s;
    char sku[32];
    for (int i = 0; i < 200; i++) {
        snprintf(sku, sizeof(sku), "SKU-%03d", i);
        assert_int_equal(atp_store_adjust(s, S(sku), S("DC1"), 50 + i, NULL), 0);
        if (i % 3 == 0)
            assert_int_equal(atp_store_set(s, S(sku), S("DC2"), 40 + i, (uint64_t)(1000 + i)), 0);
        if (i % 7 == 0)
            assert_int_equal(atp_store_allocate(s, S(sku), S("DC1"), 5), 0);
    }
    assert_int_equal(atp_store_set(s, S("ZERO"), S("DC1"), 0, 0), 0); /* an empty item */
    assert_int_equal(atp_store_set_safety(s, S("SKU-001"), S(""), 1, 7), 0);
    assert_int_equal(atp_store_set_safety(s, S("SKU-002"), S("DC1"), 2, 3), 0);
    assert_int_equal(atp_store_set_safety(s, S("SKU-003"), S("DC2"), 0, 0), 0);
    assert_int_equal(atp_store_set_safety(s, S("SKU-004"), S(""), 0, 5), 0);
    assert_int_equal(atp_store_set_safety(s, S("SKU-004"), S(""), 0, -1), 0); /* removed */

    struct atp_line_req two[] = {{S("SKU-010"), S("DC1"), 2}, {S("SKU-011"), S(""), 3}};
    struct atp_line_req any[] = {{S("SKU-012"), S(""), 4}};
    struct atp_line_req one[] = {{S("SKU-013"), S("DC1"), 1}};
    uint64_t now = T0;
    reserve(s, "held-1", 0, 60000, two, 2, now);
    reserve(s, "held-b2b", 2, 60000, any, 1, now);
    uint64_t c = reserve(s, "committed", 1, 60000, two, 2, now);
    assert_int_equal(atp_store_commit(s, c, now + MS, NULL), 0);
    uint64_t pf = reserve(s, "part-fulfilled", 0, 60000, two, 2, now);
    assert_int_equal(atp_store_commit(s, pf, now + MS, NULL), 0);
    assert_int_equal(atp_store_fulfill(s, S("part-fulfilled"), 1, NULL), 0);
    uint64_t ff = reserve(s, "fulfilled", 0, 60000, one, 1, now);
    assert_int_equal(atp_store_commit(s, ff, now + MS, NULL), 0);
    assert_int_equal(atp_store_fulfill(s, S("fulfilled"), 0, NULL), 0);
    uint64_t rel = reserve(s, "released", 0, 60000, one, 1, now);
    assert_int_equal(atp_store_release(s, rel, now + MS, NULL), 0);
    uint64_t ext = reserve(s, "extended", 0, 60000, one, 1, now);
    assert_int_equal(atp_store_extend(s, ext, 120000, now + 2 * MS, NULL), 0);
    uint64_t ex = reserve(s, "expiring", 0, 10, one, 1, now);
    assert_int_equal(atp_store_expire_id(s, ex, now + 20 * MS), 0);
    struct atp_reservation r;
    assert_int_equal(atp_store_reservation_get(s, ex, &r), 0);
    assert_int_equal(r.state, ATP_RES_EXPIRED);

    atp_durable_event_start(e->d);
    assert_int_equal(atp_store_adjust(s, S("SKU-199"), S("DC1"), 1, NULL), 0);
    assert_int_equal(atp_durable_note_offset(e->d, "atp.events", 0, 1001, false), 0);
    assert_int_equal(atp_durable_note_offset(e->d, "atp.events", 1, 77, true), 0);
    assert_int_equal(atp_durable_note_offset(e->d, "other.topic", 0, 5, false), 0);
}

static void check_offsets(struct atp_durable *d)
{
    struct atp_durable_offset o[8];
    assert_int_equal(atp_durable_offsets(d, o, 8), 3);
    int seen = 0;
    for (int i = 0; i < 3; i++) {
        if (!strcmp(o[i].topic, "atp.events") && o[i].partition == 0)
            seen += o[i].next_offset == 1001 && !o[i].stale;
        if (!strcmp(o[i].topic, "atp.events") && o[i].partition == 1)
            seen += o[i].next_offset == 77 && o[i].stale;
        if (!strcmp(o[i].topic, "other.topic"))
            seen += o[i].next_offset == 5;
    }
    assert_int_equal(seen, 3);
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name), sl = strlen(suffix);
        n += l > sl && !strcmp(de->d_name + l - sl, suffix);
    }
    closedir(d);
    return n;
}

static char *only_file(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char *p = NULL;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name), sl = strlen(suffix);
        if (l > sl && !strcmp(de->d_name + l - sl, suffix))
            assert_true(asprintf(&p, "%s/%s", dir, de->d_name) > 0);
    }
    closedir(d);
    assert_non_null(p);
    return p;
}

/* --- round trips ------------------------------------------------------------------- */

/* Graceful close writes a snapshot; recovery from it alone equals the store. */
static void test_snapshot_roundtrip(void **state)
{
    (void)state;
    char *dir = tmp_dir("rec-snap");
    struct env e;
    env_open(&e, dir);
    populate(&e);
    char *want = store_dump(e.s);
    assert_int_equal(atp_durable_close(e.d, e.s), 0);
    struct atp_durable_stats st;
    atp_durable_stats(e.d, &st);
    assert_int_equal(st.snapshots, 1);
    assert_true(st.snapshot_bytes > 0);
    env_crash(&e);
    /* One snapshot and the (empty) segment that follows it. */
    assert_int_equal(count_files(dir, ".snap"), 1);
    assert_int_equal(count_files(dir, ".log"), 1);

    env_open(&e, dir);
    assert_true(e.rep.snapshot_pos > 0);
    assert_int_equal(e.rep.records, 0);
    assert_int_equal(e.rep.items, 202 + 67 - 1); /* DC1 x200, DC2 x67, ZERO */
    assert_int_equal(e.rep.overrides, 3);
    assert_int_equal(e.rep.reservations, 8);
    assert_int_equal(e.rep.offsets, 3);
    char *got = store_dump(e.s);
    if (strcmp(got, want))
        dump_diff(want, got);
    assert_string_equal(got, want);
    check_offsets(e.d);
    /* Restored reservations behave: the held one commits, keys answer. */
    struct atp_reservation r;
    assert_int_equal(atp_store_reservation_find(e.s, S("held-1"), &r), 0);
    assert_int_equal(atp_store_commit(e.s, r.id, T0 + 5 * MS, NULL), 0);
    struct atp_line_req one[] = {{S("SKU-013"), S("DC1"), 1}};
    struct atp_reserve_req req = {S("released"), 0, 60000, one, 1};
    bool replayed = false;
    assert_int_equal(atp_store_reserve(e.s, &req, T0, &r, &replayed, NULL), 0);
    assert_true(replayed);
    assert_int_equal(r.state, ATP_RES_RELEASED);
    free(got);
    got = store_dump(e.s);
    env_crash(&e);
    /* ... and those changes went to the log after the snapshot. */
    env_open(&e, dir);
    assert_int_equal(e.rep.records, 1);
    char *again = store_dump(e.s);
    assert_string_equal(again, got);
    env_crash(&e);
    free(again);
    free(got);
    free(want);
    rm_rf(dir);
    free(dir);
}

/*
 * An item's allocation is split between allocate events and commits, and a
 * deallocate takes only the events' part (store.c). The split survives the
 * log's replay and a snapshot (which stores only the total: restoring a
 * committed reservation moves its unshipped lines' share back).
 */
static void test_allocation_split_recovers(void **state)
{
    (void)state;
    char *dir = tmp_dir("rec-alloc-split");
    struct env e;
    env_open(&e, dir);
    assert_int_equal(atp_store_set(e.s, S("D1"), S("DC1"), 10, 1), 0);
    assert_int_equal(atp_store_allocate(e.s, S("D1"), S("DC1"), 3), 0);
    struct atp_line_req one[] = {{S("D1"), S("DC1"), 4}, {S("D1"), S("DC1"), 2}};
    struct atp_reserve_req req = {S("d1"), 0, 60000, one, 2};
    struct atp_reservation r;
    bool replayed;
    assert_int_equal(atp_store_reserve(e.s, &req, T0, &r, &replayed, NULL), 0);
    assert_int_equal(atp_store_commit(e.s, r.id, T0 + MS, NULL), 0);
    assert_int_equal(atp_store_fulfill(e.s, S("d1"), 1, NULL), 0); /* 2 shipped */
    char *want = store_dump(e.s);
    for (int round = 0; round < 2; round++) {
        env_crash(&e); /* round 0: from the log; round 1: from the snapshot */
        env_open(&e, dir);
        if (round == 1)
            assert_true(e.rep.snapshot_pos > 0);
        char *got = store_dump(e.s);
        assert_string_equal(got, want);
        free(got);
        struct atp_breakdown b;
        assert_int_equal(atp_store_get(e.s, S("D1"), S("DC1"), 0, &b), 0);
        assert_int_equal(b.on_hand, 8);
        assert_int_equal(b.allocated, 7); /* 3 by the event, 4 by the commit */
        /* the 4 committed are not the events' to take */
        assert_int_equal(atp_store_deallocate(e.s, S("D1"), S("DC1"), 4), ATP_ERANGE);
        if (round == 0)
            assert_int_equal(atp_durable_close(e.d, e.s), 0); /* a snapshot */
    }
    assert_int_equal(atp_store_deallocate(e.s, S("D1"), S("DC1"), 3), 0);
    assert_int_equal(atp_store_fulfill(e.s, S("d1"), 0, NULL), 0);
    struct atp_breakdown b;
    assert_int_equal(atp_store_get(e.s, S("D1"), S("DC1"), 0, &b), 0);
    assert_int_equal(b.on_hand, 4);
    assert_int_equal(b.allocated, 0);
    env_crash(&e);
    free(want);
    rm_rf(dir);
    free(dir);
}

/* A periodic snapshot: rebuilt from the closed log, the log before it deleted. */
static void test_compaction(void **state)
{
    (void)state;
    char *dir = tmp_dir("rec-compact");
    struct env e;
    env_open(&e, dir);
    populate(&e);
    char *mid = store_dump(e.s);
    assert_int_equal(atp_durable_snapshot(e.d), 0);
    assert_int_equal(count_files(dir, ".snap"), 1);
    assert_int_equal(count_files(dir, ".log"), 1); /* the segment before it is gone */
    /* A snapshot with nothing new since is a no-op. */
    assert_int_equal(atp_durable_snapshot(e.d), 0);
    /* The snapshot alone holds the state at that point. */
    char *snapdir = tmp_dir("rec-compact-copy");
    assert_int_equal(copy_dir(dir, snapdir), 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(atp_store_adjust(e.s, S("SKU-100"), S("DC1"), 1, NULL), 0);
    struct atp_reservation r;
    assert_int_equal(atp_store_reservation_find(e.s, S("committed"), &r), 0);
    assert_int_equal(atp_store_fulfill(e.s, S("committed"), 0, NULL), 0);
    assert_int_equal(atp_durable_snapshot(e.d), 0);
    assert_int_equal(atp_store_fulfill(e.s, S("committed"), 1, NULL), 0);
    assert_int_equal(atp_durable_note_offset(e.d, "atp.events", 0, 1001, false), 0);
    char *want = store_dump(e.s);
    env_crash(&e);
    struct env f;
    env_open(&f, dir);
    assert_int_equal(f.rep.records, 2);
    char *got = store_dump(f.s);
    if (strcmp(got, want))
        dump_diff(want, got);
    assert_string_equal(got, want);
    check_offsets(f.d);
    env_crash(&f);
    free(got);
    env_open(&f, snapdir);
    assert_int_equal(f.rep.records, 0);
    got = store_dump(f.s);
    assert_string_equal(got, mid);
    env_crash(&f);
    free(got);
    free(want);
    free(mid);
    rm_rf(snapdir);
    rm_rf(dir);
    free(snapdir);
    free(dir);
}

/* --- damage --------------------------------------------------------------------------- */

static void expect_refusal(const char *dir, const char *what)
{
    struct env e;
    assert_int_equal(env_open_rc(&e, dir, 1024, 0), ATP_EINVAL);
    const char *m = atp_durable_errmsg(e.d);
    assert_non_null(m);
    if (!strstr(m, what) || !strstr(m, "refusing to start"))
        fprintf(stderr, "message: %s\n", m ? m : "");
    assert_non_null(strstr(m, what));
    assert_non_null(strstr(m, "refusing to start"));
    assert_false(atp_durable_ready(e.d));
    env_crash(&e);
}

static void test_snapshot_damage(void **state)
{
    (void)state;
    char *dir = tmp_dir("rec-damage");
    struct env e;
    env_open(&e, dir);
    populate(&e);
    assert_int_equal(atp_durable_close(e.d, e.s), 0);
    env_crash(&e);
    char *snap = only_file(dir, ".snap");
    size_t size = file_size(snap);
    char *copy = tmp_dir("rec-damage-copy");
    char *csnap = NULL;
    assert_true(asprintf(&csnap, "%s/%s", copy, strrchr(snap, '/') + 1) > 0);

    /* A flipped byte anywhere: header, block headers, bodies, end block. */
    size_t offs[] = {3, 40, size / 3, size / 2, size - 20, size - 1};
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        rm_rf(copy);
        copy_dir(dir, copy);
        FILE *f = fopen(csnap, "r+b");
        fseek(f, (long)offs[i], SEEK_SET);
        int c = fgetc(f);
        fseek(f, (long)offs[i], SEEK_SET);
        fputc(c ^ 0x01, f);
        fclose(f);
        expect_refusal(copy, "snapshot");
    }
    /* Truncated anywhere. */
    size_t cuts[] = {10, 200, size / 2, size - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        rm_rf(copy);
        copy_dir(dir, copy);
        copy_file(snap, csnap, cuts[i]);
        expect_refusal(copy, cuts[i] < 100 ? "snapshot" : "truncated");
    }
    /* Extra bytes after the end block. */
    rm_rf(copy);
    copy_dir(dir, copy);
    FILE *f = fopen(csnap, "ab");
    fputs("junk", f);
    fclose(f);
    expect_refusal(copy, "after the end block");
    /* The log after the snapshot deleted. */
    rm_rf(copy);
    copy_dir(dir, copy);
    char *seg = only_file(copy, ".log");
    unlink(seg);
    expect_refusal(copy, "is missing");
    /* A configuration without a channel the snapshot uses. */
    rm_rf(copy);
    copy_dir(dir, copy);
    {
        struct atp_durable_config dc;
        atp_durable_config_defaults(&dc);
        dc.dir = copy;
        char msg[256];
        assert_int_equal(atp_durable_open(&dc, &e.d, msg), 0);
        atp_store_config_defaults(&e.scfg);
        e.scfg.max_items = 8192;
        e.scfg.channels = chans;
        e.scfg.nchannels = 2; /* no b2b */
        e.scfg.journal = atp_durable_journal(e.d);
        assert_int_equal(atp_store_new(&e.scfg, &e.s), 0);
        assert_int_equal(atp_durable_recover(e.d, e.s, &e.scfg, &e.rep), ATP_EINVAL);
        assert_non_null(strstr(atp_durable_errmsg(e.d), "channel 'b2b'"));
        env_crash(&e);
    }
    /* Fewer reservation slots than the ids in the snapshot. */
    rm_rf(copy);
    copy_dir(dir, copy);
    assert_int_equal(env_open_rc(&e, copy, 2, 0), ATP_EINVAL);
    assert_non_null(strstr(atp_durable_errmsg(e.d), "max_reservations"));
    env_crash(&e);
    /* The untouched original still recovers. */
    env_open(&e, dir);
    env_crash(&e);
    free(seg);
    free(csnap);
    free(snap);
    rm_rf(copy);
    rm_rf(dir);
    free(copy);
    free(dir);
}

/* --- concurrency ---------------------------------------------------------------------- */

#define NSKU     16
#define NTHREADS 3

struct conc {
    struct env *e;
    atomic_int stop;
    atomic_ulong ops;
    int id;
};

static void *resv_thread(void *arg)
{
    struct conc *c = arg;
    struct atp_store *s = c->e->s;
    unsigned seed = (unsigned)c->id * 7919u + 1;
    uint64_t held[64];
    int nheld = 0;
    for (unsigned long i = 0; !atomic_load(&c->stop); i++) {
        uint64_t now = atp_now_us();
        unsigned r = rand_r(&seed);
        if (nheld < 64 && (r % 4 != 0 || nheld == 0)) {
            char key[48], sku[16];
            snprintf(key, sizeof(key), "t%d-k%lu", c->id, i % 5000); /* keys come back */
            snprintf(sku, sizeof(sku), "C%02u", r % NSKU);
            struct atp_line_req l[2] = {{S(sku), (r & 16) ? S("") : S("DC1"), 1 + (r >> 8) % 3},
                                        {S("C00"), S("DC2"), 1}};
            struct atp_reserve_req req = {S(key), r % 3, 1 + (r >> 4) % 40, l, 1 + (r >> 12) % 2};
            struct atp_reservation out;
            bool replayed;
            if (atp_store_reserve(s, &req, now, &out, &replayed, NULL) == 0 && !replayed)
                held[nheld++] = out.id;
        } else {
            int k = (int)(r % (unsigned)nheld);
            uint64_t id = held[k];
            held[k] = held[--nheld];
            switch ((r >> 8) % 4) {
            case 0:
                atp_store_commit(s, id, now, NULL);
                break;
            case 1:
                atp_store_release(s, id, now, NULL);
                break;
            case 2:
                atp_store_extend(s, id, 20, now, NULL);
                break;
            default:
                break; /* left to expire */
            }
        }
        atomic_fetch_add(&c->ops, 1);
    }
    return NULL;
}

static void *event_thread(void *arg)
{
    struct conc *c = arg;
    struct atp_store *s = c->e->s;
    unsigned seed = 4242;
    for (int64_t off = 0; !atomic_load(&c->stop); off++) {
        char sku[16];
        unsigned r = rand_r(&seed);
        snprintf(sku, sizeof(sku), "C%02u", r % NSKU);
        atp_durable_event_start(c->e->d);
        switch (r % 5) {
        case 0:
            atp_store_set(s, S(sku), S("DC2"), 500 + r % 100, (uint64_t)off + 1);
            break;
        case 1:
            atp_store_allocate(s, S(sku), S("DC1"), 1);
            break;
        case 2:
            atp_store_set_safety(s, S(sku), S(""), r % 3, (r >> 4) % 4);
            break;
        default:
            atp_store_adjust(s, S(sku), S("DC1"), 1 + r % 5, NULL);
        }
        atp_durable_note_offset(c->e->d, "atp.events", (int32_t)(r % 2), off + 1, false);
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void *snap_thread(void *arg)
{
    struct conc *c = arg;
    while (!atomic_load(&c->stop)) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (!atomic_load(&c->stop))
            assert_int_equal(atp_durable_snapshot(c->e->d), 0);
    }
    return NULL;
}

static void test_concurrent_replay(void **state)
{
    (void)state;
    char *dir = tmp_dir("rec-conc");
    struct env e;
    /* A 30 ms window: records are reclaimed, their slots and keys reused. */
    assert_int_equal(env_open_rc(&e, dir, 4096, 30), 0);
    for (int i = 0; i < NSKU; i++) {
        char sku[16];
        snprintf(sku, sizeof(sku), "C%02d", i);
        assert_int_equal(atp_store_adjust(e.s, S(sku), S("DC1"), 100000, NULL), 0);
        assert_int_equal(atp_store_adjust(e.s, S(sku), S("DC2"), 100000, NULL), 0);
    }
    assert_int_equal(atp_store_start_expirer(e.s, 1000), 0);
    struct conc c[NTHREADS + 2];
    pthread_t th[NTHREADS + 2];
    for (int i = 0; i < NTHREADS + 2; i++) {
        c[i] = (struct conc){.e = &e, .id = i};
        pthread_create(&th[i], NULL,
                       i < NTHREADS    ? resv_thread
                       : i == NTHREADS ? event_thread
                                       : snap_thread,
                       &c[i]);
    }
    struct timespec ts = {1, 500 * 1000 * 1000};
    nanosleep(&ts, NULL);
    for (int i = 0; i < NTHREADS + 2; i++)
        atomic_store(&c[i].stop, 1);
    unsigned long ops = 0;
    for (int i = 0; i < NTHREADS + 2; i++) {
        pthread_join(th[i], NULL);
        ops += atomic_load(&c[i].ops);
    }
    atp_store_stop_expirer(e.s);
    /* A log tail after the last snapshot, whenever that one was taken. */
    assert_int_equal(atp_store_adjust(e.s, S("C01"), S("DC1"), 3, NULL), 0);
    assert_int_equal(atp_store_allocate(e.s, S("C02"), S("DC1"), 2), 0);
    struct atp_durable_stats st;
    atp_durable_stats(e.d, &st);
    struct atp_store_stats ss;
    atp_store_stats(e.s, &ss);
    fprintf(stderr,
            "%lu reservation ops, %" PRIu64 " records, %" PRIu64 " fsyncs, %" PRIu64
            " snapshots, %" PRIu64 " expirations\n",
            ops, st.records, st.fsyncs, st.snapshots, ss.expirations);
    assert_true(st.snapshots >= 1);
    assert_true(ss.expirations > 0);
    assert_int_equal(st.failed, 0);
    struct atp_durable_offset want_off[4];
    size_t nwo = atp_durable_offsets(e.d, want_off, 4);

    /* Crash (no final snapshot) and recover: snapshot + log. */
    struct atp_store *live = e.s;
    atp_durable_free(e.d);
    struct env f;
    assert_int_equal(env_open_rc(&f, dir, 4096, 30), 0);
    assert_true(f.rep.snapshot_pos > 0);
    assert_true(f.rep.records >= 2);
    assert_same(live, f.s);
    struct atp_durable_offset got_off[4];
    assert_int_equal(atp_durable_offsets(f.d, got_off, 4), nwo);
    for (size_t i = 0; i < nwo; i++)
        assert_int_equal(got_off[i].next_offset, want_off[i].next_offset);
    env_crash(&f);
    /* The recovered store served on: reclaims replayed, and it still recovers. */
    atp_store_free(live);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_snapshot_roundtrip),        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_allocation_split_recovers), cmocka_unit_test(test_snapshot_damage),
        cmocka_unit_test(test_concurrent_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
