/*
 * test_server.c - integration tests of the atpd executable over real sockets.
 *
 * Each test starts the real binary ($ATPD_BIN, set by meson) on an ephemeral
 * port (--port 0; the port comes from --port-file and is checked against the
 * "msg=listening addr=..." log line), drives it with the client library
 * (atp/client.h) and with raw frames from the codec (atp/proto.h) for broken
 * input, and stops it by pid. The receive-path tests run twice: with the
 * multishot/buffer-ring path (when the kernel has it) and with plain recv.
 *
 * Covered: pipelining and order, partial frames, 64 connections racing for
 * one SKU, every bad-input class, a client that never reads (backpressure
 * and bounded memory), max connections, idle timeout, graceful drain with
 * requests in flight, the drain bound and the forced exit, HELLO limits,
 * clients that reset right after a request (the quiet check),
 * STATS counters, CHANGES requests held for a change (WAIT), the demo
 * catalogue and the command line.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/client.h"
#include "atp/error.h"
#include "atp/proto.h"

#define IO_TIMEOUT_MS 5000

static const char *g_bin;
static char g_dir[64]; /* temp dir for logs and port files */

/* --- the server process ------------------------------------------------------- */

struct srv {
    pid_t pid;
    uint16_t port;
    char log[128];
    char portfile[128];
};

/* The server the running test started; the teardown stops it whatever happens. */
static struct srv g_srv;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char tmp[4096];
    size_t n;
    while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
        fwrite(tmp, 1, n, m);
    fclose(f);
    fclose(m);
    return buf;
}

static void dump_log(const struct srv *s)
{
    char *t = slurp(s->log);
    fprintf(stderr, "---- atpd log (%s) ----\n%s----\n", s->log, t);
    free(t);
}

/*
 * Start atpd with the common arguments plus `extra` (NULL-terminated),
 * in receive mode `mode` ("auto" or "plain"). Fails the test if it does not
 * come up within 10 s.
 */
static void start_mode(struct srv *s, const char *mode, const char *const *extra)
{
    static unsigned seq;
    memset(s, 0, sizeof(*s));
    seq++;
    snprintf(s->log, sizeof(s->log), "%s/atpd-%u.log", g_dir, seq);
    snprintf(s->portfile, sizeof(s->portfile), "%s/atpd-%u.port", g_dir, seq);
    const char *argv[64];
    size_t n = 0;
    argv[n++] = g_bin;
    argv[n++] = "--port";
    argv[n++] = "0";
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--port-file";
    argv[n++] = s->portfile;
    argv[n++] = "--workers";
    argv[n++] = "2";
    argv[n++] = "--max-items";
    argv[n++] = "65536";
    argv[n++] = "--recv-mode";
    argv[n++] = mode;
    for (size_t i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        execv(g_bin, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    g_srv = *s;
    uint64_t deadline = mono_ms() + 10000;
    while (mono_ms() < deadline) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = g_srv.pid = 0;
            dump_log(s);
            fail_msg("atpd exited during start-up (status %d)", status);
        }
        FILE *f = fopen(s->portfile, "r");
        unsigned port = 0;
        if (f) {
            if (fscanf(f, "%u", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port > 0) {
            s->port = (uint16_t)port;
            break;
        }
        sleep_ms(5);
    }
    if (s->port == 0) {
        dump_log(s);
        fail_msg("atpd did not write its port file in time");
    }
    /* The log line tells the same port (tests without a port file use it). */
    char want[64];
    snprintf(want, sizeof(want), "msg=listening addr=127.0.0.1:%u ", s->port);
    deadline = mono_ms() + 5000;
    for (;;) {
        char *t = slurp(s->log);
        bool found = strstr(t, want) != NULL;
        free(t);
        if (found)
            break;
        if (mono_ms() > deadline) {
            dump_log(s);
            fail_msg("no '%s' line in the log", want);
        }
        sleep_ms(5);
    }
    g_srv = *s;
}

static const char *g_mode = "auto";

static void start(struct srv *s, const char *const *extra)
{
    start_mode(s, g_mode, extra);
}

/* Wait up to timeout_ms for the process; its wait status, or -1 if still running. */
static int wait_exit(struct srv *s, unsigned timeout_ms)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    for (;;) {
        int status;
        pid_t r = waitpid(s->pid, &status, WNOHANG);
        if (r == s->pid) {
            s->pid = 0;
            if (g_srv.port == s->port)
                g_srv.pid = 0;
            return status;
        }
        if (mono_ms() >= deadline)
            return -1;
        sleep_ms(5);
    }
}

/* SIGTERM, and the exit status (fails if it does not exit 0 within 10 s). */
static void stop(struct srv *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGTERM);
    int status = wait_exit(s, 10000);
    if (status == -1) {
        kill(s->pid, SIGKILL);
        wait_exit(s, 5000);
        dump_log(s);
        fail_msg("atpd did not stop within 10 s of SIGTERM");
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dump_log(s);
        fail_msg("atpd exited with status %d after SIGTERM", status);
    }
}

static int teardown(void **state)
{
    (void)state;
    if (g_srv.pid > 0) {
        kill(g_srv.pid, SIGKILL);
        waitpid(g_srv.pid, NULL, 0);
        g_srv.pid = 0;
    }
    return 0;
}

static int setup_mode(void **state)
{
    g_mode = *state ? (const char *)*state : "auto";
    return 0;
}

static long rss_kb(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    char *t = slurp(path);
    char *p = strstr(t, "VmRSS:");
    long kb = p ? strtol(p + 6, NULL, 10) : -1;
    free(t);
    return kb;
}

/* --- clients ---------------------------------------------------------------- */

static struct atp_client *client(const struct srv *s)
{
    struct atp_client *c = NULL;
    int rc = atp_client_connect("127.0.0.1", s->port, &c);
    if (rc != 0)
        fail_msg("connect to port %u: %s", s->port, atp_strerror(rc));
    assert_int_equal(atp_client_set_timeout(c, IO_TIMEOUT_MS), 0);
    return c;
}

static void ping_ok(struct atp_client *c)
{
    int rc = atp_client_ping(c);
    if (rc != 0)
        fail_msg("ping: %s (%s)", atp_strerror(rc), atp_client_last_error(c));
}

static int raw_connect(const struct srv *s)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    struct timeval tv = {IO_TIMEOUT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        assert_true(w > 0);
        b += w;
        n -= (size_t)w;
    }
}

/* A frame read from a raw socket. */
struct rframe {
    uint8_t buf[1 << 17];
    size_t len; /* bytes in buf */
    size_t used;
    struct atp_frame f;
};

