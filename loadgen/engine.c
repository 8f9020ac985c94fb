/*
 * engine.c - the load engine of atp-loadgen: threads, connections, pacing,
 * pipelining and latency recording. Drivers turn requests into bytes and
 * bytes into responses; the engine owns every socket.
 *
 * One io_uring per thread, no SQPOLL (the client must stay lighter than the
 * server on its one core). Per connection one recv and at most one send are
 * in flight: requests generated while a send is in flight queue in a second
 * buffer and go out together when it completes, so a busy connection sends
 * many requests per system call. All submissions and completions of one
 * loop turn share one io_uring_enter.
 *
 * Open loop (the default): each connection has its own schedule of intended
 * send times, rate / connections apart, starting at a random phase. A
 * request's latency runs from its intended send time, not from when it was
 * actually written: when the server (or the connection's pipeline limit)
 * holds a request back, the wait counts. That is the coordinated-omission
 * correction; a closed-loop tool would quietly send fewer requests instead.
 *
 * Closed loop: each connection keeps `pipeline` requests in flight and the
 * latency runs from the actual send.
 *
 * Accounting: a request is measured when its intended time falls in the
 * measured window [t_measure, t_end). For measured requests,
 * sent = ok + err + unanswered, where unanswered are those still without a
 * response when the drain after t_end ends, and a connection that breaks
 * turns its outstanding requests into errors (ECONNCLOSED).
 */
#include "lg.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define UD_RECV 1u
#define UD_SEND 2u
/* io_uring user_data: connection index (high 32 bits), generation (30 bits), kind (2 bits). */
#define UD(c, kind)                                                                                \
    (((uint64_t)(c)->idx << 32) | ((uint64_t)((c)->gen & 0x3fffffffu) << 2) | (kind))
#define RBUF_MIN (64u * 1024)
#define FU_CAP   64 /* follow-ups (commit/release) waiting per connection */
#define BR_BGID  7
#define BR_COUNT 512u        /* buffers per thread (power of two) */
#define BR_SIZE  (16u << 10) /* bytes each: 8 MiB per thread */

struct slot {
    uint64_t t0;     /* latency origin: intended (open) or actual (closed) send time */
    uint64_t res_id; /* COMMIT/RELEASE: which reservation */
    uint8_t op;
    uint8_t measured;
    uint8_t nlines;
    struct lg_line lines[LG_MAX_LINES]; /* RESERVE/RELEASE: for the oversell check */
};

struct conn {
    int fd;
    uint32_t idx;
    uint32_t gen;  /* bumped at each reconnect; completions of older ones are stale */
    bool answered; /* a response arrived since the last (re)connect */
    bool closing;  /* the server said it will close: drain, then reopen */
    bool dead;
    bool recv_armed;
    bool send_armed;
    struct lg_buf rbuf; /* received, parsed from rpos */
    size_t rpos;
    struct lg_buf wq; /* queued for the next send */
    struct lg_buf ws; /* being sent */
    size_t ws_off;
    struct slot *slots; /* in-flight FIFO */
    uint32_t shead, scount;
    uint32_t smask;  /* slots - 1: a power of two, so no division per request */
    struct slot *fu; /* follow-ups FIFO */
    uint32_t fhead, fcount;
    double interval; /* open loop: ns between intended sends */
    uint64_t first_due;
    uint64_t next_due;
    uint64_t free_since; /* open loop: a pipeline slot has been free since (0: always) */
    uint64_t issued;     /* new (not follow-up) requests issued */
    uint64_t seq;        /* request ids */
    void *dstate;
};

struct worker {
    struct lg_run *run;
    uint32_t tid;
    pthread_t th;
    struct io_uring ring;
    bool ring_ok;
    struct conn *conns;
    uint32_t nconns;
    struct lg_rng rng;
    struct lg_stats stats;
    struct lg_line scratch[LG_MAX_MGET];
    /* Multishot receive: one provided-buffer ring per thread (kernel 6.0+),
     * so a connection's recv stays armed instead of being resubmitted per
     * response; NULL when unavailable (single-shot recv into rbuf). */
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    uint64_t inflight;
    bool stopping;          /* past the end of the window: no reconnects */
    uint64_t loops;         /* loop turns (each one io_uring_enter at most) */
    uint64_t cqes;          /* completions processed */
    uint64_t last_done;     /* time of the last response (for -n runs) */
    uint64_t last_progress; /* last response, or the start */
    uint64_t nonce;
    /* Latencies not yet in the histogram: a run of equal values of one
     * operation. In closed loop the requests a connection sent in one loop
     * turn share their send time, and the responses read in one turn share
     * their receive time, so one receive usually brings many equal latencies,
     * recorded together (the histogram is the same as one by one). */
    struct lg_hist *lat_hist;
    uint64_t lat_value, lat_count;
    int rc;
    char errmsg[400];
    pthread_barrier_t *ready;
    pthread_barrier_t *go;
};

