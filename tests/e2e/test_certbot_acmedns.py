"""Issue 5, done when: certbot gets a certificate through the gateway's acme-dns API.

Debian's lego is built without its ``acme-dns`` provider, so the acme-dns path
is driven by Debian's ``certbot`` (``certonly --manual``) whose auth hook does
what every acme-dns client does: ``POST /update`` with ``X-Api-User`` and
``X-Api-Key`` and the body ``{"subdomain": ..., "txt": $CERTBOT_VALIDATION}``,
failing unless the answer is 200 with the value echoed. acme-dns has no delete,
so the cleanup hook is ``/bin/true``.

The account is **pre-registered** (``ACMEDNS_ACCOUNTS_FILE``, in the clients'
own storage format) and writes ``<subdomain>.acme.example.test``, a name in
``BUILTIN_ZONE``, which the gateway's builtin DNS serves (``PROVIDER=builtin``).
The DNS chain pebble follows is real and stays on 127.0.0.1
(tests/e2e/acmedns_rig.py):

    pebble --dnsserver--> BIND, a recursive resolver and authoritative for example.test:
        _acme-challenge.example.test. CNAME <subdomain>.acme.example.test.
        acme.example.test. NS ns.acme.example.test.   (the user's delegation)
      --forward only zone acme.example.test--> the gateway's builtin DNS
        <subdomain>.acme.example.test. TXT <both values>

pebble runs without ``PEBBLE_VA_ALWAYS_VALID``. certbot runs the auth hook for
``example.test`` and ``*.example.test`` before it answers either challenge, so
both values must be served at the account's one name at once:
``ACMEDNS_KEEP=2`` keeps them. certbot itself resolves nothing (the ACME server
is an IP address).

The failure answers acme-dns clients treat as failure (anything but 200) are
shown with ``requests`` against the same gateway: a bad key or user (401), a
subdomain not the account's (400), a malformed value (400); and, with a second
gateway on ``PROVIDER=rfc2136`` whose BIND is stopped after a first good
update, provider down (502).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e import certificate_names, dig_txt, journal_rows, run_client, write_passwd_file
from tests.e2e.acmedns_rig import Resolver, start_resolver
from tests.gateway.procs import GatewayProcess, running_gateway
from tests.servers.bind import start_primary
from tests.servers.pebble import Pebble, pebble  # noqa: F401 (a fixture)
from tests.system import free_port, need_program

pytestmark = pytest.mark.system

ACME_ZONE = "acme.example.test"
CERTBOT_TIMEOUT = 60.0
HTTP_TIMEOUT = 10.0

# certbot's auth hook: the acme-dns client's one request, and a line for the test.
AUTH_HOOK = """\
import json, os, sys, urllib.error, urllib.request
request = urllib.request.Request(
    os.environ["ACMEDNS_URL"] + "/update", method="POST",
    data=json.dumps({"subdomain": os.environ["ACMEDNS_SUBDOMAIN"],
                     "txt": os.environ["CERTBOT_VALIDATION"]}).encode(),
    headers={"Content-Type": "application/json",
             "X-Api-User": os.environ["ACMEDNS_USERNAME"],
             "X-Api-Key": os.environ["ACMEDNS_PASSWORD"]},
)
# No proxy from the environment: the gateway is on loopback.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=30) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
text = body.decode(errors="replace")
with open(os.environ["HOOK_LOG"], "a") as log:
    log.write(json.dumps({"domain": os.environ["CERTBOT_DOMAIN"], "status": status,
                          "value": os.environ["CERTBOT_VALIDATION"], "body": text}) + "\\n")
ok = status == 200 and json.loads(body).get("txt") == os.environ["CERTBOT_VALIDATION"]
sys.exit(0 if ok else 1)
"""


@dataclass(frozen=True)
class AcmeDnsAccount:
    """A pre-registered account as acme-dns clients store it."""

    username: str
    password: str
    subdomain: str

    @property
    def fulldomain(self) -> str:
        return f"{self.subdomain}.{ACME_ZONE}"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-Api-User": self.username, "X-Api-Key": self.password if key is None else key}


def new_account() -> AcmeDnsAccount:
    # acme-dns makes UUIDs for both, and 40-character keys.
    return AcmeDnsAccount(str(uuid.uuid4()), secrets.token_urlsafe(30), str(uuid.uuid4()))


def write_accounts_file(path: Path, domain: str, account: AcmeDnsAccount, fulldomain: bool) -> Path:
    entry: dict[str, Any] = {
        "username": account.username,
        "password": account.password,
        "subdomain": account.subdomain,
        "allowfrom": ["127.0.0.1/32"],
    }
    if fulldomain:
        entry["fulldomain"] = account.fulldomain
    path.write_text(json.dumps({domain: entry}))
    path.chmod(0o600)  # it holds keys: the gateway wants it private
    return path


@pytest.fixture
def account() -> AcmeDnsAccount:
    return new_account()


@pytest.fixture
def builtin_port() -> int:
    """Where the gateway's builtin DNS listens and the resolver forwards to."""
    return free_port()


