"""Journal and janitor: every change recorded first, nothing left behind.

Every test here runs on both state backends (SQLite and PostgreSQL); the ones
about SQLite files alone say so in their name.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.config import PropagationConfig
from gateway.errors import Unavailable
from gateway.janitor import Janitor
from gateway.journal import Journal
from gateway.service import ChallengeService
from gateway.state import State
from gateway.state.sqlite import JOURNAL_FILE_NAME, SqliteJournal
from lib.dnscheck import PropagationSettings
from providers.memory import MemoryProvider, MemorySettings
from tests.conftest import make_value
from tests.gateway.backends import Backend, both_backends  # noqa: F401 (a fixture)
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


@asynccontextmanager
async def opened(
    backend: Backend, clock: Callable[[], float] | None = None
) -> AsyncIterator[State]:
    state = backend.state(clock or Clock())
    await state.open()
    try:
        yield state
    finally:
        await state.close()


@asynccontextmanager
async def journal_on(
    backend: Backend, clock: Callable[[], float] | None = None
) -> AsyncIterator[Journal]:
    async with opened(backend, clock) as state:
        yield state.journal


async def test_states_and_values(backend: Backend) -> None:
    async with journal_on(backend) as j:
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
        assert await j.record(NAME, v1) is None
        assert await j.figures() == (1, 0.0)


async def test_sqlite_journal_file_is_private(tmp_path: Path) -> None:
    j = SqliteJournal(tmp_path / "j.sqlite3")
    j.open()
    await j.begin_add(NAME, make_value(), "alice")
    j.close()
    assert oct((tmp_path / "j.sqlite3").stat().st_mode & 0o777) == "0o600"


async def test_due_by_age_and_unfinished_removals(backend: Backend) -> None:
    clock = Clock()
    async with journal_on(backend, clock) as j:
        old, young, stuck = make_value(), make_value(), make_value()
        await j.begin_add(NAME, old, "a")
        await j.commit_add(NAME, old)
        await j.begin_add(NAME, stuck, "a")
        clock.now += 3000
        await j.begin_add(NAME, young, "a")
        await j.begin_remove(NAME, stuck)  # a removal that was interrupted
        due = {r.value for r in await j.due(max_age=1000)}
        assert due == {old, stuck}
        assert await j.figures() == (3, 3000.0)


async def test_repeated_setup_restarts_the_clock(backend: Backend) -> None:
    clock = Clock()
    async with journal_on(backend, clock) as j:
        v = make_value()
        await j.begin_add(NAME, v, "a")
        clock.now += 5000
        await j.begin_add(NAME, v, "a")
        assert await j.due(max_age=1000) == []


async def test_the_owner_limit_holds_for_setups_racing_each_other(backend: Backend) -> None:
    """Setups for one owner at many names at once (each under its own name's lock,
    as through several replicas) cannot pass MAX_RECORDS_PER_USER together."""
    async with opened(backend) as state, opened(backend) as other:
        names = [f"_acme-challenge.n{i}.example.test" for i in range(20)]

        async def setup(on: State, name: str) -> bool:
            async with on.hold(name) as journal:
                return await journal.begin_add(name, make_value(), "alice", limit=5)

        taken = await asyncio.gather(
            *(setup(state if i % 2 else other, name) for i, name in enumerate(names))
        )
        assert sum(taken) == 5
        assert len(await state.journal.all()) == 5


async def test_survives_reopen(backend: Backend) -> None:
    state = backend.state()
    await state.open()
    v = make_value()
    await state.journal.begin_add(NAME, v, "a")
    # No close: as if the process died right after the commit.
    async with journal_on(backend) as j2:
        assert [r.value for r in await j2.values(NAME)] == [v]
    await state.close()


async def test_unwritable_journal_is_unavailable(backend: Backend) -> None:
    async with journal_on(backend) as j:
        backend.refuse_writes("records")
        with pytest.raises(Unavailable) as info:
            await j.begin_add(NAME, make_value(), "a")
        assert "journal cannot be written" in info.value.message


def test_sqlite_unopenable_state_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(Unavailable):
        SqliteJournal(blocker / "state" / JOURNAL_FILE_NAME).open()


async def test_record_is_journaled_before_the_provider_call(
    gateway: GatewayFactory, backend: Backend
) -> None:
    provider = MemoryProvider()
    seen: list[list[tuple[str, str]]] = []
    original = provider.add_txt

    async def add(fqdn: str, value: str) -> None:
        # Read by another connection: committed, not merely written.
        seen.append(backend.sql("records", "SELECT value, state FROM records"))
        await original(fqdn, value)

    provider.add_txt = add  # type: ignore[method-assign]
    client, _ = await gateway(provider=provider)
    v = make_value()
    assert (await client.post("/", data=body("setup", v), headers=ALICE)).status == 201
    assert seen == [[(v, "adding")]]


async def test_failed_add_stays_journaled_for_the_janitor(
    gateway: GatewayFactory, backend: Backend
) -> None:
    client, _ = await gateway(provider=MemoryProvider(MemorySettings(fail="API down")))
    v = make_value()
    assert (await client.post("/", data=body("setup", v), headers=ALICE)).status == 502
    assert backend.sql("records", "SELECT value, state FROM records") == [(v, "adding")]


async def test_journal_write_failure_means_no_provider_call(
    gateway: GatewayFactory, backend: Backend
) -> None:
    client, provider = await gateway()
    backend.refuse_writes("records")
    r = await client.post("/", data=body("setup", make_value()), headers=ALICE)
    assert r.status == 503
    assert (await r.json())["message"].startswith("journal cannot be written")
    assert provider.calls == []


@asynccontextmanager
async def service_on(
    backend: Backend, clock: Clock, provider: MemoryProvider
) -> AsyncIterator[ChallengeService]:
    async with opened(backend, clock) as state:
        yield ChallengeService(
            provider,
            state,
            ("example.test",),
            PropagationConfig(False, PropagationSettings(timeout=1.0)),
            5.0,
        )


async def test_janitor_removes_stale_keeps_fresh(backend: Backend) -> None:
    clock = Clock()
    provider = MemoryProvider()
    async with service_on(backend, clock, provider) as service:
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


async def test_janitor_retries_failed_removal(backend: Backend) -> None:
    clock = Clock()
    provider = MemoryProvider()
    async with service_on(backend, clock, provider) as service:
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
    gateway: GatewayFactory,
) -> None:
    """A provider that forgets on restart gets the journaled values back."""
    client, provider = await gateway()
    v1, v2 = make_value(), make_value()
    await client.post("/", data=body("setup", v1), headers=ALICE)
    await client.post("/", data=body("setup", v2), headers=ALICE)
    await client.close()
    client2, provider2 = await gateway()
    assert provider2 is not provider
    assert sorted(provider2.values(NAME)) == sorted([v1, v2])
    await client2.delete("/", data=body("teardown", v1), headers=ALICE)
    assert provider2.values(NAME) == [v2]


async def test_janitor_runs_at_startup(gateway: GatewayFactory, backend: Backend) -> None:
    client, _ = await gateway()
    v = make_value()
    await client.post("/", data=body("setup", v), headers=ALICE)
    await client.close()
    backend.sql("records", "UPDATE records SET created = created - 7200")
    _client2, provider2 = await gateway()
    for _ in range(250):
        if not provider2.values(NAME):
            break
        await asyncio.sleep(0.02)
    assert provider2.values(NAME) == []
    for _ in range(250):
        if backend.sql("records", "SELECT count(*) FROM records") == [(0,)]:
            break
        await asyncio.sleep(0.02)
    assert backend.sql("records", "SELECT count(*) FROM records") == [(0,)]
