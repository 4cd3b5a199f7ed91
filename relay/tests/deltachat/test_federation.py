"""Federation: Delta Chat accounts on two relays that deliver to each other.

Each relay runs on a loopback address of its own with every port standard, inside run.sh's
network namespace: `ip_pair` (127.0.0.2 and 127.0.0.3, addresses `user@[127.0.0.x]`, unsigned)
and `named_pair` (`_r1.test`, `_r2.test`: MX, A and DKIM keys from test-dns, the names in the
namespace's /etc/hosts for the core; mail is DKIM-signed and verified). Relay to relay goes over
HTTPS `POST /mxdeliv` on port 443 first, SMTP on port 25 otherwise; nft rules in the namespace
block one path or both.
"""

from __future__ import annotations

import json
import os
import random
import smtplib
import ssl
import time

import pytest
from conftest import (
    METRICS,
    REPO_ROOT,
    Firewall,
    Pair,
    Peer,
    Server,
    call_with_deadline,
    deadline,
    vcard_chats,
)
from deltachat_rpc_client import EventType
from test_e2e import chat_of, expect, send_file_and_check, send_text

pytestmark = pytest.mark.standard_ports

# A message across two relays on this machine: submission, queue, /mxdeliv or SMTP, IMAP IDLE.
# Far below the 5-minute retry: a delivery that failed once would not make it.
CROSS_TIMEOUT = 15
ENCRYPTED_TEMPLATE = REPO_ROOT / "relay/tests/it/data/encrypted.eml.tmpl"


def queue(relay: Server) -> dict:
    """`relay admin queue list --json` of `relay`."""
    return json.loads(relay.admin("queue", "list", "--json"))


def wait_queue_empty(*relays: Server, timeout: float = CROSS_TIMEOUT) -> None:
    """Every entry delivered: the sender commits the outcome right after the remote's answer."""
    end = deadline(timeout)
    for r in relays:
        while (q := queue(r))["queued"] != 0:
            assert time.monotonic() < end, f"{r.name}: queue not empty: {q}"
            time.sleep(0.1)


def securejoin(inviter: Peer, joiner: Peer, qr: str) -> float:
    """`joiner` scans `qr`; both sides reach progress 1000. Returns the seconds it took."""
    t0 = time.monotonic()
    call_with_deadline(lambda: joiner.account.secure_join(qr), 20, "secure_join")
    joiner.wait_event(
        lambda e: e.get("kind") == EventType.SECUREJOIN_JOINER_PROGRESS and e.get("progress") == 1000,
        60,
        "SecurejoinJoinerProgress 1000",
    )
    inviter.wait_event(
        lambda e: e.get("kind") == EventType.SECUREJOIN_INVITER_PROGRESS and e.get("progress") == 1000,
        60,
        "SecurejoinInviterProgress 1000",
    )
    return time.monotonic() - t0


def one_on_one(a: Peer, b: Peer, tag: str) -> None:
    """Keys by vCard, then a -> b and b -> a, each with padlock, in the right chats."""
    ab, ba = vcard_chats(a, b)
    send_text(ab, f"{tag}: hello b, from a")
    snap = expect(b, f"{tag}: hello b, from a", CROSS_TIMEOUT)
    assert snap.chat_id == ba.id
    assert snap.sender.get_snapshot().address == a.addr
    send_text(ba, f"{tag}: hello a, from b")
    snap = expect(a, f"{tag}: hello a, from b", CROSS_TIMEOUT)
    assert snap.chat_id == ab.id
    assert snap.sender.get_snapshot().address == b.addr


def pair_peers(make_peers_on, pair: Pair) -> tuple[Peer, Peer]:
    (a,) = make_peers_on(1, server=pair.r1)
    (b,) = make_peers_on(1, server=pair.r2)
    assert a.addr.endswith("@" + pair.r1.domain) and b.addr.endswith("@" + pair.r2.domain)
    return a, b


# --------------------------------------------------------------------------- IP-literal relays


