"""The PostgreSQL backend: one database shared by every replica of the gateway.

Driver: psycopg 3 with psycopg_pool (the ``postgresql`` extra). It is libpq, so
``PGPASSFILE``, ``~/.pgpass``, service files, ``sslmode`` and the rest of
libpq's connection settings work as in ``psql``; it speaks asyncio natively;
and LISTEN/NOTIFY, which the builtin DNS needs to hear other replicas'
changes, is a plain async iterator on a connection.

One pool per process (``DATABASE_POOL_SIZE``), in autocommit mode: each
journal write is one statement, committed when it returns.

Serialising changes across replicas. The journal row must be committed
*before* the provider is called (restart safety), so a transaction-scoped lock
would end at that commit, before the provider call it must cover. A change
therefore takes a *session* advisory lock on its name (``pg_advisory_lock``)
on one pooled connection, writes its journal rows on that same connection, and
unlocks when it ends; if the replica dies, its session ends and PostgreSQL
drops the lock. One connection per change: a change never waits for a second
connection while holding one, so an exhausted pool cannot deadlock, and
changes may hold at most three quarters of the pool so that short queries
(an acme-dns login, ``/healthz``) always find one. Every wait is bounded:
for a connection or a change slot ``DATABASE_TIMEOUT``, for a name another
replica holds ``PROVIDER_TIMEOUT`` plus ``DATABASE_TIMEOUT``; then the answer
is 503.

A database that stops answering. ``statement_timeout`` and ``lock_timeout``
are the server's, and a server that is frozen (a stopped host or process, a
network path that swallows packets) enforces nothing; TCP keepalives are
answered by a host whose process is stopped. So each use of a connection is
bounded here too (:func:`answered`): past its bound, the connection's socket
is shut down. The statement waiting on it fails at once, without psycopg's
attempt to cancel it on the server (which waits for that server, up to 10 s),
and the connection, broken, is dropped by the pool instead of being handed out
again; the pool connects anew once the database answers. The pool's check of
an idle connection before handing it out is bounded the same way, by what is
left of the wait for a connection. libpq's ``tcp_user_timeout`` ends a
connection whose sent bytes go unacknowledged for ``DATABASE_TIMEOUT``. The
listening connection, idle most of the time, is asked for an answer every
``LISTEN_CHECK_INTERVAL`` and connected anew when none comes.

The janitor sweeps on one replica at a time: a round starts only with
``pg_try_advisory_lock`` on the janitor's key, held on one connection for the
round. Each replica holds a lock on a number of its own for as long as it
runs (on a connection outside the pool, taken again after a reconnect) and
writes that number on the changes it begins: a setup left ``adding`` by a
replica whose lock is gone was never confirmed, and the others' janitor
removes it once its provider call must have ended, instead of an hour later.

The schema is created and migrated at start under a transaction-scoped
advisory lock, so replicas starting together never race; ``schema_version``
holds each part's version, as in the SQLite files.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, LiteralString

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from gateway.acmedns import Account, AccountTable, allowfrom_text
from gateway.config import DatabaseConfig
from gateway.errors import Unavailable
from gateway.journal import Journal, Record
from gateway.shutdown import stop_tasks
from gateway.state import SELECT_ACCOUNTS, SELECT_RECORDS, State, account_of

log = logging.getLogger(__name__)

# Advisory locks take two 32-bit keys: a class (ours start at "acme") and a key in it.
_ACMEGW = int.from_bytes(b"acme", "big")
MIGRATION = (_ACMEGW, 0)
JANITOR = (_ACMEGW, 1)
NAMES = _ACMEGW + 1  # key: a hash of the name
OWNERS = _ACMEGW + 2  # key: a hash of the owner (MAX_RECORDS_PER_USER)
REPLICAS = _ACMEGW + 3  # key: a replica's number, held while it runs
ACCOUNT_OWNERS = _ACMEGW + 4  # key: a hash of a registrant (its acme-dns account cap)

# How long the pool's own tasks (one may be connecting) get to end at close.
POOL_CLOSE_BOUND = 5.0
# How long after a use's bound its task is cancelled, if shutting the connection
# down did not end it (it waits for something else than the database).
CANCEL_AFTER = 1.0
# The least time the pool's check of an idle connection gets (a round trip).
CHECK_AT_LEAST = 0.25
# How often the idle listening connection must show that the server answers.
LISTEN_CHECK_INTERVAL = 15.0

# The loop time by which the pooled connection a task asks for must be handed
# over (PostgresState.connection): the pool checks a connection in that task.
_HANDOVER_BY: ContextVar[float | None] = ContextVar("acmegw_handover_by", default=None)

JOURNAL_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (
        "CREATE TABLE records ("
        " fqdn TEXT NOT NULL,"
        " value TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " state TEXT NOT NULL CHECK (state IN ('adding', 'present', 'removing')),"
        " created DOUBLE PRECISION NOT NULL,"
        " updated DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (fqdn, value))",
        "CREATE INDEX records_created ON records (created)",
        "CREATE INDEX records_owner ON records (owner)",
    ),
    # Which replica began the change in progress (0: none known), so that the
    # others can finish what a replica that died left half done.
    ("ALTER TABLE records ADD COLUMN replica INTEGER NOT NULL DEFAULT 0",),
)
ACCOUNT_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (
        "CREATE TABLE accounts ("
        " username TEXT PRIMARY KEY,"
        " key_hash TEXT NOT NULL,"
        " subdomain TEXT NOT NULL UNIQUE,"
        " fqdn TEXT NOT NULL,"
        " allowfrom TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " created DOUBLE PRECISION NOT NULL)",
    ),
)
RECORDS_MIGRATIONS: tuple[tuple[LiteralString, ...], ...] = (
    (
        "CREATE TABLE zone_values ("
        " id BIGSERIAL PRIMARY KEY,"
        " name TEXT NOT NULL,"
        " value TEXT NOT NULL,"
        " UNIQUE (name, value))",
        "CREATE TABLE zone_serial ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " serial BIGINT NOT NULL)",
    ),
)
# Each change of the builtin server's records is announced here: "<replica> <name>".
ZONE_CHANNEL = "acmegw_zone"
MIGRATIONS: dict[str, tuple[tuple[LiteralString, ...], ...]] = {
    "journal": JOURNAL_MIGRATIONS,
    "accounts": ACCOUNT_MIGRATIONS,
    "builtin": RECORDS_MIGRATIONS,
}


def conninfo_of(config: DatabaseConfig) -> str:
    """libpq's connection string for *config*: connecting waits ``DATABASE_TIMEOUT``."""
    return make_conninfo(
        config.url,
        password=config.password,
        application_name="acmegw",
        connect_timeout=max(1, round(config.timeout)),
        # Bytes sent and never acknowledged (a network path that swallows them)
        # end the connection after DATABASE_TIMEOUT, not TCP's 15 minutes.
        tcp_user_timeout=max(1000, round(config.timeout * 1000)),
        # A database host that vanishes (no RST) is noticed in seconds, not hours.
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=3,
    )


