//! Session tests: an `imap::Session` paired with a `MemoryStore` (the store's own tests keep the
//! disk). Effects are run inline: commits with `store.commit_now`, logins by creating or looking
//! up the account (login rules are tested in `accounts`). One-liners like
//! `t.cmd("a1 SELECT INBOX").ok()`.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;
use std::sync::Arc;

use rand::{Rng, SeedableRng};

use super::session::PRELOGIN_DEADLINE_MS;
use super::Session;
use crate::config::Config;
use crate::session::{Action, Effect, EffectResult, Session as _};
use crate::shared::Shared;
use crate::store::{AccountId, Mailstore as _, MemoryStore, Op, OpResult, StoreConfig};

const T0: u64 = 1_700_000_000_000;

struct T {
    _dir: tempfile::TempDir,
    shared: Arc<Shared>,
    store: MemoryStore,
    s: Session,
    now: u64,
    /// Actions other than effects, in order.
    actions: Vec<String>,
    closed: bool,
    /// Complete STARTTLS handshakes automatically.
    auto_tls: bool,
    /// The greeting was checked.
    greeted: bool,
}

/// Output of one exchange.
#[derive(Debug)]
struct Reply {
    tag: String,
    text: String,
}

impl Reply {
    fn lines(&self) -> Vec<&str> {
        self.text.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    fn tagged(&self) -> &str {
        self.lines()
            .into_iter()
            .rev()
            .find(|l| l.starts_with(&format!("{} ", self.tag)))
            .unwrap_or_else(|| panic!("no tagged reply for {} in {:?}", self.tag, self.text))
    }

    #[track_caller]
    fn status(&self, want: &str) -> &Self {
        let t = self.tagged();
        assert!(
            t.starts_with(&format!("{} {want}", self.tag)),
            "expected {want}, got {t:?} in\n{}",
            self.text
        );
        self
    }

    #[track_caller]
    fn ok(&self) -> &Self {
        self.status("OK")
    }

    #[track_caller]
    fn no(&self) -> &Self {
        self.status("NO")
    }

    #[track_caller]
    fn bad(&self) -> &Self {
        self.status("BAD")
    }

    /// Some line contains `s`.
    #[track_caller]
    fn has(&self, s: &str) -> &Self {
        assert!(self.text.contains(s), "{s:?} not in\n{}", self.text);
        self
    }

    #[track_caller]
    fn lacks(&self, s: &str) -> &Self {
        assert!(
            !self.text.contains(s),
            "{s:?} unexpectedly in\n{}",
            self.text
        );
        self
    }

    /// Untagged lines (starting with `* `).
    fn untagged(&self) -> Vec<&str> {
        self.lines()
            .into_iter()
            .filter(|l| l.starts_with("* "))
            .collect()
    }
}

fn shared_in(dir: &Path, edit: impl FnOnce(&mut Config)) -> (Arc<Shared>, MemoryStore) {
    let mut config = Config::dev(dir.to_path_buf());
    edit(&mut config);
    let store = MemoryStore::new(&StoreConfig {
        max_mailbox_size: config.max_mailbox_size,
        max_mailbox_messages: config.max_mailbox_messages,
        ..StoreConfig::default()
    });
    (
        Arc::new(Shared::new(config, Arc::new(store.clone()))),
        store,
    )
}

impl T {
    fn new() -> T {
        Self::with(true, |_| {})
    }

    fn plain() -> T {
        Self::with(false, |_| {})
    }

    fn with(tls: bool, edit: impl FnOnce(&mut Config)) -> T {
        let dir = tempfile::tempdir().expect("tempdir");
        let (shared, store) = shared_in(dir.path(), edit);
        let s = Session::new(shared.clone(), tls, T0);
        T {
            _dir: dir,
            shared,
            store,
            s,
            now: T0,
            actions: Vec::new(),
            closed: false,
            auto_tls: true,
            greeted: false,
        }
    }

    /// Another session on the same store.
    fn second(&self) -> Session {
        Session::new(self.shared.clone(), true, self.now)
    }

    fn store(&self) -> &MemoryStore {
        &self.store
    }

    /// Run actions until none is left; return the output produced.
    fn drive(&mut self) -> String {
        let mut text = Vec::new();
        loop {
            text.extend_from_slice(self.s.output());
            let n = self.s.output().len();
            self.s.consume_output(n);
            let Some(a) = self.s.poll_action() else {
                if self.s.output().is_empty() {
                    break;
                }
                continue;
            };
            match a {
                Action::Effect(Effect::Commit(op)) => {
                    let r = self.store.commit_now(op);
                    self.s.complete(EffectResult::Commit(r), self.now);
                }
                Action::Effect(Effect::Login { user, .. }) => {
                    let id = login_account(&self.store, &user);
                    self.s.complete(EffectResult::Login(Ok(id)), self.now);
                }
                Action::Effect(effect @ Effect::VerifyOrigin { .. }) => {
                    panic!("IMAP asked for {effect:?}")
                }
                Action::StartTls => {
                    self.actions.push("StartTls".into());
                    if self.auto_tls {
                        text.extend_from_slice(self.s.output());
                        let n = self.s.output().len();
                        self.s.consume_output(n);
                        self.s.tls_established();
                    }
                }
                Action::StartCompress => self.actions.push("StartCompress".into()),
                Action::Close => {
                    self.actions.push("Close".into());
                    self.closed = true;
                }
            }
        }
        assert_valid_responses(&text, !self.greeted);
        self.greeted = true;
        String::from_utf8_lossy(&text).into_owned()
    }

    fn send(&mut self, bytes: &[u8]) -> String {
        self.s.receive(bytes, self.now);
        self.drive()
    }

    /// Send one command line (CRLF added); the reply holds everything output since.
    fn cmd(&mut self, line: &str) -> Reply {
        let tag = line.split(' ').next().unwrap_or("").to_owned();
        let text = self.send(format!("{line}\r\n").as_bytes());
        Reply { tag, text }
    }

    /// Raw bytes; the reply is checked for `tag`.
    fn raw(&mut self, tag: &str, bytes: &[u8]) -> Reply {
        let text = self.send(bytes);
        Reply {
            tag: tag.into(),
            text,
        }
    }

    fn login(&mut self, user: &str) -> AccountId {
        self.cmd(&format!("l1 LOGIN {user} password123")).ok();
        self.store().account(user).expect("account exists").id
    }

