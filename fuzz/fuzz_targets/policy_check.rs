//! Fuzz the whole policy API on arbitrary message bytes: no panic, only the documented reply
//! codes, and header cleanup never changes the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::policy::{
    check_incoming, check_outgoing, clean_delivery_headers, clean_submission_headers, mime,
    Envelope,
};

fuzz_target!(|raw: &[u8]| {
    let rcpt = ["bob@example.org".to_string()];
    let self_rcpt = ["alice@example.org".to_string()];
    for rcpt_to in [&rcpt[..], &self_rcpt[..]] {
        let env = Envelope {
            mail_from: "alice@example.org",
            rcpt_to,
        };
        if let Err(r) = check_outgoing(&env, raw) {
            assert!(r.code == 500 || r.code == 523, "unexpected code {r:?}");
        }
        match check_incoming(&env, raw, &|r| !r.starts_with("legacy")) {
            Ok(_) => {}
            Err(r) => assert!(r.code == 500 || r.code == 523, "unexpected code {r:?}"),
        }
    }
    let (_, body) = mime::split_header(raw);
    for clean in [clean_submission_headers, clean_delivery_headers] {
        let out = clean(raw);
        assert!(out.ends_with(body), "cleanup changed the body");
        assert_eq!(clean(&out), out, "cleanup is not idempotent");
    }
});
