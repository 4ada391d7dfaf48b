"""The gateway's password file and ``acmegw-passwd``, the command that administers it.

The gateway authenticates HTTP basic-auth and acme-dns users against this file;
administrators add, change, verify, list and delete users with the command line
at the bottom of this module (``acmegw-passwd`` or ``python lib/passwd.py``).

File format, one user per line, UTF-8::

    # comment
    alice:$scrypt$ln=14,r=8,p=1$<salt>$<digest>
    bob:$scrypt$...:example.com,shop.example.org
    carol:$8$<salt>$<digest>:*:admin

``user:hash[:domains[:roles]]``

``user``
    1-64 characters; no ``:``, whitespace or control characters.
``hash``
    a passlib hash (``$scrypt$`` when :func:`hashlib.scrypt` exists, otherwise
    ``$pbkdf2-sha512$``) or a hash written by the original gateway's ``passwd.py``:
    ``$8$SALT$DIGEST`` (scrypt, N=16384, r=8, p=1, 32 bytes) or ``$7$SALT$DIGEST``
    (PBKDF2-HMAC-SHA3-512, 262144 iterations, 32 bytes), salt and digest in standard
    base64 without ``=`` padding. Those legacy hashes are replaced by the preferred
    format the next time the user logs in successfully.
``domains``
    comma-separated names the user may manage; empty, absent or ``*`` means every
    domain the gateway manages. Names are stored as :func:`lib.names.normalize_name`
    makes them: lower-case, IDNA-encoded, without trailing dot or leading ``*.``.
``roles``
    comma-separated; the only role is ``admin``.

Blank lines and ``#`` comments survive every rewrite. Rewrites are atomic (a temporary
file in the same directory, fsync, rename) and leave the file with mode 0600.
"""

from __future__ import annotations

import os
import sys

if not __package__:
    # Run as ``python lib/passwd.py``: Python put lib/ itself first on sys.path, where its
    # modules could shadow top-level packages, and left out the repository root that makes
    # ``lib`` importable.
    _LIB_DIR = os.path.dirname(os.path.realpath(__file__))
    if sys.path and os.path.realpath(sys.path[0] or os.curdir) == _LIB_DIR:
        del sys.path[0]
    sys.path.insert(0, os.path.dirname(_LIB_DIR))

import argparse
import base64
import binascii
import contextlib
import getpass
import hashlib
import logging
import secrets
import stat
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import passlib.utils.handlers as uh
from passlib import exc as passlib_exc
from passlib.context import CryptContext

from lib.names import InvalidName, normalize_name

__all__ = [
    "KNOWN_ROLES",
    "PasswdFileError",
    "PasswordFile",
    "UserEntry",
    "hash_password",
    "main",
    "make_context",
]

_log = logging.getLogger(__name__)

PROG = "acmegw-passwd"
DEFAULT_FILE = "acmepasswd"
KNOWN_ROLES = frozenset({"admin"})

_MAX_NAME_LENGTH = 64
_SCRYPT_LOG2_N = 14  # the original gateway's N=16384: same cost, so upgrading never weakens
_PBKDF2_SHA512_ROUNDS = 210_000  # OWASP's 2023 figure for PBKDF2-HMAC-SHA512
_GENERATED_BYTES = 32  # 256 bits


class PasswdFileError(Exception):
    """The password file or an administrator's input is unusable; the message is safe to show."""


@dataclass(frozen=True)
class UserEntry:
    """One user of the password file."""

    name: str
    # Kept out of repr() so that logging an entry never leaks the hash.
    hash: str = field(repr=False)
    domains: tuple[str, ...] = ()  # () = every domain the gateway manages
    roles: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


# --- hashes -------------------------------------------------------------------------------


def _b64decode_unpadded(text: str) -> bytes:
    # The original tool strips the "=" padding; b64decode insists on it.
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _b64encode_unpadded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


