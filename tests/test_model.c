/*
 * test_model.c - the store against a reference model (suite `model`).
 *
 * Seeded random sequences of every store operation (adjust, set, allocate,
 * deallocate, safety overrides, reserve with replays and conflicts, commit,
 * release, extend, fulfill, expire, reads, network reads, lookups, item
 * iteration, statistics and the change feed) run against the store and against a small
 * single-threaded model written from SPEC.md's formulas and the header's
 * documented semantics. Every answer must be identical: return code, every
 * out-parameter, every counter.
 *
 * Where the header leaves a choice open the model follows the store's
 * documented-by-test choice (see tests/test_store.c): safety with units and
 * percent is the larger of the two; an unknown item in a reserve is
 * insufficient with 0 available; the shortfall of lines after the failing one
 * is computed without taking; an "any" line for a channel without a list may
 * pick any location tied for most available (the model checks the choice is
 * one of them and follows it).
 *
 * Not modelled here (unit-tested instead): reclamation after the idempotency
 * window (the window is longer than the run), capacities, concurrency.
 * Deallocations either stay within what allocate events allocated or exceed
 * everything allocated (ATP_ERANGE); the store cannot tell an external
 * deallocation from one of its own commits, so the model does not ask.
 *
 * Environment: ATP_MODEL_SEEDS="1,2,3" overrides the seeds, ATP_MODEL_OPS the
 * number of operations per seed (default 150000). On a mismatch the seed and
 * the operation number are printed; rerun with that seed to reproduce.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "atp/store.h"

/* --- universe -------------------------------------------------------------- */

#define NSKU   6
#define NLOC   4
#define NCHAN  5
#define MAXRES (1u << 17)
#define M      ATP_QTY_MAX

static const char *const sku_names[NSKU] = {"S0", "S1", "sku/2", "S3", "S-4", "s:5"};
static const char *const loc_names[NLOC] = {"L0", "L1", "DC.2", "L3"};
static const char *const b2b_list[] = {"DC.2", "L0"}; /* loc 2 then loc 0 */
static const int b2b_idx[] = {2, 0};

static const struct atp_channel_config chan_cfg[NCHAN] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 2, .cap = -1},
    {.name = "mkt", .safety_pct = 10, .cap = 15},
    {.name = "b2b", .cap = -1, .locations = b2b_list, .nlocations = 2},
    {.name = "mix", .safety_units = 1, .safety_pct = 25, .cap = 30},
};

static struct atp_slice S(const char *s) {
    return atp_slice_cstr(s);
}

/* --- random ------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static uint32_t rn(uint32_t n) /* 0..n-1 */
{
    return (uint32_t)(rnd() % n);
}

static int chance(uint32_t pct)
{
    return rn(100) < pct;
}

/* --- the model ----------------------------------------------------------------- */

struct mitem {
    int exists;
    int64_t on_hand, allocated, reserved;
    int64_t ext_alloc; /* allocated by allocate events (the rest is commits) */
    uint64_t set_seq;
    int64_t ovr[NCHAN]; /* item override, -1 none */
};

struct mline {
    int sku, loc; /* loc: chosen location */
    int any;
    int64_t qty;
    bool fulfilled;
};

struct mres {
    uint64_t id;
    char key[ATP_KEY_MAX];
    uint32_t key_len;
    int state;
    uint32_t channel;
    uint64_t created, expires, ttl;
    uint32_t nlines;
    struct mline lines[ATP_MAX_LINES];
    int32_t held_pos; /* index in model.held, -1 when not held */
};

struct model {
    struct mitem items[NSKU][NLOC];
    int64_t sku_ovr[NSKU][NCHAN];
    struct mres *res;
    uint32_t nres;
    uint32_t *held; /* indexes of held reservations */
    uint32_t nheld, ncommitted;
    uint64_t *id_slots; /* id -> index+1 hash, open addressing */
    uint64_t now;
    /* counters */
    uint64_t granted, rejected, replayed, commits, releases, expirations, fulfillments;
    uint64_t late_max, late_sum, late_buckets[ATP_LATENESS_BUCKETS];
};

static struct model md;
static struct atp_store *st;
static uint64_t cur_seed;
static long cur_op;
static const char *cur_what;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            print_error("model mismatch: seed=%llu op=%ld (%s), line %d: ",                        \
                        (unsigned long long)cur_seed, cur_op, cur_what, __LINE__);                 \
            print_error(__VA_ARGS__);                                                              \
            print_error("\n");                                                                     \
            fail();                                                                                \
        }                                                                                          \
    } while (0)

#define CHECK_RC(got, want)                                                                        \
    CHECK((got) == (want), "rc %d (%s), model says %d (%s)", (got), atp_error_name(got), (want),   \
          atp_error_name(want))

static int sku_exists(int k)
{
    for (int l = 0; l < NLOC; l++)
        if (md.items[k][l].exists)
            return 1;
    return 0;
}

static void item_create(int k, int l)
{
    struct mitem *it = &md.items[k][l];
    if (it->exists)
        return;
    memset(it, 0, sizeof(*it));
    it->exists = 1;
    for (int c = 0; c < NCHAN; c++)
        it->ovr[c] = -1;
}

static int allowed(uint32_t c, int l)
{
    if (!chan_cfg[c].locations)
        return 1;
    for (uint32_t i = 0; i < chan_cfg[c].nlocations; i++)
        if (b2b_idx[i] == l)
            return 1;
    return 0;
}

static int64_t safety(int k, int l, uint32_t c)
{
    const struct mitem *it = &md.items[k][l];
    if (it->ovr[c] >= 0)
        return it->ovr[c];
    if (md.sku_ovr[k][c] >= 0)
        return md.sku_ovr[k][c];
    int64_t p = 0;
    if (chan_cfg[c].safety_pct && it->on_hand > 0)
        p = (it->on_hand * chan_cfg[c].safety_pct + 99) / 100; /* rounded up */
    return p > chan_cfg[c].safety_units ? p : chan_cfg[c].safety_units;
}

/* ATP(i, c) = clamp(on_hand - allocated - reserved - safety, 0, cap); 0 where c may not sell */
static int64_t atp(int k, int l, uint32_t c)
{
    const struct mitem *it = &md.items[k][l];
    if (!allowed(c, l))
        return 0;
    int64_t v = it->on_hand - it->allocated - it->reserved - safety(k, l, c);
    if (v < 0)
        v = 0;
    if (chan_cfg[c].cap >= 0 && v > chan_cfg[c].cap)
        v = chan_cfg[c].cap;
    return v;
}

static struct atp_breakdown breakdown(int k, int l, uint32_t c)
{
    const struct mitem *it = &md.items[k][l];
    return (struct atp_breakdown){it->on_hand, it->allocated, it->reserved, safety(k, l, c),
                                  atp(k, l, c)};
}

static int qty_ok(int64_t v)
{
    return v >= -M && v <= M;
}

static int64_t mfree(const struct mitem *it)
{
    return it->on_hand - it->allocated - it->reserved;
}

