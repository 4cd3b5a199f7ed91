//! Benchmark of the outbound queue at the size of a dead destination: fills a store with
//! `--messages` queued messages for one destination (`--body` bytes each, one recipient, real
//! files, fsync on), then measures
//! - enqueue throughput (commits from a window of 4,096 in flight, grouped by the writer);
//! - open time with the checkpoint and by full replay of the log, each in a fresh child process;
//! - anonymous memory (`RssAnon`) of the child before and after open, against the same for an
//!   empty store: the difference per message is what the queue costs; `VmHWM` is the peak;
//! - reads (`queue_ids` pages, `queue_entry`) and `QueueDone` throughput for the delivery engine.
//!
//! ```text
//! cargo run --release -p relay --example queue_bench -- --messages 1000000 --body 2400
//! ```
//!
//! `--dir D` puts the store under `D` (default: a temp dir, removed at the end).

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: example
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Instant;

use relay::store::{Op, OpResult, QueueId, Store, StoreConfig};

const DESTINATION: &str = "dead.example";
const WINDOW: usize = 4096;
const NOW: i64 = 1_800_000_000;

struct Args {
    messages: usize,
    body: usize,
    dir: Option<PathBuf>,
    child: Option<(String, PathBuf)>,
}

fn args() -> Args {
    let mut a = Args {
        messages: 1_000_000,
        body: 2400,
        dir: None,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().expect("every flag should have a value");
        match k.as_str() {
            "--messages" => a.messages = v.parse().expect("--messages should be a number"),
            "--body" => a.body = v.parse().expect("--body should be a number"),
            "--dir" => a.dir = Some(PathBuf::from(v)),
            // Internal: `--child <what> <store dir>`.
            "--child" => a.child = Some((v, PathBuf::from(it.next().expect("store dir")))),
            _ => panic!("unknown flag {k} (use --messages N --body BYTES [--dir D])"),
        }
    }
    a
}

/// `(RssAnon, RssFile, VmHWM)` of this process in KiB.
fn memory() -> (u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..]
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    };
    (field("RssAnon:"), field("RssFile:"), field("VmHWM:"))
}

/// Samples `RssAnon` every millisecond on a thread until stopped: the peak of anonymous memory
/// (`VmHWM` also counts the pages of mapped segments that recovery scans).
struct AnonPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl AnonPeak {
    fn start() -> AnonPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(memory().0);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            peak.max(memory().0)
        });
        AnonPeak { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

fn config() -> StoreConfig {
    StoreConfig {
        max_mailbox_size: u64::MAX,
        max_mailbox_messages: u64::MAX,
        ..StoreConfig::default()
    }
}

fn enqueue(i: usize, body: &[u8]) -> Op {
    Op::Enqueue {
        sender: "sender@relay.example".into(),
        created: NOW + (i / 1000) as i64,
        destinations: vec![(DESTINATION.into(), vec![format!("r{i}@{DESTINATION}")])],
        body: body.to_vec(),
    }
}

/// Commit `ops` with up to [`WINDOW`] in flight; the results in order.
fn commit_all(store: &Store, ops: impl Iterator<Item = Op>) -> Vec<OpResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut ops = ops.peekable();
    let mut out = Vec::new();
    while ops.peek().is_some() {
        let futs: Vec<_> = ops
            .by_ref()
            .take(WINDOW)
            .map(|op| store.commit(op))
            .collect();
        for f in futs {
            out.push(rt.block_on(f).unwrap());
        }
    }
    out
}

/// A child process: open the store at `dir` and report; `what` is `open` (and leave it as it
/// is) or `replay` (the same, then close, which writes a checkpoint: timed).
fn child(what: &str, dir: &Path) {
    let sampler = AnonPeak::start();
    let (anon0, _, _) = memory();
    let t = Instant::now();
    let store = Store::open(dir, config()).unwrap();
    let open = t.elapsed();
    let peak = sampler.stop();
    let (anon1, file1, hwm1) = memory();
    let len = store.queue_len();
    let mut line = format!(
        "open_ms={:.1} anon_before_kib={anon0} anon_after_kib={anon1} anon_peak_kib={peak} \
         file_kib={file1} hwm_kib={hwm1} queue={len}",
        open.as_secs_f64() * 1e3
    );
    if len > 0 {
        // The delivery engine's reads: pages of ids, then each entry with its message.
        let t = Instant::now();
        let mut ids: Vec<QueueId> = Vec::new();
        let mut after = None;
        while ids.len() < 100_000 {
            let page = store.queue_ids(DESTINATION, after, 1000);
            after = page.last().copied();
            if page.is_empty() {
                break;
            }
            ids.extend(page);
        }
        let paging = t.elapsed();
        let t = Instant::now();
        let mut bytes = 0;
        for id in &ids {
            let e = store.queue_entry(*id).unwrap();
            bytes += e.body.len() + e.recipients.len();
        }
        let reads = t.elapsed();
        assert!(bytes > 0);
        line += &format!(
            " ids_page_us={:.1} entry_read_us={:.2}",
            paging.as_secs_f64() * 1e6 / (ids.len() / 1000).max(1) as f64,
            reads.as_secs_f64() * 1e6 / ids.len() as f64
        );
    }
    if what == "replay" {
        let sampler = AnonPeak::start();
        let t = Instant::now();
        drop(store);
        let close = t.elapsed();
        line += &format!(
            " close_checkpoint_ms={:.1} close_anon_peak_kib={}",
            close.as_secs_f64() * 1e3,
            sampler.stop()
        );
    }
    println!("{line}");
}

