//! Destination resolution (chatmail.md §3.6, RFC 5321 §5.1, RFC 7505): which hosts take mail for
//! a recipient domain, in which order, and how their TLS certificates are checked. A decision
//! over DNS answers the caller passes in; no lookups here.
//!
//! - A domain literal `[192.0.2.1]` or `[IPv6:2001:db8::1]` is that address; its certificate is
//!   not verified (there is no name to verify it against).
//! - A name: its MX records by preference. Equal preferences are shuffled with a seed the caller
//!   passes in (RFC 5321 §5.1: "SHOULD randomize"; spreads load over equal hosts, and the seed
//!   keeps tests deterministic). A null MX (RFC 7505: the only record is `0 .`) is a permanent
//!   `556 5.1.10`; NXDOMAIN a permanent `550 5.1.2`; no MX records the implicit MX (the domain
//!   itself, RFC 5321 §5.1); any other DNS failure is temporary.
//! - TLS: STARTTLS is always required. Names are verified against the MX host name, except for
//!   `_`-prefixed destination domains (self-signed relays, chatmail.md §1.9), whose hosts are
//!   accepted with any certificate, as literals are.
//!
//! Left out on purpose: the reference's `nauta.cu` exception (no TLS at all for one domain,
//! Postfix `smtp_tls_policy_map` `may`). A cleartext hop for one hard-coded domain is a policy
//! decision that does not belong in protocol code; such a destination gets a temporary failure
//! ("STARTTLS not offered") like any other server without TLS.

use std::net::{IpAddr, Ipv6Addr};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::Failure;
use crate::smtp::reply::Reply;

/// MX hosts tried per destination and attempt at most. Postfix stops after five addresses
/// (`smtp_mx_address_limit`); a hostile zone with hundreds of MX records must not turn one
/// attempt into hundreds of connection timeouts.
pub const MAX_MX_HOSTS: usize = 5;

/// Where a recipient domain's mail goes, before any DNS lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A domain literal: deliver to this address.
    Literal(IpAddr),
    /// A domain name (lowercase, no trailing dot): look up its MX records.
    Name(String),
}

/// How a host's certificate is checked after STARTTLS (or on HTTPS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPolicy {
    /// The certificate must be valid for the host name (system CAs plus any configured extra
    /// CA).
    Verify,
    /// Any certificate is accepted (domain literals, `_`-prefixed domains); the handshake
    /// signatures are still checked, and STARTTLS is still required.
    AcceptAny,
}

/// One host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// The host name (lowercase, no trailing dot) or, for a literal, the address as text.
    pub name: String,
    /// The address of a literal; a name still needs its A/AAAA lookup.
    pub literal: Option<IpAddr>,
    /// How its certificate is checked.
    pub tls: TlsPolicy,
}

/// The answer to an MX query, as the resolver reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// Records as `(preference, exchange)`; the exchange may carry a trailing dot; `.` (or
    /// empty) is the null MX target.
    Records(Vec<(u16, String)>),
    /// The name exists but has no MX records (NOERROR, no data).
    NoRecords,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// Any other failure (timeout, SERVFAIL, refused, no server): its description.
    Failed(String),
}

/// Parses the domain part of a recipient address.
///
/// # Errors
/// A permanent failure for a malformed domain literal (`[...]` that is not an IPv4 address or
/// `IPv6:` address, RFC 5321 §4.1.3) or an empty domain.
pub fn destination(domain: &str) -> Result<Destination, Failure> {
    let domain = domain.trim();
    if let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let ip = match inner.get(..5) {
            Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
                inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6)
            }
            _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        };
        return ip.map(Destination::Literal).ok_or_else(|| {
            Failure::Permanent(Reply::new(
                550,
                format!("5.1.2 Bad destination address literal {domain}"),
            ))
        });
    }
    let name = domain.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return Err(Failure::Permanent(Reply::new(
            550,
            "5.1.2 Empty destination domain",
        )));
    }
    Ok(Destination::Name(name))
}

