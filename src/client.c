/*
 * client.c - the C client of the atpd binary protocol (atp/client.h).
 *
 * Knows sockets (blocking TCP, optional timeouts) and the codec; every frame
 * is encoded and decoded by protocol/codec.c, never by hand here. Blocking
 * calls are "queue one, flush, read one"; pipelining exposes the same three
 * steps. Buffers grow as needed (this is a client: malloc is fine) and the
 * input buffer is compacted lazily, so the frame handed out by
 * atp_client_read stays valid until the next call.
 */
#include "atp/client.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Answers larger than this are refused (the protocol's default is 1 MiB;
 * a server may not announce more than it would accept, but be generous). */
#define CLIENT_MAX_FRAME (64u << 20)
#define CLIENT_BUF_INIT  4096

struct atp_client {
    int fd;
    bool broken;      /* a socket error, close or malformed answer happened */
    uint64_t next_id; /* request ids count from 1 */
    uint32_t pending; /* queued or sent, answer not read */
    uint8_t *out;     /* queued requests */
    size_t out_len, out_cap;
    uint8_t *in; /* received bytes: [in_off, in_len) unread */
    size_t in_off, in_len, in_cap;
    size_t last_len;     /* size of the frame handed out last, dropped next read */
    uint32_t timeout_ms; /* atp_client_set_timeout's, 0: none */
    char err[256];
};

/* --- small helpers -------------------------------------------------------- */

static struct atp_slice sl(const char *s)
{
    return s ? atp_slice_cstr(s) : (struct atp_slice){"", 0};
}

/* Remember a message (not NUL-terminated) for atp_client_last_error. */
static void set_msg(struct atp_client *c, const char *p, size_t len)
{
    if (!c)
        return;
    if (len >= sizeof(c->err))
        len = sizeof(c->err) - 1;
    if (len)
        memcpy(c->err, p, len);
    c->err[len] = 0;
}

static int broken(struct atp_client *c, int code, const char *why)
{
    c->broken = true;
    set_msg(c, why, strlen(why));
    return code;
}

static bool grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : CLIENT_BUF_INIT;
    while (n < need)
        n *= 2;
    uint8_t *p = realloc(*buf, n);
    if (!p)
        return false;
    *buf = p;
    *cap = n;
    return true;
}

/* Copy a slice into a fixed char array; false if it does not fit. */
static bool copy_str(char *dst, size_t cap, struct atp_slice s)
{
    if (s.len >= cap)
        return false;
    if (s.len)
        memcpy(dst, s.p, s.len);
    dst[s.len] = 0;
    return true;
}

/* --- connection ------------------------------------------------------------ */

int atp_client_connect(const char *host, uint16_t port, struct atp_client **ret_client)
{
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host ? host : "127.0.0.1", portstr, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    int fd = -1, err = ECONNREFUSED;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return -err;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

    struct atp_client *c = calloc(1, sizeof(*c));
    if (!c || !grow(&c->out, &c->out_cap, CLIENT_BUF_INIT) ||
        !grow(&c->in, &c->in_cap, CLIENT_BUF_INIT)) {
        if (c) {
            free(c->out);
            free(c->in);
        }
        free(c);
        close(fd);
        return -ENOMEM;
    }
    c->fd = fd;
    c->next_id = 1;
    *ret_client = c;
    return 0;
}

void atp_client_close(struct atp_client *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->out);
    free(c->in);
    free(c);
}

static int socket_timeout(int fd, uint64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (long)(ms % 1000) * 1000};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
        return -errno;
    return 0;
}

int atp_client_set_timeout(struct atp_client *c, uint32_t ms)
{
    int rc = socket_timeout(c->fd, ms);
    if (rc == 0)
        c->timeout_ms = ms;
    return rc;
}

int atp_client_fd(const struct atp_client *c)
{
    return c->fd;
}

bool atp_client_is_broken(const struct atp_client *c)
{
    return c->broken;
}

const char *atp_client_last_error(const struct atp_client *c)
{
    return c->err;
}

uint32_t atp_client_pending(const struct atp_client *c)
{
    return c->pending;
}

/* --- queueing -------------------------------------------------------------- */

