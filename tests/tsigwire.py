"""TSIG records built by hand, for tests that send what dnspython would not:
a query signed at a chosen time or with a truncated MAC, the exchanges that
bring back its answer raw, and the check of an answer that carries a TSIG
error (which dnspython refuses to verify)."""

from __future__ import annotations

import io
import socket
import struct

import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig

from tests.hostile.wire import read_frame


def signed_at(
    message: dns.message.Message, key: dns.tsig.Key, when: int, mac_size: int | None = None
) -> bytes:
    """*message* signed with *key* at time *when*, its MAC cut to *mac_size* octets."""
    wire = message.to_wire()
    template = dns.rdtypes.ANY.TSIG.TSIG(
        dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, 0, 300, b"", message.id, 0, b"")
    record, _ = dns.tsig.sign(wire, key, template, time=when)
    if mac_size is not None:
        record = record.replace(mac=record.mac[:mac_size])
    out = io.BytesIO()
    dns.rrset.from_rdata(key.name, 0, record).to_wire(out)
    (additional,) = struct.unpack_from("!H", wire, 10)
    return wire[:10] + struct.pack("!H", additional + 1) + wire[12:] + out.getvalue()


def udp_exchange(wire: bytes, port: int, timeout: float = 10.0) -> bytes:
    """The first datagram answering *wire* sent over UDP to 127.0.0.1:*port*, raw
    (dnspython's own exchange would refuse an answer with a TSIG error)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.send(wire)
        return sock.recv(65535)


def tcp_exchange(
    wire: bytes, port: int, source: str = "127.0.0.1", timeout: float = 10.0
) -> bytes | None:
    """The first message answering *wire* sent over TCP from *source* to 127.0.0.1:*port*,
    raw; None if the server hung up first."""
    with socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
    ) as sock:
        sock.sendall(len(wire).to_bytes(2, "big") + wire)
        return read_frame(sock)


def verifies(reply: bytes, key: dns.tsig.Key, request: bytes) -> bool:
    """True if the TSIG record ending *reply* (the answer to *request*) is *key*'s MAC
    over it and the request's MAC (RFC 8945 4.3), whatever its TSIG error."""
    message = dns.message.from_wire(reply, keyring=False)
    tsig = message.tsig
    assert tsig is not None
    record = tsig[0]
    out = io.BytesIO()
    tsig.to_wire(out)
    (additional,) = struct.unpack_from("!H", reply, 10)
    end = len(reply) - len(out.getvalue())  # the TSIG is the last record, not compressed
    unsigned = reply[:10] + struct.pack("!H", additional - 1) + reply[12:end]
    expected, _ = dns.tsig.sign(
        unsigned, key, record.replace(mac=b""), time=record.time_signed,
        request_mac=dns.message.from_wire(request, keyring=False).mac)
    return bool(expected.mac == record.mac)
