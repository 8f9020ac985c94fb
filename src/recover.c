/*
 * recover.c - recovery (latest snapshot, then the log after it), the
 * durable object's life cycle, and periodic snapshots.
 *
 * Recovery order: the snapshot with the highest position P (everything
 * before P), then every log record at or after P in position order, applied
 * through the ordinary store calls with the journal off (reservations
 * through restore and forget). A record that does not decode, a position
 * that does not increase or lies outside its segment (before the segment's
 * start, or at or past the next one's) or a store call that fails is damage: recovery
 * refuses rather than serve a state nobody acknowledged. The one exception
 * is the end of the last segment: bytes that do not form a whole valid
 * record, with no valid record after them, are a write the crash cut short.
 * It was never acknowledged (acknowledgement waits for its fdatasync), so
 * it is dropped and reported.
 *
 * Periodic snapshots do not read the live store: its iteration is not a
 * point-in-time view, and a reservation's stock moves a moment after its log
 * record, so no copy taken while it serves is consistent with one log
 * position. Instead the log is rotated at position P, and a second store is
 * rebuilt from the previous snapshot and the closed segments (the recovery
 * code itself) and written out as the snapshot at P; then the log before P
 * is deleted. The cost is that second store's memory while it is built. At
 * shutdown the store is quiescent and is written directly.
 *
 * It knows the store's restore calls, the folder layout and the writer's
 * controls (wal.c); it knows nothing about sockets or Kafka.
 */
#include "durable_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define DEFAULT_RING_SLOTS  16384u
#define DEFAULT_INTERVAL_MS 300000u
#define DEFAULT_LOG_BYTES   (256ull << 20)

/* --- policies and config ------------------------------------------------------- */

int atp_fsync_policy_parse(const char *s, int *ret)
{
    static const char *const names[] = {"always", "everysec", "no"};
    for (int i = 0; i < 3; i++)
        if (s && strcmp(s, names[i]) == 0) {
            *ret = i;
            return 0;
        }
    return ATP_EINVAL;
}

const char *atp_fsync_policy_name(int p)
{
    return p == ATP_FSYNC_ALWAYS ? "always" : p == ATP_FSYNC_EVERYSEC ? "everysec" : "no";
}

void atp_durable_config_defaults(struct atp_durable_config *cfg)
{
    *cfg = (struct atp_durable_config){0};
    cfg->fsync = ATP_FSYNC_ALWAYS;
}

/* --- replay -------------------------------------------------------------------------- */

static const char *type_name(int t)
{
    static const char *const n[] = {"?",      "adjust",  "set",    "allocate", "deallocate",
                                    "safety", "reserve", "commit", "release",  "extend",
                                    "expire", "fulfill", "reclaim"};
    if (t == WAL_T_OFFSET)
        return "offset";
    return t > 0 && t <= ATP_J_RECLAIM ? n[t] : "?";
}

static int apply(struct atp_store *st, struct wal_rec *w, const struct chan_map *cm,
                 struct offtab *offs)
{
    const struct atp_journal_rec *j = &w->j;
    int rc = 0;
    switch (w->type) {
    case ATP_J_ADJUST:
        rc = atp_store_adjust(st, j->sku, j->loc, j->qty, NULL);
        break;
    case ATP_J_SET:
        rc = atp_store_set(st, j->sku, j->loc, j->qty, j->seq);
        break;
    case ATP_J_ALLOCATE:
        rc = atp_store_allocate(st, j->sku, j->loc, j->qty);
        break;
    case ATP_J_DEALLOCATE:
        rc = atp_store_deallocate(st, j->sku, j->loc, j->qty);
        break;
    case ATP_J_SAFETY:
        rc = j->channel < cm->n
                 ? atp_store_set_safety(st, j->sku, j->loc, cm->to_store[j->channel], j->qty)
                 : ATP_ENOCHANNEL;
        break;
    case ATP_J_RESERVE:
        if (w->res.channel >= cm->n)
            return ATP_ENOCHANNEL;
        w->res.channel = cm->to_store[w->res.channel];
        rc = atp_store_restore_reservation(st, &w->res);
        break;
    case ATP_J_COMMIT:
        rc = atp_store_commit_logged(st, j->id, j->now_us);
        break;
    case ATP_J_RELEASE:
        rc = atp_store_release(st, j->id, j->now_us, NULL);
        break;
    case ATP_J_EXTEND:
        rc = atp_store_extend(st, j->id, j->ttl_ms, j->now_us, NULL);
        break;
    case ATP_J_EXPIRE:
        rc = atp_store_expire_id(st, j->id, j->now_us);
        break;
    case ATP_J_FULFILL:
        rc = atp_store_fulfill(st, j->key, j->line, NULL);
        break;
    case ATP_J_RECLAIM:
        rc = atp_store_forget_reservation(st, j->id);
        break;
    case WAL_T_OFFSET:
        break;
    default:
        return ATP_EINVAL;
    }
    if (!rc && w->has_offset)
        rc = offtab_set(offs, w->topic, w->partition, w->next_offset, w->stale);
    return rc;
}

