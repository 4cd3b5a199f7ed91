#!/usr/bin/env bash
# Installs what the eBPF build (`cargo build -p relay --features ebpf`) needs:
#   - LLVM 22 development files (bpf-linker links against them; the major version must equal
#     rustc's LLVM major, see `rustc -vV`),
#   - bpf-linker 0.13.0 built against that LLVM,
#   - the rust-src component (for `-Z build-std=core`, enabled on stable with RUSTC_BOOTSTRAP=1).
# Idempotent: every step checks first and returns quickly when already done.
set -euo pipefail

LLVM_MAJOR=22
LLVM_PREFIX=/usr/lib/llvm-${LLVM_MAJOR}
BPF_LINKER_VERSION=0.13.0

log() { printf 'setup-toolchain: %s\n' "$*" >&2; }

rustc_llvm=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
if [ "$rustc_llvm" != "$LLVM_MAJOR" ]; then
    log "warning: rustc uses LLVM $rustc_llvm but this script installs LLVM $LLVM_MAJOR;"
    log "bpf-linker must be built against rustc's LLVM major (see ebpf/README.md)"
fi

# 1. LLVM development files.
if [ ! -x "$LLVM_PREFIX/bin/llvm-config" ]; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y "llvm-${LLVM_MAJOR}-dev"; then
        log "llvm-${LLVM_MAJOR}-dev not found: refreshing the package lists"
        apt-get update
        apt-get install -y "llvm-${LLVM_MAJOR}-dev"
    fi
else
    log "llvm-${LLVM_MAJOR}-dev present"
fi

# 2. bpf-linker, built against that LLVM.
if command -v bpf-linker >/dev/null 2>&1 \
    && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    log "bpf-linker $BPF_LINKER_VERSION present"
else
    LLVM_PREFIX="$LLVM_PREFIX" cargo install --locked "bpf-linker@${BPF_LINKER_VERSION}" \
        --no-default-features --features "llvm-${LLVM_MAJOR}"
fi

# 3. Sources of core, for -Z build-std=core.
if rustup component list --installed | grep -q '^rust-src'; then
    log "rust-src present"
else
    rustup component add rust-src
fi

log "done"
