/*
 * config.c - directive table, parsers and layering for atpd's configuration.
 *
 * Every directive is a row of `directives[]`: its name, value syntax, where
 * it lands in struct atp_config, and its range. The file parser, the
 * environment loader, the command-line flags (main.c) and --help all walk
 * the same table. Knows nothing about sockets, threads or logging.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atp/durable.h"
#include "log.h"

extern char **environ;

#define CONFIG_FILE_MAX (4u << 20) /* a config file is small; refuse a huge one */

enum kind {
    K_U32,      /* integer in [min, max] */
    K_SIZE,     /* bytes with an optional k/m/g suffix, in [min, max] */
    K_DURATION, /* ms/s/m/h/d suffix or a bare number in `unit_ms`, in [min, max] ms */
    K_BOOL,     /* yes/no */
    K_BIND,     /* numeric address into a fixed buffer */
    K_STRING,   /* heap string, "" means unset (NULL) */
    K_LOGLEVEL,
    K_LOGFORMAT,
    K_RECVMODE,
    K_FSYNC,   /* always|everysec|no (atp/durable.h) */
    K_CHANNEL, /* repeatable; see parse_channel */
};

struct directive {
    struct atp_config_directive_info info;
    enum kind kind;
    size_t off;
    uint64_t min, max;
    uint64_t unit_ms; /* K_DURATION: unit of a bare number */
};

#define OFF(f) offsetof(struct atp_config, f)
#define D(n, a, h, k, f, lo, hi, u)                                                                \
    {                                                                                              \
        {(n), (a), (h), (k) == K_BOOL}, (k), OFF(f), (lo), (hi), (u)                               \
    }

