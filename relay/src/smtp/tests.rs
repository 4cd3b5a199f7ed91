//! Session tests without sockets: a [`T`] pairs an [`smtp::Session`](Session) with a
//! [`MemoryStore`] and runs its effects (`Commit` through `commit_now`, `Login` by
//! looking up or creating the account directly; login rules are tested in `accounts`).
//! Golden transcripts live in `relay/testdata/smtp/*.txt`.
#![allow(clippy::unwrap_used, reason = "unwrap is fine in tests")]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;

use super::session::{
    IDLE_TIMEOUT_MS, MAX_ERRORS, MAX_OUTPUT_BACKLOG, MAX_RECIPIENTS, PREAUTH_DEADLINE_MS,
};
use super::{Mode, Session};
use crate::accounts::LoginError;
use crate::config::Config;
use crate::dkim::Verdict;
use crate::session::{Action, Effect, EffectResult, Session as _};
use crate::shared::Shared;
use crate::store::{AccountId, MemoryStore, Op, OpResult, StoreConfig};

const START_MS: u64 = 1_800_000_000_000;
const ALICE: &str = "alice@[127.0.0.1]";
const BOB: &str = "bob@[127.0.0.1]";
const PASSWORD: &str = "secret";
/// `\0alice@[127.0.0.1]\0secret`
const ALICE_PLAIN: &str = "AGFsaWNlQFsxMjcuMC4wLjFdAHNlY3JldA==";
/// `\0alice@[127.0.0.1]\0wrong`
const ALICE_WRONG: &str = "AGFsaWNlQFsxMjcuMC4wLjFdAHdyb25n";
const PEER: [u8; 4] = [192, 0, 2, 77];

/// Replies received since the last command, parsed.
#[derive(Debug)]
struct Replies(Vec<(u16, String)>);

impl Replies {
    fn parse(bytes: &[u8]) -> Replies {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            text.is_empty() || text.ends_with("\r\n"),
            "output must end in CRLF: {text:?}"
        );
        let mut replies = Vec::new();
        let mut current = String::new();
        for line in text.split_terminator("\r\n") {
            assert!(line.len() >= 4, "short reply line {line:?}");
            let code: u16 = line[..3].parse().expect("reply code");
            let sep = line.as_bytes()[3];
            assert!(sep == b' ' || sep == b'-', "bad separator in {line:?}");
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&line[4..]);
            if sep == b' ' {
                replies.push((code, std::mem::take(&mut current)));
            }
        }
        assert!(current.is_empty(), "unfinished multi-line reply");
        Replies(replies)
    }

    fn codes(&self) -> Vec<u16> {
        self.0.iter().map(|(code, _)| *code).collect()
    }

    /// Exactly one reply, with this code.
    #[track_caller]
    fn code(&self, code: u16) -> &Self {
        assert_eq!(self.codes(), [code], "replies: {:?}", self.0);
        self
    }

    /// The text of the only (or last) reply contains `part`.
    #[track_caller]
    fn text(&self, part: &str) -> &Self {
        let last = self.0.last().map(|(_, t)| t.as_str()).unwrap_or("");
        assert!(last.contains(part), "{last:?} should contain {part:?}");
        self
    }
}

/// A session paired with an in-memory store; effects run synchronously.
struct T {
    s: Session,
    shared: Arc<Shared>,
    store: MemoryStore,
    _dir: tempfile::TempDir,
    now: u64,
    closed: bool,
    starttls: usize,
    /// Call `tls_established` as soon as `StartTls` is polled.
    auto_tls: bool,
    /// Run effects as soon as they are polled.
    auto_effects: bool,
    /// Every byte the server sent.
    transcript: Vec<u8>,
    fresh: Vec<u8>,
    /// Effects polled but not run (`auto_effects == false`).
    held: Vec<Effect>,
    /// What `Effect::VerifyOrigin` answers.
    origin: Verdict,
    /// Every origin check asked for: From domain and message.
    origin_checks: Vec<(String, Vec<u8>)>,
}

fn shared_in(
    dir: &Path,
    tweak: impl FnOnce(&mut Config, &mut StoreConfig),
) -> (Arc<Shared>, MemoryStore) {
    let mut config = Config::dev(dir.to_path_buf());
    let mut store_config = StoreConfig {
        max_mailbox_size: config.max_mailbox_size,
        max_mailbox_messages: config.max_mailbox_messages,
        ..StoreConfig::default()
    };
    tweak(&mut config, &mut store_config);
    let store = MemoryStore::new(&store_config);
    (
        Arc::new(Shared::new(config, Arc::new(store.clone()))),
        store,
    )
}

impl T {
    fn new(mode: Mode, tls: bool) -> T {
        T::with(mode, tls, |_, _| {})
    }

    fn with(mode: Mode, tls: bool, tweak: impl FnOnce(&mut Config, &mut StoreConfig)) -> T {
        let dir = tempfile::tempdir().unwrap();
        let (shared, store) = shared_in(dir.path(), tweak);
        let s = Session::new(shared.clone(), mode, tls, IpAddr::from(PEER), START_MS);
        let mut t = T {
            s,
            shared,
            store,
            _dir: dir,
            now: START_MS,
            closed: false,
            starttls: 0,
            auto_tls: true,
            auto_effects: true,
            transcript: Vec::new(),
            fresh: Vec::new(),
            held: Vec::new(),
            origin: Verdict::Pass,
            origin_checks: Vec::new(),
        };
        t.drive();
        t.take().code(220).text("127.0.0.1 ESMTP");
        t
    }

    /// Submission over TLS with alice logged in.
    fn submission() -> T {
        let mut t = T::new(Mode::Submission, true);
        t.account(ALICE);
        t.account(BOB);
        t.line("EHLO client.example").code(250);
        t.line(&format!("AUTH PLAIN {ALICE_PLAIN}")).code(235);
        t
    }

    /// Port 25 after STARTTLS and EHLO, with local accounts alice and bob.
    fn mx() -> T {
        let mut t = T::new(Mode::Mx, true);
        t.account(ALICE);
        t.account(BOB);
        t.line("EHLO other.example").code(250);
        t
    }

    fn account(&self, addr: &str) -> AccountId {
        if let Some(info) = self.shared.store.account(addr) {
            return info.id;
        }
        match self.store.commit_now(Op::CreateAccount {
            addr: addr.to_owned(),
            password_hash: format!("test:{PASSWORD}"),
            now: (self.now / 1000) as i64,
        }) {
            Ok(OpResult::AccountCreated(id)) => id,
            other => panic!("create account: {other:?}"),
        }
    }

