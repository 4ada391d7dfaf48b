"""The password file of the gateway's in-process tests: alice, bob and carol.

alice may change every managed name; bob only names under ``example.org``;
carol only names under ``shop.example.test``, and she has the ``admin`` role.
Each suite picks its own passwords (some with ``:`` or non-ASCII, which basic
auth must carry). scrypt is deliberately slow, so a suite hashes them once per
session (:func:`write_passwd_template`) and each test gets a copy
(:func:`copy_passwd_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lib.passwd import PasswordFile

# name: (domains, roles); None: every managed domain, no role.
RIGHTS: dict[str, tuple[list[str] | None, list[str] | None]] = {
    "alice": (None, None),
    "bob": (["example.org"], None),
    "carol": (["shop.example.test"], ["admin"]),
}


def write_passwd_template(path: Path, passwords: Mapping[str, str]) -> Path:
    """A password file at *path* with the users in *passwords* (names from :data:`RIGHTS`)."""
    users = PasswordFile(path)
    for name, password in passwords.items():
        domains, roles = RIGHTS[name]
        users.set_user(name, password, domains=domains, roles=roles)
    return path


def copy_passwd_file(template: Path, path: Path) -> Path:
    """*template* copied to *path*, readable by its owner only (as the gateway wants it)."""
    path.write_bytes(template.read_bytes())
    path.chmod(0o600)
    return path
