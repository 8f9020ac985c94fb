/*
 * http.c - the HTTP/1.1 + JSON facade (http.h): parse one request, run it
 * against the store, append one response.
 *
 * Knows HTTP (Debian's libhttp-parser does the parsing; this file does the
 * routing and the response framing), JSON (json-c reads request bodies;
 * responses are small and are written here directly, with string escaping),
 * the store API, the status table and the metrics registry. Knows nothing
 * about sockets, io_uring or threads: `in` and `out` belong to the caller.
 *
 * Request path, with no state kept between calls:
 *   1. find the end of the header block with a memchr scan bounded by
 *      max_header (431 beyond it); until it is there: "need more";
 *   2. run http_parser over what is there; callbacks record slices of `in`
 *      (url, the few headers used, the body) and pause the parser at the
 *      end of the first message, so a pipelined request behind it is left
 *      alone; a Content-Length over max_body is refused (413) before the
 *      body is awaited;
 *   3. route on the path, run the operation, append the response.
 * A GET lookup allocates nothing: the body is composed in a per-context
 * scratch buffer and copied behind the headers. Its usual answer (a 200
 * without If-None-Match) takes a fast path for its headers,
 * availability_fast(): stored straight into reserved room behind a status
 * line and headers cached per Date second, the same bytes as emit() writes
 * (tests/test_http.c compares the two). Path and query values with nothing
 * to decode are used in place, and the query is scanned once.
 * Bodies of writes are read with json-c (which allocates; those paths are
 * slower anyway).
 */
#include "http.h"

#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <xxhash.h>

#include "atp/durable.h"
#include "atp/error.h"
#include "atp/ingest.h"
#include "atp/store.h"
#include "metrics.h"

#define PROBLEM_BASE "https://atpd.dev/problems/"
#define JSON_DEPTH   8   /* request bodies are at most 3 levels deep */
#define PATH_MAX_SEG 256 /* a decoded path segment or query value */
#define ID_DIGITS    20  /* digits of a uint64 reservation id */

/* --- small buffers ------------------------------------------------------------ */

/* Appending to an atp_buf; the first failure sticks in `err`. */
struct jb {
    struct atp_buf *b;
    int err;
};

static inline void jb_put(struct jb *j, const void *p, size_t n)
{
    if (__builtin_expect(j->b->cap - j->b->len >= n && !j->err, 1)) {
        memcpy(j->b->data + j->b->len, p, n);
        j->b->len += n;
        return;
    }
    if (j->err)
        return;
    uint8_t *dst = atp_buf_reserve(j->b, n);
    if (!dst) {
        j->err = -ENOMEM;
        return;
    }
    memcpy(dst, p, n);
    j->b->len += n;
}

static inline void jb_lit(struct jb *j, const char *s)
{
    jb_put(j, s, strlen(s));
}

/*
 * Writers into room the caller has reserved: each stores its bytes at p and
 * returns the end. The jb_* appenders below reserve and call them, and the
 * lookup's 200 (availability_fast) uses them directly.
 */
#define PUT_LIT(p, s) (memcpy((p), (s), sizeof(s) - 1), (p) + sizeof(s) - 1)

/*
 * Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) that starts s[0] >= 0x80, or 0. By
 * hand: ten lines, and the JSON writer needs it byte by byte.
 */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c >= 0xc2 && c <= 0xdf   ? 2
                 : c >= 0xe0 && c <= 0xef ? 3
                 : c >= 0xf0 && c <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || n < len)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

/*
 * A JSON string of n bytes: at most 6n + 2 out. Control characters, quotes
 * and backslashes are escaped; bytes that are not well-formed UTF-8 (a
 * client's raw path or sku echoed back, or a detail cut short) become
 * U+FFFD, so every answer is valid JSON.
 */
static char *put_str(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = utf8_seq((const unsigned char *)s + i, n - i);
            if (k == 0) {
                p = PUT_LIT(p, "\\ufffd");
                continue;
            }
            memcpy(p, s + i, k);
            p += k;
            i += k - 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') {
            *p++ = (char)c;
            continue;
        }
        *p++ = '\\';
        if (c == '"' || c == '\\') {
            *p++ = (char)c;
        } else if (c == '\n') {
            *p++ = 'n';
        } else {
            p = PUT_LIT(p, "u00");
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        }
    }
    *p++ = '"';
    return p;
}

/* Decimal digits, two at a time: at most 20 bytes (21 for put_i64).
 * By hand: vfprintf was a third of a lookup's CPU time. */
static char *put_u64(char *p, uint64_t v)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930"
                                   "31323334353637383940414243444546474849505152535455565758596061"
                                   "62636465666768697071727374757677787980818283848586878889909192"
                                   "93949596979899";
    size_t n = 1;
    for (uint64_t t = v; t >= 10; t /= 10)
        n++;
    char *e = p + n;
    while (v >= 100) {
        e -= 2;
        memcpy(e, pairs + 2 * (v % 100), 2);
        v /= 100;
    }
    if (v >= 10)
        memcpy(e - 2, pairs + 2 * v, 2);
    else
        e[-1] = (char)('0' + v);
    return p + n;
}

static char *put_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(p, (uint64_t)v);
}

/* 16 lower-case hex digits of h, most significant first, a byte at a time. */
static char *put_hex64(char *p, uint64_t h)
{
    static const char hex2[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int i = 7; i >= 0; i--, h >>= 8)
        memcpy(p + 2 * i, hex2 + 2 * (h & 0xff), 2);
    return p + 16;
}

/* Room for n more bytes, for the put_* writers, then jb_commit; NULL on
 * failure (which sticks in j->err). */
static inline char *jb_room(struct jb *j, size_t n)
{
    if (__builtin_expect(j->b->cap - j->b->len >= n && !j->err, 1))
        return (char *)j->b->data + j->b->len;
    if (j->err)
        return NULL;
    char *p = (char *)atp_buf_reserve(j->b, n);
    if (!p)
        j->err = -ENOMEM;
    return p;
}

static inline void jb_commit(struct jb *j, const char *end)
{
    j->b->len = (size_t)((const uint8_t *)end - j->b->data);
}

static void jb_u64(struct jb *j, uint64_t v)
{
    char *p = jb_room(j, 20);
    if (p)
        jb_commit(j, put_u64(p, v));
}

