/*
 * test_server_embed.c - the server (src/server.h) started, used and stopped
 * inside a process that goes on doing other work, as tests and embedders
 * do: nothing it leaves behind may disturb the calling thread.
 *
 * In particular no EINTR: atp_server_new probes the kernel for multishot
 * receives with an io_uring of its own, and a ring used on the calling
 * thread left task work there that made most of that thread's next blocking
 * calls with a timeout fail with EINTR (25 of 30 after starting, 28 of 30
 * after stopping, on the development VM). The probe now runs on a thread of
 * its own.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "atp/client.h"
#include "cmd.h"
#include "config.h"
#include "server.h"

static struct atp_store *small_store(void)
{
    struct atp_channel_config ch = {.name = "web", .cap = -1};
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.channels = &ch;
    cfg.nchannels = 1;
    cfg.max_items = 1024;
    cfg.max_skus = 1024;
    cfg.max_reservations = 1024;
    struct atp_store *s = NULL;
    assert_int_equal(atp_store_new(&cfg, &s), 0);
    return s;
}

/* A blocking receive with a 20 ms timeout on an idle socket: EAGAIN. */
static int timed_recv_errno(void)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct timeval tv = {.tv_usec = 20000};
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    char b;
    ssize_t r = recv(sv[0], &b, 1, 0);
    int e = r < 0 ? errno : 0;
    close(sv[0]);
    close(sv[1]);
    return e;
}

static void run(int recv_mode)
{
    const char *first_mode = NULL;
    for (int i = 0; i < 10; i++) {
        struct atp_store *store = small_store();
        struct atp_cmd_ctx ctx = {.store = store}; /* default limits */
        struct atp_server_config sc = {
            .bind = "127.0.0.1",
            .workers = 1,
            .recv_mode = recv_mode,
            .max_connections = 8,
            .output_buffer_limit = 1u << 20,
            .shutdown_timeout_ms = 2000,
        };
        struct atp_server *srv = NULL;
        assert_int_equal(atp_server_new(&sc, &ctx, &srv), 0);
        assert_int_equal(atp_server_start(srv), 0);
        /* Every server of the process receives the same way. */
        if (!first_mode)
            first_mode = atp_server_recv_mode(srv);
        assert_string_equal(atp_server_recv_mode(srv), first_mode);
        assert_int_equal(timed_recv_errno(), EAGAIN);

        struct atp_client *c = NULL;
        assert_int_equal(atp_client_connect("127.0.0.1", atp_server_port(srv), &c), 0);
        assert_int_equal(atp_client_set_timeout(c, 2000), 0);
        assert_int_equal(atp_client_ping(c), 0);
        atp_client_close(c);

        atp_server_drain(srv);
        assert_int_equal(atp_server_wait(srv), 0);
        atp_server_free(srv);
        atp_store_free(store);
        assert_int_equal(timed_recv_errno(), EAGAIN);
    }
}

static void test_auto_leaves_no_eintr(void **state)
{
    (void)state;
    run(ATP_RECV_AUTO);
}

static void test_plain_leaves_no_eintr(void **state)
{
    (void)state;
    run(ATP_RECV_PLAIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auto_leaves_no_eintr),
        cmocka_unit_test(test_plain_leaves_no_eintr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
