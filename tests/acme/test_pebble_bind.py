"""acmegw-acme against a real pebble that validates at a real BIND, updated by RFC 2136.

BIND (``tests.servers.bind``: TSIG, an update policy limited to the
``_acme-challenge`` names) is the zone's only server; pebble's ``-dnsserver``
points at it, validation is real and EAB is required. Two ways to publish:

* through the real gateway (``python -m gateway``, ``PROVIDER=rfc2136``, plain
  HTTP on loopback with basic auth, ``PROPAGATION_NAMESERVERS`` = BIND), for
  ``example.test`` + ``*.example.test`` with an rsa3072 key;
* in-process (``--provider rfc2136`` with ``RFC2136_*`` in the environment and
  ``--propagation-nameservers`` = BIND, so the client itself waits until BIND
  serves each value), for ``www.example.test`` with an ec384 key.

Each run leaves no TXT value behind at BIND: also one stopped by SIGTERM while it
waits for propagation (in both modes), and, through the next run, one killed by SIGKILL.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lib.acme.cli import main
from lib.passwd import PasswordFile
from tests.gateway.procs import REPO_ROOT, GatewayProcess, running_gateway, write_secret_file
from tests.servers.bind import CHALLENGE_LABELS, BindServer, start_primary
from tests.servers.pebble import Pebble, running_pebble
from tests.system import free_port

pytestmark = pytest.mark.system

USER, PASSWORD = "web1", "bind: gateway password"
EAB_KID = "kid-7"
EAB_KEY = "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH"


@dataclass
class Site:
    folder: Path
    bind: BindServer
    pebble: Pebble
    gateway: GatewayProcess
    gateway_url: str
    password_file: Path
    secret_file: Path

    def run(self, *args: str, state: Path | None = None) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--state-dir", str(state or self.folder / "state"),
                "--ca-file", str(self.pebble.ca_file)]
        if args[0] == "issue":
            argv += ["--server", self.pebble.url, "--agree-tos", "--eab-kid", EAB_KID,
                     "--eab-hmac-key", EAB_KEY]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
        for secret in (PASSWORD, EAB_KEY, self.bind.key.secret):
            assert secret not in out.getvalue() + err.getvalue()
        return status, out.getvalue(), err.getvalue()

    def provider_env(self) -> dict[str, str]:
        """What --provider rfc2136 needs in the environment to reach BIND."""
        return {"RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": str(self.bind.port),
                "RFC2136_TSIG_KEY_NAME": self.bind.key.name,
                "RFC2136_TSIG_SECRET_FILE": str(self.secret_file),
                "RFC2136_TSIG_ALGORITHM": self.bind.key.algorithm}

    def leaf_and_key(self, name: str) -> tuple[x509.Certificate, object]:
        files = self.folder / "state" / "certificates" / name
        leaf = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((files / "privkey.pem").read_bytes(), None)
        return leaf, key


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("acme-bind")
    bind = start_primary(folder / "bind", challenge_labels=(
        *CHALLENGE_LABELS, "_acme-challenge.sigterm-provider", "_acme-challenge.sigterm-gateway",
        "_acme-challenge.sigkill"))
    try:
        secret_file = write_secret_file(folder / "tsig.secret", bind.key.secret + "\n")
        PasswordFile(folder / "acmepasswd").set_user(USER, PASSWORD)
        password_file = write_secret_file(folder / "web1.password", PASSWORD)
        gw_port = free_port()
        settings = {
            "PROVIDER": "rfc2136",
            "RFC2136_SERVER": "127.0.0.1",
            "RFC2136_PORT": str(bind.port),
            "RFC2136_TSIG_KEY_NAME": bind.key.name,
            "RFC2136_TSIG_SECRET_FILE": str(secret_file),
            "RFC2136_TSIG_ALGORITHM": bind.key.algorithm,
            "PROPAGATION_NAMESERVERS": bind.address,
            "DNSAPI_DOMAINS": "example.test",
            "LISTEN": f"127.0.0.1:{gw_port}",
            "BASIC_AUTH": "required",
            "PASSWD_FILE": str(folder / "acmepasswd"),
            "STATE_DIR": str(folder / "gw-state"),
        }
        with running_pebble(folder / "pebble", bind.address, eab_keys={EAB_KID: EAB_KEY},
                            reject_nonces=True) as pebble, \
                running_gateway(folder, settings) as gateway:
            yield Site(folder, bind, pebble, gateway, f"http://127.0.0.1:{gw_port}/",
                       password_file, secret_file)
    finally:
        bind.stop()


def test_rsa3072_through_the_gateway_to_bind(site: Site) -> None:
    status, out, err = site.run(
        "issue", "-d", "example.test", "-d", "*.example.test", "--key-type", "rsa3072",
        "--gateway-url", site.gateway_url, "--gateway-user", USER,
        "--gateway-password-file", str(site.password_file))
    assert status == 0, f"{err}\n--- gateway\n{site.gateway.stderr[-3000:]}\n" \
                        f"--- pebble\n{site.pebble.server.output()[-2000:]}"
    assert "example.test: issued" in out
    leaf, key = site.leaf_and_key("example.test")
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 3072
    assert leaf.public_key() == key.public_key()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"example.test", "*.example.test"}
    assert "Finalize: CSR for 2 name(s), rsa3072 key" in err
    assert site.bind.txt("_acme-challenge.example.test") == set()

    # A forced renewal goes the same way, with the settings kept from the issue.
    status, _, err = site.run("renew", "--force")
    assert status == 0, err
    renewed, key2 = site.leaf_and_key("example.test")
    assert renewed.serial_number != leaf.serial_number
    assert isinstance(key2, rsa.RSAPrivateKey) and key2.key_size == 3072
    assert site.bind.txt("_acme-challenge.example.test") == set()


def test_ec384_with_the_rfc2136_provider_in_process(site: Site,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for setting, value in site.provider_env().items():
        monkeypatch.setenv(setting, value)
    monkeypatch.delenv("PROVIDER", raising=False)
    status, _, err = site.run(
        "issue", "-d", "www.example.test", "--key-type", "ec384", "--provider", "rfc2136",
        "--propagation-nameservers", site.bind.address, "--propagation-timeout", "20")
    assert status == 0, f"{err}\n--- pebble\n{site.pebble.server.output()[-2000:]}"
    assert "rfc2136 published 1 value(s)" in err
    assert f"every value is served by {site.bind.address}" in err
    leaf, key = site.leaf_and_key("www.example.test")
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert leaf.public_key() == key.public_key()
    assert site.bind.txt("_acme-challenge.www.example.test") == set()


# --- stopped mid-order: SIGTERM withdraws the values, SIGKILL leaves them to the next run ----


@contextlib.contextmanager
def silent_nameserver() -> Iterator[str]:
    """A UDP port on loopback that takes queries and never answers: a propagation wait
    that lasts until the client is stopped."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def start_client(site: Site, state: Path, name: str, *how: str) -> subprocess.Popen[str]:
    """acmegw-acme as systemd runs it: its own process, stopped by a signal."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **site.provider_env()}
    env.pop("PROVIDER", None)
    return subprocess.Popen(
        [sys.executable, "-m", "lib.acme", "issue", "-d", name, *how,
         "--server", site.pebble.url, "--agree-tos", "--eab-kid", EAB_KID, "--eab-hmac-key",
         EAB_KEY, "--state-dir", str(state), "--ca-file", str(site.pebble.ca_file)],
        cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def published(site: Site, fqdn: str, client: subprocess.Popen[str]) -> set[str]:
    """The values at *fqdn* once BIND serves one (the client is then waiting)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        values = site.bind.txt(fqdn)
        if values:
            return values
        assert client.poll() is None, client.communicate()
        time.sleep(0.1)
    client.kill()
    raise AssertionError(f"nothing published at {fqdn}: {client.communicate()}")


