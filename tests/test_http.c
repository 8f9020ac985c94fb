/*
 * test_http.c - unit tests of the HTTP facade's handler (src/http.c):
 * requests go through atp_http_handle against a real store with three
 * channels; responses are parsed back with libhttp-parser and json-c.
 * Covers every endpoint and every error class, pipelining, every prefix of
 * a request reporting "need more", keep-alive and close, ETag/304, the
 * Idempotency-Key rules, chunked bodies, 100-continue, readiness, metrics,
 * and a request placed against an unreadable page (no over-read).
 * Knows http.h, cmd.h, the store API and the status table.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <http_parser.h>
#include <json-c/json.h>

#include "atp/ingest.h"
#include "atp/store.h"
#include "cmd.h"
#include "http.h"
#include "metrics.h"

#define T0 1750000000000000ULL /* now_us of every request */

struct fx {
    struct atp_store *store;
    struct atp_cmd_ctx cmd;
    struct atp_http_ctx http;
    struct atp_buf out;
    volatile int refuse;
    bool ready;
};

static const char *const b2b_locs[] = {"DC-2", "DC-1"};

static bool ready_cb(void *arg, char *reason, size_t len)
{
    struct fx *x = arg;
    if (!x->ready)
        snprintf(reason, len, "draining");
    return x->ready;
}

/* feed_records: the change feed's window (0: the store's default). */
static int setup_feed(void **state, uint32_t feed_records)
{
    struct fx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    static const struct atp_channel_config channels[] = {
        {.name = "web", .safety_units = 0, .cap = -1},
        {.name = "app", .safety_units = 5, .cap = 50},
        {.name = "b2b", .safety_units = 0, .cap = -1, .locations = b2b_locs, .nlocations = 2},
    };
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 4096;
    cfg.max_skus = 4096;
    cfg.max_reservations = 1024;
    cfg.max_overrides = 64;
    cfg.nshards = 4;
    cfg.channels = channels;
    cfg.nchannels = 3;
    cfg.feed_records = feed_records;
    assert_int_equal(atp_store_new(&cfg, &x->store), 0);
    x->cmd.store = x->store;
    x->cmd.build = "atpd test";
    x->cmd.refuse_writes = &x->refuse;
    x->cmd.max_keys = 4;
    x->http.cmd = &x->cmd;
    x->http.ready = ready_cb;
    x->http.ready_arg = x;
    x->http.version = "test";
    x->http.max_body = 4096;
    x->http.max_header = 1024;
    x->ready = true;
    assert_int_equal(atp_store_set(x->store, ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), 100, 0), 0);
    assert_int_equal(atp_store_set(x->store, ATP_SLICE("SKU-1"), ATP_SLICE("DC-2"), 20, 0), 0);
    assert_int_equal(atp_store_set(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 3, 0), 0);
    *state = x;
    return 0;
}

static int setup(void **state)
{
    return setup_feed(state, 0);
}

/* The smallest window the store takes: a cursor expires after 1024 records. */
static int setup_small_feed(void **state)
{
    return setup_feed(state, 1024);
}

static int teardown(void **state)
{
    struct fx *x = *state;
    atp_buf_free(&x->out);
    atp_http_ctx_free(&x->http);
    atp_store_free(x->store);
    free(x);
    return 0;
}

/* --- a parsed response ---------------------------------------------------------- */

struct resp {
    int status;
    char hname[32][64];
    char hval[32][256];
    int nh;
    char body[65536];
    size_t blen;
    bool done;
    bool keep_alive;
    struct json_object *json;
};

static int r_field(http_parser *p, const char *at, size_t len)
{
    struct resp *r = p->data;
    if (r->nh < 32)
        snprintf(r->hname[r->nh], sizeof(r->hname[0]), "%.*s", (int)len, at);
    return 0;
}

static int r_value(http_parser *p, const char *at, size_t len)
{
    struct resp *r = p->data;
    if (r->nh < 32)
        snprintf(r->hval[r->nh++], sizeof(r->hval[0]), "%.*s", (int)len, at);
    return 0;
}

static int r_body(http_parser *p, const char *at, size_t len)
{
    struct resp *r = p->data;
    assert_true(r->blen + len < sizeof(r->body));
    memcpy(r->body + r->blen, at, len);
    r->blen += len;
    return 0;
}

static int r_done(http_parser *p)
{
    struct resp *r = p->data;
    r->done = true;
    r->status = (int)p->status_code;
    r->keep_alive = http_should_keep_alive(p);
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings rsettings = {
    .on_header_field = r_field,
    .on_header_value = r_value,
    .on_body = r_body,
    .on_message_complete = r_done,
};

static const char *hdr(const struct resp *r, const char *name)
{
    for (int i = 0; i < r->nh; i++)
        if (strcasecmp(r->hname[i], name) == 0)
            return r->hval[i];
    return NULL;
}

/* Parse one response at *off of buf (HEAD: no body expected). */
static struct resp *parse_resp(const struct atp_buf *b, size_t *off, bool head)
{
    struct resp *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    p.data = r;
    /* A response to HEAD has headers only; the parser must be told. */
    http_parser_settings s = rsettings;
    size_t n;
    if (head) {
        /* Parse up to the end of the header block ourselves. */
        const char *start = (const char *)b->data + *off;
        const char *end = strstr(start, "\r\n\r\n");
        assert_non_null(end);
        size_t hl = (size_t)(end + 4 - start);
        n = http_parser_execute(&p, &s, start, hl);
        assert_int_equal(n, hl);
        r->status = (int)p.status_code;
        r->done = true;
    } else {
        n = http_parser_execute(&p, &s, (const char *)b->data + *off, b->len - *off);
        assert_true(HTTP_PARSER_ERRNO(&p) == HPE_PAUSED || HTTP_PARSER_ERRNO(&p) == HPE_OK);
    }
    assert_true(r->done);
    *off += n;
    r->body[r->blen] = '\0';
    if (r->blen && !head) {
        r->json = json_tokener_parse(r->body);
        if (strncmp(hdr(r, "Content-Type") ? hdr(r, "Content-Type") : "", "application/", 12) == 0)
            assert_non_null(r->json);
    }
    return r;
}

static void resp_free(struct resp *r)
{
    if (r) {
        json_object_put(r->json);
        free(r);
    }
}

static int64_t jint(const struct resp *r, const char *key)
{
    struct json_object *v;
    assert_non_null(r->json);
    if (!json_object_object_get_ex(r->json, key, &v))
        fail_msg("no member %s in %s", key, r->body);
    return json_object_get_int64(v);
}

static const char *jstr(const struct resp *r, const char *key)
{
    struct json_object *v;
    assert_non_null(r->json);
    if (!json_object_object_get_ex(r->json, key, &v) || !json_object_is_type(v, json_type_string))
        fail_msg("no string member %s in %s", key, r->body);
    return json_object_get_string(v);
}

/* Send one request; expect it consumed whole (rc > 0) or `close` (< 0). */
static struct resp *do_req_ex(struct fx *x, const char *text, size_t len, bool expect_close)
{
    x->out.len = 0;
    ssize_t rc = atp_http_handle(&x->http, (const uint8_t *)text, len, &x->out, T0);
    if (expect_close)
        assert_true(rc < 0);
    else
        assert_int_equal(rc, (ssize_t)len);
    size_t off = 0;
    bool head = strncmp(text, "HEAD ", 5) == 0;
    struct resp *r = parse_resp(&x->out, &off, head);
    assert_int_equal(off, x->out.len); /* exactly one response */
    return r;
}

static struct resp *do_req(struct fx *x, const char *text)
{
    return do_req_ex(x, text, strlen(text), false);
}

static struct resp *do_post(struct fx *x, const char *path, const char *extra, const char *body)
{
    static char buf[16384];
    snprintf(buf, sizeof(buf),
             "POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n%s"
             "Content-Length: %zu\r\n\r\n%s",
             path, extra ? extra : "", strlen(body), body);
    return do_req(x, buf);
}

/* A problem+json answer with this HTTP status and status table code. */
static void assert_problem(const struct resp *r, int code)
{
    assert_int_equal(r->status, atp_error_http(code));
    assert_string_equal(hdr(r, "Content-Type"), "application/problem+json");
    char name[40], type[96];
    const char *n = atp_error_name(code);
    size_t i = 0;
    for (; n[i]; i++)
        name[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] - 'A' + 'a' : n[i]);
    name[i] = '\0';
    snprintf(type, sizeof(type), "https://atpd.dev/problems/%s", atp_error_slug(code));
    if (strcmp(jstr(r, "code"), name) != 0)
        fail_msg("expected code %s, got %s: %s", name, jstr(r, "code"), r->body);
    assert_string_equal(jstr(r, "type"), type);
    assert_string_equal(jstr(r, "title"), atp_strerror(code));
    assert_int_equal(jint(r, "status"), atp_error_http(code));
    assert_true(strlen(jstr(r, "detail")) > 0);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* --- availability ------------------------------------------------------------------ */

static void test_availability(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-1"));
    assert_int_equal(r->status, 200);
    assert_string_equal(hdr(r, "Content-Type"), "application/json");
    assert_string_equal(jstr(r, "sku"), "SKU-1");
    assert_string_equal(jstr(r, "location"), "DC-1");
    assert_string_equal(jstr(r, "channel"), "web");
    assert_int_equal(jint(r, "available"), 100);
    assert_int_equal(jint(r, "onHand"), 100);
    assert_int_equal(jint(r, "reserved"), 0);
    assert_int_equal(jint(r, "allocated"), 0);
    assert_int_equal(jint(r, "safetyStock"), 0);
    assert_non_null(hdr(r, "ETag"));
    assert_non_null(hdr(r, "Date"));
    assert_true(r->keep_alive);
    resp_free(r);

    /* Network ATP: summed over locations; app has safety 5 per item. */
    r = do_req(x, GET("/v1/availability/SKU-1?channel=app"));
    assert_int_equal(r->status, 200);
    assert_int_equal(jint(r, "onHand"), 120);
    assert_int_equal(jint(r, "available"), 65); /* per item: min(95, cap 50) + 15 */
    struct json_object *loc;
    assert_true(json_object_object_get_ex(r->json, "location", &loc));
    assert_null(loc);
    resp_free(r);

    /* Percent-encoded sku in the path. */
    r = do_req(x, GET("/v1/availability/SKU%2D1?channel=web&location=DC%2d1"));
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "sku"), "SKU-1");
    resp_free(r);

    r = do_req(x, GET("/v1/availability/NOPE?channel=web"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-9"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/bad%20sku?channel=web"));
    assert_problem(r, ATP_EINVAL_SKU);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=b%21d"));
    assert_problem(r, ATP_EINVAL_LOC);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=tv"));
    assert_problem(r, ATP_ENOCHANNEL);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1"));
    assert_problem(r, ATP_ENOCHANNEL);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=%zz"));
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
}

