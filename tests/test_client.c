/*
 * test_client.c - integration test of the C client library and atpctl
 * against a real atpd on an ephemeral port.
 *
 * Starts atpd (--port 0 --port-file), drives every operation through
 * atp/client.h, pipelines 1000 requests on one connection, checks that bad
 * bodies are answered and the connection carries on while bad magic is
 * answered and closed, waits for a change with CHANGES' WAIT, and runs
 * atpctl for its output and exit codes. The server is stopped by pid
 * (SIGTERM, then SIGKILL after a bound).
 *
 * Usage: test_client ATPD ATPCTL   (exit 77 = skipped: atpd did not start)
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/client.h"

static const char *atpd_path, *atpctl_path;
static pid_t server_pid = -1;
static uint16_t server_port;
static char port_file[64];

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void stop_server(void)
{
    if (server_pid <= 0)
        return;
    kill(server_pid, SIGTERM);
    for (int i = 0; i < 100; i++) { /* 5 s bound, then SIGKILL */
        if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
            server_pid = -1;
            break;
        }
        sleep_ms(50);
    }
    if (server_pid > 0) {
        kill(server_pid, SIGKILL);
        waitpid(server_pid, NULL, 0);
        server_pid = -1;
    }
    unlink(port_file);
}

/* Start atpd on an ephemeral port, with max-keys (NULL: the default);
 * false if it did not come up in 5 s. */
static bool start_server_keys(const char *max_keys)
{
    snprintf(port_file, sizeof(port_file), "/tmp/atp-test-client.%d.port", (int)getpid());
    unlink(port_file);
    char *argv[] = {
        (char *)atpd_path, "--port", "0",           "--port-file", port_file,
        "--workers",       "1",      "--log-level", "warn",        max_keys ? "--max-keys" : NULL,
        (char *)max_keys,  NULL};
    /* fork + exec rather than posix_spawn so the server dies with the test
     * even if the test is killed (a meson timeout): PR_SET_PDEATHSIG. */
    pid_t parent = getpid();
    server_pid = fork();
    if (server_pid < 0)
        return false;
    if (server_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        execv(atpd_path, argv);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        FILE *f = fopen(port_file, "r");
        unsigned port = 0;
        if (f) {
            int n = fscanf(f, "%u", &port);
            fclose(f);
            if (n == 1 && port > 0 && port < 65536) {
                server_port = (uint16_t)port;
                return true;
            }
        }
        if (waitpid(server_pid, NULL, WNOHANG) == server_pid) {
            server_pid = -1;
            return false;
        }
        sleep_ms(50);
    }
    stop_server();
    return false;
}

static bool start_server(void)
{
    return start_server_keys(NULL);
}

static struct atp_client *connect_client(void)
{
    struct atp_client *c = NULL;
    assert_int_equal(atp_client_connect("127.0.0.1", server_port, &c), 0);
    assert_int_equal(atp_client_set_timeout(c, 5000), 0);
    return c;
}

static int setup(void **state)
{
    *state = connect_client();
    return 0;
}

static int teardown(void **state)
{
    atp_client_close(*state);
    return 0;
}

/* --- tests ------------------------------------------------------------------ */

