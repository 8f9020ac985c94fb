/*
 * server.c - io_uring workers, connections, backpressure, limits, drain.
 *
 * Knows sockets, io_uring and the connection state machine. Frames are
 * opaque here: received bytes go to atp_cmd_handle_many() (binary protocol:
 * every whole frame of a receive in one call, so pipelined lookups are read
 * from the store together) or atp_http_handle(), which consume whole frames
 * and append one response each; this file only moves bytes.
 *
 * Threads. Each worker owns one io_uring ring (created on its own thread, so
 * the ring can be SINGLE_ISSUER + DEFER_TASKRUN: completions run only when
 * the worker asks for them, never interrupting it), one SO_REUSEPORT
 * listener with a multishot accept, one eventfd the main thread writes to
 * start a drain, and its connections. Workers share the store (through the
 * cmd context), the open-connection count (an atomic) and nothing else.
 *
 * Receive path, probed once at start:
 *   multishot: one multishot recv per connection picks 4 KiB buffers from a
 *     per-worker provided-buffer ring. Frames are handled straight out of
 *     the ring buffer (zero copy) and the buffer goes back at once; only an
 *     incomplete tail is copied into the connection's input buffer, and the
 *     next receive is appended to it.
 *   plain: one recv at a time into the connection's input buffer (kernels
 *     without buffer rings or multishot recv, or `recv-mode plain`).
 * Either way the recv and send SQEs name the socket by its registered-file
 * slot (below), and the ring fd itself is registered.
 *
 * Clocks: after each wait the worker reads the monotonic clock (timeouts,
 * and the start of the first request's duration for the metrics, chained
 * through atp_cmd_handle_many from one receive to the next) and the wall
 * clock (the store's now_us) once.
 *
 * Send path: each connection has two output buffers. Responses are appended
 * to `out` while at most one send of `snd` is in flight; after a batch of
 * completions every connection with new output gets one send, so all the
 * responses produced by one receive (or several) leave in one send. The
 * buffers are reused: no malloc per request in the steady state.
 *
 * Backpressure: pending output is out.len plus the unsent part of snd. Before
 * each frame, if pending >= output-buffer-limit, the connection pauses: its
 * input stays buffered, its multishot recv is cancelled (plain: not
 * re-armed), so the kernel's socket buffer fills and TCP flow control stops
 * the client. It resumes when a send brings pending under half the limit.
 * Memory per connection stays bounded by the limit plus one response plus
 * what had already been received.
 *
 * Connection states (each conn is in exactly one):
 *   OPEN     reading and answering; on the `active` list, ordered by last
 *            activity, so the idle sweep looks only at the head.
 *   CLOSING  no more requests are read; flushing the output (an error frame
 *            last, if any); on the `closing` list, bounded by LINGER_MS.
 *   LINGER   output flushed and our side shut down (FIN sent); input is read
 *            and dropped until the client closes, so the kernel does not
 *            answer unread input with a reset that could destroy the error
 *            frame in flight. Same list and bound as CLOSING.
 *   DEAD     waiting for its last io_uring operations to complete; then the
 *            fd is closed and the conn goes back to the free list.
 * A conn is released only in the flush phase of the loop, never while a
 * completion handler may still hold it.
 *
 * The quiet check (multishot only). A multishot recv can report a client's
 * bytes with "more to come" and then never report the reset or close that
 * followed them at once. Seen on the development VM's 6.18 kernel by the
 * fuzz_server harness (one fresh server per input; a partial HTTP request,
 * then a reset), rarely: once within 2,000 replays one day, not in 50,000
 * the next. The stuck conn had had one completion (the bytes, "more"), its
 * recv was still armed, and its socket was closed with ECONNRESET pending
 * (tests/fuzz/corpus/server/http-partial-reset). Such a conn
 * would stay open, holding its fd and a max-connections slot, until the
 * idle timeout. So each open conn that has been quiet for QUIET_MS is
 * checked once (until its next activity) with a non-blocking MSG_PEEK
 * recv; if the socket holds anything (an end of file, an error, bytes), its
 * recv is restarted: cancelled, and re-armed by the flush when the cancel
 * completes, so the new recv reports what the socket holds. The peek
 * itself is never taken as the answer: completions of that very recv (the
 * last request's bytes, read from the socket before the peek) may still
 * wait later in the same batch, and must be handled before the end of file
 * is (a first version that closed on the peek dropped such requests).
 * `quiet_next` is the first conn of the active list not checked since its
 * last activity; every conn before it has been, so a tick's work is the
 * conns that went quiet since the last tick, not every idle conn.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "atp/error.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"

#define RING_ENTRIES    1024
#define BUF_COUNT       1024  /* provided buffers per worker (power of two) */
#define BUF_SIZE        4096  /* most requests are under 200 bytes */
#define BGID            1     /* buffer group id */
#define IN_INITIAL      16384 /* input buffer of a connection, first size */
#define IN_SLACK        4096  /* plain recv: free room always offered */
#define KEEP_BUF_MAX    65536 /* buffers larger than this are freed on close */
#define FREE_CONNS_MAX  256   /* closed conns kept for reuse per worker */
#define REJECT_MAX      64    /* rejected conns lingering at once per worker */
#define LINGER_MS       1000  /* bound on CLOSING + LINGER */
#define TICK_MS         50    /* idle sweep period; the idle timeout's precision */
#define DRAIN_TICK_MS   10
#define WAIT_TICK_MS    5    /* held feed requests are looked at again this often */
#define DRAIN_QUIET_MS  20   /* a draining conn closes once this quiet with nothing pending */
#define QUIET_MS        1000 /* multishot: a conn this quiet gets its socket checked once */
#define LISTEN_BACKLOG  4096
#define FIXED_FILES_MAX 16384 /* registered-file slots per worker, at most */

/* user_data: a pointer (conn or worker, 16-byte aligned) plus a tag. */
enum ud_tag {
    UD_IGNORE = 0, /* cancel requests and other fire-and-forget SQEs */
    UD_RECV = 1,
    UD_SEND = 2,
    UD_ACCEPT = 3,
    UD_TICK = 4,
    UD_WAKE = 5,
    UD_HACCEPT = 6, /* the HTTP listener */
    UD_DURABLE = 7, /* the log writer signalled: held responses may go */
    UD_WAIT = 8,    /* look again at the held feed requests */
};
#define UD_TAG_MASK 15ull

enum conn_state {
    C_OPEN,
    C_CLOSING,
    C_LINGER,
    C_DEAD,
};

enum close_reason {
    R_PEER,     /* EOF or reset from the client */
    R_PROTOCOL, /* broken framing */
    R_IDLE,
    R_DRAIN,
    R_REJECT, /* over max-connections */
    R_ERROR,  /* local failure (memory, socket error) */
    R_SLOW,   /* HTTP: a request not whole within http-request-timeout */
};

struct worker;

struct conn {
    struct worker *w;
    int fd;
    int slot; /* its registered-file slot (IOSQE_FIXED_FILE), or -1: plain fd */
    enum conn_state state;
    bool recv_armed;    /* a recv SQE is outstanding */
    bool cancelling;    /* a cancel for the multishot recv was sent */
    bool send_inflight; /* a send SQE is outstanding */
    bool paused;        /* backpressure: not reading */
    bool peer_eof;      /* the client shut down its side */
    bool counted;       /* holds a slot of max-connections */
    bool dirty;         /* on the worker's dirty list */
    bool http;          /* accepted on the HTTP listener: http.h parses its input */
    uint8_t *in;        /* unconsumed input (a partial frame, or paused input) */
    size_t in_len, in_cap;
    size_t recv_off;          /* plain recv: where the one in flight writes into in */
    struct atp_buf out;       /* responses being appended */
    struct atp_buf snd;       /* responses being sent */
    size_t snd_off;           /* bytes of snd already sent */
    uint64_t last_ms;         /* OPEN: last activity; CLOSING/LINGER: when closing began */
    uint64_t req_ms;          /* HTTP: when the request now pending began to arrive */
    struct conn *prev, *next; /* active or closing list */
    struct conn *dirty_next;
    uint64_t hold_pos;      /* durability: out waits until this log position is acked */
    struct conn *held_next; /* on the worker's held list */
    bool held;
    bool waiting;                       /* a feed request at the head of in waits (paused too) */
    bool wait_over;                     /* answer the held request now (the client shut down) */
    bool wait_fresh;                    /* held since on_wait last handled it */
    uint64_t wait_pos;                  /* the feed's position when on_wait last handled it */
    struct atp_wait wait;               /* cmd.h: that request's deadline */
    struct conn *wait_prev, *wait_next; /* the worker's waiting list */
} __attribute__((aligned(16)));

