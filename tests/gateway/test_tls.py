"""HTTPS from the certificate files, renewals picked up live, never plaintext.

A throw-away CA and server certificates for 127.0.0.1 are made with
``cryptography`` (tests.gateway.certs); the gateway runs as a child process
(``python -m gateway``) on loopback with basic auth, and the test looks at the
certificate each new connection is served (its serial number) while it
replaces the files the way renewal tools do, completely or halfway.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config import TLSFiles
from gateway.tls import ReloadingTLS
from lib.passwd import PasswordFile
from tests.cancelling import assert_cancellation_reaches_the_caller
from tests.conftest import make_value
from tests.gateway.certs import CA, Pair
from tests.gateway.procs import GatewayProcess, run_gateway, running_gateway
from tests.system import free_port

USER, PASSWORD = "alice", "s3cret: with a colon"
RELOAD_INTERVAL = 0.2


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically, as certbot and most renewal tools do (keys with mode 600)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    os.replace(tmp, path)


class Site:
    """The gateway's TLS files, CA and settings in one folder."""

    def __init__(self, folder: Path, ca: CA, pair: Pair) -> None:
        self.folder = folder
        self.ca_file = folder / "ca.pem"
        self.ca_file.write_bytes(ca.pem())
        self.cert = folder / "tls" / "cert.pem"
        self.key = folder / "tls" / "key.pem"
        self.cert.parent.mkdir()
        self.install(pair)
        PasswordFile(folder / "acmepasswd").set_user(USER, PASSWORD)
        self.port = free_port()
        self.settings = {
            "PROVIDER": "memory",
            "DNSAPI_DOMAINS": "example.test",
            "LISTEN": f"127.0.0.1:{self.port}",
            "SSL_CERT": str(self.cert),
            "SSL_KEY": str(self.key),
            "BASIC_AUTH": "sufficient",
            "PASSWD_FILE": str(folder / "acmepasswd"),
            "STATE_DIR": str(folder / "state"),
            "TLS_RELOAD_INTERVAL": str(RELOAD_INTERVAL),
        }

    def install(self, pair: Pair) -> None:
        replace_file(self.key, pair.key, 0o600)
        replace_file(self.cert, pair.cert)

    def served_serial(self) -> int:
        """The serial of the certificate a new connection is served (verified against the CA)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with (
            socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
        ):
            der = conn.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def wait_for_serial(self, serial: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        seen = self.served_serial()
        while seen != serial and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = self.served_serial()
        assert seen == serial, f"still serving serial {seen}, expected {serial}"

    def keeps_serving(self, serial: int, seconds: float) -> None:
        """Every new connection for *seconds* gets a valid handshake with *serial*."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.served_serial() == serial
            time.sleep(0.05)


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


@pytest.fixture
def site(tmp_path: Path, ca: CA) -> Site:
    return Site(tmp_path, ca, ca.issue(100))


def setup_body() -> dict[str, str]:
    return {"argument": "setup", "domain_name": "example.test", "challenge_content": make_value()}


