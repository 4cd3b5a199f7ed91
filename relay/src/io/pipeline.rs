//! The byte transforms between the socket and a session: TLS (rustls, driven sans-I/O) and
//! RFC 4978 COMPRESS=DEFLATE. No sockets here: wire bytes in, plaintext out, and back.
//!
//! Input order: wire → TLS → inflate → session. Output order: session → deflate → TLS → wire.
//!
//! # Decompression bombs
//! Inflating is done in steps of at most [`MAX_INFLATE_STEP`] bytes of output. Compressed bytes
//! not inflated yet stay here ([`Pipeline::has_buffered_input`]); the driver inflates the next
//! step only when the session wants input again, and reads the socket only when nothing is left
//! to inflate. So 1 KiB of deflate that expands to 1 MiB never exists as 1 MiB in memory: the
//! session's input cap bounds what it holds, this step bounds what is handed to it.

use std::io::{self, Read, Write};
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// TLS records are at most 16 KiB of plaintext; reading in these steps bounds buffers.
const CHUNK: usize = 16 * 1024;

/// Inflated bytes handed to the session per step at most.
pub const MAX_INFLATE_STEP: usize = 64 * 1024;

/// The server configurations of a port that picks its protocol by ALPN (the HTTPS port): which
/// one a handshake uses is decided from the ClientHello.
#[derive(Debug, Clone)]
pub struct AlpnConfigs {
    /// The client offers `imap` or `smtp`: ALPN `imap`, `smtp`; TLS 1.3 only, as on 993/465.
    pub mail: Arc<rustls::ServerConfig>,
    /// The client offers `http/1.1`: ALPN `http/1.1`, TLS 1.2 and 1.3 (browsers).
    pub http: Arc<rustls::ServerConfig>,
    /// Anything else (no ALPN, or only names we do not speak, e.g. `h2` alone): no ALPN is
    /// negotiated and the connection is HTTP/1.1. A fixed list would make rustls refuse such a
    /// client with `no_application_protocol` (RFC 7301), where nginx's `ssl_preread` passes it on.
    pub none: Arc<rustls::ServerConfig>,
}

impl AlpnConfigs {
    /// The configuration for a client offering `offered` (`None`: no ALPN extension).
    fn choose<'a>(
        &self,
        offered: Option<impl Iterator<Item = &'a [u8]>>,
    ) -> Arc<rustls::ServerConfig> {
        let offered: Vec<&[u8]> = offered.map(Iterator::collect).unwrap_or_default();
        if offered.iter().any(|p| *p == b"imap" || *p == b"smtp") {
            self.mail.clone()
        } else if offered.contains(&&b"http/1.1"[..]) {
            self.http.clone()
        } else {
            self.none.clone()
        }
    }
}

/// The transform state of one connection.
#[derive(Default)]
pub struct Pipeline {
    /// Reading the ClientHello to choose a configuration by ALPN (before `tls` exists).
    accepting: Option<Box<(rustls::server::Acceptor, AlpnConfigs)>>,
    tls: Option<Box<rustls::ServerConnection>>,
    inflate: Option<Box<Decompress>>,
    deflate: Option<Box<Compress>>,
    /// Decrypted, still compressed input not inflated yet.
    compressed: Vec<u8>,
    /// The last inflate step stopped at [`MAX_INFLATE_STEP`]: more output may be ready without
    /// new input.
    inflate_more: bool,
    /// Where each piece is inflated before it is appended (reused: no zeroing per step).
    scratch: Vec<u8>,
}

