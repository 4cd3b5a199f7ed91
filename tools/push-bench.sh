#!/usr/bin/env bash
# Push notifications under load (issue: delivery -> notifier POST at 1,000 msgs/s with 10,000
# tokens registered; delivery latency with push on and off). One release-build `relay dev` on
# 127.0.0.1, restarted between runs on the same data, and loadgen with its built-in notifier
# stand-in (plain HTTP on 127.0.0.1:$PUSH_NOTIFIER_PORT, answering 200):
#
#   setup  $PUSH_TOKENS (10000) accounts log in once and register a device token
#   on     notification_url = the stand-in; receivers register tokens too: every delivery
#          notifies. Figures: end of DATA -> POST at the stand-in, end of DATA -> EXISTS
#   off    notification_url empty (the same receivers, tokens and all: deliveries still write
#          their pending notifications, nothing sends them): end of DATA -> EXISTS
#   none   notification_url set, other senders and receivers without tokens (nothing about push
#          happens at all): end of DATA -> EXISTS
# at $PUSH_RATE (1000) msgs/s for $PUSH_DURATION (10) s, 4 senders, $PUSH_RECEIVERS (100) IDLE
# receivers; $PUSH_ROUNDS (3) rounds, the order of the modes rotating; the table gives medians
# over rounds and the median of the per-round ratios.
#
#   tools/push-bench.sh
#   PUSH_RELAY=/path/relay PUSH_LOADGEN=/path/loadgen tools/push-bench.sh   # no cargo
#
# Output: $PUSH_OUT (target/push-bench)/table.md, loadgen JSON per run, the relay's log. Only
# loopback; the relay is stopped by PID on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${PUSH_ROUNDS:-3}
RATE=${PUSH_RATE:-1000}
DURATION=${PUSH_DURATION:-10}
RECEIVERS=${PUSH_RECEIVERS:-100}
TOKENS=${PUSH_TOKENS:-10000}
PORT=${PUSH_NOTIFIER_PORT:-19311}
IO=${PUSH_IO:-epoll}
OUT=${PUSH_OUT:-$ROOT/target/push-bench}
RELAY=${PUSH_RELAY:-$ROOT/target/release/relay}
LOADGEN=${PUSH_LOADGEN:-$ROOT/target/release/loadgen}
log() { echo "[push-bench] $*" >&2; }

if [ -z "${PUSH_RELAY:-}${PUSH_LOADGEN:-}" ]; then
  log "building relay and loadgen (release)"
  CARGO_INCREMENTAL=0 timeout 1800 cargo build --release --locked -p relay -p relay-tools \
    --bin relay --bin loadgen >&2
