"""SIGHUP, SIGTERM and SIGINT that come while ``acmegw-server`` starts.

Start-up (imports, reading the configuration, opening the provider and its DNS
server process) takes most of a second. Until the event loop's handlers are in
place, SIGHUP's default action kills the gateway (a ``systemctl reload`` or a
logrotate just after a start took it down) and SIGTERM or SIGINT end it halfway,
journal and DNS server process left to whatever notices. So the signals are
caught from the first line of ``acmegw-server`` on and noted here: a stop ends
start-up at its next step, and a reload is done once the gateway serves (the
configuration may have changed after it was read).

Imports nothing but :mod:`signal`: it runs before the gateway's own imports.
"""

from __future__ import annotations

import signal

TYPE_CHECKING = False  # not typing's: importing it would add to the time before catching
if TYPE_CHECKING:
    from types import FrameType, TracebackType
    from typing import Any

CAUGHT = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


class EarlySignals:
    """The signals noted since :meth:`catch`, until the caller's own handlers take over."""

    def __init__(self) -> None:
        self.stop: signal.Signals | None = None
        self.reload = False
        self._previous: dict[int, Any] = {}

    @classmethod
    def catch(cls) -> EarlySignals:
        """Note the signals from now on (only the main thread can: elsewhere, nothing)."""
        early = cls()
        try:
            for sig in CAUGHT:
                early._previous[sig] = signal.signal(sig, early._note)
        except ValueError:  # not the main thread: signals are not ours to take
            early.release()
        return early

    def _note(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of start-up: only notes, never logs or raises.
        if signum == signal.SIGHUP:
            self.reload = True
        elif self.stop is None:
            self.stop = signal.Signals(signum)

    def release(self, replay: bool = False) -> None:
        """Put the handlers found by :meth:`catch` back; with *replay*, a stop signal
        noted meanwhile is raised again, to act as it would have."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        if replay and self.stop is not None:
            signal.raise_signal(self.stop)

    def __enter__(self) -> EarlySignals:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
