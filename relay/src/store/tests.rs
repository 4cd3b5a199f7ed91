//! Store tests: real files in temp dirs, real fsync.

#![allow(clippy::unwrap_used)]

use super::*;

pub(super) fn cfg() -> StoreConfig {
    StoreConfig {
        max_mailbox_size: 1 << 20,
        max_mailbox_messages: 100_000,
        segment_size: 1 << 16,
        fsync: true,
    }
}

pub(super) fn new_account(s: &Store, addr: &str) -> AccountId {
    match s
        .commit_blocking(Op::CreateAccount {
            addr: addr.into(),
            password_hash: "{SHA512-CRYPT}$6$x".into(),
            now: 1_700_000_000,
        })
        .unwrap()
    {
        OpResult::AccountCreated(id) => id,
        r => panic!("unexpected {r:?}"),
    }
}

pub(super) fn deliver(s: &Store, to: &[AccountId], body: &[u8]) -> Vec<Result<u32, DeliverError>> {
    match s
        .commit_blocking(Op::Deliver {
            recipients: to.to_vec(),
            sender: None,
            internal_date: 1_700_000_100,
            body: body.to_vec(),
        })
        .unwrap()
    {
        OpResult::Delivered(r) => r,
        r => panic!("unexpected {r:?}"),
    }
}

/// `Store::open`, waiting out `Locked` for a moment: a child process spawned by another test
/// (the crash test) can hold a copy of the lock's file descriptor between its fork and exec.
pub(super) fn reopen(dir: &Path, c: StoreConfig) -> Store {
    for _ in 0..100 {
        match Store::open(dir, c.clone()) {
            Err(Error::Locked(_)) => std::thread::sleep(std::time::Duration::from_millis(10)),
            r => return r.unwrap_or_else(|e| panic!("open {}: {e}", dir.display())),
        }
    }
    panic!("store {} stays locked", dir.display())
}

fn inbox(s: &Store, a: AccountId) -> MailboxView {
    s.mailbox_view(a, "INBOX").unwrap()
}

fn body_of(s: &Store, m: &MessageMeta) -> Vec<u8> {
    s.read(m.body).unwrap().to_vec()
}

#[test]
fn create_account_deliver_read_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b);
    {
        let s = reopen(dir.path(), cfg());
        a = new_account(&s, "alice@x");
        b = new_account(&s, "bob@x");
        assert_ne!(a, b);
        assert!(matches!(
            s.commit_blocking(Op::CreateAccount {
                addr: "alice@x".into(),
                password_hash: String::new(),
                now: 0
            }),
            Err(Error::Exists(_))
        ));
        assert_eq!(s.account("alice@x").unwrap().id, a);
        assert_eq!(s.account("Alice@X").unwrap().id, a);
        assert_eq!(s.account_by_id(b).unwrap().addr, "bob@x");
        assert_eq!(
            deliver(&s, &[a, b, 999], b"hello"),
            vec![Ok(1), Ok(1), Err(DeliverError::NoSuchAccount)]
        );
        assert_eq!(deliver(&s, &[a], b"second"), vec![Ok(2)]);
        let v = inbox(&s, a);
        assert_eq!(v.messages.len(), 2);
        assert_eq!(body_of(&s, &v.messages[0]), b"hello");
        assert_eq!(body_of(&s, &v.messages[1]), b"second");
        assert_eq!(v.uid_next, 3);
        // Body stored once for both recipients.
        assert_eq!(inbox(&s, b).messages[0].body, v.messages[0].body);
        assert_eq!(s.quota(a).0, 11);
        assert_eq!(s.accounts().len(), 2);
        assert_eq!(s.messages(a).len(), 2);
    }
    let s = reopen(dir.path(), cfg());
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), 2);
    assert_eq!(body_of(&s, &v.messages[1]), b"second");
    assert_eq!(s.quota(a).0, 11);
    assert_eq!(deliver(&s, &[a], b"third"), vec![Ok(3)]);
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    assert!(matches!(
        Store::open(dir.path(), cfg()),
        Err(Error::Locked(_))
    ));
    drop(s);
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    let other = s.clone();
    s.close();
    assert!(matches!(
        other.commit_blocking(Op::DeleteAccount { account: a }),
        Err(Error::Closed)
    ));
    assert!(other.account_by_id(a).is_some(), "reads work after close");
}

#[test]
fn message_count_cap_refuses_deliveries_appends_and_copies_until_messages_go() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.max_mailbox_messages = 3;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    let b = new_account(&s, "b@x");
    assert_eq!(deliver(&s, &[a], b"1"), vec![Ok(1)]);
    // One op with a twice: the second copy is the third message, still within the cap.
    assert_eq!(deliver(&s, &[a, a], b"2"), vec![Ok(2), Ok(3)]);
    // Tiny messages, plenty of byte quota: the count refuses a only.
    assert_eq!(
        deliver(&s, &[a, b], b"4"),
        vec![Err(DeliverError::OverQuota), Ok(1)]
    );
    let append = |s: &Store| {
        s.commit_blocking(Op::Append {
            account: a,
            mailbox: index::INBOX_ID,
            flags: vec![],
            internal_date: 0,
            body: b"x".to_vec(),
        })
    };
    assert!(matches!(append(&s), Err(Error::OverQuota)));
    let other = match s
        .commit_blocking(Op::CreateMailbox {
            account: a,
            name: "Other".into(),
        })
        .unwrap()
    {
        OpResult::MailboxCreated(id) => id,
        r => panic!("{r:?}"),
    };
    let copy = |s: &Store, remove_source| {
        s.commit_blocking(Op::Copy {
            account: a,
            from: index::INBOX_ID,
            to: other,
            uids: vec![1],
            remove_source,
        })
    };
    assert!(matches!(copy(&s, false), Err(Error::OverQuota)));
    // MOVE adds no message.
    assert!(matches!(copy(&s, true), Ok(OpResult::Copied { .. })));
    assert_eq!(s.account_by_id(a).unwrap().messages, 3);
    // Expunging one makes room for one, also after a restart (the count is the index's).
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: index::INBOX_ID,
        uids: vec![2],
    })
    .unwrap();
    drop(s);
    let s = reopen(dir.path(), c);
    assert!(matches!(append(&s), Ok(OpResult::Appended { .. })));
    assert!(matches!(append(&s), Err(Error::OverQuota)));
}

#[test]
fn quota_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.max_mailbox_size = 100;
    let s = reopen(dir.path(), c);
    let a = new_account(&s, "a@x");
    let b = new_account(&s, "b@x");
    assert_eq!(deliver(&s, &[a], &[b'x'; 60]), vec![Ok(1)]);
    // a is at 60/100: 50 more is refused for a only.
    assert_eq!(
        deliver(&s, &[a, b], &[b'y'; 50]),
        vec![Err(DeliverError::OverQuota), Ok(1)]
    );
    assert_eq!(s.quota(a), (60, 100));
    assert_eq!(s.quota(b), (50, 100));
    let r = s.commit_blocking(Op::Append {
        account: a,
        mailbox: index::INBOX_ID,
        flags: vec![],
        internal_date: 0,
        body: vec![b'z'; 41],
    });
    assert!(matches!(r, Err(Error::OverQuota)), "{r:?}");
    // Exactly up to the limit is fine.
    let r = s.commit_blocking(Op::Append {
        account: a,
        mailbox: index::INBOX_ID,
        flags: vec![],
        internal_date: 0,
        body: vec![b'z'; 40],
    });
    assert!(matches!(r, Ok(OpResult::Appended { uid: 2, .. })), "{r:?}");
    // COPY needs quota too; MOVE does not.
    let r = s.commit_blocking(Op::Copy {
        account: a,
        from: index::INBOX_ID,
        to: index::INBOX_ID,
        uids: vec![1],
        remove_source: false,
    });
    assert!(matches!(r, Err(Error::OverQuota)), "{r:?}");
    let mb = match s
        .commit_blocking(Op::CreateMailbox {
            account: a,
            name: "Other".into(),
        })
        .unwrap()
    {
        OpResult::MailboxCreated(id) => id,
        r => panic!("{r:?}"),
    };
    let r = s.commit_blocking(Op::Copy {
        account: a,
        from: index::INBOX_ID,
        to: mb,
        uids: vec![1],
        remove_source: true,
    });
    assert!(matches!(r, Ok(OpResult::Copied { .. })), "{r:?}");
    assert_eq!(s.quota(a).0, 100);
    // Expunge frees quota.
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: mb,
        uids: vec![1],
    })
    .unwrap();
    assert_eq!(s.quota(a).0, 40);
    assert_eq!(s.account_by_id(a).unwrap().messages, 1);
}

