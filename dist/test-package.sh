#!/usr/bin/env bash
# Tests the Debian package and its systemd units on this machine (dist/README.md):
#   1. the units: `systemd-analyze security --offline=yes` rates chatmail-relay.service "OK";
#   2. a .deb built with cargo-deb from the binaries already built (RELAY_PROFILE, default `dev`:
#      the ones `cargo test` built, with feature `ebpf` under tools/test-all.sh);
#   3. `dpkg -i`: the user, the 0700 data directory, the ini from `chatmail-relay init`, the units
#      (`systemd-analyze verify` on the installed ones), the timer enabled;
#   4. `chatmail-relay import` of a cmdeploy-shaped mailbox tree (an account with its
#      {SHA512-CRYPT} password, a seen message, a device token), as the relay's user;
#   5. the installed relay started as the unit starts it (user chatmail-relay, the unit's
#      capabilities as ambient ones, no new privileges, the installed ini plus
#      metrics_address) inside a network namespace of its own, so it binds the standard ports
#      without meeting anything on the machine and sends nothing out; an account created by an
#      IMAPS login, a message submitted on port 465 and read back; the imported account logs in
#      with its old password and finds its message \Seen and its token; /metrics shows exactly
#      that traffic; `chatmail-relay status` counts both accounts; a clean stop (SIGTERM, exit 0);
#   6. `dpkg --purge`: binary and ini gone, the store kept (then removed here, with the user).
# PID 1 need not be systemd (dpkg and systemd-analyze work without it).
#
# Needs root, dpkg, cargo-deb, iproute2, setpriv, python3. Without them it prints SKIPPED and
# passes, unless RELAY_TEST_NO_SKIP is set (tools/test-all.sh sets it as root).
# Usage: bash dist/test-package.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf 'test-package: %s\n' "$*" >&2; }
skip() {
    if [ -n "${RELAY_TEST_NO_SKIP:-}" ]; then
        log "FAILED: would skip ($1) but RELAY_TEST_NO_SKIP is set"
        exit 1
    fi
    echo "SKIPPED: package test: $1"
    exit 0
}
fail() {
    log "FAILED: $*"
    exit 1
}

[ "$(id -u)" = 0 ] || skip "needs root (dpkg -i, network namespaces)"
for tool in dpkg systemd-analyze ip setpriv python3; do
    command -v "$tool" >/dev/null || skip "$tool is missing"
done
cargo deb --version >/dev/null 2>&1 || skip "cargo-deb is missing (cargo install --locked cargo-deb)"

# A real relay's data on this machine is never touched.
if dpkg-query -W -f='${Status}' chatmail-relay 2>/dev/null | grep -q 'ok installed'; then
    fail "chatmail-relay is installed on this machine; this test installs and purges its own"
fi
if [ -n "$(ls -A /var/lib/chatmail-relay 2>/dev/null)" ]; then
    fail "/var/lib/chatmail-relay is not empty; this test would use it"
fi

# 1. The unit's sandboxing, rated offline.
rating=$(systemd-analyze security --offline=yes dist/systemd/chatmail-relay.service 2>&1 | tail -1)
log "$rating"
echo "$rating" | grep -qE 'Overall exposure level for chatmail-relay.service: [0-9.]+ OK' \
    || fail "exposure of chatmail-relay.service is not rated OK: $rating"

# 2. The package.
profile=${RELAY_PROFILE:-dev}
dir=target/debug
[ "$profile" = dev ] || dir=target/$profile
for bin in relay expire echo; do
    [ -x "$dir/$bin" ] || fail "$dir/$bin missing: cargo build --profile $profile -p relay -p relay-bots"
done
rm -rf target/debian
cargo deb -p relay --no-build --profile "$profile" --fast --quiet -o target/debian/ >/dev/null
deb=$(ls target/debian/chatmail-relay_*.deb)
log "built $deb ($(du -h "$deb" | cut -f1))"

ns="relay-pkg-$$"
pid=
tree_root=
cleanup() {
    [ -n "$tree_root" ] && rm -rf "$tree_root"
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
    dpkg --purge chatmail-relay >/dev/null 2>&1 || true
    rm -rf /var/lib/chatmail-relay
    userdel chatmail-relay 2>/dev/null || true
}
trap cleanup EXIT

