"""Zone transfers to secondaries: AXFR and IXFR out, NOTIFY on every change, TSIG on all of it.

Only the zone in ``BUILTIN_ZONE`` is transferable. With NS delegation each
``_acme-challenge.<name>`` is a zone of one name that only the gateway serves
(its NS records name the gateway); a secondary serving those would need every
one of them configured. Names below ``BUILTIN_ZONE`` that are such a zone of
their own (when ``BUILTIN_ZONE`` lies inside a managed domain) are not part of
its transfer either.

* **Who may transfer**: a TCP connection from an address in
  ``BUILTIN_SECONDARIES``, and, when a key is configured, signed with it.
  Anyone else, and a request for any other zone, gets NOTAUTH (as Knot
  answers) and nothing of the zone; over UDP an AXFR gets NOTIMP and an IXFR
  NOTAUTH.
* **IXFR** is answered with the whole zone, in the form of an AXFR (RFC 1995
  section 4 allows it; the zone is small), or with the SOA alone when the
  secondary already has the current serial.
* **NOTIFY** (RFC 1996) goes to every secondary when the server starts and
  after every change in the zone, at once, with the new serial, signed when a
  key is configured; it is sent again, quickly at first, until answered.

Every record in a transfer is built from the same objects as the answers
(:class:`providers.builtin.store.Answers`), never from text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable, Sequence

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset
import dns.tsig

from providers.builtin.network import TSIG_ERRORS, Throttled, header_reply, tsig_refusal
from providers.builtin.serial import is_newer
from providers.builtin.store import TYPE_SOA, Answers, Labels, name_wire
from providers.builtin.tsigerror import keyring_of

log = logging.getLogger(__name__)

# Records are packed into messages of about this size (as Knot does); far below 64 KiB.
MESSAGE_SIZE = 16_000
# How long each NOTIFY waits for its answer before the next is sent (RFC 1996
# 3.6 leaves the timing to the operator): a lost datagram costs a quarter of a
# second, a secondary that is down about 15 s of tries, then the next change.
NOTIFY_TIMEOUTS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _name(labels: Labels) -> dns.name.Name:
    return dns.name.Name((*labels, b""))


def _soa_rrset(zone: Labels, ttl: int, wire: bytes) -> dns.rrset.RRset:
    """The SOA RRset of *zone* from its rdata in wire format."""
    rdata = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.SOA, wire, 0, len(wire))
    return dns.rrset.from_rdata(_name(zone), ttl, rdata)


class Transfers:
    """Answers AXFR and IXFR for ``zone`` to the ``secondaries``' addresses."""

    def __init__(
        self,
        answers: Answers,
        zone: Labels,
        secondaries: Iterable[str],
        key: dns.tsig.Key | None,
    ) -> None:
        self.answers = answers
        self.zone = zone
        self.allowed = frozenset(ipaddress.ip_address(a) for a in secondaries)
        self.key = key
        self.keyring = keyring_of(key)
        self.refused = Throttled(
            "builtin DNS: %d zone transfers refused (the last: %s)", logging.WARNING
        )
        self.bad_tsig = Throttled(
            "builtin DNS: %d zone transfer requests with a bad TSIG answered NOTAUTH "
            "(the last from %s)"
        )

    def respond(self, data: bytes, address: str) -> list[bytes] | None:
        """The messages answering the AXFR or IXFR query *data* from *address*."""
        try:
            # Without a key, a signed request is one with a key unknown here:
            # NOTAUTH with BADKEY; a wrong MAC or time gets its own TSIG error.
            query = dns.message.from_wire(data, keyring=self.keyring)
        except TSIG_ERRORS as exc:
            return [tsig_refusal(data, self.keyring, exc, self.bad_tsig, address)]
        except Exception:
            return [header_reply(data)]
        try:
            allowed = ipaddress.ip_address(address.partition("%")[0]) in self.allowed
        except ValueError:
            allowed = False
        refusal = None
        if not allowed:
            refusal = f"{address} is not in BUILTIN_SECONDARIES"
        elif self.key is not None and not query.had_tsig:
            refusal = f"{address}: not signed with BUILTIN_TSIG_KEY_NAME"
        question = query.question[0] if len(query.question) == 1 else None
        if (
            refusal is not None
            or question is None
            or question.rdclass != dns.rdataclass.IN
            or tuple(label.lower() for label in question.name.labels[:-1]) != self.zone
        ):
            if refusal is not None:
                self.refused(refusal)
            # NOTAUTH, as Knot answers: not authoritative for transferring this.
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.NOTAUTH)
            return [response.to_wire()]
        log.info(
            "builtin DNS: %s of %s to %s",
            dns.rdatatype.to_text(question.rdtype),
            question.name,
            address,
        )
        return self._messages(query, question.rdtype == dns.rdatatype.IXFR)

    def _records(self) -> tuple[int, dns.rrset.RRset, list[dns.rrset.RRset]]:
        """The zone's serial, its SOA and every other RRset, read under the answers' lock."""
        answers = self.answers
        with answers.lock:
            serial = answers.serial
            ttl = answers.ttl
            soa_wire = answers.soa_rdata(self.zone)
            names = [
                (name, values)
                for name, values in answers.store.below(self.zone)
                if answers.served.apex_of(name) == self.zone
            ]
            nameservers = answers.nameservers
        origin = _name(self.zone)
        soa = _soa_rrset(self.zone, ttl, soa_wire)
        ns_wires = [name_wire(ns) for ns in nameservers]
        rest = [
            dns.rrset.from_rdata_list(
                origin,
                ttl,
                [
                    dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.NS, w, 0, len(w))
                    for w in ns_wires
                ],
            )
        ]
        for name, values in sorted(names):
            rest.append(
                dns.rrset.from_rdata_list(
                    _name(name),
                    ttl,
                    [
                        dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [v])
                        for v in values
                    ],
                )
            )
        return serial, soa, rest

    def _messages(self, query: dns.message.Message, incremental: bool) -> list[bytes]:
        serial, soa, rest = self._records()
        if incremental:
            theirs = [r for r in query.authority if r.rdtype == TYPE_SOA]
            if theirs and not is_newer(serial, int(theirs[0][0].serial)):
                return self._render(query, [[soa]])  # up to date: the SOA alone
        groups: list[list[dns.rrset.RRset]] = [[soa]]
        size = 0
        for rrset in [*rest, soa]:
            owner = sum(len(label) + 1 for label in rrset.name.labels)
            estimate = sum(owner + 10 + len(rd.to_wire() or b"") for rd in rrset)
            if size + estimate > MESSAGE_SIZE and groups[-1]:
                groups.append([])
                size = 0
            groups[-1].append(rrset)
            size += estimate
        return self._render(query, groups)

    @staticmethod
    def _render(query: dns.message.Message, groups: Sequence[list[dns.rrset.RRset]]) -> list[bytes]:
        """One message per group; with TSIG each signs on from the one before (RFC 8945)."""
        wires: list[bytes] = []
        context = None
        for index, group in enumerate(groups):
            message = dns.message.make_response(query)
            message.flags |= dns.flags.AA
            if index:
                message.question = []
            message.answer = list(group)
            # Over TCP: whatever payload size the query's EDNS record offered.
            if query.had_tsig:
                wires.append(message.to_wire(max_size=65535, multi=True, tsig_ctx=context))
                context = message.tsig_ctx
            else:
                wires.append(message.to_wire(max_size=65535))
        return wires