/* The status of a lookup of SKU-2 at DC-1 with these header lines (`fmt`,
 * with the entity tag for a %s). */
static int inm_status(struct fx *x, const char *fmt, const char *etag)
{
    char lines[256], req[512];
    snprintf(lines, sizeof(lines), fmt, etag);
    snprintf(req, sizeof(req),
             "GET /v1/availability/SKU-2?channel=web&location=DC-1 HTTP/1.1\r\nHost: t\r\n%s\r\n",
             lines);
    struct resp *r = do_req(x, req);
    int status = r->status;
    resp_free(r);
    return status;
}

static void test_etag(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_req(x, GET("/v1/availability/SKU-2?channel=web&location=DC-1"));
    assert_int_equal(r->status, 200);
    char etag[64];
    snprintf(etag, sizeof(etag), "%s", hdr(r, "ETag"));
    assert_true(etag[0] == '"' && etag[strlen(etag) - 1] == '"'); /* strong */
    resp_free(r);

    char req[512];
    snprintf(req, sizeof(req),
             "GET /v1/availability/SKU-2?channel=web&location=DC-1 HTTP/1.1\r\nHost: t\r\n"
             "If-None-Match: \"x\", %s\r\n\r\n",
             etag);
    r = do_req(x, req);
    assert_int_equal(r->status, 304);
    assert_int_equal(r->blen, 0);
    assert_string_equal(hdr(r, "ETag"), etag);
    resp_free(r);
    /* Weak comparison for If-None-Match; '*' matches anything. */
    assert_int_equal(inm_status(x, "If-None-Match: W/%s\r\n", etag), 304);
    assert_int_equal(inm_status(x, "If-None-Match: *\r\n", etag), 304);
    /* Several If-None-Match lines are one list (RFC 9110 5.3): the tag may
     * be on any line; no line matching is a 200. */
    assert_int_equal(inm_status(x, "If-None-Match: %s\r\nIf-None-Match: \"x\"\r\n", etag), 304);
    assert_int_equal(inm_status(x, "If-None-Match: \"x\"\r\nIf-None-Match: \"y\", %s\r\n", etag),
                     304);
    assert_int_equal(inm_status(x, "If-None-Match: \"x\"\r\nIf-None-Match: \"y\"\r\n", etag), 200);

    /* A change gives another tag, and the old one no longer matches. */
    int64_t oh;
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 1, &oh), 0);
    snprintf(req, sizeof(req),
             "GET /v1/availability/SKU-2?channel=web&location=DC-1 HTTP/1.1\r\nHost: t\r\n"
             "If-None-Match: %s\r\n\r\n",
             etag);
    r = do_req(x, req);
    assert_int_equal(r->status, 200);
    assert_int_equal(jint(r, "onHand"), 4);
    assert_string_not_equal(hdr(r, "ETag"), etag);
    resp_free(r);
}

static void test_head(void **state)
{
    struct fx *x = *state;
    struct resp *g = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-1"));
    struct resp *h = do_req(x, "HEAD /v1/availability/SKU-1?channel=web&location=DC-1 "
                               "HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(h->status, 200);
    assert_int_equal(h->blen, 0);
    assert_string_equal(hdr(h, "Content-Length"), hdr(g, "Content-Length"));
    assert_string_equal(hdr(h, "ETag"), hdr(g, "ETag"));
    resp_free(g);
    resp_free(h);
}

static void test_batch(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_post(x, "/v1/availability:batchGet", NULL,
                             "{\"channel\":\"web\",\"items\":[{\"sku\":\"SKU-1\",\"location\":"
                             "\"DC-2\"},{\"sku\":\"NOPE\"},{\"sku\":\"SKU-1\",\"channel\":\"app\"},"
                             "{\"sku\":\"b d\"}]}");
    assert_int_equal(r->status, 200);
    struct json_object *res;
    assert_true(json_object_object_get_ex(r->json, "results", &res));
    assert_int_equal(json_object_array_length(res), 4);
    struct json_object *e, *v;
    e = json_object_array_get_idx(res, 0);
    assert_true(json_object_object_get_ex(e, "status", &v));
    assert_int_equal(json_object_get_int(v), 200);
    assert_true(json_object_object_get_ex(e, "available", &v));
    assert_int_equal(json_object_get_int(v), 20);
    e = json_object_array_get_idx(res, 1);
    assert_true(json_object_object_get_ex(e, "status", &v));
    assert_int_equal(json_object_get_int(v), 404);
    assert_true(json_object_object_get_ex(e, "code", &v));
    assert_string_equal(json_object_get_string(v), "enotfound");
    e = json_object_array_get_idx(res, 2);
    assert_true(json_object_object_get_ex(e, "channel", &v));
    assert_string_equal(json_object_get_string(v), "app");
    assert_true(json_object_object_get_ex(e, "available", &v));
    assert_int_equal(json_object_get_int(v), 65);
    e = json_object_array_get_idx(res, 3);
    assert_true(json_object_object_get_ex(e, "status", &v));
    assert_int_equal(json_object_get_int(v), 400);
    resp_free(r);

    /* Whole-request errors. */
    r = do_post(x, "/v1/availability:batchGet", NULL,
                "{\"channel\":\"web\",\"items\":[{\"sku\":\"A\"},{\"sku\":\"A\"},{\"sku\":\"A\"},"
                "{\"sku\":\"A\"},{\"sku\":\"A\"}]}");
    assert_problem(r, ATP_ETOOMANY); /* max_keys is 4 here */
    resp_free(r);
    r = do_post(x, "/v1/availability:batchGet", NULL, "{\"channel\":\"web\",\"items\":[]}");
    assert_problem(r, ATP_EINVAL);
    resp_free(r);
    r = do_post(x, "/v1/availability:batchGet", NULL, "{\"channel\":\"web\",\"items\":[");
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
    r = do_post(x, "/v1/availability:batchGet", NULL, "{\"items\":{}} x");
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
    r = do_post(x, "/v1/availability:batchGet", NULL, "[1]");
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
    r = do_req(x, "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\n"
                  "Content-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}");
    assert_problem(r, ATP_EMEDIATYPE);
    resp_free(r);
    r = do_req(x,
               "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}");
    assert_problem(r, ATP_EMEDIATYPE);
    resp_free(r);
    /* application/<x>+json with parameters is JSON too. */
    r = do_req(x, "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\n"
                  "Content-Type: application/vnd.atp+json; charset=utf-8\r\nContent-Length: "
                  "47\r\n\r\n{\"channel\":\"web\",\"items\":[{\"sku\":\"SKU-1\"}]}    ");
    assert_int_equal(r->status, 200);
    resp_free(r);
    r = do_req(x, GET("/v1/availability:batchGet"));
    assert_problem(r, ATP_EMETHOD);
    assert_string_equal(hdr(r, "Allow"), "POST");
    resp_free(r);
}

/* --- change feed -------------------------------------------------------------------- */

/* GET /v1/changes with this query; a 200's cursor goes to ret_cursor. */
static struct resp *changes_req(struct fx *x, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct resp *changes_req(struct fx *x, const char *fmt, ...)
{
    char q[256], req[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    snprintf(req, sizeof(req), "GET /v1/changes?%s HTTP/1.1\r\nHost: t\r\n\r\n", q);
    return do_req(x, req);
}

/* The cursor of a 200: a decimal string, never 0. */
static uint64_t feed_cursor(const struct resp *r)
{
    const char *c = jstr(r, "cursor");
    assert_true(c[0] >= '1' && c[0] <= '9');
    assert_int_equal(strspn(c, "0123456789"), strlen(c));
    return strtoull(c, NULL, 10);
}

static bool feed_more(const struct resp *r)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(r->json, "more", &v));
    assert_true(json_object_is_type(v, json_type_boolean));
    return json_object_get_boolean(v);
}

static struct json_object *feed_changes(const struct resp *r)
{
    struct json_object *v;
    assert_true(json_object_object_get_ex(r->json, "changes", &v));
    assert_true(json_object_is_type(v, json_type_array));
    return v;
}

/* Change i is sku (at loc; NULL: scope=network, no location member) with
 * this atp, and has no other members. */
static void assert_change(const struct resp *r, size_t i, const char *sku, const char *loc,
                          int64_t atp)
{
    struct json_object *arr = feed_changes(r), *e, *v;
    assert_true(i < json_object_array_length(arr));
    e = json_object_array_get_idx(arr, i);
    assert_true(json_object_object_get_ex(e, "sku", &v));
    assert_string_equal(json_object_get_string(v), sku);
    if (loc) {
        assert_true(json_object_object_get_ex(e, "location", &v));
        assert_string_equal(json_object_get_string(v), loc);
    } else {
        assert_false(json_object_object_get_ex(e, "location", NULL));
    }
    assert_true(json_object_object_get_ex(e, "available", &v));
    assert_true(json_object_is_type(v, json_type_int));
    if (json_object_get_int64(v) != atp)
        fail_msg("change %zu of %s: atp %lld, expected %lld", i, r->body,
                 (long long)json_object_get_int64(v), (long long)atp);
    assert_int_equal(json_object_object_length(e), loc ? 3 : 2);
}

static void test_changes(void **state)
{
    struct fx *x = *state;
    uint64_t calls = atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES);
    /* Without since: the cursor of now, no changes, not to be cached. */
    struct resp *r = changes_req(x, "channel=web");
    assert_int_equal(r->status, 200);
    assert_string_equal(hdr(r, "Content-Type"), "application/json");
    assert_string_equal(hdr(r, "Cache-Control"), "no-store");
    assert_null(hdr(r, "ETag"));
    assert_string_equal(jstr(r, "channel"), "web");
    assert_false(feed_more(r));
    assert_int_equal(json_object_array_length(feed_changes(r)), 0);
    uint64_t c0 = feed_cursor(r);
    resp_free(r);

    /* An adjust through the admin route shows up with the item's ATP now. */
    r = do_post(x, "/v1/items/SKU-2/DC-1:adjust", NULL, "{\"delta\":4}");
    assert_int_equal(jint(r, "onHand"), 7);
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)c0);
    assert_int_equal(r->status, 200);
    assert_string_equal(hdr(r, "Cache-Control"), "no-store");
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_change(r, 0, "SKU-2", "DC-1", 7);
    assert_false(feed_more(r));
    uint64_t c1 = feed_cursor(r);
    assert_true(c1 != c0);
    resp_free(r);
    /* Nothing since: no changes, and the same cursor again. */
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)c1);
    assert_int_equal(json_object_array_length(feed_changes(r)), 0);
    assert_false(feed_more(r));
    assert_int_equal(feed_cursor(r), c1);
    resp_free(r);

    /* A hold changes ATP: per channel, with its safety stock and cap. */
    r = do_post(x, "/v1/reservations", "Idempotency-Key: feed-1\r\n",
                "{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"location\":\"DC-1\","
                "\"qty\":3}]}");
    assert_int_equal(r->status, 201);
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)c1);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_change(r, 0, "SKU-1", "DC-1", 97);
    uint64_t c2 = feed_cursor(r);
    resp_free(r);
    r = changes_req(x, "channel=app&since=%llu", (unsigned long long)c1);
    assert_string_equal(jstr(r, "channel"), "app");
    assert_change(r, 0, "SKU-1", "DC-1", 50); /* min(100 - 3 - 5, cap 50) */
    resp_free(r);
    /* scope=network: one entry per sku, its network ATP, no location. */
    r = changes_req(x, "channel=web&since=%llu&scope=network", (unsigned long long)c1);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_change(r, 0, "SKU-1", NULL, 117); /* 97 at DC-1 + 20 at DC-2 */
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu&scope=item", (unsigned long long)c1);
    assert_change(r, 0, "SKU-1", "DC-1", 97);
    resp_free(r);

    /* Two changed items, limit=1: one, more=true; from its cursor, the other. */
    r = do_post(x, "/v1/items/SKU-1/DC-2:adjust", NULL, "{\"delta\":5}");
    resp_free(r);
    r = do_post(x, "/v1/items/SKU-3/DC-3:adjust", NULL, "{\"delta\":9}");
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu&limit=1", (unsigned long long)c2);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_true(feed_more(r));
    bool first_dc2 = strstr(r->body, "\"DC-2\"") != NULL;
    if (first_dc2)
        assert_change(r, 0, "SKU-1", "DC-2", 25);
    else
        assert_change(r, 0, "SKU-3", "DC-3", 9);
    uint64_t c3 = feed_cursor(r);
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu&limit=1", (unsigned long long)c3);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_false(feed_more(r));
    if (first_dc2)
        assert_change(r, 0, "SKU-3", "DC-3", 9);
    else
        assert_change(r, 0, "SKU-1", "DC-2", 25);
    resp_free(r);
    /* A channel hears only of the locations it sells from (b2b: DC-1, DC-2). */
    r = changes_req(x, "channel=b2b&since=%llu", (unsigned long long)c2);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_change(r, 0, "SKU-1", "DC-2", 25);
    resp_free(r);
    /* The most a call may ask for here (max_keys); unknown parameters are
     * ignored. */
    r = changes_req(x, "channel=web&since=%llu&limit=4&colour=red", (unsigned long long)c2);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_object_array_length(feed_changes(r)), 2);
    resp_free(r);
    /* Percent-encoded values, and the last occurrence wins. */
    r = changes_req(x, "channel=tv&channel=%%77eb&since=%llu&scope=item&scope=%%6eetwork",
                    (unsigned long long)c2);
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "channel"), "web");
    assert_int_equal(json_object_array_length(feed_changes(r)), 2);
    bool sku1_first = strstr(r->body, "SKU-1") < strstr(r->body, "SKU-3");
    assert_change(r, sku1_first ? 0 : 1, "SKU-1", NULL, 122); /* 97 + 25 */
    assert_change(r, sku1_first ? 1 : 0, "SKU-3", NULL, 9);
    resp_free(r);

    /* Every answer above was counted as a changes call. */
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES), calls + 12);
}

