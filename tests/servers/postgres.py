"""A real PostgreSQL server (Debian ``postgresql``) for tests, in a temporary folder.

``initdb`` and ``postgres`` run as an unprivileged user (``nobody`` when the
tests run as root, since PostgreSQL refuses to run as root; the test's own user
otherwise) in a folder that user owns, outside pytest's root-only temporary
tree. The server listens on a free loopback TCP port only (no Unix socket),
requires a password (SCRAM) for every TCP connection, trades durability for
speed (``fsync=off``: a test database never outlives a power cut), and is
stopped by pid. :meth:`PostgresServer.stop` and :meth:`PostgresServer.start`
restart it on the same port and data, for fault tests.

One server per test session (the ``postgres_server`` fixture); a test that
needs an empty database takes a fresh one (:meth:`PostgresServer.new_database`:
``CREATE DATABASE`` is fast).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.system import free_port, unavailable, wait_for_port

USER = "acmegw"
# Tests make databases fast and never need them back.
_SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}


def _binaries() -> Path:
    """The folder with Debian's initdb and postgres (the newest major version)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    unavailable("PostgreSQL is not installed (Debian package postgresql; run `make test` as root)")
    raise AssertionError("unreachable")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed (pip install -e '.[postgresql]'; `make test` does)")
        raise AssertionError("unreachable") from None
    return psycopg


def _run_as() -> dict[str, Any]:
    """Popen arguments that run a command as the server's user."""
    if os.geteuid() != 0:
        return {}
    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


class PostgresServer:
    """One PostgreSQL server: its folder, port, superuser password and process."""

    def __init__(self, bindir: Path, folder: Path) -> None:
        self.bindir = bindir
        self.folder = folder
        self.data = folder / "data"
        self.log = folder / "postgres.log"
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count(1)
        self._as = _run_as()

    # -- the process --------------------------------------------------------

    def initdb(self) -> None:
        pwfile = self.folder / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._give(pwfile)
        result = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.data),
                "-U", USER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            timeout=120,
            check=False,
            cwd=self.folder,
            **self._as,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stdout!r} {result.stderr!r}")

    def _give(self, path: Path) -> None:
        if self._as:
            os.chown(path, self._as["user"], self._as["group"])

    def start(self) -> None:
        """Start the server (again) on its port and data; returns once it takes connections."""
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        for key, value in _SERVER_SETTINGS.items():
            argv += ["-c", f"{key}={value}"]
        logfile = self.log.open("ab")
        try:
            self.proc = subprocess.Popen(
                argv,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.folder,
                start_new_session=True,
                **self._as,
            )
        finally:
            logfile.close()
        try:
            wait_for_port(self.port, timeout=60, proc=self.proc)
            self._wait_ready()
        except Exception:
            print(self.output())
            raise

    def _wait_ready(self) -> None:
        """The port opens before recovery ends: wait for a real connection."""
        psycopg = _psycopg()
        deadline = time.monotonic() + 60
        while True:
            try:
                psycopg.connect(self.conninfo("postgres"), connect_timeout=5).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        """Stop by pid: SIGINT is PostgreSQL's fast shutdown (clients are disconnected),
        SIGKILL a crash (the next start recovers)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        if sig == signal.SIGKILL:
            # The postmaster's children notice it is gone; wait until the port is free.
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._port_open():
                time.sleep(0.05)

    def _port_open(self) -> bool:
        import socket

        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
            return True
        return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- databases ------------------------------------------------------------

    def url(self, database: str, *, password: bool = False) -> str:
        """``postgresql://acmegw@127.0.0.1:PORT/DATABASE``, with the password if asked."""
        secret = f":{self.password}" if password else ""
        return f"postgresql://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str) -> str:
        return self.url(database, password=True)

    def connect(self, database: str) -> Any:
        """A psycopg (synchronous, autocommit) connection to *database*, as the superuser."""
        return _psycopg().connect(self.conninfo(database), autocommit=True, connect_timeout=10)

    def new_database(self) -> str:
        """A fresh, empty database; returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with contextlib.closing(self.connect("postgres")) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with contextlib.closing(self.connect("postgres")) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server in a temporary folder, stopped and removed afterwards."""
    bindir = _binaries()
    _psycopg()
    # pytest's temporary folders are root's alone; the server's user must own its own.
    folder = Path(tempfile.mkdtemp(prefix="acmegw-pg-"))
    server = PostgresServer(bindir, folder)
    try:
        server._give(folder)
        server.initdb()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database for one test, dropped afterwards."""
    name = postgres_server.new_database()
    yield name
    postgres_server.drop_database(name)
