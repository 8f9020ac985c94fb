/*
 * atpctl.c - the command-line client of atpd, in the spirit of redis-cli.
 *
 *   atpctl [-h host] [-p port] [--json] [--timeout ms] COMMAND [ARGS...]
 *
 * Knows the client library (atp/client.h) and how to print its results, as
 * aligned text for people or as JSON (json-c) for scripts. Exit status: 0 on
 * success, 1 when the server refused the operation, 2 for a usage error,
 * 3 when the server cannot be reached or the connection fails.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "atp/client.h"

enum {
    EXIT_OK = 0,
    EXIT_REFUSED = 1,
    EXIT_USAGE = 2,
    EXIT_CONN = 3,
};

#define DEFAULT_TTL_MS (15ULL * 60 * 1000)
#define MAX_ARGS       1024

static const char usage_text[] =
    "usage: atpctl [-h HOST] [-p PORT] [--json] [--timeout MS] COMMAND [ARGS...]\n"
    "\n"
    "Talks to atpd over its binary protocol (default 127.0.0.1:7400).\n"
    "\n"
    "Commands:\n"
    "  ping                                   round trip to the server\n"
    "  hello                                  protocol version, limits and build\n"
    "  get SKU -c CHANNEL [-l LOC] [-b]       ATP of SKU at LOC (network ATP without -l);\n"
    "                                         -b/--breakdown adds on_hand, allocated,\n"
    "                                         reserved and safety\n"
    "  mget -c CHANNEL [-b] SKU[@LOC] ...     many lookups in one request\n"
    "  reserve --key KEY -c CHANNEL [--ttl DURATION] SKU[@LOC]:QTY ...\n"
    "                                         hold every line or none (LOC omitted: any\n"
    "                                         location); --ttl defaults to 15m\n"
    "  commit ID                              turn a held reservation into an allocation\n"
    "  release ID                             give a held reservation's stock back\n"
    "  extend ID --ttl DURATION               hold a reservation DURATION from now\n"
    "  reservation ID | --key KEY             show a reservation\n"
    "  adjust SKU LOC DELTA                   on_hand += DELTA (admin)\n"
    "  set SKU LOC QTY [--seq N]              on_hand = QTY, guarded by sequence N (admin)\n"
    "  changes -c CHANNEL [-n] [-s CURSOR] [-m N] [-w DURATION]\n"
    "                                         what changed after CURSOR: the next cursor,\n"
    "                                         whether more waits, and SKU[@LOC] ATP per\n"
    "                                         change; without -s only the cursor to follow;\n"
    "                                         -n/--network: per sku with network ATP;\n"
    "                                         -s/--since CURSOR; -m/--max N (default: the\n"
    "                                         server's max-keys, at most 1000);\n"
    "                                         -w/--wait DURATION: if nothing changed yet,\n"
    "                                         wait up to DURATION for a change\n"
    "  stats                                  server counters\n"
    "\n"
    "Options:\n"
    "  -h, --host HOST     server address (default 127.0.0.1)\n"
    "  -p, --port PORT     server port (default 7400)\n"
    "  --json              print results (and errors) as JSON on stdout\n"
    "  --timeout MS        give up on a silent server after MS milliseconds (default 5000)\n"
    "  --help              this text\n"
    "\n"
    "DURATION is a number with a unit: 500ms, 30s, 15m, 2h, 1h30m; a bare number is seconds.\n"
    "\n"
    "Exit status: 0 success; 1 the server refused the operation (not found, insufficient\n"
    "stock, invalid argument ...; for mget: any key failed); 2 usage error; 3 cannot connect,\n"
    "the connection failed, or the server closed it.\n";

struct opts {
    const char *host;
    uint16_t port;
    bool json;
    uint32_t timeout_ms;
    /* command options */
    const char *channel;
    const char *loc;
    const char *key;
    bool breakdown;
    bool have_ttl;
    uint64_t ttl_ms;
    bool have_seq;
    uint64_t seq;
    bool network;
    uint64_t since;   /* 0: ask for the cursor to follow */
    uint32_t max;     /* 0: the default */
    uint64_t wait_ms; /* changes: hold the answer until a change, at most this long */
    /* positional arguments after the command */
    const char *pos[MAX_ARGS];
    int npos;
};

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "atpctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see atpctl --help)\n");
    return EXIT_USAGE;
}

