//! The real `relay` binary under faults: a full disk (a small tmpfs in a private mount
//! namespace) during a burst of deliveries, a restart on that full disk after `kill -9`, and
//! `kill -9` cycles under concurrent load on both I/O backends. After each, every message a
//! client got `250` for is stored.
//!
//! `KILL_CYCLES=N` runs the kill test with N cycles per backend (`tools/kill-cycles.sh`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{free_port, message, new_addr, Client, PASSWORD};

/// A `relay dev` process (killed when dropped); also used by `crash.rs`.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) submissions: SocketAddr,
    pub(crate) imaps: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `relay dev` on `data` with fresh ports, through `wrap` (`None`: directly; else a
/// shell script that ends in `exec "$@"`).
pub(crate) fn spawn(data: &Path, io: &str, wrap: Option<&str>) -> Proc {
    spawn_with(data, io, wrap, &[])
}

/// [`spawn`] with further `--set` options.
pub(crate) fn spawn_with(data: &Path, io: &str, wrap: Option<&str>, sets: &[String]) -> Proc {
    start(data, io, wrap.map_or(Wrap::Direct, Wrap::Unshare), sets)
}

/// How the relay process is started.
enum Wrap<'a> {
    /// Directly.
    Direct,
    /// In a new private mount namespace, by a shell script that ends in `exec "$@"`.
    Unshare(&'a str),
    /// In the mount namespace of this process (`nsenter`, which then becomes the relay).
    Enter(u32),
}

fn start(data: &Path, io: &str, wrap: Wrap<'_>, sets: &[String]) -> Proc {
    let (sub, imaps) = (free_port(), free_port());
    let relay = env!("CARGO_BIN_EXE_relay");
    let mut cmd = match wrap {
        Wrap::Direct => Command::new(relay),
        Wrap::Enter(pid) => {
            let mut c = Command::new("nsenter");
            c.args(["-t", &pid.to_string(), "-m", "--", relay]);
            c
        }
        Wrap::Unshare(script) => {
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-ec",
                script,
                "sh",
                relay,
            ]);
            c
        }
    };
    cmd.args(["dev", "--io", io, "--data"])
        .arg(data)
        .args([
            "--set",
            "mx_port=0",
            "--set",
            "smtp_port=0",
            "--set",
            "imap_port=0",
            "--set",
            &format!("smtps_port={sub}"),
            "--set",
            &format!("imaps_port={imaps}"),
            "--set",
            "https_port=0",
            "--set",
            "http_port=0",
            "--set",
            "max_user_send_burst_size=1000000",
            "--set",
            "new_connections_burst=100000",
            // Registration's own free-space guard would refuse accounts on the small tmpfs.
            "--set",
            "min_free_disk_space=0",
        ])
        .args(sets.iter().flat_map(|s| ["--set", s.as_str()]))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The relay's log: shown with FAULTS_STDERR, and the last lines kept for a failed start.
    let tail = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let (err, keep) = (child.stderr.take().unwrap(), tail.clone());
    let err_thread = std::thread::spawn(move || {
        let show = std::env::var_os("FAULTS_STDERR").is_some();
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if show {
                eprintln!("{line}");
            }
            let mut k = keep.lock().unwrap();
            k.push_back(line);
            if k.len() > 40 {
                k.pop_front();
            }
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    if !line.starts_with("relay for") {
        let status = child.wait();
        let _ = err_thread.join();
        let log: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
        panic!(
            "relay did not start ({status:?}), first line {line:?}; its log:\n{}",
            log.join("\n")
        );
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    Proc {
        child,
        submissions: SocketAddr::from(([127, 0, 0, 1], sub)),
        imaps: SocketAddr::from(([127, 0, 0, 1], imaps)),
    }
}

/// An IMAP session of `addr`, logged in (created on the first login).
pub(crate) fn imap(p: &Proc, addr: &str) -> Client {
    let mut c = Client::tls(p.imaps);
    c.line();
    let (_, status) = c.imap("l", &format!("LOGIN \"{addr}\" \"{PASSWORD}\""));
    assert!(status.starts_with("l OK"), "{status}");
    c
}

/// Message-IDs in the INBOX of the logged-in client.
pub(crate) fn stored_ids(c: &mut Client) -> BTreeSet<String> {
    let (lines, status) = c.imap("s", "SELECT INBOX");
    assert!(status.starts_with("s OK"), "{status}");
    if lines.iter().any(|l| l == "* 0 EXISTS") {
        return BTreeSet::new();
    }
    let (lines, status) = c.imap("f", "FETCH 1:* BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]");
    assert!(status.starts_with("f OK"), "{status}");
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("Message-ID: <"))
        .filter_map(|l| l.strip_suffix('>'))
        .map(str::to_owned)
        .collect()
}

/// Message-IDs of the INBOX messages with a UID above `*last_uid` (raised to the highest seen):
/// each check fetches only what is new.
fn new_stored_ids(c: &mut Client, last_uid: &mut u32) -> BTreeSet<String> {
    let (_, status) = c.imap("s", "SELECT INBOX");
    assert!(status.starts_with("s OK"), "{status}");
    let (lines, status) = c.imap(
        "f",
        &format!(
            "UID FETCH {}:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
            *last_uid + 1
        ),
    );
    assert!(status.starts_with("f OK"), "{status}");
    let mut ids = BTreeSet::new();
    for l in &lines {
        if let Some(rest) = l.split_once("FETCH (UID ").map(|(_, r)| r) {
            let uid: u32 = rest.split(' ').next().unwrap().parse().unwrap();
            *last_uid = (*last_uid).max(uid);
        } else if let Some(id) = l.strip_prefix("Message-ID: <") {
            ids.insert(id.trim_end_matches('>').to_owned());
        }
    }
    ids
}

fn message_id(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: <"))
        .unwrap();
    id.trim_end_matches('>').to_owned()
}

/// Whether this machine lets a test mount a tmpfs in a private mount namespace.
fn can_unshare_mount() -> Result<(), String> {
    let probe = tempfile::tempdir().unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs '{}'",
        probe.path().display()
    );
    match Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", &script])
        .stderr(Stdio::piped())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
        Err(e) => Err(format!("unshare: {e}")),
    }
}

