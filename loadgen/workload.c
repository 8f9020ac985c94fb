/*
 * workload.c - the workload-file parser (see workload.h).
 *
 * Keys are a table of (name, type, offset, bounds), not a chain of ifs, so a
 * new key is one row and the README can be checked against the table.
 */
#include "workload.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const op_names[LG_OP_NMEASURED] = {
    [LG_OP_GET] = "get",
    [LG_OP_MGET] = "mget",
    [LG_OP_RESERVE] = "reserve",
    [LG_OP_COMMIT] = "commit",
    [LG_OP_RELEASE] = "release",
    [LG_OP_PRODUCE] = "produce",
    [LG_OP_FRESHNESS] = "freshness",
};

const char *lg_op_name(int op)
{
    if (op < 0 || op >= LG_OP_NMEASURED)
        return "?";
    return op_names[op];
}

enum ktype {
    K_STR,      /* char[arg] */
    K_U64,      /* uint64_t in [lo, hi] */
    K_U32,      /* uint32_t in [lo, hi] */
    K_I64,      /* int64_t in [lo, hi] */
    K_DOUBLE,   /* double in [dlo, dhi] */
    K_BOOL,     /* true/false/1/0/yes/no */
    K_DIST,     /* uniform | zipfian | hotspot */
    K_SETUP,    /* none | set */
    K_LOCS,     /* comma-separated location list */
    K_SKUCHARS, /* like K_STR, but restricted to the sku charset */
};

struct kdef {
    const char *name;
    enum ktype type;
    size_t off;
    size_t size; /* K_STR: buffer size */
    int64_t lo, hi;
    double dlo, dhi;
};

#define OFF(f) offsetof(struct lg_workload, f)
#define SZ(f)  sizeof(((struct lg_workload *)0)->f)

/* clang-format off */
static const struct kdef keys[] = {
    {"breakdown",             K_BOOL,   OFF(breakdown),            0, 0, 0, 0, 0},
    {"channel",               K_SKUCHARS, OFF(channel),            SZ(channel), 0, 0, 0, 0},
    {"channel_cap",           K_I64,    OFF(channel_cap),          0, -1, INT64_C(549755813887), 0, 0},
    {"channel_safety_pct",    K_U32,    OFF(channel_safety_pct),   0, 0, 100, 0, 0},
    {"channel_safety_units",  K_I64,    OFF(channel_safety_units), 0, 0, INT64_C(549755813887), 0, 0},
    {"commit_fraction",       K_DOUBLE, OFF(commit_fraction),      0, 0, 0, 0, 1},
    {"get_proportion",        K_DOUBLE, OFF(get_proportion),       0, 0, 0, 0, 1},
    {"hot_data_fraction",     K_DOUBLE, OFF(hot_data_fraction),    0, 0, 0, 1e-9, 1},
    {"hot_opn_fraction",      K_DOUBLE, OFF(hot_opn_fraction),     0, 0, 0, 0, 1},
    {"kafka_topic",           K_STR,    OFF(kafka_topic),          SZ(kafka_topic), 0, 0, 0, 0},
    {"lines_max",             K_U32,    OFF(lines_max),            0, 1, LG_MAX_LINES, 0, 0},
    {"lines_min",             K_U32,    OFF(lines_min),            0, 1, LG_MAX_LINES, 0, 0},
    {"locations",             K_LOCS,   0,                         0, 0, 0, 0, 0},
    {"mget_max",              K_U32,    OFF(mget_max),             0, 1, LG_MAX_MGET, 0, 0},
    {"mget_min",              K_U32,    OFF(mget_min),             0, 1, LG_MAX_MGET, 0, 0},
    {"mget_proportion",       K_DOUBLE, OFF(mget_proportion),      0, 0, 0, 0, 1},
    {"name",                  K_STR,    OFF(name),                 SZ(name), 0, 0, 0, 0},
    {"network",               K_BOOL,   OFF(network),              0, 0, 0, 0, 0},
    {"populate_on_hand",      K_I64,    OFF(populate_on_hand),     0, 0, INT64_C(549755813887), 0, 0},
    {"probe_interval_ms",     K_U32,    OFF(probe_interval_ms),    0, 0, 60000, 0, 0},
    {"probe_sku",             K_SKUCHARS, OFF(probe_sku),          SZ(probe_sku), 0, 0, 0, 0},
    {"produce_proportion",    K_DOUBLE, OFF(produce_proportion),   0, 0, 0, 0, 1},
    {"qty_max",               K_U32,    OFF(qty_max),              0, 1, 1000000, 0, 0},
    {"qty_min",               K_U32,    OFF(qty_min),              0, 1, 1000000, 0, 0},
    {"recordcount",           K_U64,    OFF(recordcount),          0, 1, INT64_C(100000000), 0, 0},
    {"release_fraction",      K_DOUBLE, OFF(release_fraction),     0, 0, 0, 0, 1},
    {"requestdistribution",   K_DIST,   OFF(dist),                 0, 0, 0, 0, 0},
    {"reserve_proportion",    K_DOUBLE, OFF(reserve_proportion),   0, 0, 0, 0, 1},
    {"resp_lookup_lua",       K_BOOL,   OFF(resp_lookup_lua),      0, 0, 0, 0, 0},
    {"setup",                 K_SETUP,  OFF(setup),                0, 0, 0, 0, 0},
    {"sku_digits",            K_U32,    OFF(sku_digits),           0, 0, 20, 0, 0},
    {"sku_prefix",            K_SKUCHARS, OFF(sku_prefix),         SZ(sku_prefix), 0, 0, 0, 0},
    {"sku_start",             K_U64,    OFF(sku_start),            0, 0, INT64_C(1000000000000), 0, 0},
    {"ttl_ms",                K_U64,    OFF(ttl_ms),               0, 1, INT64_C(86400000), 0, 0},
    {"verify_oversell",       K_BOOL,   OFF(verify_oversell),      0, 0, 0, 0, 0},
    {"zipfian_constant",      K_DOUBLE, OFF(zipf_theta),           0, 0, 0, 0.01, 10},
    {"zipfian_scrambled",     K_BOOL,   OFF(zipf_scrambled),       0, 0, 0, 0, 0},
};
/* clang-format on */

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

