"""Any program as a provider: ``EXEC_COMMAND add|remove <fqdn> <value>``.

For DNS hosts no library covers, and for scripts users already have (an acme.sh
``dnsapi`` script behind a small wrapper, a company tool). The README shows a
script that drives any RFC 2136 server with ``nsupdate`` (the one the tests run
against BIND) and a wrapper for acme.sh's dnsapi scripts.

Settings:

* ``EXEC_COMMAND`` (required): the program's absolute path. It is run directly,
  with no shell, no PATH search and no arguments of its own, as
  ``EXEC_COMMAND add <fqdn> <value>`` to publish a value and
  ``EXEC_COMMAND remove <fqdn> <value>`` to withdraw one. ``<fqdn>`` is
  ``_acme-challenge.<name>``: lower case, IDNA, no trailing dot; ``<value>`` is
  the TXT value and may start with ``-``. The program must leave the other values
  at the name alone, and succeed when there is nothing to do (the value is there
  already, or gone already).
* ``EXEC_ENV``: names of the variables passed on to the program (comma- or
  blank-separated), each taken from the gateway's settings (command line,
  environment or dotenv file); ``<NAME>_FILE`` reads a secret from a file instead.
* ``PROVIDER_TIMEOUT`` bounds each run.

What the program gets:

* An environment of ``PATH=/usr/local/bin:/usr/bin:/bin`` and ``LANG=C.UTF-8``
  (what a program needs to run at all), the forward proxy settings
  (``ALL_PROXY``, ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``, each in upper and
  lower case, as curl and the like read them), and the variables ``EXEC_ENV``
  names, which may override the others (``HOME``, say, or another ``PATH``).
  Nothing else of the gateway's environment (its passwords, its other settings)
  reaches it.
* stdin is ``/dev/null`` (end of file at once), the working folder is ``/``, and
  it runs in a process group of its own.

What the gateway makes of it:

* Exit status 0 means done. Anything else is a failure (HTTP 502) quoting the
  last line the program wrote to stderr (stdout when stderr is empty), with
  secrets replaced by ``***``: the values of ``EXEC_ENV`` variables whose names
  look secret (``TOKEN``, ``KEY``, ``PASS``, ``SECRET``, ``AUTH``, ... in them),
  every value read from a ``*_FILE``, and the proxy's password.
* Past ``PROVIDER_TIMEOUT`` (or when the gateway stops waiting for the call) the
  whole process group is killed with SIGKILL and the program reaped; the call
  fails with HTTP 504. When the program exits, whatever it left running in its
  group is killed as well, so a helper that keeps stderr open cannot hold the
  call (nor outlive it).
* Only the last 4 KiB of each output stream is kept; the rest is read and dropped.
* At most 8 programs run at once; further calls wait for a turn within their
  deadline.

Quirk: a program that moves a child into a session of its own (``setsid``) takes
that child out of the gateway's reach; only the program's own group is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar, Self
from urllib.parse import urlsplit

from lib.settings import Settings
from providers._secrets import SECRET_NAME, redact, worth_hiding
from providers.base import Provider, ProviderContext, ProviderTimeout

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them unimported);
# the variables EXEC_ENV names are read too, when this provider is chosen.
SETTINGS = ("EXEC_COMMAND", "EXEC_ENV")

BASE_ENV = MappingProxyType({"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"})
PROXY_KEYS = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
# What is kept of each output stream, and of the line quoted in an error.
TAIL_BYTES = 4096
LINE_CHARS = 300
MAX_RUNNING = 8
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # used with fullmatch
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ExecSettings:
    command: str
    # repr=False: both hold secrets, and a settings object may end up in a traceback.
    env: Mapping[str, str] = field(default_factory=lambda: BASE_ENV, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    timeout: float = 30.0


def _command_setting(settings: Settings) -> str:
    command = settings.require("EXEC_COMMAND", "the absolute path of the program to run")
    if not command:
        return command
    path = Path(command)
    if not path.is_absolute():
        settings.problem(f"EXEC_COMMAND={command!r} is not an absolute path")
    elif not path.is_file():
        settings.problem(f"EXEC_COMMAND={command!r}: no such file")
    elif not os.access(path, os.X_OK):
        settings.problem(f"EXEC_COMMAND={command!r} is not executable")
    return command


def _environment(settings: Settings) -> tuple[dict[str, str], list[str]]:
    """The program's environment, and the values in it to keep out of messages."""
    env = dict(BASE_ENV)
    secrets: list[str] = []
    for key in PROXY_KEYS:
        value = settings.get(key) or settings.get(key.lower())
        if value:
            env[key] = env[key.lower()] = value
            secrets.append(urlsplit(value).password or "")
    for name in settings.items("EXEC_ENV"):
        if not _VARIABLE.fullmatch(name):
            settings.problem(f"EXEC_ENV: {name!r} is not a variable name")
            continue
        value = settings.secret(name)
        from_file = settings.has(f"{name}_FILE")
        if value is None:
            if not from_file:  # with a file, secret() has said what is wrong with it
                settings.problem(
                    f"EXEC_ENV names {name}, but neither {name} nor {name}_FILE is set"
                )
            continue
        if "\0" in value:
            settings.problem(f"EXEC_ENV: the value of {name} contains a NUL character")
            continue
        env[name] = value
        if from_file or SECRET_NAME.search(name):
            secrets.append(value)
    return env, secrets