/* Is there a whole valid record anywhere in p[from, size) after position last? */
static bool valid_after(const uint8_t *p, size_t from, size_t size, uint64_t last,
                        uint64_t *ret_off)
{
    for (size_t o = from; o + WAL_HDR <= size; o++) {
        if (p[o + 4] != (WAL_REC_MAGIC & 0xff) || p[o + 5] != (WAL_REC_MAGIC >> 8))
            continue;
        long n = wal_check(p + o, size - o);
        uint64_t pos;
        memcpy(&pos, p + o + 12, 8);
        if (n > 0 && pos > last) {
            *ret_off = o;
            return true;
        }
    }
    return false;
}

struct seg_view {
    const uint8_t *p;
    size_t size;
    uint64_t start, prev;
    size_t hl;
    struct chan_map cm;
};

static int seg_open(int dirfd, uint64_t start, struct atp_store *store, struct seg_view *v,
                    char *why, size_t whysz)
{
    char name[64];
    snprintf(name, sizeof(name), SEG_NAME_FMT, start);
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, whysz, "cannot open: %s", strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st)) {
        int e = -errno;
        close(fd);
        snprintf(why, whysz, "cannot stat: %s", strerror(-e));
        return e;
    }
    v->size = (size_t)st.st_size;
    v->p = NULL;
    if (v->size) {
        void *p = mmap(NULL, v->size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = -errno;
            close(fd);
            snprintf(why, whysz, "cannot map: %s", strerror(-e));
            return e;
        }
        v->p = p;
    }
    close(fd);
    struct rbuf r = {v->p, v->size, 0, false};
    const uint8_t *magic = rb_take(&r, 8);
    uint32_t version = rb_u32(&r), hl = rb_u32(&r);
    v->start = rb_u64(&r);
    v->prev = rb_u64(&r);
    (void)rb_u64(&r);
    uint64_t check;
    if (!magic || memcmp(magic, WAL_SEG_MAGIC, 8) != 0) {
        snprintf(why, whysz, "not a log segment (bad magic or empty)");
        goto bad;
    }
    if (version != WAL_SEG_VERSION) {
        snprintf(why, whysz, "format version %u, this atpd reads version %u", version,
                 WAL_SEG_VERSION);
        goto bad;
    }
    if (hl < 44 || hl > v->size) {
        snprintf(why, whysz, "truncated header");
        goto bad;
    }
    memcpy(&check, v->p + hl - 8, 8);
    if (XXH3_64bits(v->p, hl - 8) != check) {
        snprintf(why, whysz, "damaged header (checksum mismatch)");
        goto bad;
    }
    if (v->start != start) {
        snprintf(why, whysz, "header start position does not match the file name");
        goto bad;
    }
    r.len = hl - 8;
    if (chan_get(&r, store, &v->cm, why, whysz))
        goto bad;
    v->hl = hl;
    return 0;
bad:
    if (v->p)
        munmap((void *)v->p, v->size);
    v->p = NULL;
    return ATP_EINVAL;
}

