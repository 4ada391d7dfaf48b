"""The rfc2136 provider against a real BIND 9 (tests/servers/bind.py).

The contract suite runs against a primary serving example.test and example.org
whose keys may change TXT only at listed ``_acme-challenge`` names; ``served``
asks that server directly (no recursion). Settings validation needs no server.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import pytest

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError, ProviderTimeout
from providers.rfc2136 import Rfc2136Provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served, opened
from tests.servers.bind import ALGORITHMS, BindServer, bind_primary  # noqa: F401
from tests.system import free_port, need_program

system = pytest.mark.system


def make_provider(server: BindServer, algorithm: str = "hmac-sha256",
                  **overrides: str) -> Rfc2136Provider:
    key = server.keys[algorithm]
    values = {
        "RFC2136_SERVER": server.host,
        "RFC2136_PORT": str(server.port),
        "RFC2136_TSIG_KEY_NAME": key.name,
        "RFC2136_TSIG_SECRET": key.secret,
        "RFC2136_TSIG_ALGORITHM": algorithm,
        "RFC2136_TIMEOUT": "3",
    }
    values.update(overrides)
    settings = Settings({k: v for k, v in values.items() if v is not None})
    provider = Rfc2136Provider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    return provider


@pytest.fixture
async def provider(bind_primary: BindServer) -> AsyncIterator[Rfc2136Provider]:  # noqa: F811
    async with opened(make_provider(bind_primary)) as p:
        yield p


@pytest.fixture
def served(bind_primary: BindServer) -> Served:  # noqa: F811
    return bind_primary.query_txt


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


def wrong_secret(secret: str) -> str:
    raw = bytearray(base64.b64decode(secret))
    raw[0] ^= 0xFF
    return base64.b64encode(bytes(raw)).decode()


@pytest.fixture
def broken_provider(bind_primary: BindServer) -> Rfc2136Provider:  # noqa: F811
    return make_provider(bind_primary,
                         RFC2136_TSIG_SECRET=wrong_secret(bind_primary.key.secret))


@pytest.fixture
async def twin_provider(bind_primary: BindServer) -> AsyncIterator[Rfc2136Provider]:  # noqa: F811
    async with opened(make_provider(bind_primary)) as p:
        yield p


@system
class TestRfc2136Contract(ProviderContract):
    pass


@system
@pytest.mark.parametrize("algorithm", ALGORITHMS)
async def test_each_tsig_algorithm(bind_primary: BindServer, algorithm: str) -> None:  # noqa: F811
    provider = make_provider(bind_primary, algorithm)
    name, value = "_acme-challenge.sub.example.org", make_value()
    await provider.add_txt(name, value)
    assert value in await bind_primary.query_txt(name)
    await provider.remove_txt(name, value)
    assert value not in await bind_primary.query_txt(name)


@system
async def test_wrong_secret_says_badsig_without_the_secret(bind_primary: BindServer) -> None:  # noqa: F811
    bad = wrong_secret(bind_primary.key.secret)
    # With the zone given, the failure comes from the UPDATE itself, not the SOA query.
    for zone in ("", "example.test"):
        provider = make_provider(bind_primary, RFC2136_TSIG_SECRET=bad, RFC2136_ZONE=zone)
        with pytest.raises(ProviderError) as info:
            await provider.add_txt("_acme-challenge.example.test", make_value())
        text = str(info.value)
        assert "BADSIG" in text and "RFC2136_TSIG_SECRET" in text
        assert bad not in text and bind_primary.key.secret not in text


@system
async def test_wrong_algorithm_or_key_name_says_badkey(bind_primary: BindServer) -> None:  # noqa: F811
    for override in ({"RFC2136_TSIG_ALGORITHM": "hmac-sha512"},
                     {"RFC2136_TSIG_KEY_NAME": "no-such-key."}):
        provider = make_provider(bind_primary, **override)
        with pytest.raises(ProviderError, match="BADKEY"):
            await provider.add_txt("_acme-challenge.example.test", make_value())


@system
async def test_name_outside_update_policy_is_refused_with_hint(bind_primary: BindServer) -> None:  # noqa: F811
    provider = make_provider(bind_primary)
    with pytest.raises(ProviderError, match=r"refused.*update-policy"):
        await provider.add_txt("_acme-challenge.other.example.test", make_value())
    unsigned = Rfc2136Provider.from_settings(
        Settings({"RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": str(bind_primary.port)}),
        ProviderContext())
    with pytest.raises(ProviderError, match="refused"):
        await unsigned.add_txt("_acme-challenge.example.test", make_value())


@system
async def test_zone_from_soa_is_found_and_cached(bind_primary: BindServer) -> None:  # noqa: F811
    provider = make_provider(bind_primary)
    exchanges = 0
    original = provider._exchange

    async def counting(message: dns.message.Message, what: str) -> dns.message.Message:
        nonlocal exchanges
        exchanges += 1
        return await original(message, what)

    provider._exchange = counting  # type: ignore[method-assign]
    name = "_acme-challenge.www.example.org"
    assert await provider._zone_of(name) == dns.name.from_text("example.org")
    first = exchanges
    assert first >= 1
    assert await provider._zone_of(name) == dns.name.from_text("example.org")
    assert exchanges == first


@system
async def test_configured_zone_is_used_as_given(bind_primary: BindServer) -> None:  # noqa: F811
    name, value = "_acme-challenge.www.example.test", make_value()
    provider = make_provider(bind_primary, RFC2136_ZONE="example.test")
    await provider.add_txt(name, value)
    assert value in await bind_primary.query_txt(name)
    await provider.remove_txt(name, value)
    with pytest.raises(ProviderError, match="not in RFC2136_ZONE"):
        await provider.add_txt("_acme-challenge.example.org", value)
    # A zone the server does not have proves no SOA lookup overrode the setting.
    wrong = make_provider(bind_primary, RFC2136_ZONE="test")
    with pytest.raises(ProviderError, match="NOTAUTH"):
        await wrong.add_txt(name, value)


@system
async def test_cname_name_is_refused_naming_the_target(bind_primary: BindServer) -> None:  # noqa: F811
    provider = make_provider(bind_primary)
    with pytest.raises(ProviderError, match=r"CNAME to _acme-challenge\.www\.example\.org"):
        await provider.add_txt("_acme-challenge.alias.example.test", make_value())


@system
async def test_unknown_zone_is_an_error(bind_primary: BindServer) -> None:  # noqa: F811
    provider = make_provider(bind_primary)
    with pytest.raises(ProviderError, match="not authoritative"):
        await provider.add_txt("_acme-challenge.example.net", make_value())


@system
async def test_long_value_is_split_and_removed_exactly(bind_primary: BindServer) -> None:  # noqa: F811
    provider = make_provider(bind_primary)
    name, value = "_acme-challenge.sub.example.test", 'a "quoted" value; ' + "x" * 300
    await provider.add_txt(name, value)
    assert value in await bind_primary.query_txt(name)
    await provider.remove_txt(name, value)
    assert value not in await bind_primary.query_txt(name)


@system
async def test_dig_sees_both_values(bind_primary: BindServer) -> None:  # noqa: F811
    dig = need_program("dig", "bind9-dnsutils")
    provider = make_provider(bind_primary)
    name, v1, v2 = "_acme-challenge.www.example.test", make_value(), make_value()
    await provider.add_txt(name, v1)
    await provider.add_txt(name, v2)
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [dig, "+short", "+norecurse", "-p", str(bind_primary.port), "@127.0.0.1", name, "TXT"],
            capture_output=True, text=True, timeout=10, check=True)
        assert sorted(done.stdout.split()) == sorted([f'"{v1}"', f'"{v2}"'])
    finally:
        await provider.remove_txt(name, v1)
        await provider.remove_txt(name, v2)


def closed_settings(port: int, timeout: str = "0.3") -> Settings:
    return Settings({"RFC2136_SERVER": "127.0.0.1", "RFC2136_PORT": str(port),
                     "RFC2136_TSIG_KEY_NAME": "k.", "RFC2136_TSIG_SECRET": "c2VjcmV0",
                     "RFC2136_TIMEOUT": timeout, "RFC2136_ZONE": "example.test"})


async def test_closed_port_is_a_provider_error() -> None:
    provider = Rfc2136Provider.from_settings(closed_settings(free_port()), ProviderContext())
    with pytest.raises(ProviderError, match="refused the connection"):
        await provider.add_txt("_acme-challenge.example.test", make_value())


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where UDP datagrams vanish and TCP connects but never gets an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        port = free_port()
        udp.bind(("127.0.0.1", port))
        tcp.bind(("127.0.0.1", port))
        tcp.listen(4)
        yield port


async def test_silent_server_is_a_timeout(silent_port: int) -> None:
    provider = Rfc2136Provider.from_settings(closed_settings(silent_port), ProviderContext())
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(ProviderTimeout, match=r"did not answer within 0\.3s"):
        await provider.remove_txt("_acme-challenge.example.test", make_value())
    # UDP and TCP each get the timeout once: bounded by twice RFC2136_TIMEOUT.
    assert loop.time() - start < 2.0


def test_every_settings_problem_is_listed_at_once() -> None:
    secret = "not base64 at all!"
    settings = Settings({
        "RFC2136_PORT": "99999",
        "RFC2136_TSIG_KEY_NAME": "acme-key.",
        "RFC2136_TSIG_SECRET": secret,
        "RFC2136_TSIG_ALGORITHM": "hmac-md4",
        "RFC2136_ZONE": "bad..zone",
        "RFC2136_TTL": "-1",
        "RFC2136_TIMEOUT": "forever",
    })
    Rfc2136Provider.from_settings(settings, ProviderContext())
    text = "\n".join(settings.problems)
    for key in ("RFC2136_SERVER", "RFC2136_PORT", "RFC2136_TSIG_SECRET",
                "RFC2136_TSIG_ALGORITHM", "RFC2136_ZONE", "RFC2136_TTL", "RFC2136_TIMEOUT"):
        assert key in text, key
    assert len(settings.problems) == 7
    assert secret not in text


@pytest.mark.parametrize(("values", "expected"), [
    ({"RFC2136_TSIG_KEY_NAME": "acme-key."},
     "RFC2136_TSIG_SECRET (or RFC2136_TSIG_SECRET_FILE) is not"),
    ({"RFC2136_TSIG_SECRET": "c2VjcmV0"}, "RFC2136_TSIG_KEY_NAME is not"),
    ({"RFC2136_TSIG_KEY_NAME": "k.", "RFC2136_TSIG_SECRET": "===="}, "not valid base64"),
    ({"RFC2136_SERVER": "not a host!"}, "neither an IP address nor a host name"),
    # normalize_name would drop "*." (a certificate identifier's), leaving example.test.
    ({"RFC2136_ZONE": "*.example.test"}, "RFC2136_ZONE='*.example.test' is not a zone name"),
])
def test_single_settings_problems(values: dict[str, str], expected: str) -> None:
    settings = Settings({"RFC2136_SERVER": "192.0.2.1", **values})
    Rfc2136Provider.from_settings(settings, ProviderContext())
    assert len(settings.problems) == 1
    assert expected in settings.problems[0]


def test_secret_file_and_defaults(tmp_path: Path) -> None:
    secret_file = tmp_path / "tsig.secret"
    secret_file.write_text("c2VjcmV0IGtleSBieXRlcw==\n")
    settings = Settings({"RFC2136_SERVER": "[2001:db8::1]", "RFC2136_TSIG_KEY_NAME": "acme-key",
                         "RFC2136_TSIG_SECRET_FILE": str(secret_file)})
    provider = Rfc2136Provider.from_settings(settings, ProviderContext())
    assert settings.problems == []
    s = provider.settings
    assert (s.server, s.port, s.ttl, s.timeout, s.zone) == ("2001:db8::1", 53, 60, 10.0, None)
    assert s.tsig is not None
    assert (s.tsig.algorithm, s.tsig.secret) == ("hmac-sha256", "c2VjcmV0IGtleSBieXRlcw==")
    assert "c2VjcmV0" not in repr(s)


def test_loads_through_the_registry() -> None:
    from providers.registry import create_provider

    settings = Settings({"PROVIDER": "rfc2136", "RFC2136_SERVER": "192.0.2.1",
                         "RFC2136_TSIG_KEY_NAME": "k", "RFC2136_TSIG_SECRET": "c2VjcmV0",
                         "RFC2136_TSIG_ALGORITHM": "HMAC-SHA512"})
    provider = create_provider(settings, ProviderContext())
    assert settings.problems == []
    assert isinstance(provider, Rfc2136Provider)
    assert provider.settings.tsig is not None
    assert provider.settings.tsig.algorithm == "hmac-sha512"
