//! Store tests with the file system misbehaving, through the hooks of `fault.rs`: `EIO` on
//! writes and syncs, `ENOSPC` when the disk is full, and power loss at random moments (only
//! what an `fdatasync`/directory `fsync` made durable survives).

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use super::fault::{self, Layer, Point};
use super::tests::{cfg, deliver, new_account, reopen};
use super::*;

/// Fails one kind of file operation with an errno while set.
#[derive(Default)]
struct Inject(Mutex<Option<(Point, i32)>>);

impl Inject {
    fn set(&self, fault: Option<(Point, i32)>) {
        *self.0.lock().unwrap() = fault;
    }
}

impl Layer for Inject {
    fn check(&self, point: Point, _path: &Path) -> std::io::Result<()> {
        match *self.0.lock().unwrap() {
            Some((p, errno)) if p == point => Err(std::io::Error::from_raw_os_error(errno)),
            _ => Ok(()),
        }
    }
}

/// A full file system: nothing can be allocated, except that the space the reserve file gave
/// back takes one segment.
struct FullDisk {
    full: std::sync::atomic::AtomicBool,
    reserve: PathBuf,
    given_back: Mutex<Option<PathBuf>>,
}

impl Layer for FullDisk {
    fn check(&self, point: Point, path: &Path) -> std::io::Result<()> {
        if point != Point::Create || !self.full.load(SeqCst) {
            return Ok(());
        }
        let mut given = self.given_back.lock().unwrap();
        match &*given {
            Some(p) if p == path => return Ok(()),
            None if !self.reserve.exists() && path.extension().is_some_and(|e| e == "seg") => {
                *given = Some(path.to_owned());
                return Ok(());
            }
            _ => {}
        }
        Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
    }
}

fn inbox_bodies(s: &Store, a: AccountId) -> Vec<Vec<u8>> {
    s.mailbox_view(a, "INBOX")
        .unwrap()
        .messages
        .iter()
        .map(|m| s.read(m.body).unwrap().to_vec())
        .collect()
}

/// Whether any log segment holds `needle` (a body that must have been cut back).
fn log_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir.join("log")).unwrap().any(|e| {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        data.windows(needle.len()).any(|w| w == needle)
    })
}

#[test]
fn eio_fails_the_batch_keeps_reads_and_recovers_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let s = reopen(dir.path(), cfg());
    let a = new_account(&s, "a@x");
    let mut acked: Vec<Vec<u8>> = Vec::new();
    for i in 0..3 {
        let body = format!("kept before {i}").into_bytes();
        assert!(deliver(&s, &[a], &body)[0].is_ok());
        acked.push(body);
    }
    let layer = Arc::new(Inject::default());
    let _installed = fault::install(dir.path(), layer.clone());
    let mut watch = s.watch(a);
    watch.borrow_and_update();
    for (n, point) in [Point::Write, Point::Sync].into_iter().enumerate() {
        layer.set(Some((point, libc::EIO)));
        for k in 0..2 {
            let lost = format!("lost {point:?} {k}").into_bytes();
            let r = s.commit_blocking(Op::Deliver {
                recipients: vec![a],
                sender: None,
                internal_date: 1,
                body: lost,
            });
            assert!(matches!(r, Err(Error::Io { .. })), "{point:?}: {r:?}");
            assert!(s.writes_failing());
        }
        // Not a space problem: ops that free space fail too, with the same temporary error.
        let r = s.commit_blocking(Op::Expunge {
            account: a,
            mailbox: index::INBOX_ID,
            uids: vec![1],
        });
        assert!(matches!(r, Err(Error::Io { .. })), "{r:?}");
        // Reads keep working and see only what was acknowledged; IDLE watchers saw nothing.
        assert_eq!(inbox_bodies(&s, a), acked);
        assert!(!watch.has_changed().unwrap());
        layer.set(None);
        // The next commit succeeds without a restart.
        let body = format!("after recovery {n}").into_bytes();
        assert!(deliver(&s, &[a], &body)[0].is_ok());
        acked.push(body);
        assert!(!s.writes_failing());
        assert!(watch.has_changed().unwrap());
        watch.borrow_and_update();
        assert_eq!(inbox_bodies(&s, a), acked);
    }
    assert!(s.stats().failed_batches >= 6, "{:?}", s.stats());
    drop(s);
    // Nothing of the failed batches is left in the log: not even their bytes.
    assert!(!log_contains(dir.path(), b"lost "));
    let s = reopen(dir.path(), cfg());
    assert_eq!(inbox_bodies(&s, a), acked);
    // And appending continues cleanly after the reopen.
    assert!(deliver(&s, &[a], b"after reopen")[0].is_ok());
}

