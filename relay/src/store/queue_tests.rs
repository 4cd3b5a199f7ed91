//! Tests of the outbound queue on the real store (temp dirs, real fsync): enqueue, done, drop,
//! groups, the queue watch, reopen by replay and by checkpoint, segment removal, torn tails and
//! a child process killed with SIGKILL while it enqueues.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use super::tests::{
    cfg, cfg_unlimited, checkpoints, deliver, frames, new_account, reopen, segment_files,
};
use super::*;

/// Enqueue and return the ids.
pub(super) fn enqueue(
    s: &dyn Mailstore,
    sender: &str,
    destinations: &[(&str, &[&str])],
    body: &[u8],
) -> Vec<QueueId> {
    match block(s.commit(enqueue_op(sender, destinations, body))).unwrap() {
        OpResult::Enqueued(ids) => ids,
        r => panic!("unexpected {r:?}"),
    }
}

pub(super) fn enqueue_op(sender: &str, destinations: &[(&str, &[&str])], body: &[u8]) -> Op {
    Op::Enqueue {
        sender: sender.into(),
        created: 1_700_000_000,
        destinations: destinations
            .iter()
            .map(|(d, rs)| {
                (
                    (*d).to_owned(),
                    rs.iter().map(|r| (*r).to_owned()).collect(),
                )
            })
            .collect(),
        body: body.to_vec(),
    }
}

fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// Everything the queue shows readers: destinations, ids, envelopes, bodies.
pub(super) fn queue_dump(s: &dyn Mailstore) -> Vec<String> {
    let mut out = vec![format!("len {}", s.queue_len())];
    let mut total = 0;
    for d in s.queue_destinations() {
        out.push(format!("{d:?}"));
        let ids = s.queue_ids(&d.name, None, usize::MAX);
        assert_eq!(ids.len(), d.entries);
        assert_eq!(ids.first(), Some(&d.oldest));
        total += ids.len() as u64;
        for id in ids {
            let e = s.queue_entry(id).unwrap();
            assert_eq!(e.destination, d.name);
            out.push(format!(
                "  {} {:?} {:?} {} {:?}",
                e.id,
                e.sender,
                e.recipients,
                e.created,
                String::from_utf8_lossy(&e.body)
            ));
        }
    }
    assert_eq!(total, s.queue_len());
    out
}

fn done(s: &Store, id: QueueId, recipients: &[u32]) -> Result<OpResult, Error> {
    s.commit_blocking(Op::QueueDone {
        id,
        recipients: recipients.to_vec(),
    })
}

