/*
 * wal.c - the write-ahead log: record codec, the store's journal hooks, and
 * the writer thread that puts records on disk in position order.
 *
 * Positions. begin() hands out positions from one counter; the store makes a
 * change visible between begin() and end(), and a change that depends on
 * another begins after seeing it, so position order is a valid replay order.
 * Threads end their positions out of order; each position owns the slot
 * `pos & mask` of a ring. A slot's `seq` says whose turn it is: 2p while it
 * waits for position p, 2p+1 once p ended. The writer consumes slots strictly
 * in order, so an unfinished position holds back every later one (that is
 * what makes the log a prefix of a valid history at every instant).
 *
 * Group commit. The writer copies every consecutive ended record into one
 * buffer, writes it with io_uring and (appendfsync always) links an
 * fdatasync to the write: one write and one flush per batch however many
 * threads contributed. Records that end while a batch is on its way wait for
 * the next one. `synced` then moves to the end of the batch and waiters are
 * woken (a futex word and the registered eventfds).
 *
 * Failure is final: after a failed write or fdatasync the writer marks the
 * durable failed, `synced` never moves again, and it keeps consuming (and
 * dropping) slots so that no thread blocks on a full ring. An fsync error
 * means the kernel may have dropped the dirty pages: retrying it and then
 * acknowledging would acknowledge data that is not on disk.
 *
 * It knows the store's journal contract, io_uring and the log format; it
 * knows nothing about snapshots, recovery order or the server.
 */
#include "durable_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define WBUF_CAP     (4u << 20) /* bytes per batch */
#define UD_WRITE     1
#define UD_FSYNC     2
#define IDLE_WAIT_MS 100 /* writer nap when idle (control flags are rechecked) */
#define EVERYSEC_US  1000000

/* --- codec ----------------------------------------------------------------- */

void wb_reserve(struct wbuf *b, size_t n)
{
    if (b->oom)
        return;
    if (b->fixed) {
        b->oom = true;
        return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return;
    }
    b->p = p;
    b->cap = cap;
}

void wal_put_res(struct wbuf *b, const struct atp_reservation *r)
{
    wb_u64(b, r->id);
    wb_u8(b, (uint8_t)r->state);
    wb_u8(b, (uint8_t)r->channel);
    wb_u64(b, r->created_us);
    wb_u64(b, r->expires_us);
    wb_u64(b, r->ttl_ms);
    wb_str8(b, (struct atp_slice){r->key, r->key_len});
    wb_u8(b, (uint8_t)r->nlines);
    for (uint32_t i = 0; i < r->nlines; i++) {
        const struct atp_res_line *l = &r->lines[i];
        wb_str8(b, l->sku);
        wb_str8(b, l->loc);
        wb_u64(b, (uint64_t)l->qty);
        wb_u8(b, (uint8_t)((l->fulfilled ? 1 : 0) | (l->any ? 2 : 0)));
    }
}

int wal_get_res(struct rbuf *r, struct atp_reservation *out)
{
    out->id = rb_u64(r);
    out->state = rb_u8(r);
    out->channel = rb_u8(r);
    out->created_us = rb_u64(r);
    out->expires_us = rb_u64(r);
    out->ttl_ms = rb_u64(r);
    struct atp_slice key = rb_str8(r);
    if (key.len > ATP_KEY_MAX)
        return ATP_EINVAL;
    memset(out->key, 0, sizeof(out->key));
    memcpy(out->key, key.p, key.len);
    out->key_len = key.len;
    out->nlines = rb_u8(r);
    if (out->nlines > ATP_MAX_LINES)
        return ATP_EINVAL;
    for (uint32_t i = 0; i < out->nlines; i++) {
        struct atp_res_line *l = &out->lines[i];
        l->sku = rb_str8(r);
        l->loc = rb_str8(r);
        l->qty = (int64_t)rb_u64(r);
        uint8_t f = rb_u8(r);
        l->fulfilled = f & 1;
        l->any = (f >> 1) & 1;
    }
    return r->bad ? ATP_EINVAL : 0;
}

