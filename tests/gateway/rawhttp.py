"""HTTP/1.1 by hand on a socket, for tests that choose what goes on the wire and when."""

from __future__ import annotations

import socket


def connect(port: int, source: str | None = None, host: str = "127.0.0.1") -> socket.socket:
    """A blocking TCP connection to *host*:*port* (Nagle off), from *source* if given."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        sock.bind((source, 0))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(15)
    sock.connect((host, port))
    return sock


def closed_by_gateway(sock: socket.socket) -> bool:
    """True once the other end has closed or reset *sock* (reads nothing else)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body);
    :class:`ConnectionError` if the connection closes first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed before a full response head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed inside the response body")
        body += chunk
    return status, headers, body[:length]