#[test]
fn flags_keywords_and_unchanged_since() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    deliver(&s, &[a], b"1");
    deliver(&s, &[a], b"2");
    let before = inbox(&s, a);
    let r = s
        .commit_blocking(Op::SetFlags {
            account: a,
            mailbox: before.id,
            uids: vec![1, 2, 77],
            mode: FlagMode::Add,
            flags: vec![Flag::Seen, Flag::Keyword("$MDNSent".into())],
            unchanged_since: None,
        })
        .unwrap();
    let OpResult::FlagsSet { changed, modified } = r else {
        panic!("{r:?}")
    };
    assert!(modified.is_empty());
    assert_eq!(changed.len(), 2);
    let kw = 1 << flag_bits::KEYWORD_SHIFT;
    assert_eq!(changed[0].1, flag_bits::SEEN | kw);
    let v = inbox(&s, a);
    assert_eq!(v.keywords, vec!["$MDNSent".to_string()]);
    assert!(v.highest_modseq > before.highest_modseq);
    assert_eq!(v.messages[0].modseq, v.highest_modseq);
    // UNCHANGEDSINCE older than the message's modseq: refused.
    let r = s
        .commit_blocking(Op::SetFlags {
            account: a,
            mailbox: v.id,
            uids: vec![1],
            mode: FlagMode::Remove,
            flags: vec![Flag::Keyword("$mdnsent".into())],
            unchanged_since: Some(v.highest_modseq - 1),
        })
        .unwrap();
    assert!(
        matches!(&r, OpResult::FlagsSet { changed, modified } if changed.is_empty() && modified == &[1]),
        "{r:?}"
    );
    // Case-insensitive keyword removal.
    s.commit_blocking(Op::SetFlags {
        account: a,
        mailbox: v.id,
        uids: vec![1],
        mode: FlagMode::Remove,
        flags: vec![Flag::Keyword("$mdnsent".into())],
        unchanged_since: Some(v.highest_modseq),
    })
    .unwrap();
    assert_eq!(inbox(&s, a).messages[0].flags, flag_bits::SEEN);
    assert_eq!(s.mailboxes(a)[0].unseen, 0);
    // Keyword table full.
    let many: Vec<Flag> = (0..flag_bits::MAX_KEYWORDS)
        .map(|i| Flag::Keyword(format!("k{i}")))
        .collect();
    let r = s.commit_blocking(Op::SetFlags {
        account: a,
        mailbox: v.id,
        uids: vec![1],
        mode: FlagMode::Add,
        flags: many,
        unchanged_since: None,
    });
    assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
}

#[test]
fn copy_shares_bodies_and_move_removes_source() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    deliver(&s, &[a], b"one");
    deliver(&s, &[a], b"two");
    let OpResult::MailboxCreated(dc) = s
        .commit_blocking(Op::CreateMailbox {
            account: a,
            name: "DeltaChat".into(),
        })
        .unwrap()
    else {
        panic!()
    };
    let r = s
        .commit_blocking(Op::Copy {
            account: a,
            from: index::INBOX_ID,
            to: dc,
            uids: vec![2, 1, 9],
            remove_source: false,
        })
        .unwrap();
    let OpResult::Copied {
        uid_validity,
        pairs,
    } = r
    else {
        panic!("{r:?}")
    };
    assert_eq!(pairs, vec![(1, 1), (2, 2)]);
    let d = s.mailbox_view(a, "DeltaChat").unwrap();
    assert_eq!(d.uid_validity, uid_validity);
    let i = inbox(&s, a);
    assert_eq!(
        d.messages[0].body, i.messages[0].body,
        "body shared, not copied"
    );
    assert_eq!(body_of(&s, &d.messages[1]), b"two");
    assert_eq!(s.quota(a).0, 12);
    let r = s
        .commit_blocking(Op::Copy {
            account: a,
            from: index::INBOX_ID,
            to: dc,
            uids: vec![1],
            remove_source: true,
        })
        .unwrap();
    assert!(
        matches!(&r, OpResult::Copied { pairs, .. } if pairs == &[(1, 3)]),
        "{r:?}"
    );
    assert_eq!(inbox(&s, a).messages.len(), 1);
    assert_eq!(s.mailbox_view(a, "DeltaChat").unwrap().messages.len(), 3);
    assert_eq!(s.quota(a).0, 12);
}

#[test]
fn mailboxes_subscriptions_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let a;
    {
        let s = reopen(dir.path(), cfg());
        a = new_account(&s, "a@x");
        let create = |name: &str| {
            s.commit_blocking(Op::CreateMailbox {
                account: a,
                name: name.into(),
            })
        };
        let OpResult::MailboxCreated(p) = create("P").unwrap() else {
            panic!()
        };
        create("P/c").unwrap();
        assert!(matches!(create("P"), Err(Error::Exists(_))));
        assert!(matches!(create("inbox"), Err(Error::Exists(_))));
        assert!(matches!(create("a//b"), Err(Error::Invalid(_))));
        assert!(matches!(
            s.commit_blocking(Op::DeleteMailbox {
                account: a,
                mailbox: index::INBOX_ID
            }),
            Err(Error::Invalid(_))
        ));
        s.commit_blocking(Op::RenameMailbox {
            account: a,
            mailbox: p,
            to: "Q".into(),
        })
        .unwrap();
        let names: Vec<_> = s.mailboxes(a).into_iter().map(|m| m.name).collect();
        assert_eq!(names, vec!["INBOX", "Q", "Q/c"]);
        let old_validity = s.mailbox_view(a, "Q/c").unwrap().uid_validity;
        let c = s.mailbox_view(a, "Q/c").unwrap().id;
        s.commit_blocking(Op::DeleteMailbox {
            account: a,
            mailbox: c,
        })
        .unwrap();
        create("Q/c").unwrap();
        assert_ne!(s.mailbox_view(a, "Q/c").unwrap().uid_validity, old_validity);
        s.commit_blocking(Op::Subscribe {
            account: a,
            name: "Nowhere".into(),
            subscribed: true,
        })
        .unwrap();
        s.commit_blocking(Op::SetMetadata {
            account: a,
            mailbox: None,
            key: "/private/devicetoken".into(),
            value: Some(b"tok".to_vec()),
        })
        .unwrap();
        s.commit_blocking(Op::SetMetadata {
            account: a,
            mailbox: Some(index::INBOX_ID),
            key: "/private/x".into(),
            value: Some(b"1".to_vec()),
        })
        .unwrap();
        s.commit_blocking(Op::SetMetadata {
            account: a,
            mailbox: Some(index::INBOX_ID),
            key: "/private/x".into(),
            value: None,
        })
        .unwrap();
        s.commit_blocking(Op::SetLastLogin {
            account: a,
            day: 20000,
        })
        .unwrap();
    }
    let s = reopen(dir.path(), cfg());
    let names: Vec<_> = s.mailboxes(a).into_iter().map(|m| m.name).collect();
    assert_eq!(names, vec!["INBOX", "Q", "Q/c"]);
    assert_eq!(s.subscriptions(a), vec!["INBOX", "Nowhere"]);
    assert_eq!(
        s.metadata(a, None, "/private/devicetoken").as_deref(),
        Some(&b"tok"[..])
    );
    assert_eq!(s.metadata(a, Some(index::INBOX_ID), "/private/x"), None);
    assert_eq!(s.account_by_id(a).unwrap().last_login_day, 20000);
    s.commit_blocking(Op::DeleteAccount { account: a }).unwrap();
    assert!(s.account("a@x").is_none());
    assert!(s.mailboxes(a).is_empty());
}