int wal_put_body(struct wbuf *b, const struct atp_journal_rec *rec)
{
    switch (rec->type) {
    case ATP_J_ADJUST:
    case ATP_J_ALLOCATE:
    case ATP_J_DEALLOCATE:
        wb_str8(b, rec->sku);
        wb_str8(b, rec->loc);
        wb_u64(b, (uint64_t)rec->qty);
        return 0;
    case ATP_J_SET:
        wb_str8(b, rec->sku);
        wb_str8(b, rec->loc);
        wb_u64(b, (uint64_t)rec->qty);
        wb_u64(b, rec->seq);
        return 0;
    case ATP_J_SAFETY:
        wb_str8(b, rec->sku);
        wb_str8(b, rec->loc);
        wb_u8(b, (uint8_t)rec->channel);
        wb_u64(b, (uint64_t)rec->qty);
        return 0;
    case ATP_J_RESERVE:
        if (!rec->res)
            return ATP_EINVAL;
        wal_put_res(b, rec->res);
        return 0;
    case ATP_J_COMMIT:
    case ATP_J_RELEASE:
    case ATP_J_EXPIRE:
    case ATP_J_RECLAIM:
        wb_u64(b, rec->id);
        wb_u64(b, rec->now_us);
        return 0;
    case ATP_J_EXTEND:
        wb_u64(b, rec->id);
        wb_u64(b, rec->now_us);
        wb_u64(b, rec->ttl_ms);
        return 0;
    case ATP_J_FULFILL:
        wb_str8(b, rec->key);
        wb_u64(b, rec->id);
        wb_u32(b, rec->line);
        return 0;
    default:
        return ATP_EINVAL;
    }
}

void wal_put_offset(struct wbuf *b, struct atp_slice topic, int32_t partition, int64_t next,
                    bool stale)
{
    wb_str8(b, topic);
    wb_u32(b, (uint32_t)partition);
    wb_u64(b, (uint64_t)next);
    wb_u8(b, stale ? 1 : 0);
}

static bool type_ok(int type)
{
    return (type >= ATP_J_ADJUST && type <= ATP_J_RECLAIM) || type == WAL_T_OFFSET;
}

void wal_seal(uint8_t *rec, int type, unsigned flags, uint32_t len, uint64_t pos)
{
    uint16_t magic = WAL_REC_MAGIC;
    memcpy(rec + 4, &magic, 2);
    rec[6] = (uint8_t)type;
    rec[7] = (uint8_t)flags;
    memcpy(rec + 8, &len, 4);
    memcpy(rec + 12, &pos, 8);
    uint32_t check = (uint32_t)XXH3_64bits(rec + 4, WAL_HDR - 4 + len);
    memcpy(rec, &check, 4);
}

void wal_frame(struct wbuf *b, int type, unsigned flags, uint64_t pos, const uint8_t *body,
               size_t body_len)
{
    size_t at = b->len;
    uint8_t hdr[WAL_HDR] = {0};
    wb_put(b, hdr, WAL_HDR);
    wb_put(b, body, body_len);
    if (!b->oom)
        wal_seal(b->p + at, type, flags, (uint32_t)body_len, pos);
}

long wal_check(const uint8_t *p, size_t avail)
{
    uint16_t magic;
    if (avail < 6)
        return 0; /* too short to tell: a torn start */
    memcpy(&magic, p + 4, 2);
    if (magic != WAL_REC_MAGIC)
        return -1;
    if (avail < WAL_HDR)
        return 0;
    uint32_t len, check;
    memcpy(&len, p + 8, 4);
    if (len > WAL_MAX_BODY || !type_ok(p[6]) || (p[7] & ~WAL_F_OFFSET))
        return -1;
    if (avail < WAL_HDR + len)
        return 0;
    memcpy(&check, p, 4);
    if ((uint32_t)XXH3_64bits(p + 4, WAL_HDR - 4 + len) != check)
        return -1;
    return (long)(WAL_HDR + len);
}

