"""The in-memory provider passes the shared contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from providers.memory import MemoryProvider, MemorySettings
from tests.providers.contract import ProviderContract, Served


@pytest.fixture
async def provider() -> AsyncIterator[MemoryProvider]:
    p = MemoryProvider()
    await p.open()
    yield p
    await p.aclose()


@pytest.fixture
def served(provider: MemoryProvider) -> Served:
    async def read(fqdn: str) -> set[str]:
        return set(provider.values(fqdn))

    return read


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
def twin_provider(provider: MemoryProvider) -> MemoryProvider:
    # Another instance over the same store: the memory provider's stand-in for a zone.
    twin = MemoryProvider()
    twin.records = provider.records
    return twin


@pytest.fixture
def broken_provider() -> MemoryProvider:
    return MemoryProvider(MemorySettings(fail="the DNS API is down"))


class TestMemoryContract(ProviderContract):
    pass