# 3. Install.
CHATMAIL_DOMAIN=127.0.0.1 dpkg -i "$deb" >/dev/null
getent passwd chatmail-relay >/dev/null || fail "postinst made no user chatmail-relay"
[ "$(stat -c '%a %U' /var/lib/chatmail-relay)" = "700 chatmail-relay" ] \
    || fail "/var/lib/chatmail-relay is $(stat -c '%a %U' /var/lib/chatmail-relay)"
grep -qx 'mail_domain = 127.0.0.1' /etc/chatmail-relay/chatmail.ini \
    || fail "the installed chatmail.ini is not for CHATMAIL_DOMAIN"
/usr/bin/chatmail-relay --version >/dev/null
units=(chatmail-relay.service chatmail-expire.service chatmail-expire.timer chatmail-echo.service)
for u in "${units[@]}"; do
    [ -f "/lib/systemd/system/$u" ] || fail "$u not installed"
done
# `verify` checks the units' syntax and that their ExecStart binaries exist (the echo bot's
# deltachat-rpc-server is an argument, installed by the operator).
if ! out=$(cd /lib/systemd/system && systemd-analyze verify "${units[@]}" 2>&1) || [ -n "$out" ]; then
    fail "systemd-analyze verify: $out"
fi
[ -L /etc/systemd/system/timers.target.wants/chatmail-expire.timer ] \
    || fail "chatmail-expire.timer is not enabled"
[ -L /etc/systemd/system/multi-user.target.wants/chatmail-relay.service ] \
    || fail "chatmail-relay.service is not enabled"

# 4. Moving from a cmdeploy relay: a reference mailbox tree (one account with its
# {SHA512-CRYPT} password, a seen message, a device token) imported into the installed relay's
# store, as the relay's user, before the first start.
tree_root=$(mktemp -d /tmp/relay-pkg-tree.XXXXXX)
olddir="$tree_root/mail/[127.0.0.1]/olduser01@[127.0.0.1]"
mkdir -p "$olddir/cur" "$olddir/new" "$olddir/tmp"
printf '{SHA512-CRYPT}%s\n' "$(openssl passwd -6 -salt pkgtest01 'old-password-123')" > "$olddir/password"
touch "$olddir/enforceE2EEincoming"
printf '{"devicetoken": {"pkg-test-token": %s}}' "$(date +%s)" > "$olddir/metadata.json"
msg=relay/testdata/mail/dc-encrypted.eml
cp "$msg" "$olddir/cur/1700000000.M1P1.oldhost,S=$(stat -c %s "$msg"):2,S"
chmod -R a+rX "$tree_root"
as_relay=(setpriv --reuid=chatmail-relay --regid=chatmail-relay --init-groups)
"${as_relay[@]}" /usr/bin/chatmail-relay import "$tree_root/mail/[127.0.0.1]" \
    --config /etc/chatmail-relay/chatmail.ini > target/debian/import.log 2>&1 \
    || { cat target/debian/import.log >&2; fail "relay import"; }
grep -qi 'accounts' target/debian/import.log || { cat target/debian/import.log >&2; fail "no import summary"; }

# 5. Start the installed relay as its unit does, in a network namespace of its own. The edits an
# operator makes anyway: account creation is refused above a load average of max_load_1m (this
# machine may be compiling), and the metrics listener is off until it is given an address.
cat >> /etc/chatmail-relay/chatmail.ini <<'INI'
max_load_1m = 1000
metrics_address = 127.0.0.1:9090
INI
unit=/lib/systemd/system/chatmail-relay.service
caps=$(sed -n 's/^AmbientCapabilities=//p' $unit | tr 'A-Z' 'a-z' | sed 's/cap_/+/g; s/ /,/g')
exec_start=$(sed -n 's/^ExecStart=//p' $unit)
ip netns add "$ns"
ip -n "$ns" link set lo up
log "starting '$exec_start' as chatmail-relay with $caps"
# shellcheck disable=SC2086 # ExecStart is split into words as systemd does (no quotes in it).
ip netns exec "$ns" setpriv --reuid=chatmail-relay --regid=chatmail-relay --init-groups \
    --inh-caps="-all,$caps" --ambient-caps="$caps" --bounding-set="-all,$caps" --no-new-privs \
    $exec_start > target/debian/relay.log 2>&1 &
pid=$!

ip netns exec "$ns" python3 - "$root" <<'PY' || { tail -30 target/debian/relay.log >&2; fail "the installed relay did not serve"; }
import imaplib, os, smtplib, socket, ssl, sys, time