#[test]
fn watch_changes_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    let b = new_account(&s, "b@x");
    let mut wa = s.watch(a);
    let mut wb = s.watch(b);
    assert!(!wa.has_changed().unwrap());
    deliver(&s, &[a], b"x");
    assert!(wa.has_changed().unwrap());
    assert!(!wb.has_changed().unwrap());
    let seen = *wa.borrow_and_update();
    assert_eq!(seen, inbox(&s, a).highest_modseq);
    // Async commit wakes an awaiting watcher, under a runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let fut = s.commit(Op::Deliver {
            recipients: vec![b],
            sender: None,
            internal_date: 0,
            body: b"y".to_vec(),
        });
        let r = fut.await.unwrap();
        assert!(matches!(r, OpResult::Delivered(_)));
        wb.changed().await.unwrap();
    });
    assert!(!wa.has_changed().unwrap());
    // One message to several recipients wakes every one of them.
    let c = new_account(&s, "c@x");
    let wc = s.watch(c);
    deliver(&s, &[a, b, c], b"z");
    assert!(wa.has_changed().unwrap());
    assert!(wb.has_changed().unwrap());
    assert!(wc.has_changed().unwrap());
}

#[test]
fn concurrent_commits_get_distinct_uids() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.max_mailbox_size = u64::MAX;
    let s = reopen(dir.path(), c);
    let a = new_account(&s, "a@x");
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                (0..25)
                    .map(|i| {
                        let body = format!("t{t} m{i}").into_bytes();
                        let uid = deliver(&s, &[a], &body)[0].unwrap();
                        (uid, body)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u32, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    let uids: Vec<u32> = all.iter().map(|x| x.0).collect();
    assert_eq!(uids, (1..=200).collect::<Vec<_>>());
    let v = inbox(&s, a);
    for (m, (uid, body)) in v.messages.iter().zip(&all) {
        assert_eq!(m.uid, *uid);
        assert_eq!(&body_of(&s, m), body);
    }
}

#[test]
fn large_messages_span_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 4096;
    let bodies: Vec<Vec<u8>> = (0..10u8)
        .map(|i| vec![b'a' + i; 700 * usize::from(i) + 1])
        .collect();
    let a;
    {
        let s = reopen(dir.path(), c.clone());
        a = new_account(&s, "a@x");
        for b in &bodies {
            deliver(&s, &[a], b);
        }
        let v = inbox(&s, a);
        for (m, b) in v.messages.iter().zip(&bodies) {
            assert_eq!(&body_of(&s, m), b);
        }
    }
    let s = reopen(dir.path(), c);
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), bodies.len());
    for (m, b) in v.messages.iter().zip(&bodies) {
        assert_eq!(&body_of(&s, m), b);
    }
    assert!(std::fs::read_dir(dir.path().join("log")).unwrap().count() > 2);
}

/// Frame boundaries `(start, end, kind)` of a segment file, from its start up to the end mark.
pub(super) fn frames(data: &[u8]) -> Vec<(usize, usize, u8)> {
    let mut v = Vec::new();
    let mut off = 0;
    while let format::Frame::Valid {
        kind, total_len, ..
    } = format::decode_frame(&data[off..])
    {
        v.push((off, off + total_len, kind));
        off += total_len;
    }
    v
}

fn append(s: &Store, a: AccountId, body: &[u8]) -> u32 {
    match s
        .commit_blocking(Op::Append {
            account: a,
            mailbox: index::INBOX_ID,
            flags: vec![Flag::Seen],
            internal_date: 5,
            body: body.to_vec(),
        })
        .unwrap()
    {
        OpResult::Appended { uid, .. } => uid,
        r => panic!("{r:?}"),
    }
}

/// Truncate or corrupt the last segment at every byte offset of its used length; reopen; the
/// longest valid prefix is present and nothing after it; the store keeps working.
#[test]
fn torn_tail_at_every_offset() {
    let src = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 1024;
    // About 114 bytes of log per message: 8 in the first segment, 6 in the second.
    let bodies: Vec<Vec<u8>> = (0..14u8)
        .map(|i| vec![b'a' + i; 36 + usize::from(i % 3)])
        .collect();
    {
        let s = reopen(src.path(), c.clone());
        let a = new_account(&s, "a@x");
        for b in &bodies {
            append(&s, a, b);
        }
    }
    let log_dir = src.path().join("log");
    let mut segs: Vec<_> = std::fs::read_dir(&log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 2, "test should span segments");
    let last = segs.last().unwrap().clone();
    let data = std::fs::read(&last).unwrap();
    let fr = frames(&data);
    let used = fr.last().unwrap().1;
    // Messages fully in earlier segments.
    let mut earlier = 0usize;
    for p in &segs[..segs.len() - 1] {
        earlier += frames(&std::fs::read(p).unwrap())
            .iter()
            .filter(|f| f.2 == 11)
            .count();
    }
    assert!(used > 300, "last segment should hold several messages");
    for corrupt in [false, true] {
        for k in 0..used {
            let dst = tempfile::tempdir().unwrap();
            std::fs::create_dir(dst.path().join("log")).unwrap();
            for p in &segs {
                std::fs::copy(p, dst.path().join("log").join(p.file_name().unwrap())).unwrap();
            }
            let target = dst.path().join("log").join(last.file_name().unwrap());
            let mut bytes = data.clone();
            if corrupt {
                bytes[k] ^= 0x5a;
            } else {
                bytes.truncate(k);
            }
            std::fs::write(&target, &bytes).unwrap();
            // Frames that end at or before the damaged byte survive.
            let surviving_inserts = fr.iter().filter(|f| f.1 <= k && f.2 == 11).count();
            let expect = earlier + surviving_inserts;
            let s = reopen(dst.path(), c.clone());
            // Nothing after the cut is left in the file, so a later write cannot revive it.
            let recovered = std::fs::read(&target).unwrap();
            let end = frames(&recovered).last().map_or(0, |f| f.1);
            assert!(
                recovered[end..].iter().all(|&b| b == 0),
                "corrupt={corrupt} k={k}: bytes left after the cut at {end}"
            );
            let a = s.account("a@x").unwrap().id;
            let v = inbox(&s, a);
            assert_eq!(v.messages.len(), expect, "corrupt={corrupt} k={k}");
            assert_eq!(v.uid_next as usize, expect + 1, "corrupt={corrupt} k={k}");
            for (m, b) in v.messages.iter().zip(&bodies) {
                assert_eq!(&body_of(&s, m), b, "corrupt={corrupt} k={k}");
            }
            if k % 5 == 0 {
                // The store keeps working after the cut, and the new write survives a reopen.
                assert_eq!(append(&s, a, b"after") as usize, expect + 1);
                drop(s);
                let s = reopen(dst.path(), c.clone());
                let v = inbox(&s, a);
                assert_eq!(v.messages.len(), expect + 1, "corrupt={corrupt} k={k}");
                assert_eq!(body_of(&s, v.messages.last().unwrap()), b"after");
            }
        }
    }
}

const CRASH_ENV: &str = "RELAY_STORE_CRASH_CHILD_DIR";

fn crash_body(t: u32, i: u32) -> Vec<u8> {
    let len = 10 + ((t * 7919 + i * 104_729) % 6000) as usize;
    let pat = format!("[t{t} i{i}]");
    pat.bytes().cycle().take(len).collect()
}

/// The child half of `crash_recovery`: commit messages from 4 threads forever, printing
/// `ACK <thread> <i> <uid>` after each acknowledged commit.
fn crash_child(dir: &Path) {
    let s = reopen(dir, cfg_unlimited());
    let a = s.account("crash@x").unwrap().id;
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let uid = deliver(&s, &[a], &crash_body(t, i))[0].unwrap();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {t} {i} {uid}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

pub(super) fn cfg_unlimited() -> StoreConfig {
    StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        segment_size: 256 * 1024,
        fsync: true,
    }
}

