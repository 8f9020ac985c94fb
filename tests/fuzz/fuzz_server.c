/*
 * fuzz_server.c - the server's socket paths (src/server.c): one client
 * connection's bytes, sent over loopback to a real server with its io_uring
 * worker, in chunks the input chooses.
 *
 * Input: byte 0 is flags, the rest what the client sends (at most 64 KiB):
 *   bit 0   to the HTTP listener instead of the binary one
 *   bit 1   then reset the connection (SO_LINGER 0) instead of half-closing
 *           it and reading every answer
 *   bit 2   recv-mode plain instead of auto (multishot with a buffer ring
 *           where the kernel has it)
 *   bits 3+ a seed for the chunk sizes (1..64 bytes each; 0: one send), so
 *           frames and requests arrive cut at arbitrary places
 *
 * A fresh store (fuzz_store.c) and server for each input, one worker.
 * Properties (server.h, protocol/PROTOCOL.md), besides ASan/UBSan:
 *   - binary: what comes back is a sequence of whole response frames (a
 *     reset may cut the last one short);
 *   - HTTP: what comes back parses as HTTP/1.1 responses (http-parser in
 *     response mode), every one whole (a reset may cut the last);
 *   - binary: a whole first frame is answered (if only with an error);
 *   - afterwards the server still answers a PING and a GET /livez on new
 *     connections, and
 *     every connection is closed and forgotten (the open connection count
 *     returns to 0);
 *   - the server drains and stops.
 * Every wait is bounded (socket timeouts, the server's idle timeout), so an
 * input cannot hang the harness. Blocking calls retry on EINTR, as the C
 * client does (the first runs of this harness found the server's multishot
 * probe leaving io_uring task work on the calling thread that interrupted
 * them; the probe now runs on a thread of its own: test_server_embed).
 */
#include <errno.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "atp/proto.h"
#include "cmd.h"
#include "config.h"
#include "fuzz.h"
#include "http.h"
#include "log.h"
#include "server.h"

#define MAX_SEND   (64u << 10)
#define MAX_READ   (8u << 20) /* answers kept for the check; the rest is read and dropped */
#define WAIT_MS    3000
#define F_HTTP     1u
#define F_RESET    2u
#define F_PLAIN    4u
#define SEED_SHIFT 3

