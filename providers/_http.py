"""HTTP plumbing shared by the REST providers (PowerDNS, OpenProvider, Cloudflare, ...).

The original gateway runs in a jail whose only way out is a forward proxy, set
with ``ALL_PROXY`` (or ``HTTPS_PROXY``) in the environment or the dotenv file.
:class:`ProxyConfig` reads those once, honours ``NO_PROXY``, and gives the proxy
URL for each request; :func:`new_session` makes an aiohttp session with bounded
timeouts that never reads proxy settings behind our back. :class:`ApiSession`
puts the two together for one provider: it opens the session on first use,
sends each request through the right proxy, and turns a timeout or an
unreachable server into :class:`ProviderTimeout` / :class:`ProviderError`.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError, ProviderTimeout

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = (
    "ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY",
    "all_proxy", "https_proxy", "http_proxy", "no_proxy",
)

# Error texts are shown to operators; a misbehaving server must not flood a log line.
MAX_ERROR_TEXT = 200


@dataclass(frozen=True)
class ProxyConfig:
    """Forward proxy for outbound API calls; ``None`` means connect directly."""

    https: str | None = None
    http: str | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> ProxyConfig:
        def first(*keys: str) -> str | None:
            for key in keys:
                value = settings.get(key)
                if value:
                    return value
            return None

        every = first("ALL_PROXY", "all_proxy")
        https = first("HTTPS_PROXY", "https_proxy") or every
        http = first("HTTP_PROXY", "http_proxy") or every
        no_proxy = tuple(
            item.strip().lower().lstrip(".")
            for item in (first("NO_PROXY", "no_proxy") or "").split(",")
            if item.strip()
        )
        for key, url in (("HTTPS_PROXY/ALL_PROXY", https), ("HTTP_PROXY/ALL_PROXY", http)):
            if url and urlsplit(url).scheme not in ("http", "https"):
                settings.problem(f"{key}={url!r}: only http:// and https:// proxies are supported")
        return cls(https=https, http=http, no_proxy=no_proxy)

    def for_url(self, url: str) -> str | None:
        """The proxy to use for *url*, or None to go direct."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if self._bypass(host):
            return None
        return self.https if parts.scheme == "https" else self.http

    def _bypass(self, host: str) -> bool:
        for entry in self.no_proxy:
            if entry == "*":
                return True
            if "/" in entry:
                try:
                    if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                        return True
                except ValueError:
                    continue
            elif host == entry or host.endswith("." + entry):
                return True
        return False


def new_session(timeout: float, user_agent: str = "acme-dns01-gateway") -> aiohttp.ClientSession:
    """A client session with an overall per-request deadline and no implicit proxy."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout, connect=min(timeout, 10.0)),
        headers={"User-Agent": user_agent},
        trust_env=False,
    )


@dataclass(frozen=True)
class Reply:
    """An API's answer: its status and its body as text."""

    status: int
    text: str

    @property
    def data(self) -> object:
        """The body as JSON, or None if it is empty or not JSON."""
        try:
            return json.loads(self.text) if self.text else None
        except ValueError:
            return None

    def one_line(self, limit: int = MAX_ERROR_TEXT) -> str:
        """The start of the body on one line, to quote in an error."""
        return " ".join(self.text.split())[:limit]


def describe(exc: Exception, proxy: str | None) -> str:
    """*exc* for an error message, without the password of the *proxy* URL."""
    text = f"{type(exc).__name__}: {exc}"
    # A proxy URL may carry credentials; aiohttp may echo it in messages.
    if proxy:
        password = urlsplit(proxy).password
        if password:
            text = text.replace(password, "***")
    return text[: MAX_ERROR_TEXT * 2]


class ApiSession:
    """The HTTP session of one REST provider, opened on first use.

    *url_setting* names the setting that holds the API's URL, for the hint when
    the server cannot be reached. Providers that word those failures otherwise
    override :meth:`timed_out` and :meth:`unreachable`.
    """

    def __init__(
        self, provider: str, *, timeout: float, proxy: ProxyConfig, url_setting: str
    ) -> None:
        self.provider = provider
        self.timeout = timeout
        self.proxy = proxy
        self.url_setting = url_setting
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = new_session(self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: dict[str, str],
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
    ) -> Reply:
        """One request; *what* names it in a timeout error. HTTP errors are returned."""
        session = self.open()
        proxy = self.proxy.for_url(url)
        try:
            async with session.request(
                method, url, params=params, json=json, headers=headers, proxy=proxy
            ) as response:
                return Reply(response.status, await response.text(errors="replace"))
        except TimeoutError:
            raise self.timed_out(what) from None
        except aiohttp.ClientError as exc:
            raise self.unreachable(url, describe(exc, proxy)) from None

    def timed_out(self, what: str) -> ProviderError:
        return ProviderTimeout(self.provider, f"{what} got no answer within {self.timeout:g}s")

    def unreachable(self, url: str, reason: str) -> ProviderError:
        return ProviderError(
            self.provider,
            f"cannot reach {urlsplit(url).netloc}: {reason}",
            hint=f"check {self.url_setting} and the proxy settings",
        )


def json_objects(provider: str, value: object, where: str) -> list[dict[str, Any]]:
    """The objects in the list *value* found at *where* in an answer; none if it is absent."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProviderError(provider, f"unexpected answer: {where} is not a list")
    return [item for item in value if isinstance(item, dict)]


def is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def api_url_setting(settings: Settings, key: str, default: str) -> str:
    """The API base URL in *key* (or *default*), without a trailing slash."""
    url = (settings.get(key) or default).rstrip("/")
    if not is_http_url(url):
        settings.problem(f"{key}={url!r} is not an http(s) URL")
    return url


def secret_setting(settings: Settings, key: str, purpose: str | None = None) -> str | None:
    """The secret in *key* or the file *key*_FILE names; a problem if neither is set.

    None also when ``Settings.secret`` has recorded a problem with it (both
    set, or a file that cannot be read).
    """
    secret = settings.secret(key)
    if secret is None and not settings.has(f"{key}_FILE"):
        settings.problem(f"{key} (or {key}_FILE) is required" + (f": {purpose}" if purpose else ""))
    return secret


def timeout_setting(settings: Settings, key: str, context: ProviderContext) -> float:
    """The deadline of each API request: *key*, else 20 s or the gateway's own, if shorter."""
    return settings.duration(key, min(20.0, context.timeout), 0.1, 300.0)