/// Re-run this test binary as a child that commits in a loop; SIGKILL it at a random moment;
/// reopen and check every acknowledged message is there with its exact bytes.
#[test]
fn crash_recovery() {
    use std::io::BufRead;
    if let Ok(dir) = std::env::var(CRASH_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let s = reopen(dir.path(), cfg_unlimited());
        new_account(&s, "crash@x");
    }
    let seed: u64 = rand::random();
    eprintln!("crash_recovery seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut acked: std::collections::BTreeMap<u32, (u32, u32)> = Default::default();
    for round in 0..6 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["store::tests::crash_recovery", "--exact", "--nocapture"])
            .env(CRASH_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ACK ") {
                    let n: Vec<u32> = rest.split(' ').map(|x| x.parse().unwrap()).collect();
                    v.push((n[2], (n[0], n[1])));
                }
            }
            v
        });
        let wait = rand::Rng::gen_range(&mut rng, 100..800);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let new = reader.join().unwrap();
        assert!(
            round > 0 || !new.is_empty(),
            "child should acknowledge something"
        );
        for (uid, id) in new {
            assert!(
                acked.insert(uid, id).is_none(),
                "uid {uid} acknowledged twice"
            );
        }
        let s = reopen(dir.path(), cfg_unlimited());
        let a = s.account("crash@x").unwrap().id;
        let v = inbox(&s, a);
        let present: std::collections::BTreeMap<u32, &MessageMeta> =
            v.messages.iter().map(|m| (m.uid, m)).collect();
        for (uid, (t, i)) in &acked {
            let m = present
                .get(uid)
                .unwrap_or_else(|| panic!("acknowledged uid {uid} lost (seed {seed})"));
            assert_eq!(
                body_of(&s, m),
                crash_body(*t, *i),
                "uid {uid} (seed {seed})"
            );
        }
        // Messages committed but not yet acknowledged are whole too.
        for m in &v.messages {
            let b = body_of(&s, m);
            let head = String::from_utf8_lossy(&b[..b.iter().position(|&c| c == b']').unwrap()]);
            let (t, i) = head[2..].split_once(" i").unwrap();
            assert_eq!(b, crash_body(t.parse().unwrap(), i.parse().unwrap()));
        }
    }
    eprintln!(
        "crash_recovery: {} acknowledged messages checked",
        acked.len()
    );
}

mod model {
    //! Random ops applied to the store and to a BTreeMap model, with reopens.

    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    const NAMES: [&str; 5] = ["INBOX", "A", "B", "A/x", "B/x"];
    const FLAGS: [&str; 4] = ["\\Seen", "\\Flagged", "$a", "$B"];

    #[derive(Debug, Clone)]
    enum MOp {
        Deliver(u16),
        Append(usize, u8, u16),
        SetFlags(usize, usize, u8, u8),
        Expunge(usize, usize),
        Copy(usize, usize, usize, bool),
        Create(usize),
        Delete(usize),
        Rename(usize, usize),
        Metadata(u8, Option<u8>),
        Checkpoint,
        Reopen,
    }

    fn mop() -> impl Strategy<Value = MOp> {
        prop_oneof![
            3 => any::<u16>().prop_map(MOp::Deliver),
            2 => (0..5usize, any::<u8>(), any::<u16>()).prop_map(|(m, f, l)| MOp::Append(m, f, l)),
            3 => (0..5usize, any::<usize>(), 0..3u8, any::<u8>())
                .prop_map(|(m, u, mode, f)| MOp::SetFlags(m, u, mode, f)),
            2 => (0..5usize, any::<usize>()).prop_map(|(m, u)| MOp::Expunge(m, u)),
            2 => (0..5usize, 0..5usize, any::<usize>(), any::<bool>())
                .prop_map(|(a, b, u, mv)| MOp::Copy(a, b, u, mv)),
            4 => (1..5usize).prop_map(MOp::Create),
            1 => (0..5usize).prop_map(MOp::Delete),
            2 => (0..5usize, 0..5usize).prop_map(|(a, b)| MOp::Rename(a, b)),
            1 => (0..3u8, proptest::option::of(any::<u8>())).prop_map(|(k, v)| MOp::Metadata(k, v)),
            1 => Just(MOp::Checkpoint),
            1 => Just(MOp::Reopen),
        ]
    }

    type Msgs = BTreeMap<u32, (Vec<u8>, BTreeSet<String>)>;

    #[derive(Default, Debug)]
    struct Mb {
        id: MailboxId,
        uid_next: u32,
        msgs: Msgs,
    }

    fn flag_set(bits: u8) -> BTreeSet<String> {
        FLAGS
            .iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .map(|(_, f)| f.to_string())
            .collect()
    }

    fn to_flags(set: &BTreeSet<String>) -> Vec<Flag> {
        set.iter()
            .map(|f| match f.as_str() {
                "\\Seen" => Flag::Seen,
                "\\Flagged" => Flag::Flagged,
                k => Flag::Keyword(k.to_string()),
            })
            .collect()
    }

    fn names_of(bits: u64, keywords: &[String]) -> BTreeSet<String> {
        let mut s = BTreeSet::new();
        if bits & flag_bits::SEEN != 0 {
            s.insert("\\Seen".to_string());
        }
        if bits & flag_bits::FLAGGED != 0 {
            s.insert("\\Flagged".to_string());
        }
        for (i, k) in keywords.iter().enumerate() {
            if bits & (1 << (flag_bits::KEYWORD_SHIFT + i as u32)) != 0 {
                s.insert(k.clone());
            }
        }
        s
    }

    fn pick(msgs: &Msgs, i: usize) -> Option<u32> {
        if msgs.is_empty() {
            None
        } else {
            msgs.keys().nth(i % msgs.len()).copied()
        }
    }

    fn check(s: &Store, a: AccountId, model: &BTreeMap<String, Mb>, meta: &BTreeMap<u8, u8>) {
        let names: Vec<String> = s.mailboxes(a).into_iter().map(|m| m.name).collect();
        assert_eq!(names, model.keys().cloned().collect::<Vec<_>>());
        let mut used = 0u64;
        for (name, mb) in model {
            let v = s.mailbox_view(a, name).unwrap();
            assert_eq!(v.id, mb.id, "{name}");
            assert_eq!(v.uid_next, mb.uid_next, "{name}");
            let got: Msgs = v
                .messages
                .iter()
                .map(|m| (m.uid, (body_of(s, m), names_of(m.flags, &v.keywords))))
                .collect();
            assert_eq!(got, mb.msgs, "{name}");
            used += mb.msgs.values().map(|m| m.0.len() as u64).sum::<u64>();
        }
        assert_eq!(s.quota(a).0, used);
        for k in 0..3u8 {
            assert_eq!(
                s.metadata(a, None, &format!("/private/k{k}")),
                meta.get(&k).map(|v| vec![*v])
            );
        }
    }

