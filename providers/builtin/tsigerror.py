"""The answers to a query whose TSIG does not verify, as RFC 8945 section 5.2 says.

Every one is NOTAUTH with the question echoed and a TSIG record whose Error
field says what was wrong, so that the client (``dig -y``, ``kdig -y``, a
secondary's log) can tell a wrong key name from a wrong secret from a clock:

* **BADKEY**: a key name not configured here, or the configured name with
  another algorithm (5.2.1); also every signed query to a server without a key.
* **BADSIG**: the MAC does not verify (5.2.2).
* **BADTIME**: the MAC verifies but the time signed is more than the fudge
  away from ours (5.2.3). This one is signed with the key, over the request's
  MAC, with the request's time signed and ours in Other Data (5.3.2), so that
  the client can trust it and correct its clock.
* **BADTRUNC**: a truncated MAC that verifies (5.2.2.1 allows one no shorter
  than 10 octets and half the hash), but this server takes only whole MACs
  (5.2.4). It is signed, as BIND signs it. A MAC shorter than RFC 8945 allows,
  or longer than the hash, gets FORMERR, no TSIG (5.2.2.1).

BADKEY and BADSIG go out unsigned, the MAC empty (5.3.2: the server cannot sign
with a key it does not share or for a client that may not have it). The Time
Signed, Fudge and Original ID are the request's, as Knot answers.
"""

from __future__ import annotations

import hmac
import io
import struct
import time
from typing import cast

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdtypes.ANY.TSIG
import dns.rrset
import dns.tsig

Keyring = dict[dns.name.Name, dns.tsig.Key]


def keyring_of(key: dns.tsig.Key | None) -> Keyring | None:
    """What dnspython checks a message's TSIG against: *key* alone, or no key."""
    return None if key is None else {key.name: key}


def tsig_error_reply(
    data: bytes, keyring: Keyring | None, error: Exception, *, our_payload: int
) -> tuple[bytes, str]:
    """The answer to *data*, whose TSIG dnspython refused with *error*, and the
    TSIG error's name for the log."""
    query = dns.message.from_wire(data, keyring=False)
    tsig = query.tsig
    assert tsig is not None  # dnspython refused a TSIG, so there was one
    rdata = cast(dns.rdtypes.ANY.TSIG.TSIG, tsig[0])
    key = (keyring or {}).get(tsig.name)
    response = dns.message.make_response(query, our_payload=our_payload)
    response.set_rcode(dns.rcode.NOTAUTH)
    if key is None or key.algorithm != rdata.algorithm:
        return _unsigned(response, tsig.name, rdata, dns.rcode.BADKEY), "BADKEY"
    size = dns.tsig.mac_sizes.get(key.algorithm, 0)
    if len(rdata.mac) > size or len(rdata.mac) < max(10, size // 2):
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire(), f"FORMERR (a MAC of {len(rdata.mac)} octets)"
    if len(rdata.mac) < size:
        if not _truncated_mac_verifies(data, key, rdata):
            return _unsigned(response, tsig.name, rdata, dns.rcode.BADSIG), "BADSIG"
        if abs(rdata.time_signed - int(time.time())) > rdata.fudge:
            return _signed(response, key, rdata, dns.rcode.BADTIME), "BADTIME"
        return _signed(response, key, rdata, dns.rcode.BADTRUNC), "BADTRUNC"
    if isinstance(error, dns.tsig.BadTime):
        return _signed(response, key, rdata, dns.rcode.BADTIME), "BADTIME"
    return _unsigned(response, tsig.name, rdata, dns.rcode.BADSIG), "BADSIG"


def _unsigned(
    response: dns.message.Message,
    name: dns.name.Name,
    rdata: dns.rdtypes.ANY.TSIG.TSIG,
    code: int,
) -> bytes:
    """*response* with the request's TSIG record, its MAC emptied and *code* as its error."""
    record = cast(dns.rdtypes.ANY.TSIG.TSIG, rdata.replace(mac=b"", error=code, other=b""))
    return _with_tsig(response.to_wire(), name, record)


def _signed(
    response: dns.message.Message, key: dns.tsig.Key, rdata: dns.rdtypes.ANY.TSIG.TSIG, code: int
) -> bytes:
    """*response* signed with *key* over the request's MAC, with error *code*; for
    BADTIME our time in Other Data (48 bits, as Time Signed)."""
    now = int(time.time())
    other = struct.pack("!HI", (now >> 32) & 0xFFFF, now & 0xFFFFFFFF)
    template = rdata.replace(
        mac=b"", error=code, other=other if code == dns.rcode.BADTIME else b""
    )
    wire = response.to_wire()
    record, _ = dns.tsig.sign(  # type: ignore[no-untyped-call]
        wire, key, template, time=rdata.time_signed, request_mac=rdata.mac
    )
    return _with_tsig(wire, key.name, record)


def _with_tsig(wire: bytes, name: dns.name.Name, record: dns.rdtypes.ANY.TSIG.TSIG) -> bytes:
    """*wire* with the TSIG record appended (last in the additional section)."""
    out = io.BytesIO()
    dns.rrset.from_rdata(name, 0, record).to_wire(out)
    (additional,) = struct.unpack_from("!H", wire, 10)
    return wire[:10] + struct.pack("!H", additional + 1) + wire[12:] + out.getvalue()


def _truncated_mac_verifies(
    data: bytes, key: dns.tsig.Key, rdata: dns.rdtypes.ANY.TSIG.TSIG
) -> bool:
    """True if *rdata*'s MAC is the first octets of the MAC of *data* (RFC 8945 5.2.2.1)."""
    start = _tsig_start(data, len(rdata.to_wire() or b""))
    if start is None:
        return False
    (additional,) = struct.unpack_from("!H", data, 10)
    unsigned = data[:10] + struct.pack("!H", additional - 1) + data[12:start]
    full, _ = dns.tsig.sign(  # type: ignore[no-untyped-call]
        unsigned, key, rdata.replace(mac=b""), time=rdata.time_signed
    )
    return hmac.compare_digest(full.mac[: len(rdata.mac)], rdata.mac)


def _tsig_start(data: bytes, rdata_size: int) -> int | None:
    """Where the TSIG record starts in *data*: it is the last record, and its owner
    name (perhaps compressed) ends 10 octets before its rdata."""
    name_end = len(data) - rdata_size - 10
    for start in range(max(12, name_end - 255), name_end):
        try:
            _, used = dns.name.from_wire(data, start)
        except dns.exception.DNSException:
            continue
        if start + used == name_end:
            return start
    return None

