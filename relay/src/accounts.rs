//! Accounts: login, creation on first login with the reference's rules (chatmail.md §4.2),
//! `{SHA512-CRYPT}` password hashes (importable from a reference relay), last-login day.
//!
//! This module runs the `Effect::Login` of sessions. Hashing is slow on purpose (SHA-512-crypt,
//! 5000 rounds), so it runs on a bounded thread pool; a verified password is remembered as a keyed
//! SHA-256 digest ([`crate::auth_cache`]) so that repeated logins (every IMAP and SMTP connection
//! of a client) cost one hash, not 5000.
//!
//! Rules for creating an account that does not exist yet, all of which must hold:
//! the nocreate file does not exist; password length ≥ `password_min_length`; the address is
//! `localpart@<our domain>` with exactly one `@`; `username_min_length ≤ len(localpart) ≤
//! username_max_length`; the localpart matches `^[a-z0-9._-]+$`; the machine has resources
//! (1-minute load ≤ `max_load_1m`, available memory ≥ `min_available_memory`, free disk ≥
//! `min_free_disk_space`; unreadable values are ignored). A wrong password for an existing account
//! fails and never changes anything. Concurrent first logins of one address are safe: the store
//! refuses the second `CreateAccount` and the loser verifies against the winner's hash.

use std::net::IpAddr;

use crate::config::Config;
use crate::shared::Shared;
use crate::store::{AccountId, Error as StoreError, Op, OpResult};

/// Prefix of stored hashes, as Dovecot writes them.
pub const HASH_PREFIX: &str = "{SHA512-CRYPT}";

/// Why a login failed. Shown to clients only as a generic failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Wrong password for an existing account, or an address that may not be created.
    #[error("authentication failed")]
    Failed,
    /// The account does not exist and creation is refused for a temporary reason (resources).
    #[error("account creation temporarily refused: {0}")]
    TryLater(&'static str),
    /// Internal error (store).
    #[error("internal error")]
    Internal,
}

/// Checks a password against a stored `{SHA512-CRYPT}$6$...` (or bare `$6$...`) hash.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let crypt = stored.strip_prefix(HASH_PREFIX).unwrap_or(stored);
    sha_crypt::sha512_check(password, crypt).is_ok()
}

/// Hashes a password for storage: `{SHA512-CRYPT}$6$<salt>$<hash>`.
///
/// # Errors
/// Only if the hashing library fails, which it does not for valid parameters.
pub fn hash_password(password: &str) -> Result<String, LoginError> {
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT)
        .map_err(|_| LoginError::Internal)?;
    let h = sha_crypt::sha512_simple(password, &params).map_err(|_| LoginError::Internal)?;
    Ok(format!("{HASH_PREFIX}{h}"))
}

/// Why an address may not be created (the pure part of the rules; resources checked apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateRefusal {
    /// Password shorter than `password_min_length`.
    PasswordTooShort,
    /// Not `localpart@<our domain>` with exactly one `@`.
    WrongDomain,
    /// Localpart length outside the configured bounds.
    LocalpartLength,
    /// Localpart has characters outside `[a-z0-9._-]`.
    LocalpartChars,
}

/// The pure creation rules of chatmail.md §4.2 (items 2 to 5) for a lowercase address.
///
/// # Errors
/// The first rule that fails.
pub fn check_new_account(config: &Config, addr: &str, password: &str) -> Result<(), CreateRefusal> {
    if password.chars().count() < config.password_min_length {
        return Err(CreateRefusal::PasswordTooShort);
    }
    if addr.matches('@').count() != 1 {
        return Err(CreateRefusal::WrongDomain);
    }
    let (local, domain) = addr.split_once('@').ok_or(CreateRefusal::WrongDomain)?;
    if !domain.eq_ignore_ascii_case(&config.address_domain()) {
        return Err(CreateRefusal::WrongDomain);
    }
    if local.len() < config.username_min_length || local.len() > config.username_max_length {
        return Err(CreateRefusal::LocalpartLength);
    }
    if !local
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(CreateRefusal::LocalpartChars);
    }
    Ok(())
}

/// Whether `addr` (any case) is on this relay's domain.
pub fn is_local_address(config: &Config, addr: &str) -> bool {
    addr.rsplit_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.eq_ignore_ascii_case(&config.address_domain()))
}

