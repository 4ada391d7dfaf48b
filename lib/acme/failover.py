"""Which CA to ask, how often, and when to stop: the retry policy of a run.

A certificate goes to its CAs in order. What happens after an error depends on what
another try could change:

* **the request is wrong for this CA** (``malformed``, ``rejectedIdentifier``, ``caa``,
  ``unauthorized``, ``badCSR``, ``userActionRequired``, and their kin, also as the
  reason a validation failed): not retried at this CA; the next CA may judge it
  differently (its own CAA entry, its own policy);
* **the CA asks to wait** (``rateLimited``, or 503/429 with ``Retry-After``): the wait
  is honoured when it ends before the certificate's deadline; otherwise the CA is left
  alone for the rest of the run, and the message says when it may be asked again;
* **the CA does not answer** (a timeout): left alone for the rest of the run at once; a
  CA that hangs for one certificate hangs for the next, and each would cost minutes;
* **the CA cannot be reached** (a refused or dropped connection, no TLS): tried again
  after a back-off like the rest below, but once every try of a certificate failed so,
  left alone for the rest of the run;
* **the order is still processing at its deadline**: not replaced by a new order (that
  would have the CA issue twice); the next run resumes it (:mod:`lib.acme.orders`);
* **anything else** (``serverInternal``, a refused connection, an answer that is not
  ACME): tried again after a back-off (``retry_delay``, doubling), up to ``attempts``
  tries per CA and never past the certificate's deadline;
* errors no CA can fix (usage, the DNS solver, the state directory) end the
  certificate at once.

``badNonce`` never gets here: the transport retries it with a fresh nonce.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from lib.acme.errors import (
    AcmeError,
    ChallengeFailed,
    NoAnswer,
    OrderFailed,
    OrderPending,
    ProblemError,
    SolverError,
    StateError,
    Unreachable,
    UsageError,
)
from lib.acme.options import Options
from lib.acme.progress import Progress
from lib.acme.transport import host_of

T = TypeVar("T")

# Problems that come back the same however often the same request is made to the same CA.
NOT_RETRIED = frozenset({
    "malformed", "rejectedIdentifier", "caa", "unauthorized", "badCSR", "userActionRequired",
    "unsupportedIdentifier", "invalidContact", "unsupportedContact", "externalAccountRequired",
    "accountDoesNotExist", "badPublicKey", "badSignatureAlgorithm", "badRevocationReason",
    "compound", "invalidProfile", "alreadyRevoked", "incorrectResponse",
})
WAIT_STATUSES = (429, 503)


@dataclass(frozen=True)
class Verdict:
    """What to do after an error: wait this long and try the same CA again, or stop
    asking it for this certificate, or for the whole run (*down* says why)."""

    retry: bool
    wait: float = 0.0
    down: str | None = None


class Failover:
    """Tries a certificate at its CAs under the policy above; remembers, for the rest of
    the run, the CAs that asked to be left alone or did not answer."""

    def __init__(self, progress: Progress, options: Options,
                 clock: Callable[[], float] = time.monotonic,
                 forget: Callable[[str], None] = lambda _: None) -> None:
        self.progress = progress
        self.options = options
        self._clock = clock
        self._forget = forget
        self._down: dict[str, str] = {}

    def down(self, server: str) -> str | None:
        """Why *server* is left alone for the rest of the run, or None."""
        return self._down.get(server)

    def mark_down(self, server: str, why: str) -> None:
        self._down.setdefault(server, why)

    def run(self, servers: list[str], attempt: Callable[[str], T]) -> T:
        """``attempt(server)`` at each CA in turn until one succeeds."""
        deadline = self._clock() + self.options.order_timeout
        failures: list[str] = []
        for index, server in enumerate(servers):
            host = host_of(server)
            if server in self._down:
                failures.append(f"{host}: {self._down[server]}")
                self.progress.step(f"Skipping {host}: {self._down[server]}")
                continue
            unreached = True
            for number in range(1, self.options.attempts + 1):
                try:
                    return attempt(server)
                except (UsageError, SolverError, StateError):
                    raise
                except AcmeError as exc:
                    self._forget(server)
                    unreached = unreached and isinstance(exc, Unreachable)
                    verdict = self.judge(exc, deadline, number)
                    failures.append(f"{host}: {exc}")
                    more = verdict.retry and number < self.options.attempts
                    self.progress.warn(f"{host}, attempt {number} of {self.options.attempts}: "
                                       f"{exc}" + (f"; {verdict.down}" if verdict.down else ""))
                    if verdict.down:
                        self._down[server] = verdict.down
                    if not more:
                        break
                    if verdict.wait:
                        self.progress.step(f"Trying {host} again in {verdict.wait:g}s")
                        self.options.sleep(verdict.wait)
            if unreached:
                # Down for this certificate's every try: down for the next ones too.
                self.mark_down(server, "could not be reached; not asked again in this run")
            if index + 1 < len(servers):
                self.progress.step(f"Failing over from {host} to {servers[index + 1]}")
        if len(failures) == 1:
            raise OrderFailed(failures[0])
        raise OrderFailed(f"no CA issued the certificate: {' | '.join(failures)}")

    def judge(self, exc: AcmeError, deadline: float, number: int) -> Verdict:
        backoff = self.options.retry_delay * 2 ** (number - 1)
        if isinstance(exc, NoAnswer):
            return Verdict(False, down="it did not answer; not asked again in this run")
        if isinstance(exc, OrderPending):
            return Verdict(False)
        if isinstance(exc, ChallengeFailed):
            retry = not exc.codes or not set(exc.codes) <= NOT_RETRIED
            return self._backoff(backoff, deadline) if retry else Verdict(False, backoff)
        if isinstance(exc, ProblemError):
            asks_to_wait = exc.code == "rateLimited" or exc.status in WAIT_STATUSES
            if asks_to_wait:
                return self._wait_verdict(exc, deadline, backoff)
            if exc.code in NOT_RETRIED:
                return Verdict(False)
        return self._backoff(backoff, deadline)

    def _backoff(self, backoff: float, deadline: float) -> Verdict:
        """Try again after *backoff* seconds, unless that ends past the certificate's
        *deadline*: such a try is no try at all."""
        return Verdict(self._clock() + backoff <= deadline, backoff)

    def _wait_verdict(self, exc: ProblemError, deadline: float, backoff: float) -> Verdict:
        if exc.retry_after is None:
            if exc.code == "rateLimited":
                return Verdict(False, down="rate limited (no Retry-After); not asked again "
                                          "in this run")
            return self._backoff(backoff, deadline)
        if self._clock() + exc.retry_after <= deadline:
            return Verdict(True, exc.retry_after)
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=exc.retry_after)
        return Verdict(False, down=f"it asks to be left alone for {_duration(exc.retry_after)} "
                                  f"(until {when:%Y-%m-%dT%H:%M:%SZ}, Retry-After), longer "
                                  f"than this certificate may wait; not asked again in this run")


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:g} s"
