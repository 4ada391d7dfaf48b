"""Issue 14, done when: three gateways on one PostgreSQL database, each an NS of the
challenge names with the builtin DNS, act as one.

Three ``python -m gateway`` processes (A, B, C) share a PostgreSQL database
(tests/servers/postgres.py), each with its own API port, DNS port and
``STATE_DIR``; ``PROPAGATION_NAMESERVERS`` lists the three DNS servers, as the
zone's NS set would. Checked from outside, as a client and a resolver see it:

* a setup through A is answered only once B and C serve the value: while C is
  stopped (SIGSTOP) the setup waits, and it is answered once C runs again;
* a teardown through C removes the value from A's and B's DNS;
* pebble (Debian ``pebble``) validates a challenge by asking B's DNS for the
  value that lego set through A;
* 200 changes over 20 names, spread over the three, with B killed (SIGKILL)
  halfway and the clients retrying on another replica what B could not
  answer, end with exactly the values set up and not torn down, served by A
  and C, and nothing else in the journal (what B left half done is swept).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import make_value
from tests.e2e import certificate_names, write_passwd_file
from tests.e2e.test_pebble_gateway import run_lego
from tests.gateway.procs import GatewayProcess, running_gateway
from tests.providers.test_builtin_state import txt_at
from tests.servers.pebble import Pebble, pebble  # noqa: F401 (a fixture)
from tests.servers.postgres import PostgresServer
from tests.system import free_port

pytestmark = pytest.mark.system

NAMES = ("a", "b", "c")


@dataclass
class Replica:
    name: str
    process: GatewayProcess
    api: str
    dns_port: int


def replica_settings(
    folder: Path, api_port: int, dns_port: int, all_dns: list[int], url: str, password: str,
    **extra: str,
) -> dict[str, str]:
    return {
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": f"127.0.0.1:{dns_port}",
        "BUILTIN_NS": "gw.example.net",
        "BUILTIN_RATE_LIMIT": "0",
        "DNSAPI_DOMAINS": "example.test",
        "BASIC_AUTH": "sufficient",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PASSWD_FILE": str(write_passwd_file(folder)),
        "LISTEN": f"127.0.0.1:{api_port}",
        "STATE_DIR": str(folder / "state"),
        "DATABASE_URL": url,
        "DATABASE_PASSWORD": password,
        "DATABASE_TIMEOUT": "3",
        "PROVIDER_TIMEOUT": "3",
        "JANITOR_INTERVAL": "1",
        "MAX_RECORDS_PER_USER": "0",
        "PROPAGATION_CHECK": "authoritative",
        "PROPAGATION_NAMESERVERS": ",".join(f"127.0.0.1:{p}" for p in all_dns),
        "PROPAGATION_TIMEOUT": "30",
        "LOG_FORMAT": "json",
        **extra,
    }


@contextlib.contextmanager
def three_replicas(
    tmp_path: Path, server: PostgresServer, database: str, dns_ports: list[int] | None = None,
    **extra: str,
) -> Iterator[dict[str, Replica]]:
    dns = dns_ports or [free_port() for _ in NAMES]
    url = server.url(database)
    with contextlib.ExitStack() as stack:
        replicas = {}
        for name, port in zip(NAMES, dns, strict=True):
            folder = tmp_path / name
            folder.mkdir()
            api = free_port()
            settings = replica_settings(folder, api, port, dns, url, server.password, **extra)
            process = stack.enter_context(running_gateway(folder, settings))
            replicas[name] = Replica(name, process, f"http://127.0.0.1:{api}/", port)
        yield replicas


def body(argument: str, name: str, value: str) -> dict[str, str]:
    return {"argument": argument, "domain_name": name, "challenge_content": value}


@pytest.fixture(scope="module")
def trio(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[dict[str, Replica]]:
    database = postgres_server.new_database()
    try:
        with three_replicas(tmp_path_factory.mktemp("trio"), postgres_server, database) as r:
            yield r
    finally:
        postgres_server.drop_database(database)


async def test_a_setup_is_answered_only_once_every_replica_serves_it(
    trio: dict[str, Replica],
) -> None:
    a, b, c = trio["a"], trio["b"], trio["c"]
    value, fqdn = make_value(), "_acme-challenge.one.example.test"
    async with aiohttp.ClientSession() as http:
        c.process.send(signal.SIGSTOP)  # C hears nothing, and its DNS answers nothing
        try:
            setup = asyncio.create_task(http.post(a.api, json=body("setup", "one.example.test",
                                                                    value)))
            await asyncio.sleep(2.0)
            assert not setup.done(), "answered while C could not serve the value"
            assert await txt_at(b.dns_port, fqdn) == {value}
        finally:
            c.process.send(signal.SIGCONT)
        response = await asyncio.wait_for(setup, 30)
        assert response.status == 201, await response.text()
        assert await txt_at(c.dns_port, fqdn) == {value}

        # A teardown through C takes it from A and B.
        response = await http.delete(c.api, json=body("teardown", "one.example.test", value))
        assert response.status == 200, await response.text()
        for replica in (a, b):
            deadline = time.monotonic() + 10
            while value in await txt_at(replica.dns_port, fqdn):
                assert time.monotonic() < deadline, f"{replica.name} still serves it"
                await asyncio.sleep(0.02)


@pytest.fixture
def dns_port(trio: dict[str, Replica]) -> int:
    """Where pebble and lego look: replica B's DNS."""
    return trio["b"].dns_port


