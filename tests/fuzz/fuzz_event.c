/*
 * fuzz_event.c - Kafka events: atp_event_parse and atp_event_apply
 * (atp/event.h, protocol/EVENTS.md).
 *
 * The input is a run of messages separated by '\n' (the line format that
 * kcat -P reads), and also, whole, one more message. Each message is copied
 * to a buffer of its exact size (ASan then sees a read past its end), parsed
 * by a parser with the default limits and by one with tight limits (256
 * bytes, depth 2, no error out-parameter), checked against the contract of
 * atp_event_parse, and applied to a fresh fuzz store when valid. After each
 * apply the item it touched must still read back with a consistent
 * breakdown: atp = clamp(on_hand - allocated - reserved - safety, 0, cap).
 *
 * Two parsers, one verdict (src/event.c): a message whose text is an object
 * is parsed once more with 32 "x-" members put in front of its own, more
 * than the simdjson fast path takes, so json-c decides; the code, the
 * dead-letter reason and the event must be the same either way.
 */
#include <string.h>

#include "atp/event.h"
#include "fuzz.h"

#define SENTINEL 0xA5

/* The contract of atp_event_parse (event.h) for one call's outcome. */
static void check_parse(int rc, const struct atp_event *ev, const struct atp_event_error *err,
                        bool with_err)
{
    struct atp_event untouched_ev;
    struct atp_event_error untouched_err;
    memset(&untouched_ev, SENTINEL, sizeof(untouched_ev));
    memset(&untouched_err, SENTINEL, sizeof(untouched_err));
    if (rc == 0) {
        FUZZ_CHECK(!with_err || memcmp(err, &untouched_err, sizeof(*err)) == 0);
        FUZZ_CHECK(ev->type >= ATP_EV_ADJUST && ev->type <= ATP_EV_RESYNC_COMPLETE);
        FUZZ_CHECK(ev->event_id_len >= 1 && ev->event_id_len <= ATP_EVENT_ID_MAX);
        FUZZ_CHECK(ev->sku_len <= ATP_SKU_MAX && ev->loc_len <= ATP_LOC_MAX);
        FUZZ_CHECK(ev->channel_len <= ATP_CHANNEL_MAX && ev->key_len <= ATP_KEY_MAX);
        return;
    }
    FUZZ_CHECK(rc < 0);
    FUZZ_CHECK(memcmp(ev, &untouched_ev, sizeof(*ev)) == 0);
    if (with_err) {
        FUZZ_CHECK(err->reason > ATP_DLQ_NONE && err->reason < ATP_DLQ_COUNT);
        FUZZ_CHECK(memchr(err->detail, '\0', sizeof(err->detail)) != NULL);
        FUZZ_CHECK(err->detail[0] != '\0');
    }
}

/* The item an applied event names reads back consistently in every channel. */
static void check_item(struct atp_store *store, const struct atp_event *ev)
{
    if (ev->sku_len && ev->loc_len)
        fuzz_check_atp(store, (struct atp_slice){ev->sku, ev->sku_len},
                       (struct atp_slice){ev->loc, ev->loc_len});
}