/* --- requests ----------------------------------------------------------- */

static int pick_op(struct worker *w)
{
    double u = lg_rng_double(&w->rng);
    for (int op = 0; op < LG_OP_NMEASURED; op++)
        if (u < w->run->cum[op])
            return op;
    return LG_OP_GET;
}

static void pick_key(struct worker *w, struct lg_line *l)
{
    const struct lg_workload *wl = w->run->wl;
    l->key = (uint32_t)lg_keygen_next(&w->run->keygen, &w->rng);
    l->loc = wl->network ? UINT16_MAX : (uint16_t)lg_rng_below(&w->rng, wl->nlocations);
    l->qty = 0;
}

/* Reservation lines: distinct items (a few retries, then accept a repeat). */
static uint32_t pick_lines(struct worker *w, struct lg_line *lines)
{
    const struct lg_workload *wl = w->run->wl;
    uint32_t n = (uint32_t)lg_rng_range(&w->rng, wl->lines_min, wl->lines_max);
    for (uint32_t i = 0; i < n; i++) {
        for (int tries = 0; tries < 8; tries++) {
            lines[i].key = (uint32_t)lg_keygen_next(&w->run->keygen, &w->rng);
            lines[i].loc = (uint16_t)lg_rng_below(&w->rng, wl->nlocations);
            bool dup = false;
            for (uint32_t j = 0; j < i && !dup; j++)
                dup = lines[j].key == lines[i].key && lines[j].loc == lines[i].loc;
            if (!dup)
                break;
        }
        lines[i].qty = (uint32_t)lg_rng_range(&w->rng, wl->qty_min, wl->qty_max);
    }
    return n;
}

static struct slot *slot_push(struct conn *c)
{
    struct slot *s = &c->slots[(c->shead + c->scount) & c->smask];
    c->scount++;
    return s;
}

static bool measured(const struct worker *w, uint64_t t0)
{
    return t0 >= w->run->t_measure && t0 < w->run->t_end;
}

/* Encode and queue one request; returns 0 or a negative errno. */
static int issue(struct worker *w, struct conn *c, const struct slot *src, int op, uint64_t t0,
                 uint64_t now)
{
    struct lg_run *run = w->run;
    struct lg_req r = {.op = op, .id = ++c->seq};
    struct slot *s = slot_push(c);
    s->op = (uint8_t)op;
    s->t0 = t0;
    s->nlines = 0;
    s->res_id = 0;
    char idem[80];
    switch (op) {
    case LG_OP_GET:
        pick_key(w, &w->scratch[0]);
        r.keys = w->scratch;
        r.nkeys = 1;
        break;
    case LG_OP_MGET: {
        uint32_t n = (uint32_t)lg_rng_range(&w->rng, run->wl->mget_min, run->wl->mget_max);
        for (uint32_t i = 0; i < n; i++)
            pick_key(w, &w->scratch[i]);
        r.keys = w->scratch;
        r.nkeys = n;
        break;
    }
    case LG_OP_RESERVE: {
        s->nlines = (uint8_t)pick_lines(w, s->lines);
        int n = snprintf(idem, sizeof(idem), "lg-%08llx-%u.%u.%llu", (unsigned long long)w->nonce,
                         w->tid, c->idx, (unsigned long long)c->seq);
        r.keys = s->lines;
        r.nkeys = s->nlines;
        r.idem = idem;
        r.idem_len = (uint32_t)n;
        break;
    }
    case LG_OP_COMMIT:
    case LG_OP_RELEASE:
        s->res_id = src->res_id;
        s->nlines = src->nlines;
        memcpy(s->lines, src->lines, sizeof(s->lines[0]) * src->nlines);
        r.res_id = src->res_id;
        break;
    default:
        return -EINVAL;
    }
    s->measured = measured(w, t0);
    if (s->measured) {
        w->stats.sent[op]++;
        if (!w->run->cfg->closed_loop) {
            uint64_t delay = now > t0 ? now - t0 : 0;
            lg_hist_record(&w->stats.send_delay, delay);
            /* The client's own part: from the intended time, or from when
             * the connection got a free slot if that came later (until then
             * the request waited for the server's previous answers). */
            uint64_t from = c->free_since > t0 ? c->free_since : t0;
            lg_hist_record(&w->stats.own_delay, now > from ? now - from : 0);
            if (delay > LG_LATE_NS)
                w->stats.late_sends++;
        }
    }
    w->inflight++;
    return run->drv->encode(run, c->dstate, &r, &c->wq);
}