/* --- parsing helpers ------------------------------------------------------ */

static bool parse_u64(const char *s, uint64_t *ret)
{
    if (!s || !*s || *s == '-')
        return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *ret = v;
    return true;
}

static bool parse_i64(const char *s, int64_t *ret)
{
    if (!s || !*s)
        return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end)
        return false;
    *ret = v;
    return true;
}

/* "15m", "500ms", "1h30m", "90" (seconds) -> milliseconds. */
static bool parse_duration(const char *s, uint64_t *ret_ms)
{
    if (!s || !*s)
        return false;
    uint64_t total = 0;
    while (*s) {
        if (*s < '0' || *s > '9')
            return false;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
            return false;
        uint64_t mult;
        if (*end == 0 && total == 0 && end != s)
            mult = 1000; /* bare number: seconds */
        else if (strncmp(end, "ms", 2) == 0)
            mult = 1, end += 2;
        else if (*end == 's')
            mult = 1000, end += 1;
        else if (*end == 'm')
            mult = 60 * 1000, end += 1;
        else if (*end == 'h')
            mult = 3600 * 1000, end += 1;
        else if (*end == 'd')
            mult = 86400 * 1000, end += 1;
        else
            return false;
        if (v > UINT64_MAX / mult || total + v * mult < total)
            return false;
        total += v * mult;
        s = end;
    }
    *ret_ms = total;
    return true;
}

/* A number that looks like an option ("-3") is a positional argument. */
static bool is_number(const char *s)
{
    int64_t v;
    return parse_i64(s, &v);
}

/* Parse global options, the command and its arguments. Returns -1 if ok. */
static int parse_args(int argc, char **argv, struct opts *o, const char **ret_cmd)
{
    const char *cmd = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                                               \
    do {                                                                                           \
        if (!next)                                                                                 \
            return usage_error("%s needs a value", a);                                             \
        i++;                                                                                       \
    } while (0)
        if (strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            exit(EXIT_OK);
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--host") == 0) {
            NEED_VALUE();
            o->host = next;
        } else if (strcmp(a, "-p") == 0 || strcmp(a, "--port") == 0) {
            NEED_VALUE();
            uint64_t v;
            if (!parse_u64(next, &v) || v == 0 || v > 65535)
                return usage_error("bad port %s", next);
            o->port = (uint16_t)v;
        } else if (strcmp(a, "--json") == 0) {
            o->json = true;
        } else if (strcmp(a, "--timeout") == 0) {
            NEED_VALUE();
            uint64_t v;
            if (!parse_u64(next, &v) || v > UINT32_MAX)
                return usage_error("bad timeout %s", next);
            o->timeout_ms = (uint32_t)v;
        } else if (cmd && (strcmp(a, "-c") == 0 || strcmp(a, "--channel") == 0)) {
            NEED_VALUE();
            o->channel = next;
        } else if (cmd && (strcmp(a, "-l") == 0 || strcmp(a, "--loc") == 0 ||
                           strcmp(a, "--location") == 0)) {
            NEED_VALUE();
            o->loc = next;
        } else if (cmd && (strcmp(a, "-k") == 0 || strcmp(a, "--key") == 0)) {
            NEED_VALUE();
            o->key = next;
        } else if (cmd && (strcmp(a, "-b") == 0 || strcmp(a, "--breakdown") == 0)) {
            o->breakdown = true;
        } else if (cmd && (strcmp(a, "-t") == 0 || strcmp(a, "--ttl") == 0)) {
            NEED_VALUE();
            if (!parse_duration(next, &o->ttl_ms))
                return usage_error("bad duration %s (try 15m, 30s, 500ms)", next);
            o->have_ttl = true;
        } else if (cmd && strcmp(a, "--seq") == 0) {
            NEED_VALUE();
            if (!parse_u64(next, &o->seq))
                return usage_error("bad sequence %s", next);
            o->have_seq = true;
        } else if (cmd && (strcmp(a, "-n") == 0 || strcmp(a, "--network") == 0)) {
            o->network = true;
        } else if (cmd && (strcmp(a, "-s") == 0 || strcmp(a, "--since") == 0)) {
            NEED_VALUE();
            if (!parse_u64(next, &o->since))
                return usage_error("bad cursor %s", next);
        } else if (cmd && (strcmp(a, "-w") == 0 || strcmp(a, "--wait") == 0)) {
            NEED_VALUE();
            if (!parse_duration(next, &o->wait_ms) || o->wait_ms > UINT32_MAX)
                return usage_error("bad duration %s (try 30s, 500ms)", next);
        } else if (cmd && (strcmp(a, "-m") == 0 || strcmp(a, "--max") == 0)) {
            NEED_VALUE();
            uint64_t v;
            if (!parse_u64(next, &v) || v == 0 || v > ATP_CHANGES_MAX)
                return usage_error("bad max %s (1..1000)", next);
            o->max = (uint32_t)v;
        } else if (a[0] == '-' && a[1] != 0 && !is_number(a)) {
            return usage_error("unknown option %s", a);
        } else if (!cmd) {
            cmd = a;
        } else {
            if (o->npos >= MAX_ARGS)
                return usage_error("too many arguments (at most %s)", "1024");
            o->pos[o->npos++] = a;
        }
#undef NEED_VALUE
    }
    if (!cmd)
        return usage_error("%s", "no command given");
    *ret_cmd = cmd;
    return -1;
}

