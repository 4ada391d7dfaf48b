"""The gateway's HTTP as it arrives on the wire, against a real gateway process.

Requests are written byte by byte on raw sockets (TCP_NODELAY, a pause between
the pieces) so they reach the gateway in the segments a test chooses: a body
split across segments, a chunked body sent chunk by chunk. The gateway runs
as ``python -m gateway`` (tests.gateway.procs) on the in-memory provider,
admitting 127.0.0.1 by address.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, gateway_settings, running_gateway
from tests.gateway.rawhttp import connect, read_response
from tests.system import free_port

PAUSE = 0.3  # long enough for the gateway to read the first piece on its own


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, int]]:
    where = tmp_path_factory.mktemp("wire")
    port = free_port()
    with running_gateway(where, gateway_settings(where, port)) as gw:
        yield gw, port


def send_in_pieces(sock: socket.socket, pieces: list[bytes]) -> None:
    for n, piece in enumerate(pieces):
        if n:
            time.sleep(PAUSE)
        sock.sendall(piece)


def setup_json(value: str, name: str = "example.test") -> bytes:
    return json.dumps(
        {"argument": "setup", "domain_name": name, "challenge_content": value}
    ).encode()


def head(port: int, extra: str) -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def chunked(port: int, parts: list[bytes]) -> list[bytes]:
    """A request head and *parts* as chunks, one piece each, then the last chunk."""
    chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts]
    return [head(port, "Transfer-Encoding: chunked\r\n"), *chunks, b"0\r\n\r\n"]


# --- a body in several segments --------------------------------------------------------


def test_a_body_split_across_segments_is_read_whole(gateway: tuple[GatewayProcess, int]) -> None:
    gw, port = gateway
    value = make_value()
    body = setup_json(value)
    with connect(port) as sock:
        send_in_pieces(
            sock,
            [head(port, f"Content-Length: {len(body)}\r\n"), body[:25], body[25:60], body[60:]],
        )
        status, _, answer = read_response(sock)
    assert status == 201, (answer, gw.stderr)
    assert json.loads(answer)["value"] == value


def test_a_chunked_body_sent_chunk_by_chunk_is_read_whole(
    gateway: tuple[GatewayProcess, int],
) -> None:
    gw, port = gateway
    value = make_value()
    body = setup_json(value)
    with connect(port) as sock:
        send_in_pieces(sock, chunked(port, [body[:10], body[10:50], body[50:]]))
        status, _, answer = read_response(sock)
    assert status == 201, (answer, gw.stderr)
    assert json.loads(answer)["value"] == value


def test_a_split_body_over_the_limit_is_still_413(gateway: tuple[GatewayProcess, int]) -> None:
    _, port = gateway
    body = b'{"argument": "setup", "pad": "' + b"x" * 9000 + b'"}'
    pieces = [body[i : i + 3000] for i in range(0, len(body), 3000)]
    with connect(port) as sock:
        send_in_pieces(sock, chunked(port, pieces))
        status, _, _ = read_response(sock)
    assert status == 413
