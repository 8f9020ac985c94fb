/*
 * kafka.c - the Kafka driver of atp-loadgen (--protocol=kafka): inventory
 * events produced at a rate, and the freshness of atpd's picture measured
 * by watching lookups.
 *
 * Producers: one librdkafka producer per thread, each producing its share
 * of the rate. Events are `adjust` events in the contract of
 * protocol/EVENTS.md (receipts and picks of one unit, alternating, so stock
 * stays level), keyed by sku. A `produce` operation's latency runs from its
 * intended send time to its delivery report (open loop), or from the
 * produce call (closed loop: at most connections x pipeline outstanding per
 * thread).
 *
 * Freshness probe: every probe_interval_ms one `set` event for probe_sku
 * (on_hand = a counter, seq increasing) is produced, and the probe polls
 * atpd over the binary protocol until the lookup shows that on_hand. The
 * time from the produce call to the first lookup that shows it is one
 * `freshness` sample; a probe not visible within a second is an error.
 */
#include "lg.h"

#include <errno.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* The shortest sleep of an open-loop producer between sends (see
 * producer_loop): a tenth of the producer's 1 ms linger. */
#define PRODUCE_NAP_NS 100000ull

struct kworker {
    struct lg_run *run;
    uint32_t tid;
    pthread_t th;
    rd_kafka_t *rk;
    struct lg_stats stats;
    struct lg_rng rng;
    uint64_t outstanding;          /* produced, no delivery report yet */
    uint64_t outstanding_measured; /* of which measured */
    uint64_t nonce;
    bool probe; /* this worker is the freshness probe */
    int rc;
    char errmsg[600];
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static void sleep_ns(uint64_t d)
{
    struct timespec ts = {(time_t)(d / 1000000000ull), (long)(d % 1000000000ull)};
    nanosleep(&ts, NULL);
}

static void sleep_until(uint64_t t)
{
    uint64_t now = lg_now_ns();
    if (t > now)
        sleep_ns(t - now);
}

static bool in_window(const struct lg_run *run, uint64_t t0)
{
    return t0 >= run->t_measure && t0 < run->t_end;
}

/* Delivery report: runs inside rd_kafka_poll on the worker's own thread. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct kworker *w = opaque;
    uint64_t t0 = (uint64_t)(uintptr_t)m->_private;
    uint64_t now = lg_now_ns();
    w->outstanding--;
    if (w->probe || !in_window(w->run, t0))
        return;
    w->outstanding_measured--;
    lg_hist_record(&w->stats.hist[LG_OP_PRODUCE], now > t0 ? now - t0 : 0);
    if (m->err) {
        w->stats.err[LG_OP_PRODUCE]++;
        lg_stats_count_error(&w->stats, LG_OP_PRODUCE, rd_kafka_err2name(m->err));
    } else {
        w->stats.ok[LG_OP_PRODUCE]++;
    }
}

static int make_producer(struct kworker *w)
{
    const struct lg_config *cfg = w->run->cfg;
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* linger.ms 1: batching without adding more than a millisecond. */
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka_brokers, err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "linger.ms", "1", err, sizeof(err)) ||
        rd_kafka_conf_set(conf, "queue.buffering.max.messages", "1000000", err, sizeof(err))) {
        snprintf(w->errmsg, sizeof(w->errmsg), "kafka config: %s", err);
        rd_kafka_conf_destroy(conf);
        return -EINVAL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_opaque(conf, w);
    w->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!w->rk) {
        snprintf(w->errmsg, sizeof(w->errmsg), "kafka producer: %s", err);
        return -EINVAL;
    }
    return 0;
}

