"""A PostgreSQL server that stops answering under a gateway process, and answers again.

A frozen server (its processes stopped with SIGSTOP, as a stalled host or VM
is) keeps its TCP connections open and its kernel acknowledges what is sent:
neither the server's ``statement_timeout`` nor TCP keepalives end anything.
The gateway (``PROVIDER=builtin``, its records in the database too) bounds each
use of the database itself: a setup gets its 503, ``/healthz`` its 503, and
once the server runs again (SIGCONT) the gateway takes setups by itself and
serves their values. A gateway asked to stop while the server is frozen stops.

The server is this module's own (tests/servers/postgres.py), frozen by pid
(the postmaster and each of its children) and always let go again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests
from psycopg import pq

from gateway.errors import Unavailable
from gateway.state import postgres as postgres_backend
from gateway.state.postgres import PostgresJournal
from tests.conftest import make_value
from tests.gateway.backends import gateway_on_postgres, pg_opened
from tests.gateway.test_state import NAME
from tests.servers.postgres import PostgresServer, running_postgres

pytestmark = pytest.mark.system

# What the test waits for an answer at most: far past DATABASE_TIMEOUT (2 s),
# well short of never.
ANSWER_BOUND = 60.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A server of this module's own: these tests freeze it."""
    with running_postgres() as server:
        yield server