def test_ip_relays_one_on_one_both_ways(ip_pair, make_peers_on):
    a, b = pair_peers(make_peers_on, ip_pair)
    t0 = time.monotonic()
    one_on_one(a, b, "ip")
    METRICS.append(f"across IP relays, a->b and b->a: {time.monotonic() - t0:.2f} s")
    wait_queue_empty(ip_pair.r1, ip_pair.r2)


def test_ip_relays_securejoin(ip_pair, make_peers_on):
    a, b = pair_peers(make_peers_on, ip_pair)
    qr = call_with_deadline(a.account.get_qr_code, 20, "get_qr_code")
    took = securejoin(a, b, qr)
    METRICS.append(f"securejoin across IP relays to progress 1000 on both: {took:.2f} s")
    ba = b.account.get_chat_by_contact(b.account.get_contact_by_addr(a.addr))
    assert ba is not None, "joiner has no chat with the inviter"
    send_text(ba, "after securejoin across relays, from b")
    snap = expect(a, "after securejoin across relays, from b", CROSS_TIMEOUT)
    send_text(chat_of(a, snap), "after securejoin across relays, from a")
    expect(b, "after securejoin across relays, from a", CROSS_TIMEOUT)


def test_ip_relays_group(ip_pair, make_peers_on):
    """a and c on the first relay, b on the second: every message has a local recipient and one
    (b's, or a's and c's together) behind the other relay."""
    a, b = pair_peers(make_peers_on, ip_pair)
    (c,) = make_peers_on(1, server=ip_pair.r1)
    group = a.account.create_group("across relays")
    group.add_contact(a.account.create_contact(b.account), a.account.create_contact(c.account))
    chats = {"a": group}
    send_text(group, "group hello from a")
    for p in (b, c):
        snap = expect(p, "group hello from a", CROSS_TIMEOUT)
        chats[p.label] = chat_of(p, snap)
    for sender, others in ((b, (a, c)), (c, (a, b))):
        text = f"group hello from {sender.label}"
        send_text(chats[sender.label], text)
        for p in others:
            snap = expect(p, text, CROSS_TIMEOUT)
            assert snap.chat_id == chats[p.label].id, f"{p.label} got {text!r} outside the group chat"
    wait_queue_empty(ip_pair.r1, ip_pair.r2)


def test_ip_relays_attachment(ip_pair, make_peers_on, tmp_path):
    a, b = pair_peers(make_peers_on, ip_pair)
    path = tmp_path / "across.bin"
    path.write_bytes(os.urandom(5 * 1024 * 1024))
    t0 = time.monotonic()
    send_file_and_check(a, b, str(path), 60)
    METRICS.append(f"5 MiB attachment across IP relays: {time.monotonic() - t0:.2f} s")


# --------------------------------------------------------------------------- `_`-name relays


def test_named_relays_securejoin_dkim(named_pair, make_peers_on):
    """Secure-Join and messages both ways between `_r1.test` and `_r2.test`: every message is
    DKIM-signed by its relay and verified by the other through the key test-dns publishes."""
    a, b = pair_peers(make_peers_on, named_pair)
    dns = named_pair.dns
    keys = {r.domain: f"opendkim._domainkey.{r.domain}" for r in named_pair.servers}
    before = {d: dns.queries_for(k) for d, k in keys.items()}
    qr = call_with_deadline(a.account.get_qr_code, 20, "get_qr_code")
    took = securejoin(a, b, qr)
    METRICS.append(f"securejoin across _-name relays (DKIM) to progress 1000 on both: {took:.2f} s")
    ba = b.account.get_chat_by_contact(b.account.get_contact_by_addr(a.addr))
    send_text(ba, "signed by _r2.test, from b")
    snap = expect(a, "signed by _r2.test, from b", CROSS_TIMEOUT)
    send_text(chat_of(a, snap), "signed by _r1.test, from a")
    expect(b, "signed by _r1.test, from a", CROSS_TIMEOUT)
    for domain, key in keys.items():
        assert dns.queries_for(key) > before[domain], f"nobody looked up {key}: DKIM not verified"
    assert dns.queries_for(named_pair.r2.domain) > 0, "the first relay did not resolve _r2.test"
    wait_queue_empty(named_pair.r1, named_pair.r2)


