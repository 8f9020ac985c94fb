/*
 * resv.c - reservations: records, idempotency keys, state changes, expiry.
 *
 * Knows the store's item helpers (store_int.h) and nothing about wire
 * formats or threads other than its optional expirer. Everything here is
 * lock-free; docs/ARCHITECTURE.md explains the design. In short:
 *
 *  - Records live in a fixed pool. A record's `gen` is even while its content
 *    is valid and odd while it is free or being written; an id is
 *    (gen << 32 | index + 1), so a stale id never reaches a reused record.
 *    Readers copy fields with relaxed atomic loads and re-check gen
 *    (a sequence lock whose writers never block readers).
 *  - `ctl` packs the low 18 bits of gen, expires_at in ms and the state; every
 *    state change is one CAS of it, so commit, release, extend and expiry
 *    cannot both win, and a stale id cannot change a reused record.
 *  - Idempotency keys live in three insert-only open-addressing tables used
 *    in rotation (current, previous, being cleared); slots are never reused
 *    inside a table's life, so two inserters of one key always meet at the
 *    same first empty slot. The reaper rotates the tables once per window,
 *    carrying live keys forward.
 *  - Expiry is a timer wheel of 65536 one-millisecond slots owned by the
 *    reaper alone. New held reservations reach it through a lock-free inbox
 *    that every tick drains, so the wheel itself needs no atomics, records
 *    can be unlinked in O(1) (when extended, finished or reclaimed), and no
 *    push can race a sweep.
 */
#include "store_int.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define WHEEL_BITS  16
#define WHEEL_SLOTS (1u << WHEEL_BITS)
#define WHEEL_MASK  (WHEEL_SLOTS - 1)

#define ROT_AHEAD 8 /* entries the reaper's loops fetch ahead (random records, slots) */
/*
 * Most retired records one tick files, and most it reclaims: background work
 * bounded per tick (a cold record is a random miss, ~0.2 us) keeps a tick
 * short so that the expiries of the next one stay on time. 4096 per tick
 * still keeps up with 4M finished reservations a second.
 */
#define REAPER_STEP 4096

/*
 * Longest the expirer sleeps when nothing is due: it then looks at the wheel
 * slots of the next EXPIRER_MAX_SLEEP_MS ms (one array read, 400 bytes) to
 * find the next due one. An idle atpd wakes 10 times a second instead of
 * 1000; a reservation due earlier than the planned wake-up kicks it.
 */
#define EXPIRER_MAX_SLEEP_MS 100

#define ST_CREATING 0u /* claimed, lines not yet taken */
#define ST_FREE     15u

/* ctl: gen (18 bits) | expires_ms (42 bits) | state (4 bits) */
#define CTL_GEN_BITS 18
#define CTL_EXP_BITS 42
#define CTL_EXP_MASK ((UINT64_C(1) << CTL_EXP_BITS) - 1)

static inline uint64_t ctl_make(uint32_t gen, uint64_t exp_ms, unsigned state)
{
    return ((uint64_t)(gen & ((1u << CTL_GEN_BITS) - 1)) << (CTL_EXP_BITS + 4)) |
           ((exp_ms & CTL_EXP_MASK) << 4) | state;
}
static inline unsigned ctl_state(uint64_t c)
{
    return (unsigned)(c & 15);
}
static inline uint64_t ctl_exp(uint64_t c)
{
    return (c >> 4) & CTL_EXP_MASK;
}
static inline uint32_t ctl_gen(uint64_t c)
{
    return (uint32_t)(c >> (CTL_EXP_BITS + 4));
}

/*
 * A record's first cache line holds everything the free list, the inbox, the
 * wheel and the state changes touch (bytes 0..63), so that freeing a cold
 * record or visiting it from the wheel costs one miss; the key follows, then
 * the lines.
 */
struct resv {
    _Atomic uint32_t gen;       /* even: valid content; odd: free or being written */
    _Atomic uint32_t rnext;     /* free / retire list link, index+1 */
    _Atomic uint64_t ctl;       /* gen | expires_ms | state */
    _Atomic uint32_t inext;     /* inbox link, index+1 */
    _Atomic uint32_t in_inbox;  /* 1 while on the inbox */
    uint32_t wprev, wnext;      /* wheel links, index+1 (reaper only) */
    uint32_t wslot;             /* wheel slot while in_wheel (reaper only) */
    uint32_t in_wheel;          /* reaper only */
    _Atomic uint64_t fulfilled; /* bit per fulfilled line */
    _Atomic uint64_t created_us;
    _Atomic uint64_t ttl_ms;
    _Atomic uint32_t channel;
    _Atomic uint32_t nlines;
    _Atomic uint32_t key_len;
    _Atomic uint32_t any_mask; /* lines that asked for any location */
    _Atomic uint64_t key[ATP_KEY_MAX / 8];
    struct {
        _Atomic uint32_t item; /* item ref; UINT32_MAX until taken */
        _Atomic int64_t qty;
    } line[ATP_MAX_LINES];             /* item and qty side by side: one line per line */
} __attribute__((aligned(CACHELINE))); /* a record starts a cache line */
_Static_assert(offsetof(struct resv, ttl_ms) + 8 <= CACHELINE, "hot fields in the first line");

/*
 * Prefetch the lines of a record that a one-line reservation touches: the
 * control fields, the key and the first line (bytes 0..167 of an aligned
 * record, three cache lines).
 */
static inline void rec_prefetch(const struct resv *r, int write)
{
    const char *p = (const char *)r;
    if (write) {
        __builtin_prefetch(p, 1);
        __builtin_prefetch(p + CACHELINE, 1);
        __builtin_prefetch(p + 2 * CACHELINE, 1);
    } else {
        __builtin_prefetch(p);
        __builtin_prefetch(p + CACHELINE);
        __builtin_prefetch(p + 2 * CACHELINE);
    }
}

/* Key table entry: tag16 | gen16 | index+1 (32); 0 empty, ~0 dead. */
#define KENT_DEAD UINT64_MAX
struct ktable {
    _Atomic uint64_t *slots;
    uint32_t mask;
    _Atomic uint32_t used;     /* claims so far */
    _Atomic uint32_t *claimed; /* slot of each claim, so clearing and carrying
                                  cost what was used, not the table's size */
    uint32_t claimed_cap;      /* past it, the reaper scans the whole table */
};

struct retired {
    uint32_t idx;
    uint64_t since_us;
};

struct resv_state {
    struct resv *recs;
    size_t recs_bytes;
    uint32_t cap;
    _Atomic uint32_t fresh;       /* records never used yet start here */
    _Atomic uint64_t free_head;   /* tag32 | index+1 (ABA-safe pops) */
    _Atomic uint32_t retire_head; /* finished records, index+1, via rnext */

    struct ktable kt[3];
    _Atomic uint64_t epoch; /* current table = kt[epoch % 3] */
    struct {
        _Atomic int64_t n;
        char pad[CACHELINE - sizeof(int64_t)];
    } active[3];             /* operations in flight per epoch */
    uint64_t last_rotate_us; /* reaper only */
    /* A rotation in progress (reaper only), see kt_rotate. */
    enum { ROT_IDLE, ROT_CLEAR, ROT_CARRY } rot_phase;
    uint32_t rot_pos, rot_n; /* next claim (or slot) to visit, how many */
    int rot_full;            /* visiting every slot: claims overflowed */
    uint32_t retire_pending; /* reaper only: taken off retire_head, not yet filed */

    uint32_t *wheel;        /* reaper only: slot heads, index+1 */
    _Atomic uint32_t inbox; /* new held reservations, index+1, via inext */
    uint64_t done_ms;       /* reaper only: last swept ms (0: never) */

    struct retired *fifo; /* reaper only: ring of retired records */
    uint32_t fifo_head, fifo_len;

    _Atomic int reaper_busy;
    _Atomic uint64_t reaper_runs; /* reaper runs so far (written by the reaper) */
    /*
     * The expirer's planned wake-up, on a line of its own: written twice per
     * expirer wake-up, read by every reserve and extend (expirer_note).
     */
    char pad_wake0[CACHELINE];
    _Atomic uint64_t wake_ms;  /* sleeping until this ms (store clock); 0: awake */
    _Atomic uint32_t wake_seq; /* futex word: bumped by whoever wakes the expirer */
    char pad_wake1[CACHELINE - 12];
    pthread_t expirer;
    _Atomic int expirer_stop;
    int expirer_running;
    int expirer_rt; /* the expirer got SCHED_FIFO */
    uint32_t tick_us;

    /*
     * Statistics. Reservations held are not counted by a gauge of their own
     * (one atomic add less on each reserve, release, commit and expiry): they
     * are granted + restored_held - commits - releases - expirations.
     */
    _Atomic uint64_t restored_held, committed;
    _Atomic uint64_t granted, rejected, replayed, commits, releases, expirations, fulfillments;
    _Atomic uint64_t late_max, late_sum;
    _Atomic uint64_t late_buckets[ATP_LATENESS_BUCKETS];
    _Atomic uint64_t expirer_wakeups;
};

static void expirer_kick(struct resv_state *rs);

/* --- record pool ---------------------------------------------------------- */

