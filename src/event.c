/*
 * event.c - parse, validate and apply inventory events (protocol/EVENTS.md).
 *
 * It knows JSON through two packaged parsers (SPEC.md asks for one rather
 * than a hand-written one) and the store API. It knows nothing about Kafka,
 * offsets, duplicates or threads; the ingest module feeds it bytes.
 *
 * Two parsers, one verdict. simdjson (event_simd.cc) reads the common case,
 * a strict-JSON object, about 7x faster than json-c; everything it does not
 * decide (a syntax error, too deep, not an object, a member name given twice
 * or holding a NUL, more than EV_FAST_MEMBERS members) is parsed again by
 * json-c, exactly as before the fast path existed, so every dead-letter
 * reason and detail stays what EVENTS.md and the tests say. Both parsers
 * hand the same flat member list (event_json.h) to one validation.
 *
 * Validation is table driven: one row per field name says its kind, its
 * range and which event types allow it, so the checks and EVENTS.md read the
 * same way. Every member of the object is looked at: a member that is not a
 * field of the event's type is an error (a typo such as "detla" must not be
 * ignored silently), except names starting with "x-", which producers may
 * use for their own annotations and which are skipped.
 *
 * Limits: the size limit is checked before a parser sees a byte; the nesting
 * limit is each parser's own depth limit (simdjson's max_depth, json-c's
 * json_tokener_new_ex), so a deeply nested text costs at most `max_depth`
 * levels of parser state.
 */
#include "atp/event.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "event_json.h"

/* validate_members(): the fast path cannot decide; ask json-c. */
#define EV_FALLBACK 1

struct atp_event_parser {
    struct ev_fast *fast;     /* simdjson: the common case */
    struct json_tokener *tok; /* json-c: everything else */
    uint32_t max_bytes;
    uint32_t max_depth;
};

/* --- names ---------------------------------------------------------------- */

static const char *const type_names[] = {
    [ATP_EV_ADJUST] = "adjust",
    [ATP_EV_SET] = "set",
    [ATP_EV_ALLOCATE] = "allocate",
    [ATP_EV_DEALLOCATE] = "deallocate",
    [ATP_EV_FULFILL] = "fulfill",
    [ATP_EV_SAFETY_STOCK] = "safety_stock",
    [ATP_EV_RESYNC_COMPLETE] = "resync_complete",
};
#define NTYPES ((int)(sizeof(type_names) / sizeof(type_names[0])))

const char *atp_event_type_name(int type)
{
    if (type <= 0 || type >= NTYPES)
        return "?";
    return type_names[type];
}

/* sign: +1 the delta must be positive, -1 negative, 0 either (non-zero) */
static const struct {
    const char *name;
    int sign;
} reasons[] = {
    [ATP_ADJ_RECEIPT] = {"receipt", 1},
    [ATP_ADJ_PICK] = {"pick", -1},
    [ATP_ADJ_RETURN] = {"return", 1},
    [ATP_ADJ_DAMAGE] = {"damage", -1},
    [ATP_ADJ_COUNT_CORRECTION] = {"count_correction", 0},
    [ATP_ADJ_TRANSFER_IN] = {"transfer_in", 1},
    [ATP_ADJ_TRANSFER_OUT] = {"transfer_out", -1},
};
#define NREASONS ((int)(sizeof(reasons) / sizeof(reasons[0])))

const char *atp_adjust_reason_name(int reason)
{
    if (reason <= 0 || reason >= NREASONS)
        return "?";
    return reasons[reason].name;
}

static const struct {
    const char *slug;
    const char *msg;
} dlq_reasons[] = {[ATP_DLQ_NONE] = {"none", "no reason"},
#define ATP_DLQ_ROW(name, slug, msg) [ATP_DLQ_##name] = {slug, msg},
                   ATP_DLQ_REASONS(ATP_DLQ_ROW)
#undef ATP_DLQ_ROW
};

const char *atp_dlq_reason_slug(int reason)
{
    if (reason < 0 || reason >= ATP_DLQ_COUNT)
        return "?";
    return dlq_reasons[reason].slug;
}

const char *atp_dlq_reason_message(int reason)
{
    if (reason < 0 || reason >= ATP_DLQ_COUNT)
        return "unknown reason";
    return dlq_reasons[reason].msg;
}

