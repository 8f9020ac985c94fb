/*
 * drv_resp.c - the Redis (RESP2) driver of atp-loadgen.
 *
 * The same workload runs against Redis with the same semantics: lookups and
 * reservations are the Lua scripts of bench/redis/ (loaded once with SCRIPT
 * LOAD, run with EVALSHA). The one exception is the lookup baseline: unless
 * the workload sets resp_lookup_lua=true, a lookup is a plain GET of a
 * string key holding the item's on_hand (atp:g:<sku>:<loc>), the cheapest
 * read Redis has, which is what "atpd vs Redis GET" compares with.
 *
 * Replies are parsed by a small RESP2 reader written here: Debian's hiredis
 * would bring its own connection handling, while all we need is "where does
 * this reply end, was it an error, and what are its first integers".
 */
#include "lg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atp/error.h"

/* --- encoding ---------------------------------------------------------- */

static int put(struct lg_buf *out, const void *p, size_t n)
{
    return lg_buf_append(out, p, n);
}

static int put_hdr(struct lg_buf *out, char kind, size_t n)
{
    char h[32];
    int k = snprintf(h, sizeof(h), "%c%zu\r\n", kind, n);
    return put(out, h, (size_t)k);
}

static int put_bulk(struct lg_buf *out, const char *s, size_t n)
{
    if (put_hdr(out, '$', n) || put(out, s, n) || put(out, "\r\n", 2))
        return -ENOMEM;
    return 0;
}

static int put_str(struct lg_buf *out, const char *s)
{
    return put_bulk(out, s, strlen(s));
}

static int put_int(struct lg_buf *out, long long v)
{
    char t[24];
    int k = snprintf(t, sizeof(t), "%lld", v);
    return put_bulk(out, t, (size_t)k);
}

/* "atp:<kind>:<sku>:<loc>" */
static int put_key(struct lg_buf *out, const struct lg_run *run, char kind, uint32_t key,
                   uint16_t loc, const char *sku_override)
{
    char name[160], sku[72];
    if (sku_override)
        snprintf(sku, sizeof(sku), "%s", sku_override);
    else
        lg_sku(run, key, sku);
    int n = snprintf(name, sizeof(name), "atp:%c:%s:%s", kind, sku, run->wl->locations[loc]);
    return put_bulk(out, name, (size_t)n);
}

/* EVALSHA sha nkeys, then the item keys of `keys` (every location when network). */
static int put_evalsha(struct lg_buf *out, const struct lg_run *run, const char *sha, size_t nkeys,
                       size_t nargs)
{
    if (put_hdr(out, '*', 3 + nkeys + nargs) || put_str(out, "EVALSHA") || put_str(out, sha) ||
        put_int(out, (long long)nkeys))
        return -ENOMEM;
    return 0;
}

