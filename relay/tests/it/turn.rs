//! TURN/STUN on UDP: a real TURN client (webrtc-rs's `turn` client) gets STUN binding and an
//! allocation with the credentials IMAP METADATA publishes and relays data both ways; raw STUN
//! requests check the refusals (`401` for wrong, expired and malformed credentials, `486` and
//! `508` for an allocation flood) and that a released allocation frees its slot.
//!
//! TURN runs on a thread of its own whatever the I/O backend, so these tests use epoll only.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stun::attributes::{ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use stun::error_code::ErrorCodeAttribute;
use stun::message::{
    Getter as _, Message, MessageType, Setter, CLASS_ERROR_RESPONSE, CLASS_REQUEST,
    CLASS_SUCCESS_RESPONSE, METHOD_ALLOCATE, METHOD_BINDING, METHOD_REFRESH,
};
use stun::textattrs::{Nonce, Realm, Username};
use webrtc_util::Conn as _;

use crate::harness::Relay;
use relay::server::Backend;

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `(host, port, username, password)` of IMAP METADATA `/shared/vendor/deltachat/turn`, read
/// over IMAP as Delta Chat reads it.
fn published(relay: &Relay) -> (String, u16, String, String) {
    let mut c = crate::imap_login(relay, &crate::harness::new_addr("turn"));
    let (lines, status) = c.imap("m", "GETMETADATA \"\" /shared/vendor/deltachat/turn");
    assert!(status.starts_with("m OK"), "{status}");
    let line = lines.join("\n");
    let value = line
        .split_once("/shared/vendor/deltachat/turn \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| panic!("TURN is on, but METADATA says {line}"));
    let parts: Vec<&str> = value.split(':').collect();
    let [host, port, user, pass] = parts[..] else {
        panic!("{value}")
    };
    (
        host.to_owned(),
        port.parse().unwrap(),
        user.to_owned(),
        pass.to_owned(),
    )
}

fn secret_of(relay: &Relay) -> Vec<u8> {
    relay.shared().turn.as_ref().unwrap().secret().to_vec()
}

#[test]
fn a_turn_client_gets_binding_and_an_allocation_with_the_published_credentials() {
    let relay = Relay::start(Backend::Epoll, &["turn_relay_ports=50000-59999"]);
    let (host, port, username, password) = published(&relay);
    assert_eq!(host, "127.0.0.1");
    assert_eq!(port, relay.turn_addr().port());
    let expires: u64 = username.parse().unwrap();
    let five_days = 5 * 86_400;
    assert!((now_unix() + five_days - 5..=now_unix() + five_days).contains(&expires));
    let server = relay.turn_addr().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), async {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let local = socket.local_addr().unwrap();
            let client = turn::client::Client::new(turn::client::ClientConfig {
                stun_serv_addr: server.clone(),
                turn_serv_addr: server.clone(),
                username,
                password,
                realm: String::new(),
                software: "relay-test".into(),
                rto_in_ms: 0,
                conn: Arc::new(socket),
                vnet: None,
            })
            .await
            .unwrap();
            client.listen().await.unwrap();
            // STUN: the address the relay sees us at.
            let mapped = client.send_binding_request().await.unwrap();
            assert_eq!(mapped, local);
            // TURN: a relayed address on the relay's address, in turn_relay_ports.
            let relayed_conn = client.allocate().await.unwrap();
            let relayed = relayed_conn.local_addr().unwrap();
            assert_eq!(relayed.ip(), relay.turn_addr().ip());
            assert!((50000..=59999).contains(&relayed.port()), "{relayed}");
            // Data through it, both ways, with a peer that knows nothing of TURN.
            let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let peer_addr = peer.local_addr().unwrap();
            relayed_conn
                .send_to(b"hello peer", peer_addr)
                .await
                .unwrap();
            let mut buf = [0u8; 1500];
            let (n, from) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&b"hello peer"[..], relayed));
            peer.send_to(b"hello client", relayed).await.unwrap();
            let (n, from) = relayed_conn.recv_from(&mut buf).await.unwrap();
            assert_eq!((&buf[..n], from), (&b"hello client"[..], peer_addr));
            relayed_conn.close().await.unwrap();
            client.close().await.unwrap();
        })
        .await
        .expect("the TURN exchange timed out");
    });
}