    fn deliver(&self, account: AccountId, body: &str) -> u32 {
        match self
            .store()
            .commit_now(Op::Deliver {
                recipients: vec![account],
                sender: None,
                internal_date: (self.now / 1000) as i64,
                body: body.as_bytes().to_vec(),
            })
            .expect("deliver commits")
        {
            OpResult::Delivered(r) => r[0].expect("delivered"),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Every response the server wrote must parse with imap-codec's (independent, strict) grammar.
#[track_caller]
fn assert_valid_responses(out: &[u8], greeting: bool) {
    use imap_codec::decode::Decoder as _;
    use imap_codec::fragmentizer::Fragmentizer;
    use imap_codec::{GreetingCodec, ResponseCodec};
    let mut f = Fragmentizer::without_max_message_size();
    f.enqueue_bytes(out);
    let mut first = greeting;
    while f.progress().is_some() {
        if !f.is_message_complete() {
            continue;
        }
        let err = if first {
            f.decode_message(&GreetingCodec::default())
                .err()
                .map(|e| format!("{e:?}"))
        } else if f.message_bytes().starts_with(b"* STATUS ") {
            // STATUS SIZE (RFC 8438) needs imap-codec's `ext_status_size`, which this workspace
            // does not enable: check the line without that item.
            let mut line = String::from_utf8_lossy(f.message_bytes()).into_owned();
            if let Some(i) = line.find("SIZE ") {
                let digits = line[i + 5..].bytes().take_while(u8::is_ascii_digit).count();
                let mut end = i + 5 + digits;
                let mut start = i;
                if line[end..].starts_with(' ') {
                    end += 1;
                } else if line[..start].ends_with(' ') {
                    start -= 1;
                }
                line.replace_range(start..end, "");
            }
            ResponseCodec::default()
                .decode(line.as_bytes())
                .err()
                .map(|e| format!("{e:?}"))
        } else {
            f.decode_message(&ResponseCodec::default())
                .err()
                .map(|e| format!("{e:?}"))
        };
        first = false;
        assert!(
            err.is_none(),
            "invalid response {:?}: {err:?}",
            String::from_utf8_lossy(f.message_bytes())
        );
    }
}

fn login_account(store: &MemoryStore, user: &str) -> AccountId {
    let addr = user.to_ascii_lowercase();
    if let Some(a) = store.account(&addr) {
        return a.id;
    }
    match store
        .commit_now(Op::CreateAccount {
            addr: addr.clone(),
            password_hash: "{SHA512-CRYPT}x".into(),
            now: 0,
        })
        .expect("account created")
    {
        OpResult::AccountCreated(id) => id,
        other => panic!("unexpected {other:?}"),
    }
}

fn msg(subject: &str, body: &str) -> String {
    format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\n\
         Date: Thu, 2 Jan 2025 10:00:00 +0000\r\nMessage-ID: <{subject}@example.org>\r\n\r\n{body}\r\n"
    )
}

#[test]
fn greeting_and_capabilities() {
    let mut t = T::new();
    let g = t.drive();
    assert!(g.starts_with("* OK [CAPABILITY IMAP4rev1 "), "{g}");
    assert!(g.ends_with("127.0.0.1 chatmail relay ready\r\n"), "{g}");
    for c in [
        "IDLE",
        "UIDPLUS",
        "MOVE",
        "CONDSTORE",
        "ENABLE",
        "ID",
        "NAMESPACE",
        "LITERAL+",
        "SASL-IR",
        "AUTH=PLAIN",
        "SPECIAL-USE",
        "QUOTA",
        "METADATA",
        "XCHATMAIL",
        "XDELTAPUSH",
    ] {
        assert!(
            g.contains(&format!(" {c} ")) || g.contains(&format!(" {c}]")),
            "{c} in {g}"
        );
    }
    assert!(!g.contains("STARTTLS") && !g.contains("COMPRESS"));
    t.cmd("a CAPABILITY").ok().has("* CAPABILITY IMAP4rev1");

    let mut p = T::plain();
    let g = p.drive();
    assert!(g.contains(" STARTTLS LOGINDISABLED"), "{g}");
    assert!(!g.contains("AUTH=PLAIN"));

    let mut c = T::with(true, |c| c.imap_compress = true);
    assert!(c.drive().contains("COMPRESS=DEFLATE"));
}

#[test]
fn login_refused_before_tls_then_starttls() {
    let mut t = T::plain();
    t.drive();
    t.cmd("a LOGIN user@x pw")
        .no()
        .has("a NO [PRIVACYREQUIRED]");
    t.cmd("b AUTHENTICATE PLAIN AHVAeABwdw==")
        .no()
        .has("PRIVACYREQUIRED");
    t.cmd("c SELECT INBOX").bad();
    t.cmd("d STARTTLS").ok();
    assert_eq!(t.actions, vec!["StartTls"]);
    t.cmd("e CAPABILITY")
        .ok()
        .has("AUTH=PLAIN")
        .lacks("STARTTLS");
    t.cmd("f STARTTLS").bad();
    t.login("user@x");
}

#[test]
fn starttls_discards_pipelined_input() {
    let mut t = T::plain();
    t.auto_tls = false;
    t.drive();
    // An attacker's injected command rides behind STARTTLS in the same segment.
    let r = t.raw("a", b"a STARTTLS\r\nb LOGIN evil@x pw\r\n");
    r.ok().lacks("b ");
    assert_eq!(t.actions, vec!["StartTls"]);
    assert!(!t.s.wants_input());
    // Plaintext arriving before the handshake completes is dropped as well.
    assert_eq!(t.send(b"c NOOP\r\n"), "");
    t.s.tls_established();
    assert!(t.s.wants_input());
    assert_eq!(t.drive(), "");
    t.cmd("d NOOP").ok();
    assert!(t.store().account("evil@x").is_none());
}

#[test]
fn authenticate_plain_variants() {
    let mut t = T::new();
    t.drive();
    // SASL-IR: "\0user@x\0password123"
    t.cmd("a AUTHENTICATE PLAIN AHVzZXJAeABwYXNzd29yZDEyMw==")
        .ok()
        .has("a OK [CAPABILITY");
    assert_eq!(
        t.s.watched_account(),
        t.store().account("user@x").map(|a| a.id)
    );
    let mut t = T::new();
    t.drive();
    t.cmd("a AUTHENTICATE PLAIN").has("+ ");
    t.raw("a", b"AHVzZXJAeABwYXNzd29yZDEyMw==\r\n").ok();
    let mut t = T::new();
    t.drive();
    t.cmd("a AUTHENTICATE PLAIN");
    t.raw("a", b"!!notbase64\r\n").bad();
    t.cmd("b AUTHENTICATE PLAIN");
    t.raw("b", b"*\r\n").bad();
    t.cmd("c AUTHENTICATE CRAM-MD5").no();
    t.cmd("d AUTHENTICATE PLAIN @@@").bad();
    assert_eq!(t.s.watched_account(), None);
}

#[test]
fn misc_commands() {
    let mut t = T::new();
    t.drive();
    t.cmd("a NOOP").ok();
    t.cmd("a2 LIST \"\" *").bad().has("log in");
    t.login("u1@x");
    t.cmd("b ID (\"name\" \"Delta Chat\")")
        .ok()
        .has("* ID (\"name\" \"relay\")");
    t.cmd("c ENABLE CONDSTORE").ok().has("* ENABLED CONDSTORE");
    t.cmd("d NAMESPACE")
        .ok()
        .has("* NAMESPACE ((\"\" \"/\")) NIL NIL");
    t.cmd("e FROBNICATE").bad();
    t.cmd("f FETCH 1 FLAGS").bad().has("No mailbox selected");
    t.cmd("g LOGIN a b").bad();
    t.raw("*", b"\xff\xfe garbage\r\n").bad();
    t.raw("h", b"h LOGIN \"\xc3\x28\" x\r\n").bad();
    t.cmd("i CHECK").bad();
    t.cmd("j LOGOUT").ok().has("* BYE");
    assert!(t.closed);
}

#[test]
fn list_create_rename_delete_subscribe() {
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    t.cmd("a LIST \"\" \"\"")
        .ok()
        .has("* LIST (\\Noselect) \"/\" \"\"");
    for n in [
        "Sent",
        "Drafts",
        "Trash",
        "Junk",
        "DeltaChat",
        "DeltaChat/sub",
    ] {
        t.cmd(&format!("c CREATE {n}")).ok();
    }
    t.cmd("c CREATE Sent").no().has("ALREADYEXISTS");
    t.cmd("c2 CREATE inbox").no();
    t.cmd("c3 CREATE \"a*b\"").no().has("CANNOT");
    t.cmd("c4 CREATE a//b").no().has("CANNOT");
    t.cmd("c5 RENAME INBOX Foo").no();
    t.cmd("c6 RENAME Sent inbox").no();
    let r = t.cmd("d LIST \"\" *");
    r.ok()
        .has("* LIST (\\HasNoChildren) \"/\" INBOX")
        .has("* LIST (\\HasNoChildren \\Sent) \"/\" Sent")
        .has("\\Drafts) \"/\" Drafts")
        .has("\\Trash) \"/\" Trash")
        .has("\\Junk) \"/\" Junk")
        .has("* LIST (\\HasChildren) \"/\" DeltaChat\r\n")
        .has("* LIST (\\HasNoChildren) \"/\" DeltaChat/sub");
    t.cmd("e LIST \"\" %").ok().lacks("DeltaChat/sub");
    t.cmd("f RENAME DeltaChat/sub Other").ok();
    t.cmd("g LIST \"\" Oth*").ok().has("\"/\" Other");
    t.cmd("h RENAME Nope X").no().has("NONEXISTENT");
    t.cmd("h2 RENAME Other Sent").no().has("ALREADYEXISTS");
    t.cmd("i DELETE Other").ok();
    t.cmd("j LIST \"\" *").ok().lacks("Other");
    t.cmd("k DELETE INBOX").no();
    t.cmd("l DELETE Nope").no();
    t.cmd("m SUBSCRIBE Sent").ok();
    t.cmd("n LSUB \"\" *").ok().has("* LSUB () \"/\" Sent");
    t.cmd("o UNSUBSCRIBE Sent").ok();
    t.cmd("p LSUB \"\" *").ok().lacks("Sent");
}

#[test]
fn select_status_and_examine() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    t.deliver(acc, &msg("one", "1"));
    t.deliver(acc, &msg("two", "2"));
    let r = t.cmd("a SELECT INBOX");
    r.ok()
        .has("a OK [READ-WRITE]")
        .has("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)")
        .has("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]")
        .has("* 2 EXISTS")
        .has("* 2 RECENT")
        .has("* OK [UNSEEN 1]")
        .has("* OK [UIDVALIDITY ")
        .has("* OK [UIDNEXT 3]")
        .has("* OK [HIGHESTMODSEQ ");
    t.cmd("b STATUS INBOX (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT HIGHESTMODSEQ SIZE)")
        .ok()
        .has("* STATUS INBOX (MESSAGES 2 UIDNEXT 3 UIDVALIDITY ")
        .has("UNSEEN 2 RECENT 2 HIGHESTMODSEQ ");
    t.cmd("c STATUS Nope (MESSAGES)").no();
    t.cmd("d EXAMINE INBOX (CONDSTORE)")
        .ok()
        .has("d OK [READ-ONLY]");
    t.cmd("e STORE 1 +FLAGS (\\Seen)").no();
    t.cmd("f FETCH 1 BODY[TEXT]").ok();
    // EXAMINE does not set \Seen.
    t.cmd("g FETCH 1 FLAGS")
        .ok()
        .has("* 1 FETCH (FLAGS () MODSEQ (");
    t.cmd("h SELECT Nope").no().has("NONEXISTENT");
    t.cmd("i FETCH 1 FLAGS").bad();
    t.cmd("j SELECT INBOX").ok();
    t.cmd("j2 CHECK").ok();
    t.cmd("k UNSELECT").ok();
    t.cmd("l FETCH 1 FLAGS").bad();
    t.cmd("m SELECT INBOX").ok();
    t.cmd("n CLOSE").ok();
    t.cmd("o NOOP").ok();
}

#[test]
fn fetch_items_and_sections() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    let m = msg("hello", "world");
    t.deliver(acc, &m);
    t.cmd("a SELECT INBOX").ok();
    let r = t.cmd("b FETCH 1 (UID FLAGS RFC822.SIZE INTERNALDATE)");
    r.ok().has(&format!(
        "* 1 FETCH (UID 1 FLAGS (\\Recent) RFC822.SIZE {} INTERNALDATE \"14-Nov-2023 22:13:20 +0000\")",
        m.len()
    ));
    t.cmd("c UID FETCH 1 ENVELOPE")
        .ok()
        .has("ENVELOPE (\"Thu, 2 Jan 2025 10:00:00 +0000\" \"hello\" ((\"Alice\" NIL \"alice\" \"example.org\"))")
        .has("\"<hello@example.org>\")");
    t.cmd("d FETCH 1 BODYSTRUCTURE")
        .ok()
        .has("BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7BIT\" 7 1 NIL NIL NIL NIL)");
    t.cmd("d2 FETCH 1 BODY")
        .ok()
        .has("BODY (\"text\" \"plain\" NIL NIL NIL \"7BIT\" 7 1)");
    t.cmd("e FETCH 1 BODY.PEEK[HEADER.FIELDS (Subject)]")
        .ok()
        .has("BODY[HEADER.FIELDS (Subject)] {18}\r\nSubject: hello\r\n\r\n");
    t.cmd("f FETCH 1 BODY.PEEK[TEXT]<1.3>")
        .ok()
        .has("BODY[TEXT]<1> {3}\r\norl");
    t.cmd("g FETCH 1 (FLAGS)").ok().has("FLAGS (\\Recent)");
    t.cmd("h FETCH 1 (RFC822.HEADER MODSEQ)")
        .ok()
        .has("RFC822.HEADER {")
        .has("MODSEQ (");
    t.cmd("h2 FETCH 1 BODY.PEEK[1]")
        .ok()
        .has("BODY[1] {7}\r\nworld\r\n");
    t.cmd("h3 FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (From To Date Message-ID)]")
        .ok()
        .has("{18}\r\nSubject: hello\r\n\r\n");
    t.cmd("h4 FETCH 1 ALL").ok().has("ENVELOPE");
    t.cmd("h5 FETCH 1 FULL").ok().has("BODY (");
    t.cmd("h6 FETCH 1 FAST").ok().lacks("ENVELOPE");
    // Non-PEEK sets \Seen and reports FLAGS.
    t.cmd("i FETCH 1 BODY[]")
        .ok()
        .has(&format!("BODY[] {{{}}}\r\n{m}", m.len()))
        .has("FLAGS (\\Seen \\Recent)");
    t.cmd("j FETCH 1 FLAGS").ok().has("FLAGS (\\Seen \\Recent)");
    t.cmd("k FETCH 1 RFC822").ok().has("RFC822 {");
    t.cmd("l FETCH 1 RFC822.TEXT").ok().has("RFC822.TEXT {7}");
    t.cmd("m FETCH 2 FLAGS").bad();
    t.cmd("n UID FETCH 5 FLAGS").ok().lacks("FETCH (");
    t.cmd("o UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)")
        .ok()
        .has("MODSEQ (");
    t.cmd("p FETCH 1 BODY[9]").ok().has("BODY[9] {0}");
}

#[test]
fn multipart_fetch() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    let m = "Subject: mp\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
Content-Type: text/plain\r\n\r\npart one\r\n--b1\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n\
--b2\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n--b2--\r\n--b1--\r\n";
    t.deliver(acc, m);
    t.cmd("a SELECT INBOX").ok();
    t.cmd("b FETCH 1 BODY.PEEK[1]")
        .ok()
        .has("BODY[1] {8}\r\npart one)");
    t.cmd("c FETCH 1 BODY.PEEK[2.1]")
        .ok()
        .has("BODY[2.1] {8}\r\n<p>x</p>)");
    t.cmd("d FETCH 1 BODY.PEEK[2.1.MIME]")
        .ok()
        .has("BODY[2.1.MIME] {27}\r\nContent-Type: text/html\r\n\r\n)");
    t.cmd("e FETCH 1 BODYSTRUCTURE").ok().has(
        "BODYSTRUCTURE ((\"text\" \"plain\" NIL NIL NIL \"7BIT\" 8 0 NIL NIL NIL NIL)((\"text\" \"html\" NIL NIL NIL \"7BIT\" 8 0 NIL NIL NIL NIL) \"alternative\" (\"boundary\" \"b2\") NIL NIL NIL) \"mixed\" (\"boundary\" \"b1\") NIL NIL NIL)",
    );
}

