"""acme-dns accounts write only while the configuration in force lets them.

Against a real gateway process configured from a dotenv file, reloaded with
SIGHUP the way an operator does it:

* an account registered while its name was allowed (under ``ACMEDNS_ZONE``, a
  managed domain, or a ``DELEGATIONS`` target) is refused once a reload takes
  that away;
* a pre-registered account taken out of ``ACMEDNS_ACCOUNTS_FILE`` is refused
  after the reload;
* a registered account deleted through the admin API or ``acmegw-accounts`` (a
  client of that API) is refused from its next request on, and its values are
  withdrawn;
* ``X-Api-User`` or ``X-Api-Key`` bytes that are not UTF-8 are a 401, not an
  internal error with a traceback in the log.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    gateway_env,
    running_gateway,
    write_accounts_file,
    write_dotenv_file,
)
from tests.hostile.conftest import Answer
from tests.hostile.wire import WireGateway, basic
from tests.system import free_port

ZONE = "acme.example.test"
ADMIN = basic("carol", "carol's password")
USER = basic("alice", "alice's password")
STATIC_USER, STATIC_KEY, STATIC_SUB = "static-account", "s" * 40, "static-sub"


@dataclass
class Gateway(WireGateway):
    dotenv: Path
    accounts: Path

    def reload(self, **settings: str) -> None:
        """Rewrite the dotenv file with *settings* changed, send SIGHUP, wait for the log."""
        write_dotenv(self.dotenv, self.port, self.accounts, **settings)
        self.process.reload()
        assert "reload refused" not in self.process.stderr, self.process.describe()


@dataclass(frozen=True)
class Registered:
    username: str
    key: str
    subdomain: str
    fulldomain: str

    def update(self, gw: Gateway) -> Answer:
        return gw.call(
            "POST",
            "/update",
            headers={"X-Api-User": self.username, "X-Api-Key": self.key},
            body={"subdomain": self.subdomain, "txt": make_value()},
        )


def write_dotenv(path: Path, port: int, accounts: Path, **changes: str) -> None:
    settings = {
        "LISTEN": f"127.0.0.1:{port}",
        "PROVIDER": "memory",
        "DNSAPI_DOMAINS": "example.test, example.org",
        "BASIC_AUTH": "required",
        "PASSWD_FILE": "acmepasswd",
        "STATE_DIR": "state",
        "PROPAGATION_CHECK": "off",
        "ACMEDNS_ZONE": ZONE,
        "ACMEDNS_REGISTER": "1",
        "ACMEDNS_ACCOUNTS_FILE": str(accounts),
        "DELEGATIONS": "deleg.example.test=x.validation.example.net",
    }
    settings.update(changes)
    write_dotenv_file(path, {key: value for key, value in settings.items() if value})


def write_accounts(path: Path, *, with_static: bool) -> None:
    entries = [
        {"username": STATIC_USER, "password": STATIC_KEY, "subdomain": STATIC_SUB,
         "domain": "www.example.test"}
    ] if with_static else []
    write_accounts_file(path, *entries)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    users = PasswordFile(tmp_path / "acmepasswd")
    users.set_user("alice", "alice's password")
    users.set_user("carol", "carol's password", roles=["admin"])
    accounts = tmp_path / "accounts.json"
    write_accounts(accounts, with_static=True)
    port = free_port()
    dotenv = tmp_path / ".env"
    write_dotenv(dotenv, port, accounts)
    with running_gateway(tmp_path, {}, args=["-e", str(dotenv)]) as gw:
        yield Gateway(gw, port, dotenv, accounts)


def register(gw: Gateway, **body: object) -> Registered:
    answer = gw.call("POST", "/register", headers=ADMIN, body=body)
    assert answer.status == 201, answer
    data = answer.json()
    return Registered(data["username"], data["password"], data["subdomain"], data["fulldomain"])


def test_accounts_lose_names_the_configuration_no_longer_allows(gateway: Gateway) -> None:
    in_zone = register(gateway)
    in_domain = register(gateway, domain="www.example.org")
    delegated = register(gateway, domain="deleg.example.test")
    assert delegated.fulldomain == "x.validation.example.net"
    for account in (in_zone, in_domain, delegated):
        assert account.update(gateway).status == 200
    # Each account's name leaves the configuration by a different setting.
    gateway.reload(
        DNSAPI_DOMAINS="example.test", ACMEDNS_ZONE="other.example.test", DELEGATIONS=""
    )
    for account in (in_zone, in_domain, delegated):
        answer = account.update(gateway)
        assert answer.status == 403, (account, answer)
        assert account.fulldomain in answer.json()["message"]


def test_a_reload_applies_the_accounts_file(gateway: Gateway) -> None:
    static = Registered(STATIC_USER, STATIC_KEY, STATIC_SUB, "_acme-challenge.www.example.test")
    assert static.update(gateway).status == 200
    write_accounts(gateway.accounts, with_static=False)
    gateway.reload()
    assert static.update(gateway).status == 401


def test_deleting_an_account_through_the_admin_api(gateway: Gateway) -> None:
    account = register(gateway)
    assert account.update(gateway).status == 200
    assert gateway.call("DELETE", f"/accounts/{account.username}", headers=USER).status == 403
    answer = gateway.call("DELETE", f"/accounts/{account.username}", headers=ADMIN)
    assert answer.status == 200, answer
    assert answer.json()["withdrawn"] == 1
    assert account.update(gateway).status == 401
    records = gateway.call("GET", "/records", headers=ADMIN).json()["records"]
    assert [r for r in records if r["fqdn"] == account.fulldomain] == []
    again = gateway.call("DELETE", f"/accounts/{account.username}", headers=ADMIN)
    assert again.status == 404
    # A pre-registered account is deleted where it is defined.
    static = gateway.call("DELETE", f"/accounts/{STATIC_USER}", headers=ADMIN)
    assert static.status == 409
    assert "ACMEDNS_ACCOUNTS_FILE" in static.json()["message"]


def test_deleting_an_account_from_the_command_line(gateway: Gateway, tmp_path: Path) -> None:
    account = register(gateway)
    assert account.update(gateway).status == 200
    env = gateway_env({
        "ACMEGW_URL": f"http://127.0.0.1:{gateway.port}/",
        "ACMEGW_USER": "carol",
        "ACMEGW_PASSWORD": "carol's password",
    })

    def delete() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.accounts_cli", "delete", account.username],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
        )

    done = delete()
    assert done.returncode == 0, done.stderr
    assert f"deleted acme-dns account {account.username}" in done.stdout
    assert "1 value(s) withdrawn" in done.stdout
    assert account.update(gateway).status == 401
    missing = delete()
    assert missing.returncode == 1
    assert f"404 no acme-dns account {account.username}" in missing.stderr


@pytest.mark.parametrize("user, key", [("\xff\xfe", STATIC_KEY), (STATIC_USER, "\xff" * 40),
                                       ("\xed\xa0\x80", "\xed\xa0\x80")])
def test_credentials_that_are_not_utf_8_are_a_401(gateway: Gateway, user: str, key: str) -> None:
    """Header bytes that are not UTF-8 (http.client sends these strings as Latin-1
    bytes; the last is an encoded surrogate) are wrong credentials like any other,
    not an internal error: anyone could have filled the log with tracebacks."""
    body = {"subdomain": STATIC_SUB, "txt": make_value()}
    answer = gw_update(gateway, user, key, body)
    assert answer.status == 401, answer
    assert answer.headers.get("WWW-Authenticate", "").startswith("Basic")
    assert gw_update(gateway, STATIC_USER, STATIC_KEY, body).status == 200
    log = gateway.process.stderr
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]


def gw_update(gw: Gateway, user: str, key: str, body: dict[str, str]) -> Answer:
    return gw.call("POST", "/update", headers={"X-Api-User": user, "X-Api-Key": key}, body=body)
