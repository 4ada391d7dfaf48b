"""The SQLite backend: the state of one gateway process, in files in ``STATE_DIR``.

``journal.sqlite3`` holds the journal and ``acmedns.sqlite3`` the registered
acme-dns accounts, each with a ``schema_version`` table saying which of its
part's migrations it has had. The files of versions before that table are the
same tables without it: opening one records that it is at version 1.

WAL with ``synchronous=NORMAL`` (:func:`gateway.storage.open_database`): a
commit survives the process being killed (the case we design for); only a
power cut may lose the last commits. Calls are short local writes and run on
the event loop thread. One process owns the files, so the per-name lock of
:class:`gateway.service.NameLocks` serialises changes on its own, and the
janitor needs no lock either.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from gateway.acmedns import Account, AccountTable, allowfrom_text
from gateway.errors import Unavailable
from gateway.journal import Journal, Record
from gateway.state import SELECT_ACCOUNTS, SELECT_RECORDS, State, account_of
from gateway.storage import open_database

JOURNAL_FILE_NAME = "journal.sqlite3"
ACCOUNTS_FILE_NAME = "acmedns.sqlite3"
# Made on first use: only PROVIDER=builtin keeps records in the state.
RECORDS_FILE_NAME = "builtin.sqlite3"

# Each part's migrations, in order: version n is reached by running the n-th.
JOURNAL_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS records ("
        " fqdn TEXT NOT NULL,"
        " value TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " state TEXT NOT NULL CHECK (state IN ('adding', 'present', 'removing')),"
        " created REAL NOT NULL,"
        " updated REAL NOT NULL,"
        " PRIMARY KEY (fqdn, value)"
        ") WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS records_created ON records (created)",
        "CREATE INDEX IF NOT EXISTS records_owner ON records (owner)",
    ),
)
ACCOUNT_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS accounts ("
        " username TEXT PRIMARY KEY,"
        " key_hash TEXT NOT NULL,"
        " subdomain TEXT NOT NULL UNIQUE,"
        " fqdn TEXT NOT NULL,"
        " allowfrom TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " created REAL NOT NULL"
        ")",
    ),
)

RECORDS_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE IF NOT EXISTS zone_values ("
        " name TEXT NOT NULL,"
        " value TEXT NOT NULL,"
        " UNIQUE (name, value))",
        "CREATE TABLE IF NOT EXISTS zone_serial ("
        " id INTEGER PRIMARY KEY CHECK (id = 1),"
        " serial INTEGER NOT NULL)",
    ),
)


def migrate(db: sqlite3.Connection, part: str, migrations: Sequence[Sequence[str]]) -> None:
    """Bring *part*'s tables in *db* to the last version.

    One immediate transaction: a second process opening the same file waits
    (``busy_timeout``) and then finds the work done.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(part TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        row = db.execute("SELECT version FROM schema_version WHERE part=?", (part,)).fetchone()
        found = 0 if row is None else int(row[0])
        if found > len(migrations):
            raise Unavailable(
                f"the {part} tables are at version {found}, newer than this gateway knows "
                f"({len(migrations)}): run the newer gateway, or restore a backup"
            )
        for statements in migrations[found:]:
            for statement in statements:
                db.execute(statement)
        db.execute(
            "INSERT INTO schema_version VALUES (?, ?) "
            "ON CONFLICT (part) DO UPDATE SET version=excluded.version",
            (part, len(migrations)),
        )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


class _File:
    """One SQLite file holding one part of the state, opened at its last version."""

    what: str  # how errors name it
    part: str
    migrations: Sequence[Sequence[str]]

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        db = open_database(self.path, self.what, "")
        try:
            migrate(db, self.part, self.migrations)
        except sqlite3.Error as exc:
            db.close()
            raise Unavailable(f"cannot prepare {self.what} {self.path}: {exc}") from exc
        except BaseException:
            db.close()
            raise
        self._db = db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise Unavailable(f"{self.what} is closed")
        return self._db

    @contextlib.contextmanager
    def _using(self, failed: str) -> Iterator[sqlite3.Connection]:
        """The connection; an SQLite error in the block (disk full, read-only state
        directory, ...) is :class:`Unavailable` saying *failed* and SQLite's words.
        Nest ``with db:`` inside for one transaction, committed on exit."""
        db = self._connection()
        try:
            yield db
        except sqlite3.Error as exc:
            raise Unavailable(f"{failed}: {exc}") from exc


class SqliteJournal(_File, Journal):
    """The journal in ``journal.sqlite3``."""

    what = "the journal"
    part = "journal"
    migrations = JOURNAL_MIGRATIONS

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        _File.__init__(self, path)
        Journal.__init__(self, clock)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # A write that fails refuses the change rather than make one we could
        # not clean up later.
        with self._using("journal cannot be written") as db, db:
            yield db

    async def begin_add(self, fqdn: str, value: str, owner: str, limit: int = 0) -> bool:
        now = self.clock()
        with self._write() as db:
            written = db.execute(
                "INSERT INTO records SELECT ?, ?, ?, 'adding', ?, ? "
                "WHERE ? = 0 "
                "OR EXISTS (SELECT 1 FROM records WHERE fqdn=? AND value=? AND owner=?) "
                "OR (SELECT count(*) FROM records WHERE owner=?) < ? "
                "ON CONFLICT (fqdn, value) DO UPDATE SET owner=excluded.owner, "
                "state='adding', created=excluded.created, updated=excluded.updated",
                (fqdn, value, owner, now, now, limit, fqdn, value, owner, owner, limit),
            ).rowcount
        return written > 0

    async def commit_add(self, fqdn: str, value: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE records SET state='present', updated=? WHERE fqdn=? AND value=?",
                (self.clock(), fqdn, value),
            )

    async def begin_remove(self, fqdn: str, value: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE records SET state='removing', updated=? WHERE fqdn=? AND value=?",
                (self.clock(), fqdn, value),
            )

    async def commit_remove(self, fqdn: str, value: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM records WHERE fqdn=? AND value=?", (fqdn, value))

    def _select(self, where: str = "", args: tuple[object, ...] = ()) -> list[Record]:
        with self._using("journal cannot be read") as db:
            rows = db.execute(
                SELECT_RECORDS
                + " "
                + where  # one of this class's constant clauses; values are bound
                + " ORDER BY created",
                args,
            ).fetchall()
        return [Record(*row) for row in rows]

    async def values(self, fqdn: str, owner: str | None = None) -> list[Record]:
        if owner is None:
            return self._select("WHERE fqdn=?", (fqdn,))
        return self._select("WHERE fqdn=? AND owner=?", (fqdn, owner))

    async def record(self, fqdn: str, value: str) -> Record | None:
        found = self._select("WHERE fqdn=? AND value=?", (fqdn, value))
        return found[0] if found else None

    async def all(self) -> list[Record]:
        return self._select()

    async def due(self, max_age: float) -> list[Record]:
        cutoff = self.clock() - max_age
        return self._select("WHERE created < ? OR state='removing'", (cutoff,))

    async def figures(self) -> tuple[int, float]:
        with self._using("journal cannot be read") as db:
            count, oldest = db.execute("SELECT count(*), min(created) FROM records").fetchone()
        return int(count), 0.0 if oldest is None else max(0.0, self.clock() - float(oldest))


class SqliteAccounts(_File, AccountTable):
    """Registered acme-dns accounts in ``acmedns.sqlite3``."""

    what = "the acme-dns account store"
    part = "accounts"
    migrations = ACCOUNT_MIGRATIONS

    async def insert(self, account: Account, limit: int = 0) -> bool:
        with self._using("acme-dns account store cannot be written") as db, db:
            # One statement: SQLite takes the write lock before it counts, so no
            # other process can insert between the count and the insert.
            inserted = db.execute(
                "INSERT INTO accounts SELECT ?, ?, ?, ?, ?, ?, ? "
                "WHERE ? = 0 OR (SELECT count(*) FROM accounts WHERE owner=?) < ?",
                (
                    account.username,
                    account.key_hash,
                    account.subdomain,
                    account.fqdn,
                    allowfrom_text(account),
                    account.owner,
                    account.created,
                    limit,
                    account.owner,
                    limit,
                ),
            ).rowcount
        return inserted > 0

    async def get(self, username: str) -> Account | None:
        with self._using("acme-dns account store cannot be read") as db:
            row = db.execute(SELECT_ACCOUNTS + " WHERE username=?", (username,)).fetchone()
        return None if row is None else account_of(row)

    async def all(self, owner: str | None = None) -> list[Account]:
        with self._using("acme-dns account store cannot be read") as db:
            if owner is None:
                rows = db.execute(SELECT_ACCOUNTS + " ORDER BY created").fetchall()
            else:
                rows = db.execute(
                    SELECT_ACCOUNTS + " WHERE owner=? ORDER BY created", (owner,)
                ).fetchall()
        return [account_of(row) for row in rows]

    async def set_key(self, username: str, key_hash: str) -> bool:
        with self._using("acme-dns account store cannot be written") as db, db:
            changed = db.execute(
                "UPDATE accounts SET key_hash=? WHERE username=?", (key_hash, username)
            ).rowcount
        return changed > 0

    async def delete(self, username: str) -> bool:
        with self._using("acme-dns account store cannot be written") as db, db:
            deleted = db.execute("DELETE FROM accounts WHERE username=?", (username,))
        return deleted.rowcount > 0

    async def count_owned(self, owner: str) -> int:
        with self._using("acme-dns account store cannot be read") as db:
            row = db.execute("SELECT COUNT(*) FROM accounts WHERE owner=?", (owner,)).fetchone()
        return int(row[0])


class SqliteRecords(_File):
    """The builtin DNS server's values and SOA serial in ``builtin.sqlite3``
    (:class:`providers._shared.SharedRecords`), for one process: nothing to watch."""

    what = "the builtin DNS server's records"
    part = "builtin"
    migrations = RECORDS_MIGRATIONS

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        return super()._connection()

    def _values(self, db: sqlite3.Connection, name: str) -> tuple[list[str], int]:
        rows = db.execute("SELECT value FROM zone_values WHERE name=? ORDER BY rowid", (name,))
        values = [row[0] for row in rows.fetchall()]
        serial = db.execute("SELECT serial FROM zone_serial WHERE id=1").fetchone()
        return values, int(serial[0]) if serial else 0

    @contextlib.contextmanager
    def _change(self) -> Iterator[sqlite3.Connection]:
        with self._using(f"{self.what} cannot be written") as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO zone_serial VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET serial = (serial + 1) % 4294967296",
            (int(time.time()),),
        )

    async def load(self, floor: int) -> tuple[dict[str, list[str]], int]:
        with self._change() as db:
            db.execute(
                "INSERT INTO zone_serial VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET serial = max(serial, excluded.serial)",
                (floor,),
            )
            records: dict[str, list[str]] = {}
            for name, value in db.execute("SELECT name, value FROM zone_values ORDER BY rowid"):
                records.setdefault(name, []).append(value)
            serial = int(db.execute("SELECT serial FROM zone_serial").fetchone()[0])
        return records, serial

    async def add(self, name: str, value: str, limit: int) -> tuple[list[str], int] | None:
        with self._change() as db:
            values, serial = self._values(db, name)
            if value in values:
                return values, serial
            if len(values) >= limit:
                return None
            db.execute("INSERT INTO zone_values VALUES (?, ?)", (name, value))
            self._bump(db)
            return self._values(db, name)

    async def remove(self, name: str, value: str) -> tuple[list[str], int]:
        with self._change() as db:
            removed = db.execute(
                "DELETE FROM zone_values WHERE name=? AND value=?", (name, value)
            ).rowcount
            if removed:
                self._bump(db)
            return self._values(db, name)

    async def current(self, name: str) -> tuple[list[str], int]:
        with self._using(f"{self.what} cannot be read") as db:
            return self._values(db, name)

    def watch(
        self, changed: Callable[[str], Awaitable[None]], reload: Callable[[], Awaitable[None]]
    ) -> None:
        """One process owns the files: nobody else changes them."""


class SqliteState(State):
    """The journal and the accounts in ``STATE_DIR``, for one process."""

    def __init__(self, state_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.state_dir = state_dir
        self.journal: SqliteJournal = SqliteJournal(state_dir / JOURNAL_FILE_NAME, clock)
        self.accounts: SqliteAccounts = SqliteAccounts(state_dir / ACCOUNTS_FILE_NAME)
        self.records: SqliteRecords = SqliteRecords(state_dir / RECORDS_FILE_NAME)
        self.description = f"SQLite in {state_dir}"

    async def open(self) -> None:
        self.journal.open()
        try:
            self.accounts.open()
        except BaseException:
            self.journal.close()
            raise

    async def close(self) -> None:
        self.records.close()
        self.accounts.close()
        self.journal.close()

    @asynccontextmanager
    async def hold(self, fqdn: str) -> AsyncIterator[Journal]:
        # The process's own per-name lock, taken by the caller, is the only one needed.
        yield self.journal

    @asynccontextmanager
    async def janitor_turn(self) -> AsyncIterator[bool]:
        yield True

    async def check(self) -> None:
        with self.journal._using("journal cannot be read") as db:
            db.execute("SELECT 1 FROM records LIMIT 1").fetchall()
