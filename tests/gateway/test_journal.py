"""Journal and janitor: every change recorded first, nothing left behind."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.config import PropagationConfig
from gateway.errors import Unavailable
from gateway.janitor import Janitor
from gateway.service import ChallengeService
from gateway.state.sqlite import JOURNAL_FILE_NAME, SqliteJournal, SqliteState
from lib.dnscheck import PropagationSettings
from providers.memory import MemoryProvider, MemorySettings
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic

ALICE = basic("alice", PASSWORDS["alice"])
NAME = "_acme-challenge.example.test"


def body(argument: str, value: str, name: str = "example.test") -> str:
    return json.dumps({"argument": argument, "domain_name": name, "challenge_content": value})


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def open_journal(tmp_path: Path, clock: Clock | None = None) -> SqliteJournal:
    j = SqliteJournal(tmp_path / "j.sqlite3", clock=clock or Clock())
    j.open()
    return j


async def test_states_and_values(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    v1, v2 = make_value(), make_value()
    await j.begin_add(NAME, v1, "alice")
    assert [r.state for r in await j.values(NAME)] == ["adding"]
    await j.commit_add(NAME, v1)
    await j.begin_add(NAME, v2, "bob")
    await j.commit_add(NAME, v2)
    assert {r.value for r in await j.values(NAME, "bob")} == {v2}
    await j.begin_remove(NAME, v1)
    assert {r.value: r.state for r in await j.values(NAME)}[v1] == "removing"
    await j.commit_remove(NAME, v1)
    assert [r.value for r in await j.values(NAME)] == [v2]
    assert oct((tmp_path / "j.sqlite3").stat().st_mode & 0o777) == "0o600"


async def test_due_by_age_and_unfinished_removals(tmp_path: Path) -> None:
    clock = Clock()
    j = open_journal(tmp_path, clock)
    old, young, stuck = make_value(), make_value(), make_value()
    await j.begin_add(NAME, old, "a")
    await j.commit_add(NAME, old)
    await j.begin_add(NAME, stuck, "a")
    clock.now += 3000
    await j.begin_add(NAME, young, "a")
    await j.begin_remove(NAME, stuck)  # a removal that was interrupted
    due = {r.value for r in await j.due(max_age=1000)}
    assert due == {old, stuck}


async def test_repeated_setup_restarts_the_clock(tmp_path: Path) -> None:
    clock = Clock()
    j = open_journal(tmp_path, clock)
    v = make_value()
    await j.begin_add(NAME, v, "a")
    clock.now += 5000
    await j.begin_add(NAME, v, "a")
    assert await j.due(max_age=1000) == []


async def test_survives_reopen(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    v = make_value()
    await j.begin_add(NAME, v, "a")
    # No close: as if the process died right after the commit.
    j2 = open_journal(tmp_path)
    assert [r.value for r in await j2.values(NAME)] == [v]


async def test_unwritable_journal_is_unavailable(tmp_path: Path) -> None:
    j = open_journal(tmp_path)
    j._db.execute("PRAGMA query_only=ON")  # type: ignore[union-attr]
    with pytest.raises(Unavailable) as info:
        await j.begin_add(NAME, make_value(), "a")
    assert "journal cannot be written" in info.value.message


def test_unopenable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(Unavailable):
        SqliteJournal(blocker / "state" / JOURNAL_FILE_NAME).open()


async def test_record_is_journaled_before_the_provider_call(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    provider = MemoryProvider()
    seen: list[list[tuple[str, str]]] = []
    original = provider.add_txt

    async def add(fqdn: str, value: str) -> None:
        db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
        seen.append(db.execute("SELECT value, state FROM records").fetchall())
        db.close()
        await original(fqdn, value)

    provider.add_txt = add  # type: ignore[method-assign]
    client, _ = await gateway(provider=provider)
    v = make_value()
    assert (await client.post("/", data=body("setup", v), headers=ALICE)).status == 201
    assert seen == [[(v, "adding")]]


async def test_failed_add_stays_journaled_for_the_janitor(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    client, _ = await gateway(provider=MemoryProvider(MemorySettings(fail="API down")))
    v = make_value()
    assert (await client.post("/", data=body("setup", v), headers=ALICE)).status == 502
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert db.execute("SELECT value, state FROM records").fetchall() == [(v, "adding")]


async def test_journal_write_failure_means_no_provider_call(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    from gateway.keys import JOURNAL

    client, provider = await gateway()
    client.app[JOURNAL]._db.execute("PRAGMA query_only=ON")  # type: ignore[union-attr]
    r = await client.post("/", data=body("setup", make_value()), headers=ALICE)
    assert r.status == 503
    assert provider.calls == []


def make_service(tmp_path: Path, clock: Clock, provider: MemoryProvider) -> ChallengeService:
    state = SqliteState(tmp_path, clock=clock)
    state.journal.open()
    state.accounts.open()
    return ChallengeService(
        provider,
        state,
        ("example.test",),
        PropagationConfig(False, PropagationSettings(timeout=1.0)),
        5.0,
    )


async def test_janitor_removes_stale_keeps_fresh(tmp_path: Path) -> None:
    clock = Clock()
    provider = MemoryProvider()
    service = make_service(tmp_path, clock, provider)
    stale, fresh = make_value(), make_value()
    for v in (stale,):
        await service.journal.begin_add(NAME, v, "a")
        await provider.add_txt(NAME, v)
        await service.journal.commit_add(NAME, v)
    clock.now += 4000
    await service.journal.begin_add(NAME, fresh, "a")
    await provider.add_txt(NAME, fresh)
    await service.journal.commit_add(NAME, fresh)
    janitor = Janitor(service, max_age=3600, interval=60)
    assert await janitor.sweep() == 1
    assert provider.values(NAME) == [fresh]
    assert [r.value for r in await service.journal.all()] == [fresh]


async def test_janitor_retries_failed_removal(tmp_path: Path) -> None:
    clock = Clock()
    provider = MemoryProvider()
    service = make_service(tmp_path, clock, provider)
    v = make_value()
    await service.journal.begin_add(NAME, v, "a")
    await provider.add_txt(NAME, v)
    clock.now += 7200
    original = provider.remove_txt
    fail = [True]

    async def flaky(fqdn: str, value: str) -> None:
        if fail[0]:
            from providers.base import ProviderError

            raise ProviderError("memory", "temporarily down")
        await original(fqdn, value)

    provider.remove_txt = flaky  # type: ignore[method-assign]
    janitor = Janitor(service, max_age=3600, interval=60)
    assert await janitor.sweep() == 0
    assert janitor.failed == 1
    assert [r.state for r in await service.journal.all()] == ["removing"]
    fail[0] = False
    assert await janitor.sweep() == 1
    assert await service.journal.all() == []
    assert provider.values(NAME) == []


async def test_restart_republishes_to_volatile_provider_and_cleans(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    """A provider that forgets on restart gets the journaled values back."""
    client, provider = await gateway()
    v1, v2 = make_value(), make_value()
    await client.post("/", data=body("setup", v1), headers=ALICE)
    await client.post("/", data=body("setup", v2), headers=ALICE)
    await client.close()
    assert (tmp_path / "state" / "journal.sqlite3").exists()
    client2, provider2 = await gateway()
    assert provider2 is not provider
    assert sorted(provider2.values(NAME)) == sorted([v1, v2])
    await client2.delete("/", data=body("teardown", v1), headers=ALICE)
    assert provider2.values(NAME) == [v2]


async def test_janitor_runs_at_startup(gateway: GatewayFactory, tmp_path: Path) -> None:
    client, _ = await gateway()
    v = make_value()
    await client.post("/", data=body("setup", v), headers=ALICE)
    await client.close()
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    with db:
        db.execute("UPDATE records SET created = created - 7200")
    db.close()
    import asyncio

    _client2, provider2 = await gateway()
    for _ in range(50):
        if not provider2.values(NAME):
            break
        await asyncio.sleep(0.02)
    assert provider2.values(NAME) == []
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    assert db.execute("SELECT count(*) FROM records").fetchone() == (0,)