#[test]
fn store_flags_and_unchangedsince() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    t.deliver(acc, &msg("a", "1"));
    t.deliver(acc, &msg("b", "2"));
    t.cmd("a SELECT INBOX").ok();
    t.cmd("b STORE 1 +FLAGS (\\Seen $MDNSent)")
        .ok()
        .has("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $MDNSent)\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $MDNSent \\*)]")
        .has("* 1 FETCH (FLAGS (\\Seen \\Recent $MDNSent))");
    t.cmd("b2 STORE 2 +FLAGS ($MDNSent)").ok().lacks("* FLAGS");
    t.cmd("c STORE 1 -FLAGS.SILENT (\\Seen)")
        .ok()
        .lacks("FETCH");
    t.cmd("d FETCH 1 FLAGS")
        .ok()
        .has("FLAGS (\\Recent $MDNSent)");
    t.cmd("e UID STORE 1:2 FLAGS (\\Flagged)")
        .ok()
        .has("* 1 FETCH (FLAGS (\\Flagged \\Recent) UID 1)")
        .has("* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)");
    let r = t.cmd("f FETCH 1 MODSEQ");
    let line = r.untagged()[0].to_owned();
    let modseq: u64 = line
        .split("MODSEQ (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .expect("modseq");
    t.cmd(&format!(
        "g STORE 1:2 (UNCHANGEDSINCE {}) +FLAGS (\\Answered)",
        modseq - 1
    ))
    .ok()
    .has("g OK [MODIFIED 1:2]");
    t.cmd(&format!(
        "h UID STORE 1 (UNCHANGEDSINCE {modseq}) +FLAGS (\\Answered)"
    ))
    .ok()
    .lacks("MODIFIED")
    .has("\\Answered");
    t.cmd("i STORE 1 FLAGS (\\Bogus)").bad();
    t.cmd("j STORE 5 FLAGS (\\Seen)").bad();
}

#[test]
fn search_keys() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    t.deliver(acc, &msg("alpha", "needle body"));
    t.deliver(acc, &msg("beta", "other"));
    t.deliver(
        acc,
        "From: carol@example.org\r\nSubject: gamma\r\nChat-Version: 1.0\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbig big big big big big\r\n",
    );
    t.cmd("a SELECT INBOX").ok();
    t.cmd("b STORE 2 +FLAGS (\\Seen \\Flagged $Kw)").ok();
    t.cmd("b2 STORE 3 +FLAGS (\\Deleted \\Answered)").ok();
    let cases = [
        ("ALL", "1 2 3"),
        ("1:2", "1 2"),
        ("UID 2:*", "2 3"),
        ("SEEN", "2"),
        ("UNSEEN", "1 3"),
        ("DELETED", "3"),
        ("UNDELETED", "1 2"),
        ("FLAGGED", "2"),
        ("ANSWERED", "3"),
        ("KEYWORD $Kw", "2"),
        ("UNKEYWORD $kw", "1 3"),
        ("KEYWORD $Nope", ""),
        ("SINCE 1-Nov-2023", "1 2 3"),
        ("BEFORE 1-Nov-2023", ""),
        ("ON 14-Nov-2023", "1 2 3"),
        ("SENTSINCE 2-Jan-2025", "1 2"),
        ("SENTBEFORE 2-Jan-2025", "3"),
        ("SENTON 1-Jan-2024", "3"),
        ("HEADER Chat-Version 1.0", "3"),
        ("HEADER Chat-Version \"\"", "3"),
        ("FROM carol", "3"),
        ("TO bob", "1 2"),
        ("SUBJECT BETA", "2"),
        ("BODY needle", "1"),
        ("TEXT alpha", "1"),
        ("LARGER 200", ""),
        ("SMALLER 200", "1 2 3"),
        ("NOT SEEN", "1 3"),
        ("OR SEEN DELETED", "2 3"),
        ("(UNSEEN UNDELETED)", "1"),
        ("UNSEEN UNDELETED", "1"),
        ("CHARSET UTF-8 ALL", "1 2 3"),
    ];
    for (k, want) in cases {
        let r = t.cmd(&format!("s SEARCH {k}"));
        r.ok();
        let line = r
            .untagged()
            .into_iter()
            .find(|l| l.starts_with("* SEARCH"))
            .expect("SEARCH line")
            .to_owned();
        assert_eq!(
            line.trim_end(),
            format!("* SEARCH {want}").trim_end(),
            "{k}"
        );
    }
    t.cmd("u UID SEARCH UID 3").ok().has("* SEARCH 3");
    let r = t.cmd("v SEARCH MODSEQ 1");
    r.ok().has("* SEARCH 1 2 3 (MODSEQ ");
    t.cmd("w SEARCH BOGUS").bad();
    t.cmd("x SEARCH CHARSET KOI8-R ALL").bad();
}

#[test]
fn copy_move_expunge_with_uidplus() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    for i in 0..4 {
        t.deliver(acc, &msg(&format!("m{i}"), "x"));
    }
    t.cmd("a CREATE Archive").ok();
    t.cmd("b SELECT INBOX").ok();
    let r = t.cmd("c UID COPY 1:2 Archive");
    r.ok().has("c OK [COPYUID ");
    assert!(r.tagged().contains(" 1:2 1:2]"), "{}", r.text);
    t.cmd("d COPY 1 Nope").no().has("TRYCREATE");
    t.cmd("d2 COPY 4 Archive")
        .ok()
        .has("d2 OK [COPYUID ")
        .has(" 4 3] Copy completed");
    let r = t.cmd("e MOVE 2:3 Archive");
    r.ok().has("* OK [COPYUID ").has(" 2:3 4:5] ");
    // Expunges highest first, renumbered: seq 3 then seq 2.
    let lines = r.untagged();
    let e: Vec<&&str> = lines.iter().filter(|l| l.ends_with("EXPUNGE")).collect();
    assert_eq!(e, vec![&"* 3 EXPUNGE", &"* 2 EXPUNGE"]);
    t.cmd("f STATUS Archive (MESSAGES)").ok().has("MESSAGES 5");
    // Remaining: uid 1 (seq 1), uid 4 (seq 2).
    t.cmd("g FETCH 2 UID").ok().has("* 2 FETCH (UID 4)");
    t.cmd("h STORE 1:2 +FLAGS.SILENT (\\Deleted)").ok();
    t.cmd("i UID EXPUNGE 4")
        .ok()
        .has("* 2 EXPUNGE")
        .lacks("* 1 EXPUNGE");
    t.cmd("j EXPUNGE").ok().has("* 1 EXPUNGE");
    t.cmd("k STATUS INBOX (MESSAGES)").ok().has("MESSAGES 0");
    t.cmd("l SELECT Archive").ok().has("* 5 EXISTS");
    t.cmd("m STORE 1 +FLAGS (\\Deleted)").ok();
    t.cmd("n CLOSE").ok().lacks("EXPUNGE");
    t.cmd("o STATUS Archive (MESSAGES)").ok().has("MESSAGES 4");
    t.cmd("p UID MOVE 99 Archive")
        .bad()
        .has("No mailbox selected");
}

