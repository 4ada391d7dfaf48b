"""What ``--check-config`` and start-up find beyond the settings' own forms (gateway/checks.py).

Unknown keys in the dotenv file (misspellings, with the closest known name), a
state directory the gateway's user cannot write, users whose domains lie outside
``DNSAPI_DOMAINS``, a password file every user may read. The process tests run
``python -m gateway`` as an administrator does (tests.gateway.procs); the README
test holds the configuration reference and the code to the same set of keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.checks import state_dir_problem, user_name, users_outside
from gateway.config import build, gather
from lib.passwd import PasswordFile, UserEntry
from providers.base import ProviderContext
from providers.registry import SETTING_PREFIXES, create_provider, declared_settings
from tests.faults.conftest import remount, small_tmpfs
from tests.gateway.procs import REPO_ROOT, run_gateway, running_gateway
from tests.system import free_port, unavailable


def write_dotenv(folder: Path, text: str, **more: str) -> Path:
    dotenv = folder / "gateway.env"
    lines = [text.strip()] + [f"{key}={value}" for key, value in more.items()]
    dotenv.write_text("\n".join(lines) + "\n")
    dotenv.chmod(0o600)  # it may hold secrets: the gateway wants it private
    return dotenv


BASE_DOTENV = """
PROVIDER=memory
DNSAPI_DOMAINS=example.test
ALLOWED_HOSTS=127.0.0.1
"""


def check(folder: Path, dotenv: Path, **env: str) -> subprocess.CompletedProcess[str]:
    env.setdefault("STATE_DIR", str(folder / "state"))
    env.setdefault("LISTEN", f"127.0.0.1:{free_port()}")
    return run_gateway(folder, env, ["-e", str(dotenv), "--check-config"], timeout=30)


# --- unknown settings ---------------------------------------------------------------------


def test_a_misspelled_setting_is_a_problem_under_check_config(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, BASE_DOTENV, BUILTIN_NSS="gw.example.net")
    result = check(tmp_path, dotenv)
    assert result.returncode == 2, result
    assert f"unknown setting BUILTIN_NSS in {dotenv}: did you mean BUILTIN_NS?" in result.stderr
    assert "configuration OK" not in result.stdout


def test_a_misspelled_required_setting_is_named_next_to_what_is_missing(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, "PROVIDER=memory\nALLOWED_HOSTS=127.0.0.1\n"
                          "dnsapi_domain=example.test")
    result = check(tmp_path, dotenv)
    assert result.returncode == 2, result
    assert "DNSAPI_DOMAINS is required" in result.stderr
    assert "unknown setting DNSAPI_DOMAIN in" in result.stderr
    assert "did you mean DNSAPI_DOMAINS?" in result.stderr


def test_a_key_nothing_resembles_is_unknown_without_a_guess(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, BASE_DOTENV, COLOUR_SCHEME="dark")
    result = check(tmp_path, dotenv)
    assert result.returncode == 2, result
    assert f"unknown setting COLOUR_SCHEME in {dotenv}: nothing reads it" in result.stderr


def test_unknown_settings_are_a_warning_at_start_up(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, BASE_DOTENV, BUILTIN_NSS="gw.example.net")
    env = {"STATE_DIR": str(tmp_path / "state"), "LISTEN": f"127.0.0.1:{free_port()}"}
    with running_gateway(tmp_path, env, ["-e", str(dotenv)]) as gw:
        pass
    assert re.search(
        r"WARNING acmegw\.server: unknown setting BUILTIN_NSS in \S+: did you mean BUILTIN_NS\?",
        gw.stderr,
    ), gw.stderr


def test_settings_of_providers_not_selected_are_known(tmp_path: Path) -> None:
    # Each of these is read by a provider other than the one selected (memory), by the
    # proxy support of the REST providers, or by dns-lexicon (its own LEXICON_ prefix).
    dotenv = write_dotenv(
        tmp_path, BASE_DOTENV,
        BUILTIN_NS="gw.example.net", RFC2136_TSIG_SECRET_FILE="/nonexistent",
        CLOUDFLARE_API_TOKEN="x", POWERDNS_SERVER_ID="localhost", DNSAPI_PASSWORD="x",
        ALL_PROXY="http://192.0.2.1:3128", LEXICON_CLOUDFLARE_AUTH_TOKEN="x",
    )
    result = check(tmp_path, dotenv)
    assert result.returncode == 0, result
    assert "unknown" not in result.stderr


def test_the_environment_is_not_checked(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, BASE_DOTENV)
    result = check(tmp_path, dotenv, BUILTIN_NSS="x", EDITOR="vi")
    assert result.returncode == 0, result
    assert "unknown" not in result.stderr


def readme_section(title: str) -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def table_column(section: str, column: int) -> list[str]:
    """The setting names written as `KEY` in one column of the section's tables."""
    keys = []
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > column + 1 and "---" not in line:
            keys += re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[column + 1])
    return keys


