"""acme-dns accounts: who may update which single name, with hashed keys.

An acme-dns account (``username``, ``password`` = the API key, ``subdomain``,
``fulldomain``, ``allowfrom``) maps to exactly one record name:

* ``<subdomain>.<ACMEDNS_ZONE>`` for accounts made by ``/register`` (the zone
  the builtin DNS serves, or a zone the provider manages); users CNAME
  ``_acme-challenge.<their name>`` to it, as with any acme-dns server;
* or, for pre-registered accounts, ``_acme-challenge.<domain>`` (through the
  provider, following ``DELEGATIONS``) or an explicit ``fulldomain``.

Keys are random 40-character strings, so a salted SHA-256 is enough to keep
them useless if the store leaks (no slow hash needed: nothing to brute-force);
they are compared in constant time, and an unknown user costs the same.

Pre-registered accounts (``ACMEDNS_ACCOUNTS_FILE``, as cert-manager and lego
users keep them) are JSON, either the clients' own storage format::

    {"example.com": {"username": "...", "password": "...", "fulldomain": "...",
                     "subdomain": "...", "allowfrom": []}}

or a list under ``"accounts"`` with ``domain`` or ``fulldomain`` per entry and
``password`` or ``password_hash`` (``sha256$<salt hex>$<digest hex>``).
"""

from __future__ import annotations

import abc
import hashlib
import hmac
import json
import os
import secrets
import string
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway.config import IPNetwork, parse_network
from lib.names import InvalidName, base_name, challenge_name, is_within, normalize_name

_KEY_ALPHABET = string.ascii_letters + string.digits + "-_"


class AccountError(ValueError):
    """A pre-registered account is malformed."""


