/*
 * test_stress.c - concurrent reservations against concurrent events (suite
 * `stress`).
 *
 * Eight worker threads reserve (one or two lines, explicit or "any"
 * location, three channels with different safety stock), then commit,
 * release, extend or abandon their reservations on a handful of hot items,
 * while an event thread applies adjusts, guarded sets (including stale ones
 * that must be refused) and fulfills the committed reservations, a reader
 * thread checks reads, and the store's own expirer expires abandoned holds.
 *
 * Every thread keeps its own audit log (plain arrays, no locks): grants with
 * the wall-clock interval of the reserve call, how each reservation ended
 * (release call start, deadline, fulfill start), and every on_hand change with
 * its interval. The event thread is the only writer of on_hand, so after the
 * run the largest on_hand that can have been current during any grant is
 * known exactly, and so is a lower bound of what other reservations held at
 * that moment (those granted before the call began and not ended before it
 * returned). The no-oversell invariant of SPEC.md is then checked for every
 * grant:  held_before + qty <= on_hand - safety(on_hand).
 *
 * During the run: ATP and the reserved and allocated counters are never
 * negative, ATP never exceeds the largest on_hand ever set, replays return the
 * same reservation, and a refused reserve reports a short line. After the
 * run (quiescent): per item, reserved equals the sum of held reservations and
 * allocated the sum of committed, unshipped ones; on_hand equals the event
 * thread's value; the statistics agree with the audit; expiring everything
 * brings reserved back to zero.
 *
 * A feed thread follows the change feed the way a marketplace connector
 * does: a mirror of every item's ATP for the "pct" channel (its safety stock
 * moves with on_hand) and of every sku's network ATP for "app", built once
 * from lookups and then kept only from the changes it is told about. Every
 * value it is told is checked like a read; once the run is over, and again
 * after the last expiry, both mirrors must equal the store exactly. A
 * change the feed failed to report (a mark lost to a concurrent scan) leaves
 * a mirror stale. A third follower ("web") reads one change now and then on
 * a ring of FEED_RING records, so the others' scans overtake it: it must be
 * told ATP_ECURSOR (never records of other numbers) and start again, and
 * its mirror too must equal the store at the end.
 *
 * ATP_STRESS_SECONDS (default 3) bounds the run; ATP_STRESS_SEED fixes the
 * seed (printed at start).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include <cmocka.h>

#include "atp/store.h"

#define NWORKERS   8
#define NSKUS      4
#define NLOCS      2
#define NITEMS     (NSKUS * NLOCS)
#define NCH        3
#define OPEN_MAX   8
#define GRANTS_MAX 150000 /* per worker */
#define EVENTS_MAX 1000000
#define FRING      1024 /* committed reservations handed to the event thread, per worker */
#define WINDOW_MS  1000

static const char *const skus[NSKUS] = {"HOT-0", "HOT-1", "HOT-2", "HOT-3"};
static const char *const locs[NLOCS] = {"A", "B"};
static const struct atp_channel_config chans[NCH] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 3, .cap = -1},
    {.name = "pct", .safety_pct = 20, .cap = -1},
};

static struct atp_slice S(const char *s) {
    return atp_slice_cstr(s);
}

static int64_t
safety_of(uint32_t ch, int64_t on_hand)
{
    int64_t p = 0;
    if (chans[ch].safety_pct && on_hand > 0)
        p = (on_hand * chans[ch].safety_pct + 99) / 100;
    return p > chans[ch].safety_units ? p : chans[ch].safety_units;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* --- audit records ------------------------------------------------------------ */

enum fate { F_OPEN, F_RELEASED, F_EXPIRED, F_COMMITTED, F_ABANDONED };

struct grant {
    uint64_t id;
    uint64_t gs, ge;  /* reserve call interval (us, CLOCK_REALTIME) */
    uint64_t expires; /* latest deadline the store gave */
    uint64_t end[2];  /* per line: lower bound of when it stopped holding stock */
    uint8_t nlines, ch, fate;
    uint8_t item[2];
    uint8_t qty[2];
};

struct fentry { /* a committed reservation for the event thread to ship */
    uint32_t gidx;
    uint8_t nlines;
    uint8_t item[2];
    uint8_t qty[2];
};

struct worker {
    pthread_t th;
    int idx;
    uint64_t seed;
    struct grant *g;
    uint32_t ng;
    uint32_t open[OPEN_MAX];
    uint32_t nopen;
    /* SPSC ring to the event thread */
    struct fentry ring[FRING];
    _Atomic uint32_t ring_head; /* written by the event thread */
    _Atomic uint32_t ring_tail; /* written by the worker */
    /* counters */
    uint64_t commits, releases, extends, rejected, full, replays, expired_seen;
    uint64_t commits_refused; /* ATP_EINSUFFICIENT: stock fell below the holds */
    char err[256];
};

struct event { /* one on_hand change */
    uint64_t ts, te;
    int64_t after;
    uint8_t item;
};

struct fulfilled {
    uint64_t fs;
    uint32_t gidx;
    uint8_t worker, line;
};

static struct atp_store *store;
static struct worker workers[NWORKERS];
static _Atomic int stop_flag;
static _Atomic int workers_done;
static _Atomic int64_t max_on_hand_ever;
static uint64_t run_seconds = 3;

static struct event *events;
static uint32_t nevents;
static struct fulfilled *flog;
static uint32_t nflog;
static int64_t final_on_hand[NITEMS];
static uint64_t ev_fulfillments, ev_stale_refused;
static char ev_err[256];
static char rd_err[256];
static uint64_t rd_reads;
static char fd_err[256];
static uint64_t fd_calls, fd_changes;

#define ITEM_SKU(i) skus[(i) / NLOCS]
#define ITEM_LOC(i) locs[(i) % NLOCS]

static int item_of(struct atp_slice sku, struct atp_slice loc)
{
    for (int i = 0; i < NITEMS; i++)
        if (sku.len == strlen(ITEM_SKU(i)) && memcmp(sku.p, ITEM_SKU(i), sku.len) == 0 &&
            loc.len == strlen(ITEM_LOC(i)) && memcmp(loc.p, ITEM_LOC(i), loc.len) == 0)
            return i;
    return -1;
}

static void set_err(char *buf, const char *fmt, ...)
{
    if (buf[0])
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, 256, fmt, ap);
    va_end(ap);
}