/* clang-format off */
static const struct directive directives[] = {
    D("bind", "ADDR", "numeric IPv4/IPv6 address to listen on (default 127.0.0.1)",
      K_BIND, bind, 0, 0, 0),
    D("port", "N", "TCP port of the binary protocol, 0 for an ephemeral port (default 7400)",
      K_U32, port, 0, 65535, 0),
    D("port-file", "PATH", "write the bound port to PATH once listening",
      K_STRING, port_file, 0, 0, 0),
    D("workers", "N", "io_uring worker threads, 0 = one per online CPU (default 0)",
      K_U32, workers, 0, 256, 0),
    D("busy-poll", "US", "a worker with nothing to do polls its ring this many microseconds "
      "before it sleeps: lower tail latency where waking an idle core is slow (virtual "
      "machines), for a core kept busy; 0 = off (default 0)",
      K_U32, busy_poll_us, 0, 100000, 0),
    D("recv-mode", "auto|multishot|plain", "receive path: multishot recv with a buffer ring, "
      "plain recv, or auto-detect (default auto)", K_RECVMODE, recv_mode, 0, 0, 0),
    D("max-connections", "N", "open client connections at most (default 10000)",
      K_U32, max_connections, 1, 1000000, 0),
    D("max-frame", "SIZE", "largest request frame accepted (default 1mb)",
      K_SIZE, max_frame, 64, 64u << 20, 0),
    D("max-keys", "N", "keys per MGET request (default 1000)",
      K_U32, max_keys, 1, 65535, 0),
    D("max-lines", "N", "lines per reservation (default 32, at most 32)",
      K_U32, max_lines, 1, ATP_MAX_LINES, 0),
    D("idle-timeout", "DURATION", "close connections idle this long, 0 = never (default 300s)",
      K_DURATION, idle_timeout_ms, 0, 30ull * 86400 * 1000, 1000),
    D("output-buffer-limit", "SIZE", "pending response bytes per connection before the "
      "server stops reading from it (default 4mb)",
      K_SIZE, output_buffer_limit, 4096, 1ull << 32, 0),
    D("shutdown-timeout", "DURATION", "bound on the graceful drain after SIGTERM (default 5s)",
      K_DURATION, shutdown_timeout_ms, 0, 3600ull * 1000, 1000),
    D("drain-delay", "DURATION", "after SIGTERM, keep serving this long with /readyz at 503 "
      "before the drain begins, so load balancers stop sending work first (default 0)",
      K_DURATION, drain_delay_ms, 0, 3600ull * 1000, 1000),
    D("http", "yes|no", "serve the HTTP/JSON API, /metrics, /livez and /readyz (default yes)",
      K_BOOL, http, 0, 0, 0),
    D("http-bind", "ADDR", "numeric address of the HTTP listener (default 127.0.0.1)",
      K_BIND, http_bind, 0, 0, 0),
    D("http-port", "N", "TCP port of the HTTP/JSON API, 0 for an ephemeral port (default 7480)",
      K_U32, http_port, 0, 65535, 0),
    D("http-port-file", "PATH", "write the bound HTTP port to PATH once listening",
      K_STRING, http_port_file, 0, 0, 0),
    D("http-request-timeout", "DURATION", "an HTTP request must arrive whole within this "
      "time of its first byte, else 408 and close (slow clients); 0 = no bound (default 10s)",
      K_DURATION, http_request_timeout_ms, 0, 3600ull * 1000, 1000),
    D("http-max-header", "SIZE", "largest HTTP request line plus headers, else 431 "
      "(default 8kb)", K_SIZE, http_max_header, 1024, 1u << 20, 0),
    D("http-max-body", "SIZE", "largest HTTP request body, else 413 (default 1mb)",
      K_SIZE, http_max_body, 64, 64u << 20, 0),
    D("log-level", "debug|info|warn|error", "lowest level logged (default info)",
      K_LOGLEVEL, log_level, 0, 0, 0),
    D("log-format", "logfmt|json", "log line format on stderr (default logfmt)",
      K_LOGFORMAT, log_format, 0, 0, 0),
    D("max-items", "N", "(sku, location) pairs the store holds (default 1048576)",
      K_U32, max_items, 1, 1u << 30, 0),
    D("max-reservations", "N", "reservation records held at once (default 262144)",
      K_U32, max_reservations, 1, 1u << 30, 0),
    D("max-ttl", "DURATION", "longest reservation TTL (default 24h)",
      K_DURATION, max_ttl_ms, 1, 365ull * 86400 * 1000, 1000),
    D("idempotency-window", "DURATION", "how long finished reservations and their keys are "
      "kept (default 10m)", K_DURATION, idempotency_window_ms, 0, 30ull * 86400 * 1000, 1000),
    D("feed-size", "N", "change-feed records kept, rounded up to a power of two: a cursor "
      "older than that many changes must start again (default 1048576)",
      K_U32, feed_records, 1024, 1u << 30, 0),
    D("feed-wait-max", "DURATION", "longest a change-feed request may wait for a change before "
      "it is answered with none; longer waits are cut to this, 0 = answer at once "
      "(default 30s)", K_DURATION, feed_wait_max_ms, 0, 300ull * 1000, 1000),
    D("channel", "NAME [safety=N] [pct=N] [cap=N] [locations=all|L1,L2]",
      "a sales channel; repeat for each (replaces the default web, app, marketplace)",
      K_CHANNEL, channels, 0, 0, 0),
    D("demo", "yes|no", "load a generated catalogue of 100k SKUs at start (default no)",
      K_BOOL, demo, 0, 0, 0),
    D("dir", "PATH", "data folder of the write-ahead log and snapshots; unset = nothing "
      "survives a restart (default unset)", K_STRING, dir, 0, 0, 0),
    D("appendfsync", "always|everysec|no", "flush the log before acknowledging each change, "
      "once a second, or when the kernel likes (default always)", K_FSYNC, appendfsync, 0, 0, 0),
    D("snapshot-interval", "DURATION", "take a snapshot this often when the log grew "
      "(default 5m)", K_DURATION, snapshot_interval_ms, 1000, 30ull * 86400 * 1000, 1000),
    D("snapshot-log-size", "SIZE", "take a snapshot as soon as the log holds this much "
      "(default 256mb)", K_SIZE, snapshot_log_size, 1u << 20, 1ull << 40, 0),
    D("durability-repair", "yes|no", "start even on a damaged log, cutting it at the first "
      "damaged record and losing what follows (default no)", K_BOOL, durability_repair,
      0, 0, 0),
    D("kafka-brokers", "HOST:PORT,...", "Kafka bootstrap servers (default: none)",
      K_STRING, kafka_brokers, 0, 0, 0),
    D("kafka-embedded", "yes|no", "with no kafka-brokers, run an embedded broker in-process "
      "(librdkafka's mock cluster on 127.0.0.1) and consume from it (default yes)",
      K_BOOL, kafka_embedded, 0, 0, 0),
    D("kafka-topic", "NAME", "inventory event topic", K_STRING, kafka_topic, 0, 0, 0),
    D("kafka-group", "NAME", "Kafka consumer group", K_STRING, kafka_group, 0, 0, 0),
};
/* clang-format on */

#define NDIRECTIVES (sizeof(directives) / sizeof(directives[0]))

