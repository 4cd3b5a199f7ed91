#!/usr/bin/env bash
# Backup of a large store: fills a store of SIZE_MB MiB (relay/examples/store_fill.rs, 64 KiB
# messages over 100 accounts, 64 MiB segments), starts `relay dev` on it, times `relay backup`
# while the relay runs, then `relay check` of the copy. Prints the figures; nothing is asserted.
#
#   SIZE_MB=2048 bash tools/backup-bench.sh
#
# Needs about twice SIZE_MB of free disk under WORK (default: a new directory in /tmp, removed at
# the end unless KEEP=1). The page cache is left warm (the relay reads the segments it copies
# from its own maps).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-2048}
WORK=${WORK:-$(mktemp -d /tmp/backup-bench.XXXXXX)}
cargo build -q -p relay --bin relay --example store_fill
BIN=target/debug
"$BIN/examples/store_fill" "$WORK/data" "$SIZE_MB"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
"$BIN/relay" dev --io epoll --data "$WORK/data" --set mx_port=0 --set smtp_port=0 \
    --set imap_port=0 --set https_port=0 --set http_port=0 --set turn_port=0 \
    --set "smtps_port=$(port)" --set "imaps_port=$(port)" >/dev/null 2>"$WORK/relay.log" &
RELAY=$!
cleanup() {
    kill "$RELAY" 2>/dev/null || true
    wait "$RELAY" 2>/dev/null || true
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$WORK/data/admin.sock" ] && break; sleep 0.1; done
"$BIN/relay" status --data "$WORK/data" | grep -E '^(store|accounts)'
start=$(date +%s.%N)
"$BIN/relay" backup "$WORK/copy" --data "$WORK/data"
end=$(date +%s.%N)
bytes=$(du -sb "$WORK/copy/store" | cut -f1)
python3 -c "import sys; b,t=int(sys.argv[1]),float(sys.argv[2]); print(f'backup: {b/2**20:.0f} MiB in {t:.2f} s = {b/2**20/t:.0f} MiB/s (wall time of relay backup)')" "$bytes" "$(python3 -c "print($end - $start)")"
start=$(date +%s.%N)
"$BIN/relay" check --data "$WORK/copy" | tail -3
end=$(date +%s.%N)
python3 -c "import sys; b,t=int(sys.argv[1]),float(sys.argv[2]); print(f'check of the copy: {t:.2f} s = {b/2**20/t:.0f} MiB/s')" "$bytes" "$(python3 -c "print($end - $start)")"
