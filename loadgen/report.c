/*
 * report.c - atp-loadgen's outputs: the table on stdout, the JSON file
 * (schema "atp-loadgen/1", documented in loadgen/README.md) and the
 * HdrHistogram-style .hgrm percentile files.
 *
 * Every figure comes from the merged statistics of one run; nothing here
 * measures anything.
 */
#include "lg.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

static uint64_t completed(const struct lg_stats *s, int op)
{
    return s->ok[op] + s->err[op];
}

static bool op_used(const struct lg_stats *s, int op)
{
    return s->sent[op] || completed(s, op);
}

static void all_hist(const struct lg_stats *s, struct lg_hist *all)
{
    lg_hist_init(all);
    for (int op = 0; op < LG_OP_NMEASURED; op++)
        if (op != LG_OP_FRESHNESS) /* a probe, not a request */
            lg_hist_merge(all, &s->hist[op]);
}

static uint64_t total(const uint64_t *v)
{
    uint64_t t = 0;
    for (int op = 0; op < LG_OP_NMEASURED; op++)
        if (op != LG_OP_FRESHNESS)
            t += v[op];
    return t;
}

static double per_s(const struct lg_run *run, uint64_t n)
{
    return run->duration_s > 0 ? (double)n / run->duration_s : 0.0;
}

static double us(uint64_t ns)
{
    return (double)ns / 1000.0;
}

static void row(FILE *f, const char *name, const struct lg_run *run, const struct lg_hist *h,
                uint64_t sent, uint64_t ok, uint64_t err)
{
    fprintf(f, "%-10s %11.1f %10llu %10llu %8llu %9.1f %9.1f %9.1f %9.1f %10.1f\n", name,
            per_s(run, ok + err), (unsigned long long)sent, (unsigned long long)ok,
            (unsigned long long)err, us(lg_hist_percentile(h, 50)), us(lg_hist_percentile(h, 90)),
            us(lg_hist_percentile(h, 99)), us(lg_hist_percentile(h, 99.9)), us(h->max));
}

double lg_client_us_per_request(const struct lg_run *run)
{
    uint64_t n = total(run->stats.ok) + total(run->stats.err);
    return n ? run->client_cpu_s * 1e6 / (double)n : 0;
}

static double server_us_per_request(const struct lg_run *run)
{
    uint64_t n = total(run->stats.ok) + total(run->stats.err);
    return n && run->server_cpu_s >= 0 ? run->server_cpu_s * 1e6 / (double)n : -1;
}