    fn run(ops: Vec<MOp>) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.segment_size = 4096;
        c.max_mailbox_size = u64::MAX;
        let mut s = reopen(dir.path(), c.clone());
        let a = new_account(&s, "m@x");
        let mut model: BTreeMap<String, Mb> = BTreeMap::new();
        model.insert(
            "INBOX".into(),
            Mb {
                id: index::INBOX_ID,
                uid_next: 1,
                msgs: Msgs::new(),
            },
        );
        let mut meta = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            let body = |l: u16| {
                format!("msg {n} ")
                    .into_bytes()
                    .repeat(1 + usize::from(l % 50))
            };
            match op {
                MOp::Deliver(l) => {
                    let b = body(l);
                    let r = deliver(&s, &[a], &b);
                    let inbox = model.get_mut("INBOX").unwrap();
                    assert_eq!(r, vec![Ok(inbox.uid_next)]);
                    inbox.msgs.insert(inbox.uid_next, (b, BTreeSet::new()));
                    inbox.uid_next += 1;
                }
                MOp::Append(m, f, l) => {
                    let Some(mb) = model.get_mut(NAMES[m]) else {
                        continue;
                    };
                    let b = body(l);
                    let fl = flag_set(f);
                    let r = s
                        .commit_blocking(Op::Append {
                            account: a,
                            mailbox: mb.id,
                            flags: to_flags(&fl),
                            internal_date: 0,
                            body: b.clone(),
                        })
                        .unwrap();
                    assert!(matches!(r, OpResult::Appended { uid, .. } if uid == mb.uid_next));
                    mb.msgs.insert(mb.uid_next, (b, fl));
                    mb.uid_next += 1;
                }
                MOp::SetFlags(m, u, mode, f) => {
                    let Some(mb) = model.get_mut(NAMES[m]) else {
                        continue;
                    };
                    let Some(uid) = pick(&mb.msgs, u) else {
                        continue;
                    };
                    let fl = flag_set(f);
                    let mode = [FlagMode::Add, FlagMode::Remove, FlagMode::Replace][mode as usize];
                    s.commit_blocking(Op::SetFlags {
                        account: a,
                        mailbox: mb.id,
                        uids: vec![uid],
                        mode,
                        flags: to_flags(&fl),
                        unchanged_since: None,
                    })
                    .unwrap();
                    let cur = &mut mb.msgs.get_mut(&uid).unwrap().1;
                    match mode {
                        FlagMode::Add => cur.extend(fl),
                        FlagMode::Remove => cur.retain(|x| !fl.contains(x)),
                        FlagMode::Replace => *cur = fl,
                    }
                }
                MOp::Expunge(m, u) => {
                    let Some(mb) = model.get_mut(NAMES[m]) else {
                        continue;
                    };
                    let Some(uid) = pick(&mb.msgs, u) else {
                        continue;
                    };
                    let r = s
                        .commit_blocking(Op::Expunge {
                            account: a,
                            mailbox: mb.id,
                            uids: vec![uid, uid + 1000],
                        })
                        .unwrap();
                    assert!(matches!(&r, OpResult::Expunged(v) if v == &[uid]), "{r:?}");
                    mb.msgs.remove(&uid);
                }
                MOp::Copy(from, to, u, mv) => {
                    let (Some(f), Some(t)) = (model.get(NAMES[from]), model.get(NAMES[to])) else {
                        continue;
                    };
                    let Some(uid) = pick(&f.msgs, u) else {
                        continue;
                    };
                    let (fid, tid) = (f.id, t.id);
                    let r = s
                        .commit_blocking(Op::Copy {
                            account: a,
                            from: fid,
                            to: tid,
                            uids: vec![uid],
                            remove_source: mv,
                        })
                        .unwrap();
                    let msg = model[NAMES[from]].msgs[&uid].clone();
                    if mv {
                        model.get_mut(NAMES[from]).unwrap().msgs.remove(&uid);
                    }
                    let t = model.get_mut(NAMES[to]).unwrap();
                    assert!(
                        matches!(&r, OpResult::Copied { pairs, .. } if pairs == &[(uid, t.uid_next)]),
                        "{r:?}"
                    );
                    t.msgs.insert(t.uid_next, msg);
                    t.uid_next += 1;
                }
                MOp::Create(m) => {
                    let r = s.commit_blocking(Op::CreateMailbox {
                        account: a,
                        name: NAMES[m].into(),
                    });
                    if model.contains_key(NAMES[m]) {
                        assert!(matches!(r, Err(Error::Exists(_))), "{r:?}");
                    } else {
                        let OpResult::MailboxCreated(id) = r.unwrap() else {
                            panic!()
                        };
                        model.insert(
                            NAMES[m].into(),
                            Mb {
                                id,
                                uid_next: 1,
                                msgs: Msgs::new(),
                            },
                        );
                    }
                }
                MOp::Delete(m) => {
                    let Some(mb) = model.get(NAMES[m]) else {
                        continue;
                    };
                    let r = s.commit_blocking(Op::DeleteMailbox {
                        account: a,
                        mailbox: mb.id,
                    });
                    if m == 0 {
                        assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
                    } else {
                        r.unwrap();
                        model.remove(NAMES[m]);
                    }
                }
                MOp::Rename(m, to) => {
                    let Some(mb) = model.get(NAMES[m]) else {
                        continue;
                    };
                    let r = s.commit_blocking(Op::RenameMailbox {
                        account: a,
                        mailbox: mb.id,
                        to: NAMES[to].into(),
                    });
                    let old = NAMES[m];
                    let new = NAMES[to];
                    let children: Vec<String> = model
                        .keys()
                        .filter(|k| k.starts_with(&format!("{old}/")))
                        .cloned()
                        .collect();
                    let children_collide = children
                        .iter()
                        .any(|c| model.contains_key(&format!("{new}{}", &c[old.len()..])));
                    if m == 0 {
                        assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
                    } else if model.contains_key(new) {
                        assert!(matches!(r, Err(Error::Exists(_))), "{r:?}");
                    } else if new.starts_with(&format!("{old}/")) {
                        assert!(matches!(r, Err(Error::Invalid(_))), "{r:?}");
                    } else if children_collide {
                        assert!(matches!(r, Err(Error::Exists(_))), "{r:?}");
                    } else {
                        r.unwrap();
                        let v = model.remove(old).unwrap();
                        model.insert(new.into(), v);
                        for c in children {
                            let v = model.remove(&c).unwrap();
                            model.insert(format!("{new}{}", &c[old.len()..]), v);
                        }
                    }
                }
                MOp::Metadata(k, v) => {
                    s.commit_blocking(Op::SetMetadata {
                        account: a,
                        mailbox: None,
                        key: format!("/private/k{k}"),
                        value: v.map(|v| vec![v]),
                    })
                    .unwrap();
                    match v {
                        Some(v) => meta.insert(k, v),
                        None => meta.remove(&k),
                    };
                }
                MOp::Checkpoint => s.checkpoint().unwrap(),
                MOp::Reopen => {
                    drop(s);
                    s = reopen(dir.path(), c.clone());
                }
            }
            check(&s, a, &model, &meta);
        }
        drop(s);
        let s = reopen(dir.path(), c);
        check(&s, a, &model, &meta);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
        #[test]
        fn store_matches_model(ops in proptest::collection::vec(mop(), 1..60)) {
            run(ops);
        }
    }
}