#[test]
fn enqueue_done_drop_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let before = s.stats().bytes_written;
    let op = enqueue_op(
        "alice@here.example",
        &[
            ("b.example", &["r1@b.example", "r2@b.example"]),
            ("[10.0.0.1]", &["r3@[10.0.0.1]"]),
        ],
        b"message one",
    );
    let bound = op.space_bound();
    let OpResult::Enqueued(ids) = s.commit_blocking(op).unwrap() else {
        panic!()
    };
    assert!(
        s.stats().bytes_written - before <= bound,
        "space_bound too small"
    );
    let (b, lit) = (ids[0], ids[1]);
    assert_eq!(ids.len(), 2);
    assert!(b < lit, "ids in the order of the destinations");
    assert_eq!(s.queue_len(), 2);
    let dests = s.queue_destinations();
    assert_eq!(
        dests
            .iter()
            .map(|d| (d.name.as_str(), d.entries))
            .collect::<Vec<_>>(),
        vec![("[10.0.0.1]", 1), ("b.example", 1)]
    );
    let e = s.queue_entry(b).unwrap();
    assert_eq!(
        (e.id, e.destination.as_str(), e.sender.as_str(), e.created),
        (b, "b.example", "alice@here.example", 1_700_000_000)
    );
    assert_eq!(
        e.pending().collect::<Vec<_>>(),
        vec![(0, "r1@b.example"), (1, "r2@b.example")]
    );
    assert_eq!(&e.body[..], b"message one");
    assert_eq!(e.size(), 11);
    let e2 = s.queue_entry(lit).unwrap();
    assert_eq!(&e2.body[..], b"message one");
    assert_eq!(e2.recipients.len(), 1);

    // Partial done; the same again and an index past the list change nothing.
    assert!(matches!(done(&s, b, &[0]), Ok(OpResult::Done)));
    let written = s.stats().bytes_written;
    assert!(matches!(done(&s, b, &[0, 5]), Ok(OpResult::Done)));
    assert_eq!(
        s.stats().bytes_written,
        written,
        "nothing pending: no record"
    );
    assert!(matches!(done(&s, b, &[32]), Err(Error::Invalid(_))));
    let e = s.queue_entry(b).unwrap();
    assert_eq!(e.pending().collect::<Vec<_>>(), vec![(1, "r2@b.example")]);
    assert!(!e.recipients[0].pending);
    // The last recipient: the entry and its destination are gone.
    done(&s, b, &[1]).unwrap();
    assert!(matches!(s.queue_entry(b), Err(Error::NotFound(_))));
    assert!(matches!(done(&s, b, &[0]), Err(Error::NotFound(_))));
    assert!(s.queue_ids("b.example", None, 10).is_empty());
    assert_eq!(s.queue_destinations().len(), 1);
    // The other entry still reads the shared body.
    assert_eq!(&s.queue_entry(lit).unwrap().body[..], b"message one");

    // A bounce (empty sender) to 70 recipients of one domain: three entries of 32, 32 and 6.
    let many: Vec<String> = (0..70).map(|i| format!("u{i}@c.example")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let big = enqueue(&s, "", &[("c.example", &many_refs)], b"bounce");
    assert_eq!(big.len(), 3);
    assert!(big.windows(2).all(|w| w[1].seq() == w[0].seq() + 1));
    for (k, id) in big.iter().enumerate() {
        let e = s.queue_entry(*id).unwrap();
        assert_eq!(e.sender, "");
        let want: Vec<&str> = many_refs[32 * k..(32 * k + 32).min(70)].to_vec();
        assert_eq!(
            e.recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            want
        );
        assert!(e.recipients.iter().all(|r| r.pending));
    }
    // Paging through a destination.
    assert_eq!(s.queue_ids("c.example", None, 2), big[..2].to_vec());
    assert_eq!(s.queue_ids("c.example", Some(big[1]), 2), big[2..].to_vec());
    assert!(s.queue_ids("nowhere.example", None, 2).is_empty());
    // Drop: every recipient done.
    s.commit_blocking(Op::queue_drop(big[1])).unwrap();
    assert_eq!(s.queue_ids("c.example", None, 9), vec![big[0], big[2]]);

    // Refusals change nothing.
    let len = s.queue_len();
    let written = s.stats().bytes_written;
    for (sender, dests) in [
        ("a@x", vec![("B.example", vec!["r@b"])]),
        ("a@x", vec![("b.example", vec![])]),
        ("a@x", vec![("b.example", vec!["r@b\r\nDATA"])]),
        ("a@x", vec![("b example", vec!["r@b"])]),
        ("a@x", vec![("ok.example", vec!["r@ok"]), ("", vec!["r@b"])]),
        ("a\n@x", vec![("b.example", vec!["r@b"])]),
    ] {
        let dests: Vec<(&str, &[&str])> = dests.iter().map(|(d, r)| (*d, &r[..])).collect();
        let r = s.commit_blocking(enqueue_op(sender, &dests, b"x"));
        assert!(matches!(r, Err(Error::Invalid(_))), "{dests:?}: {r:?}");
    }
    // No destination: nothing written.
    assert!(enqueue(&s, "a@x", &[], b"x").is_empty());
    assert_eq!((s.queue_len(), s.stats().bytes_written), (len, written));

    let dump = queue_dump(&s);
    drop(s);
    // Replay gives the same queue.
    for p in checkpoints(dir.path()) {
        std::fs::remove_file(p).unwrap();
    }
    let s = reopen(dir.path(), cfg());
    assert_eq!(queue_dump(&s), dump);
    // Ids are never reused, whether the old entries are gone or not.
    let after = enqueue(&s, "a@x", &[("b.example", &["r1@b.example"])], b"later");
    assert!(after[0].seq() > big[2].seq());
    s.commit_blocking(Op::queue_drop(after[0])).unwrap();
    // Checkpoint, then reopen from it.
    s.checkpoint().unwrap();
    drop(s);
    let s = reopen(dir.path(), cfg());
    assert_eq!(queue_dump(&s), dump);
    let again = enqueue(&s, "a@x", &[("b.example", &["r1@b.example"])], b"later");
    assert!(again[0].seq() > after[0].seq());
}

