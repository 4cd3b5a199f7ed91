//! Fuzz the armor decoder and the OpenPGP packet walk directly (no MIME around them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::policy::armor;

fuzz_target!(|data: &[u8]| {
    let out = armor::check_armored(data, true);
    let inc = armor::check_armored(data, false);
    // Incoming is at least as permissive as outgoing.
    if out.is_ok() {
        assert!(inc.is_ok());
    }
    let _ = armor::check_packets(data);
});