static int rec_alloc(struct resv_state *rs, uint32_t *ret_idx)
{
    /* A10: pairs with R10 in rec_free. */
    uint64_t h = atomic_load_explicit(&rs->free_head, memory_order_acquire);
    while ((uint32_t)h) {
        uint32_t idx = (uint32_t)h - 1;
        uint32_t next = atomic_load_explicit(&rs->recs[idx].rnext, memory_order_relaxed);
        uint64_t nh = (((h >> 32) + 1) << 32) | next;
        if (atomic_compare_exchange_weak_explicit(&rs->free_head, &h, nh, memory_order_acquire,
                                                  memory_order_acquire)) {
            *ret_idx = idx;
            return 0;
        }
    }
    uint32_t f = atomic_load_explicit(&rs->fresh, memory_order_relaxed);
    do {
        if (f >= rs->cap)
            return ATP_EFULL;
    } while (!atomic_compare_exchange_weak_explicit(&rs->fresh, &f, f + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    struct resv *r = &rs->recs[f];
    atomic_store_explicit(&r->gen, 1, memory_order_relaxed); /* odd: being written */
    *ret_idx = f;
    return 0;
}

/* Invalidate (gen becomes odd) and push on the free list. */
static void rec_free(struct resv_state *rs, uint32_t idx)
{
    struct resv *r = &rs->recs[idx];
    uint32_t g = atomic_load_explicit(&r->gen, memory_order_relaxed);
    if (!(g & 1))
        atomic_store_explicit(&r->gen, g + 1, memory_order_release);
    atomic_store_explicit(&r->ctl, ctl_make(g + 1, 0, ST_FREE), memory_order_release);
    uint64_t h = atomic_load_explicit(&rs->free_head, memory_order_relaxed);
    uint64_t nh;
    do {
        atomic_store_explicit(&r->rnext, (uint32_t)h, memory_order_relaxed);
        nh = (((h >> 32) + 1) << 32) | (idx + 1);
        /* R10: release publishes rnext; pairs with A10. */
    } while (!atomic_compare_exchange_weak_explicit(&rs->free_head, &h, nh, memory_order_release,
                                                    memory_order_relaxed));
}

static void key_pack(struct atp_slice key, uint64_t out[ATP_KEY_MAX / 8])
{
    memset(out, 0, ATP_KEY_MAX);
    memcpy(out, key.p, key.len);
}

/* Does valid record idx (generation g) carry this key? Sequence-lock read. */
static int rec_key_is(struct resv_state *rs, uint32_t idx, uint32_t g, const uint64_t *kw,
                      uint32_t klen)
{
    struct resv *r = &rs->recs[idx];
    if (atomic_load_explicit(&r->key_len, memory_order_relaxed) != klen)
        goto differ;
    for (uint32_t i = 0; i < (klen + 7) / 8; i++)
        if (atomic_load_explicit(&r->key[i], memory_order_relaxed) != kw[i])
            goto differ;
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&r->gen, memory_order_relaxed) == g;
differ:
    return 0;
}

/* --- idempotency key tables ----------------------------------------------- */

static inline uint64_t kent_make(uint64_t h, uint32_t gen, uint32_t idx)
{
    return ((h >> 48) << 48) | ((uint64_t)(gen & 0xffff) << 32) | (idx + 1);
}

/*
 * Find a live entry for the key in table t. Returns 1 with the record's
 * index and full generation, or 0. `skip` is an entry value to ignore (our
 * own claim).
 */
static int kt_find(struct resv_state *rs, struct ktable *t, uint64_t h, const uint64_t *kw,
                   uint32_t klen, uint64_t skip, uint32_t *ret_idx, uint32_t *ret_gen)
{
    for (uint32_t i = (uint32_t)h & t->mask, n = 0; n <= t->mask; i = (i + 1) & t->mask, n++) {
        /* A11: seq_cst, the read half of the cross-table check (see claim). */
        uint64_t v = atomic_load(&t->slots[i]);
        if (v == 0)
            return 0;
        if (v == KENT_DEAD || v == skip || (v >> 48) != (h >> 48))
            continue;
        uint32_t idx = (uint32_t)v - 1;
        uint32_t g = atomic_load_explicit(&rs->recs[idx].gen, memory_order_acquire);
        if ((g & 1) || (g & 0xffff) != ((v >> 32) & 0xffff))
            continue; /* stale: the record was reclaimed */
        if (rec_key_is(rs, idx, g, kw, klen)) {
            *ret_idx = idx;
            *ret_gen = g;
            return 1;
        }
    }
    return 0;
}

/*
 * Claim the first empty slot of the key's probe sequence in t, unless a live
 * entry for the key comes first (then 1 and *ret_idx/ret_gen name it).
 * 0 claimed (slot in *ret_slot), ATP_EFULL when the table is full.
 */
static int kt_claim(struct resv_state *rs, struct ktable *t, uint64_t h, const uint64_t *kw,
                    uint32_t klen, uint64_t mine, uint32_t *ret_slot, uint32_t *ret_idx,
                    uint32_t *ret_gen)
{
    for (uint32_t i = (uint32_t)h & t->mask, n = 0; n <= t->mask; i = (i + 1) & t->mask, n++) {
        uint64_t v = atomic_load(&t->slots[i]);
        if (v == 0) {
            /* W11: seq_cst claim; with A11 a Dekker pair across tables. */
            if (atomic_compare_exchange_strong(&t->slots[i], &v, mine)) {
                /* W17: seq_cst (a locked add on x86 either way), then
                 * expirer_kick's exchange of wake_ms; see kt_over_half. */
                uint32_t nth = atomic_fetch_add(&t->used, 1);
                /* Read by the reaper only after this epoch's operations have
                 * left (epoch_leave's release, the reaper's seq_cst load). */
                if (nth < t->claimed_cap)
                    atomic_store_explicit(&t->claimed[nth], i, memory_order_relaxed);
                /* This claim makes kt_over_half true: a rotation is due
                 * now, not at the expirer's planned wake-up. */
                if (nth == (t->mask + 1) / 2)
                    expirer_kick(rs);
                *ret_slot = i;
                return 0;
            }
        }
        if (v == KENT_DEAD || (v >> 48) != (h >> 48))
            continue;
        uint32_t idx = (uint32_t)v - 1;
        uint32_t g = atomic_load_explicit(&rs->recs[idx].gen, memory_order_acquire);
        if ((g & 1) || (g & 0xffff) != ((v >> 32) & 0xffff))
            continue;
        if (rec_key_is(rs, idx, g, kw, klen)) {
            *ret_idx = idx;
            *ret_gen = g;
            return 1;
        }
    }
    return ATP_EFULL;
}

static uint64_t epoch_enter(struct resv_state *rs)
{
    for (;;) {
        uint64_t e = atomic_load(&rs->epoch);
        atomic_fetch_add(&rs->active[e % 3].n, 1);
        if (atomic_load(&rs->epoch) == e)
            return e;
        atomic_fetch_sub(&rs->active[e % 3].n, 1);
    }
}

static void epoch_leave(struct resv_state *rs, uint64_t e)
{
    atomic_fetch_sub_explicit(&rs->active[e % 3].n, 1, memory_order_release);
}

/* Look a key up in the tables visible at epoch e (current and previous). */
static int key_lookup(struct resv_state *rs, uint64_t e, uint64_t h, const uint64_t *kw,
                      uint32_t klen, uint32_t *ret_idx, uint32_t *ret_gen)
{
    struct ktable *prev = &rs->kt[(e + 2) % 3];
    return kt_find(rs, &rs->kt[e % 3], h, kw, klen, 0, ret_idx, ret_gen) ||
           (atomic_load_explicit(&prev->used, memory_order_relaxed) != 0 &&
            kt_find(rs, prev, h, kw, klen, 0, ret_idx, ret_gen));
}

/* --- copying out ------------------------------------------------------------ */

/* Copy record idx of generation g; ATP_ENOTFOUND if it changed meanwhile. */
static int rec_copy(struct atp_store *s, uint32_t idx, uint32_t g, struct atp_reservation *out)
{
    struct resv_state *rs = s->resv;
    struct resv *r = &rs->recs[idx];
    struct atp_reservation tmp;
    /* A12: pairs with the release store of ctl when a reservation is granted. */
    uint64_t c = atomic_load_explicit(&r->ctl, memory_order_acquire);
    unsigned st = ctl_state(c);
    if (st == ST_CREATING || st == ST_FREE || ctl_gen(c) != (g & ((1u << CTL_GEN_BITS) - 1)))
        return ATP_ENOTFOUND;
    tmp.id = ((uint64_t)g << 32) | (idx + 1);
    tmp.state = (int)st;
    tmp.channel = atomic_load_explicit(&r->channel, memory_order_relaxed);
    tmp.created_us = atomic_load_explicit(&r->created_us, memory_order_relaxed);
    tmp.ttl_ms = atomic_load_explicit(&r->ttl_ms, memory_order_relaxed);
    tmp.expires_us = st == ATP_RES_HELD || st == ATP_RES_EXPIRED ? ctl_exp(c) * 1000 : 0;
    tmp.key_len = atomic_load_explicit(&r->key_len, memory_order_relaxed);
    tmp.nlines = atomic_load_explicit(&r->nlines, memory_order_relaxed);
    if (tmp.key_len > ATP_KEY_MAX || tmp.nlines > ATP_MAX_LINES)
        return ATP_ENOTFOUND;
    uint64_t kw[ATP_KEY_MAX / 8];
    for (uint32_t i = 0; i < ATP_KEY_MAX / 8; i++)
        kw[i] = atomic_load_explicit(&r->key[i], memory_order_relaxed);
    memcpy(tmp.key, kw, ATP_KEY_MAX);
    uint64_t ff = atomic_load_explicit(&r->fulfilled, memory_order_relaxed);
    for (uint32_t i = 0; i < tmp.nlines; i++) {
        uint32_t it = atomic_load_explicit(&r->line[i].item, memory_order_relaxed);
        if (!store_item_ref_ok(s, it))
            return ATP_ENOTFOUND;
        tmp.lines[i].sku = store_item_sku(s, it);
        tmp.lines[i].loc = store_item_loc(s, it);
        tmp.lines[i].qty = atomic_load_explicit(&r->line[i].qty, memory_order_relaxed);
        tmp.lines[i].fulfilled = (ff >> i) & 1;
        tmp.lines[i].any = (atomic_load_explicit(&r->any_mask, memory_order_relaxed) >> i) & 1;
    }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&r->gen, memory_order_relaxed) != g)
        return ATP_ENOTFOUND;
    memcpy(out, &tmp, offsetof(struct atp_reservation, lines) + sizeof(tmp.lines[0]) * tmp.nlines);
    return 0;
}

/* Does record idx (valid, generation g) hold exactly this request? */
static int rec_same_content(struct atp_store *s, uint32_t idx, const struct atp_reserve_req *req)
{
    struct resv *r = &s->resv->recs[idx];
    if (atomic_load_explicit(&r->channel, memory_order_relaxed) != req->channel ||
        atomic_load_explicit(&r->ttl_ms, memory_order_relaxed) != req->ttl_ms ||
        atomic_load_explicit(&r->nlines, memory_order_relaxed) != req->nlines)
        return 0;
    uint32_t any = atomic_load_explicit(&r->any_mask, memory_order_relaxed);
    for (uint32_t i = 0; i < req->nlines; i++) {
        const struct atp_line_req *l = &req->lines[i];
        uint32_t it = atomic_load_explicit(&r->line[i].item, memory_order_relaxed);
        if (!store_item_ref_ok(s, it) ||
            atomic_load_explicit(&r->line[i].qty, memory_order_relaxed) != l->qty ||
            (int)((any >> i) & 1) != (l->loc.len == 0))
            return 0;
        struct atp_slice sku = store_item_sku(s, it);
        if (sku.len != l->sku.len || memcmp(sku.p, l->sku.p, sku.len) != 0)
            return 0;
        if (l->loc.len) {
            struct atp_slice loc = store_item_loc(s, it);
            if (loc.len != l->loc.len || memcmp(loc.p, l->loc.p, loc.len) != 0)
                return 0;
        }
    }
    return 1;
}