static void jb_printf(struct jb *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void jb_printf(struct jb *j, const char *fmt, ...)
{
    if (j->err)
        return;
    for (int attempt = 0; attempt < 2; attempt++) {
        size_t room = j->b->cap - j->b->len;
        char *p = j->b->data ? (char *)j->b->data + j->b->len : NULL;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(p, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            j->err = -EINVAL;
            return;
        }
        if ((size_t)n < room) {
            j->b->len += (size_t)n;
            return;
        }
        if (!atp_buf_reserve(j->b, (size_t)n + 1)) {
            j->err = -ENOMEM;
            return;
        }
    }
}

/* A JSON string: quoted, with control characters, quote and backslash
 * escaped; bytes >= 0x80 pass (the input is expected to be UTF-8). */
static void jb_str(struct jb *j, const char *s, size_t n)
{
    char *p = jb_room(j, 6 * n + 2);
    if (p)
        jb_commit(j, put_str(p, s, n));
}

static void jb_slice(struct jb *j, struct atp_slice s)
{
    jb_str(j, s.p, s.len);
}

static void jb_cstr(struct jb *j, const char *s)
{
    jb_str(j, s, strlen(s));
}

/* RFC 3339 in UTC with microseconds: "2025-01-31T12:00:00.123456Z". */
static void jb_time(struct jb *j, uint64_t us)
{
    time_t sec = (time_t)(us / 1000000u);
    struct tm tm;
    gmtime_r(&sec, &tm);
    jb_printf(j, "\"%04d-%02d-%02dT%02d:%02d:%02d.%06uZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
              tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(us % 1000000u));
}

/* --- responses ---------------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    default:
        return status < 500 ? "Client Error" : "Server Error";
    }
}

/* IMF-fixdate (RFC 9110) of a second since the epoch. */
static void format_date(char *buf, size_t len, int64_t sec)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Date header value, cached per second in the context. */
static const char *http_date(struct atp_http_ctx *ctx, uint64_t now_us)
{
    int64_t sec = (int64_t)(now_us / 1000000u);
    if (ctx->date[0] == '\0' || sec != ctx->date_sec) {
        format_date(ctx->date, sizeof(ctx->date), sec);
        ctx->date_sec = sec;
        ctx->date_len = (uint32_t)strlen(ctx->date);
    }
    return ctx->date;
}

/* How the response ends the exchange. */
struct reply {
    bool head;       /* HEAD: headers only */
    bool close;      /* Connection: close, then the caller closes */
    bool keep_alive; /* HTTP/1.0 keep-alive: say so */
};

/*
 * Append status line, headers and body. `extra` holds more header lines,
 * each ending in CRLF (may be NULL). A 304 carries no body and no length.
 */
static int emit(struct atp_http_ctx *ctx, struct atp_buf *out, const struct reply *r, int status,
                const char *ctype, const char *extra, const uint8_t *body, size_t blen,
                uint64_t now_us)
{
    struct jb j = {.b = out};
    size_t start = out->len;
    char buf[40];
    const char *date = buf;
    if (ctx)
        date = http_date(ctx, now_us);
    else
        format_date(buf, sizeof(buf), (int64_t)(now_us / 1000000u));
    if (!atp_buf_reserve(out, 160 + blen + (extra ? strlen(extra) : 0)))
        return -ENOMEM; /* one growth up front, then plain copies */
    jb_lit(&j, "HTTP/1.1 ");
    jb_u64(&j, (uint64_t)status);
    jb_put(&j, " ", 1);
    jb_lit(&j, reason_phrase(status));
    jb_lit(&j, "\r\nServer: atpd\r\nDate: ");
    jb_lit(&j, date);
    jb_put(&j, "\r\n", 2);
    if (status != 304 && status != 204) { /* neither has a body (RFC 9110 8.6) */
        if (ctype) {
            jb_lit(&j, "Content-Type: ");
            jb_lit(&j, ctype);
            jb_put(&j, "\r\n", 2);
        }
        jb_lit(&j, "Content-Length: ");
        jb_u64(&j, blen);
        jb_put(&j, "\r\n", 2);
    }
    if (extra)
        jb_lit(&j, extra);
    if (r->close)
        jb_lit(&j, "Connection: close\r\n");
    else if (r->keep_alive)
        jb_lit(&j, "Connection: keep-alive\r\n");
    jb_put(&j, "\r\n", 2);
    if (status != 304 && status != 204 && !r->head && blen)
        jb_put(&j, body, blen);
    if (j.err) {
        out->len = start;
        return j.err;
    }
    return 0;
}

/* Start composing a body in the context's scratch buffer. */
static struct jb body_begin(struct atp_http_ctx *ctx)
{
    ctx->resp.len = 0;
    return (struct jb){.b = &ctx->resp};
}

static int emit_json(struct atp_http_ctx *ctx, struct atp_buf *out, const struct reply *r,
                     int status, const char *extra, struct jb *j, uint64_t now_us)
{
    if (j->err)
        return j->err;
    return emit(ctx, out, r, status, "application/json", extra, j->b->data, j->b->len, now_us);
}

/* The lower-case status name: the problem's `code` member. */
static void code_name(char *dst, size_t len, int code)
{
    const char *n = atp_error_name(code);
    size_t i = 0;
    for (; n[i] && i + 1 < len; i++)
        dst[i] = (char)(n[i] >= 'A' && n[i] <= 'Z' ? n[i] - 'A' + 'a' : n[i]);
    dst[i] = '\0';
}

/* The members every problem has, without the closing brace. */
static void problem_members(struct jb *j, int code, const char *detail)
{
    char name[32];
    code_name(name, sizeof(name), code);
    jb_printf(j, "{\"type\":\"" PROBLEM_BASE "%s\",\"title\":", atp_error_slug(code));
    jb_cstr(j, atp_strerror(code));
    jb_printf(j, ",\"status\":%d,\"detail\":", atp_error_http(code));
    jb_cstr(j, detail && *detail ? detail : atp_strerror(code));
    jb_printf(j, ",\"code\":\"%s\"", name);
}

static int problem_ex(struct atp_http_ctx *ctx, struct atp_buf *out, const struct reply *r,
                      int code, const char *detail, const char *extra, struct jb *j,
                      uint64_t now_us)
{
    if (j->err)
        return j->err;
    return emit(ctx, out, r, atp_error_http(code), "application/problem+json", extra, j->b->data,
                j->b->len, now_us);
}

static int problem(struct atp_http_ctx *ctx, struct atp_buf *out, const struct reply *r, int code,
                   const char *detail, const char *extra, uint64_t now_us)
{
    struct jb j = body_begin(ctx);
    problem_members(&j, code, detail);
    jb_put(&j, "}", 1);
    return problem_ex(ctx, out, r, code, detail, extra, &j, now_us);
}

int atp_http_error(struct atp_buf *out, int code, const char *detail)
{
    if (code == 0)
        code = ATP_EINTERNAL;
    struct atp_buf body = {0};
    struct jb j = {.b = &body};
    problem_members(&j, code, detail);
    jb_put(&j, "}", 1);
    const char *extra =
        code == ATP_ETOOMANYCONN || code == ATP_EUNAVAILABLE ? "Retry-After: 1\r\n" : NULL;
    struct reply r = {.close = true};
    int rc = j.err ? j.err
                   : emit(NULL, out, &r, atp_error_http(code), "application/problem+json", extra,
                          body.data, body.len, atp_now_us());
    atp_buf_free(&body);
    return rc ? -ENOMEM : 0;
}

int atp_http_timeout_response(struct atp_buf *out)
{
    return atp_http_error(out, ATP_ETIMEDOUT, "the request did not arrive in time");
}

bool atp_http_ready_ingest(void *ingest, char *reason, size_t len)
{
    struct atp_ingest_status s;
    atp_ingest_status(ingest, &s);
    if (s.ready)
        return true;
    if (!s.running)
        snprintf(reason, len, "kafka consumer not running");
    else if (!s.assigned)
        snprintf(reason, len, "kafka consumer has no partition assignment yet");
    else if (s.stale)
        snprintf(reason, len, "kafka: %u stale partitions (offsets lost, awaiting resync)",
                 s.stale);
    else if (s.max_lag < 0)
        snprintf(reason, len, "kafka lag unknown");
    else
        snprintf(reason, len, "kafka lag %lld > %lld", (long long)s.max_lag,
                 (long long)s.lag_threshold);
    return false;
}

void atp_http_ctx_free(struct atp_http_ctx *ctx)
{
    if (!ctx)
        return;
    atp_buf_free(&ctx->body);
    atp_buf_free(&ctx->resp);
    if (ctx->tok)
        json_tokener_free(ctx->tok);
    ctx->tok = NULL;
}

/* --- request parsing ------------------------------------------------------------- */

#define INM_LINES 8 /* If-None-Match header lines kept; with more, no 304 */

enum hdr {
    H_OTHER = 0,
    H_HOST,
    H_CTYPE,
    H_IDEM,
    H_INM,
    H_EXPECT,
};

struct req {
    struct atp_http_ctx *ctx;
    const char *url;
    size_t url_len;
    enum hdr cur; /* header whose value comes next */
    bool in_value;
    struct atp_slice hv[H_EXPECT + 1];
    unsigned hcount[H_EXPECT + 1];
    struct atp_slice inm[INM_LINES]; /* If-None-Match lines: together one list */
    unsigned ninm;
    bool folded; /* a header we read was folded over lines: refused */
    const char *body;
    size_t body_len;
    bool body_copied; /* body lives in ctx->body (chunked pieces) */
    bool headers_done;
    bool complete;
    bool too_large;
    bool oom;
    uint32_t max_body;
};

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct req *q = p->data;
    if (!q->url)
        q->url = at;
    q->url_len = (size_t)(at + len - q->url);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    struct req *q = p->data;
    /* The few headers used, told apart by length first: one compare at most. */
    const char *name = NULL;
    enum hdr id = H_OTHER;
    switch (len) {
    case 4:
        name = "host", id = H_HOST;
        break;
    case 6:
        name = "expect", id = H_EXPECT;
        break;
    case 12:
        name = "content-type", id = H_CTYPE;
        break;
    case 13:
        name = "if-none-match", id = H_INM;
        break;
    case 15:
        name = "idempotency-key", id = H_IDEM;
        break;
    default:
        break;
    }
    q->cur = name && strncasecmp(name, at, len) == 0 ? id : H_OTHER;
    q->in_value = false;
    if (q->cur != H_OTHER)
        q->hcount[q->cur]++;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    struct req *q = p->data;
    if (q->cur == H_OTHER)
        return 0;
    if (q->in_value) {
        q->folded = true; /* obs-fold continuation of a header we use */
        return 0;
    }
    q->in_value = true;
    /* Trailing whitespace is not part of the value. */
    while (len && (at[len - 1] == ' ' || at[len - 1] == '\t'))
        len--;
    q->hv[q->cur] = (struct atp_slice){at, (uint32_t)len};
    if (q->cur == H_INM && q->ninm < INM_LINES)
        q->inm[q->ninm++] = q->hv[H_INM];
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct req *q = p->data;
    q->headers_done = true;
    if (!(p->flags & F_CHUNKED) && (p->flags & F_CONTENTLENGTH) &&
        p->content_length > q->max_body) {
        q->too_large = true;
        return -1;
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    struct req *q = p->data;
    if (q->body_len + len > q->max_body) {
        q->too_large = true;
        return -1;
    }
    if (!q->body) {
        q->body = at;
        q->body_len = len;
        return 0;
    }
    if (!q->body_copied && q->body + q->body_len == at) {
        q->body_len += len;
        return 0;
    }
    /* A chunked body: gather the pieces. */
    struct atp_buf *b = &q->ctx->body;
    if (!q->body_copied) {
        b->len = 0;
        uint8_t *d = atp_buf_reserve(b, q->body_len);
        if (!d) {
            q->oom = true;
            return -1;
        }
        memcpy(d, q->body, q->body_len);
        b->len = q->body_len;
        q->body_copied = true;
    }
    uint8_t *d = atp_buf_reserve(b, len);
    if (!d) {
        q->oom = true;
        return -1;
    }
    memcpy(d, at, len);
    b->len += len;
    q->body = (const char *)b->data;
    q->body_len = b->len;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct req *q = p->data;
    q->complete = true;
    http_parser_pause(p, 1); /* one request per call; the next stays in `in` */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/*
 * Offset just past the blank line that ends the header block, or 0 if it
 * is not within the first `limit` bytes. Lines may end in CRLF or LF (the
 * parser accepts both).
 */
static size_t header_end(const uint8_t *in, size_t len, size_t limit)
{
    size_t n = len < limit ? len : limit;
    const uint8_t *p = in, *end = in + n;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        p++;
        if (p < end && *p == '\n')
            return (size_t)(p + 1 - in);
        if (p + 1 < end && p[0] == '\r' && p[1] == '\n')
            return (size_t)(p + 2 - in);
    }
    return 0;
}

/* --- URL pieces --------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decode s[0..n) into dst (cap bytes). Returns the decoded length,
 * or -1 for a bad escape or an overflow. `plus` turns '+' into a space
 * (query strings).
 */
static ssize_t pct_decode(const char *s, size_t n, char *dst, size_t cap, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int h = hexval((unsigned char)s[i + 1]), l = hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0)
                return -1;
            c = (char)(h * 16 + l);
            i += 2;
        } else if (plus && c == '+') {
            c = ' ';
        }
        if (o >= cap)
            return -1;
        dst[o++] = c;
    }
    return (ssize_t)o;
}

