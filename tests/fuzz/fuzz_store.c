/*
 * fuzz_store.c - the store every stateful harness starts each input from
 * (fuzz.h). Small capacities, so that an input can also exhaust them.
 */
#include <string.h>

#include "cmd.h"
#include "fuzz.h"

static const char *const b2b_locs[] = {"DC-2", "DC-1"};

const struct atp_channel_config fuzz_channels[FUZZ_NCHANNELS] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 5, .safety_pct = 10, .cap = 50},
    {.name = "b2b", .cap = -1, .locations = b2b_locs, .nlocations = 2},
};

static bool sells_from(uint32_t ch, struct atp_slice loc)
{
    if (!fuzz_channels[ch].locations)
        return true;
    for (uint32_t i = 0; i < fuzz_channels[ch].nlocations; i++)
        if (strlen(fuzz_channels[ch].locations[i]) == loc.len &&
            memcmp(fuzz_channels[ch].locations[i], loc.p, loc.len) == 0)
            return true;
    return false;
}

bool fuzz_check_atp(struct atp_store *store, struct atp_slice sku, struct atp_slice loc)
{
    for (uint32_t ch = 0; ch < FUZZ_NCHANNELS; ch++) {
        struct atp_breakdown b;
        int rc = atp_store_get(store, sku, loc, ch, &b);
        if (rc == ATP_ENOTFOUND && ch == 0)
            return false;
        FUZZ_CHECK(rc == 0);
        int64_t cap = fuzz_channels[ch].cap, want;
        FUZZ_CHECK(b.atp >= 0 && (cap < 0 || b.atp <= cap));
        if (__builtin_sub_overflow(b.on_hand, b.allocated, &want) ||
            __builtin_sub_overflow(want, b.reserved, &want) ||
            __builtin_sub_overflow(want, b.safety, &want))
            continue; /* counters near the int64 limits: only the range above */
        if (want < 0 || !sells_from(ch, loc))
            want = 0;
        if (cap >= 0 && want > cap)
            want = cap;
        if (b.atp != want)
            fprintf(stderr,
                    "%.*s@%.*s ch %u: on_hand %lld allocated %lld reserved %lld safety %lld "
                    "atp %lld\n",
                    (int)sku.len, sku.p, (int)loc.len, loc.p, ch, (long long)b.on_hand,
                    (long long)b.allocated, (long long)b.reserved, (long long)b.safety,
                    (long long)b.atp);
        FUZZ_CHECK(b.atp == want);
    }
    return true;
}

static void must(int rc, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "fuzz_store_new: %s: %s\n", what, atp_strerror(rc));
        abort();
    }
}

struct atp_store *fuzz_store_new(uint64_t *ret_held, uint64_t *ret_committed)
{
    struct atp_store_config cfg;
    atp_store_config_defaults(&cfg);
    cfg.max_items = 64;
    cfg.max_skus = 64;
    cfg.max_reservations = 16;
    cfg.max_overrides = 8;
    cfg.nshards = 2;
    cfg.max_ttl_ms = 3600 * 1000;
    cfg.channels = fuzz_channels;
    cfg.nchannels = FUZZ_NCHANNELS;
    struct atp_store *s = NULL;
    must(atp_store_new(&cfg, &s), "atp_store_new");
    must(atp_store_set(s, ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), 100, 0), "set");
    must(atp_store_set(s, ATP_SLICE("SKU-1"), ATP_SLICE("DC-2"), 20, 0), "set");
    must(atp_store_set(s, ATP_SLICE("SKU-2"), ATP_SLICE("DC-1"), 3, 0), "set");

    const struct atp_line_req held_lines[] = {
        {ATP_SLICE("SKU-1"), ATP_SLICE("DC-1"), 2},
        {ATP_SLICE("SKU-2"), {"", 0}, 1},
    };
    const struct atp_line_req committed_lines[] = {
        {ATP_SLICE("SKU-1"), ATP_SLICE("DC-2"), 1},
    };
    struct atp_reserve_req req = {
        .key = ATP_SLICE("order-1"),
        .channel = 0,
        .ttl_ms = 900000,
        .lines = held_lines,
        .nlines = 2,
    };
    struct atp_reservation held, committed;
    bool replayed;
    must(atp_store_reserve(s, &req, FUZZ_NOW_US, &held, &replayed, NULL), "reserve");
    req.key = ATP_SLICE("order-2");
    req.lines = committed_lines;
    req.nlines = 1;
    must(atp_store_reserve(s, &req, FUZZ_NOW_US, &committed, &replayed, NULL), "reserve");
    must(atp_store_commit(s, committed.id, FUZZ_NOW_US, NULL), "commit");
    if (ret_held)
        *ret_held = held.id;
    if (ret_committed)
        *ret_committed = committed.id;
    return s;
}

static void source_collect(void *arg, atp_stat_emit_fn emit, void *emit_arg)
{
    (void)arg;
    emit(emit_arg, "fuzz_source", 42);
}

void fuzz_cmd_ctx_init(struct atp_cmd_ctx *ctx, struct atp_store *store, const volatile int *refuse)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->store = store;
    ctx->build = "atpd fuzz";
    ctx->max_frame = 16384; /* small enough for an input to go over it */
    ctx->max_keys = 8;
    ctx->max_lines = 4;
    ctx->refuse_writes = refuse;
    ctx->sources[0] = (struct atp_stats_source){source_collect, NULL};
    ctx->nsources = 1;
}
