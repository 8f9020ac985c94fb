/*
 * fuzz_store.c - the store every stateful harness starts each input from
 * (fuzz.h). Small capacities, so that an input can also exhaust them.
 */
#include "fuzz.h"

static const char *const b2b_locs[] = {"DC-2", "DC-1"};

static const struct atp_channel_config channels[] = {
    {.name = "web", .cap = -1},
    {.name = "app", .safety_units = 5, .safety_pct = 10, .cap = 50},
    {.name = "b2b", .cap = -1, .locations = b2b_locs, .nlocations = 2},
};

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
    cfg.channels = channels;
    cfg.nchannels = 3;
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
