#!/usr/bin/env python3
"""Regenerate the policy test corpus (relay/testdata/mail/*.eml) written for this project.

Uses gpg with throw-away keys in a temporary GNUPGHOME; only the resulting messages are kept.
Every message uses CRLF line endings. Run from anywhere: `python3 generate.py`.
The expected verdicts live in expected.txt (edited by hand).
"""
import base64
import itertools
import os
import subprocess
import sys
import tempfile
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
ALICE = "alice@example.org"
BOB = "bob@example.org"
COUNTER = itertools.count(1)


def crc24(data: bytes) -> int:
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armor(data: bytes, crc=True, headers=(), crc_value=None) -> str:
    lines = ["-----BEGIN PGP MESSAGE-----"]
    lines += list(headers)
    lines.append("")
    enc = base64.b64encode(data).decode()
    lines += [enc[i : i + 64] for i in range(0, len(enc), 64)]
    if crc:
        c = crc24(data) if crc_value is None else crc_value
        lines.append("=" + base64.b64encode(c.to_bytes(3, "big")).decode())
    lines.append("-----END PGP MESSAGE-----")
    return "\r\n".join(lines) + "\r\n"


def dearmor(text: str) -> bytes:
    lines = text.replace("\r\n", "\n").split("\n")
    body = []
    started = False
    for line in lines[1:]:
        if not started:
            if line == "":
                started = True
            continue
        if line.startswith("=") or line.startswith("-----END"):
            break
        body.append(line)
    return base64.b64decode("".join(body))


def headers(frm=ALICE, to=BOB, subject="...", extra=(), ctype=None):
    h = [
        f"From: <{frm}>",
        f"To: <{to}>",
        f"Subject: {subject}",
        "Date: Thu, 26 Nov 2026 10:00:00 +0000",
        f"Message-ID: <{next(COUNTER)}@example.org>",
        "MIME-Version: 1.0",
    ]
    h += list(extra)
    if ctype:
        h.append(f"Content-Type: {ctype}")
    return "\r\n".join(h) + "\r\n"


def pgp_mime(payload: str, frm=ALICE, to=BOB, extra=(), control="Version: 1", parts=None):
    b = "----=_enc_boundary"
    control_part = (
        "Content-Type: application/pgp-encrypted\r\n"
        "Content-Description: PGP/MIME version identification\r\n\r\n"
        f"{control}\r\n"
    )
    payload_part = (
        'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        "Content-Description: OpenPGP encrypted message\r\n"
        'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n'
        f"{payload}"
    )
    if parts is None:
        parts = [control_part, payload_part]
    body = "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n"
    for p in parts:
        body += f"--{b}\r\n{p}\r\n"
    body += f"--{b}--\r\n"
    ctype = f'multipart/encrypted; protocol="application/pgp-encrypted";\r\n boundary="{b}"'
    return headers(frm, to, extra=extra, ctype=ctype) + "\r\n" + body


def securejoin(value="vc-request", body="Secure-Join: vc-request", frm=ALICE, nparts=1):
    b = "sj_boundary"
    h = headers(frm, BOB, subject="Message from alice", extra=[f"Secure-Join: {value}"],
                ctype=f'multipart/mixed; boundary="{b}"')
    parts = ""
    for _ in range(nparts):
        parts += (f"--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n")
    return h + "\r\n" + parts + f"--{b}--\r\n"


def plain(frm=ALICE, to=BOB, text="Hello, this is cleartext.", extra=()):
    return headers(frm, to, subject="hi", extra=extra,
                   ctype="text/plain; charset=utf-8") + "\r\n" + text + "\r\n"


def gpg(home, *args, data=b""):
    return subprocess.run(
        ["gpg", "--homedir", home, "--batch", "--yes", "--pinentry-mode", "loopback",
         "--passphrase", "", *args],
        input=data, check=True, capture_output=True,
    ).stdout


def write(name, text):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(text.encode() if isinstance(text, str) else text)


