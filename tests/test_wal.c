/*
 * test_wal.c - the write-ahead log (src/wal.c, src/recover.c), suite `unit`.
 *
 * The record codec; records ended out of position order reach the disk in
 * order and nothing later is acknowledged before an earlier one; the log
 * cut at every byte of its last records recovers to the last whole record
 * (and keeps working after); a flipped byte in the middle refuses to start
 * (and `repair` cuts there); the fsync policies; Kafka offsets written with
 * their event so a cut never separates them.
 *
 * Two more modes run as their own meson tests (their setup needs root or an
 * LD_PRELOAD): `test_wal full-disk` (a 64 KiB tmpfs fills up: clear error,
 * nothing acknowledged lost; exit 77 when mounting is not permitted) and
 * `test_wal fsync-fail` (tools/fsync_fail_shim.so makes fdatasync fail on
 * demand: the failure is final and nothing acknowledged is lost).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/durable.h"
#include "atp/store.h"
#include "durable_check.h"
#include "durable_int.h"

#define T0 UINT64_C(1700000000000000)
#define MS UINT64_C(1000)

static const struct atp_channel_config chans[] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 1, .cap = -1},
};

/* One durable store in a folder. */
struct env {
    char *dir;
    struct atp_durable *d;
    struct atp_store *s;
    struct atp_store_config scfg;
    struct atp_recovery_report rep;
    int policy;
};

static void scfg_init(struct atp_store_config *c)
{
    atp_store_config_defaults(c);
    c->max_items = 4096;
    c->max_skus = 4096;
    c->max_reservations = 1024;
    c->max_overrides = 256;
    c->nshards = 4;
    c->channels = chans;
    c->nchannels = 2;
}

/* Open dir, recover; returns the recover code (the env is usable only on 0). */
static int env_open_rc(struct env *e, const char *dir, int policy, bool repair)
{
    memset(&e->rep, 0, sizeof(e->rep));
    e->policy = policy;
    struct atp_durable_config dc;
    atp_durable_config_defaults(&dc);
    dc.dir = dir;
    dc.fsync = policy;
    dc.repair = repair;
    dc.ring_slots = 64; /* small: exercises the ring wrapping */
    dc.snapshot_interval_ms = UINT64_MAX;
    dc.snapshot_log_bytes = UINT64_MAX;
    char msg[256];
    int rc = atp_durable_open(&dc, &e->d, msg);
    if (rc) {
        fprintf(stderr, "open: %s\n", msg);
        return rc;
    }
    scfg_init(&e->scfg);
    e->scfg.journal = atp_durable_journal(e->d);
    assert_int_equal(atp_store_new(&e->scfg, &e->s), 0);
    rc = atp_durable_recover(e->d, e->s, &e->scfg, &e->rep);
    return rc;
}

static void env_open(struct env *e, const char *dir, int policy)
{
    int rc = env_open_rc(e, dir, policy, false);
    if (rc)
        fprintf(stderr, "recover: %s\n", atp_durable_errmsg(e->d));
    assert_int_equal(rc, 0);
}

/* Stop without a snapshot, as close to a crash as a library test gets. */
static void env_crash(struct env *e)
{
    atp_durable_free(e->d);
    atp_store_free(e->s);
    e->d = NULL;
    e->s = NULL;
}

static void env_close(struct env *e)
{
    assert_int_equal(atp_durable_close(e->d, e->s), 0);
    env_crash(e);
}

static struct atp_slice S(const char *s) {
    return atp_slice_cstr(s);
}

static uint64_t
reserve1(struct atp_store *s, const char *key, const char *sku, const char *loc, int64_t qty,
         uint64_t now)
{
    struct atp_line_req l = {S(sku), S(loc), qty};
    struct atp_reserve_req req = {S(key), 0, 60000, &l, 1};
    struct atp_reservation r;
    bool replayed;
    int rc = atp_store_reserve(s, &req, now, &r, &replayed, NULL);
    assert_int_equal(rc, 0);
    return r.id;
}

static void wait_synced(struct env *e)
{
    uint64_t p = atp_durable_tls_pos();
    if (e->policy == ATP_FSYNC_ALWAYS)
        assert_int_equal(atp_durable_wait(e->d, p, 5000), 0);
}

/* --- codec ------------------------------------------------------------------------ */

