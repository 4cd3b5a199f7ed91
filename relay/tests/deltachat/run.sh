#!/usr/bin/env bash
# End-to-end tests of the relay with the real Delta Chat core (deltachat-rpc-server from PyPI).
#
#   relay/tests/deltachat/run.sh [pytest args...]
#
# Runs the suite once per I/O backend against `relay dev` on 127.0.0.1 (tests not marked
# standard_ports), then, also once per backend, the tests that start relays of their own on
# standard ports (federation, onboarding; marker standard_ports), the second relay of a pair on
# the next backend, inside a network namespace with the hosts file `hosts` of this directory.
#
# Environment:
#   RELAY_BIN            relay binary (default: <repo>/target/debug/relay, built here with cargo)
#   TEST_DNS_BIN         test DNS server (default: <repo>/target/debug/test-dns, built here)
#   RELAY_E2E_NO_BUILD   1: build nothing (the binaries must exist)
#   RELAY_IO_BACKENDS    I/O backends to run the suite with, one run each (default "uring epoll")
#   RELAY_E2E_RUNS       which runs (default "backends standard_ports": the runs against `relay dev`
#                        and the runs with relays on standard ports)
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
build=()
[ -z "${RELAY_BIN:-}" ] && build+=(-p relay --bin relay)
[ -z "${TEST_DNS_BIN:-}" ] && build+=(-p relay-testkit --bin test-dns)
export RELAY_BIN=${RELAY_BIN:-$ROOT/target/debug/relay}
export TEST_DNS_BIN=${TEST_DNS_BIN:-$ROOT/target/debug/test-dns}
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
    if [ "${#build[@]}" -gt 0 ] && [ "${RELAY_E2E_NO_BUILD:-0}" != 1 ]; then
      log "cargo build ${build[*]}"
      (cd "$ROOT" && cargo build --locked --quiet "${build[@]}")
    fi
    [ -x "$RELAY_BIN" ] || { echo "relay binary $RELAY_BIN missing: cargo build -p relay --bin relay" >&2; exit 1; }
    [ -x "$TEST_DNS_BIN" ] || { echo "$TEST_DNS_BIN missing: cargo build -p relay-testkit --bin test-dns" >&2; exit 1; }
    ;;
  baseline) BACKENDS=baseline ;;
  *) echo "RELAY_E2E_TARGET must be relay or baseline" >&2; exit 2 ;;
esac

# ------------------------------------------------------------------ network namespace
NS=""
netns_default=0; [ "$TARGET" = relay ] && netns_default=1
if [ "${RELAY_E2E_NETNS:-$netns_default}" = 1 ]; then
  name=relay-e2e-$$
  # `ip netns exec` bind-mounts /etc/netns/<name>/hosts over /etc/hosts.
  if mkdir -p "/etc/netns/$name" 2>/dev/null && cp "$HERE/hosts" "/etc/netns/$name/hosts" \
      && ip netns add "$name" 2>/dev/null && ip netns exec "$name" ip link set lo up; then
    NS=$name
    trap 'ip netns del "$NS" 2>/dev/null || true; rm -rf "/etc/netns/$NS"' EXIT
    log "running inside network namespace $NS (loopback only, hosts file $HERE/hosts)"
  else
    ip netns del "$name" 2>/dev/null || true
    rm -rf "/etc/netns/$name" 2>/dev/null || true
    if [ -n "${RELAY_E2E_NETNS:-}" ]; then echo "cannot create a network namespace" >&2; exit 1; fi
    log "no network namespace available: running in the host namespace (all settings manual, IP host)"
  fi
fi

# ------------------------------------------------------------------ pytest runs
failed=()
summary=()
start_all=$(date +%s.%N)
wrap=()
[ -n "$NS" ] && wrap=(ip netns exec "$NS") && export RELAY_E2E_NETNS_NAME=$NS

# run_suite LABEL ARTIFACT_DIR_NAME PYTEST_ARGS...: one pytest run, its outcome in the summary.
run_suite() {
  local label=$1 dir=$2; shift 2
  export RELAY_E2E_ARTIFACTS=$ROOT/target/e2e-logs/$dir
  mkdir -p "$RELAY_E2E_ARTIFACTS"
  rm -f "$RELAY_E2E_ARTIFACTS"/*.txt "$RELAY_E2E_ARTIFACTS"/*.log
  log "suite: $label (logs: $RELAY_E2E_ARTIFACTS)"
  local t0 rc secs
  t0=$(date +%s.%N)
  set +e
  timeout --kill-after=30 "$SUITE_TIMEOUT" "${wrap[@]}" python -m pytest "$HERE" "$@"
  rc=$?
  set -e
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  case $rc in
    0) summary+=("$label: passed (${secs} s)") ;;
    # pytest's "no tests collected": a failure, unless arguments given to run.sh selected nothing here.
    5) if [ "$EXTRA_ARGS" -gt 0 ]; then summary+=("$label: nothing selected by the arguments")
       else summary+=("$label: FAILED: no tests collected"); failed+=("$label"); fi ;;
    124|137) summary+=("$label: FAILED: suite timeout ${SUITE_TIMEOUT} s"); failed+=("$label") ;;
    *) summary+=("$label: FAILED (pytest exit $rc, ${secs} s)"); failed+=("$label") ;;
  esac
}
EXTRA_ARGS=$#
read -r -a backends <<< "$BACKENDS"

RUNS=" ${RELAY_E2E_RUNS:-backends standard_ports} "
if [[ $RUNS == *" backends "* ]]; then
  for backend in "${backends[@]}"; do
    export RELAY_IO=$backend
    [ "$TARGET" = baseline ] && export RELAY_IO=none
    run_suite "$TARGET io=$RELAY_IO" "$TARGET-$RELAY_IO" -m "not standard_ports" "$@"
  done
fi
if [ "$TARGET" = relay ] && [[ $RUNS == *" standard_ports "* ]]; then
  # Relays of their own on standard ports, once per backend: the first relay of each pair (and the
  # onboarding relay) on that backend, the second on the next one. Outbound delivery has its own
  # runtime whatever the backend; a backend serves the receiving side (ports 25 and 443, IMAP,
  # submission), so mail crosses from one backend to the other in both directions.
  n=${#backends[@]}
  for ((i = 0; i < n; i++)); do
    first=${backends[i]} second=${backends[(i + 1) % n]}
    export RELAY_IO=$first RELAY_IO_PAIR="$first $second"
    run_suite "standard ports io=$first+$second" "standard-ports-$first-$second" -m standard_ports "$@"
  done
fi
total=$(awk -v a="$start_all" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
for line in "${summary[@]}"; do log "$line"; done
log "total wall time: ${total} s"
[ ${#failed[@]} -eq 0 ]
