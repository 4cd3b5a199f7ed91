//! The encryption gate and sender rules (filtermail parity): pure functions over message bytes,
//! no clock, no I/O. See `../shared/reference/chatmail.md` §3 for the rules and reply codes.
//!
//! API used by the SMTP session: [`check_outgoing`], [`check_incoming_from`],
//! [`clean_submission_headers`], [`clean_delivery_headers`], [`SendLimiter`].
//!
//! Every check is linear in the message size and never panics: the header section is parsed
//! with mail-parser, the top-level multipart is split by a line scan ([`mime`]), the armor is
//! decoded in one pass and the OpenPGP packet headers are walked once ([`armor`]). This module
//! must never decrypt, never read a clock, never do I/O, and never descend into nested parts.
//!
//! Decisions on the reference quirks (chatmail.md §3.8), each pinned by a test:
//! * `multipart/encrypted` needs **exactly** two parts (the reference accepts only part 1).
//! * Armor without a CRC line but with base64 padding passes; a CRC line, when present, must be
//!   `=XXXX` right before END and must match (the reference cut everything from the last `=`).
//! * Only the first `From`, `Secure-Join`, `Subject`, `Auto-Submitted` field counts, but a
//!   message (or PGP/MIME part) with two `Content-Type` fields is not "encrypted": a client
//!   reading the last one could show the preamble as cleartext.
//! * `Secure-Join` values are case-sensitive; the ASM `Subject` must match exactly.
//! * Line endings: CRLF and bare LF are both accepted inside the armor and MIME structure.
//! * Packets: ESK packets may be absent (SEIPD alone passes, as in the reference); partial body
//!   lengths are accepted only on the SEIPD (RFC 9580 allows them only on data packets).
//! * MIME: the preamble and epilogue are ignored (Thunderbird writes a preamble); the top-level
//!   multipart needs its close delimiter; a part without any header field is not a match.

/// A refusal with its SMTP reply code and text, e.g. `523` /
/// `Encryption Needed: Invalid Unencrypted Mail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// SMTP reply code.
    pub code: u16,
    /// Reply text after the code (may start with an enhanced status code).
    pub text: String,
}

/// The envelope of one SMTP transaction.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `MAIL FROM` address, lowercase, empty for `<>`.
    pub mail_from: &'a str,
    /// `RCPT TO` addresses, lowercase.
    pub rcpt_to: &'a [String],
}

pub mod armor;
pub mod headers;
mod limiter;
pub mod mime;
#[cfg(test)]
mod reference;
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // tests read the corpus
mod tests;

pub use limiter::SendLimiter;

use mime::Entity;

/// `523`: the message is neither encrypted nor an allowed exception.
pub const ENCRYPTION_NEEDED: (u16, &str) = (523, "Encryption Needed: Invalid Unencrypted Mail");

impl Reject {
    fn new(code: u16, text: impl Into<String>) -> Self {
        Reject {
            code,
            text: text.into(),
        }
    }

    fn encryption_needed() -> Self {
        Reject::new(ENCRYPTION_NEEDED.0, ENCRYPTION_NEEDED.1)
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Which way a message travels; decides the armor `Version:` rule and the exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Submitted by a local user.
    Outgoing,
    /// Arriving from another relay.
    Incoming,
}

/// Why a message is (not) considered encrypted; `Ok(())` means a well-formed PGP/MIME message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotEncrypted {
    /// Top level is not `multipart/encrypted` (or has no usable boundary / close delimiter).
    NotMultipartEncrypted,
    /// Not exactly two parts.
    PartCount,
    /// A part is itself multipart (or a nested message).
    NestedMultipart,
    /// Part 1 is not `application/pgp-encrypted` with body `Version: 1`.
    BadControlPart,
    /// Part 2 is not `application/octet-stream`.
    BadPayloadType,
    /// Part 2's armor or packets are wrong.
    Armor(armor::ArmorError),
}

