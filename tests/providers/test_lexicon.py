"""The lexicon provider: dns-lexicon's ``powerdns`` against a real PowerDNS, its ``cloudflare``
against the Cloudflare fake.

The contract suite runs twice: through lexicon's ``powerdns`` provider against
the pdns_server of tests/servers/pdns.py (``served`` asks its DNS port), and
through lexicon's ``cloudflare`` provider against the in-process Cloudflare fake
(tests/providers/fake_cloudflare.py, built from Cloudflare's API documentation
and checking every request), which ``LEXICON_API_URL`` points lexicon at. The
other tests use the fake: zone finding, the proxy, deadlines, the guard against
providers that replace a whole RRset (played by patching lexicon's cloudflare
provider), secrets in errors, and settings. dns-lexicon is an optional extra;
without it these tests skip, and fail under ``REQUIRE_SYSTEM_TESTS=1``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError, ProviderTimeout
from providers.lexicon import WORKERS, LexiconProvider
from providers.registry import create_provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served, opened
from tests.providers.fake_cloudflare import FakeCloudflare, running_fake
from tests.providers.forward_proxy import ForwardProxy
from tests.servers.pdns import PowerDns, pdns_server  # noqa: F401
from tests.system import unavailable

TOKEN = "Ab0-test-token-with-forty-characters-xyz"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def lexicon_installed() -> None:
    try:
        import lexicon  # noqa: F401
    except ImportError:
        unavailable("dns-lexicon is not installed (pip install -e '.[test,lexicon]')")


def build(values: dict[str, str], timeout: float = 20.0) -> LexiconProvider:
    settings = Settings(values)
    provider = LexiconProvider.from_settings(settings, ProviderContext(timeout=timeout))
    assert settings.problems == []
    assert settings.warnings == []
    return provider


# --- lexicon's powerdns provider against a real PowerDNS ---------------------


def pdns_settings(pdns: PowerDns, **extra: str) -> dict[str, str]:
    return {
        "LEXICON_PROVIDER": "powerdns",
        "LEXICON_POWERDNS_AUTH_TOKEN": pdns.api_key,
        "LEXICON_POWERDNS_PDNS_SERVER": pdns.api_url,
        "LEXICON_ZONE": "example.test, example.org",
        **extra,
    }


@pytest.mark.system
class TestLexiconPowerDnsContract(ProviderContract):
    @pytest.fixture
    async def provider(self, pdns_server: PowerDns) -> AsyncIterator[LexiconProvider]:  # noqa: F811
        async with opened(build(pdns_settings(pdns_server))) as p:
            yield p

    @pytest.fixture
    async def twin_provider(self, pdns_server: PowerDns) -> AsyncIterator[LexiconProvider]:  # noqa: F811
        async with opened(build(pdns_settings(pdns_server))) as p:
            yield p

    @pytest.fixture
    def served(self, pdns_server: PowerDns) -> Served:  # noqa: F811
        return pdns_server.query_txt

    @pytest.fixture
    async def broken_provider(self, pdns_server: PowerDns) -> AsyncIterator[LexiconProvider]:  # noqa: F811
        settings = pdns_settings(pdns_server, LEXICON_POWERDNS_AUTH_TOKEN="wrong")
        async with opened(build(settings)) as p:
            yield p


@pytest.mark.system
async def test_powerdns_keeps_foreign_records(pdns_server: PowerDns) -> None:  # noqa: F811
    name = "_acme-challenge.www.example.org"
    pdns_server.api("PATCH", "/example.org.", json={"rrsets": [{
        "name": name + ".", "type": "TXT", "ttl": 300, "changetype": "REPLACE",
        "records": [{"content": '"set by hand"', "disabled": False}]}]}).raise_for_status()
    async with opened(build(pdns_settings(pdns_server))) as provider:
        value = make_value()
        await provider.add_txt(name, value)
        assert await pdns_server.query_txt(name) == {"set by hand", value}
        await provider.remove_txt(name, value)
    assert await pdns_server.query_txt(name) == {"set by hand"}
    pdns_server.api("PATCH", "/example.org.", json={"rrsets": [{
        "name": name + ".", "type": "TXT", "changetype": "DELETE"}]}).raise_for_status()


# --- lexicon's cloudflare provider against the fake --------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloudflare]:
    async with running_fake(TOKEN) as api:
        yield api


def cf_settings(fake: FakeCloudflare, **extra: str) -> dict[str, str]:
    return {
        "LEXICON_PROVIDER": "cloudflare",
        "LEXICON_CLOUDFLARE_AUTH_TOKEN": TOKEN,
        "LEXICON_API_URL": fake.url,
        "LEXICON_ZONE": "example.test,example.org,sub.example.org",
        **extra,
    }


class TestLexiconCloudflareContract(ProviderContract):
    @pytest.fixture
    async def provider(self, fake: FakeCloudflare) -> AsyncIterator[LexiconProvider]:
        async with opened(build(cf_settings(fake))) as p:
            yield p

    @pytest.fixture
    async def twin_provider(self, fake: FakeCloudflare) -> AsyncIterator[LexiconProvider]:
        async with opened(build(cf_settings(fake))) as p:
            yield p

    @pytest.fixture
    def served(self, fake: FakeCloudflare) -> Served:
        async def read(fqdn: str) -> set[str]:
            return fake.served(fqdn)

        return read

    @pytest.fixture
    async def broken_provider(self, fake: FakeCloudflare) -> AsyncIterator[LexiconProvider]:
        settings = cf_settings(fake, LEXICON_CLOUDFLARE_AUTH_TOKEN="not-the-right-token")
        async with opened(build(settings)) as p:
            yield p


async def test_records_written_by_the_native_provider_are_found(fake: FakeCloudflare) -> None:
    # The native provider quotes TXT content; lexicon sends it bare: both are one value.
    name, value = "_acme-challenge.example.test", make_value()
    fake.add_record(name, f'"{value}"')
    async with opened(build(cf_settings(fake))) as provider:
        await provider.add_txt(name, value)
        assert [m for m, _ in fake.requests if m == "POST"] == []
        await provider.remove_txt(name, value)
    assert fake.served(name) == set()


async def test_zone_by_public_suffix_list_and_delegation(fake: FakeCloudflare) -> None:
    settings = cf_settings(fake)
    del settings["LEXICON_ZONE"]
    name, value = "_acme-challenge.www.sub.example.org", make_value()
    async with opened(build(settings)) as provider:
        await provider.add_txt(name, value)
    # The registered domain, as lexicon finds it: example.org, not the deeper zone.
    assert value in {r.content for r in fake.zone_named("example.org").records.values()}
    async with opened(build({**settings, "LEXICON_DELEGATED": "sub"})) as provider:
        await provider.add_txt(name, value)
        assert value in {r.content for r in fake.zone_named("sub.example.org").records.values()}
        await provider.remove_txt(name, value)
    async with opened(build(settings)) as provider:
        await provider.remove_txt(name, value)
        with pytest.raises(ProviderError) as info:
            await provider.add_txt("_acme-challenge.example.test", value)
    assert "public suffix list" in str(info.value)
    assert info.value.hint == "set LEXICON_ZONE"


async def test_name_outside_the_zones(fake: FakeCloudflare) -> None:
    async with opened(build(cf_settings(fake, LEXICON_ZONE="example.test"))) as provider:
        with pytest.raises(ProviderError, match="in none of LEXICON_ZONE"):
            await provider.add_txt("_acme-challenge.example.org", make_value())


async def test_errors_name_host_and_change_without_the_secret(fake: FakeCloudflare,
                                                              tmp_path: Path) -> None:
    wrong = "wrong-token-that-must-stay-secret"
    token_file = tmp_path / "token"
    token_file.write_text(wrong + "\n")
    settings = cf_settings(fake)
    del settings["LEXICON_CLOUDFLARE_AUTH_TOKEN"]
    settings["LEXICON_CLOUDFLARE_AUTH_TOKEN_FILE"] = str(token_file)
    fake.token = wrong + "-not"  # the fake echoes nothing, but a proxy or server might
    async with opened(build(settings)) as provider:
        with pytest.raises(ProviderError) as info:
            await provider.add_txt("_acme-challenge.example.org", make_value())
    text = str(info.value)
    assert text.startswith("lexicon/cloudflare: add TXT at _acme-challenge.example.org: HTTP 403")
    assert "127.0.0.1" in text  # the API host
    assert "\n" not in text
    assert wrong not in text
    assert info.value.hint is not None and "LEXICON_CLOUDFLARE_*" in info.value.hint


async def test_secrets_in_lexicon_messages_are_scrubbed(fake: FakeCloudflare,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import lexicon._private.providers.cloudflare as cloudflare

    def leaky(self: Any) -> None:
        raise RuntimeError(f"login failed for token {self._get_provider_option('auth_token')}")

    monkeypatch.setattr(cloudflare.Provider, "authenticate", leaky)
    async with opened(build(cf_settings(fake))) as provider:
        with pytest.raises(ProviderError) as info:
            await provider.remove_txt("_acme-challenge.example.org", make_value())
    assert "login failed for token ***" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_requests_go_through_the_proxy(fake: FakeCloudflare) -> None:
    proxy = ForwardProxy()
    await proxy.start()
    try:
        settings = cf_settings(fake, ALL_PROXY=proxy.url)
        async with opened(build(settings)) as provider:
            value = make_value()
            await provider.add_txt("_acme-challenge.example.org", value)
            await provider.remove_txt("_acme-challenge.example.org", value)
        assert len(proxy.forwarded) == len(fake.requests) > 0
        # NO_PROXY: straight to the API.
        before = len(proxy.forwarded)
        async with opened(build({**settings, "NO_PROXY": "127.0.0.1"})) as provider:
            await provider.add_txt("_acme-challenge.example.org", value)
        assert len(proxy.forwarded) == before
    finally:
        await proxy.close()


def lexicon_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("lexicon-"))


async def test_a_slow_api_times_out_and_threads_stay_bounded(fake: FakeCloudflare) -> None:
    fake.delay = 3.0
    async with opened(build(cf_settings(fake), timeout=0.5)) as provider:
        most = 0

        async def watch() -> None:
            nonlocal most
            while True:
                most = max(most, lexicon_threads())
                await asyncio.sleep(0.01)

        watcher = asyncio.ensure_future(watch())
        calls = [provider.add_txt("_acme-challenge.example.org", make_value()) for _ in range(10)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        watcher.cancel()
    assert all(isinstance(r, ProviderTimeout) for r in results), results
    assert "add TXT at _acme-challenge.example.org" in str(results[0])
    assert 0 < most <= WORKERS
    # Each thread ends at its request's deadline, not when the fake gets round to answering.
    for _ in range(200):
        if lexicon_threads() == 0:
            break
        await asyncio.sleep(0.05)
    assert lexicon_threads() == 0


def replace_rrset_on_create(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make lexicon's cloudflare provider behave like one that sets whole RRsets."""
    import lexicon._private.providers.cloudflare as cloudflare

    create = cloudflare.Provider.create_record

    def replacing(self: Any, rtype: str, name: str, content: str) -> bool:
        for record in self.list_records(rtype, name):
            self.delete_record(identifier=record["id"])
        return bool(create(self, rtype, name, content))

    monkeypatch.setattr(cloudflare.Provider, "create_record", replacing)


