//! The shared test support (`relay-testkit`: an in-process relay on loopback with real TLS, store
//! and fsync, and a blocking client with read deadlines), plus this suite's message templates.

pub use relay_testkit::{backends, free_port, new_addr, plain_auth, Client, Relay, PASSWORD};

/// A test message from a template in `tests/it/data`, with `{from}`, `{to}`, `{id}` replaced.
pub fn message(template: &str, from: &str, to: &str) -> Vec<u8> {
    let path = format!("{}/tests/it/data/{template}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    use std::sync::atomic::{AtomicU32, Ordering};
    static ID: AtomicU32 = AtomicU32::new(0);
    text.replace("{from}", from)
        .replace("{to}", to)
        .replace("{id}", &ID.fetch_add(1, Ordering::Relaxed).to_string())
        .into_bytes()
}