static uint64_t now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* Interrupted (see above), the connection goes on being made: ask again. */
    while (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 && errno != EISCONN) {
        FUZZ_CHECK(errno == EINTR || errno == EALREADY);
        usleep(100);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/*
 * Send data in chunks while reading whatever comes back (a server that
 * answers as it reads must not be blocked by a client that only writes).
 * Returns false if the server closed or reset the connection first.
 */
static bool send_chunks(int fd, const uint8_t *data, size_t size, uint32_t seed, uint8_t *in,
                        size_t *in_len)
{
    size_t off = 0;
    while (off < size) {
        size_t n = size - off;
        if (seed) {
            seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
            size_t c = 1 + seed % 64;
            if (c < n)
                n = c;
        }
        ssize_t w = send(fd, data + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0 && errno != EAGAIN)
            return false; /* closed by the server: a bad frame, a limit */
        if (w > 0)
            off += (size_t)w;
        uint8_t sink[4096];
        bool full = *in_len >= MAX_READ;
        ssize_t r = recv(fd, full ? sink : in + *in_len, full ? sizeof(sink) : MAX_READ - *in_len,
                         MSG_DONTWAIT);
        if (r > 0 && !full)
            *in_len += (size_t)r;
        else if (r == 0)
            return false;
        if (w < 0) {
            struct pollfd p = {.fd = fd, .events = POLLOUT | POLLIN};
            int k;
            while ((k = poll(&p, 1, WAIT_MS)) < 0 && errno == EINTR)
                ;
            FUZZ_CHECK(k > 0);
        }
    }
    return true;
}

/* recv, again when interrupted (see above). */
static ssize_t recv_some(int fd, void *p, size_t cap)
{
    ssize_t r;
    while ((r = recv(fd, p, cap, 0)) < 0 && errno == EINTR)
        ;
    return r;
}

/* Read to the end of the stream; false on a reset. */
static bool read_all(int fd, uint8_t *in, size_t *in_len)
{
    uint8_t sink[4096];
    for (;;) {
        uint8_t *p = *in_len < MAX_READ ? in + *in_len : sink;
        size_t cap = *in_len < MAX_READ ? MAX_READ - *in_len : sizeof(sink);
        ssize_t r = recv_some(fd, p, cap);
        if (r == 0)
            return true;
        if (r < 0) {
            FUZZ_CHECK(errno != EAGAIN); /* the server neither answered nor closed */
            return false;
        }
        if (p != sink)
            *in_len += (size_t)r;
    }
}

/* HTTP answers: messages begun and completed by the response parser. */
struct http_count {
    unsigned begun, done;
};

static int http_begun(http_parser *p)
{
    ((struct http_count *)p->data)->begun++;
    return 0;
}

static int http_done(http_parser *p)
{
    ((struct http_count *)p->data)->done++;
    return 0;
}

/*
 * The answers parse as HTTP/1.1 responses with no parse error; all of them
 * whole when the server closed the connection itself (a reset may cut the
 * last one).
 */
static void check_http(const uint8_t *in, size_t len, bool cut_ok)
{
    static const http_parser_settings settings = {
        .on_message_begin = http_begun,
        .on_message_complete = http_done,
    };
    struct http_count n = {0, 0};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = &n;
    size_t used = http_parser_execute(&p, &settings, (const char *)in, len);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
        fprintf(stderr, "answer %zu/%zu: %s\n", used, len,
                http_errno_description(HTTP_PARSER_ERRNO(&p)));
    FUZZ_CHECK(HTTP_PARSER_ERRNO(&p) == HPE_OK && used == len);
    if (len)
        FUZZ_CHECK(p.http_major == 1 && p.http_minor == 1);
    if (!cut_ok)
        FUZZ_CHECK(n.begun == n.done);
}

/* Every frame is a whole response frame; a cut last one only if reset. */
static void check_binary(const uint8_t *in, size_t len, bool cut_ok)
{
    size_t off = 0;
    while (off < len) {
        struct atp_frame f;
        ssize_t n = atp_proto_frame(in + off, len - off, UINT32_MAX, &f);
        FUZZ_CHECK(n >= 0);
        if (n == 0) {
            FUZZ_CHECK(cut_ok);
            return;
        }
        FUZZ_CHECK(f.opcode & ATP_OP_RESPONSE);
        off += (size_t)n;
    }
}

static void send_all(int fd, const void *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        FUZZ_CHECK(w > 0);
        p = (const char *)p + w;
        n -= (size_t)w;
    }
}

/* GET /livez on a new HTTP connection gets a 200. */
static void check_http_alive(uint16_t port)
{
    int fd = connect_to(port);
    static const char req[] = "GET /livez HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
    send_all(fd, req, sizeof(req) - 1);
    char in[512];
    size_t len = 0;
    while (len < 12) {
        ssize_t r = recv_some(fd, in + len, sizeof(in) - len);
        FUZZ_CHECK(r > 0);
        len += (size_t)r;
    }
    FUZZ_CHECK(memcmp(in, "HTTP/1.1 200", 12) == 0);
    close(fd);
}

/* A PING on a new connection gets its answer. */
static void check_alive(uint16_t port)
{
    int fd = connect_to(port);
    uint8_t req[64], in[256];
    ssize_t n = atp_proto_enc_ping_req(req, sizeof(req), 7, atp_slice_cstr("alive"));
    FUZZ_CHECK(n > 0);
    send_all(fd, req, (size_t)n);
    size_t len = 0;
    for (;;) {
        struct atp_frame f;
        ssize_t m = atp_proto_frame(in, len, sizeof(in), &f);
        FUZZ_CHECK(m >= 0);
        if (m > 0) {
            FUZZ_CHECK(f.id == 7 && f.status == 0 && f.opcode == (ATP_OP_PING | ATP_OP_RESPONSE));
            break;
        }
        ssize_t r = recv_some(fd, in + len, sizeof(in) - len);
        if (r <= 0)
            fprintf(stderr, "ping: recv %zd (%s), %zu bytes before\n", r,
                    r ? strerror(errno) : "closed", len);
        FUZZ_CHECK(r > 0);
        len += (size_t)r;
    }
    close(fd);
}

