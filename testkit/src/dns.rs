//! A real DNS server on loopback for tests: UDP and TCP on one ephemeral port of 127.0.0.1, its
//! own threads, a zone the test sets and changes while it runs, per-name faults, and a log of
//! the queries it received. Point a relay at it with option `dns_server=<addr>`
//! ([`DnsServer::relay_option`]).
//!
//! ```no_run
//! use relay_testkit::dns::{DnsServer, Fault, Record};
//!
//! let dns = DnsServer::start();
//! dns.add("_r1.test", Record::A("127.0.0.2".parse().unwrap()));
//! dns.add("_r1.test", Record::Mx(10, "_r1.test".into()));
//! dns.add("_null.test", Record::Mx(0, ".".into())); // null MX (RFC 7505)
//! dns.txt("opendkim._domainkey._r1.test", "v=DKIM1;k=rsa;p=...;s=email;t=s");
//! dns.fault("_down.test", Fault::ServFail);
//! let option = dns.relay_option(); // "dns_server=127.0.0.1:PORT"
//! assert_eq!(dns.queries_for("_r1.test"), 0);
//! ```
//!
//! Answers: the records of the asked type (`A`, `AAAA`, `MX`, `TXT`, `CNAME`, `SRV`; a `CNAME`
//! is followed within the zone); `NOERROR` without answers (NODATA) for a known name without that
//! type; `NXDOMAIN` for an unknown name (both with an `SOA` in the authority section, TTL 0, so
//! resolvers do not cache the negative answer). Every answer is authoritative and has the TTL of
//! [`DnsServer::set_ttl`] (default 0: a resolver asks again each time, so a test can change the
//! zone at any moment). A UDP answer larger than the client's buffer (512 bytes, or its EDNS
//! size) is sent truncated (TC), and the client retries over TCP. Faults per name:
//! [`Fault::ServFail`] answers `SERVFAIL`, [`Fault::Timeout`] never answers. Names are compared
//! case-insensitively, with or without the trailing dot.
//!
//! The wire format is hickory-proto's (the relay's resolver's own codec); the server logic is
//! written here because the faults and the query log are what tests need, which
//! hickory-server's authorities do not offer.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record as Rr, RecordType};

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// UDP answers fit this without EDNS (RFC 1035 §4.2.1).
const UDP_PLAIN_MAX: usize = 512;
/// CNAME chains followed at most.
const MAX_CNAME_CHAIN: usize = 8;

/// A resource record of the test zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Mail exchanger: preference and host (`"."` with preference 0 is a null MX, RFC 7505).
    Mx(u16, String),
    /// Text: one or more character-strings of at most 255 bytes each (resolvers join them).
    Txt(Vec<String>),
    /// Alias to another name.
    Cname(String),
    /// Service location (RFC 2782): priority, weight, port, target.
    Srv(u16, u16, u16, String),
}

impl Record {
    fn record_type(&self) -> RecordType {
        match self {
            Record::A(_) => RecordType::A,
            Record::Aaaa(_) => RecordType::AAAA,
            Record::Mx(..) => RecordType::MX,
            Record::Txt(_) => RecordType::TXT,
            Record::Cname(_) => RecordType::CNAME,
            Record::Srv(..) => RecordType::SRV,
        }
    }

    fn rdata(&self) -> RData {
        match self {
            Record::A(ip) => RData::A(A(*ip)),
            Record::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
            Record::Mx(pref, host) => RData::MX(MX::new(*pref, fqdn(host))),
            Record::Txt(strings) => RData::TXT(TXT::new(strings.clone())),
            Record::Cname(target) => RData::CNAME(CNAME(fqdn(target))),
            Record::Srv(priority, weight, port, target) => {
                RData::SRV(SRV::new(*priority, *weight, *port, fqdn(target)))
            }
        }
    }
}

