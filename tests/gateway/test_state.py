"""The state layer's own promises: schemas created and migrated by the gateway,
state directories of earlier versions taken over as they are."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from gateway.acmedns import AccountStore, hash_key
from gateway.config import DatabaseConfig
from gateway.errors import Unavailable
from gateway.state.postgres import ACCOUNT_MIGRATIONS as PG_ACCOUNTS
from gateway.state.postgres import JOURNAL_MIGRATIONS as PG_JOURNAL
from gateway.state.postgres import NAMES, PostgresState
from gateway.state.postgres import RECORDS_MIGRATIONS as PG_RECORDS
from gateway.state.sqlite import (
    ACCOUNT_MIGRATIONS,
    ACCOUNTS_FILE_NAME,
    JOURNAL_FILE_NAME,
    JOURNAL_MIGRATIONS,
    SqliteState,
)
from tests.conftest import make_value
from tests.gateway.backends import pg_opened, pg_state
from tests.gateway.procs import REPO_ROOT, gateway_settings, run_gateway, running_gateway
from tests.servers.postgres import PostgresServer
from tests.system import free_port

NAME = "_acme-challenge.example.test"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

# The files as gateways before the state layer wrote them: no version table.
OLD_JOURNAL = """
CREATE TABLE IF NOT EXISTS records (
    fqdn    TEXT NOT NULL,
    value   TEXT NOT NULL,
    owner   TEXT NOT NULL,
    state   TEXT NOT NULL CHECK (state IN ('adding', 'present', 'removing')),
    created REAL NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (fqdn, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_created ON records (created);
CREATE INDEX IF NOT EXISTS records_owner ON records (owner);
"""
OLD_ACCOUNTS = """
CREATE TABLE IF NOT EXISTS accounts (
    username  TEXT PRIMARY KEY,
    key_hash  TEXT NOT NULL,
    subdomain TEXT NOT NULL UNIQUE,
    fqdn      TEXT NOT NULL,
    allowfrom TEXT NOT NULL,
    owner     TEXT NOT NULL,
    created   REAL NOT NULL
);
"""


def old_state_dir(folder: Path, value: str) -> None:
    folder.mkdir()
    with contextlib.closing(sqlite3.connect(folder / JOURNAL_FILE_NAME)) as db, db:
        db.executescript(OLD_JOURNAL)
        db.execute("INSERT INTO records VALUES (?, ?, 'alice', 'present', 1.0, 1.0)", (NAME, value))
    with contextlib.closing(sqlite3.connect(folder / ACCOUNTS_FILE_NAME)) as db, db:
        db.executescript(OLD_ACCOUNTS)
        db.execute(
            "INSERT INTO accounts VALUES ('u1', ?, 'sub', 'sub.acme.example.test', "
            "'[\"192.0.2.0/24\"]', 'alice', 1.0)",
            (hash_key("the key"),),
        )


def versions(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return dict(db.execute("SELECT part, version FROM schema_version").fetchall())


async def test_a_state_dir_of_an_earlier_version_is_migrated_and_kept(tmp_path: Path) -> None:
    folder, value = tmp_path / "state", make_value()
    old_state_dir(folder, value)
    state = SqliteState(folder)
    await state.open()
    try:
        assert [(r.value, r.state, r.owner) for r in await state.journal.all()] == [
            (value, "present", "alice")
        ]
        account = await AccountStore(state.accounts).verify("u1", "the key")
        assert account is not None and account.fqdn == "sub.acme.example.test"
        assert [str(n) for n in account.allowfrom] == ["192.0.2.0/24"]
        await state.journal.begin_add(NAME, make_value(), "bob")
    finally:
        await state.close()
    assert versions(folder / JOURNAL_FILE_NAME) == {"journal": len(JOURNAL_MIGRATIONS)}
    assert versions(folder / ACCOUNTS_FILE_NAME) == {"accounts": len(ACCOUNT_MIGRATIONS)}


async def test_a_new_state_dir_is_created_at_the_last_version(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state")
    await state.open()
    await state.close()
    await state.open()  # a second start finds nothing to do
    await state.close()
    assert versions(tmp_path / "state" / JOURNAL_FILE_NAME) == {
        "journal": len(JOURNAL_MIGRATIONS)
    }


async def test_a_state_dir_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state")
    await state.open()
    await state.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / JOURNAL_FILE_NAME)) as db, db:
        db.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(Unavailable) as info:
        await state.open()
    assert "newer than this gateway knows" in info.value.message


# -- PostgreSQL ---------------------------------------------------------------

# Every part at the last version this gateway knows.
PG_LAST_VERSIONS = {
    "accounts": len(PG_ACCOUNTS),
    "builtin": len(PG_RECORDS),
    "journal": len(PG_JOURNAL),
}


def pg_versions(server: PostgresServer, database: str) -> dict[str, int]:
    with contextlib.closing(server.connect(database)) as db:
        return dict(db.execute("SELECT part, version FROM schema_version").fetchall())


async def test_replicas_starting_together_create_the_schema_once(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    states = [pg_state(postgres_server, postgres_database) for _ in range(5)]
    try:
        await asyncio.gather(*(state.open() for state in states))
        value = make_value()
        await states[0].journal.begin_add(NAME, value, "alice")
        assert [r.value for r in await states[4].journal.all()] == [value]
    finally:
        await asyncio.gather(*(state.close() for state in states))
    assert pg_versions(postgres_server, postgres_database) == PG_LAST_VERSIONS


async def test_a_database_from_a_newer_gateway_is_refused(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with pg_opened(postgres_server, postgres_database):
        pass
    with contextlib.closing(postgres_server.connect(postgres_database)) as db:
        db.execute("UPDATE schema_version SET version = version + 1 WHERE part = 'journal'")
    with pytest.raises(Unavailable) as info:
        async with pg_opened(postgres_server, postgres_database):
            pass
    assert "newer than this gateway knows" in info.value.message


async def test_a_wrong_password_is_a_clear_error_that_shows_no_password(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    config = DatabaseConfig(postgres_server.url(postgres_database), "not-the-password", timeout=2)
    state = PostgresState(config)
    with pytest.raises(Unavailable) as info:
        await state.open()
    assert "cannot connect to PostgreSQL at postgresql://acmegw@127.0.0.1:" in info.value.message
    assert "not-the-password" not in info.value.message


async def test_a_name_is_changed_by_one_replica_at_a_time(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with (
        pg_opened(postgres_server, postgres_database) as a,
        pg_opened(postgres_server, postgres_database) as b,
    ):
        order: list[str] = []
        held = asyncio.Event()

        async def first() -> None:
            async with a.hold(NAME):
                held.set()
                order.append("a in")
                await asyncio.sleep(0.3)
                order.append("a out")

        async def second() -> None:
            await held.wait()
            async with b.hold(NAME):
                order.append("b in")
            # Another name is never held up by this one.
            async with b.hold("_acme-challenge.other.example.test"):
                pass

        await asyncio.gather(first(), second())
        assert order == ["a in", "a out", "b in"]


async def test_waiting_for_a_name_another_replica_holds_is_bounded(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with (
        pg_opened(postgres_server, postgres_database) as a,
        pg_opened(postgres_server, postgres_database, provider_timeout=0.2, timeout=0.3) as b,
    ):
        async with a.hold(NAME):
            with pytest.raises(Unavailable) as info:
                async with b.hold(NAME):
                    pass
        assert f"another gateway has been changing {NAME}" in info.value.message
        async with b.hold(NAME):  # and nothing of the refused wait is left over
            pass


async def test_a_cancelled_wait_for_a_name_leaves_no_lock_behind(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with (
        pg_opened(postgres_server, postgres_database) as a,
        pg_opened(postgres_server, postgres_database, pool_size=2) as b,
    ):
        async with a.hold(NAME):
            waiting = asyncio.create_task(b.hold(NAME).__aenter__())
            await asyncio.sleep(0.3)
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
        # Whatever b's connections went through, none of them holds the name now.
        async with a.hold(NAME), b.hold("_acme-challenge.other.example.test"):
            with contextlib.closing(postgres_server.connect(postgres_database)) as db:
                held = db.execute(
                    "SELECT count(*) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND classid = %s",
                    (NAMES,),
                ).fetchone()
            assert held == (2,)


async def test_changes_cannot_take_every_connection(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """With the pool's change slots all held through slow provider calls, another change
    is refused (503) in bounded time, and short queries still get a connection."""
    async with pg_opened(postgres_server, postgres_database, pool_size=4, timeout=0.5) as state:
        assert state.change_slots == 3
        names = [f"_acme-challenge.n{i}.example.test" for i in range(state.change_slots)]
        async with contextlib.AsyncExitStack() as stack:
            for name in names:
                journal = await stack.enter_async_context(state.hold(name))
                await journal.begin_add(name, make_value(), "alice")
            with pytest.raises(Unavailable) as info:
                async with state.hold("_acme-challenge.more.example.test"):
                    pass
            assert "changes are in flight on this replica" in info.value.message
            await state.check()
            account = await AccountStore(state.accounts).get("nobody")
            assert account is None
            assert len(await state.journal.all()) == 3


async def test_the_owner_limit_holds_when_two_replicas_insert_at_the_same_instant(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """Two setups for one owner at different names, both under way before either
    commits, cannot both take the last place under MAX_RECORDS_PER_USER."""
    async with (
        pg_opened(postgres_server, postgres_database) as a,
        pg_opened(postgres_server, postgres_database) as b,
    ):
        for i in range(4):
            await a.journal.begin_add(f"_acme-challenge.n{i}.example.test", make_value(), "bob")
        # Each insert now takes a second after its statement has counted bob's values.
        with contextlib.closing(postgres_server.connect(postgres_database)) as db:
            db.execute(
                "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_sleep(1); RETURN NEW; END $$"
            )
            db.execute("CREATE TRIGGER slow BEFORE INSERT ON records FOR EACH ROW EXECUTE "
                       "FUNCTION slow()")
        taken = await asyncio.gather(
            *(
                state.journal.begin_add(f"_acme-challenge.{n}.example.test", make_value(), "bob",
                                        limit=5)
                for state, n in ((a, "x"), (b, "y"))
            )
        )
        assert sorted(taken) == [False, True]
        assert len(await a.journal.values("_acme-challenge.x.example.test")) + len(
            await a.journal.values("_acme-challenge.y.example.test")
        ) == 1


async def test_one_replica_sweeps_at_a_time(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with (
        pg_opened(postgres_server, postgres_database) as a,
        pg_opened(postgres_server, postgres_database) as b,
    ):
        async with a.janitor_turn() as mine:
            assert mine
            async with b.janitor_turn() as theirs:
                assert not theirs
        async with b.janitor_turn() as theirs:
            assert theirs


# -- the database's password, as the server process handles it ------------------


def server_settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    return gateway_settings(tmp_path, free_port(), LOG_LEVEL="DEBUG", **extra)


def setup_through(settings: dict[str, str]) -> int:
    url = f"http://{settings['LISTEN']}/"
    body = {"argument": "setup", "domain_name": "example.test", "challenge_content": make_value()}
    return requests.post(url, json=body, timeout=10).status_code


def test_the_password_in_database_url_is_never_shown(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    url = postgres_server.url(postgres_database, password=True)
    settings = server_settings(tmp_path, DATABASE_URL=url)
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 0, check.stderr
    plain = postgres_server.url(postgres_database)
    assert f"state:       PostgreSQL at {plain}" in check.stdout
    with running_gateway(tmp_path, settings) as gw:
        assert setup_through(settings) == 201
    wrong = server_settings(tmp_path, DATABASE_URL=url.replace(postgres_server.password, "wr0ng"))
    refused = run_gateway(tmp_path, {**wrong, "DATABASE_TIMEOUT": "2"})
    assert refused.returncode == 1 and "password authentication failed" in refused.stderr
    for text in (check.stdout, check.stderr, gw.stdout, gw.stderr, refused.stderr):
        assert postgres_server.password not in text
        assert "wr0ng" not in text


def test_a_password_with_url_delimiters_is_taken_as_libpq_takes_it(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    """libpq reads ``user:pass?word#x@host`` (not percent-encoded) as a password up to
    the ``@``; a URL parser ends the host at the ``?`` or ``#``. The gateway must take
    out the password libpq uses, not show what it took for a host."""
    role = f"r{secrets.token_hex(4)}"
    stem = secrets.token_hex(8)
    password = f"{stem}?q#f"
    with contextlib.closing(postgres_server.connect(postgres_database)) as db:
        db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        db.execute(f'ALTER DATABASE "{postgres_database}" OWNER TO {role}')
    where = f"127.0.0.1:{postgres_server.port}/{postgres_database}"
    settings = server_settings(tmp_path, DATABASE_URL=f"postgresql://{role}:{password}@{where}")
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 0, check.stderr
    assert f"state:       PostgreSQL at postgresql://{role}@{where}" in check.stdout
    with running_gateway(tmp_path, settings) as gw:
        assert setup_through(settings) == 201
    # In the query, a "#" is no fragment to libpq: it is in the password.
    query = server_settings(tmp_path, DATABASE_URL=f"postgresql://{role}@{where}?password={password}")
    in_query = run_gateway(tmp_path, query, ["--check-config"])
    assert in_query.returncode == 0, in_query.stderr
    wrong = server_settings(tmp_path, DATABASE_TIMEOUT="2",
                            DATABASE_URL=f"postgresql://{role}:{stem[::-1]}#x@{where}")
    refused = run_gateway(tmp_path, wrong)
    assert refused.returncode == 1 and "password authentication failed" in refused.stderr
    # A "/" or an "@" in it cannot be told from the path or the host: refused, without
    # showing it.
    unclear = []
    for bad, fix in (("/", "%2F"), ("@", "%40")):
        settings = server_settings(tmp_path, DATABASE_URL=f"postgresql://{role}:{stem}{bad}x@{where}")
        result = run_gateway(tmp_path, settings, ["--check-config"])
        assert result.returncode == 2 and f"in the password as {fix}" in result.stderr
        unclear += [result.stdout, result.stderr]
    for text in (check.stdout, check.stderr, gw.stdout, gw.stderr, in_query.stdout,
                 in_query.stderr, refused.stderr, *unclear):
        assert stem not in text and stem[::-1] not in text


@pytest.mark.parametrize("source", ["DATABASE_PASSWORD_FILE", "PGPASSFILE"])
def test_the_database_password_from_a_file(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str, source: str
) -> None:
    secret = tmp_path / "db-password"
    if source == "PGPASSFILE":  # libpq's own format, found by libpq itself
        line = f"127.0.0.1:{postgres_server.port}:{postgres_database}:acmegw:"
        secret.write_text(line + postgres_server.password + "\n")
    else:
        secret.write_text(postgres_server.password + "\n")
    secret.chmod(0o600)
    settings = server_settings(
        tmp_path, DATABASE_URL=postgres_server.url(postgres_database), **{source: str(secret)}
    )
    with running_gateway(tmp_path, settings) as gw:
        assert setup_through(settings) == 201
    assert postgres_server.password not in gw.stderr + gw.stdout


def test_database_settings_that_cannot_work_are_problems(tmp_path: Path) -> None:
    settings = server_settings(tmp_path, DATABASE_URL="mysql://u:secret@h/db")
    result = run_gateway(tmp_path, settings, ["--check-config"])
    assert result.returncode == 2
    assert "DATABASE_URL: expected postgresql://user@host:port/database" in result.stderr
    assert "secret" not in result.stderr
    both = server_settings(
        tmp_path, DATABASE_URL="postgresql://u:secret@h/db", DATABASE_PASSWORD="other"
    )
    result = run_gateway(tmp_path, both, ["--check-config"])
    assert "DATABASE_URL holds a password and DATABASE_PASSWORD is set" in result.stderr


async def test_setups_a_replica_left_unfinished_are_cleaned_up_once_it_is_gone(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """A replica that dies mid-setup leaves a value ``adding``: never confirmed, it is
    due at the others' next sweep once its provider call must have ended, not an
    hour later; its confirmed values stay until their teardown."""
    clock = Clock()
    b = pg_state(postgres_server, postgres_database, provider_timeout=5.0, clock=clock)
    await b.open()
    try:
        unfinished, confirmed = make_value(), make_value()
        async with pg_opened(postgres_server, postgres_database) as a:
            await a.journal.begin_add(NAME, unfinished, "alice")
            await a.journal.begin_add(NAME, confirmed, "alice")
            await a.journal.commit_add(NAME, confirmed)
            clock.now = time.time() + b.lock_wait + 1
            assert await b.journal.due(3600) == []  # a is alive: its change may go on
        # a is gone (its session ended); right after its call, b waits still.
        clock.now = time.time()
        assert await b.journal.due(3600) == []
        clock.now = time.time() + b.lock_wait + 1
        assert [r.value for r in await b.journal.due(3600)] == [unfinished]
    finally:
        await b.close()


async def test_a_replica_holds_its_presence_through_a_lost_connection(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with pg_opened(postgres_server, postgres_database) as a:

        def present() -> bool:
            with contextlib.closing(postgres_server.connect(postgres_database)) as db:
                row = db.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s",
                    (a.replica,),
                ).fetchone()
            return row == (1,)

        assert present()
        with contextlib.closing(postgres_server.connect(postgres_database)) as db:
            db.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'advisory' AND objid = %s",
                (a.replica,),
            )
        for _ in range(200):
            if present():
                break
            await asyncio.sleep(0.05)
        assert present()


async def test_a_database_of_an_earlier_version_is_migrated_and_kept(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    value = make_value()
    with contextlib.closing(postgres_server.connect(postgres_database)) as db:
        db.execute("CREATE TABLE schema_version (part TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        for statement in PG_JOURNAL[0]:
            db.execute(statement)
        db.execute("INSERT INTO schema_version VALUES ('journal', 1)")
        db.execute(
            "INSERT INTO records VALUES (%s, %s, 'alice', 'present', 1.0, 1.0)", (NAME, value)
        )
    async with pg_opened(postgres_server, postgres_database) as state:
        assert [(r.value, r.state) for r in await state.journal.all()] == [(value, "present")]
        await state.journal.begin_add(NAME, make_value(), "bob")
    assert pg_versions(postgres_server, postgres_database) == PG_LAST_VERSIONS


@pytest.mark.parametrize("key", ["DATABASE_PASSWORD_FILE", "DATABASE_URL_FILE"])
def test_a_database_secret_file_others_may_read_stops_start_up(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str, key: str
) -> None:
    secret = tmp_path / "db-secret"
    if key == "DATABASE_URL_FILE":
        secret.write_text(postgres_server.url(postgres_database, password=True) + "\n")
        extra = {key: str(secret)}
    else:
        secret.write_text(postgres_server.password + "\n")
        extra = {key: str(secret), "DATABASE_URL": postgres_server.url(postgres_database)}
    secret.chmod(0o644)
    settings = server_settings(tmp_path, **extra)
    result = run_gateway(tmp_path, settings)
    assert result.returncode == 2, result.stderr
    assert f"{secret} holds secrets, but every user may read it" in result.stderr
    assert postgres_server.password not in result.stderr
    secret.chmod(0o600)
    with running_gateway(tmp_path, settings):
        assert setup_through(settings) == 201


# -- --check-config connects to the database ---------------------------------------


async def create_tables(server: PostgresServer, database: str) -> None:
    async with pg_opened(server, database):
        pass


def check_config(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    return run_gateway(
        tmp_path, server_settings(tmp_path, **settings), ["--check-config"], timeout=60
    )


def cannot_connect(tmp_path: Path, url: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """``--check-config`` for a database at *url* it cannot connect to: a problem
    (exit 2) naming the URL."""
    result = check_config(tmp_path, DATABASE_URL=url, **settings)
    assert result.returncode == 2, result.stderr
    assert f"  - DATABASE_URL: cannot connect to PostgreSQL at {url}: " in result.stderr
    return result


def test_check_config_connects_and_writes_nothing(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    good = check_config(
        tmp_path,
        DATABASE_URL=postgres_server.url(postgres_database),
        DATABASE_PASSWORD=postgres_server.password,
    )
    assert good.returncode == 0, good.stderr
    assert "configuration OK" in good.stdout
    assert "warning" not in good.stderr
    with contextlib.closing(postgres_server.connect(postgres_database)) as db:
        made = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    assert made == (False,)  # the gateway creates its tables when it starts, not here


def test_check_config_with_a_wrong_database_password_is_a_problem(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    url = postgres_server.url(postgres_database)
    result = cannot_connect(tmp_path, url, DATABASE_PASSWORD="wr0ng-password")
    assert "the configuration has 1 problem(s)" in result.stderr
    assert 'password authentication failed for user "acmegw"' in result.stderr
    assert "wr0ng" not in result.stderr + result.stdout


def test_check_config_with_nothing_at_the_database_port_is_a_problem(tmp_path: Path) -> None:
    url = f"postgresql://acmegw@127.0.0.1:{free_port()}/acmegw"
    result = cannot_connect(tmp_path, url)
    assert "Connection refused" in result.stderr


def test_check_config_waits_for_a_database_that_never_answers_only_database_timeout(
    tmp_path: Path,
) -> None:
    """Something takes the connection and says nothing: the check gives up after
    DATABASE_TIMEOUT (libpq's least is 2 s) and says so."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"postgresql://acmegw@127.0.0.1:{silent.getsockname()[1]}/acmegw"
        result = cannot_connect(tmp_path, url, DATABASE_TIMEOUT="1")
    assert "timeout expired" in result.stderr


def test_a_database_url_without_the_postgresql_driver_stops_start_up_naming_the_extra(
    tmp_path: Path,
) -> None:
    """psycopg not installed: a configuration problem (exit 2) that says which extra to
    install, when the server starts as under --check-config, not a traceback."""
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(
        'raise ImportError("No module named \'psycopg\'", name="psycopg")\n'
    )
    settings = server_settings(
        tmp_path,
        DATABASE_URL=f"postgresql://acmegw@127.0.0.1:{free_port()}/acmegw",
        PYTHONPATH=f"{shadow.parent}{os.pathsep}{REPO_ROOT}",
    )
    for args in ([], ["--check-config"]):
        result = run_gateway(tmp_path, settings, args, timeout=60)
        assert result.returncode == 2, result.stderr
        assert "the configuration has 1 problem(s)" in result.stderr
        assert (
            "  - DATABASE_URL needs the PostgreSQL driver (psycopg cannot be imported): "
            "pip install 'acme-dns01-gateway[postgresql]'"
        ) in result.stderr
        assert "Traceback" not in result.stderr


def check_with_journal_at(
    tmp_path: Path, server: PostgresServer, database: str, version: int
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """``--check-config`` on a database whose journal tables say *version*: its URL and
    the run."""
    asyncio.run(create_tables(server, database))
    with contextlib.closing(server.connect(database)) as db:
        db.execute("UPDATE schema_version SET version = %s WHERE part = 'journal'", (version,))
    url = server.url(database)
    return url, check_config(tmp_path, DATABASE_URL=url, DATABASE_PASSWORD=server.password)


def test_check_config_refuses_a_database_a_newer_gateway_migrated(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    url, result = check_with_journal_at(
        tmp_path, postgres_server, postgres_database, len(PG_JOURNAL) + 1
    )
    assert result.returncode == 2, result.stderr
    assert (
        f"DATABASE_URL: PostgreSQL at {url}: the journal tables are at version "
        f"{len(PG_JOURNAL) + 1}, newer than this gateway knows ({len(PG_JOURNAL)}): "
        "a newer gateway migrated this database; upgrade this replica like the others"
    ) in " ".join(result.stderr.split())


def test_check_config_warns_of_a_migration_that_locks_out_older_replicas(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    url, result = check_with_journal_at(tmp_path, postgres_server, postgres_database, 1)
    assert result.returncode == 0, result.stderr
    assert (
        f"acmegw-server: warning: DATABASE_URL: PostgreSQL at {url}: the journal tables are "
        f"at version 1; this gateway migrates them to version {len(PG_JOURNAL)} when it "
        "starts, and gateways of the older version then refuse this database: upgrade "
        "every replica"
    ) in " ".join(result.stderr.split())
    with contextlib.closing(postgres_server.connect(postgres_database)) as db:
        row = db.execute("SELECT version FROM schema_version WHERE part = 'journal'").fetchone()
    assert row == (1,)  # migrated at start, not by the check


def test_check_config_says_which_grant_a_user_who_may_not_create_tables_needs(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    role, password = f"checker_{os.getpid()}", secrets.token_urlsafe(12)
    with contextlib.closing(postgres_server.connect(postgres_database)) as db:
        # As PostgreSQL 15 and later have it: not every user may create in public.
        db.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        db.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        url = postgres_server.url(postgres_database).replace("acmegw@", f"{role}@")
        result = check_config(tmp_path, DATABASE_URL=url, DATABASE_PASSWORD=password)
    finally:
        with contextlib.closing(postgres_server.connect(postgres_database)) as db:
            db.execute(f"DROP ROLE {role}")
    assert result.returncode == 2, result.stderr
    assert (
        f"DATABASE_URL: PostgreSQL at {url}: user {role} may not create tables in schema "
        "public, and this gateway must create its journal, accounts, builtin tables there: "
        f"GRANT CREATE ON SCHEMA public TO {role}"
    ) in " ".join(result.stderr.split())
