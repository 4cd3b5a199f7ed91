#!/usr/bin/env python3
"""Writes the seed corpora of the protocol and store fuzz targets from the project's test data.

Usage: python3 fuzz/seeds.py   (rewrites fuzz/corpus/<target>/seed-* for the targets below)

Sources: the client side (`C:` lines) of relay/testdata/smtp and relay/testdata/imap, the small
messages of relay/testdata/mail, the admin requests of the admin tests, and store records encoded
here after the table in relay/src/store/format.rs (little-endian, CRC32C frames).
"""
import json
import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTDATA = HERE.parent / "relay" / "testdata"
CORPUS = HERE / "corpus"


def client_lines(path):
    return [l[3:] if l.startswith("C: ") else "" for l in path.read_text().splitlines() if l.startswith("C:")]


def stream(lines):
    return "".join(l + "\r\n" for l in lines).encode()


def write(target, seeds):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("seed-*"):
        old.unlink()
    for name, data in seeds:
        (d / f"seed-{name}").write_bytes(data)


# --- SMTP -----------------------------------------------------------------------------------
smtp = {p.stem: client_lines(p) for p in sorted((TESTDATA / "smtp").glob("*.txt"))}
frame_seeds, command_seeds = [], []
for name, lines in smtp.items():
    s = stream(lines)
    frame_seeds.append((name, b"\x64\x00\x10" + s))
    frame_seeds.append((name + "-chunks", b"\xff\x80\x07" + s))
    in_data = False
    for i, l in enumerate(lines):
        if in_data:
            in_data = l != "."
        else:
            command_seeds.append((f"{name}-{i}", l.encode()))
            in_data = l.upper() == "DATA"
frame_seeds += [
    ("bare-lf", b"\x10\x00\x03EHLO x\nDATA\r\n"),
    ("data-dots", b"\x10\x00\x05DATA\r\n..a\r\n.\rb\r\n\r\n.\r\nQUIT\r\n"),
    ("data-over-limit", b"\x01\x00\x09DATA\r\n" + b"y" * 200 + b"\r\n.\r\nNOOP\r\n"),
    ("long-line", b"\x10\x0f\xfeNOOP " + b"z" * 4200 + b"\r\nQUIT\r\n"),
]
command_seeds += [
    ("mail-params", b"MAIL FROM:<a@[127.0.0.1]> SIZE=100 BODY=8BITMIME AUTH=<>"),
    ("mail-null", b"MAIL FROM:<>"),
    ("rcpt-route", b"RCPT TO:<@x.org,@y.org:\"q\\\"x\"@b.example> NOTIFY=NEVER"),
    ("auth", b"AUTH PLAIN ="),
    ("expn", b"EXPN list"),
]
write("smtp_frame", frame_seeds)
write("smtp_command", command_seeds)