static void key_of(char *buf, size_t n, int w, uint32_t gidx)
{
    snprintf(buf, n, "w%d-%u", w, gidx);
}

/* --- worker ------------------------------------------------------------------------ */

static void close_open(struct worker *w, uint32_t slot)
{
    w->open[slot] = w->open[--w->nopen];
}

static void act(struct worker *w)
{
    uint32_t slot = (uint32_t)(splitmix(&w->seed) % w->nopen);
    struct grant *g = &w->g[w->open[slot]];
    uint32_t r = (uint32_t)(splitmix(&w->seed) % 100);
    struct atp_reservation res;
    uint64_t now = atp_now_us();
    if (splitmix(&w->seed) % 100 < 25) {
        /*
         * Race the deadline: wait until the reservation closest to its
         * deadline is due, then commit or release it with a clock reading
         * from just before the deadline (as a thread preempted between
         * reading the clock and calling would), while other workers and the
         * expirer are expiring it. Either outcome is fine; both at once
         * (stock given back twice, or expired after commit) is the bug.
         */
        for (uint32_t i = 0; i < w->nopen; i++)
            if (w->g[w->open[i]].expires < w->g[w->open[slot]].expires)
                slot = i;
        g = &w->g[w->open[slot]];
        if (g->expires > now && g->expires - now <= 2000) {
            while (atp_now_us() < g->expires)
                ;
            now = g->expires - 1 - splitmix(&w->seed) % 3;
            r = r < 40 ? 0 : 50; /* commit or release, below */
        }
    }
    if (r < 30) {
        int rc = atp_store_commit(store, g->id, now, &res);
        if (rc == 0) {
            if (res.state != ATP_RES_COMMITTED)
                set_err(w->err, "commit returned state %d", res.state);
            g->fate = F_COMMITTED;
            g->end[0] = g->end[1] = UINT64_MAX;
            w->commits++;
            uint32_t tail = atomic_load_explicit(&w->ring_tail, memory_order_relaxed);
            /* A1: pairs with R2 in the event thread (slot free again) */
            uint32_t head = atomic_load_explicit(&w->ring_head, memory_order_acquire);
            if (tail - head < FRING) {
                struct fentry *f = &w->ring[tail % FRING];
                f->gidx = w->open[slot];
                f->nlines = g->nlines;
                memcpy(f->item, g->item, 2);
                memcpy(f->qty, g->qty, 2);
                /* R1: publishes the entry; pairs with A2 in the event thread */
                atomic_store_explicit(&w->ring_tail, tail + 1, memory_order_release);
            }
        } else if (rc == ATP_EEXPIRED) {
            g->fate = F_EXPIRED;
            g->end[0] = g->end[1] = g->expires;
            w->expired_seen++;
        } else if (rc == ATP_EINSUFFICIENT) {
            /* The event thread took the stock below what is held: the
             * commit is refused and the hold stays held (it is released,
             * committed or expires later, like any open one). */
            w->commits_refused++;
            return;
        } else {
            set_err(w->err, "commit of %llu: %s", (unsigned long long)g->id, atp_error_name(rc));
        }
        close_open(w, slot);
    } else if (r < 75) {
        int rc = atp_store_release(store, g->id, now, &res);
        if (rc == 0) {
            g->fate = F_RELEASED;
            g->end[0] = g->end[1] = now;
            w->releases++;
        } else if (rc == ATP_EEXPIRED) {
            g->fate = F_EXPIRED;
            g->end[0] = g->end[1] = g->expires;
            w->expired_seen++;
        } else {
            set_err(w->err, "release of %llu: %s", (unsigned long long)g->id, atp_error_name(rc));
        }
        close_open(w, slot);
    } else if (r < 88) {
        uint64_t ttl = 1 + splitmix(&w->seed) % 20;
        int rc = atp_store_extend(store, g->id, ttl, now, &res);
        if (rc == 0) {
            if (res.expires_us < now + ttl * 1000)
                set_err(w->err, "extend gave a deadline before now + ttl");
            g->expires = res.expires_us;
            w->extends++;
        } else if (rc == ATP_EEXPIRED) {
            g->fate = F_EXPIRED;
            g->end[0] = g->end[1] = g->expires;
            w->expired_seen++;
            close_open(w, slot);
        } else {
            set_err(w->err, "extend of %llu: %s", (unsigned long long)g->id, atp_error_name(rc));
            close_open(w, slot);
        }
    } else {
        g->fate = F_ABANDONED; /* the expirer's job now */
        g->end[0] = g->end[1] = g->expires;
        close_open(w, slot);
    }
}