struct clist {
    struct conn *head, *tail;
};

/* Written by the owning worker only (single writer), read by STATS anywhere. */
struct worker_stats {
    uint64_t accepted;
    uint64_t rejected;
    uint64_t closed_idle;
    uint64_t closed_protocol;
    uint64_t closed_peer;
    uint64_t closed_drain;
    uint64_t closed_slow; /* HTTP requests cut off by http-request-timeout */
    uint64_t requests;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t pauses;
    uint64_t recv_restarts; /* multishot recvs the quiet check restarted */
    uint64_t feed_waits;    /* feed requests held for a change */
    uint64_t feed_waiting;  /* connections holding one now (a gauge) */
};

/* A relaxed load and store: plain instructions on x86, no lock prefix; a
 * concurrent reader sees each counter whole. */
#define STAT_ADD(w, field, n)                                                                      \
    __atomic_store_n(&(w)->st.field, __atomic_load_n(&(w)->st.field, __ATOMIC_RELAXED) + (n),      \
                     __ATOMIC_RELAXED)

struct worker {
    struct atp_server *srv;
    uint32_t idx;
    pthread_t thread;
    bool thread_started;
    int lfd;  /* listener; -1 once closed */
    int hlfd; /* HTTP listener; -1 if none or closed */
    int efd;  /* eventfd: drain requests */
    int dfd;  /* eventfd the log writer signals; -1 without durability */
    uint64_t dval;
    struct conn *held;    /* conns whose output waits for the log */
    struct conn *waiters; /* conns whose head request waits for a feed change */
    bool wait_armed;      /* the UD_WAIT timeout is pending */
    struct __kernel_timespec wait_ts;
    struct io_uring ring;
    bool ring_ok;
    struct atp_cmd_ctx ctx;   /* this worker's copy */
    struct atp_http_ctx hctx; /* this worker's HTTP context; hctx.cmd is &ctx */
    bool multishot;
    struct io_uring_buf_ring *br;
    size_t br_bytes;
    uint8_t *bufs;
    int br_pending; /* buffers returned since the last advance */
    int *slots;     /* free registered-file slots (a stack), NULL without */
    uint32_t nslots_free;
    struct clist active, closing;
    struct conn *quiet_next; /* first active conn not checked since its last activity */
    struct conn *free_list;
    uint32_t nfree;
    struct conn *dirty;
    uint32_t nconns;     /* live conns of this worker, any state */
    uint32_t nrejecting; /* of which are rejected ones */
    bool accept_armed;
    bool accept_retry;  /* re-arm accept at the next tick */
    bool haccept_armed; /* the same two for the HTTP listener */
    bool haccept_retry;
    uint64_t slow_scan_ms;   /* next look for HTTP requests arriving too slowly */
    uint64_t accept_warn_ms; /* next time an accept failure may be logged */
    bool draining;
    uint64_t drain_deadline_ms;
    struct __kernel_timespec tick_ts;
    uint64_t wake_val;
    uint64_t now_us; /* wall clock for the store, read once per batch */
    uint64_t now_ms; /* monotonic, for timeouts */
    uint64_t t_ns;   /* monotonic ns: the metrics clock at the end of the last
                        request handled, or the batch's reading (cmd.h) */
    int error;
    struct worker_stats st;
} __attribute__((aligned(64)));

struct atp_server {
    struct atp_server_config cfg;
    char bind[ATP_CONFIG_BIND_MAX];
    char addr[ATP_CONFIG_BIND_MAX + 16];
    uint16_t port;
    char http_bind[ATP_CONFIG_BIND_MAX];
    char http_addr[ATP_CONFIG_BIND_MAX + 16];
    uint16_t http_port; /* 0 when there is no HTTP listener */
    uint32_t nworkers;
    struct worker *workers;
    bool multishot;
    uint32_t open;     /* counted connections, all workers (atomic) */
    int drain;         /* set once by atp_server_drain (atomic) */
    int unready;       /* set once by atp_server_unready or _drain (atomic): /readyz 503 */
    size_t hard_limit; /* atp_buf.limit: the soft limit plus room for one response */
    sem_t ready;       /* each worker posts once its ring is set up */
};

/* --- small helpers --------------------------------------------------------- */

/* After each wait: one monotonic and one wall-clock reading per batch. The
 * monotonic one is the metrics clock, so it also starts the first request's
 * duration (atp_cmd_handle_many) and serves the timeouts in ms. */
static void clocks_read(struct worker *w)
{
    w->t_ns = atp_metrics_now_ns();
    w->now_ms = w->t_ns / 1000000u;
    w->now_us = atp_now_us();
}

