/*
 * fuzz_durable.c - the durability files atpd reads back on start: log
 * segments and snapshots through atp_durable_open + atp_durable_recover
 * (atp/durable.h, src/wal.c, src/snapshot.c, src/recover.c; the formats are
 * in src/durable_int.h and docs/DURABILITY.md).
 *
 * The input describes a data folder:
 *
 *   byte 0      flags (below)
 *   then files  separated by FILE_SEP; each file is
 *               u8 kind ('w' segment, 's' snapshot, 't' snapshot left-over,
 *               anything else: a file of another name), i8 name delta, body
 *
 * A segment or snapshot is named after the position its header holds (at
 * byte 16) plus the name delta, so most inputs get past the name check and
 * a delta makes the file disagree with its name. Unless FL_RAW is set, the
 * harness then fixes every checksum the format has, as atpd's writer would
 * have computed them: the header check, each log record's check (walking
 * records by their length field as long as their magic holds), each
 * snapshot block's check and the end block's counts and chain. Mutations
 * then reach the decoders and the replay instead of stopping at the first
 * checksum; with FL_RAW the checks themselves are fuzzed.
 *
 * The files go into a fresh folder under /tmp (removed after each input),
 * which is opened and recovered into a fresh store with the journal on, as
 * main.c does. Properties (durable.h, store.h):
 *  - a failed recovery returns a negative code, says why in
 *    atp_durable_errmsg() and is not ready;
 *  - a successful one is ready, its report is consistent (next position
 *    after the snapshot, no more segments than files), and the store's
 *    invariants hold: allocated and reserved never negative, every item's
 *    atp = clamp(on_hand - allocated - reserved - safety, 0, cap);
 *  - what was recovered survives a clean shutdown: atp_durable_close writes
 *    a snapshot, and recovering the folder again yields the same store
 *    (item by item, override by override, reservation by reservation) and
 *    the same Kafka offsets;
 *  - with FL_LIVE, it also survives a snapshot taken while serving
 *    (atp_durable_snapshot, which rebuilds its own copy from the previous
 *    snapshot and the log) followed by a crash: the folder recovers to the
 *    same store.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../durable_check.h"
#include "durable_int.h"
#include "fuzz.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define FILE_SEP     "~~F~"
#define FILE_SEP_LEN 4
#define MAX_FILES    8

enum {
    FL_RAW = 1,     /* keep the checksums as they are */
    FL_REPAIR = 2,  /* cfg.repair: cut the log at damage */
    FL_SMALL = 4,   /* a store with tight limits (restores run out of room) */
    FL_NOCLOSE = 8, /* stop like a crash instead of the round trip */
    FL_LIVE = 16    /* first a snapshot while serving, then a crash */
};

static void store_config(struct atp_store_config *c, bool small, const struct atp_journal *j)
{
    atp_store_config_defaults(c);
    c->max_items = small ? 8 : 256;
    c->max_skus = small ? 8 : 256;
    c->max_reservations = small ? 4 : 64;
    c->max_overrides = small ? 2 : 64;
    c->nshards = 2;
    c->channels = fuzz_channels;
    c->nchannels = FUZZ_NCHANNELS;
    c->journal = j;
}

/* --- checksum fix-ups --------------------------------------------------- */

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* The header check at hl - 8 when header_len is plausible; the header length or 0. */
static size_t fix_header(uint8_t *p, size_t size, size_t min_hl)
{
    if (size < 16)
        return 0;
    uint32_t hl = get32(p + 12);
    if (hl < min_hl || hl > size)
        return 0;
    uint64_t check = XXH3_64bits(p, hl - 8);
    memcpy(p + hl - 8, &check, 8);
    return hl;
}

/* Fix the header and record checks (unless raw). */
static void fix_segment(uint8_t *p, size_t size, bool raw)
{
    size_t off = raw ? 0 : fix_header(p, size, 44);
    if (raw && size >= 16 && get32(p + 12) >= 44 && get32(p + 12) <= size)
        off = get32(p + 12);
    if (!off)
        return;
    while (size - off >= WAL_HDR) {
        uint8_t *rec = p + off;
        uint16_t magic;
        memcpy(&magic, rec + 4, 2);
        uint32_t len = get32(rec + 8);
        if (magic != WAL_REC_MAGIC || len > WAL_MAX_BODY || size - off - WAL_HDR < len)
            break;
        if (!raw) {
            uint32_t check = (uint32_t)XXH3_64bits(rec + 4, WAL_HDR - 4 + len);
            memcpy(rec, &check, 4);
        }
        off += WAL_HDR + len;
    }
}