static void late_record(uint64_t late)
{
    if (late > md.late_max)
        md.late_max = late;
    md.late_sum += late;
    unsigned b = 0;
    while (b < ATP_LATENESS_BUCKETS - 1 && late > (UINT64_C(64) << b))
        b++;
    md.late_buckets[b]++;
}

#define ID_SLOTS (MAXRES * 4)

static uint64_t id_hash(uint64_t id)
{
    id ^= id >> 31;
    id *= UINT64_C(0x9e3779b97f4a7c15);
    return id ^ (id >> 29);
}

/* id_slots holds pairs (id, index+1) */
static struct mres *res_by_id(uint64_t id)
{
    for (uint64_t i = id_hash(id) % ID_SLOTS;; i = (i + 1) % ID_SLOTS) {
        if (md.id_slots[2 * i + 1] == 0)
            return NULL;
        if (md.id_slots[2 * i] == id)
            return &md.res[md.id_slots[2 * i + 1] - 1];
    }
}

static void id_insert(uint64_t id, uint32_t idx)
{
    uint64_t i = id_hash(id) % ID_SLOTS;
    while (md.id_slots[2 * i + 1] != 0)
        i = (i + 1) % ID_SLOTS;
    md.id_slots[2 * i] = id;
    md.id_slots[2 * i + 1] = idx + 1;
}

/* Every state change goes through here so the held list and counts stay right. */
static void set_state(struct mres *r, int state)
{
    if (r->state == ATP_RES_HELD) {
        uint32_t last = md.held[--md.nheld];
        md.held[r->held_pos] = last;
        md.res[last].held_pos = r->held_pos;
        r->held_pos = -1;
    }
    if (r->state == ATP_RES_COMMITTED)
        md.ncommitted--;
    r->state = state;
    if (state == ATP_RES_HELD) {
        r->held_pos = (int32_t)md.nheld;
        md.held[md.nheld++] = (uint32_t)(r - md.res);
    }
    if (state == ATP_RES_COMMITTED)
        md.ncommitted++;
}

static void give_back(struct mres *r)
{
    for (uint32_t i = 0; i < r->nlines; i++)
        md.items[r->lines[i].sku][r->lines[i].loc].reserved -= r->lines[i].qty;
}

/* `by_reaper`: lateness counts only expiries the reaper made; a client that
 * finds its hold expired on a late call is not the reaper being late. */
static void expire_one(struct mres *r, uint64_t now, int by_reaper)
{
    give_back(r);
    set_state(r, ATP_RES_EXPIRED);
    md.expirations++;
    if (by_reaper)
        late_record(now - r->expires);
}

/* --- comparisons ---------------------------------------------------------------- */

static int find_idx(const char *const *names, int n, struct atp_slice s)
{
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == s.len && memcmp(names[i], s.p, s.len) == 0)
            return i;
    return -1;
}

static void cmp_res(const struct mres *m, const struct atp_reservation *r)
{
    CHECK(r->id == m->id, "id %llu vs %llu", (unsigned long long)r->id, (unsigned long long)m->id);
    CHECK(r->state == m->state, "reservation %llu state %s, model %s", (unsigned long long)m->id,
          atp_res_state_name(r->state), atp_res_state_name(m->state));
    CHECK(r->channel == m->channel, "channel");
    CHECK(r->created_us == m->created, "created_us %llu vs %llu", (unsigned long long)r->created_us,
          (unsigned long long)m->created);
    CHECK(r->ttl_ms == m->ttl, "ttl_ms %llu vs %llu", (unsigned long long)r->ttl_ms,
          (unsigned long long)m->ttl);
    if (m->state == ATP_RES_HELD)
        CHECK(r->expires_us == m->expires, "expires_us %llu vs model %llu",
              (unsigned long long)r->expires_us, (unsigned long long)m->expires);
    CHECK(r->key_len == m->key_len && memcmp(r->key, m->key, m->key_len) == 0, "key");
    CHECK(r->nlines == m->nlines, "nlines %u vs %u", r->nlines, m->nlines);
    for (uint32_t i = 0; i < m->nlines; i++) {
        const struct atp_res_line *a = &r->lines[i];
        const struct mline *b = &m->lines[i];
        CHECK(find_idx(sku_names, NSKU, a->sku) == b->sku, "line %u sku", i);
        CHECK(find_idx(loc_names, NLOC, a->loc) == b->loc, "line %u loc %.*s, model %s", i,
              (int)a->loc.len, a->loc.p, loc_names[b->loc]);
        CHECK(a->qty == b->qty, "line %u qty", i);
        CHECK(a->fulfilled == b->fulfilled, "line %u fulfilled %d vs %d", i, a->fulfilled,
              b->fulfilled);
        CHECK(a->any == (bool)b->any, "line %u any %d vs %d", i, a->any, b->any);
    }
}

static void cmp_bd(const struct atp_breakdown *a, const struct atp_breakdown *b, const char *what)
{
    CHECK(a->on_hand == b->on_hand && a->allocated == b->allocated && a->reserved == b->reserved &&
              a->safety == b->safety && a->atp == b->atp,
          "%s: store {oh %lld al %lld rs %lld sf %lld atp %lld} model {oh %lld al %lld rs %lld "
          "sf %lld atp %lld}",
          what, (long long)a->on_hand, (long long)a->allocated, (long long)a->reserved,
          (long long)a->safety, (long long)a->atp, (long long)b->on_hand, (long long)b->allocated,
          (long long)b->reserved, (long long)b->safety, (long long)b->atp);
}

static void check_get(int k, int l, uint32_t c)
{
    struct atp_breakdown b;
    int rc = atp_store_get(st, S(sku_names[k]), S(loc_names[l]), c, &b);
    if (!md.items[k][l].exists) {
        CHECK_RC(rc, ATP_ENOTFOUND);
        return;
    }
    CHECK_RC(rc, 0);
    struct atp_breakdown w = breakdown(k, l, c);
    char what[64];
    snprintf(what, sizeof(what), "get %s@%s ch %u", sku_names[k], loc_names[l], c);
    cmp_bd(&b, &w, what);
}

static void check_network(int k, uint32_t c)
{
    struct atp_breakdown b;
    int rc = atp_store_get_network(st, S(sku_names[k]), c, &b);
    if (!sku_exists(k)) {
        CHECK_RC(rc, ATP_ENOTFOUND);
        return;
    }
    CHECK_RC(rc, 0);
    struct atp_breakdown w = {0};
    for (int l = 0; l < NLOC; l++) {
        if (!md.items[k][l].exists || !allowed(c, l))
            continue;
        struct atp_breakdown x = breakdown(k, l, c);
        w.on_hand += x.on_hand, w.allocated += x.allocated, w.reserved += x.reserved;
        w.safety += x.safety, w.atp += x.atp;
    }
    char what[64];
    snprintf(what, sizeof(what), "network %s ch %u", sku_names[k], c);
    cmp_bd(&b, &w, what);
}

