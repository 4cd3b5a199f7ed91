//! SMTP command lines → [`Command`] (RFC 5321 §4.1), by hand over bytes.
//!
//! Input is one line without its CRLF, already length-capped by the framing layer. Parsing never
//! panics on any bytes; non-ASCII or control bytes where the grammar has none are syntax errors.
//! A [`ParseError`] carries the expected grammar, ready for a `501` reply; it is mapped to a reply
//! in exactly one place (`session.rs`).
//!
//! smtp-proto's parser is not used: it refuses domain-literal addresses such as `a@[127.0.0.1]`,
//! which are the normal form on an IP-only relay.

/// Longest path accepted, angle brackets excluded (RFC 5321 §4.5.3.1.3 allows 256 octets with
/// them).
pub const MAX_PATH_LEN: usize = 254;
/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// Longest domain (RFC 5321 §4.5.3.1.2).
pub const MAX_DOMAIN_LEN: usize = 255;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain` (RFC 5321 §4.1.1.1).
    Ehlo(&'a str),
    /// `HELO domain`.
    Helo(&'a str),
    /// `MAIL FROM:<path> [params]` (RFC 5321 §4.1.1.2).
    Mail {
        /// The reverse path as sent (empty for `<>`).
        from: String,
        /// RFC 1870 `SIZE=` declared size.
        size: Option<u64>,
    },
    /// `RCPT TO:<path> [params]` (RFC 5321 §4.1.1.3).
    Rcpt {
        /// The forward path as sent.
        to: String,
    },
    /// `DATA`.
    Data,
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY [string]`; never answered truthfully.
    Vrfy,
    /// `HELP [string]`.
    Help,
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4).
    Auth {
        /// Mechanism name, uppercased.
        mechanism: String,
        /// The initial response as sent (`=` means empty).
        initial: Option<&'a str>,
    },
    /// A known command this server does not implement (EXPN, BDAT, ETRN, TURN, ...).
    NotImplemented(&'static str),
}

/// Why a command line did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// The verb is not an SMTP command (`500 5.5.2`).
    Unknown,
    /// The arguments do not match; the expected grammar (`501 5.5.4 Syntax: ...`).
    Syntax(&'static str),
    /// A MAIL parameter this server does not know (`555 5.5.4`, RFC 5321 §4.1.1.11).
    UnsupportedParameter,
    /// The reverse path is not a valid address (`501 5.1.7`).
    BadSender,
    /// The forward path is not a valid address (`501 5.1.3`).
    BadRecipient,
}

/// Parses one command line (without CRLF).
///
/// # Errors
/// See [`ParseError`].
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let (verb, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], trim_spaces(&line[i + 1..])),
        None => (line, &line[line.len()..]),
    };
    let verb_is = |name: &str| verb.eq_ignore_ascii_case(name.as_bytes());
    let no_args = |cmd: Command<'static>, grammar: &'static str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(ParseError::Syntax(grammar))
        }
    };
    if verb_is("EHLO") || verb_is("HELO") {
        let grammar = if verb_is("EHLO") {
            "EHLO hostname"
        } else {
            "HELO hostname"
        };
        let host = printable(rest).ok_or(ParseError::Syntax(grammar))?;
        if host.is_empty() || host.len() > MAX_DOMAIN_LEN || host.contains(' ') {
            return Err(ParseError::Syntax(grammar));
        }
        return Ok(if verb_is("EHLO") {
            Command::Ehlo(host)
        } else {
            Command::Helo(host)
        });
    }
    if verb_is("MAIL") {
        let grammar = "MAIL FROM:<address>";
        let args = strip_keyword(rest, b"FROM:").ok_or(ParseError::Syntax(grammar))?;
        let (path, params) = split_path(args).ok_or(ParseError::Syntax(grammar))?;
        let from = parse_path(path, true).ok_or(ParseError::BadSender)?;
        let size = parse_mail_params(params)?;
        return Ok(Command::Mail { from, size });
    }
    if verb_is("RCPT") {
        let grammar = "RCPT TO:<address>";
        let args = strip_keyword(rest, b"TO:").ok_or(ParseError::Syntax(grammar))?;
        let (path, _params) = split_path(args).ok_or(ParseError::Syntax(grammar))?;
        // RCPT parameters (DSN NOTIFY/ORCPT) are ignored, as filtermail does.
        let to = parse_path(path, false).ok_or(ParseError::BadRecipient)?;
        return Ok(Command::Rcpt { to });
    }
    if verb_is("DATA") {
        return no_args(Command::Data, "DATA");
    }
    if verb_is("RSET") {
        return no_args(Command::Rset, "RSET");
    }
    if verb_is("QUIT") {
        return no_args(Command::Quit, "QUIT");
    }
    if verb_is("STARTTLS") {
        return no_args(Command::StartTls, "STARTTLS");
    }
    if verb_is("NOOP") {
        return Ok(Command::Noop);
    }
    if verb_is("VRFY") {
        return Ok(Command::Vrfy);
    }
    if verb_is("HELP") {
        return Ok(Command::Help);
    }
    if verb_is("AUTH") {
        let grammar = "AUTH mechanism [initial-response]";
        let args = printable(rest).ok_or(ParseError::Syntax(grammar))?;
        let mut parts = args.split(' ').filter(|p| !p.is_empty());
        let mechanism = parts.next().ok_or(ParseError::Syntax(grammar))?;
        let initial = parts.next();
        if parts.next().is_some() {
            return Err(ParseError::Syntax(grammar));
        }
        return Ok(Command::Auth {
            mechanism: mechanism.to_ascii_uppercase(),
            initial,
        });
    }
    for name in [
        "EXPN", "BDAT", "ETRN", "TURN", "ATRN", "BURL", "SEND", "SOML", "SAML",
    ] {
        if verb_is(name) {
            return Ok(Command::NotImplemented(name));
        }
    }
    Err(ParseError::Unknown)
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

