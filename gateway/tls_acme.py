"""The gateway's own HTTPS certificate, obtained and renewed from an ACME CA (``SSL_ACME_*``).

An expired API certificate is a classic outage: the API that would renew the
certificates of everyone else is the one that is down. With ``SSL_ACME_SERVER``
the gateway keeps its own, with acmegw-acme's library (:mod:`lib.acme`) and its
own provider:

* **Where it lives.** ``STATE_DIR/acme`` is a :class:`lib.acme.store.Store`: the
  account key (``accounts/<ca>/account.key``) and the certificate's versions
  (``certificates/gateway/versions/...``, the key 0600 from the moment it exists,
  ``current`` switched by one ``rename(2)``), so the files served are always a
  pair. :func:`gateway.config.acme_files` names them; :class:`gateway.tls.ReloadingTLS`
  serves them and is told to look again after each run.
* **The challenge.** The TXT values go through the :class:`gateway.service.ChallengeService`
  every client's request takes (per-name lock, journal, provider call under its
  deadline, propagation wait; the janitor removes what a crash left), under an
  identity of its own, ``gateway:tls`` (no user can have that name: ``:`` is not
  allowed in one), which may write only the ``_acme-challenge`` names of
  ``SSL_ACME_DOMAINS``. The builtin DNS server is up before the first attempt:
  it opens with the application, before the listeners.
* **When.** :meth:`lib.acme.issuance.Driver.issue` decides: ARI when the CA
  offers it, else a third of the lifetime left. The next look is at the moment
  the certificate becomes due (the ARI moment chosen, or the point two thirds
  into its life), at the latest after :data:`MAX_SLEEP`. A failed attempt is
  tried again after ``SSL_ACME_RETRY_DELAY``, doubling up to :data:`MAX_RETRY`;
  SIGHUP tries at once. Each run is one try at the CA: the waits between tries
  are this loop's, so that a stop never waits for one.
* **Who renews.** One process at a time: a run holds the store's lock
  (``STATE_DIR/acme/lock``); a process that finds it taken waits its turn and
  then serves what the other wrote. This is the one seam for replicas (issue 14):
  there the turn becomes the state layer's (a database lock, as
  :meth:`gateway.state.State.janitor_turn` is for the janitor), and the account
  and the lineage move into the state layer so that every replica serves the
  one certificate; :class:`OwnCertificate` takes the turn as a parameter
  (``turn``), and the rest stays as it is.

The ACME client is synchronous (requests); each run goes on a daemon thread of
its own, and publishes through the event loop with
:func:`asyncio.run_coroutine_threadsafe`. Stopping the gateway ends a wait at
once and makes a run unwind (withdrawing what it published) at its next wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import ipaddress
import logging
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.auth import Identity
from gateway.config import ACME_LINEAGE, ACME_STATE, AcmeTLSConfig
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.service import ChallengeService
from gateway.tls import ReloadingTLS
from lib.acme import jws
from lib.acme.client import ExternalAccount
from lib.acme.dns01 import Report, Solver, TxtRecord
from lib.acme.errors import AcmeError, LockBusy, SolverError
from lib.acme.issuance import Driver, Outcome
from lib.acme.options import Options
from lib.acme.progress import Progress
from lib.acme.publishing import Publishing
from lib.acme.store import Lineage, Store, iso, now_utc, parse_iso

log = logging.getLogger(__name__)

T = TypeVar("T")

# The longest wait between two looks at the certificate: the clock may have jumped,
# and a CA's ARI window may have moved (it is asked at most this often without one).
MAX_SLEEP = 12 * 3600.0
MIN_SLEEP = 1.0
MAX_RETRY = 3600.0
# How long a stopping gateway waits for a run to unwind; a run blocked on the CA
# past that is left to its daemon thread (its files are written atomically).
STOP_GRACE = 10.0
IDENTITY_USER = "gateway:tls"
RENEWED_BY_ACME = (
    "the gateway renews it itself from SSL_ACME_SERVER: see the errors logged for it, "
    "or send SIGHUP to try now"
)


class Stopping(BaseException):
    """The gateway is stopping: a run unwinds (its ``finally`` withdraws its values)."""


class LoggedProgress(Progress):
    """acmegw-acme's protocol steps as log lines (the gateway has no terminal).

    Its warnings are details too: the client says a failure at each level (the try,
    the CA, the certificate), and the run's outcome is one line of its own (an error
    when it failed, with the next try), so that one failure is one error in the log.
    """

    def step(self, message: str) -> None:
        log.info("%s", message)

    def warn(self, message: str) -> None:
        log.info("warning: %s", message)


def gateway_identity(config: AcmeTLSConfig) -> Identity:
    """Who publishes the gateway's own challenges: only the names of its certificate."""
    bases = tuple(dict.fromkeys(name.removeprefix("*.") for name in config.domains))
    return Identity(ipaddress.ip_address("127.0.0.1"), IDENTITY_USER, bases)


