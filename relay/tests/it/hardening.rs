//! Hardening, against the real `relay` binary: private files whatever the umask, other local users
//! kept out of the store and the admin socket, root dropped to option `user`, one process per
//! port, and a failing log destination that does not stop the relay.

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{free_port, message, new_addr, Client, Relay, PASSWORD};
use relay::server::{Backend, Kind};
use relay_testkit::run_ok;

const RELAY: &str = env!("CARGO_BIN_EXE_relay");
/// `nobody` / `nogroup`: another local user.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    relay::privilege::is_root()
}

/// The five ports of a relay started as a process.
#[derive(Clone, Copy)]
struct Ports {
    smtp: u16,
    submission: u16,
    submissions: u16,
    imap: u16,
    imaps: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            smtp: free_port(),
            submission: free_port(),
            submissions: free_port(),
            imap: free_port(),
            imaps: free_port(),
        }
    }

    fn settings(&self) -> Vec<String> {
        vec![
            format!("mx_port={}", self.smtp),
            format!("smtp_port={}", self.submission),
            format!("smtps_port={}", self.submissions),
            format!("imap_port={}", self.imap),
            format!("imaps_port={}", self.imaps),
            "https_port=0".into(),
            "http_port=0".into(),
            "new_connections_burst=100000".into(),
        ]
    }

    fn dev_args(&self, data: &Path) -> Vec<String> {
        let mut args = vec![
            "dev".into(),
            "--io".into(),
            "epoll".into(),
            "--workers".into(),
            "2".into(),
            "--data".into(),
            data.display().to_string(),
        ];
        for s in self.settings() {
            args.push("--set".into());
            args.push(s);
        }
        args
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
}

/// A relay process, stopped (by its pid) when dropped.
struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `cmd` with its output discarded and waits until it listens on `port`.
    fn start_listening(cmd: &mut Command, port: u16) -> Proc {
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut p = Proc { child };
        wait_listening(&mut p, port);
        p
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "relay did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `port` accepts connections (or the process exits).
fn wait_listening(p: &mut Proc, port: u16) {
    let end = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(Ports::addr(port)).is_err() {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!("relay exited before listening: {status}");
        }
        assert!(Instant::now() < end, "relay not listening on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs `b` in over IMAP, submits an encrypted message from `a` to `b`, and sees it arrive.
fn deliver_one(ports: Ports) {
    let (a, b) = (new_addr("ha"), new_addr("hb"));
    let mut recv = Client::tls(Ports::addr(ports.imaps));
    assert!(recv.line().starts_with("* OK"));
    let (_, status) = recv.imap("l1", &format!("LOGIN \"{b}\" \"{PASSWORD}\""));
    assert!(status.starts_with("l1 OK"), "{status}");
    let mut send = Client::tls(Ports::addr(ports.submissions));
    assert_eq!(send.reply().0, 220);
    send.smtp_login(&a, PASSWORD);
    let (code, text) = send.submit(&a, &[&b], &message("encrypted.eml.tmpl", &a, &b));
    assert_eq!(code, 250, "{text}");
    let (lines, status) = recv.imap("s1", "SELECT INBOX");
    assert!(status.starts_with("s1 OK"), "{status}");
    assert!(lines.iter().any(|l| l == "* 1 EXISTS"), "{lines:?}");
}

/// Every path under `root` (itself included), with its metadata, not following links.
fn walk(root: &Path) -> Vec<(PathBuf, std::fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                todo.push(e.unwrap().path());
            }
        }
        out.push((p, meta));
    }
    out
}

fn assert_private_tree(root: &Path) -> usize {
    let tree = walk(root);
    for (p, meta) in &tree {
        let mode = meta.mode() & 0o7777;
        let ft = meta.file_type();
        if ft.is_dir() {
            assert_eq!(mode, 0o700, "{} is {mode:o}", p.display());
        } else if ft.is_file() || ft.is_socket() {
            assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
        } else {
            panic!("unexpected file type at {}", p.display());
        }
    }
    tree.len()
}

