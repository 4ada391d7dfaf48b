"""A wrong-password flood must not starve honest clients.

The gateway runs as in ``bench/gateway_load.py`` (HTTPS, ``BASIC_AUTH=required``,
``PROVIDER=builtin``). wrk (Debian package ``wrk``) keeps 16 connections busy
sending setups as the known user with a wrong password, while a good client
sends setup and teardown pairs with the right password, each request on a NEW
TLS connection (handshake included in its time), one after the other. Printed:
the good client's latency (p50/p99/max) and the flood's rate and answers, in
three rounds:

1. ``quiet``: the good client alone, for reference;
2. ``flood, limiter on``: default ``AUTH_MAX_FAILURES``; the flood comes from
   the good client's own address (everything here is 127.0.0.1), so past ten
   failures that address gets 429 before any hashing, and the good client gets
   through because its exact credentials were verified before the flood (a
   client that logs in for the first time during such a flood gets 429 too);
3. ``flood, limiter off``: ``AUTH_MAX_FAILURES`` so high it never trips, as
   with a flood spread over many addresses: every wrong password costs a
   scrypt check in the hashing threads, and the event loop must still serve
   the good client.

Then unknown and known users with wrong passwords, 20 of each, alternating,
with the limiter off: their rejection times should not tell them apart.

Run: ``python bench/auth_flood.py [--duration 10]``. Prints figures only.
Target (README "Performance"): the good client's p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rig.gateway import (  # noqa: E402
    DOMAIN,
    PASSWORD,
    USER,
    Rig,
    basic_header,
    describe_ms,
    machine,
    make_rig,
    running,
)

FLOOD = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  wrk.method = "POST"
  wrk.path = "/"
  wrk.headers["Authorization"] = args[1]
  wrk.headers["Content-Type"] = "application/json"
  wrk.body = '{"argument":"setup","domain_name":"' .. args[2] ..
             '","challenge_content":"' .. string.rep("F", 43) .. '"}'
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  io.write(string.format('WRK-JSON {"requests":%d,"duration_us":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, table.concat(parts, ",")))
end
"""


def one_request(rig: Rig, body: dict[str, str], header: str) -> tuple[int, float]:
    """One POST on a new TLS connection: (status, seconds including the handshake)."""
    started = time.perf_counter()
    conn = http.client.HTTPSConnection("127.0.0.1", rig.port, timeout=30,
                                       context=rig.client_context())
    try:
        conn.request("POST", "/", json.dumps(body), {"Authorization": header,
                                                     "Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        status = response.status
    finally:
        conn.close()
    return status, time.perf_counter() - started


def good_client(rig: Rig, seconds: float) -> tuple[list[float], dict[int, int]]:
    """Setup/teardown pairs, a new connection per request, for *seconds*."""
    times: list[float] = []
    statuses: dict[int, int] = {}
    header = basic_header()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        value = f"good{n:012d}".ljust(43, "G")
        for argument in ("setup", "teardown"):
            body = {"argument": argument, "domain_name": f"good-{n}.{DOMAIN}",
                    "challenge_content": value}
            status, took = one_request(rig, body, header)
            statuses[status] = statuses.get(status, 0) + 1
            times.append(took)
        n += 1
    return times, statuses


class Flood(threading.Thread):
    def __init__(self, wrk: str, rig: Rig, script: Path, seconds: int) -> None:
        super().__init__(daemon=True)
        self.argv = [wrk, "-t2", "-c16", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
                     rig.url + "/", "--", basic_header(USER, "wrong " + PASSWORD), DOMAIN]
        self.result: dict[str, Any] | None = None
        self.error = ""

    def run(self) -> None:
        done = subprocess.run(self.argv, capture_output=True, text=True, timeout=600, check=False)
        for line in done.stdout.splitlines():
            if line.startswith("WRK-JSON "):
                self.result = json.loads(line[len("WRK-JSON "):])
        self.error = done.stderr or done.stdout


def round_(label: str, rig: Rig, wrk: str, script: Path, duration: int, flood: bool,
           env: dict[str, str]) -> None:
    with running(rig, env) as (_, _startup):
        # The good client's credentials are verified once before the flood starts.
        status, _took = one_request(
            rig, {"argument": "teardown", "domain_name": f"warm-up.{DOMAIN}",
                  "challenge_content": "W" * 43}, basic_header())
        if status != 200:
            raise RuntimeError(f"warm-up answered {status}")
        flooder = Flood(wrk, rig, script, duration + 2) if flood else None
        if flooder is not None:
            flooder.start()
            time.sleep(1)  # let the flood reach its pace
        times, statuses = good_client(rig, duration)
        if flooder is not None:
            flooder.join()
    line = f"{label:<20} good client: {describe_ms(times)}; answers {statuses}"
    if flooder is not None:
        result = flooder.result
        if result is None:
            line += f"; flood failed: {flooder.error.strip()[:200]}"
        else:
            rate = float(result["requests"]) / (float(result["duration_us"]) / 1e6)
            line += f"\n{'':<20} flood: {rate:.0f} req/s, answers {result['statuses']}"
    print(line, flush=True)


def rejection_times(rig: Rig, count: int) -> None:
    """Unknown versus known user, wrong password, alternating, limiter off."""
    with running(rig, {"AUTH_MAX_FAILURES": "100000"}):
        body = {"argument": "teardown", "domain_name": f"x.{DOMAIN}", "challenge_content": "X" * 43}
        known: list[float] = []
        unknown: list[float] = []
        for i in range(count):
            for user, into in ((USER, known), (f"nobody{i}", unknown)):
                status, took = one_request(rig, body, basic_header(user, f"wrong {i}"))
                if status != 401:
                    raise RuntimeError(f"a wrong password answered {status}")
                into.append(took)
    print(f"{'rejections':<20} known user:   {describe_ms(known)}")
    gap = abs(statistics.median(known) - statistics.median(unknown)) * 1000
    print(f"{'':<20} unknown user: {describe_ms(unknown)} (medians differ by {gap:.1f} ms)")


def bench(duration: int) -> int:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (Debian package wrk): skipped", file=sys.stderr)
        return 0
    print(f"machine: {machine()}")
    print(f"flood: wrk, 16 connections, known user, wrong password; {duration} s per round")
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(Path(tmp))
        script = Path(tmp) / "flood.lua"
        script.write_text(FLOOD)
        round_("quiet", rig, wrk, script, duration, False, {})
        round_("flood, limiter on", rig, wrk, script, duration, True, {})
        round_("flood, limiter off", rig, wrk, script, duration, True,
               {"AUTH_MAX_FAILURES": "100000"})
        rejection_times(rig, 20)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per round")
    args = parser.parse_args(argv)
    try:
        return bench(args.duration)
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
