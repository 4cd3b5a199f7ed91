#!/usr/bin/env bash
# Runs every test of the project, in order of cost: format and lints, the Rust test suites
# (unit, sans-I/O sessions, store crash tests, socket integration on both I/O backends), the
# end-to-end tests with the real Delta Chat core on both backends, and the eBPF and fuzz checks
# where this machine allows them (each says so when it skips).
#
# Usage: bash tools/test-all.sh          (from the repository root)
# Env:   SKIP_E2E=1   skip the Delta Chat tests (they create a Python venv on first run)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$1" "$(( $(date +%s) - start ))"; }

step "format"
cargo fmt --all --check

# The relay as shipped is built with the eBPF rate limiter (feature `ebpf`, which builds and
# embeds ebpf/program): where the eBPF toolchain can be installed (root on Debian, as in CI),
# lints, docs and tests all use that one feature set, so the relay is compiled once per profile
# instead of once more for a separate eBPF pass. The feature changes nothing unless
# `ebpf_interfaces` is set, so the suites test the same behaviour; code behind
# `cfg(not(feature = "ebpf"))` is still compiled by the fuzz build.
features=()
if [ -x ebpf/setup-toolchain.sh ] && [ "$(id -u)" = 0 ]; then
    step "ebpf toolchain"
    bash ebpf/setup-toolchain.sh
    export PATH="$HOME/.cargo/bin:$PATH"
    features=(--features relay/ebpf)
fi

step "clippy"
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --locked --quiet \
    "${features[@]}"

if [ "${SKIP_E2E:-0}" != 1 ]; then
    step "delta chat core (venv in target/e2e-venv)"
    RELAY_E2E_SETUP_ONLY=1 bash relay/tests/deltachat/run.sh
    # The echo bot's end-to-end test (package relay-bots) uses the real core from there.
    export DELTACHAT_RPC_SERVER="$PWD/target/e2e-venv/bin/deltachat-rpc-server"
fi

step "rust tests"
mkdir -p target
# With the eBPF feature: RELAY_BIN, because the eBPF end-to-end test (ratelimit::ebpf::tests)
# puts its XDP program in front of the real relay binary this same command builds for the
# integration tests; RELAY_TEST_NO_SKIP, because a privileged eBPF test that would skip here
# (no root, no `ip`) is a failure, not a pass.
ebpf_env=()
[ "${#features[@]}" -gt 0 ] && ebpf_env=(RELAY_BIN="$PWD/target/debug/relay" RELAY_TEST_NO_SKIP=1)
# Three test threads on a 2-core machine: the socket suite spends most of its time waiting
# (login penalties, timeouts, restarts); measured with 3: 127 s wall for 74 s of CPU.
env "${ebpf_env[@]}" RUST_TEST_THREADS="${RUST_TEST_THREADS:-3}" \
    cargo test --workspace --locked "${features[@]}" 2>&1 \
    | tee target/rust-tests.log
grep -q "test result: ok" target/rust-tests.log

# The binaries of the eBPF end-to-end test and of the Delta Chat tests: the ones `cargo test`
# just built for the integration tests (building them again with `cargo build -p ...` would
# compile the relay once more: other features unify without the dev-dependencies).
for bin in relay test-dns expire echo; do
    [ -x "target/debug/$bin" ] || { echo "target/debug/$bin missing after cargo test" >&2; exit 1; }
done

# The Debian package of those binaries, installed and started as its systemd unit would
# (dist/test-package.sh; root only: it installs on this machine, and purges after).
if [ "$(id -u)" = 0 ]; then
    step "debian package and systemd units"
    RELAY_TEST_NO_SKIP=1 bash dist/test-package.sh
else
    echo "SKIPPED: package test (dpkg -i needs root; CI runs as root)"
fi

if [ "${#features[@]}" -gt 0 ]; then
    step "ebpf program lints"
    EBPF_PROGRAM_ONLY=1 bash ebpf/test.sh
elif [ -x ebpf/setup-toolchain.sh ]; then
    echo "SKIPPED: eBPF build and tests (the toolchain installs as root only; CI runs as root)"
fi

if [ "${SKIP_E2E:-0}" != 1 ] && [ -x relay/tests/deltachat/run.sh ]; then
    step "delta chat end-to-end"
    RELAY_BIN="$PWD/target/debug/relay" TEST_DNS_BIN="$PWD/target/debug/test-dns" \
        bash relay/tests/deltachat/run.sh
fi

if [ -x fuzz/run.sh ]; then
    step "fuzz (short runs, log in target/fuzz.log)"
    mkdir -p target
    # Unoptimized (FUZZ_DEV=1): every seed and a few seconds of mutations per target, at half
    # the build time; fuzz/README.md records the long optimized runs.
    if ! FUZZ_DEV="${FUZZ_DEV:-1}" bash fuzz/run.sh "${FUZZ_SECONDS:-5}" > target/fuzz.log 2>&1; then
        # Which target failed and why (the tail alone shows only the last target's output).
        grep -E "^fuzz: .* FAILED|^==[0-9]+==ERROR|ERROR: libFuzzer|panicked at|^SUMMARY|Test unit written|^Done [0-9]+ runs|^fuzz: running" target/fuzz.log || true
        tail -60 target/fuzz.log
        exit 1
    fi
    grep -E "^fuzz:|Done [0-9]+ runs" target/fuzz.log || true
fi

step "all tests passed"
