//! The client side of `/mxdeliv` (chatmail.md §3.7): relay-to-relay delivery over HTTPS.
//!
//! Request: `POST /mxdeliv`, `X-Mail-From: <sender>` (left out for a bounce, whose sender is
//! `<>`), one `X-Mail-To: <rcpt>` per recipient, the body the raw RFC 5322 message as stored
//! (unstuffed: SMTP dot-stuffing is a property of the SMTP wire, not of the message).
//! Response: any 2xx delivers to every recipient; anything else is not an answer, delivery falls
//! through to SMTP (as the reference does; decisions.md: `/mxdeliv` non-2xx is never a bounce).
//!
//! Builds `hyper` request values; no I/O (the client is [`crate::delivery`]).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, HOST};
use hyper::{Method, Request};

/// The request path.
pub const PATH: &str = "/mxdeliv";
/// The envelope sender header (absent for bounces).
pub const MAIL_FROM: &str = "x-mail-from";
/// The envelope recipient header, once per recipient.
pub const MAIL_TO: &str = "x-mail-to";
/// Response body bytes kept (for logs): the receiver's SMTP reply text.
pub const MAX_RESPONSE_TEXT: usize = 512;

/// What a `/mxdeliv` response means for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered to every recipient.
    Delivered,
    /// Anything else: try SMTP to the same host; the reason is for logs.
    FallThrough(String),
}

/// The `POST /mxdeliv` request to `host` (a host name or an IP address) on `port`.
///
/// # Errors
/// An address that cannot be a header value (control characters): delivery then goes by SMTP,
/// whose own checks answer it.
pub fn request(
    host: &str,
    port: u16,
    sender: &str,
    recipients: &[String],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, String> {
    let authority = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
        _ => host.to_owned(),
    };
    let authority = if port == 443 {
        authority
    } else {
        format!("{authority}:{port}")
    };
    let value = |s: &str| {
        HeaderValue::from_str(s).map_err(|_| format!("address {s:?} cannot be sent as a header"))
    };
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(PATH)
        .header(HOST, value(&authority)?);
    if !sender.is_empty() {
        builder = builder.header(MAIL_FROM, value(sender)?);
    }
    for rcpt in recipients {
        builder = builder.header(MAIL_TO, value(rcpt)?);
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

/// The verdict on a response with `status` and (the start of) its `body`.
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Delivered;
    }
    let text: String = String::from_utf8_lossy(&body[..body.len().min(MAX_RESPONSE_TEXT)])
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    Verdict::FallThrough(if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(req: &Request<Full<Bytes>>, name: &str) -> Vec<String> {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn request_carries_the_envelope_in_headers() {
        let rcpts = vec!["b@example.org".to_owned(), "c@example.org".to_owned()];
        let req = request(
            "mx.example.org",
            443,
            "a@relay.test",
            &rcpts,
            Bytes::from("raw"),
        )
        .unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/mxdeliv");
        assert_eq!(headers(&req, "host"), ["mx.example.org"]);
        assert_eq!(headers(&req, "x-mail-from"), ["a@relay.test"]);
        assert_eq!(
            headers(&req, "x-mail-to"),
            ["b@example.org", "c@example.org"]
        );
    }

    #[test]
    fn bounces_have_no_sender_header() {
        let rcpts = vec!["b@example.org".to_owned()];
        let req = request("127.0.0.1", 8443, "", &rcpts, Bytes::new()).unwrap();
        assert!(req.headers().get("x-mail-from").is_none());
        assert_eq!(headers(&req, "host"), ["127.0.0.1:8443"]);
        let req = request("::1", 443, "", &rcpts, Bytes::new()).unwrap();
        assert_eq!(headers(&req, "host"), ["[::1]"]);
    }

    #[test]
    fn header_injection_is_refused() {
        let rcpts = vec!["b@example.org\r\nX-Evil: 1".to_owned()];
        assert!(request("mx", 443, "a@b", &rcpts, Bytes::new()).is_err());
    }

    #[test]
    fn only_2xx_delivers() {
        assert_eq!(classify(200, b"250 OK"), Verdict::Delivered);
        assert_eq!(classify(204, b""), Verdict::Delivered);
        assert_eq!(
            classify(400, b"554 5.7.1 No DKIM signature found\r\n"),
            Verdict::FallThrough("HTTP 400: 554 5.7.1 No DKIM signature found".into())
        );
        assert_eq!(classify(404, b""), Verdict::FallThrough("HTTP 404".into()));
        assert!(matches!(classify(301, b""), Verdict::FallThrough(_)));
        // Long bodies are cut for the log.
        let Verdict::FallThrough(t) = classify(500, &[b'x'; 10_000]) else {
            panic!()
        };
        assert!(t.len() < MAX_RESPONSE_TEXT + 20);
    }
}
