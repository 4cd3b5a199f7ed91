//! TURN and STUN on UDP (`turn_port`, 3478; `relay dev`: 13478) for Delta Chat calls, as the
//! reference's chatmail-turn (chatmail.md §6.3): webrtc-rs's `turn` server, realm = mail domain,
//! long-term credentials in the TURN REST style.
//!
//! - **Credentials.** Username = the unix time they expire (now + 5 days), password =
//!   base64(HMAC-SHA1(secret, username)) ([`credentials`]). The secret is 32 random bytes made at
//!   the first start in `<data_dir>/turn/secret` ([`secret`]). IMAP METADATA hands them out as
//!   `/shared/vendor/deltachat/turn` = `<mail_domain>:<turn_port>:<username>:<password>`
//!   ([`metadata_value`]).
//! - **What the crate lacks, written here** ([`server`]): a wrapper around each listening socket
//!   screens requests before the crate sees them. Bad credentials (a username that is not a
//!   time, one that is past, a wrong MESSAGE-INTEGRITY) get `401` with REALM and NONCE, as RFC
//!   5389 §10.2.2 says (the crate answers `400`); an Allocate over a credential's share gets
//!   `486`, over the total `508` ([`gate`]). Relayed sockets come from `turn_relay_ports` on the
//!   listening address, announce `turn_external_address` when set (NAT), and pass at most
//!   `turn_allocation_bandwidth` bytes a second ([`gate::Bucket`]).
//!
//! This module and [`gate`] do no I/O; [`secret`] (the file) and [`server`] (sockets, the thread)
//! do.

pub mod gate;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: the secret file
pub mod secret;
#[allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: UDP sockets, the thread
pub mod server;

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;

use crate::shared::Shared;

/// `turn_port` of `relay serve`.
pub const PORT: u16 = 3478;
/// `turn_port` of `relay dev`.
pub const DEV_PORT: u16 = 13478;
/// How long credentials are valid (the reference's 5 days).
pub const VALIDITY_SECS: u64 = 5 * 86_400;

/// The TURN options ([`crate::config::Config::turn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    /// `turn_port`: UDP port of TURN and STUN; 0 = off.
    pub port: u16,
    /// `turn_address`: addresses to listen on; empty = the `listen` addresses, a wildcard there
    /// standing for every non-loopback, non-link-local address of the machine.
    pub address: Vec<IpAddr>,
    /// `turn_external_address`: announced in XOR-RELAYED-ADDRESS instead of the listening
    /// address (behind NAT).
    pub external_address: Option<IpAddr>,
    /// `turn_relay_ports`: the relayed sockets' port range, inclusive.
    pub relay_ports: (u16, u16),
    /// `turn_max_allocations_per_username`.
    pub max_allocations_per_username: u32,
    /// `turn_max_allocations_per_source`: per IPv4 address or IPv6 /64.
    pub max_allocations_per_source: u32,
    /// `turn_max_allocations`: in all.
    pub max_allocations: u32,
    /// `turn_allocation_bandwidth`: bytes a second one allocation relays, both ways together.
    pub allocation_bandwidth: u64,
    /// Whether a port that cannot be bound stops the relay from starting (`relay serve`); `relay
    /// dev` runs without TURN instead (several dev relays, as tests start them, share 13478).
    pub required: bool,
}

impl Default for TurnConfig {
    /// The defaults of `relay serve`.
    fn default() -> Self {
        TurnConfig {
            port: PORT,
            address: Vec::new(),
            external_address: None,
            relay_ports: (49152, 65535),
            // Credentials are per second, not per user: users who ask in the same second share
            // one. A call takes one or two allocations (IPv4, IPv6).
            max_allocations_per_username: 20,
            // Anyone can fetch fresh credentials every second: this keeps one host from taking
            // every allocation. Generous for CGNAT, where one address carries many phones.
            max_allocations_per_source: 100,
            // One UDP socket each.
            max_allocations: 1000,
            // 8 Mbit/s: a video call with room to spare.
            allocation_bandwidth: 1024 * 1024,
            required: true,
        }
    }
}