static void roundtrip(const struct atp_journal_rec *in, bool with_offset)
{
    uint8_t buf[WAL_HDR + WAL_MAX_BODY];
    struct wbuf b = {buf + WAL_HDR, 0, WAL_MAX_BODY, false, true};
    assert_int_equal(wal_put_body(&b, in), 0);
    unsigned flags = 0;
    if (with_offset) {
        wal_put_offset(&b, S("atp.events"), 7, 123456789, true);
        flags = WAL_F_OFFSET;
    }
    assert_false(b.oom);
    wal_seal(buf, in->type, flags, (uint32_t)b.len, 4242);
    long n = wal_check(buf, WAL_HDR + b.len + 10);
    assert_int_equal(n, (long)(WAL_HDR + b.len));
    struct wal_rec w;
    assert_int_equal(wal_decode(buf, (size_t)n, &w), 0);
    assert_int_equal(w.type, in->type);
    assert_int_equal(w.pos, 4242);
    const struct atp_journal_rec *j = &w.j;
    assert_int_equal(j->sku.len, in->sku.len);
    assert_memory_equal(j->sku.p, in->sku.p, in->sku.len);
    assert_int_equal(j->loc.len, in->loc.len);
    assert_memory_equal(j->loc.p, in->loc.p, in->loc.len);
    assert_int_equal(j->key.len, in->key.len);
    assert_memory_equal(j->key.p, in->key.p, in->key.len);
    assert_int_equal(j->qty, in->qty);
    assert_int_equal(j->seq, in->seq);
    assert_int_equal(j->channel, in->channel);
    assert_int_equal(j->id, in->id);
    assert_int_equal(j->now_us, in->now_us);
    assert_int_equal(j->ttl_ms, in->ttl_ms);
    assert_int_equal(j->line, in->line);
    if (in->res) {
        const struct atp_reservation *a = in->res, *r = j->res;
        assert_non_null(r);
        assert_int_equal(r->id, a->id);
        assert_int_equal(r->state, a->state);
        assert_int_equal(r->channel, a->channel);
        assert_int_equal(r->created_us, a->created_us);
        assert_int_equal(r->expires_us, a->expires_us);
        assert_int_equal(r->ttl_ms, a->ttl_ms);
        assert_int_equal(r->key_len, a->key_len);
        assert_memory_equal(r->key, a->key, a->key_len);
        assert_int_equal(r->nlines, a->nlines);
        for (uint32_t i = 0; i < a->nlines; i++) {
            assert_int_equal(r->lines[i].qty, a->lines[i].qty);
            assert_int_equal(r->lines[i].fulfilled, a->lines[i].fulfilled);
            assert_int_equal(r->lines[i].any, a->lines[i].any);
            assert_int_equal(r->lines[i].sku.len, a->lines[i].sku.len);
            assert_memory_equal(r->lines[i].sku.p, a->lines[i].sku.p, a->lines[i].sku.len);
            assert_memory_equal(r->lines[i].loc.p, a->lines[i].loc.p, a->lines[i].loc.len);
        }
    }
    assert_int_equal(w.has_offset, with_offset);
    if (with_offset) {
        assert_int_equal(w.topic.len, 10);
        assert_memory_equal(w.topic.p, "atp.events", 10);
        assert_int_equal(w.partition, 7);
        assert_int_equal(w.next_offset, 123456789);
        assert_true(w.stale);
    }
    /* Every proper prefix is "torn", every single-bit flip is invalid. */
    for (size_t k = 0; k < (size_t)n; k++)
        assert_int_equal(wal_check(buf, k), 0);
    for (size_t k = 0; k < (size_t)n; k++)
        for (int bit = 0; bit < 8; bit++) {
            buf[k] ^= (uint8_t)(1u << bit);
            assert_true(wal_check(buf, (size_t)n) <= 0);
            buf[k] ^= (uint8_t)(1u << bit);
        }
}