int wal_decode(const uint8_t *p, size_t size, struct wal_rec *out)
{
    memset(&out->j, 0, sizeof(out->j));
    out->type = p[6];
    out->flags = p[7];
    memcpy(&out->pos, p + 12, 8);
    out->has_offset = false;
    struct rbuf r = {p + WAL_HDR, size - WAL_HDR, 0, false};
    struct atp_journal_rec *j = &out->j;
    j->type = out->type;
    switch (out->type) {
    case ATP_J_ADJUST:
    case ATP_J_ALLOCATE:
    case ATP_J_DEALLOCATE:
        j->sku = rb_str8(&r);
        j->loc = rb_str8(&r);
        j->qty = (int64_t)rb_u64(&r);
        break;
    case ATP_J_SET:
        j->sku = rb_str8(&r);
        j->loc = rb_str8(&r);
        j->qty = (int64_t)rb_u64(&r);
        j->seq = rb_u64(&r);
        break;
    case ATP_J_SAFETY:
        j->sku = rb_str8(&r);
        j->loc = rb_str8(&r);
        j->channel = rb_u8(&r);
        j->qty = (int64_t)rb_u64(&r);
        break;
    case ATP_J_RESERVE:
        if (wal_get_res(&r, &out->res))
            return ATP_EINVAL;
        j->id = out->res.id;
        j->res = &out->res;
        break;
    case ATP_J_COMMIT:
    case ATP_J_RELEASE:
    case ATP_J_EXPIRE:
    case ATP_J_RECLAIM:
        j->id = rb_u64(&r);
        j->now_us = rb_u64(&r);
        break;
    case ATP_J_EXTEND:
        j->id = rb_u64(&r);
        j->now_us = rb_u64(&r);
        j->ttl_ms = rb_u64(&r);
        break;
    case ATP_J_FULFILL:
        j->key = rb_str8(&r);
        j->id = rb_u64(&r);
        j->line = rb_u32(&r);
        break;
    case WAL_T_OFFSET:
        break;
    default:
        return ATP_EINVAL;
    }
    if (out->type == WAL_T_OFFSET || (out->flags & WAL_F_OFFSET)) {
        out->has_offset = true;
        out->topic = rb_str8(&r);
        out->partition = (int32_t)rb_u32(&r);
        out->next_offset = (int64_t)rb_u64(&r);
        out->stale = rb_u8(&r) & 1;
        /* atp_durable_note_offset logs no other name: one is damage. */
        if (!r.bad && !atp_ingest_topic_ok(out->topic))
            return ATP_EINVAL;
    }
    if (r.bad || r.off != r.len)
        return ATP_EINVAL;
    return 0;
}

/* --- small helpers ----------------------------------------------------------- */

uint64_t durable_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static long futex_wait(_Atomic uint32_t *w, uint32_t val, uint64_t timeout_us)
{
    struct timespec ts = {(time_t)(timeout_us / 1000000u), (long)(timeout_us % 1000000u) * 1000};
    return syscall(SYS_futex, w, FUTEX_WAIT_PRIVATE, val, timeout_us ? &ts : NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w, int n)
{
    syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

static void wake_writer(struct atp_durable *d)
{
    if (atomic_exchange(&d->writer_sleeping, 0))
        futex_wake(&d->writer_sleeping, 1);
}

static void notify_all(struct atp_durable *d)
{
    /* S1: seq_cst bump; a waiter reads sync_seq before it rechecks (W1). */
    atomic_fetch_add(&d->sync_seq, 1);
    if (atomic_load(&d->sync_waiters))
        futex_wake(&d->sync_seq, INT_MAX);
    /* Under mu: a removed descriptor is never written after its removal
     * returns (it may be closed and its number reused). */
    if (atomic_load_explicit(&d->nnotify, memory_order_relaxed)) {
        pthread_mutex_lock(&d->mu);
        for (uint32_t i = 0; i < atomic_load_explicit(&d->nnotify, memory_order_relaxed); i++)
            (void)eventfd_write(d->notify[i], 1);
        pthread_mutex_unlock(&d->mu);
    }
}

void durable_fail(struct atp_durable *d, int err, const char *fmt, ...)
{
    pthread_mutex_lock(&d->errmu);
    if (!atomic_load(&d->failed)) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(d->errmsg, sizeof(d->errmsg), fmt, ap);
        va_end(ap);
        if (err && n >= 0 && (size_t)n < sizeof(d->errmsg))
            snprintf(d->errmsg + n, sizeof(d->errmsg) - (size_t)n, ": %s", strerror(-err));
        d->refuse = ATP_EREADONLY;
        atomic_store(&d->failed, ATP_EREADONLY);
    }
    pthread_mutex_unlock(&d->errmu);
    notify_all(d);
}

/* --- the journal (any thread) ---------------------------------------------- */

/*
 * Per thread: the last position begun (for acknowledgements), and the event
 * being applied by an ingest thread (its record is held until its offset).
 */
static __thread struct {
    uint64_t pos;
    bool barrier;             /* see atp_durable_tls_barrier */
    struct atp_durable *ev_d; /* event_start() was called on this durable */
    uint64_t held_pos;        /* 0: nothing held */
    int held_type;
    uint32_t held_len; /* body bytes in held[] */
    uint8_t held[WAL_HDR + WAL_MAX_BODY];
    uint8_t enc[WAL_HDR + WAL_MAX_BODY];
} tls;

uint64_t atp_durable_tls_pos(void)
{
    return tls.pos;
}

void atp_durable_tls_barrier(void)
{
    tls.barrier = true;
}

bool atp_durable_tls_take_barrier(void)
{
    bool b = tls.barrier;
    tls.barrier = false;
    return b;
}

static uint64_t pos_take(struct atp_durable *d)
{
    uint64_t p = atomic_fetch_add(&d->next, 1);
    struct slot *s = &d->slots[p & d->mask];
    /* A2: pairs with R2 in drain(): the slot's previous record was copied. */
    if (atomic_load_explicit(&s->seq, memory_order_acquire) != 2 * p) {
        atomic_fetch_add_explicit(&d->st_ring_waits, 1, memory_order_relaxed);
        for (unsigned spins = 0; atomic_load_explicit(&s->seq, memory_order_acquire) != 2 * p;
             spins++) {
            if (spins < 64) {
                __builtin_ia32_pause();
            } else {
                wake_writer(d);
                struct timespec ts = {0, 20000};
                nanosleep(&ts, NULL);
            }
        }
    }
    tls.pos = p;
    return p;
}

/* Copy a sealed record into its slot and hand it to the writer. */
static void slot_publish(struct atp_durable *d, uint64_t pos, const uint8_t *rec, uint32_t len)
{
    struct slot *s = &d->slots[pos & d->mask];
    if (len > SLOT_INLINE) {
        if (s->ext_cap < len) {
            uint8_t *p = realloc(s->ext, WAL_HDR + WAL_MAX_BODY);
            if (!p) {
                durable_fail(d, -ENOMEM, "log record of %u bytes at position %" PRIu64, len, pos);
                len = 0;
            } else {
                s->ext = p;
                s->ext_cap = WAL_HDR + WAL_MAX_BODY;
            }
        }
        if (len)
            memcpy(s->ext, rec, len);
    } else if (len) {
        memcpy(s->data, rec, len);
    }
    s->len = len;
    /* R1: release publishes len and bytes; pairs with A1 in drain(). */
    atomic_store_explicit(&s->seq, 2 * pos + 1, memory_order_release);
    /* F1: orders the publish before reading writer_sleeping (Dekker with
     * the writer's seq_cst store of writer_sleeping then load of seq). */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&d->writer_sleeping, memory_order_relaxed))
        wake_writer(d);
}