static inline uint64_t ud_make(const void *p, enum ud_tag tag)
{
    return (uint64_t)(uintptr_t)p | (uint64_t)tag;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    while (sqe == NULL) {
        /* SQ full: submit what is queued and try again. */
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

static size_t pending_out(const struct conn *c)
{
    return c->out.len + (c->snd.len - c->snd_off);
}

static void list_push(struct clist *l, struct conn *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void list_remove(struct clist *l, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static void mark_dirty(struct worker *w, struct conn *c)
{
    if (!c->dirty) {
        c->dirty = true;
        c->dirty_next = w->dirty;
        w->dirty = c;
    }
}

/* The active list keeps quiet_next (see the quiet check above) in place. */
static void active_push(struct worker *w, struct conn *c)
{
    list_push(&w->active, c);
    if (w->quiet_next == NULL)
        w->quiet_next = c;
}

static void active_remove(struct worker *w, struct conn *c)
{
    if (w->quiet_next == c)
        w->quiet_next = c->next;
    list_remove(&w->active, c);
}

/* Activity on an open connection: it moves to the young end of the list. */
static void touch(struct worker *w, struct conn *c)
{
    c->last_ms = w->now_ms;
    if (c->state != C_OPEN)
        return;
    if (w->active.tail != c) {
        active_remove(w, c);
        active_push(w, c);
    } else if (w->quiet_next == NULL) {
        w->quiet_next = c; /* the tail, checked before: to be checked again */
    }
}

/* --- registered files ------------------------------------------------------- */

/*
 * Each connection's socket also sits in a slot of the ring's registered-file
 * table, and its recv and send SQEs name the slot (IOSQE_FIXED_FILE): the
 * kernel then skips the fd table lookup and the file reference count of
 * every operation (fget/fput were about 1.3% of the worker's time at
 * pipeline 1). The fd stays open beside it for shutdown() and close(). A
 * slot costs one register call on accept and one on release. Without the
 * table (old kernel, no memory) or with every slot taken, a conn uses its
 * plain fd.
 */
static void slots_init(struct worker *w)
{
    uint64_t n = (uint64_t)w->srv->cfg.max_connections + REJECT_MAX;
    struct rlimit rl;
    if (n > FIXED_FILES_MAX)
        n = FIXED_FILES_MAX;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && n > rl.rlim_cur)
        n = rl.rlim_cur; /* the kernel refuses a larger table */
    int *slots = n ? malloc(n * sizeof(*slots)) : NULL;
    if (slots == NULL)
        return;
    int rc = io_uring_register_files_sparse(&w->ring, (unsigned)n);
    if (rc != 0) {
        atp_log(ATP_LOG_DEBUG, "no registered files, plain fds", LOG_UINT("worker", w->idx),
                LOG_ERR(rc));
        free(slots);
        return;
    }
    for (uint64_t i = 0; i < n; i++)
        slots[i] = (int)(n - 1 - i); /* slot 0 on top */
    w->slots = slots;
    w->nslots_free = (uint32_t)n;
}

/* A free slot now holding fd, or -1. */
static int slot_attach(struct worker *w, int fd)
{
    if (w->nslots_free == 0)
        return -1;
    int slot = w->slots[w->nslots_free - 1];
    if (io_uring_register_files_update(&w->ring, (unsigned)slot, &fd, 1) != 1)
        return -1;
    w->nslots_free--;
    return slot;
}

/* Empty c's slot (no operation of c is in flight): the table's reference
 * would otherwise keep the socket open after close(fd). */
static void slot_detach(struct worker *w, struct conn *c)
{
    if (c->slot < 0)
        return;
    int none = -1;
    int rc = io_uring_register_files_update(&w->ring, (unsigned)c->slot, &none, 1);
    if (rc == 1)
        w->slots[w->nslots_free++] = c->slot;
    else
        atp_log(ATP_LOG_WARN, "registered file slot not emptied", LOG_INT("slot", c->slot),
                LOG_ERR(rc < 0 ? rc : -EIO));
    c->slot = -1;
}

/* --- connections: allocation ------------------------------------------------ */

static struct conn *conn_new(struct worker *w, int fd)
{
    struct conn *c = w->free_list;
    if (c) {
        w->free_list = c->next;
        w->nfree--;
    } else {
        c = aligned_alloc(16, sizeof(*c));
        if (c == NULL)
            return NULL;
        memset(c, 0, sizeof(*c));
    }
    uint8_t *in = c->in;
    size_t in_cap = c->in_cap;
    struct atp_buf out = c->out, snd = c->snd;
    memset(c, 0, sizeof(*c));
    c->in = in;
    c->in_cap = in_cap;
    c->out = out;
    c->snd = snd;
    c->out.len = c->snd.len = 0;
    c->out.limit = c->snd.limit = w->srv->hard_limit;
    c->w = w;
    c->fd = fd;
    c->slot = slot_attach(w, fd);
    c->state = C_OPEN;
    c->last_ms = w->now_ms;
    w->nconns++;
    return c;
}

static void buf_trim(struct atp_buf *b)
{
    if (b->cap > KEEP_BUF_MAX) {
        atp_buf_free(b);
        memset(b, 0, sizeof(*b));
    }
    b->len = 0;
}

static void conn_release(struct worker *w, struct conn *c)
{
    if (c->held) {
        for (struct conn **pp = &w->held; *pp; pp = &(*pp)->held_next)
            if (*pp == c) {
                *pp = c->held_next;
                break;
            }
        c->held = false;
    }
    slot_detach(w, c);
    close(c->fd);
    c->fd = -1;
    w->nconns--;
    if (c->counted)
        __atomic_fetch_sub(&w->srv->open, 1, __ATOMIC_RELAXED);
    else
        w->nrejecting--;
    if (w->nfree >= FREE_CONNS_MAX) {
        free(c->in);
        atp_buf_free(&c->out);
        atp_buf_free(&c->snd);
        free(c);
        return;
    }
    if (c->in_cap > KEEP_BUF_MAX) {
        free(c->in);
        c->in = NULL;
        c->in_cap = 0;
    }
    c->in_len = 0;
    buf_trim(&c->out);
    buf_trim(&c->snd);
    c->next = w->free_list;
    w->free_list = c;
    w->nfree++;
}

static void conn_free_all(struct worker *w)
{
    struct conn *c;
    while ((c = w->free_list) != NULL) {
        w->free_list = c->next;
        free(c->in);
        atp_buf_free(&c->out);
        atp_buf_free(&c->snd);
        free(c);
    }
    w->nfree = 0;
}

/* Grow the input buffer to hold `need` bytes in all. */
static int in_reserve(struct worker *w, struct conn *c, size_t need)
{
    if (need <= c->in_cap)
        return 0;
    /* Bound: one maximal frame plus a paused backlog. Beyond it the client
     * is hostile (the cmd layer refuses longer frames), so it is cut off. */
    size_t bound =
        (size_t)w->ctx.max_frame + w->srv->cfg.output_buffer_limit + (size_t)BUF_COUNT * BUF_SIZE;
    if (need > bound)
        return -ENOBUFS;
    size_t cap = c->in_cap ? c->in_cap : IN_INITIAL;
    while (cap < need)
        cap *= 2;
    if (cap > bound)
        cap = bound;
    uint8_t *p = realloc(c->in, cap);
    if (p == NULL)
        return -ENOMEM;
    c->in = p;
    c->in_cap = cap;
    return 0;
}

/* --- held feed requests ------------------------------------------------------ */

static void arm_wait(struct worker *w)
{
    w->wait_ts.tv_sec = 0;
    w->wait_ts.tv_nsec = (long long)WAIT_TICK_MS * 1000000;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_timeout(sqe, &w->wait_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_WAIT));
    w->wait_armed = true;
}

/* c's head request waits for a feed change: stop reading, look again soon. */
static void wait_start(struct worker *w, struct conn *c)
{
    c->paused = true;
    c->wait_fresh = true; /* handled at the next look whatever the feed did */
    if (c->waiting)
        return;
    c->waiting = true;
    c->wait_prev = NULL;
    c->wait_next = w->waiters;
    if (w->waiters)
        w->waiters->wait_prev = c;
    w->waiters = c;
    STAT_ADD(w, feed_waiting, 1);
    if (!w->wait_armed)
        arm_wait(w);
}

/* Off the waiting list (answered, closing or released); paused is the caller's. */
static void wait_end(struct worker *w, struct conn *c)
{
    if (!c->waiting)
        return;
    if (c->wait_prev)
        c->wait_prev->wait_next = c->wait_next;
    else
        w->waiters = c->wait_next;
    if (c->wait_next)
        c->wait_next->wait_prev = c->wait_prev;
    c->wait_prev = c->wait_next = NULL;
    c->waiting = false;
    /* c->wait.until_us stays: it belongs to the request at the head of the
     * input, which may be held again (after a pause for output, say) and
     * keeps its deadline; answering it clears it (cmd.c). */
    STAT_ADD(w, feed_waiting, (uint64_t)-1);
}

/* --- connections: state changes ---------------------------------------------- */

static void count_close(struct worker *w, enum close_reason why)
{
    switch (why) {
    case R_PEER:
        STAT_ADD(w, closed_peer, 1);
        break;
    case R_PROTOCOL:
        STAT_ADD(w, closed_protocol, 1);
        break;
    case R_IDLE:
        STAT_ADD(w, closed_idle, 1);
        break;
    case R_DRAIN:
        STAT_ADD(w, closed_drain, 1);
        break;
    case R_SLOW:
        STAT_ADD(w, closed_slow, 1);
        break;
    case R_REJECT:
    case R_ERROR:
        break;
    }
}

/* Stop everything now; the conn is released once its operations complete. */
static void conn_kill(struct worker *w, struct conn *c)
{
    if (c->state == C_DEAD)
        return;
    if (c->state == C_OPEN)
        active_remove(w, c);
    else
        list_remove(&w->closing, c);
    wait_end(w, c);
    c->state = C_DEAD;
    /*
     * Shutting the socket down wakes a pending recv (it returns 0) and a
     * send waiting for room (EPIPE). No cancel-by-fd: without DEFER_TASKRUN
     * the completions may arrive in this very batch, the fd be closed in the
     * flush and reused by an accept before such a cancel is submitted.
     */
    if (c->recv_armed || c->send_inflight)
        shutdown(c->fd, SHUT_RDWR);
    mark_dirty(w, c);
}

/*
 * Stop reading requests; flush what is pending (an error frame already
 * appended, if any), then shut our side and linger. Idempotent.
 */
static void conn_begin_close(struct worker *w, struct conn *c, enum close_reason why)
{
    if (c->state != C_OPEN)
        return;
    count_close(w, why);
    active_remove(w, c);
    c->state = C_CLOSING;
    c->last_ms = w->now_ms;
    c->in_len = 0; /* unanswered input is dropped */
    c->paused = false;
    wait_end(w, c);
    list_push(&w->closing, c);
    mark_dirty(w, c);
    if (atp_log_enabled(ATP_LOG_DEBUG)) {
        static const char *const names[] = {"peer",   "protocol", "idle", "drain",
                                            "reject", "error",    "slow"};
        atp_log(ATP_LOG_DEBUG, "closing connection", LOG_INT("fd", c->fd),
                LOG_STR("reason", names[why]), LOG_UINT("worker", w->idx));
    }
}

/* Append an unattributed error frame and close; on failure, just close. */
static void conn_close_with_error(struct worker *w, struct conn *c, int code, const char *detail,
                                  enum close_reason why)
{
    /* Without room for the frame, the close alone has to tell. An idle HTTP
     * keep-alive connection is closed without a word, as browsers expect. */
    if (!c->http)
        (void)atp_cmd_error(&c->out, 0, code, detail);
    else if (why != R_IDLE)
        (void)atp_http_error(&c->out, code, detail);
    conn_begin_close(w, c, why);
}

/*
 * Durability: the requests just handled for c created log positions up to
 * tls_pos (or answered from state others may still be logging: the barrier);
 * c's output then waits until that position is acknowledged.
 */
static void hold_note(struct worker *w, struct conn *c, uint64_t pos0)
{
    uint64_t pos = atp_durable_tls_pos();
    if (atp_durable_tls_take_barrier())
        pos = atp_durable_pos_begun(w->srv->cfg.durable);
    else if (pos == pos0)
        return;
    if (pos > c->hold_pos)
        c->hold_pos = pos;
}

/* Does c's output still wait for the log? If so c goes on the held list. */
static bool durable_holds(struct worker *w, struct conn *c)
{
    struct atp_durable *d = w->srv->cfg.durable;
    if (atp_durable_acked(d, c->hold_pos)) {
        c->hold_pos = 0;
        return false;
    }
    if (atp_durable_failed(d)) {
        /* Never acknowledged, never sent: drop the answers and close. */
        c->out.len = 0;
        c->hold_pos = 0;
        conn_begin_close(w, c, R_ERROR);
        return false;
    }
    if (!c->held) {
        c->held = true;
        c->held_next = w->held;
        w->held = c;
    }
    return true;
}

/* Backpressure: c's output reached the limit; stop reading it. */
static void pause_conn(struct worker *w, struct conn *c)
{
    if (!c->paused) {
        c->paused = true;
        STAT_ADD(w, pauses, 1);
    }
}

/*
 * Hand whole frames to the cmd layer (binary protocol: all the frames of the
 * buffer in one call, so pipelined GETs are read from the store together;
 * HTTP: one request at a time). Returns the bytes consumed; stops at a
 * partial frame, at the output limit (pausing the conn) or at broken framing
 * (closing it; everything is then "consumed").
 */
static size_t consume(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    uint64_t handled = 0;
    uint64_t pos0 = atp_durable_tls_pos();
    size_t limit = w->srv->cfg.output_buffer_limit;
    /* A feed request that asks to wait may be held (cmd.h, struct atp_wait):
     * the handlers then stop before it and set c->wait.parked. */
    c->wait.max_ms = w->draining || c->wait_over ? 0 : (uint32_t)w->srv->cfg.feed_wait_max_ms;
    c->wait.parked = false;
    w->ctx.wait = &c->wait;
    if (!c->http && n > 0) {
        size_t unsent = c->snd.len - c->snd_off;
        uint32_t frames = 0;
        int err = 0;
        off = atp_cmd_handle_many(&w->ctx, p, n, &c->out, w->now_us,
                                  unsent < limit ? limit - unsent : 0, &w->t_ns, &frames, &err);
        handled = frames;
        if (err) {
            conn_begin_close(w, c, R_PROTOCOL);
            off = n;
        } else if (off < n && pending_out(c) >= limit) {
            pause_conn(w, c);
        }
    }
    while (c->http && off < n) {
        if (pending_out(c) >= limit) {
            pause_conn(w, c);
            break;
        }
        ssize_t r = atp_http_handle(&w->hctx, p + off, n - off, &c->out, w->now_us);
        if (r > 0) {
            off += (size_t)r;
            handled++;
            continue;
        }
        if (r < 0) {
            handled++;
            /* -ECONNRESET is "Connection: close" answered, not an error. */
            conn_begin_close(w, c, r == -ECONNRESET ? R_PEER : R_PROTOCOL);
            off = n;
        }
        break;
    }
    w->ctx.wait = NULL;
    if (c->wait.held) {
        STAT_ADD(w, feed_waits, c->wait.held);
        c->wait.held = 0;
    }
    if (c->wait.parked && c->state == C_OPEN)
        wait_start(w, c);
    else if (c->waiting)
        wait_end(w, c);
    if (off > 0)
        c->req_ms = w->now_ms; /* what is left is a request that begins now */
    if (handled)
        STAT_ADD(w, requests, handled);
    if (w->srv->cfg.durable)
        hold_note(w, c, pos0);
    if (pending_out(c) > 0 || c->state != C_OPEN)
        mark_dirty(w, c);
    return off;
}

/* Process the buffered input (after a resume, or in plain mode). */
static void consume_buffered(struct worker *w, struct conn *c)
{
    if (c->in_len == 0)
        return;
    size_t used = consume(w, c, c->in, c->in_len);
    if (c->state != C_OPEN) {
        c->in_len = 0;
        return;
    }
    if (used > 0) {
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
    }
}

/* New bytes from the socket (p points into a provided buffer or c->in). */
static void conn_input(struct worker *w, struct conn *c, const uint8_t *p, size_t n)
{
    if (c->in_len == 0 && !c->paused) {
        /* Zero-copy: frames straight out of the ring buffer. */
        size_t used = consume(w, c, p, n);
        if (c->state != C_OPEN || used == n)
            return;
        p += used;
        n -= used;
    }
    /* Keep the tail (a partial frame, or input while paused). */
    int rc = in_reserve(w, c, c->in_len + n);
    if (rc != 0) {
        atp_log(ATP_LOG_WARN, "input buffer limit reached, closing", LOG_INT("fd", c->fd),
                LOG_ERR(rc));
        conn_close_with_error(w, c, ATP_ETOOLARGE, "input buffer limit", R_ERROR);
        return;
    }
    memcpy(c->in + c->in_len, p, n);
    c->in_len += n;
    if (!c->paused && c->in_len > n)
        consume_buffered(w, c); /* the tail completed an earlier partial frame */
}

/* --- submissions ------------------------------------------------------------ */

/* What an SQE of c names: its registered slot (with IOSQE_FIXED_FILE) or fd. */
static inline int conn_sqe_fd(const struct conn *c)
{
    return c->slot >= 0 ? c->slot : c->fd;
}

static void arm_recv(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe;
    if (w->multishot) {
        sqe = get_sqe(w);
        io_uring_prep_recv_multishot(sqe, conn_sqe_fd(c), NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
    } else {
        if (c->state == C_LINGER)
            c->in_len = 0; /* lingering input is read and dropped */
        if (in_reserve(w, c, c->in_len + IN_SLACK) != 0) {
            conn_kill(w, c);
            return;
        }
        sqe = get_sqe(w);
        io_uring_prep_recv(sqe, conn_sqe_fd(c), c->in + c->in_len, c->in_cap - c->in_len, 0);
        c->recv_off = c->in_len;
    }
    if (c->slot >= 0)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_RECV));
    c->recv_armed = true;
}

static void arm_send(struct worker *w, struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, conn_sqe_fd(c), c->snd.data + c->snd_off, c->snd.len - c->snd_off,
                       MSG_NOSIGNAL);
    if (c->slot >= 0)
        sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, ud_make(c, UD_SEND));
    c->send_inflight = true;
}