/// `s` as `&str` if it is printable ASCII (space included).
fn printable(s: &[u8]) -> Option<&str> {
    if s.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        std::str::from_utf8(s).ok()
    } else {
        None
    }
}

/// Strips a case-insensitive keyword such as `FROM:` and the spaces after it (many clients send
/// `MAIL FROM: <a@b>`; Postfix accepts it too).
fn strip_keyword<'a>(s: &'a [u8], keyword: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= keyword.len() && s[..keyword.len()].eq_ignore_ascii_case(keyword) {
        Some(trim_spaces(&s[keyword.len()..]))
    } else {
        None
    }
}

/// Splits `<path> params` at the `>` closing the path (quotes respected).
fn split_path(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let inner = s.strip_prefix(b"<")?;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, &b) in inner.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                let params = &inner[i + 1..];
                if !params.is_empty() && params[0] != b' ' {
                    return None;
                }
                return Some((&inner[..i], trim_spaces(params)));
            }
            _ => {}
        }
    }
    None
}

/// Validates a path (without angle brackets) and returns the mailbox as sent. A source route
/// (`@a,@b:`) is dropped (RFC 5321 §4.1.2, §C). `<>` is allowed only as a reverse path.
fn parse_path(path: &[u8], reverse: bool) -> Option<String> {
    let path = printable(path)?;
    if path.is_empty() {
        return reverse.then(String::new);
    }
    let mailbox = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    if mailbox.len() > MAX_PATH_LEN {
        return None;
    }
    let (local, domain) = mailbox.rsplit_once('@')?;
    if !is_local_part(local) || !is_domain(domain) {
        return None;
    }
    Some(mailbox.to_owned())
}

/// RFC 5321 §4.1.2 `Local-part = Dot-string / Quoted-string`.
fn is_local_part(local: &str) -> bool {
    if local.is_empty() || local.len() > MAX_LOCAL_PART_LEN {
        return false;
    }
    if let Some(quoted) = enclosed(local, '"', '"') {
        let mut escaped = false;
        for c in quoted.bytes() {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => return false,
                _ => {}
            }
        }
        return !escaped;
    }
    local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// The inside of `s` if it starts with `open` and ends with `close`.
fn enclosed(s: &str, open: char, close: char) -> Option<&str> {
    s.strip_prefix(open)?.strip_suffix(close)
}

