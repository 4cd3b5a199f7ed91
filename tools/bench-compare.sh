#!/usr/bin/env bash
# Same load against `relay dev --io uring`, `relay dev --io epoll` and the Postfix + Dovecot
# baseline; prints one table with ratios. Bounded: a few minutes in all (plus the release build).
#
#   tools/bench-compare.sh                  # all three
#   BENCH_TARGETS="epoll baseline" tools/bench-compare.sh
#   BENCH_RELAY=/path/to/other/relay BENCH_OUT=/tmp/other tools/bench-compare.sh   # another build, no cargo
#
# Scenarios (each a loadgen run; JSON kept in $BENCH_OUT/<target>-<scenario>.json):
#   throughput  closed loop, $BENCH_SENDERS (48) senders, no receivers (submission -> durably stored);
#               48 stays below Postfix's smtpd_client_connection_count_limit of 50 per client
#   throughput-wide  the same with $BENCH_SENDERS_WIDE (256) senders, relay only (Postfix's default
#               process_limit of 100 caps the baseline's sessions)
#   latency     --rate $BENCH_RATE msgs/s (1000), 4 senders, 4 IDLE receivers (end of DATA -> fetched)
#   latency-low --rate $BENCH_RATE_LOW msgs/s (100), 2 senders, 2 receivers: below baseline saturation
#   idle        $BENCH_IDLE IDLE sessions: server memory per session, wake-up latency
# The baseline is started (BASELINE_NOTIFY_DELAY_MS=0 BASELINE_AUTH=any) only if it is not
# running, and stopped afterwards only if this script started it. Everything stays on loopback.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED_TOOLS=${SHARED_TOOLS:-$ROOT/../shared/tools}
TARGETS=${BENCH_TARGETS:-uring epoll baseline}
DURATION=${BENCH_DURATION:-5}
SENDERS=${BENCH_SENDERS:-48}
SENDERS_WIDE=${BENCH_SENDERS_WIDE:-256}
RATE=${BENCH_RATE:-1000}
RATE_LOW=${BENCH_RATE_LOW:-100}
IDLE=${BENCH_IDLE:-80}
SIZE=${BENCH_SIZE:-1024}
OUT=${BENCH_OUT:-$ROOT/target/bench-compare}
LOADGEN=${BENCH_LOADGEN:-$ROOT/target/release/loadgen}
RELAY=${BENCH_RELAY:-$ROOT/target/release/relay}
mkdir -p "$OUT"
log() { echo "[bench-compare] $*" >&2; }
ulimit -n 65536 2>/dev/null || true   # the relay and loadgen hold a descriptor per session

if [ -z "${BENCH_RELAY:-}${BENCH_LOADGEN:-}" ]; then
  log "building relay and loadgen (release)"
  timeout 1200 cargo build --release --locked -p relay -p relay-tools >&2
fi

relay_pid=""
relay_data=""
stop_relay() {
  if [ -n "$relay_pid" ]; then
    kill "$relay_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$relay_pid" 2>/dev/null || true
    relay_pid=""
  fi
  if [ -n "$relay_data" ]; then rm -rf "$relay_data"; relay_data=""; fi
}
baseline_started=0
cleanup() {
  stop_relay
  if [ "$baseline_started" = 1 ]; then "$SHARED_TOOLS/baseline-down.sh" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

listening() { ss -ltn "sport = :$1" | grep -q LISTEN; }

# loadgen <target> <scenario> <args...>: one run, JSON to $OUT, human output to the .txt beside it.
loadgen() {
  local target=$1 scenario=$2; shift 2
  log "$target: $scenario"
  if ! timeout 300 "$LOADGEN" "$@" --json "$OUT/$target-$scenario.json" \
      >"$OUT/$target-$scenario.txt" 2>"$OUT/$target-$scenario.log"; then
    log "$target: $scenario failed (see $OUT/$target-$scenario.log)"
    rm -f "$OUT/$target-$scenario.json"
  fi
}

# The baseline acknowledges into Postfix's queue: let a backlog drain before the next scenario.
settle() {
  [ "$1" = baseline ] || return 0
  for _ in $(seq 120); do
    postqueue -c /var/lib/baseline-mail/postfix -p 2>/dev/null | grep -q 'Mail queue is empty' && return 0
    sleep 0.5
  done
  log "baseline queue still not empty after 60 s"
}

scenarios() {
  local target=$1 pid_args=$2; shift 2
  local common=("$@")
  loadgen "$target" throughput "${common[@]}" --first 1 --senders "$SENDERS" --receivers 0 \
    --size "$SIZE" --duration "$DURATION" --drain 0
  settle "$target"
  if [ "$target" != baseline ]; then
    loadgen "$target" throughput-wide "${common[@]}" --first 1 --senders "$SENDERS_WIDE" \
      --receivers 0 --size "$SIZE" --duration "$DURATION" --drain 0
  fi
  loadgen "$target" latency "${common[@]}" --first 1001 --senders 4 --receivers 4 --size "$SIZE" \
    --rate "$RATE" --duration "$DURATION" --drain 10
  settle "$target"
  loadgen "$target" latency-low "${common[@]}" --first 1101 --senders 2 --receivers 2 \
    --size "$SIZE" --rate "$RATE_LOW" --duration "$DURATION" --drain 5
  settle "$target"
  # shellcheck disable=SC2086 # pid_args is a list of words
  loadgen "$target" idle idle "${common[@]}" --first 2001 --connections "$IDLE" --sample 20 $pid_args
}

for target in $TARGETS; do
  case $target in
    uring|epoll)
      relay_data=$(mktemp -d /tmp/bench-relay.XXXXXX)
      "$RELAY" dev --io "$target" --data "$relay_data" \
        --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
        --set max_imap_connections=200000 --set max_smtp_connections=100000 \
        --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 \
        --set max_new_connections_per_minute=100000000 --set new_connections_burst=100000000 \
        >"$OUT/$target-relay.log" 2>&1 &
      relay_pid=$!
      for _ in $(seq 100); do listening 10993 && listening 10465 && break; sleep 0.1; done
      if ! kill -0 "$relay_pid" 2>/dev/null || ! listening 10465; then
        log "$target: relay did not start (see $OUT/$target-relay.log)"; stop_relay; continue
      fi
      scenarios "$target" "--server-pid $relay_pid" --server-name localhost \
        --accounts-pattern 'lg{n:07}@[127.0.0.1]'
      stop_relay
      ;;
    baseline)
      if ! listening 2465 || ! listening 2993; then
        log "starting the baseline"
        BASELINE_NOTIFY_DELAY_MS=0 BASELINE_AUTH=any "$SHARED_TOOLS/baseline-up.sh" >&2
        baseline_started=1
      fi
      scenarios baseline "--server-process imap --server-process imap-login --server-process dovecot" \
        --smtp-port 2465 --imap-port 2993 --server-name _baseline.test \
        --accounts-pattern 'lg{n:07}@baseline.test'
      # Mail the throughput run left in the load accounts' own mailboxes.
      rm -rf /var/lib/baseline-mail/mail/baseline.test/lg[0-9][0-9][0-9][0-9][0-9][0-9][0-9]
      ;;
    *) log "unknown target $target (uring, epoll, baseline)";;
  esac
