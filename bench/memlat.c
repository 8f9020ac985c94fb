/*
 * memlat.c - how long this machine takes to fetch a cache line it does not
 * hold, and how many such fetches one core keeps in flight.
 *
 * The store's lookups and reservations at 1M items are chains of dependent
 * loads from memory that no cache holds (the key's index slot, then the
 * item), so their speed is set by this machine's memory latency, and by how
 * many chains the core overlaps, more than by anything the code does. This
 * measures both, with nothing of atpd in between:
 *
 *   memlat [-c CHAINS] [-n LOADS] SIZE_MIB...
 *
 * For each size, a buffer of that many MiB (on transparent huge pages when
 * the kernel grants them, as the store's arena is) is linked into CHAINS
 * random cycles of 64-byte lines, and the loop follows all the cycles at
 * once, one load of each per round: each load depends on the previous load
 * of its own cycle only. With one chain this is the latency of a miss; with
 * several, the time per load falls as the core overlaps them, until it stops
 * falling at the number of misses the core keeps in flight. Prints ns per
 * load. Standard C and POSIX only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define LINE       64
#define MAX_CHAINS 16

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Follow `chains` cycles through buf for `rounds` rounds; ns per load. */
static double run(char *buf, size_t lines, int chains, uint64_t loads)
{
    uint32_t *perm = malloc(lines * sizeof(*perm));
    if (!perm) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < lines; i++)
        perm[i] = (uint32_t)i;
    uint64_t s = 0x9e3779b97f4a7c15u;
    for (size_t i = lines - 1; i > 0; i--) {
        size_t j = rnd(&s) % (i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    /* Chain c links the lines perm[k] with k % chains == c, in order. */
    char *p[MAX_CHAINS];
    size_t per = lines / (size_t)chains;
    for (int c = 0; c < chains; c++) {
        for (size_t k = 0; k < per; k++) {
            char *line = buf + (size_t)perm[k * (size_t)chains + (size_t)c] * LINE;
            char *next = buf + (size_t)perm[((k + 1) % per) * (size_t)chains + (size_t)c] * LINE;
            memcpy(line, &next, sizeof(next));
        }
        p[c] = buf + (size_t)perm[(size_t)c] * LINE;
    }
    free(perm);
    uint64_t rounds = loads / (uint64_t)chains;
    for (uint64_t r = 0; r < rounds / 10; r++) /* warm the TLB and the page tables */
        for (int c = 0; c < chains; c++)
            p[c] = *(char **)p[c];
    uint64_t t0 = now_ns();
    for (uint64_t r = 0; r < rounds; r++)
        for (int c = 0; c < chains; c++)
            p[c] = *(char **)p[c];
    uint64_t t1 = now_ns();
    uintptr_t sink = 0;
    for (int c = 0; c < chains; c++)
        sink ^= (uintptr_t)p[c];
    if (sink == 1) /* never: keeps the loads */
        puts("");
    return (double)(t1 - t0) / (double)(rounds * (uint64_t)chains);
}

int main(int argc, char **argv)
{
    int chains = 1;
    uint64_t loads = 20000000;
    int opt;
    while ((opt = getopt(argc, argv, "c:n:")) != -1) {
        if (opt == 'c')
            chains = atoi(optarg);
        else if (opt == 'n')
            loads = strtoull(optarg, NULL, 10);
        else
            goto usage;
    }
    if (optind >= argc || chains < 1 || chains > MAX_CHAINS || loads < 1000)
        goto usage;
    printf("%10s %7s %12s\n", "MiB", "chains", "ns/load");
    for (int a = optind; a < argc; a++) {
        double mib = atof(argv[a]);
        size_t bytes = (size_t)(mib * 1048576.0) / (2u << 20) * (2u << 20);
        if (bytes < (2u << 20))
            bytes = (size_t)(mib * 1048576.0) / LINE * LINE;
        size_t lines = bytes / LINE;
        if (lines < (size_t)chains * 2) {
            fprintf(stderr, "%s MiB: too small\n", argv[a]);
            return 2;
        }
        char *buf = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        madvise(buf, bytes, MADV_HUGEPAGE);
        printf("%10.1f %7d %12.1f\n", (double)bytes / 1048576.0, chains,
               run(buf, lines, chains, loads));
        munmap(buf, bytes);
    }
    return 0;
usage:
    fprintf(stderr, "usage: memlat [-c CHAINS (1..%d)] [-n LOADS] SIZE_MIB...\n", MAX_CHAINS);
    return 2;
}