/* The next key=value pair of the query [*p, end): its key and raw value (empty
 * without '='), and *p moved past it; false when none is left. */
static inline bool query_next(const char **p, const char *end, struct atp_slice *key,
                              struct atp_slice *val)
{
    if (*p >= end)
        return false;
    const char *amp = memchr(*p, '&', (size_t)(end - *p));
    const char *stop = amp ? amp : end;
    const char *eq = memchr(*p, '=', (size_t)(stop - *p));
    const char *kend = eq ? eq : stop;
    const char *v = eq ? eq + 1 : stop;
    *key = (struct atp_slice){*p, (uint32_t)(kend - *p)};
    *val = (struct atp_slice){v, (uint32_t)(stop - v)};
    *p = stop + 1;
    return true;
}

static inline bool key_is(struct atp_slice k, const char *name, size_t n)
{
    return k.len == n && memcmp(k.p, name, n) == 0;
}

/* A query parameter's decoded value, the last occurrence's; false when
 * absent, true with *ret_bad set when a value is not valid encoding. */
static bool query_get(const char *q, size_t qlen, const char *key, char *dst, size_t cap,
                      struct atp_slice *ret, bool *ret_bad)
{
    size_t klen = strlen(key);
    const char *p = q;
    struct atp_slice k, v;
    bool found = false;
    while (query_next(&p, q + qlen, &k, &v)) {
        if (key_is(k, key, klen)) {
            ssize_t n = pct_decode(v.p, v.len, dst, cap, true);
            if (n < 0) {
                *ret_bad = true;
                return true;
            }
            *ret = (struct atp_slice){dst, (uint32_t)n};
            found = true; /* the last occurrence wins */
        }
    }
    return found;
}

/*
 * A path segment or query value as pct_decode would give it, within
 * PATH_MAX_SEG bytes: the raw bytes themselves when they hold nothing to
 * decode (no copy), else decoded into buf (PATH_MAX_SEG bytes). false: a
 * bad escape or too long.
 */
static bool seg_value(const char *v, size_t n, bool plus, char *buf, struct atp_slice *ret)
{
    size_t i = 0;
    char other = plus ? '+' : '%';
    if (n <= PATH_MAX_SEG)
        while (i < n && v[i] != '%' && v[i] != other)
            i++;
    if (i == n) {
        *ret = (struct atp_slice){v, (uint32_t)n};
        return true;
    }
    ssize_t d = pct_decode(v, n, buf, PATH_MAX_SEG, plus);
    if (d < 0)
        return false;
    *ret = (struct atp_slice){buf, (uint32_t)d};
    return true;
}

/* One query parameter a route reads, and what the query held for it. */
struct qparam {
    const char *name;
    size_t name_len;
    char *buf;            /* PATH_MAX_SEG bytes, for a value with escapes */
    struct atp_slice val; /* decoded (or the raw bytes, with nothing to decode) */
    bool has;
};
/* A qparam for the literal name n, decoded into buffer b. */
#define QPARAM(n, b)                                                                               \
    {                                                                                              \
        .name = (n), .name_len = sizeof(n) - 1, .buf = (b)                                         \
    }

/* The parameters in `want`, in one pass, with query_get's rules: the last
 * occurrence of each wins, others are ignored, a bad value is an error
 * (false). */
static bool query_params(const char *q, size_t qlen, struct qparam *want, size_t n)
{
    const char *p = q;
    struct atp_slice k, v;
    while (query_next(&p, q + qlen, &k, &v)) {
        for (size_t i = 0; i < n; i++) {
            if (!key_is(k, want[i].name, want[i].name_len))
                continue;
            if (!seg_value(v.p, v.len, true, want[i].buf, &want[i].val))
                return false;
            want[i].has = true;
            break;
        }
    }
    return true;
}

/* --- JSON bodies ------------------------------------------------------------------ */

/* Parse the whole body as one JSON value; NULL with a detail on failure. */
static struct json_object *parse_json(struct atp_http_ctx *ctx, const char *body, size_t len,
                                      char *detail, size_t dlen)
{
    if (len == 0) {
        snprintf(detail, dlen, "a JSON body is required");
        return NULL;
    }
    if (len > INT32_MAX) {
        snprintf(detail, dlen, "body too large");
        return NULL;
    }
    if (!ctx->tok && !(ctx->tok = json_tokener_new_ex(JSON_DEPTH))) {
        snprintf(detail, dlen, "out of memory");
        return NULL;
    }
    /* JSON text is UTF-8 (RFC 8259), well-formed as RFC 3629 says: json-c's
     * own check lets overlong forms, surrogates and bytes over F4 through. */
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)body[i] < 0x80)
            continue;
        size_t k = utf8_seq((const unsigned char *)body + i, len - i);
        if (k == 0) {
            snprintf(detail, dlen, "body is not valid JSON: not UTF-8 at byte %zu", i);
            return NULL;
        }
        i += k - 1;
    }
    struct json_tokener *tok = ctx->tok;
    json_tokener_reset(tok);
    struct json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    if (!o && e == json_tokener_continue)
        snprintf(detail, dlen, "body is not valid JSON: unexpected end");
    else if (!o)
        snprintf(detail, dlen, "body is not valid JSON: %s", json_tokener_error_desc(e));
    if (!o)
        return NULL;
    for (size_t i = json_tokener_get_parse_end(tok); i < len; i++) {
        char c = body[i];
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
            snprintf(detail, dlen, "body is not valid JSON: data after the value");
            json_object_put(o);
            return NULL;
        }
    }
    return o;
}

/* Typed members. Each returns 0, 1 when absent (or null), or ATP_EMALFORMED
 * with a detail when the type is wrong. */
static int member_str(struct json_object *o, const char *key, struct atp_slice *ret, char *detail,
                      size_t dlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || v == NULL)
        return 1;
    if (!json_object_is_type(v, json_type_string)) {
        snprintf(detail, dlen, "'%s' must be a string", key);
        return ATP_EMALFORMED;
    }
    *ret = (struct atp_slice){json_object_get_string(v), (uint32_t)json_object_get_string_len(v)};
    return 0;
}

static int member_int(struct json_object *o, const char *key, int64_t *ret, char *detail,
                      size_t dlen)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || v == NULL)
        return 1;
    if (!json_object_is_type(v, json_type_int)) {
        snprintf(detail, dlen, "'%s' must be an integer", key);
        return ATP_EMALFORMED;
    }
    errno = 0;
    int64_t x = json_object_get_int64(v);
    /* Beyond int64 (json-c keeps it as uint64 and clamps): out of range. */
    if (x == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX)
        return ATP_ERANGE;
    *ret = x;
    return 0;
}

/* --- requests ------------------------------------------------------------------------- */

struct call {
    struct atp_http_ctx *ctx;
    struct req *q;
    http_parser *p;
    struct atp_buf *out;
    struct reply r;
    uint64_t now_us;
    int op;   /* enum atp_metrics_op, for the metrics */
    int code; /* the status recorded in the metrics */
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
};

static struct atp_store *store_of(const struct call *c)
{
    return c->ctx->cmd->store;
}

static int fail(struct call *c, int code, const char *detail)
{
    c->code = code;
    const char *extra = code == ATP_EUNAVAILABLE || code == ATP_EREADONLY || code == ATP_EFULL
                            ? "Retry-After: 1\r\n"
                            : NULL;
    return problem(c->ctx, c->out, &c->r, code, detail, extra, c->now_us);
}

static int refused(const struct call *c)
{
    const volatile int *rw = c->ctx->cmd->refuse_writes;
    return rw ? *rw : 0;
}

/*
 * Every route checks its method first and sends any other here, OPTIONS
 * included: OPTIONS is answered 204 with the route's own methods, anything
 * else 405. (An unknown path is a 404 whatever the method.)
 */
static int method_not_allowed(struct call *c, const char *allow)
{
    char extra[96], detail[96];
    if (c->p->method == HTTP_OPTIONS) {
        c->op = ATP_MOP_OTHER; /* not the route's operation in the metrics */
        snprintf(extra, sizeof(extra), "Allow: %s, OPTIONS\r\n", allow);
        return emit(c->ctx, c->out, &c->r, 204, NULL, extra, NULL, 0, c->now_us);
    }
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    snprintf(detail, sizeof(detail), "%s is not allowed here; allowed: %s",
             http_method_str((enum http_method)c->p->method), allow);
    c->code = ATP_EMETHOD;
    return problem(c->ctx, c->out, &c->r, ATP_EMETHOD, detail, extra, c->now_us);
}

static bool is_get(const struct call *c)
{
    return c->p->method == HTTP_GET || c->p->method == HTTP_HEAD;
}

