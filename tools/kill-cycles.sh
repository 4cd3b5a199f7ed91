#!/usr/bin/env bash
# kill -9 cycles: `relay dev` under 8 concurrent SMTP submitters is killed with SIGKILL at a
# random moment (150–650 ms into the load), restarted on the same data, and every message a
# client got `250` for is looked up by Message-ID over IMAP; repeated KILL_CYCLES times on each
# I/O backend (io_uring skipped where the kernel refuses it). Loopback only.
#
#   tools/kill-cycles.sh                          # 100 cycles per backend, release build
#   KILL_CYCLES=20 KILL_PROFILE=dev tools/kill-cycles.sh
# Output: the `kill-cycles:` lines (cycles, messages acknowledged, missing, time) on stdout and
# in target/kill-cycles/result.txt. Any missing message fails the run (exit status 1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CYCLES=${KILL_CYCLES:-100}
PROFILE=${KILL_PROFILE:-release}
OUT=${KILL_OUT:-$ROOT/target/kill-cycles}
mkdir -p "$OUT"
args=(--locked -p relay --test it)
[ "$PROFILE" = release ] && args+=(--release)
echo "[kill-cycles] $CYCLES cycles per backend, $PROFILE build, started $(date -u +%FT%TZ)" >&2
start=$(date +%s)
set +e
KILL_CYCLES=$CYCLES RUST_BACKTRACE=0 cargo test "${args[@]}" -- --exact --nocapture \
  faults::kill_9_cycles_under_concurrent_load_lose_no_acknowledged_message \
  2>"$OUT/stderr.log" | tee "$OUT/stdout.log" | grep '^kill-cycles:' | tee "$OUT/result.txt"
status=${PIPESTATUS[0]}
set -e
echo "[kill-cycles] exit $status after $(( $(date +%s) - start )) s (stderr: $OUT/stderr.log)" >&2
exit "$status"
