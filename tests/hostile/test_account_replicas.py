"""acme-dns accounts on two gateway processes sharing one PostgreSQL database.

Two real gateways (``python -m gateway``), as two replicas behind a load
balancer, on one database of a real PostgreSQL server: what an admin does
through one replica holds on the other from the next request on, with no
cache in either that could outlive it.

* An account registered on one replica is listed and works on the other; a key
  rotated on one is refused by the other from the next request on, and so is
  an account deleted (with ``acmegw-accounts``) on one, whose values are gone
  from the shared journal.
* Registrations by one admin at the same instant, spread over both replicas,
  never pass that admin's account cap together (the database counts and
  inserts in one step; the test makes each insert slow, so that every
  registration has counted before any has inserted unless they are serialised).
* A NUL in an account's name or owner asked for (which PostgreSQL's text cannot
  hold) is an account that does not exist, not a database failure.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import gateway_env, gateway_settings, passwords_only, running_gateway
from tests.hostile.conftest import Answer
from tests.hostile.wire import basic, send
from tests.servers.postgres import PostgresServer
from tests.system import free_port

ZONE = "acme.example.test"
PASSWORDS = {"carol": "carol's password", "erin": "erin's password"}
CAROL = basic("carol", PASSWORDS["carol"])
ERIN = basic("erin", PASSWORDS["erin"])
# MAX_RECORDS_PER_USER / ACMEDNS_KEEP: how many accounts one admin may register.
CAP = 10


@dataclass(frozen=True)
class Replicas:
    ports: tuple[int, int]
    postgres: PostgresServer
    database: str

    def call(self, replica: int, method: str, path: str, **kw: object) -> Answer:
        return send(self.ports[replica], method, path, **kw)  # type: ignore[arg-type]

    def sql(self, statement: str) -> list[tuple[object, ...]]:
        with contextlib.closing(self.postgres.connect(self.database)) as db:
            cursor = db.execute(statement)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[Replicas]:
    tmp = tmp_path_factory.mktemp("replicas")
    users = PasswordFile(tmp / "acmepasswd")
    for name, password in PASSWORDS.items():
        users.set_user(name, password, roles=["admin"])
    database = postgres_server.new_database()
    ports = (free_port(), free_port())
    try:
        with contextlib.ExitStack() as stack:
            for n, port in enumerate(ports):
                folder = tmp / f"replica{n}"
                folder.mkdir()
                settings = gateway_settings(
                    folder, port, **passwords_only(tmp),  # one password file for both
                    DATABASE_URL=postgres_server.url(database),
                    DATABASE_PASSWORD=postgres_server.password,
                    ACMEDNS_ZONE=ZONE,
                    ACMEDNS_REGISTER="1",
                    ACMEDNS_KEEP="2",
                    MAX_RECORDS_PER_USER=str(CAP * 2),
                )
                stack.enter_context(running_gateway(folder, settings))
            yield Replicas(ports, postgres_server, database)
    finally:
        postgres_server.drop_database(database)


def update(replicas: Replicas, replica: int, account: dict[str, str], key: str) -> int:
    return replicas.call(
        replica, "POST", "/update",
        headers={"X-Api-User": account["username"], "X-Api-Key": key},
        body={"subdomain": account["subdomain"], "txt": make_value()},
    ).status


def listed(replicas: Replicas, replica: int) -> dict[str, dict[str, object]]:
    answer = replicas.call(replica, "GET", "/accounts", headers=CAROL)
    assert answer.status == 200, answer
    return {row["username"]: row for row in answer.json()["accounts"]}


def test_what_one_replica_does_to_an_account_the_other_holds_to_at_once(
    replicas: Replicas, tmp_path: Path
) -> None:
    registered = replicas.call(0, "POST", "/register", headers=CAROL, body={})
    assert registered.status == 201, registered
    account = registered.json()
    name = account["username"]
    assert update(replicas, 1, account, account["password"]) == 200
    assert listed(replicas, 1)[name]["values"] == 1
    assert listed(replicas, 0)[name]["values"] == 1

    rotated = replicas.call(1, "POST", f"/accounts/{name}/rotate", headers=CAROL)
    assert rotated.status == 200, rotated
    key = rotated.json()["password"]
    assert update(replicas, 0, account, account["password"]) == 401
    assert update(replicas, 0, account, key) == 200

    deleted = subprocess.run(
        [sys.executable, "-m", "gateway.accounts_cli", "delete", name],
        env=gateway_env({
            "ACMEGW_URL": f"http://127.0.0.1:{replicas.ports[0]}",
            "ACMEGW_USER": "carol",
            "ACMEGW_PASSWORD": PASSWORDS["carol"],
        }),
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )
    assert deleted.returncode == 0, deleted.stderr
    assert "2 value(s) withdrawn" in deleted.stdout
    assert update(replicas, 1, account, key) == 401
    assert name not in listed(replicas, 1)
    records = replicas.call(1, "GET", "/records", headers=CAROL).json()["records"]
    assert [r for r in records if r["fqdn"] == account["fulldomain"]] == []


@contextlib.contextmanager
def slow_account_inserts(replicas: Replicas) -> Iterator[None]:
    """Each account insert takes a fifth of a second after its statement began."""
    replicas.sql(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.2); RETURN NEW; END $$"
    )
    replicas.sql(
        "CREATE TRIGGER slow BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION slow()"
    )
    try:
        yield
    finally:
        replicas.sql("DROP TRIGGER slow ON accounts")
        replicas.sql("DROP FUNCTION slow()")


def test_registrations_at_once_on_two_replicas_stay_under_the_cap(replicas: Replicas) -> None:
    attempts = CAP + 6
    with slow_account_inserts(replicas), ThreadPoolExecutor(attempts) as pool:
        answers = list(
            pool.map(
                lambda n: replicas.call(n % 2, "POST", "/register", headers=ERIN, body={}),
                range(attempts),
            )
        )
    statuses = sorted(a.status for a in answers)
    assert statuses == [201] * CAP + [429] * (attempts - CAP), [a.body for a in answers]
    assert replicas.sql("SELECT count(*) FROM accounts WHERE owner = 'erin'") == [(CAP,)]


def test_a_nul_in_a_username_or_owner_is_nobody_not_a_database_failure(
    replicas: Replicas,
) -> None:
    """PostgreSQL's text cannot hold NUL: such a name asked for is an account that does
    not exist (404, an empty list), not a 503 saying the database cannot be read."""
    for method, path, status in (("DELETE", "/accounts/a%00b", 404),
                                 ("POST", "/accounts/%00/rotate", 404),
                                 ("GET", "/accounts?owner=carol%00", 200)):
        answer = replicas.call(0, method, path, headers=CAROL)
        assert answer.status == status, (path, answer)
    assert replicas.call(0, "GET", "/accounts?owner=carol%00", headers=CAROL).json() == {
        "accounts": []}