int recover_files(int dirfd, struct atp_store *store, uint64_t upto, bool live, bool repair,
                  struct offtab *offs, struct atp_recovery_report *rep, struct replay_end *end,
                  char *msg, size_t msgsz)
{
    struct dir_list l;
    int rc = dir_scan(dirfd, &l, live);
    if (rc) {
        snprintf(msg, msgsz, "cannot list the data folder: %s", strerror(-rc));
        return rc;
    }
    *end = (struct replay_end){0};
    uint64_t t0 = durable_now_us();
    uint64_t snap = 0;
    if (l.nsnaps) {
        snap = l.snaps[l.nsnaps - 1];
        if ((rc = snap_load(dirfd, snap, store, offs, rep, msg, msgsz)) != 0)
            goto out;
    }
    rep->snapshot_us = durable_now_us() - t0;
    t0 = durable_now_us();

    /* The segments after the snapshot, in order. */
    size_t first = 0;
    while (first < l.nsegs && l.segs[first] < snap)
        first++;
    size_t last = first;
    while (last < l.nsegs && l.segs[last] < upto)
        last++;
    if (snap && (first == last || l.segs[first] != snap)) {
        snprintf(msg, msgsz,
                 "snapshot " SNAP_NAME_FMT " has no log segment " SEG_NAME_FMT
                 ": the log after the snapshot is missing; refusing to start",
                 snap, snap);
        rc = ATP_EINVAL;
        goto out;
    }
    uint64_t last_pos = snap ? snap - 1 : 0;
    for (size_t i = first; i < last; i++) {
        struct seg_view v;
        char why[256];
        char name[64];
        snprintf(name, sizeof(name), SEG_NAME_FMT, l.segs[i]);
        if ((rc = seg_open(dirfd, l.segs[i], store, &v, why, sizeof(why))) != 0) {
            snprintf(msg, msgsz, "log segment %s: %s; refusing to start", name, why);
            goto out;
        }
        uint64_t want_prev = i > first ? l.segs[i - 1] : 0;
        if ((i > first || !snap) && v.prev != want_prev) {
            snprintf(msg, msgsz,
                     "log segment %s follows segment %016" PRIx64 ", which is missing; "
                     "refusing to start",
                     name, v.prev);
            munmap((void *)v.p, v.size);
            rc = ATP_EINVAL;
            goto out;
        }
        rep->segments++;
        size_t off = v.hl;
        while (off < v.size) {
            long n = wal_check(v.p + off, v.size - off);
            struct wal_rec w;
            const char *bad = NULL;
            if (n > 0) {
                if (wal_decode(v.p + off, (size_t)n, &w))
                    bad = "a record whose body does not decode";
                else if (w.pos <= last_pos)
                    bad = "a position that does not increase";
                else if (w.pos < v.start)
                    bad = "a position before its segment's start";
                else if (i + 1 < l.nsegs && w.pos >= l.segs[i + 1])
                    bad = "a position at or past the next segment's start";
            }
            if (n <= 0 || bad) {
                uint64_t vo = 0;
                /* A whole record with a good checksum but wrong content is never a
                 * torn write. */
                bool later =
                    bad || valid_after(v.p, off + 1, v.size, last_pos, &vo) || i + 1 < last;
                if (later && !(repair && live)) {
                    snprintf(msg, msgsz,
                             "log segment %s is damaged at byte %zu (after position %" PRIu64
                             ": %s) and valid records follow it%s, so it is not a torn final "
                             "write; refusing to start (durability repair cuts the log there "
                             "and loses everything after it)",
                             name, off, last_pos, bad ? bad : "not a valid record",
                             i + 1 < last ? " (and later segments)" : "");
                    munmap((void *)v.p, v.size);
                    rc = ATP_EINVAL;
                    goto out;
                }
                if (live) {
                    /* Drop the tail: a torn write, or damage by the operator's choice. */
                    int fd = openat(dirfd, name, O_WRONLY | O_CLOEXEC);
                    rc = fd < 0 ? -errno : 0;
                    if (!rc && ftruncate(fd, (off_t)off))
                        rc = -errno;
                    if (!rc && fdatasync(fd))
                        rc = -errno;
                    if (fd >= 0)
                        close(fd);
                    if (!rc && later) {
                        for (size_t k = i + 1; k < l.nsegs; k++) {
                            char nm[64];
                            snprintf(nm, sizeof(nm), SEG_NAME_FMT, l.segs[k]);
                            unlinkat(dirfd, nm, 0);
                        }
                        rc = fsync_dir(dirfd);
                    }
                    if (rc) {
                        snprintf(msg, msgsz, "cannot cut log segment %s at byte %zu: %s", name, off,
                                 strerror(-rc));
                        munmap((void *)v.p, v.size);
                        goto out;
                    }
                }
                if (later) {
                    rep->repaired_bytes += v.size - off;
                    last = i + 1; /* later segments are gone */
                } else {
                    rep->torn_bytes += v.size - off;
                }
                break;
            }
            if (w.pos >= upto) {
                snprintf(msg, msgsz,
                         "log segment %s holds position %" PRIu64 " beyond its successor's start",
                         name, w.pos);
                munmap((void *)v.p, v.size);
                rc = ATP_EINVAL;
                goto out;
            }
            rc = apply(store, &w, &v.cm, offs);
            if (rc) {
                snprintf(msg, msgsz,
                         "replaying position %" PRIu64 " (%s) from %s at byte %zu failed: %s; "
                         "the log does not fit the snapshot or the configuration, refusing "
                         "to start",
                         w.pos, type_name(w.type), name, off, atp_strerror(rc));
                munmap((void *)v.p, v.size);
                rc = ATP_EINVAL;
                goto out;
            }
            rep->records++;
            last_pos = w.pos;
            off += (size_t)n;
        }
        end->last_seg = v.start;
        end->last_prev = v.prev;
        end->seg_len = off;
        end->log_bytes += off;
        if (v.p)
            munmap((void *)v.p, v.size);
    }
    end->last_pos = last_pos;
    rep->replay_us = durable_now_us() - t0;
    rc = 0;
out:
    dir_list_free(&l);
    return rc;
}

