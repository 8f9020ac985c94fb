/*
 * fuzz_cmd.c - the command layer (src/cmd.h): request frames in, response
 * frames out, against a fresh fuzz store.
 *
 * The input is what one connection sends. It is run twice, each time on a
 * fresh store: once through atp_cmd_handle_many (as the server does, with
 * its batched GET path) and once through atp_cmd_handle, one frame at a
 * time. cmd.h promises the same responses and store effects either way, so
 * the two outputs must be byte for byte equal. Every response frame must
 * parse back with atp_proto_frame, and an hour later every hold must have
 * expired.
 */
#include <string.h>

#include "atp/proto.h"
#include "cmd.h"
#include "fuzz.h"

#define OUT_LIMIT (1u << 20)

/* Every frame of out is a whole response frame. */
static void check_out(const struct atp_buf *out)
{
    size_t off = 0;
    while (off < out->len) {
        struct atp_frame f;
        ssize_t n = atp_proto_frame(out->data + off, out->len - off, UINT32_MAX, &f);
        FUZZ_CHECK(n > 0);
        FUZZ_CHECK(f.opcode & ATP_OP_RESPONSE);
        off += (size_t)n;
    }
}

/* No hold outlives the store's longest TTL. */
static int check_no_hold(const struct atp_item_view *it, void *arg)
{
    (void)arg;
    FUZZ_CHECK(it->reserved == 0);
    return 0;
}

/*
 * One connection's bytes on a fresh store, through atp_cmd_handle_many
 * (many) or frame by frame through atp_cmd_handle; then an hour and a
 * second later (past every TTL the store allows) every hold has expired.
 */
static void run(const uint8_t *data, size_t size, struct atp_buf *out, bool many)
{
    static const volatile int refuse = 0;
    struct atp_store *store = fuzz_store_new(NULL, NULL);
    struct atp_cmd_ctx ctx;
    fuzz_cmd_ctx_init(&ctx, store, &refuse);
    size_t off = 0;
    while (off < size) {
        size_t used;
        if (many) {
            uint64_t t = 0;
            uint32_t frames = 0;
            int err = 0;
            used = atp_cmd_handle_many(&ctx, data + off, size - off, out, FUZZ_NOW_US, SIZE_MAX, &t,
                                       &frames, &err);
            if (err)
                break;
        } else {
            ssize_t n = atp_cmd_handle(&ctx, data + off, size - off, out, FUZZ_NOW_US);
            used = n > 0 ? (size_t)n : 0;
        }
        if (used == 0)
            break;
        FUZZ_CHECK(used <= size - off);
        off += used;
    }
    atp_store_expire(store, FUZZ_NOW_US + UINT64_C(3601000000));
    atp_store_foreach_item(store, check_no_hold, NULL);
    atp_store_free(store);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct atp_buf many = {.limit = OUT_LIMIT}, single = {.limit = OUT_LIMIT};
    run(data, size, &many, true);
    run(data, size, &single, false);
    check_out(&many);
    FUZZ_CHECK(many.len == single.len);
    FUZZ_CHECK(many.len == 0 || memcmp(many.data, single.data, many.len) == 0);
    atp_buf_free(&many);
    atp_buf_free(&single);
    return 0;
}