static void test_codec(void **state)
{
    (void)state;
    struct atp_reservation res = {.id = (UINT64_C(6) << 32) | 17,
                                  .state = ATP_RES_HELD,
                                  .channel = 1,
                                  .created_us = T0,
                                  .expires_us = T0 + 60000 * MS,
                                  .ttl_ms = 60000,
                                  .key = "order-123",
                                  .key_len = 9,
                                  .nlines = ATP_MAX_LINES};
    for (uint32_t i = 0; i < ATP_MAX_LINES; i++)
        res.lines[i] = (struct atp_res_line){
            S("SKU-0123456789-0123456789-0123456789-0123456789-0123456789-01234"),
            S("LOC-0123456789-0123456789-012345"), 1000000 + i, i & 1, (i & 2) != 0};
    const struct atp_journal_rec recs[] = {
        {.type = ATP_J_ADJUST, .sku = S("A"), .loc = S("L1"), .qty = -5},
        {.type = ATP_J_SET, .sku = S("A"), .loc = S("L1"), .qty = 77, .seq = 99},
        {.type = ATP_J_ALLOCATE, .sku = S("A"), .loc = S("L1"), .qty = 3},
        {.type = ATP_J_DEALLOCATE, .sku = S("A"), .loc = S("L1"), .qty = 2},
        {.type = ATP_J_SAFETY, .sku = S("A"), .loc = S(""), .channel = 1, .qty = -1},
        {.type = ATP_J_RESERVE, .id = res.id, .res = &res},
        {.type = ATP_J_COMMIT, .id = 5, .now_us = T0},
        {.type = ATP_J_RELEASE, .id = 6, .now_us = T0 + 1},
        {.type = ATP_J_EXTEND, .id = 7, .now_us = T0 + 2, .ttl_ms = 1000},
        {.type = ATP_J_EXPIRE, .id = 8, .now_us = T0 + 3},
        {.type = ATP_J_FULFILL, .key = S("order-9"), .id = 9, .line = 3},
        {.type = ATP_J_RECLAIM, .id = 10, .now_us = T0 + 4},
    };
    for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++) {
        roundtrip(&recs[i], false);
        roundtrip(&recs[i], true);
    }
    /* The largest record fits the bound the format promises. */
    uint8_t buf[WAL_HDR + WAL_MAX_BODY];
    struct wbuf b = {buf, 0, sizeof(buf), false, true};
    assert_int_equal(wal_put_body(&b, &recs[5]), 0);
    assert_false(b.oom);
    /* An unknown type is refused by the encoder and the checker. */
    struct atp_journal_rec bad = {.type = 99};
    b.len = 0;
    assert_int_equal(wal_put_body(&b, &bad), ATP_EINVAL);
    memset(buf, 0, sizeof(buf));
    wal_seal(buf, 99, 0, 0, 1);
    assert_int_equal(wal_check(buf, WAL_HDR), -1);
    /* Zeros (a tail the kernel extended but never wrote) are not a record. */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(wal_check(buf, sizeof(buf)), -1);
}

/* --- positions ---------------------------------------------------------------------- */

/* Out-of-order ends reach the disk in position order; an open position holds back later ones. */
static void test_out_of_order(void **state)
{
    (void)state;
    char *dir = tmp_dir("wal-order");
    struct env e;
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    const struct atp_journal *j = atp_durable_journal(e.d);
    /* 200 rounds: three positions ended 3, 1, 2 (the ring has 64 slots). */
    for (int round = 0; round < 200; round++) {
        uint64_t p1 = j->begin(j->arg), p2 = j->begin(j->arg), p3 = j->begin(j->arg);
        assert_true(p1 < p2 && p2 < p3);
        struct atp_journal_rec r3 = {.type = ATP_J_SET, .sku = S("X"), .loc = S("L"), .qty = 3};
        struct atp_journal_rec r1 = {.type = ATP_J_SET, .sku = S("X"), .loc = S("L"), .qty = 1};
        j->end(j->arg, p3, &r3);
        if (round < 3) {
            /* Nothing at or after p1 is acknowledged while p1 is open. */
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            assert_true(atp_durable_pos_synced(e.d) < p1);
            assert_false(atp_durable_acked(e.d, p3));
            assert_int_equal(atp_durable_wait(e.d, p3, 50), -ETIMEDOUT);
        }
        j->end(j->arg, p1, &r1);
        j->end(j->arg, p2, NULL); /* a lost CAS: the position holds nothing */
        assert_int_equal(atp_durable_wait(e.d, p3, 5000), 0);
        assert_true(atp_durable_pos_synced(e.d) >= p3);
    }
    env_crash(&e);
    /* Replayed in position order: every round ends with the set to 3. */
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    assert_int_equal(e.rep.records, 400);
    struct atp_breakdown bd;
    assert_int_equal(atp_store_get(e.s, S("X"), S("L"), 0, &bd), 0);
    assert_int_equal(bd.on_hand, 3);
    env_crash(&e);
    rm_rf(dir);
    free(dir);
}

/* --- a workload with one record per step -------------------------------------------- */

#define STEPS 63

