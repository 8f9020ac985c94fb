/*
 * keygen.h - random numbers and key choice for atp-loadgen.
 *
 * A small fast generator (xoshiro256**, seeded through splitmix64 so any
 * 64-bit seed gives a good state) and three key distributions over
 * [0, n): uniform, zipfian and hotspot, as YCSB names them.
 *
 * Zipfian draws ranks from an alias table (Walker/Vose: one random number,
 * one table entry, no logarithm) when the key space has at most
 * LG_ZIPF_TABLE_MAX keys (8 bytes per key), and otherwise with the
 * rejection-inversion method of Hormann and Derflinger (1996): exact for any
 * exponent, O(1) per draw with no table, but a log and an exp per draw (about
 * 90 ns on the development VM, a tenth of atp-loadgen's CPU per request at
 * pipeline 16; the table takes about 15). "Scrambled" maps rank r to
 * fnv1a64(r) mod n as YCSB's ScrambledZipfianGenerator does, so the popular
 * keys are spread over the key space instead of being 0, 1, 2...
 *
 * Hotspot: a fraction `hot_opn` of the draws go uniformly to the first
 * `hot_data` fraction of the keys, the rest uniformly to the others.
 *
 * It knows nothing about SKUs, sockets or time.
 */
#ifndef LG_KEYGEN_H
#define LG_KEYGEN_H

#include <stdbool.h>
#include <stdint.h>

/* Zipfian table draws take their random numbers this many draws ahead. */
#define LG_ZIPF_AHEAD 8

struct lg_rng {
    uint64_t s[4];
    /* Zipfian table draws use random numbers drawn LG_ZIPF_AHEAD draws
     * earlier, whose table slots were prefetched then: at pipeline 16 a
     * connection's draws come back to back, and a slot prefetched only one
     * draw ahead had not arrived yet. A ring, oldest at zipf_pos. */
    uint64_t zipf_ring[LG_ZIPF_AHEAD];
    uint32_t zipf_pos;
    bool zipf_ready;
};

void lg_rng_seed(struct lg_rng *r, uint64_t seed);
uint64_t lg_rng_next(struct lg_rng *r);
/* Uniform in [0, 1). */
double lg_rng_double(struct lg_rng *r);
/* Uniform in [0, n); n > 0. Lemire's multiply-shift, bias below 2^-32 for n < 2^32. */
uint64_t lg_rng_below(struct lg_rng *r, uint64_t n);
/* Uniform in [lo, hi]; lo <= hi. */
uint64_t lg_rng_range(struct lg_rng *r, uint64_t lo, uint64_t hi);

uint64_t lg_fnv1a64(uint64_t v);

enum lg_dist {
    LG_DIST_UNIFORM = 0,
    LG_DIST_ZIPFIAN = 1,
    LG_DIST_HOTSPOT = 2,
};

/* One slot of the zipfian alias table: rank i+1 is drawn when the low 32
 * random bits are below cut, else rank to+1 (one cache line per draw). */
struct lg_alias {
    uint32_t cut;
    uint32_t to;
};

struct lg_keygen {
    enum lg_dist dist;
    uint64_t n;     /* keys are 0..n-1 */
    bool scrambled; /* zipfian: spread popular ranks over the space */
    /* zipfian (rejection-inversion state) */
    double theta;           /* exponent, e.g. 0.99 */
    double h_x1;            /* H(1.5) - 1 */
    double h_n;             /* H(n + 0.5) */
    double s;               /* acceptance shortcut */
    struct lg_alias *alias; /* zipfian table, or NULL */
    /* with the table and scrambled: the key of every rank, fnv1a64(rank) mod
     * n computed once (a 64-bit division per draw otherwise), or NULL */
    uint32_t *scr;
    /* hotspot */
    uint64_t hot_n; /* keys in the hot set (>= 1 when used) */
    double hot_opn; /* share of draws that go to the hot set */
};

/* Zipfian key spaces up to this size draw from a table (8 bytes per key, and
 * 4 more when scrambled). */
#define LG_ZIPF_TABLE_MAX (1u << 22)

/*
 * Set up a generator. theta in (0, 10], != 1 handled as well as 1;
 * hot_data in (0, 1], hot_opn in [0, 1]. Returns 0, -EINVAL or -ENOMEM.
 * The generator owns memory until lg_keygen_free; it is then read-only and
 * may be shared by threads (each with its own lg_rng).
 */
int lg_keygen_init(struct lg_keygen *g, enum lg_dist dist, uint64_t n, double theta, bool scrambled,
                   double hot_data, double hot_opn);

/* Release the tables; g may be zeroed or already freed. */
void lg_keygen_free(struct lg_keygen *g);

/* Zipfian: forget the tables and draw by rejection-inversion, scrambling
 * with fnv1a64 at each draw (the tests compare the two methods). */
void lg_keygen_drop_table(struct lg_keygen *g);

/* Next key in [0, n). */
uint64_t lg_keygen_next(const struct lg_keygen *g, struct lg_rng *r);

/* Zipfian rank in [1, n] before scrambling (exposed for the tests). */
uint64_t lg_zipf_rank(const struct lg_keygen *g, struct lg_rng *r);

#endif /* LG_KEYGEN_H */
