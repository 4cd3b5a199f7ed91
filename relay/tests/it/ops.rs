//! The operator commands that read or copy a relay's store: `relay status` and `relay backup`
//! against a running relay (the real binary over its admin socket), `relay check` on a stopped
//! store (real segment files, some sealed).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relay::store::{Op, Store, StoreConfig};
use sha2::Digest as _;

use crate::cli::{relay, run};
use crate::faults::{imap, spawn, spawn_with, stored_ids};
use crate::harness::{message, new_addr, Client, PASSWORD};

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn status_reports_a_running_relay_and_says_when_none_runs() {
    let dir = tempfile::tempdir().unwrap();
    // An old port name beside its new one: read with a warning, which status shows.
    let p = spawn_with(dir.path(), "epoll", None, &["submission_port=0".to_owned()]);
    // Two accounts, made by their first login; one IMAP connection stays open.
    let (a, b) = (new_addr("sa"), new_addr("sb"));
    drop(imap(&p, &a));
    let _open = imap(&p, &b);
    let (code, out, err) = run(relay().args(["status", "--json", "--data"]).arg(dir.path()));
    assert_eq!(code, 0, "{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["accounts"], 2, "{s:#}");
    assert_eq!(s["io_backend"], "epoll");
    assert_eq!(s["rate_limit"], "userspace");
    assert_eq!(s["connections"]["imaps"], 1, "{s:#}");
    assert_eq!(s["connections"]["mx"], 0, "{s:#}");
    let started = s["started"].as_i64().unwrap();
    assert!((unix_now() - 120..=unix_now()).contains(&started), "{s:#}");
    assert!(s["uptime_seconds"].as_i64().unwrap() <= unix_now() - started + 1);
    assert_eq!(s["queue"]["entries"], 0);
    assert!(s["store"]["segments"].as_u64().unwrap() >= 1, "{s:#}");
    assert!(s["store"]["bytes"].as_u64().unwrap() > 0, "{s:#}");
    assert_eq!(s["store"]["messages"], 0);
    assert!(
        s["certificate"]["expires_in_days"].as_i64().unwrap() > 0,
        "{s:#}"
    );
    assert_eq!(s["certificate"]["names"][0], "127.0.0.1");
    let warned = s["last_errors"].as_array().unwrap().iter().any(|e| {
        e["level"] == "WARN"
            && e["message"]
                == "option submission_port is ignored: smtp_port is set (remove submission_port)"
    });
    assert!(warned, "{s:#}");
    // The text form says the same for people.
    let (code, out, err) = run(relay().args(["status", "--data"]).arg(dir.path()));
    assert_eq!(code, 0, "{err}");
    for want in [
        "accounts: 2",
        "I/O backend: epoll; rate limiting: userspace",
        "imaps 1",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }

    // Killed: its socket file is left behind and refuses connections.
    drop(p);
    assert!(dir.path().join("admin.sock").exists());
    // Never started here: no socket at all.
    let empty = tempfile::tempdir().unwrap();
    for data in [dir.path(), empty.path()] {
        let (code, out, err) = run(relay().args(["status", "--data"]).arg(data));
        assert_eq!(code, 1, "{out}{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains("the relay is not running"), "{err}");
        assert!(err.contains("admin.sock"), "{err}");
        let copy = empty.path().join("copy");
        let (code, _, err) = run(relay().arg("backup").arg(&copy).arg("--data").arg(data));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("the relay is not running"), "{err}");
    }
}

/// `sha256` of every file under `dir`, by path.
fn hashes(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                let h = sha2::Sha256::digest(&bytes);
                out.insert(e.path(), format!("{h:x}"));
            }
        }
    }
    out
}

/// A store in `data/store` with segments of a few KiB: most of them sealed.
fn small_segments(data: &Path) -> Store {
    Store::open(
        &data.join("store"),
        StoreConfig {
            segment_size: 8192,
            ..StoreConfig::default()
        },
    )
    .unwrap()
}

