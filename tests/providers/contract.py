"""The contract test suite that every provider passes.

Subclass :class:`ProviderContract` in a provider's test module and supply the
fixtures:

* ``provider``: an opened provider (closed by the fixture afterwards);
* ``served``: an async callable ``fqdn -> set[str]`` that reads the TXT values
  the way the world sees them (a DNS query to the server, or the fake API's
  state for hosted APIs);
* ``names``: at least two challenge names in *different* zones the provider
  may change (e.g. ``_acme-challenge.example.test``, ``_acme-challenge.example.org``);
* ``broken_provider``: a provider whose changes must fail (server down, bad key).

The gateway serialises calls per name with a lock, so the concurrency test does
the same; what it checks is that changes to different names proceed side by side
and that every value ends up exactly where it should.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from providers.base import Provider, ProviderError
from tests.conftest import make_value

Served = Callable[[str], Awaitable[set[str]]]


class ProviderContract:
    async def test_two_values_coexist(self, provider: Provider, served: Served,
                                      names: list[str]) -> None:
        name = names[0]
        v1, v2 = make_value(), make_value()
        await provider.add_txt(name, v1)
        await provider.add_txt(name, v2)
        assert {v1, v2} <= await served(name)
        await provider.remove_txt(name, v1)
        await provider.remove_txt(name, v2)
        assert not {v1, v2} & await served(name)

    async def test_add_is_idempotent(self, provider: Provider, served: Served,
                                     names: list[str]) -> None:
        name = names[0]
        v = make_value()
        await provider.add_txt(name, v)
        await provider.add_txt(name, v)
        assert v in await served(name)
        await provider.remove_txt(name, v)
        assert v not in await served(name)

    async def test_remove_missing_is_noop(self, provider: Provider, served: Served,
                                          names: list[str]) -> None:
        name = names[0]
        keep = make_value()
        await provider.add_txt(name, keep)
        await provider.remove_txt(name, make_value())  # value absent
        await provider.remove_txt("_acme-challenge.nothing-here." + names[0].split(".", 1)[1],
                                  make_value())  # name absent
        assert keep in await served(name)
        await provider.remove_txt(name, keep)
        await provider.remove_txt(name, keep)  # second removal: still fine
        assert keep not in await served(name)

    async def test_remove_one_of_two(self, provider: Provider, served: Served,
                                     names: list[str]) -> None:
        name = names[0]
        v1, v2 = make_value(), make_value()
        await provider.add_txt(name, v1)
        await provider.add_txt(name, v2)
        await provider.remove_txt(name, v1)
        now = await served(name)
        assert v2 in now
        assert v1 not in now
        await provider.remove_txt(name, v2)

    async def test_concurrent_changes(self, provider: Provider, served: Served,
                                      names: list[str]) -> None:
        locks = {name: asyncio.Lock() for name in names}
        wanted = {name: (make_value(), make_value()) for name in names}

        async def change(name: str, value: str, add: bool) -> None:
            async with locks[name]:
                if add:
                    await provider.add_txt(name, value)
                else:
                    await provider.remove_txt(name, value)

        await asyncio.gather(*(change(n, v, True) for n, vs in wanted.items() for v in vs))
        for name, (v1, v2) in wanted.items():
            assert {v1, v2} <= await served(name)
        await asyncio.gather(*(change(n, vs[0], False) for n, vs in wanted.items()))
        for name, (v1, v2) in wanted.items():
            now = await served(name)
            assert v2 in now
            assert v1 not in now
        await asyncio.gather(*(change(n, vs[1], False) for n, vs in wanted.items()))
        for name, (_, v2) in wanted.items():
            assert v2 not in await served(name)

    async def test_names_in_several_zones(self, provider: Provider, served: Served,
                                          names: list[str]) -> None:
        assert len({n.split(".", 2)[-1] for n in names}) >= 2, "need names in two zones"
        values = {name: make_value() for name in names}
        for name, v in values.items():
            await provider.add_txt(name, v)
        for name, v in values.items():
            assert v in await served(name)
            others = set(values.values()) - {v}
            assert not others & await served(name)
        for name, v in values.items():
            await provider.remove_txt(name, v)

    async def test_failure_is_provider_error(self, broken_provider: Provider,
                                             names: list[str]) -> None:
        with pytest.raises(ProviderError) as info:
            await broken_provider.add_txt(names[0], make_value())
        assert info.value.provider in str(info.value)
        assert str(info.value).startswith(info.value.provider + ":")
