"""The DNS server down: a real BIND primary that is stopped and started again.

The gateway runs in-process (``gateway.server.prepare`` + ``create_app``, the
start-up path of ``acmegw-server``) with ``PROVIDER=rfc2136`` at the BIND
primary (``tests/servers/bind.py``) and ``PROPAGATION_NAMESERVERS`` naming it.

* BIND stopped: a setup is a 502 naming the provider, within
  ``RFC2136_TIMEOUT``; a teardown is a 502 too and leaves the value journaled
  as ``removing``. Nothing is claimed, and once BIND is back (the same process
  configuration, the same port and key) the janitor finishes the teardown and
  clears the failed setup: BIND serves nothing, the journal is empty.
* A nameserver of ``PROPAGATION_NAMESERVERS`` down: the value is written, but
  the setup answers 504 naming the silent server instead of claiming success.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.keys import JANITOR, JOURNAL
from gateway.server import prepare
from tests.conftest import make_value
from tests.faults.conftest import body
from tests.servers.bind import BindServer, start_primary
from tests.system import Server, free_port, need_program, wait_for_port

pytestmark = pytest.mark.system

NAME = "_acme-challenge.www.example.test"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[list[BindServer]]:
    """The primary, in a list so a test can swap in the restarted process (always stopped)."""
    servers = [start_primary(tmp_path / "bind")]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def restart(server: BindServer) -> BindServer:
    """Start ``named`` again with the stopped server's configuration, zones and port."""
    named = need_program("named", "bind9")
    conf = server.directory / "named.conf"
    process = Server([named, "-g", "-c", str(conf)], server.directory / "named-2.log",
                     cwd=server.directory)
    again = dataclasses.replace(server, process=process, _stopped=False)
    wait_for_port(again.port, again.host, 20, proc=process.proc)
    again.wait_for_serials(dict.fromkeys(again.zones), 20)
    return again


async def gateway_for(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path,
                      bind: BindServer, **extra: str) -> Client:
    dotenv = tmp_path / "gateway.env"
    dotenv.write_text("")
    env = {
        "DOTENV": str(dotenv),
        "PROVIDER": "rfc2136",
        "RFC2136_SERVER": bind.host,
        "RFC2136_PORT": str(bind.port),
        "RFC2136_TSIG_KEY_NAME": bind.key.name,
        "RFC2136_TSIG_SECRET": bind.key.secret,
        "RFC2136_TIMEOUT": "2",
        "DNSAPI_DOMAINS": "example.test",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LISTEN": "127.0.0.1:0",
        "STATE_DIR": str(tmp_path / "state"),
        "PROPAGATION_NAMESERVERS": bind.address,
        "PROPAGATION_TIMEOUT": "3",
        "PROVIDER_TIMEOUT": "8",
    }
    env.update(extra)
    config, provider, passwords, _ = prepare([], env)
    return await aiohttp_client(create_app(config, provider, passwords))


async def journal_states(client: Client) -> dict[str, str]:
    return {r.value: r.state for r in await client.app[JOURNAL].all()}


async def test_a_stopped_dns_server_is_502_and_the_janitor_cleans_up_after_it_returns(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path, bind: list[BindServer]
) -> None:
    client = await gateway_for(aiohttp_client, tmp_path, bind[0])
    served, refused = make_value(), make_value()
    r = await client.post("/", json=body("setup", "www.example.test", served))
    assert r.status == 201
    assert bind[0].txt(NAME) == {served}

    bind[0].stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    r = await client.post("/", json=body("setup", "www.example.test", refused))
    assert r.status == 502, await r.text()
    message = (await r.json())["message"]
    assert message.startswith("rfc2136") and "\n" not in message
    assert loop.time() - started < 7
    r = await client.post("/", json=body("teardown", "www.example.test", served))
    assert r.status == 502
    assert await journal_states(client) == {served: "removing", refused: "adding"}

    bind.append(restart(bind[0]))
    # Nothing of the refused setup reached the server; the failed teardown did not happen.
    assert bind[-1].txt(NAME) == {served}
    janitor = client.app[JANITOR]
    janitor.max_age = 0.0
    await asyncio.sleep(0.01)
    assert await janitor.sweep() == 2
    assert await journal_states(client) == {}
    assert bind[-1].txt(NAME) == set()


async def test_a_silent_nameserver_makes_the_setup_504_not_201(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path, bind: list[BindServer]
) -> None:
    # Nothing listens there: UDP queries go unanswered for the 2 s query timeout (then
    # TCP is refused), so the wait must be longer than that to see the others serve it.
    silent = f"127.0.0.1:{free_port()}"
    client = await gateway_for(aiohttp_client, tmp_path, bind[0],
                               PROPAGATION_NAMESERVERS=f"{bind[0].address}, {silent}",
                               PROPAGATION_TIMEOUT="4")
    value = make_value()
    r = await client.post("/", json=body("setup", "www.example.test", value))
    assert r.status == 504, await r.text()
    message = (await r.json())["message"]
    assert silent in message and bind[0].address not in message
    # Written, and journaled as such, so the teardown (or the janitor) removes it.
    assert bind[0].txt(NAME) == {value}
    assert await journal_states(client) == {value: "present"}
    r = await client.post("/", json=body("teardown", "www.example.test", value))
    assert r.status == 200
    assert bind[0].txt(NAME) == set() and await journal_states(client) == {}
