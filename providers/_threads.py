"""Blocking provider code in daemon threads, a bounded number at once.

Providers that drive blocking code (an original-gateway class, dns-lexicon) run
each call in a thread of its own, so that a slow DNS API never stalls the event
loop. A thread cannot be stopped, and a call past its deadline may still write
when it wakes; so a cancelled call waits for its thread to end (the gateway
keeps its value journaled meanwhile), and only a second cancellation (shutdown)
stops that wait. The threads are daemon threads: a DNS API that never answers
must not keep the gateway from exiting on SIGTERM, as the joined workers of a
``ThreadPoolExecutor`` would. At most *limit* calls run at once; an overrunning
call keeps its slot until its thread really ends, so hung calls can never pile
up more than *limit* threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DaemonThreads:
    """Runs blocking callables in daemon threads named ``<prefix>-<n>``, *limit* at once."""

    def __init__(self, prefix: str, limit: int = 4) -> None:
        self._prefix = prefix
        self._limit = limit
        # Own threads: a hung DNS API call must not exhaust the loop's default executor.
        self._slots = asyncio.Semaphore(limit)
        self._numbers = itertools.count(1)

    @property
    def limit(self) -> int:
        return self._limit

    async def run(self, call: Callable[[], T]) -> T:
        """``call()`` in a daemon thread, once a slot is free; its result or its exception.

        Cancelled while the thread runs, it still waits for the thread's end:
        until then the call may write. A second cancellation stops the wait.
        """
        await self._slots.acquire()
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            self._slots.release()
            if ended.done():  # nobody waits any more (shutdown)
                return
            if error is not None:
                ended.set_exception(error)
            else:
                ended.set_result(result)  # type: ignore[arg-type]

        def work() -> None:
            result: T | None = None
            error: BaseException | None = None
            try:
                result = call()
            except Exception as exc:
                error = exc
            # The loop is gone if the gateway stopped while this call overran.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, result, error)

        name = f"{self._prefix}-{next(self._numbers)}"
        try:
            threading.Thread(target=work, name=name, daemon=True).start()
        except BaseException:
            self._slots.release()
            raise
        try:
            return await asyncio.shield(ended)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await ended
            raise
