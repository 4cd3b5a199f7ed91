//! Delivery status notifications (RFC 3464, RFC 6522): the message a sender gets back when
//! mail to some of its recipients failed for good (a 5xx reply, or the queue lifetime ran out).
//!
//! ```text
//! From: Mail Delivery System <MAILER-DAEMON@domain>   Auto-Submitted: auto-replied
//! Content-Type: multipart/report; report-type=delivery-status
//! ├── text/plain                 what happened, one line per recipient
//! ├── message/delivery-status    Reporting-MTA, then per recipient: Final-Recipient, Action:
//! │                              failed, Status, Remote-MTA, Diagnostic-Code
//! └── text/rfc822-headers        the original's header section (never its body)
//! ```
//!
//! The shape is what our incoming gate lets through unencrypted (the mailer-daemon exception of
//! [`crate::policy::check_incoming`], chatmail.md §3.5 step 4) and what Delta Chat reads: the
//! `Action` of the first recipient and the original `Message-ID` in the third part.
//! A bounce (envelope sender `<>`) never gets a notification (RFC 3464 §2, RFC 5321 §6.1).
//!
//! Remote reply text is untrusted: control characters become spaces and non-ASCII becomes `?`,
//! so it cannot add header fields or MIME parts; it is cut at [`MAX_DIAGNOSTIC`] characters.

use super::{enhanced_status, reply_text};
use crate::smtp::reply::Reply;

/// Diagnostic text kept per recipient (characters).
pub const MAX_DIAGNOSTIC: usize = 800;
/// Bytes of the original's header section included at most (cut at a field boundary).
pub const MAX_ORIGINAL_HEADERS: usize = 64 * 1024;

/// One recipient the message could not be delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The envelope recipient.
    pub recipient: String,
    /// The reply that failed it: the permanent one, or the last temporary one when the message
    /// expired.
    pub reply: Reply,
    /// The host that gave the reply, if one did (`None` for DNS failures and the like).
    pub remote_mta: Option<String>,
    /// The message expired in the queue (the reply was temporary).
    pub expired: bool,
}

/// What a notification is built from.
#[derive(Debug, Clone, Copy)]
pub struct Bounce<'a> {
    /// Our address domain (`example.org` or `[192.0.2.1]`): `From: MAILER-DAEMON@<domain>`.
    pub domain: &'a str,
    /// The original envelope sender (the notification's recipient); empty for `<>`.
    pub sender: &'a str,
    /// The recipients that failed.
    pub failed: &'a [FailedRecipient],
    /// The original message as stored (only its header section is used).
    pub original: &'a [u8],
    /// `Date:` of the notification, Unix seconds.
    pub date_unix: i64,
    /// `Message-ID:` of the notification, without angle brackets (unique, from the caller).
    pub message_id: &'a str,
    /// When the original entered the queue, Unix seconds (`Arrival-Date`), if known.
    pub arrival_unix: Option<i64>,
}