static void fix_snapshot(uint8_t *p, size_t size)
{
    size_t off = fix_header(p, size, 24);
    if (!off)
        return;
    uint64_t chain = 0, counts[4] = {0};
    while (size - off >= SNAP_BLK_HDR) {
        uint8_t *h = p + off, *body = h + SNAP_BLK_HDR;
        uint32_t len = get32(h + 12);
        uint8_t section = h[4];
        if (get32(h) != SNAP_BLK_MAGIC || size - off - SNAP_BLK_HDR < len)
            return;
        if (section == SEC_END && len >= 40) {
            memcpy(body, counts, sizeof(counts));
            memcpy(body + 32, &chain, 8);
        }
        uint64_t check = XXH3_64bits(body, len);
        memcpy(h + 16, &check, 8);
        if (section == SEC_END)
            return;
        chain = XXH3_64bits_withSeed(&check, 8, chain);
        if (section >= SEC_ITEMS && section <= SEC_OFFSETS)
            counts[section - 1] += get32(h + 8);
        off += SNAP_BLK_HDR + len;
    }
}

/* --- the folder ------------------------------------------------------------ */

static void write_file(const char *dir, uint8_t kind, int8_t delta, uint8_t *p, size_t size,
                       bool raw, unsigned idx)
{
    char path[512], name[64];
    uint64_t pos = size >= 24 ? get64(p + 16) : (uint64_t)idx;
    pos += (uint64_t)(int64_t)delta;
    switch (kind) {
    case 'w':
        fix_segment(p, size, raw);
        snprintf(name, sizeof(name), SEG_NAME_FMT, pos);
        break;
    case 's':
        if (!raw)
            fix_snapshot(p, size);
        snprintf(name, sizeof(name), SNAP_NAME_FMT, pos);
        break;
    case 't':
        snprintf(name, sizeof(name), SNAP_TMP_FMT, pos);
        break;
    default:
        snprintf(name, sizeof(name), "other-%u", idx);
        break;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        abort();
    for (size_t done = 0; done < size;) {
        ssize_t n = write(fd, p + done, size - done);
        if (n <= 0)
            abort();
        done += (size_t)n;
    }
    close(fd);
}

/* Splits the input into files and writes them; returns how many. */
static unsigned write_files(const char *dir, const uint8_t *data, size_t size, bool raw)
{
    unsigned n = 0;
    size_t start = 0;
    while (start <= size && n < MAX_FILES) {
        const uint8_t *sep = NULL;
        for (size_t i = start; i + FILE_SEP_LEN <= size; i++)
            if (memcmp(data + i, FILE_SEP, FILE_SEP_LEN) == 0) {
                sep = data + i;
                break;
            }
        size_t end = sep ? (size_t)(sep - data) : size;
        if (end - start >= 2) {
            size_t len = end - start - 2;
            uint8_t *body = malloc(len ? len : 1);
            if (!body)
                abort();
            memcpy(body, data + start + 2, len);
            write_file(dir, data[start], (int8_t)data[start + 1], body, len, raw, n);
            free(body);
            n++;
        }
        if (!sep)
            break;
        start = end + FILE_SEP_LEN;
    }
    return n;
}

/* --- properties --------------------------------------------------------- */

static int check_item(const struct atp_item_view *it, void *arg)
{
    struct atp_store *store = arg;
    /* No store call makes allocated negative, so no recovery may either
     * (corpus/durable/snap-negative-allocated). */
    FUZZ_CHECK(it->allocated >= 0);
    FUZZ_CHECK(it->reserved >= 0);
    struct atp_breakdown b;
    FUZZ_CHECK(atp_store_get(store, it->sku, it->loc, 0, &b) == 0);
    FUZZ_CHECK(b.on_hand == it->on_hand && b.allocated == it->allocated &&
               b.reserved == it->reserved);
    FUZZ_CHECK(fuzz_check_atp(store, it->sku, it->loc));
    return 0;
}

static int check_res(const struct atp_reservation *r, void *arg)
{
    (void)arg;
    FUZZ_CHECK(r->channel < FUZZ_NCHANNELS);
    FUZZ_CHECK(r->key_len <= ATP_KEY_MAX);
    FUZZ_CHECK(r->nlines <= ATP_MAX_LINES);
    return 0;
}

struct opened {
    struct atp_durable *d;
    struct atp_store *store;
    struct atp_store_config scfg;
    struct atp_recovery_report rep;
};

static int open_recover(struct opened *o, const char *dir, uint8_t flags)
{
    struct atp_durable_config dc;
    atp_durable_config_defaults(&dc);
    dc.dir = dir;
    dc.fsync = ATP_FSYNC_NO;
    dc.ring_slots = 64;
    dc.snapshot_interval_ms = UINT64_MAX;
    dc.snapshot_log_bytes = UINT64_MAX;
    dc.repair = flags & FL_REPAIR;
    char msg[256];
    memset(o, 0, sizeof(*o));
    FUZZ_CHECK(atp_durable_open(&dc, &o->d, msg) == 0);
    store_config(&o->scfg, flags & FL_SMALL, atp_durable_journal(o->d));
    FUZZ_CHECK(atp_store_new(&o->scfg, &o->store) == 0);
    return atp_durable_recover(o->d, o->store, &o->scfg, &o->rep);
}

static void opened_free(struct opened *o)
{
    atp_durable_free(o->d);
    atp_store_free(o->store);
}

#define MAX_OFFSETS 64

static int offset_cmp(const void *a, const void *b)
{
    const struct atp_durable_offset *x = a, *y = b;
    int c = strcmp(x->topic, y->topic);
    return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

/* The Kafka offsets d holds, sorted, as text (malloc'd). */
static char *offsets_dump(struct atp_durable *d)
{
    static struct atp_durable_offset v[MAX_OFFSETS];
    size_t n = atp_durable_offsets(d, v, MAX_OFFSETS);
    FUZZ_CHECK(n <= MAX_OFFSETS); /* a fuzz input names a few partitions at most */
    qsort(v, n, sizeof(v[0]), offset_cmp);
    size_t cap = n * (ATP_DURABLE_TOPIC_MAX + 48) + 1, len = 0;
    char *out = malloc(cap);
    FUZZ_CHECK(out != NULL);
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        len += (size_t)snprintf(out + len, cap - len, "%s [%" PRId32 "] next %" PRId64 "%s\n",
                                v[i].topic, v[i].partition, v[i].next_offset,
                                v[i].stale ? " stale" : "");
    return out;
}

/*
 * Stop o (as a crash would: nothing more is written), recover the folder
 * again (never with repair: nothing may be damaged now) and check it holds
 * the store `want` (store_dump's text, freed here) and the same Kafka
 * offsets.
 */
static void reopen_same(struct opened *o, const char *dir, uint8_t flags, char *want,
                        const char *what)
{
    char *want_offs = offsets_dump(o->d);
    opened_free(o);
    int rc = open_recover(o, dir, flags & ~FL_REPAIR);
    if (rc)
        fprintf(stderr, "recovering %s: %s\n", what, atp_durable_errmsg(o->d));
    FUZZ_CHECK(rc == 0);
    char *got = store_dump(o->store);
    if (strcmp(want, got) != 0)
        dump_diff(want, got);
    FUZZ_CHECK(strcmp(want, got) == 0);
    char *got_offs = offsets_dump(o->d);
    if (strcmp(want_offs, got_offs) != 0)
        dump_diff(want_offs, got_offs);
    FUZZ_CHECK(strcmp(want_offs, got_offs) == 0);
    free(want);
    free(got);
    free(want_offs);
    free(got_offs);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    char *dir = tmp_dir("fuzz-durable");
    unsigned nfiles = write_files(dir, data + 1, size - 1, flags & FL_RAW);

    struct opened o;
    int rc = open_recover(&o, dir, flags);
    if (getenv("FUZZ_DURABLE_VERBOSE"))
        fprintf(stderr,
                "recover: %d %s (%" PRIu64 " segments, %" PRIu64 " records, %" PRIu64 " items)\n",
                rc, atp_durable_errmsg(o.d), o.rep.segments, o.rep.records, o.rep.items);
    if (rc) {
        FUZZ_CHECK(rc < 0);
        FUZZ_CHECK(atp_durable_errmsg(o.d)[0] != '\0');
        FUZZ_CHECK(!atp_durable_ready(o.d));
        opened_free(&o);
        rm_rf(dir);
        free(dir);
        return 0;
    }
    FUZZ_CHECK(atp_durable_ready(o.d));
    FUZZ_CHECK(o.rep.next_pos >= 1 && o.rep.next_pos >= o.rep.snapshot_pos);
    FUZZ_CHECK(o.rep.segments <= nfiles);
    atp_store_foreach_item(o.store, check_item, o.store);
    atp_store_foreach_reservation(o.store, check_res, NULL);
    struct atp_durable_offset offs[4];
    size_t noffs = atp_durable_offsets(o.d, offs, 4);
    for (size_t i = 0; i < noffs && i < 4; i++)
        FUZZ_CHECK(offs[i].topic[0] != '\0');

    if (flags & FL_LIVE) {
        /* The periodic snapshot, taken while serving, rebuilds a second store
         * from the previous snapshot and the log: after a crash right after
         * it, a start from that snapshot brings back the same store. */
        char *want = store_dump(o.store);
        rc = atp_durable_snapshot(o.d);
        if (rc)
            fprintf(stderr, "live snapshot: %s\n", atp_durable_errmsg(o.d));
        FUZZ_CHECK(rc == 0);
        reopen_same(&o, dir, flags, want, "the live snapshot");
    }
    if (flags & FL_NOCLOSE) {
        opened_free(&o);
        rm_rf(dir);
        free(dir);
        return 0;
    }
    /* Round trip: a clean shutdown's snapshot brings back the same store. */
    char *want = store_dump(o.store);
    rc = atp_durable_close(o.d, o.store);
    if (rc)
        fprintf(stderr, "close: %s\n", atp_durable_errmsg(o.d));
    FUZZ_CHECK(rc == 0);
    reopen_same(&o, dir, flags, want, "the final snapshot");
    opened_free(&o);
    rm_rf(dir);
    free(dir);
    return 0;
}
