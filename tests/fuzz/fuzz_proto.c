/*
 * fuzz_proto.c - the binary protocol codec (atp/proto.h, protocol/codec.c).
 *
 * The input is a byte stream as a connection delivers it. Each whole frame
 * atp_proto_frame finds is copied to a buffer of its exact size (ASan then
 * sees a decoder that reads into the next frame) and handed to every
 * request and response decoder, whatever its opcode; iterators are walked
 * to their end. Properties checked, all from proto.h:
 *   - every strict prefix of a whole frame is "need more" (0);
 *   - a request that decodes under its own opcode encodes back to exactly
 *     the same bytes (the layout has one encoding per value);
 *   - the MGET iterator yields `count` keys, the STATS one `count` pairs,
 *     the CHANGES one `count` entries.
 */
#include <string.h>

#include "atp/proto.h"
#include "fuzz.h"

/* An encoder given `frame`'s own size wrote exactly its n bytes (enc has n). */
static void same_bytes(const uint8_t *frame, size_t n, const uint8_t *enc, ssize_t got)
{
    FUZZ_CHECK(got == (ssize_t)n);
    FUZZ_CHECK(memcmp(enc, frame, n) == 0);
}

static void requests(const struct atp_frame *f, const uint8_t *frame, size_t n, uint8_t *enc)
{
    uint8_t op = f->opcode;
    uint64_t id = f->id;

    struct atp_proto_hello_req hello;
    if (atp_proto_dec_hello_req(f, &hello) == 0 && op == ATP_OP_HELLO)
        same_bytes(frame, n, enc, atp_proto_enc_hello_req(enc, n, id, &hello));

    struct atp_slice payload;
    if (atp_proto_dec_ping_req(f, &payload) == 0 && op == ATP_OP_PING)
        same_bytes(frame, n, enc, atp_proto_enc_ping_req(enc, n, id, payload));

    struct atp_proto_get_req get;
    if (atp_proto_dec_get_req(f, &get) == 0 && op == ATP_OP_GET)
        same_bytes(frame, n, enc, atp_proto_enc_get_req(enc, n, id, &get));

    struct atp_proto_mget_req mget;
    if (atp_proto_dec_mget_req(f, 0, &mget) == 0) {
        static struct atp_proto_key keys[ATP_PROTO_MAX_KEYS];
        struct atp_proto_mget_req it = mget;
        uint32_t nkeys = 0;
        while (nkeys < ATP_PROTO_MAX_KEYS && atp_proto_mget_next(&it, &keys[nkeys]))
            nkeys++;
        FUZZ_CHECK(nkeys == mget.count);
        FUZZ_CHECK(!atp_proto_mget_next(&it, &keys[0]));
        if (op == ATP_OP_MGET)
            same_bytes(frame, n, enc,
                       atp_proto_enc_mget_req(enc, n, id, mget.breakdown, keys, mget.count));
    }
    /* A small max_keys too: the limit is checked before the keys. */
    (void)atp_proto_dec_mget_req(f, 2, &mget);

    static struct atp_proto_reserve_req resv;
    if (atp_proto_dec_reserve_req(f, &resv) == 0) {
        FUZZ_CHECK(resv.nlines <= ATP_PROTO_MAX_LINES);
        if (op == ATP_OP_RESERVE)
            same_bytes(frame, n, enc,
                       atp_proto_enc_reserve_req(enc, n, id, resv.key, resv.channel, resv.ttl_ms,
                                                 resv.lines, resv.nlines));
    }

    struct atp_proto_id_req idr;
    if (atp_proto_dec_id_req(f, &idr) == 0 &&
        (op == ATP_OP_COMMIT || op == ATP_OP_RELEASE || op == ATP_OP_EXTEND))
        same_bytes(frame, n, enc, atp_proto_enc_id_req(enc, n, op, id, &idr));

    struct atp_proto_getres_req getres;
    if (atp_proto_dec_getres_req(f, &getres) == 0 && op == ATP_OP_GET_RESERVATION)
        same_bytes(frame, n, enc, atp_proto_enc_getres_req(enc, n, id, &getres));

    struct atp_proto_adjust_req adj;
    if (atp_proto_dec_adjust_req(f, &adj) == 0 && op == ATP_OP_ADJUST)
        same_bytes(frame, n, enc, atp_proto_enc_adjust_req(enc, n, id, &adj));

    struct atp_proto_set_req set;
    if (atp_proto_dec_set_req(f, &set) == 0 && op == ATP_OP_SET)
        same_bytes(frame, n, enc, atp_proto_enc_set_req(enc, n, id, &set));

    struct atp_proto_changes_req changes;
    if (atp_proto_dec_changes_req(f, &changes) == 0 && op == ATP_OP_CHANGES)
        same_bytes(frame, n, enc, atp_proto_enc_changes_req(enc, n, id, &changes));

    if (atp_proto_dec_stats_req(f) == 0 && op == ATP_OP_STATS)
        same_bytes(frame, n, enc, atp_proto_enc_stats_req(enc, n, id));
}