static void test_changes_errors(void **state)
{
    struct fx *x = *state;
    struct resp *r = changes_req(x, "channel=web");
    uint64_t now = feed_cursor(r);
    resp_free(r);

    /* Cursors this store never gave: 410 cursor-expired, "Gone". */
    static const char *const bogus[] = {"0", "1", "12345", "18446744073709551615"};
    for (size_t i = 0; i < sizeof(bogus) / sizeof(bogus[0]); i++) {
        r = changes_req(x, "channel=web&since=%s", bogus[i]);
        assert_problem(r, ATP_ECURSOR);
        assert_int_equal(r->status, 410);
        assert_non_null(strstr(jstr(r, "detail"), "read everything again"));
        resp_free(r);
    }
    assert_int_equal(memcmp(x->out.data, "HTTP/1.1 410 Gone\r\n", 19), 0);
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)(now + 5)); /* ahead */
    assert_problem(r, ATP_ECURSOR);
    resp_free(r);

    /* The channel. */
    r = changes_req(x, "since=%llu", (unsigned long long)now);
    assert_problem(r, ATP_ENOCHANNEL);
    resp_free(r);
    r = changes_req(x, "channel=&since=%llu", (unsigned long long)now);
    assert_problem(r, ATP_ENOCHANNEL);
    resp_free(r);
    r = changes_req(x, "channel=tv");
    assert_problem(r, ATP_ENOCHANNEL);
    resp_free(r);
    r = do_req(x, GET("/v1/changes"));
    assert_problem(r, ATP_ENOCHANNEL);
    resp_free(r);
    r = changes_req(x, "channel=%%zz");
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);

    /* Invalid: a limit of 0 or not decimal, a scope other than item and
     * network, a since that is not a decimal u64; limits and scopes are
     * checked even without since. A limit over 1000 is too many, as in the
     * binary protocol. */
    static const char *const einval[] = {
        "limit=0",
        "limit=",
        "limit=-1",
        "limit=1x",
        "limit=+5",
        "limit=%201",
        "scope=",
        "scope=all",
        "scope=Network",
        "since=",
        "since=abc",
        "since=-1",
        "since=1.5",
        "since=18446744073709551616",
        "since=99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof(einval) / sizeof(einval[0]); i++) {
        r = changes_req(x, "channel=web&%s", einval[i]);
        if (r->status != 400 || strcmp(jstr(r, "code"), "einval") != 0)
            fail_msg("%s: %d %s", einval[i], r->status, r->body);
        assert_problem(r, ATP_EINVAL);
        resp_free(r);
    }
    static const char *const etoomany[] = {"limit=1001", "limit=4294967297",
                                           "limit=99999999999999999999999"};
    for (size_t i = 0; i < sizeof(etoomany) / sizeof(etoomany[0]); i++) {
        r = changes_req(x, "channel=web&since=%llu&%s", (unsigned long long)now, etoomany[i]);
        assert_problem(r, ATP_ETOOMANY);
        resp_free(r);
    }
    r = changes_req(x, "channel=web&since=%llu&limit=004", (unsigned long long)now);
    assert_int_equal(r->status, 200); /* leading zeros are still decimal */
    resp_free(r);

    /* As in the binary protocol, max_keys (4 here) bounds limit when it is
     * below 1000, and is the default: five changed items come as 4, then 1. */
    r = changes_req(x, "channel=web&since=%llu&limit=5", (unsigned long long)now);
    assert_problem(r, ATP_ETOOMANY);
    assert_non_null(strstr(jstr(r, "detail"), "over 4"));
    resp_free(r);
    for (int i = 0; i < 5; i++) {
        char sku[16];
        int64_t oh;
        snprintf(sku, sizeof(sku), "BND-%d", i);
        assert_int_equal(
            atp_store_adjust(x->store, atp_slice_cstr(sku), ATP_SLICE("DC-1"), 1 + i, &oh), 0);
    }
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)now);
    assert_int_equal(json_object_array_length(feed_changes(r)), 4);
    assert_true(feed_more(r));
    uint64_t next = feed_cursor(r);
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)next);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_false(feed_more(r));
    resp_free(r);
    x->http.max_batch = 2000; /* above the store's most: 1000 is the bound */
    r = changes_req(x, "channel=web&since=%llu&limit=1000", (unsigned long long)now);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_object_array_length(feed_changes(r)), 5);
    assert_false(feed_more(r));
    resp_free(r);
    r = changes_req(x, "channel=web&since=%llu&limit=1001", (unsigned long long)now);
    assert_problem(r, ATP_ETOOMANY);
    assert_non_null(strstr(jstr(r, "detail"), "over 1000"));
    resp_free(r);

    /* Methods: GET and HEAD; OPTIONS lists them; others 405. */
    struct resp *g = changes_req(x, "channel=web");
    r = do_req(x, "HEAD /v1/changes?channel=web HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(r->status, 200);
    assert_int_equal(r->blen, 0);
    assert_string_equal(hdr(r, "Content-Length"), hdr(g, "Content-Length"));
    assert_string_equal(hdr(r, "Cache-Control"), "no-store");
    resp_free(r);
    resp_free(g);
    r = do_req(x, "DELETE /v1/changes?channel=web HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_problem(r, ATP_EMETHOD);
    assert_string_equal(hdr(r, "Allow"), "GET, HEAD");
    resp_free(r);
    r = do_req(x, "POST /v1/changes HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_problem(r, ATP_EMETHOD);
    resp_free(r);
    uint64_t calls = atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES);
    r = do_req(x, "OPTIONS /v1/changes HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(r->status, 204);
    assert_string_equal(hdr(r, "Allow"), "GET, HEAD, OPTIONS");
    resp_free(r);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES), calls);
    /* Only the exact path. */
    r = do_req(x, GET("/v1/changes/x?channel=web"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
}

/* A cursor more than the feed's window behind: 410, and a new one works. */
static void test_changes_expired(void **state)
{
    struct fx *x = *state;
    struct resp *r = changes_req(x, "channel=web");
    uint64_t old = feed_cursor(r);
    resp_free(r);
    /* 1100 records > the window of 1024: one item changed between scans. */
    for (int i = 0; i < 1100; i++) {
        int64_t oh;
        assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 1, &oh),
                         0);
        (void)atp_store_changes_cursor(x->store);
    }
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)old);
    assert_problem(r, ATP_ECURSOR);
    resp_free(r);
    r = changes_req(x, "channel=web");
    uint64_t fresh = feed_cursor(r);
    resp_free(r);
    int64_t oh;
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 1, &oh), 0);
    r = changes_req(x, "channel=web&since=%llu", (unsigned long long)fresh);
    assert_int_equal(r->status, 200);
    assert_change(r, 0, "SKU-2", "DC-1", 3 + 1101);
    resp_free(r);
}

/* --- change feed: waiting for a change --------------------------------------------- */

