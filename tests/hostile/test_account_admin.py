"""Listing, rotating and deleting acme-dns accounts, against a real gateway process.

One gateway (``python -m gateway``, SQLite state) with three users: carol, an
admin of every domain; dora, an admin restricted to ``shop.example.test``;
alice, a user who is no admin. The attacks, on the wire:

* a user who is no admin lists, rotates or deletes (403);
* a restricted admin lists, rotates or deletes an account outside its domains:
  the account is, to it, one that does not exist (404, the same answer as for a
  name nobody has), and keeps working; ``/records`` shows it no record of others'
  names either;
* an old key after a rotation, a deleted account: 401 from the next request on;
* a key (or its hash) in any answer but the one that made it, or in the log.

``acmegw-accounts`` (a client of the admin API) is run as an admin runs it, with
the gateway and credentials in its environment, and gets what the API gives
the user it names.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lib.names import value_tag
from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    gateway_env,
    gateway_settings,
    passwords_only,
    running_gateway,
    write_accounts_file,
    write_secret_file,
)
from tests.hostile.conftest import Answer
from tests.hostile.wire import WireGateway, basic
from tests.servers.certs import make_tls_files
from tests.system import free_port

ZONE = "acme.example.test"
PASSWORDS = {
    "alice": "alice's password",
    "carol": "carol's password",
    "dora": "dora's password",
}
ALICE = basic("alice", PASSWORDS["alice"])
CAROL = basic("carol", PASSWORDS["carol"])
DORA = basic("dora", PASSWORDS["dora"])  # admin of shop.example.test only
DELEGATED = "deleg.shop.example.test"
DELEGATION_TARGET = "x.validation.example.net"
STATIC_USER, STATIC_KEY = "static-account", "s" * 40


@dataclass
class Gateway(WireGateway):
    folder: Path
    keys: list[str] = field(default_factory=list)  # every key it gave out

    def call(self, method: str, path: str, **kw: Any) -> Answer:
        answer = super().call(method, path, **kw)
        if answer.status in (200, 201) and path.endswith(("/register", "/rotate")):
            self.keys.append(answer.json()["password"])
        return answer

    def accounts(self, who: dict[str, str], query: str = "") -> list[dict[str, Any]]:
        answer = self.call("GET", f"/accounts{query}", headers=who)
        assert answer.status == 200, answer
        rows: list[dict[str, Any]] = answer.json()["accounts"]
        return rows

    def usernames(self, who: dict[str, str], query: str = "") -> set[str]:
        return {row["username"] for row in self.accounts(who, query)}

    def register(self, who: dict[str, str], **body: object) -> Registered:
        answer = self.call("POST", "/register", headers=who, body=body)
        assert answer.status == 201, answer
        data = answer.json()
        return Registered(data["username"], data["password"], data["subdomain"],
                          data["fulldomain"])


@dataclass
class Registered:
    username: str
    key: str
    subdomain: str
    fulldomain: str

    def update(self, gw: Gateway, key: str | None = None) -> Answer:
        return gw.call(
            "POST",
            "/update",
            headers={"X-Api-User": self.username, "X-Api-Key": key or self.key},
            body={"subdomain": self.subdomain, "txt": make_value()},
        )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("account-admin")
    users = PasswordFile(tmp / "acmepasswd")
    users.set_user("alice", PASSWORDS["alice"])
    users.set_user("carol", PASSWORDS["carol"], roles=["admin"])
    users.set_user("dora", PASSWORDS["dora"], domains=["shop.example.test"], roles=["admin"])
    accounts = write_accounts_file(
        tmp / "accounts.json",
        {"username": STATIC_USER, "password": STATIC_KEY, "subdomain": "static-sub",
         "domain": "www.shop.example.test"},
    )
    port = free_port()
    settings = gateway_settings(
        tmp, port, **passwords_only(tmp),
        DNSAPI_DOMAINS="example.test, example.org",
        ACMEDNS_ZONE=ZONE,
        ACMEDNS_REGISTER="1",
        ACMEDNS_ACCOUNTS_FILE=str(accounts),
        DELEGATIONS=f"{DELEGATED}={DELEGATION_TARGET}",
        LOG_LEVEL="DEBUG",  # whatever is logged, no key may be in it
    )
    with running_gateway(tmp, settings) as process:
        yield Gateway(process, port, tmp)
        assert "Traceback" not in process.stderr, process.stderr[-3000:]


def test_an_admin_lists_every_account_without_a_key(gateway: Gateway) -> None:
    zone = gateway.register(CAROL)
    bound = gateway.register(CAROL, domain="www.example.org", allowfrom=["192.0.2.0/24"])
    assert zone.update(gateway).status == 200
    assert zone.update(gateway).status == 200
    answer = gateway.call("GET", "/accounts", headers=CAROL)
    assert answer.status == 200
    for secret in (zone.key, bound.key, STATIC_KEY, "sha256$"):
        assert secret not in answer.body.decode(), secret
    rows = {row["username"]: row for row in answer.json()["accounts"]}
    assert rows[zone.username] == {
        "username": zone.username,
        "fulldomain": zone.fulldomain,
        "subdomain": zone.subdomain,
        "allowfrom": [],
        "owner": "carol",
        "created": rows[zone.username]["created"],
        "source": "registered",
        "values": 2,
    }
    assert rows[zone.username]["created"].endswith("Z")
    assert rows[bound.username]["fulldomain"] == "_acme-challenge.www.example.org"
    assert rows[bound.username]["allowfrom"] == ["192.0.2.0/24"]
    assert rows[bound.username]["values"] == 0
    assert rows[STATIC_USER]["source"] == "file"
    assert rows[STATIC_USER]["owner"] == "file"
    assert rows[STATIC_USER]["created"] is None
    # Pre-registered accounts first, then the registered ones oldest first.
    order = list(rows)
    assert order[0] == STATIC_USER
    assert order.index(zone.username) < order.index(bound.username)


def test_filters_by_owner_and_name(gateway: Gateway) -> None:
    by_carol = gateway.register(CAROL, domain="filter.example.org")
    by_dora = gateway.register(DORA, domain="filter.shop.example.test")
    assert by_dora.username in gateway.usernames(CAROL, "?owner=dora")
    assert by_carol.username not in gateway.usernames(CAROL, "?owner=dora")
    assert gateway.usernames(CAROL, "?name=filter.example.org") == {by_carol.username}
    # A name matches the names an account answers for, below the name too.
    within_shop = gateway.usernames(CAROL, "?name=SHOP.example.test.")
    assert {by_dora.username, STATIC_USER} <= within_shop
    assert by_carol.username not in within_shop
    assert gateway.usernames(CAROL, "?owner=dora&name=filter.example.org") == set()
    # A misspelt or empty filter is refused, not ignored: a script must not get every
    # account (an empty one: a filter filled from a variable that is empty).
    for query, culprit in (("?onwer=dora", "onwer"), ("?name=bad..name", "name"),
                           ("?owner=", "owner"), ("?owner=dora&name=", "name")):
        answer = gateway.call("GET", f"/accounts{query}", headers=CAROL)
        assert answer.status == 400, answer
        assert answer.json()["message"].startswith(f"{culprit}:")
    for option in ("--owner", "--name"):
        empty = cli(gateway, "list", "--json", option, "")
        assert (empty.returncode, empty.stdout) == (1, ""), empty
        assert f"400 {option[2:]}: empty" in empty.stderr


def test_a_user_who_is_no_admin_may_not_touch_accounts(gateway: Gateway) -> None:
    account = gateway.register(CAROL)
    for method, path in (
        ("GET", "/accounts"),
        ("POST", f"/accounts/{account.username}/rotate"),
        ("DELETE", f"/accounts/{account.username}"),
    ):
        answer = gateway.call(method, path, headers=ALICE)
        assert answer.status == 403, (method, path, answer)
        assert account.username not in answer.body.decode()
    assert account.update(gateway).status == 200


def test_a_restricted_admin_sees_and_touches_only_accounts_within_its_domains(
    gateway: Gateway,
) -> None:
    carols_zone = gateway.register(CAROL)
    carols_elsewhere = gateway.register(CAROL, domain="www.example.org")
    carols_in_shop = gateway.register(CAROL, domain="a.shop.example.test")
    carols_delegated = gateway.register(CAROL, domain=DELEGATED)
    assert carols_delegated.fulldomain == DELEGATION_TARGET
    doras_zone = gateway.register(DORA)
    seen = gateway.usernames(DORA)
    # Names within shop.example.test (the delegated one by the name it answers for),
    # the pre-registered one there, and the zone account dora registered herself.
    assert {carols_in_shop.username, carols_delegated.username, STATIC_USER,
            doras_zone.username} <= seen
    assert carols_zone.username not in seen
    assert carols_elsewhere.username not in seen
    assert carols_zone.username not in gateway.usernames(DORA, "?owner=carol")
    # Outside its domains an account is, to dora, one that does not exist.
    for account in (carols_zone, carols_elsewhere):
        for method, path in (
            ("POST", f"/accounts/{account.username}/rotate"),
            ("DELETE", f"/accounts/{account.username}"),
        ):
            answer = gateway.call(method, path, headers=DORA)
            unknown = gateway.call(method, path.replace(account.username, "no-such-one"),
                                   headers=DORA)
            assert (answer.status, unknown.status) == (404, 404), (method, path, answer)
            assert answer.json() == json.loads(
                unknown.body.decode().replace("no-such-one", account.username)
            )
        assert account.update(gateway).status == 200
    # Within them, it may.
    assert gateway.call("POST", f"/accounts/{carols_in_shop.username}/rotate",
                        headers=DORA).status == 200
    assert gateway.call("DELETE", f"/accounts/{carols_delegated.username}",
                        headers=DORA).status == 200
    assert gateway.call("DELETE", f"/accounts/{doras_zone.username}", headers=DORA).status == 200


def test_a_restricted_admin_sees_only_the_records_within_its_domains(gateway: Gateway) -> None:
    """``/records`` as ``/accounts``: dora sees the records for names within
    shop.example.test (a delegated one by the name it answers for, though written at
    its target outside) and those of the accounts she administers; no other name or
    owner reaches her. carol, an admin of every domain, sees them all."""

    def setup(who: dict[str, str], name: str) -> str:
        value = make_value()
        answer = gateway.call("POST", "/", headers=who, body={
            "argument": "setup", "domain_name": name, "challenge_content": value})
        assert answer.status == 201, answer
        return value_tag(value)

    secret = setup(ALICE, "secret-project.example.org")
    in_shop = setup(ALICE, "www.shop.example.test")
    delegated = setup(CAROL, DELEGATED)
    doras_zone = gateway.register(DORA)
    carols_zone = gateway.register(CAROL)
    for account in (doras_zone, carols_zone):
        assert account.update(gateway).status == 200

    def records(who: dict[str, str]) -> dict[str, dict[str, Any]]:
        answer = gateway.call("GET", "/records", headers=who)
        assert answer.status == 200, answer
        return {row["fqdn"] + " " + row["owner"]: row for row in answer.json()["records"]}

    doras, carols = records(DORA), records(CAROL)
    assert "_acme-challenge.www.shop.example.test alice" in doras
    assert f"{DELEGATION_TARGET} carol" in doras
    assert f"{doras_zone.fulldomain} acmedns:{doras_zone.username}" in doras
    shown = json.dumps(doras)
    for hidden in ("secret-project", carols_zone.username, secret):
        assert hidden not in shown, hidden
    assert {row["value"] for row in carols.values()} >= {secret, in_shop, delegated}
    assert set(doras) < set(carols)


def test_a_rotated_key_replaces_the_old_one_at_once(gateway: Gateway) -> None:
    account = gateway.register(CAROL)
    assert account.update(gateway).status == 200
    answer = gateway.call("POST", f"/accounts/{account.username}/rotate", headers=CAROL)
    assert answer.status == 200, answer
    assert answer.headers.get("Cache-Control") == "no-store"
    rotated = answer.json()
    assert rotated["username"] == account.username
    assert rotated["fulldomain"] == account.fulldomain
    assert rotated["subdomain"] == account.subdomain
    new_key = rotated["password"]
    assert len(new_key) == 40 and new_key != account.key
    refused = account.update(gateway)
    assert refused.status == 401, refused
    assert account.update(gateway, new_key).status == 200
    # The value published with the old key stays.
    (row,) = [r for r in gateway.accounts(CAROL) if r["username"] == account.username]
    assert row["values"] == 2
    assert new_key not in json.dumps(gateway.accounts(CAROL))
    # Nothing to rotate: a name nobody has, a pre-registered account.
    assert gateway.call("POST", "/accounts/no-such-one/rotate", headers=CAROL).status == 404
    static = gateway.call("POST", f"/accounts/{STATIC_USER}/rotate", headers=CAROL)
    assert static.status == 409
    assert "ACMEDNS_ACCOUNTS_FILE" in static.json()["message"]


def test_a_deleted_account_is_refused_at_once_and_its_values_withdrawn(
    gateway: Gateway,
) -> None:
    account = gateway.register(CAROL)
    assert account.update(gateway).status == 200
    answer = gateway.call("DELETE", f"/accounts/{account.username}", headers=CAROL)
    assert answer.status == 200, answer
    assert answer.json() == {
        "username": account.username, "fulldomain": account.fulldomain, "withdrawn": 1
    }
    assert account.update(gateway).status == 401
    assert account.username not in gateway.usernames(CAROL)
    records = gateway.call("GET", "/records", headers=CAROL).json()["records"]
    assert [r for r in records if r["fqdn"] == account.fulldomain] == []
    assert gateway.call("DELETE", f"/accounts/{account.username}", headers=CAROL).status == 404


def cli(
    gateway: Gateway, *args: str, user: str | None = "carol", **env: str
) -> subprocess.CompletedProcess[str]:
    """``acmegw-accounts ARGS`` as an admin runs it: the gateway and the user in the
    environment, the password too (never on the command line)."""
    settings = {"ACMEGW_URL": f"http://127.0.0.1:{gateway.port}/"}
    if user is not None:
        settings |= {"ACMEGW_USER": user, "ACMEGW_PASSWORD": PASSWORDS[user]}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.accounts_cli", *args],
        cwd=gateway.folder, env=gateway_env(settings | env), capture_output=True, text=True,
        timeout=60, check=False, stdin=subprocess.DEVNULL,
    )
    if done.returncode == 0 and "rotate" in args:
        gateway.keys.append(
            json.loads(done.stdout)["password"] if "--json" in args
            else done.stdout.split("password:")[1].split()[0]
        )
    return done


def test_the_command_line_lists_rotates_and_deletes(gateway: Gateway) -> None:
    account = gateway.register(CAROL, domain="cli.example.org")
    assert account.update(gateway).status == 200
    listed = cli(gateway, "list", "--json", "--name", "cli.example.org")
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)["accounts"]
    assert (row["username"], row["owner"], row["values"]) == (account.username, "carol", 1)
    assert account.key not in listed.stdout
    table = cli(gateway, "list", "--owner", "carol")
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("USERNAME")
    (line,) = [x for x in table.stdout.splitlines() if account.username in x]
    assert line.split()[1:3] == ["_acme-challenge.cli.example.org", "carol"]
    assert cli(gateway, "--json", "list", "--name", "none.example.org").stdout.strip() == (
        '{\n  "accounts": []\n}'
    )

    rotated = cli(gateway, "--json", "rotate", account.username)
    assert rotated.returncode == 0, rotated.stderr
    new_key = json.loads(rotated.stdout)["password"]
    assert account.update(gateway).status == 401
    assert account.update(gateway, new_key).status == 200
    again = cli(gateway, "rotate", account.username)
    assert again.returncode == 0, again.stderr
    newest = again.stdout.split("password:")[1].split()[0]
    assert len(newest) == 40 and newest != new_key
    assert "old key no longer works" in again.stderr
    assert account.update(gateway, new_key).status == 401
    assert account.update(gateway, newest).status == 200

    deleted = cli(gateway, "delete", account.username)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.strip() == (
        f"deleted acme-dns account {account.username} (_acme-challenge.cli.example.org); "
        "2 value(s) withdrawn"
    )
    assert account.update(gateway, newest).status == 401
    gone = cli(gateway, "delete", account.username)
    assert (gone.returncode, gone.stdout) == (1, "")
    assert f"404 no acme-dns account {account.username}" in gone.stderr


def test_the_command_line_gets_what_the_api_gives_the_user(gateway: Gateway) -> None:
    account = gateway.register(CAROL)
    refused = cli(gateway, "list", user="alice")
    assert refused.returncode == 1
    assert "403" in refused.stderr and "admin" in refused.stderr
    assert account.username not in cli(gateway, "list", user="dora").stdout
    for command in ("rotate", "delete"):
        outside = cli(gateway, command, account.username, user="dora")
        assert outside.returncode == 1
        assert f"404 no acme-dns account {account.username}" in outside.stderr
    wrong = cli(gateway, "list", ACMEGW_PASSWORD="not carol's password")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert account.update(gateway).status == 200


def test_the_command_line_takes_the_password_from_a_file_and_never_sends_it_in_clear(
    gateway: Gateway, tmp_path: Path
) -> None:
    secret = write_secret_file(tmp_path / "password", PASSWORDS["carol"] + "\n")
    from_file = cli(gateway, "list", "--user", "carol", "--password-file", str(secret),
                    user=None)
    assert from_file.returncode == 0, from_file.stderr
    # Plain http to an address that is not this machine: refused before connecting.
    clear = cli(gateway, "--url", "http://192.0.2.1:8000/", "list")
    assert clear.returncode == 2
    assert "plain http" in clear.stderr
    no_url = cli(gateway, "list", ACMEGW_URL="")
    assert no_url.returncode == 2 and "--url" in no_url.stderr
    no_password = cli(gateway, "list", ACMEGW_PASSWORD="")
    assert no_password.returncode == 2 and "no password for carol" in no_password.stderr
    closed = cli(gateway, "--url", f"http://127.0.0.1:{free_port()}/", "list")
    assert closed.returncode == 1 and "cannot reach" in closed.stderr


def test_the_command_line_checks_the_gateways_certificate(tmp_path: Path) -> None:
    tls = make_tls_files(tmp_path / "tls")
    users = PasswordFile(tmp_path / "acmepasswd")
    users.set_user("carol", PASSWORDS["carol"], roles=["admin"])
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, **passwords_only(tmp_path),
        SSL_CERT=str(tls.cert),
        SSL_KEY=str(tls.key),
        ACMEDNS_ZONE=ZONE,
    )
    with running_gateway(tmp_path, settings) as process:
        https = Gateway(process, port, tmp_path)
        url = f"https://localhost:{port}/"
        trusted = cli(https, "--url", url, "--ca-file", str(tls.ca), "list")
        assert trusted.returncode == 0, trusted.stderr
        assert trusted.stdout.strip() == "no acme-dns accounts"
        untrusted = cli(https, "--url", url, "list")
        assert untrusted.returncode == 1
        assert "certificate verify failed" in untrusted.stderr


def test_no_key_reaches_the_log(gateway: Gateway) -> None:
    """No key the gateway gave out or was sent is in its log (at DEBUG). Runs last,
    so that the keys of every test of this module count."""
    account = gateway.register(CAROL)
    rotated = gateway.call("POST", f"/accounts/{account.username}/rotate", headers=CAROL)
    new_key = rotated.json()["password"]
    assert account.update(gateway).status == 401
    assert account.update(gateway, new_key).status == 200
    assert gateway.call("DELETE", f"/accounts/{account.username}", headers=CAROL).status == 200
    log = gateway.process.stderr + gateway.process.stdout
    assert "given a new key by carol" in log  # the rotation is logged...
    assert len(gateway.keys) > 10
    for secret in (*gateway.keys, STATIC_KEY, *PASSWORDS.values()):
        assert secret not in log  # ...without the key
    assert "sha256$" not in log
