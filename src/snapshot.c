/*
 * snapshot.c - snapshot files: write one from a quiescent store, load one
 * into a fresh store; plus the pieces of the folder both log and snapshots
 * use (channel tables, the Kafka offset table, listing the folder).
 *
 * A snapshot holds everything before one log position: items (on_hand,
 * allocated, set sequence: reserved follows from the held reservations),
 * safety overrides, every reservation the store still knows (live ones and
 * finished ones inside the idempotency window, so their keys keep
 * answering) and the next Kafka offset of every partition. It is written to
 * a temporary file, fdatasync'ed, renamed into place and the folder is
 * fsync'ed, so a crash leaves either the old snapshot or the new one. Every
 * block carries an XXH3 of its body and the end block a chain over all
 * block checksums and the counts, so a flipped byte, a lost block or a
 * truncation is found before anything is served.
 *
 * It knows the store's iteration and restore calls and the file format; it
 * knows nothing about the log writer or when snapshots are taken.
 */
#include "durable_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* --- channel tables ---------------------------------------------------------- */

void chan_put(struct wbuf *b, const struct atp_store_config *scfg)
{
    wb_u8(b, (uint8_t)scfg->nchannels);
    for (uint32_t i = 0; i < scfg->nchannels; i++)
        wb_str8(b, atp_slice_cstr(scfg->channels[i].name));
}

int chan_get(struct rbuf *r, struct atp_store *store, struct chan_map *m, char *msg, size_t msgsz)
{
    m->n = rb_u8(r);
    if (m->n > ATP_MAX_CHANNELS) {
        snprintf(msg, msgsz, "channel table of %u entries", m->n);
        return ATP_EINVAL;
    }
    for (uint32_t i = 0; i < m->n; i++) {
        struct atp_slice name = rb_str8(r);
        uint32_t id;
        if (r->bad)
            break;
        if (atp_store_channel_find(store, name, &id) != 0) {
            snprintf(msg, msgsz,
                     "it names channel '%.*s', which the configuration no longer has "
                     "(channels may be added, not removed or renamed)",
                     (int)name.len, name.p);
            return ATP_EINVAL;
        }
        m->to_store[i] = (uint8_t)id;
    }
    if (r->bad) {
        snprintf(msg, msgsz, "truncated channel table");
        return ATP_EINVAL;
    }
    return 0;
}

/* --- Kafka offsets ------------------------------------------------------------- */

_Static_assert(ATP_DURABLE_TOPIC_MAX == ATP_INGEST_TOPIC_MAX, "stored topic names are Kafka's");

int offtab_set(struct offtab *t, struct atp_slice topic, int32_t partition, int64_t next,
               bool stale)
{
    /* Names are checked where they come in (atp_ingest_topic_ok in
     * atp_durable_note_offset, wal_decode and snap_load): a NUL byte, say,
     * would cut the lookups below short. This bounds only the copy. */
    if (topic.len == 0 || topic.len > ATP_DURABLE_TOPIC_MAX)
        return ATP_EINVAL;
    for (size_t i = 0; i < t->n; i++) {
        struct atp_durable_offset *o = &t->v[i];
        if (o->partition == partition && strlen(o->topic) == topic.len &&
            memcmp(o->topic, topic.p, topic.len) == 0) {
            o->next_offset = next;
            o->stale = stale;
            return 0;
        }
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct atp_durable_offset *v = realloc(t->v, cap * sizeof(*v));
        if (!v)
            return -ENOMEM;
        t->v = v;
        t->cap = cap;
    }
    struct atp_durable_offset *o = &t->v[t->n++];
    memcpy(o->topic, topic.p, topic.len);
    o->topic[topic.len] = 0;
    o->partition = partition;
    o->next_offset = next;
    o->stale = stale;
    return 0;
}

void offtab_free(struct offtab *t)
{
    free(t->v);
    *t = (struct offtab){0};
}

/* --- the folder ------------------------------------------------------------------ */

