#!/usr/bin/env bash
# Idle capacity of `relay dev`: K TLS IMAP sessions that log in and IDLE, the relay's RSS per
# session, and the wake-up latency of a sample (loadgen idle). Loopback only; bounded in time.
#
#   tools/idle-capacity.sh                     # 100,000 sessions over 1,000 accounts, epoll
#   IDLE_IO=uring IDLE_K=20000 tools/idle-capacity.sh
# Output: target/idle-capacity/<io>-<K>.json and .txt
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
IO=${IDLE_IO:-epoll}
K=${IDLE_K:-100000}
ACCOUNTS=${IDLE_ACCOUNTS:-1000}
OUT=${IDLE_OUT:-$ROOT/target/idle-capacity}
mkdir -p "$OUT"
log() { echo "[idle-capacity] $*" >&2; }
# Both the relay and loadgen need a descriptor per session (loadgen raises its own limit too).
# Without CAP_SYS_RESOURCE the hard limit caps K (20,000 in the sandbox these figures come from).
ulimit -n $((K + 4096)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ $((K + 1000)) -gt "$(ulimit -n)" ]; then
  K=$(( $(ulimit -n) - 1000 ))
  log "RLIMIT_NOFILE hard limit is $(ulimit -Hn): measuring $K sessions instead"
fi
timeout 1200 cargo build --release --locked -p relay -p relay-tools >&2
data=$(mktemp -d /tmp/idle-relay.XXXXXX)
relay_pid=""
cleanup() {
  [ -n "$relay_pid" ] && kill "$relay_pid" 2>/dev/null || true
  sleep 1
  [ -n "$relay_pid" ] && kill -9 "$relay_pid" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
target/release/relay dev --io "$IO" --data "$data" \
  --set max_imap_connections=$((K + 1000)) --set max_imap_connections_per_source=$((K + 1000)) \
  --set max_smtp_connections=100000 \
  --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
  --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
  --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
  >"$OUT/relay-$IO.log" 2>&1 &
relay_pid=$!
for _ in $(seq 100); do ss -ltn 'sport = :10993' | grep -q LISTEN && break; sleep 0.1; done
kill -0 "$relay_pid" 2>/dev/null || { log "relay did not start: $OUT/relay-$IO.log"; exit 1; }
log "relay pid $relay_pid ($IO); opening $K sessions over $ACCOUNTS accounts"
timeout 1500 target/release/loadgen idle --connections "$K" --accounts "$ACCOUNTS" \
  --server-pid "$relay_pid" --sample "${IDLE_SAMPLE:-50}" --setup-limit 900 \
  --json "$OUT/$IO-$K.json" | tee "$OUT/$IO-$K.txt"