@pytest.fixture
def resolver(tmp_path: Path, builtin_port: int, account: AcmeDnsAccount) -> Iterator[Resolver]:
    server = start_resolver(
        tmp_path / "resolver",
        acme_zone=ACME_ZONE,
        forward_port=builtin_port,
        cname_target=account.fulldomain,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def dns_port(resolver: Resolver) -> int:
    """Where pebble asks (the pebble fixture takes this): the resolver."""
    return resolver.port


@dataclass
class Gateway:
    process: GatewayProcess
    url: str
    state: Path

    def update(self, headers: dict[str, str], body: dict[str, Any]) -> requests.Response:
        with requests.Session() as session:
            session.trust_env = False
            return session.post(f"{self.url}/update", json=body, headers=headers,
                                timeout=HTTP_TIMEOUT)  # fmt: skip


@pytest.fixture
def gateway(tmp_path: Path, builtin_port: int, account: AcmeDnsAccount) -> Iterator[Gateway]:
    """The gateway with the builtin DNS serving ``acme.example.test``."""
    port = free_port()
    state = tmp_path / "state"
    settings = {
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": f"127.0.0.1:{builtin_port}",
        "BUILTIN_ZONE": ACME_ZONE,
        "BUILTIN_NS": f"ns.{ACME_ZONE}",
        "DNSAPI_DOMAINS": "example.test",
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(write_passwd_file(tmp_path)),
        "ACMEDNS_ACCOUNTS_FILE": str(
            write_accounts_file(tmp_path / "acmedns.json", "example.test", account, True)
        ),
        "ACMEDNS_KEEP": "2",
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(state),
        "PROPAGATION_CHECK": "authoritative",
        "PROPAGATION_NAMESERVERS": f"127.0.0.1:{builtin_port}",
        "PROPAGATION_TIMEOUT": "10",
        "LOG_FORMAT": "json",
    }
    with running_gateway(tmp_path, settings) as process:
        yield Gateway(process, f"http://127.0.0.1:{port}", state)


async def run_certbot(
    tmp_path: Path, ca: Pebble, gw: Gateway, account: AcmeDnsAccount, hook_log: Path
) -> tuple[int, str]:
    certbot = need_program("certbot", "certbot")
    hook = tmp_path / "acme-dns-auth"
    hook.write_text(f"#!{sys.executable}\n{AUTH_HOOK}")
    hook.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "REQUESTS_CA_BUNDLE": str(ca.ca_file),
        "ACMEDNS_URL": gw.url,
        "ACMEDNS_USERNAME": account.username,
        "ACMEDNS_PASSWORD": account.password,
        "ACMEDNS_SUBDOMAIN": account.subdomain,
        "HOOK_LOG": str(hook_log),
    }
    argv = [
        certbot, "certonly",
        "--manual", "--preferred-challenges", "dns",
        "--manual-auth-hook", str(hook),
        "--manual-cleanup-hook", "/bin/true",
        "--server", ca.url,
        "--cert-name", "example.test",
        "-d", "example.test", "-d", "*.example.test",
        "--non-interactive", "--agree-tos", "--no-eff-email", "-m", "t@example.test",
        "--config-dir", str(tmp_path / "certbot" / "config"),
        "--work-dir", str(tmp_path / "certbot" / "work"),
        "--logs-dir", str(tmp_path / "certbot" / "logs"),
    ]  # fmt: skip
    return await run_client(argv, env, tmp_path, CERTBOT_TIMEOUT)


def certbot_log(tmp_path: Path) -> str:
    path = tmp_path / "certbot" / "logs" / "letsencrypt.log"
    return path.read_text(errors="replace")[-8000:] if path.is_file() else "(no certbot log)"