/// Machine resources, read from `/proc` and `statvfs`; `None` where unreadable.
#[derive(Debug, Clone, Copy, Default)]
pub struct Resources {
    /// 1-minute load average.
    pub load_1m: Option<f64>,
    /// `MemAvailable` in bytes.
    pub available_memory: Option<u64>,
    /// Free bytes on the data directory's filesystem.
    pub free_disk: Option<u64>,
}

impl Resources {
    /// Reads the current values.
    pub fn read(config: &Config) -> Resources {
        let load_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
        let available_memory = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        });
        let free_disk = fs_free_bytes(&config.data_dir);
        Resources {
            load_1m,
            available_memory,
            free_disk,
        }
    }

    /// The reference's resource guard: `Err(reason)` if account creation must wait.
    ///
    /// # Errors
    /// The first limit exceeded.
    pub fn check(&self, config: &Config) -> Result<(), &'static str> {
        if self.load_1m.is_some_and(|l| l > config.max_load_1m) {
            return Err("load too high");
        }
        if self
            .available_memory
            .is_some_and(|m| m < config.min_available_memory)
        {
            return Err("not enough available memory");
        }
        if self
            .free_disk
            .is_some_and(|d| d < config.min_free_disk_space)
        {
            return Err("not enough free disk space");
        }
        Ok(())
    }
}

