/*
 * fuzz_http.c - the HTTP/1.1 + JSON facade (src/http.h): raw request bytes
 * in, responses out, against a fresh fuzz store.
 *
 * The input is what one connection sends, served as the server would:
 * pipelined requests answered one call at a time until the handler asks to
 * close or wants more. It is served whole twice, once with the lookup's
 * fast path and once without (no_fast_path), each on a fresh store, and
 * the responses must be byte for byte the same; then once more arriving in
 * two halves. Every call sees a buffer of exactly the bytes not yet
 * consumed (ASan then sees any read past them). Each call must append
 * well-formed HTTP: what it appends parses as responses with libhttp-parser,
 * exactly one when it consumed a request (more than blank lines), at most a
 * "100 Continue" when it wants more. HEAD answers are not parsed (their
 * Content-Length describes a body that is not sent).
 */
#include <errno.h>
#include <string.h>

#include <http_parser.h>

#include "cmd.h"
#include "fuzz.h"
#include "http.h"

#define OUT_LIMIT (1u << 20)

struct resp_count {
    unsigned complete;
    int status;
};

static int on_complete(http_parser *p)
{
    struct resp_count *rc = p->data;
    rc->complete++;
    rc->status = (int)p->status_code;
    return 0;
}

static const http_parser_settings resp_settings = {.on_message_complete = on_complete};

/* The responses in out[from..len): how many, or -1 when they do not parse. */
static int count_responses(const struct atp_buf *out, size_t from, int *ret_status)
{
    struct resp_count rc = {0, 0};
    size_t off = from;
    while (off < out->len) {
        http_parser p;
        http_parser_init(&p, HTTP_RESPONSE);
        p.data = &rc;
        unsigned before = rc.complete;
        size_t n =
            http_parser_execute(&p, &resp_settings, (const char *)out->data + off, out->len - off);
        if (HTTP_PARSER_ERRNO(&p) != HPE_OK || rc.complete == before)
            return -1;
        off += n;
        if (n == 0)
            return -1;
    }
    *ret_status = rc.status;
    return (int)rc.complete;
}

static bool blank_only(const uint8_t *in, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (in[i] != '\r' && in[i] != '\n')
            return false;
    return true;
}

static bool is_head(const uint8_t *in, size_t len)
{
    size_t i = 0;
    while (i < len && (in[i] == '\r' || in[i] == '\n'))
        i++;
    return len - i >= 5 && memcmp(in + i, "HEAD ", 5) == 0;
}

/* One call on a copy of in[0..len): what atp_http_handle returned. */
static ssize_t call(struct atp_http_ctx *ctx, const uint8_t *in, size_t len, struct atp_buf *out)
{
    uint8_t *copy = malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, in, len);
    size_t before = out->len;
    ssize_t n = atp_http_handle(ctx, copy, len, out, FUZZ_NOW_US);
    FUZZ_CHECK(n <= (ssize_t)len);
    if (n != -ENOMEM && !is_head(copy, len)) {
        int status = 0;
        int count = count_responses(out, before, &status);
        if (n == 0)
            FUZZ_CHECK(count == 0 || (count == 1 && status == 100));
        else if (n > 0 && blank_only(copy, (size_t)n))
            FUZZ_CHECK(count == 0);
        else
            FUZZ_CHECK(count == 1);
    }
    free(copy);
    return n;
}

/* Serve data as it arrives in two pieces, cut at `split`, until the
 * handler closes or wants more than there is; the responses land in out. */
static void serve(struct atp_http_ctx *ctx, const uint8_t *data, size_t size, size_t split,
                  struct atp_buf *out)
{
    size_t off = 0, avail = split;
    for (;;) {
        ssize_t n = off < avail ? call(ctx, data + off, avail - off, out) : 0;
        if (n < 0)
            break; /* the connection closes */
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (avail == size)
            break;
        avail = size; /* the second piece arrives */
    }
}

static bool ready(void *arg, char *reason, size_t len)
{
    return true;
}

struct conn {
    struct atp_store *store;
    struct atp_cmd_ctx cmd;
    struct atp_http_ctx http;
    struct atp_buf out;
};

static void conn_init(struct conn *c, bool no_fast_path)
{
    static const volatile int refuse = 0;
    memset(c, 0, sizeof(*c));
    c->store = fuzz_store_new(NULL, NULL);
    c->cmd.store = c->store;
    c->cmd.build = "atpd fuzz";
    c->cmd.max_keys = 4;
    c->cmd.refuse_writes = &refuse;
    c->http.cmd = &c->cmd;
    c->http.max_header = 1024;
    c->http.max_body = 2048;
    c->http.ready = ready;
    c->http.version = "fuzz";
    c->http.no_fast_path = no_fast_path;
    c->out.limit = OUT_LIMIT;
}

static void conn_free(struct conn *c)
{
    atp_buf_free(&c->out);
    atp_http_ctx_free(&c->http);
    atp_store_free(c->store);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* The lookup's fast path and the general path, each on its own store:
     * the same bytes out (but /metrics, whose counters are the process's,
     * and /v1/changes, whose cursors name their store). */
    struct conn fast, slow;
    conn_init(&fast, false);
    conn_init(&slow, true);
    serve(&fast.http, data, size, size, &fast.out);
    serve(&slow.http, data, size, size, &slow.out);
    if (!memmem(data, size, "metrics", 7) && !memmem(data, size, "changes", 7)) {
        FUZZ_CHECK(fast.out.len == slow.out.len);
        FUZZ_CHECK(fast.out.len == 0 || memcmp(fast.out.data, slow.out.data, fast.out.len) == 0);
    }
    /* Again in two halves, on the store the first pass changed. */
    fast.out.len = 0;
    serve(&fast.http, data, size, size / 2, &fast.out);
    conn_free(&slow);
    conn_free(&fast);
    return 0;
}
