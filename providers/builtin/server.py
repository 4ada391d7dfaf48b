"""The builtin DNS server process: it answers queries while the gateway answers HTTP.

The provider (:mod:`providers.builtin.process`) binds the listening sockets and
starts ``python -m providers.builtin FD``, where FD is its end of a
Unix socket pair; the listening sockets are inherited too. In this process:

* each UDP socket has a thread of its own running a blocking loop
  (``recvfrom`` → :meth:`providers.builtin.network.Responder.udp` → ``sendto``):
  no event loop between a query and its answer;
* the main thread runs an asyncio loop for TCP (and zone transfers);
* a control thread reads changes from the gateway and applies them to the
  :class:`providers.builtin.store.Answers` shared by all.

Why a process: a flood of queries keeps a Python thread busy, and in the
gateway's own process it would compete with the HTTP API for the interpreter
lock (or for its event loop). Here it competes only for a CPU, and at a lower
priority (``NICE``): the API and its propagation checks come first, and the DNS
server takes whatever CPU is left, on another core where there is one. A
crash of this process costs no HTTP request; the provider starts it again.

Control protocol, one JSON object per line:

* gateway → server: ``{"op": "config", ...}`` once (:meth:`ServerConfig.to_json`),
  then every record in ``{"op": "load", "id": N, "serial": S, "records": [[name,
  [values]], ...], "first": bool, "last": bool}`` batches (the first replaces what
  there was; nothing is answered before the last), then each change as
  ``{"op": "set", ...}`` with the same fields but ``first`` and ``last``, and a
  reload's settings as ``{"op": "reconfigure", "id": N, "serial": S, "config":
  {...}}`` (the same sockets: everything else may change);
* server → gateway: ``{"op": "done", "id": N}`` once a change is served, and
  ``{"op": "log", "level": L, "name": logger, "message": text}`` for its log lines.

End of file on the control socket means the gateway is gone: the server exits.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dns.tsig

from providers._tsig import TsigSettings
from providers.builtin.network import Responder, TcpLimits, TcpServer
from providers.builtin.rrl import RateLimiter
from providers.builtin.store import Answers, Labels, Served, labels_of
from providers.builtin.transfer import Notifier, Transfers
from providers.builtin.tsigerror import keyring_of

log = logging.getLogger(__name__)

# How much less CPU priority the server process has than the gateway (nice(2)).
NICE = 10
# The largest datagram read; a query is far smaller, so a bigger one is junk anyway.
UDP_READ = 4096
# Longest control line accepted (a batch of records).
MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """What the server process needs besides its records; crosses the control socket as JSON."""

    managed: tuple[str, ...]
    zone: str | None
    nameservers: tuple[str, ...]
    ttl: int
    rate_limit: int = 20
    rate_limit_slip: int = 2
    rate_limit_exempt: tuple[str, ...] = ()
    tcp: TcpLimits = field(default_factory=TcpLimits)
    log_level: int = logging.INFO
    udp_fds: tuple[int, ...] = ()
    tcp_fds: tuple[int, ...] = ()
    # Zone transfers of ``zone``: NOTIFY targets (host, port), and the TSIG key.
    secondaries: tuple[tuple[str, int], ...] = ()
    tsig: TsigSettings | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"op": "config", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServerConfig:
        values = {k: v for k, v in data.items() if k != "op"}
        values["tcp"] = TcpLimits(**values["tcp"])
        for key in ("managed", "nameservers", "rate_limit_exempt", "udp_fds", "tcp_fds"):
            values[key] = tuple(values[key])
        values["secondaries"] = tuple((host, port) for host, port in values["secondaries"])
        if values["tsig"] is not None:
            values["tsig"] = TsigSettings(**values["tsig"])
        return cls(**values)

    def key(self) -> dns.tsig.Key | None:
        return None if self.tsig is None else self.tsig.key()


class Control:
    """The server's end of the control socket: JSON lines in, JSON lines out (thread-safe)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self.sock.sendall(line)

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the gateway is gone."""
        line = self._reader.readline(MAX_LINE)
        if not line:
            return None
        message: dict[str, Any] = json.loads(line)
        return message


class ForwardHandler(logging.Handler):
    """Sends this process's log records to the gateway, which logs them its own way."""

    def __init__(self, control: Control) -> None:
        super().__init__()
        self.control = control

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + logging.Formatter().formatException(record.exc_info)
            self.control.send(
                {"op": "log", "level": record.levelno, "name": record.name, "message": message}
            )
        except Exception:  # a log line must never take the server down
            self.handleError(record)