/// RFC 5322 §3.2.3 `atext`.
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// RFC 5321 §4.1.2 `Domain / address-literal`, with `_` allowed in labels: relays whose
/// `mail_domain` starts with `_` (chatmail.md §1.9, the reference's test relays, `_r1.test`)
/// send and receive mail under it, as Postfix accepts (`strict_rfc821_envelopes = no`).
fn is_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return false;
    }
    if let Some(literal) = enclosed(domain, '[', ']') {
        return !literal.is_empty()
            && literal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-".contains(&b));
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

/// MAIL parameters: `SIZE=` (RFC 1870), `BODY=` (RFC 6152), `AUTH=` (RFC 4954 §5, ignored).
fn parse_mail_params(params: &[u8]) -> Result<Option<u64>, ParseError> {
    let grammar = "MAIL FROM:<address> [SIZE=number] [BODY=7BIT|8BITMIME]";
    let params = printable(params).ok_or(ParseError::Syntax(grammar))?;
    let mut size = None;
    for param in params.split(' ').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        if key.eq_ignore_ascii_case("SIZE") {
            let n = value
                .parse::<u64>()
                .map_err(|_| ParseError::Syntax(grammar))?;
            size = Some(n);
        } else if key.eq_ignore_ascii_case("BODY") {
            if !value.eq_ignore_ascii_case("7BIT") && !value.eq_ignore_ascii_case("8BITMIME") {
                return Err(ParseError::Syntax(grammar));
            }
        } else if key.eq_ignore_ascii_case("AUTH") {
            // RFC 4954 §5: the server may ignore it.
        } else {
            return Err(ParseError::UnsupportedParameter);
        }
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_command_table() {
        let ok: &[(&[u8], Command<'_>)] = &[
            (b"EHLO example.org", Command::Ehlo("example.org")),
            (b"ehlo [127.0.0.1]", Command::Ehlo("[127.0.0.1]")),
            (b"HELO x", Command::Helo("x")),
            (
                b"MAIL FROM:<a@[127.0.0.1]>",
                Command::Mail {
                    from: "a@[127.0.0.1]".into(),
                    size: None,
                },
            ),
            (
                b"MAIL FROM:<carol@_r1.test>",
                Command::Mail {
                    from: "carol@_r1.test".into(),
                    size: None,
                },
            ),
            (
                b"mail from: <A.b@Example.org> SIZE=123 BODY=8BITMIME",
                Command::Mail {
                    from: "A.b@Example.org".into(),
                    size: Some(123),
                },
            ),
            (
                b"MAIL FROM:<>",
                Command::Mail {
                    from: String::new(),
                    size: None,
                },
            ),
            (
                b"RCPT TO:<@relay.example:u@x.org> NOTIFY=NEVER",
                Command::Rcpt {
                    to: "u@x.org".into(),
                },
            ),
            (
                b"RCPT TO:<\"q>t\"@x.org>",
                Command::Rcpt {
                    to: "\"q>t\"@x.org".into(),
                },
            ),
            (b"DATA", Command::Data),
            (b"rset", Command::Rset),
            (b"NOOP hello", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"VRFY root", Command::Vrfy),
            (b"HELP", Command::Help),
            (b"STARTTLS", Command::StartTls),
            (
                b"AUTH plain AGEAYg==",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: Some("AGEAYg=="),
                },
            ),
            (
                b"AUTH PLAIN",
                Command::Auth {
                    mechanism: "PLAIN".into(),
                    initial: None,
                },
            ),
            (b"EXPN list", Command::NotImplemented("EXPN")),
        ];
        for (line, want) in ok {
            assert_eq!(
                parse_command(line).as_ref(),
                Ok(want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn refuses_bad_lines() {
        use ParseError::*;
        let bad: &[(&[u8], ParseError)] = &[
            (b"", Unknown),
            (b"FOO", Unknown),
            (b"MAILFROM:<a@b>", Unknown),
            (b"EHLO", Syntax("EHLO hostname")),
            (b"EHLO a b", Syntax("EHLO hostname")),
            (b"EHLO \xff", Syntax("EHLO hostname")),
            (b"MAIL TO:<a@b>", Syntax("MAIL FROM:<address>")),
            (b"MAIL FROM:a@b", Syntax("MAIL FROM:<address>")),
            (b"MAIL FROM:<a@b", Syntax("MAIL FROM:<address>")),
            (b"MAIL FROM:<a@b>x", Syntax("MAIL FROM:<address>")),
            (b"MAIL FROM:<ab>", BadSender),
            (b"MAIL FROM:<a@b@c>", BadSender),
            (b"MAIL FROM:<a..b@c>", BadSender),
            (b"MAIL FROM:<\xc3\xa4@c>", BadSender),
            (b"MAIL FROM:<a@b> FOO=1", UnsupportedParameter),
            (
                b"MAIL FROM:<a@b> SIZE=x",
                Syntax("MAIL FROM:<address> [SIZE=number] [BODY=7BIT|8BITMIME]"),
            ),
            (b"RCPT TO:<>", BadRecipient),
            (b"RCPT TO:<a@-b.org>", BadRecipient),
            (b"RCPT TO:<a@[]>", BadRecipient),
            (b"DATA x", Syntax("DATA")),
            (b"STARTTLS now", Syntax("STARTTLS")),
            (b"AUTH", Syntax("AUTH mechanism [initial-response]")),
            (
                b"AUTH PLAIN a b",
                Syntax("AUTH mechanism [initial-response]"),
            ),
        ];
        for (line, want) in bad {
            assert_eq!(
                parse_command(line),
                Err(*want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn path_length_is_capped() {
        let long = format!("MAIL FROM:<{}@{}.org>", "a".repeat(64), "b".repeat(200));
        assert_eq!(parse_command(long.as_bytes()), Err(ParseError::BadSender));
        let local = format!("MAIL FROM:<{}@b.org>", "a".repeat(65));
        assert_eq!(parse_command(local.as_bytes()), Err(ParseError::BadSender));
    }
}
