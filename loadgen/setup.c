/*
 * setup.c - what atp-loadgen does around a run: prepare the server (scripts,
 * populate the key space), read the stock before, check after the run that
 * nothing was oversold, and measure CPU time of the client and the server.
 *
 * The oversell check (flash-sale) compares two views per item with the ATP
 * the channel had before the run:
 *   - the client's: units granted by successful RESERVEs minus successful
 *     RELEASEs, as acknowledged to the load generator;
 *   - the server's: (reserved + allocated) after minus before, read back.
 * Either one above the stock before is an oversell. The server's view also
 * catches grants whose acknowledgement was lost; the client's catches a
 * server whose counters lie. TTLs must outlast the run (an expiry returns
 * stock, which would make honest runs look oversold); main warns otherwise.
 */
#include "lg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static int open_conn(struct lg_run *run, int *ret_fd, void **ret_state)
{
    int fd;
    int rc = lg_connect(run->cfg, &fd);
    if (rc) {
        fprintf(stderr, "atp-loadgen: connect %s:%u: %s\n", run->cfg->server, run->cfg->port,
                strerror(-rc));
        return rc;
    }
    void *state = run->drv->state_size ? calloc(1, run->drv->state_size) : NULL;
    if (run->drv->state_size && !state) {
        close(fd);
        return -ENOMEM;
    }
    if (run->drv->conn_init && (rc = run->drv->conn_init(run, state))) {
        free(state);
        close(fd);
        return rc;
    }
    *ret_fd = fd;
    *ret_state = state;
    return 0;
}

static void close_conn(struct lg_run *run, int fd, void *state)
{
    if (state && run->drv->conn_free)
        run->drv->conn_free(state);
    free(state);
    close(fd);
}

static size_t nitems(const struct lg_run *run)
{
    return (size_t)run->wl->recordcount * run->wl->nlocations;
}

/* Item i = key * nlocations + loc, as the engine counts grants. */
static void item_line(const struct lg_run *run, size_t i, struct lg_line *l)
{
    l->key = (uint32_t)(i / run->wl->nlocations);
    l->loc = (uint16_t)(i % run->wl->nlocations);
    l->qty = 0;
}

/* Run `op` over every item in chunks; per-item results go to fn. */
static int for_all_items(struct lg_run *run, int fd, void *state, int op, int64_t value,
                         void (*fn)(struct lg_run *run, size_t item, const struct lg_resp *r,
                                    void *arg),
                         void *arg, uint64_t *ret_failed, const char **ret_first_status)
{
    const size_t chunk = 4096;
    size_t n = nitems(run);
    struct lg_line *lines = calloc(chunk, sizeof(*lines));
    struct lg_req *reqs = calloc(chunk, sizeof(*reqs));
    struct lg_resp *resps = calloc(chunk, sizeof(*resps));
    int rc = lines && reqs && resps ? 0 : -ENOMEM;
    uint64_t failed_total = 0;
    for (size_t off = 0; rc == 0 && off < n; off += chunk) {
        size_t m = n - off < chunk ? n - off : chunk;
        for (size_t i = 0; i < m; i++) {
            item_line(run, off + i, &lines[i]);
            reqs[i] = (struct lg_req){.op = op, .keys = &lines[i], .nkeys = 1, .value = value};
            memset(&resps[i], 0, sizeof(resps[i]));
        }
        uint64_t failed = 0;
        rc = lg_sync_batch(run, fd, state, reqs, m, resps, &failed);
        failed_total += failed;
        for (size_t i = 0; rc == 0 && i < m; i++) {
            if (resps[i].status && ret_first_status && !*ret_first_status)
                *ret_first_status = resps[i].status;
            if (fn)
                fn(run, off + i, &resps[i], arg);
        }
    }
    free(lines);
    free(reqs);
    free(resps);
    *ret_failed = failed_total;
    return rc;
}

static void keep_before(struct lg_run *run, size_t item, const struct lg_resp *r, void *arg)
{
    run->stock_before[item] = r->status ? 0 : r->atp;
    run->held_before[item] = r->status ? 0 : r->reserved + r->allocated;
}

int lg_setup(struct lg_run *run)
{
    const struct lg_workload *wl = run->wl;
    if (run->cfg->protocol == LG_PROTO_KAFKA)
        return 0;
    int fd;
    void *state;
    int rc = open_conn(run, &fd, &state);
    if (rc)
        return rc;
    if (run->drv->prepare && (rc = run->drv->prepare(run, fd))) {
        fprintf(stderr, "atp-loadgen: preparing the server failed: %s\n", strerror(-rc));
        close_conn(run, fd, state);
        return rc;
    }
    if (wl->setup == LG_SETUP_SET || run->cfg->populate) {
        uint64_t t0 = lg_now_ns(), failed = 0;
        const char *first = NULL;
        rc = for_all_items(run, fd, state, LG_XOP_SET, wl->populate_on_hand, NULL, NULL, &failed,
                           &first);
        if (rc == 0 && failed) {
            fprintf(stderr, "atp-loadgen: populate: %" PRIu64 " of %zu items refused (%s)\n",
                    failed, nitems(run), first ? first : "?");
            rc = -EIO;
        }
        if (rc == 0 && !run->cfg->quiet)
            fprintf(stderr, "atp-loadgen: populated %zu items (on_hand=%" PRId64 ") in %.2f s\n",
                    nitems(run), wl->populate_on_hand, (double)(lg_now_ns() - t0) / 1e9);
    }
    if (rc == 0 && wl->verify_oversell) {
        size_t n = nitems(run);
        run->stock_before = calloc(n, sizeof(int64_t));
        run->held_before = calloc(n, sizeof(int64_t));
        uint64_t failed = 0;
        const char *first = NULL;
        rc = run->stock_before && run->held_before ? 0 : -ENOMEM;
        if (rc == 0)
            rc = for_all_items(run, fd, state, LG_XOP_INSPECT, 0, keep_before, NULL, &failed,
                               &first);
        if (rc == 0 && failed) {
            fprintf(stderr, "atp-loadgen: reading stock: %" PRIu64 " items failed (%s)\n", failed,
                    first ? first : "?");
            rc = -EIO;
        }
    }
    if (rc && rc != -EIO)
        fprintf(stderr, "atp-loadgen: setup: %s\n", strerror(-rc));
    close_conn(run, fd, state);
    return rc;
}

