"""Cloudflare: TXT records through the Cloudflare API v4.

Settings:

* ``CLOUDFLARE_API_TOKEN`` or ``CLOUDFLARE_API_TOKEN_FILE`` (required): an API
  token (not the Global API Key) sent as ``Authorization: Bearer``.
* ``CLOUDFLARE_ZONE_ID``: the zone's id; skips the zone lookup, and with it the
  need for the Zone:Read permission. Every managed name must then be in that zone.
* ``CLOUDFLARE_API_URL``: default ``https://api.cloudflare.com/client/v4``.
* ``CLOUDFLARE_TTL``: TTL of the records, default 60 seconds (60 to 86400, or 1
  for Cloudflare's "automatic").
* ``CLOUDFLARE_TIMEOUT``: deadline of each API request, default 20 s.
* ``ALL_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY``: forward proxy for API calls.

Permissions: create the token with **Zone / DNS / Edit** (and **Zone / Zone /
Read** unless ``CLOUDFLARE_ZONE_ID`` is set) for the zones of the managed names.

How it talks to the API:

* The zone of a name is the first of its parent names, walking up the labels,
  that ``GET /zones?name=<candidate>`` returns; the answer is cached.
* ``GET /zones/<id>/dns_records?type=TXT&name=<fqdn>`` lists the TXT records at
  the name (paged). Adding a value already present makes no change; removing
  looks the record ids up again on every call, so records written before a
  restart (or by another gateway) are found and deleted too.
* ``POST /zones/<id>/dns_records`` creates one record per value;
  ``DELETE /zones/<id>/dns_records/<record id>`` removes one.

Quirks: record names are full names (``_acme-challenge.www.example.com``). The
API documents TXT content as quoted RFC 1035 character strings, so values are
sent in double quotes; records created unquoted by other tools are recognised
too. "An identical record already exists" (81058) on create and "Record does
not exist" (81044) on delete count as success. Errors show Cloudflare's
``errors[].message``; permission errors (HTTP 401/403, codes 10000, 9109, ...)
come with a hint about the token's permissions.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from urllib.parse import quote

from lib.settings import Settings
from providers._dns import ZoneCache, unquote
from providers._http import (
    ApiSession,
    ProxyConfig,
    api_url_setting,
    json_objects,
    secret_setting,
    timeout_setting,
)
from providers.base import Provider, ProviderContext, ProviderError

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = (
    "CLOUDFLARE_API_TOKEN", "CLOUDFLARE_API_TOKEN_FILE", "CLOUDFLARE_ZONE_ID",
    "CLOUDFLARE_API_URL", "CLOUDFLARE_TTL", "CLOUDFLARE_TIMEOUT",
)

NAME = "cloudflare"
DEFAULT_API_URL = "https://api.cloudflare.com/client/v4"
DEFAULT_TTL = 60
CODE_IDENTICAL_RECORD = 81058
CODE_NO_SUCH_RECORD = 81044
# Authentication error, invalid access token, missing or malformed auth headers.
AUTH_CODES = frozenset({10000, 9109, 9106, 9103, 6003, 6111})
PERMISSION_HINT = "Does your API token have Zone:DNS:Edit for this zone?"
PAGE_SIZE = 100
MAX_PAGES = 20
MAX_CACHED_ZONES = 10_000
_ZONE_ID = re.compile(r"[0-9a-f]{32}")  # used with fullmatch


@dataclass(frozen=True)
class CloudflareSettings:
    token: str = field(repr=False)
    zone_id: str | None = None
    api_url: str = DEFAULT_API_URL
    ttl: int = DEFAULT_TTL
    timeout: float = 20.0
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


def _quoted(value: str) -> str:
    # dns-01 values are base64url: no quote or backslash needs escaping.
    return f'"{value}"'


def _errors(data: object) -> tuple[frozenset[int], str]:
    """Cloudflare's error codes and messages (``errors[]`` with their ``error_chain``)."""
    codes: set[int] = set()
    texts: list[str] = []

    def walk(items: object) -> None:
        if not isinstance(items, list):
            return
        for item in items:
            if not isinstance(item, dict):
                continue
            code = item.get("code")
            message = " ".join(str(item.get("message", "")).split())
            if isinstance(code, int):
                codes.add(code)
                texts.append(f"{message} ({code})" if message else str(code))
            elif message:
                texts.append(message)
            walk(item.get("error_chain"))

    if isinstance(data, dict):
        walk(data.get("errors"))
    return frozenset(codes), "; ".join(texts)[:300]


