"""Helpers for tests that run real servers (BIND, PowerDNS, pebble, Apache, podman).

Servers listen only on loopback, on ports the test picks, and are stopped by
the test through their pid. Without a needed program a test skips with the
reason; with ``REQUIRE_SYSTEM_TESTS=1`` (CI) that skip is a failure instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def require_system() -> bool:
    return os.environ.get("REQUIRE_SYSTEM_TESTS", "") not in ("", "0")


def unavailable(reason: str) -> None:
    """Skip the test, or fail it when system tests are required."""
    if require_system():
        pytest.fail(f"system test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def need_program(name: str, package: str) -> str:
    """The absolute path of program *name*, or skip/fail naming the Debian package."""
    path = shutil.which(name) or next(
        (str(Path(d, name)) for d in SBIN if Path(d, name).is_file()), None
    )
    if path is None:
        unavailable(f"{name} not installed (Debian package {package}; run `make test` as root)")
        raise AssertionError("unreachable")
    return path


def free_port(
    kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1", also: Sequence[str] = ()
) -> int:
    """A port free for both TCP and UDP on *host* (DNS servers need both), and on
    each address in *also* (two servers on one port number, at two addresses)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if _bindable(socket.SOCK_DGRAM, host, port) and all(
                _bindable(sock_type, address, port)
                for address in also
                for sock_type in (socket.SOCK_STREAM, socket.SOCK_DGRAM)
            ):
                return port
    raise RuntimeError("no free port")


def _bindable(sock_type: int, host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, sock_type) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def systemd_verify(
    root: Path, units: Mapping[str, str], commands: Sequence[str]
) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of *units* (file name: text) in an alternate *root*
    holding systemd's own units and an executable stand-in at each of *commands*, so
    nothing on this machine is touched. It exits 0 on unknown keys and bad values:
    its output is what counts."""
    analyze = need_program("systemd-analyze", "systemd")
    shutil.copytree(SYSTEMD_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    folder = root / "etc/systemd/system"
    folder.mkdir(parents=True)
    for name, text in units.items():
        (folder / name).write_text(text)
    for command in commands:
        stand_in = root / command.lstrip("/")
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n")
        stand_in.chmod(0o755)
    return subprocess.run([analyze, "verify", f"--root={root}", *units],
                          capture_output=True, text=True, timeout=60, check=False)


def gone(pid: int) -> bool:
    """True once process *pid* has ended: reaped, or a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_until(check: Callable[[], object], what: str, timeout: float = 30.0,
               describe: Callable[[], str] | None = None) -> None:
    """Poll *check* until it is true; fail, saying *what* was awaited (and *describe()*,
    such as a process's output), when *timeout* seconds pass first."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"\n{describe()}" if describe else ""))
        time.sleep(0.05)


class Server:
    """A child process we started; stopped by pid, with its log kept for failures."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.argv = list(argv)
        self.log = log
        self._logfile = log.open("wb")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        """What the process wrote so far, also after :meth:`stop` (a failing test reads it)."""
        if not self._logfile.closed:
            self._logfile.flush()
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout)
        self._logfile.close()


@contextlib.contextmanager
def running(argv: Sequence[str], log: Path, **kwargs: object) -> Iterator[Server]:
    server = Server(argv, log, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