/* 0 and r->f; -ECONNRESET on EOF/reset; -ETIMEDOUT. */
static int raw_read(int fd, struct rframe *r)
{
    if (r->used) {
        memmove(r->buf, r->buf + r->used, r->len - r->used);
        r->len -= r->used;
        r->used = 0;
    }
    for (;;) {
        ssize_t n = atp_proto_frame(r->buf, r->len, sizeof(r->buf), &r->f);
        if (n > 0) {
            r->used = (size_t)n;
            return 0;
        }
        assert_true(n == 0);
        ssize_t got = recv(fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
        if (got == 0 || (got < 0 && errno == ECONNRESET))
            return -ECONNRESET;
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return -ETIMEDOUT;
        if (got < 0 && errno == EINTR)
            continue;
        assert_true(got > 0);
        r->len += (size_t)got;
    }
}

/* The next frame is an error with this status (and id); returns its code. */
static void expect_error(int fd, struct rframe *r, int code, uint64_t id)
{
    int rc = raw_read(fd, r);
    if (rc != 0)
        fail_msg("expected an error frame (%s), got %s", atp_error_name(code), atp_strerror(rc));
    struct atp_proto_error e;
    assert_int_equal(atp_proto_dec_error(&r->f, &e), 0);
    if (e.code != code)
        fail_msg("expected %s, got %s: %.*s", atp_error_name(code), atp_error_name(e.code),
                 (int)e.message.len, e.message.p);
    assert_true(e.message.len > 0);
    assert_int_equal(r->f.id, id);
}

/* The server closes: EOF (or reset) within the I/O timeout. */
static void expect_closed(int fd, struct rframe *r)
{
    int rc = raw_read(fd, r);
    if (rc != -ECONNRESET)
        fail_msg("expected the server to close, got %s",
                 rc == 0 ? "another frame" : atp_strerror(rc));
}

static size_t enc_ping(uint8_t *buf, size_t cap, uint64_t id, const void *payload, size_t n)
{
    ssize_t len = atp_proto_enc_ping_req(buf, cap, id, (struct atp_slice){payload, (uint32_t)n});
    assert_true(len > 0 && (size_t)len <= cap);
    return (size_t)len;
}

/* One stat by name through STATS; -1 if absent. */
struct stat_find {
    const char *name;
    int64_t value;
};

static int stat_cb(void *arg, const char *name, int64_t value)
{
    struct stat_find *sf = arg;
    if (strcmp(name, sf->name) == 0) {
        sf->value = value;
        return 1;
    }
    return 0;
}

static int64_t stat_get(const struct srv *s, const char *name)
{
    struct atp_client *c = client(s);
    struct stat_find sf = {name, -1};
    assert_int_equal(atp_client_stats(c, stat_cb, &sf), 0);
    atp_client_close(c);
    return sf.value;
}

/* Poll a stat until it equals `want` (the server updates it asynchronously). */
static void stat_wait(const struct srv *s, const char *name, int64_t want)
{
    uint64_t deadline = mono_ms() + 3000;
    int64_t v;
    while ((v = stat_get(s, name)) != want) {
        if (mono_ms() > deadline)
            fail_msg("stat %s is %lld, expected %lld", name, (long long)v, (long long)want);
        sleep_ms(10);
    }
}

/* --- pipelining and framing -------------------------------------------------- */

static void test_pipeline_1000_in_order(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    struct atp_client *c = client(&s);
    char sku[16];
    for (int i = 0; i < 10; i++) {
        snprintf(sku, sizeof(sku), "PIPE-%d", i);
        int64_t oh;
        assert_int_equal(atp_client_adjust(c, sku, "DC1", 100 + i, &oh), 0);
        assert_int_equal(oh, 100 + i);
    }
    uint64_t ids[1000];
    for (int i = 0; i < 1000; i++) {
        if (i % 2 == 0) {
            snprintf(sku, sizeof(sku), "PIPE-%d", (i / 2) % 10);
            assert_int_equal(atp_client_queue_get(c, sku, "web", "DC1", false, &ids[i]), 0);
        } else {
            assert_int_equal(atp_client_queue_ping(c, &ids[i]), 0);
        }
    }
    assert_int_equal(atp_client_pending(c), 1000);
    assert_int_equal(atp_client_flush(c), 0);
    for (int i = 0; i < 1000; i++) {
        struct atp_frame f;
        assert_int_equal(atp_client_read(c, &f), 0);
        if (f.id != ids[i])
            fail_msg("answer %d has id %llu, expected %llu", i, (unsigned long long)f.id,
                     (unsigned long long)ids[i]);
        if (i % 2 == 0) {
            struct atp_breakdown b;
            assert_int_equal(atp_client_decode_get(c, &f, &b), 0);
            assert_int_equal(b.atp, 100 + (i / 2) % 10 - 2); /* web holds 2 back */
        } else {
            assert_int_equal(f.opcode, ATP_OP_PING | ATP_OP_RESPONSE);
            assert_int_equal(f.status, 0);
        }
    }
    assert_int_equal(atp_client_pending(c), 0);
    atp_client_close(c);
    stop(&s);
}

/* Frames split at arbitrary points, across the server's 4 KiB receive buffers. */
static void test_partial_frames(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    enum { N = 300 };
    size_t cap = N * (20 + 6000);
    uint8_t *stream = malloc(cap);
    assert_non_null(stream);
    size_t len = 0;
    uint32_t sizes[N];
    for (int i = 0; i < N; i++) {
        sizes[i] = (uint32_t)((i * 7919u) % 6000u);
        uint8_t payload[6000];
        for (uint32_t k = 0; k < sizes[i]; k++)
            payload[k] = (uint8_t)(i + k);
        len += enc_ping(stream + len, cap - len, (uint64_t)i + 1, payload, sizes[i]);
    }
    int fd = raw_connect(&s);
    /* Chunks of 1..2999 bytes; a pause now and then so they arrive apart. */
    size_t off = 0;
    unsigned rnd = 12345;
    while (off < len) {
        rnd = rnd * 1103515245u + 12345u;
        size_t n = 1 + (rnd >> 8) % 2999;
        if (n > len - off)
            n = len - off;
        raw_send(fd, stream + off, n);
        off += n;
        if ((rnd >> 4) % 8 == 0)
            sleep_ms(1);
    }
    struct rframe *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    for (int i = 0; i < N; i++) {
        assert_int_equal(raw_read(fd, r), 0);
        assert_int_equal(r->f.id, (uint64_t)i + 1);
        assert_int_equal(r->f.status, 0);
        assert_int_equal(r->f.body_len, sizes[i]);
        for (uint32_t k = 0; k < sizes[i]; k++)
            if (r->f.body[k] != (uint8_t)(i + k))
                fail_msg("ping %d: payload byte %u differs", i, k);
    }
    close(fd);
    free(r);
    free(stream);
    stop(&s);
}

/* --- 64 connections racing for one SKU ----------------------------------------- */

struct racer {
    const struct srv *s;
    const char *sku;
    const char *loc;
    int idx;
    int per_thread;
    pthread_barrier_t *go;
    int granted;
    int refused;
    int other; /* any other outcome: a failure */
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct atp_client *c = NULL;
    if (atp_client_connect("127.0.0.1", r->s->port, &c) != 0) {
        r->other++;
        pthread_barrier_wait(r->go);
        return NULL;
    }
    atp_client_set_timeout(c, IO_TIMEOUT_MS);
    pthread_barrier_wait(r->go);
    for (int i = 0; i < r->per_thread; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%s-t%02d-%03d", r->sku, r->idx, i);
        struct atp_client_line line = {r->sku, r->loc, 1};
        struct atp_client_resv res;
        int rc = atp_client_reserve(c, key, "flat", 60000, &line, 1, &res, NULL);
        if (rc == 0)
            r->granted++;
        else if (rc == ATP_EINSUFFICIENT)
            r->refused++;
        else
            r->other++;
    }
    atp_client_close(c);
    return NULL;
}

static void run_race(const struct srv *s, const char *sku, const char *loc, int64_t atp)
{
    enum { THREADS = 64, PER = 30 };
    pthread_t th[THREADS];
    struct racer rs[THREADS];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        rs[i] = (struct racer){s, sku, loc, i, PER, &go, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    int granted = 0, refused = 0, other = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        granted += rs[i].granted;
        refused += rs[i].refused;
        other += rs[i].other;
    }
    pthread_barrier_destroy(&go);
    int64_t demand = THREADS * PER;
    int64_t want = demand < atp ? demand : atp;
    if (other != 0 || granted != want || granted + refused != demand)
        fail_msg("%s: granted %d refused %d other %d; demand %lld, ATP %lld", sku, granted, refused,
                 other, (long long)demand, (long long)atp);
    /* The store agrees: exactly that much is reserved. */
    struct atp_client *c = client(s);
    struct atp_breakdown b;
    assert_int_equal(atp_client_get(c, sku, "flat", loc, true, &b), 0);
    assert_int_equal(b.reserved, want);
    assert_int_equal(b.atp, atp - want);
    atp_client_close(c);
}

static void test_hot_sku_64_connections(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--channel", "flat safety=0 pct=0 cap=-1", NULL};
    start(&s, args);
    struct atp_client *c = client(&s);
    int64_t oh;
    assert_int_equal(atp_client_adjust(c, "HOT-1", "DC1", 1000, &oh), 0);  /* demand > ATP */
    assert_int_equal(atp_client_adjust(c, "WARM-1", "DC1", 5000, &oh), 0); /* demand < ATP */
    assert_int_equal(atp_client_adjust(c, "HOT-ANY", "DC1", 300, &oh), 0); /* "any" lines */
    assert_int_equal(atp_client_adjust(c, "HOT-ANY", "DC2", 250, &oh), 0);
    atp_client_close(c);
    run_race(&s, "HOT-1", "DC1", 1000);
    run_race(&s, "WARM-1", "DC1", 5000);
    run_race(&s, "HOT-ANY", NULL, 550);
    stop(&s);
}

/* --- bad input ------------------------------------------------------------------ */

static void test_bad_magic_closes_only_that_connection(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    struct atp_client *good = client(&s);
    ping_ok(good);
    int fd = raw_connect(&s);
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_send(fd, http, sizeof(http) - 1);
    struct rframe *r = calloc(1, sizeof(*r));
    expect_error(fd, r, ATP_EBADMAGIC, 0);
    assert_int_equal(r->f.opcode, ATP_OP_RESPONSE); /* unattributed */
    expect_closed(fd, r);
    close(fd);
    ping_ok(good);
    assert_true(stat_get(&s, "server_connections_closed_protocol") >= 1);
    atp_client_close(good);
    free(r);
    stop(&s);
}

static void test_oversized_frames(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--max-frame", "64kb", NULL};
    start(&s, args);
    struct atp_client *good = client(&s);
    struct rframe *r = calloc(1, sizeof(*r));

    /* A header announcing 2 MiB: refused on the header alone, id echoed. */
    int fd = raw_connect(&s);
    uint8_t hdr[ATP_PROTO_HDR_SIZE];
    assert_int_equal(atp_proto_enc_hdr(hdr, sizeof(hdr), ATP_OP_PING, 0, 0, 77, 2u << 20),
                     ATP_PROTO_HDR_SIZE);
    raw_send(fd, hdr, sizeof(hdr));
    expect_error(fd, r, ATP_ETOOLARGE, 77);
    expect_closed(fd, r);
    close(fd);

    /* Exactly the limit is fine (and spans many receive buffers)... */
    size_t cap = 65536 + 64;
    uint8_t *buf = malloc(cap);
    uint8_t *payload = calloc(1, 65536);
    memset(payload, 'p', 65536);
    fd = raw_connect(&s);
    size_t n = enc_ping(buf, cap, 5, payload, 65536 - ATP_PROTO_HDR_SIZE);
    assert_int_equal(n, 65536);
    raw_send(fd, buf, n);
    assert_int_equal(raw_read(fd, r), 0);
    assert_int_equal(r->f.status, 0);
    assert_int_equal(r->f.id, 5);
    assert_int_equal(r->f.body_len, 65536 - ATP_PROTO_HDR_SIZE);
    /* ...one byte more is not. */
    n = enc_ping(buf, cap, 6, payload, 65536 - ATP_PROTO_HDR_SIZE + 1);
    raw_send(fd, buf, n);
    expect_error(fd, r, ATP_ETOOLARGE, 6);
    expect_closed(fd, r);
    close(fd);

    ping_ok(good);
    atp_client_close(good);
    free(buf);
    free(payload);
    free(r);
    stop(&s);
}

static void test_cut_off_frame_then_close(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    struct atp_client *good = client(&s);
    ping_ok(good);
    uint8_t buf[256];
    struct atp_proto_get_req g = {{ATP_SLICE("SKU-1"), ATP_SLICE("web"), ATP_SLICE("DC1")}, false};
    ssize_t n = atp_proto_enc_get_req(buf, sizeof(buf), 3, &g);
    assert_true(n > ATP_PROTO_HDR_SIZE + 5);
    for (int cut = 1; cut < 3; cut++) {
        int fd = raw_connect(&s);
        /* Half a header, then half a body. */
        raw_send(fd, buf, cut == 1 ? 9 : (size_t)n - 4);
        sleep_ms(20);
        close(fd);
    }
    ping_ok(good);
    /* Both are gone: only `good` stays open (and the STATS connection). */
    stat_wait(&s, "server_connections_open", 2);
    atp_client_close(good);
    stop(&s);
}

static void test_unknown_opcode_connection_continues(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    int fd = raw_connect(&s);
    struct rframe *r = calloc(1, sizeof(*r));
    uint8_t buf[64];
    assert_int_equal(atp_proto_enc_hdr(buf, sizeof(buf), 0x7e, 0, 0, 9, 3), ATP_PROTO_HDR_SIZE);
    memcpy(buf + ATP_PROTO_HDR_SIZE, "abc", 3);
    size_t n = ATP_PROTO_HDR_SIZE + 3;
    n += enc_ping(buf + n, sizeof(buf) - n, 10, "hi", 2);
    raw_send(fd, buf, n);
    expect_error(fd, r, ATP_EUNKNOWNOP, 9);
    assert_int_equal(raw_read(fd, r), 0);
    assert_int_equal(r->f.id, 10);
    assert_int_equal(r->f.status, 0);
    close(fd);
    free(r);
    stop(&s);
}

static void expect_rc(struct atp_client *c, int rc, int want, const char *what)
{
    if (rc != want)
        fail_msg("%s: got %s (%s), expected %s", what, atp_error_name(rc), atp_client_last_error(c),
                 atp_error_name(want));
    ping_ok(c); /* the connection carries on */
}

static void test_domain_errors_connection_continues(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    struct atp_client *c = client(&s);
    int64_t oh;
    assert_int_equal(atp_client_adjust(c, "SKU-1", "DC1", 50, &oh), 0);
    struct atp_breakdown b;
    struct atp_client_resv res;
    char longsku[80];
    memset(longsku, 'A', 65);
    longsku[65] = '\0';

    expect_rc(c, atp_client_get(c, "bad sku!", "web", NULL, false, &b), ATP_EINVAL_SKU,
              "sku with a space");
    expect_rc(c, atp_client_get(c, longsku, "web", NULL, false, &b), ATP_EINVAL_SKU, "65-byte sku");
    expect_rc(c, atp_client_get(c, "SKU-1", "web", "D C", false, &b), ATP_EINVAL_LOC,
              "location with a space");
    expect_rc(c, atp_client_get(c, "SKU-1", "nope", NULL, false, &b), ATP_ENOCHANNEL,
              "unknown channel");
    expect_rc(c, atp_client_get(c, "NO-SUCH", "web", NULL, false, &b), ATP_ENOTFOUND,
              "unknown sku");

    struct atp_client_line zero = {"SKU-1", "DC1", 0}, neg = {"SKU-1", "DC1", -5},
                           one = {"SKU-1", "DC1", 1}, badsku = {"SK U", "DC1", 1};
    expect_rc(c, atp_client_reserve(c, "k1", "web", 1000, &zero, 1, &res, NULL), ATP_EQTY, "qty 0");
    expect_rc(c, atp_client_reserve(c, "k2", "web", 1000, &neg, 1, &res, NULL), ATP_EQTY, "qty -5");
    expect_rc(c, atp_client_reserve(c, "k3", "nope", 1000, &one, 1, &res, NULL), ATP_ENOCHANNEL,
              "reserve on an unknown channel");
    expect_rc(c, atp_client_reserve(c, "k4", "web", 0, &one, 1, &res, NULL), ATP_ETTL, "ttl 0");
    expect_rc(c, atp_client_reserve(c, "k5", "web", 1000, &badsku, 1, &res, NULL), ATP_EINVAL_SKU,
              "reserve of an invalid sku");

    /* Too many lines: encoded by hand (the codec can write up to 65535). */
    struct atp_line_req lines[ATP_MAX_LINES + 1];
    for (int i = 0; i <= ATP_MAX_LINES; i++)
        lines[i] = (struct atp_line_req){ATP_SLICE("SKU-1"), ATP_SLICE("DC1"), 1};
    uint8_t buf[4096];
    ssize_t n = atp_proto_enc_reserve_req(buf, sizeof(buf), 4242, ATP_SLICE("k6"), ATP_SLICE("web"),
                                          1000, lines, ATP_MAX_LINES + 1);
    assert_true(n > 0 && (size_t)n <= sizeof(buf));
    assert_int_equal(atp_client_queue_raw(c, buf, (size_t)n), 0);
    assert_int_equal(atp_client_flush(c), 0);
    struct atp_frame f;
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, 4242);
    expect_rc(c, atp_client_decode_status(c, &f), ATP_ETOOMANY, "33 lines");

    /* Nothing above reserved anything. */
    assert_int_equal(atp_client_get(c, "SKU-1", "web", "DC1", true, &b), 0);
    assert_int_equal(b.reserved, 0);
    atp_client_close(c);
    stop(&s);
}

