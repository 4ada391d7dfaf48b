"""The builtin server under attack, on the wire: junk names, floods, and TCP hogs.

Each test attacks a running server over loopback sockets. Sources in other
networks are other loopback addresses (127.0.1.1 is another /24 than
127.0.0.1), bound as the source of the attacking or innocent socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from providers.builtin import BuiltinProvider, BuiltinSettings
from providers.builtin.network import TcpLimits
from tests.conftest import make_value
from tests.hostile.wire import unread
from tests.system import free_port

MANAGED = ("example.test",)
ZONE = "acme.example.net"
NAME = "_acme-challenge.example.test"
TIMEOUT = 5.0


def _settings(port: int, **changes: object) -> BuiltinSettings:
    values: dict[str, object] = {
        "listen": (("127.0.0.1", port),),
        "zone": ZONE,
        "nameservers": ("ns1.gw.example.net",),
    }
    values.update(changes)
    return BuiltinSettings(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def serving(settings: BuiltinSettings) -> AsyncIterator[BuiltinProvider]:
    provider = BuiltinProvider(settings, MANAGED)
    await provider.open()
    try:
        yield provider
    finally:
        await provider.aclose()


@contextlib.contextmanager
def udp_from(source: str) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((source, 0))
        yield sock
    finally:
        sock.close()


def query_wire(name: str = NAME, rdtype: str = "TXT", qid: int | None = None) -> bytes:
    query = dns.message.make_query(name, rdtype, use_edns=False)
    if qid is not None:
        query.id = qid
    return query.to_wire()


async def receive(sock: socket.socket) -> dns.message.Message:
    """The next reply on *sock* (in a thread: the server may share this event loop)."""
    sock.settimeout(TIMEOUT)
    return dns.message.from_wire(await asyncio.to_thread(sock.recv, 65535))


def receive_all(sock: socket.socket, quiet: float) -> list[dns.message.Message]:
    """Every reply that arrives until none has for *quiet* seconds."""
    replies = []
    sock.settimeout(quiet)
    while True:
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return replies
        replies.append(dns.message.from_wire(data))


# -- item 6 of issue 12: query bytes never become record fields --------------------


JUNK_LABELS = [b"x. 1 2 3 4 5;", b"a b", b"semi;colon", b"caf\xc3\xa9", b"\x00\xff", b"(paren)"]


@pytest.mark.parametrize("label", JUNK_LABELS)
async def test_junk_labels_get_a_clean_negative_answer(
    label: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    async with serving(_settings(port)) as provider:
        await provider.add_txt(NAME, make_value())
        # As the apex candidate: no zone of ours, so REFUSED without records.
        as_zone = dns.name.Name([b"_acme-challenge", label, b"example", b"test", b""])
        # Below a real apex: NXDOMAIN with that apex's own SOA.
        below = dns.name.Name([label, b"_acme-challenge", b"example", b"test", b""])
        with udp_from("127.0.0.1") as sock:
            sock.connect(("127.0.0.1", port))
            for qname in (as_zone, below):
                for rdtype in ("TXT", "SOA", "ANY"):
                    query = dns.message.make_query(qname, rdtype)
                    sock.send(query.to_wire())
                    reply = await receive(sock)
                    assert reply.id == query.id
                    if qname is as_zone:
                        assert reply.rcode() == dns.rcode.REFUSED
                        assert not reply.flags & dns.flags.AA
                        assert reply.answer == reply.authority == []
                    else:
                        assert reply.rcode() == dns.rcode.NXDOMAIN
                        assert reply.answer == []
                        [soa] = reply.authority
                        assert soa.name == dns.name.from_text(NAME)
                        record = soa[0]
                        assert record.rname == dns.name.from_text("hostmaster.example.test")
                        assert record.mname == dns.name.from_text("ns1.gw.example.net")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Traceback" not in caplog.text


# -- response rate limiting -------------------------------------------------------


async def test_a_flood_gets_no_more_than_the_limit_and_others_are_served() -> None:
    port = free_port()
    # The innocent network asks 10 times, under the limit even within one second.
    rate = 20
    async with serving(_settings(port, rate_limit=rate, rate_limit_slip=2)) as provider:
        value = make_value()
        await provider.add_txt(NAME, value)
        with udp_from("127.0.0.1") as flood, udp_from("127.0.1.1") as innocent:
            flood.connect(("127.0.0.1", port))
            innocent.connect(("127.0.0.1", port))
            innocent_answers = 0
            started = time.monotonic()
            for round_ in range(10):
                for i in range(100):
                    flood.send(query_wire(qid=round_ * 100 + i))
                await asyncio.sleep(0)
                innocent.send(query_wire(qid=round_))
                reply = await receive(innocent)
                if {b"".join(r.strings).decode() for r in reply.answer[0]} == {value}:
                    innocent_answers += 1
            flood_replies = await asyncio.to_thread(receive_all, flood, 1.0)
            seconds = time.monotonic() - started
    full = [r for r in flood_replies if not r.flags & dns.flags.TC]
    slipped = [r for r in flood_replies if r.flags & dns.flags.TC]
    # The flood spans at most ceil(seconds) + 1 one-second windows.
    assert 0 < len(full) <= rate * (int(seconds) + 2), (len(full), seconds)
    for reply in full:
        assert reply.answer
    # Every second answer over the limit slips out truncated and empty (the query's size).
    assert slipped
    for reply in slipped:
        assert reply.answer == reply.authority == []
        assert reply.question[0].name == dns.name.from_text(NAME)
    assert len(full) + len(slipped) < 1000
    assert innocent_answers == 10


async def test_exempt_networks_are_not_limited() -> None:
    port = free_port()
    exempt = (ipaddress.ip_network("127.0.0.0/24"),)
    async with serving(_settings(port, rate_limit=2, rate_limit_exempt=exempt)) as provider:
        await provider.add_txt(NAME, make_value())
        with udp_from("127.0.0.1") as sock:
            sock.connect(("127.0.0.1", port))
            for i in range(50):
                sock.send(query_wire(qid=i))
            replies = await asyncio.to_thread(receive_all, sock, 1.0)
    assert len(replies) == 50
    assert not [r for r in replies if r.flags & dns.flags.TC]


async def test_rate_limit_zero_is_off() -> None:
    port = free_port()
    async with serving(_settings(port, rate_limit=0)) as provider:
        await provider.add_txt(NAME, make_value())
        with udp_from("127.0.0.1") as sock:
            sock.connect(("127.0.0.1", port))
            for i in range(50):
                sock.send(query_wire(qid=i))
            replies = await asyncio.to_thread(receive_all, sock, 1.0)
    assert len(replies) == 50


async def test_tcp_is_never_rate_limited() -> None:
    port = free_port()
    async with serving(_settings(port, rate_limit=1)) as provider:
        await provider.add_txt(NAME, make_value())
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(20):
                writer.write(_frame(query_wire(qid=i)))
            await writer.drain()
            for _ in range(20):
                assert (await _read_framed(reader)).answer
        finally:
            writer.close()
            await writer.wait_closed()


# -- TCP limits (item 15 of issue 12) ---------------------------------------------------


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


async def _read_framed(reader: asyncio.StreamReader) -> dns.message.Message:
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TIMEOUT), "big")
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), TIMEOUT))


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    except (TimeoutError, ConnectionError):
        return False


async def _asks(port: int, source: str) -> bool:
    """Whether a TCP client at *source* gets an answer."""
    reader, writer = await _connect(port, source)
    try:
        writer.write(_frame(query_wire("_acme-challenge.example.test", "SOA")))
        await writer.drain()
        return bool((await _read_framed(reader)).answer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_one_client_holding_64_connections_does_not_block_others() -> None:
    port = free_port()
    async with serving(_settings(port, rate_limit=0)):
        held = [await _connect(port, "127.0.0.1") for _ in range(64)]
        try:
            # Past the per-client limit its connections are hung up on at once.
            closed = await asyncio.gather(*(_closed_by_server(r) for r, _ in held[8:]))
            assert all(closed)
            assert await _asks(port, "127.0.0.2")
            assert await _asks(port, "127.0.1.7")
        finally:
            for _, writer in held:
                writer.close()


async def test_a_full_server_makes_room_by_closing_the_longest_idle() -> None:
    port = free_port()
    limits = TcpLimits(clients=4, per_client=8)
    async with serving(_settings(port, rate_limit=0, tcp=limits)):
        held = [await _connect(port, "127.0.0.1") for _ in range(4)]
        try:
            await asyncio.sleep(0.1)
            assert await _asks(port, "127.0.0.2")
            assert await _closed_by_server(held[0][0])
        finally:
            for _, writer in held:
                writer.close()


def _begin_query(port: int, source: str) -> socket.socket:
    """A connection from *source* that sent the first byte of a query, once the server
    has read it (or hung up)."""
    sock = socket.create_connection(("127.0.0.1", port), TIMEOUT, (source, 0))
    sock.sendall(_frame(query_wire("_acme-challenge.example.test", "SOA"))[:1])
    deadline = time.monotonic() + 30
    while unread(port, sock) not in (0, None) and time.monotonic() < deadline:
        time.sleep(0.02)
    return sock


def _hung_up(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def _finish_query(sock: socket.socket) -> bool:
    """Whether the query *sock* began is answered once it sends the rest."""
    sock.sendall(_frame(query_wire("_acme-challenge.example.test", "SOA"))[1:])
    size = int.from_bytes(sock.recv(2, socket.MSG_WAITALL), "big")
    return bool(dns.message.from_wire(sock.recv(size, socket.MSG_WAITALL)).answer)


def _make_way_for_newcomers(port: int) -> None:
    with contextlib.ExitStack() as stack:
        few = stack.enter_context(_begin_query(port, "127.0.0.20"))
        many = [stack.enter_context(_begin_query(port, "127.0.0.21")) for _ in range(3)]
        # Every slot taken, none idle: each newcomer takes the oldest connection of
        # the address holding the most, not the oldest connection of all (few's).
        first = stack.enter_context(_begin_query(port, "127.0.0.22"))
        assert _hung_up(many[0])
        second = stack.enter_context(_begin_query(port, "127.0.0.23"))
        assert _hung_up(many[1])
        # Now every address holds one: nobody loses the one it has.
        third = stack.enter_context(_begin_query(port, "127.0.0.24"))
        assert _hung_up(third)
        # Nor does an address holding one take from another holding one.
        again = stack.enter_context(_begin_query(port, "127.0.0.21"))
        assert _hung_up(again)
        for sock in (few, many[2], first, second):
            assert _finish_query(sock)


async def test_a_full_server_with_nothing_idle_takes_from_the_biggest_holder() -> None:
    port = free_port()
    limits = TcpLimits(clients=4, per_client=4, read_timeout=120)
    async with serving(_settings(port, rate_limit=0, tcp=limits)):
        await asyncio.to_thread(_make_way_for_newcomers, port)


async def test_idle_and_dripping_connections_are_closed() -> None:
    port = free_port()
    limits = TcpLimits(idle_timeout=0.5, read_timeout=0.5)
    async with serving(_settings(port, rate_limit=0, tcp=limits)):
        idle_reader, idle = await _connect(port, "127.0.0.1")
        drip_reader, drip = await _connect(port, "127.0.0.1")
        try:
            wire = _frame(query_wire())
            drip.write(wire[:5])  # a query started, never finished
            await drip.drain()
            assert await _closed_by_server(idle_reader)
            assert await _closed_by_server(drip_reader)
        finally:
            idle.close()
            drip.close()


async def test_pipelined_queries_are_all_answered_in_order() -> None:
    port = free_port()
    async with serving(_settings(port, rate_limit=0)) as provider:
        await provider.add_txt(NAME, make_value())
        reader, writer = await _connect(port, "127.0.0.1")
        try:
            writer.write(b"".join(_frame(query_wire(qid=i)) for i in range(100)))
            await writer.drain()
            ids = [(await _read_framed(reader)).id for _ in range(100)]
            assert ids == list(range(100))
        finally:
            writer.close()
            await writer.wait_closed()


async def test_several_listen_addresses_with_limits_and_a_query_too_big_for_udp() -> None:
    """Truncation and the limits together: a big answer over UDP is TC, whole over TCP."""
    port = free_port()
    async with serving(_settings(port, rate_limit=0)) as provider:
        values = {make_value() for _ in range(30)}
        for value in values:
            await provider.add_txt(NAME, value)
        with udp_from("127.0.0.1") as sock:
            sock.connect(("127.0.0.1", port))
            sock.send(query_wire())
            reply = await receive(sock)
            assert reply.flags & dns.flags.TC
        reader, writer = await _connect(port, "127.0.0.1")
        try:
            writer.write(_frame(query_wire()))
            await writer.drain()
            whole = await _read_framed(reader)
            assert len(whole.answer[0]) == 30
            assert whole.answer[0].rdtype == dns.rdatatype.TXT
        finally:
            writer.close()
            await writer.wait_closed()
