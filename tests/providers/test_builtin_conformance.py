"""The builtin server against Knot DNS: the same queries, the same zone data, the same answers.

Knot 3 (tests/servers/knot.py) serves, from zone files, exactly what the
builtin server holds: the zone ``acme.example.net`` (``BUILTIN_ZONE``) and the
one-name zone ``_acme-challenge.example.test`` (NS delegation), with the same
SOA fields (the builtin server's serial included), NS and TXT records. Each
query of the corpus goes, byte for byte, to both; the answers must agree in
rcode, flags, EDNS (version, DO, payload) and every section, compared as sets
of records with their TTLs (names case-insensitively, as DNS compares them).

Both share one TSIG key, and the queries of ``TSIG_CORPUS`` are signed wrongly
(an unknown key, a wrong secret, a clock off by an hour): the answers must
agree as above and in the TSIG record (error, key, algorithm, time signed,
signed or not, Other Data's size).

The answers agree everywhere but in the cases listed in ``DIFFERENCES``, each
a deliberate choice that says why; :func:`test_the_deliberate_differences`
checks what each server answers there, so a change on either side shows.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig
import pytest
import pytest_asyncio

from providers._tsig import TsigSettings
from providers.builtin import BuiltinProvider, BuiltinSettings
from providers.builtin.store import SOA_EXPIRE, SOA_MINIMUM, SOA_REFRESH, SOA_RETRY
from tests.servers.bind import make_key
from tests.servers.knot import KnotServer, start_knot
from tests.system import free_port
from tests.tsigwire import signed_at, udp_exchange, verifies

pytestmark = [pytest.mark.system, pytest.mark.asyncio(loop_scope="module")]

ZONE = "acme.example.net"
CHALLENGE = "_acme-challenge.example.test"
NS = "ns1.example.net"
TTL = 60
VALUES = {
    f"a.{ZONE}": ["a" * 43, "b" * 43],
    f"deep.b.c.{ZONE}": ["d" * 43],
    f"big.{ZONE}": [f"{i:02d}" + "x" * 41 for i in range(30)],
    CHALLENGE: ["c" * 43],
}
TIMEOUT = 5.0


@dataclass(frozen=True)
class Query:
    name: str | dns.name.Name
    rdtype: str = "TXT"
    rdclass: str = "IN"
    edns: int = -1
    do: bool = False
    payload: int = 1232
    tcp: bool = False
    flags: int = 0
    opcode: int = dns.opcode.QUERY
    options: tuple[dns.edns.Option, ...] = ()

    def message(self) -> dns.message.Message:
        query = dns.message.make_query(
            self.name, self.rdtype, self.rdclass, use_edns=self.edns, payload=self.payload,
            want_dnssec=self.do, options=list(self.options))
        query.flags = self.flags
        query.set_opcode(self.opcode)
        query.id = 4242
        return query


CORPUS = {
    "existing TXT": Query(f"a.{ZONE}"),
    "existing TXT, EDNS": Query(f"a.{ZONE}", edns=0),
    "existing TXT, EDNS and DO": Query(f"a.{ZONE}", edns=0, do=True),
    "existing TXT over TCP": Query(f"a.{ZONE}", tcp=True),
    "challenge zone TXT": Query(CHALLENGE, edns=0),
    "NXDOMAIN": Query(f"nothing.{ZONE}"),
    "NXDOMAIN, EDNS": Query(f"nothing.{ZONE}", edns=0),
    "NXDOMAIN in the challenge zone": Query(f"x.{CHALLENGE}"),
    "NODATA (A at a TXT name)": Query(f"a.{ZONE}", "A"),
    "NODATA at the apex": Query(ZONE, "TXT", edns=0),
    "empty non-terminal": Query(f"b.c.{ZONE}"),
    "empty non-terminal, one up": Query(f"c.{ZONE}", "A"),
    "SOA at the apex": Query(ZONE, "SOA", edns=0),
    "NS at the apex": Query(ZONE, "NS"),
    "SOA of the challenge zone": Query(CHALLENGE, "SOA"),
    "NS of the challenge zone over TCP": Query(CHALLENGE, "NS", tcp=True),
    "SOA below the apex": Query(f"a.{ZONE}", "SOA"),
    "mixed case": Query("A.AcMe.ExAmPlE.nEt", edns=0),
    "mixed case NXDOMAIN": Query("NoThInG.aCmE.eXaMpLe.NeT"),
    "big answer, no EDNS: TC": Query(f"big.{ZONE}"),
    "big answer, EDNS 512: TC": Query(f"big.{ZONE}", edns=0, payload=512),
    "big answer, EDNS 4096": Query(f"big.{ZONE}", edns=0, payload=4096),
    "big answer over TCP": Query(f"big.{ZONE}", tcp=True),
    "junk labels below the zone": Query(
        dns.name.Name([b"x. 1 2 3;", b"caf\xc3\xa9", *dns.name.from_text(ZONE).labels])),
    "name outside every zone": Query("www.example.org"),
    "unknown class": Query(f"a.{ZONE}", rdclass="CH"),
    "ANY": Query(f"a.{ZONE}", "ANY", edns=0),
    "ANY at the apex": Query(ZONE, "ANY", edns=0),
    "ANY over TCP": Query(CHALLENGE, "ANY", tcp=True),
    "recursion desired": Query(f"a.{ZONE}", flags=dns.flags.RD),
    "checking disabled, authentic data": Query(
        f"a.{ZONE}", edns=0, flags=dns.flags.CD | dns.flags.AD),
    "EDNS version 1": Query(f"a.{ZONE}", edns=1),
    "EDNS with a cookie": Query(
        f"a.{ZONE}", edns=0, options=(dns.edns.GenericOption(dns.edns.COOKIE, b"12345678"),)),
    "an unknown type": Query(f"a.{ZONE}", "TYPE65280"),
    "AXFR over UDP": Query(ZONE, "AXFR"),
    "IXFR over UDP": Query(ZONE, "IXFR"),
    "AXFR over TCP, not allowed": Query(ZONE, "AXFR", tcp=True),
    "NOTIFY": Query(ZONE, "SOA", opcode=dns.opcode.NOTIFY, flags=dns.flags.AA),
    "opcode UPDATE": Query(ZONE, "SOA", opcode=dns.opcode.UPDATE),
    "opcode STATUS": Query(ZONE, "SOA", opcode=dns.opcode.STATUS),
}

# Wrongly signed queries, by case: (key name, secret or None for the shared one,
# algorithm, seconds off the clock, MAC size or None for the whole MAC).
TSIG_CORPUS: dict[str, tuple[str | None, bytes | None, str, int, int | None]] = {
    "an unknown key": ("stranger.", None, "hmac-sha256", 0, None),
    "the key with another algorithm": (None, None, "hmac-sha512", 0, None),
    "a wrong secret": (None, b"w" * 32, "hmac-sha256", 0, None),
    "an hour slow": (None, None, "hmac-sha256", -3600, None),
    "an hour fast": (None, None, "hmac-sha256", 3600, None),
    "a wrong secret, an hour slow": (None, b"w" * 32, "hmac-sha256", -3600, None),
    "a wrong secret, MAC truncated": (None, b"w" * 32, "hmac-sha256", 0, 16),
}

# What the builtin server answers on purpose otherwise than Knot, by corpus entry.
DIFFERENCES: dict[str, str] = {
    "ANY at the apex": (
        "RFC 8482 lets a server answer ANY with a subset: Knot gives one RRset (NS), the "
        "builtin server every RRset of the name (SOA, NS, TXT). It is small (the UDP size "
        "limit and rate limiting hold as for TXT), and a person asking ANY sees everything"
    ),
    "ANY over TCP": "the same at the challenge zone's apex, over TCP",
    "NOTIFY": (
        "the builtin server is never a secondary: NOTIMP (RFC 1996), where Knot, which could "
        "be one, says NOTAUTH for a zone it is not secondary for"
    ),
    "opcode UPDATE": (
        "changes come only through the gateway: NOTIMP (RFC 2136 section 3), where Knot, "
        "which takes updates, says NOTAUTH to one no ACL allows"
    ),
    "TSIG: MAC truncated to half": (
        "Knot takes no truncated MAC and says BADSIG; RFC 8945 5.2.4 says BADTRUNC for one "
        "that verifies but is shorter than the server accepts (every one, here), so the "
        "client learns what to fix"
    ),
    "TSIG: MAC of 9 octets": (
        "shorter than RFC 8945 5.2.2.1 allows (10 octets, half the hash): FORMERR, as it "
        "says, where Knot says BADSIG"
    ),
}


def _zone_file(apex: str, base: str, serial: int, names: dict[str, list[str]]) -> list[str]:
    lines = [f"@ {TTL} IN SOA {NS}. hostmaster.{base}. {serial} {SOA_REFRESH} {SOA_RETRY} "
             f"{SOA_EXPIRE} {SOA_MINIMUM}",
             f"@ {TTL} IN NS {NS}."]
    for name, values in names.items():
        owner = "@" if name == apex else name[: -len(apex) - 1]
        lines += [f'{owner} {TTL} IN TXT "{value}"' for value in values]
    return lines


@dataclass
class Pair:
    builtin_port: int
    knot: KnotServer

    @property
    def key(self) -> dns.tsig.Key:
        return self.knot.key.dns_key()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Pair]:
    port = free_port()
    key = make_key("hmac-sha256", "conformance.")
    provider = BuiltinProvider(
        BuiltinSettings(listen=(("127.0.0.1", port),), zone=ZONE, nameservers=(NS,), ttl=TTL,
                        rate_limit_exempt=(ipaddress.ip_network("127.0.0.0/8"),),
                        tsig=TsigSettings(key.name, key.secret)),
        ("example.test",),
    )
    await provider.open()
    try:
        for name, values in VALUES.items():
            for value in values:
                await provider.add_txt(name, value)
        serial = provider.serial
        assert serial is not None
        in_zone = {n: v for n, v in VALUES.items() if n.endswith(ZONE)}
        records = {
            ZONE: _zone_file(ZONE, ZONE, serial, in_zone),
            CHALLENGE: _zone_file(
                CHALLENGE, "example.test", serial, {CHALLENGE: VALUES[CHALLENGE]}),
        }
        knot = await asyncio.to_thread(
            start_knot, tmp_path_factory.mktemp("knot"), zones=(ZONE, CHALLENGE),
            challenge_labels=("a",), records=records, bare=True, key=key)
        try:
            yield Pair(port, knot)
        finally:
            knot.stop()
    finally:
        await provider.aclose()


def _ask(query: Query, port: int) -> dns.message.Message:
    message = query.message()
    if query.tcp:
        return dns.query.tcp(message, "127.0.0.1", port=port, timeout=TIMEOUT)
    return dns.query.udp(message, "127.0.0.1", port=port, timeout=TIMEOUT)


def _records(section: list[dns.rrset.RRset]) -> set[str]:
    return {f"{rrset.name.to_text().lower()} {rrset.ttl} "
            f"{dns.rdataclass.to_text(rrset.rdclass)} {dns.rdatatype.to_text(rrset.rdtype)} "
            f"{rdata.to_text().lower()}"
            for rrset in section for rdata in rrset}


def view(reply: dns.message.Message) -> dict[str, object]:
    """What must agree: everything a client reads, but the order of records."""
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": dns.flags.to_text(reply.flags),
        "edns": reply.edns,
        "do": bool(reply.ednsflags & dns.flags.DO) if reply.edns >= 0 else None,
        "payload": reply.payload if reply.edns >= 0 else None,
        "question": [(q.name.to_text(), q.rdtype, q.rdclass) for q in reply.question],
        "answer": _records(reply.answer),
        "authority": _records(reply.authority),
        "additional": _records(reply.additional),
    }


@pytest.mark.parametrize("case", sorted(set(CORPUS) - set(DIFFERENCES)))
async def test_the_builtin_server_answers_as_knot_does(pair: Pair, case: str) -> None:
    query = CORPUS[case]
    ours = await asyncio.to_thread(_ask, query, pair.builtin_port)
    knots = await asyncio.to_thread(_ask, query, pair.knot.port)
    assert view(ours) == view(knots)


async def test_the_deliberate_differences(pair: Pair) -> None:
    async def both(case: str) -> tuple[dns.message.Message, dns.message.Message]:
        query = CORPUS[case]
        return (await asyncio.to_thread(_ask, query, pair.builtin_port),
                await asyncio.to_thread(_ask, query, pair.knot.port))

    for case, name in (("ANY at the apex", ZONE), ("ANY over TCP", CHALLENGE)):
        ours, knots = await both(case)
        assert ours.rcode() == knots.rcode() == dns.rcode.NOERROR
        ours_types = {r.rdtype for r in ours.answer}
        assert {dns.rdatatype.SOA, dns.rdatatype.NS} <= ours_types
        assert {r.rdtype for r in knots.answer} < ours_types  # a subset, per RFC 8482
        assert all(r.name == dns.name.from_text(name) for r in ours.answer)
    for case in ("NOTIFY", "opcode UPDATE"):
        ours, knots = await both(case)
        assert ours.rcode() == dns.rcode.NOTIMP, case
        assert knots.rcode() == dns.rcode.NOTAUTH, case
        assert ours.question == knots.question
        assert ours.answer == ours.authority == []


def _badly_signed(pair: Pair, case: str) -> tuple[bytes, int]:
    """The query of *case* in ``TSIG_CORPUS`` (or a truncation difference), and when it
    says it was signed."""
    if case == "TSIG: MAC truncated to half":
        name, secret, algorithm, offset, mac_size = None, None, "hmac-sha256", 0, 16
    elif case == "TSIG: MAC of 9 octets":
        name, secret, algorithm, offset, mac_size = None, None, "hmac-sha256", 0, 9
    else:
        name, secret, algorithm, offset, mac_size = TSIG_CORPUS[case]
    shared = pair.key
    key = dns.tsig.Key(name or shared.name,
                       base64.b64encode(secret or shared.secret).decode(), algorithm)
    message = CORPUS["SOA at the apex"].message()
    when = int(time.time()) + offset
    return signed_at(message, key, when, mac_size), when



def tsig_view(reply: bytes, request: bytes, key: dns.tsig.Key) -> dict[str, object]:
    message = dns.message.from_wire(reply, keyring=False)
    if message.tsig is None:
        return {"tsig": None}
    record = message.tsig[0]
    return {
        "tsig": message.tsig.name.to_text().lower(),
        "algorithm": record.algorithm.to_text().lower(),
        "error": dns.rcode.to_text(record.error),
        "time signed": record.time_signed == dns.message.from_wire(
            request, keyring=False).tsig[0].time_signed,
        "original id": record.original_id,
        "signed": bool(record.mac),
        "verifies": bool(record.mac) and verifies(reply, key, request),
        "other": len(record.other),
    }


async def _both(pair: Pair, case: str) -> tuple[bytes, bytes, bytes]:
    """The badly signed query of *case*, our answer and Knot's, as they came."""
    wire, _ = _badly_signed(pair, case)
    ours = await asyncio.to_thread(udp_exchange, wire, pair.builtin_port, TIMEOUT)
    knots = await asyncio.to_thread(udp_exchange, wire, pair.knot.port, TIMEOUT)
    return wire, ours, knots