/// What the IMAP METADATA answer needs once TURN runs: its port and the secret.
#[derive(Clone)]
pub struct Published {
    /// The UDP port TURN listens on.
    pub port: u16,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for Published {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Published")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Published {
    /// TURN on `port` with `secret`.
    pub fn new(port: u16, secret: Arc<[u8]>) -> Published {
        Published { port, secret }
    }

    /// The shared secret of the credentials.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// The value of IMAP METADATA `/shared/vendor/deltachat/turn`:
/// `<mail_domain>:<turn_port>:<username>:<password>`, credentials valid for 5 days from
/// `now_unix`. `None` when TURN is off (`turn_port = 0`, or `relay dev` found its port taken).
pub fn metadata_value(shared: &Shared, now_unix: u64) -> Option<String> {
    let turn = shared.turn.as_ref()?;
    let (username, password) = credentials(turn.secret(), now_unix);
    Some(format!(
        "{}:{}:{username}:{password}",
        shared.config.mail_domain, turn.port
    ))
}

/// TURN REST credentials: username = the unix time they expire (`now_unix` + 5 days),
/// password = base64(HMAC-SHA1(`secret`, username)).
pub fn credentials(secret: &[u8], now_unix: u64) -> (String, String) {
    let username = now_unix.saturating_add(VALIDITY_SECS).to_string();
    let password = password(secret, &username);
    (username, password)
}

/// The password of `username`: base64(HMAC-SHA1(`secret`, username)).
pub fn password(secret: &[u8], username: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()))
}

/// Why a request's credentials are refused (each answered `401`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The username is not a unix time (digits only).
    #[error("the username is not an expiry time")]
    NotATime,
    /// The username's time is past.
    #[error("the credentials expired")]
    Expired,
    /// MESSAGE-INTEGRITY does not match the password of the username.
    #[error("wrong password (MESSAGE-INTEGRITY)")]
    WrongPassword,
}

/// The long-term key of `username` in `realm` (RFC 5389 §15.4: MD5(username ":" realm ":"
/// password)), if the username is a unix time after `now_unix`.
///
/// # Errors
/// [`Refused::NotATime`], [`Refused::Expired`].
pub fn long_term_key(
    secret: &[u8],
    username: &str,
    realm: &str,
    now_unix: u64,
) -> Result<Vec<u8>, Refused> {
    if username.is_empty() || username.len() > 20 || !username.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Refused::NotATime);
    }
    let expires: u64 = username.parse().map_err(|_| Refused::NotATime)?;
    if expires <= now_unix {
        return Err(Refused::Expired);
    }
    Ok(turn::auth::generate_auth_key(
        username,
        realm,
        &password(secret, username),
    ))
}

