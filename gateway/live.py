"""The configuration and the provider in force, which SIGHUP may replace while
requests are served.

Handlers read ``request.app[LIVE].config`` for every request, so a reload takes
effect for the next request without dropping the ones in flight. What cannot
change without a restart (listeners, TLS files, the state directory, route
prefixes, another provider) is kept and reported.

The provider is reached through :class:`LiveProvider`. A reload builds it again
from the new settings (a rotated TSIG secret or API token, a new server): if
they differ, the new instance is opened and new calls go to it, while calls in
flight finish on the old one, which is closed once the last has ended. What a
provider says only a restart can change (:meth:`Provider.restart_only`: the
builtin DNS server's listening addresses, say) is reported instead and stays as
it was; a provider that applies settings in place (:meth:`Provider.adopt`: the
builtin one) takes the rest, others keep running as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, ClassVar, Self

from gateway.config import Config
from lib.settings import Settings
from providers._shared import SharedRecords
from providers.base import Provider, ProviderContext

log = logging.getLogger(__name__)

# Fields a reload cannot apply to a running process.
RESTART_ONLY = ("listeners", "tls", "tls_acme", "state_dir", "httpreq_prefix", "config_dir")

# Told when a reload's provider settings are in force, or why not (a problem), and
# what of them waits for a restart.
Done = Callable[[str | None, Sequence[str]], None]


class Live:
    def __init__(self, config: Config) -> None:
        self.config = config

    def replace(self, new: Config) -> list[str]:
        """Adopt *new*; returns the fields that still need a restart."""
        old = self.config
        pending = [f for f in RESTART_ONLY if getattr(old, f) != getattr(new, f)]
        self.config = replace(new, **{f: getattr(old, f) for f in RESTART_ONLY})
        return pending


class LiveProvider(Provider):
    """The provider in force, which a reload may replace; see the module docstring."""

    name: ClassVar[str] = "live"

    def __init__(self, provider: Provider) -> None:
        self.current = provider
        self._calls: dict[Provider, int] = {}
        self._idle: dict[Provider, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        raise TypeError("a LiveProvider wraps a provider built by providers.registry")

    # What the gateway asks of a provider is what the one in force says; a reload swaps
    # like for like, so these hold as long as the wrapper does.
    @property
    def volatile(self) -> bool:  # type: ignore[override]
        return self.current.volatile

    @property
    def dns_visible(self) -> bool:  # type: ignore[override]
        return self.current.dns_visible

    @property
    def serves_itself(self) -> bool:  # type: ignore[override]
        return self.current.serves_itself

    @property
    def label(self) -> str:
        return self.current.label

    def delegation_for(self, fqdn: str) -> tuple[str, tuple[str, ...]] | None:
        return self.current.delegation_for(fqdn)

    def keep_records_in(self, records: SharedRecords) -> None:
        self.current.keep_records_in(records)

    async def open(self) -> None:
        await self.current.open()

    async def add_txt(self, fqdn: str, value: str) -> None:
        with self._in_use() as provider:
            await provider.add_txt(fqdn, value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        with self._in_use() as provider:
            await provider.remove_txt(fqdn, value)

    @contextlib.contextmanager
    def _in_use(self) -> Iterator[Provider]:
        """The provider in force, counted as busy (not to be closed) until the block ends."""
        provider = self.current
        self._calls[provider] = self._calls.get(provider, 0) + 1
        try:
            yield provider
        finally:
            self._calls[provider] -= 1
            if not self._calls[provider]:
                del self._calls[provider]
                idle = self._idle.get(provider)
                if idle is not None:
                    idle.set()

    async def aclose(self) -> None:
        """Close the provider in force, after any being retired."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.current.aclose()

    # -- reload --------------------------------------------------------------------------

    def reload(self, new: Provider, done: Done) -> list[str] | None:
        """Start putting *new* (built from reloaded settings) in force, if it differs.

        Returns what of the difference only a restart can apply ([] when nothing
        differs); the running provider then stays as it is. None: *new* is being put
        in force in the background (in place, by a provider that can, all but what
        only a restart applies), and *done* will be called once it is with None and
        what waits for a restart, or with why not (it could not be opened, say: the
        running one stays).
        """
        old = self.current
        if type(new) is not type(old) or new.label != old.label:
            return ["provider"]  # values written through one can be removed through it alone
        ours: Any = getattr(old, "settings", None)
        if ours is not None and ours == getattr(new, "settings", None):
            return []
        blockers = old.restart_only(new)
        if blockers and type(old).adopt is Provider.adopt:
            return blockers  # nothing can be taken in place: it all waits for the restart
        task = asyncio.get_running_loop().create_task(self._take_over(new, blockers, done))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _take_over(self, new: Provider, blockers: list[str], done: Done) -> None:
        old = self.current
        try:
            if await old.adopt(new):
                done(None, blockers)
                return
            if old.volatile or blockers:
                done(f"{old.name} cannot take new settings without a restart", blockers)
                return
            await new.open()
        except Exception as exc:  # a provider's own failure: keep the running one
            log.error("provider %s: new settings not applied: %s", old.label, exc)
            done(f"{old.label}: {exc}", blockers)
            return
        self.current = new
        log.info("provider %s: new settings in force", new.label)
        done(None, [])
        if old in self._calls:
            idle = self._idle[old] = asyncio.Event()
            await idle.wait()
            del self._idle[old]
        try:
            await old.aclose()
        except Exception:
            log.exception("provider %s: closing the replaced instance failed", old.label)
