//! [`MemoryStore`]: the store without a disk, for session tests. It runs the same planning and
//! index code as the real store (the kind modules under `record/` and `Index`), so it
//! validates, numbers and refuses exactly as [`Store`](super::Store) does; only the log is
//! missing. A commit is planned and applied at once, under one lock, before `commit` returns.
//!
//! Differences from the real store, by design: nothing survives the value, there is no
//! batching and no fsync, and [`BodyRef`]s differ (every body is its own "segment" here; a body
//! is dropped when no message refers to it any more). Compare views by body bytes, not refs.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::index::{Account, Index};
use super::record::{self, Planner, Record};
use super::{
    AccountId, AccountInfo, Body, BodyBytes, BodyRef, Commit, Error, MailboxId, MailboxInfo,
    MailboxView, Mailstore, MessageMeta, Op, OpResult, QueueDestination, QueueEntry, QueueId,
    StoreConfig, Watchers,
};

/// An in-memory [`Mailstore`]; cheap to clone, clones share the state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    watchers: Watchers,
    /// The next queue sequence number, bumped after every commit that adds queue entries.
    queue_watch: tokio::sync::watch::Sender<u64>,
    /// The next notification sequence number, bumped after every commit that adds some.
    notify_watch: tokio::sync::watch::Sender<u64>,
    max_mailbox_size: u64,
    max_mailbox_messages: u64,
}

#[derive(Default)]
struct State {
    index: Index,
    /// Bodies by the `segment` of their [`BodyRef`].
    bodies: HashMap<u32, Arc<[u8]>>,
    next_body: u32,
}

/// Planning over the memory state: records are applied to the index as they are emitted.
struct Planning<'a> {
    state: &'a mut State,
    max_mailbox_size: u64,
    max_mailbox_messages: u64,
    /// Accounts whose watchers wake after the op.
    touched: BTreeSet<AccountId>,
}

impl Planner for Planning<'_> {
    fn index(&self) -> &Index {
        &self.state.index
    }

    fn max_mailbox_size(&self) -> u64 {
        self.max_mailbox_size
    }

    fn max_mailbox_messages(&self) -> u64 {
        self.max_mailbox_messages
    }

    fn append_body(&mut self, body: &[u8]) -> Result<BodyRef, Error> {
        let len = u32::try_from(body.len()).map_err(|_| Error::Invalid("message too large"))?;
        let segment = self.state.next_body;
        self.state.next_body = segment
            .checked_add(1)
            .ok_or(Error::Invalid("memory store full"))?;
        self.state.bodies.insert(segment, Arc::from(body));
        Ok(BodyRef {
            segment,
            offset: 0,
            len,
        })
    }

    fn copy_body(&mut self, body: BodyRef) -> Result<BodyRef, Error> {
        let bytes = self
            .state
            .bodies
            .get(&body.segment)
            .cloned()
            .ok_or(Error::NotFound("body"))?;
        self.append_body(&bytes)
    }

    fn emit(&mut self, rec: Record) -> Result<(), Error> {
        // The writer's publish step, on the only index there is.
        if let Some(a) = self.state.index.apply(&rec) {
            self.touched.insert(a);
        }
        rec.also_wakes(&mut self.touched);
        Ok(())
    }
}