static int resp_encode(struct lg_run *run, void *state, const struct lg_req *r, struct lg_buf *out)
{
    const struct lg_workload *wl = run->wl;
    int rc = 0;
    switch (r->op) {
    case LG_OP_GET:
    case LG_XOP_INSPECT: {
        const struct lg_line *k = &r->keys[0];
        bool network = k->loc == UINT16_MAX;
        bool inspect = r->op == LG_XOP_INSPECT;
        if (!inspect && !network && !wl->resp_lookup_lua) {
            if (put_hdr(out, '*', 2) || put_str(out, "GET"))
                return -ENOMEM;
            return put_key(out, run, 'g', k->key, k->loc, r->sku_override);
        }
        size_t nk = network ? wl->nlocations : 1;
        bool bd = inspect || wl->breakdown;
        rc = put_evalsha(out, run, run->sha_get, nk, bd ? 2 : 1);
        for (size_t i = 0; rc == 0 && i < nk; i++)
            rc = put_key(out, run, 'i', k->key, network ? (uint16_t)i : k->loc, r->sku_override);
        if (rc == 0)
            rc = put_str(out, wl->channel);
        if (rc == 0 && bd)
            rc = put_str(out, "1");
        return rc;
    }
    case LG_OP_MGET:
        if (!wl->resp_lookup_lua && !wl->network) {
            rc = put_hdr(out, '*', 1 + r->nkeys) || put_str(out, "MGET");
            for (uint32_t i = 0; rc == 0 && i < r->nkeys; i++)
                rc = put_key(out, run, 'g', r->keys[i].key, r->keys[i].loc, NULL);
            return rc ? -ENOMEM : 0;
        }
        rc = put_evalsha(out, run, run->sha_mget, r->nkeys, 1);
        for (uint32_t i = 0; rc == 0 && i < r->nkeys; i++)
            rc = put_key(out, run, 'i', r->keys[i].key,
                         r->keys[i].loc == UINT16_MAX ? 0 : r->keys[i].loc, NULL);
        if (rc == 0)
            rc = put_str(out, wl->channel);
        return rc;
    case LG_OP_RESERVE:
        rc = put_evalsha(out, run, run->sha_reserve, r->nkeys, 3 + r->nkeys);
        for (uint32_t i = 0; rc == 0 && i < r->nkeys; i++)
            rc = put_key(out, run, 'i', r->keys[i].key, r->keys[i].loc, NULL);
        if (rc == 0)
            rc = put_str(out, wl->channel) || put_int(out, (long long)wl->ttl_ms) ||
                 put_bulk(out, r->idem, r->idem_len);
        for (uint32_t i = 0; rc == 0 && i < r->nkeys; i++)
            rc = put_int(out, r->keys[i].qty);
        return rc ? -ENOMEM : 0;
    case LG_OP_COMMIT:
    case LG_OP_RELEASE:
        rc = put_evalsha(out, run, r->op == LG_OP_COMMIT ? run->sha_commit : run->sha_release, 0,
                         1) ||
             put_int(out, (long long)r->res_id);
        return rc ? -ENOMEM : 0;
    case LG_XOP_SET:
        rc = put_evalsha(out, run, run->sha_set, 2, 1) ||
             put_key(out, run, 'i', r->keys[0].key, r->keys[0].loc, r->sku_override) ||
             put_key(out, run, 'g', r->keys[0].key, r->keys[0].loc, r->sku_override) ||
             put_int(out, (long long)r->value);
        return rc ? -ENOMEM : 0;
    case LG_XOP_RAW:
        return put(out, r->raw, strlen(r->raw));
    default:
        return -EINVAL;
    }
}

/* --- replies ------------------------------------------------------------ */

struct reply {
    char type;          /* + - : $ * */
    long long ival;     /* ':' value, or '$'/'*' length (-1: nil) */
    const uint8_t *str; /* '+', '-', '$' payload */
    size_t slen;
    long long elem[6]; /* first integers of a top-level array */
    uint32_t nelem;
    uint32_t nok; /* array: non-nil bulks and integers >= 0 */
};

/* One line ending in \r\n: returns its length without \r\n, -1 need more. */
static ssize_t line_len(const uint8_t *p, size_t len)
{
    const uint8_t *nl = memchr(p, '\n', len);
    if (!nl)
        return -1;
    if (nl == p || nl[-1] != '\r')
        return -2;
    return nl - p - 1;
}

