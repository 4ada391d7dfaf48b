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

Each run leaves no TXT value behind at BIND.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lib.acme.cli import main
from lib.passwd import PasswordFile
from tests.gateway.procs import GatewayProcess, running_gateway
from tests.servers.bind import BindServer, start_primary
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

    def run(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--state-dir", str(self.folder / "state"),
                "--ca-file", str(self.pebble.ca_file)]
        if args[0] == "issue":
            argv += ["--server", self.pebble.url, "--agree-tos", "--eab-kid", EAB_KID,
                     "--eab-hmac-key", EAB_KEY]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
        for secret in (PASSWORD, EAB_KEY, self.bind.key.secret):
            assert secret not in out.getvalue() + err.getvalue()
        return status, out.getvalue(), err.getvalue()

    def leaf_and_key(self, name: str) -> tuple[x509.Certificate, object]:
        files = self.folder / "state" / "certificates" / name
        leaf = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
        key = serialization.load_pem_private_key((files / "privkey.pem").read_bytes(), None)
        return leaf, key


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("acme-bind")
    bind = start_primary(folder / "bind")
    try:
        secret_file = folder / "tsig.secret"
        secret_file.write_text(bind.key.secret + "\n")
        secret_file.chmod(0o600)
        PasswordFile(folder / "acmepasswd").set_user(USER, PASSWORD)
        password_file = folder / "web1.password"
        password_file.write_text(PASSWORD)
        password_file.chmod(0o600)
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
    for setting, value in {"RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": str(site.bind.port),
                       "RFC2136_TSIG_KEY_NAME": site.bind.key.name,
                       "RFC2136_TSIG_SECRET_FILE": str(site.secret_file),
                       "RFC2136_TSIG_ALGORITHM": site.bind.key.algorithm}.items():
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
