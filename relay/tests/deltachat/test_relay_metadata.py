"""The relay's own IMAP METADATA entries as the real Delta Chat core reads them when it connects
(chatmail.md §6.1): the TURN server it offers for calls, and the app versions the operator
recommends."""

from __future__ import annotations

import time

import pytest
from conftest import E2E_APPVERSIONS, TARGET, call_with_deadline

pytestmark = pytest.mark.skipif(TARGET != "relay", reason="entries of the relay under test (the baseline has none)")


def urls(server: dict) -> list[str]:
    u = server.get("urls", [])
    return [u] if isinstance(u, str) else list(u)


def test_core_uses_the_relays_turn_server(make_peers):
    """`relay dev` serves TURN on UDP 13478 and publishes it with TURN REST credentials; core
    offers exactly that server for calls instead of its fallback (turn.delta.chat)."""
    (a,) = make_peers(1)
    servers = call_with_deadline(a.account.ice_servers, 20, "ice_servers")
    ours = [s for s in servers if any("127.0.0.1:13478" in u for u in urls(s))]
    assert ours, f"core does not offer the relay's TURN server: {servers}"
    assert not any("delta.chat" in u for s in servers for u in urls(s)), servers
    turn = ours[0]
    # The username is the credentials' expiry, 5 days ahead; the password is the HMAC.
    expiry = int(turn["username"])
    assert time.time() + 4 * 86400 < expiry <= time.time() + 5 * 86400 + 60, turn
    assert turn["credential"], turn


def test_core_reads_the_operators_app_versions(make_peers, dcproc):
    """The operator's appversions.json (written into the data dir before the relay started) is
    what core reports for that client and source."""
    make_peers(1)
    want = E2E_APPVERSIONS["clients"][0]["sources"][0]
    got = None
    end = time.monotonic() + 20
    while got is None and time.monotonic() < end:
        got = call_with_deadline(
            lambda: dcproc.rpc.get_app_version("deltachat", "e2e"), 20, "get_app_version"
        )
        if got is None:
            time.sleep(0.2)
    assert got, "core has no app version information from the relay"
    text = str(got)
    assert want["versionString"] in text and str(want["versionInteger"]) in text, got

