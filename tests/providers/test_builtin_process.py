"""The builtin server's own process: it serves what the provider holds, comes back when it
dies, leaves when the gateway does, and keeps its serial growing across restarts."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest
import requests

from providers.base import ProviderError
from providers.builtin import BuiltinProvider, BuiltinSettings
from providers.builtin.network import bind_tcp, bind_udp
from providers.builtin.process import ServerProcess
from providers.builtin.serial import FileSerialStore
from providers.builtin.server import Control, ServerConfig
from tests.cancelling import assert_cancellation_reaches_the_caller
from tests.conftest import make_value
from tests.gateway.procs import REPO_ROOT, builtin_settings, running_gateway
from tests.system import free_port

MANAGED = ("example.test",)
NAME = "_acme-challenge.example.test"
TIMEOUT = 5.0


def _settings(port: int) -> BuiltinSettings:
    return BuiltinSettings(
        listen=(("127.0.0.1", port),),
        nameservers=("ns1.gw.example.net",),
        rate_limit_exempt=(ipaddress.ip_network("127.0.0.0/8"),),
    )


async def _txt(port: int, name: str = NAME) -> set[str]:
    query = dns.message.make_query(name, "TXT")
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=TIMEOUT)
    return {b"".join(r.strings).decode() for rrset in reply.answer for r in rrset}


async def _serial(port: int) -> int:
    query = dns.message.make_query(NAME, "SOA")
    reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=TIMEOUT)
    return int(reply.answer[0][0].serial)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too: only its parent has yet to collect it.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


async def test_a_server_process_that_dies_is_started_again_with_every_record() -> None:
    port = free_port()
    provider = BuiltinProvider(_settings(port), MANAGED)
    await provider.open()
    try:
        first = make_value()
        await provider.add_txt(NAME, first)
        assert provider.server is not None
        pid = provider.server.pid
        assert pid is not None and pid != os.getpid()
        serial = await _serial(port)
        os.kill(pid, signal.SIGKILL)
        # A change while it is down is served once it is back.
        second = make_value()
        await asyncio.wait_for(provider.add_txt(NAME, second), 30)
        assert provider.server.pid != pid
        assert provider.server.restarts == 1
        assert await _txt(port) == {first, second}
        assert await _serial(port) > serial
    finally:
        await provider.aclose()


async def test_aclose_ends_the_server_process_and_frees_the_port() -> None:
    port = free_port()
    provider = BuiltinProvider(_settings(port), MANAGED)
    await provider.open()
    assert provider.server is not None
    pid = provider.server.pid
    assert pid is not None
    await provider.aclose()
    assert _gone(pid)
    again = BuiltinProvider(_settings(port), MANAGED)
    await again.open()
    await again.aclose()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()]


def test_the_server_process_leaves_with_a_killed_gateway(tmp_path: Path) -> None:
    settings = builtin_settings(tmp_path, free_port(), free_port(), PROPAGATION_CHECK="off")
    with running_gateway(tmp_path, settings) as gw:
        [child] = _children(gw.pid)
        gw.kill()
        deadline = time.monotonic() + 20
        while not _gone(child):
            assert time.monotonic() < deadline, "the DNS server process outlived the gateway"
            time.sleep(0.05)


@contextlib.contextmanager
def _server_process() -> Iterator[tuple[subprocess.Popen[bytes], socket.socket, Control]]:
    """A server process on fresh sockets, spoken to as the gateway does, loaded and
    serving: the process, the gateway's end of the control socket, and its lines."""
    port = free_port()
    tcp, udp = bind_tcp("127.0.0.1", port), bind_udp("127.0.0.1", port)
    config = ServerConfig(
        MANAGED,
        None,
        ("ns1.gw.example.net",),
        60,
        udp_fds=tuple(sock.fileno() for sock in udp),
        tcp_fds=(tcp.fileno(),),
    )
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "providers.builtin", str(theirs.fileno())],
            pass_fds=(theirs.fileno(), *config.udp_fds, *config.tcp_fds),
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
    finally:
        for sock in (theirs, tcp, *udp):
            sock.close()
    try:
        ours.settimeout(20)  # a server that says nothing fails the test, not hangs it
        control = Control(ours)
        control.send(config.to_json())
        control.send({"op": "load", "id": 1, "serial": 1, "records": [], "first": True,
                      "last": True})
        assert control.receive() == {"op": "done", "id": 1}
        yield proc, ours, control
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ours.close()