struct verify_acc {
    int64_t oversold;
    int64_t granted;
    int64_t server_granted;
    int64_t stock;
    int64_t negative;
};

static void check_item(struct lg_run *run, size_t item, const struct lg_resp *r, void *arg)
{
    struct verify_acc *a = arg;
    if (r->status)
        return;
    int64_t stock = run->stock_before[item];
    int64_t mine = run->stats.granted && item < run->stats.ngranted ? run->stats.granted[item] : 0;
    int64_t server = r->reserved + r->allocated - run->held_before[item];
    int64_t worst = mine > server ? mine : server;
    a->granted += mine;
    a->server_granted += server;
    a->stock += stock;
    if (worst > stock)
        a->oversold += worst - stock;
    int64_t free_now = r->on_hand - r->allocated - r->reserved - r->safety;
    if (free_now < 0 && r->reserved + r->allocated > run->held_before[item])
        a->negative += -free_now;
}

int lg_verify(struct lg_run *run)
{
    if (!run->wl->verify_oversell || !run->stock_before)
        return 0;
    int fd;
    void *state;
    int rc = open_conn(run, &fd, &state);
    if (rc)
        return rc;
    struct verify_acc acc = {0};
    uint64_t failed = 0;
    const char *first = NULL;
    rc = for_all_items(run, fd, state, LG_XOP_INSPECT, 0, check_item, &acc, &failed, &first);
    close_conn(run, fd, state);
    run->verify_ran = true;
    if (rc || failed) {
        snprintf(run->verify_msg, sizeof(run->verify_msg), "could not read the stock back (%s)",
                 rc      ? strerror(-rc)
                 : first ? first
                         : "?");
        run->verify_ok = false;
        return rc ? rc : -EIO;
    }
    run->oversold = acc.oversold + acc.negative;
    run->granted_total = acc.granted;
    run->server_granted_total = acc.server_granted;
    run->verify_ok = run->oversold == 0;
    snprintf(run->verify_msg, sizeof(run->verify_msg),
             "oversold=%" PRId64 " (granted %" PRId64 " acknowledged, %" PRId64
             " held by the server, of %" PRId64 " available before)",
             run->oversold, acc.granted, acc.server_granted, acc.stock);
    return 0;
}

/* --- CPU ------------------------------------------------------------------ */

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* utime + stime of a process from /proc/<pid>/stat, in seconds; < 0 if unknown. */
static double proc_cpu_s(int pid)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* Fields after the command name (which may hold spaces): skip to ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    /* state(3) ... utime is field 14, stime 15: 11 fields after state. */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/*
 * The machine's CPU time so far, all cores (/proc/stat): ret[0] everything,
 * ret[1] idle and iowait, ret[2] steal (time the hypervisor ran something
 * else on a virtual CPU). false when unreadable.
 */
static bool machine_ticks(uint64_t ret[3])
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return false;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 8)
        return false;
    ret[0] = 0;
    for (int i = 0; i < 8; i++)
        ret[0] += v[i];
    ret[1] = v[3] + v[4];
    ret[2] = v[7];
    return true;
}

void lg_cpu_mark(struct lg_run *run, int phase)
{
    uint64_t ticks[3];
    bool have_ticks = machine_ticks(ticks);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double user = tv_s(ru.ru_utime), sys = tv_s(ru.ru_stime);
    double server = proc_cpu_s(run->cfg->server_pid);
    uint64_t now = lg_now_ns();
    if (phase == 0) {
        run->cpu_mark_user = user;
        run->cpu_mark_sys = sys;
        run->cpu_mark_client = user + sys;
        run->cpu_mark_server = server;
        run->cpu_mark_wall = now;
        run->machine_mark_ok = have_ticks;
        if (have_ticks)
            memcpy(run->machine_mark, ticks, sizeof(ticks));
        return;
    }
    run->machine_busy = run->machine_steal = -1;
    if (have_ticks && run->machine_mark_ok && ticks[0] > run->machine_mark[0]) {
        double total = (double)(ticks[0] - run->machine_mark[0]);
        double idle = (double)(ticks[1] - run->machine_mark[1]);
        double steal = (double)(ticks[2] - run->machine_mark[2]);
        run->machine_steal = steal / total;
        run->machine_busy = (total - idle - steal) / total;
    }
    run->client_user_s = user - run->cpu_mark_user;
    run->client_sys_s = sys - run->cpu_mark_sys;
    run->client_cpu_s = user + sys - run->cpu_mark_client;
    run->server_cpu_s =
        server >= 0 && run->cpu_mark_server >= 0 ? server - run->cpu_mark_server : -1;
    run->wall_measured_s = (double)(now - run->cpu_mark_wall) / 1e9;
}