    fn login(&self, user: &str, password: &str) -> Result<AccountId, LoginError> {
        let addr = user.to_ascii_lowercase();
        match self.shared.store.account(&addr) {
            Some(info) if info.password_hash == format!("test:{password}") => Ok(info.id),
            Some(_) => Err(LoginError::Failed),
            None => Ok(self.account(&addr)),
        }
    }

    fn run(&mut self, effect: Effect) {
        let result = match effect {
            Effect::Commit(op) => EffectResult::Commit(self.store.commit_now(op)),
            Effect::Login { user, password } => EffectResult::Login(self.login(&user, &password.0)),
            Effect::VerifyOrigin {
                message,
                from_domain,
            } => {
                self.origin_checks.push((from_domain, message.clone()));
                EffectResult::Origin {
                    message,
                    verdict: self.origin,
                }
            }
        };
        self.s.complete(result, self.now);
    }

    fn drive(&mut self) {
        loop {
            let n = self.s.output().len();
            if n > 0 {
                self.fresh.extend_from_slice(self.s.output());
                self.transcript.extend_from_slice(self.s.output());
                self.s.consume_output(n);
                continue;
            }
            match self.s.poll_action() {
                None => break,
                Some(Action::Effect(effect)) if self.auto_effects => self.run(effect),
                Some(Action::Effect(effect)) => self.held.push(effect),
                Some(Action::StartTls) => {
                    self.starttls += 1;
                    if self.auto_tls {
                        self.s.tls_established();
                    }
                }
                Some(Action::Close) => self.closed = true,
                Some(Action::StartCompress) => panic!("SMTP never asks for COMPRESS"),
            }
        }
    }

    fn take(&mut self) -> Replies {
        Replies::parse(&std::mem::take(&mut self.fresh))
    }

    fn send(&mut self, bytes: &[u8]) -> Replies {
        self.s.receive(bytes, self.now);
        self.drive();
        self.take()
    }

    fn line(&mut self, line: &str) -> Replies {
        self.send(format!("{line}\r\n").as_bytes())
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
    }

    fn timeout(&mut self) -> Replies {
        self.s.handle_timeout(self.now);
        self.drive();
        self.take()
    }

    /// The messages in an account's INBOX, oldest first.
    fn inbox(&self, addr: &str) -> Vec<Vec<u8>> {
        let store = &self.shared.store;
        let id = store.account(addr).expect("account exists").id;
        let view = store.mailbox_view(id, "INBOX").expect("INBOX exists");
        view.messages
            .iter()
            .map(|m| store.read(m.body).expect("body readable").to_vec())
            .collect()
    }
}

/// An encrypted message (the policy fixture `encrypted-crafted-seipd-v2.eml`) with the given
/// From and To. `extra_preamble` goes before the first boundary (MIME ignores it), handy for
/// lines starting with a dot.
fn encrypted(from: &str, to: &str, extra_preamble: &str) -> String {
    const FIXTURE: &str = include_str!("../../testdata/mail/encrypted-crafted-seipd-v2.eml");
    const PREAMBLE: &str = "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n";
    assert!(FIXTURE.contains(PREAMBLE) && FIXTURE.contains("\r\n"));
    FIXTURE
        .replace("<alice@example.org>", &format!("<{from}>"))
        .replace("<bob@example.org>", &format!("<{to}>"))
        .replace(PREAMBLE, &format!("{PREAMBLE}{extra_preamble}"))
}

fn plain(from: &str, to: &str) -> String {
    format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: hi\r\n\r\nhello in clear\r\n")
}

/// Dot-stuffs a message and appends the terminator (RFC 5321 §4.5.2).
fn stuffed(message: &str) -> String {
    let mut out = String::new();
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    out.push_str(".\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Greeting, EHLO, STARTTLS

#[test]
fn ehlo_keywords_submission_before_tls() {
    let mut t = T::new(Mode::Submission, false);
    let r = t.line("EHLO client.example");
    r.code(250);
    let text = &r.0[0].1;
    for keyword in [
        "SIZE 31457280",
        "PIPELINING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "STARTTLS",
    ] {
        assert!(text.lines().any(|l| l == keyword), "{keyword} in {text:?}");
    }
    assert!(!text.contains("AUTH"), "no AUTH before TLS: {text:?}");
    assert_eq!(text.lines().next(), Some("127.0.0.1"));
}

#[test]
fn ehlo_keywords_submission_after_tls() {
    let mut t = T::new(Mode::Submission, true);
    let r = t.line("EHLO client.example");
    let text = &r.code(250).0[0].1;
    assert!(text.lines().any(|l| l == "AUTH PLAIN"), "{text:?}");
    assert!(!text.contains("STARTTLS"), "{text:?}");
}

#[test]
fn ehlo_keywords_mx() {
    let mut t = T::new(Mode::Mx, false);
    let text = t.line("EHLO other.example").code(250).0[0].1.clone();
    assert!(text.lines().any(|l| l == "STARTTLS"));
    assert!(text.lines().any(|l| l == "SIZE 31457280"));
    assert!(!text.contains("AUTH"));
    t.line("STARTTLS").code(220);
    let text = t.line("EHLO other.example").code(250).0[0].1.clone();
    assert!(
        !text.contains("STARTTLS") && !text.contains("AUTH"),
        "{text:?}"
    );
}

#[test]
fn helo_answers_domain() {
    let mut t = T::new(Mode::Mx, true);
    t.line("HELO other.example").code(250).text("127.0.0.1");
    t.line("EHLO").code(501).text("5.5.4 Syntax");
}

#[test]
fn starttls_discards_pipelined_input() {
    let mut t = T::new(Mode::Submission, false);
    t.account(ALICE);
    t.line("EHLO client.example").code(250);
    let r = t.send(
        format!("STARTTLS\r\nAUTH PLAIN {ALICE_PLAIN}\r\nMAIL FROM:<{ALICE}>\r\nNOOP\r\n")
            .as_bytes(),
    );
    r.code(220).text("2.0.0 Ready to start TLS");
    assert_eq!(t.starttls, 1);
    // Nothing of the injected commands took effect: EHLO is needed again, AUTH did not happen.
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(503);
    t.line("EHLO client.example").code(250);
    t.line(&format!("MAIL FROM:<{ALICE}>"))
        .code(530)
        .text("Authentication required");
}

#[test]
fn plaintext_between_starttls_and_handshake_is_discarded() {
    let mut t = T::new(Mode::Mx, false);
    t.auto_tls = false;
    t.line("EHLO other.example").code(250);
    t.line("STARTTLS").code(220);
    assert!(t.send(b"NOOP\r\nQUIT\r\n").0.is_empty());
    t.s.tls_established();
    t.line("NOOP").code(250);
    assert!(!t.closed);
}

#[test]
fn stalled_handshake_times_out_silently() {
    let mut t = T::new(Mode::Mx, false);
    t.auto_tls = false;
    t.line("STARTTLS").code(220);
    t.advance(IDLE_TIMEOUT_MS);
    assert!(
        t.timeout().0.is_empty(),
        "no plaintext into a TLS handshake"
    );
    assert!(t.closed);
}

#[test]
fn starttls_twice_is_refused() {
    let mut t = T::new(Mode::Submission, true);
    t.line("STARTTLS").code(503);
    assert_eq!(t.starttls, 0);
}

// ---------------------------------------------------------------------------------------------
// AUTH

#[test]
fn auth_before_tls_is_refused() {
    let mut t = T::new(Mode::Submission, false);
    t.line("EHLO client.example").code(250);
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}"))
        .code(530)
        .text("5.7.0 Must issue a STARTTLS command first");
    t.line(&format!("MAIL FROM:<{ALICE}>"))
        .code(530)
        .text("STARTTLS");
}

#[test]
fn auth_not_offered_on_mx() {
    let mut t = T::mx();
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}")).code(503);
}

