/*
 * event_json.h - the JSON side of src/event.c: one event object as a flat
 * list of members, whichever parser read it.
 *
 * event.c validates members (names, kinds, ranges) and knows nothing of the
 * parser; event_simd.cc reads the common case with simdjson; event.c reads
 * everything else with json-c. Internal to libatp.
 */
#ifndef ATP_EVENT_JSON_H
#define ATP_EVENT_JSON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The JSON kind of a member's value. */
enum ev_kind {
    EVK_NULL = 1,
    EVK_BOOL,
    EVK_INT,    /* an integer literal within int64: i */
    EVK_BIGINT, /* an integer literal above INT64_MAX (not an int64) */
    EVK_DOUBLE, /* a number with a fraction or an exponent */
    EVK_STRING, /* s, len: unescaped, NUL-terminated, may hold NULs */
    EVK_ARRAY,
    EVK_OBJECT,
};

struct ev_value {
    int kind; /* enum ev_kind */
    int64_t i;
    const char *s;
    size_t len;
};

/* One member; name and strings point into the parser and live until its
 * next parse. */
struct ev_member {
    const char *name;
    size_t name_len;
    struct ev_value v;
};

#define EV_FAST_MEMBERS 32 /* members the fast path takes; more fall back */

struct ev_fast;

/* A fast parser for documents up to max_bytes, nested < max_depth. NULL when
 * out of memory. */
struct ev_fast *ev_fast_new(uint32_t max_bytes, uint32_t max_depth);
void ev_fast_free(struct ev_fast *f);

/*
 * Parse buf[0..len) (no padding needed, not NUL-terminated) as one JSON
 * object and list its members in document order into out[EV_FAST_MEMBERS].
 * Returns the number of members (>= 0), or -1 when the fast path does not
 * decide: not valid strict JSON, too deep, not an object, too many members,
 * or no memory. The caller then parses with json-c, which says why.
 */
int ev_fast_parse(struct ev_fast *f, const char *buf, size_t len, struct ev_member *out);

#ifdef __cplusplus
}
#endif

#endif /* ATP_EVENT_JSON_H */
