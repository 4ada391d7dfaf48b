"""About a hundred DNS hosts through dns-lexicon (``pip install 'acme-dns01-gateway[lexicon]'``).

dns-lexicon (PyPI ``dns-lexicon``) speaks the APIs of Route 53, Azure, Google
Cloud DNS, Hetzner, OVH, Gandi, DigitalOcean, Linode, Namecheap, GoDaddy, deSEC,
Porkbun, Netcup, INWX and many more; the README's "Which provider for my DNS
host" lists them all. It is an optional extra: nothing else in the gateway
imports it.

Settings, in lexicon's own environment convention so that existing ones can be
reused as they are:

* ``LEXICON_PROVIDER`` (required): lexicon's name for the DNS host
  (``cloudflare``, ``route53``, ``hetzner``, ...).
* ``LEXICON_<PROVIDER>_<OPTION>``: that provider's options, named as lexicon
  names them (``LEXICON_CLOUDFLARE_AUTH_TOKEN``, ``LEXICON_POWERDNS_PDNS_SERVER``;
  lexicon's older form without ``AUTH_``, ``LEXICON_CLOUDFLARE_TOKEN``, works
  too). ``<KEY>_FILE`` reads any of them from a file. Keys the provider does not
  take are reported at start-up.
* ``LEXICON_ZONE``: the zone (or zones, comma-separated) holding the names; each
  name goes to the deepest listed zone that contains it. Without it the zone is
  found as lexicon finds it: the registered domain by the public suffix list
  (the copy shipped with tldextract; nothing is downloaded), moved down by
  ``LEXICON_DELEGATED`` for a delegated sub-zone, or, with
  ``LEXICON_RESOLVE_ZONE_NAME=1``, the zone the system resolver finds by SOA.
* ``LEXICON_TTL``: TTL of the records, default 60 s.
* ``LEXICON_API_URL``: replaces the provider's API base URL (its
  ``api_endpoint``), for a regional endpoint, a reverse proxy of your own, or a
  test double; refused for providers that have none.
* ``ALL_PROXY`` / ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY``: the forward
  proxy for lexicon's HTTP requests.
* ``PROVIDER_TIMEOUT``: the deadline of each change, all its requests included.

How it runs: each change is one thread (at most 4 at once; see
:mod:`providers._threads`) that builds lexicon's provider for the zone,
authenticates, lists the TXT records at the name, creates or deletes one value,
and lists them again; a server error (HTTP 5xx) runs it all again, twice at
most. lexicon's providers use ``requests``; in these threads
every request goes through the configured proxy (whatever the process
environment says) and gets what is left of the change's deadline as its
timeout, so a call the gateway gave up on ends at its next request instead of
writing late. Providers built on other HTTP libraries (Route 53's boto3, ...)
read the proxy from the process environment only, and are bounded by the
gateway's cancellation alone.

Guards, because lexicon's providers differ:

* Add and remove work on single values: an add makes no call when the value is
  listed already, a remove deletes only the records holding exactly the value.
* Some APIs set whole RRsets, and a provider may implement "create" by
  replacing the RRset, or "delete" by dropping it. After each change the values
  are listed again: a value other than ours that went missing is written back,
  and the change fails with an error saying that this provider cannot keep two
  values at one name (as a wildcard certificate needs). A value that another
  gateway removes in that very moment could be written back too: a stale value,
  never a missing one.
* Errors are one line naming the DNS host, the change and the name, with the
  values of secret-looking options (``TOKEN``, ``KEY``, ``PASSWORD``, ``SECRET``,
  ...) and of every ``_FILE`` replaced by ``***``. lexicon's and urllib3's debug
  logs, which can show whole requests, are kept at INFO or above.
"""

from __future__ import annotations

import argparse
import contextvars
import difflib
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

import requests

from lib.names import InvalidName, is_within, normalize_name
from lib.settings import Settings
from providers._dns import unquote
from providers._http import ProxyConfig, is_http_url
from providers._secrets import SECRET_NAME, redact, worth_hiding
from providers._threads import DaemonThreads
from providers.base import Provider, ProviderContext, ProviderError, ProviderTimeout