# --- IMAP -----------------------------------------------------------------------------------
imap = {p.stem: stream(client_lines(p)) for p in sorted((TESTDATA / "imap").glob("*.txt"))}
frame_seeds = [(n, b"\x04\x00\x00\x20" + s) for n, s in imap.items()]
frame_seeds += [(n + "-raw", b"\x04\x55\x80\x31" + s) for n, s in imap.items()]
frame_seeds += [
    # 0xff hi lo expands to hi*256+lo bytes of 'x': a line right at LINE_CAP, one over it.
    ("line-cap", b"\x04\x00\x01\x00a1 NOOP \xff\xff\xf8\r\na2 NOOP\r\n"),
    ("line-over-cap", b"\x04\x00\x01\x00a1 NOOP \xff\xff\xff\xff\x00\x10\r\na2 NOOP\r\n"),
    # The line at LINE_CAP again, in chunks one of which ends between its CR and LF (seed 0x81b1).
    ("line-cap-cr-split", b"\x04\x00\x81\xb1a1 NOOP \xff\xff\xf8\r\na2 NOOP\r\n"),
    ("literal-over-cap", b"\x01\x00\x00\x40a APPEND INBOX {2000+}\r\n\xff\x07\xd0\r\nb NOOP\r\n"),
    ("sync-literal", b"\x04\x00\x00\x05a LOGIN {3}\r\nbob {2+}\r\npw\r\n"),
]
write("imap_frame", frame_seeds)
command_seeds = list(imap.items())
command_seeds += [
    ("search", b"a UID SEARCH OR UNSEEN (SINCE 1-Feb-1994 MODSEQ 5) NOT HEADER Chat-Version 1.0\r\n"),
    ("store", b"a UID STORE 1:*,7 +FLAGS.SILENT (UNCHANGEDSINCE 9) (\\Seen $Kw)\r\n"),
    ("fetch", b"a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (From)]<0.10> ENVELOPE) (CHANGEDSINCE 3)\r\n"),
    ("metadata", b"a SETMETADATA \"\" (/private/devicetoken {3+}\r\nabc /shared/x NIL)\r\n"),
    ("getmetadata", b"a GETMETADATA (MAXSIZE 100) INBOX (/private/comment /shared/comment)\r\n"),
    ("append-date", b"a APPEND INBOX (\\Seen) \"31-Dec-9999 23:59:60 -2359\" {1+}\r\nx\r\n"),
    # Found by a long run: a signed hour below 23 made the date arithmetic overflow.
    ("append-negative-hour", b"a APPEND INBOX (\\Seen) \"31-Dec-9999 -2222222222222222212:22:59 -2359\" {1+}\r\nx\r\n"),
]
write("imap_command", command_seeds)

# --- Store records --------------------------------------------------------------------------
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def u32(v): return struct.pack("<I", v)
def u64(v): return struct.pack("<Q", v)
def i64(v): return struct.pack("<q", v)
def bstr(b): return u32(len(b)) + b
def vec(items): return u32(len(items)) + b"".join(items)


records = {
    "account-create": (3, u32(1) + bstr(b"alice@[127.0.0.1]") + bstr(b"{SHA512-CRYPT}$6$x") + i64(1_700_000_000) + u32(7)),
    "account-delete": (4, u32(1)),
    "last-login": (5, u32(1) + u32(19_700)),
    "mailbox-create": (6, u32(1) + u32(2) + bstr(b"DeltaChat") + u32(8)),
    "mailbox-delete": (7, u32(1) + u32(2)),
    "mailbox-rename": (8, u32(1) + u32(2) + bstr(b"Archive/2026")),
    "subscribe": (9, u32(1) + bstr(b"DeltaChat") + b"\x01"),
    "keyword": (10, u32(1) + bstr(b"$Forwarded")),
    "insert": (11, u32(0) + u64(0) + u32(40) + i64(1_700_000_100)
               + vec([u32(1) + u32(1) + u32(1) + u64(2) + u64(1)])),
    "flags": (12, u32(1) + u32(1) + u64(3) + vec([u32(1) + u64(9), u32(2) + u64(0)])),
    "expunge": (13, u32(1) + u32(1) + u64(4) + vec([u32(1), u32(5)])),
    "copy": (14, u32(1) + u32(1) + u32(2) + u64(5) + b"\x01" + vec([u32(1) + u32(1)])),
    "metadata": (15, u32(1) + b"\x01" + u32(1) + bstr(b"/private/comment") + b"\x01" + bstr(b"hi")),
    "metadata-server": (15, u32(1) + b"\x00" + bstr(b"/private/devicetoken") + b"\x00"),
    "queue-add": (16, u32(0) + u64(9) + u32(40) + u64(1)
                  + vec([u32(0) + bstr(b"example.net") + b"\x02", u32(1) + bstr(b"[127.0.0.1]") + b"\x01"])),
    "queue-done": (17, u64(1) + u32(0) + u32(0b10)),
    "device-tokens": (15, u32(1) + b"\x01" + u32(1) + bstr(b"/private/devicetoken")
                      + b"\x01" + bstr(b"1700000000 openpgp:tok1\n1700000050 tok2\n")),
    "notify-add": (18, u64(0) + i64(1_700_000_100) + vec([u32(1)])),
    "notify-done": (19, u32(1) + u64(0)),
    "uid-next": (20, u32(1) + u32(2) + u32(4242)),
    "body-move": (21, u32(0) + vec([u64(0) + u32(40) + u32(1) + u64(9)])),
}


