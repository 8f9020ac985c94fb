#!/bin/sh
# test_http_integration.sh - atpd's HTTP facade over real sockets (suite
# `integration`).
#
#   test_http_integration.sh ATPD_BIN OPENAPI_YAML
#
# Starts the real atpd with the demo catalogue on ephemeral ports (--port 0,
# --http-port 0, port files) and checks with curl: every endpoint and every
# error class (400 404 405 408 409 413 415 422 431, problem+json members),
# ETag and 304, Idempotency-Key rules and replay, keep-alive, the change
# feed and its wait (held until the wait is over or a change comes); with raw
# sockets (python3): pipelining in order, a slowloris client cut off with 408
# while another client is served, /metrics parsing (promtool when installed,
# and a parser here) with counters that move, every path of openapi.yaml
# answering as documented (status, media type, body against the schema),
# and /readyz turning 503 during a drain (SIGTERM) while the connection
# still answers, then a clean exit.
#
# Needs curl and python3 with PyYAML (Debian: curl, python3-yaml); exits 77
# (skipped) without them. Every process started here is stopped by its pid.
# No assertion on timing except the slowloris bound (the cut-off must come
# within a few seconds of a 1 s request timeout) and the feed's wait, with
# wide margins (answered after about the wait asked, or well before it when a
# change comes).
set -u

ATPD=${1:?atpd binary}
OPENAPI=${2:?openapi.yaml}
command -v curl >/dev/null 2>&1 || { echo "curl not installed: skipped"; exit 77; }
python3 -c 'import yaml' 2>/dev/null || { echo "python3-yaml not installed: skipped"; exit 77; }

T=$(mktemp -d /tmp/atp-http-it.XXXXXX)
PID=""
FAILED=0
PASSED=0

cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill "$PID" 2>/dev/null
        i=0
        while kill -0 "$PID" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -9 "$PID" 2>/dev/null
    fi
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

wait_file() {
    i=0
    while [ ! -s "$1" ] && [ $i -lt 100 ]; do
        sleep 0.1
        i=$((i + 1))
    done
    [ -s "$1" ]
}

"$ATPD" --port 0 --port-file "$T/bin.port" --http-port 0 --http-port-file "$T/http.port" \
    --workers 2 --demo --http-request-timeout 1s --http-max-body 64kb --http-max-header 4kb \
    --shutdown-timeout 5s --drain-delay 2s --dir "$T/data" --kafka-embedded >"$T/atpd.log" 2>&1 &
PID=$!
if ! wait_file "$T/http.port"; then
    echo "atpd did not start:"
    cat "$T/atpd.log"
    exit 1
fi
HP=$(cat "$T/http.port")
BASE="http://127.0.0.1:$HP"
echo "# atpd pid $PID, http port $HP (write-ahead log in $T/data, embedded Kafka broker)"

# Ready once the consumer has its partitions and caught up (a few seconds).
i=0
while [ "$(curl -s -o "$T/ready.body" -w '%{http_code}' "$BASE/readyz")" != 200 ] && [ $i -lt 150 ]; do
    sleep 0.1
    i=$((i + 1))
done
if [ $i -lt 150 ]; then
    ok "readyz 200 once Kafka is assigned and caught up (after $((i / 10)).$((i % 10)) s)"
else
    bad "never ready: $(cat "$T/ready.body")"
fi

# req NAME EXPECT_STATUS CURL_ARGS...: body in $T/NAME.body, headers in
# $T/NAME.hdr; checks the status.
req() {
    name=$1
    want=$2
    shift 2
    code=$(curl -s -o "$T/$name.body" -D "$T/$name.hdr" -w '%{http_code}' "$@")
    if [ "$code" = "$want" ]; then
        return 0
    fi
    bad "$name: status $code, expected $want: $(head -c 300 "$T/$name.body")"
    return 1
}

# jcheck NAME PYTHON_EXPR: the expression holds for the JSON body `j`
# (and the headers dict `h`, lower-case names).
jcheck() {
    name=$1
    expr=$2
    if python3 - "$T/$name.body" "$T/$name.hdr" "$expr" <<'PY'; then
import json, sys
body, hdr, expr = sys.argv[1:4]
raw = open(body, "rb").read()
j = json.loads(raw) if raw else None
h = {}
for line in open(hdr, encoding="latin-1").read().splitlines()[1:]:
    if ":" in line:
        k, v = line.split(":", 1)
        h[k.strip().lower()] = v.strip()
sys.exit(0 if eval(expr) else 1)
PY
        ok "$name"
    else
        bad "$name: ($expr) is false for $(head -c 400 "$T/$name.body")"
    fi
}

