"""An original-gateway provider class whose "DNS server" is a JSON file, for process tests.

:func:`write_provider` writes ``filedns.py`` (class ``FileDNS``) for
``DNSAPI_MODULE``/``DNSAPI_CLASS`` (:func:`settings`). Its zone is ``{fqdn: [values]}`` in a JSON
file, changed under a file lock with an atomic rename, so it remembers what
was written across a ``kill -9`` of the gateway exactly as a real DNS server
would, and a test reads it from outside (:class:`Zone`). Each call sleeps
before and after its change (per action, so a setup can be slow and a teardown
quick: a call the gateway gave up on still writes when it wakes), and logs its
start and end to ``<zone>.calls`` as JSON lines.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import time
from pathlib import Path
from typing import Any

SOURCE = '''
"""A "DNS server" whose zone is a JSON file: {{fqdn: [values]}}."""
import fcntl
import json
import os
import time

STORE = {store!r}
BEFORE = {before!r}
AFTER = {after!r}


def _log(**entry):
    with open(STORE + ".calls", "a") as f:
        f.write(json.dumps(entry) + "\\n")


class FileDNS:
    def __init__(self, username, password):
        pass

    def _update(self, change):
        with open(STORE + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(STORE) as f:
                    zone = json.load(f)
            except FileNotFoundError:
                zone = {{}}
            change(zone)
            with open(STORE + ".tmp", "w") as f:
                json.dump(zone, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(STORE + ".tmp", STORE)

    def acme_challenge(self, action, fqdn, token):
        _log(event="start", action=action, fqdn=fqdn, token=token)
        time.sleep(BEFORE.get(action, 0))

        def add(zone):
            values = zone.setdefault(fqdn, [])
            if token not in values:
                values.append(token)

        def remove(zone):
            values = zone.get(fqdn, [])
            if token in values:
                values.remove(token)
            if not values:
                zone.pop(fqdn, None)

        self._update(add if action == "setup" else remove)
        # Like a real API: the change is made before the answer comes back.
        time.sleep(AFTER.get(action, 0))
        _log(event="done", action=action, fqdn=fqdn, token=token)
        return 200, "OK"
'''


def write_provider(
    path: Path,
    store: Path,
    delay: float = 0.0,
    before: dict[str, float] | None = None,
    after: dict[str, float] | None = None,
) -> Path:
    """``filedns.py`` at *path*; each call sleeps *delay* before and after its change,
    unless *before* / *after* give other times per action (``setup``, ``teardown``)."""
    both = {"setup": delay, "teardown": delay}
    path.write_text(
        textwrap.dedent(SOURCE).format(
            store=str(store), before={**both, **(before or {})}, after={**both, **(after or {})}
        )
    )
    return path


def settings(provider: Path) -> dict[str, str | None]:
    """The gateway settings that make the ``filedns.py`` at *provider* its DNS provider
    (for :func:`tests.gateway.procs.gateway_settings`)."""
    return {"PROVIDER": None, "DNSAPI_MODULE": str(provider), "DNSAPI_CLASS": "FileDNS"}


class Zone:
    """The JSON file the FileDNS provider keeps its records in, and its call log."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def values(self) -> set[tuple[str, str]]:
        if not self.path.exists():
            return set()
        zone: dict[str, list[str]] = json.loads(self.path.read_text())
        return {(fqdn, value) for fqdn, values in zone.items() for value in values}

    def calls(self, event: str = "start") -> list[dict[str, str]]:
        """The calls that logged *event* (``start`` or ``done``), in order."""
        log = Path(f"{self.path}.calls")
        if not log.exists():
            return []
        entries = [json.loads(line) for line in log.read_text().splitlines()]
        return [e for e in entries if e["event"] == event]


class JournalFile:
    """The gateway's sqlite journal, read (and aged) from outside."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.path, timeout=5)
        try:
            with db:
                return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def records(self) -> dict[tuple[str, str], str]:
        """``{(fqdn, value): state}``"""
        rows = self._query("SELECT fqdn, value, state FROM records")
        return {(fqdn, value): state for fqdn, value, state in rows}

    def owners(self) -> dict[tuple[str, str], str]:
        """``{(fqdn, value): owner}``"""
        rows = self._query("SELECT fqdn, value, owner FROM records")
        return {(fqdn, value): owner for fqdn, value, owner in rows}

    def age(self, keys: set[tuple[str, str]], seconds: float) -> None:
        for fqdn, value in keys:
            self._query(
                "UPDATE records SET created = created - ?, updated = updated - ? "
                "WHERE fqdn = ? AND value = ?",
                (seconds, seconds, fqdn, value),
            )

    def older_than(self, seconds: float) -> int:
        cutoff = time.time() - seconds
        return int(self._query("SELECT count(*) FROM records WHERE created < ?", (cutoff,))[0][0])