static void reserve_one(struct worker *w)
{
    uint32_t gidx = w->ng;
    struct grant *g = &w->g[gidx];
    char key[32];
    key_of(key, sizeof(key), w->idx, gidx);
    struct atp_line_req lines[2];
    uint32_t n = splitmix(&w->seed) % 100 < 70 ? 1 : 2;
    uint32_t s0 = (uint32_t)(splitmix(&w->seed) % NSKUS);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t sk = (s0 + i) % NSKUS; /* distinct skus: lines never share an item */
        uint32_t r = (uint32_t)(splitmix(&w->seed) % 100);
        lines[i].sku = S(skus[sk]);
        lines[i].loc = r < 20 ? (struct atp_slice){"", 0} : S(locs[r % NLOCS]);
        lines[i].qty = 1 + (int64_t)(splitmix(&w->seed) % 3);
    }
    uint32_t ch = (uint32_t)(splitmix(&w->seed) % NCH);
    uint64_t ttl = 1 + splitmix(&w->seed) % 20;
    struct atp_reserve_req req = {S(key), ch, ttl, lines, n};
    struct atp_reservation res;
    bool rp = true;
    struct atp_shortfall sh[2];
    uint64_t gs = atp_now_us();
    int rc = atp_store_reserve(store, &req, gs, &res, &rp, sh);
    uint64_t ge = atp_now_us();
    if (rc == ATP_EINSUFFICIENT) {
        int short_line = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (sh[i].requested != lines[i].qty || sh[i].available < 0)
                set_err(w->err, "bad shortfall line %u", i);
            short_line |= sh[i].available < sh[i].requested;
        }
        if (!short_line)
            set_err(w->err, "insufficient, but every line had enough");
        w->rejected++;
        return;
    }
    if (rc == ATP_EFULL) {
        w->full++;
        sched_yield();
        return;
    }
    if (rc != 0) {
        set_err(w->err, "reserve: %s", atp_error_name(rc));
        return;
    }
    /* the copy is taken after the grant: a 1 ms hold may already have expired */
    if (rp || res.id == 0 || res.nlines != n ||
        (res.state != ATP_RES_HELD && res.state != ATP_RES_EXPIRED)) {
        set_err(w->err, "fresh reserve: replayed %d id %llu nlines %u state %d", rp,
                (unsigned long long)res.id, res.nlines, res.state);
        return;
    }
    memset(g, 0, sizeof(*g));
    g->id = res.id;
    g->gs = gs;
    g->ge = ge;
    g->expires = res.expires_us;
    g->nlines = (uint8_t)n;
    g->ch = (uint8_t)ch;
    g->fate = F_OPEN;
    g->end[0] = g->end[1] = UINT64_MAX;
    for (uint32_t i = 0; i < n; i++) {
        int it = item_of(res.lines[i].sku, res.lines[i].loc);
        if (it < 0 || res.lines[i].qty != lines[i].qty) {
            set_err(w->err, "reservation line %u names an unknown item", i);
            return;
        }
        g->item[i] = (uint8_t)it;
        g->qty[i] = (uint8_t)lines[i].qty;
    }
    w->ng++;
    if (res.state == ATP_RES_EXPIRED) {
        g->fate = F_EXPIRED;
        g->end[0] = g->end[1] = g->expires;
        w->expired_seen++;
        return;
    }
    w->open[w->nopen++] = gidx;
    /* sometimes retry the same request at once: the same reservation comes back */
    if (splitmix(&w->seed) % 100 < 5 && atp_now_us() - ge < WINDOW_MS * 1000 / 4) {
        struct atp_reservation again;
        bool rp2 = false;
        rc = atp_store_reserve(store, &req, atp_now_us(), &again, &rp2, NULL);
        if (rc != 0 || !rp2 || again.id != res.id)
            set_err(w->err, "replay of %s: %s replayed %d id %llu vs %llu", key, atp_error_name(rc),
                    rp2, (unsigned long long)again.id, (unsigned long long)res.id);
        w->replays++;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) && !w->err[0]) {
        int can_reserve = w->ng < GRANTS_MAX && w->nopen < OPEN_MAX;
        if (!can_reserve && w->nopen == 0)
            break; /* audit log full */
        uint32_t r = (uint32_t)(splitmix(&w->seed) % 100);
        if (r < 3)
            atp_store_expire(store, atp_now_us()); /* any thread may drive expiry */
        else if (w->nopen && (!can_reserve || r < 50))
            act(w);
        else
            reserve_one(w);
    }
    /* what is still open stays held until its deadline */
    for (uint32_t i = 0; i < w->nopen; i++) {
        struct grant *g = &w->g[w->open[i]];
        g->fate = F_ABANDONED;
        g->end[0] = g->end[1] = g->expires;
    }
    w->nopen = 0;
    atomic_fetch_add(&workers_done, 1);
    return NULL;
}

/* --- event thread ---------------------------------------------------------------------- */

static void log_event(int item, uint64_t ts, uint64_t te, int64_t after)
{
    if (nevents < EVENTS_MAX)
        events[nevents++] = (struct event){ts, te, after, (uint8_t)item};
}

static void publish_max(int64_t v)
{
    int64_t m = atomic_load(&max_on_hand_ever);
    while (v > m && !atomic_compare_exchange_weak(&max_on_hand_ever, &m, v))
        ;
}