const struct atp_config_directive_info *atp_config_directive(size_t i)
{
    return i < NDIRECTIVES ? &directives[i].info : NULL;
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return ATP_EINVAL;
}

/* --- defaults ------------------------------------------------------------ */

static void channel_set(struct atp_config_channel *ch, const char *name, int64_t safety,
                        uint32_t pct, int64_t cap, const char *const *locs, uint32_t nlocs)
{
    memset(ch, 0, sizeof(*ch));
    snprintf(ch->name, sizeof(ch->name), "%s", name);
    ch->safety_units = safety;
    ch->safety_pct = pct;
    ch->cap = cap;
    ch->nlocations = nlocs;
    for (uint32_t i = 0; i < nlocs; i++)
        snprintf(ch->locations[i], sizeof(ch->locations[i]), "%s", locs[i]);
}

void atp_config_init(struct atp_config *cfg)
{
    static const char *const mp_locs[] = {"DC1", "DC2"};
    struct atp_store_config sc;
    atp_store_config_defaults(&sc);

    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->bind, sizeof(cfg->bind), "127.0.0.1");
    cfg->port = ATP_CONFIG_DEFAULT_PORT;
    cfg->workers = 0;
    cfg->recv_mode = ATP_RECV_AUTO;
    cfg->max_connections = 10000;
    cfg->max_frame = 1u << 20;
    cfg->max_keys = 1000;
    cfg->max_lines = ATP_MAX_LINES;
    cfg->idle_timeout_ms = 300 * 1000;
    cfg->output_buffer_limit = 4u << 20;
    cfg->shutdown_timeout_ms = 5000;
    cfg->http = true;
    cfg->kafka_embedded = true;
    snprintf(cfg->http_bind, sizeof(cfg->http_bind), "127.0.0.1");
    cfg->http_port = 7480;
    cfg->http_request_timeout_ms = 10000;
    cfg->http_max_header = 8192;
    cfg->http_max_body = 1u << 20;
    cfg->log_level = ATP_LOG_INFO;
    cfg->log_format = ATP_LOG_LOGFMT;
    cfg->max_items = sc.max_items ? sc.max_items : 1u << 20;
    cfg->max_reservations = sc.max_reservations ? sc.max_reservations : 256u << 10;
    cfg->max_ttl_ms = sc.max_ttl_ms ? sc.max_ttl_ms : 24ull * 3600 * 1000;
    cfg->idempotency_window_ms = sc.idempotency_window_ms;
    cfg->feed_records = sc.feed_records;
    cfg->feed_wait_max_ms = 30 * 1000;
    cfg->appendfsync = ATP_FSYNC_ALWAYS;
    cfg->snapshot_interval_ms = 300 * 1000;
    cfg->snapshot_log_size = 256ull << 20;
    /* The embedded channel set: a web shop, an app with a thinner buffer,
     * and a marketplace that sees a capped, safer share of two warehouses. */
    channel_set(&cfg->channels[0], "web", 2, 0, -1, NULL, 0);
    channel_set(&cfg->channels[1], "app", 1, 0, -1, NULL, 0);
    channel_set(&cfg->channels[2], "marketplace", 5, 10, 50, mp_locs, 2);
    cfg->nchannels = 3;
    cfg->channels_layer = ATP_CONF_DEFAULT;
}

void atp_config_free(struct atp_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        if (directives[i].kind == K_STRING) {
            char **p = (char **)((char *)cfg + directives[i].off);
            free(*p);
            *p = NULL;
        }
    }
    for (uint32_t i = 0; i < cfg->nkafka_props; i++) {
        free(cfg->kafka_props[i].key);
        free(cfg->kafka_props[i].value);
    }
    free(cfg->kafka_props);
    cfg->kafka_props = NULL;
    cfg->nkafka_props = 0;
}

/* --- value parsers --------------------------------------------------------- */

static int parse_u64(const char *s, uint64_t *ret, const char **ret_end)
{
    if (!isdigit((unsigned char)*s))
        return ATP_EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return ATP_EINVAL;
    *ret = v;
    *ret_end = end;
    return 0;
}

static int parse_i64(const char *s, int64_t *ret)
{
    if (*s == '\0')
        return ATP_EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end != '\0' || !(isdigit((unsigned char)*s) || *s == '-'))
        return ATP_EINVAL;
    *ret = v;
    return 0;
}

static int mul_ok(uint64_t a, uint64_t b, uint64_t *ret)
{
    if (b != 0 && a > UINT64_MAX / b)
        return ATP_EINVAL;
    *ret = a * b;
    return 0;
}

