"""The builtin server's network side: queries in, answers out, and the limits on both.

:class:`Responder` turns one query packet into its answer. The fast path reads
the header and the question by hand and answers from the cache of
:class:`providers.builtin.store.Answers`, patching in the query's ID, RD and
flag and echoing its question (so its 0x20 case survives); it takes queries
with one question and either no additional record or one plain EDNS OPT
record, which is what resolvers and CAs send. Anything else (EDNS options such
as cookies, a TSIG, other opcodes, zone transfers, junk) goes through dnspython's
parser; a packet it cannot read is answered FORMERR, a packet too short for a
header or that is itself a response is dropped, and neither logs more than one
line a minute.

Over UDP every packet first passes the :class:`providers.builtin.rrl.RateLimiter`
(so that what a flood costs past the limit is the reading and a dropped or
truncated answer), and an answer is cut to the size the client can take: 512
bytes without EDNS, else the EDNS payload it offers, at most 1232 (no
fragmentation). A bigger answer goes out empty with TC set, and the client
retries over TCP. Each listening address has ``UDP_SOCKETS`` sockets sharing
the port (:func:`bind_udp`), each read by a thread of its own: one source
sending faster than the server reads fills only the queue its packets hash
to, and other clients' queries, spread over the others, are still read.

:class:`TcpServer` serves RFC 7766 connections (two-byte length, several
queries per connection, answered in order) within limits: at most ``clients``
connections in all and ``per_client`` per client address (per /64 for IPv6);
a connection with no query for ``idle_timeout`` seconds, or that takes longer
than ``read_timeout`` to deliver a query it started or to take its answer, is
closed. When every slot is taken a new connection makes way for itself
(:meth:`TcpServer._make_way`): clients holding connections they do not use, or
many addresses each holding its quota of half-sent queries, cannot lock out
one that asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig

from providers.builtin.rrl import DROP, SEND, RateLimiter
from providers.builtin.store import (
    RCODE_FORMERR,
    RCODE_NOTAUTH,
    TYPE_AXFR,
    TYPE_IXFR,
    Answer,
    Answers,
    Labels,
    name_wire,
)
from providers.builtin.tsigerror import Keyring, tsig_error_reply

log = logging.getLogger(__name__)

# The EDNS payload recommended since DNS Flag Day 2020: answers this size are
# not fragmented on ordinary paths.
EDNS_PAYLOAD = 1232
PLAIN_UDP_SIZE = 512
TCP_SIZE = 65535
# UDP sockets (and server threads) per listening address; see bind_udp.
UDP_SOCKETS = 16
# How often a kind of trouble (malformed packets, refused connections) may log a line.
LOG_INTERVAL = 60.0

_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_ONE_QUESTION_OPT = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_OWNER_TYPE = b"\x00\x00\x29"
_TRANSFER_TYPES = (TYPE_AXFR.to_bytes(2, "big"), TYPE_IXFR.to_bytes(2, "big"))
_COUNTS = struct.Struct("!HHHH")
_QTYPE_QCLASS = struct.Struct("!HH")
_QR = 0x80
_AA = 0x04
_TC = 0x02
_RD = 0x01

TSIG_ERRORS = (
    dns.message.UnknownTSIGKey,
    dns.tsig.BadSignature,
    dns.tsig.BadTime,
    dns.tsig.BadKey,
    dns.tsig.BadAlgorithm,
    dns.tsig.PeerError,
)


def _opt_record(do: bool) -> bytes:
    """Our OPT record: version 0, our payload, the query's DO bit copied (RFC 3225)."""
    flags = b"\x80\x00" if do else b"\x00\x00"
    return _OPT_OWNER_TYPE + EDNS_PAYLOAD.to_bytes(2, "big") + b"\x00\x00" + flags + b"\x00\x00"


_OPT = (_opt_record(False), _opt_record(True))


def parse_question(data: bytes, end: int) -> tuple[Labels, int, int] | None:
    """The lower-cased name, type and class of the question in ``data[12:end]``.

    None unless the question fills exactly that span with an uncompressed name.
    """
    labels: list[bytes] = []
    pos = 12
    while True:
        if pos >= end:
            return None
        size = data[pos]
        if size == 0:
            break
        if size > 63:  # a compression pointer or a reserved label type
            return None
        pos += 1 + size
        labels.append(data[pos - size : pos].lower())
    if pos + 5 != end or pos - 12 >= 255:
        return None
    qtype, qclass = _QTYPE_QCLASS.unpack_from(data, pos + 1)
    return tuple(labels), qtype, qclass


