"""PowerDNS Authoritative Server, through its HTTP API.

Settings:

* ``POWERDNS_API_URL`` (required): the webserver's base URL, e.g.
  ``http://127.0.0.1:8081`` (a trailing ``/api/v1`` is accepted too).
* ``POWERDNS_API_KEY`` or ``POWERDNS_API_KEY_FILE`` (required): sent as ``X-API-Key``.
* ``POWERDNS_SERVER_ID`` (default ``localhost``): the ``server_id`` in API paths.
* ``POWERDNS_ZONE`` (optional): the zone to change. Without it, the zone of each
  name is found by walking up its labels (``_acme-challenge.www.example.org``,
  ``www.example.org``, ``example.org``, ``org``) and asking the zones list for
  each; the deepest existing zone wins, so delegated sub-zones work.
* ``POWERDNS_TTL`` (default 60): TTL of the TXT RRsets we create; an existing
  RRset keeps its TTL.
* ``POWERDNS_TIMEOUT`` (default 10 s): deadline of each API request.
* ``ALL_PROXY`` / ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``: forward proxy
  for API calls (see :mod:`providers._http`).

Permissions: the server needs ``api=yes`` and ``api-key=...`` in ``pdns.conf``,
and ``webserver-allow-from`` must include the gateway's address. The API key
grants full access to every zone on the server (PowerDNS has no narrower
keys), which is why it belongs in this gateway and not on the web servers.

Quirks:

* PowerDNS changes whole RRsets: a ``PATCH`` with ``changetype`` ``REPLACE``
  sets every record of a name and type, ``DELETE`` drops them. So adding or
  removing one TXT value reads the current RRset and writes the merged set.
  That read-modify-write is safe only because nobody else changes the same
  RRset meanwhile: the gateway serialises calls per name with a lock, and this
  provider also keeps its own per-name lock so it is safe when used on its own.
  A human editing the same ``_acme-challenge`` RRset at the same moment could
  still be overwritten.
* TXT content must be quoted (``"value"``); unquoted content is refused with
  HTTP 422. Other records of the RRset (and their ``disabled`` flag) are kept
  exactly as PowerDNS returned them.
* Removing the last value deletes the RRset instead of leaving an empty one.
* The current RRset is read from the whole zone: the ``rrset_name`` filter of
  ``GET .../zones/<zone>`` hides disabled records (seen on 4.7), which a
  REPLACE would then silently delete.
* With the sqlite3 backend, concurrent writes (to any zone) can fail with HTTP
  500 "database is locked"; PowerDNS rolls such a change back, and we retry
  server errors twice after a short pause. Every request we send is safe to
  repeat (reads, and PATCHes that set or delete a whole RRset).
"""

from __future__ import annotations

import asyncio
import contextlib
import json as json_module
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from urllib.parse import quote

from lib.names import is_within
from lib.settings import Settings
from providers._dns import parent_names, walk_up
from providers._http import (
    MAX_ERROR_TEXT,
    ApiSession,
    ProxyConfig,
    Reply,
    is_http_url,
    secret_setting,
)
from providers.base import Provider, ProviderContext, ProviderError, ProviderTimeout

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = (
    "POWERDNS_API_URL", "POWERDNS_API_KEY", "POWERDNS_API_KEY_FILE", "POWERDNS_ZONE",
    "POWERDNS_SERVER_ID", "POWERDNS_TTL", "POWERDNS_TIMEOUT",
)

_KEY_HINT = "check POWERDNS_API_KEY and api=yes / api-key in pdns.conf"
# Server errors are retried (see _request); bounded so a broken server fails fast.
_ATTEMPTS = 3
_RETRY_DELAY = 0.2


@dataclass(frozen=True)
class PowerDnsSettings:
    api_url: str
    # repr=False: a settings object printed in a traceback or debug log must not show the key.
    api_key: str = field(repr=False)
    server_id: str = "localhost"
    zone: str | None = None
    ttl: int = 60
    timeout: float = 10.0
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