class DnsServer:
    """Answers from one :class:`Answers` on every inherited socket."""

    def __init__(self, config: ServerConfig, serial: int = 0) -> None:
        self.config = config
        self.answers = Answers(
            _served(config), (labels_of(ns) for ns in config.nameservers), config.ttl, serial
        )
        key = config.key()
        self.transfers = self._transfers(config, key)
        self.notifier = (
            None
            if self.transfers is None
            else Notifier(self.answers, self.transfers.zone, config.secondaries, key)
        )
        self.responder = Responder(self.answers, _limiter(config), self.transfers, keyring_of(key))
        self.tcp = TcpServer(self.responder.tcp, config.tcp)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _transfers(self, config: ServerConfig, key: dns.tsig.Key | None) -> Transfers | None:
        """Transfers of ``config.zone`` to ``config.secondaries``, if both are set."""
        if not (config.zone and config.secondaries):
            return None
        return Transfers(
            self.answers, labels_of(config.zone), (host for host, _ in config.secondaries), key
        )

    def reconfigure(self, config: ServerConfig, serial: int) -> None:
        """Serve under *config* from now on (a reload), on the same sockets and with the
        same records; the secondaries are told at once."""
        old, self.config = self.config, config
        self.answers.reshape(
            _served(config), (labels_of(ns) for ns in config.nameservers), config.ttl, serial
        )
        responder = self.responder
        if _limiter_settings(config) != _limiter_settings(old):
            responder.limiter = _limiter(config)  # its counts start afresh
        key = config.key()
        self.transfers = self._transfers(config, key)
        if self.transfers is None:
            self.notifier = None  # NOTIFY messages being retried end by themselves
        else:
            zone = self.transfers.zone
            if self.notifier is None:
                self.notifier = Notifier(self.answers, zone, (), key)
            self._on_loop(self._announce, self.notifier, zone, config.secondaries, key)
        # Attributes the server threads read per query: a query sees the old or the new.
        responder.transfers = self.transfers
        responder.keyring = keyring_of(key)
        self.tcp.limits = config.tcp  # for connections from now on

    def _on_loop(self, call: Callable[..., None], *args: Any) -> None:
        """*call* on the TCP loop, whose objects the notifier's are; at once if the loop
        is not running yet (it tells the secondaries when it starts)."""
        if self.loop is None:
            call(*args)
        else:
            self.loop.call_soon_threadsafe(call, *args)

    def _announce(
        self,
        notifier: Notifier,
        zone: Labels,
        secondaries: Sequence[tuple[str, int]],
        key: dns.tsig.Key | None,
    ) -> None:
        """Have *notifier* tell *secondaries* about *zone*, with *key*, from now on (NOTIFY
        messages being retried go out so too) and tell them now."""
        notifier.zone, notifier.secondaries, notifier.key = zone, tuple(secondaries), key
        if self.loop is not None:
            notifier.changed()

    def apply(self, message: dict[str, Any]) -> None:
        """Apply a ``set``, ``load`` or ``reconfigure`` message from the gateway."""
        if message["op"] == "reconfigure":
            self.reconfigure(ServerConfig.from_json(message["config"]), message["serial"])
            return
        records = [
            (labels_of(name), [v.encode("ascii") for v in values])
            for name, values in message["records"]
        ]
        if message["op"] == "load":
            self.answers.load(records, message["serial"], replace=message["first"])
        else:
            for name, values in records:
                self.answers.set_values(name, values, message["serial"])
            zone = self.transfers.zone if self.transfers else None
            if self.notifier is not None and self.loop is not None and any(
                self.answers.served.apex_of(name) == zone for name, _ in records
            ):
                self.loop.call_soon_threadsafe(self.notifier.changed)

    def serve_udp(self, sock: socket.socket) -> None:
        """Answer datagrams on *sock* for ever (a thread's whole life)."""
        sock.setblocking(True)
        receive, send, answer = sock.recvfrom, sock.sendto, self.responder.udp
        while True:
            try:
                data, peer = receive(UDP_READ)
                reply = answer(data, peer[0])
                if reply is not None:
                    send(reply, peer)
            except OSError as exc:  # a peer that went away, a full buffer: next datagram
                log.debug("builtin DNS: UDP: %s", exc)

    async def serve_tcp(self, sockets: Sequence[socket.socket]) -> None:
        """Serve TCP, and NOTIFY the secondaries once now (the serial is new) and after
        every change in the zone."""
        servers = [await asyncio.start_server(self.tcp.handle, sock=s) for s in sockets]
        self.loop = asyncio.get_running_loop()
        if self.notifier is not None:
            self.notifier.changed()
        try:
            await asyncio.Event().wait()
        finally:
            for server in servers:
                server.close()