async def test_a_provider_that_replaces_the_rrset_is_caught(
    fake: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, theirs, mine = "_acme-challenge.example.org", make_value(), make_value()
    async with opened(build(cf_settings(fake))) as provider:
        await provider.add_txt(name, theirs)  # a single value: no harm done
        replace_rrset_on_create(monkeypatch)
        with pytest.raises(ProviderError) as info:
            await provider.add_txt(name, mine)
    assert "took 1 other value(s) with it (written back)" in str(info.value)
    assert "cannot keep two values at one name" in str(info.value)
    assert theirs in fake.served(name)


async def test_a_provider_that_deletes_the_rrset_is_caught(
    fake: FakeCloudflare, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lexicon._private.providers.cloudflare as cloudflare

    name, theirs, mine = "_acme-challenge.example.org", make_value(), make_value()
    async with opened(build(cf_settings(fake))) as provider:
        await provider.add_txt(name, theirs)
        await provider.add_txt(name, mine)
        delete = cloudflare.Provider.delete_record

        def dropping(self: Any, identifier: str | None = None, rtype: str | None = None,
                     name: str | None = None, content: str | None = None) -> bool:
            for record in self.list_records("TXT"):
                delete(self, identifier=record["id"])
            return True

        monkeypatch.setattr(cloudflare.Provider, "delete_record", dropping)
        with pytest.raises(ProviderError, match="took 1 other value"):
            await provider.remove_txt(name, mine)
    assert fake.served(name) == {theirs}


# --- settings ----------------------------------------------------------------


def problems(values: dict[str, str]) -> tuple[list[str], list[str]]:
    settings = Settings(values)
    LexiconProvider.from_settings(settings, ProviderContext())
    return settings.problems, settings.warnings


def test_settings_problems() -> None:
    assert problems({}) == (
        ["LEXICON_PROVIDER is required: lexicon's name for the DNS host, e.g. cloudflare"], [])
    found, _ = problems({"LEXICON_PROVIDER": "cloudflair"})
    assert found[0].startswith("LEXICON_PROVIDER='cloudflair' is not one of lexicon's "
                               "providers (did you mean cloudflare")
    found, _ = problems({"LEXICON_PROVIDER": "auto"})
    assert "not one of lexicon's providers" in found[0]
    found, _ = problems({"LEXICON_PROVIDER": "route53"})  # boto3 is not installed
    assert found == ["lexicon's route53 provider needs more packages: "
                     "pip install 'dns-lexicon[route53]'"]
    # lexicon's powerdns provider wants its server and token: its own words, at start-up.
    found, _ = problems({"LEXICON_PROVIDER": "powerdns", "LEXICON_ZONE": "*.example.org",
                         "LEXICON_TTL": "0", "LEXICON_API_URL": "ftp://x"})
    text = "\n".join(found)
    for part in ("LEXICON_ZONE: '*.example.org' is not a zone name", "LEXICON_TTL=0",
                 "LEXICON_API_URL='ftp://x'", "refuses its settings",
                 "PowerDNS API endpoint not defined"):
        assert part in text


def test_unknown_options_are_reported_and_lexicons_old_names_work() -> None:
    found, warnings = problems({"LEXICON_PROVIDER": "cloudflare", "LEXICON_CLOUDFLARE_TOKEN": "t",
                                "LEXICON_CLOUDFLARE_ZONEID": "z"})
    assert found == []
    assert warnings == ["LEXICON_CLOUDFLARE_ZONEID: lexicon's cloudflare provider takes no "
                        "such option (it takes LEXICON_CLOUDFLARE_AUTH_TOKEN, "
                        "LEXICON_CLOUDFLARE_AUTH_USERNAME, LEXICON_CLOUDFLARE_ZONE_ID)"]


def test_both_a_secret_and_its_file() -> None:
    found, _ = problems({"LEXICON_PROVIDER": "cloudflare", "LEXICON_CLOUDFLARE_AUTH_TOKEN": "t",
                         "LEXICON_CLOUDFLARE_AUTH_TOKEN_FILE": "/nonexistent"})
    assert "LEXICON_CLOUDFLARE_AUTH_TOKEN and LEXICON_CLOUDFLARE_AUTH_TOKEN_FILE are both set; " \
           "keep one" in found


async def test_loads_through_the_registry(fake: FakeCloudflare) -> None:
    settings = Settings({"PROVIDER": "lexicon", **cf_settings(fake)})
    provider = create_provider(settings, ProviderContext())
    assert settings.problems == []
    assert isinstance(provider, LexiconProvider)
    assert provider.label == "lexicon/cloudflare"
    async with opened(provider):
        await provider.add_txt("_acme-challenge.example.test", make_value())


def test_without_lexicon_the_problem_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lexicon", None)
    monkeypatch.setitem(sys.modules, "lexicon._private.discovery", None)
    found, _ = problems({"LEXICON_PROVIDER": "cloudflare"})
    assert found == ["PROVIDER=lexicon needs dns-lexicon: "
                     "pip install 'acme-dns01-gateway[lexicon]'"]


def test_the_gateway_does_not_import_lexicon() -> None:
    code = ("import sys, gateway.server, gateway.app, providers.registry, providers.cloudflare; "
            "sys.exit('lexicon' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0