/* --- output ----------------------------------------------------------------- */

static void json_print(json_object *j)
{
    puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
}

static json_object *jstr_or_null(const char *s)
{
    return s && *s ? json_object_new_string(s) : NULL;
}

static void add_breakdown_json(json_object *j, const struct atp_breakdown *b, bool breakdown)
{
    json_object_object_add(j, "atp", json_object_new_int64(b->atp));
    if (breakdown) {
        json_object_object_add(j, "on_hand", json_object_new_int64(b->on_hand));
        json_object_object_add(j, "allocated", json_object_new_int64(b->allocated));
        json_object_object_add(j, "reserved", json_object_new_int64(b->reserved));
        json_object_object_add(j, "safety", json_object_new_int64(b->safety));
    }
}

static void print_breakdown_text(const struct atp_breakdown *b)
{
    printf("atp        %" PRId64 "\n", b->atp);
    printf("on_hand    %" PRId64 "\n", b->on_hand);
    printf("allocated  %" PRId64 "\n", b->allocated);
    printf("reserved   %" PRId64 "\n", b->reserved);
    printf("safety     %" PRId64 "\n", b->safety);
}

static void format_time(uint64_t us, char *buf, size_t cap)
{
    time_t t = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, cap - n, ".%03uZ", (unsigned)(us / 1000 % 1000));
}

