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
from typing import Any

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