void lg_workload_defaults(struct lg_workload *w)
{
    memset(w, 0, sizeof(*w));
    snprintf(w->name, sizeof(w->name), "default");
    w->recordcount = 100000;
    w->sku_start = 1;
    snprintf(w->sku_prefix, sizeof(w->sku_prefix), "SKU-");
    w->sku_digits = 6;
    snprintf(w->locations[0], sizeof(w->locations[0]), "DC1");
    snprintf(w->locations[1], sizeof(w->locations[1]), "DC2");
    snprintf(w->locations[2], sizeof(w->locations[2]), "DC3");
    w->nlocations = 3;
    snprintf(w->channel, sizeof(w->channel), "web");
    w->dist = LG_DIST_ZIPFIAN;
    w->zipf_theta = 0.99;
    w->zipf_scrambled = true;
    w->hot_data_fraction = 0.2;
    w->hot_opn_fraction = 0.8;
    w->get_proportion = 1.0;
    w->mget_min = w->mget_max = 100;
    w->lines_min = w->lines_max = 1;
    w->qty_min = w->qty_max = 1;
    w->ttl_ms = 900000;
    w->setup = LG_SETUP_NONE;
    w->populate_on_hand = 1000000;
    w->channel_safety_units = 2; /* atpd's default "web" channel */
    w->channel_cap = -1;
    snprintf(w->kafka_topic, sizeof(w->kafka_topic), "inventory");
    w->probe_interval_ms = 10;
    snprintf(w->probe_sku, sizeof(w->probe_sku), "LOADGEN-PROBE");
}

static int fail(char *err, size_t errlen, unsigned lineno, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, unsigned lineno, const char *fmt, ...)
{
    if (err && errlen) {
        int n = lineno ? snprintf(err, errlen, "line %u: ", lineno) : 0;
        if (n < 0)
            n = 0;
        if ((size_t)n < errlen) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return -EINVAL;
}

static bool sku_char(int c)
{
    return isalnum(c) || c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
}

static bool sku_chars_ok(const char *s)
{
    for (; *s; s++)
        if (!sku_char((unsigned char)*s))
            return false;
    return true;
}

static int parse_i64(const char *v, int64_t *ret)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    *ret = x;
    return 0;
}

static int parse_u64(const char *v, uint64_t *ret)
{
    char *end;
    if (*v == '-' || *v == '+')
        return -1;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end)
        return -1;
    *ret = x;
    return 0;
}

