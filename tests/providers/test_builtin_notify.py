"""NOTIFY from the builtin server's process, as a secondary receives it on the wire.

The secondary is a UDP socket of the test's (it decides whether to answer);
the primary is the real server process of :class:`BuiltinProvider` with that
socket in ``BUILTIN_SECONDARIES``. What a real BIND and Knot make of the
NOTIFY messages is in test_builtin_transfer.py and bench/dns_secondaries.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype

from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.conftest import make_value
from tests.system import free_port

ZONE = "acme.example.net"
NAME = f"d1.{ZONE}"
TIMEOUT = 15.0


@contextlib.contextmanager
def secondary() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(TIMEOUT)
        yield sock
    finally:
        sock.close()


@contextlib.asynccontextmanager
async def primary(target: socket.socket) -> AsyncIterator[tuple[BuiltinProvider, int]]:
    port = free_port()
    settings = BuiltinSettings(
        listen=(("127.0.0.1", port),),
        zone=ZONE,
        nameservers=("ns1.example.net",),
        rate_limit=0,
        secondaries=(target.getsockname(),),
    )
    provider = BuiltinProvider(settings, ("example.test",))
    await provider.open()
    try:
        yield provider, port
    finally:
        await provider.aclose()


async def next_notify(sock: socket.socket) -> tuple[dns.message.Message, tuple[str, int]]:
    """The next NOTIFY that reaches *sock*, and where it came from."""
    data, peer = await asyncio.to_thread(sock.recvfrom, 65535)
    message = dns.message.from_wire(data)
    assert message.opcode() == dns.opcode.NOTIFY, message
    assert message.flags & dns.flags.AA
    assert message.question[0].name.to_text() == f"{ZONE}."
    assert message.question[0].rdtype == dns.rdatatype.SOA
    return message, peer


def answer(sock: socket.socket, message: dns.message.Message, peer: tuple[str, int]) -> None:
    sock.sendto(dns.message.make_response(message).to_wire(), peer)


def announced_serial(message: dns.message.Message) -> int:
    """The serial of the SOA a NOTIFY carries in its answer section (RFC 1996 3.7)."""
    (soa,) = message.answer
    assert soa.name.to_text() == f"{ZONE}." and soa.rdtype == dns.rdatatype.SOA
    return int(soa[0].serial)


async def served_serial(port: int) -> int:
    query = dns.message.make_query(ZONE, dns.rdatatype.SOA)
    reply = await asyncio.to_thread(dns.query.udp, query, "127.0.0.1", TIMEOUT, port)
    return int(reply.answer[0][0].serial)


async def test_notify_carries_the_serial_the_zone_has() -> None:
    with secondary() as sock:
        async with primary(sock) as (provider, port):
            # At start: the serial it serves from then on.
            message, peer = await next_notify(sock)
            first = await served_serial(port)
            assert announced_serial(message) == first
            answer(sock, message, peer)
            await provider.add_txt(NAME, make_value())
            message, peer = await next_notify(sock)
            assert announced_serial(message) == await served_serial(port) > first
            answer(sock, message, peer)


async def test_a_change_while_a_notify_is_unanswered_is_announced_with_its_serial() -> None:
    with secondary() as sock:
        async with primary(sock) as (provider, port):
            await next_notify(sock)  # not answered: a secondary still starting, say
            await provider.add_txt(NAME, make_value())
            changed = await served_serial(port)
            while True:
                message, peer = await next_notify(sock)
                if announced_serial(message) == changed:
                    break
            # Answered, it stops until the next change (a retry that crossed the
            # answer on the way is answered too).
            sock.settimeout(2.0)
            for _ in range(10):
                answer(sock, message, peer)
                try:
                    message, peer = await next_notify(sock)
                except TimeoutError:
                    break
                assert announced_serial(message) == changed
            else:
                raise AssertionError("NOTIFY goes on after it was answered")