/* application/json or application/<anything>+json, parameters allowed. */
static bool json_media_type(struct atp_slice ct)
{
    size_t n = 0;
    while (n < ct.len && ct.p[n] != ';' && ct.p[n] != ' ' && ct.p[n] != '\t')
        n++;
    if (n == 16 && strncasecmp(ct.p, "application/json", 16) == 0)
        return true;
    return n > 17 && strncasecmp(ct.p, "application/", 12) == 0 &&
           strncasecmp(ct.p + n - 5, "+json", 5) == 0;
}

/* The body as JSON, after the media type check. NULL: a problem was sent. */
static struct json_object *json_body(struct call *c, int *ret_rc)
{
    char detail[160];
    if (c->q->body_len > 0 && !json_media_type(c->q->hv[H_CTYPE])) {
        *ret_rc = fail(c, ATP_EMEDIATYPE,
                       c->q->hv[H_CTYPE].len ? "Content-Type must be application/json"
                                             : "Content-Type is missing; send application/json");
        return NULL;
    }
    struct json_object *o = parse_json(c->ctx, c->q->body, c->q->body_len, detail, sizeof(detail));
    if (!o) {
        *ret_rc = fail(c, ATP_EMALFORMED, detail);
        return NULL;
    }
    if (!json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        *ret_rc = fail(c, ATP_EMALFORMED, "the body must be a JSON object");
        return NULL;
    }
    return o;
}

/* --- availability ------------------------------------------------------------------------ */

static void breakdown_members(struct jb *j, const struct atp_breakdown *b)
{
    /* One reservation: 63 bytes of names, five numbers of at most 21. */
    char *p = jb_room(j, 63 + 5 * 21);
    if (!p)
        return;
    p = PUT_LIT(p, ",\"available\":");
    p = put_i64(p, b->atp);
    p = PUT_LIT(p, ",\"onHand\":");
    p = put_i64(p, b->on_hand);
    p = PUT_LIT(p, ",\"reserved\":");
    p = put_i64(p, b->reserved);
    p = PUT_LIT(p, ",\"allocated\":");
    p = put_i64(p, b->allocated);
    p = PUT_LIT(p, ",\"safetyStock\":");
    p = put_i64(p, b->safety);
    jb_commit(j, p);
}

/* Does an If-None-Match list match this entity tag (weak comparison)? */
static bool etag_in(struct atp_slice inm, const char *etag)
{
    size_t elen = strlen(etag);
    const char *p = inm.p, *end = inm.p + inm.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p == end)
            break;
        if (*p == '*')
            return true;
        if (end - p >= 2 && p[0] == 'W' && p[1] == '/')
            p += 2;
        const char *q = p;
        if (q < end && *q == '"') {
            q = memchr(q + 1, '"', (size_t)(end - q - 1));
            if (!q)
                return false;
            q++;
        } else {
            while (q < end && *q != ',')
                q++;
        }
        if ((size_t)(q - p) == elen && memcmp(p, etag, elen) == 0)
            return true;
        p = q;
    }
    return false;
}

/*
 * The same over every If-None-Match line of the request, which RFC 9110 5.3
 * reads as one comma-separated list. Beyond INM_LINES lines: no match (a
 * 200 is always a correct answer, a 304 only when sure).
 */
static bool etag_matches(const struct req *q, const char *etag)
{
    if (q->hcount[H_INM] > INM_LINES)
        return false;
    for (unsigned i = 0; i < q->ninm; i++)
        if (etag_in(q->inm[i], etag))
            return true;
    return false;
}

/* --- the lookup's 200, written directly ------------------------------------------ */

/*
 * The 200 of a lookup without If-None-Match: the headers emit() would write
 * for it, stored in one reservation behind a status line and headers cached
 * per Date second, then the body. body and etag are the ones the general
 * path would send. 1: not done (the output could not grow); the caller
 * takes the general path, which then reports what failed.
 */
static int availability_fast(struct call *c, const uint8_t *body, size_t blen, uint64_t etag)
{
    struct atp_http_ctx *ctx = c->ctx;
    /* Status line, Server, Date, Content-Type and "Content-Length: ": the
     * same for every such response within a second. */
    http_date(ctx, c->now_us);
    if (ctx->head200_sec != ctx->date_sec || ctx->head200_len == 0) {
        char *e = PUT_LIT(ctx->head200, "HTTP/1.1 200 OK\r\nServer: atpd\r\nDate: ");
        memcpy(e, ctx->date, ctx->date_len);
        e += ctx->date_len;
        e = PUT_LIT(e, "\r\nContent-Type: application/json\r\nContent-Length: ");
        ctx->head200_len = (uint32_t)(e - ctx->head200);
        ctx->head200_sec = ctx->date_sec;
    }
    char *h = (char *)atp_buf_reserve(c->out, 128 + ctx->head200_len + blen);
    if (!h)
        return 1;
    memcpy(h, ctx->head200, ctx->head200_len);
    char *o = put_u64(h + ctx->head200_len, blen);
    o = PUT_LIT(o, "\r\nETag: \"");
    o = put_hex64(o, etag);
    o = PUT_LIT(o, "\"\r\nCache-Control: no-cache\r\n");
    if (c->r.close)
        o = PUT_LIT(o, "Connection: close\r\n");
    else if (c->r.keep_alive)
        o = PUT_LIT(o, "Connection: keep-alive\r\n");
    o = PUT_LIT(o, "\r\n");
    if (!c->r.head) {
        memcpy(o, body, blen);
        o += blen;
    }
    c->out->len += (size_t)(o - h);
    return 0;
}

static int op_availability(struct call *c, const char *sku_raw, size_t sku_len)
{
    c->op = ATP_MOP_GET;
    if (!is_get(c))
        return method_not_allowed(c, "GET, HEAD");
    char skub[PATH_MAX_SEG], chb[PATH_MAX_SEG], locb[PATH_MAX_SEG];
    struct atp_slice sku, ch = {0}, loc = {0};
    if (!seg_value(sku_raw, sku_len, false, skub, &sku))
        return fail(c, ATP_EINVAL_SKU, "the sku in the path is not valid percent-encoding");
    struct qparam qp[] = {QPARAM("channel", chb), QPARAM("location", locb)};
    if (!query_params(c->query, c->query_len, qp, 2))
        return fail(c, ATP_EMALFORMED, "a query parameter is not valid percent-encoding");
    ch = qp[0].val;
    loc = qp[1].val;
    bool has_ch = qp[0].has, has_loc = qp[1].has;
    if (!has_ch || ch.len == 0)
        return fail(c, ATP_ENOCHANNEL, "the 'channel' query parameter is required");
    int rc = atp_validate_sku(sku);
    if (rc)
        return fail(c, rc, NULL);
    if (has_loc && (rc = atp_validate_loc(loc)))
        return fail(c, rc, NULL);
    uint32_t channel;
    if ((rc = atp_store_channel_find(store_of(c), ch, &channel)))
        return fail(c, rc, NULL);
    struct atp_breakdown b;
    rc = has_loc ? atp_store_get(store_of(c), sku, loc, channel, &b)
                 : atp_store_get_network(store_of(c), sku, channel, &b);
    if (rc)
        return fail(c, rc, NULL);
    struct jb j = body_begin(c->ctx);
    jb_lit(&j, "{\"sku\":");
    jb_slice(&j, sku);
    jb_lit(&j, ",\"location\":");
    if (has_loc)
        jb_slice(&j, loc);
    else
        jb_lit(&j, "null");
    jb_lit(&j, ",\"channel\":");
    jb_slice(&j, atp_store_channel_name(store_of(c), channel));
    breakdown_members(&j, &b);
    jb_put(&j, "}", 1);
    if (j.err)
        return j.err;
    /* A strong ETag: a hash of the exact representation. */
    uint64_t h = XXH3_64bits(j.b->data, j.b->len);
    if (!c->ctx->no_fast_path && c->q->hcount[H_INM] == 0 &&
        availability_fast(c, j.b->data, j.b->len, h) == 0)
        return 0;
    static const char tail[] = "\"\r\nCache-Control: no-cache\r\n";
    char extra[64] = "ETag: \"";
    memcpy(put_hex64(extra + 7, h), tail, sizeof(tail)); /* with its NUL */
    char etag[19];
    memcpy(etag, extra + 6, 18); /* "<16 hex digits>" with the quotes */
    etag[18] = '\0';
    if (c->q->hcount[H_INM] && etag_matches(c->q, etag))
        return emit(c->ctx, c->out, &c->r, 304, NULL, extra, NULL, 0, c->now_us);
    return emit_json(c->ctx, c->out, &c->r, 200, extra, &j, c->now_us);
}

static uint32_t max_batch(const struct atp_http_ctx *ctx)
{
    if (ctx->max_batch)
        return ctx->max_batch;
    return ctx->cmd->max_keys ? ctx->cmd->max_keys : ATP_HTTP_DEFAULT_BATCH;
}