/*
 * Encode one request with `call` (writing to P, C, with request id ID) at the
 * end of the output buffer, growing it to the size the encoder reports, then
 * `return` 0 or the encoder's code from the calling function.
 */
#define RETURN_QUEUE(c, ret_id, call)                                                              \
    do {                                                                                           \
        if ((c)->broken)                                                                           \
            return -ENOTCONN;                                                                      \
        uint64_t ID = (c)->next_id;                                                                \
        uint8_t *P = (c)->out + (c)->out_len;                                                      \
        size_t C = (c)->out_cap - (c)->out_len;                                                    \
        ssize_t n_ = (call);                                                                       \
        if (n_ >= 0 && (size_t)n_ > C) {                                                           \
            if (!grow(&(c)->out, &(c)->out_cap, (c)->out_len + (size_t)n_))                        \
                return -ENOMEM;                                                                    \
            P = (c)->out + (c)->out_len;                                                           \
            C = (size_t)n_;                                                                        \
            n_ = (call);                                                                           \
        }                                                                                          \
        if (n_ < 0)                                                                                \
            return (int)n_;                                                                        \
        (c)->out_len += (size_t)n_;                                                                \
        (c)->next_id++;                                                                            \
        (c)->pending++;                                                                            \
        if (ret_id)                                                                                \
            *(ret_id) = ID;                                                                        \
        return 0;                                                                                  \
    } while (0)

int atp_client_queue_raw(struct atp_client *c, const void *frame, size_t len)
{
    if (c->broken)
        return -ENOTCONN;
    if (!grow(&c->out, &c->out_cap, c->out_len + len))
        return -ENOMEM;
    memcpy(c->out + c->out_len, frame, len);
    c->out_len += len;
    c->pending++;
    return 0;
}

static int queue_hello(struct atp_client *c, uint64_t *ret_id)
{
    struct atp_proto_hello_req r = {ATP_PROTO_VERSION, ATP_PROTO_VERSION,
                                    ATP_SLICE("libatp-client")};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_hello_req(P, C, ID, &r));
}

int atp_client_queue_ping(struct atp_client *c, uint64_t *ret_id)
{
    RETURN_QUEUE(c, ret_id, atp_proto_enc_ping_req(P, C, ID, (struct atp_slice){"", 0}));
}

int atp_client_queue_get(struct atp_client *c, const char *sku, const char *channel,
                         const char *loc, bool breakdown, uint64_t *ret_id)
{
    struct atp_proto_get_req r = {{sl(sku), sl(channel), sl(loc)}, breakdown};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_get_req(P, C, ID, &r));
}

/* Arrays of up to this many keys or lines convert on the stack. */
#define STACK_ITEMS 64

static int queue_mget_keys(struct atp_client *c, const struct atp_proto_key *keys, uint32_t n,
                           bool breakdown, uint64_t *ret_id)
{
    RETURN_QUEUE(c, ret_id, atp_proto_enc_mget_req(P, C, ID, breakdown, keys, n));
}

int atp_client_queue_mget(struct atp_client *c, const struct atp_client_key *keys, uint32_t n,
                          bool breakdown, uint64_t *ret_id)
{
    struct atp_proto_key stack[STACK_ITEMS];
    struct atp_proto_key *k = n <= STACK_ITEMS ? stack : malloc(sizeof(*k) * n);
    if (!k)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        k[i] = (struct atp_proto_key){sl(keys[i].sku), sl(keys[i].channel), sl(keys[i].loc)};
    int rc = queue_mget_keys(c, k, n, breakdown, ret_id);
    if (k != stack)
        free(k);
    return rc;
}

static int queue_reserve_lines(struct atp_client *c, const char *key, const char *channel,
                               uint64_t ttl_ms, const struct atp_line_req *lines, uint32_t n,
                               uint64_t *ret_id)
{
    RETURN_QUEUE(c, ret_id,
                 atp_proto_enc_reserve_req(P, C, ID, sl(key), sl(channel), ttl_ms, lines, n));
}