/* Step k of a deterministic workload: every step makes exactly one record. */
static void step(struct atp_store *s, int k, uint64_t *ids)
{
    uint64_t now = T0 + (uint64_t)k * MS;
    char key[32], sku[32];
    snprintf(key, sizeof(key), "order-%d", k);
    snprintf(sku, sizeof(sku), "SKU-%d", k % 5);
    if (k < 5) {
        assert_int_equal(atp_store_adjust(s, S(sku), S("DC1"), 100, NULL), 0);
        return;
    }
    switch (k % 9) {
    case 0:
        assert_int_equal(atp_store_adjust(s, S(sku), S("DC1"), k, NULL), 0);
        break;
    case 1:
    case 3:
    case 7:
        ids[k] = reserve1(s, key, sku, "DC1", 1 + k % 3, now);
        break;
    case 2:
        assert_int_equal(atp_store_commit(s, ids[k - 1], now, NULL), 0);
        break;
    case 4:
        assert_int_equal(atp_store_release(s, ids[k - 1], now, NULL), 0);
        break;
    case 5:
        assert_int_equal(atp_store_set(s, S(sku), S("DC2"), k, (uint64_t)k), 0);
        break;
    case 6:
        assert_int_equal(atp_store_set_safety(s, S(sku), S("DC1"), 1, k % 3), 0);
        break;
    case 8:
        assert_int_equal(atp_store_extend(s, ids[k - 1], 1000, now, NULL), 0);
        break;
    }
}

/* Run the workload in dir; dumps[k] is the store after step k (k < STEPS). */
static void run_workload(const char *dir, char **dumps)
{
    struct env e;
    uint64_t ids[STEPS] = {0};
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    for (int k = 0; k < STEPS; k++) {
        uint64_t before = atp_durable_pos_begun(e.d);
        step(e.s, k, ids);
        /* exactly one new position, taken by this thread */
        assert_int_equal(atp_durable_pos_begun(e.d), before + 1);
        assert_int_equal(atp_durable_tls_pos(), before + 1);
        wait_synced(&e);
        dumps[k] = store_dump(e.s);
    }
    env_crash(&e);
}

/* Byte offsets where each record of a segment ends. */
static size_t record_ends(const char *path, size_t *ends, size_t max, size_t *ret_hdr)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[1 << 20];
    size_t size = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    uint32_t hl;
    memcpy(&hl, buf + 12, 4);
    *ret_hdr = hl;
    size_t n = 0, off = hl;
    while (off < size && n < max) {
        long r = wal_check(buf + off, size - off);
        assert_true(r > 0);
        off += (size_t)r;
        ends[n++] = off;
    }
    assert_int_equal(off, size);
    return n;
}

static char *seg_path(const char *dir, uint64_t start)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/" SEG_NAME_FMT, dir, start) > 0);
    return p;
}

/* The recovered store equals the original: every item, override, reservation. */
static void test_log_roundtrip(void **state)
{
    (void)state;
    char *dir = tmp_dir("wal-rt");
    char *dumps[STEPS];
    run_workload(dir, dumps);
    struct env e;
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    assert_int_equal(e.rep.records, STEPS);
    assert_int_equal(e.rep.torn_bytes, 0);
    char *got = store_dump(e.s);
    dump_diff(dumps[STEPS - 1], got);
    assert_string_equal(got, dumps[STEPS - 1]);
    free(got);
    /* Positions continue after the replayed ones; appending works. */
    assert_true(e.rep.next_pos > (uint64_t)STEPS);
    assert_int_equal(atp_store_adjust(e.s, S("SKU-0"), S("DC1"), 5, NULL), 0);
    wait_synced(&e);
    char *more = store_dump(e.s);
    env_crash(&e);
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    got = store_dump(e.s);
    assert_string_equal(got, more);
    free(got);
    free(more);
    /* A second atpd on the same folder is refused. */
    struct atp_durable_config dc;
    atp_durable_config_defaults(&dc);
    dc.dir = dir;
    struct atp_durable *d2;
    char msg[256];
    assert_int_equal(atp_durable_open(&dc, &d2, msg), -EBUSY);
    assert_non_null(strstr(msg, "another atpd"));
    env_crash(&e);
    for (int k = 0; k < STEPS; k++)
        free(dumps[k]);
    rm_rf(dir);
    free(dir);
}

/*
 * Cut the log at every byte offset inside its last records: recovery keeps
 * exactly the whole records before the cut, reports the torn bytes, trims
 * them, and later appends recover too.
 */