/* --- life cycle ------------------------------------------------------------------------- */

int atp_durable_open(const struct atp_durable_config *cfg, struct atp_durable **ret,
                     char ret_msg[256])
{
    char scratch[256];
    char *msg = ret_msg ? ret_msg : scratch;
    msg[0] = 0;
    if (!cfg || !cfg->dir || !*cfg->dir || cfg->fsync < ATP_FSYNC_ALWAYS ||
        cfg->fsync > ATP_FSYNC_NO || (cfg->ring_slots & (cfg->ring_slots - 1))) {
        snprintf(msg, 256,
                 "durability: a data folder is required, the fsync policy must be "
                 "always, everysec or no, ring slots a power of two");
        return ATP_EINVAL;
    }
    struct atp_durable *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->cfg = *cfg;
    d->dirfd = d->lockfd = d->seg_fd = -1;
    pthread_mutex_init(&d->errmu, NULL);
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    pthread_mutex_init(&d->offmu, NULL);
    pthread_mutex_init(&d->snapmu, NULL);
    pthread_mutex_init(&d->smu, NULL);
    pthread_cond_init(&d->scv, NULL);
    atomic_store(&d->journal_off, 1);
    atomic_store(&d->next, 1);
    atomic_store(&d->written, 1);
    atomic_store(&d->synced, 1);
    int rc = 0;
    if (!d->cfg.ring_slots)
        d->cfg.ring_slots = DEFAULT_RING_SLOTS;
    if (!d->cfg.snapshot_interval_ms)
        d->cfg.snapshot_interval_ms = DEFAULT_INTERVAL_MS;
    if (!d->cfg.snapshot_log_bytes)
        d->cfg.snapshot_log_bytes = DEFAULT_LOG_BYTES;
    d->dir = strdup(cfg->dir);
    d->mask = d->cfg.ring_slots - 1;
    d->slots = aligned_alloc(64, sizeof(struct slot) * d->cfg.ring_slots);
    if (!d->dir || !d->slots) {
        rc = -ENOMEM;
        goto fail;
    }
    memset(d->slots, 0, sizeof(struct slot) * d->cfg.ring_slots);
    if (mkdir(cfg->dir, 0755) && errno != EEXIST) {
        rc = -errno;
        snprintf(msg, 256, "cannot create data folder %s: %s", cfg->dir, strerror(errno));
        goto fail;
    }
    d->dirfd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d->dirfd < 0) {
        rc = -errno;
        snprintf(msg, 256, "cannot open data folder %s: %s", cfg->dir, strerror(errno));
        goto fail;
    }
    d->lockfd = openat(d->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (d->lockfd < 0 || flock(d->lockfd, LOCK_EX | LOCK_NB)) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        snprintf(msg, 256, "data folder %s: %s", cfg->dir,
                 rc == -EBUSY ? "another atpd is using it" : strerror(-rc));
        goto fail;
    }
    *ret = d;
    return 0;
fail:
    atp_durable_free(d);
    return rc;
}

static void *snapper_main(void *arg);

