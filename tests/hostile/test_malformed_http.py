"""Requests the HTTP parser refuses cost one rate-limited log line, and never leak
what they held.

aiohttp logged every request it could not parse at ERROR, with a traceback and
the offending bytes quoted: an ``Authorization`` line with a stray control
character, a trailing bare LF, a space before its colon or folded onto a second
line reached the gateway's log with its credentials (base64 is no disguise),
and every client could write a kilobyte of log per junk request (as the builtin
DNS did before issue 12 item 6). Against a real gateway: forty malformed
requests carrying credentials get 400, and the log holds neither the
credentials nor a traceback, and at most one line about them.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.procs import GatewayProcess, gateway_settings, running_gateway
from tests.gateway.rawhttp import connect
from tests.system import free_port

PASSWORD = "Xq7-never-in-a-log"
TOKEN = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
MALFORMED = [
    f"GET /metrics HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {TOKEN}\x01\r\n\r\n",
    f"GET /metrics HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {TOKEN}\x7f\r\n\r\n",
    f"GET /metrics HTTP/1.1\r\nHost: gw\r\nAuthorization : Basic {TOKEN}\r\n\r\n",
    f"GET /metrics HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic {TOKEN}\n\r\n",
    f"GET /metrics HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic\r\n {TOKEN}\r\n\r\n",
    f"GET /metrics?{TOKEN} HTTP/1.1 x\r\nHost: gw\r\n\r\n",
    f"POST / HTTP/1.1\r\nHost: gw\r\nX-Pad: {'a' * 9000}{TOKEN}\r\n\r\n",
    f"POST / HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: {TOKEN}\r\n\r\n",
]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, int]]:
    tmp: Path = tmp_path_factory.mktemp("malformed")
    port = free_port()
    with running_gateway(tmp, gateway_settings(tmp, port)) as gw:
        yield gw, port


def status_of(port: int, raw: str) -> int:
    sock = connect(port)
    try:
        # A request first, so that a junk one is not taken for a port scan (logged at debug).
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n" + raw.encode("latin-1"))
        data = b""
        while data.count(b"HTTP/1.") < 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, ConnectionError):
        pass
    finally:
        sock.close()
    answers = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.")]
    return int(answers[-1].split()[1]) if answers else -1


def test_malformed_requests_are_refused_and_leak_nothing(
    gateway: tuple[GatewayProcess, int],
) -> None:
    gw, port = gateway
    statuses = {status_of(port, raw) for _ in range(5) for raw in MALFORMED}
    assert statuses <= {400, 431, -1}, statuses
    assert 400 in statuses
    log = gw.stderr
    assert TOKEN not in log and PASSWORD not in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    # The parser's refusals only (the test's folder, "malformed0", is in other lines).
    lines = [
        line
        for line in log.splitlines()
        if "aiohttp" in line or "answered 400" in line or "Error handling" in line
    ]
    assert len(lines) <= 1, lines
