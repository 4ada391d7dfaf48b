"""Property-based attacks on the builtin DNS server of a real gateway process.

A gateway runs as ``python -m gateway`` with ``PROVIDER=builtin`` (shared by
the module), one TXT value published through its native API. Hypothesis sends
it arbitrary packets, nearly-valid queries (any bytes in labels, any type,
class, flags and counts, EDNS records with junk options) and mutations of a
valid query, over UDP and TCP. After each packet a valid probe query goes the
same way; since the server answers a socket's packets in order, the probe's
answer shows that the server lived on, and whatever came back for the attack
is read before it:

* an answer to an attack packet is a response (QR set) with the attack's ID,
  which is a FORMERR, NOTIMP, REFUSED or an answer that dnspython can parse;
* the probe always gets the published value;
* a query signed with a TSIG key (this server has none) gets NOTAUTH with the
  TSIG error BADKEY, unsigned;
* the gateway's log never shows a traceback or an error.
"""

from __future__ import annotations

import base64
import socket
import struct
from collections.abc import Iterator

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, builtin_settings, running_gateway
from tests.hostile.wire import read_frame
from tests.system import free_port

NAME = "_acme-challenge.example.test"
PROBE_ID = 0xBEEF
TIMEOUT = 5.0


class Target:
    def __init__(self, gateway: GatewayProcess, dns_port: int, value: str) -> None:
        self.gateway = gateway
        self.dns_port = dns_port
        self.value = value


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    folder = tmp_path_factory.mktemp("dns-fuzz")
    port, dns_port = free_port(), free_port()
    settings = builtin_settings(
        folder, port, dns_port,
        BUILTIN_ZONE="acme.example.net",
        # The fuzzer asks hard from loopback; rate limiting has tests of its own.
        BUILTIN_RATE_LIMIT_EXEMPT="127.0.0.0/8",
    )
    with running_gateway(folder, settings) as gateway:
        value = make_value()
        answer = requests.post(
            f"http://127.0.0.1:{port}/",
            json={"argument": "setup", "domain_name": "example.test", "challenge_content": value},
            timeout=20,
        )
        assert answer.status_code == 201, answer.text
        yield Target(gateway, dns_port, value)
        log = gateway.stderr
    assert "Traceback" not in log, log[-5000:]
    assert " ERROR " not in log, log[-5000:]


def _probe() -> bytes:
    query = dns.message.make_query(NAME, "TXT")
    query.id = PROBE_ID
    return query.to_wire()


def _check_probe(target: Target, data: bytes) -> None:
    reply = dns.message.from_wire(data)
    values = {b"".join(r.strings).decode() for rrset in reply.answer for r in rrset}
    assert values == {target.value}


def _check_attack_reply(attack: bytes, data: bytes) -> None:
    assert len(data) >= 12
    assert data[:2] == attack[:2], "an answer carries the query's ID"
    assert data[2] & 0x80, "an answer is a response"
    if data[3] & 0x0F not in (1, 4, 5):  # FORMERR, NOTIMP, REFUSED may be header-only
        dns.message.from_wire(data, keyring=False)  # a TSIG error's record is read, not checked


