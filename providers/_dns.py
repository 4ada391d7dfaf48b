"""DNS-side helpers shared by the providers: finding a name's zone, caching it, TXT quotes.

Several providers find the zone of a name the same way: try its parent names
one by one, most specific first, and take the first one the service knows
(:func:`walk_up`). Those that remember the answer keep it per name in a
bounded :class:`ZoneCache` (whose :meth:`ZoneCache.walk_up` does both).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Z = TypeVar("Z")


def parent_names(fqdn: str, *, every_label: bool = False) -> list[str]:
    """*fqdn* and its parents, most specific first: the names that may be its zone.

    By default underscore labels (``_acme-challenge``) never start a zone and a
    bare top-level domain is never one, which is how hosted DNS services work;
    ``every_label`` keeps both, for servers where any name can be a zone.
    """
    labels = fqdn.split(".")
    if every_label:
        return [".".join(labels[i:]) for i in range(len(labels))]
    return [".".join(labels[i:]) for i in range(len(labels) - 1) if not labels[i].startswith("_")]


async def walk_up(
    candidates: list[str], lookup: Callable[[str], Awaitable[Z | None]]
) -> tuple[str, Z] | None:
    """The first candidate *lookup* knows, with what it returned; None if it knows none."""
    for candidate in candidates:
        zone = await lookup(candidate)
        if zone is not None:
            return candidate, zone
    return None


class ZoneCache(Generic[Z]):
    """The zone found for each name, so that it is looked up once per name.

    It holds only the names the gateway manages; emptying it when *limit* names
    are held keeps a misbehaving caller from growing it without bound.
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._zones: dict[str, Z] = {}

    async def get(self, fqdn: str, find: Callable[[], Awaitable[Z]]) -> Z:
        """The cached zone of *fqdn*, or the one *find* returns (which is then cached)."""
        cached = self._zones.get(fqdn)
        if cached is not None:
            return cached
        return self._remember(fqdn, await find())

    async def walk_up(self, fqdn: str, lookup: Callable[[str], Awaitable[Z | None]]) -> Z | None:
        """The cached zone of *fqdn*, or the first of its :func:`parent_names` *lookup* knows.

        None if *lookup* knows none of them; that is not cached, so a zone
        created later is found on the next call.
        """
        cached = self._zones.get(fqdn)
        if cached is not None:
            return cached
        found = await walk_up(parent_names(fqdn), lookup)
        return None if found is None else self._remember(fqdn, found[1])

    def _remember(self, fqdn: str, zone: Z) -> Z:
        if len(self._zones) >= self._limit:
            self._zones.clear()
        self._zones[fqdn] = zone
        return zone

    def __len__(self) -> int:
        return len(self._zones)


def unquote(content: str) -> str:
    """TXT *content* without one pair of surrounding double quotes, if it has them."""
    if len(content) >= 2 and content[0] == content[-1] == '"':
        return content[1:-1]
    return content
