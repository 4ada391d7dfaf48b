"""A full or read-only state directory: a clear 503, or a clear start-up error, never a crash.

The state directory holds the journal (and the acme-dns accounts). Full: a
256 KiB tmpfs filled to the last byte. Read-only at start-up: that tmpfs
remounted read-only. Read-only while running: Linux refuses to remount a file
system read-only while files on it are open for writing, so the journal's
files are made immutable instead (``chattr +i`` on ext4, which refuses even
root's writes). Needs root (mount, chattr): ``pytest.mark.system``.

Nothing may be claimed that was not journaled: a refused setup reaches no
provider; a refused teardown leaves the value where it was (and says so).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from gateway.state.sqlite import JOURNAL_FILE_NAME, SqliteJournal
from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.faults.conftest import (
    GatewayFactory,
    body,
    fill,
    immutable,
    remount,
    small_tmpfs,
)
from tests.gateway.procs import gateway_settings, run_gateway
from tests.system import free_port

pytestmark = pytest.mark.system

NAME = "_acme-challenge.example.test"


async def test_a_full_state_dir_is_503_and_nothing_reaches_the_provider(
    fault_gateway: GatewayFactory, tmp_path: Path
) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        provider = MemoryProvider()
        client = await fault_gateway(
            provider, STATE_DIR=str(mnt / "state"), ACMEDNS_REGISTER="1",
            ACMEDNS_ZONE="acme.example.test",
        )
        try:
            kept, refused = make_value(), make_value()
            r = await client.post("/", json=body("setup", "example.test", kept))
            assert r.status == 201
            filler = fill(mnt)

            r = await client.post("/", json=body("setup", "example.test", refused))
            assert r.status == 503
            answer = await r.json()
            assert answer["error"] == "unavailable"
            assert answer["message"] == "journal cannot be written: database or disk is full"
            assert ("add", NAME, refused) not in provider.calls

            # A teardown that cannot be journaled is not made: the value stays, and the
            # answer says it was not removed.
            r = await client.post("/", json=body("teardown", "example.test", kept))
            assert r.status == 503
            assert provider.values(NAME) == [kept]
            r = await client.post("/register", json={})
            assert r.status == 503 and "account store" in (await r.json())["message"]
            assert (await client.get("/healthz")).status == 200  # alive, and says so

            filler.unlink()
            r = await client.post("/", json=body("setup", "example.test", refused))
            assert r.status == 201
            r = await client.post("/", json=body("teardown", "example.test", kept))
            assert r.status == 200
            assert provider.values(NAME) == [refused]
        finally:
            await client.close()  # closes the journal before the unmount


def start_up(tmp_path: Path, state: Path) -> tuple[int, str]:
    result = run_gateway(tmp_path, gateway_settings(tmp_path, free_port(), STATE_DIR=str(state)))
    return result.returncode, result.stderr


def test_start_up_on_a_full_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        fill(mnt)
        status, stderr = start_up(tmp_path, mnt / "state")
    assert status == 1, stderr
    assert "cannot open the journal" in stderr and str(mnt / "state") in stderr
    assert "is on a full file system" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("existing", [False, True], ids=["empty", "with-journal"])
def test_start_up_on_a_read_only_state_dir_is_a_clear_error(
    tmp_path: Path, existing: bool
) -> None:
    with small_tmpfs(tmp_path / "mnt") as mnt:
        state = mnt / "state"
        if existing:  # a journal from an earlier run, with a value still in it
            journal = SqliteJournal(state / JOURNAL_FILE_NAME)
            journal.open()
            asyncio.run(journal.begin_add(NAME, make_value(), "alice"))
            journal.close()
        remount(mnt, "ro")
        try:
            status, stderr = start_up(tmp_path, state)
        finally:
            remount(mnt, "rw")
    assert status == 1, stderr
    assert "cannot open the journal" in stderr and "Traceback" not in stderr
    assert "is on a read-only file system" in stderr  # the reason, not just SQLite's words


async def test_a_journal_that_turns_read_only_is_503_until_it_is_writable_again(
    fault_gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider = MemoryProvider()
    client = await fault_gateway(provider, STATE_DIR=str(tmp_path / "state"))
    first, second = make_value(), make_value()
    assert (await client.post("/", json=body("setup", "example.test", first))).status == 201
    files = [tmp_path / "state" / f for f in ("journal.sqlite3", "journal.sqlite3-wal")]
    assert all(f.exists() for f in files)
    with immutable(*files):
        r = await client.post("/", json=body("setup", "example.test", second))
        assert r.status == 503
        assert (await r.json())["message"].startswith("journal cannot be written")
        assert ("add", NAME, second) not in provider.calls
        r = await client.post("/", json=body("teardown", "example.test", first))
        assert r.status == 503
        assert provider.values(NAME) == [first]
    assert (await client.post("/", json=body("setup", "example.test", second))).status == 201
    assert (await client.post("/", json=body("teardown", "example.test", first))).status == 200
    assert provider.values(NAME) == [second]
    assert os.access(files[0], os.W_OK)