int atp_durable_recover(struct atp_durable *d, struct atp_store *store,
                        const struct atp_store_config *scfg, struct atp_recovery_report *ret)
{
    struct atp_recovery_report rep = {0};
    if (d->recovered || d->closed || !scfg || scfg->journal != &d->journal) {
        snprintf(d->errmsg, sizeof(d->errmsg),
                 "recover once, into a store created with atp_durable_journal()");
        return ATP_ESTATE;
    }
    d->scfg = *scfg;
    d->scfg.journal = NULL;
    d->have_scfg = true;
    atomic_store(&d->journal_off, 1);
    struct replay_end end;
    int rc = recover_files(d->dirfd, store, UINT64_MAX, true, d->cfg.repair, &d->offs, &rep, &end,
                           d->errmsg, sizeof(d->errmsg));
    if (rc)
        return rc;
    atp_store_restore_done(store);

    uint64_t next = end.last_pos + 1;
    if (end.last_seg > next)
        next = end.last_seg;
    if (rep.snapshot_pos > next)
        next = rep.snapshot_pos;
    uint64_t n = d->mask + 1;
    for (uint64_t p = next; p < next + n; p++)
        atomic_store_explicit(&d->slots[p & d->mask].seq, 2 * p, memory_order_relaxed);
    atomic_store(&d->next, next);
    d->drained = next;
    atomic_store(&d->written, next);
    atomic_store(&d->synced, next);
    atomic_store(&d->st_snap_pos, rep.snapshot_pos);
    atomic_store(&d->st_snap_bytes, rep.snapshot_bytes);
    atomic_store(&d->st_log_bytes, end.log_bytes);
    rep.next_pos = next;

    if (end.last_seg)
        rc = wal_start(d, end.last_seg, end.last_prev, end.seg_len, false);
    else
        rc = wal_start(d, next, 0, 0, true);
    if (rc) {
        snprintf(d->errmsg, sizeof(d->errmsg), "cannot start the log writer in %s: %s", d->dir,
                 rc < 0 && rc > -4096 ? strerror(-rc) : atp_strerror(rc));
        wal_stop(d);
        return rc;
    }
    atomic_store(&d->journal_off, 0);
    if ((rc = pthread_create(&d->snapper, NULL, snapper_main, d)) != 0) {
        snprintf(d->errmsg, sizeof(d->errmsg), "cannot start the snapshot thread");
        return -rc;
    }
    d->snapper_running = true;
    d->recovered = true;
    if (ret)
        *ret = rep;
    return 0;
}

bool atp_durable_ready(const struct atp_durable *d)
{
    return d->recovered && !d->closed && !atomic_load(&d->failed);
}

const char *atp_durable_errmsg(const struct atp_durable *d)
{
    return d->errmsg;
}

size_t atp_durable_offsets(struct atp_durable *d, struct atp_durable_offset *out, size_t cap)
{
    pthread_mutex_lock(&d->offmu);
    size_t n = d->offs.n;
    for (size_t i = 0; i < n && i < cap; i++)
        out[i] = d->offs.v[i];
    pthread_mutex_unlock(&d->offmu);
    return n;
}

/* --- snapshots ------------------------------------------------------------------------------ */

/* Delete the log before pos and older snapshots (best effort: recovery skips them). */
static void prune(struct atp_durable *d, uint64_t pos)
{
    struct dir_list l;
    if (dir_scan(d->dirfd, &l, false))
        return;
    char name[64];
    for (size_t i = 0; i < l.nsegs; i++)
        if (l.segs[i] < pos) {
            snprintf(name, sizeof(name), SEG_NAME_FMT, l.segs[i]);
            unlinkat(d->dirfd, name, 0);
        }
    for (size_t i = 0; i < l.nsnaps; i++)
        if (l.snaps[i] < pos) {
            snprintf(name, sizeof(name), SNAP_NAME_FMT, l.snaps[i]);
            unlinkat(d->dirfd, name, 0);
        }
    (void)fsync_dir(d->dirfd);
    dir_list_free(&l);
}

static void snap_done(struct atp_durable *d, int rc, uint64_t pos, uint64_t bytes, uint64_t t0,
                      const char *msg)
{
    if (rc) {
        atomic_fetch_add(&d->st_snap_fail, 1);
        pthread_mutex_lock(&d->errmu);
        if (!atomic_load(&d->failed))
            snprintf(d->errmsg, sizeof(d->errmsg), "%s", msg);
        pthread_mutex_unlock(&d->errmu);
        return;
    }
    atomic_fetch_add(&d->st_snapshots, 1);
    atomic_store(&d->st_snap_pos, pos);
    atomic_store(&d->st_snap_bytes, bytes);
    atomic_store(&d->st_snap_us, durable_now_us() - t0);
}

