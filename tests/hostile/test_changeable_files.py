"""Whoever may change what decides who may write is let in: such files stop start-up.

Secret files that others may *read* are refused (test_config_refusals.py); these
are files that others may *change*, which the gateway started with, secret or
not:

* a ``STATE_DIR`` that every user may write (``chmod 777``, a folder under
  ``/tmp`` someone made first): another user plants an ``acmedns.sqlite3``
  holding an account of their own for ``_acme-challenge.www.example.test``, and
  the gateway takes it for one it registered;
* an ``ACMEDNS_ACCOUNTS_FILE`` of hashes only (no secret, so readable is fine)
  that others may write: an entry added there is an account after the next
  reload;
* a dotenv file without secrets that others may write (``ALLOWED_HOSTS``,
  ``BASIC_AUTH`` are in it), and a password file in a folder others may write
  (replace the file, add a user).

Each must stop start-up (exit 2) with a message naming the file and the
``chmod``/``chown`` that fixes it; ``--check-config`` says the same. Folders the
gateway's own group may write (Kubernetes ``fsGroup`` volumes) and sticky
folders above a path (``/tmp``) are fine.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway.acmedns import AccountStore
from gateway.state.sqlite import SqliteState
from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    GatewayProcess,
    gateway_settings,
    passwords_only,
    run_gateway,
    write_accounts_file,
)
from tests.hostile.wire import send
from tests.system import free_port

ZONE = "acme.example.test"
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="another user's files need root")


def settings_for(tmp: Path, port: int, **extra: str) -> dict[str, str]:
    PasswordFile(tmp / "acmepasswd").set_user("alice", "alice's password")
    return gateway_settings(tmp, port, **passwords_only(tmp), ACMEDNS_ZONE=ZONE, **extra)


def refused(tmp: Path, settings: dict[str, str], expected: str) -> None:
    """Start-up and --check-config both stop with *expected* in their message."""
    check = run_gateway(tmp, settings, ["--check-config"])
    assert check.returncode == 2, check.stdout + check.stderr
    assert expected in check.stderr, check.stderr
    gw = GatewayProcess(tmp, settings)
    try:
        deadline = time.monotonic() + 30
        while gw.proc.poll() is None:
            assert "acmegw-server: ready" not in gw.stderr, f"it started: {gw.stderr}"
            assert time.monotonic() < deadline, gw.describe()
            time.sleep(0.05)
        assert gw.proc.returncode == 2, gw.describe()
        assert expected in gw.stderr, gw.stderr
    finally:
        gw.stop()


def plant_account(state_dir: Path) -> tuple[str, str, str]:
    """Another user's account in *state_dir*, as they could write it there:
    (username, key, subdomain) writing ``_acme-challenge.www.example.test``."""

    async def plant() -> tuple[str, str, str]:
        state = SqliteState(state_dir)
        await state.open()
        try:
            account, key = await AccountStore(state.accounts).register(
                "mallory", ZONE, "_acme-challenge.www.example.test", ()
            )
        finally:
            await state.close()
        return account.username, key, account.subdomain

    planted = asyncio.run(plant())
    for path in state_dir.iterdir():
        os.chown(path, NOBODY, NOBODY)
        path.chmod(0o666)
    return planted


@as_root
def test_an_account_planted_in_an_open_state_dir_is_never_believed(tmp_path: Path) -> None:
    port = free_port()
    settings = settings_for(tmp_path, port)
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    username, key, subdomain = plant_account(state)
    gw = GatewayProcess(tmp_path, settings)
    try:
        deadline = time.monotonic() + 30
        while gw.proc.poll() is None:
            if "acmegw-server: ready" in gw.stderr:
                answer = send(port, "POST", "/update",
                              headers={"X-Api-User": username, "X-Api-Key": key},
                              body={"subdomain": subdomain, "txt": make_value()})
                pytest.fail(f"it started, and the planted account's update got {answer.status}")
            assert time.monotonic() < deadline, gw.describe()
            time.sleep(0.05)
    finally:
        gw.stop()
    assert gw.proc.returncode == 2
    assert f"STATE_DIR: {state} may be changed by every user (mode 777)" in gw.stderr
    assert f"run `chmod 775 {state}`" in gw.stderr


def test_a_state_dir_others_may_write_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, free_port())
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o1777)  # sticky or not: the gateway's files are made there later
    refused(tmp_path, settings, f"STATE_DIR: {state} may be changed by every user (mode 1777)")


def test_a_state_dir_to_be_made_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    open_folder = tmp_path / "shared"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    state = open_folder / "state"
    settings = settings_for(tmp_path, free_port(), STATE_DIR=str(state))
    refused(tmp_path, settings, f"STATE_DIR: {state} would be made in {open_folder}, which may "
                                "be changed by every user (mode 777)")


def test_a_state_dir_in_a_sticky_folder_or_open_to_our_group_starts(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    settings = settings_for(tmp_path, free_port(), STATE_DIR=str(sticky / "state"))
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 0, check.stderr
    ours = tmp_path / "ours"
    ours.mkdir()
    os.chown(ours, os.geteuid(), os.getegid())
    ours.chmod(0o2770)  # a Kubernetes fsGroup volume of the gateway's own group
    settings["STATE_DIR"] = str(ours)
    check = run_gateway(tmp_path, settings, ["--check-config"])
    assert check.returncode == 0, check.stderr


@as_root
def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, free_port())
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    refused(tmp_path, settings, f"STATE_DIR: {state} belongs to uid {NOBODY}")


def test_an_accounts_file_of_hashes_others_may_write_is_refused(tmp_path: Path) -> None:
    accounts = write_accounts_file(
        tmp_path / "accounts.json",
        {"username": "u", "password_hash": "sha256$00$00", "subdomain": "s",
         "fulldomain": f"s.{ZONE}"},
        mode=0o646,
    )
    settings = settings_for(tmp_path, free_port(), ACMEDNS_ACCOUNTS_FILE=str(accounts))
    refused(tmp_path, settings, f"ACMEDNS_ACCOUNTS_FILE: {accounts} may be changed by every "
                                f"user (mode 646), who could then decide who may write which "
                                f"name: run `chmod 644 {accounts}`")


def test_a_dotenv_file_without_secrets_others_may_write_is_refused(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, free_port())
    dotenv = tmp_path / "gateway.env"
    dotenv.write_text(f"DNSAPI_DOMAINS=example.test\nSTATE_DIR={tmp_path / 'state'}\n")
    dotenv.chmod(0o666)
    settings["DOTENV"] = str(dotenv)
    refused(tmp_path, settings, f"the dotenv file: {dotenv} may be changed by every user "
                                "(mode 666)")


def test_a_password_file_in_a_folder_others_may_write_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    folder.chmod(0o777)
    settings = settings_for(tmp_path, free_port())
    passwd = folder / "acmepasswd"
    (tmp_path / "acmepasswd").rename(passwd)
    settings["PASSWD_FILE"] = str(passwd)
    refused(tmp_path, settings, f"PASSWD_FILE: {passwd} is in {folder}, which may be changed "
                                f"by every user (mode 777), who could then decide who may "
                                f"write which name: run `chmod 775 {folder}`")