# problem NAME STATUS CODE: a problem+json with every member, this code.
problem() {
    jcheck "$1" "h['content-type'] == 'application/problem+json' and j['status'] == $2 and \
j['code'] == '$3' and j['type'].startswith('https://atpd.dev/problems/') and j['title'] and j['detail']"
}

JSON="Content-Type: application/json"

# --- availability ------------------------------------------------------------
req get 200 "$BASE/v1/availability/SKU-000001?channel=web&location=DC1" &&
    jcheck get "j['sku'] == 'SKU-000001' and j['location'] == 'DC1' and j['channel'] == 'web' and \
all(isinstance(j[k], int) for k in ('available','onHand','reserved','allocated','safetyStock')) and \
j['available'] == j['onHand'] - j['reserved'] - j['allocated'] - j['safetyStock'] and \
h['etag'].startswith('\"')"
req net 200 "$BASE/v1/availability/SKU-000001?channel=web" &&
    jcheck net "j['location'] is None and j['onHand'] > 0"
ETAG=$(grep -i '^etag:' "$T/get.hdr" | cut -d' ' -f2 | tr -d '\r')
req etag 304 -H "If-None-Match: $ETAG" "$BASE/v1/availability/SKU-000001?channel=web&location=DC1" &&
    [ ! -s "$T/etag.body" ] && ok "304 with If-None-Match, no body"
req head 200 -I "$BASE/v1/availability/SKU-000001?channel=web&location=DC1" &&
    grep -qi "^content-length: $(wc -c <"$T/get.body")" "$T/head.hdr" && ok "HEAD: same length, no body"
req notfound 404 "$BASE/v1/availability/NO-SUCH?channel=web" && problem notfound 404 enotfound
req badsku 400 "$BASE/v1/availability/bad%20sku?channel=web" && problem badsku 400 einval_sku
req badchan 400 "$BASE/v1/availability/SKU-000001?channel=tv" && problem badchan 400 enochannel
req batch 200 -H "$JSON" -d '{"channel":"web","items":[{"sku":"SKU-000001","location":"DC2"},{"sku":"NOPE"},{"sku":"SKU-000003","channel":"app"}]}' \
    "$BASE/v1/availability:batchGet" &&
    jcheck batch "[r['status'] for r in j['results']] == [200, 404, 200] and \
j['results'][1]['code'] == 'enotfound' and j['results'][2]['channel'] == 'app'"
req batch415 415 -H "Content-Type: text/plain" -d '{}' "$BASE/v1/availability:batchGet" &&
    problem batch415 415 emediatype
req batchbad 400 -H "$JSON" -d '{"items":[' "$BASE/v1/availability:batchGet" &&
    problem batchbad 400 emalformed
req method 405 -X DELETE "$BASE/v1/availability/SKU-000001?channel=web" &&
    jcheck method "j['code'] == 'emethod' and h['allow'] == 'GET, HEAD'"
req nowhere 404 "$BASE/nowhere" && problem nowhere 404 enotfound

# --- reservations -------------------------------------------------------------
# Stock of our own, so the outcome does not depend on the demo quantities.
req stock1 200 -H "$JSON" -d '{"onHand":100}' "$BASE/v1/items/IT-A/DC1:set" &&
    req stock2 200 -H "$JSON" -d '{"onHand":100}' "$BASE/v1/items/IT-B/DC2:set" &&
    req stock3 200 -H "$JSON" -d '{"onHand":3}' "$BASE/v1/items/IT-C/DC1:set" && ok "stock set"
BODY='{"channel":"web","ttlMs":60000,"lines":[{"sku":"IT-A","location":"DC1","qty":2},{"sku":"IT-B","qty":1}]}'
req nokey 400 -H "$JSON" -d "$BODY" "$BASE/v1/reservations" && problem nokey 400 ekey
req resv 201 -H "$JSON" -H "Idempotency-Key: it-order-1" -d "$BODY" "$BASE/v1/reservations" &&
    jcheck resv "j['state'] == 'held' and j['idempotencyKey'] == 'it-order-1' and \
h['location'] == '/v1/reservations/' + j['id'] and 'idempotent-replayed' not in h and \
j['lines'][1]['anyLocation'] is True"
RID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$T/resv.body")
req replay 201 -H "$JSON" -H "Idempotency-Key: it-order-1" -d "$BODY" "$BASE/v1/reservations" &&
    jcheck replay "h.get('idempotent-replayed') == 'true' and j['id'] == '$RID'"