def _udp(target: Target, attack: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", target.dns_port))
        sock.send(attack)
        sock.send(_probe())
        while True:
            data = sock.recv(65535)
            if _is_probe_reply(data):
                _check_probe(target, data)
                return
            _check_attack_reply(attack, data)


def _is_probe_reply(data: bytes) -> bool:
    try:
        reply = dns.message.from_wire(data)
    except Exception:
        return False
    return (
        reply.id == PROBE_ID
        and len(reply.question) == 1
        and reply.question[0].name == dns.name.from_text(NAME)
        and reply.question[0].rdtype == dns.rdatatype.TXT
    )


def _tcp(target: Target, attack: bytes) -> None:
    with socket.create_connection(("127.0.0.1", target.dns_port), timeout=TIMEOUT) as sock:
        probe = _probe()
        frames = [len(wire).to_bytes(2, "big") + wire for wire in (attack, probe)]
        sock.sendall(b"".join(frames))
        while True:
            data = read_frame(sock)
            if data is None:
                break  # hung up on: the attack was not DNS; a new connection must work
            if _is_probe_reply(data):
                _check_probe(target, data)
                return
            _check_attack_reply(attack, data)
    with socket.create_connection(("127.0.0.1", target.dns_port), timeout=TIMEOUT) as sock:
        probe = _probe()
        sock.sendall(len(probe).to_bytes(2, "big") + probe)
        data = read_frame(sock)
        assert data is not None
        _check_probe(target, data)


# -- what attacks look like ---------------------------------------------------------

labels = st.lists(st.binary(min_size=1, max_size=63), min_size=0, max_size=3)


@st.composite
def near_queries(draw: st.DrawFn) -> bytes:
    """A header and a question with anything in the labels, types, flags and counts."""
    qid = draw(st.integers(0, 0xFFFF))
    # Mostly what a resolver sends, so that junk reaches the answering code.
    flags = draw(st.one_of(st.sampled_from([0, 0x0100, 0x0110]), st.integers(0, 0x7FFF)))
    edns = draw(st.booleans())
    counts = draw(st.one_of(st.just((1, 0, 0, int(edns))),
                            st.tuples(*(st.integers(0, 3) for _ in range(4)))))
    # Junk anywhere: below a challenge name, in it, or outside every zone.
    name = (
        draw(labels)
        + draw(st.sampled_from([[b"_acme-challenge"], [b"_ACME-challenge"], []]))
        + draw(labels)
        + draw(st.sampled_from([[b"example", b"test"], [b"acme", b"example", b"net"], []]))
    )
    wire = b"".join(bytes((len(label),)) + label for label in name) + b"\x00"
    qtype = draw(st.sampled_from([16, 6, 255, 2, 1, 41, 250, 251, 252, 0, 65535]))
    qclass = draw(st.sampled_from([1, 1, 1, 3, 4, 254, 255, 0]))
    body = wire + struct.pack("!HH", qtype, qclass)
    if edns:
        options = draw(st.binary(max_size=40))
        body += b"\x00\x00\x29" + struct.pack(
            "!HBBHH", draw(st.integers(0, 0xFFFF)), 0, draw(st.integers(0, 2)),
            draw(st.integers(0, 0xFFFF)), len(options)) + options
    if draw(st.integers(0, 4)) == 0:
        body += draw(st.binary(max_size=8))
    return struct.pack("!HH4H", qid, flags, *counts) + body


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    """A valid query with some bytes changed, or cut short."""
    query = dns.message.make_query(NAME, draw(st.sampled_from(["TXT", "SOA", "ANY", "NS"])),
                                   use_edns=draw(st.sampled_from([False, 0])))
    wire = bytearray(query.to_wire())
    for _ in range(draw(st.integers(1, 4))):
        wire[draw(st.integers(0, len(wire) - 1))] = draw(st.integers(0, 255))
    return bytes(wire[: draw(st.integers(0, len(wire)))])


attacks = st.one_of(st.binary(max_size=600), near_queries(), mutated_queries())
fuzz = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@fuzz
@given(attack=attacks)
def test_udp_attacks_get_a_clean_answer_or_none(target: Target, attack: bytes) -> None:
    _udp(target, attack)


@settings(fuzz, max_examples=150)
@given(attack=attacks)
def test_tcp_attacks_get_a_clean_answer_or_a_hang_up(target: Target, attack: bytes) -> None:
    _tcp(target, attack)


@pytest.mark.parametrize("qtype", ["TXT", "SOA"])
def test_a_signed_query_to_a_server_without_a_key_gets_notauth(target: Target, qtype: str) -> None:
    """This server has no TSIG key: a query signed with any key is one signed with a
    key it does not know, answered NOTAUTH with BADKEY over UDP and TCP (RFC 8945
    5.2.1), not left unanswered with an error in the log."""
    query = dns.message.make_query(NAME, qtype)
    query.use_tsig(dns.tsig.Key("attacker.", base64.b64encode(b"k" * 32).decode()))
    wire = query.to_wire()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", target.dns_port))
        sock.send(wire)
        replies = [sock.recv(65535)]
    with socket.create_connection(("127.0.0.1", target.dns_port), timeout=TIMEOUT) as sock:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        replies.append(read_frame(sock) or b"")
    for reply in replies:
        _check_attack_reply(wire, reply)
        assert reply[3] & 0x0F == dns.rcode.NOTAUTH
        assert reply[6:8] == b"\x00\x00", "no answer records"
        # The TSIG error says why (RFC 8945 5.2.1): the key is unknown here, and the
        # answer is unsigned, as no key is shared.
        message = dns.message.from_wire(reply, keyring=False)
        assert message.tsig is not None and message.tsig.name == query.keyname
        assert message.tsig[0].error == dns.rcode.BADKEY
        assert message.tsig[0].mac == b""


def test_the_server_still_answers_and_logged_nothing_alarming(target: Target) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(("127.0.0.1", target.dns_port))
        sock.send(_probe())
        _check_probe(target, sock.recv(65535))
    log = target.gateway.stderr
    assert "Traceback" not in log, log[-5000:]
    assert " ERROR " not in log, log[-5000:]