/* --- the field table ------------------------------------------------------ */

enum field_id {
    F_EVENT_ID,
    F_TYPE,
    F_TS,
    F_SKU,
    F_LOC,
    F_DELTA,
    F_REASON,
    F_ON_HAND,
    F_SEQ,
    F_QTY,
    F_ORDER,
    F_KEY,
    F_LINE,
    F_CHANNEL,
    F_UNITS,
    F_COUNT
};

#define T(x) (1u << (x))
#define T_ALL                                                                                      \
    (T(ATP_EV_ADJUST) | T(ATP_EV_SET) | T(ATP_EV_ALLOCATE) | T(ATP_EV_DEALLOCATE) |                \
     T(ATP_EV_FULFILL) | T(ATP_EV_SAFETY_STOCK) | T(ATP_EV_RESYNC_COMPLETE))
#define T_ITEM (T(ATP_EV_ADJUST) | T(ATP_EV_SET) | T(ATP_EV_ALLOCATE) | T(ATP_EV_DEALLOCATE))

/*
 * allowed:  event types that may carry the field.
 * required: event types that must carry it (set needs seq or ts: checked
 *           apart).
 */
#define FIELD(n, a, r)                                                                             \
    {                                                                                              \
        n, sizeof(n) - 1, a, r                                                                     \
    }
static const struct field {
    const char *name;
    size_t len;
    uint32_t allowed;
    uint32_t required;
} fields[F_COUNT] = {
    [F_EVENT_ID] = FIELD("event_id", T_ALL, T_ALL),
    [F_TYPE] = FIELD("type", T_ALL, T_ALL),
    [F_TS] = FIELD("ts", T_ALL, 0),
    [F_SKU] = FIELD("sku", T_ALL & ~T(ATP_EV_RESYNC_COMPLETE), T_ALL & ~T(ATP_EV_RESYNC_COMPLETE)),
    [F_LOC] = FIELD("loc", T_ITEM | T(ATP_EV_SAFETY_STOCK), T_ITEM),
    [F_DELTA] = FIELD("delta", T(ATP_EV_ADJUST), T(ATP_EV_ADJUST)),
    [F_REASON] = FIELD("reason", T(ATP_EV_ADJUST), T(ATP_EV_ADJUST)),
    [F_ON_HAND] = FIELD("on_hand", T(ATP_EV_SET), T(ATP_EV_SET)),
    [F_SEQ] = FIELD("seq", T(ATP_EV_SET), 0),
    [F_QTY] = FIELD("qty", T(ATP_EV_ALLOCATE) | T(ATP_EV_DEALLOCATE),
                    T(ATP_EV_ALLOCATE) | T(ATP_EV_DEALLOCATE)),
    [F_ORDER] = FIELD("order", T(ATP_EV_ALLOCATE) | T(ATP_EV_DEALLOCATE), 0),
    [F_KEY] = FIELD("key", T(ATP_EV_FULFILL), T(ATP_EV_FULFILL)),
    [F_LINE] = FIELD("line", T(ATP_EV_FULFILL), T(ATP_EV_FULFILL)),
    [F_CHANNEL] = FIELD("channel", T(ATP_EV_SAFETY_STOCK), T(ATP_EV_SAFETY_STOCK)),
    [F_UNITS] = FIELD("units", T(ATP_EV_SAFETY_STOCK), T(ATP_EV_SAFETY_STOCK)),
};
#undef FIELD

/* Bit f set: field f is required for the type (from the table, at the first
 * parser's creation). */
static uint32_t required_of[NTYPES];
static pthread_once_t required_once = PTHREAD_ONCE_INIT;

static void required_init(void)
{
    for (int t = 1; t < NTYPES; t++)
        for (int f = 0; f < F_COUNT; f++)
            if (fields[f].required & T(t))
                required_of[t] |= 1u << f;
}

/*
 * The field named by name[0..len), or -1. Every member of every event comes
 * through here, so the first byte picks the one candidate (a linear strcmp
 * over the table was ~10% of the ingest thread's time) and one memcmp
 * confirms it. The table stays the single source of names.
 */