static void format_span(int64_t ms, char *buf, size_t cap)
{
    const char *sign = ms < 0 ? "-" : "";
    uint64_t a = ms < 0 ? (uint64_t)(-ms) : (uint64_t)ms;
    uint64_t h = a / 3600000, m = a / 60000 % 60, s = a / 1000 % 60, r = a % 1000;
    if (h)
        snprintf(buf, cap, "%s%" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s", sign, h, m, s);
    else if (m)
        snprintf(buf, cap, "%s%" PRIu64 "m%02" PRIu64 "s", sign, m, s);
    else
        snprintf(buf, cap, "%s%" PRIu64 ".%03" PRIu64 "s", sign, s, r);
}

static void print_resv(const struct opts *o, const struct atp_client_resv *r)
{
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "id", json_object_new_uint64(r->id));
        json_object_object_add(j, "state", json_object_new_string(atp_res_state_name(r->state)));
        json_object_object_add(j, "channel", json_object_new_string(r->channel));
        json_object_object_add(j, "key", json_object_new_string(r->key));
        json_object_object_add(j, "replayed", json_object_new_boolean(r->replayed));
        json_object_object_add(j, "created_us", json_object_new_uint64(r->created_us));
        json_object_object_add(j, "expires_us", json_object_new_uint64(r->expires_us));
        json_object_object_add(j, "ttl_ms", json_object_new_uint64(r->ttl_ms));
        json_object *lines = json_object_new_array();
        for (uint32_t i = 0; i < r->nlines; i++) {
            json_object *l = json_object_new_object();
            json_object_object_add(l, "sku", json_object_new_string(r->lines[i].sku));
            json_object_object_add(l, "loc", json_object_new_string(r->lines[i].loc));
            json_object_object_add(l, "qty", json_object_new_int64(r->lines[i].qty));
            json_object_object_add(l, "fulfilled", json_object_new_boolean(r->lines[i].fulfilled));
            json_object_array_add(lines, l);
        }
        json_object_object_add(j, "lines", lines);
        json_print(j);
        return;
    }
    printf("reservation %" PRIu64 " %s  (channel %s, key %s)%s\n", r->id,
           atp_res_state_name(r->state), r->channel, r->key,
           r->replayed ? "  [replayed: this key already held it]" : "");
    char when[64], span[32];
    format_time(r->created_us, when, sizeof(when));
    printf("created    %s\n", when);
    if (r->state == ATP_RES_HELD) {
        format_time(r->expires_us, when, sizeof(when));
        int64_t left_ms = ((int64_t)r->expires_us - (int64_t)atp_now_us()) / 1000;
        format_span(left_ms, span, sizeof(span));
        printf("expires    %s  (in %s, ttl %" PRIu64 " ms)\n", when, span, r->ttl_ms);
    }
    for (uint32_t i = 0; i < r->nlines; i++)
        printf("  %-24s @ %-12s x %" PRId64 "%s\n", r->lines[i].sku, r->lines[i].loc,
               r->lines[i].qty, r->lines[i].fulfilled ? "  fulfilled" : "");
}

/*
 * Report a failed call and return the exit status. Server refusals go to
 * stderr as text (or to stdout as a JSON error object); connection trouble is
 * always exit 3.
 */
static int report_error(const struct opts *o, struct atp_client *c, int rc,
                        const struct atp_shortfall *sf, uint32_t nsf,
                        const struct atp_client_line *lines)
{
    bool conn = (rc < 0 && rc > -4096) || (c && atp_client_is_broken(c));
    const char *msg = c ? atp_client_last_error(c) : "";
    if (!*msg)
        msg = atp_strerror(rc);
    if (o->json) {
        json_object *e = json_object_new_object();
        json_object_object_add(e, "code", json_object_new_string(atp_error_name(rc)));
        json_object_object_add(e, "type", json_object_new_string(atp_error_slug(rc)));
        json_object_object_add(e, "status", json_object_new_int((int)atp_error_wire(rc)));
        json_object_object_add(e, "message", json_object_new_string(msg));
        if (sf && nsf) {
            json_object *arr = json_object_new_array();
            for (uint32_t i = 0; i < nsf; i++) {
                json_object *s = json_object_new_object();
                json_object_object_add(s, "sku", json_object_new_string(lines[i].sku));
                json_object_object_add(s, "loc", jstr_or_null(lines[i].loc));
                json_object_object_add(s, "requested", json_object_new_int64(sf[i].requested));
                json_object_object_add(s, "available", json_object_new_int64(sf[i].available));
                json_object_array_add(arr, s);
            }
            json_object_object_add(e, "shortfalls", arr);
        }
        json_object *j = json_object_new_object();
        json_object_object_add(j, "error", e);
        json_print(j);
    } else {
        fprintf(stderr, "(error) %s: %s\n", atp_error_name(rc), msg);
        for (uint32_t i = 0; sf && i < nsf; i++)
            fprintf(stderr, "  %s @ %s: requested %" PRId64 ", available %" PRId64 "%s\n",
                    lines[i].sku, lines[i].loc && *lines[i].loc ? lines[i].loc : "any",
                    sf[i].requested, sf[i].available,
                    sf[i].available < sf[i].requested ? "  <- short" : "");
    }
    return conn ? EXIT_CONN : EXIT_REFUSED;
}

