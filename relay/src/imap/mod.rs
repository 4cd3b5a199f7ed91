//! IMAP4rev1 with the extensions Delta Chat uses, sans-I/O.