#[test]
fn files_under_a_fresh_data_dir_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ports = Ports::free();
    // umask 000: anything created without an explicit mode would be world-writable.
    let p = Proc::start_listening(
        Command::new("sh")
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(RELAY)
            .args(ports.dev_args(&data)),
        ports.imaps,
    );
    deliver_one(ports);
    // While running: data dir, store, segments, lock, tls/ key and cert, admin socket.
    let running = walk(&data);
    let names: Vec<String> = running
        .iter()
        .map(|(p, _)| p.strip_prefix(&data).unwrap().display().to_string())
        .collect();
    for want in [
        "store",
        "store/lock",
        "tls/key.pem",
        "tls/cert.pem",
        "admin.sock",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with(".seg")), "{names:?}");
    assert_private_tree(&data);
    assert!(p.stop().success());
    // After the shutdown checkpoint: the index files too.
    let after = walk(&data);
    assert!(
        after
            .iter()
            .any(|(p, _)| p.starts_with(data.join("store/index")) && p.is_file()),
        "no checkpoint written: {:?}",
        after.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
    );
    assert_private_tree(&data);
}

#[test]
fn sigterm_the_moment_the_ports_open_is_a_clean_stop() {
    // SIGTERM and SIGINT are caught from before the listeners open: a stop that comes while the
    // relay still prints its invite is a shutdown with a checkpoint (exit 0), not a kill.
    for round in 0..5 {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let ports = Ports::free();
        let p = Proc::start_listening(Command::new(RELAY).args(ports.dev_args(&data)), ports.imaps);
        let status = p.stop();
        assert!(status.success(), "round {round}: {status}");
        assert!(
            walk(&data)
                .iter()
                .any(|(p, _)| p.starts_with(data.join("store/index")) && p.is_file()),
            "round {round}: no checkpoint written"
        );
    }
}

