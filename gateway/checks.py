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
* **Users' domains** outside ``DNSAPI_DOMAINS``: a warning naming user and domain
  (that user can change nothing there).
* **A password file others can read**: a warning (:func:`secret_file_warning`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

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
    for message in users_outside(users, config.managed_domains):
        settings.warn(message)
    if config.auth.passwd_file is not None:
        secret_file_warning(settings, "PASSWD_FILE", config.auth.passwd_file)


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


def secret_file_warning(settings: Settings, key: str, path: Path) -> None:
    """Warn when the secrets file *path* (named by *key*) may be read by others.

    The one place that judges a secrets file's mode, so that it can become a
    start-up error in one change.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # a missing file is reported where it is read
    if mode & stat.S_IROTH:
        settings.warn(
            f"{key}: {path} may be read by every user on this machine "
            f"(mode {stat.S_IMODE(mode):o}); run `chmod o-rwx {path}`"
        )


def user_name() -> str:
    """Who this process runs as, for messages about permissions."""
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return f"uid {os.geteuid()}"