/// Checks the credentials of a STUN request that carries MESSAGE-INTEGRITY and USERNAME against
/// `secret` and our `realm`; the username and its key when they hold.
///
/// # Errors
/// Why they do not (no USERNAME counts as [`Refused::NotATime`]).
pub fn check_request(
    secret: &[u8],
    realm: &str,
    msg: &stun::message::Message,
    now_unix: u64,
) -> Result<(String, Vec<u8>), Refused> {
    use stun::message::Getter as _;
    let mut username =
        stun::textattrs::Username::new(stun::attributes::ATTR_USERNAME, String::new());
    username.get_from(msg).map_err(|_| Refused::NotATime)?;
    let username = username.to_string();
    let key = long_term_key(secret, &username, realm, now_unix)?;
    // `check` needs the message mutable (it trims and restores the length field).
    let mut copy = msg.clone();
    stun::integrity::MessageIntegrity(key.clone())
        .check(&mut copy)
        .map_err(|_| Refused::WrongPassword)?;
    Ok((username, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun::message::{Message, MessageType, Setter, CLASS_REQUEST, METHOD_ALLOCATE};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const REALM: &str = "chat.example.org";
    const NOW: u64 = 1_800_000_000;

    fn request(username: &str, password: &str, realm: &str) -> Message {
        let attrs: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(stun::textattrs::Username::new(
                stun::attributes::ATTR_USERNAME,
                username.to_owned(),
            )),
            Box::new(stun::textattrs::Realm::new(
                stun::attributes::ATTR_REALM,
                realm.to_owned(),
            )),
            Box::new(stun::textattrs::Nonce::new(
                stun::attributes::ATTR_NONCE,
                "nonce".to_owned(),
            )),
            Box::new(stun::integrity::MessageIntegrity::new_long_term_integrity(
                username.to_owned(),
                realm.to_owned(),
                password.to_owned(),
            )),
            Box::new(stun::fingerprint::FINGERPRINT),
        ];
        let mut m = Message::new();
        m.build(&attrs).unwrap();
        m
    }

    #[test]
    fn credentials_are_turn_rest_and_valid_five_days() {
        let (user, pass) = credentials(SECRET, NOW);
        assert_eq!(user, (NOW + 5 * 86_400).to_string());
        // RFC 2104 HMAC-SHA1 over the username, standard base64 (28 characters for 20 bytes).
        assert_eq!(pass.len(), 28);
        assert_eq!(pass, password(SECRET, &user));
        assert_ne!(pass, password(b"another secret", &user));
        // The crate's own TURN REST helper computes the same password from the same secret.
        let key = long_term_key(SECRET, &user, REALM, NOW).unwrap();
        assert_eq!(key, turn::auth::generate_auth_key(&user, REALM, &pass));
        // Known answer: HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            password(b"key", "The quick brown fox jumps over the lazy dog"),
            "3nybhbi3iqa8ino29wqQcBydtNk="
        );
    }

    #[test]
    fn published_credentials_pass_until_they_expire() {
        let (user, pass) = credentials(SECRET, NOW);
        let m = request(&user, &pass, REALM);
        let (name, _) = check_request(SECRET, REALM, &m, NOW).unwrap();
        assert_eq!(name, user);
        // Still good a second before expiry, not at it.
        let expiry = NOW + VALIDITY_SECS;
        assert!(check_request(SECRET, REALM, &m, expiry - 1).is_ok());
        assert_eq!(
            check_request(SECRET, REALM, &m, expiry).unwrap_err(),
            Refused::Expired
        );
    }

    #[test]
    fn bad_credentials_are_refused_with_their_reason() {
        let (user, pass) = credentials(SECRET, NOW);
        let wrong = request(&user, "not the password", REALM);
        assert_eq!(
            check_request(SECRET, REALM, &wrong, NOW).unwrap_err(),
            Refused::WrongPassword
        );
        // Signed with another secret.
        let (_, other) = credentials(b"another secret", NOW);
        let m = request(&user, &other, REALM);
        assert_eq!(
            check_request(SECRET, REALM, &m, NOW).unwrap_err(),
            Refused::WrongPassword
        );
        // The right password for another realm.
        let m = request(&user, &pass, "other.example.org");
        assert_eq!(
            check_request(SECRET, REALM, &m, NOW).unwrap_err(),
            Refused::WrongPassword
        );
        // An expired username with its right password.
        let (old_user, old_pass) = credentials(SECRET, NOW - VALIDITY_SECS - 1);
        let m = request(&old_user, &old_pass, REALM);
        assert_eq!(
            check_request(SECRET, REALM, &m, NOW).unwrap_err(),
            Refused::Expired
        );
        // Not a time: words, a "time:user" username, signs, overflow, empty.
        for name in [
            "alice",
            "1900000000:alice",
            "+1900000000",
            "99999999999999999999999",
            "",
        ] {
            let pass = password(SECRET, name);
            assert_eq!(
                long_term_key(SECRET, name, REALM, NOW).unwrap_err(),
                Refused::NotATime,
                "{name:?}"
            );
            if !name.is_empty() {
                let m = request(name, &pass, REALM);
                assert_eq!(
                    check_request(SECRET, REALM, &m, NOW).unwrap_err(),
                    Refused::NotATime
                );
            }
        }
    }
}
