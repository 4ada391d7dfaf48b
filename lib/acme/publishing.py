"""How a certificate's dns-01 values get published, seen from a run.

:meth:`Publishing.solver` builds the :class:`lib.acme.dns01.Solver` that a certificate's
settings name (the gateway's native API, or a provider of ours in this process, with
the settings kept when it was issued under this run's environment);
:meth:`Publishing.check` looks at it before anything is ordered (a refusal then leaves
no order at the CA); :meth:`Publishing.withdraw_leftovers` withdraws what earlier runs
left published (:mod:`lib.acme.journal`).
"""

from __future__ import annotations

import datetime
from contextlib import closing
from pathlib import Path

from lib.acme.dns01 import (
    GatewaySolver,
    Solver,
    provider_settings,
    provider_solver,
    read_password_file,
)
from lib.acme.errors import AcmeError, StateError, UsageError
from lib.acme.journal import Journal
from lib.acme.options import Options
from lib.acme.orders import LazySolver
from lib.acme.progress import Progress
from lib.acme.store import Lineage, Store, now_utc, parse_iso
from lib.dnscheck import PropagationSettings

# How long a value that cannot be withdrawn is tried again (by each run) before it is given
# up: far longer than any outage a renewal rides out, far shorter than for ever.
LEFTOVERS_KEPT = datetime.timedelta(days=7)


class Publishing:
    """The DNS side of a run."""

    def __init__(self, store: Store, progress: Progress, options: Options) -> None:
        self.store = store
        self.progress = progress
        self.options = options

    def solver(self, lineage: Lineage) -> Solver:
        """The solver *lineage*'s settings name: the gateway, or a provider in this process."""
        config = lineage.solver
        propagation = PropagationSettings(nameservers=tuple(lineage.propagation_nameservers),
                                          timeout=lineage.propagation_timeout)
        if config.get("kind") == "gateway":
            password_file = config.get("password_file")
            password = read_password_file(Path(password_file)) if password_file else None
            return GatewaySolver(url=str(config["url"]), user=config.get("user"),
                                 password=password, ca_file=config.get("ca_file"),
                                 propagation=propagation)
        if config.get("kind") == "provider":
            return provider_solver(self._provider_env(lineage), lineage.domains, propagation,
                                   config.get("provider"))
        raise UsageError(f"certificate {lineage.name}: no way to publish dns-01 values "
                         "(--gateway-url, or PROVIDER=... in the environment)")

    def _provider_env(self, lineage: Lineage) -> dict[str, str]:
        """The settings kept when the certificate was issued, under this run's environment."""
        kept = lineage.solver.get("settings")
        return {**(kept if isinstance(kept, dict) else {}), **self.options.env}

    def check(self, lineage: Lineage, solver: LazySolver) -> None:
        """Before anything is ordered, check what the DNS side needs: the provider's
        settings, or the gateway's reachability, trust, credentials and names. A failed
        check leaves no order behind at the CA."""
        config = lineage.solver
        if config.get("kind") == "provider":
            try:
                provider_settings(self._provider_env(lineage), lineage.domains,
                                  config.get("provider"))
            except UsageError as exc:
                raise UsageError(f"{exc} (with the settings kept when the certificate was "
                                 "issued, and this run's environment: a secret given directly "
                                 "must be in it, or in its *_FILE)") from None
        elif config.get("kind") == "gateway":
            active = solver.get()
            if isinstance(active, GatewaySolver):
                self.progress.step(f"Checking the gateway {active.url} before ordering")
                active.check(lineage.domains, lambda message: self.progress.step(f"DNS: {message}"))

    def withdraw_leftovers(self) -> None:
        """Withdraw the dns-01 values an earlier run left published (its journal).

        A value that cannot be withdrawn stays listed for the next run, but not for ever:
        through the gateway the gateway's janitor takes it over at once; with a provider,
        it is given up ``LEFTOVERS_KEPT`` after it was listed, saying what to remove.
        """
        journal = Journal(self.store.root)
        try:
            entries = journal.entries()
        except StateError as exc:
            # One damaged file must not stop every run: it is kept aside, and the values
            # it lists (if any) are the operator's to withdraw now.
            self.progress.warn(f"{exc}; moved to {journal.set_aside()}: TXT values an "
                               "interrupted run left may still be published (it lists them)")
            return
        for entry in entries:
            where = Lineage(name=entry.name, domains=list(entry.domains), servers=[],
                            solver=entry.solver,
                            propagation_nameservers=list(entry.propagation_nameservers))
            try:
                solver = self.solver(where)
            except AcmeError as exc:
                problems = [str(exc)]
            else:
                with closing(solver):
                    problems = solver.teardown(entry.records)
            count = len(entry.records)
            if not problems:
                journal.remove(entry.name, entry.records)
                self.progress.warn(f"{entry.name}: removed {count} TXT value(s) left by an "
                                   "earlier run")
            elif entry.solver.get("kind") == "gateway":
                # The gateway journals what it publishes, and its janitor removes what no
                # teardown came for: nothing is lost by leaving them to it.
                journal.remove(entry.name, entry.records)
                self.progress.warn(f"{entry.name}: {count} TXT value(s) could not be "
                                   f"withdrawn through the gateway ({problems[0]}); its "
                                   "janitor removes them")
            elif _listed_before(entry.since, now_utc() - LEFTOVERS_KEPT):
                # A value whose publishing was refused cannot be withdrawn either: trying
                # for ever would warn at every run. Whatever is out there is named.
                journal.remove(entry.name, entry.records)
                values = ", ".join(f"{r.fqdn} {r.value}" for r in entry.records)
                self.progress.warn(f"{entry.name}: gave up withdrawing {count} TXT value(s) "
                                   f"listed since {entry.since}: remove by hand: {values} "
                                   f"({problems[0]})")
            else:
                self.progress.warn(f"{entry.name}: {count} TXT value(s) left by an earlier run "
                                   f"could not be withdrawn: {problems[0]} (each run tries "
                                   f"again, for {LEFTOVERS_KEPT.days} days from {entry.since})")


def _listed_before(since: str, moment: datetime.datetime) -> bool:
    try:
        return parse_iso(since) < moment
    except ValueError:
        return False  # unknown: kept, and tried again