/* --- a client that never reads ----------------------------------------------------- */

static void test_client_that_never_reads(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--output-buffer-limit", "256kb", NULL};
    start(&s, args);
    struct atp_client *good = client(&s);
    ping_ok(good);
    long rss0 = rss_kb(s.pid);

    /* Pings with 1000-byte payloads: each answer is as large as its request. */
    enum { PER_CHUNK = 64 };
    uint8_t payload[1000];
    memset(payload, 'z', sizeof(payload));
    size_t cap = PER_CHUNK * 1100;
    uint8_t *chunk = malloc(cap);
    size_t clen = 0;
    for (int i = 0; i < PER_CHUNK; i++)
        clen += enc_ping(chunk + clen, cap - clen, (uint64_t)i + 1, payload, sizeof(payload));
    int bad = raw_connect(&s);
    int rcv = 4096; /* a small receive window on our side */
    setsockopt(bad, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    fcntl(bad, F_SETFL, fcntl(bad, F_GETFL) | O_NONBLOCK);

    /* Send until the server stops reading (our sends block for a second). */
    uint64_t sent = 0, start_ms = mono_ms(), last_progress = mono_ms();
    size_t off = 0;
    while (mono_ms() - start_ms < 8000 && mono_ms() - last_progress < 1000) {
        ssize_t w = send(bad, chunk + off, clen - off, MSG_NOSIGNAL);
        if (w > 0) {
            sent += (uint64_t)w;
            off = (off + (size_t)w) % clen;
            last_progress = mono_ms();
        } else {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            sleep_ms(5);
        }
    }
    if (mono_ms() - last_progress < 1000)
        fail_msg("the server kept reading from a client that never reads (%llu bytes)",
                 (unsigned long long)sent);
    /* Others are served at once meanwhile. */
    uint64_t t0 = mono_ms();
    for (int i = 0; i < 100; i++)
        ping_ok(good);
    assert_true(mono_ms() - t0 < 2000);
    long rss1 = rss_kb(s.pid);
    /* Bounded: the output limit, what was received before the pause, and the
     * receive buffers; far less than what the client pushed. */
    if (rss1 - rss0 > 48 * 1024)
        fail_msg("server memory grew by %ld KiB while a client did not read", rss1 - rss0);
    assert_true(stat_get(&s, "server_backpressure_pauses") >= 1);

    close(bad); /* with unread answers: a reset */
    ping_ok(good);
    stat_wait(&s, "server_connections_open", 2); /* good + the STATS connection */
    atp_client_close(good);
    free(chunk);
    stop(&s);
}

/* --- limits ---------------------------------------------------------------------- */

static void test_max_connections(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--max-connections", "3", NULL};
    start(&s, args);
    struct atp_client *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = client(&s);
        ping_ok(c[i]);
    }
    struct rframe *r = calloc(1, sizeof(*r));
    int fd = raw_connect(&s);
    expect_error(fd, r, ATP_ETOOMANYCONN, 0);
    assert_int_equal(r->f.opcode, ATP_OP_RESPONSE);
    expect_closed(fd, r);
    close(fd);
    ping_ok(c[2]); /* the others are untouched */

    /* A slot frees when a client leaves. */
    atp_client_close(c[0]);
    uint64_t deadline = mono_ms() + 3000;
    for (;;) {
        struct atp_client *n = client(&s);
        int rc = atp_client_ping(n);
        if (rc == 0) {
            c[0] = n;
            break;
        }
        atp_client_close(n);
        if (mono_ms() > deadline)
            fail_msg("no slot after a client left: %s", atp_strerror(rc));
        sleep_ms(20);
    }
    /* STATS needs a slot too: free one first. */
    atp_client_close(c[1]);
    sleep_ms(100);
    assert_true(stat_get(&s, "server_connections_rejected_max") >= 1);
    atp_client_close(c[0]);
    atp_client_close(c[2]);
    free(r);
    stop(&s);
}

