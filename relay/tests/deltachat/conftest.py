"""Fixtures for the end-to-end tests with the real Delta Chat core.

The server under test is either the relay binary (`RELAY_E2E_TARGET=relay`, the default: started
here as `$RELAY_BIN dev --data <tmp> --io $RELAY_IO`) or the Postfix+Dovecot baseline
(`RELAY_E2E_TARGET=baseline`, started beforehand with /work/shared/tools/baseline-up.sh and
`BASELINE_AUTH=any`). Delta Chat accounts live in one `deltachat-rpc-server` per test.

Network safety (chatmail.md §12.4, §12.8): accounts get FULL manual settings with the IP address
127.0.0.1 as host (no DNS name, no autoconfig), `autorelay` is off and `init_transports()` is never
called. run.sh additionally runs the relay target inside a network namespace with only loopback.

Every wait has a deadline: event queues are read with `get(timeout=...)`, blocking RPC calls run in
a helper thread that is abandoned (and the rpc-server killed) when its deadline passes.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import random
import re
import shlex
import shutil
import signal
import socket
import string
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest
from deltachat_rpc_client import DeltaChat, EventType, Rpc
from deltachat_rpc_client.account import Account

REPO_ROOT = Path(__file__).resolve().parents[3]
TARGET = os.environ.get("RELAY_E2E_TARGET", "relay")
RELAY_IO = os.environ.get("RELAY_IO", "uring")
RELAY_BIN = Path(os.environ.get("RELAY_BIN") or REPO_ROOT / "target/debug/relay")
# Multiplies every deadline (e.g. 3 for a debug build on a busy machine).
TIME_SCALE = float(os.environ.get("RELAY_E2E_TIME_SCALE", "1"))
ARTIFACTS = Path(os.environ.get("RELAY_E2E_ARTIFACTS") or REPO_ROOT / "target/e2e-logs" / f"{TARGET}-{RELAY_IO}")
# Baseline only: where raw delivered messages are copied (empty: no captures).
CAPTURE_DIR = os.environ.get("RELAY_E2E_CAPTURE_DIR", "")

HOST = "127.0.0.1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NOTABLE = re.compile(r"panicked|\bERROR\b|\bWARN\b|error:|fatal|reject|refus|\b[45]\d\d[ -][0-9]", re.IGNORECASE)
LOCALPART_CHARS = string.ascii_lowercase + string.digits

# Measurements printed in the terminal summary (never asserted).
METRICS: list[str] = []


def deadline(seconds: float) -> float:
    """Absolute monotonic deadline, scaled by RELAY_E2E_TIME_SCALE."""
    return time.monotonic() + seconds * TIME_SCALE


def call_with_deadline(fn: Callable, timeout: float, what: str):
    """Run a blocking call in a helper thread; raise TimeoutError when it does not return in time."""
    result: dict = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=run, daemon=True, name=f"deadline:{what}")
    t.start()
    t.join(timeout * TIME_SCALE)
    if t.is_alive():
        raise TimeoutError(f"{what}: no answer within {timeout * TIME_SCALE:.0f} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    """The server under test, as the tests see it."""

    name: str
    domain: str  # the part after '@'
    imaps_port: int
    submissions_port: int
    all_ports: list[int]
    log_files: list[Path]
    maildir_root: Optional[Path] = None  # baseline only: <root>/<domain>/<localpart>/Maildir
    proc: Optional[subprocess.Popen] = None
    data_dir: Optional[Path] = None  # relay only
    host: str = HOST  # where clients connect (an IP, or a name in /etc/hosts)
    io: str = RELAY_IO  # relay only: its I/O backend
    extra_args: list[str] = field(default_factory=list)  # relay only: `--set` options
    listen: str = HOST  # relay only: the address its ports are bound to
    cert_checks: str = "acceptInvalidCertificates"  # Delta Chat's certificateChecks for it
    echo_bot: bool = True  # relay only: let `relay dev` start its echo bot

    def restart(self, sig: int = signal.SIGTERM) -> None:
        """Relay only: stop the process with `sig` (SIGKILL: a crash) and start it on the same data."""
        assert self.proc is not None and self.data_dir is not None, "only the relay can be restarted here"
        self.check_alive()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(f"{self.name} did not stop within 10 s of signal {sig}") from None
        self.proc = spawn_relay(
            self.data_dir, self.log_files[0], io=self.io, extra=self.extra_args, listen=self.listen,
            ports=self.all_ports, echo_bot=self.echo_bot,
        )

    def admin(self, *args: str, timeout: float = 20) -> str:
        """Relay only: `relay admin --socket <data>/admin.sock ARGS...`; its stdout (fails the test
        on a non-zero exit)."""
        assert self.data_dir is not None, "only the relay has an admin socket"
        cmd = [str(RELAY_BIN), "admin", "--socket", str(self.data_dir / "admin.sock"), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * TIME_SCALE)
        assert r.returncode == 0, f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr}"
        return r.stdout

    def new_credentials(self) -> tuple[str, str, str]:
        """A fresh account: (address, localpart, password); created by its first login."""
        localpart = "".join(random.choice(LOCALPART_CHARS) for _ in range(9))
        password = "".join(random.choice(LOCALPART_CHARS) for _ in range(20))
        return f"{localpart}@{self.domain}", localpart, password

    def log_mark(self) -> dict:
        """Current size of each log file (to show only what a test produced)."""
        return {p: (p.stat().st_size if p.exists() else 0) for p in self.log_files}

    def log_since(self, mark: dict, max_chars: int = 60_000) -> str:
        """The log lines written since `mark`: first the notable ones (panics, errors, warnings,
        rejections), then the text itself, cut to its last `max_chars`."""
        out = []
        for p in self.log_files:
            if not p.exists():
                continue
            with open(p, "rb") as f:
                f.seek(mark.get(p, 0))
                data = ANSI.sub("", f.read().decode(errors="replace"))
            lines = data.splitlines()
            notable = [
                line for i, line in enumerate(lines)
                if NOTABLE.search(line) or (i > 0 and "panicked at" in lines[i - 1])
            ]
            if notable:
                shown = notable[:80] + ([f"[... {len(notable) - 80} more notable lines ...]"] if len(notable) > 80 else [])
                out.append(f"==== {p}: notable lines ====\n" + "\n".join(shown))
            if len(data) > max_chars:
                data = f"[... {len(data) - max_chars} chars cut ...]\n" + data[-max_chars:]
            out.append(f"==== {p} ====\n{data}")
        return "\n".join(out)

    def check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with status {self.proc.returncode}")


def wait_ports(ports: list[int], timeout: float, proc: Optional[subprocess.Popen] = None, host: str = HOST):
    end = deadline(timeout)
    pending = list(ports)
    while pending:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        port = pending[0]
        try:
            with socket.create_connection((host, port), timeout=1):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"ports {pending} on {host} not accepting after {timeout * TIME_SCALE:.0f} s")
        time.sleep(0.05)


RELAY_PORTS = [10025, 10587, 10465, 10143, 10993]


def spawn_relay(
    data: Path,
    log: Path,
    io: str = RELAY_IO,
    extra: tuple[str, ...] | list[str] = (),
    listen: str = HOST,
    ports: list[int] = RELAY_PORTS,
    echo_bot: bool = True,
) -> subprocess.Popen:
    """Start `relay dev` on `data` with `--set` options `extra`, appending its output to `log`;
    return once `ports` accept on `listen`. Without `echo_bot` the relay does not find
    deltachat-rpc-server on PATH, so it starts no echo bot (one rpc-server less per relay)."""
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info,relay=debug")
    env.setdefault("NO_COLOR", "1")
    if not echo_bot:
        venv_bin = str(Path(shutil.which("deltachat-rpc-server") or "/nonexistent").parent)
        env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep) if d != venv_bin)
    cmd = [str(RELAY_BIN), "dev", "--data", str(data), "--io", io]
    for kv in extra:
        cmd += ["--set", kv]
    with open(log, "ab") as logf:
        logf.write(f"# {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,
        )
    try:
        wait_ports(ports, 30, proc, host=listen)
    except Exception:
        stop_process(proc)
        print(log.read_text(errors="replace")[-20_000:])
        raise
    return proc


def die_with_parent() -> None:
    """In the child before exec: SIGKILL it when pytest dies (e.g. pytest-timeout's os._exit), so a
    leftover relay never holds the ports of the next run."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


E2E_APPVERSIONS = {
    "clients": [
        {
            "clientId": "deltachat",
            "sources": [
                {
                    "sourceId": "e2e",
                    "versionInteger": 4000000000,
                    "versionString": "99.1.2",
                    "downloadUrl": "https://download.delta.chat/e2e.apk",
                }
            ],
        }
    ]
}


def start_relay(tmp: Path) -> Server:
    if not RELAY_BIN.exists():
        pytest.exit(f"relay binary {RELAY_BIN} not found (cargo build -p relay --bin relay)", returncode=3)
    for port in RELAY_PORTS:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            pytest.exit(f"port {port} on {HOST} is already in use (a leftover relay?)", returncode=3)
    data = tmp / "relay-data"
    data.mkdir()
    # The operator's app versions file (METADATA /shared/vendor/deltachat/appversions), read at
    # start: test_relay_metadata.py finds this source through core.
    (data / "appversions.json").write_text(json.dumps(E2E_APPVERSIONS))
    log = tmp / "relay.log"
    proc = spawn_relay(data, log)
    return Server(
        name=f"relay ({RELAY_IO})",
        domain=f"[{HOST}]",
        imaps_port=10993,
        submissions_port=10465,
        all_ports=RELAY_PORTS,
        log_files=[log],
        proc=proc,
        data_dir=data,
    )


def stop_process(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def baseline_server() -> Server:
    root = Path(os.environ.get("BASELINE_ROOT", "/var/lib/baseline-mail"))
    ports = [2525, 2587, 2465, 2143, 2993]
    try:
        wait_ports(ports, 2)
    except TimeoutError as e:
        pytest.exit(
            f"baseline not running ({e}); start it with "
            "BASELINE_AUTH=any BASELINE_NOTIFY_DELAY_MS=0 /work/shared/tools/baseline-up.sh",
            returncode=3,
        )
    return Server(
        name="baseline (Postfix+Dovecot)",
        domain="_baseline.test",
        imaps_port=2993,
        submissions_port=2465,
        all_ports=ports,
        log_files=[root / "log/postfix.log", root / "log/dovecot.log"],
        maildir_root=root / "mail",
    )


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The server under test, for the whole session."""
    if TARGET == "baseline":
        srv = baseline_server()
        yield srv
        return
    if TARGET != "relay":
        pytest.exit(f"RELAY_E2E_TARGET must be relay or baseline, not {TARGET!r}", returncode=3)
    tmp = tmp_path_factory.mktemp("relay")
    srv = start_relay(tmp)
    try:
        yield srv
    finally:
        stop_process(srv.proc)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(srv.log_files[0], ARTIFACTS / "relay.log")


# --------------------------------------------------------------------------- relays on standard ports
#
# Federation and onboarding tests start relays of their own, each on a loopback address of its
# own with every port standard (other relays deliver to ports 25 and 443; the core's autoconfig
# asks port 443). That needs run.sh's network namespace (nothing else listens there, only
# loopback exists), its hosts file (`hosts` beside this file, bind-mounted over /etc/hosts by
# `ip netns exec`) and root (ports below 1024, nft).

NETNS = os.environ.get("RELAY_E2E_NETNS_NAME", "")
IN_CI = os.environ.get("CI", "") not in ("", "0", "false")
TEST_DNS_BIN = Path(os.environ.get("TEST_DNS_BIN") or REPO_ROOT / "target/debug/test-dns")
# The I/O backends of the first and the second relay of a pair (run.sh: this run's backend and the
# next one of RELAY_IO_BACKENDS), so that mail crosses from one backend to the other both ways.
PAIR_IO = (os.environ.get("RELAY_IO_PAIR") or f"{RELAY_IO} {RELAY_IO}").split()
STANDARD_PORTS = {
    "mx_port": 25,
    "smtp_port": 587,
    "smtps_port": 465,
    "imap_port": 143,
    "imaps_port": 993,
    "https_port": 443,
    "http_port": 80,
}
HOSTS_FILE = Path(__file__).with_name("hosts")


def not_here(reason: str) -> None:
    """Skip with `reason`; in CI (which has every prerequisite) fail instead."""
    if IN_CI:
        pytest.fail(f"{reason} (CI must run this test)", pytrace=False)
    pytest.skip(reason)


def hosts_names() -> set[str]:
    """The names of the hosts file run.sh installs for the namespace."""
    names = set()
    for line in HOSTS_FILE.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(fields[1:])
    return names


def need_standard_ports() -> None:
    """Skip (fail in CI) unless this run may bind ports 25/443 on 127.0.0.x and the core resolves
    the test names locally."""
    if TARGET != "relay":
        not_here("starts relays of its own (relay target only)")
    if not NETNS:
        not_here("needs run.sh's network namespace (standard ports on 127.0.0.x, names in /etc/hosts)")
    if os.geteuid() != 0:
        not_here("needs root (ports 25 and 443)")
    have = set(Path("/etc/hosts").read_text().split())
    missing = sorted(hosts_names() - have)
    if missing:
        not_here(f"/etc/hosts lacks {missing} (run.sh installs {HOSTS_FILE} for its namespace)")


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        not_here(f"{name} is not installed (apt-get install {package}; .ci/run does)")
    return path


def standard_relay(tmp: Path, ip: str, domain: str, io: str, extra: tuple[str, ...] = ()) -> Server:
    """`relay dev` for `domain` (an IPv4 address, or a `_` name that /etc/hosts maps to `ip`)
    listening on `ip` with every port standard; no echo bot."""
    if not RELAY_BIN.exists():
        pytest.exit(f"relay binary {RELAY_BIN} not found (cargo build -p relay --bin relay)", returncode=3)
    literal = domain == ip
    data = tmp / f"relay-{domain}"
    data.mkdir()
    log = tmp / f"relay-{domain}.log"
    args = [f"listen={ip}", f"mail_domain={domain}", *(f"{k}={v}" for k, v in STANDARD_PORTS.items()), *extra]
    ports = [25, 465, 993, 443]
    proc = spawn_relay(data, log, io=io, extra=args, listen=ip, ports=ports, echo_bot=False)
    return Server(
        name=f"relay {domain} ({io})",
        domain=f"[{ip}]" if literal else domain,
        imaps_port=993,
        submissions_port=465,
        all_ports=ports,
        log_files=[log],
        proc=proc,
        data_dir=data,
        host=ip if literal else domain,
        io=io,
        extra_args=args,
        listen=ip,
        cert_checks="acceptInvalidCertificates" if literal else "automatic",
        echo_bot=False,
    )


class TestDns:
    """The `test-dns` binary (testkit's DNS server as a process): UDP and TCP on 127.0.0.1, zone
    changed by commands on its standard input; it stops when that pipe closes."""

    __test__ = False  # not a test class

    def __init__(self, commands: list[str], log: Path):
        if not TEST_DNS_BIN.exists():
            pytest.exit(f"{TEST_DNS_BIN} not found (cargo build -p relay-testkit --bin test-dns)", returncode=3)
        self.stderr = open(log, "ab")
        self.proc = subprocess.Popen(
            [str(TEST_DNS_BIN), *commands],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            preexec_fn=die_with_parent,
        )
        self.addr = call_with_deadline(self.proc.stdout.readline, 10, "test-dns start").strip()
        assert re.fullmatch(r"127\.0\.0\.1:\d+", self.addr), f"test-dns printed {self.addr!r}"

    def command(self, line: str) -> str:
        """Apply one command (`add NAME TYPE VALUE`, `remove NAME`, `count NAME`); returns its
        answer (`ok`, or the count)."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = call_with_deadline(self.proc.stdout.readline, 10, f"test-dns {line!r}").strip()
        assert not answer.startswith("error") and answer, f"test-dns {line!r}: {answer!r}"
        return answer

    def queries_for(self, name: str) -> int:
        return int(self.command(f"count {name}"))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.stderr.close()


@dataclass
class Pair:
    """Two relays that deliver to each other (and the DNS server of the `_` names)."""

    r1: Server
    r2: Server
    dns: Optional[TestDns] = None

    @property
    def servers(self) -> list[Server]:
        return [self.r1, self.r2]

    def restart(self) -> None:
        """Restart both (a relay forgets which hosts lack /mxdeliv, and idle connections)."""
        for r in self.servers:
            r.restart()


def keep_logs(servers: list[Server]) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for s in servers:
        for log in s.log_files:
            if log.exists():
                shutil.copy(log, ARTIFACTS / log.name)


@pytest.fixture(scope="session")
def ip_pair(tmp_path_factory):
    """Relays for 127.0.0.2 and 127.0.0.3 (addresses `user@[127.0.0.x]`, no DKIM)."""
    need_standard_ports()
    tmp = tmp_path_factory.mktemp("ip-pair")
    r1 = standard_relay(tmp, "127.0.0.2", "127.0.0.2", PAIR_IO[0])
    try:
        r2 = standard_relay(tmp, "127.0.0.3", "127.0.0.3", PAIR_IO[-1])
    except BaseException:
        stop_process(r1.proc)
        raise
    pair = Pair(r1, r2)
    try:
        yield pair
    finally:
        for r in pair.servers:
            stop_process(r.proc)
        keep_logs(pair.servers)


def relay_dns(relay: Server, *args: str) -> subprocess.CompletedProcess:
    """`relay dns --data <data> --set ...` with the relay's own options (`args`: e.g. --check)."""
    sets = [x for kv in relay.extra_args for x in ("--set", kv)]
    cmd = [str(RELAY_BIN), "dns", "--data", str(relay.data_dir), *sets, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60 * TIME_SCALE)


def publish_zone(dns: TestDns, relay: Server) -> int:
    """Put every record `relay dns` prints for `relay` (A, MX, its DKIM key made at the first
    start, CNAMEs, SPF, DMARC, SRV...) into test-dns, as an operator would into the zone; then
    `relay dns --check` must find them all. Returns the number of records."""
    # The relay makes its DKIM key at its first start, while its ports already accept; until then
    # `relay dns` prints the key's record as a comment ("no DKIM key yet").
    key = relay.data_dir / "dkim" / "opendkim.private"
    end = deadline(30)
    while not key.exists():
        assert time.monotonic() < end, f"{relay.name} made no DKIM key ({key}) within 30 s of starting"
        time.sleep(0.05)
    r = relay_dns(relay)
    assert r.returncode == 0, f"relay dns: exit {r.returncode}: {r.stderr}"
    assert f"\nopendkim._domainkey.{relay.domain}. " in r.stdout, f"no DKIM record in:\n{r.stdout}"
    n = 0
    for line in r.stdout.splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        name, _ttl, _class, kind, *rdata = shlex.split(line)
        # A TXT record's character-strings form one value.
        value = "".join(rdata) if kind == "TXT" else " ".join(rdata)
        dns.command(f"add {name} {kind} {value}")
        n += 1
    assert n > 0, f"relay dns printed no record:\n{r.stdout}"
    check = relay_dns(relay, "--check")
    assert check.returncode == 0, f"relay dns --check after publishing:\n{check.stdout}\n{check.stderr}"
    return n


@pytest.fixture(scope="session")
def named_pair(tmp_path_factory):
    """Relays for `_r1.test` (127.0.0.4) and `_r2.test` (127.0.0.5) that resolve through test-dns
    (option `dns_server`), where each relay's records are what `relay dns` prints for it (so its
    DKIM key is the one it signs with); the core finds the names in /etc/hosts."""
    need_standard_ports()
    tmp = tmp_path_factory.mktemp("named-pair")
    dns = TestDns([], tmp / "test-dns.log")
    relays: list[Server] = []
    try:
        names = {"_r1.test": "127.0.0.4", "_r2.test": "127.0.0.5"}
        for (domain, ip), io in zip(names.items(), (PAIR_IO[0], PAIR_IO[-1])):
            relays.append(standard_relay(tmp, ip, domain, io, extra=(f"dns_server={dns.addr}",)))
            publish_zone(dns, relays[-1])
        pair = Pair(relays[0], relays[1], dns)
        yield pair
    finally:
        for r in relays:
            stop_process(r.proc)
        dns.stop()
        keep_logs(relays)


ONBOARD_DOMAIN = "_onboard.test"
ONBOARD_IP = "127.0.0.6"


@pytest.fixture(scope="session")
def onboard_relay(tmp_path_factory):
    """A relay for `_onboard.test` (127.0.0.6, standard ports, a self-signed certificate for the
    name and its `www.`/`mta-sts.`/`autoconfig.` names, all in the namespace's /etc/hosts), for the
    core's sign-up paths: `/new`, autoconfig on port 443, IMAP and SMTP by ALPN on 443."""
    need_standard_ports()
    tmp = tmp_path_factory.mktemp("onboard")
    relay = standard_relay(tmp, ONBOARD_IP, ONBOARD_DOMAIN, PAIR_IO[0])
    try:
        yield relay
    finally:
        stop_process(relay.proc)
        keep_logs([relay])


class Firewall:
    """nft rules in the test's network namespace: one table of our own, removed at the end."""

    def __init__(self, nft: str):
        self.nft = nft
        self.table = f"relay_e2e_{os.getpid()}"
        self.handles: dict[str, int] = {}
        self.run(
            f"add table inet {self.table}\n"
            f"add chain inet {self.table} out {{ type filter hook output priority 0; policy accept; }}\n"
        )

    def run(self, script: str) -> str:
        r = subprocess.run([self.nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=20)
        assert r.returncode == 0, f"nft -f: {r.stderr}\n{script}"
        return r.stdout

    def _rule(self, name: str, match: str, verdict: str) -> None:
        self.run(
            f"add counter inet {self.table} {name}\n"
            f"add rule inet {self.table} out {match} counter name {name} {verdict} comment \"{name}\"\n"
        )

    def block(self, ip: str, port: int) -> str:
        """Refuse TCP connections to ip:port at once (a reset, as from a closed port)."""
        name = f"block_{ip.replace('.', '_')}_{port}"
        self._rule(name, f"ip daddr {ip} tcp dport {port}", "reject with tcp reset")
        return name

    def count_syn(self, ip: str, port: int) -> str:
        """Count connection attempts (SYN) to ip:port, letting them pass."""
        name = f"syn_{ip.replace('.', '_')}_{port}"
        self._rule(name, f"ip daddr {ip} tcp dport {port} tcp flags & (syn | ack) == syn", "")
        return name

    def unblock(self, name: str) -> None:
        """Remove the rule `name` (its counter stays readable)."""
        out = subprocess.run(
            [self.nft, "-a", "list", "chain", "inet", self.table, "out"], capture_output=True, text=True, timeout=20
        ).stdout
        m = re.search(rf'comment "{re.escape(name)}" # handle (\d+)', out)
        assert m, f"no rule {name} in\n{out}"
        self.run(f"delete rule inet {self.table} out handle {m.group(1)}\n")

    def packets(self, name: str) -> int:
        r = subprocess.run(
            [self.nft, "-j", "list", "counter", "inet", self.table, name], capture_output=True, text=True, timeout=20
        )
        assert r.returncode == 0, r.stderr
        return next(x["counter"]["packets"] for x in json.loads(r.stdout)["nftables"] if "counter" in x)

    def close(self) -> None:
        subprocess.run([self.nft, "delete", "table", "inet", self.table], capture_output=True, timeout=20)


@pytest.fixture
def firewall():
    """nft rules for one test; all removed at its end, whatever happened."""
    need_standard_ports()
    fw = Firewall(need_tool("nft", "nftables"))
    try:
        yield fw
    finally:
        fw.close()


# --------------------------------------------------------------------------- Delta Chat side


class StampedQueue(queue.Queue):
    """An event queue that remembers when each event arrived from the rpc-server, so the event
    log in failure reports shows arrival times, not the time a test got around to reading it."""

    last_stamp: float = 0.0

    def _put(self, item):
        super()._put((time.time(), item))

    def _get(self):
        stamp, item = super()._get()
        self.last_stamp = stamp
        return item


class StampedRpc(Rpc):
    def get_queue(self, account_id: int) -> queue.Queue:
        if account_id not in self.event_queues:
            self.event_queues[account_id] = StampedQueue()
        return self.event_queues[account_id]


class Peer:
    """A configured, online Delta Chat account plus deadline-bounded waits on its events."""

    def __init__(self, label: str, account: Account, addr: str, password: str, localpart: str):
        self.label = label
        self.account = account
        self.addr = addr
        self.password = password
        self.localpart = localpart
        self.seen: list[str] = []  # every event seen, one line each (attached to failure reports)

    @property
    def queue(self) -> queue.Queue:
        return self.account._rpc.get_queue(self.account.id)

    def _note(self, ev) -> None:
        kind = ev.get("kind")
        detail = {k: v for k, v in ev.items() if k != "kind"}
        stamp = getattr(self.queue, "last_stamp", 0.0) or time.time()
        hms = time.strftime("%H:%M:%S", time.localtime(stamp)) + f".{int(stamp * 1000) % 1000:03d}"
        self.seen.append(f"{hms} {kind} {detail}")

    def drain(self) -> None:
        """Record events still queued (for failure reports)."""
        while True:
            try:
                ev = self.queue.get_nowait()
            except queue.Empty:
                return
            self._note(ev)

    def wait_event(self, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
        end = deadline(timeout)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.label} ({self.addr}): no {what} within {timeout * TIME_SCALE:.0f} s")
            try:
                ev = self.queue.get(timeout=left)
            except queue.Empty:
                continue
            self._note(ev)
            if pred(ev):
                return ev

    def wait_incoming(self, text: str, timeout: float = 30) -> dict:
        """Wait until a message with this text is received; return its snapshot."""

        def is_it(ev):
            if ev.get("kind") != EventType.INCOMING_MSG:
                return False
            snap = self.snapshot(ev["msgId"])
            return snap.text == text

        ev = self.wait_event(is_it, timeout, f"incoming message {text!r}")
        return self.snapshot(ev["msgId"])

    def snapshot(self, msg_id: int):
        return call_with_deadline(
            lambda: self.account.get_message_by_id(msg_id).get_snapshot(), 20, f"{self.label}: get_snapshot"
        )


class ConfigureFailed(AssertionError):
    """Core reported ConfigureProgress 0 (login refused or server unreachable)."""


def transport_params(server: Server, addr: str, password: str) -> dict:
    """Full manual settings: host (an IP, or a `_` name in /etc/hosts), both ports and TLS modes;
    no certificate check for an IP host, the name check of `automatic` for a `_` name (§12.3)."""
    return {
        "addr": addr,
        "password": password,
        "imapServer": server.host,
        "imapPort": server.imaps_port,
        "imapSecurity": "ssl",
        "imapUser": addr,
        "smtpServer": server.host,
        "smtpPort": server.submissions_port,
        "smtpSecurity": "ssl",
        "smtpUser": addr,
        "smtpPassword": password,
        "certificateChecks": server.cert_checks,
    }


@dataclass
class DcProcess:
    rpc: Rpc
    dc: DeltaChat
    stderr_path: Path
    peers: list[Peer] = field(default_factory=list)


@pytest.fixture
def dcproc(tmp_path):
    """One deltachat-rpc-server per test; stderr goes to a file (gotcha §12.8.1)."""
    stderr_path = tmp_path / "rpc-server.stderr"
    stderr = open(stderr_path, "wb")
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")
    rpc = StampedRpc(accounts_dir=str(tmp_path / "accounts"), stderr=stderr, env=env)
    call_with_deadline(rpc.start, 60, "deltachat-rpc-server start")
    proc = DcProcess(rpc=rpc, dc=DeltaChat(rpc), stderr_path=stderr_path)
    try:
        yield proc
    finally:
        try:
            call_with_deadline(rpc.close, 20, "deltachat-rpc-server close")
        except Exception:  # noqa: BLE001 - killed below either way
            pass
        if rpc.process.poll() is None:
            rpc.process.kill()
            rpc.process.wait(5)
        stderr.close()


def new_account(dcproc: DcProcess, label: str):
    """A fresh, unconfigured account with the settings every test account has."""
    ac = dcproc.dc.add_account()
    ac.set_config("bot", "1")  # accept contact requests, like cmping
    ac.set_config("autorelay", "0")  # never add public relays (§12.4)
    ac.set_config("displayname", f"peer {label}")
    if CAPTURE_DIR:
        ac.set_config("bcc_self", "1")  # multi-device mode keeps delivered mail on the server
    return ac


def wait_configured(p: Peer, fut, what: str, timeout: float = 60) -> None:
    """ConfigureProgress 1000 (else ConfigureFailed with core's warnings), then the call's result."""
    ev = p.wait_event(
        lambda e: e.get("kind") == EventType.CONFIGURE_PROGRESS and e.get("progress") in (0, 1000),
        timeout,
        "ConfigureProgress 1000 (or 0)",
    )
    if ev["progress"] == 0:
        warnings = "\n".join(s for s in p.seen if " Warning " in s or " Error " in s)
        raise ConfigureFailed(f"{p.label} ({p.addr}): configure failed: {ev.get('comment')}\n{warnings}")
    call_with_deadline(fut, 30, f"{p.label}: {what}")


def peer_maker(dcproc: DcProcess, request, default_server: Optional[Server]):
    """The `make(n, ...)` function of `make_peers` and `make_peers_on`."""

    def make(
        n: int,
        labels: Optional[list[str]] = None,
        credentials: Optional[list] = None,
        server: Optional[Server] = None,
    ) -> list[Peer]:
        """`credentials`: optional (addr, localpart, password) per account instead of fresh ones;
        `server`: the relay of the accounts (default: the session's server)."""
        server = server or default_server
        assert server is not None, "make_peers_on needs server=..."
        labels = labels or [chr(ord("a") + len(dcproc.peers) + i) for i in range(n)]
        peers = []
        for i, label in enumerate(labels):
            ac = new_account(dcproc, label)
            addr, localpart, password = credentials[i] if credentials else server.new_credentials()
            peers.append(Peer(label, ac, addr, password, localpart))
        futures = [
            (p, p.account.add_or_update_transport.future(transport_params(server, p.addr, p.password))) for p in peers
        ]
        dcproc.peers.extend(peers)
        t0 = time.monotonic()
        for p, fut in futures:
            wait_configured(p, fut, "add_or_update_transport")
        for p in peers:
            p.wait_event(lambda e: e.get("kind") == EventType.IMAP_INBOX_IDLE, 30, "ImapInboxIdle")
        METRICS.append(f"{request.node.name}: {n} account(s) configured to IDLE in {time.monotonic() - t0:.2f} s")
        return peers

    return make


@pytest.fixture
def configure_peer(dcproc, request):
    """`configure_peer(label, start)`: a new account that `start(account)` configures (it returns
    the future of `add_transport_from_qr` or `add_or_update_transport`), online (IDLE); its address
    and password are what core ended up with."""

    def configure(label: str, start: Callable, what: str) -> Peer:
        ac = new_account(dcproc, label)
        p = Peer(label, ac, "(not configured yet)", "", "")
        dcproc.peers.append(p)
        t0 = time.monotonic()
        fut = start(ac)
        wait_configured(p, fut, what)
        p.wait_event(lambda e: e.get("kind") == EventType.IMAP_INBOX_IDLE, 30, "ImapInboxIdle")
        METRICS.append(f"{request.node.name}: {label} configured ({what}) to IDLE in {time.monotonic() - t0:.2f} s")
        [transport] = call_with_deadline(ac.list_transports, 20, "list_transports")
        p.addr, p.password = transport["addr"], transport.get("password", "")
        p.localpart = p.addr.split("@", 1)[0]
        return p

    return configure


@pytest.fixture
def make_peers(dcproc, server, request):
    """`make_peers(n)` -> n configured, online accounts on the session's server (created by their
    first login)."""
    return peer_maker(dcproc, request, server)


@pytest.fixture
def make_peers_on(dcproc, request):
    """`make_peers_on(n, server=relay)`: as `make_peers`, on a relay the test names (the session's
    server is not started for it)."""
    return peer_maker(dcproc, request, None)


def vcard_chats(x: Peer, y: Peer):
    """1:1 chats on both sides, keys exchanged by vCard (no network; §12.6)."""
    xy = call_with_deadline(lambda: x.account.create_chat(y.account), 20, "create_chat")
    yx = call_with_deadline(lambda: y.account.create_chat(x.account), 20, "create_chat")
    return xy, yx


# --------------------------------------------------------------------------- captures


class Captures:
    """Copies raw delivered messages out of the baseline's maildirs (baseline target only)."""

    def __init__(self, server: Server):
        self.server = server
        self.dir = Path(CAPTURE_DIR) if CAPTURE_DIR else None

    @property
    def enabled(self) -> bool:
        return self.dir is not None and self.server.maildir_root is not None

    def files(self, peer: Peer) -> list[Path]:
        md = self.server.maildir_root / self.server.domain / peer.localpart / "Maildir"
        found = [p for sub in ("new", "cur") if (md / sub).is_dir() for p in (md / sub).iterdir()]
        return sorted(found, key=lambda p: p.stat().st_mtime_ns)

    def save(
        self, name: str, peer: Peer, pred: Callable[[bytes], bool] = lambda _raw: True, timeout: float = 5
    ) -> Optional[Path]:
        """Copy the oldest message in `peer`'s maildir that matches `pred` to `<dir>/<name>`."""
        if not self.enabled:
            return None
        end = deadline(timeout)
        while True:
            for p in self.files(peer):
                raw = p.read_bytes()
                if pred(raw):
                    self.dir.mkdir(parents=True, exist_ok=True)
                    dest = self.dir / name
                    shutil.copyfile(p, dest)
                    METRICS.append(f"captured {dest} ({len(raw)} bytes)")
                    return dest
            if time.monotonic() > end:
                raise AssertionError(f"capture {name}: no matching message in the maildir of {peer.addr}")
            time.sleep(0.1)


def header_matches(pattern: str) -> Callable[[bytes], bool]:
    rx = re.compile(pattern.encode(), re.IGNORECASE | re.MULTILINE)

    def pred(raw: bytes) -> bool:
        head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        return rx.search(head) is not None

    return pred


@pytest.fixture
def captures(server):
    return Captures(server)


# --------------------------------------------------------------------------- reporting


# Fixtures whose value is a server under test (a `Server`) or several (an object with `.servers`);
# their logs are attached to a failing test's report.
SERVER_FIXTURES = ("server", "ip_pair", "named_pair", "onboard_relay")


@pytest.fixture(autouse=True)
def _server_log_mark(request):
    servers: list[Server] = []
    for name in SERVER_FIXTURES:
        if name in request.fixturenames:
            value = request.getfixturevalue(name)
            servers.extend(getattr(value, "servers", None) or [value])
    request.node._e2e_servers = [(s, s.log_mark()) for s in servers]
    yield
    for s in servers:
        s.check_alive()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    for srv, mark in getattr(item, "_e2e_servers", []):
        rep.sections.append((f"{srv.name} log during this test", srv.log_since(mark)))
    proc = item.funcargs.get("dcproc") if hasattr(item, "funcargs") else None
    if proc is not None:
        for p in proc.peers:
            p.drain()
            rep.sections.append((f"Delta Chat events of {p.label} ({p.addr})", "\n".join(p.seen[-300:])))
        if proc.stderr_path.exists():
            err = proc.stderr_path.read_text(errors="replace")
            rep.sections.append(("deltachat-rpc-server stderr (tail)", err[-20_000:]))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        dump = ARTIFACTS / f"{item.name}.{rep.when}.txt"
        dump.write_text("\n\n".join(f"---- {title} ----\n{body}" for title, body in rep.sections))


def pytest_report_header(config):
    where = RELAY_BIN if TARGET == "relay" else "baseline on 127.0.0.1"
    return [f"e2e target: {TARGET} ({where}), io: {RELAY_IO}, captures: {CAPTURE_DIR or 'off'}"]


def pytest_terminal_summary(terminalreporter):
    if METRICS:
        terminalreporter.section(f"e2e measurements ({TARGET}, io={RELAY_IO})")
        for line in METRICS:
            terminalreporter.write_line(line)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with open(ARTIFACTS / "metrics.txt", "a") as f:
            f.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {TARGET} io={RELAY_IO}\n")
            f.writelines(line + "\n" for line in METRICS)
