/*
 * store_int.h - internals shared by store.c (items, channels, events) and
 * resv.c (reservations, idempotency keys, expiry). Not a public header.
 *
 * The design, the memory orderings and the proof sketch of no-oversell are in
 * docs/ARCHITECTURE.md; the comments here name the invariants each field
 * carries.
 */
#ifndef ATP_STORE_INT_H
#define ATP_STORE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "atp/store.h"

#define CACHELINE 64

/*
 * The availability word of an item: bits 63..24 hold `free` = on_hand -
 * allocated - reserved as a 40-bit two's complement number, bits 23..0 a
 * version that every writer (event, admin, override) bumps. A reservation is
 * one compare-and-swap of this word: it succeeds only if neither free nor the
 * version moved since the reservation read the values it checked.
 */
#define WORD_VER_BITS 24
#define WORD_VER_MASK ((UINT64_C(1) << WORD_VER_BITS) - 1)

static inline int64_t word_free(uint64_t w)
{
    return (int64_t)w >> WORD_VER_BITS; /* arithmetic shift: gcc and clang */
}

static inline uint64_t word_make(int64_t free_qty, uint64_t ver)
{
    return ((uint64_t)free_qty << WORD_VER_BITS) | (ver & WORD_VER_MASK);
}

/* Item flags (item.flags). */
#define ITEM_HAS_OVERRIDE 1u /* an item-level safety override exists */
#define ITEM_SKU_OVERRIDE 2u /* a sku-level override exists (mirror of the sku's flag) */

/*
 * One (sku, location) pair: 64 bytes of state followed by the sku bytes,
 * rounded up to 8, in one arena, so a lookup compares its key on the same or
 * the next cache line and a short sku costs a short item. An item is named by
 * its offset in the arena in 8-byte units (its "ref"). Items are never
 * removed: refs and the name slices handed out stay valid for the store's
 * life. Fields without _Atomic are written once before the item is published
 * (release store of its index slot) and never again.
 */
struct item {
    _Atomic uint64_t word;   /* free | version, see above */
    _Atomic int64_t on_hand; /* physical stock */
    /*
     * allocated = ext_alloc + committed. The two halves are kept apart so a
     * deallocate event can only take what allocate events allocated, never
     * an atpd commit's units (which only their shipment takes).
     */
    _Atomic int64_t ext_alloc; /* by allocate/deallocate events (shard lock) */
    _Atomic int64_t committed; /* by atpd's commits, awaiting shipment */
    _Atomic int64_t reserved;  /* held with a TTL */
    _Atomic uint64_t set_seq;  /* last applied set sequence (shard lock) */
    _Atomic uint32_t next;     /* next item of the same sku, ref+1 */
    _Atomic uint32_t flags;    /* ITEM_* */
    uint32_t sku_idx;          /* owning sku record */
    uint16_t loc_id;           /* interned location */
    uint8_t sku_len;
    uint8_t pad_;
    char sku[]; /* key bytes */
};

#define ITEM_UNIT 8

static inline size_t item_size(uint32_t sku_len)
{
    return (sizeof(struct item) + sku_len + ITEM_UNIT - 1) & ~(size_t)(ITEM_UNIT - 1);
}

/* A sku: the head of its item list. Created with its first item. */
#define SKU_HAS_OVERRIDE 1u
struct sku {
    _Atomic uint32_t head;  /* first item, index+1; never 0 once published */
    _Atomic uint32_t flags; /* SKU_* */
};

struct location {
    char name[ATP_LOC_MAX];
    uint8_t len;
};

struct channel {
    char name[ATP_CHANNEL_MAX];
    uint32_t name_len;
    int64_t safety_units;
    uint32_t safety_pct;
    int64_t cap;      /* < 0: none */
    uint32_t nlocs;   /* 0: every location */
    uint16_t *locs;   /* priority order */
    uint8_t *allowed; /* bitmap over location ids, NULL: all */
};

/*
 * A shard: the items of the skus whose XXH3 falls in it. Index slots hold
 * (tag << 32) | (index + 1), 0 = empty; slots are written only under `lock`
 * (insertion) and read lock-free by everyone.
 */
