//! Policy tests: the corpus table (`relay/testdata/mail/expected.txt`), pinned quirks, header
//! cleanup on every corpus file, and property tests that no input panics.

use std::path::PathBuf;

use proptest::prelude::*;

use super::armor::ArmorError;
use super::*;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join("mail")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(corpus_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn enforces(rcpt: &str) -> bool {
    !rcpt.starts_with("legacy")
}

fn verdict(dir: &str, mail_from: &str, rcpt: &[String], raw: &[u8]) -> String {
    let env = Envelope {
        mail_from,
        rcpt_to: rcpt,
    };
    let r = match dir {
        "out" => check_outgoing(&env, raw).map(|()| false),
        "in" => check_incoming(&env, raw, &enforces),
        other => panic!("bad direction {other}"),
    };
    match r {
        Ok(false) => "ok".to_string(),
        Ok(true) => "ok-reset".to_string(),
        Err(rej) => rej.to_string(),
    }
}

/// The table: every row of expected.txt runs, every .eml file has at least one row.
#[test]
fn corpus_table() {
    let table = std::fs::read_to_string(corpus_dir().join("expected.txt")).unwrap();
    let mut ran = 0;
    let mut seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (lineno, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 5, "line {}: {line}", lineno + 1);
        let (file, dir, mail_from, rcpts) = (fields[0], fields[1], fields[2], fields[3]);
        let expected = fields[4..].join(" ");
        let rcpt: Vec<String> = rcpts.split(',').map(str::to_string).collect();
        let raw = read(file);
        let got = verdict(dir, &mail_from.to_lowercase(), &rcpt, &raw);
        if got != expected {
            failures.push(format!(
                "{file} {dir} {mail_from} {rcpts}: expected `{expected}`, got `{got}`"
            ));
        }
        seen.insert(file.to_string());
        ran += 1;
    }
    assert!(
        failures.is_empty(),
        "corpus mismatches:\n{}",
        failures.join("\n")
    );
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".eml") && !seen.contains(&name) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "corpus files without a row in expected.txt: {missing:?}"
    );
    assert!(ran >= 60, "only {ran} corpus rows ran");
    assert!(seen.len() >= 35, "only {} corpus files ran", seen.len());
}

/// Quirk (chatmail.md §3.2 item 5): the reference accepts a message with only the
/// `application/pgp-encrypted` part; we require exactly two parts.
#[test]
fn quirk_only_first_part_is_not_encrypted() {
    let raw = read("encrypted-only-first-part.eml");
    assert_eq!(
        is_encrypted(&raw, Direction::Incoming),
        Err(NotEncrypted::PartCount)
    );
}

/// Quirk (§3.2 armor step 4): the reference cuts from the last `=`, so armor without a CRC line
/// but with base64 padding was refused. We parse the CRC line and keep the padding.
#[test]
fn quirk_no_crc_with_padding_passes_and_crc_is_verified() {
    let raw = read("encrypted-nocrc-padding.eml");
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(
        text.contains("=\r\n-----END PGP MESSAGE-----"),
        "fixture must end in padding"
    );
    assert_eq!(is_encrypted(&raw, Direction::Outgoing), Ok(()));
    assert_eq!(
        is_encrypted(&read("encrypted-badcrc.eml"), Direction::Outgoing),
        Err(NotEncrypted::Armor(ArmorError::CrcMismatch))
    );
}

