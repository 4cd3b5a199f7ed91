//! Fuzz the website's routing (`http::site::handle`, sans-I/O) with arbitrary requests: the
//! input after a configuration byte and a time is a raw HTTP/1.1 request, parsed with httparse
//! (hyper's parser) into the `Request` hyper would build; what hyper refuses itself (bad method,
//! target, header name or value) is skipped. The body cap is applied first, as the connection
//! driver does (`413`), and `POST /mxdeliv` on HTTPS is left to the driver (the
//! `mxdeliv_envelope` target).
//!
//! Input: `[flags, t_hi, t_lo, request..]`. `flags`: bits 0-1 the configuration (IP-only dev
//! relay with a self-signed certificate, a domain on 443, a domain on 8443), bit 2 the plain-HTTP
//! listener, bit 3 a `www_folder` that is missing (site off), bits 4-7 the peer.
//!
//! Checks: no panic; the status is one of those the module documents (200, 301, 400, 404, 405,
//! 413, 429) and every answer has a `Content-Type`; `301` carries a `Location` on one of our own
//! names (or `dcaccount:`), `405` an `Allow`; the `www_folder` is asked only for sanitized
//! relative paths (no `..`, `.` or empty segment, no backslash or NUL, nothing absolute) that
//! stay inside the folder, and what it has is served as it is.
#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::{Component, Path};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use relay::config::{Config, Mode, RawConfig};
use relay::http::site::{body_cap, handle, too_large, www_path, Files, Listener};
use relay::shared::Shared;

const CONFIGS: [&[&str]; 3] = [
    &[],
    &[
        "mail_domain=chat.example.org",
        "tls_external_cert_and_key=/c /k",
    ],
    &["mail_domain=chat.example.org", "https_port=8443"],
];
const ROOT: &str = "/srv/www";
const TOKEN: &str = "tok-123_x";

/// A `www_folder` holding two files; records what it is asked for.
struct Recorder {
    enabled: bool,
    asked: RefCell<Vec<String>>,
}

fn file(rel: &str) -> Option<&'static [u8]> {
    match rel {
        "index.html" => Some(b"<p>custom index</p>"),
        "docs/a b.txt" => Some(b"a text file"),
        _ => None,
    }
}

impl Files for Recorder {
    fn site_enabled(&self) -> bool {
        self.enabled
    }

    fn get(&self, rel: &str) -> Option<Vec<u8>> {
        self.asked.borrow_mut().push(rel.to_owned());
        file(rel).map(<[u8]>::to_vec)
    }
}

fn shared(i: usize) -> &'static Shared {
    static SHARED: OnceLock<Vec<Shared>> = OnceLock::new();
    &SHARED.get_or_init(|| {
        CONFIGS
            .iter()
            .map(|kv| {
                let mut raw = RawConfig::default();
                for s in *kv {
                    raw.set(s).expect("option");
                }
                let config = Config::build(
                    &raw,
                    Mode::Dev {
                        data_dir: "/nonexistent".into(),
                    },
                )
                .expect("config");
                let store = Arc::new(relay::store::MemoryStore::new(
                    &relay::store::StoreConfig::default(),
                ));
                let s = Shared::new(config, store);
                s.acme_challenges.insert(TOKEN, "tok-123_x.thumbprint");
                s
            })
            .collect()
    })[i]
}

/// The request hyper would hand over, or `None` where hyper answers by itself.
fn request(raw: &[u8]) -> Option<Request<Bytes>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = req.parse(raw).ok()? else {
        return None;
    };
    let mut b = Request::builder()
        .method(Method::from_bytes(req.method?.as_bytes()).ok()?)
        .uri(req.path?);
    for h in req.headers.iter() {
        b = b.header(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    b.body(Bytes::copy_from_slice(&raw[head_len..])).ok()
}

/// The authority of an `https://` URL: up to the path, query or fragment.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://")?;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

fuzz_target!(|data: &[u8]| {
    let [flags, t_hi, t_lo, raw @ ..] = data else {
        return;
    };
    let Some(req) = request(raw) else {
        return;
    };
    let config_index = usize::from(flags & 3) % CONFIGS.len();
    let s = shared(config_index);
    let listener = if flags & 4 != 0 {
        Listener::Http
    } else {
        Listener::Https
    };
    let files = Recorder {
        enabled: flags & 8 == 0,
        asked: RefCell::new(Vec::new()),
    };
    let peer: IpAddr = if flags & 0x80 != 0 {
        format!("2001:db8::{}", flags >> 4 & 7).parse().expect("v6")
    } else {
        format!("192.0.2.{}", flags >> 4).parse().expect("v4")
    };
    let now_ms = u64::from(u16::from_be_bytes([*t_hi, *t_lo])) * 100;
    let path = req.uri().path().to_owned();

    // The connection driver's part: the body cap, and POST /mxdeliv.
    if req.body().len() > body_cap(req.method(), &path, &s.config) {
        assert_eq!(too_large(&path).status(), 413);
        return;
    }
    if listener == Listener::Https && req.method() == Method::POST && path == "/mxdeliv" {
        return;
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(*flags));
    let resp = handle(s, &files, listener, &req, peer, now_ms, &mut rng);
    let status = resp.status().as_u16();
    assert!(
        matches!(status, 200 | 301 | 400 | 404 | 405 | 413 | 429),
        "status {status} for {req:?}"
    );
    assert!(resp.headers().contains_key("content-type"), "{resp:?}");
    match status {
        301 => {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("a redirect has a Location");
            if !location.starts_with("dcaccount:") {
                let d = s.config.mail_domain.to_ascii_lowercase();
                let host = authority(location).unwrap_or_else(|| panic!("Location {location}"));
                let name = match host.rsplit_once(':') {
                    Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                    _ => host,
                };
                let name = name.trim_start_matches('[').trim_end_matches(']');
                let ours = name == d
                    || ["www.", "mta-sts.", "autoconfig."]
                        .iter()
                        .any(|p| name.strip_prefix(p) == Some(&d));
                assert!(ours, "redirect to {location} for {req:?}");
            }
        }
        405 => assert!(resp.headers().contains_key("allow"), "{resp:?}"),
        _ => {}
    }

    // The folder is asked only for safe relative paths, those www_path makes of the URL path.
    let asked = files.asked.into_inner();
    assert!(asked.len() <= 1, "asked {asked:?}");
    for rel in &asked {
        assert_eq!(Some(rel), www_path(&path).as_ref());
        assert!(!rel.is_empty() && !rel.starts_with('/'), "{rel:?}");
        assert!(!rel.contains(['\\', '\0']), "{rel:?}");
        for seg in rel.split('/') {
            assert!(
                !matches!(seg, "" | "." | ".."),
                "segment {seg:?} in {rel:?}"
            );
        }
        let full = Path::new(ROOT).join(rel);
        assert!(full.starts_with(ROOT), "{rel:?}");
        assert!(
            full.components()
                .skip(Path::new(ROOT).components().count())
                .all(|c| matches!(c, Component::Normal(_))),
            "{rel:?}"
        );
        if let Some(content) = file(rel) {
            assert_eq!(status, 200);
            assert_eq!(resp.body().as_ref(), content);
        }
    }
});