/// The one host of a domain literal.
pub fn literal_host(ip: IpAddr) -> MxHost {
    MxHost {
        name: ip.to_string(),
        literal: Some(ip),
        tls: TlsPolicy::AcceptAny,
    }
}

/// The TLS policy for the hosts of destination domain `domain` (a name).
pub fn tls_policy(domain: &str) -> TlsPolicy {
    if domain.starts_with('_') {
        TlsPolicy::AcceptAny
    } else {
        TlsPolicy::Verify
    }
}

/// The hosts to try for `domain` (a [`Destination::Name`]) given its MX answer, best first, at
/// most [`MAX_MX_HOSTS`]. `seed` orders hosts of equal preference.
///
/// # Errors
/// Permanent for a null MX or NXDOMAIN, temporary for any other DNS failure.
pub fn hosts(domain: &str, answer: MxAnswer, seed: u64) -> Result<Vec<MxHost>, Failure> {
    let tls = tls_policy(domain);
    let host = |name: &str| MxHost {
        name: name.to_owned(),
        literal: None,
        tls,
    };
    let records = match answer {
        MxAnswer::NoRecords => return Ok(vec![host(domain)]),
        MxAnswer::NxDomain => {
            return Err(Failure::Permanent(Reply::new(
                550,
                format!("5.1.2 Domain {domain} does not exist"),
            )))
        }
        MxAnswer::Failed(e) => {
            return Err(Failure::Temporary(Reply::new(
                451,
                format!("4.4.3 DNS lookup of MX records for {domain} failed: {e}"),
            )))
        }
        MxAnswer::Records(records) => records,
    };
    let mut records: Vec<(u16, String)> = records
        .into_iter()
        .map(|(pref, name)| (pref, name.trim_end_matches('.').to_ascii_lowercase()))
        .collect();
    // RFC 7505 §3: a null MX is a single record with an empty (root) target. A root target
    // among other records is invalid and ignored.
    if records.len() == 1 && records[0].1.is_empty() {
        return Err(Failure::Permanent(Reply::new(
            556,
            format!("5.1.10 Domain {domain} does not accept mail (null MX)"),
        )));
    }
    records.retain(|(_, name)| !name.is_empty());
    if records.is_empty() {
        // Only root targets: nothing to deliver to, the same answer as a null MX.
        return Err(Failure::Permanent(Reply::new(
            556,
            format!("5.1.10 Domain {domain} does not accept mail (null MX)"),
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    records.shuffle(&mut rng);
    // A stable sort keeps the shuffled order within one preference.
    records.sort_by_key(|(pref, _)| *pref);
    let mut out: Vec<MxHost> = Vec::new();
    for (_, name) in records {
        if !out.iter().any(|h| h.name == name) {
            out.push(host(&name));
        }
        if out.len() == MAX_MX_HOSTS {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[MxHost]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    fn code(f: Failure) -> (bool, u16, String) {
        match f {
            Failure::Permanent(r) => (true, r.code, r.lines.join(" ")),
            Failure::Temporary(r) => (false, r.code, r.lines.join(" ")),
        }
    }

    #[test]
    fn literals_are_addresses_without_verification() {
        assert_eq!(
            destination("[192.0.2.7]"),
            Ok(Destination::Literal("192.0.2.7".parse().unwrap()))
        );
        assert_eq!(
            destination("[IPv6:2001:db8::1]"),
            Ok(Destination::Literal("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            destination("[ipv6:::1]"),
            Ok(Destination::Literal("::1".parse().unwrap()))
        );
        let h = literal_host("192.0.2.7".parse().unwrap());
        assert_eq!(h.tls, TlsPolicy::AcceptAny);
        assert_eq!(h.literal, Some("192.0.2.7".parse().unwrap()));
        for bad in ["[300.1.1.1]", "[2001:db8::1]", "[example.org]", "[]"] {
            let (perm, c, text) = code(destination(bad).unwrap_err());
            assert!(
                perm && c == 550 && text.starts_with("5.1.2"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn names_are_lowercased_and_lose_the_root_dot() {
        assert_eq!(
            destination("Example.ORG."),
            Ok(Destination::Name("example.org".into()))
        );
        assert!(destination("").is_err());
    }

    #[test]
    fn mx_records_are_ordered_by_preference() {
        let answer = MxAnswer::Records(vec![
            (20, "b.example.org.".into()),
            (10, "A.example.org.".into()),
            (30, "c.example.org".into()),
        ]);
        let h = hosts("example.org", answer, 0).unwrap();
        assert_eq!(
            names(&h),
            ["a.example.org", "b.example.org", "c.example.org"]
        );
        assert!(h
            .iter()
            .all(|h| h.tls == TlsPolicy::Verify && h.literal.is_none()));
    }

    #[test]
    fn equal_preferences_are_shuffled_by_the_seed_only() {
        let answer = || {
            MxAnswer::Records(vec![
                (10, "a.example.org".into()),
                (10, "b.example.org".into()),
                (10, "c.example.org".into()),
                (5, "first.example.org".into()),
            ])
        };
        let mut orders = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let h = hosts("example.org", answer(), seed).unwrap();
            assert_eq!(h[0].name, "first.example.org");
            assert_eq!(
                h,
                hosts("example.org", answer(), seed).unwrap(),
                "deterministic"
            );
            orders.insert(names(&h).join(","));
        }
        assert!(orders.len() > 1, "ties are not always in the same order");
    }

    #[test]
    fn null_mx_is_permanent_556() {
        for target in [".", ""] {
            let answer = MxAnswer::Records(vec![(0, target.into())]);
            let (perm, c, text) = code(hosts("example.org", answer, 0).unwrap_err());
            assert!(perm);
            assert_eq!(c, 556);
            assert_eq!(
                text,
                "5.1.10 Domain example.org does not accept mail (null MX)"
            );
        }
        // A root target beside real hosts is ignored.
        let answer = MxAnswer::Records(vec![(0, ".".into()), (10, "mx.example.org".into())]);
        assert_eq!(
            names(&hosts("example.org", answer, 0).unwrap()),
            ["mx.example.org"]
        );
    }

    #[test]
    fn dns_failures_are_permanent_only_for_nxdomain() {
        let (perm, c, text) = code(hosts("nope.example", MxAnswer::NxDomain, 0).unwrap_err());
        assert!(perm);
        assert_eq!(
            (c, text.as_str()),
            (550, "5.1.2 Domain nope.example does not exist")
        );
        let (perm, c, text) =
            code(hosts("x.example", MxAnswer::Failed("timed out".into()), 0).unwrap_err());
        assert!(!perm);
        assert_eq!(c, 451);
        assert!(text.contains("timed out"), "{text}");
    }

    #[test]
    fn no_mx_records_means_the_domain_itself() {
        let h = hosts("example.org", MxAnswer::NoRecords, 0).unwrap();
        assert_eq!(names(&h), ["example.org"]);
    }

    #[test]
    fn underscore_domains_accept_any_certificate() {
        let answer = MxAnswer::Records(vec![(10, "mx.other.test".into())]);
        let h = hosts("_relay.test", answer, 0).unwrap();
        assert_eq!(h[0].tls, TlsPolicy::AcceptAny);
        let h = hosts("_relay.test", MxAnswer::NoRecords, 0).unwrap();
        assert_eq!(h[0].tls, TlsPolicy::AcceptAny);
    }

    #[test]
    fn hosts_are_deduplicated_and_capped() {
        let mut records: Vec<(u16, String)> =
            (0..50).map(|i| (i, format!("mx{i}.example.org"))).collect();
        records.push((100, "mx0.example.org".into()));
        let h = hosts("example.org", MxAnswer::Records(records), 0).unwrap();
        assert_eq!(h.len(), MAX_MX_HOSTS);
        assert_eq!(h[0].name, "mx0.example.org");
        let dup = MxAnswer::Records(vec![(10, "a.example".into()), (20, "A.example.".into())]);
        assert_eq!(names(&hosts("example", dup, 0).unwrap()), ["a.example"]);
    }
}
