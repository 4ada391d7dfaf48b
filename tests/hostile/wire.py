"""Requests to a gateway process as they cross the wire, from a chosen source address.

Linux routes all of 127.0.0.0/8 to the loopback interface, so a client may
bind to 127.0.0.2, 127.0.0.3, ... and reach a gateway on 127.0.0.1 from as
many distinct addresses as a test needs: allowed hosts, refused hosts, a
trusted proxy, a flood from hundreds of addresses.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.gateway.procs import GatewayProcess
from tests.hostile.conftest import Answer


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def send(
    port: int,
    method: str,
    path: str,
    *,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
    body: Any = None,
    timeout: float = 60.0,
) -> Answer:
    """One request on a new connection from *source* to the gateway on 127.0.0.1:*port*."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0)
    )
    try:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        return Answer(response.status, response.read(), dict(response.getheaders()))
    finally:
        conn.close()


@dataclass
class WireGateway:
    """A gateway process and its port, for :func:`send`; a test adds what it keeps."""

    process: GatewayProcess
    port: int

    def call(self, method: str, path: str, **kw: Any) -> Answer:
        """:func:`send` to this gateway (*kw*: ``source``, ``headers``, ``body``, ``timeout``)."""
        return send(self.port, method, path, **kw)


def unread(port: int, client: socket.socket) -> int | None:
    """Bytes from *client* that the server listening on 127.0.0.1:*port* has not read
    yet (its socket's receive queue, from /proc/net/tcp); None if there is no such
    connection. Lets a test wait until a server has taken what it sent, without
    sleeping."""
    local = f"0100007F:{port:04X}"
    remote = f"{_hex_address(client.getsockname()[0])}:{client.getsockname()[1]:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[2] == remote:
            return int(fields[4].partition(":")[2], 16)
    return None


def _hex_address(address: str) -> str:
    """An IPv4 address as /proc/net/tcp writes it (host byte order, little-endian here)."""
    return socket.inet_aton(address)[::-1].hex().upper()


def read_frame(sock: socket.socket) -> bytes | None:
    """One DNS message over TCP (RFC 7766: two bytes of length, then the message);
    None if the server hung up first."""
    head = _receive(sock, 2)
    return None if head is None else _receive(sock, int.from_bytes(head, "big"))


def _receive(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
