/*
 * workload.h - YCSB-style workload files for atp-loadgen.
 *
 * A workload file is `key = value` lines; `#` starts a comment (whole line,
 * or after a value when preceded by a space); blank lines are ignored. Every
 * key is known and every value is checked: an unknown key, a bad value, a
 * line without `=` or a key given twice is rejected with its line number.
 * Command-line overrides (`-W key=value`) go through the same checks.
 *
 * The parser fills a plain struct; it knows nothing about protocols, sockets
 * or time. loadgen/README.md lists every key with its default.
 */
#ifndef LG_WORKLOAD_H
#define LG_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keygen.h"

#define LG_MAX_LOCATIONS 16
#define LG_NAME_MAX      64
#define LG_MAX_MGET      4096
#define LG_MAX_LINES     32 /* ATP_MAX_LINES */

/* The operations a workload mixes (and their names in output). */
enum lg_op {
    LG_OP_GET = 0,   /* one lookup */
    LG_OP_MGET,      /* a batch lookup */
    LG_OP_RESERVE,   /* all-or-nothing hold of one or more lines */
    LG_OP_COMMIT,    /* follow-up of a granted reserve */
    LG_OP_RELEASE,   /* follow-up of a granted reserve */
    LG_OP_PRODUCE,   /* an inventory event produced to Kafka */
    LG_OP_FRESHNESS, /* event produced -> visible through a lookup */
    LG_OP_NMEASURED, /* operations above are measured and reported */
};

const char *lg_op_name(int op);

enum lg_setup {
    LG_SETUP_NONE = 0, /* use what the server has (e.g. atpd --demo) */
    LG_SETUP_SET = 1,  /* set every item of the key space to populate_on_hand first */
};

struct lg_workload {
    char name[LG_NAME_MAX];
    /* key space: sku = sku_prefix + index (zero-padded to sku_digits), index
     * in [sku_start, sku_start + recordcount) */
    uint64_t recordcount;
    uint64_t sku_start;
    char sku_prefix[40];
    uint32_t sku_digits;
    char locations[LG_MAX_LOCATIONS][33];
    uint32_t nlocations;
    bool network; /* lookups without a location: network ATP */
    char channel[33];
    /* key choice */
    enum lg_dist dist;
    double zipf_theta;
    bool zipf_scrambled;
    double hot_data_fraction;
    double hot_opn_fraction;
    /* mix: proportions of new operations (normalised to sum 1) */
    double get_proportion;
    double mget_proportion;
    double reserve_proportion;
    double produce_proportion;
    bool breakdown;                /* lookups ask for the on_hand/allocated/... breakdown */
    uint32_t mget_min, mget_max;   /* keys per batch lookup */
    uint32_t lines_min, lines_max; /* lines per reservation */
    uint32_t qty_min, qty_max;     /* units per line */
    uint64_t ttl_ms;
    /* what happens after a granted reserve (the rest are left to expire) */
    double commit_fraction;
    double release_fraction;
    /* setup and checks */
    enum lg_setup setup;
    int64_t populate_on_hand;
    bool verify_oversell; /* flash-sale: granted <= stock, or fail */
    /* Redis mirror of the channel's configuration (resp driver) */
    int64_t channel_safety_units;
    uint32_t channel_safety_pct;
    int64_t channel_cap;  /* < 0: none */
    bool resp_lookup_lua; /* resp lookups run the ATP script, not a plain GET */
    /* ingest */
    char kafka_topic[128];
    uint32_t probe_interval_ms; /* one freshness probe every this many ms */
    char probe_sku[LG_NAME_MAX];
};

/* Defaults: the checkout mix against 100k SKUs at 3 locations. */
void lg_workload_defaults(struct lg_workload *w);

/*
 * Apply one `key = value` line. `lineno` is only used in the message. 0 on
 * success (including blank and comment lines); -EINVAL with a message
 * "line N: ..." written to err (errlen bytes) otherwise. `seen` (may be NULL)
 * is a bitmap of keys already given in this file, for duplicates.
 */
int lg_workload_line(struct lg_workload *w, const char *line, unsigned lineno, uint64_t *seen,
                     char *err, size_t errlen);

/* Parse a whole text (lines separated by \n) / a file. Same errors; -errno for I/O. */
int lg_workload_parse(struct lg_workload *w, const char *text, char *err, size_t errlen);
int lg_workload_load(struct lg_workload *w, const char *path, char *err, size_t errlen);

/* Cross-field checks after parsing and overrides: 0 or -EINVAL with a message. */
int lg_workload_check(const struct lg_workload *w, char *err, size_t errlen);

/* Name of the sku with key index i (sku_start added), NUL-terminated; returns its length. */
uint32_t lg_workload_sku(const struct lg_workload *w, uint64_t i, char *buf, size_t len);

/* Visit every key with its value as text (for the JSON configuration). */
void lg_workload_foreach(const struct lg_workload *w,
                         void (*fn)(void *arg, const char *key, const char *value), void *arg);

#endif /* LG_WORKLOAD_H */
