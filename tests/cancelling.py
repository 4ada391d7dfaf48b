"""A check that a stopping routine keeps its caller's own cancellation.

Routines that cancel a task of theirs and wait for it to end must tell that
task's CancelledError from their caller's: one swallowed by
``contextlib.suppress(CancelledError)`` lets a cancelled shutdown go on as
if nothing had been asked (gateway/shutdown.py says why that hangs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest


async def assert_cancellation_reaches_the_caller(stop: Callable[[], Awaitable[None]]) -> None:
    """Cancel a caller of *stop* while *stop* waits for its task: the caller must end
    cancelled, without going on past ``await stop()``."""
    went_on = asyncio.Event()

    async def caller() -> None:
        await stop()
        went_on.set()

    task = asyncio.create_task(caller())
    await asyncio.sleep(0)  # the caller waits for the task now
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on.is_set(), "the caller went on as if it had not been cancelled"