async def test_certbot_gets_a_certificate_through_acme_dns(
    tmp_path: Path,
    resolver: Resolver,
    pebble: Pebble,  # noqa: F811
    gateway: Gateway,
    account: AcmeDnsAccount,
    builtin_port: int,
) -> None:
    hook_log = tmp_path / "hook.log"
    status, output = await run_certbot(tmp_path, pebble, gateway, account, hook_log)
    assert status == 0, (
        f"certbot failed:\n{output}\n{certbot_log(tmp_path)}\npebble:\n{pebble.server.output()}"
        f"\ngateway:\n{gateway.process.describe()}\nresolver:\n{resolver.output()[-3000:]}"
    )

    cert = tmp_path / "certbot" / "config" / "live" / "example.test" / "cert.pem"
    assert certificate_names(cert) == {"example.test", "*.example.test"}

    # One /update per name (certbot names both "example.test": the wildcard's
    # challenge is at the same name), each answered 200, and both values still
    # served together at the account's name (acme-dns clients never delete).
    calls = [json.loads(line) for line in hook_log.read_text().splitlines()]
    assert [c["domain"] for c in calls] == ["example.test", "example.test"], calls
    assert all(c["status"] == 200 for c in calls), calls
    values = {c["value"] for c in calls}
    assert len(values) == 2
    assert await dig_txt(builtin_port, account.fulldomain) == values
    # The chain pebble followed: the CNAME at BIND, then the builtin DNS through it.
    assert resolver.txt("_acme-challenge.example.test") == values
    assert {(fqdn, state) for fqdn, _, state in journal_rows(gateway.state)} == {
        (account.fulldomain, "present")
    }


async def test_acme_dns_failures_are_not_200(gateway: Gateway, account: AcmeDnsAccount) -> None:
    good = {"subdomain": account.subdomain, "txt": "a" * 43}
    cases: list[tuple[str, dict[str, str], dict[str, Any], int]] = [
        ("wrong key", account.headers("x" * 40), good, 401),
        ("unknown user", {**account.headers(), "X-Api-User": str(uuid.uuid4())}, good, 401),
        ("no credentials", {}, good, 401),
        ("foreign subdomain", account.headers(), {**good, "subdomain": str(uuid.uuid4())}, 400),
        ("value too short", account.headers(), {**good, "txt": "short"}, 400),
        ("value not base64url", account.headers(), {**good, "txt": "!" * 43}, 400),
        ("no value", account.headers(), {"subdomain": account.subdomain}, 400),
    ]
    for what, headers, body, wanted in cases:
        answer = gateway.update(headers, body)
        assert answer.status_code == wanted, (what, answer.status_code, answer.text)
        assert "error" in answer.json(), (what, answer.text)
    assert journal_rows(gateway.state) == []
    # The same account and body work: the refusals above were about what they changed.
    answer = gateway.update(account.headers(), good)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"txt": good["txt"]}
    assert account.password not in gateway.process.stderr


async def test_acme_dns_provider_down_is_5xx(tmp_path: Path, account: AcmeDnsAccount) -> None:
    bind = start_primary(tmp_path / "bind")
    try:
        settings = {
            **bind.rfc2136_settings(),
            "RFC2136_TIMEOUT": "2",
            "DNSAPI_DOMAINS": "example.test",
            "PASSWD_FILE": str(write_passwd_file(tmp_path)),
            "BASIC_AUTH": "required",
            # An account bound to a domain writes its _acme-challenge name, through BIND.
            "ACMEDNS_ACCOUNTS_FILE": str(
                write_accounts_file(tmp_path / "acmedns.json", "example.test", account, False)
            ),
            "LISTEN": f"127.0.0.1:{(port := free_port())}",
            "STATE_DIR": str(tmp_path / "state"),
            "PROPAGATION_NAMESERVERS": bind.address,
            "PROPAGATION_TIMEOUT": "10",
            "PROVIDER_TIMEOUT": "10",
            "LOG_FORMAT": "json",
        }
        with running_gateway(tmp_path, settings) as process:
            gw = Gateway(process, f"http://127.0.0.1:{port}", tmp_path / "state")
            body = {"subdomain": account.subdomain, "txt": "b" * 43}
            answer = gw.update(account.headers(), body)
            assert answer.status_code == 200, answer.text
            assert bind.txt("_acme-challenge.example.test") == {"b" * 43}

            bind.stop()
            answer = gw.update(account.headers(), {**body, "txt": "c" * 43})
            assert answer.status_code == 502, answer.text
            assert answer.json()["message"].startswith("rfc2136:"), answer.text
            assert bind.key.secret not in process.stderr
    finally:
        with contextlib.suppress(Exception):
            bind.stop()