/* Fill the connection's pipeline with follow-ups and due requests. */
static int fill(struct worker *w, struct conn *c, uint64_t now, uint64_t *next_wake)
{
    const struct lg_config *cfg = w->run->cfg;
    uint32_t depth = c->closing ? 0 : cfg->pipeline;
    while (c->scount < depth) {
        int rc;
        if (c->fcount) {
            struct slot *f = &c->fu[c->fhead];
            uint64_t t0 = cfg->closed_loop ? now : f->t0;
            rc = issue(w, c, f, f->op, t0, now);
            c->fhead = (c->fhead + 1) % FU_CAP;
            c->fcount--;
        } else {
            if (cfg->requests && c->issued >= cfg->requests)
                break;
            uint64_t t0 = now;
            if (!cfg->closed_loop) {
                if (c->next_due > now) {
                    if (c->next_due < *next_wake)
                        *next_wake = c->next_due;
                    break;
                }
                t0 = c->next_due;
            }
            rc = issue(w, c, NULL, pick_op(w), t0, now);
            c->issued++;
            c->next_due = c->first_due + (uint64_t)((double)c->issued * c->interval);
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* --- sockets ------------------------------------------------------------ */

static struct io_uring_sqe *get_sqe(struct worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe;
}

static void arm_recv(struct worker *w, struct conn *c)
{
    if (c->recv_armed || c->dead)
        return;
    if (w->br) {
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BR_BGID;
        io_uring_sqe_set_data64(sqe, UD(c, UD_RECV));
        c->recv_armed = true;
        return;
    }
    if (c->rbuf.cap - c->rbuf.len < 4096 && !lg_buf_reserve(&c->rbuf, c->rbuf.cap)) {
        c->dead = true;
        return;
    }
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv(sqe, c->fd, c->rbuf.data + c->rbuf.len, c->rbuf.cap - c->rbuf.len, 0);
    io_uring_sqe_set_data64(sqe, UD(c, UD_RECV));
    c->recv_armed = true;
}

static void arm_send(struct worker *w, struct conn *c)
{
    if (c->send_armed || c->dead)
        return;
    if (c->ws_off >= c->ws.len) {
        if (c->wq.len == 0)
            return;
        struct lg_buf t = c->ws;
        c->ws = c->wq;
        c->wq = t;
        c->wq.len = 0;
        c->ws_off = 0;
    }
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->ws.data + c->ws_off, c->ws.len - c->ws_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(c, UD_SEND));
    c->send_armed = true;
}

/* A fresh socket and driver state for a connection the server closed. */
static bool reconnect(struct worker *w, struct conn *c)
{
    const struct lg_driver *drv = w->run->drv;
    int fd;
    if (lg_connect(w->run->cfg, &fd))
        return false;
    if (c->dstate) {
        if (drv->conn_free)
            drv->conn_free(c->dstate);
        memset(c->dstate, 0, drv->state_size);
    }
    if (drv->conn_init && drv->conn_init(w->run, c->dstate)) {
        close(fd);
        return false;
    }
    c->fd = fd;
    c->gen++;
    c->rbuf.len = c->rpos = 0;
    c->wq.len = 0;
    c->ws.len = c->ws_off = 0;
    c->recv_armed = c->send_armed = false;
    c->dead = false;
    c->answered = false;
    c->closing = false;
    w->stats.reconnects++;
    return true;
}

/*
 * The connection broke (or the server closed it): its outstanding requests
 * become errors (ECONNCLOSED) and, until the run ends, it is opened again.
 * Completions still in flight for the old socket carry the old generation
 * and are ignored.
 */
static void kill_conn(struct worker *w, struct conn *c)
{
    if (c->dead && c->scount == 0)
        return;
    c->dead = true;
    w->stats.conn_errors++;
    while (c->scount) {
        struct slot *s = &c->slots[c->shead];
        if (s->measured) {
            w->stats.err[s->op]++;
            lg_stats_count_error(&w->stats, s->op, "ECONNCLOSED");
        }
        c->shead = (c->shead + 1) & c->smask;
        c->scount--;
        w->inflight--;
    }
    c->fcount = 0;
    shutdown(c->fd, SHUT_RDWR); /* ends a multishot recv still armed on it */
    close(c->fd);
    c->fd = -1;
    /* A server that closes connections without answering (a connection
     * limit, say) gets no reconnect storm: one try per answered session. */
    if (!w->stopping && (c->answered || c->gen == 0))
        reconnect(w, c);
}

static void account_granted(struct worker *w, const struct slot *s, int sign)
{
    if (!w->stats.granted)
        return;
    uint32_t nloc = w->run->wl->nlocations;
    for (uint32_t i = 0; i < s->nlines; i++) {
        size_t item = (size_t)s->lines[i].key * nloc + s->lines[i].loc;
        if (item < w->stats.ngranted)
            w->stats.granted[item] += sign * (int64_t)s->lines[i].qty;
    }
}

static void followup(struct worker *w, struct conn *c, const struct slot *s, uint64_t res_id,
                     uint64_t now)
{
    const struct lg_workload *wl = w->run->wl;
    double u = lg_rng_double(&w->rng);
    int op;
    if (u < wl->commit_fraction)
        op = LG_OP_COMMIT;
    else if (u < wl->commit_fraction + wl->release_fraction)
        op = LG_OP_RELEASE;
    else
        return;
    if (c->fcount == FU_CAP) {
        w->stats.followups_dropped++;
        return;
    }
    struct slot *f = &c->fu[(c->fhead + c->fcount) % FU_CAP];
    c->fcount++;
    f->op = (uint8_t)op;
    f->t0 = now;
    f->res_id = res_id;
    f->nlines = s->nlines;
    memcpy(f->lines, s->lines, sizeof(s->lines[0]) * s->nlines);
}

static void lat_flush(struct worker *w)
{
    if (w->lat_count)
        lg_hist_record_n(w->lat_hist, w->lat_value, w->lat_count);
    w->lat_hist = NULL;
    w->lat_count = 0;
}

static void on_response(struct worker *w, struct conn *c, const struct lg_resp *resp, uint64_t now)
{
    if (c->scount >= w->run->cfg->pipeline)
        c->free_since = now; /* it was full: a slot is free from now on */
    struct slot *s = &c->slots[c->shead];
    c->shead = (c->shead + 1) & c->smask;
    c->scount--;
    w->inflight--;
    w->last_done = now;
    w->last_progress = now;
    c->answered = true;
    if (resp->conn_close)
        c->closing = true;
    int op = s->op;
    if (s->measured) {
        uint64_t lat = now > s->t0 ? now - s->t0 : 0;
        if (w->lat_hist == &w->stats.hist[op] && w->lat_value == lat) {
            w->lat_count++;
        } else {
            lat_flush(w);
            w->lat_hist = &w->stats.hist[op];
            w->lat_value = lat;
            w->lat_count = 1;
        }
        if (resp->status) {
            w->stats.err[op]++;
            lg_stats_count_error(&w->stats, op, resp->status);
        } else {
            w->stats.ok[op]++;
        }
        if (op == LG_OP_GET)
            w->stats.keys_read++;
        else if (op == LG_OP_MGET)
            w->stats.keys_read += resp->nok;
    }
    if (resp->status)
        return;
    /* Stock accounting covers every request, measured or not: the check
     * compares with the server's totals. */
    if (op == LG_OP_RESERVE) {
        account_granted(w, s, +1);
        followup(w, c, s, resp->res_id, now);
    } else if (op == LG_OP_RELEASE) {
        account_granted(w, s, -1);
    }
}

/*
 * Parse every whole response in in[0, len): the bytes consumed, or -1 when
 * the connection was killed (a broken stream, or bytes nobody asked for).
 * `now` is the time of the receive that brought them (one clock read per
 * loop turn, taken right after the wait: every response of the turn was in
 * the kernel by then, so it is charged the time until the client looked,
 * never less than its true latency).
 */
static ssize_t parse(struct worker *w, struct conn *c, const uint8_t *in, size_t len, uint64_t now)
{
    size_t pos = 0;
    while (c->scount && pos < len) {
        struct lg_resp resp;
        resp.status = NULL;
        resp.nok = 0;
        resp.res_id = 0;
        resp.conn_close = false;
        int op = c->slots[c->shead].op;
        ssize_t n = w->run->drv->decode(w->run, c->dstate, in + pos, len - pos, op, &resp);
        if (n == 0)
            break;
        if (n < 0) {
            kill_conn(w, c);
            return -1;
        }
        pos += (size_t)n;
        on_response(w, c, &resp, now);
        if (c->dead)
            return -1;
    }
    if (c->scount == 0 && pos < len) {
        /* bytes nobody asked for: the stream is out of step */
        kill_conn(w, c);
        return -1;
    }
    return (ssize_t)pos;
}

/* Parse every whole response in rbuf. */
static void consume(struct worker *w, struct conn *c, uint64_t now)
{
    ssize_t n = parse(w, c, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos, now);
    if (n < 0)
        return;
    c->rpos += (size_t)n;
    if (c->rpos == c->rbuf.len) {
        c->rpos = c->rbuf.len = 0;
    } else if (c->rpos > c->rbuf.cap / 2) {
        memmove(c->rbuf.data, c->rbuf.data + c->rpos, c->rbuf.len - c->rpos);
        c->rbuf.len -= c->rpos;
        c->rpos = 0;
    }
}

static void on_recv(struct worker *w, struct conn *c, const struct io_uring_cqe *cqe, bool stale,
                    uint64_t now)
{
    int res = cqe->res;
    if (stale) {
        /* an old socket's receive: only its buffer matters */
        if (w->br && (cqe->flags & IORING_CQE_F_BUFFER)) {
            unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
            io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BR_SIZE, BR_SIZE,
                                  (unsigned short)bid, io_uring_buf_ring_mask(BR_COUNT), 0);
            io_uring_buf_ring_advance(w->br, 1);
        }
        return;
    }
    if (!w->br || !(cqe->flags & IORING_CQE_F_MORE))
        c->recv_armed = false; /* the loop re-arms it */
    const uint8_t *data = NULL;
    bool parsed = false;
    if (w->br && (cqe->flags & IORING_CQE_F_BUFFER)) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        data = w->bufs + (size_t)bid * BR_SIZE;
        if (res > 0 && !c->dead) {
            /* Nothing left over from earlier receives: parse the responses
             * where the kernel put them and keep only a partial one. */
            size_t off = 0;
            if (c->rpos == c->rbuf.len) {
                c->rpos = c->rbuf.len = 0;
                ssize_t n = parse(w, c, data, (size_t)res, now);
                parsed = true;
                off = n < 0 ? (size_t)res : (size_t)n;
            }
            if (off < (size_t)res && lg_buf_append(&c->rbuf, data + off, (size_t)res - off))
                res = -ENOMEM;
        }
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BR_SIZE, BR_SIZE, (unsigned short)bid,
                              io_uring_buf_ring_mask(BR_COUNT), 0);
        io_uring_buf_ring_advance(w->br, 1);
    }
    if (c->dead)
        return;
    if (res <= 0) {
        if (res == -EINTR || res == -EAGAIN || res == -ENOBUFS)
            return; /* re-armed by the loop */
        kill_conn(w, c);
        return;
    }
    if (!w->br)
        c->rbuf.len += (size_t)res;
    if (!parsed)
        consume(w, c, now);
    if (c->closing && c->scount == 0 && !c->dead) {
        w->stats.server_closes++;
        kill_conn(w, c); /* nothing outstanding: a clean reopen */
    }
}

