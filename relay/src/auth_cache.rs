//! The verified-password cache of [`crate::accounts::login`]: a verified password is remembered as
//! a keyed SHA-256 digest, so that a client's repeated logins cost one slow hash, not one each.
//!
//! Its own module so that [`crate::shared::Shared`] can hold it without depending on the login
//! code (which itself takes `Shared`).

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::store::AccountId;

/// Remembers verified passwords as keyed digests, so a client's repeated logins skip the
/// deliberately slow hash. Keyed with a per-process random key; bounded in size.
pub struct AuthCache {
    key: [u8; 32],
    map: Mutex<HashMap<AccountId, [u8; 32]>>,
}

/// Entries kept before the cache is cleared (each is ~40 bytes).
const AUTH_CACHE_MAX: usize = 1 << 20;

impl AuthCache {
    /// A cache with the given random key.
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn digest(&self, hash: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(hash.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    pub(crate) fn hit(&self, id: AccountId, hash: &str, password: &str) -> bool {
        let d = self.digest(hash, password);
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&id) == Some(&d)
    }

    pub(crate) fn insert(&self, id: AccountId, hash: &str, password: &str) {
        let d = self.digest(hash, password);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= AUTH_CACHE_MAX {
            map.clear();
        }
        map.insert(id, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_cache_needs_the_same_password_and_hash() {
        let cache = AuthCache::new([7; 32]);
        cache.insert(1, "h1", "pw");
        assert!(cache.hit(1, "h1", "pw"));
        assert!(!cache.hit(1, "h1", "pw2"));
        assert!(!cache.hit(1, "h2", "pw"));
        assert!(!cache.hit(2, "h1", "pw"));
    }
}