if TYPE_CHECKING:
    import tldextract

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them
# unimported); the LEXICON_<PROVIDER>_* options are covered by the LEXICON_ prefix.
SETTINGS = (
    "LEXICON_PROVIDER",
    "LEXICON_ZONE",
    "LEXICON_TTL",
    "LEXICON_DELEGATED",
    "LEXICON_RESOLVE_ZONE_NAME",
    "LEXICON_API_URL",
)
NAME = "lexicon"
DEFAULT_TTL = 60
WORKERS = 4
CONNECT_TIMEOUT = 10.0
MAX_DETAIL = 300
# A server error (HTTP 5xx) runs the whole change again, which is safe: it lists
# the values first. PowerDNS with sqlite3, say, answers 500 "database is locked"
# to one of two concurrent writes.
ATTEMPTS = 3
RETRY_DELAY = 0.2
INSTALL_HINT = "pip install 'acme-dns01-gateway[lexicon]'"
# lexicon's "auto" provider picks a provider by looking up nameservers with a
# subprocess, then needs that provider's options anyway: name the provider instead.
UNSUPPORTED = frozenset({"auto"})

# Which change a lexicon worker thread belongs to, for the requests hook: its
# proxy and deadline. A context variable, not shared state: each worker thread
# sets it for itself, and other threads never see it.
_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar(
    "acmegw_lexicon_scope", default=None
)


class LexiconUnavailable(ImportError):
    """dns-lexicon is not installed."""


def _lexicon_discovery() -> tuple[Callable[[], dict[str, bool]], Callable[[str], ModuleType]]:
    try:
        from lexicon._private.discovery import find_providers, load_provider_module
    except ImportError as exc:
        raise LexiconUnavailable(str(exc)) from exc
    return find_providers, load_provider_module


@dataclass(frozen=True)
class LexiconSettings:
    provider: str
    # repr=False: options and secrets hold credentials.
    options: Mapping[str, str] = field(default_factory=dict, repr=False)
    secrets: tuple[str, ...] = field(default=(), repr=False)
    zones: tuple[str, ...] = ()
    delegated: str | None = None
    resolve_zone_name: bool = False
    ttl: int = DEFAULT_TTL
    api_url: str | None = None
    timeout: float = 30.0
    proxy: ProxyConfig = field(default_factory=ProxyConfig)


@dataclass(frozen=True)
class _Scope:
    """What a worker thread's HTTP requests must honour."""

    proxy: ProxyConfig
    deadline: float

    def proxies(self, url: str) -> dict[str, str]:
        proxy = self.proxy.for_url(url)
        return {"http": proxy, "https": proxy} if proxy else {}

    def timeout(self, given: object) -> tuple[float, float]:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise requests.exceptions.Timeout("the change's deadline (PROVIDER_TIMEOUT) has passed")
        connect, read = min(CONNECT_TIMEOUT, left), left
        if isinstance(given, int | float):
            connect, read = min(connect, given), min(read, given)
        elif isinstance(given, tuple) and len(given) == 2:
            connect = min(connect, given[0]) if isinstance(given[0], int | float) else connect
            read = min(read, given[1]) if isinstance(given[1], int | float) else read
        return connect, read


def _route_requests() -> None:
    """Make ``requests`` honour the :class:`_Scope` of the calling thread (once per process).

    lexicon's providers call ``requests`` with neither a timeout nor a way to
    pass a proxy in; every request of every session ends in
    ``HTTPAdapter.send``, so that is wrapped. Outside lexicon's worker threads
    the wrapper changes nothing.
    """
    from requests.adapters import HTTPAdapter

    send = HTTPAdapter.send
    if getattr(send, "acmegw_scoped", False):
        return

    @functools.wraps(send)
    def scoped_send(self: HTTPAdapter, request: Any, stream: bool = False, timeout: Any = None,
                    verify: Any = True, cert: Any = None, proxies: Any = None) -> Any:
        scope = _SCOPE.get()
        if scope is not None:
            proxies = scope.proxies(str(request.url))
            timeout = scope.timeout(timeout)
        return send(self, request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                    proxies=proxies)

    scoped_send.acmegw_scoped = True  # type: ignore[attr-defined]
    setattr(HTTPAdapter, "send", scoped_send)  # noqa: B010 - a method, not an attribute


def _option_names(module: ModuleType) -> list[str]:
    """The options lexicon's provider *module* takes (``auth_token``, ``zone_id``, ...)."""
    parser = argparse.ArgumentParser(add_help=False)
    module.Provider.configure_parser(parser)
    return sorted(vars(parser.parse_args([])))