int atp_config_parse_duration_ms(const char *s, uint64_t unit_ms, uint64_t *ret_ms)
{
    uint64_t v, mult;
    const char *end;
    if (parse_u64(s, &v, &end) != 0)
        return ATP_EINVAL;
    if (*end == '\0')
        mult = unit_ms ? unit_ms : 1;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        mult = 60 * 1000;
    else if (strcmp(end, "h") == 0)
        mult = 3600 * 1000;
    else if (strcmp(end, "d") == 0)
        mult = 86400 * 1000;
    else
        return ATP_EINVAL;
    uint64_t r;
    if (mul_ok(v, mult, &r) != 0)
        return ATP_EINVAL;
    *ret_ms = r;
    return 0;
}

int atp_config_parse_size(const char *s, uint64_t *ret_bytes)
{
    uint64_t v, mult;
    const char *end;
    if (parse_u64(s, &v, &end) != 0)
        return ATP_EINVAL;
    if (*end == '\0' || strcasecmp(end, "b") == 0)
        mult = 1;
    else if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0)
        mult = 1ull << 10;
    else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0)
        mult = 1ull << 20;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0)
        mult = 1ull << 30;
    else
        return ATP_EINVAL;
    uint64_t r;
    if (mul_ok(v, mult, &r) != 0)
        return ATP_EINVAL;
    *ret_bytes = r;
    return 0;
}

static int parse_bool(const char *s, bool *ret)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *ret = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *ret = false;
            return 0;
        }
    }
    return ATP_EINVAL;
}

/* --- channels ---------------------------------------------------------- */

static bool name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    return n >= 1 && n <= max && atp_validate_sku((struct atp_slice){s, (uint32_t)n}) == 0;
}

