"""Fixtures for gateway tests: a configured app on the in-memory provider."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import Config, load
from providers.base import Provider
from providers.memory import MemoryProvider
from tests.gateway.backends import Backend
from tests.passwords import copy_passwd_file, write_passwd_template

PASSWORDS = {
    "alice": "correct horse battery staple",
    "bob": "p:ss:wörd with colons",  # ':' and non-ASCII must work
    "carol": "carol-secret",
}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture(scope="session")
def passwd_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A password file made once per session (scrypt is deliberately slow)."""
    return write_passwd_template(tmp_path_factory.mktemp("passwd") / "acmepasswd", PASSWORDS)


@pytest.fixture
def passwd_path(tmp_path: Path, passwd_template: Path) -> Path:
    return copy_passwd_file(passwd_template, tmp_path / "acmepasswd")


ConfigFactory = Callable[..., Config]


@pytest.fixture
def backend(tmp_path: Path) -> Backend:
    """The state backend: SQLite, unless a module imports the one of
    :mod:`tests.gateway.backends` to run on both."""
    return Backend("sqlite", tmp_path / "state")


@pytest.fixture
def make_config(tmp_path: Path, passwd_path: Path, backend: Backend) -> ConfigFactory:
    def factory(**env: str) -> Config:
        base = {
            "PROVIDER": "memory",
            "DNSAPI_DOMAINS": "example.test, example.org",
            "BASIC_AUTH": "sufficient",
            "PASSWD_FILE": str(passwd_path),
            "LISTEN": "127.0.0.1:0",
            "PROPAGATION_CHECK": "off",
            **backend.env,
        }
        base.update(env)
        config, _ = load([], {k: v for k, v in base.items() if v is not None})
        return config

    return factory


GatewayFactory = Callable[..., Awaitable[tuple[TestClient, MemoryProvider]]]


@pytest.fixture
def gateway(
    backend: Backend,
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    make_config: ConfigFactory,
) -> GatewayFactory:
    """``await gateway(provider=None, **env)`` -> (client, provider).

    *backend* comes first so that the apps are closed before it is torn down.
    """

    async def start(
        provider: Provider | None = None, **env: str
    ) -> tuple[TestClient, MemoryProvider]:
        config = make_config(**env)
        prov = provider or MemoryProvider()
        client = await aiohttp_client(create_app(config, prov))
        return client, prov  # type: ignore[return-value]

    return start
