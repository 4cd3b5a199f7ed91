//! DSN tests: structure checked with an independent parser (mail-parser), our own incoming gate,
//! and hostile reply text.

use mail_parser::{MessageParser, MimeHeaders};

use super::*;
use crate::policy::{check_incoming, Envelope};

const ORIGINAL: &[u8] = b"From: <alice@relay.test>\r\nTo: <bob@example.org>\r\n\
Subject: [...]\r\nMessage-ID: <orig-1@relay.test>\r\nX-Folded: a\r\n b\r\n\r\nSECRET BODY\r\n";

fn failed(
    rcpt: &str,
    code: u16,
    text: impl Into<std::borrow::Cow<'static, str>>,
    expired: bool,
) -> FailedRecipient {
    FailedRecipient {
        recipient: rcpt.to_owned(),
        reply: Reply::new(code, text),
        remote_mta: Some("mx.example.org".to_owned()),
        expired,
    }
}

fn bounce<'a>(failed: &'a [FailedRecipient], original: &'a [u8]) -> Bounce<'a> {
    Bounce {
        domain: "relay.test",
        sender: "alice@relay.test",
        failed,
        original,
        date_unix: 1_795_687_200,
        message_id: "dsn-1@relay.test",
        arrival_unix: Some(1_795_600_800),
    }
}

/// The parts of a multipart/report as (type/subtype, contents).
fn parts(raw: &[u8]) -> Vec<(String, String)> {
    let msg = MessageParser::default().parse(raw).expect("parses");
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    ids.iter()
        .map(|id| {
            let p = msg.part(*id).unwrap();
            let ct = p.content_type().unwrap();
            let t = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
            (t, String::from_utf8_lossy(p.contents()).into_owned())
        })
        .collect()
}

#[test]
fn date_is_rfc5322() {
    assert_eq!(
        rfc5322_date(1_795_687_200),
        "Thu, 26 Nov 2026 10:00:00 +0000"
    );
    assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
    assert_eq!(
        rfc5322_date(951_782_400 + 3661),
        "Tue, 29 Feb 2000 01:01:01 +0000"
    );
}