static int parse_name(const char *name, const char *prefix, const char *suffix, uint64_t *ret)
{
    size_t pl = strlen(prefix), sl = strlen(suffix);
    if (strlen(name) != pl + 16 + sl || strncmp(name, prefix, pl) != 0 ||
        strcmp(name + pl + 16, suffix) != 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < 16; i++) {
        char c = name[pl + i];
        unsigned x;
        if (c >= '0' && c <= '9')
            x = (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            x = (unsigned)(c - 'a' + 10);
        else
            return 0;
        v = v << 4 | x;
    }
    *ret = v;
    return 1;
}

static int push(uint64_t **v, size_t *n, uint64_t x)
{
    uint64_t *p = realloc(*v, (*n + 1) * sizeof(**v));
    if (!p)
        return -ENOMEM;
    p[(*n)++] = x;
    *v = p;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int dir_scan(int dirfd, struct dir_list *out, bool remove_tmp)
{
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *dir = fdopendir(fd);
    if (!dir) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct dir_list l = {0};
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(dir)) != NULL) {
        uint64_t v;
        if (parse_name(de->d_name, "wal-", ".log", &v))
            rc = push(&l.segs, &l.nsegs, v);
        else if (parse_name(de->d_name, "snap-", ".snap", &v))
            rc = push(&l.snaps, &l.nsnaps, v);
        else if (remove_tmp && parse_name(de->d_name, "snap-", ".tmp", &v))
            unlinkat(dirfd, de->d_name, 0); /* an interrupted snapshot */
    }
    closedir(dir);
    if (rc) {
        dir_list_free(&l);
        return rc;
    }
    if (l.nsegs > 1)
        qsort(l.segs, l.nsegs, sizeof(uint64_t), cmp_u64);
    if (l.nsnaps > 1)
        qsort(l.snaps, l.nsnaps, sizeof(uint64_t), cmp_u64);
    *out = l;
    return 0;
}

void dir_list_free(struct dir_list *l)
{
    free(l->segs);
    free(l->snaps);
    *l = (struct dir_list){0};
}

/* --- writing ---------------------------------------------------------------------- */

struct snapw {
    int fd;
    uint64_t off;
    struct wbuf blk; /* SNAP_BLK_HDR bytes of header room, then the body */
    uint8_t section;
    uint32_t count;
    uint64_t chain;
    uint64_t counts[4];
    int rc;
    const char *what;
};

static void blk_reset(struct snapw *w, uint8_t section)
{
    w->blk.len = SNAP_BLK_HDR;
    w->section = section;
    w->count = 0;
}

static int blk_flush(struct snapw *w)
{
    if (w->rc)
        return w->rc;
    if (w->blk.oom)
        return w->rc = -ENOMEM;
    if (w->count == 0 && w->section != SEC_END)
        return 0;
    uint8_t *h = w->blk.p;
    uint32_t magic = SNAP_BLK_MAGIC, len = (uint32_t)(w->blk.len - SNAP_BLK_HDR);
    uint64_t check = XXH3_64bits(h + SNAP_BLK_HDR, len);
    memcpy(h, &magic, 4);
    h[4] = w->section;
    h[5] = h[6] = h[7] = 0;
    memcpy(h + 8, &w->count, 4);
    memcpy(h + 12, &len, 4);
    memcpy(h + 16, &check, 8);
    w->chain = XXH3_64bits_withSeed(&check, 8, w->chain);
    if ((w->rc = write_full(w->fd, h, w->blk.len, w->off)) != 0) {
        w->what = "write";
        return w->rc;
    }
    w->off += w->blk.len;
    blk_reset(w, w->section);
    return 0;
}

static int blk_next(struct snapw *w)
{
    w->count++;
    w->counts[w->section - 1]++;
    if (w->blk.len - SNAP_BLK_HDR >= SNAP_BLK_BODY)
        return blk_flush(w);
    return w->rc;
}

static int put_item(const struct atp_item_view *it, void *arg)
{
    struct snapw *w = arg;
    wb_str8(&w->blk, it->sku);
    wb_str8(&w->blk, it->loc);
    wb_varint(&w->blk, zz_enc(it->on_hand));
    wb_varint(&w->blk, zz_enc(it->allocated));
    wb_varint(&w->blk, it->set_seq);
    return blk_next(w);
}