@pytest.mark.parametrize("case", sorted(TSIG_CORPUS))
async def test_a_bad_tsig_gets_the_answer_knot_gives(pair: Pair, case: str) -> None:
    wire, ours, knots = await _both(pair, case)
    assert view(dns.message.from_wire(ours, keyring=False)) == view(
        dns.message.from_wire(knots, keyring=False))
    assert tsig_view(ours, wire, pair.key) == tsig_view(knots, wire, pair.key)
    assert dns.message.from_wire(ours, keyring=False).rcode() == dns.rcode.NOTAUTH


async def test_the_deliberate_tsig_differences(pair: Pair) -> None:
    _, ours_wire, knots_wire = await _both(pair, "TSIG: MAC truncated to half")
    ours = dns.message.from_wire(ours_wire, keyring=False)
    knots = dns.message.from_wire(knots_wire, keyring=False)
    assert ours.rcode() == knots.rcode() == dns.rcode.NOTAUTH
    assert ours.tsig is not None and knots.tsig is not None
    assert ours.tsig[0].error == dns.rcode.BADTRUNC
    assert knots.tsig[0].error == dns.rcode.BADSIG
    _, ours_wire, knots_wire = await _both(pair, "TSIG: MAC of 9 octets")
    ours = dns.message.from_wire(ours_wire, keyring=False)
    knots = dns.message.from_wire(knots_wire, keyring=False)
    assert ours.rcode() == dns.rcode.FORMERR and ours.answer == []
    assert knots.rcode() == dns.rcode.NOTAUTH and knots.tsig is not None
    assert knots.tsig[0].error == dns.rcode.BADSIG
