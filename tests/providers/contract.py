"""The contract test suite that every provider passes.

Subclass :class:`ProviderContract` in a provider's test module and supply the
fixtures:

* ``provider``: an opened provider (closed by the fixture afterwards);
* ``served``: an async callable ``fqdn -> set[str]`` that reads the TXT values
  the way the world sees them (a DNS query to the server, or the fake API's
  state for hosted APIs);
* ``names``: at least two challenge names in *different* zones the provider
  may change (e.g. ``_acme-challenge.example.test``, ``_acme-challenge.example.org``);
* ``broken_provider``: a provider whose changes must fail (server down, bad key);
* ``twin_provider``: a second, separately built provider on the same DNS data
  as ``provider`` (another gateway writing to the same zone). Without one (the
  builtin server serves its own records only) the two-gateway case is skipped
  by the default in ``tests/providers/conftest.py``.

The gateway serialises calls per name with a lock, so the concurrency test does
the same; what it checks is that changes to different names proceed side by side
and that every value ends up exactly where it should.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import pytest

from providers.base import Provider, ProviderError
from tests.conftest import make_value

Served = Callable[[str], Awaitable[set[str]]]
P = TypeVar("P", bound=Provider)


@contextlib.asynccontextmanager
async def opened(provider: P) -> AsyncIterator[P]:
    """*provider*, opened, and closed again afterwards (for the ``provider`` fixtures)."""
    await provider.open()
    try:
        yield provider
    finally:
        await provider.aclose()


def awkward_values() -> list[str]:
    """Valid dns-01 values made of the characters that trip up zone files and command
    lines: a leading ``-`` (an option, to a program that takes its arguments), a
    leading ``_``, and ``--``/``-_`` runs. Each is 43 base64url characters."""
    return [
        "-" + make_value()[1:],
        "_" + make_value()[1:-2] + "-_",
        "--" + make_value()[2:-2] + "__",
    ]


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

    async def test_values_with_dashes_and_underscores(self, provider: Provider, served: Served,
                                                      names: list[str]) -> None:
        name = names[0]
        values = awkward_values()
        for v in values:
            await provider.add_txt(name, v)
        assert set(values) <= await served(name)
        await provider.add_txt(name, values[0])  # present already: no change
        await provider.remove_txt(name, values[0])
        now = await served(name)
        assert values[0] not in now
        assert set(values[1:]) <= now
        for v in values[1:]:
            await provider.remove_txt(name, v)
        assert not set(values) & await served(name)

    async def test_two_gateways_at_one_name(self, provider: Provider, twin_provider: Provider,
                                            served: Served, names: list[str]) -> None:
        # Two gateways (or a gateway and its replacement after a restart) on one
        # zone: each removes only what it wrote, whatever order things happen in.
        name = names[0]
        mine, theirs, again = make_value(), make_value(), make_value()
        await provider.add_txt(name, mine)
        await twin_provider.add_txt(name, theirs)
        assert {mine, theirs} <= await served(name)
        await provider.remove_txt(name, mine)
        now = await served(name)
        assert theirs in now
        assert mine not in now
        await provider.add_txt(name, again)
        await twin_provider.remove_txt(name, theirs)
        await twin_provider.remove_txt(name, theirs)  # twice: still only its own
        now = await served(name)
        assert again in now
        assert theirs not in now
        await provider.remove_txt(name, again)
        assert not {mine, theirs, again} & await served(name)

    async def test_failure_is_provider_error(self, broken_provider: Provider,
                                             names: list[str]) -> None:
        with pytest.raises(ProviderError) as info:
            await broken_provider.add_txt(names[0], make_value())
        assert info.value.provider in str(info.value)
        assert str(info.value).startswith(info.value.provider + ":")
