//! SMTP (submission and MX), sans-I/O.
