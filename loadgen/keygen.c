/*
 * keygen.c - xoshiro256**, and the uniform, zipfian and hotspot key
 * distributions (see keygen.h).
 *
 * Zipfian by rejection-inversion (Hormann & Derflinger, "Rejection-inversion
 * to generate variates from monotone discrete distributions", 1996). With
 * h(x) = x^-theta and H its integral, a point u is drawn uniformly in
 * [H(n + 0.5), H(1.5) - 1], inverted to x = H^-1(u) and rounded to the rank
 * k; k is accepted when u lies under the step of height h(k) (or in the
 * shortcut region k - x <= s). The acceptance rate is above 90% for every
 * theta, so a draw costs about one log and one exp.
 */
#include "keygen.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void lg_rng_seed(struct lg_rng *r, uint64_t seed)
{
    r->zipf_ready = false;
    r->zipf_pos = 0;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t lg_rng_next(struct lg_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double lg_rng_double(struct lg_rng *r)
{
    return (double)(lg_rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t lg_rng_below(struct lg_rng *r, uint64_t n)
{
    __extension__ typedef unsigned __int128 u128;
    return (uint64_t)(((u128)lg_rng_next(r) * n) >> 64);
}

uint64_t lg_rng_range(struct lg_rng *r, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + lg_rng_below(r, hi - lo + 1);
}

uint64_t lg_fnv1a64(uint64_t v)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int i = 0; i < 8; i++) {
        h ^= v & 0xff;
        h *= 0x100000001b3ull;
        v >>= 8;
    }
    return h;
}

/* log1p(x)/x, with the series near 0 where the quotient loses precision. */
static double helper1(double x)
{
    if (fabs(x) > 1e-8)
        return log1p(x) / x;
    return 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

/* expm1(x)/x, likewise. */
static double helper2(double x)
{
    if (fabs(x) > 1e-8)
        return expm1(x) / x;
    return 1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x));
}

static double zh(double theta, double x)
{
    return exp(-theta * log(x));
}

/* H(x) = (x^(1-theta) - 1) / (1 - theta), and log(x) when theta == 1. */
static double zH(double theta, double x)
{
    double lx = log(x);
    return helper2((1.0 - theta) * lx) * lx;
}

static double zH_inv(double theta, double x)
{
    double t = x * (1.0 - theta);
    if (t < -1.0)
        t = -1.0; /* rounding at the far end of the range */
    return exp(helper1(t) * x);
}

/*
 * Vose's alias method over ranks 1..n with weights k^-theta: every slot i
 * holds its own rank with probability cut / 2^32 and rank to + 1
 * otherwise, so a draw is one uniform slot and one coin. Built in O(n) with
 * two work lists (small and large weights) in one scratch array.
 */
static int alias_build(struct lg_keygen *k)
{
    uint32_t n = (uint32_t)k->n;
    double *w = malloc(sizeof(double) * n);
    uint32_t *work = malloc(sizeof(uint32_t) * n);
    k->alias = malloc(sizeof(*k->alias) * n);
    if (!w || !work || !k->alias) {
        free(w);
        free(work);
        lg_keygen_free(k);
        return -ENOMEM;
    }
    double sum = 0;
    for (uint32_t i = 0; i < n; i++)
        sum += w[i] = pow((double)i + 1, -k->theta);
    /* scaled so the mean weight is 1; small ones fill from the front of
     * `work`, large ones from the back */
    uint32_t ns = 0, nl = n;
    for (uint32_t i = 0; i < n; i++) {
        w[i] *= (double)n / sum;
        if (w[i] < 1.0)
            work[ns++] = i;
        else
            work[--nl] = i;
    }
    while (ns > 0 && nl < n) {
        uint32_t s = work[--ns], l = work[nl];
        k->alias[s].cut = (uint32_t)(w[s] * 4294967296.0);
        k->alias[s].to = l;
        w[l] -= 1.0 - w[s];
        if (w[l] < 1.0) {
            nl++;
            work[ns++] = l; /* l became small: it is out of the large list */
        }
    }
    /* What is left has weight 1 up to rounding: always itself. */
    while (ns > 0) {
        uint32_t i = work[--ns];
        k->alias[i].cut = UINT32_MAX, k->alias[i].to = i;
    }
    while (nl < n) {
        uint32_t i = work[nl++];
        k->alias[i].cut = UINT32_MAX, k->alias[i].to = i;
    }
    free(w);
    free(work);
    return 0;
}

void lg_keygen_free(struct lg_keygen *g)
{
    free(g->alias);
    g->alias = NULL;
    free(g->scr);
    g->scr = NULL;
}

void lg_keygen_drop_table(struct lg_keygen *g)
{
    lg_keygen_free(g);
}

int lg_keygen_init(struct lg_keygen *g, enum lg_dist dist, uint64_t n, double theta, bool scrambled,
                   double hot_data, double hot_opn)
{
    if (n == 0)
        return -EINVAL;
    struct lg_keygen k = {.dist = dist, .n = n, .scrambled = scrambled};
    switch (dist) {
    case LG_DIST_UNIFORM:
        break;
    case LG_DIST_ZIPFIAN:
        if (!(theta > 0 && theta <= 10))
            return -EINVAL;
        k.theta = theta;
        k.h_x1 = zH(theta, 1.5) - 1.0;
        k.h_n = zH(theta, (double)n + 0.5);
        k.s = 2.0 - zH_inv(theta, zH(theta, 2.5) - zh(theta, 2.0));
        if (n <= LG_ZIPF_TABLE_MAX) {
            int rc = alias_build(&k);
            if (rc)
                return rc;
            if (scrambled) {
                k.scr = malloc(sizeof(*k.scr) * n);
                if (!k.scr) {
                    lg_keygen_free(&k);
                    return -ENOMEM;
                }
                for (uint64_t r = 0; r < n; r++)
                    k.scr[r] = (uint32_t)(lg_fnv1a64(r) % n);
            }
        }
        break;
    case LG_DIST_HOTSPOT:
        if (!(hot_data > 0 && hot_data <= 1) || !(hot_opn >= 0 && hot_opn <= 1))
            return -EINVAL;
        k.hot_n = (uint64_t)((double)n * hot_data);
        if (k.hot_n < 1)
            k.hot_n = 1;
        if (k.hot_n > n)
            k.hot_n = n;
        k.hot_opn = hot_opn;
        break;
    default:
        return -EINVAL;
    }
    *g = k;
    return 0;
}

uint64_t lg_zipf_rank(const struct lg_keygen *g, struct lg_rng *r)
{
    if (g->alias) {
        /* A slot is a random access into n * 8 bytes: a cache miss, unless
         * it was prefetched (measured in atp-loadgen at pipeline 16: 17% of
         * its CPU in this function without). The random number of this
         * draw was taken LG_ZIPF_AHEAD draws ago and its slot prefetched
         * then; the one taken now replaces it in the ring. Every draw still
         * uses one fresh xoshiro output, in order, so the distribution is
         * the same and a seed gives the same ranks (the outputs are taken
         * earlier in the thread's stream than a draw without the ring). */
        if (!r->zipf_ready) {
            for (uint32_t k = 0; k < LG_ZIPF_AHEAD; k++) {
                r->zipf_ring[k] = lg_rng_next(r);
                __builtin_prefetch(&g->alias[((r->zipf_ring[k] >> 32) * g->n) >> 32]);
            }
            r->zipf_pos = 0;
            r->zipf_ready = true;
        }
        uint64_t x = r->zipf_ring[r->zipf_pos];
        uint64_t y = lg_rng_next(r);
        r->zipf_ring[r->zipf_pos] = y;
        r->zipf_pos = (r->zipf_pos + 1) % LG_ZIPF_AHEAD;
        __builtin_prefetch(&g->alias[((y >> 32) * g->n) >> 32]);
        uint32_t i = (uint32_t)(((x >> 32) * g->n) >> 32); /* slot from the high bits */
        const struct lg_alias *a = &g->alias[i];
        return (uint32_t)x < a->cut ? (uint64_t)i + 1 : (uint64_t)a->to + 1;
    }
    for (;;) {
        double u = g->h_n + lg_rng_double(r) * (g->h_x1 - g->h_n);
        double x = zH_inv(g->theta, u);
        double kd = floor(x + 0.5);
        uint64_t k;
        if (kd < 1)
            k = 1;
        else if (kd > (double)g->n)
            k = g->n;
        else
            k = (uint64_t)kd;
        if ((double)k - x <= g->s || u >= zH(g->theta, (double)k + 0.5) - zh(g->theta, (double)k))
            return k;
    }
}

uint64_t lg_keygen_next(const struct lg_keygen *g, struct lg_rng *r)
{
    switch (g->dist) {
    case LG_DIST_ZIPFIAN: {
        uint64_t rank = lg_zipf_rank(g, r) - 1;
        if (g->scr)
            return g->scr[rank]; /* popular ranks first: the hot part stays cached */
        return g->scrambled ? lg_fnv1a64(rank) % g->n : rank;
    }
    case LG_DIST_HOTSPOT:
        if (g->hot_n >= g->n || lg_rng_double(r) < g->hot_opn)
            return lg_rng_below(r, g->hot_n);
        return g->hot_n + lg_rng_below(r, g->n - g->hot_n);
    case LG_DIST_UNIFORM:
    default:
        return lg_rng_below(r, g->n);
    }
}