/// The PGP/MIME check of chatmail.md §3.2 on a parsed message.
fn encrypted(msg: &Entity<'_>, dir: Direction) -> Result<(), NotEncrypted> {
    // A second Content-Type could make a client that reads the last one render the whole body,
    // preamble included, as text: refuse the ambiguity.
    if !msg.is_type("multipart", "encrypted") || msg.count("Content-Type") != 1 {
        return Err(NotEncrypted::NotMultipartEncrypted);
    }
    let parts = msg.children(2).ok_or(NotEncrypted::PartCount)?;
    let [control, payload] = parts[..] else {
        return Err(NotEncrypted::PartCount);
    };
    let control_h = Entity::parse(control).ok_or(NotEncrypted::BadControlPart)?;
    let payload_h = Entity::parse(payload).ok_or(NotEncrypted::BadPayloadType)?;
    if control_h.is_multipart() || payload_h.is_multipart() {
        return Err(NotEncrypted::NestedMultipart);
    }
    if !control_h.is_type("application", "pgp-encrypted") || control_h.count("Content-Type") != 1 {
        return Err(NotEncrypted::BadControlPart);
    }
    let version = control_h
        .decoded_leaf_body(control)
        .ok_or(NotEncrypted::BadControlPart)?;
    if version.trim_ascii() != b"Version: 1" {
        return Err(NotEncrypted::BadControlPart);
    }
    if !payload_h.is_type("application", "octet-stream") || payload_h.count("Content-Type") != 1 {
        return Err(NotEncrypted::BadPayloadType);
    }
    let body = payload_h
        .decoded_leaf_body(payload)
        .ok_or(NotEncrypted::BadPayloadType)?;
    armor::check_armored(&body, dir == Direction::Outgoing).map_err(NotEncrypted::Armor)
}

/// Whether `raw` is an encrypted message in the sense of chatmail.md §3.2 (for tools and tests).
pub fn is_encrypted(raw: &[u8], dir: Direction) -> Result<(), NotEncrypted> {
    let msg = Entity::parse(raw).ok_or(NotEncrypted::NotMultipartEncrypted)?;
    encrypted(&msg, dir)
}

/// Secure-Join `vc-request` / `vg-request` (chatmail.md §3.3): first `Secure-Join` value exact,
/// multipart with exactly one `text/plain` leaf whose trimmed, lowercased body is
/// `secure-join: vc-request` or `secure-join: vg-request`.
fn is_securejoin(msg: &Entity<'_>) -> bool {
    if !matches!(
        msg.first_raw("Secure-Join"),
        Some(b"vc-request" | b"vg-request")
    ) {
        return false;
    }
    if !msg.is_multipart() {
        return false;
    }
    let Some(parts) = msg.children(1) else {
        return false;
    };
    let [part] = parts[..] else {
        return false;
    };
    let Some(part_h) = Entity::parse(part) else {
        return false;
    };
    if part_h.is_multipart() || !part_h.is_type("text", "plain") {
        return false;
    }
    let Some(body) = part_h.decoded_leaf_body(part) else {
        return false;
    };
    let body = body.trim_ascii().to_ascii_lowercase();
    body == b"secure-join: vc-request" || body == b"secure-join: vg-request"
}

/// Self-sent Autocrypt Setup Message (chatmail.md §3.4 step 4).
fn is_self_sent_asm(msg: &Entity<'_>, envelope: &Envelope<'_>, from: &str) -> bool {
    matches!(envelope.rcpt_to, [only] if only.to_lowercase() == from)
        && msg.first_text("Subject") == Some("Autocrypt Setup Message")
        && msg.is_type("multipart", "mixed")
}

/// Mailer-daemon report (chatmail.md §3.5 step 4).
fn is_mailer_daemon_report(msg: &Entity<'_>, from: &str) -> bool {
    msg.first_raw("Auto-Submitted")
        .is_some_and(|v| !v.is_empty())
        && from.starts_with("mailer-daemon@")
        && msg.is_type("multipart", "report")
}

