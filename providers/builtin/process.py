"""The gateway's side of the builtin DNS server process: start it, feed it, restart it.

:class:`ServerProcess` starts ``python -m providers.builtin`` (the server in
:mod:`providers.builtin.server`) with the listening sockets the provider bound, sends it the
configuration and every record, and then each change; :meth:`ServerProcess.set`
returns once the server serves the change, :meth:`ServerProcess.reconfigure` once
it serves under a reload's new settings. Its log lines come back over the
control socket and are logged here under their own logger names.

If the server process dies, it is started again on the same sockets with the
records of that moment (the provider's, which are the truth), after a pause
that grows from 0.1 to 10 s while it keeps dying; changes waiting for it are
done once the new process serves them. The process lives as long as the
provider: :meth:`ServerProcess.close` ends it, and if the gateway dies first,
the server sees its control socket close and exits.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from providers.builtin.server import MAX_LINE, ServerConfig
from providers.builtin.store import Labels, name_of

log = logging.getLogger(__name__)

# Names per control message when all records are sent at once.
BATCH = 2000
# A restart loop slows down to one attempt per this many seconds.
MAX_BACKOFF = 10.0
# A server that ran this long before dying starts again at once.
STABLE = 30.0

Snapshot = Callable[[], tuple[Iterable[tuple[Labels, Iterable[str]]], int]]


class ServerProcessError(Exception):
    """The server process could not be started."""


def _root() -> str:
    """The folder holding the ``providers`` package, for the child's import path."""
    return str(Path(__file__).resolve().parents[2])


def _records(items: Iterable[tuple[Labels, Iterable[str]]]) -> list[list[Any]]:
    return [[name_of(name), list(values)] for name, values in items]


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for *task* to end, however it ends, unless the caller itself is cancelled.

    Both end with CancelledError: the task's own cancellation is swallowed, the
    caller's is raised again (a cancelled close must not go on as if it were not).
    """
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise


class ServerProcess:
    """One server process at a time for *config*'s sockets, fed from *snapshot*."""

    def __init__(
        self,
        config: ServerConfig,
        snapshot: Snapshot,
        start_timeout: float = 30.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.config = config
        self.snapshot = snapshot
        self.start_timeout = start_timeout
        self.close_timeout = close_timeout
        self.proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[None]] = {}
        self._closing = False
        self._started_at = 0.0
        self._backoff = 0.1
        # How many times the server process had to be started again (for tests and logs).
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def start(self) -> None:
        """Start the server and return once it serves every record; raises ServerProcessError."""
        ready = await self._spawn()
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
        except TimeoutError:
            await self.close()
            raise ServerProcessError(
                f"the DNS server process did not start within {self.start_timeout:g} s"
            ) from None
        except ServerProcessError:
            await self.close()
            raise

    async def _spawn(self) -> asyncio.Future[list[None]]:
        """Start a process, send it the configuration and every record; the future is done
        once it serves them."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_root(), env.get("PYTHONPATH")]))
        fds = (theirs.fileno(), *self.config.udp_fds, *self.config.tcp_fds)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "providers.builtin",
                str(theirs.fileno()),
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        except OSError as exc:
            ours.close()
            raise ServerProcessError(f"cannot start the DNS server process: {exc}") from None
        finally:
            theirs.close()
        self._started_at = time.monotonic()
        reader, self._writer = await asyncio.open_unix_connection(sock=ours, limit=MAX_LINE)
        self._reader_task = asyncio.create_task(self._read(reader, self.proc))
        self._send(self.config.to_json())
        records, serial = self.snapshot()
        items = _records(records)
        batches = [items[i : i + BATCH] for i in range(0, len(items), BATCH)] or [[]]
        # The server serves nothing before the last batch is in.
        futures = [
            self._request("load", batch, serial, first=i == 0, last=i == len(batches) - 1)
            for i, batch in enumerate(batches)
        ]
        return asyncio.gather(*futures)

    def _send(self, message: dict[str, Any]) -> None:
        if self._writer is None:
            raise ServerProcessError("the DNS server process is not running")
        self._writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def _request(
        self, op: str, records: list[list[Any]], serial: int, **extra: bool
    ) -> asyncio.Future[None]:
        return self._ask({"op": op, "serial": serial, "records": records, **extra})

    def _ask(self, message: dict[str, Any]) -> asyncio.Future[None]:
        """Send *message* under a new id; the future is done once the server did it."""
        number = next(self._ids)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[number] = future
        self._send({**message, "id": number})
        return future

    async def set(self, name: Labels, values: Iterable[str], serial: int) -> None:
        """Serve *values* at *name* under *serial*; returns once the server does."""
        if self._restart_task is not None:
            # A new process is on its way; it will serve the snapshot, this change included.
            await asyncio.shield(self._restart_task)
            return
        await self._request("set", _records([(name, values)]), serial)

    async def reconfigure(self, config: ServerConfig, serial: int) -> None:
        """Serve under *config* (the same sockets) and *serial* from now on; returns once
        the server does. A process started again later starts with *config*."""
        self.config = config
        if self._restart_task is not None:
            # The new process may have been sent the old configuration: it gets this too.
            await asyncio.shield(self._restart_task)
        await self._ask({"op": "reconfigure", "serial": serial, "config": config.to_json()})

    async def _read(self, reader: asyncio.StreamReader, proc: asyncio.subprocess.Process) -> None:
        try:
            while line := await reader.readline():
                message = json.loads(line)
                if message["op"] == "done":
                    future = self._waiting.pop(message["id"], None)
                    if future is not None and not future.done():
                        future.set_result(None)
                elif message["op"] == "log":
                    logging.getLogger(message["name"]).log(
                        message["level"], "%s", message["message"]
                    )
        except (ConnectionError, ValueError, KeyError) as exc:
            log.error("builtin DNS: the server process sent something unreadable: %s", exc)
        if self._closing or proc is not self.proc:
            return
        self._restart_task = asyncio.create_task(self._restart(proc))

    async def _restart(self, proc: asyncio.subprocess.Process) -> None:
        """Start a new process after *proc* died; changes waiting are done by its first load."""
        waiting, self._waiting = self._waiting, {}
        status = await proc.wait()
        if time.monotonic() - self._started_at > STABLE:
            self._backoff = 0.1
        log.error(
            "builtin DNS: the server process exited (status %s); starting it again in %.1f s",
            status,
            self._backoff,
        )
        while not self._closing:
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            if self._writer is not None:
                self._writer.close()
            try:
                ready = await self._spawn()
                await asyncio.wait_for(asyncio.shield(ready), self.start_timeout)
            except (ServerProcessError, TimeoutError, OSError) as exc:
                log.error("builtin DNS: starting the server process again failed: %s", exc)
                continue
            self.restarts += 1
            log.warning("builtin DNS: the server process runs again (pid %s)", self.pid)
            for future in waiting.values():
                if not future.done():
                    future.set_result(None)
            self._restart_task = None
            return

    async def close(self) -> None:
        """End the server process (the sockets stay with their owner)."""
        self._closing = True
        if self._restart_task is not None:
            self._restart_task.cancel()
            await _ended(self._restart_task)
        if self._writer is not None:
            # End of file on its control socket: the server exits.
            self._writer.close()
            self._writer = None
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), self.close_timeout)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader_task is not None:
            await _ended(self._reader_task)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ServerProcessError("the DNS server process was stopped"))
        self._waiting = {}