/* --- stock movements for a whole record --------------------------------- */

static void rec_give_back(struct atp_store *s, struct resv *r)
{
    uint32_t n = atomic_load_explicit(&r->nlines, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        store_give_back(s, atomic_load_explicit(&r->line[i].item, memory_order_relaxed),
                        atomic_load_explicit(&r->line[i].qty, memory_order_relaxed));
}

static void retire_push(struct resv_state *rs, uint32_t idx)
{
    uint32_t h = atomic_load_explicit(&rs->retire_head, memory_order_relaxed);
    do {
        atomic_store_explicit(&rs->recs[idx].rnext, h, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&rs->retire_head, &h, idx + 1,
                                                    memory_order_release, memory_order_relaxed));
}

static void lateness_record(struct resv_state *rs, uint64_t late_us)
{
    uint64_t m = atomic_load_explicit(&rs->late_max, memory_order_relaxed);
    while (late_us > m &&
           !atomic_compare_exchange_weak_explicit(&rs->late_max, &m, late_us, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
    atomic_fetch_add_explicit(&rs->late_sum, late_us, memory_order_relaxed);
    unsigned b = 0;
    while (b < ATP_LATENESS_BUCKETS - 1 && late_us > (UINT64_C(64) << b))
        b++;
    atomic_fetch_add_explicit(&rs->late_buckets[b], 1, memory_order_relaxed);
}

/*
 * Held and past its time: expire it (CAS), give the stock back. Returns 1 if
 * this call expired it. `c` is the ctl value observed.
 */
static int rec_try_expire(struct atp_store *s, uint32_t idx, uint64_t c, uint64_t now_us,
                          bool reaper)
{
    struct resv_state *rs = s->resv;
    struct resv *r = &rs->recs[idx];
    uint64_t nc = (c & ~UINT64_C(15)) | ATP_RES_EXPIRED;
    uint64_t pos = j_begin(s);
    if (!atomic_compare_exchange_strong_explicit(&r->ctl, &c, nc, memory_order_acq_rel,
                                                 memory_order_acquire)) {
        j_end(s, pos, NULL);
        return 0;
    }
    j_end(
        s, pos,
        &(struct atp_journal_rec){
            .type = ATP_J_EXPIRE,
            .id = ((uint64_t)atomic_load_explicit(&r->gen, memory_order_relaxed) << 32) | (idx + 1),
            .now_us = now_us});
    rec_give_back(s, r);
    uint64_t exp_us = ctl_exp(c) * 1000;
    /* Lateness is the reaper's: a client that finds its hold expired on a
     * late commit is not the reaper being late. */
    if (reaper)
        lateness_record(rs, now_us > exp_us ? now_us - exp_us : 0);
    atomic_fetch_add_explicit(&rs->expirations, 1, memory_order_relaxed);
    retire_push(rs, idx);
    return 1;
}

/* --- timer wheel (reaper only, fed by the inbox) ---------------------------- */

/* Any thread: hand a new held reservation to the reaper. */
static void inbox_push(struct resv_state *rs, uint32_t idx)
{
    /* Already waiting: the reaper reads the latest ctl when it gets there.
     * seq_cst (here and the push below): the first half of W16, see
     * expirer_note. */
    if (atomic_exchange(&rs->recs[idx].in_inbox, 1))
        return;
    uint32_t h = atomic_load_explicit(&rs->inbox, memory_order_relaxed);
    do {
        atomic_store_explicit(&rs->recs[idx].inext, h, memory_order_relaxed);
        /* R13: release (seq_cst) publishes inext; pairs with A13 in reaper_run. */
    } while (!atomic_compare_exchange_weak_explicit(&rs->inbox, &h, idx + 1, memory_order_seq_cst,
                                                    memory_order_relaxed));
}

static long futex(_Atomic uint32_t *word, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, (uint32_t *)word, op, val, ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* Wake the expirer from its sleep; the first caller per sleep pays the syscall. */
static void expirer_kick(struct resv_state *rs)
{
    if (atomic_exchange(&rs->wake_ms, 0) == 0)
        return; /* awake, or already being woken */
    atomic_fetch_add(&rs->wake_seq, 1);
    futex(&rs->wake_seq, FUTEX_WAKE_PRIVATE, 1, NULL);
}

/*
 * After inbox_push: kick the expirer if the record is due before the
 * expirer's planned wake-up. The common case is one load of a line that
 * changes twice per expirer wake-up, and no write.
 *
 * W16 (a Dekker pair with E16 in expirer_main): we push (or find the record
 * queued), then load wake_ms; the expirer stores wake_ms, then loads the
 * inbox, all seq_cst. Either it sees the inbox non-empty (and sleeps one
 * tick at most) or we see its plan and compare. While the expirer is awake
 * wake_ms is 0: it will look at the inbox after it publishes its plan. The
 * deadline compared is the record's current one (a seq_cst load of ctl, after
 * extend's seq_cst CAS): a record found already queued by someone whose push
 * is not complete yet is then compared by that pusher, with our deadline.
 */
static void expirer_note(struct resv_state *rs, uint32_t idx)
{
    uint64_t w = atomic_load(&rs->wake_ms);
    if (w == 0)
        return;
    uint64_t c = atomic_load(&rs->recs[idx].ctl);
    if (ctl_state(c) == ATP_RES_HELD && ctl_exp(c) < w)
        expirer_kick(rs);
}

static void wheel_link(struct resv_state *rs, uint32_t idx, uint64_t exp_ms)
{
    struct resv *r = &rs->recs[idx];
    uint32_t slot = (uint32_t)(exp_ms & WHEEL_MASK);
    r->wslot = slot;
    r->wprev = 0;
    r->wnext = rs->wheel[slot];
    if (r->wnext)
        rs->recs[r->wnext - 1].wprev = idx + 1;
    rs->wheel[slot] = idx + 1;
    r->in_wheel = 1;
}

static void wheel_unlink(struct resv_state *rs, uint32_t idx)
{
    struct resv *r = &rs->recs[idx];
    if (!r->in_wheel)
        return;
    if (r->wprev)
        rs->recs[r->wprev - 1].wnext = r->wnext;
    else
        rs->wheel[r->wslot] = r->wnext;
    if (r->wnext)
        rs->recs[r->wnext - 1].wprev = r->wprev;
    r->in_wheel = 0;
}

/*
 * Look at one record: expire it if held and due, (re)file it if held and not
 * due, drop it from the wheel otherwise. Returns 1 if it expired here.
 */
static int wheel_visit(struct atp_store *s, uint32_t idx, uint64_t now_us)
{
    struct resv_state *rs = s->resv;
    /*
     * seq_cst, not acquire: after the inbox drain's seq_cst clear of
     * in_inbox this is the second half of a Dekker pair with an extend (its
     * seq_cst CAS of ctl, then its exchange of in_inbox): either the extend
     * sees in_inbox 0 and queues the record again, or this read sees the new
     * expiry. An acquire load could be ordered before that clear in the C11
     * model (not on x86, where both compile to the same plain load).
     */
    uint64_t c = atomic_load_explicit(&rs->recs[idx].ctl, memory_order_seq_cst);
    while (ctl_state(c) == ATP_RES_HELD) {
        if (ctl_exp(c) * 1000 > now_us) {
            uint64_t slot = ctl_exp(c) & WHEEL_MASK;
            if (!rs->recs[idx].in_wheel || rs->recs[idx].wslot != slot) {
                wheel_unlink(rs, idx);
                wheel_link(rs, idx, ctl_exp(c)); /* new, or extended */
            }
            return 0;
        }
        if (rec_try_expire(s, idx, c, now_us, true)) {
            wheel_unlink(rs, idx);
            return 1;
        }
        c = atomic_load_explicit(&rs->recs[idx].ctl, memory_order_acquire);
    }
    wheel_unlink(rs, idx); /* committed or finished */
    return 0;
}

/* Sweep the wheel slot of millisecond m. */
static int sweep_ms(struct atp_store *s, uint64_t m, uint64_t now_us)
{
    struct resv_state *rs = s->resv;
    int n = 0;
    for (uint32_t cur = rs->wheel[m & WHEEL_MASK]; cur;) {
        uint32_t idx = cur - 1;
        cur = rs->recs[idx].wnext; /* read before the visit may unlink it */
        n += wheel_visit(s, idx, now_us);
    }
    return n;
}

/* --- key table rotation (reaper only) ---------------------------------------- */

/*
 * More than half full: a rotation is due whatever the clock says (kt_claim
 * kicks the expirer when a claim crosses this bound). seq_cst: in the
 * expirer this is E17, after its seq_cst publishing of wake_ms; it pairs
 * with W17 in kt_claim (the add to used, then the exchange of wake_ms), so
 * either that exchange finds the plan and kicks, or this load sees the
 * count and the expirer ticks: a kick that lands while the expirer is awake
 * (wake_ms 0) is never lost. A plain load on x86 all the same.
 */
static bool kt_over_half(const struct ktable *t)
{
    return atomic_load(&t->used) > (t->mask + 1) / 2;
}

#define ROT_STEP 2048

/*
 * Rotation runs in steps of ROT_STEP slots per tick (more when the window
 * used more keys, so that it always ends in 64 ticks): clearing the
 * table that comes back into use and carrying the live keys of the one that
 * drops out of sight cost a random miss or two per key used in a window
 * (measured: ~20 ms for 76k keys in one go), and a tick that long would make
 * the next tick's expiries that late. Nothing but the reaper touches the
 * table being cleared (operations of the epoch that used it have left) or
 * writes the one being carried (operations of the current epoch only read it),
 * and the epoch moves only when both steps are done, so spreading them over
 * ticks changes nothing that an operation can see.
 */
static void kt_rotate(struct atp_store *s, uint64_t now_us)
{
    struct resv_state *rs = s->resv;
    uint64_t e = atomic_load(&rs->epoch);
    struct ktable *cur = &rs->kt[e % 3];
    struct ktable *next = &rs->kt[(e + 1) % 3];
    struct ktable *old = &rs->kt[(e + 2) % 3];
    if (rs->rot_phase == ROT_IDLE) {
        int due =
            now_us - rs->last_rotate_us >= s->cfg.idempotency_window_ms * 1000 || kt_over_half(cur);
        if (!due)
            return;
        /* Operations of epoch e-1 still read and write the table we would
         * clear; once they have left, no new one can start (epoch_enter). */
        if (atomic_load(&rs->active[(e + 2) % 3].n) != 0)
            return;
        uint32_t nused = atomic_load_explicit(&next->used, memory_order_relaxed);
        rs->rot_full = nused > next->claimed_cap;
        rs->rot_n = rs->rot_full ? next->mask + 1 : nused;
        rs->rot_pos = 0;
        rs->rot_phase = ROT_CLEAR;
    }
    /* ROT_STEP per tick, more for a big rotation: each step ends in 32 ticks. */
    uint32_t budget = rs->rot_n / 32 > ROT_STEP ? rs->rot_n / 32 : ROT_STEP;
    if (rs->rot_phase == ROT_CLEAR) {
        for (; rs->rot_pos < rs->rot_n && budget; rs->rot_pos++, budget--) {
            uint32_t k = rs->rot_pos, i = k;
            if (!rs->rot_full) {
                /* Random slots over a large table: fetch a few claims ahead. */
                if (k + ROT_AHEAD < rs->rot_n)
                    __builtin_prefetch(&next->slots[atomic_load_explicit(
                                           &next->claimed[k + ROT_AHEAD], memory_order_relaxed)],
                                       1);
                i = atomic_load_explicit(&next->claimed[k], memory_order_relaxed);
            }
            atomic_store_explicit(&next->slots[i], 0, memory_order_relaxed);
        }
        if (rs->rot_pos < rs->rot_n)
            return;
        atomic_store_explicit(&next->used, 0, memory_order_relaxed);
        uint32_t oused = atomic_load_explicit(&old->used, memory_order_relaxed);
        rs->rot_full = oused > old->claimed_cap;
        rs->rot_n = rs->rot_full ? old->mask + 1 : oused;
        rs->rot_pos = 0;
        rs->rot_phase = ROT_CARRY;
    }
    /* Carry the live keys of the table that drops out of sight. */
    int full = rs->rot_full;
    uint32_t nslots = rs->rot_n;
    for (; rs->rot_pos < nslots && budget; rs->rot_pos++, budget--) {
        uint32_t k = rs->rot_pos;
        /*
         * Two-level prefetch: the slot of claim k + 2 * ROT_AHEAD, and the
         * record named by the (by now fetched) slot of claim k + ROT_AHEAD.
         */
        if (!full && k + 2 * ROT_AHEAD < nslots)
            __builtin_prefetch(&old->slots[atomic_load_explicit(&old->claimed[k + 2 * ROT_AHEAD],
                                                                memory_order_relaxed)]);
        if (!full && k + ROT_AHEAD < nslots) {
            uint64_t va =
                atomic_load_explicit(&old->slots[atomic_load_explicit(&old->claimed[k + ROT_AHEAD],
                                                                      memory_order_relaxed)],
                                     memory_order_relaxed);
            if (va != 0 && va != KENT_DEAD && (uint32_t)va <= rs->cap)
                __builtin_prefetch(&rs->recs[(uint32_t)va - 1]);
        }
        uint32_t i = full ? k : atomic_load_explicit(&old->claimed[k], memory_order_relaxed);
        uint64_t v = atomic_load_explicit(&old->slots[i], memory_order_relaxed);
        if (v == 0 || v == KENT_DEAD)
            continue;
        uint32_t idx = (uint32_t)v - 1;
        uint32_t g = atomic_load_explicit(&rs->recs[idx].gen, memory_order_acquire);
        if ((g & 1) || (g & 0xffff) != ((v >> 32) & 0xffff))
            continue;
        uint64_t kw[ATP_KEY_MAX / 8];
        uint32_t klen = atomic_load_explicit(&rs->recs[idx].key_len, memory_order_relaxed);
        for (uint32_t w = 0; w < ATP_KEY_MAX / 8; w++)
            kw[w] = atomic_load_explicit(&rs->recs[idx].key[w], memory_order_relaxed);
        uint64_t h = XXH3_64bits(kw, klen);
        uint32_t slot, fidx, fgen;
        kt_claim(rs, next, h, kw, klen, v, &slot, &fidx, &fgen);
    }
    if (rs->rot_pos < nslots)
        return;
    rs->rot_phase = ROT_IDLE;
    atomic_store(&rs->epoch, e + 1);
    rs->last_rotate_us = now_us;
}

/* --- public calls ----------------------------------------------------------- */

const char *atp_res_state_name(int state)
{
    switch (state) {
    case ATP_RES_HELD:
        return "held";
    case ATP_RES_COMMITTED:
        return "committed";
    case ATP_RES_FULFILLED:
        return "fulfilled";
    case ATP_RES_RELEASED:
        return "released";
    case ATP_RES_EXPIRED:
        return "expired";
    default:
        return "unknown";
    }
}

static int valid_idem_key(struct atp_slice k)
{
    if (k.len == 0 || k.len > ATP_KEY_MAX || !k.p)
        return 0;
    for (uint32_t i = 0; i < k.len; i++)
        if ((uint8_t)k.p[i] < 0x21 || (uint8_t)k.p[i] > 0x7e)
            return 0;
    return 1;
}

static int validate_req(struct atp_store *s, const struct atp_reserve_req *req)
{
    if (!valid_idem_key(req->key))
        return ATP_EKEY;
    if (req->channel >= s->nchannels)
        return ATP_ENOCHANNEL;
    if (req->ttl_ms == 0 || req->ttl_ms > s->cfg.max_ttl_ms)
        return ATP_ETTL;
    if (req->nlines == 0 || req->nlines > ATP_MAX_LINES || !req->lines)
        return req->nlines == 0 ? ATP_EINVAL : ATP_ETOOMANY;
    for (uint32_t i = 0; i < req->nlines; i++) {
        const struct atp_line_req *l = &req->lines[i];
        int rc = atp_validate_sku(l->sku);
        if (rc)
            return rc;
        if (l->loc.len && (rc = atp_validate_loc(l->loc)) != 0)
            return rc;
        if (l->qty <= 0)
            return ATP_EQTY;
        if (l->qty > ATP_QTY_MAX)
            return ATP_ERANGE;
    }
    return 0;
}

/* Answer for an existing reservation with this key. */
static int answer_existing(struct atp_store *s, uint32_t idx, uint32_t g,
                           const struct atp_reserve_req *req, struct atp_reservation *ret,
                           bool *ret_replayed)
{
    uint64_t c = atomic_load_explicit(&s->resv->recs[idx].ctl, memory_order_acquire);
    if (ctl_state(c) == ST_CREATING)
        return ATP_EBUSY;
    int same = rec_same_content(s, idx, req);
    struct atp_reservation tmp;
    if (rec_copy(s, idx, g, &tmp) != 0)
        return ATP_EBUSY; /* reclaimed under our feet: let the client retry */
    if (!same)
        return ATP_ECONFLICT;
    atomic_fetch_add_explicit(&s->resv->replayed, 1, memory_order_relaxed);
    if (ret)
        *ret = tmp;
    if (ret_replayed)
        *ret_replayed = true;
    return 0;
}

/*
 * The journal record of a new reservation, built from the record before it
 * is published (rec_copy refuses a record that is still being created).
 */
static void journal_res_fill(struct atp_store *s, uint32_t ri, uint32_t gen, uint64_t exp_ms,
                             struct atp_reservation *out)
{
    struct resv *r = &s->resv->recs[ri];
    out->id = ((uint64_t)gen << 32) | (ri + 1);
    out->state = ATP_RES_HELD;
    out->channel = atomic_load_explicit(&r->channel, memory_order_relaxed);
    out->created_us = atomic_load_explicit(&r->created_us, memory_order_relaxed);
    out->ttl_ms = atomic_load_explicit(&r->ttl_ms, memory_order_relaxed);
    out->expires_us = exp_ms * 1000;
    out->key_len = atomic_load_explicit(&r->key_len, memory_order_relaxed);
    uint64_t kw[ATP_KEY_MAX / 8];
    for (uint32_t i = 0; i < ATP_KEY_MAX / 8; i++)
        kw[i] = atomic_load_explicit(&r->key[i], memory_order_relaxed);
    memcpy(out->key, kw, ATP_KEY_MAX);
    out->nlines = atomic_load_explicit(&r->nlines, memory_order_relaxed);
    uint32_t any = atomic_load_explicit(&r->any_mask, memory_order_relaxed);
    for (uint32_t i = 0; i < out->nlines; i++) {
        uint32_t it = atomic_load_explicit(&r->line[i].item, memory_order_relaxed);
        out->lines[i].sku = store_item_sku(s, it);
        out->lines[i].loc = store_item_loc(s, it);
        out->lines[i].qty = atomic_load_explicit(&r->line[i].qty, memory_order_relaxed);
        out->lines[i].fulfilled = false;
        out->lines[i].any = (any >> i) & 1;
    }
}

static void journal_reserve_end(struct atp_store *s, uint64_t pos, uint32_t ri, uint32_t gen,
                                uint64_t exp_ms)
{
    struct atp_reservation res;
    journal_res_fill(s, ri, gen, exp_ms, &res);
    j_end(s, pos, &(struct atp_journal_rec){.type = ATP_J_RESERVE, .id = res.id, .res = &res});
}

void atp_store_set_admit(struct atp_store *s, atp_admit_fn fn, void *arg)
{
    s->admit = fn;
    s->admit_arg = arg;
}

/* Undo the first `taken` lines of a request whose reservation did not happen. */
static void give_back_lines(struct atp_store *s, const struct atp_reserve_req *req,
                            const uint32_t *items, uint32_t taken)
{
    for (uint32_t i = 0; i < taken; i++)
        store_give_back(s, items[i], req->lines[i].qty);
}

/*
 * A reservation's random misses are independent of each other until its
 * lines are found: the key's slots in the current and previous tables, each
 * line's item index slot, and the record the free list will hand out. Start
 * them all at once (prefetches: hints that change nothing, so a stale free
 * head or epoch costs only a wasted fetch), so the call waits for about one
 * memory latency for all of them rather than one after another.
 */
#define PREFETCH_LINES 4 /* lines whose item slot a reserve prefetches */

static void reserve_prefetch(struct atp_store *s, const struct atp_reserve_req *req, uint64_t h,
                             struct store_line_key keys[PREFETCH_LINES], uint32_t *ret_have)
{
    struct resv_state *rs = s->resv;
    uint64_t e = atomic_load_explicit(&rs->epoch, memory_order_relaxed);
    const struct ktable *cur = &rs->kt[e % 3], *prev = &rs->kt[(e + 2) % 3];
    __builtin_prefetch(&cur->slots[(uint32_t)h & cur->mask]);
    __builtin_prefetch(&prev->slots[(uint32_t)h & prev->mask]);
    uint32_t top = (uint32_t)atomic_load_explicit(&rs->free_head, memory_order_relaxed);
    if (top)
        rec_prefetch(&rs->recs[top - 1], 1);
    /*
     * Not validated yet: only lines whose slices are in bounds. What is
     * worked out here is kept for store_take (bit i of *ret_have: keys[i]).
     */
    uint32_t have = 0;
    for (uint32_t i = 0; req->lines && i < req->nlines && i < PREFETCH_LINES; i++) {
        const struct atp_line_req *l = &req->lines[i];
        if (l->sku.p && l->sku.len - 1u < ATP_SKU_MAX && l->loc.p &&
            l->loc.len - 1u < ATP_LOC_MAX) {
            store_prefetch_line(s, l, &keys[i]);
            have |= 1u << i;
        }
    }
    *ret_have = have;
}

int atp_store_reserve(struct atp_store *s, const struct atp_reserve_req *req, uint64_t now_us,
                      struct atp_reservation *ret, bool *ret_replayed,
                      struct atp_shortfall *ret_short)
{
    struct resv_state *rs = s->resv;
    /* Bounds first: the prefetches below hash the key before validation. */
    if (!req->key.p || req->key.len - 1u >= ATP_KEY_MAX)
        return ATP_EKEY;
    /* The caller's bytes, not kw: the same hash, without reading back the
     * words key_pack has just stored (a store-forwarding stall). */
    uint64_t h = XXH3_64bits(req->key.p, req->key.len);
    struct store_line_key lkeys[PREFETCH_LINES];
    uint32_t lhave;
    reserve_prefetch(s, req, h, lkeys, &lhave);
    uint64_t kw[ATP_KEY_MAX / 8];
    key_pack(req->key, kw);
    int rc = validate_req(s, req);
    if (rc)
        return rc;
    uint32_t idx, g;

    for (int attempt = 0; attempt < 64; attempt++) {
        uint64_t e = epoch_enter(rs);
        if (key_lookup(rs, e, h, kw, req->key.len, &idx, &g)) {
            rc = answer_existing(s, idx, g, req, ret, ret_replayed);
            epoch_leave(rs, e);
            return rc;
        }

        /*
         * Take every line or none, before the key is claimed: a refused
         * request then leaves nothing behind in the key tables. Two
         * concurrent requests with one key may both take stock for a moment;
         * the one that loses the claim gives it back.
         */
        uint32_t items[ATP_MAX_LINES];
        uint32_t taken = 0;
        int fail = 0;
        struct atp_shortfall shorts[ATP_MAX_LINES];
        for (uint32_t i = 0; i < req->nlines; i++) {
            int64_t avail;
            shorts[i].requested = req->lines[i].qty;
            /* After a short line, report what the rest would find; take nothing. */
            rc = store_take(s, &req->lines[i],
                            i < PREFETCH_LINES && (lhave >> i & 1) ? &lkeys[i] : NULL, req->channel,
                            !fail, &items[i], &avail);
            shorts[i].available = avail;
            if (fail)
                continue;
            if (rc == 0)
                taken = i + 1;
            else
                fail = rc;
        }
        for (uint32_t i = 0; !fail && s->admit && i < req->nlines; i++)
            fail = s->admit(s->admit_arg, store_item_sku(s, items[i]), store_item_loc(s, items[i]));
        if (fail) {
            give_back_lines(s, req, items, taken);
            epoch_leave(rs, e);
            if (fail == ATP_EINSUFFICIENT) {
                atomic_fetch_add_explicit(&rs->rejected, 1, memory_order_relaxed);
                if (ret_short)
                    memcpy(ret_short, shorts, sizeof(shorts[0]) * req->nlines);
            }
            return fail;
        }

        uint32_t ri;
        if ((rc = rec_alloc(rs, &ri)) != 0) {
            give_back_lines(s, req, items, taken);
            epoch_leave(rs, e);
            return rc;
        }
        struct resv *r = &rs->recs[ri];
        uint32_t gen = atomic_load_explicit(&r->gen, memory_order_relaxed) + 1; /* even */
        atomic_store_explicit(&r->ctl, ctl_make(gen, 0, ST_CREATING), memory_order_relaxed);
        atomic_store_explicit(&r->fulfilled, 0, memory_order_relaxed);
        atomic_store_explicit(&r->created_us, now_us, memory_order_relaxed);
        atomic_store_explicit(&r->ttl_ms, req->ttl_ms, memory_order_relaxed);
        atomic_store_explicit(&r->channel, req->channel, memory_order_relaxed);
        atomic_store_explicit(&r->nlines, req->nlines, memory_order_relaxed);
        atomic_store_explicit(&r->key_len, req->key.len, memory_order_relaxed);
        uint32_t any = 0;
        for (uint32_t i = 0; i < req->nlines; i++) {
            any |= (uint32_t)(req->lines[i].loc.len == 0) << i;
            atomic_store_explicit(&r->line[i].qty, req->lines[i].qty, memory_order_relaxed);
            atomic_store_explicit(&r->line[i].item, items[i], memory_order_relaxed);
        }
        atomic_store_explicit(&r->any_mask, any, memory_order_relaxed);
        for (uint32_t i = 0; i < ATP_KEY_MAX / 8; i++)
            atomic_store_explicit(&r->key[i], kw[i], memory_order_relaxed);
        /* R14: even generation publishes the content above. */
        atomic_store_explicit(&r->gen, gen, memory_order_release);

        uint64_t mine = kent_make(h, gen, ri);
        struct ktable *cur = &rs->kt[e % 3];
        uint32_t slot;
        rc = kt_claim(rs, cur, h, kw, req->key.len, mine, &slot, &idx, &g);
        if (rc != 0) {
            rec_free(rs, ri);
            give_back_lines(s, req, items, taken);
            if (rc == 1)
                rc = answer_existing(s, idx, g, req, ret, ret_replayed);
            epoch_leave(rs, e);
            return rc;
        }
        /*
         * Another inserter of the same key may have claimed in another table
         * across a rotation. Check the previous table and, if the epoch moved,
         * the new current one; whoever sees the other backs off and retries
         * (seq_cst claim then seq_cst loads: at least one of two sees the other).
         */
        int clash = kt_find(rs, &rs->kt[(e + 2) % 3], h, kw, req->key.len, mine, &idx, &g);
        if (!clash && atomic_load(&rs->epoch) != e)
            clash = kt_find(rs, &rs->kt[(e + 1) % 3], h, kw, req->key.len, mine, &idx, &g);
        if (clash) {
            atomic_store(&cur->slots[slot], KENT_DEAD);
            rec_free(rs, ri);
            give_back_lines(s, req, items, taken);
            epoch_leave(rs, e);
            continue;
        }

        uint64_t exp_ms = (now_us + 999) / 1000 + req->ttl_ms;
        uint64_t pos = 0;
        if (s->cfg.journal)
            pos = j_begin(s);
        /* R12: release publishes the lines; pairs with A12 in rec_copy. */
        atomic_store_explicit(&r->ctl, ctl_make(gen, exp_ms, ATP_RES_HELD), memory_order_release);
        if (s->cfg.journal)
            journal_reserve_end(s, pos, ri, gen, exp_ms);
        atomic_fetch_add_explicit(&rs->granted, 1, memory_order_relaxed);
        inbox_push(rs, ri);
        expirer_note(rs, ri);
        epoch_leave(rs, e);
        if (ret && rec_copy(s, ri, gen, ret) != 0)
            return ATP_EINTERNAL; /* cannot be reclaimed before the window */
        if (ret_replayed)
            *ret_replayed = false;
        return 0;
    }
    return ATP_EBUSY;
}

/* Resolve an id to a valid record: index and generation. */
static int id_resolve(struct resv_state *rs, uint64_t id, uint32_t *ret_idx, uint32_t *ret_gen)
{
    uint32_t lo = (uint32_t)id;
    uint32_t g = (uint32_t)(id >> 32);
    if (lo == 0 || lo > rs->cap || (g & 1) || g == 0)
        return ATP_ENOTFOUND;
    if (atomic_load_explicit(&rs->recs[lo - 1].gen, memory_order_acquire) != g)
        return ATP_ENOTFOUND;
    *ret_idx = lo - 1;
    *ret_gen = g;
    return 0;
}

static int finish_copy(struct atp_store *s, uint32_t idx, uint32_t g, struct atp_reservation *ret)
{
    if (!ret)
        return 0;
    struct atp_reservation tmp;
    if (rec_copy(s, idx, g, &tmp) != 0)
        return ATP_ENOTFOUND;
    *ret = tmp;
    return 0;
}

static inline int ctl_matches(uint64_t c, uint32_t g)
{
    return ctl_gen(c) == (g & ((1u << CTL_GEN_BITS) - 1)) && ctl_state(c) != ST_CREATING &&
           ctl_state(c) != ST_FREE;
}

enum held_op { HELD_COMMIT, HELD_COMMIT_LOGGED, HELD_RELEASE, HELD_EXTEND };

/*
 * May held reservation `r` be committed now? Only if every line's item
 * still has the units: free (on_hand - allocated - reserved) >= 0. A
 * commit leaves free as it is; below 0 a set or an adjust took on_hand
 * below what is held and allocated on the item since the hold, and
 * committing would promise units that are not there. Safety stock is not
 * looked at again: the hold was granted within its channel's safety stock
 * (SPEC.md's invariant), and a later hold of another channel with less
 * safety stock, or a raised safety stock, must not fail an order whose
 * units are on hand. Each line is read at one moment before the commit's
 * CAS, as a reservation's lines are taken one by one.
 */
static int commit_admissible(struct atp_store *s, const struct resv *r)
{
    uint32_t n = atomic_load_explicit(&r->nlines, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        if (store_item_free(s, atomic_load_explicit(&r->line[i].item, memory_order_relaxed)) < 0)
            return ATP_EINSUFFICIENT;
    return 0;
}

/*
 * Every change of a held reservation made by a client: resolve the id, expire
 * it on the spot if its time has passed, then one CAS of ctl with its journal
 * record (position taken after reading the state the CAS expects). Returns 0
 * when this call made the change, 1 when a commit finds the reservation
 * already committed or fulfilled (a retry), or an error code.
 */
static int held_transition(struct atp_store *s, uint64_t id, uint64_t now_us, enum held_op op,
                           uint64_t ttl_ms, uint32_t *ret_idx, uint32_t *ret_gen)
{
    struct resv_state *rs = s->resv;
    uint32_t idx, g;
    int rc = id_resolve(rs, id, &idx, &g);
    if (rc)
        return rc;
    *ret_idx = idx;
    *ret_gen = g;
    struct resv *r = &rs->recs[idx];
    uint64_t c = atomic_load_explicit(&r->ctl, memory_order_acquire);
    for (;;) {
        if (!ctl_matches(c, g))
            return ATP_ENOTFOUND;
        unsigned st = ctl_state(c);
        bool commit = op == HELD_COMMIT || op == HELD_COMMIT_LOGGED;
        if (commit && (st == ATP_RES_COMMITTED || st == ATP_RES_FULFILLED))
            return 1;
        if (st == ATP_RES_EXPIRED)
            return ATP_EEXPIRED;
        if (st != ATP_RES_HELD)
            return ATP_ESTATE;
        if (ctl_exp(c) * 1000 <= now_us) {
            rec_try_expire(s, idx, c, now_us, false);
            c = atomic_load_explicit(&r->ctl, memory_order_acquire);
            continue;
        }
        if (op == HELD_COMMIT && (rc = commit_admissible(s, r)) != 0)
            return rc;
        struct atp_journal_rec jr = {.id = id, .now_us = now_us};
        uint64_t nc;
        switch (op) {
        case HELD_COMMIT:
        case HELD_COMMIT_LOGGED:
            nc = ctl_make(g, 0, ATP_RES_COMMITTED);
            jr.type = ATP_J_COMMIT;
            break;
        case HELD_RELEASE:
            nc = (c & ~UINT64_C(15)) | ATP_RES_RELEASED;
            jr.type = ATP_J_RELEASE;
            break;
        default:
            nc = ctl_make(g, (now_us + 999) / 1000 + ttl_ms, ATP_RES_HELD);
            jr.type = ATP_J_EXTEND;
            jr.ttl_ms = ttl_ms;
            break;
        }
        uint64_t pos = j_begin(s);
        /* seq_cst: an extend's new deadline is part of W16 (expirer_note). */
        if (atomic_compare_exchange_strong_explicit(&r->ctl, &c, nc, memory_order_seq_cst,
                                                    memory_order_acquire)) {
            j_end(s, pos, &jr);
            return 0;
        }
        j_end(s, pos, NULL);
    }
}

static int commit_common(struct atp_store *s, uint64_t id, uint64_t now_us, enum held_op op,
                         struct atp_reservation *ret)
{
    struct resv_state *rs = s->resv;
    uint32_t idx, g;
    int rc = held_transition(s, id, now_us, op, 0, &idx, &g);
    if (rc == 1)
        return finish_copy(s, idx, g, ret); /* a retried commit */
    if (rc)
        return rc;
    struct resv *r = &rs->recs[idx];
    uint32_t n = atomic_load_explicit(&r->nlines, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        store_commit_qty(s, atomic_load_explicit(&r->line[i].item, memory_order_relaxed),
                         atomic_load_explicit(&r->line[i].qty, memory_order_relaxed));
    atomic_fetch_add_explicit(&rs->committed, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rs->commits, 1, memory_order_relaxed);
    return finish_copy(s, idx, g, ret);
}

int atp_store_commit(struct atp_store *s, uint64_t id, uint64_t now_us, struct atp_reservation *ret)
{
    return commit_common(s, id, now_us, HELD_COMMIT, ret);
}

int atp_store_commit_logged(struct atp_store *s, uint64_t id, uint64_t now_us)
{
    return commit_common(s, id, now_us, HELD_COMMIT_LOGGED, NULL);
}

int atp_store_release(struct atp_store *s, uint64_t id, uint64_t now_us,
                      struct atp_reservation *ret)
{
    struct resv_state *rs = s->resv;
    uint32_t idx, g;
    int rc = held_transition(s, id, now_us, HELD_RELEASE, 0, &idx, &g);
    if (rc)
        return rc;
    rec_give_back(s, &rs->recs[idx]);
    atomic_fetch_add_explicit(&rs->releases, 1, memory_order_relaxed);
    rc = finish_copy(s, idx, g, ret);
    retire_push(rs, idx);
    return rc;
}

int atp_store_extend(struct atp_store *s, uint64_t id, uint64_t ttl_ms, uint64_t now_us,
                     struct atp_reservation *ret)
{
    if (ttl_ms == 0 || ttl_ms > s->cfg.max_ttl_ms)
        return ATP_ETTL;
    uint32_t idx, g;
    int rc = held_transition(s, id, now_us, HELD_EXTEND, ttl_ms, &idx, &g);
    if (rc)
        return rc;
    /* The reaper re-files it (a shorter TTL must not wait for the old slot). */
    inbox_push(s->resv, idx);
    expirer_note(s->resv, idx);
    return finish_copy(s, idx, g, ret);
}

int atp_store_reservation_get(struct atp_store *s, uint64_t id, struct atp_reservation *ret)
{
    uint32_t idx, g;
    int rc = id_resolve(s->resv, id, &idx, &g);
    if (rc)
        return rc;
    return finish_copy(s, idx, g, ret);
}

static int find_by_key(struct atp_store *s, struct atp_slice key, uint32_t *ret_idx,
                       uint32_t *ret_gen)
{
    if (!valid_idem_key(key))
        return ATP_EKEY;
    struct resv_state *rs = s->resv;
    uint64_t kw[ATP_KEY_MAX / 8];
    key_pack(key, kw);
    uint64_t h = XXH3_64bits(kw, key.len);
    uint64_t e = epoch_enter(rs);
    int found = key_lookup(rs, e, h, kw, key.len, ret_idx, ret_gen);
    epoch_leave(rs, e);
    return found ? 0 : ATP_ENOTFOUND;
}

int atp_store_reservation_find(struct atp_store *s, struct atp_slice key,
                               struct atp_reservation *ret)
{
    uint32_t idx, g;
    int rc = find_by_key(s, key, &idx, &g);
    if (rc)
        return rc;
    struct atp_reservation tmp;
    if (rec_copy(s, idx, g, &tmp) != 0)
        return ATP_ENOTFOUND;
    *ret = tmp;
    return 0;
}

int atp_store_fulfill(struct atp_store *s, struct atp_slice key, uint32_t line,
                      struct atp_reservation *ret)
{
    struct resv_state *rs = s->resv;
    uint32_t idx, g;
    int rc = find_by_key(s, key, &idx, &g);
    if (rc)
        return rc;
    struct resv *r = &rs->recs[idx];
    uint64_t c = atomic_load_explicit(&r->ctl, memory_order_acquire);
    if (!ctl_matches(c, g))
        return ATP_ENOTFOUND;
    if (ctl_state(c) != ATP_RES_COMMITTED)
        return ATP_ESTATE;
    uint32_t n = atomic_load_explicit(&r->nlines, memory_order_relaxed);
    if (line >= n)
        return ATP_EINVAL;
    uint64_t bit = UINT64_C(1) << line;
    uint64_t old = atomic_fetch_or_explicit(&r->fulfilled, bit, memory_order_acq_rel);
    if (old & bit)
        return ATP_ESTATE;
    store_item_ship(s, atomic_load_explicit(&r->line[line].item, memory_order_relaxed),
                    atomic_load_explicit(&r->line[line].qty, memory_order_relaxed),
                    &(struct atp_journal_rec){.type = ATP_J_FULFILL,
                                              .key = key,
                                              .id = ((uint64_t)g << 32) | (idx + 1),
                                              .line = line});
    atomic_fetch_add_explicit(&rs->fulfillments, 1, memory_order_relaxed);
    uint64_t all = n == 64 ? UINT64_MAX : (UINT64_C(1) << n) - 1;
    if ((old | bit) == all) {
        uint64_t nc = ctl_make(g, 0, ATP_RES_FULFILLED);
        if (atomic_compare_exchange_strong_explicit(&r->ctl, &c, nc, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            atomic_fetch_sub_explicit(&rs->committed, 1, memory_order_relaxed);
            retire_push(rs, idx);
        }
    }
    return finish_copy(s, idx, g, ret);
}

/* --- the reaper ------------------------------------------------------------- */

static void reclaim(struct atp_store *s, uint64_t now_us)
{
    struct resv_state *rs = s->resv;
    /*
     * A15: pairs with the release CAS in retire_push. At most REAPER_STEP
     * records are filed per tick (each is a random miss); the rest of the
     * list waits in retire_pending, so a record may be filed (and freed) a
     * few ticks later than its retirement: never earlier than a window.
     */
    if (!rs->retire_pending)
        rs->retire_pending = atomic_exchange_explicit(&rs->retire_head, 0, memory_order_acquire);
    for (uint32_t k = 0; rs->retire_pending && k < REAPER_STEP; k++) {
        uint32_t idx = rs->retire_pending - 1;
        rs->retire_pending = atomic_load_explicit(&rs->recs[idx].rnext, memory_order_relaxed);
        if (rs->fifo_len == rs->cap)
            break; /* cannot happen: at most cap records exist */
        rs->fifo[(rs->fifo_head + rs->fifo_len) % rs->cap] = (struct retired){idx, now_us};
        rs->fifo_len++;
    }
    uint64_t window_us = s->cfg.idempotency_window_ms * 1000;
    for (uint32_t k = 0; rs->fifo_len && k < REAPER_STEP; k++) {
        struct retired *f = &rs->fifo[rs->fifo_head];
        if (f->since_us + window_us > now_us)
            break;
        /* Records come due in batches and are cold by now: fetch ahead. */
        if (rs->fifo_len > ROT_AHEAD)
            __builtin_prefetch(&rs->recs[rs->fifo[(rs->fifo_head + ROT_AHEAD) % rs->cap].idx], 1);
        wheel_unlink(rs, f->idx);
        /* Journaled: replay must drop it too before its slot or key returns. */
        uint32_t g = atomic_load_explicit(&rs->recs[f->idx].gen, memory_order_relaxed);
        uint64_t pos = j_begin(s);
        rec_free(rs, f->idx);
        j_end(s, pos,
              (g & 1) ? NULL
                      : &(struct atp_journal_rec){.type = ATP_J_RECLAIM,
                                                  .id = ((uint64_t)g << 32) | (f->idx + 1),
                                                  .now_us = now_us});
        rs->fifo_head = (rs->fifo_head + 1) % rs->cap;
        rs->fifo_len--;
    }
}

/*
 * When the reaper next has something to do (store clock, us): the first
 * non-empty wheel slot (a slot may hold only records of a later lap, or
 * records committed meanwhile: then the visit is for nothing, never late),
 * the next record to reclaim, the next rotation, the next tick (tick_us) if
 * bounded work of this run is left over; at most max_us from now.
 */
static uint64_t reaper_next_us(struct atp_store *s, uint64_t now_us, uint64_t max_us,
                               uint64_t tick_us)
{
    struct resv_state *rs = s->resv;
    uint64_t window_us = s->cfg.idempotency_window_ms * 1000;
    uint64_t soon = now_us + tick_us, next = now_us + max_us;
    if (rs->rot_phase != ROT_IDLE || rs->retire_pending)
        next = soon;
    if (rs->fifo_len && rs->fifo[rs->fifo_head].since_us + window_us < next)
        next = rs->fifo[rs->fifo_head].since_us + window_us;
    const struct ktable *cur = &rs->kt[atomic_load(&rs->epoch) % 3];
    if (kt_over_half(cur))
        next = now_us; /* a rotation is due but waited for the old epoch */
    else if (rs->last_rotate_us + window_us < next)
        next = rs->last_rotate_us + window_us;
    if (next < soon)
        next = soon; /* due already but left for the next tick (bounded steps) */
    /* Expiries come first: slots after done_ms (swept up to now) up to next. */
    for (uint64_t m = rs->done_ms + 1; m * 1000 < next; m++)
        if (rs->wheel[m & WHEEL_MASK])
            return m * 1000;
    return next;
}

/*
 * One reaper run. -1 if another caller is running it; else the number
 * expired, with the reaper's next due time in *ret_next_us (if not NULL,
 * see reaper_next_us) and the run's number in *ret_run.
 */
static int reaper_run(struct atp_store *s, uint64_t now_us, uint64_t max_us, uint64_t tick_us,
                      uint64_t *ret_next_us, uint64_t *ret_run)
{
    struct resv_state *rs = s->resv;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&rs->reaper_busy, &expected, 1))
        return -1;
    /* seq_cst, before the inbox is drained: the expirer sees that a run other
     * than its own may have taken records it did not plan for (E16). */
    uint64_t run = atomic_load_explicit(&rs->reaper_runs, memory_order_relaxed) + 1;
    atomic_store(&rs->reaper_runs, run);
    int n = 0;
    uint64_t now_ms = now_us / 1000;
    if (rs->done_ms == 0) {
        rs->done_ms = now_ms ? now_ms - 1 : 0; /* first tick: nothing filed yet */
        rs->last_rotate_us = now_us;
    }
    /* A13: pairs with R13 in inbox_push; seq_cst for W16/E16. */
    for (uint32_t h = atomic_exchange(&rs->inbox, 0); h;) {
        uint32_t idx = h - 1;
        h = atomic_load_explicit(&rs->recs[idx].inext, memory_order_relaxed);
        /* Cleared before the visit: a later extend re-queues it. */
        atomic_store_explicit(&rs->recs[idx].in_inbox, 0, memory_order_seq_cst);
        n += wheel_visit(s, idx, now_us);
    }
    if (now_ms > rs->done_ms) {
        uint64_t from = rs->done_ms + 1;
        if (now_ms - rs->done_ms > WHEEL_SLOTS)
            from = now_ms - WHEEL_SLOTS + 1; /* far behind: every slot once */
        for (uint64_t m = from; m <= now_ms; m++)
            n += sweep_ms(s, m, now_us);
        rs->done_ms = now_ms;
    }
    reclaim(s, now_us);
    kt_rotate(s, now_us);
    if (ret_next_us)
        *ret_next_us = reaper_next_us(s, now_us, max_us, tick_us);
    if (ret_run)
        *ret_run = run;
    atomic_store_explicit(&rs->reaper_busy, 0, memory_order_release);
    return n;
}

int atp_store_expire(struct atp_store *s, uint64_t now_us)
{
    int n = reaper_run(s, now_us, 0, 0, NULL, NULL);
    return n < 0 ? 0 : n;
}

/* Sleep until the store clock reads until_us, or a kick changes wake_seq. */
static void expirer_sleep(struct resv_state *rs, uint32_t seq, uint64_t until_us)
{
    uint64_t now = atp_now_us();
    if (until_us <= now)
        return;
    /* The store clock is CLOCK_REALTIME; sleep on the monotonic one, so a
     * clock step makes a wake-up early or late by at most one sleep. */
    uint64_t d = until_us - now;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(d / 1000000);
    ts.tv_nsec += (long)(d % 1000000) * 1000;
    if (ts.tv_nsec >= 1000000000L)
        ts.tv_nsec -= 1000000000L, ts.tv_sec++;
    /* Absolute CLOCK_MONOTONIC deadline; returns at once if seq is stale. */
    futex(&rs->wake_seq, FUTEX_WAIT_BITSET_PRIVATE, seq, &ts);
}

static void *expirer_main(void *arg)
{
    struct atp_store *s = arg;
    struct resv_state *rs = s->resv;
    pthread_setname_np(pthread_self(), "atp-expirer"); /* for top, perf and gdb */
    /*
     * Expiry lateness is bounded by how soon this thread runs after its due
     * time. Busy request threads would otherwise make it wait for a scheduler
     * slice (measured: hundreds of ms with 12 busy threads on 2 cores), so it
     * asks for the lowest real-time priority; it sleeps between runs and its
     * work per run is bounded. Without the privilege it runs as it is.
     */
    struct sched_param sp = {.sched_priority = 1};
    rs->expirer_rt = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
    /*
     * Sleep until the next due expiry (or reclaim, or rotation), at most
     * EXPIRER_MAX_SLEEP_MS: on an idle server, or one that only answers
     * lookups, this thread woke every tick (1000 times a second) and took
     * the CPU from a request thread each time. While reservations arrive
     * (the inbox is not empty when we are done) or bounded work is left, it
     * runs every tick as before.
     */
    while (!atomic_load(&rs->expirer_stop)) {
        atomic_store(&rs->wake_ms, 0); /* awake: nobody needs to kick */
        atomic_fetch_add_explicit(&rs->expirer_wakeups, 1, memory_order_relaxed);
        uint64_t now = atp_now_us(), next, run = 0;
        uint64_t tick_next = now + rs->tick_us;
        if (reaper_run(s, now, EXPIRER_MAX_SLEEP_MS * 1000, rs->tick_us, &next, &run) < 0)
            next = tick_next; /* another caller is reaping */
        uint32_t seq = atomic_load(&rs->wake_seq);
        /*
         * E16: publish the plan, then look at the inbox (seq_cst both; pairs
         * with W16 in expirer_note). A record pushed after our drain either
         * shows here or its pusher sees the plan and kicks us if due earlier.
         * Another run (atp_store_expire on some other thread) may have
         * drained records this plan does not know of: tick then.
         */
        atomic_store(&rs->wake_ms, (next + 999) / 1000);
        if ((atomic_load(&rs->inbox) != 0 || atomic_load(&rs->reaper_runs) != run ||
             kt_over_half(&rs->kt[atomic_load(&rs->epoch) % 3])) &&
            tick_next < next) {
            next = tick_next;
            atomic_store(&rs->wake_ms, (next + 999) / 1000);
        }
        if (atomic_load(&rs->expirer_stop))
            break; /* the stopper bumps wake_seq after setting the flag */
        expirer_sleep(rs, seq, next);
    }
    atomic_store(&rs->wake_ms, 0);
    return NULL;
}

int atp_store_start_expirer(struct atp_store *s, uint32_t tick_us)
{
    struct resv_state *rs = s->resv;
    if (rs->expirer_running)
        return ATP_ESTATE;
    rs->tick_us = tick_us ? tick_us : 1000;
    atomic_store(&rs->expirer_stop, 0);
    int rc = pthread_create(&rs->expirer, NULL, expirer_main, s);
    if (rc)
        return -rc;
    rs->expirer_running = 1;
    return 0;
}

void atp_store_stop_expirer(struct atp_store *s)
{
    struct resv_state *rs = s->resv;
    if (!rs || !rs->expirer_running)
        return;
    atomic_store(&rs->expirer_stop, 1);
    atomic_fetch_add(&rs->wake_seq, 1);
    futex(&rs->wake_seq, FUTEX_WAKE_PRIVATE, 1, NULL);
    pthread_join(rs->expirer, NULL);
    rs->expirer_running = 0;
}

/* --- recovery ---------------------------------------------------------------- */

int atp_store_foreach_reservation(struct atp_store *s,
                                  int (*fn)(const struct atp_reservation *r, void *arg), void *arg)
{
    struct resv_state *rs = s->resv;
    uint32_t n = atomic_load_explicit(&rs->fresh, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t g = atomic_load_explicit(&rs->recs[i].gen, memory_order_acquire);
        struct atp_reservation r;
        if (g == 0 || (g & 1) || rec_copy(s, i, g, &r) != 0)
            continue;
        int rc = fn(&r, arg);
        if (rc)
            return rc;
    }
    return 0;
}

int atp_store_restore_reservation(struct atp_store *s, const struct atp_reservation *in)
{
    struct resv_state *rs = s->resv;
    uint32_t lo = (uint32_t)in->id, gen = (uint32_t)(in->id >> 32);
    if (lo == 0 || lo > rs->cap || gen == 0 || (gen & 1) || in->nlines == 0 ||
        in->nlines > ATP_MAX_LINES || in->key_len == 0 || in->key_len > ATP_KEY_MAX ||
        in->channel >= s->nchannels || in->state < ATP_RES_HELD || in->state > ATP_RES_EXPIRED)
        return ATP_EINVAL;
    uint32_t idx = lo - 1;
    const uint32_t nl = in->nlines & (2 * ATP_MAX_LINES - 1); /* <= ATP_MAX_LINES, checked above */
    struct resv *r = &rs->recs[idx];
    uint32_t cur = atomic_load_explicit(&r->gen, memory_order_relaxed);
    if (cur != 0 && !(cur & 1))
        return ATP_EINVAL; /* slot taken */
    uint32_t items[ATP_MAX_LINES];
    for (uint32_t i = 0; i < nl && i < ATP_MAX_LINES; i++) {
        int rc = store_find_item(s, in->lines[i].sku, in->lines[i].loc, &items[i]);
        if (rc)
            return rc;
        if (in->lines[i].qty <= 0 || in->lines[i].qty > ATP_QTY_MAX)
            return ATP_EQTY;
    }
    atomic_store_explicit(&r->gen, gen | 1, memory_order_relaxed);
    atomic_store_explicit(&r->created_us, in->created_us, memory_order_relaxed);
    atomic_store_explicit(&r->ttl_ms, in->ttl_ms, memory_order_relaxed);
    atomic_store_explicit(&r->channel, in->channel, memory_order_relaxed);
    atomic_store_explicit(&r->nlines, in->nlines, memory_order_relaxed);
    atomic_store_explicit(&r->key_len, in->key_len, memory_order_relaxed);
    uint64_t kw[ATP_KEY_MAX / 8];
    key_pack((struct atp_slice){in->key, in->key_len}, kw);
    for (uint32_t i = 0; i < ATP_KEY_MAX / 8; i++)
        atomic_store_explicit(&r->key[i], kw[i], memory_order_relaxed);
    uint32_t any = 0;
    uint64_t ff = 0;
    for (uint32_t i = 0; i < nl && i < ATP_MAX_LINES; i++) {
        any |= (uint32_t)in->lines[i].any << i;
        ff |= (uint64_t)in->lines[i].fulfilled << i;
        atomic_store_explicit(&r->line[i].item, items[i], memory_order_relaxed);
        atomic_store_explicit(&r->line[i].qty, in->lines[i].qty, memory_order_relaxed);
    }
    atomic_store_explicit(&r->any_mask, any, memory_order_relaxed);
    atomic_store_explicit(&r->fulfilled, ff, memory_order_relaxed);
    uint64_t exp_ms =
        in->state == ATP_RES_HELD || in->state == ATP_RES_EXPIRED ? in->expires_us / 1000 : 0;
    atomic_store_explicit(&r->ctl, ctl_make(gen, exp_ms, (unsigned)in->state),
                          memory_order_relaxed);
    atomic_store_explicit(&r->gen, gen, memory_order_release);
    uint32_t f = atomic_load_explicit(&rs->fresh, memory_order_relaxed);
    if (f < idx + 1)
        atomic_store_explicit(&rs->fresh, idx + 1, memory_order_relaxed);

    uint64_t e = atomic_load(&rs->epoch);
    uint32_t slot, fi, fg;
    kt_claim(rs, &rs->kt[e % 3], XXH3_64bits(kw, in->key_len), kw, in->key_len,
             kent_make(XXH3_64bits(kw, in->key_len), gen, idx), &slot, &fi, &fg);
    switch (in->state) {
    case ATP_RES_HELD:
        for (uint32_t i = 0; i < in->nlines; i++)
            store_force_take(s, items[i], in->lines[i].qty);
        atomic_fetch_add_explicit(&rs->restored_held, 1, memory_order_relaxed);
        inbox_push(rs, idx);
        break;
    case ATP_RES_COMMITTED:
        for (uint32_t i = 0; i < in->nlines; i++)
            if (!(ff >> i & 1))
                store_restore_committed(s, items[i], in->lines[i].qty);
        atomic_fetch_add_explicit(&rs->committed, 1, memory_order_relaxed);
        break;
    default:
        retire_push(rs, idx);
        break;
    }
    return 0;
}

int atp_store_expire_id(struct atp_store *s, uint64_t id, uint64_t now_us)
{
    uint32_t idx, g;
    int rc = id_resolve(s->resv, id, &idx, &g);
    if (rc)
        return rc;
    uint64_t c = atomic_load_explicit(&s->resv->recs[idx].ctl, memory_order_acquire);
    if (!ctl_matches(c, g))
        return ATP_ENOTFOUND;
    if (ctl_state(c) != ATP_RES_HELD)
        return ATP_ESTATE;
    return rec_try_expire(s, idx, c, now_us, false) ? 0 : ATP_ESTATE;
}

int atp_store_forget_reservation(struct atp_store *s, uint64_t id)
{
    struct resv_state *rs = s->resv;
    uint32_t idx, g;
    int rc = id_resolve(rs, id, &idx, &g);
    if (rc)
        return rc;
    struct resv *r = &rs->recs[idx];
    uint64_t c = atomic_load_explicit(&r->ctl, memory_order_acquire);
    if (!ctl_matches(c, g))
        return ATP_ENOTFOUND;
    unsigned st = ctl_state(c);
    if (st != ATP_RES_RELEASED && st != ATP_RES_EXPIRED && st != ATP_RES_FULFILLED)
        return ATP_ESTATE;
    /* Odd generation: its key entries go stale; restore_done frees the slot. */
    atomic_store_explicit(&r->gen, g + 1, memory_order_release);
    atomic_store_explicit(&r->ctl, ctl_make(g + 1, 0, ST_FREE), memory_order_release);
    return 0;
}

void atp_store_restore_done(struct atp_store *s)
{
    struct resv_state *rs = s->resv;
    uint32_t n = atomic_load_explicit(&rs->fresh, memory_order_relaxed);
    /* Recovery only (no reaper has run): queue every record afresh. */
    atomic_store_explicit(&rs->inbox, 0, memory_order_relaxed);
    atomic_store_explicit(&rs->retire_head, 0, memory_order_relaxed);
    rs->retire_pending = 0;
    for (uint32_t i = 0; i < n; i++)
        atomic_store_explicit(&rs->recs[i].in_inbox, 0, memory_order_relaxed);
    for (uint32_t i = n; i-- > 0;) {
        uint32_t g = atomic_load_explicit(&rs->recs[i].gen, memory_order_relaxed);
        if (g == 0 || (g & 1)) {
            rec_free(rs, i);
            continue;
        }
        switch (ctl_state(atomic_load_explicit(&rs->recs[i].ctl, memory_order_relaxed))) {
        case ATP_RES_HELD:
            inbox_push(rs, i);
            break;
        case ATP_RES_RELEASED:
        case ATP_RES_EXPIRED:
        case ATP_RES_FULFILLED:
            retire_push(rs, i);
            break;
        default:
            break;
        }
    }
}

/* --- lifecycle and stats ---------------------------------------------------- */

int resv_init(struct atp_store *s)
{
    struct resv_state *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return -ENOMEM;
    s->resv = rs;
    rs->cap = s->cfg.max_reservations;
    rs->recs_bytes = (size_t)rs->cap * sizeof(struct resv);
    rs->recs = store_map(rs->recs_bytes);
    rs->wheel = store_map(sizeof(uint32_t) * WHEEL_SLOTS);
    rs->fifo = store_map(sizeof(struct retired) * rs->cap);
    if (!rs->recs || !rs->wheel || !rs->fifo)
        return -ENOMEM;
    /*
     * The reaper's own memory (wheel, retired FIFO, key tables below) is
     * touched now: a page fault inside a tick, above all a huge page's, made
     * that tick (and the expiries after it) late by up to tens of ms.
     */
    store_prefault(rs->wheel, sizeof(uint32_t) * WHEEL_SLOTS);
    store_prefault(rs->fifo, sizeof(struct retired) * rs->cap);
    /*
     * A table receives at most the records created in one window plus the
     * live keys carried into it, both bounded by cap: 4 * cap slots keep it
     * at most half full.
     */
    uint64_t n = 16;
    while (n < (uint64_t)rs->cap * 4)
        n <<= 1;
    for (int i = 0; i < 3; i++) {
        rs->kt[i].mask = (uint32_t)(n - 1);
        rs->kt[i].slots = store_map(n * sizeof(uint64_t));
        rs->kt[i].claimed_cap = (uint32_t)(n / 2);
        rs->kt[i].claimed = store_map((size_t)rs->kt[i].claimed_cap * sizeof(uint32_t));
        if (!rs->kt[i].slots || !rs->kt[i].claimed)
            return -ENOMEM;
        store_prefault((void *)rs->kt[i].slots, n * sizeof(uint64_t));
        store_prefault((void *)rs->kt[i].claimed, (size_t)rs->kt[i].claimed_cap * sizeof(uint32_t));
    }
    return 0;
}

void resv_fini(struct atp_store *s)
{
    struct resv_state *rs = s->resv;
    if (!rs)
        return;
    atp_store_stop_expirer(s);
    for (int i = 0; i < 3; i++) {
        store_unmap(rs->kt[i].slots, ((size_t)rs->kt[i].mask + 1) * sizeof(uint64_t));
        store_unmap(rs->kt[i].claimed, (size_t)rs->kt[i].claimed_cap * sizeof(uint32_t));
    }
    store_unmap(rs->recs, rs->recs_bytes);
    store_unmap(rs->wheel, sizeof(uint32_t) * WHEEL_SLOTS);
    store_unmap(rs->fifo, sizeof(struct retired) * rs->cap);
    free(rs);
    s->resv = NULL;
}

void resv_stats(struct atp_store *s, struct atp_store_stats *st)
{
    struct resv_state *rs = s->resv;
    /*
     * Exact when nothing is in flight. Ends are read before starts, so that
     * on x86 (stores seen in order) a concurrent reader errs towards more
     * held; elsewhere it may be off by the operations in flight, and the
     * clamp keeps it from wrapping below zero.
     */
    uint64_t ended = atomic_load_explicit(&rs->commits, memory_order_relaxed) +
                     atomic_load_explicit(&rs->releases, memory_order_relaxed) +
                     atomic_load_explicit(&rs->expirations, memory_order_relaxed);
    uint64_t started = atomic_load_explicit(&rs->granted, memory_order_relaxed) +
                       atomic_load_explicit(&rs->restored_held, memory_order_relaxed);
    st->reservations_held = started > ended ? started - ended : 0;
    st->reservations_committed = atomic_load_explicit(&rs->committed, memory_order_relaxed);
    st->reservations_live = st->reservations_held + st->reservations_committed;
    st->reserves_granted = atomic_load_explicit(&rs->granted, memory_order_relaxed);
    st->reserves_rejected = atomic_load_explicit(&rs->rejected, memory_order_relaxed);
    st->reserves_replayed = atomic_load_explicit(&rs->replayed, memory_order_relaxed);
    st->commits = atomic_load_explicit(&rs->commits, memory_order_relaxed);
    st->releases = atomic_load_explicit(&rs->releases, memory_order_relaxed);
    st->expirations = atomic_load_explicit(&rs->expirations, memory_order_relaxed);
    st->fulfillments = atomic_load_explicit(&rs->fulfillments, memory_order_relaxed);
    st->lateness_max_us = atomic_load_explicit(&rs->late_max, memory_order_relaxed);
    st->lateness_sum_us = atomic_load_explicit(&rs->late_sum, memory_order_relaxed);
    for (int i = 0; i < ATP_LATENESS_BUCKETS; i++)
        st->lateness_buckets[i] = atomic_load_explicit(&rs->late_buckets[i], memory_order_relaxed);
    st->expirer_wakeups = atomic_load_explicit(&rs->expirer_wakeups, memory_order_relaxed);
    st->bytes_reserved += rs->recs_bytes + sizeof(uint32_t) * WHEEL_SLOTS +
                          sizeof(struct retired) * rs->cap +
                          3 * ((size_t)rs->kt[0].mask + 1) * sizeof(uint64_t) +
                          3 * (size_t)rs->kt[0].claimed_cap * sizeof(uint32_t);
}
