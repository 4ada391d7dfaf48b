"""Signals while ``acmegw-server`` starts, and the builtin DNS server process's end.

Start-up (imports, reading the configuration, opening the provider) takes most of a
second, longer on a loaded machine. A SIGHUP in that time (``systemctl reload`` right
after a start, logrotate) must not kill the gateway, and a SIGTERM must stop it the
clean way. To send a signal at a known point of start-up, the test puts a
``sitecustomize`` on the child's import path that holds one import (in one program)
until the test opens the gate: nothing else of the process changes.

The builtin provider's DNS server (``python -m providers.builtin``) is a child
process: whichever way the gateway ends, SIGKILL included, it must not outlive it.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.gateway.procs import REPO_ROOT, GatewayProcess, builtin_settings
from tests.system import free_port, gone, wait_until

SITECUSTOMIZE = """
import os
import sys
import time

_MODULE = os.environ.get("TEST_GATE_MODULE")
_PROGRAM = os.environ.get("TEST_GATE_PROGRAM")
_DIR = os.environ.get("TEST_GATE_DIR", "")


def _program():
    # "gateway" for `python -m gateway`, "acmegw-server" for the installed script.
    argv = sys.orig_argv
    if argv[1:2] == ["-m"]:
        return argv[2]
    return os.path.basename(argv[1]) if len(argv) > 1 else ""


class _Gate:
    # Holds the first import of _MODULE until the file "open" exists. Python runs
    # signal handlers between the sleeps, so a signal is acted on as it would be there.
    def find_spec(self, name, path=None, target=None):
        if name == _MODULE:
            sys.meta_path.remove(self)
            open(os.path.join(_DIR, "reached"), "w").close()
            while not os.path.exists(os.path.join(_DIR, "open")):
                time.sleep(0.01)
        return None


if _MODULE and _program() == _PROGRAM:
    sys.meta_path.insert(0, _Gate())
"""

WAIT = 30.0
# How an administrator starts the gateway: the installed script, or the module.
SCRIPT = Path(sys.executable).parent / "acmegw-server"
STARTS = {"acmegw-server": (str(SCRIPT),), "gateway": None}


class Gate:
    """Where a started process waits, and the file that lets it go on."""

    def __init__(self, directory: Path, program: str, module: str) -> None:
        directory.mkdir()
        (directory / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.directory = directory
        self.settings = {
            "PYTHONPATH": f"{REPO_ROOT}{os.pathsep}{directory}",
            "TEST_GATE_PROGRAM": program,
            "TEST_GATE_MODULE": module,
            "TEST_GATE_DIR": str(directory),
        }

    def wait_reached(self, gw: GatewayProcess) -> None:
        deadline = time.monotonic() + WAIT
        while not (self.directory / "reached").exists():
            assert gw.proc.poll() is None, gw.describe()
            assert time.monotonic() < deadline, f"the gate was not reached: {gw.describe()}"
            time.sleep(0.02)

    def open(self) -> None:
        (self.directory / "open").touch()


def builtin_gateway(tmp_path: Path, port: int | None = None) -> dict[str, str]:
    """Settings with the builtin DNS server, on free ports (the API on *port* if given)."""
    return builtin_settings(tmp_path, port or free_port(), free_port(), PROPAGATION_CHECK="off")


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    """Gateways the test started: killed at the end, whatever happened."""
    started: list[GatewayProcess] = []
    yield started
    for gw in started:
        gw.kill()


def start(tmp_path: Path, program: str, settings: dict[str, str]) -> GatewayProcess:
    command: Sequence[str] | None = STARTS[program]
    return GatewayProcess(tmp_path, settings, command=command)


def dns_children(pid: int) -> list[int]:
    """The builtin DNS server processes whose parent is *pid*."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"providers.builtin" in cmdline:
            found.append(int(entry.name))
    return found


def wait_for_child(gw: GatewayProcess) -> int:
    deadline = time.monotonic() + WAIT
    while not (children := dns_children(gw.pid)):
        assert gw.proc.poll() is None, gw.describe()
        assert time.monotonic() < deadline, f"no DNS server process: {gw.describe()}"
        time.sleep(0.02)
    [child] = children
    return child