class _Client:
    """All traffic with the Cloudflare API."""

    def __init__(self, settings: CloudflareSettings) -> None:
        self._settings = settings
        self._api = ApiSession(
            NAME, timeout=settings.timeout, proxy=settings.proxy, url_setting="CLOUDFLARE_API_URL"
        )

    async def close(self) -> None:
        await self._api.close()

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        allow: frozenset[int] = frozenset(),
    ) -> dict[str, Any]:
        """One request; an error whose codes are all in *allow* is returned, not raised."""
        headers = {"Authorization": f"Bearer {self._settings.token}", "Accept": "application/json"}
        reply = await self._api.send(
            method,
            self._settings.api_url + path,
            what=f"{method} {path}",
            headers=headers,
            params=params,
            json=body,
        )
        status, data = reply.status, reply.data
        codes, messages = _errors(data)
        if status < 400 and isinstance(data, dict) and data.get("success") is True:
            return data
        if codes and codes <= allow and isinstance(data, dict):
            return data
        message = f"{method} {path}: HTTP {status}"
        if messages:
            message += f": {messages}"
        elif not isinstance(data, dict):
            message += f": {reply.one_line()}"
        hint = PERMISSION_HINT if status in (401, 403) or codes & AUTH_CODES else None
        raise ProviderError(NAME, message, hint=hint)

    async def find_zone(self, name: str) -> str | None:
        answer = await self.call("GET", "/zones", params={"name": name})
        for zone in _results(answer):
            if str(zone.get("name", "")).lower() == name and isinstance(zone.get("id"), str):
                return str(zone["id"])
        return None

    async def txt_records(self, zone_id: str, fqdn: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for page in range(1, MAX_PAGES + 1):
            params = {"type": "TXT", "name": fqdn, "per_page": str(PAGE_SIZE), "page": str(page)}
            answer = await self.call(
                "GET", f"/zones/{quote(zone_id, safe='')}/dns_records", params=params
            )
            found = _results(answer)
            records.extend(found)
            info = answer.get("result_info")
            pages = info.get("total_pages") if isinstance(info, dict) else None
            if not found or not isinstance(pages, int) or page >= pages:
                return records
        raise ProviderError(NAME, f"{fqdn} has more TXT records than we page through")

    async def create(self, zone_id: str, record: dict[str, Any]) -> dict[str, Any]:
        return await self.call(
            "POST",
            f"/zones/{quote(zone_id, safe='')}/dns_records",
            body=record,
            allow=frozenset({CODE_IDENTICAL_RECORD}),
        )

    async def delete(self, zone_id: str, record_id: str) -> dict[str, Any]:
        path = f"/zones/{quote(zone_id, safe='')}/dns_records/{quote(record_id, safe='')}"
        return await self.call("DELETE", path, allow=frozenset({CODE_NO_SUCH_RECORD}))


def _results(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return json_objects(NAME, answer.get("result"), "result")


class CloudflareProvider(Provider):
    """TXT records in zones hosted by Cloudflare."""

    name: ClassVar[str] = NAME

    def __init__(self, settings: CloudflareSettings) -> None:
        self.settings = settings
        self._client = _Client(settings)
        self._zones: ZoneCache[str] = ZoneCache(MAX_CACHED_ZONES)

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        token = secret_setting(settings, "CLOUDFLARE_API_TOKEN", "an API token with Zone:DNS:Edit")
        if token is not None and (not token.strip() or any(c.isspace() for c in token)):
            settings.problem("CLOUDFLARE_API_TOKEN contains blanks; paste the token alone")
        zone_id = settings.get("CLOUDFLARE_ZONE_ID")
        if zone_id is not None and not _ZONE_ID.fullmatch(zone_id.lower()):
            settings.problem(f"CLOUDFLARE_ZONE_ID={zone_id!r} is not a 32-digit hex zone id")
        api_url = api_url_setting(settings, "CLOUDFLARE_API_URL", DEFAULT_API_URL)
        ttl = settings.integer("CLOUDFLARE_TTL", DEFAULT_TTL, 1, 86400)
        if 1 < ttl < 60:
            settings.problem(f"CLOUDFLARE_TTL={ttl}: Cloudflare wants 1 (automatic) or 60-86400")
            ttl = DEFAULT_TTL
        return cls(
            CloudflareSettings(
                token=token or "",
                zone_id=zone_id.lower() if zone_id else None,
                api_url=api_url,
                ttl=ttl,
                timeout=timeout_setting(settings, "CLOUDFLARE_TIMEOUT", context),
                proxy=ProxyConfig.from_settings(settings),
            )
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def _zone_id(self, fqdn: str) -> str:
        if self.settings.zone_id:
            return self.settings.zone_id
        zone_id = await self._zones.walk_up(fqdn, self._client.find_zone)
        if zone_id is None:
            raise self.error(
                f"no Cloudflare zone for {fqdn} visible to this API token",
                hint="Does your API token have Zone:Zone:Read for this zone? "
                "(or set CLOUDFLARE_ZONE_ID)",
            )
        return zone_id

    async def _matching(self, zone_id: str, fqdn: str, value: str) -> list[dict[str, Any]]:
        return [
            record
            for record in await self._client.txt_records(zone_id, fqdn)
            if str(record.get("name", "")).lower() == fqdn
            and unquote(str(record.get("content", ""))) == value
        ]

    async def add_txt(self, fqdn: str, value: str) -> None:
        zone_id = await self._zone_id(fqdn)
        if await self._matching(zone_id, fqdn, value):
            log.info("cloudflare: TXT at %s already holds the value", fqdn)
            return
        record = {"type": "TXT", "name": fqdn, "content": _quoted(value), "ttl": self.settings.ttl}
        answer = await self._client.create(zone_id, record)
        if answer.get("success") is not True:
            log.info("cloudflare: TXT at %s was added meanwhile", fqdn)
            return
        log.info("cloudflare: added TXT at %s", fqdn)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        zone_id = await self._zone_id(fqdn)
        records = await self._matching(zone_id, fqdn, value)
        if not records:
            log.info("cloudflare: TXT at %s does not hold the value; nothing to remove", fqdn)
            return
        for record in records:
            record_id = record.get("id")
            if not isinstance(record_id, str) or not record_id:
                raise self.error(f"a TXT record at {fqdn} is listed without an id")
            await self._client.delete(zone_id, record_id)
        log.info("cloudflare: removed TXT at %s (%d record(s))", fqdn, len(records))
