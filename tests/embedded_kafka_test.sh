#!/usr/bin/env bash
# atpd with its embedded defaults: no brokers configured, so it runs the mock
# cluster in-process and consumes from it. Events produced with kcat become
# visible through atpctl, a bad event lands on the dead-letter topic with its
# reason, and SIGTERM still exits 0. (integration suite)
# Usage: embedded_kafka_test.sh ATPD ATPCTL
set -u
ATPD=$1 ATPCTL=$2
command -v kcat >/dev/null || { echo "kcat not installed"; exit 77; }
dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- atpd log"; cat "$dir/log"; exit 1; }

ATPD_KAFKA_EMBEDDED=yes "$ATPD" --demo --port 0 --port-file "$dir/port" --http-port 0 \
  >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  [ -s "$dir/port" ] && grep -q 'msg=consuming' "$dir/log" && break
  sleep 0.1
done
port=$(cat "$dir/port") || fail "no port file"
boot=$(grep -o 'msg=consuming brokers=[^ ]*' "$dir/log" | head -1 | sed 's/.*brokers=//')
[ -n "$boot" ] || fail "no embedded broker address in the log"

before=$("$ATPCTL" -p "$port" get SKU-000042 -c web -l DC2) || fail "get before"
printf '%s\n' \
  'SKU-000042|{"event_id":"emb-1","type":"adjust","sku":"SKU-000042","loc":"DC2","delta":25,"reason":"receipt"}' \
  'SKU-000042|{"event_id":"emb-1","type":"adjust","sku":"SKU-000042","loc":"DC2","delta":25,"reason":"receipt"}' \
  'SKU-000042|{"event_id":"emb-2","type":"teleport","sku":"SKU-000042","loc":"DC2"}' |
  kcat -P -b "$boot" -t atp.events -K'|' || fail "kcat produce"

want=$((before + 25))
got=$before
for _ in $(seq 100); do
  got=$("$ATPCTL" -p "$port" get SKU-000042 -c web -l DC2) || fail "get after"
  [ "$got" = "$want" ] && break
  sleep 0.1
done
[ "$got" = "$want" ] || fail "availability $got, expected $want (duplicate applied or event lost)"
sleep 0.5
got=$("$ATPCTL" -p "$port" get SKU-000042 -c web -l DC2)
[ "$got" = "$want" ] || fail "availability moved to $got after the duplicate"

dlq=
for _ in $(seq 20); do
  dlq=$(timeout 10 kcat -C -b "$boot" -t atp.events.dlq -e -q -f '%h|%s\n' 2>/dev/null)
  echo "$dlq" | grep -q 'atp-reason' && break
  sleep 0.25
done
echo "$dlq" | grep -q 'atp-reason=unknown-type' || fail "dead letter without its reason: $dlq"
echo "$dlq" | grep -q '"teleport"' || fail "dead letter without the original bytes: $dlq"

kill -TERM "$pid"
wait "$pid"; rc=$?
pid=
[ "$rc" = 0 ] || fail "exit status $rc after SIGTERM"
echo "ok: event visible ($before -> $got), duplicate skipped, dead letter with reason, clean exit"
