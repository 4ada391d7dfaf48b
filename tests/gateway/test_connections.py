"""Connections held open before any request: bounded in time and number, on a real process.

The gateway runs as ``python -m gateway`` (tests.gateway.procs) on 127.0.0.1,
in the attack tests under ``ulimit -n 256``, with short ``HTTP_HEADER_TIMEOUT``
and ``HTTP_IDLE_TIMEOUT``. The attacker connects from 127.0.0.2 (Linux routes
all of 127.0.0.0/8 to loopback, so a socket bound there is another client
address) and holds hundreds of connections: kept alive after a request, dripping
a header byte at a time, silent, and over TLS also silent after the handshake
or before it. Meanwhile 127.0.0.1 must still get ``/healthz`` and a setup
through, and every one of the attacker's connections must end up closed by the
gateway. Sockets are opened without blocking, so the attack takes no longer
against a gateway that stopped accepting.
"""

from __future__ import annotations

import contextlib
import errno
import json
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from gateway.listeners import client_key
from tests.conftest import make_value
from tests.gateway import filedns
from tests.gateway.certs import CA
from tests.gateway.filedns import Zone
from tests.gateway.procs import GatewayProcess, gateway_settings, running_gateway
from tests.gateway.rawhttp import closed_by_gateway, connect, read_response
from tests.system import free_port, wait_until

ATTACKER, PROXY, CLIENT = "127.0.0.2", "127.0.0.3", "127.0.0.1"
OPEN_FILES = 256
BATCH = 64  # connections opened at once: half the gateway's listen queue
FAST = {"HTTP_HEADER_TIMEOUT": "2s", "HTTP_IDLE_TIMEOUT": "2s", "HTTP_BODY_TIMEOUT": "2s"}


def accept_queue(port: int) -> int:
    """Connections waiting in the IPv4 listen queue of *port* (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:  # LISTEN
            return int(fields[4].split(":")[1], 16)
    return 0


def request_bytes(port: int, path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


@dataclass(eq=False)
class Held:
    """One of the attacker's connections."""

    kind: str
    sock: socket.socket | ssl.SSLSocket
    received: bytes = b""
    closed: bool = False

    def poll(self) -> bool:
        """Read what came without blocking; True once the gateway has closed it."""
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return False
            except OSError as exc:  # reset, or an unfinished TLS session cut off
                if exc.errno == errno.ENOTCONN:
                    return False  # still connecting: the gateway has not accepted it
                self.closed = True
            else:
                self.received += data
                self.closed = not data
        return True


@dataclass
class Attack:
    """Hundreds of connections from one address, of several kinds, held open."""

    port: int
    tls: ssl.SSLContext | None = None
    held: list[Held] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def open(self, kinds: list[str], rounds: int) -> None:
        """*rounds* connections of each kind, interleaved."""
        opened = self._connect_all(len(kinds) * rounds, kinds)
        with ThreadPoolExecutor(32) as pool:
            self.held = list(pool.map(lambda ks: self._start(*ks), opened))

    def _connect_all(self, count: int, kinds: list[str]) -> list[tuple[str, socket.socket]]:
        """*count* connections, a batch at a time: a burst larger than the listen queue
        would leave connections the kernel dropped unseen, which only the client
        believes open. Each batch may take 5 s (it does, if the gateway stopped
        accepting)."""
        opened: list[tuple[str, socket.socket]] = []
        while len(opened) < count:
            batch = [self._connect() for _ in range(min(BATCH, count - len(opened)))]
            deadline = time.monotonic() + 5
            connected: set[socket.socket] = set()
            while time.monotonic() < deadline and (
                len(connected) < len(batch) or accept_queue(self.port)
            ):
                waiting = [s for s in batch if s not in connected]
                connected.update(select.select([], waiting, [], 0.05)[1])
            opened += [(kinds[(len(opened) + n) % len(kinds)], s) for n, s in enumerate(batch)]
        return opened

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((ATTACKER, 0))
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        return sock

    def _start(self, kind: str, sock: socket.socket) -> Held:
        wrapped: socket.socket | ssl.SSLSocket = sock
        if self.tls is not None and kind != "silent":
            sock.settimeout(3)
            try:
                wrapped = self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
            except OSError:  # refused, or never accepted
                return Held(kind, sock, closed=True)
        with contextlib.suppress(OSError):
            if kind == "idle":  # one request, answered, then nothing: kept alive
                wrapped.sendall(request_bytes(self.port))
            elif kind == "drip":
                wrapped.sendall(b"G")
        wrapped.setblocking(False)
        return Held(kind, wrapped)

    @contextlib.contextmanager
    def dripping(self, interval: float = 0.3) -> Iterator[None]:
        """Send one more header byte on every dripping connection each *interval*."""

        def drip() -> None:
            line = b"ET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 4000
            n = 0
            while not self._stop.wait(interval):
                byte = line[min(n, len(line) - 1) : min(n, len(line) - 1) + 1]
                n += 1
                for held in self.held:
                    if held.kind == "drip" and not held.closed:
                        with contextlib.suppress(OSError, ssl.SSLError):
                            held.sock.send(byte)

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def still_open(self) -> list[Held]:
        return [held for held in self.held if not held.poll()]

    def close(self) -> None:
        for held in self.held:
            held.sock.close()


