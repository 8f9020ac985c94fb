/*
 * atp/store.h - the in-memory available-to-promise store.
 *
 * The core of atpd. It knows items, channels, safety stock, reservations and
 * their expiry; it knows nothing about sockets, wire formats, Kafka or files.
 * Every edge (binary protocol, HTTP, Kafka ingest, durability) reaches it
 * through these calls.
 *
 * Concurrency contract (docs/ARCHITECTURE.md has the design and the proof
 * sketch of no-oversell):
 *   - every call is thread-safe;
 *   - reads (atp_store_get*, atp_store_reservation_get*) and reservation calls
 *     (reserve, commit, release, extend, expire) take no mutex and no spin
 *     lock: they are lock-free, so a stalled thread never blocks another;
 *   - event mutations (adjust, set, allocate, deallocate, safety, fulfill)
 *     and the creation of new items serialize per shard on a mutex that
 *     readers and reservations never touch.
 *
 * Time: calls that depend on time take `now_us`, microseconds since the Unix
 * epoch (atp_now_us() reads CLOCK_REALTIME). The store never reads a clock
 * itself, so tests drive time explicitly.
 *
 * Memory: the store copies every key in. Items, skus and locations are never
 * removed, so the slices the store hands out (sku and location names in
 * reservation lines) stay valid until atp_store_free(). Capacities are fixed
 * at creation; memory is reserved up front and touched as it is used.
 *
 * Errors: 0 on success, a negative code from atp/error.h on failure.
 * Out-parameters (ret_*) are written only on success unless a function says
 * otherwise.
 */
#ifndef ATP_STORE_H
#define ATP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atp/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits of the domain model (SPEC.md). */
#define ATP_SKU_MAX       64    /* bytes */
#define ATP_LOC_MAX       32    /* bytes */
#define ATP_CHANNEL_MAX   32    /* bytes of a channel name */
#define ATP_KEY_MAX       64    /* bytes of an idempotency key */
#define ATP_MAX_CHANNELS  32    /* channels per store */
#define ATP_MAX_LINES     32    /* lines per reservation */
#define ATP_MAX_LOCATIONS 65535 /* distinct locations per store */
/*
 * Quantities are int64 at every interface, but the store keeps an item's
 * free quantity (on_hand - allocated - reserved) packed with a version in one
 * 64-bit word so a reservation is a single compare-and-swap. Every item
 * quantity therefore stays within +-ATP_QTY_MAX (549,755,813,887 units);
 * a change that would leave it is refused with ATP_ERANGE.
 */
#define ATP_QTY_MAX ((int64_t)((1LL << 39) - 1))

/* A borrowed byte string: not NUL-terminated, valid for the call only. */
struct atp_slice {
    const char *p;
    uint32_t len;
};

#define ATP_SLICE(lit) ((struct atp_slice){(lit), (uint32_t)(sizeof(lit) - 1)})
struct atp_slice atp_slice_cstr(const char *s);

/* Channel configuration, given once at store creation. */
struct atp_channel_config {
    const char *name;             /* 1..ATP_CHANNEL_MAX bytes, sku charset */
    int64_t safety_units;         /* >= 0 */
    uint32_t safety_pct;          /* 0..100: percent of on_hand, rounded up; with
                                     safety_units too, the larger of the two applies */
    int64_t cap;                  /* < 0: no cap; else ATP never shows more */
    const char *const *locations; /* NULL: may sell from every location */
    uint32_t nlocations;          /* locations in priority order, first best */
};

struct atp_store_config {
    uint32_t max_items;             /* (sku, location) pairs; default 1M */
    uint32_t max_skus;              /* 0 (the default): same as max_items */
    uint32_t max_reservations;      /* records held at once; default 256k */
    uint32_t max_overrides;         /* safety overrides; default 64k */
    uint32_t nshards;               /* power of two; default 64 */
    uint64_t max_ttl_ms;            /* default 24 h */
    uint64_t idempotency_window_ms; /* how long finished reservations and
                                       their keys are kept; default 10 min */
    uint32_t feed_records;          /* change feed window in records, a power
                                       of two; default 1M (see below) */
    const struct atp_channel_config *channels;
    uint32_t nchannels;                /* 1..ATP_MAX_CHANNELS */
    const struct atp_journal *journal; /* NULL: no journal (see below) */
};

