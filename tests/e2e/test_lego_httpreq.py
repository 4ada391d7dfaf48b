"""Issue 5, done when: the real ``lego`` gets certificates through the gateway's httpreq API.

Everything is real and stays on loopback:

* BIND (tests/servers/bind.py) is the authoritative server of ``example.test``
  and ``example.org``; it takes TSIG-signed updates only at the
  ``_acme-challenge`` names.
* The gateway runs as a child process (``python -m gateway``) with
  ``PROVIDER=rfc2136`` to that BIND, ``DNSAPI_DOMAINS=example.test``,
  ``BASIC_AUTH=required`` and ``PROPAGATION_NAMESERVERS`` at BIND, so a
  ``/present`` answers only once BIND serves the value.
* pebble runs with ``-dnsserver`` at BIND and without
  ``PEBBLE_VA_ALWAYS_VALID``: it really looks the TXT values up.
* lego (Debian ``lego`` 4.9) runs ``--dns httpreq`` with
  ``HTTPREQ_ENDPOINT`` at the gateway and ``HTTPREQ_USERNAME``/``PASSWORD``, in
  the default mode (``{"fqdn", "value"}``) and in ``HTTPREQ_MODE=RAW``
  (``{"domain", "token", "keyAuth"}``, the gateway computes the value; this run
  also goes through ``HTTPREQ_PREFIX``, as the endpoint's path), each for
  ``example.test`` and ``*.example.test`` in one order. ``--dns.resolvers``
  is BIND, so lego's CNAME lookup stays here too.

lego runs with ``--dns.disable-cp``: this lego version checks propagation by
asking each authoritative nameserver of the zone on port 53 (the port is fixed
in its code), and the test's BIND listens on a free port. The gateway's own
check (at BIND) and pebble's lookup are the ones that matter.

Afterwards the certificate has both names, the journal is empty and ``dig``
finds no TXT left. The failure answers a client gets — wrong password (401),
a name outside ``DNSAPI_DOMAINS`` (403), BIND stopped (502) — make lego exit
non-zero; lego's own error message carries the status the gateway gave it,
and the same request sent with ``requests`` shows the status and JSON body.
A bad value (400), which lego never sends, is shown with ``requests`` alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e import (
    CHALLENGE,
    PASSWORD,
    USER,
    audit_entries,
    basic_auth,
    certificate_names,
    dig_txt,
    journal_rows,
    run_client,
    write_passwd_file,
)
from tests.gateway.procs import GatewayProcess, running_gateway
from tests.servers.bind import BindServer, start_primary
from tests.servers.certs import TLSFiles, make_tls_files
from tests.servers.pebble import Pebble, pebble  # noqa: F401 (a fixture)
from tests.system import free_port, need_program

pytestmark = pytest.mark.system

LEGO_TIMEOUT = 60.0
HTTP_TIMEOUT = 30.0
# A value of the right shape (43 base64url characters) for requests sent by hand.
SOME_VALUE = "x" * 43


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[BindServer]:
    """A fresh BIND per test: one test stops it."""
    server = start_primary(tmp_path / "bind")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dns_port(bind: BindServer) -> int:
    """Where pebble asks (the pebble fixture takes this)."""
    return bind.port


class Gateway:
    """The gateway child process, its httpreq endpoint and its state directory."""

    def __init__(self, process: GatewayProcess, endpoint: str, state: Path) -> None:
        self.process = process
        self.endpoint = endpoint
        self.state = state

    def audit(self) -> list[dict[str, Any]]:
        return audit_entries(self.process.stderr)

    def post(self, path: str, body: dict[str, str], password: str = PASSWORD) -> requests.Response:
        """The request lego sends, sent by hand; no proxy from the environment."""
        with requests.Session() as session:
            session.trust_env = False
            return session.post(
                f"{self.endpoint}/{path}",
                json=body,
                headers=basic_auth(USER, password),
                timeout=HTTP_TIMEOUT,
            )


@pytest.fixture
def start_gateway(tmp_path: Path, bind: BindServer) -> Iterator[Callable[..., Gateway]]:
    """``start_gateway(prefix="", tls=None)``: the gateway writing to BIND (over HTTPS with
    *tls*), stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(prefix: str = "", tls: TLSFiles | None = None) -> Gateway:
            port = free_port()
            state = tmp_path / "state"
            settings = {
                **bind.rfc2136_settings(),
                "RFC2136_TIMEOUT": "2",
                "DNSAPI_DOMAINS": "example.test",
                "BASIC_AUTH": "required",
                "PASSWD_FILE": str(write_passwd_file(tmp_path)),
                "LISTEN": f"127.0.0.1:{port}",
                "STATE_DIR": str(state),
                "PROPAGATION_CHECK": "authoritative",
                "PROPAGATION_NAMESERVERS": bind.address,
                "PROPAGATION_TIMEOUT": "10",
                "PROVIDER_TIMEOUT": "10",
                "LOG_FORMAT": "json",
            }
            if prefix:
                settings["HTTPREQ_PREFIX"] = prefix
            if tls is not None:
                settings.update(SSL_CERT=str(tls.cert), SSL_KEY=str(tls.key))
            process = stack.enter_context(running_gateway(tmp_path, settings))
            scheme = "https" if tls else "http"
            return Gateway(process, f"{scheme}://127.0.0.1:{port}{prefix}", state)

        yield start


