"""The contract every DNS provider fulfils, and the errors it raises.

A provider publishes and withdraws single TXT values at ``_acme-challenge``
names. The gateway guarantees that calls for one name never overlap (a
per-name lock), validates names and values before calling, and journals every
change; a provider only has to talk to its DNS service. The contract:

* ``add_txt(fqdn, value)`` makes *value* one of the TXT values at *fqdn* and
  keeps every other value there. Adding a value that is already present is a
  no-op, not an error.
* ``remove_txt(fqdn, value)`` removes exactly *value* from *fqdn* and keeps the
  others. Removing a value (or a name) that is absent is a no-op.
* Both raise :class:`ProviderError` (or :class:`ProviderTimeout`) on failure,
  with a one-line message that names the provider and, where the fix is known,
  a hint. They never report success for a change that did not happen.
* ``open()`` is called once before the first change, ``aclose()`` once at the
  end; both default to doing nothing.
* On a reload (SIGHUP) the gateway builds the provider again from the new
  settings; :meth:`Provider.restart_only` says what of a difference needs a
  restart, and :meth:`Provider.adopt` may apply the rest in place. Otherwise
  (nothing needs a restart) the new instance is opened and takes over, and the
  old one is closed after the calls it was making have ended.

``fqdn`` is normalised: lower case, IDNA, no trailing dot. A provider's settings
live in a frozen dataclass built by ``from_settings``, which reads them from a
:class:`lib.settings.Settings` and records every problem there.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from lib.settings import Settings

if TYPE_CHECKING:
    from providers._shared import SharedRecords


class ProviderError(Exception):
    """A provider could not make the requested change."""

    def __init__(self, provider: str, message: str, *, hint: str | None = None) -> None:
        self.provider = provider
        self.message = message
        self.hint = hint
        text = f"{provider}: {message}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class ProviderTimeout(ProviderError):
    """A provider did not answer in time."""


@dataclass(frozen=True)
class ProviderContext:
    """What the gateway tells a provider about its surroundings."""

    managed_domains: tuple[str, ...] = ()
    state_dir: Path | None = None
    # Extra search path for user-written provider modules (the dotenv's folder).
    config_dir: Path | None = None
    timeout: float = 30.0
    extra: dict[str, object] = field(default_factory=dict)


class Provider(abc.ABC):
    """Base class of all providers. Subclasses set ``name`` and implement the two changes."""

    name: ClassVar[str] = "provider"
    # True when the provider forgets its records on restart (in-memory stores,
    # the builtin DNS server): the gateway then re-adds the journaled records.
    volatile: ClassVar[bool] = False
    # False for providers that are not DNS at all (the in-memory one): the
    # gateway then has no propagation to wait for.
    dns_visible: ClassVar[bool] = True
    # True when this process is itself the authoritative server (builtin): once
    # add_txt returns the value is served, so the gateway polls only servers
    # named in PROPAGATION_NAMESERVERS. Not a ClassVar: a builtin server with
    # secondaries is not the only one serving, so that instance says False.
    serves_itself: bool = False

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        """Build the provider from its settings, recording problems in *settings*."""

    def keep_records_in(self, records: SharedRecords) -> None:  # noqa: B027 - optional hook
        """Offered by the gateway before :meth:`open`: where records can be kept so that
        every replica of the gateway sees them (:mod:`providers._shared`). A provider
        that is itself the DNS server keeps its records there; others need not."""

    async def open(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Acquire connections or start servers; called once before use."""

    @abc.abstractmethod
    async def add_txt(self, fqdn: str, value: str) -> None:
        """Publish *value* at *fqdn*, keeping other values (idempotent)."""

    @abc.abstractmethod
    async def remove_txt(self, fqdn: str, value: str) -> None:
        """Withdraw *value* from *fqdn*, keeping other values (idempotent)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by design
        """Release what ``open`` acquired."""

    def restart_only(self, new: Self) -> list[str]:
        """What of the difference between this running provider and *new* (built from the
        settings a reload read; same class) only a restart can apply: the gateway
        reports these names and keeps them as they are (the rest is still offered to an
        :meth:`adopt` of the provider's own; by default this provider stays as it is).
        Empty: *new* may take over, through :meth:`adopt` or by replacing this one.

        By default nothing, unless the provider keeps state of its own (``volatile``:
        records in memory, servers listening): that cannot pass to a new instance, so
        every field of its ``settings`` that differs is named. A provider that can
        apply some of its settings in place overrides this and :meth:`adopt`.
        """
        if not self.volatile:
            return []
        ours: Any = getattr(self, "settings", None)
        theirs: Any = getattr(new, "settings", None)
        if not is_dataclass(ours) or type(ours) is not type(theirs):
            return [f"{self.name} settings"]
        return [
            f"{self.name} {f.name}"
            for f in fields(ours)
            if getattr(ours, f.name) != getattr(theirs, f.name)
        ]

    async def adopt(self, new: Self) -> bool:
        """Take over *new*'s settings in place, if this provider can: all but those that
        :meth:`restart_only` named, which stay as they are until a restart. False, the
        default: the gateway opens *new*, sends new calls to it and closes this one once
        its calls have ended (when nothing needed a restart; else it keeps this one as
        it is). Only a provider that overrides this is asked while something waits
        for a restart."""
        return False

    def awaits_propagation(self, nameservers: Sequence[str]) -> bool:
        """Whether a change is worth waiting for until the DNS serves it (the gateway and
        acmegw-acme both ask): never for a provider that is not DNS (``dns_visible``);
        for one that is itself the authoritative server (``serves_itself``), which serves
        a value once ``add_txt`` returns, only when other *nameservers* to watch are named."""
        return self.dns_visible and (not self.serves_itself or bool(nameservers))

    def delegation_for(self, fqdn: str) -> tuple[str, tuple[str, ...]] | None:
        """For a provider that is itself the authoritative server (``serves_itself``): the
        zone apex that the DNS must delegate to it for *fqdn*'s records to be seen, and the
        NS names to delegate it to. None when it does not serve *fqdn*, and for providers
        that write into zones that others serve."""
        return None

    @property
    def label(self) -> str:
        """How errors and logs name this provider (a wrapped class names itself)."""
        return self.name

    def error(self, message: str, *, hint: str | None = None) -> ProviderError:
        """A :class:`ProviderError` that names this provider."""
        return ProviderError(self.label, message, hint=hint)
