/*
 * hist.h - a log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values (nanoseconds in atp-loadgen, but the histogram does not care) are
 * counted in buckets whose width grows with the value: below 256 every value
 * has its own bucket; above, each power of two is split into 128 equal
 * sub-buckets, so a reported percentile is within 1/128 (0.8%) of the true
 * value. Values up to 2^40 (about 18 minutes in ns) are kept apart; larger
 * ones land in the last bucket, and min and max are kept exactly.
 *
 * Recording is a shift, a count-leading-zeros and an increment: no
 * allocation, no lock. One histogram per thread per operation; merge them at
 * the end. Written by hand because Debian 12 packages no HdrHistogram_c.
 *
 * It knows nothing about time, sockets or the load generator.
 */
#ifndef LG_HIST_H
#define LG_HIST_H

#include <stdint.h>
#include <stdio.h>

#define LG_HIST_SUB_BITS 8                              /* 2^8 linear buckets at the bottom */
#define LG_HIST_HALF     (1u << (LG_HIST_SUB_BITS - 1)) /* 128 sub-buckets per power of two */
#define LG_HIST_MAX_BITS 40                             /* values below 2^40 are resolved */
#define LG_HIST_NBUCKETS                                                                           \
    ((1u << LG_HIST_SUB_BITS) + (LG_HIST_MAX_BITS - LG_HIST_SUB_BITS) * LG_HIST_HALF)

struct lg_hist {
    uint64_t total; /* values recorded */
    uint64_t min;   /* exact; UINT64_MAX while empty */
    uint64_t max;   /* exact */
    double sum;     /* for the mean */
    double sumsq;   /* for the standard deviation */
    uint64_t counts[LG_HIST_NBUCKETS];
};

void lg_hist_init(struct lg_hist *h);
void lg_hist_record(struct lg_hist *h, uint64_t value);
void lg_hist_record_n(struct lg_hist *h, uint64_t value, uint64_t n);
/* dst += src */
void lg_hist_merge(struct lg_hist *dst, const struct lg_hist *src);

/* Bucket of a value, and the lowest and highest value that share it. */
uint32_t lg_hist_index(uint64_t value);
uint64_t lg_hist_lowest(uint32_t index);
uint64_t lg_hist_highest(uint32_t index);

/*
 * The value at percentile p (0..100): the highest value equivalent to the
 * bucket holding the ceil(p/100 * total)-th smallest recorded value, never
 * above the exact max. p = 0 gives min, p = 100 gives max. 0 when empty.
 */
uint64_t lg_hist_percentile(const struct lg_hist *h, double p);
double lg_hist_mean(const struct lg_hist *h);
double lg_hist_stddev(const struct lg_hist *h);

/*
 * Write the percentile distribution in HdrHistogram's text (.hgrm) format:
 * "Value Percentile TotalCount 1/(1-Percentile)" rows at percentiles that
 * halve the distance to 100% with 5 steps per halving, then the summary
 * lines. Values are divided by `scale` (1e6 turns ns into ms, the unit
 * HdrHistogram's plotters expect). Returns 0 or -errno.
 */
int lg_hist_write_hgrm(const struct lg_hist *h, FILE *f, double scale);

#endif /* LG_HIST_H */