/* Server-side sockets of `port` in CLOSE_WAIT: the peer closed, atpd not. */
static int close_wait_count(uint16_t port)
{
    static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    int n = 0;
    for (size_t i = 0; i < 2; i++) {
        FILE *f = fopen(files[i], "r");
        if (f == NULL)
            continue;
        char line[512];
        while (fgets(line, sizeof(line), f)) {
            unsigned lport, st;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2 &&
                lport == port && st == 0x08)
                n++;
        }
        fclose(f);
    }
    return n;
}

/*
 * Many more connections, one after the other, than a worker has registered-
 * file slots (max-connections + 64): each is answered, and each socket is
 * really closed once its client leaves (a slot not emptied would keep it
 * open, in CLOSE_WAIT, after the fd was closed).
 */
static void test_connection_churn(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--max-connections", "8", NULL};
    start(&s, args);
    for (int i = 0; i < 400; i++) {
        struct atp_client *c = client(&s);
        ping_ok(c);
        atp_client_close(c);
        if (i % 50 == 49)
            sleep_ms(20); /* let the server catch up: no rejections */
    }
    uint64_t deadline = mono_ms() + 3000;
    int n;
    while ((n = close_wait_count(s.port)) > 0) {
        if (mono_ms() > deadline)
            fail_msg("%d server sockets still in CLOSE_WAIT", n);
        sleep_ms(20);
    }
    stat_wait(&s, "server_connections_open", 1); /* the STATS connection */
    assert_int_equal(stat_get(&s, "server_connections_rejected_max"), 0);
    stop(&s);
}

static void *spin(void *arg)
{
    atomic_bool *halt = arg;
    while (!atomic_load_explicit(halt, memory_order_relaxed))
        ;
    return NULL;
}

/*
 * Clients that send a request (whole, or its first bytes) and reset at
 * once, 4,000 of them while another thread keeps a core busy: every such
 * connection is closed within a few seconds, long before the idle timeout
 * (60 s here). With multishot receives the kernel can report the bytes and
 * never the reset; the server's quiet check finds such a connection after
 * a second (src/server.c). That race is too rare to count on here (three
 * runs of this test against the server before the check all passed), so
 * this test guards the rest: a healthy connection quiet for longer than
 * the check's second is neither closed nor restarted, and every
 * reset connection is closed, in both receive modes.
 */
