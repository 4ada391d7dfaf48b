"""Answer only when served: wait until every authoritative nameserver serves a TXT value.

ACME clients such as mod_md tell the CA to validate the moment our hook
returns, and the CA may ask any of the zone's nameservers. So after a provider
wrote a value, :func:`wait_for_txt` polls each authoritative server directly
(RD=0, so no cache answers for it; UDP, TCP when truncated or when UDP fails)
and returns only when every one of them serves the value, or raises
:class:`PropagationTimeout` naming the servers that lag.

How the servers are found (:func:`authoritative_servers`): the zone cut is the
owner of the SOA that a recursive resolver returns for the name or for one of
its parents (walking up the labels); the zone's NS set is asked for, and each
NS name is resolved to its A and AAAA addresses (glue from the answer is used
when present). ``resolver_nameservers`` (or ``PropagationSettings.resolvers``,
``PROPAGATION_RESOLVERS``) picks the resolvers; by default they come from
``/etc/resolv.conf``. A name for which those resolvers know no zone below a
top-level domain — not delegated in the DNS this host asks, as in a lab or
behind a split horizon — raises :class:`NoZoneError`, whose ``hint`` says to
name the servers to ask instead.

``PropagationSettings.nameservers`` (``PROPAGATION_NAMESERVERS``) skips that
discovery and polls exactly the listed servers: for split-horizon setups where
the public servers are not what the gateway sees, and for tests.
``PropagationSettings.port`` is the port of discovered servers and of listed
servers given without one; it is 53 except in tests, where every server sits on
127.0.0.1 with its own port.

A CNAME at the name (``_acme-challenge.example.com CNAME
x.acme.example.net``, the usual delegation) is followed: the value must then be
served at the target by the target zone's servers (or, with ``nameservers``
given, by those).

Polling starts at once, then backs off from ``first_check`` (50 ms), growing by half
each time up to ``max_interval``, but at most 150 ms apart for the first 2 s of a
server's poll; every query is bounded by ``query_timeout`` and the whole
wait, discovery included, by ``timeout``. ``delay`` (``DNS_DELAY`` of the
original hook) sleeps that much longer after every server serves the value.

Addresses this host cannot reach at all (an IPv6 server on a host without IPv6:
"network unreachable") are skipped with a warning, as long as another server
serves the value. This module knows nothing of the gateway, so the hook reuses it.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset

from lib.settings import Settings

log = logging.getLogger(__name__)

# Growth of the poll interval. Gentler than doubling: a server that starts serving
# mid-interval is seen sooner, for a query load that stays trivial.
_BACKOFF = 1.5
# For the first seconds of a poll the interval stays short: secondaries following a
# NOTIFY (BIND paces its refresh queries by half a second) and quick APIs serve the
# value then, and the next step of the back-off would come up to 0.38 s late. Seven
# more queries per server at most (bench/propagation.py, bench/dns_secondaries.py).
_FINE_PERIOD = 2.0
_FINE_INTERVAL = 0.15
# A CNAME chain longer than this is a loop or a misconfiguration.
_MAX_CNAMES = 8
# Errors that say this host has no route to an address family, not that the server lags.
_UNREACHABLE = {errno.ENETUNREACH, errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT}


class PropagationError(Exception):
    """The value could not be confirmed as served."""


class PropagationTimeout(PropagationError):
    """Some authoritative servers did not serve the value in time; ``lagging`` names them."""

    def __init__(
        self,
        fqdn: str,
        lagging: Sequence[str],
        timeout: float,
        served: Sequence[str] = (),
        reason: str | None = None,
    ) -> None:
        self.fqdn = fqdn
        self.lagging = list(lagging)
        self.served = list(served)
        self.timeout = timeout
        if reason is None:
            reason = f"not served by {', '.join(self.lagging) or 'any server'}"
        super().__init__(f"{fqdn}: {reason} after {timeout:g}s")


class DiscoveryError(PropagationError):
    """The authoritative servers of a name could not be found."""


class NoZoneError(DiscoveryError):
    """The resolvers know no zone that holds the name (below a top-level domain)."""

    def hint(self, setting: str = "PROPAGATION_NAMESERVERS") -> str:
        """What to do, naming the *setting* that lists the servers to ask instead."""
        return (
            "if the zone is not delegated in public DNS (a lab, a split horizon), "
            f"set {setting} to the servers that serve it"
        )


def parse_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``(ip, port)`` from ``ip``, ``ip:port``, ``v6``, ``[v6]`` or ``[v6]:port``.

    Raises ValueError for anything else (host names included: a server to poll
    must be an address, so that no lookup sits between us and the answer).
    """
    item = text.strip()
    host, port = item, default_port
    if item.startswith("["):
        close = item.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']'")
        host, rest = item[1:close], item[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':port' after ']'")
            port = _port(rest[1:], text)
    elif item.count(":") == 1:
        host, port_text = item.split(":")
        port = _port(port_text, text)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address (with optional :port)") from None
    return str(address), port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"{whole!r}: bad port {text!r}")
    return int(text)