def _options(
    settings: Settings, provider: str, names: list[str]
) -> tuple[dict[str, str], list[str]]:
    """Each option's value from ``LEXICON_<PROVIDER>_<OPTION>`` (or lexicon's older form
    without ``AUTH_``, or either's ``_FILE``); and the values to keep out of messages."""
    prefix = f"LEXICON_{provider.upper()}_"
    options: dict[str, str] = {}
    secrets: list[str] = []
    known: set[str] = set()
    for name in names:
        key = prefix + name.upper()
        legacy = re.sub(r"(.*)_AUTH_(.*)", r"\1_\2", key)
        for candidate in dict.fromkeys((key, legacy)):
            known.update({candidate, candidate + "_FILE"})
            value = settings.secret(candidate)
            if value is None:
                continue
            options[name] = value
            if settings.has(candidate + "_FILE") or SECRET_NAME.search(name):
                secrets.append(value)
            break
    for key in settings.keys_with_prefix(prefix):
        if key not in known:
            takes = ", ".join(prefix + n.upper() for n in names) or "no options"
            settings.warn(f"{key}: lexicon's {provider} provider takes no such option "
                          f"(it takes {takes})")
    return options, secrets


def _lexicon_module(settings: Settings, provider: str) -> ModuleType | None:
    """lexicon's module for *provider*, or None with the problem recorded."""
    try:
        find_providers, load_provider_module = _lexicon_discovery()
    except LexiconUnavailable:
        settings.problem(f"PROVIDER=lexicon needs dns-lexicon: {INSTALL_HINT}")
        return None
    if not provider:
        return None
    available = find_providers()
    if provider not in available or provider in UNSUPPORTED:
        close = difflib.get_close_matches(provider, sorted(set(available) - UNSUPPORTED), n=3)
        settings.problem(f"LEXICON_PROVIDER={provider!r} is not one of lexicon's providers"
                         + (f" (did you mean {', '.join(close)}?)" if close else ""))
        return None
    if not available[provider]:
        settings.problem(f"lexicon's {provider} provider needs more packages: "
                         f"pip install 'dns-lexicon[{provider}]'")
        return None
    return load_provider_module(provider)


def _zones(settings: Settings) -> tuple[str, ...]:
    zones: list[str] = []
    for item in settings.items("LEXICON_ZONE"):
        try:
            if item.startswith("*"):
                raise InvalidName("is a wildcard")
            zones.append(normalize_name(item))
        except InvalidName as exc:
            settings.problem(f"LEXICON_ZONE: {item!r} is not a zone name: it {exc}")
    return tuple(zones)


