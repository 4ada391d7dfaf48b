"""One certificate at one CA, step by step in RFC 8555 order, resuming what a run left.

:class:`OrderFlow` reads top to bottom as the protocol goes (acme-tiny's habit):

1. the order: the one a previous try or a crashed run left pending at this CA for the
   same names (``pending.json``), if the CA still has it usable; else ``newOrder``
   (with ``replaces`` when renewing a certificate this CA issued and ARI is offered,
   and the ``profile`` asked for), remembered at once;
2. each authorization: valid ones are reused, pending ones get their dns-01 value
   published through the solver (all at once), then the challenges are answered and
   the authorizations polled; the values are withdrawn whatever happened;
3. the certificate key (a new one, or the previous one with ``reuse_key``), kept with
   the pending order *before* the CSR is sent, so that whatever the CA issues can be
   used by the next run; finalize, polling through ``processing``;
4. the certificate and its alternate chains: the preferred one is picked and checked
   against the key and the names.

An order still ``processing`` at the deadline is kept, not replaced: a new order would
have the CA issue a second certificate (against Let's Encrypt, burning the duplicate
certificate limit). :class:`lib.acme.errors.OrderPending` says the next run resumes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from lib.acme import jws
from lib.acme.accounts import load_key
from lib.acme.certificates import (
    CertificateInfo,
    chain_top_issuer,
    dns_names,
    key_matches,
    load_chain,
    passes_through,
    select_chain,
    to_pem,
)
from lib.acme.client import AcmeClient, check_order_usable
from lib.acme.dns01 import Solver, TxtRecord
from lib.acme.errors import (
    ChallengeFailed,
    OrderFailed,
    OrderPending,
    PollTimeout,
    ProblemError,
    StateError,
    UsageError,
)
from lib.acme.journal import Journal, Published
from lib.acme.keys import generate_key, key_type_of, make_csr, private_pem, read_csr
from lib.acme.messages import Authorization, Challenge, Order
from lib.acme.options import Options
from lib.acme.progress import Progress
from lib.acme.store import Lineage, PendingOrder, Store, iso
from lib.acme.transport import host_of

# newOrder problems after which the same order is tried again without ``replaces``.
_REPLACES_REFUSED = ("alreadyReplaced", "malformed", "conflict")
# A resumed order in these states can still lead to a certificate.
_RESUMABLE = ("pending", "ready", "processing", "valid")


@dataclass(frozen=True)
class Issued:
    """What a CA issued, ready to be stored."""

    key_pem: bytes | None  # None for the user's own CSR
    leaf_pem: str
    chain_pem: str
    info: CertificateInfo
    directory: str
    account_url: str
    order_url: str
    chain_issuer: str


class LazySolver:
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


class OrderFlow:
    """Obtains *lineage*'s certificate from the CA behind *client*."""

    def __init__(self, client: AcmeClient, store: Store, progress: Progress, options: Options,
                 solver: LazySolver, lineage: Lineage, previous: Lineage | None) -> None:
        self.client = client
        self.store = store
        self.progress = progress
        self.options = options
        self.solver = solver
        self.lineage = lineage
        self.previous = previous
        self.server = client.directory.url
        self.pending: PendingOrder | None = None

    def step(self, message: str) -> None:
        self.progress.step(message)

    def run(self) -> Issued:
        self._check_profile()
        order = self._resume() or self._new_order()
        if order.status == "pending":
            self._authorize(order)
        key = self._certificate_key(order) if self.lineage.csr is None else None
        order = self._finalize(order, key)
        return self._download(order, key)

    # --- 1. the order ---------------------------------------------------------------------

    def _check_profile(self) -> None:
        profile, directory = self.lineage.profile, self.client.directory
        if not profile:
            return
        if not directory.profiles:
            raise UsageError(f"{host_of(self.server)} offers no profiles; drop --profile")
        if profile not in directory.profiles:
            raise UsageError(f"{host_of(self.server)} has no profile {profile!r} "
                             f"(it offers: {', '.join(directory.profiles)})")

    def _resume(self) -> Order | None:
        """The order a previous try left at this CA for the same names, if still usable."""
        if self.options.dry_run:
            return None  # a dry run leaves the state as it found it
        pending = self.store.load_pending(self.lineage.name)
        if pending is None:
            return None
        if pending.directory != self.server or sorted(pending.names) != sorted(
                self.lineage.domains):
            return None
        try:
            order = self.client.order(pending.url)
        except ProblemError as problem:
            self.step(f"Order {pending.url} left by an earlier run: gone ({problem.code}); "
                      "ordering anew")
            self.store.drop_pending(self.lineage.name)
            return None
        if order.status not in _RESUMABLE:
            self.step(f"Order {pending.url} left by an earlier run is {order.status}; "
                      "ordering anew")
            self.store.drop_pending(self.lineage.name)
            return None
        self.pending = pending
        self.step(f"Resuming order {order.url} left by an earlier run: {order.status}")
        return order

    def _new_order(self) -> Order:
        previous, lineage, directory = self.previous, self.lineage, self.client.directory
        replaces = None
        # Not in a dry run: "replaces" tells the CA the old certificate is done with.
        if previous is not None and previous.ari_id and previous.issuer_directory == self.server \
                and directory.renewal_info and not previous.revoked and not self.options.dry_run:
            replaces = previous.ari_id
        extra = []
        if lineage.profile:
            extra.append(f"profile {lineage.profile}")
        if replaces:
            extra.append(f"replacing {replaces}")
        self.step(f"newOrder for {', '.join(lineage.domains)}"
                  + (f" ({', '.join(extra)})" if extra else ""))
        try:
            order = self.client.new_order(lineage.domains, profile=lineage.profile,
                                          replaces=replaces)
        except ProblemError as problem:
            if not replaces or problem.code not in _REPLACES_REFUSED:
                raise
            self.progress.warn(f"the CA refused 'replaces' ({problem}); ordering without it")
            order = self.client.new_order(lineage.domains, profile=lineage.profile)
        check_order_usable(order)
        self.pending = PendingOrder(self.server, order.url, list(lineage.domains))
        self._keep_pending()
        self.step(f"Order {order.url}: {order.status}, "
                  f"{len(order.authorizations)} authorization(s)"
                  + (f", profile {order.profile}" if order.profile else ""))
        return order

    # --- 2. authorizations ----------------------------------------------------------------

    def _authorize(self, order: Order) -> None:
        client = self.client
        todo: list[tuple[Authorization, Challenge, TxtRecord]] = []
        for url in order.authorizations:
            authz = client.authorization(url)
            if authz.status == "valid":
                self.step(f"Authorization {authz.name}: already valid")
                continue
            if authz.status != "pending":
                raise ChallengeFailed(f"authorization for {authz.name} is {authz.status}"
                                      + _problems(authz), authz.problem_codes())
            challenge = authz.challenge("dns-01")
            if challenge is None or not challenge.token:
                offered = ", ".join(c.type for c in authz.challenges) or "none"
                raise ChallengeFailed(f"the CA offers no dns-01 challenge for {authz.name} "
                                      f"(offered: {offered})", ("unsupportedIdentifier",))
            record = TxtRecord(authz.identifier, jws.dns01_value(challenge.token, client.key))
            self.step(f"Authorization {authz.name}: dns-01, TXT {record.fqdn} {record.value}")
            todo.append((authz, challenge, record))
        if not todo:
            return
        records = [record for _, _, record in todo]
        active = self.solver.get()
        self.step(f"Publishing {len(records)} TXT value(s) through {active.description}")
        # Listed before they are published: a killed run's values are withdrawn by the next.
        journal = Journal(self.store.root) if active.outlives_process else None
        if journal is not None:
            journal.add(Published(self.lineage.name, tuple(self.lineage.domains),
                                  dict(self.lineage.solver),
                                  tuple(self.lineage.propagation_nameservers), tuple(records)))
        try:
            with self.progress.waiting(f"DNS: waiting until the {len(records)} value(s) are "
                                       f"served (at most {active.bound():g}s); only "
                                       "then is the CA asked to look"):
                active.setup(records, lambda message: self.step(f"DNS: {message}"))
            deadline = time.monotonic() + self.options.validation_timeout
            for authz, challenge, _ in todo:
                answered = client.answer(challenge)
                self.step(f"Challenge {authz.name}: answered ({answered.status})")
            for authz, _, _ in todo:
                result = client.poll_authorization(authz.url, deadline)
                if result.status != "valid":
                    raise ChallengeFailed(f"authorization for {authz.name} is {result.status}"
                                          + _problems(result), result.problem_codes())
                self.step(f"Authorization {authz.name}: valid")
        finally:
            problems = active.teardown(records)
            for problem in problems:
                self.progress.warn(f"DNS: {problem} (the next run tries again)")
            if not problems:
                if journal is not None:
                    journal.remove(self.lineage.name, records)
                self.step(f"Removed the {len(records)} TXT value(s)")

    # --- 3. key, CSR, finalize ------------------------------------------------------------

    def _certificate_key(self, order: Order) -> jws.PrivateKey:
        """The key for the CSR: the one kept with a resumed order, else a chosen one, kept
        with the order before the CSR leaves."""
        assert self.pending is not None
        if self.pending.key_pem is not None:
            try:
                return load_key(self.pending.key_pem, "key of the pending order")
            except StateError as exc:
                # Damage must not fail the certificate at every run: before finalize a
                # new key will do; after it, the order is of no use (below).
                self.progress.warn(f"{self.lineage.name}: {exc}; it is dropped")
                self.pending.key_pem = None
        if order.status in ("processing", "valid"):
            # Finalized by a run that died before keeping the key: its certificate is
            # of no use. Rare (the key is kept before the CSR is sent).
            self.store.drop_pending(self.lineage.name)
            raise OrderFailed(f"order {order.url} was finalized without a kept key; "
                              "ordering anew")
        key = self._choose_key()
        self.pending.key_pem = private_pem(key)
        self._keep_pending()
        return key

    def _keep_pending(self) -> None:
        assert self.pending is not None
        if not self.options.dry_run:
            self.store.save_pending(self.lineage.name, self.pending)

    def _choose_key(self) -> jws.PrivateKey:
        lineage, previous = self.lineage, self.previous
        if lineage.reuse_key and previous is not None:
            old = self.store.read_file(previous, "privkey.pem")
            if old is not None:
                key = load_key(old, "certificate key")
                if key_type_of(key) == lineage.key_type and previous.revoked != "keyCompromise":
                    self.step(f"Reusing the {lineage.key_type} certificate key")
                    return key
        return generate_key(lineage.key_type)

    def _csr(self, key: jws.PrivateKey | None) -> tuple[bytes, str]:
        """The CSR to send (DER) and how to describe it."""
        lineage = self.lineage
        if key is None:
            assert lineage.csr is not None
            csr = read_csr(lineage.csr.encode())
            return csr.der, f"your CSR for {len(csr.names)} name(s), {csr.key_type} key"
        staple = ", must-staple" if lineage.must_staple else ""
        return (make_csr(key, lineage.domains, lineage.must_staple),
                f"CSR for {len(lineage.domains)} name(s), {key_type_of(key)} key{staple}")

    def _finalize(self, order: Order, key: jws.PrivateKey | None) -> Order:
        client, lineage = self.client, self.lineage
        deadline = time.monotonic() + self.options.order_timeout
        try:
            # The order we hold predates the validations: look again before waiting.
            order = client.poll_order(client.order(order.url), deadline, waiting=("pending",))
            check_order_usable(order)
            if order.status == "ready":
                csr, what = self._csr(key)
                self.step(f"Finalize: {what}")
                order = client.finalize(order, csr)
                check_order_usable(order)
                self.step(f"Order {order.url}: {order.status}")
            order = client.poll_order(order, deadline)
        except PollTimeout as exc:
            raise OrderPending(f"{exc}; it is kept, and the next try or run resumes it "
                               "(no second order)") from None
        except OrderFailed:
            self.store.drop_pending(lineage.name)
            raise
        check_order_usable(order)
        if order.status != "valid" or not order.certificate:
            raise OrderFailed(f"order {order.url} ended {order.status} without a certificate")
        return order

    # --- 4. the certificate ---------------------------------------------------------------

    def _download(self, order: Order, key: jws.PrivateKey | None) -> Issued:
        assert order.certificate is not None
        lineage = self.lineage
        chains = [load_chain(c.pem) for c in self.client.certificates(order.certificate)]
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
        leaf, leaf_pem = certs[0], to_pem(certs[:1])
        key_pem = private_pem(key) if key is not None else None
        ours = key_matches(leaf_pem.encode(), key_pem) if key_pem is not None else \
            leaf.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
            == read_csr((lineage.csr or "").encode()).public_key_der()
        if not ours:
            self.store.drop_pending(lineage.name)
            raise OrderFailed("the CA's certificate is not for the key we sent")
        missing = {d.lower() for d in lineage.domains} - {n.lower() for n in dns_names(leaf)}
        if missing:
            self.store.drop_pending(lineage.name)
            raise OrderFailed(f"the CA's certificate lacks {', '.join(sorted(missing))}")
        info = CertificateInfo.of(leaf)
        self.step(f"Issued serial {info.serial}, valid {iso(info.not_before)} to "
                  f"{iso(info.not_after)}")
        return Issued(key_pem=key_pem, leaf_pem=leaf_pem, chain_pem=to_pem(certs[1:]),
                      info=info, directory=self.server,
                      account_url=self.client.net.account_url or "", order_url=order.url,
                      chain_issuer=tops[index])


def _problems(authz: Authorization) -> str:
    problems = authz.problems()
    return f": {'; '.join(problems)}" if problems else ""
