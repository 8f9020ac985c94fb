#!/bin/sh
# bench_durability.sh - the cost of durability: reservation throughput and
# latency of atpd with appendfsync always, everysec and no, in the same run.
# Not a test; the figures go to docs/BENCHMARKS.md ("Durability").
#
#   tests/bench_durability.sh BUILD_DIR [ROUNDS] [SECONDS] [OPEN_RATE] [CONNS]
#
# Per round, the three policies one after the other (interleaved, as
# docs/BENCHMARKING.md asks): a fresh data folder on the same disk, atpd on
# core 0 (its log writer included), atp-loadgen on core 1 running the
# `orchestrator` workload (multi-line reserve, then commit 80% / release 20%:
# every operation is a log record) closed-loop for throughput, then open-loop
# at OPEN_RATE for latency corrected for coordinated omission. Prints the
# median over rounds and each policy's ratio to `no`.
set -eu
B=${1:?build dir}
ROUNDS=${2:-3}
SECS=${3:-5}
RATE=${4:-10000}
CONNS=${5:-50}
ATPD=$B/src/atpd
LG=$B/loadgen/atp-loadgen
WORK=$(mktemp -d "${TMPDIR:-/tmp}/atp-bench-durable-XXXXXX")
PID=
cleanup() {
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

run_policy() { # policy round
    dir=$WORK/data-$1
    rm -rf "$dir"
    taskset -c 0 "$ATPD" --port 0 --port-file "$WORK/port" -o "http no" --workers 1 \
        --dir "$dir" --appendfsync "$1" --max-reservations 8000000 \
        --snapshot-log-size 64gb --snapshot-interval 30d >"$WORK/atpd-$1.log" 2>&1 &
    PID=$!
    i=0
    while [ ! -s "$WORK/port" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    port=$(cat "$WORK/port")
    rm -f "$WORK/port"
    common="-p $port --workload orchestrator -W recordcount=20000 -c $CONNS -q --server-pid $PID"
    taskset -c 1 "$LG" $common --populate --closed-loop --warmup-time 1 --test-time "$SECS" \
        --label "$1" --json-out-file "$WORK/closed-$1-$2.json" >/dev/null
    taskset -c 1 "$LG" $common -R "$RATE" --warmup-time 1 --test-time "$SECS" \
        --label "$1" --json-out-file "$WORK/open-$1-$2.json" >/dev/null
    kill -TERM "$PID"
    wait "$PID" || true
    PID=
}

r=1
while [ $r -le "$ROUNDS" ]; do
    for p in always everysec no; do
        run_policy $p $r
    done
    r=$((r + 1))
done

python3 - "$WORK" "$ROUNDS" "$RATE" "$CONNS" <<'EOF'
import json, statistics, sys
work, rounds, rate, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(kind, p, r):
    return json.load(open(f"{work}/{kind}-{p}-{r}.json"))
rows = {}
for p in ("always", "everysec", "no"):
    c = [load("closed", p, r) for r in range(1, rounds + 1)]
    o = [load("open", p, r) for r in range(1, rounds + 1)]
    rows[p] = {
        "ops": [x["ops_per_sec"] for x in c],
        "cpu": [x["cpu"].get("server_us_per_request", 0) for x in c],
        "cp50": [x["latency_us"]["all"]["p50"] for x in c],
        "op50": [x["latency_us"]["all"]["p50"] for x in o],
        "op99": [x["latency_us"]["all"]["p99"] for x in o],
        "op999": [x["latency_us"]["all"]["p999"] for x in o],
    }
med = lambda v: statistics.median(v)
print(f"orchestrator workload, {conns} connections, {rounds} rounds interleaved; "
      f"open loop at {rate} req/s")
print(f"{'policy':9} {'closed ops/s':>13} {'(spread)':>17} {'vs no':>6} {'srv us/op':>9} "
      f"{'closed p50':>10} {'open p50':>9} {'open p99':>9} {'open p99.9':>10}")
for p, v in rows.items():
    ratio = med(v["ops"]) / med(rows["no"]["ops"])
    print(f"{p:9} {med(v['ops']):13.0f} {min(v['ops']):8.0f}-{max(v['ops']):<8.0f} {ratio:6.2f} "
          f"{med(v['cpu']):9.1f} {med(v['cp50']):10.0f} {med(v['op50']):9.0f} "
          f"{med(v['op99']):9.0f} {med(v['op999']):10.0f}")
EOF