/// A misbehaviour of the server for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `SERVFAIL` (RFC 1035 §4.1.1: the server failed, try later).
    ServFail,
    /// Never answer (the query is read and dropped; a TCP connection stays open, silent).
    Timeout,
}

/// One query as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The name asked for, lowercase, without the trailing dot.
    pub name: String,
    /// Its type (`A`, `MX`, `TXT`, ...).
    pub record_type: String,
    /// Whether it came over TCP.
    pub tcp: bool,
}

#[derive(Default)]
struct Zone {
    records: BTreeMap<String, Vec<Record>>,
    faults: BTreeMap<String, Fault>,
    ttl: u32,
    log: Vec<Query>,
}

/// The DNS server; stops (and frees its port) when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// `name` lowercase without a trailing dot (the zone's keys).
fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `name` as a fully qualified hickory name.
fn fqdn(name: &str) -> Name {
    let mut n = name.trim_end_matches('.').to_owned();
    n.push('.');
    Name::from_ascii(&n).unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}"))
}

impl DnsServer {
    /// Starts a server on UDP and TCP `127.0.0.1:<port>` (the same ephemeral port for both).
    pub fn start() -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone::default()));
        let stop = Arc::new(AtomicBool::new(false));
        udp.set_read_timeout(Some(POLL)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let threads = vec![
            {
                let (zone, stop) = (zone.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("test-dns-udp".into())
                    .spawn(move || serve_udp(&udp, &zone, &stop))
                    .unwrap()
            },
            {
                let (zone, stop) = (zone.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("test-dns-tcp".into())
                    .spawn(move || serve_tcp(&tcp, &zone, &stop))
                    .unwrap()
            },
        ];
        DnsServer {
            addr,
            zone,
            stop,
            threads,
        }
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay option that sends every lookup here: `dns_server=127.0.0.1:<port>`.
    pub fn relay_option(&self) -> String {
        format!("dns_server={}", self.addr)
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.zone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `record` to `name`.
    pub fn add(&self, name: &str, record: Record) {
        self.zone()
            .records
            .entry(key(name))
            .or_default()
            .push(record);
    }

    /// Replaces every record of `name`.
    pub fn set(&self, name: &str, records: Vec<Record>) {
        self.zone().records.insert(key(name), records);
    }

    /// Adds a TXT record holding `value`, split into character-strings of 255 bytes (as DKIM
    /// keys longer than that are published).
    pub fn txt(&self, name: &str, value: &str) {
        let strings = value
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8(c.to_vec()).expect("TXT values here are ASCII"))
            .collect();
        self.add(name, Record::Txt(strings));
    }

    /// Removes `name` (it answers NXDOMAIN then).
    pub fn remove(&self, name: &str) {
        self.zone().records.remove(&key(name));
    }

    /// Makes queries for `name` fail with `fault` (whatever the zone holds).
    pub fn fault(&self, name: &str, fault: Fault) {
        self.zone().faults.insert(key(name), fault);
    }

    /// Answers queries for `name` normally again.
    pub fn clear_fault(&self, name: &str) {
        self.zone().faults.remove(&key(name));
    }

    /// The TTL of every answer from now on (default 0).
    pub fn set_ttl(&self, ttl: u32) {
        self.zone().ttl = ttl;
    }

    /// Every query received so far, oldest first.
    pub fn queries(&self) -> Vec<Query> {
        self.zone().log.clone()
    }

    /// How many queries (any type, UDP or TCP) asked for `name`.
    pub fn queries_for(&self, name: &str) -> usize {
        let name = key(name);
        self.zone().log.iter().filter(|q| q.name == name).count()
    }

    /// Forgets the queries received so far.
    pub fn clear_queries(&self) {
        self.zone().log.clear();
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A UDP and a TCP socket on the same free port of 127.0.0.1.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

fn serve_udp(sock: &UdpSocket, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue; // the poll timeout, or a transient error
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(answer) = answer(&query, zone, false) else {
            continue;
        };
        let max = query.edns.as_ref().map_or(UDP_PLAIN_MAX, |e| {
            usize::from(e.max_payload()).max(UDP_PLAIN_MAX)
        });
        let mut bytes = answer.to_vec().unwrap();
        if bytes.len() > max {
            // RFC 1035 §4.2.1: the client sees TC and asks again over TCP.
            bytes = answer.truncate().to_vec().unwrap();
        }
        let _ = sock.send_to(&bytes, peer);
    }
}

fn serve_tcp(listener: &TcpListener, zone: &Arc<Mutex<Zone>>, stop: &Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (zone, stop) = (zone.clone(), stop.clone());
                let _ = std::thread::Builder::new()
                    .name("test-dns-conn".into())
                    .spawn(move || serve_tcp_conn(stream, &zone, &stop));
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// One TCP connection: queries with a two-byte length prefix (RFC 1035 §4.2.2), until the
/// client closes or the server stops.
fn serve_tcp_conn(mut stream: TcpStream, zone: &Mutex<Zone>, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut pending = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let frame: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            let Ok(query) = Message::from_vec(&frame) else {
                return;
            };
            if let Some(answer) = answer(&query, zone, true) {
                let bytes = answer.to_vec().unwrap();
                let mut out = u16::try_from(bytes.len()).unwrap().to_be_bytes().to_vec();
                out.extend_from_slice(&bytes);
                if stream.write_all(&out).is_err() {
                    return;
                }
            }
        }
    }
}

/// The answer to `query`, `None` to stay silent (a [`Fault::Timeout`], not a query).
fn answer(query: &Message, zone: &Mutex<Zone>, tcp: bool) -> Option<Message> {
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    let mut response = Message::response(query.metadata.id, query.metadata.op_code);
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_queries(query.queries.iter().cloned());
    let [question] = &query.queries[..] else {
        response.metadata.response_code = ResponseCode::FormErr;
        return Some(response);
    };
    if query.metadata.op_code != OpCode::Query {
        response.metadata.response_code = ResponseCode::NotImp;
        return Some(response);
    }
    let name = key(&question.name().to_ascii());
    let qtype = question.query_type();
    let mut zone = zone
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    zone.log.push(Query {
        name: name.clone(),
        record_type: qtype.to_string(),
        tcp,
    });
    match zone.faults.get(&name) {
        Some(Fault::Timeout) => return None,
        Some(Fault::ServFail) => {
            response.metadata.response_code = ResponseCode::ServFail;
            return Some(response);
        }
        None => {}
    }
    let ttl = zone.ttl;
    let mut owner = name;
    for _ in 0..MAX_CNAME_CHAIN {
        let Some(records) = zone.records.get(&owner) else {
            // An unknown name (or a CNAME pointing out of the zone).
            if response.answers.is_empty() {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            break;
        };
        let alias = records.iter().find_map(|r| match r {
            Record::Cname(target) if qtype != RecordType::CNAME => Some(target.clone()),
            _ => None,
        });
        if let Some(target) = alias {
            let rr = Rr::from_rdata(fqdn(&owner), ttl, RData::CNAME(CNAME(fqdn(&target))));
            response.add_answer(rr);
            owner = key(&target);
            continue;
        }
        for r in records.iter().filter(|r| r.record_type() == qtype) {
            response.add_answer(Rr::from_rdata(fqdn(&owner), ttl, r.rdata()));
        }
        break;
    }
    if response.answers.is_empty() {
        // NXDOMAIN or NODATA: an SOA with TTL 0 (RFC 2308 §5), so nothing is cached.
        let zone_name = fqdn(question.name().base_name().to_ascii().as_str());
        let soa = SOA::new(
            fqdn("ns.test"),
            fqdn("hostmaster.test"),
            1,
            3600,
            600,
            86400,
            0,
        );
        response.add_authority(Rr::from_rdata(zone_name, 0, RData::SOA(soa)));
    }
    Some(response)
}
