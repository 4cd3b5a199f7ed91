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
import os
import queue
import random
import re
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
        self.proc = spawn_relay(self.data_dir, self.log_files[0])

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


def wait_ports(ports: list[int], timeout: float, proc: Optional[subprocess.Popen] = None):
    end = deadline(timeout)
    pending = list(ports)
    while pending:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        port = pending[0]
        try:
            with socket.create_connection((HOST, port), timeout=1):
                pending.pop(0)
                continue
        except OSError:
            pass
        if time.monotonic() > end:
            raise TimeoutError(f"ports {pending} on {HOST} not accepting after {timeout * TIME_SCALE:.0f} s")
        time.sleep(0.05)


RELAY_PORTS = [10025, 10587, 10465, 10143, 10993]


def spawn_relay(data: Path, log: Path) -> subprocess.Popen:
    """Start `relay dev` on `data`, appending its output to `log`; return once all ports accept."""
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info,relay=debug")
    env.setdefault("NO_COLOR", "1")
    cmd = [str(RELAY_BIN), "dev", "--data", str(data), "--io", RELAY_IO]
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
        wait_ports(RELAY_PORTS, 30, proc)
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


def start_relay(tmp: Path) -> Server:
    if not RELAY_BIN.exists():
        pytest.exit(f"relay binary {RELAY_BIN} not found (cargo build -p relay --bin relay)", returncode=3)
    for port in RELAY_PORTS:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
            pytest.exit(f"port {port} on {HOST} is already in use (a leftover relay?)", returncode=3)
    data = tmp / "relay-data"
    data.mkdir()
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
    """Full manual settings: IP host, both ports and TLS modes, no certificate check."""
    return {
        "addr": addr,
        "password": password,
        "imapServer": HOST,
        "imapPort": server.imaps_port,
        "imapSecurity": "ssl",
        "imapUser": addr,
        "smtpServer": HOST,
        "smtpPort": server.submissions_port,
        "smtpSecurity": "ssl",
        "smtpUser": addr,
        "smtpPassword": password,
        "certificateChecks": "acceptInvalidCertificates",
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


@pytest.fixture
def make_peers(dcproc, server, request):
    """`make_peers(n)` -> n configured, online accounts (created by their first login)."""

    def make(n: int, labels: Optional[list[str]] = None, credentials: Optional[list] = None) -> list[Peer]:
        """`credentials`: optional (addr, localpart, password) per account instead of fresh ones."""
        labels = labels or [chr(ord("a") + len(dcproc.peers) + i) for i in range(n)]
        peers = []
        for i, label in enumerate(labels):
            ac = dcproc.dc.add_account()
            addr, localpart, password = credentials[i] if credentials else server.new_credentials()
            peer = Peer(label, ac, addr, password, localpart)
            ac.set_config("bot", "1")  # accept contact requests, like cmping
            ac.set_config("autorelay", "0")  # never add public relays (§12.4)
            ac.set_config("displayname", f"peer {label}")
            if CAPTURE_DIR:
                ac.set_config("bcc_self", "1")  # multi-device mode keeps delivered mail on the server
            peers.append(peer)
        futures = [
            (p, p.account.add_or_update_transport.future(transport_params(server, p.addr, p.password))) for p in peers
        ]
        dcproc.peers.extend(peers)
        t0 = time.monotonic()
        for p, fut in futures:
            ev = p.wait_event(
                lambda e: e.get("kind") == EventType.CONFIGURE_PROGRESS and e.get("progress") in (0, 1000),
                60,
                "ConfigureProgress 1000 (or 0)",
            )
            if ev["progress"] == 0:
                warnings = "\n".join(s for s in p.seen if " Warning " in s or " Error " in s)
                raise ConfigureFailed(f"{p.label} ({p.addr}): configure failed: {ev.get('comment')}\n{warnings}")
            call_with_deadline(fut, 30, f"{p.label}: add_or_update_transport")
        for p in peers:
            p.wait_event(lambda e: e.get("kind") == EventType.IMAP_INBOX_IDLE, 30, "ImapInboxIdle")
        METRICS.append(f"{request.node.name}: {n} account(s) configured to IDLE in {time.monotonic() - t0:.2f} s")
        return peers

    return make


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


@pytest.fixture(autouse=True)
def _server_log_mark(request, server):
    request.node._e2e_server = server
    request.node._e2e_mark = server.log_mark()
    yield
    server.check_alive()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed:
        return
    srv = getattr(item, "_e2e_server", None)
    if srv is not None:
        rep.sections.append((f"{srv.name} log during this test", srv.log_since(item._e2e_mark)))
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
