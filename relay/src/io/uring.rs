//! The io_uring backend: tokio-uring's `TcpStream` with owned buffers.
//!
//! # io_uring contract
//! tokio-uring owns each in-flight operation's buffer until its completion arrives, even when the
//! future that submitted it is dropped (it keeps the buffer alive in the op's cancelled state), so
//! no buffer given to the kernel is freed or reused early. This module adds no `unsafe` of its
//! own; the probe only builds and drops a runtime.

use std::io;

use tokio_uring::net::TcpStream;

use super::Conn;

/// Buffer size of a read while no bulk transfer is going on.
const IDLE_READ_SIZE: usize = 2 * 1024;

/// A tokio-uring TCP stream.
pub struct UringConn(pub TcpStream);

impl Conn for UringConn {
    async fn read(&self, mut buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        // A read is in flight for the whole time a connection waits, with its buffer. Keep that
        // buffer small unless the last read filled its buffer (bulk transfer in progress): an
        // idle IMAP session then holds 2 KiB instead of 16 KiB.
        let want = if !buf.is_empty() && buf.len() == buf.capacity() {
            super::READ_SIZE
        } else {
            IDLE_READ_SIZE
        };
        if buf.capacity() != want {
            buf = Vec::with_capacity(want);
        }
        buf.clear();
        // tokio-uring reads into the spare capacity and sets the length.
        let (res, buf) = self.0.read(buf).await;
        (res.map(|_| ()), buf)
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        self.0.write_all(buf).await
    }
}

/// Whether io_uring can be used here: builds a ring and drops it. Fails e.g. under Docker's
/// default seccomp profile or with `kernel.io_uring_disabled`.
pub fn available() -> io::Result<()> {
    let rt = tokio_uring::Runtime::new(tokio_uring::builder().entries(8))?;
    drop(rt);
    Ok(())
}