static int parse_locations(struct atp_config_channel *ch, const char *v, char *err, size_t errlen)
{
    ch->nlocations = 0;
    if (strcmp(v, "all") == 0 || strcmp(v, "*") == 0)
        return 0;
    const char *p = v;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (ch->nlocations == ATP_CONFIG_MAX_LOCATIONS)
            return fail(err, errlen, "channel %s: more than %d locations", ch->name,
                        ATP_CONFIG_MAX_LOCATIONS);
        if (n == 0 || n > ATP_LOC_MAX || atp_validate_loc((struct atp_slice){p, (uint32_t)n}) != 0)
            return fail(err, errlen, "channel %s: invalid location '%.*s'", ch->name, (int)n, p);
        for (uint32_t i = 0; i < ch->nlocations; i++)
            if (strlen(ch->locations[i]) == n && memcmp(ch->locations[i], p, n) == 0)
                return fail(err, errlen, "channel %s: location '%.*s' listed twice", ch->name,
                            (int)n, p);
        memcpy(ch->locations[ch->nlocations], p, n);
        ch->locations[ch->nlocations][n] = '\0';
        ch->nlocations++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* "NAME [safety=N] [pct=N] [cap=N] [locations=all|L1,L2]" */
static int parse_channel(struct atp_config *cfg, enum atp_config_layer layer, const char *value,
                         char *err, size_t errlen)
{
    char buf[4096];
    if (strlen(value) >= sizeof(buf))
        return fail(err, errlen, "channel: definition too long");
    snprintf(buf, sizeof(buf), "%s", value);

    struct atp_config_channel ch;
    memset(&ch, 0, sizeof(ch));
    ch.cap = -1;
    char *save = NULL;
    char *tok = strtok_r(buf, " \t", &save);
    if (tok == NULL)
        return fail(err, errlen, "channel: expected a name");
    if (!name_ok(tok, ATP_CHANNEL_MAX))
        return fail(err, errlen, "channel: invalid name '%s' (1..%d bytes of [A-Za-z0-9._:/-])",
                    tok, ATP_CHANNEL_MAX);
    snprintf(ch.name, sizeof(ch.name), "%s", tok);
    while ((tok = strtok_r(NULL, " \t", &save)) != NULL) {
        char *eq = strchr(tok, '=');
        if (eq == NULL)
            return fail(err, errlen, "channel %s: expected key=value, got '%s'", ch.name, tok);
        *eq = '\0';
        const char *k = tok, *v = eq + 1;
        int64_t n;
        if (strcmp(k, "safety") == 0) {
            if (parse_i64(v, &n) != 0 || n < 0 || n > ATP_QTY_MAX)
                return fail(err, errlen, "channel %s: safety must be an integer >= 0", ch.name);
            ch.safety_units = n;
        } else if (strcmp(k, "pct") == 0) {
            if (parse_i64(v, &n) != 0 || n < 0 || n > 100)
                return fail(err, errlen, "channel %s: pct must be an integer in 0..100", ch.name);
            ch.safety_pct = (uint32_t)n;
        } else if (strcmp(k, "cap") == 0) {
            if (parse_i64(v, &n) != 0 || n > ATP_QTY_MAX)
                return fail(err, errlen, "channel %s: cap must be an integer (-1: none)", ch.name);
            ch.cap = n < 0 ? -1 : n;
        } else if (strcmp(k, "locations") == 0) {
            int rc = parse_locations(&ch, v, err, errlen);
            if (rc != 0)
                return rc;
        } else {
            return fail(err, errlen, "channel %s: unknown attribute '%s'", ch.name, k);
        }
    }

    /* A layer that names channels replaces the set of every lower layer. */
    if (cfg->channels_layer < (int)layer) {
        cfg->nchannels = 0;
        cfg->channels_layer = (int)layer;
    }
    for (uint32_t i = 0; i < cfg->nchannels; i++) {
        if (strcmp(cfg->channels[i].name, ch.name) == 0) {
            cfg->channels[i] = ch; /* redefined within the layer: last wins */
            return 0;
        }
    }
    if (cfg->nchannels == ATP_MAX_CHANNELS)
        return fail(err, errlen, "channel %s: more than %d channels", ch.name, ATP_MAX_CHANNELS);
    cfg->channels[cfg->nchannels++] = ch;
    return 0;
}

/* --- kafka.<property> ---------------------------------------------------- */

static int set_kafka_prop(struct atp_config *cfg, const char *key, const char *value, char *err,
                          size_t errlen)
{
    if (*key == '\0')
        return fail(err, errlen, "kafka.: expected a property name after 'kafka.'");
    for (uint32_t i = 0; i < cfg->nkafka_props; i++) {
        if (strcmp(cfg->kafka_props[i].key, key) == 0) {
            char *v = strdup(value);
            if (v == NULL)
                return -ENOMEM;
            free(cfg->kafka_props[i].value);
            cfg->kafka_props[i].value = v;
            return 0;
        }
    }
    struct atp_config_kv *kv =
        realloc(cfg->kafka_props, (cfg->nkafka_props + 1) * sizeof(*cfg->kafka_props));
    if (kv == NULL)
        return -ENOMEM;
    cfg->kafka_props = kv;
    char *k = strdup(key), *v = strdup(value);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return -ENOMEM;
    }
    kv[cfg->nkafka_props].key = k;
    kv[cfg->nkafka_props].value = v;
    cfg->nkafka_props++;
    return 0;
}

/* --- one directive --------------------------------------------------------- */

static const struct directive *find_directive(const char *name)
{
    for (size_t i = 0; i < NDIRECTIVES; i++)
        if (strcmp(directives[i].info.name, name) == 0)
            return &directives[i];
    return NULL;
}