static void test_every_operation(void **state)
{
    struct atp_client *c = *state;
    struct atp_client_hello h;
    assert_int_equal(atp_client_hello(c, &h), 0);
    assert_int_equal(h.version, 1);
    assert_true(h.max_frame >= 4096);
    assert_int_equal(h.max_lines, ATP_MAX_LINES);
    assert_true(strncmp(h.build, "atpd", 4) == 0);
    assert_int_equal(atp_client_ping(c), 0);

    int64_t on_hand = 0;
    assert_int_equal(atp_client_adjust(c, "IT-1", "DC-1", 100, &on_hand), 0);
    assert_int_equal(on_hand, 100);
    assert_int_equal(atp_client_set(c, "IT-1", "DC-2", 40, 0), 0);
    assert_int_equal(atp_client_set(c, "IT-1", "DC-2", 41, 7), 0);
    assert_int_equal(atp_client_set(c, "IT-1", "DC-2", 42, 6), ATP_ESTALE);
    assert_true(strlen(atp_client_last_error(c)) > 0);

    struct atp_breakdown b;
    assert_int_equal(atp_client_get(c, "IT-1", "web", "DC-1", true, &b), 0);
    assert_int_equal(b.on_hand, 100);
    assert_true(b.atp <= 100 && b.atp > 0);
    assert_int_equal(atp_client_get(c, "IT-1", "web", NULL, false, &b), 0);
    assert_true(b.atp > 100);
    assert_int_equal(atp_client_get(c, "NOPE", "web", NULL, false, &b), ATP_ENOTFOUND);
    assert_int_equal(atp_client_get(c, "IT-1", "nochannel", NULL, false, &b), ATP_ENOCHANNEL);

    struct atp_client_key keys[] = {{"IT-1", "web", "DC-1"}, {"NOPE", "web", NULL}};
    struct atp_client_item items[2];
    assert_int_equal(atp_client_mget(c, keys, 2, false, items), 0);
    assert_int_equal(items[0].status, 0);
    assert_true(items[0].b.atp > 0);
    assert_int_equal(items[1].status, ATP_ENOTFOUND);

    struct atp_client_line lines[] = {{"IT-1", "DC-1", 2}, {"IT-1", NULL, 1}};
    static struct atp_client_resv r, r2;
    assert_int_equal(atp_client_reserve(c, "it-order-1", "web", 60000, lines, 2, &r, NULL), 0);
    assert_int_equal(r.state, ATP_RES_HELD);
    assert_false(r.replayed);
    assert_string_equal(r.key, "it-order-1");
    assert_string_equal(r.channel, "web");
    assert_int_equal(r.nlines, 2);
    assert_int_equal(atp_client_reserve(c, "it-order-1", "web", 60000, lines, 2, &r2, NULL), 0);
    assert_true(r2.replayed);
    assert_int_equal(r2.id, r.id);

    struct atp_shortfall sf[1];
    struct atp_client_line big[] = {{"IT-1", "DC-1", 1000000}};
    assert_int_equal(atp_client_reserve(c, "it-order-2", "web", 60000, big, 1, &r2, sf),
                     ATP_EINSUFFICIENT);
    assert_int_equal(sf[0].requested, 1000000);
    assert_true(sf[0].available > 0 && sf[0].available < 1000000);

    assert_int_equal(atp_client_get_reservation(c, r.id, NULL, &r2), 0);
    assert_int_equal(r2.id, r.id);
    assert_int_equal(atp_client_get_reservation(c, 0, "it-order-1", &r2), 0);
    assert_int_equal(r2.id, r.id);
    assert_int_equal(atp_client_extend(c, r.id, 120000, &r2), 0);
    assert_int_equal(r2.ttl_ms, 60000); /* the ttl asked for at RESERVE */
    assert_true(r2.expires_us >= r.created_us + 120000ULL * 1000);
    assert_int_equal(atp_client_commit(c, r.id, &r2), 0);
    assert_int_equal(r2.state, ATP_RES_COMMITTED);
    assert_int_equal(atp_client_release(c, r.id, &r2), ATP_ESTATE);

    assert_int_equal(atp_client_reserve(c, "it-order-3", "web", 60000, lines, 1, &r, NULL), 0);
    assert_int_equal(atp_client_release(c, r.id, &r2), 0);
    assert_int_equal(r2.state, ATP_RES_RELEASED);

    /* The connection survives every refusal above. */
    assert_false(atp_client_is_broken(c));
}

/* The entry for sku@loc among n changes, or NULL. */
static const struct atp_client_change *find_change(const struct atp_client_change *ch, uint32_t n,
                                                   const char *sku, const char *loc)
{
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(ch[i].sku, sku) == 0 && strcmp(ch[i].loc, loc) == 0)
            return &ch[i];
    return NULL;
}