void lg_report_table(const struct lg_run *run, FILE *f)
{
    const struct lg_config *cfg = run->cfg;
    const struct lg_stats *s = &run->stats;
    fprintf(f, "atp-loadgen %s  %s://%s:%u  workload=%s%s%s\n", LG_VERSION,
            lg_protocol_name(cfg->protocol), cfg->server, cfg->port, run->wl->name,
            cfg->label[0] ? "  label=" : "", cfg->label);
    if (cfg->closed_loop)
        fprintf(f, "CLOSED LOOP (maximum throughput; latency from the actual send, so it "
                   "understates the tail)\n");
    else
        fprintf(f,
                "open loop at %.0f req/s (latency from the intended send time: coordinated "
                "omission corrected)\n",
                run->rate);
    fprintf(f, "threads=%u connections=%u pipeline=%u duration=%.2fs warmup=%.2fs seed=%llu\n\n",
            cfg->threads, cfg->threads * cfg->conns, cfg->pipeline, run->duration_s, cfg->warmup_s,
            (unsigned long long)cfg->seed);
    fprintf(f, "%-10s %11s %10s %10s %8s %9s %9s %9s %9s %10s\n", "op", "ops/s", "sent", "ok",
            "errors", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us");
    for (int op = 0; op < LG_OP_NMEASURED; op++) {
        if (op == LG_OP_FRESHNESS || !op_used(s, op))
            continue;
        row(f, lg_op_name(op), run, &s->hist[op], s->sent[op], s->ok[op], s->err[op]);
    }
    struct lg_hist all;
    all_hist(s, &all);
    row(f, "all", run, &all, total(s->sent), total(s->ok), total(s->err));
    if (op_used(s, LG_OP_FRESHNESS)) {
        const struct lg_hist *h = &s->hist[LG_OP_FRESHNESS];
        fprintf(f,
                "\nfreshness (event produced -> visible by lookup), %llu probes: p50 %.1f us, "
                "p99 %.1f us, max %.1f us, %llu not seen\n",
                (unsigned long long)s->ok[LG_OP_FRESHNESS], us(lg_hist_percentile(h, 50)),
                us(lg_hist_percentile(h, 99)), us(h->max),
                (unsigned long long)s->err[LG_OP_FRESHNESS]);
    }
    if (!cfg->closed_loop && s->send_delay.total) {
        const struct lg_hist *h = &s->send_delay;
        fprintf(f,
                "\nsend delay (actual - intended send time, part of the latencies above): "
                "p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
                us(lg_hist_percentile(h, 50)), us(lg_hist_percentile(h, 99)),
                us(lg_hist_percentile(h, 99.9)), us(h->max));
        h = &s->own_delay;
        if (h->total)
            fprintf(f,
                    "  of which the client's own (after a pipeline slot was free): "
                    "p50 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us\n",
                    us(lg_hist_percentile(h, 50)), us(lg_hist_percentile(h, 99)),
                    us(lg_hist_percentile(h, 99.9)), us(h->max));
    }
    uint64_t unans = total(s->unanswered);
    if (unans)
        fprintf(f, "\nunanswered at the end of the drain: %llu\n", (unsigned long long)unans);
    if (s->nstatus) {
        fprintf(f, "\nerrors by status:\n");
        for (uint32_t i = 0; i < s->nstatus; i++)
            for (int op = 0; op < LG_OP_NMEASURED; op++)
                if (s->status[i].count[op])
                    fprintf(f, "  %-10s %-16s %llu\n", lg_op_name(op), s->status[i].name,
                            (unsigned long long)s->status[i].count[op]);
    }
    if (s->followups_dropped)
        fprintf(f, "follow-ups dropped (queue full): %llu\n",
                (unsigned long long)s->followups_dropped);
    if (s->conn_errors)
        fprintf(f, "connections closed: %llu (announced by the server: %llu; reopened: %llu)\n",
                (unsigned long long)s->conn_errors, (unsigned long long)s->server_closes,
                (unsigned long long)s->reconnects);
    double wall = run->wall_measured_s > 0 ? run->wall_measured_s : run->duration_s;
    fprintf(f,
            "\nclient cpu: %.2f us/request (user %.2fs + sys %.2fs over %.2fs, %.0f%% of a core)\n",
            lg_client_us_per_request(run), run->client_user_s, run->client_sys_s, wall,
            wall > 0 ? 100.0 * run->client_cpu_s / wall : 0);
    if (run->server_cpu_s >= 0)
        fprintf(f, "server cpu: %.2f us/request (pid %d, %.2fs, %.0f%% of a core)\n",
                server_us_per_request(run), cfg->server_pid, run->server_cpu_s,
                wall > 0 ? 100.0 * run->server_cpu_s / wall : 0);
    if (run->machine_steal >= 0)
        fprintf(f, "machine: %.0f%% busy, %.0f%% stolen by the hypervisor (all cores)\n",
                100.0 * run->machine_busy, 100.0 * run->machine_steal);
    if (run->verify_ran)
        fprintf(f, "oversell check: %s %s\n", run->verify_ok ? "PASS" : "FAIL", run->verify_msg);
}

/* --- JSON ---------------------------------------------------------------- */

static void add_wl(void *arg, const char *key, const char *value)
{
    json_object_object_add(arg, key, json_object_new_string(value));
}

static json_object *latency_obj(const struct lg_hist *h)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "p50", json_object_new_double(us(lg_hist_percentile(h, 50))));
    json_object_object_add(o, "p90", json_object_new_double(us(lg_hist_percentile(h, 90))));
    json_object_object_add(o, "p99", json_object_new_double(us(lg_hist_percentile(h, 99))));
    json_object_object_add(o, "p999", json_object_new_double(us(lg_hist_percentile(h, 99.9))));
    json_object_object_add(o, "max", json_object_new_double(us(h->max)));
    json_object_object_add(o, "min", json_object_new_double(h->total ? us(h->min) : 0));
    json_object_object_add(o, "mean", json_object_new_double(lg_hist_mean(h) / 1000.0));
    json_object_object_add(o, "count", json_object_new_int64((int64_t)h->total));
    return o;
}