/// Parse and take the first `From` address, lowercased.
fn parse_with_from(raw: &[u8]) -> Result<(Entity<'_>, String), Reject> {
    let msg = Entity::parse(raw)
        .ok_or_else(|| Reject::new(500, "Failed to parse message: no header section"))?;
    let from = msg
        .from_address()
        .ok_or_else(|| Reject::new(500, "Invalid FROM header"))?;
    Ok((msg, from.to_lowercase()))
}

/// Verdict on an outgoing (submitted) message: From header = MAIL FROM, encrypted or an allowed
/// exception (Secure-Join request, self-sent Autocrypt Setup Message).
pub fn check_outgoing(envelope: &Envelope<'_>, raw: &[u8]) -> Result<(), Reject> {
    let (msg, from) = parse_with_from(raw)?;
    if from != envelope.mail_from.to_lowercase() {
        return Err(Reject::new(
            500,
            format!("Invalid FROM <{from}> for <{}>", envelope.mail_from),
        ));
    }
    if encrypted(&msg, Direction::Outgoing).is_ok()
        || is_securejoin(&msg)
        || is_self_sent_asm(&msg, envelope, &from)
    {
        return Ok(());
    }
    Err(Reject::encryption_needed())
}

/// Verdict on an incoming message (port 25, `/mxdeliv`). `enforces_e2ee(rcpt)` tells whether a
/// recipient refuses cleartext. `Ok(true)` means accept with the envelope sender reset to `<>`.
/// The origin (DKIM) is checked afterwards: see [`check_incoming_from`].
pub fn check_incoming(
    envelope: &Envelope<'_>,
    raw: &[u8],
    enforces_e2ee: &dyn Fn(&str) -> bool,
) -> Result<bool, Reject> {
    check_incoming_from(envelope, raw, enforces_e2ee).map(|i| i.reset_sender)
}

/// An incoming message the encryption rules let through; its origin is verified next
/// (chatmail.md §3.5 step 6, `crate::dkim::verify_origin` with [`Incoming::from_domain`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// The envelope sender differs from `From`: deliver with `MAIL FROM:<>` (§3.5 step 2).
    pub reset_sender: bool,
    /// The first `From` address, lowercase.
    pub from: String,
}

impl Incoming {
    /// The domain of the `From` address (after the last `@`; empty without one): a DNS name or
    /// an address literal such as `[192.0.2.1]`.
    pub fn from_domain(&self) -> &str {
        self.from.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// [`check_incoming`], also returning the `From` address whose origin must be verified. Every
/// accepted message needs that check, whichever rule let it through (encrypted, Secure-Join,
/// mailer-daemon report, cleartext to a recipient that allows it), as in the reference; the
/// encryption rules come first so that cleartext is refused without any DNS work.
pub fn check_incoming_from(
    envelope: &Envelope<'_>,
    raw: &[u8],
    enforces_e2ee: &dyn Fn(&str) -> bool,
) -> Result<Incoming, Reject> {
    let (msg, from) = parse_with_from(raw)?;
    let reset_sender = from != envelope.mail_from.to_lowercase();
    let accepted = encrypted(&msg, Direction::Incoming).is_ok()
        || is_securejoin(&msg)
        || is_mailer_daemon_report(&msg, &from)
        || !envelope.rcpt_to.iter().any(|r| enforces_e2ee(r));
    if !accepted {
        return Err(Reject::encryption_needed());
    }
    Ok(Incoming { reset_sender, from })
}

/// Header privacy on submission: drop `Received`, `X-Originating-IP`, `X-Mailer`, `User-Agent`;
/// replace `Subject:` with `Subject: [...]`. The body is copied unchanged.
pub fn clean_submission_headers(raw: &[u8]) -> Vec<u8> {
    headers::clean_submission(raw)
}

/// Header cleanup on local delivery: drop `DKIM-Signature`, `Authentication-Results`, `Received`.
pub fn clean_delivery_headers(raw: &[u8]) -> Vec<u8> {
    headers::clean_delivery(raw)
}
