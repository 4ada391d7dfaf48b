"""A gateway that hypothesis can drive: the real app on the in-memory provider.

Hypothesis runs many examples inside one test function, and async fixtures do
not mix with ``@given``; so :class:`SyncGateway` owns an event loop of its own
(``asyncio.Runner``), starts ``gateway.app.create_app`` behind aiohttp's test
server on it, and sends each example as one real HTTP request. The provider is
:class:`providers.memory.MemoryProvider`, whose ``calls`` list shows whether a
request reached it.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import Config, load
from gateway.keys import JOURNAL
from providers.memory import MemoryProvider
from tests.passwords import copy_passwd_file, write_passwd_template

DOMAINS = ("example.test", "example.org")
PASSWORDS = {
    "alice": "alice: any domain",
    "bob": "bob: example.org only",
    "carol": "carol: admin of shop.example.test",
}
# Pre-registered acme-dns account (ACMEDNS_ACCOUNTS_FILE).
ACMEDNS_USER = "c36f50e8-4632-44f0-83fe-e070fef28a10"
ACMEDNS_KEY = "htB9mR9DYgcu9bX_afHF62erXaH2TS7bg9KW3F7Z"
ACMEDNS_SUB = "1f0ae44b-33ed-4f7a-b1a6-3d1b6b8a0b0a"
ACMEDNS_ZONE = "acme.example.test"
NO_BODY = object()


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class SyncGateway:
    """The gateway app on its own event loop, driven by blocking calls."""

    def __init__(self, config: Config) -> None:
        self.provider = MemoryProvider()
        self._runner = asyncio.Runner()
        self.app = create_app(config, self.provider)

        async def start() -> TestClient[web.Request, web.Application]:
            client = TestClient(TestServer(self.app))  # needs the running loop
            await client.start_server()
            return client

        self.client = self._runner.run(start())

    def request(
        self,
        method: str,
        path: str,
        *,
        data: bytes | None = None,
        body: Any = NO_BODY,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """Send *data*, or *body* as JSON (``None`` too: it is the JSON ``null``)."""
        if body is not NO_BODY:
            data = json.dumps(body).encode()

        async def send() -> Answer:
            async with self.client.request(method, path, data=data, headers=headers) as r:
                return Answer(r.status, await r.read(), dict(r.headers))

        return self._runner.run(send())

    def journal_count(self) -> int:
        """Values journaled right now (published and not torn down)."""
        count, _ = self._runner.run(self.app[JOURNAL].figures())
        return count

    def close(self) -> None:
        try:
            self._runner.run(self.client.close())
        finally:
            self._runner.close()


@pytest.fixture(scope="session")
def passwd_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_passwd_template(tmp_path_factory.mktemp("passwd") / "acmepasswd", PASSWORDS)


@pytest.fixture
def hostile_config(tmp_path: Path, passwd_template: Path) -> Config:
    """Every API on: native, httpreq (prefix ``/httpreq``), acme-dns update and register."""
    passwd = copy_passwd_file(passwd_template, tmp_path / "acmepasswd")
    accounts = tmp_path / "acmedns.json"
    accounts.write_text(
        json.dumps(
            {
                "example.test": {
                    "username": ACMEDNS_USER,
                    "password": ACMEDNS_KEY,
                    "fulldomain": f"{ACMEDNS_SUB}.{ACMEDNS_ZONE}",
                    "subdomain": ACMEDNS_SUB,
                    "allowfrom": [],
                }
            }
        )
    )
    env = {
        "PROVIDER": "memory",
        "DNSAPI_DOMAINS": ", ".join(DOMAINS),
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(passwd),
        "STATE_DIR": str(tmp_path / "state"),
        "LISTEN": "127.0.0.1:0",
        "PROPAGATION_CHECK": "off",
        "HTTPREQ_PREFIX": "httpreq",
        "ACMEDNS_ZONE": ACMEDNS_ZONE,
        "ACMEDNS_ACCOUNTS_FILE": str(accounts),
        "ACMEDNS_REGISTER": "1",
        # Hostile input includes wrong credentials; the limiter has its own tests.
        "AUTH_MAX_FAILURES": "100000",
    }
    config, _ = load([], env)
    return config


@pytest.fixture
def hostile_gateway(hostile_config: Config) -> Iterator[SyncGateway]:
    gw = SyncGateway(hostile_config)
    try:
        yield gw
    finally:
        gw.close()
