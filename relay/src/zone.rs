//! The DNS records a relay asks for (`relay dns`, chatmail.md §1.7): which records, how they
//! are written in a zone file, and whether what a resolver answered matches. No I/O: the
//! addresses, the DKIM key's TXT value, the ACME account and the time come in as arguments;
//! [`crate::dns::check_zone`] does the lookups.
//!
//! Every record has TTL 3600. Required (a relay does not work without them): the domain's
//! A/AAAA, `MX 10 <d>.`, the DKIM key TXT, `www.` and `autoconfig.` CNAMEs, and in ACME mode
//! the MTA-STS pair (`_mta-sts` TXT, `mta-sts` CNAME). Recommended: SPF, DMARC,
//! `_adsp._domainkey`, the SRV records of the client ports, and in ACME mode with Let's
//! Encrypt a CAA record naming the relay's ACME account.
//!
//! An IP-only relay needs no records (the reference skips DNS for them).

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::config::{Config, TlsMode, LETS_ENCRYPT_DIRECTORY};

/// TTL of every record (the reference's).
pub const TTL: u32 = 3600;
/// Longest character-string of a TXT record (RFC 1035 §3.3).
pub use crate::dkim::key::TXT_STRING_MAX as TXT_CHUNK;

/// Record types the relay asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// An A or AAAA record whose value the relay does not know (no `--ip`, no specific
    /// `listen` address): any address passes the check.
    Address,
    /// Mail exchanger.
    Mx,
    /// Text.
    Txt,
    /// Alias.
    Cname,
    /// Service location (RFC 6186 for mail clients).
    Srv,
    /// Certification authority authorization (RFC 8659).
    Caa,
}

impl Kind {
    /// The type's name in a zone file.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::A | Kind::Address => "A",
            Kind::Aaaa => "AAAA",
            Kind::Mx => "MX",
            Kind::Txt => "TXT",
            Kind::Cname => "CNAME",
            Kind::Srv => "SRV",
            Kind::Caa => "CAA",
        }
    }
}

/// How much a record matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The relay does not work without it.
    Required,
    /// Deliverability or client setup is better with it.
    Recommended,
}

/// One record to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, fully qualified with the final dot.
    pub name: String,
    /// Type.
    pub kind: Kind,
    /// The data in presentation form, except TXT: the text itself (unquoted, unsplit).
    pub value: String,
    /// Required or recommended.
    pub need: Need,
}

impl Record {
    /// The record as a zone-file line (TXT quoted and split into 255-character strings); an
    /// [`Kind::Address`] placeholder is a comment.
    pub fn zone_line(&self) -> String {
        let data = match self.kind {
            Kind::Txt => quote_txt(&self.value),
            _ => self.value.clone(),
        };
        let line = format!(
            "{:<40} {TTL} IN {:<5} {data}",
            self.name,
            self.kind.as_str()
        );
        match self.kind {
            Kind::Address => format!("; {line}"),
            _ => line,
        }
    }
}

