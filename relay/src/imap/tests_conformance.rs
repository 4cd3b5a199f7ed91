//! RFC 3501 conformance tests that need more than one session on a store: `\Recent`
//! (§2.3.2). Sessions run over a `MemoryStore`; effects are run inline.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::sync::Arc;

use super::Session;
use crate::config::Config;
use crate::session::{Action, Effect, EffectResult, Session as _};
use crate::shared::Shared;
use crate::store::{AccountId, Mailstore as _, MemoryStore, Op, OpResult, StoreConfig};

const T0: u64 = 1_700_000_000_000;
const USER: &str = "user@x";

fn shared(dir: &std::path::Path) -> (Arc<Shared>, MemoryStore) {
    let config = Config::dev(dir.to_path_buf());
    let store = MemoryStore::new(&StoreConfig::default());
    (
        Arc::new(Shared::new(config, Arc::new(store.clone()))),
        store,
    )
}

fn account(store: &MemoryStore) -> AccountId {
    if let Some(a) = store.account(USER) {
        return a.id;
    }
    match store
        .commit_now(Op::CreateAccount {
            addr: USER.into(),
            password_hash: "{SHA512-CRYPT}x".into(),
            now: 0,
        })
        .expect("account created")
    {
        OpResult::AccountCreated(id) => id,
        other => panic!("unexpected {other:?}"),
    }
}

fn deliver(store: &MemoryStore, subject: &str) {
    let id = account(store);
    store
        .commit_now(Op::Deliver {
            recipients: vec![id],
            sender: None,
            internal_date: (T0 / 1000) as i64,
            body: format!("From: a@b\r\nSubject: {subject}\r\n\r\nbody\r\n").into_bytes(),
        })
        .expect("delivered");
}

/// One logged-in session.
struct Conn {
    store: MemoryStore,
    s: Session,
}

impl Conn {
    fn new((shared, store): &(Arc<Shared>, MemoryStore)) -> Conn {
        let mut c = Conn {
            store: store.clone(),
            s: Session::new(shared.clone(), true, T0),
        };
        c.drive();
        let r = c.cmd("l1 LOGIN user@x password123");
        assert!(r.contains("l1 OK"), "{r}");
        c
    }

    fn drive(&mut self) -> String {
        let mut text = Vec::new();
        loop {
            text.extend_from_slice(self.s.output());
            let n = self.s.output().len();
            self.s.consume_output(n);
            match self.s.poll_action() {
                Some(Action::Effect(Effect::Commit(op))) => {
                    let r = self.store.commit_now(op);
                    self.s.complete(EffectResult::Commit(r), T0);
                }
                Some(Action::Effect(Effect::Login { .. })) => {
                    let id = account(&self.store);
                    self.s.complete(EffectResult::Login(Ok(id)), T0);
                }
                Some(other) => panic!("unexpected action {other:?}"),
                None if self.s.output().is_empty() => break,
                None => {}
            }
        }
        String::from_utf8(text).unwrap()
    }

    /// Send one line; all output since, with CRLF line ends as `\n`.
    fn cmd(&mut self, line: &str) -> String {
        self.s.receive(format!("{line}\r\n").as_bytes(), T0);
        self.drive().replace("\r\n", "\n")
    }

    /// A store change seen by the driver (as while idling).
    fn changed(&mut self) -> String {
        self.s.account_changed(T0);
        self.drive().replace("\r\n", "\n")
    }
}

/// The SELECT/EXAMINE output lines that mention EXISTS and RECENT.
fn counts(select: &str) -> Vec<&str> {
    select
        .lines()
        .filter(|l| l.ends_with(" EXISTS") || l.ends_with(" RECENT"))
        .collect()
}

