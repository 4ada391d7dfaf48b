"""The gateway's own certificate from an ACME CA (``SSL_ACME_*``, gateway/tls_acme.py).

The system tests run everything for real on loopback: the gateway as
``python -m gateway`` with ``PROVIDER=builtin``, and pebble with ``-dnsserver``
at the gateway's builtin DNS port, validating for real. The gateway starts
while pebble is still down (its port and HTTPS files chosen in advance): its DNS
answers, its HTTPS refuses every handshake (a plaintext request gets no HTTP
answer), and it tries again; once pebble is up it gets its certificate, which a
client verifies against pebble's root. pebble issues certificates that live
:data:`LIFETIME` seconds, so the gateway renews one every two thirds of that,
and a new connection sees the new serial while the process stays the same.
One gateway and one pebble serve the whole module.

The other tests need no server: bad settings, the schedule, and the solver
that publishes through the gateway's own challenge service.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import os
import re
import signal
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from cryptography import x509

from gateway.config import ACME_LINEAGE, ACME_STATE, AcmeTLSConfig, acme_files, build, gather
from gateway.keys import JOURNAL, SERVICE
from gateway.tls import ReloadingTLS
from gateway.tls_acme import (
    IDENTITY_USER,
    OwnCertificate,
    ServiceSolver,
    gateway_identity,
    next_look,
    retry_delay,
)
from lib.acme.dns01 import TxtRecord
from lib.acme.errors import SolverError
from lib.acme.store import Lineage, Store, iso, now_utc
from lib.passwd import PasswordFile
from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.acme.fake_ca import FakeCA
from tests.acme.fake_ca import serve as serve_fake_ca
from tests.conftest import make_value
from tests.gateway.conftest import GatewayFactory
from tests.gateway.procs import (
    GatewayProcess,
    builtin_settings,
    passwords_only,
    run_gateway,
    running_gateway,
    write_secret_file,
)
from tests.servers.certs import make_tls_files
from tests.servers.pebble import Pebble, running_pebble
from tests.system import free_port

USER, PASSWORD = "ops", "ops: secret password"
EAB_KID = "kid-gw"
EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
NAME = "gw.example.test"
LIFETIME = 30  # seconds: a renewal every 20 s or so
WAIT = 120.0  # generous: the machine may be loaded


def poll(condition: object, what: str, timeout: float = WAIT) -> None:
    """Wait until ``condition()`` is true (it may raise meanwhile)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if condition():  # type: ignore[operator]
                return
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout}s (last error: {last})")


@dataclass
class BeforeTheCA:
    """What the gateway did while its CA was down."""

    dns_rcode: int = -1
    dns_authoritative: bool = False
    handshake_error: str = ""
    plaintext_answer: bytes = b"?"
    failures_logged: int = 0


@dataclass
class Site:
    folder: Path
    gateway: GatewayProcess
    pebble: Pebble
    gw_port: int
    dns_port: int
    state: Path
    before: BeforeTheCA = field(default_factory=BeforeTheCA)

    def context(self) -> ssl.SSLContext:
        """A client that trusts pebble's root only, and checks the host name."""
        return ssl.create_default_context(cadata=self.pebble.root_pem())

    def get(self, path: str) -> tuple[x509.Certificate, int, bytes]:
        """(served certificate, status, body) of GET *path* on a new verified connection."""
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        with socket.create_connection(("127.0.0.1", self.gw_port), timeout=10) as raw, \
                self.context().wrap_socket(raw, server_hostname=NAME) as conn:
            der = conn.getpeercert(binary_form=True)
            assert der is not None
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\nAuthorization: Basic {auth}"
                         "\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return x509.load_der_x509_certificate(der), int(head.split()[1]), body

    def serial(self) -> int:
        return self.get("/healthz")[0].serial_number


def _dns_txt(port: int) -> dns.message.Message:
    """The builtin server's answer for the name the CA will ask about."""
    query = dns.message.make_query(f"_acme-challenge.{NAME}", dns.rdatatype.TXT)
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=5)


