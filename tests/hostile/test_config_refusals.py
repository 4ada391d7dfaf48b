"""A confused admin's configuration is refused, never quietly made more open.

Each case starts the real gateway (``python -m gateway``) the way an admin
would. A configuration that would let every address in without a password,
or that writes a network with host bits set (``192.0.2.10/0``, which Python's
``ip_network(strict=False)`` turns into ``0.0.0.0/0``), must stop start-up with
exit status 2 and a message naming the setting; ``--check-config`` must say
the same. Where the gateway does start, the test shows what the mistake let
through.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, run_gateway
from tests.hostile.wire import basic, send
from tests.system import free_port


def base_settings(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    PasswordFile(tmp / "acmepasswd").set_user("alice", "alice's password", roles=["admin"])
    return {
        "PROVIDER": "memory",
        "DNSAPI_DOMAINS": "example.test",
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(tmp / "state"),
        "PROPAGATION_CHECK": "off",
        "PASSWD_FILE": str(tmp / "acmepasswd"),
        **extra,
    }


def start(tmp: Path, settings: dict[str, str], port: int) -> tuple[int | None, str]:
    """Start the gateway: (its exit status, stderr) if it refuses, or (None, what an
    anonymous setup from 127.0.0.1 got) if it serves."""
    gw = GatewayProcess(tmp, settings)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if gw.proc.poll() is not None:
                return gw.proc.returncode, gw.stderr
            if "acmegw-server: ready" in gw.stderr:
                body = {"argument": "setup", "domain_name": "example.test",
                        "challenge_content": make_value()}
                answer = send(port, "POST", "/", body=body)
                return None, f"it started, and an anonymous setup got {answer.status}"
            time.sleep(0.05)
        raise AssertionError(gw.describe())
    finally:
        gw.stop()


REFUSED = [
    ({"BASIC_AUTH": "off", "ALLOWED_HOSTS": "192.0.2.10/0"}, "host bits"),
    ({"BASIC_AUTH": "sufficient", "ALLOWED_HOSTS": "10.1.2.3/8"}, "host bits"),
    ({"BASIC_AUTH": "off", "ALLOWED_HOSTS": "0.0.0.0/0"}, "ALLOWED_HOSTS lets every IPv4"),
    ({"BASIC_AUTH": "sufficient", "ALLOWED_HOSTS": "::/0"}, "ALLOWED_HOSTS lets every"),
    ({"BASIC_AUTH": "off", "ALLOWED_HOSTS": "10.0.0.0/8", "ALLOWED_PROXIES": "0.0.0.0/0"},
     "ALLOWED_PROXIES trusts"),
    ({"BASIC_AUTH": "required", "ALLOWED_PROXIES": "127.0.0.1/24"}, "host bits"),
]


@pytest.mark.parametrize(("settings", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_start_up_refuses(tmp_path: Path, settings: dict[str, str], message: str) -> None:
    port = free_port()
    env = base_settings(tmp_path, port, **settings)
    status, said = start(tmp_path, env, port)
    assert status == 2, said
    assert message in said
    check = run_gateway(tmp_path, env, ["--check-config"])
    assert check.returncode == 2 and message in check.stderr, check.stderr


def test_accounts_file_allowfrom_with_host_bits_is_refused(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps({"accounts": [
        {"username": "u", "password": "p" * 40, "subdomain": "s",
         "fulldomain": "s.acme.example.test", "allowfrom": ["127.0.0.1/8"]},
    ]}))
    accounts.chmod(0o600)
    port = free_port()
    env = base_settings(tmp_path, port, BASIC_AUTH="required", ACMEDNS_ZONE="acme.example.test",
                        ACMEDNS_ACCOUNTS_FILE=str(accounts))
    status, said = start(tmp_path, env, port)
    assert status == 2, said
    assert "allowfrom" in said and "host bits" in said


def test_register_refuses_allowfrom_with_host_bits(tmp_path: Path) -> None:
    port = free_port()
    env = base_settings(tmp_path, port, BASIC_AUTH="required", ACMEDNS_ZONE="acme.example.test",
                        ACMEDNS_REGISTER="1")
    gw = GatewayProcess(tmp_path, env)
    try:
        gw.wait_ready()
        admin = basic("alice", "alice's password")
        bad = send(port, "POST", "/register", headers=admin, body={"allowfrom": ["127.0.0.9/8"]})
        assert bad.status == 400, bad
        message = bad.json()["message"]
        assert message.startswith("allowfrom") and "host bits" in message
        good = send(port, "POST", "/register", headers=admin, body={"allowfrom": ["127.0.0.9"]})
        assert good.status == 201 and good.json()["allowfrom"] == ["127.0.0.9/32"]
    finally:
        gw.stop()
