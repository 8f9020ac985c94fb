/*
 * main.c - atp-loadgen: flags, the run (or a sweep of runs), the reports.
 *
 * Flags follow memtier_benchmark and redis-benchmark where they overlap
 * (-s, -p, -t, -c, --pipeline, --test-time, -n, --json-out-file,
 * --hdr-file-prefix). `--help` lists them all; loadgen/README.md explains
 * the workload keys and the JSON schema.
 *
 * Exit status: 0 done; 1 the oversell check failed; 2 usage or setup error
 * (bad flag, bad workload line, server unreachable); 3 the run itself failed.
 */
#include "lg.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef LG_WORKLOAD_DIR
#define LG_WORKLOAD_DIR "loadgen/workloads"
#endif
#ifndef LG_REDIS_DIR
#define LG_REDIS_DIR "bench/redis"
#endif

enum {
    OPT_PIPELINE = 256,
    OPT_TEST_TIME,
    OPT_WARMUP,
    OPT_SEED,
    OPT_CLOSED,
    OPT_WORKLOAD,
    OPT_JSON,
    OPT_HDR,
    OPT_SWEEP,
    OPT_SWEEP_PREFIX,
    OPT_POPULATE,
    OPT_SERVER_PID,
    OPT_REDIS_SCRIPTS,
    OPT_KAFKA_BROKERS,
    OPT_KAFKA_TOPIC,
    OPT_DRAIN,
    OPT_LABEL,
    OPT_SPIN,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    {"server", required_argument, NULL, 's'},
    {"port", required_argument, NULL, 'p'},
    {"protocol", required_argument, NULL, 'P'},
    {"threads", required_argument, NULL, 't'},
    {"clients", required_argument, NULL, 'c'},
    {"pipeline", required_argument, NULL, OPT_PIPELINE},
    {"test-time", required_argument, NULL, OPT_TEST_TIME},
    {"requests", required_argument, NULL, 'n'},
    {"warmup-time", required_argument, NULL, OPT_WARMUP},
    {"seed", required_argument, NULL, OPT_SEED},
    {"rate", required_argument, NULL, 'R'},
    {"closed-loop", no_argument, NULL, OPT_CLOSED},
    {"workload", required_argument, NULL, OPT_WORKLOAD},
    {"set", required_argument, NULL, 'W'},
    {"json-out-file", required_argument, NULL, OPT_JSON},
    {"hdr-file-prefix", required_argument, NULL, OPT_HDR},
    {"sweep", required_argument, NULL, OPT_SWEEP},
    {"sweep-prefix", required_argument, NULL, OPT_SWEEP_PREFIX},
    {"populate", no_argument, NULL, OPT_POPULATE},
    {"server-pid", required_argument, NULL, OPT_SERVER_PID},
    {"redis-scripts", required_argument, NULL, OPT_REDIS_SCRIPTS},
    {"kafka-brokers", required_argument, NULL, OPT_KAFKA_BROKERS},
    {"kafka-topic", required_argument, NULL, OPT_KAFKA_TOPIC},
    {"drain-time", required_argument, NULL, OPT_DRAIN},
    {"label", required_argument, NULL, OPT_LABEL},
    {"spin-us", required_argument, NULL, OPT_SPIN},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: atp-loadgen [OPTIONS]\n"
            "\n"
            "Load generator for atpd (and, for comparison, Redis, HTTP servers and Kafka).\n"
            "Open loop by default: a fixed offered rate, latency measured from each\n"
            "request's intended send time (coordinated omission corrected).\n"
            "\n"
            "Connection:\n"
            "  -s, --server HOST         server address (default 127.0.0.1)\n"
            "  -p, --port PORT           port (default: bin 7400, http 7480, resp 6379;\n"
            "                            kafka: atpd's binary port for the freshness probe)\n"
            "  -P, --protocol NAME       bin | http | resp | kafka (default bin)\n"
            "Load:\n"
            "  -t, --threads N           threads, each with its own io_uring (default 1)\n"
            "  -c, --clients N           connections per thread (default 50)\n"
            "      --pipeline N          requests in flight per connection (default 1)\n"
            "  -R, --rate N              open loop: total requests per second (default 10000)\n"
            "      --closed-loop         maximum throughput instead (labelled in the output)\n"
            "      --test-time SECS      measured time (default 5)\n"
            "  -n, --requests N          requests per connection instead of a time\n"
            "      --warmup-time SECS    run this long before measuring (default 0)\n"
            "      --seed N              random seed (default 1)\n"
            "      --drain-time SECS     wait for outstanding responses at the end (default 2)\n"
            "      --spin-us N           open loop: stop sleeping N us before each send and\n"
            "                            poll instead (precise send times, more client CPU)\n"
            "Workload:\n"
            "      --workload FILE       key=value file, or a name in %s\n"
            "                            (checkout, orchestrator, marketplace-poll,\n"
            "                            flash-sale, ingest; default checkout)\n"
            "  -W, --set KEY=VALUE       override a workload key (repeatable)\n"
            "      --populate            set every item of the key space first (setup=set)\n"
            "Output:\n"
            "      --json-out-file FILE  results as JSON (schema atp-loadgen/1)\n"
            "      --hdr-file-prefix P   write P_<op>.hgrm percentile distributions\n"
            "      --sweep A:B:STEP      open-loop runs at rates A, A+STEP, ... B; writes\n"
            "                            PREFIX.csv and PREFIX.gp (gnuplot -> PREFIX.png)\n"
            "      --sweep-prefix P      (default atp-loadgen-sweep)\n"
            "      --server-pid PID      also measure the server's CPU per request\n"
            "      --label TEXT          carried into the output\n"
            "  -q, --quiet               only the results\n"
            "Drivers:\n"
            "      --redis-scripts DIR   the Lua scripts (default %s)\n"
            "      --kafka-brokers LIST  bootstrap servers for --protocol=kafka\n"
            "      --kafka-topic NAME    topic (default: the workload's kafka_topic)\n"
            "  -h, --help, --version\n"
            "\n"
            "Exit status: 0 done, 1 oversell check failed, 2 usage or setup error, 3 run failed.\n",
            LG_WORKLOAD_DIR, LG_REDIS_DIR);
}