/// The notification for `bounce`, ready to deliver to `bounce.sender` with envelope sender
/// `<>`; `None` if the original was itself a bounce (sender `<>`) or nothing failed.
pub fn build(bounce: &Bounce<'_>) -> Option<Vec<u8>> {
    if bounce.sender.is_empty() || bounce.failed.is_empty() {
        return None;
    }
    let host = bounce.domain.trim_start_matches('[').trim_end_matches(']');

    let mut text = format!(
        "This is the mail system at {host}.\r\n\r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         The message itself is not included; its header section is attached.\r\n\r\n"
    );
    for f in bounce.failed {
        let why = if f.expired {
            "message expired in the queue; last error"
        } else {
            "rejected"
        };
        text.push_str(&format!(
            "<{}>: {why}: {}\r\n",
            clean(&f.recipient, 320),
            diagnostic(&f.reply)
        ));
    }

    let mut status = String::new();
    status.push_str(&format!("Reporting-MTA: dns; {}\r\n", clean(host, 255)));
    if let Some(t) = bounce.arrival_unix {
        status.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(t)));
    }
    for f in bounce.failed {
        status.push_str("\r\n");
        status.push_str(&format!(
            "Final-Recipient: rfc822; {}\r\n",
            clean(&f.recipient, 320)
        ));
        status.push_str("Action: failed\r\n");
        status.push_str(&format!("Status: {}\r\n", status_code(f)));
        if let Some(mta) = &f.remote_mta {
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", clean(mta, 255)));
        }
        status.push_str(&fold(
            "Diagnostic-Code",
            &format!("smtp; {}", diagnostic(&f.reply)),
        ));
    }

    let headers = original_headers(bounce.original);

    let mut boundary = format!("dsn-{:016x}", fnv1a(bounce.message_id.as_bytes()));
    while [text.as_bytes(), status.as_bytes(), &headers]
        .iter()
        .any(|part| contains(part, boundary.as_bytes()))
    {
        boundary.push('x');
    }

    let failed_list: Vec<String> = bounce
        .failed
        .iter()
        .map(|f| clean(&f.recipient, 320))
        .collect();
    let mut out = Vec::with_capacity(text.len() + status.len() + headers.len() + 1024);
    let mut h = |s: &str| out.extend_from_slice(s.as_bytes());
    h(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{}>\r\n",
        bounce.domain
    ));
    h(&format!("To: <{}>\r\n", bounce.sender));
    h("Subject: Undelivered Mail Returned to Sender\r\n");
    h(&format!("Date: {}\r\n", rfc5322_date(bounce.date_unix)));
    h(&format!("Message-ID: <{}>\r\n", bounce.message_id));
    h("Auto-Submitted: auto-replied\r\n");
    h(&fold("X-Failed-Recipients", &failed_list.join(", ")));
    h("MIME-Version: 1.0\r\n");
    h(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n"
    ));
    h("\r\n");
    h(&format!("--{boundary}\r\n"));
    h("Content-Type: text/plain; charset=us-ascii\r\n");
    h("Content-Description: Notification\r\n\r\n");
    h(&text);
    h(&format!("\r\n--{boundary}\r\n"));
    h("Content-Type: message/delivery-status\r\n");
    h("Content-Description: Delivery report\r\n\r\n");
    h(&status);
    h(&format!("\r\n--{boundary}\r\n"));
    h("Content-Type: text/rfc822-headers\r\n");
    if !headers.is_ascii() {
        h("Content-Transfer-Encoding: 8bit\r\n");
    }
    h("Content-Description: Undelivered message headers\r\n\r\n");
    out.extend_from_slice(&headers);
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Some(out)
}

/// `Status:` (RFC 3464 §2.3.4): the reply's enhanced code, else one from its class; for an
/// expired message the last reply's code or `4.4.7` (RFC 3463: delivery time expired).
fn status_code(f: &FailedRecipient) -> String {
    if let Some(code) = enhanced_status(&f.reply) {
        return code;
    }
    if f.expired {
        return "4.4.7".to_owned();
    }
    match f.reply.code / 100 {
        5 => "5.0.0".to_owned(),
        _ => "4.0.0".to_owned(),
    }
}

/// The reply as safe, bounded, one-line ASCII.
fn diagnostic(reply: &Reply) -> String {
    clean(&reply_text(reply), MAX_DIAGNOSTIC)
}

/// Printable ASCII only (control characters → space, other characters → `?`), at most `max`
/// characters.
fn clean(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_control() => ' ',
            _ => '?',
        })
        .collect()
}

/// `Name: value` folded at spaces so lines stay near 78 characters (RFC 5322 §2.2.3); the value
/// is one line of printable ASCII.
fn fold(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if line_len + 1 + word.len() > 78 && line_len > name.len() + 1 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}

/// The header section of `raw` (up to the empty line), CRLF line ends, at most
/// [`MAX_ORIGINAL_HEADERS`] bytes cut after a complete field.
fn original_headers(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field_end = 0;
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if content.is_empty() {
            break;
        }
        let continuation = content[0] == b' ' || content[0] == b'\t';
        if !continuation {
            field_end = out.len();
        }
        if out.len() + content.len() + 2 > MAX_ORIGINAL_HEADERS {
            out.truncate(field_end);
            return out;
        }
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// FNV-1a: a stable, dependency-free hash for the boundary (not security relevant: the
/// boundary is checked against the content anyway).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// RFC 5322 §3.3 date in UTC, e.g. `Thu, 26 Nov 2026 10:00:00 +0000`.
pub fn rfc5322_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = relay_civil::civil_from_days(days);
    format!(
        "{}, {d} {} {y} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m as usize).saturating_sub(1).min(11)],
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests;
