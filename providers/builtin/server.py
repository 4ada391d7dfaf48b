"""The builtin DNS server: zone data, answers and listeners put together.

:class:`DnsServer` holds the :class:`providers.builtin.store.Answers`, answers
UDP and TCP on the addresses it is told to listen on, and takes changes
(:meth:`DnsServer.set_values`) from the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from providers.builtin.network import Responder, TcpLimits, TcpServer
from providers.builtin.rrl import IPNetwork, RateLimiter
from providers.builtin.store import Answers, Labels, Served

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerConfig:
    """What the server needs to know besides its records."""

    served: Served
    nameservers: tuple[Labels, ...]
    ttl: int
    rate_limit: int = 20
    rate_limit_slip: int = 2
    rate_limit_exempt: tuple[IPNetwork, ...] = ()
    tcp: TcpLimits = field(default_factory=TcpLimits)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, responder: Responder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's own UDP transport does not subclass DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        reply = self.responder.udp(data, str(addr[0]))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a client that went away: nothing to do.
        log.debug("builtin DNS: UDP error: %s", exc)


def udp_socket(host: str, port: int) -> socket.socket:
    """A bound UDP socket; raises OSError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # So that 0.0.0.0:53 and [::]:53 can both be listed.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        # No SO_REUSEADDR: on UDP it would let a second server share the
        # port silently instead of failing here.
        sock.setblocking(False)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class DnsServer:
    """Answers UDP and TCP queries from :attr:`answers` on every address it listens on."""

    def __init__(self, config: ServerConfig, serial: int, close_timeout: float = 5.0) -> None:
        self.config = config
        self.close_timeout = close_timeout
        self.answers = Answers(config.served, config.nameservers, config.ttl, serial)
        limiter = (
            RateLimiter(config.rate_limit, config.rate_limit_slip, config.rate_limit_exempt)
            if config.rate_limit
            else None
        )
        self.responder = Responder(self.answers, limiter)
        self.tcp = TcpServer(self.responder.tcp, config.tcp)
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp_servers: list[asyncio.Server] = []

    def set_values(self, name: Labels, values: Iterable[bytes], serial: int) -> None:
        self.answers.set_values(name, values, serial)

    def load(self, records: Iterable[tuple[Labels, Iterable[bytes]]], serial: int) -> None:
        self.answers.load(records, serial)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs the UDP listeners are bound to."""
        return [t.get_extra_info("sockname")[:2] for t in self._udp]

    async def listen(self, host: str, port: int) -> None:
        """Answer UDP and TCP on *host*:*port*; raises OSError."""
        loop = asyncio.get_running_loop()
        self._tcp_servers.append(
            await asyncio.start_server(self.tcp.handle, host, port, reuse_address=True)
        )
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.responder), sock=udp_socket(host, port)
        )
        self._udp.append(transport)

    async def close(self) -> None:
        udp, self._udp = self._udp, []
        servers, self._tcp_servers = self._tcp_servers, []
        for transport in udp:
            transport.close()
        for server in servers:
            server.close()
        await self.tcp.close()
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), self.close_timeout)