class ExecProvider(Provider):
    """Runs ``EXEC_COMMAND add|remove <fqdn> <value>`` for each change."""

    name: ClassVar[str] = "exec"

    def __init__(self, settings: ExecSettings) -> None:
        self.settings = settings
        self._turns = asyncio.Semaphore(MAX_RUNNING)

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        command = _command_setting(settings)
        env, secrets = _environment(settings)
        return cls(
            ExecSettings(
                command=command,
                env=MappingProxyType(env),
                secrets=worth_hiding(secrets),
                timeout=context.timeout,
            )
        )

    async def add_txt(self, fqdn: str, value: str) -> None:
        await self._call("add", fqdn, value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        await self._call("remove", fqdn, value)

    async def _call(self, action: str, fqdn: str, value: str) -> None:
        what = f"{self.settings.command} {action} {fqdn}"
        started = False
        try:
            async with asyncio.timeout(self.settings.timeout), self._turns:
                started = True
                status, stderr, stdout = await self._run(action, fqdn, value)
        except TimeoutError:
            if not started:
                raise ProviderTimeout(
                    self.name,
                    f"{what}: no turn within {self.settings.timeout:g}s "
                    f"({MAX_RUNNING} programs are running)",
                ) from None
            raise ProviderTimeout(
                self.name,
                f"{what} did not finish within {self.settings.timeout:g}s; "
                "its process group was killed",
            ) from None
        if status == 0:
            log.info("exec: %s %s done", action, fqdn)
            return
        line = self._last_line(stderr) or self._last_line(stdout)
        raise self.error(f"{what}: {_status_text(status)}" + (f": {line}" if line else ""))

    async def _run(self, action: str, fqdn: str, value: str) -> tuple[int, bytes, bytes]:
        """Run the program to its end; its status and the tails of stderr and stdout."""
        loop = asyncio.get_running_loop()
        try:
            transport, program = await loop.subprocess_exec(
                lambda: _Program(loop),
                self.settings.command,
                action,
                fqdn,
                value,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=dict(self.settings.env),
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            raise self.error(
                f"cannot run {self.settings.command}: {exc.strerror or exc}",
                hint="check EXEC_COMMAND",
            ) from None
        pgid = transport.get_pid()
        try:
            # Shielded: a cancelled wait must not cancel the future itself, which
            # the clean-up below waits on.
            await asyncio.shield(program.exited)
            # Anything the program left running in its group goes too; then the
            # pipes close and the last of the output arrives.
            _kill_group(pgid)
            await program.drained
        except BaseException:
            # A timeout, or the gateway cancelling the call: nothing of it stays,
            # and the program is reaped (exited is set once it has been waited for).
            _kill_group(pgid)
            await program.exited
            raise
        finally:
            transport.close()
        status = transport.get_returncode()
        assert status is not None
        return status, bytes(program.stderr), bytes(program.stdout)

    def _last_line(self, output: bytes) -> str:
        """The last non-blank line of *output*, secrets scrubbed, on one short line."""
        cut = len(output) >= TAIL_BYTES
        lines = [line for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
        if not lines:
            return ""
        # Scrub before shortening, so that no part of a secret can survive the cut.
        text = redact(" ".join(lines[-1].split()), self.settings.secrets)
        text = _CONTROL.sub("?", text)
        if len(text) <= LINE_CHARS:
            return text
        # A line cut at the start of the kept tail is shown by its end, far from that cut.
        return "..." + text[-LINE_CHARS:] if cut and len(lines) == 1 else text[:LINE_CHARS] + "..."


class _Program(asyncio.SubprocessProtocol):
    """One run of the program: the tails of its output, its exit, the end of its pipes.

    ``Process.wait()`` of asyncio's streams returns only once every pipe is
    closed, which a helper left behind can delay for ever; this protocol tells
    the two apart.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        kept = self.stdout if fd == 1 else self.stderr
        kept += data
        if len(kept) > TAIL_BYTES:
            del kept[:-TAIL_BYTES]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.drained.done():
            self.drained.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _status_text(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit status {status}"