static void *event_main(void *arg)
{
    uint64_t seed = *(uint64_t *)arg;
    int64_t on_hand[NITEMS];
    uint64_t seq[NITEMS];
    for (int i = 0; i < NITEMS; i++) {
        on_hand[i] = final_on_hand[i]; /* set up by main before the start */
        seq[i] = 1;
    }
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) && nevents < EVENTS_MAX - 64 &&
           !ev_err[0]) {
        /* ship what the workers committed */
        for (int wi = 0; wi < NWORKERS; wi++) {
            struct worker *w = &workers[wi];
            uint32_t head = atomic_load_explicit(&w->ring_head, memory_order_relaxed);
            /* A2: pairs with R1 in act() */
            uint32_t tail = atomic_load_explicit(&w->ring_tail, memory_order_acquire);
            uint32_t budget = 4;
            while (head != tail && budget--) {
                struct fentry f = w->ring[head % FRING];
                /* R2: the slot may be reused; pairs with A1 */
                atomic_store_explicit(&w->ring_head, ++head, memory_order_release);
                char key[32];
                key_of(key, sizeof(key), wi, f.gidx);
                for (uint8_t l = 0; l < f.nlines; l++) {
                    struct atp_reservation r;
                    uint64_t ts = atp_now_us();
                    int rc = atp_store_fulfill(store, S(key), l, &r);
                    uint64_t te = atp_now_us();
                    if (rc != 0) {
                        set_err(ev_err, "fulfill %s line %u: %s", key, l, atp_error_name(rc));
                        break;
                    }
                    on_hand[f.item[l]] -= f.qty[l];
                    log_event(f.item[l], ts, te, on_hand[f.item[l]]);
                    if (nflog < EVENTS_MAX)
                        flog[nflog++] = (struct fulfilled){ts, f.gidx, (uint8_t)wi, l};
                    ev_fulfillments++;
                }
            }
        }
        int i = (int)(splitmix(&seed) % NITEMS);
        uint32_t r = (uint32_t)(splitmix(&seed) % 100);
        uint64_t ts, te;
        int rc;
        if (r < 40) {
            int64_t d = (int64_t)(splitmix(&seed) % 12) - 5;
            if (d == 0 || on_hand[i] + d < 0 || on_hand[i] + d > 100)
                d = on_hand[i] > 50 ? -3 : 4;
            if (d > 0)
                publish_max(on_hand[i] + d);
            int64_t oh = -1;
            ts = atp_now_us();
            rc = atp_store_adjust(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), d, &oh);
            te = atp_now_us();
            if (rc != 0 || oh != on_hand[i] + d) {
                set_err(ev_err, "adjust %d by %lld: %s, on_hand %lld expected %lld", i,
                        (long long)d, atp_error_name(rc), (long long)oh,
                        (long long)(on_hand[i] + d));
                break;
            }
            on_hand[i] += d;
            log_event(i, ts, te, on_hand[i]);
        } else if (r < 75) {
            int64_t v = (int64_t)(splitmix(&seed) % 80);
            publish_max(v);
            ts = atp_now_us();
            rc = atp_store_set(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), v, ++seq[i]);
            te = atp_now_us();
            if (rc != 0) {
                set_err(ev_err, "set %d seq %llu: %s", i, (unsigned long long)seq[i],
                        atp_error_name(rc));
                break;
            }
            on_hand[i] = v;
            log_event(i, ts, te, on_hand[i]);
        } else {
            /* an old snapshot with plenty of stock: must never be applied */
            uint64_t old = seq[i] - splitmix(&seed) % seq[i];
            ts = atp_now_us();
            rc = atp_store_set(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), 100000, old);
            te = atp_now_us();
            if (rc != ATP_ESTALE) {
                set_err(ev_err, "stale set of item %d (seq %llu <= %llu) returned %s", i,
                        (unsigned long long)old, (unsigned long long)seq[i], atp_error_name(rc));
                if (rc == 0) {
                    on_hand[i] = 100000; /* keep the audit consistent with the store */
                    log_event(i, ts, te, on_hand[i]);
                }
                break;
            }
            ev_stale_refused++;
        }
        /* a short pause so events interleave with grants rather than flood */
        struct timespec p = {0, 20000};
        nanosleep(&p, NULL);
    }
    for (int i = 0; i < NITEMS; i++)
        final_on_hand[i] = on_hand[i];
    return NULL;
}

/* --- expiry hammer: expire as often as possible, so deadlines are met within
 * microseconds and collide with the workers' deadline races ---------------- */

static uint64_t hammer_calls, hammer_expired;

static void *hammer_main(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int n = atp_store_expire(store, atp_now_us());
        hammer_calls++;
        hammer_expired += (uint64_t)n;
    }
    return NULL;
}

/* --- reader ---------------------------------------------------------------------------- */

static void *reader_main(void *arg)
{
    (void)arg;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) && !rd_err[0]) {
        for (int i = 0; i < NITEMS; i++) {
            for (uint32_t c = 0; c < NCH; c++) {
                struct atp_breakdown b;
                int rc = atp_store_get(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), c, &b);
                int64_t mx = atomic_load(&max_on_hand_ever);
                if (rc != 0 || b.atp < 0 || b.reserved < 0 || b.allocated < 0 || b.atp > mx)
                    set_err(rd_err,
                            "get item %d ch %u: %s atp %lld reserved %lld allocated "
                            "%lld (max on_hand %lld)",
                            i, c, atp_error_name(rc), (long long)b.atp, (long long)b.reserved,
                            (long long)b.allocated, (long long)mx);
                rd_reads++;
            }
        }
        for (int k = 0; k < NSKUS; k++) {
            struct atp_breakdown b;
            int rc = atp_store_get_network(store, S(skus[k]), (uint32_t)k % NCH, &b);
            if (rc != 0 || b.atp < 0 || b.reserved < 0 || b.allocated < 0 ||
                b.atp > NLOCS * atomic_load(&max_on_hand_ever))
                set_err(rd_err, "network %d: %s atp %lld", k, atp_error_name(rc), (long long)b.atp);
        }
        struct atp_store_stats st;
        atp_store_stats(store, &st);
        if (st.reservations_held > (UINT64_C(1) << 40) ||
            st.reservations_committed > (UINT64_C(1) << 40))
            set_err(rd_err, "a reservation count went negative");
        sched_yield();
    }
    return NULL;
}

