"""Many client addresses, each under its own connection cap, together lock nobody out.

The per-client caps (``MAX_CONNECTIONS_PER_CLIENT`` for the API,
``BUILTIN_TCP_CLIENTS_PER_ADDRESS`` for the builtin DNS over TCP) stop one
address from taking every slot; the totals (``MAX_CONNECTIONS``,
``BUILTIN_TCP_CLIENTS``) make room for a newcomer only by closing an *idle*
connection. A connection that has sent the first byte of a request head (or
of a DNS query's length) is not idle: total / per-client addresses — 32 with
the defaults, an IPv6 /59 or 32 machines — each holding its quota of such
connections, refreshed before the header timeout, take every slot, and an
allowed client gets 503 (the API) or is hung up on (DNS over TCP) for as long
as they keep it up.

Against a real gateway with small caps: four addresses (127.0.0.10-13) each
fill their quota with one byte per connection, filling the total; a client
from 127.0.0.1 must still be served. The API's rule (gateway/listeners.py): a
newcomer whose address holds at least two fewer connections than the biggest
holder takes that holder's oldest connection that is not being served. The
rule must not be a weapon in turn: it takes from the biggest holder, not the
oldest connection in all, and never a client's only connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from tests.gateway.procs import builtin_settings, gateway_settings, running_gateway
from tests.gateway.rawhttp import closed_by_gateway, connect, read_response
from tests.hostile.wire import send, unread
from tests.system import free_port, wait_until

ATTACKERS = [f"127.0.0.{n}" for n in range(10, 14)]
PER_CLIENT = 4
TOTAL = PER_CLIENT * len(ATTACKERS)


@contextmanager
def held(port: int, first_bytes: bytes) -> Iterator[list[socket.socket]]:
    """Every attacker address holds PER_CLIENT connections that sent *first_bytes*,
    each read by the server."""
    with ExitStack() as stack:
        socks = []
        for source in ATTACKERS:
            for _ in range(PER_CLIENT):
                sock = stack.enter_context(connect(port, source))
                sock.sendall(first_bytes)
                socks.append(sock)
        wait_until(lambda: all(unread(port, s) == 0 for s in socks),
                   "the server to read every first byte")
        yield socks


def api_settings(tmp_path: Path, port: int, total: int) -> dict[str, str]:
    return gateway_settings(
        tmp_path, port,
        MAX_CONNECTIONS=str(total),
        HTTP_HEADER_TIMEOUT="120",  # the attack renews them; the test holds them
    )


def test_api_many_addresses_lock_nobody_out(tmp_path: Path) -> None:
    port = free_port()
    settings = api_settings(tmp_path, port, TOTAL)
    settings["MAX_CONNECTIONS_PER_CLIENT"] = str(PER_CLIENT)
    with running_gateway(tmp_path, settings), held(port, b"G"):
        answer = send(port, "GET", "/healthz", timeout=30)
        assert answer.status == 200, answer


def served(port: int, source: str) -> int:
    """Status of GET /healthz on a new connection from *source* (0: closed unanswered)."""
    with contextlib.closing(connect(port, source)) as sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
            return read_response(sock)[0]
        except OSError:
            return 0


def begun(port: int, source: str, head: bytes = b"G") -> socket.socket:
    """A connection from *source* that sent the start of a head, read by the server."""
    sock = connect(port, source)
    sock.sendall(head)
    wait_until(lambda: unread(port, sock) == 0, "the server to read the first bytes")
    return sock


HALF_HEAD = b"GET /healthz HTTP/1.1\r\n"  # a slow link's client, its head on the way
REST = b"Host: gw\r\n\r\n"


def test_api_a_newcomer_takes_from_the_biggest_holder(tmp_path: Path) -> None:
    """Not the oldest connection in all: a client whose two heads are on their way
    (and older than everyone else's) keeps both."""
    port = free_port()
    with running_gateway(tmp_path, api_settings(tmp_path, port, 5)), ExitStack() as stack:
        client = [stack.enter_context(begun(port, "127.0.0.1", HALF_HEAD)) for _ in range(2)]
        attacker = [stack.enter_context(begun(port, "127.0.0.10")) for _ in range(3)]
        assert served(port, "127.0.0.11") == 200
        assert [closed_by_gateway(s) for s in attacker] == [True, False, False]
        for sock in client:
            sock.sendall(REST)
            assert read_response(sock)[0] == 200


def test_api_a_client_holding_one_connection_keeps_it(tmp_path: Path) -> None:
    """Fresh addresses cannot push out a client's only connection: with every
    address holding one, nobody has more to give up and the newcomer is refused."""
    port = free_port()
    with running_gateway(tmp_path, api_settings(tmp_path, port, 4)), ExitStack() as stack:
        client = stack.enter_context(begun(port, "127.0.0.1", HALF_HEAD))
        for source in ATTACKERS[:3]:
            stack.enter_context(begun(port, source))
        assert served(port, "127.0.0.20") == 503
        client.sendall(REST)
        assert read_response(client)[0] == 200


def tcp_query(port: int) -> int:
    """rcode of an SOA query over TCP from 127.0.0.1, -1 if the server hangs up."""
    query = dns.message.make_query("_acme-challenge.example.test", "SOA")
    try:
        return int(dns.query.tcp(query, "127.0.0.1", port=port, timeout=15).rcode())
    except (EOFError, ConnectionError, OSError):
        return -1


def test_builtin_tcp_many_addresses_lock_nobody_out(tmp_path: Path) -> None:
    port, dns_port = free_port(), free_port()
    settings = builtin_settings(
        tmp_path, port, dns_port,
        BUILTIN_TCP_CLIENTS=str(TOTAL),
        BUILTIN_TCP_CLIENTS_PER_ADDRESS=str(PER_CLIENT),
        BUILTIN_TCP_READ_TIMEOUT="120",
    )
    with running_gateway(tmp_path, settings):
        assert tcp_query(dns_port) == dns.rcode.NOERROR
        # The first byte of a two-byte length: a query begun and never finished.
        with held(dns_port, struct.pack("!H", 40)[:1]):
            assert tcp_query(dns_port) == dns.rcode.NOERROR