static void cancel_recv(struct worker *w, struct conn *c)
{
    if (!c->recv_armed || c->cancelling)
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_cancel64(sqe, ud_make(c, UD_RECV), 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    c->cancelling = true;
}

static void arm_accept(struct worker *w, bool http)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_multishot_accept(sqe, http ? w->hlfd : w->lfd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, ud_make(w, http ? UD_HACCEPT : UD_ACCEPT));
    *(http ? &w->haccept_armed : &w->accept_armed) = true;
}

static void arm_tick(struct worker *w)
{
    uint64_t ms = w->draining ? DRAIN_TICK_MS : TICK_MS;
    w->tick_ts.tv_sec = (long long)(ms / 1000);
    w->tick_ts.tv_nsec = (long long)(ms % 1000) * 1000000;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_timeout(sqe, &w->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_TICK));
}

static void arm_durable(struct worker *w)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_read(sqe, w->dfd, &w->dval, sizeof(w->dval), 0);
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_DURABLE));
}

/* The synced position moved (or the log failed): look at the held conns. */
static void on_durable(struct worker *w, const struct io_uring_cqe *cqe)
{
    for (struct conn *c = w->held, *next; c; c = next) {
        next = c->held_next;
        c->held = false;
        mark_dirty(w, c);
    }
    w->held = NULL;
    if (cqe->res >= 0 || cqe->res == -EINTR || cqe->res == -EAGAIN)
        arm_durable(w);
}

static void arm_wake(struct worker *w)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_read(sqe, w->efd, &w->wake_val, sizeof(w->wake_val), 0);
    io_uring_sqe_set_data64(sqe, ud_make(w, UD_WAKE));
}

static void recycle_buffer(struct worker *w, unsigned bid)
{
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), w->br_pending);
    w->br_pending++;
}

/* --- the flush phase ---------------------------------------------------------- */