fi
mkdir -p "$OUT"
TMP=$(mktemp -d)
PID=
stop_relay() {
  [ -n "$PID" ] || return 0
  kill "$PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=
}
trap 'stop_relay; rm -rf "$TMP"' EXIT
start_relay() { # start_relay <notification_url or empty>
  "$RELAY" dev --io "$IO" --data "$TMP/data" \
    --set "notification_url=$1" --set turn_port=0 \
    --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
    --set max_imap_connections=200000 --set max_imap_connections_per_source=200000 \
    --set max_smtp_connections=100000 \
    --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
    --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
    >>"$OUT/relay.log" 2>&1 &
  PID=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/10993) 2>/dev/null && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  log "relay did not start (see $OUT/relay.log)"; exit 1
}
# CPU time (clock ticks, utime + stime) of the relay and of its notifier thread.
ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
notifier_ticks() {
  local t n=0
  for t in /proc/"$PID"/task/*; do
    [ "$(cat "$t/comm" 2>/dev/null)" = notifier ] && n=$(awk '{print $14 + $15}' "$t/stat")
  done
  echo "$n"
}
HZ=$(getconf CLK_TCK)
common=(--senders 4 --receivers "$RECEIVERS" --device-tokens)
load=(--rate "$RATE" --duration "$DURATION" --drain 10)

: >"$OUT/relay.log"
start_relay "http://127.0.0.1:$PORT"
log "registering $TOKENS device tokens"
"$LOADGEN" "${common[@]}" --token-accounts "$TOKENS" --duration 1 --rate 10 --drain 5 >"$OUT/setup.txt"
stop_relay
orders=("on off none" "off none on" "none on off")
for r in $(seq "$ROUNDS"); do
  for mode in ${orders[$(( (r - 1) % 3 ))]}; do
    if [ "$mode" = off ]; then start_relay ""; else start_relay "http://127.0.0.1:$PORT"; fi
    t0=$(ticks); n0=$(notifier_ticks)
    case $mode in
      on)
        "$LOADGEN" "${common[@]}" "${load[@]}" --notifier-port "$PORT" --json "$OUT/on-$r.json" >"$OUT/on-$r.txt" ;;
      off)
        "$LOADGEN" "${common[@]}" "${load[@]}" --json "$OUT/off-$r.json" >"$OUT/off-$r.txt" ;;
      none)
        "$LOADGEN" --senders 4 --receivers "$RECEIVERS" --first $((TOKENS + 1000)) "${load[@]}" \
          --json "$OUT/none-$r.json" >"$OUT/none-$r.txt" ;;
    esac
    echo "$(( $(ticks) - t0 )) $(( $(notifier_ticks) - n0 ))" >"$OUT/cpu-$mode-$r.txt"
    stop_relay
    log "round $r $mode: $(grep -E '^(notify|push) ' "$OUT/$mode-$r.txt" | tr -s ' ' | paste -sd';')"
  done
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR==0) exit; if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
med() { for r in $(seq "$ROUNDS"); do jq -r "($2) // empty" "$OUT/$1-$r.json"; done | median; }
ratio() { for r in $(seq "$ROUNDS"); do # ratio <mode> <mode> <jq>
  a=$(jq -r "$3" "$OUT/$1-$r.json"); b=$(jq -r "$3" "$OUT/$2-$r.json")
  awk "BEGIN{ if ($b > 0) printf \"%.2f\\n\", $a / $b }"; done | median; }
# cpu <mode> <field 1|2> <per jq>: CPU µs (relay or notifier thread) per unit of the run's <per>.
cpu() { for r in $(seq "$ROUNDS"); do
  t=$(cut -d' ' -f"$2" "$OUT/cpu-$1-$r.txt"); n=$(jq -r "$3" "$OUT/$1-$r.json")
  awk "BEGIN{ if ($n > 0) printf \"%.0f\\n\", $t * 1000000 / $HZ / $n }"; done | median; }
row() { # row <label> <jq>
  echo "| $1 | $(med on "$2") | $(med off "$2") | $(med none "$2") | $(ratio on off "$2") | $(ratio on none "$2") |"
}
{
  echo "| $RATE msgs/s, $RECEIVERS receivers, $((TOKENS + RECEIVERS)) tokens, median of $ROUNDS rounds | on | off | none | on/off | on/none |"
  echo "|---|---|---|---|---|---|"
  echo "| end of DATA -> POST at the notifier, p50 ms | $(med on .push_latency.p50_ms) | - | - | - | - |"
  echo "| end of DATA -> POST at the notifier, p99 ms | $(med on .push_latency.p99_ms) | - | - | - | - |"
  echo "| POSTs (of which for no message of the run) / deliveries | $(med on .push_posts) ($(med on .push_unmatched)) / $(med on .delivered) | - | - | - | - |"
  row "end of DATA -> EXISTS, p50 ms" .notify_latency.p50_ms
  row "end of DATA -> EXISTS, p99 ms" .notify_latency.p99_ms
  row "end of DATA -> 250, p50 ms" .submit_latency.p50_ms
  row "end of DATA -> 250, p99 ms" .submit_latency.p99_ms
  echo "| relay CPU per delivered message, µs | $(cpu on 1 .delivered) | $(cpu off 1 .delivered) | $(cpu none 1 .delivered) | - | - |"
  echo "| notifier thread CPU per POST, µs | $(cpu on 2 .push_posts) | - | - | - | - |"
} | tee "$OUT/table.md"