static void check_stats(void)
{
    struct atp_store_stats s;
    atp_store_stats(st, &s);
    uint64_t items = 0, skus = 0, held = md.nheld, committed = md.ncommitted;
    for (int k = 0; k < NSKU; k++) {
        skus += sku_exists(k);
        for (int l = 0; l < NLOC; l++)
            items += md.items[k][l].exists;
    }
    CHECK(s.items == items, "stats items %llu vs %llu", (unsigned long long)s.items,
          (unsigned long long)items);
    CHECK(s.skus == skus, "stats skus");
    CHECK(s.reservations_held == held, "stats held %llu vs %llu",
          (unsigned long long)s.reservations_held, (unsigned long long)held);
    CHECK(s.reservations_committed == committed, "stats committed %llu vs %llu",
          (unsigned long long)s.reservations_committed, (unsigned long long)committed);
    CHECK(s.reservations_live == held + committed, "stats live");
    CHECK(s.reserves_granted == md.granted, "stats granted %llu vs %llu",
          (unsigned long long)s.reserves_granted, (unsigned long long)md.granted);
    CHECK(s.reserves_rejected == md.rejected, "stats rejected %llu vs %llu",
          (unsigned long long)s.reserves_rejected, (unsigned long long)md.rejected);
    CHECK(s.reserves_replayed == md.replayed, "stats replayed");
    CHECK(s.commits == md.commits, "stats commits %llu vs %llu", (unsigned long long)s.commits,
          (unsigned long long)md.commits);
    CHECK(s.releases == md.releases, "stats releases");
    CHECK(s.expirations == md.expirations, "stats expirations %llu vs %llu",
          (unsigned long long)s.expirations, (unsigned long long)md.expirations);
    CHECK(s.fulfillments == md.fulfillments, "stats fulfillments");
    CHECK(s.lateness_max_us == md.late_max, "lateness max %llu vs %llu",
          (unsigned long long)s.lateness_max_us, (unsigned long long)md.late_max);
    CHECK(s.lateness_sum_us == md.late_sum, "lateness sum");
    for (int i = 0; i < ATP_LATENESS_BUCKETS; i++)
        CHECK(s.lateness_buckets[i] == md.late_buckets[i], "lateness bucket %d", i);
}

struct seen {
    int n;
    int bad;
};

static int visit(const struct atp_item_view *v, void *arg)
{
    struct seen *sn = arg;
    int k = find_idx(sku_names, NSKU, v->sku), l = find_idx(loc_names, NLOC, v->loc);
    CHECK(k >= 0 && l >= 0, "foreach: unknown item %.*s@%.*s", (int)v->sku.len, v->sku.p,
          (int)v->loc.len, v->loc.p);
    const struct mitem *it = &md.items[k][l];
    CHECK(it->exists, "foreach: item %s@%s not in the model", sku_names[k], loc_names[l]);
    CHECK(v->on_hand == it->on_hand && v->allocated == it->allocated &&
              v->reserved == it->reserved && v->set_seq == it->set_seq,
          "foreach %s@%s: {%lld %lld %lld seq %llu} vs model {%lld %lld %lld seq %llu}",
          sku_names[k], loc_names[l], (long long)v->on_hand, (long long)v->allocated,
          (long long)v->reserved, (unsigned long long)v->set_seq, (long long)it->on_hand,
          (long long)it->allocated, (long long)it->reserved, (unsigned long long)it->set_seq);
    sn->n++;
    return 0;
}

static void check_all(void)
{
    cur_what = "full check";
    struct seen sn = {0, 0};
    CHECK(atp_store_foreach_item(st, visit, &sn) == 0, "foreach rc");
    int n = 0;
    for (int k = 0; k < NSKU; k++)
        for (int l = 0; l < NLOC; l++)
            n += md.items[k][l].exists;
    CHECK(sn.n == n, "foreach visited %d items, model has %d", sn.n, n);
    for (int k = 0; k < NSKU; k++) {
        for (uint32_t c = 0; c < NCHAN; c++) {
            check_network(k, c);
            for (int l = 0; l < NLOC; l++)
                check_get(k, l, c);
        }
    }
    check_stats();
    /* the model's own conservation law: reserved equals what held reservations hold */
    int64_t held[NSKU][NLOC] = {{0}}, alloc[NSKU][NLOC] = {{0}};
    uint32_t nh = 0, nc = 0;
    for (uint32_t i = 0; i < md.nres; i++) {
        const struct mres *r = &md.res[i];
        nh += r->state == ATP_RES_HELD;
        nc += r->state == ATP_RES_COMMITTED;
        for (uint32_t j = 0; j < r->nlines; j++) {
            if (r->state == ATP_RES_HELD)
                held[r->lines[j].sku][r->lines[j].loc] += r->lines[j].qty;
            if (r->state == ATP_RES_COMMITTED && !r->lines[j].fulfilled)
                alloc[r->lines[j].sku][r->lines[j].loc] += r->lines[j].qty;
        }
    }
    CHECK(nh == md.nheld && nc == md.ncommitted, "model counts drifted");
    for (int k = 0; k < NSKU; k++)
        for (int l = 0; l < NLOC; l++) {
            CHECK(held[k][l] == md.items[k][l].reserved, "model reserved drifted");
            CHECK(alloc[k][l] + md.items[k][l].ext_alloc == md.items[k][l].allocated,
                  "model allocated drifted");
            CHECK(md.items[k][l].ext_alloc >= 0, "model events' allocation below 0");
        }
}

/* --- change feed -------------------------------------------------------------------- */

/*
 * One follower per channel and scope, as a connector keeps them: a mirror
 * built only from what the feed said. Every value the feed gives must be the
 * model's ATP at that moment, and once a follower has read all there is its
 * mirror must equal the model everywhere (a change the feed did not report
 * leaves it stale). Items start unknown, which reads as 0, as does an item a
 * channel may not sell from.
 */
struct follower {
    uint64_t cursor;
    int64_t item[NSKU][NLOC];
    int64_t net[NSKU];
};
static struct follower fol[NCHAN][2]; /* [c][0] item scope, [c][1] network */

static int64_t model_network(int k, uint32_t c)
{
    int64_t sum = 0;
    for (int l = 0; l < NLOC; l++)
        if (md.items[k][l].exists)
            sum += atp(k, l, c);
    return sum;
}

static void feed_start(void)
{
    memset(fol, 0, sizeof(fol));
    for (uint32_t c = 0; c < NCHAN; c++)
        for (int net = 0; net < 2; net++) {
            fol[c][net].cursor = atp_store_changes_cursor(st);
            CHECK(fol[c][net].cursor != 0, "cursor 0");
        }
}

