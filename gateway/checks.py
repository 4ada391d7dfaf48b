"""What reading the settings cannot tell: checks made at start-up and by ``--check-config``.

* **Unknown settings.** A key in the dotenv file that nothing reads is a
  misspelling or a leftover, silently ignored otherwise. The known keys come from
  the code: every key the gateway and the selected provider asked for while the
  configuration was built (:attr:`lib.settings.Settings.asked`), the ``SETTINGS``
  that every provider module declares (so a provider that is not selected is no
  cause for alarm) and dns-lexicon's ``LEXICON_`` prefix. The environment is not
  checked: it holds everything. Each is a warning at start-up, and a problem under
  ``--check-config`` or when the configuration has problems anyway (a misspelled
  name is often their cause: ``DNSAPI_DOMAIN`` for ``DNSAPI_DOMAINS``).
* **STATE_DIR** (``--check-config``): a probe file is created, written, synced
  and removed there, as the user running the check — run it as the gateway's
  user. A missing directory is created as the server would and removed again.
* **DATABASE_URL** (``--check-config``): the database is connected to as the
  gateway would, within ``DATABASE_TIMEOUT``, and its schema versions read
  (:func:`gateway.state.check`); nothing is written. No connection, tables a
  newer gateway migrated, or tables to create where this user may not are
  problems; tables this gateway would migrate a warning (replicas of the older
  version then refuse the database). Without ``--check-config`` only whether its
  driver (the ``postgresql`` extra) can be imported: a problem if not.
* **Users' domains** outside ``DNSAPI_DOMAINS``: a warning naming user and domain
  (that user can change nothing there).
* **A proxy in front that is not named** (:func:`proxy_blind_hosts`):
  ``INSECURE_HTTP=1`` with ``ALLOWED_HOSTS`` but no ``ALLOWED_PROXIES``. Behind a
  TLS-terminating proxy every request comes from the proxy's address, so the host
  list lets in everyone behind it, or no one. A warning, not a problem: a tunnel
  (``ssh -R``, stunnel) also needs ``INSECURE_HTTP=1`` and has no header to trust.
* **Files that hold secrets must be private** (:func:`secret_files`): the password
  file, the TLS key, the dotenv file when it holds a secret setting, each
  ``<KEY>_FILE`` of a secret, and ``ACMEDNS_ACCOUNTS_FILE`` when it holds keys
  rather than their hashes. Others may do nothing with them; the group may read
  one only when root owns it (an admin's deliberate ``root:acmegw 0640``, or a
  Kubernetes secret with ``fsGroup``), as PostgreSQL rules for its TLS key.
  Anything more is a problem naming the file and the ``chmod`` that fixes it.
* **What decides who may write must be ours to change** (:func:`deciding_paths`):
  the dotenv file, the password file and ``ACMEDNS_ACCOUNTS_FILE`` (a line or
  an account added there is a way in, hashes only or not), and ``STATE_DIR``
  (an ``acmedns.sqlite3`` planted there is a registered account; ``-wal``
  pages an attacker wrote are replayed into it). Each must belong to root or
  the gateway's user, and neither others nor a group other than the gateway's
  own may write to it, or to a folder above it unless that folder is sticky
  (``/tmp``: nobody may replace an entry that is not theirs). ``STATE_DIR``
  itself may not be sticky-and-open either: there the names are made by us
  later, and another user could make them first. As OpenSSH's
  ``StrictModes`` and the hook (:mod:`hooks.file_trust`) judge their files.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from gateway import state
from gateway.acmedns import holds_plain_keys
from gateway.config import Config
from gateway.storage import obstacle
from lib.names import is_within
from lib.passwd import UserEntry
from lib.settings import Settings, unknown_keys, unknown_message
from providers.registry import SETTING_PREFIXES, declared_settings


def run(settings: Settings, config: Config, users: Iterable[UserEntry] = ()) -> None:
    """Every check, recording problems and warnings in *settings*."""
    strict = config.check_only or bool(settings.problems)
    for message in unknown_settings(settings):
        if strict:
            settings.problem(message)
        else:
            settings.warn(message)
    if config.check_only:
        problem = state_dir_problem(config.state_dir)
        if problem:
            settings.problem(problem)
        problems, warnings = state.check(config)
        for message in problems:
            settings.problem(message)
        for message in warnings:
            settings.warn(message)
    elif (missing := state.driver_problem(config)) is not None:
        settings.problem(missing)
    for message in users_outside(users, config.managed_domains):
        settings.warn(message)
    blind = proxy_blind_hosts(config)
    if blind is not None:
        settings.warn(blind)
    for what, path in secret_files(settings, config):
        problem = private_file_problem(what, path)
        if problem is not None:
            settings.problem(problem)
    for what, path in deciding_paths(settings, config):
        problem = changeable_problem(what, path)
        if problem is not None:
            settings.problem(problem)


def unknown_settings(settings: Settings) -> list[str]:
    """"unknown setting X in FILE: did you mean Y?" for each key of a settings file
    that nothing asked for."""
    candidates = [k for k in settings.file_keys if k not in settings.asked]
    if not candidates:
        return []  # the usual case costs no look at the providers' sources
    known = settings.asked | declared_settings()
    return [
        unknown_message(key, close, settings.file_keys[key])
        for key, close in unknown_keys(candidates, known, SETTING_PREFIXES)
    ]


def state_dir_problem(state_dir: Path) -> str | None:
    """Why this user cannot keep the journal in *state_dir*, or None when it can."""
    missing = [p for p in (state_dir, *state_dir.parents) if not p.exists()]  # deepest first
    probe = state_dir / f".acmegw-check-{os.getpid()}"
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"acmegw-server --check-config was here\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return (
            f"STATE_DIR: {user_name()} cannot write in {state_dir}: "
            f"{exc.strerror or exc}{obstacle(state_dir)} (the journal lives there; "
            "run --check-config as the user the gateway runs as)"
        )
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                break
    return None


def users_outside(users: Iterable[UserEntry], managed: tuple[str, ...]) -> list[str]:
    """A warning for each user domain that lies outside every managed domain (and
    holds none): that user can change no name there."""
    messages = []
    for user in users:
        for domain in user.domains:
            if domain == "*" or any(
                is_within(domain, m) or is_within(m, domain) for m in managed
            ):
                continue
            messages.append(
                f"user {user.name}: domain {domain} lies outside DNSAPI_DOMAINS "
                f"({', '.join(managed)}); that user can change no name there"
            )
    return messages


def proxy_blind_hosts(config: Config) -> str | None:
    """The warning for ALLOWED_HOSTS behind a TLS proxy the gateway does not know, if so."""
    auth = config.auth
    if not config.insecure_http or config.tls is not None or not auth.allowed_hosts \
            or auth.allowed_proxies:
        return None
    return (
        "INSECURE_HTTP=1 says a TLS-terminating proxy is in front, but ALLOWED_PROXIES is "
        "empty: every request then comes from the proxy's address, so ALLOWED_HOSTS "
        f"({', '.join(str(n) for n in auth.allowed_hosts)}) lets in everyone behind the "
        "proxy, or no one — set ALLOWED_PROXIES to the proxy's address (and PROXY_XFF to "
        "the header it sets, X-Forwarded-For by default)"
    )


# Dotenv keys that hold a secret though no code read them as one this time (a
# provider not selected, lexicon's options): what such keys are called.
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|_API_KEY$|_AUTH_KEY$|_PRIVATE_KEY$")
_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.IGNORECASE)


def is_secret_setting(settings: Settings, key: str, value: str) -> bool:
    """Whether *key* (with *value*) is a secret: read as one by the code
    (:meth:`Settings.secret`), declared with a ``<KEY>_FILE`` form by a provider, named
    like one, or a URL with a password in it (a proxy's, say)."""
    if key.endswith("_FILE"):
        return False  # a file name; the file itself is checked
    return (
        key in settings.secret_keys
        or f"{key}_FILE" in declared_settings()
        or bool(_SECRET_NAME.search(key))
        or bool(_URL_PASSWORD.match(value.strip()))
    )


def secret_files(settings: Settings, config: Config) -> list[tuple[str, Path]]:
    """Every file this configuration reads that holds a secret, with what it is."""
    files: list[tuple[str, Path]] = []
    if config.auth.passwd_file is not None:
        files.append(("PASSWD_FILE", config.auth.passwd_file))
    if config.tls is not None:
        files.append(("SSL_KEY", config.tls.key))
    by_file: dict[str, list[str]] = {}
    for key, where in settings.file_keys.items():
        value = settings.get(key)
        if value and is_secret_setting(settings, key, value):
            by_file.setdefault(where, []).append(key)
    for where, keys in by_file.items():
        files.append((f"the dotenv file (it holds {', '.join(sorted(keys))})", Path(where)))
    for key in sorted(settings.secret_keys):
        named = settings.get(f"{key}_FILE")
        if named:
            files.append((f"{key}_FILE", Path(named)))
    accounts = config.acmedns.accounts_file
    if accounts is not None and holds_plain_keys(accounts):
        files.append(("ACMEDNS_ACCOUNTS_FILE (it holds acme-dns keys)", accounts))
    return files


def private_file_problem(what: str, path: Path) -> str | None:
    """Why *path*, which holds secrets, is not private enough, with the fix; None if it is.

    Others may have no access at all; the group may read (never write) only a file
    root owns.
    """
    try:
        info = path.stat()
    except OSError:
        return None  # a missing or unreadable file is reported where it is read
    mode = stat.S_IMODE(info.st_mode)
    allowed = 0o740 if info.st_uid == 0 else 0o700
    excess = mode & 0o077 & ~allowed
    if not excess:
        return None
    who = []
    for name, shift in (("the group", 3), ("every user", 0)):
        bits = (excess >> shift) & 0o7
        if bits:
            verbs = [verb for verb, bit in (("read", 4), ("change", 2), ("run", 1)) if bits & bit]
            who.append(f"{name} may {' and '.join(verbs)} it")
    owner = "root" if info.st_uid == 0 else f"uid {info.st_uid}"
    fix = f"chmod {mode & allowed | 0o400:03o} {path}"
    ours = {os.getegid(), *os.getgroups()}
    if info.st_uid == 0 and os.geteuid() != 0 and info.st_gid not in ours:
        # We read it as "every user" now; through the group once the chmod is done.
        fix = f"chgrp {group_name()} {path}; {fix}"
    return (
        f"{what}: {path} holds secrets, but {' and '.join(who)} (mode {mode:03o}, owner "
        f"{owner}): run `{fix}`"
    )


def deciding_paths(settings: Settings, config: Config) -> list[tuple[str, Path]]:
    """The files, and the folder, whose contents decide who may write which name."""
    paths = [("the dotenv file", Path(p)) for p in dict.fromkeys(settings.file_keys.values())]
    if config.auth.passwd_file is not None:
        paths.append(("PASSWD_FILE", config.auth.passwd_file))
    if config.acmedns.accounts_file is not None:
        paths.append(("ACMEDNS_ACCOUNTS_FILE", config.acmedns.accounts_file))
    paths.append(("STATE_DIR", config.state_dir))
    return paths


def changeable_problem(what: str, path: Path) -> str | None:
    """Why someone besides root and this user could change *path*, or put something
    else in its place, with the fix; None if nobody can.

    A *path* that does not exist yet (a ``STATE_DIR`` to be made) is judged by the
    folders it will be made in.
    """
    try:
        exists = path.exists()
        if exists:
            own = _changers(path.resolve(), sticky_ok=False)
            if own is not None:
                return f"{what}: {path} {own}"
        for folder in _folders_above(path):
            if not folder.exists():
                continue
            above = _changers(folder, sticky_ok=True)
            if above is not None:
                verb = "is in" if exists else "would be made in"
                return f"{what}: {path} {verb} {folder}, which {above}"
    except OSError:
        return None  # what cannot be looked at is reported where it is read
    return None


def _folders_above(path: Path) -> list[Path]:
    """Each folder above *path*, as written and with symbolic links resolved."""
    found: dict[Path, None] = {}
    for start in (Path(os.path.abspath(path)), path.resolve()):
        found.update(dict.fromkeys(start.parents))
    return list(found)


def _changers(path: Path, *, sticky_ok: bool) -> str | None:
    """"... may be changed by ..." with the fix, if anyone but root, this user and its
    own group may change *path* (in a sticky folder, may replace what is not theirs)."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (0, os.geteuid()):
        return (
            f"belongs to uid {info.st_uid}, who could change it and what it holds: "
            f"run `chown {user_name()} {path}`"
        )
    if sticky_ok and mode & stat.S_ISVTX:
        return None
    writers = []
    if mode & stat.S_IWGRP and info.st_gid != os.getegid():
        writers.append("its group")
    if mode & stat.S_IWOTH:
        writers.append("every user")
    if not writers:
        return None
    fixed = mode & ~(stat.S_IWOTH | (stat.S_IWGRP if "its group" in writers else 0))
    return (
        f"may be changed by {' and '.join(writers)} (mode {mode:03o}), who could then "
        f"decide who may write which name: run `chmod {fixed:03o} {path}`"
    )


def group_name() -> str:
    """This process's group, for a ``chgrp`` that lets it read a root-owned file."""
    try:
        import grp

        return grp.getgrgid(os.getegid()).gr_name
    except (ImportError, KeyError):
        return str(os.getegid())


def user_name() -> str:
    """Who this process runs as, for messages about permissions."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"
