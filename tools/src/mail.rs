//! Messages that pass the relay's encryption gate: PGP/MIME `multipart/encrypted` around a real
//! OpenPGP message (a PKESK and a SEIPD packet made by `gpg`, see `tools/fixtures/`), with the
//! sender's address in `From` and a unique token in the `Message-ID` so a receiver can match the
//! body it fetched to the moment it was sent.
//!
//! The fixture is the same for every message; only the header lines change, so building a
//! message costs one allocation and a few copies.

/// The built-in fixtures: armored OpenPGP messages of random data (`tools/fixtures/pgp-*.asc`),
/// as (nominal payload bytes, armor).
pub const FIXTURES: [(usize, &[u8]); 4] = [
    (1024, include_bytes!("../fixtures/pgp-1k.asc")),
    (4096, include_bytes!("../fixtures/pgp-4k.asc")),
    (16384, include_bytes!("../fixtures/pgp-16k.asc")),
    (65536, include_bytes!("../fixtures/pgp-64k.asc")),
];

const BOUNDARY: &str = "lg-3f1c9e0a7b";

/// The built-in fixture whose payload is closest to `size` bytes (ties: the larger one).
pub fn fixture_for_size(size: usize) -> &'static [u8] {
    FIXTURES
        .iter()
        .min_by_key(|(n, _)| (n.abs_diff(size), usize::MAX - n))
        .map(|(_, armor)| *armor)
        .expect("FIXTURES should not be empty")
}

/// `text` with every line ending as CRLF (bare LF and CRLF input both accepted).
pub fn to_crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 32);
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// A message template: fixed MIME body around one armored OpenPGP message.
#[derive(Debug, Clone)]
pub struct Template {
    body: Vec<u8>,
}

impl Template {
    /// A template around `armor` (an ASCII-armored OpenPGP message, any line endings).
    pub fn new(armor: &[u8]) -> Template {
        let armor = to_crlf(armor);
        let armor = armor.strip_suffix(b"\r\n").unwrap_or(&armor);
        let mut body = Vec::with_capacity(armor.len() + 600);
        body.extend_from_slice(
            format!(
                "MIME-Version: 1.0\r\n\
                 Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n \
                 boundary=\"{BOUNDARY}\"\r\n\
                 \r\n\
                 This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
                 --{BOUNDARY}\r\n\
                 Content-Type: application/pgp-encrypted\r\n\
                 Content-Description: PGP/MIME version identification\r\n\
                 \r\n\
                 Version: 1\r\n\
                 \r\n\
                 --{BOUNDARY}\r\n\
                 Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
                 Content-Description: OpenPGP encrypted message\r\n\
                 Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\
                 \r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(armor);
        body.extend_from_slice(format!("\r\n\r\n--{BOUNDARY}--\r\n").as_bytes());
        Template { body }
    }

    /// The complete message (CRLF, not dot-stuffed) from `from` to `to` carrying `token`.
    pub fn render(&self, from: &str, to: &str, token: &str) -> Vec<u8> {
        let head = format!(
            "From: <{from}>\r\n\
             To: <{to}>\r\n\
             Subject: [...]\r\n\
             Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\
             Message-ID: <{token}@loadgen.invalid>\r\n\
             Chat-Version: 1.0\r\n\
             Autocrypt-Setup-Message: no\r\n"
        );
        let mut msg = Vec::with_capacity(head.len() + self.body.len());
        msg.extend_from_slice(head.as_bytes());
        msg.extend_from_slice(&self.body);
        msg
    }

    /// Size of the rendered message without the per-message header lines.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// The token of message `seq` of run `run`: unique per run, findable with [`find_token`].
pub fn token(run: u32, seq: u64) -> String {
    format!("lg.{run:08x}.{seq}")
}

/// Finds a loadgen token in a fetched message: `(run, seq)` of the first `<lg.RUN.SEQ@` found.
pub fn find_token(message: &[u8]) -> Option<(u32, u64)> {
    let at = message.windows(4).position(|w| w == b"<lg.")?;
    let rest = &message[at + 4..];
    let dot = rest.iter().position(|&b| b == b'.')?;
    let run = u32::from_str_radix(std::str::from_utf8(&rest[..dot]).ok()?, 16).ok()?;
    let rest = &rest[dot + 1..];
    let end = rest.iter().position(|&b| b == b'@')?;
    let seq = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((run, seq))
}

/// `message` (CRLF lines) dot-stuffed for SMTP DATA (RFC 5321 §4.5.2) and terminated by
/// `.` CRLF.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 8);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_passes_the_relays_encryption_gate() {
        for (size, armor) in FIXTURES {
            let msg = Template::new(armor).render("a1@[127.0.0.1]", "b2@[127.0.0.1]", "lg.1.2");
            let rcpt = vec!["b2@[127.0.0.1]".to_owned()];
            let env = relay::policy::Envelope {
                mail_from: "a1@[127.0.0.1]",
                rcpt_to: &rcpt,
            };
            relay::policy::check_outgoing(&env, &msg)
                .unwrap_or_else(|r| panic!("fixture {size} refused: {r}"));
            assert!(
                msg.len() > size,
                "fixture {size} is only {} bytes",
                msg.len()
            );
        }
    }

    #[test]
    fn a_forged_from_is_refused_by_the_gate() {
        let msg = Template::new(FIXTURES[0].1).render("other@[127.0.0.1]", "b@[127.0.0.1]", "t");
        let rcpt = vec!["b@[127.0.0.1]".to_owned()];
        let env = relay::policy::Envelope {
            mail_from: "a@[127.0.0.1]",
            rcpt_to: &rcpt,
        };
        assert_eq!(
            relay::policy::check_outgoing(&env, &msg).unwrap_err().code,
            500
        );
    }

    #[test]
    fn token_round_trip_through_a_message() {
        let t = Template::new(FIXTURES[0].1);
        let msg = t.render("a@b", "c@d", &token(0xdead_beef, 123_456_789));
        assert_eq!(find_token(&msg), Some((0xdead_beef, 123_456_789)));
        assert_eq!(find_token(b"Message-ID: <other@x>\r\n"), None);
        assert_eq!(find_token(b"Message-ID: <lg.zz.1@x>\r\n"), None);
    }

    #[test]
    fn fixture_choice_is_nearest() {
        assert_eq!(fixture_for_size(10).len(), FIXTURES[0].1.len());
        assert_eq!(fixture_for_size(5000).len(), FIXTURES[1].1.len());
        assert_eq!(fixture_for_size(1 << 30).len(), FIXTURES[3].1.len());
    }

    #[test]
    fn crlf_normalisation() {
        assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_crlf(b"\n"), b"\r\n");
    }

    #[test]
    fn dot_stuffing_and_terminator() {
        assert_eq!(
            dot_stuff(b".a\r\nb.\r\n..\r\n"),
            b"..a\r\nb.\r\n...\r\n.\r\n"
        );
        assert_eq!(dot_stuff(b"x"), b"x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    #[test]
    fn fixtures_carry_no_armor_version_header() {
        for (_, armor) in FIXTURES {
            let text = std::str::from_utf8(armor).unwrap();
            assert!(text.starts_with("-----BEGIN PGP MESSAGE-----\n"));
            assert!(!text.contains("Version:"));
        }
    }
}
