"""A key in hook.conf that the hook does not read is a warning on stderr (mod_md logs it),
with the closest known name; the README's hook settings are all keys the hook reads."""

from __future__ import annotations

import re
from pathlib import Path

from hooks.acmegw_hook import CONF_KEYS
from tests.conftest import make_value
from tests.hooks.conftest import PASSWORDS, GatewayFactory, call, call_sync

REPO_ROOT = Path(__file__).resolve().parents[2]


def conf(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hook.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def test_a_misspelled_key_is_one_warning_line_and_the_setup_still_works(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    gw = await gateway()
    path = conf(tmp_path, f"ACMEGW_URL={gw.url}\nACMEGW_USER=alice\n"
                f"ACMEGW_PASSWORD='{PASSWORDS['alice']}'\nACMEGW_TIMEOUTT=20\n"
                "HTTPS_PROXY=http://192.0.2.1:3128\n")
    value = make_value()
    result = await call(["setup", "example.test", value], {"ACMEGW_HOOK_CONF": str(path)})
    assert result.status == 0, result
    assert result.stderr.splitlines() == [
        f"acmegw-hook: warning: unknown setting ACMEGW_TIMEOUTT in {path}: "
        "did you mean ACMEGW_TIMEOUT?",
        # Proxies come from the environment only, as curl reads them.
        f"acmegw-hook: warning: unknown setting HTTPS_PROXY in {path}: nothing reads it",
    ]
    assert gw.provider.values("_acme-challenge.example.test") == [value]


def test_the_warning_comes_before_the_error_it_explains(tmp_path: Path) -> None:
    path = conf(tmp_path, "ACMEGW_URL=https://gw.example.net/\nACMEGW_USR=alice\n"
                "ACMEGW_PASSWORD=secret\n")
    result = call_sync(["setup", "example.test", make_value()], {"ACMEGW_HOOK_CONF": str(path)})
    assert result.status == 2
    lines = result.stderr.splitlines()
    assert lines[0] == (f"acmegw-hook: warning: unknown setting ACMEGW_USR in {path}: "
                        "did you mean ACMEGW_USER?")
    assert lines[1].startswith("acmegw-hook: a password is set but ACMEGW_USER is not")


def test_events_stay_silent(tmp_path: Path) -> None:
    path = conf(tmp_path, "ACMEGW_URL=https://gw.example.net/\nACMEGW_TIMEOUTT=20\n")
    result = call_sync(["renewed", "example.test"], {"ACMEGW_HOOK_CONF": str(path)})
    assert (result.status, result.stdout, result.stderr) == (0, "", "")


def test_every_hook_setting_in_the_readme_is_a_key_the_hook_reads() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("**Settings** come from the environment and from `/etc/acmegw/hook.conf`")
    table = text[start:text.index("\n\n", text.index("| setting |", start))]
    rows = [line.split("|") for line in table.splitlines() if line.startswith("| `")]
    listed = {key for row in rows for cell in row[1:3]
              for key in re.findall(r"`([A-Z][A-Z0-9_]+)`", cell)}
    environment_only = {"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"}
    assert {"ACMEGW_URL", "API_URI", "ACMEGW_PASSWORD_FILE"} <= listed
    assert listed - environment_only <= CONF_KEYS, sorted(listed - environment_only - CONF_KEYS)