#[test]
fn auth_plain_initial_response() {
    let mut t = T::new(Mode::Submission, true);
    t.account(ALICE);
    t.line("EHLO client.example").code(250);
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}"))
        .code(235)
        .text("2.7.0 Authentication successful");
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}")).code(503);
}

#[test]
fn auth_plain_continuation() {
    let mut t = T::new(Mode::Submission, true);
    t.account(ALICE);
    t.line("EHLO client.example").code(250);
    let r = t.line("AUTH PLAIN");
    assert_eq!(r.0, [(334, String::new())]);
    t.line(ALICE_PLAIN).code(235);
}

#[test]
fn auth_cancel_and_malformed() {
    let mut t = T::new(Mode::Submission, true);
    t.account(ALICE);
    t.line("EHLO client.example").code(250);
    t.line("AUTH PLAIN").code(334);
    t.line("*").code(501);
    t.line("AUTH PLAIN !!!notbase64").code(501).text("5.5.2");
    t.line("AUTH PLAIN").code(334);
    t.line("%%%").code(501).text("5.5.2");
    // Two fields only.
    t.line("AUTH PLAIN YWxpY2UAc2VjcmV0")
        .code(501)
        .text("5.5.2");
    t.line("AUTH PLAIN =").code(501).text("5.5.2");
    t.line("AUTH LOGIN").code(504);
    // The session still works.
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}")).code(235);
}

#[test]
fn auth_failure() {
    let mut t = T::new(Mode::Submission, true);
    t.account(ALICE);
    t.line("EHLO client.example").code(250);
    t.line(&format!("AUTH PLAIN {ALICE_WRONG}"))
        .code(535)
        .text("5.7.8 Authentication failed");
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(530);
}

#[test]
fn auth_needs_ehlo() {
    let mut t = T::new(Mode::Submission, true);
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}")).code(503);
}

#[test]
fn wants_no_input_while_login_pending() {
    let mut t = T::new(Mode::Submission, true);
    t.account(ALICE);
    t.auto_effects = false;
    t.line("EHLO client.example").code(250);
    let r = t.send(format!("AUTH PLAIN {ALICE_PLAIN}\r\nNOOP\r\n").as_bytes());
    assert!(r.0.is_empty(), "nothing before the login finished: {r:?}");
    assert!(!t.s.wants_input());
    assert_eq!(
        t.s.next_timeout(),
        None,
        "no timeout while the server works"
    );
    assert_eq!(t.held.len(), 1);
    let effect = t.held.pop().unwrap();
    t.run(effect);
    t.drive();
    assert_eq!(
        t.take().codes(),
        [235, 250],
        "the pipelined NOOP runs after AUTH"
    );
    assert!(t.s.wants_input());
}

// ---------------------------------------------------------------------------------------------
// MAIL

#[test]
fn mail_before_auth_is_refused() {
    let mut t = T::new(Mode::Submission, true);
    t.line("EHLO client.example").code(250);
    t.line(&format!("MAIL FROM:<{ALICE}>"))
        .code(530)
        .text("5.7.0 Authentication required");
}

#[test]
fn mail_from_must_be_the_login() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{BOB}>")).code(553).text(
        "5.7.1 <bob@[127.0.0.1]>: Sender address rejected: not owned by user alice@[127.0.0.1]",
    );
    t.line("MAIL FROM:<>").code(553);
    t.line("MAIL FROM:<ALICE@[127.0.0.1]>").code(250);
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(503);
}

#[test]
fn mail_size_parameter_over_limit() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}> SIZE=31457281"))
        .code(552)
        .text("5.3.4");
    t.line(&format!("MAIL FROM:<{ALICE}> SIZE=31457280 BODY=8BITMIME"))
        .code(250);
}

#[test]
fn null_sender_only_on_mx() {
    let mut t = T::mx();
    t.line("MAIL FROM:<>").code(250);
}

#[test]
fn mx_mail_before_tls_is_refused() {
    let mut t = T::new(Mode::Mx, false);
    t.line("EHLO other.example").code(250);
    t.line("MAIL FROM:<x@other.example>")
        .code(530)
        .text("5.7.0 Must issue a STARTTLS command first");
}

#[test]
fn mail_syntax_errors() {
    let mut t = T::submission();
    t.line("MAIL FROM:alice").code(501).text("5.5.4");
    t.line("MAIL FROM:<no-at-sign>").code(501).text("5.1.7");
    t.line(&format!("MAIL FROM:<{ALICE}> XFOO=1")).code(555);
}

#[test]
fn rate_limit_refuses_and_closes() {
    let mut t = T::submission();
    let burst = t.shared.config.max_user_send_burst_size;
    let mut accepted = 0;
    for _ in 0..=burst + 1 {
        let r = t.line(&format!("MAIL FROM:<{ALICE}>"));
        if r.codes() == [250] {
            accepted += 1;
            t.line("RSET").code(250);
            continue;
        }
        r.code(450)
            .text("4.7.1: Too much mail from alice@[127.0.0.1], ");
        break;
    }
    assert!(
        accepted >= burst as usize,
        "no refusal before the burst: {accepted}"
    );
    assert!(t.closed, "the connection is closed after 450");
    assert!(t.line("NOOP").0.is_empty(), "nothing after close");
}

