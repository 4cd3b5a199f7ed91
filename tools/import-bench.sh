#!/usr/bin/env bash
# `relay import` rate (issue 16, item 6): generates a cmdeploy-shaped tree of $IMPORT_N messages
# (accounts of $IMPORT_PER_ACCOUNT messages each, half in cur/ with flags and listed in
# dovecot-uidlist, half in new/ unlisted; $IMPORT_SIZE-byte messages, gzip-compressed as the
# reference's `zlib_save = gz` stores them unless IMPORT_GZIP=0), then measures
#
#   cp -a      copying the same tree (the anchor: a file-by-file copy of the same files)
#   import     `relay import TREE --data DATA` (release build) into an empty store
#   again      the same import a second time (nothing to import: the idempotence check's cost)
#
# and prints messages/s for each. Both runs read the tree from a warm page cache (the copy runs
# first and warms it for the import).
#
#   tools/import-bench.sh
#   IMPORT_N=1000000 tools/import-bench.sh
#   IMPORT_RELAY=/path/relay tools/import-bench.sh     # no cargo
#
# Disk: about (4 KiB + message size) per message for the tree, as much again for the copy, and
# the message bytes for the store; everything under $IMPORT_OUT (target/import-bench), removed at
# the end unless IMPORT_KEEP=1.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${IMPORT_N:-100000}
PER=${IMPORT_PER_ACCOUNT:-1000}
SIZE=${IMPORT_SIZE:-2400}
GZ=${IMPORT_GZIP:-1}
OUT=${IMPORT_OUT:-$ROOT/target/import-bench}
RELAY=${IMPORT_RELAY:-}
if [ -z "$RELAY" ]; then
    cargo build --release --locked -p relay --bin relay >&2
    RELAY=$ROOT/target/release/relay
fi
rm -rf "$OUT"
mkdir -p "$OUT"
TREE=$OUT/tree/127.0.0.1
echo "generating $N messages ($PER per account, $SIZE bytes, gzip=$GZ) in $TREE" >&2
python3 - "$TREE" "$N" "$PER" "$SIZE" "$GZ" <<'EOF'
import gzip, os, sys
tree, n, per, size, gz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
# One fixed {SHA512-CRYPT} hash (password "bench-password"): hashing is not what is measured.
hash_ = "{SHA512-CRYPT}$6$saltsalt$rGHbrrsOT1WLTt4dcfZKq1FiG//1B7ZAMkD.MeAC8/d9MOtB5EzYEffFnBarQhF6MiLywY/KggaYjrNNrzAnj/"
filler = ("-----BEGIN PGP MESSAGE-----\r\n" + ("wcBMA" * 15 + "\r\n") * (size // 77 + 1))[:size]
made = 0
account = 0
while made < n:
    d = os.path.join(tree, f"bench{account:06d}@[127.0.0.1]")
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    with open(os.path.join(d, "password"), "w") as f:
        f.write(hash_)
    open(os.path.join(d, "enforceE2EEincoming"), "w").close()
    listed = []
    for i in range(min(per, n - made)):
        t = 1_700_000_000 + i
        body = (f"From: a@x\r\nTo: bench{account:06d}@[127.0.0.1]\r\nSubject: [...]\r\n"
                f"Message-ID: <{account}.{i}@x>\r\nContent-Type: multipart/encrypted\r\n\r\n{filler}").encode()
        base = f"{t}.M{i}P1.bench,S={len(body)},W={len(body)}"
        data = gzip.compress(body, 1) if gz else body
        if i % 2 == 0:
            name, sub = f"{base}:2,S", "cur"
            listed.append((i // 2 + 1, base))
        else:
            name, sub = base, "new"
        with open(os.path.join(d, sub, name), "wb") as f:
            f.write(data)
    with open(os.path.join(d, "dovecot-uidlist"), "w") as f:
        f.write(f"3 V1600000000 N{len(listed) + 1} G00\n")
        for uid, base in listed:
            f.write(f"{uid} :{base}\n")
    made += min(per, n - made)
    account += 1
EOF
du -sh "$OUT/tree" >&2
secs() { python3 -c 'import time; print(time.monotonic())'; }
rate() { python3 -c "import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'{b - a:.2f} s, {n / (b - a):,.0f} msgs/s')" "$@"; }
sync
t0=$(secs); cp -a "$OUT/tree" "$OUT/copy"; sync; t1=$(secs)
CP=$(rate "$N" "$t0" "$t1")
t0=$(secs); "$RELAY" import "$TREE" --data "$OUT/data" > "$OUT/import.txt" 2> "$OUT/import.log"; t1=$(secs)
IMP=$(rate "$N" "$t0" "$t1")
t0=$(secs); "$RELAY" import "$TREE" --data "$OUT/data" > "$OUT/again.txt" 2> "$OUT/again.log"; t1=$(secs)
AGAIN=$(rate "$N" "$t0" "$t1")
head -2 "$OUT/import.txt" >&2
head -2 "$OUT/again.txt" >&2
cat <<TABLE | tee "$OUT/table.md"
| $N messages ($SIZE B, gzip=$GZ, $PER per account) | time, rate |
|---|---|
| \`cp -a\` of the tree (+ sync) | $CP |
| \`relay import\` into an empty store | $IMP |
| \`relay import\` again (nothing to import) | $AGAIN |
TABLE
du -sh "$OUT/data/store" >&2
if [ "${IMPORT_KEEP:-0}" != 1 ]; then
    rm -rf "$OUT/tree" "$OUT/copy" "$OUT/data"
fi