#[test]
fn recent_belongs_to_the_first_session() {
    let dir = tempfile::tempdir().unwrap();
    let shared = shared(dir.path());
    deliver(&shared.1, "one");
    deliver(&shared.1, "two");

    // Nobody has seen them: STATUS counts both, EXAMINE shows them recent but takes nothing.
    let mut c = Conn::new(&shared);
    assert_eq!(
        c.cmd("s1 STATUS INBOX (MESSAGES RECENT)"),
        "* STATUS INBOX (MESSAGES 2 RECENT 2)\ns1 OK Status completed\n"
    );
    assert_eq!(
        counts(&c.cmd("s2 EXAMINE INBOX")),
        ["* 2 EXISTS", "* 2 RECENT"]
    );
    assert_eq!(
        c.cmd("s3 FETCH 1:* FLAGS"),
        "* 1 FETCH (FLAGS (\\Recent))\n* 2 FETCH (FLAGS (\\Recent))\ns3 OK Fetch completed\n"
    );
    assert_eq!(c.cmd("s4 UNSELECT"), "s4 OK Unselect completed\n");

    // The first SELECT takes them.
    let mut a = Conn::new(&shared);
    assert_eq!(
        counts(&a.cmd("a1 SELECT INBOX")),
        ["* 2 EXISTS", "* 2 RECENT"]
    );
    assert_eq!(
        a.cmd("a2 FETCH 1:* (FLAGS)"),
        "* 1 FETCH (FLAGS (\\Recent))\n* 2 FETCH (FLAGS (\\Recent))\na2 OK Fetch completed\n"
    );
    assert_eq!(
        a.cmd("a3 SEARCH RECENT"),
        "* SEARCH 1 2\na3 OK Search completed\n"
    );
    assert_eq!(a.cmd("a4 SEARCH OLD"), "* SEARCH\na4 OK Search completed\n");

    // A second session sees them, but not as recent.
    let mut b = Conn::new(&shared);
    assert_eq!(
        counts(&b.cmd("b1 SELECT INBOX")),
        ["* 2 EXISTS", "* 0 RECENT"]
    );
    assert_eq!(
        b.cmd("b2 FETCH 1 FLAGS"),
        "* 1 FETCH (FLAGS ())\nb2 OK Fetch completed\n"
    );
    assert_eq!(
        b.cmd("b3 SEARCH RECENT"),
        "* SEARCH\nb3 OK Search completed\n"
    );
    assert_eq!(
        b.cmd("b4 SEARCH OLD"),
        "* SEARCH 1 2\nb4 OK Search completed\n"
    );
    assert_eq!(
        b.cmd("b5 STATUS INBOX (RECENT)"),
        "* STATUS INBOX (RECENT 0)\nb5 OK Status completed\n"
    );
    assert_eq!(
        c.cmd("c1 STATUS INBOX (RECENT)"),
        "* STATUS INBOX (RECENT 0)\nc1 OK Status completed\n"
    );
    assert_eq!(
        counts(&c.cmd("c2 EXAMINE INBOX")),
        ["* 2 EXISTS", "* 0 RECENT"]
    );

    // NEW is RECENT UNSEEN; FLAGS keep \Recent next to the stored flags.
    assert_eq!(
        a.cmd("a5 STORE 1 +FLAGS (\\Seen)"),
        "* 1 FETCH (FLAGS (\\Seen \\Recent))\na5 OK Store completed\n"
    );
    assert_eq!(
        a.cmd("a6 SEARCH NEW"),
        "* SEARCH 2\na6 OK Search completed\n"
    );
    assert_eq!(
        a.cmd("a7 SEARCH NOT NEW"),
        "* SEARCH 1\na7 OK Search completed\n"
    );
    assert_eq!(
        a.cmd("a8 STATUS INBOX (RECENT)"),
        "* STATUS INBOX (RECENT 2)\na8 OK Status completed\n"
    );
    // The other session gets the flag change without \Recent.
    assert_eq!(
        b.cmd("b6 NOOP"),
        "* 1 FETCH (FLAGS (\\Seen) UID 1)\nb6 OK NOOP completed\n"
    );

    // A new message is recent for whichever session syncs first: here b, then not for a.
    deliver(&shared.1, "three");
    assert_eq!(
        b.cmd("b7 NOOP"),
        "* 3 EXISTS\n* 1 RECENT\nb7 OK NOOP completed\n"
    );
    assert_eq!(a.cmd("a9 NOOP"), "* 3 EXISTS\na9 OK NOOP completed\n");
    assert_eq!(
        a.cmd("aa SEARCH RECENT"),
        "* SEARCH 1 2\naa OK Search completed\n"
    );
    assert_eq!(
        b.cmd("b8 SEARCH RECENT"),
        "* SEARCH 3\nb8 OK Search completed\n"
    );

    // COPY into the selected mailbox: the copy is recent for the session that copied.
    assert_eq!(
        a.cmd("ab COPY 2 INBOX"),
        format!(
            "* 4 EXISTS\n* 3 RECENT\nab OK [COPYUID {v} 2 4] Copy completed\n",
            v = shared
                .1
                .mailbox_view(account(&shared.1), "INBOX")
                .unwrap()
                .uid_validity
        )
    );
    assert_eq!(a.cmd("ac NOOP"), "ac OK NOOP completed\n");
    assert_eq!(
        a.cmd("ad FETCH 4 FLAGS"),
        "* 4 FETCH (FLAGS (\\Recent))\nad OK Fetch completed\n"
    );
    assert_eq!(b.cmd("b9 NOOP"), "* 4 EXISTS\nb9 OK NOOP completed\n");

    // While idling, a delivery is reported with the new count.
    assert_eq!(b.cmd("ba IDLE"), "+ idling\n");
    deliver(&shared.1, "four");
    assert_eq!(b.changed(), "* 5 EXISTS\n* 2 RECENT\n");
    assert_eq!(b.cmd("DONE"), "ba OK Idle completed\n");

    // Expunging a recent message lowers the count.
    assert_eq!(a.cmd("ae NOOP"), "* 5 EXISTS\nae OK NOOP completed\n");
    assert_eq!(
        a.cmd("af STORE 4 +FLAGS.SILENT (\\Deleted)"),
        "af OK Store completed\n"
    );
    assert_eq!(
        a.cmd("ag EXPUNGE"),
        "* 4 EXPUNGE\n* 2 RECENT\nag OK Expunge completed\n"
    );

    // No session holds a recent message twice; EXAMINE after all that still takes nothing.
    assert_eq!(
        counts(&c.cmd("c3 EXAMINE INBOX")),
        ["* 4 EXISTS", "* 0 RECENT"]
    );
}