impl MemoryStore {
    /// An empty store; of `config` only the per-account caps matter.
    pub fn new(config: &StoreConfig) -> MemoryStore {
        MemoryStore {
            inner: Arc::new(Inner {
                state: Mutex::default(),
                watchers: Watchers::default(),
                queue_watch: tokio::sync::watch::Sender::new(Index::default().queue.next_seq()),
                notify_watch: tokio::sync::watch::Sender::new(0),
                max_mailbox_size: config.max_mailbox_size,
                max_mailbox_messages: config.max_mailbox_messages,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("memory store lock should not be poisoned")
    }

    /// Plan and apply `op` now; wake the watchers of the accounts it changed.
    pub fn commit_now(&self, op: Op) -> Result<OpResult, Error> {
        let mut state = self.state();
        let next_seq = state.index.queue.next_seq();
        let notify_seq = state.index.notify.next_seq();
        let mut planning = Planning {
            state: &mut state,
            max_mailbox_size: self.inner.max_mailbox_size,
            max_mailbox_messages: self.inner.max_mailbox_messages,
            touched: BTreeSet::new(),
        };
        let result = record::plan(&mut planning, op);
        let touched = planning.touched;
        // Lock order: state, then watchers (as in `watch`).
        let State { index, bodies, .. } = &mut *state;
        bodies.retain(|segment, _| index.seg_refs.contains_key(segment));
        self.inner.watchers.wake(touched, |a| index.modseq(a));
        if index.queue.next_seq() != next_seq {
            self.inner.queue_watch.send_replace(index.queue.next_seq());
        }
        if index.notify.next_seq() != notify_seq {
            self.inner
                .notify_watch
                .send_replace(index.notify.next_seq());
        }
        result
    }

    /// All accounts, by id.
    pub fn accounts(&self) -> Vec<AccountInfo> {
        self.state().index.account_infos()
    }

    /// Every message of an account with its mailbox, in mailbox id then UID order.
    pub fn messages(&self, account: AccountId) -> Vec<(MailboxId, MessageMeta)> {
        self.state().index.messages(account)
    }
}

impl Mailstore for MemoryStore {
    fn account(&self, addr: &str) -> Option<AccountInfo> {
        self.state().index.account_by_addr(addr)
    }
    fn account_by_id(&self, id: AccountId) -> Option<AccountInfo> {
        self.state().index.account(id).map(Account::info)
    }
    fn mailboxes(&self, account: AccountId) -> Vec<MailboxInfo> {
        self.state().index.mailbox_infos(account)
    }
    fn mailbox_view(&self, account: AccountId, name: &str) -> Option<MailboxView> {
        self.state().index.view_by_name(account, name)
    }
    fn mailbox_view_by_id(&self, account: AccountId, id: MailboxId) -> Option<MailboxView> {
        self.state().index.view_by_id(account, id)
    }
    fn subscriptions(&self, account: AccountId) -> Vec<String> {
        self.state().index.subscription_list(account)
    }
    fn read(&self, body: BodyRef) -> Result<Body, Error> {
        let bytes = self
            .state()
            .bodies
            .get(&body.segment)
            .cloned()
            .ok_or(Error::NotFound("body"))?;
        let len = body.len as usize;
        if body.offset != 0 || len > bytes.len() {
            return Err(Error::NotFound("body"));
        }
        Ok(Body {
            bytes: BodyBytes::Memory(bytes),
            start: 0,
            len,
        })
    }
    fn metadata(
        &self,
        account: AccountId,
        mailbox: Option<MailboxId>,
        key: &str,
    ) -> Option<Vec<u8>> {
        self.state().index.metadata_value(account, mailbox, key)
    }
    fn metadata_usage(&self, account: AccountId) -> (usize, u64) {
        self.state().index.metadata_usage(account)
    }
    fn quota(&self, account: AccountId) -> (u64, u64) {
        (
            self.state().index.bytes_used(account),
            self.inner.max_mailbox_size,
        )
    }
    fn watch(&self, account: AccountId) -> tokio::sync::watch::Receiver<u64> {
        // Lock order: state, then watchers (as in `commit_now`), so no commit falls between
        // reading the modseq and creating the channel.
        let state = self.state();
        self.inner
            .watchers
            .watch(account, || state.index.modseq(account))
    }
    fn commit(&self, op: Op) -> Commit {
        let result = self.commit_now(op);
        Box::pin(std::future::ready(result))
    }
    fn queue_len(&self) -> u64 {
        self.state().index.queue.len()
    }
    fn queue_destinations(&self) -> Vec<QueueDestination> {
        self.state().index.queue.destinations()
    }
    fn queue_ids(&self, destination: &str, after: Option<QueueId>, limit: usize) -> Vec<QueueId> {
        self.state().index.queue.ids(destination, after, limit)
    }
    fn queue_entry(&self, id: QueueId) -> Result<QueueEntry, Error> {
        let (destination, e, bytes) = {
            let state = self.state();
            let (d, e) = state
                .index
                .queue
                .get(id)
                .ok_or(Error::NotFound("queue entry"))?;
            let bytes = state
                .bodies
                .get(&e.segment)
                .cloned()
                .ok_or(Error::NotFound("body"))?;
            (d.to_owned(), e, bytes)
        };
        let len = bytes.len();
        let stored = Body {
            bytes: BodyBytes::Memory(bytes),
            start: 0,
            len,
        };
        QueueEntry::read(id, &destination, e, stored)
    }
    fn queue_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.queue_watch.subscribe()
    }
    fn notify_pending(&self, from: u64, limit: usize) -> Vec<crate::store::PendingNotify> {
        self.state().index.notify.since(from, limit)
    }
    fn notify_get(&self, account: AccountId) -> Option<crate::store::PendingNotify> {
        self.state().index.notify.get(account)
    }
    fn notify_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.notify_watch.subscribe()
    }
    fn device_tokens(&self, account: AccountId, now: i64) -> Vec<String> {
        let value = self.metadata(
            account,
            Some(crate::store::index::INBOX_ID),
            crate::store::notify::TOKENS_KEY,
        );
        crate::store::notify::live(value.as_deref(), now)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The double against the real store (temp dir, real fsync, reopened now and then): the same
    //! op sequence must give the same results and the same views.

    use super::*;
    use crate::store::tests::{cfg, reopen};
    use crate::store::{Flag, FlagMode};
    use proptest::prelude::*;

    const ADDRS: [&str; 4] = ["a@x", "b@x", "A@X", "c@x"];
    const NAMES: [&str; 7] = ["INBOX", "A", "B", "A/x", "B/x", "bad/", "inbox"];
    const KEYS: [&str; 3] = ["/private/k", "/shared/comment", ""];

    /// An op over a small universe: account ids 1..=4 (some missing), mailbox ids 1..=6, UIDs
    /// 1..=8, so that every refusal path is reached too.
    #[derive(Debug, Clone)]
    enum T {
        Op(Op),
        /// `QueueDone` of these recipients of the n-th live queue entry (modulo their number),
        /// alone or in a group with an op after it (the delivery engine's bounce).
        DoneNth(usize, Vec<u32>, Option<Op>),
        Reopen,
    }

    fn flags() -> impl Strategy<Value = Vec<Flag>> {
        proptest::sample::subsequence(
            vec![
                Flag::Seen,
                Flag::Flagged,
                Flag::Deleted,
                Flag::Keyword("$a".into()),
                Flag::Keyword("$B".into()),
                Flag::Keyword("$b".into()),
                Flag::Keyword("bad kw".into()),
            ],
            0..4,
        )
    }

    fn uids() -> impl Strategy<Value = Vec<u32>> {
        proptest::collection::vec(1..9u32, 0..4)
    }

    /// An `Enqueue` over a few destinations (one of them refused) and recipients, sometimes
    /// more than fit one entry.
    fn enqueue() -> impl Strategy<Value = Op> {
        let dest = prop_oneof![
            6 => proptest::sample::select(vec!["b.example", "c.example", "[10.0.0.1]"]),
            1 => Just("B.x"),
        ];
        let rcpt = proptest::sample::select(vec!["r@b.example", "s@c.example", "t@x"]);
        let rcpts = prop_oneof![
            8 => proptest::collection::vec(rcpt.clone(), 1..4),
            2 => proptest::collection::vec(rcpt, 30..40),
            1 => Just(Vec::new()),
        ];
        (
            proptest::sample::select(vec!["", "a@x"]),
            0..3i64,
            proptest::collection::vec((dest, rcpts), 0..3),
            0..600usize,
        )
            .prop_map(|(sender, created, destinations, n)| Op::Enqueue {
                sender: sender.into(),
                created,
                destinations: destinations
                    .into_iter()
                    .map(|(d, rs)| (d.to_owned(), rs.into_iter().map(String::from).collect()))
                    .collect(),
                body: vec![b'q'; n],
            })
    }

    /// A `QueueDone` of an id near the ones handed out (ids start at 1, slots at 0).
    fn queue_done() -> impl Strategy<Value = Op> {
        (
            1..10u64,
            0..2u32,
            proptest::collection::vec(prop_oneof![8 => 0..3u32, 1 => 30..34u32], 0..4),
        )
            .prop_map(|(seq, slot, recipients)| Op::QueueDone {
                id: QueueId { seq, slot },
                recipients,
            })
    }

    fn op() -> impl Strategy<Value = T> {
        // Mostly the accounts and mailboxes that exist, sometimes others.
        let acc = prop_oneof![6 => 1..3u32, 1 => 3..5u32];
        let mb = prop_oneof![4 => 1..3u32, 1 => 3..7u32];
        let name = proptest::sample::select(NAMES.to_vec()).prop_map(String::from);
        prop_oneof![
            1 => (proptest::sample::select(ADDRS.to_vec()), 0..3i64).prop_map(|(a, t)| {
                T::Op(Op::CreateAccount {
                    addr: a.into(),
                    password_hash: "h".into(),
                    now: 1_700_000_000 + t,
                })
            }),
            1 => (acc.clone(), 19_000..19_003u32)
                .prop_map(|(account, day)| T::Op(Op::SetLastLogin { account, day })),
            4 => (
                proptest::collection::vec(acc.clone(), 0..4),
                proptest::option::of(acc.clone()),
                0..1200usize,
            )
                .prop_map(|(recipients, sender, n)| T::Op(Op::Deliver {
                    recipients,
                    sender,
                    internal_date: 5,
                    body: vec![b'd'; n],
                })
            ),
            3 => (acc.clone(), mb.clone(), flags(), 0..900usize).prop_map(
                |(account, mailbox, flags, n)| T::Op(Op::Append {
                    account,
                    mailbox,
                    flags,
                    internal_date: 6,
                    body: vec![b'a'; n],
                })
            ),
            1 => (proptest::sample::select(ADDRS.to_vec()), 0..3u32, 19_000..19_002u32).prop_map(
                |(a, v, day)| T::Op(Op::ImportAccount {
                    addr: a.into(),
                    password_hash: "h".into(),
                    created: 1_700_000_000,
                    inbox_uid_validity: v * 1000,
                    last_login_day: day,
                })
            ),
            1 => (acc.clone(), name.clone(), 0..3u32, 0..12u32).prop_map(
                |(account, name, v, uid_next)| T::Op(Op::ImportMailbox {
                    account,
                    name,
                    uid_validity: v * 1000,
                    uid_next,
                })
            ),
            2 => (acc.clone(), mb.clone(), 0..8u32, flags(), 0..500usize).prop_map(
                |(account, mailbox, uid, flags, n)| T::Op(Op::ImportMessage {
                    account,
                    mailbox,
                    uid,
                    flags,
                    internal_date: 8,
                    body: vec![b'i'; n],
                })
            ),
            3 => (acc.clone(), mb.clone(), uids(), 0..3usize, flags(), proptest::option::of(0..6u64))
                .prop_map(|(account, mailbox, uids, mode, flags, unchanged_since)| {
                    T::Op(Op::SetFlags {
                        account,
                        mailbox,
                        uids,
                        mode: [FlagMode::Add, FlagMode::Remove, FlagMode::Replace][mode],
                        flags,
                        unchanged_since,
                    })
                }),
            2 => (acc.clone(), mb.clone(), uids())
                .prop_map(|(account, mailbox, uids)| T::Op(Op::Expunge { account, mailbox, uids })),
            2 => (acc.clone(), mb.clone(), mb.clone(), uids(), any::<bool>()).prop_map(
                |(account, from, to, uids, remove_source)| T::Op(Op::Copy {
                    account,
                    from,
                    to,
                    uids,
                    remove_source,
                })
            ),
            3 => (acc.clone(), name.clone())
                .prop_map(|(account, name)| T::Op(Op::CreateMailbox { account, name })),
            1 => (acc.clone(), mb.clone())
                .prop_map(|(account, mailbox)| T::Op(Op::DeleteMailbox { account, mailbox })),
            1 => (acc.clone(), mb.clone(), name.clone())
                .prop_map(|(account, mailbox, to)| T::Op(Op::RenameMailbox { account, mailbox, to })),
            1 => (acc.clone(), name, any::<bool>()).prop_map(|(account, name, subscribed)| {
                T::Op(Op::Subscribe { account, name, subscribed })
            }),
            2 => (
                acc.clone(),
                proptest::option::of(mb),
                proptest::sample::select(KEYS.to_vec()),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
            )
                .prop_map(|(account, mailbox, key, value)| T::Op(Op::SetMetadata {
                    account,
                    mailbox,
                    key: key.into(),
                    value,
                })),
            1 => acc.clone().prop_map(|account| T::Op(Op::DeleteAccount { account })),
            2 => (acc.clone(), proptest::sample::select(vec!["t1", "t2", "t 3", ""]), 0..3i64)
                .prop_map(|(account, token, t)| T::Op(Op::SetDeviceToken {
                    account,
                    token: token.into(),
                    now: t,
                })),
            1 => (acc.clone(), proptest::sample::select(vec!["t1", "t2"])).prop_map(
                |(account, token)| T::Op(Op::RemoveDeviceToken {
                    account,
                    token: token.into(),
                })
            ),
            1 => (acc.clone(), 0..4u64)
                .prop_map(|(account, seq)| T::Op(Op::NotifyDone { account, seq })),
            3 => enqueue().prop_map(T::Op),
            2 => queue_done().prop_map(T::Op),
            4 => (
                any::<usize>(),
                proptest::collection::vec(prop_oneof![8 => 0..3u32, 1 => 30..34u32], 0..4),
                proptest::option::of(enqueue()),
            )
                .prop_map(|(n, recipients, then)| T::DoneNth(n, recipients, then)),
            2 => proptest::collection::vec(
                prop_oneof![
                    enqueue(),
                    queue_done(),
                    (acc, 0..300usize).prop_map(|(a, n)| Op::Deliver {
                        recipients: vec![a],
                        sender: None,
                        internal_date: 7,
                        body: vec![b'g'; n],
                    }),
                ],
                0..4,
            )
            .prop_map(|ops| T::Op(Op::Group(ops))),
            1 => Just(T::Reopen),
        ]
    }

    /// Everything a session or the delivery engine can read, with bodies as bytes (body refs
    /// differ by design).
    fn snapshot(s: &dyn Mailstore) -> Vec<String> {
        let mut out = crate::store::queue_tests::queue_dump(s);
        for addr in ADDRS {
            out.push(format!("{addr}: {:?}", s.account(addr)));
        }
        for a in 0..6 {
            out.push(format!("account {a}: {:?}", s.account_by_id(a)));
            out.push(format!("quota: {:?}", s.quota(a)));
            out.push(format!("subscriptions: {:?}", s.subscriptions(a)));
            out.push(format!("mailboxes: {:?}", s.mailboxes(a)));
            for key in KEYS {
                out.push(format!("meta {key}: {:?}", s.metadata(a, None, key)));
            }
            for mb in 0..8 {
                let Some(v) = s.mailbox_view_by_id(a, mb) else {
                    continue;
                };
                assert_eq!(
                    s.mailbox_view(a, &v.name).map(|n| n.id),
                    Some(v.id),
                    "view by name"
                );
                out.push(format!(
                    "view {} {} {} {} {} {:?}",
                    v.id, v.name, v.uid_validity, v.uid_next, v.highest_modseq, v.keywords
                ));
                for key in KEYS {
                    out.push(format!("  meta {key}: {:?}", s.metadata(a, Some(mb), key)));
                }
                for m in &v.messages {
                    let body = s.read(m.body).unwrap();
                    out.push(format!(
                        "  {} {:#x} {} {} {} {:?}",
                        m.uid,
                        m.flags,
                        m.modseq,
                        m.internal_date,
                        m.size,
                        &body[..]
                    ));
                }
            }
        }
        out
    }

    fn run(ops: Vec<T>) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.segment_size = 4096;
        c.max_mailbox_size = 4000;
        let mut real = reopen(dir.path(), c.clone());
        let memory = MemoryStore::new(&c);
        let setup = ["a@x", "b@x"].map(|addr| {
            T::Op(Op::CreateAccount {
                addr: addr.into(),
                password_hash: "h".into(),
                now: 1_700_000_000,
            })
        });
        for (n, t) in setup.into_iter().chain(ops).enumerate() {
            let t = match t {
                T::DoneNth(k, recipients, then) => {
                    let live: Vec<QueueId> = real
                        .queue_destinations()
                        .iter()
                        .flat_map(|d| real.queue_ids(&d.name, None, usize::MAX))
                        .collect();
                    let Some(&id) = live.get(k % live.len().max(1)) else {
                        continue;
                    };
                    let done = Op::QueueDone { id, recipients };
                    T::Op(match then {
                        Some(op) => Op::Group(vec![done, op]),
                        None => done,
                    })
                }
                t => t,
            };
            match t {
                T::DoneNth(..) => unreachable!("resolved above"),
                T::Op(op) => {
                    let want = format!("{:?}", real.commit_blocking(op.clone()));
                    let got = format!("{:?}", memory.commit_now(op.clone()));
                    assert_eq!(got, want, "op {n}: {op:?}");
                }
                T::Reopen => {
                    drop(real);
                    real = reopen(dir.path(), c.clone());
                }
            }
            let (got, want) = (snapshot(&memory), snapshot(&real));
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g, w, "after op {n}");
            }
            assert_eq!(got.len(), want.len(), "after op {n}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn memory_store_matches_the_real_store(ops in proptest::collection::vec(op(), 1..50)) {
            run(ops);
        }
    }

