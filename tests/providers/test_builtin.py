"""The builtin DNS server: the provider contract, seen through real DNS queries, and the protocol.

Every check asks the running server over loopback with dnspython (UDP or TCP),
the way a CA or resolver would; one system test asks with the real ``dig``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import pytest_asyncio

from providers import builtin
from providers.base import ProviderError
from providers.builtin import (
    MAX_VALUES_PER_NAME,
    BuiltinProvider,
    BuiltinSettings,
)
from providers.builtin.network import TcpLimits
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served
from tests.system import free_port, need_program

MANAGED = ("example.test", "example.org")
ZONE = "acme.example.net"
NS = ("ns1.gw.example.net", "ns2.gw.example.net")
TIMEOUT = 3.0


LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


def _settings(port: int, **changes: object) -> BuiltinSettings:
    values: dict[str, object] = {
        "listen": (("127.0.0.1", port),),
        "zone": ZONE,
        "nameservers": NS,
        "ttl": 60,
        # These tests query hard from loopback; rate limiting has tests of its own.
        "rate_limit_exempt": LOOPBACK,
        "tcp": TcpLimits(idle_timeout=2.0, read_timeout=2.0),
    }
    values.update(changes)
    return BuiltinSettings(**values)  # type: ignore[arg-type]


# One server for the module's tests (starting a server process takes a moment);
# tests that need their own settings start their own on a fresh port.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture
def fresh_port() -> int:
    return free_port()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(port: int) -> AsyncIterator[BuiltinProvider]:
    p = BuiltinProvider(_settings(port), MANAGED)
    await p.open()
    try:
        yield p
    finally:
        await p.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def provider(shared: BuiltinProvider) -> AsyncIterator[BuiltinProvider]:
    """The shared server, emptied again after each test."""
    yield shared
    for name, values in list(shared.records.items()):
        for value in values:
            await shared.remove_txt(b".".join(name).decode(), value)


async def ask(
    port: int,
    name: str,
    rdtype: str = "TXT",
    *,
    tcp: bool = False,
    edns: int = 0,
    payload: int = 1232,
    rd: bool = False,
    rdclass: str = "IN",
) -> dns.message.Message:
    """One query to the server; ``edns=-1`` sends none."""
    query = dns.message.make_query(name, rdtype, rdclass, use_edns=edns, payload=payload)
    if not rd:
        query.flags &= ~dns.flags.RD
    if tcp:
        return await dns.asyncquery.tcp(query, "127.0.0.1", port=port, timeout=TIMEOUT)
    return await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=TIMEOUT)


def txt_values(reply: dns.message.Message) -> set[str]:
    return {
        b"".join(rd.strings).decode()
        for rrset in reply.answer
        if rrset.rdtype == dns.rdatatype.TXT
        for rd in rrset
    }


@pytest.fixture
def served(provider: BuiltinProvider, port: int) -> Served:
    async def read(fqdn: str) -> set[str]:
        reply = await ask(port, fqdn + ".")
        assert reply.flags & dns.flags.AA, dns.rcode.to_text(reply.rcode())
        assert reply.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
        return txt_values(reply)

    return read


@pytest.fixture
def names() -> list[str]:
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
def broken_provider(fresh_port: int) -> BuiltinProvider:
    # Serves another domain only: the contract's names are not its to publish.
    return BuiltinProvider(_settings(fresh_port, zone=None), ("elsewhere.test",))


class TestBuiltinContract(ProviderContract):
    pass


# -- answers at the apex ------------------------------------------------------


async def test_soa_and_ns_at_each_challenge_apex(provider: BuiltinProvider, port: int) -> None:
    for apex in (
        "_acme-challenge.example.test",
        "_acme-challenge.www.example.test",
        "_acme-challenge.deep.sub.example.org",
        ZONE,
    ):
        soa = await ask(port, apex, "SOA")
        assert soa.rcode() == dns.rcode.NOERROR
        assert soa.flags & dns.flags.AA
        [rrset] = soa.answer
        assert rrset.name == dns.name.from_text(apex)
        assert rrset.ttl == 60
        [record] = rrset
        assert record.mname == dns.name.from_text(NS[0])
        assert record.minimum == 30
        assert record.refresh > record.retry > 0
        assert record.expire > record.refresh
        ns = await ask(port, apex, "NS")
        assert ns.flags & dns.flags.AA
        assert {r.target.to_text(omit_final_dot=True) for r in ns.answer[0]} == set(NS)


async def test_serial_changes_with_records(provider: BuiltinProvider, port: int) -> None:
    apex = "_acme-challenge.example.test"

    async def serial() -> int:
        return int((await ask(port, apex, "SOA")).answer[0][0].serial)

    before = await serial()
    value = make_value()
    await provider.add_txt(apex, value)
    after_add = await serial()
    await provider.add_txt(apex, value)  # no change, no new serial
    assert await serial() == after_add
    await provider.remove_txt(apex, value)
    after_remove = await serial()
    assert before < after_add < after_remove


# -- negative answers ---------------------------------------------------------


async def test_nodata_at_a_served_name_without_values(provider: BuiltinProvider, port: int) -> None:
    for tcp in (False, True):
        reply = await ask(port, "_acme-challenge.example.test", tcp=tcp)
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.flags & dns.flags.AA
        assert reply.answer == []
        [soa] = reply.authority
        assert soa.rdtype == dns.rdatatype.SOA
        assert soa.name == dns.name.from_text("_acme-challenge.example.test")
        assert soa.ttl <= 30  # the negative-caching TTL (RFC 2308)
    # A type that never exists at a name with values: NODATA as well.
    await provider.add_txt("_acme-challenge.example.test", make_value())
    reply = await ask(port, "_acme-challenge.example.test", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    assert reply.authority[0].rdtype == dns.rdatatype.SOA


async def test_nxdomain_below_an_apex(provider: BuiltinProvider, port: int) -> None:
    reply = await ask(port, "nothing._acme-challenge.example.test")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.flags & dns.flags.AA
    [soa] = reply.authority
    assert soa.name == dns.name.from_text("_acme-challenge.example.test")
    reply = await ask(port, f"nothing.{ZONE}")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].name == dns.name.from_text(ZONE)


async def test_empty_non_terminal_is_nodata(provider: BuiltinProvider, port: int) -> None:
    value = make_value()
    await provider.add_txt(f"a.b.{ZONE}", value)
    assert txt_values(await ask(port, f"a.b.{ZONE}")) == {value}
    reply = await ask(port, f"b.{ZONE}")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []
    await provider.remove_txt(f"a.b.{ZONE}", value)
    assert (await ask(port, f"b.{ZONE}")).rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize(
    "name",
    [
        "example.test",
        "www.example.test",
        "_acme-challenge.evilexample.test",
        "_acme-challenge.example.com",
        "_acme-challenge",
        "net",
        "example.net",
        "_acme-challenge.test",
    ],
)
async def test_refused_for_foreign_names(provider: BuiltinProvider, port: int, name: str) -> None:
    reply = await ask(port, name)
    assert reply.rcode() == dns.rcode.REFUSED
    assert not reply.flags & dns.flags.AA
    assert reply.answer == reply.authority == []


async def test_refused_for_other_classes_and_zone_transfers(
    provider: BuiltinProvider, port: int
) -> None:
    reply = await ask(port, "version.bind", "TXT", rdclass="CH")
    assert reply.rcode() == dns.rcode.REFUSED
    # No secondaries: nobody may transfer (NOTAUTH, as Knot answers).
    reply = await ask(port, "_acme-challenge.example.test", "AXFR", tcp=True)
    assert reply.rcode() == dns.rcode.NOTAUTH


# -- flags, case, ANY ---------------------------------------------------------


async def test_recursion_desired_is_answered_authoritatively(
    provider: BuiltinProvider, port: int
) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.example.test", value)
    reply = await ask(port, "_acme-challenge.example.test", rd=True)
    assert txt_values(reply) == {value}
    assert reply.flags & dns.flags.AA
    assert reply.flags & dns.flags.RD
    assert not reply.flags & dns.flags.RA
    reply = await ask(port, "_acme-challenge.example.test", rd=False)
    assert not reply.flags & dns.flags.RD


async def test_names_are_case_insensitive_and_keep_the_query_case(
    provider: BuiltinProvider, port: int
) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.www.example.test", value)
    spelled = "_AcMe-ChAlLeNgE.WwW.eXaMpLe.TeSt."
    reply = await ask(port, spelled)
    assert txt_values(reply) == {value}
    # dnspython compares names case-insensitively; compare the text.
    assert reply.answer[0].name.to_text() == spelled
    reply = await ask(port, "NOPE." + spelled)
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].name.to_text() == spelled


async def test_any_returns_the_txt_values(provider: BuiltinProvider, port: int) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.example.org", value)
    reply = await ask(port, "_acme-challenge.example.org", "ANY")
    assert reply.flags & dns.flags.AA
    assert txt_values(reply) == {value}


async def test_queries_are_logged_at_debug(
    fresh_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    # The server process takes the log level the gateway has when it starts it.
    caplog.set_level(logging.DEBUG, logger="providers.builtin")
    provider = BuiltinProvider(_settings(fresh_port), MANAGED)
    await provider.open()
    try:
        await ask(fresh_port, "x._acme-challenge.example.test")
        await ask(fresh_port, "example.test", "A", tcp=True)
    finally:
        await provider.aclose()
    assert "x._acme-challenge.example.test. TXT over UDP -> NXDOMAIN" in caplog.text
    assert "example.test. A over TCP -> REFUSED" in caplog.text


# -- EDNS, truncation and TCP -------------------------------------------------


async def test_edns_is_answered_in_kind(provider: BuiltinProvider, port: int) -> None:
    with_edns = await ask(port, "_acme-challenge.example.test", edns=0)
    assert with_edns.edns == 0
    assert with_edns.payload == 1232
    without = await ask(port, "_acme-challenge.example.test", edns=-1)
    assert without.edns == -1
    assert without.opt is None


async def test_unknown_edns_version_is_badvers(provider: BuiltinProvider, port: int) -> None:
    reply = await ask(port, "_acme-challenge.example.test", edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.answer == []


async def test_big_answer_is_truncated_over_udp_and_whole_over_tcp(
    provider: BuiltinProvider, port: int
) -> None:
    name = "_acme-challenge.example.test"
    values = {make_value() for _ in range(40)}  # about 2.2 KB of TXT records
    for value in values:
        await provider.add_txt(name, value)
    for edns, payload in ((0, 1232), (0, 4096), (0, 600), (-1, 0)):
        reply = await ask(port, name, edns=edns, payload=payload)
        assert reply.flags & dns.flags.TC, (edns, payload)
        assert reply.answer == []
        assert reply.flags & dns.flags.AA
        assert len(reply.to_wire()) <= max(512, min(payload, 1232))
    whole = await ask(port, name, tcp=True)
    assert not whole.flags & dns.flags.TC
    assert txt_values(whole) == values
    # A few values fit the plain 512 bytes of UDP without EDNS.
    for value in list(values)[3:]:
        await provider.remove_txt(name, value)
    small = await ask(port, name, edns=-1)
    assert not small.flags & dns.flags.TC
    assert len(txt_values(small)) == 3


def _frame(wire: bytes) -> bytes:
    return len(wire).to_bytes(2, "big") + wire


async def _read_framed(reader: asyncio.StreamReader) -> dns.message.Message:
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), TIMEOUT), "big")
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), TIMEOUT))


async def test_several_queries_on_one_tcp_connection(provider: BuiltinProvider, port: int) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.example.test", value)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        first = dns.message.make_query("_acme-challenge.example.test", "TXT")
        second = dns.message.make_query("_acme-challenge.example.test", "SOA")
        # Pipelined: both queries before reading either answer.
        writer.write(_frame(first.to_wire()) + _frame(second.to_wire()))
        await writer.drain()
        replies = {r.id: r for r in [await _read_framed(reader), await _read_framed(reader)]}
        assert txt_values(replies[first.id]) == {value}
        assert replies[second.id].answer[0].rdtype == dns.rdatatype.SOA
        third = dns.message.make_query("x._acme-challenge.example.test", "TXT")
        writer.write(_frame(third.to_wire()))
        await writer.drain()
        assert (await _read_framed(reader)).rcode() == dns.rcode.NXDOMAIN
    finally:
        writer.close()
        await writer.wait_closed()


async def test_idle_tcp_connection_is_closed(fresh_port: int) -> None:
    p = BuiltinProvider(_settings(fresh_port, tcp=TcpLimits(idle_timeout=0.3)), MANAGED)
    await p.open()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", fresh_port)
        try:
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
        finally:
            writer.close()
            await writer.wait_closed()
    finally:
        await p.aclose()


async def test_aclose_ends_open_tcp_connections(fresh_port: int) -> None:
    p = BuiltinProvider(_settings(fresh_port, tcp=TcpLimits(idle_timeout=30.0)), MANAGED)
    await p.open()
    reader, writer = await asyncio.open_connection("127.0.0.1", fresh_port)
    try:
        await asyncio.sleep(0.05)
        await asyncio.wait_for(p.aclose(), TIMEOUT)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_clients_per_address_are_bounded(fresh_port: int) -> None:
    provider = BuiltinProvider(_settings(fresh_port, tcp=TcpLimits(per_client=1)), MANAGED)
    await provider.open()
    first_reader, first = await asyncio.open_connection("127.0.0.1", fresh_port)
    second_reader, second = await asyncio.open_connection("127.0.0.1", fresh_port)
    try:
        # The second is hung up on at once; the first is still served.
        assert await asyncio.wait_for(second_reader.read(), TIMEOUT) == b""
        query = dns.message.make_query("_acme-challenge.example.test", "SOA")
        first.write(_frame(query.to_wire()))
        await first.drain()
        assert (await _read_framed(first_reader)).answer[0].rdtype == dns.rdatatype.SOA
    finally:
        for writer in (first, second):
            writer.close()
            await writer.wait_closed()
        await provider.aclose()


# -- junk does not hurt ---------------------------------------------------------


async def _udp_exchange(port: int, data: bytes, wait: float = TIMEOUT) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        await loop.sock_sendall(sock, data)
        try:
            return await asyncio.wait_for(loop.sock_recv(sock, 65535), wait)
        except TimeoutError:
            return None


async def test_garbage_gets_formerr_or_nothing_and_the_server_lives_on(
    provider: BuiltinProvider, port: int
) -> None:
    value = make_value()
    await provider.add_txt("_acme-challenge.example.test", value)
    # Too short for a header: dropped.
    assert await _udp_exchange(port, b"\x12", wait=0.3) is None
    # A header promising a question that is not there: FORMERR with the same ID.
    junk = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff\xff"
    reply = await _udp_exchange(port, junk)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == 0xABCD
    assert message.rcode() == dns.rcode.FORMERR
    assert message.flags & dns.flags.QR
    # A response is never answered (two servers could ping-pong forever).
    response = dns.message.make_response(dns.message.make_query("x.example", "A"))
    assert await _udp_exchange(port, response.to_wire(), wait=0.3) is None
    # Two questions: FORMERR.
    query = dns.message.make_query("_acme-challenge.example.test", "TXT")
    query.question.append(
        dns.rrset.RRset(dns.name.from_text("a.example"), dns.rdataclass.IN, dns.rdatatype.A)
    )
    reply = await _udp_exchange(port, query.to_wire())
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR
    # Junk over TCP: a FORMERR, then the connection still answers.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_frame(junk))
        good = dns.message.make_query("_acme-challenge.example.test", "TXT")
        writer.write(_frame(good.to_wire()))
        await writer.drain()
        assert (await _read_framed(reader)).rcode() == dns.rcode.FORMERR
        assert txt_values(await _read_framed(reader)) == {value}
    finally:
        writer.close()
        await writer.wait_closed()
    # A TCP peer that is not speaking DNS is hung up on.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    assert txt_values(await ask(port, "_acme-challenge.example.test")) == {value}
    assert txt_values(await ask(port, "_acme-challenge.example.test", tcp=True)) == {value}


async def test_other_opcodes_are_not_implemented(provider: BuiltinProvider, port: int) -> None:
    query = dns.message.make_query("_acme-challenge.example.test", "SOA")
    query.set_opcode(dns.opcode.NOTIFY)
    reply = await _udp_exchange(port, query.to_wire())
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP


# -- the delegation zone ----------------------------------------------------------


async def test_builtin_zone_names_are_served(provider: BuiltinProvider, port: int) -> None:
    value = make_value()
    await provider.add_txt(f"d1e2f3.{ZONE}", value)
    reply = await ask(port, f"D1E2F3.{ZONE}")
    assert reply.flags & dns.flags.AA
    assert txt_values(reply) == {value}
    # The zone apex can hold values too, and its SOA is its own.
    await provider.add_txt(ZONE, value)
    assert txt_values(await ask(port, ZONE)) == {value}
    reply = await ask(port, f"d1e2f3.{ZONE}", "SOA")
    assert reply.answer == []
    assert reply.authority[0].name == dns.name.from_text(ZONE)


async def test_without_zone_only_challenge_names_are_served(fresh_port: int) -> None:
    p = BuiltinProvider(_settings(fresh_port, zone=None), MANAGED)
    await p.open()
    try:
        assert (await ask(fresh_port, f"x.{ZONE}")).rcode() == dns.rcode.REFUSED
        with pytest.raises(ProviderError, match="not served"):
            await p.add_txt(f"x.{ZONE}", make_value())
    finally:
        await p.aclose()


# -- add/remove rules -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "example.test",
        "www.example.test",
        "_acme-challenge.evilexample.test",
        "_acme-challenge.example.com",
        "acme.example.net.evil.test",
    ],
)
async def test_add_refuses_names_it_does_not_serve(provider: BuiltinProvider, name: str) -> None:
    with pytest.raises(ProviderError) as info:
        await provider.add_txt(name, make_value())
    assert str(info.value).startswith("builtin: ")
    assert "_acme-challenge names of example.test, example.org" in str(info.value)
    assert provider.records == {}


async def test_remove_from_a_name_not_served_is_a_noop(provider: BuiltinProvider) -> None:
    await provider.remove_txt("www.example.test", make_value())


async def test_names_are_normalised(provider: BuiltinProvider) -> None:
    value = make_value()
    await provider.add_txt("_ACME-Challenge.Example.TEST.", value)
    assert provider.values("_acme-challenge.example.test") == [value]
    await provider.remove_txt("_acme-challenge.EXAMPLE.test", value)
    assert provider.records == {}
    with pytest.raises(ProviderError):
        await provider.add_txt("_acme-challenge..example.test", value)


@pytest.mark.parametrize("value", ["", "x" * 256, "new\nline", "caf\u00e9"])
async def test_add_refuses_values_dns_cannot_carry(provider: BuiltinProvider, value: str) -> None:
    with pytest.raises(ProviderError):
        await provider.add_txt("_acme-challenge.example.test", value)


async def test_values_per_name_are_bounded(provider: BuiltinProvider, port: int) -> None:
    name = "_acme-challenge.example.test"
    for _ in range(MAX_VALUES_PER_NAME):
        await provider.add_txt(name, make_value())
    with pytest.raises(ProviderError, match="already has"):
        await provider.add_txt(name, make_value())
    # The full set still fits one TCP answer.
    assert len(txt_values(await ask(port, name, tcp=True))) == MAX_VALUES_PER_NAME


async def test_port_in_use_is_a_provider_error_with_a_hint(fresh_port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", fresh_port))
        p = BuiltinProvider(_settings(fresh_port), MANAGED)
        with pytest.raises(ProviderError) as info:
            await p.open()
    message = str(info.value)
    assert message.startswith(f"builtin: cannot listen on 127.0.0.1:{fresh_port}")
    assert "BUILTIN_LISTEN" in message
    # What was opened before the failure (the TCP socket) is released again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", fresh_port))


async def test_privileged_port_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(host: str, port: int) -> None:
        raise PermissionError(13, "Permission denied")

    # The tests may run as root, who may bind port 53.
    monkeypatch.setattr(builtin, "bind_tcp", denied)
    p = BuiltinProvider(_settings(53), MANAGED)
    with pytest.raises(ProviderError, match="CAP_NET_BIND_SERVICE"):
        await p.open()


async def test_several_listen_addresses_including_ipv6(fresh_port: int) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    second = free_port()
    listen = (("127.0.0.1", fresh_port), ("::1", fresh_port), ("127.0.0.1", second))
    p = BuiltinProvider(_settings(fresh_port, listen=listen), MANAGED)
    await p.open()
    try:
        value = make_value()
        await p.add_txt("_acme-challenge.example.test", value)
        query = dns.message.make_query("_acme-challenge.example.test", "TXT")
        v6 = await dns.asyncquery.udp(query, "::1", port=fresh_port, timeout=TIMEOUT)
        v6_tcp = await dns.asyncquery.tcp(query, "::1", port=fresh_port, timeout=TIMEOUT)
        assert txt_values(v6) == txt_values(v6_tcp) == {value}
        assert txt_values(await ask(second, "_acme-challenge.example.test")) == {value}
        assert sorted(p.addresses) == sorted(
            [("127.0.0.1", fresh_port), ("::1", fresh_port), ("127.0.0.1", second)]
        )
    finally:
        await p.aclose()


async def test_open_and_aclose_are_repeatable(fresh_port: int) -> None:
    p = BuiltinProvider(_settings(fresh_port), MANAGED)
    await p.aclose()  # never opened: nothing to do
    await p.open()
    await p.open()
    await p.aclose()
    await p.aclose()
    await p.open()  # the fresh_port was released
    try:
        assert (await ask(fresh_port, ZONE, "SOA")).rcode() == dns.rcode.NOERROR
    finally:
        await p.aclose()


# -- the real dig -------------------------------------------------------------------


@pytest.mark.system
async def test_dig_sees_the_values(provider: BuiltinProvider, port: int) -> None:
    dig = need_program("dig", "bind9-dnsutils")
    values = {make_value(), make_value()}
    for value in values:
        await provider.add_txt("_acme-challenge.example.test", value)
    proc = await asyncio.create_subprocess_exec(
        dig,
        "@127.0.0.1",
        "-p",
        str(port),
        "_acme-challenge.example.test",
        "TXT",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    print(text)  # for a human: what a resolver would see
    assert proc.returncode == 0, text
    assert "status: NOERROR" in text
    assert "flags: qr aa rd;" in text
    for value in values:
        assert f'"{value}"' in text