#[test]
fn group_commits_members_in_order_once_and_stops_at_the_first_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    let first = enqueue(&s, "a@x", &[("d.example", &["r@d.example"])], b"first");
    let stats = s.stats();
    // Local delivery and remote recipients of one SMTP transaction, in one commit.
    let r = s
        .commit_blocking(Op::Group(vec![
            Op::Deliver {
                recipients: vec![a],
                sender: None,
                internal_date: 1,
                body: b"both".to_vec(),
            },
            enqueue_op("a@x", &[("d.example", &["s@d.example"])], b"both"),
            // The engine: an entry done and its bounce, together.
            Op::QueueDone {
                id: first[0],
                recipients: vec![0],
            },
            enqueue_op("", &[("x", &["a@x"])], b"bounce"),
        ]))
        .unwrap();
    let OpResult::Group(results) = r else {
        panic!("{r:?}")
    };
    assert!(matches!(&results[0], Ok(OpResult::Delivered(v)) if v == &[Ok(1)]));
    let Ok(OpResult::Enqueued(second)) = &results[1] else {
        panic!("{results:?}")
    };
    assert!(matches!(&results[2], Ok(OpResult::Done)));
    assert!(matches!(&results[3], Ok(OpResult::Enqueued(v)) if v.len() == 1));
    let after = s.stats();
    assert_eq!(after.batches - stats.batches, 1);
    assert_eq!(
        after.fsyncs - stats.fsyncs,
        1,
        "one fdatasync for the group"
    );
    assert_eq!(s.queue_ids("d.example", None, 9), second.clone());
    assert_eq!(s.queue_len(), 2);
    assert_eq!(s.mailbox_view(a, "INBOX").unwrap().messages.len(), 1);

    // A refused member stops the rest; those before it stay.
    let r = s
        .commit_blocking(Op::Group(vec![
            enqueue_op("a@x", &[("e.example", &["r@e.example"])], b"kept"),
            Op::QueueDone {
                id: first[0],
                recipients: vec![0],
            },
            enqueue_op("a@x", &[("e.example", &["q@e.example"])], b"not applied"),
            Op::Deliver {
                recipients: vec![a],
                sender: None,
                internal_date: 1,
                body: b"not applied".to_vec(),
            },
        ]))
        .unwrap();
    let OpResult::Group(results) = r else {
        panic!("{r:?}")
    };
    assert_eq!(results.len(), 4);
    assert!(matches!(&results[0], Ok(OpResult::Enqueued(_))));
    assert!(matches!(&results[1], Err(Error::NotFound(_))));
    for r in &results[2..] {
        assert!(matches!(r, Err(Error::Invalid(GROUP_STOPPED))), "{r:?}");
    }
    assert_eq!(s.queue_ids("e.example", None, 9).len(), 1);
    assert_eq!(s.mailbox_view(a, "INBOX").unwrap().messages.len(), 1);
    // Members see the ones before them: two enqueues to a new destination share its slot; a
    // nested group and an empty one work.
    let r = s
        .commit_blocking(Op::Group(vec![
            enqueue_op("a@x", &[("f.example", &["1@f.example"])], b"1"),
            Op::Group(vec![enqueue_op(
                "a@x",
                &[("f.example", &["2@f.example"])],
                b"2",
            )]),
            Op::Group(vec![]),
        ]))
        .unwrap();
    let OpResult::Group(results) = r else {
        panic!("{r:?}")
    };
    assert!(matches!(&results[2], Ok(OpResult::Group(v)) if v.is_empty()));
    let ids = s.queue_ids("f.example", None, 9);
    assert_eq!(ids.len(), 2);
    let dump = queue_dump(&s);
    drop(s);
    let s = reopen(dir.path(), cfg());
    assert_eq!(queue_dump(&s), dump);
}

