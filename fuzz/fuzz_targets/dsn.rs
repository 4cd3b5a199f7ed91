//! Fuzz the delivery status notification builder (`outbound::dsn::build`) with arbitrary
//! original messages, recipients, remote host names and (hostile) reply texts.
//!
//! Input: fields separated by NUL bytes. Field 0 is `[n, flags, code_hi, code_lo, date..]`:
//! `n % 8 + 1` failed recipients, flags choose the domain, the sender, `Arrival-Date` and which
//! recipients expired; then per recipient its address, its reply text (lines split at LF, kept
//! raw) and its remote host (absent when empty); the last field is the original message.
//!
//! Checks: no panic; the notification parses with mail-parser (an independent parser) as a
//! `multipart/report; report-type=delivery-status` with exactly the three parts, from
//! `MAILER-DAEMON@<domain>` to the sender, with the nine header fields written and no other;
//! our incoming gate (`policy::check_incoming`) lets it through to an account that refuses
//! cleartext; the report has exactly one recipient group per failed recipient; the parts we
//! generate are printable ASCII in lines of at most 998 bytes (RFC 5322 §2.1.1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mail_parser::{MessageParser, MimeHeaders};
use relay::outbound::dsn::{build, Bounce, FailedRecipient};
use relay::policy::{check_incoming, Envelope};
use relay::smtp::reply::Reply;

const DOMAINS: [&str; 2] = ["relay.test", "[192.0.2.1]"];
const SENDERS: [&str; 4] = [
    "alice@relay.test",
    "\"a b\"@relay.test",
    "Alice@Relay.Test",
    "alice@[192.0.2.1]",
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn check_lines(what: &str, part: &[u8]) {
    for line in part.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        assert!(line.len() <= 998, "{what}: line of {} bytes", line.len());
        assert!(
            line.iter().all(|&b| (b' '..=b'~').contains(&b)),
            "{what}: not printable ASCII: {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0);
    let head = fields.next().unwrap_or_default();
    let byte = |i: usize| head.get(i).copied().unwrap_or(0);
    let n = usize::from(byte(0) % 8) + 1;
    let flags = byte(1);
    let code = 400 + u16::from_be_bytes([byte(2), byte(3)]) % 200;
    let date = i64::from(u32::from_be_bytes([byte(4), byte(5), byte(6), byte(7)]));
    let rest: Vec<&[u8]> = fields.collect();
    let original = rest.last().copied().unwrap_or_default();
    let failed: Vec<FailedRecipient> = (0..n)
        .map(|i| {
            let f = |j: usize| rest.get(3 * i + j).copied().unwrap_or_default();
            let lines: Vec<String> = f(1).split(|&b| b == b'\n').map(text).collect();
            let mta = f(2);
            FailedRecipient {
                recipient: if f(0).is_empty() {
                    format!("r{i}@example.net")
                } else {
                    text(f(0))
                },
                reply: Reply {
                    code,
                    lines: lines.into_iter().map(Into::into).collect(),
                },
                remote_mta: (!mta.is_empty()).then(|| text(mta)),
                expired: flags >> 4 & (1 << (i % 4)) != 0,
            }
        })
        .collect();
    let domain = DOMAINS[usize::from(flags & 1)];
    let sender = SENDERS[usize::from(flags >> 1 & 3)];
    let bounce = Bounce {
        domain,
        sender,
        failed: &failed,
        original,
        date_unix: date,
        message_id: "dsn-1@relay.test",
        arrival_unix: (flags & 8 != 0).then_some(date - 86_400),
    };
    let raw = build(&bounce).expect("a notification");

    // Our own gate lets it through to an account that refuses cleartext (envelope sender <>).
    let rcpt = [sender.to_owned()];
    let env = Envelope {
        mail_from: "",
        rcpt_to: &rcpt,
    };
    assert_eq!(check_incoming(&env, &raw, &|_| true), Ok(true));

    // An independent parser sees exactly what was written.
    let msg = MessageParser::default().parse(&raw[..]).expect("parses");
    let from = msg.from().and_then(|f| f.first()).and_then(|a| a.address());
    assert_eq!(
        from.map(str::to_ascii_lowercase),
        Some(format!("mailer-daemon@{domain}"))
    );
    assert_eq!(msg.headers().len(), 9, "header fields: {:?}", msg.headers());
    let ct = msg.root_part().content_type().expect("Content-Type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let ids = msg.root_part().sub_parts().expect("multipart").to_vec();
    let parts: Vec<(String, &[u8])> = ids
        .iter()
        .map(|id| {
            let p = msg.part(*id).expect("part");
            let ct = p.content_type().expect("part Content-Type");
            let t = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
            (t, p.contents())
        })
        .collect();
    let types: Vec<&str> = parts.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );

    // One recipient group per failed recipient, each with its action.
    let status = std::str::from_utf8(parts[1].1).expect("ASCII report");
    let groups: Vec<&str> = status.trim_end_matches("\r\n").split("\r\n\r\n").collect();
    assert_eq!(groups.len(), n + 1, "{status}");
    assert!(groups[0].starts_with("Reporting-MTA: dns; "));
    for g in &groups[1..] {
        assert!(g.starts_with("Final-Recipient: rfc822; "), "{g}");
        assert_eq!(g.matches("\r\nAction: failed\r\n").count(), 1, "{g}");
    }
    assert_eq!(status.matches("Final-Recipient:").count(), n);

    // What we generate is clean: the header section and the first two parts.
    let header_end = memchr::memmem::find(&raw, b"\r\n\r\n").expect("header section");
    check_lines("header section", &raw[..header_end]);
    check_lines("notification", parts[0].1);
    check_lines("report", parts[1].1);
});
