"""The builtin provider's settings: what each one reads, its defaults, and every problem at once."""

from __future__ import annotations

import pytest

from lib.settings import Settings
from providers.base import ProviderContext
from providers.builtin import BuiltinProvider, parse_listen
from providers.registry import create_provider

MANAGED = ("example.test", "example.org")
ZONE = "acme.example.net"


def test_is_volatile() -> None:
    assert BuiltinProvider.volatile is True


# -- settings and start-up -----------------------------------------------------


def _context() -> ProviderContext:
    return ProviderContext(managed_domains=MANAGED)


def test_settings_are_read() -> None:
    settings = Settings(
        {
            "PROVIDER": "builtin",
            "BUILTIN_LISTEN": "0.0.0.0:53, [::]:53,127.0.0.1:5353",
            "BUILTIN_ZONE": "ACME.Example.NET.",
            "BUILTIN_NS": "gw1.example.net gw2.example.net.",
            "BUILTIN_TTL": "30",
        }
    )
    provider = create_provider(settings, _context())
    assert settings.problems == []
    assert isinstance(provider, BuiltinProvider)
    assert provider.settings.listen == (("0.0.0.0", 53), ("::", 53), ("127.0.0.1", 5353))
    assert provider.settings.zone == "acme.example.net"
    assert provider.nameservers == ("gw1.example.net", "gw2.example.net")
    assert provider.settings.ttl == 30


def test_settings_defaults() -> None:
    settings = Settings({})
    provider = BuiltinProvider.from_settings(settings, _context())
    assert settings.problems == []
    assert provider.settings.listen == (("127.0.0.1", 8053),)
    assert provider.settings.zone is None
    assert provider.settings.ttl == 60
    assert provider.nameservers == ("ns.example.test",)
    zoned = BuiltinProvider.from_settings(Settings({"BUILTIN_ZONE": ZONE}), _context())
    assert zoned.nameservers == (f"ns.{ZONE}",)


def test_settings_problems_are_all_listed() -> None:
    settings = Settings(
        {
            "BUILTIN_LISTEN": "localhost:53,127.0.0.1,[127.0.0.1]:53,::1:53,127.0.0.1:70000",
            "BUILTIN_ZONE": "bad zone",
            "BUILTIN_NS": "ok.example.net,-bad-.example.net",
            "BUILTIN_TTL": "0",
        }
    )
    BuiltinProvider.from_settings(settings, ProviderContext())
    text = "\n".join(settings.problems)
    for item in (
        "'localhost:53'",
        "'127.0.0.1'",
        "'[127.0.0.1]:53'",
        "'::1:53'",
        "'127.0.0.1:70000'",
    ):
        assert f"BUILTIN_LISTEN: {item}" in text
    assert "BUILTIN_ZONE='bad zone'" in text
    assert "BUILTIN_NS: '-bad-.example.net'" in text
    assert "BUILTIN_TTL=0 is out of range" in text
    assert len(settings.problems) == 8


def test_nothing_to_serve_is_a_problem() -> None:
    settings = Settings({})
    BuiltinProvider.from_settings(settings, ProviderContext())
    assert settings.problems == [
        "PROVIDER=builtin has nothing to serve: configure managed domains or BUILTIN_ZONE"
    ]


def test_top_level_zone_is_a_problem() -> None:
    settings = Settings({"BUILTIN_ZONE": "net"})
    BuiltinProvider.from_settings(settings, _context())
    assert any("BUILTIN_ZONE='net' is a top-level domain" in p for p in settings.problems)


def test_wildcard_zone_is_a_problem() -> None:
    settings = Settings({"BUILTIN_ZONE": "*.acme.example.test"})
    BuiltinProvider.from_settings(settings, _context())
    assert settings.problems == [
        "BUILTIN_ZONE='*.acme.example.test' is not a zone name: it is a wildcard"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[::]:53", ("::", 53)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


def test_zone_transfer_settings_are_read() -> None:
    settings = Settings(
        {
            "BUILTIN_ZONE": ZONE,
            "BUILTIN_SECONDARIES": "192.0.2.1, 192.0.2.2:5300 [2001:db8::1]:53,2001:db8::2",
            "BUILTIN_TSIG_KEY_NAME": "transfer.",
            "BUILTIN_TSIG_SECRET": "c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
            "BUILTIN_TSIG_ALGORITHM": "hmac-sha512",
        }
    )
    provider = BuiltinProvider.from_settings(settings, ProviderContext(managed_domains=MANAGED))
    assert settings.problems == []
    assert provider.settings.secondaries == (
        ("192.0.2.1", 53), ("192.0.2.2", 5300), ("2001:db8::1", 53), ("2001:db8::2", 53))
    assert provider.settings.tsig is not None
    assert provider.settings.tsig.algorithm == "hmac-sha512"
    assert "c2VjcmV0" not in repr(provider.settings)
    # With secondaries the gateway waits for the zone's nameservers, not for itself.
    assert provider.serves_itself is False
    assert BuiltinProvider.from_settings(
        Settings({"BUILTIN_ZONE": ZONE}), ProviderContext(managed_domains=MANAGED)
    ).serves_itself is True


def test_zone_transfer_problems_are_all_listed() -> None:
    settings = Settings(
        {
            "BUILTIN_SECONDARIES": "secondary.example.net, 192.0.2.1:99999",
            "BUILTIN_TSIG_KEY_NAME": "transfer.",
            "BUILTIN_TSIG_SECRET": "not base64!",
        }
    )
    BuiltinProvider.from_settings(settings, ProviderContext(managed_domains=MANAGED))
    text = "\n".join(settings.problems)
    assert "BUILTIN_SECONDARIES: 'secondary.example.net' is not an IP address" in text
    assert "BUILTIN_SECONDARIES: '192.0.2.1:99999'" in text
    assert "BUILTIN_SECONDARIES needs BUILTIN_ZONE" in text
    assert "BUILTIN_TSIG_SECRET is not valid base64" in text
    assert "not base64!" not in text