static int field_find(const char *name, size_t len)
{
    if (len == 0)
        return -1;
    int f;
    switch (name[0]) {
    case 'e':
        f = F_EVENT_ID;
        break;
    case 't':
        f = len == 2 ? F_TS : F_TYPE;
        break;
    case 's':
        f = len > 1 && name[1] == 'e' ? F_SEQ : F_SKU;
        break;
    case 'l':
        f = len == 3 ? F_LOC : F_LINE;
        break;
    case 'd':
        f = F_DELTA;
        break;
    case 'r':
        f = F_REASON;
        break;
    case 'o':
        f = len == 7 ? F_ON_HAND : F_ORDER;
        break;
    case 'q':
        f = F_QTY;
        break;
    case 'k':
        f = F_KEY;
        break;
    case 'c':
        f = F_CHANNEL;
        break;
    case 'u':
        f = F_UNITS;
        break;
    default:
        return -1;
    }
    return fields[f].len == len && memcmp(fields[f].name, name, len) == 0 ? f : -1;
}

/* --- errors --------------------------------------------------------------- */

static int fail(struct atp_event_error *err, int code, int reason, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct atp_event_error *err, int code, int reason, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->reason = reason;
        va_start(ap, fmt);
        vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* --- value checks --------------------------------------------------------- */

/* Printable ASCII without space (0x21..0x7e): event ids and order refs. */
static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    return true;
}

/* An integer member as int64; numbers with a fraction or an exponent are
 * never integers here, nor are integers beyond int64. */
static bool get_int(const struct ev_value *v, int64_t *ret)
{
    if (v->kind != EVK_INT)
        return false;
    *ret = v->i;
    return true;
}

/* A string member: pointer and length, or false. */
static bool get_str(const struct ev_value *v, const char **ret_p, size_t *ret_len)
{
    if (v->kind != EVK_STRING)
        return false;
    *ret_p = v->s;
    *ret_len = v->len;
    return true;
}

/* --- parser --------------------------------------------------------------- */

int atp_event_parser_new(const struct atp_event_limits *limits,
                         struct atp_event_parser **ret_parser)
{
    uint32_t max_bytes = limits && limits->max_bytes ? limits->max_bytes : ATP_EVENT_DEFAULT_BYTES;
    uint32_t max_depth = limits && limits->max_depth ? limits->max_depth : ATP_EVENT_DEFAULT_DEPTH;
    if (max_depth > ATP_EVENT_MAX_DEPTH || max_bytes > INT32_MAX)
        return ATP_EINVAL;
    pthread_once(&required_once, required_init);
    struct atp_event_parser *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->tok = json_tokener_new_ex((int)max_depth);
    p->fast = ev_fast_new(max_bytes, max_depth);
    if (!p->tok || !p->fast) {
        if (p->tok)
            json_tokener_free(p->tok);
        ev_fast_free(p->fast);
        free(p);
        return -ENOMEM;
    }
    json_tokener_set_flags(p->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    p->max_bytes = max_bytes;
    p->max_depth = max_depth;
    *ret_parser = p;
    return 0;
}

void atp_event_parser_free(struct atp_event_parser *parser)
{
    if (!parser)
        return;
    json_tokener_free(parser->tok);
    ev_fast_free(parser->fast);
    free(parser);
}

/* Parse one member into ev. `f` is allowed for ev->type. */
static int parse_member(int f, const struct ev_value *v, struct atp_event *ev,
                        struct atp_event_error *err)
{
    const char *s;
    size_t n;
    int64_t x;