def frame(kind, payload):
    body = bytes([kind]) + payload
    return u32(len(body)) + u32(crc32c(body)) + body


body = b"From: a@b\r\nSubject: x\r\n\r\nhello\r\n"
segment = frame(2, body) + b"".join(frame(k, p) for k, p in records.values())
store_seeds = [(n, bytes([k]) + p) for n, (k, p) in records.items()]
store_seeds += [("segment", segment), ("segment-sealed", segment + frame(1, b"") + b"\0" * 8)]
write("store_record", store_seeds)

recovery = [
    ("clean", b"\x00"),
    ("zeros", b"\x00" + b"\0" * 64),
    ("torn-frame", b"\x00" + frame(*records["mailbox-create"])[:-3]),
    ("bad-crc", b"\x00" + frame(*records["keyword"])[:-1] + b"\x00"),
    ("valid-then-torn", b"\x00" + frame(*records["subscribe"]) + frame(*records["keyword"])[:11]),
]
# Odd mode: `kind, len_lo, len_hi, payload` groups framed by the target with valid CRCs.
for n in ["keyword", "flags", "metadata", "mailbox-rename", "account-delete", "insert"]:
    k, p = records[n]
    recovery.append(("framed-" + n, b"\x01" + bytes([k]) + struct.pack("<H", len(p)) + p + b"\x07\x07"))
recovery.append(("framed-body-insert", b"\x01\x02" + struct.pack("<H", len(body)) + body
                 + b"\x0b" + struct.pack("<H", len(records["insert"][1])) + records["insert"][1]))
recovery.append(("framed-seal", b"\x01\x01\x00\x00garbage"))
# A queued message: the stored body (envelope, then the message) and its QueueAdd; the target's
# prefix queued entry 1.0 already, so the QueueDone finishes a recipient of it.
envelope = (b"\x01" + u64(2) + i64(1_700_000_300) + bstr(b"alice@example.org")
            + vec([bstr(b"example.net") + vec([bstr(b"bob@example.net")])]))
stored = envelope + body
queue_add = u32(0) + u64(9) + u32(len(stored)) + u64(2) + vec([u32(0) + bstr(b"example.net") + b"\x01"])
recovery.append(("framed-body-queue-add", b"\x01\x02" + struct.pack("<H", len(stored)) + stored
                 + b"\x10" + struct.pack("<H", len(queue_add)) + queue_add))
for n in ["queue-add", "queue-done"]:
    k, p = records[n]
    recovery.append(("framed-" + n, b"\x01" + bytes([k]) + struct.pack("<H", len(p)) + p))
write("store_recovery", recovery)

# --- MIME -----------------------------------------------------------------------------------
mails = [(p.stem, p.read_bytes()) for p in sorted((TESTDATA / "mail").glob("*.eml")) if p.stat().st_size <= 8192]
mails += [
    ("rfc822-in-mixed", b"Content-Type: multipart/mixed; boundary=X\r\n\r\n--X\r\nContent-Type: message/rfc822\r\n\r\n"
     b"From: a@b\r\nTo: c@d\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=Y\r\n\r\n--Y\r\n\r\nplain\r\n"
     b"--Y\r\nContent-Type: text/html; charset=\"utf-8\"\r\n\r\n<b>x</b>\r\n--Y--\r\n--X\r\nContent-Disposition: attachment; "
     b"filename=\"a\\\"b.txt\"\r\n\r\ndata\r\n--X--\r\n"),
    ("digest", b"Content-Type: multipart/digest; boundary=D\n\n--D\n\nFrom: x@y\n\nbody\n--D--\n"),
]
write("bodystructure", mails)

