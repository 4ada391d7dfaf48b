"""The state backends a test suite runs against: SQLite in ``STATE_DIR`` and PostgreSQL.

A test module runs its tests once per backend by importing the fixture
``both_backends``, which is named ``backend`` and so replaces the SQLite-only
one of ``tests/gateway/conftest.py`` in that module::

    from tests.gateway.backends import both_backends  # noqa: F401 (a fixture)

A :class:`Backend` gives the settings that choose it (``env``, for the gateway's
configuration), opens a :class:`gateway.state.State` directly, and reads or
changes the tables from outside as an operator would (``sql``), with ``?`` for
parameters on both. PostgreSQL runs once per test session
(:mod:`tests.servers.postgres`), with a fresh database per test.

:func:`gateway_on_postgres` runs a gateway process on a server a test module
stops or freezes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gateway.state import State
from gateway.state.sqlite import ACCOUNTS_FILE_NAME, JOURNAL_FILE_NAME, SqliteState
from tests.gateway.procs import GatewayProcess, builtin_settings, running_gateway
from tests.servers.postgres import PostgresServer
from tests.system import free_port

if TYPE_CHECKING:  # the driver is imported only by the tests that use PostgreSQL
    from gateway.state.postgres import PostgresState

BACKENDS = ("sqlite", "postgresql")

# Which SQLite file holds which table.
_SQLITE_FILES = {"records": JOURNAL_FILE_NAME, "accounts": ACCOUNTS_FILE_NAME}


class Backend:
    """One backend for one test: SQLite files in *state_dir*, or a PostgreSQL database."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        postgres: PostgresServer | None = None,
        database: str | None = None,
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.postgres = postgres
        self.database = database

    @property
    def env(self) -> dict[str, str]:
        """The gateway settings that select this backend (STATE_DIR is set either way)."""
        env = {"STATE_DIR": str(self.state_dir)}
        if self.postgres is not None and self.database is not None:
            env["DATABASE_URL"] = self.postgres.url(self.database)
            env["DATABASE_PASSWORD"] = self.postgres.password
        return env

    def state(self, clock: Callable[[], float] = time.time, **kwargs: Any) -> State:
        """A state on this backend, not yet opened."""
        if self.postgres is None or self.database is None:
            return SqliteState(self.state_dir, clock=clock)
        return pg_state(self.postgres, self.database, clock=clock, **kwargs)

    def sql(self, table: str, statement: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run *statement* (about *table*: SQLite keeps tables in separate files) from
        outside the gateway and return its rows; ``?`` marks parameters."""
        if self.postgres is None or self.database is None:
            path = self.state_dir / _SQLITE_FILES[table]
            with contextlib.closing(sqlite3.connect(path, timeout=10)) as db, db:
                return db.execute(statement, args).fetchall()
        with contextlib.closing(self.postgres.connect(self.database)) as pg:
            cursor = pg.execute(statement.replace("?", "%s"), args)
            return cursor.fetchall() if cursor.description else []

    def refuse_writes(self, table: str) -> None:
        """Make every insert and update of *table* fail, as a full or read-only disk would."""
        if self.postgres is None:
            for event in ("INSERT", "UPDATE"):
                self.sql(
                    table,
                    f"CREATE TRIGGER refuse_{event.lower()} BEFORE {event} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'writes refused by the test'); END",
                )
        else:
            # Not validated against the rows there: only new writes fail.
            self.sql(table, f"ALTER TABLE {table} ADD CONSTRAINT refuse CHECK (false) NOT VALID")


def pg_state(
    server: PostgresServer,
    database: str,
    provider_timeout: float = 30.0,
    clock: Callable[[], float] = time.time,
    **kwargs: Any,
) -> PostgresState:
    """A state on *database* of *server*, not yet opened; *kwargs* are
    :class:`gateway.config.DatabaseConfig`'s."""
    from gateway.config import DatabaseConfig
    from gateway.state.postgres import PostgresState

    config = DatabaseConfig(server.url(database), server.password, **kwargs)
    return PostgresState(config, provider_timeout, clock)


@contextlib.asynccontextmanager
async def pg_opened(
    server: PostgresServer, database: str, **kwargs: Any
) -> AsyncIterator[PostgresState]:
    """:func:`pg_state`, opened for the block."""
    state = pg_state(server, database, **kwargs)
    await state.open()
    try:
        yield state
    finally:
        await state.close()


@contextlib.contextmanager
def gateway_on_postgres(
    tmp_path: Path, server: PostgresServer
) -> Iterator[tuple[GatewayProcess, str, str, int]]:
    """A gateway (``PROVIDER=builtin``, its records in the database too) on a fresh
    database of *server*, with short bounds (``DATABASE_TIMEOUT`` 2 s,
    ``PROVIDER_TIMEOUT`` 3 s, the janitor every second): the process, its URL,
    the database's name and its DNS port."""
    database = server.new_database()
    port, dns_port = free_port(), free_port()
    settings = builtin_settings(
        tmp_path, port, dns_port,
        DATABASE_URL=server.url(database),
        DATABASE_PASSWORD=server.password,
        DATABASE_TIMEOUT="2",
        PROVIDER_TIMEOUT="3",
        PROPAGATION_CHECK="off",
        MAX_RECORDS_PER_USER="0",
        JANITOR_INTERVAL="1",
    )
    with running_gateway(tmp_path, settings) as gw:
        yield gw, f"http://127.0.0.1:{port}/", database, dns_port


@pytest.fixture(params=BACKENDS, name="backend")
def both_backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each test twice: on SQLite, and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield Backend("sqlite", tmp_path / "state")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    database: str = request.getfixturevalue("postgres_database")
    yield Backend("postgresql", tmp_path / "state", server, database)
