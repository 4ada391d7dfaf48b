"""The PowerDNS API provider against a real pdns_server (Debian pdns-server + sqlite3 backend).

``served`` asks pdns's own DNS port over UDP, so the contract suite checks what
resolvers would see, not just what the API stored. The proxy tests put a small
in-process HTTP forward proxy (aiohttp, loopback) between the provider and pdns
and count what passes through it. Settings and TXT quoting are tested without
a server; so is the retry of server errors, against a small in-process stand-in
that answers like pdns 4.7 did in these tests and checks each request it gets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError, ProviderTimeout
from providers.powerdns import PowerDnsProvider, quote_txt, unquote_txt
from providers.registry import create_provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served, opened
from tests.servers.pdns import PowerDns, running_pdns
from tests.system import free_port

KEY_HINT = "check POWERDNS_API_KEY and api=yes / api-key in pdns.conf"


def provider_for(pdns: PowerDns, **extra: str) -> PowerDnsProvider:
    values = {"POWERDNS_API_URL": pdns.api_url, "POWERDNS_API_KEY": pdns.api_key, **extra}
    return build(values)


def build(values: dict[str, str]) -> PowerDnsProvider:
    settings = Settings(values)
    provider = PowerDnsProvider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    return provider


@pytest.fixture(scope="module")
def pdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDns]:
    """One pdns_server (zones example.test and example.org) for this module."""
    with running_pdns(tmp_path_factory.mktemp("pdns")) as server:
        yield server


@pytest.fixture
async def provider(pdns: PowerDns) -> AsyncIterator[PowerDnsProvider]:
    async with opened(provider_for(pdns)) as p:
        yield p


@pytest.fixture
def served(pdns: PowerDns) -> Served:
    return pdns.query_txt


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
async def broken_provider(pdns: PowerDns) -> AsyncIterator[PowerDnsProvider]:
    p = build({"POWERDNS_API_URL": pdns.api_url, "POWERDNS_API_KEY": "not-the-key"})
    await p.open()
    try:
        yield p
    finally:
        await p.aclose()


@pytest.fixture
async def twin_provider(pdns: PowerDns) -> AsyncIterator[PowerDnsProvider]:
    async with opened(provider_for(pdns)) as p:
        yield p


@pytest.mark.system
class TestPowerDnsContract(ProviderContract):
    pass


def txt_rrset(pdns: PowerDns, zone: str, fqdn: str) -> dict[str, Any] | None:
    for rrset in pdns.rrsets(zone):
        if rrset["name"] == fqdn + "." and rrset["type"] == "TXT":
            return rrset
    return None


# --- against the real server ------------------------------------------------


@pytest.mark.system
async def test_wrong_key_names_the_fix(broken_provider: PowerDnsProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await broken_provider.remove_txt("_acme-challenge.example.test", make_value())
    assert info.value.hint == KEY_HINT
    assert "401" in info.value.message
    assert "not-the-key" not in str(info.value)


@pytest.mark.system
async def test_stored_quoted_with_ttl_and_deleted_when_empty(pdns: PowerDns) -> None:
    p = provider_for(pdns, POWERDNS_TTL="123")
    name, value = "_acme-challenge.ttl.example.test", make_value()
    try:
        await p.add_txt(name, value)
        rrset = txt_rrset(pdns, "example.test", name)
        assert rrset is not None
        assert rrset["ttl"] == 123
        assert rrset["records"] == [{"content": f'"{value}"', "disabled": False}]
        await p.remove_txt(name, value)
        # The RRset is gone, not left behind empty.
        assert txt_rrset(pdns, "example.test", name) is None
    finally:
        await p.aclose()


@pytest.mark.system
async def test_foreign_records_are_kept(
    pdns: PowerDns,
    provider: PowerDnsProvider,
) -> None:
    name = "_acme-challenge.kept.example.org"
    foreign = [
        {"content": '"set by hand" "in two strings"', "disabled": False},
        {"content": '"parked"', "disabled": True},
    ]
    response = pdns.api(
        "PATCH",
        "/example.org.",
        json={
            "rrsets": [
                {
                    "name": name + ".",
                    "type": "TXT",
                    "ttl": 300,
                    "changetype": "REPLACE",
                    "records": foreign,
                }
            ]
        },
    )
    assert response.status_code == 204, response.text
    value = make_value()
    await provider.add_txt(name, value)
    assert await pdns.query_txt(name) == {"set by handin two strings", value}
    await provider.remove_txt(name, value)
    rrset = txt_rrset(pdns, "example.org", name)
    assert rrset is not None
    assert sorted(rrset["records"], key=str) == sorted(foreign, key=str)
    assert rrset["ttl"] == 300


@pytest.mark.system
async def test_disabled_copy_of_the_value_is_enabled(
    pdns: PowerDns,
    provider: PowerDnsProvider,
) -> None:
    name, value = "_acme-challenge.disabled.example.org", make_value()
    response = pdns.api(
        "PATCH",
        "/example.org.",
        json={
            "rrsets": [
                {
                    "name": name + ".",
                    "type": "TXT",
                    "ttl": 60,
                    "changetype": "REPLACE",
                    "records": [{"content": quote_txt(value), "disabled": True}],
                }
            ]
        },
    )
    assert response.status_code == 204, response.text
    assert await pdns.query_txt(name) == set()
    await provider.add_txt(name, value)
    assert await pdns.query_txt(name) == {value}
    await provider.remove_txt(name, value)
    assert txt_rrset(pdns, "example.org", name) is None


@pytest.mark.system
async def test_own_lock_keeps_concurrent_changes_to_one_name(
    pdns: PowerDns, provider: PowerDnsProvider
) -> None:
    # No gateway lock here: without the provider's own lock, these
    # read-modify-write cycles would overwrite each other.
    name = "_acme-challenge.race.example.test"
    values = [make_value() for _ in range(6)]
    await asyncio.gather(*(provider.add_txt(name, v) for v in values))
    assert await pdns.query_txt(name) == set(values)
    await asyncio.gather(*(provider.remove_txt(name, v) for v in values[:3]))
    assert await pdns.query_txt(name) == set(values[3:])
    await asyncio.gather(*(provider.remove_txt(name, v) for v in values[3:]))
    assert await pdns.query_txt(name) == set()
    assert provider._locks == {}


@pytest.mark.system
async def test_zone_found_by_walking_up_the_labels(
    pdns: PowerDns,
    provider: PowerDnsProvider,
) -> None:
    pdns.create_zone("deep.example.test")
    name, value = "_acme-challenge.www.deep.example.test", make_value()
    await provider.add_txt(name, value)
    try:
        # The deepest zone wins over its parent.
        assert txt_rrset(pdns, "deep.example.test", name) is not None
        assert txt_rrset(pdns, "example.test", name) is None
        assert await pdns.query_txt(name) == {value}
    finally:
        await provider.remove_txt(name, value)
    assert await pdns.query_txt(name) == set()


@pytest.mark.system
async def test_name_in_no_zone(provider: PowerDnsProvider) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.add_txt("_acme-challenge.example.invalid", make_value())
    assert "no zone" in info.value.message
    assert info.value.hint is not None
    assert "POWERDNS_ZONE" in info.value.hint


@pytest.mark.system
async def test_explicit_zone_is_used_without_walking(pdns: PowerDns) -> None:
    pdns.create_zone("other.example.test")
    p = provider_for(pdns, POWERDNS_ZONE="Example.Test.")
    name, value = "_acme-challenge.www.other.example.test", make_value()
    try:
        await p.add_txt(name, value)
        # Walking would have picked other.example.test; the setting wins.
        assert txt_rrset(pdns, "example.test", name) is not None
        assert txt_rrset(pdns, "other.example.test", name) is None
        await p.remove_txt(name, value)
        assert txt_rrset(pdns, "example.test", name) is None
        with pytest.raises(ProviderError, match="not inside POWERDNS_ZONE"):
            await p.add_txt("_acme-challenge.example.org", make_value())
    finally:
        await p.aclose()


@pytest.mark.system
async def test_explicit_zone_missing(pdns: PowerDns) -> None:
    p = provider_for(pdns, POWERDNS_ZONE="missing.test")
    try:
        with pytest.raises(ProviderError) as info:
            await p.add_txt("_acme-challenge.missing.test", make_value())
        assert "zone missing.test not found" in info.value.message
        assert info.value.hint is not None
    finally:
        await p.aclose()


@pytest.mark.system
async def test_wrong_server_id_is_404_with_hint(pdns: PowerDns) -> None:
    p = provider_for(pdns, POWERDNS_SERVER_ID="nope")
    try:
        with pytest.raises(ProviderError) as info:
            await p.add_txt("_acme-challenge.example.test", make_value())
        assert "404" in info.value.message
        assert info.value.hint is not None
        assert "POWERDNS_SERVER_ID" in info.value.hint
    finally:
        await p.aclose()


@pytest.mark.system
async def test_refusal_shows_powerdns_error_text(
    pdns: PowerDns,
    provider: PowerDnsProvider,
) -> None:
    name = "_acme-challenge.alias.example.org"
    response = pdns.api(
        "PATCH",
        "/example.org.",
        json={
            "rrsets": [
                {
                    "name": name + ".",
                    "type": "CNAME",
                    "ttl": 60,
                    "changetype": "REPLACE",
                    "records": [{"content": "elsewhere.example.test.", "disabled": False}],
                }
            ]
        },
    )
    assert response.status_code == 204, response.text
    with pytest.raises(ProviderError) as info:
        await provider.add_txt(name, make_value())
    assert "Conflicts with pre-existing RRset" in info.value.message


@pytest.mark.system
async def test_no_secret_in_logs(
    pdns: PowerDns,
    provider: PowerDnsProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name, value = "_acme-challenge.logs.example.test", make_value()
    await provider.add_txt(name, value)
    await provider.remove_txt(name, value)
    assert "added a TXT value" in caplog.text
    assert pdns.api_key not in caplog.text
    assert pdns.api_key not in repr(provider.settings)


# --- network failures ---------------------------------------------------------


class FlakyPdns:
    """Answers the three calls an add makes; PATCH fails with HTTP 500 the first *failures* times.

    Pins the provider's retry of server errors, which the sqlite3 backend needs
    ("database is locked") but a real server shows only by chance.
    """

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.patches = 0
        self.unexpected: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        zones = "/api/v1/servers/localhost/zones"
        if request.headers.get("X-API-Key") != "k":
            self.unexpected.append(f"bad key on {request.method} {request.path}")
            return web.Response(status=401)
        if request.method == "GET" and request.path == zones:
            name = request.query.get("zone")
            found = name == "example.test."
            return web.json_response([{"id": name, "name": name}] if found else [])
        if request.method == "GET" and request.path == zones + "/example.test.":
            return web.json_response({"name": "example.test.", "rrsets": []})
        if request.method == "PATCH" and request.path == zones + "/example.test.":
            body = await request.json()
            (rrset,) = body["rrsets"]
            if rrset["changetype"] != "REPLACE" or rrset["type"] != "TXT":
                self.unexpected.append(f"PATCH {body}")
            self.patches += 1
            if self.patches <= self.failures:
                return web.json_response({"error": "database is locked (5)"}, status=500)
            return web.Response(status=204)
        self.unexpected.append(f"{request.method} {request.path_qs}")
        return web.Response(status=404)


@pytest.fixture
async def flaky_pdns(request: pytest.FixtureRequest) -> AsyncIterator[tuple[FlakyPdns, str]]:
    fake = FlakyPdns(failures=request.param)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()
    assert fake.unexpected == []


@pytest.mark.parametrize("flaky_pdns", [2], indirect=True)
async def test_server_errors_are_retried(flaky_pdns: tuple[FlakyPdns, str]) -> None:
    fake, url = flaky_pdns
    p = build({"POWERDNS_API_URL": url, "POWERDNS_API_KEY": "k"})
    try:
        await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()
    assert fake.patches == 3


@pytest.mark.parametrize("flaky_pdns", [99], indirect=True)
async def test_server_errors_give_up(flaky_pdns: tuple[FlakyPdns, str]) -> None:
    fake, url = flaky_pdns
    p = build({"POWERDNS_API_URL": url, "POWERDNS_API_KEY": "k"})
    try:
        with pytest.raises(ProviderError, match=r"HTTP 500: database is locked \(5\)"):
            await p.add_txt("_acme-challenge.example.test", make_value())
    finally:
        await p.aclose()
    assert fake.patches == 3


async def test_connection_refused_is_provider_error() -> None:
    p = build({"POWERDNS_API_URL": f"http://127.0.0.1:{free_port()}", "POWERDNS_API_KEY": "k"})
    try:
        with pytest.raises(ProviderError) as info:
            await p.add_txt("_acme-challenge.example.test", make_value())
        assert not isinstance(info.value, ProviderTimeout)
        assert "cannot reach" in info.value.message
    finally:
        await p.aclose()


async def test_silent_server_is_timeout() -> None:
    connected = asyncio.Event()

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connected.set()
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = build(
        {
            "POWERDNS_API_URL": f"http://127.0.0.1:{port}",
            "POWERDNS_API_KEY": "k",
            "POWERDNS_TIMEOUT": "300ms",
        }
    )
    try:
        with pytest.raises(ProviderTimeout) as info:
            await asyncio.wait_for(p.add_txt("_acme-challenge.example.test", make_value()), 5)
        assert connected.is_set()
        assert "0.3s" in info.value.message
    finally:
        await p.aclose()
        server.close()
        await server.wait_closed()


# --- proxy ------------------------------------------------------------------


class ForwardProxy:
    """An HTTP forward proxy on loopback that records each absolute-form request it relays."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._client = aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=10)
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _relay(self, request: web.Request) -> web.Response:
        target = request.raw_path
        if not target.startswith("http://"):
            # A client that talks to the proxy as if it were the origin is a bug.
            self.seen.append(f"NOT ABSOLUTE: {target}")
            return web.Response(status=400, text="forward proxy wants absolute-form targets")
        self.seen.append(f"{request.method} {target}")
        hop_by_hop = {
            "host",
            "connection",
            "proxy-connection",
            "keep-alive",
            "proxy-authorization",
            "transfer-encoding",
            "content-length",
        }
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop_by_hop}
        assert self._client is not None
        async with self._client.request(
            request.method, URL(target, encoded=True), headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            return web.Response(
                status=upstream.status, body=body, content_type=upstream.content_type
            )


@pytest.fixture
async def forward_proxy() -> AsyncIterator[ForwardProxy]:
    proxy = ForwardProxy()
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@pytest.mark.system
async def test_requests_go_through_all_proxy(
    pdns: PowerDns,
    forward_proxy: ForwardProxy,
) -> None:
    p = provider_for(pdns, ALL_PROXY=forward_proxy.url)
    name, value = "_acme-challenge.proxied.example.test", make_value()
    try:
        await p.add_txt(name, value)
        assert await pdns.query_txt(name) == {value}
        await p.remove_txt(name, value)
    finally:
        await p.aclose()
    assert forward_proxy.seen, "nothing went through the proxy"
    assert all(
        line.split(" ", 1)[1].startswith(pdns.api_url + "/api/v1/") for line in forward_proxy.seen
    ), forward_proxy.seen
    assert any(line.startswith("PATCH ") for line in forward_proxy.seen)


@pytest.mark.system
async def test_no_proxy_bypasses_the_proxy(
    pdns: PowerDns,
    forward_proxy: ForwardProxy,
) -> None:
    p = provider_for(pdns, ALL_PROXY=forward_proxy.url, NO_PROXY="127.0.0.1")
    name, value = "_acme-challenge.direct.example.test", make_value()
    try:
        await p.add_txt(name, value)
        assert await pdns.query_txt(name) == {value}
        await p.remove_txt(name, value)
    finally:
        await p.aclose()
    assert forward_proxy.seen == []


# --- settings ---------------------------------------------------------------


def test_missing_settings_are_all_reported() -> None:
    settings = Settings({"POWERDNS_TTL": "0", "POWERDNS_TIMEOUT": "soon"})
    PowerDnsProvider.from_settings(settings, ProviderContext())
    text = "\n".join(settings.problems)
    assert "POWERDNS_API_URL is required" in text
    assert "POWERDNS_API_KEY" in text
    assert "POWERDNS_TTL" in text
    assert "POWERDNS_TIMEOUT" in text
    assert len(settings.problems) == 4


def test_bad_url_and_proxy_are_problems() -> None:
    settings = Settings(
        {
            "POWERDNS_API_URL": "127.0.0.1:8081",
            "POWERDNS_API_KEY": "k",
            "ALL_PROXY": "socks5://127.0.0.1:1080",
        }
    )
    PowerDnsProvider.from_settings(settings, ProviderContext())
    assert any("POWERDNS_API_URL" in p for p in settings.problems)
    assert any("only http:// and https:// proxies" in p for p in settings.problems)


def test_defaults_and_normalisation() -> None:
    p = build(
        {
            "POWERDNS_API_URL": "http://pdns.example:8081/api/v1/",
            "POWERDNS_API_KEY": "k",
            "POWERDNS_ZONE": "Example.ORG.",
        }
    )
    assert p.settings.api_url == "http://pdns.example:8081"
    assert p.settings.server_id == "localhost"
    assert p.settings.zone == "example.org"
    assert p.settings.ttl == 60
    assert p.settings.timeout == 10.0


def test_key_from_file_and_hidden_from_repr(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret-key\n")
    p = build({"POWERDNS_API_URL": "http://127.0.0.1:8081", "POWERDNS_API_KEY_FILE": str(key_file)})
    assert p.settings.api_key == "s3cret-key"
    assert "s3cret-key" not in repr(p.settings)


def test_key_and_key_file_together_is_a_problem(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("a")
    settings = Settings(
        {
            "POWERDNS_API_URL": "http://127.0.0.1:8081",
            "POWERDNS_API_KEY": "b",
            "POWERDNS_API_KEY_FILE": str(key_file),
        }
    )
    PowerDnsProvider.from_settings(settings, ProviderContext())
    assert settings.problems == [
        "POWERDNS_API_KEY and POWERDNS_API_KEY_FILE are both set; keep one"
    ]


def test_the_zone_setting_is_normalised_like_every_name() -> None:
    base = {"POWERDNS_API_URL": "http://127.0.0.1:8081", "POWERDNS_API_KEY": "k"}
    settings = Settings({**base, "POWERDNS_ZONE": "Bücher.Example."})
    provider = PowerDnsProvider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    assert provider.settings.zone == "xn--bcher-kva.example"
    for bad in ("*.example.test", "a..example.test", "exa mple.test"):
        settings = Settings({**base, "POWERDNS_ZONE": bad})
        PowerDnsProvider.from_settings(settings, ProviderContext())
        assert len(settings.problems) == 1, settings.problems
        assert settings.problems[0].startswith(f"POWERDNS_ZONE={bad!r} is not a zone name: ")


def test_registry_finds_the_provider() -> None:
    settings = Settings(
        {
            "PROVIDER": "powerdns",
            "POWERDNS_API_URL": "http://127.0.0.1:8081",
            "POWERDNS_API_KEY": "k",
        }
    )
    provider = create_provider(settings, ProviderContext())
    assert settings.problems == []
    assert isinstance(provider, PowerDnsProvider)


# --- TXT content ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ('"abc"', "abc"),
        ('"ab" "cd"', "abcd"),
        ('"a\\"b\\\\c"', 'a"b\\c'),
        ('"a\\032b"', "a b"),
        ("bare", "bare"),
    ],
)
def test_unquote_txt(content: str, text: str) -> None:
    assert unquote_txt(content) == text


def test_quote_round_trip() -> None:
    for text in (make_value(), 'with "quotes" and \\ backslash', ""):
        assert unquote_txt(quote_txt(text)) == text
    assert quote_txt("abc") == '"abc"'
