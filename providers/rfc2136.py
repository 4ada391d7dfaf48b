"""Dynamic DNS updates (RFC 2136) signed with TSIG: BIND, Knot, PowerDNS, Windows DNS, ...

Settings:

* ``RFC2136_SERVER`` (required): the primary's IP address or host name; updates
  and SOA queries go there.
* ``RFC2136_PORT`` (default 53).
* ``RFC2136_TSIG_KEY_NAME``: the key's name as the server knows it.
* ``RFC2136_TSIG_SECRET`` or ``RFC2136_TSIG_SECRET_FILE``: the key's secret,
  base64 as ``tsig-keygen`` prints it. Key name and secret come together; with
  neither, updates go unsigned (only for servers that allow updates by address).
* ``RFC2136_TSIG_ALGORITHM`` (default ``hmac-sha256``): ``hmac-sha256``,
  ``hmac-sha384``, ``hmac-sha512``, or ``hmac-sha1`` for old servers.
* ``RFC2136_ZONE`` (optional): the zone to update. Without it, the zone of each
  name is the owner of the SOA the server returns for the name (walking up the
  labels when the answer carries none), cached per name.
* ``RFC2136_TTL`` (default 60): TTL of the TXT records we add.
* ``RFC2136_TIMEOUT`` (default 10 s): deadline of each query or update exchange.

Permissions: the key needs the right to change TXT records at the
``_acme-challenge`` names, and nothing else. In BIND::

    zone "example.com" { ...; update-policy {
        grant acme-key. name _acme-challenge.example.com. TXT;
        grant acme-key. name _acme-challenge.www.example.com. TXT; }; };

(``grant acme-key. wildcard *.example.com. TXT;`` is looser but shorter.)

Quirks:

* Each change is one UPDATE that adds or deletes exactly one TXT record
  (RFC 2136 §2.5.1 / §2.5.4); the server keeps every other value, so there is no
  read-modify-write and no race with other writers. Both operations are
  idempotent, which is why resending an update over TCP after the UDP exchange
  timed out or was truncated is safe.
* An update adding TXT at a name that is a CNAME is silently ignored by the
  server (RFC 2136 §3.4.2.2); we refuse such names up front, naming the target.
* TXT values longer than 255 bytes are split into several character-strings.
* NOTAUTH/REFUSED usually mean the update-policy does not cover the name;
  BADKEY/BADSIG mean a wrong key name, secret or algorithm, except that Knot DNS
  answers NOTAUTH with BADKEY also when its ACL refuses a known key the change.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
from dns import asyncquery

from lib.names import InvalidName, is_within, normalize_name
from lib.settings import Settings
from providers._dns import ZoneCache, parent_names, walk_up
from providers._tsig import TsigSettings, tsig_settings
from providers.base import Provider, ProviderContext, ProviderTimeout

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = (
    "RFC2136_SERVER", "RFC2136_PORT", "RFC2136_ZONE", "RFC2136_TTL", "RFC2136_TIMEOUT",
    "RFC2136_TSIG_KEY_NAME", "RFC2136_TSIG_SECRET", "RFC2136_TSIG_SECRET_FILE",
    "RFC2136_TSIG_ALGORITHM",
)

_KEY_HINT = (
    "check RFC2136_TSIG_KEY_NAME, RFC2136_TSIG_SECRET and RFC2136_TSIG_ALGORITHM "
    "against the server's key statement"
)
_POLICY_HINT = (
    "does the server's update-policy (or allow-update) grant the key TXT changes at this name?"
)
# The per-name zone cache only holds names the gateway manages; the cap keeps a
# misbehaving caller from growing it without bound.
_ZONE_CACHE_MAX = 4096
_TXT_CHUNK = 255


@dataclass(frozen=True)
class Rfc2136Settings:
    server: str
    port: int = 53
    tsig: TsigSettings | None = None
    zone: str | None = None
    ttl: int = 60
    timeout: float = 10.0


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def txt_rdata(value: str) -> dns.rdtypes.ANY.TXT.TXT:
    """One TXT record holding *value*, split into 255-byte character-strings.

    Built from bytes rather than zone-file text, so quotes, backslashes and
    blanks in a value need no escaping.
    """
    raw = value.encode()
    chunks = [raw[i : i + _TXT_CHUNK] for i in range(0, len(raw), _TXT_CHUNK)] or [b""]
    return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)


class Rfc2136Provider(Provider):
    """TXT records through TSIG-signed RFC 2136 UPDATE messages."""

    name: ClassVar[str] = "rfc2136"

    def __init__(self, settings: Rfc2136Settings) -> None:
        self.settings = settings
        self._zones: ZoneCache[dns.name.Name] = ZoneCache(_ZONE_CACHE_MAX)
        self._address: str | None = settings.server if _is_ip(settings.server) else None
        self._key = None if settings.tsig is None else settings.tsig.key()

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        server = settings.require("RFC2136_SERVER", "the primary server's IP address or name")
        if server.startswith("[") and server.endswith("]"):
            server = server[1:-1]
        if server and not _is_ip(server):
            try:
                server = normalize_name(server)
            except InvalidName as exc:
                settings.problem(
                    f"RFC2136_SERVER={server!r} is neither an IP address nor a host name: it {exc}"
                )
        port = settings.integer("RFC2136_PORT", 53, 1, 65535)
        tsig = tsig_settings(settings, "RFC2136")
        zone = settings.zone("RFC2136_ZONE")
        return cls(
            Rfc2136Settings(
                server=server,
                port=port,
                tsig=tsig,
                zone=zone,
                ttl=settings.integer("RFC2136_TTL", 60, 0, 86400),
                timeout=settings.duration("RFC2136_TIMEOUT", 10.0, 0.1, 300.0),
            )
        )

    async def open(self) -> None:
        if self._key is None:
            log.warning(
                "rfc2136: updates to %s are not signed (no RFC2136_TSIG_KEY_NAME); "
                "the server must restrict updates by address",
                self.settings.server,
            )

    async def add_txt(self, fqdn: str, value: str) -> None:
        zone = await self._zone_of(fqdn)
        update = self._update(zone)
        update.add(dns.name.from_text(fqdn), self.settings.ttl, txt_rdata(value))
        await self._send_update(update, fqdn, zone, "add")

    async def remove_txt(self, fqdn: str, value: str) -> None:
        zone = await self._zone_of(fqdn)
        update = self._update(zone)
        # Deleting an RR that does not exist is a no-op for the server (RFC 2136
        # §3.4.2.4), which gives us idempotent removal for free.
        update.delete(dns.name.from_text(fqdn), txt_rdata(value))
        await self._send_update(update, fqdn, zone, "remove")

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        if self._key is None:
            return dns.update.UpdateMessage(zone)
        return dns.update.UpdateMessage(
            zone, keyring=self._key, keyname=self._key.name, keyalgorithm=self._key.algorithm
        )

    async def _send_update(
        self, update: dns.update.UpdateMessage, fqdn: str, zone: dns.name.Name, action: str
    ) -> None:
        response = await self._exchange(update, f"{action} TXT at {fqdn}")
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            log.info(
                "rfc2136: %s TXT at %s in zone %s on %s: done",
                action,
                fqdn,
                zone.to_text(omit_final_dot=True),
                self.settings.server,
            )
            return
        where = f"zone {zone.to_text(omit_final_dot=True)}"
        text = dns.rcode.to_text(rcode)
        if rcode == dns.rcode.REFUSED:
            raise self.error(
                f"{self.settings.server} refused the update of {fqdn} ({where})", hint=_POLICY_HINT
            )
        if rcode == dns.rcode.NOTAUTH:
            raise self.error(
                f"{self.settings.server} is not authoritative for {where} or does not accept "
                f"the key (NOTAUTH) updating {fqdn}",
                hint=f"is it the primary of the zone? {_POLICY_HINT}",
            )
        if rcode == dns.rcode.NOTZONE:
            raise self.error(f"{fqdn} is not in {where} (NOTZONE)", hint="check RFC2136_ZONE")
        raise self.error(
            f"{self.settings.server} answered {text} to the update of {fqdn} ({where})"
        )

    async def _zone_of(self, fqdn: str) -> dns.name.Name:
        if self.settings.zone is not None:
            if not is_within(fqdn, self.settings.zone):
                raise self.error(
                    f"{fqdn} is not in RFC2136_ZONE={self.settings.zone}",
                    hint="unset RFC2136_ZONE to find each name's zone from its SOA",
                )
            return dns.name.from_text(self.settings.zone)
        return await self._zones.get(fqdn, lambda: self._find_zone(fqdn))

    async def _find_zone(self, fqdn: str) -> dns.name.Name:
        """The zone holding *fqdn*: the first of its parent names the server has a SOA for."""
        found = await walk_up(
            parent_names(fqdn, every_label=True), lambda candidate: self._soa_zone(candidate, fqdn)
        )
        if found is None:
            raise self.error(
                f"{self.settings.server} is not authoritative for any zone holding {fqdn}",
                hint="check RFC2136_SERVER, or set RFC2136_ZONE",
            )
        return found[1]

    async def _soa_zone(self, candidate: str, fqdn: str) -> dns.name.Name | None:
        """The zone the server's answer to a SOA query at *candidate* names, if any."""
        name = dns.name.from_text(candidate)
        query = dns.message.make_query(name, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        if self._key is not None:
            query.use_tsig(self._key)
        response = await self._exchange(query, f"find the zone of {fqdn}")
        for rrset in response.answer:
            if rrset.name == name and rrset.rdtype == dns.rdatatype.CNAME:
                target = rrset[0].target.to_text(omit_final_dot=True)
                raise self.error(
                    f"{candidate} is a CNAME to {target}; a TXT update there would be ignored",
                    hint=f"change {target} instead (or remove the CNAME)",
                )
            if rrset.name == name and rrset.rdtype == dns.rdatatype.SOA:
                return name
        if response.flags & dns.flags.AA:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return rrset.name
        return None

    async def _server_address(self) -> str:
        if self._address is not None:
            return self._address
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.timeout):
                infos = await loop.getaddrinfo(
                    self.settings.server, self.settings.port, type=socket.SOCK_DGRAM
                )
        except TimeoutError:
            raise ProviderTimeout(
                self.name,
                f"resolving {self.settings.server} timed out after {self.settings.timeout:g}s",
            ) from None
        except OSError as exc:
            raise self.error(
                f"cannot resolve RFC2136_SERVER={self.settings.server}: {exc.strerror or exc}"
            ) from None
        self._address = str(infos[0][4][0])
        return self._address

    async def _exchange(self, message: dns.message.Message, what: str) -> dns.message.Message:
        """Send *message* over UDP, then over TCP if that was truncated or failed.

        Each transport gets the whole RFC2136_TIMEOUT, so one call is bounded by
        twice that (plus name resolution).
        """
        where = await self._server_address()
        port, timeout = self.settings.port, self.settings.timeout
        try:
            try:
                return await self._guard(
                    lambda: asyncquery.udp(
                        message, where, timeout=timeout, port=port, raise_on_truncation=True
                    ),
                    what,
                )
            except (dns.message.Truncated, OSError, dns.exception.Timeout) as exc:
                log.debug(
                    "rfc2136: %s over UDP failed (%s); retrying over TCP", what, type(exc).__name__
                )
            return await self._guard(
                lambda: asyncquery.tcp(message, where, timeout=timeout, port=port), what
            )
        except dns.exception.Timeout:
            raise ProviderTimeout(
                self.name,
                f"{self.settings.server} port {port} did not answer within {timeout:g}s to {what}",
            ) from None
        except ConnectionRefusedError:
            raise self.error(
                f"{self.settings.server} port {port} refused the connection to {what}",
                hint="check RFC2136_SERVER and RFC2136_PORT",
            ) from None
        except OSError as exc:
            raise self.error(
                f"cannot reach {self.settings.server} port {port} to {what}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        except dns.exception.DNSException as exc:
            raise self.error(
                f"bad answer from {self.settings.server} to {what}: {type(exc).__name__}"
            ) from None

    async def _guard(
        self, call: Callable[[], Awaitable[dns.message.Message]], what: str
    ) -> dns.message.Message:
        """Run one exchange, turning TSIG failures into errors that say how to fix the key."""
        try:
            return await call()
        except dns.tsig.PeerBadKey:
            # BIND says BADKEY for a key it does not know; Knot also for a known key its
            # ACL does not let make this change (BIND says REFUSED there).
            raise self.error(
                f"{self.settings.server} refused the TSIG key (BADKEY) used to {what}",
                hint=f"{_KEY_HINT}; on Knot DNS, BADKEY also means its ACL does not let the "
                "key make this change: does an acl with action: update, update-type: [TXT] "
                "and this name in update-owner cover it?",
            ) from None
        except dns.tsig.PeerBadSignature:
            raise self.error(
                f"{self.settings.server} rejected the TSIG signature (BADSIG) used to {what}",
                hint=_KEY_HINT,
            ) from None
        except dns.tsig.PeerBadTime:
            raise self.error(
                f"{self.settings.server} rejected the TSIG time (BADTIME) used to {what}",
                hint="check that both clocks are right",
            ) from None
        except (
            dns.tsig.PeerError,
            dns.tsig.BadSignature,
            dns.tsig.BadAlgorithm,
            dns.tsig.BadKey,
        ) as exc:
            raise self.error(
                f"TSIG failure talking to {self.settings.server} to {what}: {type(exc).__name__}",
                hint=_KEY_HINT,
            ) from None
