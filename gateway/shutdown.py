"""Stopping the gateway's background tasks within a bound, whatever they are waiting for.

A task is stopped by cancelling it, but a cancellation can be lost: on
Python 3.11 ``asyncio.wait_for`` swallows one that comes as the awaited thing
finishes (psycopg_pool waits for a free connection that way), and the task
then carries on as if nothing had been asked. Awaiting such a task would hang
the shutdown for good. :func:`stop_tasks` cancels again until the tasks end,
and gives up after a bound, saying which task it left and where it waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from types import CoroutineType, FrameType, GeneratorType
from typing import Any

log = logging.getLogger(__name__)

# How long a task doing database and provider work gets to end once cancelled:
# each of its steps ends when cancelled, or within psycopg's own bound on
# cancelling a statement (5 s to send the cancel request, 5 s to see it end).
STOP_BOUND = 15.0
# How long a task that was cancelled gets to end (its finally blocks to run)
# before it is cancelled again.
AGAIN = 0.5


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]], what: str, bound: float = STOP_BOUND
) -> bool:
    """Cancel *tasks* and wait at most *bound* seconds for every one to end.

    True if they all ended. Otherwise logs an error naming *what* and where
    each task left waits, and returns False: the caller goes on without them.
    An error a task ended with is logged, not raised: a shutdown goes on.
    A cancellation of the caller itself is not swallowed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + bound
    pending = {task for task in tasks if not task.done()}
    ended = {task for task in tasks if task.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=min(left, AGAIN))
        ended |= done
    for task in ended:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s ended with an error while stopping", what, exc_info=exc)
    if not pending:
        return True
    log.error(
        "%s did not stop within %gs of being cancelled; going on without waiting for %s",
        what,
        bound,
        "; ".join(f"{task.get_name()} (waiting in {waiting_in(task)})" for task in pending),
    )
    return False


def waiting_in(task: asyncio.Task[Any]) -> str:
    """Where *task* waits: the innermost coroutine it awaits."""
    chain = await_chain(task)
    return chain[-1] if chain else "an unknown place"


def await_chain(task: asyncio.Task[Any]) -> list[str]:
    """Each coroutine *task* awaits, outermost first, as ``name at file:line``.

    ``Task.get_stack()`` shows only the outermost one of a task that waits.
    """
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        if isinstance(awaited, CoroutineType):
            frame, awaited = awaited.cr_frame, awaited.cr_await
        elif isinstance(awaited, GeneratorType):
            frame, awaited = awaited.gi_frame, awaited.gi_yieldfrom
        else:
            # A future, or an async generator's step: nothing further to show.
            break
        if frame is not None:
            frames.append(frame)
    return [f"{f.f_code.co_name} at {f.f_code.co_filename}:{f.f_lineno}" for f in frames]
