//! DKIM (RFC 6376): signing what the relay sends, and verifying where incoming mail comes from.
//!
//! # Organization
//! - [`key`]: the RSA key pair, its PEM form and its DNS record (no I/O).
//! - [`keyfile`]: the key file `<data_dir>/dkim/<selector>.private`, created on first use (I/O).
//! - [`sign`]: the [`Signer`] (no I/O, time passed in): the `DKIM-Signature` field to put in
//!   front of a message, signed like the reference's OpenDKIM.
//! - [`origin`]: the [`Verdict`] on an incoming message from mail-auth's results (no I/O).
//! - [`verify`]: [`verify_origin`], the DNS side of it, with a bounded key cache (I/O).
//!
//! An IP-literal relay (`mail_domain` an IPv4 address) has no key and does not sign, and mail
//! from domain-literal senders is not checked (chatmail.md §1.9, decisions.md).

pub mod key;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: the key file
pub mod keyfile;
pub mod origin;
pub mod sign;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: DNS lookups, a time limit
pub mod verify;

pub use key::{record_name, DkimKey};
pub use keyfile::{key_path, load_or_create, load_signer};
pub use origin::{is_domain_literal, origin_verdict, Verdict};
pub use sign::{SignError, Signer};
pub use verify::{verify_origin, verify_origin_with, KeyCache};