async def run_lego(
    tmp_path: Path,
    ca: Pebble,
    bind: BindServer,
    endpoint: str,
    domains: tuple[str, ...] = ("example.test", "*.example.test"),
    mode: str = "",
    password: str = PASSWORD,
    env_changes: Mapping[str, str | None] | None = None,
) -> tuple[int, str]:
    """``lego --dns httpreq ... run``: its exit status and output.

    *env_changes* sets variables of lego's environment, or removes them (None).
    """
    lego = need_program("lego", "lego")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LEGO_CA_CERTIFICATES": str(ca.ca_file),
        "HTTPREQ_ENDPOINT": endpoint,
        "HTTPREQ_USERNAME": USER,
        "HTTPREQ_PASSWORD": password,
        "HTTPREQ_HTTP_TIMEOUT": str(int(HTTP_TIMEOUT)),
        # With --dns.disable-cp lego still sleeps one polling interval per name.
        "HTTPREQ_POLLING_INTERVAL": "1",
    }
    if mode:
        env["HTTPREQ_MODE"] = mode
    for key, setting in (env_changes or {}).items():
        if setting is None:
            env.pop(key, None)
        else:
            env[key] = setting
    argv = [lego, "--server", ca.url, "--accept-tos", "--email", "t@example.test"]
    for domain in domains:
        argv += ["--domains", domain]
    argv += [
        "--dns", "httpreq",
        "--dns.resolvers", bind.address,
        # lego 4.9 asks each zone nameserver on port 53, which nothing here serves.
        "--dns.disable-cp",
        "--http-timeout", "10",
        "--path", str(tmp_path / "lego"),
        "run",
    ]  # fmt: skip
    return await run_client(argv, env, tmp_path, LEGO_TIMEOUT)


@pytest.mark.parametrize(
    ("mode", "prefix"), [("", ""), ("RAW", "/lego/httpreq")], ids=["default", "raw"]
)
async def test_lego_gets_a_certificate_through_httpreq(
    tmp_path: Path,
    bind: BindServer,
    pebble: Pebble,  # noqa: F811
    start_gateway: Callable[..., Gateway],
    mode: str,
    prefix: str,
) -> None:
    gw = start_gateway(prefix)
    status, output = await run_lego(tmp_path, pebble, bind, gw.endpoint, mode=mode)
    assert status == 0, (
        f"lego failed:\n{output}\npebble:\n{pebble.server.output()}\n"
        f"gateway:\n{gw.process.describe()}"
    )
    cert = tmp_path / "lego" / "certificates" / "example.test.crt"
    assert certificate_names(cert) == {"example.test", "*.example.test"}

    # Two values (one per name) added and confirmed served, then both removed.
    changes = [(e["action"], e["fqdn"], e["value"], e["result"]) for e in gw.audit()]
    added = {tag for action, _, tag, result in changes if action == "add" and result == "ok"}
    removed = {tag for action, _, tag, result in changes if action == "remove" and result == "ok"}
    assert len(added) == 2, changes
    assert removed == added, changes
    assert all(fqdn == CHALLENGE for _, fqdn, _, _ in changes), changes

    assert journal_rows(gw.state) == []
    assert await dig_txt(bind.port) == set()


async def test_lego_trusts_a_private_gateway_ca_only_through_ssl_cert_file(
    tmp_path: Path,
    bind: BindServer,
    pebble: Pebble,  # noqa: F811
    start_gateway: Callable[..., Gateway],
) -> None:
    """README (lego httpreq): a private CA for the gateway takes ``SSL_CERT_FILE``.

    ``LEGO_CA_CERTIFICATES`` covers the ACME server only; ``SSL_CERT_FILE``
    covers every connection and replaces the system's roots, so it must hold
    the ACME server's CA as well.
    """
    tls = make_tls_files(tmp_path / "gateway-tls", ca_name="gateway test CA")
    gw = start_gateway(tls=tls)
    for run in ("ca-list", "gateway-ca-only", "bundle"):
        (tmp_path / run).mkdir()
    assert gw.endpoint.startswith("https://")

    both = f"{pebble.ca_file}{os.pathsep}{tls.ca}"
    status, output = await run_lego(
        tmp_path / "ca-list", pebble, bind, gw.endpoint, env_changes={"LEGO_CA_CERTIFICATES": both}
    )
    assert status != 0, output
    assert "/present" in output and "x509: certificate signed by unknown authority" in output

    status, output = await run_lego(
        tmp_path / "gateway-ca-only", pebble, bind, gw.endpoint,
        env_changes={"LEGO_CA_CERTIFICATES": None, "SSL_CERT_FILE": str(tls.ca)},
    )  # fmt: skip
    assert status != 0, output
    assert "get directory" in output and "x509: certificate signed by unknown authority" in output

    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(pebble.ca_file.read_bytes() + tls.ca.read_bytes())
    status, output = await run_lego(
        tmp_path / "bundle", pebble, bind, gw.endpoint,
        env_changes={"LEGO_CA_CERTIFICATES": None, "SSL_CERT_FILE": str(bundle)},
    )  # fmt: skip
    assert status == 0, f"lego failed:\n{output}\ngateway:\n{gw.process.describe()}"
    cert = tmp_path / "bundle" / "lego" / "certificates" / "example.test.crt"
    assert certificate_names(cert) == {"example.test", "*.example.test"}