/* --- change feed follower ---------------------------------------------------------------- */

#define FEED_ITEM_CH 2 /* "pct" */
#define FEED_NET_CH  1 /* "app" */

struct follower {
    uint32_t ch, flags, max;
    uint64_t cursor;
    uint64_t restarts;      /* ECURSOR answers: the follower fell behind the ring */
    int64_t mirror[NITEMS]; /* by item; by sku (index * NLOCS) for network */
};
static struct follower fitem = {FEED_ITEM_CH, 0, 4, 0, 0, {0}};
static struct follower fnet = {FEED_NET_CH, ATP_CHANGES_NETWORK, 4, 0, 0, {0}};
/* web, one change a call, and seldom: the reader the small ring
 * (FEED_RING records) overtakes */
static struct follower fslow = {0, 0, 1, 0, 0, {0}};
#define FEED_RING 1024

static void follow_start(struct follower *f);
static void follow_calls(struct follower *f, bool once);

static void follow(struct follower *f)
{
    follow_calls(f, false);
}

static int sku_of(struct atp_slice sku)
{
    for (int k = 0; k < NSKUS; k++)
        if (sku.len == strlen(skus[k]) && memcmp(sku.p, skus[k], sku.len) == 0)
            return k;
    return -1;
}

/* Read the feed into the mirror: all there is (until `more` is false), or
 * with `once` a single call. */
static void follow_calls(struct follower *f, bool once)
{
    bool more = true;
    for (int calls = 0; more && !fd_err[0] && !(once && calls); calls++) {
        struct atp_change ch[4];
        uint32_t n = 0;
        uint64_t next = 0;
        int rc = atp_store_changes(store, f->ch, f->cursor, f->flags, f->max, ch, &n, &next, &more);
        fd_calls++;
        if (rc == ATP_ECURSOR) {
            /* fell behind the ring: start again, as a connector must */
            f->restarts++;
            follow_start(f);
            more = true;
            continue;
        }
        if (rc != 0) {
            set_err(fd_err, "changes ch %u: %s", f->ch, atp_error_name(rc));
            return;
        }
        if (next - f->cursor > (UINT64_C(1) << 40))
            set_err(fd_err, "cursor went back: %llu after %llu", (unsigned long long)next,
                    (unsigned long long)f->cursor);
        f->cursor = next;
        int64_t mx = atomic_load(&max_on_hand_ever) * (f->flags ? NLOCS : 1);
        for (uint32_t i = 0; i < n; i++) {
            int at = f->flags ? sku_of(ch[i].sku) * NLOCS : item_of(ch[i].sku, ch[i].loc);
            if (at < 0 || (f->flags && ch[i].loc.len != 0) || ch[i].atp < 0 || ch[i].atp > mx) {
                set_err(fd_err, "change %.*s@%.*s atp %lld (max %lld)", (int)ch[i].sku.len,
                        ch[i].sku.p, (int)ch[i].loc.len, ch[i].loc.p, (long long)ch[i].atp,
                        (long long)mx);
                return;
            }
            f->mirror[at] = ch[i].atp;
            fd_changes++;
        }
    }
}

/* Take a cursor, then read everything: the start a connector makes. */
static void follow_start(struct follower *f)
{
    f->cursor = atp_store_changes_cursor(store);
    if (f->cursor == 0)
        set_err(fd_err, "cursor 0");
    for (int i = 0; i < NITEMS; i++) {
        struct atp_breakdown b;
        if (f->flags && i % NLOCS)
            continue;
        int rc = f->flags ? atp_store_get_network(store, S(ITEM_SKU(i)), f->ch, &b)
                          : atp_store_get(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), f->ch, &b);
        if (rc != 0)
            set_err(fd_err, "start: get %d: %s", i, atp_error_name(rc));
        f->mirror[i] = b.atp;
    }
}

static void *feed_main(void *arg)
{
    (void)arg;
    uint64_t rounds = 0;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed) && !fd_err[0]) {
        follow(&fitem);
        follow(&fnet);
        if (++rounds % 64 == 0)
            follow_calls(&fslow, true); /* seldom and little: the ring overtakes it */
        sched_yield();
    }
    return NULL;
}

static void mirror_check(const struct follower *f, const char *when, uint64_t seed)
{
    for (int i = 0; i < NITEMS; i++) {
        if (f->flags && i % NLOCS)
            continue;
        struct atp_breakdown b;
        if (f->flags)
            assert_int_equal(atp_store_get_network(store, S(ITEM_SKU(i)), f->ch, &b), 0);
        else
            assert_int_equal(atp_store_get(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), f->ch, &b), 0);
        if (f->mirror[i] != b.atp)
            fail_msg("feed %s: ch %u %s %d mirrored ATP %lld, the store says %lld (seed %llu)",
                     when, f->ch, f->flags ? "sku" : "item", f->flags ? i / NLOCS : i,
                     (long long)f->mirror[i], (long long)b.atp, (unsigned long long)seed);
    }
}

/* Quiescent: what the feed said must be what the store says. */
static void feed_check(const char *when, uint64_t seed)
{
    follow(&fitem);
    follow(&fnet);
    follow(&fslow);
    if (fd_err[0])
        fail_msg("feed %s: %s (seed %llu)", when, fd_err, (unsigned long long)seed);
    mirror_check(&fitem, when, seed);
    mirror_check(&fnet, when, seed);
    mirror_check(&fslow, when, seed);
}

/* --- audit ------------------------------------------------------------------------------- */