    switch (f) {
    case F_EVENT_ID:
        if (!get_str(v, &s, &n) || n == 0 || n > ATP_EVENT_ID_MAX || !printable(s, n))
            return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                        "event_id: expected 1..%d printable ASCII bytes", ATP_EVENT_ID_MAX);
        memcpy(ev->event_id, s, n);
        ev->event_id_len = (uint32_t)n;
        return 0;
    case F_TYPE:
        return 0; /* read before the members */
    case F_TS:
        if (!get_int(v, &x) || x < 0)
            return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                        "ts: expected milliseconds since the epoch (integer >= 0)");
        ev->ts_ms = x;
        return 0;
    case F_SKU:
        if (!get_str(v, &s, &n) || n > ATP_SKU_MAX ||
            atp_validate_sku((struct atp_slice){s, (uint32_t)n}) != 0)
            return fail(err, ATP_EINVAL_SKU, ATP_DLQ_INVALID_SKU,
                        "sku: expected 1..%d bytes of [A-Za-z0-9._:/-]", ATP_SKU_MAX);
        memcpy(ev->sku, s, n);
        ev->sku_len = (uint32_t)n;
        return 0;
    case F_LOC:
        if (!get_str(v, &s, &n) || n > ATP_LOC_MAX ||
            atp_validate_loc((struct atp_slice){s, (uint32_t)n}) != 0)
            return fail(err, ATP_EINVAL_LOC, ATP_DLQ_INVALID_LOC,
                        "loc: expected 1..%d bytes of [A-Za-z0-9._:/-]", ATP_LOC_MAX);
        memcpy(ev->loc, s, n);
        ev->loc_len = (uint32_t)n;
        return 0;
    case F_DELTA:
        if (!get_int(v, &x) || x == 0 || x > ATP_QTY_MAX || x < -ATP_QTY_MAX)
            return fail(err, ATP_ERANGE, ATP_DLQ_INVALID_FIELD,
                        "delta: expected a non-zero integer within +-%" PRId64, ATP_QTY_MAX);
        ev->qty = x;
        return 0;
    case F_REASON:
        if (get_str(v, &s, &n))
            for (int r = 1; r < NREASONS; r++)
                if (strlen(reasons[r].name) == n && memcmp(reasons[r].name, s, n) == 0) {
                    ev->reason = r;
                    return 0;
                }
        return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                    "reason: expected receipt, pick, return, damage, count_correction, "
                    "transfer_in or transfer_out");
    case F_ON_HAND:
        if (!get_int(v, &x) || x < 0 || x > ATP_QTY_MAX)
            return fail(err, ATP_ERANGE, ATP_DLQ_INVALID_FIELD,
                        "on_hand: expected an integer in 0..%" PRId64, ATP_QTY_MAX);
        ev->qty = x;
        return 0;
    case F_SEQ:
        if (!get_int(v, &x) || x < 1)
            return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                        "seq: expected an integer in 1..%" PRId64, INT64_MAX);
        ev->seq = (uint64_t)x;
        return 0;
    case F_QTY:
        if (!get_int(v, &x) || x < 1 || x > ATP_QTY_MAX)
            return fail(err, ATP_ERANGE, ATP_DLQ_INVALID_FIELD,
                        "qty: expected an integer in 1..%" PRId64, ATP_QTY_MAX);
        ev->qty = x;
        return 0;
    case F_ORDER:
        /* Informational (logged in the DLQ copy, never stored). */
        if (!get_str(v, &s, &n) || n == 0 || n > ATP_KEY_MAX || !printable(s, n))
            return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                        "order: expected 1..%d printable ASCII bytes", ATP_KEY_MAX);
        return 0;
    case F_KEY:
        if (!get_str(v, &s, &n) || n == 0 || n > ATP_KEY_MAX || !printable(s, n))
            return fail(err, ATP_EKEY, ATP_DLQ_INVALID_FIELD,
                        "key: expected 1..%d printable ASCII bytes", ATP_KEY_MAX);
        memcpy(ev->key, s, n);
        ev->key_len = (uint32_t)n;
        return 0;
    case F_LINE:
        if (!get_int(v, &x) || x < 0 || x >= ATP_MAX_LINES)
            return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                        "line: expected an integer in 0..%d", ATP_MAX_LINES - 1);
        ev->line = (uint32_t)x;
        return 0;
    case F_CHANNEL:
        if (!get_str(v, &s, &n) || n == 0 || n > ATP_CHANNEL_MAX ||
            atp_validate_sku((struct atp_slice){s, (uint32_t)n}) != 0)
            return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD,
                        "channel: expected 1..%d bytes of [A-Za-z0-9._:/-]", ATP_CHANNEL_MAX);
        memcpy(ev->channel, s, n);
        ev->channel_len = (uint32_t)n;
        return 0;
    case F_UNITS:
        if (v->kind == EVK_NULL) {
            ev->remove = true;
            return 0;
        }
        if (!get_int(v, &x) || x < 0 || x > ATP_QTY_MAX)
            return fail(err, ATP_ERANGE, ATP_DLQ_INVALID_FIELD,
                        "units: expected null or an integer in 0..%" PRId64, ATP_QTY_MAX);
        ev->qty = x;
        return 0;
    default:
        return fail(err, ATP_EINTERNAL, ATP_DLQ_INVALID_FIELD, "field table");
    }
}