static void test_cut_every_byte(void **state)
{
    (void)state;
    char *dir = tmp_dir("wal-cut");
    char *dumps[STEPS];
    run_workload(dir, dumps);
    char *src = seg_path(dir, 1);
    size_t ends[STEPS + 1], hl;
    size_t n = record_ends(src, ends, STEPS + 1, &hl);
    assert_int_equal(n, STEPS);
    size_t from = ends[STEPS - 7]; /* the last 6 records, every byte */
    char *cutdir = tmp_dir("wal-cut-copy");
    char *dst = seg_path(cutdir, 1);
    for (size_t cut = from; cut <= ends[STEPS - 1]; cut++) {
        copy_file(src, dst, cut);
        size_t whole = 0;
        while (whole < n && ends[whole] <= cut)
            whole++;
        struct env e;
        env_open(&e, cutdir, ATP_FSYNC_ALWAYS);
        assert_int_equal(e.rep.records, whole);
        assert_int_equal(e.rep.torn_bytes, cut - ends[whole - 1]);
        assert_int_equal(file_size(dst), ends[whole - 1]); /* trimmed */
        char *got = store_dump(e.s);
        if (strcmp(got, dumps[whole - 1]))
            dump_diff(dumps[whole - 1], got);
        assert_string_equal(got, dumps[whole - 1]);
        free(got);
        if (cut == from + 3) {
            /* The trimmed log takes new records and recovers them. */
            assert_int_equal(atp_store_adjust(e.s, S("SKU-1"), S("DC9"), 9, NULL), 0);
            wait_synced(&e);
            char *want = store_dump(e.s);
            env_crash(&e);
            env_open(&e, cutdir, ATP_FSYNC_ALWAYS);
            assert_int_equal(e.rep.torn_bytes, 0);
            got = store_dump(e.s);
            assert_string_equal(got, want);
            free(got);
            free(want);
        }
        env_crash(&e);
        unlink(dst);
    }
    /* A cut inside the segment header itself leaves nothing to trust. */
    copy_file(src, dst, hl - 3);
    struct env e;
    assert_int_equal(env_open_rc(&e, cutdir, ATP_FSYNC_ALWAYS, false), ATP_EINVAL);
    assert_non_null(strstr(atp_durable_errmsg(e.d), "refusing to start"));
    env_crash(&e);
    for (int k = 0; k < STEPS; k++)
        free(dumps[k]);
    rm_rf(cutdir);
    rm_rf(dir);
    free(src);
    free(dst);
    free(cutdir);
    free(dir);
}

static void flip_byte(const char *path, size_t off)
{
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, (long)off, SEEK_SET);
    int c = fgetc(f);
    fseek(f, (long)off, SEEK_SET);
    fputc(c ^ 0x10, f);
    fclose(f);
}

/* A flipped byte followed by valid records is damage: refuse; repair cuts there. */
static void test_flip_refuses(void **state)
{
    (void)state;
    char *dir = tmp_dir("wal-flip");
    char *dumps[STEPS];
    run_workload(dir, dumps);
    char *src = seg_path(dir, 1);
    size_t ends[STEPS + 1], hl;
    record_ends(src, ends, STEPS + 1, &hl);
    char *cdir = tmp_dir("wal-flip-copy");
    char *dst = seg_path(cdir, 1);
    /* Every byte of a record in the middle (header and body). */
    int k = STEPS / 2;
    for (size_t off = ends[k - 1]; off < ends[k]; off++) {
        copy_file(src, dst, SIZE_MAX);
        flip_byte(dst, off);
        struct env e;
        assert_int_equal(env_open_rc(&e, cdir, ATP_FSYNC_ALWAYS, false), ATP_EINVAL);
        const char *m = atp_durable_errmsg(e.d);
        assert_non_null(strstr(m, "damaged"));
        assert_non_null(strstr(m, "refusing to start"));
        env_crash(&e);
        assert_int_equal(file_size(dst), ends[STEPS - 1]); /* nothing was cut */
    }
    /* The segment header. */
    copy_file(src, dst, SIZE_MAX);
    flip_byte(dst, 20);
    struct env e;
    assert_int_equal(env_open_rc(&e, cdir, ATP_FSYNC_ALWAYS, false), ATP_EINVAL);
    assert_non_null(strstr(atp_durable_errmsg(e.d), "damaged header"));
    env_crash(&e);
    /* repair: cut at the damage, keep what precedes it, report it. */
    copy_file(src, dst, SIZE_MAX);
    flip_byte(dst, ends[k - 1] + 25);
    assert_int_equal(env_open_rc(&e, cdir, ATP_FSYNC_ALWAYS, true), 0);
    assert_int_equal(e.rep.records, (uint64_t)k);
    assert_int_equal(e.rep.repaired_bytes, ends[STEPS - 1] - ends[k - 1]);
    char *got = store_dump(e.s);
    assert_string_equal(got, dumps[k - 1]);
    free(got);
    env_crash(&e);
    /* A flip in the very last record cannot be told from a torn write. */
    copy_file(src, dst, SIZE_MAX);
    flip_byte(dst, ends[STEPS - 1] - 2);
    env_open(&e, cdir, ATP_FSYNC_ALWAYS);
    assert_int_equal(e.rep.records, STEPS - 1);
    assert_true(e.rep.torn_bytes > 0);
    env_crash(&e);
    for (int i = 0; i < STEPS; i++)
        free(dumps[i]);
    rm_rf(cdir);
    rm_rf(dir);
    free(src);
    free(dst);
    free(cdir);
    free(dir);
}

