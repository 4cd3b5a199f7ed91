//! Benchmark of the retention job: builds a store of `--accounts` accounts and `--messages`
//! messages through the store API (real files, real fsync), then times the admin socket's
//! `expire` request (dry run, then for real) and checks the outcome.
//!
//! ```text
//! cargo run --release -p relay --example expire_bench -- --accounts 100000 --messages 2000000
//! ```

#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: example
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use relay::admin::protocol::{handle, Request};
use relay::config::Config;
use relay::shared::Shared;
use relay::store::{Op, OpResult, Store, StoreConfig};

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;
const RECIPIENTS_PER_MESSAGE: usize = 20;
const WINDOW: usize = 4096;

struct Args {
    accounts: usize,
    messages: usize,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        accounts: 100_000,
        messages: 2_000_000,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().expect("every flag should have a value");
        match k.as_str() {
            "--accounts" => a.accounts = v.parse().expect("--accounts should be a number"),
            "--messages" => a.messages = v.parse().expect("--messages should be a number"),
            "--dir" => a.dir = Some(PathBuf::from(v)),
            _ => panic!("unknown flag {k} (use --accounts N --messages N [--dir D])"),
        }
    }
    a
}

/// Submits `ops` in windows so the writer batches them, and returns the results.
fn commit_all(store: &Store, ops: Vec<Op>) -> Vec<OpResult> {
    let mut out = Vec::with_capacity(ops.len());
    let mut it = ops.into_iter().peekable();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    while it.peek().is_some() {
        let futs: Vec<_> = it
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

fn main() {
    let args = args();
    let tmp = tempfile::tempdir().unwrap();
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let max_mailbox_size = 500_000;
    let store = Store::open(
        &dir.join("store"),
        StoreConfig {
            max_mailbox_size,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(42);
    let t = Instant::now();

    // Accounts: created 130 days ago, last login uniformly in the last 130 days (about 30 %
    // inactive beyond 90 days); 2 % never logged in since creation.
    let ops = (0..args.accounts)
        .map(|i| Op::CreateAccount {
            addr: format!("u{i:08}@[127.0.0.1]"),
            password_hash: "{SHA512-CRYPT}$6$bench$x".into(),
            now: NOW - 130 * DAY,
        })
        .collect();
    let ids: Vec<u32> = commit_all(&store, ops)
        .into_iter()
        .map(|r| match r {
            OpResult::AccountCreated(id) => id,
            r => panic!("{r:?}"),
        })
        .collect();
    let today = (NOW / DAY) as u32;
    let mut ops = Vec::new();
    for &account in &ids {
        if rng.gen_range(0..100) >= 2 {
            ops.push(Op::SetLastLogin {
                account,
                day: today - rng.gen_range(0..130),
            });
        }
    }
    commit_all(&store, ops);
    println!("{} accounts in {:?}", ids.len(), t.elapsed());

    // Messages: one body to 20 random recipients; dates uniform over 30 days; 1 in 50 bodies
    // is large (210 kB).
    let t = Instant::now();
    let bodies = args.messages / RECIPIENTS_PER_MESSAGE;
    let mut ops = Vec::with_capacity(bodies);
    for _ in 0..bodies {
        let size = if rng.gen_range(0..50) == 0 {
            210_000
        } else {
            rng.gen_range(200..2000)
        };
        let mut recipients = Vec::with_capacity(RECIPIENTS_PER_MESSAGE);
        while recipients.len() < RECIPIENTS_PER_MESSAGE {
            let r = ids[rng.gen_range(0..ids.len())];
            if !recipients.contains(&r) {
                recipients.push(r);
            }
        }
        ops.push(Op::Deliver {
            recipients,
            sender: None,
            internal_date: NOW - rng.gen_range(0..30 * DAY),
            body: vec![b'x'; size],
        });
    }
    let delivered: usize = commit_all(&store, ops)
        .iter()
        .map(|r| match r {
            OpResult::Delivered(v) => v.iter().filter(|x| x.is_ok()).count(),
            r => panic!("{r:?}"),
        })
        .sum();
    println!("{delivered} messages delivered in {:?}", t.elapsed());

    let mut config = Config::dev(dir.clone());
    config.max_mailbox_size = max_mailbox_size;
    let shared = Arc::new(Shared::new(config, Arc::new(store.clone())));
    let expire = |dry_run| Request::Expire {
        delete_mails_after: None,
        delete_large_after: None,
        delete_inactive_users_after: None,
        large_message_bytes: None,
        quota_target_bytes: None,
        now: Some(NOW),
        dry_run,
        details: false,
    };
    let t = Instant::now();
    let dry = handle(&shared, &store, expire(true), NOW).unwrap();
    println!("dry run: {:?}\n  {dry}", t.elapsed());
    let t = Instant::now();
    let real = handle(&shared, &store, expire(false), NOW).unwrap();
    let took = t.elapsed();
    println!("expire: {took:?}\n  {real}");
    for k in ["accounts_deleted", "messages_expunged", "bytes_freed"] {
        assert_eq!(dry[k], real[k], "dry run and run differ in {k}");
    }
    assert_eq!(real["failed"], 0);
    let left = store.accounts();
    let msgs: u64 = left.iter().map(|a| a.messages).sum();
    let old = left
        .iter()
        .flat_map(|a| store.messages(a.id))
        .filter(|(_, m)| m.internal_date < NOW - 20 * DAY)
        .count();
    assert_eq!(old, 0, "messages older than 20 days remain");
    println!(
        "left: {} accounts, {msgs} messages; expiry of {} accounts / {delivered} messages took {:.2} s",
        left.len(),
        ids.len(),
        took.as_secs_f64()
    );
}
