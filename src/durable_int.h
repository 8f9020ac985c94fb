/*
 * durable_int.h - what wal.c, snapshot.c and recover.c share: the byte
 * codec, the record and file formats (docs/DURABILITY.md describes them for
 * humans), and the durable object itself.
 *
 * Everything on disk is little-endian with fixed-width integers (varints in
 * snapshot items); strings carry a one-byte length. Checksums are XXH3-64.
 */
#ifndef ATP_DURABLE_INT_H
#define ATP_DURABLE_INT_H

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <liburing.h>

#include "atp/durable.h"
#include "atp/ingest.h" /* atp_ingest_topic_ok: the topic names offsets may carry */
#include "atp/store.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the durable formats are written with native little-endian stores"
#endif

/* --- formats ----------------------------------------------------------- */

/*
 * Log record: a 20-byte header then the body.
 *   u32 check   low 32 bits of XXH3-64 over bytes [4, 20 + len)
 *   u16 magic   WAL_REC_MAGIC
 *   u8  type    enum atp_jtype, or WAL_T_OFFSET
 *   u8  flags   WAL_F_OFFSET: a Kafka offset follows the body
 *   u32 len     body bytes (offset part included)
 *   u64 pos     journal position (strictly increasing in the log)
 */
#define WAL_REC_MAGIC 0xA7D5u
#define WAL_HDR       20u
#define WAL_MAX_BODY  8192u /* largest possible record is ~3.6 KiB */
#define WAL_T_OFFSET  64    /* a Kafka offset on its own */
#define WAL_F_OFFSET  1u

/* Segment file "wal-<start pos, 16 hex>.log": header then records. */
#define WAL_SEG_MAGIC   "ATPWAL01"
#define WAL_SEG_VERSION 1u
/*
 *   char magic[8], u32 version, u32 header_len (check included),
 *   u64 start_pos, u64 prev_start (0: first segment ever), u64 created_us,
 *   u8 nchannels, nchannels x str8 name, u64 check (XXH3 of all before it)
 */

/* Snapshot file "snap-<pos, 16 hex>.snap": everything before pos. */
#define SNAP_MAGIC   "ATPSNAP1"
#define SNAP_VERSION 1u
/*
 *   header: char magic[8], u32 version, u32 header_len, u64 pos,
 *   u64 created_us, u8 nchannels, names, u64 check
 *   blocks: u32 SNAP_BLK_MAGIC, u8 section, u8 pad[3], u32 count,
 *           u32 body_len, u64 XXH3(body), body
 *   the last block is SEC_END: body = u64 counts[4], u64 chain
 *   (chain = XXH3 seeded chain over every earlier block's checksum)
 *   and the file ends right after it.
 */
#define SNAP_BLK_MAGIC 0x4B4C4241u /* "ABLK" */
#define SNAP_BLK_HDR   24u
#define SNAP_BLK_BODY  (1u << 20)
enum snap_section {
    SEC_ITEMS = 1,
    SEC_OVERRIDES = 2,
    SEC_RESERVATIONS = 3,
    SEC_OFFSETS = 4,
    SEC_END = 255,
};

/* --- byte codec ---------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom; /* a put did not fit (fixed buffers) or malloc failed */
    bool fixed;
};

