//! The HTTPS and HTTP listeners: the onboarding web site, `/new`, autoconfig and MTA-STS, and the
//! HTTP side of the HTTPS port, whose connections pick IMAP, submission or HTTP by ALPN.
//!
//! # Organization
//! - [`site`]: routing and pages, a plain function from request to response (sans-I/O).
//! - [`onboarding`]: credentials, `dclogin:`/`dcaccount:` links, autoconfig XML, MTA-STS, QR.
//! - [`limiter`]: the per-source limit on `/new`.
//! - [`mxdeliv`]: `POST /mxdeliv` (mail from other relays): the envelope from the headers and
//!   the mapping of SMTP replies to HTTP answers; the checks are [`crate::smtp::inbound`]'s.
//!
//! - [`conn`]: one connection (I/O): hyper's HTTP/1.1 server over the relay's TLS
//!   [`crate::io::pipeline::Pipeline`] on either I/O backend, after [`crate::io::handshake`]
//!   chose HTTP by ALPN (or plain, on the HTTP port); its limits.
//!
//! # HTTP/1.1 only
//! HTTP/2 is not served (ALPN offers `http/1.1`, never `h2`): what is served here is a few small
//! pages and single-shot JSON answers, where multiplexing gains nothing, while HTTP/2 brings a
//! second parser and its own abuse surface (HPACK state, stream floods such as rapid reset,
//! CONTINUATION floods, flow-control stalls). Delta Chat core and browsers speak HTTP/1.1.

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
// I/O: sockets, timers, www_folder files
pub mod conn;
pub mod limiter;
pub mod mxdeliv;
pub mod onboarding;
pub mod site;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// ACME HTTP-01 challenges: token → key authorization, answered on the HTTP port at
/// `/.well-known/acme-challenge/<token>`. Cloned handles share one map (an ACME client fills it).
#[derive(Debug, Clone, Default)]
pub struct Challenges(Arc<Mutex<HashMap<String, String>>>);

impl Challenges {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the key authorization of `token`.
    pub fn insert(&self, token: &str, key_authorization: &str) {
        self.map()
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Withdraws `token`.
    pub fn remove(&self, token: &str) {
        self.map().remove(token);
    }

    /// The key authorization of `token`, if published.
    pub fn get(&self, token: &str) -> Option<String> {
        self.map().get(token).cloned()
    }
}