#[test]
fn refusal_reasons_on_corpus() {
    use super::armor::PacketError as P;
    let cases: &[(&str, NotEncrypted)] = &[
        (
            "literal.eml",
            NotEncrypted::Armor(ArmorError::Packets(P::UnexpectedTag(11))),
        ),
        (
            "compressed.eml",
            NotEncrypted::Armor(ArmorError::Packets(P::UnexpectedTag(8))),
        ),
        (
            "signature-only.eml",
            NotEncrypted::Armor(ArmorError::Packets(P::UnexpectedTag(2))),
        ),
        (
            "encrypted-trailing-bytes.eml",
            NotEncrypted::Armor(ArmorError::Packets(P::TrailingData)),
        ),
        (
            "encrypted-length-past-end.eml",
            NotEncrypted::Armor(ArmorError::Packets(P::Truncated)),
        ),
        (
            "encrypted-truncated-armor.eml",
            NotEncrypted::Armor(ArmorError::NoEnd),
        ),
        (
            "encrypted-version-header.eml",
            NotEncrypted::Armor(ArmorError::VersionHeader),
        ),
        (
            "encrypted-comment-header.eml",
            NotEncrypted::Armor(ArmorError::BadBase64),
        ),
        ("encrypted-three-parts.eml", NotEncrypted::PartCount),
        (
            "encrypted-nested-multipart.eml",
            NotEncrypted::NestedMultipart,
        ),
        ("encrypted-bad-control.eml", NotEncrypted::BadControlPart),
        ("fake-encrypted.eml", NotEncrypted::NotMultipartEncrypted),
        ("many-missing-boundaries.eml", NotEncrypted::PartCount),
    ];
    for (file, want) in cases {
        assert_eq!(
            is_encrypted(&read(file), Direction::Outgoing),
            Err(*want),
            "{file}"
        );
    }
}

/// Header cleanup on every corpus file: the body is unchanged byte for byte, no removed field
/// survives in the header section, and cleaning twice changes nothing.
#[test]
fn header_cleanup_on_corpus() {
    let mut n = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let raw = std::fs::read(&path).unwrap();
        let (_, body) = mime::split_header(&raw);
        for clean in [clean_submission_headers, clean_delivery_headers] {
            let out = clean(&raw);
            let (head, out_body) = mime::split_header(&out);
            assert_eq!(out_body, body, "{}", path.display());
            assert_eq!(clean(&out), out, "not idempotent: {}", path.display());
            let head = String::from_utf8_lossy(head).to_ascii_lowercase();
            assert!(!head.contains("\nreceived:") && !head.starts_with("received:"));
        }
        let out = String::from_utf8(clean_submission_headers(&raw)).unwrap();
        let (head, _) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        for line in head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("subject"))
        {
            assert_eq!(line, "Subject: [...]");
        }
        n += 1;
    }
    assert!(n >= 35, "only {n} files");
}

#[test]
fn received_and_dkim_removed_with_continuations() {
    let raw = b"Received: from a ([1.2.3.4])\r\n\tby relay; Thu, 1 Jan 2026\r\n\
DKIM-Signature: v=1; a=rsa-sha256;\r\n d=example.org; b=abc\r\n\
Authentication-Results: mx; dkim=pass\r\nFrom: a@example.org\r\n\r\nbody\r\n";
    assert_eq!(
        clean_delivery_headers(raw),
        b"From: a@example.org\r\n\r\nbody\r\n"
    );
}

fn any_rcpts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z]{1,5}@example\\.org", 0..3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// No input panics; verdicts only use the documented codes.
    #[test]
    fn never_panics_on_bytes(raw in prop::collection::vec(any::<u8>(), 0..2048), rcpt in any_rcpts()) {
        let env = Envelope { mail_from: "alice@example.org", rcpt_to: &rcpt };
        if let Err(r) = check_outgoing(&env, &raw) {
            prop_assert!(r.code == 500 || r.code == 523);
        }
        if let Err(r) = check_incoming(&env, &raw, &|_| true) {
            prop_assert!(r.code == 500 || r.code == 523);
        }
        let _ = clean_submission_headers(&raw);
        let _ = clean_delivery_headers(&raw);
    }

    /// Mutating one byte of a valid encrypted message never panics, and the result is either
    /// accepted or refused with 523.
    #[test]
    fn mutated_encrypted_message(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let mut raw = read("encrypted-gpg.eml");
        let i = pos.index(raw.len());
        raw[i] = byte;
        raw.truncate(cut.index(raw.len() * 2).max(i + 1).min(raw.len()));
        let rcpt = vec!["bob@example.org".to_string()];
        let env = Envelope { mail_from: "alice@example.org", rcpt_to: &rcpt };
        if let Err(r) = check_outgoing(&env, &raw) {
            prop_assert!(r.code == 523 || r.code == 500, "{r}");
        }
    }

    /// Header cleanup keeps the body byte for byte for arbitrary header sections.
    #[test]
    fn cleanup_keeps_body(
        fields in prop::collection::vec(("(Received|Subject|X-Mailer|User-Agent|To|From|DKIM-Signature|X-Other)", "[ -~]{0,20}", prop::bool::ANY), 0..8),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut raw = Vec::new();
        for (name, value, folded) in &fields {
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            if *folded {
                raw.extend_from_slice(b"\tcontinued\r\n");
            }
        }
        raw.extend_from_slice(b"\r\n");
        raw.extend_from_slice(&body);
        let out = clean_submission_headers(&raw);
        prop_assert!(out.ends_with(&body));
        let kept: Vec<&(String, String, bool)> = fields
            .iter()
            .filter(|(n, _, _)| !matches!(n.as_str(), "Received" | "X-Mailer" | "User-Agent"))
            .collect();
        let mut expect = Vec::new();
        for (name, value, folded) in kept {
            if name == "Subject" {
                expect.extend_from_slice(b"Subject: [...]\r\n");
                continue;
            }
            expect.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            if *folded {
                expect.extend_from_slice(b"\tcontinued\r\n");
            }
        }
        expect.extend_from_slice(b"\r\n");
        expect.extend_from_slice(&body);
        prop_assert_eq!(out, expect);
    }
}

