"""Attacks on the hook (issue 12), each replayed against the hook as a process of its own.

mod_md logs every line the hook prints, runs it with no time limit and hands it the
environment and files an administrator set up; these tests play the attacker (or the
confused administrator) on the wire and in the file system, and check what reaches
the proxy, the log, stderr and the gateway.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.hooks.conftest import (
    PASSWORDS,
    GatewayFactory,
    RecordingProxy,
    bare_env,
    one_line,
    spawn,
)

pytestmark = pytest.mark.usefixtures("no_etc_conf")


async def run_hook(*args: str, timeout: float = 30.0, **settings: str) -> tuple[int, str]:
    """The hook as mod_md runs it; its exit status and stderr (stdout must stay empty)."""
    status, out, err = await spawn(["-m", "hooks", *args], bare_env(**settings),
                                   timeout=timeout)
    assert out == ""
    return status, err


def setup_args() -> tuple[str, str, str]:
    return ("setup", "example.test", make_value())


# -- item 12: credentials in a URL are never printed ----------------------------------


@pytest.mark.parametrize("url", [
    "https://alice:Pw-1X9q@gw.example.net/",
    "https://alice:Pw-1X9q@gw.example.net:99999/",  # a bad port, shown with the URL
    "https://alice:Pw-1X9q@gw.example.net:x/",
    "https://alice:Pw-1X9q @gw.example.net/",  # a space
    "https://alice:Pw-1X9q@/",  # no host
    "https://alice:Pw-1X9q@[::1/",
    "ftp://alice:Pw-1X9q@gw.example.net/",  # not http
    "alice:Pw-1X9q@gw.example.net",  # no scheme
    "https://alice:Pw-1X9q/x@gw.example.net/",  # a "/" in the password ends the authority
    "https://alice:Pw-1X9q#x@gw.example.net/",
    "https://Pw-1X9q@gw.example.net/",  # a token as the user
])
async def test_a_url_with_credentials_is_refused_without_showing_them(
    url: str, tmp_path: Path,
) -> None:
    log = tmp_path / "hook.log"
    status, err = await run_hook(*setup_args(), ACMEGW_URL=url, ACMEGW_LOG=str(log))
    assert status == 2
    line = one_line(err)
    assert "Pw-1X9q" not in line
    assert "ACMEGW_URL holds a user name or password" in line
    assert "the password in the file named by ACMEGW_PASSWORD_FILE" in line
    assert not log.exists() or "Pw-1X9q" not in log.read_text()


# -- item 7: a password never passes a proxy in plaintext ---------------------------


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY", "all_proxy"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_gateway_is_never_reached_through_a_proxy(
    gateway: GatewayFactory, recording_proxy: RecordingProxy, variable: str, host: str,
) -> None:
    gw = await gateway()
    url = gw.url.replace("127.0.0.1", host)
    value = make_value()
    status, err = await run_hook("setup", "example.test", value, ACMEGW_URL=url,
                                 ACMEGW_USER="alice", ACMEGW_PASSWORD=PASSWORDS["alice"],
                                 **{variable: recording_proxy.url})
    assert (status, err) == (0, "")
    assert recording_proxy.connections == 0, recording_proxy.requests
    assert gw.provider.values("_acme-challenge.example.test") == [value]


async def test_plain_http_with_a_password_is_not_handed_to_a_proxy(
    recording_proxy: RecordingProxy,
) -> None:
    # ACMEGW_INSECURE_HTTP=1 says the path to the gateway is protected; the proxy is not.
    status, err = await run_hook(*setup_args(), ACMEGW_URL="http://gw.example.test/",
                                 ACMEGW_INSECURE_HTTP="1", ACMEGW_USER="alice",
                                 ACMEGW_PASSWORD="Pw-1X9q", HTTP_PROXY=recording_proxy.url)
    assert status == 2
    line = one_line(err)
    assert "would hand the password to the proxy" in line and "NO_PROXY" in line
    assert "Pw-1X9q" not in line
    assert recording_proxy.connections == 0, recording_proxy.requests