/* --- commands ----------------------------------------------------------------- */

static int need_pos(const struct opts *o, int n, const char *what)
{
    if (o->npos != n)
        return usage_error("expected %s", what);
    return -1;
}

static int cmd_ping(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(o, 0, "no arguments");
    if (rc >= 0)
        return rc;
    uint64_t t0 = atp_now_us();
    if ((rc = atp_client_ping(c)))
        return report_error(o, c, rc, NULL, 0, NULL);
    uint64_t rtt = atp_now_us() - t0;
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "ok", json_object_new_boolean(true));
        json_object_object_add(j, "rtt_us", json_object_new_uint64(rtt));
        json_print(j);
    } else {
        printf("PONG (%.3f ms)\n", (double)rtt / 1000.0);
    }
    return EXIT_OK;
}

static int cmd_hello(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(o, 0, "no arguments");
    if (rc >= 0)
        return rc;
    struct atp_client_hello h;
    if ((rc = atp_client_hello(c, &h)))
        return report_error(o, c, rc, NULL, 0, NULL);
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "version", json_object_new_int(h.version));
        json_object_object_add(j, "max_frame", json_object_new_int64(h.max_frame));
        json_object_object_add(j, "max_keys", json_object_new_int64(h.max_keys));
        json_object_object_add(j, "max_lines", json_object_new_int64(h.max_lines));
        json_object_object_add(j, "build", json_object_new_string(h.build));
        json_print(j);
    } else {
        printf("build      %s\nversion    %u\nmax_frame  %u\nmax_keys   %u\nmax_lines  %u\n",
               h.build, h.version, h.max_frame, h.max_keys, h.max_lines);
    }
    return EXIT_OK;
}

static int cmd_get(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(o, 1, "get SKU -c CHANNEL [-l LOC] [--breakdown]");
    if (rc >= 0)
        return rc;
    if (!o->channel)
        return usage_error("%s", "get needs -c CHANNEL");
    struct atp_breakdown b;
    if ((rc = atp_client_get(c, o->pos[0], o->channel, o->loc, o->breakdown, &b)))
        return report_error(o, c, rc, NULL, 0, NULL);
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "sku", json_object_new_string(o->pos[0]));
        json_object_object_add(j, "channel", json_object_new_string(o->channel));
        json_object_object_add(j, "loc", jstr_or_null(o->loc));
        add_breakdown_json(j, &b, o->breakdown);
        json_print(j);
    } else if (o->breakdown) {
        print_breakdown_text(&b);
    } else {
        printf("%" PRId64 "\n", b.atp);
    }
    return EXIT_OK;
}

/* Split "SKU@LOC" into sku and loc in place (loc "" when absent). */
static void split_at(char *s, const char **ret_sku, const char **ret_loc)
{
    char *at = strrchr(s, '@');
    *ret_sku = s;
    *ret_loc = "";
    if (at) {
        *at = 0;
        *ret_loc = at + 1;
    }
}

