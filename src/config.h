/*
 * config.h - atpd's configuration: defaults, file, environment, flags.
 *
 * A config is a plain struct filled in layers, each overriding the one
 * before: built-in defaults < config file < environment < command-line flags.
 * Every directive is one row of a table in config.c, so the file syntax, the
 * ATPD_* environment variables, the --flags and --help cannot disagree.
 *
 * File syntax (like redis.conf): one `directive value` per line, `#` starts a
 * comment line, blank lines are ignored, a value may be wrapped in double
 * quotes. `channel` may repeat; the channels of a higher layer replace those
 * of a lower one as a whole. `kafka.<property> value` lines are kept verbatim
 * for the Kafka client. Unknown directives are errors, reported with their
 * line number.
 *
 * It knows the directive names, their types and ranges and how to turn a
 * config into a store config; it knows nothing about sockets, threads or
 * logging (errors come back as text in a caller buffer), so the unit tests
 * link it alone.
 */
#ifndef ATP_CONFIG_H
#define ATP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "atp/store.h"

#define ATP_CONFIG_MAX_LOCATIONS  64 /* locations listed per channel */
#define ATP_CONFIG_BIND_MAX       64
#define ATP_CONFIG_DEFAULT_PORT   7400
#define ATP_CONFIG_DEMO_SKUS      100000u /* demo catalogue: SKU-000001.. */
#define ATP_CONFIG_DEMO_LOCATIONS 3u      /* DC1, DC2, DC3 */
#define ATP_CONFIG_DEMO_ITEMS     (ATP_CONFIG_DEMO_SKUS * ATP_CONFIG_DEMO_LOCATIONS)

/* Which layer set a value; higher wins. */
enum atp_config_layer {
    ATP_CONF_DEFAULT = 0,
    ATP_CONF_FILE = 1,
    ATP_CONF_ENV = 2,
    ATP_CONF_FLAG = 3,
};

enum atp_recv_mode {
    ATP_RECV_AUTO = 0,      /* multishot + buffer ring when the kernel has it */
    ATP_RECV_MULTISHOT = 1, /* require it (start-up fails without) */
    ATP_RECV_PLAIN = 2,     /* one recv at a time into the connection buffer */
};

struct atp_config_channel {
    char name[ATP_CHANNEL_MAX + 1];
    int64_t safety_units;                                      /* >= 0 */
    uint32_t safety_pct;                                       /* 0..100 */
    int64_t cap;                                               /* < 0: none */
    uint32_t nlocations;                                       /* 0: all */
    char locations[ATP_CONFIG_MAX_LOCATIONS][ATP_LOC_MAX + 1]; /* priority order */
};

struct atp_config_kv {
    char *key; /* without the "kafka." prefix */
    char *value;
};

struct atp_config {
    /* network */
    char bind[ATP_CONFIG_BIND_MAX]; /* numeric IPv4 or IPv6 address */
    uint32_t port;                  /* 0: ephemeral */
    char *port_file;                /* NULL: none; else the bound port is written there */
    uint32_t workers;               /* 0: one per online CPU */
    uint32_t busy_poll_us;          /* workers poll this long before sleeping; 0: off */
    int recv_mode;                  /* enum atp_recv_mode */
    /* limits */
    uint32_t max_connections;
    uint32_t max_frame;           /* bytes of one request frame */
    uint32_t max_keys;            /* keys per MGET */
    uint32_t max_lines;           /* lines per reservation, <= ATP_MAX_LINES */
    uint64_t idle_timeout_ms;     /* 0: never */
    uint64_t output_buffer_limit; /* bytes pending per connection before reads pause */
    uint64_t shutdown_timeout_ms; /* drain bound on SIGTERM */
    uint64_t drain_delay_ms;      /* serving with /readyz 503 before the drain */
    /* HTTP/JSON facade, /metrics and health checks */
    bool http; /* serve HTTP at all */
    char http_bind[ATP_CONFIG_BIND_MAX];
    uint32_t http_port;               /* 0: ephemeral */
    char *http_port_file;             /* NULL: none */
    uint64_t http_request_timeout_ms; /* a request arrives whole within this; 0: no bound */
    uint32_t http_max_header;         /* bytes of request line + headers */
    uint32_t http_max_body;           /* bytes of one request body */
    /* logging */
    int log_level;  /* enum atp_log_level */
    int log_format; /* enum atp_log_format */
    /* store */
    uint32_t max_items;
    uint32_t max_reservations;
    uint64_t max_ttl_ms;
    uint64_t idempotency_window_ms;
    uint32_t feed_records;     /* change-feed window */
    uint64_t feed_wait_max_ms; /* longest wait of a feed request; 0: answer at once */
    struct atp_config_channel channels[ATP_MAX_CHANNELS];
    uint32_t nchannels;
    int channels_layer; /* layer the current channel set came from */
    bool demo;          /* load the generated demo catalogue */
    /* durability (docs/DURABILITY.md) */
    char *dir;                     /* data folder; NULL: nothing survives a restart */
    int appendfsync;               /* enum atp_fsync_policy */
    uint64_t snapshot_interval_ms; /* periodic snapshot when the log grew */
    uint64_t snapshot_log_size;    /* ... or once the log holds this many bytes */
    bool durability_repair;        /* cut a damaged log at its first damaged record */
    /* Kafka ingestion: stored for the ingest module, not interpreted here */
    char *kafka_brokers; /* NULL: none configured */
    bool kafka_embedded; /* no brokers: run the embedded mock cluster */
    char *kafka_topic;
    char *kafka_group;
    struct atp_config_kv *kafka_props;
    uint32_t nkafka_props;
};

