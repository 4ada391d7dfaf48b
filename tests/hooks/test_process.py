"""The hook as the clients really run it: a separate process, with what mod_md gives it.

mod_md starts the hook with stdin closed, no PATH search and its own environment,
and reads stderr until EOF: a child process that kept stderr open would block it.
These tests run ``python -m hooks.acmegw_hook`` (and ``python -m hooks``) that way
against an in-process gateway.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.hooks.conftest import CLOSE_ALL, PASSWORDS, GatewayFactory, bare_env, spawn

pytestmark = pytest.mark.usefixtures("no_etc_conf")


@pytest.mark.parametrize("module", ["hooks.acmegw_hook", "hooks"])
async def test_help_from_both_module_entry_points(module: str) -> None:
    status, out, err = await spawn(["-m", module, "--help"], bare_env())
    assert (status, err) == (0, "")
    assert "setup DOMAIN VALUE" in out and "CERTBOT_DOMAIN" in out


async def test_setup_with_stdin_closed_and_no_path(gateway: GatewayFactory) -> None:
    gw = await gateway()
    value = make_value()
    env = bare_env(ACMEGW_URL=gw.url, ACMEGW_USER="alice", ACMEGW_PASSWORD=PASSWORDS["alice"])
    status, out, err = await spawn(["-m", "hooks.acmegw_hook", "setup", "example.test", value],
                                   env)
    assert (status, out, err) == (0, "", "")
    assert gw.provider.values("_acme-challenge.example.test") == [value]


async def test_a_failure_is_one_line_on_stderr_and_the_password_is_nowhere(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await gateway()
    secret = tmp_path / "pw"
    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    env = bare_env(ACMEGW_URL=gw.url, ACMEGW_USER="alice", ACMEGW_PASSWORD_FILE=str(secret),
                   ACMEGW_LOG=str(tmp_path / "hook.log"))
    status, out, err = await spawn(["-m", "hooks.acmegw_hook", "setup", "example.test",
                                    make_value()], env)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("acmegw-hook: setup example.test: ")
    assert "not-the-password" not in err + (tmp_path / "hook.log").read_text()


async def test_all_standard_descriptors_closed(gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = await gateway()
    log = tmp_path / "hook.log"
    env = bare_env(ACMEGW_URL=gw.url, ACMEGW_USER="alice", ACMEGW_PASSWORD=PASSWORDS["alice"],
                   ACMEGW_LOG=str(log))
    ok = await spawn(["-m", "hooks.acmegw_hook", "setup", "example.test", make_value()], env,
                     CLOSE_ALL)
    assert ok == (0, "", "")
    refused = await spawn(["-m", "hooks.acmegw_hook", "setup", "example.net", make_value()],
                          env, CLOSE_ALL)
    assert refused[0] == 1
    text = log.read_text()
    assert "Traceback" not in text and "setup example.net: gateway answered 403" in text


def test_an_internal_error_is_still_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from hooks import acmegw_hook

    def broken(*args: object) -> None:
        raise RuntimeError("a bug\nover two lines")

    monkeypatch.setattr(acmegw_hook, "perform", broken)
    monkeypatch.setenv("ACMEGW_HOOK_CONF", "")
    monkeypatch.setenv("ACMEGW_URL", "http://127.0.0.1:9/")
    assert acmegw_hook.main(["setup", "example.test", make_value()]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("acmegw-hook: internal error: RuntimeError: a bug over two lines")
