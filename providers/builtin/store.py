"""The builtin server's zone data, its index, and the wire-format answers built from them.

A name is a tuple of lower-case labels (``bytes``), most specific first, without
the root: ``(b"_acme-challenge", b"example", b"com")``. Everything here is built
from such tuples and from integers, never from zone-file text, so a query's
own bytes (a label holding ``"x. 1 2 3 4 5;"``, say) can never become part of a
record's fields: they are only ever compared.

Every lookup costs the same whatever the number of names held:

* :class:`Served` finds the zone a name belongs to by looking at its own labels
  (a set lookup per distinct length of the managed domains, one scan for the
  ``_acme-challenge`` label);
* :class:`RecordStore` keeps, besides the values per name, how many names lie
  below every name, so an empty non-terminal is one dict lookup rather than a
  scan of every name.

:class:`Answers` turns a question into an :class:`Answer`: the sections after the
question, in wire format, with owner names written as compression pointers
into the question (so they keep the query's 0x20 case). Answers are kept in a
bounded cache keyed by the lower-cased question, emptied on every change.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable
from dataclasses import dataclass

# A name as the server compares it: lower-case labels, most specific first, no root.
Labels = tuple[bytes, ...]

CHALLENGE = b"_acme-challenge"

TYPE_NS = 2
TYPE_SOA = 6
TYPE_TXT = 16
TYPE_IXFR = 251
TYPE_AXFR = 252
TYPE_ANY = 255
CLASS_IN = 1

RCODE_NOERROR = 0
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
RCODE_REFUSED = 5
RCODE_NOTAUTH = 9

# SOA timers. Secondaries (BUILTIN_SECONDARIES) are also sent NOTIFY on every
# change, so the refresh only bounds how long a lost NOTIFY goes unnoticed; the
# minimum is the negative-caching TTL and stays short so a value added after a
# miss is seen soon.
SOA_REFRESH = 300
SOA_RETRY = 60
SOA_EXPIRE = 86400
SOA_MINIMUM = 30

# Beyond this many cached answers the cache starts afresh: a flood of random
# names cannot grow it without bound.
MAX_CACHED = 20000

# Letters, digits, hyphen, underscore: the labels a served zone's name may have.
_NAME_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789-_"
_RR_FIXED = struct.Struct("!HHIH")
_SOA_TIMERS = struct.Struct("!IIIII")


def labels_of(name: str) -> Labels:
    """The labels of a normalised name (``a.b.c``, no trailing dot)."""
    return tuple(label.encode("ascii") for label in name.split(".")) if name else ()


def name_of(labels: Labels) -> str:
    """The normalised name *labels* are (the inverse of :func:`labels_of`)."""
    return b".".join(labels).decode("ascii")


def text_of(name: Labels) -> str:
    """A name for messages and logs, with anything unusual escaped."""
    out = []
    for label in name:
        text = "".join(
            chr(b) if 0x21 <= b <= 0x7E and b not in b'.\\"();' else f"\\{b:03d}" for b in label
        )
        out.append(text)
    return ".".join(out)


def is_below(name: Labels, domain: Labels) -> bool:
    """True if *name* equals *domain* or lies below it."""
    return len(name) >= len(domain) and name[len(name) - len(domain) :] == domain


def name_wire(name: Labels) -> bytes:
    """*name* in uncompressed wire format, root label included."""
    return b"".join(bytes((len(label),)) + label for label in name) + b"\x00"


def is_host_label(label: bytes) -> bool:
    """True for a label of letters, digits, ``-`` and ``_`` (what the gateway ever writes)."""
    return 0 < len(label) <= 63 and not label.translate(None, _NAME_BYTES)


class Served:
    """Which zones the server is authoritative for.

    * every ``_acme-challenge.<name>`` at or below a managed domain is a zone
      of its own (each one is NS-delegated separately);
    * ``zone`` (``BUILTIN_ZONE``), if set, is one zone holding any name below it.

    A name's zone is the most specific of those that hold it.
    """

    def __init__(self, managed: Iterable[Labels], zone: Labels | None) -> None:
        self.managed = frozenset(managed)
        self.zone = zone
        # The label counts of the managed domains, fewest first: the only suffix
        # lengths worth looking up.
        self._lengths = sorted({len(domain) for domain in self.managed})

    def apex_start(self, name: Labels) -> int | None:
        """Where the apex of *name*'s zone starts in *name* (its index), or None."""
        size = len(name)
        best: int | None = None
        zone = self.zone
        if zone is not None and size >= len(zone) and name[size - len(zone) :] == zone:
            best = size - len(zone)
        for length in self._lengths:
            if length >= size:
                break
            if name[size - length :] in self.managed:
                # The shortest managed suffix allows the most _acme-challenge positions.
                end = size - length
                # An apex's labels are all ones the gateway could write: a query
                # for _acme-challenge.<junk>.<domain> finds no zone there.
                low = end
                while low > 0 and is_host_label(name[low - 1]):
                    low -= 1
                try:
                    start = name.index(CHALLENGE, low, end)
                except ValueError:
                    break
                if best is None or start < best:
                    best = start
                break
        return best

    def apex_of(self, name: Labels) -> Labels | None:
        """The apex of the most specific zone served that holds *name*, if any."""
        start = self.apex_start(name)
        return None if start is None else name[start:]