fn tls_err(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Pipeline {
    /// Starts the TLS handshake as server (implicit TLS, or after STARTTLS).
    ///
    /// # Errors
    /// If rustls refuses the configuration.
    pub fn start_tls(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        let conn = rustls::ServerConnection::new(config).map_err(tls_err)?;
        self.tls = Some(Box::new(conn));
        Ok(())
    }

    /// Starts the TLS handshake as server, with the configuration chosen by the ClientHello's ALPN
    /// list (see [`AlpnConfigs`]).
    pub fn start_tls_by_alpn(&mut self, configs: AlpnConfigs) {
        self.accepting = Some(Box::new((rustls::server::Acceptor::default(), configs)));
    }

    /// The ALPN protocol negotiated in the handshake, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.tls.as_ref().and_then(|t| t.alpn_protocol())
    }

    /// Feeds wire bytes to the acceptor until the ClientHello is complete and the connection is
    /// made; `wire` keeps what follows it.
    fn accept(&mut self, wire: &mut &[u8], wire_out: &mut Vec<u8>) -> io::Result<()> {
        let Some(acc) = self.accepting.as_deref_mut() else {
            return Ok(());
        };
        while !wire.is_empty() {
            acc.0.read_tls(wire)?;
            let accepted = match acc.0.accept() {
                Ok(None) => continue,
                Ok(Some(a)) => a,
                Err((e, mut alert)) => {
                    let _ = alert.write_all(wire_out);
                    return Err(tls_err(e));
                }
            };
            let config = acc.1.choose(accepted.client_hello().alpn());
            match accepted.into_connection(config) {
                Ok(mut conn) => {
                    while conn.wants_write() {
                        conn.write_tls(wire_out)?;
                    }
                    self.tls = Some(Box::new(conn));
                    self.accepting = None;
                    return Ok(());
                }
                Err((e, mut alert)) => {
                    let _ = alert.write_all(wire_out);
                    return Err(tls_err(e));
                }
            }
        }
        Ok(())
    }

    /// Switches both directions to raw DEFLATE (RFC 4978).
    pub fn start_compress(&mut self) {
        self.inflate = Some(Box::new(Decompress::new(false)));
        self.deflate = Some(Box::new(Compress::new(Compression::fast(), false)));
    }

    /// Whether a TLS handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.accepting.is_some() || self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some() || self.accepting.is_some()
    }

    /// Takes wire bytes; appends plaintext for the session to `plain` and bytes to send back
    /// (handshake, alerts) to `wire_out`.
    ///
    /// # Errors
    /// A TLS protocol error (an alert for the peer is left in `wire_out`) or corrupt DEFLATE data.
    pub fn input(
        &mut self,
        mut wire: &[u8],
        plain: &mut Vec<u8>,
        wire_out: &mut Vec<u8>,
    ) -> io::Result<()> {
        if self.accepting.is_some() {
            self.accept(&mut wire, wire_out)?;
            if self.accepting.is_some() {
                return Ok(());
            }
        }
        let decrypted: Vec<u8>;
        let data: &[u8] = match self.tls.as_deref_mut() {
            None => wire,
            Some(tls) => {
                let mut out = Vec::new();
                while !wire.is_empty() {
                    tls.read_tls(&mut wire)?;
                    let state = tls.process_new_packets();
                    // Whatever rustls has to say (handshake or alert) goes out either way.
                    while tls.wants_write() {
                        tls.write_tls(wire_out)?;
                    }
                    let state = state.map_err(tls_err)?;
                    let mut n = state.plaintext_bytes_to_read();
                    while n > 0 {
                        let start = out.len();
                        out.resize(start + n, 0);
                        let got = tls.reader().read(&mut out[start..])?;
                        out.truncate(start + got);
                        if got == 0 {
                            break;
                        }
                        n -= got;
                    }
                }
                decrypted = out;
                &decrypted
            }
        };
        if self.inflate.is_none() {
            plain.extend_from_slice(data);
            return Ok(());
        }
        self.compressed.extend_from_slice(data);
        self.inflate_step(plain)
    }

    /// Whether compressed input is waiting to be inflated (call [`Pipeline::inflate_buffered`]
    /// before reading the socket again).
    pub fn has_buffered_input(&self) -> bool {
        self.inflate_more
    }

    /// Inflates the next step (at most [`MAX_INFLATE_STEP`] bytes) of buffered compressed input
    /// into `plain`.
    ///
    /// # Errors
    /// Corrupt DEFLATE data.
    pub fn inflate_buffered(&mut self, plain: &mut Vec<u8>) -> io::Result<()> {
        self.inflate_step(plain)
    }

    fn inflate_step(&mut self, plain: &mut Vec<u8>) -> io::Result<()> {
        self.inflate_more = false;
        let Some(z) = self.inflate.as_deref_mut() else {
            return Ok(());
        };
        if self.scratch.len() != CHUNK {
            self.scratch = vec![0; CHUNK];
        }
        let mut used_total = 0;
        let mut produced = 0;
        let result = loop {
            let room = MAX_INFLATE_STEP - produced;
            if room == 0 {
                self.inflate_more = true;
                break Ok(());
            }
            let n = room.min(CHUNK);
            let (before_in, before_out) = (z.total_in(), z.total_out());
            let status = z.decompress(
                &self.compressed[used_total..],
                &mut self.scratch[..n],
                FlushDecompress::None,
            );
            let used = (z.total_in() - before_in) as usize;
            let out = (z.total_out() - before_out) as usize;
            plain.extend_from_slice(&self.scratch[..out]);
            used_total += used;
            produced += out;
            match status {
                Err(e) => break Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                Ok(Status::StreamEnd) => {
                    // RFC 4978 streams never end; ignore whatever follows an end.
                    used_total = self.compressed.len();
                    break Ok(());
                }
                Ok(_) if out == n => {}
                Ok(_) if used_total == self.compressed.len() || (used == 0 && out == 0) => {
                    break Ok(());
                }
                Ok(_) => {}
            }
        };
        self.compressed.drain(..used_total);
        if self.compressed.is_empty() && self.compressed.capacity() > CHUNK {
            self.compressed = Vec::new();
        }
        result
    }

    /// Takes session output; appends what must be written to the socket to `wire_out`.
    ///
    /// # Errors
    /// Only on internal compressor or TLS failures.
    pub fn output(&mut self, plain: &[u8], wire_out: &mut Vec<u8>) -> io::Result<()> {
        if plain.is_empty() {
            return Ok(());
        }
        let compressed: Vec<u8>;
        let data = match self.deflate.as_deref_mut() {
            None => plain,
            Some(z) => {
                let mut out = Vec::with_capacity(plain.len() / 2 + 64);
                deflate_into(z, plain, &mut out)?;
                compressed = out;
                &compressed
            }
        };
        match self.tls.as_deref_mut() {
            None => wire_out.extend_from_slice(data),
            Some(tls) => {
                for chunk in data.chunks(CHUNK) {
                    tls.writer().write_all(chunk)?;
                    while tls.wants_write() {
                        tls.write_tls(wire_out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Pending TLS bytes (e.g. the rest of a handshake) to `wire_out`.
    ///
    /// # Errors
    /// Only on internal TLS failures.
    pub fn flush(&mut self, wire_out: &mut Vec<u8>) -> io::Result<()> {
        if let Some(tls) = self.tls.as_deref_mut() {
            while tls.wants_write() {
                tls.write_tls(wire_out)?;
            }
        }
        Ok(())
    }

    /// A TLS close_notify for a clean close.
    pub fn close(&mut self, wire_out: &mut Vec<u8>) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.send_close_notify();
            while tls.wants_write() {
                if tls.write_tls(wire_out).is_err() {
                    break;
                }
            }
        }
    }
}

fn deflate_into(z: &mut Compress, mut data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let bad = |e| io::Error::other(e);
    loop {
        out.reserve(CHUNK);
        let before_in = z.total_in();
        z.compress_vec(data, out, FlushCompress::Sync)
            .map_err(bad)?;
        data = &data[(z.total_in() - before_in) as usize..];
        // Sync flush is complete when input is used up and the output buffer was not filled.
        if data.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side of a test: inflates everything at once.
    fn inflate_into(z: &mut Decompress, mut data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        let bad = |e| io::Error::new(io::ErrorKind::InvalidData, e);
        loop {
            out.reserve(CHUNK);
            let before_in = z.total_in();
            let before_out = z.total_out();
            let status = z
                .decompress_vec(data, out, FlushDecompress::Sync)
                .map_err(bad)?;
            let used = (z.total_in() - before_in) as usize;
            let produced = z.total_out() - before_out;
            data = &data[used..];
            if status == Status::StreamEnd || (data.is_empty() && out.len() < out.capacity()) {
                return Ok(());
            }
            if used == 0 && produced == 0 {
                return Ok(());
            }
        }
    }

    /// Feeds `wire` in socket-sized pieces as the driver does: inflate buffered steps before
    /// taking the next piece. Calls `each` with the size of every step's output.
    fn feed(server: &mut Pipeline, wire: &[u8], mut each: impl FnMut(&[u8])) {
        let mut back = Vec::new();
        for piece in wire.chunks(16 * 1024) {
            let mut plain = Vec::new();
            server.input(piece, &mut plain, &mut back).unwrap();
            each(&plain);
            while server.has_buffered_input() {
                let mut plain = Vec::new();
                server.inflate_buffered(&mut plain).unwrap();
                each(&plain);
            }
            // What waits is at most one piece of compressed input.
            assert!(
                server.compressed.len() <= 16 * 1024,
                "{}",
                server.compressed.len()
            );
        }
    }

    #[test]
    fn a_decompression_bomb_is_inflated_in_bounded_steps() {
        // 1 GiB of zeros compresses to about 1 MiB of raw deflate.
        let mut client_z = Compress::new(Compression::best(), false);
        let zeros = vec![0u8; 1024 * 1024];
        let mut wire = Vec::new();
        for _ in 0..1024 {
            deflate_into(&mut client_z, &zeros, &mut wire).unwrap();
        }
        deflate_into(&mut client_z, b"\r\nx NOOP\r\n", &mut wire).unwrap();
        assert!(wire.len() < 4 * 1024 * 1024, "{}", wire.len());
        let mut server = Pipeline::default();
        server.start_compress();
        let mut total = 0u64;
        let mut largest = 0;
        let mut tail = Vec::new();
        feed(&mut server, &wire, |step| {
            total += step.len() as u64;
            largest = largest.max(step.len());
            tail.extend_from_slice(step);
            let keep = tail.len().saturating_sub(16);
            tail.drain(..keep);
        });
        assert_eq!(total, 1024 * 1024 * 1024 + 10);
        assert!(largest <= MAX_INFLATE_STEP, "{largest}");
        assert!(tail.ends_with(b"\r\nx NOOP\r\n"), "{tail:?}");
    }

    #[test]
    fn deflate_round_trip_in_pieces() {
        let mut server = Pipeline::default();
        server.start_compress();
        let mut client_z = Compress::new(Compression::default(), false);
        let mut client_unz = Decompress::new(false);
        let msg: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        // client → server
        let mut wire = Vec::new();
        deflate_into(&mut client_z, &msg, &mut wire).unwrap();
        let mut plain = Vec::new();
        feed(&mut server, &wire, |step| plain.extend_from_slice(step));
        assert_eq!(plain, msg);
        // server → client
        let mut wire = Vec::new();
        server.output(b"* OK hello\r\n", &mut wire).unwrap();
        server.output(&msg, &mut wire).unwrap();
        let mut got = Vec::new();
        inflate_into(&mut client_unz, &wire, &mut got).unwrap();
        assert_eq!(&got[..12], b"* OK hello\r\n");
        assert_eq!(&got[12..], &msg[..]);
    }

    #[test]
    fn corrupt_deflate_is_an_error_not_a_panic() {
        let mut server = Pipeline::default();
        server.start_compress();
        let mut plain = Vec::new();
        let mut back = Vec::new();
        assert!(server.input(&[0xff; 64], &mut plain, &mut back).is_err());
    }
}