/// Free bytes available to unprivileged users on the filesystem holding `path`.
fn fs_free_bytes(path: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The [`LoginError::TryLater`] reason when the hashing queue is full.
pub const HASH_QUEUE_FULL: &str = "authentication busy";

/// Runs hashing on the shared bounded pool ([`crate::io::hash_pool`]), fairly per `source`.
async fn blocking<T: Send + 'static>(
    shared: &Shared,
    source: IpAddr,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LoginError> {
    shared
        .hash_pool
        .run(source, f)
        .await
        .map_err(|_| LoginError::TryLater(HASH_QUEUE_FULL))
}

/// Authenticates `user` with `password`, creating the account on first login, and records the
/// login day. `now_ms` is the current time (unix ms); `source` is the client's address (hashing
/// is shared fairly between sources). A password already verified is checked against the cache
/// before any hashing, so it never waits in the pool's queue.
///
/// # Errors
/// [`LoginError::Failed`] for a wrong password or an address that may not exist,
/// [`LoginError::TryLater`] when creation is refused for lack of resources or the hashing queue
/// is full.
pub async fn login(
    shared: &Shared,
    source: IpAddr,
    user: &str,
    password: &str,
    now_ms: u64,
) -> Result<AccountId, LoginError> {
    let addr = user.trim().to_ascii_lowercase();
    if !is_local_address(&shared.config, &addr) || password.is_empty() {
        return Err(LoginError::Failed);
    }
    let id = match shared.store.account(&addr) {
        Some(acct) => {
            verify(shared, source, acct.id, acct.password_hash, password).await?;
            acct.id
        }
        None => create(shared, source, &addr, password, now_ms).await?,
    };
    record_login(shared, id, now_ms).await;
    Ok(id)
}

async fn verify(
    shared: &Shared,
    source: IpAddr,
    id: AccountId,
    hash: String,
    password: &str,
) -> Result<(), LoginError> {
    if shared.auth_cache.hit(id, &hash, password) {
        return Ok(());
    }
    let pw = password.to_owned();
    let h = hash.clone();
    let ok = blocking(shared, source, move || verify_password(&h, &pw)).await?;
    if !ok {
        return Err(LoginError::Failed);
    }
    shared.auth_cache.insert(id, &hash, password);
    Ok(())
}

async fn create(
    shared: &Shared,
    source: IpAddr,
    addr: &str,
    password: &str,
    now_ms: u64,
) -> Result<AccountId, LoginError> {
    let config = &shared.config;
    if config.nocreate_file.exists() {
        return Err(LoginError::Failed);
    }
    if let Err(why) = check_new_account(config, addr, password) {
        tracing::debug!(?why, "account creation refused");
        return Err(LoginError::Failed);
    }
    if let Err(why) = Resources::read(config).check(config) {
        tracing::warn!("registration rejected: {why}");
        shared.metrics.registration_rejected();
        return Err(LoginError::TryLater(why));
    }
    let pw = password.to_owned();
    let hash = blocking(shared, source, move || hash_password(&pw)).await??;
    let op = Op::CreateAccount {
        addr: addr.to_owned(),
        password_hash: hash.clone(),
        now: (now_ms / 1000) as i64,
    };
    match shared.store.commit(op).await {
        Ok(OpResult::AccountCreated(id)) => {
            tracing::info!("Created address: {addr}");
            shared.metrics.account_created(addr);
            shared.auth_cache.insert(id, &hash, password);
            Ok(id)
        }
        Ok(other) => {
            tracing::error!(?other, "unexpected store result for CreateAccount");
            Err(LoginError::Internal)
        }
        Err(StoreError::Exists(_)) => {
            // A concurrent first login won: verify against its hash.
            let acct = shared.store.account(addr).ok_or(LoginError::Internal)?;
            verify(shared, source, acct.id, acct.password_hash, password).await?;
            Ok(acct.id)
        }
        Err(e) => {
            tracing::error!("account creation failed: {e}");
            Err(LoginError::Internal)
        }
    }
}

/// Records the day of a successful login (only when it changed, so most logins write nothing).
async fn record_login(shared: &Shared, id: AccountId, now_ms: u64) {
    let day = (now_ms / 1000 / 86_400) as u32;
    let Some(acct) = shared.store.account_by_id(id) else {
        return;
    };
    if acct.last_login_day == day {
        return;
    }
    if let Err(e) = shared
        .store
        .commit(Op::SetLastLogin { account: id, day })
        .await
    {
        tracing::warn!("recording last login failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::dev(std::path::PathBuf::from("/nonexistent"))
    }

    #[test]
    fn hash_is_sha512_crypt_and_verifies() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("{SHA512-CRYPT}$6$"), "{h}");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horsE"));
        // Bare crypt strings (as in a reference relay's password file) verify too.
        assert!(verify_password(
            h.strip_prefix(HASH_PREFIX).unwrap(),
            "correct horse"
        ));
    }

    #[test]
    fn verifies_a_hash_made_by_glibc_crypt() {
        // `openssl passwd -6 -salt saltsalt password1` (same as glibc crypt), as doveauth stores it.
        let stored = "{SHA512-CRYPT}$6$saltsalt$rGHbrrsOT1WLTt4dcfZKq1FiG//1B7ZAMkD.MeAC8/d9MOtB5EzYEffFnBarQhF6MiLywY/KggaYjrNNrzAnj/";
        assert!(verify_password(stored, "password1"));
        assert!(!verify_password(stored, "password2"));
    }

    #[test]
    fn creation_rules_match_the_reference() {
        let c = config();
        let ok = |a: &str, p: &str| check_new_account(&c, a, p);
        assert_eq!(ok("abc123def@[127.0.0.1]", "123456789"), Ok(()));
        assert_eq!(ok("a.c-_x9yz@[127.0.0.1]", "123456789"), Ok(()));
        assert_eq!(
            ok("abc123def@[127.0.0.1]", "admin"),
            Err(CreateRefusal::PasswordTooShort)
        );
        assert_eq!(
            ok("abc123de@[127.0.0.1]", "123456789"),
            Err(CreateRefusal::LocalpartLength)
        );
        assert_eq!(
            ok("abc123defg@[127.0.0.1]", "123456789"),
            Err(CreateRefusal::LocalpartLength)
        );
        assert_eq!(
            ok("abc+23def@[127.0.0.1]", "123456789"),
            Err(CreateRefusal::LocalpartChars)
        );
        assert_eq!(
            ok("ABC123def@[127.0.0.1]", "123456789"),
            Err(CreateRefusal::LocalpartChars)
        );
        assert_eq!(
            ok("abc123def@example.org", "123456789"),
            Err(CreateRefusal::WrongDomain)
        );
        assert_eq!(
            ok("abc@23def@[127.0.0.1]", "123456789"),
            Err(CreateRefusal::WrongDomain)
        );
        assert_eq!(
            ok("abc123def@[127.0.0.1].invalid", "123456789"),
            Err(CreateRefusal::WrongDomain)
        );
    }

    #[test]
    fn resource_guard_refuses_and_ignores_unreadable_values() {
        let mut c = config();
        c.max_load_1m = 5.0;
        let busy = Resources {
            load_1m: Some(9.0),
            ..Default::default()
        };
        assert_eq!(busy.check(&c), Err("load too high"));
        let low_mem = Resources {
            available_memory: Some(1024),
            ..Default::default()
        };
        assert_eq!(low_mem.check(&c), Err("not enough available memory"));
        let low_disk = Resources {
            free_disk: Some(1024),
            ..Default::default()
        };
        assert_eq!(low_disk.check(&c), Err("not enough free disk space"));
        assert_eq!(Resources::default().check(&c), Ok(()));
    }
}
