"""Trusting every address's forwarding header is refused whatever ``BASIC_AUTH`` says.

With ``BASIC_AUTH=required`` the gateway took ``ALLOWED_PROXIES=0.0.0.0/0``
(passwords are still needed, after all; "we are behind a load balancer whose
addresses change" is how it gets written). But then every client is a trusted
proxy and names its own address in ``X-Forwarded-For``: failed logins are
counted per address the client claims, so a new claim is a new
``AUTH_MAX_FAILURES`` budget (unlimited password guessing), and
``MAX_CONNECTIONS_PER_CLIENT`` exempts it as a proxy.

Against a real gateway: start-up must stop (exit 2, naming ``ALLOWED_PROXIES``).
Where it starts, the test shows the guessing that got through.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.gateway.procs import GatewayProcess, gateway_settings, passwords_only
from tests.hostile.wire import basic, send
from tests.system import free_port


@pytest.mark.parametrize("proxies", ["0.0.0.0/0", "0.0.0.0/1, 128.0.0.0/1", "::/0"])
def test_every_address_as_a_proxy_is_refused_with_passwords_required(
    tmp_path: Path, proxies: str
) -> None:
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "alice's password")
    port = free_port()
    settings = gateway_settings(tmp_path, port, **passwords_only(tmp_path),
                                ALLOWED_PROXIES=proxies, AUTH_MAX_FAILURES="3")
    gw = GatewayProcess(tmp_path, settings)
    try:
        deadline = time.monotonic() + 30
        while gw.proc.poll() is None:
            if "acmegw-server: ready" in gw.stderr:
                guesses = [
                    send(port, "GET", "/metrics", headers={
                        **basic("alice", f"guess {n}"), "X-Forwarded-For": f"198.51.100.{n}",
                    }).status
                    for n in range(1, 11)
                ]
                pytest.fail(f"it started, and 10 guesses claiming 10 addresses got {guesses} "
                            "(AUTH_MAX_FAILURES=3)")
            assert time.monotonic() < deadline, gw.describe()
            time.sleep(0.05)
    finally:
        gw.stop()
    assert gw.proc.returncode == 2, gw.describe()
    assert "ALLOWED_PROXIES trusts the forwarding header of every" in gw.stderr, gw.stderr
