"""Opening the gateway's SQLite files the one way they should be opened."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path

from gateway.errors import Unavailable


def open_database(path: Path, what: str, schema: str) -> sqlite3.Connection:
    """Open (creating if needed) *path* with *schema*; Unavailable names *what* on failure.

    WAL with ``synchronous=NORMAL``: a commit survives the process being killed,
    which is what restart safety needs; the files are private (0600, a new folder
    0700) from the moment they exist, whatever the umask and the folder's mode.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        make_private(path)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(schema)
    except (OSError, sqlite3.Error) as exc:
        raise Unavailable(f"cannot open {what} {path}: {exc}{obstacle(path.parent)}") from exc
    return db


def make_private(path: Path) -> None:
    """Create the database file *path* with mode 0600 if it is missing, and take group
    and other access from it and its ``-wal`` and ``-shm`` files if they exist.

    SQLite creates the ``-wal`` and ``-shm`` files with the database file's mode: a
    database file that is private before SQLite first opens it keeps them private
    from their first byte. (Made by ``sqlite3.connect`` with the umask's 0644 and
    chmodded afterwards, they were readable by everyone for as long as they lived.)
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:  # made by an earlier version, or by hand
            os.fchmod(fd, mode & 0o700)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            companion = path.with_name(path.name + suffix)
            mode = stat.S_IMODE(companion.stat().st_mode)
            if mode & 0o077:
                os.chmod(companion, mode & 0o700)


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