@pytest.mark.parametrize("mode", ["provider", "gateway"])
def test_sigterm_withdraws_what_was_published(site: Site, tmp_path: Path, mode: str) -> None:
    name = f"sigterm-{mode}.example.test"
    how = (["--provider", "rfc2136"] if mode == "provider" else
           ["--gateway-url", site.gateway_url, "--gateway-user", USER,
            "--gateway-password-file", str(site.password_file)])
    with silent_nameserver() as silent:
        client = start_client(site, tmp_path / "state", name, *how,
                              "--propagation-nameservers", f"{site.bind.address},{silent}")
        published(site, f"_acme-challenge.{name}", client)
        client.send_signal(signal.SIGTERM)
        _, err = client.communicate(timeout=60)
    assert client.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "Removed the 1 TXT value(s)" in err
    assert site.bind.txt(f"_acme-challenge.{name}") == set()


def test_values_left_by_a_killed_run_are_withdrawn_by_the_next(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name, state = "sigkill.example.test", tmp_path / "state"
    with silent_nameserver() as silent:
        client = start_client(site, state, name, "--provider", "rfc2136",
                              "--propagation-nameservers", f"{site.bind.address},{silent}")
        values = published(site, f"_acme-challenge.{name}", client)
        client.kill()
        client.communicate(timeout=60)
    assert site.bind.txt(f"_acme-challenge.{name}") == values  # nothing could remove them

    for setting, value in site.provider_env().items():
        monkeypatch.setenv(setting, value)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["renew", "--state-dir", str(state), "--ca-file",
                       str(site.pebble.ca_file)])
    assert status == 0, err.getvalue()
    assert f"{name}: removed 1 TXT value(s) left by an earlier run" in err.getvalue()
    assert site.bind.txt(f"_acme-challenge.{name}") == set()


def test_a_provider_renewal_needs_no_environment_but_its_secrets(
        site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renewals run from a timer, without the environment the certificate was issued
    with: the provider's settings are kept (a secret only as its *_FILE path)."""
    state = tmp_path / "state"
    for setting, value in site.provider_env().items():
        monkeypatch.setenv(setting, value)
    monkeypatch.delenv("PROVIDER", raising=False)
    status, _, err = site.run("issue", "-d", "www.example.test", "--provider", "rfc2136",
                              "--propagation-nameservers", site.bind.address, state=state)
    assert status == 0, err
    meta = (tmp_path / "state" / "certificates" / "www.example.test" / "meta.json").read_text()
    assert site.bind.key.secret not in meta and str(site.secret_file) in meta

    for setting in site.provider_env():
        monkeypatch.delenv(setting)
    status, out, err = site.run("renew", "--force", state=state)
    assert status == 0, err
    assert "www.example.test: renewed" in out

    # A secret given directly is not kept: issue warns, and renew says so up front.
    monkeypatch.setenv("RFC2136_TSIG_SECRET", site.bind.key.secret)
    for setting, value in site.provider_env().items():
        if setting != "RFC2136_TSIG_SECRET_FILE":
            monkeypatch.setenv(setting, value)
    status, _, err = site.run("issue", "-d", "sub.example.test", "--provider", "rfc2136",
                              "--propagation-nameservers", site.bind.address, state=state)
    assert status == 0, err
    assert "RFC2136_TSIG_SECRET is a secret and is not kept" in err
    monkeypatch.delenv("RFC2136_TSIG_SECRET")
    status, out, err = site.run("renew", "--force", "--name", "sub.example.test",
                                state=state)
    assert status == 1
    assert "a secret given directly must be in it" in out
    assert "newOrder" not in err