int atp_client_queue_reserve(struct atp_client *c, const char *key, const char *channel,
                             uint64_t ttl_ms, const struct atp_client_line *lines, uint32_t n,
                             uint64_t *ret_id)
{
    struct atp_line_req stack[STACK_ITEMS];
    struct atp_line_req *l = n <= STACK_ITEMS ? stack : malloc(sizeof(*l) * n);
    if (!l)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        l[i] = (struct atp_line_req){sl(lines[i].sku), sl(lines[i].loc), lines[i].qty};
    int rc = queue_reserve_lines(c, key, channel, ttl_ms, l, n, ret_id);
    if (l != stack)
        free(l);
    return rc;
}

int atp_client_queue_id(struct atp_client *c, uint8_t op, uint64_t id, uint64_t ttl_ms,
                        uint64_t *ret_id)
{
    struct atp_proto_id_req r = {id, ttl_ms};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_id_req(P, C, op, ID, &r));
}

static int queue_getres(struct atp_client *c, uint64_t id, const char *key, uint64_t *ret_id)
{
    struct atp_proto_getres_req r = {.by_key = key != NULL, .res_id = id, .key = sl(key)};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_getres_req(P, C, ID, &r));
}

int atp_client_queue_adjust(struct atp_client *c, const char *sku, const char *loc, int64_t delta,
                            uint64_t *ret_id)
{
    struct atp_proto_adjust_req r = {sl(sku), sl(loc), delta};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_adjust_req(P, C, ID, &r));
}

int atp_client_queue_set(struct atp_client *c, const char *sku, const char *loc, int64_t on_hand,
                         uint64_t seq, uint64_t *ret_id)
{
    struct atp_proto_set_req r = {sl(sku), sl(loc), on_hand, seq};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_set_req(P, C, ID, &r));
}

static int queue_changes(struct atp_client *c, const char *channel, uint64_t cursor, bool network,
                         uint32_t max, uint32_t wait_ms, uint64_t *ret_id)
{
    struct atp_proto_changes_req r = {sl(channel), cursor, max, network, wait_ms};
    RETURN_QUEUE(c, ret_id, atp_proto_enc_changes_req(P, C, ID, &r));
}

int atp_client_queue_changes(struct atp_client *c, const char *channel, uint64_t cursor,
                             bool network, uint32_t max, uint64_t *ret_id)
{
    return queue_changes(c, channel, cursor, network, max, 0, ret_id);
}

static int queue_stats(struct atp_client *c, uint64_t *ret_id)
{
    RETURN_QUEUE(c, ret_id, atp_proto_enc_stats_req(P, C, ID));
}

/* --- I/O --------------------------------------------------------------------- */

int atp_client_flush(struct atp_client *c)
{
    if (c->broken)
        return -ENOTCONN;
    size_t off = 0;
    while (off < c->out_len) {
        ssize_t n = send(c->fd, c->out + off, c->out_len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
            return broken(c, -e, strerror(e));
        }
        off += (size_t)n;
    }
    c->out_len = 0;
    return 0;
}

int atp_client_read(struct atp_client *c, struct atp_frame *ret)
{
    if (c->broken)
        return -ENOTCONN;
    c->in_off += c->last_len;
    c->last_len = 0;
    for (;;) {
        size_t avail = c->in_len - c->in_off;
        struct atp_frame f;
        ssize_t n = atp_proto_frame(c->in + c->in_off, avail, CLIENT_MAX_FRAME, &f);
        if (n > 0) {
            c->last_len = (size_t)n;
            if (c->pending)
                c->pending--;
            c->err[0] = 0;
            *ret = f;
            return 0;
        }
        if (n < 0)
            return broken(c, ATP_EMALFORMED, "the server sent a broken frame");
        /* Need more: compact, make room for the whole frame when its size is
         * known, then receive. */
        if (c->in_off) {
            memmove(c->in, c->in + c->in_off, avail);
            c->in_len = avail;
            c->in_off = 0;
        }
        size_t need = atp_proto_frame_need(c->in, c->in_len);
        if (need < c->in_len + CLIENT_BUF_INIT / 2)
            need = c->in_len + CLIENT_BUF_INIT / 2;
        if (!grow(&c->in, &c->in_cap, need))
            return broken(c, -ENOMEM, "out of memory");
        ssize_t r = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (r == 0)
            return broken(c, -ECONNRESET, "the server closed the connection");
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno == EAGAIN || errno == EWOULDBLOCK ? ETIMEDOUT : errno;
            return broken(c, -e, strerror(e));
        }
        c->in_len += (size_t)r;
    }
}