struct aline { /* one granted line, for the per-item sweep */
    uint64_t gs, ge, end;
    uint32_t qty;
    uint8_t ch;
    uint8_t worker;
    uint32_t gidx;
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct keyed {
    uint64_t t;
    uint64_t q;
};

static int cmp_keyed(const void *a, const void *b)
{
    return cmp_u64(a, b);
}

/* number of entries with t < x (strict) */
static size_t count_lt(const struct keyed *a, size_t n, uint64_t x)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a[mid].t < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Check every grant of item `it`; returns the number of violations. */
static uint64_t audit_item(int it, uint64_t *ret_lines)
{
    size_t n = 0;
    for (int w = 0; w < NWORKERS; w++)
        for (uint32_t i = 0; i < workers[w].ng; i++)
            for (int l = 0; l < workers[w].g[i].nlines; l++)
                n += workers[w].g[i].item[l] == it;
    struct aline *al = calloc(n + 1, sizeof(*al));
    struct keyed *byge = calloc(n + 1, sizeof(*byge));
    struct keyed *byend = calloc(n + 1, sizeof(*byend));
    assert_non_null(al);
    assert_non_null(byge);
    assert_non_null(byend);
    size_t k = 0;
    for (int w = 0; w < NWORKERS; w++)
        for (uint32_t i = 0; i < workers[w].ng; i++) {
            const struct grant *g = &workers[w].g[i];
            for (int l = 0; l < g->nlines; l++)
                if (g->item[l] == it)
                    al[k++] =
                        (struct aline){g->gs, g->ge, g->end[l], g->qty[l], g->ch, (uint8_t)w, i};
        }
    for (size_t i = 0; i < n; i++) {
        byge[i] = (struct keyed){al[i].ge, al[i].qty};
        byend[i] = (struct keyed){al[i].end, al[i].qty};
    }
    qsort(byge, n, sizeof(*byge), cmp_keyed);
    qsort(byend, n, sizeof(*byend), cmp_keyed);
    /* prefix sums in q: q becomes the sum of entries [0, i] */
    for (size_t i = 1; i < n; i++) {
        byge[i].q += byge[i - 1].q;
        byend[i].q += byend[i - 1].q;
    }
    /* the on_hand history of this item */
    size_t ne = 0;
    for (uint32_t i = 0; i < nevents; i++)
        ne += events[i].item == it;
    struct event *ev = calloc(ne + 1, sizeof(*ev));
    assert_non_null(ev);
    size_t j = 0;
    for (uint32_t i = 0; i < nevents; i++)
        if (events[i].item == it)
            ev[j++] = events[i];

    uint64_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const struct aline *a = &al[i];
        /* held by others at the grant: granted before gs, not ended by ge */
        size_t c1 = count_lt(byge, n, a->gs);
        size_t c2 = count_lt(byend, n, a->ge + 1); /* end <= ge */
        int64_t held = (int64_t)(c1 ? byge[c1 - 1].q : 0) - (int64_t)(c2 ? byend[c2 - 1].q : 0);
        /* largest on_hand current at some moment in [gs, ge] */
        size_t e0 = 0; /* last event completed before gs */
        for (size_t lo = 0, hi = ne; lo < hi;) {
            size_t mid = (lo + hi) / 2;
            if (ev[mid].te < a->gs)
                e0 = mid, lo = mid + 1;
            else
                hi = mid;
        }
        int64_t u = ev[e0].after;
        for (size_t e = e0 + 1; e < ne && ev[e].ts <= a->ge; e++) /* same us: maybe before */
            if (ev[e].after > u)
                u = ev[e].after;
        int64_t room = u - safety_of(a->ch, u);
        if (held + (int64_t)a->qty > room) {
            if (bad < 5)
                print_error("OVERSELL item %d (%s@%s): worker %u grant %u ch %s qty %u at "
                            "[%llu, %llu]: at least %lld held by others, on_hand at most %lld, "
                            "safety %lld\n",
                            it, ITEM_SKU(it), ITEM_LOC(it), a->worker, a->gidx, chans[a->ch].name,
                            a->qty, (unsigned long long)a->gs, (unsigned long long)a->ge,
                            (long long)held, (long long)u, (long long)safety_of(a->ch, u));
            if (bad == 0 && getenv("ATP_STRESS_DEBUG")) {
                for (size_t e = e0 > 3 ? e0 - 3 : 0; e < ne && e < e0 + 4; e++)
                    print_error("  event [%llu, %llu] -> %lld\n", (unsigned long long)ev[e].ts,
                                (unsigned long long)ev[e].te, (long long)ev[e].after);
                for (size_t x = 0; x < n; x++)
                    if (al[x].ge < a->gs && al[x].end > a->ge)
                        print_error("  held: w%u #%u qty %u [%llu, %llu] end %llu fate %d\n",
                                    al[x].worker, al[x].gidx, al[x].qty,
                                    (unsigned long long)al[x].gs, (unsigned long long)al[x].ge,
                                    (unsigned long long)al[x].end,
                                    workers[al[x].worker].g[al[x].gidx].fate);
            }
            bad++;
        }
    }
    free(al);
    free(byge);
    free(byend);
    free(ev);
    *ret_lines = n;
    return bad;
}

/* --- the test ---------------------------------------------------------------------------- */