struct shard {
    pthread_mutex_t lock; /* serializes inserts and event writers */
    uint32_t sku_n;       /* index sizes in slots */
    uint32_t item_n;
    uint32_t nskus;  /* under lock */
    uint32_t nitems; /* under lock */
    _Atomic uint64_t *sku_slots;
    _Atomic uint64_t *item_slots;
} __attribute__((aligned(CACHELINE)));

/* Safety override table entry; key 0 = empty slot. */
struct override {
    _Atomic uint64_t key;  /* kind | channel | id, never 0 once set */
    _Atomic int64_t units; /* < 0: removed */
};

struct resv_state; /* resv.c */

/*
 * The change feed (feed.c). Marks are two bitmaps: `leaf` has a bit per
 * item ref (8 bytes of arena, so every item has its own bit), `top` a bit per
 * leaf word. A writer sets its item's leaf bit, then the top bit, each only
 * if not yet set (a read first: a hot item costs one load until the next
 * scan). A scan (feed calls, under `lock`) exchanges top words with 0, then
 * the leaf words they name, and appends a record (the item's ref) to `ring`
 * for every bit it took. The proof that no change is missed is in
 * docs/ARCHITECTURE.md ("Change feed").
 */
struct feed {
    _Atomic uint64_t *leaf;
    _Atomic uint64_t *top;
    size_t leaf_words, top_words;
    pthread_mutex_t lock;     /* scans */
    _Atomic uint32_t *ring;   /* item refs, by record number & mask */
    uint64_t mask;            /* ring size - 1 */
    _Atomic uint64_t head;    /* records written; release after the ring */
    _Atomic uint64_t claim;   /* records being written (>= head) */
    uint64_t base;            /* cursor of record 0, random (feed_init) */
    _Atomic uint64_t expired; /* ATP_ECURSOR answers */
};

struct atp_store {
    struct atp_store_config cfg;
    uint32_t shard_bits;
    struct shard *shards;
    pthread_mutex_t create_lock; /* item and sku creation (capacity) */
    _Atomic uint64_t *slots;     /* every shard's indexes, one mapping */
    size_t slots_bytes;

    uint8_t *arena; /* items, see struct item */
    size_t arena_bytes;
    _Atomic size_t arena_used; /* written under create_lock */
    _Atomic uint32_t nitems;
    struct sku *skus;
    size_t skus_bytes;
    _Atomic uint32_t nskus;

    pthread_mutex_t loc_lock; /* location interning */
    struct location *locs;
    _Atomic uint32_t nlocs;
    _Atomic uint32_t *loc_slots; /* (tag << 16) | id+1 */
    uint32_t loc_mask;

    pthread_mutex_t ovr_lock; /* override insertion */
    struct override *ovr;
    uint32_t ovr_mask;
    _Atomic uint32_t novr;

    struct channel channels[ATP_MAX_CHANNELS];
    uint32_t nchannels;

    struct resv_state *resv;
    struct feed feed;
    atp_admit_fn admit; /* set before serving */
    void *admit_arg;
};

/* Journal hooks (include/atp/store.h): no cost without a journal. */
static inline uint64_t j_begin(const struct atp_store *s);
static inline void j_end(const struct atp_store *s, uint64_t pos, const struct atp_journal_rec *r);

static inline struct item *item_at(const struct atp_store *s, uint32_t ref)
{
    return (struct item *)(void *)(s->arena + (size_t)ref * ITEM_UNIT);
}

/*
 * Mark item `ref` changed for the feed. feed_mark_rmw: right after the
 * seq_cst read-modify-write of the item's word that was the change's last
 * write to what ATP is computed from. feed_mark: after any other change (it
 * adds such a read-modify-write, which changes nothing: a full barrier on
 * x86, where a fence would cost the same, and one ThreadSanitizer models).
 * F1/F2 in docs/ARCHITECTURE.md.
 */