/*
 * The journal: how a write-ahead log sees every change, in an order that
 * replays to the same state. For each change the store calls begin() just
 * before the step that makes the change visible (for reservation state
 * changes: after reading the state the CAS expects, before the CAS; for item
 * writes: under the shard lock) and end() right after, with the record, or
 * with NULL if the step did not happen (a lost CAS). Any change that depends
 * on another therefore gets a later position. begin() returns the position;
 * both run on the thread making the change and must not block for long.
 */
enum atp_jtype {
    ATP_J_ADJUST = 1, /* sku, loc, qty = delta */
    ATP_J_SET,        /* sku, loc, qty = on_hand, seq */
    ATP_J_ALLOCATE,   /* sku, loc, qty */
    ATP_J_DEALLOCATE, /* sku, loc, qty */
    ATP_J_SAFETY,     /* sku, loc (len 0: sku-level), channel, qty = units (< 0 removes) */
    ATP_J_RESERVE,    /* res: the granted reservation, state held */
    ATP_J_COMMIT,     /* id, now_us */
    ATP_J_RELEASE,    /* id, now_us */
    ATP_J_EXTEND,     /* id, now_us, ttl_ms */
    ATP_J_EXPIRE,     /* id, now_us */
    ATP_J_FULFILL,    /* key, id, line */
    ATP_J_RECLAIM,    /* id, now_us: a finished reservation and its key dropped
                         after the idempotency window (its slot may be reused) */
};

struct atp_reservation;

struct atp_journal_rec {
    int type;                       /* enum atp_jtype */
    struct atp_slice sku, loc, key; /* borrowed for the call */
    int64_t qty;
    uint64_t seq;
    uint32_t channel;
    uint64_t id;
    uint64_t now_us;
    uint64_t ttl_ms;
    uint32_t line;
    const struct atp_reservation *res; /* ATP_J_RESERVE only */
};

struct atp_journal {
    uint64_t (*begin)(void *arg);
    void (*end)(void *arg, uint64_t pos, const struct atp_journal_rec *rec);
    void *arg;
};

/* Fill a config with the defaults above and no channels. */
void atp_store_config_defaults(struct atp_store_config *cfg);

struct atp_store;

/* Create a store. *ret_store is untouched on failure. */
int atp_store_new(const struct atp_store_config *cfg, struct atp_store **ret_store);
/* Destroy; NULL is fine. No call may be in flight. */
void atp_store_free(struct atp_store *store);

uint64_t atp_now_us(void);

/* Validation as SPEC.md states it; 0 or ATP_EINVAL_SKU / ATP_EINVAL_LOC. */
int atp_validate_sku(struct atp_slice sku);
int atp_validate_loc(struct atp_slice loc);

/* --- channels ----------------------------------------------------------- */

/* Channel id (0..nchannels-1) by name, or ATP_ENOCHANNEL. */
int atp_store_channel_find(const struct atp_store *store, struct atp_slice name, uint32_t *ret_id);
uint32_t atp_store_channel_count(const struct atp_store *store);
/* Name of a channel; the slice lives as long as the store. */
struct atp_slice atp_store_channel_name(const struct atp_store *store, uint32_t id);

/* --- reads -------------------------------------------------------------- */

struct atp_breakdown {
    int64_t on_hand;
    int64_t allocated;
    int64_t reserved;
    int64_t safety; /* safety stock that applies to this read */
    int64_t atp;    /* clamp(on_hand-allocated-reserved-safety, 0, cap) */
};

/*
 * ATP of one item (sku at loc) for a channel. An unknown item is
 * ATP_ENOTFOUND; a location the channel may not sell from reads as zero
 * available (the breakdown still shows the stock and the channel's safety). The breakdown's
 * counters are read one by one, so under concurrent change they are each current but not a single
 * snapshot; `atp` itself is computed from one atomic word.
 */