/* sku@loc is among the n changes, with this ATP. */
static void expect_change_(const struct atp_client_change *ch, uint32_t n, const char *sku,
                           const char *loc, int64_t atp, int line)
{
    const struct atp_client_change *e = find_change(ch, n, sku, loc);
    if (!e)
        fail_msg("line %d: no change of %s@%s", line, sku, loc);
    if (e->atp != atp)
        fail_msg("line %d: %s@%s ATP %lld, want %lld", line, sku, loc, (long long)e->atp,
                 (long long)atp);
}
#define EXPECT_CHANGE(ch, n, sku, loc, atp) expect_change_((ch), (n), (sku), (loc), (atp), __LINE__)

static void test_changes(void **state)
{
    struct atp_client *c = *state;
    static struct atp_client_change ch[ATP_CHANGES_MAX];
    uint32_t n = 99;
    uint64_t cur = 0, next = 0;
    bool more = true;

    /* Cursor 0: the cursor to follow, no entries. */
    assert_int_equal(atp_client_changes(c, "web", 0, false, ATP_CHANGES_MAX, ch, &n, &cur, &more),
                     0);
    assert_int_equal(n, 0);
    assert_true(cur != 0);
    assert_false(more);

    /* web keeps 2 per item back (the default channels). */
    assert_int_equal(atp_client_adjust(c, "FEED-1", "DC-1", 10, NULL), 0);
    assert_int_equal(atp_client_adjust(c, "FEED-1", "DC-2", 5, NULL), 0);
    assert_int_equal(atp_client_adjust(c, "FEED-2", "DC-1", 3, NULL), 0);
    assert_int_equal(atp_client_changes(c, "web", cur, false, 100, ch, &n, &next, &more), 0);
    assert_int_equal(n, 3);
    assert_false(more);
    assert_true(next != cur);
    EXPECT_CHANGE(ch, n, "FEED-1", "DC-1", 8);
    EXPECT_CHANGE(ch, n, "FEED-1", "DC-2", 3);
    EXPECT_CHANGE(ch, n, "FEED-2", "DC-1", 1);

    /* Network: one entry per sku, no location. */
    assert_int_equal(atp_client_changes(c, "web", cur, true, 100, ch, &n, &next, &more), 0);
    assert_int_equal(n, 2);
    EXPECT_CHANGE(ch, n, "FEED-1", "", 11);
    EXPECT_CHANGE(ch, n, "FEED-2", "", 1);

    /* max 1: one entry and more; from its cursor, the other one. */
    assert_int_equal(atp_client_changes(c, "web", cur, true, 1, ch, &n, &next, &more), 0);
    assert_int_equal(n, 1);
    assert_true(more);
    char first[ATP_SKU_MAX + 1];
    snprintf(first, sizeof(first), "%s", ch[0].sku);
    assert_int_equal(atp_client_changes(c, "web", next, true, 1, ch, &n, &next, &more), 0);
    assert_int_equal(n, 1);
    assert_false(more);
    assert_string_not_equal(ch[0].sku, first);
    assert_true(strncmp(ch[0].sku, "FEED-", 5) == 0);

    /* Refusals: the out-parameters are left alone, the connection goes on. */
    n = 77;
    next = 78;
    assert_int_equal(atp_client_changes(c, "web", 1, false, 100, ch, &n, &next, &more),
                     ATP_ECURSOR);
    assert_true(strlen(atp_client_last_error(c)) > 0);
    assert_int_equal(n, 77);
    assert_int_equal(next, 78);
    assert_int_equal(atp_client_changes(c, "web", cur, false, 0, ch, &n, &next, &more), ATP_EINVAL);
    assert_int_equal(
        atp_client_changes(c, "web", cur, false, ATP_CHANGES_MAX + 1, ch, &n, &next, &more),
        ATP_ETOOMANY);
    assert_int_equal(atp_client_changes(c, "tv", cur, false, 100, ch, &n, &next, &more),
                     ATP_ENOCHANNEL);
    assert_int_equal(atp_client_changes(c, "web", cur, false, 65536, ch, &n, &next, &more),
                     ATP_EINVAL); /* not sent: the wire cannot carry it */
    assert_false(atp_client_is_broken(c));

    /* Pipelined: two CHANGES and a PING, answered in order. */
    uint64_t id1, id2, id3;
    assert_int_equal(atp_client_queue_changes(c, "web", cur, false, 100, &id1), 0);
    assert_int_equal(atp_client_queue_changes(c, "web", cur, true, 100, &id2), 0);
    assert_int_equal(atp_client_queue_ping(c, &id3), 0);
    assert_int_equal(atp_client_flush(c), 0);
    struct atp_frame f;
    bool net = true;
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, id1);
    assert_int_equal(atp_client_decode_changes(c, &f, ch, 100, &n, &next, &more, &net), 0);
    assert_int_equal(n, 3);
    assert_false(net);
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, id2);
    /* Room for fewer entries than the answer has: malformed, nothing written. */
    n = 55;
    assert_int_equal(atp_client_decode_changes(c, &f, ch, 1, &n, &next, &more, &net),
                     ATP_EMALFORMED);
    assert_int_equal(n, 55);
    assert_int_equal(atp_client_decode_changes(c, &f, ch, 100, &n, &next, &more, &net), 0);
    assert_int_equal(n, 2);
    assert_true(net);
    assert_null(find_change(ch, n, "FEED-1", "DC-1"));
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, id3);
    assert_int_equal(atp_client_decode_status(c, &f), 0);
}