static void test_stress(void **state)
{
    (void)state;
    const char *e = getenv("ATP_STRESS_SECONDS");
    if (e && atoi(e) > 0)
        run_seconds = (uint64_t)atoi(e);
    uint64_t seed;
    e = getenv("ATP_STRESS_SEED");
    if (e && *e) {
        seed = strtoull(e, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
    }
    print_message("stress: seed %llu, %d workers, %llu s\n", (unsigned long long)seed, NWORKERS,
                  (unsigned long long)run_seconds);

    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 1024;
    cfg.max_reservations = 1u << 18;
    cfg.nshards = 4;
    cfg.idempotency_window_ms = WINDOW_MS;
    cfg.feed_records = FEED_RING;
    cfg.channels = chans;
    cfg.nchannels = NCH;
    assert_int_equal(atp_store_new(&cfg, &store), 0);

    events = calloc(EVENTS_MAX, sizeof(*events));
    flog = calloc(EVENTS_MAX, sizeof(*flog));
    assert_non_null(events);
    assert_non_null(flog);
    uint64_t s = seed;
    for (int i = 0; i < NITEMS; i++) {
        int64_t v = 10 + (int64_t)(splitmix(&s) % 20);
        assert_int_equal(atp_store_set(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), v, 1), 0);
        final_on_hand[i] = v;
        publish_max(v);
        log_event(i, 0, 0, v);
    }
    assert_int_equal(atp_store_start_expirer(store, 1000), 0);
    follow_start(&fitem);
    follow_start(&fnet);
    follow_start(&fslow);

    for (int i = 0; i < NWORKERS; i++) {
        workers[i].idx = i;
        workers[i].seed = seed + 7919u * (uint64_t)(i + 1);
        workers[i].g = calloc(GRANTS_MAX, sizeof(struct grant));
        assert_non_null(workers[i].g);
    }
    uint64_t evseed = seed ^ 0xe7e7;
    pthread_t evth, rdth, hmth, fdth;
    assert_int_equal(pthread_create(&fdth, NULL, feed_main, NULL), 0);
    assert_int_equal(pthread_create(&evth, NULL, event_main, &evseed), 0);
    assert_int_equal(pthread_create(&rdth, NULL, reader_main, NULL), 0);
    assert_int_equal(pthread_create(&hmth, NULL, hammer_main, NULL), 0);
    for (int i = 0; i < NWORKERS; i++)
        assert_int_equal(pthread_create(&workers[i].th, NULL, worker_main, &workers[i]), 0);

    uint64_t t0 = atp_now_us();
    while (atp_now_us() - t0 < run_seconds * 1000000) {
        struct timespec p = {0, 20000000};
        nanosleep(&p, NULL);
        if (atomic_load(&workers_done) == NWORKERS)
            break; /* every audit log is full */
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < NWORKERS; i++)
        pthread_join(workers[i].th, NULL);
    pthread_join(evth, NULL);
    pthread_join(rdth, NULL);
    pthread_join(hmth, NULL);
    pthread_join(fdth, NULL);
    atp_store_stop_expirer(store);
    uint64_t elapsed = atp_now_us() - t0;

    /* errors seen during the run */
    for (int i = 0; i < NWORKERS; i++)
        if (workers[i].err[0])
            fail_msg("worker %d: %s (seed %llu)", i, workers[i].err, (unsigned long long)seed);
    if (ev_err[0])
        fail_msg("event thread: %s (seed %llu)", ev_err, (unsigned long long)seed);
    if (rd_err[0])
        fail_msg("reader: %s (seed %llu)", rd_err, (unsigned long long)seed);
    feed_check("after the run", seed);

    /* ship times end the committed lines */
    for (uint32_t i = 0; i < nflog; i++)
        workers[flog[i].worker].g[flog[i].gidx].end[flog[i].line] = flog[i].fs;

    /* quiescent: counters against the audit */
    int64_t held[NITEMS] = {0}, alloc[NITEMS] = {0};
    uint64_t nheld = 0, ncommitted = 0, grants = 0, commits = 0, releases = 0;
    for (int w = 0; w < NWORKERS; w++) {
        grants += workers[w].ng;
        commits += workers[w].commits;
        releases += workers[w].releases;
        for (uint32_t i = 0; i < workers[w].ng; i++) {
            const struct grant *g = &workers[w].g[i];
            struct atp_reservation r;
            int rc = atp_store_reservation_get(store, g->id, &r);
            if (rc == ATP_ENOTFOUND) {
                /* finished and reclaimed after the window: never while committed */
                int shipped = g->fate == F_COMMITTED;
                for (int l = 0; l < g->nlines; l++)
                    shipped &= g->end[l] != UINT64_MAX;
                if (g->fate != F_COMMITTED || shipped)
                    continue;
            }
            if (rc != 0)
                fail_msg("reservation %llu (worker %d #%u, fate %d): %s", (unsigned long long)g->id,
                         w, i, g->fate, atp_error_name(rc));
            switch (r.state) {
            case ATP_RES_HELD:
                if (g->fate != F_ABANDONED)
                    fail_msg("reservation %llu held, but the worker saw it end (fate %d)",
                             (unsigned long long)g->id, g->fate);
                nheld++;
                for (int l = 0; l < g->nlines; l++)
                    held[g->item[l]] += g->qty[l];
                break;
            case ATP_RES_COMMITTED:
                if (g->fate != F_COMMITTED)
                    fail_msg("reservation %llu committed, fate %d", (unsigned long long)g->id,
                             g->fate);
                ncommitted++;
                for (int l = 0; l < g->nlines; l++)
                    if (!r.lines[l].fulfilled)
                        alloc[g->item[l]] += g->qty[l];
                break;
            case ATP_RES_FULFILLED:
                if (g->fate != F_COMMITTED)
                    fail_msg("reservation %llu fulfilled, fate %d", (unsigned long long)g->id,
                             g->fate);
                break;
            case ATP_RES_RELEASED:
                if (g->fate != F_RELEASED)
                    fail_msg("reservation %llu released, fate %d", (unsigned long long)g->id,
                             g->fate);
                break;
            case ATP_RES_EXPIRED:
                if (g->fate != F_EXPIRED && g->fate != F_ABANDONED)
                    fail_msg("reservation %llu expired, fate %d", (unsigned long long)g->id,
                             g->fate);
                break;
            default:
                fail_msg("reservation %llu in state %d", (unsigned long long)g->id, r.state);
            }
        }
    }
    for (int i = 0; i < NITEMS; i++) {
        struct atp_breakdown b;
        assert_int_equal(atp_store_get(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), 0, &b), 0);
        if (b.reserved != held[i] || b.allocated != alloc[i] || b.on_hand != final_on_hand[i])
            fail_msg("item %d after the run: reserved %lld (live holds %lld), allocated %lld "
                     "(unshipped commits %lld), on_hand %lld (events %lld); seed %llu",
                     i, (long long)b.reserved, (long long)held[i], (long long)b.allocated,
                     (long long)alloc[i], (long long)b.on_hand, (long long)final_on_hand[i],
                     (unsigned long long)seed);
        int64_t fr = b.on_hand - b.allocated - b.reserved;
        if (b.atp != (fr > 0 ? fr : 0))
            fail_msg("item %d after the run: ATP %lld, but on_hand - allocated - reserved = %lld "
                     "(the availability word drifted from the counters); seed %llu",
                     i, (long long)b.atp, (long long)fr, (unsigned long long)seed);
    }
    struct atp_store_stats st;
    atp_store_stats(store, &st);
    if (st.reservations_held != nheld || st.reservations_committed != ncommitted ||
        st.reserves_granted != grants || st.commits != commits || st.releases != releases ||
        st.fulfillments != ev_fulfillments)
        fail_msg("stats: held %llu/%llu committed %llu/%llu granted %llu/%llu commits %llu/%llu "
                 "releases %llu/%llu fulfillments %llu/%llu (store/audit)",
                 (unsigned long long)st.reservations_held, (unsigned long long)nheld,
                 (unsigned long long)st.reservations_committed, (unsigned long long)ncommitted,
                 (unsigned long long)st.reserves_granted, (unsigned long long)grants,
                 (unsigned long long)st.commits, (unsigned long long)commits,
                 (unsigned long long)st.releases, (unsigned long long)releases,
                 (unsigned long long)st.fulfillments, (unsigned long long)ev_fulfillments);

    uint64_t run_lateness_max = st.lateness_max_us;
    /* everything still held expires exactly once; stock comes back */
    int n = atp_store_expire(store, atp_now_us() + 86400ull * 1000000);
    if ((uint64_t)n != nheld)
        fail_msg("expiring everything expired %d, but %llu were held; seed %llu", n,
                 (unsigned long long)nheld, (unsigned long long)seed);
    assert_int_equal(atp_store_expire(store, atp_now_us() + 86400ull * 1000000), 0);
    for (int i = 0; i < NITEMS; i++) {
        struct atp_breakdown b;
        assert_int_equal(atp_store_get(store, S(ITEM_SKU(i)), S(ITEM_LOC(i)), 0, &b), 0);
        assert_int_equal(b.reserved, 0);
        assert_int_equal(b.allocated, alloc[i]);
    }
    atp_store_stats(store, &st);
    assert_int_equal(st.reservations_held, 0);
    feed_check("after the last expiry", seed);

    /* the no-oversell invariant, grant by grant */
    uint64_t bad = 0, lines = 0;
    for (int i = 0; i < NITEMS; i++) {
        uint64_t nl;
        bad += audit_item(i, &nl);
        lines += nl;
    }
    uint64_t rejected = 0, full = 0, replays = 0, extends = 0, expired_seen = 0, refused = 0;
    for (int w = 0; w < NWORKERS; w++) {
        refused += workers[w].commits_refused;
        rejected += workers[w].rejected;
        full += workers[w].full;
        replays += workers[w].replays;
        extends += workers[w].extends;
        expired_seen += workers[w].expired_seen;
    }
    print_message("stress: %.2f s; %llu grants (%llu lines), %llu refused, %llu full, %llu "
                  "replays; %llu commits (%llu refused), %llu releases, %llu extends, %llu seen "
                  "expired, %llu "
                  "expirations in all; %u on_hand events, %llu stale sets refused, %llu "
                  "lines shipped; %llu reads; %llu expire calls by the hammer (%llu expired); "
                  "expiry lateness max %llu us; %llu feed calls, %llu changes told, %llu "
                  "restarts of the slow follower\n",
                  (double)elapsed / 1e6, (unsigned long long)grants, (unsigned long long)lines,
                  (unsigned long long)rejected, (unsigned long long)full,
                  (unsigned long long)replays, (unsigned long long)commits,
                  (unsigned long long)refused, (unsigned long long)releases,
                  (unsigned long long)extends, (unsigned long long)expired_seen,
                  (unsigned long long)st.expirations, nevents, (unsigned long long)ev_stale_refused,
                  (unsigned long long)ev_fulfillments, (unsigned long long)rd_reads,
                  (unsigned long long)hammer_calls, (unsigned long long)hammer_expired,
                  (unsigned long long)run_lateness_max, (unsigned long long)fd_calls,
                  (unsigned long long)fd_changes, (unsigned long long)fslow.restarts);
    if (bad)
        fail_msg("%llu grants exceeded what was available (seed %llu)", (unsigned long long)bad,
                 (unsigned long long)seed);
    /* the run must have exercised the interesting paths */
    assert_true(grants > 1000);
    assert_true(rejected > 0);
    assert_true(commits > 0 && releases > 0 && ev_fulfillments > 0);
    assert_true(fd_changes > 1000);

    for (int i = 0; i < NWORKERS; i++)
        free(workers[i].g);
    free(events);
    free(flog);
    atp_store_free(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress),
    };
    return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
