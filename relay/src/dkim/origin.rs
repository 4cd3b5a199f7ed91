//! Origin verification of incoming mail (chatmail.md §3.5 step 6): the decision, without I/O.
//!
//! A message from a DNS-name domain is accepted only if at least one `DKIM-Signature` verifies
//! and its `d=` equals the `From` domain (case-insensitive; strict alignment, no parent domain).
//! [`super::verify`] runs mail-auth's verification with the process's resolver and hands the
//! outcome to [`origin_verdict`].
//!
//! | outcome | reply |
//! |---|---|
//! | an aligned signature verifies | accepted |
//! | `From` is a domain literal (`[1.2.3.4]`) | accepted, nothing looked up (chatmail.md §1.9) |
//! | no `DKIM-Signature` field at all | `554 5.7.1 No DKIM signature found` |
//! | signatures, none valid and aligned | `554 5.7.1 No valid DKIM signature found` |
//! | a key lookup failed for now (timeout, SERVFAIL, no network) | `451 4.7.0 …` (retry later) |
//!
//! A key record that does not exist (NXDOMAIN, no TXT, not a DKIM key) is permanent: the
//! signature is not valid, as in the reference. A temporary lookup failure only decides when no
//! aligned signature verified; it is never a rejection.

use mail_auth::{DkimOutput, DkimResult, DnsError, Error};

/// The decision on an incoming message's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An aligned signature verified.
    Pass,
    /// The `From` domain is an address literal: not checked (IP-only relays send unsigned).
    DomainLiteral,
    /// No `DKIM-Signature` field.
    NoSignature,
    /// Signatures, but none valid with `d=` equal to the `From` domain.
    NoValidSignature,
    /// A key could not be looked up for now: try again later.
    Temporary,
}

/// `554 5.7.1 No DKIM signature found` (filtermail's text).
pub const NO_SIGNATURE: (u16, &str) = (554, "5.7.1 No DKIM signature found");
/// `554 5.7.1 No valid DKIM signature found` (filtermail's and OpenDKIM's text).
pub const NO_VALID_SIGNATURE: (u16, &str) = (554, "5.7.1 No valid DKIM signature found");
/// `451 4.7.0`: a DKIM key lookup failed temporarily (RFC 3463 X.7.0, temporary: the sender
/// keeps the message and retries).
pub const TEMPORARY: (u16, &str) = (
    451,
    "4.7.0 DKIM key lookup failed temporarily, try again later",
);

impl Verdict {
    /// Whether the message may be delivered.
    pub fn is_accepted(self) -> bool {
        matches!(self, Verdict::Pass | Verdict::DomainLiteral)
    }

    /// The SMTP refusal (code, text after the code), `None` if accepted.
    pub fn reply(self) -> Option<(u16, &'static str)> {
        match self {
            Verdict::Pass | Verdict::DomainLiteral => None,
            Verdict::NoSignature => Some(NO_SIGNATURE),
            Verdict::NoValidSignature => Some(NO_VALID_SIGNATURE),
            Verdict::Temporary => Some(TEMPORARY),
        }
    }
}

/// Whether `domain` (the part after `@`) is an address literal such as `[192.0.2.1]` or
/// `[IPv6:…]` (RFC 5321 §4.1.3).
pub fn is_domain_literal(domain: &str) -> bool {
    domain.starts_with('[') && domain.ends_with(']')
}

/// Whether `d=` is the `From` domain: equal ignoring ASCII case and one trailing dot.
pub fn is_aligned(d: &str, from_domain: &str) -> bool {
    let trim = |s: &str| s.strip_suffix('.').unwrap_or(s).to_owned();
    !from_domain.is_empty() && trim(d).eq_ignore_ascii_case(&trim(from_domain))
}

/// Whether a failed lookup may succeed later. mail-auth calls every resolver error
/// (timeout, SERVFAIL, REFUSED, no connection) `Resolver`; a response code other than
/// NXDOMAIN or NOERROR reported as "not found" is temporary too.
fn is_temporary(error: &Error) -> bool {
    match error {
        Error::Dns(DnsError::Resolver(_)) => true,
        Error::Dns(DnsError::RecordNotFound(code)) => {
            use mail_auth::hickory_resolver::proto::op::ResponseCode;
            !matches!(*code, ResponseCode::NXDomain | ResponseCode::NoError)
        }
        _ => false,
    }
}

