"""Issue 3, done when: with a lagging secondary BIND, setup answers only once both servers serve.

A BIND primary takes the gateway's TSIG-signed updates (``PROVIDER=rfc2136``);
its secondary transfers nothing new until the test calls ``secondary.sync()``
(tests/servers/bind.py, ``bind_lagging_pair``), so the lag is exactly as long as
the test wants. ``PROPAGATION_NAMESERVERS`` names both servers. The gateway is
built by the start-up path of ``acmegw-server`` (:func:`gateway.server.prepare`)
and served in-process by ``aiohttp_client``, with basic auth.

* While the secondary lacks the value the setup stays unanswered; once the
  secondary has transferred it, the answer is 201 and both servers serve it.
* With a short ``PROPAGATION_TIMEOUT`` and no transfer, the answer is 504 naming
  the secondary (``ip:port``) and only it, and the record stays in the journal
  on disk so the janitor or a teardown removes it later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_value
from tests.e2e import CHALLENGE, Client, basic_auth, in_process_gateway, journal_rows
from tests.servers.bind import BindServer, bind_lagging_pair  # noqa: F401 (a fixture)

pytestmark = pytest.mark.system

Pair = tuple[BindServer, BindServer]
GatewayFactory = Callable[..., Awaitable[Client]]

# How long the setup must visibly wait while the secondary lags.
LAG = 1.0


@pytest.fixture
def gateway(
    bind_lagging_pair: Pair,  # noqa: F811
    tmp_path: Path,
    aiohttp_client: Callable[..., Awaitable[Client]],
) -> GatewayFactory:
    """``await gateway(PROPAGATION_TIMEOUT=...)``: a gateway writing to the primary."""
    primary, secondary = bind_lagging_pair

    async def start(**overrides: str) -> Client:
        client, _ = await in_process_gateway(aiohttp_client, tmp_path, {
            **primary.rfc2136_settings(),
            "PROPAGATION_CHECK": "authoritative",
            "PROPAGATION_NAMESERVERS": f"{primary.address}, {secondary.address}",
            "PROPAGATION_TIMEOUT": "30",
            **overrides,
        })
        return client

    return start


async def setup(client: Client, value: str) -> tuple[int, Any]:
    body = {"argument": "setup", "domain_name": "example.test", "challenge_content": value}
    async with client.post("/", json=body, headers=basic_auth()) as response:
        return response.status, await response.json()


async def served(server: BindServer) -> set[str]:
    return await asyncio.to_thread(server.txt, CHALLENGE)


async def test_setup_answers_only_once_the_secondary_serves_the_value(
    bind_lagging_pair: Pair,  # noqa: F811
    gateway: GatewayFactory,
) -> None:
    primary, secondary = bind_lagging_pair
    client = await gateway()
    value = make_value()

    request = asyncio.create_task(setup(client, value))
    try:
        await asyncio.sleep(LAG)
        assert not request.done(), f"answered while the secondary lags: {request.result()}"
        # The lag is real: written at the primary, not yet at the secondary.
        assert value in await served(primary)
        assert value not in await served(secondary)

        await asyncio.to_thread(secondary.sync)
        status, body = await asyncio.wait_for(request, 15)
    finally:
        request.cancel()
    assert (status, body) == (201, {"fqdn": CHALLENGE, "value": value})
    assert value in await served(primary)
    assert value in await served(secondary)


async def test_timeout_names_the_lagging_secondary_and_keeps_the_record(
    bind_lagging_pair: Pair,  # noqa: F811
    gateway: GatewayFactory,
    tmp_path: Path,
) -> None:
    primary, secondary = bind_lagging_pair
    client = await gateway(PROPAGATION_TIMEOUT="1.5")
    value = make_value()

    status, body = await asyncio.wait_for(setup(client, value), 15)

    assert status == 504, body
    message = body["message"]
    assert "\n" not in message, message
    assert secondary.address in message, message
    assert primary.address not in message, message  # it served the value: not lagging
    # Written and journaled, so the janitor (or the client's teardown) can remove it.
    assert value in await served(primary)
    assert (CHALLENGE, value, "present") in journal_rows(tmp_path / "state")