def format_server(host: str, port: int) -> str:
    """``ip:port`` (``[v6]:port``): how servers are named in results and errors."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class PropagationSettings:
    """How to wait; see the module docstring for each field's meaning."""

    nameservers: tuple[str, ...] = ()
    timeout: float = 120.0
    # Resolvers that discovery asks (ip or ip:port); () means /etc/resolv.conf's.
    resolvers: tuple[str, ...] = ()
    delay: float = 0.0
    first_check: float = 0.05
    # Polls stay cheap (one small UDP query per server), and a short cap keeps the answer
    # within about half a second of the moment the last server serves the value.
    max_interval: float = 0.5
    query_timeout: float = 2.0
    port: int = 53

    def __post_init__(self) -> None:
        for server in (*self.nameservers, *self.resolvers):
            parse_server(server, self.port)
        if min(self.timeout, self.first_check, self.max_interval, self.query_timeout) <= 0:
            raise ValueError("timeout, first_check, max_interval and query_timeout must be > 0")
        if self.delay < 0:
            raise ValueError("delay must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> PropagationSettings:
        """From ``PROPAGATION_NAMESERVERS``, ``PROPAGATION_RESOLVERS``,
        ``PROPAGATION_TIMEOUT`` and ``DNS_DELAY``."""
        return cls(
            nameservers=nameservers_from_settings(settings),
            resolvers=nameservers_from_settings(settings, "PROPAGATION_RESOLVERS"),
            timeout=settings.duration("PROPAGATION_TIMEOUT", 120.0, 1.0, 3600.0),
            delay=settings.duration("DNS_DELAY", 0.0, 0.0, 3600.0),
        )


def nameservers_from_settings(
    settings: Settings, key: str = "PROPAGATION_NAMESERVERS"
) -> tuple[str, ...]:
    """The servers listed in *key*; each one that is not an address is a problem."""
    nameservers: list[str] = []
    for item in settings.items(key):
        try:
            parse_server(item)
        except ValueError as exc:
            settings.problem(f"{key}: {exc}")
        else:
            nameservers.append(item)
    return tuple(nameservers)


@dataclass(frozen=True)
class Authority:
    """A zone and where it is served: NS names and their addresses as ``ip:port``."""

    zone: str
    ns_names: tuple[str, ...]
    servers: tuple[str, ...]


async def _query(
    server: str,
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    query_timeout: float,
    *,
    recursion: bool = False,
    default_port: int = 53,
) -> dns.message.Message:
    """One query over UDP, then TCP if UDP was truncated or got no answer."""
    host, port = parse_server(server, default_port)
    query = dns.message.make_query(qname, rdtype)
    if not recursion:
        query.flags &= ~dns.flags.RD
    try:
        response, _ = await dns.asyncquery.udp_with_fallback(
            query, host, timeout=query_timeout, port=port
        )
        return response
    except dns.exception.Timeout:
        return await dns.asyncquery.tcp(query, host, timeout=query_timeout, port=port)


def _unreachable(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _UNREACHABLE


def _resolvers(resolver_nameservers: Sequence[str] | None) -> list[str]:
    if resolver_nameservers is not None:
        if not resolver_nameservers:
            raise DiscoveryError("no resolvers given")
        return list(resolver_nameservers)
    try:
        system = dns.resolver.Resolver(configure=True)
    except dns.resolver.NoResolverConfiguration:
        raise DiscoveryError("no resolvers in /etc/resolv.conf") from None
    return [str(ns) for ns in system.nameservers]


async def _ask(
    resolvers: Sequence[str],
    qname: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    query_timeout: float,
) -> dns.message.Message:
    """The first usable answer (NOERROR or NXDOMAIN) from *resolvers*, asked in turn."""
    problems: list[str] = []
    for resolver in resolvers:
        try:
            response = await _query(resolver, qname, rdtype, query_timeout, recursion=True)
        except (dns.exception.DNSException, OSError) as exc:
            problems.append(f"{resolver}: {type(exc).__name__}")
            continue
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return response
        problems.append(f"{resolver}: {dns.rcode.to_text(response.rcode())}")
    raise DiscoveryError(
        f"no resolver answered {qname} {dns.rdatatype.to_text(rdtype)} ({'; '.join(problems)})"
    )


def _rrsets(
    section: Iterable[dns.rrset.RRset], name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> list[dns.rrset.RRset]:
    return [r for r in section if r.name == name and r.rdtype == rdtype]


def _rrsets_of(
    section: Iterable[dns.rrset.RRset], rdtype: dns.rdatatype.RdataType
) -> list[dns.rrset.RRset]:
    return [r for r in section if r.rdtype == rdtype]


async def public_alias(
    fqdn: str, *, resolver_nameservers: Sequence[str] | None = None, query_timeout: float = 2.0
) -> str | None:
    """The CNAME target the resolvers give for *fqdn* (the first of a chain), or None."""
    resolvers = _resolvers(resolver_nameservers)
    qname = dns.name.from_text(fqdn)
    response = await _ask(resolvers, qname, dns.rdatatype.TXT, query_timeout)
    for rrset in _rrsets(response.answer, qname, dns.rdatatype.CNAME):
        return str(rrset[0].target.to_text(omit_final_dot=True))
    return None


async def answers_for(server: str, zone: str, query_timeout: float = 2.0) -> bool:
    """Whether *server* (``ip:port``) answers for *zone* as its authority (SOA with AA)."""
    qname = dns.name.from_text(zone)
    try:
        response = await _query(server, qname, dns.rdatatype.SOA, query_timeout)
    except (dns.exception.DNSException, OSError):
        return False
    return bool(response.flags & dns.flags.AA) and bool(
        _rrsets(response.answer, qname, dns.rdatatype.SOA)
    )


async def find_zone(fqdn: str, resolvers: Sequence[str], query_timeout: float) -> dns.name.Name:
    """The zone holding *fqdn*: the owner of the SOA returned for it or for a parent."""
    name = dns.name.from_text(fqdn)
    candidate = name
    while True:
        response = await _ask(resolvers, candidate, dns.rdatatype.SOA, query_timeout)
        if _rrsets(response.answer, candidate, dns.rdatatype.SOA):
            return candidate
        aliased = any(
            r.rdtype in (dns.rdatatype.CNAME, dns.rdatatype.DNAME) for r in response.answer
        )
        # After a CNAME the authority section speaks of the target's zone, not ours.
        if not aliased:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA and candidate.is_subdomain(rrset.name):
                    return rrset.name
            # An authoritative server asked in a resolver's place (a lab's primary) answers
            # a name below one of its delegations with a referral: the zone starts there.
            if not response.flags & dns.flags.AA:
                for rrset in _rrsets_of(response.authority, dns.rdatatype.NS):
                    if candidate.is_subdomain(rrset.name):
                        return rrset.name
        if len(candidate) <= 1:
            raise NoZoneError(f"no zone holds {fqdn} (no SOA found up to the root)")
        candidate = candidate.parent()


def _not_a_zone_for_records(zone: dns.name.Name, fqdn: str) -> None:
    """The root or a top-level domain "holds" a name that is not delegated at all."""
    if len(zone) <= 2:  # the root is one label (the empty one); a TLD two
        tld = zone.to_text(omit_final_dot=True)
        where = "the root" if len(zone) == 1 else f"the top-level domain {tld}"
        raise NoZoneError(f"no zone holds {fqdn}: the resolvers asked know only {where}")


async def authoritative_servers(
    fqdn: str,
    *,
    resolver_nameservers: Sequence[str] | None = None,
    port: int = 53,
    query_timeout: float = 2.0,
) -> Authority:
    """The zone holding *fqdn*, its NS names and their addresses (``ip:port``, *port* applied).

    Raises :class:`DiscoveryError` when no resolver answers or the zone has no
    reachable NS set.
    """
    resolvers = _resolvers(resolver_nameservers)
    zone = await find_zone(fqdn, resolvers, query_timeout)
    _not_a_zone_for_records(zone, fqdn)
    response = await _ask(resolvers, zone, dns.rdatatype.NS, query_timeout)
    # In the answer; from an authoritative server asked in a resolver's place, in a referral.
    ns_rrsets = _rrsets(response.answer, zone, dns.rdatatype.NS) or _rrsets(
        response.authority, zone, dns.rdatatype.NS
    )
    ns_names = sorted({rdata.target for rrset in ns_rrsets for rdata in rrset})
    if not ns_names:
        raise DiscoveryError(f"zone {zone} has no NS records")
    addresses: list[str] = []
    for ns in ns_names:
        found = [
            rdata.address
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            for rrset in _rrsets(response.additional, ns, rdtype)
            for rdata in rrset
        ]
        if not found:
            for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                try:
                    answer = await _ask(resolvers, ns, rdtype, query_timeout)
                except DiscoveryError as exc:
                    log.warning("dnscheck: cannot resolve nameserver %s: %s", ns, exc)
                    continue
                found += [
                    rdata.address for rrset in _rrsets(answer.answer, ns, rdtype) for rdata in rrset
                ]
        if not found:
            log.warning("dnscheck: nameserver %s of %s has no address", ns, zone)
        addresses += [format_server(str(ipaddress.ip_address(a)), port) for a in found]
    servers = tuple(dict.fromkeys(addresses))
    if not servers:
        raise DiscoveryError(f"no address for any nameserver of {zone}")
    return Authority(
        zone.to_text(omit_final_dot=True),
        tuple(n.to_text(omit_final_dot=True) for n in ns_names),
        servers,
    )


async def _servers_for(
    name: str, settings: PropagationSettings, resolver_nameservers: Sequence[str] | None
) -> list[str]:
    if settings.nameservers:
        return [format_server(*parse_server(s, settings.port)) for s in settings.nameservers]
    if resolver_nameservers is None and settings.resolvers:
        resolver_nameservers = settings.resolvers
    authority = await authoritative_servers(
        name,
        resolver_nameservers=resolver_nameservers,
        port=settings.port,
        query_timeout=settings.query_timeout,
    )
    log.debug(
        "dnscheck: %s is in zone %s, served by %s",
        name,
        authority.zone,
        ", ".join(authority.servers),
    )
    return list(authority.servers)


async def _cname_target(
    name: str, servers: Sequence[str], settings: PropagationSettings
) -> tuple[bool, str | None]:
    """``(answered, target)``: did any of *servers* answer, and the CNAME target it named."""
    qname = dns.name.from_text(name)
    results = await asyncio.gather(
        *(_query(s, qname, dns.rdatatype.TXT, settings.query_timeout) for s in servers),
        return_exceptions=True,
    )
    answered = False
    for result in results:
        if not isinstance(result, dns.message.Message):
            continue
        answered = True
        for rrset in _rrsets(result.answer, qname, dns.rdatatype.CNAME):
            return True, str(rrset[0].target.to_text(omit_final_dot=True))
    return answered, None


async def _target_and_servers(
    fqdn: str,
    settings: PropagationSettings,
    resolver_nameservers: Sequence[str] | None,
    servers: list[str],
) -> str:
    """Follow CNAMEs from *fqdn* to the name that must serve the value.

    *servers* is filled with that name's servers as soon as they are known, so
    a timeout can name them even while none of them answers.
    """
    name = fqdn
    seen = {name}
    interval = settings.first_check
    while True:
        servers[:] = await _servers_for(name, settings, resolver_nameservers)
        answered, target = await _cname_target(name, servers, settings)
        if not answered:
            # No server answered at all: try again until the overall timeout.
            await asyncio.sleep(interval)
            interval = min(interval * _BACKOFF, settings.max_interval)
            continue
        if target is None:
            return name
        log.debug("dnscheck: %s is a CNAME to %s", name, target)
        if target in seen or len(seen) > _MAX_CNAMES:
            raise PropagationError(f"{fqdn}: CNAME loop or chain too long at {target}")
        seen.add(target)
        name = target


async def _serves(server: str, qname: dns.name.Name, value: str, query_timeout: float) -> bool:
    response = await _query(server, qname, dns.rdatatype.TXT, query_timeout)
    return any(
        b"".join(rdata.strings).decode(errors="replace") == value
        for rrset in _rrsets(response.answer, qname, dns.rdatatype.TXT)
        for rdata in rrset
    )


async def _poll(
    server: str,
    qname: dns.name.Name,
    value: str,
    settings: PropagationSettings,
    served: list[str],
    unreachable: list[str],
) -> None:
    interval = settings.first_check
    fine_until = asyncio.get_running_loop().time() + _FINE_PERIOD
    while True:
        try:
            if await _serves(server, qname, value, settings.query_timeout):
                served.append(server)
                return
        except (dns.exception.DNSException, OSError, UnicodeError) as exc:
            if _unreachable(exc):
                log.warning(
                    "dnscheck: %s is unreachable from here (%s); not waiting for it",
                    server,
                    exc.strerror if isinstance(exc, OSError) else exc,
                )
                unreachable.append(server)
                return
            log.debug("dnscheck: asking %s for %s failed: %s", server, qname, type(exc).__name__)
        await asyncio.sleep(interval)
        interval = min(interval * _BACKOFF, settings.max_interval)
        if asyncio.get_running_loop().time() < fine_until:
            interval = min(interval, _FINE_INTERVAL)


async def wait_for_txt(
    fqdn: str,
    value: str,
    settings: PropagationSettings,
    *,
    resolver_nameservers: Sequence[str] | None = None,
) -> list[str]:
    """Return once every authoritative server of *fqdn* serves *value* (after ``delay``).

    Returns the servers (``ip:port``) that served it. Raises
    :class:`PropagationTimeout` naming the lagging servers, :class:`DiscoveryError`
    when the servers cannot be found, or :class:`PropagationError`.
    """
    fqdn = fqdn.rstrip(".")
    loop = asyncio.get_running_loop()
    start = loop.time()
    servers: list[str] = []
    served: list[str] = []
    unreachable: list[str] = []
    try:
        async with asyncio.timeout(settings.timeout):
            target = await _target_and_servers(fqdn, settings, resolver_nameservers, servers)
            qname = dns.name.from_text(target)
            await asyncio.gather(
                *(_poll(s, qname, value, settings, served, unreachable) for s in servers)
            )
    except TimeoutError:
        if not servers:
            raise PropagationTimeout(
                fqdn, [], settings.timeout, reason="could not find its servers"
            ) from None
        lagging = [s for s in servers if s not in served and s not in unreachable]
        raise PropagationTimeout(fqdn, lagging, settings.timeout, served=served) from None
    if not served:
        raise PropagationError(
            f"{fqdn}: none of its servers is reachable from here ({', '.join(unreachable)})"
        )
    log.info("dnscheck: %s served by %s after %.3fs", fqdn, ", ".join(served), loop.time() - start)
    if settings.delay:
        await asyncio.sleep(settings.delay)
    return [s for s in servers if s in served]