req conflict 422 -H "$JSON" -H "Idempotency-Key: it-order-1" \
    -d '{"channel":"web","lines":[{"sku":"IT-A","qty":5}]}' "$BASE/v1/reservations" &&
    problem conflict 422 econflict
req short 409 -H "$JSON" -H "Idempotency-Key: it-order-2" \
    -d '{"channel":"web","lines":[{"sku":"IT-A","location":"DC1","qty":1},{"sku":"IT-C","location":"DC1","qty":50}]}' \
    "$BASE/v1/reservations" &&
    problem short 409 einsufficient &&
    jcheck short "len(j['shortfalls']) == 1 and j['shortfalls'][0]['line'] == 1 and \
j['shortfalls'][0]['requested'] == 50 and j['shortfalls'][0]['available'] == 1"
req byid 200 "$BASE/v1/reservations/$RID" && jcheck byid "j['id'] == '$RID'"
req bykey 200 "$BASE/v1/reservations?idempotencyKey=it-order-1" && jcheck bykey "j['id'] == '$RID'"
req extend 200 -H "$JSON" -d '{"ttlMs":120000}' "$BASE/v1/reservations/$RID:extend" &&
    jcheck extend "j['state'] == 'held'"
req commit 200 -X POST "$BASE/v1/reservations/$RID:commit" && jcheck commit "j['state'] == 'committed'"
req release 409 -X POST "$BASE/v1/reservations/$RID:release" && problem release 409 estate
req nores 404 "$BASE/v1/reservations/12345678901" && problem nores 404 enotfound

# --- admin ----------------------------------------------------------------------
req adjust 200 -H "$JSON" -d '{"delta":5,"reason":"receipt"}' "$BASE/v1/items/IT-NEW/DC9:adjust" &&
    jcheck adjust "j == {'sku': 'IT-NEW', 'location': 'DC9', 'onHand': 5}"
req set 200 -H "$JSON" -d '{"onHand":40,"seq":7}' "$BASE/v1/items/IT-NEW/DC9:set" &&
    jcheck set "j['onHand'] == 40"
req stale 409 -H "$JSON" -d '{"onHand":1,"seq":6}' "$BASE/v1/items/IT-NEW/DC9:set" &&
    problem stale 409 estale

# --- change feed ------------------------------------------------------------------
# A client's steps: a cursor, then the changes after it, again and again from
# the cursor each answer gives. Items of our own (web: safety 2 per item), so
# the values do not depend on the demo quantities.
cursor_of() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cursor"])' "$T/$1.body"
}
req feed0 200 "$BASE/v1/changes?channel=web" &&
    jcheck feed0 "j['channel'] == 'web' and isinstance(j['cursor'], str) and j['cursor'].isdigit() and \
int(j['cursor']) > 0 and j['more'] is False and j['changes'] == [] and \
h['cache-control'] == 'no-store' and 'etag' not in h and h['content-type'] == 'application/json'"
C0=$(cursor_of feed0)
req feedadj 200 -H "$JSON" -d '{"delta":50}' "$BASE/v1/items/FD-A/DC1:adjust" &&
    req feed1 200 "$BASE/v1/changes?channel=web&since=$C0" &&
    jcheck feed1 "j['changes'] == [{'sku': 'FD-A', 'location': 'DC1', 'available': 48}] and \
j['more'] is False and j['cursor'] != '$C0'"
C1=$(cursor_of feed1)
req feedempty 200 "$BASE/v1/changes?channel=web&since=$C1" &&
    jcheck feedempty "j['changes'] == [] and j['more'] is False"
req feedresv 201 -H "$JSON" -H "Idempotency-Key: it-feed-1" \
    -d '{"channel":"web","ttlMs":600000,"lines":[{"sku":"FD-A","location":"DC1","qty":5}]}' \
    "$BASE/v1/reservations" &&
    req feed2 200 "$BASE/v1/changes?channel=web&since=$C1" &&
    jcheck feed2 "j['changes'] == [{'sku': 'FD-A', 'location': 'DC1', 'available': 43}]"
C2=$(cursor_of feed2)
req feedadj2 200 -H "$JSON" -d '{"delta":10}' "$BASE/v1/items/FD-A/DC2:adjust" &&
    req feednet 200 "$BASE/v1/changes?channel=web&since=$C2&scope=network" &&
    jcheck feednet "j['changes'] == [{'sku': 'FD-A', 'available': 51}]"
req feed3 200 "$BASE/v1/changes?channel=web&since=$C2&scope=item" &&
    jcheck feed3 "j['changes'] == [{'sku': 'FD-A', 'location': 'DC2', 'available': 8}]"
