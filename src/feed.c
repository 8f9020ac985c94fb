/*
 * feed.c - the change feed: which items' availability changed since a
 * cursor (include/atp/store.h says what a client sees).
 *
 * Writers mark items in two bitmaps (feed_mark in store_int.h); a feed call
 * scans the marks into a ring of numbered records under the feed lock, then
 * reads the records after the client's cursor and the items' ATP without
 * it. Record numbers only grow; the ring keeps the last feed_records of
 * them, and a cursor older than that is refused rather than answered with
 * gaps. Nothing here runs unless a client asks: with no feed client the
 * marks just stay set, and a writer's cost is one load.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "store_int.h"

/* Records one call looks at, at most (skipped ones included: items at
 * locations the channel does not sell from, repeats within the call). */
#define EXAMINE_MAX 16384

int feed_init(struct atp_store *s)
{
    struct feed *f = &s->feed;
    /* A bit per 8-byte arena unit (refs are in those units). */
    size_t units = s->arena_bytes / ITEM_UNIT;
    f->leaf_words = (units + 63) / 64;
    f->top_words = (f->leaf_words + 63) / 64;
    f->mask = (uint64_t)s->cfg.feed_records - 1;
    f->leaf = store_map(f->leaf_words * sizeof(uint64_t));
    f->top = store_map(f->top_words * sizeof(uint64_t));
    f->ring = store_map((f->mask + 1) * sizeof(uint32_t));
    if (!f->leaf || !f->top || !f->ring)
        return -ENOMEM;
    pthread_mutex_init(&f->lock, NULL);
    /*
     * A cursor is `base` plus a record number. base is random in [2^62,
     * 2^63) for each store, so cursors are never 0, never wrap, and one
     * kept from another instance or from before a restart falls inside
     * this store's window (feed_records of 2^62 values) with a chance of
     * 2^-32 at most: it is refused instead of read against other numbers.
     */
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r = ((uint64_t)ts.tv_sec * 1000000007u) ^ ((uint64_t)ts.tv_nsec << 20) ^ (uintptr_t)s;
    }
    f->base = (UINT64_C(1) << 62) | (r & ((UINT64_C(1) << 62) - 1));
    return 0;
}

void feed_fini(struct atp_store *s)
{
    struct feed *f = &s->feed;
    if (!f->leaf && !f->top && !f->ring)
        return;
    store_unmap(f->leaf, f->leaf_words * sizeof(uint64_t));
    store_unmap(f->top, f->top_words * sizeof(uint64_t));
    store_unmap(f->ring, (f->mask + 1) * sizeof(uint32_t));
    if (f->leaf && f->top && f->ring)
        pthread_mutex_destroy(&f->lock);
}

/*
 * Turn every mark into a record. F2: the exchanges are seq_cst, so the
 * caller's later seq_cst reads of item words (store_item_avail) come after
 * them in the single total order (see ARCHITECTURE.md). Returns the record
 * count after the scan.
 */
static uint64_t feed_scan(struct atp_store *s)
{
    struct feed *f = &s->feed;
    pthread_mutex_lock(&f->lock);
    uint64_t head = atomic_load_explicit(&f->head, memory_order_relaxed);
    /* Words past the arena's used part have no items, so no marks. */
    size_t used = atomic_load_explicit(&s->arena_used, memory_order_acquire) / ITEM_UNIT;
    size_t tw_n = (used + 4095) / 4096;
    for (size_t t = 0; t < tw_n; t++) {
        if (!atomic_load_explicit(&f->top[t], memory_order_relaxed))
            continue;
        uint64_t tbits = atomic_exchange_explicit(&f->top[t], 0, memory_order_seq_cst);
        while (tbits) {
            size_t lw = t * 64 + (size_t)__builtin_ctzll(tbits);
            tbits &= tbits - 1;
            uint64_t bits = atomic_exchange_explicit(&f->leaf[lw], 0, memory_order_seq_cst);
            while (bits) {
                uint32_t ref = (uint32_t)(lw * 64 + (size_t)__builtin_ctzll(bits));
                bits &= bits - 1;
                /* Claim the record before overwriting the slot of record
                 * head - ring size: a reader that reads the new ref
                 * (acquire) reads the claim too (release store of the
                 * slot, after the claim). */
                atomic_store_explicit(&f->claim, head + 1, memory_order_relaxed);
                atomic_store_explicit(&f->ring[head & f->mask], ref, memory_order_release);
                head++;
            }
        }
    }
    /* R-F: release, pairs with the acquire loads of head in feed calls. */
    atomic_store_explicit(&f->head, head, memory_order_release);
    pthread_mutex_unlock(&f->lock);
    return head;
}

