#!/usr/bin/env bash
# Flame graph of `relay dev` under loadgen load: perf samples the relay (DWARF call graphs, so the
# release build's line tables suffice), inferno turns them into an SVG.
#
#   tools/flamegraph.sh                           # epoll backend, closed-loop load, 10 s
#   FLAME_IO=uring FLAME_SECONDS=5 tools/flamegraph.sh -- --rate 1000 --receivers 4
#
# Arguments after `--` go to loadgen (default: --senders 16 --receivers 4, closed loop).
# Output: target/flamegraph/relay-<io>.svg (and the folded stacks beside it).
# Samples the cpu-clock software event (this VM exposes no hardware PMU, so the default `cycles`
# event records nothing). Needs perf (`apt-get install linux-perf`) as root; installs the
# inferno tools with `cargo install` if they are missing. Everything stays on loopback.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
IO=${FLAME_IO:-epoll}
SECS=${FLAME_SECONDS:-10}
FREQ=${FLAME_FREQ:-199}
OUT=${FLAME_OUT:-$ROOT/target/flamegraph}
LOAD=(--senders 16 --receivers 4)
if [ "${1:-}" = "--" ]; then shift; LOAD=("$@"); fi
mkdir -p "$OUT"
log() { echo "[flamegraph] $*" >&2; }

command -v perf >/dev/null || { log "perf not found: apt-get install linux-perf"; exit 1; }
if ! perf record -q -e cpu-clock -o /dev/null -- true 2>/dev/null; then
  log "perf record does not work here; fall back to:"
  log "  valgrind --tool=callgrind target/release/relay dev ... (then callgrind_annotate)"
  exit 1
fi
if ! command -v inferno-flamegraph >/dev/null; then
  log "installing inferno (cargo install)"
  cargo install --locked inferno >&2
fi
export PATH=$HOME/.cargo/bin:$PATH

timeout 1200 cargo build --release --locked -p relay -p relay-tools >&2
data=$(mktemp -d /tmp/flame-relay.XXXXXX)
relay_pid=""
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  sleep 0.5
  [ -n "$relay_pid" ] && kill -9 "$relay_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
target/release/relay dev --io "$IO" --data "$data" \
  --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
  --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
  --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
  >"$OUT/relay-$IO.log" 2>&1 &
relay_pid=$!
for _ in $(seq 100); do ss -ltn 'sport = :10465' | grep -q LISTEN && break; sleep 0.1; done
kill -0 "$relay_pid" 2>/dev/null || { log "relay did not start: $OUT/relay-$IO.log"; exit 1; }

# Warm up (account creation, TLS session caches) before sampling.
target/release/loadgen "${LOAD[@]}" --duration 1 --drain 2 >/dev/null 2>&1 || true
log "sampling relay pid $relay_pid for $SECS s at $FREQ Hz under: loadgen ${LOAD[*]}"
perf record -q -e cpu-clock -F "$FREQ" --call-graph dwarf,16384 -p "$relay_pid" -o "$OUT/perf-$IO.data" \
  -- sleep "$SECS" 2>"$OUT/perf-$IO.log" &
perf_pid=$!
target/release/loadgen "${LOAD[@]}" --duration "$SECS" --drain 2 --json "$OUT/load-$IO.json" \
  >"$OUT/load-$IO.txt" 2>/dev/null || true
wait "$perf_pid" || true
perf script -i "$OUT/perf-$IO.data" 2>/dev/null | inferno-collapse-perf >"$OUT/relay-$IO.folded"
inferno-flamegraph --title "relay dev --io $IO under loadgen ${LOAD[*]}" \
  <"$OUT/relay-$IO.folded" >"$OUT/relay-$IO.svg"
cat "$OUT/load-$IO.txt" >&2
log "flame graph: $OUT/relay-$IO.svg"
# The heaviest leaf functions, for a quick look without a browser.
awk '{n=$NF; sub(/ [0-9]+$/,""); k=split($0,f,";"); self[f[k]]+=n; tot+=n}
     END {for (s in self) printf "%6.2f%%  %s\n", 100*self[s]/tot, s}' "$OUT/relay-$IO.folded" |
  sort -rn | head -15 >&2