#[test]
fn an_allocation_relays_at_most_its_bandwidth() {
    let relay = Relay::start(Backend::Epoll, &["turn_allocation_bandwidth=1500"]);
    let (_, _, username, password) = published(&relay);
    let server = relay.turn_addr().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = turn::client::Client::new(turn::client::ClientConfig {
            stun_serv_addr: server.clone(),
            turn_serv_addr: server,
            username,
            password,
            realm: String::new(),
            software: String::new(),
            rto_in_ms: 0,
            conn: Arc::new(socket),
            vnet: None,
        })
        .await
        .unwrap();
        client.listen().await.unwrap();
        let relayed = client.allocate().await.unwrap();
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer_addr = peer.local_addr().unwrap();
        let received = |peer: &tokio::net::UdpSocket| {
            let mut n = 0;
            let mut buf = [0u8; 1500];
            while peer.try_recv_from(&mut buf).is_ok() {
                n += 1;
            }
            n
        };
        // 20 kB at once through a 1500 bytes/s allocation: one datagram's worth passes.
        for _ in 0..20 {
            relayed.send_to(&[7u8; 1000], peer_addr).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(received(&peer), 1);
        // A second later the allowance is back.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        relayed.send_to(&[7u8; 1000], peer_addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(received(&peer), 1);
        client.close().await.unwrap();
    });
}