class _LegacyHandler(uh.HasRawSalt, uh.HasRawChecksum, uh.GenericHandler):  # type: ignore[misc]
    """Common parsing for the original gateway's ``$ID$SALT$DIGEST`` hashes."""

    ident: str
    setting_kwds = ("salt", "salt_size")
    checksum_size = 32
    default_salt_size = 16
    min_salt_size = 1
    max_salt_size = 1024

    @classmethod
    def identify(cls, hash: Any) -> bool:
        return isinstance(hash, str) and hash.startswith(cls.ident)

    @classmethod
    def from_string(cls, hash: Any, **context: Any) -> _LegacyHandler:
        if not isinstance(hash, str) or not hash.startswith(cls.ident):
            raise passlib_exc.InvalidHashError(cls)
        parts = hash[len(cls.ident) :].split("$")
        if len(parts) != 2:
            raise passlib_exc.MalformedHashError(cls, "expected $SALT$DIGEST")
        try:
            salt, checksum = (_b64decode_unpadded(part) for part in parts)
        except binascii.Error:
            raise passlib_exc.MalformedHashError(cls, "salt or digest is not base64") from None
        instance: _LegacyHandler = cls(salt=salt, checksum=checksum, **context)
        return instance

    def to_string(self) -> str:
        return f"{self.ident}{_b64encode_unpadded(self.salt)}${_b64encode_unpadded(self.checksum)}"

    def _calc_checksum(self, secret: str | bytes) -> bytes:
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        return self._derive(raw)

    def _derive(self, secret: bytes) -> bytes:
        raise NotImplementedError


class _LegacyScrypt(_LegacyHandler):
    """The original gateway's ``$8$``: scrypt with N=16384, r=8, p=1."""

    name = "legacy_scrypt"
    ident = "$8$"

    def _derive(self, secret: bytes) -> bytes:
        salt: bytes = self.salt
        if hasattr(hashlib, "scrypt"):
            return hashlib.scrypt(secret, salt=salt, n=16384, r=8, p=1, dklen=32)
        # Without OpenSSL's scrypt, passlib's own (slow) implementation still lets users log
        # in once so that their hash can be upgraded.
        from passlib.crypto.scrypt import scrypt as passlib_scrypt

        derived: bytes = passlib_scrypt(secret, salt, 16384, 8, 1, 32)
        return derived


class _LegacyPbkdf2Sha3(_LegacyHandler):
    """The original gateway's ``$7$``: PBKDF2-HMAC-SHA3-512, 262144 iterations.

    Not the libsodium/yescrypt ``$7$`` that passlib's scrypt handler also claims:
    the context lists this handler first so that it wins.
    """

    name = "legacy_pbkdf2_sha3_512"
    ident = "$7$"

    def _derive(self, secret: bytes) -> bytes:
        return hashlib.pbkdf2_hmac("sha3_512", secret, self.salt, 262144, 32)


def _make_context(scrypt_available: bool) -> CryptContext:
    default = "scrypt" if scrypt_available else "pbkdf2_sha512"
    deprecated = [_LegacyScrypt.name, _LegacyPbkdf2Sha3.name]
    if scrypt_available:
        deprecated.append("pbkdf2_sha512")
    return CryptContext(
        # The legacy handlers come first: the first handler that recognises a hash wins.
        schemes=[_LegacyScrypt, _LegacyPbkdf2Sha3, "scrypt", "pbkdf2_sha512"],
        default=default,
        deprecated=deprecated,
        scrypt__default_rounds=_SCRYPT_LOG2_N,
        scrypt__min_rounds=_SCRYPT_LOG2_N,
        pbkdf2_sha512__default_rounds=_PBKDF2_SHA512_ROUNDS,
        pbkdf2_sha512__min_rounds=_PBKDF2_SHA512_ROUNDS,
    )


def make_context() -> CryptContext:
    """The :class:`CryptContext` that reads every supported hash and writes the preferred one."""
    return _make_context(hasattr(hashlib, "scrypt"))


def _hash_with(context: CryptContext, password: str) -> str:
    if not password:
        raise PasswdFileError("empty password refused")
    try:
        hashed: str = context.hash(password)
    except passlib_exc.PasswordSizeError:
        raise PasswdFileError("password too long (at most 4096 characters)") from None
    return hashed


def hash_password(password: str) -> str:
    """Hash *password* in the preferred format."""
    return _hash_with(make_context(), password)


def _scheme_label(context: CryptContext, hashed: str) -> str:
    scheme = context.identify(hashed, required=False)
    return str(scheme).replace("_", "-") if scheme else "unknown"


# --- fields -------------------------------------------------------------------------------


