"""Response rate limiting under a flood: does a CA in another network still get its answers?

The real gateway (``python -m gateway``, ``PROVIDER=builtin``, rate limiting at
its defaults: 20 answers/s per /24, slip 2) serves one TXT value. A flooder
process sends TXT queries from 127.0.0.1 as fast as Python can send them
(without waiting for answers) for ``--seconds``, and counts what comes back:
full answers and truncated (slipped) ones. Meanwhile a "CA" at 127.0.1.1 (another
/24) asks 10 times a second and waits up to 2 s for each answer. Printed: the
CA's answers (the target is at least 99 %), the flood's sent queries, full
answers (the limit allows 20 a second) and truncated answers, and the bytes
sent against the bytes received (no amplification).

Run: ``python bench/dns_rrl.py [--seconds 10]``. Prints figures only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import socket
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
import requests  # noqa: E402

from bench.rig.gateway import machine  # noqa: E402
from tests.conftest import make_value  # noqa: E402
from tests.gateway.procs import builtin_settings, running_gateway  # noqa: E402
from tests.system import free_port  # noqa: E402

NAME = "_acme-challenge.example.test"


def flood(port: int, seconds: float, results: multiprocessing.Queue[tuple[int, ...]]) -> None:
    """Send as fast as possible from 127.0.0.1; count full and truncated answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    counts = {"full": 0, "truncated": 0, "bytes_in": 0}
    stop = threading.Event()

    def read() -> None:
        sock.settimeout(0.5)
        while not stop.is_set():
            try:
                data = sock.recv(4096)
            except (TimeoutError, ConnectionRefusedError):
                continue
            counts["bytes_in"] += len(data)
            counts["truncated" if data[2] & 0x02 else "full"] += 1

    reader = threading.Thread(target=read)
    reader.start()
    query = dns.message.make_query(NAME, "TXT").to_wire()
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(100):
            try:
                sock.send(query)
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass
    time.sleep(1.0)
    stop.set()
    reader.join()
    results.put((sent, counts["full"], counts["truncated"], sent * len(query),
                 counts["bytes_in"]))


def ca(port: int, seconds: float, value: str) -> tuple[int, int]:
    """Ask 10 times a second from 127.0.1.1; (asked, answered with the value)."""
    asked = answered = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        # A new socket, so a new source port, for every query: as resolvers do.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.1.1", 0))
            sock.connect(("127.0.0.1", port))
            sock.settimeout(2.0)
            query = dns.message.make_query(NAME, "TXT")
            sock.send(query.to_wire())
            asked += 1
            try:
                reply = dns.message.from_wire(sock.recv(4096))
                if reply.id == query.id and not reply.flags & dns.flags.TC and any(
                    b"".join(r.strings).decode() == value for rrset in reply.answer for r in rrset
                ):
                    answered += 1
            except (TimeoutError, dns.exception.DNSException):
                pass
        time.sleep(max(0.0, started + asked / 10 - time.monotonic()))
    return asked, answered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(machine())
    with tempfile.TemporaryDirectory(prefix="dns-rrl-") as tmp:
        folder = Path(tmp)
        port, dns_port = free_port(), free_port()
        # Rate limiting at its defaults: no BUILTIN_RATE_LIMIT_EXEMPT for loopback.
        settings = builtin_settings(folder, port, dns_port, PROPAGATION_CHECK="off")
        with running_gateway(folder, settings):
            value = make_value()
            answer = requests.post(f"http://127.0.0.1:{port}/", timeout=20, json={
                "argument": "setup", "domain_name": "example.test",
                "challenge_content": value})
            assert answer.status_code == 201, answer.text
            results: multiprocessing.Queue[tuple[int, ...]] = multiprocessing.Queue()
            flooder = multiprocessing.Process(target=flood,
                                              args=(dns_port, args.seconds, results))
            flooder.start()
            time.sleep(0.5)
            asked, answered = ca(dns_port, args.seconds - 1.0, value)
            sent, full, truncated, bytes_out, bytes_in = results.get(timeout=args.seconds + 30)
            flooder.join()
    print(f"flood from 127.0.0.1 for {args.seconds:g} s: {sent:,} queries sent "
          f"({sent / args.seconds:,.0f}/s); {full:,} full answers (the limit allows "
          f"{20 * (int(args.seconds) + 1)}), {truncated:,} truncated; "
          f"{bytes_out:,} bytes sent, {bytes_in:,} received")
    print(f"the CA at 127.0.1.1, 10 queries/s: {answered}/{asked} answered "
          f"({100 * answered / max(asked, 1):.1f} %, target >= 99 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
