"""200 concurrent setups and teardowns over 20 names with two values each: nothing lost or left.

The gateway runs as ``python -m gateway`` (``tests/gateway/procs.py``) with a
real DNS server behind it: its own (``PROVIDER=builtin``), or a BIND primary
through ``PROVIDER=rfc2136`` with ``PROPAGATION_NAMESERVERS`` naming it, so
every setup also waits until BIND serves its value. Twenty names, values A
and B at each; three rounds of 200 requests, each round sent all at once (one
connection per request):

1. every value set up five times: each name then serves exactly {A, B};
2. A set up five more times while B is torn down five times, interleaved at
   the same names: each name serves exactly {A};
3. A torn down ten times: no name serves anything, and the journal is empty.

Each round's outcome does not depend on the order the requests arrive in, so
it is checked exactly, with DNS queries straight to the server and against
the journal (``GET /records``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import pytest

from gateway.service import value_tag
from tests.conftest import make_value
from tests.gateway.procs import (
    GatewayProcess,
    builtin_settings,
    gateway_settings,
    running_gateway,
)
from tests.servers.bind import start_primary
from tests.system import free_port

pytestmark = pytest.mark.system

NAMES = [f"n{i}.example.test" for i in range(20)]


@dataclass
class Target:
    url: str
    dns_host: str
    dns_port: int
    gateway: GatewayProcess

    def served(self, name: str) -> set[str]:
        query = dns.message.make_query(f"_acme-challenge.{name}", "TXT", use_edns=0,
                                       payload=4096)
        query.flags &= ~dns.flags.RD
        response, _ = dns.query.udp_with_fallback(query, self.dns_host, timeout=3,
                                                  port=self.dns_port)
        return {
            b"".join(r.strings).decode()
            for rrset in response.answer if rrset.rdtype == dns.rdatatype.TXT for r in rrset
        }


# One client sends all 200 at once, each on its own connection.
BURST = {"LOG_LEVEL": "WARNING", "MAX_CONNECTIONS_PER_CLIENT": "256"}


@pytest.fixture(params=["builtin", "rfc2136"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    port = free_port()
    if request.param == "builtin":
        dns_port = free_port()
        # The test reads every name at once from loopback: not rate-limited.
        env = builtin_settings(tmp_path, port, dns_port,
                               BUILTIN_RATE_LIMIT_EXEMPT="127.0.0.0/8", **BURST)
        with running_gateway(tmp_path, env) as gw:
            yield Target(f"http://127.0.0.1:{port}", "127.0.0.1", dns_port, gw)
        return
    bind = start_primary(tmp_path / "bind", zones=("example.test",),
                         challenge_labels=[f"_acme-challenge.{n.split('.')[0]}" for n in NAMES])
    try:
        env = gateway_settings(
            tmp_path, port,
            PROVIDER="rfc2136", RFC2136_SERVER=bind.host, RFC2136_PORT=str(bind.port),
            RFC2136_TSIG_KEY_NAME=bind.key.name, RFC2136_TSIG_SECRET=bind.key.secret,
            RFC2136_ZONE="example.test", PROPAGATION_CHECK="authoritative",
            PROPAGATION_NAMESERVERS=bind.address, PROPAGATION_TIMEOUT="30", **BURST,
        )
        with running_gateway(tmp_path, env) as gw:
            yield Target(f"http://127.0.0.1:{port}", bind.host, bind.port, gw)
    finally:
        bind.stop()


async def burst(target: Target, requests: list[tuple[str, str, str]]) -> list[int]:
    """Send every (argument, name, value) at once, each on its own connection."""
    random.shuffle(requests)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(argument: str, name: str, value: str) -> int:
            body = {"argument": argument, "domain_name": name, "challenge_content": value}
            async with session.post(target.url + "/", json=body) as r:
                await r.read()
                return r.status

        return list(await asyncio.gather(*(one(*request) for request in requests)))


async def journal(target: Target) -> list[tuple[str, str, str]]:
    """(fqdn, value tag, state) of every journaled value, sorted."""
    async with aiohttp.ClientSession() as session, session.get(target.url + "/records") as r:
        assert r.status == 200
        data = await r.json()
    return sorted((row["fqdn"], row["value"], row["state"]) for row in data["records"])


def everything_served(target: Target) -> dict[str, set[str]]:
    return {name: target.served(name) for name in NAMES}


async def test_two_hundred_concurrent_changes_lose_and_leave_nothing(target: Target) -> None:
    a = {name: make_value() for name in NAMES}
    b = {name: make_value() for name in NAMES}

    statuses = await burst(target, [("setup", n, v[n]) for n in NAMES for v in (a, b)] * 5)
    assert statuses == [201] * 200
    served = await asyncio.to_thread(everything_served, target)
    assert served == {n: {a[n], b[n]} for n in NAMES}
    assert await journal(target) == sorted(
        (f"_acme-challenge.{n}", value_tag(v[n]), "present") for n in NAMES for v in (a, b)
    )

    requests = [("setup", n, a[n]) for n in NAMES] * 5 + [("teardown", n, b[n]) for n in NAMES] * 5
    statuses = await burst(target, requests)
    assert sorted(statuses) == [200] * 100 + [201] * 100
    served = await asyncio.to_thread(everything_served, target)
    assert served == {n: {a[n]} for n in NAMES}
    assert await journal(target) == sorted(
        (f"_acme-challenge.{n}", value_tag(a[n]), "present") for n in NAMES
    )

    statuses = await burst(target, [("teardown", n, a[n]) for n in NAMES] * 10)
    assert statuses == [200] * 200
    served = await asyncio.to_thread(everything_served, target)
    assert served == {n: set() for n in NAMES}
    assert await journal(target) == []
    assert "Traceback" not in target.gateway.stderr
