"""Run the gateway as a child process, the way an administrator does.

``python -m gateway`` (or ``gateway.demo``) runs in the test's ``tmp_path`` with
an environment built from scratch, so nothing from the developer's shell or
checkout leaks in. It is ready when it prints ``acmegw-server: ready`` on
stderr, and is stopped through its pid; :func:`running_gateway` guarantees the
process is gone when the test ends, however it ends.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
READY = "acmegw-server: ready"

_counter = itertools.count(1)


def gateway_env(settings: Mapping[str, str]) -> dict[str, str]:
    """A clean environment: just enough to run Python, plus *settings*."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(settings)
    return env


def gateway_settings(folder: Path, port: int, **overrides: str | None) -> dict[str, str]:
    """The settings of a gateway for a test about something else: it listens on
    127.0.0.1:*port*, lets 127.0.0.1 in by its address, manages ``example.test`` on the
    memory provider with no propagation check, and keeps its state in *folder*/state.

    *overrides* add settings or change these: what the test is about stands in the
    test. None takes one out, e.g. ``ALLOWED_HOSTS=None`` for passwords only.
    """
    return _overridden(
        {
            "PROVIDER": "memory",
            **_on_loopback(folder, port),
            "PROPAGATION_CHECK": "off",
        },
        overrides,
    )


def builtin_settings(
    folder: Path, port: int, dns_port: int, **overrides: str | None
) -> dict[str, str]:
    """The settings of a gateway whose builtin DNS server answers on
    127.0.0.1:*dns_port* as ``ns.gw.example.net``, at the builtin's defaults (rate
    limiting included); otherwise as :func:`gateway_settings`, but for the propagation
    check: left on, as it matters only when the gateway is told of nameservers to wait
    for (``PROPAGATION_NAMESERVERS``, ``BUILTIN_SECONDARIES``).
    """
    return _overridden(
        {
            "PROVIDER": "builtin",
            **_on_loopback(folder, port),
            "BUILTIN_LISTEN": f"127.0.0.1:{dns_port}",
            "BUILTIN_NS": "ns.gw.example.net",
        },
        overrides,
    )


def passwords_only(folder: Path) -> dict[str, str | None]:
    """Overrides for a gateway that lets nobody in by address: every caller needs a
    password from *folder*/acmepasswd (``BASIC_AUTH=required``)."""
    return {
        "ALLOWED_HOSTS": None,
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(folder / "acmepasswd"),
    }


def write_accounts_file(path: Path, *accounts: Mapping[str, object], mode: int = 0o600) -> Path:
    """An ``ACMEDNS_ACCOUNTS_FILE`` at *path* listing *accounts*, private unless *mode*
    says otherwise (an entry with a ``password`` holds a key: the gateway wants it private)."""
    path.write_text(json.dumps({"accounts": list(accounts)}))
    path.chmod(mode)
    return path


def write_secret_file(path: Path, text: str) -> Path:
    """*text* at *path*, readable by its owner only, as the gateway and the ACME client
    want a file that holds a secret (a password, a key)."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def write_dotenv_file(path: Path, settings: Mapping[str, str]) -> Path:
    """*settings* as a dotenv file at *path* (for ``-e`` or ``DOTENV``), private: it may
    hold secrets."""
    return write_secret_file(path, "".join(f"{key}={value}\n" for key, value in settings.items()))


def _on_loopback(folder: Path, port: int) -> dict[str, str]:
    return {
        "DNSAPI_DOMAINS": "example.test",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(folder / "state"),
    }


def _overridden(settings: dict[str, str], overrides: Mapping[str, str | None]) -> dict[str, str]:
    for key, value in overrides.items():
        if value is None:
            settings.pop(key, None)
        else:
            settings[key] = value
    return settings


def _limit_open_files(limit: int) -> Callable[[], None]:
    """Run in the child before exec: soft and hard open-file limit *limit* (``ulimit -n``)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


class GatewayProcess:
    """One gateway child process with its stdout and stderr kept in files."""

    def __init__(
        self,
        cwd: Path,
        settings: Mapping[str, str],
        args: Sequence[str] = (),
        module: str = "gateway",
        open_files: int | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        """Runs ``python -m module args``, or *command* (an installed script) with *args*."""
        n = next(_counter)
        self.stdout_path = cwd / f"{module}-{n}.stdout"
        self.stderr_path = cwd / f"{module}-{n}.stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*(command or (sys.executable, "-m", module)), *args],
                cwd=cwd,
                env=gateway_env(settings),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=None if open_files is None else _limit_open_files(open_files),
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"exit status {self.proc.poll()}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY in self.stderr:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the gateway exited before it was ready: {self.describe()}")
            time.sleep(0.05)
        raise AssertionError(f"the gateway was not ready after {timeout}s: {self.describe()}")

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the gateway did not exit within {timeout}s: {self.describe()}"
            ) from None

    def send(self, sig: int) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def reload(self, timeout: float = 30.0) -> None:
        """SIGHUP, then wait until the gateway logs one more line about a reload (applied,
        refused or needing a restart: the caller reads which)."""
        before = self.stderr.count("reload")
        self.send(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while self.stderr.count("reload") == before:
            assert time.monotonic() < deadline, f"SIGHUP was not acted on: {self.describe()}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send *sig* and wait; SIGKILL if it does not exit in time. Returns the exit status."""
        self.send(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            return self.proc.wait(timeout)

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)


@contextlib.contextmanager
def running_gateway(
    cwd: Path,
    settings: Mapping[str, str],
    args: Sequence[str] = (),
    module: str = "gateway",
    ready: bool = True,
    open_files: int | None = None,
) -> Iterator[GatewayProcess]:
    """A started gateway (ready unless *ready* is False), always stopped afterwards;
    *open_files* sets its ``ulimit -n``."""
    gw = GatewayProcess(cwd, settings, args, module, open_files)
    try:
        if ready:
            gw.wait_ready()
        yield gw
    finally:
        gw.stop()


def run_gateway(
    cwd: Path,
    settings: Mapping[str, str],
    args: Sequence[str] = (),
    timeout: float = 20.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway`` to completion (for runs that must exit on their own)."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=gateway_env(settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