#[test]
fn append_and_copy_stop_at_the_message_count_cap() {
    let mut t = T::with(true, |c| c.max_mailbox_messages = 2);
    t.drive();
    t.login("u@x");
    t.cmd("a SELECT INBOX").ok();
    for tag in ["b", "c"] {
        t.raw(
            tag,
            format!("{tag} APPEND INBOX {{1+}}\r\nx\r\n").as_bytes(),
        )
        .ok();
    }
    t.raw("d", b"d APPEND INBOX {1+}\r\nx\r\n")
        .no()
        .has("d NO [OVERQUOTA]");
    t.cmd("e CREATE Other").ok();
    t.cmd("f UID COPY 1 Other").no().has("[OVERQUOTA]");
    // MOVE adds no message; the session goes on.
    t.cmd("g UID MOVE 1 Other").ok();
    t.cmd("h STATUS Other (MESSAGES)").ok().has("MESSAGES 1");
}

#[test]
fn append_literals_and_quota() {
    let mut t = T::with(true, |c| {
        c.max_mailbox_size = 2000;
        c.max_message_size = 1000;
    });
    t.drive();
    t.login("u@x");
    t.cmd("a SELECT INBOX").ok();
    let m = msg("app", "hi");
    let r = t.cmd(&format!(
        "b APPEND INBOX (\\Seen) \"01-Jan-2020 00:00:00 +0000\" {{{}}}",
        m.len()
    ));
    r.has("+ Ready for literal data");
    let r = t.raw("b", format!("{m}\r\n").as_bytes());
    r.ok()
        .has("b OK [APPENDUID ")
        .has(" 1] Append completed")
        .has("* 1 EXISTS");
    // LITERAL+ (no continuation).
    let r = t.raw(
        "c",
        format!("c APPEND INBOX {{{}+}}\r\n{m}\r\n", m.len()).as_bytes(),
    );
    r.ok().lacks("+ Ready").has(" 2] Append completed");
    t.cmd("d FETCH 1 (FLAGS INTERNALDATE)")
        .ok()
        .has("FLAGS (\\Seen \\Recent) INTERNALDATE \"01-Jan-2020 00:00:00 +0000\"");
    t.cmd("e APPEND Nope {1+}\r\nx").no().has("TRYCREATE");
    // Synchronizing literal over max_message_size: refused, no continuation.
    t.cmd("f APPEND INBOX {1001}")
        .no()
        .has("TOOBIG")
        .lacks("+ Ready");
    t.cmd("g NOOP").ok();
    // LITERAL+ over the cap: read to its end and refused; the session stays in sync.
    let mut big = b"h APPEND INBOX {1500+}\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 1500));
    big.extend_from_slice(b"\r\ni NOOP\r\n");
    let r = t.raw("i", &big);
    r.ok().has("h NO [TOOBIG]");
    // Quota: 2000 bytes; two messages of ~150 bytes used, then fill.
    let filler = "y".repeat(800);
    let f = msg("f", &filler);
    t.raw(
        "j",
        format!("j APPEND INBOX {{{}+}}\r\n{f}\r\n", f.len()).as_bytes(),
    )
    .ok();
    let r = t.raw(
        "k",
        format!("k APPEND INBOX {{{}+}}\r\n{f}\r\n", f.len()).as_bytes(),
    );
    r.no()
        .has("k NO [OVERQUOTA] Quota exceeded (mailbox for user is full)");
    t.cmd("l GETQUOTAROOT INBOX")
        .ok()
        .has("* QUOTAROOT INBOX \"User quota\"")
        .has("* QUOTA \"User quota\" (STORAGE 1 1)");
    t.cmd("m GETQUOTA \"User quota\"")
        .ok()
        .has("* QUOTA \"User quota\" (STORAGE ");
    t.cmd("n GETQUOTA other").no();
}

#[test]
fn literal_caps_outside_append() {
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    let r = t.cmd(&format!("a LOGIN {{{}}}", super::frame::LITERAL_CAP + 1));
    r.bad().lacks("+ Ready");
    t.cmd("b NOOP").ok();
    let mut long = b"c NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'a', super::frame::LINE_CAP + 5));
    long.extend_from_slice(b"\r\nd NOOP\r\n");
    let r = t.raw("d", &long);
    r.ok().has("c BAD Line too long");
}

#[test]
fn metadata_roundtrip() {
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    t.cmd("a SETMETADATA INBOX (/private/devicetoken \"tok1\")")
        .ok()
        .has("a OK Setmetadata completed");
    t.cmd("b GETMETADATA INBOX /private/devicetoken")
        .ok()
        .has("* METADATA \"INBOX\" (/private/devicetoken \"tok1\")")
        .has("b OK Getmetadata completed");
    t.cmd("c SETMETADATA \"\" (/shared/comment \"hi\" /private/x {2+}\r\nab)")
        .ok();
    t.cmd("d GETMETADATA \"\" (/shared/comment /private/x /shared/none)")
        .ok()
        .has("(/shared/comment \"hi\" /private/x \"ab\" /shared/none NIL)");
    t.cmd("e GETMETADATA (MAXSIZE 1) \"\" /shared/comment")
        .ok()
        .has("LONGENTRIES 2");
    t.cmd("f SETMETADATA \"\" (/shared/comment NIL)").ok();
    t.cmd("g GETMETADATA \"\" /shared/comment")
        .ok()
        .has("(/shared/comment NIL)");
    t.cmd("h GETMETADATA Nope /private/x").no();
    t.cmd("i SETMETADATA INBOX (/bogus x)").bad();
}

#[test]
fn device_tokens_several_per_account_bounded_and_validated() {
    use crate::store::notify::{MAX_TOKENS, MAX_TOKEN_LEN};
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    t.cmd("a SETMETADATA INBOX (/private/devicetoken \"tok1\")")
        .ok();
    t.cmd("b SETMETADATA INBOX (/private/DeviceToken \"tok2\")")
        .ok();
    // Setting a token again refreshes it instead of adding a copy; NIL changes nothing.
    t.cmd("c SETMETADATA INBOX (/private/devicetoken \"tok1\")")
        .ok();
    t.cmd("d SETMETADATA INBOX (/private/devicetoken NIL)").ok();
    t.cmd("e GETMETADATA INBOX /private/devicetoken")
        .ok()
        .has("(/private/devicetoken \"tok2 tok1\")");
    let long = "x".repeat(MAX_TOKEN_LEN + 1);
    for bad in [
        "\"\"".to_owned(),
        "\"a b\"".to_owned(),
        "{3+}\r\na\x01b".to_owned(),
        "{2+}\r\na\t".to_owned(),
        format!("{{{}+}}\r\n{long}", long.len()),
    ] {
        t.cmd(&format!("f SETMETADATA INBOX (/private/devicetoken {bad})"))
            .no()
            .has("Invalid device token");
    }
    let mut binary = b"g SETMETADATA INBOX (/private/devicetoken {2+}\r\n".to_vec();
    binary.extend_from_slice(&[0xc3, 0x28]);
    binary.extend_from_slice(b")\r\n");
    t.raw("g", &binary).no();
    assert_eq!(
        t.store().device_tokens(acc, (T0 / 1000) as i64),
        ["tok2", "tok1"]
    );
    // Thousands of tokens from one account: the newest MAX_TOKENS are kept.
    for i in 0..(MAX_TOKENS + 10) {
        t.now += 1000;
        t.cmd(&format!(
            "h SETMETADATA INBOX (/private/devicetoken \"n{i}\")"
        ))
        .ok();
    }
    let now = (t.now / 1000) as i64;
    let tokens = t.store().device_tokens(acc, now);
    assert_eq!(tokens.len(), MAX_TOKENS);
    assert_eq!(tokens[0], "n10");
    assert_eq!(tokens[MAX_TOKENS - 1], format!("n{}", MAX_TOKENS + 9));
    // They do not count against the metadata entry cap beyond their one entry.
    assert_eq!(t.store().metadata_usage(acc).0, 1);
    // A delivery to the account asks for a push notification.
    t.deliver(acc, &msg("m", "x"));
    assert!(t.store().notify_get(acc).is_some());
}

#[test]
fn relay_entries_answer_configured_values_and_are_read_only() {
    let mut t = T::with(true, |c| {
        c.privacy_mail = "privacy@x".into();
        c.iroh_relay = Some("https://iroh.x".into());
    });
    t.drive();
    t.login("u@x");
    let r = t.cmd(
        "a GETMETADATA \"\" (/shared/vendor/deltachat/maxsmtprecipients \
         /shared/vendor/deltachat/irohrelay /shared/admin /shared/vendor/deltachat/nope \
         /shared/vendor/deltachat/turn)",
    );
    r.ok()
        .has("/shared/vendor/deltachat/maxsmtprecipients \"1000\"")
        .has("/shared/vendor/deltachat/irohrelay \"https://iroh.x\"")
        .has("/shared/admin \"mailto:privacy@x\"")
        .has("/shared/vendor/deltachat/nope NIL")
        .has("/shared/vendor/deltachat/turn NIL");
    // JSON goes as a literal: a quoted string would need escapes clients get wrong.
    let r = t.cmd("b GETMETADATA \"\" /shared/vendor/deltachat/appversions");
    r.ok()
        .has("(/shared/vendor/deltachat/appversions {")
        .has("}\r\n{\"clients\":[{\"clientId\":\"deltachat\"");
    t.cmd("c SETMETADATA \"\" (/shared/admin \"mailto:me@x\")")
        .no()
        .has("NOPRIVATE");
    t.cmd("d SETMETADATA \"\" (/shared/vendor/deltachat/irohrelay \"https://evil\")")
        .no();
    // Unset options: NIL.
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    t.cmd("e GETMETADATA \"\" (/shared/vendor/deltachat/irohrelay /shared/admin)")
        .ok()
        .has("(/shared/vendor/deltachat/irohrelay NIL /shared/admin NIL)");
}