def _reply(
    head: bytes, question: bytes, answer: Answer, payload: int, do: int, limit: int
) -> bytes:
    """The answer packet: *head* is the query's first four bytes (ID and flags)."""
    flags = _QR | (_AA if answer.authoritative else 0) | (head[2] & _RD)
    # CD is not copied: only a security-aware server must (RFC 4035 3.1.6), and
    # this one offers no DNSSEC; Knot does the same.
    rcode = answer.rcode
    opt = b"" if payload < 0 else _OPT[1 if do else 0]
    additional = 1 if opt else 0
    if 12 + len(question) + len(answer.sections) + len(opt) <= limit:
        return (
            head[:2]
            + bytes((flags, rcode))
            + _COUNTS.pack(1, answer.ancount, answer.nscount, additional)
            + question
            + answer.sections
            + opt
        )
    # Partial RRsets mislead: an empty truncated answer sends the client to TCP.
    return (
        head[:2]
        + bytes((flags | _TC, rcode))
        + _COUNTS.pack(1, 0, 0, additional)
        + question
        + opt
    )


# What a slipped answer says besides TC: nothing.
_SLIPPED = Answer(0, True, b"", 0, 0)


def _udp_limit(payload: int) -> int:
    return PLAIN_UDP_SIZE if payload < 0 else max(PLAIN_UDP_SIZE, min(payload, EDNS_PAYLOAD))


def header_reply(data: bytes, rcode: int = RCODE_FORMERR) -> bytes:
    """A header-only answer to *data* (a question that cannot be read: FORMERR; a bad
    TSIG on a message that cannot be read: NOTAUTH): ID, opcode and RD kept, no sections."""
    flags = _QR | (data[2] & 0x78) | (data[2] & _RD)
    return data[:2] + bytes((flags, rcode)) + bytes(8)


def tsig_refusal(
    data: bytes, keyring: Keyring | None, error: Exception, logged: Throttled, address: str
) -> bytes:
    """NOTAUTH with the TSIG error (BADKEY, BADSIG, BADTIME, BADTRUNC) that *data*, a query
    or transfer request from *address* whose TSIG dnspython refused with *error*, earned;
    counted in *logged* (the client's fault, a wrong key or clock: not an error here)."""
    try:
        reply, name = tsig_error_reply(data, keyring, error, our_payload=EDNS_PAYLOAD)
    except Exception:  # unreadable once the TSIG is not checked: no TSIG to answer with
        reply, name = header_reply(data, RCODE_NOTAUTH), type(error).__name__
    logged(f"{address}: {name}")
    return reply


def _signed(wire: bytes, query: dns.message.Message, limit: int) -> bytes:
    """*wire* signed with the key that signed *query* (a secondary's SOA query, say)."""
    message = dns.message.from_wire(wire)
    algorithm = query.keyalgorithm or dns.tsig.default_algorithm
    message.use_tsig(query.keyring, query.keyname, algorithm=algorithm)
    message.request_mac = query.mac or b""
    return message.to_wire(max_size=limit)


class Throttled:
    """One log line per *interval* for a recurring event, with the count since the last line."""

    def __init__(self, message: str, level: int = logging.INFO, interval: float = LOG_INTERVAL):
        self.message = message
        self.level = level
        self.interval = interval
        self.count = 0
        self._last = -interval

    def __call__(self, detail: object) -> None:
        self.count += 1
        now = time.monotonic()
        if now - self._last >= self.interval:
            log.log(self.level, self.message, self.count, detail)
            self._last = now
            self.count = 0


class Transfers(Protocol):
    """Zone transfers (providers.builtin.transfer): the answers to AXFR and IXFR over TCP."""

    def respond(self, data: bytes, address: str) -> list[bytes] | None: ...


