//! The bounded pool that runs password hashing (SHA-512-crypt, deliberately slow) off the I/O
//! threads, so a login flood costs bounded CPU and threads.
//!
//! - A fixed number of threads (one per core), started on first use, at a lower scheduling
//!   priority (nice [`NICE`]): under a flood the I/O threads (TLS, cached logins, mail) still get
//!   the CPU first.
//! - A bounded queue: at most [`QUEUE_PER_THREAD`] jobs per thread wait, and one source (IPv4
//!   address, IPv6 /64) holds at most a quarter of them. Beyond that [`HashPool::run`] answers
//!   [`Busy`] at once (the login gets a temporary failure) instead of queueing without bound.
//! - Fair between sources: each source has its own FIFO and the threads take jobs from the
//!   sources in turn, so a job from a second source waits behind at most one job per other busy
//!   source, not behind a whole flood.
//! - A job whose caller went away (the connection closed while it waited) is skipped.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use relay_ebpf_common::PrefixKey;

/// Jobs that may wait per pool thread.
pub const QUEUE_PER_THREAD: usize = 128;
/// Scheduling priority of the pool threads (higher is lower priority).
pub const NICE: i32 = 10;

/// The queue is full (for this source or overall): try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    queues: HashMap<PrefixKey, VecDeque<Job>>,
    /// Sources with queued jobs, each once, in the order they are served.
    order: VecDeque<PrefixKey>,
    queued: usize,
    started: bool,
    closed: bool,
}

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fixed set of hashing threads with a bounded, per-source fair queue. Dropping it lets the
/// threads finish the queued jobs and exit.
pub struct HashPool {
    inner: Arc<Inner>,
    threads: usize,
    max_queued: usize,
    max_per_source: usize,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.threads)
            .field("max_queued", &self.max_queued)
            .field("max_per_source", &self.max_per_source)
            .finish_non_exhaustive()
    }
}

impl HashPool {
    /// A pool of `threads` threads (at least 1) and the default queue bounds.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        Self::with_queue(threads, threads * QUEUE_PER_THREAD)
    }

    /// One thread per core.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// A pool of `threads` threads where at most `max_queued` jobs wait (a quarter of them, at
    /// least one, from one source).
    pub fn with_queue(threads: usize, max_queued: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                ready: Condvar::new(),
            }),
            threads: threads.max(1),
            max_queued: max_queued.max(1),
            max_per_source: (max_queued / 4).max(1),
        }
    }

    /// Jobs waiting now.
    pub fn queued(&self) -> usize {
        lock(&self.inner.state).queued
    }

    /// Runs `f` on a pool thread for `source` and waits for its result (the caller's task
    /// sleeps; no thread blocks).
    ///
    /// # Errors
    /// [`Busy`] when the queue is full overall or for this source, or no thread could be started.
    pub async fn run<T: Send + 'static>(
        &self,
        source: IpAddr,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.submit(PrefixKey::from_ip(source), job)?;
        rx.await.map_err(|_| Busy)
    }

    fn submit(&self, key: PrefixKey, job: Job) -> Result<(), Busy> {
        let mut st = lock(&self.inner.state);
        if !st.started {
            st.started = true;
            let mut spawned = 0;
            for i in 0..self.threads {
                let inner = Arc::clone(&self.inner);
                let ok = std::thread::Builder::new()
                    .name(format!("hash-{i}"))
                    .spawn(move || worker(&inner))
                    .is_ok();
                spawned += usize::from(ok);
            }
            if spawned == 0 {
                st.started = false;
                tracing::error!("no password hashing thread could be started");
                return Err(Busy);
            }
        }
        enqueue(&mut st, key, job, self.max_queued, self.max_per_source)?;
        drop(st);
        self.inner.ready.notify_one();
        Ok(())
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        lock(&self.inner.state).closed = true;
        self.inner.ready.notify_all();
    }
}