/* --- policies ---------------------------------------------------------------------- */

static void test_policies(void **state)
{
    (void)state;
    for (int policy = ATP_FSYNC_ALWAYS; policy <= ATP_FSYNC_NO; policy++) {
        char *dir = tmp_dir("wal-policy");
        struct env e;
        env_open(&e, dir, policy);
        for (int i = 0; i < 100; i++)
            assert_int_equal(atp_store_adjust(e.s, S("P"), S("L"), 1, NULL), 0);
        uint64_t p = atp_durable_tls_pos();
        struct atp_durable_stats st;
        if (policy == ATP_FSYNC_ALWAYS) {
            assert_int_equal(atp_durable_wait(e.d, p, 5000), 0);
            assert_true(atp_durable_pos_synced(e.d) >= p);
            atp_durable_stats(e.d, &st);
            assert_true(st.fsyncs >= 1 && st.fsyncs <= 100); /* grouped */
        } else {
            assert_true(atp_durable_acked(e.d, p)); /* acknowledged at once */
            assert_int_equal(atp_durable_wait(e.d, p, 1), 0);
            if (policy == ATP_FSYNC_EVERYSEC) {
                /* Flushed within about a second. */
                uint64_t t = durable_now_us();
                while (atp_durable_pos_synced(e.d) < p && durable_now_us() - t < 3000000) {
                    struct timespec ts = {0, 10 * 1000 * 1000};
                    nanosleep(&ts, NULL);
                }
                assert_true(atp_durable_pos_synced(e.d) >= p);
            } else {
                /* Written to the file soon (the writer thread, no fsync):
                 * waited for, as a loaded machine may not have run it yet. */
                uint64_t t = durable_now_us();
                for (;;) {
                    atp_durable_stats(e.d, &st);
                    if (st.pos_written >= p || durable_now_us() - t >= 3000000)
                        break;
                    struct timespec ts = {0, 10 * 1000 * 1000};
                    nanosleep(&ts, NULL);
                }
                assert_int_equal(st.fsyncs, 0);
                assert_true(st.pos_written >= p);
            }
        }
        assert_int_equal(atp_durable_failed(e.d), 0);
        assert_int_equal(*atp_durable_refuse_flag(e.d), 0);
        assert_true(atp_durable_ready(e.d));
        env_close(&e);
        env_open(&e, dir, policy);
        struct atp_breakdown bd;
        assert_int_equal(atp_store_get(e.s, S("P"), S("L"), 0, &bd), 0);
        assert_int_equal(bd.on_hand, 100);
        env_crash(&e);
        rm_rf(dir);
        free(dir);
    }
    int p;
    assert_int_equal(atp_fsync_policy_parse("everysec", &p), 0);
    assert_int_equal(p, ATP_FSYNC_EVERYSEC);
    assert_int_equal(atp_fsync_policy_parse("sometimes", &p), ATP_EINVAL);
    assert_string_equal(atp_fsync_policy_name(ATP_FSYNC_NO), "no");
}

/* --- Kafka offsets ------------------------------------------------------------------------ */

/*
 * An event's store record and its offset are one log record, so at every
 * cut the recovered on_hand equals the sum of the events below the recovered
 * offset: each event applied exactly once across the restart.
 */
