/*
 * drv_http.c - the HTTP/1.1 driver of atp-loadgen (atpd's HTTP facade, or
 * any server that answers the same paths, such as nginx `return 200`).
 *
 * Requests are written by hand (a few fixed templates); responses are parsed
 * with Debian's libhttp-parser, keep-alive, pipelined like every driver.
 * Bodies are only kept for the answers whose content is needed (a
 * reservation's id, an item's numbers), and read with json-c.
 *
 * The HTTP parser is incremental: the bytes of a partial response are fed
 * once and remembered (`fed`), since the engine offers the same unconsumed
 * bytes again with more behind them.
 */
#include "lg.h"

#include <errno.h>
#include <http_parser.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct http_state {
    http_parser parser;
    bool started;
    bool done;
    bool want_body;
    size_t fed; /* bytes of the current response already parsed */
    struct lg_buf body;
};

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct http_state *st = p->data;
    if (st->want_body && st->body.len + len <= (16u << 20))
        return lg_buf_append(&st->body, at, len) ? -1 : 0;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_state *st = p->data;
    st->done = true;
    http_parser_pause(p, 1); /* one response per decode call */
    return 0;
}

static const http_parser_settings settings = {
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static int http_conn_init(struct lg_run *run, void *state)
{
    struct http_state *st = state;
    http_parser_init(&st->parser, HTTP_RESPONSE);
    st->parser.data = st;
    st->started = true;
    return 0;
}

static void http_conn_free(void *state)
{
    struct http_state *st = state;
    if (st)
        lg_buf_free(&st->body);
}

static int putf(struct lg_buf *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int putf(struct lg_buf *out, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = out->cap - out->len;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf((char *)out->data + out->len, room, fmt, ap);
        va_end(ap);
        if (n < 0)
            return -EINVAL;
        if ((size_t)n < room) {
            out->len += (size_t)n;
            return 0;
        }
        if (!lg_buf_reserve(out, (size_t)n + 1))
            return -ENOMEM;
    }
    return -ENOMEM;
}

static const char *loc_name(const struct lg_run *run, uint16_t loc)
{
    return loc == UINT16_MAX ? NULL : run->wl->locations[loc];
}

static int http_encode(struct lg_run *run, void *state, const struct lg_req *r, struct lg_buf *out)
{
    const struct lg_workload *wl = run->wl;
    const char *host = run->cfg->server;
    char sku[72];
    if (!lg_buf_reserve(out, 512))
        return -ENOMEM;
    switch (r->op) {
    case LG_OP_GET:
    case LG_XOP_INSPECT: {
        if (r->sku_override)
            snprintf(sku, sizeof(sku), "%s", r->sku_override);
        else
            lg_sku(run, r->keys[0].key, sku);
        const char *loc = loc_name(run, r->keys[0].loc);
        return putf(out, "GET /v1/availability/%s?channel=%s%s%s HTTP/1.1\r\nHost: %s\r\n\r\n", sku,
                    wl->channel, loc ? "&location=" : "", loc ? loc : "", host);
    }
    case LG_OP_MGET: {
        struct lg_buf body = {0};
        int rc = putf(&body, "{\"channel\":\"%s\",\"items\":[", wl->channel);
        for (uint32_t i = 0; rc == 0 && i < r->nkeys; i++) {
            lg_sku(run, r->keys[i].key, sku);
            const char *loc = loc_name(run, r->keys[i].loc);
            rc = putf(&body, "%s{\"sku\":\"%s\"%s%s%s}", i ? "," : "", sku,
                      loc ? ",\"location\":\"" : "", loc ? loc : "", loc ? "\"" : "");
        }
        if (rc == 0)
            rc = putf(&body, "]}");
        if (rc == 0)
            rc = putf(out,
                      "POST /v1/availability:batchGet HTTP/1.1\r\nHost: %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      host, body.len);
        if (rc == 0)
            rc = lg_buf_append(out, body.data, body.len);
        lg_buf_free(&body);
        return rc;
    }
    case LG_OP_RESERVE: {
        struct lg_buf body = {0};
        int rc = putf(&body, "{\"channel\":\"%s\",\"ttlMs\":%llu,\"lines\":[", wl->channel,
                      (unsigned long long)wl->ttl_ms);
        for (uint32_t i = 0; rc == 0 && i < r->nkeys; i++) {
            lg_sku(run, r->keys[i].key, sku);
            rc = putf(&body, "%s{\"sku\":\"%s\",\"location\":\"%s\",\"qty\":%u}", i ? "," : "", sku,
                      wl->locations[r->keys[i].loc], r->keys[i].qty);
        }
        if (rc == 0)
            rc = putf(&body, "]}");
        if (rc == 0)
            rc = putf(out,
                      "POST /v1/reservations HTTP/1.1\r\nHost: %s\r\nIdempotency-Key: %.*s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                      host, (int)r->idem_len, r->idem, body.len);
        if (rc == 0)
            rc = lg_buf_append(out, body.data, body.len);
        lg_buf_free(&body);
        return rc;
    }
    case LG_OP_COMMIT:
    case LG_OP_RELEASE:
        return putf(
            out, "POST /v1/reservations/%llu:%s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n\r\n",
            (unsigned long long)r->res_id, r->op == LG_OP_COMMIT ? "commit" : "release", host);
    case LG_XOP_SET: {
        if (r->sku_override)
            snprintf(sku, sizeof(sku), "%s", r->sku_override);
        else
            lg_sku(run, r->keys[0].key, sku);
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"onHand\":%lld}", (long long)r->value);
        return putf(out,
                    "POST /v1/items/%s/%s:set HTTP/1.1\r\nHost: %s\r\n"
                    "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                    sku, wl->locations[r->keys[0].loc], host, n, body);
    }
    default:
        return -EINVAL;
    }
}

static const char *status_name(unsigned code)
{
    switch (code) {
    case 400:
        return "HTTP_400";
    case 404:
        return "HTTP_404";
    case 405:
        return "HTTP_405";
    case 408:
        return "HTTP_408";
    case 409:
        return "HTTP_409";
    case 413:
        return "HTTP_413";
    case 415:
        return "HTTP_415";
    case 422:
        return "HTTP_422";
    case 429:
        return "HTTP_429";
    case 431:
        return "HTTP_431";
    case 500:
        return "HTTP_500";
    case 503:
        return "HTTP_503";
    case 507:
        return "HTTP_507";
    default:
        return code >= 500 ? "HTTP_5XX" : "HTTP_4XX";
    }
}

static int64_t json_i64(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    return json_object_get_int64(v);
}

static void read_body(struct http_state *st, int op, struct lg_resp *ret)
{
    if (st->body.len == 0)
        return;
    struct json_tokener *tok = json_tokener_new();
    if (!tok)
        return;
    struct json_object *o =
        json_tokener_parse_ex(tok, (const char *)st->body.data, (int)st->body.len);
    json_tokener_free(tok);
    if (!o)
        return;
    if (op == LG_OP_RESERVE) {
        struct json_object *id;
        if (json_object_object_get_ex(o, "id", &id)) {
            if (json_object_is_type(id, json_type_string))
                ret->res_id = strtoull(json_object_get_string(id), NULL, 10);
            else
                ret->res_id = (uint64_t)json_object_get_int64(id);
        }
    } else {
        ret->atp = json_i64(o, "available");
        ret->on_hand = json_i64(o, "onHand");
        ret->allocated = json_i64(o, "allocated");
        ret->reserved = json_i64(o, "reserved");
        ret->safety = json_i64(o, "safetyStock");
    }
    json_object_put(o);
}

static ssize_t http_decode(struct lg_run *run, void *state, const uint8_t *in, size_t len, int op,
                           struct lg_resp *ret)
{
    struct http_state *st = state;
    if (!st->started)
        http_conn_init(run, st); /* the blocking setup connection */
    if (st->fed == 0) {
        st->want_body = op == LG_OP_RESERVE || op == LG_XOP_INSPECT;
        st->body.len = 0;
    }
    if (len <= st->fed)
        return 0;
    st->done = false;
    size_t n =
        http_parser_execute(&st->parser, &settings, (const char *)in + st->fed, len - st->fed);
    enum http_errno e = HTTP_PARSER_ERRNO(&st->parser);
    if (e == HPE_PAUSED) {
        http_parser_pause(&st->parser, 0);
    } else if (e != HPE_OK) {
        return -EPROTO;
    }
    if (!st->done) {
        st->fed = len;
        return 0;
    }
    size_t used = st->fed + n;
    st->fed = 0;
    ret->conn_close = !http_should_keep_alive(&st->parser);
    unsigned code = st->parser.status_code;
    ret->status = (code >= 200 && code < 300) || code == 304 ? NULL : status_name(code);
    if (!ret->status && st->want_body)
        read_body(st, op, ret);
    if (op == LG_OP_MGET && !ret->status)
        ret->nok = 0; /* per-key statuses are not counted over HTTP */
    return (ssize_t)used;
}

const struct lg_driver lg_driver_http = {
    .name = "http",
    .default_port = 7480,
    .state_size = sizeof(struct http_state),
    .conn_init = http_conn_init,
    .decode = http_decode,
    .encode = http_encode,
    .conn_free = http_conn_free,
};
