//! Accounts: login, creation on first login with the reference's rules (chatmail.md §4.2),
//! `{SHA512-CRYPT}` password hashes, last-login day.

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