class ServiceSolver(Solver):
    """dns-01 values through the gateway's own :class:`ChallengeService`, from a worker
    thread: the request path every API takes, under the gateway's identity."""

    description = "the gateway's own challenge service"

    def __init__(
        self, service: ChallengeService, identity: Identity, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.service = service
        self.identity = identity
        self.loop = loop

    def bound(self) -> float:
        service = self.service
        wait = service.propagation.timeout if service.check_propagation else 0.0
        return service.provider_timeout + wait + service.propagation.delay + 10.0

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout: float) -> T:
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        except RuntimeError:  # the loop has closed: the gateway is gone
            coroutine.close()
            raise Stopping() from None
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise SolverError(f"the challenge service did not answer within {timeout:g}s") from None

    async def _change(self, records: Sequence[TxtRecord], add: bool) -> list[str]:
        """Every record at once (the service serialises each name); the problems."""

        async def one(record: TxtRecord) -> None:
            fqdn = self.service.challenge_fqdn(self.identity, record.domain)
            if add:
                await self.service.add(self.identity, fqdn, record.value)
            else:
                await self.service.remove(self.identity, fqdn, record.value)

        results = await asyncio.gather(*(one(r) for r in records), return_exceptions=True)
        problems = []
        for record, result in zip(records, results, strict=True):
            if isinstance(result, GatewayError):
                problems.append(f"{record.fqdn}: {result.message}")
            elif isinstance(result, BaseException):
                raise result
        return problems

    def setup(self, records: Sequence[TxtRecord], report: Report) -> None:
        problems = self._call(self._change(records, True), self.bound())
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise SolverError(f"{problems[0]}{more}")
        report(f"published {len(records)} value(s); the challenge service answered once "
               "they were served")

    def teardown(self, records: Sequence[TxtRecord]) -> list[str]:
        try:
            return self._call(self._change(records, False), self.bound())
        except SolverError as exc:
            return [str(exc)]


class _Publishing(Publishing):
    """acmegw-acme's DNS side, publishing through the gateway's own service."""

    def __init__(
        self, store: Store, progress: Progress, options: Options, solver: Callable[[], Solver]
    ) -> None:
        super().__init__(store, progress, options)
        self._solver = solver

    def solver(self, lineage: Lineage) -> Solver:
        return self._solver()


@dataclass(frozen=True)
class Attempt:
    """What one run did: the outcome, and the lineage as it is now stored."""

    outcome: Outcome
    lineage: Lineage | None


def next_look(lineage: Lineage, now: datetime.datetime) -> tuple[float, str]:
    """Seconds until the certificate may be due, and when that is (for the log)."""
    moments: list[datetime.datetime] = []
    if lineage.ari_window and lineage.ari_chosen:
        chosen = parse_iso(lineage.ari_chosen)
        moments.append(chosen)
        why = "the moment chosen in the CA's renewal window (ARI)"
        if lineage.ari_next_check and parse_iso(lineage.ari_next_check) < chosen:
            moments.append(parse_iso(lineage.ari_next_check))
            why = "when the CA said to ask for its renewal window again (ARI)"
    elif lineage.not_before and lineage.not_after:
        start, end = parse_iso(lineage.not_before), parse_iso(lineage.not_after)
        moments.append(end - (end - start) / 3)
        why = "a third of its lifetime left"
    else:
        why = "no certificate yet"
    latest = now + datetime.timedelta(seconds=MAX_SLEEP)
    moment = min([*moments, latest])
    if moment == latest and moments:
        why = "the daily look"
    seconds = max(MIN_SLEEP, (moment - now).total_seconds())
    return seconds, f"{iso(now + datetime.timedelta(seconds=seconds))} ({why})"


def retry_delay(first: float, failures: int) -> float:
    """The wait after the *failures*-th failure in a row: doubling from *first*."""
    return float(min(MAX_RETRY, max(first, first * 2.0 ** (failures - 1))))


