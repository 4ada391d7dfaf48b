"""acmegw-acme against a real pebble, publishing through the real gateway's builtin DNS.

Everything is real and on loopback: the gateway runs as ``python -m gateway``
(HTTPS with a test CA, basic auth required, ``PROVIDER=builtin``), pebble runs
with ``-dnsserver`` at the gateway's builtin DNS port, real validation, EAB
required and one alternate root (``PEBBLE_ALTERNATE_ROOTS=1``), and its default
5 % of rejected nonces. The client obtains ``example.test`` +
``*.example.test`` with an ec256 key on the alternate chain, then renews,
rolls its account key over and revokes, and never prints a secret.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lib.acme.cli import main
from lib.acme.client import AcmeClient
from lib.passwd import PasswordFile
from tests.gateway.procs import (
    REPO_ROOT,
    GatewayProcess,
    builtin_settings,
    passwords_only,
    running_gateway,
    write_secret_file,
)
from tests.servers.certs import make_tls_files
from tests.servers.pebble import Pebble, running_pebble
from tests.system import free_port

pytestmark = pytest.mark.system

USER, PASSWORD = "web1", "gateway: secret password"
EAB_KID = "kid-1"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"


@dataclass
class Site:
    folder: Path
    pebble: Pebble
    gateway: GatewayProcess
    gateway_url: str
    gateway_ca: Path
    password_file: Path
    eab_file: Path

    @property
    def state(self) -> Path:
        return self.folder / "state"

    def run(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = [*args, "--state-dir", str(self.state), "--ca-file", str(self.pebble.ca_file)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
        output = out.getvalue() + err.getvalue()
        assert PASSWORD not in output and EAB_KEY not in output
        return status, out.getvalue(), err.getvalue()

    def issue_args(self, *extra: str) -> list[str]:
        return ["issue", "-d", "example.test", "-d", "*.example.test",
                "--server", self.pebble.url, "--agree-tos", "--email", "admin@example.test",
                "--eab-kid", EAB_KID, "--eab-hmac-key-file", str(self.eab_file),
                "--gateway-url", self.gateway_url, "--gateway-user", USER,
                "--gateway-password-file", str(self.password_file),
                "--gateway-ca-file", str(self.gateway_ca), *extra]

    def files(self, name: str = "example.test") -> Path:
        return self.state / "certificates" / name


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("acme-gateway")
    dns_port, gw_port = free_port(), free_port()
    tls = make_tls_files(folder / "gw-tls", ca_name="acmegw gateway test CA")
    PasswordFile(folder / "acmepasswd").set_user(USER, PASSWORD, domains=["example.test"])
    password_file = write_secret_file(folder / "web1.password", PASSWORD + "\n")
    eab_file = write_secret_file(folder / "eab.key", EAB_KEY + "\n")
    settings = builtin_settings(
        folder, gw_port, dns_port, **passwords_only(folder),
        BUILTIN_NS="ns.example.test",
        SSL_CERT=str(tls.cert),
        SSL_KEY=str(tls.key),
        STATE_DIR=str(folder / "gw-state"),  # the client's own state is folder / "state"
    )
    with running_pebble(folder / "pebble", f"127.0.0.1:{dns_port}", eab_keys={EAB_KID: EAB_KEY},
                        alternate_roots=1, reject_nonces=True) as pebble, \
            running_gateway(folder, settings) as gateway:
        yield Site(folder, pebble, gateway, f"https://127.0.0.1:{gw_port}/", tls.ca,
                   password_file, eab_file)


def test_eab_is_required_and_the_password_file_must_be_private(site: Site) -> None:
    status, _, err = site.run("issue", "-d", "example.test", "--server", site.pebble.url,
                              "--agree-tos", "--gateway-url", site.gateway_url,
                              "--gateway-user", USER, "--gateway-password-file",
                              str(site.password_file), "--gateway-ca-file", str(site.gateway_ca))
    assert status == 2
    assert "requires external account binding: pass --eab-kid and --eab-hmac-key" in err

    loose = site.folder / "loose.password"
    loose.write_text(PASSWORD)
    loose.chmod(0o644)
    args = site.issue_args()
    args[args.index(str(site.password_file))] = str(loose)
    status, _, err = site.run(*args)
    assert status == 2
    assert f"{loose} is readable by group or others; run: chmod 600 {loose}" in err


def test_issue_renew_rollover_revoke(site: Site) -> None:
    roots = site.pebble.root_names(2)
    hook_out = site.folder / "hook.out"
    status, out, err = site.run(*site.issue_args(
        "--key-type", "ec256", "--preferred-chain", roots[1],
        "--deploy-hook", f'echo "$RENEWED_DOMAINS|$RENEWED_LINEAGE" >> {hook_out}'))
    assert status == 0, f"{err}\n--- pebble\n{site.pebble.server.output()[-3000:]}\n" \
                        f"--- gateway\n{site.gateway.stderr[-3000:]}"
    files = site.files()
    assert "example.test: issued" in out
    assert "Account" in err and "bound to external account kid-1" in err
    # The wait for the gateway (up to minutes) is announced before it starts.
    assert err.index("DNS: waiting until the 2 value(s) are served (at most") < \
        err.index("DNS: the gateway published 2 value(s)")
    assert f'using "{roots[1]}"' in err

    leaf = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
    chain = x509.load_pem_x509_certificates((files / "chain.pem").read_bytes())
    key = serialization.load_pem_private_key((files / "privkey.pem").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert leaf.public_key() == key.public_key()
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"example.test", "*.example.test"}
    assert chain[-1].issuer.rfc4514_string() == f"CN={roots[1]}"
    assert (files / "fullchain.pem").read_bytes() == \
        (files / "cert.pem").read_bytes() + (files / "chain.pem").read_bytes()
    assert (files / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert hook_out.read_text() == f"example.test *.example.test|{files}\n"
    # Both values went through the gateway (the audit log names the user and the name).
    assert site.gateway.stderr.count("_acme-challenge.example.test") >= 2
    assert PASSWORD not in site.gateway.stderr

    # Not due: a pebble certificate lives five years.
    status, out, err = site.run("renew")
    assert status == 0 and "not due" in err, err
    assert x509.load_pem_x509_certificate((files / "cert.pem").read_bytes()) == leaf

    # Forced renewal through the console entry point, as cron would run it: no options
    # but the state directory (the CA file was remembered).
    done = subprocess.run(
        [sys.executable, "-m", "lib.acme", "renew", "--force", "--quiet",
         "--state-dir", str(site.state)],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""
    renewed = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
    assert renewed.serial_number != leaf.serial_number
    versions = sorted((files / "versions").iterdir())
    assert len(versions) == 2 and os.readlink(files / "current") == f"versions/{versions[1].name}"
    assert x509.load_pem_x509_certificate((versions[0] / "cert.pem").read_bytes()) == leaf
    assert (versions[0] / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert hook_out.read_text().count("\n") == 2

    # Roll the account key over, then revoke with the new key.
    status, out, err = site.run("account", "rollover", "--server", site.pebble.url)
    assert status == 0, err
    assert "now signed with the new key" in err
    status, out, err = site.run("revoke", "--cert", str(files / "cert.pem"),
                                "--reason", "keyCompromise")
    assert status == 0, err
    serial = format(renewed.serial_number, "x")
    record = site.pebble.cert_status(serial)
    assert record["Status"] == "Revoked" and record["Reason"] == 1

    status, out, _ = site.run("list", "--json")
    rows = json.loads(out)["certificates"]
    assert status == 0
    assert [(r["name"], r["state"]) for r in rows] == [("example.test", "revoked (keyCompromise)")]


def test_an_idn_is_ordered_as_its_idna_2008_name(site: Site) -> None:
    """``-d straße.example.test`` is ``xn--strae-oqa`` for the CA, not IDNA 2003's ``strasse``."""
    args = site.issue_args()
    args[args.index("example.test"):args.index("*.example.test") + 1] = [
        "straße.example.test", "-d", "*.STRASSE.example.test"]
    status, _, err = site.run(*args)
    assert status == 0, f"{err}\n--- gateway\n{site.gateway.stderr[-3000:]}"
    files = site.files("xn--strae-oqa.example.test")
    leaf = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"xn--strae-oqa.example.test",
                                                           "*.strasse.example.test"}
    assert "_acme-challenge.xn--strae-oqa.example.test" in site.gateway.stderr