/// Lets `n` syncs through, then fails every further one with `EIO` while armed.
struct SyncFailsAfter(std::sync::atomic::AtomicI64);

impl Layer for SyncFailsAfter {
    fn check(&self, point: Point, _path: &Path) -> std::io::Result<()> {
        if point == Point::Sync && self.0.fetch_sub(1, SeqCst) <= 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

#[test]
fn eio_in_a_batch_spanning_segments_is_cut_back_in_both() {
    // The batch's syncs: the new segment's creation, the seal of the old one, the commit in the
    // new one. Fail each in turn.
    for passed in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        c.segment_size = 4096;
        let s = reopen(dir.path(), c.clone());
        let a = new_account(&s, "a@x");
        let mut acked = Vec::new();
        for i in 0..2u8 {
            let body = vec![b'a' + i; 1000];
            assert!(deliver(&s, &[a], &body)[0].is_ok());
            acked.push(body);
        }
        let segs_before = std::fs::read_dir(dir.path().join("log")).unwrap().count();
        let layer = Arc::new(SyncFailsAfter(passed.into()));
        let installed = fault::install(dir.path(), layer.clone());
        // 3000 bytes do not fit the rest of the first segment: the batch moves to a new one.
        let r = s.commit_blocking(Op::Deliver {
            recipients: vec![a],
            sender: None,
            internal_date: 1,
            body: vec![b'X'; 3000],
        });
        assert!(matches!(r, Err(Error::Io { .. })), "{passed}: {r:?}");
        layer.0.store(i64::MAX, SeqCst);
        assert!(deliver(&s, &[a], b"small")[0].is_ok());
        acked.push(b"small".to_vec());
        assert_eq!(inbox_bodies(&s, a), acked);
        drop(installed);
        drop(s);
        assert!(!log_contains(dir.path(), &[b'X'; 3000]), "{passed}");
        let segs_after = std::fs::read_dir(dir.path().join("log")).unwrap().count();
        assert!(
            segs_after <= segs_before + 1,
            "{passed}: {segs_before} -> {segs_after} segments"
        );
        let s = reopen(dir.path(), c);
        assert_eq!(inbox_bodies(&s, a), acked, "{passed}");
        assert!(deliver(&s, &[a], b"after reopen")[0].is_ok());
    }
}

#[test]
fn full_disk_refuses_deliveries_while_expunge_and_flags_use_the_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 4096;
    let s = reopen(dir.path(), c.clone());
    let a = new_account(&s, "a@x");
    let reserve = dir.path().join("reserve");
    assert!(reserve.exists());
    let layer = Arc::new(FullDisk {
        full: true.into(),
        reserve: reserve.clone(),
        given_back: Mutex::new(None),
    });
    let _installed = fault::install(dir.path(), layer.clone());
    let mut acked = Vec::new();
    let refused = loop {
        let body = format!("{:0>700}", acked.len()).into_bytes();
        match s.commit_blocking(Op::Deliver {
            recipients: vec![a],
            sender: None,
            internal_date: 1,
            body: body.clone(),
        }) {
            Ok(OpResult::Delivered(r)) => {
                assert!(r[0].is_ok());
                acked.push(body);
            }
            Err(e) => break e,
            Ok(r) => panic!("{r:?}"),
        }
        assert!(acked.len() < 10, "the full disk never refused");
    };
    assert!(matches!(refused, Error::NoSpace { .. }), "{refused:?}");
    assert!(s.writes_failing());
    // The preallocated segment was used to its end before refusing.
    assert!(!acked.is_empty());
    // Flag changes and expunges commit: first in the rest of the segment, then in the reserve.
    let uids: Vec<u32> = (1..=acked.len() as u32).collect();
    for round in 0..40 {
        let mode = if round % 2 == 0 {
            FlagMode::Add
        } else {
            FlagMode::Remove
        };
        s.commit_blocking(Op::SetFlags {
            account: a,
            mailbox: index::INBOX_ID,
            uids: uids.clone(),
            mode,
            flags: vec![Flag::Deleted, Flag::Keyword(format!("k{}", round % 3))],
            unchanged_since: None,
        })
        .unwrap_or_else(|e| panic!("STORE {round} on a full disk: {e}"));
    }
    assert!(
        !reserve.exists(),
        "40 flag records should have needed the reserve"
    );
    s.commit_blocking(Op::Expunge {
        account: a,
        mailbox: index::INBOX_ID,
        uids: vec![1],
    })
    .unwrap();
    acked.remove(0);
    // Deliveries stay refused: the reserve is not for them.
    let r = s.commit_blocking(Op::Deliver {
        recipients: vec![a],
        sender: None,
        internal_date: 1,
        body: b"refused".to_vec(),
    });
    assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
    assert_eq!(inbox_bodies(&s, a), acked);
    // Space returns: deliveries work again without a restart, and the reserve is back.
    layer.full.store(false, SeqCst);
    assert!(deliver(&s, &[a], b"after space returned")[0].is_ok());
    acked.push(b"after space returned".to_vec());
    assert!(!s.writes_failing());
    assert!(reserve.exists());
    drop(s);
    let s = reopen(dir.path(), c);
    assert_eq!(inbox_bodies(&s, a), acked);
}

