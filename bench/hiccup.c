/*
 * hiccup.c - how long this machine takes a running thread away from itself.
 *
 * A thread that does nothing but read CLOCK_MONOTONIC in a loop sees every
 * interruption of its CPU as a gap between two readings: timer interrupts,
 * the kernel's own work, and on a virtual machine the host running something
 * else on the physical core, which the guest's steal counter does not always
 * show. No server answers faster than the CPU it runs on, so these gaps are
 * the floor under any tail latency measured on the machine. Run one copy per
 * core, pinned (taskset), at the same time as each other, before or between
 * the latency runs they are to explain; bench/side_by_side.py does.
 *
 *   hiccup [-t SECONDS] [--json]
 *
 * Prints the number of gaps longer than each threshold (20 us to 5 ms), the
 * longest, the share of the run lost to gaps over 20 us, and for 100 us,
 * 500 us and 1 ms the share of instants at which work arriving would wait
 * longer than that for the CPU to come back (the sum over gaps g of g - d
 * where g > d, over the run): a request that arrives at such an instant is
 * late by more than d whatever the server does, so when that share is above
 * 1% (0.1%) a p99 (p99.9) under d cannot be measured on the core. Standard C
 * and POSIX only; the loop allocates nothing and makes no system call (the
 * vDSO reads the clock).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint64_t thresholds_ns[] = {20000,  50000,   100000,  200000,
                                         500000, 1000000, 2000000, 5000000};
#define NTHRESH (sizeof(thresholds_ns) / sizeof(thresholds_ns[0]))
static const uint64_t delays_ns[] = {100000, 500000, 1000000};
#define NDELAY (sizeof(delays_ns) / sizeof(delays_ns[0]))

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int usage(void)
{
    fprintf(stderr, "usage: hiccup [-t SECONDS] [--json]\n");
    return 2;
}

int main(int argc, char **argv)
{
    double seconds = 5.0;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            seconds = strtod(argv[++i], &end);
            if (errno || *end || !(seconds > 0 && seconds <= 3600)) {
                fprintf(stderr, "hiccup: -t wants seconds in (0, 3600], not '%s'\n", argv[i]);
                return 2;
            }
        } else {
            return usage();
        }
    }

    uint64_t over[NTHRESH] = {0}, excess_ns[NDELAY] = {0};
    uint64_t lost_ns = 0, longest = 0, reads = 0;
    uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), last = start;
    for (;;) {
        uint64_t t = now_ns();
        uint64_t gap = t - last;
        last = t;
        reads++;
        if (gap > thresholds_ns[0]) {
            lost_ns += gap;
            if (gap > longest)
                longest = gap;
            for (size_t k = 0; k < NTHRESH && gap > thresholds_ns[k]; k++)
                over[k]++;
            for (size_t k = 0; k < NDELAY && gap > delays_ns[k]; k++)
                excess_ns[k] += gap - delays_ns[k];
        }
        if (t >= end)
            break;
    }
    double run_s = (double)(last - start) / 1e9;

    if (json) {
        printf(
            "{\"seconds\": %.3f, \"reads\": %llu, \"longest_us\": %.1f, \"lost_fraction\": %.6f, "
            "\"gaps_over_us\": {",
            run_s, (unsigned long long)reads, (double)longest / 1e3, (double)lost_ns / 1e9 / run_s);
        for (size_t k = 0; k < NTHRESH; k++)
            printf("%s\"%llu\": %llu", k ? ", " : "", (unsigned long long)(thresholds_ns[k] / 1000),
                   (unsigned long long)over[k]);
        printf("}, \"late_fraction_over_us\": {");
        for (size_t k = 0; k < NDELAY; k++)
            printf("%s\"%llu\": %.6f", k ? ", " : "", (unsigned long long)(delays_ns[k] / 1000),
                   (double)excess_ns[k] / 1e9 / run_s);
        printf("}}\n");
    } else {
        printf("%.1f s, longest gap %.1f us, %.3f%% of the time lost to gaps over 20 us\n", run_s,
               (double)longest / 1e3, 100.0 * (double)lost_ns / 1e9 / run_s);
        for (size_t k = 0; k < NTHRESH; k++)
            printf("  gaps over %5llu us: %8llu  (%.2f/s)\n",
                   (unsigned long long)(thresholds_ns[k] / 1000), (unsigned long long)over[k],
                   (double)over[k] / run_s);
        for (size_t k = 0; k < NDELAY; k++)
            printf("  work arriving now would wait over %4llu us for the CPU: %.4f%% of the time\n",
                   (unsigned long long)(delays_ns[k] / 1000),
                   100.0 * (double)excess_ns[k] / 1e9 / run_s);
    }
    return 0;
}
