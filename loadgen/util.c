/*
 * util.c - clock, buffers, statistics and blocking request helpers for
 * atp-loadgen. The blocking helpers serve setup and checks only (populate,
 * script loading, reading stock before and after a run); the measured load
 * goes through the engine.
 */
#include "lg.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

uint64_t lg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

const char *lg_protocol_name(enum lg_protocol p)
{
    switch (p) {
    case LG_PROTO_BIN:
        return "bin";
    case LG_PROTO_HTTP:
        return "http";
    case LG_PROTO_RESP:
        return "resp";
    case LG_PROTO_KAFKA:
        return "kafka";
    }
    return "?";
}

uint8_t *lg_buf_reserve(struct lg_buf *b, size_t need)
{
    if (b->cap - b->len < need) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < need)
            cap *= 2;
        uint8_t *n = realloc(b->data, cap);
        if (!n)
            return NULL;
        b->data = n;
        b->cap = cap;
    }
    return b->data + b->len;
}

int lg_buf_append(struct lg_buf *b, const void *p, size_t n)
{
    uint8_t *d = lg_buf_reserve(b, n);
    if (!d)
        return -ENOMEM;
    memcpy(d, p, n);
    b->len += n;
    return 0;
}

void lg_buf_free(struct lg_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void lg_stats_init(struct lg_stats *s)
{
    memset(s, 0, sizeof(*s));
    for (int i = 0; i < LG_OP_NMEASURED; i++)
        lg_hist_init(&s->hist[i]);
    lg_hist_init(&s->send_delay);
    lg_hist_init(&s->own_delay);
}

/* Index of a status name in the table, adding it; the last row takes the overflow. */
static uint32_t status_slot(struct lg_stats *s, const char *status)
{
    for (uint32_t i = 0; i < s->nstatus; i++)
        if (s->status[i].name == status || !strcmp(s->status[i].name, status))
            return i;
    if (s->nstatus == LG_MAX_STATUSES - 1) {
        s->status[s->nstatus].name = "OTHER";
        return s->nstatus++;
    }
    if (s->nstatus == LG_MAX_STATUSES)
        return LG_MAX_STATUSES - 1;
    s->status[s->nstatus].name = status;
    return s->nstatus++;
}

void lg_stats_count_error(struct lg_stats *s, int op, const char *status)
{
    if (op < 0 || op >= LG_OP_NMEASURED)
        return;
    s->status[status_slot(s, status)].count[op]++;
}

void lg_stats_merge(struct lg_stats *dst, const struct lg_stats *src)
{
    for (int op = 0; op < LG_OP_NMEASURED; op++) {
        lg_hist_merge(&dst->hist[op], &src->hist[op]);
        dst->sent[op] += src->sent[op];
        dst->ok[op] += src->ok[op];
        dst->err[op] += src->err[op];
        dst->unanswered[op] += src->unanswered[op];
    }
    for (uint32_t i = 0; i < src->nstatus; i++) {
        uint32_t j = status_slot(dst, src->status[i].name);
        for (int op = 0; op < LG_OP_NMEASURED; op++)
            dst->status[j].count[op] += src->status[i].count[op];
    }
    dst->keys_read += src->keys_read;
    dst->followups_dropped += src->followups_dropped;
    dst->conn_errors += src->conn_errors;
    dst->reconnects += src->reconnects;
    dst->server_closes += src->server_closes;
    dst->late_sends += src->late_sends;
    lg_hist_merge(&dst->send_delay, &src->send_delay);
    lg_hist_merge(&dst->own_delay, &src->own_delay);
    if (src->granted) {
        if (!dst->granted) {
            dst->granted = calloc(src->ngranted, sizeof(int64_t));
            dst->ngranted = dst->granted ? src->ngranted : 0;
        }
        for (size_t i = 0; i < dst->ngranted && i < src->ngranted; i++)
            dst->granted[i] += src->granted[i];
    }
}

void lg_stats_free(struct lg_stats *s)
{
    if (!s)
        return;
    free(s->granted);
    s->granted = NULL;
    s->ngranted = 0;
}

uint32_t lg_sku(const struct lg_run *run, uint64_t i, char *buf)
{
    return lg_workload_sku(run->wl, i, buf, 72);
}

int lg_connect(const struct lg_config *cfg, int *ret_fd)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", cfg->port);
    int rc = getaddrinfo(cfg->server, port, &hints, &res);
    if (rc)
        return -EHOSTUNREACH;
    int err = -ECONNREFUSED;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = -errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            freeaddrinfo(res);
            *ret_fd = fd;
            return 0;
        }
        err = -errno;
        close(fd);
    }
    freeaddrinfo(res);
    return err;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read responses for ops[0..n) from fd into resps. */
static int read_responses(struct lg_run *run, int fd, void *state, const struct lg_req *reqs,
                          size_t n, struct lg_resp *resps, struct lg_buf *in)
{
    size_t pos = 0;
    for (size_t i = 0; i < n;) {
        if (in->len > pos) {
            ssize_t c =
                run->drv->decode(run, state, in->data + pos, in->len - pos, reqs[i].op, &resps[i]);
            if (c < 0)
                return (int)c;
            if (c > 0) {
                pos += (size_t)c;
                i++;
                continue;
            }
        }
        if (pos == in->len)
            in->len = pos = 0;
        uint8_t *d = lg_buf_reserve(in, 65536);
        if (!d)
            return -ENOMEM;
        ssize_t r = recv(fd, d, in->cap - in->len, 0);
        if (r == 0)
            return -ECONNRESET;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        in->len += (size_t)r;
    }
    /* Keep only what was not consumed (nothing, for a well-behaved server). */
    memmove(in->data, in->data + pos, in->len - pos);
    in->len -= pos;
    return 0;
}

int lg_sync_batch(struct lg_run *run, int fd, void *state, const struct lg_req *reqs, size_t n,
                  struct lg_resp *resps, uint64_t *ret_failed)
{
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct lg_buf out = {0}, in = {0};
    uint64_t failed = 0;
    int rc = 0;
    const size_t chunk = 512;
    for (size_t off = 0; off < n && rc == 0; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        out.len = 0;
        for (size_t i = 0; i < m && rc == 0; i++)
            rc = run->drv->encode(run, state, &reqs[off + i], &out);
        if (rc == 0)
            rc = write_all(fd, out.data, out.len);
        if (rc == 0)
            rc = read_responses(run, fd, state, reqs + off, m, resps + off, &in);
        for (size_t i = 0; rc == 0 && i < m; i++)
            if (resps[off + i].status)
                failed++;
    }
    lg_buf_free(&out);
    lg_buf_free(&in);
    if (ret_failed)
        *ret_failed = failed;
    return rc;
}

int lg_sync_call(struct lg_run *run, int fd, void *state, const struct lg_req *r,
                 struct lg_resp *ret)
{
    memset(ret, 0, sizeof(*ret));
    return lg_sync_batch(run, fd, state, r, 1, ret, NULL);
}
