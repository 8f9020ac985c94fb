/*
 * store.c - items, locations, channels, safety stock, reads and event writes.
 *
 * Knows the domain model of SPEC.md and nothing about sockets, wire formats,
 * Kafka or files. Reservations live in resv.c and reach items through the
 * helpers declared in store_int.h.
 *
 * Concurrency in one paragraph (docs/ARCHITECTURE.md has the long form):
 * readers and reservations never lock. They read an item's availability word
 * (acquire), then on_hand and overrides (acquire), and a reservation commits
 * with one CAS of the word. Writers (events, admin, overrides, inserts)
 * serialize per shard on a mutex and order their stores so that every value a
 * lock-free reader can combine is either current or errs on the side of more
 * safety stock: a change that can only lower safety stock (less on_hand, a
 * lower override) first bumps the word's version and then stores; a change
 * that can raise it stores first and then bumps. A reservation whose CAS
 * lands after a bump fails and re-reads; one whose CAS lands before it is
 * linearized before the writer.
 */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* --- small helpers ------------------------------------------------------ */

struct atp_slice atp_slice_cstr(const char *s)
{
    return (struct atp_slice){s, s ? (uint32_t)strlen(s) : 0};
}

uint64_t atp_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Reserve address space; pages are touched (and cost memory) only when used. */
void *store_map(size_t bytes)
{
    if (bytes == 0)
        bytes = 4096;
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /*
     * Random probes over hundreds of MiB miss the TLB on every access with
     * 4 KiB pages; transparent huge pages roughly halve a lookup's cost.
     * Advice only: without THP everything still works.
     */
    if (bytes >= (2u << 20))
        madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

/*
 * Touch every page of a mapping now, so that later users take no page fault
 * (a first touch of a huge page zeroes 2 MiB and may compact memory: measured
 * at up to tens of ms on the development VM).
 */
void store_prefault(void *p, size_t bytes)
{
    volatile uint8_t *b = p;
    for (size_t off = 0; off < bytes; off += 4096)
        b[off] = 0;
}

void store_unmap(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes ? bytes : 4096);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint64_t p = 16;
    while (p < n)
        p <<= 1;
    return p > (UINT64_C(1) << 31) ? (uint32_t)(UINT64_C(1) << 31) : (uint32_t)p;
}

/* The sku/location charset of SPEC.md: [A-Za-z0-9._:/-], as a table. */
/* clang-format off */
static const uint8_t key_char_ok[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1,
    0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};
/* clang-format on */

static int valid_key(struct atp_slice k, uint32_t max)
{
    if (k.len == 0 || k.len > max || !k.p)
        return 0;
    for (uint32_t i = 0; i < k.len; i++)
        if (!key_char_ok[(uint8_t)k.p[i]])
            return 0;
    return 1;
}

int atp_validate_sku(struct atp_slice sku)
{
    return valid_key(sku, ATP_SKU_MAX) ? 0 : ATP_EINVAL_SKU;
}

int atp_validate_loc(struct atp_slice loc)
{
    return valid_key(loc, ATP_LOC_MAX) ? 0 : ATP_EINVAL_LOC;
}

static inline uint64_t mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static inline uint64_t item_hash(uint64_t sku_hash, uint16_t loc_id)
{
    return mix64(sku_hash ^ ((uint64_t)loc_id * UINT64_C(0x9e3779b97f4a7c15)));
}

/* Map 32 hash bits onto [0, n) without a division (multiply-shift). */
static inline uint32_t slot_start(uint64_t h, uint32_t n)
{
    return (uint32_t)(((uint64_t)(uint32_t)h * n) >> 32);
}

static inline uint32_t slot_next(uint32_t i, uint32_t n)
{
    return i + 1 == n ? 0 : i + 1;
}

static inline struct shard *shard_of(struct atp_store *s, uint64_t sku_hash)
{
    return &s->shards[s->shard_bits ? sku_hash >> (64 - s->shard_bits) : 0];
}

static inline uint64_t ld8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint32_t ld4(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/*
 * Equality of two keys of n >= 1 bytes, inline: a lookup compares one short
 * key, and a call into libc's memcmp cost about as much as the compare. Word
 * loads overlap at the tail instead of reading past either key.
 */
static inline int key_eq(const char *a, const char *b, uint32_t n)
{
    if (n >= 8) {
        uint64_t d = 0;
        for (uint32_t i = 0; i + 8 < n; i += 8)
            d |= ld8(a + i) ^ ld8(b + i);
        return (d | (ld8(a + n - 8) ^ ld8(b + n - 8))) == 0;
    }
    if (n >= 4)
        return ((ld4(a) ^ ld4(b)) | (ld4(a + n - 4) ^ ld4(b + n - 4))) == 0;
    return a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1];
}

/* --- locations ---------------------------------------------------------- */

/* Lock-free lookup: slots are published with release after the name. */
static int loc_find(const struct atp_store *s, struct atp_slice loc, uint16_t *ret_id)
{
    uint64_t h = XXH3_64bits(loc.p, loc.len);
    uint32_t tag = (uint32_t)(h >> 48);
    for (uint32_t i = (uint32_t)h & s->loc_mask;; i = (i + 1) & s->loc_mask) {
        /* A1: pairs with R1 in loc_intern. */
        uint32_t v = atomic_load_explicit(&s->loc_slots[i], memory_order_acquire);
        if (v == 0)
            return ATP_ENOTFOUND;
        if ((v >> 16) != tag)
            continue;
        uint16_t id = (uint16_t)((v & 0xffff) - 1);
        const struct location *l = &s->locs[id];
        if (l->len == loc.len && key_eq(l->name, loc.p, loc.len)) {
            *ret_id = id;
            return 0;
        }
    }
}

static int loc_intern(struct atp_store *s, struct atp_slice loc, uint16_t *ret_id)
{
    int rc = loc_find(s, loc, ret_id);
    if (rc == 0)
        return 0;
    if ((rc = atp_validate_loc(loc)) != 0)
        return rc;
    pthread_mutex_lock(&s->loc_lock);
    rc = loc_find(s, loc, ret_id);
    if (rc == 0)
        goto out;
    uint32_t n = atomic_load_explicit(&s->nlocs, memory_order_relaxed);
    if (n >= ATP_MAX_LOCATIONS) {
        rc = ATP_EFULL;
        goto out;
    }
    struct location *l = &s->locs[n];
    memcpy(l->name, loc.p, loc.len);
    l->len = (uint8_t)loc.len;
    uint64_t h = XXH3_64bits(loc.p, loc.len);
    uint32_t i = (uint32_t)h & s->loc_mask;
    while (atomic_load_explicit(&s->loc_slots[i], memory_order_relaxed) != 0)
        i = (i + 1) & s->loc_mask;
    atomic_store_explicit(&s->nlocs, n + 1, memory_order_relaxed);
    /* R1: publishes the name written above; pairs with A1 in loc_find. */
    atomic_store_explicit(&s->loc_slots[i], (uint32_t)((h >> 48) << 16) | (n + 1),
                          memory_order_release);
    *ret_id = (uint16_t)n;
    rc = 0;
out:
    pthread_mutex_unlock(&s->loc_lock);
    return rc;
}

struct atp_slice store_loc_name(const struct atp_store *s, uint16_t loc_id)
{
    const struct location *l = &s->locs[loc_id];
    return (struct atp_slice){l->name, l->len};
}

/* --- channels ------------------------------------------------------------ */

int atp_store_channel_find(const struct atp_store *s, struct atp_slice name, uint32_t *ret_id)
{
    for (uint32_t i = 0; i < s->nchannels; i++) {
        const struct channel *c = &s->channels[i];
        if (c->name_len == name.len && memcmp(c->name, name.p, name.len) == 0) {
            *ret_id = i;
            return 0;
        }
    }
    return ATP_ENOCHANNEL;
}

uint32_t atp_store_channel_count(const struct atp_store *s)
{
    return s->nchannels;
}

struct atp_slice atp_store_channel_name(const struct atp_store *s, uint32_t id)
{
    if (id >= s->nchannels)
        return (struct atp_slice){"", 0};
    return (struct atp_slice){s->channels[id].name, s->channels[id].name_len};
}