class RecordStore:
    """The TXT values per name, and for each name how many names with values lie below it.

    Not thread-safe on its own: :class:`Answers` guards it with its lock.
    """

    def __init__(self) -> None:
        self.values: dict[Labels, tuple[bytes, ...]] = {}
        self._below: dict[Labels, int] = {}

    def set(self, name: Labels, values: Iterable[bytes]) -> None:
        """Make *values* the TXT values at *name* (none: the name goes away)."""
        new = tuple(values)
        had = name in self.values
        if new:
            self.values[name] = new
            if not had:
                self._count(name, 1)
        elif had:
            del self.values[name]
            self._count(name, -1)

    def _count(self, name: Labels, step: int) -> None:
        for start in range(1, len(name) + 1):
            parent = name[start:]
            left = self._below.get(parent, 0) + step
            if left:
                self._below[parent] = left
            else:
                del self._below[parent]

    def exists(self, name: Labels) -> bool:
        """True if *name* has values or lies above a name that has (an empty non-terminal)."""
        return name in self.values or name in self._below

    def below(self, apex: Labels) -> list[tuple[Labels, tuple[bytes, ...]]]:
        """Every name at or below *apex* with its values (for zone transfers)."""
        return [(name, values) for name, values in self.values.items() if is_below(name, apex)]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class Answer:
    """The parts of a response that depend on the question only.

    ``sections`` holds the answer and authority records in wire format; their
    owner names point at the question, which starts at offset 12.
    """

    rcode: int
    authoritative: bool
    sections: bytes
    ancount: int
    nscount: int


REFUSED = Answer(RCODE_REFUSED, False, b"", 0, 0)


def _pointer(name: Labels, start: int) -> bytes:
    """A compression pointer to ``name[start:]`` inside a question for *name* at offset 12."""
    offset = 12 + sum(len(label) + 1 for label in name[:start])
    return (0xC000 | offset).to_bytes(2, "big")


