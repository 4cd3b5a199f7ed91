//! `kill -9` of the real `relay` process while it is acknowledging messages: after a restart on the
//! same data directory, every message that got a `250` is there.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::faults::{imap, spawn};
use crate::harness::{message, new_addr, Client, PASSWORD};

#[test]
fn kill_9_loses_no_acknowledged_message() {
    for io in ["epoll", "uring"] {
        if io == "uring" && relay::io::uring::available().is_err() {
            eprintln!("skipping io_uring: unavailable");
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (new_addr("ka"), new_addr("kb"));
        let mut p = spawn(dir.path(), io, None);
        // Create the recipient by logging in once.
        drop(imap(&p, &b));
        // Senders submit until killed; each records how many 250s it got.
        let acked = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for _ in 0..4 {
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
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        c.submit(&a, &[&b], &body)
                    })) {
                        Ok((250, _)) => {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => return,
                    }
                }
            }));
        }
        // Kill at a moment that depends on how fast this machine is, after some acks.
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(Ordering::SeqCst) < 30 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(u64::from(std::process::id() % 50)));
        p.child.kill().unwrap(); // SIGKILL
        let _ = p.child.wait();
        let acked_before_kill = acked.load(Ordering::SeqCst);
        stop.store(true, Ordering::Relaxed);
        for s in senders {
            let _ = s.join();
        }
        let acked_total = acked.load(Ordering::SeqCst);
        assert!(acked_total >= acked_before_kill);
        assert!(
            acked_total > 0,
            "no message was acknowledged before the kill"
        );
        // Restart on the same data and count.
        let mut p = spawn(dir.path(), io, None);
        let mut c = imap(&p, &b);
        let (lines, _) = c.imap("s", "SELECT INBOX");
        let exists: u32 = lines
            .iter()
            .find_map(|l| l.strip_prefix("* ").and_then(|r| r.strip_suffix(" EXISTS")))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no EXISTS in {lines:?}"));
        // Every acknowledged message is there; at most the in-flight ones (one per sender) more.
        assert!(
            exists >= acked_total && exists <= acked_total + 4,
            "{io}: {acked_total} acknowledged, {exists} stored"
        );
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}