def lock_key(text: str) -> int:
    """A signed 32-bit key for *text*, the same in every replica (collisions only
    serialise two names that need not be)."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())[:300]


def sever(conn: AsyncConnection[Any]) -> None:
    """Shut *conn*'s socket down: whatever waits on it fails at once, and the
    connection is broken for good (the pool discards it when it comes back)."""
    with contextlib.suppress(psycopg.Error, OSError):
        # A duplicate of libpq's descriptor: shutting it down ends the connection
        # for both, and libpq's own stays open until libpq closes it.
        dup = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


@asynccontextmanager
async def answered(conn: AsyncConnection[Any], within: float, what: str) -> AsyncIterator[None]:
    """The block's statements on *conn* end within *within* seconds, whether the
    server answers or not: past that, *conn* is severed (:func:`sever`) and the
    block raises :class:`Unavailable` saying *what* did not happen."""
    loop = asyncio.get_running_loop()
    severed = False

    def give_up() -> None:
        nonlocal severed
        severed = True
        sever(conn)

    timer = loop.call_later(within, give_up)
    try:
        # A block waiting for something other than this connection is cancelled.
        async with asyncio.timeout(within + CANCEL_AFTER) as scope:
            yield
    except (psycopg.Error, TimeoutError) as exc:
        if not severed and not scope.expired():
            raise
        raise Unavailable(
            f"{what}: PostgreSQL did not answer within {within:g}s "
            "(is the database server overloaded or unreachable?)"
        ) from exc
    finally:
        timer.cancel()


class PostgresState(State):
    """The journal and the accounts in a PostgreSQL database, shared by replicas."""

    def __init__(
        self,
        config: DatabaseConfig,
        provider_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.description = f"PostgreSQL at {config.url}"
        # A name held by another replica is free once its change ends: at most a
        # provider call and its journal writes.
        self.lock_wait = provider_timeout + config.timeout
        self.conninfo = conninfo_of(config)
        self.pool = AsyncConnectionPool(
            self.conninfo,
            kwargs={"autocommit": True},
            # A few kept open: a burst, or the first requests after the database
            # came back, need not wait for each connection to be made.
            min_size=min(4, config.pool_size),
            max_size=config.pool_size,
            open=False,
            configure=self._configure,
            # A connection a database restart broke is replaced before a request gets it.
            check=self._check_idle,
            timeout=config.timeout,
            name="acmegw",
        )
        self.change_slots = max(1, config.pool_size - max(1, config.pool_size // 4))
        self._slots: asyncio.Semaphore | None = None  # made on the running loop
        # This process among the replicas: a number it holds a session lock on for
        # as long as it runs (:meth:`_stay_present`), written on the changes it begins.
        self.replica = 1 + secrets.randbelow(2**31 - 2)
        self._presence: asyncio.Task[None] | None = None
        self._present = asyncio.Event()
        self._closing = False
        self.journal = PostgresJournal(self, None, clock)
        self.accounts = PostgresAccounts(self)
        self.records: PostgresRecords = PostgresRecords(self)

    async def _configure(self, conn: AsyncConnection[Any]) -> None:
        ms = round(self.lock_wait * 1000)
        # Bounded waits: for a lock another replica holds, and for any statement.
        async with answered(conn, self.config.timeout, "a new database connection"):
            await conn.execute(
                "SELECT set_config('lock_timeout', %s, false), "
                "set_config('statement_timeout', %s, false)",
                (str(ms), str(ms + 5000)),
            )

    async def _check_idle(self, conn: AsyncConnection[Any]) -> None:
        """The pool's check of an idle connection before it hands it out: one round
        trip, within what is left of the wait for a connection."""
        by = _HANDOVER_BY.get()
        left = self.config.timeout if by is None else by - asyncio.get_running_loop().time()
        async with answered(conn, max(CHECK_AT_LEAST, left), "an idle database connection"):
            await conn.execute("")

    # -- connections ----------------------------------------------------------

    @asynccontextmanager
    async def connection(
        self,
        what: str,
        bound: AsyncConnection[Any] | None = None,
        wait: float | None = None,
        within: float | None = None,
        *,
        held: bool = False,
    ) -> AsyncIterator[AsyncConnection[Any]]:
        """*bound*, or a connection from the pool (waiting at most *wait* seconds, by
        default ``DATABASE_TIMEOUT``); a database error in the block is
        :class:`Unavailable` saying *what* failed.

        The block's statements end within *within* seconds (by default
        ``DATABASE_TIMEOUT``; :func:`answered`). A block that keeps the
        connection while it does other work (*held*: a lock held across a
        provider call) bounds each of its statements itself.
        """
        wait = self.config.timeout if wait is None else wait
        within = self.config.timeout if within is None else within
        try:
            if bound is not None:
                async with answered(bound, within, what):
                    yield bound
            else:
                task = asyncio.current_task()
                cancels = 0 if task is None else task.cancelling()
                handover = _HANDOVER_BY.set(asyncio.get_running_loop().time() + wait)
                async with self.pool.connection(timeout=wait) as conn:
                    _HANDOVER_BY.reset(handover)
                    if task is not None and task.cancelling() > cancels:
                        # psycopg_pool waits for a free connection with
                        # asyncio.wait_for, which on Python 3.11 swallows a
                        # cancellation that comes as the connection does: the
                        # task would carry on as if never cancelled (a janitor
                        # or listener that never stops). It ends here instead.
                        raise asyncio.CancelledError
                    if held:
                        yield conn
                    else:
                        async with answered(conn, within, what):
                            yield conn
        except PoolTimeout:
            raise Unavailable(
                f"{what}: no database connection within {wait:g}s (is PostgreSQL reachable?)"
            ) from None
        except psycopg.Error as exc:
            # The server's own words (its address, role and schema names) are for the
            # log; the answer, /healthz's included, goes to whoever asked.
            raise Unavailable(
                f"{what}: the database failed (the gateway's log says why)",
                detail=f"{what}: {_one_line(exc)}",
            ) from exc

    async def open(self) -> None:
        self._slots = asyncio.Semaphore(self.change_slots)
        try:
            await self.pool.open(wait=True, timeout=self.config.timeout)
        except PoolTimeout:
            await self.pool.close()
            raise Unavailable(
                f"cannot connect to {self.description} within {self.config.timeout:g}s"
            ) from None
        try:
            # Another replica may be migrating: wait for it as for a name.
            preparing = self.connection("cannot prepare the database", within=self.lock_wait)
            async with preparing as conn:
                await migrate(conn)
            self._closing = False
            self._presence = asyncio.create_task(self._stay_present(), name="database presence")
            try:
                async with asyncio.timeout(self.config.timeout):
                    await self._present.wait()
            except TimeoutError:
                raise Unavailable(
                    f"cannot hold this replica's lock in {self.description}"
                ) from None
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and release every connection, within bounds (a task that
        will not stop is logged and left, with any connection it holds)."""
        self._closing = True
        if self._presence is not None:
            await stop_tasks([self._presence], "the database listener")
            self._presence = None
        await self.pool.close(timeout=POOL_CLOSE_BOUND)

    async def _stay_present(self) -> None:
        """Hold this replica's lock on a connection of its own while the process runs,
        taking it again after the connection is lost.

        Other replicas read the lock in ``pg_locks``: the changes this one began are
        its own to finish while it holds it. Once the process dies, so does its
        session, and the lock with it.
        """
        pause = 0.1
        while True:
            try:
                conn = await AsyncConnection.connect(self.conninfo, autocommit=True)
                async with conn:
                    async with answered(conn, self.config.timeout, "this replica's lock"):
                        await conn.execute(
                            "SELECT pg_advisory_lock(%s, %s)", (REPLICAS, self.replica)
                        )
                        await conn.execute(f"LISTEN {ZONE_CHANNEL}")
                    self._present.set()
                    pause = 0.1
                    # Changes made while this connection was not listening were missed.
                    await self.records.reload()
                    while True:
                        async for notice in conn.notifies(timeout=LISTEN_CHECK_INTERVAL):
                            replica, _, name = notice.payload.partition(" ")
                            if replica != str(self.replica):
                                await self.records.changed(name)
                        # A server that stopped answering sends no notice either.
                        async with answered(conn, self.config.timeout, "listening"):
                            await conn.execute("SELECT 1")
            except (psycopg.Error, Unavailable) as exc:
                if self._present.is_set():
                    log.warning("database: lost this replica's connection: %s", _one_line(exc))
            except Exception:
                # A change heard could not be applied: start again, and read everything.
                log.exception("database: applying another replica's change failed")
            self._present.clear()
            if self._closing:
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def check(self) -> None:
        # Short: a load balancer's health check must get its 503 before it gives up.
        wait = min(2.0, self.config.timeout)
        async with self.connection("the database cannot be used", wait=wait, within=wait) as conn:
            await conn.execute("SELECT 1")

    # -- locks ------------------------------------------------------------------

    @asynccontextmanager
    async def _change_slot(self) -> AsyncIterator[None]:
        slots = self._slots
        if slots is None:
            raise Unavailable("the database is not open")
        try:
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancellation that
            # comes as the slot is granted, and a janitor so cancelled never stops.
            async with asyncio.timeout(self.config.timeout):
                await slots.acquire()
        except TimeoutError:
            raise Unavailable(
                f"{self.change_slots} changes are in flight on this replica, as many as "
                "its database connections allow (DATABASE_POOL_SIZE); try again"
            ) from None
        try:
            yield
        finally:
            slots.release()

    @asynccontextmanager
    async def hold(self, fqdn: str) -> AsyncIterator[Journal]:
        key = lock_key(fqdn)
        async with (
            self._change_slot(),
            self.connection(f"cannot lock {fqdn}", held=True) as conn,
        ):
            try:
                # The server's lock_timeout ends the wait for another replica at
                # lock_wait; this bound is for a server that does not answer.
                await _lock(
                    conn,
                    "SELECT pg_advisory_lock(%s, %s)",
                    (NAMES, key),
                    self.lock_wait + self.config.timeout,
                )
            except psycopg.errors.LockNotAvailable:
                raise Unavailable(
                    f"another gateway has been changing {fqdn} for over {self.lock_wait:g}s; "
                    "try again"
                ) from None
            try:
                yield PostgresJournal(self, conn, self.journal.clock)
            finally:
                await _unlock(
                    conn, "SELECT pg_advisory_unlock(%s, %s)", (NAMES, key), self.config.timeout
                )

    @asynccontextmanager
    async def janitor_turn(self) -> AsyncIterator[bool]:
        async with self.connection("the janitor cannot lock", held=True) as conn:
            taken = await _lock(
                conn, "SELECT pg_try_advisory_lock(%s, %s)", JANITOR, self.config.timeout
            )
            if not taken:
                yield False  # another replica is sweeping
                return
            try:
                yield True
            finally:
                await _unlock(
                    conn, "SELECT pg_advisory_unlock(%s, %s)", JANITOR, self.config.timeout
                )