// ---------------------------------------------------------------------------------------------
// Power loss

/// What survives a power loss at this moment, and the acknowledgements seen by then.
#[derive(Default)]
struct Durable {
    /// File bytes as of their last completed sync.
    content: HashMap<PathBuf, Vec<u8>>,
    /// Directory entries as of the directory's last sync.
    names: HashMap<PathBuf, BTreeSet<OsString>>,
    events: u64,
    /// Syncs failed on purpose, and syncs tried.
    failed: u64,
    syncs: u64,
    rng: u64,
    cuts: Vec<(PathBuf, Vec<usize>)>,
}

/// The power-loss model: keeps only what syncs made durable; at random sync events writes
/// that image to a new directory (a "cut") with the number of ops each client had
/// acknowledged by then.
struct PowerLoss {
    root: PathBuf,
    cut_dir: PathBuf,
    acked: Arc<Vec<AtomicUsize>>,
    max_cuts: usize,
    /// A cut at one in this many sync events.
    cut_one_in: u64,
    /// File syncs (counted from 1) to fail with `EIO`.
    fail_syncs: &'static [u64],
    state: Mutex<Durable>,
}

fn listing(dir: &Path) -> BTreeSet<OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

impl PowerLoss {
    /// Everything that exists now counts as durable (it was synced before the layer started).
    fn new(root: &Path, cut_dir: &Path, acked: Arc<Vec<AtomicUsize>>, seed: u64) -> PowerLoss {
        let mut st = Durable {
            rng: seed,
            ..Durable::default()
        };
        let mut dirs = vec![root.to_owned()];
        while let Some(d) = dirs.pop() {
            st.names.insert(d.clone(), listing(&d));
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    st.content.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        PowerLoss {
            root: root.to_owned(),
            cut_dir: cut_dir.to_owned(),
            acked,
            max_cuts: 60,
            cut_one_in: 10,
            fail_syncs: &[],
            state: Mutex::new(st),
        }
    }

    fn event(&self, st: &mut Durable) {
        st.events += 1;
        st.rng = st
            .rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        if st.cuts.len() >= self.max_cuts || !(st.rng >> 33).is_multiple_of(self.cut_one_in) {
            return;
        }
        // Read under the lock: an op counted here was acknowledged after its sync, whose
        // bytes are in `st` already.
        let acked: Vec<usize> = self.acked.iter().map(|n| n.load(SeqCst)).collect();
        let dst = self.cut_dir.join(format!("cut{:03}", st.cuts.len()));
        materialize(st, &self.root, &dst);
        st.cuts.push((dst, acked));
    }
}

/// Write the durable image of `src` to `dst`: entries its parent's last sync saw, with the
/// bytes of their last sync (none if never synced).
fn materialize(st: &Durable, src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    let Some(names) = st.names.get(src) else {
        return;
    };
    for name in names {
        let (s, d) = (src.join(name), dst.join(name));
        if st.names.contains_key(&s) || s.is_dir() {
            materialize(st, &s, &d);
        } else {
            std::fs::write(&d, st.content.get(&s).map_or(&[][..], |c| c)).unwrap();
        }
    }
}

impl Layer for PowerLoss {
    fn check(&self, point: Point, _path: &Path) -> std::io::Result<()> {
        if point != Point::Sync || self.fail_syncs.is_empty() {
            return Ok(());
        }
        let mut st = self.state.lock().unwrap();
        st.syncs += 1;
        if self.fail_syncs.contains(&st.syncs) {
            st.failed += 1;
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
    fn synced(&self, path: &Path) {
        let mut st = self.state.lock().unwrap();
        st.content
            .insert(path.to_owned(), std::fs::read(path).unwrap());
        self.event(&mut st);
    }
    fn dir_synced(&self, dir: &Path) {
        let mut st = self.state.lock().unwrap();
        st.names.insert(dir.to_owned(), listing(dir));
        self.event(&mut st);
    }
    fn renamed(&self, from: &Path, to: &Path) {
        let mut st = self.state.lock().unwrap();
        if let Some(c) = st.content.remove(from) {
            st.content.insert(to.to_owned(), c);
        }
    }
}

/// What a client's account looks like after some of its ops: INBOX `(uid, seen, body)`, the
/// names of its other mailboxes, and the bodies queued for its own destination, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Model {
    inbox: Vec<(u32, bool, String)>,
    mailboxes: BTreeSet<String>,
    queue: Vec<String>,
}

/// The queue destination of client `t`.
fn destination(a: AccountId) -> String {
    format!("c{a}.example")
}

fn observe(s: &Store, a: AccountId) -> Model {
    let v = s.mailbox_view(a, "INBOX").unwrap();
    Model {
        queue: s
            .queue_ids(&destination(a), None, usize::MAX)
            .into_iter()
            .map(|id| String::from_utf8_lossy(&s.queue_entry(id).unwrap().body).into_owned())
            .collect(),
        inbox: v
            .messages
            .iter()
            .map(|m| {
                (
                    m.uid,
                    m.flags & flag_bits::SEEN != 0,
                    String::from_utf8_lossy(&s.read(m.body).unwrap()).into_owned(),
                )
            })
            .collect(),
        mailboxes: s
            .mailboxes(a)
            .into_iter()
            .map(|m| m.name)
            .filter(|n| n != "INBOX")
            .collect(),
    }
}

/// One client: sequential ops on its own account; `states[p]` is the model after `p` acked ops
/// (the last one may have failed and is then only possibly durable).
fn client(s: &Store, t: usize, a: AccountId, ops: usize, acked: &AtomicUsize) -> Vec<Model> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 * 0x1000_0001);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut states = vec![observe(s, a)];
    let mut last_uid = 0u32;
    for i in 0..ops {
        let mut m = states.last().unwrap().clone();
        let r = next() % 100;
        let pick = |n: u64, m: &Model| m.inbox[(n % m.inbox.len() as u64) as usize].0;
        if r < 55 || m.inbox.is_empty() {
            let body = format!("t{t}-{i}:{}", "x".repeat((next() % 1400) as usize)).into_bytes();
            let uid = match s.commit_blocking(Op::Deliver {
                recipients: vec![a],
                sender: None,
                internal_date: 1,
                body: body.clone(),
            }) {
                Ok(OpResult::Delivered(r)) => r[0].unwrap(),
                Ok(r) => panic!("{r:?}"),
                Err(e) => {
                    // UIDs are decided in the writer and not used up by a failed batch.
                    m.inbox
                        .push((last_uid + 1, false, String::from_utf8_lossy(&body).into()));
                    return stopped(states, m, e);
                }
            };
            last_uid = uid;
            m.inbox
                .push((uid, false, String::from_utf8_lossy(&body).into_owned()));
        } else if r < 70 {
            let uid = pick(next(), &m);
            let r = s.commit_blocking(Op::SetFlags {
                account: a,
                mailbox: index::INBOX_ID,
                uids: vec![uid],
                mode: FlagMode::Add,
                flags: vec![Flag::Seen],
                unchanged_since: None,
            });
            m.inbox.iter_mut().find(|e| e.0 == uid).unwrap().1 = true;
            if let Err(e) = r {
                return stopped(states, m, e);
            }
        } else if r < 85 {
            let uid = pick(next(), &m);
            let r = s.commit_blocking(Op::Expunge {
                account: a,
                mailbox: index::INBOX_ID,
                uids: vec![uid],
            });
            m.inbox.retain(|e| e.0 != uid);
            if let Err(e) = r {
                return stopped(states, m, e);
            }
        } else if r >= 90 {
            let d = destination(a);
            let ids = s.queue_ids(&d, None, 1);
            let r = match ids.first() {
                Some(id) if r >= 96 => {
                    m.queue.remove(0);
                    s.commit_blocking(Op::queue_drop(*id))
                }
                _ => {
                    let body = format!("q{t}-{i}:{}", "y".repeat((next() % 900) as usize));
                    m.queue.push(body.clone());
                    s.commit_blocking(Op::Enqueue {
                        sender: String::new(),
                        created: 1,
                        destinations: vec![(d.clone(), vec![format!("r@{d}")])],
                        body: body.into_bytes(),
                    })
                }
            };
            if let Err(e) = r {
                return stopped(states, m, e);
            }
        } else {
            let name = format!("box{i}");
            let r = s.commit_blocking(Op::CreateMailbox {
                account: a,
                name: name.clone(),
            });
            m.mailboxes.insert(name);
            if let Err(e) = r {
                return stopped(states, m, e);
            }
        }
        states.push(m);
        acked.store(i + 1, SeqCst);
        if t == 0 && i % 40 == 39 {
            // Fails when a sync is failed on purpose; the next one catches up.
            let _ = s.checkpoint();
        }
    }
    states
}

