"""Zone transfer requests that are not queries, and signed queries, against a real
gateway process.

A gateway runs as ``python -m gateway`` with ``PROVIDER=builtin``, a
``BUILTIN_ZONE`` with one secondary (127.0.0.1, a port nobody answers NOTIFY
on) and a TSIG key; shared by the module. The tests of the secondaries' rules
(tests/providers/test_builtin_transfer.py) send queries; these send what only
looks like one, over TCP, from the secondary's address and another:

* a response (QR set) asking for the zone is not answered (answering a
  response could start a loop), and costs no error in the log;
* a NOTIFY, UPDATE or STATUS message with an AXFR or IXFR question gets no
  zone (NOTIMP, or FORMERR for what cannot be parsed), even signed and from
  the secondary: a transfer is a QUERY;
* a signed query over UDP whose records fit in 512 bytes but not beside their
  signature gets a signed, empty answer with TC set (the client asks over TCP),
  not none and an error in the log;
* a query or transfer request whose TSIG does not verify gets NOTAUTH with the
  TSIG error RFC 8945 5.2 names (BADKEY for a wrong key name or algorithm,
  BADSIG for a wrong secret, BADTIME, signed, for a clock beyond the fudge,
  BADTRUNC for a truncated MAC), nothing of the zone, and no error in the log.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.tsig
import pytest
import requests

from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, builtin_settings, running_gateway
from tests.system import free_port
from tests.tsigwire import signed_at, tcp_exchange, udp_exchange, verifies

ZONE = "acme.example.net"
KEY = dns.tsig.Key("transfer.", base64.b64encode(b"t" * 32).decode())
SECONDARY, STRANGER = "127.0.0.1", "127.0.0.2"
TIMEOUT = 10.0


class Primary:
    def __init__(self, gateway: GatewayProcess, port: int, dns_port: int) -> None:
        self.gateway = gateway
        self.port = port
        self.dns_port = dns_port

    def setup(self, value: str) -> None:
        answer = requests.post(
            f"http://127.0.0.1:{self.port}/", timeout=60,
            json={"argument": "setup", "domain_name": "example.test", "challenge_content": value},
        )
        assert answer.status_code == 201, answer.text

    def exchange(self, wire: bytes, source: str) -> bytes | None:
        """The first message answering *wire* over TCP from *source*; None: hung up on."""
        return tcp_exchange(wire, self.dns_port, source, TIMEOUT)


@pytest.fixture(scope="module")
def primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Primary]:
    folder = tmp_path_factory.mktemp("dns-transfers")
    port, dns_port = free_port(), free_port()
    settings = builtin_settings(
        folder, port, dns_port,
        BUILTIN_ZONE=ZONE,
        BUILTIN_SECONDARIES=f"{SECONDARY}:{free_port()}",
        BUILTIN_TSIG_KEY_NAME=KEY.name.to_text(),
        BUILTIN_TSIG_SECRET=base64.b64encode(KEY.secret).decode(),
        BUILTIN_RATE_LIMIT_EXEMPT="127.0.0.0/8",
        PROPAGATION_NAMESERVERS=f"127.0.0.1:{dns_port}",
    )
    with running_gateway(folder, settings) as gateway:
        yield Primary(gateway, port, dns_port)


def _request(qtype: str, *, signed: bool = True) -> dns.message.Message:
    message = dns.message.make_query(ZONE, qtype)
    if signed:
        message.use_tsig(KEY)
    return message


@pytest.mark.parametrize("source", [SECONDARY, STRANGER])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_a_response_asking_for_the_zone_is_not_answered(
    primary: Primary, source: str, signed: bool, qtype: str
) -> None:
    message = _request(qtype, signed=signed)
    message.flags |= dns.flags.QR
    assert primary.exchange(message.to_wire(), source) is None
    log = primary.gateway.stderr
    assert "could not be answered" not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS])
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_a_transfer_question_under_another_opcode_gets_no_zone(
    primary: Primary, opcode: dns.opcode.Opcode, qtype: str
) -> None:
    message = _request(qtype)
    message.set_opcode(opcode)
    reply = primary.exchange(message.to_wire(), SECONDARY)
    assert reply is not None
    # Read from the header: an UPDATE whose zone section has type AXFR cannot be
    # parsed, so its FORMERR cannot be signed.
    assert reply[:2] == message.id.to_bytes(2, "big") and reply[2] & 0x80
    assert reply[3] & 0x0F in (dns.rcode.NOTIMP, dns.rcode.FORMERR)
    assert reply[6:8] == b"\x00\x00", "no zone records"
    # A real query from the secondary still gets the zone: the key and address work.
    query = _request(qtype)
    reply = primary.exchange(query.to_wire(), SECONDARY)
    assert reply is not None
    assert dns.message.from_wire(reply, keyring={KEY.name: KEY}, request_mac=query.mac).answer


def test_a_signed_answer_too_big_for_its_signature_is_truncated(primary: Primary) -> None:
    query = dns.message.make_query("_acme-challenge.example.test", "TXT", use_edns=False)
    query.use_tsig(KEY)
    # Eight values: 8 x 56 bytes of records fit in 512 bytes, not with the TSIG record.
    values = [make_value() for _ in range(8)]
    for value in values:
        primary.setup(value)
    # dnspython checks the answers' signatures with the query's key.
    reply = dns.query.udp(query, "127.0.0.1", port=primary.dns_port, timeout=TIMEOUT)
    assert reply.had_tsig and reply.flags & dns.flags.TC and reply.answer == []
    over_tcp = dns.query.tcp(query, "127.0.0.1", port=primary.dns_port, timeout=TIMEOUT)
    assert {b"".join(r.strings).decode() for r in over_tcp.answer[0]} == set(values)
    log = primary.gateway.stderr
    assert "could not be answered" not in log, log[-3000:]



WRONG_SECRET = dns.tsig.Key(KEY.name, base64.b64encode(b"w" * 32).decode())
WRONG_NAME = dns.tsig.Key("stranger.", base64.b64encode(KEY.secret).decode())
WRONG_ALGORITHM = dns.tsig.Key(KEY.name, base64.b64encode(KEY.secret).decode(), "hmac-sha512")
BAD_TSIGS = {
    # case: (key, seconds off our clock, MAC size, TSIG error expected)
    "wrong secret": (WRONG_SECRET, 0, None, dns.rcode.BADSIG),
    "wrong key name": (WRONG_NAME, 0, None, dns.rcode.BADKEY),
    "wrong algorithm": (WRONG_ALGORITHM, 0, None, dns.rcode.BADKEY),
    "an hour slow": (KEY, -3600, None, dns.rcode.BADTIME),
    "an hour fast": (KEY, 3600, None, dns.rcode.BADTIME),
    "MAC truncated to half": (KEY, 0, 16, dns.rcode.BADTRUNC),
    "wrong secret, truncated": (WRONG_SECRET, 0, 16, dns.rcode.BADSIG),
}


@pytest.mark.parametrize("transport", ["UDP", "TCP", "AXFR"])
@pytest.mark.parametrize("case", sorted(BAD_TSIGS))
def test_a_tsig_that_does_not_verify_gets_its_tsig_error(
    primary: Primary, case: str, transport: str
) -> None:
    key, offset, mac_size, error = BAD_TSIGS[case]
    query = dns.message.make_query(ZONE, "AXFR" if transport == "AXFR" else "SOA")
    sent = int(time.time()) + offset
    wire = signed_at(query, key, sent, mac_size)
    if transport == "UDP":
        reply = udp_exchange(wire, primary.dns_port, TIMEOUT)
    else:
        answer = primary.exchange(wire, SECONDARY)
        assert answer is not None
        reply = answer
    message = dns.message.from_wire(reply, keyring=False)
    assert message.id == query.id and message.flags & dns.flags.QR
    assert message.rcode() == dns.rcode.NOTAUTH
    assert message.answer == [] and message.authority == [], "nothing of the zone"
    assert message.tsig is not None, "the TSIG error travels in a TSIG record"
    assert message.tsig.name == key.name
    record = message.tsig[0]
    assert record.error == error, dns.rcode.to_text(record.error)
    assert record.algorithm == key.algorithm and record.original_id == query.id
    assert record.time_signed == sent, "the request's time signed, as Knot answers"
    if error in (dns.rcode.BADKEY, dns.rcode.BADSIG):
        assert record.mac == b"", "unsigned: no key shared that the client could check"
    else:
        # Signed with the right key over the request's MAC (RFC 8945 5.3.2).
        assert len(record.mac) == 32
        assert verifies(reply, KEY, wire), "the answer verifies with the key"
        if error == dns.rcode.BADTIME:
            assert len(record.other) == 6, "our time, 48 bits, in Other Data"
            ours = int.from_bytes(record.other, "big")
            assert abs(ours - int(time.time())) < 600
    log = primary.gateway.stderr
    assert "could not be answered" not in log, log[-3000:]
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]


def test_a_good_tsig_still_gets_its_answer(primary: Primary) -> None:
    query = dns.message.make_query(ZONE, "SOA")
    wire = signed_at(query, KEY, int(time.time()))
    reply = dns.message.from_wire(
        udp_exchange(wire, primary.dns_port, TIMEOUT), keyring={KEY.name: KEY},
        request_mac=dns.message.from_wire(wire, keyring=False).mac)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer
