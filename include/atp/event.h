/*
 * atp/event.h - inventory events: parse, validate, apply.
 *
 * One event is one JSON object (protocol/EVENTS.md is the contract). This
 * module turns the bytes of one event into a validated struct atp_event, or
 * into a reason why it must go to the dead-letter topic, and applies a valid
 * event to the store. It knows JSON (simdjson parses the common case, json-c
 * everything simdjson does not decide, src/event.c says why) and the store
 * API; it knows nothing about Kafka, offsets, duplicates or threads, so the
 * unit tests feed it bytes directly.
 *
 * A parser holds a reusable simdjson parser and json-c tokener: one parser
 * per thread.
 */
#ifndef ATP_EVENT_H
#define ATP_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "atp/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ATP_EVENT_ID_MAX        128   /* bytes of an event_id */
#define ATP_EVENT_DEFAULT_BYTES 65536 /* default size limit of one event */
#define ATP_EVENT_DEFAULT_DEPTH 8     /* default JSON nesting limit */
#define ATP_EVENT_MAX_DEPTH     64    /* largest depth limit accepted */
#define ATP_EVENT_DETAIL_MAX    160   /* bytes of a reason detail, with NUL */

enum atp_event_type {
    ATP_EV_ADJUST = 1,
    ATP_EV_SET = 2,
    ATP_EV_ALLOCATE = 3,
    ATP_EV_DEALLOCATE = 4,
    ATP_EV_FULFILL = 5,
    ATP_EV_SAFETY_STOCK = 6,
    ATP_EV_RESYNC_COMPLETE = 7,
};
/* "adjust", "set", ...; "?" for anything else. */
const char *atp_event_type_name(int type);

enum atp_adjust_reason {
    ATP_ADJ_RECEIPT = 1,          /* delta > 0 */
    ATP_ADJ_PICK = 2,             /* delta < 0 */
    ATP_ADJ_RETURN = 3,           /* delta > 0 */
    ATP_ADJ_DAMAGE = 4,           /* delta < 0 */
    ATP_ADJ_COUNT_CORRECTION = 5, /* either sign */
    ATP_ADJ_TRANSFER_IN = 6,      /* delta > 0 */
    ATP_ADJ_TRANSFER_OUT = 7,     /* delta < 0 */
};
const char *atp_adjust_reason_name(int reason);

/*
 * Why an event goes to the dead-letter topic. The slug is the value of the
 * `atp-reason` header and the label of the per-reason counter; slugs are part
 * of the event contract and never change meaning.
 */
/* clang-format off */
#define ATP_DLQ_REASONS(X)                                                          \
    X(NOT_JSON,      "not-json",          "not a JSON text (or not valid UTF-8)")    \
    X(TOO_LARGE,     "too-large",         "event larger than the size limit")        \
    X(TOO_DEEP,      "too-deep",          "JSON nested deeper than the limit")       \
    X(NOT_OBJECT,    "not-object",        "event is not a JSON object")              \
    X(UNKNOWN_TYPE,  "unknown-type",      "unknown event type")                      \
    X(MISSING_FIELD, "missing-field",     "a required field is missing")             \
    X(INVALID_FIELD, "invalid-field",     "a field has the wrong type or range")     \
    X(UNKNOWN_FIELD, "unknown-field",     "a field not defined for this type")       \
    X(INVALID_SKU,   "invalid-sku",       "invalid sku: 1..64 bytes of [A-Za-z0-9._:/-]") \
    X(INVALID_LOC,   "invalid-location",  "invalid location: 1..32 bytes of [A-Za-z0-9._:/-]") \
    X(KEY_MISMATCH,  "key-mismatch",      "message key missing or not equal to the sku") \
    X(REJECTED,      "rejected",          "the store refused the event")
/* clang-format on */

