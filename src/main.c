/*
 * main.c - the atpd executable: wires config, log, store and server.
 *
 * Start-up: defaults < config file (-c) < ATPD_* environment < flags; then the
 * store (and its expirer thread), the optional demo catalogue, the server.
 * Signals are blocked in every thread and read here through a signalfd:
 * the first SIGTERM/SIGINT drains (after drain-delay, during which /readyz
 * answers 503 and everything is served; the drain itself bounded by
 * shutdown-timeout), a second one forces the exit. Nothing else lives here:
 * every piece it wires can be used and tested without it.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#ifdef ATPD_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "atp/durable.h"
#include "atp/error.h"
#include "atp/ingest.h"
#include "atp/store.h"
#include "cmd.h"
#include "config.h"
#include "log.h"
#include "server.h"

#ifndef ATPD_VERSION
#define ATPD_VERSION "0.0.0"
#endif

#define DEMO_SKUS      ATP_CONFIG_DEMO_SKUS
#define DEMO_LOCATIONS ATP_CONFIG_DEMO_LOCATIONS
#define FORCE_EXIT     2    /* exit status when a second signal cuts the drain short */
#define DRAIN_SLACK_MS 3000 /* beyond shutdown-timeout before main gives up on workers */

enum {
    OPT_HELP = 'h',
    OPT_VERSION = 'v',
    OPT_CONFIG = 'c',
    OPT_PORT = 'p',
    OPT_BIND = 'b',
    OPT_WORKERS = 'w',
    OPT_OPTION = 'o',
    OPT_CHECK = 1000,
    OPT_DIRECTIVE = 2000, /* + index in the directive table */
};

struct pending_flag {
    const char *name;
    const char *value;
    char *owned; /* for -o "name value" */
};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: atpd [OPTIONS]\n"
            "\n"
            "The atpd available-to-promise server. With no options it listens on\n"
            "127.0.0.1:%d with the channels web, app and marketplace.\n"
            "\n"
            "  -c, --config FILE       read directives from FILE (see atpd.conf)\n"
            "      --check-config      parse and validate the configuration, print it, exit\n"
            "  -p, --port N            same as --port N below\n"
            "  -b, --bind ADDR         same as --bind ADDR below\n"
            "  -w, --workers N         same as --workers N below\n"
            "  -o, --option 'NAME VALUE'  any directive, including kafka.<property>\n"
            "  -h, --help              this help\n"
            "  -v, --version           print the version\n"
            "\n"
            "Directives (config file lines 'NAME VALUE', flags --NAME VALUE, environment\n"
            "ATPD_NAME in upper case with '-' as '_'; flags > environment > file > defaults):\n",
            ATP_CONFIG_DEFAULT_PORT);
    for (size_t i = 0; atp_config_directive(i); i++) {
        const struct atp_config_directive_info *d = atp_config_directive(i);
        if (d->is_bool)
            fprintf(out, "  --%s[=%s]\n      %s\n", d->name, d->arg, d->help);
        else
            fprintf(out, "  --%s %s\n      %s\n", d->name, d->arg, d->help);
    }
    fprintf(out, "  kafka.<property> VALUE\n      passed to the Kafka client as is\n");
}

/* Deterministic demo quantities: splitmix64 of the item index. */
static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int load_demo(struct atp_store *store)
{
    static const char *const locs[DEMO_LOCATIONS] = {"DC1", "DC2", "DC3"};
    uint64_t t0 = atp_now_us();
    uint64_t units = 0, items = 0;
    for (uint32_t s = 1; s <= DEMO_SKUS; s++) {
        char sku[16];
        int n = snprintf(sku, sizeof(sku), "SKU-%06u", s);
        for (uint32_t l = 0; l < DEMO_LOCATIONS; l++) {
            uint64_t h = mix((uint64_t)s * DEMO_LOCATIONS + l);
            /* One item in ten is out of stock; the rest hold 1..500. */
            int64_t qty = h % 10 == 0 ? 0 : (int64_t)((h >> 8) % 500) + 1;
            struct atp_slice ks = {sku, (uint32_t)n};
            int rc = qty > 0 ? atp_store_adjust(store, ks, atp_slice_cstr(locs[l]), qty, NULL)
                             : atp_store_set(store, ks, atp_slice_cstr(locs[l]), 0, 0);
            if (rc != 0) {
                atp_log(ATP_LOG_ERROR, "demo catalogue load failed", LOG_STR("sku", sku),
                        LOG_STR("location", locs[l]), LOG_ERR(rc));
                return rc;
            }
            units += (uint64_t)qty;
            items++;
        }
    }
    atp_log(ATP_LOG_INFO, "demo catalogue loaded", LOG_UINT("skus", DEMO_SKUS),
            LOG_UINT("items", items), LOG_UINT("units", units), LOG_STR("locations", "DC1,DC2,DC3"),
            LOG_DBL("ms", (double)(atp_now_us() - t0) / 1000.0));
    return 0;
}