os.chdir(sys.argv[1])

deadline = time.time() + 30
while True:
    try:
        socket.create_connection(("127.0.0.1", 993), timeout=1).close()
        socket.create_connection(("127.0.0.1", 465), timeout=1).close()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("ports 993 and 465 did not open within 30 s")
        time.sleep(0.1)

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the relay's self-signed certificate for an IP domain
addr, password = "pkgtest01@[127.0.0.1]", "a-long-enough-password-1"
imap = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx)
imap.login(addr, password)  # creates the account
# A message Delta Chat sent (the encryption gate's fixture), from this account.
raw = open("relay/testdata/mail/dc-encrypted.eml", "rb").read().decode().replace("\r\n", "\n")
head, _, rest = raw.partition("\n\n")
fields, keep = [], False
for line in head.split("\n"):
    if not line.startswith((" ", "\t")):
        keep = not line.startswith(("Return-Path:", "Received:", "From:"))
    if keep:
        fields.append(line)
body = "\n".join([f"From: <{addr}>"] + fields + ["", rest]).replace("\n", "\r\n")
with smtplib.SMTP_SSL("127.0.0.1", 465, context=ctx) as smtp:
    smtp.login(addr, password)
    refused = smtp.sendmail(addr, [addr], body)
    assert not refused, refused
imap.select("INBOX")
for _ in range(50):
    typ, data = imap.search(None, "ALL")
    if data[0].split():
        break
    time.sleep(0.1)
assert data[0].split(), "the submitted message did not arrive"
imap.logout()

# The imported account: its old password, its message with the flag it had, its device token.
old = imaplib.IMAP4_SSL("127.0.0.1", 993, ssl_context=ctx)
old.login("olduser01@[127.0.0.1]", "old-password-123")
old.select("INBOX")
typ, data = old.fetch("1", "(FLAGS)")
assert typ == "OK" and b"\\Seen" in data[0], data
typ, data = old.xatom("GETMETADATA", "INBOX", "/private/devicetoken")
assert typ == "OK", data
meta = old.untagged_responses.get("METADATA", [])
assert any(b"pkg-test-token" in m for m in meta if isinstance(m, bytes)), meta
old.logout()

# The metrics (metrics_address): exactly this traffic. The imported account was not "created".
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9090/metrics", timeout=10).read().decode()
values = {}
for line in text.splitlines():
    if line and not line.startswith("#"):
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
expect = {
    "chatmail_accounts_created_total": 1,
    'chatmail_messages_accepted_total{path="submission"}': 1,
    'chatmail_deliveries_total{where="local",result="delivered"}': 1,
}
for name, want in expect.items():
    assert values.get(name) == want, (name, values.get(name), text)
PY

# What it says about itself: `relay status` over the admin socket (a file path, so from outside
# the namespace), as root, which the socket's peer check admits beside the relay's user.
/usr/bin/chatmail-relay status --config /etc/chatmail-relay/chatmail.ini > target/debian/status.txt \
    || fail "relay status: exit $?"
grep -qx 'accounts: 2' target/debian/status.txt \
    || { cat target/debian/status.txt >&2; fail "relay status does not count the 2 accounts"; }

# The unit's identity and capabilities, as the kernel sees them.
uid=$(id -u chatmail-relay)
grep -qE "^Uid:\s+$uid\s+$uid\s+$uid\s+$uid" "/proc/$pid/status" \
    || fail "the relay does not run as chatmail-relay: $(grep ^Uid "/proc/$pid/status")"
grep -qE '^NoNewPrivs:\s+1' "/proc/$pid/status" || fail "NoNewPrivs is not set"
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || { tail -30 target/debian/relay.log >&2; fail "exit status $status after SIGTERM"; }
if grep -q ' ERROR ' target/debian/relay.log; then
    grep ' ERROR ' target/debian/relay.log >&2
    fail "the relay logged errors"
fi
[ -n "$(ls -A /var/lib/chatmail-relay)" ] || fail "the relay wrote no store in its StateDirectory"

# 6. Purge.
dpkg --purge chatmail-relay >/dev/null
[ ! -e /usr/bin/chatmail-relay ] || fail "purge left /usr/bin/chatmail-relay"
[ ! -e /etc/chatmail-relay/chatmail.ini ] || fail "purge left the ini"
[ -d /var/lib/chatmail-relay ] || fail "purge removed the store"
log "ok"