static void on_send(struct worker *w, struct conn *c, int res)
{
    c->send_armed = false;
    if (res < 0) {
        if (res == -EINTR || res == -EAGAIN)
            return; /* arm_send resends the rest */
        kill_conn(w, c);
        return;
    }
    c->ws_off += (size_t)res;
    if (c->ws_off >= c->ws.len)
        c->ws.len = c->ws_off = 0;
}

/* --- the thread --------------------------------------------------------- */

static void conn_free(struct worker *w, struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    if (c->dstate && w->run->drv->conn_free)
        w->run->drv->conn_free(c->dstate);
    free(c->dstate);
    lg_buf_free(&c->rbuf);
    lg_buf_free(&c->wq);
    lg_buf_free(&c->ws);
    free(c->slots);
    free(c->fu);
}

/* A provided-buffer ring for multishot recv; on failure w->br stays NULL. */
static void setup_buf_ring(struct worker *w)
{
    size_t ring_bytes = BR_COUNT * sizeof(struct io_uring_buf);
    void *ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (ring == MAP_FAILED)
        return;
    uint8_t *bufs = malloc((size_t)BR_COUNT * BR_SIZE);
    if (!bufs) {
        munmap(ring, ring_bytes);
        return;
    }
    struct io_uring_buf_ring *br = ring;
    io_uring_buf_ring_init(br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)ring, .ring_entries = BR_COUNT, .bgid = BR_BGID};
    if (io_uring_register_buf_ring(&w->ring, &reg, 0) != 0) {
        free(bufs);
        munmap(ring, ring_bytes);
        return;
    }
    for (unsigned i = 0; i < BR_COUNT; i++)
        io_uring_buf_ring_add(br, bufs + (size_t)i * BR_SIZE, BR_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(BR_COUNT), (int)i);
    io_uring_buf_ring_advance(br, BR_COUNT);
    w->br = br;
    w->bufs = bufs;
}

