//! Fills a store for the backup benchmark (`tools/backup-bench.sh`): `DIR/store` gets about
//! `MIB` MiB of messages of `--size` bytes each (default 64 KiB), spread over 100 accounts, in
//! 64 MiB segments as a relay writes them; then a checkpoint. `relay dev --data DIR` serves it.
//!
//! ```text
//! cargo run -p relay --example store_fill -- DIR 2048 [--size 65536]
//! ```
//!
//! Writes are not fsynced while filling (the fill is not what is measured); closing the store
//! writes its checkpoint durably.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: example
#![allow(
    clippy::unwrap_used,
    reason = "benchmark tool: a failed unwrap is a failed run"
)]

use std::path::PathBuf;
use std::time::Instant;

use relay::store::{Op, OpResult, Store, StoreConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(
        args.get(1)
            .expect("usage: store_fill DIR MIB [--size BYTES]"),
    );
    let mib: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(1024);
    let size: usize = args
        .iter()
        .position(|a| a == "--size")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024);
    let store = Store::open(
        &dir.join("store"),
        StoreConfig {
            fsync: false,
            max_mailbox_size: u64::MAX / 2,
            max_mailbox_messages: u64::MAX / 2,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    let hash = relay::accounts::hash_password("benchmark-password").unwrap();
    let accounts: Vec<u32> = (0..100)
        .map(|i| {
            match store
                .commit_blocking(Op::CreateAccount {
                    addr: format!("fill{i:04}@[127.0.0.1]"),
                    password_hash: hash.clone(),
                    now: 1_700_000_000,
                })
                .unwrap()
            {
                OpResult::AccountCreated(id) => id,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let started = Instant::now();
    let total = mib * 1024 * 1024;
    let mut written = 0u64;
    let mut n = 0u64;
    while written < total {
        // A window of commits at once: the writer groups them.
        let window: Vec<_> = (0..64)
            .map(|k| {
                let i = n + k;
                let mut body =
                    format!("Message-ID: <fill{i}@localhost>\r\nSubject: {i}\r\n\r\n").into_bytes();
                body.resize(size, b'x');
                store.commit(Op::Deliver {
                    recipients: vec![accounts[(i % 100) as usize]],
                    sender: None,
                    internal_date: 1_700_000_000,
                    body,
                })
            })
            .collect();
        for fut in window {
            rt.block_on(fut).unwrap();
        }
        n += 64;
        written += 64 * size as u64;
    }
    store.close();
    println!(
        "filled {} with {n} messages, {} MiB, in {:.1} s",
        dir.display(),
        written >> 20,
        started.elapsed().as_secs_f64()
    );
}