/* --- CHANGES with WAIT ---------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A second client's adjust, some time after the waiting call began. */
struct later_adjust {
    unsigned after_ms;
    const char *sku;
    int rc;
};

static void *adjust_later(void *arg)
{
    struct later_adjust *a = arg;
    sleep_ms(a->after_ms);
    struct atp_client *d = NULL;
    a->rc = atp_client_connect("127.0.0.1", server_port, &d);
    if (a->rc == 0) {
        atp_client_set_timeout(d, 5000);
        a->rc = atp_client_adjust(d, a->sku, "DC-1", 7, NULL);
        atp_client_close(d);
    }
    return NULL;
}

static void test_changes_wait(void **state)
{
    struct atp_client *c = *state;
    static struct atp_client_change ch[100];
    uint32_t n = 99;
    uint64_t cur = 0, next = 0;
    bool more = true;
    assert_int_equal(atp_client_changes(c, "web", 0, false, 100, ch, &n, &cur, &more), 0);

    /* Nothing changes: the answer comes after about the wait, with nothing
     * and the same cursor. */
    uint64_t t0 = now_ms();
    assert_int_equal(atp_client_changes_wait(c, "web", cur, false, 100, 300, ch, &n, &next, &more),
                     0);
    uint64_t took = now_ms() - t0;
    if (took < 250 || took >= 3000)
        fail_msg("a 300 ms wait with nothing new took %llu ms", (unsigned long long)took);
    assert_int_equal(n, 0);
    assert_false(more);
    assert_true(next == cur);

    /* A change from another client 200 ms in ends a 5 s wait with it. */
    struct later_adjust a = {200, "WAIT-CL-1", -1};
    pthread_t th;
    t0 = now_ms();
    assert_int_equal(pthread_create(&th, NULL, adjust_later, &a), 0);
    int rc = atp_client_changes_wait(c, "web", cur, false, 100, 5000, ch, &n, &next, &more);
    took = now_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(a.rc, 0);
    assert_int_equal(rc, 0);
    if (took >= 2500)
        fail_msg("the change ended a 5 s wait after %llu ms", (unsigned long long)took);
    assert_true(took >= 150); /* it did wait for the change */
    assert_int_equal(n, 1);
    EXPECT_CHANGE(ch, n, "WAIT-CL-1", "DC-1", 5); /* web holds 2 back */
    assert_true(next != cur);
    cur = next;

    /* Something new already: answered at once, never held. */
    assert_int_equal(atp_client_adjust(c, "WAIT-CL-2", "DC-1", 3, NULL), 0);
    t0 = now_ms();
    assert_int_equal(atp_client_changes_wait(c, "web", cur, false, 100, 5000, ch, &n, &next, &more),
                     0);
    assert_true(now_ms() - t0 < 1000);
    assert_int_equal(n, 1);
    EXPECT_CHANGE(ch, n, "WAIT-CL-2", "DC-1", 1);
    cur = next;

    /* A socket timeout shorter than the wait: stretched for the call (it
     * succeeds after the wait), then back to what was set. */
    assert_int_equal(atp_client_set_timeout(c, 200), 0);
    t0 = now_ms();
    rc = atp_client_changes_wait(c, "web", cur, false, 100, 1000, ch, &n, &next, &more);
    took = now_ms() - t0;
    if (rc != 0)
        fail_msg("a 1 s wait under a 200 ms timeout: %s (%s)", atp_strerror(rc),
                 atp_client_last_error(c));
    assert_true(took >= 900);
    assert_int_equal(n, 0);
    assert_true(next == cur);
    struct timeval tv;
    socklen_t len = sizeof(tv);
    assert_int_equal(getsockopt(atp_client_fd(c), SOL_SOCKET, SO_RCVTIMEO, &tv, &len), 0);
    assert_int_equal(tv.tv_sec * 1000 + tv.tv_usec / 1000, 200);
    assert_int_equal(atp_client_ping(c), 0);
    /* Errors are answered at once. */
    t0 = now_ms();
    assert_int_equal(atp_client_changes_wait(c, "web", 1, false, 100, 5000, ch, &n, &next, &more),
                     ATP_ECURSOR);
    assert_int_equal(atp_client_changes_wait(c, "tv", cur, false, 100, 5000, ch, &n, &next, &more),
                     ATP_ENOCHANNEL);
    assert_true(now_ms() - t0 < 1000);
    assert_false(atp_client_is_broken(c));
}

