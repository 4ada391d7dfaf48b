"""The gateway's own authoritative DNS server for ``_acme-challenge`` names.

With ``PROVIDER=builtin`` no DNS API is needed at all: the gateway answers DNS
queries itself (UDP and TCP) with the TXT values added through
:meth:`BuiltinProvider.add_txt`. Users point the challenge names at it once,
in one of two ways:

* **NS delegation** per name: ``_acme-challenge.example.com. NS gw.example.net.``
  Every ``_acme-challenge.<name>`` at or below a managed domain is then served
  as a zone of its own (SOA and NS synthesized at that name), because each one
  is delegated separately.
* **CNAME** into a delegation zone (``BUILTIN_ZONE``):
  ``_acme-challenge.example.com. CNAME <something>.acme.example.net.`` with
  ``acme.example.net`` NS-delegated to the gateway. Names under that zone are
  served from the same record store.

The package has one module per layer, as Knot DNS has: :mod:`.store` (zone
data, its index, the wire-format answers), :mod:`.network` (UDP and TCP, size
and connection limits), :mod:`.rrl` (response rate limiting), :mod:`.transfer`
(AXFR, IXFR, NOTIFY, TSIG), :mod:`.tsigerror` (answers to a TSIG that does not
verify) and :mod:`.serial` (the SOA serial that never goes
back). The server runs in a process of its
own (:mod:`.server`, started and fed by :mod:`.process`), so that a flood of
queries never competes with the HTTP API for the interpreter; this class
keeps the records, binds the ports and tells that process every change.

Settings:

* ``BUILTIN_LISTEN``: where to listen, UDP and TCP; comma-separated
  ``host:port`` or ``[v6]:port`` with IP addresses (default ``127.0.0.1:8053``,
  away from mDNS's 5353; in the container ``0.0.0.0:53,[::]:53``).
* ``BUILTIN_ZONE``: optional delegation zone served in addition to the
  ``_acme-challenge`` names of the managed domains.
* ``BUILTIN_NS``: the nameserver hostname(s) users write in their NS delegation,
  returned as the zones' NS records and the SOA's MNAME. Set it: the default
  (``ns.<BUILTIN_ZONE>``, else ``ns.<first managed domain>``) is only a
  placeholder, and a warning is logged while it is in use.
* ``BUILTIN_TTL``: TTL of every record in seconds (default 60, 1 to 3600).
  Negative answers are cached for at most 30 s (the SOA minimum).
* ``BUILTIN_RATE_LIMIT``: UDP answers per second per client network (/24 for
  IPv4, /56 for IPv6), default 20; ``0`` turns rate limiting off.
* ``BUILTIN_RATE_LIMIT_SLIP``: of the answers over the limit, every n-th goes
  out empty and truncated so that a real resolver retries over TCP (default 2;
  ``0``: drop them all, ``1``: truncate them all).
* ``BUILTIN_RATE_LIMIT_EXEMPT``: networks never rate-limited (default none,
  loopback included).
* ``BUILTIN_TCP_CLIENTS`` (default 256) and ``BUILTIN_TCP_CLIENTS_PER_ADDRESS``
  (default 8, per /64 for IPv6): open TCP connections in all and per client.
* ``BUILTIN_TCP_IDLE_TIMEOUT`` (default 10 s): a connection without a query for
  that long is closed; ``BUILTIN_TCP_READ_TIMEOUT`` (default 5 s): the time a
  client has to finish sending a query it started, or to take its answer.
* ``BUILTIN_SECONDARIES``: ``ip``, ``ip:port`` or ``[v6]:port`` of secondary
  servers (BIND, Knot, NSD, a hosted secondary service) of ``BUILTIN_ZONE``:
  they get NOTIFY on every change and are the only addresses that may
  transfer the zone (AXFR, or IXFR answered with the whole zone). Only
  ``BUILTIN_ZONE`` is transferable: each ``_acme-challenge`` zone of NS
  delegation is served by the gateway alone. With secondaries, a setup
  answers once the zone's nameservers (``PROPAGATION_NAMESERVERS``, or those
  of the zone in public DNS) serve the value.
* ``BUILTIN_TSIG_KEY_NAME``, ``BUILTIN_TSIG_SECRET`` (or
  ``BUILTIN_TSIG_SECRET_FILE``), ``BUILTIN_TSIG_ALGORITHM`` (default
  ``hmac-sha256``): the key that signs NOTIFY and transfers; with a key, an
  unsigned transfer request is refused, and signed queries get signed answers.

A reload (SIGHUP) applies every setting but ``BUILTIN_LISTEN`` in place, and
the gateway's ``DNSAPI_DOMAINS`` (whose ``_acme-challenge`` names are served):
the server process keeps its sockets and records and is sent the rest
(:meth:`BuiltinProvider.adopt`); a change to what the zones hold (names, NS,
TTL) comes with a new serial, announced to the secondaries. The listening
sockets are bound once, at start (port 53 takes a privilege the gateway need
not keep): a new ``BUILTIN_LISTEN`` waits for a restart.

API permissions: none. Listening on port 53 needs root or ``CAP_NET_BIND_SERVICE``.

Quirks:

* In the gateway, the values and the SOA serial live in its state
  (:mod:`providers._shared`): ``STATE_DIR/builtin.sqlite3``, or the PostgreSQL
  database of ``DATABASE_URL``, where every replica's server serves every
  value (a change on one reaches the others through LISTEN/NOTIFY, and each
  reads everything again after a reconnect). The serial is the database's
  and never goes back; a ``STATE_DIR/builtin-serial`` of an earlier version is
  where it starts from. Built on its own (tests), the provider keeps records in
  memory and the serial in that file. Either way the gateway re-adds its
  journaled values at start (``volatile``): those of an earlier version.
* The server process (``python -m providers.builtin``, about 28 MB) runs at a
  lower CPU priority than the gateway; if it dies it is started again with
  every record, and it exits when the gateway does. Its log lines appear in
  the gateway's log; it takes the log level the gateway has at start-up.
* Names it does not serve get REFUSED and no AA flag; ``add_txt`` refuses them
  too, so nothing is reported as published that nobody can see. Removing from a
  name it does not serve is a no-op, since nothing can be there.
  ``_acme-challenge.<name>`` where a label of *name* is not a host name label
  (spaces, ``;``, bytes beyond ASCII) is not a zone it serves.
* It is not a resolver: RD in a query is copied, RA is never set. DNSSEC is
  not offered. A query whose TSIG does not verify gets NOTAUTH with the TSIG
  error RFC 8945 5.2 names (:mod:`.tsigerror`); without a key, a signed query
  is one signed with an unknown key (BADKEY); zone transfers go
  only to ``BUILTIN_SECONDARIES``, over TCP.
* Over UDP an answer is limited to 512 bytes, or to the EDNS payload size the
  query offers (at most 1232, to avoid fragmentation); a bigger answer comes
  back empty with TC set, and the client retries over TCP.
* At most 100 values per name: even a certificate for many names needs a
  handful, and a TCP answer must fit 64 KiB.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Self, TypeVar

from lib.names import InvalidName, normalize_name
from lib.settings import Settings
from providers._shared import SharedRecords
from providers._tsig import TsigSettings, tsig_settings
from providers.base import Provider, ProviderContext, ProviderError
from providers.builtin.network import TcpLimits, bind_tcp, bind_udp
from providers.builtin.process import ServerProcess, ServerProcessError
from providers.builtin.rrl import IPNetwork
from providers.builtin.serial import (
    FileSerialStore,
    MemorySerialStore,
    SerialStore,
    first_serial,
    is_newer,
    next_serial,
)
from providers.builtin.server import ServerConfig
from providers.builtin.store import Labels, Served, labels_of, name_of, text_of

__all__ = ["MAX_VALUES_PER_NAME", "BuiltinProvider", "BuiltinSettings", "parse_listen"]

log = logging.getLogger(__name__)

# The settings this package reads (providers.registry.declared_settings finds them unimported).
SETTINGS = (
    "BUILTIN_LISTEN",
    "BUILTIN_ZONE",
    "BUILTIN_NS",
    "BUILTIN_TTL",
    "BUILTIN_RATE_LIMIT",
    "BUILTIN_RATE_LIMIT_SLIP",
    "BUILTIN_RATE_LIMIT_EXEMPT",
    "BUILTIN_TCP_CLIENTS",
    "BUILTIN_TCP_CLIENTS_PER_ADDRESS",
    "BUILTIN_TCP_IDLE_TIMEOUT",
    "BUILTIN_TCP_READ_TIMEOUT",
    "BUILTIN_SECONDARIES",
    "BUILTIN_TSIG_KEY_NAME",
    "BUILTIN_TSIG_SECRET",
    "BUILTIN_TSIG_SECRET_FILE",
    "BUILTIN_TSIG_ALGORITHM",
)

# What each field of BuiltinSettings is called where users set it (for the log).
SETTING_NAMES = {
    "listen": "BUILTIN_LISTEN",
    "zone": "BUILTIN_ZONE",
    "nameservers": "BUILTIN_NS",
    "ttl": "BUILTIN_TTL",
    "rate_limit": "BUILTIN_RATE_LIMIT",
    "rate_limit_slip": "BUILTIN_RATE_LIMIT_SLIP",
    "rate_limit_exempt": "BUILTIN_RATE_LIMIT_EXEMPT",
    "tcp.clients": "BUILTIN_TCP_CLIENTS",
    "tcp.per_client": "BUILTIN_TCP_CLIENTS_PER_ADDRESS",
    "tcp.idle_timeout": "BUILTIN_TCP_IDLE_TIMEOUT",
    "tcp.read_timeout": "BUILTIN_TCP_READ_TIMEOUT",
    "secondaries": "BUILTIN_SECONDARIES",
    "tsig": "BUILTIN_TSIG_*",
    "managed_domains": "DNSAPI_DOMAINS",
}
# The fields whose change changes what the zones hold: a new serial tells secondaries.
ZONE_CONTENT = ("zone", "nameservers", "ttl", "managed_domains")

DEFAULT_LISTEN = "127.0.0.1:8053"
MAX_VALUES_PER_NAME = 100
SERIAL_FILE = "builtin-serial"


@dataclass(frozen=True)
class BuiltinSettings:
    listen: tuple[tuple[str, int], ...] = (("127.0.0.1", 8053),)
    zone: str | None = None
    nameservers: tuple[str, ...] = ()
    ttl: int = 60
    rate_limit: int = 20
    rate_limit_slip: int = 2
    rate_limit_exempt: tuple[IPNetwork, ...] = ()
    tcp: TcpLimits = field(default_factory=TcpLimits)
    # Zone transfers of ``zone``: the secondaries (NOTIFY targets, the only
    # addresses that may transfer) and the key that signs it all.
    secondaries: tuple[tuple[str, int], ...] = ()
    tsig: TsigSettings | None = None
    # The gateway's DNSAPI_DOMAINS, whose _acme-challenge names are served: here, so
    # that a reload sees them change.
    managed_domains: tuple[str, ...] = ()
    # Not settings users need: how long the server process may take to start,
    # and to stop before it is killed.
    start_timeout: float = 30.0
    close_timeout: float = 5.0


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` with an IP address; raises ValueError."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("write IPv6 addresses as [address]:port")
        if ipaddress.ip_address(host).version != 6:
            raise ValueError("only IPv6 addresses go in brackets")
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not host:
            raise ValueError("expected host:port")
        if ipaddress.ip_address(host).version != 4:
            raise ValueError("write IPv6 addresses as [address]:port")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("the port must be 1 to 65535")
    return host, int(port)


def parse_secondary(text: str) -> tuple[str, int]:
    """``ip``, ``ip:port``, ``v6`` or ``[v6]:port`` (port 53 by default); raises ValueError."""
    if text.startswith("[") or text.count(":") == 1:
        return parse_listen(text)
    return str(ipaddress.ip_address(text)), 53


T = TypeVar("T")


def _each(
    settings: Settings,
    key: str,
    parse: Callable[[str], T],
    expected: str,
    default: Iterable[str] = (),
) -> tuple[T, ...]:
    """Each comma-separated item of *key* (else of *default*) parsed; a problem recorded
    for each that *parse* refuses with ValueError, saying it is not *expected*."""
    parsed: list[T] = []
    for item in settings.items(key) or default:
        try:
            parsed.append(parse(item))
        except ValueError as exc:
            settings.problem(f"{key}: {item!r} is not {expected} ({exc})")
    return tuple(parsed)


def _network(text: str) -> IPNetwork:
    return ipaddress.ip_network(text, strict=True)


def _bind_hint(exc: OSError, port: int) -> str | None:
    if exc.errno == errno.EADDRINUSE:
        return (
            "another program (systemd-resolved, dnsmasq, a DNS server) uses this port; "
            "stop it or choose another port in BUILTIN_LISTEN"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        if port < 1024:
            return (
                "ports below 1024 need root or CAP_NET_BIND_SERVICE "
                "(podman/docker: --cap-add=NET_BIND_SERVICE, or "
                "sysctl net.ipv4.ip_unprivileged_port_start=53)"
            )
        return "the system forbids listening there"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "no interface of this host has that address; use one of its addresses or 0.0.0.0"
    return None


def _changed(old: BuiltinSettings, new: BuiltinSettings) -> list[str]:
    """The settings that differ between *old* and *new*, by the names users set."""
    names: list[str] = []
    for item in fields(old):
        before, after = getattr(old, item.name), getattr(new, item.name)
        if before == after:
            continue
        if isinstance(before, TcpLimits):
            names.extend(
                SETTING_NAMES[f"tcp.{limit.name}"]
                for limit in fields(before)
                if getattr(before, limit.name) != getattr(after, limit.name)
            )
        elif item.name in SETTING_NAMES:  # not start_timeout and close_timeout
            names.append(SETTING_NAMES[item.name])
    return names


class BuiltinProvider(Provider):
    """An authoritative DNS server run by the gateway; ``records`` holds what it serves."""

    name: ClassVar[str] = "builtin"
    volatile: ClassVar[bool] = True
    serves_itself: bool = True

    def __init__(
        self,
        settings: BuiltinSettings,
        managed_domains: Iterable[str] = (),
        serials: SerialStore | None = None,
    ) -> None:
        if managed_domains:  # given apart from the settings (a provider built on its own)
            settings = replace(settings, managed_domains=tuple(managed_domains))
        self.settings = settings
        self.managed = tuple(labels_of(d) for d in settings.managed_domains)
        self.zone = labels_of(settings.zone) if settings.zone else None
        self.served = Served(self.managed, self.zone)
        self.nameservers = settings.nameservers or self._default_nameservers()
        self.serials: SerialStore = serials or MemorySerialStore()
        # With secondaries this server is not the only one serving the zone: the
        # gateway's propagation check then waits for the zone's nameservers.
        self.serves_itself = not (settings.secondaries and settings.zone)
        self.records: dict[Labels, list[str]] = {}
        self.serial: int | None = None
        # The gateway's state, when it keeps the records (keep_records_in): then
        # self.records is a copy of what every replica serves.
        self.shared: SharedRecords | None = None
        self._applying = asyncio.Lock()
        self.server: ServerProcess | None = None
        # Per listening address: its UDP sockets and its TCP socket.
        self._sockets: list[tuple[list[socket.socket], socket.socket]] = []

    def _default_nameservers(self) -> tuple[str, ...]:
        if self.zone:
            return ("ns." + text_of(self.zone),)
        if self.managed:
            return ("ns." + text_of(self.managed[0]),)
        return ("localhost",)

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        listen = _each(
            settings,
            "BUILTIN_LISTEN",
            parse_listen,
            "host:port or [v6]:port with an IP address",
            default=[DEFAULT_LISTEN],
        )
        raw_zone = settings.get("BUILTIN_ZONE")
        zone = settings.zone("BUILTIN_ZONE")
        if zone is not None and "." not in zone:
            settings.problem(
                f"BUILTIN_ZONE={raw_zone!r} is a top-level domain; "
                "use a zone delegated to the gateway"
            )
            zone = None
        nameservers: list[str] = []
        for item in settings.items("BUILTIN_NS"):
            try:
                nameservers.append(normalize_name(item))
            except InvalidName as exc:
                settings.problem(f"BUILTIN_NS: {item!r} {exc}")
        ttl = settings.integer("BUILTIN_TTL", 60, 1, 3600)
        if not context.managed_domains and raw_zone is None:
            settings.problem(
                "PROVIDER=builtin has nothing to serve: configure managed domains or BUILTIN_ZONE"
            )
        tcp = TcpLimits(
            clients=settings.integer("BUILTIN_TCP_CLIENTS", 256, 1, 65535),
            per_client=settings.integer("BUILTIN_TCP_CLIENTS_PER_ADDRESS", 8, 1, 65535),
            idle_timeout=settings.duration("BUILTIN_TCP_IDLE_TIMEOUT", 10.0, 0.1, 3600.0),
            read_timeout=settings.duration("BUILTIN_TCP_READ_TIMEOUT", 5.0, 0.1, 3600.0),
        )
        secondaries = _each(
            settings,
            "BUILTIN_SECONDARIES",
            parse_secondary,
            "an IP address, IP:port or [IPv6]:port",
        )
        if settings.has("BUILTIN_SECONDARIES") and raw_zone is None:
            settings.problem(
                "BUILTIN_SECONDARIES needs BUILTIN_ZONE: that zone is the one transferred "
                "(each _acme-challenge name of NS delegation is a zone only the gateway serves)"
            )
        tsig = tsig_settings(settings, "BUILTIN")
        serials = (
            FileSerialStore(context.state_dir / SERIAL_FILE)
            if context.state_dir is not None
            else None
        )
        return cls(
            BuiltinSettings(
                listen=listen,
                zone=zone,
                nameservers=tuple(nameservers),
                ttl=ttl,
                rate_limit=settings.integer("BUILTIN_RATE_LIMIT", 20, 0, 1_000_000),
                rate_limit_slip=settings.integer("BUILTIN_RATE_LIMIT_SLIP", 2, 0, 100),
                rate_limit_exempt=_each(
                    settings, "BUILTIN_RATE_LIMIT_EXEMPT", _network, "an IP address or network"
                ),
                tcp=tcp,
                secondaries=secondaries,
                tsig=tsig,
                managed_domains=tuple(context.managed_domains),
            ),
            serials=serials,
        )

    # -- the provider contract ----------------------------------------------

    def values(self, fqdn: str) -> list[str]:
        return list(self.records.get(labels_of(fqdn), []))

    def _key(self, fqdn: str) -> Labels:
        try:
            return labels_of(normalize_name(fqdn))
        except InvalidName as exc:
            raise self.error(f"{fqdn[:260]!r} {exc}") from None

    def delegation_for(self, fqdn: str) -> tuple[str, tuple[str, ...]] | None:
        try:
            apex = self.served.apex_of(self._key(fqdn))
        except ProviderError:
            return None
        return None if apex is None else (text_of(apex), self.nameservers)

    def _served_key(self, fqdn: str) -> Labels:
        key = self._key(fqdn)
        if self.served.apex_of(key) is None:
            served = "_acme-challenge names of " + (
                ", ".join(text_of(d) for d in self.managed) or "no managed domain"
            )
            if self.zone is not None:
                served += f" and names under {text_of(self.zone)}"
            raise self.error(
                f"{text_of(key)} is not served by the builtin DNS server",
                hint=f"it serves {served}",
            )
        return key

    async def add_txt(self, fqdn: str, value: str) -> None:
        key = self._served_key(fqdn)
        if not (value.isascii() and value.isprintable() and 0 < len(value) <= 255):
            raise self.error("a TXT value must be 1 to 255 printable ASCII characters")
        if self.shared is not None:
            # The state's copy is the truth: this one may not have heard of another
            # replica's change yet.
            changed = await self.shared.add(name_of(key), value, MAX_VALUES_PER_NAME)
            if changed is None:
                raise self.error(
                    f"{text_of(key)} already has {MAX_VALUES_PER_NAME} values",
                    hint="stale values are not being removed; check the janitor",
                )
            await self._apply(key, *changed)
            return
        values = self.records.get(key, [])
        if value in values:
            return
        if len(values) >= MAX_VALUES_PER_NAME:
            raise self.error(
                f"{text_of(key)} already has {len(values)} values",
                hint="stale values are not being removed; check the janitor",
            )
        await self._publish(key, [*values, value])
        log.debug("builtin DNS: added a TXT value at %s (%d now)", text_of(key), len(values) + 1)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        key = self._key(fqdn)
        if self.shared is not None:
            await self._apply(key, *await self.shared.remove(name_of(key), value))
            return
        values = self.records.get(key)
        if not values or value not in values:
            return
        left = [v for v in values if v != value]
        await self._publish(key, left)
        log.debug("builtin DNS: removed a TXT value at %s (%d left)", text_of(key), len(left))

    async def _publish(self, key: Labels, values: list[str]) -> None:
        """Serve *values* at *key* under a new serial, stored before it is served."""
        serial = next_serial(self._current_serial())
        try:
            self.serials.save(serial)
        except OSError as exc:
            raise self.error(f"cannot store the SOA serial: {exc}") from None
        self.serial = serial
        if values:
            self.records[key] = values
        else:
            self.records.pop(key, None)
        if self.server is not None:
            await self.server.set(key, values, serial)

    # -- records kept in the gateway's state --------------------------------------

    def keep_records_in(self, records: SharedRecords) -> None:
        self.shared = records

    async def _apply(self, key: Labels, values: list[str], serial: int) -> None:
        """Serve *values* at *key* as the state has them after a change of *serial*."""
        async with self._applying:
            await self._serve(key, values, serial)

    async def _serve(self, key: Labels, values: list[str], serial: int) -> None:
        if values:
            self.records[key] = values
        else:
            self.records.pop(key, None)
        if self.serial is None or is_newer(serial, self.serial):
            self.serial = serial
        if self.server is not None:
            await self.server.set(key, values, self.serial)

    async def _heard(self, name: str) -> None:
        """Another replica changed *name*: serve what the state has there now."""
        assert self.shared is not None
        async with self._applying:
            values, serial = await self.shared.current(name)
            await self._serve(labels_of(name), values, serial)

    async def _load(self) -> None:
        """Serve every record as the state has it (at start, and after changes may
        have been missed)."""
        assert self.shared is not None
        async with self._applying:
            floor = self.serial if self.serial is not None else self._current_serial()
            records, serial = await self.shared.load(floor)
            wanted = {labels_of(name): values for name, values in records.items()}
            for key in set(self.records) | set(wanted):
                if self.records.get(key) != wanted.get(key):
                    await self._serve(key, wanted.get(key, []), serial)
            if is_newer(serial, self.serial or 0):
                self.serial = serial

    def _current_serial(self) -> int:
        if self.serial is None:
            try:
                self.serial = first_serial(self.serials.load())
            except OSError as exc:
                raise self.error(str(exc)) from None
        return self.serial

    # -- the server -------------------------------------------------------------

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs the UDP servers listen on, once open."""
        return [udp[0].getsockname()[:2] for udp, _ in self._sockets]

    def _snapshot(self) -> tuple[list[tuple[Labels, list[str]]], int]:
        return list(self.records.items()), self._current_serial()

    def _bind(self) -> None:
        # Imported here, not at the top: the server process imports this package
        # too, and needs nothing of lib.dnscheck (which takes a tenth of a second).
        from lib.dnscheck import format_server

        for host, port in self.settings.listen:
            try:
                tcp = bind_tcp(host, port)
                try:
                    udp = bind_udp(host, port)
                except BaseException:
                    tcp.close()
                    raise
            except OSError as exc:
                raise self.error(
                    f"cannot listen on {format_server(host, port)}: {exc.strerror or exc}",
                    hint=_bind_hint(exc, port),
                ) from None
            self._sockets.append((udp, tcp))

    async def open(self) -> None:
        if self.server is not None:
            return
        if self.shared is not None:
            self.shared.watch(self._heard, self._load)
            await self._load()
        self._current_serial()
        tsig = self.settings.tsig
        try:
            self._bind()
            server = ServerProcess(
                self._server_config(),
                self._snapshot,
                self.settings.start_timeout,
                self.settings.close_timeout,
            )
            try:
                await server.start()
            except ServerProcessError as exc:
                raise self.error(f"cannot start: {exc}") from None
        except BaseException:
            self._close_sockets()
            raise
        self.server = server
        from lib.dnscheck import format_server

        for host, port in self.settings.listen:
            log.info("builtin DNS: listening on %s (UDP and TCP)", format_server(host, port))
        if self.settings.secondaries and self.settings.zone:
            log.info(
                "builtin DNS: %s may transfer %s (%s); NOTIFY goes to them on every change",
                ", ".join(format_server(h, p) for h, p in self.settings.secondaries),
                self.settings.zone,
                "TSIG " + tsig.key_name if tsig else "by address only: set BUILTIN_TSIG_KEY_NAME",
            )
        if not self.settings.nameservers:
            log.warning(
                "builtin DNS: BUILTIN_NS is not set; NS records say %s. Set BUILTIN_NS "
                "to the hostname(s) in your NS delegation",
                ", ".join(self.nameservers),
            )

    def _server_config(self) -> ServerConfig:
        """What the server process is told: these settings, on the sockets bound."""
        return ServerConfig(
            managed=tuple(text_of(d) for d in self.managed),
            zone=self.settings.zone,
            nameservers=self.nameservers,
            ttl=self.settings.ttl,
            rate_limit=self.settings.rate_limit,
            rate_limit_slip=self.settings.rate_limit_slip,
            rate_limit_exempt=tuple(str(n) for n in self.settings.rate_limit_exempt),
            tcp=self.settings.tcp,
            log_level=log.getEffectiveLevel(),
            udp_fds=tuple(s.fileno() for udp, _ in self._sockets for s in udp),
            tcp_fds=tuple(tcp.fileno() for _, tcp in self._sockets),
            secondaries=self.settings.secondaries if self.settings.zone else (),
            tsig=self.settings.tsig,
        )

    # -- reload (SIGHUP) ----------------------------------------------------------

    def restart_only(self, new: Self) -> list[str]:
        """Only new listening addresses: the sockets are bound once, at start."""
        return [] if new.settings.listen == self.settings.listen else ["BUILTIN_LISTEN"]

    async def adopt(self, new: Self) -> bool:
        """Serve under *new*'s settings, all but ``BUILTIN_LISTEN``, without a restart.

        The server process keeps its sockets and records and is sent the rest (names
        served, NS, TTL, rate and TCP limits, secondaries, TSIG key); it is in force
        when this returns. A change to what the zones hold comes under a new serial,
        and the secondaries are told.
        """
        settings = replace(new.settings, listen=self.settings.listen)
        changed = _changed(self.settings, settings)
        if not changed:
            return True
        content = any(
            getattr(settings, name) != getattr(self.settings, name) for name in ZONE_CONTENT
        )
        serial = self._current_serial()
        if content:
            serial = next_serial(serial)
            try:
                self.serials.save(serial)
            except OSError as exc:
                raise self.error(f"cannot store the SOA serial: {exc}") from None
            self.serial = serial
        # The provider first: a server process started again from now on gets these.
        self.settings = settings
        self.managed, self.zone, self.served = new.managed, new.zone, new.served
        self.nameservers, self.serves_itself = new.nameservers, new.serves_itself
        if self.server is not None:
            await self.server.reconfigure(self._server_config(), serial)
        log.info("builtin DNS: new %s in force", ", ".join(changed))
        return True

    def _close_sockets(self) -> None:
        sockets, self._sockets = self._sockets, []
        for udp, tcp in sockets:
            for sock in udp:
                sock.close()
            tcp.close()

    async def aclose(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            await server.close()
        self._close_sockets()
