//! DKIM over sockets: a relay whose resolver is the test DNS server (option `dns_server`)
//! receives mail on port 25 from `_s1.test`, whose key that server publishes; the relay's own key
//! file and signer at start.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use relay::dkim::{DkimKey, KeyCache, Signer, Verdict};
use relay::server::{Backend, Kind};
use relay_testkit::dns::{DnsServer, Fault};
use relay_testkit::{backends, create_account, new_addr, Client, Relay};

/// The sending domain whose key the DNS server publishes.
const DOMAIN: &str = "_s1.test";
/// Another domain with its own published key.
const OTHER: &str = "_s2.test";
const SELECTOR: &str = "opendkim";
const KEY_RECORD: &str = "opendkim._domainkey._s1.test";
const OTHER_KEY_RECORD: &str = "opendkim._domainkey._s2.test";

/// Two keys, made once for the whole test binary (RSA key generation takes a while).
fn keys() -> &'static (DkimKey, DkimKey) {
    static KEYS: OnceLock<(DkimKey, DkimKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = rand::rngs::OsRng;
        (
            DkimKey::generate(&mut rng).unwrap(),
            DkimKey::generate(&mut rng).unwrap(),
        )
    })
}

fn signer(key: &DkimKey, domain: &str) -> Signer {
    Signer::new(key, domain, SELECTOR).unwrap()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An encrypted message (it passes the encryption gate) from `from` to `to`, CRLF.
fn message(from: &str, to: &str) -> Vec<u8> {
    let text = include_str!("../../testdata/mail/encrypted-crafted-seipd-v2.eml");
    text.replace("<alice@example.org>", &format!("<{from}>"))
        .replace("<bob@example.org>", &format!("<{to}>"))
        .into_bytes()
}

/// `message` with the `DKIM-Signature` field `signer` makes for it in front.
fn signed(signer: &Signer, message: &[u8]) -> Vec<u8> {
    let mut out = signer.sign(message, now()).unwrap();
    out.extend_from_slice(message);
    out
}

/// A DNS server publishing the keys of `_s1.test` and `_s2.test`, a relay asking it (1 s per
/// query), and a local recipient.
struct Fixture {
    dns: DnsServer,
    relay: Relay,
    bob: String,
}

fn fixture(backend: Backend) -> Fixture {
    let dns = DnsServer::start();
    dns.txt(KEY_RECORD, &keys().0.dns_txt_value());
    dns.txt(OTHER_KEY_RECORD, &keys().1.dns_txt_value());
    let relay = Relay::start(backend, &[&dns.relay_option(), "dns_timeout=1"]);
    let bob = new_addr("dk");
    create_account(relay.store(), &bob, now() as i64);
    Fixture { dns, relay, bob }
}

impl Fixture {
    /// Sends `message` to bob on port 25 (STARTTLS) with envelope sender `from`; the reply to
    /// the end of DATA.
    fn send(&self, from: &str, message: &[u8]) -> (u16, String) {
        let mut c = Client::plain(self.relay.addr(Kind::Mx));
        assert_eq!(c.reply().0, 220);
        assert_eq!(c.smtp("EHLO sender.test").0, 250);
        assert_eq!(c.smtp("STARTTLS").0, 220);
        let mut c = c.upgrade();
        assert_eq!(c.smtp("EHLO sender.test").0, 250);
        c.submit(from, &[&self.bob], message)
    }

    /// Messages in bob's INBOX.
    fn delivered(&self) -> Vec<Vec<u8>> {
        let store = &self.relay.shared().store;
        let id = store.account(&self.bob).unwrap().id;
        let view = store.mailbox_view(id, "INBOX").unwrap();
        view.messages
            .iter()
            .map(|m| store.read(m.body).unwrap().to_vec())
            .collect()
    }

    fn from(&self) -> String {
        format!("carol@{DOMAIN}")
    }
}

#[track_caller]
fn assert_refused(reply: (u16, String), code: u16, text: &str) {
    assert_eq!(reply.0, code, "{}", reply.1);
    assert!(
        reply.1.contains(text),
        "{:?} should contain {text:?}",
        reply.1
    );
}

#[test]
fn valid_signature_is_delivered() {
    for backend in backends() {
        let f = fixture(backend);
        let from = f.from();
        let msg = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
        let (code, text) = f.send(&from, &msg);
        assert_eq!(code, 250, "{backend:?}: {text}");
        let delivered = f.delivered();
        assert_eq!(delivered.len(), 1);
        let stored = String::from_utf8_lossy(&delivered[0]);
        assert!(!stored.contains("DKIM-Signature"), "stripped at delivery");
        assert!(f.dns.queries_for(KEY_RECORD) >= 1);
    }
}

#[test]
fn no_signature_is_refused() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    let reply = f.send(&from, &message(&from, &f.bob));
    assert_refused(reply, 554, "5.7.1 No DKIM signature found");
    assert!(f.delivered().is_empty());
    assert_eq!(f.dns.queries().len(), 0, "nothing to look up");
}

