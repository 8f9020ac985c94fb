/*
 * http.h - the HTTP/1.1 + JSON facade of atpd, as a buffer-in/buffer-out
 * handler (the twin of cmd.h for the binary protocol).
 *
 * One call consumes one whole request from the start of `in` and appends
 * exactly one response to `out` (pipelining: the caller calls again with
 * what is left). It knows HTTP (through Debian's libhttp-parser), JSON
 * (json-c), the store API, the status table and the metrics registry; it
 * knows nothing about sockets, io_uring or threads. The same operations and
 * store calls as the binary protocol, under protocol/openapi.yaml:
 *
 *   GET  /v1/availability/{sku}?channel=&location=   strong ETag, 304
 *   POST /v1/availability:batchGet                   per-item status
 *   POST /v1/reservations                            Idempotency-Key
 *   GET  /v1/reservations/{id}, GET /v1/reservations?idempotencyKey=
 *   POST /v1/reservations/{id}:commit | :release | :extend
 *   POST /v1/items/{sku}/{location}:adjust | :set    (admin)
 *   GET  /v1/changes?channel=&since=&limit=&scope=&wait=  change feed
 *   GET  /metrics, /livez, /readyz
 *
 * Errors are RFC 9457 application/problem+json whose `code` is the status
 * table's NAME in lower case ("einsufficient"), `type` is
 * https://atpd.dev/problems/<slug>, and whose HTTP status comes from the
 * table.
 *
 * No per-connection state: a partial request is parsed again when more
 * bytes arrive. That costs little because the header block is located
 * first with a memchr scan (bounded by max_header) and a body is only
 * parsed once Content-Length bytes are there.
 */
#ifndef ATP_HTTP_H
#define ATP_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cmd.h"

#define ATP_HTTP_DEFAULT_PORT       7480
#define ATP_HTTP_DEFAULT_MAX_HEADER 8192u      /* request line + header fields */
#define ATP_HTTP_DEFAULT_MAX_BODY   (1u << 20) /* one request body */
#define ATP_HTTP_DEFAULT_BATCH      1000u      /* items per batchGet */
#define ATP_HTTP_DEFAULT_TTL_MS     900000u    /* reservation ttl when ttlMs is absent */

/*
 * Readiness for GET /readyz: return true when ready, else false with a
 * short reason in `reason` ("draining", "loading", "kafka lag 5000 > 1000").
 * Called on a worker thread for every /readyz; must be cheap and
 * thread-safe. NULL: always ready.
 */
typedef bool (*atp_http_ready_fn)(void *arg, char *reason, size_t len);

/*
 * A readiness callback for the Kafka ingest (arg: a struct atp_ingest *):
 * ready when its consumer runs, has an assignment, no partition is stale
 * and every lag is within its lag_threshold; else the reason ("kafka lag
 * 5000 > 1000"). For atp_http_ctx.ready when atpd consumes Kafka.
 */
bool atp_http_ready_ingest(void *ingest, char *reason, size_t len);

/*
 * One per worker thread (the scratch buffers below are not shared). Fill
 * the public fields, zero the rest; atp_http_ctx_free() releases what the
 * handler allocated.
 */
struct atp_http_ctx {
    /* public */
    struct atp_cmd_ctx *cmd; /* store, statistics sources, limits, refuse_writes */
    uint32_t max_header;     /* 0: ATP_HTTP_DEFAULT_MAX_HEADER */
    uint32_t max_body;       /* 0: ATP_HTTP_DEFAULT_MAX_BODY */
    uint32_t max_batch;      /* 0: cmd->max_keys, else ATP_HTTP_DEFAULT_BATCH */
    atp_http_ready_fn ready;
    void *ready_arg;
    const char *version; /* for atp_build_info; NULL: "unknown" */
    bool no_fast_path;   /* tests: answer lookups through the general path only */
    /* private to http.c */
    struct atp_buf body; /* a chunked body, gathered */
    struct atp_buf resp; /* the response body being composed */
    void *tok;           /* json_tokener, reused */
    int64_t date_sec;    /* second of the cached Date header */
    uint32_t date_len;
    char date[40];
    int64_t head200_sec; /* second of head200 */
    uint32_t head200_len;
    char head200[128]; /* a lookup's 200 up to the Content-Length value */
};

/*
 * Handle the request at the start of `in`.
 *   > 0  bytes consumed; one response appended to `out`;
 *   0    `in` holds less than one whole request: read more (a
 *        "100 Continue" may have been appended for a client that waits);
 *        or (ctx->cmd->wait set, and its `parked` then true) the request
 *        is a change-feed request held until a change or its wait's end
 *        (struct atp_wait): nothing appended, call again with the same bytes;
 *   < 0  close the connection once `out` is flushed: the response asked
 *        for it (Connection: close, HTTP/1.0) or the request cannot be
 *        answered and skipped (malformed: 400, body over max_body: 413,
 *        header block over max_header: 431); the response was appended.
 *        -ENOMEM when even that could not be appended.
 * `now_us` is the wall clock (Date header, reservation times).
 */
ssize_t atp_http_handle(struct atp_http_ctx *ctx, const uint8_t *in, size_t len,
                        struct atp_buf *out, uint64_t now_us);

/*
 * Append a problem response that answers no particular request, with
 * Connection: close (the caller then closes): ATP_ETOOMANYCONN (503) for a
 * refused connection, ATP_EUNAVAILABLE while draining... `detail` may be
 * NULL. 0 or -ENOMEM.
 */
int atp_http_error(struct atp_buf *out, int code, const char *detail);

/* The slow-client cut-off: 408 request-timeout, Connection: close. */
int atp_http_timeout_response(struct atp_buf *out);

/* Release the scratch buffers; the public fields are left alone. NULL ok. */
void atp_http_ctx_free(struct atp_http_ctx *ctx);

#endif /* ATP_HTTP_H */
