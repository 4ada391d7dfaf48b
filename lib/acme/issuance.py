"""Issuance, renewal, revocation and account upkeep, step by step in RFC 8555 order.

:class:`Driver` strings the protocol steps of :class:`lib.acme.client.AcmeClient`
together the way acme-tiny does, reporting each one:

1. directory (what the CA offers: optional resources, profiles, terms, EAB);
2. the account: found by its key (``onlyReturnExisting``) or created (terms,
   contact, EAB); an interrupted key rollover is finished or undone first;
3. ``newOrder`` for every name (with ``replaces`` when renewing a certificate
   this CA issued and ARI is offered, and the ``profile`` asked for);
4. each authorization: valid ones are reused, pending ones get their dns-01
   value published through the solver (all at once), then the challenges are
   answered and the authorizations polled;
5. the values are withdrawn whatever happened;
6. finalize with a CSR (a new key, or the previous one with ``reuse_key``),
   polling through ``processing``;
7. download the certificate and its alternate chains, pick the preferred one,
   check it matches the key and the names, store it, run the deploy hook.

Several CA URLs give failover: each CA gets ``attempts`` tries; errors that
another CA would not fix (usage, the DNS solver, the state directory) stop at
once.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from lib.acme import jws
from lib.acme.certificates import (
    CertificateInfo,
    chain_top_issuer,
    dns_names,
    load_chain,
    passes_through,
    select_chain,
    to_pem,
)
from lib.acme.client import (
    REVOCATION_REASONS,
    AcmeClient,
    ExternalAccount,
    check_order_usable,
)
from lib.acme.dns01 import (
    GatewaySolver,
    Solver,
    TxtRecord,
    provider_solver,
    read_password_file,
)
from lib.acme.errors import (
    AcmeError,
    ChallengeFailed,
    HookFailed,
    OrderFailed,
    ProblemError,
    SolverError,
    StateError,
    TransportError,
    UsageError,
)
from lib.acme.keys import (
    DEFAULT_KEY_TYPE,
    generate_key,
    key_type_of,
    load_private_key,
    make_csr,
    private_pem,
)
from lib.acme.messages import Account, Authorization, Challenge, Order
from lib.acme.progress import Progress
from lib.acme.renewal import Decision, ari_check_due, by_lifetime, by_window, remember_window
from lib.acme.store import Lineage, Store, StoredAccount, iso, now_utc
from lib.acme.transport import Transport, host_of
from lib.acme.versions import Check
from lib.dnscheck import PropagationSettings

log = logging.getLogger(__name__)

# What the command line says about a certificate (the rest of a Lineage is what was issued).
_SETTINGS = ("servers", "key_type", "reuse_key", "ca_file", "solver", "propagation_nameservers",
             "propagation_timeout", "deploy_hook", "profile", "preferred_chain")
# newOrder problems after which the same order is tried again without ``replaces``.
_REPLACES_REFUSED = ("alreadyReplaced", "malformed", "conflict")


@dataclass(frozen=True)
class Options:
    """How the driver behaves, whatever the certificate."""

    ca_file: str | None = None
    account_key_type: str = DEFAULT_KEY_TYPE
    contact: tuple[str, ...] = ()
    agree_tos: bool = False
    eab: ExternalAccount | None = None
    attempts: int = 2
    retry_delay: float = 5.0
    validation_timeout: float = 300.0
    order_timeout: float = 300.0
    http_timeout: float = 30.0
    hook_timeout: float = 300.0
    env: Mapping[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep


@dataclass(frozen=True)
class Issued:
    key_pem: bytes
    leaf_pem: str
    chain_pem: str
    info: CertificateInfo
    directory: str
    account_url: str
    order_url: str
    chain_issuer: str


@dataclass
class Outcome:
    """What happened to one certificate in this run."""

    name: str
    action: str  # issued, renewed, kept, skipped, failed
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

    def __init__(self, store: Store, progress: Progress, options: Options) -> None:
        self.store = store
        self.progress = progress
        self.options = options
        self._clients: dict[str, AcmeClient] = {}
        self._ca_files: dict[str, str] = {}

    def close(self) -> None:
        for client in self._clients.values():
            client.net.close()
        self._clients.clear()

    def step(self, message: str) -> None:
        self.progress.step(message)

    # --- directory and account ---------------------------------------------------------

    def remember_ca_file(self, lineage: Lineage) -> None:
        """Trust what the certificate was issued with, unless the command line says otherwise."""
        if lineage.ca_file:
            for server in (*lineage.servers, lineage.issuer_directory):
                if server:
                    self._ca_files.setdefault(server, lineage.ca_file)

    def _new_client(self, directory_url: str, key: jws.AccountKey | None) -> AcmeClient:
        """A client for *directory_url* signing with *key*; the caller closes it."""
        ca_file = self.options.ca_file or self._ca_files.get(directory_url)
        transport = Transport(directory_url, key, ca_file=ca_file,
                              timeout=self.options.http_timeout, sleep=self.options.sleep)
        return AcmeClient(transport, sleep=self.options.sleep)

    def describe_directory(self, client: AcmeClient) -> None:
        d = client.directory
        offered = ", ".join(d.offered()) or "no optional resources"
        extra = []
        if d.profiles:
            extra.append(f"profiles {', '.join(d.profiles)}")
        if d.external_account_required:
            extra.append("external account binding required")
        self.step(f"Directory {d.url}: {offered}" + (f"; {'; '.join(extra)}" if extra else ""))

    def client(self, directory_url: str, *, create: bool = True) -> AcmeClient:
        """A client with a usable account at *directory_url* (found, or created if allowed)."""
        if directory_url in self._clients:
            return self._clients[directory_url]
        stored = self.store.load_account(directory_url)
        if stored is not None:
            key = jws.AccountKey(self._load_key(stored.key_pem, "account key"))
        else:
            if not create:
                raise UsageError(f"no account for {directory_url} in {self.store.root}; "
                                 "run: acmegw-acme account register")
            key = jws.AccountKey(generate_key(self.options.account_key_type))
        client = self._new_client(directory_url, key)
        try:
            self.describe_directory(client)
            if stored is not None and stored.pending_key_pem is not None:
                self._finish_rollover(client, stored)
            account = client.find()
            if account is None:
                if stored is not None:
                    self.progress.warn(f"the CA no longer knows the account {stored.url}")
                    if not create:
                        raise UsageError(f"the account {stored.url} is gone at the CA; "
                                         "run: acmegw-acme account register")
                account = self._register(client)
            else:
                self.step(f"Account {account.url}: {account.status}"
                          + (f", contact {', '.join(account.contact)}" if account.contact else ""))
                if account.status != "valid":
                    raise UsageError(f"the account {account.url} is {account.status}; "
                                     "register a new one with: acmegw-acme account register")
                if self.options.contact and set(self.options.contact) != set(account.contact):
                    account = client.update_contact(self.options.contact)
                    self.step(f"Account contact updated: {', '.join(account.contact)}")
            self.store.save_account(StoredAccount(
                directory=directory_url, url=account.url, contact=list(account.contact),
                key_pem=private_pem(client.key.private_key),
                created=stored.created if stored else ""))
        except BaseException:
            client.net.close()
            raise
        self._clients[directory_url] = client
        return client

    def _register(self, client: AcmeClient) -> Account:
        directory = client.directory
        terms = directory.terms_of_service
        if terms and not self.options.agree_tos:
            raise UsageError(f"{host_of(directory.url)} asks you to agree to its terms of "
                             f"service at {terms}: read them, then pass --agree-tos")
        eab = self.options.eab
        if directory.external_account_required and eab is None:
            raise UsageError(f"{host_of(directory.url)} requires external account binding: "
                             "pass --eab-kid and --eab-hmac-key from the CA's console")
        account, created = client.register(contact=self.options.contact,
                                           agree_tos=self.options.agree_tos, eab=eab)
        how = "created" if created else "found"
        self.step(f"Account {account.url}: {how} ({account.status})"
                  + (f", contact {', '.join(account.contact)}" if account.contact else "")
                  + (f", bound to external account {eab.kid}" if eab and created else ""))
        return account

    def _finish_rollover(self, client: AcmeClient, stored: StoredAccount) -> None:
        """A rollover was interrupted: keep whichever key the CA now knows."""
        assert stored.pending_key_pem is not None
        pending = jws.AccountKey(self._load_key(stored.pending_key_pem, "next account key"))
        probe = self._new_client(client.directory.url, pending)
        try:
            found = probe.find()
        finally:
            probe.net.close()
        if found is not None:
            self.store.promote_pending_key(client.directory.url)
            client.net.key = pending
            self.step("Account: an interrupted key rollover had succeeded; using the new key")
        else:
            self.store.drop_pending_key(client.directory.url)
            self.step("Account: an interrupted key rollover had not happened; keeping the key")

    @staticmethod
    def _load_key(pem: bytes, what: str) -> jws.PrivateKey:
        try:
            return load_private_key(pem)
        except ValueError as exc:
            raise StateError(f"the stored {what} is unreadable: {exc}") from None

    # --- issuance ----------------------------------------------------------------------

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
        lost = previous is not None and self._check(previous).renew
        if previous is not None and previous.serial and not force and not previous.revoked \
                and not lost and sorted(previous.domains) == sorted(lineage.domains) \
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

    def _check(self, lineage: Lineage) -> Check:
        """The start-up consistency check of one certificate: what an interrupted run
        left is repaired (and said), what cannot be is a :class:`StateError`."""
        check = self.store.check_lineage(lineage)
        for text in check.repaired:
            self.progress.warn(f"{lineage.name}: repaired: {text}")
        if check.problems:
            raise StateError("; ".join(check.problems))
        return check

    def _deploy_pending(self, lineage: Lineage, outcome: Outcome) -> Outcome:
        """Run the deploy hook that failed (or never ran) for the current certificate."""
        if not (lineage.deploy_pending and lineage.deploy_hook):
            return outcome
        self.step(f"Certificate {lineage.name}: its deploy hook has not succeeded yet")
        try:
            self.run_deploy_hook(lineage, self.store.files_dir(lineage))
        except HookFailed as exc:
            self.progress.warn(str(exc))
            outcome.error = str(exc)
            return outcome
        lineage.deploy_pending = False
        self.store.save_meta(lineage)
        outcome.detail += "; deploy hook run"
        return outcome

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
        if self._check(lineage).renew:
            decision = Decision(True, "its newest certificate was lost with its key")
        else:
            decision = Decision(True, "--force") if force else self.decide(lineage)
        if not decision.due:
            self.step(f"Certificate {name}: not due, {decision.reason}")
            return self._deploy_pending(lineage, Outcome(
                name, "kept", decision.reason, serial=lineage.serial,
                not_after=lineage.not_after, directory=lineage.issuer_directory))
        self.step(f"Certificate {name}: due, {decision.reason}")
        return self._issue_and_store(lineage, lineage, "renewed", warned=True)

    def decide(self, lineage: Lineage) -> Decision:
        """Whether *lineage* is due: ARI when its CA offers it, else its lifetime."""
        now = now_utc()
        if not lineage.serial:
            return Decision(True, "never issued")
        self.remember_ca_file(lineage)
        if lineage.ari_id and lineage.issuer_directory:
            try:
                if ari_check_due(lineage, now):
                    client = (self._clients.get(lineage.issuer_directory)
                              or self._new_client(lineage.issuer_directory, None))
                    try:
                        if client.directory.renewal_info:
                            info = client.renewal_info(lineage.ari_id)
                            remember_window(lineage, info, now)
                            self.store.save_meta(lineage)
                    finally:
                        if lineage.issuer_directory not in self._clients:
                            client.net.close()
                if lineage.ari_window and lineage.ari_chosen:
                    return by_window(lineage, now)
            except (ProblemError, TransportError, ValueError) as exc:
                self.progress.warn(f"{lineage.name}: renewal information unavailable ({exc}); "
                                   "deciding by lifetime")
        return by_lifetime(lineage, now)

    def _issue_and_store(self, lineage: Lineage, previous: Lineage | None, action: str, *,
                         raise_usage: bool = False, warned: bool = False) -> Outcome:
        """Obtain, store, deploy. Failures become the outcome, except usage errors when
        *raise_usage* (one certificate asked for on the command line: exit status 2)."""
        try:
            issued = self.obtain(lineage, previous)
        except AcmeError as exc:
            if raise_usage and isinstance(exc, UsageError):
                raise
            if not warned:
                self.progress.warn(f"{lineage.name}: {exc}")
            return Outcome(lineage.name, "failed", error=str(exc))
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
        files = {"privkey.pem": issued.key_pem, "cert.pem": issued.leaf_pem.encode(),
                 "chain.pem": issued.chain_pem.encode(),
                 "fullchain.pem": (issued.leaf_pem + issued.chain_pem).encode()}
        # Until the hook succeeds, every run tries it again.
        lineage.deploy_pending = bool(lineage.deploy_hook)
        for warning in self.store.save_certificate(lineage, files):
            self.progress.warn(warning)
        folder = self.store.files_dir(lineage)
        self.step(f"Saved {folder}/fullchain.pem, privkey.pem, cert.pem, chain.pem "
                  f"(each version in {folder}/versions)")
        outcome = Outcome(lineage.name, action, directory=issued.directory,
                          serial=issued.info.serial, not_after=lineage.not_after,
                          files=str(folder))
        if lineage.deploy_hook:
            try:
                self.run_deploy_hook(lineage, folder)
            except HookFailed as exc:
                self.progress.warn(f"{exc} (it runs again at the next run)")
                outcome.error = str(exc)
            else:
                lineage.deploy_pending = False
                self.store.save_meta(lineage)
        return outcome

    def obtain(self, lineage: Lineage, previous: Lineage | None = None) -> Issued:
        """A certificate for *lineage* from the first of its CAs that gives one."""
        self.remember_ca_file(lineage)
        attempts = max(1, self.options.attempts)
        failures: list[str] = []
        with closing(_LazySolver(lambda: self.make_solver(lineage))) as solver:
            for index, server in enumerate(lineage.servers):
                for attempt in range(1, attempts + 1):
                    try:
                        return self._obtain_at(server, lineage, previous, solver)
                    except (UsageError, SolverError, StateError):
                        raise
                    except AcmeError as exc:
                        failures.append(f"{host_of(server)}: {exc}")
                        self.progress.warn(f"{host_of(server)}, attempt {attempt} of "
                                           f"{attempts}: {exc}")
                        self._clients.pop(server, None)
                        if attempt < attempts:
                            self.options.sleep(self.options.retry_delay)
                if index + 1 < len(lineage.servers):
                    self.step(f"Failing over from {host_of(server)} to "
                              f"{lineage.servers[index + 1]}")
        if len(failures) == 1:
            raise OrderFailed(failures[0])
        raise OrderFailed(f"no CA issued the certificate: {' | '.join(failures)}")

    def make_solver(self, lineage: Lineage) -> Solver:
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
            return provider_solver(self.options.env, lineage.domains, propagation,
                                   config.get("provider"))
        raise UsageError(f"certificate {lineage.name}: no way to publish dns-01 values "
                         "(--gateway-url, or PROVIDER=... in the environment)")

    def _obtain_at(self, server: str, lineage: Lineage, previous: Lineage | None,
                   solver: _LazySolver) -> Issued:
        client = self.client(server)
        directory = client.directory
        if lineage.profile:
            if not directory.profiles:
                raise UsageError(f"{host_of(server)} offers no profiles; drop --profile")
            if lineage.profile not in directory.profiles:
                raise UsageError(f"{host_of(server)} has no profile {lineage.profile!r} "
                                 f"(it offers: {', '.join(directory.profiles)})")
        replaces = None
        if previous is not None and previous.ari_id and previous.issuer_directory == server \
                and directory.renewal_info and not previous.revoked:
            replaces = previous.ari_id

        order = self._new_order(client, lineage, replaces)
        self._authorize(client, order, solver)
        key = self._certificate_key(lineage, previous)
        order = self._finalize(client, order, key, lineage)
        return self._download(client, order, key, lineage)

    def _new_order(self, client: AcmeClient, lineage: Lineage, replaces: str | None) -> Order:
        extra = []
        if lineage.profile:
            extra.append(f"profile {lineage.profile}")
        if replaces:
            extra.append(f"replacing {replaces}")
        self.step(f"newOrder for {', '.join(lineage.domains)}"
                  + (f" ({', '.join(extra)})" if extra else ""))
        try:
            order = client.new_order(lineage.domains, profile=lineage.profile, replaces=replaces)
        except ProblemError as problem:
            if not replaces or problem.code not in _REPLACES_REFUSED:
                raise
            self.progress.warn(f"the CA refused 'replaces' ({problem}); ordering without it")
            order = client.new_order(lineage.domains, profile=lineage.profile)
        check_order_usable(order)
        self.step(f"Order {order.url}: {order.status}, "
                  f"{len(order.authorizations)} authorization(s)"
                  + (f", profile {order.profile}" if order.profile else ""))
        return order

    def _authorize(self, client: AcmeClient, order: Order, solver: _LazySolver) -> None:
        todo: list[tuple[Authorization, Challenge, TxtRecord]] = []
        for url in order.authorizations:
            authz = client.authorization(url)
            if authz.status == "valid":
                self.step(f"Authorization {authz.name}: already valid")
                continue
            if authz.status != "pending":
                raise ChallengeFailed(f"authorization for {authz.name} is {authz.status}"
                                      + _problems(authz))
            challenge = authz.challenge("dns-01")
            if challenge is None or not challenge.token:
                offered = ", ".join(c.type for c in authz.challenges) or "none"
                raise ChallengeFailed(f"the CA offers no dns-01 challenge for {authz.name} "
                                      f"(offered: {offered})")
            record = TxtRecord(authz.identifier, jws.dns01_value(challenge.token, client.key))
            self.step(f"Authorization {authz.name}: dns-01, TXT {record.fqdn} {record.value}")
            todo.append((authz, challenge, record))
        if not todo:
            return
        records = [record for _, _, record in todo]
        active = solver.get()
        self.step(f"Publishing {len(records)} TXT value(s) through {active.description}")
        try:
            active.setup(records, lambda message: self.step(f"DNS: {message}"))
            deadline = time.monotonic() + self.options.validation_timeout
            for authz, challenge, _ in todo:
                answered = client.answer(challenge)
                self.step(f"Challenge {authz.name}: answered ({answered.status})")
            for authz, _, _ in todo:
                result = client.poll_authorization(authz.url, deadline)
                if result.status != "valid":
                    raise ChallengeFailed(f"authorization for {authz.name} is {result.status}"
                                          + _problems(result))
                self.step(f"Authorization {authz.name}: valid")
        finally:
            problems = active.teardown(records)
            for problem in problems:
                self.progress.warn(f"DNS: {problem}")
            if not problems:
                self.step(f"Removed the {len(records)} TXT value(s)")

    def _certificate_key(self, lineage: Lineage, previous: Lineage | None) -> jws.PrivateKey:
        if lineage.reuse_key and previous is not None:
            old = self.store.read_file(previous, "privkey.pem")
            if old is not None:
                key = self._load_key(old, "certificate key")
                if key_type_of(key) == lineage.key_type and previous.revoked != "keyCompromise":
                    self.step(f"Reusing the {lineage.key_type} certificate key")
                    return key
        return generate_key(lineage.key_type)

    def _finalize(self, client: AcmeClient, order: Order, key: jws.PrivateKey,
                  lineage: Lineage) -> Order:
        deadline = time.monotonic() + self.options.order_timeout
        # The order we hold predates the validations: look again before waiting.
        order = client.poll_order(client.order(order.url), deadline, waiting=("pending",))
        check_order_usable(order)
        if order.status == "ready":
            self.step(f"Finalize: CSR for {len(lineage.domains)} name(s), "
                      f"{key_type_of(key)} key")
            order = client.finalize(order, make_csr(key, lineage.domains))
            check_order_usable(order)
            self.step(f"Order {order.url}: {order.status}")
        order = client.poll_order(order, deadline)
        check_order_usable(order)
        if order.status != "valid" or not order.certificate:
            raise OrderFailed(f"order {order.url} ended {order.status} without a certificate")
        return order

    def _download(self, client: AcmeClient, order: Order, key: jws.PrivateKey,
                  lineage: Lineage) -> Issued:
        assert order.certificate is not None
        chains = [load_chain(c.pem) for c in client.certificates(order.certificate)]
        tops = [chain_top_issuer(chain) for chain in chains]
        index = select_chain(chains, lineage.preferred_chain)
        if len(chains) > 1:
            self.step(f"Certificate {order.certificate}: {len(chains)} chains, to "
                      + ", ".join(f'"{t}"' for t in tops) + f"; using \"{tops[index]}\"")
        else:
            self.step(f"Certificate {order.certificate}: chain to \"{tops[0]}\"")
        # select_chain also takes a chain that passes through the preferred
        # issuer without ending there; only warn when none does.
        if lineage.preferred_chain and not passes_through(chains[index], lineage.preferred_chain):
            self.progress.warn(f"no chain leads to \"{lineage.preferred_chain}\"; "
                               "using the CA's default")
        certs = chains[index]
        leaf = certs[0]
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if leaf.public_key().public_bytes(serialization.Encoding.DER, public) != \
                key.public_key().public_bytes(serialization.Encoding.DER, public):
            raise OrderFailed("the CA's certificate is not for the key we sent")
        missing = {d.lower() for d in lineage.domains} - {n.lower() for n in dns_names(leaf)}
        if missing:
            raise OrderFailed(f"the CA's certificate lacks {', '.join(sorted(missing))}")
        info = CertificateInfo.of(leaf)
        self.step(f"Issued serial {info.serial}, valid {iso(info.not_before)} to "
                  f"{iso(info.not_after)}")
        return Issued(key_pem=private_pem(key), leaf_pem=to_pem(certs[:1]),
                      chain_pem=to_pem(certs[1:]), info=info, directory=client.directory.url,
                      account_url=client.net.account_url or "", order_url=order.url,
                      chain_issuer=tops[index])

    def run_deploy_hook(self, lineage: Lineage, folder: Path) -> None:
        """Run the deploy hook with certbot's variables; bounded by ``hook_timeout``."""
        assert lineage.deploy_hook
        env = dict(os.environ)
        env.update({"RENEWED_LINEAGE": str(folder), "RENEWED_DOMAINS": " ".join(lineage.domains),
                    "ACMEGW_CERT_NAME": lineage.name})
        self.step(f"Deploy hook: {lineage.deploy_hook}")
        try:
            done = subprocess.run(["/bin/sh", "-c", lineage.deploy_hook], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=self.options.hook_timeout, check=False)
        except subprocess.TimeoutExpired:
            raise HookFailed(f"deploy hook ran longer than {self.options.hook_timeout:g}s "
                             "and was stopped") from None
        except OSError as exc:
            raise HookFailed(f"deploy hook could not start: {exc.strerror}") from None
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            last = output.splitlines()[-1] if output else "no output"
            raise HookFailed(f"deploy hook exited with status {done.returncode}: {last}")
        self.step("Deploy hook: done" + (f" ({output.splitlines()[-1]})" if output else ""))

    # --- revocation and accounts -------------------------------------------------------

    def revoke(self, cert_pem: bytes, reason: int | None, *, directory_url: str | None,
               cert_key_pem: bytes | None = None) -> Lineage | None:
        """Revoke the certificate in *cert_pem*; returns its lineage when we keep one."""
        try:
            leaf = load_chain(cert_pem)[0]
        except ValueError:
            raise UsageError("the file holds no PEM certificate") from None
        serial = format(leaf.serial_number, "x")
        lineage = next((lin for name in self.store.lineage_names()
                        if (lin := self.store.load_lineage(name)) is not None
                        and lin.serial == serial), None)
        if lineage is not None:
            self.remember_ca_file(lineage)
        server = directory_url or (lineage.issuer_directory if lineage else None)
        if server is None:
            raise UsageError("this certificate is not one of ours: name its CA with --server")
        der = leaf.public_bytes(serialization.Encoding.DER)
        self.step(f"Revoking serial {serial} ({', '.join(dns_names(leaf))}) at {server}")
        if cert_key_pem is not None:
            client = self._new_client(server, None)
            try:
                self.describe_directory(client)
                client.revoke(der, reason, cert_key=jws.AccountKey(
                    self._load_key(cert_key_pem, "certificate key")))
            finally:
                client.net.close()
            self.step("Revoked (signed with the certificate's key)")
        else:
            self.client(server, create=False).revoke(der, reason)
            self.step("Revoked (signed with the account key)")
        if lineage is not None:
            lineage.revoked = _reason_name(reason)
            self.store.save_meta(lineage)
        return lineage

    def rollover(self, directory_url: str, key_type: str | None = None) -> str:
        """Replace the account key (RFC 8555 section 7.3.5); returns the account URL."""
        client = self.client(directory_url, create=False)
        new_key = jws.AccountKey(generate_key(key_type or key_type_of(client.key.private_key)))
        # Kept before asking, so a crash after the CA switched keys cannot lose the account.
        self.store.save_pending_key(directory_url, private_pem(new_key.private_key))
        self.step(f"keyChange: rolling over to a new {key_type_of(new_key.private_key)} key")
        try:
            client.change_key(new_key)
        except ProblemError:
            self.store.drop_pending_key(directory_url)
            raise
        self.store.promote_pending_key(directory_url)
        account = client.find()
        if account is None or account.url != client.net.account_url:
            raise TransportError("after the rollover the CA does not find the account by "
                                 "its new key")
        self.step(f"Account {account.url}: now signed with the new key "
                  f"(thumbprint {new_key.thumbprint()})")
        return account.url

    def deactivate(self, directory_url: str) -> str:
        client = self.client(directory_url, create=False)
        account = client.deactivate()
        self.step(f"Account {account.url}: {account.status}")
        moved = self.store.retire_account(directory_url)
        self._clients.pop(directory_url, None)
        client.net.close()
        self.step(f"Its key is kept in {moved}")
        return account.url


class _LazySolver:
    """Builds the solver only when some authorization needs it (none are reused)."""

    def __init__(self, factory: Callable[[], Solver]) -> None:
        self._factory = factory
        self._solver: Solver | None = None

    def get(self) -> Solver:
        if self._solver is None:
            self._solver = self._factory()
        return self._solver

    def close(self) -> None:
        if self._solver is not None:
            self._solver.close()
            self._solver = None


def _problems(authz: Authorization) -> str:
    problems = authz.problems()
    return f": {'; '.join(problems)}" if problems else ""


def _reason_name(reason: int | None) -> str:
    names = {number: name for name, number in REVOCATION_REASONS.items()}
    return names.get(reason if reason is not None else 0, str(reason))