static int parse_type(const struct ev_value *v, int *ret_type, struct atp_event_error *err)
{
    const char *s;
    size_t n;
    if (!v)
        return fail(err, ATP_EINVAL, ATP_DLQ_MISSING_FIELD, "type: required");
    if (!get_str(v, &s, &n))
        return fail(err, ATP_EINVAL, ATP_DLQ_INVALID_FIELD, "type: expected a string");
    for (int t = 1; t < NTYPES; t++)
        if (strlen(type_names[t]) == n && memcmp(type_names[t], s, n) == 0) {
            *ret_type = t;
            return 0;
        }
    return fail(err, ATP_EINVAL, ATP_DLQ_UNKNOWN_TYPE, "type: unknown event type '%.40s'", s);
}

/*
 * The members of one object, in document order, each name at most once;
 * fid[i] is the field of m[i] (-1: not a field).
 */
static int validate_members(const struct ev_member *m, const int *fid, size_t n,
                            struct atp_event *ev, struct atp_event_error *err)
{
    const struct ev_value *type = NULL;
    for (size_t i = 0; i < n; i++)
        if (fid[i] == F_TYPE)
            type = &m[i].v;
    int rc = parse_type(type, &ev->type, err);
    if (rc)
        return rc;
    uint32_t tbit = T(ev->type);
    uint32_t seen = 0;

    for (size_t i = 0; i < n; i++) {
        int f = fid[i];
        if (f < 0 || !(fields[f].allowed & tbit)) {
            if (m[i].name_len >= 2 && memcmp(m[i].name, "x-", 2) == 0)
                continue;
            return fail(err, ATP_EINVAL, ATP_DLQ_UNKNOWN_FIELD, "%.40s: not a field of %s",
                        m[i].name, atp_event_type_name(ev->type));
        }
        rc = parse_member(f, &m[i].v, ev, err);
        if (rc)
            return rc;
        seen |= 1u << f;
    }
    if ((required_of[ev->type] & ~seen) != 0)
        for (int f = 0; f < F_COUNT; f++)
            if ((fields[f].required & tbit) && !(seen & (1u << f)))
                return fail(err, ATP_EINVAL, ATP_DLQ_MISSING_FIELD, "%s: required for %s",
                            fields[f].name, atp_event_type_name(ev->type));

    if (ev->type == ATP_EV_ADJUST) {
        int sign = reasons[ev->reason].sign;
        if ((sign > 0 && ev->qty < 0) || (sign < 0 && ev->qty > 0))
            return fail(err, ATP_ERANGE, ATP_DLQ_INVALID_FIELD, "delta: must be %s for reason %s",
                        sign > 0 ? "positive" : "negative", reasons[ev->reason].name);
    }
    if (ev->type == ATP_EV_SET && ev->seq == 0) {
        if (ev->ts_ms <= 0)
            return fail(err, ATP_EINVAL, ATP_DLQ_MISSING_FIELD,
                        "seq: set needs seq or a positive ts");
        ev->seq = (uint64_t)ev->ts_ms; /* the source timestamp is the guard */
    }
    return 0;
}

/*
 * The fast path's members. json-c keeps one member per name (the last
 * value, at the first one's place) and cuts names at a NUL; rather than
 * imitate that, such objects go to json-c (EV_FALLBACK).
 */
static int validate_fast(const struct ev_member *m, size_t n, struct atp_event *ev,
                         struct atp_event_error *err)
{
    int fid[EV_FAST_MEMBERS];
    uint32_t named = 0;
    for (size_t i = 0; i < n; i++) {
        fid[i] = field_find(m[i].name, m[i].name_len);
        if (fid[i] < 0) {
            /* A field's name holds no NUL; another name might. */
            if (memchr(m[i].name, '\0', m[i].name_len))
                return EV_FALLBACK;
            for (size_t j = 0; j < i; j++) /* rare: a repeated unknown or x- name */
                if (fid[j] < 0 && m[j].name_len == m[i].name_len &&
                    memcmp(m[j].name, m[i].name, m[i].name_len) == 0)
                    return EV_FALLBACK;
            continue;
        }
        if (named & (1u << fid[i]))
            return EV_FALLBACK;
        named |= 1u << fid[i];
    }
    return validate_members(m, fid, n, ev, err);
}

