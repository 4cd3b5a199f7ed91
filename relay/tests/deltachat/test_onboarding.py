"""Onboarding: the ways a Delta Chat core gets an account on a relay, and the relay's web page.

The relay (`onboard_relay`) is `_onboard.test` on 127.0.0.6 with every port standard and a
self-signed certificate for its names; the core finds the names in the namespace's /etc/hosts and,
because they start with `_`, checks the certificate's name but not its issuer (chatmail.md §12.3).
Nothing the core looks up is missing there, so no configure waits for a name to fail.
"""

from __future__ import annotations

import html
import json
import re
import ssl
import subprocess
import time
import urllib.request

import pytest
from conftest import (
    METRICS,
    ONBOARD_DOMAIN,
    ONBOARD_IP,
    TIME_SCALE,
    Firewall,
    Peer,
    Server,
    need_tool,
    vcard_chats,
)
from test_e2e import RECEIVE_TIMEOUT, expect, send_text

pytestmark = pytest.mark.standard_ports


def relay_accounts(relay: Server) -> set[str]:
    return {a["addr"] for a in json.loads(relay.admin("list", "--json"))["accounts"]}


def assert_created_at_first_login(relay: Server, p: Peer) -> None:
    assert p.addr.endswith("@" + ONBOARD_DOMAIN), p.addr
    assert p.addr in relay_accounts(relay), f"{p.addr} logged in but the relay has no such account"


def test_dcaccount_https_new(onboard_relay, configure_peer):
    """`dcaccount:https://<domain>/new`: core POSTs /new over HTTPS for credentials, finds the
    servers by autoconfig on port 443 and logs in, which creates the account."""
    qr = f"dcaccount:https://{ONBOARD_DOMAIN}/new"
    p = configure_peer("new-url", lambda ac: ac.add_transport_from_qr.future(qr), "add_transport_from_qr /new")
    assert_created_at_first_login(onboard_relay, p)


def test_dcaccount_domain(onboard_relay, configure_peer):
    """`dcaccount:<domain>`: core makes the credentials itself (9-character localpart,
    22-character password); the relay creates the account at the first login."""
    qr = f"dcaccount:{ONBOARD_DOMAIN}"
    p = configure_peer("domain", lambda ac: ac.add_transport_from_qr.future(qr), "add_transport_from_qr domain")
    assert re.fullmatch(r"[a-z0-9]{9}", p.localpart), p.addr
    assert len(p.password) == 22, f"password of {len(p.password)} characters"
    assert_created_at_first_login(onboard_relay, p)


def test_address_and_password_only(onboard_relay, configure_peer, onboard_credentials):
    """Address and password alone: core asks the relay's autoconfig over HTTPS on port 443."""
    addr, password = onboard_credentials
    p = configure_peer(
        "autoconfig",
        lambda ac: ac.add_or_update_transport.future({"addr": addr, "password": password}),
        "add_or_update_transport (address and password only)",
    )
    assert p.addr == addr
    assert_created_at_first_login(onboard_relay, p)


@pytest.fixture
def onboard_credentials() -> tuple[str, str]:
    """Fresh credentials, as the relay's `/new` hands them out (not created until the login)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(f"https://{ONBOARD_DOMAIN}/new", method="POST", data=b"")
    with urllib.request.urlopen(req, context=ctx, timeout=20 * TIME_SCALE) as r:
        got = json.loads(r.read())
    return got["email"], got["password"]


def test_imap_and_smtp_over_port_443_by_alpn(onboard_relay, configure_peer, firewall: Firewall):
    """Manual settings with port 443 and TLS for IMAP and SMTP: the relay tells them apart by
    ALPN. The other client ports are blocked, so everything goes through 443: two such accounts
    chat both ways."""
    for port in (993, 143, 465, 587):
        firewall.block(ONBOARD_IP, port)
    to_443 = firewall.count_syn(ONBOARD_IP, 443)

    def manual_443(ac):
        addr, _localpart, password = onboard_relay.new_credentials()
        params = {
            "addr": addr,
            "password": password,
            "imapServer": ONBOARD_DOMAIN,
            "imapPort": 443,
            "imapSecurity": "ssl",
            "imapUser": addr,
            "smtpServer": ONBOARD_DOMAIN,
            "smtpPort": 443,
            "smtpSecurity": "ssl",
            "smtpUser": addr,
            "smtpPassword": password,
            "certificateChecks": "automatic",
        }
        return ac.add_or_update_transport.future(params)

    a = configure_peer("a443", manual_443, "manual settings, port 443")
    b = configure_peer("b443", manual_443, "manual settings, port 443")
    ab, ba = vcard_chats(a, b)
    send_text(ab, "over 443, from a")
    expect(b, "over 443, from a", RECEIVE_TIMEOUT)
    send_text(ba, "over 443, from b")
    expect(a, "over 443, from b", RECEIVE_TIMEOUT)
    assert firewall.packets(to_443) >= 4, "fewer connections to port 443 than IMAP and SMTP of two accounts"


# --------------------------------------------------------------------------- the web page

QR_LINK = re.compile(r'<div class="qr">.*?</div>\s*<p><code>(?P<link>[^<]+)</code></p>', re.S)


def test_index_page_qr_code_is_the_link_it_shows(onboard_relay, configure_peer, tmp_path):
    """A headless Chromium renders the relay's index page (self-signed: certificate errors
    ignored); zbarimg reads the QR code in the screenshot; it is exactly the link the same page
    shows under it (the page makes fresh credentials each time, so both come from one load), and
    Delta Chat takes that link to an account that reaches IDLE."""
    chromium = need_tool("chromium", "chromium")
    zbarimg = need_tool("zbarimg", "zbar-tools")
    png = tmp_path / "index.png"
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",  # root
        "--disable-gpu",
        "--ignore-certificate-errors",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1000,1600",
        "--hide-scrollbars",
        f"--screenshot={png}",
        "--dump-dom",
        f"https://{ONBOARD_DOMAIN}/",
    ]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=90 * TIME_SCALE)
    assert r.returncode == 0 and png.exists(), f"chromium exit {r.returncode}: {r.stderr[-3000:]}"
    METRICS.append(f"chromium screenshot of the index page: {time.monotonic() - t0:.2f} s")
    m = QR_LINK.search(r.stdout)
    assert m, f"no QR code with a link under it in the page:\n{r.stdout[:5000]}"
    shown = html.unescape(m.group("link"))
    assert shown.startswith("dclogin:") and f"@{ONBOARD_DOMAIN}?" in shown, shown
    button = re.search(r'<a class="button" href="([^"]+)"', r.stdout)
    assert button and html.unescape(button.group(1)) == shown, "the button links elsewhere than the code shown"

    z = subprocess.run([zbarimg, "--raw", "-q", str(png)], capture_output=True, text=True, timeout=30 * TIME_SCALE)
    assert z.returncode == 0, f"zbarimg found no code in {png} (exit {z.returncode}): {z.stderr}"
    decoded = z.stdout.strip().splitlines()
    assert decoded == [shown], f"the QR code says {decoded}, the page shows {shown!r}"

    p = configure_peer("scanned", lambda ac: ac.add_transport_from_qr.future(shown), "add_transport_from_qr dclogin")
    assert_created_at_first_login(onboard_relay, p)