def main():
    with tempfile.TemporaryDirectory() as home:
        os.chmod(home, 0o700)
        gpg(home, "--quick-gen-key", BOB, "rsa2048", "encrypt", "never")
        gpg(home, "--quick-gen-key", ALICE, "ed25519", "sign", "never")
        secret = b"Hi Bob, the meeting is at 10.\r\n"
        # Public-key encryption from a file-like input: PKESK (old format) + SEIPD v1.
        enc = gpg(home, "--armor", "--trust-model", "always", "-r", BOB, "--encrypt", data=secret).decode()
        enc = enc.replace("\n", "\r\n")
        write("encrypted-gpg.eml", pgp_mime(enc))
        # Large streamed input makes gpg use partial body lengths for the SEIPD.
        big = os.urandom(40_000)
        enc_big = gpg(home, "--armor", "--trust-model", "always", "-r", BOB, "-z", "0",
                      "--encrypt", data=big).decode().replace("\n", "\r\n")
        write("encrypted-gpg-partial.eml", pgp_mime(enc_big))
        # Symmetric: SKESK + SEIPD.
        sym = gpg(home, "--armor", "--symmetric", "--passphrase", "x", data=secret).decode()
        write("encrypted-symmetric.eml", pgp_mime(sym.replace("\n", "\r\n")))
        data = dearmor(enc)
        # Padding must survive: pick a data length whose base64 ends in '='.
        padded = data if len(data) % 3 else dearmor(sym)
        assert len(padded) % 3, "need a payload with base64 padding"
        write("encrypted-nocrc-padding.eml", pgp_mime(armor(padded, crc=False)))
        write("encrypted-crc.eml", pgp_mime(armor(padded, crc=True)))
        write("encrypted-badcrc.eml", pgp_mime(armor(padded, crc_value=crc24(padded) ^ 1)))
        write("encrypted-version-header.eml",
              pgp_mime(armor(data, headers=["Version: GnuPG v2"])))
        write("encrypted-comment-header.eml",
              pgp_mime(armor(data, headers=["Comment: https://example.org"])))
        write("encrypted-trailing-bytes.eml", pgp_mime(armor(data + b"\x00\x01")))
        write("encrypted-truncated-armor.eml",
              pgp_mime(armor(data)[: len(armor(data)) // 2] + "\r\n"))
        # Length pointing past the end: drop the last bytes of the SEIPD body.
        write("encrypted-length-past-end.eml", pgp_mime(armor(data[:-5])))
        write("encrypted-only-first-part.eml",
              pgp_mime("", parts=["Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"]))
        write("encrypted-three-parts.eml",
              pgp_mime("", parts=[
                  "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n",
                  "Content-Type: application/octet-stream\r\n\r\n" + armor(data),
                  "Content-Type: text/plain\r\n\r\nAnd here is some cleartext.\r\n",
              ]))
        write("encrypted-nested-multipart.eml",
              pgp_mime("", parts=[
                  "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n",
                  'Content-Type: multipart/mixed; boundary="inner"\r\n\r\n--inner\r\n'
                  "Content-Type: application/octet-stream\r\n\r\n" + armor(data) + "\r\n--inner--\r\n",
              ]))
        write("encrypted-bad-control.eml", pgp_mime(armor(data), control="Version: 2"))
        dup = pgp_mime(enc).replace("MIME-Version: 1.0\r\n", "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n", 1)
        dup = dup.replace("This is an OpenPGP/MIME encrypted message", "Cleartext smuggled in the preamble", 1)
        write("encrypted-duplicate-content-type.eml", dup)
        b64_payload = (
            'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n"
            + "\r\n".join(textwrap.wrap(base64.b64encode(enc.encode()).decode(), 76)) + "\r\n")
        write("encrypted-base64-cte.eml", pgp_mime("", parts=[
            "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n", b64_payload]))
        write("encrypted-from-mismatch.eml", pgp_mime(enc, frm="carol@example.org"))
        # Hand-made packet sequences.
        seipd_v2 = bytes([0xD2, 0x20, 2]) + bytes(range(31))
        write("encrypted-crafted-seipd-v2.eml",
              pgp_mime(armor(bytes([0xC1, 4, 6, 0, 0, 0]) + seipd_v2)))
        literal = gpg(home, "--store", "-z", "0", data=secret)
        write("literal.eml", pgp_mime(armor(literal)))
        # Build a compressed packet (tag 8) around the literal.
        import zlib
        comp = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = bytes([1]) + comp.compress(literal) + comp.flush()
        compressed = bytes([0xC8, len(body)]) + body
        write("compressed.eml", pgp_mime(armor(compressed)))
        sig = gpg(home, "-u", ALICE, "--detach-sign", data=secret)
        write("signature-only.eml", pgp_mime(armor(sig)))
        signed = gpg(home, "-u", ALICE, "--sign", "--armor", data=secret).decode()
        write("signed-message.eml", pgp_mime(signed.replace("\n", "\r\n")))
        write("fake-encrypted.eml", plain(text=(
            "-----BEGIN PGP MESSAGE-----\r\n\r\nThis is not encrypted at all.\r\n"
            "-----END PGP MESSAGE-----")))
        write("fake-armor-text.eml", pgp_mime(armor(b"Hello, cleartext in base64.")))
        write("plain.eml", plain())
        write("no-from.eml", plain().replace(f"From: <{ALICE}>\r\n", ""))
        write("garbage-from.eml", plain().replace(f"From: <{ALICE}>", "From: not an address"))
        write("securejoin-vc.eml", securejoin("vc-request", "Secure-Join: vc-request"))
        write("securejoin-vg.eml", securejoin("vg-request", "secure-join: VG-REQUEST"))
        write("securejoin-vc-fake.eml", securejoin("vc-request", "Here is my secret text"))
        write("securejoin-uppercase-header.eml",
              securejoin("VC-REQUEST", "Secure-Join: vc-request"))
        write("securejoin-two-parts.eml", securejoin(nparts=2))
        write("securejoin-vc-auth.eml", securejoin("vc-request-with-auth", "Secure-Join: vc-request"))
        asm_b = "asm_b"
        asm = headers(ALICE, ALICE, subject="Autocrypt Setup Message",
                      extra=["Autocrypt-Setup-Message: v1"],
                      ctype=f'multipart/mixed; boundary="{asm_b}"') + "\r\n" + (
            f"--{asm_b}\r\nContent-Type: text/plain\r\n\r\nThis is the Autocrypt Setup Message.\r\n"
            f"--{asm_b}\r\nContent-Type: application/autocrypt-setup\r\n"
            'Content-Disposition: attachment; filename="autocrypt-setup-message.html"\r\n\r\n'
            "<html><body><pre>\r\n" + armor(data, headers=["Passphrase-Format: numeric9x4"]) +
            "</pre></body></html>\r\n" + f"--{asm_b}--\r\n")
        write("asm.eml", asm)
        report_b = "report_b"
        write("mailer-daemon.eml", headers(
            "MAILER-DAEMON@example.net", ALICE, subject="Undelivered Mail Returned to Sender",
            extra=["Auto-Submitted: auto-replied"],
            ctype=f'multipart/report; report-type=delivery-status; boundary="{report_b}"')
            + "\r\n" + f"--{report_b}\r\nContent-Type: text/plain\r\n\r\nYour mail could not be delivered.\r\n"
            f"--{report_b}\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n"
            "Final-Recipient: rfc822; nobody@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
            f"--{report_b}--\r\n")
        write("mdn.eml", headers(
            ALICE, BOB, subject="Receipt Notification",
            extra=["Auto-Submitted: auto-replied"],
            ctype=f'multipart/report; report-type=disposition-notification; boundary="{report_b}"')
            + "\r\n" + f"--{report_b}\r\nContent-Type: text/plain\r\n\r\nThis is a receipt notification.\r\n"
            f"--{report_b}\r\nContent-Type: message/disposition-notification\r\n\r\n"
            "Original-Message-ID: <1@example.org>\r\nDisposition: manual-action/MDN-sent-automatically; displayed\r\n"
            f"--{report_b}--\r\n")
        # Deeply nested multiparts, one level per boundary, none closed properly.
        depth = 2000
        nested = headers(ctype='multipart/mixed; boundary="n0"') + "\r\n"
        for i in range(depth):
            nested += f"--n{i}\r\nContent-Type: multipart/mixed; boundary=\"n{i + 1}\"\r\n\r\n"
        nested += f"--n{depth}\r\nContent-Type: text/plain\r\n\r\ncleartext\r\n"
        write("deeply-nested.eml", nested)
        # Many sibling parts that each declare a boundary that never appears.
        sib = headers(ctype='multipart/encrypted; boundary="s"') + "\r\n"
        for i in range(3000):
            sib += f'--s\r\nContent-Type: multipart/mixed; boundary="missing{i}"\r\n\r\nx\r\n'
        sib += "--s--\r\n"
        write("many-missing-boundaries.eml", sib)
        many = headers(extra=[f"X-Filler-{i}: {i}" for i in range(20000)],
                       ctype="text/plain") + "\r\nbody\r\n"
        write("many-headers.eml", many)
        many_enc = pgp_mime(enc, extra=[f"X-Filler-{i}: {i}" for i in range(20000)])
        write("many-headers-encrypted.eml", many_enc)


if __name__ == "__main__":
    sys.exit(main())
