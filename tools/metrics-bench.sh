#!/usr/bin/env bash
# The cost of metrics on submission throughput: the same closed-loop load (loadgen, as the
# throughput scenario of tools/bench-compare.sh) against `relay dev --io epoll` with the metrics
# listener off and on, rounds alternating off/on in one sitting; while on, /metrics is scraped
# every $BENCH_SCRAPE_INTERVAL seconds (0.1: 150 times Prometheus' default rate of 15 s). Prints
# the median of each and their ratio; rounds alternate which mode runs first.
#
#   tools/metrics-bench.sh
#   BENCH_ROUNDS=5 BENCH_DURATION=8 tools/metrics-bench.sh
#   BENCH_RELAY=/path/to/relay BENCH_LOADGEN=/path/to/loadgen tools/metrics-bench.sh   # no cargo
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${BENCH_ROUNDS:-3}
DURATION=${BENCH_DURATION:-5}
SENDERS=${BENCH_SENDERS:-48}
SIZE=${BENCH_SIZE:-1024}
SCRAPE_INTERVAL=${BENCH_SCRAPE_INTERVAL:-0.1}
IO=${BENCH_IO:-epoll}
METRICS_PORT=${BENCH_METRICS_PORT:-19390}
OUT=${BENCH_OUT:-$ROOT/target/metrics-bench}
LOADGEN=${BENCH_LOADGEN:-$ROOT/target/release/loadgen}
RELAY=${BENCH_RELAY:-$ROOT/target/release/relay}
mkdir -p "$OUT"
log() { echo "[metrics-bench] $*" >&2; }
ulimit -n 65536 2>/dev/null || true

if [ -z "${BENCH_RELAY:-}${BENCH_LOADGEN:-}" ]; then
  log "building relay and loadgen (release)"
  timeout 1200 cargo build --release --locked -p relay -p relay-tools >&2
fi

relay_pid="" relay_data="" scraper_pid=""
stop_all() {
  if [ -n "$scraper_pid" ]; then
    # The loop and its current sleep (which would otherwise hold our stdout open).
    kill "$scraper_pid" $(pgrep -P "$scraper_pid") 2>/dev/null || true
    wait "$scraper_pid" 2>/dev/null || true
    scraper_pid=""
  fi
  if [ -n "$relay_pid" ]; then
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
    relay_pid=""
  fi
  if [ -n "$relay_data" ]; then rm -rf "$relay_data"; relay_data=""; fi
}
trap stop_all EXIT
listening() { ss -ltn "sport = :$1" | grep -q LISTEN; }

# run <mode> <round>: one relay, one loadgen run; JSON to $OUT/<mode>-<round>.json.
run() {
  local mode=$1 round=$2 extra=()
  [ "$mode" = on ] && extra=(--set "metrics_address=127.0.0.1:$METRICS_PORT")
  relay_data=$(mktemp -d /tmp/metrics-bench.XXXXXX)
  "$RELAY" dev --io "$IO" --data "$relay_data" \
    --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
    --set max_imap_connections=200000 --set max_smtp_connections=100000 \
    --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
    --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
    "${extra[@]}" >"$OUT/$mode-$round-relay.log" 2>&1 &
  relay_pid=$!
  for _ in $(seq 100); do listening 10993 && listening 10465 && break; sleep 0.1; done
  if [ "$mode" = on ]; then
    for _ in $(seq 50); do listening "$METRICS_PORT" && break; sleep 0.1; done
    ( while :; do curl -s -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics" || true; sleep "$SCRAPE_INTERVAL"; done ) &
    scraper_pid=$!
  fi
  log "round $round, metrics $mode"
  timeout 300 "$LOADGEN" --server-name localhost --accounts-pattern 'lg{n:07}@[127.0.0.1]' \
    --first 1 --senders "$SENDERS" --receivers 0 --size "$SIZE" --duration "$DURATION" --drain 0 \
    --json "$OUT/$mode-$round.json" >"$OUT/$mode-$round.txt" 2>"$OUT/$mode-$round.log" \
    || log "loadgen failed (see $OUT/$mode-$round.log)"
  if [ "$mode" = on ]; then
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$OUT/on-$round.metrics" || true
  fi
  stop_all
}

# Odd rounds off first, even rounds on first: neither mode always runs on a warmer machine.
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then run off "$round"; run on "$round"; else run on "$round"; run off "$round"; fi
done

median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) exit; if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
stat() { # stat <mode> <jq expression>
  for round in $(seq "$ROUNDS"); do jq -r "($2) // empty" "$OUT/$1-$round.json" 2>/dev/null || true; done | median
}
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); --io $IO; $SENDERS senders, ${DURATION} s, $SIZE B payload; medians of $ROUNDS rounds; scrape every ${SCRAPE_INTERVAL} s while on"
  printf '| %-34s | %10s | %10s | %8s |\n' metric off on on/off
  printf '|%s|%s|%s|%s|\n' "------------------------------------" ------------ ------------ ----------
  for row in ".sent_per_s|accepted msgs/s" ".submit_latency.p50_ms|submit p50 ms" ".submit_latency.p99_ms|submit p99 ms" ".errors_total|errors"; do
    IFS='|' read -r expr label <<<"$row"
    off=$(stat off "$expr"); on=$(stat on "$expr")
    r=$(awk "BEGIN{ if (\"$off\" != \"\" && \"$on\" != \"\" && \"$off\" + 0 != 0) printf \"%.3f\", $on / $off; else printf \"-\" }")
    printf '| %-34s | %10s | %10s | %8s |\n' "$label" "${off:--}" "${on:--}" "$r"
  done
  echo
  echo "per round (accepted msgs/s): off $(for r in $(seq "$ROUNDS"); do jq -r '.sent_per_s' "$OUT/off-$r.json" 2>/dev/null | xargs printf '%.0f '; done)/ on $(for r in $(seq "$ROUNDS"); do jq -r '.sent_per_s' "$OUT/on-$r.json" 2>/dev/null | xargs printf '%.0f '; done)"
} | tee "$OUT/table.md"