static int set_directive(struct atp_config *cfg, enum atp_config_layer layer,
                         const struct directive *d, const char *value, char *err, size_t errlen)
{
    void *field = (char *)cfg + d->off;
    const char *name = d->info.name;
    uint64_t v = 0;
    int x;

    switch (d->kind) {
    case K_U32: {
        const char *end;
        if (parse_u64(value, &v, &end) != 0 || *end != '\0' || v < d->min || v > d->max)
            return fail(err, errlen,
                        "%s: expected an integer in %" PRIu64 "..%" PRIu64 ", got '%s'", name,
                        d->min, d->max, value);
        uint32_t u = (uint32_t)v;
        memcpy(field, &u, sizeof(u));
        return 0;
    }
    case K_SIZE:
        if (atp_config_parse_size(value, &v) != 0 || v < d->min || v > d->max)
            return fail(err, errlen,
                        "%s: expected a size in %" PRIu64 "..%" PRIu64
                        " bytes (suffix k, m or g allowed), got '%s'",
                        name, d->min, d->max, value);
        if (d->max <= UINT32_MAX) {
            uint32_t u = (uint32_t)v;
            memcpy(field, &u, sizeof(u));
        } else {
            memcpy(field, &v, sizeof(v));
        }
        return 0;
    case K_DURATION:
        if (atp_config_parse_duration_ms(value, d->unit_ms, &v) != 0 || v < d->min || v > d->max)
            return fail(err, errlen,
                        "%s: expected a duration (e.g. 500ms, 30s, 15m, 2h; a bare number is "
                        "seconds) in %" PRIu64 "..%" PRIu64 " ms, got '%s'",
                        name, d->min, d->max, value);
        memcpy(field, &v, sizeof(v));
        return 0;
    case K_BOOL: {
        bool b;
        if (parse_bool(value, &b) != 0)
            return fail(err, errlen, "%s: expected yes or no, got '%s'", name, value);
        memcpy(field, &b, sizeof(b));
        return 0;
    }
    case K_BIND: {
        unsigned char addr[16];
        if (strlen(value) >= ATP_CONFIG_BIND_MAX ||
            (inet_pton(AF_INET, value, addr) != 1 && inet_pton(AF_INET6, value, addr) != 1))
            return fail(err, errlen, "%s: expected a numeric IPv4 or IPv6 address, got '%s'", name,
                        value);
        snprintf(field, ATP_CONFIG_BIND_MAX, "%s", value);
        return 0;
    }
    case K_STRING: {
        char **p = field;
        char *s = NULL;
        if (*value != '\0' && (s = strdup(value)) == NULL)
            return -ENOMEM;
        free(*p);
        *p = s;
        return 0;
    }
    case K_LOGLEVEL:
        if ((x = atp_log_level_parse(value)) < 0)
            return fail(err, errlen, "%s: expected debug, info, warn or error, got '%s'", name,
                        value);
        memcpy(field, &x, sizeof(x));
        return 0;
    case K_LOGFORMAT:
        if ((x = atp_log_format_parse(value)) < 0)
            return fail(err, errlen, "%s: expected logfmt or json, got '%s'", name, value);
        memcpy(field, &x, sizeof(x));
        return 0;
    case K_FSYNC:
        if (atp_fsync_policy_parse(value, &x) != 0)
            return fail(err, errlen, "%s: expected always, everysec or no, got '%s'", name, value);
        memcpy(field, &x, sizeof(x));
        return 0;
    case K_RECVMODE:
        if (strcmp(value, "auto") == 0)
            x = ATP_RECV_AUTO;
        else if (strcmp(value, "multishot") == 0)
            x = ATP_RECV_MULTISHOT;
        else if (strcmp(value, "plain") == 0)
            x = ATP_RECV_PLAIN;
        else
            return fail(err, errlen, "%s: expected auto, multishot or plain, got '%s'", name,
                        value);
        memcpy(field, &x, sizeof(x));
        return 0;
    case K_CHANNEL:
        return parse_channel(cfg, layer, value, err, errlen);
    }
    return fail(err, errlen, "%s: internal error", name);
}

int atp_config_set(struct atp_config *cfg, enum atp_config_layer layer, const char *name,
                   const char *value, char *err, size_t errlen)
{
    if (strncmp(name, "kafka.", 6) == 0)
        return set_kafka_prop(cfg, name + 6, value, err, errlen);
    const struct directive *d = find_directive(name);
    if (d == NULL)
        return fail(err, errlen, "unknown directive '%s'", name);
    return set_directive(cfg, layer, d, value, err, errlen);
}

/* --- file ------------------------------------------------------------------ */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static int load_line(struct atp_config *cfg, char *line, char *err, size_t errlen)
{
    line = trim(line);
    if (*line == '\0' || *line == '#')
        return 0;
    char *name = line;
    char *value = line + strcspn(line, " \t");
    if (*value != '\0')
        *value++ = '\0';
    value = trim(value);
    size_t vl = strlen(value);
    if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
        value[vl - 1] = '\0';
        value++;
    } else if (*value == '\0') {
        return fail(err, errlen, "%s: missing value", name);
    }
    return atp_config_set(cfg, ATP_CONF_FILE, name, value, err, errlen);
}

int atp_config_load_text(struct atp_config *cfg, const char *text, size_t len, const char *origin,
                         char *err, size_t errlen)
{
    unsigned lineno = 0;
    size_t pos = 0;
    char msg[512];
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n')
            end++;
        lineno++;
        size_t n = end - pos;
        char *line = malloc(n + 1);
        if (line == NULL)
            return -ENOMEM;
        memcpy(line, text + pos, n);
        line[n] = '\0';
        int rc = memchr(line, '\0', n) ? fail(msg, sizeof(msg), "NUL byte in line")
                                       : load_line(cfg, line, msg, sizeof(msg));
        free(line);
        if (rc != 0) {
            if (rc == -ENOMEM)
                snprintf(msg, sizeof(msg), "out of memory");
            fail(err, errlen, "%s:%u: %s", origin ? origin : "config", lineno, msg);
            return rc;
        }
        pos = end + 1;
    }
    return 0;
}