def _check_user_name(name: str) -> None:
    if not 1 <= len(name) <= _MAX_NAME_LENGTH:
        raise PasswdFileError(f"user name must be 1 to {_MAX_NAME_LENGTH} characters long")
    # Category "C*" covers control, format and unassigned characters, which would make
    # names look alike or break terminals and logs.
    if any(c == ":" or c.isspace() or unicodedata.category(c).startswith("C") for c in name):
        raise PasswdFileError("user name must not contain ':', whitespace or control characters")


def _split_list(text: str) -> list[str]:
    return text.split(",") if text.strip() else []


def _normalise_domains(items: Iterable[str]) -> tuple[str, ...]:
    names = [item.strip() for item in items]
    if names == ["*"]:
        return ()
    result: list[str] = []
    for item in names:
        # An empty item would otherwise silently drop out, and "," would grant every domain.
        if not item:
            raise PasswdFileError("empty domain name in list")
        if item == "*":
            raise PasswdFileError("'*' (all domains) cannot be combined with other names")
        try:
            normalised = normalize_name(item)
        except InvalidName as exc:
            raise PasswdFileError(f"invalid domain name {item!r}: {exc}") from None
        if normalised not in result:
            result.append(normalised)
    return tuple(result)


def _normalise_roles(items: Iterable[str]) -> frozenset[str]:
    roles = set()
    for item in items:
        role = item.strip().lower()
        if not role:
            raise PasswdFileError("empty role in list")
        if role not in KNOWN_ROLES:
            known = ", ".join(sorted(KNOWN_ROLES))
            raise PasswdFileError(f"unknown role {role!r} (known: {known})")
        roles.add(role)
    return frozenset(roles)


def _format_entry(entry: UserEntry) -> str:
    fields = [entry.name, entry.hash]
    if entry.domains or entry.roles:
        fields.append(",".join(entry.domains) or "*")
    if entry.roles:
        fields.append(",".join(sorted(entry.roles)))
    return ":".join(fields)


@dataclass(frozen=True)
class _Line:
    """A line of the file: kept as read unless its entry changes."""

    text: str
    entry: UserEntry | None = None

    @classmethod
    def of(cls, entry: UserEntry) -> _Line:
        return cls(_format_entry(entry), entry)


def _hash_kind(hashed: str) -> str:
    """A hash without its salt and digest: the scheme and its cost parameters
    (``$scrypt$ln=14,r=8,p=1``, ``$pbkdf2-sha512$210000``, ``$7``)."""
    return hashed.rsplit("$", 2)[0]


def _parse_entry(context: CryptContext, text: str) -> UserEntry:
    fields = text.strip().split(":")
    if not 2 <= len(fields) <= 4:
        raise PasswdFileError("expected user:hash[:domains[:roles]]")
    name, hashed = fields[0], fields[1]
    _check_user_name(name)
    handler = context.identify(hashed, resolve=True, required=False)
    if handler is None:
        raise PasswdFileError(f"user {name!r}: unrecognised password hash")
    try:
        handler.from_string(hashed)
    except (ValueError, TypeError):
        # passlib's message could quote parts of the hash: say only which scheme failed.
        label = str(handler.name).replace("_", "-")
        raise PasswdFileError(f"user {name!r}: malformed {label} password hash") from None
    domains = _normalise_domains(_split_list(fields[2])) if len(fields) > 2 else ()
    roles = _normalise_roles(_split_list(fields[3])) if len(fields) > 3 else frozenset()
    return UserEntry(name=name, hash=hashed, domains=domains, roles=roles)


def _parse(context: CryptContext, path: Path, data: bytes) -> list[_Line]:
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines: list[_Line] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(raw_lines, start=1):
        try:
            text = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError:
            raise PasswdFileError(f"{path}:{number}: not valid UTF-8") from None
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(_Line(text))
            continue
        try:
            entry = _parse_entry(context, text)
        except PasswdFileError as exc:
            raise PasswdFileError(f"{path}:{number}: {exc}") from None
        if entry.name in first_seen:
            raise PasswdFileError(
                f"{path}:{number}: duplicate user {entry.name!r} "
                f"(first on line {first_seen[entry.name]})"
            )
        first_seen[entry.name] = number
        lines.append(_Line(text, entry))
    return lines


# --- the file -----------------------------------------------------------------------------