def quote_txt(value: str) -> str:
    """*value* as PowerDNS wants TXT content: one quoted character-string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def unquote_txt(content: str) -> str:
    """The text of TXT *content* (``"a" "b"`` -> ``ab``), or *content* itself if unquoted."""
    text = content.strip()
    if not text.startswith('"'):
        return content
    out: list[str] = []
    i, inside = 0, False
    while i < len(text):
        char = text[i]
        if char == '"':
            inside = not inside
        elif inside and char == "\\" and i + 1 < len(text):
            digits = text[i + 1 : i + 4]
            if len(digits) == 3 and digits.isdigit():
                out.append(chr(int(digits)))
                i += 3
            else:
                out.append(text[i + 1])
                i += 1
        elif inside:
            out.append(char)
        i += 1
    return "".join(out)


class PowerDnsProvider(Provider):
    """TXT records through the PowerDNS Authoritative HTTP API."""

    name: ClassVar[str] = "powerdns"

    def __init__(self, settings: PowerDnsSettings) -> None:
        self.settings = settings
        self._api = _PowerDnsSession(self.name, settings)
        # Per-name locks with a count of holders and waiters, so entries are
        # dropped when unused and the dict stays as small as the work in flight.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        api_url = settings.require("POWERDNS_API_URL", "the PowerDNS webserver URL")
        if api_url:
            if not is_http_url(api_url):
                settings.problem(f"POWERDNS_API_URL={api_url!r} must be an http:// or https:// URL")
            api_url = api_url.rstrip("/")
            if api_url.endswith("/api/v1"):
                api_url = api_url[: -len("/api/v1")]
        api_key = secret_setting(settings, "POWERDNS_API_KEY")
        zone = settings.zone("POWERDNS_ZONE")
        return cls(
            PowerDnsSettings(
                api_url=api_url,
                api_key=api_key or "",
                server_id=settings.get("POWERDNS_SERVER_ID", "localhost") or "localhost",
                zone=zone,
                ttl=settings.integer("POWERDNS_TTL", 60, 1, 86400),
                timeout=settings.duration("POWERDNS_TIMEOUT", 10.0, 0.1, 300.0),
                proxy=ProxyConfig.from_settings(settings),
            )
        )

    async def open(self) -> None:
        self._api.open()

    async def aclose(self) -> None:
        await self._api.close()

    async def add_txt(self, fqdn: str, value: str) -> None:
        async with self._name_lock(fqdn):
            zone_id, zone_name = await self._find_zone(fqdn)
            ttl, records = await self._read_rrset(zone_id, fqdn)
            if any(unquote_txt(r["content"]) == value and not r.get("disabled") for r in records):
                log.debug("powerdns: %s already has the value", fqdn)
                return
            # A disabled copy of the value is replaced by an enabled one.
            kept = [r for r in records if unquote_txt(r["content"]) != value]
            kept.append({"content": quote_txt(value), "disabled": False})
            await self._patch(zone_id, fqdn, "REPLACE", kept, ttl or self.settings.ttl)
            log.info(
                "powerdns: added a TXT value at %s in zone %s (%d now)", fqdn, zone_name, len(kept)
            )

    async def remove_txt(self, fqdn: str, value: str) -> None:
        async with self._name_lock(fqdn):
            zone_id, zone_name = await self._find_zone(fqdn)
            ttl, records = await self._read_rrset(zone_id, fqdn)
            kept = [r for r in records if unquote_txt(r["content"]) != value]
            if len(kept) == len(records):
                log.debug("powerdns: %s does not have the value; nothing to remove", fqdn)
                return
            if kept:
                await self._patch(zone_id, fqdn, "REPLACE", kept, ttl or self.settings.ttl)
            else:
                await self._patch(zone_id, fqdn, "DELETE", [], None)
            log.info(
                "powerdns: removed a TXT value at %s in zone %s (%d left)",
                fqdn,
                zone_name,
                len(kept),
            )

    @contextlib.asynccontextmanager
    async def _name_lock(self, fqdn: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(fqdn, (asyncio.Lock(), 0))
        self._locks[fqdn] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[fqdn]
            if users <= 1:
                del self._locks[fqdn]
            else:
                self._locks[fqdn] = (lock, users - 1)

    # --- the API -----------------------------------------------------------

    def _server_url(self) -> str:
        return f"{self.settings.api_url}/api/v1/servers/{quote(self.settings.server_id, safe='')}"

    async def _find_zone(self, fqdn: str) -> tuple[str, str]:
        """The id and name (no trailing dot) of the zone that holds *fqdn*."""
        if self.settings.zone is not None:
            zone = self.settings.zone
            if not is_within(fqdn, zone):
                raise self.error(
                    f"{fqdn} is not inside POWERDNS_ZONE={zone}",
                    hint="unset POWERDNS_ZONE to find each name's zone",
                )
            zone_id = await self._zone_id(zone)
            if zone_id is None:
                raise self.error(
                    f"zone {zone} not found on server {self.settings.server_id}",
                    hint="create the zone in PowerDNS or fix POWERDNS_ZONE / POWERDNS_SERVER_ID",
                )
            return zone_id, zone
        found = await walk_up(parent_names(fqdn, every_label=True), self._zone_id)
        if found is not None:
            zone, zone_id = found
            return zone_id, zone
        raise self.error(
            f"no zone on server {self.settings.server_id} contains {fqdn}",
            hint="create the zone in PowerDNS, or set POWERDNS_ZONE / POWERDNS_SERVER_ID",
        )

    async def _zone_id(self, zone: str) -> str | None:
        """The API id of *zone*, or None if the server has no such zone."""
        wanted = zone + "."
        # Servers that ignore the filter return every zone; the loop copes with both.
        zones = await self._request(
            "GET", f"{self._server_url()}/zones", params={"zone": wanted}, what="the zones list"
        )
        if not isinstance(zones, list):
            raise self.error("the zones list is not a JSON list")
        for item in zones:
            if isinstance(item, dict) and str(item.get("name", "")).lower() == wanted:
                return str(item.get("id") or wanted)
        return None

    def _zone_url(self, zone_id: str) -> str:
        # Zone ids are opaque and may contain characters such as "/" (as "=2F").
        return f"{self._server_url()}/zones/{quote(zone_id, safe='=')}"

    async def _read_rrset(self, zone_id: str, fqdn: str) -> tuple[int | None, list[dict[str, Any]]]:
        """The TTL and records of the TXT RRset at *fqdn* (``None, []`` if absent)."""
        owner = fqdn + "."
        # The whole zone, not ?rrset_name=&rrset_type=: PowerDNS 4.7 leaves
        # disabled records out of that filtered answer, and our REPLACE would
        # then delete them.
        zone = await self._request("GET", self._zone_url(zone_id), what=f"zone {zone_id}")
        if not isinstance(zone, dict) or not isinstance(zone.get("rrsets"), list):
            raise self.error(f"zone {zone_id}: the answer has no rrsets list")
        for rrset in zone["rrsets"]:
            if (
                isinstance(rrset, dict)
                and str(rrset.get("name", "")).lower() == owner
                and rrset.get("type") == "TXT"
            ):
                records = [
                    {"content": str(r["content"]), "disabled": bool(r.get("disabled", False))}
                    for r in rrset.get("records", [])
                    if isinstance(r, dict) and "content" in r
                ]
                ttl = rrset.get("ttl")
                return (ttl if isinstance(ttl, int) else None), records
        return None, []

    async def _patch(
        self,
        zone_id: str,
        fqdn: str,
        changetype: str,
        records: list[dict[str, Any]],
        ttl: int | None,
    ) -> None:
        rrset: dict[str, Any] = {"name": fqdn + ".", "type": "TXT", "changetype": changetype}
        if changetype == "REPLACE":
            rrset["ttl"] = ttl
            rrset["records"] = records
        await self._request(
            "PATCH", self._zone_url(zone_id), json={"rrsets": [rrset]}, what=f"zone {zone_id}"
        )

    async def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Any:
        """Send one API request; the JSON answer on 2xx, a ProviderError otherwise.

        Server errors (5xx) are retried a few times: with the sqlite3 backend,
        two concurrent writes make one fail with "database is locked", and
        PowerDNS rolls the failed change back. Every request we send may be
        repeated safely: GETs, and PATCHes that set a whole RRset or delete it.
        """
        headers = {"X-API-Key": self.settings.api_key, "Accept": "application/json"}
        for attempt in range(1, _ATTEMPTS + 1):
            reply = await self._api.send(
                method, url, what=what, headers=headers, params=params, json=json
            )
            status = reply.status
            if 200 <= status < 300:
                if not reply.text:
                    return None
                try:
                    return json_module.loads(reply.text)
                except ValueError as exc:
                    raise self.error(f"{what}: HTTP {status} with a body that is not JSON") from exc
            if status < 500 or attempt == _ATTEMPTS:
                raise self._status_error(status, reply, what)
            log.warning("powerdns: %s: HTTP %s (%s); retrying", what, status, _error_text(reply))
            await asyncio.sleep(_RETRY_DELAY * attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _status_error(self, status: int, reply: Reply, what: str) -> Exception:
        detail = _error_text(reply)
        if status in (401, 403):
            return self.error(f"the API refused the key (HTTP {status})", hint=_KEY_HINT)
        if status == 404:
            return self.error(
                f"{what} not found (HTTP 404)",
                hint="check POWERDNS_SERVER_ID and that the zone exists; "
                "api=yes must be set in pdns.conf",
            )
        if status == 422:
            return self.error(f"{what}: PowerDNS refused the change: {detail or 'HTTP 422'}")
        suffix = f": {detail}" if detail else ""
        return self.error(f"{what}: HTTP {status}{suffix}")


class _PowerDnsSession(ApiSession):
    """The API session, with PowerDNS's wording for a silent or unreachable server."""

    def __init__(self, provider: str, settings: PowerDnsSettings) -> None:
        super().__init__(
            provider,
            timeout=settings.timeout,
            proxy=settings.proxy,
            url_setting="POWERDNS_API_URL",
        )
        self.api_url = settings.api_url

    def timed_out(self, what: str) -> ProviderError:
        return ProviderTimeout(
            self.provider,
            f"no answer from {self.api_url} within {self.timeout:g}s",
            hint="check POWERDNS_API_URL, the network and any proxy, or raise POWERDNS_TIMEOUT",
        )

    def unreachable(self, url: str, reason: str) -> ProviderError:
        return ProviderError(
            self.provider,
            f"cannot reach {self.api_url}: {reason}",
            hint="check POWERDNS_API_URL, webserver=yes in pdns.conf and any proxy",
        )


def _error_text(reply: Reply) -> str:
    """PowerDNS's ``{"error": ...}`` text, or the start of a plain body, on one line."""
    data = reply.data
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return " ".join(data["error"].split())[:MAX_ERROR_TEXT]
    return reply.one_line()