C3=$(cursor_of feed3)
req feedadj3 200 -H "$JSON" -d '{"delta":30}' "$BASE/v1/items/FD-B/DC2:adjust" &&
    req feedadj4 200 -H "$JSON" -d '{"delta":20}' "$BASE/v1/items/FD-C/DC3:adjust" &&
    req feedlim1 200 "$BASE/v1/changes?channel=web&since=$C3&limit=1" &&
    jcheck feedlim1 "len(j['changes']) == 1 and j['more'] is True"
C4=$(cursor_of feedlim1)
req feedlim2 200 "$BASE/v1/changes?channel=web&since=$C4&limit=1" &&
    jcheck feedlim2 "len(j['changes']) == 1 and j['more'] is False"
if python3 - "$T/feedlim1.body" "$T/feedlim2.body" <<'PY2'; then
import json, sys
got = [json.load(open(f))["changes"][0] for f in sys.argv[1:3]]
want = [{"sku": "FD-B", "location": "DC2", "available": 28}, {"sku": "FD-C", "location": "DC3", "available": 18}]
sys.exit(0 if sorted(got, key=lambda c: c["sku"]) == want else 1)
PY2
    ok "feed: limit=1 gave one of the two changed items, the next call the other"
else
    bad "feed: limit=1 pages $(cat "$T/feedlim1.body") $(cat "$T/feedlim2.body")"
fi
req feedbogus 410 "$BASE/v1/changes?channel=web&since=12345" && problem feedbogus 410 ecursor &&
    jcheck feedbogus "j['type'] == 'https://atpd.dev/problems/cursor-expired'"
req feednoch 400 "$BASE/v1/changes?since=$C0" && problem feednoch 400 enochannel
req feedlim0 400 "$BASE/v1/changes?channel=web&limit=0" && problem feedlim0 400 einval
req feedlimbig 400 "$BASE/v1/changes?channel=web&limit=1001" && problem feedlimbig 400 etoomany
req feedscope 400 "$BASE/v1/changes?channel=web&scope=everything" && problem feedscope 400 einval