static int cmd_mget(struct opts *o, struct atp_client *c)
{
    if (o->npos < 1)
        return usage_error("%s", "mget -c CHANNEL SKU[@LOC] ...");
    if (!o->channel)
        return usage_error("%s", "mget needs -c CHANNEL");
    static struct atp_client_key keys[MAX_ARGS];
    static struct atp_client_item items[MAX_ARGS];
    static char copies[MAX_ARGS][ATP_SKU_MAX + ATP_LOC_MAX + 2];
    for (int i = 0; i < o->npos; i++) {
        snprintf(copies[i], sizeof(copies[i]), "%s", o->pos[i]);
        split_at(copies[i], &keys[i].sku, &keys[i].loc);
        keys[i].channel = o->channel;
    }
    int rc = atp_client_mget(c, keys, (uint32_t)o->npos, o->breakdown, items);
    if (rc)
        return report_error(o, c, rc, NULL, 0, NULL);
    json_object *arr = o->json ? json_object_new_array() : NULL;
    for (int i = 0; i < o->npos; i++) {
        const struct atp_client_item *it = &items[i];
        if (arr) {
            json_object *j = json_object_new_object();
            json_object_object_add(j, "sku", json_object_new_string(keys[i].sku));
            json_object_object_add(j, "loc", jstr_or_null(keys[i].loc));
            json_object_object_add(
                j, "status",
                json_object_new_string(it->status ? atp_error_slug(it->status) : "ok"));
            if (!it->status)
                add_breakdown_json(j, &it->b, o->breakdown);
            json_object_array_add(arr, j);
            continue;
        }
        char name[ATP_SKU_MAX + ATP_LOC_MAX + 2];
        snprintf(name, sizeof(name), "%s%s%s", keys[i].sku, *keys[i].loc ? "@" : "", keys[i].loc);
        if (it->status)
            printf("%-32s (error) %s\n", name, atp_strerror(it->status));
        else if (o->breakdown)
            printf("%-32s atp %-8" PRId64 " on_hand %-8" PRId64 " allocated %-8" PRId64
                   " reserved %-8" PRId64 " safety %" PRId64 "\n",
                   name, it->b.atp, it->b.on_hand, it->b.allocated, it->b.reserved, it->b.safety);
        else
            printf("%-32s %" PRId64 "\n", name, it->b.atp);
    }
    if (arr) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "channel", json_object_new_string(o->channel));
        json_object_object_add(j, "items", arr);
        json_print(j);
    }
    /* Every key is printed; any key that failed makes the exit status 1. */
    for (int i = 0; i < o->npos; i++)
        if (items[i].status)
            return EXIT_REFUSED;
    return EXIT_OK;
}

static int cmd_reserve(struct opts *o, struct atp_client *c)
{
    if (o->npos < 1 || !o->key || !o->channel)
        return usage_error("%s", "reserve --key KEY -c CHANNEL [--ttl DURATION] SKU[@LOC]:QTY ...");
    if (o->npos > ATP_MAX_LINES * 4)
        return usage_error("%s", "too many lines");
    static struct atp_client_line lines[MAX_ARGS];
    static char copies[MAX_ARGS][ATP_SKU_MAX + ATP_LOC_MAX + 32];
    for (int i = 0; i < o->npos; i++) {
        snprintf(copies[i], sizeof(copies[i]), "%s", o->pos[i]);
        char *colon = strrchr(copies[i], ':');
        int64_t qty;
        if (!colon || !parse_i64(colon + 1, &qty))
            return usage_error("bad line %s (want SKU[@LOC]:QTY)", o->pos[i]);
        *colon = 0;
        split_at(copies[i], &lines[i].sku, &lines[i].loc);
        lines[i].qty = qty;
    }
    static struct atp_client_resv r;
    static struct atp_shortfall sf[MAX_ARGS];
    uint64_t ttl = o->have_ttl ? o->ttl_ms : DEFAULT_TTL_MS;
    int rc = atp_client_reserve(c, o->key, o->channel, ttl, lines, (uint32_t)o->npos, &r, sf);
    if (rc == ATP_EINSUFFICIENT)
        return report_error(o, c, rc, sf, (uint32_t)o->npos, lines);
    if (rc)
        return report_error(o, c, rc, NULL, 0, NULL);
    print_resv(o, &r);
    return EXIT_OK;
}

static int parse_id(const struct opts *o, uint64_t *ret)
{
    if (o->npos != 1 || !parse_u64(o->pos[0], ret) || *ret == 0)
        return usage_error("%s", "expected one reservation ID (a positive number)");
    return -1;
}

static int cmd_by_id(struct opts *o, struct atp_client *c, uint8_t op)
{
    uint64_t id;
    int rc = parse_id(o, &id);
    if (rc >= 0)
        return rc;
    static struct atp_client_resv r;
    if (op == ATP_OP_COMMIT)
        rc = atp_client_commit(c, id, &r);
    else if (op == ATP_OP_RELEASE)
        rc = atp_client_release(c, id, &r);
    else if (!o->have_ttl)
        return usage_error("%s", "extend needs --ttl DURATION");
    else
        rc = atp_client_extend(c, id, o->ttl_ms, &r);
    if (rc)
        return report_error(o, c, rc, NULL, 0, NULL);
    print_resv(o, &r);
    return EXIT_OK;
}

