"""A confused admin's configuration is refused, never quietly made more open.

Each case starts the real gateway (``python -m gateway``) the way an admin
would. These must stop start-up with exit status 2 and a message naming the
setting or file (``--check-config`` must say the same):

* a configuration that would let every address in without a password, or a
  network with host bits set (``192.0.2.10/0``, which Python's
  ``ip_network(strict=False)`` turns into ``0.0.0.0/0``);
* a file holding secrets that others may read: the password file, the TLS key,
  a dotenv file with a secret setting in it, a ``<KEY>_FILE`` secret, an
  acme-dns accounts file with keys in it. All of them are named in one message,
  each with the ``chmod`` that fixes it.

Where the gateway does start, the test shows what the mistake let through.
"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, run_gateway, write_accounts_file
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
    accounts = write_accounts_file(
        tmp_path / "accounts.json",
        {"username": "u", "password": "p" * 40, "subdomain": "s",
         "fulldomain": "s.acme.example.test", "allowfrom": ["127.0.0.1/8"]},
    )
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


# -- files that hold secrets -----------------------------------------------------------------

TSIG_SECRET = base64.b64encode(b"k" * 32).decode()


def secret_settings(tmp: Path, port: int) -> dict[str, str]:
    """Every kind of secret file at once, each private; the dotenv file holds the rest."""
    (tmp / "tsig.secret").write_text(TSIG_SECRET + "\n")
    accounts = write_accounts_file(
        tmp / "accounts.json",
        {"username": "u", "password": "p" * 40, "subdomain": "s",
         "fulldomain": "s.acme.example.test"},
    )
    dotenv = tmp / "gateway.env"
    dotenv.write_text(
        "PROVIDER=rfc2136\nRFC2136_SERVER=127.0.0.1\nRFC2136_TSIG_KEY_NAME=acmegw.\n"
        f"RFC2136_TSIG_SECRET_FILE={tmp / 'tsig.secret'}\n"
        # A provider that is not selected: its secret is a secret all the same.
        "CLOUDFLARE_API_TOKEN=not-used-but-secret\n"
    )
    settings = base_settings(tmp, port, BASIC_AUTH="required", ACMEDNS_ZONE="acme.example.test",
                             ACMEDNS_ACCOUNTS_FILE=str(accounts), DOTENV=str(dotenv))
    del settings["PROVIDER"]
    for path in (tmp / "tsig.secret", accounts, dotenv, tmp / "acmepasswd"):
        path.chmod(0o600)
    return settings


SECRET_FILES = {
    "PASSWD_FILE": "acmepasswd",
    "RFC2136_TSIG_SECRET_FILE": "tsig.secret",
    "ACMEDNS_ACCOUNTS_FILE (it holds acme-dns keys)": "accounts.json",
    "the dotenv file (it holds CLOUDFLARE_API_TOKEN)": "gateway.env",
}


def test_private_secret_files_start(tmp_path: Path) -> None:
    port = free_port()
    check = run_gateway(tmp_path, secret_settings(tmp_path, port), ["--check-config"])
    assert check.returncode == 0, check.stderr


def test_world_readable_secret_files_stop_start_up_all_named_at_once(tmp_path: Path) -> None:
    port = free_port()
    settings = secret_settings(tmp_path, port)
    for name in SECRET_FILES.values():
        (tmp_path / name).chmod(0o644)
    status, said = start(tmp_path, settings, port)
    assert status == 2, said
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 2
    for what, name in SECRET_FILES.items():
        path = tmp_path / name
        fix = "chmod 640" if os.geteuid() == 0 else "chmod 600"  # root's: group may read
        line = next((ln for ln in said.splitlines() if str(path) in ln), "")
        expected = f"- {what}: {path} holds secrets, but every user may read it (mode 644"
        assert line.strip().startswith(expected), said
        assert line.endswith(f"`{fix} {path}`"), line
        assert line in check.stderr
    assert TSIG_SECRET not in said and "not-used-but-secret" not in said


def test_a_dotenv_file_without_secrets_may_be_read(tmp_path: Path) -> None:
    port = free_port()
    settings = secret_settings(tmp_path, port)
    (tmp_path / "gateway.env").write_text("PROVIDER=memory\n")
    (tmp_path / "gateway.env").chmod(0o644)
    write_accounts_file(
        tmp_path / "accounts.json",
        {"username": "u", "password_hash": "sha256$00$00", "subdomain": "s",
         "fulldomain": "s.acme.example.test"},
        mode=0o644,  # hashes only: no secret
    )
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 0, check.stderr


def test_a_proxy_password_in_a_readable_dotenv_file_is_refused(tmp_path: Path) -> None:
    port = free_port()
    settings = base_settings(tmp_path, port, BASIC_AUTH="required")
    dotenv = tmp_path / "gateway.env"
    dotenv.write_text("ALL_PROXY=http://proxyuser:proxypass@127.0.0.1:3128\n")
    settings["DOTENV"] = str(dotenv)
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 2
    assert "the dotenv file (it holds ALL_PROXY)" in check.stderr
    assert "proxypass" not in check.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_group_read_is_for_root_owned_files_only(tmp_path: Path) -> None:
    port = free_port()
    settings = secret_settings(tmp_path, port)
    passwd = tmp_path / "acmepasswd"
    passwd.chmod(0o640)  # root:root 0640, as an admin grants a group (or Kubernetes fsGroup)
    assert run_gateway(tmp_path, settings, ["--check-config"]).returncode == 0
    os.chown(passwd, 65534, 65534)  # someone else's file that the group may read
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 2
    assert f"the group may read it (mode 640, owner uid 65534): run `chmod 600 {passwd}`" in (
        check.stderr
    )