# --- Admin ----------------------------------------------------------------------------------
admin = [
    {"op": "config"},
    {"op": "list_accounts"},
    {"op": "create_account", "name": "echo", "password": "0123456789ab", "dry_run": True},
    {"op": "create_account", "name": "Bot2@[127.0.0.1]", "password": "0123456789ab"},
    {"op": "delete_account", "name": "busy", "dry_run": True},
    {"op": "delete_account", "name": "old"},
    {"op": "expire_messages", "older_than_days": 5, "account": "busy"},
    {"op": "expire_messages", "older_than_days": 4, "larger_than": 1000, "dry_run": True},
    {"op": "trim_mailbox", "account": "new", "target_bytes": 1000, "dry_run": True, "details": True},
    {"op": "trim_mailbox", "target_bytes": 0, "now": 9_000_000_000},
    {"op": "expire_inactive", "inactive_days": 30, "dry_run": True, "details": True},
    {"op": "expire", "dry_run": True, "details": True, "now": -1},
    {"op": "expire", "delete_mails_after": 1, "delete_large_after": 0, "large_message_bytes": 10,
     "quota_target_bytes": 100, "delete_inactive_users_after": 2},
    {"op": "queue", "destination": "example.net", "limit": 5},
    {"op": "queue_retry"},
    {"op": "queue_drop", "id": "9.0", "dry_run": True},
    {"op": "queue_drop", "id": "x"},
]
seeds = [(f"{i:02}-{r['op']}", json.dumps(r).encode()) for i, r in enumerate(admin)]
seeds.append(("pipeline", b"\n".join(json.dumps(r).encode() for r in admin[:4])))
seeds.append(("bad", b'{"op":"list_accounts","extra":1}\n{"op":"nope"}\n{"op":"expire_messages","older_than_days":-1}'))
write("admin_protocol", seeds)

# --- Outbound SMTP client (server side of a conversation) -----------------------------------
# Input: [flags, body_len, seed_hi, seed_lo, stream..]; 0xfe = the server waits, 0xff hi lo =
# hi*256+lo bytes of "x" (see fuzz_targets/smtp_client.rs).
P = b"\xfe"


def replies(*rs):
    return b"".join(r.encode() + b"\r\n" + P for r in rs)