static void responses(const struct atp_frame *f)
{
    struct atp_proto_error e;
    if (atp_proto_dec_error(f, &e) == 0) {
        for (uint32_t i = 0; i < e.nshort; i++) {
            struct atp_shortfall s;
            atp_proto_error_shortfall(&e, i, &s);
        }
    }

    struct atp_proto_hello_resp hello;
    (void)atp_proto_dec_hello_resp(f, &hello);
    struct atp_slice payload;
    (void)atp_proto_dec_ping_resp(f, &payload);
    struct atp_proto_get_resp get;
    (void)atp_proto_dec_get_resp(f, &get);

    struct atp_proto_mget_resp mget;
    if (atp_proto_dec_mget_resp(f, &mget) == 0) {
        for (uint32_t i = 0; i < mget.count; i++) {
            struct atp_breakdown b;
            (void)atp_proto_mget_resp_entry(&mget, i, &b);
        }
    }

    static struct atp_proto_resv resv;
    bool replayed;
    if (atp_proto_dec_resv_resp(f, &resv, &replayed) == 0)
        FUZZ_CHECK(resv.nlines <= ATP_PROTO_MAX_LINES);

    int64_t on_hand;
    (void)atp_proto_dec_adjust_resp(f, &on_hand);
    (void)atp_proto_dec_empty_resp(f);

    struct atp_proto_changes_resp changes;
    if (atp_proto_dec_changes_resp(f, &changes) == 0) {
        struct atp_change c;
        uint32_t entries = 0;
        while (entries <= changes.count && atp_proto_changes_next(&changes, &c))
            entries++;
        FUZZ_CHECK(entries == changes.count);
    }

    struct atp_proto_stats_resp stats;
    if (atp_proto_dec_stats_resp(f, &stats) == 0) {
        struct atp_slice name;
        int64_t value;
        uint32_t pairs = 0;
        while (pairs <= stats.count && atp_proto_stats_next(&stats, &name, &value))
            pairs++;
        FUZZ_CHECK(pairs == stats.count);
    }
}

static void one_frame(const uint8_t *in, size_t n)
{
    uint8_t *frame = malloc(n), *enc = malloc(n);
    if (!frame || !enc) {
        free(frame);
        free(enc);
        return;
    }
    memcpy(frame, in, n);
    struct atp_frame f;
    FUZZ_CHECK(atp_proto_frame(frame, n, 0, &f) == (ssize_t)n);
    FUZZ_CHECK(f.body_len == n - ATP_PROTO_HDR_SIZE);
    FUZZ_CHECK(atp_proto_frame_need(frame, n) == n);
    struct atp_frame g;
    for (size_t k = 0; k < n && k <= ATP_PROTO_HDR_SIZE; k++)
        FUZZ_CHECK(atp_proto_frame(frame, k, 0, &g) == 0);
    FUZZ_CHECK(atp_proto_frame(frame, n - 1, 0, &g) == 0);
    (void)atp_proto_op_name(f.opcode);
    requests(&f, frame, n, enc);
    responses(&f);
    free(enc);
    free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        struct atp_frame f;
        ssize_t n = atp_proto_frame(data + off, size - off, 0, &f);
        (void)atp_proto_frame_need(data + off, size - off);
        if (n <= 0) {
            /* A tighter limit on what is left, then stop like a server. */
            (void)atp_proto_frame(data + off, size - off, 64, &f);
            break;
        }
        one_frame(data + off, (size_t)n);
        off += (size_t)n;
    }
    return 0;
}