/* --- decoding ----------------------------------------------------------------- */

int atp_client_decode_status(struct atp_client *c, const struct atp_frame *f)
{
    if (f->status == 0)
        return 0;
    struct atp_proto_error e;
    if (atp_proto_dec_error(f, &e) != 0)
        return ATP_EMALFORMED;
    set_msg(c, e.message.p, e.message.len);
    return e.code == 0 ? ATP_EINTERNAL : e.code;
}

int atp_client_decode_get(struct atp_client *c, const struct atp_frame *f,
                          struct atp_breakdown *ret)
{
    int rc = atp_client_decode_status(c, f);
    if (rc)
        return rc;
    struct atp_proto_get_resp r;
    if (atp_proto_dec_get_resp(f, &r))
        return ATP_EMALFORMED;
    *ret = r.b;
    return 0;
}

int atp_client_decode_resv(struct atp_client *c, const struct atp_frame *f,
                           struct atp_client_resv *ret, struct atp_shortfall *ret_short,
                           uint32_t nshort)
{
    if (f->status) {
        struct atp_proto_error e;
        if (atp_proto_dec_error(f, &e) != 0)
            return ATP_EMALFORMED;
        set_msg(c, e.message.p, e.message.len);
        if (ret_short)
            for (uint32_t i = 0; i < e.nshort && i < nshort; i++)
                atp_proto_error_shortfall(&e, i, &ret_short[i]);
        return e.code == 0 ? ATP_EINTERNAL : e.code;
    }
    struct atp_proto_resv r;
    bool replayed = false;
    if (atp_proto_dec_resv_resp(f, &r, &replayed))
        return ATP_EMALFORMED;
    struct atp_client_resv v;
    v.id = r.id;
    v.state = r.state;
    v.replayed = replayed;
    v.created_us = r.created_us;
    v.expires_us = r.expires_us;
    v.ttl_ms = r.ttl_ms;
    v.nlines = r.nlines;
    bool ok =
        copy_str(v.channel, sizeof(v.channel), r.channel) && copy_str(v.key, sizeof(v.key), r.key);
    for (uint32_t i = 0; ok && i < r.nlines; i++) {
        ok = copy_str(v.lines[i].sku, sizeof(v.lines[i].sku), r.lines[i].sku) &&
             copy_str(v.lines[i].loc, sizeof(v.lines[i].loc), r.lines[i].loc);
        v.lines[i].qty = r.lines[i].qty;
        v.lines[i].fulfilled = r.lines[i].fulfilled;
    }
    if (!ok)
        return ATP_EMALFORMED;
    if (ret)
        memcpy(ret, &v, sizeof(v));
    return 0;
}

int atp_client_decode_changes(struct atp_client *c, const struct atp_frame *f,
                              struct atp_client_change *ret, uint32_t cap, uint32_t *ret_n,
                              uint64_t *ret_next, bool *ret_more, bool *ret_network)
{
    int rc = atp_client_decode_status(c, f);
    if (rc)
        return rc;
    struct atp_proto_changes_resp r;
    if (atp_proto_dec_changes_resp(f, &r) || r.count > cap)
        return ATP_EMALFORMED;
    /* Check every entry fits before writing any: ret is untouched on failure. */
    struct atp_proto_changes_resp walk = r;
    struct atp_change e;
    while (atp_proto_changes_next(&walk, &e))
        if (e.sku.len > ATP_SKU_MAX || e.loc.len > ATP_LOC_MAX)
            return ATP_EMALFORMED;
    for (uint32_t i = 0; atp_proto_changes_next(&r, &e); i++) {
        copy_str(ret[i].sku, sizeof(ret[i].sku), e.sku);
        copy_str(ret[i].loc, sizeof(ret[i].loc), e.loc);
        ret[i].atp = e.atp;
    }
    *ret_n = r.count;
    *ret_next = r.next_cursor;
    *ret_more = r.more;
    if (ret_network)
        *ret_network = r.network;
    return 0;
}

