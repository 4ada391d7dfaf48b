"""Writing the state directory so that a crash leaves the old version or the new one.

:func:`atomic_write` replaces a file in one step (temporary file in the same folder,
fsync, rename, fsync of the folder); :func:`make_dirs` creates private folders.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from lib.acme.errors import StateError

T = TypeVar("T")

def atomic_write(path: Path, data: bytes, mode: int = 0o644,
                 owner: tuple[int, int] | None = None) -> list[str]:
    """Replace *path* with *data* in one step; the file gets exactly *mode* (and *owner*,
    see :func:`write_new`). Returns :func:`write_new`'s warnings."""
    return replace(path, lambda tmp: write_new(tmp, data, mode, owner), "write")


def replace(path: Path, create: Callable[[Path], T], what: str = "write") -> T:
    """Make the new *path* with *create* under a temporary name beside it, then rename it
    over *path* and fsync the folder: readers see the old one or the new one, never a
    part. An OSError becomes a :class:`StateError` saying what could not be done."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        result = create(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise StateError(f"cannot {what} {path}: {exc.strerror}") from None
    return result


def write_new(path: Path, data: bytes, mode: int,
              owner: tuple[int, int] | None = None) -> list[str]:
    """Create *path* (it must not exist) with *data*, *mode* and, when given, *owner*
    (uid, gid): the uid only as root, the gid where we belong to that group. Returns a
    warning for an owner that could not be kept; raises OSError."""
    warnings = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            uid, gid = owner
            try:
                os.fchown(fd, uid if os.geteuid() == 0 else -1, gid)
            except PermissionError:
                warnings.append(f"{path.name.lstrip('.').split('.tmp')[0]}: cannot keep group "
                                f"{gid} (not a member); it has group {os.getegid()} now")
        os.fchmod(fd, mode)  # after fchown, which may clear set-id bits; and past the umask
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    return warnings


def fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def make_dirs(path: Path) -> None:
    """Create *path* and any missing parents, each 0700 (``parents=True`` would not)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        for folder in reversed(missing):
            folder.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}") from None
