//! State shared by all sessions of the process: configuration, store, limiters, caches.

use std::sync::Arc;

use crate::auth_cache::AuthCache;
use crate::config::Config;
use crate::imap::recent::RecentUids;
use crate::policy::SendLimiter;
use crate::store::Mailstore;

/// Shared by every connection; held in an `Arc`.
pub struct Shared {
    /// Validated configuration.
    pub config: Config,
    /// The message store, as sessions see it (the server keeps the concrete `Store`).
    pub store: Arc<dyn Mailstore>,
    /// Per-sender submission rate limiter.
    pub send_limiter: SendLimiter,
    /// Verified-password cache of `accounts::login`.
    pub auth_cache: AuthCache,
    /// Failed-login delays per source and account (`io` applies them).
    pub login_throttle: std::sync::Mutex<crate::throttle::LoginThrottle>,
    /// The bounded pool password hashing runs on.
    pub hash_pool: crate::io::hash_pool::HashPool,
    /// IMAP `\Recent`: which session saw a message first (memory only).
    pub recent: RecentUids,
    /// The DNS resolver (MX, address and DKIM key lookups), see [`crate::dns`].
    pub dns: mail_auth::MessageAuthenticator,
    /// Bumped to make the delivery engine try every waiting destination now (`relay admin queue
    /// retry`); the value is the destination to retry, empty for all.
    pub delivery_retry: tokio::sync::watch::Sender<String>,
    /// ACME HTTP-01 challenges the HTTP port answers (filled by an ACME client).
    pub acme_challenges: crate::http::Challenges,
    /// The per-source limit on `/new`.
    pub new_limiter: std::sync::Mutex<crate::http::limiter::Limiter>,
    /// The DKIM signer of outgoing mail and bounces; `None` for an IP-literal relay (set by
    /// `server::start`, which loads or creates the key).
    pub dkim: Option<Arc<crate::dkim::Signer>>,
    /// DKIM key records of incoming mail's signatures (bounded), see [`crate::dkim::verify`].
    pub dkim_keys: crate::dkim::KeyCache,
    /// The value of METADATA `/shared/vendor/deltachat/appversions`, see
    /// [`crate::appversions`].
    pub appversions: Option<Vec<u8>>,
    /// TURN's port and secret while it runs (set by `server::start`), for IMAP METADATA
    /// `/shared/vendor/deltachat/turn` ([`crate::turn::metadata_value`]); `None` = off.
    pub turn: Option<crate::turn::Published>,
    /// What `relay status` reports besides the store (set by `server::start`).
    pub live: crate::admin::status::Live,
    /// The relay's event counters (`/metrics`), see [`crate::metrics`].
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl Shared {
    /// Shared state over an open store.
    pub fn new(config: Config, store: Arc<dyn Mailstore>) -> Shared {
        let send_limiter = SendLimiter::new(
            config.max_user_send_per_minute,
            config.max_user_send_burst_size,
        );
        let new_limiter = crate::http::limiter::Limiter::new(
            config.new_limit_per_second.into(),
            config.new_limit_burst.into(),
            crate::http::limiter::MAX_SOURCES,
        );
        Shared {
            store,
            send_limiter,
            auth_cache: AuthCache::new(rand::random()),
            login_throttle: Default::default(),
            hash_pool: crate::io::hash_pool::HashPool::per_core(),
            recent: RecentUids::new(),
            dns: crate::dns::resolver(&config),
            appversions: crate::appversions::value(&config.data_dir),
            config,
            delivery_retry: tokio::sync::watch::Sender::new(String::new()),
            acme_challenges: Default::default(),
            new_limiter: std::sync::Mutex::new(new_limiter),
            dkim: None,
            dkim_keys: Default::default(),
            turn: None,
            live: Default::default(),
            metrics: Arc::default(),
        }
    }
}
