#!/usr/bin/env bash
# Build every cargo-fuzz target and run each one briefly on its seed corpus.
# Usage: fuzz/run.sh [seconds-per-target]   (default 60)
# Env:   FUZZ_DEV=1  build without optimization (half the build time from scratch, a hundredth of
#                    the execution rate): enough to run every seed and a few mutations, as the
#                    test command does; long runs use the default optimized build.
# Skips (exit 0, with the reason printed) when cargo-fuzz or a C toolchain is missing.
# Uses RUSTC_BOOTSTRAP=1 so a stable toolchain can build with -Zsanitizer.
set -euo pipefail

secs="${1:-60}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"

skip() { echo "fuzz: SKIPPED: $*"; exit 0; }

command -v cargo >/dev/null || skip "cargo not found"
cargo fuzz --version >/dev/null 2>&1 || skip "cargo-fuzz not installed (cargo install cargo-fuzz)"
command -v cc >/dev/null || skip "no C compiler (libFuzzer is built from C++ sources)"
command -v c++ >/dev/null || skip "no C++ compiler (libFuzzer is built from C++ sources)"

export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list)
started=$(date +%s)
# One cargo invocation builds every target (the relay crate and deps once, the binaries in
# parallel).
echo "fuzz: building $(echo $targets | wc -w) targets"
profile=()
# libFuzzer's per-input limit: an input slower than this is reported as a hang and fails the
# run. The unoptimized build (with ASan) is several times slower, and CI machines vary.
timeout=10
if [ "${FUZZ_DEV:-0}" = 1 ]; then
    profile=(--dev)
    timeout=30
fi
cargo fuzz build "${profile[@]}"
status=0
for t in $targets; do
    seeds="corpus/$t"
    mkdir -p "$seeds"
    # Work on a scratch copy so new inputs do not pile up in the committed seed corpus.
    work="$(mktemp -d)"
    cp -r "$seeds/." "$work/"
    # 64 KiB inputs keep the rate up; the big hostile shapes (20k headers, 2000 nesting levels,
    # 10 MiB messages) are covered by the unit tests and the benchmark.
    echo "fuzz: running $t for ${secs}s"
    if ! cargo fuzz run "${profile[@]}" "$t" "$work" -- -max_total_time="$secs" -max_len=65536 -timeout="$timeout" -rss_limit_mb=4096; then
        echo "fuzz: $t FAILED (artifacts in fuzz/artifacts/$t)"
        status=1
    fi
    rm -rf "$work"
done
echo "fuzz: all targets done in $(( $(date +%s) - started ))s"
exit $status
