"""The gateway's state files are private from their first byte, in any STATE_DIR.

A real gateway process starts in an existing ``0755`` STATE_DIR with the usual
umask (022), as a package's or an admin's directory often is; it writes its
journal (a setup) and its acme-dns account store (a registration). While it
runs, every file in STATE_DIR - the databases and SQLite's ``-wal`` and
``-shm`` files, which hold the latest changes - must be readable by the
gateway's user alone. A journal left ``0644`` by an earlier version is made
private too.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import gateway_settings, passwords_only, running_gateway
from tests.hostile.wire import basic, send
from tests.system import free_port


@pytest.fixture
def usual_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the child inherits it
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("usual_umask")
def test_state_files_are_private_in_an_existing_open_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    # An earlier version's journal, as sqlite3.connect leaves it under umask 022.
    sqlite3.connect(state / "journal.sqlite3").close()
    assert stat.S_IMODE((state / "journal.sqlite3").stat().st_mode) == 0o644
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "alice's password", roles=["admin"])
    port = free_port()
    settings = gateway_settings(tmp_path, port, **passwords_only(tmp_path),
                                ACMEDNS_ZONE="acme.example.test", ACMEDNS_REGISTER="1")
    alice = basic("alice", "alice's password")
    with running_gateway(tmp_path, settings):
        body = {"argument": "setup", "domain_name": "example.test",
                "challenge_content": make_value()}
        assert send(port, "POST", "/", headers=alice, body=body).status == 201
        assert send(port, "POST", "/register", headers=alice, body={}).status == 201
        files = sorted(p for p in state.iterdir() if p.is_file())
        names = [p.name for p in files]
        for expected in ("journal.sqlite3", "journal.sqlite3-wal", "acmedns.sqlite3-wal"):
            assert expected in names, names
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        assert {n: m for n, m in modes.items() if m & 0o077} == {}, {
            n: oct(m) for n, m in modes.items()
        }