class Notifier:
    """Sends NOTIFY for ``zone`` to each secondary ``(host, port)``; runs on an event loop.

    Each NOTIFY carries the zone's SOA in its answer section (RFC 1996 3.7, as
    BIND and Knot send it), so a secondary that already has that serial drops
    it instead of queueing another refresh. An unanswered NOTIFY is sent again
    after ``NOTIFY_TIMEOUTS`` (quickly at first: on a working network an answer
    takes milliseconds), and a change while one waits for its answer sends the
    new serial at once: a secondary that is slow to answer, or not started
    yet, does not hold back the news of a change.
    """

    def __init__(
        self,
        answers: Answers,
        zone: Labels,
        secondaries: Iterable[tuple[str, int]],
        key: dns.tsig.Key | None,
    ) -> None:
        self.answers = answers
        self.zone = zone
        self.secondaries = tuple(secondaries)
        self.key = key
        self._running: dict[tuple[str, int], asyncio.Task[None]] = {}
        # Per secondary: set by a change not yet announced to it.
        self._news: dict[tuple[str, int], asyncio.Event] = {}
        self.failed = Throttled(
            "builtin DNS: %d NOTIFY messages went unanswered (the last: %s)", logging.WARNING
        )
        # Answered NOTIFY messages, per secondary (for tests and logs).
        self.sent: dict[tuple[str, int], int] = {}

    def changed(self) -> None:
        """The zone changed: tell every secondary now."""
        for target in self.secondaries:
            news = self._news.setdefault(target, asyncio.Event())
            news.set()
            task = self._running.get(target)
            if task is None or task.done():
                self._running[target] = asyncio.get_running_loop().create_task(
                    self._notify(target, news)
                )

    def _message(self) -> dns.message.Message:
        message = dns.message.make_query(_name(self.zone), dns.rdatatype.SOA)
        # The opcode lives in the flags: set it after them.
        message.flags = dns.flags.AA
        message.set_opcode(dns.opcode.NOTIFY)
        with self.answers.lock:
            ttl, soa = self.answers.ttl, self.answers.soa_rdata(self.zone)
        message.answer = [_soa_rrset(self.zone, ttl, soa)]
        if self.key is not None:
            message.use_tsig(self.key)
        return message

    async def _notify(self, target: tuple[str, int], news: asyncio.Event) -> None:
        """NOTIFY *target* until it answers, anew whenever *news* says the zone changed."""
        host, port = target
        while news.is_set():
            news.clear()
            for attempt, timeout in enumerate(NOTIFY_TIMEOUTS):
                query = asyncio.ensure_future(
                    dns.asyncquery.udp(self._message(), host, port=port, timeout=timeout)
                )
                newer = asyncio.ensure_future(news.wait())
                await asyncio.wait((query, newer), return_when=asyncio.FIRST_COMPLETED)
                newer.cancel()
                if not query.done():
                    query.cancel()  # a newer serial to announce: at once
                    break
                try:
                    reply = query.result()
                    if reply.rcode() != dns.rcode.NOERROR:
                        raise ValueError(dns.rcode.to_text(reply.rcode()))
                except (dns.exception.DNSException, OSError, ValueError) as exc:
                    if attempt == len(NOTIFY_TIMEOUTS) - 1:
                        self.failed(f"{host} port {port}: {type(exc).__name__} {exc}")
                    continue
                self.sent[target] = self.sent.get(target, 0) + 1
                log.debug("builtin DNS: NOTIFY answered by %s port %s", host, port)
                break
