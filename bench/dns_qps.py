"""Queries per second: the builtin DNS server against Knot DNS, serving the same records.

Both servers serve 200 names with two TXT values each: the builtin server as
the real gateway (``python -m gateway``, ``PROVIDER=builtin``, the values set
through its native API, response rate limiting off as Knot has it by default),
Knot from a zone file (tests/servers/knot.py). dnsperf (Debian ``dnsperf``)
asks each in turn, alternating, for ``--seconds`` per run and ``--rounds``
rounds, with the TXT queries for those 200 names, and prints queries/s, lost
queries and the builtin server's share of Knot's rate.

A second table shows that a negative answer costs the same however many names
are stored: NXDOMAIN queries for 100,000 distinct names that do not exist (more
than the answer cache holds), against a server holding 10 names and one
holding 100,000 (those servers run from this script's own
:class:`providers.builtin.BuiltinProvider`, filled directly).

Run: ``python bench/dns_qps.py [--seconds 5] [--rounds 3]``. Needs dnsperf and
knot. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.rig.gateway import machine  # noqa: E402
from providers.builtin import BuiltinProvider, BuiltinSettings  # noqa: E402
from tests.conftest import make_value  # noqa: E402
from tests.gateway.procs import running_gateway  # noqa: E402
from tests.servers.knot import start_knot  # noqa: E402
from tests.system import free_port, need_program  # noqa: E402

DOMAIN = "example.test"
NAMES = 200


@dataclass
class Run:
    qps: float
    sent: int
    lost: int


def dnsperf(port: int, queries: Path, seconds: float, clients: int = 4) -> Run:
    program = need_program("dnsperf", "dnsperf")
    done = subprocess.run(
        [program, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
         "-l", str(seconds), "-c", str(clients), "-q", "100", "-t", "2"],
        capture_output=True, text=True, timeout=seconds + 60, check=False,
    )
    out = done.stdout

    def number(label: str) -> float:
        match = re.search(rf"{label}:\s+([\d.]+)", out)
        if not match:
            raise RuntimeError(f"dnsperf said:\n{out}\n{done.stderr}")
        return float(match.group(1))

    return Run(number("Queries per second"), int(number("Queries sent")),
               int(number("Queries lost")))


@contextlib.contextmanager
def builtin_gateway(folder: Path, values: dict[str, tuple[str, str]]) -> Iterator[int]:
    """The real gateway serving *values*; yields its DNS port."""
    port, dns_port = free_port(), free_port()
    settings = {
        "DNSAPI_DOMAINS": DOMAIN,
        "ALLOWED_HOSTS": "127.0.0.1",
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(folder / "state"),
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": f"127.0.0.1:{dns_port}",
        "BUILTIN_NS": "ns1.example.test",
        "BUILTIN_RATE_LIMIT": "0",
        "PROPAGATION_CHECK": "off",
        "LOG_LEVEL": "WARNING",
    }
    with running_gateway(folder, settings) as gw, requests.Session() as session:
        for name, pair in values.items():
            for value in pair:
                answer = session.post(f"http://127.0.0.1:{port}/", timeout=30, json={
                    "argument": "setup", "domain_name": name, "challenge_content": value})
                if answer.status_code != 201:
                    raise RuntimeError(f"setup failed: {answer.status_code} {answer.text}")
        yield dns_port
        if "Traceback" in gw.stderr:
            print(gw.stderr[-3000:])


def throughput(folder: Path, seconds: float, rounds: int) -> None:
    names = [f"n{i}.{DOMAIN}" for i in range(NAMES)]
    values = {name: (make_value(), make_value()) for name in names}
    queries = folder / "txt.queries"
    queries.write_text("".join(f"_acme-challenge.{name} TXT\n" for name in names))
    records = [f'_acme-challenge.n{i} TXT "{value}"'
               for i, name in enumerate(names) for value in values[name]]
    knot = start_knot(folder / "knot", zones=(DOMAIN,), challenge_labels=("_acme-challenge",),
                      records={DOMAIN: records})
    results: dict[str, list[Run]] = {"builtin": [], "knot": []}
    try:
        with builtin_gateway(folder, values) as builtin_port:
            dnsperf(builtin_port, queries, 1)  # warm-up
            dnsperf(knot.port, queries, 1)
            for _ in range(rounds):
                results["builtin"].append(dnsperf(builtin_port, queries, seconds))
                results["knot"].append(dnsperf(knot.port, queries, seconds))
    finally:
        knot.stop()
    print(f"{NAMES} names x 2 TXT values, dnsperf -c 4 -q 100, {seconds:g} s x {rounds} "
          "runs each, alternating")
    print(f"{'server':<10} {'queries/s (median)':>20} {'runs':>32} {'lost':>6}")
    medians = {}
    for server, runs in results.items():
        medians[server] = statistics.median(r.qps for r in runs)
        each = ", ".join(f"{r.qps:,.0f}" for r in runs)
        print(f"{server:<10} {medians[server]:>20,.0f} {each:>32} "
              f"{sum(r.lost for r in runs):>6}")
    print(f"builtin / knot: {medians['builtin'] / medians['knot']:.2f}x")


async def negative_answers(folder: Path, seconds: float) -> None:
    queries = folder / "nx.queries"
    # Distinct names, more than the answer cache holds: each one is looked up.
    queries.write_text("".join(f"x{i}.nothing.acme.{DOMAIN} TXT\n" for i in range(100_000)))
    print(f"\nNXDOMAIN for 100,000 distinct absent names, dnsperf {seconds:g} s")
    for stored in (10, 100_000):
        port = free_port()
        provider = BuiltinProvider(BuiltinSettings(
            listen=(("127.0.0.1", port),), zone=f"acme.{DOMAIN}", nameservers=("ns1.x.test",),
            rate_limit_exempt=(ipaddress.ip_network("127.0.0.0/8"),)), (DOMAIN,))
        await provider.open()
        try:
            started = time.monotonic()
            value = make_value()
            for i in range(stored):
                await provider.add_txt(f"a.n{i}.acme.{DOMAIN}", value)
            filled = time.monotonic() - started
            run = await asyncio.to_thread(dnsperf, port, queries, seconds)
        finally:
            await provider.aclose()
        print(f"{stored:>7,} names stored (filled in {filled:.1f} s): {run.qps:>10,.0f} "
              f"queries/s, {run.lost} lost")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="dns-qps-") as tmp:
        folder = Path(tmp)
        throughput(folder, args.seconds, args.rounds)
        asyncio.run(negative_answers(folder, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
