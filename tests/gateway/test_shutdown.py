"""Stopping ends: every task the gateway stops at shutdown stops, also when the
cancellation that should stop it is lost on the way.

On Python 3.11, ``asyncio.wait_for`` returns normally when the task waiting in
it is cancelled just as what it waited for is done: the cancellation is lost.
The janitor waited for a change slot that way, and psycopg_pool waits for a
free connection that way; a janitor or listener cancelled at that moment went
on for good, and the app's cleanup waited for it forever (a test run hung in
the teardown of its app). These tests cancel at each turn of the event loop
around that moment, on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.config import PropagationConfig
from gateway.janitor import Janitor
from gateway.service import ChallengeService
from gateway.shutdown import STOP_BOUND, stop_tasks
from gateway.state.postgres import ZONE_CHANNEL
from lib.dnscheck import PropagationSettings
from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.gateway.procs import REPO_ROOT, gateway_settings, running_gateway
from tests.gateway.test_state import pg_opened
from tests.servers.postgres import PostgresServer
from tests.system import free_port

NAME = "_acme-challenge.example.test"
# Long enough for any stop on a loaded machine; a stop that hangs fails the test then.
HANG = STOP_BOUND + 30


# -- stop_tasks ----------------------------------------------------------------


async def test_a_task_that_lost_its_cancellation_is_cancelled_again() -> None:
    lost = asyncio.Event()

    async def loses_one() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lost.set()  # as asyncio.wait_for on Python 3.11 may do
        await asyncio.sleep(3600)

    task = asyncio.create_task(loses_one())
    await asyncio.sleep(0)
    assert await stop_tasks([task], "the test's task")
    assert lost.is_set() and task.cancelled()


async def test_a_task_that_never_stops_is_left_behind_with_an_error_saying_where_it_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="gateway.shutdown"):
        assert not await stop_tasks([task], "the test's task", bound=1.0)
    assert not task.done()
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("the test's task did not stop within 1s of being cancelled")
    # Where: the innermost coroutine it awaits.
    assert "stubborn (waiting in wait at " in line and "asyncio/locks.py" in line
    release.set()
    await task


async def test_stopping_can_itself_be_cancelled() -> None:
    """A shutdown that is itself cancelled (a second signal, a test's timeout) is not
    held up by the tasks it was stopping."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    stopping = asyncio.create_task(stop_tasks([task], "the test's task", bound=3600))
    await asyncio.sleep(0.1)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    release.set()
    await task


async def test_an_error_a_task_ends_with_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            raise RuntimeError("broken clean-up") from None

    task = asyncio.create_task(fails_when_cancelled())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="gateway.shutdown"):
        assert await stop_tasks([task], "the test's task")
    [record] = caplog.records
    assert record.getMessage() == "the test's task ended with an error while stopping"
    assert record.exc_info is not None and "broken clean-up" in str(record.exc_info[1])


# -- on PostgreSQL -------------------------------------------------------------


