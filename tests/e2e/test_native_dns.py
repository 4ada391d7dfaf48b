"""Issue 3, done when: through the native API, values land in real DNS servers and `dig` sees them.

For each of BIND (``rfc2136`` with a TSIG key), PowerDNS (its HTTP API) and the
``builtin`` DNS, the gateway is built by the same start-up path ``acmegw-server``
takes (:func:`gateway.server.prepare` from environment settings, then
:func:`gateway.app.create_app`) and served in-process by ``aiohttp_client``,
with ``BASIC_AUTH=required``, a password file, ``PROPAGATION_CHECK=authoritative``
and ``PROPAGATION_NAMESERVERS`` naming the DNS server's loopback port. Every
check of what is served is the real ``dig`` asking that server without recursion.

Checked per provider: two setups at ``example.test`` (the second as
``*.example.test``, as a certificate for both names needs) are both served;
a teardown of one leaves the other; a repeated teardown answers 200 and changes
nothing. With the DNS server stopped, a setup answers 502 or 504 with a
one-line message, never 2xx. For ``builtin`` "stopped" means its DNS listeners
are closed while the gateway runs on: the value is stored but nobody can see
it, and the propagation check must say so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from providers.base import Provider
from tests.conftest import make_value
from tests.e2e import CHALLENGE, Client, basic_auth, dig_txt, in_process_gateway
from tests.servers.bind import start_primary
from tests.servers.pdns import running_pdns
from tests.system import free_port

pytestmark = pytest.mark.system


@dataclass
class Backend:
    """A DNS server the gateway writes to: its provider settings and how to take it down."""

    name: str
    dns_port: int
    settings: dict[str, str]
    stop: Callable[[Provider], Awaitable[None]]


@pytest.fixture(params=["rfc2136", "powerdns", "builtin"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh server per test, so a test may stop it without harming the others."""
    name: str = request.param
    if name == "rfc2136":
        bind = start_primary(tmp_path / "bind")
        try:

            async def stop_bind(_: Provider) -> None:
                await asyncio.to_thread(bind.stop)

            yield Backend(
                name,
                bind.port,
                {
                    **bind.rfc2136_settings(),
                    "RFC2136_TIMEOUT": "2",
                },
                stop_bind,
            )
        finally:
            bind.stop()
    elif name == "powerdns":
        with running_pdns(tmp_path / "pdns", zones=("example.test",)) as pdns:

            async def stop_pdns(_: Provider) -> None:
                await asyncio.to_thread(pdns.server.stop)

            yield Backend(
                name,
                pdns.dns_port,
                {
                    "PROVIDER": "powerdns",
                    "POWERDNS_API_URL": pdns.api_url,
                    "POWERDNS_API_KEY": pdns.api_key,
                    "POWERDNS_TIMEOUT": "2",
                },
                stop_pdns,
            )
    else:
        port = free_port()

        async def stop_builtin(provider: Provider) -> None:
            # The DNS server is the provider itself: close its listeners, keep the gateway.
            await provider.aclose()

        yield Backend(
            name,
            port,
            {
                "PROVIDER": "builtin",
                "BUILTIN_LISTEN": f"127.0.0.1:{port}",
                "BUILTIN_NS": "gw.example.net",
            },
            stop_builtin,
        )


GatewayFactory = Callable[[], Awaitable[tuple[Client, Provider]]]


@pytest.fixture
def gateway(
    backend: Backend,
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> GatewayFactory:
    async def start() -> tuple[Client, Provider]:
        return await in_process_gateway(aiohttp_client, tmp_path, {
            "PROPAGATION_CHECK": "authoritative",
            "PROPAGATION_NAMESERVERS": f"127.0.0.1:{backend.dns_port}",
            "PROPAGATION_TIMEOUT": "3",
            "PROVIDER_TIMEOUT": "8",
            **backend.settings,
        })

    return start


async def call(client: Client, argument: str, domain: str, value: str) -> tuple[int, Any]:
    method = "POST" if argument == "setup" else "DELETE"
    body = {"argument": argument, "domain_name": domain, "challenge_content": value}
    async with client.request(method, "/", json=body, headers=basic_auth()) as response:
        return response.status, await response.json()


async def test_two_values_coexist_and_teardown_removes_only_one(
    backend: Backend, gateway: GatewayFactory
) -> None:
    client, _ = await gateway()
    v1, v2 = make_value(), make_value()
    assert await dig_txt(backend.dns_port) == set()

    assert await call(client, "setup", "example.test", v1) == (
        201,
        {"fqdn": CHALLENGE, "value": v1},
    )
    # Answered only once served: no sleep between the answer and dig.
    assert await dig_txt(backend.dns_port) == {v1}
    assert await call(client, "setup", "*.example.test", v2) == (
        201,
        {"fqdn": CHALLENGE, "value": v2},
    )
    assert await dig_txt(backend.dns_port) == {v1, v2}

    assert await call(client, "teardown", "example.test", v1) == (
        200,
        {"fqdn": CHALLENGE, "value": v1},
    )
    assert await dig_txt(backend.dns_port) == {v2}

    assert await call(client, "teardown", "example.test", v1) == (
        200,
        {"fqdn": CHALLENGE, "value": v1},
    )
    assert await dig_txt(backend.dns_port) == {v2}


async def test_setup_with_the_dns_server_down_is_never_confirmed(
    backend: Backend, gateway: GatewayFactory
) -> None:
    client, provider = await gateway()
    await backend.stop(provider)
    status, body = await asyncio.wait_for(call(client, "setup", "example.test", make_value()), 30)
    assert status in (502, 504), (status, body)
    message = body["message"]
    assert isinstance(message, str) and message.strip(), body
    assert "\n" not in message, message
    if backend.name == "builtin":
        # The value was stored, but the check found nobody serving it: name who lags.
        assert f"127.0.0.1:{backend.dns_port}" in message, message
    else:
        assert backend.name in message, message
