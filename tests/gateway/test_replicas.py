"""Several gateways on one PostgreSQL database, in one process: changes to one name
are serialised across them, and the janitor sweeps on one at a time.

Each gateway is an app of its own with its own per-name asyncio locks; only the
database can keep them apart. They share one provider, as replicas share one
DNS service, and that provider checks the contract the gateway promises every
provider: calls for one name never overlap.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
from pathlib import Path

import pytest

from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.gateway.backends import Backend
from tests.gateway.conftest import GatewayFactory
from tests.servers.postgres import PostgresServer


class WatchedProvider(MemoryProvider):
    """A memory provider that takes its time and notes calls for one name overlapping."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.overlaps = 0

    async def _call(self, fqdn: str, change: str, value: str) -> None:
        self.in_flight[fqdn] += 1
        if self.in_flight[fqdn] > 1:
            self.overlaps += 1
        try:
            await asyncio.sleep(random.uniform(0.001, 0.02))
            if change == "add":
                await super().add_txt(fqdn, value)
            else:
                await super().remove_txt(fqdn, value)
        finally:
            self.in_flight[fqdn] -= 1

    async def add_txt(self, fqdn: str, value: str) -> None:
        await self._call(fqdn, "add", value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        await self._call(fqdn, "remove", value)


@pytest.fixture
def backend(postgres_server: PostgresServer, postgres_database: str, tmp_path: Path) -> Backend:
    """PostgreSQL only: SQLite is for one gateway process."""
    return Backend("postgresql", tmp_path / "state", postgres_server, postgres_database)


def body(argument: str, name: str, value: str) -> str:
    return json.dumps({"argument": argument, "domain_name": name, "challenge_content": value})


async def test_concurrent_changes_through_different_replicas_lose_nothing_and_leave_nothing(
    gateway: GatewayFactory, backend: Backend
) -> None:
    provider = WatchedProvider()
    env = {"ALLOWED_HOSTS": "127.0.0.1", "BASIC_AUTH": "off", "MAX_RECORDS_PER_USER": "0"}
    replicas = [(await gateway(provider=provider, **env))[0] for _ in range(3)]
    names = [f"n{i}.example.test" for i in range(6)]
    kept: set[tuple[str, str]] = set()
    rng = random.Random(14)

    async def one(name: str, value: str, teardown: bool) -> None:
        a, b = rng.sample(replicas, 2)
        r = await a.post("/", data=body("setup", name, value))
        assert r.status == 201, await r.text()
        if teardown:
            r = await b.delete("/", data=body("teardown", name, value))
            assert r.status == 200, await r.text()
        else:
            kept.add((f"_acme-challenge.{name}", value))

    await asyncio.gather(
        *(one(name, make_value(), i % 2 == 0) for name in names for i in range(8))
    )
    assert provider.overlaps == 0
    served = {(fqdn, v) for fqdn in provider.records for v in provider.values(fqdn)}
    assert served == kept
    rows = backend.sql("records", "SELECT fqdn, value, state FROM records")
    assert {(fqdn, value) for fqdn, value, _ in rows} == kept
    assert {state for _, _, state in rows} == {"present"}