def assert_ends(pid: int, gw: GatewayProcess) -> None:
    deadline = time.monotonic() + WAIT
    while not gone(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the DNS server process {pid} outlived the gateway")
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("program", "module", "when"),
    [
        ("acmegw-server", "aiohttp", "importing the server"),
        ("gateway", "aiohttp", "importing the server"),
        ("gateway", "providers.builtin", "reading the configuration"),
    ],
)
def test_sighup_while_starting_is_a_reload_once_serving(
    tmp_path: Path, processes: list[GatewayProcess], program: str, module: str, when: str
) -> None:
    gate = Gate(tmp_path / "gate", program, module)
    gw = start(tmp_path, program, {**builtin_gateway(tmp_path), **gate.settings})
    processes.append(gw)
    gate.wait_reached(gw)
    gw.send(signal.SIGHUP)
    gate.open()
    gw.wait_ready(WAIT)
    wait_until(lambda: "configuration reloaded" in gw.stderr, f"SIGHUP {when} to be acted on",
               WAIT, describe=gw.describe)
    assert gw.proc.poll() is None
    child = wait_for_child(gw)
    assert gw.stop() == 0, gw.describe()
    assert_ends(child, gw)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_importing_ends_start_up_cleanly(
    tmp_path: Path, processes: list[GatewayProcess], sig: signal.Signals
) -> None:
    gate = Gate(tmp_path / "gate", "acmegw-server", "aiohttp")
    gw = start(tmp_path, "acmegw-server", {**builtin_gateway(tmp_path), **gate.settings})
    processes.append(gw)
    gate.wait_reached(gw)
    gw.send(sig)
    gate.open()
    assert gw.wait(WAIT) == 0, gw.describe()
    assert "Traceback" not in gw.stderr, gw.describe()
    assert "while starting" in gw.stderr, gw.describe()


def test_sigterm_while_the_dns_server_starts_stops_the_gateway_cleanly(
    tmp_path: Path, processes: list[GatewayProcess]
) -> None:
    # Held in the DNS server process: the gateway is opening its provider.
    gate = Gate(tmp_path / "gate", "providers.builtin", "providers.builtin.server")
    gw = GatewayProcess(tmp_path, {**builtin_gateway(tmp_path), **gate.settings})
    processes.append(gw)
    gate.wait_reached(gw)
    child = wait_for_child(gw)
    gw.send(signal.SIGTERM)
    gate.open()
    assert gw.wait(WAIT) == 0, gw.describe()
    assert "stopped" in gw.stderr, gw.describe()
    assert_ends(child, gw)


@pytest.mark.parametrize(
    "how", ["SIGTERM", "SIGINT", "SIGKILL", "SIGKILL while the DNS server starts"]
)
def test_the_dns_server_process_ends_with_the_gateway(
    tmp_path: Path, processes: list[GatewayProcess], how: str
) -> None:
    settings = builtin_gateway(tmp_path)
    gate = None
    if how.endswith("starts"):
        gate = Gate(tmp_path / "gate", "providers.builtin", "providers.builtin.server")
        settings.update(gate.settings)
    gw = GatewayProcess(tmp_path, settings)
    processes.append(gw)
    if gate is not None:
        gate.wait_reached(gw)
    else:
        gw.wait_ready(WAIT)
    child = wait_for_child(gw)
    status = gw.stop(getattr(signal, how.split()[0]), WAIT)
    if gate is not None:
        gate.open()  # the server process reads on, and finds its gateway gone
    if how in ("SIGTERM", "SIGINT"):
        assert status == 0, gw.describe()
    assert_ends(child, gw)


def test_the_dns_server_process_ends_when_the_gateway_cannot_listen(
    tmp_path: Path, processes: list[GatewayProcess]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gw = GatewayProcess(tmp_path, builtin_gateway(tmp_path, port))
        processes.append(gw)
        child = wait_for_child(gw)
        assert gw.wait(WAIT) == 1, gw.describe()
    assert "cannot listen" in gw.stderr
    assert_ends(child, gw)