int atp_config_load_file(struct atp_config *cfg, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fail(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > CONFIG_FILE_MAX) {
        close(fd);
        return fail(err, errlen, "%s: not a regular file of at most %u bytes", path,
                    CONFIG_FILE_MAX);
    }
    size_t len = (size_t)st.st_size;
    char *text = malloc(len + 1);
    if (text == NULL) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, text + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    int rc = atp_config_load_text(cfg, text, got, path, err, errlen);
    free(text);
    return rc;
}

/* --- environment --------------------------------------------------------- */

static const char *env_find(char *const *envp, const char *name)
{
    size_t n = strlen(name);
    for (char *const *e = envp; e && *e; e++)
        if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
            return *e + n + 1;
    return NULL;
}

int atp_config_load_env(struct atp_config *cfg, char *const *envp, char *err, size_t errlen)
{
    if (envp == NULL)
        envp = environ;
    char msg[512];
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        const struct directive *d = &directives[i];
        char var[64] = "ATPD_";
        size_t n = 5;
        for (const char *p = d->info.name; *p && n + 1 < sizeof(var); p++)
            var[n++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
        var[n] = '\0';
        const char *value = env_find(envp, var);
        if (value == NULL)
            continue;
        int rc = 0;
        if (d->kind == K_CHANNEL) {
            /* Several definitions separated by ';'. */
            char *copy = strdup(value), *save = NULL;
            if (copy == NULL)
                return -ENOMEM;
            for (char *def = strtok_r(copy, ";", &save); def && rc == 0;
                 def = strtok_r(NULL, ";", &save)) {
                def = trim(def);
                if (*def)
                    rc = set_directive(cfg, ATP_CONF_ENV, d, def, msg, sizeof(msg));
            }
            free(copy);
        } else {
            rc = set_directive(cfg, ATP_CONF_ENV, d, value, msg, sizeof(msg));
        }
        if (rc != 0) {
            fail(err, errlen, "environment %s: %s", var, msg);
            return rc;
        }
    }
    return 0;
}

/* --- validation and output ------------------------------------------------- */

int atp_config_validate(const struct atp_config *cfg, char *err, size_t errlen)
{
    if (cfg->nchannels == 0)
        return fail(err, errlen, "no channel defined");
    if (cfg->demo && cfg->max_items < ATP_CONFIG_DEMO_ITEMS)
        return fail(err, errlen, "demo needs max-items of at least %u (it is %u)",
                    ATP_CONFIG_DEMO_ITEMS, cfg->max_items);
    for (uint32_t i = 0; i < cfg->nchannels; i++)
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(cfg->channels[i].name, cfg->channels[j].name) == 0)
                return fail(err, errlen, "channel %s defined twice", cfg->channels[i].name);
    return 0;
}

/* " value\n", in quotes when the loader would otherwise cut or change it
 * (empty, blanks, a comment mark, a quote, or a CR, which trim() drops at
 * the end of a line). */
static void dump_value(FILE *out, const char *v)
{
    if (*v == '\0' || strpbrk(v, " \t\r#\"") != NULL)
        fprintf(out, " \"%s\"\n", v);
    else
        fprintf(out, " %s\n", v);
}

static void dump_string(FILE *out, const char *name, const char *v)
{
    if (v == NULL)
        return;
    fputs(name, out);
    dump_value(out, v);
}

static void dump_duration(FILE *out, const char *name, uint64_t ms)
{
    static const struct {
        uint64_t ms;
        const char *suffix;
    } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
    for (size_t i = 0; i < 4; i++) {
        if (ms != 0 && ms % units[i].ms == 0) {
            fprintf(out, "%s %" PRIu64 "%s\n", name, ms / units[i].ms, units[i].suffix);
            return;
        }
    }
    fprintf(out, "%s %" PRIu64 "ms\n", name, ms);
}

static void dump_size(FILE *out, const char *name, uint64_t b)
{
    if (b != 0 && b % (1ull << 30) == 0)
        fprintf(out, "%s %" PRIu64 "gb\n", name, b >> 30);
    else if (b != 0 && b % (1ull << 20) == 0)
        fprintf(out, "%s %" PRIu64 "mb\n", name, b >> 20);
    else if (b != 0 && b % (1ull << 10) == 0)
        fprintf(out, "%s %" PRIu64 "kb\n", name, b >> 10);
    else
        fprintf(out, "%s %" PRIu64 "\n", name, b);
}