/// Bare-LF line endings (a message stored by another tool) get the same verdicts.
#[test]
fn lf_only_messages() {
    let rcpt = vec!["bob@example.org".to_string()];
    let env = Envelope {
        mail_from: "alice@example.org",
        rcpt_to: &rcpt,
    };
    for (file, ok) in [
        ("encrypted-gpg.eml", true),
        ("securejoin-vc.eml", true),
        ("plain.eml", false),
    ] {
        let lf: Vec<u8> = read(file).into_iter().filter(|&b| b != b'\r').collect();
        assert_eq!(check_outgoing(&env, &lf).is_ok(), ok, "{file}");
    }
}

/// The limiter as the SMTP session uses it: no refusal before the burst, then the 450 text.
#[test]
fn limiter_like_test_exceed_rate_limit() {
    let l = SendLimiter::new(60, 10);
    for i in 0..10 {
        assert_eq!(
            l.check_at("alice@example.org", 1_000 + i),
            Ok(()),
            "cell {i}"
        );
    }
    let msg = l.check_at("alice@example.org", 1_010).unwrap_err();
    let reply = format!("450 4.7.1: Too much mail from <alice@example.org>, {msg}");
    assert!(reply.contains("4.7.1: Too much mail from"), "{reply}");
    assert!(msg.starts_with("rate-limited until "), "{msg}");
}

/// Every accepted incoming message names the From address whose origin is verified next,
/// whichever rule let it through; refusals come before it.
#[test]
fn incoming_names_the_from_domain_to_verify() {
    let legacy = vec!["legacy@example.org".to_string()];
    let modern = vec!["bob@example.org".to_string()];
    let check = |file: &str, mail_from: &str, rcpt: &[String]| {
        let env = Envelope {
            mail_from,
            rcpt_to: rcpt,
        };
        check_incoming_from(&env, &read(file), &enforces)
    };
    for (file, rcpt) in [
        ("encrypted-gpg.eml", &modern),
        ("securejoin-vc.eml", &modern),
        ("mailer-daemon.eml", &modern),
        ("plain.eml", &legacy),
    ] {
        let incoming = check(file, "", rcpt).unwrap_or_else(|r| panic!("{file}: {r}"));
        assert!(
            incoming.reset_sender,
            "{file}: empty envelope sender differs"
        );
        assert!(!incoming.from_domain().is_empty(), "{file}");
        assert_eq!(
            incoming.from.rsplit_once('@').unwrap().1,
            incoming.from_domain()
        );
    }
    let incoming = check("mailer-daemon.eml", "mailer-daemon@example.net", &modern).unwrap();
    assert_eq!(incoming.from, "mailer-daemon@example.net");
    assert_eq!(incoming.from_domain(), "example.net");
    assert!(!incoming.reset_sender);
    assert_eq!(
        check("plain.eml", "", &modern).unwrap_err(),
        Reject::encryption_needed()
    );
    let literal = Incoming {
        reset_sender: false,
        from: "carol@[192.0.2.1]".into(),
    };
    assert_eq!(literal.from_domain(), "[192.0.2.1]");
    let bare = Incoming {
        reset_sender: false,
        from: "nobody".into(),
    };
    assert_eq!(bare.from_domain(), "");
}