# --- change feed: waiting for a change (wait=) -----------------------------------
# Timing bounds are wide (a loaded CI machine): only "waited about as long as
# asked" and "answered well before the wait when a change came".
# metric NAME: its value in a scrape now (0 when absent).
metric() {
    curl -s "$BASE/metrics" | awk -v n="$1" '$1 == n { v = $2 } END { print v + 0 }'
}
# secs_between T LO HI: LO <= T < HI (seconds, decimals allowed).
secs_between() {
    awk -v t="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(t + 0 >= lo && t + 0 < hi) }'
}
# timed_feed NAME QUERY LO HI WHAT: GET /v1/changes?QUERY into $T/NAME.body
# and .hdr; ok when 200 within [LO, HI) seconds.
timed_feed() {
    out=$(curl -s -o "$T/$1.body" -D "$T/$1.hdr" -w '%{http_code} %{time_total}' \
        "$BASE/v1/changes?$2")
    code=${out% *}
    secs=${out#* }
    if [ "$code" = 200 ] && secs_between "$secs" "$3" "$4"; then
        ok "$5: answered after $secs s"
    else
        bad "$5: status $code after $secs s (expected 200 after $3 to $4 s)"
    fi
}
WAITS0=$(metric atp_feed_waits_total)
req feedw0 200 "$BASE/v1/changes?channel=web"
CW=$(cursor_of feedw0)
# Nothing changes: the answer comes once the wait is over, with nothing and
# the cursor asked from.
timed_feed feedwait "channel=web&since=$CW&wait=700" 0.6 3 "feed wait=700, nothing new"
jcheck feedwait "j['changes'] == [] and j['more'] is False and j['cursor'] == '$CW' and \
h['cache-control'] == 'no-store'"
# A wait longer than the request timeout (1 s here) is not a slow request.
timed_feed feedwaitlong "channel=web&since=$CW&wait=1500" 1.4 4.5 \
    "feed wait=1500 outlasts the 1 s request timeout (no 408)"
jcheck feedwaitlong "j['changes'] == [] and j['cursor'] == '$CW'"
# A change about 0.3 s into a wait of 5 s: answered with it, well before.
(
    sleep 0.3
    curl -s -o "$T/feedwaitadj.body" -H "$JSON" -d '{"delta":7}' "$BASE/v1/items/FD-W/DC1:adjust"
) &
ADJ=$!
timed_feed feedwoken "channel=web&since=$CW&wait=5000" 0 2.5 \
    "feed wait=5000 with a change after 0.3 s"
wait "$ADJ"
jcheck feedwoken "j['changes'] == [{'sku': 'FD-W', 'location': 'DC1', 'available': 5}] and \
j['cursor'] != '$CW'"
CW2=$(cursor_of feedwoken)
# Requests pipelined behind a held one wait with it, and are answered in order.
if python3 - "$HP" "$CW2" <<'PY3'; then
import socket, sys, time
port, cursor = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
t0 = time.monotonic()
s.sendall(("GET /v1/changes?channel=web&since=%s&wait=600 HTTP/1.1\r\nHost: t\r\n\r\n"
           "GET /livez HTTP/1.1\r\nHost: t\r\n\r\n" % cursor).encode())
buf, answers, first = b"", [], None
while len(answers) < 2:
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
    while b"\r\n\r\n" in buf:
        head, rest = buf.split(b"\r\n\r\n", 1)
        n = 0
        for line in head.split(b"\r\n")[1:]:
            k, v = line.split(b":", 1)
            if k.strip().lower() == b"content-length":
                n = int(v)
        if len(rest) < n:
            break
        answers.append((head.split(b"\r\n")[0], rest[:n]))
        if first is None:
            first = time.monotonic() - t0
        buf = rest[n:]
s.close()
ok = (len(answers) == 2 and answers[0][0].startswith(b"HTTP/1.1 200") and
      b'"changes":[]' in answers[0][1] and answers[1][1] == b'{"status":"ok"}' and first >= 0.5)
if not ok:
    print("# answers %r after %r s" % (answers, first))
sys.exit(0 if ok else 1)
PY3
    ok "feed wait: a request pipelined behind a held one is answered after it, in order"
else
    bad "feed wait: pipelined behind a held request"
fi
req feedwaitbad 400 "$BASE/v1/changes?channel=web&since=$CW2&wait=abc" &&
    problem feedwaitbad 400 einval
req feedwaitneg 400 "$BASE/v1/changes?channel=web&wait=-1" && problem feedwaitneg 400 einval
# A client that gives up (closes) ends its wait: none is left waiting.
curl -s -o /dev/null -m 0.4 "$BASE/v1/changes?channel=web&since=$CW2&wait=20000"
sleep 0.3
WAITS1=$(metric atp_feed_waits_total)
WAITING=$(metric atp_feed_waiting)
if [ "$WAITS1" -ge $((WAITS0 + 4)) ] && [ "$WAITING" -eq 0 ]; then
    ok "metrics: feed waits counted ($WAITS0 -> $WAITS1), none waiting after a client closed"
else
    bad "metrics: atp_feed_waits_total $WAITS0 -> $WAITS1, atp_feed_waiting $WAITING"
fi

# --- limits ----------------------------------------------------------------------
python3 -c 'print("{\"items\":[" + ",".join(["{\"sku\":\"A\"}"] * 12000) + "]}")' >"$T/big.json"
req toolarge 413 -H "$JSON" --data-binary "@$T/big.json" "$BASE/v1/availability:batchGet" &&
    problem toolarge 413 etoolarge
BIGH=$(python3 -c 'print("x" * 5000)')
req bighdr 431 -H "X-Big: $BIGH" "$BASE/livez" && problem bighdr 431 eheaders

# --- keep-alive: one connection for several requests ----------------------------
n=$(curl -s -o /dev/null -o /dev/null -o /dev/null -w '%{num_connects}\n' "$BASE/livez" "$BASE/readyz" \
    "$BASE/v1/availability/SKU-000001?channel=web" | tr '\n' ' ')
[ "$n" = "1 0 0 " ] && ok "keep-alive: 3 requests, 1 connection" || bad "keep-alive: connects $n"

# --- health and metrics ------------------------------------------------------------
req livez 200 "$BASE/livez" && jcheck livez "j['status'] == 'ok'"
req readyz 200 "$BASE/readyz" && jcheck readyz "j['status'] == 'ready'"
req metrics 200 "$BASE/metrics" &&
    grep -q '^atp_requests_total{protocol="http",operation="reserve"} [1-9]' "$T/metrics.body" &&
    ok "metrics count the reserves made"
grep -q '^atp_requests_total{protocol="http",operation="changes"} [1-9][0-9]' "$T/metrics.body" &&
    ok "metrics count the change feed calls made (10 or more)" ||
    bad "metrics: $(grep 'operation="changes"' "$T/metrics.body" | head -3)"
for fam in atp_kafka_consumer_lag atp_kafka_events_total atp_kafka_event_freshness_seconds \
    atp_wal_fsyncs_total atp_connections_open atp_reservation_expiry_lateness_seconds \
    atp_process_open_fds atp_build_info; do
    grep -q "^# TYPE $fam " "$T/metrics.body" || bad "metrics: no family $fam"
done
ok "metrics: Kafka, write-ahead log, connections, expiry, process and build families present"
if command -v promtool >/dev/null 2>&1; then
    if promtool check metrics <"$T/metrics.body" >"$T/promtool.out" 2>&1; then
        ok "promtool check metrics"
    else
        bad "promtool: $(cat "$T/promtool.out")"
    fi
else
    echo "# promtool not installed (Debian package prometheus): only the parser below checks"
fi

# --- sockets: metrics parse and move, pipelining, slowloris, OpenAPI, drain -------
python3 - "$HP" "$OPENAPI" "$PID" <<'PY'
import json, os, re, signal, socket, sys, threading, time
import yaml

port, openapi_path, atpd_pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
failed = 0

def ok(msg):
    print("ok - " + msg)

def bad(msg):
    global failed
    failed += 1
    print("FAIL - " + msg)

class Conn:
    """A keep-alive HTTP/1.1 client over one socket, reading Content-Length bodies."""
    def __init__(self, timeout=5.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def read_response(self, head=False):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        hdr, rest = self.buf.split(b"\r\n\r\n", 1)
        lines = hdr.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        h = {}
        for l in lines[1:]:
            k, v = l.split(":", 1)
            h[k.strip().lower()] = v.strip()
        n = 0 if head or status in (100, 204, 304) else int(h.get("content-length", "0"))
        while len(rest) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                break
            rest += chunk
        body, self.buf = rest[:n], rest[n:]
        if status == 100:
            return self.read_response(head)
        return status, h, body

    def request(self, method, path, body=None, headers=None):
        hs = {"Host": "t"}
        if body is not None:
            hs["Content-Type"] = "application/json"
            hs["Content-Length"] = str(len(body))
        hs.update(headers or {})
        raw = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hs.items()) + "\r\n"
        self.send(raw.encode() + (body or b""))
        return self.read_response(head=(method == "HEAD"))

    def close(self):
        self.s.close()

# --- /metrics: a parser of the text format; counters move --------------------
def scrape():
    c = Conn()
    st, h, body = c.request("GET", "/metrics")
    c.close()
    assert st == 200 and h["content-type"].startswith("text/plain; version=0.0.4")
    fams, samples, cur = {}, {}, None
    for line in body.decode().splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            if name in fams:
                raise ValueError("family typed twice: " + name)
            fams[name] = typ
            cur = name
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
        if not m:
            raise ValueError("bad line: " + line)
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name) if fams.get(cur) == "histogram" else name
        if base != cur and name != cur:
            raise ValueError("sample outside its family: " + line)
        samples[name + (m.group(2) or "")] = float(m.group(3))
    return fams, samples

