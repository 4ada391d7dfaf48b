"""How soon after "served everywhere" does lib.dnscheck.wait_for_txt return?

Starts a BIND primary and a secondary that lags until told to transfer
(tests/servers/bind.py), then, for each run: adds a TXT value through the
rfc2136 provider, starts ``wait_for_txt`` on both servers, lets the secondary
lag for a while, makes it transfer, and compares the moment ``wait_for_txt``
returned with the moment the secondary first served the value (found by an
independent tight poll in a thread). Prints min/median/max of that overshoot.

Run: ``python bench/propagation.py [--runs 10] [--lag 0.1:1.5]``. Needs bind9.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402

from lib.dnscheck import PropagationSettings, wait_for_txt  # noqa: E402
from lib.settings import Settings  # noqa: E402
from providers.base import ProviderContext  # noqa: E402
from providers.rfc2136 import Rfc2136Provider  # noqa: E402
from tests.conftest import make_value  # noqa: E402
from tests.servers.bind import BindServer, bind_pair  # noqa: E402

NAME = "_acme-challenge.www.example.test"


def first_served(server: BindServer, value: str, stop: threading.Event,
                 found: list[float]) -> None:
    """Poll *server* as fast as it answers; record when it first serves *value*."""
    query = dns.message.make_query(NAME, "TXT")
    query.flags &= ~dns.flags.RD
    while not stop.is_set():
        try:
            response = dns.query.udp(query, server.host, timeout=0.5, port=server.port)
        except Exception:
            continue
        seen = time.monotonic()
        if any(value == b"".join(r.strings).decode() for rrset in response.answer for r in rrset
               if rrset.rdtype == 16):
            found.append(seen)
            return


async def one_run(primary: BindServer, secondary: BindServer, provider: Rfc2136Provider,
                  lag: float, settings: PropagationSettings) -> tuple[float, float]:
    """(overshoot after served everywhere, total wait) in seconds."""
    value = make_value()
    stop = threading.Event()
    found: list[float] = []
    poller = threading.Thread(target=first_served, args=(secondary, value, stop, found))
    poller.start()
    try:
        await provider.add_txt(NAME, value)
        start = time.monotonic()
        waiting = asyncio.create_task(wait_for_txt(NAME, value, settings))
        await asyncio.sleep(lag)
        await asyncio.to_thread(secondary.sync)
        await waiting
        returned = time.monotonic()
    finally:
        stop.set()
        await asyncio.to_thread(poller.join)
    await provider.remove_txt(NAME, value)
    served = found[0] if found else float("nan")
    return returned - served, returned - start


async def bench(runs: int, lag_min: float, lag_max: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, bind_pair(Path(tmp)) as (primary, secondary):
        provider = Rfc2136Provider.from_settings(Settings({
            "RFC2136_SERVER": primary.host, "RFC2136_PORT": str(primary.port),
            "RFC2136_TSIG_KEY_NAME": primary.key.name, "RFC2136_TSIG_SECRET": primary.key.secret,
        }), ProviderContext())
        await provider.open()
        settings = PropagationSettings(nameservers=(primary.address, secondary.address),
                                       timeout=60)
        overshoots: list[float] = []
        print(f"{'run':>3} {'lag s':>6} {'waited s':>9} {'after served ms':>16}")
        for i in range(runs):
            # Spread the lags evenly so the runs sample every phase of the back-off.
            lag = lag_min + (lag_max - lag_min) * (i / max(runs - 1, 1))
            over, total = await one_run(primary, secondary, provider, lag, settings)
            overshoots.append(over)
            print(f"{i + 1:>3} {lag:>6.2f} {total:>9.3f} {over * 1000:>16.1f}")
        await provider.aclose()
    print(f"returned after served everywhere (ms): min {min(overshoots) * 1000:.1f}  "
          f"median {statistics.median(overshoots) * 1000:.1f}  "
          f"max {max(overshoots) * 1000:.1f}  "
          f"(first_check {settings.first_check:g}s, max_interval {settings.max_interval:g}s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--lag", default="0.1:1.5", help="min:max secondary lag in seconds")
    args = parser.parse_args(argv)
    lag_min, lag_max = (float(x) for x in args.lag.split(":"))
    try:
        asyncio.run(bench(args.runs, lag_min, lag_max))
    except BaseException as exc:  # pytest's skip when named is missing is a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