static int put_override(struct atp_slice sku, struct atp_slice loc, uint32_t channel, int64_t units,
                        void *arg)
{
    struct snapw *w = arg;
    wb_str8(&w->blk, sku);
    wb_str8(&w->blk, loc);
    wb_u8(&w->blk, (uint8_t)channel);
    wb_u64(&w->blk, (uint64_t)units);
    return blk_next(w);
}

static int put_res(const struct atp_reservation *r, void *arg)
{
    struct snapw *w = arg;
    wal_put_res(&w->blk, r);
    return blk_next(w);
}

int snap_write(int dirfd, struct atp_store *store, const struct atp_store_config *scfg,
               uint64_t pos, const struct offtab *offs, uint64_t *ret_bytes, char *msg,
               size_t msgsz)
{
    char tmp[64], name[64];
    snprintf(tmp, sizeof(tmp), SNAP_TMP_FMT, pos);
    snprintf(name, sizeof(name), SNAP_NAME_FMT, pos);
    struct snapw w = {.fd = -1, .what = "write"};
    struct wbuf hb = {0};
    w.fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.fd < 0) {
        w.rc = -errno;
        w.what = "create";
        goto out;
    }
    /* header */
    wb_put(&hb, SNAP_MAGIC, 8);
    wb_u32(&hb, SNAP_VERSION);
    wb_u32(&hb, 0);
    wb_u64(&hb, pos);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    wb_u64(&hb, (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
    chan_put(&hb, scfg);
    if (hb.oom) {
        w.rc = -ENOMEM;
        goto out;
    }
    uint32_t hl = (uint32_t)hb.len + 8;
    memcpy(hb.p + 12, &hl, 4);
    wb_u64(&hb, XXH3_64bits(hb.p, hb.len));
    if ((w.rc = write_full(w.fd, hb.p, hb.len, 0)) != 0)
        goto out;
    w.off = hb.len;

    wb_reserve(&w.blk, SNAP_BLK_BODY + 2 * (WAL_HDR + WAL_MAX_BODY));
    blk_reset(&w, SEC_ITEMS);
    int rc = atp_store_foreach_item(store, put_item, &w);
    if (!rc && !(rc = blk_flush(&w))) {
        blk_reset(&w, SEC_OVERRIDES);
        rc = atp_store_foreach_override(store, put_override, &w);
    }
    if (!rc && !(rc = blk_flush(&w))) {
        blk_reset(&w, SEC_RESERVATIONS);
        rc = atp_store_foreach_reservation(store, put_res, &w);
    }
    if (!rc && !(rc = blk_flush(&w))) {
        blk_reset(&w, SEC_OFFSETS);
        for (size_t i = 0; offs && i < offs->n && !rc; i++) {
            const struct atp_durable_offset *o = &offs->v[i];
            wal_put_offset(&w.blk, atp_slice_cstr(o->topic), o->partition, o->next_offset,
                           o->stale);
            rc = blk_next(&w);
        }
    }
    if (!rc && !(rc = blk_flush(&w))) {
        blk_reset(&w, SEC_END);
        for (int i = 0; i < 4; i++)
            wb_u64(&w.blk, w.counts[i]);
        wb_u64(&w.blk, w.chain);
        rc = blk_flush(&w);
    }
    if (rc && !w.rc)
        w.rc = rc;
    if (w.rc)
        goto out;
    if (fdatasync(w.fd)) {
        w.rc = -errno;
        w.what = "fdatasync";
        goto out;
    }
    close(w.fd);
    w.fd = -1;
    if (renameat(dirfd, tmp, dirfd, name)) {
        w.rc = -errno;
        w.what = "rename";
        goto out;
    }
    if ((w.rc = fsync_dir(dirfd)) != 0) {
        /* The file is whole and flushed; only its name may not be. Keep
         * the log before it (the caller does not prune on error). */
        w.what = "fsync of the folder after rename";
        snprintf(msg, msgsz, "snapshot %s: %s: %s", name, w.what, strerror(-w.rc));
        goto done;
    }
    *ret_bytes = w.off;
    goto done;
out:
    snprintf(msg, msgsz, "snapshot %s: %s: %s", tmp, w.what,
             w.rc < 0 && w.rc > -4096 ? strerror(-w.rc) : atp_strerror(w.rc));
    if (w.fd >= 0)
        close(w.fd);
    unlinkat(dirfd, tmp, 0);
done:
    free(hb.p);
    free(w.blk.p);
    return w.rc;
}

/* --- loading ------------------------------------------------------------------------ */

struct mapped {
    const uint8_t *p;
    size_t size;
};

static int map_file(int dirfd, const char *name, struct mapped *m)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st)) {
        int e = -errno;
        close(fd);
        return e;
    }
    m->size = (size_t)st.st_size;
    m->p = NULL;
    if (m->size) {
        void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = -errno;
            close(fd);
            return e;
        }
        madvise(p, m->size, MADV_SEQUENTIAL);
        m->p = p;
    }
    close(fd);
    return 0;
}