#[test]
fn forged_signature_is_refused() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    // Signed for _s1.test, but with _s2.test's key.
    let msg = signed(&signer(&keys().1, DOMAIN), &message(&from, &f.bob));
    assert_refused(
        f.send(&from, &msg),
        554,
        "5.7.1 No valid DKIM signature found",
    );
    assert!(f.delivered().is_empty());
}

#[test]
fn truncated_signature_header_is_refused() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    let body = message(&from, &f.bob);
    let header = signer(&keys().0, DOMAIN).sign(&body, now()).unwrap();
    // The field cut after `d=…;`: no h=, bh=, b= any more.
    let text = String::from_utf8(header).unwrap();
    let cut = text.find("c=relaxed").unwrap();
    let mut msg = format!("{}\r\n", &text[..cut].trim_end()).into_bytes();
    msg.extend_from_slice(&body);
    assert_refused(
        f.send(&from, &msg),
        554,
        "5.7.1 No valid DKIM signature found",
    );
    assert!(f.delivered().is_empty());
}

#[test]
fn valid_signature_of_another_domain_is_refused() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    // A good signature by _s2.test on mail From _s1.test: not aligned.
    let msg = signed(&signer(&keys().1, OTHER), &message(&from, &f.bob));
    assert_refused(
        f.send(&from, &msg),
        554,
        "5.7.1 No valid DKIM signature found",
    );
    assert!(f.delivered().is_empty());
    assert_eq!(
        f.dns.queries_for(OTHER_KEY_RECORD),
        0,
        "an unaligned signature costs no lookup"
    );
}

#[test]
fn signature_over_a_modified_body_is_refused() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    let msg = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
    let text = String::from_utf8(msg).unwrap();
    // The MIME preamble (ignored by the encryption gate) changed after signing.
    let tampered = text.replace("This is an OpenPGP/MIME", "This is an OpenPGP-MIME");
    assert_ne!(tampered, text);
    assert_refused(
        f.send(&from, tampered.as_bytes()),
        554,
        "5.7.1 No valid DKIM signature found",
    );
    assert!(f.delivered().is_empty());
}

#[test]
fn header_added_after_signing_is_refused() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    let msg = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
    // A second Autocrypt field (oversigned, so the signature covers its absence).
    let mut tampered = b"Autocrypt: addr=mallory@_s1.test; keydata=AAAA\r\n".to_vec();
    tampered.extend_from_slice(&msg);
    assert_refused(
        f.send(&from, &tampered),
        554,
        "5.7.1 No valid DKIM signature found",
    );
}

#[test]
fn missing_key_record_is_refused_permanently() {
    let f = fixture(Backend::Epoll);
    f.dns.remove(KEY_RECORD); // NXDOMAIN
    let from = f.from();
    let msg = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
    assert_refused(
        f.send(&from, &msg),
        554,
        "5.7.1 No valid DKIM signature found",
    );
    assert!(f.dns.queries_for(KEY_RECORD) >= 1);
}

#[test]
fn dns_timeout_is_temporary() {
    let f = fixture(Backend::Epoll);
    f.dns.fault(KEY_RECORD, Fault::Timeout);
    let from = f.from();
    let msg = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
    let started = std::time::Instant::now();
    assert_refused(f.send(&from, &msg), 451, "4.7.0");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(f.delivered().is_empty());
    // Once DNS answers again, the same message is accepted.
    f.dns.clear_fault(KEY_RECORD);
    assert_eq!(f.send(&from, &msg).0, 250);
    assert_eq!(f.delivered().len(), 1);
}

#[test]
fn dns_servfail_is_temporary() {
    let f = fixture(Backend::Epoll);
    f.dns.fault(KEY_RECORD, Fault::ServFail);
    let from = f.from();
    let msg = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
    assert_refused(f.send(&from, &msg), 451, "4.7.0");
    assert!(f.delivered().is_empty());
    assert!(f.dns.queries_for(KEY_RECORD) >= 1);
}