int atp_store_get(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                  uint32_t channel, struct atp_breakdown *ret);

/*
 * Network ATP of a sku for a channel: the sum of item ATP over the locations
 * the channel may sell from (counters summed likewise). ATP_ENOTFOUND if the
 * sku has no item at all.
 */
int atp_store_get_network(struct atp_store *store, struct atp_slice sku, uint32_t channel,
                          struct atp_breakdown *ret);

/* One key of a batched lookup (loc.len must be > 0: item ATP). */
struct atp_get_req {
    struct atp_slice sku;
    struct atp_slice loc;
    uint32_t channel;
};

/*
 * n item lookups at once, answered like atp_store_get: ret_rc[i] is its code
 * and ret[i] its breakdown when that code is 0. Faster than n single calls
 * because it prefetches every key's index slot and item before reading any.
 */
void atp_store_get_many(struct atp_store *store, const struct atp_get_req *reqs, uint32_t n,
                        struct atp_breakdown *ret, int *ret_rc);

/* --- change feed -------------------------------------------------------- */

/*
 * Which items' availability changed, for clients that follow availability
 * (a marketplace connector) instead of reading everything again. Every
 * change of an item's ATP (an event, a hold, a release, an expiry, a safety
 * override) marks the item; a feed call turns the marks into numbered
 * records, in the order it finds them, and answers with each changed item's
 * ATP *now* (level, not edge: many changes between two calls are one
 * record). A client:
 *   1. takes a cursor (atp_store_changes_cursor),
 *   2. reads everything it follows (batch lookups),
 *   3. asks atp_store_changes from that cursor, again and again, each time
 *      from the cursor the last call returned.
 * Every change is then either seen by the reads of step 2 (it was made
 * before step 1 returned) or reported by a call of step 3, with a value
 * read after it.
 *
 * Cursors are opaque, never 0, and belong to this store (this process): a
 * restart, or more than feed_records records since the cursor, makes it
 * ATP_ECURSOR, and the client starts again at step 1.
 */
#define ATP_CHANGES_MAX     1000 /* changes per call */
#define ATP_CHANGES_NETWORK 1u   /* one change per sku, with its network ATP */

struct atp_change {
    struct atp_slice sku; /* valid for the store's life */
    struct atp_slice loc; /* len 0 with ATP_CHANGES_NETWORK */
    int64_t atp;          /* for the channel asked, at the time of the call */
};

/* The feed's position now: changes from here on are reported after it. */
uint64_t atp_store_changes_cursor(struct atp_store *store);

/*
 * Up to max (1..ATP_CHANGES_MAX) changes after cursor `since`, for
 * `channel`: items at locations the channel may sell from (with
 * ATP_CHANGES_NETWORK: their skus, each with its network ATP), each at most
 * once per call. *ret_n is how many were written to ret, *ret_next the
 * cursor to ask from next, *ret_more whether records wait beyond it (ask
 * again at once). On error nothing is written.
 * Errors: ATP_ENOCHANNEL, ATP_EINVAL (max or flags), ATP_ECURSOR.
 */
int atp_store_changes(struct atp_store *store, uint32_t channel, uint64_t since, uint32_t flags,
                      uint32_t max, struct atp_change *ret, uint32_t *ret_n, uint64_t *ret_next,
                      bool *ret_more);

/* --- event mutations (Kafka ingest and admin calls) ---------------------- */

/* on_hand += delta (delta may be negative, not zero). Creates the item. */
int atp_store_adjust(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                     int64_t delta, int64_t *ret_on_hand);

/*
 * on_hand = on_hand_abs (>= 0), guarded by seq: applied only if seq is
 * greater than the last applied set's seq for the item (ATP_ESTALE
 * otherwise). seq 0 means unguarded (admin set): always applied, and it does
 * not move the item's sequence. Creates the item.
 */
int atp_store_set(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                  int64_t on_hand_abs, uint64_t seq);

