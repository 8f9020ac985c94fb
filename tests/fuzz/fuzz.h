/*
 * fuzz.h - what the fuzz harnesses in tests/fuzz/ share.
 *
 * Each fuzz_<target>.c defines LLVMFuzzerTestOneInput: under clang it links
 * with libFuzzer (-fsanitize=fuzzer) and is fuzzed; in every other build it
 * links with replay.c, which calls it once on each file of the target's
 * corpus (suite `unit`). A harness keeps no state from one input to the
 * next, so a crash reproduces from its one file.
 *
 * FUZZ_CHECK states a property the code under test promises in its header;
 * when it does not hold the process aborts, which libFuzzer records as a
 * crash and the replay test reports as a failure.
 */
#ifndef ATP_FUZZ_H
#define ATP_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "atp/store.h"

#define FUZZ_NOW_US UINT64_C(1750000000000000) /* the wall clock of every input */

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * A small store in a known state, new for each input: channels web, app
 * (safety 5, cap 50) and b2b (DC-2 then DC-1); SKU-1 at DC-1 (100) and DC-2
 * (20), SKU-2 at DC-1 (3); reservation 'order-1' held (SKU-1@DC-1 x2,
 * SKU-2 anywhere x1) and 'order-2' committed (SKU-1@DC-2 x1). Their ids are
 * in *ret_held and *ret_committed (may be NULL). Aborts if it cannot be built.
 */
struct atp_store *fuzz_store_new(uint64_t *ret_held, uint64_t *ret_committed);

/*
 * The command layer's context over store, as the harnesses that answer
 * requests use it: small limits (a 16 KiB frame, 8 keys, 4 lines) that an
 * input can go over, refuse_writes, and one statistics source.
 */
struct atp_cmd_ctx;
void fuzz_cmd_ctx_init(struct atp_cmd_ctx *ctx, struct atp_store *store,
                       const volatile int *refuse);

/* The fuzz store's channels (a harness with a store of its own uses them too). */
#define FUZZ_NCHANNELS 3
extern const struct atp_channel_config fuzz_channels[FUZZ_NCHANNELS];

/*
 * (sku, loc) reads back in every channel of fuzz_channels as SPEC.md says:
 * atp = clamp(on_hand - allocated - reserved - safety, 0, cap), and 0 where
 * the channel does not sell from loc (only the range is checked when the
 * difference overflows). False, checking nothing, if the item does not exist.
 */
bool fuzz_check_atp(struct atp_store *store, struct atp_slice sku, struct atp_slice loc);

#endif /* ATP_FUZZ_H */
