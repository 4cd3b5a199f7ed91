//! The epoll backend: tokio's `TcpStream` on a current-thread runtime per core. Used where
//! io_uring is unavailable (e.g. Docker's default seccomp profile) or with `--io epoll`.

use std::io;

use tokio::net::TcpStream;

use super::Conn;

/// A tokio TCP stream adapted to owned-buffer I/O. Reads wait for readiness, then read without
/// blocking, so a waiting connection holds no read buffer.
pub struct EpollConn(pub TcpStream);

impl Conn for EpollConn {
    async fn read(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        // An idle connection holds no read buffer: the one handed in is freed while waiting for
        // readiness, and a right-sized one is returned.
        let cap = buf.capacity().max(super::READ_SIZE);
        drop(buf);
        loop {
            if let Err(e) = self.0.readable().await {
                return (Err(e), Vec::new());
            }
            let mut buf = vec![0; cap];
            match self.0.try_read(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    buf.shrink_to_fit();
                    return (Ok(()), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), Vec::new()),
            }
        }
    }

    async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let mut done = 0;
        while done < buf.len() {
            if let Err(e) = self.0.writable().await {
                return (Err(e), buf);
            }
            match self.0.try_write(&buf[done..]) {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    }
}
