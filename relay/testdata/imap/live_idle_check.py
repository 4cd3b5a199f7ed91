# Manual check against a running relay (not run by cargo test):
#   relay dev --data /tmp/d --set imap_port=31143 --set imaps_port=31993 ...
#   python3 relay/testdata/imap/live_idle_check.py 31993 31143
# Session A idles on IMAPS; session B (STARTTLS) appends; prints how long A waited for EXISTS.
import imaplib
import ssl
import sys
import time

imaps, imap = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
user, password = "idlecheck@[127.0.0.1]", "password123456"

a = imaplib.IMAP4_SSL("127.0.0.1", imaps, ssl_context=ctx)
assert "XCHATMAIL" in a.capabilities, a.capabilities
a.login(user, password)
a.select("INBOX")
tag = a._new_tag().decode()
a.send(f"{tag} IDLE\r\n".encode())
assert a.readline().startswith(b"+ "), "no IDLE continuation"

b = imaplib.IMAP4("127.0.0.1", imap)
b.starttls(ssl_context=ctx)
b.login(user, password)
msg = b"Subject: idle check\r\nFrom: a@b.example\r\n\r\nhello\r\n"
t0 = time.time()
typ, data = b.append("INBOX", None, None, msg)
assert typ == "OK", data
a.sock.settimeout(5)
line = a.readline()
print(f"IDLE got {line!r} {1000 * (time.time() - t0):.1f} ms after APPEND was sent")
assert line.endswith(b" EXISTS\r\n"), line
a.send(b"DONE\r\n")
assert a.readline().startswith(tag.encode() + b" OK")
typ, data = a.uid("FETCH", "1:*", "(UID BODY.PEEK[])")
assert data[-2][1] == msg if len(data) > 1 else False, data
a.logout()
b.logout()
print("LIVEOK")