static void test_reset_right_after_request(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--idle-timeout", "60s", NULL};
    start(&s, args);
    struct atp_client *quiet = client(&s);
    ping_ok(quiet);
    sleep_ms(1300);
    ping_ok(quiet);
    assert_int_equal(stat_get(&s, "server_recv_restarts"), 0);

    atomic_bool halt = false;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, spin, &halt), 0);
    uint8_t buf[64];
    size_t whole = enc_ping(buf, sizeof(buf), 1, "x", 1);
    for (int i = 0; i < 4000; i++) {
        int fd = raw_connect(&s);
        raw_send(fd, buf, i & 1 ? whole : 5);
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
        close(fd);
    }
    atomic_store(&halt, true);
    pthread_join(t, NULL);
    stat_wait(&s, "server_connections_open", 2); /* `quiet` and the STATS connection */
    ping_ok(quiet);
    fprintf(stderr, "    %s: %lld receives restarted by the quiet check\n", g_mode,
            (long long)stat_get(&s, "server_recv_restarts"));
    atp_client_close(quiet);
    stop(&s);
}

/*
 * Connections quiet for about the quiet check's second that then send a
 * request and close their side at once, 400 at a time spread over 60 ms so
 * that many land on a check: every request is answered before the server
 * closes. (A first quiet check took a peek's end of file as the answer and
 * dropped the request whose completion was still queued: 14-17 of 2,000 in
 * a review's probe.)
 */
static void test_quiet_then_request_and_close(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--workers", "1", NULL}; /* every check on one ring */
    start(&s, args);
    enum { N = 400, ROUNDS = 3 };
    int fd[N];
    uint8_t buf[64];
    size_t n = enc_ping(buf, sizeof(buf), 7, "q", 1);
    struct rframe *r = calloc(1, sizeof(*r));
    int lost = 0;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < N; i++) {
            fd[i] = raw_connect(&s);
            raw_send(fd[i], buf, n);
        }
        for (int i = 0; i < N; i++) {
            r->len = r->used = 0;
            assert_int_equal(raw_read(fd[i], r), 0);
        }
        uint64_t t0 = mono_ms();
        for (int i = 0; i < N; i++) {
            uint64_t at = t0 + 1000 + 60u * (unsigned)i / N;
            while (mono_ms() < at)
                sleep_ms(1);
            raw_send(fd[i], buf, n);
            shutdown(fd[i], SHUT_WR);
        }
        for (int i = 0; i < N; i++) {
            r->len = r->used = 0;
            if (raw_read(fd[i], r) != 0 || r->f.id != 7)
                lost++;
            close(fd[i]);
        }
    }
    free(r);
    fprintf(stderr, "    %s: %d of %d lost; %lld receives restarted by the quiet check\n", g_mode,
            lost, N * ROUNDS, (long long)stat_get(&s, "server_recv_restarts"));
    if (lost)
        fail_msg("%d of %d requests sent just before a close got no answer", lost, N * ROUNDS);
    stop(&s);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--idle-timeout", "800ms", NULL};
    start(&s, args);
    struct rframe *r = calloc(1, sizeof(*r));
    int fd = raw_connect(&s);
    uint8_t buf[64];
    size_t n = enc_ping(buf, sizeof(buf), 1, "x", 1);
    raw_send(fd, buf, n);
    assert_int_equal(raw_read(fd, r), 0);

    /* A busy client meanwhile is never idle; the quiet one is not closed early. */
    struct atp_client *busy = client(&s);
    for (int i = 0; i < 40; i++) {
        if (i == 8) { /* 400 ms in: still open */
            n = enc_ping(buf, sizeof(buf), 2, "y", 1);
            raw_send(fd, buf, n);
            assert_int_equal(raw_read(fd, r), 0);
            assert_int_equal(r->f.id, 2);
        }
        ping_ok(busy);
        sleep_ms(50);
    }
    /* 1.6 s of silence since: the error frame, then the close. */
    expect_error(fd, r, ATP_ETIMEDOUT, 0);
    expect_closed(fd, r);
    close(fd);
    ping_ok(busy);
    assert_true(stat_get(&s, "server_connections_closed_idle") >= 1);
    atp_client_close(busy);
    free(r);
    stop(&s);
}

/*
 * busy-poll: the worker polls its ring before sleeping. Answers in bursts,
 * after pauses longer than the poll (the worker slept and must be woken by
 * the next request), and a drain that still ends with exit 0.
 */
static void test_busy_poll(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--busy-poll", "300", NULL};
    start(&s, args);
    struct atp_client *c = client(&s);
    int64_t oh;
    assert_int_equal(atp_client_adjust(c, "POLL-1", "DC1", 10, &oh), 0);
    for (int round = 0; round < 5; round++) {
        enum { N = 200 };
        for (int i = 0; i < N; i++)
            assert_int_equal(atp_client_queue_get(c, "POLL-1", "web", "DC1", false, NULL), 0);
        assert_int_equal(atp_client_flush(c), 0);
        for (int i = 0; i < N; i++) {
            struct atp_frame f;
            assert_int_equal(atp_client_read(c, &f), 0);
            struct atp_breakdown b;
            assert_int_equal(atp_client_decode_get(c, &f, &b), 0);
            assert_int_equal(b.atp, 8); /* 10 less the web channel's safety stock */
        }
        sleep_ms(20); /* longer than the poll: the worker goes to sleep */
        ping_ok(c);
    }
    atp_client_close(c);
    kill(s.pid, SIGTERM);
    int status = wait_exit(&s, 10000);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dump_log(&s);
        fail_msg("atpd with --busy-poll did not exit 0 after SIGTERM (status %d)", status);
    }
}

/* --- the change feed: CHANGES with WAIT --------------------------------------------- */

/* A CHANGES request with the WAIT flag (wait_ms) queued on c. */
static void queue_changes_wait(struct atp_client *c, uint64_t id, uint64_t cursor, uint32_t wait_ms)
{
    uint8_t buf[128];
    struct atp_proto_changes_req r = {ATP_SLICE("web"), cursor, 100, false, wait_ms};
    ssize_t n = atp_proto_enc_changes_req(buf, sizeof(buf), id, &r);
    assert_true(n > 0);
    assert_int_equal(buf[4] & ATP_FLAG_WAIT, ATP_FLAG_WAIT);
    assert_int_equal(atp_client_queue_raw(c, buf, (size_t)n), 0);
}

/* The next answer is CHANGES `id`'s: its entries and next cursor. */
static void read_changes(struct atp_client *c, uint64_t id, struct atp_client_change *ch,
                         uint32_t *ret_n, uint64_t *ret_next)
{
    struct atp_frame f;
    int rc = atp_client_read(c, &f);
    if (rc != 0)
        fail_msg("reading the CHANGES answer %llu: %s", (unsigned long long)id, atp_strerror(rc));
    if (f.id != id)
        fail_msg("an answer to request %llu (opcode 0x%02x) where CHANGES %llu's was due",
                 (unsigned long long)f.id, f.opcode, (unsigned long long)id);
    bool more = true;
    assert_int_equal(atp_client_decode_changes(c, &f, ch, 100, ret_n, ret_next, &more, NULL), 0);
    assert_false(more);
}

/* The next answer is PING `id`'s. */
static void read_ping(struct atp_client *c, uint64_t id)
{
    struct atp_frame f;
    int rc = atp_client_read(c, &f);
    if (rc != 0)
        fail_msg("reading the PING answer %llu: %s", (unsigned long long)id, atp_strerror(rc));
    if (f.id != id)
        fail_msg("an answer to request %llu (opcode 0x%02x) where PING %llu's was due",
                 (unsigned long long)f.id, f.opcode, (unsigned long long)id);
    assert_int_equal(f.opcode, ATP_OP_PING | ATP_OP_RESPONSE);
    assert_int_equal(atp_client_decode_status(c, &f), 0);
}

/* Nothing arrives on c's socket for ms milliseconds. */
static void expect_silence(struct atp_client *c, int ms)
{
    struct pollfd p = {.fd = atp_client_fd(c), .events = POLLIN};
    if (poll(&p, 1, ms) != 0) {
        struct atp_frame f;
        int rc = atp_client_read(c, &f);
        if (rc != 0)
            fail_msg("%s while the request should be held", atp_strerror(rc));
        fail_msg("an answer to request %llu (opcode 0x%02x) while the request should be held",
                 (unsigned long long)f.id, f.opcode);
    }
}