/* One batchGet item: its JSON entry, with its own status. */
static void batch_item(struct call *c, struct jb *j, struct json_object *it, struct atp_slice dch)
{
    char detail[96];
    struct atp_slice sku = {0}, loc = {0}, ch = dch;
    int rc = 0, has_sku = 1, has_loc = 1, has_ch = 1;
    if (!json_object_is_type(it, json_type_object)) {
        rc = ATP_EMALFORMED;
        snprintf(detail, sizeof(detail), "each item must be an object");
    } else {
        has_sku = member_str(it, "sku", &sku, detail, sizeof(detail));
        has_loc = member_str(it, "location", &loc, detail, sizeof(detail));
        has_ch = member_str(it, "channel", &ch, detail, sizeof(detail));
        if (has_ch == 1)
            ch = dch;
        if (has_sku < 0 || has_loc < 0 || has_ch < 0)
            rc = ATP_EMALFORMED;
        else if (has_sku == 1) {
            rc = ATP_EINVAL_SKU;
            snprintf(detail, sizeof(detail), "'sku' is required");
        } else if (ch.len == 0) {
            rc = ATP_ENOCHANNEL;
            snprintf(detail, sizeof(detail), "no 'channel' for this item or the batch");
        }
    }
    struct atp_breakdown b;
    uint32_t channel = 0;
    if (rc == 0) {
        detail[0] = '\0';
        rc = atp_validate_sku(sku);
        if (!rc && has_loc == 0)
            rc = atp_validate_loc(loc);
        if (!rc)
            rc = atp_store_channel_find(store_of(c), ch, &channel);
        if (!rc)
            rc = has_loc == 0 ? atp_store_get(store_of(c), sku, loc, channel, &b)
                              : atp_store_get_network(store_of(c), sku, channel, &b);
    }
    jb_lit(j, "{\"sku\":");
    if (has_sku == 0)
        jb_slice(j, sku);
    else
        jb_lit(j, "null");
    jb_lit(j, ",\"location\":");
    if (has_loc == 0)
        jb_slice(j, loc);
    else
        jb_lit(j, "null");
    jb_lit(j, ",\"channel\":");
    if (ch.len)
        jb_slice(j, ch);
    else
        jb_lit(j, "null");
    if (rc == 0) {
        jb_lit(j, ",\"status\":200");
        breakdown_members(j, &b);
        jb_put(j, "}", 1);
        return;
    }
    char name[32];
    code_name(name, sizeof(name), rc);
    jb_printf(j, ",\"status\":%d,\"code\":\"%s\",\"type\":\"" PROBLEM_BASE "%s\",\"title\":",
              atp_error_http(rc), name, atp_error_slug(rc));
    jb_cstr(j, atp_strerror(rc));
    if (detail[0]) {
        jb_lit(j, ",\"detail\":");
        jb_cstr(j, detail);
    }
    jb_put(j, "}", 1);
}

static int op_batch(struct call *c)
{
    c->op = ATP_MOP_MGET;
    if (c->p->method != HTTP_POST)
        return method_not_allowed(c, "POST");
    int rc = 0;
    struct json_object *o = json_body(c, &rc);
    if (!o)
        return rc;
    char detail[128];
    struct atp_slice dch = {0};
    struct json_object *items;
    if (member_str(o, "channel", &dch, detail, sizeof(detail)) < 0) {
        rc = fail(c, ATP_EMALFORMED, detail);
    } else if (!json_object_object_get_ex(o, "items", &items) ||
               !json_object_is_type(items, json_type_array)) {
        rc = fail(c, ATP_EMALFORMED, "'items' must be an array");
    } else {
        size_t n = json_object_array_length(items);
        if (n == 0) {
            rc = fail(c, ATP_EINVAL, "'items' is empty");
        } else if (n > max_batch(c->ctx)) {
            snprintf(detail, sizeof(detail), "%zu items; at most %u per batch", n,
                     max_batch(c->ctx));
            rc = fail(c, ATP_ETOOMANY, detail);
        } else {
            struct jb j = body_begin(c->ctx);
            jb_lit(&j, "{\"results\":[");
            for (size_t i = 0; i < n; i++) {
                if (i)
                    jb_put(&j, ",", 1);
                batch_item(c, &j, json_object_array_get_idx(items, i), dch);
            }
            jb_lit(&j, "]}");
            rc = emit_json(c->ctx, c->out, &c->r, 200, NULL, &j, c->now_us);
        }
    }
    json_object_put(o);
    return rc;
}

/* --- change feed ------------------------------------------------------------------------- */

/* Decimal digits only (at least one); past UINT64_MAX: *ret is UINT64_MAX
 * and *ret_over is set. */
static bool parse_decimal(struct atp_slice s, uint64_t *ret, bool *ret_over)
{
    uint64_t v = 0;
    bool over = false;
    if (s.len == 0)
        return false;
    for (uint32_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        unsigned d = (unsigned)(s.p[i] - '0');
        if (over || v > (UINT64_MAX - d) / 10) {
            over = true;
            v = UINT64_MAX;
        } else {
            v = v * 10 + d;
        }
    }
    *ret = v;
    *ret_over = over;
    return true;
}

/*
 * GET /v1/changes?channel=&since=&limit=&scope=&wait=: the store's change
 * feed (store.h, "change feed"). Without `since`: the cursor now and no
 * changes, the client's starting point. With it: up to `limit` (by default,
 * and at most, the batch limit or ATP_CHANGES_MAX if lower) items whose ATP
 * changed after it, each with its ATP now, and the cursor to ask from next;
 * `scope=network` gives one entry per sku with its network ATP and no
 * `location` member. The cursor is a decimal string (a u64 is beyond the
 * integers every JSON client keeps exactly). Answers depend on the moment,
 * so no ETag and no caching.
 *
 * `wait` (milliseconds, a u32): with `since`, an answer that would report
 * nothing is held, as the binary protocol's CHANGES with WAIT is (the feed
 * call of both is atp_cmd_changes): ATP_CMD_HELD, with nothing appended and
 * nothing recorded, and the caller hands the same bytes again later. They
 * are parsed afresh each time; what the held request needs between calls
 * (its deadline, where its last look ended) is in the connection's struct
 * atp_wait, not here. HEAD is held like GET: its headers are those of the
 * GET's answer, which is only known once the wait ends. Without `since`,
 * with an error, or with ctx->cmd->wait NULL it is answered at once.
 */
static int changes(struct call *c)
{
    char chb[PATH_MAX_SEG], sinceb[PATH_MAX_SEG], limitb[PATH_MAX_SEG], scopeb[PATH_MAX_SEG],
        waitb[PATH_MAX_SEG];
    struct qparam qp[] = {
        QPARAM("channel", chb),  QPARAM("since", sinceb), QPARAM("limit", limitb),
        QPARAM("scope", scopeb), QPARAM("wait", waitb),
    };
    if (!query_params(c->query, c->query_len, qp, sizeof(qp) / sizeof(qp[0])))
        return fail(c, ATP_EMALFORMED, "a query parameter is not valid percent-encoding");
    const struct qparam *ch = &qp[0], *since = &qp[1], *limit = &qp[2], *scope = &qp[3],
                        *wait = &qp[4];
    if (!ch->has || ch->val.len == 0)
        return fail(c, ATP_ENOCHANNEL, "the 'channel' query parameter is required");
    uint32_t flags = 0;
    if (scope->has) {
        if (scope->val.len == 7 && memcmp(scope->val.p, "network", 7) == 0)
            flags = ATP_CHANGES_NETWORK;
        else if (!(scope->val.len == 4 && memcmp(scope->val.p, "item", 4) == 0))
            return fail(c, ATP_EINVAL, "'scope' must be item or network");
    }
    /* As the binary protocol's CHANGES: at most max-keys, and the store's
     * most; that is also the default. */
    uint32_t bound = max_batch(c->ctx) < ATP_CHANGES_MAX ? max_batch(c->ctx) : ATP_CHANGES_MAX;
    uint64_t max = bound, cursor = 0;
    bool over;
    char detail[96];
    if (limit->has) {
        if (!parse_decimal(limit->val, &max, &over) || max == 0) {
            snprintf(detail, sizeof(detail), "'limit' must be a whole number from 1 to %u", bound);
            return fail(c, ATP_EINVAL, detail);
        }
        if (max > bound) {
            snprintf(detail, sizeof(detail), "'limit' is over %u, the most changes per call",
                     bound);
            return fail(c, ATP_ETOOMANY, detail);
        }
    }
    if (since->has && (!parse_decimal(since->val, &cursor, &over) || over))
        return fail(c, ATP_EINVAL, "'since' must be a cursor as this server gave it (decimal)");
    uint64_t wait_ms = 0;
    if (wait->has && (!parse_decimal(wait->val, &wait_ms, &over) || wait_ms > UINT32_MAX))
        return fail(c, ATP_EINVAL, "'wait' must be a whole number of milliseconds, 0 to 2^32-1");
    uint32_t channel;
    int rc = atp_store_channel_find(store_of(c), ch->val, &channel);
    if (rc)
        return fail(c, rc, NULL);
    /* 40 bytes a change: 40 KB of stack at most, on threads with megabytes. */
    struct atp_change chg[ATP_CHANGES_MAX];
    uint32_t n = 0;
    bool more = false;
    uint64_t next = 0;
    /* Cursor 0 asks atp_cmd_changes for the position now: that is a request
     * without `since`. `since=0` is no cursor this server gives. */
    if (since->has && cursor == 0)
        rc = ATP_ECURSOR;
    else
        rc = atp_cmd_changes(c->ctx->cmd, channel, cursor, flags, (uint32_t)max, (uint32_t)wait_ms,
                             c->now_us, chg, &n, &next, &more);
    if (rc == ATP_CMD_HELD)
        return rc;
    if (rc == ATP_ECURSOR)
        return fail(c, rc,
                    "this cursor expired or is not from this instance: take a new cursor (GET "
                    "/v1/changes without 'since'), read everything again (POST "
                    "/v1/availability:batchGet), then follow the new cursor");
    if (rc)
        return fail(c, rc, NULL);
    struct jb j = body_begin(c->ctx);
    jb_lit(&j, "{\"channel\":");
    jb_slice(&j, atp_store_channel_name(store_of(c), channel));
    jb_lit(&j, ",\"cursor\":\"");
    jb_u64(&j, next);
    jb_lit(&j, more ? "\",\"more\":true,\"changes\":[" : "\",\"more\":false,\"changes\":[");
    for (uint32_t i = 0; i < n; i++) {
        jb_lit(&j, i ? ",{\"sku\":" : "{\"sku\":");
        jb_slice(&j, chg[i].sku);
        if (!(flags & ATP_CHANGES_NETWORK)) {
            jb_lit(&j, ",\"location\":");
            jb_slice(&j, chg[i].loc);
        }
        jb_lit(&j, ",\"available\":");
        char *p = jb_room(&j, 21);
        if (p)
            jb_commit(&j, put_i64(p, chg[i].atp));
        jb_put(&j, "}", 1);
    }
    jb_lit(&j, "]}");
    return emit_json(c->ctx, c->out, &c->r, 200, "Cache-Control: no-store\r\n", &j, c->now_us);
}