EHLO_PLAIN = "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-8BITMIME\r\n250 SMTPUTF8"
EHLO_TLS = "250-mx.example.net\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SMTPUTF8"
EHLO_TLS_MIN = "250-mx.example.net\r\n250 SIZE 100"
OPEN = replies("220 mx.example.net ESMTP", EHLO_PLAIN, "220 2.0.0 Ready to start TLS", EHLO_TLS)
client = [
    # Two recipients (one refused), pipelined, then QUIT.
    ("delivered", b"\x01\x02\x00\x01" + OPEN + replies(
        "250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 <r1@example.net>: User unknown",
        "354 End data with <CR><LF>.<CR><LF>", "250 2.0.0 Ok: queued as 1", "221 2.0.0 Bye")),
    # Three messages on one connection, one recipient each; the second refused at DATA's end.
    ("reuse", b"\x80\x01\x12\x34" + OPEN + replies(
        "250 Ok", "250 Ok", "354 go", "250 Ok", "250 Ok", "250 Ok", "354 go",
        "552 5.3.4 too big", "250 Ok", "250 Ok", "354 go", "250 Ok", "221 Bye")),
    # Every recipient refused: no DATA, RSET, then QUIT.
    ("all-refused", b"\x02\x01\x00\x07" + OPEN + replies(
        "250 Ok", "550 no", "551 no", "450 try later", "250 2.0.0 Reset", "221 Bye")),
    # MAIL refused with RCPTs pipelined behind it.
    ("mail-refused", b"\x01\x01\x00\x03" + OPEN + replies(
        "553 5.7.1 sender refused", "503 no", "503 no", "250 Ok", "221 Bye")),
    # A temporary refusal of DATA, then 421 closing.
    ("data-451", b"\x00\x01\x00\x05" + OPEN + replies("250 Ok", "250 Ok", "451 4.3.0 busy", "421 closing")),
    ("rcpt-421", b"\x03\x01\x00\x05" + OPEN + replies("250 Ok", "250 Ok", "421 4.4.2 timeout")),
    # No pipelining: MAIL, then RCPT one at a time.
    ("no-pipelining", b"\x01\x00\x00\x09" + replies(
        "220 mx ESMTP", "250-mx\r\n250 STARTTLS", "220 go ahead", EHLO_TLS_MIN,
        "250 Ok", "250 Ok", "250 Ok", "354 go", "250 Ok", "221 Bye")),
    # The body is over the announced SIZE (100 bytes): refused without sending.
    ("size-limit", b"\x00\x01\x00\x02" + replies(
        "220 mx ESMTP", "250-mx\r\n250 STARTTLS", "220 go ahead", EHLO_TLS_MIN, "221 Bye")),
    # A non-ASCII recipient with and without SMTPUTF8.
    ("smtputf8", b"\x21\x01\x00\x02" + OPEN + replies("250 Ok", "250 Ok", "250 Ok", "354 go", "250 Ok", "221 Bye")),
    ("no-smtputf8", b"\x20\x00\x00\x02" + replies(
        "220 mx ESMTP", "250-mx\r\n250 STARTTLS", "220 go ahead", EHLO_TLS_MIN, "221 Bye")),
    # A bounce (MAIL FROM:<>), replies split at odd places, LF-only line ends.
    ("bounce-lf", b"\x10\x01\x7f\x01" + b"220 mx\n" + P + b"250-mx\n250 STARTTLS\n" + P + b"220 ok\n" + P
     + b"250-mx\n250 PIPELINING\n" + P + b"250 Ok\n250 Ok\n" + P + b"354 go\n" + P + b"250 Ok\n" + P + b"221 Bye\n"),
    # Connection failures: refused greeting, refused EHLO, no STARTTLS, STARTTLS refused.
    ("greeting-554", b"\x00\x00\x00\x01" + replies("554 5.7.1 go away")),
    ("ehlo-550", b"\x00\x00\x00\x01" + replies("220 mx", "550 no")),
    ("no-starttls", b"\x00\x00\x00\x01" + replies("220 mx", "250-mx\r\n250 PIPELINING")),
    ("starttls-454", b"\x00\x00\x00\x01" + replies("220 mx", "250-mx\r\n250 STARTTLS", "454 4.7.0 TLS not available")),
    # Bytes injected after the 220 to STARTTLS, before the handshake: dropped.
    ("starttls-injection", b"\x00\x01\x00\x01" + replies("220 mx", "250-mx\r\n250 STARTTLS")
     + b"220 go ahead\r\n250 injected\r\n" + P + replies(EHLO_TLS, "250 Ok", "250 Ok", "354 go", "250 Ok", "221 Bye")),
    # Garbage, a code change within a reply, an early close.
    ("garbage", b"\x00\x00\x00\x01" + b"220 mx\r\n" + P + b"hello there\r\n"),
    ("code-change", b"\x00\x00\x00\x01" + replies("220 mx", "250-mx\r\n251 STARTTLS")),
    ("early-close", b"\x00\x01\x00\x01" + OPEN + replies("250 Ok")),
    # Long lines and replies near the caps (4096-byte lines, 64 lines) refusing DATA for 16
    # recipients.
    ("long-line", b"\x00\x00\x00\x01" + b"220 " + b"\xff\x0f\xf0" + b"\r\n" + P + replies("250-mx\r\n250 STARTTLS")),
    ("too-long-line", b"\x00\x00\x00\x01" + b"220 " + b"\xff\x10\x00" + b"\r\n"),
    ("big-reply", b"\x0f\x01\x00\x01" + OPEN + replies("250 Ok") + replies(*["250 Ok"] * 16)
     + b"".join(b"554-" + b"\xff\x0f\xf0" + b"\r\n" for _ in range(62)) + b"554 end\r\n" + P + replies("250 Ok", "221 Bye")),
    # The final reply to DATA arriving with the 354 (before the body is written): a protocol
    # error, not a delivery.
    ("early-final-reply", b"\x01\x02\x00\x01" + OPEN + replies(
        "250 2.1.0 Ok", "250 2.1.5 Ok", "550 5.1.1 <r1@example.net>: User unknown")
     + b"354 End data with <CR><LF>.<CR><LF>\r" + P + b"\n250 2.0.0 Ok: queued as 1\r\n" + P
     + replies("221 2.0.0 Bye")),
    # An unsolicited reply while idle.
    ("unsolicited", b"\x00\x01\x00\x01" + OPEN + replies("250 Ok", "250 Ok", "354 go") + b"250 Ok\r\n421 bye\r\n" + P),
]
write("smtp_client", client)