/* Poll a stat until it equals `want`, for at most `ms`. */
static void stat_within_(const struct srv *s, const char *name, int64_t want, unsigned ms, int line)
{
    uint64_t t0 = mono_ms();
    int64_t v;
    while ((v = stat_get(s, name)) != want) {
        if (mono_ms() - t0 > ms)
            fail_msg("line %d: stat %s is %lld after %u ms, expected %lld", line, name,
                     (long long)v, ms, (long long)want);
        sleep_ms(10);
    }
}
#define stat_within(s, name, want, ms) stat_within_((s), (name), (want), (ms), __LINE__)

/*
 * A held CHANGES on a real server: the PING pipelined behind it waits with
 * it, a change from another connection answers both in order, a wait with
 * nothing new ends at its deadline, STATS counts each held request once,
 * and a client that goes away while held leaves nothing held behind.
 */
static void test_feed_wait(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL); /* feed-wait-max: the default 30 s */
    struct atp_client *c = client(&s), *f = client(&s);
    static struct atp_client_change ch[100];
    uint32_t n = 0;
    uint64_t cur = 0, next = 0;
    bool more;
    assert_int_equal(atp_client_changes(c, "web", 0, false, 100, ch, &n, &cur, &more), 0);
    assert_int_equal(stat_get(&s, "server_feed_waits"), 0);
    assert_int_equal(stat_get(&s, "server_feed_waiting"), 0);

    /* Held: no answer to either, one request waiting. */
    uint64_t ping_id;
    queue_changes_wait(f, 1001, cur, 3000);
    assert_int_equal(atp_client_queue_ping(f, &ping_id), 0);
    assert_int_equal(atp_client_flush(f), 0);
    uint64_t t0 = mono_ms();
    expect_silence(f, 150);
    assert_int_equal(stat_get(&s, "server_feed_waiting"), 1);
    assert_int_equal(stat_get(&s, "server_feed_waits"), 1);
    /* A change on another connection answers it well before its 3 s, with
     * that change; then the PING. */
    assert_int_equal(atp_client_adjust(c, "FW-1", "DC1", 5, NULL), 0);
    read_changes(f, 1001, ch, &n, &next);
    uint64_t took = mono_ms() - t0;
    if (took > 2000)
        fail_msg("the change answered the held request after %llu ms", (unsigned long long)took);
    assert_int_equal(n, 1);
    assert_string_equal(ch[0].sku, "FW-1");
    assert_string_equal(ch[0].loc, "DC1");
    assert_int_equal(ch[0].atp, 3); /* web holds 2 back */
    assert_true(next != cur);
    read_ping(f, ping_id);
    stat_within(&s, "server_feed_waiting", 0, 1000);

    /* Nothing new: held until its 300 ms are over, answered with nothing
     * and its own cursor; a PING sent while it is held (and a PING of
     * another size after it) are answered after it, in order. */
    cur = next;
    queue_changes_wait(f, 1003, cur, 300);
    assert_int_equal(atp_client_flush(f), 0);
    t0 = mono_ms();
    expect_silence(f, 100);
    uint64_t ping2_id;
    assert_int_equal(atp_client_queue_ping(f, &ping_id), 0);
    assert_int_equal(atp_client_flush(f), 0);
    read_changes(f, 1003, ch, &n, &next);
    took = mono_ms() - t0;
    if (took < 250 || took > 3000)
        fail_msg("a 300 ms wait answered after %llu ms", (unsigned long long)took);
    assert_int_equal(n, 0);
    assert_true(next == cur);
    read_ping(f, ping_id);
    static const char payload[] = "a ping of another size";
    uint8_t pf[64];
    ssize_t pn = atp_proto_enc_ping_req(pf, sizeof(pf), 1004,
                                        (struct atp_slice){payload, sizeof(payload) - 1});
    assert_true(pn > 0);
    assert_int_equal(atp_client_queue_raw(f, pf, (size_t)pn), 0);
    assert_int_equal(atp_client_queue_ping(f, &ping2_id), 0);
    assert_int_equal(atp_client_flush(f), 0);
    read_ping(f, 1004);
    read_ping(f, ping2_id);
    /* Two requests were held (each once, however often it was looked at). */
    assert_int_equal(stat_get(&s, "server_feed_waits"), 2);
    stat_within(&s, "server_feed_waiting", 0, 1000);
    ping_ok(f);

    /* A client that closes while held: the server forgets it promptly, and
     * goes on answering others. */
    struct atp_client *g = client(&s);
    queue_changes_wait(g, 1005, cur, 5000);
    assert_int_equal(atp_client_flush(g), 0);
    stat_within(&s, "server_feed_waiting", 1, 1000);
    atp_client_close(g);
    stat_within(&s, "server_feed_waiting", 0, 1500);
    assert_int_equal(stat_get(&s, "server_feed_waits"), 3);
    ping_ok(c);
    assert_int_equal(atp_client_changes(f, "web", cur, false, 100, ch, &n, &next, &more), 0);
    assert_int_equal(n, 0);

    /* Two held requests back to back: the second is held as the first is
     * answered, in the same pass; each counts. */
    queue_changes_wait(f, 1008, cur, 150);
    queue_changes_wait(f, 1009, cur, 150);
    assert_int_equal(atp_client_flush(f), 0);
    read_changes(f, 1008, ch, &n, &next);
    read_changes(f, 1009, ch, &n, &next);
    assert_int_equal(stat_get(&s, "server_feed_waits"), 5);

    /* A client that shuts down its side while its request is held still
     * gets that answer (at once, with nothing) and the answers of what it
     * sent behind it, which are carried out. */
    struct atp_client *h = client(&s);
    uint64_t adj_id;
    queue_changes_wait(h, 1010, cur, 5000);
    assert_int_equal(atp_client_queue_adjust(h, "FW-2", "DC1", 7, &adj_id), 0);
    assert_int_equal(atp_client_flush(h), 0);
    stat_within(&s, "server_feed_waiting", 1, 1000);
    t0 = mono_ms();
    assert_int_equal(shutdown(atp_client_fd(h), SHUT_WR), 0);
    read_changes(h, 1010, ch, &n, &next);
    if (mono_ms() - t0 > 2000)
        fail_msg("a held request was answered %llu ms after the client shut down",
                 (unsigned long long)(mono_ms() - t0));
    assert_int_equal(n, 0);
    struct atp_frame af;
    assert_int_equal(atp_client_read(h, &af), 0);
    assert_true(af.id == adj_id);
    assert_int_equal(af.status, 0);
    atp_client_close(h);
    struct atp_breakdown bd;
    assert_int_equal(atp_client_get(c, "FW-2", "web", "DC1", true, &bd), 0);
    assert_int_equal(bd.on_hand, 7);
    atp_client_close(f);
    atp_client_close(c);
    stop(&s);
}

/* feed-wait-max cuts a longer wait (and a held connection is not idle);
 * 0 never holds; a drain answers at once. */