/* Rotate, rebuild a second store from the closed files, write it (snapmu held). */
static int compact_locked(struct atp_durable *d)
{
    uint64_t t0 = durable_now_us();
    char msg[512] = "";
    uint64_t pos;
    int rc = wal_rotate(d, false, &pos);
    if (rc) {
        snprintf(msg, sizeof(msg), "snapshot: the log could not be rotated: %s", atp_strerror(rc));
        snap_done(d, rc, 0, 0, t0, msg);
        return rc;
    }
    if (pos == atomic_load(&d->st_snap_pos))
        return 0; /* nothing new since the last snapshot */
    struct atp_store *shadow = NULL;
    struct offtab offs = {0};
    struct atp_recovery_report rep = {0};
    struct replay_end end;
    uint64_t bytes = 0;
    if ((rc = atp_store_new(&d->scfg, &shadow)) != 0) {
        snprintf(msg, sizeof(msg), "snapshot: cannot create the store to rebuild: %s",
                 atp_strerror(rc));
    } else if ((rc = recover_files(d->dirfd, shadow, pos, false, false, &offs, &rep, &end, msg,
                                   sizeof(msg))) == 0 &&
               (rc = snap_write(d->dirfd, shadow, &d->scfg, pos, &offs, &bytes, msg,
                                sizeof(msg))) == 0) {
        prune(d, pos);
    }
    atp_store_free(shadow);
    offtab_free(&offs);
    snap_done(d, rc, pos, bytes, t0, msg);
    return rc;
}

int atp_durable_snapshot(struct atp_durable *d)
{
    if (!d->recovered || d->closed)
        return ATP_ESTATE;
    pthread_mutex_lock(&d->snapmu);
    int rc = compact_locked(d);
    pthread_mutex_unlock(&d->snapmu);
    return rc;
}

static void *snapper_main(void *arg)
{
    struct atp_durable *d = arg;
    uint64_t last = durable_now_us();
    pthread_mutex_lock(&d->smu);
    while (!d->snap_req) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&d->scv, &d->smu, &ts);
        if (d->snap_req)
            break;
        uint64_t logb = atomic_load(&d->st_log_bytes);
        uint64_t now = durable_now_us();
        bool due = (logb > 0 && d->cfg.snapshot_interval_ms != UINT64_MAX &&
                    now - last >= d->cfg.snapshot_interval_ms * 1000) ||
                   (d->cfg.snapshot_log_bytes != UINT64_MAX && logb >= d->cfg.snapshot_log_bytes);
        if (!due || atomic_load(&d->failed))
            continue;
        pthread_mutex_unlock(&d->smu);
        pthread_mutex_lock(&d->snapmu);
        (void)compact_locked(d);
        pthread_mutex_unlock(&d->snapmu);
        last = durable_now_us();
        pthread_mutex_lock(&d->smu);
    }
    pthread_mutex_unlock(&d->smu);
    return NULL;
}

static void snapper_stop(struct atp_durable *d)
{
    if (!d->snapper_running)
        return;
    pthread_mutex_lock(&d->smu);
    d->snap_req = 1; /* stop */
    pthread_cond_broadcast(&d->scv);
    pthread_mutex_unlock(&d->smu);
    pthread_join(d->snapper, NULL);
    d->snapper_running = false;
}

int atp_durable_close(struct atp_durable *d, struct atp_store *store)
{
    if (!d->recovered || d->closed)
        return ATP_ESTATE;
    snapper_stop(d);
    uint64_t t0 = durable_now_us();
    pthread_mutex_lock(&d->snapmu);
    uint64_t pos = 0, bytes = 0;
    char msg[512] = "";
    int rc = wal_rotate(d, true, &pos);
    if (rc) {
        snprintf(msg, sizeof(msg), "final snapshot: the log could not be closed: %.400s",
                 rc == ATP_EREADONLY ? d->errmsg : atp_strerror(rc));
    } else if (pos != atomic_load(&d->st_snap_pos)) {
        pthread_mutex_lock(&d->offmu);
        rc = snap_write(d->dirfd, store, &d->scfg, pos, &d->offs, &bytes, msg, sizeof(msg));
        pthread_mutex_unlock(&d->offmu);
        if (!rc)
            prune(d, pos);
        snap_done(d, rc, pos, bytes, t0, msg);
    }
    pthread_mutex_unlock(&d->snapmu);
    wal_stop(d);
    d->closed = true;
    if (rc) {
        pthread_mutex_lock(&d->errmu);
        snprintf(d->errmsg, sizeof(d->errmsg), "%s", msg);
        pthread_mutex_unlock(&d->errmu);
    }
    return rc;
}