/* --- blocking calls ----------------------------------------------------------- */

/* Before queueing a blocking call's request. */
static int call_begin(struct atp_client *c)
{
    if (c->broken)
        return -ENOTCONN;
    if (c->pending) {
        static const char msg[] = "pipelined answers are unread";
        set_msg(c, msg, sizeof(msg) - 1);
        return ATP_EINVAL;
    }
    c->err[0] = 0;
    return 0;
}

/*
 * Send the queued request `id` and read its answer into *f. An unattributed
 * error frame (the server closing: idle, connection limit) is returned as its
 * code and breaks the client; any other id mismatch is a malformed answer.
 */
static int call_finish(struct atp_client *c, uint64_t id, struct atp_frame *f)
{
    int rc = atp_client_flush(c);
    if (rc)
        return rc;
    rc = atp_client_read(c, f);
    if (rc)
        return rc;
    if (f->id == id)
        return 0;
    if (f->opcode == ATP_OP_RESPONSE && f->status) {
        rc = atp_client_decode_status(c, f);
        c->broken = true;
        return rc;
    }
    return broken(c, ATP_EMALFORMED, "answer for another request");
}

/* The common shape: begin, queue (statement using `id`), finish. */
#define CALL(c, f, queue_stmt)                                                                     \
    uint64_t id = 0;                                                                               \
    int rc = call_begin(c);                                                                        \
    if (rc)                                                                                        \
        return rc;                                                                                 \
    if ((rc = (queue_stmt)))                                                                       \
        return rc;                                                                                 \
    if ((rc = call_finish((c), id, &(f))))                                                         \
    return rc

int atp_client_hello(struct atp_client *c, struct atp_client_hello *ret)
{
    struct atp_frame f;
    CALL(c, f, queue_hello(c, &id));
    if ((rc = atp_client_decode_status(c, &f)))
        return rc;
    struct atp_proto_hello_resp r;
    if (atp_proto_dec_hello_resp(&f, &r))
        return ATP_EMALFORMED;
    struct atp_client_hello v = {r.version, r.max_frame, r.max_keys, r.max_lines, {0}};
    struct atp_slice b = r.build;
    if (b.len >= sizeof(v.build))
        b.len = sizeof(v.build) - 1;
    copy_str(v.build, sizeof(v.build), b);
    *ret = v;
    return 0;
}

int atp_client_ping(struct atp_client *c)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_ping(c, &id));
    if ((rc = atp_client_decode_status(c, &f)))
        return rc;
    struct atp_slice p;
    return atp_proto_dec_ping_resp(&f, &p) ? ATP_EMALFORMED : 0;
}

int atp_client_get(struct atp_client *c, const char *sku, const char *channel, const char *loc,
                   bool breakdown, struct atp_breakdown *ret)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_get(c, sku, channel, loc, breakdown, &id));
    return atp_client_decode_get(c, &f, ret);
}

int atp_client_mget(struct atp_client *c, const struct atp_client_key *keys, uint32_t n,
                    bool breakdown, struct atp_client_item *ret)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_mget(c, keys, n, breakdown, &id));
    if ((rc = atp_client_decode_status(c, &f)))
        return rc;
    struct atp_proto_mget_resp r;
    if (atp_proto_dec_mget_resp(&f, &r) || r.count != n)
        return ATP_EMALFORMED;
    for (uint32_t i = 0; i < n; i++)
        ret[i].status = atp_proto_mget_resp_entry(&r, i, &ret[i].b);
    return 0;
}

int atp_client_reserve(struct atp_client *c, const char *key, const char *channel, uint64_t ttl_ms,
                       const struct atp_client_line *lines, uint32_t n, struct atp_client_resv *ret,
                       struct atp_shortfall *ret_short)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_reserve(c, key, channel, ttl_ms, lines, n, &id));
    return atp_client_decode_resv(c, &f, ret, ret_short, n);
}

int atp_client_commit(struct atp_client *c, uint64_t res_id, struct atp_client_resv *ret)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_id(c, ATP_OP_COMMIT, res_id, 0, &id));
    return atp_client_decode_resv(c, &f, ret, NULL, 0);
}

