"""Run a provider class written for the original ACME-dns01-gateway, unchanged.

Such a class is built as ``cls(DNSAPI_USERNAME, DNSAPI_PASSWORD)`` and offers a
blocking ``acme_challenge(action, fqdn, token) -> (status, message)`` with
``action`` ``"setup"`` or ``"teardown"`` and ``fqdn`` starting with
``_acme-challenge.``. We call it in a worker thread so a slow DNS API never
stalls other requests, and turn every status outside 2xx (or an exception)
into a :class:`ProviderError` (HTTP 502). The gateway bounds each call
(``PROVIDER_TIMEOUT``) by cancelling it.

A call that overruns its deadline may still write when it wakes: it runs in
a :class:`providers._threads.DaemonThreads` thread, and a cancelled call ends
only when its thread does, so that the gateway removes its value afterwards.
At most *workers* calls run at once.

The class holds the DNS API password, and its exceptions and messages often
carry it (a URL with credentials, a ``%r`` of its arguments). Every text we
take from it is scrubbed of the password, in the forms it is commonly printed
in, before it reaches a problem, an answer or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from lib.settings import Settings
from providers._secrets import redact
from providers._threads import DaemonThreads
from providers.base import Provider, ProviderContext, ProviderError

log = logging.getLogger(__name__)

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = ("DNSAPI_USERNAME", "DNSAPI_PASSWORD", "DNSAPI_PASSWORD_FILE")


@dataclass(frozen=True)
class LegacySettings:
    """What an original-gateway class is built from: a reload compares these."""

    username: str | None
    password: str | None = field(repr=False)


class LegacyProvider(Provider):
    """Adapter around an original-gateway provider object."""

    name: ClassVar[str] = "legacy"

    def __init__(
        self,
        target: Any,
        label: str,
        workers: int = 4,
        *,
        secrets: Sequence[str] = (),
    ) -> None:
        self._target = target
        self._label = label
        self._secrets = tuple(s for s in secrets if s)
        self.settings: LegacySettings | None = None
        self._threads = DaemonThreads("legacy-provider", workers)

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        raise TypeError("LegacyProvider is built by providers.registry.create_provider")

    @classmethod
    def wrap(cls, klass: type, settings: Settings, context: ProviderContext) -> Self | None:
        label = f"{klass.__module__}.{klass.__qualname__}"
        if not callable(getattr(klass, "acme_challenge", None)):
            settings.problem(f"{label} has no acme_challenge(action, fqdn, token) method")
            return None
        username = settings.get("DNSAPI_USERNAME")
        password = settings.secret("DNSAPI_PASSWORD")
        try:
            target = klass(username, password)
        except Exception as exc:  # any failure here is a configuration problem
            # The class saw the DNS API password; keep it out of the message.
            detail = redact(str(exc), [password] if password else [])
            settings.problem(f"{label} could not be created: {type(exc).__name__}: {detail}")
            return None
        provider = cls(target, label, secrets=[password] if password else [])
        provider.settings = LegacySettings(username, password)
        return provider

    @property
    def label(self) -> str:
        return self._label

    async def _call(self, action: str, fqdn: str, value: str) -> None:
        try:
            result = await self._threads.run(
                lambda: self._target.acme_challenge(action, fqdn, value)
            )
        except Exception as exc:
            log.warning("%s.acme_challenge raised %s", self._label, type(exc).__name__)
            # Not chained: the original exception's text may hold the password.
            raise self.error(f"{action} failed: {type(exc).__name__}: {exc}") from None
        status, message = _unpack(result)
        if status is None or not 200 <= status < 300:
            lines = [] if message is None else str(message).splitlines()
            shown = f": {lines[0][:200]}" if lines else ""
            raise self.error(f"{action} answered status {status}{shown}")

    def error(self, message: str, *, hint: str | None = None) -> ProviderError:
        """A :class:`ProviderError` naming the wrapped class, with its password scrubbed."""
        return ProviderError(self._label, redact(message, self._secrets), hint=hint)

    async def add_txt(self, fqdn: str, value: str) -> None:
        await self._call("setup", fqdn, value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        await self._call("teardown", fqdn, value)


def _unpack(result: object) -> tuple[int | None, object]:
    """Read ``(status, message)`` (or a bare status). Anything else is a failure:
    we would rather fail a setup than report a record that may not exist."""
    if isinstance(result, tuple) and result:
        status: object = result[0]
        message = result[1] if len(result) > 1 else None
    else:
        status, message = result, None
    if isinstance(status, bool) or not isinstance(status, int | str):
        return None, message if message is not None else f"returned {type(result).__name__}"
    try:
        return int(status), message
    except ValueError:
        return None, message