static int write_port_file(const char *path, uint16_t port)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp))
        return -ENAMETOOLONG;
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -errno;
    fprintf(f, "%u\n", port);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        int e = -errno;
        unlink(tmp);
        return e;
    }
    return 0;
}

/*
 * Each connection is a file descriptor: raise the soft RLIMIT_NOFILE to what
 * max-connections needs (up to the hard limit), as redis does, and say so
 * when even the hard limit is too low.
 */
static void raise_fd_limit(uint32_t max_connections, uint32_t workers)
{
    struct rlimit rl;
    rlim_t need = (rlim_t)max_connections + 32 + 4 * (rlim_t)workers; /* listeners, rings, logs */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
        return;
    rlim_t old = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= need) {
        atp_log(ATP_LOG_INFO, "raised the open file limit", LOG_UINT("from", old),
                LOG_UINT("to", rl.rlim_cur));
        return;
    }
    atp_log(ATP_LOG_WARN, "open file limit below max-connections; accepts will fail beyond it",
            LOG_UINT("limit", rl.rlim_cur), LOG_UINT("max_connections", max_connections));
}

static void notify(const char *state)
{
#ifdef ATPD_HAVE_SYSTEMD
    sd_notify(0, state);
#else
    (void)state;
#endif
}

/* --- command line ------------------------------------------------------------ */

struct cli {
    const char *config_file;
    bool check;
    struct pending_flag *flags;
    size_t nflags;
};

