"""A flood of slow changes against a replica on PostgreSQL (``DATABASE_POOL_SIZE``).

A client that knows a provider call is slow (a DNS host's API taking seconds)
sends many setups at once, to take every database connection of the replica for
as long as those calls last. What must hold, on the wire against a real gateway
(the exec provider running a script that takes 5 s to publish) on a real
PostgreSQL (tests/servers/postgres.py), with ``DATABASE_POOL_SIZE=4``: a quarter
of the pool is kept from changes, so

* the changes past the pool's change slots are answered 503, saying so, within
  about ``DATABASE_TIMEOUT``, not held until a slot frees;
* ``/healthz`` (and logins, which take the same short connections) still get a
  connection meanwhile;
* the changes that got a slot end 201, and the replica takes changes again after.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import make_value
from tests.gateway.procs import gateway_settings, running_gateway
from tests.servers.postgres import PostgresServer
from tests.system import free_port

pytestmark = pytest.mark.system

SLOW = 5  # seconds the script takes to publish a value


async def test_a_flood_of_slow_changes_cannot_take_the_replicas_last_connections(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    script = tmp_path / "slow-dns"
    script.write_text(f'#!/bin/sh\n[ "$1" = add ] && sleep {SLOW}\nexit 0\n')
    script.chmod(0o755)
    port = free_port()
    settings = gateway_settings(
        tmp_path, port,
        PROVIDER="exec",
        EXEC_COMMAND=str(script),
        DATABASE_URL=postgres_server.url(postgres_server.new_database()),
        DATABASE_PASSWORD=postgres_server.password,
        DATABASE_POOL_SIZE="4",  # 3 change slots
        DATABASE_TIMEOUT="1",
        PROVIDER_TIMEOUT="30",
        MAX_RECORDS_PER_USER="0",
    )
    url = f"http://127.0.0.1:{port}/"
    with running_gateway(tmp_path, settings) as gateway:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:

            async def setup(i: int) -> tuple[int, str, float]:
                """Its status, its text, and when it was answered."""
                body = {"argument": "setup", "domain_name": f"n{i}.example.test",
                        "challenge_content": make_value()}
                async with http.post(url, json=body) as r:
                    return r.status, await r.text(), time.monotonic()

            flood = [asyncio.create_task(setup(i)) for i in range(10)]
            await asyncio.sleep(SLOW / 2)  # the slots are held by slow calls now
            async with http.get(url + "healthz") as r:
                health = r.status, await r.text()
            answers = await asyncio.gather(*flood)

            assert health[0] == 200, (health, gateway.describe())
            statuses = sorted(status for status, _, _ in answers)
            assert set(statuses) == {201, 503}, (answers, gateway.describe())
            assert statuses.count(201) <= 3, answers
            refused = [(text, at) for status, text, at in answers if status == 503]
            for text, _ in refused:
                assert "changes are in flight on this replica" in text, text
            # Refused while the slow calls still held the slots, not once one freed.
            assert max(at for _, at in refused) < min(
                at for status, _, at in answers if status == 201
            ), answers
            status, text, _ = await setup(99)
            assert status == 201, (text, gateway.describe())