# --- /mxdeliv envelope ----------------------------------------------------------------------
# Header lines; "f"/"t" stand for X-Mail-From/X-Mail-To, "#N" repeats a line N times with "%" the
# copy's number (see fuzz_targets/mxdeliv_envelope.rs).
envelope = [
    ("one", b"X-Mail-From: alice@relay.test\nX-Mail-To: bob@example.org\nContent-Type: message/rfc822"),
    ("brackets-case", b"x-mail-from: <Alice@Relay.Test>\nX-MAIL-TO: <B@x.test>\nX-Mail-To: c@x.test\nX-Mail-To: b@X.TEST"),
    ("bounce", b"X-Mail-From: <>\nX-Mail-To: alice@relay.test"),
    ("no-sender", b"t: alice@relay.test\nt:  <alice@relay.test> "),
    ("two-senders", b"f: a@x.test\nf: b@x.test\nt: c@x.test"),
    ("no-recipient", b"f: a@x.test\nHost: relay.test"),
    ("bad-recipient", b"t: nobody\nt: a b@x.test\nt: <a@x.test"),
    ("bad-sender", b"f: <a@x.test> x\nt: b@x.test"),
    ("long", b"t: " + b"a" * 250 + b"@x.test\nt: " + b"a" * 249 + b"@x.test"),
    ("thousand", b"f: a@x.test\n#1000 t: r%@x.test"),
    ("thousand-one", b"#1000 t: r%@x.test\nt: extra@x.test"),
    ("duplicates", b"#1500 t: same@x.test\n#999 t: r%@x.test"),
]
write("mxdeliv_envelope", envelope)

# --- Delivery status notifications -----------------------------------------------------------
# NUL-separated: [n, flags, code_hi, code_lo, date..], then per recipient address, reply text
# (LF-separated lines), remote host; the last field is the original (see fuzz_targets/dsn.rs).
orig = (TESTDATA / "mail" / "dc-encrypted.eml").read_bytes().split(b"\r\n\r\n")[0] + b"\r\n\r\nbody\r\n"
dsn = [
    ("one", b"\x00\x00\x00\x96\x6a\xc6\x2e\x00\x00bob@example.org\x005.1.1 <bob@example.org>: User unknown\x00mx.example.org\x00" + orig),
    ("two-expired", b"\x01\x38\x00\x33\x6a\xc6\x2e\x00\x00bob@example.org\x00greylisted\ntry again\x00mx.example.org\x00"
     b"carol@example.net\x004.2.2 mailbox full\x00\x00" + orig),
    ("ip-literal", b"\x00\x07\x00\x96\x6a\xc6\x2e\x00\x00bob@[192.0.2.9]\x00no\x00[192.0.2.9]\x00" + orig),
    ("hostile", b"\x00\x00\x00\x96\x6a\xc6\x2e\x00\x00bob@example.org\r\nX-Injected: 1\x00"
     b"5.1.1 x\r\n\r\n--dsn-\r\nContent-Type: text/html\r\n\r\n<script>\xc3\xa9\x00mx\r\nX-Injected: 1\x00"
     b"Subject: --dsn-\r\n\r\n"),
    ("long-reply", b"\x00\x00\x00\x96\x6a\xc6\x2e\x00\x00" + b"b" * 250 + b"@example.org\x00" + b"w" * 900 + b"\n"
     + b"word " * 200 + b"\x00" + b"m" * 300 + b"\x00" + orig),
    ("eight", b"\x07\xf0\x00\x96\x6a\xc6\x2e\x00" + b"".join(b"\x00r%d@example.org\x00550 no\x00mx" % i for i in range(8))
     + b"\x00From: a@b\nTo: c@d\n\nbody\n"),
]
write("dsn", dsn)