# --------------------------------------------------------------------------- paths between relays


@pytest.fixture
def fresh_ip_pair(ip_pair):
    """The IP pair, restarted: no memory of hosts without /mxdeliv, no idle connections."""
    ip_pair.restart()
    return ip_pair


def test_port_25_blocked_delivers_over_https(fresh_ip_pair, make_peers_on, firewall: Firewall):
    pair = fresh_ip_pair
    https = {}
    for r in pair.servers:
        firewall.block(r.listen, 25)
        https[r.domain] = firewall.count_syn(r.listen, 443)
    a, b = pair_peers(make_peers_on, pair)
    one_on_one(a, b, "port 25 blocked")
    for domain, counter in https.items():
        assert firewall.packets(counter) > 0, f"no connection to port 443 of {domain}"
    wait_queue_empty(pair.r1, pair.r2)


def test_port_443_blocked_delivers_over_smtp(fresh_ip_pair, make_peers_on, firewall: Firewall):
    pair = fresh_ip_pair
    blocked, smtp = {}, {}
    for r in pair.servers:
        blocked[r.domain] = firewall.block(r.listen, 443)
        smtp[r.domain] = firewall.count_syn(r.listen, 25)
    a, b = pair_peers(make_peers_on, pair)
    one_on_one(a, b, "port 443 blocked")
    for r in pair.servers:
        assert firewall.packets(blocked[r.domain]) > 0, f"/mxdeliv to {r.domain} was not tried first"
        assert firewall.packets(smtp[r.domain]) > 0, f"no SMTP connection to {r.domain}"
    wait_queue_empty(pair.r1, pair.r2)


def wait_counter_above(firewall: Firewall, counter: str, value: int, what: str, timeout: float = CROSS_TIMEOUT):
    end = deadline(timeout)
    while firewall.packets(counter) <= value:
        assert time.monotonic() < end, f"{what}: nft counter {counter} stayed at {value}"
        time.sleep(0.1)


def test_both_blocked_waits_in_queue_through_restart_then_retry(fresh_ip_pair, make_peers_on, firewall: Firewall):
    """Neither path open: the message waits in the sender's queue (also across a restart of the
    sending relay); once the paths are open, `relay admin queue retry` delivers it at once."""
    pair = fresh_ip_pair
    r1, r2 = pair.r1, pair.r2
    a, b = pair_peers(make_peers_on, pair)
    ab, _ba = vcard_chats(a, b)
    to_443 = firewall.block(r2.listen, 443)
    to_25 = firewall.block(r2.listen, 25)
    msg = send_text(ab, "waits for an open path")
    a.wait_event(
        lambda e: e.get("kind") == EventType.MSG_DELIVERED and e.get("msgId") == msg.id,
        CROSS_TIMEOUT,
        "MsgDelivered (accepted by the first relay)",
    )
    # The first attempt tries both paths, and defers.
    wait_counter_above(firewall, to_443, 0, "first attempt over HTTPS")
    wait_counter_above(firewall, to_25, 0, "first attempt over SMTP")
    listed = queue(r1)
    assert listed["queued"] == 1, listed
    [entry] = listed["entries"]
    assert entry["destination"] == r2.domain and entry["recipients"] == [b.addr], entry

    tried = firewall.packets(to_25)
    r1.restart()
    # The restarted relay resumes its queue at once: tried again, deferred again.
    wait_counter_above(firewall, to_25, tried, "the attempt after the restart")
    listed = queue(r1)
    assert [e["id"] for e in listed["entries"]] == [entry["id"]], f"the entry changed across the restart: {listed}"

    firewall.unblock(to_443)
    firewall.unblock(to_25)
    # The next attempt by the backoff is 5 minutes away: only the retry delivers within the deadline.
    t0 = time.monotonic()
    r1.admin("queue", "retry")
    expect(b, "waits for an open path", CROSS_TIMEOUT)
    METRICS.append(f"queued message delivered {time.monotonic() - t0:.2f} s after `relay admin queue retry`")
    wait_queue_empty(r1)