/// Throughput of 4 KiB Deliver commits from 32 threads with fsync on, and the raw fdatasync
/// latency of the same disk. Run with
/// `cargo test --release -p relay --lib store::tests::bench -- --ignored --nocapture`
/// (`RELAY_BENCH_DIR` picks the directory, default the system temp dir).
#[test]
#[ignore = "benchmark"]
fn bench_group_commit() {
    use std::os::unix::fs::FileExt;
    use std::time::Instant;
    let base = std::env::var("RELAY_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    let dir = tempfile::tempdir_in(&base).unwrap();

    // Raw fdatasync latency: 4 KiB pwrite + fdatasync, 200 times, into a sparse file (as the
    // store's segments, preallocated with ftruncate) and over already written blocks.
    for sparse in [true, false] {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("probe"))
            .unwrap();
        if sparse {
            f.set_len(1 << 20).unwrap();
        } else {
            f.write_all_at(&vec![0u8; 1 << 20], 0).unwrap();
            f.sync_all().unwrap();
        }
        let buf = vec![7u8; 4096];
        let mut lat = Vec::new();
        for i in 0..200u64 {
            let t = Instant::now();
            f.write_all_at(&buf, (i * 4096) % (1 << 20)).unwrap();
            f.sync_data().unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        lat.sort_by(f64::total_cmp);
        eprintln!(
            "fdatasync after 4 KiB pwrite ({}) in {}: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us",
            if sparse { "into a hole" } else { "overwrite" },
            base.display(),
            lat[100],
            lat[180],
            lat[198]
        );
    }

    let c = StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        ..StoreConfig::default()
    };
    let s = Store::open(&dir.path().join("store"), c).unwrap();
    let accounts: Vec<AccountId> = (0..32)
        .map(|i| new_account(&s, &format!("u{i}@x")))
        .collect();
    let per_thread = 1000;
    let t0 = Instant::now();
    let threads: Vec<_> = accounts
        .iter()
        .map(|&a| {
            let s = s.clone();
            std::thread::spawn(move || {
                let body = vec![b'm'; 4096];
                for _ in 0..per_thread {
                    assert!(deliver(&s, &[a], &body)[0].is_ok());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = 32 * per_thread;
    let st = s.stats();
    eprintln!(
        "{n} Deliver commits of 4 KiB from 32 threads, fsync on: {:.0} commits/s ({secs:.2} s), \
         {} batches, {:.1} ops/batch, {} fdatasyncs",
        n as f64 / secs,
        st.batches,
        st.ops as f64 / st.batches as f64,
        st.fsyncs
    );
}

pub(super) fn checkpoints(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("index"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn checkpoint_reopen_and_fallback_on_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let a;
    let expected;
    {
        let s = reopen(dir.path(), cfg());
        a = new_account(&s, "a@x");
        deliver(&s, &[a], b"before checkpoint");
        s.checkpoint().unwrap();
        assert_eq!(checkpoints(dir.path()).len(), 1);
        deliver(&s, &[a], b"after checkpoint");
        s.commit_blocking(Op::SetFlags {
            account: a,
            mailbox: index::INBOX_ID,
            uids: vec![1],
            mode: FlagMode::Add,
            flags: vec![Flag::Keyword("$k".into())],
            unchanged_since: None,
        })
        .unwrap();
        expected = inbox(&s, a);
    }
    // Shutdown wrote a second checkpoint.
    let cps = checkpoints(dir.path());
    assert_eq!(cps.len(), 2, "{cps:?}");
    let check = |s: &Store| {
        let v = inbox(s, a);
        assert_eq!(v.messages, expected.messages);
        assert_eq!(v.keywords, expected.keywords);
        assert_eq!(v.highest_modseq, expected.highest_modseq);
        assert_eq!(body_of(s, &v.messages[1]), b"after checkpoint");
        assert_eq!(s.quota(a).0, 33);
    };
    check(&reopen(dir.path(), cfg()));
    // Corrupt the newest: the older one plus replay gives the same state.
    let newest = checkpoints(dir.path()).pop().unwrap();
    let mut b = std::fs::read(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 1;
    std::fs::write(&newest, &b).unwrap();
    check(&reopen(dir.path(), cfg()));
    // Corrupt all: full replay.
    for p in checkpoints(dir.path()) {
        std::fs::write(&p, b"garbage").unwrap();
    }
    check(&reopen(dir.path(), cfg()));
}

#[test]
fn segments_without_live_bodies_are_removed_after_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 4096;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    for i in 0..40u32 {
        deliver(&s, &[a], &vec![b'0' + (i % 10) as u8; 1000]);
    }
    let before = segment_files(dir.path()).len();
    assert!(before >= 10, "{before}");
    // Keep uid 40 only.
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: index::INBOX_ID,
        uids: (1..40).collect(),
    })
    .unwrap();
    s.checkpoint().unwrap();
    deliver(&s, &[a], b"x");
    s.checkpoint().unwrap();
    let after = segment_files(dir.path()).len();
    assert!(after <= 3, "{before} -> {after} segments");
    let v = inbox(&s, a);
    assert_eq!(body_of(&s, &v.messages[0]), vec![b'9'; 1000]);
    drop(s);
    let s = reopen(dir.path(), c);
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), 2);
    assert_eq!(body_of(&s, &v.messages[0]), vec![b'9'; 1000]);
    assert_eq!(body_of(&s, &v.messages[1]), b"x");
    drop(s);
    // With the early segments gone, losing every checkpoint is reported, not papered over.
    for p in checkpoints(dir.path()) {
        std::fs::write(&p, b"garbage").unwrap();
    }
    assert!(matches!(
        Store::open(dir.path(), cfg()),
        Err(Error::Corrupt(_))
    ));
}

/// Checkpoint cost and open time for 1000 accounts x 100 messages (100k index entries).
/// `cargo test --release -p relay --lib store::tests::bench_checkpoint -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn bench_checkpoint() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        ..StoreConfig::default()
    };
    let s = reopen(dir.path(), c.clone());
    let accounts: Vec<AccountId> = (0..1000)
        .map(|i| new_account(&s, &format!("user{i}@example.org")))
        .collect();
    for i in 0..100 {
        let r = deliver(&s, &accounts, format!("message {i}").repeat(50).as_bytes());
        assert!(r.iter().all(Result::is_ok));
    }
    let t = Instant::now();
    s.checkpoint().unwrap();
    let cp = t.elapsed();
    drop(s);
    let t = Instant::now();
    let s = reopen(dir.path(), c.clone());
    let open_cp = t.elapsed();
    assert_eq!(s.accounts().len(), 1000);
    drop(s);
    let size: u64 = checkpoints(dir.path())
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .max()
        .unwrap();
    for p in checkpoints(dir.path()) {
        std::fs::remove_file(p).unwrap();
    }
    let t = Instant::now();
    let s = reopen(dir.path(), c);
    let open_replay = t.elapsed();
    assert_eq!(s.messages(accounts[999]).len(), 100);
    eprintln!(
        "100k index entries: checkpoint {cp:?}, open from checkpoint {open_cp:?}, \
         open by full replay {open_replay:?}; checkpoint file {size} bytes"
    );
}

#[test]
fn periodic_checkpoints_and_segment_removal_while_committing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg_unlimited();
    c.segment_size = 64 * 1024;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    let body = |i: u32| format!("{i:08}").repeat(500).into_bytes();
    // ~4 MB of log: several periodic checkpoints (every 1 MiB); expunging all but the last 100
    // leaves the old segments without live bodies.
    for i in 1..=1000u32 {
        assert_eq!(deliver(&s, &[a], &body(i)), vec![Ok(i)]);
        if i % 10 == 0 && i <= 900 {
            s.commit_blocking(Op::Expunge {
                account: a,
                mailbox: index::INBOX_ID,
                uids: (i - 9..=i).collect(),
            })
            .unwrap();
        }
    }
    let cps = checkpoints(dir.path());
    assert!(!cps.is_empty() && cps.len() <= 2, "{cps:?}");
    let segs = segment_files(dir.path()).len();
    assert!(segs < 32, "old segments should be removed, {segs} left");
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), 100);
    drop(s);
    let s = reopen(dir.path(), c);
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), 100);
    for m in &v.messages {
        assert_eq!(body_of(&s, m), body(m.uid));
    }
}

#[test]
fn damage_before_the_last_segment_is_refused_and_empty_leftovers_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 4096;
    let a;
    {
        let s = reopen(dir.path(), c.clone());
        a = new_account(&s, "a@x");
        for i in 0..20u8 {
            deliver(&s, &[a], &[b'a' + i; 1000]);
        }
    }
    // Only full replay shows the damage (a checkpoint would skip the old segments).
    for p in checkpoints(dir.path()) {
        std::fs::remove_file(p).unwrap();
    }
    let segs = segment_files(dir.path());
    let n = segs.len();
    assert!(n >= 4);
    // A preallocated but empty next segment (crash while rolling over) is removed.
    let next: u32 = segs[n - 1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse::<u32>()
        .unwrap()
        + 1;
    let leftover = dir.path().join("log").join(format!("{next:020}.seg"));
    std::fs::write(&leftover, vec![0u8; 4096]).unwrap();
    {
        let s = reopen(dir.path(), c.clone());
        assert_eq!(inbox(&s, a).messages.len(), 20);
    }
    assert!(!leftover.exists());
    // Damage in the middle of the log: open refuses and changes nothing.
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(victim, &bytes).unwrap();
    let before: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for p in checkpoints(dir.path()) {
        std::fs::remove_file(p).unwrap();
    }
    let r = Store::open(dir.path(), c);
    assert!(matches!(r, Err(Error::Corrupt(_))), "{:?}", r.err());
    let after: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "a refused open must not modify segments");
}

#[test]
fn deliver_edge_cases_and_account_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.max_mailbox_size = 25;
    let a;
    {
        let s = reopen(dir.path(), c.clone());
        a = new_account(&s, "a@x");
        let b = new_account(&s, "b@x");
        // The same recipient twice gets two copies, each counted against the quota.
        assert_eq!(
            deliver(&s, &[a, a, a], &[b'x'; 10]),
            vec![Ok(1), Ok(2), Err(DeliverError::OverQuota)]
        );
        assert_eq!(s.quota(a).0, 20);
        assert_eq!(deliver(&s, &[], b"nobody"), vec![]);
        s.commit_blocking(Op::DeleteAccount { account: b }).unwrap();
        assert_eq!(
            deliver(&s, &[b], b"gone"),
            vec![Err(DeliverError::NoSuchAccount)]
        );
        assert!(matches!(
            s.commit_blocking(Op::DeleteAccount { account: b }),
            Err(Error::NotFound(_))
        ));
        // A new account never reuses the deleted one's id.
        let b2 = new_account(&s, "b@x");
        assert_ne!(b2, b);
        assert_eq!(inbox(&s, b2).messages.len(), 0);
    }
    let s = reopen(dir.path(), c);
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), 2);
    assert_eq!(
        v.messages[0].body, v.messages[1].body,
        "one body for both copies"
    );
    assert_eq!(s.accounts().len(), 2);
}

