"""What this client published in the DNS and has not withdrawn yet, kept across crashes.

Every dns-01 value is written here before it is published and struck off once it is
withdrawn, as the gateway journals its records. A run that was killed (SIGKILL, a power
cut) leaves its values listed: the next run withdraws them before anything else. That
matters most with ``--provider``, where nothing else would ever remove them; through
the gateway it only saves the wait for the gateway's janitor.

Each entry keeps what is needed to withdraw it without the certificate's metadata
(the first issue of a certificate has none yet): the certificate's name and names,
how it publishes (the solver settings, never a secret), the record, and since when it
is listed. What could not be withdrawn stays listed, within bounds (see
:meth:`lib.acme.publishing.Publishing.withdraw_leftovers`). A file that
cannot be read is moved aside (``published.json.damaged-<time>``) with a warning, so
that it never stops a run.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.acme.dns01 import TxtRecord
from lib.acme.durable import atomic_write, make_dirs
from lib.acme.errors import StateError
from lib.acme.store import iso, now_utc

FILE = "published.json"


@dataclass(frozen=True)
class Published:
    """The values of one certificate still out there, and how they were published."""

    name: str
    domains: tuple[str, ...]
    solver: dict[str, Any]
    propagation_nameservers: tuple[str, ...]
    records: tuple[TxtRecord, ...]
    # When the certificate's first value still listed was listed (RFC 3339; a file of an
    # earlier release has none: the file's last change stands in).
    since: str = ""


class Journal:
    """``STATE/published.json``: one entry per certificate with values out there."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / FILE

    def entries(self) -> list[Published]:
        try:
            doc = json.loads(self.path.read_text())
            changed = iso(datetime.datetime.fromtimestamp(self.path.stat().st_mtime,
                                                       datetime.UTC))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from None
        found = []
        for item in doc.get("certificates", []) if isinstance(doc, dict) else []:
            try:
                found.append(Published(
                    name=str(item["name"]), domains=tuple(item["domains"]),
                    solver=dict(item["solver"]),
                    propagation_nameservers=tuple(item.get("propagation_nameservers", ())),
                    records=tuple(TxtRecord(str(r["domain"]), str(r["value"]))
                                  for r in item["records"]),
                    since=str(item.get("since") or changed)))
            except (KeyError, TypeError, ValueError):
                continue  # a damaged entry cannot be withdrawn; the rest still can
        return found

    def set_aside(self) -> Path:
        """Move a damaged file out of the way, keeping it for whoever withdraws what it
        lists by hand; returns where it went."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{FILE}.damaged-{stamp}")
        try:
            os.replace(self.path, target)
        except OSError as exc:
            raise StateError(f"cannot move {self.path} aside: {exc.strerror}") from None
        return target

    def add(self, entry: Published) -> None:
        """List *entry*'s records (with any still listed for that certificate)."""
        entries = {e.name: e for e in self.entries()}
        old = entries.get(entry.name)
        records = tuple(dict.fromkeys((*(old.records if old else ()), *entry.records)))
        entries[entry.name] = Published(entry.name, entry.domains, entry.solver,
                                        entry.propagation_nameservers, records,
                                        old.since if old else iso(now_utc()))
        self._write(list(entries.values()))

    def remove(self, name: str, records: Sequence[TxtRecord]) -> None:
        """Strike *records* of certificate *name* off (they were withdrawn)."""
        entries = []
        for entry in self.entries():
            if entry.name == name:
                left = tuple(r for r in entry.records if r not in records)
                if not left:
                    continue
                entry = Published(entry.name, entry.domains, entry.solver,
                                  entry.propagation_nameservers, left, entry.since)
            entries.append(entry)
        self._write(entries)

    def _write(self, entries: list[Published]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        make_dirs(self.path.parent)
        doc = {"certificates": [
            {"name": e.name, "domains": list(e.domains), "solver": e.solver,
             "propagation_nameservers": list(e.propagation_nameservers), "since": e.since,
             "records": [{"domain": r.domain, "value": r.value} for r in e.records]}
            for e in entries]}
        atomic_write(self.path, json.dumps(doc, indent=2).encode() + b"\n", 0o600)