class PasswordFile:
    """Reads, checks against and atomically rewrites one password file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._context = make_context()
        # Users whose upgrade could not be written (read-only file): not retried for the same
        # old hash, so a read-only deployment neither re-hashes nor warns on every login.
        self._upgrade_failed: dict[str, str] = {}
        # One hash of each kind in the users last asked about (see dummy_hashes).
        self._dummies_for: tuple[Mapping[str, UserEntry], dict[str, str]] | None = None

    def load(self) -> dict[str, UserEntry]:
        """Parse the file; raise :class:`PasswdFileError` if it is missing or malformed."""
        return {line.entry.name: line.entry for line in self._read() if line.entry}

    def stamp(self) -> tuple[int, int, int] | None:
        """Identify the file's current version, or None if it is missing.

        Callers compare stamps to notice that the file was replaced or edited.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PasswdFileError(f"cannot access {self.path}: {exc.strerror}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def verify(self, users: Mapping[str, UserEntry], name: str, password: str) -> UserEntry | None:
        """Return the user's entry if *password* is correct, else None.

        Every failed check costs the same, whoever it names: one hash of each kind in
        *users* (a kind is a scheme with its cost: scrypt, an original ``$7$``...). An
        unknown user is checked against one of each; a known user with a wrong
        password against their own and one of each other kind. So timing tells neither
        which names exist nor which users are still on a slow original hash. (While a
        file holds several kinds a failed check costs their sum; once every user has
        logged in, and been upgraded to scrypt, it costs one scrypt.)
        A correct password for a legacy or deprecated hash upgrades the stored hash; the
        returned entry then carries the new hash.
        """
        entry = users.get(name)
        if entry is None:
            self._verify_dummies(users, password)
            return None
        try:
            if self._upgrade_failed.get(name) == entry.hash:
                return entry if self._context.verify(password, entry.hash) else None
            ok, new_hash = self._context.verify_and_update(password, entry.hash)
        except (ValueError, TypeError):
            # Over-long password, or a hash that a caller built by hand and does not parse.
            return None
        if not ok:
            self._verify_dummies(users, password, but=_hash_kind(entry.hash))
            return None
        if new_hash is None:
            return entry
        try:
            written = self._replace_hash(name, entry.hash, new_hash)
        except PasswdFileError as exc:
            self._upgrade_failed[name] = entry.hash
            _log.warning("could not upgrade the password hash of user %r: %s", name, exc)
            return entry
        self._upgrade_failed.pop(name, None)
        if written:
            _log.info(
                "upgraded the password hash of user %r from %s to %s",
                name,
                _scheme_label(self._context, entry.hash),
                _scheme_label(self._context, new_hash),
            )
        return replace(entry, hash=new_hash)

    def _verify_dummies(
        self, users: Mapping[str, UserEntry], password: str, but: str | None = None
    ) -> None:
        """Check *password* against one hash of each kind in *users* but *but*; whatever
        the checks say is ignored (they are real users' hashes: the same scheme and cost)."""
        dummies = self.dummy_hashes(users)
        if not dummies:
            self._context.dummy_verify()
            return
        for kind, dummy in dummies.items():
            if kind != but:
                with contextlib.suppress(ValueError, TypeError):
                    self._context.verify(password, dummy)

    def dummy_hashes(self, users: Mapping[str, UserEntry]) -> dict[str, str]:
        """One hash of each kind in *users*, by kind (remembered for the same *users*)."""
        known = self._dummies_for
        if known is not None and known[0] is users:
            return known[1]
        dummies: dict[str, str] = {}
        for entry in users.values():
            dummies.setdefault(_hash_kind(entry.hash), entry.hash)
        self._dummies_for = (users, dummies)
        return dummies

    def set_user(
        self,
        name: str,
        password: str | None = None,
        *,
        domains: Sequence[str] | None = None,
        roles: Iterable[str] | None = None,
    ) -> str:
        """Add or update *name*; None keeps the current value. Returns "added" or "updated"."""
        _check_user_name(name)
        new_domains = None if domains is None else _normalise_domains(domains)
        new_roles = None if roles is None else _normalise_roles(roles)
        new_hash = None if password is None else _hash_with(self._context, password)
        lines = self._read(missing_ok=True)
        for index, line in enumerate(lines):
            if line.entry is not None and line.entry.name == name:
                old = line.entry
                lines[index] = _Line.of(
                    UserEntry(
                        name=name,
                        hash=old.hash if new_hash is None else new_hash,
                        domains=old.domains if new_domains is None else new_domains,
                        roles=old.roles if new_roles is None else new_roles,
                    )
                )
                self._write(lines)
                _log.info("user %r updated in %s", name, self.path)
                return "updated"
        if new_hash is None:
            raise PasswdFileError(f'User "{name}" not found; a new user needs a password')
        added = UserEntry(name, new_hash, new_domains or (), new_roles or frozenset())
        lines.append(_Line.of(added))
        self._write(lines)
        _log.info("user %r added to %s", name, self.path)
        return "added"

    def delete_user(self, name: str) -> None:
        """Remove *name*; raise :class:`PasswdFileError` if there is no such user."""
        lines = self._read()
        kept = [line for line in lines if line.entry is None or line.entry.name != name]
        if len(kept) == len(lines):
            raise PasswdFileError(f'User "{name}" not found')
        self._write(kept)
        _log.info("user %r deleted from %s", name, self.path)

    def scheme_of(self, entry: UserEntry) -> str:
        """A printable name of the entry's hash scheme, such as ``scrypt`` or ``legacy-scrypt``."""
        return _scheme_label(self._context, entry.hash)

    def _replace_hash(self, name: str, old_hash: str, new_hash: str) -> bool:
        lines = self._read()
        for index, line in enumerate(lines):
            entry = line.entry
            # Someone may have set a new password or deleted the user since the caller
            # loaded the file; their change wins over our upgrade of the old hash.
            if entry is not None and entry.name == name and entry.hash == old_hash:
                lines[index] = _Line.of(replace(entry, hash=new_hash))
                self._write(lines)
                return True
        return False

    def _read(self, *, missing_ok: bool = False) -> list[_Line]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            if missing_ok:
                return []
            raise PasswdFileError(f"{self.path} does not exist") from None
        except OSError as exc:
            raise PasswdFileError(f"cannot read {self.path}: {exc.strerror}") from None
        return _parse(self._context, self.path, data)

    def _write(self, lines: Sequence[_Line]) -> None:
        data = "".join(line.text + "\n" for line in lines).encode("utf-8")
        # Replace the file a symlink points to, not the symlink.
        target = Path(os.path.realpath(self.path))
        directory = target.parent
        try:
            current = os.stat(target)
        except FileNotFoundError:
            current = None
        except OSError as exc:
            raise PasswdFileError(f"cannot access {self.path}: {exc.strerror}") from None
        # Renaming over a file bypasses its permissions; honour an administrator's chmod a-w.
        if current is not None and not os.access(target, os.W_OK):
            raise PasswdFileError(f"{self.path} is read-only")
        if not directory.is_dir():
            raise PasswdFileError(f"cannot write {self.path}: no directory {directory}")
        tmp_path, fd = self._create_temp(directory, target.name)
        try:
            with os.fdopen(fd, "wb") as tmp:
                # umask may have taken bits away from O_CREAT's mode; the file must be 0600.
                os.fchmod(tmp.fileno(), stat.S_IRUSR | stat.S_IWUSR)
                if current is not None:
                    _keep_owner(tmp.fileno(), current)
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_path, target)
        except OSError as exc:
            _unlink_quietly(tmp_path)
            raise PasswdFileError(f"cannot write {self.path}: {exc.strerror}") from None
        except BaseException:
            _unlink_quietly(tmp_path)
            raise
        _fsync_directory(directory)

    def _create_temp(self, directory: Path, basename: str) -> tuple[Path, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for _attempt in range(10):
            tmp_path = directory / f".{basename}.{secrets.token_hex(8)}.tmp"
            try:
                return tmp_path, os.open(tmp_path, flags, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                raise PasswdFileError(f"cannot write {self.path}: {exc.strerror}") from None
        raise PasswdFileError(f"cannot write {self.path}: no free temporary file name")


def _keep_owner(fd: int, current: os.stat_result) -> None:
    # When root edits a file that the gateway's own user reads, the replacement must stay
    # readable by that user. Only root may give files away: elsewhere this is a no-op.
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != (current.st_uid, current.st_gid):
        with contextlib.suppress(OSError):
            os.fchown(fd, current.st_uid, current.st_gid)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; some systems cannot open directories, which only
    # costs durability, never correctness.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- command line -------------------------------------------------------------------------


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Add, change, verify, list or delete users of the gateway's password file.",
        epilog=(
            "Without -i or -g the password is prompted for (twice when setting it). "
            "A successful --verify of a legacy hash rewrites it in the current format."
        ),
    )
    parser.add_argument(
        "-f",
        "--file",
        type=Path,
        default=Path(os.environ.get("PASSWD_FILE") or DEFAULT_FILE),
        help=f"password file (default: $PASSWD_FILE, else ./{DEFAULT_FILE})",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "-i", "--stdin", action="store_true", help="read the password as one line from stdin"
    )
    source.add_argument(
        "-g", "--generate", action="store_true", help="generate a strong password and print it"
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("-D", "--delete", action="store_true", help="delete the user")
    action.add_argument("-v", "--verify", action="store_true", help="check the user's password")
    action.add_argument("-l", "--list", action="store_true", help="list users (never hashes)")
    parser.add_argument(
        "--domains",
        metavar="LIST",
        help="comma-separated domains the user may manage ('*' or '' = all)",
    )
    parser.add_argument("--roles", metavar="LIST", help="comma-separated roles ('' = none)")
    parser.add_argument("username", metavar="USERNAME", nargs="?")
    return parser


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    changes_attributes = args.domains is not None or args.roles is not None
    if args.list:
        if args.username is not None or args.stdin or args.generate or changes_attributes:
            parser.error("--list takes no USERNAME, password or attribute options")
        return
    if args.username is None:
        parser.error("USERNAME is required")
    if args.delete and (args.stdin or args.generate or changes_attributes):
        parser.error("--delete takes no password or attribute options")
    if args.verify and (args.generate or changes_attributes):
        parser.error("--verify takes no --generate, --domains or --roles")


def _read_stdin_password() -> str:
    if sys.stdin is None:
        raise PasswdFileError("--stdin given but stdin is closed")
    # Binary, so that a "\r" inside the password survives universal-newline translation.
    stream = getattr(sys.stdin, "buffer", None)
    if stream is not None:
        raw: bytes = stream.readline()
        raw = raw.removesuffix(b"\n").removesuffix(b"\r")
        try:
            password = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PasswdFileError("the password on stdin is not valid UTF-8") from None
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        raise PasswdFileError("empty password refused")
    return password


def _prompt(prompt: str) -> str:
    try:
        return getpass.getpass(prompt)
    except EOFError:
        raise PasswdFileError("no password entered") from None


def _prompt_new_password(name: str) -> str:
    password = _prompt(f'New password for "{name}": ')
    if not password:
        raise PasswdFileError("empty password refused")
    if _prompt("Retype new password: ") != password:
        raise PasswdFileError("the passwords do not match")
    return password


def _list_users(passwd: PasswordFile) -> None:
    rows = [
        (
            entry.name,
            ",".join(entry.domains) or "*",
            ",".join(sorted(entry.roles)) or "-",
            passwd.scheme_of(entry),
        )
        for entry in passwd.load().values()
    ]
    widths = [max((len(row[col]) for row in rows), default=0) for col in range(3)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]))