static int count_stat(void *arg, const char *name, int64_t value)
{
    int *n = arg;
    if (strcmp(name, "items") == 0)
        assert_true(value >= 1);
    (*n)++;
    return 0;
}

static void test_stats(void **state)
{
    struct atp_client *c = *state;
    int n = 0;
    assert_int_equal(atp_client_stats(c, count_stat, &n), 0);
    assert_true(n > 10);
}

static void test_pipeline_1000_in_order(void **state)
{
    struct atp_client *c = *state;
    uint64_t ids[1000];
    for (int i = 0; i < 1000; i++) {
        int rc = i % 3 == 0   ? atp_client_queue_ping(c, &ids[i])
                 : i % 3 == 1 ? atp_client_queue_get(c, "IT-1", "web", "DC-1", false, &ids[i])
                              : atp_client_queue_get(c, "NOPE", "web", NULL, false, &ids[i]);
        assert_int_equal(rc, 0);
    }
    assert_int_equal(atp_client_pending(c), 1000);
    /* A blocking call now would mix answers: refused. */
    assert_int_equal(atp_client_ping(c), ATP_EINVAL);
    assert_int_equal(atp_client_flush(c), 0);
    for (int i = 0; i < 1000; i++) {
        struct atp_frame f;
        assert_int_equal(atp_client_read(c, &f), 0);
        assert_int_equal(f.id, ids[i]);
        if (i % 3 == 0) {
            assert_int_equal(atp_client_decode_status(c, &f), 0);
        } else {
            struct atp_breakdown b;
            assert_int_equal(atp_client_decode_get(c, &f, &b), i % 3 == 1 ? 0 : ATP_ENOTFOUND);
        }
    }
    assert_int_equal(atp_client_pending(c), 0);
    assert_int_equal(atp_client_ping(c), 0);
}