#[test]
fn domain_literal_from_is_delivered_without_lookup() {
    let f = fixture(Backend::Epoll);
    let from = "carol@[192.0.2.1]";
    assert_eq!(f.send(from, &message(from, &f.bob)).0, 250);
    assert_eq!(f.delivered().len(), 1);
    assert_eq!(f.dns.queries().len(), 0);
}

#[test]
fn cleartext_is_refused_without_any_dns_query() {
    let f = fixture(Backend::Epoll);
    let from = f.from();
    let clear = format!(
        "From: <{from}>\r\nTo: <{}>\r\nSubject: hi\r\n\r\nhello in clear\r\n",
        f.bob
    );
    let msg = signed(&signer(&keys().0, DOMAIN), clear.as_bytes());
    assert_refused(f.send(&from, &msg), 523, "Encryption Needed");
    assert_eq!(f.dns.queries().len(), 0, "{:?}", f.dns.queries());
}

#[test]
fn key_records_are_cached_and_dropped_after_a_failed_signature() {
    let f = fixture(Backend::Epoll);
    f.dns.set_ttl(3600);
    let from = f.from();
    let good = signed(&signer(&keys().0, DOMAIN), &message(&from, &f.bob));
    let cached = |f: &Fixture| {
        f.relay
            .shared()
            .dkim_keys
            .contains(&format!("{KEY_RECORD}."))
    };
    assert_eq!(f.send(&from, &good).0, 250);
    assert!(cached(&f));
    assert_eq!(f.send(&from, &good).0, 250);
    assert_eq!(
        f.dns.queries_for(KEY_RECORD),
        1,
        "the second check used the cache"
    );
    let forged = signed(&signer(&keys().1, DOMAIN), &message(&from, &f.bob));
    assert_eq!(f.send(&from, &forged).0, 554);
    assert!(!cached(&f), "a failed signature drops its key record");
}

#[test]
fn signer_output_verifies_with_mail_auth_against_the_published_key() {
    let dns = DnsServer::start();
    dns.txt(KEY_RECORD, &keys().0.dns_txt_value());
    let mut config = relay::config::Config::dev("/nonexistent".into());
    config.dns_server = Some(dns.addr());
    config.dns_timeout_secs = 2;
    let resolver = relay::dns::resolver(&config);
    let msg = signed(
        &signer(&keys().0, DOMAIN),
        &message(&format!("carol@{DOMAIN}"), "bob@[127.0.0.1]"),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // mail-auth's own verification, no cache.
        let parsed = mail_auth::AuthenticatedMessage::parse(&msg).unwrap();
        let outputs = resolver.verify_dkim(&parsed).await;
        assert_eq!(outputs.len(), 1);
        assert_eq!(
            *outputs[0].result(),
            mail_auth::DkimResult::Pass,
            "{outputs:?}"
        );
        let signature = outputs[0].signature().unwrap();
        assert_eq!(signature.d, DOMAIN);
        assert_eq!(signature.s, SELECTOR);
        // The relay's verification function, as /mxdeliv calls it.
        let cache = KeyCache::default();
        let verdict = relay::dkim::verify_origin_with(
            &resolver,
            &cache,
            Duration::from_secs(5),
            &msg,
            DOMAIN,
        )
        .await;
        assert_eq!(verdict, Verdict::Pass);
    });
    assert!(dns.queries_for(KEY_RECORD) >= 1);
    assert!(dns.queries().iter().all(|q| q.record_type == "TXT"));
}

#[test]
fn relay_with_a_domain_creates_its_key_at_first_start_and_keeps_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut relay = Relay::start(Backend::Epoll, &["mail_domain=_r1.test"]);
    let path = relay.data_dir().join("dkim/opendkim.private");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    let signer = relay.shared().dkim.clone().expect("a signer");
    assert_eq!(signer.domain(), "_r1.test");
    assert_eq!(signer.selector(), "opendkim");
    let first = std::fs::read(&path).unwrap();
    relay.restart();
    assert_eq!(std::fs::read(&path).unwrap(), first, "the key is kept");
    let key = relay::dkim::load_or_create(relay.data_dir(), "opendkim").unwrap();
    assert!(key.dns_txt_value().starts_with("v=DKIM1;k=rsa;p=MIIB"));
}

#[test]
fn ip_literal_relay_has_no_key() {
    let relay = Relay::start(Backend::Epoll, &[]);
    assert!(relay.shared().dkim.is_none());
    assert!(!relay.data_dir().join("dkim").exists());
}