async def test_pebble_validates_through_b_a_value_set_through_a(
    tmp_path: Path,
    trio: dict[str, Replica],
    pebble: Pebble,  # noqa: F811
    dns_port: int,
) -> None:
    status, output = await run_lego(tmp_path, pebble, dns_port, trio["a"].api)
    assert status == 0, f"lego failed:\n{output}\npebble:\n{pebble.server.output()}"
    assert certificate_names(tmp_path / "lego" / "certificates" / "example.test.crt") == {
        "example.test",
        "*.example.test",
    }


async def test_200_changes_with_a_replica_killed_halfway_end_exactly_right(
    tmp_path: Path, postgres_server: PostgresServer, postgres_database: str
) -> None:
    names = [f"n{i}.example.test" for i in range(20)]
    # With a replica gone, a setup cannot be served by all three: the survivors
    # confirm what they have written and journaled.
    with three_replicas(
        tmp_path, postgres_server, postgres_database, PROPAGATION_CHECK="off"
    ) as replicas:
        rng = random.Random(14)
        alive = dict(replicas)
        kept: dict[tuple[str, str], bool] = {}
        confirmed = 0
        halfway = asyncio.Event()

        async def change(http: aiohttp.ClientSession, argument: str, name: str,
                         value: str) -> None:
            """One change, retried on another replica until one confirms it."""
            wanted = 201 if argument == "setup" else 200
            method = http.post if argument == "setup" else http.delete
            last = ""
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                replica = rng.choice(list(alive.values()))
                try:
                    async with method(replica.api, json=body(argument, name, value),
                                      timeout=aiohttp.ClientTimeout(total=30)) as r:
                        last = f"{replica.name}: {r.status} {await r.text()}"
                        if r.status == wanted:
                            nonlocal confirmed
                            confirmed += 1
                            if confirmed == 130:  # about half of the 267 changes
                                halfway.set()
                            return
                except aiohttp.ClientError:
                    pass  # the replica died under us: another one takes it
                await asyncio.sleep(0.05)
            raise AssertionError(f"{argument} {name} was never confirmed; last: {last}")

        async def one(http: aiohttp.ClientSession, i: int) -> None:
            name, value = names[i % len(names)], make_value()
            await change(http, "setup", name, value)
            if i % 3 == 0:
                await change(http, "teardown", name, value)
            else:
                kept[(f"_acme-challenge.{name}", value)] = True

        async def kill_b() -> None:
            await halfway.wait()
            replicas["b"].process.kill()
            del alive["b"]

        async with aiohttp.ClientSession() as http:
            await asyncio.gather(kill_b(), *(one(http, i) for i in range(200)))

        expected = set(kept)
        survivors = [replicas["a"], replicas["c"]]
        # What B began and never finished is swept once its calls must have ended.
        deadline = time.monotonic() + 60
        while True:
            with contextlib.closing(postgres_server.connect(postgres_database)) as db:
                rows = db.execute("SELECT fqdn, value, state FROM records").fetchall()
            journaled = {(fqdn, value) for fqdn, value, _ in rows}
            if journaled == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert journaled == expected
        assert {state for _, _, state in rows} <= {"present"}
        for replica in survivors:  # what they serve follows within moments
            deadline = time.monotonic() + 10
            while True:
                seen = set()
                for name in names:
                    fqdn = f"_acme-challenge.{name}"
                    seen |= {(fqdn, v) for v in await txt_at(replica.dns_port, fqdn)}
                if seen == expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert seen == expected, replica.name
