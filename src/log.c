/*
 * log.c - logfmt / JSON lines on stderr for the atpd executable.
 *
 * Knows the clock, stderr and the two line formats; nothing about the server.
 * A line is rendered into a stack buffer and written with one write(2): lines
 * up to PIPE_BUF bytes never interleave between threads, and logging takes no
 * lock. A line that does not fit is cut after its last complete field and
 * marked truncated=true, so it stays parseable.
 */
#include "log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "atp/error.h"

#define LOG_LINE_MAX 2048
#define LOG_TRAILER  32 /* room kept for the truncation marker and the end */

/* Written once in atp_log_setup() before any thread starts; read-only after. */
static enum atp_log_level g_level = ATP_LOG_INFO;
static enum atp_log_format g_format = ATP_LOG_LOGFMT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void atp_log_setup(enum atp_log_level level, enum atp_log_format format)
{
    g_level = level;
    g_format = format;
}

bool atp_log_enabled(enum atp_log_level level)
{
    return level >= g_level;
}

int atp_log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    if (strcmp(s, "warning") == 0)
        return ATP_LOG_WARN;
    return -1;
}

int atp_log_format_parse(const char *s)
{
    if (strcmp(s, "logfmt") == 0 || strcmp(s, "text") == 0)
        return ATP_LOG_LOGFMT;
    if (strcmp(s, "json") == 0)
        return ATP_LOG_JSON;
    return -1;
}

const char *atp_log_level_name(enum atp_log_level level)
{
    if ((unsigned)level > ATP_LOG_ERROR)
        return "unknown";
    return level_names[level];
}

/* A bounded writer: once full it drops everything and remembers it did. */
struct w {
    char *p;
    size_t len;
    size_t cap; /* usable bytes (the trailer room is excluded) */
    bool full;
};

static void put(struct w *w, const char *s, size_t n)
{
    if (w->full)
        return;
    if (w->len + n > w->cap) {
        w->full = true;
        return;
    }
    memcpy(w->p + w->len, s, n);
    w->len += n;
}

static void puts_(struct w *w, const char *s)
{
    put(w, s, strlen(s));
}

static void putc_(struct w *w, char c)
{
    put(w, &c, 1);
}

static bool logfmt_needs_quotes(const char *s)
{
    if (*s == '\0')
        return true;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c <= ' ' || c == '=' || c == '"' || c == '\\' || c >= 0x7f)
            return true;
    }
    return false;
}

/* JSON string escaping; logfmt quoted values use the same escapes. */
static void put_escaped(struct w *w, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char tmp[8];
        switch (c) {
        case '"':
            puts_(w, "\\\"");
            break;
        case '\\':
            puts_(w, "\\\\");
            break;
        case '\n':
            puts_(w, "\\n");
            break;
        case '\t':
            puts_(w, "\\t");
            break;
        case '\r':
            puts_(w, "\\r");
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(tmp, sizeof(tmp), "\\u%04x", c);
                puts_(w, tmp);
            } else {
                putc_(w, (char)c);
            }
        }
    }
}

static void put_str_value(struct w *w, enum atp_log_format format, const char *s)
{
    if (s == NULL)
        s = "";
    if (format == ATP_LOG_JSON || logfmt_needs_quotes(s)) {
        putc_(w, '"');
        put_escaped(w, s);
        putc_(w, '"');
    } else {
        puts_(w, s);
    }
}

static void put_key(struct w *w, enum atp_log_format format, const char *key)
{
    if (format == ATP_LOG_JSON) {
        puts_(w, ",\"");
        put_escaped(w, key);
        puts_(w, "\":");
    } else {
        putc_(w, ' ');
        puts_(w, key);
        putc_(w, '=');
    }
}

static void put_field(struct w *w, enum atp_log_format format, const struct atp_log_field *f)
{
    char num[48];
    put_key(w, format, f->key);
    switch (f->kind) {
    case ATP_LOG_F_STR:
        put_str_value(w, format, f->v.s);
        return;
    case ATP_LOG_F_INT:
        snprintf(num, sizeof(num), "%" PRId64, f->v.i);
        break;
    case ATP_LOG_F_UINT:
        snprintf(num, sizeof(num), "%" PRIu64, f->v.u);
        break;
    case ATP_LOG_F_DBL:
        snprintf(num, sizeof(num), "%.3f", f->v.d);
        break;
    case ATP_LOG_F_BOOL:
        snprintf(num, sizeof(num), "%s", f->v.b ? "true" : "false");
        break;
    default:
        snprintf(num, sizeof(num), "null");
        break;
    }
    puts_(w, num);
}

size_t atp_log_render(char *buf, size_t cap, enum atp_log_format format, uint64_t ts_us,
                      enum atp_log_level level, const char *msg, const struct atp_log_field *fields)
{
    if (cap < LOG_TRAILER * 2) {
        if (cap > 0)
            buf[0] = '\n';
        return cap > 0 ? 1 : 0;
    }
    struct w w = {.p = buf, .len = 0, .cap = cap - LOG_TRAILER, .full = false};
    time_t secs = (time_t)(ts_us / 1000000);
    struct tm tm;
    char ts[40];
    gmtime_r(&secs, &tm);
    size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03uZ", (unsigned)((ts_us / 1000) % 1000));

    if (format == ATP_LOG_JSON) {
        puts_(&w, "{\"ts\":\"");
        puts_(&w, ts);
        puts_(&w, "\",\"level\":\"");
        puts_(&w, atp_log_level_name(level));
        puts_(&w, "\",\"msg\":");
    } else {
        puts_(&w, "ts=");
        puts_(&w, ts);
        puts_(&w, " level=");
        puts_(&w, atp_log_level_name(level));
        puts_(&w, " msg=");
    }
    put_str_value(&w, format, msg);
    size_t good = w.full ? 0 : w.len; /* end of the last complete field */
    for (const struct atp_log_field *f = fields; f && f->kind != ATP_LOG_F_END && !w.full; f++) {
        put_field(&w, format, f);
        if (!w.full)
            good = w.len;
    }
    bool truncated = w.full;
    if (good == 0)
        good = w.len; /* even the message did not fit: keep its head */
    /* The trailer room is now usable; the marker and the end always fit. */
    w.len = good;
    w.cap = cap;
    w.full = false;
    if (truncated)
        puts_(&w, format == ATP_LOG_JSON ? ",\"truncated\":true" : " truncated=true");
    if (format == ATP_LOG_JSON)
        putc_(&w, '}');
    putc_(&w, '\n');
    return w.len;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void atp_log_fields(enum atp_log_level level, const char *msg, const struct atp_log_field *fields)
{
    if (!atp_log_enabled(level))
        return;
    int saved = errno;
    char line[LOG_LINE_MAX];
    size_t n = atp_log_render(line, sizeof(line), g_format, now_us(), level, msg, fields);
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(STDERR_FILENO, line + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    errno = saved;
}

void atp_log_msg(enum atp_log_level level, const char *msg)
{
    atp_log_fields(level, msg, NULL);
}
