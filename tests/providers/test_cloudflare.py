"""The Cloudflare provider against a fake Cloudflare API.

Cloudflare's hosted API cannot run here, so these tests use
:mod:`tests.providers.fake_cloudflare`, an in-process aiohttp server built from
Cloudflare's public API documentation that checks every request it receives
(bearer token, method, path, query, JSON body, full record names, quoted TXT
content, TTL bounds) and records anything unexpected; every test ends by
asserting that record is empty. The proxy test uses an ``http://`` fake URL so
that the tiny forward proxy needs no CONNECT tunnelling.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError, ProviderTimeout
from providers.cloudflare import CloudflareProvider
from providers.registry import create_provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served, opened
from tests.providers.fake_cloudflare import FakeCloudflare, running_fake
from tests.providers.forward_proxy import ForwardProxy

TOKEN = "Ab0-test-token-with-forty-characters-xyz"


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloudflare]:
    async with running_fake(TOKEN) as api:
        yield api
        assert api.warnings == []  # every TXT content quoted, as documented


def build(fake: FakeCloudflare, **extra: str) -> CloudflareProvider:
    settings = Settings({"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_URL": fake.url, **extra})
    provider = CloudflareProvider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    return provider


@pytest.fixture
async def provider(fake: FakeCloudflare) -> AsyncIterator[CloudflareProvider]:
    async with opened(build(fake)) as p:
        yield p


@pytest.fixture
def served(fake: FakeCloudflare) -> Served:
    async def read(fqdn: str) -> set[str]:
        return fake.served(fqdn)

    return read


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
async def broken_provider(fake: FakeCloudflare) -> AsyncIterator[CloudflareProvider]:
    p = build(fake, CLOUDFLARE_API_TOKEN="not-the-right-token")
    try:
        yield p
    finally:
        await p.aclose()


@pytest.fixture
async def twin_provider(fake: FakeCloudflare) -> AsyncIterator[CloudflareProvider]:
    async with opened(build(fake)) as p:
        yield p


class TestCloudflareContract(ProviderContract):
    pass


async def test_records_are_found_again_after_a_restart(fake: FakeCloudflare) -> None:
    name, value, other = "_acme-challenge.example.test", make_value(), make_value()
    first = build(fake)
    try:
        await first.add_txt(name, value)
        await first.add_txt(name, other)
    finally:
        await first.aclose()
    second = build(fake)  # a new process knows no record ids
    try:
        await second.remove_txt(name, value)
    finally:
        await second.aclose()
    assert fake.served(name) == {other}
    assert sum(1 for method, _ in fake.requests if method == "DELETE") == 1


async def test_content_is_sent_quoted(provider: CloudflareProvider, fake: FakeCloudflare) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.example.test", value)
    (record,) = fake.zone_named("example.test").records.values()
    assert record.content == f'"{value}"'
    assert record.name == "_acme-challenge.example.test"
    assert record.ttl == 60


async def test_unquoted_records_from_other_tools_are_recognised(
    provider: CloudflareProvider, fake: FakeCloudflare
) -> None:
    name, value = "_acme-challenge.example.test", make_value()
    fake.add_record(name, value)  # stored without quotes
    await provider.add_txt(name, value)
    assert [m for m, _ in fake.requests if m == "POST"] == []
    await provider.remove_txt(name, value)
    assert fake.served(name) == set()


async def test_zone_found_by_walking_up_and_cached(
    provider: CloudflareProvider, fake: FakeCloudflare
) -> None:
    name, value = "_acme-challenge.a.b.c.example.test", make_value()
    await provider.add_txt(name, value)
    assert fake.zone_queries == [
        "a.b.c.example.test",
        "b.c.example.test",
        "c.example.test",
        "example.test",
    ]
    await provider.remove_txt(name, value)
    assert len(fake.zone_queries) == 4
    await provider.add_txt("_acme-challenge.www.sub.example.org", value)
    assert fake.served("_acme-challenge.www.sub.example.org") == {value}
    (record,) = fake.zone_named("sub.example.org").records.values()
    assert record.content == f'"{value}"'


async def test_zone_id_setting_skips_the_lookup(fake: FakeCloudflare) -> None:
    zone = fake.zone_named("example.org")
    p = build(fake, CLOUDFLARE_ZONE_ID=zone.id.upper(), CLOUDFLARE_TTL="1")
    value = make_value()
    try:
        await p.add_txt("_acme-challenge.www.example.org", value)
    finally:
        await p.aclose()
    assert fake.zone_queries == []
    assert [r.ttl for r in zone.records.values()] == [1]


async def test_unknown_zone_names_the_permission(provider: CloudflareProvider) -> None:
    with pytest.raises(
        ProviderError, match=r"no Cloudflare zone for _acme-challenge\.x\.net"
    ) as info:
        await provider.add_txt("_acme-challenge.x.net", make_value())
    assert info.value.hint is not None and "Zone:Zone:Read" in info.value.hint


async def test_missing_edit_permission_gets_the_hint(
    provider: CloudflareProvider, fake: FakeCloudflare
) -> None:
    fake.read_only.add(fake.zone_named("example.test").id)
    with pytest.raises(ProviderError) as info:
        await provider.add_txt("_acme-challenge.example.test", make_value())
    assert "HTTP 403: Authentication error (10000)" in str(info.value)
    assert info.value.hint == "Does your API token have Zone:DNS:Edit for this zone?"


async def test_identical_record_from_a_race_is_success(
    provider: CloudflareProvider, fake: FakeCloudflare
) -> None:
    # Another gateway adds the value just after our listing: 81058 on create.
    name, value = "_acme-challenge.example.test", make_value()
    fake.after_listing = lambda: fake.add_record(name, f'"{value}"')
    await provider.add_txt(name, value)
    fake.after_listing = None
    assert fake.served(name) == {value}
    assert len(fake.zone_named("example.test").records) == 1


async def test_record_deleted_meanwhile_is_success(
    provider: CloudflareProvider, fake: FakeCloudflare
) -> None:
    name, value = "_acme-challenge.example.test", make_value()
    await provider.add_txt(name, value)
    fake.after_listing = fake.zone_named("example.test").records.clear
    await provider.remove_txt(name, value)
    fake.after_listing = None
    assert fake.served(name) == set()


async def test_server_error_is_reported(provider: CloudflareProvider, fake: FakeCloudflare) -> None:
    fake.fail_next = 1
    with pytest.raises(ProviderError, match=r"HTTP 500: <html>500 Internal Server Error"):
        await provider.add_txt("_acme-challenge.example.test", make_value())
    await provider.add_txt("_acme-challenge.example.test", make_value())  # recovers


async def test_slow_api_is_a_timeout(fake: FakeCloudflare) -> None:
    p = build(fake, CLOUDFLARE_TIMEOUT="300ms")
    fake.delay = 2.0
    try:
        with pytest.raises(ProviderTimeout, match=r"no answer within 0\.3s"):
            await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()
        fake.delay = 0.0


async def test_token_never_in_errors_or_logs(
    fake: FakeCloudflare, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "wrong-but-secret-token"
    p = build(fake, CLOUDFLARE_API_TOKEN=secret)
    caplog.set_level(logging.DEBUG)
    try:
        with pytest.raises(ProviderError) as info:
            await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()
    assert str(info.value).startswith(
        "cloudflare: GET /zones: HTTP 403: Invalid access token (9109)"
    )
    assert info.value.hint == "Does your API token have Zone:DNS:Edit for this zone?"
    assert secret not in str(info.value)
    assert secret not in caplog.text
    assert secret not in repr(p.settings)


async def test_all_calls_go_through_the_proxy(fake: FakeCloudflare) -> None:
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
    assert proxy.forwarded[0] == f"GET {fake.url}/zones?name=example.test"


async def test_short_name_loads_this_provider(fake: FakeCloudflare, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = Settings(
        {
            "PROVIDER": "cloudflare",
            "CLOUDFLARE_API_TOKEN_FILE": str(token_file),
            "CLOUDFLARE_API_URL": fake.url,
        }
    )
    p = create_provider(settings, ProviderContext())
    assert settings.problems == []
    assert isinstance(p, CloudflareProvider)
    value = make_value()
    try:
        await p.add_txt("_acme-challenge.example.test", value)
        assert fake.served("_acme-challenge.example.test") == {value}
    finally:
        await p.aclose()


def test_settings_problems_are_all_reported() -> None:
    settings = Settings(
        {
            "CLOUDFLARE_TTL": "30",
            "CLOUDFLARE_ZONE_ID": "example.com",
            "CLOUDFLARE_API_URL": "api.cloudflare.com",
            "CLOUDFLARE_TIMEOUT": "soon",
        }
    )
    CloudflareProvider.from_settings(settings, ProviderContext())
    text = "\n".join(settings.problems)
    for key in (
        "CLOUDFLARE_API_TOKEN",
        "CLOUDFLARE_TTL",
        "CLOUDFLARE_ZONE_ID",
        "CLOUDFLARE_API_URL",
        "CLOUDFLARE_TIMEOUT",
    ):
        assert key in text


def test_token_with_blanks_is_a_problem() -> None:
    settings = Settings({"CLOUDFLARE_API_TOKEN": "Bearer abc"})
    CloudflareProvider.from_settings(settings, ProviderContext())
    assert any("blanks" in p for p in settings.problems)
    assert not any("Bearer abc" in p for p in settings.problems)


async def test_the_fake_notes_unquoted_content(fake: FakeCloudflare) -> None:
    # The fake's checks must bite, or the tests above prove nothing.
    zone = fake.zone_named("example.test")
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.url}/zones/{zone.id}/dns_records",
            json={
                "type": "TXT",
                "name": "_acme-challenge.example.test",
                "content": "bare",
                "ttl": 60,
            },
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as answer,
    ):
        assert answer.status == 200
    assert len(fake.warnings) == 1 and "must be in quotation marks" in fake.warnings[0]
    fake.warnings.clear()