def assert_served_meanwhile(url: str, verify: str | bool = False) -> None:
    """Another address gets /healthz and a setup through."""
    health = requests.get(f"{url}/healthz", timeout=10, verify=verify)
    assert health.status_code == 200
    body = {"argument": "setup", "domain_name": "example.test", "challenge_content": make_value()}
    setup = requests.post(f"{url}/", json=body, timeout=10, verify=verify)
    assert setup.status_code == 201, setup.text


def assert_all_closed(attack: Attack, gw: GatewayProcess) -> None:
    try:
        wait_until(lambda: not attack.still_open(), "the gateway to close every held connection",
                   timeout=60)
    except AssertionError:
        kinds = sorted(h.kind for h in attack.still_open())
        raise AssertionError(f"still open: {kinds}\n{gw.stderr[-3000:]}") from None
    dripped = [h.received for h in attack.held if h.kind == "drip"]
    # Dripping a byte at a time does not buy time: the head has HTTP_HEADER_TIMEOUT.
    assert any(b" 408 " in r and b"HTTP_HEADER_TIMEOUT" in r for r in dripped), dripped
    assert "out of system resource" not in gw.stderr, gw.stderr
    assert "does not fit in the open-file limit" in gw.stderr


def test_one_address_holding_hundreds_of_connections_locks_nobody_out(tmp_path: Path) -> None:
    port = free_port()
    attack = Attack(port)
    settings = gateway_settings(tmp_path, port, **FAST)
    with running_gateway(tmp_path, settings, open_files=OPEN_FILES) as gw:
        try:
            attack.open(["idle", "drip", "silent"], 100)
            with attack.dripping():
                assert_served_meanwhile(f"http://127.0.0.1:{port}")
                assert_all_closed(attack, gw)
            refused = [h.received for h in attack.held if b" 503 " in h.received]
            assert refused and all(b"MAX_CONNECTIONS_PER_CLIENT" in r for r in refused)
        finally:
            attack.close()


def test_tls_connections_silent_after_or_before_the_handshake_are_closed(
    tmp_path: Path,
) -> None:
    ca = CA()
    pair = ca.issue(1)
    (tmp_path / "ca.pem").write_bytes(ca.pem())
    (tmp_path / "cert.pem").write_bytes(pair.cert)
    (tmp_path / "key.pem").write_bytes(pair.key)
    (tmp_path / "key.pem").chmod(0o600)
    port = free_port()
    attack = Attack(port, ssl.create_default_context(cafile=str(tmp_path / "ca.pem")))
    settings = gateway_settings(
        tmp_path,
        port,
        SSL_CERT=str(tmp_path / "cert.pem"),
        SSL_KEY=str(tmp_path / "key.pem"),
        **FAST,
    )
    with running_gateway(tmp_path, settings, open_files=OPEN_FILES) as gw:
        try:
            # "tls": handshake, then nothing; "silent": not even a handshake.
            attack.open(["idle", "drip", "tls", "silent"], 75)
            with attack.dripping():
                assert_served_meanwhile(f"https://127.0.0.1:{port}", str(tmp_path / "ca.pem"))
                assert_all_closed(attack, gw)
        finally:
            attack.close()


