"""PostgreSQL going away under a gateway replica, and coming back.

A gateway process (``PROVIDER=builtin``, its records in the database too) on a
PostgreSQL server of this module's own (tests/servers/postgres.py), which the
tests stop and start by pid:

* during a burst of setups the server stops (fast shutdown): every answer is
  201 or a 5xx, and a 201 only for a value that is journaled and served;
  ``/healthz`` says 503 while the database is away; once it is back the
  gateway reconnects by itself and takes setups again; and nothing is left
  behind: every value in the DNS is journaled, so the janitor removes those
  nobody confirmed;
* a gateway asked to stop while the database is away stops;
* a database error's own words (relation, role and host names) go to the
  gateway's log, not into the answer: a client, or anyone at ``/healthz``,
  learns only that the database failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import requests

from tests.conftest import make_value
from tests.gateway.backends import gateway_on_postgres
from tests.servers.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.system

NAMES = [f"n{i}.example.test" for i in range(10)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: these tests stop it."""
    with running_postgres() as server:
        yield server


def rows(server: PostgresServer, database: str, sql: str) -> set[tuple[str, ...]]:
    with contextlib.closing(server.connect(database)) as db:
        return {tuple(row) for row in db.execute(sql).fetchall()}


def healthz(url: str) -> int:
    try:
        return requests.get(url + "healthz", timeout=10).status_code
    except requests.RequestException:
        return 0


async def test_postgresql_stopped_during_a_burst_loses_nothing_and_leaves_nothing(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    with gateway_on_postgres(tmp_path, postgres) as (gw, url, db, _):
        confirmed: set[tuple[str, str]] = set()
        answers: list[int] = []
        messages: list[str] = []

        async def setup(http: aiohttp.ClientSession, i: int) -> None:
            domain, value = NAMES[i % len(NAMES)], make_value()
            body = {"argument": "setup", "domain_name": domain, "challenge_content": value}
            async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=60)) as r:
                answers.append(r.status)
                if r.status == 201:
                    confirmed.add((f"_acme-challenge.{domain}", value))
                else:
                    messages.append(await r.text())
                    assert r.status in (502, 503, 504), messages[-1]

        async def burst(http: aiohttp.ClientSession, count: int) -> None:
            for i in range(count):
                await asyncio.gather(*(setup(http, i * 8 + j) for j in range(8)))

        stopped = asyncio.Event()

        async def burst_through_the_stop(http: aiohttp.ClientSession) -> None:
            """Rounds of eight setups, until three rounds have gone since the stop."""
            after = 0
            while after < 3:
                was_stopped = stopped.is_set()
                await burst(http, 1)
                after += was_stopped

        async with aiohttp.ClientSession() as http:
            before = asyncio.create_task(burst_through_the_stop(http))
            await asyncio.sleep(0.5)
            postgres.stop()  # fast shutdown, mid-burst
            stopped.set()
            try:
                await before
                assert 503 in answers and 201 in answers, answers
                assert healthz(url) == 503
            finally:
                postgres.start()
            # Back by itself: a whole burst confirmed, in bounded time. (Right after
            # the restart, setups may still be refused while the pool reconnects.)
            deadline = time.monotonic() + 60
            while True:
                answers.clear()
                await burst(http, 1)
                if set(answers) == {201}:
                    break
                assert time.monotonic() < deadline, f"no reconnect: {messages[-3:]}"
                await asyncio.sleep(0.5)
            assert healthz(url) == 200
        journaled = rows(postgres, db, "SELECT fqdn, value FROM records")
        present = rows(postgres, db, "SELECT fqdn, value FROM records WHERE state = 'present'")
        zone = rows(postgres, db, "SELECT name, value FROM zone_values")
        assert confirmed <= present  # nothing confirmed is lost
        assert confirmed <= zone
        assert zone <= journaled  # nothing is served that the janitor does not know of
        # Those nobody confirmed are removed once they are old enough.
        with contextlib.closing(postgres.connect(db)) as conn:
            for fqdn, value in journaled - confirmed:
                conn.execute(
                    "UPDATE records SET created = created - 7200 WHERE fqdn = %s AND value = %s",
                    (fqdn, value),
                )
        deadline = time.monotonic() + 30
        while (
            rows(postgres, db, "SELECT name, value FROM zone_values") != confirmed
            or rows(postgres, db, "SELECT fqdn, value FROM records") != confirmed
        ):
            assert time.monotonic() < deadline, f"left behind:\n{gw.describe()}"
            await asyncio.sleep(0.2)


def test_a_gateway_stops_while_the_database_is_away(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    with gateway_on_postgres(tmp_path, postgres) as (gw, url, _, _):
        assert healthz(url) == 200
        postgres.stop()
        try:
            assert healthz(url) == 503
            assert gw.stop(signal.SIGTERM, timeout=30) == 0, gw.describe()
        finally:
            postgres.start()


def test_the_databases_own_words_go_to_the_log_not_to_the_caller(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    with gateway_on_postgres(tmp_path, postgres) as (gw, url, db, _):
        body = {"argument": "setup", "domain_name": NAMES[0], "challenge_content": make_value()}
        with contextlib.closing(postgres.connect(db)) as admin:
            admin.execute("ALTER TABLE records RENAME TO records_hidden_by_the_admin")
            try:
                answer = requests.post(url, json=body, timeout=30)
            finally:
                admin.execute("ALTER TABLE records_hidden_by_the_admin RENAME TO records")
        assert answer.status_code == 503, answer.text
        assert "the gateway's log says why" in answer.json()["message"], answer.text
        assert "records" not in answer.text and "does not exist" not in answer.text, answer.text
        assert 'relation "records" does not exist' in gw.stderr, gw.describe()
        # Nothing was lost on the way: the same setup goes through once the table is back.
        answer = requests.post(url, json=body, timeout=30)
        assert answer.status_code == 201, answer.text