static int produce(struct kworker *w, const char *sku, const char *json, size_t len, uint64_t t0)
{
    rd_kafka_resp_err_t e = rd_kafka_producev(
        w->rk, RD_KAFKA_V_TOPIC(w->run->wl->kafka_topic), RD_KAFKA_V_KEY(sku, strlen(sku)),
        RD_KAFKA_V_VALUE((void *)json, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_OPAQUE((void *)(uintptr_t)t0), RD_KAFKA_V_END);
    if (e)
        return e == RD_KAFKA_RESP_ERR__QUEUE_FULL ? -EAGAIN : -EIO;
    w->outstanding++;
    return 0;
}

static int produce_adjust(struct kworker *w, uint64_t n, uint64_t t0, uint64_t now)
{
    const struct lg_workload *wl = w->run->wl;
    char sku[72], json[512];
    uint64_t key = lg_keygen_next(&w->run->keygen, &w->rng);
    lg_sku(w->run, key, sku);
    const char *loc = wl->locations[lg_rng_below(&w->rng, wl->nlocations)];
    bool pick = n & 1;
    int len = snprintf(
        json, sizeof(json),
        "{\"event_id\":\"lg-%08" PRIx64 "-%u-%" PRIu64 "\",\"type\":\"adjust\","
        "\"sku\":\"%s\",\"loc\":\"%s\",\"delta\":%d,\"reason\":\"%s\",\"ts\":%" PRIu64 "}",
        w->nonce, w->tid, n, sku, loc, pick ? -1 : 1, pick ? "pick" : "receipt", wall_ms());
    int rc = produce(w, sku, json, (size_t)len, t0);
    if (rc == 0 && in_window(w->run, t0)) {
        w->stats.sent[LG_OP_PRODUCE]++;
        w->outstanding_measured++;
        if (!w->run->cfg->closed_loop) {
            uint64_t delay = now > t0 ? now - t0 : 0;
            lg_hist_record(&w->stats.send_delay, delay);
            if (delay > LG_LATE_NS)
                w->stats.late_sends++;
        }
    }
    return rc;
}

static void producer_loop(struct kworker *w)
{
    struct lg_run *run = w->run;
    const struct lg_config *cfg = run->cfg;
    double interval = 1e9 * cfg->threads / run->rate;
    uint64_t max_out = (uint64_t)cfg->conns * cfg->pipeline;
    uint64_t first = run->t_start + (uint64_t)(lg_rng_double(&w->rng) * interval);
    uint64_t n = 0;
    for (;;) {
        uint64_t now = lg_now_ns();
        if (now >= run->t_end)
            break;
        for (;;) {
            uint64_t t0;
            if (cfg->closed_loop) {
                if (w->outstanding >= max_out)
                    break;
                t0 = now;
            } else {
                t0 = first + (uint64_t)((double)n * interval);
                if (t0 > now)
                    break;
            }
            int rc = produce_adjust(w, n, t0, now);
            if (rc == -EAGAIN)
                break; /* the local queue is full: serve delivery reports first */
            if (rc) {
                w->stats.err[LG_OP_PRODUCE]++;
                lg_stats_count_error(&w->stats, LG_OP_PRODUCE, "PRODUCE_FAILED");
            }
            n++;
        }
        rd_kafka_poll(w->rk, 0);
        if (cfg->closed_loop) {
            rd_kafka_poll(w->rk, 1);
        } else {
            /* Sleep until the next send is due, but at least PRODUCE_NAP_NS:
             * at 50k events/s sends are 20 us apart, and waking for each
             * of them, or spinning between them, takes a whole core from
             * the broker and atpd on a 2-core machine. The events that fall
             * due meanwhile go out together; their lateness is in the send
             * delay, and their Kafka timestamp is still their produce call. */
            uint64_t next = first + (uint64_t)((double)n * interval);
            now = lg_now_ns();
            if (next > now) {
                uint64_t d = next - now;
                sleep_ns(d < PRODUCE_NAP_NS ? PRODUCE_NAP_NS : d > 1000000 ? 1000000 : d);
            }
        }
    }
    rd_kafka_flush(w->rk, (int)(cfg->drain_s * 1000));
    w->stats.unanswered[LG_OP_PRODUCE] += w->outstanding_measured;
}

static void probe_loop(struct kworker *w)
{
    struct lg_run *run = w->run;
    const struct lg_workload *wl = run->wl;
    int fd;
    int rc = lg_connect(run->cfg, &fd);
    if (rc) {
        snprintf(w->errmsg, sizeof(w->errmsg), "freshness probe: connect %s:%u: %s",
                 run->cfg->server, run->cfg->port, strerror(-rc));
        w->rc = rc;
        return;
    }
    void *state = calloc(1, run->drv->state_size ? run->drv->state_size : 1);
    uint64_t seq_base = wall_ms() * 1000;
    uint64_t step = (uint64_t)wl->probe_interval_ms * 1000000ull;
    uint64_t k = 0;
    struct lg_line line = {0};
    for (uint64_t next = run->t_start; next < run->t_end; next += step) {
        sleep_until(next);
        k++;
        char json[512];
        const char *loc = wl->locations[0];
        int len = snprintf(json, sizeof(json),
                           "{\"event_id\":\"lg-probe-%08" PRIx64 "-%" PRIu64 "\",\"type\":\"set\","
                           "\"sku\":\"%s\",\"loc\":\"%s\",\"on_hand\":%" PRIu64 ",\"seq\":%" PRIu64
                           ",\"ts\":%" PRIu64 "}",
                           w->nonce, k, wl->probe_sku, loc, k, seq_base + k, wall_ms());
        uint64_t t0 = lg_now_ns();
        if (produce(w, wl->probe_sku, json, (size_t)len, t0)) {
            rd_kafka_poll(w->rk, 1);
            continue;
        }
        rd_kafka_poll(w->rk, 0);
        bool measured = in_window(run, t0);
        bool seen = false;
        uint64_t deadline = t0 + 1000000000ull;
        while (lg_now_ns() < deadline) {
            struct lg_req q = {
                .op = LG_XOP_INSPECT, .keys = &line, .nkeys = 1, .sku_override = wl->probe_sku};
            struct lg_resp a;
            if (lg_sync_call(run, fd, state, &q, &a)) {
                w->rc = -EIO;
                snprintf(w->errmsg, sizeof(w->errmsg), "freshness probe: lookup failed");
                break;
            }
            if (!a.status && a.on_hand == (int64_t)k) {
                uint64_t now = lg_now_ns();
                if (measured) {
                    lg_hist_record(&w->stats.hist[LG_OP_FRESHNESS], now - t0);
                    w->stats.ok[LG_OP_FRESHNESS]++;
                }
                seen = true;
                break;
            }
            rd_kafka_poll(w->rk, 0);
            sleep_ns(50000); /* 50 us between lookups: ~20k/s at most while waiting */
        }
        if (w->rc)
            break;
        if (measured) {
            w->stats.sent[LG_OP_FRESHNESS]++;
            if (!seen) {
                w->stats.err[LG_OP_FRESHNESS]++;
                lg_stats_count_error(&w->stats, LG_OP_FRESHNESS, "NOT_SEEN");
            }
        }
    }
    rd_kafka_flush(w->rk, 1000);
    free(state);
    close(fd);
}

static void *kworker_main(void *arg)
{
    struct kworker *w = arg;
    if (w->probe)
        probe_loop(w);
    else
        producer_loop(w);
    return NULL;
}

int lg_kafka_run(struct lg_run *run)
{
    const struct lg_config *cfg = run->cfg;
    if (cfg->requests) {
        fprintf(stderr, "atp-loadgen: --protocol=kafka runs for --test-time, not -n\n");
        return -EINVAL;
    }
    bool probe = run->wl->probe_interval_ms > 0;
    uint32_t nw = cfg->threads + (probe ? 1 : 0);
    struct kworker *ws = calloc(nw, sizeof(*ws));
    if (!ws)
        return -ENOMEM;
    uint64_t nonce = lg_fnv1a64(lg_now_ns() ^ ((uint64_t)getpid() << 32)) & 0xffffffffull;
    int rc = 0;
    for (uint32_t i = 0; i < nw && rc == 0; i++) {
        ws[i].run = run;
        ws[i].tid = i;
        ws[i].nonce = nonce;
        ws[i].probe = probe && i == cfg->threads;
        lg_rng_seed(&ws[i].rng, cfg->seed * 0x9e3779b97f4a7c15ull + i + 1);
        lg_stats_init(&ws[i].stats);
        rc = make_producer(&ws[i]);
        if (rc)
            fprintf(stderr, "atp-loadgen: %s\n", ws[i].errmsg);
    }
    uint32_t started = 0;
    if (rc == 0) {
        run->t_start = lg_now_ns() + 2000000;
        run->t_measure = run->t_start + (uint64_t)(cfg->warmup_s * 1e9);
        run->t_end = run->t_measure + (uint64_t)(cfg->test_time_s * 1e9);
        for (; started < nw; started++)
            if (pthread_create(&ws[started].th, NULL, kworker_main, &ws[started])) {
                rc = -EAGAIN;
                break;
            }
        sleep_until(run->t_measure);
        lg_cpu_mark(run, 0);
        sleep_until(run->t_end);
        lg_cpu_mark(run, 1);
    }
    for (uint32_t i = 0; i < started; i++)
        pthread_join(ws[i].th, NULL);
    for (uint32_t i = 0; i < nw; i++) {
        if (ws[i].rc && rc == 0) {
            rc = ws[i].rc;
            fprintf(stderr, "atp-loadgen: %s\n", ws[i].errmsg);
        }
        lg_stats_merge(&run->stats, &ws[i].stats);
        lg_stats_free(&ws[i].stats);
        if (ws[i].rk)
            rd_kafka_destroy(ws[i].rk);
    }
    run->duration_s = cfg->test_time_s;
    free(ws);
    return rc;
}