class Crash(BaseException):
    """The process died here."""


def test_an_order_finalized_by_a_killed_run_is_resumed_by_the_next(
        site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """pebble keeps the order and issues its certificate; the next run downloads that one
    with the key kept beside the order, instead of having pebble issue a second."""
    real = AcmeClient.finalize

    def finalize_then_die(self: AcmeClient, *args: Any) -> Any:
        real(self, *args)
        raise Crash("killed after the CSR was sent")

    args = site.issue_args("--name", "resumed")
    monkeypatch.setattr(AcmeClient, "finalize", finalize_then_die)
    with pytest.raises(Crash):
        site.run(*args)
    monkeypatch.setattr(AcmeClient, "finalize", real)
    status, _, err = site.run(*args)
    assert status == 0, err
    assert "Resuming order" in err and "Finalize" not in err.split("Resuming order")[1]
    files = site.files("resumed")
    key = serialization.load_pem_private_key((files / "privkey.pem").read_bytes(), None)
    assert x509.load_pem_x509_certificate((files / "cert.pem").read_bytes()).public_key() \
        == key.public_key()


@pytest.mark.parametrize("mistake", ["password", "trust", "name"])
def test_the_gateway_is_checked_before_anything_is_ordered(site: Site, tmp_path: Path,
                                                           mistake: str) -> None:
    """A refusal by the gateway used to come after the order was placed (each failed run
    left a pending order at the CA) and a TLS failure said only "(SSLError)"."""
    args = site.issue_args("--name", f"check-{mistake}", "--state-dir", str(tmp_path / "s"))
    if mistake == "password":
        wrong = write_secret_file(tmp_path / "wrong.password", "not the password\n")
        args[args.index(str(site.password_file))] = str(wrong)
        expected = "HTTP 401"
    elif mistake == "trust":
        at = args.index("--gateway-ca-file")
        del args[at:at + 2]
        expected = "certificate verify failed"
    else:
        args[args.index("example.test"):args.index("*.example.test") + 1] = [
            "www.example.test", "-d", "www.example.org"]
        expected = "HTTP 403"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    assert status == 1, err.getvalue()
    assert "Checking the gateway" in err.getvalue()
    assert expected in out.getvalue(), out.getvalue()
    # The check is named as such (it said "gateway teardown of", a step nobody asked
    # for), and its parentheses pair up (it said "failed (... (_ssl.c:1006);").
    line = out.getvalue().strip()
    assert "gateway check of _acme-challenge." in line and "teardown" not in line, line
    assert line.count("(") == line.count(")"), line
    if mistake == "trust":
        assert "pass --gateway-ca-file" in out.getvalue()
    # Nothing reached the CA: not even its directory.
    assert "Directory" not in err.getvalue() and "newOrder" not in err.getvalue()


def test_a_csr_of_the_users_own_is_issued_and_renewed(site: Site, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "csr.example.test")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("csr.example.test"),
                                                       x509.DNSName("www.example.test")]),
                          critical=False)
           .sign(key, hashes.SHA384()))
    csr_file = tmp_path / "request.csr"
    csr_file.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    args = site.issue_args("--csr", str(csr_file))
    at = args.index("-d")
    del args[at:at + 4]  # the names come from the CSR
    status, _, err = site.run(*args)
    assert status == 0, err
    assert "Finalize: your CSR for 2 name(s), ec384 key" in err
    files = site.files("csr.example.test")
    first = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
    assert first.public_key() == key.public_key()
    assert not (files / "privkey.pem").exists()  # the key is the user's, never ours

    status, _, err = site.run("renew", "--force", "--name", "csr.example.test")
    assert status == 0, err
    renewed = x509.load_pem_x509_certificate((files / "cert.pem").read_bytes())
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() == key.public_key()

    status, _, err = site.run(*args, "--must-staple")
    assert status == 2 and "--csr and --must-staple do not go together" in err