/* A GET /v1/changes request's text with this query (buf: 512 bytes). */
static const char *changes_text(char *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static const char *changes_text(char *buf, const char *fmt, ...)
{
    char q[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(q, sizeof(q), fmt, ap);
    va_end(ap);
    snprintf(buf, 512, "GET /v1/changes?%s HTTP/1.1\r\nHost: t\r\n\r\n", q);
    return buf;
}

/* One call on the whole of `text` at now_us, x->out emptied first. */
static ssize_t handle_at(struct fx *x, const char *text, uint64_t now_us)
{
    x->out.len = 0;
    return atp_http_handle(&x->http, (const uint8_t *)text, strlen(text), &x->out, now_us);
}

/* `text` at now_us is held: 0, nothing appended, parked, deadline until_us,
 * and no request counted. */
static void assert_held(struct fx *x, struct atp_wait *w, const char *text, uint64_t now_us,
                        uint64_t until_us)
{
    uint64_t calls = atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES);
    ssize_t rc = handle_at(x, text, now_us);
    if (rc != 0 || x->out.len != 0)
        fail_msg("not held: rc %zd, %.*s", rc, (int)x->out.len, (const char *)x->out.data);
    assert_true(w->parked);
    assert_int_equal(w->until_us, until_us);
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES), calls);
}

/* `text` at now_us is answered at once: consumed whole, one response, not
 * parked, nothing of a wait left, one request counted. */
static struct resp *assert_answered(struct fx *x, struct atp_wait *w, const char *text,
                                    uint64_t now_us)
{
    uint64_t calls = atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES);
    ssize_t rc = handle_at(x, text, now_us);
    if (rc != (ssize_t)strlen(text))
        fail_msg("not answered: rc %zd", rc);
    size_t off = 0;
    struct resp *r = parse_resp(&x->out, &off, strncmp(text, "HEAD ", 5) == 0);
    assert_int_equal(off, x->out.len);
    if (w) {
        assert_false(w->parked);
        assert_int_equal(w->until_us, 0);
        assert_int_equal(w->from, 0);
    }
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_CHANGES), calls + 1);
    return r;
}

/* An answer of nothing new: 200, no entries, the cursor asked from. */
static void assert_nothing_new(const struct resp *r, uint64_t since)
{
    if (r->status != 200)
        fail_msg("status %d: %s", r->status, r->body);
    assert_int_equal(json_object_array_length(feed_changes(r)), 0);
    assert_false(feed_more(r));
    assert_int_equal(feed_cursor(r), since);
}

static void test_changes_wait(void **state)
{
    struct fx *x = *state;
    struct atp_wait wt = {.max_ms = 1000};
    x->cmd.wait = &wt;
    char req[512];
    /* The starting cursor is answered at once, wait or not. */
    struct resp *r = assert_answered(x, &wt, changes_text(req, "channel=web&wait=500"), T0);
    assert_nothing_new(r, feed_cursor(r));
    uint64_t c0 = feed_cursor(r);
    resp_free(r);

    /* Nothing new: held, with the deadline now + wait. */
    changes_text(req, "channel=web&since=%llu&wait=500", (unsigned long long)c0);
    assert_held(x, &wt, req, T0, T0 + 500000);
    /* The same bytes again before the deadline: held again, same deadline. */
    assert_held(x, &wt, req, T0 + 200000, T0 + 500000);
    assert_held(x, &wt, req, T0 + 499999, T0 + 500000);
    /* Another route clears `parked` and leaves the deadline alone. */
    r = do_req(x, GET("/livez"));
    assert_int_equal(r->status, 200);
    resp_free(r);
    assert_false(wt.parked);
    assert_int_equal(wt.until_us, T0 + 500000);
    /* A change the channel sees: the same bytes are answered with it. */
    int64_t oh;
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 1, &oh), 0);
    r = assert_answered(x, &wt, req, T0 + 300000);
    assert_int_equal(r->status, 200);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_change(r, 0, "SKU-2", "DC-1", 4);
    uint64_t c1 = feed_cursor(r);
    assert_true(c1 != c0);
    resp_free(r);

    /* Nothing new until the deadline: at it, answered with nothing and the
     * cursor asked from. */
    const uint64_t t1 = T0 + 1000000;
    changes_text(req, "channel=web&since=%llu&wait=500", (unsigned long long)c1);
    assert_held(x, &wt, req, t1, t1 + 500000);
    assert_held(x, &wt, req, t1 + 499999, t1 + 500000);
    r = assert_answered(x, &wt, req, t1 + 500000);
    assert_nothing_new(r, c1);
    assert_string_equal(hdr(r, "Cache-Control"), "no-store");
    resp_free(r);
    /* Well past it too (a late look), and the next request starts afresh. */
    assert_held(x, &wt, req, t1 + 600000, t1 + 1100000);
    r = assert_answered(x, &wt, req, t1 + 9000000);
    assert_nothing_new(r, c1);
    resp_free(r);

    /* Changes of items the channel does not sell from (b2b: DC-1 and DC-2)
     * neither answer a held request nor are examined again: it goes on
     * from where its last look ended, and its answer's cursor is past them. */
    r = assert_answered(x, &wt, changes_text(req, "channel=b2b"), t1);
    uint64_t b0 = feed_cursor(r);
    resp_free(r);
    const uint64_t tb = T0 + 10000000;
    changes_text(req, "channel=b2b&since=%llu&wait=800", (unsigned long long)b0);
    assert_held(x, &wt, req, tb, tb + 800000);
    assert_int_equal(wt.from, b0);
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-3"), 5, &oh), 0);
    assert_held(x, &wt, req, tb + 100000, tb + 800000);
    uint64_t b1 = wt.from;
    assert_true(b1 != b0);
    r = assert_answered(x, &wt, req, tb + 800000);
    assert_nothing_new(r, b1);
    resp_free(r);
    /* And a change it sells from answers it at once, from there on. */
    assert_held(x, &wt, req, tb + 900000, tb + 1700000);
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-3"), ATP_SLICE("DC-9"), 5, &oh), 0);
    assert_held(x, &wt, req, tb + 950000, tb + 1700000);
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-2"), 6, &oh), 0);
    r = assert_answered(x, &wt, req, tb + 1000000);
    assert_int_equal(json_object_array_length(feed_changes(r)), 1);
    assert_change(r, 0, "SKU-2", "DC-2", 6);
    assert_true(feed_cursor(r) != b1);
    resp_free(r);
    r = assert_answered(x, &wt, changes_text(req, "channel=web"), tb);
    c1 = feed_cursor(r);
    resp_free(r);

    /* A wait over max_ms is cut to it. */
    const uint64_t t2 = T0 + 20000000;
    changes_text(req, "channel=web&since=%llu&wait=5000", (unsigned long long)c1);
    assert_held(x, &wt, req, t2, t2 + 1000000);
    assert_held(x, &wt, req, t2 + 999999, t2 + 1000000);
    r = assert_answered(x, &wt, req, t2 + 1000000);
    assert_nothing_new(r, c1);
    resp_free(r);
    /* The largest wait accepted, cut likewise. */
    changes_text(req, "channel=web&since=%llu&wait=4294967295", (unsigned long long)c1);
    assert_held(x, &wt, req, t2, t2 + 1000000);
    r = assert_answered(x, &wt, req, t2 + 1000000);
    assert_nothing_new(r, c1);
    resp_free(r);

    /* HEAD is held like GET, and answered with headers only. */
    snprintf(req, sizeof(req),
             "HEAD /v1/changes?channel=web&since=%llu&wait=100 HTTP/1.1\r\n"
             "Host: t\r\n\r\n",
             (unsigned long long)c1);
    assert_held(x, &wt, req, t2, t2 + 100000);
    r = assert_answered(x, &wt, req, t2 + 100000);
    assert_int_equal(r->status, 200);
    assert_int_equal(r->blen, 0);
    assert_string_equal(hdr(r, "Cache-Control"), "no-store");
    resp_free(r);

    /* Held behind blank lines and with a request pipelined behind it:
     * nothing consumed (the blank lines stay too). Connection: close is
     * kept for the answer. */
    char pipe[1024];
    snprintf(pipe, sizeof(pipe),
             "\r\nGET /v1/changes?channel=web&since=%llu&wait=100 HTTP/1.1\r\nHost: t\r\n"
             "Connection: close\r\n\r\n" GET("/livez"),
             (unsigned long long)c1);
    assert_held(x, &wt, pipe, t2, t2 + 100000);
    x->out.len = 0;
    ssize_t rc =
        atp_http_handle(&x->http, (const uint8_t *)pipe, strlen(pipe), &x->out, t2 + 100000);
    assert_int_equal(rc, -ECONNRESET);
    size_t off = 0;
    r = parse_resp(&x->out, &off, false);
    assert_nothing_new(r, c1);
    assert_string_equal(hdr(r, "Connection"), "close");
    assert_int_equal(off, x->out.len);
    resp_free(r);
    assert_false(wt.parked);
    assert_int_equal(wt.until_us, 0);

    /* wait=0, or no wait: answered at once. */
    r = assert_answered(
        x, &wt, changes_text(req, "channel=web&since=%llu&wait=0", (unsigned long long)c1), t2);
    assert_nothing_new(r, c1);
    resp_free(r);
    r = assert_answered(x, &wt, changes_text(req, "channel=web&since=%llu", (unsigned long long)c1),
                        t2);
    assert_nothing_new(r, c1);
    resp_free(r);

    /* max_ms 0 (the server's feed-wait-max 0, or a drain): answered at once,
     * and a deadline left from an earlier look does not hold it. */
    wt.max_ms = 0;
    changes_text(req, "channel=web&since=%llu&wait=500", (unsigned long long)c1);
    r = assert_answered(x, &wt, req, t2);
    assert_nothing_new(r, c1);
    resp_free(r);
    wt.until_us = t2 + 400000;
    r = assert_answered(x, &wt, req, t2);
    assert_nothing_new(r, c1);
    resp_free(r);
    wt.max_ms = 1000;

    /* Without a wait context (a caller that cannot hold): answered at once. */
    x->cmd.wait = NULL;
    r = assert_answered(x, NULL, req, t2);
    assert_nothing_new(r, c1);
    resp_free(r);
    x->cmd.wait = &wt;
    assert_held(x, &wt, req, t2, t2 + 500000);
    x->cmd.wait = NULL;
}