/// A client ends at its first error: the failed op may or may not turn out durable, so its
/// state `failed` ends the list as the possible one after the last acknowledged op. Only I/O
/// errors are expected.
fn stopped(mut states: Vec<Model>, failed: Model, e: Error) -> Vec<Model> {
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    states.push(failed);
    states
}

#[test]
fn power_loss_at_random_points_keeps_every_acknowledged_op() {
    power_loss(&[]);
}

#[test]
fn power_loss_with_failing_syncs_keeps_every_acknowledged_op_and_no_failed_one_half() {
    power_loss(&[30, 90]);
}

/// Power loss at random sync events under 4 concurrent clients; the file syncs numbered in
/// `fail_syncs` (counting from 1) fail with `EIO` (the writer cuts the batch back and retries).
fn power_loss(fail_syncs: &'static [u64]) {
    const CLIENTS: usize = 4;
    const OPS: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let cuts = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 8192;
    c.max_mailbox_size = u64::MAX;
    let s = reopen(dir.path(), c.clone());
    let accounts: Vec<AccountId> = (0..CLIENTS)
        .map(|t| new_account(&s, &format!("c{t}@x")))
        .collect();
    s.checkpoint().unwrap();
    let acked: Arc<Vec<AtomicUsize>> =
        Arc::new((0..CLIENTS).map(|_| AtomicUsize::new(0)).collect());
    let mut layer = PowerLoss::new(dir.path(), cuts.path(), acked.clone(), 42);
    layer.fail_syncs = fail_syncs;
    if !fail_syncs.is_empty() {
        // Clients stop at their first failed op: fewer events, cut more often.
        layer.cut_one_in = 3;
    }
    let layer = Arc::new(layer);
    let installed = fault::install(dir.path(), layer.clone());
    let states: Vec<Vec<Model>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|t| {
                let (s, acked, a) = (&s, &acked, accounts[t]);
                scope.spawn(move || client(s, t, a, OPS, &acked[t]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Segments of 8 KiB with a sixth of the messages expunged: after the checkpoints some hold
    // little that is live, and the writer compacts them, so the cuts include compactions.
    let compactions = s.stats().compactions;
    eprintln!("{compactions} segments compacted");
    if fail_syncs.is_empty() {
        assert!(compactions > 0, "no compaction under power loss");
    }
    drop(s);
    drop(installed);
    let st = layer.state.lock().unwrap();
    if !fail_syncs.is_empty() {
        assert!(st.failed > 0, "no sync was failed");
        eprintln!(
            "{} syncs failed, clients ended after {:?} ops",
            st.failed,
            states.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }
    // Clients stop at their first failed op, so runs with failures are shorter.
    assert!(
        st.cuts.len() >= if fail_syncs.is_empty() { 10 } else { 4 },
        "only {} cuts in {} events",
        st.cuts.len(),
        st.events
    );
    for (cut, acked) in &st.cuts {
        let s = reopen(cut, c.clone());
        for (t, &a) in accounts.iter().enumerate() {
            let got = observe(&s, a);
            // Every op acknowledged before the cut is there; the one in flight may be.
            let n = acked[t];
            assert!(
                got == states[t][n] || states[t].get(n + 1) == Some(&got),
                "{}: client {t} acknowledged {n} ops; recovered {got:?}\nexpected {:?}",
                cut.display(),
                states[t][n]
            );
        }
    }
}

#[test]
fn full_disk_refuses_enqueue_before_placing_it_while_queue_done_uses_the_reserve() {
    use super::queue_tests::{enqueue_op, queue_dump};
    let dir = tempfile::tempdir().unwrap();
    let mut c = cfg();
    c.segment_size = 4096;
    let s = reopen(dir.path(), c.clone());
    let reserve = dir.path().join("reserve");
    let layer = Arc::new(FullDisk {
        full: true.into(),
        reserve: reserve.clone(),
        given_back: Mutex::new(None),
    });
    let _installed = fault::install(dir.path(), layer.clone());
    let rcpts: Vec<String> = (0..32).map(|i| format!("r{i}@dead.example")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let mut ids = Vec::new();
    let refused = loop {
        let body = format!("queued {:0>600}", ids.len()).into_bytes();
        match s.commit_blocking(enqueue_op("a@x", &[("dead.example", &rcpts)], &body)) {
            Ok(OpResult::Enqueued(v)) => ids.extend(v),
            Err(e) => break e,
            Ok(r) => panic!("{r:?}"),
        }
        assert!(ids.len() < 10, "the full disk never refused");
    };
    assert!(matches!(refused, Error::NoSpace { .. }), "{refused:?}");
    assert!(!ids.is_empty());
    assert_eq!(s.queue_len(), ids.len() as u64);
    // A group that enqueues is refused whole, its QueueDone with it.
    let r = s.commit_blocking(Op::Group(vec![
        Op::QueueDone {
            id: ids[0],
            recipients: vec![0],
        },
        enqueue_op("", &[("x", &["a@x"])], &b"bounce".repeat(400)),
    ]));
    assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
    assert!(s.queue_entry(ids[0]).unwrap().recipients[0].pending);
    // Finishing recipients one by one: first in the rest of the segment, then in the reserve.
    for id in &ids {
        for i in 0..31u32 {
            s.commit_blocking(Op::QueueDone {
                id: *id,
                recipients: vec![i],
            })
            .unwrap_or_else(|e| panic!("QueueDone on a full disk: {e}"));
        }
    }
    assert!(
        !reserve.exists(),
        "the dones should have needed the reserve"
    );
    // A group of dones frees space too.
    let r = s.commit_blocking(Op::Group(vec![
        Op::queue_drop(ids[0]),
        Op::queue_drop(ids[1 % ids.len()]),
    ]));
    assert!(matches!(r, Ok(OpResult::Group(_))), "{r:?}");
    let r = s.commit_blocking(enqueue_op("a@x", &[("b.example", &["r@b.example"])], b"no"));
    assert!(matches!(r, Err(Error::NoSpace { .. })), "{r:?}");
    let dump = queue_dump(&s);
    assert!(!log_contains(dir.path(), b"bounce"));
    // Space returns: enqueue works again without a restart.
    layer.full.store(false, SeqCst);
    let r = s.commit_blocking(enqueue_op(
        "a@x",
        &[("b.example", &["r@b.example"])],
        b"yes",
    ));
    assert!(matches!(r, Ok(OpResult::Enqueued(_))), "{r:?}");
    assert!(!s.writes_failing());
    let dump_after = queue_dump(&s);
    assert_eq!(dump_after.len(), dump.len() + 2);
    drop(s);
    let s = reopen(dir.path(), c);
    assert_eq!(queue_dump(&s), dump_after);
}
