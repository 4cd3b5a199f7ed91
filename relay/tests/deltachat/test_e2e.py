"""End-to-end tests: real Delta Chat core accounts talking through the server under test.

Every received message must carry the padlock (`show_padlock`: end-to-end encrypted).
"""

from __future__ import annotations

import hashlib
import os
import signal
import statistics
import time

import pytest
from conftest import (
    METRICS,
    TARGET,
    ConfigureFailed,
    Peer,
    call_with_deadline,
    deadline,
    header_matches,
    vcard_chats,
)
from deltachat_rpc_client import EventType


def send_text(chat, text: str):
    return call_with_deadline(lambda: chat.send_text(text), 20, f"send_text {text!r}")


# A message through a local server arrives well within a second. The deadline stays far below
# ~30 s, where core's own background traffic (key updates, sync messages) would wake an IDLE that
# the server forgot to wake and hide the bug.
RECEIVE_TIMEOUT = 10


def expect(peer: Peer, text: str, timeout: float = RECEIVE_TIMEOUT):
    """`peer` receives `text`, end-to-end encrypted; returns the snapshot."""
    snap = peer.wait_incoming(text, timeout)
    assert snap.show_padlock, f"{peer.label} got {text!r} without padlock"
    assert not snap.is_info
    return snap


def expect_all(peer: Peer, texts: list[str], timeout: float = RECEIVE_TIMEOUT):
    """`peer` receives all of `texts` (in any order), each end-to-end encrypted."""
    missing = set(texts)

    def is_one(ev):
        if ev.get("kind") != EventType.INCOMING_MSG:
            return False
        snap = peer.snapshot(ev["msgId"])
        if snap.text in missing:
            assert snap.show_padlock, f"{peer.label} got {snap.text!r} without padlock"
            missing.discard(snap.text)
        return not missing

    peer.wait_event(is_one, timeout, f"incoming messages {sorted(missing)}")


def chat_of(peer: Peer, snap):
    return peer.account.get_chat_by_id(snap.chat_id)


def test_one_on_one_both_ways(make_peers, captures):
    a, b = make_peers(2)
    ab, ba = vcard_chats(a, b)
    send_text(ab, "hello b, from a")
    snap = expect(b, "hello b, from a")
    assert snap.chat_id == ba.id
    assert snap.sender.get_snapshot().address == a.addr
    send_text(ba, "hello a, from b")
    snap = expect(a, "hello a, from b")
    assert snap.chat_id == ab.id
    assert snap.sender.get_snapshot().address == b.addr
    captures.save("dc-encrypted.eml", b, header_matches(r"^Content-Type: multipart/encrypted"))


def join_and_capture(inviter: Peer, joiner: Peer, qr: str, captures, name: str):
    """`joiner` scans `qr`. With captures on, the inviter is offline until the request is copied:
    core deletes handshake messages right after fetching them, even in multi-device mode.
    Core 2.65 encrypts the request (no outer `Secure-Join` header), so the capture is simply the
    first message in the fresh inviter's mailbox."""
    if captures.enabled:
        call_with_deadline(inviter.account.stop_io, 20, "stop_io")
    call_with_deadline(lambda: joiner.account.secure_join(qr), 20, "secure_join")
    if captures.enabled:
        captures.save(name, inviter, timeout=30)
        call_with_deadline(inviter.account.start_io, 20, "start_io")


def test_securejoin_contact(make_peers, captures):
    a, b = make_peers(2)
    qr = call_with_deadline(a.account.get_qr_code, 20, "get_qr_code")
    t0 = time.monotonic()
    join_and_capture(a, b, qr, captures, "dc-securejoin-vc-request.eml")
    b.wait_event(
        lambda e: e.get("kind") == EventType.SECUREJOIN_JOINER_PROGRESS and e.get("progress") == 1000,
        60,
        "SecurejoinJoinerProgress 1000",
    )
    a.wait_event(
        lambda e: e.get("kind") == EventType.SECUREJOIN_INVITER_PROGRESS and e.get("progress") == 1000,
        60,
        "SecurejoinInviterProgress 1000",
    )
    METRICS.append(f"securejoin (contact) to progress 1000 on both: {time.monotonic() - t0:.2f} s")

    # The verified 1:1 chat carries encrypted messages both ways.
    ba = b.account.get_chat_by_contact(b.account.get_contact_by_addr(a.addr))
    assert ba is not None, "joiner has no chat with the inviter"
    send_text(ba, "after securejoin, from b")
    snap = expect(a, "after securejoin, from b")
    send_text(chat_of(a, snap), "after securejoin, from a")
    expect(b, "after securejoin, from a")