static int cmd_reservation(struct opts *o, struct atp_client *c)
{
    uint64_t id = 0;
    int rc;
    if (o->key) {
        if (o->npos)
            return usage_error("%s", "reservation takes an ID or --key KEY, not both");
    } else if ((rc = parse_id(o, &id)) >= 0) {
        return rc;
    }
    static struct atp_client_resv r;
    if ((rc = atp_client_get_reservation(c, id, o->key, &r)))
        return report_error(o, c, rc, NULL, 0, NULL);
    print_resv(o, &r);
    return EXIT_OK;
}

static int cmd_adjust(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(o, 3, "adjust SKU LOC DELTA");
    if (rc >= 0)
        return rc;
    int64_t delta, on_hand;
    if (!parse_i64(o->pos[2], &delta))
        return usage_error("bad delta %s", o->pos[2]);
    if ((rc = atp_client_adjust(c, o->pos[0], o->pos[1], delta, &on_hand)))
        return report_error(o, c, rc, NULL, 0, NULL);
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "sku", json_object_new_string(o->pos[0]));
        json_object_object_add(j, "loc", json_object_new_string(o->pos[1]));
        json_object_object_add(j, "on_hand", json_object_new_int64(on_hand));
        json_print(j);
    } else {
        printf("on_hand    %" PRId64 "\n", on_hand);
    }
    return EXIT_OK;
}

static int cmd_set(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(o, 3, "set SKU LOC QTY [--seq N]");
    if (rc >= 0)
        return rc;
    int64_t qty;
    if (!parse_i64(o->pos[2], &qty))
        return usage_error("bad quantity %s", o->pos[2]);
    if ((rc = atp_client_set(c, o->pos[0], o->pos[1], qty, o->have_seq ? o->seq : 0)))
        return report_error(o, c, rc, NULL, 0, NULL);
    if (o->json) {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "ok", json_object_new_boolean(true));
        json_print(j);
    } else {
        puts("OK");
    }
    return EXIT_OK;
}

/*
 * In JSON the cursors are strings: they use all 64 bits, and a double (what
 * jq and JavaScript read numbers into) would round them.
 */
static int cmd_changes(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(
        o, 0, "changes -c CHANNEL [--network] [--since CURSOR] [--max N] [--wait DURATION]");
    if (rc >= 0)
        return rc;
    if (!o->channel)
        return usage_error("%s", "changes needs -c CHANNEL");
    static struct atp_client_change ch[ATP_CHANGES_MAX];
    /* Without --max: the most the server allows (HELLO's max_keys, which
     * also bounds CHANGES); a start (no --since) carries no entries. */
    uint32_t max = o->max, n;
    if (!max && o->since == 0) {
        max = 1;
    } else if (!max) {
        struct atp_client_hello h;
        if ((rc = atp_client_hello(c, &h)))
            return report_error(o, c, rc, NULL, 0, NULL);
        max = h.max_keys && h.max_keys < ATP_CHANGES_MAX ? h.max_keys : ATP_CHANGES_MAX;
    }
    uint64_t next;
    bool more;
    if ((rc = atp_client_changes_wait(c, o->channel, o->since, o->network, max,
                                      (uint32_t)o->wait_ms, ch, &n, &next, &more)))
        return report_error(o, c, rc, NULL, 0, NULL);
    if (o->json) {
        char cur[24];
        snprintf(cur, sizeof(cur), "%" PRIu64, next);
        json_object *j = json_object_new_object();
        json_object_object_add(j, "channel", json_object_new_string(o->channel));
        json_object_object_add(j, "cursor", json_object_new_string(cur));
        json_object_object_add(j, "more", json_object_new_boolean(more));
        json_object *arr = json_object_new_array();
        for (uint32_t i = 0; i < n; i++) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "sku", json_object_new_string(ch[i].sku));
            json_object_object_add(e, "loc", jstr_or_null(ch[i].loc));
            json_object_object_add(e, "atp", json_object_new_int64(ch[i].atp));
            json_object_array_add(arr, e);
        }
        json_object_object_add(j, "changes", arr);
        json_print(j);
        return EXIT_OK;
    }
    printf("cursor     %" PRIu64 "\nmore       %d\n", next, more ? 1 : 0);
    for (uint32_t i = 0; i < n; i++) {
        char name[ATP_SKU_MAX + ATP_LOC_MAX + 2];
        snprintf(name, sizeof(name), "%s%s%s", ch[i].sku, *ch[i].loc ? "@" : "", ch[i].loc);
        printf("%-32s %" PRId64 "\n", name, ch[i].atp);
    }
    return EXIT_OK;
}