/// The verdict from the `From` domain, whether the message has any `DKIM-Signature` field, and
/// mail-auth's verification outputs (one per signature checked; signatures whose `d=` is not
/// the From domain may be left out: they cannot pass).
pub fn origin_verdict(
    from_domain: &str,
    has_signature: bool,
    outputs: &[DkimOutput<'_>],
) -> Verdict {
    if is_domain_literal(from_domain) {
        return Verdict::DomainLiteral;
    }
    if !has_signature {
        return Verdict::NoSignature;
    }
    let aligned =
        |o: &&DkimOutput<'_>| o.signature().is_some_and(|s| is_aligned(&s.d, from_domain));
    if outputs
        .iter()
        .filter(aligned)
        .any(|o| *o.result() == DkimResult::Pass)
    {
        return Verdict::Pass;
    }
    let temporary = outputs.iter().filter(aligned).any(|o| match o.result() {
        DkimResult::TempError(_) => true,
        DkimResult::PermError(e) => is_temporary(e),
        _ => false,
    });
    if temporary {
        Verdict::Temporary
    } else {
        Verdict::NoValidSignature
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::dkim::{DkimError, Signature};
    use mail_auth::hickory_resolver::proto::op::ResponseCode;

    fn sig(d: &str) -> Signature {
        Signature {
            d: d.to_owned(),
            s: "opendkim".to_owned(),
            ..Signature::default()
        }
    }

    #[test]
    fn aligned_pass_is_accepted() {
        let s = sig("Example.ORG");
        let outputs = [DkimOutput::pass().with_signature(&s)];
        assert_eq!(origin_verdict("example.org", true, &outputs), Verdict::Pass);
        assert!(Verdict::Pass.is_accepted());
        assert_eq!(Verdict::Pass.reply(), None);
    }

    #[test]
    fn pass_for_another_domain_is_not_enough() {
        for d in ["other.org", "sub.example.org", "org", ""] {
            let s = sig(d);
            let outputs = [DkimOutput::pass().with_signature(&s)];
            assert_eq!(
                origin_verdict("example.org", true, &outputs),
                Verdict::NoValidSignature,
                "{d}"
            );
        }
    }

    #[test]
    fn one_good_signature_among_bad_ones_passes() {
        let (a, b, c) = (sig("example.org"), sig("other.org"), sig("example.org"));
        let outputs = [
            DkimOutput::fail(Error::Dkim(DkimError::FailedBodyHashMatch)).with_signature(&a),
            DkimOutput::pass().with_signature(&b),
            DkimOutput::pass().with_signature(&c),
        ];
        assert_eq!(origin_verdict("example.org", true, &outputs), Verdict::Pass);
    }

    #[test]
    fn no_signature_field() {
        assert_eq!(
            origin_verdict("example.org", false, &[]),
            Verdict::NoSignature
        );
        assert_eq!(Verdict::NoSignature.reply(), Some(NO_SIGNATURE));
        assert_eq!(NO_SIGNATURE.1, "5.7.1 No DKIM signature found");
    }

    #[test]
    fn malformed_or_failed_signatures_are_not_valid() {
        // A signature field mail-auth cannot parse: neutral, without a signature.
        let outputs = [DkimOutput::neutral(Error::ParseError)];
        assert_eq!(
            origin_verdict("example.org", true, &outputs),
            Verdict::NoValidSignature
        );
        let s = sig("example.org");
        for output in [
            DkimOutput::fail(Error::Crypto(
                mail_auth::common::crypto::CryptoError::FailedVerification,
            )),
            DkimOutput::neutral(Error::Dkim(DkimError::FailedBodyHashMatch)),
            DkimOutput::perm_err(Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain))),
            DkimOutput::perm_err(Error::Dns(DnsError::RecordNotFound(ResponseCode::NoError))),
            DkimOutput::perm_err(Error::Dns(DnsError::InvalidRecordType)),
        ] {
            let outputs = [output.with_signature(&s)];
            assert_eq!(
                origin_verdict("example.org", true, &outputs),
                Verdict::NoValidSignature,
                "{outputs:?}"
            );
        }
        assert_eq!(Verdict::NoValidSignature.reply(), Some(NO_VALID_SIGNATURE));
    }

    #[test]
    fn lookup_failures_are_temporary() {
        let s = sig("example.org");
        for output in [
            DkimOutput::temp_err(Error::Dns(DnsError::Resolver("timed out".into()))),
            DkimOutput::dns_error(Error::Dns(DnsError::Resolver("SERVFAIL".into()))),
            DkimOutput::perm_err(Error::Dns(DnsError::RecordNotFound(ResponseCode::ServFail))),
            DkimOutput::perm_err(Error::Dns(DnsError::RecordNotFound(ResponseCode::Refused))),
        ] {
            let outputs = [output.with_signature(&s)];
            assert_eq!(
                origin_verdict("example.org", true, &outputs),
                Verdict::Temporary,
                "{outputs:?}"
            );
        }
        let (code, text) = Verdict::Temporary.reply().unwrap();
        assert_eq!(code, 451);
        assert!(text.starts_with("4.7."), "{text}");
        assert!(!Verdict::Temporary.is_accepted());
    }

    #[test]
    fn a_pass_wins_over_a_temporary_failure_and_unaligned_failures_do_not_count() {
        let (a, b) = (sig("example.org"), sig("example.org"));
        let temp = || DkimOutput::temp_err(Error::Dns(DnsError::Resolver("timeout".into())));
        let outputs = [
            temp().with_signature(&a),
            DkimOutput::pass().with_signature(&b),
        ];
        assert_eq!(origin_verdict("example.org", true, &outputs), Verdict::Pass);
        let other = sig("other.org");
        let outputs = [temp().with_signature(&other)];
        assert_eq!(
            origin_verdict("example.org", true, &outputs),
            Verdict::NoValidSignature
        );
    }

    #[test]
    fn domain_literals_are_not_checked() {
        assert_eq!(
            origin_verdict("[192.0.2.1]", false, &[]),
            Verdict::DomainLiteral
        );
        assert_eq!(
            origin_verdict("[IPv6:2001:db8::1]", true, &[]),
            Verdict::DomainLiteral
        );
        assert!(Verdict::DomainLiteral.is_accepted());
        assert!(!is_domain_literal("example.org"));
        assert!(!is_domain_literal("[192.0.2.1"));
    }

    #[test]
    fn alignment_ignores_case_and_a_trailing_dot() {
        assert!(is_aligned("EXAMPLE.org.", "example.ORG"));
        assert!(!is_aligned("example.org", ""));
        assert!(!is_aligned("mail.example.org", "example.org"));
    }
}