static void dump_channel(FILE *out, const struct atp_config_channel *ch)
{
    fprintf(out, "channel %s safety=%" PRId64 " pct=%u cap=%" PRId64 " locations=", ch->name,
            ch->safety_units, ch->safety_pct, ch->cap);
    if (ch->nlocations == 0)
        fputs("all", out);
    for (uint32_t i = 0; i < ch->nlocations; i++)
        fprintf(out, "%s%s", i ? "," : "", ch->locations[i]);
    fputc('\n', out);
}

void atp_config_dump(const struct atp_config *cfg, FILE *out)
{
    static const char *const modes[] = {"auto", "multishot", "plain"};
    for (size_t i = 0; i < NDIRECTIVES; i++) {
        const struct directive *d = &directives[i];
        const void *field = (const char *)cfg + d->off;
        const char *name = d->info.name;
        uint32_t u32;
        uint64_t u64;
        int x;
        switch (d->kind) {
        case K_U32:
            memcpy(&u32, field, sizeof(u32));
            fprintf(out, "%s %u\n", name, u32);
            break;
        case K_SIZE:
            if (d->max <= UINT32_MAX) {
                memcpy(&u32, field, sizeof(u32));
                u64 = u32;
            } else {
                memcpy(&u64, field, sizeof(u64));
            }
            dump_size(out, name, u64);
            break;
        case K_DURATION:
            memcpy(&u64, field, sizeof(u64));
            dump_duration(out, name, u64);
            break;
        case K_BOOL:
            fprintf(out, "%s %s\n", name, *(const bool *)field ? "yes" : "no");
            break;
        case K_BIND:
            fprintf(out, "%s %s\n", name, (const char *)field);
            break;
        case K_STRING:
            dump_string(out, name, *(char *const *)field);
            break;
        case K_LOGLEVEL:
            memcpy(&x, field, sizeof(x));
            fprintf(out, "%s %s\n", name, atp_log_level_name(x));
            break;
        case K_LOGFORMAT:
            memcpy(&x, field, sizeof(x));
            fprintf(out, "%s %s\n", name, x == ATP_LOG_JSON ? "json" : "logfmt");
            break;
        case K_RECVMODE:
            memcpy(&x, field, sizeof(x));
            fprintf(out, "%s %s\n", name, modes[x >= 0 && x <= 2 ? x : 0]);
            break;
        case K_FSYNC:
            memcpy(&x, field, sizeof(x));
            fprintf(out, "%s %s\n", name, atp_fsync_policy_name(x));
            break;
        case K_CHANNEL:
            for (uint32_t c = 0; c < cfg->nchannels; c++)
                dump_channel(out, &cfg->channels[c]);
            break;
        }
    }
    /* Written out whole: a property name has no length limit. */
    for (uint32_t i = 0; i < cfg->nkafka_props; i++) {
        fprintf(out, "kafka.%s", cfg->kafka_props[i].key);
        dump_value(out, cfg->kafka_props[i].value);
    }
}

void atp_config_to_store(const struct atp_config *cfg, struct atp_config_store *ret)
{
    memset(ret, 0, sizeof(*ret));
    atp_store_config_defaults(&ret->store);
    ret->store.max_items = cfg->max_items;
    ret->store.max_skus = cfg->max_items;
    ret->store.max_reservations = cfg->max_reservations;
    ret->store.max_ttl_ms = cfg->max_ttl_ms;
    ret->store.idempotency_window_ms = cfg->idempotency_window_ms;
    uint32_t feed = 1024;
    while (feed < cfg->feed_records && feed < (1u << 30))
        feed <<= 1;
    ret->store.feed_records = feed;
    for (uint32_t i = 0; i < cfg->nchannels; i++) {
        const struct atp_config_channel *ch = &cfg->channels[i];
        struct atp_channel_config *cc = &ret->channels[i];
        cc->name = ch->name;
        cc->safety_units = ch->safety_units;
        cc->safety_pct = ch->safety_pct;
        cc->cap = ch->cap;
        for (uint32_t l = 0; l < ch->nlocations; l++)
            ret->locations[i][l] = ch->locations[l];
        cc->locations = ch->nlocations ? ret->locations[i] : NULL;
        cc->nlocations = ch->nlocations;
    }
    ret->store.channels = ret->channels;
    ret->store.nchannels = cfg->nchannels;
}
