"""Replicas on PostgreSQL: how soon a change reaches the other replicas, and setup throughput.

1. **Commit to served everywhere else.** A PostgreSQL server from Debian
   (tests/servers/postgres.py), two gateway replicas as processes (B and C,
   ``PROVIDER=builtin`` on one database), and replica A in this process: the
   state layer and the builtin provider as the gateway wires them. For each
   run A adds a value; the clock starts when A's transaction has committed
   (the state's ``add`` returned) and stops when both B's and C's DNS servers
   answer with it, polled over UDP in a tight loop. Target: p99 under 50 ms
   on loopback.
2. **Setup throughput of one replica**, on PostgreSQL and on SQLite in the
   same run: one gateway process (``PROVIDER=builtin``, no propagation wait),
   many setups at once through its native API; setups answered per second.

Run: ``python bench/replicas.py [--runs 200] [--setups 600]``. Needs postgresql
and the ``postgresql`` extra. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import dns.asyncquery  # noqa: E402
import dns.message  # noqa: E402
import dns.rdatatype  # noqa: E402

from bench.rig.gateway import machine, percentile  # noqa: E402
from gateway.config import DatabaseConfig  # noqa: E402
from gateway.state.postgres import PostgresState  # noqa: E402
from providers.builtin import BuiltinProvider, BuiltinSettings  # noqa: E402
from tests.conftest import make_value  # noqa: E402
from tests.gateway.procs import (  # noqa: E402
    GatewayProcess,
    builtin_settings,
    running_gateway,
)
from tests.servers.postgres import PostgresServer, running_postgres  # noqa: E402
from tests.system import free_port  # noqa: E402

DOMAIN = "example.test"


def settings(folder: Path, api: int, dns: int, **extra: str) -> dict[str, str]:
    return builtin_settings(
        folder, api, dns,
        BUILTIN_NS="gw.example.net",
        BUILTIN_RATE_LIMIT="0",
        PROPAGATION_CHECK="off",
        MAX_RECORDS_PER_USER="0",
        LOG_LEVEL="WARNING",
        **extra,
    )


def on_postgres(server: PostgresServer, database: str) -> dict[str, str]:
    return {"DATABASE_URL": server.url(database), "DATABASE_PASSWORD": server.password}


@contextlib.contextmanager
def replica(folder: Path, **extra: str) -> Iterator[tuple[GatewayProcess, int, int]]:
    folder.mkdir(parents=True, exist_ok=True)
    api, dns_port = free_port(), free_port()
    with running_gateway(folder, settings(folder, api, dns_port, **extra)) as gw:
        yield gw, api, dns_port


async def serves(port: int, fqdn: str, value: str) -> bool:
    query = dns.message.make_query(fqdn + ".", "TXT")
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=1)
    return any(
        b"".join(rd.strings).decode() == value
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rd in rrset
    )


async def propagation(server: PostgresServer, database: str, ports: list[int],
                      runs: int) -> list[float]:
    """Milliseconds from A's commit to the value served by every port in *ports*."""
    state = PostgresState(DatabaseConfig(server.url(database), server.password))
    await state.open()
    committed: list[float] = []
    add = state.records.add

    async def timed_add(name: str, value: str, limit: int) -> tuple[list[str], int] | None:
        result = await add(name, value, limit)
        committed.append(time.perf_counter())
        return result

    state.records.add = timed_add  # type: ignore[method-assign]
    a = BuiltinProvider(
        BuiltinSettings(listen=(("127.0.0.1", free_port()),), nameservers=("gw.example.net",)),
        (DOMAIN,),
    )
    a.keep_records_in(state.records)
    await a.open()
    lags: list[float] = []
    try:
        for i in range(runs):
            fqdn, value = f"_acme-challenge.r{i % 20}.{DOMAIN}", make_value()
            await a.add_txt(fqdn, value)
            start = committed[-1]
            waiting = set(ports)
            while waiting:
                for port in list(waiting):
                    if await serves(port, fqdn, value):
                        waiting.discard(port)
            lags.append((time.perf_counter() - start) * 1000)
            await a.remove_txt(fqdn, value)
    finally:
        await a.aclose()
        await state.close()
    return lags


async def throughput(api: int, setups: int, concurrency: int = 32) -> float:
    """Setups answered per second by the replica at *api*."""
    url = f"http://127.0.0.1:{api}/"
    queue = list(range(setups))

    async def worker(http: aiohttp.ClientSession) -> None:
        while queue:
            i = queue.pop()
            body = {"argument": "setup", "domain_name": f"t{i % 50}.{DOMAIN}",
                    "challenge_content": make_value()}
            async with http.post(url, json=body) as r:
                if r.status != 201:
                    raise RuntimeError(f"setup answered {r.status}: {await r.text()}")

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        return setups / (time.perf_counter() - start)


def describe(values: list[float]) -> str:
    return (
        f"min {min(values):.1f}  p50 {statistics.median(values):.1f}  "
        f"p90 {percentile(values, 90):.1f}  p99 {percentile(values, 99):.1f}  "
        f"max {max(values):.1f} ms"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--setups", type=int, default=600)
    args = parser.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, running_postgres() as server:
        folder = Path(tmp)
        shared = server.new_database()
        pg = on_postgres(server, shared)
        with replica(folder / "b", **pg) as (_, _, b_dns), replica(folder / "c", **pg) as (
            _, _, c_dns
        ):
            lags = asyncio.run(propagation(server, shared, [b_dns, c_dns], args.runs))
        print(f"commit on A -> served by B and C, {len(lags)} runs: {describe(lags)}")
        print(f"  target p99 < 50 ms: {'met' if percentile(lags, 99) < 50 else 'MISSED'}")

        solo = server.new_database()
        with replica(folder / "pg", **on_postgres(server, solo)) as (_, api, _):
            on_pg = asyncio.run(throughput(api, args.setups))
        with replica(folder / "sqlite") as (_, api, _):
            on_sqlite = asyncio.run(throughput(api, args.setups))
        print(f"setups/s through one replica, {args.setups} setups, 32 at once, builtin DNS:")
        print(f"  PostgreSQL {on_pg:7.1f}   SQLite {on_sqlite:7.1f}   "
              f"ratio {on_pg / on_sqlite:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