def hash_key(key: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.sha256(salt + key.encode("utf-8")).hexdigest()
    return f"sha256${salt.hex()}${digest}"


def check_key(key: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    if scheme != "sha256":
        return False
    return hmac.compare_digest(hash_key(key, salt), f"sha256${salt_hex}${digest}")


_DUMMY_HASH = hash_key("no such account")


@dataclass(frozen=True)
class Account:
    username: str
    key_hash: str
    subdomain: str
    fqdn: str  # the record the account writes
    allowfrom: tuple[IPNetwork, ...]
    owner: str  # who registered it ("file" for pre-registered)
    created: float | None = None  # when ``/register`` made it (None: from the file)

    @property
    def label(self) -> str:
        return f"acmedns:{self.username}"


def _networks(items: object, where: str) -> tuple[IPNetwork, ...]:
    if items is None:
        return ()
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise AccountError(f"{where}: allowfrom must be a list of networks")
    try:
        return tuple(parse_network(i) for i in items)
    except ValueError as exc:
        raise AccountError(f"{where}: allowfrom: {exc}") from None


def allowfrom_text(account: Account) -> str:
    """How a state backend stores an account's ``allowfrom``: a JSON list."""
    return json.dumps([str(n) for n in account.allowfrom])


def allowfrom_of(text: str) -> tuple[IPNetwork, ...]:
    return tuple(parse_network(n) for n in json.loads(text))


class AccountTable(abc.ABC):
    """The registered accounts as a state backend (:mod:`gateway.state`) keeps them.

    Each method raises :class:`gateway.errors.Unavailable` when the database
    cannot be used.
    """

    @abc.abstractmethod
    async def insert(self, account: Account, limit: int = 0) -> bool:
        """Store a new account (its username and subdomain are fresh UUIDs, its
        ``created`` set); False, storing nothing, when its owner already holds
        *limit* accounts (0: no limit).

        The count and the insert are one step for every process on the
        database: two registrations by one owner at once cannot both take the
        last place.
        """

    @abc.abstractmethod
    async def get(self, username: str) -> Account | None:
        """The account called *username*, if there is one."""

    @abc.abstractmethod
    async def delete(self, username: str) -> bool:
        """Delete the account called *username*; False if there was none."""

    @abc.abstractmethod
    async def count_owned(self, owner: str) -> int:
        """How many accounts *owner* (a caller's label) registered."""

    @abc.abstractmethod
    async def all(self, owner: str | None = None) -> list[Account]:
        """Every account (or *owner*'s), oldest first."""

    @abc.abstractmethod
    async def set_key(self, username: str, key_hash: str) -> bool:
        """Give the account called *username* a new key; False if there is none."""


class AccountStore:
    """Registered accounts from the state layer, pre-registered ones from a file.

    Every replica on one database sees the accounts any of them registered:
    nothing about a registered account is kept in the process.
    """

    def __init__(self, table: AccountTable) -> None:
        self.table = table
        self._static: dict[str, Account] = {}

    def set_static(self, accounts: Iterable[Account]) -> None:
        """The pre-registered accounts, replacing the ones set before (a reload)."""
        self._static = {account.username: account for account in accounts}

    def is_static(self, username: str) -> bool:
        return username in self._static

    async def delete(self, username: str) -> Account | None:
        """Delete a registered account; returns it, or None if there is none by that name.

        Pre-registered accounts live in ``ACMEDNS_ACCOUNTS_FILE``, not here: they
        go when they leave that file (and the gateway reloads it).
        """
        account = None if self.is_static(username) else await self.get(username)
        if account is None or not await self.table.delete(username):
            return None
        return account

    async def get(self, username: str) -> Account | None:
        static = self._static.get(username)
        if static is not None:
            return static
        if "\0" in username:  # no account has one, and PostgreSQL's text cannot hold it
            return None
        return await self.table.get(username)

    async def verify(self, username: str, key: str) -> Account | None:
        account = await self.get(username)
        ok = check_key(key, account.key_hash if account else _DUMMY_HASH)
        return account if ok and account is not None else None

    async def count_owned(self, owner: str) -> int:
        return await self.table.count_owned(owner)

    async def all(self, owner: str | None = None) -> list[Account]:
        """The pre-registered accounts, then the registered ones, oldest first."""
        static = [a for a in self._static.values() if owner is None or a.owner == owner]
        if owner is not None and "\0" in owner:  # as in get()
            return static
        return static + await self.table.all(owner)

    async def register(
        self,
        owner: str,
        zone: str | None,
        domain_fqdn: str | None,
        allowfrom: tuple[IPNetwork, ...],
        limit: int = 0,
    ) -> tuple[Account, str] | None:
        """A new account writing ``<subdomain>.<zone>`` (or *domain_fqdn*) and its key;
        None when *owner* already holds *limit* accounts (0: no limit)."""
        subdomain = str(uuid.uuid4())
        fqdn = domain_fqdn or f"{subdomain}.{zone}"
        key = _new_key()
        account = Account(
            str(uuid.uuid4()), hash_key(key), subdomain, fqdn, allowfrom, owner, time.time()
        )
        if not await self.table.insert(account, limit):
            return None
        return account, key

    async def rotate(self, username: str) -> tuple[Account, str] | None:
        """A new key for the registered account *username*, which the old one no longer
        opens from now on; None if there is no such registered account."""
        account = None if self.is_static(username) else await self.get(username)
        if account is None:
            return None
        key = _new_key()
        key_hash = hash_key(key)
        if not await self.table.set_key(username, key_hash):
            return None  # deleted meanwhile
        return replace(account, key_hash=key_hash), key


def _new_key() -> str:
    return "".join(secrets.choice(_KEY_ALPHABET) for _ in range(40))


def _entries(path: Path) -> list[tuple[str, Any]]:
    """The file's account entries, each with where it stands; raises AccountError."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise AccountError(f"{path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("accounts"), list):
        return [(f"{path}: account {i + 1}", e) for i, e in enumerate(data["accounts"])]
    if isinstance(data, dict):
        return [
            (f"{path}: {k}", {**v, "domain": k} if isinstance(v, dict) else v)
            for k, v in data.items()
        ]
    raise AccountError(f"{path}: expected a JSON object")


def holds_plain_keys(path: Path) -> bool:
    """True if the accounts file holds an account's key itself (``password``), not
    only its hash: then it is a secret, like a password file."""
    try:
        entries = _entries(path)
    except AccountError:
        return False  # reported where the accounts are loaded
    return any(isinstance(e, dict) and e.get("password") for _, e in entries)


def load_accounts_file(path: Path, delegations: dict[str, str]) -> list[Account]:
    """Parse pre-registered accounts; raises AccountError naming the entry."""
    accounts: list[Account] = []
    for where, entry in _entries(path):
        if not isinstance(entry, dict):
            raise AccountError(f"{where}: expected an object")
        username, subdomain = entry.get("username"), entry.get("subdomain")
        if not isinstance(username, str) or not username:
            raise AccountError(f"{where}: username missing")
        if not isinstance(subdomain, str) or not subdomain:
            raise AccountError(f"{where}: subdomain missing")
        if isinstance(entry.get("password_hash"), str):
            key_hash = entry["password_hash"]
        elif isinstance(entry.get("password"), str) and entry["password"]:
            key_hash = hash_key(entry["password"])
        else:
            raise AccountError(f"{where}: password or password_hash missing")
        try:
            if isinstance(entry.get("fulldomain"), str) and entry["fulldomain"]:
                fqdn = normalize_name(entry["fulldomain"])
            elif isinstance(entry.get("domain"), str):
                base = normalize_name(entry["domain"])
                fqdn = delegations.get(base, challenge_name(base))
            else:
                raise AccountError(f"{where}: domain or fulldomain missing")
        except InvalidName as exc:
            raise AccountError(f"{where}: {exc}") from None
        accounts.append(
            Account(
                username,
                key_hash,
                subdomain,
                fqdn,
                _networks(entry.get("allowfrom"), where),
                "file",
            )
        )
    return accounts


def account_name_allowed(
    fqdn: str, zone: str | None, managed: tuple[str, ...], delegation_targets: Iterable[str]
) -> bool:
    """An account may write only inside the acme-dns zone, a delegation target,
    or an ``_acme-challenge`` name under a managed domain."""
    if zone is not None and is_within(fqdn, zone) and fqdn != zone:
        return True
    if fqdn in set(delegation_targets):
        return True
    return fqdn.startswith("_acme-challenge.") and any(is_within(fqdn, d) for d in managed)


def names_answered(fqdn: str, delegations: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The names whose ``dns-01`` challenges a TXT record at *fqdn* answers, as the
    configuration says: those ``DELEGATIONS`` point at it, or the base of an
    ``_acme-challenge`` name. None for an account's record under ``ACMEDNS_ZONE``
    (empty): it answers for whichever names their owners CNAME to it."""
    delegated = tuple(name for name, target in delegations if target == fqdn)
    if delegated:
        return delegated
    base = base_name(fqdn)
    return () if base == fqdn else (base,)


def may_administer(
    domains: tuple[str, ...] | None,
    label: str,
    account: Account,
    delegations: Iterable[tuple[str, str]],
) -> bool:
    """Whether an admin with *domains* (None: every domain) and *label* may see,
    rotate and delete *account*.

    An account bound to names is the business of the admins of one of them (as
    the configuration in force says, so that an admin whose domains shrink loses
    the accounts outside them); an account under ``ACMEDNS_ZONE`` is bound to no
    name, and is the business of the admin who registered it.
    """
    if domains is None:
        return True
    names = names_answered(account.fqdn, delegations)
    if names:
        return any(is_within(name, domain) for name in names for domain in domains)
    return account.created is not None and account.owner == label