fn worker(inner: &Inner) {
    // Lower priority for this thread only (Linux: the nice value is per thread). Failing to set
    // it changes nothing but the priority.
    if let Err(e) = rustix::process::setpriority_process(None, NICE) {
        tracing::debug!("hash thread priority: {e}");
    }
    loop {
        let job = {
            let mut st = lock(&inner.state);
            loop {
                if let Some(job) = take(&mut st) {
                    break job;
                }
                if st.closed {
                    return;
                }
                st = inner.ready.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        };
        job();
    }
}

/// Queues `job` for `key` within the bounds.
fn enqueue(
    st: &mut State,
    key: PrefixKey,
    job: Job,
    max_queued: usize,
    max_per_source: usize,
) -> Result<(), Busy> {
    if st.queued >= max_queued {
        return Err(Busy);
    }
    let queue = st.queues.entry(key).or_default();
    if queue.len() >= max_per_source {
        return Err(Busy);
    }
    let was_empty = queue.is_empty();
    queue.push_back(job);
    if was_empty {
        st.order.push_back(key);
    }
    st.queued += 1;
    Ok(())
}

/// The next job, round robin over sources.
fn take(st: &mut State) -> Option<Job> {
    let key = st.order.pop_front()?;
    let queue = st.queues.get_mut(&key)?;
    let job = queue.pop_front();
    if queue.is_empty() {
        st.queues.remove(&key);
    } else {
        st.order.push_back(key);
    }
    if job.is_some() {
        st.queued -= 1;
    }
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn runs_jobs_on_a_fixed_set_of_threads() {
        let pool = HashPool::new(2);
        let mut names = rt().block_on(async {
            let mut names = Vec::new();
            for _ in 0..20 {
                names.push(
                    pool.run(A, || std::thread::current().name().map(str::to_owned))
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            names
        });
        names.sort();
        names.dedup();
        assert!(names.len() <= 2, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("hash-")), "{names:?}");
    }

    #[test]
    fn queue_is_bounded_per_source_and_served_round_robin() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let job = |name: &'static str, i: u32| -> Job {
            let order = order.clone();
            Box::new(move || order.lock().unwrap().push((name, i)))
        };
        let (a, b) = (PrefixKey::from_ip(A), PrefixKey::from_ip(B));
        let mut st = State::default();
        // Source A may hold 2 of the 5 places, then is refused; B still gets in.
        assert!(enqueue(&mut st, a, job("a", 0), 5, 2).is_ok());
        assert!(enqueue(&mut st, a, job("a", 1), 5, 2).is_ok());
        assert_eq!(enqueue(&mut st, a, job("a", 2), 5, 2).err(), Some(Busy));
        assert!(enqueue(&mut st, b, job("b", 0), 5, 2).is_ok());
        assert!(enqueue(&mut st, b, job("b", 1), 5, 2).is_ok());
        let c = PrefixKey::from_ip(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 3)));
        assert!(enqueue(&mut st, c, job("c", 0), 5, 2).is_ok());
        // Full overall.
        assert_eq!(enqueue(&mut st, c, job("c", 1), 5, 2).err(), Some(Busy));
        while let Some(j) = take(&mut st) {
            j();
        }
        assert_eq!(st.queued, 0);
        assert!(st.queues.is_empty() && st.order.is_empty());
        // Each source in turn, not A's jobs first.
        assert_eq!(
            *order.lock().unwrap(),
            [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1)]
        );
    }

    #[test]
    fn jobs_of_callers_that_left_are_skipped() {
        let pool = HashPool::with_queue(1, 16);
        let ran = Arc::new(AtomicUsize::new(0));
        let rt = rt();
        rt.block_on(async {
            // Hold the thread, queue a job and drop its future before it runs.
            let hold = pool.run(A, || {
                std::thread::sleep(std::time::Duration::from_millis(200))
            });
            let r = ran.clone();
            let dropped = pool.run(B, move || {
                r.fetch_add(1, Ordering::SeqCst);
            });
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), async {
                tokio::join!(hold, dropped)
            })
            .await;
            // Both futures are gone; a later job still runs, the dropped one did not.
            let r = ran.clone();
            pool.run(A, move || r.load(Ordering::SeqCst)).await.unwrap()
        });
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
