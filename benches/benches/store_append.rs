//! Store write and read paths through `relay::store::Store` in a temporary directory: one
//! delivery at a time (the latency of a lone `250`), batches of concurrent deliveries (group
//! commit: one `fdatasync` for the batch), with `fsync` on and off, and reading a body back from
//! the mmap.
//!
//! `cargo bench -p relay-benches --bench store_append`
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: benchmarks

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relay::store::{AccountId, Op, OpResult, Store, StoreConfig};

fn open(dir: &std::path::Path, fsync: bool) -> (Store, AccountId) {
    let config = StoreConfig {
        max_mailbox_size: u64::MAX / 4,
        max_mailbox_messages: u64::MAX,
        fsync,
        ..StoreConfig::default()
    };
    let store = Store::open(dir, config).expect("a fresh store should open");
    let created = store
        .commit_blocking(Op::CreateAccount {
            addr: "bench12345@[127.0.0.1]".into(),
            password_hash: "{SHA512-CRYPT}$6$x$y".into(),
            now: 0,
        })
        .expect("account creation should succeed");
    let OpResult::AccountCreated(id) = created else {
        panic!("CreateAccount answered {created:?}");
    };
    (store, id)
}

fn deliver(account: AccountId, body: &[u8]) -> Op {
    Op::Deliver {
        recipients: vec![account],
        sender: None,
        internal_date: 1_700_000_000,
        body: body.to_vec(),
    }
}

fn bench_append(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_append");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    g.sample_size(20);
    let body = vec![b'x'; 1024];
    for fsync in [true, false] {
        let label = if fsync { "fsync" } else { "nofsync" };
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, account) = open(dir.path(), fsync);
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("deliver_1k_one", label), |b| {
            b.iter(|| {
                store
                    .commit_blocking(deliver(account, &body))
                    .expect("deliver")
            })
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for batch in [16u64, 256] {
            g.throughput(Throughput::Elements(batch));
            g.bench_function(
                BenchmarkId::new(format!("deliver_1k_batch{batch}"), label),
                |b| {
                    b.iter(|| {
                        let pending: Vec<_> = (0..batch)
                            .map(|_| store.commit(deliver(account, &body)))
                            .collect();
                        rt.block_on(async {
                            for p in pending {
                                p.await.expect("deliver");
                            }
                        })
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    let mut g = c.benchmark_group("store_read");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, account) = open(dir.path(), false);
    let body = vec![b'y'; 16 * 1024];
    for _ in 0..100 {
        store
            .commit_blocking(deliver(account, &body))
            .expect("deliver");
    }
    let view = store.mailbox_view(account, "INBOX").expect("INBOX");
    let last = *view.messages.last().expect("a message");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("read_16k_from_mmap", |b| {
        b.iter(|| {
            let m = store.read(last.body).expect("read");
            m.iter().map(|&x| u64::from(x)).sum::<u64>()
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("mailbox_view_100", |b| {
        b.iter(|| {
            store
                .mailbox_view(account, "INBOX")
                .expect("INBOX")
                .messages
                .len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_append, bench_read);
criterion_main!(benches);