static int worker_setup(struct worker *w)
{
    struct lg_run *run = w->run;
    const struct lg_config *cfg = run->cfg;
    unsigned entries = 64;
    while (entries < 2 * w->nconns + 16 && entries < 4096)
        entries *= 2;
    /* DEFER_TASKRUN: completions are processed only when this thread asks
     * for them, not by interrupting it at every packet; the ring has one
     * issuer (this thread). Fall back for older kernels. */
    static const unsigned defer_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
        IORING_SETUP_COOP_TASKRUN,
        0,
    };
    static const unsigned plain_sets[] = {0, 0, 0};
    const unsigned *flag_sets = getenv("LG_RING_PLAIN") ? plain_sets : defer_sets;
    int rc = -EINVAL;
    for (size_t i = 0; i < 3; i++) {
        rc = io_uring_queue_init(entries, &w->ring, flag_sets[i]);
        if (rc != -EINVAL)
            break;
    }
    if (rc < 0) {
        snprintf(w->errmsg, sizeof(w->errmsg), "io_uring_queue_init: %s", strerror(-rc));
        return rc;
    }
    w->ring_ok = true;
    if (!getenv("LG_RECV_PLAIN"))
        setup_buf_ring(w);
    w->conns = calloc(w->nconns, sizeof(*w->conns));
    if (!w->conns)
        return -ENOMEM;
    for (uint32_t i = 0; i < w->nconns; i++)
        w->conns[i].fd = -1;
    double conns_total = (double)cfg->threads * cfg->conns;
    double interval = run->rate > 0 ? 1e9 * conns_total / run->rate : 1e9;
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        c->idx = i;
        uint32_t nslots = 1;
        while (nslots < cfg->pipeline)
            nslots *= 2;
        c->smask = nslots - 1;
        c->slots = calloc(nslots, sizeof(*c->slots));
        c->fu = calloc(FU_CAP, sizeof(*c->fu));
        c->dstate = run->drv->state_size ? calloc(1, run->drv->state_size) : NULL;
        if (!c->slots || !c->fu || (run->drv->state_size && !c->dstate) ||
            !lg_buf_reserve(&c->rbuf, RBUF_MIN))
            return -ENOMEM;
        c->interval = interval;
        rc = lg_connect(cfg, &c->fd);
        if (rc) {
            snprintf(w->errmsg, sizeof(w->errmsg), "connect %s:%u: %s", cfg->server, cfg->port,
                     strerror(-rc));
            return rc;
        }
        if (run->drv->conn_init && (rc = run->drv->conn_init(run, c->dstate))) {
            snprintf(w->errmsg, sizeof(w->errmsg), "connection setup: %s", strerror(-rc));
            return rc;
        }
    }
    return 0;
}