static int op_changes(struct call *c)
{
    c->op = ATP_MOP_CHANGES;
    return is_get(c) ? changes(c) : method_not_allowed(c, "GET, HEAD");
}

/* --- reservations ------------------------------------------------------------------------- */

static void reservation_json(struct jb *j, struct atp_store *store, const struct atp_reservation *r)
{
    jb_printf(j, "{\"id\":\"%" PRIu64 "\",\"idempotencyKey\":", r->id);
    jb_str(j, r->key, r->key_len);
    jb_lit(j, ",\"state\":");
    jb_cstr(j, atp_res_state_name(r->state));
    jb_lit(j, ",\"channel\":");
    jb_slice(j, atp_store_channel_name(store, r->channel));
    jb_lit(j, ",\"createdAt\":");
    jb_time(j, r->created_us);
    jb_lit(j, ",\"expiresAt\":");
    if (r->state == ATP_RES_HELD || r->state == ATP_RES_EXPIRED)
        jb_time(j, r->expires_us);
    else
        jb_lit(j, "null");
    jb_printf(j, ",\"ttlMs\":%" PRIu64 ",\"lines\":[", r->ttl_ms);
    for (uint32_t i = 0; i < r->nlines; i++) {
        const struct atp_res_line *l = &r->lines[i];
        jb_lit(j, i ? ",{\"sku\":" : "{\"sku\":");
        jb_slice(j, l->sku);
        jb_lit(j, ",\"location\":");
        jb_slice(j, l->loc);
        jb_printf(j, ",\"qty\":%" PRId64 ",\"anyLocation\":%s,\"fulfilled\":%s}", l->qty,
                  l->any ? "true" : "false", l->fulfilled ? "true" : "false");
    }
    jb_lit(j, "]}");
}

static int emit_reservation(struct call *c, int status, const struct atp_reservation *r,
                            bool replayed)
{
    struct jb j = body_begin(c->ctx);
    reservation_json(&j, store_of(c), r);
    char extra[128];
    int n = snprintf(extra, sizeof(extra), "Cache-Control: no-store\r\n");
    if (status == 201)
        n += snprintf(extra + n, sizeof(extra) - (size_t)n,
                      "Location: /v1/reservations/%" PRIu64 "\r\n", r->id);
    if (replayed)
        snprintf(extra + n, sizeof(extra) - (size_t)n, "Idempotent-Replayed: true\r\n");
    return emit_json(c->ctx, c->out, &c->r, status, extra, &j, c->now_us);
}

/* Lines of a reserve request: slices point into the JSON object. */
static int parse_lines(struct json_object *arr, struct atp_line_req *lines, uint32_t max,
                       uint32_t *ret_n, char *detail, size_t dlen)
{
    size_t n = json_object_array_length(arr);
    if (n == 0) {
        snprintf(detail, dlen, "'lines' is empty");
        return ATP_EINVAL;
    }
    if (n > max) {
        snprintf(detail, dlen, "%zu lines; at most %u per reservation", n, max);
        return ATP_ETOOMANY;
    }
    for (size_t i = 0; i < n; i++) {
        struct json_object *l = json_object_array_get_idx(arr, i);
        char sub[96];
        if (!json_object_is_type(l, json_type_object)) {
            snprintf(detail, dlen, "lines[%zu] must be an object", i);
            return ATP_EMALFORMED;
        }
        struct atp_slice sku = {0}, loc = {0};
        int64_t qty = 0;
        int a = member_str(l, "sku", &sku, sub, sizeof(sub));
        int b = member_str(l, "location", &loc, sub, sizeof(sub));
        int q = member_int(l, "qty", &qty, sub, sizeof(sub));
        if (a < 0 || b < 0 || q < 0) {
            snprintf(detail, dlen, "lines[%zu]: %s", i, q == ATP_ERANGE ? "qty out of range" : sub);
            return q == ATP_ERANGE ? ATP_ERANGE : ATP_EMALFORMED;
        }
        if (a == 1) {
            snprintf(detail, dlen, "lines[%zu]: 'sku' is required", i);
            return ATP_EINVAL_SKU;
        }
        if (q == 1) {
            snprintf(detail, dlen, "lines[%zu]: 'qty' is required", i);
            return ATP_EQTY;
        }
        /* Absent, null or "any": the server picks the location. */
        if (b == 1 || (loc.len == 3 && memcmp(loc.p, "any", 3) == 0))
            loc = (struct atp_slice){"", 0};
        else if (loc.len == 0) {
            snprintf(detail, dlen, "lines[%zu]: 'location' is empty (omit it for any)", i);
            return ATP_EINVAL_LOC;
        }
        lines[i] = (struct atp_line_req){.sku = sku, .loc = loc, .qty = qty};
    }
    *ret_n = (uint32_t)n;
    return 0;
}

static int insufficient(struct call *c, const struct atp_line_req *lines, uint32_t n,
                        const struct atp_shortfall *sf)
{
    c->code = ATP_EINSUFFICIENT;
    struct jb j = body_begin(c->ctx);
    char detail[96];
    uint32_t shortn = 0;
    for (uint32_t i = 0; i < n; i++)
        shortn += sf[i].available < sf[i].requested;
    snprintf(detail, sizeof(detail), "%u of %u lines cannot be satisfied; nothing was reserved",
             shortn, n);
    problem_members(&j, ATP_EINSUFFICIENT, detail);
    jb_lit(&j, ",\"shortfalls\":[");
    bool first = true;
    for (uint32_t i = 0; i < n; i++) {
        if (sf[i].available >= sf[i].requested)
            continue;
        jb_printf(&j, "%s{\"line\":%u,\"sku\":", first ? "" : ",", i);
        jb_slice(&j, lines[i].sku);
        jb_lit(&j, ",\"location\":");
        if (lines[i].loc.len)
            jb_slice(&j, lines[i].loc);
        else
            jb_lit(&j, "null");
        jb_printf(&j, ",\"requested\":%" PRId64 ",\"available\":%" PRId64 "}", sf[i].requested,
                  sf[i].available < 0 ? 0 : sf[i].available);
        first = false;
    }
    jb_lit(&j, "]}");
    return problem_ex(c->ctx, c->out, &c->r, ATP_EINSUFFICIENT, detail, NULL, &j, c->now_us);
}

static uint32_t max_lines(const struct atp_http_ctx *ctx)
{
    uint32_t v = ctx->cmd->max_lines ? ctx->cmd->max_lines : ATP_MAX_LINES;
    return v > ATP_MAX_LINES ? ATP_MAX_LINES : v;
}

static int op_reserve(struct call *c)
{
    c->op = ATP_MOP_RESERVE;
    struct atp_slice key = c->q->hv[H_IDEM];
    if (c->q->hcount[H_IDEM] == 0)
        return fail(c, ATP_EKEY, "the Idempotency-Key header is required");
    if (c->q->hcount[H_IDEM] > 1)
        return fail(c, ATP_EKEY, "one Idempotency-Key header, not several");
    /* Structured-header form "key" is accepted too: quotes stripped. */
    if (key.len >= 2 && key.p[0] == '"' && key.p[key.len - 1] == '"')
        key = (struct atp_slice){key.p + 1, key.len - 2};
    int rc = 0;
    struct json_object *o = json_body(c, &rc);
    if (!o)
        return rc;
    char detail[160] = "";
    struct atp_slice ch = {0};
    int64_t ttl = ATP_HTTP_DEFAULT_TTL_MS;
    struct json_object *arr;
    struct atp_line_req lines[ATP_MAX_LINES];
    struct atp_reserve_req sr = {.key = key, .lines = lines};
    int has;
    if ((has = member_str(o, "channel", &ch, detail, sizeof(detail))) != 0) {
        rc = has < 0 ? has : ATP_ENOCHANNEL;
        if (has == 1)
            snprintf(detail, sizeof(detail), "'channel' is required");
    } else if ((has = member_int(o, "ttlMs", &ttl, detail, sizeof(detail))) < 0) {
        rc = has == ATP_ERANGE ? ATP_ETTL : has;
    } else if (!json_object_object_get_ex(o, "lines", &arr) ||
               !json_object_is_type(arr, json_type_array)) {
        rc = ATP_EMALFORMED;
        snprintf(detail, sizeof(detail), "'lines' must be an array");
    } else if (ttl <= 0) {
        rc = ATP_ETTL;
    } else {
        sr.ttl_ms = (uint64_t)ttl;
        rc = parse_lines(arr, lines, max_lines(c->ctx), &sr.nlines, detail, sizeof(detail));
    }
    if (rc == 0 && (rc = refused(c)) == 0)
        rc = atp_store_channel_find(store_of(c), ch, &sr.channel);
    if (rc) {
        json_object_put(o);
        return fail(c, rc, detail[0] ? detail : NULL);
    }
    struct atp_reservation res;
    struct atp_shortfall sf[ATP_MAX_LINES];
    bool replayed = false;
    rc = atp_store_reserve(store_of(c), &sr, c->now_us, &res, &replayed, sf);
    atp_metrics_reservation(sr.channel, rc, replayed);
    if (rc == 0 && replayed)
        atp_durable_tls_barrier(); /* the original may still be on its way to the log */
    if (rc == ATP_EINSUFFICIENT)
        rc = insufficient(c, lines, sr.nlines, sf);
    else if (rc == ATP_ECONFLICT)
        rc = fail(c, rc, "this Idempotency-Key was used with a different request body");
    else if (rc)
        rc = fail(c, rc, NULL);
    else
        rc = emit_reservation(c, 201, &res, replayed);
    json_object_put(o); /* the line slices pointed into it */
    return rc;
}