static int parse_u64_arg(const char *s, uint64_t lo, uint64_t hi, uint64_t *ret)
{
    char *end;
    errno = 0;
    if (*s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *ret = v;
    return 0;
}

static int parse_double_arg(const char *s, double lo, double hi, double *ret)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *ret = v;
    return 0;
}

static int bad(const char *flag, const char *val)
{
    fprintf(stderr, "atp-loadgen: invalid value for %s: '%s' (see --help)\n", flag, val);
    return 2;
}

/* Resolve --workload: a path, or a name in the workloads folder. */
static void resolve_workload(const char *arg, char *out, size_t len)
{
    struct stat st;
    if (strchr(arg, '/') || stat(arg, &st) == 0) {
        snprintf(out, len, "%s", arg);
        return;
    }
    snprintf(out, len, "%s/%s", LG_WORKLOAD_DIR, arg);
}

#define MAX_OVERRIDES 64

static int parse_args(int argc, char **argv, struct lg_config *cfg, bool *rate_given)
{
    const char *overrides[MAX_OVERRIDES];
    int noverrides = 0;
    const char *workload = "checkout";
    uint64_t u;
    int c;
    while ((c = getopt_long(argc, argv, "s:p:P:t:c:n:R:W:qh", long_opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (strlen(optarg) >= sizeof(cfg->server))
                return bad("-s", optarg);
            snprintf(cfg->server, sizeof(cfg->server), "%s", optarg);
            break;
        case 'p':
            if (parse_u64_arg(optarg, 1, 65535, &u))
                return bad("-p", optarg);
            cfg->port = (uint16_t)u;
            break;
        case 'P':
            if (!strcmp(optarg, "bin"))
                cfg->protocol = LG_PROTO_BIN;
            else if (!strcmp(optarg, "http"))
                cfg->protocol = LG_PROTO_HTTP;
            else if (!strcmp(optarg, "resp"))
                cfg->protocol = LG_PROTO_RESP;
            else if (!strcmp(optarg, "kafka"))
                cfg->protocol = LG_PROTO_KAFKA;
            else
                return bad("--protocol", optarg);
            break;
        case 't':
            if (parse_u64_arg(optarg, 1, 256, &u))
                return bad("-t", optarg);
            cfg->threads = (uint32_t)u;
            break;
        case 'c':
            if (parse_u64_arg(optarg, 1, 10000, &u))
                return bad("-c", optarg);
            cfg->conns = (uint32_t)u;
            break;
        case OPT_PIPELINE:
            if (parse_u64_arg(optarg, 1, 4096, &u))
                return bad("--pipeline", optarg);
            cfg->pipeline = (uint32_t)u;
            break;
        case OPT_TEST_TIME:
            if (parse_double_arg(optarg, 0.001, 86400, &cfg->test_time_s))
                return bad("--test-time", optarg);
            break;
        case 'n':
            if (parse_u64_arg(optarg, 1, UINT64_C(1) << 40, &cfg->requests))
                return bad("-n", optarg);
            break;
        case OPT_WARMUP:
            if (parse_double_arg(optarg, 0, 3600, &cfg->warmup_s))
                return bad("--warmup-time", optarg);
            break;
        case OPT_SEED:
            if (parse_u64_arg(optarg, 0, UINT64_MAX, &cfg->seed))
                return bad("--seed", optarg);
            break;
        case 'R':
            if (parse_double_arg(optarg, 0.001, 1e9, &cfg->rate))
                return bad("-R", optarg);
            *rate_given = true;
            break;
        case OPT_CLOSED:
            cfg->closed_loop = true;
            break;
        case OPT_WORKLOAD:
            workload = optarg;
            break;
        case 'W':
            if (noverrides == MAX_OVERRIDES)
                return bad("-W", optarg);
            overrides[noverrides++] = optarg;
            break;
        case OPT_JSON:
            snprintf(cfg->json_out, sizeof(cfg->json_out), "%s", optarg);
            break;
        case OPT_HDR:
            snprintf(cfg->hdr_prefix, sizeof(cfg->hdr_prefix), "%s", optarg);
            break;
        case OPT_SWEEP: {
            double a, b, st;
            char extra;
            if (sscanf(optarg, "%lf:%lf:%lf%c", &a, &b, &st, &extra) != 3 || !(a > 0) ||
                !(b >= a) || !(st > 0) || (b - a) / st > 1000)
                return bad("--sweep", optarg);
            cfg->sweep = true;
            cfg->sweep_start = a;
            cfg->sweep_stop = b;
            cfg->sweep_step = st;
            break;
        }
        case OPT_SWEEP_PREFIX:
            snprintf(cfg->sweep_prefix, sizeof(cfg->sweep_prefix), "%s", optarg);
            break;
        case OPT_POPULATE:
            cfg->populate = true;
            break;
        case OPT_SERVER_PID:
            if (parse_u64_arg(optarg, 1, INT32_MAX, &u))
                return bad("--server-pid", optarg);
            cfg->server_pid = (int)u;
            break;
        case OPT_REDIS_SCRIPTS:
            snprintf(cfg->redis_scripts, sizeof(cfg->redis_scripts), "%s", optarg);
            break;
        case OPT_KAFKA_BROKERS:
            snprintf(cfg->kafka_brokers, sizeof(cfg->kafka_brokers), "%s", optarg);
            break;
        case OPT_KAFKA_TOPIC:
            snprintf(cfg->kafka_topic, sizeof(cfg->kafka_topic), "%s", optarg);
            break;
        case OPT_DRAIN:
            if (parse_double_arg(optarg, 0, 600, &cfg->drain_s))
                return bad("--drain-time", optarg);
            break;
        case OPT_SPIN:
            if (parse_double_arg(optarg, 0, 10000, &cfg->spin_us))
                return bad("--spin-us", optarg);
            break;
        case OPT_LABEL:
            snprintf(cfg->label, sizeof(cfg->label), "%s", optarg);
            break;
        case 'q':
            cfg->quiet = true;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        case OPT_VERSION:
            printf("atp-loadgen %s\n", LG_VERSION);
            exit(0);
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "atp-loadgen: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    char err[256];
    resolve_workload(workload, cfg->workload_path, sizeof(cfg->workload_path));
    if (lg_workload_load(&cfg->wl, cfg->workload_path, err, sizeof(err))) {
        fprintf(stderr, "atp-loadgen: workload %s: %s\n", cfg->workload_path, err);
        return 2;
    }
    for (int i = 0; i < noverrides; i++) {
        if (lg_workload_line(&cfg->wl, overrides[i], 0, NULL, err, sizeof(err))) {
            fprintf(stderr, "atp-loadgen: -W %s: %s\n", overrides[i], err);
            return 2;
        }
    }
    if (lg_workload_check(&cfg->wl, err, sizeof(err))) {
        fprintf(stderr, "atp-loadgen: workload %s: %s\n", cfg->workload_path, err);
        return 2;
    }
    if (cfg->kafka_topic[0])
        snprintf(cfg->wl.kafka_topic, sizeof(cfg->wl.kafka_topic), "%s", cfg->kafka_topic);
    return 0;
}

static int check_config(struct lg_config *cfg, bool rate_given)
{
    const struct lg_workload *wl = &cfg->wl;
    if (cfg->closed_loop && (rate_given || cfg->sweep)) {
        fprintf(stderr, "atp-loadgen: --closed-loop excludes -R and --sweep\n");
        return 2;
    }
    if (cfg->sweep && cfg->requests) {
        fprintf(stderr, "atp-loadgen: --sweep runs for --test-time, not -n\n");
        return 2;
    }
    if (cfg->protocol == LG_PROTO_KAFKA) {
        if (!cfg->kafka_brokers[0]) {
            fprintf(stderr, "atp-loadgen: --protocol=kafka needs --kafka-brokers\n");
            return 2;
        }
    } else if (wl->produce_proportion > 0) {
        fprintf(stderr, "atp-loadgen: workload %s produces Kafka events: use --protocol=kafka\n",
                wl->name);
        return 2;
    }
    if (cfg->protocol == LG_PROTO_RESP && wl->network && !wl->resp_lookup_lua)
        cfg->wl.resp_lookup_lua = true; /* a plain GET has no network read */
    if (wl->verify_oversell && !cfg->requests &&
        (double)wl->ttl_ms < (cfg->warmup_s + cfg->test_time_s + cfg->drain_s) * 1000.0 + 1000)
        fprintf(stderr,
                "atp-loadgen: warning: ttl_ms %" PRIu64 " is shorter than the run; "
                "expiries return stock and the oversell check may misreport\n",
                wl->ttl_ms);
    if (cfg->port == 0) {
        switch (cfg->protocol) {
        case LG_PROTO_BIN:
        case LG_PROTO_KAFKA:
            cfg->port = lg_driver_bin.default_port;
            break;
        case LG_PROTO_HTTP:
            cfg->port = lg_driver_http.default_port;
            break;
        case LG_PROTO_RESP:
            cfg->port = lg_driver_resp.default_port;
            break;
        }
    }
    return 0;
}

static void mix_init(struct lg_run *run)
{
    const struct lg_workload *wl = run->wl;
    double p[LG_OP_NMEASURED] = {0};
    if (run->cfg->protocol == LG_PROTO_KAFKA) {
        p[LG_OP_PRODUCE] = 1;
    } else {
        p[LG_OP_GET] = wl->get_proportion;
        p[LG_OP_MGET] = wl->mget_proportion;
        p[LG_OP_RESERVE] = wl->reserve_proportion;
    }
    double sum = 0;
    for (int op = 0; op < LG_OP_NMEASURED; op++)
        sum += p[op];
    double acc = 0;
    int last = 0;
    for (int op = 0; op < LG_OP_NMEASURED; op++) {
        acc += p[op] / sum;
        run->cum[op] = acc;
        if (p[op] > 0)
            last = op;
    }
    for (int op = last; op < LG_OP_NMEASURED; op++)
        run->cum[op] = 1.0; /* no rounding gap at the top */
}

static void run_init(struct lg_run *run, const struct lg_config *cfg, double rate)
{
    memset(run, 0, sizeof(*run));
    run->cfg = cfg;
    run->wl = &cfg->wl;
    run->rate = rate;
    run->server_cpu_s = -1;
    run->machine_busy = run->machine_steal = -1;
    run->spin_ns = (uint64_t)(cfg->spin_us * 1000.0);
    switch (cfg->protocol) {
    case LG_PROTO_HTTP:
        run->drv = &lg_driver_http;
        break;
    case LG_PROTO_RESP:
        run->drv = &lg_driver_resp;
        break;
    default:
        run->drv = &lg_driver_bin;
        break;
    }
    lg_stats_init(&run->stats);
    mix_init(run);
}

static void run_free(struct lg_run *run)
{
    lg_keygen_free(&run->keygen);
    lg_stats_free(&run->stats);
    free(run->stock_before);
    free(run->held_before);
    run->stock_before = run->held_before = NULL;
}

/* One run: setup, load, check. 0, or an exit status. */
static int one_run(struct lg_run *run)
{
    const struct lg_config *cfg = run->cfg;
    int rc =
        lg_keygen_init(&run->keygen, cfg->wl.dist, cfg->wl.recordcount, cfg->wl.zipf_theta,
                       cfg->wl.zipf_scrambled, cfg->wl.hot_data_fraction, cfg->wl.hot_opn_fraction);
    if (rc) {
        fprintf(stderr, "atp-loadgen: key distribution: %s\n", strerror(-rc));
        return 2;
    }
    if (lg_setup(run))
        return 2;
    rc = cfg->protocol == LG_PROTO_KAFKA ? lg_kafka_run(run) : lg_engine_run(run);
    if (rc)
        return 3;
    if (lg_verify(run) && !run->verify_ran)
        return 3;
    return 0;
}

static int write_outputs(const struct lg_run *run)
{
    const struct lg_config *cfg = run->cfg;
    int status = 0;
    if (cfg->json_out[0] && lg_report_json(run, cfg->json_out)) {
        fprintf(stderr, "atp-loadgen: cannot write %s\n", cfg->json_out);
        status = 3;
    }
    if (cfg->hdr_prefix[0]) {
        int rc = lg_report_hgrm(run, cfg->hdr_prefix);
        if (rc) {
            fprintf(stderr, "atp-loadgen: cannot write %s_*.hgrm: %s\n", cfg->hdr_prefix,
                    strerror(-rc));
            status = 3;
        }
    }
    return status;
}

static int sweep(struct lg_config *cfg)
{
    const char *prefix = cfg->sweep_prefix[0] ? cfg->sweep_prefix : "atp-loadgen-sweep";
    char csv_path[600], gp_path[600], png_path[600];
    snprintf(csv_path, sizeof(csv_path), "%s.csv", prefix);
    snprintf(gp_path, sizeof(gp_path), "%s.gp", prefix);
    snprintf(png_path, sizeof(png_path), "%s.png", prefix);
    FILE *csv = fopen(csv_path, "w");
    if (!csv) {
        fprintf(stderr, "atp-loadgen: %s: %s\n", csv_path, strerror(errno));
        return 2;
    }
    fprintf(csv, "offered_rate,achieved_ops_per_sec,p50_us,p90_us,p99_us,p999_us,max_us,errors,"
                 "unanswered,client_us_per_request\n");
    int status = 0;
    for (double rate = cfg->sweep_start; rate <= cfg->sweep_stop * (1 + 1e-9);
         rate += cfg->sweep_step) {
        struct lg_run run;
        run_init(&run, cfg, rate);
        int rc = one_run(&run);
        if (rc) {
            run_free(&run);
            status = rc;
            break;
        }
        struct lg_hist all;
        lg_hist_init(&all);
        uint64_t done = 0, errs = 0, unans = 0;
        for (int op = 0; op < LG_OP_NMEASURED; op++) {
            if (op == LG_OP_FRESHNESS)
                continue;
            lg_hist_merge(&all, &run.stats.hist[op]);
            done += run.stats.ok[op] + run.stats.err[op];
            errs += run.stats.err[op];
            unans += run.stats.unanswered[op];
        }
        double ach = run.duration_s > 0 ? (double)done / run.duration_s : 0;
        fprintf(csv, "%.0f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%llu,%llu,%.3f\n", rate, ach,
                lg_hist_percentile(&all, 50) / 1e3, lg_hist_percentile(&all, 90) / 1e3,
                lg_hist_percentile(&all, 99) / 1e3, lg_hist_percentile(&all, 99.9) / 1e3,
                all.max / 1e3, (unsigned long long)errs, (unsigned long long)unans,
                lg_client_us_per_request(&run));
        fflush(csv);
        if (!cfg->quiet)
            printf("rate %10.0f  achieved %10.1f ops/s  p50 %8.1f  p99 %8.1f  p99.9 %8.1f  "
                   "max %9.1f us\n",
                   rate, ach, lg_hist_percentile(&all, 50) / 1e3,
                   lg_hist_percentile(&all, 99) / 1e3, lg_hist_percentile(&all, 99.9) / 1e3,
                   all.max / 1e3);
        run_free(&run);
        /* The key space is set once; later steps use what is there. */
        cfg->populate = false;
        cfg->wl.setup = LG_SETUP_NONE;
    }
    fclose(csv);
    FILE *gp = fopen(gp_path, "w");
    if (!gp) {
        fprintf(stderr, "atp-loadgen: %s: %s\n", gp_path, strerror(errno));
        return 2;
    }
    const char *base = strrchr(csv_path, '/') ? strrchr(csv_path, '/') + 1 : csv_path;
    const char *pbase = strrchr(png_path, '/') ? strrchr(png_path, '/') + 1 : png_path;
    fprintf(gp,
            "# Latency against throughput from atp-loadgen --sweep (%s, workload %s).\n"
            "# Render with: gnuplot %s   (run it in this folder; writes %s)\n"
            "set terminal pngcairo size 900,560 noenhanced\n"
            "set output '%s'\n"
            "set datafile separator ','\n"
            "set key top left\n"
            "set grid\n"
            "set logscale y\n"
            "set xlabel 'offered rate (requests/s; achieved is column 2 of the CSV)'\n"
            "set ylabel 'latency (us, open loop, from intended send time)'\n"
            "set title 'atp-loadgen %s, %u connections, pipeline %u'\n"
            "plot '%s' using 1:3 skip 1 with linespoints title 'p50', \\\n"
            "     '' using 1:5 skip 1 with linespoints title 'p99', \\\n"
            "     '' using 1:6 skip 1 with linespoints title 'p99.9', \\\n"
            "     '' using 1:7 skip 1 with linespoints title 'max'\n",
            lg_protocol_name(cfg->protocol), cfg->wl.name,
            strrchr(gp_path, '/') ? strrchr(gp_path, '/') + 1 : gp_path, pbase, pbase,
            lg_protocol_name(cfg->protocol), cfg->threads * cfg->conns, cfg->pipeline, base);
    fclose(gp);
    if (!cfg->quiet)
        printf("wrote %s and %s (render: gnuplot %s)\n", csv_path, gp_path, gp_path);
    return status;
}

int main(int argc, char **argv)
{
    static struct lg_config cfg;
    snprintf(cfg.server, sizeof(cfg.server), "127.0.0.1");
    cfg.threads = 1;
    cfg.conns = 50;
    cfg.pipeline = 1;
    cfg.test_time_s = 5;
    cfg.seed = 1;
    cfg.rate = 10000;
    cfg.drain_s = 2;
    snprintf(cfg.redis_scripts, sizeof(cfg.redis_scripts), "%s", LG_REDIS_DIR);
    lg_workload_defaults(&cfg.wl);
    bool rate_given = false;
    int rc = parse_args(argc, argv, &cfg, &rate_given);
    if (rc)
        return rc;
    if ((rc = check_config(&cfg, rate_given)))
        return rc;
    if (cfg.sweep)
        return sweep(&cfg);
    static struct lg_run run;
    run_init(&run, &cfg, cfg.rate);
    rc = one_run(&run);
    if (rc) {
        run_free(&run);
        return rc;
    }
    lg_report_table(&run, stdout);
    int status = write_outputs(&run);
    if (run.verify_ran && !run.verify_ok)
        status = 1;
    run_free(&run);
    return status;
}