static int worker_loop(struct worker *w)
{
    struct lg_run *run = w->run;
    const struct lg_config *cfg = run->cfg;
    uint64_t t = lg_now_ns();
    if (run->t_start > t) {
        uint64_t d = run->t_start - t;
        struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
        nanosleep(&ts, NULL);
    }
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        c->first_due = run->t_start + (uint64_t)(lg_rng_double(&w->rng) * c->interval);
        c->next_due = c->first_due;
        arm_recv(w, c);
    }
    bool stopping = false;
    uint64_t drain_deadline = 0;
    w->last_progress = run->t_start;
    uint64_t drain_ns = (uint64_t)(cfg->drain_s * 1e9);
    uint64_t next_wake = UINT64_MAX;
    bool changed = true; /* completions arrived since the last scan */
    for (;;) {
        uint64_t now = lg_now_ns();
        if (!stopping && now >= run->t_end) {
            stopping = true;
            w->stopping = true;
            drain_deadline = now + drain_ns;
        }
        /* Open loop: without a completion since the last scan and before
         * the next intended send, no connection has anything to do, so the
         * scan is skipped. With --spin-us at high rates this loop turns
         * every few microseconds, and a scan of every connection was a
         * good part of each turn. */
        bool scan = changed || stopping || cfg->closed_loop || cfg->requests || now >= next_wake;
        bool all_done = true;
        if (scan)
            next_wake = UINT64_MAX;
        for (uint32_t i = 0; scan && i < w->nconns; i++) {
            struct conn *c = &w->conns[i];
            if (c->dead)
                continue;
            if (!stopping) {
                int rc = fill(w, c, now, &next_wake);
                if (rc) {
                    snprintf(w->errmsg, sizeof(w->errmsg), "encode: %s", strerror(-rc));
                    return rc;
                }
                if (!cfg->requests || c->issued < cfg->requests || c->fcount)
                    all_done = false;
            }
            arm_send(w, c);
            arm_recv(w, c);
        }
        if (w->inflight == 0 && (stopping || (cfg->requests && all_done)))
            break;
        if (stopping && now >= drain_deadline)
            break;
        /* -n runs have no end time: a server that stops answering for the
         * drain time ends the run (the rest is counted unanswered). */
        if (cfg->requests && w->inflight && now - w->last_progress > drain_ns)
            break;
        uint64_t wake = stopping ? drain_deadline : next_wake;
        if (!stopping && run->t_end < wake)
            wake = run->t_end;
        if (wake > now + 100000000ull)
            wake = now + 100000000ull; /* look at the clock at least every 100 ms */
        struct __kernel_timespec ts;
        struct io_uring_cqe *cqe = NULL;
        uint64_t d = wake > now ? wake - now : 0;
        /* --spin-us: sleep only until shortly before the next intended send,
         * then poll without sleeping, so the wake-up latency (30-40 us on a
         * VM) is not added to the send. Costs CPU on the client's core. */
        if (run->spin_ns && !stopping && next_wake != UINT64_MAX && wake == next_wake)
            d = d > run->spin_ns ? d - run->spin_ns : 0;
        ts.tv_sec = (long long)(d / 1000000000ull);
        ts.tv_nsec = (long long)(d % 1000000000ull);
        int rc = d == 0 ? io_uring_submit_and_get_events(&w->ring)
                        : io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EBUSY) {
            snprintf(w->errmsg, sizeof(w->errmsg), "io_uring: %s", strerror(-rc));
            return rc;
        }
        now = lg_now_ns();
        w->loops++;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            struct conn *c = &w->conns[ud >> 32];
            bool stale = ((ud >> 2) & 0x3fffffffu) != (c->gen & 0x3fffffffu);
            if ((ud & 3) == UD_RECV)
                on_recv(w, c, cqe, stale, now);
            else if (!stale)
                on_send(w, c, cqe->res);
            seen++;
        }
        io_uring_cq_advance(&w->ring, seen);
        lat_flush(w);
        w->cqes += seen;
        changed = seen > 0;
    }
    lat_flush(w);
    /* Whatever is still outstanding was never answered. */
    for (uint32_t i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        while (c->scount) {
            struct slot *s = &c->slots[c->shead];
            if (s->measured)
                w->stats.unanswered[s->op]++;
            c->shead = (c->shead + 1) & c->smask;
            c->scount--;
        }
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->rc = worker_setup(w);
    pthread_barrier_wait(w->ready);
    pthread_barrier_wait(w->go);
    if (w->rc == 0 && !w->run->abort_run)
        w->rc = worker_loop(w);
    return NULL;
}