try:
    fams, before = scrape()
    if all(n.startswith("atp_") for n in fams) and all(
            not (t == "counter") or n.endswith("_total") for n, t in fams.items()):
        ok("metrics: %d families, atp_ prefix, counters end in _total" % len(fams))
    else:
        bad("metrics naming")
    key = 'atp_requests_total{protocol="http",operation="get"}'
    c = Conn()
    for _ in range(5):
        st, _, _ = c.request("GET", "/v1/availability/SKU-000001?channel=web")
    c.close()
    _, after = scrape()
    if after[key] >= before[key] + 5 and \
       after['atp_request_duration_seconds_count{protocol="http",operation="get"}'] >= before[key] + 5:
        ok("metrics: http get counter and histogram moved by 5")
    else:
        bad("metrics did not move: %s -> %s" % (before.get(key), after.get(key)))
    if after.get('atp_connections_accepted_total', 0) > before.get('atp_connections_accepted_total', 0):
        ok("metrics: connections accepted moved")
    else:
        bad("metrics: connections accepted did not move")
except Exception as e:
    bad("metrics parse: %r" % e)

# --- pipelining: three requests in one write, answers in order ------------------
c = Conn()
reqs = (b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"
        b"GET /v1/availability/NOPE?channel=web HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /v1/availability:batchGet HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 43\r\n\r\n{\"channel\":\"web\",\"items\":[{\"sku\":\"SKU-1\"}]}")
c.send(reqs * 20)
got = [c.read_response()[0] for _ in range(60)]
if got == [200, 404, 200] * 20:
    ok("pipelining: 60 requests in one write answered in order")
