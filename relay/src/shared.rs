//! State shared by all sessions of the process: configuration, store, send limiter.

use crate::config::Config;
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
}
