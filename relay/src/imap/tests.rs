//! Session tests: a Session paired with a real Store in a tempdir.
