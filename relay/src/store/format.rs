//! The on-disk format of the log: framing, checksums and the payload field codec (the payload
//! of each index record kind is in its module under `record/`). Pure functions over byte slices; this module never does I/O and never panics on any
//! input (garbage decodes to [`Frame::Torn`] or a [`DecodeError`]).
//!
//! # Frame
//!
//! All integers are little-endian.
//!
//! | offset | size  | field                                                        |
//! |--------|-------|--------------------------------------------------------------|
//! | 0      | 4     | `len`: bytes of `kind` + `payload` (>= 1; 0 = end of log)    |
//! | 4      | 4     | CRC32C of `kind` + `payload`                                 |
//! | 8      | 1     | `kind` (see the `KIND_*` constants)                          |
//! | 9      | len-1 | `payload`                                                    |
//!
//! Segments are preallocated with zeros, so a zero `len` marks the end of the written part. A
//! frame whose `len` runs past the segment or whose CRC does not match is a torn tail.
//!
//! # Payloads
//!
//! Field types: `u8`, `u32`, `u64`, `i64` fixed width; `str`/`bytes` = `u32 len` + bytes (UTF-8
//! for `str`); `opt<T>` = `u8` 0 (none) or 1 followed by `T`; `vec<T>` = `u32 count` + items.
//!
//! | kind | name  | payload                                                              |
//! |------|-------|----------------------------------------------------------------------|
//! | 1    | Seal  | empty: the segment ends here, the log continues in the next segment  |
//! | 2    | Body  | the raw message bytes (no length prefix; the frame gives it); for a queued message its envelope first (`record/queue_add.rs`) |
//! | 3..  | index records: one module each under [`record`](super::record), which lists the kind bytes and documents each payload |
//!
//! This module holds the framing and the field codec (`Writer`, `Reader`); what a record
//! holds and how its fields are laid out is in its kind module.

pub use super::record::{InsertEntry, Record};

/// Bytes before the payload: `len`, `crc`, `kind`.
pub const HEADER_LEN: usize = 9;
/// Total length of a Seal frame; every segment keeps room for one.
pub const SEAL_LEN: u64 = HEADER_LEN as u64;

/// End of a segment; the log continues in the next one.
pub const KIND_SEAL: u8 = 1;
/// A message body.
pub const KIND_BODY: u8 = 2;

/// A decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// End of segment.
    Seal,
    /// A body: the raw bytes.
    Body(&'a [u8]),
    /// An index record.
    Record(Record),
}

/// Why a CRC-valid frame could not be decoded (a bug or a newer format, never a torn write).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// What [`decode_frame`] found at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Zero length: nothing was written here.
    End,
    /// A partial or corrupt frame: the log ends before it.
    Torn,
    /// A complete frame with a valid checksum.
    Valid {
        /// Kind byte.
        kind: u8,
        /// Payload (after the kind byte).
        payload: &'a [u8],
        /// Total frame length including the header.
        total_len: usize,
    },
}

/// Decode the frame at the start of `buf` (the rest of the segment).
pub fn decode_frame(buf: &[u8]) -> Frame<'_> {
    let Some(len_bytes) = buf.get(0..4) else {
        return if buf.iter().all(|&b| b == 0) {
            Frame::End
        } else {
            Frame::Torn
        };
    };
    let len = u32::from_le_bytes(len_bytes.try_into().expect("slice of 4 bytes")) as usize;
    if len == 0 {
        return Frame::End;
    }
    let Some(total_len) = len.checked_add(8) else {
        return Frame::Torn;
    };
    let Some(frame) = buf.get(..total_len) else {
        return Frame::Torn;
    };
    let crc = u32::from_le_bytes(frame[4..8].try_into().expect("slice of 4 bytes"));
    let body = &frame[8..];
    if crc32c::crc32c(body) != crc {
        return Frame::Torn;
    }
    Frame::Valid {
        kind: body[0],
        payload: &body[1..],
        total_len,
    }
}

/// Append one frame of `kind` with `payload` to `out`.
///
/// The caller guarantees `payload.len() < u32::MAX` (bodies are limited before they get here).
pub fn put_frame(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len() + 1).expect("payload length should be checked by caller");
    let mut crc = crc32c::crc32c(&[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
}

/// The payload length of the Body frame whose payload starts at `offset` of `data` (a
/// segment), from the frame's header; `None` if no Body frame header is there or the payload
/// runs past `data`.
pub fn body_len_at(data: &[u8], offset: usize) -> Option<usize> {
    let header = data.get(offset.checked_sub(HEADER_LEN)?..offset)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("slice of 4 bytes")) as usize;
    if header[8] != KIND_BODY || len == 0 {
        return None;
    }
    let payload = len - 1;
    data.get(offset..offset.checked_add(payload)?)?;
    Some(payload)
}