class Responder:
    """Answer packets for query packets, over UDP (rate-limited, size-limited) or TCP."""

    def __init__(
        self,
        answers: Answers,
        limiter: RateLimiter | None = None,
        transfers: Transfers | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.answers = answers
        self.limiter = limiter
        self.transfers = transfers
        self.keyring = keyring
        self.malformed = Throttled(
            "builtin DNS: %d malformed queries answered FORMERR or dropped (the last from %s)"
        )
        self.bad_tsig = Throttled(
            "builtin DNS: %d queries with a bad TSIG answered NOTAUTH (the last from %s)"
        )
        self.failed = Throttled(
            "builtin DNS: %d queries could not be answered (the last: %s)", logging.ERROR
        )

    def udp(self, data: bytes, address: str) -> bytes | None:
        """The answer to a UDP query from *address*, or None to send nothing."""
        try:
            # The rate limit first: a dropped answer is all a flood costs.
            verdict = self.limiter.check(address) if self.limiter else SEND
            if verdict == DROP:
                return None
            n = len(data)
            if n >= 17 and not data[2] & 0xF8:  # a query, standard opcode
                counts = data[4:12]
                end = 0
                if counts == _ONE_QUESTION:
                    end, payload, do = n, -1, 0
                elif (
                    counts == _ONE_QUESTION_OPT
                    and data[n - 11 : n - 8] == _OPT_OWNER_TYPE
                    and data[n - 6 : n - 4] == b"\x00\x00"  # extended rcode, version 0
                    and data[n - 2 : n] == b"\x00\x00"  # no options
                ):
                    end, payload, do = n - 11, data[n - 8] << 8 | data[n - 7], data[n - 4] & 0x80
                if end:
                    if verdict != SEND:
                        # Slipped: empty and truncated, so a real resolver asks over TCP.
                        return _reply(data, data[12:end], _SLIPPED, payload, do, 0)
                    answer = self._answer(data, end)
                    if answer is not None:
                        if log.isEnabledFor(logging.DEBUG):
                            self._log_fast(data, end, answer, "UDP")
                        return _reply(data, data[12:end], answer, payload, do, _udp_limit(payload))
            if verdict != SEND:
                return None  # nothing to slip: the question could not be read quickly
            return self._slow(data, address, tcp=False)
        except Exception as exc:  # a bug must cost one answer, never the server
            self.failed(f"{type(exc).__name__}: {exc}")
            return None

    def tcp(self, data: bytes, address: str) -> list[bytes] | None:
        """The answer message(s) to a TCP query, or None to hang up."""
        try:
            n = len(data)
            if (
                n >= 17
                and not data[2] & 0xF8
                and data[4:12] == _ONE_QUESTION
                and data[n - 4 : n - 2] not in _TRANSFER_TYPES
            ):
                answer = self._answer(data, n)
                if answer is not None:
                    if log.isEnabledFor(logging.DEBUG):
                        self._log_fast(data, n, answer, "TCP")
                    return [_reply(data, data[12:], answer, -1, 0, TCP_SIZE)]
            # Only a query (QR clear, opcode QUERY) asks for a transfer; a response or
            # another opcode goes the slow way: dropped, or NOTIMP.
            if n >= 12 and not data[2] & 0xF8 and _is_transfer(data):
                if self.transfers is not None:
                    return self.transfers.respond(data, address)
                return [_no_transfer(data)]
            reply = self._slow(data, address, tcp=True)
            return None if reply is None else [reply]
        except Exception as exc:
            self.failed(f"{type(exc).__name__}: {exc}")
            return None

    def _answer(self, data: bytes, end: int) -> Answer | None:
        # The name lower-cased, type and class as they are: they are numbers.
        key = data[12 : end - 4].lower() + data[end - 4 : end]
        answer = self.answers.cache.get(key)
        if answer is None:
            question = parse_question(data, end)
            if question is not None:
                answer = self.answers.lookup(key, *question)
        return answer

    def _slow(self, data: bytes, address: str, *, tcp: bool) -> bytes | None:
        """Everything the fast path does not take, through dnspython's parser."""
        if len(data) < 12 or data[2] & _QR:
            # Too short for a header, or a response: answering could start a loop.
            self.malformed(address)
            return None
        try:
            # Signed queries (a secondary's SOA query) are checked and answered
            # signed when a key is configured. Without one, a signed query is
            # signed with a key unknown here: NOTAUTH with BADKEY (RFC 8945 5.2.1),
            # as Knot answers; it cannot be answered signed.
            query = dns.message.from_wire(data, keyring=self.keyring)
        except TSIG_ERRORS as exc:
            return tsig_refusal(data, self.keyring, exc, self.bad_tsig, address)
        except Exception:  # any parse failure of untrusted input
            self.malformed(address)
            return header_reply(data)
        response = dns.message.make_response(query, our_payload=EDNS_PAYLOAD)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
        elif query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
        else:
            question = query.question[0]
            qname = name_wire(question.name.labels[:-1])
            wire_question = qname + _QTYPE_QCLASS.pack(question.rdtype, question.rdclass)
            labels = tuple(label.lower() for label in question.name.labels[:-1])
            answer = self.answers.lookup(
                qname.lower() + wire_question[-4:], labels, question.rdtype, question.rdclass
            )
            payload = query.payload if query.edns == 0 else -1
            do = query.ednsflags & dns.flags.DO
            if log.isEnabledFor(logging.DEBUG):
                _log_query(question.name, question.rdtype, answer, "TCP" if tcp else "UDP")
            limit = TCP_SIZE if tcp else _udp_limit(payload)
            wire = _reply(data, wire_question, answer, payload, do, limit)
            if not query.had_tsig:
                return wire
            try:
                return _signed(wire, query, limit)
            except dns.exception.TooBig:
                # The records fit, their signature not beside them: empty with TC set,
                # as any answer too big, and the client asks over TCP.
                return _signed(_reply(data, wire_question, answer, payload, do, 0), query, limit)
        return response.to_wire(max_size=TCP_SIZE if tcp else PLAIN_UDP_SIZE)

    @staticmethod
    def _log_fast(data: bytes, end: int, answer: Answer, transport: str) -> None:
        name = dns.name.from_wire(data, 12)[0]
        _log_query(name, int.from_bytes(data[end - 4 : end - 2], "big"), answer, transport)


def _log_query(name: dns.name.Name, qtype: int, answer: Answer, transport: str) -> None:
    log.debug(
        "builtin DNS: %s %s over %s -> %s",
        name,
        dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype)),
        transport,
        dns.rcode.to_text(dns.rcode.Rcode.make(answer.rcode)),
    )