static void unmap_file(struct mapped *m)
{
    if (m->p)
        munmap((void *)m->p, m->size);
}

int snap_load(int dirfd, uint64_t pos, struct atp_store *store, struct offtab *offs,
              struct atp_recovery_report *rep, char *msg, size_t msgsz)
{
    char name[64];
    snprintf(name, sizeof(name), SNAP_NAME_FMT, pos);
    struct mapped m = {0};
    int rc = map_file(dirfd, name, &m);
    if (rc) {
        snprintf(msg, msgsz, "snapshot %s: cannot read it: %s", name, strerror(-rc));
        return rc;
    }
    char why[200] = "";
    uint64_t bad_off = 0;
    rc = ATP_EINVAL;
    struct rbuf r = {m.p, m.size, 0, false};
    const uint8_t *magic = rb_take(&r, 8);
    uint32_t version = rb_u32(&r), hl = rb_u32(&r);
    if (!magic || memcmp(magic, SNAP_MAGIC, 8) != 0) {
        snprintf(why, sizeof(why), "not a snapshot (bad magic)");
        goto fail;
    }
    if (version != SNAP_VERSION) {
        snprintf(why, sizeof(why), "format version %u, this atpd reads version %u", version,
                 SNAP_VERSION);
        goto fail;
    }
    uint64_t check;
    if (hl < 24 || hl > m.size) {
        snprintf(why, sizeof(why), "truncated header");
        goto fail;
    }
    memcpy(&check, m.p + hl - 8, 8);
    if (XXH3_64bits(m.p, hl - 8) != check) {
        snprintf(why, sizeof(why), "damaged header (checksum mismatch)");
        goto fail;
    }
    if (rb_u64(&r) != pos) {
        snprintf(why, sizeof(why), "header position does not match the file name");
        goto fail;
    }
    (void)rb_u64(&r); /* created_us */
    struct chan_map cm;
    r.len = hl - 8;
    if (chan_get(&r, store, &cm, why, sizeof(why)))
        goto fail;