async def test_wrong_password_fails_lego_with_401(
    tmp_path: Path,
    bind: BindServer,
    pebble: Pebble,  # noqa: F811
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway()
    status, output = await run_lego(
        tmp_path, pebble, bind, gw.endpoint, ("example.test",), password="wrong"
    )
    assert status != 0, output
    assert "error presenting token: httpreq: 401: request failed" in output, output
    refused = audit_entries(gw.process.stderr, refusals=True)
    assert [(e["action"], e["user"], e["result"]) for e in refused] == [
        ("refused", USER, "401 invalid user name or password")
    ] * len(refused), gw.process.describe()
    assert refused, gw.process.describe()

    answer = gw.post("present", {"fqdn": CHALLENGE + ".", "value": SOME_VALUE}, password="wrong")
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"].startswith("Basic")
    assert gw.audit() == []
    assert journal_rows(gw.state) == []


async def test_a_name_outside_dnsapi_domains_fails_lego_with_403(
    tmp_path: Path,
    bind: BindServer,
    pebble: Pebble,  # noqa: F811
    start_gateway: Callable[..., Gateway],
) -> None:
    # BIND serves example.org too, so only the gateway's scoping can stop this.
    gw = start_gateway()
    status, output = await run_lego(tmp_path, pebble, bind, gw.endpoint, ("example.org",))
    assert status != 0, output
    assert "error presenting token: httpreq: 403: request failed" in output, output

    for mode, body in (
        ("default", {"fqdn": "_acme-challenge.example.org.", "value": SOME_VALUE}),
        ("raw", {"domain": "example.org", "token": "t", "keyAuth": "t.k"}),
    ):
        answer = gw.post("present", body)
        assert answer.status_code == 403, (mode, answer.text)
        assert answer.json()["error"] == "forbidden", (mode, answer.text)
    assert gw.audit() == []
    assert journal_rows(gw.state) == []
    assert bind.txt("_acme-challenge.example.org") == set()


async def test_provider_down_fails_lego_with_502(
    tmp_path: Path,
    bind: BindServer,
    pebble: Pebble,  # noqa: F811
    start_gateway: Callable[..., Gateway],
) -> None:
    gw = start_gateway()
    bind.stop()
    status, output = await run_lego(tmp_path, pebble, bind, gw.endpoint, ("example.test",))
    assert status != 0, output
    assert "error presenting token: httpreq: 502: request failed" in output, output
    results = [e["result"] for e in gw.audit() if e["action"] == "add"]
    assert results and all(r.startswith("502 rfc2136:") for r in results), gw.process.describe()

    answer = gw.post("present", {"fqdn": CHALLENGE + ".", "value": SOME_VALUE})
    assert answer.status_code == 502, answer.text
    assert answer.json()["message"].startswith("rfc2136:"), answer.text
    assert bind.key.secret not in gw.process.stderr


async def test_a_bad_value_is_400(bind: BindServer, start_gateway: Callable[..., Gateway]) -> None:
    gw = start_gateway()
    for mode, body in (
        ("value too short", {"fqdn": CHALLENGE + ".", "value": "short"}),
        ("value not base64url", {"fqdn": CHALLENGE + ".", "value": "!" * 43}),
        ("no value", {"fqdn": CHALLENGE + "."}),
        ("keyAuth empty", {"domain": "example.test", "token": "t", "keyAuth": ""}),
        ("keyAuth not printable", {"domain": "example.test", "token": "t", "keyAuth": "a\nb"}),
    ):
        for path in ("present", "cleanup"):
            answer = gw.post(path, body)
            assert answer.status_code == 400, (mode, path, answer.text)
            assert answer.json()["error"] == "bad_request", (mode, path, answer.text)
    assert gw.audit() == []
    assert journal_rows(gw.state) == []
    assert bind.txt(CHALLENGE) == set()