# --------------------------------------------------------------------------- refusals


def tls_client_context() -> ssl.SSLContext:
    """The relays' certificates are self-signed: no verification (the refusals are the point)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def localpart() -> str:
    return "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(9))


def test_cleartext_across_relays_refused(ip_pair):
    """The core never sends cleartext; a raw SMTP client does, to the sender relay's submission
    port, for a recipient behind the other relay: `523`, and nothing is queued."""
    r1, r2 = ip_pair.r1, ip_pair.r2
    sender = f"{localpart()}@{r1.domain}"
    password = "a-long-enough-password"
    r1.admin("create", sender, "--password", password)
    to = f"{localpart()}@{r2.domain}"
    body = (
        f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: plain\r\n"
        f"Message-ID: <{localpart()}@{r1.listen}>\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        "Content-Type: text/plain\r\n\r\nnot encrypted\r\n"
    )
    with smtplib.SMTP_SSL(r1.listen, 465, context=tls_client_context(), timeout=20) as s:
        s.login(sender, password)
        assert s.mail(sender)[0] == 250
        assert s.rcpt(to)[0] == 250
        code, text = s.data(body)
    assert code == 523, f"cleartext across relays answered {code} {text!r}"
    assert b"Encryption Needed" in text, text
    assert queue(r1)["queued"] == 0


def port25_data(relay: Server, sender: str, rcpt: str, message: str, helo: str) -> tuple[int, bytes]:
    """A raw SMTP transaction on `relay`'s port 25 over STARTTLS, as another relay would."""
    with smtplib.SMTP(relay.listen, 25, local_hostname=helo, timeout=20) as s:
        s.starttls(context=tls_client_context())
        s.ehlo(helo)
        assert s.mail(sender)[0] == 250
        code, text = s.rcpt(rcpt)
        assert code == 250, f"RCPT {rcpt}: {code} {text!r}"
        return s.data(message)


def test_unsigned_and_badly_signed_refused_on_port_25(named_pair):
    """Mail claiming to be from `_r1.test` reaches `_r2.test`'s port 25 without a DKIM signature,
    then with one that does not verify against the key test-dns publishes: `554 5.7.1` both
    times, and the recipient's mailbox stays empty."""
    r1, r2 = named_pair.r1, named_pair.r2
    rcpt = f"{localpart()}@{r2.domain}"
    r2.admin("create", rcpt, "--password", "a-long-enough-password")
    sender = f"{localpart()}@{r1.domain}"
    template = ENCRYPTED_TEMPLATE.read_text()
    message = template.replace("{from}", sender).replace("{to}", rcpt).replace("{id}", localpart())

    code, text = port25_data(r2, sender, rcpt, message, r1.domain)
    assert (code, text) == (554, b"5.7.1 No DKIM signature found"), (code, text)

    forged = (
        f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={r1.domain}; s=opendkim;\r\n"
        " t=1764151200; h=from:to:subject:date:message-id;\r\n"
        " bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n"
        " b=dGhpcyBpcyBub3QgYSBzaWduYXR1cmUgb2YgYW55dGhpbmcgYXQgYWxsLCBzb3JyeQ==\r\n"
    )
    code, text = port25_data(r2, sender, rcpt, forged + message, r1.domain)
    assert (code, text) == (554, b"5.7.1 No valid DKIM signature found"), (code, text)

    accounts = json.loads(r2.admin("list", "--json"))
    [acct] = [x for x in accounts["accounts"] if x["addr"] == rcpt]
    assert acct["messages"] == 0, acct