/* Output flushed after a close began: shut our side, or finish. */
static void conn_output_done(struct worker *w, struct conn *c)
{
    if (c->peer_eof) {
        conn_kill(w, c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = C_LINGER;
}

/*
 * After each batch of completions, for each conn touched: release it if
 * dead, start one send with everything pending, re-arm or cancel its recv.
 * A conn is released only here, at the top, so no caller ever holds a
 * released conn; conn_kill re-marks it dirty to get here again.
 */
static void conn_flush(struct worker *w, struct conn *c)
{
    if (c->state == C_DEAD) {
        if (!c->recv_armed && !c->send_inflight)
            conn_release(w, c);
        return;
    }
    bool hold = c->hold_pos && c->out.len > 0 && durable_holds(w, c);
    if (!hold && !c->send_inflight && c->out.len > 0) {
        struct atp_buf t = c->snd;
        c->snd = c->out;
        c->out = t;
        c->out.len = 0;
        c->snd_off = 0;
        arm_send(w, c);
    }
    if (c->state == C_CLOSING && !c->send_inflight && c->out.len == 0) {
        conn_output_done(w, c);
        if (c->state == C_DEAD)
            return; /* conn_kill put it back on the dirty list */
    }
    /* A conn holding a feed request keeps receiving, so that a client that
     * closes is noticed now rather than at the end of the wait: what
     * arrives is kept behind the held request, until that input reaches
     * output-buffer-limit; then TCP flow control stops the client, as for
     * any paused conn. */
    bool waiting_reads = c->waiting && c->in_len < (size_t)w->srv->cfg.output_buffer_limit;
    bool want_recv = (c->state == C_OPEN && (!c->paused || waiting_reads)) || c->state == C_LINGER;
    if (want_recv && !c->recv_armed)
        arm_recv(w, c);
    else if (!want_recv && c->recv_armed && w->multishot && c->state == C_OPEN)
        cancel_recv(w, c); /* paused: stop the kernel filling buffers for it */
}

static void flush_dirty(struct worker *w)
{
    struct conn *c;
    while ((c = w->dirty) != NULL) {
        w->dirty = c->dirty_next;
        c->dirty = false;
        conn_flush(w, c);
    }
}

/* --- completion handlers --------------------------------------------------- */

/*
 * The quiet check of an open conn (see the top of the file): does its
 * socket hold anything (an end of file, an error, bytes) after a quiet
 * second? Then its multishot recv is restarted: the cancel's completion
 * (-ECANCELED, after any completion the recv had already posted) leaves the
 * conn to the flush, which arms a new recv, and that one reports what the
 * socket holds through the usual paths.
 */
static void quiet_check(struct worker *w, struct conn *c)
{
    if (!c->recv_armed || c->cancelling || c->paused)
        return;
    char b;
    ssize_t r = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    STAT_ADD(w, recv_restarts, 1);
    cancel_recv(w, c);
}

static void on_recv(struct worker *w, struct conn *c, const struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    bool more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    bool has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;
    const uint8_t *data = NULL;
    if (has_buf) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        data = w->bufs + (size_t)bid * BUF_SIZE;
        recycle_buffer(w, bid); /* read below, before the next submission */
    }
    if (!w->multishot || !more) {
        c->recv_armed = false;
        c->cancelling = false;
    }
    mark_dirty(w, c);

    if (res <= 0) {
        if (res == -ENOBUFS || (res == -ECANCELED && c->state != C_DEAD) || res == -EINTR)
            return; /* flush re-arms when appropriate */
        /* EOF or error. */
        if (c->state == C_OPEN) {
            c->peer_eof = true;
            if (res == 0 && c->waiting) {
                /* Shut down while a feed request was held: answer it now
                 * (with what there is) and what was sent behind it, as
                 * if the wait had ended; the client may still read. */
                c->wait_over = true;
                c->paused = false;
                consume_buffered(w, c);
            }
            c->in_len = 0; /* a frame cut off by the close is dropped */
            conn_begin_close(w, c, R_PEER);
            if (res < 0)
                conn_kill(w, c); /* reset: nobody left to answer */
        } else if (c->state == C_CLOSING) {
            c->peer_eof = true;
            if (res < 0)
                conn_kill(w, c);
        } else {
            conn_kill(w, c);
        }
        return;
    }

    STAT_ADD(w, bytes_in, (uint64_t)res);
    if (c->state != C_OPEN)
        return; /* closing: input is dropped */
    touch(w, c);
    if (c->in_len == 0)
        c->req_ms = w->now_ms; /* nothing pending: these bytes begin a request */
    if (w->multishot) {
        conn_input(w, c, data, (size_t)res);
    } else {
        /* A conn holding a feed request receives while its input is
         * handled again (on_wait), which may consume from the front of in
         * while this recv is in flight: its bytes then sit past in_len. */
        if (c->recv_off != c->in_len)
            memmove(c->in + c->in_len, c->in + c->recv_off, (size_t)res);
        c->in_len += (size_t)res;
        if (!c->paused)
            consume_buffered(w, c);
    }
}

static void on_send(struct worker *w, struct conn *c, const struct io_uring_cqe *cqe)
{
    c->send_inflight = false;
    mark_dirty(w, c);
    if (c->state == C_DEAD)
        return;
    if (cqe->res < 0) {
        if (c->state == C_OPEN)
            count_close(w, R_PEER); /* reset while we were answering */
        c->peer_eof = true;
        conn_kill(w, c);
        return;
    }
    STAT_ADD(w, bytes_out, (uint64_t)cqe->res);
    c->snd_off += (size_t)cqe->res;
    if (c->state == C_OPEN)
        touch(w, c);
    if (c->snd_off < c->snd.len) {
        arm_send(w, c); /* short send: the rest */
        return;
    }
    c->snd.len = 0;
    c->snd_off = 0;
    if (c->paused && pending_out(c) <= w->srv->cfg.output_buffer_limit / 2) {
        c->paused = false;
        consume_buffered(w, c); /* may pause again */
    }
}

static void reject(struct worker *w, int fd, bool http)
{
    STAT_ADD(w, rejected, 1);
    if (w->nrejecting < REJECT_MAX) {
        struct conn *c = conn_new(w, fd);
        if (c != NULL) {
            c->http = http;
            c->counted = false;
            w->nrejecting++;
            active_push(w, c);
            conn_close_with_error(w, c, ATP_ETOOMANYCONN, NULL, R_REJECT);
            return;
        }
    }
    /* Too many rejections in flight: best effort, then close. */
    struct atp_buf b = {0};
    if ((http ? atp_http_error(&b, ATP_ETOOMANYCONN, NULL)
              : atp_cmd_error(&b, 0, ATP_ETOOMANYCONN, NULL)) == 0)
        (void)!send(fd, b.data, b.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    atp_buf_free(&b);
    close(fd);
}

static void on_accept(struct worker *w, const struct io_uring_cqe *cqe, bool http)
{
    bool *armed = http ? &w->haccept_armed : &w->accept_armed;
    bool *retry = http ? &w->haccept_retry : &w->accept_retry;
    int *lfd = http ? &w->hlfd : &w->lfd;
    if (!(cqe->flags & IORING_CQE_F_MORE))
        *armed = false;
    int fd = cqe->res;
    if (fd < 0) {
        if (fd != -ECANCELED && !w->draining && w->now_ms >= w->accept_warn_ms) {
            w->accept_warn_ms = w->now_ms + 1000; /* at most one line a second */
            atp_log(ATP_LOG_WARN, "accept failed", LOG_ERR(fd), LOG_UINT("worker", w->idx));
        }
    } else if (w->draining) {
        close(fd);
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        uint32_t open = __atomic_add_fetch(&w->srv->open, 1, __ATOMIC_RELAXED);
        if (open > w->srv->cfg.max_connections) {
            __atomic_fetch_sub(&w->srv->open, 1, __ATOMIC_RELAXED);
            reject(w, fd, http);
        } else {
            struct conn *c = conn_new(w, fd);
            if (c == NULL) {
                __atomic_fetch_sub(&w->srv->open, 1, __ATOMIC_RELAXED);
                close(fd);
            } else {
                c->counted = true;
                c->http = http;
                STAT_ADD(w, accepted, 1);
                active_push(w, c);
                mark_dirty(w, c); /* flush arms the first recv */
            }
        }
    }
    if (!*armed && !w->draining && *lfd >= 0) {
        if (fd < 0)
            *retry = true; /* EMFILE and the like: retry at the next tick */
        else
            arm_accept(w, http);
    }
    if (!*armed && w->draining && *lfd >= 0) {
        close(*lfd);
        *lfd = -1;
    }
}

static void start_drain(struct worker *w)
{
    if (w->draining)
        return;
    w->draining = true;
    w->drain_deadline_ms = w->now_ms + w->srv->cfg.shutdown_timeout_ms;
    for (int h = 0; h < 2; h++) {
        int *lfd = h ? &w->hlfd : &w->lfd;
        if (h ? w->haccept_armed : w->accept_armed) {
            struct io_uring_sqe *sqe = get_sqe(w);
            io_uring_prep_cancel64(sqe, ud_make(w, h ? UD_HACCEPT : UD_ACCEPT), 0);
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
        } else if (*lfd >= 0) {
            close(*lfd);
            *lfd = -1;
        }
    }
}

/*
 * HTTP slowloris guard: a connection whose pending request began arriving
 * more than http-request-timeout ago gets 408 and is closed. A full scan of
 * the active list, so it runs at most four times per timeout (and at most
 * once per second), not every tick.
 */
static void cut_slow_requests(struct worker *w)
{
    uint64_t timeout = w->srv->cfg.http_request_timeout_ms;
    if (timeout == 0 || w->hlfd < 0 || w->now_ms < w->slow_scan_ms)
        return;
    uint64_t every = timeout / 4 > 1000 ? 1000 : timeout / 4;
    w->slow_scan_ms = w->now_ms + (every > TICK_MS ? every : TICK_MS);
    struct conn *c, *next;
    for (c = w->active.head; c; c = next) {
        next = c->next;
        if (c->http && c->in_len > 0 && !c->paused && c->req_ms + timeout <= w->now_ms) {
            conn_close_with_error(w, c, ATP_ETIMEDOUT, "the request did not arrive in time",
                                  R_SLOW);
            /* Answered (408) without reaching http.c: counted here. */
            atp_metrics_request(ATP_MPROTO_HTTP, ATP_MOP_OTHER, ATP_ETIMEDOUT,
                                (w->now_ms - c->req_ms) * 1000000u);
        }
    }
}

static void on_tick(struct worker *w)
{
    const struct atp_server_config *cfg = &w->srv->cfg;
    struct conn *c, *next;
    if (cfg->idle_timeout_ms > 0) {
        while ((c = w->active.head) != NULL && c->last_ms + cfg->idle_timeout_ms <= w->now_ms)
            conn_close_with_error(w, c, ATP_ETIMEDOUT, "idle timeout", R_IDLE);
    }
    cut_slow_requests(w);
    for (c = w->quiet_next; w->multishot && c && c->last_ms + QUIET_MS <= w->now_ms; c = next) {
        next = c->next;
        w->quiet_next = next;
        quiet_check(w, c);
    }
    while ((c = w->closing.head) != NULL && c->last_ms + LINGER_MS <= w->now_ms)
        conn_kill(w, c);
    if (w->draining) {
        bool overdue = w->now_ms >= w->drain_deadline_ms;
        for (c = w->active.head; c; c = next) {
            next = c->next;
            if (overdue)
                conn_kill(w, c);
            else if (c->in_len == 0 && pending_out(c) == 0 && !c->send_inflight && !c->paused &&
                     c->last_ms + DRAIN_QUIET_MS <= w->now_ms)
                conn_begin_close(w, c, R_DRAIN); /* nothing in flight: close it */
        }
        for (c = w->closing.head; overdue && c; c = next) {
            next = c->next;
            conn_kill(w, c);
        }
    }
    if (w->accept_retry && !w->draining && w->lfd >= 0 && !w->accept_armed) {
        w->accept_retry = false;
        arm_accept(w, false);
    }
    if (w->haccept_retry && !w->draining && w->hlfd >= 0 && !w->haccept_armed) {
        w->haccept_retry = false;
        arm_accept(w, true);
    }
    arm_tick(w);
}

/*
 * Every WAIT_TICK_MS while some are held: each held feed request is handled
 * again, and answered if the feed now has something after its cursor or its
 * wait is over (then the requests pipelined behind it follow); otherwise it
 * is held again. A held connection counts as active, not idle.
 *
 * One feed scan per look (atp_store_changes_cursor) tells whether anything
 * was recorded since the last: a request held at the last look was held
 * because its own feed call, made after that look read the position `pos`,
 * examined every record up to the feed's end then (no `more`) and found
 * none for its channel. The position only grows, so while it stays at pos
 * there is nothing new for the request, and while its deadline is ahead too
 * it is not handled again: a look costs one scan, not a feed call per held
 * request. A request held elsewhere (a new one, or one handled again after
 * a pause for output) is handled at the next look whatever the position.
 */
static void on_wait(struct worker *w)
{
    w->wait_armed = false;
    uint64_t pos = atp_store_changes_cursor(w->ctx.store);
    for (struct conn *c = w->waiters, *next; c; c = next) {
        next = c->wait_next;
        /* (Every conn here is open with its held request in c->in:
         * closing takes a conn off the list, wait_end.) */
        touch(w, c);
        if (!c->wait_fresh && c->wait_pos == pos && !w->draining &&
            atp_wait_pending(&c->wait, w->now_us))
            continue; /* nothing recorded since it was held, and time left */
        c->paused = false;
        consume_buffered(w, c); /* holds it again, or answers and goes on */
        mark_dirty(w, c);       /* a recv to re-arm, or output to send */
        if (c->waiting) {
            c->wait_fresh = false;
            c->wait_pos = pos;
        }
    }
    if (w->waiters && !w->wait_armed)
        arm_wait(w);
}

static void handle_cqe(struct worker *w, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    void *p = (void *)(uintptr_t)(ud & ~UD_TAG_MASK);
    switch ((enum ud_tag)(ud & UD_TAG_MASK)) {
    case UD_RECV:
        on_recv(w, p, cqe);
        break;
    case UD_SEND:
        on_send(w, p, cqe);
        break;
    case UD_ACCEPT:
        on_accept(w, cqe, false);
        break;
    case UD_HACCEPT:
        on_accept(w, cqe, true);
        break;
    case UD_TICK:
        on_tick(w);
        break;
    case UD_WAIT:
        on_wait(w);
        break;
    case UD_DURABLE:
        on_durable(w, cqe);
        break;
    case UD_WAKE:
        if (__atomic_load_n(&w->srv->drain, __ATOMIC_ACQUIRE))
            start_drain(w);
        else
            arm_wake(w);
        break;
    case UD_IGNORE:
    default:
        break;
    }
}

/* --- worker setup and loop ----------------------------------------------- */

/*
 * Submit what is queued and wait for at least one completion.
 *
 * With `busy-poll US`, a worker that finds nothing to do first polls for up
 * to US microseconds: each poll is a non-blocking io_uring_enter that runs
 * the ring's deferred work (with DEFER_TASKRUN, receives complete only when
 * the worker enters the kernel) and then looks at the completion queue. Only
 * then does it sleep. On a virtual machine an idle vCPU halts and waking it
 * goes through the hypervisor, which can cost far more than the request; a
 * worker that keeps its core spinning between close arrivals never halts.
 * The price is the core: it is busy for US after every burst of work.
 */
static int wait_completions(struct worker *w)
{
    uint64_t spin_ns = (uint64_t)w->srv->cfg.busy_poll_us * 1000u;
    if (spin_ns == 0)
        return io_uring_submit_and_wait(&w->ring, 1);
    int rc = io_uring_submit_and_get_events(&w->ring);
    if (rc < 0 || io_uring_cq_ready(&w->ring) > 0)
        return rc;
    uint64_t until = atp_metrics_now_ns() + spin_ns;
    do {
        rc = io_uring_get_events(&w->ring);
        if (rc < 0 || io_uring_cq_ready(&w->ring) > 0)
            return rc;
    } while (atp_metrics_now_ns() < until);
    return io_uring_submit_and_wait(&w->ring, 1);
}

static int ring_init(struct worker *w)
{
    /* Preferred: completions only run when the worker waits (no
     * interruptions mid-batch); older kernels get the plain ring. */
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    int rc = -EINVAL;
    for (size_t i = 0; i < sizeof(flag_sets) / sizeof(flag_sets[0]); i++) {
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = RING_ENTRIES * 8; /* multishot completions come in bursts */
        rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
        if (rc == 0)
            return 0;
        if (rc != -EINVAL)
            break;
    }
    return rc;
}

static int bufring_init(struct worker *w)
{
    w->br_bytes = BUF_COUNT * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, w->br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED)
        return -errno;
    w->bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
    if (w->bufs == NULL) {
        munmap(br, w->br_bytes);
        return -ENOMEM;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)(uintptr_t)br;
    reg.ring_entries = BUF_COUNT;
    reg.bgid = BGID;
    int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (rc != 0) {
        munmap(br, w->br_bytes);
        free(w->bufs);
        w->bufs = NULL;
        return rc;
    }
    w->br = br;
    io_uring_buf_ring_init(w->br);
    for (unsigned i = 0; i < BUF_COUNT; i++)
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(w->br, BUF_COUNT);
    return 0;
}

static int worker_setup(struct worker *w)
{
    int rc = ring_init(w);
    if (rc != 0)
        return rc;
    w->ring_ok = true;
    /* The ring's own fd registered too: io_uring_enter, once per loop, then
     * skips its fd lookup (liburing uses the registered index by itself). */
    (void)io_uring_register_ring_fd(&w->ring);
    slots_init(w);
    w->multishot = w->srv->multishot;
    if (w->multishot && (rc = bufring_init(w)) != 0) {
        atp_log(ATP_LOG_WARN, "buffer ring registration failed, using plain recv",
                LOG_UINT("worker", w->idx), LOG_ERR(rc));
        w->multishot = false;
    }
    return 0;
}

static bool worker_done(const struct worker *w)
{
    return w->draining && w->nconns == 0 && w->lfd < 0 && w->hlfd < 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "atpd-w%u", w->idx);
    pthread_setname_np(pthread_self(), name);

    clocks_read(w);
    w->error = worker_setup(w);
    sem_post(&w->srv->ready);
    if (w->error != 0)
        return NULL;

    arm_accept(w, false);
    if (w->hlfd >= 0)
        arm_accept(w, true);
    arm_wake(w);
    if (w->dfd >= 0)
        arm_durable(w);
    arm_tick(w);
    while (!worker_done(w)) {
        flush_dirty(w);
        if (w->br_pending) {
            io_uring_buf_ring_advance(w->br, w->br_pending);
            w->br_pending = 0;
        }
        int rc = wait_completions(w);
        if (rc < 0 && rc != -EINTR && rc != -EBUSY && rc != -ETIME && rc != -EAGAIN) {
            atp_log(ATP_LOG_ERROR, "io_uring_submit_and_wait failed", LOG_ERR(rc),
                    LOG_UINT("worker", w->idx));
            w->error = rc;
            break;
        }
        clocks_read(w);
        unsigned head, n = 0;
        struct io_uring_cqe *cqe;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            handle_cqe(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
    }
    atp_log(ATP_LOG_DEBUG, "worker stopped", LOG_UINT("worker", w->idx));
    return NULL;
}

/* --- probing and listening ---------------------------------------------- */

/*
 * Does this kernel have provided-buffer rings and multishot recv (6.0+)?
 * Asked for real on a socketpair rather than guessed from a version.
 */
static bool probe_multishot(void)
{
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) != 0)
        return false;
    bool ok = false;
    int sv[2] = {-1, -1};
    size_t br_bytes = sizeof(struct io_uring_buf) * 1;
    void *br = mmap(NULL, br_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    static uint8_t buf[64];
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    if (br == MAP_FAILED)
        goto out;
    reg.ring_addr = (unsigned long)(uintptr_t)br;
    reg.ring_entries = 1;
    reg.bgid = 7;
    if (io_uring_register_buf_ring(&ring, &reg, 0) != 0)
        goto out_unmap;
    io_uring_buf_ring_init(br);
    io_uring_buf_ring_add(br, buf, sizeof(buf), 0, io_uring_buf_ring_mask(1), 0);
    io_uring_buf_ring_advance(br, 1);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        goto out_unmap;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = 7;
    if (write(sv[1], "x", 1) != 1)
        goto out_close;
    struct io_uring_cqe *cqe;
    if (io_uring_submit_and_wait(&ring, 1) >= 0 && io_uring_peek_cqe(&ring, &cqe) == 0) {
        ok = cqe->res == 1 && (cqe->flags & IORING_CQE_F_BUFFER);
        io_uring_cqe_seen(&ring, cqe);
    }
out_close:
    close(sv[0]);
    close(sv[1]);
out_unmap:
    io_uring_queue_exit(&ring); /* cancels the recv before the buffer goes */
    munmap(br, br_bytes);
    return ok;
out:
    io_uring_queue_exit(&ring);
    return false;
}