static void test_bad_bodies_carry_on(void **state)
{
    struct atp_client *c = *state;
    uint8_t frame[64];
    /* A GET whose sku length runs past the end of the body. */
    struct atp_proto_get_req g = {{ATP_SLICE("X"), ATP_SLICE("web"), {"", 0}}, false};
    ssize_t n = atp_proto_enc_get_req(frame, sizeof(frame), 9001, &g);
    frame[ATP_PROTO_HDR_SIZE] = 200;
    assert_int_equal(atp_client_queue_raw(c, frame, (size_t)n), 0);
    /* An unknown opcode. */
    n = atp_proto_enc_hdr(frame, sizeof(frame), 0x55, 0, 0, 9002, 0);
    assert_int_equal(atp_client_queue_raw(c, frame, (size_t)n), 0);
    assert_int_equal(atp_client_flush(c), 0);
    struct atp_frame f;
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, 9001);
    assert_int_equal(atp_client_decode_status(c, &f), ATP_EMALFORMED);
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, 9002);
    assert_int_equal(atp_client_decode_status(c, &f), ATP_EUNKNOWNOP);
    assert_int_equal(atp_client_ping(c), 0);
}

static void test_bad_magic_closes(void **state)
{
    struct atp_client *c = *state;
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(atp_client_queue_raw(c, http, sizeof(http) - 1), 0);
    assert_int_equal(atp_client_flush(c), 0);
    struct atp_frame f;
    assert_int_equal(atp_client_read(c, &f), 0);
    assert_int_equal(f.id, 0);
    assert_int_equal(f.opcode, ATP_OP_RESPONSE);
    assert_int_equal(atp_client_decode_status(c, &f), ATP_EBADMAGIC);
    assert_int_equal(atp_client_read(c, &f), -ECONNRESET);
    assert_true(atp_client_is_broken(c));
    assert_int_equal(atp_client_ping(c), -ENOTCONN);

    /* Other connections are unaffected. */
    struct atp_client *d = connect_client();
    assert_int_equal(atp_client_ping(d), 0);
    atp_client_close(d);
}