#[test]
fn device_tokens_and_pending_notifications_survive_replay_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let now = 1_700_000_100;
    let (a, b, c);
    {
        let s = Store::open(dir.path(), cfg()).unwrap();
        a = new_account(&s, "a@x.org");
        b = new_account(&s, "b@x.org");
        c = new_account(&s, "c@x.org");
        let set = |acc, token: &str| {
            s.commit_blocking(Op::SetDeviceToken {
                account: acc,
                token: token.into(),
                now,
            })
        };
        set(a, "ta1").unwrap();
        set(a, "ta2").unwrap();
        set(b, "tb").unwrap();
        assert!(matches!(set(b, "t b"), Err(Error::Invalid(_))));
        assert_eq!(s.device_tokens(a, now), vec!["ta1", "ta2"]);
        // No token, no notification; the local sender gets none for its own message.
        let w = s.notify_watch();
        s.commit_blocking(Op::Deliver {
            recipients: vec![a, b, c],
            sender: Some(a),
            internal_date: now,
            body: b"Subject: x\r\n\r\ny\r\n".to_vec(),
        })
        .unwrap();
        assert!(w.has_changed().unwrap());
        let mut p = s.notify_pending(0, usize::MAX);
        p.sort_by_key(|p| p.account);
        assert_eq!(
            p,
            vec![PendingNotify {
                account: b,
                seq: 0,
                at: now
            }]
        );
        // A second delivery replaces b's entry; finishing the first one leaves the second.
        deliver(&s, &[a, b], b"Subject: 2\r\n\r\n2\r\n");
        // Each account's entry has its own sequence number, in account order.
        assert_eq!(s.notify_get(a).unwrap().seq, 1);
        assert_eq!(s.notify_get(b).unwrap().seq, 2);
        s.commit_blocking(Op::NotifyDone { account: b, seq: 0 })
            .unwrap();
        assert_eq!(s.notify_get(b).unwrap().seq, 2);
        s.commit_blocking(Op::RemoveDeviceToken {
            account: a,
            token: "ta1".into(),
        })
        .unwrap();
        assert_eq!(s.device_tokens(a, now), vec!["ta2"]);
    }
    for round in 0..2 {
        let s = reopen(dir.path(), cfg());
        assert_eq!(s.device_tokens(a, now), vec!["ta2"], "round {round}");
        assert_eq!(s.device_tokens(b, now), vec!["tb"]);
        assert_eq!(s.notify_get(b).map(|p| p.seq), Some(2));
        assert_eq!(s.notify_get(c), None);
        if round == 0 {
            assert_eq!(s.notify_get(a).map(|p| p.seq), Some(1));
            // The second round loads these from a checkpoint instead of replaying.
            s.commit_blocking(Op::NotifyDone { account: a, seq: 1 })
                .unwrap();
            s.commit_blocking(Op::NotifyDone { account: a, seq: 1 })
                .unwrap();
            s.checkpoint().unwrap();
            s.commit_blocking(Op::NotifyDone { account: a, seq: 2 })
                .unwrap();
            assert_eq!(s.notify_pending(0, usize::MAX).len(), 1);
        } else {
            assert_eq!(s.notify_get(a), None);
            assert_eq!(s.notify_pending(0, usize::MAX).len(), 1);
        }
    }
}

/// `relay import`'s ops: UIDVALIDITY, UIDNEXT and UIDs as the old server had them, the same
/// UID refused a second time, everything there after a reopen (replayed and from a checkpoint).
#[test]
fn import_keeps_uids_uidvalidity_and_refuses_a_uid_twice() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), cfg()).unwrap();
    let a = match s
        .commit_blocking(Op::ImportAccount {
            addr: "old@x".into(),
            password_hash: "{SHA512-CRYPT}$6$x".into(),
            created: 1_800_000_000,
            inbox_uid_validity: 1_600_000_000,
            last_login_day: 20_000,
        })
        .unwrap()
    {
        OpResult::AccountCreated(id) => id,
        r => panic!("unexpected {r:?}"),
    };
    assert!(matches!(
        s.commit_blocking(Op::ImportAccount {
            addr: "old@x".into(),
            password_hash: "h".into(),
            created: 0,
            inbox_uid_validity: 0,
            last_login_day: 0,
        }),
        Err(Error::Exists(_))
    ));
    let import_mailbox = |name: &str, uid_validity, uid_next| {
        s.commit_blocking(Op::ImportMailbox {
            account: a,
            name: name.into(),
            uid_validity,
            uid_next,
        })
    };
    let Ok(OpResult::MailboxCreated(inbox_id)) = import_mailbox("INBOX", 1_600_000_000, 40) else {
        panic!("INBOX")
    };
    assert_eq!(inbox_id, index::INBOX_ID);
    let Ok(OpResult::MailboxCreated(dc)) = import_mailbox("DeltaChat", 1_600_000_007, 3) else {
        panic!("DeltaChat")
    };
    assert!(matches!(
        import_mailbox("DeltaChat", 1_600_000_008, 3),
        Err(Error::Exists(_))
    ));
    let msg = |mailbox, uid, flags: Vec<Flag>| Op::ImportMessage {
        account: a,
        mailbox,
        uid,
        flags,
        internal_date: 1_700_000_000,
        body: format!("Subject: {uid}\r\n\r\nx\r\n").into_bytes(),
    };
    for (mb, uid, flags) in [
        (inbox_id, 7, vec![Flag::Seen]),
        (
            inbox_id,
            3,
            vec![Flag::Flagged, Flag::Keyword("$MDNSent".into())],
        ),
        (dc, 1, vec![]),
    ] {
        s.commit_blocking(msg(mb, uid, flags)).unwrap();
    }
    assert!(matches!(
        s.commit_blocking(msg(inbox_id, 7, vec![])),
        Err(Error::Exists("message"))
    ));
    let check = |s: &Store| {
        let acc = s.account("old@x").unwrap();
        assert_eq!(acc.last_login_day, 20_000);
        let v = s.mailbox_view(a, "INBOX").unwrap();
        assert_eq!(v.uid_validity, 1_600_000_000);
        assert_eq!(v.uid_next, 40);
        assert_eq!(v.messages.iter().map(|m| m.uid).collect::<Vec<_>>(), [3, 7]);
        assert_eq!(v.messages[1].flags, flag_bits::SEEN);
        assert_eq!(
            v.messages[0].flags,
            flag_bits::FLAGGED | 1 << flag_bits::KEYWORD_SHIFT
        );
        let v = s.mailbox_view(a, "DeltaChat").unwrap();
        assert_eq!((v.uid_validity, v.uid_next), (1_600_000_007, 3));
        // A new message gets a UID the old server never gave.
        assert_eq!(v.messages.len(), 1);
    };
    check(&s);
    s.close();
    drop(s);
    // Replayed from the log after removing the checkpoints.
    let _ = std::fs::remove_dir_all(dir.path().join("index"));
    let s = reopen(dir.path(), cfg());
    check(&s);
    assert_eq!(
        deliver(&s, &[a], b"Subject: new\r\n\r\nx\r\n"),
        vec![Ok(40)]
    );
    s.close();
    drop(s);
    let s = reopen(dir.path(), cfg());
    assert_eq!(inbox(&s, a).uid_next, 41);
}

/// Compaction: segments whose only live message sits among expunged ones get that message copied
/// forward after a checkpoint and are removed at a later one. The messages keep UID, flags,
/// modseq and bytes, also after a reopen; a body read before its segment went stays readable.
#[test]
fn segments_with_few_live_messages_are_compacted_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 16 << 10;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    let body = |i: u32| format!("message {i:03} ").repeat(70).into_bytes();
    for i in 1..=120u32 {
        deliver(&s, &[a], &body(i));
    }
    let files_before = segment_files(dir.path()).len();
    assert!(files_before >= 8, "{files_before} segments");
    let kept: Vec<u32> = (1..=120).filter(|u| u % 15 == 0).collect();
    s.commit_blocking(Op::SetFlags {
        account: a,
        mailbox: index::INBOX_ID,
        uids: vec![kept[0]],
        mode: FlagMode::Add,
        flags: vec![Flag::Seen],
        unchanged_since: None,
    })
    .unwrap();
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: index::INBOX_ID,
        uids: (1..=120).filter(|u| !kept.contains(u)).collect(),
    })
    .unwrap();
    let before = inbox(&s, a);
    assert_eq!(before.messages.len(), kept.len());
    let old_segments: BTreeSet<u32> = before.messages.iter().map(|m| m.body.segment).collect();
    assert!(old_segments.len() >= 6, "{old_segments:?}");
    let early = s.read(before.messages[0].body).unwrap();

    // One compaction per checkpoint; each checkpoint also removes what the one before moved out.
    for _ in 0..20 {
        s.checkpoint().unwrap();
    }
    let after = inbox(&s, a);
    let same = |v: &MailboxView| -> Vec<(u32, u64, u64, i64, u32)> {
        v.messages
            .iter()
            .map(|m| (m.uid, m.flags, m.modseq, m.internal_date, m.size))
            .collect()
    };
    assert_eq!(same(&after), same(&before));
    assert_eq!(after.highest_modseq, before.highest_modseq);
    for (m, uid) in after.messages.iter().zip(&kept) {
        assert_eq!(body_of(&s, m), body(*uid), "uid {uid}");
    }
    assert_eq!(after.messages[0].flags & flag_bits::SEEN, flag_bits::SEEN);
    let new_segments: BTreeSet<u32> = after.messages.iter().map(|m| m.body.segment).collect();
    assert!(new_segments.len() <= 2, "{new_segments:?}");
    assert!(s.stats().compactions >= old_segments.len() as u64 - 2);
    let files_after = segment_files(dir.path()).len();
    assert!(files_after <= 3, "{files_before} -> {files_after} segments");
    assert_eq!(&*early, body(kept[0]).as_slice());
    drop(early);
    drop(s);

    let s = reopen(dir.path(), c.clone());
    assert_eq!(same(&inbox(&s, a)), same(&before));
    for (m, uid) in inbox(&s, a).messages.iter().zip(&kept) {
        assert_eq!(body_of(&s, m), body(*uid));
    }
    drop(s);
}