/* Orders taken outside atpd: allocated += qty / allocated -= qty (qty > 0).
 * Both create the item, like every event. A deallocate takes only what
 * allocate events allocated: deallocating more than that (units of atpd's
 * commits included, which only their shipment takes) is ATP_ERANGE and
 * changes nothing. */
int atp_store_allocate(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                       int64_t qty);
int atp_store_deallocate(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                         int64_t qty);

/*
 * Safety-stock override for a channel, per sku (loc.len == 0) or per item.
 * units >= 0 sets it, units < 0 removes it. An item override wins over a sku
 * override, which wins over the channel's configured safety stock. An
 * item-level override creates the item (like every event); a sku-level one
 * needs the sku to exist (ATP_ENOTFOUND otherwise).
 */
int atp_store_set_safety(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                         uint32_t channel, int64_t units);

/* --- reservations ------------------------------------------------------- */

enum atp_res_state {
    ATP_RES_HELD = 1,
    ATP_RES_COMMITTED = 2,
    ATP_RES_FULFILLED = 3,
    ATP_RES_RELEASED = 4,
    ATP_RES_EXPIRED = 5,
};
const char *atp_res_state_name(int state);

struct atp_line_req {
    struct atp_slice sku;
    struct atp_slice loc; /* len 0: "any" location */
    int64_t qty;          /* > 0 */
};

struct atp_reserve_req {
    struct atp_slice key; /* idempotency key: 1..ATP_KEY_MAX bytes of 0x21..0x7e
                             (printable ASCII, no space) */
    uint32_t channel;
    uint64_t ttl_ms; /* 1..max_ttl_ms */
    const struct atp_line_req *lines;
    uint32_t nlines; /* 1..ATP_MAX_LINES */
};

/* One line of a reservation. sku and loc live as long as the store. */
struct atp_res_line {
    struct atp_slice sku;
    struct atp_slice loc; /* the chosen location for "any" lines */
    int64_t qty;
    bool fulfilled;
    bool any; /* the request asked for "any" location */
};

/* A copy of a reservation, owned by the caller. */
struct atp_reservation {
    uint64_t id; /* never 0 */
    int state;   /* enum atp_res_state */
    uint32_t channel;
    uint64_t created_us;
    uint64_t expires_us; /* held/expired: now + ttl, rounded up to the ms */
    uint64_t ttl_ms;
    char key[ATP_KEY_MAX];
    uint32_t key_len;
    uint32_t nlines;
    struct atp_res_line lines[ATP_MAX_LINES];
};

/* Why a reserve was refused, per requested line. */
struct atp_shortfall {
    int64_t requested;
    int64_t available; /* ATP seen for the line (best location for "any") */
};

/*
 * Reserve every line or none, for ttl_ms from now_us.
 *  0               created; *ret copied out.
 *  0, *ret_replayed a reservation with this key and the same content exists
 *                  (in any state): *ret is that reservation.
 *  ATP_ECONFLICT   the key exists with different content.
 *  ATP_EINSUFFICIENT  some line cannot be satisfied; ret_short (may be NULL,
 *                  else nlines entries) is filled for every line.
 *  ATP_EFULL       no free reservation record.
 * Validation errors as in error.h. "Any" lines pick the first location in the
 * channel's priority order that can satisfy the whole line, or for channels
 * without a list the location with most ATP; lines are never split.
 * "Same content" means the same channel, TTL and lines (sku, location or
 * "any", qty, in order); anything else under the key is ATP_ECONFLICT. A line
 * on an item that does not exist is ATP_EINSUFFICIENT with 0 available. On
 * ATP_EINSUFFICIENT the lines after the first short one report what was
 * available with the earlier lines still taken (they are all given back
 * before the call returns). A hold with a very short TTL may come back
 * already expired if the caller was descheduled past its deadline.
 */
int atp_store_reserve(struct atp_store *store, const struct atp_reserve_req *req, uint64_t now_us,
                      struct atp_reservation *ret, bool *ret_replayed,
                      struct atp_shortfall *ret_short);