def readme_settings() -> set[str]:
    """Every key the README's configuration reference, its example configuration and
    the providers' table name."""
    reference = readme_section("Configuration reference")
    keys = set(table_column(reference, 0))
    example = reference[reference.index("```sh"):]
    keys |= set(re.findall(r"^([A-Z][A-Z0-9_]+) =", example, re.MULTILINE))
    keys |= set(table_column(readme_section("Providers"), 1))
    return keys


def test_every_setting_the_readme_lists_is_known_to_the_code(tmp_path: Path) -> None:
    listed = readme_settings()
    assert {"LISTEN", "DNSAPI_DOMAINS", "BUILTIN_NS", "RFC2136_TSIG_SECRET_FILE"} <= listed
    # What the code asks for while it builds a configuration, and what providers declare.
    env = {"PROVIDER": "memory", "DNSAPI_DOMAINS": "example.test", "ALLOWED_HOSTS": "127.0.0.1",
           "STATE_DIR": str(tmp_path / "state")}
    settings, args, config_dir = gather([], env)
    config = build(settings, args, config_dir)
    create_provider(settings, ProviderContext(config.managed_domains))
    assert not settings.problems
    known = settings.asked | declared_settings()
    unknown = {k for k in listed if k not in known and not k.startswith(SETTING_PREFIXES)}
    assert not unknown, f"the README lists settings that nothing reads: {sorted(unknown)}"


def test_every_setting_the_gateway_reads_has_a_row_in_the_reference(tmp_path: Path) -> None:
    """The other way round: nothing the gateway itself reads is missing from the table.
    Providers' settings have their own sections; a secret's ``_FILE`` form is said once."""
    reference = readme_section("Configuration reference")
    rows = set(table_column(reference, 0))
    env = {"PROVIDER": "memory", "DNSAPI_DOMAINS": "example.test", "ALLOWED_HOSTS": "127.0.0.1",
           "STATE_DIR": str(tmp_path / "state")}
    settings, args, config_dir = gather([], env)
    build(settings, args, config_dir)
    assert not settings.problems
    missing = {
        key for key in settings.asked - declared_settings()
        if key not in rows and not (key.endswith("_FILE") and key.removesuffix("_FILE") in rows)
    }
    assert not missing, f"the configuration reference has no row for {sorted(missing)}"


# --- the state directory ------------------------------------------------------------------


def test_check_config_reports_a_state_dir_the_gateway_cannot_write(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, BASE_DOTENV)
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:  # root writes anywhere but on a read-only file system
            mnt = stack.enter_context(small_tmpfs(tmp_path / "mnt"))
            state = mnt / "state"
            state.mkdir()
            remount(mnt, "ro")
            stack.callback(remount, mnt, "rw")
            why = "Read-only file system"
        else:
            state = tmp_path / "state"
            state.mkdir(mode=0o500)
            stack.callback(state.chmod, 0o700)
            why = "Permission denied"
        result = check(tmp_path, dotenv, STATE_DIR=str(state))
    assert result.returncode == 2, result
    assert f"STATE_DIR: {user_name()} cannot write in {state}: {why}" in result.stderr
    assert "run --check-config as the user the gateway runs as" in result.stderr
    assert "configuration OK" not in result.stdout


def as_user(name: str, work: Callable[[], str | None]) -> str | None:
    """*work*'s result, computed in a child process that runs as user *name*."""
    entry = pwd.getpwnam(name)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, work, report, leave without cleanup
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.write(write, json.dumps(work()).encode())
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child failed"
    result = json.loads(data)
    assert result is None or isinstance(result, str)
    return result


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp_path sits in a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="acmegw-checks-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_state_dir_is_checked_as_the_user_running_the_check(open_dir: Path) -> None:
    if os.geteuid() != 0:
        unavailable("running a check as another user needs root")
    state = open_dir / "state"
    state.mkdir(mode=0o755)
    problem = as_user("nobody", lambda: state_dir_problem(state))
    assert problem is not None
    assert problem.startswith(f"STATE_DIR: nobody cannot write in {state}: Permission denied")
    assert f"({state} is not writable by this user)" in problem
    assert state_dir_problem(state) is None  # root may
    os.chown(state, pwd.getpwnam("nobody").pw_uid, -1)
    assert as_user("nobody", lambda: state_dir_problem(state)) is None
    assert list(state.iterdir()) == []  # every probe was removed