// ---------------------------------------------------------------------------------------------
// RCPT

#[test]
fn rcpt_rules() {
    let mut t = T::submission();
    t.line(&format!("RCPT TO:<{BOB}>")).code(503);
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    // Other domains: queued for delivery (submission only).
    t.line("RCPT TO:<someone@example.org>")
        .code(250)
        .text("2.1.5");
    t.line("RCPT TO:<someone@[192.0.2.1]>").code(250);
    t.line("RCPT TO:<someone@_relay.test>").code(250);
    // Not a domain: a bare address, a bad literal, an empty label, a bad character.
    t.line("RCPT TO:<bob@127.0.0.1>").code(501);
    t.line("RCPT TO:<bob@[999.0.0.1]>").code(501);
    t.line("RCPT TO:<bob@example..org>").code(501);
    t.line("RCPT TO:<bob@exa!mple.org>").code(501);
    t.line("RCPT TO:<bob@localhost>").code(501);
    t.line("RCPT TO:<nobody@[127.0.0.1]>")
        .code(550)
        .text("5.1.1 <nobody@[127.0.0.1]>: Recipient address rejected: User unknown");
    t.line("RCPT TO:<BOB@[127.0.0.1]>").code(250).text("2.1.5");
    t.line("RCPT TO:<bob+tag@[127.0.0.1]>").code(250);
    t.line("RCPT TO:<bob>").code(501);
}

#[test]
fn rcpt_limit() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    let mut batch = String::new();
    for _ in 0..MAX_RECIPIENTS {
        batch.push_str(&format!("RCPT TO:<{BOB}>\r\n"));
    }
    let r = t.send(batch.as_bytes());
    assert!(r.codes().iter().all(|&c| c == 250));
    assert_eq!(r.0.len(), MAX_RECIPIENTS);
    t.line(&format!("RCPT TO:<{BOB}>")).code(452).text("4.5.3");
    assert!(!t.closed);
}

#[test]
fn rcpt_quota_full() {
    let mut t = T::with(Mode::Mx, true, |_, store| store.max_mailbox_size = 2000);
    let bob = t.account(BOB);
    t.store
        .commit_now(Op::Deliver {
            recipients: vec![bob],
            sender: None,
            internal_date: 0,
            body: vec![b'x'; 1990],
        })
        .unwrap();
    // Fill to the limit whatever the store counts per message.
    while t.shared.store.quota(bob).0 < t.shared.store.quota(bob).1 {
        let r = t.store.commit_now(Op::Deliver {
            recipients: vec![bob],
            sender: None,
            internal_date: 0,
            body: vec![b'y'; 10],
        });
        if !matches!(r, Ok(OpResult::Delivered(ref v)) if v[0].is_ok()) {
            break;
        }
    }
    let (used, limit) = t.shared.store.quota(bob);
    assert!(used >= limit, "mailbox filled: {used}/{limit}");
    t.line("EHLO other.example").code(250);
    t.line("MAIL FROM:<x@[192.0.2.1]>").code(250);
    t.line(&format!("RCPT TO:<{BOB}>"))
        .code(552)
        .text("5.2.2 <bob@[127.0.0.1]>: Quota exceeded (mailbox for user is full)");
}

#[test]
fn rcpt_message_count_full() {
    let mut t = T::with(Mode::Mx, true, |config, store| {
        config.max_mailbox_messages = 2;
        store.max_mailbox_messages = 2;
    });
    let bob = t.account(BOB);
    for _ in 0..2 {
        t.store
            .commit_now(Op::Deliver {
                recipients: vec![bob],
                sender: None,
                internal_date: 0,
                body: b"x".to_vec(),
            })
            .unwrap();
    }
    // Two bytes of 500 MB used, but two messages of two.
    t.line("EHLO other.example").code(250);
    t.line("MAIL FROM:<x@[192.0.2.1]>").code(250);
    t.line(&format!("RCPT TO:<{BOB}>"))
        .code(552)
        .text("5.2.2 <bob@[127.0.0.1]>: Quota exceeded (mailbox for user is full)");
}

// ---------------------------------------------------------------------------------------------
// DATA

#[test]
fn data_sequence_errors() {
    let mut t = T::submission();
    t.line("DATA").code(503);
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line("DATA").code(503).text("need RCPT");
    t.line("RCPT TO:<nobody@[127.0.0.1]>").code(550);
    t.line("DATA").code(554).text("no valid recipients");
}

#[test]
fn oversize_data_is_read_to_end_then_refused() {
    let mut t = T::with(Mode::Submission, true, |config, _| {
        config.max_message_size = 1000
    });
    t.account(ALICE);
    t.account(BOB);
    t.line("EHLO client.example").code(250);
    t.line(&format!("AUTH PLAIN {ALICE_PLAIN}")).code(235);
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    let mut big = String::new();
    for _ in 0..100 {
        big.push_str("0123456789012345678901234567890123456789\r\n");
    }
    // Sent in pieces: no reply until the end.
    assert!(t.send(big.as_bytes()).0.is_empty());
    assert!(t.send(b"MAIL FROM:<looks like a command>\r\n").0.is_empty());
    t.send(b".\r\n")
        .code(552)
        .text("5.3.4 Message size exceeds fixed maximum message size");
    // The transaction is reset, the session continues.
    assert!(!t.closed);
    t.line(&format!("RCPT TO:<{BOB}>")).code(503);
    t.line("NOOP").code(250);
    assert!(t.inbox(BOB).is_empty());
}

#[test]
fn bare_lf_in_command_closes() {
    let mut t = T::new(Mode::Submission, true);
    t.send(b"EHLO client.example\n")
        .code(521)
        .text("5.5.2 127.0.0.1 Error: bare <LF> received");
    assert!(t.closed);
}

#[test]
fn bare_lf_in_data_closes_without_delivery() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    let message = encrypted(ALICE, BOB, "");
    let smuggled = format!("{message}\n.\r\nMAIL FROM:<{ALICE}>\r\n");
    t.send(smuggled.as_bytes()).code(521).text("bare <LF>");
    assert!(t.closed);
    assert!(t.inbox(BOB).is_empty());
}

