//! The encryption gate and sender rules (filtermail parity): pure functions over message bytes,
//! no clock, no I/O. See `../shared/reference/chatmail.md` §3 for the rules and reply codes.
//!
//! API used by the SMTP session (the signatures are the contract; bodies are filled in by the
//! policy work).

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

/// Verdict on an outgoing (submitted) message: From header = MAIL FROM, encrypted or an allowed
/// exception (Secure-Join request, self-sent Autocrypt Setup Message).
pub fn check_outgoing(_envelope: &Envelope<'_>, _raw: &[u8]) -> Result<(), Reject> {
    todo!("policy::check_outgoing")
}

/// Verdict on an incoming message (port 25, `/mxdeliv`). `enforces_e2ee(rcpt)` tells whether a
/// recipient refuses cleartext. `Ok(true)` means accept with the envelope sender reset to `<>`.
pub fn check_incoming(
    _envelope: &Envelope<'_>,
    _raw: &[u8],
    _enforces_e2ee: &dyn Fn(&str) -> bool,
) -> Result<bool, Reject> {
    todo!("policy::check_incoming")
}

/// Header privacy on submission: drop `Received`, `X-Originating-IP`, `X-Mailer`, `User-Agent`;
/// replace `Subject:` with `Subject: [...]`. The body is copied unchanged.
pub fn clean_submission_headers(_raw: &[u8]) -> Vec<u8> {
    todo!("policy::clean_submission_headers")
}

/// Header cleanup on local delivery: drop `DKIM-Signature`, `Authentication-Results`, `Received`.
pub fn clean_delivery_headers(_raw: &[u8]) -> Vec<u8> {
    todo!("policy::clean_delivery_headers")
}

/// Per-sender GCRA rate limiter (`max_user_send_per_minute`, `max_user_send_burst_size`),
/// one cell per SMTP transaction. Thread-safe; time is passed in.
#[derive(Debug)]
pub struct SendLimiter {}

impl SendLimiter {
    /// A limiter allowing `per_minute` messages per minute with bursts of `burst`.
    pub fn new(_per_minute: u32, _burst: u32) -> Self {
        todo!()
    }

    /// Take one cell for `sender` at `now_ms`; `Err(message)` if refused (the message goes after
    /// `450 4.7.1: Too much mail from <addr>, `).
    pub fn check_at(&self, _sender: &str, _now_ms: u64) -> Result<(), String> {
        todo!()
    }
}