def test_state_dir_probe_creates_writes_and_removes(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "b" / "state"
    assert state_dir_problem(missing) is None
    assert not (tmp_path / "a").exists()  # made as the server would, then removed again
    existing = tmp_path / "there"
    existing.mkdir()
    (existing / "journal.sqlite3").write_text("kept")
    assert state_dir_problem(existing) is None
    assert [p.name for p in existing.iterdir()] == ["journal.sqlite3"]
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    problem = state_dir_problem(blocked / "state")
    assert problem is not None and "cannot write in" in problem and "Not a directory" in problem


# --- users and the password file ----------------------------------------------------------


def test_users_outside_the_managed_domains_are_named() -> None:
    users = [
        UserEntry("alice", "x"),
        UserEntry("bob", "x", ("shop.example.test", "example.net")),
        UserEntry("carol", "x", ("test",)),  # holds example.test: fine
    ]
    assert users_outside(users, ("example.test",)) == [
        "user bob: domain example.net lies outside DNSAPI_DOMAINS (example.test); "
        "that user can change no name there"
    ]


def test_check_config_warns_of_users_outside_and_refuses_a_password_file_others_read(
    tmp_path: Path,
) -> None:
    passwd = tmp_path / "acmepasswd"
    users = PasswordFile(passwd)
    users.set_user("alice", "correct horse", domains=["example.test"])
    users.set_user("bob", "battery staple", domains=["example.net"])
    passwd.chmod(0o644)
    dotenv = write_dotenv(tmp_path, BASE_DOTENV, BASIC_AUTH="sufficient", PASSWD_FILE=str(passwd))
    result = check(tmp_path, dotenv)
    assert result.returncode == 2, result  # a readable password file is a problem
    assert f"PASSWD_FILE: {passwd} holds secrets, but every user may read it" in result.stderr
    fix = "chmod 640" if os.geteuid() == 0 else "chmod 600"  # root's file may be group-read
    assert "(mode 644, owner " in result.stderr and f"`{fix} {passwd}`" in result.stderr

    passwd.chmod(0o600)
    result = check(tmp_path, dotenv)
    assert result.returncode == 0, result  # warnings, not problems
    assert "configuration OK" in result.stdout
    assert "warning: user bob: domain example.net lies outside DNSAPI_DOMAINS" in result.stderr
    assert "alice" not in result.stderr
    assert "PASSWD_FILE" not in result.stderr


# --- INSECURE_HTTP=1 (a TLS proxy in front) with ALLOWED_HOSTS but no ALLOWED_PROXIES -------

PROXY_BLIND = ("warning: INSECURE_HTTP=1 says a TLS-terminating proxy is in front, but "
               "ALLOWED_PROXIES is empty: every request then comes from the proxy's address, "
               "so ALLOWED_HOSTS (10.0.0.5/32) lets in everyone behind the proxy, or no one — "
               "set ALLOWED_PROXIES to the proxy's address (and PROXY_XFF to the header it "
               "sets, X-Forwarded-For by default)")


def test_insecure_http_without_allowed_proxies_is_a_warning(tmp_path: Path) -> None:
    dotenv = write_dotenv(tmp_path, "PROVIDER=memory\nDNSAPI_DOMAINS=example.test\n",
                          ALLOWED_HOSTS="10.0.0.5", INSECURE_HTTP="1")
    result = check(tmp_path, dotenv)
    assert result.returncode == 0, result  # tunnels (ssh -R, stunnel) use it rightly
    assert "configuration OK" in result.stdout
    assert f"acmegw-server: {PROXY_BLIND}" in result.stderr.splitlines(), result.stderr
    env = {"STATE_DIR": str(tmp_path / "state"), "LISTEN": f"127.0.0.1:{free_port()}"}
    with running_gateway(tmp_path, env, ["-e", str(dotenv)]) as gw:
        pass
    assert f"WARNING acmegw.server: {PROXY_BLIND.removeprefix('warning: ')}" in gw.stderr, \
        gw.stderr


@pytest.mark.parametrize("more", [
    {"ALLOWED_PROXIES": "10.0.0.1"},  # the proxy is known: the client's address is used
    {"INSECURE_HTTP": "0"},  # no proxy said to be in front
    {"ALLOWED_HOSTS": "", "BASIC_AUTH": "required"},  # passwords only: no host to mistake
])
def test_no_proxy_warning_when_addresses_mean_what_they_say(
    tmp_path: Path, more: dict[str, str],
) -> None:
    passwd = tmp_path / "acmepasswd"
    PasswordFile(passwd).set_user("alice", "correct horse", domains=["example.test"])
    settings = {"ALLOWED_HOSTS": "10.0.0.5", "INSECURE_HTTP": "1", **more}
    dotenv = write_dotenv(tmp_path, "PROVIDER=memory\nDNSAPI_DOMAINS=example.test\n",
                          PASSWD_FILE=str(passwd), **settings)
    result = check(tmp_path, dotenv)
    assert result.returncode == 0, result
    assert "ALLOWED_PROXIES is empty" not in result.stderr
