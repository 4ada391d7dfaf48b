"""Every provider module declares the settings it reads, in its ``SETTINGS`` tuple.

The gateway reports a dotenv key that nothing reads as an unknown setting; the
settings of providers that are not selected are known through these
declarations (read from the source: providers.registry.declared_settings). So a
declaration must hold every key its module reads: what ``from_settings`` asks
for, and every key-like string in the module (reads in branches included).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from lib.settings import Settings
from providers.base import ProviderContext
from providers.registry import (
    SETTING_PREFIXES,
    _provider_class,
    _settings_in,
    declared_settings,
    known_providers,
)

HELPERS = ("_http",)  # modules whose settings every REST provider reads through them


def source(module: str) -> Path:
    spec = importlib.util.find_spec(f"providers.{module}")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def declared(module: str) -> set[str]:
    return set(_settings_in(source(module)))


@pytest.mark.parametrize("short", known_providers())
def test_a_provider_declares_every_setting_it_asks_for(short: str) -> None:
    try:
        klass = _provider_class(f"providers.{short}", short)
    except ImportError as exc:  # an optional dependency: the static test below still runs
        pytest.skip(f"providers.{short} cannot be imported here: {exc}")
    for values in ({}, {"RFC2136_TSIG_KEY_NAME": "k", "RFC2136_TSIG_SECRET_FILE": "/nonexistent"}):
        settings = Settings(values)
        klass.from_settings(settings, ProviderContext(("example.test",), timeout=5.0))
        allowed = declared(short).union(*(declared(h) for h in HELPERS))
        missing = {k for k in settings.asked - allowed if not k.startswith(SETTING_PREFIXES)}
        assert not missing, f"providers/{short} reads {sorted(missing)} but does not declare them"


@pytest.mark.parametrize("short", known_providers())
def test_every_key_named_in_a_provider_module_is_declared(short: str) -> None:
    prefix = short.upper() + "_"
    text = source(short).read_text()
    named = set(re.findall(rf"\"({prefix}[A-Z0-9_]+)\"", text))
    assert named <= declared(short), sorted(named - declared(short))


def test_declared_settings_are_read_without_importing_the_providers() -> None:
    known = declared_settings()
    assert {"BUILTIN_NS", "RFC2136_TSIG_SECRET_FILE", "CLOUDFLARE_API_TOKEN", "ALL_PROXY",
            "DNSAPI_PASSWORD_FILE", "MEMORY_FAIL"} <= known
    assert "BUILTIN_NSS" not in known