static int set_value(struct lg_workload *w, const struct kdef *k, const char *v, unsigned lineno,
                     char *err, size_t errlen)
{
    char *base = (char *)w;
    switch (k->type) {
    case K_STR:
    case K_SKUCHARS:
        if (!*v)
            return fail(err, errlen, lineno, "%s: empty value", k->name);
        if (strlen(v) >= k->size)
            return fail(err, errlen, lineno, "%s: longer than %zu bytes", k->name, k->size - 1);
        if (k->type == K_SKUCHARS && !sku_chars_ok(v))
            return fail(err, errlen, lineno, "%s: only [A-Za-z0-9._:/-] allowed", k->name);
        memcpy(base + k->off, v, strlen(v) + 1);
        return 0;
    case K_U64:
    case K_U32: {
        uint64_t x;
        if (parse_u64(v, &x) || x < (uint64_t)k->lo || x > (uint64_t)k->hi)
            return fail(err, errlen, lineno,
                        "%s: expected an integer in [%" PRId64 ", %" PRId64 "]", k->name, k->lo,
                        k->hi);
        if (k->type == K_U64)
            *(uint64_t *)(void *)(base + k->off) = x;
        else
            *(uint32_t *)(void *)(base + k->off) = (uint32_t)x;
        return 0;
    }
    case K_I64: {
        int64_t x;
        if (parse_i64(v, &x) || x < k->lo || x > k->hi)
            return fail(err, errlen, lineno,
                        "%s: expected an integer in [%" PRId64 ", %" PRId64 "]", k->name, k->lo,
                        k->hi);
        *(int64_t *)(void *)(base + k->off) = x;
        return 0;
    }
    case K_DOUBLE: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < k->dlo || x > k->dhi)
            return fail(err, errlen, lineno, "%s: expected a number in [%g, %g]", k->name, k->dlo,
                        k->dhi);
        *(double *)(void *)(base + k->off) = x;
        return 0;
    }
    case K_BOOL: {
        bool b;
        if (!strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
            b = true;
        else if (!strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
            b = false;
        else
            return fail(err, errlen, lineno, "%s: expected true or false", k->name);
        *(bool *)(base + k->off) = b;
        return 0;
    }
    case K_DIST: {
        enum lg_dist d;
        if (!strcmp(v, "uniform"))
            d = LG_DIST_UNIFORM;
        else if (!strcmp(v, "zipfian"))
            d = LG_DIST_ZIPFIAN;
        else if (!strcmp(v, "hotspot"))
            d = LG_DIST_HOTSPOT;
        else
            return fail(err, errlen, lineno, "%s: expected uniform, zipfian or hotspot", k->name);
        *(enum lg_dist *)(void *)(base + k->off) = d;
        return 0;
    }
    case K_SETUP: {
        enum lg_setup s;
        if (!strcmp(v, "none"))
            s = LG_SETUP_NONE;
        else if (!strcmp(v, "set"))
            s = LG_SETUP_SET;
        else
            return fail(err, errlen, lineno, "%s: expected none or set", k->name);
        *(enum lg_setup *)(void *)(base + k->off) = s;
        return 0;
    }
    case K_LOCS: {
        char tmp[LG_MAX_LOCATIONS][33];
        uint32_t n = 0;
        const char *p = v;
        for (;;) {
            const char *c = strchr(p, ',');
            size_t len = c ? (size_t)(c - p) : strlen(p);
            if (len == 0 || len > 32)
                return fail(err, errlen, lineno, "locations: each location is 1..32 bytes");
            if (n == LG_MAX_LOCATIONS)
                return fail(err, errlen, lineno, "locations: at most %d", LG_MAX_LOCATIONS);
            memcpy(tmp[n], p, len);
            tmp[n][len] = 0;
            if (!sku_chars_ok(tmp[n]))
                return fail(err, errlen, lineno, "locations: only [A-Za-z0-9._:/-] allowed");
            n++;
            if (!c)
                break;
            p = c + 1;
        }
        memcpy(w->locations, tmp, sizeof(tmp));
        w->nlocations = n;
        return 0;
    }
    }
    return fail(err, errlen, lineno, "%s: internal error", k->name);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

int lg_workload_line(struct lg_workload *w, const char *line, unsigned lineno, uint64_t *seen,
                     char *err, size_t errlen)
{
    char buf[512];
    size_t len = strlen(line);
    if (len >= sizeof(buf))
        return fail(err, errlen, lineno, "line longer than %zu bytes", sizeof(buf) - 1);
    memcpy(buf, line, len + 1);
    /* A comment: the whole line, or `#` after whitespace. */
    for (char *p = buf; *p; p++) {
        if (*p == '#' && (p == buf || p[-1] == ' ' || p[-1] == '\t')) {
            *p = 0;
            break;
        }
    }
    char *s = trim(buf);
    if (!*s)
        return 0;
    char *eq = strchr(s, '=');
    if (!eq)
        return fail(err, errlen, lineno, "expected key=value, got \"%.60s\"", s);
    *eq = 0;
    char *key = trim(s);
    char *val = trim(eq + 1);
    if (!*key)
        return fail(err, errlen, lineno, "missing key before '='");
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].name, key))
            continue;
        if (seen) {
            if (*seen & (1ull << i))
                return fail(err, errlen, lineno, "%s given twice", key);
        }
        int rc = set_value(w, &keys[i], val, lineno, err, errlen);
        if (rc == 0 && seen)
            *seen |= 1ull << i;
        return rc;
    }
    return fail(err, errlen, lineno, "unknown key \"%.60s\"", key);
}

