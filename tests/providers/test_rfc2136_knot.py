"""The rfc2136 provider against a real Knot DNS 3.2 (tests/servers/knot.py).

The shared contract suite runs against a Knot primary serving example.test and
example.org whose key may change TXT only at listed ``_acme-challenge`` names;
``served`` asks that server directly (no recursion). BIND is covered by
test_rfc2136.py; this module checks the provider does not lean on BIND's ways.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError
from providers.rfc2136 import Rfc2136Provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served, opened
from tests.servers.knot import KnotServer, knot_primary  # noqa: F401

pytestmark = pytest.mark.system


def make_provider(server: KnotServer, **overrides: str) -> Rfc2136Provider:
    values = server.rfc2136_settings()
    del values["PROVIDER"]
    values["RFC2136_TIMEOUT"] = "3"
    values.update(overrides)
    settings = Settings(values)
    provider = Rfc2136Provider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    return provider


@pytest.fixture
async def provider(knot_primary: KnotServer) -> AsyncIterator[Rfc2136Provider]:  # noqa: F811
    async with opened(make_provider(knot_primary)) as p:
        yield p


@pytest.fixture
def served(knot_primary: KnotServer) -> Served:  # noqa: F811
    return knot_primary.query_txt


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
def broken_provider(knot_primary: KnotServer) -> Rfc2136Provider:  # noqa: F811
    raw = bytearray(base64.b64decode(knot_primary.key.secret))
    raw[0] ^= 0xFF
    return make_provider(knot_primary, RFC2136_TSIG_SECRET=base64.b64encode(bytes(raw)).decode())


@pytest.fixture
async def twin_provider(knot_primary: KnotServer) -> AsyncIterator[Rfc2136Provider]:  # noqa: F811
    async with opened(make_provider(knot_primary)) as p:
        yield p


class TestRfc2136KnotContract(ProviderContract):
    pass


async def test_name_outside_the_acl_is_refused(knot_primary: KnotServer,  # noqa: F811
                                                served: Served) -> None:
    provider = make_provider(knot_primary)
    name, value = "_acme-challenge.other.example.test", make_value()
    with pytest.raises(ProviderError) as info:
        await provider.add_txt(name, value)
    assert name in str(info.value)
    # Knot 3.2 answers a denied update NOTAUTH with TSIG error BADKEY (BIND says
    # REFUSED): the message must not send the admin to the key settings alone.
    assert "BADKEY" in str(info.value) and "acl" in str(info.value)
    assert "update-owner" in str(info.value)
    assert value not in await served(name)
