"""The gateway's HTTP listeners: every connection bounded in time and in number.

aiohttp's server keeps a connection for as long as the client likes until a
request head is complete: an idle, a dripping or a TLS-silent client holds a
file descriptor for an hour, and a few hundred of them exhaust the open-file
limit, after which ``accept`` fails for everyone. So each listener
(:class:`GuardedSite`) accepts connections itself, one at a time, and

* counts each before anything else happens (before the TLS handshake too):
  past ``MAX_CONNECTIONS_PER_CLIENT`` open connections from one address (an
  IPv6 /64; peers in ``ALLOWED_PROXIES`` are exempt) a new one is closed at
  once, with a 503 on plain HTTP; past ``MAX_CONNECTIONS`` in all, another
  connection makes way (:meth:`ConnectionGuard._make_way`), or, if none may,
  the new one is closed. asyncio's own accept loop would take up to a
  backlog's worth of descriptors per round before any of this could run;
* puts a :class:`_Connection` in front of aiohttp's request handler, which
  runs the TLS handshake itself (``loop.start_tls``), then hands the
  connection to aiohttp; while the gateway has no certificate yet it runs the
  handshake on its own TLS object instead, so that the client gets the alert
  that refuses it (asyncio's TLS transport drops the alert of a failed
  handshake, and the client would see a reset), and
* closes a connection whose request head is not complete within
  ``HTTP_HEADER_TIMEOUT`` of its opening (handshake included) or of the head's
  first byte (408 if part of a request came), and a kept-alive connection
  idle for ``HTTP_IDLE_TIMEOUT``. The data flowing through does not reset
  these clocks: dripping a byte at a time does not help. A request being
  handled has no clock here; its body has ``HTTP_BODY_TIMEOUT``
  (:mod:`gateway.bodies`).

The middleware :meth:`ConnectionGuard.middleware` tells each connection when a
request starts and ends. At start-up :func:`connection_budget` raises the
soft open-file limit to the hard one and says how many connections fit, so
that ``accept`` never fails for lack of descriptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import resource
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from gateway.auth import client_key, in_networks
from gateway.config import ConnectionLimits
from gateway.live import Live

log = logging.getLogger(__name__)

# Descriptors the process needs besides connections: the interpreter, the
# journal and account files, the provider's own sockets, the builtin DNS server.
RESERVED_FILES = 64
# Each connection may need a second descriptor while its request runs: the
# provider call or the propagation check it makes.
FILES_PER_CONNECTION = 2
# After a 408 or a close, how long a peer that does not read may keep us waiting.
CLOSE_GRACE = 1.0
# App data that may arrive between the end of a TLS handshake and the hand-over.
EARLY_DATA_MAX = 65536
# Connections taken per wake-up of a listener, so that one busy listener does not
# keep the event loop to itself.
ACCEPT_BATCH = 64
# How long to stop accepting when the system has no descriptor for a new one.
ACCEPT_PAUSE = 0.1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def connection_budget() -> tuple[int, int]:
    """(open-file limit, connections that fit in it), raising the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # The hard limit may be "unlimited", above what the kernel allows (nr_open).
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return soft, 1_000_000
    return soft, max(1, (soft - RESERVED_FILES) // FILES_PER_CONNECTION)


class _Throttled:
    """A warning at most every *interval* seconds, counting what it left out."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = -interval
        self._skipped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            self._skipped += 1
            return
        if self._skipped:
            message += " (and %d more since the last such line)"
            args = (*args, self._skipped)
        self._last, self._skipped = now, 0
        log.warning(message, *args)


class ConnectionGuard:
    """The connections of every listener: their count, their clocks, their hand-over."""

    def __init__(
        self,
        live: Live,
        tls: ssl.SSLContext | None,
        budget: int,
        tls_refusal: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> None:
        self.live = live
        self.tls = tls
        # While it answers a context, every handshake is refused with that context's alert.
        self.tls_refusal = tls_refusal or (lambda: None)
        self.budget = budget
        self.handlers: Callable[[], RequestHandler] | None = None  # aiohttp's, once set up
        self._open: dict[_Connection, None] = {}
        self._per_client: Counter[str] = Counter()
        self._by_handler: dict[RequestHandler, _Connection] = {}
        self._connecting: set[asyncio.Task[None]] = set()
        self._refusals = _Throttled()

    @property
    def limits(self) -> ConnectionLimits:
        return self.live.config.connections

    @property
    def max_connections(self) -> int:
        return min(self.limits.max_connections, self.budget)

    # -- accepting -----------------------------------------------------------

    def listen(self, sock: socket.socket) -> None:
        if sock.fileno() >= 0:  # not closed (a pause may outlast its listener)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._accept, sock)

    def unlisten(self, sock: socket.socket) -> None:
        asyncio.get_running_loop().remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of descriptors or memory (something besides connections holds
                # them): pause rather than spin, as asyncio does.
                self._refusals.warning("cannot accept a connection: %s", exc.strerror)
                self.unlisten(sock)
                asyncio.get_running_loop().call_later(ACCEPT_PAUSE, self.listen, sock)
                return
            self._take(conn, str(addr[0]))

    def _take(self, sock: socket.socket, host: str) -> None:
        key = client_key(host)
        refusal = self._admission(key, host)
        if refusal is not None:
            self._refusals.warning("connection refused: %s", refusal)
            if self.tls is None:
                with contextlib.suppress(OSError):
                    sock.send(
                        _answer(
                            503, "Service Unavailable", "unavailable", refusal, "Retry-After: 5\r\n"
                        ),
                        socket.MSG_DONTWAIT,
                    )
            sock.close()
            return
        sock.setblocking(False)
        conn = _Connection(self, key)
        self._open[conn] = None
        self._per_client[key] += 1
        task = asyncio.get_running_loop().create_task(self._connect(conn, sock))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, conn: _Connection, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(lambda: conn, sock)
        except Exception as exc:
            log.debug("connection from %s lost at once: %s", conn.client, exc)
            sock.close()
            self.release(conn)

    def _exempt(self, host: str) -> bool:
        """Whether the peer *host* is a trusted proxy. Judged by its own address: an
        IPv6 peer's key is its /64, which is no address."""
        try:
            addr = ipaddress.ip_address(host.partition("%")[0])
        except ValueError:
            return False
        return in_networks(self.live.config.auth.allowed_proxies, addr)

    def _admission(self, key: str, host: str) -> str | None:
        """Why a new connection from *host* (counted as *key*) may not come in, if it
        may not."""
        if self._per_client[key] >= self.limits.max_per_client and not self._exempt(host):
            return f"too many connections from {key} (MAX_CONNECTIONS_PER_CLIENT)"
        if len(self._open) >= self.max_connections:
            victim = self._make_way(key)
            if victim is None:
                return "too many connections (MAX_CONNECTIONS)"
            victim.abort()
        return None

    def _make_way(self, key: str) -> _Connection | None:
        """The connection to close for a newcomer from *key* when every slot is taken.

        The one idle the longest, if any. Otherwise the oldest connection not being
        served (a request head or a TLS handshake on its way) of the address
        holding the most, if that address holds at least two more than *key*:
        many addresses each under ``MAX_CONNECTIONS_PER_CLIENT``, all dripping
        heads, would otherwise lock everyone else out. Taking from the biggest
        holder, and only when the newcomer then holds no more than it, never
        turns the order round (no two addresses take turns evicting each other),
        and an address with one connection never loses it: fresh addresses
        cannot push out a client that holds few. A request being handled is
        never closed. Everyone is refused only when ``MAX_CONNECTIONS``
        addresses hold one connection each.
        """
        idle = min((c for c in self._open if c.idle), key=lambda c: c.idle_since, default=None)
        if idle is not None:
            return idle
        floor = self._per_client[key] + 2
        unserved = (
            c
            for c in self._open
            if not c.busy and not c.closed and self._per_client[c.client] >= floor
        )
        return max(unserved, key=lambda c: (self._per_client[c.client], -c.opened), default=None)

    def release(self, conn: _Connection) -> None:
        """Count *conn* out (once, however often it is called)."""
        if conn not in self._open:
            return
        del self._open[conn]
        self._per_client[conn.client] -= 1
        if self._per_client[conn.client] <= 0:
            del self._per_client[conn.client]

    def attach(self, conn: _Connection, transport: asyncio.Transport) -> RequestHandler:
        assert self.handlers is not None, "the guard is used before aiohttp is set up"
        handler = self.handlers()
        self._by_handler[handler] = conn
        handler.connection_made(transport)
        return handler

    def detach(self, handler: RequestHandler) -> None:
        self._by_handler.pop(handler, None)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Stop the connection's clock while a request is handled; the idle clock after it."""
        conn = self._by_handler.get(request.protocol)
        if conn is None:  # not one of our listeners' (a test client)
            return await handler(request)
        conn.request_started()
        try:
            return await handler(request)
        finally:
            conn.request_finished()

    def close_all(self) -> None:
        """Shutdown: drop the connections aiohttp does not know of (TLS handshakes)."""
        for conn in list(self._open):
            conn.abort()


def _answer(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": code, "message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json; charset=utf-8\r\nCache-Control: no-store\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    """One accepted connection, in front of aiohttp's handler for it."""

    def __init__(self, guard: ConnectionGuard, client: str) -> None:
        self.guard = guard
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.raw: asyncio.Transport | None = None  # the TCP connection
        self.transport: asyncio.Transport | None = None  # what HTTP runs on (TLS or TCP)
        self.handler: RequestHandler | None = None
        self.busy = False  # a request is being handled
        self.partial = False  # part of a request head has come
        self.opened = self.idle_since = self.loop.time()
        self.closed = False
        self._after_response = False
        self._timer: asyncio.TimerHandle | None = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._early_eof = False
        self._handshake: asyncio.Task[None] | None = None  # held: a task must be referenced
        self._refusing: _Refusal | None = None
        self._buffered = -1

    @property
    def idle(self) -> bool:
        """Open, and neither handling a request nor in the middle of receiving one."""
        return not self.busy and not self.partial and not self.closed

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called once, for the TCP connection: start_tls does not call it again.
        assert isinstance(transport, asyncio.Transport)
        self.raw = transport
        if self.closed:  # made way for another before it got here
            transport.abort()
            return
        self._arm(self.guard.limits.header_timeout)
        if self.guard.tls is None:
            self._attach(transport)
        elif (refusal := self.guard.tls_refusal()) is not None:
            self._refusing = _Refusal(refusal)
        else:
            self._handshake = self.loop.create_task(self._start_tls(transport, self.guard.tls))

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        limits = self.guard.limits
        try:
            transport = await self.loop.start_tls(
                raw,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=limits.header_timeout,
                ssl_shutdown_timeout=limits.header_timeout,
            )
        except Exception as exc:  # a failed handshake is the client's business
            log.debug("TLS handshake with %s failed: %s", self.client, exc)
            raw.abort()
            self._lost()
            return
        if transport is None or self.closed:
            if transport is not None:
                transport.abort()
            self._lost()
            return
        self._attach(transport)

    def _attach(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.handler = self.guard.attach(self, transport)
        early, self._early = self._early, []
        for data in early:
            self.handler.data_received(data)
        if self._early_eof:
            self.handler.eof_received()

    def data_received(self, data: bytes) -> None:
        if self._refusing is not None:
            self._refuse(self._refusing, data)
            return
        if not self.busy and not self.partial:
            self.partial = True
            if self._after_response:
                # The next request has begun: it has as long for its head as a new one.
                self._arm(self.guard.limits.header_timeout)
        if self.handler is not None:
            self.handler.data_received(data)
            return
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > EARLY_DATA_MAX:
            self.abort()

    def eof_received(self) -> None:
        # Returning None closes the connection, as aiohttp's handler wants it.
        if self.handler is not None:
            self.handler.eof_received()
        else:
            self._early_eof = True

    def pause_writing(self) -> None:
        if self.handler is not None:
            self.handler.pause_writing()

    def resume_writing(self) -> None:
        if self.handler is not None:
            self.handler.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost()
        if self.handler is not None:
            self.guard.detach(self.handler)
            self.handler.connection_lost(exc)

    def _refuse(self, refusing: _Refusal, data: bytes) -> None:
        """Feed the refused handshake; once it ends, send its alert and close."""
        assert self.raw is not None
        self._early_size += len(data)
        if self._early_size > EARLY_DATA_MAX:  # no ClientHello is that long
            self.abort()
            return
        ended, reply = refusing.feed(data)
        if reply:
            self.raw.write(reply)
        if ended:
            log.debug("TLS handshake with %s refused: %s", self.client, ended)
            self._refusing = None
            # close() sends what is buffered first; a peer that does not read gets CLOSE_GRACE.
            self.raw.close()
            self.loop.call_later(CLOSE_GRACE, self.abort)

    # -- requests (from the middleware) ------------------------------------

    def request_started(self) -> None:
        self.busy = True
        self.partial = False
        self._cancel_timer()

    def request_finished(self) -> None:
        self.busy = False
        self._after_response = True
        self.idle_since = self.loop.time()
        self._buffered = -1
        self._arm(self.guard.limits.idle_timeout)

    # -- clocks ------------------------------------------------------------

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(delay, self._expire)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.closed or self.busy:
            return
        transport = self.transport
        if not self.partial and transport is not None:
            # An answer may still be on its way to a client that reads slowly: give it
            # time while the buffer shrinks.
            buffered = transport.get_write_buffer_size()
            if buffered and (self._buffered < 0 or buffered < self._buffered):
                self._buffered = buffered
                self._arm(self.guard.limits.idle_timeout)
                return
        if self.partial and transport is not None and not transport.get_write_buffer_size():
            limit = self.guard.limits.header_timeout
            transport.write(
                _answer(
                    408,
                    "Request Timeout",
                    "request_timeout",
                    f"the request head did not arrive within {limit:g}s (HTTP_HEADER_TIMEOUT)",
                )
            )
            transport.close()
            self.loop.call_later(CLOSE_GRACE, self.abort)
            return
        self.abort()

    # -- ending ------------------------------------------------------------

    def abort(self) -> None:
        """Close at once, without waiting for anything (a TLS close_notify included)."""
        self.closed = True
        self._cancel_timer()
        for transport in (self.transport, self.raw):
            if transport is not None:
                transport.abort()
        self.guard.release(self)

    def _lost(self) -> None:
        self.closed = True
        self._cancel_timer()
        self.guard.release(self)


class _Refusal:
    """A TLS handshake run on memory buffers with a context that refuses it."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def feed(self, data: bytes) -> tuple[str, bytes]:
        """(why it ended, or "" while it goes on; the bytes to send the client)."""
        self.incoming.write(data)
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            ended = ""
        except ssl.SSLError as exc:
            ended = exc.reason or str(exc)
        else:  # the context refuses every handshake: not expected, but never serve it
            ended = "handshake completed on a refusing context"
        return ended, self.outgoing.read()


def listening_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for *host* (None: every interface), as
    ``loop.create_server`` makes them."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # One socket per family, as asyncio does: "::" must not take IPv4 too.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class GuardedSite(web.BaseSite):
    """A TCP listener whose connections a :class:`ConnectionGuard` accepts."""

    def __init__(
        self,
        runner: web.BaseRunner,
        guard: ConnectionGuard,
        host: str | None,
        port: int,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard = guard
        self._host = host
        self._port = port
        self._sockets: list[socket.socket] = []

    @property
    def name(self) -> str:
        scheme = "https" if self._guard.tls else "http"
        host = self._host or "0.0.0.0"  # noqa: S104 - a description, not a bind
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        self._sockets = listening_sockets(self._host, self._port, self._backlog)
        for sock in self._sockets:
            self._guard.listen(sock)

    async def stop(self) -> None:
        for sock in self._sockets:
            self._guard.unlisten(sock)
            sock.close()
        self._sockets = []
        await super().stop()
