"""OpenProvider: TXT records through the OpenProvider REST API (v1beta).

This is the original gateway's provider, rebuilt: its settings load it unchanged,
either as ``PROVIDER=openprovider`` or as ``DNSAPI_MODULE=providers.openprovider``
+ ``DNSAPI_CLASS=OpenProvider``.

Settings:

* ``DNSAPI_USERNAME`` (required): the OpenProvider user the API logs in as.
* ``DNSAPI_PASSWORD`` or ``DNSAPI_PASSWORD_FILE`` (required): its password.
* ``OPENPROVIDER_API_URL``: API base including the version, default
  ``https://api.openprovider.eu/v1beta`` (the test environment CTE is
  ``https://api.cte.openprovider.eu/v1beta``).
* ``OPENPROVIDER_TTL``: TTL of the records, default 900 seconds (600 to 86400).
* ``OPENPROVIDER_TIMEOUT``: deadline of each API request, default 20 s.
* ``ALL_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY``: forward proxy for API calls.

Permissions: the user needs API access in the OpenProvider control panel and
the DNS zones of the managed names in its (reseller) account. If the account
restricts API access to whitelisted IPs, the gateway's outgoing address (or its
proxy's) must be on that list. The login asks for a token valid from any IP.

How it talks to the API:

* ``POST /auth/login`` returns a bearer token, documented to live 48 hours. It
  is cached and shared by every change; a 401 answer (expired or revoked token)
  makes us log in again once and retry the request.
* The zone of a name is the first of its parent names, walking up the labels,
  that ``GET /dns/zones?name_pattern=<candidate>`` returns; the answer is cached.
* ``GET /dns/zones/<zone>/records?type=TXT`` lists the zone's TXT records
  (paged) so that adding a present value and removing an absent one make no call.
* ``PUT /dns/zones/<zone>`` with ``records.add`` or ``records.remove`` changes one
  value and leaves every other record alone (we never use ``replace``).

Quirks: record names in updates are relative to the zone (``_acme-challenge.www``
in ``example.com``) while listings show them in full; listings may show TXT
values in double quotes, so both forms are compared; error answers can come as
JSON with a ``text/plain`` content type; a duplicate ``add`` answers error 817,
which counts as success. OpenProvider's record format documentation accepts
the TTLs 900, 3600, 10800, 21600, 43200 and 86400 (it stores others as 86400),
hence the default of 900, the original gateway's; other REST clients use 600
as the minimum, so 600 is allowed too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self
from urllib.parse import quote, urlsplit

from lib.settings import Settings
from providers._dns import ZoneCache, unquote
from providers._http import (
    ApiSession,
    ProxyConfig,
    Reply,
    api_url_setting,
    is_http_url,
    json_objects,
    secret_setting,
    timeout_setting,
)
from providers.base import Provider, ProviderContext, ProviderError

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = (
    "DNSAPI_USERNAME", "DNSAPI_PASSWORD", "DNSAPI_PASSWORD_FILE", "OPENPROVIDER_API_URL",
    "OPENPROVIDER_TTL", "OPENPROVIDER_TIMEOUT",
)

NAME = "openprovider"
DEFAULT_API_URL = "https://api.openprovider.eu/v1beta"
DEFAULT_TTL = 900
# The documented token lifetime is 48 hours; renewing at half of it keeps a
# clock skew or a long-running request from ever meeting an expired token.
TOKEN_MAX_AGE = 24 * 3600.0
# Error codes in the JSON body of OpenProvider's answers.
CODE_AUTH_FAILED = 196
CODE_DUPLICATE_RECORD = 817
PAGE_SIZE = 500
MAX_PAGES = 40
# Names are cached per challenge name; a bound keeps a long-running gateway small.
MAX_CACHED_ZONES = 10_000
CREDENTIALS_HINT = (
    "check DNSAPI_USERNAME and DNSAPI_PASSWORD, and that this OpenProvider user has "
    "API access (and, if used, an IP whitelist that includes the gateway)"
)


@dataclass(frozen=True)
class OpenProviderSettings:
    username: str
    password: str = field(repr=False)
    api_url: str = DEFAULT_API_URL
    ttl: int = DEFAULT_TTL
    timeout: float = 20.0
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


@dataclass(frozen=True)
class _Zone:
    name: str
    id: int


class _ApiError(ProviderError):
    """The API answered with an error; ``code`` is OpenProvider's error code, if any."""

    def __init__(self, message: str, *, code: int | None, hint: str | None = None) -> None:
        super().__init__(NAME, message, hint=hint)
        self.code = code


