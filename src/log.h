/*
 * log.h - structured logging for the atpd executable.
 *
 * One line per event on stderr, logfmt by default
 *     ts=2025-01-31T12:00:00.123Z level=info msg=listening addr=127.0.0.1:7400
 * or one JSON object per line with `log-format json`. Fields are typed so
 * both formats quote correctly:
 *     atp_log(ATP_LOG_INFO, "listening", LOG_STR("addr", buf), LOG_UINT("workers", n));
 *
 * It knows stderr and the clock; nothing else. Only the executable logs:
 * library code (store, codec, cmd) returns codes and never includes this.
 * The level and format are the one piece of mutable global state, set once
 * at start-up; each line is written with a single write(2) so lines from
 * different threads never interleave.
 */
#ifndef ATP_LOG_H
#define ATP_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum atp_log_level {
    ATP_LOG_DEBUG = 0,
    ATP_LOG_INFO = 1,
    ATP_LOG_WARN = 2,
    ATP_LOG_ERROR = 3,
};

enum atp_log_format {
    ATP_LOG_LOGFMT = 0,
    ATP_LOG_JSON = 1,
};

enum atp_log_kind {
    ATP_LOG_F_END = 0, /* terminates a field list */
    ATP_LOG_F_STR,
    ATP_LOG_F_INT,
    ATP_LOG_F_UINT,
    ATP_LOG_F_DBL,
    ATP_LOG_F_BOOL,
};

struct atp_log_field {
    const char *key;
    enum atp_log_kind kind;
    union {
        const char *s; /* NULL prints as an empty string */
        int64_t i;
        uint64_t u;
        double d;
        bool b;
    } v;
};

#define LOG_STR(k, x)  ((struct atp_log_field){(k), ATP_LOG_F_STR, {.s = (x)}})
#define LOG_INT(k, x)  ((struct atp_log_field){(k), ATP_LOG_F_INT, {.i = (int64_t)(x)}})
#define LOG_UINT(k, x) ((struct atp_log_field){(k), ATP_LOG_F_UINT, {.u = (uint64_t)(x)}})
#define LOG_DBL(k, x)  ((struct atp_log_field){(k), ATP_LOG_F_DBL, {.d = (double)(x)}})
#define LOG_BOOL(k, x) ((struct atp_log_field){(k), ATP_LOG_F_BOOL, {.b = (x)}})
/* err="message" for a code from atp/error.h or a -errno. */
#define LOG_ERR(code) LOG_STR("err", atp_strerror(code))

/* Log `msg` with at least one field (see atp_log_msg for none). */
#define atp_log(level, msg, ...)                                                                   \
    atp_log_fields((level), (msg),                                                                 \
                   (const struct atp_log_field[]){__VA_ARGS__, {NULL, ATP_LOG_F_END, {.u = 0}}})

void atp_log_fields(enum atp_log_level level, const char *msg, const struct atp_log_field *fields);
void atp_log_msg(enum atp_log_level level, const char *msg);

/* Set once at start-up, before threads exist. */
void atp_log_setup(enum atp_log_level level, enum atp_log_format format);
bool atp_log_enabled(enum atp_log_level level);

/* "debug" ... "error" / "logfmt" "json"; -1 when unknown. */
int atp_log_level_parse(const char *s);
int atp_log_format_parse(const char *s);
const char *atp_log_level_name(enum atp_log_level level);

/*
 * Render one line into buf (at most cap bytes including the newline, always
 * newline-terminated and truncated cleanly when too long); returns its length.
 * Exposed for tests; `ts_us` is the timestamp, microseconds since the epoch.
 */
size_t atp_log_render(char *buf, size_t cap, enum atp_log_format format, uint64_t ts_us,
                      enum atp_log_level level, const char *msg,
                      const struct atp_log_field *fields);

#endif /* ATP_LOG_H */
