"""The builtin server as hidden primary: how soon do a Knot and a BIND secondary follow?

The real gateway (``PROVIDER=builtin``, ``BUILTIN_ZONE=acme.example.net``,
``DELEGATIONS`` writing ``example.test``'s value into that zone) is the primary
of a Knot and a BIND secondary (tests/servers), TSIG-signed, and its
propagation check asks both (``PROPAGATION_NAMESERVERS``). For ``--runs``
setup/teardown pairs it prints: the time to the setup's 201 (the first, which
meets secondaries that have just started, apart), whether both secondaries
serve the value the moment it comes (they must), and after the teardown's
answer how long until each no longer serves it (polled every couple of
milliseconds, first Knot, then BIND; the target is under a second).

By default each setup comes as soon as the teardown before it is gone from
both secondaries, as a client's second setup comes right after its first;
``--spacing`` pauses a random while before each. Run: ``python bench/dns_secondaries.py [--runs 20]
[--spacing SECONDS]``. Needs knot and bind9. Prints figures only.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.rig.gateway import machine, percentile  # noqa: E402
from tests.conftest import make_value  # noqa: E402
from tests.gateway.procs import builtin_settings, running_gateway  # noqa: E402
from tests.servers.bind import make_key  # noqa: E402
from tests.servers.knot import secondaries_of  # noqa: E402
from tests.system import free_port  # noqa: E402

ZONE = "acme.example.net"
TARGET = f"d1.{ZONE}"


def ms(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:.0f} ms, "
            f"p90 {percentile(values, 90) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=0.0, metavar="SECONDS",
                        help="a random pause of up to SECONDS before each setup, so that the "
                        "changes do not keep in step with the secondaries' own timers")
    args = parser.parse_args(argv)
    print(machine())
    key = make_key("hmac-sha256", "bench-transfer.")
    with tempfile.TemporaryDirectory(prefix="dns-secondaries-") as tmp:
        folder = Path(tmp)
        port, dns_port, knot_port, bind_port = (free_port() for _ in range(4))
        settings = builtin_settings(
            folder, port, dns_port,
            BUILTIN_ZONE=ZONE,
            BUILTIN_NS="ns1.example.net, ns2.example.net",
            BUILTIN_SECONDARIES=f"127.0.0.1:{knot_port}, 127.0.0.1:{bind_port}",
            BUILTIN_TSIG_KEY_NAME=key.name,
            BUILTIN_TSIG_SECRET=key.secret,
            BUILTIN_RATE_LIMIT_EXEMPT="127.0.0.0/8",
            DELEGATIONS=f"example.test={TARGET}",
            PROPAGATION_NAMESERVERS=f"127.0.0.1:{knot_port}, 127.0.0.1:{bind_port}",
            LOG_LEVEL="WARNING",
        )
        with running_gateway(folder, settings), secondaries_of(
                folder, ZONE, ("127.0.0.1", dns_port), key,
                knot_port=knot_port, bind_port=bind_port) as secondaries:
            setup: list[float] = []
            served_at_201 = 0
            gone: dict[str, list[float]] = {s.title: [] for s in secondaries}
            url = f"http://127.0.0.1:{port}/"
            for _ in range(args.runs):
                time.sleep(random.uniform(0, args.spacing))
                value = make_value()
                body = {"argument": "setup", "domain_name": "example.test",
                        "challenge_content": value}
                started = time.monotonic()
                answer = requests.post(url, json=body, timeout=60)
                setup.append(time.monotonic() - started)
                assert answer.status_code == 201, answer.text
                served_at_201 += all(value in s.txt(TARGET) for s in secondaries)
                answer = requests.post(url, json={**body, "argument": "teardown"}, timeout=60)
                answered = time.monotonic()
                assert answer.status_code == 200, answer.text
                for secondary in secondaries:
                    while value in secondary.txt(TARGET):
                        time.sleep(0.002)
                    gone[secondary.title].append(time.monotonic() - answered)
    print(f"{args.runs} setups and teardowns, Knot 3 and BIND 9 secondaries of the "
          f"gateway, NOTIFY and TSIG; random pauses of up to {args.spacing:g} s")
    # The first change comes while the secondaries have just started (their first
    # transfer, the primary's first NOTIFY): shown apart from the others.
    print(f"  setup answered (201): the first {setup[0] * 1000:.0f} ms, the others "
          f"{ms(setup[1:])}; both secondaries served the value at the 201: "
          f"{served_at_201}/{args.runs}")
    for title, times in gone.items():
        print(f"  {title}: value gone after the teardown's answer: {ms(times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