#[test]
fn changes_by_others_are_reported() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    for i in 0..3 {
        t.deliver(acc, &msg(&format!("m{i}"), "x"));
    }
    t.cmd("a SELECT INBOX").ok();
    t.cmd("b ENABLE CONDSTORE").ok();
    let mb = t.store().mailbox_view(acc, "INBOX").expect("inbox").id;
    // Another client flags uid 3 and expunges uid 2; a new message arrives.
    t.store()
        .commit_now(Op::SetFlags {
            account: acc,
            mailbox: mb,
            uids: vec![3],
            mode: crate::store::FlagMode::Add,
            flags: vec![crate::store::Flag::Seen],
            unchanged_since: None,
        })
        .expect("flags");
    t.store()
        .commit_now(Op::Expunge {
            account: acc,
            mailbox: mb,
            uids: vec![2],
        })
        .expect("expunge");
    t.deliver(acc, &msg("m3", "x"));
    // FETCH must not report EXPUNGE; sequence numbers stay valid.
    let r = t.cmd("c FETCH 1:3 UID");
    r.ok()
        .lacks("EXPUNGE")
        .has("* 4 EXISTS")
        .has("* 3 FETCH (FLAGS (\\Seen \\Recent) UID 3 MODSEQ (");
    r.has("* 3 FETCH (UID 3)");
    t.cmd("c2 SEARCH ALL").ok().lacks("EXPUNGE");
    t.cmd("c3 STORE 1 +FLAGS.SILENT (\\Flagged)")
        .ok()
        .lacks("EXPUNGE");
    let r = t.cmd("d NOOP");
    r.ok().has("* 2 EXPUNGE");
    t.cmd("e FETCH 3 UID").ok().has("* 3 FETCH (UID 4)");
}

#[test]
fn idle_wakes_up_on_delivery() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    t.cmd("a SELECT INBOX").ok().has("* 0 EXISTS");
    let r = t.cmd("b IDLE");
    assert_eq!(r.text, "+ idling\r\n");
    assert_eq!(t.s.watched_account(), Some(acc));
    t.deliver(acc, &msg("new", "x"));
    t.s.account_changed(t.now);
    assert_eq!(t.drive(), "* 1 EXISTS\r\n* 1 RECENT\r\n");
    // Expunge by another session while idling.
    let other = t.second();
    assert!(!other.output().is_empty());
    let mb = t.store().mailbox_view(acc, "INBOX").expect("inbox").id;
    t.store()
        .commit_now(Op::Expunge {
            account: acc,
            mailbox: mb,
            uids: vec![1],
        })
        .expect("expunge");
    t.s.account_changed(t.now);
    assert_eq!(t.drive(), "* 1 EXPUNGE\r\n* 0 RECENT\r\n");
    // Keep-alive every 2 minutes; no autologout while idling.
    let at = t.s.next_timeout().expect("idle timer");
    assert_eq!(at, T0 + 120_000);
    t.now = at;
    t.s.handle_timeout(at);
    assert_eq!(t.drive(), "* OK Still here\r\n");
    assert!(!t.closed);
    t.raw("b", b"DONE\r\n").ok().has("b OK Idle completed");
    t.cmd("c NOOP").ok();
    t.cmd("d IDLE");
    t.raw("d", b"NOPE\r\n").bad();
}

#[test]
fn state_changes_keep_login_and_selection() {
    let mut t = T::new();
    t.drive();
    t.cmd("a FETCH 1 UID").bad().has("Please log in first");
    let acc = t.login("u@x");
    t.cmd("b LOGIN u@x password123")
        .bad()
        .has("Already logged in");
    // IDLE without a selected mailbox, then still logged in and nothing selected.
    t.cmd("c IDLE");
    assert_eq!(t.s.watched_account(), Some(acc));
    t.raw("c", b"DONE\r\n").ok();
    t.cmd("d FETCH 1 UID").bad().has("No mailbox selected");
    // IDLE keeps the selected mailbox and the client's view of it.
    t.deliver(acc, &msg("one", "x"));
    t.cmd("e SELECT INBOX").ok().has("* 1 EXISTS");
    t.cmd("f IDLE");
    t.deliver(acc, &msg("two", "y"));
    t.s.account_changed(t.now);
    assert_eq!(t.drive(), "* 2 EXISTS\r\n* 2 RECENT\r\n");
    t.raw("f", b"DONE\r\n").ok().lacks("EXISTS");
    t.cmd("g FETCH 2 UID").ok().has("* 2 FETCH (UID 2)");
    // A failed SELECT leaves nothing selected; so does deleting the selected mailbox.
    t.cmd("h SELECT Nope").no();
    t.cmd("i FETCH 1 UID").bad().has("No mailbox selected");
    t.cmd("j CREATE Other").ok();
    t.cmd("k SELECT Other").ok();
    t.cmd("l DELETE Other").ok();
    t.cmd("m FETCH 1 UID").bad().has("No mailbox selected");
    // CLOSE and UNSELECT deselect; LOGOUT ends the session.
    t.cmd("n EXAMINE INBOX").ok();
    t.cmd("o CLOSE").ok();
    t.cmd("p FETCH 1 UID").bad().has("No mailbox selected");
    t.cmd("q SELECT INBOX").ok();
    t.cmd("r UNSELECT").ok();
    t.cmd("s FETCH 1 UID").bad().has("No mailbox selected");
    t.cmd("t LOGOUT").ok().has("* BYE");
    assert!(t.closed);
    assert_eq!(t.cmd("u NOOP").text, "");
}

#[test]
fn autologout_timers() {
    let mut t = T::new();
    t.drive();
    assert_eq!(t.s.next_timeout(), Some(T0 + 60_000));
    t.now = T0 + 59_000;
    t.s.handle_timeout(t.now);
    assert!(!t.closed);
    t.now = T0 + 60_000;
    t.s.handle_timeout(t.now);
    assert!(t.drive().contains("* BYE"));
    assert!(t.closed);
    assert!(!t.s.wants_input());

    let mut t = T::new();
    t.drive();
    t.now = T0 + 1000;
    t.login("u@x");
    assert_eq!(t.s.next_timeout(), Some(T0 + 1000 + 30 * 60_000));
    t.now += 30 * 60_000;
    t.s.handle_timeout(t.now);
    assert!(t.drive().contains("* BYE"));
    assert!(t.closed);
}

#[test]
fn prelogin_deadline_holds_against_a_trickle() {
    let mut t = T::new();
    t.drive();
    // A command every 50 s keeps the 60 s idle timer from firing, never the login deadline.
    for i in 0..3 {
        t.now = T0 + (i + 1) * 50_000;
        t.cmd(&format!("n{i} NOOP")).ok();
    }
    assert_eq!(t.s.next_timeout(), Some(T0 + PRELOGIN_DEADLINE_MS));
    t.now = T0 + PRELOGIN_DEADLINE_MS - 1;
    t.s.handle_timeout(t.now);
    assert!(!t.closed);
    t.now = T0 + PRELOGIN_DEADLINE_MS;
    t.s.handle_timeout(t.now);
    assert!(t.drive().contains("* BYE Login timed out."));
    assert!(t.closed);

    // After login the deadline is gone.
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    t.now = T0 + PRELOGIN_DEADLINE_MS;
    t.s.handle_timeout(t.now);
    assert!(!t.closed);
}

#[test]
fn compress_starts_deflate() {
    let mut t = T::with(true, |c| c.imap_compress = true);
    t.drive();
    t.login("u@x");
    let r = t.raw("a", b"a COMPRESS DEFLATE\r\nx NOOP\r\n");
    r.ok().lacks("x OK");
    assert_eq!(t.actions, vec!["StartCompress"]);
    t.cmd("b COMPRESS DEFLATE").no().has("COMPRESSIONACTIVE");
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    t.cmd("a COMPRESS DEFLATE").no();
}

#[test]
fn input_is_held_while_an_effect_is_pending() {
    let mut t = T::new();
    t.drive();
    t.s.receive(b"a LOGIN u@x pw\r\nb NOOP\r\n", t.now);
    assert!(!t.s.wants_input());
    let Some(Action::Effect(Effect::Login { user, .. })) = t.s.poll_action() else {
        panic!("login effect expected")
    };
    // Nothing answered yet, NOOP waits.
    assert!(!String::from_utf8_lossy(t.s.output()).contains("a OK"));
    assert!(!String::from_utf8_lossy(t.s.output()).contains("b OK"));
    let id = login_account(t.store(), &user);
    t.s.complete(EffectResult::Login(Ok(id)), t.now);
    let out = t.drive();
    let a = out.find("a OK").expect("login ok");
    let b = out.find("b OK").expect("noop ok");
    assert!(a < b);
    // A write's OK comes only after the commit completes.
    t.s.receive(b"c CREATE Box\r\n", t.now);
    let Some(Action::Effect(Effect::Commit(op))) = t.s.poll_action() else {
        panic!("commit expected")
    };
    assert!(!String::from_utf8_lossy(t.s.output()).contains("c OK"));
    let r = t.store().commit_now(op);
    t.s.complete(EffectResult::Commit(r), t.now);
    assert!(t.drive().contains("c OK Create completed"));
}

// ---------------------------------------------------------------------------------------------
// Golden transcripts: relay/testdata/imap/*.txt, `C:` lines are sent (joined by CRLF), `S:` lines
// expected in order; `{*}` in an `S:` line matches any text. Each is replayed whole, split at
// random points and one byte at a time.

fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split("{*}").collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(parts[0]) else {
        return false;
    };
    for (i, p) in parts.iter().enumerate().skip(1) {
        if i == parts.len() - 1 {
            return rest.ends_with(p);
        }
        match rest.find(p) {
            Some(pos) => rest = &rest[pos + p.len()..],
            None => return false,
        }
    }
    true
}

fn run_transcript(input: &[u8], chunks: &[usize]) -> String {
    let mut t = T::new();
    let mut out = t.drive();
    let mut pos = 0;
    let mut i = 0;
    while pos < input.len() {
        let n = chunks[i % chunks.len()].max(1).min(input.len() - pos);
        out.push_str(&t.send(&input[pos..pos + n]));
        pos += n;
        i += 1;
    }
    out
}

fn check_transcript(path: &Path, expected: &[String], actual: &str) -> Result<(), String> {
    let lines: Vec<&str> = actual.split_inclusive("\r\n").collect();
    // Literal payloads may span lines; compare line by line after splitting on CRLF.
    let got: Vec<String> = lines
        .iter()
        .map(|l| l.trim_end_matches("\r\n").to_owned())
        .collect();
    let ok = got.len() == expected.len() && got.iter().zip(expected).all(|(g, e)| glob(e, g));
    if ok {
        Ok(())
    } else {
        let actual_path = path.with_extension("actual");
        let _ = std::fs::write(&actual_path, actual);
        Err(format!(
            "transcript {} differs; actual output in {}",
            path.display(),
            actual_path.display()
        ))
    }
}