void atp_durable_free(struct atp_durable *d)
{
    if (!d)
        return;
    snapper_stop(d);
    wal_stop(d);
    if (d->slots) {
        for (uint64_t i = 0; i <= d->mask; i++)
            free(d->slots[i].ext);
        free(d->slots);
    }
    offtab_free(&d->offs);
    if (d->lockfd >= 0)
        close(d->lockfd);
    if (d->dirfd >= 0)
        close(d->dirfd);
    pthread_mutex_destroy(&d->errmu);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    pthread_mutex_destroy(&d->offmu);
    pthread_mutex_destroy(&d->snapmu);
    pthread_mutex_destroy(&d->smu);
    pthread_cond_destroy(&d->scv);
    free(d->dir);
    free(d);
}

/* --- statistics --------------------------------------------------------------------------------
 */

void atp_durable_stats(const struct atp_durable *d, struct atp_durable_stats *s)
{
    *s = (struct atp_durable_stats){
        .fsync_policy = d->cfg.fsync,
        .failed = atomic_load(&d->failed),
        .ready = atp_durable_ready(d),
        .pos_begun = atomic_load(&d->next) - 1,
        .pos_written = atomic_load(&d->written) - 1,
        .pos_synced = atomic_load(&d->synced) - 1,
        .records = atomic_load(&d->st_records),
        .bytes = atomic_load(&d->st_bytes),
        .batches = atomic_load(&d->st_batches),
        .fsyncs = atomic_load(&d->st_fsyncs),
        .fsync_max_us = atomic_load(&d->st_fsync_max),
        .fsync_sum_us = atomic_load(&d->st_fsync_sum),
        .ring_waits = atomic_load(&d->st_ring_waits),
        .log_bytes = atomic_load(&d->st_log_bytes),
        .snapshots = atomic_load(&d->st_snapshots),
        .snapshot_failures = atomic_load(&d->st_snap_fail),
        .snapshot_pos = atomic_load(&d->st_snap_pos),
        .snapshot_bytes = atomic_load(&d->st_snap_bytes),
        .snapshot_us = atomic_load(&d->st_snap_us),
    };
}

void atp_durable_collect(void *arg, atp_durable_emit_fn emit, void *emit_arg)
{
    struct atp_durable_stats s;
    atp_durable_stats(arg, &s);
    emit(emit_arg, "durable_ready", s.ready);
    emit(emit_arg, "durable_failed", s.failed != 0);
    emit(emit_arg, "durable_fsync_policy", s.fsync_policy);
    emit(emit_arg, "durable_pos_begun", (int64_t)s.pos_begun);
    emit(emit_arg, "durable_pos_written", (int64_t)s.pos_written);
    emit(emit_arg, "durable_pos_synced", (int64_t)s.pos_synced);
    emit(emit_arg, "durable_records", (int64_t)s.records);
    emit(emit_arg, "durable_bytes", (int64_t)s.bytes);
    emit(emit_arg, "durable_batches", (int64_t)s.batches);
    emit(emit_arg, "durable_fsyncs", (int64_t)s.fsyncs);
    emit(emit_arg, "durable_fsync_max_us", (int64_t)s.fsync_max_us);
    emit(emit_arg, "durable_fsync_sum_us", (int64_t)s.fsync_sum_us);
    emit(emit_arg, "durable_ring_waits", (int64_t)s.ring_waits);
    emit(emit_arg, "durable_log_bytes", (int64_t)s.log_bytes);
    emit(emit_arg, "durable_snapshots", (int64_t)s.snapshots);
    emit(emit_arg, "durable_snapshot_failures", (int64_t)s.snapshot_failures);
    emit(emit_arg, "durable_snapshot_pos", (int64_t)s.snapshot_pos);
    emit(emit_arg, "durable_snapshot_bytes", (int64_t)s.snapshot_bytes);
    emit(emit_arg, "durable_snapshot_us", (int64_t)s.snapshot_us);
}