struct stats_out {
    bool json;
    json_object *obj;
};

static int stat_line(void *arg, const char *name, int64_t value)
{
    struct stats_out *s = arg;
    if (s->json)
        json_object_object_add(s->obj, name, json_object_new_int64(value));
    else
        printf("%-36s %" PRId64 "\n", name, value);
    return 0;
}

static int cmd_stats(struct opts *o, struct atp_client *c)
{
    int rc = need_pos(o, 0, "no arguments");
    if (rc >= 0)
        return rc;
    struct stats_out s = {o->json, o->json ? json_object_new_object() : NULL};
    rc = atp_client_stats(c, stat_line, &s);
    if (rc) {
        json_object_put(s.obj);
        return report_error(o, c, rc, NULL, 0, NULL);
    }
    if (s.obj)
        json_print(s.obj);
    return EXIT_OK;
}

static int cmd_commit(struct opts *o, struct atp_client *c)
{
    return cmd_by_id(o, c, ATP_OP_COMMIT);
}

static int cmd_release(struct opts *o, struct atp_client *c)
{
    return cmd_by_id(o, c, ATP_OP_RELEASE);
}

static int cmd_extend(struct opts *o, struct atp_client *c)
{
    return cmd_by_id(o, c, ATP_OP_EXTEND);
}

typedef int (*cmd_fn)(struct opts *o, struct atp_client *c);

static const struct {
    const char *name;
    cmd_fn fn;
} commands[] = {
    {"ping", cmd_ping},       {"hello", cmd_hello},     {"get", cmd_get},
    {"mget", cmd_mget},       {"reserve", cmd_reserve}, {"commit", cmd_commit},
    {"release", cmd_release}, {"extend", cmd_extend},   {"reservation", cmd_reservation},
    {"adjust", cmd_adjust},   {"set", cmd_set},         {"stats", cmd_stats},
    {"changes", cmd_changes},
};

static cmd_fn find_command(const char *name)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(commands[i].name, name) == 0)
            return commands[i].fn;
    return NULL;
}

int main(int argc, char **argv)
{
    static struct opts o;
    o.host = "127.0.0.1";
    o.port = ATP_CLIENT_DEFAULT_PORT;
    o.timeout_ms = 5000;
    const char *cmd = NULL;
    int rc = parse_args(argc, argv, &o, &cmd);
    if (rc >= 0)
        return rc;
    cmd_fn fn = find_command(cmd);
    if (!fn)
        return usage_error("unknown command %s", cmd);

    struct atp_client *c = NULL;
    rc = atp_client_connect(o.host, o.port, &c);
    if (rc) {
        if (o.json) {
            json_object *e = json_object_new_object();
            json_object_object_add(e, "code", json_object_new_string("ECONNECT"));
            json_object_object_add(e, "message", json_object_new_string(atp_strerror(rc)));
            json_object *j = json_object_new_object();
            json_object_object_add(j, "error", e);
            json_print(j);
        }
        fprintf(stderr, "atpctl: cannot connect to %s:%u: %s\n", o.host, o.port, atp_strerror(rc));
        return EXIT_CONN;
    }
    if (o.timeout_ms)
        atp_client_set_timeout(c, o.timeout_ms);
    rc = fn(&o, c);
    atp_client_close(c);
    return rc;
}