#[test]
fn delivers_encrypted_submission() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    let message = encrypted(ALICE, BOB, "..leading dot\r\n.\r\n");
    t.send(stuffed(&message).as_bytes())
        .code(250)
        .text("2.0.0 Ok: queued as ");
    let inbox = t.inbox(BOB);
    assert_eq!(inbox.len(), 1);
    let stored = String::from_utf8(inbox[0].clone()).unwrap();
    assert!(
        stored.contains("\r\n..leading dot\r\n.\r\n------=_enc_boundary"),
        "dots un-stuffed once: {stored}"
    );
    assert!(stored.contains("-----BEGIN PGP MESSAGE-----"));
    assert!(!stored.contains("192.0.2.77"), "no peer IP in the message");
    // The session is ready for the next transaction.
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
}

#[test]
fn submission_headers_are_cleaned() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    let message = format!(
        "Received: from [192.0.2.77] by x\r\nX-Mailer: m\r\n{}",
        encrypted(ALICE, BOB, "").replace("Subject: ...", "Subject: secret")
    );
    t.send(stuffed(&message).as_bytes()).code(250);
    let stored = String::from_utf8(t.inbox(BOB).remove(0)).unwrap();
    assert!(!stored.contains("Received:"), "{stored}");
    assert!(!stored.contains("X-Mailer"), "{stored}");
    assert!(!stored.contains("secret"), "{stored}");
    assert!(!stored.contains("192.0.2.77"));
}

#[test]
fn cleartext_submission_is_refused_523() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(stuffed(&plain(ALICE, BOB)).as_bytes())
        .code(523)
        .text("Encryption Needed");
    assert!(t.inbox(BOB).is_empty());
    t.line("NOOP").code(250);
}

#[test]
fn pipelined_transaction() {
    let mut t = T::submission();
    let message = encrypted(ALICE, BOB, "");
    let batch = format!(
        "MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nRCPT TO:<nobody@[127.0.0.1]>\r\nDATA\r\n{}NOOP\r\nQUIT\r\n",
        stuffed(&message)
    );
    let r = t.send(batch.as_bytes());
    assert_eq!(r.codes(), [250, 250, 550, 354, 250, 250, 221]);
    assert!(t.closed);
    assert_eq!(t.inbox(BOB).len(), 1);
}