else:
    bad("pipelining: statuses %s" % got[:9])
# and split at every byte boundary of one request
one = b"GET /v1/availability/SKU-000001?channel=web HTTP/1.1\r\nHost: t\r\n\r\n"
for i in range(0, len(one), 7):
    c.send(one[i:i + 7])
    time.sleep(0.002)
r = c.read_response()
if r and r[0] == 200 and b'"onHand"' in r[2]:
    ok("a request arriving in 7-byte pieces")
else:
    bad("split request: %r" % (r,))
c.close()

# --- slowloris: cut off with 408 while another client is served ---------------
slow = Conn(timeout=10)
slow.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n")
t0 = time.monotonic()
served, cut, answer = 0, None, b""
fast = Conn()
while time.monotonic() - t0 < 6:
    try:
        slow.send(b"X-Slow: a\r\n")  # a header line every 100 ms, never the end
    except OSError:
        pass
    st = fast.request("GET", "/v1/availability/SKU-000001?channel=web")[0]
    served += st == 200
    slow.s.settimeout(0.1)
    try:
        data = slow.s.recv(65536)
        answer += data
        if data == b"" or b"\r\n\r\n" in answer:
            cut = time.monotonic() - t0
            break
    except socket.timeout:
        pass
fast.close()
if cut is not None and answer.startswith(b"HTTP/1.1 408") and b"request-timeout" in answer and cut < 4:
    ok("slowloris cut off with 408 after %.1f s (timeout 1 s); %d other requests served meanwhile" % (cut, served))
else:
    bad("slowloris: cut=%r answer=%r" % (cut, answer[:120]))
if served > 5:
    ok("the other client was served while the slow one dribbled")
else:
    bad("other client served only %d times" % served)
slow.close()
_, after408 = scrape()
k408 = 'atp_request_errors_total{protocol="http",operation="other",code="etimedout"}'
if after408.get(k408, 0) >= 1:
    ok("metrics: the 408 counted as an http etimedout error (%d)" % after408[k408])
else:
    bad("metrics: no %s after a 408" % k408)

# --- every path of openapi.yaml answers as documented ----------------------------
spec = yaml.safe_load(open(openapi_path))

def resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/")
        node = spec
        for part in ref[2:].split("/"):
            node = node[part]
    return node

def validate(value, schema, where):
    """A small JSON Schema check: $ref, allOf, type (with null), required,
    properties, items, enum, minimum. Returns a list of complaints."""
    schema = resolve(schema)
    errs = []
    for sub in schema.get("allOf", []):
        errs += validate(value, sub, where)
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        pytypes = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
                   "object": dict, "array": list, "null": type(None)}
        if not any(isinstance(value, pytypes[x]) and not (x in ("integer", "number") and isinstance(value, bool))
                   for x in types):
            return errs + ["%s: %r is not %s" % (where, value, t)]
    if "enum" in schema and value not in schema["enum"]:
        errs.append("%s: %r not in %s" % (where, value, schema["enum"]))
    if isinstance(value, (int, float)) and "minimum" in schema and value < schema["minimum"]:
        errs.append("%s: %r < minimum" % (where, value))
    if isinstance(value, dict):
        for k in schema.get("required", []):
            if k not in value:
                errs.append("%s: missing %s" % (where, k))
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                errs += validate(value[k], sub, where + "." + k)
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += validate(v, schema["items"], "%s[%d]" % (where, i))
    return errs

def example_of(param):
    param = resolve(param)
    return param.get("example", resolve(param.get("schema", {})).get("example"))

def fresh_reservation(key):
    c = Conn()
    body = json.dumps({"channel": "web", "lines": [{"sku": "SKU-000020", "qty": 1}]}).encode()
    st, h, b = c.request("POST", "/v1/reservations", body, {"Idempotency-Key": key})
    c.close()
    assert st == 201, (st, b)
    return json.loads(b)["id"]