/* 0: go on; 1: exit 0 (help/version); -1: usage error. */
static int parse_cli(int argc, char **argv, struct cli *cli)
{
    size_t ndir = 0;
    while (atp_config_directive(ndir))
        ndir++;
    struct option *opts = calloc(ndir + 16, sizeof(*opts));
    cli->flags = calloc((size_t)argc + 1, sizeof(*cli->flags));
    if (opts == NULL || cli->flags == NULL) {
        free(opts);
        return -1;
    }
    size_t k = 0;
    opts[k++] = (struct option){"help", no_argument, NULL, OPT_HELP};
    opts[k++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    opts[k++] = (struct option){"config", required_argument, NULL, OPT_CONFIG};
    opts[k++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK};
    opts[k++] = (struct option){"option", required_argument, NULL, OPT_OPTION};
    for (size_t i = 0; i < ndir; i++) {
        const struct atp_config_directive_info *d = atp_config_directive(i);
        opts[k++] = (struct option){d->name, d->is_bool ? optional_argument : required_argument,
                                    NULL, OPT_DIRECTIVE + (int)i};
    }
    opts[k] = (struct option){NULL, 0, NULL, 0};

    int rc = 0, c;
    opterr = 1;
    while (rc == 0 && (c = getopt_long(argc, argv, "hvc:p:b:w:o:", opts, NULL)) != -1) {
        struct pending_flag *f = &cli->flags[cli->nflags];
        switch (c) {
        case OPT_HELP:
            usage(stdout);
            rc = 1;
            break;
        case OPT_VERSION:
            printf("atpd %s\n", ATPD_VERSION);
            rc = 1;
            break;
        case OPT_CONFIG:
            cli->config_file = optarg;
            break;
        case OPT_CHECK:
            cli->check = true;
            break;
        case OPT_PORT:
        case OPT_BIND:
        case OPT_WORKERS:
            f->name = c == OPT_PORT ? "port" : c == OPT_BIND ? "bind" : "workers";
            f->value = optarg;
            cli->nflags++;
            break;
        case OPT_OPTION: {
            /* "name value" or "name=value" */
            f->owned = strdup(optarg);
            if (f->owned == NULL) {
                rc = -1;
                break;
            }
            char *sep = f->owned + strcspn(f->owned, " \t=");
            if (*sep == '\0') {
                fprintf(stderr, "atpd: --option expects 'NAME VALUE', got '%s'\n", optarg);
                free(f->owned);
                f->owned = NULL;
                rc = -1;
                break;
            }
            *sep++ = '\0';
            while (*sep == ' ' || *sep == '\t')
                sep++;
            f->name = f->owned;
            f->value = sep;
            cli->nflags++;
            break;
        }
        default:
            if (c >= OPT_DIRECTIVE && c < OPT_DIRECTIVE + (int)ndir) {
                const struct atp_config_directive_info *d =
                    atp_config_directive((size_t)(c - OPT_DIRECTIVE));
                f->name = d->name;
                f->value = optarg ? optarg : "yes";
                cli->nflags++;
            } else {
                rc = -1; /* getopt printed the problem */
            }
        }
    }
    if (rc == 0 && optind < argc) {
        fprintf(stderr, "atpd: unexpected argument '%s' (try --help)\n", argv[optind]);
        rc = -1;
    }
    free(opts);
    return rc;
}

static void cli_free(struct cli *cli)
{
    for (size_t i = 0; i < cli->nflags; i++)
        free(cli->flags[i].owned);
    free(cli->flags);
}

static int load_config(struct atp_config *cfg, const struct cli *cli, char *err, size_t errlen)
{
    int rc;
    atp_config_init(cfg);
    if (cli->config_file && (rc = atp_config_load_file(cfg, cli->config_file, err, errlen)) != 0)
        return rc;
    if ((rc = atp_config_load_env(cfg, NULL, err, errlen)) != 0)
        return rc;
    for (size_t i = 0; i < cli->nflags; i++) {
        char msg[512];
        rc = atp_config_set(cfg, ATP_CONF_FLAG, cli->flags[i].name, cli->flags[i].value, msg,
                            sizeof(msg));
        if (rc != 0) {
            snprintf(err, errlen, "flag --%s: %s", cli->flags[i].name, msg);
            return rc;
        }
    }
    return atp_config_validate(cfg, err, errlen);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* --- running ------------------------------------------------------------------ */

struct waiter {
    struct atp_server *srv;
    int donefd;
    int rc;
};

static void *wait_workers(void *arg)
{
    struct waiter *wt = arg;
    wt->rc = atp_server_wait(wt->srv);
    uint64_t one = 1;
    (void)!write(wt->donefd, &one, sizeof(one));
    return NULL;
}

/* Read signals until the workers are done; returns the exit status. */
static int run_until_stopped(struct atp_server *srv, int sfd, uint64_t shutdown_ms,
                             uint64_t delay_ms)
{
    struct waiter wt = {.srv = srv, .donefd = eventfd(0, EFD_CLOEXEC), .rc = 0};
    pthread_t th;
    if (wt.donefd < 0 || pthread_create(&th, NULL, wait_workers, &wt) != 0) {
        atp_log(ATP_LOG_ERROR, "cannot start the waiter thread", LOG_ERR(-errno));
        return 1;
    }
    bool draining = false, drain_pending = false;
    uint64_t deadline = 0, drain_at = 0;
    for (;;) {
        struct pollfd pfd[2] = {{sfd, POLLIN, 0}, {wt.donefd, POLLIN, 0}};
        int timeout = -1;
        if (draining) {
            uint64_t now = mono_ms(), until = drain_pending ? drain_at : deadline;
            timeout = now >= until ? 0 : (int)(until - now);
        }
        int n = poll(pfd, 2, timeout);
        if (n < 0 && errno == EINTR)
            continue;
        if (pfd[1].revents & POLLIN)
            break; /* the workers stopped (after a drain, or on an error) */
        if (n == 0 && drain_pending) {
            /* drain-delay is over: load balancers have seen /readyz 503 */
            drain_pending = false;
            deadline = mono_ms() + shutdown_ms + DRAIN_SLACK_MS;
            atp_log(ATP_LOG_INFO, "drain delay over, draining",
                    LOG_UINT("drain_delay_ms", delay_ms));
            atp_server_drain(srv);
            continue;
        }
        if (n == 0 && draining) {
            atp_log(ATP_LOG_ERROR, "drain did not finish in time, exiting",
                    LOG_UINT("shutdown_timeout_ms", shutdown_ms));
            return FORCE_EXIT;
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
                continue;
            const char *name = si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM";
            if (draining) {
                atp_log(ATP_LOG_WARN, "second signal, exiting now", LOG_STR("signal", name));
                return FORCE_EXIT;
            }
            draining = true;
            atp_log(ATP_LOG_INFO, "draining", LOG_STR("signal", name),
                    LOG_UINT("shutdown_timeout_ms", shutdown_ms),
                    LOG_UINT("drain_delay_ms", delay_ms));
            notify("STOPPING=1");
            if (delay_ms > 0) {
                drain_pending = true;
                drain_at = mono_ms() + delay_ms;
                atp_server_unready(srv); /* still serving; /readyz 503 */
            } else {
                deadline = mono_ms() + shutdown_ms + DRAIN_SLACK_MS;
                atp_server_drain(srv);
            }
        }
    }
    pthread_join(th, NULL);
    close(wt.donefd);
    if (wt.rc != 0) {
        atp_log(ATP_LOG_ERROR, "worker failed", LOG_ERR(wt.rc));
        return 1;
    }
    return 0;
}

/* --- durability (docs/DURABILITY.md) --------------------------------------------- */

static struct atp_durable *durable_open(const struct atp_config *cfg)
{
    struct atp_durable_config dc;
    atp_durable_config_defaults(&dc);
    dc.dir = cfg->dir;
    dc.fsync = cfg->appendfsync;
    dc.snapshot_interval_ms = cfg->snapshot_interval_ms;
    dc.snapshot_log_bytes = cfg->snapshot_log_size;
    dc.repair = cfg->durability_repair;
    struct atp_durable *d;
    char msg[256];
    int rc = atp_durable_open(&dc, &d, msg);
    if (rc != 0) {
        atp_log(ATP_LOG_ERROR, "cannot open the data folder", LOG_STR("dir", cfg->dir),
                LOG_STR("detail", msg), LOG_ERR(rc));
        return NULL;
    }
    return d;
}

static int durable_recover(struct atp_durable *d, struct atp_store *store,
                           const struct atp_store_config *scfg, const struct atp_config *cfg,
                           struct atp_recovery_report *rep)
{
    uint64_t t0 = mono_ms();
    int rc = atp_durable_recover(d, store, scfg, rep);
    if (rc != 0) {
        atp_log(ATP_LOG_ERROR, "recovery failed", LOG_STR("dir", cfg->dir),
                LOG_STR("detail", atp_durable_errmsg(d)), LOG_ERR(rc));
        return rc;
    }
    atp_log(ATP_LOG_INFO, "recovered", LOG_STR("dir", cfg->dir),
            LOG_UINT("snapshot_pos", rep->snapshot_pos), LOG_UINT("items", rep->items),
            LOG_UINT("reservations", rep->reservations), LOG_UINT("log_records", rep->records),
            LOG_UINT("segments", rep->segments), LOG_UINT("kafka_offsets", rep->offsets),
            LOG_UINT("ms", mono_ms() - t0),
            LOG_STR("appendfsync", atp_fsync_policy_name(cfg->appendfsync)));
    if (rep->torn_bytes)
        atp_log(ATP_LOG_WARN, "dropped a torn write at the end of the log (never acknowledged)",
                LOG_UINT("bytes", rep->torn_bytes));
    if (rep->repaired_bytes)
        atp_log(ATP_LOG_WARN, "durability-repair cut the damaged log and lost what followed",
                LOG_UINT("bytes", rep->repaired_bytes));
    return 0;
}

/* --- Kafka ingestion ------------------------------------------------------------- */

struct ingest_glue {
    struct atp_ingest *ing;
    struct atp_durable *dur; /* NULL: offsets are not kept across restarts */
};

static void ingest_log(void *arg, int level, const char *msg)
{
    (void)arg;
    atp_log_msg((enum atp_log_level)level, msg);
}

/*
 * An event's fate is settled: its next offset goes into the log together with
 * the store record the event made (armed by ingest_apply just before the
 * event was applied), so after a crash both or neither come back.
 */
static void ingest_applied(void *arg, const struct atp_ingest_applied *a)
{
    struct ingest_glue *g = arg;
    bool stale = false;
    struct atp_ingest_status st;
    atp_ingest_status(g->ing, &st);
    if (st.stale) {
        struct atp_ingest_offset offs[64];
        size_t n = atp_ingest_offsets(g->ing, offs, 64);
        for (size_t i = 0; i < n && i < 64; i++)
            if (offs[i].partition == a->partition && strcmp(offs[i].topic, a->topic) == 0)
                stale = offs[i].stale;
    }
    atp_durable_note_offset(g->dur, a->topic, a->partition, a->offset + 1, stale);
}

static void ingest_apply(void *arg)
{
    struct ingest_glue *g = arg;
    atp_durable_event_start(g->dur);
}

/*
 * Reservations on items whose Kafka partition fell into a gap are refused
 * until a resync (protocol/EVENTS.md): lock-free while nothing is stale.
 */
static int ingest_admit(void *arg, struct atp_slice sku, struct atp_slice loc)
{
    return atp_ingest_check_item(arg, sku, loc);
}

/* Start consuming (kafka-brokers set, or the embedded broker); the durable's
 * offsets first. */
static int ingest_open(const struct atp_config *cfg, struct atp_store *store, struct ingest_glue *g)
{
    const char *topics[2] = {cfg->kafka_topic ? cfg->kafka_topic : ATP_INGEST_DEFAULT_TOPIC, NULL};
    struct atp_ingest_kv *kv = calloc(cfg->nkafka_props + 1, sizeof(*kv));
    if (!kv)
        return -ENOMEM;
    for (uint32_t i = 0; i < cfg->nkafka_props; i++)
        kv[i] = (struct atp_ingest_kv){cfg->kafka_props[i].key, cfg->kafka_props[i].value};
    struct atp_ingest_config ic;
    atp_ingest_config_defaults(&ic);
    ic.brokers = cfg->kafka_brokers;
    ic.topics = topics;
    ic.group_id = cfg->kafka_group;
    ic.kafka = kv;
    ic.log = ingest_log;
    if (g->dur) {
        ic.on_applied = ingest_applied;
        ic.on_apply = ingest_apply;
        ic.on_applied_arg = g;
    }
    int rc = atp_ingest_new(&ic, store, &g->ing);
    free(kv);
    if (rc != 0) {
        atp_log(ATP_LOG_ERROR, "cannot create the Kafka consumer", LOG_ERR(rc));
        return rc;
    }
    /* The embedded broker starts empty at every start: offsets recovered from
     * an earlier run would point into a log that no longer exists. */
    if (g->dur && cfg->kafka_brokers) {
        struct atp_durable_offset offs[256];
        size_t n = atp_durable_offsets(g->dur, offs, 256);
        for (size_t i = 0; i < n && i < 256; i++)
            if ((rc = atp_ingest_set_offset(g->ing, offs[i].topic, offs[i].partition,
                                            offs[i].next_offset, offs[i].stale)) != 0)
                atp_log(ATP_LOG_WARN, "cannot restore a Kafka offset",
                        LOG_STR("topic", offs[i].topic), LOG_INT("partition", offs[i].partition),
                        LOG_ERR(rc));
    }
    if ((rc = atp_ingest_start(g->ing)) != 0) {
        atp_log(ATP_LOG_ERROR, "cannot start the Kafka consumer", LOG_ERR(rc));
        return rc;
    }
    atp_log(ATP_LOG_INFO, "consuming", LOG_STR("brokers", atp_ingest_bootstrap(g->ing)),
            LOG_STR("topic", topics[0]));
    return 0;
}

/* /readyz: the log has not failed and the consumer caught up. */
static bool ready_all(void *arg, char *reason, size_t len)
{
    struct ingest_glue *g = arg;
    if (g->dur && !atp_durable_ready(g->dur)) {
        snprintf(reason, len, "durable storage failed: %s", atp_durable_errmsg(g->dur));
        return false;
    }
    return g->ing ? atp_http_ready_ingest(g->ing, reason, len) : true;
}

static int serve(const struct atp_config *cfg)
{
    static const volatile int refuse_writes = 0;
    struct atp_config_store scfg;
    struct atp_store *store = NULL;
    struct atp_server *srv = NULL;
    int status = 1, rc;
    struct atp_durable *dur = NULL;
    struct atp_recovery_report rep = {0};
    struct ingest_glue glue = {0};

    atp_config_to_store(cfg, &scfg);
    if (cfg->dir) {
        if ((dur = durable_open(cfg)) == NULL)
            return 1;
        scfg.store.journal = atp_durable_journal(dur);
    }
    if ((rc = atp_store_new(&scfg.store, &store)) != 0) {
        atp_log(ATP_LOG_ERROR, "cannot create the store", LOG_ERR(rc));
        atp_durable_free(dur);
        return 1;
    }
    /* Recovery first: nothing may change the store before it is rebuilt. */
    if (dur && durable_recover(dur, store, &scfg.store, cfg, &rep) != 0)
        goto out;
    if ((rc = atp_store_start_expirer(store, 1000)) != 0) {
        atp_log(ATP_LOG_ERROR, "cannot start the expirer", LOG_ERR(rc));
        goto out;
    }
    /* The demo catalogue once: a recovered store already has it. */
    if (cfg->demo && rep.items == 0 && rep.records == 0 && load_demo(store) != 0)
        goto out;
    glue.dur = dur;
    if ((cfg->kafka_brokers || cfg->kafka_embedded) && ingest_open(cfg, store, &glue) != 0)
        goto out;
    if (glue.ing)
        atp_store_set_admit(store, ingest_admit, glue.ing);

    struct atp_cmd_ctx ctx;
    memset(&ctx, 0, sizeof(ctx));
    ctx.store = store;
    ctx.build = "atpd " ATPD_VERSION;
    ctx.max_frame = cfg->max_frame;
    ctx.max_keys = cfg->max_keys;
    ctx.max_lines = cfg->max_lines;
    ctx.refuse_writes = dur ? atp_durable_refuse_flag(dur) : &refuse_writes;
    if (dur && ctx.nsources < ATP_CMD_MAX_SOURCES) {
        ctx.sources[ctx.nsources].collect = atp_durable_collect;
        ctx.sources[ctx.nsources].arg = dur;
        ctx.nsources++;
    }
    if (glue.ing && ctx.nsources < ATP_CMD_MAX_SOURCES) {
        ctx.sources[ctx.nsources].collect = atp_ingest_collect;
        ctx.sources[ctx.nsources].arg = glue.ing;
        ctx.nsources++;
    }

    struct atp_server_config sc = {
        .bind = cfg->bind,
        .port = (uint16_t)cfg->port,
        .workers = cfg->workers,
        .recv_mode = cfg->recv_mode,
        .max_connections = cfg->max_connections,
        .idle_timeout_ms = cfg->idle_timeout_ms,
        .busy_poll_us = cfg->busy_poll_us,
        .output_buffer_limit = cfg->output_buffer_limit,
        .shutdown_timeout_ms = cfg->shutdown_timeout_ms,
        .feed_wait_max_ms = cfg->feed_wait_max_ms,
    };
    /* HTTP/JSON facade on the same workers; /readyz is 503 while draining
     * (the server adds that) and ready otherwise once we get here: the store
     * is loaded before the listeners open. */
    struct atp_http_ctx http = {
        .max_header = cfg->http_max_header,
        .max_body = cfg->http_max_body,
        .max_batch = cfg->max_keys,
        .version = ATPD_VERSION,
    };
    sc.http = cfg->http;
    sc.http_bind = cfg->http_bind;
    sc.http_port = (uint16_t)cfg->http_port;
    sc.http_request_timeout_ms = cfg->http_request_timeout_ms;
    sc.http_ctx = &http;
    sc.durable = dur;
    if ((dur || glue.ing) && !http.ready) {
        http.ready = ready_all;
        http.ready_arg = &glue;
    }
    raise_fd_limit(cfg->max_connections, cfg->workers);
    if ((rc = atp_server_new(&sc, &ctx, &srv)) != 0) {
        char addr[96];
        snprintf(addr, sizeof(addr), "%s:%u", cfg->bind, cfg->port);
        if (rc == -EOPNOTSUPP)
            atp_log_msg(ATP_LOG_ERROR, "recv-mode multishot: this kernel has no multishot recv "
                                       "with provided buffer rings (use auto or plain)");
        else
            atp_log(ATP_LOG_ERROR, "cannot listen", LOG_STR("addr", addr),
                    LOG_UINT("http_port", cfg->http ? cfg->http_port : 0), LOG_ERR(rc));
        goto out;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
        atp_log(ATP_LOG_ERROR, "signalfd failed", LOG_ERR(-errno));
        goto out;
    }
    if ((rc = atp_server_start(srv)) != 0) {
        atp_log(ATP_LOG_ERROR, "cannot start the workers", LOG_ERR(rc));
        close(sfd);
        goto out;
    }
    if (cfg->port_file && (rc = write_port_file(cfg->port_file, atp_server_port(srv))) != 0)
        atp_log(ATP_LOG_WARN, "cannot write the port file", LOG_STR("path", cfg->port_file),
                LOG_ERR(rc));
    atp_log(ATP_LOG_INFO, "listening", LOG_STR("addr", atp_server_addr(srv)),
            LOG_UINT("port", atp_server_port(srv)), LOG_UINT("workers", atp_server_workers(srv)),
            LOG_STR("recv", atp_server_recv_mode(srv)),
            LOG_UINT("max_connections", cfg->max_connections));
    if (atp_server_http_port(srv)) {
        if (cfg->http_port_file &&
            (rc = write_port_file(cfg->http_port_file, atp_server_http_port(srv))) != 0)
            atp_log(ATP_LOG_WARN, "cannot write the HTTP port file",
                    LOG_STR("path", cfg->http_port_file), LOG_ERR(rc));
        atp_log(ATP_LOG_INFO, "listening http", LOG_STR("addr", atp_server_http_addr(srv)),
                LOG_UINT("port", atp_server_http_port(srv)));
    }
    notify("READY=1");

    status = run_until_stopped(srv, sfd, cfg->shutdown_timeout_ms, cfg->drain_delay_ms);
    close(sfd);
    if (status == FORCE_EXIT) {
        /* Workers may still run: leave without touching what they use. */
        _exit(FORCE_EXIT);
    }
    struct atp_server_stats st;
    atp_server_stats(srv, &st);
    atp_log(ATP_LOG_INFO, "stopped", LOG_UINT("requests", st.requests),
            LOG_UINT("connections", st.connections_accepted));
out:
    atp_server_free(srv);
    atp_ingest_free(glue.ing); /* stops applying before the final snapshot */
    atp_store_stop_expirer(store);
    if (dur) {
        /* Quiescent now: the final snapshot, then the log before it goes. */
        rc = atp_durable_close(dur, store);
        if (rc != 0 && rc != ATP_ESTATE)
            atp_log(ATP_LOG_ERROR, "final snapshot failed (the log is kept)",
                    LOG_STR("detail", atp_durable_errmsg(dur)), LOG_ERR(rc));
        else if (rc == 0)
            atp_log(ATP_LOG_INFO, "snapshot written", LOG_STR("dir", cfg->dir));
        atp_durable_free(dur);
    }
    atp_store_free(store);
    return status;
}

int main(int argc, char **argv)
{
    struct cli cli = {0};
    int rc = parse_cli(argc, argv, &cli);
    if (rc != 0) {
        cli_free(&cli);
        if (rc < 0)
            fprintf(stderr, "Try 'atpd --help'.\n");
        return rc > 0 ? 0 : 1;
    }

    struct atp_config cfg;
    char err[1024] = "";
    rc = load_config(&cfg, &cli, err, sizeof(err));
    if (cli.check) {
        if (rc != 0) {
            fprintf(stderr, "atpd: configuration invalid: %s\n", err);
        } else {
            printf("# atpd %s: configuration OK (%s)\n", ATPD_VERSION,
                   cli.config_file ? cli.config_file : "no config file");
            printf("# effective values after defaults, file, environment and flags:\n");
            atp_config_dump(&cfg, stdout);
        }
        atp_config_free(&cfg);
        cli_free(&cli);
        return rc == 0 ? 0 : 1;
    }
    atp_log_setup(rc == 0 ? (enum atp_log_level)cfg.log_level : ATP_LOG_INFO,
                  rc == 0 ? (enum atp_log_format)cfg.log_format : ATP_LOG_LOGFMT);
    if (rc != 0) {
        atp_log(ATP_LOG_ERROR, "invalid configuration", LOG_STR("err", err));
        atp_config_free(&cfg);
        cli_free(&cli);
        return 1;
    }

    /* Every thread inherits this mask; signals are read from the signalfd. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    atp_log(ATP_LOG_INFO, "starting", LOG_STR("version", ATPD_VERSION), LOG_INT("pid", getpid()),
            LOG_STR("config", cli.config_file ? cli.config_file : ""),
            LOG_UINT("channels", cfg.nchannels), LOG_BOOL("demo", cfg.demo));
    int status = serve(&cfg);
    atp_config_free(&cfg);
    cli_free(&cli);
    return status;
}