#[test]
fn mx_delivers_encrypted_and_refuses_cleartext() {
    let mut t = T::mx();
    let from = "carol@[192.0.2.1]";
    t.line(&format!("MAIL FROM:<{from}>")).code(250);
    t.line(&format!("RCPT TO:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(stuffed(&encrypted(from, BOB, "")).as_bytes())
        .code(250);
    assert_eq!(t.inbox(ALICE).len(), 1);
    assert_eq!(t.inbox(BOB).len(), 1);
    t.line(&format!("MAIL FROM:<{from}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(stuffed(&plain(from, BOB)).as_bytes()).code(523);
    assert_eq!(t.inbox(BOB).len(), 1);
}

#[test]
fn quota_exceeded_at_delivery() {
    let mut t = T::with(Mode::Mx, true, |_, store| store.max_mailbox_size = 1500);
    t.account(BOB);
    t.line("EHLO other.example").code(250);
    let from = "carol@[192.0.2.1]";
    let mut message = encrypted(from, BOB, "");
    message.insert_str(0, &format!("X-Pad: {}\r\n", "p".repeat(1000)));
    assert!(message.len() > 1500);
    t.line(&format!("MAIL FROM:<{from}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(stuffed(&message).as_bytes())
        .code(552)
        .text("5.2.2 Quota exceeded (mailbox for user is full)");
    assert!(t.inbox(BOB).is_empty());
}

#[test]
fn store_error_gives_451() {
    let mut t = T::submission();
    t.auto_effects = false;
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    assert!(t
        .send(stuffed(&encrypted(ALICE, BOB, "")).as_bytes())
        .0
        .is_empty());
    assert!(!t.s.wants_input(), "no input while the write is pending");
    let Some(Effect::Commit(Op::Deliver { recipients, .. })) = t.held.pop() else {
        panic!("a Deliver effect");
    };
    assert_eq!(recipients, [t.account(BOB)]);
    t.s.complete(
        EffectResult::Commit(Err(crate::store::Error::Closed)),
        t.now,
    );
    t.drive();
    t.take().code(451).text("4.3.0");
    assert!(t.s.wants_input());
}

// ---------------------------------------------------------------------------------------------
// Other commands, errors, limits, time

#[test]
fn simple_commands() {
    let mut t = T::new(Mode::Submission, true);
    t.line("VRFY root").code(252).text("2.0.0 Cannot VRFY user");
    t.line("VRFY alice@[127.0.0.1]").code(252);
    t.line("NOOP").code(250).text("2.0.0");
    t.line("RSET").code(250).text("2.0.0");
    t.line("HELP").code(214);
    t.line("EXPN list").code(502);
    t.line("FOO bar").code(500).text("5.5.2");
    t.line("DATA now").code(501).text("5.5.4");
    t.line("QUIT").code(221).text("2.0.0 Bye");
    assert!(t.closed);
}

#[test]
fn long_line_is_discarded_to_its_end() {
    let mut t = T::new(Mode::Submission, true);
    let long = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(10_000));
    assert_eq!(t.send(long.as_bytes()).codes(), [500, 250]);
    t.line(&format!("NOOP {}", "y".repeat(5000)))
        .code(500)
        .text("5.5.2 Line too long");
    assert!(!t.closed);
}

#[test]
fn too_many_errors_close() {
    let mut t = T::new(Mode::Submission, true);
    for _ in 0..MAX_ERRORS - 1 {
        t.line("BOGUS").code(500);
    }
    assert_eq!(t.line("BOGUS").codes(), [500, 421]);
    assert!(t.closed);
}

#[test]
fn timeout_after_five_minutes_of_silence() {
    let mut t = T::submission();
    assert_eq!(t.s.next_timeout(), Some(START_MS + IDLE_TIMEOUT_MS));
    t.advance(60_000);
    t.line("NOOP").code(250);
    assert_eq!(
        t.s.next_timeout(),
        Some(START_MS + 60_000 + IDLE_TIMEOUT_MS)
    );
    t.advance(IDLE_TIMEOUT_MS - 1);
    assert!(t.timeout().0.is_empty());
    assert!(!t.closed);
    t.advance(1);
    t.timeout().code(421).text("4.4.2");
    assert!(t.closed);
    assert_eq!(t.s.next_timeout(), None);
}

#[test]
fn submission_without_auth_is_closed_after_three_minutes_however_busy() {
    let mut t = T::new(Mode::Submission, true);
    t.line("EHLO client.example").code(250);
    // A trickle keeps the idle timer fresh, never the pre-login deadline.
    for _ in 0..5 {
        t.advance(30_000);
        t.line("NOOP").code(250);
    }
    assert_eq!(t.s.next_timeout(), Some(START_MS + PREAUTH_DEADLINE_MS));
    t.advance(PREAUTH_DEADLINE_MS - 150_000 - 1);
    assert!(t.timeout().0.is_empty());
    t.advance(1);
    t.timeout().code(421).text("4.4.2");
    assert!(t.closed);

    // Port 25 never authenticates: only the idle timeout applies there.
    let mut t = T::mx();
    t.advance(PREAUTH_DEADLINE_MS);
    t.line("NOOP").code(250);
    assert_eq!(
        t.s.next_timeout(),
        Some(START_MS + PREAUTH_DEADLINE_MS + IDLE_TIMEOUT_MS)
    );
}

#[test]
fn timeout_in_data() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(b"partial line");
    t.advance(IDLE_TIMEOUT_MS);
    t.timeout().code(421);
    assert!(t.closed);
    assert!(t.inbox(BOB).is_empty());
}

#[test]
fn output_backlog_pauses_input() {
    let mut t = T::new(Mode::Submission, true);
    let noops = "NOOP\r\n".repeat(MAX_OUTPUT_BACKLOG / 10);
    t.s.receive(noops.as_bytes(), t.now);
    assert!(!t.s.wants_input(), "output not written: stop reading");
    assert!(t.s.output().len() < MAX_OUTPUT_BACKLOG + 100);
    t.drive();
    let r = t.take();
    assert_eq!(
        r.0.len(),
        MAX_OUTPUT_BACKLOG / 10,
        "all NOOPs answered once drained"
    );
    assert!(t.s.wants_input());
}

// ---------------------------------------------------------------------------------------------
// Robustness

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Arbitrary bytes (biased to SMTP words) in arbitrary chunks never panic and always produce
    /// well-formed replies.
    #[test]
    fn arbitrary_input_never_panics(
        chunks in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..40),
                prop::sample::select(vec![
                    b"EHLO x\r\n".to_vec(), b"MAIL FROM:<alice@[127.0.0.1]>\r\n".to_vec(),
                    b"RCPT TO:<bob@[127.0.0.1]>\r\n".to_vec(), b"DATA\r\n".to_vec(),
                    b".\r\n".to_vec(), b"\r\n".to_vec(), b"\n".to_vec(), b"AUTH PLAIN\r\n".to_vec(),
                    format!("{ALICE_PLAIN}\r\n").into_bytes(), b"STARTTLS\r\n".to_vec(),
                    b"\xff\xfe\r\n".to_vec(), b"RSET\r\n".to_vec(),
                ]),
            ],
            0..30,
        ),
        tls in any::<bool>(),
        mx in any::<bool>(),
    ) {
        let mode = if mx { Mode::Mx } else { Mode::Submission };
        let mut t = T::new(mode, tls);
        t.account(ALICE);
        t.account(BOB);
        for chunk in chunks {
            t.send(&chunk);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Golden transcripts

/// A transcript: setup directives and alternating client/server lines.
struct Golden {
    path: PathBuf,
    mode: Mode,
    tls: bool,
    accounts: Vec<String>,
    /// Client input, split where the client must wait (after STARTTLS).
    segments: Vec<Vec<u8>>,
    expected: Vec<u8>,
}

fn load_goldens() -> Vec<Golden> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/smtp");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut golden = Golden {
                path: path.clone(),
                mode: Mode::Submission,
                tls: false,
                accounts: Vec::new(),
                segments: vec![Vec::new()],
                expected: Vec::new(),
            };
            for line in text.lines() {
                if let Some(c) = line.strip_prefix("C: ").or(line.strip_prefix("C:")) {
                    let segment = golden.segments.last_mut().unwrap();
                    segment.extend_from_slice(c.as_bytes());
                    segment.extend_from_slice(b"\r\n");
                    if c.eq_ignore_ascii_case("STARTTLS") {
                        golden.segments.push(Vec::new());
                    }
                } else if let Some(s) = line.strip_prefix("S: ").or(line.strip_prefix("S:")) {
                    golden.expected.extend_from_slice(s.as_bytes());
                    golden.expected.extend_from_slice(b"\r\n");
                } else if let Some(d) = line.strip_prefix('@') {
                    match d.split_whitespace().collect::<Vec<_>>()[..] {
                        ["mode", "submission"] => golden.mode = Mode::Submission,
                        ["mode", "mx"] => golden.mode = Mode::Mx,
                        ["tls"] => golden.tls = true,
                        ["account", addr] => golden.accounts.push(addr.to_owned()),
                        _ => panic!("{}: unknown directive {line:?}", path.display()),
                    }
                } else if !(line.starts_with('#') || line.trim().is_empty()) {
                    panic!("{}: unknown line {line:?}", path.display());
                }
            }
            golden
        })
        .collect()
}

/// Replays `golden`, cutting each segment at `cuts(segment_len)`; returns the server's bytes
/// after the greeting.
fn replay(golden: &Golden, cuts: &mut dyn FnMut(usize) -> Vec<usize>) -> Vec<u8> {
    let mut t = T::new(golden.mode, golden.tls);
    for addr in &golden.accounts {
        t.account(addr);
    }
    let mut transcript = std::mem::take(&mut t.transcript);
    for segment in &golden.segments {
        let mut points = cuts(segment.len());
        points.retain(|&p| p > 0 && p < segment.len());
        points.sort_unstable();
        points.dedup();
        let mut start = 0;
        for end in points.into_iter().chain([segment.len()]) {
            t.send(&segment[start..end]);
            start = end;
        }
    }
    transcript.extend_from_slice(&t.transcript);
    transcript
}

fn check(golden: &Golden, actual: &[u8], how: &str) {
    if actual != golden.expected {
        let mut out = String::new();
        for line in String::from_utf8_lossy(actual).split_terminator("\r\n") {
            out.push_str(&format!("S: {line}\n"));
        }
        std::fs::write(golden.path.with_extension("actual"), out).unwrap();
        panic!(
            "{} ({how}): server output differs; see the .actual file beside it",
            golden.path.display()
        );
    }
}

