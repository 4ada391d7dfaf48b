"""The README's first command works in a fresh clone: ``make run``, then the curl line it prints.

The checkout is cloned with ``git clone`` into the test's folder (so only what
is committed counts), and ``make run`` is started there as a user would, with
a free API port and DNS port (``DEMO_PORT``, ``DEMO_DNS_PORT``). It must make
``.venv``, put the four commands in ``.venv/bin`` (README), start the gateway
and print a ``curl`` command and a ``dig`` command; the curl command, run as
printed, sets the record up (201) and dig finds it served.

To keep this fast and independent of PyPI, pip in the clone installs from the
checkout's wheelhouse alone (``make wheelhouse``, which the container test
shares; made once and kept until ``pyproject.toml`` changes), through pip's
own ``PIP_NO_INDEX`` and ``PIP_FIND_LINKS``: creating the venv and installing
then takes about 10 s on the test machine. ``make test`` (the second command)
is what CI runs, so it is not run again here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.debian_base import NoDebianMirror, ensure_base_image
from tests.deploy.podman import Podman
from tests.gateway.procs import READY, REPO_ROOT
from tests.gateway.test_demo import curl, printed_command, run
from tests.system import free_port, need_program, unavailable

pytestmark = pytest.mark.system

START_TIMEOUT = 300.0  # a fresh venv and install on a loaded 2-core machine
COMMANDS = ("acmegw-server", "acmegw-passwd", "acmegw-hook", "acmegw-acme")


def wheelhouse(podman: Podman, base: str) -> Path:
    """The container test's wheelhouse (for the Debian base's python3, which the
    host's venv can install too: both are 3.11)."""
    done = subprocess.run(
        [
            "make", "--no-print-directory", "-C", str(REPO_ROOT), "wheelhouse",
            f"BASE={base}", f"PODMAN={shlex.join([podman.program, *podman.global_args])}",
            f"PODMAN_ULIMITS={shlex.join(podman.limits)}",
        ],
        capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return REPO_ROOT / "wheelhouse"


class MakeRun:
    """``make run`` in its own process group, its output kept in files."""

    def __init__(self, clone: Path, env: dict[str, str]) -> None:
        self.out, self.err = clone.parent / "make-run.out", clone.parent / "make-run.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                ["make", "run"], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while READY not in self.stderr:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"make run did not start (status {self.proc.poll()}):\n"
                    f"{self.stdout[-3000:]}\n{self.stderr[-3000:]}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        # make and the gateway it runs: the group this test started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)


@pytest.fixture
def make_run(tmp_path: Path, podman: Podman, debootstrap: str) -> Iterator[MakeRun]:
    git = need_program("git", "git")
    need_program("make", "make")
    try:
        base = ensure_base_image(podman.program, debootstrap)
    except NoDebianMirror as exc:
        unavailable(f"cannot make the Debian base image: {exc}")
        raise
    wheels = wheelhouse(podman, base.name)
    clone = tmp_path / "acme-dns01-gateway"
    subprocess.run([git, "clone", "--quiet", str(REPO_ROOT), str(clone)], check=True, timeout=120)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update(
        PIP_NO_INDEX="1",
        PIP_FIND_LINKS=str(wheels),
        DEMO_PORT=str(free_port()),
        DEMO_DNS_PORT=str(free_port()),
    )
    process = MakeRun(clone, env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_make_run_in_a_fresh_clone_prints_a_curl_line_that_works(
    make_run: MakeRun, tmp_path: Path
) -> None:
    clone = tmp_path / "acme-dns01-gateway"
    for command in COMMANDS:
        assert (clone / ".venv" / "bin" / command).is_file(), command
    version = run([str(clone / ".venv" / "bin" / "acmegw-passwd"), "--help"])
    assert version.returncode == 0 and "usage: acmegw-passwd" in version.stdout

    argv = printed_command(make_run.stdout, "curl")
    value = json.loads(argv[argv.index("-d") + 1])["challenge_content"]
    status, body = curl([need_program("curl", "curl"), *argv[1:]])
    assert status == 201, (body, make_run.stderr[-3000:])
    assert body == {"fqdn": "_acme-challenge.example.test", "value": value}

    dig = printed_command(make_run.stdout, "dig")
    served = run([need_program("dig", "bind9-dnsutils"), *dig[1:]])
    assert served.stdout.strip() == f'"{value}"', served


def test_the_readme_says_where_make_run_puts_the_commands() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    quick_start = readme[: readme.index("## Contents")]
    assert "make run" in quick_start
    assert "are in **`.venv/bin`**" in quick_start
