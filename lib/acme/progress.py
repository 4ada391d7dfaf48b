"""Step-by-step progress with elapsed times, acme-tiny style, on stderr.

Each line is one step of the protocol, in the order RFC 8555 takes them::

    [  0.4s] Authorization *.example.com: dns-01 at _acme-challenge.example.com

``quiet`` silences steps and warnings (errors are the caller's to print); every
step is also kept, so ``--json`` can return them with the result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self._clock = clock
        self._start = clock()
        self.steps: list[dict[str, object]] = []

    def elapsed(self) -> float:
        return self._clock() - self._start

    def step(self, message: str) -> None:
        self._emit("step", message, "")

    def warn(self, message: str) -> None:
        self._emit("warning", message, "warning: ")

    def _emit(self, kind: str, message: str, prefix: str) -> None:
        elapsed = self.elapsed()
        self.steps.append({"elapsed": round(elapsed, 3), "kind": kind, "message": message})
        if not self.quiet:
            self._stream.write(f"[{elapsed:6.1f}s] {prefix}{message}\n")
            self._stream.flush()