def test_https_with_basic_auth_and_no_plaintext_fallback(site: Site) -> None:
    with running_gateway(site.folder, site.settings) as gw:
        url = f"https://127.0.0.1:{site.port}/"
        answer = requests.post(
            url, json=setup_body(), auth=(USER, PASSWORD), verify=str(site.ca_file), timeout=10
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["fqdn"] == "_acme-challenge.example.test"
        answer = requests.post(
            url, json=setup_body(), auth=(USER, "wrong"), verify=str(site.ca_file), timeout=10
        )
        assert answer.status_code == 401

        # Plain HTTP to the TLS port gets no HTTP answer at all.
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(
                f"http://127.0.0.1:{site.port}/",
                json=setup_body(),
                auth=(USER, PASSWORD),
                timeout=10,
            )
        with socket.create_connection(("127.0.0.1", site.port), timeout=5) as raw:
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            try:
                reply = raw.recv(100)
            except ConnectionResetError:
                reply = b""
        assert not reply.startswith(b"HTTP/")
        assert gw.proc.poll() is None


def test_renewed_files_are_served_to_new_connections(site: Site, ca: CA) -> None:
    with running_gateway(site.folder, site.settings) as gw:
        assert site.served_serial() == 100
        site.install(ca.issue(200))
        site.wait_for_serial(200)
        assert "reloaded" in gw.stderr
        # Still a working gateway over the new certificate.
        answer = requests.post(
            f"https://127.0.0.1:{site.port}/",
            json=setup_body(),
            auth=(USER, PASSWORD),
            verify=str(site.ca_file),
            timeout=10,
        )
        assert answer.status_code == 201


def test_certbot_style_symlink_renewals_are_served(tmp_path: Path, ca: CA) -> None:
    # certbot keeps numbered files in archive/ and re-points the symlinks in live/.
    first, second = ca.issue(500), ca.issue(600)
    site = Site(tmp_path, ca, first)
    archive = tmp_path / "archive"
    archive.mkdir()
    for number, pair in ((1, first), (2, second)):
        (archive / f"cert{number}.pem").write_bytes(pair.cert)
        (archive / f"privkey{number}.pem").write_bytes(pair.key)
        (archive / f"privkey{number}.pem").chmod(0o600)

    def point(number: int) -> None:
        for link, target in ((site.key, f"privkey{number}.pem"), (site.cert, f"cert{number}.pem")):
            tmp = link.with_name(link.name + ".new")
            tmp.symlink_to(archive / target)
            os.replace(tmp, link)

    point(1)
    with running_gateway(site.folder, site.settings):
        assert site.served_serial() == 500
        point(2)
        site.wait_for_serial(600)


def test_half_written_renewals_keep_the_old_certificate(site: Site, ca: CA) -> None:
    with running_gateway(site.folder, site.settings) as gw:
        assert site.served_serial() == 100

        # The certificate file replaced by garbage (an interrupted download).
        replace_file(site.cert, b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n")
        site.keeps_serving(100, 5 * RELOAD_INTERVAL)

        # A new certificate whose key has not been written yet.
        renewal = ca.issue(300)
        replace_file(site.cert, renewal.cert)
        site.keeps_serving(100, 5 * RELOAD_INTERVAL)

        # The renewal completes: now it is served.
        replace_file(site.key, renewal.key)
        site.wait_for_serial(300)
        assert gw.proc.poll() is None
        assert str(site.cert) in gw.stderr  # the failed reloads were logged, naming the file


def broken_start(site: Site) -> str:
    result = run_gateway(site.folder, site.settings)
    assert result.returncode == 2, result
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", site.port), timeout=1).close()
    return result.stderr


def test_a_broken_key_stops_the_start_naming_the_file(site: Site) -> None:
    site.key.write_bytes(b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    err = broken_start(site)
    assert str(site.key) in err, err
    assert "SSL_KEY" in err


def test_a_key_that_does_not_match_stops_the_start(site: Site, ca: CA) -> None:
    site.key.write_bytes(ca.issue(400).key)
    err = broken_start(site)
    assert str(site.key) in err and "does not match" in err, err


def test_a_broken_certificate_stops_the_start_naming_the_file(site: Site) -> None:
    site.cert.write_bytes(b"this is not a certificate\n")
    err = broken_start(site)
    assert str(site.cert) in err and "SSL_CERT" in err, err


def test_an_encrypted_key_stops_the_start_instead_of_prompting(site: Site) -> None:
    key = serialization.load_pem_private_key(site.key.read_bytes(), password=None)
    site.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    err = broken_start(site)
    assert str(site.key) in err and "encrypted" in err, err


def test_tls_problems_are_listed_with_the_others(site: Site) -> None:
    site.key.write_bytes(b"garbage")
    settings = {**site.settings, "LOG_FORMAT": "xml"}
    gw = GatewayProcess(site.folder, settings)
    try:
        assert gw.wait(20) == 2
    finally:
        gw.stop()
    assert "LOG_FORMAT" in gw.stderr and str(site.key) in gw.stderr, gw.stderr



async def test_stopping_the_file_watcher_keeps_the_callers_own_cancellation(
    tmp_path: Path,
) -> None:
    """A shutdown cancelled while it waits for the watcher to end is cancelled: stop()
    must not take the caller's cancellation for the watcher's and return."""
    tls = ReloadingTLS(TLSFiles(tmp_path / "cert.pem", tmp_path / "key.pem"), awaited=True)
    tls.start(3600)
    await assert_cancellation_reaches_the_caller(tls.stop)
