//! Origin verification with DNS: runs mail-auth's DKIM verification against the process's
//! resolver ([`crate::dns`]) and a bounded cache of DKIM key records, and returns the
//! [`Verdict`] of [`super::origin`]. Used by the SMTP MX session (through
//! `Effect::VerifyOrigin`, run by `io::run_effect`) and by the HTTPS `/mxdeliv` receiver.
//!
//! Bounds: only signatures whose `d=` is the `From` domain are checked (others cannot pass, so
//! they cost no lookup), at most [`MAX_SIGNATURES`] of them; the whole check gives up after
//! [`origin_timeout`] (a temporary failure). The key cache holds at most [`KEY_CACHE_ENTRIES`]
//! parsed key records (the reference's LRU of 1000), each until its DNS TTL runs out (at most
//! [`MAX_KEY_TTL`]); the record behind a signature that fails to verify is dropped from it, so a
//! rotated key is fetched again at once.

use std::borrow::Borrow;
use std::hash::Hash;
use std::time::{Duration, Instant};

use mail_auth::common::verify::VerifySignature as _;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};

use super::origin::{is_aligned, is_domain_literal, origin_verdict, Verdict};
use crate::shared::Shared;

/// Aligned signatures checked per message at most (each may cost a key lookup).
pub const MAX_SIGNATURES: usize = 5;
/// Key records kept in [`KeyCache`] at most.
pub const KEY_CACHE_ENTRIES: u64 = 1000;
/// Longest time a key record is kept, whatever its TTL.
pub const MAX_KEY_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long one origin check may take: three query timeouts (option `dns_timeout`), room for
/// the resolver's [`crate::dns::ATTEMPTS`] tries of one lookup and a second signature's.
pub fn origin_timeout(config: &crate::config::Config) -> Duration {
    Duration::from_secs(config.dns_timeout_secs.saturating_mul(3))
}

#[derive(Clone)]
struct Cached {
    txt: Txt,
    valid_until: Instant,
}

struct UntilValid;

impl moka::Expiry<Box<str>, Cached> for UntilValid {
    fn expire_after_create(
        &self,
        _key: &Box<str>,
        value: &Cached,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(
            value
                .valid_until
                .saturating_duration_since(created_at)
                .min(MAX_KEY_TTL),
        )
    }
}

/// The DKIM key records (`<selector>._domainkey.<domain>` TXT, parsed) of recent signatures.
/// Bounded (moka: LRU eviction with frequency-based admission); shared by every connection.
pub struct KeyCache {
    cache: moka::sync::Cache<Box<str>, Cached>,
}

impl Default for KeyCache {
    fn default() -> Self {
        KeyCache::new(KEY_CACHE_ENTRIES)
    }
}

impl KeyCache {
    /// A cache of at most `capacity` records.
    pub fn new(capacity: u64) -> KeyCache {
        KeyCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .expire_after(UntilValid)
                .build(),
        }
    }

    /// Whether the record `name` (fully qualified, e.g. `opendkim._domainkey.example.org.`) is
    /// cached.
    pub fn contains(&self, name: &str) -> bool {
        self.cache.contains_key(name)
    }
}

impl ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.get(name).map(|c| c.txt)
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.remove(name).map(|c| c.txt)
    }

    fn insert(&self, key: Box<str>, value: Txt, valid_until: Instant) {
        self.cache.insert(
            key,
            Cached {
                txt: value,
                valid_until,
            },
        );
    }
}

/// Verifies the origin of the raw incoming `message` whose `From` domain is `from_domain`, with
/// the relay's resolver and key cache (chatmail.md §3.5 step 6). Never fails: DNS trouble is
/// [`Verdict::Temporary`].
pub async fn verify_origin(shared: &Shared, message: &[u8], from_domain: &str) -> Verdict {
    verify_origin_with(
        &shared.dns,
        &shared.dkim_keys,
        origin_timeout(&shared.config),
        message,
        from_domain,
    )
    .await
}

/// [`verify_origin`] with an explicit resolver, cache and time limit.
pub async fn verify_origin_with(
    dns: &MessageAuthenticator,
    cache: &KeyCache,
    limit: Duration,
    message: &[u8],
    from_domain: &str,
) -> Verdict {
    if is_domain_literal(from_domain) {
        return Verdict::DomainLiteral;
    }
    let Some(mut parsed) = AuthenticatedMessage::parse(message) else {
        return origin_verdict(from_domain, false, &[]);
    };
    let has_signature = !parsed.dkim_headers.is_empty() || parsed.has_dkim_errors;
    let total = parsed.dkim_headers.len();
    parsed
        .dkim_headers
        .retain(|h| is_aligned(&h.header.d, from_domain));
    parsed.dkim_headers.truncate(MAX_SIGNATURES);
    let outputs = if parsed.dkim_headers.is_empty() {
        Vec::new()
    } else {
        let params = Parameters::new(&parsed).with_txt_cache(cache);
        match tokio::time::timeout(limit, dns.verify_dkim(params)).await {
            Ok(outputs) => outputs,
            Err(_) => {
                tracing::info!(from_domain, "dkim: key lookup timed out");
                return Verdict::Temporary;
            }
        }
    };
    for output in &outputs {
        if let (DkimResult::Fail(_), Some(signature)) = (output.result(), output.signature()) {
            // The key may have been rotated: fetch it again next time.
            cache.remove(signature.domain_key().as_str());
        }
    }
    let verdict = origin_verdict(from_domain, has_signature, &outputs);
    tracing::info!(
        from_domain,
        signatures = total,
        checked = outputs.len(),
        ?verdict,
        results = ?outputs.iter().map(|o| o.result().to_string()).collect::<Vec<_>>(),
        "dkim: origin verified"
    );
    verdict
}
