/*
 * fuzz_client.c - the C client (atp/client.h) reading what a server sends.
 *
 * The input's first byte picks a call (a blocking call, or three pipelined
 * requests read and decoded one by one); the rest is what the "server"
 * sends back on a real loopback connection, then it closes its sending
 * side. The client's requests are sent but never read: the answers are
 * whatever the input says, so a seed that answers id 1 (the first request
 * of a connection) reaches the decoders.
 *
 * Properties from atp/client.h, besides ASan/UBSan:
 *   - a call returns 0 or a negative code, never a positive one;
 *   - on failure the out-parameters are untouched (except reserve's
 *     shortfalls on ATP_EINSUFFICIENT);
 *   - what a success copies out is NUL-terminated and in range;
 *   - the last error message is a NUL-terminated string within its buffer;
 *   - once the client is broken, every later call returns -ENOTCONN.
 * A timeout on the client bounds every call, so an input cannot hang it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "atp/client.h"
#include "atp/error.h"
#include "fuzz.h"

#define MAX_SEND  (32u << 10) /* below a loopback socket's buffers: sending never blocks */
#define FILL_BYTE 0xa5

enum call {
    CALL_HELLO,
    CALL_PING,
    CALL_GET,
    CALL_MGET,
    CALL_RESERVE,
    CALL_COMMIT,
    CALL_RELEASE,
    CALL_EXTEND,
    CALL_GETRES,
    CALL_ADJUST,
    CALL_SET,
    CALL_STATS,
    CALL_PIPELINE,
    CALL_CHANGES, /* after the others, so the corpus's first bytes keep their calls */
    NCALLS
};