static json_object *config_obj(const struct lg_run *run)
{
    const struct lg_config *cfg = run->cfg;
    json_object *c = json_object_new_object();
    json_object_object_add(c, "server", json_object_new_string(cfg->server));
    json_object_object_add(c, "port", json_object_new_int(cfg->port));
    json_object_object_add(c, "protocol", json_object_new_string(lg_protocol_name(cfg->protocol)));
    json_object_object_add(c, "threads", json_object_new_int((int)cfg->threads));
    json_object_object_add(c, "connections_per_thread", json_object_new_int((int)cfg->conns));
    json_object_object_add(c, "connections", json_object_new_int((int)(cfg->threads * cfg->conns)));
    json_object_object_add(c, "pipeline", json_object_new_int((int)cfg->pipeline));
    json_object_object_add(c, "mode",
                           json_object_new_string(cfg->closed_loop ? "closed-loop" : "open-loop"));
    json_object_object_add(c, "rate", cfg->closed_loop ? NULL : json_object_new_double(run->rate));
    json_object_object_add(c, "test_time_s", json_object_new_double(cfg->test_time_s));
    json_object_object_add(c, "requests_per_connection",
                           json_object_new_int64((int64_t)cfg->requests));
    json_object_object_add(c, "warmup_time_s", json_object_new_double(cfg->warmup_s));
    json_object_object_add(c, "seed", json_object_new_int64((int64_t)cfg->seed));
    json_object_object_add(c, "workload_file", json_object_new_string(cfg->workload_path));
    json_object_object_add(c, "label", json_object_new_string(cfg->label));
    json_object_object_add(c, "drain_time_s", json_object_new_double(cfg->drain_s));
    json_object_object_add(c, "spin_us", json_object_new_double(cfg->spin_us));
    if (cfg->protocol == LG_PROTO_KAFKA) {
        json_object_object_add(c, "kafka_brokers", json_object_new_string(cfg->kafka_brokers));
    }
    json_object *w = json_object_new_object();
    lg_workload_foreach(run->wl, add_wl, w);
    json_object_object_add(c, "workload", w);
    return c;
}