/* Requests with a wait that are never held, and bad waits. */
static void test_changes_wait_never(void **state)
{
    struct fx *x = *state;
    struct atp_wait wt = {.max_ms = 1000};
    x->cmd.wait = &wt;
    char req[512];
    struct resp *r = assert_answered(x, &wt, changes_text(req, "channel=web"), T0);
    uint64_t c0 = feed_cursor(r);
    resp_free(r);

    /* Something new already: answered at once. */
    int64_t oh;
    assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-1"), ATP_SLICE("DC-2"), 2, &oh), 0);
    r = assert_answered(
        x, &wt, changes_text(req, "channel=web&since=%llu&wait=500", (unsigned long long)c0), T0);
    assert_int_equal(r->status, 200);
    assert_change(r, 0, "SKU-1", "DC-2", 22);
    uint64_t c1 = feed_cursor(r);
    resp_free(r);

    /* Errors are answered at once, and end a wait in progress. */
    struct {
        const char *query;
        int code;
    } errs[] = {
        {"channel=tv&since=%llu&wait=500", ATP_ENOCHANNEL},
        {"since=%llu&wait=500", ATP_ENOCHANNEL},
        {"channel=web&since=12345&wait=500&x=%llu", ATP_ECURSOR},
        {"channel=web&since=0&wait=500&x=%llu", ATP_ECURSOR},
        {"channel=web&since=%llu&wait=500&limit=5", ATP_ETOOMANY},
        {"channel=web&since=%llu&wait=500&scope=all", ATP_EINVAL},
        {"channel=web&since=%llu&wait=5%%zz", ATP_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        /* Refused before the feed call: never held (the same bytes again
         * would be refused again), so no wait state is ever made. */
        r = assert_answered(x, &wt, changes_text(req, errs[i].query, (unsigned long long)c1),
                            T0 + 100000);
        if (r->status != atp_error_http(errs[i].code))
            fail_msg("%s: %d %s", errs[i].query, r->status, r->body);
        assert_problem(r, errs[i].code);
        resp_free(r);
    }
    /* A cursor this store never gave, ahead of the feed: 410, not held. */
    wt.until_us = T0 + 400000;
    r = assert_answered(
        x, &wt,
        changes_text(req, "channel=web&since=%llu&wait=500", (unsigned long long)(c1 + 1000000)),
        T0 + 100000);
    assert_problem(r, ATP_ECURSOR);
    resp_free(r);
    /* A held request whose cursor falls more than the feed's window (1024
     * records here) behind while it waits: 410, and its wait is over. Its
     * channel (b2b) does not sell from DC-3, so until then it stays held. */
    r = assert_answered(x, &wt, changes_text(req, "channel=b2b"), T0);
    uint64_t b0 = feed_cursor(r);
    resp_free(r);
    changes_text(req, "channel=b2b&since=%llu&wait=900", (unsigned long long)b0);
    assert_held(x, &wt, req, T0, T0 + 900000);
    for (int i = 0; i < 10; i++)
        assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-3"), 1, &oh),
                         0);
    assert_held(x, &wt, req, T0 + 100000, T0 + 900000);
    for (int i = 0; i < 1100; i++) {
        assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-3"), 1, &oh),
                         0);
        (void)atp_store_changes_cursor(x->store);
    }
    r = assert_answered(x, &wt, req, T0 + 200000);
    assert_problem(r, ATP_ECURSOR);
    resp_free(r);
    /* A cursor more than the feed's window behind: 410, not held. */
    for (int i = 0; i < 1100; i++) {
        assert_int_equal(atp_store_adjust(x->store, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 1, &oh),
                         0);
        (void)atp_store_changes_cursor(x->store);
    }
    wt.until_us = T0 + 400000;
    r = assert_answered(
        x, &wt, changes_text(req, "channel=web&since=%llu&wait=500", (unsigned long long)c1),
        T0 + 100000);
    assert_problem(r, ATP_ECURSOR);
    resp_free(r);
    r = assert_answered(x, &wt, changes_text(req, "channel=web&wait=500"), T0 + 100000);
    c1 = feed_cursor(r);
    resp_free(r);
    /* Another method on the route: 405, never held (no wait state made). */
    snprintf(req, sizeof(req),
             "DELETE /v1/changes?channel=web&since=%llu&wait=500 HTTP/1.1\r\nHost: t\r\n\r\n",
             (unsigned long long)c1);
    r = assert_answered(x, &wt, req, T0 + 100000);
    assert_problem(r, ATP_EMETHOD);
    resp_free(r);

    /* A wait that is not a u32 of decimal digits: 400 invalid-argument,
     * with since or without. */
    static const char *const bad[] = {
        "wait=-1",
        "wait=abc",
        "wait=4294967296",
        "wait=",
        "wait=1.5",
        "wait=+5",
        "wait=5ms",
        "wait=%205",
        "wait=99999999999999999999999",
        "wait=18446744073709551616",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (int with_since = 0; with_since < 2; with_since++) {
            if (with_since)
                changes_text(req, "channel=web&since=%llu&%s", (unsigned long long)c1, bad[i]);
            else
                changes_text(req, "channel=web&%s", bad[i]);
            r = assert_answered(x, &wt, req, T0);
            if (r->status != 400 || strcmp(jstr(r, "code"), "einval") != 0)
                fail_msg("%s: %d %s", bad[i], r->status, r->body);
            assert_problem(r, ATP_EINVAL);
            assert_non_null(strstr(jstr(r, "detail"), "'wait'"));
            resp_free(r);
        }
    }
    /* The last occurrence wins, as for the other parameters. */
    r = assert_answered(
        x, &wt, changes_text(req, "channel=web&since=%llu&wait=500&wait=0", (unsigned long long)c1),
        T0);
    assert_int_equal(r->status, 200);
    resp_free(r);
    x->cmd.wait = NULL;
}

/* --- reservations ------------------------------------------------------------------ */

#define RESV_BODY                                                                                  \
    "{\"channel\":\"web\",\"ttlMs\":60000,\"lines\":[{\"sku\":\"SKU-1\",\"location\":\"DC-1\","    \
    "\"qty\":3},{\"sku\":\"SKU-2\",\"qty\":1}]}"

static uint64_t resv_id(const struct resp *r)
{
    return strtoull(jstr(r, "id"), NULL, 10);
}

static void test_reserve(void **state)
{
    struct fx *x = *state;
    /* The key is required. */
    struct resp *r = do_post(x, "/v1/reservations", NULL, RESV_BODY);
    assert_problem(r, ATP_EKEY);
    resp_free(r);

    r = do_post(x, "/v1/reservations", "Idempotency-Key: order-1\r\n", RESV_BODY);
    assert_int_equal(r->status, 201);
    assert_null(hdr(r, "Idempotent-Replayed"));
    uint64_t id = resv_id(r);
    assert_true(id != 0);
    char loc[64];
    snprintf(loc, sizeof(loc), "/v1/reservations/%llu", (unsigned long long)id);
    assert_string_equal(hdr(r, "Location"), loc);
    assert_string_equal(jstr(r, "state"), "held");
    assert_string_equal(jstr(r, "idempotencyKey"), "order-1");
    assert_string_equal(jstr(r, "channel"), "web");
    assert_int_equal(jint(r, "ttlMs"), 60000);
    assert_string_equal(jstr(r, "createdAt"), "2025-06-15T15:06:40.000000Z");
    struct json_object *lines, *l, *v;
    assert_true(json_object_object_get_ex(r->json, "lines", &lines));
    assert_int_equal(json_object_array_length(lines), 2);
    l = json_object_array_get_idx(lines, 1);
    assert_true(json_object_object_get_ex(l, "location", &v));
    assert_string_equal(json_object_get_string(v), "DC-1"); /* "any" resolved */
    assert_true(json_object_object_get_ex(l, "anyLocation", &v));
    assert_true(json_object_get_boolean(v));
    resp_free(r);

    /* The stock moved. */
    r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-1"));
    assert_int_equal(jint(r, "reserved"), 3);
    assert_int_equal(jint(r, "available"), 97);
    resp_free(r);

    /* A replay: same answer, flagged; nothing reserved twice. */
    r = do_post(x, "/v1/reservations", "Idempotency-Key: order-1\r\n", RESV_BODY);
    assert_int_equal(r->status, 201);
    assert_string_equal(hdr(r, "Idempotent-Replayed"), "true");
    assert_int_equal(resv_id(r), id);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-1"));
    assert_int_equal(jint(r, "reserved"), 3);
    resp_free(r);

    /* Same key, another body: 422. */
    r = do_post(x, "/v1/reservations", "Idempotency-Key: order-1\r\n",
                "{\"channel\":\"web\",\"ttlMs\":60000,\"lines\":[{\"sku\":\"SKU-1\",\"qty\":4}]}");
    assert_problem(r, ATP_ECONFLICT);
    resp_free(r);

    /* All or nothing: one short line refuses the lot, with shortfalls. */
    r = do_post(x, "/v1/reservations", "Idempotency-Key: order-2\r\n",
                "{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"location\":\"DC-1\",\"qty\":"
                "1},{\"sku\":\"SKU-2\",\"location\":\"DC-1\",\"qty\":50}]}");
    assert_problem(r, ATP_EINSUFFICIENT);
    struct json_object *sf;
    assert_true(json_object_object_get_ex(r->json, "shortfalls", &sf));
    assert_int_equal(json_object_array_length(sf), 1);
    l = json_object_array_get_idx(sf, 0);
    assert_true(json_object_object_get_ex(l, "line", &v));
    assert_int_equal(json_object_get_int(v), 1);
    assert_true(json_object_object_get_ex(l, "requested", &v));
    assert_int_equal(json_object_get_int(v), 50);
    assert_true(json_object_object_get_ex(l, "available", &v));
    assert_int_equal(json_object_get_int(v), 2);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-1"));
    assert_int_equal(jint(r, "reserved"), 3); /* nothing of order-2 */
    resp_free(r);

    /* Validation classes. */
    static const struct {
        const char *body;
        int code;
    } bad[] = {
        {"{\"ttlMs\":1,\"lines\":[{\"sku\":\"SKU-1\",\"qty\":1}]}", ATP_ENOCHANNEL},
        {"{\"channel\":\"tv\",\"lines\":[{\"sku\":\"SKU-1\",\"qty\":1}]}", ATP_ENOCHANNEL},
        {"{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"qty\":0}]}", ATP_EQTY},
        {"{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"qty\":1.5}]}", ATP_EMALFORMED},
        {"{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"qty\":\"1\"}]}", ATP_EMALFORMED},
        {"{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"qty\":99999999999999999999}]}",
         ATP_ERANGE},
        {"{\"channel\":\"web\",\"lines\":[{\"qty\":1}]}", ATP_EINVAL_SKU},
        {"{\"channel\":\"web\",\"lines\":[{\"sku\":\"S K\",\"qty\":1}]}", ATP_EINVAL_SKU},
        {"{\"channel\":\"web\",\"lines\":[{\"sku\":\"SKU-1\",\"location\":\"\",\"qty\":1}]}",
         ATP_EINVAL_LOC},
        {"{\"channel\":\"web\",\"lines\":[]}", ATP_EINVAL},
        {"{\"channel\":\"web\"}", ATP_EMALFORMED},
        {"{\"channel\":\"web\",\"ttlMs\":0,\"lines\":[{\"sku\":\"SKU-1\",\"qty\":1}]}", ATP_ETTL},
        {"{\"channel\":\"web\",\"ttlMs\":999999999999,\"lines\":[{\"sku\":\"SKU-1\",\"qty\":1}]}",
         ATP_ETTL},
        {"not json", ATP_EMALFORMED},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char key[64];
        snprintf(key, sizeof(key), "Idempotency-Key: bad-%zu\r\n", i);
        r = do_post(x, "/v1/reservations", key, bad[i].body);
        assert_problem(r, bad[i].code);
        resp_free(r);
    }
    /* 33 lines: over the limit. */
    char big[4096];
    int n = snprintf(big, sizeof(big), "{\"channel\":\"web\",\"lines\":[");
    for (int i = 0; i < 33; i++)
        n += snprintf(big + n, sizeof(big) - (size_t)n, "%s{\"sku\":\"SKU-1\",\"qty\":1}",
                      i ? "," : "");
    snprintf(big + n, sizeof(big) - (size_t)n, "]}");
    r = do_post(x, "/v1/reservations", "Idempotency-Key: big\r\n", big);
    assert_problem(r, ATP_ETOOMANY);
    resp_free(r);
    /* A key with a control character is not even a header: 400, close. */
    const char *ctl = "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nIdempotency-Key: a\x01"
                      "b\r\nContent-Length: 0\r\n\r\n";
    r = do_req_ex(x, ctl, strlen(ctl), true);
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
    /* A key longer than 64 bytes. */
    r = do_post(
        x, "/v1/reservations",
        "Idempotency-Key: k12345678901234567890123456789012345678901234567890123456789012345"
        "\r\n",
        RESV_BODY);
    assert_problem(r, ATP_EKEY);
    resp_free(r);
    r = do_post(x, "/v1/reservations", "Idempotency-Key: a\r\nIdempotency-Key: b\r\n", RESV_BODY);
    assert_problem(r, ATP_EKEY);
    resp_free(r);

    /* Writes refused (read-only, draining): 503 with Retry-After. */
    x->refuse = ATP_EREADONLY;
    r = do_post(x, "/v1/reservations", "Idempotency-Key: order-9\r\n", RESV_BODY);
    assert_problem(r, ATP_EREADONLY);
    assert_non_null(hdr(r, "Retry-After"));
    resp_free(r);
    x->refuse = 0;
}