fn deliver(to: u32, n: usize) -> Op {
    let body = format!(
        "Message-ID: <m{n}@localhost>\r\nSubject: {n}\r\n\r\n{}\r\n",
        "x".repeat(700 + n % 300)
    );
    Op::Deliver {
        recipients: vec![to],
        sender: None,
        internal_date: 1_700_000_000 + n as i64,
        body: body.into_bytes(),
    }
}

#[test]
fn check_passes_a_clean_store_and_names_a_flipped_byte_without_changing_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = small_segments(data);
    let a = relay_testkit::create_account(&store, &new_addr("ca"), 1_700_000_000);
    for n in 0..60 {
        store.commit_blocking(deliver(a, n)).unwrap();
    }
    // While the store is open its lock is held: check refuses, clearly.
    let (code, out, err) = run(relay().args(["check", "--data"]).arg(data));
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains("in use by a running relay"), "{err}");
    store.close();
    drop(store);

    let before = hashes(data);
    let (code, out, err) = run(relay().args(["check", "--data"]).arg(data));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 accounts, 60 messages"), "{out}");
    assert!(out.trim_end().ends_with("clean"), "{out}");
    let sealed: usize = out
        .split(" sealed)")
        .next()
        .and_then(|l| l.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(sealed >= 3, "several sealed segments: {out}");
    assert_eq!(hashes(data), before, "check changed nothing");

    // One flipped byte in the middle of a sealed segment.
    let seg = data.join("store/log/00000000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[2000] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let before = hashes(data);
    let (code, out, err) = run(relay().args(["check", "--data"]).arg(data));
    assert_eq!(code, 1, "{out}{err}");
    let problem = out
        .lines()
        .find(|l| l.contains("PROBLEM"))
        .unwrap_or_else(|| panic!("no problem named:\n{out}"));
    assert!(
        problem.contains(&format!("{}: damaged record at offset", seg.display()))
            && problem.contains("checksum mismatch"),
        "{problem}"
    );
    let offset: usize = problem
        .split("offset ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(offset <= 2000, "the frame holding byte 2000: {problem}");
    assert_eq!(hashes(data), before, "check changed nothing");
}

#[test]
fn a_store_backup_with_sealed_segments_opens_and_checks_while_writes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("live");
    let store = small_segments(&data);
    let a = relay_testkit::create_account(&store, &new_addr("ba"), 1_700_000_000);
    // Segments that hold only a deleted account's messages: no live body, so the backup skips
    // them and the copy's log has gaps.
    let gone = relay_testkit::create_account(&store, &new_addr("bg"), 1_700_000_000);
    for n in 0..40 {
        store.commit_blocking(deliver(a, n)).unwrap();
        if n == 20 {
            for k in 0..40 {
                store.commit_blocking(deliver(gone, 1000 + k)).unwrap();
            }
        }
    }
    store
        .commit_blocking(Op::DeleteAccount { account: gone })
        .unwrap();
    // A writer keeps committing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(0usize));
    let writer = {
        let (store, stop, done) = (store.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 40;
            while !stop.load(Ordering::Relaxed) {
                store.commit_blocking(deliver(a, n)).unwrap();
                n += 1;
                *done.lock().unwrap() = n;
            }
        })
    };
    while *done.lock().unwrap() < 60 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let acked_before = *done.lock().unwrap();
    let copy = dir.path().join("copy");
    let report = store.backup(&copy.join("store")).unwrap();
    while *done.lock().unwrap() < acked_before + 20 {
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(report.segments >= 3, "{report:?}");
    assert!(report.messages >= acked_before as u64, "{report:?}");
    let mut copied: Vec<u32> = std::fs::read_dir(copy.join("store/log"))
        .unwrap()
        .map(|e| {
            e.unwrap().file_name().to_str().unwrap()[..20]
                .parse()
                .unwrap()
        })
        .collect();
    copied.sort_unstable();
    assert!(
        copied.windows(2).any(|w| w[1] > w[0] + 1),
        "segments without live bodies are not copied: {copied:?}"
    );
    let (code, out, err) = run(relay().args(["check", "--data"]).arg(&copy));
    assert_eq!(code, 0, "{out}{err}");
    // The copy opens as it is and holds every message committed before the backup.
    let opened = Store::open(&copy.join("store"), StoreConfig::default()).unwrap();
    let acct = opened.account_by_id(a).unwrap();
    assert_eq!(acct.messages, report.messages);
    let msgs = opened.messages(a);
    for (_, m) in msgs.iter().take(acked_before) {
        let body = opened.read(m.body).unwrap();
        let n = m.internal_date - 1_700_000_000;
        assert!(
            body.starts_with(format!("Message-ID: <m{n}@localhost>").as_bytes()),
            "message {n}"
        );
    }
    assert!(
        store.messages(a).len() > msgs.len(),
        "the live store went on"
    );
    drop(opened);
    // The live store after two checkpoints: segments without live bodies removed, the log
    // has gaps; check compares the newest checkpoint with the older one plus the log.
    store.checkpoint().unwrap();
    store.commit_blocking(deliver(a, 100_000)).unwrap();
    store.checkpoint().unwrap();
    store.close();
    drop(store);
    let (code, out, err) = run(relay().args(["check", "--data"]).arg(&data));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("compared with older checkpoint"), "{out}");
}