#[test]
fn a_report_has_the_three_parts_an_independent_parser_sees() {
    let f = [
        failed(
            "bob@example.org",
            550,
            "5.1.1 <bob@example.org>: User unknown",
            false,
        ),
        failed("carol@example.org", 451, "greylisted", true),
    ];
    let raw = build(&bounce(&f, ORIGINAL)).unwrap();
    let msg = MessageParser::default().parse(&raw[..]).unwrap();
    let from = msg.from().unwrap().first().unwrap();
    assert_eq!(from.address().unwrap(), "MAILER-DAEMON@relay.test");
    assert_eq!(
        msg.to().unwrap().first().unwrap().address().unwrap(),
        "alice@relay.test"
    );
    assert_eq!(msg.message_id(), Some("dsn-1@relay.test"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    let ct = msg.root_part().content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert!(msg.date().is_some());

    let p = parts(&raw);
    let types: Vec<&str> = p.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    assert!(
        p[0].1.contains("<bob@example.org>: rejected: 550 5.1.1"),
        "{}",
        p[0].1
    );
    assert!(
        p[0].1.contains("<carol@example.org>: message expired"),
        "{}",
        p[0].1
    );

    let status = &p[1].1;
    let groups: Vec<&str> = status.split("\r\n\r\n").collect();
    assert_eq!(groups.len(), 3, "{status}");
    assert!(groups[0].starts_with("Reporting-MTA: dns; relay.test\r\nArrival-Date: "));
    assert!(groups[1].contains("Final-Recipient: rfc822; bob@example.org\r\n"));
    assert!(groups[1].contains("Action: failed\r\n"));
    assert!(groups[1].contains("Status: 5.1.1\r\n"));
    assert!(groups[1].contains("Remote-MTA: dns; mx.example.org\r\n"));
    assert!(groups[1].contains("Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: User"));
    assert!(groups[2].contains("Status: 4.4.7\r\n"), "{}", groups[2]);

    // The original's headers, not its body; its Message-ID is what clients match on.
    let headers = &p[2].1;
    assert!(headers.contains("Message-ID: <orig-1@relay.test>\r\n"));
    assert!(headers.contains("X-Folded: a\r\n b\r\n"));
    assert!(!String::from_utf8_lossy(&raw).contains("SECRET BODY"));
}

#[test]
fn a_report_passes_our_incoming_gate() {
    let f = [failed("bob@example.org", 550, "5.1.1 unknown", false)];
    let raw = build(&bounce(&f, ORIGINAL)).unwrap();
    // Delivered with envelope sender <> to an account that refuses cleartext.
    let rcpt = ["alice@relay.test".to_owned()];
    let env = Envelope {
        mail_from: "",
        rcpt_to: &rcpt,
    };
    assert_eq!(check_incoming(&env, &raw, &|_| true), Ok(true));
    // Also for an IP-only relay's domain literal.
    let mut b = bounce(&f, ORIGINAL);
    b.domain = "[192.0.2.1]";
    let raw = build(&b).unwrap();
    assert_eq!(check_incoming(&env, &raw, &|_| true), Ok(true));
    assert!(String::from_utf8_lossy(&raw).contains("Reporting-MTA: dns; 192.0.2.1\r\n"));
}

#[test]
fn bounces_are_never_bounced() {
    let f = [failed("bob@example.org", 550, "no", false)];
    let mut b = bounce(&f, ORIGINAL);
    b.sender = "";
    assert_eq!(build(&b), None);
    let b = bounce(&[], ORIGINAL);
    assert_eq!(build(&b), None);
}

#[test]
fn hostile_reply_text_stays_inside_its_field() {
    let evil: &'static str = "5.1.1 x\r\n\r\n--dsn-\r\nContent-Type: text/html\r\n\r\n<script>é";
    let mut f = failed("bob@example.org", 550, evil, false);
    f.remote_mta = Some("mx\r\nX-Injected: 1".to_owned());
    let raw = build(&bounce(&[f], ORIGINAL)).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(!text.contains("\r\nX-Injected"), "{text}");
    assert!(!text.contains("\r\nContent-Type: text/html"), "{text}");
    assert!(text.is_ascii());
    assert_eq!(parts(&raw).len(), 3);
    // Long replies are cut; every line stays within RFC 5322's limit.
    let long = "word ".repeat(5000);
    let raw = build(&bounce(
        &[failed("b@example.org", 550, long, false)],
        ORIGINAL,
    ))
    .unwrap();
    assert!(raw.len() < 8 * 1024, "{}", raw.len());
    for line in raw.split(|&b| b == b'\n') {
        assert!(line.len() <= 998);
    }
}

#[test]
fn the_boundary_never_occurs_in_the_content() {
    let b0 = bounce(&[], ORIGINAL);
    let boundary = format!("dsn-{:016x}", fnv1a(b0.message_id.as_bytes()));
    let original = format!("Subject: --{boundary}\r\n\r\nbody\r\n");
    let f = [failed("bob@example.org", 550, "no", false)];
    let raw = build(&bounce(&f, original.as_bytes())).unwrap();
    let p = parts(&raw);
    assert_eq!(p.len(), 3);
    assert!(p[2].1.contains(&format!("Subject: --{boundary}")));
}

#[test]
fn original_headers_are_capped_at_a_field_boundary() {
    let mut original = Vec::new();
    for i in 0..10_000 {
        original.extend_from_slice(format!("X-Header-{i}: {}\n", "v".repeat(20)).as_bytes());
    }
    original.extend_from_slice(b"\nbody\n");
    let h = original_headers(&original);
    assert!(h.len() <= MAX_ORIGINAL_HEADERS);
    assert!(h.ends_with(b"\r\n"));
    let text = String::from_utf8(h).unwrap();
    assert!(text
        .lines()
        .all(|l| l.starts_with("X-Header-") && l.ends_with(&"v".repeat(20))));
}

#[test]
fn status_falls_back_to_the_reply_class() {
    let s = |code, text: &'static str, expired| status_code(&failed("a@b", code, text, expired));
    assert_eq!(s(550, "User unknown", false), "5.0.0");
    assert_eq!(s(554, "5.7.1 nope", false), "5.7.1");
    assert_eq!(s(421, "Failed to connect", true), "4.4.7");
    assert_eq!(s(451, "4.4.1 no answer", true), "4.4.1");
}