#[test]
fn queue_watch_changes_when_entries_are_added() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    let mut w = s.queue_watch();
    assert!(!w.has_changed().unwrap());
    let ids = enqueue(&s, "a@x", &[("b.example", &["r@b.example"])], b"x");
    assert!(w.has_changed().unwrap());
    assert_eq!(*w.borrow_and_update(), ids[0].seq() + 1);
    // Done and local delivery do not wake the engine.
    done(&s, ids[0], &[0]).unwrap();
    deliver(&s, &[a], b"local");
    assert!(!w.has_changed().unwrap());
    // An awaiting watcher wakes on a group that enqueues.
    block(async {
        let fut = s.commit(Op::Group(vec![
            Op::Deliver {
                recipients: vec![a],
                sender: None,
                internal_date: 1,
                body: b"y".to_vec(),
            },
            enqueue_op("a@x", &[("c.example", &["r@c.example"])], b"y"),
        ]));
        fut.await.unwrap();
        w.changed().await.unwrap();
    });
    // A new watcher starts at the current value.
    let w2 = s.queue_watch();
    assert!(!w2.has_changed().unwrap());
    assert_eq!(*w2.borrow(), *w.borrow());
}

/// The segment holding a queued body survives checkpoints and segment removal while an entry
/// refers to it, and goes once the last entry is done.
#[test]
fn segments_with_queued_bodies_are_kept_until_done() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 4096;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    let queued = vec![b'q'; 1000];
    let ids = enqueue(
        &s,
        "a@x",
        &[
            ("dead.example", &["r@dead.example"]),
            ("other.example", &["r@other.example"]),
        ],
        &queued,
    );
    let first_segment = segment_files(dir.path())[0].clone();
    for i in 0..40u32 {
        deliver(&s, &[a], &vec![b'0' + (i % 10) as u8; 1000]);
    }
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: index::INBOX_ID,
        uids: (1..=40).collect(),
    })
    .unwrap();
    s.checkpoint().unwrap();
    deliver(&s, &[a], b"x");
    s.checkpoint().unwrap();
    let segs = segment_files(dir.path());
    assert!(segs.len() <= 4, "{} segments left", segs.len());
    assert!(
        segs.contains(&first_segment),
        "queued body's segment removed"
    );
    assert_eq!(&s.queue_entry(ids[0]).unwrap().body[..], &queued[..]);
    drop(s);
    let s = reopen(dir.path(), c.clone());
    assert_eq!(&s.queue_entry(ids[1]).unwrap().body[..], &queued[..]);
    // One entry done: the other still holds the body.
    s.commit_blocking(Op::queue_drop(ids[0])).unwrap();
    s.checkpoint().unwrap();
    deliver(&s, &[a], b"y");
    s.checkpoint().unwrap();
    assert!(segment_files(dir.path()).contains(&first_segment));
    // Both done: removed after the next two checkpoints.
    s.commit_blocking(Op::queue_drop(ids[1])).unwrap();
    s.checkpoint().unwrap();
    deliver(&s, &[a], b"z");
    s.checkpoint().unwrap();
    assert!(!segment_files(dir.path()).contains(&first_segment));
    drop(s);
    let s = reopen(dir.path(), c);
    assert_eq!(s.queue_len(), 0);
}