static void *probe_thread(void *arg)
{
    *(bool *)arg = probe_multishot();
    return NULL;
}

/*
 * probe_multishot, on a thread of its own: the probe's ring leaves io_uring
 * task work with the thread that used it, and a later blocking call with a
 * timeout on that thread then fails with EINTR (seen on the caller of
 * atp_server_new: most of its next timed receives, test_server_embed). A
 * "yes" is kept for the process; the kernel does not lose the feature.
 */
static bool have_multishot(void)
{
    static bool known_yes; /* __atomic, as the rest of this file */
    if (__atomic_load_n(&known_yes, __ATOMIC_RELAXED))
        return true;
    bool ok = false;
    pthread_t t;
    if (pthread_create(&t, NULL, probe_thread, &ok) != 0)
        return false; /* no thread, no probe: plain receives work everywhere */
    pthread_join(t, NULL);
    if (ok)
        __atomic_store_n(&known_yes, true, __ATOMIC_RELAXED);
    return ok;
}

/*
 * A listening socket of the SO_REUSEPORT group on bind:port (port 0: a free
 * one), or with `probe` a plain bind that is closed at once: it fails with
 * EADDRINUSE if anything listens there already, which a SO_REUSEPORT bind
 * would not (another atpd of the same user would silently share the port).
 */
