/*
 * hist.c - log-linear latency histogram (see hist.h for the layout).
 *
 * Index of a value v >= 256: with e the position of its top bit (e >= 8),
 * shift = e - 7 keeps the top 8 bits, sub = v >> shift lies in [128, 255],
 * and the bucket is 256 + (shift - 1) * 128 + (sub - 128). A bucket covers
 * [sub << shift, (sub + 1) << shift), a width of 2^shift, so its relative
 * width is at most 2^shift / (128 * 2^shift) = 1/128.
 */
#include "hist.h"

#include <errno.h>
#include <math.h>
#include <string.h>

void lg_hist_init(struct lg_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

uint32_t lg_hist_index(uint64_t value)
{
    if (value < (1u << LG_HIST_SUB_BITS))
        return (uint32_t)value;
    if (value >> LG_HIST_MAX_BITS)
        return LG_HIST_NBUCKETS - 1;
    unsigned e = 63u - (unsigned)__builtin_clzll(value);
    unsigned shift = e - (LG_HIST_SUB_BITS - 1);
    uint64_t sub = value >> shift;
    return (1u << LG_HIST_SUB_BITS) + (shift - 1) * LG_HIST_HALF + (uint32_t)(sub - LG_HIST_HALF);
}

uint64_t lg_hist_lowest(uint32_t index)
{
    if (index < (1u << LG_HIST_SUB_BITS))
        return index;
    uint32_t k = index - (1u << LG_HIST_SUB_BITS);
    unsigned shift = k / LG_HIST_HALF + 1;
    uint64_t sub = k % LG_HIST_HALF + LG_HIST_HALF;
    return sub << shift;
}

uint64_t lg_hist_highest(uint32_t index)
{
    if (index < (1u << LG_HIST_SUB_BITS))
        return index;
    uint32_t k = index - (1u << LG_HIST_SUB_BITS);
    unsigned shift = k / LG_HIST_HALF + 1;
    return lg_hist_lowest(index) + (1ull << shift) - 1;
}

void lg_hist_record_n(struct lg_hist *h, uint64_t value, uint64_t n)
{
    if (n == 0)
        return;
    h->counts[lg_hist_index(value)] += n;
    h->total += n;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
    double v = (double)value;
    h->sum += v * (double)n;
    h->sumsq += v * v * (double)n;
}

void lg_hist_record(struct lg_hist *h, uint64_t value)
{
    lg_hist_record_n(h, value, 1);
}

void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src)
{
    if (src->total == 0)
        return;
    for (uint32_t i = 0; i < LG_HIST_NBUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->sum += src->sum;
    dst->sumsq += src->sumsq;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* Bucket holding the rank-th smallest value (rank 1..total). */
static uint32_t bucket_of_rank(const struct lg_hist *h, uint64_t rank, uint64_t *ret_cum)
{
    uint64_t cum = 0;
    for (uint32_t i = 0; i < LG_HIST_NBUCKETS; i++) {
        cum += h->counts[i];
        if (cum >= rank) {
            *ret_cum = cum;
            return i;
        }
    }
    *ret_cum = cum;
    return LG_HIST_NBUCKETS - 1;
}

static uint64_t rank_of(const struct lg_hist *h, double p)
{
    if (p < 0)
        p = 0;
    if (p > 100)
        p = 100;
    double r = ceil(p / 100.0 * (double)h->total);
    uint64_t rank = (uint64_t)r;
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    return rank;
}

uint64_t lg_hist_percentile(const struct lg_hist *h, double p)
{
    if (h->total == 0)
        return 0;
    if (p <= 0)
        return h->min;
    if (p >= 100)
        return h->max;
    uint64_t cum;
    uint32_t b = bucket_of_rank(h, rank_of(h, p), &cum);
    uint64_t v = lg_hist_highest(b);
    if (v > h->max)
        v = h->max;
    if (v < h->min)
        v = h->min;
    return v;
}

double lg_hist_mean(const struct lg_hist *h)
{
    return h->total ? h->sum / (double)h->total : 0.0;
}

double lg_hist_stddev(const struct lg_hist *h)
{
    if (h->total == 0)
        return 0.0;
    double m = lg_hist_mean(h);
    double var = h->sumsq / (double)h->total - m * m;
    return var > 0 ? sqrt(var) : 0.0;
}

int lg_hist_write_hgrm(const struct lg_hist *h, FILE *f, double scale)
{
    if (scale <= 0)
        scale = 1;
    fprintf(f, "%12s %14s %10s %14s\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    if (h->total > 0) {
        /* Levels: 5 steps per halving of the distance to 100% (0, 10, .. 40,
         * 50, 55, .. 70, 75, 77.5, ...), as HdrHistogram's percentile
         * iterator does, until the whole count is covered. */
        double p = 0;
        for (int guard = 0; guard < 2000; guard++) {
            uint64_t cum;
            uint32_t b = bucket_of_rank(h, rank_of(h, p), &cum);
            uint64_t v = p <= 0 ? h->min : lg_hist_highest(b);
            if (v > h->max)
                v = h->max;
            if (cum >= h->total)
                break;
            fprintf(f, "%12.3f %2.12f %10llu %14.2f\n", (double)v / scale, p / 100.0,
                    (unsigned long long)cum, 1.0 / (1.0 - p / 100.0));
            double halvings = floor(log2(100.0 / (100.0 - p)));
            double ticks = 5.0 * pow(2.0, halvings + 1);
            p += 100.0 / ticks;
        }
        fprintf(f, "%12.3f %2.12f %10llu\n", (double)h->max / scale, 1.0,
                (unsigned long long)h->total);
    }
    fprintf(f, "#[Mean    = %12.3f, StdDeviation   = %12.3f]\n", lg_hist_mean(h) / scale,
            lg_hist_stddev(h) / scale);
    fprintf(f, "#[Max     = %12.3f, Total count    = %12llu]\n", (double)h->max / scale,
            (unsigned long long)h->total);
    fprintf(f, "#[Buckets = %12u, SubBuckets     = %12u]\n",
            LG_HIST_MAX_BITS - LG_HIST_SUB_BITS + 1, LG_HIST_HALF);
    return ferror(f) ? -EIO : 0;
}