#[test]
fn golden_transcripts_whole_and_byte_by_byte() {
    let goldens = load_goldens();
    assert!(!goldens.is_empty(), "no transcripts found");
    for golden in &goldens {
        check(golden, &replay(golden, &mut |_| Vec::new()), "whole");
        check(
            golden,
            &replay(golden, &mut |len| (1..len).collect()),
            "byte by byte",
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    #[test]
    fn golden_transcripts_split_at_random_points(seed in any::<u64>()) {
        let mut state = seed | 1;
        let mut next = move || {
            // xorshift64
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for golden in &load_goldens() {
            let actual = replay(golden, &mut |len| {
                let n = (next() % 8) as usize;
                (0..n).map(|_| (next() as usize) % (len + 1)).collect()
            });
            check(golden, &actual, &format!("random splits, seed {seed}"));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Timing (not run by default)

/// Prints DATA throughput of one large message and the rate of small pipelined transactions
/// with durable (fsynced) delivery. Run:
/// `cargo test --release -p relay --lib smtp::tests::timing -- --ignored --nocapture`
#[test]
#[ignore = "timing figures; run explicitly with --release"]
fn timing() {
    use std::time::Instant;

    // 1. One ~30 MB message through the DATA receiver, fed in 64 KiB reads. The message is
    //    cleartext, so policy refuses it after parsing it: receive + policy are measured.
    let mut t = T::mx();
    t.line("MAIL FROM:<carol@[192.0.2.1]>").code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    let mut body = plain("carol@[192.0.2.1]", BOB).into_bytes();
    let line = b".a dot-stuffed line of seventy-odd characters, as base64 would be .......\r\n";
    while body.len() + line.len() < 30_000_000 {
        body.push(b'.');
        body.extend_from_slice(line);
    }
    body.extend_from_slice(b".\r\n");
    let start = Instant::now();
    for chunk in body.chunks(64 * 1024) {
        t.s.receive(chunk, t.now);
    }
    t.drive();
    let elapsed = start.elapsed();
    t.take().code(523);
    eprintln!(
        "DATA: {} bytes in {:?} = {:.0} MB/s (receive + un-stuff + policy check)",
        body.len(),
        elapsed,
        body.len() as f64 / elapsed.as_secs_f64() / 1e6
    );

    // 2. Pipelined transactions of the encrypted fixture, each delivered with an fsync.
    let n = 200;
    let mut batch = String::new();
    let from = "carol@[192.0.2.1]";
    let message = stuffed(&encrypted(from, BOB, ""));
    for _ in 0..n {
        batch.push_str(&format!(
            "MAIL FROM:<{from}>\r\nRCPT TO:<{BOB}>\r\nDATA\r\n{message}"
        ));
    }
    let start = Instant::now();
    let r = t.send(batch.as_bytes());
    let elapsed = start.elapsed();
    assert_eq!(r.0.len(), 4 * n);
    assert!(r.codes().iter().all(|&c| c == 250 || c == 354));
    eprintln!(
        "{n} transactions ({} bytes each) in {:?} = {:.0}/s, one fsynced commit each",
        message.len(),
        elapsed,
        n as f64 / elapsed.as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// More AUTH and RCPT details

#[test]
fn auth_authzid_must_match() {
    let mut t = T::new(Mode::Submission, true);
    t.account(ALICE);
    t.account(BOB);
    t.auto_effects = false;
    t.line("EHLO client.example").code(250);
    // authzid bob, authcid alice: refused without even checking the password.
    t.line("AUTH PLAIN Ym9iQFsxMjcuMC4wLjFdAGFsaWNlQFsxMjcuMC4wLjFdAHNlY3JldA==")
        .code(535);
    assert!(t.held.is_empty());
    // authzid equal to authcid (any case) is fine; the effect carries what the client sent.
    let r = t.line("AUTH PLAIN QUxJQ0VAWzEyNy4wLjAuMV0AYWxpY2VAWzEyNy4wLjAuMV0Ac2VjcmV0");
    assert!(r.0.is_empty());
    match t.held.pop() {
        Some(Effect::Login { user, password }) => {
            assert_eq!(user, ALICE);
            assert_eq!(password.0, PASSWORD);
            assert_eq!(format!("{password:?}"), "Secret(..)");
            t.run(Effect::Login { user, password });
        }
        other => panic!("expected a Login effect, got {other:?}"),
    }
    t.drive();
    t.take().code(235);
}

#[test]
fn duplicate_and_plus_recipients_get_one_copy() {
    let mut t = T::submission();
    t.line(&format!("MAIL FROM:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("RCPT TO:<Bob@[127.0.0.1]>").code(250);
    t.line("RCPT TO:<bob+chat@[127.0.0.1]>").code(250);
    t.line("DATA").code(354);
    t.send(stuffed(&encrypted(ALICE, BOB, "")).as_bytes())
        .code(250);
    assert_eq!(t.inbox(BOB).len(), 1);
}

#[test]
fn mx_has_no_per_sender_limit() {
    let mut t = T::mx();
    let burst = t.shared.config.max_user_send_burst_size;
    for _ in 0..burst * 2 {
        t.line("MAIL FROM:<carol@[192.0.2.1]>").code(250);
        t.line("RSET").code(250);
    }
    assert!(!t.closed);
}

#[test]
fn partial_quota_failure_still_250() {
    let mut t = T::with(Mode::Mx, true, |_, store| store.max_mailbox_size = 1500);
    let alice = t.account(ALICE);
    t.account(BOB);
    t.store
        .commit_now(Op::Deliver {
            recipients: vec![alice],
            sender: None,
            internal_date: 0,
            body: vec![b'x'; 1000],
        })
        .unwrap();
    t.line("EHLO other.example").code(250);
    let from = "carol@[192.0.2.1]";
    let message = encrypted(from, BOB, "");
    assert!(message.len() > 500 && message.len() < 1500);
    t.line(&format!("MAIL FROM:<{from}>")).code(250);
    t.line(&format!("RCPT TO:<{ALICE}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(stuffed(&message).as_bytes()).code(250);
    assert_eq!(t.inbox(ALICE).len(), 1, "alice keeps only the filler");
    assert_eq!(t.inbox(BOB).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Origin verification (DKIM) on port 25: the session asks, the driver answers

const SIGNED_FROM: &str = "carol@_s1.test";
/// A stand-in `DKIM-Signature` field: these tests decide the verdict themselves.
const FAKE_SIGNATURE: &str =
    "DKIM-Signature: v=1; a=rsa-sha256; d=_s1.test; s=opendkim; h=From; bh=AA==; b=AA==\r\n";

/// An encrypted message from `SIGNED_FROM` to bob with a `DKIM-Signature` field.
fn signed_message() -> String {
    format!("{FAKE_SIGNATURE}{}", encrypted(SIGNED_FROM, BOB, ""))
}

/// MAIL, RCPT bob, DATA with `message`; returns the reply to the end of DATA.
fn mx_send(t: &mut T, mail_from: &str, message: &str) -> Replies {
    t.line(&format!("MAIL FROM:<{mail_from}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    t.send(stuffed(message).as_bytes())
}

#[test]
fn mx_verifies_origin_of_a_named_domain_then_delivers() {
    let mut t = T::mx();
    let message = signed_message();
    mx_send(&mut t, SIGNED_FROM, &message).code(250);
    assert_eq!(t.origin_checks.len(), 1);
    let (domain, checked) = &t.origin_checks[0];
    assert_eq!(domain, "_s1.test");
    // The driver sees the message as received, signature included.
    assert_eq!(checked, message.as_bytes());
    let inbox = t.inbox(BOB);
    assert_eq!(inbox.len(), 1);
    // Delivered without the DKIM-Signature field (reference lmtp_header_checks).
    let stored = String::from_utf8(inbox[0].clone()).unwrap();
    assert!(!stored.contains("DKIM-Signature"), "{stored}");
    assert!(stored.contains("From: <carol@_s1.test>"));
}

#[test]
fn mx_refuses_each_failed_origin_verdict_and_goes_on() {
    for (verdict, code, text) in [
        (Verdict::NoSignature, 554, "5.7.1 No DKIM signature found"),
        (
            Verdict::NoValidSignature,
            554,
            "5.7.1 No valid DKIM signature found",
        ),
        (Verdict::Temporary, 451, "4.7.0 "),
    ] {
        let mut t = T::mx();
        t.origin = verdict;
        mx_send(&mut t, SIGNED_FROM, &signed_message())
            .code(code)
            .text(text);
        assert_eq!(t.origin_checks.len(), 1, "{verdict:?}");
        assert!(t.inbox(BOB).is_empty(), "{verdict:?}: nothing delivered");
        assert!(!t.closed);
        // The session takes the next transaction.
        t.origin = Verdict::Pass;
        mx_send(&mut t, SIGNED_FROM, &signed_message()).code(250);
        assert_eq!(t.inbox(BOB).len(), 1, "{verdict:?}");
    }
}

#[test]
fn mx_domain_literal_from_is_not_origin_checked() {
    let mut t = T::mx();
    t.origin = Verdict::NoSignature; // would refuse, were it asked
    let from = "carol@[192.0.2.1]";
    mx_send(&mut t, from, &encrypted(from, BOB, "")).code(250);
    assert!(t.origin_checks.is_empty());
    assert_eq!(t.inbox(BOB).len(), 1);
}

#[test]
fn mx_cleartext_is_refused_before_any_origin_check() {
    let mut t = T::mx();
    let message = format!("{FAKE_SIGNATURE}{}", plain(SIGNED_FROM, BOB));
    mx_send(&mut t, SIGNED_FROM, &message)
        .code(523)
        .text("Encryption Needed");
    assert!(t.origin_checks.is_empty(), "no DNS work for cleartext");
}

#[test]
fn mx_mailer_daemon_report_is_origin_checked() {
    const REPORT: &str = include_str!("../../testdata/mail/mailer-daemon.eml");
    let message = REPORT
        .replace("MAILER-DAEMON@example.net", "MAILER-DAEMON@_s1.test")
        .replace("alice@example.org", BOB)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let mut t = T::mx();
    t.origin = Verdict::NoValidSignature;
    mx_send(&mut t, "", &message).code(554);
    t.origin = Verdict::Pass;
    mx_send(&mut t, "", &message).code(250);
    let domains: Vec<_> = t.origin_checks.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(domains, ["_s1.test", "_s1.test"]);
    assert_eq!(t.inbox(BOB).len(), 1);
}

#[test]
fn mx_checks_the_from_domain_not_the_envelope_sender() {
    let mut t = T::mx();
    mx_send(&mut t, "bounces@forwarder.test", &signed_message()).code(250);
    assert_eq!(t.origin_checks[0].0, "_s1.test");
    assert_eq!(t.inbox(BOB).len(), 1);
}

#[test]
fn no_input_while_the_origin_check_is_pending() {
    let mut t = T::mx();
    t.auto_effects = false;
    t.line(&format!("MAIL FROM:<{SIGNED_FROM}>")).code(250);
    t.line(&format!("RCPT TO:<{BOB}>")).code(250);
    t.line("DATA").code(354);
    let mut input = stuffed(&signed_message());
    input.push_str("NOOP\r\n");
    assert!(t.send(input.as_bytes()).0.is_empty(), "no reply yet");
    assert!(!t.s.wants_input());
    assert_eq!(
        t.s.next_timeout(),
        None,
        "no idle timeout while the driver works"
    );
    let Some(Effect::VerifyOrigin {
        message,
        from_domain,
    }) = t.held.pop()
    else {
        panic!("a VerifyOrigin effect, got {:?}", t.held);
    };
    assert_eq!(from_domain, "_s1.test");
    t.s.complete(
        EffectResult::Origin {
            message,
            verdict: Verdict::Pass,
        },
        t.now,
    );
    t.drive();
    assert!(t.take().0.is_empty(), "the write comes first");
    let Some(Effect::Commit(Op::Deliver {
        recipients, body, ..
    })) = t.held.pop()
    else {
        panic!("a Deliver effect");
    };
    assert_eq!(recipients, [t.account(BOB)]);
    assert!(!body.starts_with(b"DKIM-Signature"));
    t.run(Effect::Commit(Op::Deliver {
        recipients,
        sender: None,
        internal_date: 0,
        body,
    }));
    t.drive();
    let replies = t.take();
    assert_eq!(
        replies.codes(),
        [250, 250],
        "delivered, then the pipelined NOOP"
    );
}

#[test]
fn a_wrong_effect_result_is_a_temporary_failure() {
    let mut t = T::mx();
    t.auto_effects = false;
    mx_send(&mut t, SIGNED_FROM, &signed_message());
    assert!(matches!(t.held.pop(), Some(Effect::VerifyOrigin { .. })));
    t.s.complete(EffectResult::Login(Err(LoginError::Failed)), t.now);
    t.drive();
    t.take().code(451);
    assert!(t.inbox(BOB).is_empty());
}