/* A listening socket on 127.0.0.1, opened once per process. */
static int listener(uint16_t *ret_port)
{
    static int fd = -1;
    static uint16_t port;
    if (fd < 0) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        FUZZ_CHECK(fd >= 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        FUZZ_CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
        FUZZ_CHECK(listen(fd, 4) == 0);
        socklen_t len = sizeof(a);
        FUZZ_CHECK(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
        port = ntohs(a.sin_port);
    }
    *ret_port = port;
    return fd;
}

static bool all_bytes(const void *p, size_t n, uint8_t b)
{
    const uint8_t *q = p;
    for (size_t i = 0; i < n; i++)
        if (q[i] != b)
            return false;
    return true;
}

/* A NUL within the first cap bytes of s. */
static bool terminated(const char *s, size_t cap)
{
    return memchr(s, 0, cap) != NULL;
}

/* The result of a call, checked against the header's promises. */
static void check_rc(struct atp_client *c, int rc)
{
    FUZZ_CHECK(rc <= 0);
    const char *msg = atp_client_last_error(c);
    FUZZ_CHECK(msg != NULL && strlen(msg) < 256);
    if (rc == 0)
        FUZZ_CHECK(!atp_client_is_broken(c));
}

static void check_resv(int rc, const struct atp_client_resv *r)
{
    if (rc != 0) {
        FUZZ_CHECK(all_bytes(r, sizeof(*r), FILL_BYTE));
        return;
    }
    FUZZ_CHECK(terminated(r->channel, sizeof(r->channel)));
    FUZZ_CHECK(terminated(r->key, sizeof(r->key)));
    FUZZ_CHECK(r->nlines <= ATP_MAX_LINES);
    for (uint32_t i = 0; i < r->nlines; i++) {
        FUZZ_CHECK(terminated(r->lines[i].sku, sizeof(r->lines[i].sku)));
        FUZZ_CHECK(terminated(r->lines[i].loc, sizeof(r->lines[i].loc)));
    }
}

static int count_stat(void *arg, const char *name, int64_t value)
{
    (void)value;
    FUZZ_CHECK(strlen(name) < 256);
    return ++*(int *)arg >= 1000; /* a non-zero return stops the walk */
}

static const struct atp_client_line lines[2] = {{"SKU-1", "DC-1", 2}, {"SKU-2", NULL, 1}};
static const struct atp_client_key keys[3] = {
    {"SKU-1", "web", "DC-1"}, {"SKU-1", "web", NULL}, {"SKU-9", "app", "DC-2"}};

/* One blocking call, its result checked. */
static void blocking(struct atp_client *c, enum call which)
{
    struct atp_client_resv r;
    memset(&r, FILL_BYTE, sizeof(r));
    int rc;
    switch (which) {
    case CALL_HELLO: {
        struct atp_client_hello h;
        memset(&h, FILL_BYTE, sizeof(h));
        rc = atp_client_hello(c, &h);
        if (rc)
            FUZZ_CHECK(all_bytes(&h, sizeof(h), FILL_BYTE));
        else
            FUZZ_CHECK(terminated(h.build, sizeof(h.build)));
        break;
    }
    case CALL_PING:
        rc = atp_client_ping(c);
        break;
    case CALL_GET: {
        struct atp_breakdown b;
        memset(&b, FILL_BYTE, sizeof(b));
        rc = atp_client_get(c, "SKU-1", "web", "DC-1", true, &b);
        if (rc)
            FUZZ_CHECK(all_bytes(&b, sizeof(b), FILL_BYTE));
        break;
    }
    case CALL_MGET: {
        struct atp_client_item items[3];
        memset(items, FILL_BYTE, sizeof(items));
        rc = atp_client_mget(c, keys, 3, true, items);
        if (rc)
            FUZZ_CHECK(all_bytes(items, sizeof(items), FILL_BYTE));
        else
            for (int i = 0; i < 3; i++)
                FUZZ_CHECK(items[i].status <= 0);
        break;
    }
    case CALL_CHANGES: {
        struct atp_client_change ch[4];
        uint32_t n = 77;
        uint64_t next = 88;
        bool more = true;
        memset(ch, FILL_BYTE, sizeof(ch));
        rc = atp_client_changes(c, "web", 5, false, 4, ch, &n, &next, &more);
        if (rc) {
            FUZZ_CHECK(all_bytes(ch, sizeof(ch), FILL_BYTE));
            FUZZ_CHECK(n == 77 && next == 88 && more);
        } else {
            FUZZ_CHECK(n <= 4);
            for (uint32_t i = 0; i < n; i++)
                FUZZ_CHECK(terminated(ch[i].sku, sizeof(ch[i].sku)) &&
                           terminated(ch[i].loc, sizeof(ch[i].loc)));
        }
        break;
    }
    case CALL_RESERVE: {
        struct atp_shortfall sf[2];
        memset(sf, FILL_BYTE, sizeof(sf));
        rc = atp_client_reserve(c, "order-1", "web", 60000, lines, 2, &r, sf);
        check_resv(rc, &r);
        if (rc != ATP_EINSUFFICIENT)
            FUZZ_CHECK(all_bytes(sf, sizeof(sf), FILL_BYTE));
        break;
    }
    case CALL_COMMIT:
        rc = atp_client_commit(c, UINT64_C(0x200000001), &r);
        check_resv(rc, &r);
        break;
    case CALL_RELEASE:
        rc = atp_client_release(c, UINT64_C(0x200000001), &r);
        check_resv(rc, &r);
        break;
    case CALL_EXTEND:
        rc = atp_client_extend(c, UINT64_C(0x200000001), 30000, &r);
        check_resv(rc, &r);
        break;
    case CALL_GETRES:
        rc = atp_client_get_reservation(c, 0, "order-1", &r);
        check_resv(rc, &r);
        break;
    case CALL_ADJUST: {
        int64_t oh = INT64_C(0x5a5a5a5a);
        rc = atp_client_adjust(c, "SKU-1", "DC-1", -3, &oh);
        if (rc)
            FUZZ_CHECK(oh == INT64_C(0x5a5a5a5a));
        break;
    }
    case CALL_SET:
        rc = atp_client_set(c, "SKU-1", "DC-1", 40, 7);
        break;
    case CALL_STATS: {
        int n = 0;
        rc = atp_client_stats(c, count_stat, &n);
        break;
    }
    default:
        rc = ATP_EINVAL;
        FUZZ_CHECK(0);
    }
    check_rc(c, rc);
}

/* Three requests in one flush, their answers read and decoded in order. */
static void pipelined(struct atp_client *c)
{
    uint64_t ids[3];
    FUZZ_CHECK(atp_client_queue_get(c, "SKU-1", "web", NULL, false, &ids[0]) == 0);
    FUZZ_CHECK(atp_client_queue_reserve(c, "order-1", "web", 60000, lines, 2, &ids[1]) == 0);
    FUZZ_CHECK(atp_client_queue_adjust(c, "SKU-1", "DC-1", 5, &ids[2]) == 0);
    FUZZ_CHECK(atp_client_pending(c) == 3);
    int rc = atp_client_flush(c);
    check_rc(c, rc);
    for (int i = 0; rc == 0 && i < 3; i++) {
        struct atp_frame f;
        uint32_t before = atp_client_pending(c);
        rc = atp_client_read(c, &f);
        check_rc(c, rc);
        if (rc)
            break;
        FUZZ_CHECK(atp_client_pending(c) == before - 1);
        if (i == 0) {
            struct atp_breakdown b;
            memset(&b, FILL_BYTE, sizeof(b));
            int d = atp_client_decode_get(c, &f, &b);
            FUZZ_CHECK(d <= 0);
            if (d)
                FUZZ_CHECK(all_bytes(&b, sizeof(b), FILL_BYTE));
        } else if (i == 1) {
            struct atp_client_resv r;
            struct atp_shortfall sf[2];
            memset(&r, FILL_BYTE, sizeof(r));
            memset(sf, FILL_BYTE, sizeof(sf));
            int d = atp_client_decode_resv(c, &f, &r, sf, 2);
            FUZZ_CHECK(d <= 0);
            check_resv(d, &r);
            if (d != ATP_EINSUFFICIENT)
                FUZZ_CHECK(all_bytes(sf, sizeof(sf), FILL_BYTE));
        } else {
            FUZZ_CHECK(atp_client_decode_status(c, &f) <= 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum call which = (enum call)(data[0] % NCALLS);
    data++, size--;
    if (size > MAX_SEND)
        size = MAX_SEND;

    uint16_t port;
    int lfd = listener(&port);
    struct atp_client *c = NULL;
    FUZZ_CHECK(atp_client_connect("127.0.0.1", port, &c) == 0);
    FUZZ_CHECK(atp_client_set_timeout(c, 2000) == 0);
    int sfd = accept(lfd, NULL, NULL);
    FUZZ_CHECK(sfd >= 0);
    /* Should the buffers be smaller after all, fail clearly, not hang. */
    struct timeval tv = {.tv_sec = 2};
    FUZZ_CHECK(setsockopt(sfd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0);
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(sfd, data + off, size - off, MSG_NOSIGNAL);
        FUZZ_CHECK(n > 0);
        off += (size_t)n;
    }
    FUZZ_CHECK(shutdown(sfd, SHUT_WR) == 0);

    if (which == CALL_PIPELINE) {
        pipelined(c);
    } else {
        blocking(c, which);
        /* The stream goes on: whatever is left answers a ping. */
        if (!atp_client_is_broken(c))
            blocking(c, CALL_PING);
    }
    if (atp_client_is_broken(c)) {
        FUZZ_CHECK(atp_client_ping(c) == -ENOTCONN);
        FUZZ_CHECK(atp_client_flush(c) == -ENOTCONN);
        struct atp_frame f;
        FUZZ_CHECK(atp_client_read(c, &f) == -ENOTCONN);
    }
    atp_client_close(c);
    close(sfd);
    return 0;
}
