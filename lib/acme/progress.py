"""Step-by-step progress with elapsed times, acme-tiny style, on stderr.

Each line is one step of the protocol, in the order RFC 8555 takes them::

    [  0.4s] Authorization *.example.com: dns-01 at _acme-challenge.example.com

``quiet`` silences steps and warnings (errors are the caller's to print); every
step is also kept, so ``--json`` can return them with the result. A wait that may be
long (the lock, the DNS) is announced, and then said to go on every 15 s.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
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

    @contextlib.contextmanager
    def waiting(self, message: str, every: float = 15.0) -> Iterator[None]:
        """Say *message* before a wait that may be long, and every *every* seconds of it
        say that it goes on: a run that waits is never silent for long."""
        self.step(message)
        started = self._clock()
        done = threading.Event()

        def tick() -> None:
            while not done.wait(every):
                self.step(f"still waiting ({self._clock() - started:.0f}s): {message}")

        ticker = threading.Thread(target=tick, name="acmegw-acme-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()

    def _emit(self, kind: str, message: str, prefix: str) -> None:
        elapsed = self.elapsed()
        self.steps.append({"elapsed": round(elapsed, 3), "kind": kind, "message": message})
        if not self.quiet:
            self._stream.write(f"[{elapsed:6.1f}s] {prefix}{message}\n")
            self._stream.flush()
