"""The janitor: removes records whose teardown never came.

mod_md never tears down after a failed setup and only warns when a teardown
fails; clients crash; so the gateway cleans up itself. At start-up (after a
crash or restart too) and every ``JANITOR_INTERVAL`` it removes, through the
provider and under the same per-name lock as the API, every journaled value
older than ``RECORD_MAX_AGE``, and finishes removals that were interrupted. A
failed removal stays journaled and is tried again next round. A value whose
provider call is still running past its deadline is left to the end of that
call (:class:`gateway.service.LateCalls`).

With several processes on one state (replicas on PostgreSQL), one sweeps at a
time: a round starts only if the state's janitor lock is free
(:meth:`gateway.state.State.janitor_turn`), and what a sweeper that died left
half done is in the journal for the next one.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.errors import GatewayError
from gateway.service import ChallengeService
from gateway.shutdown import stop_tasks
from lib.names import value_tag

log = logging.getLogger(__name__)


class Janitor:
    def __init__(self, service: ChallengeService, max_age: float, interval: float) -> None:
        self.service = service
        self.max_age = max_age
        self.interval = interval
        self.removed = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def sweep(self) -> int:
        """One round, if no other process on the same state is sweeping; returns how
        many values were removed."""
        try:
            async with self.service.state.janitor_turn() as mine:
                return await self._sweep() if mine else 0
        except GatewayError as exc:
            log.error("janitor: %s", exc.logged)
            self._count_failure()
            return 0

    async def _sweep(self) -> int:
        service = self.service
        due = await service.journal.due(self.max_age)
        removed = 0
        for record in due:
            try:
                async with service.locks.hold(record.fqdn) as journal:
                    if (record.fqdn, record.value) in service.late:
                        continue  # a call that may still write it is running; its end removes it
                    # Re-read: a teardown may have removed it, or a setup renewed it, meanwhile.
                    now = await journal.record(record.fqdn, record.value)
                    if now is None or (now.state != "removing" and now.created != record.created):
                        continue
                    await service.remove_locked(journal, record.fqdn, record.value, settle=False)
            except GatewayError as exc:
                self._count_failure()
                log.warning(
                    "janitor: could not remove %s (value %s): %s",
                    record.fqdn,
                    value_tag(record.value),
                    exc.logged,
                )
                continue
            removed += 1
            if service.metrics is not None:
                service.metrics.janitor_removals.inc()
            log.info(
                "janitor: removed stale %s (value %s, owner %s)",
                record.fqdn,
                value_tag(record.value),
                record.owner,
            )
        self.removed += removed
        return removed

    def _count_failure(self) -> None:
        self.failed += 1
        if self.service.metrics is not None:
            self.service.metrics.janitor_failures.inc()

    async def _run(self) -> None:
        # A cancellation lost on the way (see gateway.shutdown) must not leave a
        # janitor sweeping on while the state it sweeps is being closed.
        while not self._stopping:
            await self.sweep()
            if not self._stopping:
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="janitor")

    async def stop(self) -> None:
        """End the round in progress (its values stay journaled for the next one)."""
        self._stopping = True
        if self._task is not None:
            await stop_tasks([self._task], "the janitor")
            self._task = None