/* The open connection count comes down to `want` within the wait. */
static void check_open(struct atp_server *srv, uint64_t want)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    struct atp_server_stats st;
    for (;;) {
        atp_server_stats(srv, &st);
        if (st.connections_open == want)
            return;
        if (now_ms() > deadline) {
            fprintf(stderr,
                    "connections open: %llu, want %llu (accepted %llu, closed: peer %llu, "
                    "protocol %llu, idle %llu; requests %llu, bytes in %llu, out %llu)\n",
                    (unsigned long long)st.connections_open, (unsigned long long)want,
                    (unsigned long long)st.connections_accepted, (unsigned long long)st.closed_peer,
                    (unsigned long long)st.closed_protocol, (unsigned long long)st.closed_idle,
                    (unsigned long long)st.requests, (unsigned long long)st.bytes_in,
                    (unsigned long long)st.bytes_out);
            FUZZ_CHECK(0);
        }
        usleep(1000);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *in;
    if (!in) {
        atp_log_setup(ATP_LOG_ERROR, ATP_LOG_LOGFMT); /* notes about clients are not findings */
        in = malloc(MAX_READ);
        FUZZ_CHECK(in != NULL);
    }
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++, size--;
    if (size > MAX_SEND)
        size = MAX_SEND;

    static const volatile int refuse = 0;
    struct atp_store *store = fuzz_store_new(NULL, NULL);
    struct atp_cmd_ctx ctx;
    fuzz_cmd_ctx_init(&ctx, store, &refuse);
    struct atp_http_ctx http = {.max_header = 4096, .max_body = 16384, .version = "fuzz"};
    struct atp_server_config sc = {
        .bind = "127.0.0.1",
        .workers = 1,
        .recv_mode = flags & F_PLAIN ? ATP_RECV_PLAIN : ATP_RECV_AUTO,
        .max_connections = 8,
        .idle_timeout_ms = 2 * WAIT_MS,
        .output_buffer_limit = 64u << 10,
        .shutdown_timeout_ms = WAIT_MS,
        .http = true,
        .http_request_timeout_ms = 2 * WAIT_MS,
        .http_ctx = &http,
    };
    struct atp_server *srv = NULL;
    FUZZ_CHECK(atp_server_new(&sc, &ctx, &srv) == 0);
    FUZZ_CHECK(atp_server_start(srv) == 0);
    uint16_t port = flags & F_HTTP ? atp_server_http_port(srv) : atp_server_port(srv);

    int fd = connect_to(port);
    size_t len = 0;
    bool open = send_chunks(fd, data, size, (uint32_t)flags >> SEED_SHIFT, in, &len);
    bool whole = false; /* every answer read, up to the server's close */
    if (flags & F_RESET) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    } else {
        if (open)
            shutdown(fd, SHUT_WR);
        whole = read_all(fd, in, &len) && open;
    }
    close(fd);
    bool cut_ok = !whole || len == MAX_READ; /* the last answer may be cut */
    if (flags & F_HTTP) {
        check_http(in, len, cut_ok);
    } else {
        check_binary(in, len, cut_ok);
        struct atp_frame f;
        if (whole && atp_proto_frame(data, size, UINT32_MAX, &f) > 0)
            FUZZ_CHECK(len > 0); /* every whole frame is answered, if only with an error */
    }

    check_alive(atp_server_port(srv));
    check_http_alive(atp_server_http_port(srv));
    check_open(srv, 0);
    atp_server_drain(srv);
    FUZZ_CHECK(atp_server_wait(srv) == 0);
    atp_server_free(srv);
    atp_store_free(store);
    return 0;
}