async def test_a_task_cancelled_as_the_pool_hands_it_a_connection_goes_no_further(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    async with pg_opened(postgres_server, postgres_database, pool_size=2) as state:
        for turns in range(8):
            held = [await state.pool.getconn() for _ in range(2)]
            went_on = False

            async def query() -> None:
                nonlocal went_on
                async with state.connection("the test's query"):
                    went_on = True

            task = asyncio.create_task(query())
            while not state.pool.get_stats().get("requests_queued"):
                await asyncio.sleep(0.01)
            await state.pool.putconn(held.pop())  # the waiting task gets this one
            for _ in range(turns):
                await asyncio.sleep(0)
            if task.cancel():
                with pytest.raises(asyncio.CancelledError):
                    await task
                assert not went_on, f"cancelled {turns} turns after the hand-over, it went on"
            else:
                await task  # it was done before the cancellation came
            for conn in held:
                await state.pool.putconn(conn)
            state.pool.pop_stats()


async def test_a_janitor_stopped_as_it_is_given_a_change_slot_stops_there(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """Every change slot is held; the janitor's round waits for one for a due value.
    A slot comes free, and the janitor is stopped a few turns of the event loop
    later: it stops there, the value still journaled for the next round."""
    async with pg_opened(postgres_server, postgres_database, pool_size=8) as state:
        provider = MemoryProvider()
        service = ChallengeService(
            provider,
            state,
            ("example.test",),
            PropagationConfig(False, PropagationSettings(timeout=1.0)),
            5.0,
        )
        for turns in range(3):
            value = make_value()
            await state.journal.begin_add(NAME, value, "alice")
            holds = [
                state.hold(f"_acme-challenge.n{i}.example.test") for i in range(state.change_slots)
            ]
            for hold in holds:
                await hold.__aenter__()
            janitor = Janitor(service, max_age=0, interval=3600)
            janitor.start()
            slots = state._slots
            assert slots is not None
            while not slots._waiters:  # asyncio.Semaphore's queue: the janitor is in it
                await asyncio.sleep(0.01)
            await holds.pop().__aexit__(None, None, None)
            for _ in range(turns):
                await asyncio.sleep(0)
            stopping = asyncio.create_task(janitor.stop())
            done, _ = await asyncio.wait({stopping}, timeout=HANG)
            assert done, f"the janitor stopped {turns} turns after its slot came never stopped"
            assert [r.value for r in await state.journal.all()] == [value], turns
            for hold in holds:
                await hold.__aexit__(None, None, None)
            await state.journal.commit_remove(NAME, value)


async def test_closing_ends_while_the_listener_lost_its_cancellation(
    postgres_server: PostgresServer, postgres_database: str
) -> None:
    """The builtin DNS server's listener is applying another replica's change, and
    loses the cancellation on the way (as a wait for a pool connection could):
    the state closes all the same."""
    async with contextlib.AsyncExitStack() as stack:
        state = await stack.enter_async_context(pg_opened(postgres_server, postgres_database))
        applying = asyncio.Event()

        async def changed(name: str) -> None:
            applying.set()
            with contextlib.suppress(asyncio.CancelledError):  # lost
                await asyncio.sleep(3600)
            await asyncio.sleep(3600)

        async def reload() -> None:
            pass

        state.records.watch(changed, reload)
        with contextlib.closing(postgres_server.connect(postgres_database)) as db:
            db.execute("SELECT pg_notify(%s, %s)", (ZONE_CHANNEL, "0 n.example.test"))
        await asyncio.wait_for(applying.wait(), HANG)
        closing = asyncio.create_task(state.close())
        done, _ = await asyncio.wait({closing}, timeout=HANG)
        assert done, "close() waited for the listener for good"


# -- the process ---------------------------------------------------------------

STUBBORN = '''
"""A provider whose open() leaves behind a task that ignores every cancellation
and a thread in a call that never returns, as a buggy library might."""

import asyncio
import time

from providers.memory import MemoryProvider


def nap() -> None:
    time.sleep(3600)


async def stay() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass


class Stubborn(MemoryProvider):
    async def open(self) -> None:
        await super().open()
        self.left = (
            asyncio.create_task(stay(), name="stubborn"),
            asyncio.get_running_loop().run_in_executor(None, nap),
        )
'''


def test_a_gateway_with_a_task_and_a_thread_that_never_stop_exits_on_sigterm_saying_why(
    tmp_path: Path,
) -> None:
    """What is left once the server has stopped is waited for within a bound, named
    in the log, and the process ends with status 1 instead of waiting for ever."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "stubborn.py").write_text(STUBBORN)
    settings = gateway_settings(
        tmp_path,
        free_port(),
        PROVIDER=None,
        DNSAPI_MODULE="stubborn",
        DNSAPI_CLASS="Stubborn",
        PYTHONPATH=f"{tmp_path / 'plugins'}{os.pathsep}{REPO_ROOT}",
    )
    with running_gateway(tmp_path, settings) as gw:
        started = time.monotonic()
        gw.send(signal.SIGTERM)
        status = gw.wait(timeout=HANG)
        print(f"SIGTERM to exit: {time.monotonic() - started:.2f}s")
        log = gw.stderr
        assert status == 1, gw.describe()
        assert "going on without waiting for stubborn (waiting in sleep at " in log, log
        assert ", from stay at " in log, log
        assert "(in nap at " in log, log
        assert "exiting now, without waiting for what did not stop (exit status 1)" in log
