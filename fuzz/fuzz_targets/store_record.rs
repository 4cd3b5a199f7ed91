//! Fuzz the store's record codec (`store::format`): the input is `[kind, payload..]` and also a
//! log segment walked frame by frame. No panic; a frame never claims more bytes than it was
//! given; whatever decodes encodes back to exactly the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::store::format::{decode_entry, decode_frame, put_frame, Entry, Frame, Record};

fuzz_target!(|data: &[u8]| {
    // A payload of each kind: decode(x) = r implies encode(r) = x.
    if let [kind, payload @ ..] = data {
        if let Ok(rec) = Record::decode(*kind, payload) {
            assert_eq!(rec.kind(), *kind);
            let mut out = Vec::new();
            rec.encode_payload(&mut out);
            assert_eq!(out, payload, "{rec:?} encodes differently");
            let mut frame = Vec::new();
            put_frame(rec.kind(), &out, &mut frame);
            let Frame::Valid {
                kind: k,
                payload: p,
                total_len,
            } = decode_frame(&frame)
            else {
                panic!("an encoded record does not decode as a frame");
            };
            assert_eq!((k, p, total_len), (*kind, payload, frame.len()));
        }
        // Framing any payload gives a valid frame with that payload.
        let mut frame = Vec::new();
        put_frame(*kind, payload, &mut frame);
        frame.extend_from_slice(&[0; 4]);
        match decode_frame(&frame) {
            Frame::Valid {
                kind: k,
                payload: p,
                total_len,
            } => {
                assert_eq!((k, p, total_len), (*kind, payload, frame.len() - 4));
                assert_eq!(decode_frame(&frame[total_len..]), Frame::End);
            }
            other => panic!("put_frame output decodes as {other:?}"),
        }
    }
    // The input as a segment: walk it as recovery does.
    let mut off = 0;
    loop {
        match decode_frame(&data[off..]) {
            Frame::End | Frame::Torn => break,
            Frame::Valid {
                kind,
                payload,
                total_len,
            } => {
                assert!(total_len > 8 && total_len <= data.len() - off);
                if let Ok(Entry::Record(rec)) = decode_entry(kind, payload) {
                    let mut payload = Vec::new();
                    rec.encode_payload(&mut payload);
                    let mut out = Vec::new();
                    put_frame(rec.kind(), &payload, &mut out);
                    assert_eq!(
                        out,
                        &data[off..off + total_len],
                        "{rec:?} re-encodes differently"
                    );
                }
                off += total_len;
            }
        }
    }
});