    /// Behind `dyn Mailstore`, as sessions will hold it: commit resolves at once, watchers of
    /// every recipient wake with the new modseq, unreferenced bodies are dropped.
    #[test]
    fn commit_watch_and_read_through_the_trait() {
        let memory = MemoryStore::new(&StoreConfig::default());
        let s: Arc<dyn Mailstore> = Arc::new(memory.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let create = |addr: &str| match rt
            .block_on(s.commit(Op::CreateAccount {
                addr: addr.into(),
                password_hash: "h".into(),
                now: 0,
            }))
            .unwrap()
        {
            OpResult::AccountCreated(id) => id,
            r => panic!("{r:?}"),
        };
        let (a, b) = (create("a@x"), create("b@x"));
        let mut wa = s.watch(a);
        let mut wb = s.watch(b);
        assert!(!wa.has_changed().unwrap());
        let r = rt
            .block_on(s.commit(Op::Deliver {
                recipients: vec![a, b],
                sender: None,
                internal_date: 1,
                body: b"hello".to_vec(),
            }))
            .unwrap();
        assert!(
            matches!(&r, OpResult::Delivered(v) if v == &[Ok(1), Ok(1)]),
            "{r:?}"
        );
        assert!(wa.has_changed().unwrap() && wb.has_changed().unwrap());
        assert_eq!(*wa.borrow_and_update(), 2);
        assert_eq!(*wb.borrow_and_update(), 2);
        let m = s.mailbox_view(a, "inbox").unwrap().messages[0];
        assert_eq!(&s.read(m.body).unwrap()[..], b"hello");
        // The copy in b's INBOX keeps the body alive; expunging both drops it.
        for acc in [a, b] {
            memory
                .commit_now(Op::Expunge {
                    account: acc,
                    mailbox: crate::store::index::INBOX_ID,
                    uids: vec![1],
                })
                .unwrap();
            assert_eq!(memory.state().bodies.len(), usize::from(acc == a));
        }
        assert!(matches!(s.read(m.body), Err(Error::NotFound(_))));
        assert!(wa.has_changed().unwrap());
        assert_eq!(memory.accounts().len(), 2);
    }
}
