"""The journal: every TXT value we publish, recorded before the provider is asked.

A row is written (state ``adding``) and committed before ``add_txt`` runs,
marked ``present`` after it succeeds, marked ``removing`` before
``remove_txt`` and deleted after. So whatever moment the process dies at, the
journal holds every value that may be in DNS, and the janitor
(:mod:`gateway.janitor`) can remove the ones whose teardown never came.

This module says what the journal promises; where it is kept is the state
layer's business (:mod:`gateway.state`: SQLite in ``STATE_DIR``, or
PostgreSQL shared by replicas). Every method commits before it returns, and
raises :class:`gateway.errors.Unavailable` (503) when the database cannot be
read or written: a change that could not be journaled is never made.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass

STATES = ("adding", "present", "removing")


@dataclass(frozen=True)
class Record:
    fqdn: str
    value: str
    owner: str
    state: str
    created: float
    updated: float


class Journal(abc.ABC):
    """Published values and the state of their change, kept by a state backend."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    @abc.abstractmethod
    async def begin_add(self, fqdn: str, value: str, owner: str, limit: int = 0) -> bool:
        """Journal *value* at *fqdn* as being added by *owner*.

        With a *limit*, a value *owner* has not journaled yet is only taken
        while *owner* has fewer than *limit* values; otherwise nothing is
        written and the answer is False. One statement checks and writes, so
        setups racing each other cannot pass the limit together. A repeated
        setup restarts the record's clock: the client still needs it.
        """

    @abc.abstractmethod
    async def commit_add(self, fqdn: str, value: str) -> None:
        """The provider has *value*: mark it ``present``."""

    @abc.abstractmethod
    async def begin_remove(self, fqdn: str, value: str) -> None:
        """Mark *value* ``removing`` before the provider is asked to withdraw it."""

    @abc.abstractmethod
    async def commit_remove(self, fqdn: str, value: str) -> None:
        """The provider no longer has *value*: forget it."""

    @abc.abstractmethod
    async def values(self, fqdn: str, owner: str | None = None) -> list[Record]:
        """Records at *fqdn*, optionally only those *owner* set, oldest first."""

    @abc.abstractmethod
    async def record(self, fqdn: str, value: str) -> Record | None:
        """The record of *value* at *fqdn*, if journaled."""

    @abc.abstractmethod
    async def all(self) -> list[Record]:
        """Every record, oldest first."""

    @abc.abstractmethod
    async def due(self, max_age: float) -> list[Record]:
        """Records to clean up, oldest first: older than *max_age*, or a removal that
        did not finish."""

    @abc.abstractmethod
    async def figures(self) -> tuple[int, float]:
        """How many records, and the age in seconds of the oldest (0 when none)."""
