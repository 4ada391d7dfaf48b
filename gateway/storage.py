"""Opening the gateway's SQLite files the one way they should be opened."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from gateway.errors import Unavailable


def open_database(path: Path, what: str, schema: str) -> sqlite3.Connection:
    """Open (creating if needed) *path* with *schema*; Unavailable names *what* on failure.

    WAL with ``synchronous=NORMAL``: a commit survives the process being killed,
    which is what restart safety needs; the files are private (0600, folder 0700).
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise Unavailable(f"cannot open {what} {path}: {exc}{obstacle(path.parent)}") from exc
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return db


def obstacle(folder: Path) -> str:
    """Why *folder* cannot take our files, as a parenthesis, if the file system tells.

    SQLite often says only "unable to open database file"; an operator needs
    to know the state directory is read-only, full, or not theirs.
    """
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        fs = os.statvfs(existing)
    except OSError:
        return ""
    if fs.f_flag & os.ST_RDONLY:
        return f" ({existing} is on a read-only file system)"
    if fs.f_bavail == 0:
        return f" ({existing} is on a full file system)"
    if not os.access(existing, os.W_OK):
        return f" ({existing} is not writable by this user)"
    return ""