/* Defaults, including the default channel set (web, app, marketplace). */
void atp_config_init(struct atp_config *cfg);
/* Free what the config owns; the struct may be re-initialized after. */
void atp_config_free(struct atp_config *cfg);

/*
 * Set one directive from `layer`. 0, or ATP_EINVAL with a message in err
 * ("unknown directive 'x'", "port: expected an integer in 0..65535").
 */
int atp_config_set(struct atp_config *cfg, enum atp_config_layer layer, const char *name,
                   const char *value, char *err, size_t errlen);

/*
 * Parse config text (a whole file); errors read "ORIGIN:LINE: message".
 * Stops at the first error. 0 or ATP_EINVAL.
 */
int atp_config_load_text(struct atp_config *cfg, const char *text, size_t len, const char *origin,
                         char *err, size_t errlen);
/* Read and parse a file (at most 4 MiB). 0, ATP_EINVAL or -errno. */
int atp_config_load_file(struct atp_config *cfg, const char *path, char *err, size_t errlen);

/*
 * Apply ATPD_<DIRECTIVE> variables (upper case, dashes as underscores) found
 * in envp (NULL: the process environment). ATPD_CHANNEL may hold several
 * channel definitions separated by ';'. Other ATPD_* names are ignored.
 */
int atp_config_load_env(struct atp_config *cfg, char *const *envp, char *err, size_t errlen);

/* Checks across directives (for example the drain bound). 0 or ATP_EINVAL. */
int atp_config_validate(const struct atp_config *cfg, char *err, size_t errlen);

/* Write the effective config in file syntax (it loads back to the same). */
void atp_config_dump(const struct atp_config *cfg, FILE *out);

/* Directive table, for --help and the command-line flags. */
struct atp_config_directive_info {
    const char *name;
    const char *arg; /* "N", "DURATION", "yes|no", ... */
    const char *help;
    bool is_bool; /* a flag without a value means yes */
};
const struct atp_config_directive_info *atp_config_directive(size_t i); /* NULL past the end */

/*
 * The store config a config describes. The pointers in *ret point into cfg
 * and stay valid while cfg lives unchanged.
 */
struct atp_config_store {
    struct atp_store_config store;
    struct atp_channel_config channels[ATP_MAX_CHANNELS];
    const char *locations[ATP_MAX_CHANNELS][ATP_CONFIG_MAX_LOCATIONS];
};
void atp_config_to_store(const struct atp_config *cfg, struct atp_config_store *ret);

/* Parsers shared with main.c; 0 or ATP_EINVAL. */
int atp_config_parse_duration_ms(const char *s, uint64_t unit_ms, uint64_t *ret_ms);
int atp_config_parse_size(const char *s, uint64_t *ret_bytes);

#endif /* ATP_CONFIG_H */
