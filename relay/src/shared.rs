//! State shared by all sessions of the process: configuration, store, limiters, caches.

use crate::auth_cache::AuthCache;
use crate::config::Config;
use crate::imap::recent::RecentUids;
use crate::policy::SendLimiter;
use crate::store::Store;

/// Shared by every connection; held in an `Arc`.
pub struct Shared {
    /// Validated configuration.
    pub config: Config,
    /// The message store.
    pub store: Store,
    /// Per-sender submission rate limiter.
    pub send_limiter: SendLimiter,
    /// Verified-password cache of `accounts::login`.
    pub auth_cache: AuthCache,
    /// IMAP `\Recent`: which session saw a message first (memory only).
    pub recent: RecentUids,
}

impl Shared {
    /// Shared state over an open store.
    pub fn new(config: Config, store: Store) -> Shared {
        let send_limiter = SendLimiter::new(
            config.max_user_send_per_minute,
            config.max_user_send_burst_size,
        );
        Shared {
            config,
            store,
            send_limiter,
            auth_cache: AuthCache::new(rand::random()),
            recent: RecentUids::new(),
        }
    }
}
