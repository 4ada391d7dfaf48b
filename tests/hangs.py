"""What a test that hangs in asyncio is waiting for, printed when ``faulthandler_timeout`` expires.

pytest's faulthandler plugin then dumps every thread's stack; for a test that
waits on an event loop, that only shows the loop idle in ``select()``. This
also prints each of the loop's tasks with the chain of coroutines it awaits
(:func:`gateway.shutdown.await_chain`): the await that never ends.

:func:`arm` starts a timer thread per test; when it fires, it finds every
event loop running in the process and has the loop itself write its tasks
(a loop's tasks are only safe to read from its own thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading

from gateway.shutdown import await_chain


def arm(timeout: float, test: str, fd: int) -> threading.Timer:
    """A started timer that reports *test*'s asyncio tasks to *fd* after *timeout* seconds;
    cancel it when the test ends."""
    timer = threading.Timer(timeout, _report, (test, fd))
    timer.daemon = True
    timer.start()
    return timer


def _report(test: str, fd: int) -> None:
    for loop in _running_loops():
        with contextlib.suppress(RuntimeError):  # it closed meanwhile
            loop.call_soon_threadsafe(_write_tasks, loop, test, fd)


def _running_loops() -> list[asyncio.AbstractEventLoop]:
    """The event loops running in any thread: ``self`` of a ``run_forever`` frame."""
    loops = []
    for frame in sys._current_frames().values():
        walking = frame
        while walking is not None:
            owner = walking.f_locals.get("self")
            if walking.f_code.co_name == "run_forever" and isinstance(
                owner, asyncio.AbstractEventLoop
            ):
                loops.append(owner)
                break
            walking = walking.f_back
    return loops


def _write_tasks(loop: asyncio.AbstractEventLoop, test: str, fd: int) -> None:
    lines = [f"{test} is still running; its asyncio tasks wait in (outermost first):"]
    for task in asyncio.all_tasks(loop):
        lines.append(f"  task {task.get_name()}:")
        lines.extend(f"    {place}" for place in await_chain(task) or ["(not started)"])
    os.write(fd, ("\n".join(lines) + "\n").encode(errors="replace"))
