"""Issuing and renewing certificates: what a run does with each one, start to end.

:class:`Driver` is what the command line calls. For each certificate it:

1. checks its files and metadata (:meth:`lib.acme.store.Store.check_lineage`): what an
   interrupted run left is repaired or reported;
2. decides whether it is due (:mod:`lib.acme.renewal`: ARI when the CA offers it,
   else its lifetime);
3. obtains it from the first of its CAs that gives one (:mod:`lib.acme.publishing`
   checks the DNS side first; :mod:`lib.acme.failover` says when to try again, to
   wait, or to move on; :mod:`lib.acme.orders` is the protocol at one CA;
   :mod:`lib.acme.accounts` the account there), after the run's pre-hooks;
4. stores it as a new version (:mod:`lib.acme.versions`) and runs the deploy hook
   (:mod:`lib.acme.hooks`), again at the next run until it succeeds.

``renew`` isolates certificates: whatever goes wrong with one (its metadata, its CA,
its hook, a bug) is its outcome, and the run goes on to the next.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass

from lib.acme.accounts import Accounts
from lib.acme.cas import STAGING
from lib.acme.client import AcmeClient
from lib.acme.errors import (
    AcmeError,
    HookFailed,
    NoAnswer,
    ProblemError,
    StateError,
    TransportError,
    UsageError,
)
from lib.acme.failover import Failover
from lib.acme.hooks import RunHooks
from lib.acme.options import Options
from lib.acme.orders import Issued, LazySolver, OrderFlow
from lib.acme.progress import Progress
from lib.acme.publishing import Publishing
from lib.acme.renewal import Decision, ari_check_due, by_lifetime, by_window, remember_window
from lib.acme.revocation import revoke
from lib.acme.store import Lineage, Store, iso, now_utc
from lib.acme.versions import Check

log = logging.getLogger(__name__)

# What the command line says about a certificate (the rest of a Lineage is what was issued).
_SETTINGS = ("servers", "key_type", "reuse_key", "ca_file", "solver", "propagation_nameservers",
             "propagation_timeout", "deploy_hook", "profile", "preferred_chain", "must_staple",
             "csr", "pre_hook", "post_hook")
_SAVED_ORDER = ["fullchain.pem", "privkey.pem", "cert.pem", "chain.pem"]


@dataclass
class Outcome:
    """What happened to one certificate in this run."""

    name: str
    action: str  # issued, renewed, kept, skipped, dry-run, failed
    detail: str = ""
    error: str | None = None
    directory: str | None = None
    serial: str | None = None
    not_after: str | None = None
    files: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


class Driver:
    """Runs whole operations against the CA(s), reporting each step."""

    def __init__(self, store: Store, progress: Progress, options: Options,
                 publishing: Publishing | None = None) -> None:
        self.store = store
        self.progress = progress
        self.options = options
        self.accounts = Accounts(store, progress, options)
        self.failover = Failover(progress, options, forget=self.accounts.forget)
        # The DNS side (a caller may publish its own way: the gateway's own certificate).
        self.publishing = publishing or Publishing(store, progress, options)
        self.hooks = RunHooks(progress, options)

    def close(self) -> None:
        self.accounts.close()

    def step(self, message: str) -> None:
        self.progress.step(message)

    # --- accounts and revocation (the command line's other commands) --------------------

    def client(self, directory_url: str, *, create: bool = True) -> AcmeClient:
        return self.accounts.client(directory_url, create=create)

    def rollover(self, directory_url: str, key_type: str | None = None) -> str:
        return self.accounts.rollover(directory_url, key_type)

    def deactivate(self, directory_url: str) -> str:
        return self.accounts.deactivate(directory_url)

    def revoke(self, cert_pem: bytes, reason: int | None, *, directory_url: str | None,
               cert_key_pem: bytes | None = None) -> Lineage | None:
        return revoke(self.store, self.accounts, self.progress, cert_pem, reason,
                      directory_url=directory_url, cert_key_pem=cert_key_pem)

    # --- issue and renew ----------------------------------------------------------------

    def issue(self, lineage: Lineage, *, force: bool = False) -> Outcome:
        """Issue *lineage* unless an unexpired certificate for the same names is not due.

        A certificate that is kept still takes the settings given now (servers, hook,
        key type, ...), so the next renewal uses them.
        """
        try:
            previous = self.store.load_lineage(lineage.name)
        except StateError as exc:
            # Issuing again is how to repair it: the new metadata replaces the damaged one.
            self.progress.warn(f"{lineage.name}: {exc}; issuing anew")
            previous = None
        lost = bool(previous is not None and self._check(previous).renew)
        if previous is not None and previous.serial and not force and not previous.revoked \
                and not lost and not self.options.dry_run \
                and sorted(previous.domains) == sorted(lineage.domains) \
                and previous.out == lineage.out:
            decision = self.decide(previous)
            if not decision.due:
                for name in _SETTINGS:
                    setattr(previous, name, getattr(lineage, name))
                self.store.save_meta(previous)
                self.step(f"Certificate {lineage.name} is not due: {decision.reason} "
                          "(--force issues anyway)")
                return self._deploy_pending(previous, Outcome(
                    lineage.name, "kept", decision.reason, directory=previous.issuer_directory,
                    serial=previous.serial, not_after=previous.not_after,
                    files=str(self.store.files_dir(previous))))
        return self._issue_and_store(lineage, previous, "issued", raise_usage=True)

    def renew(self, names: Sequence[str] | None = None, *, force: bool = False) -> list[Outcome]:
        """Renew every certificate that is due (or every one, with *force*)."""
        outcomes: list[Outcome] = []
        for name in names or self.store.lineage_names():
            # Whatever goes wrong with one certificate (its metadata, its CA, its hook,
            # a bug of ours) is its outcome; the run goes on to the next one.
            try:
                outcome = self._renew_one(name, force)
            except AcmeError as exc:
                outcome = Outcome(name, "failed", error=str(exc))
            except Exception as exc:
                log.debug("renewing %s", name, exc_info=True)
                outcome = Outcome(name, "failed",
                                  error=f"internal error: {type(exc).__name__}: {exc}")
            if outcome.failed and outcome.action == "failed":
                self.progress.warn(f"{name}: {outcome.error}")
            outcomes.append(outcome)
        return outcomes

    def _renew_one(self, name: str, force: bool) -> Outcome:
        lineage = self.store.load_lineage(name)
        if lineage is None:
            return Outcome(name, "failed", error=f"no certificate named {name!r}")
        if lineage.revoked and not force:
            self.step(f"Certificate {name}: skipped, revoked ({lineage.revoked}); "
                      "issue it again to replace it")
            return Outcome(name, "skipped", f"revoked ({lineage.revoked})")
        lost = self._check(lineage).renew
        if lost:
            decision = Decision(True, lost)
        elif self.options.dry_run:
            decision = Decision(True, "--dry-run")
        else:
            decision = Decision(True, "--force") if force else self.decide(lineage)
        if not decision.due:
            self.step(f"Certificate {name}: not due, {decision.reason}")
            return self._deploy_pending(lineage, Outcome(
                name, "kept", decision.reason, serial=lineage.serial,
                not_after=lineage.not_after, directory=lineage.issuer_directory))
        self.step(f"Certificate {name}: due, {decision.reason}")
        return self._issue_and_store(lineage, lineage, "renewed", warned=True)

    def _check(self, lineage: Lineage) -> Check:
        """The start-up consistency check of one certificate: what an interrupted run
        left is repaired (and said), what cannot be is a :class:`StateError`."""
        check = self.store.check_lineage(lineage)
        for text in check.repaired:
            self.progress.warn(f"{lineage.name}: repaired: {text}")
        if check.problems:
            raise StateError("; ".join(check.problems))
        return check

    def decide(self, lineage: Lineage) -> Decision:
        """Whether *lineage* is due: ARI when its CA offers it, else its lifetime."""
        now = now_utc()
        if not lineage.serial:
            return Decision(True, "never issued")
        self.accounts.remember_ca_file(lineage)
        server = lineage.issuer_directory
        if lineage.ari_id and server and not self.failover.down(server):
            try:
                if ari_check_due(lineage, now):
                    cached = self.accounts.cached(server)
                    client = cached or self.accounts.anonymous(server)
                    try:
                        if client.directory.renewal_info:
                            info = client.renewal_info(lineage.ari_id)
                            remember_window(lineage, info, now)
                            self.store.save_meta(lineage)
                    finally:
                        if cached is None:
                            client.net.close()
                if lineage.ari_window and lineage.ari_chosen:
                    return by_window(lineage, now)
            except (ProblemError, TransportError, ValueError) as exc:
                if isinstance(exc, NoAnswer):
                    self.failover.mark_down(server, "it did not answer; not asked again in "
                                                    "this run")
                self.progress.warn(f"{lineage.name}: renewal information unavailable ({exc}); "
                                   "deciding by lifetime")
        elif lineage.ari_window and lineage.ari_chosen:
            return by_window(lineage, now)
        return by_lifetime(lineage, now)

    def _issue_and_store(self, lineage: Lineage, previous: Lineage | None, action: str, *,
                         raise_usage: bool = False, warned: bool = False) -> Outcome:
        """Obtain, store, deploy. Failures become the outcome, except usage errors when
        *raise_usage* (one certificate asked for on the command line: exit status 2)."""
        try:
            self.hooks.before_obtaining(lineage)
            issued = self.obtain(lineage, previous)
        except AcmeError as exc:
            if raise_usage and isinstance(exc, UsageError):
                raise
            if not warned:
                self.progress.warn(f"{lineage.name}: {exc}")
            return Outcome(lineage.name, "failed", error=str(exc))
        if self.options.dry_run:
            self.step(f"Dry run: serial {issued.info.serial} is not saved, and no deploy hook "
                      "runs")
            return Outcome(lineage.name, "dry-run", f"the CA issued serial {issued.info.serial} "
                           "(not saved, not deployed)", directory=issued.directory,
                           serial=issued.info.serial, not_after=iso(issued.info.not_after))
        self._record(lineage, issued)
        files = {"cert.pem": issued.leaf_pem.encode(), "chain.pem": issued.chain_pem.encode(),
                 "fullchain.pem": (issued.leaf_pem + issued.chain_pem).encode()}
        if issued.key_pem is not None:  # none for the user's own CSR: the key is theirs
            files = {"privkey.pem": issued.key_pem, **files}
        # Until the hook succeeds, every run tries it again.
        lineage.deploy_pending = bool(lineage.deploy_hook)
        for warning in self.store.save_certificate(lineage, files):
            self.progress.warn(warning)
        self.store.drop_pending(lineage.name)
        folder = self.store.files_dir(lineage)
        self.step(f"Saved {folder}/{', '.join(sorted(files, key=_SAVED_ORDER.index))} "
                  f"(each version in {folder}/versions)")
        outcome = Outcome(lineage.name, action, directory=issued.directory,
                          serial=issued.info.serial, not_after=lineage.not_after,
                          files=str(folder))
        if lineage.deploy_hook:
            try:
                self.hooks.deploy(lineage, folder)
            except HookFailed as exc:
                self.progress.warn(f"{exc} (it runs again at the next run)")
                outcome.error = str(exc)
            else:
                lineage.deploy_pending = False
                self.store.save_meta(lineage)
        return outcome

    @staticmethod
    def _record(lineage: Lineage, issued: Issued) -> None:
        lineage.issuer_directory = issued.directory
        lineage.account_url = issued.account_url
        lineage.order_url = issued.order_url
        lineage.serial = issued.info.serial
        lineage.not_before = iso(issued.info.not_before)
        lineage.not_after = iso(issued.info.not_after)
        lineage.ari_id = issued.info.ari_id
        lineage.chain_issuer = issued.chain_issuer
        lineage.issued = iso(now_utc())
        lineage.revoked = None
        lineage.ari_window = lineage.ari_chosen = lineage.ari_next_check = None

    def obtain(self, lineage: Lineage, previous: Lineage | None = None) -> Issued:
        """A certificate for *lineage* from the first of its CAs that gives one."""
        self.accounts.remember_ca_file(lineage)
        servers = list(lineage.servers)
        if self.options.dry_run:
            servers = [STAGING.get(server, server) for server in servers]
            for server, twin in zip(lineage.servers, servers, strict=True):
                if twin != server:
                    self.step(f"Dry run: asking the staging CA {twin} instead of {server}")
        with closing(LazySolver(lambda: self.publishing.solver(lineage))) as solver:
            self.publishing.check(lineage, solver)

            def at(server: str) -> Issued:
                flow = OrderFlow(self.accounts.client(server), self.store, self.progress,
                                 self.options, solver, lineage, previous)
                return flow.run()

            return self.failover.run(servers, at)

    # --- the deploy hook ----------------------------------------------------------------

    def _deploy_pending(self, lineage: Lineage, outcome: Outcome) -> Outcome:
        """Run the deploy hook that failed (or never ran) for the current certificate."""
        if not (lineage.deploy_pending and lineage.deploy_hook):
            return outcome
        self.step(f"Certificate {lineage.name}: its deploy hook has not succeeded yet")
        try:
            self.hooks.deploy(lineage, self.store.files_dir(lineage))
        except HookFailed as exc:
            self.progress.warn(str(exc))
            outcome.error = str(exc)
            return outcome
        lineage.deploy_pending = False
        self.store.save_meta(lineage)
        outcome.detail += "; deploy hook run"
        return outcome
