"""Response rate limiting (RRL) for the builtin server's UDP answers, as BIND, Knot and NSD do it.

A UDP query's source address can be forged, so an authoritative server that
answers every query is a reflector: an attacker sends small queries "from" a
victim and the server sends the victim bigger answers. RRL caps the answers
per client network (a /24 for IPv4, a /56 for IPv6) at ``rate`` a second.
Past it, answers are dropped, except that every ``slip``-th one goes out as an
empty truncated answer (TC): a real resolver behind that network retries over
TCP, which cannot be forged and is never rate-limited, while a forged flood
gains nothing (a truncated answer is no bigger than the query).

Networks in ``exempt`` are never limited. The counters live in a fixed table
of ``TABLE_SIZE`` slots indexed by a hash of the network (Python's string
hash, randomised per process): memory stays the same whatever the number of
sources, and two networks that share a slot share a budget, which can only
make the limit stricter.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable

SEND = 0
DROP = 1
SLIP = 2

TABLE_SIZE = 1 << 16
# Beyond this many remembered addresses the exemption cache starts afresh.
_EXEMPT_CACHE_MAX = 4096

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def network_key(address: str) -> str:
    """The client network of *address*: its /24 (IPv4) or /56 (IPv6), as a string."""
    if ":" not in address:
        return address.rpartition(".")[0]
    try:
        packed = socket.inet_pton(socket.AF_INET6, address.partition("%")[0])
    except OSError:
        return address
    return packed[:7].hex()


class RateLimiter:
    """Per-network answer budgets: ``rate`` answers a second, then drop or slip."""

    def __init__(
        self,
        rate: int,
        slip: int = 2,
        exempt: Iterable[IPNetwork] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.slip = slip
        self.exempt = tuple(exempt)
        self._clock = clock
        self._second = [0] * TABLE_SIZE
        self._count = [0] * TABLE_SIZE
        self._exempt_cache: dict[str, bool] = {}
        # How many answers were dropped and slipped (for logs and tests).
        self.dropped = 0
        self.slipped = 0

    def _is_exempt(self, address: str) -> bool:
        cached = self._exempt_cache.get(address)
        if cached is None:
            try:
                ip = ipaddress.ip_address(address.partition("%")[0])
            except ValueError:
                cached = False
            else:
                cached = any(ip in net for net in self.exempt)
            if len(self._exempt_cache) >= _EXEMPT_CACHE_MAX:
                self._exempt_cache = {}
            self._exempt_cache[address] = cached
        return cached

    def check(self, address: str) -> int:
        """Whether to :data:`SEND`, :data:`DROP` or :data:`SLIP` the answer to *address*."""
        if self.exempt and self._is_exempt(address):
            return SEND
        slot = hash(network_key(address)) & (TABLE_SIZE - 1)
        now = int(self._clock())
        if self._second[slot] != now:
            self._second[slot] = now
            self._count[slot] = 1
            return SEND
        count = self._count[slot] + 1
        self._count[slot] = count
        if count <= self.rate:
            return SEND
        if self.slip and (count - self.rate) % self.slip == 0:
            self.slipped += 1
            return SLIP
        self.dropped += 1
        return DROP
