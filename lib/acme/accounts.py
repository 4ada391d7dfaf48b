"""Accounts: one per CA, found by its key or created, and kept through key rollovers.

:meth:`Accounts.client` gives a client with a usable account at a CA's directory: the
stored key's account (found with ``onlyReturnExisting``), or a new one when allowed
(terms of service agreed, contact, EAB). An interrupted key rollover is finished or
undone first, whichever key the CA now knows. A contact given on the command line
replaces the account's.

The clients live for the run (one TLS session and nonce pool per CA); a CA that failed
is forgotten (:meth:`Accounts.forget`) so that the next try starts afresh.
"""

from __future__ import annotations

from lib.acme import jws
from lib.acme.client import AcmeClient
from lib.acme.errors import NotOffered, ProblemError, StateError, TransportError, UsageError
from lib.acme.keys import generate_key, key_type_of, load_private_key, private_pem
from lib.acme.messages import Account
from lib.acme.options import Options
from lib.acme.progress import Progress
from lib.acme.store import Lineage, Store, StoredAccount
from lib.acme.transport import Transport, host_of


class Accounts:
    """The run's clients, one per CA directory, each signed by that CA's account key."""

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

    def forget(self, directory_url: str) -> None:
        """Drop the client of a CA that failed; the next try connects afresh."""
        client = self._clients.pop(directory_url, None)
        if client is not None:
            client.net.close()

    def remember_ca_file(self, lineage: Lineage) -> None:
        """Trust what the certificate was issued with, unless the command line says otherwise."""
        if lineage.ca_file:
            for server in (*lineage.servers, lineage.issuer_directory):
                if server:
                    self._ca_files.setdefault(server, lineage.ca_file)

    def anonymous(self, directory_url: str, key: jws.AccountKey | None = None) -> AcmeClient:
        """A client without an account (ARI, revocation by the certificate's key);
        the caller closes it."""
        ca_file = self.options.ca_file or self._ca_files.get(directory_url)
        transport = Transport(directory_url, key, ca_file=ca_file,
                              timeout=self.options.http_timeout,
                              directory_timeout=self.options.directory_timeout,
                              sleep=self.options.sleep)
        return AcmeClient(transport, sleep=self.options.sleep)

    def cached(self, directory_url: str) -> AcmeClient | None:
        return self._clients.get(directory_url)

    def describe_directory(self, client: AcmeClient) -> None:
        d = client.directory
        offered = ", ".join(d.offered()) or "no optional resources"
        extra = []
        if d.profiles:
            extra.append(f"profiles {', '.join(d.profiles)}")
        if d.external_account_required:
            extra.append("external account binding required")
        self.progress.step(f"Directory {d.url}: {offered}"
                           + (f"; {'; '.join(extra)}" if extra else ""))

    def client(self, directory_url: str, *, create: bool = True) -> AcmeClient:
        """A client with a usable account at *directory_url* (found, or created if allowed)."""
        if directory_url in self._clients:
            return self._clients[directory_url]
        stored = self.store.load_account(directory_url)
        if stored is not None:
            key = jws.AccountKey(load_key(stored.key_pem, "account key"))
        else:
            if not create:
                raise UsageError(f"no account for {directory_url} in {self.store.root}; "
                                 "run: acmegw-acme account register")
            key = jws.AccountKey(generate_key(self.options.account_key_type))
        client = self.anonymous(directory_url, key)
        if stored is not None and stored.damage:
            self.progress.warn(f"{stored.damage}; the account is found by its key and the "
                               "file written again")
        try:
            self.describe_directory(client)
            if stored is not None and stored.pending_key_pem is not None:
                self._finish_rollover(client, stored)
            account = client.find()
            terms_agreed = stored.terms_agreed if stored else None
            if account is None:
                if stored is not None:
                    self.progress.warn(f"the CA no longer knows the account {stored.url}")
                    if not create:
                        raise UsageError(f"the account {stored.url} is gone at the CA; "
                                         "run: acmegw-acme account register")
                account, terms_agreed = self._register(client, stored)
            else:
                self.progress.step(f"Account {account.url}: {account.status}"
                                   + (f", contact {', '.join(account.contact)}"
                                      if account.contact else ""))
                if account.status != "valid":
                    raise UsageError(f"the account {account.url} is {account.status}; "
                                     "register a new one with: acmegw-acme account register")
                if self.options.contact and set(self.options.contact) != set(account.contact):
                    account = client.update_contact(self.options.contact)
                    self.progress.step(f"Account contact updated: {', '.join(account.contact)}")
            self.store.save_account(StoredAccount(
                directory=directory_url, url=account.url, contact=list(account.contact),
                key_pem=private_pem(client.key.private_key),
                created=stored.created if stored else "", terms_agreed=terms_agreed))
        except BaseException:
            client.net.close()
            raise
        self._clients[directory_url] = client
        return client

    def _register(self, client: AcmeClient,
                  stored: StoredAccount | None) -> tuple[Account, str | None]:
        """Create the account; returns it and the terms agreed to (their URL)."""
        directory = client.directory
        terms = directory.terms_of_service
        agree = self.options.agree_tos
        if terms and not agree and stored is not None and stored.terms_agreed == terms:
            # The CA forgot the account (a reset staging CA, an account purge): the user
            # agreed to exactly these terms when it was created, so a timer can go on.
            agree = True
            self.progress.step(f"Agreeing again to {terms}, the terms agreed to when the "
                               "account was created")
        elif terms and not agree and self.options.dry_run and terms in self.store.terms_agreed():
            # A dry run's account at a staging twin: the same document, agreed to before.
            agree = True
            self.progress.step(f"Agreeing to {terms}, the terms already agreed to for "
                               "another account")
        if terms and not agree:
            changed = " (they changed since you agreed)" if stored and stored.terms_agreed \
                else ""
            raise UsageError(f"{host_of(directory.url)} asks you to agree to its terms of "
                             f"service at {terms}{changed}: read them, then pass --agree-tos "
                             "(to issue or renew)")
        eab = self.options.eab
        if directory.external_account_required and eab is None:
            raise UsageError(f"{host_of(directory.url)} requires external account binding: "
                             "pass --eab-kid and --eab-hmac-key from the CA's console")
        # A re-created account keeps the contact it had, unless a new one is given.
        contact = self.options.contact or tuple(stored.contact if stored else ())
        account, created = client.register(contact=contact, agree_tos=agree, eab=eab)
        how = "created" if created else "found"
        self.progress.step(f"Account {account.url}: {how} ({account.status})"
                           + (f", contact {', '.join(account.contact)}" if account.contact else "")
                           + (f", bound to external account {eab.kid}" if eab and created else ""))
        return account, terms if agree else None

    def _finish_rollover(self, client: AcmeClient, stored: StoredAccount) -> None:
        """A rollover was interrupted: keep whichever key the CA now knows."""
        assert stored.pending_key_pem is not None
        pending = jws.AccountKey(load_key(stored.pending_key_pem, "next account key"))
        probe = self.anonymous(client.directory.url, pending)
        try:
            found = probe.find()
        finally:
            probe.net.close()
        if found is not None:
            self.store.promote_pending_key(client.directory.url)
            client.net.key = pending
            self.progress.step("Account: an interrupted key rollover had succeeded; "
                               "using the new key")
        else:
            self.store.drop_pending_key(client.directory.url)
            self.progress.step("Account: an interrupted key rollover had not happened; "
                               "keeping the key")

    def rollover(self, directory_url: str, key_type: str | None = None) -> str:
        """Replace the account key (RFC 8555 section 7.3.5); returns the account URL."""
        client = self.client(directory_url, create=False)
        new_key = jws.AccountKey(generate_key(key_type or key_type_of(client.key.private_key)))
        # Kept before asking, so a crash after the CA switched keys cannot lose the account.
        self.store.save_pending_key(directory_url, private_pem(new_key.private_key))
        self.progress.step(f"keyChange: rolling over to a new "
                           f"{key_type_of(new_key.private_key)} key")
        try:
            client.change_key(new_key)
        except NotOffered as exc:
            self.store.drop_pending_key(directory_url)
            raise UsageError(str(exc)) from None
        except ProblemError:
            self.store.drop_pending_key(directory_url)
            raise
        self.store.promote_pending_key(directory_url)
        account = client.find()
        if account is None or account.url != client.net.account_url:
            raise TransportError("after the rollover the CA does not find the account by "
                                 "its new key")
        self.progress.step(f"Account {account.url}: now signed with the new key "
                           f"(thumbprint {new_key.thumbprint()})")
        return account.url

    def deactivate(self, directory_url: str) -> str:
        client = self.client(directory_url, create=False)
        account = client.deactivate()
        self.progress.step(f"Account {account.url}: {account.status}")
        moved = self.store.retire_account(directory_url)
        self.forget(directory_url)
        self.progress.step(f"Its key is kept in {moved}")
        return account.url


def load_key(pem: bytes, what: str) -> jws.PrivateKey:
    """A stored private key; a :class:`StateError` naming *what* when it is unreadable."""
    try:
        return load_private_key(pem)
    except ValueError as exc:
        raise StateError(f"the stored {what} is unreadable: {exc}") from None