#[test]
fn golden_transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/imap");
    let mut ran = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("testdata/imap exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).expect("transcript readable");
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for line in text.lines() {
            if let Some(c) = line.strip_prefix("C: ") {
                input.extend_from_slice(c.as_bytes());
                input.extend_from_slice(b"\r\n");
            } else if let Some(c) = line.strip_prefix("C:") {
                input.extend_from_slice(c.as_bytes());
                input.extend_from_slice(b"\r\n");
            } else if let Some(s) = line.strip_prefix("S: ") {
                expected.push(s.to_owned());
            } else if let Some(s) = line.strip_prefix("S:") {
                expected.push(s.to_owned());
            }
        }
        let whole = run_transcript(&input, &[input.len()]);
        check_transcript(&path, &expected, &whole).unwrap_or_else(|e| panic!("{e}"));
        let bytewise = run_transcript(&input, &[1]);
        check_transcript(&path, &expected, &bytewise).unwrap_or_else(|e| panic!("byte-wise: {e}"));
        let mut rng = rand::rngs::StdRng::seed_from_u64(ran as u64 + 7);
        for _ in 0..3 {
            let chunks: Vec<usize> = (0..16).map(|_| rng.gen_range(1..40)).collect();
            let split = run_transcript(&input, &chunks);
            check_transcript(&path, &expected, &split)
                .unwrap_or_else(|e| panic!("split {chunks:?}: {e}"));
        }
        ran += 1;
    }
    assert!(ran >= 2, "expected golden transcripts in {}", dir.display());
}

#[test]
fn never_panics_on_garbage() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let words: [&[u8]; 24] = [
        b"a ",
        b"SELECT ",
        b"INBOX",
        b"FETCH ",
        b"1:* ",
        b"(",
        b")",
        b"{3}\r\n",
        b"{2+}\r\n",
        b"\"",
        b"\\",
        b"BODY[",
        b"]",
        b"<0.5>",
        b"\r\n",
        b"UID ",
        b"STORE ",
        b"SEARCH ",
        b"OR ",
        b"NOT ",
        b"\xff",
        b"*",
        b"%",
        b"LOGIN ",
    ];
    for _ in 0..10 {
        let mut t = T::new();
        t.drive();
        t.login("u@x");
        t.deliver(
            t.store().account("u@x").expect("account").id,
            &msg("g", "x"),
        );
        t.cmd("s SELECT INBOX").ok();
        for _ in 0..30 {
            let mut input = Vec::new();
            for _ in 0..rng.gen_range(1..30) {
                input.extend_from_slice(words[rng.gen_range(0..words.len())]);
            }
            input.extend_from_slice(b"\r\n");
            t.send(&input);
        }
        t.send(b"z NOOP\r\n");
    }
}

#[test]
fn expunge_renumbering_highest_first() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    for i in 0..5 {
        t.deliver(acc, &msg(&format!("m{i}"), "x"));
    }
    t.cmd("a SELECT INBOX").ok().has("* 5 EXISTS");
    let mb = t.store().mailbox_view(acc, "INBOX").expect("inbox").id;
    t.store()
        .commit_now(Op::Expunge {
            account: acc,
            mailbox: mb,
            uids: vec![2, 4, 5],
        })
        .expect("expunge");
    t.deliver(acc, &msg("m5", "x"));
    let r = t.cmd("b NOOP");
    r.ok();
    let lines: Vec<&str> = r.untagged();
    assert_eq!(
        lines,
        vec![
            "* 5 EXPUNGE",
            "* 4 EXPUNGE",
            "* 2 EXPUNGE",
            "* 3 EXISTS",
            "* 3 RECENT"
        ]
    );
    t.cmd("c FETCH 1:3 UID")
        .ok()
        .has("* 1 FETCH (UID 1)")
        .has("* 2 FETCH (UID 3)")
        .has("* 3 FETCH (UID 6)");
    t.cmd("d LIST (SUBSCRIBED) \"\" * RETURN (SPECIAL-USE)")
        .ok();
}

#[test]
fn output_backlog_stops_reading() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    let big = "z".repeat(400_000);
    t.deliver(acc, &msg("big", &big));
    t.cmd("a SELECT INBOX").ok();
    // Five pipelined fetches of 400 kB each: the session stops after the cap is passed.
    let mut input = Vec::new();
    for i in 0..5 {
        input.extend_from_slice(format!("f{i} FETCH 1 BODY.PEEK[]\r\n").as_bytes());
    }
    t.s.receive(&input, t.now);
    assert!(!t.s.wants_input());
    let out = String::from_utf8_lossy(t.s.output()).into_owned();
    assert!(
        out.contains("f2 OK") && !out.contains("f3 OK"),
        "{}",
        out.len()
    );
    // Draining the output resumes processing of the buffered commands.
    let rest = t.drive();
    assert!(rest.contains("f4 OK"));
    assert!(t.s.wants_input());
}

mod props {
    use proptest::prelude::*;

    use super::super::command::{self, Command};
    use super::super::frame::{Frame, Framer};
    use super::super::response;

    fn frames(f: &mut Framer) -> Vec<Frame> {
        let mut v = Vec::new();
        while let Some(x) = f.next(false) {
            v.push(x);
        }
        v
    }

    proptest! {
        #[test]
        fn dates_never_panic(s in "\\PC{0,40}", d in "[0-9]{1,2}-[A-Za-z]{3}-[0-9]{4} [0-9:]{8} [+-]\\PC{4}") {
            let _ = command::parse_date(&s);
            let _ = command::parse_date_time(&s);
            let _ = command::parse_date_time(&d);
        }

        #[test]
        fn parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = command::parse(&input);
        }

        #[test]
        fn framing_is_independent_of_splits(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(b"a NOOP\r\n".to_vec()),
                    Just(b"b LOGIN {3}\r\nabc x\r\n".to_vec()),
                    Just(b"c APPEND INBOX {5+}\r\nhello\r\n".to_vec()),
                    Just(b"d APPEND INBOX {50+}\r\n".iter().copied().chain([b'x'; 50]).chain(*b"\r\n").collect()),
                    Just(b"e APPEND INBOX {40}\r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..20),
                ],
                1..8,
            ),
            cuts in proptest::collection::vec(1usize..16, 1..50),
        ) {
            let input: Vec<u8> = parts.concat();
            let mut whole = Framer::new(20);
            whole.push(&input);
            let expected = frames(&mut whole);
            let mut split = Framer::new(20);
            let mut got = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < input.len() {
                let n = cuts[i % cuts.len()].min(input.len() - pos);
                split.push(&input[pos..pos + n]);
                got.extend(frames(&mut split));
                pos += n;
                i += 1;
            }
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn encoded_strings_parse_back(s in "\\PC{0,40}|[\\x00-\\x7f]{0,40}") {
            let mut line = b"t LOGIN ".to_vec();
            response::string(&mut line, s.as_bytes());
            line.extend_from_slice(b" x\r\n");
            let parsed = command::parse(&line);
            if s.contains('\0') {
                // NUL is not allowed in IMAP strings; it must be rejected or survive a literal.
                if let Ok((_, Command::Login(u, _))) = parsed {
                    prop_assert_eq!(u, s);
                }
            } else {
                prop_assert_eq!(parsed, Ok(("t".to_owned(), Command::Login(s.clone(), "x".into()))));
            }
        }
    }
}

#[test]
fn partial_writes_keep_output_intact() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    let m = msg("big", &"0123456789".repeat(30_000));
    t.deliver(acc, &m);
    t.cmd("a SELECT INBOX").ok();
    t.s.receive(b"b FETCH 1 BODY.PEEK[]\r\nc NOOP\r\n", t.now);
    let mut got = Vec::new();
    loop {
        let out = t.s.output();
        if out.is_empty() {
            break;
        }
        let n = out.len().min(777);
        got.extend_from_slice(&out[..n]);
        t.s.consume_output(n);
    }
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with(&format!(
        "* 1 FETCH (BODY[] {{{}}}\r\n{m})\r\nb OK",
        m.len()
    )));
    assert!(text.ends_with("c OK NOOP completed\r\n"));
}

/// Throughput figures; run with
/// `cargo test -p relay --release --lib imap::tests::perf -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, not a check"]
fn perf_fetch_and_parse() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    let n = 1000;
    let body = msg("perf", &"lorem ipsum dolor sit amet ".repeat(100));
    for _ in 0..n {
        t.deliver(acc, &body);
    }
    t.cmd("a SELECT INBOX").ok();
    let start = std::time::Instant::now();
    let rounds = 20;
    let mut bytes = 0;
    for _ in 0..rounds {
        let r = t.cmd("b UID FETCH 1:* (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES CHAT-VERSION FROM)])");
        bytes += r.text.len();
    }
    let el = start.elapsed();
    println!(
        "prefetch: {} messages x {rounds} in {:?}: {:.0} msg/s, {:.1} MB/s",
        n,
        el,
        (n * rounds) as f64 / el.as_secs_f64(),
        bytes as f64 / el.as_secs_f64() / 1e6
    );
    let start = std::time::Instant::now();
    for _ in 0..rounds {
        t.cmd("c UID FETCH 1:* BODY.PEEK[]");
    }
    let el = start.elapsed();
    println!(
        "full body: {} messages x {rounds} in {:?}: {:.0} msg/s",
        n,
        el,
        (n * rounds) as f64 / el.as_secs_f64()
    );
    let line = b"a123 UID FETCH 1:*,5,7:9 (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])\r\n";
    let start = std::time::Instant::now();
    let k = 200_000;
    for _ in 0..k {
        std::hint::black_box(super::command::parse(std::hint::black_box(line)).unwrap());
    }
    let el = start.elapsed();
    println!("parse: {:.0} commands/s", k as f64 / el.as_secs_f64());
    let start = std::time::Instant::now();
    for _ in 0..k {
        t.s.receive(b"n NOOP\r\n", t.now);
        let l = t.s.output().len();
        t.s.consume_output(l);
    }
    let el = start.elapsed();
    println!(
        "NOOP round trips (selected, 1000 msgs): {:.0}/s",
        k as f64 / el.as_secs_f64()
    );
}

