"""LiveProvider: how a reload hands over from one provider instance to the next.

In process, with in-memory providers whose calls the test holds and releases:
new calls go to the new instance at once; the old one is closed only after the
calls it was making have ended; a new instance that cannot be opened leaves the
old one in force; the same settings change nothing; a provider that keeps
state of its own reports its changed settings as needing a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Self

from gateway.live import LiveProvider
from lib.settings import Settings
from providers.base import Provider, ProviderContext, ProviderError
from providers.memory import MemoryProvider, MemorySettings


@dataclass(frozen=True)
class HeldSettings:
    token: str  # as an API token a reload may rotate


class Held(Provider):
    """A provider whose calls wait for ``release``, and that records what it was asked."""

    name = "held"

    def __init__(self, token: str, fail_open: bool = False) -> None:
        self.settings = HeldSettings(token)
        self.release = asyncio.Event()
        self.release.set()
        self.events: list[str] = []
        self.fail_open = fail_open

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        raise TypeError("built by the test")

    async def open(self) -> None:
        if self.fail_open:
            raise ProviderError("held", "cannot connect")
        self.events.append("open")

    async def add_txt(self, fqdn: str, value: str) -> None:
        self.events.append(f"add {value}")
        await self.release.wait()
        self.events.append(f"added {value}")

    async def remove_txt(self, fqdn: str, value: str) -> None:
        self.events.append(f"remove {value}")

    async def aclose(self) -> None:
        self.events.append("close")


@dataclass(frozen=True)
class PlaceSettings:
    token: str
    region: str  # as a server's address: only a restart changes it


class InPlace(Provider):
    """A provider that keeps state of its own and takes new settings in place, all
    but its region."""

    name = "in-place"
    volatile = True

    def __init__(self, token: str, region: str) -> None:
        self.settings = PlaceSettings(token, region)

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        raise TypeError("built by the test")

    async def add_txt(self, fqdn: str, value: str) -> None:
        pass

    async def remove_txt(self, fqdn: str, value: str) -> None:
        pass

    def restart_only(self, new: Self) -> list[str]:
        return [] if new.settings.region == self.settings.region else ["REGION"]

    async def adopt(self, new: Self) -> bool:
        self.settings = PlaceSettings(new.settings.token, self.settings.region)
        return True


class Reports:
    """The ``done`` callback of :meth:`LiveProvider.reload`, remembering what it was told."""

    def __init__(self) -> None:
        self.said: list[str | None] = []
        self.restart: list[str] = []
        self.done = asyncio.Event()

    def __call__(self, problem: str | None, restart: Sequence[str] = ()) -> None:
        self.said.append(problem)
        self.restart = list(restart)
        self.done.set()

    async def wait(self) -> list[str | None]:
        await asyncio.wait_for(self.done.wait(), 5)
        return self.said


async def test_calls_in_flight_finish_on_the_old_instance_which_closes_after() -> None:
    old, new = Held("token-1"), Held("token-2")
    live = LiveProvider(old)
    await live.open()
    old.release.clear()
    in_flight = asyncio.create_task(live.add_txt("_acme-challenge.example.test", "v1"))
    await asyncio.sleep(0)
    report = Reports()
    assert live.reload(new, report) is None
    assert await report.wait() == [None] and live.current is new
    await live.add_txt("_acme-challenge.example.test", "v2")
    assert new.events == ["open", "add v2", "added v2"]
    assert "close" not in old.events  # its call has not ended
    old.release.set()
    await in_flight
    await asyncio.wait_for(live.aclose(), 5)
    assert old.events == ["open", "add v1", "added v1", "close"]


async def test_a_new_instance_that_cannot_open_leaves_the_old_in_force() -> None:
    old, new = Held("token-1"), Held("token-2", fail_open=True)
    live = LiveProvider(old)
    await live.open()
    report = Reports()
    assert live.reload(new, report) is None
    said = await report.wait()
    assert said[0] is not None and "cannot connect" in said[0]
    assert live.current is old and "close" not in old.events


async def test_the_same_settings_change_nothing() -> None:
    old = Held("token-1")
    live = LiveProvider(old)
    report = Reports()
    assert live.reload(Held("token-1"), report) == []
    assert live.current is old and report.said == []


def test_a_provider_with_state_of_its_own_names_what_needs_a_restart() -> None:
    old = MemoryProvider(MemorySettings())  # volatile: its records live in this process
    live = LiveProvider(old)
    report = Reports()
    assert live.reload(MemoryProvider(MemorySettings(fail="down")), report) == ["memory fail"]
    # Another provider altogether is never swapped in: its records were written elsewhere.
    assert live.reload(Held("token-1"), report) == ["provider"]
    assert live.current is old and report.said == []


async def test_a_provider_that_adopts_settings_takes_all_but_what_needs_a_restart() -> None:
    old = InPlace("token-1", "eu")
    live = LiveProvider(old)
    report = Reports()
    assert live.reload(InPlace("token-2", "us"), report) is None
    assert await report.wait() == [None] and report.restart == ["REGION"]
    assert live.current is old and old.settings == PlaceSettings("token-2", "eu")