def _plaintext_answer(port: int) -> bytes:
    """What a plaintext HTTP request with a password gets back (until the close)."""
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET /metrics HTTP/1.1\r\nHost: {NAME}\r\nAuthorization: Basic {auth}"
                     "\r\n\r\n".encode())
        data = b""
        with contextlib.suppress(ConnectionResetError):  # a reset ends it as a close does
            while chunk := conn.recv(65536):
                data += chunk
    return data


def _handshake_error(port: int) -> str:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                _insecure_client().wrap_socket(raw, server_hostname=NAME):
            return ""
    except (ssl.SSLError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("tls-acme")
    dns_port, gw_port, acme_port = free_port(), free_port(), free_port()
    pebble_tls = make_tls_files(folder / "pebble-tls", ca_name="pebble HTTPS test CA")
    PasswordFile(folder / "acmepasswd").set_user(USER, PASSWORD, domains=["example.test"])
    state = folder / "state"
    eab_file = write_secret_file(folder / "eab.key", EAB_KEY + "\n")
    settings = builtin_settings(
        folder, gw_port, dns_port, **passwords_only(folder),
        BUILTIN_NS="ns.example.test",
        SSL_ACME_SERVER=f"https://127.0.0.1:{acme_port}/dir",
        SSL_ACME_DOMAINS=NAME,
        SSL_ACME_EMAIL="ops@example.test",
        SSL_ACME_CA_FILE=str(pebble_tls.ca),
        SSL_ACME_RETRY_DELAY="1s",
        SSL_ACME_EAB_KID=EAB_KID,
        SSL_ACME_EAB_HMAC_KEY_FILE=str(eab_file),
    )
    before = BeforeTheCA()
    with running_gateway(folder, settings) as gateway:
        # The CA is down: the DNS side serves, HTTPS waits, the gateway tries again.
        answer = _dns_txt(dns_port)
        before.dns_rcode = answer.rcode()
        before.dns_authoritative = bool(answer.flags & dns.flags.AA)
        before.handshake_error = _handshake_error(gw_port)
        before.plaintext_answer = _plaintext_answer(gw_port)
        poll(lambda: gateway.stderr.count("not obtained from") >= 2, "two failed tries")
        before.failures_logged = gateway.stderr.count("not obtained from")
        with running_pebble(folder / "pebble", f"127.0.0.1:{dns_port}", port=acme_port,
                            tls=pebble_tls, eab_keys={EAB_KID: EAB_KEY},
                            config={"certificateValidityPeriod": LIFETIME}) as pebble:
            site = Site(folder, gateway, pebble, gw_port, dns_port, state, before)
            poll(lambda: site.serial() > 0, f"HTTPS with pebble's certificate\n"
                 f"{gateway.stderr[-4000:]}")
            yield site


@pytest.mark.system
def test_while_the_ca_is_down_dns_answers_and_https_refuses_without_plaintext(
        site: Site) -> None:
    before = site.before
    # The builtin DNS is up before the API has a certificate: the CA can validate.
    assert before.dns_rcode == dns.rcode.NOERROR and before.dns_authoritative
    # No certificate at all is served (not even a stand-in): the handshake fails.
    assert before.handshake_error, "a TLS handshake succeeded before any certificate existed"
    assert "alert internal error" in before.handshake_error, before.handshake_error
    # A plaintext request carrying a password gets no HTTP answer, only the TLS refusal.
    assert b"HTTP/" not in before.plaintext_answer, before.plaintext_answer
    assert before.failures_logged >= 2
    log = site.gateway.stderr
    assert "no TLS certificate yet: HTTPS handshakes are refused" in log
    assert re.search(r"not obtained from https://127\.0\.0\.1:\d+/dir: .*; trying again in "
                     r"\d+s \(HTTPS is refused until then\)", log), log[-3000:]


@pytest.mark.system
def test_the_gateway_serves_the_certificate_it_obtained(site: Site) -> None:
    cert, status, _ = site.get("/healthz")
    assert status == 200
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [NAME]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime <= datetime.timedelta(seconds=LIFETIME)
    # Another host name is refused by a client that checks it (the name is the CA's word).
    context = site.context()
    with socket.create_connection(("127.0.0.1", site.gw_port), timeout=10) as raw, \
            pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(raw, server_hostname="other.example.test")
    log = site.gateway.stderr
    # pebble requires external account binding here: the account was bound, the key unsaid.
    assert f"bound to external account {EAB_KID}" in log and EAB_KEY not in log
    assert re.search(rf"TLS certificate for {NAME} issued by https://127\.0\.0\.1:\d+/dir: "
                     r"serial [0-9a-f]+, valid until \S+; next look at", log), log[-3000:]
    # The challenge went through the service every client uses, under its own identity.
    assert re.search(rf"user={IDENTITY_USER} client=127\.0\.0\.1 action=add "
                     rf"fqdn=_acme-challenge\.{re.escape(NAME)} value=\S+ result=ok", log)
    assert re.search(rf"user={IDENTITY_USER} client=127\.0\.0\.1 action=remove "
                     rf"fqdn=_acme-challenge\.{re.escape(NAME)} value=\S+ result=ok", log)


@pytest.mark.system
def test_keys_and_certificates_are_kept_privately_in_the_state_dir(site: Site) -> None:
    acme = site.state / ACME_STATE
    files = acme_files(site.state)
    assert stat.S_IMODE(acme.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.key.parent.stat().st_mode) == 0o700
    keys = [files.key, *sorted(acme.glob("accounts/*/account.key")),
            *sorted(acme.glob("certificates/gateway/versions/*/privkey.pem"))]
    assert len(keys) >= 3
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    # lib.acme's lineage layout: the served names are links into the current version.
    assert os.readlink(files.cert) == "current/fullchain.pem"
    lineage = Store(acme).load_lineage(ACME_LINEAGE)
    assert lineage is not None and lineage.domains == [NAME]


@pytest.mark.system
def test_metrics_show_the_served_certificates_not_after(site: Site) -> None:
    for _ in range(5):  # a renewal may land between the handshake and the scrape
        cert, status, body = site.get("/metrics")
        assert status == 200
        text = body.decode()
        gauge = re.search(r"^acmegw_tls_certificate_not_after_timestamp_seconds (\S+)$", text,
                          re.MULTILINE)
        assert gauge is not None, text
        if float(gauge.group(1)) == cert.not_valid_after_utc.timestamp():
            break
    else:
        raise AssertionError(f"the gauge {gauge.group(1)} never matched the served "
                             f"certificate's notAfter {cert.not_valid_after_utc}")
    failures = re.search(r"^acmegw_tls_acme_failures_total (\S+)$", text, re.MULTILINE)
    assert failures is not None and float(failures.group(1)) >= site.before.failures_logged


@pytest.mark.system
def test_a_renewed_certificate_is_served_without_a_restart(site: Site) -> None:
    pid = site.gateway.pid
    first = site.get("/healthz")[0]
    poll(lambda: site.serial() != first.serial_number, "a renewed certificate served")
    renewed, status, _ = site.get("/healthz")
    assert status == 200 and renewed.serial_number != first.serial_number
    assert renewed.not_valid_after_utc > first.not_valid_after_utc
    assert site.gateway.proc.poll() is None and site.gateway.pid == pid
    log = site.gateway.stderr
    assert re.search(rf"TLS certificate for {NAME} renewed by", log), log[-3000:]
    assert "TLS certificate reloaded from" in log
    versions = list((acme_files(site.state).cert.parent / "versions").iterdir())
    assert len(versions) >= 2


# --- settings -------------------------------------------------------------------------------


BASE = {"PROVIDER": "memory", "DNSAPI_DOMAINS": "example.test", "ALLOWED_HOSTS": "127.0.0.1",
        "LISTEN": "127.0.0.1:0"}


def problems(tmp_path: Path, **env: str) -> list[str]:
    settings, args, config_dir = gather([], {**BASE, "STATE_DIR": str(tmp_path / "s"), **env})
    config = build(settings, args, config_dir)
    if not settings.problems:
        assert config.tls_acme is not None or "SSL_ACME_SERVER" not in env
    return settings.problems


def test_good_settings_serve_the_files_in_the_state_dir(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("trust\n")
    env = {**BASE, "STATE_DIR": str(tmp_path / "s"), "SSL_ACME_SERVER": "letsencrypt",
           "SSL_ACME_DOMAINS": "gw.example.test, *.gw.example.test",
           "SSL_ACME_EMAIL": "mailto:ops@example.test", "SSL_ACME_CA_FILE": str(ca)}
    settings, args, config_dir = gather([], env)
    config = build(settings, args, config_dir)
    assert settings.problems == []
    assert config.tls_acme is not None
    assert config.tls_acme.server == "https://acme-v02.api.letsencrypt.org/directory"
    assert config.tls_acme.domains == ("gw.example.test", "*.gw.example.test")
    assert config.tls_acme.email == "ops@example.test"
    assert config.tls == acme_files(tmp_path / "s")
    # The layout is lib.acme's: the files its Store writes for the lineage.
    store = Store(tmp_path / "s" / ACME_STATE)
    folder = store.files_dir(Lineage(name=ACME_LINEAGE, domains=["x.test"], servers=[]))
    assert config.tls.cert == folder / "fullchain.pem" and config.tls.key == folder / "privkey.pem"


# A CA and a name under DNSAPI_DOMAINS: good, until a case adds or changes a setting.
ACME_CA = {"SSL_ACME_SERVER": "https://ca.test/dir", "SSL_ACME_DOMAINS": NAME}


@pytest.mark.parametrize(("env", "expected"), [
    ({"SSL_ACME_DOMAINS": "gw.example.test"},
     "SSL_ACME_DOMAINS without SSL_ACME_SERVER"),
    ({**ACME_CA, "SSL_ACME_DOMAINS": "gw.example.org"},
     "SSL_ACME_DOMAINS: gw.example.org lies outside DNSAPI_DOMAINS (example.test)"),
    ({"SSL_ACME_SERVER": "https://ca.test/dir"},
     "SSL_ACME_DOMAINS is required with SSL_ACME_SERVER"),
    ({**ACME_CA, "SSL_ACME_SERVER": "http://ca.test/dir"},
     "SSL_ACME_SERVER='http://ca.test/dir' is neither an https:// directory URL"),
    ({**ACME_CA, "SSL_CERT": "c.pem", "SSL_KEY": "k.pem"},
     "SSL_CERT and SSL_ACME_SERVER exclude each other"),
    ({**ACME_CA, "SSL_ACME_DOMAINS": "192.0.2.1"},
     "SSL_ACME_DOMAINS: '192.0.2.1' is an IP address"),
    ({**ACME_CA, "SSL_ACME_EMAIL": "ops"},
     "SSL_ACME_EMAIL='ops' is not an e-mail address"),
    ({**ACME_CA, "SSL_ACME_CA_FILE": "/nonexistent/ca.pem"},
     "SSL_ACME_CA_FILE: /nonexistent/ca.pem does not exist"),
    ({**ACME_CA, "SSL_ACME_RETRY_DELAY": "2d"},
     "SSL_ACME_RETRY_DELAY=2d is out of range"),
    ({**ACME_CA, "SSL_ACME_EAB_KID": "kid-1"},
     "SSL_ACME_EAB_KID and SSL_ACME_EAB_HMAC_KEY go together"),
    ({**ACME_CA, "SSL_ACME_EAB_KID": "kid-1", "SSL_ACME_EAB_HMAC_KEY": "not base64: secret!"},
     "SSL_ACME_EAB_HMAC_KEY is not base64url (copy it from the CA's console)"),
])
def test_bad_settings_are_problems(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    found = problems(tmp_path, **env)
    assert any(expected in p for p in found), found
    assert not any("secret!" in p for p in found)


def test_bad_settings_stop_the_gateway_with_every_problem_listed(tmp_path: Path) -> None:
    result = run_gateway(tmp_path, {
        **BASE, "STATE_DIR": str(tmp_path / "s"), "SSL_ACME_SERVER": "http://ca.test/dir",
        "SSL_ACME_DOMAINS": "gw.example.org", "SSL_CERT": str(tmp_path / "c.pem"),
        "SSL_KEY": str(tmp_path / "k.pem")})
    assert result.returncode == 2, result
    for expected in ("is neither an https:// directory URL", "lies outside DNSAPI_DOMAINS",
                     "SSL_CERT and SSL_ACME_SERVER exclude each other"):
        assert expected in result.stderr, result.stderr


def test_check_config_summarises_without_asking_the_ca(tmp_path: Path) -> None:
    result = run_gateway(tmp_path, {
        **BASE, "STATE_DIR": str(tmp_path / "s"),
        # Nothing listens there: --check-config must not try.
        "SSL_ACME_SERVER": f"https://127.0.0.1:{free_port()}/dir",
        "SSL_ACME_DOMAINS": "gw.example.test"}, ["--check-config"])
    assert result.returncode == 0, result
    assert re.search(r"tls: +\S+/acme/certificates/gateway/fullchain\.pem, obtained from "
                     r"https://127\.0\.0\.1:\d+/dir for gw\.example\.test", result.stdout)


def test_sighup_tries_again_at_once_after_a_failure(tmp_path: Path) -> None:
    """An hour's wait after a failure, cut short by the operator who fixed the cause."""
    settings = {**BASE, "LISTEN": f"127.0.0.1:{free_port()}", "STATE_DIR": str(tmp_path / "s"),
                "SSL_ACME_SERVER": f"https://127.0.0.1:{free_port()}/dir",  # nothing there
                "SSL_ACME_DOMAINS": NAME, "SSL_ACME_RETRY_DELAY": "1h"}
    with running_gateway(tmp_path, settings) as gateway:
        poll(lambda: "not obtained from" in gateway.stderr, "the first failure")
        assert "trying again in 3600s" in gateway.stderr
        gateway.send(signal.SIGHUP)
        poll(lambda: gateway.stderr.count("not obtained from") == 2, "a second try")
        # The second failure in a row would wait twice as long; an hour is the most.
        assert "trying again in 3600s" in gateway.stderr.split("configuration reloaded")[1]
        # A stop does not wait for the hour either.
        assert gateway.stop() == 0, gateway.describe()


def _insecure_client(version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client that takes any certificate at all, at *version* only if given."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if version is not None:
        context.minimum_version = context.maximum_version = version
    return context


class _ClientHandshake:
    """A client's TLS handshake on memory buffers, sent on a socket by hand."""

    def __init__(self, version: ssl.TLSVersion | None = None) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = _insecure_client(version).wrap_bio(
            self.incoming, self.outgoing, server_hostname=NAME)

    def hello(self) -> bytes:
        with contextlib.suppress(ssl.SSLWantReadError):
            self.tls.do_handshake()
        return self.outgoing.read()

    def run(self, sock: socket.socket) -> str:
        """The SSL error's reason that ends the handshake (or how it ended otherwise)."""
        sock.sendall(self.hello())
        while data := sock.recv(65536):
            self.incoming.write(data)
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                sock.sendall(self.outgoing.read())
            except ssl.SSLError as exc:
                return str(exc.reason)
            else:
                return "handshake completed"
        return "closed without an alert"


def test_without_a_certificate_clients_get_the_tls_alert(tmp_path: Path) -> None:
    """A refused handshake ends in the alert that says why, then a close; not in a
    reset, which a client reports as a network fault."""
    port = free_port()
    settings = {**BASE, "LISTEN": f"127.0.0.1:{port}", "STATE_DIR": str(tmp_path / "s"),
                "SSL_ACME_SERVER": f"https://127.0.0.1:{free_port()}/dir",  # nothing there
                "SSL_ACME_DOMAINS": NAME, "SSL_ACME_RETRY_DELAY": "1h",
                "HTTP_HEADER_TIMEOUT": "2s"}
    with running_gateway(tmp_path, settings) as gateway:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                assert _ClientHandshake(version).run(sock) == "TLSV1_ALERT_INTERNAL_ERROR"
                assert sock.recv(1) == b"", "the gateway did not close after its alert"
        # The usual way: the error a client program reports.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw, \
                pytest.raises(ssl.SSLError, match="alert internal error"):
            _insecure_client().wrap_socket(raw, server_hostname=NAME)
        # Half a ClientHello, or nothing at all, holds a connection no longer than a
        # request head may take.
        with socket.create_connection(("127.0.0.1", port), timeout=60) as slow, \
                socket.create_connection(("127.0.0.1", port), timeout=60) as silent:
            slow.sendall(_ClientHandshake().hello()[:20])
            assert slow.recv(1) == b"" and silent.recv(1) == b""
        assert gateway.proc.poll() is None, gateway.describe()


# --- when to look again ---------------------------------------------------------------------


NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def lineage(**fields: object) -> Lineage:
    return Lineage(name=ACME_LINEAGE, domains=[NAME], servers=["https://ca.test/dir"],
                   **fields)  # type: ignore[arg-type]


def test_without_ari_the_next_look_is_at_a_third_of_the_lifetime_left() -> None:
    seconds, when = next_look(lineage(not_before=iso(NOW - datetime.timedelta(days=10)),
                                      not_after=iso(NOW + datetime.timedelta(days=80))), NOW)
    assert seconds == 12 * 3600  # the daily look comes first (due in 50 days)
    assert "the daily look" in when
    seconds, when = next_look(lineage(not_before=iso(NOW - datetime.timedelta(seconds=10)),
                                      not_after=iso(NOW + datetime.timedelta(seconds=20))), NOW)
    assert seconds == 10 and "a third of its lifetime left" in when


def test_with_ari_the_next_look_is_the_moment_chosen_or_the_cas_retry_after() -> None:
    window = {"start": iso(NOW + datetime.timedelta(hours=2)),
              "end": iso(NOW + datetime.timedelta(hours=4))}
    found = lineage(not_before=iso(NOW - datetime.timedelta(days=60)),
                    not_after=iso(NOW + datetime.timedelta(days=30)), ari_window=window,
                    ari_chosen=iso(NOW + datetime.timedelta(hours=3)),
                    ari_next_check=iso(NOW + datetime.timedelta(hours=6)))
    seconds, when = next_look(found, NOW)
    assert seconds == 3 * 3600 and "(ARI)" in when
    found.ari_next_check = iso(NOW + datetime.timedelta(hours=1))
    assert next_look(found, NOW)[0] == 3600
    # Past due: at once (at least a second, never a busy loop).
    found.ari_chosen = iso(NOW - datetime.timedelta(hours=1))
    assert next_look(found, NOW)[0] == 1


def test_failed_tries_back_off_doubling_to_an_hour() -> None:
    assert [retry_delay(120.0, n) for n in (1, 2, 3, 4, 5, 6)] == \
        [120, 240, 480, 960, 1920, 3600]
    assert retry_delay(1.0, 1) == 1


# --- the solver -----------------------------------------------------------------------------


async def test_challenges_go_through_the_service_under_the_gateways_own_identity(
        gateway: GatewayFactory, tmp_path: Path) -> None:
    client, provider = await gateway()
    app = client.server.app
    config = build(*gather([], {**BASE, "STATE_DIR": str(tmp_path / "s"),
                                "SSL_ACME_SERVER": "https://ca.test/dir",
                                "SSL_ACME_DOMAINS": "gw.example.test, *.gw.example.test"}))
    assert config.tls_acme is not None
    identity = gateway_identity(config.tls_acme)
    solver = ServiceSolver(app[SERVICE], identity, asyncio.get_running_loop())
    records = [TxtRecord("gw.example.test", make_value()), TxtRecord("gw.example.test",
                                                                     make_value())]
    steps: list[str] = []
    # The ACME client runs on a thread of its own and calls into the event loop.
    await asyncio.to_thread(solver.setup, records, steps.append)
    fqdn = "_acme-challenge.gw.example.test"
    assert sorted(provider.values(fqdn)) == sorted(r.value for r in records)
    journaled = await app[JOURNAL].values(fqdn)
    assert {(r.value, r.owner, r.state) for r in journaled} == \
        {(r.value, IDENTITY_USER, "present") for r in records}
    assert await asyncio.to_thread(solver.teardown, records) == []
    assert provider.values(fqdn) == [] and await app[JOURNAL].values(fqdn) == []

    # The identity may write its certificate's names only, though the gateway manages more.
    refused = re.escape("_acme-challenge.www.example.test is not a name you may change")
    with pytest.raises(SolverError, match=refused):
        await asyncio.to_thread(solver.setup, [TxtRecord("www.example.test", make_value())],
                                steps.append)
    assert provider.values("_acme-challenge.www.example.test") == []



# --- renewal driven by the CA's window (ARI), with a fake CA ---------------------------------


async def test_the_cas_renewal_window_decides_when_it_offers_one(
        gateway: GatewayFactory, tmp_path: Path) -> None:
    """pebble (Debian's 2.4) offers no ARI: a fake CA built from RFC 9773 does. Its window
    makes a 90-day certificate due on the next look, and the renewal names the certificate
    it replaces; a window in the future is waited for."""
    dns_port = free_port()
    now = datetime.datetime.now(datetime.UTC)
    ca = FakeCA(dns_server=("127.0.0.1", dns_port), retry_after=None,
                ari_window=(now - datetime.timedelta(days=2), now - datetime.timedelta(days=1)))
    ca_tls = make_tls_files(tmp_path / "ca-tls", ca_name="fake ACME CA")
    runner, url = await serve_fake_ca(ca, ca_tls)
    builtin = BuiltinProvider(BuiltinSettings(listen=(("127.0.0.1", dns_port),),
                                              nameservers=("ns.example.test",)),
                              ("example.test", "example.org"))
    try:
        client, _ = await gateway(provider=builtin)
        state = tmp_path / "gw-state"
        settings = AcmeTLSConfig(server=url, domains=(NAME,), email=None, ca_file=ca_tls.ca,
                                 retry_delay=1.0)
        tls = ReloadingTLS(acme_files(state), awaited=True)
        own = OwnCertificate(settings, state, client.server.app[SERVICE], tls)

        first = await asyncio.to_thread(own.attempt)
        assert first.outcome.action == "issued", first.outcome
        assert ca.ari_queries == []  # nothing to ask about yet

        second = await asyncio.to_thread(own.attempt)
        assert second.outcome.action == "renewed", second.outcome
        assert len(ca.ari_queries) == 1 and ca.new_orders[-1].get("replaces")
        assert tls.check() and tls.validity is not None  # the new one is served

        ca.ari_window = (now + datetime.timedelta(days=30), now + datetime.timedelta(days=31))
        third = await asyncio.to_thread(own.attempt)
        assert third.outcome.action == "kept", third.outcome
        assert third.lineage is not None
        seconds, when = next_look(third.lineage, now_utc())
        # The CA's Retry-After (6 h) comes before the moment chosen in its window.
        assert 5 * 3600 < seconds <= 6 * 3600 and "(ARI)" in when
    finally:
        ca.release()
        await runner.cleanup()
    assert ca.violations == []


async def test_the_expiry_warning_points_at_the_gateways_own_renewal(
        gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client, _ = await gateway()
    state = tmp_path / "gw-state"
    files = acme_files(state)
    now = datetime.datetime.now(datetime.UTC)
    made = make_tls_files(tmp_path / "tls", valid=(now - datetime.timedelta(days=85),
                                                   now + datetime.timedelta(days=5)))
    files.cert.parent.mkdir(parents=True)
    files.cert.write_bytes(made.cert.read_bytes())
    files.key.write_bytes(made.key.read_bytes())
    tls = ReloadingTLS(files, awaited=True)
    OwnCertificate(AcmeTLSConfig(server="https://ca.test/dir", domains=(NAME,), email=None,
                                 ca_file=None, retry_delay=1.0),
                   state, client.server.app[SERVICE], tls)
    with caplog.at_level("WARNING", logger="gateway.tls"):
        tls.check_expiry()
    assert "expires in 5 days" in caplog.text
    assert "the gateway renews it itself from SSL_ACME_SERVER" in caplog.text