int lg_engine_run(struct lg_run *run)
{
    const struct lg_config *cfg = run->cfg;
    uint32_t nt = cfg->threads;
    struct worker *ws = calloc(nt, sizeof(*ws));
    if (!ws)
        return -ENOMEM;
    pthread_barrier_t ready, go;
    pthread_barrier_init(&ready, NULL, nt + 1);
    pthread_barrier_init(&go, NULL, nt + 1);
    uint64_t nonce = lg_fnv1a64(lg_now_ns() ^ ((uint64_t)getpid() << 32)) & 0xffffffffull;
    size_t nitems = run->wl->verify_oversell ? run->wl->recordcount * run->wl->nlocations : 0;
    int rc = 0;
    uint32_t started = 0;
    for (uint32_t t = 0; t < nt; t++) {
        struct worker *w = &ws[t];
        w->run = run;
        w->tid = t;
        w->nconns = cfg->conns;
        w->nonce = nonce;
        w->ready = &ready;
        w->go = &go;
        lg_rng_seed(&w->rng, cfg->seed * 0x9e3779b97f4a7c15ull + t + 1);
        lg_stats_init(&w->stats);
        if (nitems) {
            w->stats.granted = calloc(nitems, sizeof(int64_t));
            w->stats.ngranted = w->stats.granted ? nitems : 0;
        }
        if (pthread_create(&w->th, NULL, worker_main, w)) {
            rc = -EAGAIN;
            break;
        }
        started++;
    }
    if (started < nt) {
        /* The started threads wait on barriers sized for all of them. */
        fprintf(stderr, "atp-loadgen: cannot start %u threads\n", nt);
        exit(2);
    }
    pthread_barrier_wait(&ready);
    for (uint32_t t = 0; t < nt; t++) {
        if (ws[t].rc && rc == 0) {
            rc = ws[t].rc;
            fprintf(stderr, "atp-loadgen: thread %u: %s\n", t, ws[t].errmsg);
        }
    }
    run->abort_run = rc != 0; /* read by the workers after the barrier */
    /* Everyone is connected: the schedule starts a little ahead so all
     * threads begin together. */
    uint64_t now = lg_now_ns();
    run->t_start = now + 2000000;
    run->t_measure = run->t_start + (uint64_t)(cfg->warmup_s * 1e9);
    run->t_end = cfg->requests ? UINT64_MAX : run->t_measure + (uint64_t)(cfg->test_time_s * 1e9);
    pthread_barrier_wait(&go);
    if (rc == 0) {
        /* CPU over the measured window: marks at t_measure and t_end. */
        uint64_t t = lg_now_ns();
        if (run->t_measure > t) {
            uint64_t d = run->t_measure - t;
            struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
            nanosleep(&ts, NULL);
        }
        lg_cpu_mark(run, 0);
        if (!cfg->requests) {
            t = lg_now_ns();
            if (run->t_end > t) {
                uint64_t d = run->t_end - t;
                struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
                nanosleep(&ts, NULL);
            }
            lg_cpu_mark(run, 1);
        }
    }
    uint64_t last_done = 0;
    for (uint32_t t = 0; t < nt; t++) {
        pthread_join(ws[t].th, NULL);
        if (ws[t].rc && rc == 0) {
            rc = ws[t].rc;
            fprintf(stderr, "atp-loadgen: thread %u: %s\n", t, ws[t].errmsg);
        }
        if (ws[t].last_done > last_done)
            last_done = ws[t].last_done;
    }
    if (rc == 0 && cfg->requests)
        lg_cpu_mark(run, 1);
    if (getenv("LG_DEBUG"))
        for (uint32_t t = 0; t < nt; t++)
            fprintf(stderr, "thread %u: %llu loop turns, %llu completions\n", t,
                    (unsigned long long)ws[t].loops, (unsigned long long)ws[t].cqes);
    for (uint32_t t = 0; t < nt; t++) {
        lg_stats_merge(&run->stats, &ws[t].stats);
        lg_stats_free(&ws[t].stats);
        for (uint32_t i = 0; ws[t].conns && i < ws[t].nconns; i++)
            conn_free(&ws[t], &ws[t].conns[i]);
        free(ws[t].conns);
        if (ws[t].ring_ok)
            io_uring_queue_exit(&ws[t].ring);
        if (ws[t].br)
            munmap(ws[t].br, BR_COUNT * sizeof(struct io_uring_buf));
        free(ws[t].bufs);
    }
    if (cfg->requests)
        run->duration_s =
            last_done > run->t_measure ? (double)(last_done - run->t_measure) / 1e9 : 0;
    else
        run->duration_s = cfg->test_time_s;
    pthread_barrier_destroy(&ready);
    pthread_barrier_destroy(&go);
    free(ws);
    return rc;
}