static int make_listener(const struct atp_server_config *cfg, uint16_t port, bool probe,
                         uint16_t *ret_port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->bind, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, cfg->bind, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        sl = sizeof(*s6);
    } else {
        return ATP_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if ((!probe && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, (struct sockaddr *)&ss, sl) != 0 || (!probe && listen(fd, LISTEN_BACKLOG) != 0)) {
        int e = -errno;
        close(fd);
        return e;
    }
    if (probe) {
        close(fd);
        return 0;
    }
    sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *ret_port = ntohs(ss.ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
    return fd;
}

/* --- statistics --------------------------------------------------------------- */

void atp_server_stats(const struct atp_server *srv, struct atp_server_stats *ret)
{
    memset(ret, 0, sizeof(*ret));
    ret->connections_open = __atomic_load_n(&srv->open, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        const struct worker_stats *s = &srv->workers[i].st;
#define LD(f) __atomic_load_n(&s->f, __ATOMIC_RELAXED)
        ret->connections_accepted += LD(accepted);
        ret->rejected_max_connections += LD(rejected);
        ret->closed_idle += LD(closed_idle);
        ret->closed_protocol += LD(closed_protocol);
        ret->closed_peer += LD(closed_peer);
        ret->closed_drain += LD(closed_drain);
        ret->closed_slow += LD(closed_slow);
        ret->requests += LD(requests);
        ret->bytes_in += LD(bytes_in);
        ret->bytes_out += LD(bytes_out);
        ret->backpressure_pauses += LD(pauses);
        ret->recv_restarts += LD(recv_restarts);
        ret->feed_waits += LD(feed_waits);
        ret->feed_waiting += LD(feed_waiting);
#undef LD
    }
}

static void stats_collect(void *arg, atp_stat_emit_fn emit, void *emit_arg)
{
    const struct atp_server *srv = arg;
    struct atp_server_stats s;
    atp_server_stats(srv, &s);
    emit(emit_arg, "server_workers", (int64_t)srv->nworkers);
    emit(emit_arg, "server_recv_multishot", srv->multishot ? 1 : 0);
    emit(emit_arg, "server_connections_open", (int64_t)s.connections_open);
    emit(emit_arg, "server_connections_accepted", (int64_t)s.connections_accepted);
    emit(emit_arg, "server_connections_rejected_max", (int64_t)s.rejected_max_connections);
    emit(emit_arg, "server_connections_closed_idle", (int64_t)s.closed_idle);
    emit(emit_arg, "server_connections_closed_protocol", (int64_t)s.closed_protocol);
    emit(emit_arg, "server_connections_closed_peer", (int64_t)s.closed_peer);
    emit(emit_arg, "server_connections_closed_drain", (int64_t)s.closed_drain);
    emit(emit_arg, "server_connections_closed_slow", (int64_t)s.closed_slow);
    emit(emit_arg, "server_recv_restarts", (int64_t)s.recv_restarts);
    emit(emit_arg, "server_requests", (int64_t)s.requests);
    emit(emit_arg, "server_bytes_in", (int64_t)s.bytes_in);
    emit(emit_arg, "server_bytes_out", (int64_t)s.bytes_out);
    emit(emit_arg, "server_backpressure_pauses", (int64_t)s.backpressure_pauses);
    emit(emit_arg, "server_feed_waits", (int64_t)s.feed_waits);
    emit(emit_arg, "server_feed_waiting", (int64_t)s.feed_waiting);
}

/* --- the HTTP listener -------------------------------------------------------- */

/* /readyz: not ready while draining, else what the caller's callback says. */
static bool http_ready(void *arg, char *reason, size_t len)
{
    const struct worker *w = arg;
    if (__atomic_load_n(&w->srv->unready, __ATOMIC_ACQUIRE)) {
        snprintf(reason, len, "draining");
        return false;
    }
    const struct atp_http_ctx *t = w->srv->cfg.http_ctx;
    return t && t->ready ? t->ready(t->ready_arg, reason, len) : true;
}

/* One HTTP listener per worker (its own SO_REUSEPORT group), after a probe
 * bind like the binary port's; each worker gets its HTTP context. */
static int http_listeners(struct atp_server *srv)
{
    struct atp_server_config hc = srv->cfg;
    snprintf(srv->http_bind, sizeof(srv->http_bind), "%s",
             srv->cfg.http_bind ? srv->cfg.http_bind : srv->bind);
    hc.bind = srv->http_bind;
    srv->cfg.http_bind = srv->http_bind;
    uint16_t port = srv->cfg.http_port;
    int rc;
    if (port != 0 && (rc = make_listener(&hc, port, true, &port)) != 0)
        return rc;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        uint16_t bound = 0;
        int fd = make_listener(&hc, port, false, &bound);
        if (fd < 0)
            return fd;
        w->hlfd = fd;
        port = bound;
        if (srv->cfg.http_ctx)
            w->hctx = *srv->cfg.http_ctx;
        memset(&w->hctx.body, 0, sizeof(w->hctx.body)); /* private parts start empty */
        memset(&w->hctx.resp, 0, sizeof(w->hctx.resp));
        w->hctx.tok = NULL;
        w->hctx.date[0] = '\0';
        w->hctx.cmd = &w->ctx;
        w->hctx.ready = http_ready;
        w->hctx.ready_arg = w;
    }
    srv->http_port = port;
    bool v6 = strchr(srv->http_bind, ':') != NULL;
    snprintf(srv->http_addr, sizeof(srv->http_addr), v6 ? "[%s]:%u" : "%s:%u", srv->http_bind,
             port);
    return 0;
}