static void test_feed_wait_max(void **state)
{
    (void)state;
    struct srv s;
    const char *cut[] = {"--feed-wait-max", "200ms", "--idle-timeout", "100ms", NULL};
    start(&s, cut);
    struct atp_client *c = client(&s);
    static struct atp_client_change ch[100];
    uint32_t n = 0;
    uint64_t cur = 0, next = 0;
    bool more;
    assert_int_equal(atp_client_changes(c, "web", 0, false, 100, ch, &n, &cur, &more), 0);
    uint64_t t0 = mono_ms();
    assert_int_equal(atp_client_changes_wait(c, "web", cur, false, 100, 5000, ch, &n, &next, &more),
                     0);
    uint64_t took = mono_ms() - t0;
    if (took < 150 || took > 2000)
        fail_msg("a 5 s wait under feed-wait-max 200ms answered after %llu ms",
                 (unsigned long long)took);
    assert_int_equal(n, 0);
    assert_true(next == cur);
    assert_int_equal(stat_get(&s, "server_feed_waits"), 1);
    atp_client_close(c);
    stop(&s);

    /* 0: never held (WAIT accepted and ignored). */
    const char *never[] = {"--feed-wait-max", "0", NULL};
    start(&s, never);
    c = client(&s);
    assert_int_equal(atp_client_changes(c, "web", 0, false, 100, ch, &n, &cur, &more), 0);
    t0 = mono_ms();
    assert_int_equal(atp_client_changes_wait(c, "web", cur, false, 100, 5000, ch, &n, &next, &more),
                     0);
    took = mono_ms() - t0;
    if (took > 1000) /* held, it would take the 5 s asked for */
        fail_msg("feed-wait-max 0 held a request for %llu ms", (unsigned long long)took);
    assert_int_equal(n, 0);
    assert_true(next == cur);
    assert_int_equal(stat_get(&s, "server_feed_waits"), 0);
    atp_client_close(c);
    stop(&s);

    /* A draining server answers a held request at once, then closes. */
    start(&s, NULL);
    c = client(&s);
    assert_int_equal(atp_client_changes(c, "web", 0, false, 100, ch, &n, &cur, &more), 0);
    queue_changes_wait(c, 1007, cur, 5000);
    assert_int_equal(atp_client_flush(c), 0);
    stat_within(&s, "server_feed_waiting", 1, 1000);
    sleep_ms(50); /* held through a few looks, not only just now */
    t0 = mono_ms();
    kill(s.pid, SIGTERM);
    read_changes(c, 1007, ch, &n, &next);
    took = mono_ms() - t0;
    if (took > 1500)
        fail_msg("the drain answered the held request after %llu ms", (unsigned long long)took);
    assert_int_equal(n, 0);
    assert_true(next == cur);
    atp_client_close(c);
    int status = wait_exit(&s, 10000);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dump_log(&s);
        fail_msg("atpd did not exit 0 after the drain (status %d)", status);
    }
}

/* --- lifecycle --------------------------------------------------------------------- */

static void test_graceful_shutdown_answers_in_flight(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    struct atp_client *c = client(&s);
    int64_t oh;
    assert_int_equal(atp_client_adjust(c, "DRAIN-1", "DC1", 10, &oh), 0);
    enum { N = 3000 };
    for (int i = 0; i < N; i++)
        assert_int_equal(atp_client_queue_get(c, "DRAIN-1", "web", "DC1", false, NULL), 0);
    assert_int_equal(atp_client_flush(c), 0);
    kill(s.pid, SIGTERM); /* while the requests are in flight */
    for (int i = 0; i < N; i++) {
        struct atp_frame f;
        int rc = atp_client_read(c, &f);
        if (rc != 0)
            fail_msg("answer %d of %d after SIGTERM: %s", i, N, atp_strerror(rc));
        struct atp_breakdown b;
        assert_int_equal(atp_client_decode_get(c, &f, &b), 0);
        assert_int_equal(b.atp, 8);
    }
    struct atp_frame f;
    assert_int_equal(atp_client_read(c, &f), -ECONNRESET); /* then the server closes */
    atp_client_close(c);
    int status = wait_exit(&s, 10000);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dump_log(&s);
        fail_msg("atpd did not exit 0 after the drain (status %d)", status);
    }
    char *log = slurp(s.log);
    assert_non_null(strstr(log, "msg=draining signal=SIGTERM"));
    assert_non_null(strstr(log, "msg=stopped"));
    free(log);
    /* Nobody listens any more. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s.port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), -1);
    close(fd);
}

/* A client holding the drain open: a paused connection with unsent answers. */
static int stuck_client(const struct srv *s)
{
    int fd = raw_connect(s);
    int rcv = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    uint8_t payload[1000], buf[1100];
    memset(payload, 'q', sizeof(payload));
    size_t n = enc_ping(buf, sizeof(buf), 1, payload, sizeof(payload));
    uint64_t last = mono_ms(), t0 = mono_ms();
    size_t off = 0;
    while (mono_ms() - last < 300 && mono_ms() - t0 < 8000) {
        ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
        if (w > 0) {
            off = (off + (size_t)w) % n;
            last = mono_ms();
        } else {
            sleep_ms(2);
        }
    }
    return fd;
}

static void test_drain_is_bounded(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--output-buffer-limit", "64kb", "--shutdown-timeout", "1s", NULL};
    start(&s, args);
    int fd = stuck_client(&s);
    uint64_t t0 = mono_ms();
    kill(s.pid, SIGTERM);
    int status = wait_exit(&s, 6000);
    uint64_t took = mono_ms() - t0;
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dump_log(&s);
        fail_msg("status %d after %llu ms", status, (unsigned long long)took);
    }
    assert_true(took >= 900); /* it did wait for the stuck client */
    assert_true(took < 3500); /* and no longer than the bound */
    close(fd);
}

static void test_second_signal_forces_exit(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--output-buffer-limit", "64kb", "--shutdown-timeout", "30s", NULL};
    start(&s, args);
    int fd = stuck_client(&s);
    kill(s.pid, SIGTERM);
    assert_int_equal(wait_exit(&s, 300), -1); /* draining, held open by the stuck client */
    uint64_t t0 = mono_ms();
    kill(s.pid, SIGINT);
    int status = wait_exit(&s, 3000);
    assert_true(status != -1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 2);
    assert_true(mono_ms() - t0 < 3000);
    char *log = slurp(s.log);
    assert_non_null(strstr(log, "second signal"));
    free(log);
    close(fd);
}

/* --- HELLO, STATS, demo --------------------------------------------------------------- */

static void test_hello_and_stats(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--max-frame", "64kb", "--max-keys", "50", "--max-lines", "8", NULL};
    start(&s, args);
    struct atp_client *c = client(&s);
    struct atp_client_hello h;
    assert_int_equal(atp_client_hello(c, &h), 0);
    assert_int_equal(h.max_frame, 65536);
    assert_int_equal(h.max_keys, 50);
    assert_int_equal(h.max_lines, 8);
    assert_non_null(strstr(h.build, "atpd"));
    for (int i = 0; i < 20; i++)
        ping_ok(c);
    atp_client_close(c);
    assert_true(stat_get(&s, "server_requests") >= 21);
    assert_int_equal(stat_get(&s, "server_workers"), 2);
    assert_true(stat_get(&s, "server_connections_accepted") >= 2);
    assert_true(stat_get(&s, "server_bytes_in") > 0);
    assert_true(stat_get(&s, "server_bytes_out") > 0);
    stop(&s);
}

static void test_demo_catalogue(void **state)
{
    (void)state;
    struct srv s;
    const char *args[] = {"--demo", "--max-items", "300000", NULL};
    start(&s, args);
    struct atp_client *c = client(&s);
    struct atp_breakdown b;
    assert_int_equal(atp_client_get(c, "SKU-000001", "web", NULL, true, &b), 0);
    assert_true(b.on_hand >= 0);
    assert_int_equal(atp_client_get(c, "SKU-100000", "app", "DC3", true, &b), 0);
    assert_int_equal(atp_client_get(c, "SKU-100001", "web", NULL, false, &b), ATP_ENOTFOUND);
    atp_client_close(c);
    char *log = slurp(s.log);
    assert_non_null(strstr(log, "msg=\"demo catalogue loaded\" skus=100000 items=300000"));
    free(log);
    stop(&s);
}

/* --- command line --------------------------------------------------------------------- */