void wb_reserve(struct wbuf *b, size_t n);
static inline void wb_put(struct wbuf *b, const void *v, size_t n)
{
    if (b->len + n > b->cap)
        wb_reserve(b, n);
    if (b->oom)
        return;
    memcpy(b->p + b->len, v, n);
    b->len += n;
}
static inline void wb_u8(struct wbuf *b, uint8_t v)
{
    wb_put(b, &v, 1);
}
static inline void wb_u32(struct wbuf *b, uint32_t v)
{
    wb_put(b, &v, 4);
}
static inline void wb_u64(struct wbuf *b, uint64_t v)
{
    wb_put(b, &v, 8);
}
static inline void wb_str8(struct wbuf *b, struct atp_slice s)
{
    uint8_t n = s.len > 255 ? 255 : (uint8_t)s.len;
    wb_u8(b, n);
    wb_put(b, s.p, n);
}
static inline void wb_varint(struct wbuf *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    while (v >= 0x80) {
        t[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    t[n++] = (uint8_t)v;
    wb_put(b, t, n);
}
static inline uint64_t zz_enc(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}
static inline int64_t zz_dec(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

struct rbuf {
    const uint8_t *p;
    size_t len, off;
    bool bad; /* read past the end or a malformed varint */
};

static inline const uint8_t *rb_take(struct rbuf *r, size_t n)
{
    if (r->bad || r->len - r->off < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *q = r->p + r->off;
    r->off += n;
    return q;
}
static inline uint8_t rb_u8(struct rbuf *r)
{
    const uint8_t *q = rb_take(r, 1);
    return q ? *q : 0;
}
static inline uint32_t rb_u32(struct rbuf *r)
{
    uint32_t v = 0;
    const uint8_t *q = rb_take(r, 4);
    if (q)
        memcpy(&v, q, 4);
    return v;
}
static inline uint64_t rb_u64(struct rbuf *r)
{
    uint64_t v = 0;
    const uint8_t *q = rb_take(r, 8);
    if (q)
        memcpy(&v, q, 8);
    return v;
}
static inline struct atp_slice rb_str8(struct rbuf *r)
{
    uint8_t n = rb_u8(r);
    const uint8_t *q = rb_take(r, n);
    return (struct atp_slice){q ? (const char *)q : "", q ? n : 0};
}
static inline uint64_t rb_varint(struct rbuf *r)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b = rb_u8(r);
        if (r->bad)
            return 0;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    r->bad = true;
    return 0;
}

/* --- records ------------------------------------------------------------- */

/* A decoded log record; slices point into the buffer it was decoded from. */
struct wal_rec {
    int type;
    unsigned flags;
    uint64_t pos;
    struct atp_journal_rec j;   /* the journal's fields */
    struct atp_reservation res; /* ATP_J_RESERVE: j.res points here */
    bool has_offset;
    struct atp_slice topic;
    int32_t partition;
    int64_t next_offset;
    bool stale;
};

/* Reservation body (log RESERVE records and snapshot reservations). */
void wal_put_res(struct wbuf *b, const struct atp_reservation *r);
int wal_get_res(struct rbuf *r, struct atp_reservation *out);

/* Body of a journal record (no header). 0 or ATP_EINVAL for a bad type. */
int wal_put_body(struct wbuf *b, const struct atp_journal_rec *rec);
void wal_put_offset(struct wbuf *b, struct atp_slice topic, int32_t partition, int64_t next,
                    bool stale);

/*
 * Append a whole record (header, body, optional offset) to b; `body` holds
 * the body bytes already encoded.
 */
void wal_frame(struct wbuf *b, int type, unsigned flags, uint64_t pos, const uint8_t *body,
               size_t body_len);
/* Fill in the header of the record at rec[0..20+len) (check included). */
void wal_seal(uint8_t *rec, int type, unsigned flags, uint32_t len, uint64_t pos);

/*
 * Parse the record at p[0..avail). Returns the record's total size (> 0)
 * when it is whole and its checksum holds, 0 when p holds only a prefix of
 * a plausible record (a torn end), -1 when it is not a valid record.
 */
long wal_check(const uint8_t *p, size_t avail);
/* Decode a record wal_check() accepted. 0 or ATP_EINVAL (malformed body). */
int wal_decode(const uint8_t *p, size_t size, struct wal_rec *out);

/* --- channel tables (file headers) -------------------------------------- */

struct chan_map {
    uint32_t n;                         /* channels named in the file */
    uint8_t to_store[ATP_MAX_CHANNELS]; /* file id -> store id */
};
void chan_put(struct wbuf *b, const struct atp_store_config *scfg);
/* Read a channel table and map it onto the store's; ATP_EINVAL + msg. */
int chan_get(struct rbuf *r, struct atp_store *store, struct chan_map *m, char *msg, size_t msgsz);

/* --- Kafka offsets ------------------------------------------------------- */

struct offtab {
    struct atp_durable_offset *v;
    size_t n, cap;
};
int offtab_set(struct offtab *t, struct atp_slice topic, int32_t partition, int64_t next,
               bool stale);
void offtab_free(struct offtab *t);

/* --- files --------------------------------------------------------------- */

#define SEG_NAME_FMT  "wal-%016" PRIx64 ".log"
#define SNAP_NAME_FMT "snap-%016" PRIx64 ".snap"
#define SNAP_TMP_FMT  "snap-%016" PRIx64 ".tmp"

struct dir_list {
    uint64_t *segs; /* start positions, sorted */
    size_t nsegs;
    uint64_t *snaps; /* positions, sorted */
    size_t nsnaps;
};
int dir_scan(int dirfd, struct dir_list *out, bool remove_tmp);
void dir_list_free(struct dir_list *l);

/* Write all of buf at off (pwrite loop). 0 or -errno. */
int write_full(int fd, const void *buf, size_t len, uint64_t off);
int fsync_dir(int dirfd);

/* Snapshot of a quiescent store: tmp, fdatasync, rename, fsync of the folder. */
int snap_write(int dirfd, struct atp_store *store, const struct atp_store_config *scfg,
               uint64_t pos, const struct offtab *offs, uint64_t *ret_bytes, char *msg,
               size_t msgsz);
/* Load snapshot `pos` into a fresh store; offsets into offs. */
int snap_load(int dirfd, uint64_t pos, struct atp_store *store, struct offtab *offs,
              struct atp_recovery_report *rep, char *msg, size_t msgsz);

/*
 * Rebuild `store` from the folder: latest snapshot, then every record of
 * the segments with start < upto (UINT64_MAX: all). live: may truncate a
 * torn tail (and with repair, damage) and reports where the log ends.
 */
struct replay_end {
    uint64_t last_pos;  /* last record replayed (0: none) */
    uint64_t last_seg;  /* start of the last segment (0: none) */
    uint64_t last_prev; /* its prev_start */
    uint64_t seg_len;   /* its valid length (where appends go) */
    uint64_t log_bytes; /* bytes of log after the snapshot */
};
int recover_files(int dirfd, struct atp_store *store, uint64_t upto, bool live, bool repair,
                  struct offtab *offs, struct atp_recovery_report *rep, struct replay_end *end,
                  char *msg, size_t msgsz);

/* --- the durable object --------------------------------------------------- */

#define SLOT_INLINE 232
struct slot {
    _Atomic uint64_t seq; /* 2p: free for position p; 2p+1: holds position p */
    uint32_t len;         /* encoded bytes; 0: the position holds nothing */
    uint32_t ext_cap;
    uint8_t *ext; /* heap buffer for records over SLOT_INLINE, reused */
    uint8_t data[SLOT_INLINE];
};

#define MAX_NOTIFY 64

struct atp_durable {
    struct atp_durable_config cfg;
    char *dir;
    int dirfd;
    int lockfd;
    struct atp_journal journal;
    struct atp_store_config scfg; /* for snapshot rebuilds (journal NULL) */
    bool have_scfg;

    /* ring of positions */
    struct slot *slots;
    uint64_t mask;
    _Atomic uint64_t next;   /* next position to hand out */
    _Atomic int journal_off; /* recovery replays with the journal off */

    /* writer thread */
    pthread_t writer;
    bool writer_running;
    _Atomic uint32_t writer_sleeping; /* futex word */
    _Atomic int stop;
    struct io_uring ring;
    bool ring_ok;
    int seg_fd;
    uint64_t seg_start, seg_off;
    uint8_t *wbuf;
    size_t wbuf_cap;
    uint64_t drained;          /* writer: positions < drained consumed */
    bool unsynced;             /* writer: bytes written since the last fdatasync */
    uint64_t last_fsync_us;    /* writer */
    _Atomic uint64_t written;  /* positions < written are written */
    _Atomic uint64_t synced;   /* positions < synced are fdatasync'ed */
    _Atomic uint32_t sync_seq; /* futex word bumped on every advance */
    _Atomic uint32_t sync_waiters;

    /* failure (final) */
    _Atomic int failed;
    volatile int refuse;
    char errmsg[512];
    pthread_mutex_t errmu;

    int notify[MAX_NOTIFY];
    _Atomic uint32_t nnotify;

    /* rotation requests (snapshot thread, close) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int rot_req; /* 1: periodic snapshot; 2: close */
    uint64_t rot_target; /* request: write every position before this first */
    uint64_t rot_pos;    /* result: first position of the new segment */
    int rot_rc;
    uint64_t rot_seq; /* completed rotations */

    /* Kafka offsets as noted */
    pthread_mutex_t offmu;
    struct offtab offs;

    /* snapshot thread */
    pthread_t snapper;
    bool snapper_running;
    pthread_mutex_t snapmu; /* one snapshot at a time */
    pthread_mutex_t smu;    /* guards the fields below */
    pthread_cond_t scv;
    int snap_req;       /* requests pending */
    uint64_t snap_done; /* completed attempts */
    int snap_rc;

    bool recovered;
    bool closed;

    /* statistics */
    _Atomic uint64_t st_records, st_bytes, st_batches, st_fsyncs, st_fsync_max, st_fsync_sum;
    _Atomic uint64_t st_ring_waits, st_log_bytes, st_snapshots, st_snap_fail, st_snap_pos,
        st_snap_bytes, st_snap_us;
};

uint64_t durable_now_us(void);
/* Record the final failure: message, flag, wake everyone. */
void durable_fail(struct atp_durable *d, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Writer thread control (wal.c). */
int wal_start(struct atp_durable *d, uint64_t seg_start, uint64_t seg_prev, uint64_t seg_len,
              bool create);
void wal_stop(struct atp_durable *d);
/* Ask the writer for a new segment; *ret_pos is its start. */
int wal_rotate(struct atp_durable *d, bool drain_all, uint64_t *ret_pos);
/* Create an empty segment file (header) and make it durable. */
int seg_create(int dirfd, uint64_t start, uint64_t prev, const struct atp_store_config *scfg,
               int *ret_fd, uint64_t *ret_len);

#endif /* ATP_DURABLE_INT_H */