/*
 * Scan first, so that what changed before the call is behind the cursor
 * (a client that reads everything next sees it there) and not reported
 * again after it. A change the scan took has its record behind the cursor,
 * but it came before the scan's exchange in the total order S, so every
 * lookup after the call returns (a seq_cst load of the word, A6) reads it;
 * a change the scan did not take is recorded after the cursor (F2).
 */
uint64_t atp_store_changes_cursor(struct atp_store *s)
{
    return s->feed.base + feed_scan(s);
}

/* A small set of refs (or sku records) already answered in this call. */
#define SEEN_SLOTS 2048 /* a power of two >= 2 * ATP_CHANGES_MAX */

static bool seen_add(uint32_t *seen, uint32_t v)
{
    uint32_t k = v + 1; /* 0 marks an empty slot */
    for (uint32_t i = (k * 2654435761u) & (SEEN_SLOTS - 1);; i = (i + 1) & (SEEN_SLOTS - 1)) {
        if (seen[i] == k)
            return false;
        if (seen[i] == 0) {
            seen[i] = k;
            return true;
        }
    }
}

/* Network ATP of the sku of item `it`, as a lookup answers it. */
static int64_t network_atp(struct atp_store *s, const struct item *it, uint32_t channel)
{
    struct atp_breakdown b;
    if (atp_store_get_network(s, (struct atp_slice){it->sku, it->sku_len}, channel, &b) != 0)
        return 0; /* not reached: the sku has this item */
    return b.atp;
}

int atp_store_changes(struct atp_store *s, uint32_t channel, uint64_t since, uint32_t flags,
                      uint32_t max, struct atp_change *ret, uint32_t *ret_n, uint64_t *ret_next,
                      bool *ret_more)
{
    struct feed *f = &s->feed;
    if (channel >= s->nchannels)
        return ATP_ENOCHANNEL;
    if (max == 0 || max > ATP_CHANGES_MAX || (flags & ~ATP_CHANGES_NETWORK))
        return ATP_EINVAL;
    uint64_t head = feed_scan(s);
    /* How far back the cursor is; a cursor from elsewhere or from the
     * future is far beyond the window (unsigned arithmetic), and none is
     * further back than record 0. */
    uint64_t back = f->base + head - since;
    if (back > f->mask + 1 || back > head) {
        atomic_fetch_add_explicit(&f->expired, 1, memory_order_relaxed);
        return ATP_ECURSOR;
    }
    uint64_t seq = head - back;
    /* The records first (refs only), then the check that they were not
     * overwritten meanwhile, then the answers: nothing is written to ret
     * for an answer that turns out to be refused. */
    uint32_t seen[SEEN_SLOTS], refs[ATP_CHANGES_MAX];
    memset(seen, 0, sizeof(seen));
    bool network = flags & ATP_CHANGES_NETWORK;
    uint32_t n = 0;
    uint64_t end = back > EXAMINE_MAX ? seq + EXAMINE_MAX : head;
    uint64_t at = seq;
    for (; at < end; at++) {
        uint32_t ref = atomic_load_explicit(&f->ring[at & f->mask], memory_order_acquire);
        const struct item *it = item_at(s, ref);
        if (!store_channel_allows(s, channel, it->loc_id))
            continue;
        if (!seen_add(seen, network ? it->sku_idx : ref))
            continue;
        if (n == max)
            break; /* a new one that does not fit: the next call's first */
        refs[n++] = ref;
    }
    /*
     * The records read may have been overwritten by a scan running
     * meanwhile if the ring went round past `seq`: then they are not the
     * ones the cursor stood for. Checked after reading, as a seqlock does.
     */
    uint64_t claim = atomic_load_explicit(&f->claim, memory_order_relaxed);
    if (claim - seq > f->mask + 1) {
        atomic_fetch_add_explicit(&f->expired, 1, memory_order_relaxed);
        return ATP_ECURSOR;
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct item *it = item_at(s, refs[i]);
        uint64_t w;
        ret[i] = (struct atp_change){
            .sku = {it->sku, it->sku_len},
            .loc = network ? (struct atp_slice){"", 0} : store_loc_name(s, it->loc_id),
            .atp = network ? network_atp(s, it, channel) : store_item_avail(s, it, channel, &w),
        };
    }
    *ret_n = n;
    *ret_next = f->base + at;
    *ret_more = at < atomic_load_explicit(&f->head, memory_order_acquire);
    return 0;
}

void feed_stats(struct atp_store *s, struct atp_store_stats *st)
{
    st->feed_records = atomic_load_explicit(&s->feed.head, memory_order_relaxed);
    st->feed_expired = atomic_load_explicit(&s->feed.expired, memory_order_relaxed);
}