/// A segment that holds a queued message's body is never compacted: the queue's entries are
/// not moved.
#[test]
fn a_segment_with_a_queued_body_is_not_compacted() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 16 << 10;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    deliver(&s, &[a], b"kept");
    queue_tests::enqueue(&s, "a@x", &[("example.org", &["b@example.org"])], b"queued");
    for i in 0..40u32 {
        deliver(&s, &[a], &vec![b'a' + (i % 26) as u8; 1000]);
    }
    let first = inbox(&s, a).messages[0].body.segment;
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: index::INBOX_ID,
        uids: (2..=41).collect(),
    })
    .unwrap();
    for _ in 0..4 {
        s.checkpoint().unwrap();
    }
    assert_eq!(s.stats().compactions, 0);
    let v = inbox(&s, a);
    assert_eq!(v.messages[0].body.segment, first);
    assert_eq!(body_of(&s, &v.messages[0]), b"kept");
    assert!(segment_files(dir.path()).iter().any(|p| p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(&format!("{first:020}"))));
}

/// Compaction at the default segment size (64 MiB) with real fsync: 8 segments of 4 KiB
/// messages, one in five kept (a fifth of each segment live, just under the quarter that
/// qualifies), then checkpoints until nothing is left to compact. Prints the store's segment
/// bytes before and after, the writer time per compaction, and how long a delivery submitted
/// right behind a compaction waited.
/// `cargo test --release -p relay --lib store::tests::bench_compaction -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn bench_compaction() {
    use std::time::Instant;
    let dir = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        ..StoreConfig::default()
    };
    let fill = StoreConfig {
        fsync: false,
        ..c.clone()
    };
    let s = reopen(dir.path(), fill);
    let accounts: Vec<AccountId> = (0..100)
        .map(|i| new_account(&s, &format!("user{i}@example.org")))
        .collect();
    let per_segment = (c.segment_size / 4200) as u32;
    let total = per_segment * 8;
    let body = |i: u32| format!("{i:010}").repeat(410).into_bytes();
    for chunk in (0..total).collect::<Vec<_>>().chunks(256) {
        let ops = chunk
            .iter()
            .map(|&i| Op::Deliver {
                recipients: vec![accounts[(i % 100) as usize]],
                sender: None,
                internal_date: 1_700_000_000,
                body: body(i),
            })
            .collect();
        s.commit_blocking(Op::Group(ops)).unwrap();
    }
    for &a in &accounts {
        let uids: Vec<u32> = s
            .messages(a)
            .iter()
            .map(|(_, m)| m.uid)
            .filter(|u| u % 5 != 0)
            .collect();
        s.commit_blocking(Op::Expunge {
            account: a,
            mailbox: index::INBOX_ID,
            uids,
        })
        .unwrap();
    }
    s.checkpoint().unwrap();
    drop(s);
    let s = reopen(dir.path(), c);
    let live: u64 = accounts.iter().map(|&a| s.messages(a).len() as u64).sum();
    let before = s.size();
    let t = Instant::now();
    let mut waits = Vec::new();
    let mut unchanged = 0;
    while unchanged < 20 {
        let n = s.stats().compactions;
        s.checkpoint().unwrap();
        // Submitted while a compaction runs (its steps fill the writer's idle time): it waits
        // behind the step in progress.
        for _ in 0..10 {
            let d = Instant::now();
            deliver(&s, &[accounts[0]], b"probe");
            waits.push(d.elapsed());
        }
        unchanged = if s.stats().compactions == n {
            unchanged + 1
        } else {
            0
        };
    }
    let elapsed = t.elapsed();
    let compactions = s.stats().compactions;
    let after = s.size();
    waits.sort();
    eprintln!(
        "{total} messages of 4.1 KB, {live} kept: {} segments {} MiB -> {} segments {} MiB; \
         {compactions} compactions in {elapsed:?} ({:?} each with its checkpoint); deliveries \
         meanwhile waited median {:?}, max {:?}",
        before.segments,
        before.bytes >> 20,
        after.segments,
        after.bytes >> 20,
        elapsed / compactions.max(1) as u32,
        waits[waits.len() / 2],
        waits[waits.len() - 1]
    );
    assert!(compactions >= 6);
}

/// Anonymous memory of this process in KiB (`RssAnon`): what a running relay shows, the
/// allocator's free but kept memory included.
fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Benchmark (figures in benches/README.md, "Memory per stored message"): anonymous memory per
/// stored message with `BENCH_MESSAGES` (default 1,000,000) messages in `BENCH_ACCOUNTS`
/// (default 10,000) INBOXes, measured after the fill (the index's two copies as a running
/// relay holds them) and after a reopen, with the time the reopen took after the process
/// "died" without a checkpoint of the last tenth (so it replays that part of the log).
/// `cargo test --release -p relay --lib store::tests::bench_index_memory -- --ignored --nocapture`
#[test]
#[ignore = "benchmark"]
fn bench_index_memory() {
    use std::time::Instant;
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let total = env("BENCH_MESSAGES", 1_000_000) as u32;
    let accounts = env("BENCH_ACCOUNTS", 10_000) as u32;
    let dir = tempfile::tempdir().unwrap();
    let c = StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        fsync: false,
        ..StoreConfig::default()
    };
    let base = rss_anon_kib();
    let s = reopen(dir.path(), c.clone());
    let ids: Vec<AccountId> = (0..accounts)
        .map(|i| new_account(&s, &format!("user{i}@example.org")))
        .collect();
    let with_accounts = rss_anon_kib();
    let body = b"Subject: x\r\n\r\nhello\r\n".to_vec();
    let t = Instant::now();
    let mut delivered = 0u32;
    while delivered < total {
        let n = (total - delivered).min(1024);
        let ops = (delivered..delivered + n)
            .map(|i| Op::Deliver {
                recipients: vec![ids[(i % accounts) as usize]],
                sender: None,
                internal_date: 1_700_000_000,
                body: body.clone(),
            })
            .collect();
        s.commit_blocking(Op::Group(ops)).unwrap();
        delivered += n;
        if delivered == total - total / 10 {
            s.checkpoint().unwrap();
        }
    }
    let fill = t.elapsed();
    let filled = rss_anon_kib();
    let per_message = |kib: u64, from: u64| (kib.saturating_sub(from) * 1024) as f64 / total as f64;
    println!(
        "{total} messages in {accounts} accounts, filled in {:.1} s; anon KiB: {base} empty, \
         {with_accounts} with the accounts, {filled} filled: {:.1} bytes per message",
        fill.as_secs_f64(),
        per_message(filled, with_accounts),
    );
    // No checkpoint after the last tenth: the reopen replays it, as after `kill -9`.
    drop(s);
    let before_open = rss_anon_kib();
    let t = Instant::now();
    let s = reopen(dir.path(), c);
    let open = t.elapsed();
    let reopened = rss_anon_kib();
    let stored: usize = ids.iter().map(|&a| s.messages(a).len()).sum();
    assert_eq!(stored, total as usize);
    println!(
        "reopened in {:.3} s: anon KiB {before_open} before, {reopened} after: {:.1} bytes per \
         message (accounts included)",
        open.as_secs_f64(),
        per_message(reopened, before_open),
    );
}
