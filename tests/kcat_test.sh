#!/bin/sh
# kcat_test.sh - events produced with kcat reach the store (suite integration).
#
#   kcat_test.sh ATP_DEVBROKER KCAT_PROBE
#
# Starts atp-devbroker (the standalone embedded broker), produces events with
# kcat (keyed by sku, the way a user would from the README), lets kcat_probe
# consume them through the ingest module and checks what the store shows and
# what reached the dead-letter topic. Skips (77) without kcat. Every process
# it starts is stopped by its pid; every wait is bounded.
set -u

DEVBROKER=$1
PROBE=$2
command -v kcat >/dev/null 2>&1 || { echo "kcat not installed: skipped"; exit 77; }

WORK=$(mktemp -d)
BROKER_PID=
cleanup() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null
        wait "$BROKER_PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

fail() {
    echo "FAIL: $*"
    exit 1
}

"$DEVBROKER" -p 2 -t atp.events >"$WORK/bootstrap" 2>"$WORK/broker.err" &
BROKER_PID=$!
i=0
while [ ! -s "$WORK/bootstrap" ] && [ $i -lt 50 ]; do
    sleep 0.1
    i=$((i + 1))
done
B=$(head -n 1 "$WORK/bootstrap")
case "$B" in
127.0.0.1:*) ;;
*) fail "atp-devbroker printed no bootstrap address: $(cat "$WORK/broker.err")" ;;
esac
echo "dev broker at $B (pid $BROKER_PID)"

# Seven messages: three receipts, a retried one (same event_id), a pick, a
# count (set), and a line that is not JSON.
cat >"$WORK/events" <<'EVENTS'
SKU-1|{"event_id":"k1","type":"adjust","sku":"SKU-1","loc":"DC1","delta":10,"reason":"receipt"}
SKU-1|{"event_id":"k2","type":"adjust","sku":"SKU-1","loc":"DC1","delta":5,"reason":"receipt"}
SKU-2|{"event_id":"k3","type":"adjust","sku":"SKU-2","loc":"DC2","delta":7,"reason":"receipt"}
SKU-2|{"event_id":"k3","type":"adjust","sku":"SKU-2","loc":"DC2","delta":7,"reason":"receipt"}
SKU-1|{"event_id":"k4","type":"adjust","sku":"SKU-1","loc":"DC1","delta":-3,"reason":"pick"}
SKU-3|{"event_id":"k5","type":"set","sku":"SKU-3","loc":"DC1","on_hand":42,"seq":1}
SKU-3|this is not an event
EVENTS
timeout 20 kcat -b "$B" -t atp.events -P -K'|' -l "$WORK/events" || fail "kcat could not produce"

timeout 30 "$PROBE" "$B" atp.events 7 SKU-1/DC1 SKU-2/DC2 SKU-3/DC1 >"$WORK/probe" ||
    { cat "$WORK/probe"; fail "kcat_probe did not consume 7 messages"; }
cat "$WORK/probe"
grep -qx 'consumed=7 applied=5 duplicates=1 stale=0 dead=1 ready=1' "$WORK/probe" || fail "counters"
grep -qx 'SKU-1 DC1 on_hand=12' "$WORK/probe" || fail "SKU-1"
grep -qx 'SKU-2 DC2 on_hand=7' "$WORK/probe" || fail "SKU-2 (the retry must apply once)"
grep -qx 'SKU-3 DC1 on_hand=42' "$WORK/probe" || fail "SKU-3"

# The bad line is on the dead-letter topic, bytes and reason intact.
timeout 20 kcat -b "$B" -t atp.events.dlq -C -e -q -f '%k|%s|%h\n' >"$WORK/dlq" 2>&1 ||
    fail "kcat could not read the dead-letter topic"
cat "$WORK/dlq"
grep -q '^SKU-3|this is not an event|.*atp-reason=not-json' "$WORK/dlq" || fail "dead letter"
grep -q 'atp-source-topic=atp.events' "$WORK/dlq" || fail "dead letter source header"

echo "ok"
