"""Running a hook (lib.acme.hooks) as a process: what it leaves running, and what is
stopped with it. Real ``/bin/sh`` processes, watched by pid."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.acme.errors import HookFailed
from lib.acme.hooks import run_hook
from lib.acme.progress import Progress
from tests.system import gone


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    """Where a hook writes the pid of what it starts; that process is killed at the end."""
    path = tmp_path / "child.pid"
    yield path
    if path.exists() and not gone(pid := int(path.read_text())):
        os.kill(pid, signal.SIGKILL)


def test_a_hook_that_starts_a_daemon_returns_when_the_hook_ends(pid_file: Path) -> None:
    """A deploy hook that (re)starts a service which keeps the hook's output open held the
    run until that service ended: up to the hook timeout (5 minutes), then a false
    'ran longer than 300s' failure, and the hook ran again at every run."""
    stream = io.StringIO()
    run_hook("deploy", f"sleep 60 & echo $! > {pid_file}; echo restarted", Progress(stream), 20)
    assert not gone(int(pid_file.read_text()))
    assert "Deploy hook: done (restarted)" in stream.getvalue()


def test_a_hook_past_its_timeout_is_stopped_with_what_it_started(pid_file: Path) -> None:
    """'was stopped' stopped /bin/sh alone: what it had started ran on."""
    with pytest.raises(HookFailed, match="ran longer than 1s and was stopped"):
        run_hook("deploy", f"sleep 60 & echo $! > {pid_file}; wait", Progress(io.StringIO()), 1)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 30
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone(pid)


def test_a_failing_hook_names_its_status_and_last_line() -> None:
    with pytest.raises(HookFailed, match="pre hook exited with status 3: second"):
        run_hook("pre", "echo first; echo second >&2; exit 3", Progress(io.StringIO()), 10)