# --- the caps, exactly ------------------------------------------------------------------


def ask(sock: socket.socket, port: int) -> tuple[int, bytes]:
    """GET /healthz on *sock*: the status and body (0 if the connection was closed)."""
    try:
        sock.sendall(request_bytes(port))
        status, _, body = read_response(sock)
    except OSError:
        return 0, b""
    return status, body


def test_a_trusted_proxy_is_exempt_from_the_per_client_cap(tmp_path: Path) -> None:
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, ALLOWED_PROXIES=PROXY, MAX_CONNECTIONS_PER_CLIENT="5"
    )
    with running_gateway(tmp_path, settings):
        attacker = [connect(port, ATTACKER) for _ in range(12)]
        proxy = [connect(port, PROXY) for _ in range(12)]
        try:
            answers = [ask(sock, port) for sock in attacker]
            assert [status for status, _ in answers].count(200) == 5, answers
            refused = [body for status, body in answers if status == 503]
            assert len(refused) == 7
            assert all("MAX_CONNECTIONS_PER_CLIENT" in json.loads(b)["message"] for b in refused)
            assert [ask(sock, port)[0] for sock in proxy] == [200] * 12
        finally:
            for sock in attacker + proxy:
                sock.close()


def test_a_trusted_ipv6_proxy_is_exempt_from_the_per_client_cap(tmp_path: Path) -> None:
    """An IPv6 peer is counted as its /64, which is no address: whether it is a
    trusted proxy is judged by its own address."""
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, LISTEN=f"[::1]:{port}", ALLOWED_PROXIES="::1",
        MAX_CONNECTIONS_PER_CLIENT="5",
    )
    with running_gateway(tmp_path, settings):
        proxy = [socket.create_connection(("::1", port), timeout=15) for _ in range(12)]
        try:
            assert [ask(sock, port)[0] for sock in proxy] == [200] * 12
        finally:
            for sock in proxy:
                sock.close()


def test_when_every_slot_is_taken_an_idle_connection_makes_way(tmp_path: Path) -> None:
    zone = Zone(tmp_path / "zone.json")
    provider = filedns.write_provider(tmp_path / "filedns.py", zone.path, before={"setup": 3})
    port = free_port()
    settings = gateway_settings(
        tmp_path,
        port,
        **filedns.settings(provider),
        ALLOWED_HOSTS=f"{ATTACKER}, {CLIENT}",
        MAX_CONNECTIONS="4",
    )
    with running_gateway(tmp_path, settings):
        held = [connect(port, ATTACKER) for _ in range(4)]
        try:
            # Four requests being handled: none of their connections can make way.
            for n, sock in enumerate(held):
                body = json.dumps(
                    {
                        "argument": "setup",
                        "domain_name": f"n{n}.example.test",
                        "challenge_content": make_value(),
                    }
                ).encode()
                sock.sendall(
                    f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
            wait_until(lambda: len(zone.calls()) == 4, "the four setups to reach the provider",
                       timeout=60)
            with contextlib.closing(connect(port, CLIENT)) as sock:
                status, body = ask(sock, port)
            assert status == 503 and b"MAX_CONNECTIONS" in body

            # Answered, the four are idle: the one idle the longest makes way.
            assert [read_response(sock)[0] for sock in held] == [201] * 4
            with contextlib.closing(connect(port, CLIENT)) as sock:
                assert ask(sock, port)[0] == 200
            wait_until(
                lambda: sum(closed_by_gateway(sock) for sock in held) == 1,
                "one idle connection to go",
                timeout=60,
            )
        finally:
            for sock in held:
                sock.close()


def test_a_body_that_stops_coming_is_408(tmp_path: Path) -> None:
    port = free_port()
    settings = gateway_settings(tmp_path, port, HTTP_BODY_TIMEOUT="1s")
    with running_gateway(tmp_path, settings), contextlib.closing(connect(port, CLIENT)) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n"
            b'{"argument": "setup",'
        )
        status, _, body = read_response(sock)
    assert status == 408
    assert "HTTP_BODY_TIMEOUT" in json.loads(body)["message"]


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
    ],
)
def test_an_ipv6_client_counts_per_64(peer: str, key: str) -> None:
    assert client_key(peer) == key