/* "123" -> 123; 0 for anything else (no reservation has id 0). */
static uint64_t parse_id(const char *s, size_t n)
{
    if (n == 0 || n > ID_DIGITS)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    return v;
}

static int op_reservations_root(struct call *c)
{
    if (c->p->method == HTTP_POST)
        return op_reserve(c);
    c->op = ATP_MOP_GET_RESERVATION;
    if (!is_get(c))
        return method_not_allowed(c, "GET, HEAD, POST");
    char kb[PATH_MAX_SEG];
    struct atp_slice key;
    bool bad = false;
    if (!query_get(c->query, c->query_len, "idempotencyKey", kb, sizeof(kb), &key, &bad))
        return fail(c, ATP_EINVAL, "list reservations by ?idempotencyKey=, or GET one by id");
    if (bad)
        return fail(c, ATP_EMALFORMED, "a query parameter is not valid percent-encoding");
    struct atp_reservation res;
    int rc = atp_store_reservation_find(store_of(c), key, &res);
    if (rc)
        return fail(c, rc, rc == ATP_ENOTFOUND ? "no reservation with this idempotency key" : NULL);
    return emit_reservation(c, 200, &res, false);
}

static int op_reservation(struct call *c, const char *seg, size_t n)
{
    const char *colon = memrchr(seg, ':', n);
    const char *action = colon ? colon + 1 : NULL;
    size_t alen = colon ? (size_t)(seg + n - action) : 0;
    uint64_t id = parse_id(seg, colon ? (size_t)(colon - seg) : n);
    struct atp_reservation res;
    int rc;
    if (!action) {
        c->op = ATP_MOP_GET_RESERVATION;
        if (!is_get(c))
            return method_not_allowed(c, "GET, HEAD");
        if (!id)
            return fail(c, ATP_ENOTFOUND, "reservation ids are decimal numbers");
        if ((rc = atp_store_reservation_get(store_of(c), id, &res)))
            return fail(c, rc, NULL);
        return emit_reservation(c, 200, &res, false);
    }
    int which;
    if (alen == 6 && memcmp(action, "commit", 6) == 0)
        which = ATP_MOP_COMMIT;
    else if (alen == 7 && memcmp(action, "release", 7) == 0)
        which = ATP_MOP_RELEASE;
    else if (alen == 6 && memcmp(action, "extend", 6) == 0)
        which = ATP_MOP_EXTEND;
    else
        return fail(c, ATP_ENOTFOUND, "unknown action; use :commit, :release or :extend");
    c->op = which;
    if (c->p->method != HTTP_POST)
        return method_not_allowed(c, "POST");
    if (!id)
        return fail(c, ATP_ENOTFOUND, "reservation ids are decimal numbers");
    if (which != ATP_MOP_RELEASE && (rc = refused(c)))
        return fail(c, rc, NULL);
    uint64_t pos0 = atp_durable_tls_pos();
    if (which == ATP_MOP_COMMIT) {
        rc = atp_store_commit(store_of(c), id, c->now_us, &res);
    } else if (which == ATP_MOP_RELEASE) {
        rc = atp_store_release(store_of(c), id, c->now_us, &res);
    } else {
        struct json_object *o = json_body(c, &rc);
        if (!o)
            return rc;
        char detail[96];
        int64_t ttl = 0;
        int has = member_int(o, "ttlMs", &ttl, detail, sizeof(detail));
        json_object_put(o);
        if (has < 0 && has != ATP_ERANGE)
            return fail(c, has, detail);
        if (has == 1)
            return fail(c, ATP_ETTL, "'ttlMs' is required");
        if (has == ATP_ERANGE || ttl <= 0)
            return fail(c, ATP_ETTL, NULL);
        rc = atp_store_extend(store_of(c), id, (uint64_t)ttl, c->now_us, &res);
    }
    if (rc == 0 && atp_durable_tls_pos() == pos0)
        atp_durable_tls_barrier(); /* a repeated commit: answered from state */
    if (rc)
        return fail(c, rc, NULL);
    return emit_reservation(c, 200, &res, false);
}

/* --- admin ----------------------------------------------------------------------------- */

static int op_item(struct call *c, const char *rest, size_t n)
{
    /* {sku}/{location}:action, split at the last '/' and the last ':' (a
     * sku may hold '/', a location ':'; a location with '/' is sent %2F). */
    const char *slash = memrchr(rest, '/', n);
    const char *colon = slash ? memrchr(slash, ':', (size_t)(rest + n - slash)) : NULL;
    if (!slash || !colon)
        return fail(c, ATP_ENOTFOUND, "use /v1/items/{sku}/{location}:adjust or :set");
    const char *action = colon + 1;
    size_t alen = (size_t)(rest + n - action);
    bool set;
    if (alen == 6 && memcmp(action, "adjust", 6) == 0)
        set = false;
    else if (alen == 3 && memcmp(action, "set", 3) == 0)
        set = true;
    else
        return fail(c, ATP_ENOTFOUND, "unknown action; use :adjust or :set");
    c->op = set ? ATP_MOP_SET : ATP_MOP_ADJUST;
    if (c->p->method != HTTP_POST)
        return method_not_allowed(c, "POST");
    char skub[PATH_MAX_SEG], locb[PATH_MAX_SEG];
    ssize_t sn = pct_decode(rest, (size_t)(slash - rest), skub, sizeof(skub), false);
    ssize_t ln = pct_decode(slash + 1, (size_t)(colon - slash - 1), locb, sizeof(locb), false);
    if (sn < 0)
        return fail(c, ATP_EINVAL_SKU, "the sku in the path is not valid percent-encoding");
    if (ln < 0)
        return fail(c, ATP_EINVAL_LOC, "the location in the path is not valid percent-encoding");
    struct atp_slice sku = {skub, (uint32_t)sn}, loc = {locb, (uint32_t)ln};
    int rc = atp_validate_sku(sku);
    if (!rc)
        rc = atp_validate_loc(loc);
    if (rc)
        return fail(c, rc, NULL);
    struct json_object *o = json_body(c, &rc);
    if (!o)
        return rc;
    char detail[96] = "";
    int64_t v = 0, seq = 0, on_hand = 0;
    const char *field = set ? "onHand" : "delta";
    int has = member_int(o, field, &v, detail, sizeof(detail));
    int has_seq = set ? member_int(o, "seq", &seq, detail, sizeof(detail)) : 1;
    struct atp_slice reason;
    int has_reason = set ? 1 : member_str(o, "reason", &reason, detail, sizeof(detail));
    json_object_put(o);
    if (has == ATP_ERANGE || has_seq == ATP_ERANGE)
        return fail(c, ATP_ERANGE, NULL);
    if (has < 0 || has_seq < 0 || has_reason < 0)
        return fail(c, ATP_EMALFORMED, detail);
    if (has == 1) {
        snprintf(detail, sizeof(detail), "'%s' is required", field);
        return fail(c, ATP_EINVAL, detail);
    }
    if (seq < 0)
        return fail(c, ATP_EINVAL, "'seq' must not be negative");
    if ((rc = refused(c)))
        return fail(c, rc, NULL);
    if (set) {
        if (v < 0)
            return fail(c, ATP_EQTY, "'onHand' must not be negative");
        rc = atp_store_set(store_of(c), sku, loc, v, (uint64_t)seq);
        on_hand = v;
    } else {
        if (v == 0)
            return fail(c, ATP_EQTY, "'delta' must not be zero");
        rc = atp_store_adjust(store_of(c), sku, loc, v, &on_hand);
    }
    if (rc)
        return fail(c, rc, NULL);
    struct jb j = body_begin(c->ctx);
    jb_lit(&j, "{\"sku\":");
    jb_slice(&j, sku);
    jb_lit(&j, ",\"location\":");
    jb_slice(&j, loc);
    jb_printf(&j, ",\"onHand\":%" PRId64 "}", on_hand);
    return emit_json(c->ctx, c->out, &c->r, 200, "Cache-Control: no-store\r\n", &j, c->now_us);
}

/* --- operations endpoints ----------------------------------------------------------------- */

static int op_livez(struct call *c)
{
    c->op = ATP_MOP_HEALTH;
    if (!is_get(c))
        return method_not_allowed(c, "GET, HEAD");
    struct jb j = body_begin(c->ctx);
    jb_lit(&j, "{\"status\":\"ok\"}");
    return emit_json(c->ctx, c->out, &c->r, 200, "Cache-Control: no-store\r\n", &j, c->now_us);
}

