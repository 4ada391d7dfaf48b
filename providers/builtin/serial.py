"""The builtin server's SOA serial: it grows with every change and never goes back.

Secondaries transfer the zone only when its serial is newer (RFC 1982 serial
arithmetic) than theirs, so a serial that went back after a restart would
leave them serving old values. The last serial is kept through a
:class:`SerialStore`: a file in ``STATE_DIR`` today (:class:`FileSerialStore`),
the shared state layer once there is one. A start begins at the stored serial
plus one, or at the current Unix time if that is newer (also what a start
without a stored serial uses), so the serial still grows when the file is lost.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Protocol

_HALF = 1 << 31
_MASK = (1 << 32) - 1


def is_newer(a: int, b: int) -> bool:
    """True if serial *a* is newer than *b* (RFC 1982 arithmetic on 32 bits)."""
    return a != b and ((a - b) & _MASK) < _HALF


def next_serial(serial: int) -> int:
    return (serial + 1) & _MASK


def first_serial(stored: int | None, now: float | None = None) -> int:
    """The serial to start with: after *stored*, and no older than the Unix time."""
    clock = int(time.time() if now is None else now) & _MASK
    if stored is None:
        return clock
    after = next_serial(stored)
    return clock if is_newer(clock, after) else after


class SerialStore(Protocol):
    """Where the last serial served is kept between runs."""

    def load(self) -> int | None:
        """The serial stored by the last run, or None."""

    def save(self, serial: int) -> None:
        """Keep *serial*; called before the server serves it."""


class MemorySerialStore:
    """Keeps the serial for the life of the process only (tests, no ``STATE_DIR``)."""

    def __init__(self, serial: int | None = None) -> None:
        self.serial = serial

    def load(self) -> int | None:
        return self.serial

    def save(self, serial: int) -> None:
        self.serial = serial


class FileSerialStore:
    """The serial as decimal text in one file, replaced atomically (write, then rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int | None:
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise OSError(f"cannot read the SOA serial from {self.path}: {exc}") from exc
        if not text.isdigit() or int(text) > _MASK:
            raise OSError(f"{self.path} does not hold a SOA serial; remove it to start afresh")
        return int(text)

    def save(self, serial: int) -> None:
        temporary = self.path.with_name(self.path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{serial}\n".encode("ascii"))
        finally:
            os.close(fd)
        try:
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
