"""An in-memory provider for tests and demonstrations.

It keeps TXT values in a dictionary and forgets them when the process ends
(the gateway re-adds journaled records after a restart). Settings: none.
``MEMORY_FAIL`` (tests only) makes every change fail with that message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from lib.settings import Settings
from providers.base import Provider, ProviderContext

# The settings this module reads (providers.registry.declared_settings finds them unimported).
SETTINGS = ("MEMORY_FAIL",)


@dataclass(frozen=True)
class MemorySettings:
    fail: str | None = None


class MemoryProvider(Provider):
    """TXT records in a dict; ``records`` is public so tests can look."""

    name: ClassVar[str] = "memory"
    volatile: ClassVar[bool] = True
    dns_visible: ClassVar[bool] = False

    def __init__(self, settings: MemorySettings | None = None) -> None:
        self.settings = settings or MemorySettings()
        self.records: dict[str, list[str]] = {}
        self.calls: list[tuple[str, str, str]] = []

    @classmethod
    def from_settings(cls, settings: Settings, context: ProviderContext) -> Self:
        return cls(MemorySettings(fail=settings.get("MEMORY_FAIL")))

    def values(self, fqdn: str) -> list[str]:
        return list(self.records.get(fqdn, []))

    async def add_txt(self, fqdn: str, value: str) -> None:
        self.calls.append(("add", fqdn, value))
        if self.settings.fail:
            raise self.error(self.settings.fail)
        values = self.records.setdefault(fqdn, [])
        if value not in values:
            values.append(value)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        self.calls.append(("remove", fqdn, value))
        if self.settings.fail:
            raise self.error(self.settings.fail)
        values = self.records.get(fqdn, [])
        if value in values:
            values.remove(value)
        if not values:
            self.records.pop(fqdn, None)