static int op_readyz(struct call *c)
{
    c->op = ATP_MOP_HEALTH;
    if (!is_get(c))
        return method_not_allowed(c, "GET, HEAD");
    char reason[128] = "";
    bool ready = c->ctx->ready ? c->ctx->ready(c->ctx->ready_arg, reason, sizeof(reason)) : true;
    struct jb j = body_begin(c->ctx);
    if (ready) {
        jb_lit(&j, "{\"status\":\"ready\"}");
    } else {
        jb_lit(&j, "{\"status\":\"not ready\",\"reason\":");
        jb_cstr(&j, reason[0] ? reason : "not ready");
        jb_put(&j, "}", 1);
    }
    return emit_json(c->ctx, c->out, &c->r, ready ? 200 : 503, "Cache-Control: no-store\r\n", &j,
                     c->now_us);
}

static int op_metrics(struct call *c)
{
    c->op = ATP_MOP_STATS;
    if (!is_get(c))
        return method_not_allowed(c, "GET, HEAD");
    const struct atp_cmd_ctx *cmd = c->ctx->cmd;
    struct atp_metrics_scrape s = {
        .store = cmd->store,
        .sources = cmd->sources,
        .nsources = cmd->nsources,
        .version = c->ctx->version,
    };
    c->ctx->resp.len = 0;
    int rc = atp_metrics_render(&s, &c->ctx->resp);
    if (rc)
        return fail(c, ATP_EINTERNAL, "metrics could not be rendered");
    return emit(c->ctx, c->out, &c->r, 200, "text/plain; version=0.0.4; charset=utf-8",
                "Cache-Control: no-store\r\n", c->ctx->resp.data, c->ctx->resp.len, c->now_us);
}

/* --- routing --------------------------------------------------------------------------- */

static bool path_is(const struct call *c, const char *s)
{
    size_t n = strlen(s);
    return c->path_len == n && memcmp(c->path, s, n) == 0;
}

static bool path_prefix(const struct call *c, const char *s, const char **ret_rest, size_t *ret_len)
{
    size_t n = strlen(s);
    if (c->path_len < n || memcmp(c->path, s, n) != 0)
        return false;
    *ret_rest = c->path + n;
    *ret_len = c->path_len - n;
    return true;
}

static int route(struct call *c)
{
    const char *rest;
    size_t n;
    if (path_is(c, "/v1/availability:batchGet"))
        return op_batch(c);
    if (path_prefix(c, "/v1/availability/", &rest, &n))
        return op_availability(c, rest, n);
    if (path_is(c, "/v1/changes"))
        return op_changes(c);
    if (path_is(c, "/v1/reservations"))
        return op_reservations_root(c);
    if (path_prefix(c, "/v1/reservations/", &rest, &n) && !memchr(rest, '/', n))
        return op_reservation(c, rest, n);
    if (path_prefix(c, "/v1/items/", &rest, &n))
        return op_item(c, rest, n);
    if (path_is(c, "/metrics"))
        return op_metrics(c);
    if (path_is(c, "/livez"))
        return op_livez(c);
    if (path_is(c, "/readyz"))
        return op_readyz(c);
    c->op = ATP_MOP_OTHER;
    char detail[96];
    snprintf(detail, sizeof(detail), "no resource at %.*s",
             (int)(c->path_len > 64 ? 64 : c->path_len), c->path);
    /* Percent signs and quotes in a hostile path are escaped by jb_str. */
    return fail(c, ATP_ENOTFOUND, detail);
}

/* Split the request target into path and query. false: not a usable target. */
static bool split_target(struct call *c, const char *url, size_t len)
{
    if (len > 0 && url[0] == '/') {
        /* origin-form, the usual case: the parser checked its characters. */
        const char *q = memchr(url, '?', len);
        const char *hash = memchr(url, '#', len);
        const char *end = hash ? hash : url + len;
        if (q && q > end)
            q = NULL;
        c->path = url;
        c->path_len = (size_t)((q ? q : end) - url);
        c->query = q ? q + 1 : "";
        c->query_len = q ? (size_t)(end - q - 1) : 0;
        return true;
    }
    /* absolute-form ("http://host/path"), for proxies */
    struct http_parser_url u;
    http_parser_url_init(&u);
    if (len == 0 || http_parser_parse_url(url, len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
        return false;
    c->path = url + u.field_data[UF_PATH].off;
    c->path_len = u.field_data[UF_PATH].len;
    if (u.field_set & (1 << UF_QUERY)) {
        c->query = url + u.field_data[UF_QUERY].off;
        c->query_len = u.field_data[UF_QUERY].len;
    } else {
        c->query = "";
        c->query_len = 0;
    }
    return true;
}

static int bad_request(struct atp_http_ctx *ctx, struct atp_buf *out, int code, const char *detail,
                       uint64_t now_us, uint64_t t0)
{
    struct reply r = {.close = true};
    int rc = problem(ctx, out, &r, code, detail, NULL, now_us);
    atp_metrics_request(ATP_MPROTO_HTTP, ATP_MOP_OTHER, code, atp_metrics_now_ns() - t0);
    return rc ? -ENOMEM : -EPROTO;
}

ssize_t atp_http_handle(struct atp_http_ctx *ctx, const uint8_t *in, size_t len,
                        struct atp_buf *out, uint64_t now_us)
{
    if (ctx->cmd->wait)
        ctx->cmd->wait->parked = false;
    /* Empty lines before a request line are ignored (RFC 9112 2.2). */
    size_t skip = 0;
    while (skip < len && (in[skip] == '\r' || in[skip] == '\n'))
        skip++;
    if (skip == len)
        return (ssize_t)skip; /* nothing but blank lines (maybe none): done with them */
    in += skip;
    len -= skip;

    size_t max_header = ctx->max_header ? ctx->max_header : ATP_HTTP_DEFAULT_MAX_HEADER;
    size_t hend = header_end(in, len, max_header);
    if (hend == 0) {
        if (len < max_header)
            return skip ? (ssize_t)skip : 0;
        return bad_request(ctx, out, ATP_EHEADERS, NULL, now_us, atp_metrics_now_ns());
    }
    uint64_t t0 = atp_metrics_now_ns();

    struct req q;
    memset(&q, 0, sizeof(q));
    q.ctx = ctx;
    q.max_body = ctx->max_body ? ctx->max_body : ATP_HTTP_DEFAULT_MAX_BODY;
    http_parser p;
    http_parser_init(&p, HTTP_REQUEST);
    p.data = &q;
    size_t used = http_parser_execute(&p, &parser_settings, (const char *)in, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&p);

    if (q.too_large) {
        char detail[96];
        snprintf(detail, sizeof(detail), "the request body is larger than %u bytes", q.max_body);
        return bad_request(ctx, out, ATP_ETOOLARGE, detail, now_us, t0);
    }
    if (q.oom)
        return bad_request(ctx, out, ATP_EINTERNAL, "out of memory", now_us, t0);
    if (e != HPE_OK && e != HPE_PAUSED) {
        char detail[128];
        snprintf(detail, sizeof(detail), "malformed HTTP request: %s", http_errno_description(e));
        return bad_request(ctx, out, ATP_EMALFORMED, detail, now_us, t0);
    }
    /* An Upgrade (h2c, websocket) is ignored, as RFC 9110 7.8 allows: the
     * request is answered in HTTP/1.1 and the connection stays HTTP/1.1.
     * http-parser stops right after such a request, so the next one is
     * parsed from there. CONNECT would turn the rest into a tunnel. */
    if (p.upgrade && p.method == HTTP_CONNECT)
        return bad_request(ctx, out, ATP_EMALFORMED, "CONNECT is not supported", now_us, t0);
    if (!q.complete) {
        /* A client that waits for "100 Continue" before its body gets it
         * once: when exactly the header block is there. */
        if (used == len && len == hend && (p.http_major > 1 || p.http_minor >= 1) &&
            q.hcount[H_EXPECT] && q.hv[H_EXPECT].len == 12 &&
            strncasecmp(q.hv[H_EXPECT].p, "100-continue", 12) == 0) {
            struct jb j = {.b = out};
            jb_lit(&j, "HTTP/1.1 100 Continue\r\n\r\n");
        }
        return skip ? (ssize_t)skip : 0;
    }

    struct call c = {
        .ctx = ctx,
        .q = &q,
        .p = &p,
        .out = out,
        .now_us = now_us,
        .op = ATP_MOP_OTHER,
    };
    c.r.head = p.method == HTTP_HEAD;
    c.r.close = !http_should_keep_alive(&p);
    c.r.keep_alive = !c.r.close && p.http_major == 1 && p.http_minor == 0;
    int rc;
    if (p.http_major == 1 && p.http_minor >= 1 && q.hcount[H_HOST] != 1) {
        c.r.close = true;
        rc = fail(&c, ATP_EMALFORMED,
                  q.hcount[H_HOST] ? "several Host headers" : "HTTP/1.1 requires a Host header");
    } else if (q.folded) {
        c.r.close = true;
        rc = fail(&c, ATP_EMALFORMED, "folded header lines are not accepted");
    } else if (!split_target(&c, q.url, q.url_len)) {
        rc = fail(&c, ATP_EMALFORMED, "the request target is not a valid path");
    } else {
        rc = route(&c);
    }
    if (rc == ATP_CMD_HELD)
        return 0; /* held: no answer yet, no metrics; blank lines before it stay too */
    atp_metrics_request(ATP_MPROTO_HTTP, c.op, c.code, atp_metrics_now_ns() - t0);
    if (rc)
        return -ENOMEM;
    if (c.r.close)
        return -ECONNRESET;
    return (ssize_t)(skip + used);
}