    uint64_t off = hl, chain = 0, counts[4] = {0};
    int last_section = 0;
    for (;;) {
        bad_off = off;
        if (m.size - off < SNAP_BLK_HDR) {
            snprintf(why, sizeof(why), "truncated: the file ends before its end block");
            goto fail;
        }
        const uint8_t *h = m.p + off;
        uint32_t bm, count, len;
        memcpy(&bm, h, 4);
        memcpy(&count, h + 8, 4);
        memcpy(&len, h + 12, 4);
        memcpy(&check, h + 16, 8);
        uint8_t section = h[4];
        if (bm != SNAP_BLK_MAGIC ||
            !(section == SEC_END || (section >= SEC_ITEMS && section <= SEC_OFFSETS)) ||
            section < last_section || len > SNAP_BLK_BODY + 2 * (WAL_HDR + WAL_MAX_BODY)) {
            snprintf(why, sizeof(why), "damaged block header");
            goto fail;
        }
        if (m.size - off - SNAP_BLK_HDR < len) {
            snprintf(why, sizeof(why), "truncated: a block runs past the end of the file");
            goto fail;
        }
        const uint8_t *body = h + SNAP_BLK_HDR;
        if (XXH3_64bits(body, len) != check) {
            snprintf(why, sizeof(why), "damaged block (checksum mismatch)");
            goto fail;
        }
        last_section = section;
        off += SNAP_BLK_HDR + len;
        struct rbuf b = {body, len, 0, false};
        if (section == SEC_END) {
            uint64_t want[4];
            for (int i = 0; i < 4; i++)
                want[i] = rb_u64(&b);
            uint64_t want_chain = rb_u64(&b);
            if (b.bad || b.off != len || want_chain != chain ||
                memcmp(want, counts, sizeof(counts)) != 0) {
                snprintf(why, sizeof(why),
                         "blocks are missing or repeated (end block counts or chain differ)");
                goto fail;
            }
            if (off != m.size) {
                snprintf(why, sizeof(why), "%zu unexpected bytes after the end block",
                         (size_t)(m.size - off));
                goto fail;
            }
            break;
        }
        chain = XXH3_64bits_withSeed(&check, 8, chain);
        counts[section - 1] += count;
        for (uint32_t k = 0; k < count; k++) {
            int e = 0;
            if (section == SEC_ITEMS) {
                struct atp_slice sku = rb_str8(&b), loc = rb_str8(&b);
                int64_t oh = zz_dec(rb_varint(&b)), al = zz_dec(rb_varint(&b));
                uint64_t seq = rb_varint(&b);
                if (b.bad)
                    break;
                e = atp_store_restore_item(store, sku, loc, oh, al, seq);
                if (e)
                    snprintf(why, sizeof(why), "item %.*s@%.*s: %s", (int)sku.len, sku.p,
                             (int)loc.len, loc.p, atp_strerror(e));
                else
                    rep->items++;
            } else if (section == SEC_OVERRIDES) {
                struct atp_slice sku = rb_str8(&b), loc = rb_str8(&b);
                uint8_t ch = rb_u8(&b);
                int64_t units = (int64_t)rb_u64(&b);
                if (b.bad)
                    break;
                if (ch >= cm.n) {
                    snprintf(why, sizeof(why), "override with unknown channel %u", ch);
                    e = ATP_EINVAL;
                } else if ((e = atp_store_set_safety(store, sku, loc, cm.to_store[ch], units))) {
                    snprintf(why, sizeof(why), "override for %.*s: %s", (int)sku.len, sku.p,
                             atp_strerror(e));
                } else {
                    rep->overrides++;
                }
            } else if (section == SEC_RESERVATIONS) {
                struct atp_reservation res;
                if (wal_get_res(&b, &res))
                    break;
                if (res.channel >= cm.n) {
                    snprintf(why, sizeof(why), "reservation with unknown channel %u", res.channel);
                    e = ATP_EINVAL;
                } else {
                    res.channel = cm.to_store[res.channel];
                    if ((e = atp_store_restore_reservation(store, &res)))
                        snprintf(why, sizeof(why),
                                 "reservation %" PRIu64 " (key %.*s): %s (is max_reservations "
                                 "smaller than when it was written?)",
                                 res.id, (int)res.key_len, res.key, atp_strerror(e));
                    else
                        rep->reservations++;
                }
            } else {
                struct atp_slice topic = rb_str8(&b);
                int32_t part = (int32_t)rb_u32(&b);
                int64_t next = (int64_t)rb_u64(&b);
                bool stale = rb_u8(&b) & 1;
                if (b.bad)
                    break;
                if (!atp_ingest_topic_ok(topic)) {
                    e = ATP_EINVAL;
                    snprintf(why, sizeof(why),
                             "Kafka offset of partition %" PRId32
                             ": its topic is not a name Kafka allows",
                             part);
                } else if ((e = offtab_set(offs, topic, part, next, stale))) {
                    snprintf(why, sizeof(why), "Kafka offset: %s", atp_strerror(e));
                } else
                    rep->offsets++;
            }
            if (e) {
                rc = e;
                goto fail;
            }
        }
        if (b.bad || b.off != len) {
            snprintf(why, sizeof(why), "malformed records in a block");
            goto fail;
        }
    }
    rep->snapshot_pos = pos;
    rep->snapshot_bytes = m.size;
    unmap_file(&m);
    return 0;
fail:
    snprintf(msg, msgsz,
             "snapshot %s is damaged or does not fit this configuration: %s (at byte %" PRIu64
             " of %zu); refusing to start rather than serve partial state",
             name, why, bad_off, m.size);
    unmap_file(&m);
    return rc;
}
