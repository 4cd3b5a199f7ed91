//! Fuzz the admin protocol (`admin::protocol`): each input line is one request, parsed and run
//! against a real store holding a few accounts and messages of different ages and sizes.
//!
//! Checks: no panic; every answer is an object with `ok`; failures carry a documented code and
//! never `internal` (a store failure); a line that is not a request, a read-only request and a
//! `dry_run` request leave the store as it was. A run that changed the store restores it from a
//! template directory (on `/dev/shm` when present), so every run starts from the same state.
#![no_main]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;

#[path = "common/scratch.rs"]
mod scratch;
use relay::admin::protocol::{handle_line, Request};
use relay::config::Config;
use relay::shared::Shared;
use relay::store::{Op, OpResult, Store, StoreConfig};
use scratch::scratch_dir;
use serde_json::Value;

const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

fn store_config() -> StoreConfig {
    StoreConfig {
        max_mailbox_size: 1 << 20,
        max_mailbox_messages: 100_000,
        segment_size: 1 << 20,
        fsync: false,
    }
}

fn snapshot(s: &Store) -> String {
    let mut out = String::new();
    for a in s.accounts() {
        let _ = writeln!(out, "{a:?} {:?}", s.messages(a.id));
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("list dir") {
        let e = e.expect("dir entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy file");
        }
    }
}

struct Env {
    root: PathBuf,
    /// The store behind `shared`, kept for reading its whole state.
    store: Option<Store>,
    shared: Option<Shared>,
    /// The folder `store` works in (`work-a` or `work-b` under `root`).
    work: Option<PathBuf>,
    baseline: String,
}

impl Env {
    fn new() -> Env {
        let root = scratch_dir("relay-fuzz-admin");
        let template = root.join("template");
        let s = Store::open(&template, store_config()).expect("open template store");
        let domain = Config::dev(root.clone()).address_domain();
        let ages_days = [0i64, 3, 40, 200];
        for (i, local) in ["old", "busy", "new"].iter().enumerate() {
            let created = NOW - ages_days[3 - i] * DAY;
            let Ok(OpResult::AccountCreated(id)) = s.commit_blocking(Op::CreateAccount {
                addr: format!("{local}@{domain}"),
                password_hash: "{SHA512-CRYPT}$6$x".into(),
                now: created,
            }) else {
                panic!("create account");
            };
            for (j, age) in ages_days.iter().enumerate() {
                let size = if j == 2 { 210_000 } else { 100 + 50 * j };
                s.commit_blocking(Op::Deliver {
                    recipients: vec![id],
                    sender: None,
                    internal_date: NOW - age * DAY,
                    body: vec![b'x'; size],
                })
                .expect("deliver");
            }
        }
        s.close();
        drop(s);
        let mut env = Env {
            root,
            store: None,
            shared: None,
            work: None,
            baseline: String::new(),
        };
        env.reset();
        env.baseline = snapshot(env.store());
        env
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store open")
    }

    fn shared(&self) -> &Shared {
        self.shared.as_ref().expect("store open")
    }

    /// Back to the template state: a fresh copy of the template in the other of two work
    /// folders, swapped into the one `Shared` (built once: building it loads the system's CA
    /// certificates for the DNS resolver, about a second under ASan when unoptimized), then the
    /// old copy removed once nothing holds it.
    fn reset(&mut self) {
        let old = self.work.take();
        let work = self.root.join(match old.as_deref().and_then(Path::file_name) {
            Some(name) if name == "work-a" => "work-b",
            _ => "work-a",
        });
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&self.root.join("template"), &work);
        let store = Store::open(&work, store_config()).expect("open work store");
        match self.shared.as_mut() {
            Some(shared) => shared.store = Arc::new(store.clone()),
            None => {
                self.shared = Some(Shared::new(
                    Config::dev(self.root.clone()),
                    Arc::new(store.clone()),
                ));
            }
        }
        self.store = Some(store);
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(old);
        }
        self.work = Some(work);
    }
}

/// Whether running `req` must leave the store unchanged.
fn read_only(req: &Request) -> bool {
    match req {
        // Retrying wakes the delivery engine; the store is not written.
        Request::Config {}
        | Request::Status {}
        | Request::ListAccounts {}
        | Request::Queue { .. }
        | Request::QueueRetry { .. } => true,
        Request::CreateAccount { dry_run, .. }
        | Request::QueueDrop { dry_run, .. }
        | Request::DeleteAccount { dry_run, .. }
        | Request::ExpireMessages { dry_run, .. }
        | Request::TrimMailbox { dry_run, .. }
        | Request::ExpireInactive { dry_run, .. }
        | Request::Expire { dry_run, .. } => *dry_run,
        // Never run (see the target): it writes a copy of the store wherever the line says.
        Request::Backup { .. } => true,
    }
}

fuzz_target!(|data: &[u8]| {
    static ENV: Mutex<Option<Env>> = Mutex::new(None);
    let mut guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let env = guard.get_or_insert_with(Env::new);
    let mut changed = false;
    for line in data.split(|&b| b == b'\n').take(4) {
        // A backup request writes a copy of the store into the directory it names: anywhere on
        // this machine, for a fuzzer. Its parsing is serde's; its work is tested in relay.
        if matches!(
            serde_json::from_slice::<Request>(line),
            Ok(Request::Backup { .. })
        ) {
            continue;
        }
        let before = snapshot(env.store());
        let answer = handle_line(env.shared(), env.store(), line, NOW);
        let Value::Object(m) = &answer else {
            panic!("answer is not an object: {answer}");
        };
        match m.get("ok") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                let code = m.get("code").and_then(Value::as_str).unwrap_or("");
                assert!(
                    ["bad_request", "not_found", "exists"].contains(&code),
                    "unexpected failure {answer}"
                );
            }
            _ => panic!("answer without ok: {answer}"),
        }
        let after = snapshot(env.store());
        let unchanged = match serde_json::from_slice::<Request>(line) {
            Ok(req) => read_only(&req),
            Err(_) => true,
        };
        if unchanged {
            assert_eq!(
                before, after,
                "a read-only request changed the store: {answer}"
            );
        }
        changed |= before != after;
    }
    if changed || snapshot(env.store()) != env.baseline {
        env.reset();
    }
});
