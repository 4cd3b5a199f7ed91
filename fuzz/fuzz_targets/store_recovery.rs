//! Fuzz store recovery: the input becomes the tail of a log segment after a valid prefix (an
//! account, a delivered message, a mailbox, a queued message), then the store is opened.
//!
//! Input: `[mode, bytes..]`. Even mode: the bytes are the raw tail (a torn write). Odd mode: the
//! bytes are `kind, len_lo, len_hi, payload` groups framed with valid CRCs (records the writer
//! never wrote), then the rest raw. Checks: `open` never panics and fails only with `Corrupt`;
//! the prefix bytes are untouched; the segment ends in valid frames followed only by zeros; with
//! no valid frame in the tail the state is exactly the prefix's; a reopen gives the same state;
//! and with a clean cut a write after recovery survives another reopen.
//!
//! One scratch directory (on `/dev/shm` when present) is reused for every run.
#![no_main]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "common/scratch.rs"]
mod scratch;
use relay::store::format::{decode_frame, put_frame, Frame, KIND_SEAL};
use relay::store::{Error, Op, OpResult, Store, StoreConfig};
use scratch::scratch_dir;

const SEGMENT: &str = "log/00000000000000000000.seg";

struct Setup {
    work: PathBuf,
    prefix: Vec<u8>,
    state: String,
}

fn config() -> StoreConfig {
    StoreConfig {
        max_mailbox_size: 1 << 20,
        max_mailbox_messages: 100_000,
        segment_size: 1 << 16,
        fsync: false,
    }
}

/// Everything a reader can see: accounts, mailboxes, messages and their bodies, the queue with
/// its envelopes and messages (an entry whose stored body is garbage reads as an error).
fn snapshot(s: &Store) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "queue {}", s.queue_len());
    for d in s.queue_destinations() {
        let _ = writeln!(out, "{d:?}");
        for id in s.queue_ids(&d.name, None, usize::MAX) {
            let e = s
                .queue_entry(id)
                .map(|e| (e.sender, e.recipients, e.created, e.body.to_vec()));
            let _ = writeln!(out, "{id} {e:?}");
        }
    }
    for a in s.accounts() {
        let _ = writeln!(out, "{a:?}\n{:?}", s.mailboxes(a.id));
        for (mb, m) in s.messages(a.id) {
            let body = s.read(m.body).map(|b| b.to_vec());
            let _ = writeln!(out, "{mb} {m:?} {body:?}");
        }
    }
    out
}

/// Length of the valid frames at the start of `seg`, up to and including a Seal, and whether
/// they end in one.
fn valid_len(seg: &[u8]) -> (usize, bool) {
    let mut off = 0;
    while let Frame::Valid {
        kind, total_len, ..
    } = decode_frame(&seg[off..])
    {
        off += total_len;
        if kind == KIND_SEAL {
            return (off, true);
        }
    }
    (off, false)
}

fn open(dir: &Path) -> Result<Store, Error> {
    Store::open(dir, config())
}

fn setup() -> Setup {
    let root = scratch_dir("relay-fuzz-recovery");
    let template = root.join("template");
    let s = open(&template).expect("open template store");
    let Ok(OpResult::AccountCreated(a)) = s.commit_blocking(Op::CreateAccount {
        addr: "alice@example.org".into(),
        password_hash: "{SHA512-CRYPT}$6$x".into(),
        now: 1_700_000_000,
    }) else {
        panic!("create account");
    };
    s.commit_blocking(Op::Deliver {
        recipients: vec![a],
        sender: None,
        internal_date: 1_700_000_100,
        body: b"From: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n".to_vec(),
    })
    .expect("deliver");
    s.commit_blocking(Op::CreateMailbox {
        account: a,
        name: "Archive".into(),
    })
    .expect("create mailbox");
    s.commit_blocking(Op::Enqueue {
        sender: "alice@example.org".into(),
        created: 1_700_000_200,
        destinations: vec![(
            "example.net".into(),
            vec!["bob@example.net".into(), "carol@example.net".into()],
        )],
        body: b"From: alice@example.org\r\nSubject: out\r\n\r\nbye\r\n".to_vec(),
    })
    .expect("enqueue");
    let state = snapshot(&s);
    drop(s);
    let seg = std::fs::read(template.join(SEGMENT)).expect("read template segment");
    let prefix = seg[..valid_len(&seg).0].to_vec();
    assert!(!prefix.is_empty());
    Setup {
        work: root.join("work"),
        prefix,
        state,
    }
}

/// The tail to write after the prefix.
fn tail(data: &[u8]) -> Vec<u8> {
    let [mode, rest @ ..] = data else {
        return Vec::new();
    };
    if mode % 2 == 0 {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = rest;
    while let [kind, lo, hi, more @ ..] = rest {
        let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(more.len());
        put_frame(*kind, &more[..n], &mut out);
        rest = &more[n..];
        if *kind == 0 {
            break;
        }
    }
    out.extend_from_slice(rest);
    out
}

fuzz_target!(|data: &[u8]| {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    let setup = SETUP.get_or_init(setup);
    let work = &setup.work;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work.join("log")).expect("create work dir");
    let mut seg = setup.prefix.clone();
    let tail = tail(data);
    seg.extend_from_slice(&tail);
    let seg_path = work.join(SEGMENT);
    std::fs::write(&seg_path, &seg).expect("write segment");
    let (tail_valid, sealed) = valid_len(&tail);
    let clean = tail_valid == 0;

    let store = match open(work) {
        Ok(s) => s,
        Err(Error::Corrupt(_)) if !clean => return,
        Err(e) => panic!("recovery failed: {e}"),
    };
    let state = snapshot(&store);
    if clean {
        assert_eq!(state, setup.state, "recovery changed the committed state");
    }
    let on_disk = std::fs::read(&seg_path).expect("read segment");
    assert_eq!(
        &on_disk[..setup.prefix.len()],
        &setup.prefix[..],
        "prefix changed"
    );
    let (end, _) = valid_len(&on_disk);
    assert_eq!(
        end,
        setup.prefix.len() + tail_valid,
        "recovery kept a different prefix"
    );
    // Bytes after a Seal are never read; otherwise the torn rest must be zeroed.
    if !sealed {
        assert!(on_disk[end..].iter().all(|&b| b == 0), "torn tail not cut");
    }

    let write = clean.then(|| {
        store
            .commit_blocking(Op::CreateAccount {
                addr: "carol@example.org".into(),
                password_hash: "{SHA512-CRYPT}$6$y".into(),
                now: 1_700_000_200,
            })
            .expect("write after recovery")
    });
    let before = snapshot(&store);
    drop(store);
    let again = open(work).expect("reopen after recovery");
    assert_eq!(snapshot(&again), before, "reopen changed the state");
    if write.is_some() {
        assert!(again.account("carol@example.org").is_some());
    }
    drop(again);
});
