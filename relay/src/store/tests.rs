//! Store tests: real files in temp dirs, real fsync.

#![allow(clippy::unwrap_used)]

use super::*;

pub(super) fn cfg() -> StoreConfig {
    StoreConfig {
        max_mailbox_size: 1 << 20,
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
            internal_date: 1_700_000_100,
            body: body.to_vec(),
        })
        .unwrap()
    {
        OpResult::Delivered(r) => r,
        r => panic!("unexpected {r:?}"),
    }
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
        let s = Store::open(dir.path(), cfg()).unwrap();
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
    let s = Store::open(dir.path(), cfg()).unwrap();
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), 2);
    assert_eq!(body_of(&s, &v.messages[1]), b"second");
    assert_eq!(s.quota(a).0, 11);
    assert_eq!(deliver(&s, &[a], b"third"), vec![Ok(3)]);
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path(), cfg()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), cfg()),
        Err(Error::Locked(_))
    ));
    drop(s);
    Store::open(dir.path(), cfg()).unwrap();
}

#[test]
fn quota_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.max_mailbox_size = 100;
    let s = Store::open(dir.path(), c).unwrap();
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
    let s = Store::open(dir.path(), cfg()).unwrap();
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
    let s = Store::open(dir.path(), cfg()).unwrap();
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
        let s = Store::open(dir.path(), cfg()).unwrap();
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
    let s = Store::open(dir.path(), cfg()).unwrap();
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
    let s = Store::open(dir.path(), cfg()).unwrap();
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
            internal_date: 0,
            body: b"y".to_vec(),
        });
        let r = fut.await.unwrap();
        assert!(matches!(r, OpResult::Delivered(_)));
        wb.changed().await.unwrap();
    });
    assert!(!wa.has_changed().unwrap());
}

#[test]
fn concurrent_commits_get_distinct_uids() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.max_mailbox_size = u64::MAX;
    let s = Store::open(dir.path(), c).unwrap();
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
        let s = Store::open(dir.path(), c.clone()).unwrap();
        a = new_account(&s, "a@x");
        for b in &bodies {
            deliver(&s, &[a], b);
        }
        let v = inbox(&s, a);
        for (m, b) in v.messages.iter().zip(&bodies) {
            assert_eq!(&body_of(&s, m), b);
        }
    }
    let s = Store::open(dir.path(), c).unwrap();
    let v = inbox(&s, a);
    assert_eq!(v.messages.len(), bodies.len());
    for (m, b) in v.messages.iter().zip(&bodies) {
        assert_eq!(&body_of(&s, m), b);
    }
    assert!(std::fs::read_dir(dir.path().join("log")).unwrap().count() > 2);
}