static void test_offsets_exactly_once(void **state)
{
    (void)state;
    char *dir = tmp_dir("wal-off");
    struct env e;
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    /* offset o carries delta o + 1, except every 4th which is "dead-lettered" */
    for (int64_t o = 0; o < 40; o++) {
        atp_durable_event_start(e.d);
        if (o % 4 != 3)
            assert_int_equal(atp_store_adjust(e.s, S("K"), S("L"), o + 1, NULL), 0);
        assert_int_equal(atp_durable_note_offset(e.d, "atp.events", 2, o + 1, false), 0);
        wait_synced(&e);
    }
    /* A second partition, noted without events. */
    assert_int_equal(atp_durable_note_offset(e.d, "atp.events", 3, 17, true), 0);
    wait_synced(&e);
    /* Names Kafka would refuse are refused, and nothing is logged for them
     * (recovery would refuse the record): the count below stays 41. */
    assert_int_equal(atp_durable_note_offset(e.d, "", 3, 17, true), ATP_EINVAL);
    assert_int_equal(atp_durable_note_offset(e.d, "atp/events", 3, 17, true), ATP_EINVAL);
    assert_int_equal(atp_durable_note_offset(e.d, "..", 3, 17, true), ATP_EINVAL);
    env_crash(&e);

    char *src = seg_path(dir, 1);
    size_t ends[64], hl;
    size_t n = record_ends(src, ends, 64, &hl);
    assert_int_equal(n, 41); /* one record per offset, events included */
    char *cdir = tmp_dir("wal-off-copy");
    char *dst = seg_path(cdir, 1);
    for (size_t cut = hl; cut <= ends[n - 1]; cut += 7) {
        copy_file(src, dst, cut);
        env_open(&e, cdir, ATP_FSYNC_ALWAYS);
        struct atp_durable_offset offs[4];
        size_t no = atp_durable_offsets(e.d, offs, 4);
        int64_t next = 0;
        for (size_t i = 0; i < no; i++)
            if (offs[i].partition == 2)
                next = offs[i].next_offset;
        int64_t want = 0;
        for (int64_t o = 0; o < next; o++)
            want += o % 4 != 3 ? o + 1 : 0;
        struct atp_breakdown bd;
        int rc = atp_store_get(e.s, S("K"), S("L"), 0, &bd);
        assert_int_equal(rc == 0 ? bd.on_hand : 0, want);
        env_crash(&e);
        unlink(dst);
    }
    /* The whole log: both partitions, the stale flag kept. */
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    struct atp_durable_offset offs[4];
    assert_int_equal(atp_durable_offsets(e.d, offs, 4), 2);
    assert_string_equal(offs[0].topic, "atp.events");
    assert_int_equal(offs[0].next_offset, 40);
    assert_false(offs[0].stale);
    assert_int_equal(offs[1].next_offset, 17);
    assert_true(offs[1].stale);
    env_crash(&e);
    rm_rf(cdir);
    rm_rf(dir);
    free(src);
    free(dst);
    free(cdir);
    free(dir);
}

/* --- full disk and fsync failure (own meson tests) ------------------------------------------- */

/*
 * Reservations until the log cannot grow: each is acknowledged only after
 * wait(); the failure is reported clearly and is final; every acknowledged
 * reservation recovers. Returns how many were acknowledged.
 */
static int fill_until_failure(struct env *e, char ***ret_keys, const char *expect)
{
    int acked = 0, cap = 100000;
    char **keys = calloc((size_t)cap, sizeof(char *));
    assert_int_equal(atp_store_adjust(e->s, S("F"), S("L"), 1000000000, NULL), 0);
    assert_int_equal(atp_durable_wait(e->d, atp_durable_tls_pos(), 5000), 0);
    int rc = 0;
    for (int i = 0; i < cap; i++) {
        char key[64];
        snprintf(key, sizeof(key), "fill-%06d-padding-padding-padding-padding", i);
        reserve1(e->s, key, "F", "L", 1, T0);
        rc = atp_durable_wait(e->d, atp_durable_tls_pos(), 10000);
        if (rc)
            break;
        keys[acked++] = strdup(key);
    }
    assert_int_equal(rc, ATP_EREADONLY);
    assert_int_equal(atp_durable_failed(e->d), ATP_EREADONLY);
    assert_int_equal(*atp_durable_refuse_flag(e->d), ATP_EREADONLY);
    assert_false(atp_durable_ready(e->d));
    const char *m = atp_durable_errmsg(e->d);
    fprintf(stderr, "reported: %s\n", m);
    assert_non_null(strstr(m, expect));
    /* Final: later changes are never acknowledged, synced never moves. */
    uint64_t synced = atp_durable_pos_synced(e->d);
    reserve1(e->s, "after-failure", "F", "L", 1, T0);
    assert_int_equal(atp_durable_wait(e->d, atp_durable_tls_pos(), 2000), ATP_EREADONLY);
    assert_false(atp_durable_acked(e->d, atp_durable_tls_pos()));
    assert_int_equal(atp_durable_pos_synced(e->d), synced);
    *ret_keys = keys;
    return acked;
}