/// TXT data as zone-file strings: split as the DKIM module splits its record
/// ([`crate::dkim::key::split_txt`], at most [`TXT_CHUNK`] bytes each), quoted, `"` and `\`
/// escaped.
pub fn quote_txt(text: &str) -> String {
    crate::dkim::key::split_txt(text)
        .iter()
        .map(|chunk| {
            let escaped = chunk.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\"")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the records depend on besides the configuration.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// The server's public addresses (empty: unknown, a placeholder is printed).
    pub addresses: Vec<IpAddr>,
    /// The DKIM key's TXT value (`v=DKIM1;k=rsa;p=...`); `None`: no key yet.
    pub dkim: Option<String>,
    /// The ACME account URL for the CAA record's `accounturi`.
    pub acme_account: Option<String>,
    /// Now, unix seconds (the MTA-STS policy id).
    pub now: i64,
}

/// The MTA-STS policy id the reference writes: the time as `YYYYmmddHHMM` (UTC).
pub fn mta_sts_id(now: i64) -> String {
    let (y, m, d) = relay_civil::civil_from_days(now.div_euclid(86_400));
    let secs = now.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The records `config` asks for, required first (empty for an IP-only relay).
pub fn records(config: &Config, inputs: &Inputs) -> Vec<Record> {
    if config.is_ip_domain() {
        return Vec::new();
    }
    let d = format!("{}.", config.mail_domain.to_ascii_lowercase());
    let rec = |name: String, kind: Kind, value: String, need: Need| Record {
        name,
        kind,
        value,
        need,
    };
    let mut out = Vec::new();
    if inputs.addresses.is_empty() {
        out.push(rec(
            d.clone(),
            Kind::Address,
            "<this server's IPv4 address> (and AAAA: its IPv6 address)".into(),
            Need::Required,
        ));
    }
    for ip in &inputs.addresses {
        let kind = if ip.is_ipv4() { Kind::A } else { Kind::Aaaa };
        out.push(rec(d.clone(), kind, ip.to_string(), Need::Required));
    }
    out.push(rec(d.clone(), Kind::Mx, format!("10 {d}"), Need::Required));
    if let Some(dkim) = &inputs.dkim {
        out.push(rec(
            format!("{}._domainkey.{d}", config.dkim_selector),
            Kind::Txt,
            dkim.clone(),
            Need::Required,
        ));
    }
    for sub in ["www", "autoconfig"] {
        out.push(rec(
            format!("{sub}.{d}"),
            Kind::Cname,
            d.clone(),
            Need::Required,
        ));
    }
    let acme = config.tls_mode == TlsMode::Acme;
    if acme {
        out.push(rec(
            format!("_mta-sts.{d}"),
            Kind::Txt,
            format!("v=STSv1; id={}", mta_sts_id(inputs.now)),
            Need::Required,
        ));
        out.push(rec(
            format!("mta-sts.{d}"),
            Kind::Cname,
            d.clone(),
            Need::Required,
        ));
    }
    out.push(rec(
        d.clone(),
        Kind::Txt,
        "v=spf1 a ~all".into(),
        Need::Recommended,
    ));
    out.push(rec(
        format!("_dmarc.{d}"),
        Kind::Txt,
        "v=DMARC1;p=reject;adkim=s;aspf=s".into(),
        Need::Recommended,
    ));
    out.push(rec(
        format!("_adsp._domainkey.{d}"),
        Kind::Txt,
        "dkim=discardable".into(),
        Need::Recommended,
    ));
    let p = config.ports;
    for (service, port) in [
        ("_submission", p.submission),
        ("_submissions", p.submissions),
        ("_imap", p.imap),
        ("_imaps", p.imaps),
    ] {
        if port != 0 {
            out.push(rec(
                format!("{service}._tcp.{d}"),
                Kind::Srv,
                format!("0 1 {port} {d}"),
                Need::Recommended,
            ));
        }
    }
    if acme && config.acme_directory == LETS_ENCRYPT_DIRECTORY {
        let value = match &inputs.acme_account {
            Some(url) => format!("0 issue \"letsencrypt.org;accounturi={url}\""),
            None => "0 issue \"letsencrypt.org\"".to_owned(),
        };
        out.push(rec(d.clone(), Kind::Caa, value, Need::Recommended));
    }
    out
}

/// The zone-file text of `records` for `config`, with comments for what could not be known.
pub fn zone_file(config: &Config, records: &[Record], inputs: &Inputs) -> String {
    let mut out = format!(
        "; DNS records of the chatmail relay {} (`relay dns`), TTL {TTL}.\n",
        config.mail_domain
    );
    for (need, title) in [
        (Need::Required, "Required"),
        (Need::Recommended, "Recommended"),
    ] {
        let _ = writeln!(out, ";\n; {title}");
        for r in records.iter().filter(|r| r.need == need) {
            let _ = writeln!(out, "{}", r.zone_line());
        }
        if need == Need::Required && inputs.dkim.is_none() {
            let _ = writeln!(
                out,
                "; {}._domainkey.{}. TXT: no DKIM key yet (`relay init` or the first \
                 `relay serve` makes it)",
                config.dkim_selector, config.mail_domain
            );
        }
    }
    if inputs.addresses.is_empty() {
        out.push_str(
            ";\n; The server's addresses are unknown: give them with --ip (or set `listen` to \
             them).\n",
        );
    }
    out
}

/// What a lookup found for a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Present with the expected data.
    Ok,
    /// No record of the type at the name.
    Missing,
    /// Records are there but none has the expected data: what was found.
    Wrong(Vec<String>),
}

/// Compares the answers to a lookup of `record`'s name and type (each in the form the lookup
/// gives: addresses and names as text, TXT strings joined, SRV/MX/CAA in presentation form)
/// with what `record` asks for.
pub fn verdict(record: &Record, found: &[String]) -> Verdict {
    let ok = |f: &String| match record.kind {
        Kind::Address => true,
        Kind::A | Kind::Aaaa => f.parse::<IpAddr>().ok() == record.value.parse::<IpAddr>().ok(),
        Kind::Cname => same_name(f, &record.value),
        Kind::Mx => same_name(last_field(f), last_field(&record.value)),
        Kind::Srv => {
            let port = |s: &str| s.split_whitespace().nth(2).map(str::to_owned);
            port(f) == port(&record.value) && same_name(last_field(f), last_field(&record.value))
        }
        Kind::Caa => caa_issuer(f).is_some() && caa_issuer(f) == caa_issuer(&record.value),
        Kind::Txt => txt_matches(&record.value, f),
    };
    if found.iter().any(ok) {
        return Verdict::Ok;
    }
    // Among several TXT records at a name, only those of the same kind are "wrong" ones.
    let related: Vec<String> = match record.kind {
        Kind::Txt => found
            .iter()
            .filter(|f| txt_tag(f).eq_ignore_ascii_case(txt_tag(&record.value)))
            .cloned()
            .collect(),
        Kind::Caa => found
            .iter()
            .filter(|f| f.split_whitespace().nth(1) == Some("issue"))
            .cloned()
            .collect(),
        _ => found.to_vec(),
    };
    if related.is_empty() {
        Verdict::Missing
    } else {
        Verdict::Wrong(related)
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn last_field(s: &str) -> &str {
    s.split_whitespace().last().unwrap_or("")
}

/// The issuer domain of a CAA `issue` property (`0 issue "letsencrypt.org;..."`).
fn caa_issuer(caa: &str) -> Option<String> {
    let mut fields = caa.splitn(3, ' ');
    let (_flags, tag, value) = (fields.next()?, fields.next()?, fields.next()?);
    (tag == "issue").then(|| {
        value
            .trim_matches('"')
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    })
}

/// The first tag of a TXT record (`v=spf1`, `v=DMARC1`, `v=DKIM1`, `v=STSv1`, `dkim`).
fn txt_tag(txt: &str) -> &str {
    let t = txt.trim_start();
    let end = t.find([';', ' ']).unwrap_or(t.len());
    let first = &t[..end];
    match first.split_once('=') {
        Some(("v", _)) => first,
        Some((k, _)) => k,
        None => first,
    }
}

/// `tag=value` pairs of a DKIM/DMARC-style record, whitespace removed.
fn tags(txt: &str) -> Vec<(String, String)> {
    txt.split(';')
        .filter_map(|p| {
            let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
            let (k, v) = p.split_once('=')?;
            Some((k.to_ascii_lowercase(), v.to_owned()))
        })
        .collect()
}

fn txt_matches(expected: &str, found: &str) -> bool {
    let tag = txt_tag(expected);
    if tag.eq_ignore_ascii_case("v=STSv1") {
        // Any policy id will do: the reference keeps an existing one.
        return txt_tag(found).eq_ignore_ascii_case("v=STSv1");
    }
    if tag.eq_ignore_ascii_case("v=DKIM1") {
        // The key is what matters.
        let p = |t: &str| tags(t).into_iter().find(|(k, _)| k == "p").map(|(_, v)| v);
        return txt_tag(found).eq_ignore_ascii_case("v=DKIM1") && p(found) == p(expected);
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase()
    };
    squash(found) == squash(expected)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the golden file
mod tests {
    use super::*;
    use crate::config::{Mode, RawConfig};

    fn config(kv: &[&str]) -> Config {
        let mut raw = RawConfig::default();
        for s in kv {
            raw.set(s).unwrap();
        }
        Config::build(&raw, Mode::Serve).unwrap()
    }

    /// A 2048-bit RSA key's TXT value is longer than 255 characters.
    const DKIM: &str =
        "v=DKIM1;k=rsa;p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAwVXw2gqbZqO7Fo5\
        0t5nVtBXsqwv1UNm8s5WqbO3ZD3kZq2PwL2J2S6yB0M7VfX4J5Bf1Q0b4kz9m0Qw6eLQ2xL9vXk0m3sJc8dFh\
        9y1Zr0T6U1cVt6jQ6H0k0k9pX3QfG2Y5w6tB7xJw8Qk9v5bT2nQdR0zS1oYcL3mXv4eP9aQ7uK2jH1gF5dS8\
        rN3wE6iO0pU4yT7zX2cV9bM1nA5sD3fG6hJ8kL0qW4eR7tY9uI2oP5aS8dF1gH3jK6lZ0xC4vB7nM9qW2eR5\
        tY8uI1oP4aS7dF0gH2jK5lZ9xC3vB6nM8qW1eR4tY7uI0oP3aS6dF9gH1jK4lZ8xC2vB5nM7qW0eR3tYwIDAQ\
        AB;s=email;t=s";

    fn inputs() -> Inputs {
        Inputs {
            addresses: vec![
                "203.0.113.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap(),
            ],
            dkim: Some(DKIM.to_owned()),
            acme_account: Some("https://acme-v02.api.letsencrypt.org/acme/acct/123".into()),
            // 2026-03-04 05:06 UTC.
            now: 1_772_600_760,
        }
    }

    /// The golden zone file: `relay/testdata/dns/chat.example.org.zone`; a mismatch writes
    /// `*.actual` beside it.
    #[test]
    fn zone_file_matches_the_golden_file() {
        let c = config(&["mail_domain=chat.example.org", "imap_port=0"]);
        let i = inputs();
        let text = zone_file(&c, &records(&c, &i), &i);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/dns/chat.example.org.zone"
        );
        let golden = std::fs::read_to_string(path).unwrap_or_default();
        if golden != text {
            std::fs::write(format!("{path}.actual"), &text).unwrap();
            panic!("zone file differs from {path} (see {path}.actual)");
        }
    }

    #[test]
    fn txt_is_split_into_255_character_strings() {
        let q = quote_txt(DKIM);
        let strings: Vec<&str> = q.split("\" \"").collect();
        assert_eq!(strings.len(), DKIM.len().div_ceil(TXT_CHUNK));
        assert_eq!(
            q.replace("\" \"", "").trim_matches('"'),
            DKIM,
            "joined again: the value"
        );
        assert_eq!(quote_txt("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }

    #[test]
    fn mode_decides_mta_sts_and_caa_and_ip_relays_need_nothing() {
        let has = |c: &Config, name: &str, kind: Kind| {
            records(c, &inputs())
                .iter()
                .any(|r| r.name == name && r.kind == kind)
        };
        let acme = config(&["mail_domain=chat.example.org"]);
        assert!(has(&acme, "_mta-sts.chat.example.org.", Kind::Txt));
        assert!(has(&acme, "chat.example.org.", Kind::Caa));
        let other_ca = config(&[
            "mail_domain=chat.example.org",
            "acme_directory=https://acme.example/dir",
        ]);
        assert!(!has(&other_ca, "chat.example.org.", Kind::Caa));
        let external = config(&[
            "mail_domain=chat.example.org",
            "tls_external_cert_and_key=/c /k",
        ]);
        assert!(!has(&external, "mta-sts.chat.example.org.", Kind::Cname));
        assert!(has(&external, "www.chat.example.org.", Kind::Cname));
        let underscore = config(&["mail_domain=_r1.test", "dkim_selector=sel"]);
        assert!(has(&underscore, "sel._domainkey._r1.test.", Kind::Txt));
        assert!(!has(&underscore, "_mta-sts._r1.test.", Kind::Txt));
        assert!(records(&config(&["mail_domain=203.0.113.7"]), &inputs()).is_empty());
        assert_eq!(mta_sts_id(inputs().now), "202603040506");
    }

    #[test]
    fn verdicts_name_missing_and_wrong_records() {
        let c = config(&["mail_domain=chat.example.org"]);
        let recs = records(&c, &inputs());
        let find = |name: &str, kind: Kind| {
            recs.iter()
                .find(|r| r.name == name && r.kind == kind)
                .unwrap()
                .clone()
        };
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mx = find("chat.example.org.", Kind::Mx);
        assert_eq!(verdict(&mx, &s(&["20 CHAT.example.org."])), Verdict::Ok);
        assert_eq!(verdict(&mx, &[]), Verdict::Missing);
        assert_eq!(
            verdict(&mx, &s(&["10 mail.other.org."])),
            Verdict::Wrong(s(&["10 mail.other.org."]))
        );
        let dkim = find("opendkim._domainkey.chat.example.org.", Kind::Txt);
        let spaced = DKIM.replace(';', "; ");
        assert_eq!(verdict(&dkim, &[spaced]), Verdict::Ok);
        let other = "v=DKIM1;k=rsa;p=AAAA";
        assert_eq!(verdict(&dkim, &s(&[other])), Verdict::Wrong(s(&[other])));
        let spf = find("chat.example.org.", Kind::Txt);
        assert_eq!(
            verdict(&spf, &s(&["google-site-verification=x", "v=spf1  a ~all"])),
            Verdict::Ok
        );
        assert_eq!(
            verdict(&spf, &s(&["google-site-verification=x"])),
            Verdict::Missing,
            "other TXT records are not a wrong SPF record"
        );
        let sts = find("_mta-sts.chat.example.org.", Kind::Txt);
        assert_eq!(
            verdict(&sts, &s(&["v=STSv1; id=20200101"])),
            Verdict::Ok,
            "an existing id is kept"
        );
        let srv = find("_imaps._tcp.chat.example.org.", Kind::Srv);
        assert_eq!(
            verdict(&srv, &s(&["5 0 993 chat.example.org."])),
            Verdict::Ok
        );
        assert!(matches!(
            verdict(&srv, &s(&["0 1 994 chat.example.org."])),
            Verdict::Wrong(_)
        ));
        let caa = find("chat.example.org.", Kind::Caa);
        assert_eq!(
            verdict(&caa, &s(&["0 issue \"letsencrypt.org\""])),
            Verdict::Ok
        );
        assert_eq!(
            verdict(&caa, &s(&["0 iodef \"mailto:x@y\""])),
            Verdict::Missing
        );
        let www = find("www.chat.example.org.", Kind::Cname);
        assert_eq!(verdict(&www, &s(&["chat.example.org."])), Verdict::Ok);
        let a = find("chat.example.org.", Kind::A);
        assert_eq!(verdict(&a, &s(&["203.0.113.7"])), Verdict::Ok);
        assert!(matches!(
            verdict(&a, &s(&["203.0.113.8"])),
            Verdict::Wrong(_)
        ));
    }
}