# --- DKIM signer ----------------------------------------------------------------------------
write("dkim_sign", [(n, d) for n, d in mails if len(d) <= 4096] + [
    ("minimal", b"From: a@example.org\r\n\r\n"),
    ("lf-only", b"From: <a@example.org>\nTo: b@example.net\nSubject: x\n\nline\n.\n"),
    ("two-from", b"From: a@example.org\r\nFrom: b@example.org\r\nDKIM-Signature: v=1; a=rsa-sha256; d=x; s=y; h=from; bh=; b=\r\n\r\nx"),
    ("folded", b"From: a@example.org\r\nSubject: a\r\n\tb\r\n c\r\nContent-Type: text/plain;\r\n charset=utf-8\r\n\r\n\r\n\r\n"),
    ("no-body", b"From: a@example.org\r\nTo: b@example.net"),
])

# --- Website routing -------------------------------------------------------------------------
# [flags, t_hi, t_lo, raw request] (see fuzz_targets/http_site.rs): flags bits 0-1 configuration,
# bit 2 plain HTTP, bit 3 www_folder missing.
def http(flags, req):
    return bytes([flags, 0, 1]) + req


site = [
    ("index", http(1, b"GET / HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("index-dev", http(0, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:10443\r\n\r\n")),
    ("www", http(1, b"GET /info.html?x=1 HTTP/1.1\r\nHost: www.chat.example.org\r\n\r\n")),
    ("http-redirect", http(6, b"HEAD /privacy.html HTTP/1.1\r\nHost: mta-sts.chat.example.org:80\r\n\r\n")),
    ("acme", http(5, b"GET /.well-known/acme-challenge/tok-123_x HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("acme-missing", http(5, b"POST /.well-known/acme-challenge/other HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")),
    ("autoconfig", http(1, b"GET /.well-known/autoconfig/mail/config-v1.1.xml HTTP/1.1\r\nHost: autoconfig.chat.example.org\r\n\r\n")),
    ("mta-sts", http(2, b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.chat.example.org\r\n\r\n")),
    ("new-post", http(1, b"POST /new HTTP/1.1\r\nHost: chat.example.org\r\nContent-Length: 3\r\n\r\na=b")),
    ("new-get", http(0, b"GET /cgi-bin/newemail.py HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")),
    ("new-too-large", http(1, b"POST /new HTTP/1.1\r\nHost: chat.example.org\r\n\r\n" + b"x" * 1100)),
    ("mxdeliv-get", http(1, b"GET /mxdeliv HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("file", http(1, b"GET /docs/a%20b.txt HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("traversal", http(1, b"GET /docs/..%2f..%2fetc/passwd HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("traversal-raw", http(1, b"GET /../../etc/passwd HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("backslash", http(1, b"GET /%5c..%5cx HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("dir", http(9, b"GET /docs/ HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("absolute-form", http(5, b"GET http://evil.example/x?y HTTP/1.1\r\nHost: evil.example\r\n\r\n")),
    ("options-star", http(5, b"OPTIONS * HTTP/1.1\r\nHost: chat.example.org\r\n\r\n")),
    ("delete", http(1, b"DELETE /robots.txt HTTP/1.1\r\nHost: [::1]:443\r\n\r\n")),
]
write("http_site", site)
