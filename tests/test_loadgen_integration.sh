#!/bin/sh
# test_loadgen_integration.sh - atp-loadgen against real servers.
#
#   test_loadgen_integration.sh atpd  ATPD_BIN LOADGEN_BIN [DEVBROKER_BIN]
#   test_loadgen_integration.sh redis LOADGEN_BIN
#   test_loadgen_integration.sh nginx LOADGEN_BIN
#
# atpd mode: starts atpd on an ephemeral port (--port 0 --port-file) with the
# demo catalogue, runs every workload for about a second (and the ingest
# workload's producer against atp-devbroker when given), and checks that the
# JSON output parses and its counts add up, that the oversell check passes,
# and that bad input is refused with the documented exit status.
# redis mode: the same for the resp driver against a redis-server started on
# a free port; exit 77 (skipped) when redis-server is not installed.
# nginx mode: the HTTP driver against nginx closing keep-alive connections
# (reopened, nothing lost); exit 77 when nginx is not installed.
#
# Every server the test starts is stopped by its pid. Nothing here asserts a
# timing: the runs are short and the machine may be busy.
set -u

MODE=${1:?mode}
shift
T=$(mktemp -d /tmp/atp-lg-it.XXXXXX)
PIDS=""
FAILED=0
PASSED=0

cleanup() {
    for p in $PIDS; do
        kill "$p" 2>/dev/null
    done
    for p in $PIDS; do
        # wait up to ~5 s, then force
        i=0
        while kill -0 "$p" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -9 "$p" 2>/dev/null
    done
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ok() {
    PASSED=$((PASSED + 1))
    echo "ok - $*"
}
bad() {
    FAILED=$((FAILED + 1))
    echo "FAIL - $*"
}

# check_json FILE EXPECT_JSON: the JSON parses, counts add up, and the
# expectations (ops present, error statuses allowed, mode, verify) hold.
check_json() {
    python3 - "$1" "$2" <<'PY'
import json, sys
path, expect = sys.argv[1], json.loads(sys.argv[2])
d = json.load(open(path))
errs = []
def need(cond, msg):
    if not cond:
        errs.append(msg)
need(d.get("schema") == "atp-loadgen/1", "schema")
cfg = d["config"]
need(cfg["mode"] == expect.get("mode", "open-loop"), "mode %s" % cfg["mode"])
need(cfg["workload"]["name"] == expect["workload"], "workload name")
need(cfg["protocol"] == expect["protocol"], "protocol")
ops, lat, req, er = d["ops"], d["latency_us"], d["requests"], d["errors"]
tot = {"sent": 0, "ok": 0, "errors": 0, "unanswered": 0}
for name, o in ops.items():
    if name == "freshness":
        continue
    need(o["sent"] == o["ok"] + o["errors"] + o["unanswered"],
         "%s: sent %d != ok %d + errors %d + unanswered %d"
         % (name, o["sent"], o["ok"], o["errors"], o["unanswered"]))
    for k in tot:
        tot[k] += o[k]
    l = lat[name]
    need(l["p50"] <= l["p90"] <= l["p99"] <= l["p999"] <= l["max"], "%s: percentiles not ordered" % name)
    need(l["count"] == o["ok"] + o["errors"], "%s: histogram count %d" % (name, l["count"]))
for k in tot:
    need(req[k] == tot[k], "requests.%s %d != sum over ops %d" % (k, req[k], tot[k]))
need(req["completed"] == req["ok"] + req["errors"], "completed")
need(er["total"] == req["errors"], "errors.total")
need(sum(er["by_status"].values()) == er["total"], "errors.by_status does not add up")
need(sum(sum(m.values()) for m in er["by_op"].values()) == er["total"], "errors.by_op")
for st in er["by_status"]:
    need(st in expect.get("allowed_errors", []), "unexpected error status %s (%d)" % (st, er["by_status"][st]))
need(d["duration_s"] > 0, "duration")
if d["duration_s"] > 0:
    want = req["completed"] / d["duration_s"]
    need(abs(d["ops_per_sec"] - want) <= 0.01 * want + 1e-9, "ops_per_sec %f vs %f" % (d["ops_per_sec"], want))
need(all(k in lat["all"] for k in ("p50", "p90", "p99", "p999", "max")), "latency_us.all keys")
for name in expect.get("ops", []):
    need(name in ops and ops[name]["ok"] > 0, "no successful %s" % name)
if "exact_sent" in expect:
    need(req["sent"] == expect["exact_sent"], "sent %d, want %d" % (req["sent"], expect["exact_sent"]))
if expect.get("verify"):
    v = d.get("verify")
    need(v is not None and v["ok"] and v["oversold"] == 0, "verify: %s" % v)
    if v:
        need(v["granted"] == v["server_granted"], "granted %d != server_granted %d" % (v["granted"], v["server_granted"]))
        need(v["granted"] > 0, "nothing granted")
need("client_us_per_request" in d["cpu"], "cpu")
# open loop: the send delay and the client's own part of it, never larger
if cfg["mode"] == "open-loop" and req["sent"] > 0 and cfg["protocol"] != "kafka":
    sd, cd = d.get("send_delay_us"), d.get("client_delay_us")
    need(sd is not None and cd is not None, "send_delay_us / client_delay_us missing")
    if sd and cd:
        need(cd["count"] == sd["count"], "client_delay count %s vs %s" % (cd["count"], sd["count"]))
        need(cd["p50"] <= sd["p50"] * 1.01 + 0.01 and cd["max"] <= sd["max"] * 1.01 + 0.01,
             "client delay above the send delay: %s vs %s" % (cd, sd))
# the machine's share of busy and stolen CPU time (Linux always has /proc/stat)
if d["duration_s"] >= 0.5:
    for k in ("machine_busy_fraction", "machine_steal_fraction"):
        need(k in d["cpu"] and 0 <= d["cpu"][k] <= 1, "cpu.%s: %s" % (k, d["cpu"].get(k)))
if errs:
    print("; ".join(errs))
    sys.exit(1)
PY
}

# run NAME EXPECT_JSON ARGS...: one short run, then its checks.
run() {
    name=$1
    expect=$2
    shift 2
    "$LG" -s 127.0.0.1 -p "$PORT" --json-out-file "$T/$name.json" "$@" >"$T/$name.out" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
        bad "$name: exit status $rc"
        sed 's/^/    /' "$T/$name.out"
        return
    fi
    if msg=$(check_json "$T/$name.json" "$expect"); then
        ok "$name"
    else
        bad "$name: $msg"
        sed 's/^/    /' "$T/$name.out"
    fi
}

wait_file() {
    i=0
    while [ ! -s "$1" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -s "$1" ]
}

atpd_mode() {
    ATPD=$1
    LG=$2
    DEVBROKER=${3:-}
    # A Kafka broker first (when given), so atpd consumes the events that the
    # ingest workload produces and its freshness probe can see them.
    KAFKA_ARGS=""
    BROKERS=""
    if [ -n "$DEVBROKER" ]; then
        "$DEVBROKER" -t inventory >"$T/broker.out" 2>"$T/broker.err" &
        PIDS="$PIDS $!"
        if wait_file "$T/broker.out"; then
            BROKERS=$(head -n1 "$T/broker.out")
            if "$ATPD" --help 2>&1 | grep -q -- "--kafka-brokers"; then
                KAFKA_ARGS="--kafka-brokers $BROKERS --kafka-topic inventory"
            fi
        else
            bad "atp-devbroker did not start"
        fi
    fi
    HTTP_ARGS=""
    if "$ATPD" --help 2>&1 | grep -q -- "--http-port-file"; then
        HTTP_ARGS="--http-port 0 --http-port-file $T/atpd.http.port"
    fi
    # shellcheck disable=SC2086 # HTTP_ARGS is a list of words
    "$ATPD" --port 0 --port-file "$T/atpd.port" $HTTP_ARGS $KAFKA_ARGS --demo --workers 1 \
        --max-reservations 2000000 >"$T/atpd.log" 2>&1 &
    PIDS="$PIDS $!"
    if ! wait_file "$T/atpd.port" || { [ -n "$HTTP_ARGS" ] && ! wait_file "$T/atpd.http.port"; }; then
        echo "atpd did not start:"
        cat "$T/atpd.log"
        exit 1
    fi
    PORT=$(cat "$T/atpd.port")
    P=bin

    run checkout "{\"workload\":\"checkout\",\"protocol\":\"$P\",\"ops\":[\"get\",\"reserve\",\"commit\"]}" \
        --workload checkout --test-time 1 -R 5000
    run orchestrator "{\"workload\":\"orchestrator\",\"protocol\":\"$P\",\"ops\":[\"reserve\",\"commit\",\"release\"]}" \
        --workload orchestrator --test-time 1 -R 2000
    run marketplace-poll "{\"workload\":\"marketplace-poll\",\"protocol\":\"$P\",\"ops\":[\"mget\"]}" \
        --workload marketplace-poll --test-time 1 -R 500 -c 8
    run flash-sale "{\"workload\":\"flash-sale\",\"protocol\":\"$P\",\"ops\":[\"reserve\"],\"verify\":true,\"allowed_errors\":[\"EINSUFFICIENT\"]}" \
        --workload flash-sale --test-time 1 -R 10000
    if grep -q "oversell check: PASS oversold=0" "$T/flash-sale.out"; then
        ok "flash-sale prints oversold=0"
    else
        bad "flash-sale: no 'oversold=0' line"
    fi
    run closed-pipelined "{\"workload\":\"checkout\",\"protocol\":\"$P\",\"mode\":\"closed-loop\",\"ops\":[\"get\"]}" \
        --workload checkout -W setup=none --closed-loop --pipeline 8 -c 4 --test-time 1 \
        --hdr-file-prefix "$T/h"
    if grep -q "^CLOSED LOOP" "$T/closed-pipelined.out" && [ -s "$T/h_get.hgrm" ] && [ -s "$T/h_all.hgrm" ]; then
        ok "closed loop labelled, .hgrm files written"
    else
        bad "closed loop label or .hgrm files missing"
    fi
    # -n: exactly connections x n new requests (lookups only, so no follow-ups).
    run requests-n "{\"workload\":\"checkout\",\"protocol\":\"$P\",\"mode\":\"closed-loop\",\"ops\":[\"get\"],\"exact_sent\":400}" \
        --workload checkout -W setup=none -W reserve_proportion=0 --closed-loop -c 4 -n 100
    # A tiny sweep writes the CSV and the gnuplot script.
    if "$LG" -p "$PORT" --workload checkout -W setup=none --sweep 1000:2000:1000 --test-time 0.3 \
        --sweep-prefix "$T/sw" -q >"$T/sweep.out" 2>&1 &&
        [ "$(wc -l <"$T/sw.csv")" -eq 3 ] && grep -q "plot '" "$T/sw.gp"; then
        ok "sweep writes CSV and gnuplot script"
    else
        bad "sweep"
        cat "$T/sweep.out"
    fi

    # The same workloads over atpd's HTTP facade, when this atpd has one.
    if [ -n "$HTTP_ARGS" ]; then
        BINPORT=$PORT
        PORT=$(cat "$T/atpd.http.port")
        run http-checkout "{\"workload\":\"checkout\",\"protocol\":\"http\",\"ops\":[\"get\",\"reserve\",\"commit\"]}" \
            -P http --workload checkout -W setup=none --test-time 1 -R 2000 -c 10
        run http-orchestrator "{\"workload\":\"orchestrator\",\"protocol\":\"http\",\"ops\":[\"reserve\",\"commit\",\"release\"]}" \
            -P http --workload orchestrator -W setup=none --test-time 1 -R 500 -c 10
        run http-mget "{\"workload\":\"marketplace-poll\",\"protocol\":\"http\",\"ops\":[\"mget\"]}" \
            -P http --workload marketplace-poll --test-time 1 -R 50 -c 4
        run http-flash-sale "{\"workload\":\"flash-sale\",\"protocol\":\"http\",\"ops\":[\"reserve\"],\"verify\":true,\"allowed_errors\":[\"HTTP_409\"]}" \
            -P http --workload flash-sale -W sku_prefix=HFLASH- --test-time 1 -R 5000 -c 20
        PORT=$BINPORT
    else
        echo "# this atpd has no HTTP facade: HTTP runs skipped"
    fi

    # Bad input: a workload line is refused with its number, exit status 2.
    printf 'name = broken\nrecordcount = many\n' >"$T/broken"
    "$LG" -p "$PORT" --workload "$T/broken" >"$T/broken.out" 2>&1
    rc=$?
    if [ $rc -eq 2 ] && grep -q "line 2: recordcount" "$T/broken.out"; then
        ok "bad workload line refused with its line number"
    else
        bad "bad workload: status $rc: $(cat "$T/broken.out")"
    fi
    "$LG" -p "$PORT" --pipeline 0 >"$T/badflag.out" 2>&1
    [ $? -eq 2 ] && ok "bad flag refused" || bad "bad flag accepted"

    # Kafka: the producer alone, then (when atpd consumes) with the
    # freshness probe, which must see its events through atpd's lookups.
    if [ -n "$BROKERS" ]; then
        run ingest "{\"workload\":\"ingest\",\"protocol\":\"kafka\",\"ops\":[\"produce\"]}" \
            --protocol kafka --kafka-brokers "$BROKERS" --workload ingest \
            -W probe_interval_ms=0 --test-time 1 -R 2000
        if [ -n "$KAFKA_ARGS" ]; then
            run ingest-freshness "{\"workload\":\"ingest\",\"protocol\":\"kafka\",\"ops\":[\"produce\",\"freshness\"]}" \
                --protocol kafka --kafka-brokers "$BROKERS" --workload ingest \
                -W probe_interval_ms=20 --warmup-time 1 --test-time 2 -R 1000
        else
            echo "# this atpd does not consume Kafka: freshness skipped"
        fi
    fi
}

redis_mode() {
    LG=$1
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis-server is not installed: skipped"
        exit 77
    fi
    # Redis cannot bind port 0 and report it, so take a free ephemeral port
    # from the kernel and start Redis on it (retried if someone races us).
    for attempt in 1 2 3; do
        PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no >"$T/redis.log" 2>&1 &
        RPID=$!
        i=0
        while [ $i -lt 50 ] && ! redis-cli -p "$PORT" ping >/dev/null 2>&1; do
            sleep 0.1
            i=$((i + 1))
        done
        if redis-cli -p "$PORT" ping >/dev/null 2>&1; then
            PIDS="$PIDS $RPID"
            break
        fi
        kill "$RPID" 2>/dev/null
        wait "$RPID" 2>/dev/null
        PORT=""
    done
    if [ -z "$PORT" ]; then
        echo "redis-server did not start:"
        cat "$T/redis.log"
        exit 1
    fi
    P=resp
    run resp-checkout "{\"workload\":\"checkout\",\"protocol\":\"$P\",\"ops\":[\"get\",\"reserve\",\"commit\"]}" \
        -P resp --workload checkout -W recordcount=20000 --test-time 1 -R 3000
    run resp-checkout-lua "{\"workload\":\"checkout\",\"protocol\":\"$P\",\"ops\":[\"get\"]}" \
        -P resp --workload checkout -W recordcount=20000 -W setup=none -W resp_lookup_lua=true \
        -W reserve_proportion=0 --test-time 1 -R 3000
    run resp-orchestrator "{\"workload\":\"orchestrator\",\"protocol\":\"$P\",\"ops\":[\"reserve\",\"commit\",\"release\"]}" \
        -P resp --workload orchestrator -W recordcount=20000 -W setup=none --test-time 1 -R 1000
    run resp-mget "{\"workload\":\"marketplace-poll\",\"protocol\":\"$P\",\"ops\":[\"mget\"]}" \
        -P resp --workload marketplace-poll -W recordcount=20000 -W setup=set --test-time 1 -R 200 -c 4
    run resp-flash-sale "{\"workload\":\"flash-sale\",\"protocol\":\"$P\",\"ops\":[\"reserve\"],\"verify\":true,\"allowed_errors\":[\"EINSUFFICIENT\"]}" \
        -P resp --workload flash-sale --test-time 1 -R 8000
}

# nginx mode: the HTTP driver against nginx `return 200`, which closes every
# keep-alive connection after 50 requests: connections must be reopened and,
# at pipeline 1, no request lost.
nginx_mode() {
    LG=$1
    if ! command -v nginx >/dev/null 2>&1; then
        echo "nginx is not installed: skipped"
        exit 77
    fi
    mkdir -p "$T/nginx"
    for attempt in 1 2 3; do
        PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
        {
            echo "daemon off; master_process off; worker_processes 1;"
            echo "pid $T/nginx/nginx.pid; error_log $T/nginx/error.log;"
            echo "events { worker_connections 256; }"
            echo "http { access_log off; keepalive_requests 50;"
            echo "  client_body_temp_path $T/nginx; proxy_temp_path $T/nginx; fastcgi_temp_path $T/nginx;"
            echo "  uwsgi_temp_path $T/nginx; scgi_temp_path $T/nginx;"
            echo "  server { listen 127.0.0.1:$PORT; location / { return 200 '{\"available\":1}'; } } }"
        } >"$T/nginx/nginx.conf"
        nginx -c "$T/nginx/nginx.conf" -p "$T/nginx" >"$T/nginx.log" 2>&1 &
        NPID=$!
        i=0
        while [ $i -lt 50 ] &&
            ! python3 -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; do
            sleep 0.1
            i=$((i + 1))
        done
        if kill -0 "$NPID" 2>/dev/null && [ $i -lt 50 ]; then
            PIDS="$PIDS $NPID"
            break
        fi
        kill "$NPID" 2>/dev/null
        wait "$NPID" 2>/dev/null
        PORT=""
    done
    if [ -z "$PORT" ]; then
        echo "nginx did not start:"
        cat "$T/nginx.log" "$T/nginx/error.log" 2>/dev/null
        exit 1
    fi
    run nginx-reconnect '{"workload":"checkout","protocol":"http","mode":"closed-loop","ops":["get"]}' \
        -P http --workload checkout -W setup=none -W reserve_proportion=0 --closed-loop -c 4 --test-time 1
    if python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["requests"]
print(r)
# a close after the end of the window is not reopened: at most one per connection (-c 4)
sys.exit(0 if r["connections_lost"] > 0 and 0 <= r["connections_lost"] - r["reconnects"] <= 4
         and r["server_closes"] == r["connections_lost"] and r["errors"] == 0 else 1)
' "$T/nginx-reconnect.json"; then
        ok "closed keep-alive connections reopened, nothing lost"
    else
        bad "reconnect accounting"
    fi
}

case "$MODE" in
atpd) atpd_mode "$@" ;;
redis) redis_mode "$@" ;;
nginx) nginx_mode "$@" ;;
*)
    echo "unknown mode $MODE"
    exit 2
    ;;
esac

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
