//! SMTP replies: named reply texts with their RFC references, and the encoder.
//!
//! Reply codes are RFC 5321 §4.2; enhanced status codes are RFC 3463 (registry in RFC 5248).
//! Texts follow Postfix where the reference relay's clients or tests see them. Text that comes from
//! elsewhere (addresses, limiter and policy messages) is sanitised by the encoder so a reply is
//! always exactly the lines it says it is.

use std::borrow::Cow;

/// One SMTP reply: a code and one or more text lines (the enhanced status code, if any, is part
/// of the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Text lines; at least one.
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// Appends the wire form: `code-text` CRLF for all lines but the last, `code text` CRLF for
    /// the last (RFC 5321 §4.2.1). CR, LF and other control bytes in the text become spaces.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let empty = [Cow::Borrowed("")];
        let lines = if self.lines.is_empty() {
            &empty[..]
        } else {
            &self.lines[..]
        };
        for (i, line) in lines.iter().enumerate() {
            out.extend_from_slice(format!("{:03}", self.code % 1000).as_bytes());
            out.push(if i == last { b' ' } else { b'-' });
            out.extend(
                line.bytes()
                    .map(|b| if b < 0x20 || b == 0x7f { b' ' } else { b }),
            );
            out.extend_from_slice(b"\r\n");
        }
    }
}

macro_rules! replies {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        $(
            $(#[$doc])*
            pub fn $name() -> Reply {
                Reply::new($code, $text)
            }
        )*
    };
}

replies! {
    /// RFC 3207 §4: go ahead with the TLS handshake.
    ready_to_start_tls = 220, "2.0.0 Ready to start TLS";
    /// RFC 5321 §4.1.1.10: closing.
    bye = 221, "2.0.0 Bye";
    /// RFC 4954 §6: AUTH succeeded.
    auth_ok = 235, "2.7.0 Authentication successful";
    /// RFC 5321 §4.1.1.5, §4.1.1.9: RSET, NOOP.
    ok = 250, "2.0.0 Ok";
    /// RFC 5321 §4.1.1.2.
    sender_ok = 250, "2.1.0 Ok";
    /// RFC 5321 §4.1.1.3.
    recipient_ok = 250, "2.1.5 Ok";
    /// RFC 5321 §3.5.3: VRFY answered without revealing anything (reference test `test_no_vrfy`).
    cannot_vrfy = 252, "2.0.0 Cannot VRFY user, but will accept message and attempt delivery";
    /// RFC 5321 §4.1.1.8.
    help = 214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH";
    /// RFC 5321 §4.1.1.4.
    start_data = 354, "End data with <CR><LF>.<CR><LF>";
    /// RFC 3463 4.3.0: the store failed.
    store_failed = 451, "4.3.0 Error: queue file write error";
    /// RFC 5321 §4.2.3 452, RFC 3463 4.3.1 (mail system full): the store's disk is full.
    insufficient_storage = 452, "4.3.1 Insufficient system storage";
    /// RFC 5321 §4.5.3.1.8, RFC 3463 4.5.3.
    too_many_recipients = 452, "4.5.3 Error: too many recipients";
    /// RFC 4954 §6: temporary failure of the authentication backend.
    auth_temporary = 454, "4.7.0 Temporary authentication failure";
    /// RFC 5321 §4.2.4.
    unknown_command = 500, "5.5.2 Error: command not recognized";
    /// RFC 5321 §4.5.3.1.4.
    line_too_long = 500, "5.5.2 Line too long";
    /// RFC 4954 §4: the client sent `*`.
    auth_aborted = 501, "5.7.0 Authentication aborted";
    /// RFC 4954 §4: the response is not valid base64 or not a PLAIN message (RFC 4616 §2).
    auth_malformed = 501, "5.5.2 Cannot decode response";
    /// RFC 3463 5.1.7.
    bad_sender_syntax = 501, "5.1.7 Bad sender address syntax";
    /// RFC 3463 5.1.3.
    bad_recipient_syntax = 501, "5.1.3 Bad recipient address syntax";
    /// RFC 5321 §4.2.4: command recognised but not implemented.
    not_implemented = 502, "5.5.1 Error: command not implemented";
    /// RFC 5321 §4.1.4: MAIL, AUTH before HELO/EHLO.
    need_helo = 503, "5.5.1 Error: send HELO/EHLO first";
    /// RFC 5321 §4.1.4.
    nested_mail = 503, "5.5.1 Error: nested MAIL command";
    /// RFC 5321 §4.1.4.
    need_mail = 503, "5.5.1 Error: need MAIL command";
    /// RFC 5321 §4.1.4.
    need_rcpt = 503, "5.5.1 Error: need RCPT command";
    /// RFC 4954 §4: AUTH after a successful AUTH.
    already_authenticated = 503, "5.5.1 Error: already authenticated";
    /// RFC 4954 §4: AUTH during a mail transaction.
    auth_in_transaction = 503, "5.5.1 Error: MAIL transaction in progress";
    /// RFC 4954: port 25 offers no AUTH.
    auth_not_enabled = 503, "5.5.1 Error: authentication not enabled";
    /// RFC 3207 §4.2: STARTTLS inside TLS.
    tls_already_active = 503, "5.5.1 Error: TLS already active";
    /// RFC 4954 §6: unknown mechanism.
    unsupported_mechanism = 504, "5.5.4 Unrecognized authentication type";
    /// RFC 3207 §4, RFC 4954 §4 (`smtpd_tls_auth_only`, `smtpd_tls_security_level = encrypt`).
    must_starttls = 530, "5.7.0 Must issue a STARTTLS command first";
    /// RFC 4954 §6.
    auth_required = 530, "5.7.0 Authentication required";
    /// RFC 4954 §6.
    auth_failed = 535, "5.7.8 Authentication failed";
    /// RFC 3463 5.1.1: unknown local recipient, all recipients at delivery.
    users_unknown = 550, "5.1.1 Recipient address rejected: User unknown";
    /// RFC 1870 §6.1, RFC 3463 5.3.4: declared SIZE too large.
    size_declared_too_large = 552, "5.3.4 Message size exceeds fixed limit";
    /// RFC 1870 §6.3, RFC 3463 5.3.4: DATA was larger than the limit.
    message_too_large = 552, "5.3.4 Message size exceeds fixed maximum message size";
    /// RFC 3463 5.2.2: every recipient was over quota at delivery (chatmail.md §4.6).
    quota_exceeded = 552, "5.2.2 Quota exceeded (mailbox for user is full)";
    /// RFC 2920 §3.1: DATA after every RCPT failed.
    no_valid_recipients = 554, "5.5.1 Error: no valid recipients";
    /// RFC 5321 §4.1.1.11.
    unsupported_parameter = 555, "5.5.4 Unsupported option";
}