class Answers:
    """Answers built from :class:`Served` and :class:`RecordStore`, cached per question.

    Changes (:meth:`set_values`, :meth:`set_serial`) and answers that miss the
    cache hold one lock, so a server thread never sees half a change; a change
    starts a new cache, so nothing built before it is served after it.
    """

    def __init__(
        self, served: Served, nameservers: Iterable[Labels], ttl: int, serial: int
    ) -> None:
        self.served = served
        self.store = RecordStore()
        self.nameservers = tuple(nameservers)
        self.ttl = ttl
        self.serial = serial
        self.lock = threading.Lock()
        # Lower-cased question (name, type, class in wire format) -> answer.
        self.cache: dict[bytes, Answer] = {}
        self._ns_rdata = [name_wire(ns) for ns in self.nameservers]

    # -- changes ----------------------------------------------------------------

    def set_values(self, name: Labels, values: Iterable[bytes], serial: int) -> None:
        with self.lock:
            self.store.set(name, values)
            self.serial = serial
            self.cache = {}

    def reshape(
        self, served: Served, nameservers: Iterable[Labels], ttl: int, serial: int
    ) -> None:
        """Serve the records held under new zones, NS names, TTL and serial (a reload)."""
        nameservers = tuple(nameservers)
        with self.lock:
            self.served = served
            self.nameservers = nameservers
            self._ns_rdata = [name_wire(ns) for ns in nameservers]
            self.ttl = ttl
            self.serial = serial
            self.cache = {}

    def set_serial(self, serial: int) -> None:
        with self.lock:
            self.serial = serial
            self.cache = {}

    def load(
        self,
        records: Iterable[tuple[Labels, Iterable[bytes]]],
        serial: int,
        *,
        replace: bool = True,
    ) -> None:
        """Set many names at once (a server process starting): in place of every
        value there was, or (*replace* false) in addition."""
        with self.lock:
            if replace:
                self.store = RecordStore()
            for name, values in records:
                self.store.set(name, values)
            self.serial = serial
            self.cache = {}

    # -- answers ----------------------------------------------------------------

    def lookup(self, key: bytes, name: Labels, qtype: int, qclass: int) -> Answer:
        """The answer for the question *key* (its lower-cased wire form) about *name*."""
        cache = self.cache
        found = cache.get(key)
        if found is not None:
            return found
        with self.lock:
            answer = self.answer(name, qtype, qclass)
            # self.cache, not the local: one made before a change must stay out.
            if len(self.cache) >= MAX_CACHED:
                self.cache = {}
            self.cache[key] = answer
        return answer

    def answer(self, name: Labels, qtype: int, qclass: int) -> Answer:
        """The answer to a query for *name*, *qtype*, *qclass* (no cache, no lock)."""
        if qclass != CLASS_IN:
            return REFUSED
        start = self.served.apex_start(name)
        if start is None:
            return REFUSED
        # Over UDP (TCP transfers never get here): no AXFR at all, and no IXFR
        # either, which secondaries ask over TCP (Knot answers the same).
        if qtype == TYPE_AXFR:
            return Answer(RCODE_NOTIMP, False, b"", 0, 0)
        if qtype == TYPE_IXFR:
            return Answer(RCODE_NOTAUTH, False, b"", 0, 0)
        apex = name[start:]
        ttl = self.ttl
        every = qtype == TYPE_ANY
        records: list[bytes] = []
        here = _pointer(name, 0)
        if start == 0 and (every or qtype == TYPE_SOA):
            records.append(self._soa_record(here, apex, ttl))
        if start == 0 and (every or qtype == TYPE_NS):
            records.extend(self._record(here, TYPE_NS, ttl, rdata) for rdata in self._ns_rdata)
        values = self.store.values.get(name)
        if values and (every or qtype == TYPE_TXT):
            records.extend(
                self._record(here, TYPE_TXT, ttl, bytes((len(v),)) + v) for v in values
            )
        if records:
            return Answer(RCODE_NOERROR, True, b"".join(records), len(records), 0)
        exists = start == 0 or self.store.exists(name)
        # RFC 2308: the SOA of a negative answer carries the negative-caching TTL.
        soa = self._soa_record(_pointer(name, start), apex, min(ttl, SOA_MINIMUM))
        return Answer(RCODE_NOERROR if exists else RCODE_NXDOMAIN, True, soa, 0, 1)

    @staticmethod
    def _record(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
        return owner + _RR_FIXED.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata

    def soa_rdata(self, apex: Labels) -> bytes:
        """The SOA of the zone at *apex*: the first nameserver, hostmaster@ the base name."""
        base = apex[1:] if apex[0] == CHALLENGE and apex != self.served.zone else apex
        return (
            self._ns_rdata[0]
            + name_wire((b"hostmaster", *base))
            + _SOA_TIMERS.pack(self.serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, SOA_MINIMUM)
        )

    def _soa_record(self, owner: bytes, apex: Labels, ttl: int) -> bytes:
        return self._record(owner, TYPE_SOA, ttl, self.soa_rdata(apex))