class LexiconProvider(Provider):
    """TXT records through one of dns-lexicon's providers."""

    name: ClassVar[str] = NAME

    def __init__(self, settings: LexiconSettings, lexicon_class: type | None = None) -> None:
        self.settings = settings
        self._class = lexicon_class
        self._threads = DaemonThreads("lexicon", WORKERS)
        self._suffixes: tldextract.TLDExtract | None = None

    @property
    def label(self) -> str:
        return f"{NAME}/{self.settings.provider}" if self.settings.provider else NAME

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        provider = settings.require(
            "LEXICON_PROVIDER", "lexicon's name for the DNS host, e.g. cloudflare"
        ).lower()
        zones = _zones(settings)
        delegated = settings.get("LEXICON_DELEGATED")
        resolve_zone_name = settings.boolean("LEXICON_RESOLVE_ZONE_NAME")
        ttl = settings.integer("LEXICON_TTL", DEFAULT_TTL, 1, 86400)
        api_url = settings.get("LEXICON_API_URL")
        if api_url and not is_http_url(api_url):
            settings.problem(f"LEXICON_API_URL={api_url!r} is not an http(s) URL")
        proxy = ProxyConfig.from_settings(settings)
        module = _lexicon_module(settings, provider)
        options: dict[str, str] = {}
        secrets: list[str] = []
        if module is not None:
            options, secrets = _options(settings, provider, _option_names(module))
        secrets += [urlsplit(url).password or "" for url in (proxy.https, proxy.http) if url]
        chosen = cls(
            LexiconSettings(
                provider, options=MappingProxyType(options), secrets=worth_hiding(secrets),
                zones=zones, delegated=delegated, resolve_zone_name=resolve_zone_name,
                ttl=ttl, api_url=api_url, timeout=context.timeout, proxy=proxy,
            ),
            None if module is None else module.Provider,
        )
        if module is not None:
            chosen._check_options(settings, context)
        return chosen

    def _check_options(self, settings: Settings, context: ProviderContext) -> None:
        """Build lexicon's provider once, so that missing or wrong options stop start-up."""
        zone = self.settings.zones[0] if self.settings.zones else (
            context.managed_domains[0] if context.managed_domains else "example.com")
        try:
            client = self._lexicon_provider(zone)
        except Exception as exc:  # lexicon's providers raise anything on bad options
            settings.problem(f"lexicon's {self.settings.provider} provider refuses its settings: "
                             f"{self._describe(exc)}")
            return
        if self.settings.api_url and not hasattr(client, "api_endpoint"):
            settings.problem(f"LEXICON_API_URL: lexicon's {self.settings.provider} provider has "
                             "no API URL (api_endpoint) to replace")

    async def open(self) -> None:
        _route_requests()
        for name in ("lexicon", "urllib3"):
            logger = logging.getLogger(name)
            if logger.getEffectiveLevel() < logging.INFO:
                logger.setLevel(logging.INFO)

    async def add_txt(self, fqdn: str, value: str) -> None:
        await self._change("add", fqdn, value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        await self._change("remove", fqdn, value)

    # --- one change, in a worker thread ----------------------------------------

    async def _change(self, action: str, fqdn: str, value: str) -> None:
        _route_requests()  # for callers that skip open()
        deadline = time.monotonic() + self.settings.timeout
        try:
            await self._threads.run(lambda: self._in_thread(action, fqdn, value, deadline))
        except ProviderError:
            raise
        except Exception as exc:
            timed_out = isinstance(exc, requests.exceptions.Timeout)
            error = ProviderTimeout if timed_out else ProviderError
            raise error(self.label, f"{action} TXT at {fqdn}: {self._describe(exc)}",
                        hint=self._hint(exc)) from None

    def _in_thread(self, action: str, fqdn: str, value: str, deadline: float) -> None:
        token = _SCOPE.set(_Scope(self.settings.proxy, deadline))
        try:
            zone = self._zone_of(fqdn)
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    self._once(action, zone, fqdn, value)
                    return
                except requests.exceptions.HTTPError as exc:
                    status = exc.response.status_code if exc.response is not None else 0
                    if status < 500 or attempt == ATTEMPTS:
                        raise
                    log.warning("%s: %s TXT at %s: HTTP %s; trying again", self.label, action,
                                fqdn, status)
                    time.sleep(RETRY_DELAY * attempt)
        finally:
            _SCOPE.reset(token)

    def _once(self, action: str, zone: str, fqdn: str, value: str) -> None:
        client = self._lexicon_provider(zone)
        client.authenticate()
        try:
            if action == "add":
                self._add(client, zone, fqdn, value)
            else:
                self._remove(client, zone, fqdn, value)
        finally:
            client.cleanup()

    def _lexicon_provider(self, zone: str) -> Any:
        from lexicon.config import ConfigResolver

        name = self.settings.provider
        config = ConfigResolver().with_dict({  # type: ignore[no-untyped-call]
            "provider_name": name,
            "domain": zone,
            "ttl": self.settings.ttl,
            name: dict(self.settings.options),
        })
        assert self._class is not None
        client = self._class(config)
        if self.settings.api_url:
            client.api_endpoint = self.settings.api_url.rstrip("/")
        return client

    def _values(self, client: Any, zone: str, fqdn: str) -> list[tuple[dict[str, Any], str]]:
        """The TXT records at *fqdn*, each with its value (quotes removed)."""
        found = []
        for record in client.list_records("TXT", fqdn) or []:
            if not isinstance(record, dict):
                continue
            owner = str(record.get("name", "")).rstrip(".").lower()
            if fqdn in (owner, f"{owner}.{zone}"):
                found.append((record, unquote(str(record.get("content", "")))))
        return found

    def _add(self, client: Any, zone: str, fqdn: str, value: str) -> None:
        before = {v for _, v in self._values(client, zone, fqdn)}
        if value in before:
            log.info("%s: TXT at %s already holds the value", self.label, fqdn)
            return
        if client.create_record("TXT", fqdn, value) is False:
            raise self.error(f"add TXT at {fqdn}: lexicon's create_record reported failure")
        after = {v for _, v in self._values(client, zone, fqdn)}
        if value not in after:
            raise self.error(f"add TXT at {fqdn}: created, but the value is not listed afterwards")
        self._guard(client, fqdn, "add", before - after)
        log.info("%s: added TXT at %s (zone %s)", self.label, fqdn, zone)

    def _remove(self, client: Any, zone: str, fqdn: str, value: str) -> None:
        before = self._values(client, zone, fqdn)
        matching = [record for record, v in before if v == value]
        if not matching:
            log.info("%s: TXT at %s does not hold the value; nothing to remove", self.label, fqdn)
            return
        for record in matching:
            identifier = record.get("id")
            if identifier:
                client.delete_record(identifier=str(identifier))
            else:
                client.delete_record(None, "TXT", fqdn, value)
        after = {v for _, v in self._values(client, zone, fqdn)}
        if value in after:
            raise self.error(f"remove TXT at {fqdn}: the value is still listed after deleting it")
        self._guard(client, fqdn, "remove", {v for _, v in before} - {value} - after)
        log.info("%s: removed TXT at %s (zone %s)", self.label, fqdn, zone)

    def _guard(self, client: Any, fqdn: str, action: str, lost: set[str]) -> None:
        """Write back the other values a change took with it, and fail the change."""
        if not lost:
            return
        failed = 0
        for other in sorted(lost):
            try:
                client.create_record("TXT", fqdn, other)
            except Exception:
                failed += 1
        back = "written back" if not failed else f"{failed} could not be written back"
        raise self.error(
            f"{action} TXT at {fqdn}: lexicon's {self.settings.provider} provider took "
            f"{len(lost)} other value(s) with it ({back}); it cannot keep two values at one name",
            hint="use another provider for this DNS host: exec, or delegation to builtin",
        )

    # --- the zone --------------------------------------------------------------

    def _zone_of(self, fqdn: str) -> str:
        if self.settings.zones:
            zones = self.settings.zones
            zone = max((z for z in zones if is_within(fqdn, z)), key=len, default=None)
            if zone is None:
                raise self.error(f"{fqdn} is in none of LEXICON_ZONE ({', '.join(zones)})",
                                 hint="add its zone to LEXICON_ZONE")
            return zone
        if self.settings.resolve_zone_name:
            import dns.resolver

            soa = dns.resolver.zone_for_name(fqdn, lifetime=min(10.0, self.settings.timeout))
            found = soa.to_text(omit_final_dot=True).lower()
        else:
            parts = self._public_suffixes()(fqdn)
            if not parts.domain or not parts.suffix:
                raise self.error(f"cannot tell the zone of {fqdn} from the public suffix list",
                                 hint="set LEXICON_ZONE")
            found = f"{parts.domain}.{parts.suffix}".lower()
        return _delegated(found, self.settings.delegated)

    def _public_suffixes(self) -> tldextract.TLDExtract:
        if self._suffixes is None:
            import tldextract

            # The list shipped with tldextract: no download, no cache to write.
            self._suffixes = tldextract.TLDExtract(
                cache_dir=None, suffix_list_urls=(), include_psl_private_domains=True
            )
        return self._suffixes

    # --- errors ----------------------------------------------------------------

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            response = exc.response
            host = urlsplit(response.url or "").netloc
            body = " ".join((response.text or "").split())[:200]
            text = f"HTTP {response.status_code} from {host}" + (f": {body}" if body else "")
        elif isinstance(exc, requests.exceptions.RequestException) and exc.request is not None:
            host = urlsplit(str(exc.request.url or "")).netloc
            text = f"{type(exc).__name__} talking to {host}: {exc}"
        else:
            text = f"{type(exc).__name__}: {exc}"
        text = redact(" ".join(text.split()), self.settings.secrets)
        return text[:MAX_DETAIL]

    def _hint(self, exc: BaseException) -> str | None:
        options = f"LEXICON_{self.settings.provider.upper()}_* settings"
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            if exc.response.status_code in (401, 403):
                return f"check the credentials in the {options} and their permissions"
            if exc.response.status_code == 404:
                return "check LEXICON_ZONE and that the zone exists at this DNS host"
        if type(exc).__name__ == "AuthenticationError":
            return f"check the {options} and LEXICON_ZONE"
        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return "check the network, the proxy settings and LEXICON_API_URL"
        return None


def _delegated(zone: str, delegated: str | None) -> str:
    """lexicon's ``--delegated``: a sub-zone of the registered domain, given relative or in full."""
    if not delegated:
        return zone
    sub = delegated.rstrip(".").lower()
    if sub == zone:
        return zone
    if sub.endswith("." + zone):
        sub = sub[: -len(zone) - 1]
    return f"{sub}.{zone}"