/// RFC 5321 §4.2, §3.1: the greeting.
pub fn greeting(domain: &str) -> Reply {
    Reply::new(220, format!("{domain} ESMTP"))
}

/// RFC 5321 §4.1.1.1: HELO answer.
pub fn helo(domain: &str) -> Reply {
    Reply::new(250, domain.to_owned())
}

/// RFC 5321 §4.2.4: wrong arguments, with the expected grammar.
pub fn syntax(grammar: &str) -> Reply {
    Reply::new(501, format!("5.5.4 Syntax: {grammar}"))
}

/// `smtpd_forbid_bare_newline` (SMTP smuggling): the connection is closed after it.
pub fn bare_lf(domain: &str) -> Reply {
    Reply::new(521, format!("5.5.2 {domain} Error: bare <LF> received"))
}

/// RFC 5321 §4.5.3.2: silence for too long; the connection is closed after it.
pub fn timeout(domain: &str) -> Reply {
    Reply::new(421, format!("4.4.2 {domain} Error: timeout exceeded"))
}

/// Too many failed commands; the connection is closed after it.
pub fn too_many_errors(domain: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {domain} Error: too many errors"))
}

/// Too much pipelined input buffered; the connection is closed after it.
pub fn input_overflow(domain: &str) -> Reply {
    Reply::new(
        421,
        format!("4.7.0 {domain} Error: too much pipelined input"),
    )
}

/// RFC 4954 §4: ask for the AUTH response (empty challenge).
pub fn auth_continue() -> Reply {
    Reply::new(334, "")
}

/// Submission: MAIL FROM is not the login (Postfix `reject_sender_login_mismatch`).
pub fn sender_not_owned(addr: &str, login: &str) -> Reply {
    Reply::new(
        553,
        format!("5.7.1 <{addr}>: Sender address rejected: not owned by user {login}"),
    )
}

/// The per-sender rate limiter refused (filtermail, chatmail.md §3.4); the connection is closed
/// after it.
pub fn rate_limited(addr: &str, message: &str) -> Reply {
    Reply::new(450, format!("4.7.1: Too much mail from {addr}, {message}"))
}

/// A recipient in another domain. Federation is not implemented yet; never accept and drop.
pub fn relay_denied(addr: &str) -> Reply {
    Reply::new(554, format!("5.7.1 <{addr}>: Relay access denied"))
}

/// RFC 3463 5.1.1: no account for a local recipient.
pub fn user_unknown(addr: &str) -> Reply {
    Reply::new(
        550,
        format!("5.1.1 <{addr}>: Recipient address rejected: User unknown"),
    )
}

/// RFC 3463 5.2.2: the recipient's mailbox is full (chatmail.md §4.6).
pub fn recipient_over_quota(addr: &str) -> Reply {
    Reply::new(
        552,
        format!("5.2.2 <{addr}>: Quota exceeded (mailbox for user is full)"),
    )
}

/// RFC 5321 §4.1.1.4: the message is durable.
pub fn queued(id: &str) -> Reply {
    Reply::new(250, format!("2.0.0 Ok: queued as {id}"))
}

/// The EHLO answer (RFC 5321 §4.1.1.1): the domain, then one keyword per line.
pub fn ehlo(domain: &str, keywords: Vec<Cow<'static, str>>) -> Reply {
    let mut lines = Vec::with_capacity(keywords.len() + 1);
    lines.push(Cow::Owned(domain.to_owned()));
    lines.extend(keywords);
    Reply { code: 250, lines }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_single_and_multi_line() {
        let mut out = Vec::new();
        ok().encode(&mut out);
        ehlo("d", vec!["PIPELINING".into(), "8BITMIME".into()]).encode(&mut out);
        auth_continue().encode(&mut out);
        assert_eq!(
            out,
            b"250 2.0.0 Ok\r\n250-d\r\n250-PIPELINING\r\n250 8BITMIME\r\n334 \r\n"
        );
    }

    #[test]
    fn encode_neutralises_line_breaks_in_text() {
        let mut out = Vec::new();
        rate_limited("a@b", "x\r\n250 fake").encode(&mut out);
        assert_eq!(out, b"450 4.7.1: Too much mail from a@b, x  250 fake\r\n");
    }
}