/// Every file of `dir` is `0600`, every directory `0700`.
fn assert_private(dir: &Path) {
    let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            assert_private(&e.path());
        } else {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
    }
}

#[test]
fn backup_of_a_relay_under_load_opens_in_a_second_relay_and_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let p = spawn(&live, "epoll", None);
    let (a, b) = (new_addr("la"), new_addr("lb"));
    drop(imap(&p, &b));
    // Senders submit until told to stop; each 250 is recorded with its Message-ID.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..3 {
        let (acked, stop, a, b, addr) = (
            acked.clone(),
            stop.clone(),
            a.clone(),
            b.clone(),
            p.submissions,
        );
        senders.push(std::thread::spawn(move || {
            let mut c = Client::tls(addr);
            c.reply();
            c.smtp_login(&a, PASSWORD);
            while !stop.load(Ordering::Relaxed) {
                let body = message("encrypted.eml.tmpl", &a, &b);
                let text = String::from_utf8_lossy(&body).into_owned();
                let id = text
                    .lines()
                    .find_map(|l| l.strip_prefix("Message-ID: <"))
                    .and_then(|l| l.strip_suffix('>'))
                    .unwrap()
                    .to_owned();
                let (code, reply) = c.submit(&a, &[&b], &body);
                assert_eq!(code, 250, "{reply}");
                acked.lock().unwrap().push(id);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 30 {
        assert!(Instant::now() < deadline, "no submissions acknowledged");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The relay holds its store: check refuses.
    let (code, _, err) = run(relay().args(["check", "--data"]).arg(&live));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("in use by a running relay"), "{err}");

    let before: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let copy = dir.path().join("copy");
    let (code, out, err) = run(relay().arg("backup").arg(&copy).arg("--data").arg(&live));
    let after_backup = acked.lock().unwrap().len();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("backup in "), "{out}");
    // Submissions went on during and after it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < after_backup + 10 {
        assert!(
            Instant::now() < deadline,
            "submissions stalled after the backup"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.join().unwrap();
    }
    // A second backup into the same (now full) directory is refused.
    let (code, _, err) = run(relay().arg("backup").arg(&copy).arg("--data").arg(&live));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not empty"), "{err}");

    assert_private(&copy);
    let (code, out, err) = run(relay().args(["check", "--data"]).arg(&copy));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.trim_end().ends_with("clean"), "{out}");
    // A second relay on the copy (its own ports), the first one still running.
    let q = spawn(&copy, "epoll", None);
    let mut c = imap(&q, &b);
    let stored = stored_ids(&mut c);
    let missing: Vec<&String> = before.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged before the backup are missing from the copy: {missing:?}",
        missing.len(),
        before.len()
    );
    // The original keeps serving, with every message.
    let mut c = imap(&p, &b);
    assert!(stored_ids(&mut c).len() >= acked.lock().unwrap().len());
}