enum atp_dlq_reason {
    ATP_DLQ_NONE = 0,
#define ATP_DLQ_ENUM(name, slug, msg) ATP_DLQ_##name,
    ATP_DLQ_REASONS(ATP_DLQ_ENUM)
#undef ATP_DLQ_ENUM
        ATP_DLQ_COUNT /* number of reasons + 1 */
};
/* Slug of a reason ("not-json"); "none" for ATP_DLQ_NONE, "?" beyond. */
const char *atp_dlq_reason_slug(int reason);
/* Stable human message of a reason. */
const char *atp_dlq_reason_message(int reason);

/*
 * A validated event. Strings are copies (not NUL-terminated; *_len bytes).
 * Which fields mean something depends on the type (EVENTS.md):
 *   adjust       sku, loc, qty = delta (non-zero), reason
 *   set          sku, loc, qty = on_hand (>= 0), seq (>= 1)
 *   allocate     sku, loc, qty (> 0)
 *   deallocate   sku, loc, qty (> 0)
 *   fulfill      sku, key, line
 *   safety_stock sku, loc (loc_len 0: per sku), channel, qty = units (>= 0)
 *                or remove
 *   resync_complete  nothing but the common fields
 */
struct atp_event {
    int type; /* enum atp_event_type */
    uint32_t event_id_len;
    char event_id[ATP_EVENT_ID_MAX];
    int64_t ts_ms; /* source timestamp, ms since epoch; -1 absent */
    uint32_t sku_len;
    char sku[ATP_SKU_MAX];
    uint32_t loc_len;
    char loc[ATP_LOC_MAX];
    uint32_t channel_len;
    char channel[ATP_CHANNEL_MAX];
    uint32_t key_len;
    char key[ATP_KEY_MAX];
    int64_t qty;
    uint64_t seq;  /* set: the guard (seq, else ts_ms) */
    uint32_t line; /* fulfill: 0-based line */
    int reason;    /* adjust: enum atp_adjust_reason */
    bool remove;   /* safety_stock: units null removes */
};

struct atp_event_limits {
    uint32_t max_bytes; /* 0: ATP_EVENT_DEFAULT_BYTES */
    uint32_t max_depth; /* 0: ATP_EVENT_DEFAULT_DEPTH; 1..ATP_EVENT_MAX_DEPTH */
};

/* Why parsing failed: the reason and a one-line detail naming the field. */
struct atp_event_error {
    int reason; /* enum atp_dlq_reason */
    char detail[ATP_EVENT_DETAIL_MAX];
};

struct atp_event_parser;

/* New parser; limits may be NULL (defaults). 0, ATP_EINVAL or -ENOMEM. */
int atp_event_parser_new(const struct atp_event_limits *limits,
                         struct atp_event_parser **ret_parser);
void atp_event_parser_free(struct atp_event_parser *parser);

/*
 * Parse and validate one event of `len` bytes (not NUL-terminated).
 *   0                 *ret holds the event (of each string only its first
 *                     *_len bytes are written); *ret_err untouched.
 *   ATP_ETOOLARGE     over the size limit (reason too-large).
 *   ATP_EMALFORMED    not JSON, too deep, not an object (reason says which).
 *   ATP_EINVAL        unknown type, missing, unknown or invalid field.
 *   ATP_EINVAL_SKU / ATP_EINVAL_LOC / ATP_EKEY / ATP_ERANGE / ATP_EQTY
 *                     the named field is out of its domain.
 * On failure *ret is untouched and *ret_err (may be NULL) says why.
 * Nothing allocated outlives the call, except that the parser's own input
 * buffer grows (up to the size limit) for an event larger than any before.
 */
int atp_event_parse(struct atp_event_parser *parser, const void *buf, size_t len,
                    struct atp_event *ret, struct atp_event_error *ret_err);

/*
 * Apply a valid event to the store: 0 or the store's code (ATP_ESTALE for a
 * set older than the item's last one, ATP_ENOCHANNEL, ATP_ENOTFOUND, ...).
 * resync_complete touches nothing and returns 0. fulfill checks that the
 * line's sku is the event's sku (ATP_EINVAL otherwise) before shipping it.
 */
int atp_event_apply(struct atp_store *store, const struct atp_event *ev);

#ifdef __cplusplus
}
#endif

#endif /* ATP_EVENT_H */
