//! Fuzz the `/mxdeliv` envelope reader (`http::mxdeliv::envelope`) over arbitrary header sets.
//!
//! Input: header lines `name: value` (LF-separated); names `f` and `t` stand for `X-Mail-From`
//! and `X-Mail-To`. A line `#N name: value` adds N (up to 2000) copies, each `%` in the value
//! replaced by the copy's number, so the recipient cap is reachable. Lines hyper would refuse
//! (invalid name or value bytes) are skipped, as hyper answers them itself.
//!
//! Checks: no panic; an accepted envelope has 1..=1000 distinct recipients, each one of the
//! `X-Mail-To` values (brackets and blanks stripped, lower case) and looking like an address
//! (non-empty, at most 256 bytes, an `@`, no blank, control character or angle bracket), in
//! order of first appearance, every valid `X-Mail-To` value among them; the sender is empty or
//! the single `X-Mail-From` value likewise. A refusal is 501, 503 or 452, and 452 only past 1000
//! distinct recipients.
#![no_main]

use std::collections::HashSet;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use relay::http::mxdeliv::{envelope, MAX_ADDRESS};

const MAX_RECIPIENTS: usize = 1000;

/// The address a header value stands for, as a sending relay means it (independent of the code
/// under test): trimmed, one pair of angle brackets removed, lower case.
fn model_address(v: &HeaderValue) -> Option<String> {
    let s = std::str::from_utf8(v.as_bytes()).ok()?;
    if !s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        return None;
    }
    let s = s.trim();
    let s = match s.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
        Some(inner) => inner,
        None => s,
    };
    let valid = !s.is_empty()
        && s.len() <= MAX_ADDRESS
        && s.contains('@')
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>');
    valid.then(|| s.to_ascii_lowercase())
}

fn looks_like_address(a: &str) -> bool {
    !a.is_empty()
        && a.len() <= MAX_ADDRESS
        && a.contains('@')
        && a.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>' && !b.is_ascii_uppercase())
}

fn headers(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let (count, line) = match line.strip_prefix(b"#") {
            Some(rest) => {
                let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
                let n = std::str::from_utf8(&rest[..digits.min(4)])
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or(1)
                    .min(2000);
                (n, rest[digits..].trim_ascii_start())
            }
            None => (1, line),
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = match &line[..colon] {
            b"f" => &b"X-Mail-From"[..],
            b"t" => b"X-Mail-To",
            n => n,
        };
        let Ok(name) = HeaderName::from_bytes(name) else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii_start();
        for i in 0..count {
            let v = if count > 1 && value.contains(&b'%') {
                let mut v = Vec::with_capacity(value.len() + 4);
                for &b in value {
                    if b == b'%' {
                        v.extend_from_slice(i.to_string().as_bytes());
                    } else {
                        v.push(b);
                    }
                }
                v
            } else {
                value.to_vec()
            };
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                map.append(name.clone(), v);
            }
        }
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let map = headers(data);
    let from: Vec<&HeaderValue> = map.get_all("x-mail-from").iter().collect();
    let to: Vec<&HeaderValue> = map.get_all("x-mail-to").iter().collect();
    let mut distinct: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut all_valid = true;
    for v in &to {
        match model_address(v) {
            Some(a) => {
                if seen.insert(a.clone()) {
                    distinct.push(a);
                }
            }
            None => all_valid = false,
        }
    }
    match envelope(&map) {
        Ok(env) => {
            let n = env.recipients.len();
            assert!((1..=MAX_RECIPIENTS).contains(&n), "{n} recipients");
            let mut once = HashSet::new();
            for r in &env.recipients {
                assert!(looks_like_address(r), "recipient {r:?}");
                assert!(once.insert(r), "{r} twice");
            }
            // Every value was a valid address and each one is there, in order.
            assert!(all_valid, "an invalid X-Mail-To was accepted: {to:?}");
            assert_eq!(env.recipients, distinct);
            assert!(from.len() <= 1, "two senders accepted");
            match from.first() {
                None => assert_eq!(env.sender, ""),
                Some(v) if matches!(v.to_str().map(str::trim), Ok("" | "<>")) => {
                    assert_eq!(env.sender, "")
                }
                Some(v) => {
                    assert!(looks_like_address(&env.sender), "sender {:?}", env.sender);
                    assert_eq!(Some(&env.sender), model_address(v).as_ref());
                }
            }
        }
        Err(reply) => {
            assert!(
                matches!(reply.code, 452 | 501 | 503),
                "unexpected reply {reply:?}"
            );
            if reply.code == 452 {
                assert!(
                    distinct.len() > MAX_RECIPIENTS,
                    "452 with {}",
                    distinct.len()
                );
            }
            if all_valid
                && from.len() <= 1
                && !distinct.is_empty()
                && distinct.len() <= MAX_RECIPIENTS
            {
                // Only the sender can be wrong.
                assert_eq!(reply.code, 501, "{reply:?}");
                let v = from[0];
                assert!(model_address(v).is_none());
            }
        }
    }
});
