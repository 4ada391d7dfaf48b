"""Whether the hook may believe a file it reads (hook.conf, the password file, the CA),
and write the one it appends to (its log).

Whoever can change hook.conf decides where the hook sends its password (a new
``ACMEGW_URL``); whoever can change the CA file decides whom the hook takes for the
gateway; whoever can read a file holding the password has it. So the hook reads such a
file only if nobody but root and the hook's own user can change it, and a file holding a
password only if nobody outside the hook's own group can read it:

* the file is a regular file (a FIFO would block the run, a device is no setting), owned
  by root or by the hook's user, and not writable by group or others;
* every directory above it, as written and with symbolic links resolved, is owned by
  root or the hook's user and not writable by group or others, unless it is sticky
  (``/tmp``: others may not replace what is not theirs); without this a file in a
  world-writable directory could be renamed over;
* a file holding a password is not readable by others, nor by its group unless that is
  the hook's own (effective) group: ``root:www-data`` mode 640, the usual way to hand
  www-data a file it may read but not change, is fine; so is mode 600.

OpenSSH's ``StrictModes`` and PostgreSQL's key-file check make the same demands. Each
refusal says what is wrong and gives the command that fixes it.

Whoever may put a link where the log goes decides which file the hook appends to (a
web page the hook's user owns, say): the log is never opened through a symbolic link,
nor kept in a file with other names, or one that others own or may change
(:func:`open_log`). Its directories are not held to the rules above: the log holds no
secret, the file is checked once open wherever a directory led, and ``/var/log`` itself
is group-writable on some systems (``root:syslog`` 775 on Ubuntu).
"""

from __future__ import annotations

import os
import stat

# Group and others may write.
_WRITABLE = stat.S_IWGRP | stat.S_IWOTH
# A new log: the hook's user writes it, its group (the administrators) may read it.
LOG_MODE = 0o640


class Untrusted(Exception):
    """The file may be changed, replaced or read by someone it must not be; the message
    says by whom and how to fix it."""


def read_trusted(path: str, limit: int) -> tuple[bytes, os.stat_result]:
    """The first *limit* bytes of *path* and its status, once the file and its directories
    passed the checks (:class:`Untrusted` if not); :class:`OSError` if it cannot be read.
    Opened without blocking: a FIFO is refused, not waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        check_file(path, info)
        check_directories(path)
        return handle.read(limit), info


def check_file(path: str, info: os.stat_result) -> None:
    """:class:`Untrusted` unless *info* (of *path*) is a regular file that only root and
    the hook's user may change."""
    if not stat.S_ISREG(info.st_mode):
        raise Untrusted(f"{path} is not a regular file")
    problem = _changed_by(info)
    if problem == "owner":
        raise Untrusted(f"{path} belongs to {_user_name(info.st_uid)}, who could rewrite it "
                        f"— run `chown root {path}`")
    if problem:
        raise Untrusted(f"{path} may be changed by {problem} (mode {_mode(info):o}) — run "
                        f"`chmod {_mode(info) & ~_WRITABLE:o} {path}`")


def check_directories(path: str) -> None:
    """:class:`Untrusted` unless only root and the hook's user may replace what is in each
    directory above *path*, both as written and with symbolic links resolved."""
    seen: set[str] = set()
    for start in (os.path.abspath(path), os.path.realpath(path)):
        directory = os.path.dirname(start)
        while directory not in seen:
            seen.add(directory)
            info = os.stat(directory)
            # In a sticky directory (/tmp) only an entry's owner may rename or remove it.
            problem = _changed_by(info, writable_ok=bool(info.st_mode & stat.S_ISVTX))
            _refuse_directory(path, directory, info, problem)
            directory = os.path.dirname(directory)


def check_private(path: str, info: os.stat_result) -> None:
    """:class:`Untrusted` if anyone outside the hook's own group may read *path*, which
    holds a password."""
    mode = _mode(info)
    readers = _outsiders(info, stat.S_IRGRP, stat.S_IROTH)
    if readers:
        raise Untrusted(f"{path} holds a password but {' and '.join(readers)} may read it "
                        f"(mode {mode:o}) — run `{_private_fix(path, info)}`")


def check_ca(path: str) -> None:
    """:class:`Untrusted` unless the CA file, or the ``c_rehash`` directory and each file in
    it, may be changed by root and the hook's user only. :class:`OSError` if unreadable."""
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        check_file(path, info)
    else:
        # Sticky or not: whoever may write to it may add a CA.
        _refuse_directory(path, path, info, _changed_by(info))
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file():  # what OpenSSL may load (links followed, as it does)
                    check_file(entry.path, entry.stat())
    check_directories(path)


def open_log(path: str) -> int:
    """A descriptor appending to the log *path* (created :data:`LOG_MODE` if missing), once
    it passed the checks (:class:`Untrusted` if not); :class:`OSError` if it cannot be opened.

    Refused: a symbolic link; a regular file with more than one name (a hard link: the
    lines would land in the file behind the others too), that someone other than root and
    the hook's user owns, or that others or a group other than the hook's may write. A
    FIFO or a device (``/dev/null``) is fine from root or the hook's user. A FIFO nobody
    reads is an error, not a wait.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, LOG_MODE)
    except OSError:
        if os.path.islink(path):
            raise Untrusted(f"{path} is a symbolic link, and the log is not written through "
                            f"one — set ACMEGW_LOG to the file it names") from None
        raise
    try:
        _check_log(path, os.fstat(fd))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_log(path: str, info: os.stat_result) -> None:
    if info.st_uid not in (0, os.geteuid()):
        raise Untrusted(f"{path} belongs to {_user_name(info.st_uid)}, who could rewrite the "
                        f"log — run `chown {_user_name(os.geteuid())} {path}`")
    if not stat.S_ISREG(info.st_mode):
        return  # a FIFO or a device of root's or the hook's user: nothing to overwrite
    mode = _mode(info)
    # Its group may write when that is the hook's own: root:www-data 660 for a www-data hook.
    writers = _outsiders(info, stat.S_IWGRP, stat.S_IWOTH)
    if writers:
        kept = mode & ~stat.S_IWOTH & ~(stat.S_IWGRP if info.st_gid != os.getegid() else 0)
        raise Untrusted(f"{path} may be changed by {' and '.join(writers)} (mode {mode:o}) — "
                        f"run `chmod {kept:o} {path}`")
    if info.st_nlink > 1:
        raise Untrusted(f"{path} has {info.st_nlink} names (hard links), and the log would "
                        f"go to the file behind the others too — give the log a file of its own")


def _outsiders(info: os.stat_result, group_bit: int, others_bit: int) -> list[str]:
    """Who outside the hook's user and its own group the two permission bits let in."""
    who = []
    if info.st_mode & group_bit and info.st_gid != os.getegid():
        who.append(f"group {_group_name(info.st_gid)}")
    if info.st_mode & others_bit:
        who.append("others")
    return who


def _changed_by(info: os.stat_result, writable_ok: bool = False) -> str:
    """Who other than root and the hook's user may change the entry: "owner" when
    someone else owns it, else the writers ("its group", "others"), else ""."""
    if info.st_uid not in (0, os.geteuid()):
        return "owner"
    if writable_ok:
        return ""
    return " and ".join(who for who, bit in (("its group", stat.S_IWGRP),
                                             ("others", stat.S_IWOTH)) if info.st_mode & bit)


def _refuse_directory(path: str, directory: str, info: os.stat_result, problem: str) -> None:
    where = f"{path} is in {directory}, which" if directory != path else directory
    if problem == "owner":
        raise Untrusted(f"{where} belongs to {_user_name(info.st_uid)}, who could replace "
                        f"what is in it — run `chown root {directory}`")
    if problem:
        raise Untrusted(f"{where} may be changed by {problem} (mode {_mode(info):o}), who "
                        f"could replace what is in it — run "
                        f"`chmod {_mode(info) & ~_WRITABLE:o} {directory}`")


def _mode(info: os.stat_result) -> int:
    return stat.S_IMODE(info.st_mode)


def _private_fix(path: str, info: os.stat_result) -> str:
    """The command that leaves *path* readable by the hook and nobody outside its group."""
    mode = _mode(info) & ~_WRITABLE
    if info.st_uid == os.geteuid():
        return f"chmod {mode & 0o700:o} {path}"
    # Root's file, which the hook reads through its group (or through "others", which
    # must go): the hook's group may read it, nobody else.
    fix = f"chmod {(mode & 0o700) | stat.S_IRGRP:o} {path}"
    if info.st_gid == os.getegid():
        return fix
    return f"chgrp {_group_name(os.getegid())} {path} && {fix}"


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
