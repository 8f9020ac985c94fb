/*
 * server.h - the io_uring network server of atpd.
 *
 * N worker threads, each with its own io_uring ring and its own SO_REUSEPORT
 * listening socket (the kernel spreads connections across them), serve the
 * binary protocol. A worker never parses frames: it hands received bytes to
 * atp_cmd_handle() (cmd.h) and sends back what that appends. Workers share
 * nothing but the store (through the cmd context), the connection count and
 * their statistics counters.
 *
 * It knows sockets, io_uring, connection lifecycles, backpressure and
 * limits; it knows nothing about the wire format beyond cmd.h, nor about the
 * config file (main.c maps the config onto struct atp_server_config). It logs
 * through log.h: it is part of the executable, not of the library.
 */
#ifndef ATP_SERVER_H
#define ATP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atp/durable.h"
#include "cmd.h"
#include "http.h"

struct atp_server_config {
    const char *bind;             /* numeric IPv4/IPv6 address */
    uint16_t port;                /* 0: ephemeral; atp_server_port() tells */
    uint32_t workers;             /* 0: one per online CPU */
    uint32_t busy_poll_us;        /* poll the ring this long before sleeping; 0: off */
    int recv_mode;                /* enum atp_recv_mode (config.h) */
    uint32_t max_connections;     /* over it: ETOOMANYCONN, then close */
    uint64_t idle_timeout_ms;     /* 0: never; else ETIMEDOUT, then close */
    uint64_t output_buffer_limit; /* pending bytes before reads pause */
    uint64_t shutdown_timeout_ms; /* drain bound */
    uint64_t feed_wait_max_ms;    /* longest a feed request is held (cmd.h atp_wait); 0: never */
    /* HTTP/JSON facade (http.h): a second listener on the same workers. */
    bool http;                        /* false: no HTTP listener */
    const char *http_bind;            /* NULL: the same address as bind */
    uint16_t http_port;               /* 0: ephemeral; atp_server_http_port() tells */
    uint64_t http_request_timeout_ms; /* a request arrives whole within this (408); 0: no bound */
    const struct atp_http_ctx *http_ctx; /* template: limits, version, readiness (may be NULL);
                                            each worker gets a copy with its own cmd context, and
                                            /readyz also answers 503 while draining */
    /* Durability (atp/durable.h): a connection's responses wait until the log
     * positions its requests created are acknowledged. NULL: answer at once. */
    struct atp_durable *durable;
};

struct atp_server;

/*
 * Bind the listening sockets and probe the kernel (nothing runs yet).
 * `ctx` is copied per worker, and the server adds its own statistics source
 * to each copy. 0, or -errno (EADDRINUSE ...) / ATP_E*.
 */
int atp_server_new(const struct atp_server_config *cfg, const struct atp_cmd_ctx *ctx,
                   struct atp_server **ret_server);
void atp_server_free(struct atp_server *srv);

/* The bound port (the real one when 0 was asked) and "ADDR:PORT". */
uint16_t atp_server_port(const struct atp_server *srv);
const char *atp_server_addr(const struct atp_server *srv);
uint32_t atp_server_workers(const struct atp_server *srv);
/* The HTTP listener's bound port (0: none) and "ADDR:PORT" (NULL: none). */
uint16_t atp_server_http_port(const struct atp_server *srv);
const char *atp_server_http_addr(const struct atp_server *srv);
/* "multishot" (buffer ring) or "plain": what the receive path uses. */
const char *atp_server_recv_mode(const struct atp_server *srv);

/* Start the worker threads. 0 or -errno. */
int atp_server_start(struct atp_server *srv);

/*
 * Ask every worker to drain: stop accepting, answer what has arrived, flush,
 * close every connection, stop. Returns at once; callable from any thread
 * (not from a signal handler; main reads signals through a signalfd).
 */
void atp_server_drain(struct atp_server *srv);

/*
 * Before a drain: /readyz answers 503 "draining" from now on while
 * everything else is served as before, so load balancers take this
 * instance out before it stops accepting (main's drain-delay). Any thread.
 */
void atp_server_unready(struct atp_server *srv);

/*
 * Wait for the workers to stop. They stop only after a drain; each closes
 * what is left when shutdown_timeout_ms has passed. 0, or the first worker
 * error.
 */
int atp_server_wait(struct atp_server *srv);

/* Counters summed over the workers (each read is atomic, not the whole). */
struct atp_server_stats {
    uint64_t connections_open;
    uint64_t connections_accepted;
    uint64_t rejected_max_connections;
    uint64_t closed_idle;     /* idle timeout */
    uint64_t closed_protocol; /* broken framing */
    uint64_t closed_peer;     /* the client closed or reset */
    uint64_t closed_drain;    /* closed by a drain */
    uint64_t closed_slow;     /* HTTP request not whole within http-request-timeout */
    uint64_t requests;        /* frames handled */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t backpressure_pauses; /* times reading from a client paused */
    uint64_t recv_restarts;       /* multishot recvs the quiet check restarted */
    uint64_t feed_waits;          /* feed requests held for a change */
    uint64_t feed_waiting;        /* connections holding one now */
};
void atp_server_stats(const struct atp_server *srv, struct atp_server_stats *ret);

#endif /* ATP_SERVER_H */
