"""The installed ``acmegw-hook`` run as ``www-data``, the way mod_md runs it, without Apache.

What an administrator gets wrong first is file ownership and modes: these run the
hook from the venv of Debian's python3 as the httpd user, with stdin closed and a
bare environment, and check the one line it prints.
"""

from __future__ import annotations

import grp
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.e2e_hook.rig import httpd_ids

pytestmark = pytest.mark.system


def run_as_httpd(hook: Path, args: list[str], env: dict[str, str],
                 extra_groups: list[int] | None = None) -> tuple[int, str]:
    uid, gid = httpd_ids()
    done = subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" "$@" <&-', str(hook), *args],
        env=env, user=uid, group=gid, extra_groups=extra_groups or [], capture_output=True,
        text=True, timeout=30, check=False, cwd="/",
    )
    assert done.stdout == ""
    return done.returncode, done.stderr


def test_a_hook_conf_www_data_cannot_read_is_named(hook_program: Path, shared: Path) -> None:
    conf = shared / "hook.conf"
    conf.write_text("ACMEGW_URL=https://127.0.0.1:9/\nACMEGW_USER=u\nACMEGW_PASSWORD=s3cret\n")
    conf.chmod(0o600)  # owned by root: what `sudoedit` or a careless `cp` leaves behind
    status, err = run_as_httpd(hook_program, ["setup", "example.test", make_value()],
                               {"ACMEGW_HOOK_CONF": str(conf)})
    assert status == 2
    assert err == (f"acmegw-hook: cannot read {conf}: Permission denied (the hook runs as "
                   "www-data; make the file readable by that user only)\n")


def test_a_hook_conf_in_a_directory_www_data_cannot_enter_is_named(hook_program: Path,
                                                                    shared: Path) -> None:
    private = shared / "private"
    private.mkdir(mode=0o700)
    conf = private / "hook.conf"
    conf.write_text("ACMEGW_URL=https://127.0.0.1:9/\n")
    status, err = run_as_httpd(hook_program, ["setup", "example.test", make_value()],
                               {"ACMEGW_HOOK_CONF": str(conf)})
    assert status == 2
    assert err == (f"acmegw-hook: cannot read {conf}: Permission denied (the hook runs as "
                   "www-data; make the file readable by that user only)\n")


def root_conf(shared: Path, mode: int, group: str) -> Path:
    """A hook.conf with a password, owned by root and *group*, as an administrator writes it."""
    conf = shared / "hook.conf"
    conf.write_text("ACMEGW_URL=https://127.0.0.1:9/\nACMEGW_USER=u\nACMEGW_PASSWORD=s3cret\n"
                    "ACMEGW_TIMEOUT=1\n")
    os.chown(conf, 0, grp.getgrnam(group).gr_gid)
    conf.chmod(mode)
    return conf


def test_a_readable_hook_conf_with_a_password_is_refused(hook_program: Path,
                                                        shared: Path) -> None:
    conf = root_conf(shared, 0o644, "root")
    status, err = run_as_httpd(hook_program, ["setup", "example.test", make_value()],
                               {"ACMEGW_HOOK_CONF": str(conf)})
    assert status == 2 and err.count("\n") == 1
    # www-data reads it as "others": the fix hands it the file through its group instead.
    assert f"run `chgrp www-data {conf} && chmod 640 {conf}`" in err and "s3cret" not in err


def test_root_www_data_640_is_how_www_data_gets_its_hook_conf(hook_program: Path,
                                                              shared: Path) -> None:
    # Root's file that www-data may read and not change: the settings are taken (the
    # hook goes on to the gateway, which is not there).
    conf = root_conf(shared, 0o640, "www-data")
    status, err = run_as_httpd(hook_program, ["setup", "example.test", make_value()],
                               {"ACMEGW_HOOK_CONF": str(conf)})
    assert status == 1 and "cannot reach https://127.0.0.1:9/" in err


def test_another_group_that_may_read_the_password_is_refused(hook_program: Path,
                                                             shared: Path) -> None:
    # www-data is also in adm (it may read logs, say): it can read the file, and so can
    # everyone else in adm.
    conf = root_conf(shared, 0o640, "adm")
    status, err = run_as_httpd(hook_program, ["setup", "example.test", make_value()],
                               {"ACMEGW_HOOK_CONF": str(conf)},
                               extra_groups=[grp.getgrnam("adm").gr_gid])
    assert status == 2
    assert err == (f"acmegw-hook: {conf} holds a password but group adm may read it (mode 640) "
                   f"— run `chgrp www-data {conf} && chmod 640 {conf}`\n")


def test_events_as_www_data_print_nothing(hook_program: Path) -> None:
    for args in (["renewed", "example.test"], ["installed", "example.test"],
                 ["generate_csr", "example.test", "/x/cert", "/x/key"]):
        assert run_as_httpd(hook_program, args, {}) == (0, "")