int lg_workload_parse(struct lg_workload *w, const char *text, char *err, size_t errlen)
{
    _Static_assert(NKEYS <= 64, "the seen bitmap holds 64 keys");
    uint64_t seen = 0;
    unsigned lineno = 1;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char line[512];
        if (len >= sizeof(line))
            return fail(err, errlen, lineno, "line longer than %zu bytes", sizeof(line) - 1);
        memcpy(line, p, len);
        line[len] = 0;
        int rc = lg_workload_line(w, line, lineno, &seen, err, errlen);
        if (rc)
            return rc;
        if (!nl)
            break;
        p = nl + 1;
        lineno++;
    }
    return 0;
}

int lg_workload_load(struct lg_workload *w, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    char *text = NULL;
    size_t cap = 0, len = 0;
    int rc = 0;
    for (;;) {
        if (cap - len < 4096) {
            if (cap > (1u << 20)) {
                rc = fail(err, errlen, 0, "%s: larger than 1 MiB", path);
                break;
            }
            cap = cap ? cap * 2 : 8192;
            char *n = realloc(text, cap);
            if (!n) {
                rc = -ENOMEM;
                break;
            }
            text = n;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = -EIO;
    fclose(f);
    if (rc == 0) {
        text[len] = 0;
        rc = lg_workload_parse(w, text, err, errlen);
    }
    free(text);
    return rc;
}

int lg_workload_check(const struct lg_workload *w, char *err, size_t errlen)
{
    double sum =
        w->get_proportion + w->mget_proportion + w->reserve_proportion + w->produce_proportion;
    if (!(sum > 0))
        return fail(err, errlen, 0, "the operation proportions add up to 0");
    if (w->mget_min > w->mget_max)
        return fail(err, errlen, 0, "mget_min > mget_max");
    if (w->lines_min > w->lines_max)
        return fail(err, errlen, 0, "lines_min > lines_max");
    if (w->qty_min > w->qty_max)
        return fail(err, errlen, 0, "qty_min > qty_max");
    if (w->commit_fraction + w->release_fraction > 1.0 + 1e-9)
        return fail(err, errlen, 0, "commit_fraction + release_fraction > 1");
    if (w->nlocations == 0)
        return fail(err, errlen, 0, "no locations");
    /* The longest sku: prefix + max(digits, 20 for a u64 index). */
    size_t longest = strlen(w->sku_prefix) + (w->sku_digits > 20 ? w->sku_digits : 20);
    if (strlen(w->sku_prefix) + w->sku_digits > 64 || (longest > 64 && w->sku_digits == 0))
        return fail(err, errlen, 0, "sku names would be longer than 64 bytes");
    if (w->lines_max > w->recordcount * w->nlocations)
        return fail(err, errlen, 0, "lines_max is larger than the key space");
    return 0;
}

/* "00" "01" ... "99": two digits per division */
static const char digit_pairs[201] = "00010203040506070809101112131415161718192021222324"
                                     "25262728293031323334353637383940414243444546474849"
                                     "50515253545556575859606162636465666768697071727374"
                                     "75767778798081828384858687888990919293949596979899";

static const uint64_t pow10_u64[20] = {
    1ull,
    10ull,
    100ull,
    1000ull,
    10000ull,
    100000ull,
    1000000ull,
    10000000ull,
    100000000ull,
    1000000000ull,
    10000000000ull,
    100000000000ull,
    1000000000000ull,
    10000000000000ull,
    100000000000000ull,
    1000000000000000ull,
    10000000000000000ull,
    100000000000000000ull,
    1000000000000000000ull,
    10000000000000000000ull,
};

/* By hand rather than snprintf: it runs for every key of every request, and
 * "%s%0*llu" through vfprintf was a fifth of atp-loadgen's CPU at pipeline
 * 16. Same output as that format, cut to len - 1 bytes likewise. */
uint32_t lg_workload_sku(const struct lg_workload *w, uint64_t i, char *buf, size_t len)
{
    if (len == 0)
        return 0;
    uint64_t v = w->sku_start + i;
    uint32_t width = w->sku_digits;
    size_t plen = strlen(w->sku_prefix);
    if (width > 0 && plen + width < len && (width >= 20 || v < pow10_u64[width])) {
        /* The usual case, a number that fits the zero-padded width: the
         * digits, zeros included, right to left into place, two per step. */
        if (plen <= 8 && len >= 8)
            memcpy(buf, w->sku_prefix, 8); /* a fixed size: one store */
        else
            memcpy(buf, w->sku_prefix, plen);
        char *e = buf + plen + width;
        *e = '\0';
        uint32_t k = width;
        for (; k >= 2; k -= 2) {
            e -= 2;
            memcpy(e, digit_pairs + 2 * (v % 100), 2);
            v /= 100;
        }
        if (k)
            e[-1] = (char)('0' + v % 10);
        return (uint32_t)(plen + width);
    }
    /* the digits, most significant first, at the end of `digits` */
    char digits[24];
    char *d = digits + sizeof(digits);
    while (v >= 100) {
        uint32_t r = (uint32_t)(v % 100);
        v /= 100;
        d -= 2;
        memcpy(d, digit_pairs + 2 * r, 2);
    }
    if (v >= 10) {
        d -= 2;
        memcpy(d, digit_pairs + 2 * v, 2);
    } else {
        *--d = (char)('0' + v);
    }
    uint32_t nd = (uint32_t)(digits + sizeof(digits) - d);
    if (width < nd)
        width = nd;
    if (plen + width < len) {
        memcpy(buf, w->sku_prefix, plen);
        memset(buf + plen, '0', width - nd);
        memcpy(buf + plen + width - nd, d, nd);
        buf[plen + width] = '\0';
        return (uint32_t)(plen + width);
    }
    /* cut to len - 1 bytes, as snprintf would */
    size_t n = 0;
    for (const char *p = w->sku_prefix; *p && n + 1 < len; p++)
        buf[n++] = *p;
    for (uint32_t k = width; k > 0 && n + 1 < len; k--)
        buf[n++] = k > nd ? '0' : d[nd - k];
    buf[n] = '\0';
    return (uint32_t)n;
}

void lg_workload_foreach(const struct lg_workload *w,
                         void (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    const char *base = (const char *)w;
    char v[LG_MAX_LOCATIONS * 34 + 8];
    for (size_t i = 0; i < NKEYS; i++) {
        const struct kdef *k = &keys[i];
        const void *p = base + k->off;
        switch (k->type) {
        case K_STR:
        case K_SKUCHARS:
            snprintf(v, sizeof(v), "%s", (const char *)p);
            break;
        case K_U64:
            snprintf(v, sizeof(v), "%" PRIu64, *(const uint64_t *)p);
            break;
        case K_U32:
            snprintf(v, sizeof(v), "%" PRIu32, *(const uint32_t *)p);
            break;
        case K_I64:
            snprintf(v, sizeof(v), "%" PRId64, *(const int64_t *)p);
            break;
        case K_DOUBLE:
            snprintf(v, sizeof(v), "%g", *(const double *)p);
            break;
        case K_BOOL:
            snprintf(v, sizeof(v), "%s", *(const bool *)p ? "true" : "false");
            break;
        case K_DIST: {
            enum lg_dist d = *(const enum lg_dist *)p;
            snprintf(v, sizeof(v), "%s",
                     d == LG_DIST_UNIFORM   ? "uniform"
                     : d == LG_DIST_HOTSPOT ? "hotspot"
                                            : "zipfian");
            break;
        }
        case K_SETUP:
            snprintf(v, sizeof(v), "%s",
                     *(const enum lg_setup *)p == LG_SETUP_SET ? "set" : "none");
            break;
        case K_LOCS: {
            size_t n = 0;
            v[0] = 0;
            for (uint32_t j = 0; j < w->nlocations; j++)
                n += (size_t)snprintf(v + n, sizeof(v) - n, "%s%s", j ? "," : "", w->locations[j]);
            break;
        }
        }
        fn(arg, k->name, v);
    }
}