/// Run this example as a child doing `what` on `dir`; its report as `key=value` pairs.
fn run_child(what: &str, dir: &Path) -> Vec<(String, f64)> {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", what])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    println!("  child {what}: {}", text.trim());
    text.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

fn get(r: &[(String, f64)], k: &str) -> f64 {
    r.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap()
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn main() {
    let args = args();
    if let Some((what, dir)) = &args.child {
        child(what, dir);
        return;
    }
    let tmp = tempfile::tempdir_in(args.dir.clone().unwrap_or_else(std::env::temp_dir)).unwrap();
    let dir = tmp.path().join("store");
    let empty = tmp.path().join("empty");
    let n = args.messages;
    let body: Vec<u8> = (0..args.body).map(|i| b'a' + (i % 26) as u8).collect();

    let (anon0, _, _) = memory();
    let store = Store::open(&dir, config()).unwrap();
    let t = Instant::now();
    let results = commit_all(&store, (0..n).map(|i| enqueue(i, &body)));
    let fill = t.elapsed();
    assert_eq!(results.len(), n);
    assert!(results
        .iter()
        .all(|r| matches!(r, OpResult::Enqueued(ids) if ids.len() == 1)));
    drop(results);
    assert_eq!(store.queue_len(), n as u64);
    let stats = store.stats();
    let (anon1, _, _) = memory();
    // What is still in use, without what the allocator keeps of the freed batch buffers.
    // SAFETY: malloc_trim only returns free memory of the allocator to the system.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
    let (anon2, _, _) = memory();
    println!(
        "fill: {n} enqueues of {} B in {:.1} s = {:.0} msgs/s ({} batches, {:.0} ops/batch, \
         {} fdatasyncs); filling process RssAnon +{} KiB, +{} KiB = {:.1} B/message after \
         malloc_trim",
        args.body,
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64(),
        stats.batches,
        stats.ops as f64 / stats.batches as f64,
        stats.fsyncs,
        anon1.saturating_sub(anon0),
        anon2.saturating_sub(anon0),
        anon2.saturating_sub(anon0) as f64 * 1024.0 / n as f64
    );
    let t = Instant::now();
    store.close();
    drop(store);
    let close = t.elapsed();
    let log_bytes = dir_size(&dir.join("log"));
    let cp_bytes = std::fs::read_dir(dir.join("index"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap_or(0);
    println!(
        "close (writes the checkpoint): {:.0} ms; log {:.2} GB, checkpoint {:.1} MB",
        close.as_secs_f64() * 1e3,
        log_bytes as f64 / 1e9,
        cp_bytes as f64 / 1e6
    );

    // Fresh processes: an empty store, then the full one from its checkpoint, then by replay.
    Store::open(&empty, config()).unwrap().close();
    let base = run_child("open", &empty);
    let cp = run_child("open", &dir);
    std::fs::rename(dir.join("index"), tmp.path().join("index.off")).unwrap();
    let replay = run_child("replay", &dir);

    let per_msg = |r: &[(String, f64)]| {
        let queue = get(r, "anon_after_kib") - get(r, "anon_before_kib");
        let empty = get(&base, "anon_after_kib") - get(&base, "anon_before_kib");
        (queue - empty) * 1024.0 / n as f64
    };
    let mib = |kib: f64| kib / 1024.0;
    println!(
        "open with checkpoint: {:.0} ms, RssAnon {:.1} B/message after open (peak during open \
         {:.0} MiB, {:.0} MiB after)",
        get(&cp, "open_ms"),
        per_msg(&cp),
        mib(get(&cp, "anon_peak_kib")),
        mib(get(&cp, "anon_after_kib"))
    );
    println!(
        "open by full replay: {:.0} ms, RssAnon {:.1} B/message after open (peak during open \
         {:.0} MiB); writing the checkpoint at close {:.0} ms (peak {:.0} MiB)",
        get(&replay, "open_ms"),
        per_msg(&replay),
        mib(get(&replay, "anon_peak_kib")),
        get(&replay, "close_checkpoint_ms"),
        mib(get(&replay, "close_anon_peak_kib"))
    );

    // The engine finishing entries: QueueDone of the 100k oldest.
    let store = Store::open(&dir, config()).unwrap();
    let ids = store.queue_ids(DESTINATION, None, 100_000);
    let t = Instant::now();
    commit_all(
        &store,
        ids.iter().map(|id| Op::QueueDone {
            id: *id,
            recipients: vec![0],
        }),
    );
    let done = t.elapsed();
    assert_eq!(store.queue_len(), (n - ids.len()) as u64);
    println!(
        "QueueDone: {} in {:.2} s = {:.0} /s",
        ids.len(),
        done.as_secs_f64(),
        ids.len() as f64 / done.as_secs_f64()
    );
    store.close();
    drop(store);
    drop(tmp);
}