#[test]
fn existing_files_with_wide_modes_are_narrowed_on_start() {
    let mut relay = Relay::start(Backend::Epoll, &[]);
    relay.stop();
    let data = relay.data_dir().to_owned();
    for (p, meta) in walk(&data) {
        let mode = if meta.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // Restart on the same data directory, as an upgraded relay would.
    let ports = Ports::free();
    let p = Proc::start_listening(Command::new(RELAY).args(ports.dev_args(&data)), ports.imaps);
    let n = assert_private_tree(&data);
    assert!(n > 5, "{n} paths");
    // The narrowed store still serves.
    deliver_one(ports);
    assert!(p.stop().success());
}

/// Runs `cmd` as `nobody` (supplementary groups cleared by std when started as root).
fn as_nobody(cmd: &mut Command) -> Output {
    cmd.uid(NOBODY).gid(NOBODY).output().unwrap()
}

/// `relay admin --socket <socket> config`.
fn admin_config(socket: &Path) -> Command {
    let mut cmd = Command::new(RELAY);
    cmd.args(["admin", "--socket"]).arg(socket).arg("config");
    cmd
}

fn text(o: &Output) -> String {
    format!(
        "status {}, stdout {:?}, stderr {:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn another_user_can_neither_read_the_store_nor_use_the_admin_socket() {
    if !is_root() {
        eprintln!("skipping: needs root to run a command as nobody");
        return;
    }
    let relay = Relay::start(Backend::Epoll, &[]);
    let ports = Ports {
        smtp: relay.addr(Kind::Mx).port(),
        submission: relay.addr(Kind::Submission).port(),
        submissions: relay.addr(Kind::Submissions).port(),
        imap: relay.addr(Kind::Imap).port(),
        imaps: relay.addr(Kind::Imaps).port(),
    };
    deliver_one(ports);
    let data = relay.data_dir().to_owned();
    let socket = data.join("admin.sock");
    let files: Vec<PathBuf> = walk(&data)
        .into_iter()
        .filter(|(_, m)| m.is_file())
        .map(|(p, _)| p)
        .collect();
    assert!(files
        .iter()
        .any(|f| f.extension().is_some_and(|e| e == "seg")));
    // The command itself works for nobody on a file nobody may read.
    let control = as_nobody(Command::new("cat").arg("/etc/passwd"));
    assert!(control.status.success(), "{}", text(&control));
    let admin = |socket: &Path| as_nobody(&mut admin_config(socket));
    // Root (the relay's own user here) is served.
    run_ok(&mut admin_config(&socket));
    // As created: the 0700 data directory keeps nobody out of everything.
    for f in &files {
        let o = as_nobody(Command::new("cat").arg(f));
        assert!(!o.status.success(), "{}: {}", f.display(), text(&o));
        assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    }
    let o = admin(&socket);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    // With every directory opened up by mistake, each file's 0600 still holds, and the socket's
    // peer check refuses nobody even when its mode lets them connect.
    for (p, meta) in walk(&data) {
        if meta.is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for f in &files {
        let o = as_nobody(Command::new("cat").arg(f));
        assert!(!o.status.success(), "{}: {}", f.display(), text(&o));
        assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = admin(&socket);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("forbidden"), "{}", text(&o));
    // The relay keeps serving its own user.
    run_ok(&mut admin_config(&socket));
}

#[test]
fn a_second_relay_on_the_same_ports_fails_naming_the_port() {
    for backend in crate::harness::backends() {
        let first = Relay::start(backend, &[]);
        let taken = first.addr(Kind::Imaps).port();
        // Another data directory (no store lock conflict), every other port free.
        let tmp = tempfile::tempdir().unwrap();
        let ports = Ports {
            imaps: taken,
            ..Ports::free()
        };
        let io = match backend {
            Backend::Epoll => "epoll",
            Backend::Uring => "uring",
        };
        let mut args = ports.dev_args(tmp.path());
        args[2] = io.into();
        let mut child = Command::new(RELAY)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success(), "{backend:?}: second relay started");
        assert!(stderr.contains("address in use"), "{stderr}");
        assert!(stderr.contains(&taken.to_string()), "{stderr}");
        // The first one keeps serving, and got every connection.
        for _ in 0..5 {
            let mut c = Client::tls(first.addr(Kind::Imaps));
            assert!(c.line().starts_with("* OK"));
        }
        deliver_one(Ports {
            smtp: first.addr(Kind::Mx).port(),
            submission: first.addr(Kind::Submission).port(),
            submissions: first.addr(Kind::Submissions).port(),
            imap: first.addr(Kind::Imap).port(),
            imaps: taken,
        });
    }
}

/// A system user created for one test and removed after it.
struct TempUser {
    name: String,
}

impl TempUser {
    fn create() -> Option<TempUser> {
        let name = format!("rlyt{}", std::process::id());
        let ok = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", &name])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TempUser { name })
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn serve_ini(dir: &Path, data: &Path, ports: Ports, user: &str) -> PathBuf {
    let mut ini = format!(
        "[params]\nmail_domain = 127.0.0.1\nlisten = 127.0.0.1\ndata_dir = {}\nuser = {user}\n\
         max_load_1m = 1000\nmin_free_disk_space = 1M\nmin_available_memory = 1M\n\
         nocreate_file = {}\nturn_port = {}\n",
        data.display(),
        dir.join("nocreate").display(),
        // TURN too (its secret is made after the switch to the user), on a UDP port of its own:
        // `relay serve` refuses to start when its TURN port is taken.
        relay_testkit::free_udp_port()
    );
    for s in ports.settings() {
        ini.push_str(&s);
        ini.push('\n');
    }
    let path = dir.join("chatmail.ini");
    std::fs::write(&path, ini).unwrap();
    path
}

/// A free port below 1024, which only root may bind.
fn free_privileged_port() -> u16 {
    (900..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 900..1000")
}

/// `Uid:` / `Gid:` / `Groups:` of a process from /proc.
fn ids(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

#[test]
fn serve_started_as_root_drops_to_its_user_after_binding() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let Some(user) = TempUser::create() else {
        eprintln!("skipping: useradd failed");
        return;
    };
    let account = relay::privilege::RelayUser::lookup(&user.name).unwrap();
    let uid = account.uid();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = tmp.path().join("data");
    // A data directory left by an earlier relay that ran as root: handed over at start.
    std::fs::create_dir_all(data.join("store")).unwrap();
    let ports = Ports {
        imaps: free_privileged_port(),
        ..Ports::free()
    };
    let ini = serve_ini(tmp.path(), &data, ports, &user.name);
    let p = Proc::start_listening(
        Command::new(RELAY)
            .args(["serve", "--io", "epoll", "--workers", "2", "--config"])
            .arg(&ini),
        ports.imaps,
    );
    // The port is listening from the moment it is bound, still as root: wait for the switch.
    let switched = Instant::now();
    while ids(p.pid()).0 != vec![uid; 4] {
        assert!(
            switched.elapsed() < Duration::from_secs(20),
            "still not running as the user"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every thread runs as the user (the status of the main thread; /proc/<pid>/task/* likewise).
    for task in std::fs::read_dir(format!("/proc/{}/task", p.pid())).unwrap() {
        let tid: u32 = task.unwrap().file_name().to_str().unwrap().parse().unwrap();
        // A short-lived thread (a blocking-pool worker) may have ended since the listing.
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/task/{tid}/status", p.pid()))
        else {
            continue;
        };
        let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert_eq!(
            uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
            vec![uid.to_string(); 4],
            "thread {tid}"
        );
    }
    let (uids, gids, groups) = ids(p.pid());
    assert_eq!(uids, vec![uid; 4]);
    assert!(gids.iter().all(|g| *g == gids[0] && *g != 0), "{gids:?}");
    assert_eq!(groups, vec![gids[0]], "supplementary groups");
    // Serves on the privileged port it bound as root, and writes its store as the user.
    deliver_one(ports);
    assert!(data.join("turn/secret").exists(), "the TURN secret");
    for (path, meta) in walk(&data) {
        assert_eq!(meta.uid(), uid, "{} not owned by the user", path.display());
    }
    assert!(p.stop().success());
}

#[test]
fn serve_refuses_to_start_when_its_user_is_missing() {
    if !is_root() {
        eprintln!("skipping: needs root (a non-root relay keeps its user)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let ini = serve_ini(
        tmp.path(),
        &tmp.path().join("data"),
        ports,
        "no-such-relay-user",
    );
    let o = Command::new(RELAY)
        .args(["serve", "--io", "epoll", "--config"])
        .arg(&ini)
        .output()
        .unwrap();
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no-such-relay-user"), "{err}");
    assert!(err.contains("useradd --system"), "{err}");
    assert!(err.contains("user = root"), "{err}");
    assert!(
        !tmp.path().join("data/store").exists(),
        "store opened anyway"
    );
}

#[test]
fn serve_with_user_root_keeps_running_as_root() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let ini = serve_ini(tmp.path(), &tmp.path().join("data"), ports, "root");
    let p = Proc::start_listening(
        Command::new(RELAY)
            .args(["serve", "--io", "epoll", "--workers", "1", "--config"])
            .arg(&ini),
        ports.imaps,
    );
    deliver_one(ports);
    assert_eq!(ids(p.pid()).0, vec![0; 4]);
    assert!(p.stop().success());
}

#[test]
fn closed_stdout_and_stderr_do_not_stop_the_relay() {
    let tmp = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let mut child = Command::new(RELAY)
        .args(ports.dev_args(tmp.path()))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read ends: every write to stdout or stderr now fails with EPIPE.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let mut p = Proc { child };
    wait_listening(&mut p, ports.imaps);
    for _ in 0..3 {
        deliver_one(ports);
    }
    assert!(p.child.try_wait().unwrap().is_none(), "relay died");
    assert!(p.stop().success());
}

#[test]
fn a_log_file_on_a_full_disk_does_not_stop_the_relay() {
    if !is_root() {
        eprintln!("skipping: needs root for a tmpfs in a mount namespace");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    let data = tmp.path().join("data");
    let ports = Ports::free();
    // A 64 KiB tmpfs, filled up, holds the log file; the mount exists only in the relay's mount
    // namespace.
    let script = "mount -t tmpfs -o size=64k tmpfs \"$1\" || exit 97; \
                  head -c 1048576 /dev/zero > \"$1/fill\" 2>/dev/null; \
                  dir=\"$1\"; shift; exec \"$@\" 2>>\"$dir/relay.log\"";
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", script, "sh"])
        .arg(&mnt)
        .arg(RELAY)
        .args(ports.dev_args(&data))
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect(Ports::addr(ports.imaps)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            if status.code() == Some(97) {
                eprintln!("skipping: cannot mount a tmpfs here: {err}");
                return;
            }
            panic!("relay exited: {status} {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child.stderr.take());
    let p = Proc { child };
    for _ in 0..3 {
        deliver_one(ports);
    }
    // `unshare` and the shell exec the relay (same pid); its mount namespace is reachable through
    // /proc/<pid>/root. Every log write failed: the file is empty and the disk full.
    let inside =
        PathBuf::from(format!("/proc/{}/root", p.pid())).join(mnt.strip_prefix("/").unwrap());
    let log = std::fs::metadata(inside.join("relay.log")).unwrap();
    assert_eq!(log.len(), 0, "the log file got data: the disk was not full");
    assert!(std::fs::metadata(inside.join("fill")).unwrap().len() > 32 * 1024);
    let status = p.stop();
    assert!(status.success(), "{status}");
}