def _ends(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("the DNS server process went on")


def test_the_server_process_leaves_a_gateway_gone_with_a_change_unanswered() -> None:
    """The gateway goes while the server applies its changes: the answer to one fails
    (a broken pipe, as when the gateway is killed mid-burst), and the process leaves
    all the same, instead of serving stale values on the port for ever."""
    with _server_process() as (proc, ours, control):
        ours.shutdown(socket.SHUT_RD)  # gone: nothing the server answers arrives
        control.send({"op": "set", "id": 2, "serial": 2, "records": [[NAME, [make_value()]]]})
        assert _ends(proc) == 0


def test_a_server_process_that_cannot_apply_a_change_says_so_and_leaves() -> None:
    """It does not go on serving without taking changes: the gateway then starts a new
    one, which loads every record."""
    with _server_process() as (proc, _, control):
        control.send({"op": "set", "id": 2, "serial": 2, "records": [[NAME, ["caf\u00e9"]]]})
        said = control.receive()
        assert said is not None and said["op"] == "log"
        assert said["message"].startswith(
            "builtin DNS: a change from the gateway could not be applied"
        )
        assert _ends(proc) == 1


def test_the_serial_keeps_growing_across_gateway_restarts(tmp_path: Path) -> None:
    port, dns_port = free_port(), free_port()
    settings = builtin_settings(tmp_path, port, dns_port, PROPAGATION_CHECK="off")
    serials = []
    for _ in range(2):
        with running_gateway(tmp_path, settings):
            for _ in range(3):
                answer = requests.post(f"http://127.0.0.1:{port}/", timeout=20, json={
                    "argument": "setup", "domain_name": "example.test",
                    "challenge_content": make_value()})
                assert answer.status_code == 201, answer.text
            serials.append(asyncio.run(_serial(dns_port)))
    # The gateway keeps the serial in its state (gateway/state/sqlite.py).
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "builtin.sqlite3")) as db:
        stored = db.execute("SELECT serial FROM zone_serial").fetchone()[0]
    assert stored == serials[-1]
    assert serials[1] > serials[0]


async def test_the_serial_file_is_written_before_the_change_is_served(tmp_path: Path) -> None:
    port = free_port()
    store = FileSerialStore(tmp_path / "serial")
    ahead = int(time.time()) + 100_000  # ahead of the clock: the next must still be newer
    store.save(ahead)
    provider = BuiltinProvider(_settings(port), MANAGED, store)
    await provider.open()
    try:
        assert await _serial(port) == ahead + 1
        await provider.add_txt(NAME, make_value())
        assert store.load() == await _serial(port) == ahead + 2
    finally:
        await provider.aclose()


async def test_an_unreadable_serial_file_is_a_provider_error(tmp_path: Path) -> None:
    (tmp_path / "serial").write_text("garbage\n")
    store = FileSerialStore(tmp_path / "serial")
    provider = BuiltinProvider(_settings(free_port()), MANAGED, store)
    with pytest.raises(ProviderError, match="does not hold a SOA serial"):
        await provider.open()
    assert provider.server is None



@pytest.mark.parametrize("waiting_for", ["restart", "reader"])
async def test_closing_keeps_the_callers_own_cancellation(waiting_for: str) -> None:
    """A close() cancelled while it waits for the restart task, or for the reader of the
    control socket, is cancelled: the caller does not go on as if it had closed."""
    server = ServerProcess(
        ServerConfig(managed=MANAGED, zone=None, nameservers=("ns1.gw.example.net",), ttl=60),
        lambda: ([], 1),
    )
    task = asyncio.create_task(asyncio.sleep(3600))
    if waiting_for == "restart":
        server._restart_task = task
    else:
        server._reader_task = task
    await assert_cancellation_reaches_the_caller(server.close)