def _served(config: ServerConfig) -> Served:
    return Served(
        (labels_of(d) for d in config.managed),
        labels_of(config.zone) if config.zone else None,
    )


def _limiter_settings(config: ServerConfig) -> tuple[int, int, tuple[str, ...]]:
    return config.rate_limit, config.rate_limit_slip, config.rate_limit_exempt


def _limiter(config: ServerConfig) -> RateLimiter | None:
    if not config.rate_limit:
        return None
    return RateLimiter(
        config.rate_limit,
        config.rate_limit_slip,
        (ipaddress.ip_network(n) for n in config.rate_limit_exempt),
    )


def _follow(control: Control, server: DnsServer) -> None:
    """Apply the gateway's changes as they come; the process ends with this thread.

    It ends when the gateway is gone: at end of file, and also when answering
    a change fails (a gateway killed with changes unanswered: the thread would
    die of the broken pipe and leave the process serving stale values on the
    port for ever). And when a change cannot be applied: the gateway starts a
    new server, which loads every record.
    """
    status = 0
    try:
        while (message := control.receive()) is not None:
            server.apply(message)
            control.send({"op": "done", "id": message["id"]})
    except OSError:
        pass  # the gateway is gone
    except Exception:
        log.exception("builtin DNS: a change from the gateway could not be applied")
        status = 1
    finally:
        os._exit(status)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    control = Control(socket.socket(fileno=int(args[0])))
    first = control.receive()
    if first is None or first.get("op") != "config":
        return 2
    config = ServerConfig.from_json(first)
    root = logging.getLogger()
    root.handlers[:] = [ForwardHandler(control)]
    root.setLevel(config.log_level)
    try:
        os.nice(NICE)
    except OSError as exc:
        # A system call filter (systemd's SystemCallFilter=~@resources) may refuse it.
        log.warning(
            "builtin DNS: the server process runs at the gateway's CPU priority: "
            "lowering it failed: %s",
            exc,
        )
    server = DnsServer(config)
    # Every record comes before the first answer: a restarted server never
    # serves an empty or partial zone, or an old serial.
    loaded: list[int] = []
    while True:
        load = control.receive()
        if load is None or load.get("op") != "load":
            return 2
        server.apply(load)
        loaded.append(load["id"])
        if load["last"]:
            break
    for fd in config.udp_fds:
        sock = socket.socket(fileno=fd)
        threading.Thread(target=server.serve_udp, args=(sock,), daemon=True).start()
    threading.Thread(target=_follow, args=(control, server), daemon=True).start()
    for number in loaded:
        control.send({"op": "done", "id": number})
    asyncio.run(server.serve_tcp([socket.socket(fileno=fd) for fd in config.tcp_fds]))
    return 0