uint16_t atp_server_http_port(const struct atp_server *srv)
{
    return srv->http_port;
}

const char *atp_server_http_addr(const struct atp_server *srv)
{
    return srv->http_port ? srv->http_addr : NULL;
}

/* --- public API -------------------------------------------------------------- */

int atp_server_new(const struct atp_server_config *cfg, const struct atp_cmd_ctx *ctx,
                   struct atp_server **ret_server)
{
    struct atp_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        return -ENOMEM;
    srv->cfg = *cfg;
    snprintf(srv->bind, sizeof(srv->bind), "%s", cfg->bind ? cfg->bind : "127.0.0.1");
    srv->cfg.bind = srv->bind;
    if (srv->cfg.output_buffer_limit < 4096)
        srv->cfg.output_buffer_limit = 4096;
    if (srv->cfg.max_connections == 0)
        srv->cfg.max_connections = 1;
    /* The soft limit pauses reading; the hard one only catches a single
     * response far larger than any the limits allow. */
    srv->hard_limit = srv->cfg.output_buffer_limit +
                      2 * (size_t)(ctx->max_frame ? ctx->max_frame : 1u << 20) + (64u << 10);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    srv->nworkers = cfg->workers ? cfg->workers : (uint32_t)(cpus > 0 ? cpus : 1);
    if (sem_init(&srv->ready, 0, 0) != 0) {
        free(srv);
        return -errno;
    }
    srv->workers = aligned_alloc(64, sizeof(struct worker) * srv->nworkers);
    if (srv->workers == NULL) {
        sem_destroy(&srv->ready);
        free(srv);
        return -ENOMEM;
    }
    memset(srv->workers, 0, sizeof(struct worker) * srv->nworkers);
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        srv->workers[i].lfd = -1;
        srv->workers[i].hlfd = -1;
        srv->workers[i].efd = -1;
        srv->workers[i].dfd = -1;
    }

    if (cfg->recv_mode == ATP_RECV_PLAIN) {
        srv->multishot = false;
    } else {
        srv->multishot = have_multishot();
        if (!srv->multishot && cfg->recv_mode == ATP_RECV_MULTISHOT) {
            atp_server_free(srv);
            return -EOPNOTSUPP;
        }
    }

    int rc = 0;
    uint16_t port = cfg->port;
    if (port != 0 && (rc = make_listener(&srv->cfg, port, true, &port)) != 0) {
        atp_server_free(srv);
        return rc;
    }
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        w->srv = srv;
        w->idx = i;
        w->ctx = *ctx;
        if (w->ctx.nsources < ATP_CMD_MAX_SOURCES) {
            w->ctx.sources[w->ctx.nsources].collect = stats_collect;
            w->ctx.sources[w->ctx.nsources].arg = srv;
            w->ctx.nsources++;
        }
        uint16_t bound = 0;
        int fd = make_listener(&srv->cfg, port, false, &bound);
        if (fd < 0) {
            rc = fd;
            break;
        }
        w->lfd = fd;
        port = bound; /* the others join the port the first one got */
        w->efd = eventfd(0, EFD_CLOEXEC);
        if (w->efd < 0) {
            rc = -errno;
            break;
        }
        if (cfg->durable) {
            w->dfd = eventfd(0, EFD_CLOEXEC);
            if (w->dfd < 0) {
                rc = -errno;
                break;
            }
            if ((rc = atp_durable_notify_add(cfg->durable, w->dfd)) != 0)
                break;
        }
    }
    if (rc == 0 && cfg->http)
        rc = http_listeners(srv);
    if (rc != 0) {
        atp_server_free(srv);
        return rc;
    }
    srv->port = port;
    bool v6 = strchr(srv->bind, ':') != NULL;
    snprintf(srv->addr, sizeof(srv->addr), v6 ? "[%s]:%u" : "%s:%u", srv->bind, srv->port);
    *ret_server = srv;
    return 0;
}

uint16_t atp_server_port(const struct atp_server *srv)
{
    return srv->port;
}

const char *atp_server_addr(const struct atp_server *srv)
{
    return srv->addr;
}

uint32_t atp_server_workers(const struct atp_server *srv)
{
    return srv->nworkers;
}

const char *atp_server_recv_mode(const struct atp_server *srv)
{
    return srv->multishot ? "multishot" : "plain";
}

int atp_server_start(struct atp_server *srv)
{
    int rc = 0;
    uint32_t started = 0;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        int e = pthread_create(&w->thread, NULL, worker_main, w);
        if (e != 0) {
            rc = -e;
            break;
        }
        w->thread_started = true;
        started++;
    }
    for (uint32_t i = 0; i < started; i++)
        while (sem_wait(&srv->ready) != 0 && errno == EINTR)
            ;
    for (uint32_t i = 0; i < started && rc == 0; i++)
        if (srv->workers[i].error != 0)
            rc = srv->workers[i].error;
    return rc;
}

void atp_server_drain(struct atp_server *srv)
{
    atp_server_unready(srv);
    __atomic_store_n(&srv->drain, 1, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        uint64_t one = 1;
        if (srv->workers[i].efd >= 0)
            (void)!write(srv->workers[i].efd, &one, sizeof(one));
    }
}

void atp_server_unready(struct atp_server *srv)
{
    __atomic_store_n(&srv->unready, 1, __ATOMIC_RELEASE);
}

int atp_server_wait(struct atp_server *srv)
{
    int rc = 0;
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        if (!w->thread_started)
            continue;
        pthread_join(w->thread, NULL);
        w->thread_started = false;
        if (w->error != 0 && rc == 0)
            rc = w->error;
    }
    return rc;
}

void atp_server_free(struct atp_server *srv)
{
    if (srv == NULL)
        return;
    atp_server_drain(srv);
    atp_server_wait(srv);
    for (uint32_t i = 0; i < srv->nworkers; i++) {
        struct worker *w = &srv->workers[i];
        /* Conns still live (a worker that failed) are closed with the ring. */
        if (w->ring_ok) {
            if (w->br)
                io_uring_unregister_buf_ring(&w->ring, BGID);
            io_uring_queue_exit(&w->ring);
        }
        if (w->br)
            munmap(w->br, w->br_bytes);
        free(w->bufs);
        free(w->slots);
        conn_free_all(w);
        if (w->lfd >= 0)
            close(w->lfd);
        if (w->hlfd >= 0)
            close(w->hlfd);
        atp_http_ctx_free(&w->hctx);
        if (w->efd >= 0)
            close(w->efd);
        if (w->dfd >= 0) {
            atp_durable_notify_remove(srv->cfg.durable, w->dfd); /* before the number is reused */
            close(w->dfd);
        }
    }
    free(srv->workers);
    sem_destroy(&srv->ready);
    free(srv);
}
