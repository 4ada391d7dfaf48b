"""The OpenProvider provider against a fake OpenProvider API.

OpenProvider's hosted API cannot run here, so these tests use
:mod:`tests.providers.fake_openprovider`, an in-process aiohttp server built
from OpenProvider's public API documentation that checks every request it
receives (bearer token, method, path, query, JSON body, relative record names,
TTL bounds) and records anything unexpected; every test ends by asserting that
record is empty. The proxy test uses an ``http://`` fake URL so that the tiny
forward proxy needs no CONNECT tunnelling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from lib.settings import Settings
from providers.base import Provider, ProviderContext, ProviderError, ProviderTimeout
from providers.openprovider import OpenProvider
from providers.registry import create_provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served, opened
from tests.providers.fake_openprovider import FakeOpenProvider
from tests.providers.forward_proxy import ForwardProxy

USER = "gateway"
PASSWORD = "correct horse:battery"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenProvider]:
    api = FakeOpenProvider(
        username=USER, password=PASSWORD, zones=("example.test", "example.org", "sub.example.org")
    )
    await api.start()
    try:
        yield api
        assert api.failures == []
    finally:
        await api.close()


def build(fake: FakeOpenProvider, **extra: str) -> OpenProvider:
    values = {
        "DNSAPI_USERNAME": USER,
        "DNSAPI_PASSWORD": PASSWORD,
        "OPENPROVIDER_API_URL": fake.url,
        **extra,
    }
    settings = Settings(values)
    provider = OpenProvider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    return provider


@pytest.fixture
async def provider(fake: FakeOpenProvider) -> AsyncIterator[OpenProvider]:
    async with opened(build(fake)) as p:
        yield p


@pytest.fixture
def served(fake: FakeOpenProvider) -> Served:
    async def read(fqdn: str) -> set[str]:
        return fake.served(fqdn)

    return read


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
async def broken_provider(fake: FakeOpenProvider) -> AsyncIterator[OpenProvider]:
    p = build(fake, DNSAPI_PASSWORD="wrong password")
    try:
        yield p
    finally:
        await p.aclose()


@pytest.fixture
async def twin_provider(fake: FakeOpenProvider) -> AsyncIterator[OpenProvider]:
    async with opened(build(fake)) as p:
        yield p


class TestOpenProviderContract(ProviderContract):
    pass


async def test_one_login_for_many_changes(provider: OpenProvider, fake: FakeOpenProvider) -> None:
    names = ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]
    values = [make_value() for _ in range(3)]
    await asyncio.gather(*(provider.add_txt(n, v) for n in names for v in values[:1]))
    for name in names:
        for v in values:
            await provider.add_txt(name, v)
        for v in values:
            await provider.remove_txt(name, v)
    assert fake.logins == 1


async def test_expired_token_is_renewed_once(
    provider: OpenProvider, fake: FakeOpenProvider
) -> None:
    name, v1, v2 = "_acme-challenge.example.test", make_value(), make_value()
    await provider.add_txt(name, v1)
    fake.expire_tokens()
    await provider.add_txt(name, v2)
    assert fake.served(name) == {v1, v2}
    assert fake.logins == 2
    assert fake.rejected_tokens == 1


async def test_token_refused_twice_is_an_error(
    provider: OpenProvider, fake: FakeOpenProvider
) -> None:
    await provider.add_txt("_acme-challenge.example.test", make_value())
    fake.expire_tokens()
    fake.password = "changed meanwhile"
    with pytest.raises(ProviderError, match="login as gateway: HTTP 401") as info:
        await provider.add_txt("_acme-challenge.example.test", make_value())
    assert info.value.hint is not None and "DNSAPI_PASSWORD" in info.value.hint


async def test_zone_found_by_walking_up_three_levels(
    provider: OpenProvider, fake: FakeOpenProvider
) -> None:
    name, value = "_acme-challenge.a.b.c.example.test", make_value()
    await provider.add_txt(name, value)
    assert fake.zone_queries == [
        "a.b.c.example.test",
        "b.c.example.test",
        "c.example.test",
        "example.test",
    ]
    zone = fake.zones["example.test"]
    assert [(r.name, r.value) for r in zone.records] == [("_acme-challenge.a.b.c", value)]
    await provider.remove_txt(name, value)
    assert fake.zone_queries[4:] == []  # the zone was cached
    assert zone.records == []


async def test_most_specific_zone_wins(provider: OpenProvider, fake: FakeOpenProvider) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.www.sub.example.org", value)
    assert [(r.name, r.value) for r in fake.zones["sub.example.org"].records] == [
        ("_acme-challenge.www", value)
    ]
    assert fake.zones["example.org"].records == []


async def test_unknown_zone_is_an_error(provider: OpenProvider) -> None:
    with pytest.raises(ProviderError, match=r"no DNS zone for _acme-challenge\.example\.net"):
        await provider.add_txt("_acme-challenge.example.net", make_value())


async def test_other_records_are_kept(provider: OpenProvider, fake: FakeOpenProvider) -> None:
    fake.add_record("example.test", "_acme-challenge", "someone else's value", ttl=3600)
    fake.add_record("example.test", "", "v=spf1 -all", ttl=3600)
    value = make_value()
    await provider.add_txt("_acme-challenge.example.test", value)
    await provider.remove_txt("_acme-challenge.example.test", value)
    assert fake.served("_acme-challenge.example.test") == {"someone else's value"}
    assert fake.served("example.test") == {"v=spf1 -all"}


async def test_quoted_values_in_listings(provider: OpenProvider, fake: FakeOpenProvider) -> None:
    fake.quote_listing = True
    name, value = "_acme-challenge.example.test", make_value()
    await provider.add_txt(name, value)
    puts = sum(1 for m, _ in fake.requests if m == "PUT")
    await provider.add_txt(name, value)
    assert sum(1 for m, _ in fake.requests if m == "PUT") == puts  # recognised as present
    await provider.remove_txt(name, value)
    assert fake.served(name) == set()


async def test_duplicate_add_from_a_race_is_success(
    provider: OpenProvider, fake: FakeOpenProvider
) -> None:
    # Another writer adds the value between our listing and our update.
    name, value = "_acme-challenge.example.test", make_value()
    fake.before_update = lambda: fake.add_record("example.test", "_acme-challenge", value)
    await provider.add_txt(name, value)
    assert fake.served(name) == {value}


async def test_value_removed_meanwhile_is_success(
    provider: OpenProvider, fake: FakeOpenProvider
) -> None:
    name, value = "_acme-challenge.example.test", make_value()
    await provider.add_txt(name, value)
    zone = fake.zones["example.test"]

    def other_remover() -> None:
        zone.records.clear()

    fake.before_update = other_remover
    await provider.remove_txt(name, value)
    # The fake flags a removal of an absent record; here that is the point.
    assert len(fake.failures) == 1 and "not there" in fake.failures[0]
    fake.failures.clear()


async def test_server_error_is_reported(provider: OpenProvider, fake: FakeOpenProvider) -> None:
    await provider.add_txt("_acme-challenge.example.test", make_value())
    fake.fail_next = 1
    with pytest.raises(ProviderError, match="HTTP 500"):
        await provider.add_txt("_acme-challenge.example.test", make_value())
    await provider.add_txt("_acme-challenge.example.test", make_value())  # recovers


async def test_slow_api_is_a_timeout(fake: FakeOpenProvider) -> None:
    p = build(fake, OPENPROVIDER_TIMEOUT="0.3")
    fake.delay = 2.0
    try:
        with pytest.raises(ProviderTimeout, match=r"no answer within 0\.3s"):
            await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()
        fake.delay = 0.0


async def test_unreachable_api_is_a_provider_error() -> None:
    settings = Settings(
        {
            "DNSAPI_USERNAME": USER,
            "DNSAPI_PASSWORD": PASSWORD,
            "OPENPROVIDER_API_URL": "http://127.0.0.1:9/v1beta",
        }
    )
    p = OpenProvider.from_settings(settings, ProviderContext())
    try:
        with pytest.raises(ProviderError, match=r"cannot reach 127\.0\.0\.1:9"):
            await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()


async def test_password_never_in_errors_or_logs(
    fake: FakeOpenProvider, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong but secret:password"
    p = build(fake, DNSAPI_PASSWORD=secret)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ProviderError) as info:
            await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()
    assert str(info.value).startswith("openprovider: login as gateway: HTTP 401, error 196")
    assert secret not in str(info.value)
    assert secret not in caplog.text
    assert secret not in repr(p.settings)


async def test_all_calls_go_through_the_proxy(fake: FakeOpenProvider) -> None:
    proxy = ForwardProxy()
    await proxy.start()
    p = build(fake, ALL_PROXY=proxy.url)
    try:
        value = make_value()
        await p.add_txt("_acme-challenge.example.test", value)
        await p.remove_txt("_acme-challenge.example.test", value)
    finally:
        await p.aclose()
        await proxy.close()
    assert proxy.refused == []
    assert len(proxy.forwarded) == len(fake.requests) >= 4
    assert proxy.forwarded[0] == f"POST {fake.url}/auth/login"


async def test_no_proxy_bypasses_the_proxy(fake: FakeOpenProvider) -> None:
    p = build(fake, ALL_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
    try:
        await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()


async def test_original_gateway_settings_load_this_provider(
    fake: FakeOpenProvider, tmp_path: Path
) -> None:
    settings = Settings(
        {
            "DNSAPI_MODULE": "providers.openprovider",
            "DNSAPI_CLASS": "OpenProvider",
            "DNSAPI_USERNAME": USER,
            "DNSAPI_PASSWORD": PASSWORD,
            "OPENPROVIDER_API_URL": fake.url,
        }
    )
    p = create_provider(settings, ProviderContext(config_dir=tmp_path))
    assert settings.problems == []
    assert isinstance(p, OpenProvider)
    await exercise(p, fake)


async def test_short_name_loads_this_provider(fake: FakeOpenProvider, tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(PASSWORD + "\n")
    settings = Settings(
        {
            "PROVIDER": "openprovider",
            "DNSAPI_USERNAME": USER,
            "DNSAPI_PASSWORD_FILE": str(secret_file),
            "OPENPROVIDER_API_URL": fake.url,
        }
    )
    p = create_provider(settings, ProviderContext())
    assert settings.problems == []
    assert isinstance(p, OpenProvider)
    await exercise(p, fake)


async def exercise(p: Provider, fake: FakeOpenProvider) -> None:
    value = make_value()
    try:
        await p.open()
        await p.add_txt("_acme-challenge.example.test", value)
        assert fake.served("_acme-challenge.example.test") == {value}
        await p.remove_txt("_acme-challenge.example.test", value)
        assert fake.served("_acme-challenge.example.test") == set()
    finally:
        await p.aclose()


def test_settings_problems_are_all_reported() -> None:
    settings = Settings(
        {
            "OPENPROVIDER_TTL": "60",
            "OPENPROVIDER_API_URL": "ftp://x",
            "OPENPROVIDER_TIMEOUT": "forever",
        }
    )
    OpenProvider.from_settings(settings, ProviderContext())
    text = "\n".join(settings.problems)
    for key in (
        "DNSAPI_USERNAME",
        "DNSAPI_PASSWORD",
        "OPENPROVIDER_TTL",
        "OPENPROVIDER_API_URL",
        "OPENPROVIDER_TIMEOUT",
    ):
        assert key in text


async def test_the_fake_rejects_absolute_record_names(fake: FakeOpenProvider) -> None:
    # The fake's checks must bite, or the tests above prove nothing.
    async with aiohttp.ClientSession() as session:
        async with session.post(
            fake.url + "/auth/login", json={"username": USER, "password": PASSWORD}
        ) as r:
            token = (await r.json())["data"]["token"]
        body = {
            "name": "example.test",
            "records": {
                "add": [
                    {
                        "name": "_acme-challenge.example.test",
                        "type": "TXT",
                        "value": "x",
                        "ttl": 900,
                    }
                ]
            },
        }
        async with session.put(
            fake.url + "/dns/zones/example.test",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            assert r.status == 400
    assert len(fake.failures) == 1
    assert "not relative" in fake.failures[0]
    fake.failures.clear()
