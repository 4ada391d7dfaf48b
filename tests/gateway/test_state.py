"""The state layer's own promises: schemas created and migrated by the gateway,
state directories of earlier versions taken over as they are."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from gateway.acmedns import AccountStore, hash_key
from gateway.errors import Unavailable
from gateway.state.sqlite import (
    ACCOUNT_MIGRATIONS,
    ACCOUNTS_FILE_NAME,
    JOURNAL_FILE_NAME,
    JOURNAL_MIGRATIONS,
    SqliteState,
)
from tests.conftest import make_value

NAME = "_acme-challenge.example.test"

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