static bool same_str(const char *a, uint32_t alen, const char *b, uint32_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static bool same_event(const struct atp_event *a, const struct atp_event *b)
{
    return a->type == b->type &&
           same_str(a->event_id, a->event_id_len, b->event_id, b->event_id_len) &&
           a->ts_ms == b->ts_ms && same_str(a->sku, a->sku_len, b->sku, b->sku_len) &&
           same_str(a->loc, a->loc_len, b->loc, b->loc_len) &&
           same_str(a->channel, a->channel_len, b->channel, b->channel_len) &&
           same_str(a->key, a->key_len, b->key, b->key_len) && a->qty == b->qty &&
           a->seq == b->seq && a->line == b->line && a->reason == b->reason &&
           a->remove == b->remove;
}

static bool json_space(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* msg parsed by json-c (see the top): the same verdict as rc, ev, err. */
static void check_fallback(struct atp_event_parser *p, const uint8_t *msg, size_t len, int rc,
                           const struct atp_event *ev, const struct atp_event_error *err)
{
    enum { NPAD = 32 };
    size_t i = 0;
    while (i < len && json_space(msg[i]))
        i++;
    if (i == len || msg[i] != '{')
        return;
    size_t j = i + 1;
    while (j < len && json_space(msg[j]))
        j++;
    bool empty = j < len && msg[j] == '}';
    char pad[NPAD * 16 + 2];
    size_t plen = 0;
    for (int k = 0; k < NPAD; k++)
        plen +=
            (size_t)snprintf(pad + plen, sizeof(pad) - plen, "%s\"x-fuzz-%d\":0", k ? "," : "", k);
    if (!empty)
        pad[plen++] = ',';
    if (len + plen > ATP_EVENT_DEFAULT_BYTES)
        return;
    uint8_t *padded = malloc(len + plen);
    if (!padded)
        return;
    memcpy(padded, msg, i + 1);
    memcpy(padded + i + 1, pad, plen);
    memcpy(padded + i + 1 + plen, msg + i + 1, len - i - 1);

    struct atp_event ev2;
    struct atp_event_error err2;
    memset(&ev2, SENTINEL, sizeof(ev2));
    memset(&err2, 0, sizeof(err2));
    int rc2 = atp_event_parse(p, padded, len + plen, &ev2, &err2);
    free(padded);
    if (rc2 != rc || (rc != 0 && err2.reason != err->reason) || (rc == 0 && !same_event(ev, &ev2)))
        fprintf(stderr, "fast path: rc %d %s (%s); json-c: rc %d %s (%s)\n", rc,
                rc ? atp_dlq_reason_slug(err->reason) : "", rc ? err->detail : "", rc2,
                rc2 ? atp_dlq_reason_slug(err2.reason) : "", rc2 ? err2.detail : "");
    FUZZ_CHECK(rc2 == rc);
    FUZZ_CHECK(rc == 0 || err2.reason == err->reason);
    FUZZ_CHECK(rc != 0 || same_event(ev, &ev2));
}

static void one_message(struct atp_event_parser *p, struct atp_event_parser *tight,
                        struct atp_store *store, const uint8_t *data, size_t len)
{
    uint8_t *msg = malloc(len ? len : 1);
    if (!msg)
        return;
    memcpy(msg, data, len);

    struct atp_event ev;
    struct atp_event_error err;
    memset(&ev, SENTINEL, sizeof(ev));
    memset(&err, SENTINEL, sizeof(err));
    int rc = atp_event_parse(tight, msg, len, &ev, NULL);
    check_parse(rc, &ev, NULL, false);

    memset(&ev, SENTINEL, sizeof(ev));
    rc = atp_event_parse(p, msg, len, &ev, &err);
    check_parse(rc, &ev, &err, true);
    check_fallback(p, msg, len, rc, &ev, &err);
    free(msg);
    if (rc == 0) {
        (void)atp_event_apply(store, &ev);
        check_item(store, &ev);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct atp_event_parser *p = NULL, *tight = NULL;
    const struct atp_event_limits limits = {.max_bytes = 256, .max_depth = 2};
    if (atp_event_parser_new(NULL, &p) != 0 || atp_event_parser_new(&limits, &tight) != 0) {
        atp_event_parser_free(p);
        return 0;
    }
    struct atp_store *store = fuzz_store_new(NULL, NULL);

    size_t start = 0;
    for (size_t i = 0; i <= size; i++) {
        if (i == size || data[i] == '\n') {
            one_message(p, tight, store, data + start, i - start);
            start = i + 1;
        }
    }
    if (size > 0 && memchr(data, '\n', size))
        one_message(p, tight, store, data, size);

    atp_store_free(store);
    atp_event_parser_free(tight);
    atp_event_parser_free(p);
    return 0;
}
