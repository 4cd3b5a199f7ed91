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
]
seeds = [(f"{i:02}-{r['op']}", json.dumps(r).encode()) for i, r in enumerate(admin)]
seeds.append(("pipeline", b"\n".join(json.dumps(r).encode() for r in admin[:4])))
seeds.append(("bad", b'{"op":"list_accounts","extra":1}\n{"op":"nope"}\n{"op":"expire_messages","older_than_days":-1}'))
write("admin_protocol", seeds)