static void check_keys_recovered(const char *dir, char **keys, int n)
{
    struct env e;
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    for (int i = 0; i < n; i++) {
        struct atp_reservation r;
        assert_int_equal(atp_store_reservation_find(e.s, S(keys[i]), &r), 0);
        assert_int_equal(r.state, ATP_RES_HELD);
        free(keys[i]);
    }
    free(keys);
    struct atp_breakdown bd;
    assert_int_equal(atp_store_get(e.s, S("F"), S("L"), 0, &bd), 0);
    assert_true(bd.reserved >= n);
    env_crash(&e);
}

static int run_full_disk(void)
{
    char *mnt = tmp_dir("wal-tmpfs");
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=64k")) {
        fprintf(stderr, "skipped: cannot mount a tmpfs (%s)\n", strerror(errno));
        rmdir(mnt);
        free(mnt);
        return 77;
    }
    struct env e;
    env_open(&e, mnt, ATP_FSYNC_ALWAYS);
    char **keys;
    int n = fill_until_failure(&e, &keys, "No space left on device");
    fprintf(stderr, "acknowledged %d reservations before the disk filled\n", n);
    if (n < 50) {
        fprintf(stderr, "FAIL: too few acknowledged (%d)\n", n);
        return 1;
    }
    env_crash(&e);
    /* Recover from a copy (the full tmpfs has no room for a new segment). */
    char *copy = tmp_dir("wal-tmpfs-copy");
    assert_int_equal(copy_dir(mnt, copy), 0);
    umount(mnt);
    rmdir(mnt);
    check_keys_recovered(copy, keys, n);
    rm_rf(copy);
    free(copy);
    free(mnt);
    fprintf(stderr, "full-disk: ok\n");
    return 0;
}

static int run_fsync_fail(void)
{
    const char *trigger = getenv("ATP_FSYNC_FAIL_FILE");
    const char *pre = getenv("LD_PRELOAD");
    if (!trigger || !pre || !strstr(pre, "fsync_fail_shim")) {
        fprintf(stderr, "skipped: needs LD_PRELOAD=fsync_fail_shim.so and ATP_FSYNC_FAIL_FILE\n");
        return 77;
    }
    unlink(trigger);
    char *dir = tmp_dir("wal-fsync");
    struct env e;
    env_open(&e, dir, ATP_FSYNC_ALWAYS);
    char **keys = calloc(64, sizeof(char *));
    for (int i = 0; i < 50; i++) {
        char key[32];
        snprintf(key, sizeof(key), "ok-%d", i);
        if (i == 0)
            assert_int_equal(atp_store_adjust(e.s, S("F"), S("L"), 1000, NULL), 0);
        reserve1(e.s, key, "F", "L", 1, T0);
        assert_int_equal(atp_durable_wait(e.d, atp_durable_tls_pos(), 5000), 0);
        keys[i] = strdup(key);
    }
    FILE *f = fopen(trigger, "w");
    assert_non_null(f);
    fclose(f);
    reserve1(e.s, "doomed", "F", "L", 1, T0);
    assert_int_equal(atp_durable_wait(e.d, atp_durable_tls_pos(), 5000), ATP_EREADONLY);
    const char *m = atp_durable_errmsg(e.d);
    fprintf(stderr, "reported: %s\n", m);
    assert_non_null(strstr(m, "fdatasync"));
    assert_int_equal(*atp_durable_refuse_flag(e.d), ATP_EREADONLY);
    /* The disk "heals": still nothing is acknowledged (no retry). */
    unlink(trigger);
    reserve1(e.s, "after", "F", "L", 1, T0);
    assert_int_equal(atp_durable_wait(e.d, atp_durable_tls_pos(), 1000), ATP_EREADONLY);
    env_crash(&e);
    check_keys_recovered(dir, keys, 50);
    rm_rf(dir);
    free(dir);
    fprintf(stderr, "fsync-fail: ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "full-disk"))
        return run_full_disk();
    if (argc > 1 && !strcmp(argv[1], "fsync-fail"))
        return run_fsync_fail();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec),
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_log_roundtrip),
        cmocka_unit_test(test_cut_every_byte),
        cmocka_unit_test(test_flip_refuses),
        cmocka_unit_test(test_policies),
        cmocka_unit_test(test_offsets_exactly_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
