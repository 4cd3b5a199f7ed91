#!/usr/bin/env bash
# The eBPF build and its tests: installs the toolchain (idempotent, ~1 min the first time, instant
# after), checks the relay with feature `ebpf` (which builds and embeds ebpf/program), then runs
# the rate-limit tests with the feature on:
#   - ebpf/common: the admission algorithm (host, property tests),
#   - ratelimit::tests: the userspace twin,
#   - ratelimit::ebpf::tests: BPF_PROG_TEST_RUN on synthetic packets, XDP on a veth pair between
#     two network namespaces it creates and removes, generic-mode fallback on loopback.
# The privileged tests print "SKIPPED: <reason>" and pass when not run as root (they fail
# instead when RELAY_TEST_NO_SKIP is set).
#
# Usage: bash ebpf/test.sh   (from anywhere; CI runs it as root)
set -euo pipefail
cd "$(dirname "$0")/.."

bash ebpf/setup-toolchain.sh
# So bpf-linker is found when cargo was installed for another user's PATH.
export PATH="$HOME/.cargo/bin:$PATH"

# EBPF_PROGRAM_ONLY=1 (tools/test-all.sh, which builds, lints and tests the relay with feature
# `ebpf` in its main passes): only the XDP program's own lints.
if [ "${EBPF_PROGRAM_ONLY:-0}" = 1 ]; then
    cd ebpf/program
    exec env RUSTC_BOOTSTRAP=1 cargo clippy --locked --release \
        --target bpfel-unknown-none -Z build-std=core -- -D warnings
fi

# Feature-gated code lives in the library and its unit tests (the workspace-wide clippy, without
# features, covers the other targets). One pass: with the test profile the library is checked as
# a unit test target and, as the binaries' dependency, as it is shipped.
cargo clippy -p relay --features ebpf --lib --bins --profile test --locked -- -D warnings
# The XDP program is not a workspace member: lint it for its own target.
(cd ebpf/program && RUSTC_BOOTSTRAP=1 cargo clippy --locked --release \
    --target bpfel-unknown-none -Z build-std=core -- -D warnings)
cargo test -p relay-ebpf-common --features user --locked
# The end-to-end test puts the XDP program (loaded by the test) in front of the real relay
# (`relay dev`) as the listener. The relay binary itself needs no `ebpf` feature for that: use
# RELAY_BIN when the caller built one (tools/test-all.sh does), else build the plain one.
if [ -z "${RELAY_BIN:-}" ]; then
    cargo build -p relay --locked --bin relay
    RELAY_BIN="$PWD/target/debug/relay"
fi
RELAY_BIN="$RELAY_BIN" \
    cargo test -p relay --features ebpf --locked --lib ratelimit -- --nocapture