/* json-c's value as the validation sees it. */
static struct ev_value jc_value(struct json_object *v)
{
    struct ev_value r = {0};
    switch (json_object_get_type(v)) {
    case json_type_null:
        r.kind = EVK_NULL;
        break;
    case json_type_boolean:
        r.kind = EVK_BOOL;
        break;
    case json_type_int:
        /* json-c keeps integers beyond INT64_MAX as uint64 and saturates
         * json_object_get_int64: a saturated value is checked against the
         * unsigned reading. */
        r.i = json_object_get_int64(v);
        r.kind = r.i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX ? EVK_BIGINT
                                                                                     : EVK_INT;
        break;
    case json_type_double:
        r.kind = EVK_DOUBLE;
        break;
    case json_type_string: {
        int n = json_object_get_string_len(v);
        r.kind = EVK_STRING;
        r.s = json_object_get_string(v);
        r.len = n > 0 ? (size_t)n : 0;
        break;
    }
    case json_type_array:
        r.kind = EVK_ARRAY;
        break;
    case json_type_object:
        r.kind = EVK_OBJECT;
        break;
    }
    return r;
}

static int validate_object(struct json_object *obj, struct atp_event *ev,
                           struct atp_event_error *err)
{
    struct ev_member stack_m[64] = {{0}};
    int stack_fid[64] = {0};
    size_t cap = (size_t)json_object_object_length(obj);
    struct ev_member *m = stack_m;
    int *fid = stack_fid;
    if (cap > 64) {
        m = calloc(cap, sizeof(*m));
        fid = calloc(cap, sizeof(*fid));
        if (!m || !fid) {
            free(m);
            free(fid);
            return fail(err, -ENOMEM, ATP_DLQ_NOT_JSON, "out of memory");
        }
    }
    size_t n = 0;
    json_object_object_foreach(obj, name, v)
    {
        if (n == cap)
            break;
        m[n] = (struct ev_member){name, strlen(name), jc_value(v)};
        fid[n] = field_find(name, m[n].name_len);
        n++;
    }
    int rc = validate_members(m, fid, n, ev, err);
    if (m != stack_m) {
        free(m);
        free(fid);
    }
    return rc;
}

static bool all_space(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
            return false;
    return true;
}

/*
 * A fresh event: every scalar and length cleared, the string bytes left as
 * they are (they mean something only up to their length). Clearing and
 * copying the whole ~350-byte struct was ~15% of a parse.
 */
static void event_init(struct atp_event *ev)
{
    ev->type = 0;
    ev->event_id_len = ev->sku_len = ev->loc_len = ev->channel_len = ev->key_len = 0;
    ev->ts_ms = -1;
    ev->qty = 0;
    ev->seq = 0;
    ev->line = 0;
    ev->reason = 0;
    ev->remove = false;
}

/* Copy a parsed event: its scalars and the bytes its strings use. */
static void event_copy(struct atp_event *dst, const struct atp_event *src)
{
    dst->type = src->type;
    dst->event_id_len = src->event_id_len;
    memcpy(dst->event_id, src->event_id, src->event_id_len);
    dst->ts_ms = src->ts_ms;
    dst->sku_len = src->sku_len;
    memcpy(dst->sku, src->sku, src->sku_len);
    dst->loc_len = src->loc_len;
    memcpy(dst->loc, src->loc, src->loc_len);
    dst->channel_len = src->channel_len;
    memcpy(dst->channel, src->channel, src->channel_len);
    dst->key_len = src->key_len;
    memcpy(dst->key, src->key, src->key_len);
    dst->qty = src->qty;
    dst->seq = src->seq;
    dst->line = src->line;
    dst->reason = src->reason;
    dst->remove = src->remove;
}

int atp_event_parse(struct atp_event_parser *parser, const void *buf, size_t len,
                    struct atp_event *ret, struct atp_event_error *ret_err)
{
    if (len > parser->max_bytes)
        return fail(ret_err, ATP_ETOOLARGE, ATP_DLQ_TOO_LARGE, "%zu bytes, the limit is %" PRIu32,
                    len, parser->max_bytes);
    if (len == 0 || !buf)
        return fail(ret_err, ATP_EMALFORMED, ATP_DLQ_NOT_JSON, "empty message");