/* Encode a journal record into buf (header + body); body length or < 0. */
static long encode(uint8_t *buf, const struct atp_journal_rec *rec)
{
    struct wbuf b = {buf + WAL_HDR, 0, WAL_MAX_BODY, false, true};
    if (wal_put_body(&b, rec) || b.oom)
        return -1;
    return (long)b.len;
}

static void held_flush(struct atp_durable *d, const uint8_t *off, size_t off_len)
{
    uint32_t len = tls.held_len;
    unsigned flags = 0;
    if (off && len + off_len <= WAL_MAX_BODY) {
        memcpy(tls.held + WAL_HDR + len, off, off_len);
        len += (uint32_t)off_len;
        flags = WAL_F_OFFSET;
    }
    wal_seal(tls.held, tls.held_type, flags, len, tls.held_pos);
    slot_publish(d, tls.held_pos, tls.held, WAL_HDR + len);
    tls.held_pos = 0;
}

static uint64_t j_begin(void *arg)
{
    struct atp_durable *d = arg;
    if (atomic_load_explicit(&d->journal_off, memory_order_relaxed))
        return 0;
    return pos_take(d);
}

static void j_end(void *arg, uint64_t pos, const struct atp_journal_rec *rec)
{
    struct atp_durable *d = arg;
    if (pos == 0)
        return; /* journal off (recovery replay) */
    if (!rec) {
        slot_publish(d, pos, NULL, 0);
        return;
    }
    if (tls.ev_d == d) {
        /* An ingest event: hold it until its offset (note_offset). */
        if (tls.held_pos)
            held_flush(d, NULL, 0); /* a second record: cannot happen today */
        long n = encode(tls.held, rec);
        if (n >= 0) {
            tls.held_pos = pos;
            tls.held_type = rec->type;
            tls.held_len = (uint32_t)n;
            return;
        }
    }
    long n = encode(tls.enc, rec);
    if (n < 0) {
        durable_fail(d, 0, "cannot encode a journal record of type %d at position %" PRIu64,
                     rec->type, pos);
        slot_publish(d, pos, NULL, 0);
        return;
    }
    wal_seal(tls.enc, rec->type, 0, (uint32_t)n, pos);
    slot_publish(d, pos, tls.enc, WAL_HDR + (uint32_t)n);
}