def children(pid: int) -> list[int]:
    """The processes whose parent is *pid* (PostgreSQL's start their own sessions:
    a signal to the postmaster's process group reaches none of them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def frozen(server: PostgresServer) -> Iterator[None]:
    """Every process of *server* stopped (SIGSTOP), running again afterwards, however
    the block ends."""
    assert server.proc is not None
    postmaster = server.proc.pid
    stopped = [postmaster]
    try:
        os.kill(postmaster, signal.SIGSTOP)  # first: it starts no backend after this
        for pid in children(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def setup(url: str, value: str) -> tuple[int, str, float]:
    """A setup for example.test: its status, its body and how long it took."""
    body = {"argument": "setup", "domain_name": "example.test", "challenge_content": value}
    started = time.monotonic()
    r = requests.post(url, json=body, timeout=ANSWER_BOUND)
    return r.status_code, r.text, time.monotonic() - started


def served(dns_port: int) -> set[str]:
    query = dns.message.make_query("_acme-challenge.example.test", dns.rdatatype.TXT)
    reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=5)
    return {
        b"".join(rdata.strings).decode()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rdata in rrset
    }


def test_a_frozen_database_is_a_503_and_the_gateway_recovers_when_it_answers_again(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    with gateway_on_postgres(tmp_path, postgres) as (gw, url, _, dns_port):
        before = make_value()
        assert setup(url, before)[0] == 201, gw.describe()
        with frozen(postgres):
            status, text, took = setup(url, make_value())
            assert status == 503, text
            assert "did not answer" in text or "no database connection" in text, text
            started = time.monotonic()
            health = requests.get(url + "healthz", timeout=ANSWER_BOUND)
            health_took = time.monotonic() - started
            assert health.status_code == 503, health.text
            # A figure for the report, not an assertion (the machine may be loaded).
            print(f"frozen: setup 503 after {took:.2f}s, /healthz 503 after {health_took:.2f}s")
        # Running again: the connections the freeze broke are not handed out again.
        after = make_value()
        status, text, took = setup(url, after)
        assert status == 201, f"{text}\n{gw.describe()}"
        print(f"after SIGCONT: setup 201 after {took:.2f}s")
        assert {before, after} <= served(dns_port)
        assert requests.get(url + "healthz", timeout=ANSWER_BOUND).status_code == 200


def test_a_gateway_asked_to_stop_while_the_database_is_frozen_stops(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """SIGTERM with a setup waiting on the frozen database and the janitor sweeping
    every second: the process ends, and its log says how the stop went."""
    with gateway_on_postgres(tmp_path, postgres) as (gw, url, _, _):
        assert setup(url, make_value())[0] == 201, gw.describe()
        with frozen(postgres), ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(setup, url, make_value())
            time.sleep(0.5)  # the setup is on its way (an answer now is fine too)
            started = time.monotonic()
            gw.send(signal.SIGTERM)
            status = gw.wait(timeout=ANSWER_BOUND + 60)
            print(f"frozen: SIGTERM to exit {time.monotonic() - started:.2f}s, status {status}")
            with contextlib.suppress(requests.RequestException):
                assert waiting.result()[0] != 201
        log = gw.stderr
        assert "stopping: finishing requests in flight" in log, log
        if status == 0:
            assert "INFO acmegw.server: stopped" in log, log
        else:
            assert "exiting" in log, log


# -- in one process: the connections a freeze leaves ---------------------------------


async def test_a_statement_unanswered_on_a_held_name_ends_and_its_connection_is_dropped(
    postgres: PostgresServer,
) -> None:
    """The server freezes while a change holds its name: the journal write ends with
    Unavailable after DATABASE_TIMEOUT, and the connection is never handed out again."""
    database = postgres.new_database()
    async with pg_opened(postgres, database, timeout=2.0) as state:
        unanswered = make_value()
        with pytest.raises(Unavailable) as info:
            async with asyncio.timeout(ANSWER_BOUND), state.hold(NAME) as journal:
                assert isinstance(journal, PostgresJournal) and journal.bound is not None
                held = journal.bound
                with frozen(postgres):
                    await journal.begin_add(NAME, unanswered, "alice")
        assert "PostgreSQL did not answer within 2s" in info.value.message
        assert held.closed
        value = make_value()
        async with state.hold(NAME) as journal:
            assert isinstance(journal, PostgresJournal) and journal.bound is not held
            assert await journal.begin_add(NAME, value, "alice")
        # The server may still have run the write it had received: never confirmed,
        # it is left "adding", for the janitor.
        rows = {r.value: r.state for r in await state.journal.all()}
        assert rows.pop(value) == "adding"
        assert rows in ({}, {unanswered: "adding"})


async def test_psycopg_closes_a_connection_whose_cancelled_query_the_server_never_ends(
    postgres: PostgresServer,
) -> None:
    """What psycopg and its pool do on their own (why the gateway shuts the socket
    down instead of cancelling): a query cancelled while the server is frozen ends
    only after psycopg's own bounds (5 s to send the cancel request, 5 s to see the
    query end), with the connection closed; and a connection given back to the pool
    mid-query (ACTIVE) is closed by the pool, not handed out again."""
    database = postgres.new_database()
    async with pg_opened(postgres, database, timeout=2.0) as state:
        conn = await state.pool.getconn()
        with frozen(postgres):
            query = asyncio.create_task(conn.execute("SELECT 1"))
            await asyncio.sleep(0.5)
            started = time.monotonic()
            query.cancel()
            async with asyncio.timeout(ANSWER_BOUND):
                with contextlib.suppress(asyncio.CancelledError):
                    await query
            print(f"frozen: a cancelled query ended after {time.monotonic() - started:.2f}s")
        assert conn.closed
        await state.pool.putconn(conn)

        active = await state.pool.getconn()
        active.pgconn.send_query(b"SELECT pg_sleep(30)")  # libpq's own: psycopg waits for nothing
        assert active.pgconn.transaction_status == pq.TransactionStatus.ACTIVE
        await state.pool.putconn(active)
        assert active.closed
        async with state.connection("after") as again:
            assert again is not active and again is not conn
            await again.execute("SELECT 1")


async def test_the_listening_connection_is_made_anew_after_a_freeze_and_everything_reread(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Idle, it hears nothing from a frozen server either: asked for an answer that
    does not come, it is dropped; once the server answers, this replica takes its
    lock again and reads every value again (what it missed meanwhile)."""
    monkeypatch.setattr(postgres_backend, "LISTEN_CHECK_INTERVAL", 0.5)
    reloads: list[float] = []

    async def changed(name: str) -> None:
        pass

    async def reload() -> None:
        reloads.append(time.monotonic())

    database = postgres.new_database()
    async with pg_opened(postgres, database, timeout=2.0) as state:
        state.records.watch(changed, reload)
        with frozen(postgres):
            async with asyncio.timeout(ANSWER_BOUND):
                while state._present.is_set():
                    await asyncio.sleep(0.1)
            thawed = time.monotonic()
        async with asyncio.timeout(ANSWER_BOUND):
            while not (state._present.is_set() and reloads and reloads[-1] > thawed):
                await asyncio.sleep(0.1)
    assert "database: lost this replica's connection" in caplog.text
    assert "listening: PostgreSQL did not answer within 2s" in caplog.text