/// Cut or corrupt the last segment at every offset: the queue after reopening is exactly what
/// the records before the damage make.
#[test]
fn torn_tail_keeps_exactly_the_queue_of_the_valid_prefix() {
    let src = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 1024;
    {
        let s = reopen(src.path(), c.clone());
        let mut ids = Vec::new();
        for i in 0..14u8 {
            let d = ["a.example", "b.example"][usize::from(i % 2)];
            let r = format!("r{i}@{d}");
            ids.extend(enqueue(
                &s,
                "s@x",
                &[(d, &[r.as_str(), "t@x.example"])],
                &[b'a' + i; 20],
            ));
            if i % 3 == 2 {
                done(&s, ids[usize::from(i) - 1], &[1]).unwrap();
                s.commit_blocking(Op::queue_drop(ids[usize::from(i) - 2]))
                    .unwrap();
            }
        }
    }
    let segs = segment_files(src.path());
    assert!(segs.len() >= 2, "test should span segments");
    let last = segs.last().unwrap().clone();
    let data = std::fs::read(&last).unwrap();
    let used = frames(&data).last().unwrap().1;
    // The index the records before a cut at `k` of the last segment make.
    let expected = |k: usize| {
        let mut idx = index::Index::default();
        for p in &segs {
            let bytes = std::fs::read(p).unwrap();
            for (start, end, kind) in frames(&bytes) {
                if p == &last && end > k {
                    break;
                }
                if let Ok(format::Entry::Record(r)) =
                    format::decode_entry(kind, &bytes[start + format::HEADER_LEN..end])
                {
                    idx.apply(&r);
                }
            }
        }
        idx.queue
    };
    assert!(expected(used).len() > 3);
    for corrupt in [false, true] {
        for k in (0..used).step_by(if corrupt { 3 } else { 1 }) {
            let dst = tempfile::tempdir().unwrap();
            std::fs::create_dir(dst.path().join("log")).unwrap();
            for p in &segs {
                std::fs::copy(p, dst.path().join("log").join(p.file_name().unwrap())).unwrap();
            }
            let mut bytes = data.clone();
            if corrupt {
                bytes[k] ^= 0x5a;
            } else {
                bytes.truncate(k);
            }
            std::fs::write(
                dst.path().join("log").join(last.file_name().unwrap()),
                &bytes,
            )
            .unwrap();
            let s = reopen(dst.path(), c.clone());
            let got = s.inner.shared.index.read().unwrap().queue.clone();
            assert_eq!(got, expected(k), "corrupt={corrupt} k={k}");
            // Every entry left reads whole.
            queue_dump(&s);
        }
    }
}

const QUEUE_CRASH_ENV: &str = "RELAY_STORE_QUEUE_CRASH_CHILD_DIR";

fn crash_message(t: u32, i: u32) -> Vec<u8> {
    let len = 10 + ((t * 7919 + i * 104_729) % 5000) as usize;
    let pat = format!("[t{t} i{i}]");
    pat.bytes().cycle().take(len).collect()
}

fn crash_destination(t: u32, i: u32) -> String {
    format!("d{}.example", (t + i) % 5)
}

