"""The installed ``acmegw-hook`` run as ``www-data``, the way mod_md runs it, without Apache.

What an administrator gets wrong first is file ownership and modes: these run the
hook from the venv of Debian's python3 as the httpd user, with stdin closed and a
bare environment, and check the one line it prints.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.e2e_hook.rig import httpd_ids

pytestmark = pytest.mark.system


def run_as_httpd(hook: Path, args: list[str], env: dict[str, str]) -> tuple[int, str]:
    uid, gid = httpd_ids()
    done = subprocess.run(
        ["/bin/sh", "-c", 'exec "$0" "$@" <&-', str(hook), *args],
        env=env, user=uid, group=gid, extra_groups=[], capture_output=True, text=True,
        timeout=30, check=False, cwd="/",
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


def test_a_readable_hook_conf_with_a_password_is_refused(hook_program: Path,
                                                        shared: Path) -> None:
    conf = shared / "hook.conf"
    conf.write_text("ACMEGW_URL=https://127.0.0.1:9/\nACMEGW_USER=u\nACMEGW_PASSWORD=s3cret\n")
    conf.chmod(0o644)
    status, err = run_as_httpd(hook_program, ["setup", "example.test", make_value()],
                               {"ACMEGW_HOOK_CONF": str(conf)})
    assert status == 2 and err.count("\n") == 1
    assert f"run `chmod 600 {conf}`" in err and "s3cret" not in err


def test_events_as_www_data_print_nothing(hook_program: Path) -> None:
    for args in (["renewed", "example.test"], ["installed", "example.test"],
                 ["generate_csr", "example.test", "/x/cert", "/x/key"]):
        assert run_as_httpd(hook_program, args, {}) == (0, "")