/*
 * Admission: every item a reservation would hold must pass `fn` (called with
 * the chosen item's sku and location after the stock is taken); a non-zero
 * answer refuses the whole reservation with that code and gives everything
 * back. The Kafka ingest uses it to refuse items whose event stream has a
 * gap (ATP_EUNAVAILABLE). Set it before the store serves anyone; `fn` must be
 * lock-free and fast. NULL removes it.
 */
typedef int (*atp_admit_fn)(void *arg, struct atp_slice sku, struct atp_slice loc);
void atp_store_set_admit(struct atp_store *store, atp_admit_fn fn, void *arg);

/*
 * Held -> committed: reserved moves to allocated and the TTL no longer
 * applies. Committing a committed (or already fulfilled) reservation is a
 * no-op success (retries are safe). ATP_EEXPIRED if its TTL has passed (it is expired on the spot),
 * ATP_ESTATE if released, ATP_ENOTFOUND for an unknown id. ATP_EINSUFFICIENT
 * if a line's item no longer has the units: on_hand - allocated - reserved <
 * 0 (a set or adjust took on_hand below what is held and allocated on it
 * since the hold); a commit leaves that as it is, so committing then would
 * promise what is not there. Safety stock is not looked at again (the hold
 * was granted within it). The hold stays held (release it, or commit again
 * once stock is back). *ret (may be NULL) receives the reservation after a
 * successful call.
 */
int atp_store_commit(struct atp_store *store, uint64_t id, uint64_t now_us,
                     struct atp_reservation *ret);

/*
 * Held -> released: the stock returns. Releasing a released reservation is
 * ATP_ESTATE (so a double release is visible), as is releasing a committed
 * one. ATP_EEXPIRED if it already expired.
 */
int atp_store_release(struct atp_store *store, uint64_t id, uint64_t now_us,
                      struct atp_reservation *ret);

/* Held: expires_at = now + ttl_ms. ATP_EEXPIRED / ATP_ESTATE otherwise. */
int atp_store_extend(struct atp_store *store, uint64_t id, uint64_t ttl_ms, uint64_t now_us,
                     struct atp_reservation *ret);

/* Look up by id or by idempotency key. */
int atp_store_reservation_get(struct atp_store *store, uint64_t id, struct atp_reservation *ret);
int atp_store_reservation_find(struct atp_store *store, struct atp_slice key,
                               struct atp_reservation *ret);

/*
 * Shipment of one committed line (0-based) of the reservation with this key:
 * allocated and on_hand both drop by the line's qty. Once every line is
 * fulfilled the reservation is fulfilled. ATP_ESTATE if not committed or the
 * line is already fulfilled; ATP_EINVAL for a line number out of range.
 */
int atp_store_fulfill(struct atp_store *store, struct atp_slice key, uint32_t line,
                      struct atp_reservation *ret);

/*
 * Expiry: release every held reservation whose expires_at <= now_us, and
 * reclaim finished reservations older than the idempotency window. Returns
 * the number expired. Call it often (every millisecond) from one thread, or
 * use the store's own expirer thread below. Safe to call concurrently with
 * everything, but only one caller at a time does work (others return 0).
 */
int atp_store_expire(struct atp_store *store, uint64_t now_us);

/*
 * Run atp_store_expire on a thread of the store's own: at each expiry's due
 * time, and every `tick_us` (default 1000) while reservations arrive or
 * bounded background work is left over; otherwise it sleeps up to 100 ms.
 * A reserve or extend that is due before its planned wake-up wakes it.
 */
int atp_store_start_expirer(struct atp_store *store, uint32_t tick_us);
void atp_store_stop_expirer(struct atp_store *store);

/* --- statistics --------------------------------------------------------- */

#define ATP_LATENESS_BUCKETS 16 /* upper bounds 2^k * 64 us, k = 0..14, then +inf */