def _no_transfer(data: bytes) -> bytes:
    """NOTAUTH for a transfer request when there are no secondaries (as Knot answers)."""
    try:
        response = dns.message.make_response(dns.message.from_wire(data, keyring=False))
    except Exception:
        return header_reply(data, RCODE_NOTAUTH)
    response.set_rcode(dns.rcode.NOTAUTH)
    return response.to_wire()


def _is_transfer(data: bytes) -> bool:
    """True if *data* asks for AXFR or IXFR (read without trusting anything after the question)."""
    try:
        name_end = dns.name.from_wire(data, 12)[1] + 12
    except dns.exception.DNSException:
        return False
    return data[name_end : name_end + 2] in _TRANSFER_TYPES


# -- TCP ----------------------------------------------------------------------------


def client_key(address: str) -> str:
    """Whose connection this is, for the per-client limit: the address, or its /64 for IPv6."""
    if ":" not in address:
        return address
    try:
        net = ipaddress.IPv6Network((address.partition("%")[0], 64), strict=False)
    except ValueError:
        return address
    return str(net)


@dataclass(frozen=True)
class TcpLimits:
    clients: int = 256
    per_client: int = 8
    idle_timeout: float = 10.0
    read_timeout: float = 5.0


@dataclass
class _Connection:
    client: str
    task: asyncio.Task[None]
    opened: float
    # When it started waiting for its next query; None while a query is on its way in
    # or its answer on its way out.
    idle_since: float | None