def _user_exists(passwd: PasswordFile, name: str) -> bool:
    return passwd.stamp() is not None and name in passwd.load()


def _run(args: argparse.Namespace) -> int:
    passwd = PasswordFile(args.file)
    if args.list:
        _list_users(passwd)
        return 0
    name: str = args.username
    _check_user_name(name)
    if args.delete:
        passwd.delete_user(name)
        print(f'User "{name}" deleted')
        return 0
    if args.verify:
        users = passwd.load()
        if name not in users:
            raise PasswdFileError(f'User "{name}" not found')
        password = _read_stdin_password() if args.stdin else _prompt(f'Password for "{name}": ')
        if passwd.verify(users, name, password) is None:
            print(f'Password incorrect for "{name}"')
            return 1
        print(f'Password OK for "{name}"')
        return 0

    domains = None if args.domains is None else _split_list(args.domains)
    roles = None if args.roles is None else _split_list(args.roles)
    new_password: str | None
    if args.generate:
        new_password = secrets.token_urlsafe(_GENERATED_BYTES)
    elif args.stdin:
        new_password = _read_stdin_password()
    elif (domains is not None or roles is not None) and _user_exists(passwd, name):
        new_password = None  # only the attributes change
    else:
        new_password = _prompt_new_password(name)
    result = passwd.set_user(name, new_password, domains=domains, roles=roles)
    print(f'User "{name}" {result}')
    if args.generate:
        print(f"Password for {name}: {new_password}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``acmegw-passwd``; return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check_usage(parser, args)
    try:
        return _run(args)
    except PasswdFileError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
