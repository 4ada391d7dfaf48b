"""Stopping the gateway's background tasks within a bound, whatever they are waiting for.

A task is stopped by cancelling it, but a cancellation can be lost: on
Python 3.11 ``asyncio.wait_for`` swallows one that comes as the awaited thing
finishes (psycopg_pool waits for a free connection that way), and the task
then carries on as if nothing had been asked. Awaiting such a task would hang
the shutdown for good. :func:`stop_tasks` cancels again until the tasks end,
and gives up after a bound, saying which task it left and where it waits.

A task given up on is still there when the event loop ends, and so is a
thread stuck in a call: ``asyncio.run`` waits for both without end, and so
does the interpreter's exit for its threads. :func:`run` is ``asyncio.run``
with those waits bounded: what still runs past them is named in the log and
the process ends at once, with status 1.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from types import AsyncGeneratorType, CoroutineType, FrameType, GeneratorType
from typing import Any

log = logging.getLogger(__name__)

# How long a task doing database and provider work gets to end once cancelled:
# each of its steps ends when cancelled, or within psycopg's own bound on
# cancelling a statement (5 s to send the cancel request, 5 s to see it end).
STOP_BOUND = 15.0
# How long a task that was cancelled gets to end (its finally blocks to run)
# before it is cancelled again.
AGAIN = 0.5
_ASYNCIO_FOLDER = f"{os.sep}asyncio{os.sep}"
# The objects an async generator's asend()/athrow() return.
_ASYNC_GENERATOR_STEPS = ("async_generator_asend", "async_generator_athrow")
# How long what is left once the main coroutine has returned (tasks, threads)
# gets to end before the process ends without it.
LEFT_BOUND = 5.0


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
    """Where *task* waits: the innermost coroutine it awaits, and if that is asyncio's
    own (``sleep``, ``wait``), the innermost one that is not."""
    chain = await_chain(task)
    if not chain:
        return "an unknown place"
    ours = [place for place in chain if _ASYNCIO_FOLDER not in place]
    if ours and ours[-1] != chain[-1]:
        return f"{chain[-1]}, from {ours[-1]}"
    return chain[-1]


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
        elif isinstance(awaited, AsyncGeneratorType):
            frame, awaited = awaited.ag_frame, awaited.ag_await
        elif type(awaited).__name__ in _ASYNC_GENERATOR_STEPS:
            # A step of an async generator (an asynccontextmanager, aiohttp's
            # cleanup_ctx) names its generator nowhere but among its references.
            awaited = next(
                (r for r in gc.get_referents(awaited) if isinstance(r, AsyncGeneratorType)), None
            )
            continue
        else:
            break  # a future: nothing further to show
        if frame is not None:
            frames.append(frame)
    return [f"{f.f_code.co_name} at {f.f_code.co_filename}:{f.f_lineno}" for f in frames]


def tasks_left(loop: asyncio.AbstractEventLoop) -> str:
    """Every task of *loop* still running but the current one, and where each waits."""
    current = asyncio.current_task(loop) if loop.is_running() else None
    left = [t for t in asyncio.all_tasks(loop) if not t.done() and t is not current]
    return "; ".join(f"{t.get_name()} (waiting in {waiting_in(t)})" for t in left) or "no task"


def threads_left() -> list[str]:
    """The threads the interpreter would wait for at exit, and where each is."""
    frames = sys._current_frames()
    named = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.daemon or not thread.is_alive():
            continue
        frame = frames.get(thread.ident or -1)
        where = (
            f"{frame.f_code.co_name} at {frame.f_code.co_filename}:{frame.f_lineno}"
            if frame is not None
            else "an unknown place"
        )
        named.append(f"{thread.name} (in {where})")
    return named


def run(main: Coroutine[Any, Any, int], bound: float = LEFT_BOUND) -> int:
    """``asyncio.run(main)``, returning its status, with a bounded end.

    Once *main* returns, the tasks left are cancelled and get *bound* seconds
    to end (:func:`stop_tasks`), and so do the default executor's threads and
    any other thread the interpreter would wait for. If one does not end, an
    error names it and the process ends there, with status 1: a gateway that
    was asked to stop must not stay on, holding its ports, for a call that
    never returns.
    """
    loop = asyncio.new_event_loop()
    # The loop's own shutdown_default_executor() joins its threads, without end.
    executor = ThreadPoolExecutor(thread_name_prefix="asyncio")
    loop.set_default_executor(executor)
    try:
        asyncio.set_event_loop(loop)
        status = loop.run_until_complete(main)
        left = [t for t in asyncio.all_tasks(loop) if not t.done()]
        stuck = not loop.run_until_complete(stop_tasks(left, "what still ran at exit", bound))
        if not stuck:
            # An async generator a stuck task is running in cannot be closed.
            loop.run_until_complete(_bounded(loop.shutdown_asyncgens(), bound))
        executor.shutdown(wait=False, cancel_futures=True)
        threads = _wait_for_threads(bound)
        if threads:
            log.error(
                "threads still running %gs after the end: %s", bound, "; ".join(threads)
            )
        if stuck or threads:
            log.error("exiting now, without waiting for what did not stop (exit status 1)")
            _flush()
            os._exit(1)
        return status
    finally:
        asyncio.set_event_loop(None)
        loop.close()


async def _bounded(step: Coroutine[Any, Any, None], bound: float) -> None:
    """Await *step* at most *bound* seconds (what it left is looked for afterwards)."""
    try:
        async with asyncio.timeout(bound):
            await step
    except TimeoutError:
        pass


def _wait_for_threads(bound: float) -> list[str]:
    """Wait at most *bound* seconds for the threads the interpreter waits for at exit;
    the ones still running."""
    deadline = time.monotonic() + bound
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    return threads_left()


def _flush() -> None:
    """What was logged reaches its destination before the process ends without
    running its exit handlers."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
