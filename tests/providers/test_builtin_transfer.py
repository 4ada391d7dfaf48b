"""The builtin server as the hidden primary of a real Knot and a real BIND secondary.

One gateway process (``PROVIDER=builtin``, ``BUILTIN_ZONE=acme.example.net``,
``DELEGATIONS`` writing two challenge names into that zone) is the primary of a
Knot 3 and a BIND 9 secondary (tests/servers), all signed with one TSIG key;
``PROPAGATION_NAMESERVERS`` names the secondaries and the gateway itself, as
they would be the zone's nameservers. Shared by the module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.xfr
import dns.zone
import pytest
import requests

from providers._tsig import TsigSettings
from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, builtin_settings, running_gateway
from tests.servers.authoritative import Authoritative
from tests.servers.bind import TsigKey, make_key
from tests.servers.knot import secondaries_of, start_knot_secondary
from tests.system import free_port
from tests.tsigwire import tcp_exchange

pytestmark = pytest.mark.system

ZONE = "acme.example.net"
TARGETS = {"example.test": f"d1.{ZONE}", "www.example.test": f"d2.{ZONE}"}
TIMEOUT = 10.0


@dataclass
class Rig:
    gateway: GatewayProcess
    url: str
    dns_port: int
    key: TsigKey
    secondaries: list[Authoritative]

    def change(self, argument: str, name: str, value: str) -> requests.Response:
        return requests.post(self.url, timeout=60, json={
            "argument": argument, "domain_name": name, "challenge_content": value})

    def keyring(self, secret: str | None = None) -> dns.tsig.Key:
        return replace(self.key, secret=secret or self.key.secret).dns_key()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    folder = tmp_path_factory.mktemp("transfer")
    key = make_key("hmac-sha256", "gateway-transfer.")
    port, dns_port, knot_port, bind_port = free_port(), free_port(), free_port(), free_port()
    settings = builtin_settings(
        folder, port, dns_port,
        BUILTIN_ZONE=ZONE,
        BUILTIN_NS="ns1.example.net, ns2.example.net",
        BUILTIN_SECONDARIES=f"127.0.0.1:{knot_port}, 127.0.0.1:{bind_port}",
        BUILTIN_TSIG_KEY_NAME=key.name,
        BUILTIN_TSIG_SECRET=key.secret,
        BUILTIN_RATE_LIMIT_EXEMPT="127.0.0.0/8",
        DELEGATIONS=",".join(f"{name}={target}" for name, target in TARGETS.items()),
        PROPAGATION_NAMESERVERS=", ".join(
            f"127.0.0.1:{p}" for p in (knot_port, bind_port, dns_port)),
        PROPAGATION_TIMEOUT="30",
    )
    with running_gateway(folder, settings) as gateway:
        with secondaries_of(folder, ZONE, ("127.0.0.1", dns_port), key,
                            knot_port=knot_port, bind_port=bind_port) as secondaries:
            yield Rig(gateway, f"http://127.0.0.1:{port}/", dns_port, key, secondaries)
        log = gateway.stderr
    assert "Traceback" not in log, log[-3000:]


def test_a_setup_answers_once_every_secondary_serves_the_value(rig: Rig) -> None:
    value = make_value()
    answer = rig.change("setup", "example.test", value)
    assert answer.status_code == 201, answer.text
    # No waiting here: the setup answered only once both served it.
    for secondary in rig.secondaries:
        assert value in secondary.txt(TARGETS["example.test"]), secondary.title
    answer = rig.change("teardown", "example.test", value)
    assert answer.status_code == 200, answer.text
    for secondary in rig.secondaries:
        deadline = time.monotonic() + TIMEOUT
        while value in secondary.txt(TARGETS["example.test"]):
            assert time.monotonic() < deadline, f"{secondary.title} still serves the value"
            time.sleep(0.02)


def test_the_secondaries_follow_each_serial(rig: Rig) -> None:
    before = [s.serial(ZONE) for s in rig.secondaries]
    values = [make_value(), make_value()]
    for value in values:
        assert rig.change("setup", "www.example.test", value).status_code == 201
    after = [s.serial(ZONE) for s in rig.secondaries]
    for old, new in zip(before, after, strict=True):
        assert old is not None and new is not None and new > old
    for secondary in rig.secondaries:
        assert set(values) <= secondary.txt(TARGETS["www.example.test"])
    for value in values:
        assert rig.change("teardown", "www.example.test", value).status_code == 200


def _tcp_exchange(query: dns.message.Message, port: int, source: str = "127.0.0.1",
                  **wire: object) -> dns.message.Message:
    reply = tcp_exchange(query.to_wire(**wire), port, source, TIMEOUT)  # type: ignore[arg-type]
    assert reply is not None, "hung up on"
    return dns.message.from_wire(reply, keyring=False)


def _axfr(rig: Rig, name: str = ZONE, key: dns.tsig.Key | None = None) -> dns.message.Message:
    query = dns.message.make_query(name, dns.rdatatype.AXFR)
    if key is not None:
        query.use_tsig(key)
    return query


def test_only_the_secondaries_with_the_key_may_transfer(rig: Rig) -> None:
    # Another address, even with the key.
    reply = _tcp_exchange(_axfr(rig, key=rig.keyring()), rig.dns_port, source="127.0.0.2")
    assert reply.rcode() == dns.rcode.NOTAUTH
    assert reply.answer == []
    # The secondaries' address without the key, or with a wrong secret.
    for key in (None, rig.keyring(make_key().secret)):
        reply = _tcp_exchange(_axfr(rig, key=key), rig.dns_port)
        assert reply.rcode() == dns.rcode.NOTAUTH
        assert reply.answer == []
    # A zone of one challenge name (NS delegation) is not transferable.
    reply = _tcp_exchange(_axfr(rig, "_acme-challenge.example.test", rig.keyring()),
                          rig.dns_port)
    assert reply.rcode() == dns.rcode.NOTAUTH
    # Over UDP there is no transfer at all.
    udp = dns.query.udp(_axfr(rig, key=rig.keyring()), "127.0.0.1", port=rig.dns_port,
                        timeout=TIMEOUT)
    assert udp.rcode() == dns.rcode.NOTIMP


def test_axfr_and_ixfr_carry_the_whole_zone(rig: Rig) -> None:
    value = make_value()
    assert rig.change("setup", "example.test", value).status_code == 201
    try:
        zone = dns.zone.Zone(ZONE)
        query, _ = dns.xfr.make_query(zone, serial=None, keyring=rig.keyring(),
                                      keyname=rig.key.name)
        dns.query.inbound_xfr("127.0.0.1", zone, query, port=rig.dns_port, timeout=TIMEOUT)
        soa = zone.get_rdataset("@", "SOA")
        assert soa is not None
        serial = soa[0].serial
        names = {str(n) for n in zone.nodes}
        assert {"@", "d1"} <= names
        txt = zone.get_rdataset("d1", "TXT")
        assert txt is not None and {b"".join(r.strings).decode() for r in txt} == {value}
        ns = zone.get_rdataset("@", "NS")
        assert ns is not None
        assert {r.target.to_text() for r in ns} == {"ns1.example.net.", "ns2.example.net."}
        # IXFR from an older serial: the whole zone again (AXFR style).
        older = dns.zone.Zone(ZONE)
        query, _ = dns.xfr.make_query(older, serial=serial - 1, keyring=rig.keyring(),
                                      keyname=rig.key.name)
        dns.query.inbound_xfr("127.0.0.1", older, query, port=rig.dns_port, timeout=TIMEOUT)
        assert older.get_rdataset("d1", "TXT") == txt
        # IXFR from the current serial: the SOA alone.
        query, _ = dns.xfr.make_query(zone, serial=serial, keyring=rig.keyring(),
                                      keyname=rig.key.name)
        reply = _tcp_exchange(query, rig.dns_port, origin=zone.origin)
        assert [r.rdtype for r in reply.answer] == [dns.rdatatype.SOA]
        assert reply.answer[0][0].serial == serial
    finally:
        rig.change("teardown", "example.test", value)



async def test_a_zone_too_big_for_one_message_goes_in_several_signed_ones(
    tmp_path: Path,
) -> None:
    key = make_key("hmac-sha256", "big-zone.")
    port, knot_port = free_port(), free_port()
    provider = BuiltinProvider(
        BuiltinSettings(
            listen=(("127.0.0.1", port),), zone=ZONE, nameservers=("ns1.example.net",),
            secondaries=(("127.0.0.1", knot_port),), tsig=TsigSettings(key.name, key.secret),
        ),
        ("example.test",),
    )
    await provider.open()
    try:
        values = {f"n{i}.{ZONE}": make_value() for i in range(2000)}
        for name, value in values.items():
            await provider.add_txt(name, value)
        zone = dns.zone.Zone(ZONE)
        keyring = key.dns_key()
        query, _ = dns.xfr.make_query(zone, serial=None, keyring=keyring, keyname=key.name)
        # dnspython checks every message's signature, each chained to the one before.
        await asyncio.to_thread(dns.query.inbound_xfr, "127.0.0.1", zone, query, port=port,
                                timeout=TIMEOUT)
        found = {f"{n}.{ZONE}": b"".join(r.strings).decode()
                 for n, node in zone.nodes.items()
                 for rds in node.rdatasets if rds.rdtype == dns.rdatatype.TXT for r in rds}
        assert found == values
        knot = await asyncio.to_thread(start_knot_secondary, tmp_path / "knot", ZONE,
                                       ("127.0.0.1", port), key, knot_port)
        try:
            assert knot.txt(f"n1999.{ZONE}") == {values[f"n1999.{ZONE}"]}
            assert "messages" in knot.output()
        finally:
            knot.stop()
    finally:
        await provider.aclose()