/// Python's stdlib imaplib as a real, independent client over loopback TCP. The session is
/// constructed as TLS-active (no TLS here: this checks the IMAP dialogue, not TLS).
#[test]
fn python_imaplib_interop() {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: python3 not available");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (shared, store) = shared_in(dir.path(), |_| {});
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/imap/imaplib_client.py");
    let child = std::process::Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (mut sock, _) = listener.accept().unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut s = Session::new(shared.clone(), true, T0);
    let mut buf = vec![0u8; 64 * 1024];
    'conn: loop {
        loop {
            let out = s.output().to_vec();
            if !out.is_empty() {
                sock.write_all(&out).unwrap();
                s.consume_output(out.len());
            }
            match s.poll_action() {
                None => break,
                Some(Action::Effect(Effect::Commit(op))) => {
                    let r = store.commit_now(op);
                    s.complete(EffectResult::Commit(r), T0);
                }
                Some(Action::Effect(Effect::Login { user, .. })) => {
                    let id = login_account(&store, &user);
                    s.complete(EffectResult::Login(Ok(id)), T0);
                }
                Some(Action::Close) => break 'conn,
                Some(other) => panic!("unexpected action {other:?}"),
            }
        }
        let n = sock.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        s.receive(&buf[..n], T0);
    }
    drop(sock);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("PYOK"),
        "imaplib client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn large_fetch_is_rendered_as_the_client_reads() {
    let mut t = T::new();
    t.drive();
    let acc = t.login("u@x");
    let big = msg("big", &"q".repeat(400_000));
    for _ in 0..10 {
        t.deliver(acc, &big);
    }
    t.cmd("a SELECT INBOX").ok();
    t.s.receive(b"b FETCH 1:* BODY[]\r\nc NOOP\r\n", t.now);
    // \Seen is committed first.
    let Some(Action::Effect(Effect::Commit(op))) = t.s.poll_action() else {
        panic!("commit expected")
    };
    let r = t.store().commit_now(op);
    t.s.complete(EffectResult::Commit(r), t.now);
    let pending = t.s.output().len();
    assert!(
        pending < 2 * 1024 * 1024,
        "{pending} bytes rendered at once"
    );
    assert!(!t.s.wants_input());
    let rest = t.drive();
    // `drive` took the already rendered part too: all ten responses, once each.
    assert_eq!(rest.matches(" FETCH (").count(), 10);
    let all = rest;
    assert!(all.contains("* 10 FETCH (FLAGS (\\Seen \\Recent) BODY[] {"));
    assert!(all.contains("b OK Fetch completed"));
    assert!(all.find("b OK").unwrap() < all.find("c OK").unwrap());
    assert!(t.s.wants_input());
}

#[test]
fn session_is_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Session>();
}

/// Random interleavings of this client's commands and other sessions' writes. A client model
/// (UID per sequence number) is kept only from `EXISTS`, `EXPUNGE` and `FETCH ... UID`
/// responses; every FETCH must agree with it, and at the end it must equal the store.
#[test]
fn random_sessions_keep_sequence_numbers_consistent() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    for round in 0..12 {
        let mut t = T::new();
        t.drive();
        let acc = t.login("u@x");
        t.cmd("c CREATE Other").ok();
        for i in 0..3 {
            t.deliver(acc, &msg(&format!("m{i}"), "x"));
        }
        let mut model: Vec<Option<u32>> = Vec::new();
        let r = t.cmd("s SELECT INBOX");
        apply_model(&mut model, &r.text, "select");
        let r = t.cmd("s FETCH 1:* UID");
        apply_model(&mut model, &r.text, "initial fetch");
        let mb = t.store().mailbox_view(acc, "INBOX").expect("inbox").id;
        for step in 0..40 {
            let store_uids = inbox_uids(&t, acc);
            let pick = |rng: &mut rand::rngs::StdRng| -> u32 {
                if store_uids.is_empty() {
                    1
                } else {
                    store_uids[rng.gen_range(0..store_uids.len())]
                }
            };
            let count = model.len() as u32;
            let text = match rng.gen_range(0..12) {
                0 => {
                    t.deliver(acc, &msg("n", "y"));
                    continue;
                }
                1 => {
                    let u = pick(&mut rng);
                    t.store()
                        .commit_now(Op::Expunge {
                            account: acc,
                            mailbox: mb,
                            uids: vec![u],
                        })
                        .expect("expunge");
                    continue;
                }
                2 => t.cmd("a NOOP").text,
                3 => {
                    t.cmd(&format!(
                        "a UID STORE {} +FLAGS (\\Deleted)",
                        pick(&mut rng)
                    ))
                    .text
                }
                4 => t.cmd("a EXPUNGE").text,
                5 => t.cmd(&format!("a UID MOVE {} Other", pick(&mut rng))).text,
                6 => t.cmd("a SEARCH ALL").text,
                7 => {
                    t.cmd(&format!("a UID FETCH {}:* (FLAGS)", pick(&mut rng)))
                        .text
                }
                8 => {
                    let text = t.cmd("a IDLE").text;
                    t.deliver(acc, &msg("i", "z"));
                    t.s.account_changed(t.now);
                    let mut all = text + &t.drive();
                    all.push_str(&t.raw("a", b"DONE\r\n").text);
                    all
                }
                9 => t.cmd(&format!("a UID EXPUNGE {}", pick(&mut rng))).text,
                10 if count > 0 => {
                    t.cmd(&format!("a FETCH {} UID", rng.gen_range(1..=count)))
                        .text
                }
                _ => t.cmd("a FETCH 1:* UID").text,
            };
            apply_model(&mut model, &text, &format!("round {round} step {step}"));
        }
        let r = t.cmd("z NOOP");
        apply_model(&mut model, &r.text, "final noop");
        let store_uids = inbox_uids(&t, acc);
        assert_eq!(model.len(), store_uids.len(), "round {round}");
        if !model.is_empty() {
            let r = t.cmd("y FETCH 1:* UID");
            apply_model(&mut model, &r.text, "final fetch");
        }
        let model: Vec<u32> = model.into_iter().map(|u| u.expect("all known")).collect();
        assert_eq!(model, store_uids, "round {round}");
    }
}

fn inbox_uids(t: &T, acc: AccountId) -> Vec<u32> {
    t.store()
        .mailbox_view(acc, "INBOX")
        .expect("inbox")
        .messages
        .iter()
        .map(|m| m.uid)
        .collect()
}