class OwnCertificate:
    """Obtains, renews and serves the gateway's certificate; see the module docstring."""

    def __init__(
        self,
        config: AcmeTLSConfig,
        state_dir: Path,
        service: ChallengeService,
        tls: ReloadingTLS,
        metrics: Metrics | None = None,
        turn: Callable[[Store], AbstractContextManager[None]] | None = None,
    ) -> None:
        self.config = config
        self.store = Store(state_dir / ACME_STATE)
        self.service = service
        self.tls = tls
        tls.renewal_hint = RENEWED_BY_ACME
        self.identity = gateway_identity(config)
        self.turn = turn or _file_lock_turn
        self.failures = 0
        self._failures_total = metrics.acme_failures() if metrics is not None else None
        self._stopping = threading.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Made on the event loop the service runs on; runs publish through it.
        self._loop = asyncio.get_running_loop()

    def lineage(self) -> Lineage:
        """What to ask for: the names, the CA and its trust (the rest is what was issued)."""
        config = self.config
        return Lineage(
            name=ACME_LINEAGE,
            domains=list(config.domains),
            servers=[config.server],
            ca_file=str(config.ca_file.resolve()) if config.ca_file else None,
            solver={"kind": "gateway-service"},
        )

    def options(self) -> Options:
        config = self.config
        return Options(
            ca_file=str(config.ca_file) if config.ca_file else None,
            contact=(f"mailto:{config.email}",) if config.email else (),
            # Setting SSL_ACME_SERVER is agreeing to that CA's terms (README).
            agree_tos=True,
            eab=ExternalAccount(config.eab_kid, jws.b64url_decode(config.eab_hmac_key))
            if config.eab_kid and config.eab_hmac_key else None,
            attempts=1,  # the loop below retries, with its own waits
            sleep=self._sleep,
        )

    # -- the loop ----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tls-acme")

    def wake(self) -> None:
        """Look now (SIGHUP): after a failure, or to take a changed setting's effect."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task is None:
            return
        done, _ = await asyncio.wait({self._task}, timeout=STOP_GRACE)
        if not done:
            log.warning("stopping without waiting for the TLS certificate's run at the CA")
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Stopping):
            await self._task

    async def _run(self) -> None:
        if self.tls.validity is None:
            log.warning(
                "no TLS certificate yet: HTTPS handshakes are refused until %s issues one "
                "for %s",
                self.config.server,
                ", ".join(self.config.domains),
            )
        while not self._stopping.is_set():
            self._wake.clear()
            self.tls.check()  # what another process may have written meanwhile
            force = self.tls.validity is None
            try:
                attempt = await self._in_thread(functools.partial(self.attempt, force))
            except Stopping:
                return
            self.tls.check()
            delay = self._after(attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def _after(self, attempt: Attempt) -> float:
        """Say what the run did; the seconds until the next one."""
        outcome, lineage = attempt.outcome, attempt.lineage
        if outcome.failed and outcome.action == "failed":
            self.failures += 1
            if self._failures_total is not None:
                self._failures_total.inc()
            delay = retry_delay(self.config.retry_delay, self.failures)
            log.error(
                "TLS certificate for %s not obtained from %s: %s; trying again in %.0fs%s",
                ", ".join(self.config.domains),
                self.config.server,
                outcome.error,
                delay,
                "" if self.tls.validity is not None else " (HTTPS is refused until then)",
            )
            return delay
        self.failures = 0
        if lineage is None:  # another process holds the turn
            return self.config.retry_delay
        delay, when = next_look(lineage, now_utc())
        if outcome.action in ("issued", "renewed"):
            log.info(
                "TLS certificate for %s %s by %s: serial %s, valid until %s; next look at %s",
                ", ".join(lineage.domains),
                outcome.action,
                lineage.issuer_directory,
                lineage.serial,
                lineage.not_after,
                when,
            )
        else:
            log.info("TLS certificate %s kept (%s); next look at %s", lineage.serial,
                     outcome.detail, when)
        return delay

    async def _in_thread(self, work: Callable[[], T]) -> T:
        """*work* on a daemon thread of its own: a stop never waits for the CA's answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def run() -> None:
            try:
                result, error = work(), None
            except BaseException as exc:  # handed to the loop, which re-raises it
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is gone
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=run, name="acmegw-tls-acme", daemon=True).start()
        return await future

    # -- one run (worker thread) -------------------------------------------

    def attempt(self, force: bool = False) -> Attempt:
        """Issue or renew when due (*force*: whatever the files say); never raises but
        :class:`Stopping`."""
        loop = self._loop
        lineage = self.lineage()
        progress = LoggedProgress(quiet=True)
        try:
            with self.turn(self.store):
                options = self.options()
                publishing = _Publishing(self.store, progress, options,
                                         lambda: ServiceSolver(self.service, self.identity, loop))
                driver = Driver(self.store, progress, options, publishing)
                try:
                    publishing.withdraw_leftovers()
                    previous = self.store.load_lineage(ACME_LINEAGE)
                    issuer = previous.issuer_directory if previous and previous.serial else None
                    moved = issuer is not None and issuer not in lineage.servers
                    if moved:
                        progress.step(f"SSL_ACME_SERVER is now {self.config.server}; "
                                      f"replacing the certificate of {issuer}")
                    outcome = driver.issue(lineage, force=force or moved)
                    if outcome.action == "issued" and issuer is not None:
                        outcome.action = "renewed"
                finally:
                    driver.close()
                return Attempt(outcome, self.store.load_lineage(ACME_LINEAGE))
        except LockBusy as exc:
            log.info("TLS certificate: %s", exc)
            return Attempt(Outcome(ACME_LINEAGE, "skipped", str(exc)), None)
        except AcmeError as exc:
            return Attempt(Outcome(ACME_LINEAGE, "failed", error=str(exc)), None)
        except (Stopping, KeyboardInterrupt):
            raise
        except Exception as exc:
            log.exception("TLS certificate: unexpected error")
            return Attempt(Outcome(ACME_LINEAGE, "failed",
                                   error=f"internal error: {type(exc).__name__}: {exc}"), None)

    def _sleep(self, seconds: float) -> None:
        """The ACME client's waits (polling, Retry-After): ended by a stop."""
        if self._stopping.wait(seconds):
            raise Stopping()


@contextlib.contextmanager
def _file_lock_turn(store: Store) -> Iterator[None]:
    """This process's turn to renew: the store's lock, not waited for (one process on
    a STATE_DIR renews; another serves what it wrote)."""
    with store.locked(timeout=0.0):
        yield