static void feed_follow(uint32_t c, int net)
{
    struct follower *f = &fol[c][net];
    cur_what = net ? "changes (network)" : "changes";
    bool more = true;
    while (more) {
        struct atp_change ch[8];
        uint32_t n = 0, max = 1 + rn(8);
        uint64_t next = 0;
        int rc = atp_store_changes(st, c, f->cursor, net ? ATP_CHANGES_NETWORK : 0, max, ch, &n,
                                   &next, &more);
        CHECK_RC(rc, 0);
        CHECK(n <= max, "%u changes, max %u", n, max);
        for (uint32_t i = 0; i < n; i++) {
            int k = find_idx(sku_names, NSKU, ch[i].sku);
            CHECK(k >= 0, "change of an unknown sku");
            if (net) {
                CHECK(ch[i].loc.len == 0, "network change with a location");
                CHECK(ch[i].atp == model_network(k, c), "network %s ch %u: feed %lld, model %lld",
                      sku_names[k], c, (long long)ch[i].atp, (long long)model_network(k, c));
                f->net[k] = ch[i].atp;
            } else {
                int l = find_idx(loc_names, NLOC, ch[i].loc);
                CHECK(l >= 0 && md.items[k][l].exists, "change of an unknown item");
                CHECK(allowed(c, l), "change at a location ch %u may not sell from", c);
                CHECK(ch[i].atp == atp(k, l, c), "%s@%s ch %u: feed %lld, model %lld", sku_names[k],
                      loc_names[l], c, (long long)ch[i].atp, (long long)atp(k, l, c));
                f->item[k][l] = ch[i].atp;
            }
        }
        f->cursor = next;
    }
    for (int k = 0; k < NSKU; k++) {
        if (net) {
            CHECK(f->net[k] == model_network(k, c),
                  "network %s ch %u: the feed left %lld, model %lld", sku_names[k], c,
                  (long long)f->net[k], (long long)model_network(k, c));
            continue;
        }
        for (int l = 0; l < NLOC; l++)
            CHECK(f->item[k][l] == (md.items[k][l].exists ? atp(k, l, c) : 0),
                  "%s@%s ch %u: the feed left %lld, model %lld", sku_names[k], loc_names[l], c,
                  (long long)f->item[k][l], (long long)atp(k, l, c));
    }
}

static void op_feed(void)
{
    feed_follow(rn(NCHAN), (int)rn(2));
}

/* --- operations --------------------------------------------------------------------- */

static const char *bad_sku(void)
{
    static const char *const b[] = {
        "", "has space", "x@y",
        "0123456789012345678901234567890123456789012345678901234567890123"
        "4"};
    return b[rn(4)];
}

static const char *bad_loc(void)
{
    static const char *const b[] = {"", "L 0", "dc#", "012345678901234567890123456789012"};
    return b[rn(4)];
}

static int64_t small_qty(void)
{
    return 1 + rn(chance(20) ? 40 : 8);
}

static void op_adjust(void)
{
    cur_what = "adjust";
    int k = rn(NSKU), l = rn(NLOC);
    int64_t d = chance(75) ? small_qty() * 5 : -small_qty();
    int fault = chance(4) ? 1 + rn(4) : 0;
    if (chance(1))
        d = (chance(50) ? 1 : -1) * (M - rn(50)); /* near the range limit */
    if (fault == 1)
        d = 0;
    if (fault == 2)
        d = chance(50) ? M + 1 : INT64_MIN;
    const char *sk = fault == 3 ? bad_sku() : sku_names[k];
    const char *lc = fault == 4 ? bad_loc() : loc_names[l];
    int64_t oh = 0x5a5a5a5a;
    int rc = atp_store_adjust(st, S(sk), S(lc), d, &oh);
    int want;
    if (fault == 1)
        want = ATP_EQTY;
    else if (fault == 2)
        want = ATP_ERANGE;
    else if (fault == 3)
        want = ATP_EINVAL_SKU;
    else if (fault == 4)
        want = ATP_EINVAL_LOC;
    else {
        item_create(k, l);
        struct mitem *it = &md.items[k][l];
        want = qty_ok(it->on_hand + d) && qty_ok(mfree(it) + d) ? 0 : ATP_ERANGE;
        if (want == 0)
            it->on_hand += d;
    }
    CHECK_RC(rc, want);
    if (rc == 0)
        CHECK(oh == md.items[k][l].on_hand, "adjust returned on_hand %lld, model %lld",
              (long long)oh, (long long)md.items[k][l].on_hand);
    else
        CHECK(oh == 0x5a5a5a5a, "ret_on_hand written on error");
}

static void op_set(void)
{
    cur_what = "set";
    int k = rn(NSKU), l = rn(NLOC);
    struct mitem *it = &md.items[k][l];
    uint64_t last = it->exists ? it->set_seq : 0;
    uint64_t seq;
    uint32_t r = rn(10);
    if (r < 2)
        seq = 0;
    else if (r < 4 && last > 0)
        seq = last - rn((uint32_t)(last < 3 ? last : 3)); /* stale or equal */
    else
        seq = last + 1 + rn(3);
    int64_t v = rn(chance(30) ? 300 : 80);
    if (it->exists && chance(80)) {
        /* a count near what is promised keeps both grants and refusals frequent */
        v = it->allocated + it->reserved + (int64_t)rn(chance(30) ? 100 : 30) - 10;
        if (v < 0 || v > M)
            v = rn(50);
    }
    int fault = chance(4) ? 1 + rn(3) : 0;
    if (chance(1))
        v = M - rn(3);
    if (fault == 1)
        v = chance(50) ? -1 - (int64_t)rn(5) : M + 1;
    const char *sk = fault == 2 ? bad_sku() : sku_names[k];
    const char *lc = fault == 3 ? bad_loc() : loc_names[l];
    int rc = atp_store_set(st, S(sk), S(lc), v, seq);
    const char *sku = sk, *loc = lc;
    int64_t oh0 = it->on_hand, al0 = it->allocated, rs0 = it->reserved;
    int want;
    if (fault == 1)
        want = v < 0 ? ATP_EQTY : ATP_ERANGE;
    else if (fault == 2)
        want = ATP_EINVAL_SKU;
    else if (fault == 3)
        want = ATP_EINVAL_LOC;
    else {
        item_create(k, l);
        if (seq != 0 && seq <= it->set_seq)
            want = ATP_ESTALE;
        else if (!qty_ok(mfree(it) + (v - it->on_hand)))
            want = ATP_ERANGE;
        else {
            want = 0;
            it->on_hand = v;
            if (seq)
                it->set_seq = seq;
        }
    }
    CHECK(rc == want,
          "set %s@%s = %lld seq %llu: rc %s, model %s (model before: oh %lld al %lld rs %lld)", sku,
          loc, (long long)v, (unsigned long long)seq, atp_error_name(rc), atp_error_name(want),
          (long long)oh0, (long long)al0, (long long)rs0);
}