def _relative(fqdn: str, zone: str) -> str:
    return "" if fqdn == zone else fqdn[: -len(zone) - 1]


def _describe(data: object, reply: Reply) -> tuple[int | None, str]:
    """The error code and a one-line description from an answer body."""
    if isinstance(data, dict):
        code = data.get("code")
        desc = data.get("desc") or data.get("message") or data.get("data") or ""
        return (code if isinstance(code, int) else None), " ".join(str(desc).split())[:200]
    return None, reply.one_line()


class _Client:
    """All traffic with the OpenProvider API: login, token reuse, JSON requests."""

    def __init__(self, settings: OpenProviderSettings) -> None:
        self._settings = settings
        self._api = ApiSession(
            NAME, timeout=settings.timeout, proxy=settings.proxy, url_setting="OPENPROVIDER_API_URL"
        )
        self._token: str | None = None
        self._token_born = 0.0
        # One login at a time: concurrent changes wait for and share one token.
        self._login_lock = asyncio.Lock()

    async def close(self) -> None:
        await self._api.close()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> Reply:
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self._api.send(
            method,
            self._settings.api_url + path,
            what=f"{method} {path}",
            headers=headers,
            params=params,
            json=body,
        )

    def _check(self, what: str, reply: Reply) -> dict[str, Any]:
        status, data = reply.status, reply.data
        code, desc = _describe(data, reply)
        if status < 400 and isinstance(data, dict) and not code:
            return data
        message = f"{what}: HTTP {status}"
        if code:
            message += f", error {code}"
        if desc:
            message += f": {desc}"
        hint = CREDENTIALS_HINT if status in (401, 403) or code == CODE_AUTH_FAILED else None
        raise _ApiError(message, code=code, hint=hint)

    async def _login(self) -> str:
        body = {
            "username": self._settings.username,
            "password": self._settings.password,
            "ip": "0.0.0.0",  # noqa: S104 - "token valid from any address", not a bind
        }
        reply = await self._send("POST", "/auth/login", body=body)
        answer = self._check(f"login as {self._settings.username}", reply)
        token = (answer.get("data") or {}).get("token")
        if not isinstance(token, str) or not token:
            raise ProviderError(NAME, "login answer holds no token", hint=CREDENTIALS_HINT)
        log.info("openprovider: logged in as %s", self._settings.username)
        return token

    async def _bearer(self) -> str:
        async with self._login_lock:
            if self._token is None or time.monotonic() - self._token_born > TOKEN_MAX_AGE:
                self._token = await self._login()
                self._token_born = time.monotonic()
            return self._token

    async def _forget(self, token: str) -> None:
        async with self._login_lock:
            # Another request may already have replaced it with a fresh one.
            if self._token == token:
                self._token = None

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One authenticated request; a rejected token is renewed once."""
        token = await self._bearer()
        reply = await self._send(method, path, params=params, body=body, token=token)
        if reply.status == 401:
            log.info("openprovider: token rejected, logging in again")
            await self._forget(token)
            token = await self._bearer()
            reply = await self._send(method, path, params=params, body=body, token=token)
        return self._check(f"{method} {path}", reply)

    async def find_zone(self, name: str) -> _Zone | None:
        answer = await self.call("GET", "/dns/zones", params={"name_pattern": name})
        for zone in _results(answer):
            if str(zone.get("name", "")).lower().rstrip(".") == name and not zone.get("is_deleted"):
                zone_id = zone.get("id")
                if not isinstance(zone_id, int):
                    raise ProviderError(NAME, f"zone {name} has no numeric id in the answer")
                return _Zone(name, zone_id)
        return None

    async def txt_records(self, zone: _Zone) -> list[dict[str, Any]]:
        path = f"/dns/zones/{quote(zone.name, safe='')}/records"
        records: list[dict[str, Any]] = []
        for _ in range(MAX_PAGES):
            params = {"type": "TXT", "limit": str(PAGE_SIZE), "offset": str(len(records))}
            answer = await self.call("GET", path, params=params)
            page = _results(answer)
            records.extend(page)
            total = (answer.get("data") or {}).get("total")
            if not page or not isinstance(total, int) or len(records) >= total:
                return records
        raise ProviderError(NAME, f"zone {zone.name} lists more TXT records than we page through")

    async def update(self, zone: _Zone, action: str, record: dict[str, Any]) -> None:
        body = {"id": zone.id, "name": zone.name, "records": {action: [record]}}
        answer = await self.call("PUT", f"/dns/zones/{quote(zone.name, safe='')}", body=body)
        if (answer.get("data") or {}).get("success") is not True:
            raise ProviderError(NAME, f"{action} in zone {zone.name} was not confirmed")


def _results(answer: dict[str, Any]) -> list[dict[str, Any]]:
    data = answer.get("data")
    results = data.get("results") if isinstance(data, dict) else None
    return json_objects(NAME, results, "data.results")


class OpenProvider(Provider):
    """TXT records in DNS zones hosted by OpenProvider."""

    name: ClassVar[str] = NAME

    def __init__(self, settings: OpenProviderSettings) -> None:
        self.settings = settings
        self._client = _Client(settings)
        self._zones: ZoneCache[_Zone] = ZoneCache(MAX_CACHED_ZONES)

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        username = settings.require("DNSAPI_USERNAME", "the OpenProvider API user")
        password = secret_setting(settings, "DNSAPI_PASSWORD")
        api_url = api_url_setting(settings, "OPENPROVIDER_API_URL", DEFAULT_API_URL)
        parts = urlsplit(api_url)
        if (
            is_http_url(api_url)
            and parts.scheme == "http"
            and parts.hostname not in ("127.0.0.1", "::1", "localhost")
        ):
            log.warning("OPENPROVIDER_API_URL uses plain http: the password crosses unencrypted")
        return cls(
            OpenProviderSettings(
                username=username,
                password=password or "",
                api_url=api_url,
                ttl=settings.integer("OPENPROVIDER_TTL", DEFAULT_TTL, 600, 86400),
                timeout=timeout_setting(settings, "OPENPROVIDER_TIMEOUT", context),
                proxy=ProxyConfig.from_settings(settings),
            )
        )

    async def aclose(self) -> None:
        await self._client.close()

    async def _zone(self, fqdn: str) -> _Zone:
        zone = await self._zones.walk_up(fqdn, self._client.find_zone)
        if zone is None:
            raise self.error(
                f"no DNS zone for {fqdn} in this OpenProvider account",
                hint="is the domain's zone hosted at OpenProvider under this user?",
            )
        return zone

    async def _present(self, zone: _Zone, fqdn: str, value: str) -> list[dict[str, Any]]:
        """The zone's TXT records at *fqdn* holding *value* (quoted or not)."""
        relative = _relative(fqdn, zone.name)
        found = []
        for record in await self._client.txt_records(zone):
            name = str(record.get("name", "")).lower().rstrip(".")
            if name in (fqdn, relative) and unquote(str(record.get("value", ""))) == value:
                found.append(record)
        return found

    async def add_txt(self, fqdn: str, value: str) -> None:
        zone = await self._zone(fqdn)
        if await self._present(zone, fqdn, value):
            log.info("openprovider: TXT at %s already holds the value", fqdn)
            return
        record = {
            "name": _relative(fqdn, zone.name),
            "type": "TXT",
            "value": value,
            "ttl": self.settings.ttl,
        }
        try:
            await self._client.update(zone, "add", record)
        except _ApiError as exc:
            if exc.code != CODE_DUPLICATE_RECORD:
                raise
            log.info("openprovider: TXT at %s was added meanwhile", fqdn)
            return
        log.info("openprovider: added TXT at %s in zone %s", fqdn, zone.name)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        zone = await self._zone(fqdn)
        present = await self._present(zone, fqdn, value)
        if not present:
            log.info("openprovider: TXT at %s does not hold the value; nothing to remove", fqdn)
            return
        for listed in present:
            # The API matches removals on the record as it stores it, so send
            # back its own value and TTL rather than ours.
            ttl = listed.get("ttl")
            record = {
                "name": _relative(fqdn, zone.name),
                "type": "TXT",
                "value": str(listed.get("value")),
                "ttl": ttl if isinstance(ttl, int) else self.settings.ttl,
            }
            try:
                await self._client.update(zone, "remove", record)
            except _ApiError:
                # Gone meanwhile (another remover, or a manual edit) is success;
                # anything else is not.
                if await self._present(zone, fqdn, value):
                    raise
        log.info("openprovider: removed TXT at %s in zone %s", fqdn, zone.name)
