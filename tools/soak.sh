#!/usr/bin/env bash
# Soak run: `relay dev` (release) under a mixed load for a long time, sampling the relay's RSS,
# open descriptors and store size every 10 s into a CSV, then a summary.
#
#   tools/soak.sh [SECONDS=3600] [RATE=300] [OUT=target/soak]
#
# Load, all on loopback, all at once:
# - steady: `loadgen --rate RATE`, 4 SMTP senders to 4 IMAP receivers that IDLE, fetch and
#   expunge every message, for the whole run;
# - reconnect storms: every 30 s a 2 s loadgen run with 16 fresh senders and 4 receivers (new
#   TLS sessions and logins);
# - IDLE churn: every 60 s `loadgen idle` opens 100 IDLE sessions, wakes 5, closes them all;
# - failed logins: every 5 s one IMAPS LOGIN with a wrong password (curl, from 127.0.0.9);
# - pre-login junk: every 20 s `preauth-flood` with 20 connections announcing 100 KB APPENDs.
# Everything started here is stopped by its PID on exit, also on Ctrl-C.
# Env: SOAK_IO=uring|epoll|auto (default auto), SOAK_BIN=dir with relay, loadgen, preauth-flood
# (default target/release, built if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

DUR=${1:-3600}
RATE=${2:-300}
OUT=${3:-target/soak}
IO=${SOAK_IO:-auto}
BIN=${SOAK_BIN:-target/release}
if [[ ! -x $BIN/relay || ! -x $BIN/loadgen || ! -x $BIN/preauth-flood ]]; then
    cargo build --release -p relay -p relay-tools --bins
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DATA=$OUT/data
rm -rf "$DATA"
CSV=$OUT/samples.csv
PIDS=()

stop_all() {
    # Loops first (their children finish by their own deadlines), the relay last.
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n ${RELAY:-} ]]; then
        kill "$RELAY" 2>/dev/null || true
        wait "$RELAY" 2>/dev/null || true
    fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# The per-user send limits and load admission are lifted (as in bench-compare.sh) so the steady
# load is not refused; login throttling and the pre-login limits stay at their defaults.
"$BIN/relay" dev --io "$IO" --data "$DATA" \
    --set max_user_send_per_minute=100000000 --set max_user_send_burst_size=100000000 \
    --set max_load_1m=1000 --set min_available_memory=1 --set min_free_disk_space=1 >"$OUT/relay.log" 2>&1 &
RELAY=$!
for _ in $(seq 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/10993) 2>/dev/null; then break; fi
    sleep 0.1
done
kill -0 "$RELAY"

# VmRSS counts the store's mmapped segments that are resident (file pages the kernel can drop at
# any time; they grow with the store): RssAnon is the relay's own memory, the figure that must
# stay flat.
sample() {
    local t=$1 rss anon file fds store
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$RELAY/status")
    anon=$(awk '/^RssAnon/ {print $2}' "/proc/$RELAY/status")
    file=$(awk '/^RssFile/ {print $2}' "/proc/$RELAY/status")
    fds=$(find "/proc/$RELAY/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    store=$(du -sk "$DATA" | cut -f1)
    echo "$t,$rss,$anon,$file,$fds,$store" >>"$CSV"
}
echo "elapsed_s,rss_kib,rss_anon_kib,rss_file_kib,fds,store_kib" >"$CSV"
sample 0

# Each loop runs until killed (TERM), and then kills the tool it is running.
loop() {
    local every=$1
    shift
    local child=
    trap 'kill $child 2>/dev/null; exit 0' TERM
    while true; do
        "$@" >>"$OUT/$LOOP_NAME.log" 2>&1 &
        child=$!
        wait $child || true
        sleep "$every" &
        child=$!
        wait $child || true
    done
}
storm() {
    exec "$BIN/loadgen" --senders 16 --receivers 4 --rate 50 --duration 2 --drain 10 \
        --first 6000 --json "$OUT/storm-$(date +%s%N).json"
}
badlogin() {
    exec curl -sk --interface 127.0.0.9 --max-time 30 "imaps://127.0.0.1:10993/" \
        -u 'soakbad01@[127.0.0.1]:wrong-password-0123' -o /dev/null
}
# The account of the bad logins exists (a first login creates it), so they are real failures.
curl -sk --max-time 30 "imaps://127.0.0.1:10993/" -u 'soakbad01@[127.0.0.1]:right-password-0123' \
    -o /dev/null || true

"$BIN/loadgen" --senders 4 --receivers 4 --rate "$RATE" --duration "$DUR" --drain 30 \
    --timeout 30 --json "$OUT/steady.json" >"$OUT/steady.log" 2>&1 &
STEADY=$!
PIDS+=("$STEADY")
LOOP_NAME=storm loop 30 storm &
PIDS+=($!)
LOOP_NAME=idle loop 60 "$BIN/loadgen" idle --connections 100 --per-source 50 --sample 5 \
    --settle 1 --first 5000 &
PIDS+=($!)
LOOP_NAME=badlogin loop 5 badlogin &
PIDS+=($!)
LOOP_NAME=preauth loop 20 "$BIN/preauth-flood" --connections 20 --concurrency 4 \
    --literal 100000 --settle 0 --timeout 10 &
PIDS+=($!)

start=$(date +%s)
while kill -0 "$STEADY" 2>/dev/null; do
    sleep 10 &
    wait $! || true
    kill -0 "$RELAY" || { echo "relay died"; exit 1; }
    sample $(($(date +%s) - start))
done
wait "$STEADY" || true
sample $(($(date +%s) - start))
stop_all
PIDS=()
RELAY=

python3 - "$OUT" <<'EOF'
import csv, glob, json, statistics, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/samples.csv")))
rss = [int(r["rss_kib"]) for r in rows]
anon = [int(r["rss_anon_kib"]) for r in rows]
# After warm-up: from the tenth minute (or the middle of a shorter run) to the end.
warm = [a for r, a in zip(rows, anon) if int(r["elapsed_s"]) >= min(600, int(rows[-1]["elapsed_s"]) // 2)]
fds = [int(r["fds"]) for r in rows]
store = [int(r["store_kib"]) for r in rows]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
steady = load(f"{out}/steady.json") or {}
storms = [j for j in map(load, glob.glob(f"{out}/storm-*.json")) if j]
def tot(k):
    return steady.get(k, 0) + sum(j.get(k, 0) for j in storms)
print(f"samples   {len(rows)} over {rows[-1]['elapsed_s']} s")
print(f"rss KiB   first {rss[0]}  median {int(statistics.median(rss))}  max {max(rss)}  last {rss[-1]}"
      "  (with resident store pages)")
print(f"anon KiB  first {anon[0]}  median {int(statistics.median(anon))}  max {max(anon)}  last {anon[-1]}"
      f"  after warm-up: min {min(warm)} max {max(warm)} (+{max(warm) - min(warm)})")
print(f"fds       first {fds[0]}  max {max(fds)}  last {fds[-1]}")
print(f"store KiB first {store[0]}  max {max(store)}  last {store[-1]}")
print(f"messages  sent {tot('accepted')}  received {tot('delivered')}  lost {tot('undelivered')}"
      f"  (steady {steady.get('accepted', 0)} at {steady.get('sent_per_s', 0):.0f}/s,"
      f" {len(storms)} storms)")
print(f"errors    steady {steady.get('errors_total', 'n/a')}  storms {sum(j.get('errors_total', 0) for j in storms)}")
EOF
