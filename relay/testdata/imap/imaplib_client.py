# Drives the IMAP session through Python's stdlib imaplib over loopback (see
# imap::tests::python_imaplib_interop). Exits non-zero on any mismatch.
import imaplib
import sys

port = int(sys.argv[1])
M = imaplib.IMAP4("127.0.0.1", port)
assert "IDLE" in M.capabilities and "XCHATMAIL" in M.capabilities, M.capabilities
M.login("py@x", "password123")
M.enable("CONDSTORE")
typ, data = M.create("Archive")
assert typ == "OK", data
msg = b"Subject: py\r\nFrom: A <a@b.example>\r\nTo: c@d.example\r\n\r\nhello\r\n"
typ, data = M.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(1700000000), msg)
assert typ == "OK" and b"APPENDUID" in data[0], data
typ, data = M.select("INBOX")
assert typ == "OK" and data == [b"1"], data
typ, data = M.uid(
    "FETCH",
    "1:*",
    "(UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODYSTRUCTURE ENVELOPE)",
)
assert typ == "OK", data
head = data[0][0]
assert b"UID 1" in head and b"RFC822.SIZE %d" % len(msg) in head, data
assert data[0][1] == b"Subject: py\r\n\r\n", data
assert b'("text" "plain" NIL NIL NIL "7BIT" 7 1' in data[1], data
typ, data = M.uid("SEARCH", None, "SEEN SUBJECT py")
assert data == [b"1"], data
typ, data = M.uid("STORE", "1", "+FLAGS", "(\\Flagged)")
assert typ == "OK" and b"\\Flagged" in data[0], data
typ, data = M.uid("MOVE", "1", "Archive")
assert typ == "OK", data
typ, data = M.select("Archive", readonly=True)
assert data == [b"1"], data
typ, data = M.fetch("1", "(BODY[])")
assert data[0][1] == msg, data
typ, data = M.getquotaroot("INBOX")
assert typ == "OK", data
typ, data = M.list()
assert b'(\\HasNoChildren) "/" Archive' in data and b'(\\HasNoChildren) "/" INBOX' in data, data
typ, data = M.status("INBOX", "(MESSAGES UIDNEXT)")
assert data == [b"INBOX (MESSAGES 0 UIDNEXT 2)"], data
M.close()
M.logout()
print("PYOK")