/// Whether `program` is on PATH.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// coturn's `turnutils_uclient` (Debian package `coturn`, installed by .ci/run), a client
/// independent of the server's crate: allocates with the published credentials and sends 10
/// messages a session through the relay to `turnutils_peer`, which echoes them back; a wrong
/// password makes it fail.
#[test]
fn coturn_client_allocates_and_relays_with_the_published_credentials() {
    if !installed("turnutils_uclient") || !installed("turnutils_peer") {
        eprintln!("skipping: turnutils_uclient is missing (apt-get install coturn)");
        return;
    }
    let relay = Relay::start(Backend::Epoll, &[]);
    let (_, port, user, pass) = published(&relay);
    let peer_port = relay_testkit::free_udp_port().to_string();
    let _peer = Killed(
        std::process::Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    let uclient = |password: &str| {
        let o = std::process::Command::new("timeout")
            .args(["30", "turnutils_uclient", "-u", &user, "-w", password])
            .args(["-e", "127.0.0.1", "-r", &peer_port, "-p", &port.to_string()])
            .args(["-n", "10", "-m", "1", "-l", "100", "127.0.0.1"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let (ok, text) = uclient(&pass);
    assert!(ok, "{text}");
    // The summary: "start_mclient: tot_send_msgs=20, tot_recv_msgs=20" (10 per session, it
    // opens two: RTP and RTCP).
    let totals = text
        .lines()
        .find_map(|l| l.split_once("start_mclient: tot_send_msgs="))
        .and_then(|(_, rest)| rest.split_once(", tot_recv_msgs="))
        .map(|(sent, received)| (sent.trim().to_owned(), received.trim().to_owned()))
        .unwrap_or_else(|| panic!("no totals: {text}"));
    let sent: u32 = totals.0.parse().unwrap();
    assert!(sent >= 10, "{text}");
    assert_eq!(totals.1, totals.0, "{text}");
    assert!(text.contains("Total lost packets 0 "), "{text}");
    let (ok, text) = uclient("wrong password");
    assert!(!ok, "{text}");
    assert!(text.contains("Cannot complete Allocation"), "{text}");
}

/// A blocking raw-STUN client on one UDP socket (one 5-tuple: one allocation at most).
struct Raw {
    socket: UdpSocket,
    server: SocketAddr,
}

/// What the relay answered a request.
#[derive(Debug)]
enum Answer {
    Success(Message),
    Error(u16, Message),
}

impl Answer {
    fn code(&self) -> Option<u16> {
        match self {
            Answer::Success(_) => None,
            Answer::Error(code, _) => Some(*code),
        }
    }
}

impl Raw {
    fn new(server: SocketAddr) -> Raw {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Raw { socket, server }
    }

    fn request(&self, method: stun::message::Method, attrs: Vec<Box<dyn Setter>>) -> Answer {
        let mut all: Vec<Box<dyn Setter>> = vec![
            Box::new(stun::agent::TransactionId::new()),
            Box::new(MessageType::new(method, CLASS_REQUEST)),
        ];
        all.extend(attrs);
        let mut m = Message::new();
        m.build(&all).unwrap();
        self.socket.send_to(&m.raw, self.server).unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = self
            .socket
            .recv_from(&mut buf)
            .expect("no answer from the TURN server");
        let mut r = Message::new();
        r.raw = buf[..n].to_vec();
        r.decode().unwrap();
        assert_eq!(r.transaction_id, m.transaction_id);
        assert_eq!(r.typ.method, method);
        if r.typ.class == CLASS_SUCCESS_RESPONSE {
            Answer::Success(r)
        } else {
            assert_eq!(r.typ.class, CLASS_ERROR_RESPONSE);
            let mut code = ErrorCodeAttribute::default();
            code.get_from(&r).unwrap();
            Answer::Error(code.code.0, r)
        }
    }

    /// The first, unauthenticated Allocate: `401` with the realm and a nonce.
    fn challenge(&self) -> (String, String) {
        let answer = self.request(METHOD_ALLOCATE, vec![Box::new(udp())]);
        let Answer::Error(401, r) = answer else {
            panic!("expected 401: {answer:?}")
        };
        let realm = Realm::get_from_as(&r, ATTR_REALM).unwrap().text;
        let nonce = Nonce::get_from_as(&r, ATTR_NONCE).unwrap().text;
        (realm, nonce)
    }

    fn signed(
        &self,
        method: stun::message::Method,
        extra: Vec<Box<dyn Setter>>,
        (user, pass): (&str, &str),
        (realm, nonce): &(String, String),
    ) -> Answer {
        let mut attrs = extra;
        attrs.push(Box::new(Username::new(ATTR_USERNAME, user.to_owned())));
        attrs.push(Box::new(Realm::new(ATTR_REALM, realm.clone())));
        attrs.push(Box::new(Nonce::new(ATTR_NONCE, nonce.clone())));
        attrs.push(Box::new(
            stun::integrity::MessageIntegrity::new_long_term_integrity(
                user.to_owned(),
                realm.clone(),
                pass.to_owned(),
            ),
        ));
        attrs.push(Box::new(stun::fingerprint::FINGERPRINT));
        self.request(method, attrs)
    }

    /// The full Allocate exchange: the relayed address, or the error code.
    fn allocate(&self, user: &str, pass: &str) -> Result<SocketAddr, u16> {
        let challenge = self.challenge();
        match self.signed(
            METHOD_ALLOCATE,
            vec![Box::new(udp())],
            (user, pass),
            &challenge,
        ) {
            Answer::Success(r) => {
                let mut relayed = turn::proto::relayaddr::RelayedAddress::default();
                relayed.get_from(&r).unwrap();
                Ok(SocketAddr::new(relayed.ip, relayed.port))
            }
            Answer::Error(code, _) => Err(code),
        }
    }

    /// Ends this socket's allocation (Refresh with LIFETIME 0).
    fn release(&self, user: &str, pass: &str) {
        let challenge = self.challenge();
        let answer = self.signed(
            METHOD_REFRESH,
            vec![Box::new(turn::proto::lifetime::Lifetime(Duration::ZERO))],
            (user, pass),
            &challenge,
        );
        assert!(answer.code().is_none(), "{answer:?}");
    }
}

fn udp() -> turn::proto::reqtrans::RequestedTransport {
    turn::proto::reqtrans::RequestedTransport {
        protocol: turn::proto::PROTO_UDP,
    }
}

#[test]
fn stun_binding_needs_no_credentials() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let raw = Raw::new(relay.turn_addr());
    let Answer::Success(r) = raw.request(METHOD_BINDING, vec![]) else {
        panic!("binding failed")
    };
    let mut mapped = stun::xoraddr::XorMappedAddress::default();
    mapped.get_from(&r).unwrap();
    assert_eq!(
        SocketAddr::new(mapped.ip, mapped.port),
        raw.socket.local_addr().unwrap()
    );
}

#[test]
fn wrong_expired_and_malformed_credentials_get_401() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let (_, _, user, pass) = published(&relay);
    let secret = secret_of(&relay);
    let server = relay.turn_addr();
    // The realm is the mail domain.
    assert_eq!(Raw::new(server).challenge().0, "127.0.0.1");
    // A wrong password.
    assert_eq!(Raw::new(server).allocate(&user, "wrong password"), Err(401));
    // Signed with another secret (bad MESSAGE-INTEGRITY).
    let (_, other) = relay::turn::credentials(b"another relay's secret", now_unix());
    assert_eq!(Raw::new(server).allocate(&user, &other), Err(401));
    // Expired: a username from six days ago with its right password.
    let (old_user, old_pass) = relay::turn::credentials(&secret, now_unix() - 6 * 86_400);
    assert_eq!(Raw::new(server).allocate(&old_user, &old_pass), Err(401));
    // Not a time, though signed with the secret.
    let name = "alice";
    let alice_pass = relay::turn::password(&secret, name);
    assert_eq!(Raw::new(server).allocate(name, &alice_pass), Err(401));
    // The published credentials work, also after a restart (the secret is kept).
    assert!(Raw::new(server).allocate(&user, &pass).is_ok());
    let mut relay = relay;
    relay.restart();
    assert!(relay::turn::secret::path(relay.data_dir()).exists());
    assert_eq!(secret_of(&relay), secret);
    assert!(Raw::new(relay.turn_addr()).allocate(&user, &pass).is_ok());
}

#[test]
fn an_allocation_flood_from_one_source_stops_at_the_caps() {
    let relay = Relay::start(
        Backend::Epoll,
        &[
            "turn_max_allocations_per_username=3",
            "turn_max_allocations=5",
        ],
    );
    let server = relay.turn_addr();
    let secret = secret_of(&relay);
    let now = now_unix();
    let (a_user, a_pass) = relay::turn::credentials(&secret, now);
    let (b_user, b_pass) = relay::turn::credentials(&secret, now + 1);
    // Ten allocations with one credential from one address (ten ports): three pass, then 486.
    let a: Vec<Raw> = (0..10).map(|_| Raw::new(server)).collect();
    let results: Vec<_> = a.iter().map(|r| r.allocate(&a_user, &a_pass)).collect();
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert!(results[3..].iter().all(|r| *r == Err(486)), "{results:?}");
    // Another credential gets the two that are left in all, then 508.
    let b: Vec<Raw> = (0..3).map(|_| Raw::new(server)).collect();
    let results: Vec<_> = b.iter().map(|r| r.allocate(&b_user, &b_pass)).collect();
    assert!(results[..2].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(results[2], Err(508));
    // A released allocation frees its slot, for its credential and in all.
    a[0].release(&a_user, &a_pass);
    let again = Raw::new(server);
    let mut freed = Err(0);
    for _ in 0..50 {
        freed = again.allocate(&a_user, &a_pass);
        if freed.is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(freed.is_ok(), "{freed:?}");
    assert_eq!(Raw::new(server).allocate(&a_user, &a_pass), Err(486));
}

#[test]
fn fresh_credentials_do_not_lift_the_cap_of_one_source() {
    // Any account can fetch new credentials every second; one address still holds at most
    // turn_max_allocations_per_source allocations, whatever usernames it shows.
    let relay = Relay::start(
        Backend::Epoll,
        &[
            "turn_max_allocations_per_username=20",
            "turn_max_allocations_per_source=4",
            "turn_max_allocations=100",
        ],
    );
    let server = relay.turn_addr();
    let secret = secret_of(&relay);
    let now = now_unix();
    let clients: Vec<Raw> = (0..6).map(|_| Raw::new(server)).collect();
    let results: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (user, pass) = relay::turn::credentials(&secret, now + i as u64);
            r.allocate(&user, &pass)
        })
        .collect();
    assert!(results[..4].iter().all(Result::is_ok), "{results:?}");
    assert!(results[4..].iter().all(|r| *r == Err(486)), "{results:?}");
}

#[test]
fn requests_without_credentials_share_one_nonce() {
    let relay = Relay::start(Backend::Epoll, &[]);
    let (_, _, user, pass) = published(&relay);
    // From many sources (ports) and one: the crate issued one nonce, the front hands it out.
    let first = Raw::new(relay.turn_addr()).challenge();
    let one = Raw::new(relay.turn_addr());
    for i in 0..300 {
        let c = if i % 2 == 0 {
            Raw::new(relay.turn_addr()).challenge()
        } else {
            one.challenge()
        };
        assert_eq!(c, first, "request {i}");
    }
    // And it works.
    let answer = one.signed(
        METHOD_ALLOCATE,
        vec![Box::new(udp())],
        (&user, &pass),
        &first,
    );
    assert!(answer.code().is_none(), "{answer:?}");
}

#[test]
fn behind_nat_the_external_address_is_announced() {
    let relay = Relay::start(
        Backend::Epoll,
        &[
            "turn_external_address=203.0.113.7",
            "turn_relay_ports=61000-61999",
        ],
    );
    let (_, _, user, pass) = published(&relay);
    let relayed = Raw::new(relay.turn_addr()).allocate(&user, &pass).unwrap();
    assert_eq!(
        relayed.ip(),
        "203.0.113.7".parse::<std::net::IpAddr>().unwrap()
    );
    assert!((61000..=61999).contains(&relayed.port()), "{relayed}");
}

#[test]
fn turn_port_0_turns_it_off_and_metadata_says_nothing() {
    let relay = Relay::start(Backend::Epoll, &["turn_port=0"]);
    assert!(relay::turn::metadata_value(relay.shared(), now_unix()).is_none());
    assert!(!relay::turn::secret::path(relay.data_dir()).exists());
}