def test_securejoin_group(make_peers, captures):
    a, b = make_peers(2)
    group = a.account.create_group("securejoin group")
    qr = call_with_deadline(group.get_qr_code, 20, "group get_qr_code")
    join_and_capture(a, b, qr, captures, "dc-securejoin-vg-request.eml")
    b.wait_event(
        lambda e: e.get("kind") == EventType.SECUREJOIN_JOINER_PROGRESS and e.get("progress") == 1000,
        60,
        "SecurejoinJoinerProgress 1000",
    )
    a.wait_event(
        lambda e: e.get("kind") == EventType.SECUREJOIN_INVITER_PROGRESS and e.get("progress") == 1000,
        60,
        "SecurejoinInviterProgress 1000",
    )
    send_text(group, "welcome to the group, from a")
    snap = expect(b, "welcome to the group, from a")
    send_text(chat_of(b, snap), "thanks, from b")
    expect(a, "thanks, from b")


def test_group_of_three(make_peers, captures):
    a, b, c = make_peers(3)
    group = a.account.create_group("three")
    group.add_contact(a.account.create_contact(b.account), a.account.create_contact(c.account))
    chats = {"a": group}
    send_text(group, "group hello from a")
    for p in (b, c):
        snap = expect(p, "group hello from a")
        chats[p.label] = chat_of(p, snap)
    captures.save("dc-group.eml", c, header_matches(r"^Content-Type: multipart/encrypted"))
    for sender, others in ((b, (a, c)), (c, (a, b))):
        text = f"group hello from {sender.label}"
        send_text(chats[sender.label], text)
        for p in others:
            snap = expect(p, text)
            assert snap.chat_id == chats[p.label].id, f"{p.label} got {text!r} outside the group chat"


def send_file_and_check(a: Peer, b: Peer, path: str, timeout: float):
    ab, _ba = vcard_chats(a, b)
    want = hashlib.sha256(open(path, "rb").read()).hexdigest()
    text = f"file {os.path.basename(path)}"
    call_with_deadline(lambda: ab.send_message(text=text, file=path), 30, "send_message with file")
    snap = expect(b, text, timeout)
    # Large messages may arrive in parts; wait until the attachment is fully downloaded.
    end = deadline(timeout)
    while snap.download_state != "Done" or not snap.file:
        assert time.monotonic() < end, f"attachment not downloaded: download_state={snap.download_state}"
        time.sleep(0.2)
        snap = b.snapshot(snap.id)
    got = hashlib.sha256(open(snap.file, "rb").read()).hexdigest()
    assert got == want, f"attachment corrupted: sha256 {got} != {want}"
    assert snap.file_bytes == os.path.getsize(path)
    return snap


def test_attachment_small(make_peers, captures, tmp_path):
    a, b = make_peers(2)
    path = tmp_path / "small.bin"
    path.write_bytes(os.urandom(20 * 1024))
    send_file_and_check(a, b, str(path), 30)
    captures.save("dc-attachment.eml", b, header_matches(r"^Content-Type: multipart/encrypted"))


def test_attachment_10mib(make_peers, tmp_path):
    a, b = make_peers(2)
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(10 * 1024 * 1024))
    t0 = time.monotonic()
    send_file_and_check(a, b, str(path), 120)
    METRICS.append(f"10 MiB attachment sent and received in {time.monotonic() - t0:.2f} s")


def test_ping_pong_timing(make_peers):
    """Median of 5 round trips (a -> b -> a). Printed, not asserted."""
    a, b = make_peers(2)
    ab, ba = vcard_chats(a, b)
    # Warm-up round (first message of a chat carries more headers).
    send_text(ab, "warm-up")
    expect(b, "warm-up")
    rounds = []
    for i in range(5):
        t0 = time.monotonic()
        send_text(ab, f"ping {i}")
        expect(b, f"ping {i}")
        send_text(ba, f"pong {i}")
        expect(a, f"pong {i}")
        rounds.append(time.monotonic() - t0)
    METRICS.append(
        f"ping-pong median of 5: {statistics.median(rounds):.3f} s "
        f"(min {min(rounds):.3f}, max {max(rounds):.3f})"
    )