const struct atp_journal *atp_durable_journal(struct atp_durable *d)
{
    d->journal.begin = j_begin;
    d->journal.end = j_end;
    d->journal.arg = d;
    return &d->journal;
}

void atp_durable_event_start(struct atp_durable *d)
{
    if (tls.held_pos && tls.ev_d)
        held_flush(tls.ev_d, NULL, 0); /* note_offset was skipped: never hold forever */
    tls.ev_d = d;
}

int atp_durable_note_offset(struct atp_durable *d, const char *topic, int32_t partition,
                            int64_t next_offset, bool stale)
{
    struct atp_slice t = atp_slice_cstr(topic);
    /* Recovery refuses any other name: never log one. */
    if (!atp_ingest_topic_ok(t)) {
        if (tls.held_pos && tls.ev_d == d)
            held_flush(d, NULL, 0);
        tls.ev_d = NULL;
        return ATP_EINVAL;
    }
    pthread_mutex_lock(&d->offmu);
    int rc = offtab_set(&d->offs, t, partition, next_offset, stale);
    pthread_mutex_unlock(&d->offmu);
    uint8_t off[1 + ATP_DURABLE_TOPIC_MAX + 4 + 8 + 1];
    struct wbuf b = {off, 0, sizeof(off), false, true};
    wal_put_offset(&b, t, partition, next_offset, stale);
    if (tls.held_pos && tls.ev_d == d) {
        held_flush(d, off, b.len);
    } else if (!atomic_load_explicit(&d->journal_off, memory_order_relaxed)) {
        uint64_t pos = pos_take(d);
        memcpy(tls.enc + WAL_HDR, off, b.len);
        wal_seal(tls.enc, WAL_T_OFFSET, 0, (uint32_t)b.len, pos);
        slot_publish(d, pos, tls.enc, WAL_HDR + (uint32_t)b.len);
    }
    tls.ev_d = NULL;
    if (rc)
        return rc;
    return atomic_load(&d->failed);
}

/* --- acknowledgement ----------------------------------------------------------- */

uint64_t atp_durable_pos_begun(const struct atp_durable *d)
{
    return atomic_load(&d->next) - 1;
}

uint64_t atp_durable_pos_synced(const struct atp_durable *d)
{
    return atomic_load_explicit(&d->synced, memory_order_acquire) - 1;
}

bool atp_durable_acked(const struct atp_durable *d, uint64_t pos)
{
    if (atomic_load_explicit(&d->failed, memory_order_acquire))
        return false;
    if (d->cfg.fsync != ATP_FSYNC_ALWAYS)
        return true;
    /* A3: pairs with R3 where the writer moves synced. */
    return atomic_load_explicit(&d->synced, memory_order_acquire) > pos;
}

int atp_durable_wait(struct atp_durable *d, uint64_t pos, uint64_t timeout_ms)
{
    uint64_t deadline = timeout_ms ? durable_now_us() + timeout_ms * 1000 : 0;
    for (;;) {
        /* W1: read the word before the check (see S1). */
        uint32_t seq = atomic_load(&d->sync_seq);
        if (atomic_load(&d->failed))
            return ATP_EREADONLY;
        if (atp_durable_acked(d, pos))
            return 0;
        uint64_t left = 0;
        if (deadline) {
            uint64_t now = durable_now_us();
            if (now >= deadline)
                return -ETIMEDOUT;
            left = deadline - now;
        }
        atomic_fetch_add(&d->sync_waiters, 1);
        futex_wait(&d->sync_seq, seq, left);
        atomic_fetch_sub(&d->sync_waiters, 1);
    }
}

int atp_durable_notify_add(struct atp_durable *d, int fd)
{
    pthread_mutex_lock(&d->mu);
    uint32_t n = atomic_load(&d->nnotify);
    if (n >= MAX_NOTIFY) {
        pthread_mutex_unlock(&d->mu);
        return ATP_EFULL;
    }
    d->notify[n] = fd;
    atomic_store(&d->nnotify, n + 1); /* read under mu by notify_all */
    pthread_mutex_unlock(&d->mu);
    return 0;
}

void atp_durable_notify_remove(struct atp_durable *d, int fd)
{
    pthread_mutex_lock(&d->mu);
    uint32_t n = atomic_load(&d->nnotify);
    for (uint32_t i = 0; i < n; i++)
        if (d->notify[i] == fd) {
            d->notify[i] = d->notify[n - 1];
            atomic_store(&d->nnotify, n - 1);
            break;
        }
    pthread_mutex_unlock(&d->mu);
}

