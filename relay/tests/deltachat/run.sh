#!/usr/bin/env bash
# End-to-end tests of the relay with the real Delta Chat core (deltachat-rpc-server from PyPI).
#
#   cargo build -p relay --bin relay && relay/tests/deltachat/run.sh [pytest args...]
#
# Environment:
#   RELAY_BIN            relay binary (default: <repo>/target/debug/relay; built by the caller)
#   RELAY_IO_BACKENDS    I/O backends to run the whole suite with, one run each (default "uring epoll")
#   RELAY_E2E_VENV       venv with the pinned requirements.txt (default: <repo>/target/e2e-venv)
#   RELAY_E2E_TARGET     relay (default) | baseline (Postfix+Dovecot from ../shared/tools/baseline-up.sh,
#                        started beforehand with BASELINE_AUTH=any; runs once, backends are ignored)
#   RELAY_E2E_NETNS      1: run inside a fresh network namespace with only loopback (default for the
#                        relay target when `ip netns` works), 0: never (the baseline runs outside it)
#   RELAY_E2E_CAPTURE_DIR  baseline only: copy raw delivered messages there (dc-*.eml)
#   RELAY_E2E_TIME_SCALE   multiply every deadline (default 1)
#   RELAY_E2E_SUITE_TIMEOUT  hard limit for one pytest run in seconds (default 900)
#   RELAY_E2E_SETUP_ONLY 1: only create the venv, run nothing
# Logs and measurements of each run: <repo>/target/e2e-logs/<target>-<backend>/.
# Exit status: non-zero if any run failed, including pytest's "no tests collected" (5).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
VENV=${RELAY_E2E_VENV:-$ROOT/target/e2e-venv}
TARGET=${RELAY_E2E_TARGET:-relay}
export RELAY_BIN=${RELAY_BIN:-$ROOT/target/debug/relay}
BACKENDS=${RELAY_IO_BACKENDS:-uring epoll}
SUITE_TIMEOUT=${RELAY_E2E_SUITE_TIMEOUT:-900}

log() { echo "[e2e] $*"; }

# ------------------------------------------------------------------ venv (pinned versions)
want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
stamp=$VENV/.requirements.sha256
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing $HERE/requirements.txt into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements.txt"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
command -v deltachat-rpc-server >/dev/null || { echo "deltachat-rpc-server missing in $VENV" >&2; exit 1; }
[ "${RELAY_E2E_SETUP_ONLY:-0}" = 1 ] && exit 0

case $TARGET in
  relay)
    [ -x "$RELAY_BIN" ] || { echo "relay binary $RELAY_BIN missing: cargo build -p relay --bin relay" >&2; exit 1; }
    ;;
  baseline) BACKENDS=baseline ;;
  *) echo "RELAY_E2E_TARGET must be relay or baseline" >&2; exit 2 ;;
esac

# ------------------------------------------------------------------ network namespace
NS=""
netns_default=0; [ "$TARGET" = relay ] && netns_default=1
if [ "${RELAY_E2E_NETNS:-$netns_default}" = 1 ]; then
  name=relay-e2e-$$
  if ip netns add "$name" 2>/dev/null && ip netns exec "$name" ip link set lo up; then
    NS=$name
    trap 'ip netns del "$NS" 2>/dev/null || true' EXIT
    log "running inside network namespace $NS (loopback only)"
  else
    ip netns del "$name" 2>/dev/null || true
    if [ -n "${RELAY_E2E_NETNS:-}" ]; then echo "cannot create a network namespace" >&2; exit 1; fi
    log "no network namespace available: running in the host namespace (all settings manual, IP host)"
  fi
fi

# ------------------------------------------------------------------ one pytest run per backend
failed=()
summary=()
start_all=$(date +%s.%N)
for backend in $BACKENDS; do
  export RELAY_IO=$backend
  [ "$TARGET" = baseline ] && export RELAY_IO=none
  export RELAY_E2E_ARTIFACTS=$ROOT/target/e2e-logs/$TARGET-$RELAY_IO
  mkdir -p "$RELAY_E2E_ARTIFACTS"
  rm -f "$RELAY_E2E_ARTIFACTS"/*.txt "$RELAY_E2E_ARTIFACTS"/relay.log
  log "suite against $TARGET, io=$RELAY_IO (logs: $RELAY_E2E_ARTIFACTS)"
  wrap=()
  [ -n "$NS" ] && wrap=(ip netns exec "$NS")
  t0=$(date +%s.%N)
  set +e
  timeout --kill-after=30 "$SUITE_TIMEOUT" "${wrap[@]}" python -m pytest "$HERE" "$@"
  rc=$?
  set -e
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  case $rc in
    0) summary+=("$TARGET io=$RELAY_IO: passed (${secs} s)") ;;
    5) summary+=("$TARGET io=$RELAY_IO: FAILED: no tests collected"); failed+=("$RELAY_IO") ;;
    124|137) summary+=("$TARGET io=$RELAY_IO: FAILED: suite timeout ${SUITE_TIMEOUT} s"); failed+=("$RELAY_IO") ;;
    *) summary+=("$TARGET io=$RELAY_IO: FAILED (pytest exit $rc, ${secs} s)"); failed+=("$RELAY_IO") ;;
  esac
done
total=$(awk -v a="$start_all" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
for line in "${summary[@]}"; do log "$line"; done
log "total wall time: ${total} s"
[ ${#failed[@]} -eq 0 ]
