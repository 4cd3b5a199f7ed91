//! The test relay itself: accounts made by `create_account` log in, a restart keeps the store
//! (and the ports when asked), the admin socket serves.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // I/O: integration tests
#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use relay_testkit::{backends, create_account, new_addr, Client, Kind, Relay, PASSWORD};

fn imap_login_status(relay: &Relay, addr: &str, password: &str) -> String {
    let mut c = Client::tls(relay.addr(Kind::Imaps));
    assert!(c.line().starts_with("* OK"));
    c.imap("l", &format!("LOGIN \"{addr}\" \"{password}\"")).1
}

#[test]
fn created_accounts_log_in_and_survive_a_restart() {
    for backend in backends() {
        let mut relay = Relay::start(backend, &[]);
        assert_eq!(relay.backend(), backend);
        let addr = new_addr("tk");
        create_account(relay.store(), &addr, 1_800_000_000);
        assert!(imap_login_status(&relay, &addr, PASSWORD).starts_with("l OK"));
        assert!(imap_login_status(&relay, &addr, "wrong-password").starts_with("l NO"));
        relay.restart();
        assert!(relay.shared().store.account(&addr).is_some());
        assert!(imap_login_status(&relay, &addr, PASSWORD).starts_with("l OK"));
    }
}

#[test]
fn same_ports_on_restart_and_admin_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let mut relay = Relay::builder(relay_testkit::Backend::Epoll)
        .data_dir(&dir.path().join("data"))
        .same_ports_on_restart()
        .admin_socket(&socket)
        .start();
    assert_eq!(relay.data_dir(), dir.path().join("data"));
    let ports: Vec<u16> = [Kind::Submissions, Kind::Imaps]
        .map(|k| relay.port(k))
        .to_vec();
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
    relay.stop();
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_err());
    relay.boot();
    assert_eq!(
        [Kind::Submissions, Kind::Imaps]
            .map(|k| relay.port(k))
            .to_vec(),
        ports
    );
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
    let mut c = Client::tls(relay.addr(Kind::Submissions));
    assert_eq!(c.reply().0, 220);
}