int atp_durable_failed(const struct atp_durable *d)
{
    return atomic_load(&d->failed);
}

const volatile int *atp_durable_refuse_flag(const struct atp_durable *d)
{
    return &d->refuse;
}

/* --- segments ------------------------------------------------------------------- */

int write_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int fsync_dir(int dirfd)
{
    return fsync(dirfd) ? -errno : 0;
}

int seg_create(int dirfd, uint64_t start, uint64_t prev, const struct atp_store_config *scfg,
               int *ret_fd, uint64_t *ret_len)
{
    char name[64];
    snprintf(name, sizeof(name), SEG_NAME_FMT, start);
    struct wbuf b = {0};
    wb_put(&b, WAL_SEG_MAGIC, 8);
    wb_u32(&b, WAL_SEG_VERSION);
    wb_u32(&b, 0); /* header_len, below */
    wb_u64(&b, start);
    wb_u64(&b, prev);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    wb_u64(&b, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
    chan_put(&b, scfg);
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    uint32_t hl = (uint32_t)b.len + 8;
    memcpy(b.p + 12, &hl, 4);
    wb_u64(&b, XXH3_64bits(b.p, b.len));
    int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = fd < 0 ? -errno : 0;
    if (!rc)
        rc = write_full(fd, b.p, b.len, 0);
    if (!rc && fdatasync(fd))
        rc = -errno;
    if (!rc)
        rc = fsync_dir(dirfd);
    if (rc) {
        if (fd >= 0)
            close(fd);
    } else {
        *ret_fd = fd;
        *ret_len = b.len;
    }
    free(b.p);
    return rc;
}

/* --- the writer thread ------------------------------------------------------------ */

/* Copy consecutive ended records into wbuf; returns the bytes gathered. */
static size_t drain(struct atp_durable *d)
{
    size_t len = 0;
    uint64_t nslots = d->mask + 1;
    uint64_t recs = 0;
    bool drop = atomic_load_explicit(&d->failed, memory_order_relaxed) != 0;
    for (;;) {
        uint64_t p = d->drained;
        struct slot *s = &d->slots[p & d->mask];
        /* A1: pairs with R1 in slot_publish. */
        if (atomic_load_explicit(&s->seq, memory_order_acquire) != 2 * p + 1)
            break;
        uint32_t n = s->len;
        if (n && !drop) {
            if (len + n > d->wbuf_cap)
                break;
            memcpy(d->wbuf + len, n > SLOT_INLINE ? s->ext : s->data, n);
            len += n;
            recs++;
        }
        /* R2: release hands the slot to position p + nslots (A2). */
        atomic_store_explicit(&s->seq, 2 * (p + nslots), memory_order_release);
        d->drained = p + 1;
    }
    if (recs)
        atomic_fetch_add_explicit(&d->st_records, recs, memory_order_relaxed);
    return len;
}

/* Write buf at the segment's end, then fdatasync if asked; 0 or -errno. */
static int io_write(struct atp_durable *d, const uint8_t *buf, size_t len, bool sync,
                    const char **ret_what)
{
    size_t done = 0;
    *ret_what = "write";
    while (done < len || sync) {
        int nsub = 0;
        struct io_uring_sqe *sqe;
        if (done < len) {
            sqe = io_uring_get_sqe(&d->ring);
            io_uring_prep_write(sqe, d->seg_fd, buf + done, (unsigned)(len - done),
                                d->seg_off + done);
            sqe->user_data = UD_WRITE;
            if (sync)
                sqe->flags |= IOSQE_IO_LINK; /* the flush runs only after the write */
            nsub++;
        }
        if (sync) {
            sqe = io_uring_get_sqe(&d->ring);
            io_uring_prep_fsync(sqe, d->seg_fd, IORING_FSYNC_DATASYNC);
            sqe->user_data = UD_FSYNC;
            nsub++;
        }
        uint64_t t0 = durable_now_us();
        int rc = io_uring_submit(&d->ring);
        if (rc < 0)
            return rc;
        int wres = 0, fres = 0;
        for (int i = 0; i < nsub; i++) {
            struct io_uring_cqe *cqe;
            rc = io_uring_wait_cqe(&d->ring, &cqe);
            if (rc == -EINTR) {
                i--;
                continue;
            }
            if (rc < 0)
                return rc;
            if (cqe->user_data == UD_WRITE)
                wres = cqe->res;
            else
                fres = cqe->res;
            io_uring_cqe_seen(&d->ring, cqe);
        }
        if (done < len) {
            if (wres < 0)
                return wres;
            if (wres == 0)
                return -EIO;
            done += (size_t)wres;
        }
        if (sync) {
            if (fres == -ECANCELED && done < len)
                continue; /* a short write cut the link: write the rest, flush again */
            if (fres < 0) {
                *ret_what = "fdatasync";
                return fres;
            }
            if (done >= len) {
                uint64_t us = durable_now_us() - t0;
                atomic_fetch_add_explicit(&d->st_fsyncs, 1, memory_order_relaxed);
                atomic_fetch_add_explicit(&d->st_fsync_sum, us, memory_order_relaxed);
                if (us > atomic_load_explicit(&d->st_fsync_max, memory_order_relaxed))
                    atomic_store_explicit(&d->st_fsync_max, us, memory_order_relaxed);
                break;
            }
        }
    }
    return 0;
}

static void set_synced(struct atp_durable *d, uint64_t to)
{
    if (to > atomic_load_explicit(&d->synced, memory_order_relaxed)) {
        /* R3: release; pairs with A3 in atp_durable_acked. */
        atomic_store_explicit(&d->synced, to, memory_order_release);
        notify_all(d);
    }
}

static void flush_segment(struct atp_durable *d)
{
    if (!d->unsynced || atomic_load(&d->failed))
        return;
    const char *what;
    uint64_t to = atomic_load(&d->written);
    int rc = io_write(d, NULL, 0, true, &what);
    if (rc) {
        durable_fail(d, rc, "fdatasync of log segment " SEG_NAME_FMT " failed", d->seg_start);
        return;
    }
    d->unsynced = false;
    d->last_fsync_us = durable_now_us();
    set_synced(d, to);
}

static void do_rotate(struct atp_durable *d, int mode)
{
    int rc = 0;
    uint64_t pos = 0;
    (void)mode;
    /* Everything begun before the request goes before the cut; begun
     * positions end within microseconds (or at the next event's offset). */
    uint64_t target = d->rot_target;
    {
        uint64_t give_up = durable_now_us() + 5000000;
        while (d->drained < target && durable_now_us() < give_up) {
            size_t len = drain(d);
            if (len && !atomic_load(&d->failed)) {
                const char *what;
                rc = io_write(d, d->wbuf, len, false, &what);
                if (rc) {
                    durable_fail(d, rc, "%s of log segment " SEG_NAME_FMT " failed", what,
                                 d->seg_start);
                    break;
                }
                d->seg_off += len;
                d->unsynced = true;
                atomic_store(&d->written, d->drained);
            } else if (!len) {
                struct timespec ts = {0, 100000};
                nanosleep(&ts, NULL);
            }
        }
        if (d->drained < target && !rc)
            rc = -ETIMEDOUT;
    }
    if (!rc) {
        atomic_store(&d->written, d->drained);
        if (!d->unsynced && !atomic_load(&d->failed))
            set_synced(d, d->drained);
        flush_segment(d);
        if (atomic_load(&d->failed))
            rc = ATP_EREADONLY;
    }
    if (!rc) {
        pos = d->drained;
        if (pos != d->seg_start) {
            int fd;
            uint64_t len;
            rc = seg_create(d->dirfd, pos, d->seg_start, &d->scfg, &fd, &len);
            if (rc) {
                durable_fail(d, rc, "cannot create log segment " SEG_NAME_FMT, pos);
                rc = ATP_EREADONLY;
            } else {
                close(d->seg_fd);
                d->seg_fd = fd;
                d->seg_start = pos;
                d->seg_off = len;
                atomic_store(&d->st_log_bytes, 0);
            }
        }
    }
    pthread_mutex_lock(&d->mu);
    d->rot_rc = rc;
    d->rot_pos = pos;
    atomic_store(&d->rot_req, 0);
    d->rot_seq++;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void *writer_main(void *arg)
{
    struct atp_durable *d = arg;
    int policy = d->cfg.fsync;
    for (;;) {
        uint64_t before = d->drained;
        size_t len = drain(d);
        bool progress = d->drained != before;
        if (len && !atomic_load(&d->failed)) {
            const char *what;
            bool sync = policy == ATP_FSYNC_ALWAYS;
            int rc = io_write(d, d->wbuf, len, sync, &what);
            if (rc) {
                durable_fail(d, rc, "%s of %zu bytes to log segment " SEG_NAME_FMT " failed", what,
                             len, d->seg_start);
            } else {
                d->seg_off += len;
                atomic_fetch_add_explicit(&d->st_bytes, len, memory_order_relaxed);
                atomic_fetch_add_explicit(&d->st_log_bytes, len, memory_order_relaxed);
                atomic_fetch_add_explicit(&d->st_batches, 1, memory_order_relaxed);
                atomic_store(&d->written, d->drained);
                if (sync) {
                    d->last_fsync_us = durable_now_us();
                    set_synced(d, d->drained);
                } else {
                    d->unsynced = true;
                }
            }
        } else if (progress && !atomic_load(&d->failed)) {
            /* Only positions that hold nothing. */
            atomic_store(&d->written, d->drained);
            if (!d->unsynced)
                set_synced(d, d->drained);
        }
        if (policy == ATP_FSYNC_EVERYSEC && d->unsynced &&
            durable_now_us() - d->last_fsync_us >= EVERYSEC_US)
            flush_segment(d);

        int mode = atomic_load(&d->rot_req);
        if (mode) {
            do_rotate(d, mode);
            continue;
        }
        if (progress)
            continue;
        if (atomic_load(&d->stop))
            break;
        /* Nothing ready: nap until a producer wakes us (F1) or a timeout. */
        atomic_store(&d->writer_sleeping, 1);
        struct slot *s = &d->slots[d->drained & d->mask];
        if (atomic_load(&s->seq) == 2 * d->drained + 1 || atomic_load(&d->stop) ||
            atomic_load(&d->rot_req)) {
            atomic_store(&d->writer_sleeping, 0);
            continue;
        }
        uint64_t nap = IDLE_WAIT_MS * 1000;
        if (policy == ATP_FSYNC_EVERYSEC && d->unsynced) {
            uint64_t since = durable_now_us() - d->last_fsync_us;
            nap = since >= EVERYSEC_US ? 1 : EVERYSEC_US - since;
        }
        futex_wait(&d->writer_sleeping, 1, nap);
        atomic_store(&d->writer_sleeping, 0);
    }
    /* Stopping: whatever was written reaches the disk whatever the policy. */
    flush_segment(d);
    return NULL;
}

int wal_start(struct atp_durable *d, uint64_t seg_start, uint64_t seg_prev, uint64_t seg_len,
              bool create)
{
    int rc;
    if (create) {
        rc = seg_create(d->dirfd, seg_start, seg_prev, &d->scfg, &d->seg_fd, &d->seg_off);
        if (rc)
            return rc;
    } else {
        char name[64];
        snprintf(name, sizeof(name), SEG_NAME_FMT, seg_start);
        d->seg_fd = openat(d->dirfd, name, O_WRONLY | O_CLOEXEC);
        if (d->seg_fd < 0)
            return -errno;
        d->seg_off = seg_len;
    }
    d->seg_start = seg_start;
    d->wbuf_cap = WBUF_CAP;
    d->wbuf = malloc(d->wbuf_cap);
    if (!d->wbuf)
        return -ENOMEM;
    if ((rc = io_uring_queue_init(8, &d->ring, 0)) < 0)
        return rc;
    d->ring_ok = true;
    d->last_fsync_us = durable_now_us();
    atomic_store(&d->stop, 0);
    if ((rc = pthread_create(&d->writer, NULL, writer_main, d)) != 0)
        return -rc;
    d->writer_running = true;
    return 0;
}

void wal_stop(struct atp_durable *d)
{
    if (d->writer_running) {
        atomic_store(&d->stop, 1);
        wake_writer(d);
        pthread_join(d->writer, NULL);
        d->writer_running = false;
    }
    if (d->ring_ok) {
        io_uring_queue_exit(&d->ring);
        d->ring_ok = false;
    }
    if (d->seg_fd >= 0) {
        close(d->seg_fd);
        d->seg_fd = -1;
    }
    free(d->wbuf);
    d->wbuf = NULL;
}

int wal_rotate(struct atp_durable *d, bool drain_all, uint64_t *ret_pos)
{
    if (!d->writer_running)
        return ATP_ESTATE;
    pthread_mutex_lock(&d->mu);
    uint64_t seq = d->rot_seq;
    d->rot_target = atomic_load(&d->next);
    atomic_store(&d->rot_req, drain_all ? 2 : 1);
    /* The writer rechecks rot_req after announcing its nap: wake it if it
     * already napped, or it sees the flag. */
    wake_writer(d);
    while (d->rot_seq == seq)
        pthread_cond_wait(&d->cv, &d->mu);
    int rc = d->rot_rc;
    if (!rc)
        *ret_pos = d->rot_pos;
    pthread_mutex_unlock(&d->mu);
    return rc;
}