done

# ------------------------------------------------------------------------------ table
val() { # val <target> <scenario> <jq expression>
  local f="$OUT/$1-$2.json"
  [ -f "$f" ] && jq -r "($3) // empty" "$f" 2>/dev/null || true
}
rows=(
  "throughput|.sent_per_s|accepted msgs/s (closed loop, $SENDERS senders)"
  "throughput|.submit_latency.p50_ms|submit p50 ms (end of DATA -> 250)"
  "throughput|.submit_latency.p99_ms|submit p99 ms"
  "throughput|.errors_total|errors"
  "throughput-wide|.sent_per_s|accepted msgs/s (closed loop, $SENDERS_WIDE senders)"
  "throughput-wide|.submit_latency.p50_ms|submit p50 ms ($SENDERS_WIDE senders)"
  "latency|.delivered_per_s|delivered msgs/s at $RATE msgs/s"
  "latency|.delivery_latency.p50_ms|delivery p50 ms (end of DATA -> fetched)"
  "latency|.delivery_latency.p99_ms|delivery p99 ms"
  "latency|.undelivered|undelivered after 10 s drain"
  "latency|.errors_total|errors"
  "latency-low|.delivery_latency.p50_ms|delivery p50 ms at $RATE_LOW msgs/s"
  "latency-low|.delivery_latency.p99_ms|delivery p99 ms at $RATE_LOW msgs/s"
  "idle|.idle|idle sessions"
  "idle|.server_rss_per_session_kib|server RSS KiB per idle session"
  "idle|.server_pss_per_session_kib|server PSS KiB per idle session"
  "idle|.wakeup_latency.p50_ms|wake-up p50 ms (end of DATA -> EXISTS)"
  "idle|.wakeup_latency.p99_ms|wake-up p99 ms"
)
fmt() { [ -n "$1" ] && printf '%.2f' "$1" || printf -- '-'; }
ratio() { if [ -n "$1" ] && [ -n "$2" ] && awk "BEGIN{exit !($2 != 0)}"; then awk "BEGIN{printf \"%.3g\", $1 / $2}"; else printf -- '-'; fi; }
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, kernel $(uname -r); message $SIZE B payload"
  printf '| %-48s | %10s | %10s | %10s | %11s | %11s |\n' metric uring epoll baseline uring/base epoll/base
  printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..50})" ------------ ------------ ------------ ------------- -------------
  for row in "${rows[@]}"; do
    IFS='|' read -r scen expr label <<<"$row"
    u=$(val uring "$scen" "$expr"); e=$(val epoll "$scen" "$expr"); b=$(val baseline "$scen" "$expr")
    printf '| %-48s | %10s | %10s | %10s | %11s | %11s |\n' "$label" "$(fmt "$u")" "$(fmt "$e")" "$(fmt "$b")" \
      "$(ratio "$u" "$b")" "$(ratio "$e" "$b")"
  done
} | tee "$OUT/table.md"