struct atp_store_stats {
    uint64_t items;
    uint64_t skus;
    uint64_t locations; /* interned, including those named by channels */
    uint64_t overrides;
    uint64_t reservations_live; /* held + committed */
    uint64_t reservations_held;
    uint64_t reservations_committed;
    uint64_t reserves_granted;  /* counters since start */
    uint64_t reserves_rejected; /* refused for insufficient stock */
    uint64_t reserves_replayed;
    uint64_t commits;
    uint64_t releases;
    uint64_t expirations;
    uint64_t fulfillments;
    uint64_t lateness_max_us; /* worst expiry lateness seen */
    uint64_t lateness_sum_us;
    uint64_t lateness_buckets[ATP_LATENESS_BUCKETS];
    uint64_t expirer_wakeups; /* times the store's expirer thread woke */
    uint64_t feed_records;    /* change-feed records written since start */
    uint64_t feed_expired;    /* feed calls refused: ATP_ECURSOR */
    size_t bytes_reserved;    /* address space set aside */
};

void atp_store_stats(struct atp_store *store, struct atp_store_stats *ret);

/* --- iteration (snapshots, debugging) ----------------------------------- */

struct atp_item_view {
    struct atp_slice sku;
    struct atp_slice loc;
    int64_t on_hand;
    int64_t allocated;
    int64_t reserved;
    uint64_t set_seq;
};

/*
 * Visit every item. Not a point-in-time snapshot under concurrent writes.
 * Stops and returns fn's value as soon as fn returns non-zero.
 */
int atp_store_foreach_item(struct atp_store *store,
                           int (*fn)(const struct atp_item_view *item, void *arg), void *arg);

/* --- recovery (durability) ---------------------------------------------- */

/*
 * These calls rebuild a store from a snapshot and a write-ahead log. They are
 * meant for one thread before the store serves anyone; they skip the
 * availability checks (what they restore was granted before).
 */

/* Visit every safety override (loc.len == 0 for sku-level ones). */
int atp_store_foreach_override(struct atp_store *store,
                               int (*fn)(struct atp_slice sku, struct atp_slice loc,
                                         uint32_t channel, int64_t units, void *arg),
                               void *arg);

/*
 * Visit every reservation still known: held, committed, and finished ones
 * still inside the idempotency window (their keys must keep answering).
 */
int atp_store_foreach_reservation(struct atp_store *store,
                                  int (*fn)(const struct atp_reservation *r, void *arg), void *arg);

/* Put an item back: on_hand, allocated and its set sequence. Reserved comes
 * from the held reservations restored afterwards. ATP_ERANGE for a quantity
 * out of range or a negative allocated (which no store call can make). */
int atp_store_restore_item(struct atp_store *store, struct atp_slice sku, struct atp_slice loc,
                           int64_t on_hand, int64_t allocated, uint64_t set_seq);

/*
 * Put a reservation back with its id, key, state, times and lines (each line's
 * loc is the location that was chosen; `any` says what was asked). A held one
 * takes its stock again. ATP_EINVAL if the id's slot is taken or out of range.
 */
int atp_store_restore_reservation(struct atp_store *store, const struct atp_reservation *r);

/* Commit as atp_store_commit, without its availability check (replay of a
 * logged commit: it was granted when it was logged). */
int atp_store_commit_logged(struct atp_store *store, uint64_t id, uint64_t now_us);

/* Expire one held reservation now (replay of a logged expiry). */
int atp_store_expire_id(struct atp_store *store, uint64_t id, uint64_t now_us);

/*
 * Drop a finished (released, expired, fulfilled) reservation and its key, as
 * the reaper does after the idempotency window (replay of ATP_J_RECLAIM), so
 * its slot and key may be restored again. ATP_ESTATE if it is held or
 * committed, ATP_ENOTFOUND for an unknown id.
 */
int atp_store_forget_reservation(struct atp_store *store, uint64_t id);

/*
 * After the last restore call: rebuild the free record list, and the expiry
 * inbox and retire list from every record's state (replay may have finished,
 * forgotten and reused records after they were queued).
 */
void atp_store_restore_done(struct atp_store *store);

#ifdef __cplusplus
}
#endif

#endif /* ATP_STORE_H */