/// Update a client's UID-per-sequence model from server output, checking consistency.
fn apply_model(model: &mut Vec<Option<u32>>, text: &str, ctx: &str) {
    for line in text.split("\r\n") {
        let Some(rest) = line.strip_prefix("* ") else {
            continue;
        };
        let Some((n, what)) = rest.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        if what == "EXPUNGE" {
            assert!(
                n >= 1 && n <= model.len(),
                "{ctx}: {line} with {}",
                model.len()
            );
            model.remove(n - 1);
        } else if what == "EXISTS" {
            assert!(n >= model.len(), "{ctx}: EXISTS shrank: {line}");
            model.resize(n, None);
        } else if what.starts_with("FETCH (") {
            assert!(
                n >= 1 && n <= model.len(),
                "{ctx}: {line} beyond {}",
                model.len()
            );
            if let Some(uid) = what
                .split("UID ")
                .nth(1)
                .and_then(|s| s.split([' ', ')']).next())
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Some(known) = model[n - 1] {
                    assert_eq!(known, uid, "{ctx}: seq {n} changed UID: {line}");
                }
                model[n - 1] = Some(uid);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Before login: small caps, no APPEND, bounded buffers. Per-account caps.

/// Feed `input` like the driver does: reads of at most 16 KiB, only while the session wants
/// input, never draining output. Returns how many bytes were taken.
fn feed_without_reading(s: &mut Session, input: &[u8], now: u64) -> usize {
    let mut pos = 0;
    while pos < input.len() && s.wants_input() {
        let n = (input.len() - pos).min(16 * 1024);
        s.receive(&input[pos..pos + n], now);
        pos += n;
    }
    pos
}

#[test]
fn append_before_login_gets_no_continuation() {
    for tls in [false, true] {
        let mut t = T::with(tls, |_| {});
        t.drive();
        let r = t.cmd("a APPEND INBOX {30000000}");
        r.bad().has("a BAD Please log in first").lacks("+ ");
        assert!(!t.closed);
        // The client gave the command up; the connection goes on.
        t.cmd("b NOOP").ok();
        // The same for APPEND's literal on a later line, UID commands and lower case.
        t.cmd("c append INBOX (\\Seen) {10}").bad().lacks("+ ");
        t.cmd("d UID FETCH {3}").bad().lacks("+ ");
        t.cmd("e NOOP").ok();
        assert!(t.s.held_bytes() < super::PREAUTH_BUDGET);
    }
}

#[test]
fn literal_plus_append_before_login_closes_without_buffering() {
    let mut t = T::plain();
    t.drive();
    let mut input = b"a APPEND INBOX {30000000+}\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 64 * 1024));
    let r = t.raw("a", &input);
    r.bad()
        .has("a BAD Please log in first\r\n* BYE Too much data before login\r\n");
    assert!(t.closed, "{:?}", t.actions);
    assert!(!t.s.wants_input());
    assert_eq!(t.s.framer.buffered(), 0);
    // More of the literal is not even buffered.
    t.s.receive(&[b'x'; 16 * 1024], t.now);
    assert_eq!(t.s.framer.buffered(), 0);
    assert!(t.s.held_bytes() < super::PREAUTH_BUDGET);
    assert_eq!(t.drive(), "");
}

#[test]
fn login_literals_before_login_are_capped_small() {
    let mut t = T::new();
    t.drive();
    let cap = super::frame::PREAUTH_LITERAL_CAP;
    t.cmd(&format!("a LOGIN {{{}}}", cap + 1))
        .bad()
        .has("a BAD Literal too large")
        .lacks("+ ");
    // A long password within the cap logs in.
    let pass = "p".repeat(cap as usize - 100);
    let r = t.cmd(&format!(
        "b LOGIN {{6}}\r\nuser@x {{{}+}}\r\n{pass}",
        pass.len()
    ));
    r.ok().has("Logged in");
    // After login the large caps apply: APPEND gets its continuation.
    t.cmd("c APPEND INBOX {30000}")
        .has("+ Ready for literal data");
}

#[test]
fn literal_plus_login_over_the_cap_before_login_closes() {
    let mut t = T::new();
    t.drive();
    let r = t.cmd("a LOGIN u@x {100000+}");
    r.bad()
        .has("a BAD Literal too large")
        .has("* BYE Too much data before login");
    assert!(t.closed);
}

#[test]
fn long_line_before_login_closes() {
    let mut t = T::new();
    t.drive();
    let mut line = b"a LOGIN ".to_vec();
    line.extend(std::iter::repeat_n(
        b'a',
        super::frame::PREAUTH_LINE_CAP + 1,
    ));
    let r = t.raw("a", &line);
    r.bad()
        .has("a BAD Line too long")
        .has("* BYE Too much data before login");
    assert!(t.closed);
    // After login, lines up to the large cap are fine.
    let mut t = T::new();
    t.drive();
    t.login("u@x");
    let long = format!(
        "b SELECT \"{}\"",
        "x".repeat(super::frame::PREAUTH_LINE_CAP + 1000)
    );
    t.cmd(&long).no();
    assert!(!t.closed);
}

#[test]
fn authenticate_response_before_login_is_capped() {
    let mut t = T::new();
    t.drive();
    t.cmd("a AUTHENTICATE PLAIN").has("+ ");
    let mut line = vec![b'A'; super::frame::PREAUTH_LINE_CAP + 10];
    line.extend_from_slice(b"\r\n");
    t.raw("a", &line).bad().has("a BAD Line too long");
    assert!(t.closed);
}

#[test]
fn client_that_never_reads_before_login_stays_within_budget() {
    let mut t = T::plain();
    // Never drained: not even the greeting is read.
    let input = b"a CAPABILITY\r\n".repeat(10_000);
    let taken = feed_without_reading(&mut t.s, &input, t.now);
    assert!(taken < input.len(), "the session kept reading");
    assert!(!t.s.wants_input());
    let out = t.s.output().len();
    assert!(
        out <= super::session::PREAUTH_OUTPUT_CAP + 1024,
        "{out} bytes of output queued"
    );
    assert!(
        t.s.held_bytes() < super::PREAUTH_BUDGET,
        "{} bytes held",
        t.s.held_bytes()
    );
    // Reading resumes processing.
    let text = t.drive();
    assert!(text.contains("a OK"), "{text}");
    assert!(t.s.wants_input());
}

#[test]
fn pending_login_stops_reading_before_login() {
    let mut t = T::new();
    t.drive();
    t.s.receive(b"a LOGIN u@x pw\r\n", t.now);
    // The login effect is pending: no more input is taken.
    assert!(matches!(t.s.poll_action(), Some(Action::Effect(_))));
    assert!(!t.s.wants_input());
    let noops = b"b NOOP\r\n".repeat(1000);
    t.s.receive(&noops[..4096], t.now);
    assert!(t.s.held_bytes() < super::PREAUTH_BUDGET);
}

/// Commit `ops` to the test's in-memory store.
fn commit_all(store: &MemoryStore, ops: Vec<Op>) {
    for op in ops {
        store.commit_now(op).expect("commit");
    }
}

#[test]
fn mailbox_count_is_capped_per_account() {
    use super::limits::MAX_MAILBOXES;
    let mut t = T::new();
    t.drive();
    let account = t.login("u@x");
    // INBOX counts: fill up to the cap.
    let ops = (1..MAX_MAILBOXES)
        .map(|i| Op::CreateMailbox {
            account,
            name: format!("box{i}"),
        })
        .collect();
    commit_all(t.store(), ops);
    assert_eq!(t.store().mailboxes(account).len() as u64, MAX_MAILBOXES);
    t.cmd("a CREATE one-more")
        .no()
        .has("a NO [LIMIT] Too many mailboxes (at most 1000)");
    assert_eq!(t.store().mailboxes(account).len() as u64, MAX_MAILBOXES);
    // An existing name is still reported as such; renaming does not grow.
    t.cmd("b CREATE box1").no().has("[ALREADYEXISTS]");
    t.cmd("c RENAME box1 renamed").ok();
    t.cmd("d DELETE renamed").ok();
    t.cmd("e CREATE one-more").ok();
    // Another account is not affected.
    let mut u = T::new();
    u.drive();
    u.login("v@x");
    u.cmd("f CREATE x").ok();
}

#[test]
fn subscriptions_are_capped_per_account() {
    use super::limits::MAX_SUBSCRIPTIONS;
    let mut t = T::new();
    t.drive();
    let account = t.login("u@x");
    // INBOX may be subscribed already: fill up to the cap.
    let have = t.store().subscriptions(account).len() as u64;
    let ops = (have..MAX_SUBSCRIPTIONS)
        .map(|i| Op::Subscribe {
            account,
            name: format!("sub{i}"),
            subscribed: true,
        })
        .collect();
    commit_all(t.store(), ops);
    t.cmd("a SUBSCRIBE new")
        .no()
        .has("a NO [LIMIT] Too many subscriptions (at most 1000)");
    assert_eq!(
        t.store().subscriptions(account).len() as u64,
        MAX_SUBSCRIPTIONS
    );
    // Subscribing again to a subscribed name does not grow; unsubscribing makes room.
    t.cmd("b SUBSCRIBE sub7").ok();
    t.cmd("c UNSUBSCRIBE sub7").ok();
    t.cmd("d SUBSCRIBE new").ok();
    let long = "n".repeat(super::limits::MAX_SUBSCRIPTION_NAME + 1);
    t.cmd("e UNSUBSCRIBE new").ok();
    t.cmd(&format!("f SUBSCRIBE {long}"))
        .no()
        .has("NO [LIMIT] Mailbox name too long");
}

#[test]
fn metadata_entries_are_capped_per_account() {
    use super::limits::MAX_METADATA_ENTRIES;
    let mut t = T::new();
    t.drive();
    let account = t.login("u@x");
    let inbox = t.store().mailbox_view(account, "INBOX").unwrap().id;
    // Server and mailbox entries count together.
    let ops = (0..MAX_METADATA_ENTRIES)
        .map(|i| Op::SetMetadata {
            account,
            mailbox: if i % 2 == 0 { None } else { Some(inbox) },
            key: format!("/private/k{i}"),
            value: Some(b"v".to_vec()),
        })
        .collect();
    commit_all(t.store(), ops);
    t.cmd("a SETMETADATA \"\" (/private/new \"v\")")
        .no()
        .has("a NO [METADATA TOOMANY] Too many metadata entries (at most 100)");
    assert_eq!(t.store().metadata(account, None, "/private/new"), None);
    // Changing an entry, or replacing one by another in one command, does not grow.
    t.cmd("b SETMETADATA \"\" (/private/k0 \"w\")").ok();
    t.cmd("c SETMETADATA INBOX (/private/k1 NIL /private/new \"v\")")
        .ok();
    t.cmd("d GETMETADATA INBOX /private/new")
        .ok()
        .has("(/private/new \"v\")");
}

#[test]
fn metadata_command_over_the_cap_commits_nothing() {
    use super::limits::MAX_METADATA_ENTRIES;
    let mut t = T::new();
    t.drive();
    let account = t.login("u@x");
    let entries: Vec<String> = (0..=MAX_METADATA_ENTRIES)
        .map(|i| format!("/private/e{i} \"v\""))
        .collect();
    t.cmd(&format!("a SETMETADATA \"\" ({})", entries.join(" ")))
        .no()
        .has("[METADATA TOOMANY]");
    assert_eq!(t.store().metadata_usage(account), (0, 0));
}

#[test]
fn metadata_size_is_capped_per_account() {
    let mut t = T::new();
    t.drive();
    let account = t.login("u@x");
    let v = "x".repeat(30 * 1024);
    for (tag, key) in [("a", "/private/one"), ("b", "/private/two")] {
        t.cmd(&format!(
            "{tag} SETMETADATA \"\" ({key} {{{}+}}\r\n{v})",
            v.len()
        ))
        .ok();
    }
    let w = "y".repeat(5 * 1024);
    t.cmd(&format!(
        "c SETMETADATA \"\" (/private/three {{{}+}}\r\n{w})",
        w.len()
    ))
    .no()
    .has("c NO [METADATA MAXSIZE 4096] Metadata too large (at most 65536 bytes in all)");
    assert_eq!(t.store().metadata_usage(account), (2, 60 * 1024));
    // Shrinking an entry makes room.
    t.cmd("d SETMETADATA \"\" (/private/one \"small\")").ok();
    t.cmd(&format!(
        "e SETMETADATA \"\" (/private/three {{{}+}}\r\n{w})",
        w.len()
    ))
    .ok();
}

/// Each failed login gets `NO`; the connection's third failure (LOGIN or AUTHENTICATE alike)
/// also gets `* BYE` and a close, and nothing after it is read.
#[test]
fn third_failed_login_closes_the_connection() {
    use crate::accounts::LoginError;
    let mut t = T::new();
    t.drive();
    let attempts: [&[u8]; 3] = [
        b"f1 LOGIN a@x wrong\r\n",
        b"f2 AUTHENTICATE PLAIN YUB4AGFAeAB3cm9uZw==\r\n",
        b"f3 LOGIN a@x wrong\r\n",
    ];
    let mut out = String::new();
    for (i, attempt) in attempts.iter().enumerate() {
        t.s.receive(attempt, t.now);
        let Some(Action::Effect(Effect::Login { .. })) = t.s.poll_action() else {
            panic!("login effect expected for attempt {}", i + 1)
        };
        t.s.complete(EffectResult::Login(Err(LoginError::Failed)), t.now);
        out = t.drive();
        assert!(
            out.contains(&format!("f{} NO [AUTHENTICATIONFAILED]", i + 1)),
            "{out}"
        );
        if i < 2 {
            assert!(!out.contains("BYE"), "closed too early: {out}");
            assert!(t.s.wants_input());
        }
    }
    assert!(
        out.contains("* BYE Too many failed authentication attempts"),
        "{out}"
    );
    assert_eq!(t.actions.last().map(String::as_str), Some("Close"));
    t.s.receive(b"f4 NOOP\r\n", t.now);
    assert!(!t.drive().contains("f4"));
}
