//! Outbound delivery to other relays and mail servers: the protocol pieces, sans-I/O.
//!
//! - [`mx`]: where mail for a domain goes (domain literal, MX records, null MX, implicit MX)
//!   and with which TLS policy, decided over DNS answers passed in.
//! - [`smtp_client`]: the SMTP client state machine (bytes in, bytes out): EHLO, STARTTLS
//!   (required), MAIL/RCPT/DATA with per-recipient replies, RSET, QUIT.
//! - [`mxdeliv`]: the `POST /mxdeliv` request and the classification of its response.
//! - [`schedule`]: per-destination retry backoff, queue lifetime, the per-MX-host
//!   "mxdeliv unsupported" memory and the bound on destinations in flight.
//! - [`dsn`]: the delivery status notification (RFC 3464) a failed message bounces with.
//!
//! Nothing here touches a socket, a clock or a file: time enters as `now_ms` (milliseconds since
//! the Unix epoch) and randomness as a seed. The I/O that drives these pieces is
//! [`crate::delivery`].
//!
//! Outcomes follow chatmail.md §3.6 and decisions.md: a permanent SMTP reply (5xx) from the
//! remote fails the recipient at once (the message bounces); a `/mxdeliv` non-2xx reply is never
//! an answer (delivery falls through to SMTP); anything else is temporary and retried until
//! `maximal_queue_lifetime` runs out.

pub mod dsn;
pub mod mx;
pub mod mxdeliv;
pub mod schedule;
pub mod smtp_client;

use crate::smtp::reply::Reply;

/// What became of one recipient of one message in one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The remote accepted the message for this recipient (SMTP 2xx after DATA, or `/mxdeliv`
    /// 2xx).
    Delivered,
    /// A permanent failure (SMTP 5xx, null MX, domain does not exist): bounce now.
    Permanent(Reply),
    /// A temporary failure: keep the message and retry later (bounce only when it expires).
    Temporary(Reply),
}

impl Outcome {
    /// The outcome a final SMTP reply means: 2xx delivered, 5xx permanent, anything else
    /// temporary (RFC 5321 §4.2.1).
    pub fn from_reply(reply: Reply) -> Outcome {
        match reply.code / 100 {
            2 => Outcome::Delivered,
            5 => Outcome::Permanent(reply),
            _ => Outcome::Temporary(reply),
        }
    }

    /// Whether this is [`Outcome::Temporary`].
    pub fn is_temporary(&self) -> bool {
        matches!(self, Outcome::Temporary(_))
    }
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Outcome {
        match f {
            Failure::Permanent(r) => Outcome::Permanent(r),
            Failure::Temporary(r) => Outcome::Temporary(r),
        }
    }
}

/// A failure that applies to every recipient of a destination (DNS answers, invalid literals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Bounce now.
    Permanent(Reply),
    /// Retry later.
    Temporary(Reply),
}

/// One line of text for logs and DSNs: the code and the reply's lines joined by spaces, e.g.
/// `550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown`. Control bytes become
/// spaces (remote text never breaks a log line or a header).
pub fn reply_text(reply: &Reply) -> String {
    let mut s = format!("{:03}", reply.code % 1000);
    for line in &reply.lines {
        s.push(' ');
        s.extend(line.chars().map(|c| if c.is_control() { ' ' } else { c }));
    }
    s
}

/// The enhanced status code (RFC 3463 `class.subject.detail`) at the start of a reply's text, if
/// it has one whose class matches the reply code's.
pub fn enhanced_status(reply: &Reply) -> Option<String> {
    let first = reply.lines.first()?;
    let token = first.split_ascii_whitespace().next()?;
    let mut parts = token.split('.');
    let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    let class_ok = matches!(class, "2" | "4" | "5")
        && u16::from(class.as_bytes()[0] - b'0') == reply.code / 100;
    (class_ok && digits(subject, 3) && digits(detail, 3)).then(|| token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_follows_the_reply_class() {
        assert_eq!(
            Outcome::from_reply(Reply::new(250, "ok")),
            Outcome::Delivered
        );
        assert!(matches!(
            Outcome::from_reply(Reply::new(550, "5.1.1 no")),
            Outcome::Permanent(_)
        ));
        assert!(Outcome::from_reply(Reply::new(451, "4.3.0 later")).is_temporary());
        // A reply that is neither 2xx nor 5xx is never taken as delivered or bounced.
        assert!(Outcome::from_reply(Reply::new(354, "go on")).is_temporary());
    }

    #[test]
    fn enhanced_status_is_taken_only_when_well_formed() {
        let r = |code, text: &'static str| Reply::new(code, text);
        assert_eq!(
            enhanced_status(&r(550, "5.1.1 <a@b>: unknown")),
            Some("5.1.1".into())
        );
        assert_eq!(enhanced_status(&r(452, "4.2.2 full")), Some("4.2.2".into()));
        // Class must agree with the code; junk is not a status.
        assert_eq!(enhanced_status(&r(550, "4.1.1 odd")), None);
        assert_eq!(enhanced_status(&r(550, "User unknown")), None);
        assert_eq!(enhanced_status(&r(550, "5.1 short")), None);
        assert_eq!(enhanced_status(&r(550, "5.1.1.1 long")), None);
        assert_eq!(enhanced_status(&r(550, "5.1234.1 wide")), None);
    }

    #[test]
    fn reply_text_is_one_line() {
        let reply = Reply {
            code: 550,
            lines: vec!["5.7.1 first".into(), "second\r\nInjected: x".into()],
        };
        assert_eq!(reply_text(&reply), "550 5.7.1 first second  Injected: x");
    }
}