static inline int channel_allows(const struct atp_store *s, uint32_t channel, uint16_t loc_id)
{
    const uint8_t *bm = s->channels[channel].allowed;
    return !bm || (bm[loc_id >> 3] >> (loc_id & 7)) & 1;
}

int store_channel_allows(const struct atp_store *s, uint32_t channel, uint16_t loc_id)
{
    const uint8_t *bm = s->channels[channel].allowed;
    return !bm || (bm[loc_id >> 3] >> (loc_id & 7)) & 1;
}

/* --- safety overrides --------------------------------------------------- */

enum { OVR_SKU = 1, OVR_ITEM = 2 };

static inline uint64_t ovr_key(int kind, uint32_t channel, uint32_t id)
{
    return ((uint64_t)kind << 62) | ((uint64_t)channel << 32) | id;
}

/* Lock-free: -1 when there is no override. */
static int64_t ovr_get(const struct atp_store *s, uint64_t key)
{
    uint64_t h = mix64(key);
    for (uint32_t i = (uint32_t)h & s->ovr_mask, n = 0; n <= s->ovr_mask;
         i = (i + 1) & s->ovr_mask, n++) {
        /* A2: pairs with R2 in ovr_put. */
        uint64_t k = atomic_load_explicit(&s->ovr[i].key, memory_order_acquire);
        if (k == 0)
            return -1;
        if (k == key)
            return atomic_load_explicit(&s->ovr[i].units, memory_order_acquire);
    }
    return -1;
}

/* Caller holds the shard lock of the sku. */
static int ovr_put(struct atp_store *s, uint64_t key, int64_t units)
{
    uint64_t h = mix64(key);
    pthread_mutex_lock(&s->ovr_lock);
    int rc = 0;
    uint32_t i = (uint32_t)h & s->ovr_mask;
    for (;; i = (i + 1) & s->ovr_mask) {
        uint64_t k = atomic_load_explicit(&s->ovr[i].key, memory_order_relaxed);
        if (k == key) {
            atomic_store_explicit(&s->ovr[i].units, units, memory_order_release);
            goto out;
        }
        if (k == 0)
            break;
    }
    if (units < 0)
        goto out; /* removing what never existed */
    if (atomic_load_explicit(&s->novr, memory_order_relaxed) >= s->cfg.max_overrides) {
        rc = ATP_EFULL;
        goto out;
    }
    atomic_store_explicit(&s->ovr[i].units, units, memory_order_relaxed);
    /* R2: publishes units; pairs with A2 in ovr_get. */
    atomic_store_explicit(&s->ovr[i].key, key, memory_order_release);
    atomic_fetch_add_explicit(&s->novr, 1, memory_order_relaxed);
out:
    pthread_mutex_unlock(&s->ovr_lock);
    return rc;
}

/* --- item index ----------------------------------------------------------- */

int store_find_sku(struct atp_store *s, struct atp_slice sku, uint64_t h, uint32_t *ret_sku)
{
    struct shard *sh = shard_of(s, h);
    uint32_t tag = (uint32_t)h;
    for (uint32_t i = slot_start(h >> 20, sh->sku_n);; i = slot_next(i, sh->sku_n)) {
        /* A3: pairs with R3 in item_insert_locked. */
        uint64_t v = atomic_load_explicit(&sh->sku_slots[i], memory_order_acquire);
        if (v == 0)
            return ATP_ENOTFOUND;
        if ((uint32_t)(v >> 32) != tag)
            continue;
        uint32_t si = (uint32_t)v - 1;
        uint32_t head = atomic_load_explicit(&s->skus[si].head, memory_order_acquire);
        const struct item *it = item_at(s, head - 1);
        if (it->sku_len == sku.len && memcmp(it->sku, sku.p, sku.len) == 0) {
            *ret_sku = si;
            return 0;
        }
    }
}

/*
 * Prefetch the lines of item `it` that a lookup of a `sku_len`-byte key reads:
 * its header and its key bytes, which sit on the next line for most items
 * (a 64-byte header at any 8-byte offset). Issued together, their misses
 * overlap instead of the key's waiting for the header's compare.
 */
static inline void item_prefetch(const struct item *it, uint32_t sku_len)
{
    const char *p = (const char *)it;
    const char *last = it->sku + sku_len - 1;
    __builtin_prefetch(p);
    if (last - p >= 2 * CACHELINE)
        __builtin_prefetch(p + CACHELINE);
    __builtin_prefetch(last);
}

/* Is `it` the item (sku, loc)? */
static inline int item_is(const struct item *it, struct atp_slice sku, uint16_t loc)
{
    return it->loc_id == loc && it->sku_len == sku.len && key_eq(it->sku, sku.p, sku.len);
}

static int item_lookup(struct atp_store *s, struct atp_slice sku, uint64_t sh_hash, uint16_t loc,
                       uint32_t *ret_idx)
{
    struct shard *sh = shard_of(s, sh_hash);
    uint64_t h = item_hash(sh_hash, loc);
    uint32_t tag = (uint32_t)(h >> 32);
    for (uint32_t i = slot_start(h, sh->item_n);; i = slot_next(i, sh->item_n)) {
        /* A3': pairs with R3' in item_insert_locked. */
        uint64_t v = atomic_load_explicit(&sh->item_slots[i], memory_order_acquire);
        if (v == 0)
            return ATP_ENOTFOUND;
        if ((uint32_t)(v >> 32) != tag)
            continue;
        const struct item *it = item_at(s, (uint32_t)v - 1);
        item_prefetch(it, sku.len);
        if (item_is(it, sku, loc)) {
            *ret_idx = (uint32_t)v - 1;
            return 0;
        }
    }
}

int store_find_item(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                    uint32_t *ret_idx)
{
    /*
     * Only valid keys are ever stored, so a hit proves the key valid: the
     * character check runs only on a miss, to tell "invalid" from "absent".
     */
    uint16_t lid;
    if (sku.len && sku.len <= ATP_SKU_MAX && loc.len && loc.len <= ATP_LOC_MAX &&
        loc_find(s, loc, &lid) == 0 &&
        item_lookup(s, sku, XXH3_64bits(sku.p, sku.len), lid, ret_idx) == 0)
        return 0;
    int rc = atp_validate_sku(sku);
    if (rc)
        return rc;
    if ((rc = atp_validate_loc(loc)) != 0)
        return rc;
    return ATP_ENOTFOUND;
}