def test_offline_recipient_fetches_later(make_peers):
    """Messages stored while the recipient is offline are fetched at its next connect."""
    a, b = make_peers(2)
    ab, _ba = vcard_chats(a, b)
    call_with_deadline(b.account.stop_io, 20, "stop_io")
    texts = [f"while you were away {i}" for i in range(3)]
    ids = {send_text(ab, t).id for t in texts}
    delivered = set()

    def all_delivered(ev):
        if ev.get("kind") == EventType.MSG_DELIVERED:
            delivered.add(ev["msgId"])
        return ids <= delivered

    a.wait_event(all_delivered, 30, "MsgDelivered for all 3 messages")
    call_with_deadline(b.account.start_io, 20, "start_io")
    expect_all(b, texts)


relay_only = pytest.mark.skipif(TARGET != "relay", reason="the baseline runs with BASELINE_AUTH=any")


@relay_only
def test_login_rules(make_peers, server):
    """First login creates the account; afterwards only its password works (chatmail.md §4.2)."""
    (a,) = make_peers(1)
    with pytest.raises(ConfigureFailed):
        make_peers(1, labels=["wrong-password"], credentials=[(a.addr, a.localpart, a.password + "x")])
    # A second device with the right password logs in to the same account.
    make_peers(1, labels=["second-device"], credentials=[(a.addr, a.localpart, a.password)])
    _addr, localpart, _password = server.new_credentials()
    with pytest.raises(ConfigureFailed):
        make_peers(1, labels=["short-password"], credentials=[(f"{localpart}@{server.domain}", localpart, "short")])
    with pytest.raises(ConfigureFailed):
        make_peers(1, labels=["short-name"], credentials=[(f"abc@{server.domain}", "abc", "a-long-enough-password")])


@pytest.mark.skipif(TARGET != "relay", reason="restarts the server under test")
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_relay_restart_keeps_mail(make_peers, server, how):
    """Mail accepted before a restart (clean, or kill -9) is fetched after it; clients reconnect."""
    a, b = make_peers(2)
    ab, ba = vcard_chats(a, b)
    call_with_deadline(b.account.stop_io, 20, "stop_io")
    msg = send_text(ab, f"stored before {how}")
    a.wait_event(
        lambda e: e.get("kind") == EventType.MSG_DELIVERED and e.get("msgId") == msg.id, 30, "MsgDelivered"
    )
    server.restart(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    call_with_deadline(b.account.start_io, 20, "start_io")
    expect(b, f"stored before {how}")
    # Both sides reconnect on their own and keep talking.
    send_text(ba, f"after {how}, from b")
    expect(a, f"after {how}, from b", timeout=60)


def test_second_device(make_peers, dcproc, tmp_path):
    """Two devices of one account (the second restored from a backup, so both hold the key) IDLE
    on the same INBOX: both get incoming mail, and each sees what the other sent (bcc_self)."""
    a, b = make_peers(2)
    ab, ba = vcard_chats(a, b)
    call_with_deadline(lambda: a.account.set_config("bcc_self", "1"), 20, "set bcc_self")
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    call_with_deadline(a.account.stop_io, 20, "stop_io")
    call_with_deadline(lambda: a.account.export_backup(backup_dir), 60, "export_backup")
    call_with_deadline(a.account.start_io, 20, "start_io")
    [backup] = list(backup_dir.iterdir())
    account2 = dcproc.dc.add_account()
    a2 = Peer("a2", account2, a.addr, a.password, a.localpart)
    dcproc.peers.append(a2)
    call_with_deadline(lambda: account2.import_backup(backup), 60, "import_backup")
    account2.set_config("autorelay", "0")
    call_with_deadline(account2.start_io, 20, "start_io (second device)")
    a2.wait_event(lambda e: e.get("kind") == EventType.IMAP_INBOX_IDLE, 30, "ImapInboxIdle")
    a.wait_event(lambda e: e.get("kind") == EventType.IMAP_INBOX_IDLE, 30, "ImapInboxIdle")

    send_text(ba, "to both of your devices")
    expect(a, "to both of your devices")
    expect(a2, "to both of your devices")

    def outgoing(peer: Peer, text: str):
        def is_it(ev):
            if ev.get("kind") != EventType.MSGS_CHANGED or not ev.get("msgId"):
                return False
            snap = peer.snapshot(ev["msgId"])
            return snap.text == text and snap.from_id == 1  # SpecialContactId.SELF
        ev = peer.wait_event(is_it, RECEIVE_TIMEOUT, f"own message {text!r} from the other device")
        assert peer.snapshot(ev["msgId"]).show_padlock

    send_text(ab, "sent from the first device")
    expect(b, "sent from the first device")
    outgoing(a2, "sent from the first device")