/// A store whose first (64 MiB, preallocated) segment is all but full, so that a burst of
/// small messages reaches the point where the next segment is needed.
fn nearly_full_store(data: &Path, room: usize) {
    use relay::store::{Op, Store, StoreConfig};
    let config = StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        ..StoreConfig::default()
    };
    let s = Store::open(&data.join("store"), config.clone()).unwrap();
    s.commit_blocking(Op::CreateAccount {
        addr: "filler00@[127.0.0.1]".into(),
        password_hash: "{SHA512-CRYPT}$6$x".into(),
        now: 1_700_000_000,
    })
    .unwrap();
    let big = vec![b'f'; config.segment_size as usize - room];
    let filler = s.account("filler00@[127.0.0.1]").unwrap().id;
    s.commit_blocking(Op::Deliver {
        recipients: vec![filler],
        sender: None,
        internal_date: 1_700_000_000,
        body: big,
    })
    .unwrap();
    s.close();
}

/// Fill the file system holding `path` (seen through `/proc/<pid>/root`) with one file.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 1 << 16];
    let mut n = 0u64;
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {
        n += chunk.len() as u64;
    }
    // The last partial chunk may have taken the last pages.
    n
}

#[test]
fn full_disk_refuses_with_452_keeps_every_acknowledged_message_and_recovers_without_restart() {
    if let Err(why) = can_unshare_mount() {
        eprintln!(
            "SKIPPED full-disk test: cannot mount a tmpfs in a private mount namespace: {why}"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (src, mnt) = (work.path().join("src"), work.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    nearly_full_store(&src, 160 * 1024);
    // 64 MiB in the active segment, 1 MiB of reserve, the rest filled by the test; freeing the
    // filler leaves room for a new segment.
    let script = format!(
        "mount -t tmpfs -o size=140m tmpfs '{m}'; cp -a '{s}/.' '{m}/'; exec \"$@\"",
        m = mnt.display(),
        s = src.display()
    );
    let mut p = spawn(&mnt, "epoll", Some(&script));
    let pid = p.child.id();
    let inside =
        |path: &Path| Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap());
    let (a, b) = (new_addr("fa"), new_addr("fb"));
    let mut reader = imap(&p, &b);
    drop(imap(&p, &a));
    let filler = inside(&mnt.join("filler"));
    let filled = fill(&filler);
    assert!(
        filled > 50 << 20,
        "the tmpfs took only {filled} bytes of filler"
    );
    // A burst from several sessions until every one is refused.
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let refusals = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (acked, refusals, a, b, addr) = (
                acked.clone(),
                refusals.clone(),
                a.clone(),
                b.clone(),
                p.submissions,
            );
            std::thread::spawn(move || {
                let mut c = Client::tls(addr);
                c.reply();
                c.smtp_login(&a, PASSWORD);
                for _ in 0..2000 {
                    let body = message("encrypted.eml.tmpl", &a, &b);
                    let (code, text) = c.submit(&a, &[&b], &body);
                    if code == 250 {
                        acked.lock().unwrap().insert(message_id(&body));
                    } else {
                        refusals.lock().unwrap().push((code, text));
                        return;
                    }
                }
                panic!("2000 deliveries and no refusal on a full disk");
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let acked_full: BTreeSet<String> = acked.lock().unwrap().clone();
    assert!(
        acked_full.len() > 20,
        "only {} acknowledged",
        acked_full.len()
    );
    for (code, text) in refusals.lock().unwrap().iter() {
        assert_eq!(*code, 452, "{text}");
        assert!(text.contains("4.3.1"), "{text}");
    }
    // Reads work and hold every acknowledged message.
    assert_eq!(stored_ids(&mut reader), acked_full);
    // Flag changes and expunges commit on the full disk: in the rest of the segment, then in
    // the space the reserve gives back.
    let reserve = inside(&mnt.join("store/reserve"));
    assert!(reserve.exists());
    let mut rounds = 0;
    while reserve.exists() {
        let sign = if rounds % 2 == 0 { '+' } else { '-' };
        let (_, status) = reader.imap("x0", &format!("STORE 1:* {sign}FLAGS.SILENT (\\Flagged)"));
        assert!(status.starts_with("x0 OK"), "round {rounds}: {status}");
        rounds += 1;
        assert!(rounds < 500, "the reserve was never needed");
    }
    let (_, status) = reader.imap("x1", "STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert!(status.starts_with("x1 OK"), "{status}");
    let (lines, status) = reader.imap("x2", "EXPUNGE");
    assert!(status.starts_with("x2 OK"), "{status}");
    assert!(lines.iter().any(|l| l == "* 1 EXPUNGE"), "{lines:?}");
    let mut after_expunge = stored_ids(&mut reader);
    assert_eq!(after_expunge.len(), acked_full.len() - 1);
    // The reserve is not for new messages: APPEND gets a temporary NO.
    reader.send("a1 APPEND INBOX {3000}");
    assert!(reader.line().starts_with('+'));
    reader.send(&"x".repeat(3000));
    let (_, status) = reader.until_tag("a1");
    assert!(status.starts_with("a1 NO [OVERQUOTA]"), "{status}");
    // Free the space: deliveries succeed again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut c = Client::tls(p.submissions);
    c.reply();
    c.smtp_login(&a, PASSWORD);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = message("encrypted.eml.tmpl", &a, &b);
        let (code, text) = c.submit(&a, &[&b], &body);
        if code == 250 {
            after_expunge.insert(message_id(&body));
            break;
        }
        assert_eq!(code, 452, "{text}");
        assert!(
            Instant::now() < deadline,
            "deliveries never resumed: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored_ids(&mut reader), after_expunge);
    drop(reader);
    let _ = p.child.kill();
    let _ = p.child.wait();
}

#[test]
fn a_relay_killed_on_a_full_disk_starts_again_on_it_and_writes_once_space_returns() {
    if let Err(why) = can_unshare_mount() {
        eprintln!(
            "SKIPPED full-disk restart test: cannot mount a tmpfs in a private mount namespace: {why}"
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (src, mnt) = (work.path().join("src"), work.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    nearly_full_store(&src, 160 * 1024);
    // The tmpfs lives in a namespace held by a process of its own, so that relays can die and
    // start again on it.
    let script = format!(
        "mount -t tmpfs -o size=140m tmpfs '{m}'; cp -a '{s}/.' '{m}/'; echo ready; exec sleep 600",
        m = mnt.display(),
        s = src.display()
    );
    let mut holder = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-ec", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let ns = holder.id();
    let inside =
        |path: &Path| Path::new(&format!("/proc/{ns}/root")).join(path.strip_prefix("/").unwrap());
    let mut p = start(&mnt, "epoll", Wrap::Enter(ns), &[]);
    let (a, b) = (new_addr("ra"), new_addr("rb"));
    drop(imap(&p, &b));
    let filler = inside(&mnt.join("filler"));
    assert!(fill(&filler) > 50 << 20);
    // Deliveries until the disk refuses one; then kill -9.
    let mut acked = BTreeSet::new();
    let mut c = Client::tls(p.submissions);
    c.reply();
    c.smtp_login(&a, PASSWORD);
    loop {
        let body = message("encrypted.eml.tmpl", &a, &b);
        let (code, text) = c.submit(&a, &[&b], &body);
        if code != 250 {
            assert_eq!(code, 452, "{text}");
            break;
        }
        acked.insert(message_id(&body));
        assert!(acked.len() < 5000, "no refusal on a full disk");
    }
    assert!(acked.len() > 20, "only {} acknowledged", acked.len());
    drop(c);
    let _ = p.child.kill();
    let _ = p.child.wait();
    // Started again on the full disk: it serves every acknowledged message and refuses new
    // ones with a temporary error.
    let p = start(&mnt, "epoll", Wrap::Enter(ns), &[]);
    let mut reader = imap(&p, &b);
    assert_eq!(stored_ids(&mut reader), acked);
    let mut c = Client::tls(p.submissions);
    c.reply();
    c.smtp_login(&a, PASSWORD);
    let (code, text) = c.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 452, "{text}");
    // Space returns: deliveries go on without another restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let body = message("encrypted.eml.tmpl", &a, &b);
        let (code, text) = c.submit(&a, &[&b], &body);
        if code == 250 {
            acked.insert(message_id(&body));
            break;
        }
        assert_eq!(code, 452, "{text}");
        assert!(
            Instant::now() < deadline,
            "deliveries never resumed: {text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(stored_ids(&mut reader), acked);
    drop((reader, c, p));
    let _ = holder.kill();
    let _ = holder.wait();
}

/// `kill -9` at random moments while many sessions submit, restart, check; repeated.
fn kill_cycles(io: &str, cycles: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let recipient = new_addr("kr");
    let senders: Vec<String> = (0..8).map(|_| new_addr("ks")).collect();
    let mut acked_all: BTreeSet<String> = BTreeSet::new();
    let (mut stored, mut last_uid) = (BTreeSet::new(), 0u32);
    let mut rng = u64::from(std::process::id()) | 1;
    let mut p = spawn(dir.path(), io, None);
    drop(imap(&p, &recipient));
    for cycle in 0..cycles {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads: Vec<_> = senders
            .iter()
            .map(|s| {
                let (acked, stop, s, r, addr) = (
                    acked.clone(),
                    stop.clone(),
                    s.clone(),
                    recipient.clone(),
                    p.submissions,
                );
                std::thread::spawn(move || {
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut c = Client::tls(addr);
                        c.reply();
                        c.smtp_login(&s, PASSWORD);
                        while !stop.load(Ordering::Relaxed) {
                            let body = message("encrypted.eml.tmpl", &s, &r);
                            let (code, text) = c.submit(&s, &[&r], &body);
                            assert_eq!(code, 250, "{text}");
                            acked.lock().unwrap().push(message_id(&body));
                        }
                    }));
                    // A connection cut by the kill ends the sender; anything else is a failure
                    // only if the relay was still alive (checked by the caller's counts).
                    drop(run);
                })
            })
            .collect();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Kill 150..650 ms into the load.
        std::thread::sleep(Duration::from_millis(150 + rng % 500));
        p.child.kill().unwrap();
        let _ = p.child.wait();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        acked_all.extend(acked.lock().unwrap().drain(..));
        eprintln!(
            "{io} cycle {cycle}: {} acknowledged so far",
            acked_all.len()
        );
        p = spawn(dir.path(), io, None);
        stored.extend(new_stored_ids(&mut imap(&p, &recipient), &mut last_uid));
        let missing: Vec<_> = acked_all.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "{io}, cycle {cycle}: {} of {} acknowledged messages missing: {missing:?}",
            missing.len(),
            acked_all.len()
        );
    }
    assert!(
        acked_all.len() > cycles,
        "{io}: too few messages acknowledged"
    );
    (cycles, acked_all.len())
}

#[test]
fn kill_9_cycles_under_concurrent_load_lose_no_acknowledged_message() {
    let cycles: usize = std::env::var("KILL_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    for io in ["epoll", "uring"] {
        if io == "uring" && relay::io::uring::available().is_err() {
            eprintln!("skipping io_uring: unavailable");
            continue;
        }
        let start = Instant::now();
        let (cycles, acked) = kill_cycles(io, cycles);
        println!(
            "kill-cycles: io={io} cycles={cycles} acknowledged={acked} missing=0 time={:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
}