static void test_reservation_lifecycle(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_post(x, "/v1/reservations", "Idempotency-Key: life-1\r\n", RESV_BODY);
    assert_int_equal(r->status, 201);
    uint64_t id = resv_id(r);
    resp_free(r);
    char path[128], req[256];

    snprintf(req, sizeof(req), "GET /v1/reservations/%llu HTTP/1.1\r\nHost: t\r\n\r\n",
             (unsigned long long)id);
    r = do_req(x, req);
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "state"), "held");
    resp_free(r);
    r = do_req(x, GET("/v1/reservations?idempotencyKey=life-1"));
    assert_int_equal(r->status, 200);
    assert_int_equal(resv_id(r), id);
    resp_free(r);
    r = do_req(x, GET("/v1/reservations?idempotencyKey=none"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);

    snprintf(path, sizeof(path), "/v1/reservations/%llu:extend", (unsigned long long)id);
    r = do_post(x, path, NULL, "{\"ttlMs\":120000}");
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "expiresAt"), "2025-06-15T15:08:40.000000Z"); /* now + 120 s */
    assert_int_equal(jint(r, "ttlMs"), 60000);                                /* as created */
    resp_free(r);
    r = do_post(x, path, NULL, "{}");
    assert_problem(r, ATP_ETTL);
    resp_free(r);

    snprintf(path, sizeof(path), "/v1/reservations/%llu:commit", (unsigned long long)id);
    r = do_post(x, path, NULL, "");
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "state"), "committed");
    resp_free(r);
    r = do_post(x, path, NULL, ""); /* a retried commit is fine */
    assert_int_equal(r->status, 200);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/SKU-1?channel=web&location=DC-1"));
    assert_int_equal(jint(r, "allocated"), 3);
    assert_int_equal(jint(r, "reserved"), 0);
    resp_free(r);

    snprintf(path, sizeof(path), "/v1/reservations/%llu:release", (unsigned long long)id);
    r = do_post(x, path, NULL, "");
    assert_problem(r, ATP_ESTATE);
    resp_free(r);
    snprintf(path, sizeof(path), "/v1/reservations/%llu:extend", (unsigned long long)id);
    r = do_post(x, path, NULL, "{\"ttlMs\":1000}");
    assert_problem(r, ATP_ESTATE);
    resp_free(r);

    /* A second one, released. */
    r = do_post(x, "/v1/reservations", "Idempotency-Key: life-2\r\n", RESV_BODY);
    uint64_t id2 = resv_id(r);
    resp_free(r);
    snprintf(path, sizeof(path), "/v1/reservations/%llu:release", (unsigned long long)id2);
    r = do_req(x,
               "POST /v1/reservations/0:release HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", path);
    r = do_req(x, req);
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "state"), "released");
    struct json_object *v;
    assert_true(json_object_object_get_ex(r->json, "expiresAt", &v));
    assert_null(v);
    resp_free(r);

    /* Unknown ids, actions and methods. */
    r = do_req(x, GET("/v1/reservations/999999"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_req(x, GET("/v1/reservations/abc"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_post(x, "/v1/reservations/1:explode", NULL, "");
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    snprintf(req, sizeof(req), "GET /v1/reservations/%llu:commit HTTP/1.1\r\nHost: t\r\n\r\n",
             (unsigned long long)id);
    r = do_req(x, req);
    assert_problem(r, ATP_EMETHOD);
    resp_free(r);
    r = do_req(x, "DELETE /v1/reservations/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_problem(r, ATP_EMETHOD);
    assert_string_equal(hdr(r, "Allow"), "GET, HEAD");
    resp_free(r);
    r = do_req(x, "PUT /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_problem(r, ATP_EMETHOD);
    resp_free(r);
    r = do_req(x, GET("/v1/reservations"));
    assert_problem(r, ATP_EINVAL);
    resp_free(r);
}

static void test_expired(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_post(x, "/v1/reservations", "Idempotency-Key: exp-1\r\n",
                             "{\"channel\":\"web\",\"ttlMs\":1,\"lines\":[{\"sku\":\"SKU-1\","
                             "\"qty\":1}]}");
    assert_int_equal(r->status, 201);
    uint64_t id = resv_id(r);
    resp_free(r);
    /* Later than its expiry: commit answers 409 reservation-expired. */
    char req[256];
    snprintf(req, sizeof(req),
             "POST /v1/reservations/%llu:commit HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
             (unsigned long long)id);
    x->out.len = 0;
    ssize_t rc = atp_http_handle(&x->http, (const uint8_t *)req, strlen(req), &x->out, T0 + 5000);
    assert_int_equal(rc, (ssize_t)strlen(req));
    size_t off = 0;
    r = parse_resp(&x->out, &off, false);
    assert_problem(r, ATP_EEXPIRED);
    resp_free(r);
}

/* --- admin ----------------------------------------------------------------------- */

static void test_admin(void **state)
{
    struct fx *x = *state;
    struct resp *r =
        do_post(x, "/v1/items/NEW-1/DC-1:adjust", NULL, "{\"delta\":7,\"reason\":\"receipt\"}");
    assert_int_equal(r->status, 200);
    assert_int_equal(jint(r, "onHand"), 7);
    assert_string_equal(jstr(r, "sku"), "NEW-1");
    assert_string_equal(jstr(r, "location"), "DC-1");
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:adjust", NULL, "{\"delta\":-2}");
    assert_int_equal(jint(r, "onHand"), 5);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:set", NULL, "{\"onHand\":40,\"seq\":10}");
    assert_int_equal(r->status, 200);
    assert_int_equal(jint(r, "onHand"), 40);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:set", NULL, "{\"onHand\":1,\"seq\":9}");
    assert_problem(r, ATP_ESTALE);
    resp_free(r);
    /* A sku with '/' in it, and a location sent percent-encoded. */
    r = do_post(x, "/v1/items/A/B/X%3AY:set", NULL, "{\"onHand\":2}");
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "sku"), "A/B");
    assert_string_equal(jstr(r, "location"), "X:Y");
    resp_free(r);
    r = do_req(x, GET("/v1/availability/A/B?channel=web&location=X:Y"));
    assert_int_equal(r->status, 200);
    assert_int_equal(jint(r, "onHand"), 2);
    resp_free(r);

    r = do_post(x, "/v1/items/NEW-1/DC-1:adjust", NULL, "{\"delta\":0}");
    assert_problem(r, ATP_EQTY);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:adjust", NULL, "{}");
    assert_problem(r, ATP_EINVAL);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:set", NULL, "{\"onHand\":-1}");
    assert_problem(r, ATP_EQTY);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:adjust", NULL, "{\"delta\":999999999999999}");
    assert_problem(r, ATP_ERANGE);
    resp_free(r);
    r = do_post(x, "/v1/items/bad%20sku/DC-1:adjust", NULL, "{\"delta\":1}");
    assert_problem(r, ATP_EINVAL_SKU);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/:adjust", NULL, "{\"delta\":1}");
    assert_problem(r, ATP_EINVAL_LOC);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1/DC-1:explode", NULL, "{\"delta\":1}");
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_post(x, "/v1/items/NEW-1", NULL, "{\"delta\":1}");
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_req(x, GET("/v1/items/NEW-1/DC-1:adjust"));
    assert_problem(r, ATP_EMETHOD);
    resp_free(r);
    x->refuse = ATP_EUNAVAILABLE;
    r = do_post(x, "/v1/items/NEW-1/DC-1:adjust", NULL, "{\"delta\":1}");
    assert_problem(r, ATP_EUNAVAILABLE);
    resp_free(r);
    x->refuse = 0;
}

/* --- operations ------------------------------------------------------------------------ */

static void test_health(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_req(x, GET("/livez"));
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "status"), "ok");
    resp_free(r);
    r = do_req(x, GET("/readyz"));
    assert_int_equal(r->status, 200);
    assert_string_equal(jstr(r, "status"), "ready");
    resp_free(r);
    x->ready = false;
    r = do_req(x, GET("/readyz"));
    assert_int_equal(r->status, 503);
    assert_string_equal(jstr(r, "reason"), "draining");
    resp_free(r);
    r = do_req(x, GET("/livez")); /* alive all the same */
    assert_int_equal(r->status, 200);
    resp_free(r);
    x->ready = true;
    r = do_req(x, "POST /livez HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_problem(r, ATP_EMETHOD);
    resp_free(r);
    /* OPTIONS: the path's own methods, no body and no Content-Length (RFC
     * 9110 8.6); an unknown path is a 404 as for any method. */
    r = do_req(x, "OPTIONS /livez HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(r->status, 204);
    assert_string_equal(hdr(r, "Allow"), "GET, HEAD, OPTIONS");
    assert_null(hdr(r, "Content-Length"));
    resp_free(r);
    uint64_t commits = atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_COMMIT);
    r = do_req(x, "OPTIONS /v1/reservations/42:commit HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_int_equal(r->status, 204);
    assert_string_equal(hdr(r, "Allow"), "POST, OPTIONS");
    resp_free(r);
    /* counted as "other", not as a commit */
    assert_int_equal(atp_metrics_requests(ATP_MPROTO_HTTP, ATP_MOP_COMMIT), commits);
    r = do_req(x, "OPTIONS /nowhere HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
}

/* Readiness from a Kafka ingest: not ready while its consumer is stopped
 * (the embedded mock cluster starts in-process; nothing is consumed). */
static void test_ready_ingest(void **state)
{
    struct fx *x = *state;
    struct atp_ingest_config cfg;
    atp_ingest_config_defaults(&cfg);
    struct atp_ingest *ing = NULL;
    assert_int_equal(atp_ingest_new(&cfg, x->store, &ing), 0);
    char reason[128] = "";
    assert_false(atp_http_ready_ingest(ing, reason, sizeof(reason)));
    assert_string_equal(reason, "kafka consumer not running");
    x->http.ready = atp_http_ready_ingest;
    x->http.ready_arg = ing;
    struct resp *r = do_req(x, GET("/readyz"));
    assert_int_equal(r->status, 503);
    assert_string_equal(jstr(r, "reason"), "kafka consumer not running");
    resp_free(r);
    atp_ingest_free(ing);
}

static uint64_t metric_value(const char *text, const char *series)
{
    const char *p = text;
    size_t n = strlen(series);
    while ((p = strstr(p, series)) != NULL) {
        if ((p == text || p[-1] == '\n') && p[n] == ' ')
            return strtoull(p + n + 1, NULL, 10);
        p += n;
    }
    fail_msg("series %s not found", series);
    return 0;
}

static void test_metrics(void **state)
{
    struct fx *x = *state;
    struct resp *r = do_req(x, GET("/metrics"));
    assert_int_equal(r->status, 200);
    assert_string_equal(hdr(r, "Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
    const char *get_series = "atp_requests_total{protocol=\"http\",operation=\"get\"}";
    uint64_t before = metric_value(r->body, get_series);
    assert_non_null(strstr(r->body, "# TYPE atp_request_duration_seconds histogram"));
    assert_non_null(strstr(r->body, "atp_build_info{version=\"test\"} 1"));
    resp_free(r);
    for (int i = 0; i < 3; i++)
        resp_free(do_req(x, GET("/v1/availability/NOPE?channel=web")));
    r = do_req(x, GET("/metrics"));
    assert_int_equal(metric_value(r->body, get_series), before + 3);
    assert_true(metric_value(r->body, "atp_request_errors_total{protocol=\"http\",operation="
                                      "\"get\",code=\"enotfound\"}") >= 3);
    assert_int_equal(metric_value(r->body, "atp_items"), 3);
    resp_free(r);
}

/* --- framing ---------------------------------------------------------------------------- */

static void test_pipelining(void **state)
{
    struct fx *x = *state;
    const char *a = GET("/livez");
    const char *b = "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: "
                    "application/json\r\nContent-Length: 43\r\n\r\n{\"channel\":\"web\",\"items\":"
                    "[{\"sku\":\"SKU-1\"}]}";
    const char *c = GET("/v1/availability/SKU-1?channel=web&location=DC-1");
    char all[1024];
    snprintf(all, sizeof(all), "%s%s%s", a, b, c);
    size_t len = strlen(all), off = 0;
    x->out.len = 0;
    int n = 0;
    while (off < len) {
        ssize_t rc = atp_http_handle(&x->http, (const uint8_t *)all + off, len - off, &x->out, T0);
        assert_true(rc > 0);
        off += (size_t)rc;
        n++;
    }
    assert_int_equal(n, 3);
    size_t ro = 0;
    static const int statuses[] = {200, 200, 200};
    for (int i = 0; i < 3; i++) {
        struct resp *r = parse_resp(&x->out, &ro, false);
        assert_int_equal(r->status, statuses[i]);
        if (i == 1)
            assert_non_null(strstr(r->body, "results"));
        if (i == 2)
            assert_non_null(strstr(r->body, "\"onHand\":100"));
        resp_free(r);
    }
    assert_int_equal(ro, x->out.len);
}

/* Every strict prefix of a request is "need more", with nothing appended. */
static void test_prefixes(void **state)
{
    struct fx *x = *state;
    const char *reqs[] = {
        GET("/v1/availability/SKU-1?channel=web&location=DC-1"),
        "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 43\r\n\r\n{\"channel\":\"web\",\"items\":[{\"sku\":\"SKU-1\"}]}",
        "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: "
        "chunked\r\n\r\n10\r\n{\"channel\":\"web\"\r\n1b\r\n,\"items\":[{\"sku\":"
        "\"SKU-1\"}]}\r\n0\r\n\r\n",
    };
    for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
        size_t len = strlen(reqs[k]);
        for (size_t i = 1; i < len; i++) {
            x->out.len = 0;
            ssize_t rc = atp_http_handle(&x->http, (const uint8_t *)reqs[k], i, &x->out, T0);
            if (rc != 0)
                fail_msg("request %zu prefix %zu: rc %zd", k, i, rc);
            assert_int_equal(x->out.len, 0);
        }
        struct resp *r = do_req(x, reqs[k]);
        assert_int_equal(r->status, 200);
        assert_non_null(strstr(r->body, "\"onHand\":"));
        resp_free(r);
    }
}

static void test_keepalive_close(void **state)
{
    struct fx *x = *state;
    struct resp *r =
        do_req_ex(x, "GET /livez HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 52, true);
    assert_int_equal(r->status, 200);
    assert_string_equal(hdr(r, "Connection"), "close");
    resp_free(r);
    const char *h10 = "GET /livez HTTP/1.0\r\n\r\n";
    r = do_req_ex(x, h10, strlen(h10), true);
    assert_int_equal(r->status, 200);
    assert_string_equal(hdr(r, "Connection"), "close");
    resp_free(r);
    const char *h10k = "GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    r = do_req(x, h10k);
    assert_string_equal(hdr(r, "Connection"), "keep-alive");
    resp_free(r);
    /* HTTP/1.1 without Host: 400, and the connection closes. */
    const char *nohost = "GET /livez HTTP/1.1\r\n\r\n";
    r = do_req_ex(x, nohost, strlen(nohost), true);
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
}

static void test_bad_framing(void **state)
{
    struct fx *x = *state;
    /* Garbage: 400, close. */
    const char *g = "HELLO THERE\r\n\r\n";
    struct resp *r = do_req_ex(x, g, strlen(g), true);
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
    /* A body over max_body (4096 here): 413 before the body is read. */
    const char *big = "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Type: "
                      "application/json\r\nContent-Length: 5000\r\n\r\n";
    r = do_req_ex(x, big, strlen(big), true);
    assert_problem(r, ATP_ETOOLARGE);
    resp_free(r);
    /* A chunked body growing over it: 413 too. */
    char chunked[8192];
    int n = snprintf(chunked, sizeof(chunked),
                     "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     "\r\n1000\r\n");
    memset(chunked + n, 'x', 4096);
    n += 4096;
    n += snprintf(chunked + n, sizeof(chunked) - (size_t)n, "\r\n10\r\nxxxxxxxxxxxxxxxx\r\n");
    r = do_req_ex(x, chunked, (size_t)n, true);
    assert_problem(r, ATP_ETOOLARGE);
    resp_free(r);
    /* A header block over max_header (1024 here): 431. */
    char hb[2048];
    n = snprintf(hb, sizeof(hb), "GET /livez HTTP/1.1\r\nHost: t\r\nX-Big: ");
    memset(hb + n, 'a', 1100);
    hb[n + 1100] = '\0';
    r = do_req_ex(x, hb, strlen(hb), true);
    assert_problem(r, ATP_EHEADERS);
    resp_free(r);
    /* Content-Length and chunked together (smuggling): 400. */
    const char *both = "POST /v1/reservations HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    r = do_req_ex(x, both, strlen(both), true);
    assert_int_equal(r->status, 400);
    resp_free(r);
    /* An Upgrade (curl --http2 sends h2c) is ignored: answered in HTTP/1.1,
     * the connection stays, and the request after it is parsed as HTTP. */
    const char *up = "GET /livez HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                     "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n"
                     "GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n";
    x->out.len = 0;
    ssize_t used = atp_http_handle(&x->http, (const uint8_t *)up, strlen(up), &x->out, T0);
    assert_true(used > 0 && (size_t)used < strlen(up));
    assert_memory_equal(up + used, "GET /readyz", 11);
    size_t off = 0;
    r = parse_resp(&x->out, &off, false);
    assert_int_equal(r->status, 200);
    assert_null(hdr(r, "Connection"));
    resp_free(r);
    r = do_req(x, up + used);
    assert_int_equal(r->status, 200);
    resp_free(r);
    /* CONNECT would make the rest a tunnel: refused, closed. */
    const char *connect = "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n";
    r = do_req_ex(x, connect, strlen(connect), true);
    assert_int_equal(r->status, 400);
    resp_free(r);
    /* Unknown path: 404, the connection stays. */
    r = do_req(x, GET("/nowhere"));
    assert_problem(r, ATP_ENOTFOUND);
    resp_free(r);
    r = do_req(x, GET("/v1/availability/%"));
    assert_problem(r, ATP_EINVAL_SKU);
    resp_free(r);
}

/* Well-formed UTF-8 (RFC 3629), checked independently of http.c's writer. */
static bool utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80             ? 1
                   : (c & 0xe0) == 0xc0 ? 2
                   : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 ? 4
                                        : 0;
        if (k == 0 || i + k > n)
            return false;
        uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1f : k == 3 ? c & 0x0f : c & 0x07;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[k] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k;
    }
    return true;
}

/*
 * Every answer is valid JSON, so valid UTF-8: a body that is not UTF-8 is
 * refused (400), and bytes of the client's own that are not (a raw path, or
 * a path cut in the middle of a character) come back as U+FFFD.
 */
static void test_utf8(void **state)
{
    struct fx *x = *state;
    const char body[] = "{\"channel\":\"web\",\"items\":[{\"sku\":\"A\xff\xfe"
                        "B\"}]}";
    char req[512];
    snprintf(req, sizeof(req),
             "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: "
             "application/json\r\nContent-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    struct resp *r = do_req(x, req);
    assert_problem(r, ATP_EMALFORMED);
    resp_free(r);
    /* ill-formed by RFC 3629 though json-c 0.16 lets them through: an
     * overlong '/', a surrogate, a byte over F4 */
    static const char *const bad[] = {"\xc0\xaf", "\xed\xa0\x80", "\xf5\x80\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char b[128];
        snprintf(b, sizeof(b), "{\"channel\":\"web\",\"items\":[{\"sku\":\"A%sB\"}]}", bad[i]);
        snprintf(req, sizeof(req),
                 "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 strlen(b), b);
        r = do_req(x, req);
        assert_problem(r, ATP_EMALFORMED);
        resp_free(r);
    }
    /* "/" and 40 two-byte characters: the detail quotes 64 bytes of the path,
     * which ends in half a character. */
    char path[128] = "/";
    for (int i = 0; i < 40; i++)
        strcat(path, "\xc3\xa9");
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    r = do_req(x, req);
    assert_problem(r, ATP_ENOTFOUND);
    assert_true(utf8_ok((const unsigned char *)r->body, r->blen));
    assert_non_null(strstr(r->body, "\xc3\xa9\\ufffd\""));
    resp_free(r);
    /* A lone continuation byte and an overlong form in the path: U+FFFD each. */
    r = do_req(x, "GET /x\x80y\xc0\xaf HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_problem(r, ATP_ENOTFOUND);
    assert_true(utf8_ok((const unsigned char *)r->body, r->blen));
    assert_non_null(strstr(r->body, "/x\\ufffdy\\ufffd\\ufffd"));
    resp_free(r);
}

static void test_blank_lines_and_continue(void **state)
{
    struct fx *x = *state;
    /* Leading blank lines are skipped. */
    const char *req = "\r\n\r\nGET /livez HTTP/1.1\r\nHost: t\r\n\r\n";
    struct resp *r = do_req(x, req);
    assert_int_equal(r->status, 200);
    resp_free(r);
    /* 100-continue: the header block alone gets "100 Continue", once. */
    const char *head = "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: "
                       "application/json\r\nExpect: 100-continue\r\nContent-Length: 43\r\n\r\n";
    char full[512];
    snprintf(full, sizeof(full), "%s%s", head,
             "{\"channel\":\"web\",\"items\":[{\"sku\":\"SKU-1\"}]}");
    x->out.len = 0;
    assert_int_equal(atp_http_handle(&x->http, (const uint8_t *)head, strlen(head), &x->out, T0),
                     0);
    assert_int_equal(x->out.len, strlen("HTTP/1.1 100 Continue\r\n\r\n"));
    assert_memory_equal(x->out.data, "HTTP/1.1 100 Continue\r\n\r\n", x->out.len);
    x->out.len = 0;
    assert_int_equal(
        atp_http_handle(&x->http, (const uint8_t *)full, strlen(head) + 5, &x->out, T0), 0);
    assert_int_equal(x->out.len, 0);
    r = do_req(x, full);
    assert_int_equal(r->status, 200);
    resp_free(r);
    /* An HTTP/1.0 client gets no 100 (RFC 9110 10.1.1: the expectation is
     * ignored); it sends its body anyway. */
    const char *head10 = "POST /v1/availability:batchGet HTTP/1.0\r\nContent-Type: "
                         "application/json\r\nExpect: 100-continue\r\nContent-Length: 43\r\n\r\n";
    x->out.len = 0;
    assert_int_equal(
        atp_http_handle(&x->http, (const uint8_t *)head10, strlen(head10), &x->out, T0), 0);
    assert_int_equal(x->out.len, 0);
}

static void test_error_helpers(void **state)
{
    (void)state;
    struct atp_buf b = {0};
    assert_int_equal(atp_http_timeout_response(&b), 0);
    size_t off = 0;
    struct resp *r = parse_resp(&b, &off, false);
    assert_problem(r, ATP_ETIMEDOUT);
    assert_string_equal(hdr(r, "Connection"), "close");
    resp_free(r);
    b.len = 0;
    off = 0;
    assert_int_equal(atp_http_error(&b, ATP_ETOOMANYCONN, NULL), 0);
    r = parse_resp(&b, &off, false);
    assert_problem(r, ATP_ETOOMANYCONN);
    assert_non_null(hdr(r, "Retry-After"));
    resp_free(r);
    atp_buf_free(&b);
}

/* A request that ends right before an unreadable page: no byte beyond it
 * may be read, in any prefix. */
static void test_guard_page(void **state)
{
    struct fx *x = *state;
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *map =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + pg, (size_t)pg, PROT_NONE), 0);
    const char *reqs[] = {
        GET("/v1/availability/SKU-1?channel=web&location=DC-1"),
        "POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        "Content-Length: 43\r\n\r\n{\"channel\":\"web\",\"items\":[{\"sku\":\"SKU-1\"}]}",
        "GET /v1/availability/SKU-1?channel=web&location=DC-1&x=%4",
    };
    for (size_t k = 0; k < sizeof(reqs) / sizeof(reqs[0]); k++) {
        size_t len = strlen(reqs[k]);
        for (size_t i = 1; i <= len; i++) {
            uint8_t *p = map + pg - i;
            memcpy(p, reqs[k], i);
            x->out.len = 0;
            (void)atp_http_handle(&x->http, p, i, &x->out, T0);
        }
    }
    munmap(map, (size_t)pg * 2);
}

/*
 * The headers of a lookup's 200 are written by a fast path
 * (availability_fast); with http.no_fast_path emit() writes them instead
 * (the body is composed once for both). Both must give the same bytes and
 * the same return value for every request, across Date changes and buffer
 * growth.
 */
static void test_fast_path_same_bytes(void **state)
{
    struct fx *x = *state;
    /* Quantities whose digits cross every width boundary. */
    static const int64_t qty[] = {0,    9,     10,      99,           100,        999,
                                  1000, 65535, 1000000, 4294967296LL, ATP_QTY_MAX};
    for (size_t i = 0; i < sizeof(qty) / sizeof(qty[0]); i++) {
        char sku[32];
        snprintf(sku, sizeof(sku), "Q-%zu", i);
        assert_int_equal(atp_store_set(x->store, atp_slice_cstr(sku), ATP_SLICE("DC-1"), qty[i], 0),
                         0);
    }
    static const char *const reqs[] = {
        GET("/v1/availability/SKU-1?channel=web"),
        GET("/v1/availability/SKU-1?channel=app"),
        GET("/v1/availability/SKU-1?channel=b2b"),
        GET("/v1/availability/SKU-2?channel=app"),
        GET("/v1/availability/SKU-1?channel=web&location=DC-2"),
        GET("/v1/availability/SKU-1?location=DC-1&channel=b2b"),
        GET("/v1/availability/SKU%2D1?channel=%77eb"),
        GET("/v1/availability/SKU-1?channel=app&channel=web"),
        GET("/v1/availability/SKU-1?channel=web&location=DC-1&location=DC-2"),
        GET("/v1/availability/SKU-1?x=1&channel=web&y"),
        GET("/v1/availability/SKU-1?channel=web#frag"),
        GET("/v1/availability/Q-0?channel=web"),
        GET("/v1/availability/Q-1?channel=web"),
        GET("/v1/availability/Q-2?channel=web"),
        GET("/v1/availability/Q-3?channel=app"),
        GET("/v1/availability/Q-4?channel=web"),
        GET("/v1/availability/Q-5?channel=web"),
        GET("/v1/availability/Q-6?channel=web&location=DC-1"),
        GET("/v1/availability/Q-7?channel=web"),
        GET("/v1/availability/Q-8?channel=web"),
        GET("/v1/availability/Q-9?channel=web"),
        GET("/v1/availability/Q-10?channel=web"),
        GET("/v1/availability/NOPE?channel=web"),
        GET("/v1/availability/SKU-1?channel=nope"),
        GET("/v1/availability/SKU-1?channel="),
        GET("/v1/availability/SKU-1"),
        GET("/v1/availability/SKU-1?channel=w%zz"),
        GET("/v1/availability/SKU%2?channel=web"),
        GET("/v1/availability/SKU 1?channel=web"),
        "HEAD /v1/availability/SKU-1?channel=web HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /v1/availability/SKU-1?channel=web HTTP/1.0\r\n\r\n",
        "GET /v1/availability/SKU-1?channel=web HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "GET /v1/availability/SKU-1?channel=web HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /v1/availability/SKU-1?channel=web HTTP/1.1\r\nHost: t\r\nIf-None-Match: "
        "\"x\"\r\n\r\n",
        "GET http://t/v1/availability/SKU-1?channel=web HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /v1/availability/SKU-1?channel=web HTTP/1.1\r\nHost: t\r\n\r\n"
        "GET /v1/availability/SKU-2?channel=web HTTP/1.1\r\nHost: t\r\n\r\n",
    };
    static const uint64_t times[] = {T0, T0 + 1000000, T0 + 86400ULL * 1000000 * 400};
    struct atp_buf fast = {0}, slow = {0};
    for (size_t t = 0; t < sizeof(times) / sizeof(times[0]); t++) {
        for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
            const uint8_t *in = (const uint8_t *)reqs[i];
            size_t len = strlen(reqs[i]);
            x->http.no_fast_path = false;
            ssize_t rf = atp_http_handle(&x->http, in, len, &fast, times[t]);
            x->http.no_fast_path = true;
            ssize_t rs = atp_http_handle(&x->http, in, len, &slow, times[t]);
            x->http.no_fast_path = false;
            if (rf != rs || fast.len != slow.len || memcmp(fast.data, slow.data, fast.len) != 0)
                fail_msg("request %zu differs:\n%.*s\n---\n%.*s", i, (int)fast.len,
                         (const char *)fast.data, (int)slow.len, (const char *)slow.data);
        }
    }
    /* They are real answers: the stored quantities came back. */
    assert_non_null(memmem(fast.data, fast.len, "\"available\":549755813887", 24));
    assert_non_null(memmem(fast.data, fast.len, "\"available\":4294967296", 22));
    atp_buf_free(&fast);
    atp_buf_free(&slow);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_availability, setup, teardown),
        cmocka_unit_test_setup_teardown(test_etag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_utf8, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_expired, setup_small_feed, teardown),
        cmocka_unit_test_setup_teardown(test_changes_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_wait_never, setup_small_feed, teardown),
        cmocka_unit_test_setup_teardown(test_reserve, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reservation_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_ingest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefixes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_framing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blank_lines_and_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_error_helpers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_guard_page, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_path_same_bytes, setup, teardown),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
