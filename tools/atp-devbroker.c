/*
 * atp-devbroker - librdkafka's mock Kafka cluster as a standalone process.
 *
 * For development and tests: a broker that speaks the Kafka protocol on
 * 127.0.0.1, needs no JVM, outlives an atpd that is killed in a crash test,
 * and can be shared by several atpd instances. It prints its bootstrap
 * address as one line on stdout, then runs until SIGTERM or SIGINT.
 *
 *   atp-devbroker [-b BROKERS] [-p PARTITIONS] [-t TOPIC]... [-n]
 *
 * Topics given with -t are created with PARTITIONS partitions, each with its
 * "<topic>.dlq" companion unless -n. Topics a client produces to before they
 * exist are created by the mock itself (with its default partition count).
 *
 * Limits of the mock cluster (librdkafka 2.0): each partition keeps about
 * 5 MiB or 100k message batches, older ones are deleted (retention); no
 * transactions worth testing against, no static group membership, no offset
 * lookup by time. Everything lives in memory and is gone when it stops.
 *
 * Under a steady event stream: a fetch gets one message batch per
 * partition, found by walking the partition's batches from the oldest, so
 * with a producer that writes many small batches (a short linger) the
 * broker's work per fetch grows with the square of the partition count. At
 * 50k events/s from a 1 ms-linger producer, 2 partitions kept freshness p99
 * under 10 ms and 4 did not (docs/BENCHMARKS.md, "Kafka ingest"); fewer
 * partitions keep less time in the log (~1.4 s each with 2 at that rate).
 *
 * It knows librdkafka and nothing of atpd.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_TOPICS 64

static void usage(FILE *f)
{
    fprintf(f, "usage: atp-devbroker [-b BROKERS] [-p PARTITIONS] [-t TOPIC]... [-n] [-v]\n"
               "  -b N  brokers in the cluster (default 1)\n"
               "  -p N  partitions of each topic created with -t (default 4)\n"
               "  -t T  create topic T (and T.dlq unless -n); may repeat\n"
               "  -n    do not create the .dlq companions\n"
               "  -v    log librdkafka's warnings and errors on stderr\n"
               "Prints the bootstrap address on stdout, runs until SIGTERM/SIGINT.\n");
}

static int parse_count(const char *s, int lo, int hi, int *ret)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > hi)
        return -1;
    *ret = (int)v;
    return 0;
}

static int verbose;

static void log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    if (verbose && level <= 4)
        fprintf(stderr, "atp-devbroker: %s: %s\n", fac, buf);
}

int main(int argc, char **argv)
{
    int nbrokers = 1, npart = 4, dlq = 1, opt;
    const char *topics[MAX_TOPICS];
    int ntopics = 0;

    while ((opt = getopt(argc, argv, "b:p:t:nvh")) != -1) {
        switch (opt) {
        case 'b':
            if (parse_count(optarg, 1, 16, &nbrokers)) {
                fprintf(stderr, "atp-devbroker: -b: expected 1..16\n");
                return 2;
            }
            break;
        case 'p':
            if (parse_count(optarg, 1, 1024, &npart)) {
                fprintf(stderr, "atp-devbroker: -p: expected 1..1024\n");
                return 2;
            }
            break;
        case 't':
            if (ntopics == MAX_TOPICS || !*optarg) {
                fprintf(stderr, "atp-devbroker: -t: empty or more than %d topics\n", MAX_TOPICS);
                return 2;
            }
            topics[ntopics++] = optarg;
            break;
        case 'n':
            dlq = 0;
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    /* Block the stop signals before librdkafka starts its threads, so they
     * all inherit the mask and sigwait() below receives them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, log_cb);
    if (rd_kafka_conf_set(conf, "client.id", "atp-devbroker", errstr, sizeof(errstr))) {
        fprintf(stderr, "atp-devbroker: %s\n", errstr);
        return 1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "atp-devbroker: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, nbrokers);
    if (!mc) {
        fprintf(stderr, "atp-devbroker: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < ntopics && rc == 0; i++) {
        for (int d = 0; d <= dlq && rc == 0; d++) {
            char name[512];
            snprintf(name, sizeof(name), "%s%s", topics[i], d ? ".dlq" : "");
            rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, name, npart, 1);
            if (err) {
                fprintf(stderr, "atp-devbroker: topic %s: %s\n", name, rd_kafka_err2str(err));
                rc = 1;
            }
        }
    }
    if (rc == 0) {
        printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));
        fflush(stdout);
        int sig = 0;
        sigwait(&stop, &sig);
        fprintf(stderr, "atp-devbroker: stopping on signal %d\n", sig);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    return rc;
}