    const char *s = buf;
    struct atp_event ev;
    struct ev_member m[EV_FAST_MEMBERS];
    int n = ev_fast_parse(parser->fast, s, len, m);
    if (n >= 0) {
        event_init(&ev);
        int rc = validate_fast(m, (size_t)n, &ev, ret_err);
        if (rc != EV_FALLBACK) {
            if (rc == 0)
                event_copy(ret, &ev);
            return rc;
        }
    }

    struct json_tokener *tok = parser->tok;
    json_tokener_reset(tok);
    struct json_object *obj = json_tokener_parse_ex(tok, s, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    if (!obj && jerr == json_tokener_continue) {
        /* json-c needs a terminating NUL to end a bare number or literal;
         * the message has none, so hand it one. Truncated objects fail. */
        obj = json_tokener_parse_ex(tok, "", 1);
        jerr = json_tokener_get_error(tok);
        end = len;
    }
    if (!obj) {
        if (jerr == json_tokener_success) /* the text `null` */
            return fail(ret_err, ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT,
                        "expected an object, got null");
        if (jerr == json_tokener_error_depth)
            return fail(ret_err, ATP_EMALFORMED, ATP_DLQ_TOO_DEEP, "nested deeper than %" PRIu32,
                        parser->max_depth);
        return fail(ret_err, ATP_EMALFORMED, ATP_DLQ_NOT_JSON, "near byte %zu: %s", end,
                    json_tokener_error_desc(jerr));
    }

    int rc;
    if (end < len && !all_space(s + end, len - end)) {
        rc = fail(ret_err, ATP_EMALFORMED, ATP_DLQ_NOT_JSON, "trailing bytes after the object");
    } else if (!json_object_is_type(obj, json_type_object)) {
        rc = fail(ret_err, ATP_EMALFORMED, ATP_DLQ_NOT_OBJECT, "expected an object, got %s",
                  json_type_to_name(json_object_get_type(obj)));
    } else {
        event_init(&ev);
        rc = validate_object(obj, &ev, ret_err);
        if (rc == 0)
            event_copy(ret, &ev);
    }
    json_object_put(obj);
    return rc;
}

/* --- apply ---------------------------------------------------------------- */

static int apply_fulfill(struct atp_store *store, const struct atp_event *ev)
{
    struct atp_reservation r;
    struct atp_slice key = {ev->key, ev->key_len};
    int rc = atp_store_reservation_find(store, key, &r);
    if (rc)
        return rc;
    if (ev->line >= r.nlines)
        return ATP_EINVAL;
    const struct atp_res_line *l = &r.lines[ev->line];
    if (l->sku.len != ev->sku_len || memcmp(l->sku.p, ev->sku, ev->sku_len) != 0)
        return ATP_EINVAL;
    return atp_store_fulfill(store, key, ev->line, NULL);
}

int atp_event_apply(struct atp_store *store, const struct atp_event *ev)
{
    struct atp_slice sku = {ev->sku, ev->sku_len};
    struct atp_slice loc = {ev->loc, ev->loc_len};

    switch (ev->type) {
    case ATP_EV_ADJUST:
        return atp_store_adjust(store, sku, loc, ev->qty, NULL);
    case ATP_EV_SET:
        return atp_store_set(store, sku, loc, ev->qty, ev->seq);
    case ATP_EV_ALLOCATE:
        return atp_store_allocate(store, sku, loc, ev->qty);
    case ATP_EV_DEALLOCATE:
        return atp_store_deallocate(store, sku, loc, ev->qty);
    case ATP_EV_FULFILL:
        return apply_fulfill(store, ev);
    case ATP_EV_SAFETY_STOCK: {
        uint32_t ch;
        int rc =
            atp_store_channel_find(store, (struct atp_slice){ev->channel, ev->channel_len}, &ch);
        if (rc)
            return rc;
        return atp_store_set_safety(store, sku, loc, ch, ev->remove ? -1 : ev->qty);
    }
    case ATP_EV_RESYNC_COMPLETE:
        return 0;
    default:
        return ATP_EINVAL;
    }
}
