"""HTTP plumbing shared by the REST providers (PowerDNS, OpenProvider, Cloudflare, ...).

The original gateway runs in a jail whose only way out is a forward proxy, set
with ``ALL_PROXY`` (or ``HTTPS_PROXY``) in the environment or the dotenv file.
:class:`ProxyConfig` reads those once, honours ``NO_PROXY``, and gives the proxy
URL for each request; :func:`new_session` makes an aiohttp session with bounded
timeouts that never reads proxy settings behind our back.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

from lib.settings import Settings


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