int lg_report_json(const struct lg_run *run, const char *path)
{
    const struct lg_stats *s = &run->stats;
    json_object *root = json_object_new_object();
    json_object_object_add(root, "schema", json_object_new_string("atp-loadgen/1"));
    json_object_object_add(root, "version", json_object_new_string(LG_VERSION));
    json_object_object_add(root, "config", config_obj(run));
    json_object_object_add(root, "duration_s", json_object_new_double(run->duration_s));
    uint64_t done = total(s->ok) + total(s->err);
    json_object_object_add(root, "ops_per_sec", json_object_new_double(per_s(run, done)));

    json_object *req = json_object_new_object();
    json_object_object_add(req, "sent", json_object_new_int64((int64_t)total(s->sent)));
    json_object_object_add(req, "completed", json_object_new_int64((int64_t)done));
    json_object_object_add(req, "ok", json_object_new_int64((int64_t)total(s->ok)));
    json_object_object_add(req, "errors", json_object_new_int64((int64_t)total(s->err)));
    json_object_object_add(req, "unanswered", json_object_new_int64((int64_t)total(s->unanswered)));
    json_object_object_add(req, "keys_read", json_object_new_int64((int64_t)s->keys_read));
    json_object_object_add(req, "followups_dropped",
                           json_object_new_int64((int64_t)s->followups_dropped));
    json_object_object_add(req, "late_sends", json_object_new_int64((int64_t)s->late_sends));
    json_object_object_add(req, "connections_lost", json_object_new_int64((int64_t)s->conn_errors));
    json_object_object_add(req, "reconnects", json_object_new_int64((int64_t)s->reconnects));
    json_object_object_add(req, "server_closes", json_object_new_int64((int64_t)s->server_closes));
    json_object_object_add(root, "requests", req);

    json_object *ops = json_object_new_object();
    json_object *lat = json_object_new_object();
    for (int op = 0; op < LG_OP_NMEASURED; op++) {
        if (!op_used(s, op))
            continue;
        json_object *o = json_object_new_object();
        json_object_object_add(o, "ops_per_sec",
                               json_object_new_double(per_s(run, completed(s, op))));
        json_object_object_add(o, "sent", json_object_new_int64((int64_t)s->sent[op]));
        json_object_object_add(o, "ok", json_object_new_int64((int64_t)s->ok[op]));
        json_object_object_add(o, "errors", json_object_new_int64((int64_t)s->err[op]));
        json_object_object_add(o, "unanswered", json_object_new_int64((int64_t)s->unanswered[op]));
        json_object_object_add(ops, lg_op_name(op), o);
        json_object_object_add(lat, lg_op_name(op), latency_obj(&s->hist[op]));
    }
    struct lg_hist all;
    all_hist(s, &all);
    json_object_object_add(lat, "all", latency_obj(&all));
    json_object_object_add(root, "ops", ops);
    json_object_object_add(root, "latency_us", lat);
    if (!run->cfg->closed_loop) {
        json_object_object_add(root, "send_delay_us", latency_obj(&s->send_delay));
        json_object_object_add(root, "client_delay_us", latency_obj(&s->own_delay));
    }

    json_object *errs = json_object_new_object();
    json_object *by_status = json_object_new_object();
    json_object *by_op = json_object_new_object();
    for (uint32_t i = 0; i < s->nstatus; i++) {
        uint64_t t = 0;
        for (int op = 0; op < LG_OP_NMEASURED; op++) {
            uint64_t n = s->status[i].count[op];
            if (!n || op == LG_OP_FRESHNESS) /* a probe, not a request: see ops.freshness */
                continue;
            t += n;
            json_object *m;
            if (!json_object_object_get_ex(by_op, lg_op_name(op), &m)) {
                m = json_object_new_object();
                json_object_object_add(by_op, lg_op_name(op), m);
            }
            json_object_object_add(m, s->status[i].name, json_object_new_int64((int64_t)n));
        }
        if (t)
            json_object_object_add(by_status, s->status[i].name, json_object_new_int64((int64_t)t));
    }
    json_object_object_add(errs, "total", json_object_new_int64((int64_t)total(s->err)));
    json_object_object_add(errs, "by_status", by_status);
    json_object_object_add(errs, "by_op", by_op);
    json_object_object_add(root, "errors", errs);

    json_object *cpu = json_object_new_object();
    json_object_object_add(cpu, "client_us_per_request",
                           json_object_new_double(lg_client_us_per_request(run)));
    json_object_object_add(cpu, "client_user_s", json_object_new_double(run->client_user_s));
    json_object_object_add(cpu, "client_sys_s", json_object_new_double(run->client_sys_s));
    double wall = run->wall_measured_s > 0 ? run->wall_measured_s : run->duration_s;
    json_object_object_add(cpu, "wall_s", json_object_new_double(wall));
    json_object_object_add(cpu, "client_core_fraction",
                           json_object_new_double(wall > 0 ? run->client_cpu_s / wall : 0));
    if (run->server_cpu_s >= 0) {
        json_object_object_add(cpu, "server_pid", json_object_new_int(run->cfg->server_pid));
        json_object_object_add(cpu, "server_us_per_request",
                               json_object_new_double(server_us_per_request(run)));
        json_object_object_add(cpu, "server_cpu_s", json_object_new_double(run->server_cpu_s));
        json_object_object_add(cpu, "server_core_fraction",
                               json_object_new_double(wall > 0 ? run->server_cpu_s / wall : 0));
    }
    if (run->machine_steal >= 0) {
        json_object_object_add(cpu, "machine_busy_fraction",
                               json_object_new_double(run->machine_busy));
        json_object_object_add(cpu, "machine_steal_fraction",
                               json_object_new_double(run->machine_steal));
    }
    json_object_object_add(root, "cpu", cpu);

    if (run->verify_ran) {
        json_object *v = json_object_new_object();
        json_object_object_add(v, "ok", json_object_new_boolean(run->verify_ok));
        json_object_object_add(v, "oversold", json_object_new_int64(run->oversold));
        json_object_object_add(v, "granted", json_object_new_int64(run->granted_total));
        json_object_object_add(v, "server_granted",
                               json_object_new_int64(run->server_granted_total));
        json_object_object_add(v, "message", json_object_new_string(run->verify_msg));
        json_object_object_add(root, "verify", v);
    }

    int rc = json_object_to_file_ext(path, root, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED)
                 ? -EIO
                 : 0;
    json_object_put(root);
    return rc;
}

int lg_report_hgrm(const struct lg_run *run, const char *prefix)
{
    const struct lg_stats *s = &run->stats;
    struct lg_hist all;
    all_hist(s, &all);
    for (int op = 0; op <= LG_OP_NMEASURED; op++) {
        const struct lg_hist *h = op == LG_OP_NMEASURED ? &all : &s->hist[op];
        if (h->total == 0)
            continue;
        char path[600];
        snprintf(path, sizeof(path), "%s_%s.hgrm", prefix,
                 op == LG_OP_NMEASURED ? "all" : lg_op_name(op));
        FILE *f = fopen(path, "w");
        if (!f)
            return -errno;
        int rc = lg_hist_write_hgrm(h, f, 1e6); /* ns -> ms, as HdrHistogram plotters expect */
        if (fclose(f) || rc)
            return rc ? rc : -EIO;
    }
    return 0;
}