static void op_allocate(int dealloc)
{
    cur_what = dealloc ? "deallocate" : "allocate";
    int k = rn(NSKU), l = rn(NLOC);
    struct mitem *it = &md.items[k][l];
    int64_t q = small_qty();
    if (dealloc) {
        if (!it->exists)
            return;
        int pick = rn(10);
        if (it->ext_alloc > 0 && pick < 7)
            q = 1 + (int64_t)(rnd() % (uint64_t)it->ext_alloc);
        else if (it->allocated > it->ext_alloc && pick < 9) /* reaches into commits': refused */
            q = it->ext_alloc + 1 + (int64_t)(rnd() % (uint64_t)(it->allocated - it->ext_alloc));
        else
            q = it->allocated + 1 + rn(3); /* more than is allocated: refused */
    }
    int fault = chance(4) ? 1 + rn(3) : 0;
    if (fault == 1)
        q = -(int64_t)rn(3);
    const char *sk = fault == 2 ? bad_sku() : sku_names[k];
    const char *lc = fault == 3 ? bad_loc() : loc_names[l];
    int rc = dealloc ? atp_store_deallocate(st, S(sk), S(lc), q)
                     : atp_store_allocate(st, S(sk), S(lc), q);
    int want;
    if (fault == 1)
        want = ATP_EQTY;
    else if (fault == 2)
        want = ATP_EINVAL_SKU;
    else if (fault == 3)
        want = ATP_EINVAL_LOC;
    else {
        item_create(k, l);
        int64_t s = dealloc ? -q : q;
        /* out of range, or deallocating more than allocate events allocated
         * (what commits allocated only their shipments take) */
        if (!qty_ok(it->allocated + s) || !qty_ok(mfree(it) - s) || it->ext_alloc + s < 0)
            want = ATP_ERANGE;
        else {
            want = 0;
            it->allocated += s;
            it->ext_alloc += s;
        }
    }
    CHECK_RC(rc, want);
}

static void op_safety(void)
{
    cur_what = "safety";
    int k = rn(NSKU), l = rn(NLOC);
    uint32_t c = rn(NCHAN);
    int item_level = chance(50);
    int64_t units = chance(25) ? -1 - (int64_t)rn(3) : rn(6);
    int fault = chance(4) ? 1 + rn(3) : 0;
    const char *sk = fault == 1 ? bad_sku() : sku_names[k];
    const char *lc = item_level ? (fault == 2 ? bad_loc() : loc_names[l]) : "";
    if (item_level && !lc[0])
        lc = "L 0"; /* an empty location means "sku level", which is valid */
    if (fault == 2 && !item_level)
        fault = 0;
    if (fault == 3)
        c = NCHAN + rn(5);
    if (fault == 1 && !sk[0] && !item_level)
        sk = "a b";
    int rc = atp_store_set_safety(st, S(sk), S(lc), c, units);
    int want;
    if (fault == 3)
        want = ATP_ENOCHANNEL;
    else if (fault == 1)
        want = ATP_EINVAL_SKU;
    else if (fault == 2)
        want = ATP_EINVAL_LOC;
    else if (item_level) {
        item_create(k, l); /* like every event naming an item */
        md.items[k][l].ovr[c] = units < 0 ? -1 : units;
        want = 0;
    } else if (!sku_exists(k)) {
        want = ATP_ENOTFOUND;
    } else {
        md.sku_ovr[k][c] = units < 0 ? -1 : units;
        want = 0;
    }
    CHECK_RC(rc, want);
}

/* The model's choice for one line. *ret_loc: chosen location, or for "any" on a
 * channel without a list a bit mask of the tied locations. */
static int line_eval(uint32_t c, int k, int l_or_any, int64_t qty, int *ret_loc, unsigned *ret_ties,
                     int64_t *ret_avail)
{
    *ret_ties = 0;
    if (l_or_any >= 0) {
        int64_t a = md.items[k][l_or_any].exists ? atp(k, l_or_any, c) : 0;
        *ret_avail = a;
        *ret_loc = l_or_any;
        return md.items[k][l_or_any].exists && qty <= a;
    }
    if (chan_cfg[c].locations) {
        int64_t best = 0;
        for (uint32_t i = 0; i < chan_cfg[c].nlocations; i++) {
            int l = b2b_idx[i];
            if (!md.items[k][l].exists)
                continue;
            int64_t a = atp(k, l, c);
            if (qty <= a) {
                *ret_avail = a;
                *ret_loc = l;
                return 1;
            }
            if (a > best)
                best = a;
        }
        *ret_avail = best;
        return 0;
    }
    int64_t best = -1;
    for (int l = 0; l < NLOC; l++)
        if (md.items[k][l].exists && atp(k, l, c) > best)
            best = atp(k, l, c);
    for (int l = 0; l < NLOC; l++)
        if (md.items[k][l].exists && atp(k, l, c) == best)
            *ret_ties |= 1u << l;
    *ret_avail = best < 0 ? 0 : best;
    *ret_loc = -1;
    return best >= 0 && qty <= best;
}

struct req_copy {
    char key[ATP_KEY_MAX + 8];
    uint32_t key_len;
    uint32_t channel;
    uint64_t ttl;
    uint32_t nlines;
    struct atp_line_req lines[ATP_MAX_LINES + 1];
    int lk[ATP_MAX_LINES + 1], ll[ATP_MAX_LINES + 1]; /* model indexes, ll -1 = any */
};

static uint64_t rand_ttl(void)
{
    uint32_t r = rn(100);
    if (r < 65)
        return 1 + rn(50);
    if (r < 95)
        return 50 + rn(5000);
    return 5000 + rn(200000);
}

static void request_from_res(const struct mres *m, struct req_copy *q)
{
    memcpy(q->key, m->key, m->key_len);
    q->key_len = m->key_len;
    q->channel = m->channel;
    q->ttl = m->ttl;
    q->nlines = m->nlines;
    for (uint32_t i = 0; i < m->nlines; i++) {
        q->lk[i] = m->lines[i].sku;
        q->ll[i] = m->lines[i].any ? -1 : m->lines[i].loc;
        q->lines[i].sku = S(sku_names[q->lk[i]]);
        q->lines[i].loc = q->ll[i] < 0 ? (struct atp_slice){"", 0} : S(loc_names[q->ll[i]]);
        q->lines[i].qty = m->lines[i].qty;
    }
}

static long key_counter;