class TcpServer:
    """RFC 7766 DNS over TCP within :class:`TcpLimits`; ``handle`` is the stream callback."""

    def __init__(
        self, respond: Callable[[bytes, str], list[bytes] | None], limits: TcpLimits
    ) -> None:
        self.respond = respond
        self.limits = limits
        self.connections: dict[asyncio.Task[None], _Connection] = {}
        self._per_client: Counter[str] = Counter()
        self.refused = Throttled(
            "builtin DNS: %d TCP connections refused (the last: %s)", logging.WARNING
        )

    def _make_way(self, client: str) -> _Connection | None:
        """The connection to close for a newcomer from *client* when every slot is taken.

        The one idle the longest, if any. Otherwise the oldest connection of the
        client holding the most, if that client holds at least two more than
        *client*: many addresses each under ``per_client``, all with a query
        begun and never finished (or an answer they do not take), would
        otherwise lock everyone else out. Taking from the biggest holder, and
        only when the newcomer then holds no more than it, never turns the order
        round (no two clients take turns closing each other's connections), and
        a client with one connection never loses it: fresh addresses cannot push
        out a client that holds few. Everyone is refused only when ``clients``
        addresses hold one connection each.

        Unlike the API's (gateway/listeners.py), no connection here is ever
        being served at the moment a newcomer comes: an answer is made without
        waiting for anything, so a connection that is not idle is waiting for
        its client, to finish a query or to take an answer.
        """
        idle = min(
            (c for c in self.connections.values() if c.idle_since is not None),
            key=lambda c: c.idle_since or 0.0,
            default=None,
        )
        if idle is not None:
            return idle
        floor = self._per_client[client] + 2
        counts = self._per_client
        return max(
            (c for c in self.connections.values() if counts[c.client] >= floor),
            key=lambda c: (counts[c.client], -c.opened),
            default=None,
        )

    def _forget(self, task: asyncio.Task[None]) -> None:
        """Count *task*'s connection out (once, however often it is called)."""
        connection = self.connections.pop(task, None)
        if connection is not None:
            self._per_client[connection.client] -= 1
            if not self._per_client[connection.client]:
                del self._per_client[connection.client]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else "?"
        client = client_key(address)
        try:
            if task is None:
                return
            if self._per_client[client] >= self.limits.per_client:
                self.refused(f"{address} already holds {self.limits.per_client}")
                return
            if len(self.connections) >= self.limits.clients:
                victim = self._make_way(client)
                if victim is None:
                    self.refused(f"all {self.limits.clients} are busy; {address} hung up on")
                    return
                victim.task.cancel()
                self._forget(victim.task)
            now = time.monotonic()
            self.connections[task] = connection = _Connection(client, task, now, now)
            self._per_client[client] += 1
            await self._serve(reader, writer, address, connection)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            if task is not None:
                self._forget(task)
            writer.close()
            # Bounded, and quiet even when cancelled: the socket is closed either way.
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        connection: _Connection,
    ) -> None:
        limits = self.limits
        while True:
            connection.idle_since = time.monotonic()
            first = await asyncio.wait_for(reader.readexactly(1), limits.idle_timeout)
            connection.idle_since = None
            async with asyncio.timeout(limits.read_timeout):
                size = int.from_bytes(first + await reader.readexactly(1), "big")
                wire = await reader.readexactly(size)
            replies = self.respond(wire, address)
            if replies is None:
                return  # not a query: the peer is not speaking DNS to us
            for reply in replies:
                writer.write(len(reply).to_bytes(2, "big") + reply)
                async with asyncio.timeout(limits.read_timeout):
                    await writer.drain()

    async def close(self) -> None:
        """End every connection, waiting for them at most ``limits.read_timeout``."""
        tasks = list(self.connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.limits.read_timeout)


# -- listening sockets ------------------------------------------------------------------


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_udp(host: str, port: int, count: int = UDP_SOCKETS) -> list[socket.socket]:
    """*count* UDP sockets bound to *host*:*port* (SO_REUSEPORT); raises OSError.

    The kernel spreads datagrams over them by source address and port, each
    socket with a queue of its own: one source flooding faster than the server
    reads fills its own queue, and a query from anywhere else most likely lands
    in another one, which a thread of its own reads.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            sockets.append(sock)
            if sock.family == socket.AF_INET6:
                # So that 0.0.0.0:53 and [::]:53 can both be listed.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # SO_REUSEPORT shares the port only among sockets of this user that all
            # set it: a DNS server already there still makes the first bind fail.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening TCP socket on *host*:*port*; raises OSError."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock
