"""A certificate's files on disk: a folder per version and a ``current`` link switched at once.

The folder of a certificate (``STATE/certificates/<name>``, or ``--out DIR``)::

    versions/<time>-<serial>/privkey.pem cert.pem chain.pem fullchain.pem
    current -> versions/<time>-<serial>
    privkey.pem -> current/privkey.pem        (cert.pem, chain.pem, fullchain.pem alike)

A new version is written completely in a folder of its own under a temporary name,
renamed into ``versions/``, and then ``current`` is replaced by one ``rename(2)``. A
server that opens ``fullchain.pem`` and ``privkey.pem`` finds both in the old version
or both in the new one, whenever the writing process dies: never a new certificate
beside an old key (certbot's ``live``/``archive`` split, in one folder).

The files of a new version take the owner, group and mode of the same file in the
version they replace: an administrator's ``chgrp ssl-cert privkey.pem; chmod 640
privkey.pem`` (which act on the current version through the link) survives renewal.
Without a previous version the key is 0600 and the rest 0644.

A folder written by earlier releases (the four files as plain files, older copies in
``archive/``) is adopted on the next write: its files are copied into a version first,
and each name becomes a link to identical content, so that no moment of the change
pairs files that do not belong together. :meth:`CertificateFiles.check` finds what an
interrupted run left (an unfinished version, a half-adopted folder, and in the old
layout a new certificate beside the previous key) and repairs it, or says why not.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lib.acme.certificates import key_matches
from lib.acme.durable import atomic_write, fsync_dir, make_dirs, replace, write_new
from lib.acme.errors import StateError

CERT_FILES = ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem")
KEY_FILE = "privkey.pem"
CURRENT = "current"
VERSIONS = "versions"
# Versions being written; a name that starts with it is never a finished version.
_UNFINISHED = ".new-"
_DEFAULT_MODES = {KEY_FILE: 0o600}


@dataclass
class Check:
    """What :meth:`CertificateFiles.check` found: repairs made, problems left (for a
    human to look at), and why the certificate must be issued again, if it must (its
    files are gone, damaged, or do not belong together: a new version replaces them)."""

    repaired: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    renew: str = ""


class CertificateFiles:
    """The files of one certificate in *folder*."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @property
    def versions_dir(self) -> Path:
        return self.folder / VERSIONS

    def current(self) -> Path | None:
        """The version ``current`` points to, or None (nothing written yet, or old layout)."""
        link = self.folder / CURRENT
        try:
            target = os.readlink(link)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {link}: {exc.strerror}") from None
        return self.folder / target

    def read(self, name: str) -> bytes | None:
        """The current *name* (following the links as a server would), or None."""
        path = self.folder / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read {path}: {exc.strerror}") from None

    def versions(self) -> list[Path]:
        """Every finished version, oldest first (the current one included)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p for p in self.versions_dir.iterdir()
                      if p.is_dir() and not p.name.startswith(_UNFINISHED))

    # --- writing ------------------------------------------------------------------------

    def install(self, files: Mapping[str, bytes], label: str) -> list[str]:
        """Write *files* as a new version named after *label* and make it current.

        Returns the warnings (an owner or group that could not be kept).
        """
        _mkdir(self.folder, 0o700)
        self._adopt_old_layout()
        _mkdir(self.versions_dir, 0o755)
        templates = self._templates()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        name = f"{stamp}-{label}"
        unfinished = self.versions_dir / f"{_UNFINISHED}{name}"
        warnings: list[str] = []
        try:
            _new_folder(unfinished)
            for file_name, data in files.items():
                warnings += _write(unfinished / file_name, data,
                                   _DEFAULT_MODES.get(file_name, 0o644),
                                   templates.get(file_name))
            fsync_dir(unfinished)
            os.rename(unfinished, self.versions_dir / name)
            fsync_dir(self.versions_dir)
        except OSError as exc:
            with contextlib.suppress(OSError):
                shutil.rmtree(unfinished)
            raise StateError(f"cannot write {self.versions_dir / name}: {exc.strerror}") from None
        self._point(CURRENT, f"{VERSIONS}/{name}")
        self._link_names(files)
        return warnings

    def _templates(self) -> dict[str, os.stat_result]:
        """The owner, group and mode to keep: those of the files now in use."""
        found = {}
        for file_name in CERT_FILES:
            with contextlib.suppress(OSError):
                found[file_name] = os.stat(self.folder / file_name)
        return found

    def _point(self, name: str, target: str) -> None:
        """Make *name* a link to *target* in one step (a new link renamed over the old)."""
        replace(self.folder / name, lambda temporary: os.symlink(target, temporary),
                "make the link")

    def _link_names(self, names: Mapping[str, bytes] | tuple[str, ...]) -> None:
        for file_name in names:
            path = self.folder / file_name
            wanted = f"{CURRENT}/{file_name}"
            with contextlib.suppress(OSError):
                if os.readlink(path) == wanted:
                    continue
            self._point(file_name, wanted)

    def _adopt_old_layout(self) -> None:
        """Turn the plain files of earlier releases into a first version.

        Copy first, switch ``current``, then replace each plain file by a link to its
        identical copy: at every step each name holds the content it held before.
        """
        plain = [n for n in CERT_FILES if (self.folder / n).is_file()
                 and not (self.folder / n).is_symlink()]
        if not plain:
            return
        current = self.current()
        if current is None or not current.is_dir():
            _mkdir(self.versions_dir, 0o755)
            templates = self._templates()
            name = f"{_stamp_of(self.folder / plain[0])}-adopted"
            unfinished = self.versions_dir / f"{_UNFINISHED}{name}"
            try:
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(unfinished)
                _new_folder(unfinished)
                for file_name in plain:
                    _write(unfinished / file_name, (self.folder / file_name).read_bytes(),
                           _DEFAULT_MODES.get(file_name, 0o644), templates.get(file_name))
                fsync_dir(unfinished)
                os.rename(unfinished, self.versions_dir / name)
                fsync_dir(self.versions_dir)
            except OSError as exc:
                raise StateError(f"cannot adopt the files in {self.folder}: "
                                 f"{exc.strerror}") from None
            self._point(CURRENT, f"{VERSIONS}/{name}")
            current = self.versions_dir / name
        for file_name in plain:
            copy = current / file_name
            if copy.is_file() and copy.read_bytes() == (self.folder / file_name).read_bytes():
                self._point(file_name, f"{CURRENT}/{file_name}")

    # --- checking -------------------------------------------------------------------------

    def check(self, repair: bool = True) -> Check:
        """Find (and with *repair*, mend) what an interrupted run left behind."""
        result = Check()
        if not self.folder.is_dir():
            return result
        if self.versions_dir.is_dir():
            for leftover in self.versions_dir.iterdir():
                if leftover.name.startswith(_UNFINISHED):
                    if repair:
                        shutil.rmtree(leftover, ignore_errors=True)
                    result.repaired.append(f"removed {leftover.name}, a version an interrupted "
                                           "run had not finished")
        for leftover in self.folder.glob(".*.tmp"):
            if repair:
                with contextlib.suppress(OSError):
                    leftover.unlink()
        current = self.current()
        if current is None:
            self._check_old_layout(result, repair)
            return result
        if not _complete(current):
            newest = next((v for v in reversed(self.versions()) if _complete(v)), None)
            if newest is None:
                result.renew = (f"{self.folder / CURRENT} points to {current.name}, which is "
                                "incomplete, and no complete version is left")
                return result
            if repair:
                self._point(CURRENT, f"{VERSIONS}/{newest.name}")
            result.repaired.append(f"current pointed to the incomplete {current.name}; "
                                   f"now {newest.name}")
            current = newest
        pair = _pair_problem(current / "cert.pem", current / KEY_FILE)
        if pair:
            result.renew = f"{current}: {pair}"
        for file_name in CERT_FILES:
            path = self.folder / file_name
            if not (current / file_name).exists():
                continue
            if path.is_symlink():
                continue
            if not path.exists() or path.read_bytes() == (current / file_name).read_bytes():
                # Missing, or a plain copy left by an interrupted adoption: link it.
                if repair:
                    self._point(file_name, f"{CURRENT}/{file_name}")
                result.repaired.append(f"{file_name} now links to the current version")
            else:
                result.problems.append(f"{path} is a plain file that differs from the current "
                                       "version; move it away and run again")
        return result

    def _check_old_layout(self, result: Check, repair: bool) -> None:
        """Earlier releases wrote cert.pem before privkey.pem in place: a run killed in
        between left a new certificate beside the previous key. The previous
        certificate, in ``archive/``, still belongs to that key: put it back, and renew."""
        cert, key = self.folder / "cert.pem", self.folder / KEY_FILE
        if not (cert.is_file() and key.is_file()):
            return
        problem = _pair_problem(cert, key)
        if not problem:
            return
        archive = self.folder / "archive"
        earlier = sorted((p for p in archive.iterdir() if p.is_dir()), reverse=True) \
            if archive.is_dir() else []
        match = next((v for v in earlier if (v / "cert.pem").is_file()
                      and not _pair_problem(v / "cert.pem", key)), None)
        if match is None:
            result.renew = f"{cert} does not belong to {key} and no earlier certificate does"
            return
        if repair:
            for file_name in ("cert.pem", "chain.pem", "fullchain.pem"):
                if (match / file_name).is_file():
                    _write(self.folder / file_name, (match / file_name).read_bytes(), 0o644,
                           _stat_or_none(self.folder / file_name), atomic=True)
        result.repaired.append(f"cert.pem was newer than privkey.pem (a renewal was "
                               f"interrupted); restored the certificate of {match.name}, "
                               "which belongs to the key")
        result.renew = "its newest certificate was lost with its key"


def _complete(version: Path) -> bool:
    # A version is renamed into place only once written, so a certificate means complete
    # (its key may live elsewhere: a certificate for the user's own CSR).
    return (version / "cert.pem").is_file() and (version / "fullchain.pem").is_file()


def _pair_problem(cert: Path, key: Path) -> str | None:
    """Why *cert* and *key* do not go together, or None (also when there is no key:
    a certificate for a CSR the user made keeps its key elsewhere)."""
    if not key.exists():
        return None
    try:
        if key_matches(cert.read_bytes(), key.read_bytes()):
            return None
    except (OSError, ValueError) as exc:
        return f"unreadable: {exc}"
    return "the certificate is not for the private key beside it"


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _stamp_of(path: Path) -> str:
    moment = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


def _write(path: Path, data: bytes, default_mode: int, template: os.stat_result | None,
           atomic: bool = False) -> list[str]:
    """Write *path* with the owner, group and mode of *template* (else ours, *default_mode*)."""
    mode = stat.S_IMODE(template.st_mode) if template else default_mode
    owner = (template.st_uid, template.st_gid) if template else None
    return atomic_write(path, data, mode, owner) if atomic else write_new(path, data, mode, owner)


def _mkdir(path: Path, mode: int) -> None:
    """*path*, created with *mode* (its missing parents private); one that exists keeps
    the mode it has (an administrator's chgrp and chmod of an --out folder)."""
    make_dirs(path.parent)
    try:
        _new_folder(path, mode)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror}") from None


def _new_folder(path: Path, mode: int = 0o755) -> None:
    """Create *path* with exactly *mode*, past the umask: under a systemd UMask=0077 a
    0700 version folder would shut out a service that reads the key through its group."""
    path.mkdir()
    os.chmod(path, mode)