static void op_reserve(void)
{
    cur_what = "reserve";
    struct req_copy q;
    memset(&q, 0, sizeof(q));
    struct mres *prior = NULL;
    int mode = 0; /* 0 fresh, 1 replay, 2 conflict */
    if (md.nres && chance(15)) {
        prior = &md.res[rn(md.nres)];
        request_from_res(prior, &q);
        mode = 1;
        if (chance(40)) {
            mode = 2;
            switch (rn(4)) {
            case 0:
                q.lines[0].qty += 1;
                break;
            case 1:
                q.channel = (q.channel + 1) % NCHAN;
                break;
            case 2:
                q.ttl += 1;
                break;
            default:
                q.lk[0] = (q.lk[0] + 1) % NSKU;
                q.lines[0].sku = S(sku_names[q.lk[0]]);
                break;
            }
        }
    } else {
        q.key_len = (uint32_t)snprintf(q.key, sizeof(q.key), "ord-%ld", key_counter++);
        q.channel = rn(NCHAN);
        q.ttl = rand_ttl();
        q.nlines = chance(60) ? 1 : 2 + rn(chance(10) ? 8 : 3);
        /* the sku of an "any" line appears on no other line of the request: the
           model need not guess which of two tied locations the store took */
        unsigned any_skus = 0;
        for (uint32_t i = 0; i < q.nlines; i++) {
            int k = -1;
            for (int tries = 0; tries < 8 && k < 0; tries++) {
                int c = (int)rn(NSKU);
                if (!(any_skus & (1u << c)))
                    k = c;
            }
            if (k < 0) {
                q.nlines = i;
                break;
            }
            int used = 0;
            for (uint32_t j = 0; j < i; j++)
                used |= q.lk[j] == k;
            int any = !used && chance(30);
            if (any)
                any_skus |= 1u << k;
            q.lk[i] = k;
            q.ll[i] = any ? -1 : (int)rn(NLOC);
            q.lines[i].sku = S(sku_names[k]);
            q.lines[i].loc = any ? (struct atp_slice){"", 0} : S(loc_names[q.ll[i]]);
            q.lines[i].qty = small_qty();
        }
        if (q.nlines == 0)
            return;
    }
    /* occasional single fault */
    int want_fault = 0;
    if (chance(5)) {
        switch (rn(9)) {
        case 0:
            q.key_len = 0;
            want_fault = ATP_EKEY;
            break;
        case 1:
            memset(q.key, 'k', ATP_KEY_MAX + 1);
            q.key_len = ATP_KEY_MAX + 1;
            want_fault = ATP_EKEY;
            break;
        case 2:
            q.channel = NCHAN + rn(3);
            want_fault = ATP_ENOCHANNEL;
            break;
        case 3:
            q.ttl = chance(50) ? 0 : 24ull * 3600 * 1000 + 1;
            want_fault = ATP_ETTL;
            break;
        case 4:
            q.nlines = chance(50) ? 0 : ATP_MAX_LINES + 1;
            want_fault = q.nlines ? ATP_ETOOMANY : ATP_EINVAL;
            break;
        case 5:
            q.lines[0].sku = S(bad_sku());
            want_fault = ATP_EINVAL_SKU;
            break;
        case 6:
            q.lines[0].loc = S(bad_loc());
            if (q.lines[0].loc.len == 0)
                q.lines[0].loc = S("L 0");
            want_fault = ATP_EINVAL_LOC;
            break;
        case 7:
            q.lines[0].qty = -(int64_t)rn(3);
            want_fault = ATP_EQTY;
            break;
        default:
            q.lines[0].qty = M + 1 + rn(10);
            want_fault = ATP_ERANGE;
            break;
        }
    }
    uint64_t now = md.now / 1000 * 1000; /* deadlines on whole milliseconds */
    struct atp_reserve_req req = {{q.key, q.key_len}, q.channel, q.ttl, q.lines, q.nlines};
    struct atp_reservation r;
    bool rp;
    struct atp_shortfall sh[ATP_MAX_LINES + 1];
    memset(&r, 0xa5, sizeof(r));
    memset(&rp, 0xa5, sizeof(rp));
    memset(sh, 0xa5, sizeof(sh));
    int rc = atp_store_reserve(st, &req, now, &r, &rp, sh);
    if (want_fault) {
        CHECK_RC(rc, want_fault);
        return;
    }
    if (mode) {
        struct mres *m = prior;
        /* same content: channel, ttl, and per line sku, qty, location or "any" */
        int same = q.channel == m->channel && q.ttl == m->ttl && q.nlines == m->nlines;
        for (uint32_t i = 0; same && i < q.nlines; i++)
            same = q.lk[i] == m->lines[i].sku && q.lines[i].qty == m->lines[i].qty &&
                   (q.ll[i] < 0) == m->lines[i].any && (q.ll[i] < 0 || q.ll[i] == m->lines[i].loc);
        if (!same) {
            CHECK_RC(rc, ATP_ECONFLICT);
            return;
        }
        CHECK_RC(rc, 0);
        CHECK(rp == true, "replay not flagged");
        md.replayed++;
        cmp_res(m, &r);
        return;
    }
    /* fresh: take lines in order; after a failure report without taking */
    int fail = 0;
    int locs[ATP_MAX_LINES];
    unsigned ties[ATP_MAX_LINES];
    int64_t avail[ATP_MAX_LINES];
    for (uint32_t i = 0; i < q.nlines; i++) {
        int ok =
            line_eval(q.channel, q.lk[i], q.ll[i], q.lines[i].qty, &locs[i], &ties[i], &avail[i]);
        if (!fail && ok && locs[i] >= 0)
            md.items[q.lk[i]][locs[i]].reserved += q.lines[i].qty; /* taken */
        if (!ok && !fail)
            fail = 1 + (int)i;
    }
    /* undo the explicit takes: the model applies the outcome below */
    for (uint32_t i = 0; i < q.nlines && (fail == 0 || i < (uint32_t)fail - 1); i++)
        if (locs[i] >= 0)
            md.items[q.lk[i]][locs[i]].reserved -= q.lines[i].qty;
    if (fail) {
        CHECK_RC(rc, ATP_EINSUFFICIENT);
        md.rejected++;
        for (uint32_t i = 0; i < q.nlines; i++)
            CHECK(sh[i].requested == q.lines[i].qty && sh[i].available == avail[i],
                  "shortfall line %u: store {%lld, %lld} model {%lld, %lld} (ch %u %s@%s)", i,
                  (long long)sh[i].requested, (long long)sh[i].available, (long long)q.lines[i].qty,
                  (long long)avail[i], q.channel, sku_names[q.lk[i]],
                  q.ll[i] < 0 ? "any" : loc_names[q.ll[i]]);
        CHECK(r.id == UINT64_C(0xa5a5a5a5a5a5a5a5), "ret written on EINSUFFICIENT");
        return;
    }
    CHECK_RC(rc, 0);
    CHECK(rp == false, "fresh reservation flagged as replay");
    CHECK(md.nres < MAXRES, "model full");
    CHECK(r.id != 0, "id 0");
    CHECK(res_by_id(r.id) == NULL, "id %llu reused", (unsigned long long)r.id);
    struct mres *m = &md.res[md.nres++];
    memset(m, 0, sizeof(*m));
    m->id = r.id;
    id_insert(r.id, md.nres - 1);
    memcpy(m->key, q.key, q.key_len);
    m->key_len = q.key_len;
    m->held_pos = -1;
    set_state(m, ATP_RES_HELD);
    m->channel = q.channel;
    m->created = now;
    m->ttl = q.ttl;
    m->expires = now + q.ttl * 1000;
    m->nlines = q.nlines;
    for (uint32_t i = 0; i < q.nlines; i++) {
        int l = locs[i];
        if (l < 0) {
            /* no list: the store's pick must be one of the locations tied for most */
            l = find_idx(loc_names, NLOC, r.lines[i].loc);
            CHECK(l >= 0 && (ties[i] >> l) & 1,
                  "line %u: 'any' chose %.*s, not one of the most available (mask %x)", i,
                  (int)r.lines[i].loc.len, r.lines[i].loc.p, ties[i]);
        }
        m->lines[i] = (struct mline){q.lk[i], l, q.ll[i] < 0, q.lines[i].qty, false};
        md.items[q.lk[i]][l].reserved += q.lines[i].qty;
    }
    md.granted++;
    cmp_res(m, &r);
    /* the no-oversell invariant, straight from SPEC.md */
    for (uint32_t i = 0; i < q.nlines; i++) {
        const struct mitem *it = &md.items[m->lines[i].sku][m->lines[i].loc];
        CHECK(mfree(it) - safety(m->lines[i].sku, m->lines[i].loc, q.channel) >= 0,
              "grant left ATP below zero");
    }
}

