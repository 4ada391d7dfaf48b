"""The journal: every TXT value we publish, recorded before the provider is asked.

A row is written (state ``adding``) and committed before ``add_txt`` runs,
marked ``present`` after it succeeds, marked ``removing`` before
``remove_txt`` and deleted after. So whatever moment the process dies at, the
journal holds every value that may be in DNS, and the janitor
(:mod:`gateway.janitor`) can remove the ones whose teardown never came.

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process
being killed (the case we design for); only a power cut may lose the last
commits. Calls are short local writes and run on the event loop thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import Unavailable
from gateway.storage import open_database

_SCHEMA = """
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


@dataclass(frozen=True)
class Record:
    fqdn: str
    value: str
    owner: str
    state: str
    created: float
    updated: float


class Journal:
    """SQLite-backed record of published values. Open with :meth:`open`."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._db: sqlite3.Connection | None = None

    @classmethod
    def in_dir(cls, state_dir: Path) -> Journal:
        return cls(state_dir / "journal.sqlite3")

    def open(self) -> None:
        self._db = open_database(self.path, "the journal", _SCHEMA)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        if self._db is None:
            raise Unavailable("journal is closed")
        try:
            with self._db:  # one transaction, committed on exit
                yield self._db
        except sqlite3.Error as exc:
            # Disk full, read-only state directory, ...: refuse the change
            # rather than make one we could not clean up later.
            raise Unavailable(f"journal cannot be written: {exc}") from exc

    def begin_add(self, fqdn: str, value: str, owner: str, limit: int = 0) -> bool:
        """Journal *value* at *fqdn* as being added by *owner*.

        With a *limit*, a value *owner* has not journaled yet is only taken
        while *owner* has fewer than *limit* values; otherwise nothing is
        written and the answer is False. One statement checks and writes, so
        setups racing each other cannot pass the limit together.
        """
        now = self._clock()
        with self._write() as db:
            # A repeated setup restarts the record's clock: the client still needs it.
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

    def commit_add(self, fqdn: str, value: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE records SET state='present', updated=? WHERE fqdn=? AND value=?",
                (self._clock(), fqdn, value),
            )

    def begin_remove(self, fqdn: str, value: str) -> None:
        with self._write() as db:
            db.execute(
                "UPDATE records SET state='removing', updated=? WHERE fqdn=? AND value=?",
                (self._clock(), fqdn, value),
            )

    def commit_remove(self, fqdn: str, value: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM records WHERE fqdn=? AND value=?", (fqdn, value))

    def _select(self, where: str = "", args: tuple[object, ...] = ()) -> list[Record]:
        if self._db is None:
            raise Unavailable("journal is closed")
        try:
            rows = self._db.execute(
                "SELECT fqdn, value, owner, state, created, updated FROM records "  # noqa: S608
                + where  # one of this class's constant clauses; values are bound
                + " ORDER BY created",
                args,
            ).fetchall()
        except sqlite3.Error as exc:
            raise Unavailable(f"journal cannot be read: {exc}") from exc
        return [Record(*row) for row in rows]

    def values(self, fqdn: str, owner: str | None = None) -> list[Record]:
        """Records at *fqdn*, optionally only those *owner* set."""
        if owner is None:
            return self._select("WHERE fqdn=?", (fqdn,))
        return self._select("WHERE fqdn=? AND owner=?", (fqdn, owner))

    def record(self, fqdn: str, value: str) -> Record | None:
        found = self._select("WHERE fqdn=? AND value=?", (fqdn, value))
        return found[0] if found else None

    def all(self) -> list[Record]:
        return self._select()

    def due(self, max_age: float) -> list[Record]:
        """Records to clean up: older than *max_age*, or a removal that did not finish."""
        cutoff = self._clock() - max_age
        return self._select("WHERE created < ? OR state='removing'", (cutoff,))

    def count(self) -> int:
        if self._db is None:
            return 0
        return int(self._db.execute("SELECT count(*) FROM records").fetchone()[0])

    def oldest_age(self) -> float:
        """Seconds since the oldest record was written; 0 when there is none (or it is closed)."""
        if self._db is None:
            return 0.0
        oldest = self._db.execute("SELECT min(created) FROM records").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, self._clock() - float(oldest))
