"""The state layer: everything the gateway keeps, in one database, behind one interface.

The journal (:class:`gateway.journal.Journal`), the registered acme-dns accounts
(:class:`gateway.acmedns.AccountTable`), the builtin DNS server's records and
SOA serial (:class:`providers._shared.SharedRecords`) and the serialisation of
changes go through a :class:`State`; the services never talk SQL. Two backends:

* :mod:`gateway.state.sqlite`: files in ``STATE_DIR``, for one gateway process
  (the embedded default, ``make run``);
* :mod:`gateway.state.postgres`: a PostgreSQL database named by ``DATABASE_URL``,
  shared by every replica of the gateway. Its driver (psycopg) is an optional
  extra, imported only when ``DATABASE_URL`` is set.

Each backend creates and migrates its own schema, recording the version of
each part in a version table.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, LiteralString

from gateway.acmedns import Account, AccountTable, allowfrom_of
from gateway.config import Config
from gateway.journal import Journal
from providers._shared import SharedRecords

# The columns both backends read: a Record's, and those account_of() takes.
SELECT_RECORDS: LiteralString = "SELECT fqdn, value, owner, state, created, updated FROM records"
SELECT_ACCOUNTS: LiteralString = (
    "SELECT username, key_hash, subdomain, fqdn, allowfrom, owner, created FROM accounts"
)


def account_of(row: Sequence[Any]) -> Account:
    """The account in a row of :data:`SELECT_ACCOUNTS`."""
    username, key_hash, subdomain, fqdn, allowfrom, owner, created = row
    return Account(username, key_hash, subdomain, fqdn, allowfrom_of(allowfrom), owner, created)


class State(abc.ABC):
    """One database holding the journal and the accounts, and the locks that guard them."""

    journal: Journal
    accounts: AccountTable
    # The builtin DNS server's values and serial (providers._shared).
    records: SharedRecords
    # What this backend is, for logs and the configuration summary (never a secret).
    description: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema; raises Unavailable."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every connection; the database keeps what was committed."""

    @abc.abstractmethod
    def hold(self, fqdn: str) -> AbstractAsyncContextManager[Journal]:
        """Changes to *fqdn*, one at a time across every process using this database.

        The caller holds the process's own lock for *fqdn* already. Yields the
        journal to write the change with (it may be bound to the connection
        that holds the lock). Raises Unavailable when the lock cannot be had
        in time.
        """

    @abc.abstractmethod
    def janitor_turn(self) -> AbstractAsyncContextManager[bool]:
        """Yields True if this process may sweep now (no other is sweeping), else False."""

    @abc.abstractmethod
    async def check(self) -> None:
        """Raise Unavailable if the database cannot be used right now (``/healthz``)."""


def describe(config: Config) -> str:
    """Where *config* keeps the state, for logs and ``--check-config`` (never a secret)."""
    if config.database is not None:
        return f"PostgreSQL at {config.database.url}"
    return f"SQLite in {config.state_dir}"


def check(config: Config) -> tuple[list[str], list[str]]:
    """``--check-config``: the problems and warnings of *config*'s database, found by
    connecting to it (:func:`gateway.state.postgres.check_database`). ``STATE_DIR``
    is checked with the other folders (:mod:`gateway.checks`)."""
    if config.database is None:
        return [], []
    missing = driver_problem(config)
    if missing is not None:
        return [missing], []
    from gateway.state.postgres import check_database

    return check_database(config.database)


def driver_problem(config: Config) -> str | None:
    """Why *config*'s backend cannot be loaded (its driver is not installed), or None.

    A configuration problem found at start-up, like the others, rather than a
    traceback once the server is on its way up.
    """
    if config.database is None:
        return None
    try:
        import gateway.state.postgres  # noqa: F401 (only whether it imports)
    except ImportError as exc:
        return (
            f"DATABASE_URL needs the PostgreSQL driver ({exc.name or 'psycopg'} cannot be "
            "imported): pip install 'acme-dns01-gateway[postgresql]'"
        )
    return None


def state_for(config: Config) -> State:
    """The backend *config* asks for, not yet opened (no I/O here)."""
    if config.database is not None:
        # Only a configuration with DATABASE_URL needs (and imports) the driver.
        from gateway.state.postgres import PostgresState

        return PostgresState(config.database, config.provider_timeout)
    from gateway.state.sqlite import SqliteState

    return SqliteState(config.state_dir)