static int parse_ll(const uint8_t *p, size_t n, long long *ret)
{
    if (n == 0 || n > 20)
        return -1;
    bool neg = p[0] == '-';
    long long v = 0;
    for (size_t i = neg; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    *ret = neg ? -v : v;
    return 0;
}

/* Parse one value; > 0 bytes, 0 need more, < 0 malformed. top fills r. */
static ssize_t parse(const uint8_t *p, size_t len, int depth, struct reply *r)
{
    if (len < 3)
        return 0;
    if (depth > 4)
        return -EPROTO;
    ssize_t ll = line_len(p + 1, len - 1);
    if (ll == -1)
        return 0;
    if (ll < 0)
        return -EPROTO;
    size_t used = 1 + (size_t)ll + 2;
    char t = (char)p[0];
    long long v = 0;
    switch (t) {
    case '+':
    case '-':
        if (r) {
            r->type = t;
            r->str = p + 1;
            r->slen = (size_t)ll;
        }
        return (ssize_t)used;
    case ':':
        if (parse_ll(p + 1, (size_t)ll, &v))
            return -EPROTO;
        if (r) {
            r->type = t;
            r->ival = v;
        }
        return (ssize_t)used;
    case '$':
        if (parse_ll(p + 1, (size_t)ll, &v) || v < -1 || v > 512 * 1024 * 1024)
            return -EPROTO;
        if (v >= 0) {
            if (len < used + (size_t)v + 2)
                return 0;
            if (p[used + (size_t)v] != '\r' || p[used + (size_t)v + 1] != '\n')
                return -EPROTO;
        }
        if (r) {
            r->type = t;
            r->ival = v;
            r->str = p + used;
            r->slen = v > 0 ? (size_t)v : 0;
        }
        return (ssize_t)(used + (v >= 0 ? (size_t)v + 2 : 0));
    case '*': {
        if (parse_ll(p + 1, (size_t)ll, &v) || v < -1 || v > 1000000)
            return -EPROTO;
        if (r) {
            r->type = t;
            r->ival = v;
            r->nelem = 0;
            r->nok = 0;
        }
        for (long long i = 0; i < v; i++) {
            struct reply e = {0};
            ssize_t n = parse(p + used, len - used, depth + 1, &e);
            if (n <= 0)
                return n;
            used += (size_t)n;
            if (!r)
                continue;
            if (e.type == ':') {
                if (r->nelem < 6)
                    r->elem[r->nelem] = e.ival;
                if (e.ival >= 0)
                    r->nok++;
            } else if (e.type == '$' && e.ival >= 0) {
                r->nok++;
            }
            r->nelem++;
        }
        return (ssize_t)used;
    }
    default:
        return -EPROTO;
    }
}

/* The status name for an error reply: its first word when it is one of
 * atpd's status names (the scripts answer those), else RESP_<WORD>. */
static const char *error_status(const uint8_t *s, size_t n)
{
    size_t w = 0;
    while (w < n && s[w] != ' ')
        w++;
#define ATP_MATCH(name, code, wire, http, slug, msg)                                               \
    if (w == sizeof(#name) - 1 && !memcmp(s, #name, w))                                            \
        return atp_error_name(code);
    ATP_ERRORS(ATP_MATCH)
#undef ATP_MATCH
    if (w == 8 && !memcmp(s, "NOSCRIPT", 8))
        return "RESP_NOSCRIPT";
    if (w == 3 && !memcmp(s, "ERR", 3))
        return "RESP_ERR";
    if (w == 4 && !memcmp(s, "BUSY", 4))
        return "RESP_BUSY";
    if (w == 3 && !memcmp(s, "OOM", 3))
        return "RESP_OOM";
    return "RESP_OTHER";
}

static ssize_t resp_decode(struct lg_run *run, void *state, const uint8_t *in, size_t len, int op,
                           struct lg_resp *ret)
{
    struct reply r = {0};
    ssize_t n = parse(in, len, 0, &r);
    if (n <= 0)
        return n;
    ret->status = NULL;
    if (r.type == '-') {
        ret->status = error_status(r.str, r.slen);
        if (op == LG_XOP_RAW)
            snprintf(ret->text, sizeof(ret->text), "%.*s", (int)r.slen, (const char *)r.str);
        return n;
    }
    switch (op) {
    case LG_OP_GET:
        if (r.type == '$' && r.ival < 0)
            ret->status = "ENOTFOUND";
        else if (r.type == ':')
            ret->atp = r.ival;
        else if (r.type == '$')
            ret->atp = strtoll((const char *)r.str, NULL, 10);
        else if (r.type == '*' && r.nelem >= 1)
            ret->atp = r.elem[0];
        return n;
    case LG_XOP_INSPECT:
        if (r.type != '*' || r.nelem < 5)
            return -EPROTO;
        ret->atp = r.elem[0];
        ret->on_hand = r.elem[1];
        ret->allocated = r.elem[2];
        ret->reserved = r.elem[3];
        ret->safety = r.elem[4];
        return n;
    case LG_OP_MGET:
        if (r.type != '*')
            return -EPROTO;
        ret->nok = r.nok;
        return n;
    case LG_OP_RESERVE:
    case LG_OP_COMMIT:
    case LG_OP_RELEASE:
        if (r.type != '*' || r.nelem < 2)
            return -EPROTO;
        ret->res_id = (uint64_t)r.elem[0];
        if (op == LG_OP_RESERVE && r.elem[1] == 1)
            ret->status = "REPLAYED";
        return n;
    case LG_XOP_SET:
        return n;
    case LG_XOP_RAW:
        snprintf(ret->text, sizeof(ret->text), "%.*s", (int)r.slen, (const char *)r.str);
        return n;
    default:
        return -EPROTO;
    }
}

/* --- preparation: scripts and the channel ------------------------------- */

static int load_script(struct lg_run *run, int fd, const char *file, char *sha, size_t shalen)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", run->cfg->redis_scripts, file);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "atp-loadgen: %s: %s (set --redis-scripts DIR)\n", path, strerror(errno));
        return -ENOENT;
    }
    struct lg_buf src = {0};
    char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof(chunk), f)) > 0)
        lg_buf_append(&src, chunk, got);
    fclose(f);
    struct lg_buf cmd = {0};
    int rc = put_hdr(&cmd, '*', 3) || put_str(&cmd, "SCRIPT") || put_str(&cmd, "LOAD") ||
             put_bulk(&cmd, (const char *)src.data, src.len) || put(&cmd, "", 1);
    lg_buf_free(&src);
    if (rc) {
        lg_buf_free(&cmd);
        return -ENOMEM;
    }
    struct lg_req q = {.op = LG_XOP_RAW, .raw = (const char *)cmd.data};
    struct lg_resp a;
    rc = lg_sync_call(run, fd, NULL, &q, &a);
    lg_buf_free(&cmd);
    if (rc)
        return rc;
    if (a.status) {
        fprintf(stderr, "atp-loadgen: SCRIPT LOAD %s: %s\n", file, a.text);
        return -EINVAL;
    }
    size_t n = strnlen(a.text, sizeof(a.text));
    if (n == 0 || n >= shalen)
        return -EPROTO;
    memcpy(sha, a.text, n + 1);
    return 0;
}