checked = 0
n = 0
for path, item in spec["paths"].items():
    common = item.get("parameters", [])
    for method in ("get", "post", "put", "delete", "patch"):
        if method not in item:
            continue
        op = item[method]
        n += 1
        params = [resolve(p) for p in common + op.get("parameters", [])]
        url = path
        query, headers = [], {}
        for p in params:
            v = example_of(p)
            if p["in"] == "path":
                if p["name"] == "id":
                    v = fresh_reservation("openapi-%d" % n)
                url = url.replace("{%s}" % p["name"], str(v))
            elif p["in"] == "query" and p.get("required"):
                query.append("%s=%s" % (p["name"], v))
            elif p["in"] == "header" and p.get("required"):
                headers[p["name"]] = "openapi-key-%d" % n if p["name"] == "Idempotency-Key" else v
        if query:
            url += "?" + "&".join(query)
        body = None
        if "requestBody" in op:
            media = op["requestBody"]["content"]["application/json"]
            body = json.dumps(media["example"]).encode()
        if path == "/v1/reservations" and method == "get":
            c0 = Conn()
            c0.request("POST", "/v1/reservations",
                       json.dumps({"channel": "web", "lines": [{"sku": "SKU-000021", "qty": 1}]}).encode(),
                       {"Idempotency-Key": "order-123"})
            c0.close()
        c = Conn()
        st, h, b = c.request(method.upper(), url, body, headers)
        documented = op["responses"]
        label = "%s %s" % (method.upper(), path)
        if str(st) not in documented:
            bad("%s: status %d not documented (%s)" % (label, st, b[:200]))
            c.close()
            continue
        if not (200 <= st < 300):
            bad("%s: the documented example got %d: %s" % (label, st, b[:200]))
            c.close()
            continue
        resp = resolve(documented[str(st)])
        content = resp.get("content", {})
        ctype = h.get("content-type", "").split(";")[0]
        if content and ctype not in content:
            bad("%s: content type %s not documented (%s)" % (label, ctype, list(content)))
        elif ctype == "application/json":
            errs = validate(json.loads(b), content[ctype]["schema"], label)
            if errs:
                bad("; ".join(errs[:5]))
            else:
                checked += 1
        else:
            checked += 1
        # A method the path does not have: 405, documented, with Allow.
        wrong = "DELETE"
        st2, h2, b2 = c.request(wrong, url)
        if st2 == 405 and "405" in documented and "allow" in h2 and \
                json.loads(b2)["code"] == "emethod":
            checked += 1
        else:
            bad("%s: DELETE got %d (405 documented: %s)" % (label, st2, "405" in documented))
        c.close()
if n >= 13 and checked == 2 * n:
    ok("openapi.yaml: all %d operations answer their example as documented (schema-checked), and 405 otherwise" % n)
else:
    bad("openapi.yaml: %d operations, %d checks passed" % (n, checked))

# --- /readyz turns 503 during a drain, the connection still answers -------------
c = Conn()
st0 = c.request("GET", "/readyz")[0]
os.kill(atpd_pid, signal.SIGTERM)
seen, live, t0 = None, None, time.monotonic()
while time.monotonic() - t0 < 3:
    r = c.request("GET", "/readyz")
    if r is None:
        break
    if r[0] == 503:
        seen = json.loads(r[2])
        live = c.request("GET", "/livez")
        break
    time.sleep(0.002)
c.close()
if st0 == 200 and seen and seen.get("reason") == "draining" and live and live[0] == 200:
    ok("readyz 200 before SIGTERM, 503 draining after it (livez still 200)")
else:
    bad("readyz during drain: before %s, after %r, livez %r" % (st0, seen, live and live[0]))
# drain-delay 2s: new connections are still accepted and served meanwhile, and
# their /readyz says draining, so a load balancer takes the instance out first.
n = Conn()
rz = n.request("GET", "/readyz")
av = n.request("GET", "/v1/availability/SKU-000001?channel=web")
n.close()
elapsed = time.monotonic() - t0
if rz and rz[0] == 503 and json.loads(rz[2]).get("reason") == "draining" and av and av[0] == 200 \
        and elapsed < 1.8:
    ok("during the drain delay a new connection is served (readyz 503 draining, a lookup 200)")
else:
    bad("drain delay: readyz %r, lookup %r, %.2f s after SIGTERM" % (rz and rz[0], av and av[0], elapsed))
sys.exit(1 if failed else 0)
PY
[ $? -eq 0 ] && ok "socket-level checks" || bad "socket-level checks"

# --- atpd exits 0 after the drain -------------------------------------------------
i=0
while kill -0 "$PID" 2>/dev/null && [ $i -lt 100 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$PID" 2>/dev/null; then
    bad "atpd still running 10 s after SIGTERM"
else
    wait "$PID"
    rc=$?
    [ $rc -eq 0 ] && ok "atpd drained and exited 0" || bad "atpd exit status $rc"
    PID=""
fi

echo "# $PASSED passed, $FAILED failed"
if [ $FAILED -ne 0 ]; then
    echo "# atpd log:"
    tail -20 "$T/atpd.log"
    exit 1
fi
exit 0
