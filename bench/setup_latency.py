"""Setup through the gateway: time to answer, and how soon after "served everywhere" it comes.

Starts a BIND primary and a secondary that follows it through NOTIFY
(tests/servers/bind.py, ``bind_pair(follow=True)``), and the gateway in-process
(the start-up path of ``acmegw-server``: :func:`gateway.server.prepare`, then
:func:`gateway.app.create_app` on a loopback port) with ``PROVIDER=rfc2136`` at
the primary, basic auth, and ``PROPAGATION_NAMESERVERS`` naming both servers.

For each run, two threads poll the primary and the secondary every millisecond
or so (UDP with EDNS, no recursion), independently of the gateway, and note
when each first serves the new value; "served everywhere" is the later of the
two. A native-API setup is timed from request to answer. Printed per run and as
min/median/p90/max: the request-to-answer time, and the answer's lag behind
"served everywhere" (negative would mean the gateway answered too early).

BIND keeps its defaults, so its NOTIFY pacing shows in the request-to-answer
time: with ``notify-delay`` (5 s), a change within 5 s of the zone's previous
NOTIFY is announced only when that timer ends, just as when a client sets up
``example.com`` and ``*.example.com`` back to back. Runs alternate between
``example.test`` and ``example.org`` and the values are torn down only at the
end (a teardown would restart the timer), so 20 runs take about a minute.

Run: ``python bench/setup_latency.py [--runs 20]``. Needs bind9. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import dns.flags  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rdatatype  # noqa: E402
from aiohttp import web  # noqa: E402

from gateway.app import create_app  # noqa: E402
from gateway.server import prepare  # noqa: E402
from lib.passwd import PasswordFile  # noqa: E402
from tests.conftest import make_value  # noqa: E402
from tests.servers.bind import BindServer, bind_pair  # noqa: E402
from tests.system import free_port  # noqa: E402

DOMAINS = ("example.test", "example.org")
USER, PASSWORD = "bench", "bench-password"
POLL_DEADLINE = 60.0


def first_served(server: BindServer, name: str, value: str, stop: threading.Event,
                 found: dict[str, float]) -> None:
    """Poll *server* about every millisecond; note when it first serves *value* at *name*."""
    # EDNS: the values of earlier runs stay until the end and outgrow 512 bytes.
    query = dns.message.make_query(name, "TXT", use_edns=0, payload=4096)
    query.flags &= ~dns.flags.RD
    deadline = time.monotonic() + POLL_DEADLINE
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            response, _ = dns.query.udp_with_fallback(query, server.host, timeout=0.5,
                                                      port=server.port)
        except Exception:
            continue
        seen = time.monotonic()
        if any(value == b"".join(r.strings).decode() for rrset in response.answer
               if rrset.rdtype == dns.rdatatype.TXT for r in rrset):
            found[server.role] = seen
            return
        # A pause that releases the GIL, so the gateway's event loop is not starved.
        time.sleep(0.001)


def join_all(threads: list[threading.Thread], timeout: float | None = None) -> None:
    for thread in threads:
        thread.join(timeout)


async def call(session: aiohttp.ClientSession, url: str, argument: str, domain: str,
               value: str) -> int:
    body = {"argument": argument, "domain_name": domain, "challenge_content": value}
    async with session.post(url, json=body) as response:
        await response.read()
        return response.status


async def one_run(session: aiohttp.ClientSession, url: str, domain: str, value: str,
                  servers: tuple[BindServer, BindServer]) -> tuple[float, float]:
    """(request to answer, answer after served everywhere) in seconds."""
    stop = threading.Event()
    found: dict[str, float] = {}
    name = f"_acme-challenge.{domain}"
    pollers = [threading.Thread(target=first_served, args=(s, name, value, stop, found))
               for s in servers]
    for poller in pollers:
        poller.start()
    try:
        start = time.monotonic()
        status = await call(session, url, "setup", domain, value)
        answered = time.monotonic()
        if status != 201:
            raise RuntimeError(f"setup answered {status}")
        # The gateway said "served": the pollers should see it within moments.
        await asyncio.to_thread(join_all, pollers, 5.0)
    finally:
        stop.set()
        await asyncio.to_thread(join_all, pollers)
    everywhere = max(found.values()) if len(found) == len(servers) else float("nan")
    return answered - start, answered - everywhere


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return (f"{label:<32} min {ms[0]:7.1f}  median {statistics.median(ms):7.1f}  "
            f"p90 {p90:7.1f}  max {ms[-1]:7.1f}")


async def bench(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, \
            bind_pair(Path(tmp), follow=True) as (primary, secondary):
        passwd = Path(tmp) / "acmepasswd"
        PasswordFile(passwd).set_user(USER, PASSWORD)
        dotenv = Path(tmp) / "gateway.env"
        dotenv.write_text("")
        port = free_port()
        config, provider, passwords, _ = prepare([], {
            "DOTENV": str(dotenv),
            "DNSAPI_DOMAINS": ",".join(DOMAINS),
            "BASIC_AUTH": "required",
            "PASSWD_FILE": str(passwd),
            "LISTEN": f"127.0.0.1:{port}",
            "STATE_DIR": str(Path(tmp) / "state"),
            "PROVIDER": "rfc2136",
            "RFC2136_SERVER": primary.host,
            "RFC2136_PORT": str(primary.port),
            "RFC2136_TSIG_KEY_NAME": primary.key.name,
            "RFC2136_TSIG_SECRET": primary.key.secret,
            "PROPAGATION_CHECK": "authoritative",
            "PROPAGATION_NAMESERVERS": f"{primary.address}, {secondary.address}",
            "PROPAGATION_TIMEOUT": "30",
        })
        runner = web.AppRunner(create_app(config, provider, passwords))
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            url = f"http://127.0.0.1:{port}/"
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            timeout = aiohttp.ClientTimeout(total=60)
            async with aiohttp.ClientSession(headers={"Authorization": f"Basic {token}"},
                                             timeout=timeout) as session:
                # Warm-up (not counted): the first login pays for scrypt; a
                # teardown of a value that is not there changes no zone.
                if await call(session, url, "teardown", DOMAINS[0], make_value()) != 200:
                    raise RuntimeError("warm-up teardown failed")
                totals: list[float] = []
                lags: list[float] = []
                published: list[tuple[str, str]] = []
                print(f"{'run':>3} {'zone':<13} {'request to answer ms':>21} "
                      f"{'after served everywhere ms':>27}")
                for i in range(runs):
                    domain, value = DOMAINS[i % len(DOMAINS)], make_value()
                    published.append((domain, value))
                    total, lag = await one_run(session, url, domain, value,
                                               (primary, secondary))
                    totals.append(total)
                    lags.append(lag)
                    print(f"{i + 1:>3} {domain:<13} {total * 1000:>21.1f} {lag * 1000:>27.1f}")
                for domain, value in published:
                    if await call(session, url, "teardown", domain, value) != 200:
                        raise RuntimeError("teardown failed")
        finally:
            await runner.cleanup()
    print(summary("request to answer (ms)", totals))
    print(summary("after served everywhere (ms)", lags))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    try:
        asyncio.run(bench(args.runs))
    except BaseException as exc:  # pytest's skip when named is missing is a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