static int resp_prepare(struct lg_run *run, int fd)
{
    static const struct {
        const char *file;
        size_t off;
    } scripts[] = {
        {"atp_get.lua", offsetof(struct lg_run, sha_get)},
        {"atp_mget.lua", offsetof(struct lg_run, sha_mget)},
        {"atp_reserve.lua", offsetof(struct lg_run, sha_reserve)},
        {"atp_commit.lua", offsetof(struct lg_run, sha_commit)},
        {"atp_release.lua", offsetof(struct lg_run, sha_release)},
        {"atp_set.lua", offsetof(struct lg_run, sha_set)},
    };
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
        int rc = load_script(run, fd, scripts[i].file, (char *)run + scripts[i].off, 48);
        if (rc)
            return rc;
    }
    /* The channel's configuration, mirrored from the workload. */
    const struct lg_workload *wl = run->wl;
    struct lg_buf cmd = {0};
    char key[64];
    snprintf(key, sizeof(key), "atp:c:%s", wl->channel);
    int rc = put_hdr(&cmd, '*', 8) || put_str(&cmd, "HSET") || put_str(&cmd, key) ||
             put_str(&cmd, "su") || put_int(&cmd, wl->channel_safety_units) ||
             put_str(&cmd, "sp") || put_int(&cmd, wl->channel_safety_pct) || put_str(&cmd, "cap") ||
             put_int(&cmd, wl->channel_cap) || put(&cmd, "", 1);
    if (rc == 0) {
        struct lg_req q = {.op = LG_XOP_RAW, .raw = (const char *)cmd.data};
        struct lg_resp a;
        rc = lg_sync_call(run, fd, NULL, &q, &a);
        if (rc == 0 && a.status) {
            fprintf(stderr, "atp-loadgen: HSET %s: %s\n", key, a.text);
            rc = -EINVAL;
        }
    }
    lg_buf_free(&cmd);
    return rc;
}

const struct lg_driver lg_driver_resp = {
    .name = "resp",
    .default_port = 6379,
    .state_size = 0,
    .prepare = resp_prepare,
    .encode = resp_encode,
    .decode = resp_decode,
};
