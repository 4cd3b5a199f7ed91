//! The test DNS server (`relay_testkit::dns`) as the relay's resolver sees it: every record
//! type, negative answers, faults, TCP fallback for large answers.

use std::time::{Duration, Instant};

use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::hickory_resolver::proto::rr::RData;
use mail_auth::{DnsError, Error, MessageAuthenticator};
use relay_testkit::dns::{DnsServer, Fault, Record};

fn resolver(dns: &DnsServer) -> MessageAuthenticator {
    let mut config = relay::config::Config::dev("/nonexistent".into());
    config.dns_server = Some(dns.addr());
    config.dns_timeout_secs = 1;
    relay::dns::resolver(&config)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The answers to `name`/`rtype` as text, or the error as mail-auth classifies it.
fn lookup(r: &MessageAuthenticator, name: &str, rtype: &str) -> Result<Vec<String>, Error> {
    use mail_auth::hickory_resolver::proto::rr::RecordType;
    let rtype: RecordType = rtype.parse().unwrap();
    block_on(async {
        let lookup = r
            .resolver()
            .lookup(name, rtype)
            .await
            .map_err(Error::from)?;
        Ok(lookup
            .answers()
            .iter()
            .map(|rr| match &rr.data {
                RData::TXT(txt) => txt
                    .txt_data
                    .iter()
                    .map(|s| format!("[{}]", String::from_utf8_lossy(s)))
                    .collect(),
                other => other.to_string(),
            })
            .collect())
    })
}

fn not_found(code: ResponseCode) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::Dns(DnsError::RecordNotFound(c)) if *c == code)
}

#[test]
fn serves_each_record_type() {
    let dns = DnsServer::start();
    dns.add("_r1.test", Record::A("127.0.0.2".parse().unwrap()));
    dns.add("_r1.test", Record::Aaaa("::1".parse().unwrap()));
    dns.add("_r1.test", Record::Mx(10, "mx._r1.test".into()));
    dns.add("_r1.test", Record::Mx(20, "_r1.test".into()));
    dns.add("_null.test", Record::Mx(0, ".".into()));
    dns.add("www._r1.test", Record::Cname("_r1.test".into()));
    dns.set(
        "_multi.test",
        vec![Record::Txt(vec!["ab".into(), "cd".into()])],
    );
    let r = resolver(&dns);
    assert_eq!(lookup(&r, "_r1.test.", "A").unwrap(), ["127.0.0.2"]);
    assert_eq!(lookup(&r, "_r1.test.", "AAAA").unwrap(), ["::1"]);
    let mut mx = lookup(&r, "_r1.test.", "MX").unwrap();
    mx.sort();
    assert_eq!(mx, ["10 mx._r1.test.", "20 _r1.test."]);
    assert_eq!(lookup(&r, "_null.test.", "MX").unwrap(), ["0 ."]);
    // A CNAME is followed: the alias, then the target's address.
    let www = lookup(&r, "www._r1.test.", "A").unwrap();
    assert_eq!(www, ["_r1.test.", "127.0.0.2"]);
    assert_eq!(lookup(&r, "_MULTI.test.", "TXT").unwrap(), ["[ab][cd]"]);
    let log = dns.queries();
    assert!(log
        .iter()
        .any(|q| q.name == "_r1.test" && q.record_type == "MX"));
    assert_eq!(
        dns.queries_for("_multi.test."),
        1,
        "case and dot do not matter"
    );
}

#[test]
fn negative_answers() {
    let dns = DnsServer::start();
    dns.add("_r1.test", Record::A("127.0.0.2".parse().unwrap()));
    let r = resolver(&dns);
    let e = lookup(&r, "_nowhere.test.", "A").unwrap_err();
    assert!(not_found(ResponseCode::NXDomain)(&e), "NXDOMAIN: {e:?}");
    let e = lookup(&r, "_r1.test.", "TXT").unwrap_err();
    assert!(not_found(ResponseCode::NoError)(&e), "NODATA: {e:?}");
    dns.remove("_r1.test");
    let e = lookup(&r, "_r1.test.", "A").unwrap_err();
    assert!(not_found(ResponseCode::NXDomain)(&e), "removed: {e:?}");
}

#[test]
fn faults_servfail_and_silence() {
    let dns = DnsServer::start();
    dns.add("_down.test", Record::A("127.0.0.3".parse().unwrap()));
    let r = resolver(&dns);
    dns.fault("_down.test", Fault::ServFail);
    let e = lookup(&r, "_down.test.", "A").unwrap_err();
    assert!(matches!(e, Error::Dns(DnsError::Resolver(_))), "{e:?}");
    dns.fault("_down.test", Fault::Timeout);
    let started = Instant::now();
    let e = lookup(&r, "_down.test.", "A").unwrap_err();
    assert!(matches!(e, Error::Dns(DnsError::Resolver(_))), "{e:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited");
    assert!(started.elapsed() < Duration::from_secs(10));
    dns.clear_fault("_down.test");
    assert_eq!(lookup(&r, "_down.test.", "A").unwrap(), ["127.0.0.3"]);
}

#[test]
fn large_answers_come_over_tcp() {
    let dns = DnsServer::start();
    // A 4096-bit DKIM key's record is about 800 bytes; this is larger still.
    let value = "k".repeat(3000);
    dns.txt("big._domainkey._r1.test", &value);
    let r = resolver(&dns);
    let answer = lookup(&r, "big._domainkey._r1.test.", "TXT").unwrap();
    assert_eq!(answer.len(), 1);
    assert_eq!(
        answer[0].len(),
        3000 + 2 * 12,
        "12 strings of at most 255 bytes"
    );
    let log = dns.queries();
    assert!(
        log.iter().any(|q| q.tcp),
        "the truncated UDP answer sent the client to TCP: {log:?}"
    );
}

#[test]
fn stops_when_dropped() {
    let dns = DnsServer::start();
    let addr = dns.addr();
    drop(dns);
    // Both ports are free again.
    std::net::UdpSocket::bind(addr).unwrap();
    std::net::TcpListener::bind(addr).unwrap();
}