static struct mres *pick_res(void)
{
    if (!md.nres)
        return NULL;
    /* favour recent ones: they are the ones still held */
    uint32_t span = md.nres < 64 ? md.nres : 64;
    if (chance(80))
        return &md.res[md.nres - 1 - rn(span)];
    return &md.res[rn(md.nres)];
}

/* A commit leaves free stock as it is; it is granted only where every
 * line's item still has free >= 0 (safety stock is not looked at again). */
static bool commit_ok(const struct mres *m)
{
    for (uint32_t i = 0; i < m->nlines; i++)
        if (mfree(&md.items[m->lines[i].sku][m->lines[i].loc]) < 0)
            return false;
    return true;
}

/* commit, release, extend share the held/expired logic */
static void op_transition(int kind)
{
    static const char *const names[] = {"commit", "release", "extend"};
    cur_what = names[kind];
    struct mres *m = pick_res();
    uint64_t id = m ? m->id : 12345;
    if (!m || chance(3))
        id = chance(50) ? 0 : id ^ (UINT64_C(1) << 40); /* unknown */
    struct mres *target = m && id == m->id ? m : NULL;
    uint64_t now = md.now;
    uint64_t ttl = rand_ttl();
    if (kind == 2)
        now = now / 1000 * 1000;
    int ttl_fault = kind == 2 && chance(3);
    if (ttl_fault)
        ttl = chance(50) ? 0 : 24ull * 3600 * 1000 + 1;
    struct atp_reservation r;
    memset(&r, 0xa5, sizeof(r));
    int rc = kind == 0   ? atp_store_commit(st, id, now, &r)
             : kind == 1 ? atp_store_release(st, id, now, &r)
                         : atp_store_extend(st, id, ttl, now, &r);
    int want;
    if (ttl_fault)
        want = ATP_ETTL;
    else if (!target)
        want = ATP_ENOTFOUND;
    else if (target->state == ATP_RES_EXPIRED)
        want = ATP_EEXPIRED;
    else if (kind == 0 &&
             (target->state == ATP_RES_COMMITTED || target->state == ATP_RES_FULFILLED))
        want = 0; /* retried commit */
    else if (target->state != ATP_RES_HELD)
        want = ATP_ESTATE;
    else if (target->expires <= now) {
        expire_one(target, now, 0); /* expired on the spot */
        want = ATP_EEXPIRED;
    } else if (kind == 0 && !commit_ok(target)) {
        want = ATP_EINSUFFICIENT; /* the units are gone; it stays held */
    } else {
        want = 0;
        if (kind == 0) {
            for (uint32_t i = 0; i < target->nlines; i++) {
                struct mitem *it = &md.items[target->lines[i].sku][target->lines[i].loc];
                it->reserved -= target->lines[i].qty;
                it->allocated += target->lines[i].qty;
            }
            set_state(target, ATP_RES_COMMITTED);
            md.commits++;
        } else if (kind == 1) {
            give_back(target);
            set_state(target, ATP_RES_RELEASED);
            md.releases++;
        } else {
            target->expires = now + ttl * 1000;
        }
    }
    CHECK_RC(rc, want);
    if (rc == 0)
        cmp_res(target, &r);
    else
        CHECK(r.id == UINT64_C(0xa5a5a5a5a5a5a5a5), "ret written on error");
}

static void op_fulfill(void)
{
    cur_what = "fulfill";
    struct mres *m = NULL;
    /* prefer committed ones */
    for (int tries = 0; tries < 8; tries++) {
        m = pick_res();
        if (m && m->state == ATP_RES_COMMITTED)
            break;
    }
    if (!m)
        return;
    uint32_t line = rn(m->nlines + (chance(5) ? 2 : 0));
    const char *key = m->key;
    uint32_t klen = m->key_len;
    struct mres *t = m;
    if (chance(2)) {
        key = "no-such-key";
        klen = 11;
        t = NULL;
    }
    struct atp_reservation r;
    int rc = atp_store_fulfill(st, (struct atp_slice){key, klen}, line, &r);
    int want;
    if (!t)
        want = ATP_ENOTFOUND;
    else if (t->state != ATP_RES_COMMITTED)
        want = ATP_ESTATE;
    else if (line >= t->nlines)
        want = ATP_EINVAL;
    else if (t->lines[line].fulfilled)
        want = ATP_ESTATE;
    else {
        want = 0;
        struct mline *ln = &t->lines[line];
        struct mitem *it = &md.items[ln->sku][ln->loc];
        it->allocated -= ln->qty;
        it->on_hand -= ln->qty;
        CHECK(it->allocated >= it->ext_alloc, "fulfill: allocated %lld below events' %lld",
              (long long)it->allocated, (long long)it->ext_alloc);
        ln->fulfilled = true;
        md.fulfillments++;
        int all = 1;
        for (uint32_t i = 0; i < t->nlines; i++)
            all &= t->lines[i].fulfilled;
        if (all) {
            set_state(t, ATP_RES_FULFILLED);
        }
    }
    CHECK_RC(rc, want);
    if (rc == 0)
        cmp_res(t, &r);
}

static void op_expire(void)
{
    cur_what = "expire";
    int n = atp_store_expire(st, md.now);
    int want = 0;
    for (uint32_t i = 0; i < md.nheld;) {
        struct mres *m = &md.res[md.held[i]];
        if (m->expires <= md.now) {
            expire_one(m, md.now, 1); /* swaps the last held one into i */
            want++;
        } else {
            i++;
        }
    }
    CHECK(n == want, "expire(%llu) returned %d, model %d", (unsigned long long)md.now, n, want);
}

static void op_get(void)
{
    cur_what = "get";
    int k = rn(NSKU), l = rn(NLOC);
    uint32_t c = rn(NCHAN);
    if (chance(3)) {
        struct atp_breakdown b;
        int f = rn(3);
        int rc = atp_store_get(st, S(f == 0 ? bad_sku() : sku_names[k]),
                               S(f == 1 ? bad_loc() : loc_names[l]), f == 2 ? NCHAN : c, &b);
        CHECK_RC(rc, f == 0 ? ATP_EINVAL_SKU : f == 1 ? ATP_EINVAL_LOC : ATP_ENOCHANNEL);
        return;
    }
    check_get(k, l, c);
}