/// The child half of `queue_crash_recovery`: 4 threads enqueue forever; of every three entries
/// one is dropped again at once and one is dropped in a group with the next enqueue. Prints
/// `ENQ <t> <i> <id>` and `DONE <id>` after each acknowledged commit.
fn crash_child(dir: &Path) {
    let s = reopen(dir, cfg_unlimited());
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let print = |line: String| {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{line}").unwrap();
                    out.flush().unwrap();
                };
                let mut prev: Option<QueueId> = None;
                for i in 0.. {
                    let d = crash_destination(t, i);
                    let r = format!("r{i}@{d}");
                    let op = enqueue_op(&format!("t{t}@x"), &[(&d, &[&r])], &crash_message(t, i));
                    let id = match prev.take() {
                        Some(p) if i % 3 == 1 => {
                            let r = s
                                .commit_blocking(Op::Group(vec![Op::queue_drop(p), op]))
                                .unwrap();
                            let OpResult::Group(mut v) = r else { panic!() };
                            let Ok(OpResult::Enqueued(ids)) = v.pop().unwrap() else {
                                panic!()
                            };
                            print(format!("ENQ {t} {i} {}\nDONE {p}", ids[0]));
                            ids[0]
                        }
                        _ => {
                            let OpResult::Enqueued(ids) = s.commit_blocking(op).unwrap() else {
                                panic!()
                            };
                            print(format!("ENQ {t} {i} {}", ids[0]));
                            ids[0]
                        }
                    };
                    if i % 3 == 2 {
                        s.commit_blocking(Op::queue_drop(id)).unwrap();
                        print(format!("DONE {id}"));
                    } else {
                        prev = Some(id);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Re-run this test binary as a child that enqueues and finishes entries in a loop; SIGKILL it
/// at a random moment; reopen: every acknowledged entry is there with its exact envelope and
/// message unless its done was acknowledged, every acknowledged done is gone, and what was
/// committed but not acknowledged is whole.
#[test]
fn queue_crash_recovery() {
    use std::io::BufRead;
    if let Ok(dir) = std::env::var(QUEUE_CRASH_ENV) {
        crash_child(Path::new(&dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed: u64 = rand::random();
    eprintln!("queue_crash_recovery seed {seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut acked: BTreeMap<QueueId, (u32, u32)> = BTreeMap::new();
    let mut finished: BTreeSet<QueueId> = BTreeSet::new();
    for round in 0..6 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "store::queue_tests::queue_crash_recovery",
                "--exact",
                "--nocapture",
            ])
            .env(QUEUE_CRASH_ENV, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.push(line);
            }
            lines
        });
        let wait = rand::Rng::gen_range(&mut rng, 100..800);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let lines = reader.join().unwrap();
        for line in &lines {
            let w: Vec<&str> = line.split(' ').collect();
            match w[..] {
                ["ENQ", t, i, id] => {
                    let id: QueueId = id.parse().unwrap();
                    let v = (t.parse().unwrap(), i.parse().unwrap());
                    assert!(acked.insert(id, v).is_none(), "{id} acknowledged twice");
                }
                ["DONE", id] => {
                    finished.insert(id.parse().unwrap());
                }
                // A line cut by the kill.
                _ => {}
            }
        }
        assert!(
            round > 0 || !acked.is_empty(),
            "child should acknowledge something"
        );
        let s = reopen(dir.path(), cfg_unlimited());
        for (id, (t, i)) in &acked {
            let got = s.queue_entry(*id);
            if finished.contains(id) {
                assert!(
                    matches!(got, Err(Error::NotFound(_))),
                    "{id} done but still queued (seed {seed})"
                );
                continue;
            }
            // Its done may have been committed without being acknowledged.
            let Ok(e) = got else { continue };
            assert_eq!(
                e.destination,
                crash_destination(*t, *i),
                "{id} (seed {seed})"
            );
            assert_eq!(e.sender, format!("t{t}@x"));
            assert_eq!(
                &e.body[..],
                &crash_message(*t, *i)[..],
                "{id} (seed {seed})"
            );
        }
        // Acknowledged entries missing: only ones whose done could be in flight (the thread's
        // one pending `to_finish`, at most one per thread and round).
        let missing = acked
            .keys()
            .filter(|id| !finished.contains(id) && s.queue_entry(**id).is_err())
            .count();
        assert!(
            missing <= 4 * (round + 1),
            "{missing} acknowledged entries lost (seed {seed})"
        );
        // Everything present reads whole, acknowledged or not.
        for d in s.queue_destinations() {
            for id in s.queue_ids(&d.name, None, usize::MAX) {
                let e = s.queue_entry(id).unwrap();
                let head = &e.body[..e.body.iter().position(|&c| c == b']').unwrap()];
                let head = std::str::from_utf8(head).unwrap();
                let (t, i) = head[2..].split_once(" i").unwrap();
                let (t, i) = (t.parse().unwrap(), i.parse().unwrap());
                assert_eq!(&e.body[..], &crash_message(t, i)[..], "(seed {seed})");
                assert_eq!(e.destination, crash_destination(t, i), "(seed {seed})");
            }
        }
    }
    eprintln!(
        "queue_crash_recovery: {} acknowledged entries, {} acknowledged done",
        acked.len(),
        finished.len()
    );
}