int atp_client_release(struct atp_client *c, uint64_t res_id, struct atp_client_resv *ret)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_id(c, ATP_OP_RELEASE, res_id, 0, &id));
    return atp_client_decode_resv(c, &f, ret, NULL, 0);
}

int atp_client_extend(struct atp_client *c, uint64_t res_id, uint64_t ttl_ms,
                      struct atp_client_resv *ret)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_id(c, ATP_OP_EXTEND, res_id, ttl_ms, &id));
    return atp_client_decode_resv(c, &f, ret, NULL, 0);
}

int atp_client_get_reservation(struct atp_client *c, uint64_t res_id, const char *key,
                               struct atp_client_resv *ret)
{
    struct atp_frame f;
    CALL(c, f, queue_getres(c, res_id, key, &id));
    return atp_client_decode_resv(c, &f, ret, NULL, 0);
}

int atp_client_adjust(struct atp_client *c, const char *sku, const char *loc, int64_t delta,
                      int64_t *ret_on_hand)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_adjust(c, sku, loc, delta, &id));
    if ((rc = atp_client_decode_status(c, &f)))
        return rc;
    int64_t v;
    if (atp_proto_dec_adjust_resp(&f, &v))
        return ATP_EMALFORMED;
    if (ret_on_hand)
        *ret_on_hand = v;
    return 0;
}

int atp_client_set(struct atp_client *c, const char *sku, const char *loc, int64_t on_hand,
                   uint64_t seq)
{
    struct atp_frame f;
    CALL(c, f, atp_client_queue_set(c, sku, loc, on_hand, seq, &id));
    if ((rc = atp_client_decode_status(c, &f)))
        return rc;
    return atp_proto_dec_empty_resp(&f) ? ATP_EMALFORMED : 0;
}

int atp_client_changes(struct atp_client *c, const char *channel, uint64_t cursor, bool network,
                       uint32_t max, struct atp_client_change *ret, uint32_t *ret_n,
                       uint64_t *ret_next, bool *ret_more)
{
    return atp_client_changes_wait(c, channel, cursor, network, max, 0, ret, ret_n, ret_next,
                                   ret_more);
}

int atp_client_changes_wait(struct atp_client *c, const char *channel, uint64_t cursor,
                            bool network, uint32_t max, uint32_t wait_ms,
                            struct atp_client_change *ret, uint32_t *ret_n, uint64_t *ret_next,
                            bool *ret_more)
{
    struct atp_frame f;
    /* The socket timeout bounds the wait for a reply; this one may come
     * wait_ms late by design. */
    bool stretch = wait_ms > 0 && c->timeout_ms > 0;
    if (stretch && socket_timeout(c->fd, (uint64_t)c->timeout_ms + wait_ms) != 0)
        return broken(c, -errno, strerror(errno));
    uint64_t id = 0;
    int rc = call_begin(c);
    if (rc == 0)
        rc = queue_changes(c, channel, cursor, network, max, wait_ms, &id);
    if (rc == 0)
        rc = call_finish(c, id, &f);
    if (stretch && !c->broken)
        (void)socket_timeout(c->fd, c->timeout_ms);
    if (rc)
        return rc;
    /* An answer with the other NETWORK setting does not answer this request. */
    if (f.status == 0 && ((f.flags & ATP_FLAG_NETWORK) != 0) != network)
        return ATP_EMALFORMED;
    return atp_client_decode_changes(c, &f, ret, max, ret_n, ret_next, ret_more, NULL);
}

int atp_client_stats(struct atp_client *c, int (*fn)(void *arg, const char *name, int64_t value),
                     void *arg)
{
    struct atp_frame f;
    CALL(c, f, queue_stats(c, &id));
    if ((rc = atp_client_decode_status(c, &f)))
        return rc;
    struct atp_proto_stats_resp r;
    if (atp_proto_dec_stats_resp(&f, &r))
        return ATP_EMALFORMED;
    struct atp_slice name;
    int64_t value;
    char buf[256];
    while (atp_proto_stats_next(&r, &name, &value)) {
        copy_str(buf, sizeof(buf), name); /* str8: always fits */
        if (fn(arg, buf, value))
            break;
    }
    return 0;
}