/* Run atpctl with arguments; returns its exit status, output in buf. */
static int atpctl(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int atpctl(char *buf, size_t cap, const char *fmt, ...)
{
    char args[512], cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "'%s' %s 2>/dev/null", atpctl_path, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(buf, 1, cap - 1, p);
    buf[n] = 0;
    int st = pclose(p);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_atpctl(void **state)
{
    char out[8192];
    unsigned p = server_port;
    assert_int_equal(atpctl(out, sizeof(out), "-p %u ping", p), 0);
    assert_non_null(strstr(out, "PONG"));
    assert_int_equal(atpctl(out, sizeof(out), "-p %u adjust CTL-1 DC-1 50", p), 0);
    assert_non_null(strstr(out, "50"));
    assert_int_equal(atpctl(out, sizeof(out), "-p %u get CTL-1 -c web -l DC-1", p), 0);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u --json get CTL-1 -c web -l DC-1 -b", p), 0);
    json_object *j = json_tokener_parse(out);
    assert_non_null(j);
    json_object *v;
    assert_true(json_object_object_get_ex(j, "on_hand", &v));
    assert_int_equal(json_object_get_int64(v), 50);
    json_object_put(j);

    assert_int_equal(atpctl(out, sizeof(out),
                            "-p %u --json reserve --key ctl-o1 -c web CTL-1@DC-1:2 --ttl 1m", p),
                     0);
    j = json_tokener_parse(out);
    assert_non_null(j);
    assert_true(json_object_object_get_ex(j, "state", &v));
    assert_string_equal(json_object_get_string(v), "held");
    assert_true(json_object_object_get_ex(j, "id", &v));
    uint64_t id = (uint64_t)json_object_get_uint64(v);
    json_object_put(j);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u commit %llu", p, (unsigned long long)id), 0);
    assert_non_null(strstr(out, "committed"));
    assert_int_equal(atpctl(out, sizeof(out), "-p %u reservation --key ctl-o1", p), 0);

    /* Refused: 1, with a JSON error object when asked. */
    assert_int_equal(atpctl(out, sizeof(out), "-p %u get NOPE -c web", p), 1);
    assert_int_equal(
        atpctl(out, sizeof(out), "-p %u --json reserve --key ctl-o2 -c web CTL-1:999999", p), 1);
    j = json_tokener_parse(out);
    assert_non_null(j);
    json_object *e;
    assert_true(json_object_object_get_ex(j, "error", &e));
    assert_true(json_object_object_get_ex(e, "code", &v));
    assert_string_equal(json_object_get_string(v), "EINSUFFICIENT");
    assert_true(json_object_object_get_ex(e, "shortfalls", &v));
    assert_int_equal(json_object_array_length(v), 1);
    json_object_put(j);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u release 1", p), 1);

    /* Usage: 2. Connection: 3. */
    assert_int_equal(atpctl(out, sizeof(out), "-p %u get", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u frobnicate", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u reserve --key k -c web X:1 --ttl 5q", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "--help"), 0);
    assert_non_null(strstr(out, "Exit status"));
    assert_int_equal(atpctl(out, sizeof(out), "-p 1 ping"), 3);
}

/* `atpctl changes -c web` without --since: the cursor to follow, no more. */
static unsigned long long atpctl_feed_cursor(unsigned port)
{
    char out[256];
    unsigned long long cur = 0;
    int more = -1;
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web", port), 0);
    assert_int_equal(sscanf(out, "cursor %llu more %d", &cur, &more), 2);
    assert_true(cur != 0);
    assert_int_equal(more, 0);
    return cur;
}

static void test_atpctl_changes(void **state)
{
    char out[8192];
    unsigned p = server_port;
    unsigned long long cur = 0, next = 0;
    int more = -1;
    cur = atpctl_feed_cursor(p);

    assert_int_equal(atpctl(out, sizeof(out), "-p %u adjust CTLF-1 DC-3 20", p), 0);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web --since %llu", p, cur), 0);
    assert_int_equal(sscanf(out, "cursor %llu more %d", &next, &more), 2);
    assert_true(next != cur);
    assert_int_equal(more, 0);
    char *line = strstr(out, "CTLF-1@DC-3");
    assert_non_null(line);
    long long atp = -1;
    assert_int_equal(sscanf(line, "CTLF-1@DC-3 %lld", &atp), 1);
    assert_int_equal(atp, 18);

    /* JSON: the cursor as a string (64 bits do not survive a double). */
    assert_int_equal(
        atpctl(out, sizeof(out), "-p %u --json changes -c web -n -s %llu -m 5", p, cur), 0);
    json_object *j = json_tokener_parse(out);
    assert_non_null(j);
    json_object *v, *arr, *e;
    assert_true(json_object_object_get_ex(j, "cursor", &v));
    assert_true(json_object_is_type(v, json_type_string));
    assert_int_equal(strtoull(json_object_get_string(v), NULL, 10), next);
    assert_true(json_object_object_get_ex(j, "more", &v));
    assert_false(json_object_get_boolean(v));
    assert_true(json_object_object_get_ex(j, "changes", &arr));
    assert_int_equal(json_object_array_length(arr), 1);
    e = json_object_array_get_idx(arr, 0);
    assert_true(json_object_object_get_ex(e, "sku", &v));
    assert_string_equal(json_object_get_string(v), "CTLF-1");
    assert_true(json_object_object_get_ex(e, "loc", &v));
    assert_null(v);
    assert_true(json_object_object_get_ex(e, "atp", &v));
    assert_int_equal(json_object_get_int64(v), 18);
    json_object_put(j);

    /* An expired cursor is a refusal (1); usage errors are 2. */
    assert_int_equal(atpctl(out, sizeof(out), "-p %u --json changes -c web --since 1", p), 1);
    j = json_tokener_parse(out);
    assert_non_null(j);
    assert_true(json_object_object_get_ex(j, "error", &e));
    assert_true(json_object_object_get_ex(e, "code", &v));
    assert_string_equal(json_object_get_string(v), "ECURSOR");
    json_object_put(j);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web -m 0", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web -m 1001", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web -s x", p), 2);
    assert_int_equal(atpctl(out, sizeof(out), "--help"), 0);
    assert_non_null(strstr(out, "changes -c CHANNEL"));
}

/* atpctl changes --wait: held while nothing is new, at once otherwise. */
static void test_atpctl_changes_wait(void **state)
{
    (void)state;
    char out[8192];
    unsigned p = server_port;
    unsigned long long cur = 0, next = 0;
    int more = -1;
    cur = atpctl_feed_cursor(p);

    uint64_t t0 = now_ms();
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web -s %llu -w 300ms", p, cur), 0);
    uint64_t took = now_ms() - t0;
    if (took < 250 || took >= 3000)
        fail_msg("changes -w 300ms with nothing new took %llu ms", (unsigned long long)took);
    assert_int_equal(sscanf(out, "cursor %llu more %d", &next, &more), 2);
    assert_true(next == cur);
    assert_int_equal(more, 0);
    assert_null(strstr(out, "@"));

    assert_int_equal(atpctl(out, sizeof(out), "-p %u adjust CTLW-1 DC-2 9", p), 0);
    t0 = now_ms();
    assert_int_equal(
        atpctl(out, sizeof(out), "-p %u changes -c web --since %llu --wait 30s", p, cur), 0);
    assert_true(now_ms() - t0 < 3000);
    assert_int_equal(sscanf(out, "cursor %llu more %d", &next, &more), 2);
    assert_true(next != cur);
    char *line = strstr(out, "CTLW-1@DC-2");
    assert_non_null(line);
    long long atp = -1;
    assert_int_equal(sscanf(line, "CTLW-1@DC-2 %lld", &atp), 1);
    assert_int_equal(atp, 7);

    /* A bad duration is a usage error (2). */
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web -s %llu -w 5q", p, cur), 2);
    assert_int_equal(atpctl(out, sizeof(out), "--help"), 0);
    assert_non_null(strstr(out, "--wait"));
}

/* Without --max, atpctl asks for the server's max-keys, not for 1000 (which
 * a server with fewer would refuse with ETOOMANY). */
static void test_atpctl_changes_max_keys(void **state)
{
    stop_server();
    assert_true(start_server_keys("3"));
    char out[8192];
    unsigned p = server_port;
    unsigned long long cur = 0, next = 0;
    int more = -1;
    cur = atpctl_feed_cursor(p);
    for (int i = 0; i < 5; i++)
        assert_int_equal(atpctl(out, sizeof(out), "-p %u adjust CTLK-%d DC-1 7", p, i), 0);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web --since %llu", p, cur), 0);
    assert_int_equal(sscanf(out, "cursor %llu more %d", &next, &more), 2);
    assert_int_equal(more, 1);
    int lines = 0;
    for (const char *q = strstr(out, "CTLK-"); q; q = strstr(q + 1, "CTLK-"))
        lines++;
    assert_int_equal(lines, 3);
    assert_int_equal(atpctl(out, sizeof(out), "-p %u changes -c web --since %llu", p, next), 0);
    assert_int_equal(sscanf(out, "cursor %llu more %d", &next, &more), 2);
    assert_int_equal(more, 0);
    stop_server();
    assert_true(start_server());
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s ATPD ATPCTL\n", argv[0]);
        return 2;
    }
    atpd_path = argv[1];
    atpctl_path = argv[2];
    signal(SIGPIPE, SIG_IGN);
    if (!start_server()) {
        fprintf(stderr, "atpd did not start; skipping\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_operation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_1000_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_bodies_carry_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic_closes, setup, teardown),
        cmocka_unit_test(test_atpctl),
        cmocka_unit_test(test_atpctl_changes),
        cmocka_unit_test(test_atpctl_changes_wait),
        cmocka_unit_test(test_atpctl_changes_max_keys),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    stop_server();
    return rc;
}