/* Run atpd with args and env additions; its exit status and output. */
static int run_cli(const char *const *args, const char *env_add, char **ret_out)
{
    char out[128];
    snprintf(out, sizeof(out), "%s/cli.out", g_dir);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = g_bin;
    for (size_t i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (env_add)
            putenv((char *)env_add);
        execv(g_bin, (char *const *)argv);
        _exit(127);
    }
    struct srv tmp = {.pid = pid};
    int status = wait_exit(&tmp, 10000);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("atpd %s did not exit", args[0]);
    }
    *ret_out = slurp(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_command_line(void **state)
{
    (void)state;
    char *out;
    const char *version[] = {"--version", NULL};
    assert_int_equal(run_cli(version, NULL, &out), 0);
    assert_true(strncmp(out, "atpd ", 5) == 0);
    free(out);

    const char *help[] = {"--help", NULL};
    assert_int_equal(run_cli(help, NULL, &out), 0);
    assert_non_null(strstr(out, "--check-config"));
    assert_non_null(strstr(out, "--idle-timeout"));
    free(out);

    const char *check[] = {"--check-config", NULL};
    assert_int_equal(run_cli(check, NULL, &out), 0);
    assert_non_null(strstr(out, "\nport 7400\n"));
    assert_non_null(strstr(out, "\nchannel marketplace safety=5 pct=10 cap=50"));
    free(out);

    /* environment < flags */
    assert_int_equal(run_cli(check, "ATPD_PORT=1234", &out), 0);
    assert_non_null(strstr(out, "\nport 1234\n"));
    free(out);
    const char *check_flag[] = {"--check-config", "--port", "4321", NULL};
    assert_int_equal(run_cli(check_flag, "ATPD_PORT=1234", &out), 0);
    assert_non_null(strstr(out, "\nport 4321\n"));
    free(out);

    /* file < environment, and an error with its line number */
    char conf[128];
    snprintf(conf, sizeof(conf), "%s/t.conf", g_dir);
    FILE *f = fopen(conf, "w");
    fputs("# test\nport 1111\nmax-connections 7\n", f);
    fclose(f);
    const char *check_file[] = {"--check-config", "-c", conf, NULL};
    assert_int_equal(run_cli(check_file, "ATPD_PORT=2222", &out), 0);
    assert_non_null(strstr(out, "\nport 2222\n"));
    assert_non_null(strstr(out, "\nmax-connections 7\n"));
    free(out);
    f = fopen(conf, "w");
    fputs("port 1111\nbogus-directive 1\n", f);
    fclose(f);
    assert_int_equal(run_cli(check_file, NULL, &out), 1);
    assert_non_null(strstr(out, ":2: unknown directive 'bogus-directive'"));
    free(out);
    /* Without --check-config the same error stops the start. */
    const char *run_bad[] = {"-c", conf, "--port", "0", NULL};
    assert_int_equal(run_cli(run_bad, NULL, &out), 1);
    assert_non_null(strstr(out, "msg=\"invalid configuration\""));
    free(out);

    const char *bad_flag[] = {"--no-such-flag", NULL};
    assert_int_equal(run_cli(bad_flag, NULL, &out), 1);
    free(out);
    const char *bad_value[] = {"--check-config", "--workers", "many", NULL};
    assert_int_equal(run_cli(bad_value, NULL, &out), 1);
    assert_non_null(strstr(out, "workers"));
    free(out);
    unlink(conf);
}

/* A second atpd on a port in use refuses to start (no silent SO_REUSEPORT sharing). */
static void test_port_in_use(void **state)
{
    (void)state;
    struct srv s;
    start(&s, NULL);
    char port[16];
    snprintf(port, sizeof(port), "%u", s.port);
    const char *args[] = {"--port", port, "--max-items", "65536", NULL};
    char *out;
    assert_int_equal(run_cli(args, NULL, &out), 1);
    assert_non_null(strstr(out, "msg=\"cannot listen\""));
    assert_non_null(strstr(out, "in use"));
    free(out);
    struct atp_client *c = client(&s);
    ping_ok(c);
    atp_client_close(c);
    stop(&s);
}

static void test_json_logs(void **state)
{
    (void)state;
    struct srv s;
    /* JSON lines carry the same fields; the port still comes from the port file. */
    memset(&s, 0, sizeof(s));
    const char *args[] = {"--log-format", "json", NULL};
    /* start() waits for the logfmt line; check the JSON one by hand instead. */
    static unsigned seq = 1000;
    snprintf(s.log, sizeof(s.log), "%s/json-%u.log", g_dir, ++seq);
    snprintf(s.portfile, sizeof(s.portfile), "%s/json-%u.port", g_dir, seq);
    const char *argv[] = {g_bin, "--port",      "0",     "--port-file", s.portfile, "--workers",
                          "1",   "--max-items", "65536", args[0],       args[1],    NULL};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(s.log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, STDERR_FILENO);
        execv(g_bin, (char *const *)argv);
        _exit(127);
    }
    s.pid = g_srv.pid = pid;
    uint64_t deadline = mono_ms() + 10000;
    char *log = NULL;
    for (;;) {
        free(log);
        log = slurp(s.log);
        if (strstr(log, "\"msg\":\"listening\""))
            break;
        if (mono_ms() > deadline)
            fail_msg("no JSON listening line: %s", log);
        sleep_ms(10);
    }
    assert_non_null(strstr(log, "{\"ts\":\""));
    assert_non_null(strstr(log, "\"level\":\"info\",\"msg\":\"listening\",\"addr\":\"127.0.0.1:"));
    free(log);
    stop(&s);
}

int main(void)
{
    g_bin = getenv("ATPD_BIN");
    if (g_bin == NULL || access(g_bin, X_OK) != 0) {
        fprintf(stderr, "ATPD_BIN is not set to the atpd executable; skipping\n");
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g_dir, sizeof(g_dir), "/tmp/atpd-test-XXXXXX");
    if (mkdtemp(g_dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    static const char *plain = "plain";
    static const char *automode = "auto";
#define BOTH(t)                                                                                    \
    {#t " (auto)", t, setup_mode, teardown, (void *)automode},                                     \
    {                                                                                              \
#t " (plain)", t, setup_mode, teardown, (void *)plain                                      \
    }
#define ONE(t)                                                                                     \
    {                                                                                              \
#t, t, setup_mode, teardown, NULL                                                          \
    }
    const struct CMUnitTest tests[] = {
        BOTH(test_pipeline_1000_in_order),
        BOTH(test_partial_frames),
        BOTH(test_hot_sku_64_connections),
        BOTH(test_bad_magic_closes_only_that_connection),
        BOTH(test_oversized_frames),
        BOTH(test_cut_off_frame_then_close),
        ONE(test_unknown_opcode_connection_continues),
        ONE(test_domain_errors_connection_continues),
        BOTH(test_client_that_never_reads),
        ONE(test_max_connections),
        BOTH(test_connection_churn),
        BOTH(test_idle_timeout),
        BOTH(test_reset_right_after_request),
        BOTH(test_quiet_then_request_and_close),
        BOTH(test_busy_poll),
        BOTH(test_graceful_shutdown_answers_in_flight),
        BOTH(test_feed_wait),
        ONE(test_feed_wait_max),
        ONE(test_drain_is_bounded),
        ONE(test_second_signal_forces_exit),
        ONE(test_hello_and_stats),
        ONE(test_demo_catalogue),
        ONE(test_command_line),
        ONE(test_port_in_use),
        ONE(test_json_logs),
    };
    const char *only = getenv("ATP_TEST_FILTER"); /* e.g. "test_idle*": run just those */
    if (only != NULL)
        cmocka_set_test_filter(only);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    /* Logs are kept on failure for a look; removed otherwise. */
    if (failed == 0) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
        (void)!system(cmd);
    } else {
        fprintf(stderr, "server logs kept in %s\n", g_dir);
    }
    return failed;
}
