"""Gateway throughput and latency: authenticated setup+teardown pairs under wrk.

The gateway runs as ``python -m gateway`` over HTTPS (a throw-away CA and
certificate) with ``BASIC_AUTH=required`` and ``PROVIDER=builtin``, with
``PROPAGATION_CHECK`` at its default: the builtin provider is the
authoritative server itself, so there is nothing to poll. wrk (Debian package
``wrk``) keeps its connections open and runs a Lua script that alternates
native-API setup and teardown POSTs, each pair on a name and value of its own
(``_acme-challenge.t<thread>-<n>.example.test``, 43 base64url characters), at
concurrency 1, 16 and 64. Printed per level: requests per second (a pair is
two), p50/p99/max latency, the answers by status, and the gateway's RSS.

The first request pays for one scrypt check (then the verified credentials are
cached for ``AUTH_CACHE_TTL``); a warm-up sends it before wrk starts.

Run: ``python bench/gateway_load.py [--duration 10] [--levels 1,16,64]``.
Prints figures only; never asserts. Targets (README "Performance"): at least
1,500 requests/s at concurrency 16 with p99 under 25 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rig.gateway import (  # noqa: E402
    DOMAIN,
    Rig,
    basic_header,
    machine,
    make_rig,
    memory_kib,
    running,
)

# wrk calls setup() per thread in the main Lua state, init() and request() in each
# thread's own state, and done() once at the end; done() reads each thread's
# status counts through thread:get().
LUA = r"""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  counter = 0
  statuses = {}
  wrk.method = "POST"
  wrk.path = "/"
  wrk.headers["Authorization"] = args[1]
  wrk.headers["Content-Type"] = "application/json"
  domain = args[2]
end

-- 43 base64url characters, one value per (thread, pair).
local function value(n)
  local head = string.format("t%03dn%012d", id, n)
  return head .. string.rep("A", 43 - #head)
end

function request()
  local n = math.floor(counter / 2)
  local argument = (counter % 2 == 0) and "setup" or "teardown"
  counter = counter + 1
  local body = string.format(
    '{"argument":"%s","domain_name":"t%d-%d.%s","challenge_content":"%s"}',
    argument, id, n, domain, value(n))
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for status, n in pairs(s) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"status":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
    e.timeout, e.status, table.concat(parts, ",")))
end
"""


def warm_up(rig: Rig) -> None:
    """One authenticated teardown (of a value that is not there): pays the scrypt check."""
    conn = http.client.HTTPSConnection("127.0.0.1", rig.port, timeout=30,
                                       context=rig.client_context())
    body = json.dumps({"argument": "teardown", "domain_name": f"warm-up.{DOMAIN}",
                       "challenge_content": "W" * 43})
    try:
        conn.request("POST", "/", body, {"Authorization": basic_header(),
                                         "Content-Type": "application/json"})
        status = conn.getresponse().status
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"warm-up teardown answered {status}")


class PeakRSS(threading.Thread):
    """Samples the gateway's RSS every 50 ms (VmHWM would include start-up)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, memory_kib(self.pid)["VmRSS"])
            except (OSError, KeyError):
                return
            self.stop.wait(0.05)


@dataclass(frozen=True)
class WrkResult:
    rate: float  # requests per second
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict[str, int]
    errors: dict[str, int]  # socket errors and timeouts, only those that happened

    @classmethod
    def parse(cls, data: dict[str, Any]) -> WrkResult:
        return cls(
            rate=data["requests"] / (data["duration_us"] / 1e6),
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            statuses=dict(data["statuses"]),
            errors={k: v for k, v in data["errors"].items() if v and k != "status"},
        )


def run_wrk(wrk: str, rig: Rig, script: Path, connections: int, duration: int) -> WrkResult:
    threads = min(2, connections)
    argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
            "-s", str(script), rig.url + "/", "--", basic_header(), DOMAIN]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                          check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK-JSON "):
            return WrkResult.parse(json.loads(line[len("WRK-JSON "):]))
    raise RuntimeError(f"wrk failed (exit {done.returncode}): {done.stderr or done.stdout}")


def journal_records(rig: Rig) -> int:
    """Values still journaled, read from /metrics (left over by pairs wrk cut short)."""
    conn = http.client.HTTPSConnection("127.0.0.1", rig.port, timeout=10,
                                       context=rig.client_context())
    try:
        conn.request("GET", "/metrics", headers={"Authorization": basic_header()})
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith("acmegw_journal_records "):
            return int(float(line.split()[1]))
    return -1


def bench(levels: list[int], duration: int) -> int:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (Debian package wrk): skipped", file=sys.stderr)
        return 0
    print(f"machine: {machine()}")
    print(f"gateway: HTTPS, BASIC_AUTH=required, PROVIDER=builtin; wrk, {duration} s per level")
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(Path(tmp))
        script = Path(tmp) / "pairs.lua"
        script.write_text(LUA)
        with running(rig) as (gw, startup):
            idle = memory_kib(gw.pid)["VmRSS"]
            print(f"start-up to /healthz {startup * 1000:.0f} ms; idle RSS {idle / 1024:.1f} MiB")
            warm_up(rig)
            print(f"{'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} "
                  f"{'max ms':>7} {'peak RSS MiB':>12}  answers")
            for connections in levels:
                sampler = PeakRSS(gw.pid)
                sampler.start()
                try:
                    result = run_wrk(wrk, rig, script, connections, duration)
                finally:
                    sampler.stop.set()
                    sampler.join()
                r = result
                print(f"{connections:>5} {r.rate:>8.0f} {r.p50_ms:>7.1f} {r.p90_ms:>7.1f} "
                      f"{r.p99_ms:>7.1f} {r.max_ms:>7.1f} {sampler.peak / 1024:>12.1f}  "
                      f"{r.statuses}{' errors ' + str(r.errors) if r.errors else ''}")
                time.sleep(1)
            print(f"values still journaled after the runs (pairs cut off by wrk's stop): "
                  f"{journal_records(rig)}")
            print(f"RSS after the runs {memory_kib(gw.pid)['VmRSS'] / 1024:.1f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per level")
    parser.add_argument("--levels", default="1,16,64", help="connections, comma-separated")
    args = parser.parse_args(argv)
    try:
        return bench([int(c) for c in args.levels.split(",")], args.duration)
    except Exception as exc:
        print(f"bench failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
