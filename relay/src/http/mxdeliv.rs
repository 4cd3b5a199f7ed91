//! `POST /mxdeliv`: mail from another relay over HTTPS (chatmail.md §3.7), the request side.
//!
//! The envelope comes in headers: `X-Mail-From: <sender>` (absent for a bounce) and one
//! `X-Mail-To: <recipient>` per recipient; the body is the raw message (not dot-stuffed). The
//! same checks as on port 25 apply ([`crate::smtp::inbound`]); this module reads the envelope
//! and maps SMTP replies to HTTP answers, the driver (`conn.rs`) runs the checks, the origin
//! verification and the write.
//!
//! Answers: `200` with the SMTP reply text when the message is stored; `400` with the SMTP
//! reply text for a permanent refusal (the reference's mapping); `503` with the reply text for
//! a temporary one (DNS failure during the DKIM check, full disk), where the reference also says
//! `400` — either way the sending relay falls back to SMTP, which then gets the same temporary
//! answer and retries; `405` for another method; `413` over `max_message_size` (with
//! `552 Message exceeds maximum size`, before the body is read).

use std::collections::HashSet;

use bytes::Bytes;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::smtp::reply::{self, Reply};
use crate::smtp::session::MAX_RECIPIENTS;

/// Longest address accepted in `X-Mail-From` / `X-Mail-To` (RFC 5321 §4.5.3.1.3: 256 octets
/// for a path).
pub const MAX_ADDRESS: usize = 256;

/// The envelope of a request: the sender (empty for a bounce) and the recipients (lowercase,
/// each once, at most [`MAX_RECIPIENTS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `X-Mail-From`, lowercase; empty when absent (a bounce).
    pub sender: String,
    /// `X-Mail-To`, in order, duplicates dropped.
    pub recipients: Vec<String>,
}

fn address(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?.trim();
    let s = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(s);
    let ok = !s.is_empty()
        && s.len() <= MAX_ADDRESS
        && s.contains('@')
        && !s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    ok.then(|| s.to_ascii_lowercase())
}

/// Reads the envelope from the request headers.
///
/// # Errors
/// The SMTP reply for what is wrong: no recipient (`503 5.5.1`), too many (`452 4.5.3`), an
/// address that is not one (`501`), two senders (`503`).
pub fn envelope(headers: &HeaderMap) -> Result<Envelope, Reply> {
    let mut senders = headers.get_all("x-mail-from").iter();
    let sender = match (senders.next(), senders.next()) {
        (None, _) => String::new(),
        (Some(v), None) => {
            let empty = v.to_str().is_ok_and(|s| matches!(s.trim(), "" | "<>"));
            if empty {
                String::new()
            } else {
                address(v).ok_or_else(reply::bad_sender_syntax)?
            }
        }
        (Some(_), Some(_)) => return Err(reply::nested_mail()),
    };
    let mut recipients: Vec<String> = Vec::new();
    // Seen addresses: a linear `contains` made a request with 1,000 recipients and many
    // repeated headers cost a million string comparisons.
    let mut seen: HashSet<String> = HashSet::new();
    for v in headers.get_all("x-mail-to") {
        let rcpt = address(v).ok_or_else(reply::bad_recipient_syntax)?;
        if !seen.contains(&rcpt) {
            if recipients.len() >= MAX_RECIPIENTS {
                return Err(reply::too_many_recipients());
            }
            seen.insert(rcpt.clone());
            recipients.push(rcpt);
        }
    }
    if recipients.is_empty() {
        return Err(reply::need_rcpt());
    }
    Ok(Envelope { sender, recipients })
}

/// The HTTP answer carrying `reply`: `200` for 2xx, `503` for 4xx, `400` otherwise; the body is
/// the SMTP reply text.
pub fn respond(reply: &Reply) -> Response<Bytes> {
    let status = match reply.code / 100 {
        2 => StatusCode::OK,
        4 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    let mut text = crate::outbound::reply_text(reply);
    text.push('\n');
    let mut r = Response::new(Bytes::from(text));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn envelope_from_headers() {
        let e = envelope(&headers(&[
            ("X-Mail-From", "Alice@Example.org"),
            ("X-Mail-To", "<b@x.test>"),
            ("x-mail-to", "c@x.test"),
            ("X-Mail-To", "B@x.test"),
        ]))
        .unwrap();
        assert_eq!(e.sender, "alice@example.org");
        assert_eq!(e.recipients, ["b@x.test", "c@x.test"]);
        // A bounce has no sender.
        let e = envelope(&headers(&[("X-Mail-To", "b@x.test")])).unwrap();
        assert_eq!(e.sender, "");
        let e = envelope(&headers(&[
            ("X-Mail-From", "<>"),
            ("X-Mail-To", "b@x.test"),
        ]))
        .unwrap();
        assert_eq!(e.sender, "");
    }

    #[test]
    fn bad_envelopes_are_refused_with_smtp_replies() {
        let code = |h: &[(&str, &str)]| envelope(&headers(h)).unwrap_err().code;
        assert_eq!(code(&[("X-Mail-From", "a@x.test")]), 503, "no recipient");
        assert_eq!(code(&[("X-Mail-To", "nobody")]), 501);
        assert_eq!(code(&[("X-Mail-To", "a b@x.test")]), 501);
        assert_eq!(
            code(&[("X-Mail-From", "a"), ("X-Mail-To", "b@x.test")]),
            501
        );
        assert_eq!(
            code(&[
                ("X-Mail-From", "a@x.test"),
                ("X-Mail-From", "c@x.test"),
                ("X-Mail-To", "b@x.test")
            ]),
            503
        );
        let long = format!("{}@x.test", "a".repeat(300));
        assert_eq!(code(&[("X-Mail-To", &long)]), 501);
        let many: Vec<String> = (0..=MAX_RECIPIENTS)
            .map(|i| format!("r{i}@x.test"))
            .collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|r| ("X-Mail-To", r.as_str())).collect();
        assert_eq!(code(&pairs), 452);
    }

    #[test]
    fn replies_map_to_statuses() {
        let status = |code| respond(&Reply::new(code, "x")).status().as_u16();
        assert_eq!(status(250), 200);
        assert_eq!(status(451), 503);
        assert_eq!(status(554), 400);
        assert_eq!(status(523), 400);
        assert!(respond(&Reply::new(554, "5.7.1 No DKIM signature found"))
            .body()
            .starts_with(b"554 5.7.1 No DKIM"));
    }
}