/* Insert (sku, loc) in shard `sh`, whose lock the caller holds. */
static int item_insert_locked(struct atp_store *s, struct shard *sh, struct atp_slice sku,
                              uint64_t h, uint16_t loc, uint32_t *ret_idx)
{
    uint32_t sku_idx;
    int have_sku = store_find_sku(s, sku, h, &sku_idx) == 0;
    /* Keep index load at or under 1/2 so probes stay short. */
    if (sh->nitems + 1 > sh->item_n / 10 * 7 || (!have_sku && sh->nskus + 1 > sh->sku_n / 10 * 7))
        return ATP_EFULL;
    /*
     * Capacity is global: creations of all shards take `create_lock` (after
     * their shard lock) so a refused create never uses up an index.
     */
    pthread_mutex_lock(&s->create_lock);
    uint32_t n = atomic_load_explicit(&s->nitems, memory_order_relaxed);
    uint32_t nsk = atomic_load_explicit(&s->nskus, memory_order_relaxed);
    size_t size = item_size(sku.len);
    if (n >= s->cfg.max_items || (!have_sku && nsk >= s->cfg.max_skus) ||
        atomic_load_explicit(&s->arena_used, memory_order_relaxed) + size > s->arena_bytes) {
        pthread_mutex_unlock(&s->create_lock);
        return ATP_EFULL;
    }
    size_t used = atomic_load_explicit(&s->arena_used, memory_order_relaxed);
    uint32_t idx = (uint32_t)(used / ITEM_UNIT);
    atomic_store_explicit(&s->arena_used, used + size, memory_order_relaxed);
    atomic_store_explicit(&s->nitems, n + 1, memory_order_relaxed);
    if (!have_sku) {
        sku_idx = nsk;
        atomic_store_explicit(&s->nskus, nsk + 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->create_lock);
    struct item *it = item_at(s, idx);
    memcpy(it->sku, sku.p, sku.len);
    it->sku_len = (uint8_t)sku.len;
    it->loc_id = loc;
    it->sku_idx = sku_idx;
    atomic_store_explicit(&it->word, word_make(0, 0), memory_order_relaxed);
    struct sku *sk = &s->skus[sku_idx];
    if (atomic_load_explicit(&sk->flags, memory_order_relaxed) & SKU_HAS_OVERRIDE)
        atomic_store_explicit(&it->flags, ITEM_SKU_OVERRIDE, memory_order_relaxed);
    if (have_sku) {
        atomic_store_explicit(&it->next, atomic_load_explicit(&sk->head, memory_order_relaxed),
                              memory_order_relaxed);
    }
    /* R4: publishes the item to sku-list walkers; pairs with A4 in the walks. */
    atomic_store_explicit(&sk->head, idx + 1, memory_order_release);

    uint64_t ih = item_hash(h, loc);
    uint32_t i = slot_start(ih, sh->item_n);
    while (atomic_load_explicit(&sh->item_slots[i], memory_order_relaxed) != 0)
        i = slot_next(i, sh->item_n);
    /* R3': publishes the item; pairs with A3' in item_lookup. */
    atomic_store_explicit(&sh->item_slots[i], ((ih >> 32) << 32) | (idx + 1), memory_order_release);
    sh->nitems++;
    if (!have_sku) {
        i = slot_start(h >> 20, sh->sku_n);
        while (atomic_load_explicit(&sh->sku_slots[i], memory_order_relaxed) != 0)
            i = slot_next(i, sh->sku_n);
        /* R3: publishes the sku (its head is already set); pairs with A3. */
        atomic_store_explicit(&sh->sku_slots[i], ((uint64_t)(uint32_t)h << 32) | (sku_idx + 1),
                              memory_order_release);
        sh->nskus++;
    }
    *ret_idx = idx;
    return 0;
}

/*
 * Find or create the item for a writer and take its shard lock. On success
 * the caller owns `*ret_shard`'s lock and must unlock it.
 */
static int writer_item(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                       struct shard **ret_shard, struct item **ret_item)
{
    int rc = atp_validate_sku(sku);
    if (rc)
        return rc;
    uint16_t lid;
    if ((rc = loc_intern(s, loc, &lid)) != 0)
        return rc;
    uint64_t h = XXH3_64bits(sku.p, sku.len);
    struct shard *sh = shard_of(s, h);
    uint32_t idx;
    pthread_mutex_lock(&sh->lock);
    rc = item_lookup(s, sku, h, lid, &idx);
    if (rc == ATP_ENOTFOUND)
        rc = item_insert_locked(s, sh, sku, h, lid, &idx);
    if (rc) {
        pthread_mutex_unlock(&sh->lock);
        return rc;
    }
    *ret_shard = sh;
    *ret_item = item_at(s, idx);
    return 0;
}

/* --- availability -------------------------------------------------------- */

static inline int64_t pct_of(int64_t on_hand, uint32_t pct)
{
    if (pct == 0 || on_hand <= 0)
        return 0;
    return (on_hand * (int64_t)pct + 99) / 100;
}

/* The override that applies to `it` for `channel` (flags `fl`), or -1. */
static __attribute__((noinline)) int64_t
item_override(const struct atp_store *s, const struct item *it, uint32_t channel, uint32_t fl)
{
    if (fl & ITEM_HAS_OVERRIDE) {
        int64_t v = ovr_get(s, ovr_key(OVR_ITEM, channel, item_ref(s, it)));
        if (v >= 0)
            return v;
    }
    if (fl & ITEM_SKU_OVERRIDE)
        return ovr_get(s, ovr_key(OVR_SKU, channel, it->sku_idx));
    return -1;
}

/* Safety stock of item `it` for `channel` given on_hand. Lock-free. */
static inline int64_t item_safety(const struct atp_store *s, const struct item *it,
                                  uint32_t channel, int64_t on_hand)
{
    /* A5: pairs with the release stores of flags in atp_store_set_safety. */
    uint32_t fl = atomic_load_explicit(&it->flags, memory_order_acquire);
    if (fl) {
        int64_t v = item_override(s, it, channel, fl);
        if (v >= 0)
            return v;
    }
    const struct channel *c = &s->channels[channel];
    int64_t p = pct_of(on_hand, c->safety_pct);
    return p > c->safety_units ? p : c->safety_units;
}

static inline int64_t clamp_atp(const struct channel *c, int64_t v)
{
    if (v < 0)
        return 0;
    if (c->cap >= 0 && v > c->cap)
        return c->cap;
    return v;
}

/*
 * What `channel` may take from item `it` right now, and the word it was
 * computed from (for the reservation's CAS). The word is read first, then
 * on_hand and the overrides: see the ordering argument at the top.
 */
int64_t store_item_avail(struct atp_store *s, const struct item *it, uint32_t channel,
                         uint64_t *ret_word)
{
    /* A6: pairs with writers' release CAS of the word (R6); seq_cst for the
     * change feed (F2), the same instruction as acquire on x86. */
    uint64_t w = atomic_load_explicit(&it->word, memory_order_seq_cst);
    int64_t on_hand = atomic_load_explicit(&it->on_hand, memory_order_acquire);
    *ret_word = w;
    if (!channel_allows(s, channel, it->loc_id))
        return 0;
    int64_t safety = item_safety(s, it, channel, on_hand);
    return clamp_atp(&s->channels[channel], word_free(w) - safety);
}

/*
 * The free quantity of item `idx` (on_hand - allocated - reserved), read as
 * store_item_avail reads it. A commit leaves it as it is (reserved moves to
 * allocated); below 0, units held or allocated are no longer on hand.
 */
int64_t store_item_free(struct atp_store *s, uint32_t idx)
{
    /* A6: pairs with writers' release CAS of the word (R6). */
    return word_free(atomic_load_explicit(&item_at(s, idx)->word, memory_order_acquire));
}

/*
 * The breakdown of one item: ATP from the word and the on_hand read after it
 * (as store_item_avail), and that same on_hand and safety stock reported, so
 * the figures of one answer agree with each other; allocated and reserved
 * are read after them, each current.
 */
static inline void item_breakdown(struct atp_store *s, const struct item *it, uint32_t channel,
                                  struct atp_breakdown *b)
{
    /* A6: pairs with writers' release CAS of the word (R6); seq_cst for the
     * change feed's cursor (F2), the same instruction as acquire on x86. */
    uint64_t w = atomic_load_explicit(&it->word, memory_order_seq_cst);
    int64_t on_hand = atomic_load_explicit(&it->on_hand, memory_order_acquire);
    int64_t safety = item_safety(s, it, channel, on_hand);
    b->on_hand = on_hand;
    b->allocated = item_allocated(it);
    b->reserved = atomic_load_explicit(&it->reserved, memory_order_relaxed);
    b->safety = safety;
    b->atp = channel_allows(s, channel, it->loc_id)
                 ? clamp_atp(&s->channels[channel], word_free(w) - safety)
                 : 0;
}

int atp_store_get(struct atp_store *s, struct atp_slice sku, struct atp_slice loc, uint32_t channel,
                  struct atp_breakdown *ret)
{
    if (channel >= s->nchannels)
        return ATP_ENOCHANNEL;
    uint32_t idx;
    int rc = store_find_item(s, sku, loc, &idx);
    if (rc)
        return rc;
    item_breakdown(s, item_at(s, idx), channel, ret);
    return 0;
}

/*
 * Batched lookups as a software pipeline of four stages, GET_AHEAD keys
 * apart: (0) prefetch the caller's key bytes of key i; (1) hash key
 * i - GET_AHEAD and prefetch its index slot; (2) read the slot of key
 * i - 2 * GET_AHEAD and prefetch every line of the item it names (header and
 * key bytes); (3) compare and answer key i - 3 * GET_AHEAD. A key's misses
 * are waited for while other keys compute, so they overlap instead of
 * queueing. GET_AHEAD was tuned on the development VM (4, 6, 8, 12, 16, 24
 * tried; 12 was fastest for batches of 16 and 64: a batch of 16 then runs
 * as four phases, prefetch all, hash all, slot all, answer all). Anything
 * unusual (a miss, an invalid key, a tag that matched another item) is
 * answered by atp_store_get, so both calls agree error for error.
 */
#define GET_AHEAD 12
#define GET_RING  64 /* a power of two > 3 * GET_AHEAD */

struct get_flight {
    const struct shard *sh;
    uint32_t pos; /* first index slot of the key */
    uint32_t tag;
    uint32_t ref; /* candidate item ref + 1 (0: none) */
    uint16_t lid;
    uint8_t ok; /* the key got through stage 1 */
};

/* Locations resolved in this call, by length and last byte: keys of one
 * batch mostly name a few locations, which then cost a compare, not a hash. */
#define GET_MEMO 4
struct get_loc_memo {
    struct atp_slice loc;
    uint16_t lid;
};

static inline void get_stage_hash(struct atp_store *s, const struct atp_get_req *q,
                                  struct get_flight *g, struct get_loc_memo *memos)
{
    g->ok = 0;
    if (q->sku.len - 1u >= ATP_SKU_MAX || q->loc.len - 1u >= ATP_LOC_MAX)
        return;
    struct get_loc_memo *memo =
        &memos[(q->loc.len + (uint8_t)q->loc.p[q->loc.len - 1]) & (GET_MEMO - 1)];
    if (q->loc.len != memo->loc.len || !key_eq(q->loc.p, memo->loc.p, q->loc.len)) {
        if (loc_find(s, q->loc, &memo->lid) != 0) {
            memo->loc.len = 0;
            return;
        }
        memo->loc = q->loc;
    }
    uint64_t h = XXH3_64bits(q->sku.p, q->sku.len);
    const struct shard *sh = shard_of(s, h);
    uint64_t ih = item_hash(h, memo->lid);
    g->sh = sh;
    g->pos = slot_start(ih, sh->item_n);
    g->tag = (uint32_t)(ih >> 32);
    g->lid = memo->lid;
    g->ok = 1;
    __builtin_prefetch(&sh->item_slots[g->pos]);
}

static inline void get_stage_slot(struct atp_store *s, const struct atp_get_req *q,
                                  struct get_flight *g)
{
    g->ref = 0;
    if (!g->ok)
        return;
    const struct shard *sh = g->sh;
    /* The index is at most 0.7 full: an empty slot ends the probe. */
    for (uint32_t i = g->pos;; i = slot_next(i, sh->item_n)) {
        /* A3': pairs with R3' in item_insert_locked. */
        uint64_t v = atomic_load_explicit(&sh->item_slots[i], memory_order_acquire);
        if (v == 0)
            return;
        if ((uint32_t)(v >> 32) == g->tag) {
            g->ref = (uint32_t)v;
            item_prefetch(item_at(s, (uint32_t)v - 1), q->sku.len);
            return;
        }
    }
}

static inline int get_stage_answer(struct atp_store *s, const struct atp_get_req *q,
                                   const struct get_flight *g, struct atp_breakdown *ret)
{
    if (q->channel >= s->nchannels)
        return ATP_ENOCHANNEL;
    if (g->ref) {
        const struct item *it = item_at(s, g->ref - 1);
        if (item_is(it, q->sku, g->lid)) {
            item_breakdown(s, it, q->channel, ret);
            return 0;
        }
    }
    return atp_store_get(s, q->sku, q->loc, q->channel, ret);
}

void atp_store_get_many(struct atp_store *s, const struct atp_get_req *reqs, uint32_t n,
                        struct atp_breakdown *ret, int *ret_rc)
{
    struct get_flight fl[GET_RING];
    struct get_loc_memo memo[GET_MEMO] = {{{NULL, 0}, 0}};
    for (uint64_t i = 0; i < (uint64_t)n + 3 * GET_AHEAD; i++) {
        if (i < n && reqs[i].sku.len)
            __builtin_prefetch(reqs[i].sku.p); /* the caller's key bytes */
        if (i >= GET_AHEAD && i - GET_AHEAD < n) {
            uint64_t k = i - GET_AHEAD;
            get_stage_hash(s, &reqs[k], &fl[k % GET_RING], memo);
        }
        if (i >= 2 * GET_AHEAD && i - 2 * GET_AHEAD < n) {
            uint64_t k = i - 2 * GET_AHEAD;
            get_stage_slot(s, &reqs[k], &fl[k % GET_RING]);
        }
        if (i >= 3 * GET_AHEAD) {
            uint64_t k = i - 3 * GET_AHEAD;
            ret_rc[k] = get_stage_answer(s, &reqs[k], &fl[k % GET_RING], &ret[k]);
        }
    }
}

static inline void bd_add(struct atp_breakdown *sum, const struct atp_breakdown *b)
{
    sum->on_hand += b->on_hand, sum->allocated += b->allocated;
    sum->reserved += b->reserved, sum->safety += b->safety, sum->atp += b->atp;
}

/*
 * Network ATP probes up to NET_PROBE locations at once: every (sku, location)
 * slot is prefetched, then every item, then the items are summed, so a sku's
 * items cost about two memory latencies instead of one per item. Used for a
 * channel's location list, and for channels that sell everywhere while the
 * store knows at most NET_PROBE locations; beyond that the sku's item list
 * is walked (one dependent miss per item, but no probe per location).
 */
#define NET_PROBE 16

/* Sum the items of (sku, locs[0..n)) into *sum; returns how many exist. */
static uint32_t net_probe(struct atp_store *s, struct atp_slice sku, uint64_t h,
                          const uint16_t *locs, uint32_t n, uint32_t channel,
                          struct atp_breakdown *sum)
{
    const struct shard *sh = shard_of(s, h);
    uint32_t pos[NET_PROBE], tag[NET_PROBE], ref[NET_PROBE];
    uint32_t found = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t ih = item_hash(h, locs[i]);
        pos[i] = slot_start(ih, sh->item_n);
        tag[i] = (uint32_t)(ih >> 32);
        __builtin_prefetch(&sh->item_slots[pos[i]]);
    }
    for (uint32_t i = 0; i < n; i++) {
        ref[i] = 0;
        for (uint32_t j = pos[i];; j = slot_next(j, sh->item_n)) {
            /* A3': pairs with R3' in item_insert_locked. */
            uint64_t v = atomic_load_explicit(&sh->item_slots[j], memory_order_acquire);
            if (v == 0)
                break;
            if ((uint32_t)(v >> 32) == tag[i]) {
                ref[i] = (uint32_t)v;
                item_prefetch(item_at(s, (uint32_t)v - 1), sku.len);
                break;
            }
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t idx;
        if (ref[i] && item_is(item_at(s, ref[i] - 1), sku, locs[i]))
            idx = ref[i] - 1;
        else if (!ref[i] || item_lookup(s, sku, h, locs[i], &idx) != 0)
            continue; /* no item, or a tag shared with another item's */
        struct atp_breakdown b;
        item_breakdown(s, item_at(s, idx), channel, &b);
        bd_add(sum, &b);
        found++;
    }
    return found;
}

int atp_store_get_network(struct atp_store *s, struct atp_slice sku, uint32_t channel,
                          struct atp_breakdown *ret)
{
    if (channel >= s->nchannels)
        return ATP_ENOCHANNEL;
    if (sku.len - 1u >= ATP_SKU_MAX)
        return ATP_EINVAL_SKU;
    uint64_t h = XXH3_64bits(sku.p, sku.len);
    struct atp_breakdown sum = {0};
    const struct channel *c = &s->channels[channel];
    /* Locations interned so far; R1's relaxed count, ids below it are valid. */
    uint32_t nl = atomic_load_explicit(&s->nlocs, memory_order_relaxed);
    uint32_t si;
    int rc;
    if (c->nlocs || nl <= NET_PROBE) {
        uint16_t all[NET_PROBE];
        const uint16_t *locs = c->nlocs ? c->locs : all;
        if (!c->nlocs) {
            for (uint32_t i = 0; i < nl; i++)
                all[i] = (uint16_t)i;
        } else {
            nl = c->nlocs;
        }
        uint32_t found = 0;
        for (uint32_t i = 0; i < nl; i += NET_PROBE)
            found += net_probe(s, sku, h, locs + i, nl - i < NET_PROBE ? nl - i : NET_PROBE,
                               channel, &sum);
        /*
         * Only valid keys are stored, so a hit proves the sku valid; without
         * one, tell an invalid sku from an absent one, and a sku without items
         * at the channel's locations (zero) from an unknown one.
         */
        if (!found) {
            if ((rc = atp_validate_sku(sku)) != 0)
                return rc;
            if ((rc = store_find_sku(s, sku, h, &si)) != 0)
                return rc;
        }
        *ret = sum;
        return 0;
    }
    if ((rc = atp_validate_sku(sku)) != 0)
        return rc;
    if ((rc = store_find_sku(s, sku, h, &si)) != 0)
        return rc;
    /* A4: pairs with R4 in item_insert_locked. */
    for (uint32_t n = atomic_load_explicit(&s->skus[si].head, memory_order_acquire); n;
         n = atomic_load_explicit(&item_at(s, n - 1)->next, memory_order_acquire)) {
        struct atp_breakdown b;
        item_breakdown(s, item_at(s, n - 1), channel, &b);
        bd_add(&sum, &b);
    }
    *ret = sum;
    return 0;
}

/* --- event writes (shard lock held) -------------------------------------- */

static inline int qty_ok(int64_t v)
{
    return v >= -ATP_QTY_MAX && v <= ATP_QTY_MAX;
}

/* Bump the version and add `dfree` to free. R6: release, pairs with A6. */
static void word_bump(struct item *it, int64_t dfree)
{
    uint64_t w = atomic_load_explicit(&it->word, memory_order_relaxed);
    uint64_t nw;
    do {
        nw = word_make(word_free(w) + dfree, (w & WORD_VER_MASK) + 1);
    } while (!atomic_compare_exchange_weak_explicit(&it->word, &w, nw, memory_order_seq_cst,
                                                    memory_order_relaxed));
}

/*
 * on_hand += d with the ordering that keeps lock-free readers conservative:
 * when on_hand drops (safety stock may drop) the word moves first; when it
 * rises the word moves last. Caller holds the shard lock and checked ranges.
 */
static void item_move_on_hand(struct atp_store *s, struct item *it, int64_t d)
{
    int64_t oh = atomic_load_explicit(&it->on_hand, memory_order_relaxed);
    if (d < 0) {
        word_bump(it, d);
        atomic_store_explicit(&it->on_hand, oh + d, memory_order_release);
        feed_mark(s, item_ref(s, it)); /* on_hand was the last write */
    } else {
        atomic_store_explicit(&it->on_hand, oh + d, memory_order_release);
        word_bump(it, d);
        feed_mark_rmw(s, item_ref(s, it));
    }
}

static int range_check_on_hand(const struct item *it, int64_t d)
{
    int64_t oh = atomic_load_explicit(&it->on_hand, memory_order_relaxed);
    int64_t fr = word_free(atomic_load_explicit(&it->word, memory_order_relaxed));
    if (!qty_ok(oh + d) || !qty_ok(fr + d))
        return ATP_ERANGE;
    return 0;
}

int atp_store_adjust(struct atp_store *s, struct atp_slice sku, struct atp_slice loc, int64_t delta,
                     int64_t *ret_on_hand)
{
    if (delta == 0)
        return ATP_EQTY;
    if (!qty_ok(delta))
        return ATP_ERANGE;
    struct shard *sh;
    struct item *it;
    int rc = writer_item(s, sku, loc, &sh, &it);
    if (rc)
        return rc;
    if ((rc = range_check_on_hand(it, delta)) == 0) {
        uint64_t pos = j_begin(s);
        item_move_on_hand(s, it, delta);
        j_end(
            s, pos,
            &(struct atp_journal_rec){.type = ATP_J_ADJUST, .sku = sku, .loc = loc, .qty = delta});
        if (ret_on_hand)
            *ret_on_hand = atomic_load_explicit(&it->on_hand, memory_order_relaxed);
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

int atp_store_set(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                  int64_t on_hand_abs, uint64_t seq)
{
    if (on_hand_abs < 0 || on_hand_abs > ATP_QTY_MAX)
        return on_hand_abs < 0 ? ATP_EQTY : ATP_ERANGE;
    struct shard *sh;
    struct item *it;
    int rc = writer_item(s, sku, loc, &sh, &it);
    if (rc)
        return rc;
    uint64_t last = atomic_load_explicit(&it->set_seq, memory_order_relaxed);
    if (seq != 0 && seq <= last) {
        rc = ATP_ESTALE;
    } else {
        int64_t d = on_hand_abs - atomic_load_explicit(&it->on_hand, memory_order_relaxed);
        if (d == 0 || (rc = range_check_on_hand(it, d)) == 0) {
            uint64_t pos = j_begin(s);
            if (d != 0)
                item_move_on_hand(s, it, d);
            if (seq != 0)
                atomic_store_explicit(&it->set_seq, seq, memory_order_relaxed);
            j_end(s, pos,
                  &(struct atp_journal_rec){
                      .type = ATP_J_SET, .sku = sku, .loc = loc, .qty = on_hand_abs, .seq = seq});
        }
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

static int allocate_common(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                           int64_t qty, int jtype)
{
    struct shard *sh;
    struct item *it;
    int rc = writer_item(s, sku, loc, &sh, &it);
    if (rc)
        return rc;
    int64_t ext = atomic_load_explicit(&it->ext_alloc, memory_order_relaxed);
    int64_t fr = word_free(atomic_load_explicit(&it->word, memory_order_relaxed));
    if (!qty_ok(item_allocated(it) + qty) || !qty_ok(fr - qty) || ext + qty < 0) {
        /* includes deallocating more than allocate events allocated: what
         * commits allocated only their shipments take */
        rc = ATP_ERANGE;
    } else {
        /* Allocation only lowers free: move the word first. */
        uint64_t pos = j_begin(s);
        word_bump(it, -qty);
        feed_mark_rmw(s, item_ref(s, it)); /* ext_alloc is not read for ATP */
        atomic_fetch_add_explicit(&it->ext_alloc, qty, memory_order_relaxed);
        j_end(s, pos,
              &(struct atp_journal_rec){
                  .type = jtype, .sku = sku, .loc = loc, .qty = qty < 0 ? -qty : qty});
    }
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

int atp_store_allocate(struct atp_store *s, struct atp_slice sku, struct atp_slice loc, int64_t qty)
{
    if (qty <= 0)
        return ATP_EQTY;
    if (qty > ATP_QTY_MAX)
        return ATP_ERANGE;
    return allocate_common(s, sku, loc, qty, ATP_J_ALLOCATE);
}

int atp_store_deallocate(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                         int64_t qty)
{
    if (qty <= 0)
        return ATP_EQTY;
    if (qty > ATP_QTY_MAX)
        return ATP_ERANGE;
    return allocate_common(s, sku, loc, -qty, ATP_J_DEALLOCATE);
}

/* Bump the version of every item of a sku (its shard lock held), and with
 * `mark`, mark each for the change feed. */
static void sku_bump_all(struct atp_store *s, uint32_t head, bool mark)
{
    for (uint32_t n = head; n;
         n = atomic_load_explicit(&item_at(s, n - 1)->next, memory_order_acquire)) {
        word_bump(item_at(s, n - 1), 0);
        if (mark)
            feed_mark_rmw(s, n - 1);
    }
}

int atp_store_set_safety(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                         uint32_t channel, int64_t units)
{
    if (channel >= s->nchannels)
        return ATP_ENOCHANNEL;
    if (units > ATP_QTY_MAX)
        return ATP_ERANGE;
    int rc = atp_validate_sku(sku);
    if (rc)
        return rc;
    if (units < 0)
        units = -1;
    if (loc.len) {
        struct shard *sh;
        struct item *it;
        if ((rc = writer_item(s, sku, loc, &sh, &it)) != 0)
            return rc;
        /* Either direction: bump before and after the store (see top). */
        uint64_t pos = j_begin(s);
        word_bump(it, 0);
        rc = ovr_put(s, ovr_key(OVR_ITEM, channel, item_ref(s, it)), units);
        if (rc == 0 && units >= 0)
            atomic_fetch_or_explicit(&it->flags, ITEM_HAS_OVERRIDE, memory_order_release);
        word_bump(it, 0);
        feed_mark_rmw(s, item_ref(s, it));
        j_end(s, pos,
              rc ? NULL
                 : &(struct atp_journal_rec){.type = ATP_J_SAFETY,
                                             .sku = sku,
                                             .loc = loc,
                                             .channel = channel,
                                             .qty = units});
        pthread_mutex_unlock(&sh->lock);
        return rc;
    }
    uint64_t h = XXH3_64bits(sku.p, sku.len);
    struct shard *sh = shard_of(s, h);
    uint32_t si;
    pthread_mutex_lock(&sh->lock);
    if ((rc = store_find_sku(s, sku, h, &si)) == ATP_ENOTFOUND) {
        /* A sku-level override needs the sku; items come with events. */
        pthread_mutex_unlock(&sh->lock);
        return rc;
    }
    uint32_t head = atomic_load_explicit(&s->skus[si].head, memory_order_acquire);
    uint64_t pos = j_begin(s);
    sku_bump_all(s, head, false);
    rc = ovr_put(s, ovr_key(OVR_SKU, channel, si), units);
    if (rc == 0 && units >= 0) {
        /* Mirrored into every item so a lookup never touches the sku. */
        atomic_fetch_or_explicit(&s->skus[si].flags, SKU_HAS_OVERRIDE, memory_order_release);
        for (uint32_t n = head; n;
             n = atomic_load_explicit(&item_at(s, n - 1)->next, memory_order_acquire))
            atomic_fetch_or_explicit(&item_at(s, n - 1)->flags, ITEM_SKU_OVERRIDE,
                                     memory_order_release);
    }
    sku_bump_all(s, head, true);
    j_end(s, pos,
          rc ? NULL
             : &(struct atp_journal_rec){.type = ATP_J_SAFETY,
                                         .sku = sku,
                                         .loc = {"", 0},
                                         .channel = channel,
                                         .qty = units});
    pthread_mutex_unlock(&sh->lock);
    return rc;
}

/*
 * Fulfill's item half: allocated and on_hand drop by qty; free does not move.
 * on_hand dropping can only lower safety stock, so the version moves first.
 */
int store_item_ship(struct atp_store *s, uint32_t idx, int64_t qty,
                    const struct atp_journal_rec *jrec)
{
    struct item *it = item_at(s, idx);
    struct shard *sh = shard_of(s, XXH3_64bits(it->sku, it->sku_len));
    pthread_mutex_lock(&sh->lock);
    /* Logged under the shard lock: orders it against sets of the item. The
     * line's qty is in `committed` (its commit put it there, and nothing
     * else takes from it), so both drop by qty and free stays. */
    uint64_t pos = j_begin(s);
    word_bump(it, 0);
    atomic_fetch_sub_explicit(&it->committed, qty, memory_order_relaxed);
    atomic_store_explicit(&it->on_hand,
                          atomic_load_explicit(&it->on_hand, memory_order_relaxed) - qty,
                          memory_order_release);
    feed_mark(s, idx);
    j_end(s, pos, jrec);
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

/* --- reservation helpers (lock-free; used by resv.c) ---------------------- */

/*
 * Take `qty` from item `idx` for `channel` if it stays within what the
 * channel may sell: one CAS of the availability word (the linearization
 * point of the grant). *ret_avail is what was available at the last try.
 * With take == false it only answers whether the line could be taken.
 */
static int item_take(struct atp_store *s, uint32_t idx, uint32_t channel, int64_t qty, bool take,
                     int64_t *ret_avail)
{
    struct item *it = item_at(s, idx);
    for (;;) {
        uint64_t w;
        int64_t avail = store_item_avail(s, it, channel, &w);
        *ret_avail = avail;
        if (qty > avail)
            return ATP_EINSUFFICIENT;
        if (!take)
            return 0;
        /* free -= qty, version kept: fails if a writer or a grant moved it. */
        uint64_t nw = word_make(word_free(w) - qty, w & WORD_VER_MASK);
        /* C1: the read side pairs with R6, the write side with A6; seq_cst
         * for the change feed's mark (F1), the same instruction on x86. */
        if (atomic_compare_exchange_weak_explicit(&it->word, &w, nw, memory_order_seq_cst,
                                                  memory_order_acquire)) {
            feed_mark_rmw(s, idx);
            atomic_fetch_add_explicit(&it->reserved, qty, memory_order_relaxed);
            return 0;
        }
    }
}

/*
 * Start the index-slot miss of a reservation line early, so that it overlaps
 * the idempotency-key probes and the record's misses instead of following
 * them. A hint only: store_take looks the item up again (and finds the slot
 * in cache). Lines for "any" location are left alone.
 */
void store_prefetch_line(struct atp_store *s, const struct atp_line_req *line,
                         struct store_line_key *ret_key)
{
    uint16_t lid;
    ret_key->h = XXH3_64bits(line->sku.p, line->sku.len);
    ret_key->lid = -1;
    if (!line->loc.len || loc_find(s, line->loc, &lid) != 0)
        return;
    ret_key->lid = lid;
    const struct shard *sh = shard_of(s, ret_key->h);
    __builtin_prefetch(&sh->item_slots[slot_start(item_hash(ret_key->h, lid), sh->item_n)]);
}

int store_take(struct atp_store *s, const struct atp_line_req *line,
               const struct store_line_key *key, uint32_t channel, bool take, uint32_t *ret_idx,
               int64_t *ret_avail)
{
    /* The caller validated the line (resv.c validate_req). */
    int rc;
    uint64_t h = key ? key->h : XXH3_64bits(line->sku.p, line->sku.len);
    *ret_avail = 0;
    if (line->loc.len) {
        uint16_t lid;
        uint32_t idx;
        if (key && key->lid >= 0)
            lid = (uint16_t)key->lid;
        else if (loc_find(s, line->loc, &lid) != 0)
            return ATP_EINSUFFICIENT; /* no such location: nothing available */
        if (item_lookup(s, line->sku, h, lid, &idx) != 0)
            return ATP_EINSUFFICIENT; /* no such item: nothing available */
        if ((rc = item_take(s, idx, channel, line->qty, take, ret_avail)) == 0)
            *ret_idx = idx;
        return rc;
    }
    const struct channel *c = &s->channels[channel];
    if (c->nlocs) {
        /* Priority order: the first location that can cover the whole line. */
        int64_t best = 0;
        for (uint32_t i = 0; i < c->nlocs; i++) {
            uint32_t idx;
            int64_t avail;
            if (item_lookup(s, line->sku, h, c->locs[i], &idx) != 0)
                continue;
            if (item_take(s, idx, channel, line->qty, take, &avail) == 0) {
                *ret_idx = idx;
                *ret_avail = avail;
                return 0;
            }
            if (avail > best)
                best = avail;
        }
        *ret_avail = best;
        return ATP_EINSUFFICIENT;
    }
    /* No list: the location with most available; retry if a race took it. */
    uint32_t si;
    if (store_find_sku(s, line->sku, h, &si) != 0)
        return ATP_EINSUFFICIENT;
    for (;;) {
        int64_t best = -1;
        uint32_t best_idx = 0;
        /* A4: pairs with R4 in item_insert_locked. */
        for (uint32_t n = atomic_load_explicit(&s->skus[si].head, memory_order_acquire); n;
             n = atomic_load_explicit(&item_at(s, n - 1)->next, memory_order_acquire)) {
            uint64_t w;
            int64_t avail = store_item_avail(s, item_at(s, n - 1), channel, &w);
            if (avail > best)
                best = avail, best_idx = n - 1;
        }
        if (best < line->qty) {
            *ret_avail = best < 0 ? 0 : best;
            return ATP_EINSUFFICIENT;
        }
        int64_t avail;
        if (item_take(s, best_idx, channel, line->qty, take, &avail) == 0) {
            *ret_idx = best_idx;
            *ret_avail = avail;
            return 0;
        }
    }
}

/* Give held stock back (release, expiry, undo): free += qty, reserved -= qty. */
void store_give_back(struct atp_store *s, uint32_t idx, int64_t qty)
{
    struct item *it = item_at(s, idx);
    /* R7: release; a reservation that read the old word fails its CAS (C1). */
    atomic_fetch_add_explicit(&it->word, (uint64_t)qty << WORD_VER_BITS, memory_order_seq_cst);
    feed_mark_rmw(s, idx);
    atomic_fetch_sub_explicit(&it->reserved, qty, memory_order_relaxed);
}

/* Commit: reserved moves to allocated; free does not change. */
void store_commit_qty(struct atp_store *s, uint32_t idx, int64_t qty)
{
    struct item *it = item_at(s, idx);
    atomic_fetch_add_explicit(&it->committed, qty, memory_order_relaxed);
    atomic_fetch_sub_explicit(&it->reserved, qty, memory_order_relaxed);
}

/*
 * Recovery only (one thread, before serving): a restored committed
 * reservation's unshipped line. The item's snapshot allocation (restored as
 * allocate events' own) includes it: it moves to the commits' part, where
 * only its shipment takes it. A snapshot written before the two parts were
 * kept apart may hold less allocation than its commits' unshipped lines (a
 * deallocate event could take a commit's units then): the line is counted
 * in full all the same and the allocation raised by the difference, so the
 * item never shows units its committed orders will still ship.
 */
void store_restore_committed(struct atp_store *s, uint32_t idx, int64_t qty)
{
    struct item *it = item_at(s, idx);
    int64_t ext = atomic_load_explicit(&it->ext_alloc, memory_order_relaxed);
    int64_t from_ext = ext >= qty ? qty : (ext > 0 ? ext : 0);
    if (from_ext < qty) {
        word_bump(it, from_ext - qty); /* more allocated: less free */
        feed_mark_rmw(s, idx);
    }
    atomic_store_explicit(&it->ext_alloc, ext - from_ext, memory_order_relaxed);
    atomic_fetch_add_explicit(&it->committed, qty, memory_order_relaxed);
}

struct atp_slice store_item_sku(const struct atp_store *s, uint32_t idx)
{
    return (struct atp_slice){item_at(s, idx)->sku, item_at(s, idx)->sku_len};
}

struct atp_slice store_item_loc(const struct atp_store *s, uint32_t idx)
{
    return store_loc_name(s, item_at(s, idx)->loc_id);
}

/* --- recovery ----------------------------------------------------------- */

/* Recovery only: hold qty on item idx without checking availability. */
void store_force_take(struct atp_store *s, uint32_t idx, int64_t qty)
{
    struct item *it = item_at(s, idx);
    word_bump(it, -qty);
    feed_mark_rmw(s, idx);
    atomic_fetch_add_explicit(&it->reserved, qty, memory_order_relaxed);
}

int atp_store_restore_item(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                           int64_t on_hand, int64_t allocated, uint64_t set_seq)
{
    /* allocated is never negative (a deallocate beyond it is refused): a
     * snapshot that says so is damaged, and restoring it would add to ATP. */
    if (!qty_ok(on_hand) || !qty_ok(allocated) || allocated < 0 || !qty_ok(on_hand - allocated))
        return ATP_ERANGE;
    struct shard *sh;
    struct item *it;
    int rc = writer_item(s, sku, loc, &sh, &it);
    if (rc)
        return rc;
    int64_t reserved = atomic_load_explicit(&it->reserved, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&it->word, memory_order_relaxed);
    atomic_store_explicit(&it->on_hand, on_hand, memory_order_relaxed);
    /* all of it as events' until the committed reservations come back
     * (store_restore_committed moves their lines' share) */
    atomic_store_explicit(&it->ext_alloc, allocated, memory_order_relaxed);
    atomic_store_explicit(&it->committed, 0, memory_order_relaxed);
    atomic_store_explicit(&it->set_seq, set_seq, memory_order_relaxed);
    atomic_store_explicit(&it->word,
                          word_make(on_hand - allocated - reserved, (w & WORD_VER_MASK) + 1),
                          memory_order_release);
    feed_mark(s, item_ref(s, it));
    pthread_mutex_unlock(&sh->lock);
    return 0;
}

int atp_store_foreach_override(struct atp_store *s,
                               int (*fn)(struct atp_slice sku, struct atp_slice loc,
                                         uint32_t channel, int64_t units, void *arg),
                               void *arg)
{
    for (uint32_t i = 0; i <= s->ovr_mask; i++) {
        uint64_t k = atomic_load_explicit(&s->ovr[i].key, memory_order_acquire);
        int64_t units = atomic_load_explicit(&s->ovr[i].units, memory_order_acquire);
        if (k == 0 || units < 0)
            continue;
        uint32_t id = (uint32_t)k;
        uint32_t channel = (uint32_t)(k >> 32) & 0x3fffffff;
        struct atp_slice sku, loc = {"", 0};
        if ((k >> 62) == OVR_ITEM) {
            sku = store_item_sku(s, id);
            loc = store_item_loc(s, id);
        } else {
            uint32_t head = atomic_load_explicit(&s->skus[id].head, memory_order_acquire);
            sku = store_item_sku(s, head - 1);
        }
        int rc = fn(sku, loc, channel, units, arg);
        if (rc)
            return rc;
    }
    return 0;
}

/* --- iteration and stats ----------------------------------------------- */

int atp_store_foreach_item(struct atp_store *s,
                           int (*fn)(const struct atp_item_view *item, void *arg), void *arg)
{
    for (uint32_t k = 0; k < s->cfg.nshards; k++) {
        struct shard *sh = &s->shards[k];
        for (uint32_t i = 0; i < sh->item_n; i++) {
            uint64_t v = atomic_load_explicit(&sh->item_slots[i], memory_order_acquire);
            if (!v)
                continue;
            const struct item *it = item_at(s, (uint32_t)v - 1);
            struct atp_item_view view = {
                .sku = {it->sku, it->sku_len},
                .loc = store_loc_name(s, it->loc_id),
                .on_hand = atomic_load_explicit(&it->on_hand, memory_order_relaxed),
                .allocated = item_allocated(it),
                .reserved = atomic_load_explicit(&it->reserved, memory_order_relaxed),
                .set_seq = atomic_load_explicit(&it->set_seq, memory_order_relaxed),
            };
            int rc = fn(&view, arg);
            if (rc)
                return rc;
        }
    }
    return 0;
}

void atp_store_stats(struct atp_store *s, struct atp_store_stats *ret)
{
    struct atp_store_stats st = {0};
    uint32_t n = atomic_load_explicit(&s->nitems, memory_order_relaxed);
    st.items = n > s->cfg.max_items ? s->cfg.max_items : n;
    n = atomic_load_explicit(&s->nskus, memory_order_relaxed);
    st.skus = n > s->cfg.max_skus ? s->cfg.max_skus : n;
    st.locations = atomic_load_explicit(&s->nlocs, memory_order_relaxed);
    st.overrides = atomic_load_explicit(&s->novr, memory_order_relaxed);
    st.bytes_reserved = s->arena_bytes + s->skus_bytes;
    for (uint32_t k = 0; k < s->cfg.nshards; k++)
        st.bytes_reserved += ((size_t)s->shards[k].item_n + s->shards[k].sku_n) * 8;
    resv_stats(s, &st);
    feed_stats(s, &st);
    *ret = st;
}

/* --- lifecycle ----------------------------------------------------------- */

void atp_store_config_defaults(struct atp_store_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_items = 1u << 20;
    cfg->max_skus = 0; /* = max_items */
    cfg->max_reservations = 1u << 18;
    cfg->max_overrides = 1u << 16;
    cfg->nshards = 64;
    cfg->max_ttl_ms = 24ull * 3600 * 1000;
    cfg->idempotency_window_ms = 10ull * 60 * 1000;
    cfg->feed_records = 1u << 20;
}

static int channel_init(struct atp_store *s, uint32_t id, const struct atp_channel_config *cc)
{
    struct channel *c = &s->channels[id];
    struct atp_slice name = atp_slice_cstr(cc->name);
    if (!valid_key(name, ATP_CHANNEL_MAX) || cc->safety_units < 0 ||
        cc->safety_units > ATP_QTY_MAX || cc->safety_pct > 100 || cc->cap > ATP_QTY_MAX)
        return ATP_EINVAL;
    for (uint32_t i = 0; i < id; i++) {
        uint32_t dup;
        if (atp_store_channel_find(s, name, &dup) == 0)
            return ATP_EINVAL;
    }
    memcpy(c->name, name.p, name.len);
    c->name_len = name.len;
    c->safety_units = cc->safety_units;
    c->safety_pct = cc->safety_pct;
    c->cap = cc->cap < 0 ? -1 : cc->cap;
    if (cc->nlocations == 0 || !cc->locations)
        return 0;
    c->locs = calloc(cc->nlocations, sizeof(*c->locs));
    c->allowed = calloc((ATP_MAX_LOCATIONS + 8) / 8, 1);
    if (!c->locs || !c->allowed)
        return -ENOMEM;
    for (uint32_t i = 0; i < cc->nlocations; i++) {
        uint16_t lid;
        int rc = loc_intern(s, atp_slice_cstr(cc->locations[i]), &lid);
        if (rc)
            return rc;
        if ((c->allowed[lid >> 3] >> (lid & 7)) & 1)
            return ATP_EINVAL; /* listed twice */
        c->allowed[lid >> 3] |= (uint8_t)(1u << (lid & 7));
        c->locs[c->nlocs++] = lid;
    }
    return 0;
}

int atp_store_new(const struct atp_store_config *cfg_in, struct atp_store **ret_store)
{
    struct atp_store_config cfg = *cfg_in;
    if (cfg.nchannels == 0 || cfg.nchannels > ATP_MAX_CHANNELS || !cfg.channels)
        return ATP_EINVAL;
    if (cfg.max_items == 0 || cfg.max_items > (1u << 28) || cfg.max_reservations == 0 ||
        cfg.max_reservations > (1u << 28) || cfg.max_ttl_ms == 0)
        return ATP_EINVAL;
    if (cfg.max_skus == 0 || cfg.max_skus > cfg.max_items)
        cfg.max_skus = cfg.max_items;
    if (cfg.nshards == 0)
        cfg.nshards = 64;
    if (cfg.nshards & (cfg.nshards - 1) || cfg.nshards > 4096)
        return ATP_EINVAL;
    if (cfg.max_overrides == 0)
        cfg.max_overrides = 1;
    if (cfg.feed_records == 0)
        cfg.feed_records = 1u << 20;
    if (cfg.feed_records & (cfg.feed_records - 1) || cfg.feed_records < 1024 ||
        cfg.feed_records > (1u << 30))
        return ATP_EINVAL;

    struct atp_store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = cfg;
    s->cfg.channels = NULL; /* copied below; the caller's array is not kept */
    pthread_mutex_init(&s->loc_lock, NULL);
    pthread_mutex_init(&s->ovr_lock, NULL);
    pthread_mutex_init(&s->create_lock, NULL);
    int rc = -ENOMEM;

    while ((1u << s->shard_bits) < cfg.nshards)
        s->shard_bits++;
    s->shards = aligned_alloc(CACHELINE, sizeof(struct shard) * cfg.nshards);
    if (!s->shards)
        goto fail;
    /*
     * Per-shard index size: twice the fair share with headroom for skew
     * (binomial spread is a few percent at 64 shards and 1M items), at most
     * half full.
     */
    uint64_t per = ((uint64_t)cfg.max_items + cfg.nshards - 1) / cfg.nshards;
    uint64_t per_sku = ((uint64_t)cfg.max_skus + cfg.nshards - 1) / cfg.nshards;
    /*
     * Per-shard index size: twice the fair share plus room for skew (the
     * binomial spread is about 1% at 64 shards and 1M items), so a shard
     * stays under 0.7 load; sizes are not powers of two (multiply-shift maps
     * a hash to a slot), which keeps the index at about 16 bytes per item.
     */
    uint32_t item_n = (uint32_t)(per * 2 + per / 8 + 64);
    uint32_t sku_n = (uint32_t)(per_sku * 2 + per_sku / 8 + 64);
    for (uint32_t k = 0; k < cfg.nshards; k++) {
        struct shard *sh = &s->shards[k];
        memset(sh, 0, sizeof(*sh));
        pthread_mutex_init(&sh->lock, NULL);
        sh->item_n = item_n;
        sh->sku_n = sku_n;
    }
    /* One mapping for all shards' indexes, so huge pages can back it. */
    s->slots_bytes = (size_t)cfg.nshards * ((size_t)item_n + sku_n) * 8;
    s->slots = store_map(s->slots_bytes);
    if (!s->slots)
        goto fail;
    for (uint32_t k = 0; k < cfg.nshards; k++) {
        struct shard *sh = &s->shards[k];
        sh->item_slots = s->slots + (size_t)k * item_n;
        sh->sku_slots = s->slots + (size_t)cfg.nshards * item_n + (size_t)k * sku_n;
    }
    s->arena_bytes = (size_t)cfg.max_items * item_size(ATP_SKU_MAX);
    s->skus_bytes = (size_t)cfg.max_skus * sizeof(struct sku);
    s->arena = store_map(s->arena_bytes);
    s->skus = store_map(s->skus_bytes);
    s->locs = store_map(sizeof(struct location) * ATP_MAX_LOCATIONS);
    s->loc_mask = (1u << 17) - 1;
    s->loc_slots = store_map(((size_t)s->loc_mask + 1) * sizeof(uint32_t));
    s->ovr_mask = pow2_at_least((uint64_t)cfg.max_overrides * 2) - 1;
    s->ovr = store_map(((size_t)s->ovr_mask + 1) * sizeof(struct override));
    if (!s->arena || !s->skus || !s->locs || !s->loc_slots || !s->ovr)
        goto fail;
    for (uint32_t i = 0; i < cfg.nchannels; i++) {
        if ((rc = channel_init(s, i, &cfg_in->channels[i])) != 0)
            goto fail;
        s->nchannels = i + 1;
    }
    if ((rc = feed_init(s)) != 0)
        goto fail;
    if ((rc = resv_init(s)) != 0)
        goto fail;
    *ret_store = s;
    return 0;
fail:
    atp_store_free(s);
    return rc;
}

void atp_store_free(struct atp_store *s)
{
    if (!s)
        return;
    resv_fini(s);
    feed_fini(s);
    if (s->shards) {
        for (uint32_t k = 0; k < s->cfg.nshards; k++) {
            struct shard *sh = &s->shards[k];
            pthread_mutex_destroy(&sh->lock);
        }
        free(s->shards);
        store_unmap(s->slots, s->slots_bytes);
    }
    for (uint32_t i = 0; i < ATP_MAX_CHANNELS; i++) {
        free(s->channels[i].locs);
        free(s->channels[i].allowed);
    }
    store_unmap(s->arena, s->arena_bytes);
    store_unmap(s->skus, s->skus_bytes);
    store_unmap(s->locs, sizeof(struct location) * ATP_MAX_LOCATIONS);
    store_unmap(s->loc_slots, ((size_t)s->loc_mask + 1) * sizeof(uint32_t));
    store_unmap(s->ovr, ((size_t)s->ovr_mask + 1) * sizeof(struct override));
    pthread_mutex_destroy(&s->loc_lock);
    pthread_mutex_destroy(&s->ovr_lock);
    pthread_mutex_destroy(&s->create_lock);
    free(s);
}