/// Decode the entry of a valid frame.
pub fn decode_entry(kind: u8, payload: &[u8]) -> Result<Entry<'_>, DecodeError> {
    match kind {
        KIND_SEAL => {
            if payload.is_empty() {
                Ok(Entry::Seal)
            } else {
                Err(DecodeError("seal with payload"))
            }
        }
        KIND_BODY => Ok(Entry::Body(payload)),
        _ => Record::decode(kind, payload).map(Entry::Record),
    }
}

impl Record {
    /// Append the whole frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::new();
        self.encode_payload(&mut payload);
        put_frame(self.kind(), &payload, out);
    }
}

/// Appends payload fields (the encoding of the field types above).
pub(crate) struct Writer<'a>(pub(crate) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub(crate) fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).expect("collections in records should be < 4 GiB"));
    }
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }
    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

/// Reads payload fields; every read checks the length left.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("record too short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        Ok(b.try_into().expect("take returns exactly N bytes"))
    }
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    pub(crate) fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad boolean")),
        }
    }
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// An item count, checked against the bytes left so garbage cannot make us allocate much.
    pub(crate) fn count(&mut self, item_size: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(item_size) > self.0.len() {
            return Err(DecodeError("count larger than record"));
        }
        Ok(n)
    }
    /// Refuse bytes left after the last field.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError("trailing bytes in record"))
        }
    }
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError("string not UTF-8"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::record;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = Record> {
        record::arbitrary()
    }

    proptest! {
        #[test]
        fn record_round_trip(rec in record()) {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            let Frame::Valid { kind, payload, total_len } = decode_frame(&buf) else {
                panic!("frame of an encoded record should be valid");
            };
            prop_assert_eq!(total_len, buf.len());
            prop_assert_eq!(decode_entry(kind, payload).unwrap(), Entry::Record(rec));
        }

        #[test]
        fn body_round_trip(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut buf = Vec::new();
            put_frame(KIND_BODY, &body, &mut buf);
            let Frame::Valid { kind, payload, total_len } = decode_frame(&buf) else {
                panic!("frame of a body should be valid");
            };
            prop_assert_eq!(total_len, HEADER_LEN + body.len());
            prop_assert_eq!(decode_entry(kind, payload).unwrap(), Entry::Body(&body));
        }

        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200), kind in any::<u8>()) {
            let _ = decode_frame(&buf);
            let _ = decode_entry(kind, &buf);
        }

        /// Flipping any one bit of a frame makes it torn (or, in the length field, torn or end).
        #[test]
        fn bit_flip_is_detected(rec in record(), bit in any::<proptest::sample::Index>()) {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            let bit = bit.index(buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            buf.resize(buf.len() + 64, 0);
            let frame = decode_frame(&buf);
            prop_assert!(matches!(frame, Frame::Torn | Frame::End), "got {:?}", frame);
        }
    }

    /// The bytes of every record kind are fixed: existing logs must keep decoding the same.
    /// Every kind in the registry has golden values (its `test_data::golden`).
    #[test]
    fn encoding_is_stable() {
        let golden = record::golden();
        for (kind, name) in record::KINDS {
            assert!(
                golden.iter().any(|(rec, _)| rec.kind() == *kind),
                "no golden record of kind {kind} ({name})"
            );
        }
        for (rec, want) in golden {
            let mut buf = Vec::new();
            rec.encode(&mut buf);
            let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(hex, want, "{rec:?}");
            assert_eq!(decode_entry(buf[8], &buf[9..]).unwrap(), Entry::Record(rec));
        }
    }

    #[test]
    fn zero_prefix_is_end_and_short_garbage_is_torn() {
        assert_eq!(decode_frame(&[]), Frame::End);
        assert_eq!(decode_frame(&[0, 0, 0]), Frame::End);
        assert_eq!(decode_frame(&[0, 1, 0]), Frame::Torn);
        assert_eq!(decode_frame(&[0; 32]), Frame::End);
        assert_eq!(decode_frame(&[5, 0, 0, 0, 0, 0]), Frame::Torn);
    }
}