static inline void feed_mark_rmw(struct atp_store *s, uint32_t ref)
{
    struct feed *f = &s->feed;
    _Atomic uint64_t *lw = &f->leaf[ref >> 6];
    uint64_t bit = UINT64_C(1) << (ref & 63);
    if (atomic_load_explicit(lw, memory_order_seq_cst) & bit)
        return;
    atomic_fetch_or_explicit(lw, bit, memory_order_seq_cst);
    _Atomic uint64_t *tw = &f->top[ref >> 12];
    uint64_t tbit = UINT64_C(1) << ((ref >> 6) & 63);
    if (!(atomic_load_explicit(tw, memory_order_seq_cst) & tbit))
        atomic_fetch_or_explicit(tw, tbit, memory_order_seq_cst);
}

static inline void feed_mark(struct atp_store *s, uint32_t ref)
{
    atomic_fetch_add_explicit(&item_at(s, ref)->word, 0, memory_order_seq_cst);
    feed_mark_rmw(s, ref);
}

/* What is allocated on an item: by events and by commits (two reads). */
static inline int64_t item_allocated(const struct item *it)
{
    return atomic_load_explicit(&it->ext_alloc, memory_order_relaxed) +
           atomic_load_explicit(&it->committed, memory_order_relaxed);
}

static inline uint32_t item_ref(const struct atp_store *s, const struct item *it)
{
    return (uint32_t)(((const uint8_t *)it - s->arena) / ITEM_UNIT);
}

static inline int store_item_ref_ok(const struct atp_store *s, uint32_t ref)
{
    return (size_t)ref * ITEM_UNIT < atomic_load_explicit(&s->arena_used, memory_order_relaxed);
}

/* store.c, used by resv.c */
int store_find_item(struct atp_store *s, struct atp_slice sku, struct atp_slice loc,
                    uint32_t *ret_idx);
int store_find_sku(struct atp_store *s, struct atp_slice sku, uint64_t h, uint32_t *ret_sku);
int64_t store_item_avail(struct atp_store *s, const struct item *it, uint32_t channel,
                         uint64_t *ret_word);
int store_channel_allows(const struct atp_store *s, uint32_t channel, uint16_t loc_id);
/*
 * A reservation line's hashes, worked out once by store_prefetch_line and
 * handed to store_take (which otherwise works them out itself). lid < 0:
 * not known (no location given, or the location was not interned yet).
 */
struct store_line_key {
    uint64_t h; /* XXH3 of the sku */
    int32_t lid;
};
void store_prefetch_line(struct atp_store *s, const struct atp_line_req *line,
                         struct store_line_key *ret_key);
int store_take(struct atp_store *s, const struct atp_line_req *line,
               const struct store_line_key *key, uint32_t channel, bool take, uint32_t *ret_idx,
               int64_t *ret_avail);
void store_give_back(struct atp_store *s, uint32_t idx, int64_t qty);
void store_commit_qty(struct atp_store *s, uint32_t idx, int64_t qty);
void store_restore_committed(struct atp_store *s, uint32_t idx, int64_t qty);
int64_t store_item_free(struct atp_store *s, uint32_t idx);
struct atp_slice store_item_sku(const struct atp_store *s, uint32_t idx);
struct atp_slice store_item_loc(const struct atp_store *s, uint32_t idx);
void store_force_take(struct atp_store *s, uint32_t idx, int64_t qty);
int store_item_ship(struct atp_store *s, uint32_t idx, int64_t qty,
                    const struct atp_journal_rec *jrec);
struct atp_slice store_loc_name(const struct atp_store *s, uint16_t loc_id);
void *store_map(size_t bytes);
void store_prefault(void *p, size_t bytes);
void store_unmap(void *p, size_t bytes);

/* feed.c, used by store.c */
int feed_init(struct atp_store *s);
void feed_fini(struct atp_store *s);
void feed_stats(struct atp_store *s, struct atp_store_stats *st);

/* resv.c, used by store.c */
int resv_init(struct atp_store *s);
void resv_fini(struct atp_store *s);
void resv_stats(struct atp_store *s, struct atp_store_stats *st);

static inline uint64_t j_begin(const struct atp_store *s)
{
    return s->cfg.journal ? s->cfg.journal->begin(s->cfg.journal->arg) : 0;
}

static inline void j_end(const struct atp_store *s, uint64_t pos, const struct atp_journal_rec *r)
{
    if (s->cfg.journal)
        s->cfg.journal->end(s->cfg.journal->arg, pos, r);
}

#endif /* ATP_STORE_INT_H */