async def _lock(
    conn: AsyncConnection[Any], sql: LiteralString, key: tuple[int, int], within: float
) -> bool:
    """Take a session lock; True unless it is a try-lock that found the lock taken.

    Interrupted (cancelled, the connection failing, no answer within *within*
    seconds), we cannot tell whether the server granted the lock: the session
    is ended, which releases it if it did. A wait past ``lock_timeout`` raises
    LockNotAvailable with nothing granted.
    """
    try:
        async with answered(conn, within, "taking a lock"):
            cursor = await conn.execute(sql, key)
            row = await cursor.fetchone()
    except psycopg.errors.LockNotAvailable:
        raise
    except BaseException:
        await conn.close()
        raise
    return row is None or row[0] is not False


async def _unlock(
    conn: AsyncConnection[Any], sql: LiteralString, key: tuple[int, int], within: float
) -> None:
    """Release a session lock; if that fails, end the session, which releases it too
    (a pooled connection must never go back to the pool holding a lock)."""
    if conn.closed:
        return  # ended already (a statement went unanswered): the lock went with it
    try:
        async with answered(conn, within, "releasing a lock"):
            await conn.execute(sql, key)
    except BaseException:
        await conn.close()
        raise


async def migrate(conn: AsyncConnection[Any]) -> None:
    """Create or migrate every part's tables.

    One transaction under an advisory lock: a replica starting at the same time
    waits, then finds the work done.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(part TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        cursor = await conn.execute("SELECT part, version FROM schema_version")
        versions = {part: int(version) for part, version in await cursor.fetchall()}
        for part, migrations in MIGRATIONS.items():
            at = versions.get(part, 0)
            if at > len(migrations):
                raise Unavailable(_too_new(part, at))
            for statements in migrations[at:]:
                for statement in statements:
                    await conn.execute(statement)
            if at < len(migrations):
                log.info("database: %s tables at version %d (were %d)", part, len(migrations), at)
            await conn.execute(
                "INSERT INTO schema_version VALUES (%s, %s) "
                "ON CONFLICT (part) DO UPDATE SET version = excluded.version",
                (part, len(migrations)),
            )


def _too_new(part: str, version: int) -> str:
    return (
        f"the {part} tables are at version {version}, newer than this gateway knows "
        f"({len(MIGRATIONS[part])}): a newer gateway migrated this database; "
        "upgrade this replica like the others"
    )


def check_database(config: DatabaseConfig) -> tuple[list[str], list[str]]:
    """``--check-config``: the problems and warnings of *config*'s database, found by
    connecting (waiting ``DATABASE_TIMEOUT`` at most) and reading its schema versions.

    Writes nothing and takes no lock: a check beside running replicas changes
    nothing for them. A problem is what would stop this gateway from starting
    (no connection, tables of a newer gateway, tables it must make and may not);
    a warning, a migration that would lock out replicas of the older version.
    """
    where = f"DATABASE_URL: PostgreSQL at {config.url}"
    bound = str(max(1, round(config.timeout * 1000)))
    try:
        conn = psycopg.connect(conninfo_of(config), autocommit=True)
    except psycopg.Error as exc:
        return [f"DATABASE_URL: cannot connect to PostgreSQL at {config.url}: {_one_line(exc)}"], []
    try:
        with conn:
            # A server that takes connections but hangs on queries is bounded too.
            conn.execute(
                "SELECT set_config('statement_timeout', %s, false), "
                "set_config('lock_timeout', %s, false)",
                (bound, bound),
            )
            row = conn.execute(
                "SELECT current_user, current_schema(), "
                "has_schema_privilege(current_schema(), 'CREATE'), "
                "to_regclass('schema_version') IS NOT NULL"
            ).fetchone()
            assert row is not None
            user, schema, may_create, versioned = row
            versions: dict[str, int] = {}
            if versioned:
                for part, version in conn.execute("SELECT part, version FROM schema_version"):
                    versions[part] = int(version)
    except psycopg.Error as exc:
        return [f"{where}: cannot read which tables it holds: {_one_line(exc)}"], []
    problems = [
        f"{where}: {_too_new(part, versions[part])}"
        for part, migrations in MIGRATIONS.items()
        if versions.get(part, 0) > len(migrations)
    ]
    behind = [
        part
        for part, migrations in MIGRATIONS.items()
        if versions.get(part, 0) < len(migrations)
    ]
    if problems or not behind:
        return problems, []
    if schema is None:
        problems.append(
            f"{where}: none of the schemas in the search_path of user {user} exists, and "
            "this gateway must create its tables in the first one (CREATE SCHEMA, or "
            "search_path in DATABASE_URL's options)"
        )
    elif not may_create:
        problems.append(
            f"{where}: user {user} may not create tables in schema {schema}, and this "
            f"gateway must create its {', '.join(behind)} tables there: GRANT CREATE ON "
            f"SCHEMA {schema} TO {user} (since PostgreSQL 15, not every user may)"
        )
    warnings = [
        f"{where}: the {part} tables are at version {versions[part]}; this gateway "
        f"migrates them to version {len(MIGRATIONS[part])} when it starts, and gateways "
        "of the older version then refuse this database: upgrade every replica"
        for part in behind
        if versions.get(part, 0) > 0
    ]
    return problems, warnings


class PostgresJournal(Journal):
    """The journal in table ``records``; bound to the connection that holds a name's
    lock (:meth:`PostgresState.hold`), or taking one from the pool per call."""

    def __init__(
        self,
        state: PostgresState,
        bound: AsyncConnection[Any] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.state = state
        self.bound = bound

    async def _write(
        self, sql: LiteralString, args: Sequence[object] | dict[str, object]
    ) -> int:
        async with self.state.connection("journal cannot be written", self.bound) as conn:
            cursor = await conn.execute(sql, args)
            return cursor.rowcount

    async def _select(self, where: LiteralString = "", args: Sequence[object] = ()) -> list[Record]:
        async with self.state.connection("journal cannot be read", self.bound) as conn:
            cursor = await conn.execute(
                SELECT_RECORDS
                + " "
                + where  # one of this class's constant clauses; values are bound
                + " ORDER BY created",
                args,
            )
            return [Record(*row) for row in await cursor.fetchall()]

    async def begin_add(self, fqdn: str, value: str, owner: str, limit: int = 0) -> bool:
        now = self.clock()
        insert: LiteralString = (
            "INSERT INTO records (fqdn, value, owner, state, created, updated, replica) "
            "SELECT %(fqdn)s, %(value)s, %(owner)s, 'adding', %(now)s, %(now)s, %(replica)s "
            "WHERE %(limit)s = 0 "
            "OR EXISTS (SELECT 1 FROM records "
            "           WHERE fqdn = %(fqdn)s AND value = %(value)s AND owner = %(owner)s) "
            "OR (SELECT count(*) FROM records WHERE owner = %(owner)s) < %(limit)s "
            "ON CONFLICT (fqdn, value) DO UPDATE SET owner = excluded.owner, "
            "state = 'adding', created = excluded.created, updated = excluded.updated, "
            "replica = excluded.replica"
        )
        args = {
            "fqdn": fqdn,
            "value": value,
            "owner": owner,
            "now": now,
            "limit": limit,
            "replica": self.state.replica,
        }
        if not limit:
            return await self._write(insert, args) > 0
        async with self.state.connection("journal cannot be written", self.bound) as conn:
            # Replicas setting values for one owner at once, each under its own
            # name's lock, must not pass the limit together: one owner's count
            # and insert at a time.
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)", (OWNERS, lock_key(owner))
                )
                cursor = await conn.execute(insert, args)
            return cursor.rowcount > 0

    async def commit_add(self, fqdn: str, value: str) -> None:
        await self._write(
            "UPDATE records SET state = 'present', updated = %s WHERE fqdn = %s AND value = %s",
            (self.clock(), fqdn, value),
        )

    async def begin_remove(self, fqdn: str, value: str) -> None:
        await self._write(
            "UPDATE records SET state = 'removing', updated = %s, replica = %s "
            "WHERE fqdn = %s AND value = %s",
            (self.clock(), self.state.replica, fqdn, value),
        )

    async def commit_remove(self, fqdn: str, value: str) -> None:
        await self._write("DELETE FROM records WHERE fqdn = %s AND value = %s", (fqdn, value))

    async def values(self, fqdn: str, owner: str | None = None) -> list[Record]:
        if owner is None:
            return await self._select("WHERE fqdn = %s", (fqdn,))
        return await self._select("WHERE fqdn = %s AND owner = %s", (fqdn, owner))

    async def record(self, fqdn: str, value: str) -> Record | None:
        found = await self._select("WHERE fqdn = %s AND value = %s", (fqdn, value))
        return found[0] if found else None

    async def all(self) -> list[Record]:
        return await self._select()

    async def due(self, max_age: float) -> list[Record]:
        """Also a setup that a replica which is gone left ``adding``: it was never
        confirmed. Only once its provider call must have ended, whatever became of
        that replica (a lost connection looks the same for a while)."""
        now = self.clock()
        return await self._select(
            "WHERE created < %s OR state = 'removing' "
            "OR (state = 'adding' AND updated < %s AND NOT EXISTS ("
            "    SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            "    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            "    AND classid = %s::oid AND objid = records.replica::oid AND objsubid = 2))",
            (now - max_age, now - self.state.lock_wait, REPLICAS),
        )

    async def figures(self) -> tuple[int, float]:
        async with self.state.connection("journal cannot be read", self.bound) as conn:
            cursor = await conn.execute("SELECT count(*), min(created) FROM records")
            row = await cursor.fetchone()
        count, oldest = row if row is not None else (0, None)
        return int(count), 0.0 if oldest is None else max(0.0, self.clock() - float(oldest))


class PostgresAccounts(AccountTable):
    """Registered acme-dns accounts in table ``accounts``: what one replica registers,
    every replica knows at once."""

    def __init__(self, state: PostgresState) -> None:
        self.state = state

    async def insert(self, account: Account, limit: int = 0) -> bool:
        insert: LiteralString = (
            "INSERT INTO accounts SELECT %(username)s, %(key_hash)s, %(subdomain)s, %(fqdn)s, "
            "%(allowfrom)s, %(owner)s, %(created)s "
            "WHERE %(limit)s = 0 "
            "OR (SELECT count(*) FROM accounts WHERE owner = %(owner)s) < %(limit)s"
        )
        args = {
            "username": account.username,
            "key_hash": account.key_hash,
            "subdomain": account.subdomain,
            "fqdn": account.fqdn,
            "allowfrom": allowfrom_text(account),
            "owner": account.owner,
            "created": account.created,
            "limit": limit,
        }
        async with self.state.connection("acme-dns account store cannot be written") as conn:
            if not limit:
                return (await conn.execute(insert, args)).rowcount > 0
            # Two registrations by one owner on two replicas would each count the
            # other's insert out (read committed): one owner's count and insert at a time.
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(%s, %s)",
                    (ACCOUNT_OWNERS, lock_key(account.owner)),
                )
                cursor = await conn.execute(insert, args)
            return cursor.rowcount > 0

    async def get(self, username: str) -> Account | None:
        async with self.state.connection("acme-dns account store cannot be read") as conn:
            cursor = await conn.execute(SELECT_ACCOUNTS + " WHERE username = %s", (username,))
            row = await cursor.fetchone()
        return None if row is None else account_of(row)

    async def all(self, owner: str | None = None) -> list[Account]:
        async with self.state.connection("acme-dns account store cannot be read") as conn:
            if owner is None:
                cursor = await conn.execute(SELECT_ACCOUNTS + " ORDER BY created")
            else:
                cursor = await conn.execute(
                    SELECT_ACCOUNTS + " WHERE owner = %s ORDER BY created", (owner,)
                )
            return [account_of(row) for row in await cursor.fetchall()]

    async def set_key(self, username: str, key_hash: str) -> bool:
        async with self.state.connection("acme-dns account store cannot be written") as conn:
            cursor = await conn.execute(
                "UPDATE accounts SET key_hash = %s WHERE username = %s", (key_hash, username)
            )
            return cursor.rowcount > 0

    async def delete(self, username: str) -> bool:
        async with self.state.connection("acme-dns account store cannot be written") as conn:
            cursor = await conn.execute("DELETE FROM accounts WHERE username = %s", (username,))
            return cursor.rowcount > 0

    async def count_owned(self, owner: str) -> int:
        async with self.state.connection("acme-dns account store cannot be read") as conn:
            cursor = await conn.execute("SELECT count(*) FROM accounts WHERE owner = %s", (owner,))
            row = await cursor.fetchone()
        return 0 if row is None else int(row[0])


class PostgresRecords:
    """The builtin DNS server's values and SOA serial (:class:`providers._shared.SharedRecords`)
    in tables ``zone_values`` and ``zone_serial``, shared by every replica.

    Each change is one transaction that also bumps the serial (a row lock: one
    change at a time across replicas) and sends ``NOTIFY acmegw_zone`` with the
    name; each replica's listening connection (:meth:`PostgresState._stay_present`)
    hears it and reads that name's values, and reads everything again after a
    reconnect. The payload is only the name: the tables are the truth.
    """

    def __init__(self, state: PostgresState) -> None:
        self.state = state
        self._changed: Callable[[str], Awaitable[None]] | None = None
        self._reload: Callable[[], Awaitable[None]] | None = None

    def watch(
        self, changed: Callable[[str], Awaitable[None]], reload: Callable[[], Awaitable[None]]
    ) -> None:
        self._changed, self._reload = changed, reload

    async def changed(self, name: str) -> None:
        if self._changed is not None:
            await self._changed(name)

    async def reload(self) -> None:
        if self._reload is not None:
            await self._reload()

    @staticmethod
    async def _values(conn: AsyncConnection[Any], name: str) -> tuple[list[str], int]:
        cursor = await conn.execute(
            "SELECT value FROM zone_values WHERE name = %s ORDER BY id", (name,)
        )
        values = [row[0] for row in await cursor.fetchall()]
        cursor = await conn.execute("SELECT serial FROM zone_serial WHERE id = 1")
        row = await cursor.fetchone()
        return values, 0 if row is None else int(row[0])

    async def _bump(self, conn: AsyncConnection[Any], name: str) -> None:
        await conn.execute(
            "INSERT INTO zone_serial VALUES (1, %s) "
            "ON CONFLICT (id) DO UPDATE SET serial = (zone_serial.serial + 1) %% 4294967296",
            (int(time.time()),),
        )
        await conn.execute(
            "SELECT pg_notify(%s, %s)", (ZONE_CHANNEL, f"{self.state.replica} {name}")
        )

    async def load(self, floor: int) -> tuple[dict[str, list[str]], int]:
        async with (
            self.state.connection("the builtin DNS server's records cannot be read") as conn,
            conn.transaction(),
        ):
            await conn.execute(
                "INSERT INTO zone_serial VALUES (1, %s) ON CONFLICT (id) "
                "DO UPDATE SET serial = GREATEST(zone_serial.serial, excluded.serial)",
                (floor,),
            )
            cursor = await conn.execute("SELECT name, value FROM zone_values ORDER BY id")
            records: dict[str, list[str]] = {}
            for name, value in await cursor.fetchall():
                records.setdefault(name, []).append(value)
            cursor = await conn.execute("SELECT serial FROM zone_serial WHERE id = 1")
            row = await cursor.fetchone()
        return records, floor if row is None else int(row[0])

    async def add(self, name: str, value: str, limit: int) -> tuple[list[str], int] | None:
        async with (
            self.state.connection("the builtin DNS server's records cannot be written") as conn,
            conn.transaction(),
        ):
            values, serial = await self._values(conn, name)
            if value in values:
                return values, serial
            if len(values) >= limit:
                return None
            await conn.execute(
                "INSERT INTO zone_values (name, value) VALUES (%s, %s)", (name, value)
            )
            await self._bump(conn, name)
            return await self._values(conn, name)

    async def remove(self, name: str, value: str) -> tuple[list[str], int]:
        async with (
            self.state.connection("the builtin DNS server's records cannot be written") as conn,
            conn.transaction(),
        ):
            cursor = await conn.execute(
                "DELETE FROM zone_values WHERE name = %s AND value = %s", (name, value)
            )
            if cursor.rowcount:
                await self._bump(conn, name)
            return await self._values(conn, name)

    async def current(self, name: str) -> tuple[list[str], int]:
        async with self.state.connection("the builtin DNS server's records cannot be read") as c:
            return await self._values(c, name)
