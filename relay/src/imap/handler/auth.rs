//! Logging in: STARTTLS, LOGIN, AUTHENTICATE PLAIN (RFC 3501 §6.2, RFC 4616) and the completion
//! of the login effect.

use base64::Engine as _;

use super::super::session::{Auth, Session, State};
use super::Pending;
use crate::accounts::LoginError;
use crate::session::{Action, Effect, Secret};
use crate::store::AccountId;

const PRIVACY_REQUIRED: &str =
    "NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections.";

impl Session {
    /// `STARTTLS`
    pub(in super::super) fn starttls(&mut self, tag: &str) {
        if self.tls {
            return self.tagged(tag, "BAD TLS is already active");
        }
        self.tagged(tag, "OK Begin TLS negotiation now");
        // Anything pipelined after STARTTLS was sent in plaintext: drop it.
        self.framer.discard_buffered();
        self.state = State::StartingTls;
        self.actions.push_back(Action::StartTls);
    }

    /// `LOGIN user pass`
    pub(in super::super) fn login(&mut self, tag: String, user: String, pass: String) {
        if !self.tls {
            return self.tagged(&tag, PRIVACY_REQUIRED);
        }
        self.effect(
            Effect::Login {
                user,
                password: Secret(pass),
            },
            Pending::Login { tag },
        );
    }

    /// `AUTHENTICATE PLAIN [initial-response]`; without one, the response comes as the next line
    /// ([`Session::authenticate_line`]).
    pub(in super::super) fn authenticate(
        &mut self,
        tag: String,
        mech: &str,
        initial: Option<String>,
    ) {
        if !self.tls {
            return self.tagged(&tag, PRIVACY_REQUIRED);
        }
        if mech != "PLAIN" {
            return self.tagged(&tag, "NO Unsupported authentication mechanism");
        }
        match initial {
            Some(ir) => self.auth_plain(tag, ir.as_bytes()),
            None => {
                self.line("+ ");
                self.state = State::Authenticating { tag };
            }
        }
    }

    /// The client's response line to `+ ` in AUTHENTICATE (`*` aborts).
    pub(in super::super) fn authenticate_line(&mut self, line: &[u8]) {
        let tag = match std::mem::replace(&mut self.state, State::NotAuthenticated) {
            State::Authenticating { tag } => tag,
            other => {
                self.state = other;
                return;
            }
        };
        if line == b"*" {
            self.tagged(&tag, "BAD Authentication aborted");
        } else {
            self.auth_plain(tag, line);
        }
    }

    fn auth_plain(&mut self, tag: String, b64: &[u8]) {
        let decoded = if b64 == b"=" {
            Ok(Vec::new())
        } else {
            base64::engine::general_purpose::STANDARD.decode(b64)
        };
        let Ok(decoded) = decoded else {
            self.tagged(&tag, "BAD Invalid base64 data");
            return;
        };
        let mut parts = decoded.split(|&b| b == 0);
        let (Some(authz), Some(user), Some(pass), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.tagged(&tag, "BAD Invalid AUTHENTICATE PLAIN response");
            return;
        };
        let (Ok(authz), Ok(user), Ok(pass)) = (
            std::str::from_utf8(authz),
            std::str::from_utf8(user),
            std::str::from_utf8(pass),
        ) else {
            self.tagged(&tag, "BAD Invalid UTF-8");
            return;
        };
        if !authz.is_empty() && authz != user {
            return self.login_failed(&tag);
        }
        self.effect(
            Effect::Login {
                user: user.to_owned(),
                password: Secret(pass.to_owned()),
            },
            Pending::Login { tag },
        );
    }

    /// The login effect finished.
    pub(super) fn login_done(&mut self, tag: &str, r: Result<AccountId, LoginError>) {
        match r {
            Ok(account) => {
                self.state = State::Authenticated(Auth {
                    account,
                    condstore: false,
                });
                let caps = self.capabilities();
                self.tagged(tag, &format!("OK [CAPABILITY {caps}] Logged in"));
            }
            Err(LoginError::TryLater(_)) => {
                self.tagged(tag, "NO [UNAVAILABLE] Temporary failure, try again later")
            }
            Err(LoginError::Failed) => self.login_failed(tag),
            Err(LoginError::Internal) => {
                self.tagged(tag, "NO [AUTHENTICATIONFAILED] Authentication failed.")
            }
        }
    }

    /// A wrong password (or identity): `NO`, and after the connection's last allowed failure
    /// `* BYE` and close (the delay before this reply is the driver's, see `crate::throttle`).
    fn login_failed(&mut self, tag: &str) {
        self.tagged(tag, "NO [AUTHENTICATIONFAILED] Authentication failed.");
        if self.failed_logins.record() {
            self.line("* BYE Too many failed authentication attempts");
            self.close();
        }
    }
}
