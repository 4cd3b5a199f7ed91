//! The log sink: formatted log lines go to stderr through a bounded queue and one writer thread.
//!
//! A log destination that fails or stalls (a full disk, a closed pipe, journald restarting, a
//! terminal on hold) must never stop or slow the relay. So the thread that logs only ever does a
//! non-blocking `try_send` of the line; the `log` thread does the blocking write. A line that
//! finds the queue full, or whose write fails (`ENOSPC`, `EPIPE`, `EAGAIN`, ...), is dropped and
//! counted; once writing works again the sink first writes how many lines were lost. Nothing
//! here panics on an I/O error.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines that may wait for the writer thread; more are dropped.
pub const QUEUE_LINES: usize = 4096;

/// A [`tracing_subscriber::fmt::MakeWriter`] that never blocks and never fails.
#[derive(Clone)]
pub struct LossyWriter {
    tx: SyncSender<Vec<u8>>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Lines dropped since start (queue full or write failed).
    dropped: AtomicU64,
    /// Lines queued and not yet written (or dropped).
    pending: AtomicUsize,
}

impl LossyWriter {
    /// A sink writing to this process's stderr.
    ///
    /// # Errors
    /// The writer thread could not be spawned.
    pub fn stderr() -> io::Result<LossyWriter> {
        Self::to(io::stderr())
    }

    /// A sink writing to `out` on its own thread.
    ///
    /// # Errors
    /// The writer thread could not be spawned.
    pub fn to(out: impl Write + Send + 'static) -> io::Result<LossyWriter> {
        let (tx, rx) = sync_channel(QUEUE_LINES);
        let state = Arc::new(State::default());
        let thread_state = state.clone();
        std::thread::Builder::new()
            .name("log".into())
            .spawn(move || write_loop(&rx, out, &thread_state))?;
        Ok(LossyWriter { tx, state })
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for queued lines to be written (at exit).
    pub fn drain(&self, timeout: Duration) {
        let end = Instant::now() + timeout;
        while self.state.pending.load(Ordering::Acquire) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn push(&self, line: &[u8]) {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(line.to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.state.pending.fetch_sub(1, Ordering::AcqRel);
                self.state.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_loop(rx: &Receiver<Vec<u8>>, mut out: impl Write, state: &State) {
    let mut reported = 0;
    for line in rx {
        let dropped = state.dropped.load(Ordering::Relaxed);
        if dropped > reported {
            let note = format!(
                "log: {} line(s) dropped (log destination full, closed or slow)\n",
                dropped - reported
            );
            if out.write_all(note.as_bytes()).is_ok() {
                reported = dropped;
            }
        }
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            state.dropped.fetch_add(1, Ordering::Relaxed);
        }
        state.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One event's writer: the formatter writes the whole line in one `write`.
pub struct Line<'a>(&'a LossyWriter);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LossyWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tracing_subscriber::fmt::MakeWriter as _;

    /// Fails every write as a closed pipe or a full disk does.
    struct Failing(io::ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Blocks every write until released, as a stalled pipe reader does.
    struct Stalled(Arc<Mutex<()>>);

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            drop(self.0.lock());
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>);

    impl Write for Collect {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn failing_destination_drops_and_counts_lines() {
        for kind in [io::ErrorKind::BrokenPipe, io::ErrorKind::StorageFull] {
            let w = LossyWriter::to(Failing(kind)).unwrap();
            for _ in 0..10 {
                w.make_writer().write_all(b"line\n").unwrap();
            }
            w.drain(Duration::from_secs(5));
            assert_eq!(w.dropped(), 10, "{kind:?}");
        }
    }

    #[test]
    fn stalled_destination_never_blocks_the_caller() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let w = LossyWriter::to(Stalled(gate.clone())).unwrap();
        let start = Instant::now();
        for _ in 0..QUEUE_LINES * 2 {
            w.make_writer().write_all(b"line\n").unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        // The writer holds one line, the queue QUEUE_LINES; the rest were dropped.
        assert!(w.dropped() >= (QUEUE_LINES - 1) as u64, "{}", w.dropped());
        drop(held);
        w.drain(Duration::from_secs(10));
    }

    #[test]
    fn reports_lost_lines_once_writing_works_again() {
        let out = Collect::default();
        let w = LossyWriter::to(out.clone()).unwrap();
        // Lines dropped before (as if the queue had been full).
        w.state.dropped.store(3, Ordering::Relaxed);
        w.make_writer().write_all(b"after\n").unwrap();
        w.drain(Duration::from_secs(5));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "log: 3 line(s) dropped (log destination full, closed or slow)\nafter\n"
        );
    }
}
