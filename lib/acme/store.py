"""The state directory: accounts per CA, certificate lineages, pending orders, and the lock.

Layout (``STATE`` is ``--state-dir``; by default ``/var/lib/acmegw-acme`` for
root, else ``$XDG_STATE_HOME/acmegw-acme`` or ``~/.local/state/acmegw-acme``)::

    STATE/lock                                  fcntl lock: one mutating run at a time
    STATE/accounts/<ca>/account.json            account URL, contact, CA directory URL
    STATE/accounts/<ca>/account.key             account key (0600)
    STATE/accounts/<ca>/account.key.next        only during a key rollover
    STATE/accounts/<ca>/archive/                earlier account keys
    STATE/certificates/<name>/meta.json         what was asked for and what was issued
    STATE/certificates/<name>/pending.json      an order not yet turned into files, and
    STATE/certificates/<name>/pending-key.pem   its key (0600): resumed by the next try
    <files>/versions/, current, privkey.pem ... the certificate's files (lib.acme.versions)

``<ca>`` is the directory URL's host and path, sanitised, plus a short hash of
the whole URL, so two CAs never share an account and the folder name still
says which CA it is. ``<files>`` is ``STATE/certificates/<name>`` unless the
certificate was issued with ``--out DIR``.

Every file is written atomically (:mod:`lib.acme.durable`), so a crash leaves the old
or the new version, never half of one. Private keys are created 0600 and folders 0700.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lib.acme.certificates import CertificateInfo, load_chain
from lib.acme.durable import atomic_write, fsync_dir, make_dirs
from lib.acme.errors import LockBusy, StateError, UsageError
from lib.acme.keys import KEY_TYPES, read_csr
from lib.acme.versions import CertificateFiles, Check
from lib.dnscheck import parse_server

# Used with fullmatch: "$" would also match before a final line break.
_NAME = re.compile(r"[a-z0-9_][a-z0-9._-]{0,250}")
# Bounds on what a lineage may ask for: the command line checks them, and so does loading
# meta.json, so that one bad value fails its certificate and never the run.
PROPAGATION_TIMEOUT = (1.0, 3600.0)


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/acmegw-acme")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "acmegw-acme"


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime.datetime:
    """An RFC 3339 timestamp (fractions, ``Z`` or an offset); raises ValueError."""
    cleaned = re.sub(r"(\.\d{6})\d+", r"\1", text.strip().replace("z", "Z"))
    moment = datetime.datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return moment


def ca_folder_name(directory_url: str) -> str:
    parts = urlsplit(directory_url)
    readable = re.sub(r"[^a-z0-9.-]+", "_", f"{parts.netloc}{parts.path}".lower()).strip("_.")
    digest = hashlib.sha256(directory_url.encode()).hexdigest()[:10]
    return f"{readable[:80]}-{digest}"


def lineage_name_for(domains: list[str]) -> str:
    """The default lineage name: the first name, ``*.`` written as ``_.``."""
    return domains[0].replace("*", "_") if domains else ""


def check_lineage_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise UsageError(f"{name!r} is not a usable certificate name "
                         "(lower-case letters, digits, '.', '-', '_')")
    return name


def _try_lock(fd: int, path: Path) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise StateError(f"cannot lock {path}: {exc.strerror}") from None
        return False
    return True


def _holder(path: Path) -> str:
    """" (pid N)" for the process that wrote its pid into the lock file, or ""."""
    with contextlib.suppress(OSError, ValueError):
        return f" (pid {int(path.read_text().split()[0])})"
    return ""


@dataclass
class StoredAccount:
    """An account as kept on disk."""

    directory: str
    url: str
    key_pem: bytes = field(repr=False)
    contact: list[str] = field(default_factory=list)
    created: str = ""
    pending_key_pem: bytes | None = field(default=None, repr=False)
    # The terms of service (their URL) the user agreed to when the account was created.
    terms_agreed: str | None = None
    # Why account.json could not be read, if it could not (the key still finds the account).
    damage: str | None = None


@dataclass
class Lineage:
    """One certificate over time: what to ask for, how, and what was issued last."""

    name: str
    domains: list[str]
    servers: list[str]
    key_type: str = "ec256"
    reuse_key: bool = False
    ca_file: str | None = None
    solver: dict[str, Any] = field(default_factory=dict)
    propagation_nameservers: list[str] = field(default_factory=list)
    propagation_timeout: float = 120.0
    deploy_hook: str | None = None
    profile: str | None = None
    preferred_chain: str | None = None
    out: str | None = None
    must_staple: bool = False
    # Run before the first certificate a run obtains, and after the run (once each).
    pre_hook: str | None = None
    post_hook: str | None = None
    # A CSR the user made (--csr), PEM: its key is theirs, and no privkey.pem is written.
    csr: str | None = None
    # The current certificate.
    issuer_directory: str | None = None
    account_url: str | None = None
    order_url: str | None = None
    serial: str | None = None
    not_before: str | None = None
    not_after: str | None = None
    ari_id: str | None = None
    chain_issuer: str | None = None
    issued: str | None = None
    revoked: str | None = None
    # ARI: the window last seen and the moment chosen inside it (RFC 9773 section 4.2).
    ari_window: dict[str, str] | None = None
    ari_chosen: str | None = None
    ari_next_check: str | None = None
    # The deploy hook has not succeeded for the current certificate: the next run tries.
    deploy_pending: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Lineage:
        """A lineage from meta.json; :class:`StateError` listing every field that is wrong."""
        if not isinstance(data, Mapping):
            raise StateError("certificate metadata is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            lineage = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise StateError(f"certificate metadata is incomplete: {exc}") from None
        problems = lineage.problems()
        if problems:
            raise StateError(f"certificate metadata: {'; '.join(problems)}")
        return lineage

    def problems(self) -> list[str]:
        """What is wrong with the fields (a hand-edited or damaged meta.json), if anything."""
        found: list[str] = []

        def text_list(name: str, value: object, empty: bool) -> None:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value) \
                    or (not empty and not value):
                found.append(f"{name} must be a list of names")

        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name) or ".." in self.name:
            found.append(f"name {self.name!r} is not a usable certificate name")
        text_list("domains", self.domains, empty=False)
        text_list("servers", self.servers, empty=False)
        if isinstance(self.servers, list) and not all(
                isinstance(s, str) and s.startswith("https://") for s in self.servers):
            found.append("servers must be https:// directory URLs")
        text_list("propagation_nameservers", self.propagation_nameservers, empty=True)
        if not isinstance(self.solver, dict):
            found.append("solver must be an object")
        timeout = self.propagation_timeout
        low, high = PROPAGATION_TIMEOUT
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
                or not low <= timeout <= high:
            found.append(f"propagation_timeout {timeout!r} is not {low:g} to {high:g} seconds")
        for name in ("reuse_key", "deploy_pending", "must_staple"):
            if not isinstance(getattr(self, name), bool):
                found.append(f"{name} must be true or false")
        if self.key_type not in KEY_TYPES:
            found.append(f"key_type {self.key_type!r} is not one of {', '.join(KEY_TYPES)}")
        for server in self.propagation_nameservers if isinstance(
                self.propagation_nameservers, list) else ():
            try:
                parse_server(server)
            except (TypeError, ValueError) as exc:
                found.append(f"propagation_nameservers: {exc}")
        for name in ("ca_file", "deploy_hook", "profile", "preferred_chain", "out", "csr",
                     "pre_hook", "post_hook",
                     "issuer_directory", "account_url", "order_url", "serial", "not_before",
                     "not_after", "ari_id", "chain_issuer", "issued", "revoked", "ari_chosen",
                     "ari_next_check"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                found.append(f"{name} must be text or null")
        if isinstance(self.csr, str):
            try:
                read_csr(self.csr.encode())
            except UsageError as exc:
                found.append(f"csr: {exc}")
        for name in ("not_before", "not_after", "ari_chosen", "ari_next_check"):
            value = getattr(self, name)
            if isinstance(value, str):
                try:
                    parse_iso(value)
                except ValueError:
                    found.append(f"{name} {value!r} is not a time")
        window = self.ari_window
        if window is not None and not (isinstance(window, dict)
                                       and all(isinstance(window.get(k), str)
                                               for k in ("start", "end"))):
            found.append("ari_window must be null or {start, end}")
        elif window is not None:
            for edge in ("start", "end"):
                try:
                    parse_iso(window[edge])
                except ValueError:
                    found.append(f"ari_window {edge} {window[edge]!r} is not a time")
        return found


@dataclass
class PendingOrder:
    """An order placed for a certificate and not yet turned into files: the next try (or
    the next run, after a crash) resumes it instead of having the CA issue again."""

    directory: str
    url: str
    names: list[str]
    # The key of the CSR, once the order was finalized or about to be.
    key_pem: bytes | None = field(default=None, repr=False)


class Store:
    """The state directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # --- lock -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self, timeout: float = 0.0,
               waiting: Callable[[str], contextlib.AbstractContextManager[None]] | None = None
               ) -> Iterator[None]:
        """Hold the state lock; wait up to *timeout* seconds, then raise LockBusy.

        When the lock is busy, the wait happens inside ``waiting(message)`` (a message
        naming the process that holds it), so that the user learns why nothing happens.
        """
        make_dirs(self.root)
        path = self.root / "lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open {path}: {exc.strerror}") from None
        try:
            if not _try_lock(fd, path):
                holder = _holder(path)
                message = (f"waiting up to {timeout:g}s for the acmegw-acme run that holds "
                           f"{path}{holder}")
                with waiting(message) if waiting and timeout > 0 else contextlib.nullcontext():
                    deadline = time.monotonic() + timeout
                    while not _try_lock(fd, path):
                        if time.monotonic() >= deadline:
                            raise LockBusy(f"another acmegw-acme run{holder} holds {path}; "
                                           "try again when it has finished")
                        time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)

    # --- accounts ---------------------------------------------------------------------------

    def account_dir(self, directory_url: str) -> Path:
        return self.root / "accounts" / ca_folder_name(directory_url)

    def load_account(self, directory_url: str) -> StoredAccount | None:
        folder = self.account_dir(directory_url)
        meta_path, key_path = folder / "account.json", folder / "account.key"
        if not key_path.exists():
            return None
        try:
            key = key_path.read_bytes()
            pending_path = folder / "account.key.next"
            pending = pending_path.read_bytes() if pending_path.exists() else None
        except OSError as exc:
            raise StateError(f"cannot read the account in {folder}: {exc}") from None
        damage = None
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if not isinstance(meta, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            # Only notes of what the CA tells again: the key is the account.
            meta, damage = {}, f"{meta_path} is unreadable ({exc})"
        terms, contact = meta.get("terms_agreed"), meta.get("contact")
        return StoredAccount(directory=directory_url, url=str(meta.get("url", "")), key_pem=key,
                             contact=[str(c) for c in contact] if isinstance(contact, list)
                             else [],
                             created=str(meta.get("created", "")), pending_key_pem=pending,
                             terms_agreed=terms if isinstance(terms, str) else None,
                             damage=damage)

    def save_account(self, account: StoredAccount) -> None:
        folder = self.account_dir(account.directory)
        make_dirs(folder)
        atomic_write(folder / "account.key", account.key_pem, 0o600)
        meta = {"directory": account.directory, "url": account.url,
                "contact": account.contact, "created": account.created or iso(now_utc()),
                "terms_agreed": account.terms_agreed}
        atomic_write(folder / "account.json", json.dumps(meta, indent=2).encode() + b"\n")

    def terms_agreed(self) -> set[str]:
        """Every terms-of-service document the user agreed to, at any CA."""
        found = set()
        for folder in (self.root / "accounts").glob("*/account.json"):
            with contextlib.suppress(OSError, ValueError):
                terms = json.loads(folder.read_text()).get("terms_agreed")
                if isinstance(terms, str):
                    found.add(terms)
        return found

    def save_pending_key(self, directory_url: str, key_pem: bytes) -> None:
        """Keep the next account key before a rollover, so a crash cannot lose the account."""
        folder = self.account_dir(directory_url)
        make_dirs(folder)
        atomic_write(folder / "account.key.next", key_pem, 0o600)

    def promote_pending_key(self, directory_url: str) -> None:
        """The rollover succeeded: archive the old key and make the next one current."""
        folder = self.account_dir(directory_url)
        archive = folder / "archive"
        make_dirs(archive)
        stamp = now_utc().strftime("%Y%m%dT%H%M%SZ")
        try:
            shutil.copy2(folder / "account.key", archive / f"account.key.{stamp}")
            os.chmod(archive / f"account.key.{stamp}", 0o600)
            os.replace(folder / "account.key.next", folder / "account.key")
            fsync_dir(folder)
        except OSError as exc:
            raise StateError(f"cannot install the new account key in {folder}: "
                             f"{exc.strerror}") from None

    def drop_pending_key(self, directory_url: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.account_dir(directory_url) / "account.key.next").unlink()

    def retire_account(self, directory_url: str) -> Path:
        """Move a deactivated account aside; returns where it went."""
        folder = self.account_dir(directory_url)
        target = folder.with_name(f"{folder.name}.deactivated-{now_utc():%Y%m%dT%H%M%SZ}")
        try:
            os.replace(folder, target)
        except OSError as exc:
            raise StateError(f"cannot move {folder} aside: {exc.strerror}") from None
        return target

    # --- certificates -----------------------------------------------------------------------

    def lineage_dir(self, name: str) -> Path:
        return self.root / "certificates" / check_lineage_name(name)

    def lineage_names(self) -> list[str]:
        folder = self.root / "certificates"
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "meta.json").is_file())

    def load_lineage(self, name: str) -> Lineage | None:
        path = self.lineage_dir(name) / "meta.json"
        try:
            return Lineage.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StateError(f"cannot read {path}: {exc}") from None

    def files_dir(self, lineage: Lineage) -> Path:
        return Path(lineage.out) if lineage.out else self.lineage_dir(lineage.name)

    def files(self, lineage: Lineage) -> CertificateFiles:
        return CertificateFiles(self.files_dir(lineage))

    def read_file(self, lineage: Lineage, name: str) -> bytes | None:
        return self.files(lineage).read(name)

    def save_meta(self, lineage: Lineage) -> None:
        folder = self.lineage_dir(lineage.name)
        make_dirs(folder)
        atomic_write(folder / "meta.json",
                     json.dumps(lineage.to_json(), indent=2, sort_keys=True).encode() + b"\n")

    def save_certificate(self, lineage: Lineage, files: Mapping[str, bytes]) -> list[str]:
        """Install the files as the certificate's new version, then write the metadata.

        Returns warnings (an owner or group that could not be kept). A crash before the
        metadata is written leaves a current version that the metadata does not know:
        :meth:`check_lineage` repairs that from the certificate itself.
        """
        warnings = self.files(lineage).install(files, lineage.serial or "unknown")
        self.save_meta(lineage)
        return warnings

    def load_pending(self, name: str) -> PendingOrder | None:
        folder = self.lineage_dir(name)
        try:
            doc = json.loads((folder / "pending.json").read_text())
            key_path = folder / "pending-key.pem"
            key = key_path.read_bytes() if doc.get("key") and key_path.exists() else None
            return PendingOrder(directory=str(doc["directory"]), url=str(doc["url"]),
                                names=[str(n) for n in doc["names"]], key_pem=key)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # Only a shortcut is lost: the certificate is ordered anew.
            self.drop_pending(name)
            return None

    def save_pending(self, name: str, pending: PendingOrder) -> None:
        """Keep *pending* (its key first, 0600), so that a crash cannot lose what the
        CA is issuing."""
        folder = self.lineage_dir(name)
        make_dirs(folder)
        if pending.key_pem is not None:
            atomic_write(folder / "pending-key.pem", pending.key_pem, 0o600)
        doc = {"directory": pending.directory, "url": pending.url, "names": pending.names,
               "key": pending.key_pem is not None}
        atomic_write(folder / "pending.json", json.dumps(doc, indent=2).encode() + b"\n", 0o600)

    def drop_pending(self, name: str) -> None:
        folder = self.lineage_dir(name)
        for file_name in ("pending.json", "pending-key.pem"):
            with contextlib.suppress(FileNotFoundError):
                (folder / file_name).unlink()

    def check_lineage(self, lineage: Lineage, repair: bool = True) -> Check:
        """The files' check (:meth:`CertificateFiles.check`), and metadata that matches them.

        An issued certificate whose files are missing or unreadable is to be issued again.

        A run that died after switching to a new version but before writing the metadata
        left the metadata describing the previous certificate: it is taken from the
        certificate now current, and its deploy hook is due.
        """
        files = self.files(lineage)
        check = files.check(repair)
        if check.problems or check.renew:
            return check
        cert = files.read("cert.pem")
        if cert is None:
            if lineage.serial:
                # Issued, and its files are gone (a removed --out folder): a server has
                # nothing to read, and would have nothing until the certificate is due.
                check.renew = f"its files are missing from {files.folder}"
            return check
        try:
            info = CertificateInfo.of(load_chain(cert)[0])
        except ValueError as exc:
            check.renew = f"{files.folder / 'cert.pem'} is unreadable: {exc}"
            return check
        if info.serial != lineage.serial:
            check.repaired.append(f"the metadata named serial {lineage.serial}, the current "
                                  f"files hold {info.serial}: metadata updated")
            if repair:
                lineage.serial = info.serial
                lineage.not_before, lineage.not_after = iso(info.not_before), iso(info.not_after)
                lineage.ari_id = info.ari_id
                lineage.ari_window = lineage.ari_chosen = lineage.ari_next_check = None
                lineage.deploy_pending = bool(lineage.deploy_hook)
                self.save_meta(lineage)
        return check

    def versions(self, lineage: Lineage) -> list[Path]:
        """Every version of the certificate's files, oldest first (the current one last)."""
        return self.files(lineage).versions()
