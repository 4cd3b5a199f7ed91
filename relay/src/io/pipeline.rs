//! The byte transforms between the socket and a session: TLS (rustls, driven sans-I/O) and
//! RFC 4978 COMPRESS=DEFLATE. No sockets here: wire bytes in, plaintext out, and back.
//!
//! Input order: wire → TLS → inflate → session. Output order: session → deflate → TLS → wire.

use std::io::{self, Read, Write};
use std::sync::Arc;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// TLS records are at most 16 KiB of plaintext; reading in these steps bounds buffers.
const CHUNK: usize = 16 * 1024;

/// The transform state of one connection.
#[derive(Default)]
pub struct Pipeline {
    tls: Option<Box<rustls::ServerConnection>>,
    inflate: Option<Box<Decompress>>,
    deflate: Option<Box<Compress>>,
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

    /// Switches both directions to raw DEFLATE (RFC 4978).
    pub fn start_compress(&mut self) {
        self.inflate = Some(Box::new(Decompress::new(false)));
        self.deflate = Some(Box::new(Compress::new(Compression::fast(), false)));
    }

    /// Whether a TLS handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Whether TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
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
        match self.inflate.as_deref_mut() {
            None => plain.extend_from_slice(data),
            Some(z) => inflate_into(z, data, plain)?,
        }
        Ok(())
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
        let mut back = Vec::new();
        for piece in wire.chunks(777) {
            server.input(piece, &mut plain, &mut back).unwrap();
        }
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
