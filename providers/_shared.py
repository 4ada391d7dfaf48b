"""Records every replica of the gateway sees: what the state layer offers the builtin DNS.

A provider that is itself the authoritative server (``PROVIDER=builtin``) keeps
its TXT values and its SOA serial in the gateway's state (:mod:`gateway.state`):
SQLite in ``STATE_DIR`` for one process, or PostgreSQL shared by replicas, where
each change also reaches the other replicas' servers. The gateway offers the
store through :meth:`providers.base.Provider.keep_records_in` before ``open()``.

Names are normalised text (``_acme-challenge.example.com``); every change bumps
the one serial of the store, which never goes back, and is committed before it
returns. Failures raise the gateway's ``Unavailable`` (503).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

# A name's values and the store's serial after a change or a read.
Values = tuple[list[str], int]


class SharedRecords(Protocol):
    async def load(self, floor: int) -> tuple[dict[str, list[str]], int]:
        """Every name with values, and the serial: at least *floor* when the store
        starts one (a serial kept elsewhere before must not go back)."""

    async def add(self, name: str, value: str, limit: int) -> Values | None:
        """Add *value* at *name* (nothing changes if it is there); None when *name*
        has *limit* values already."""

    async def remove(self, name: str, value: str) -> Values:
        """Remove *value* from *name* (nothing changes if it is not there)."""

    async def current(self, name: str) -> Values:
        """The values at *name* now."""

    def watch(
        self, changed: Callable[[str], Awaitable[None]], reload: Callable[[], Awaitable[None]]
    ) -> None:
        """Call *changed* with each name another process changes, in order, and
        *reload* whenever changes may have been missed (a reconnect): then every
        name must be read again. A store for one process never calls them."""