/* A batch of lookups (some invalid or unknown) against the model. */
static void op_get_many(void)
{
    cur_what = "get_many";
    enum { MAXB = 40 };
    struct atp_get_req reqs[MAXB];
    struct atp_breakdown out[MAXB];
    int rcs[MAXB], want[MAXB], kk[MAXB], ll[MAXB];
    uint32_t n = 1 + rn(MAXB);
    for (uint32_t i = 0; i < n; i++) {
        kk[i] = (int)rn(NSKU);
        ll[i] = (int)rn(NLOC);
        uint32_t c = rn(NCHAN);
        const char *sk = sku_names[kk[i]], *lc = loc_names[ll[i]];
        want[i] = md.items[kk[i]][ll[i]].exists ? 0 : ATP_ENOTFOUND;
        if (chance(5)) {
            switch (rn(3)) {
            case 0:
                sk = bad_sku();
                want[i] = ATP_EINVAL_SKU;
                break;
            case 1:
                lc = bad_loc();
                want[i] = ATP_EINVAL_LOC;
                break;
            default:
                c = NCHAN + rn(4);
                want[i] = ATP_ENOCHANNEL;
                break;
            }
        }
        reqs[i] = (struct atp_get_req){S(sk), S(lc), c};
    }
    atp_store_get_many(st, reqs, n, out, rcs);
    for (uint32_t i = 0; i < n; i++) {
        CHECK(rcs[i] == want[i], "get_many key %u: %s, model %s", i, atp_error_name(rcs[i]),
              atp_error_name(want[i]));
        if (want[i] == 0) {
            struct atp_breakdown w = breakdown(kk[i], ll[i], reqs[i].channel);
            cmp_bd(&out[i], &w, "get_many");
        }
    }
}

static void op_network(void)
{
    cur_what = "get_network";
    check_network(rn(NSKU), rn(NCHAN));
}

static void op_lookup(void)
{
    cur_what = "lookup";
    struct mres *m = pick_res();
    if (!m)
        return;
    struct atp_reservation r;
    if (chance(50)) {
        CHECK_RC(atp_store_reservation_get(st, m->id, &r), 0);
    } else {
        CHECK_RC(atp_store_reservation_find(st, (struct atp_slice){m->key, m->key_len}, &r), 0);
    }
    cmp_res(m, &r);
    CHECK_RC(atp_store_reservation_find(st, S("never-used"), &r), ATP_ENOTFOUND);
}

/* --- driver ------------------------------------------------------------------------- */

static long ops_per_seed(void)
{
    const char *e = getenv("ATP_MODEL_OPS");
    long n = e ? atol(e) : 150000;
    return n > 0 ? n : 150000;
}

static void run_seed(uint64_t seed)
{
    cur_seed = seed;
    rng_state = seed;
    memset(&md, 0, sizeof(md));
    md.res = calloc(MAXRES, sizeof(*md.res));
    md.held = calloc(MAXRES, sizeof(*md.held));
    md.id_slots = calloc((size_t)ID_SLOTS * 2, sizeof(*md.id_slots));
    assert_non_null(md.res);
    assert_non_null(md.held);
    assert_non_null(md.id_slots);
    for (int k = 0; k < NSKU; k++)
        for (int c = 0; c < NCHAN; c++)
            md.sku_ovr[k][c] = -1;
    key_counter = 0;
    md.now = UINT64_C(1700000000000000) + rn(1000000);

    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 256;
    cfg.max_reservations = MAXRES;
    cfg.nshards = 4;
    cfg.idempotency_window_ms = UINT64_C(1) << 40; /* nothing is reclaimed in a run */
    cfg.channels = chan_cfg;
    cfg.nchannels = NCHAN;
    st = NULL;
    assert_int_equal(atp_store_new(&cfg, &st), 0);
    atp_store_expire(st, md.now);
    feed_start();

    long nops = ops_per_seed();
    for (cur_op = 0; cur_op < nops && md.nres < MAXRES - 64; cur_op++) {
        md.now += rn(400);
        if (chance(1) && rn(10) == 0)
            md.now += 1000000ull * (10 + rn(200)); /* a jump over seconds to minutes */
        uint32_t r = rn(100);
        if (r < 10)
            op_adjust();
        else if (r < 16)
            op_set();
        else if (r < 19)
            op_allocate(0);
        else if (r < 21)
            op_allocate(1);
        else if (r < 24)
            op_safety();
        else if (r < 50)
            op_reserve();
        else if (r < 58)
            op_transition(0);
        else if (r < 66)
            op_transition(1);
        else if (r < 70)
            op_transition(2);
        else if (r < 74)
            op_fulfill();
        else if (r < 82)
            op_expire();
        else if (r < 89)
            op_get();
        else if (r < 91)
            op_get_many();
        else if (r < 97)
            op_network();
        else
            op_lookup();
        if (cur_op % 97 == 0) {
            cur_what = "stats";
            check_stats();
        }
        if (cur_op % 2003 == 0)
            check_all();
        if (cur_op % 23 == 0)
            op_feed();
    }
    check_all();
    for (uint32_t c = 0; c < NCHAN; c++) /* every follower, once more, at the end */
        for (int net = 0; net < 2; net++)
            feed_follow(c, net);
    print_message("seed %llu: %ld ops; reserves granted %llu, rejected %llu, replayed %llu; "
                  "commits %llu, releases %llu, expirations %llu, fulfillments %llu\n",
                  (unsigned long long)seed, cur_op, (unsigned long long)md.granted,
                  (unsigned long long)md.rejected, (unsigned long long)md.replayed,
                  (unsigned long long)md.commits, (unsigned long long)md.releases,
                  (unsigned long long)md.expirations, (unsigned long long)md.fulfillments);
    atp_store_free(st);
    st = NULL;
    free(md.res);
    free(md.held);
    free(md.id_slots);
    md.res = NULL;
}

static uint64_t seeds[16];
static int nseeds;

static void test_model_seed(void **state)
{
    run_seed(*(uint64_t *)*state);
}

int main(void)
{
    const char *e = getenv("ATP_MODEL_SEEDS");
    if (e && *e) {
        char *dup = strdup(e), *save = NULL;
        for (char *t = strtok_r(dup, ",", &save); t && nseeds < 16; t = strtok_r(NULL, ",", &save))
            seeds[nseeds++] = strtoull(t, NULL, 0);
        free(dup);
    } else {
        seeds[nseeds++] = 1;
        seeds[nseeds++] = 2;
        seeds[nseeds++] = 0xa7d5eed;
        /* and one fresh seed per run, printed so a failure can be replayed */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seeds[nseeds++] = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
    }
    struct CMUnitTest tests[16];
    static char names[16][48];
    for (int i = 0; i < nseeds; i++) {
        snprintf(names[i], sizeof(names[i]), "model seed %llu", (unsigned long long)seeds[i]);
        tests[i] = (struct CMUnitTest){names[i], test_model_seed, NULL, NULL, &seeds[i]};
    }
    return _cmocka_run_group_tests("model", tests, (size_t)nseeds, NULL, NULL);
}
