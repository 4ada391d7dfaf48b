"""Does a DNS flood slow down the API? Setup latency with and without a dnsperf flood.

The gateway (bench/rig: HTTPS, basic auth, ``PROVIDER=builtin``) checks
propagation against its own builtin server (``PROPAGATION_NAMESERVERS``), so
every setup goes through the HTTP API, the journal, the DNS server's change
and a DNS query to it. One authenticated client sends setups (and the matching
teardowns, untimed) one after another on a keep-alive connection: first
alone, then while dnsperf (Debian ``dnsperf``) floods the DNS port at full
speed (no rate limiting: ``BUILTIN_RATE_LIMIT=0``), then alone again. Printed:
the setup latency (p50, p99), the errors, the flood's queries/s, and the p99
with the flood against the p99 without (the target is at most 3x).

Run: ``python bench/dns_isolation.py [--setups 300]``. Needs dnsperf. Prints figures only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.rig.gateway import (  # noqa: E402
    DOMAIN,
    basic_header,
    describe_ms,
    machine,
    make_rig,
    percentile,
    running,
)
from tests.conftest import make_value  # noqa: E402
from tests.system import free_port, need_program  # noqa: E402


def setups(conn: http.client.HTTPSConnection, count: int) -> tuple[list[float], int]:
    """*count* timed setups, each followed by its teardown; (latencies, errors)."""
    headers = {"Authorization": basic_header(), "Content-Type": "application/json"}
    times: list[float] = []
    errors = 0
    for _ in range(count):
        value = make_value()
        for argument in ("setup", "teardown"):
            body = json.dumps({"argument": argument, "domain_name": DOMAIN,
                               "challenge_content": value})
            started = time.monotonic()
            conn.request("POST", "/", body=body, headers=headers)
            answer = conn.getresponse()
            answer.read()
            if argument == "setup":
                times.append(time.monotonic() - started)
            if answer.status not in (200, 201):
                errors += 1
    return times, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setups", type=int, default=300)
    args = parser.parse_args(argv)
    dnsperf = need_program("dnsperf", "dnsperf")
    print(machine())
    with tempfile.TemporaryDirectory(prefix="dns-isolation-") as tmp:
        folder = Path(tmp)
        dns_port = free_port()
        rig = make_rig(folder, BUILTIN_LISTEN=f"127.0.0.1:{dns_port}",
                       PROPAGATION_NAMESERVERS=f"127.0.0.1:{dns_port}",
                       BUILTIN_RATE_LIMIT="0", LOG_LEVEL="WARNING")
        queries = folder / "queries"
        queries.write_text(f"_acme-challenge.{DOMAIN} SOA\n_acme-challenge.{DOMAIN} TXT\n"
                           f"x._acme-challenge.{DOMAIN} TXT\n")
        with running(rig) as (gw, _):
            conn = http.client.HTTPSConnection("127.0.0.1", rig.port, timeout=30,
                                               context=rig.client_context())
            setups(conn, 20)  # warm-up
            quiet, quiet_errors = setups(conn, args.setups)
            flood = subprocess.Popen(
                [dnsperf, "-s", "127.0.0.1", "-p", str(dns_port), "-d", str(queries),
                 "-l", "600", "-c", "4", "-q", "100", "-t", "2", "-S", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True)
            try:
                time.sleep(1.0)
                flooded, flood_errors = setups(conn, args.setups)
            finally:
                os.kill(flood.pid, signal.SIGINT)
                out, _ = flood.communicate(timeout=60)
            after, after_errors = setups(conn, args.setups)
            conn.close()
            if "Traceback" in gw.stderr:
                print(gw.stderr[-3000:])
    # With -S 1 dnsperf prints "<time>: <queries/s>" every second.
    rates = [float(m.group(1)) for m in re.finditer(r"^\d+\.\d+: ([\d.]+)$", out, re.M)]
    rate = sorted(rates)[len(rates) // 2] if rates else float("nan")
    print(f"setup latency, {args.setups} setups each (HTTPS, basic auth, propagation "
          "checked against the builtin server itself)")
    print(f"  alone:             {describe_ms(quiet)}, {quiet_errors} errors")
    print(f"  during the flood:  {describe_ms(flooded)}, {flood_errors} errors "
          f"(dnsperf answered {rate:,.0f} queries/s, median of its 1 s reports)")
    print(f"  alone again:       {describe_ms(after)}, {after_errors} errors")
    ratio = percentile(flooded, 99) / percentile(quiet + after, 99)
    print(f"p99 during the flood / p99 alone: {ratio:.2f}x (target <= 3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
