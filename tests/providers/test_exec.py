"""The exec provider: the contract through the README's nsupdate script, and the program's world.

The contract suite runs the README's ``acmegw-nsupdate`` script (taken from the
README itself, so the documented script is the tested one) against a real BIND
(tests/servers/bind.py) with a TSIG key file; ``served`` asks that server. The
other tests run small shell scripts that report what they were given (argv,
environment, stdin, process group) or misbehave (fail, flood their output, hang,
leave helpers behind), and check on the real processes what became of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.settings import Settings
from providers.base import ProviderContext, ProviderError, ProviderTimeout
from providers.exec import LINE_CHARS, ExecProvider
from providers.registry import create_provider
from tests.conftest import make_value
from tests.providers.contract import ProviderContract, Served
from tests.servers.bind import BindServer, TsigKey, bind_primary  # noqa: F401
from tests.system import need_program

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "tok3n-Sekrit-value"
FILE_SECRET = "file-borne-s3cret"


def readme_script(marker: str) -> str:
    """The ``sh`` block that follows the ``<!-- marker: ... -->`` comment in the README."""
    text = README.read_text()
    match = re.search(rf"<!-- {re.escape(marker)}:[^>]*-->\s*```sh\n(.*?)```", text, re.S)
    assert match, f"no script marked {marker} in README.md"
    return match.group(1)


def script(directory: Path, body: str, name: str = "hook") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def build(values: dict[str, str], timeout: float = 20.0) -> ExecProvider:
    settings = Settings(values)
    provider = ExecProvider.from_settings(settings, ProviderContext(timeout=timeout))
    assert settings.problems == []
    return provider


def gone(pid: int) -> bool:
    """The process has ended: no /proc entry (reaped), or a zombie someone else must reap."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_until_gone(pids: list[int], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not all(gone(p) for p in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if not gone(p)]}"
        time.sleep(0.05)


def pids_in(path: Path, count: int, limit: float = 30.0) -> list[int]:
    """The *count* pids a script wrote to *path*, once it has written them."""
    deadline = time.monotonic() + limit
    while True:
        words = path.read_text().split() if path.exists() else []
        if len(words) >= count:
            return [int(w) for w in words[:count]]
        assert time.monotonic() < deadline, f"{path} has {words}"
        time.sleep(0.05)


# --- the contract, through the README's nsupdate script against BIND ---------


@pytest.fixture(scope="module")
def nsupdate_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_program("nsupdate", "bind9-dnsutils")
    return script(tmp_path_factory.mktemp("exec"), readme_script("exec-nsupdate").split("\n", 1)[1],
                  "acmegw-nsupdate")


def key_file(directory: Path, key: TsigKey) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{key.name}key"
    path.write_text(key.statement())
    return path


def nsupdate_provider(server: BindServer, command: Path, key: Path) -> ExecProvider:
    return build({
        "EXEC_COMMAND": str(command),
        "EXEC_ENV": "NSUPDATE_SERVER NSUPDATE_PORT NSUPDATE_KEY",
        "NSUPDATE_SERVER": server.host,
        "NSUPDATE_PORT": str(server.port),
        "NSUPDATE_KEY": str(key),
    })


@pytest.fixture
def provider(bind_primary: BindServer, nsupdate_script: Path,  # noqa: F811
             tmp_path: Path) -> ExecProvider:
    return nsupdate_provider(bind_primary, nsupdate_script, key_file(tmp_path, bind_primary.key))


@pytest.fixture
def twin_provider(bind_primary: BindServer, nsupdate_script: Path,  # noqa: F811
                  tmp_path: Path) -> ExecProvider:
    # Another gateway: its own provider, with its own copy of the key.
    return nsupdate_provider(bind_primary, nsupdate_script,
                             key_file(tmp_path.joinpath("twin"), bind_primary.key))


@pytest.fixture
def served(bind_primary: BindServer) -> Served:  # noqa: F811
    return bind_primary.query_txt


@pytest.fixture
def broken_provider(bind_primary: BindServer, nsupdate_script: Path,  # noqa: F811
                    tmp_path: Path) -> ExecProvider:
    wrong = TsigKey(bind_primary.key.name, "c2VjcmV0IGJ1dCB3cm9uZyBzZWNyZXQgMTIzNDU2Nzg=",
                    bind_primary.key.algorithm)
    return nsupdate_provider(bind_primary, nsupdate_script, key_file(tmp_path, wrong))


@pytest.mark.system
class TestExecContract(ProviderContract):
    pass


@pytest.mark.system
async def test_refusal_quotes_nsupdate(bind_primary: BindServer,  # noqa: F811
                                       nsupdate_script: Path, tmp_path: Path) -> None:
    provider = nsupdate_provider(bind_primary, nsupdate_script,
                                 key_file(tmp_path, bind_primary.key))
    # The key may change only the listed _acme-challenge names: BIND refuses this one.
    with pytest.raises(ProviderError) as info:
        await provider.add_txt("_acme-challenge.other.example.test", make_value())
    assert "exit status 2" in str(info.value)
    assert "update failed: REFUSED" in str(info.value)


# --- what the program gets ---------------------------------------------------

REPORTER = """\
out=$(dirname "$0")/report
printf '%s\\n' "$@" > "$out.argv"
env > "$out.env"
readlink /proc/self/fd/0 > "$out.stdin"
pwd > "$out.cwd"
ps -o pgid= -p $$ | tr -d ' ' > "$out.pgid"
echo $$ > "$out.pid"
"""


async def test_arguments_environment_and_stdin(tmp_path: Path) -> None:
    # A folder with a blank in its name: no shell splits the command.
    command = script(tmp_path / "my hooks", REPORTER)
    secret_file = tmp_path / "file-secret"
    secret_file.write_text(FILE_SECRET + "\n")
    provider = build({
        "EXEC_COMMAND": str(command),
        "EXEC_ENV": "API_TOKEN, DNS_ZONE HOME",
        "API_TOKEN": SECRET,
        "DNS_ZONE": "example.org",
        "HOME_FILE": str(secret_file),
        "HTTPS_PROXY": "http://proxy.example.net:3128",
        "DNSAPI_PASSWORD": "never passed on",
    })
    value = "-" + make_value()[1:]  # looks like an option: must arrive as an argument
    # The gateway's own stdin is a pipe here, which the program must not inherit.
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        await provider.add_txt("_acme-challenge.www.example.org", value)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    report = command.parent / "report"
    assert report.with_suffix(".argv").read_text().splitlines() == [
        "add", "_acme-challenge.www.example.org", value]
    env = dict(line.split("=", 1) for line in report.with_suffix(".env").read_text().splitlines())
    env.pop("PWD", None)  # set by the shell itself
    env.pop("SHLVL", None)
    env.pop("_", None)
    assert env == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "API_TOKEN": SECRET,
        "DNS_ZONE": "example.org",
        "HOME": FILE_SECRET,
        "HTTPS_PROXY": "http://proxy.example.net:3128",
        "https_proxy": "http://proxy.example.net:3128",
    }
    assert report.with_suffix(".stdin").read_text().strip() == "/dev/null"
    assert report.with_suffix(".cwd").read_text().strip() == "/"
    # A process group of its own (which is what a timeout kills).
    pgid = int(report.with_suffix(".pgid").read_text())
    assert pgid == int(report.with_suffix(".pid").read_text())
    assert pgid != os.getpgid(0)


async def test_failure_quotes_the_last_stderr_line_without_secrets(tmp_path: Path) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(FILE_SECRET)
    command = script(tmp_path, """\
echo "connecting with $API_TOKEN" >&2
echo "some progress on stdout"
printf 'denied: token=%s password=%s\\n\\n' "$API_TOKEN" "$DNS_PASSWORD" >&2
exit 3
""")
    provider = build({"EXEC_COMMAND": str(command), "EXEC_ENV": "API_TOKEN DNS_PASSWORD",
                      "API_TOKEN": SECRET, "DNS_PASSWORD_FILE": str(secret_file)})
    with pytest.raises(ProviderError) as info:
        await provider.remove_txt("_acme-challenge.example.org", make_value())
    text = str(info.value)
    assert text.startswith("exec: ")
    assert f"{command} remove _acme-challenge.example.org: exit status 3" in text
    assert text.endswith("denied: token=*** password=***")
    assert SECRET not in text and FILE_SECRET not in text
    assert "\n" not in text


async def test_stdout_is_quoted_when_stderr_is_silent(tmp_path: Path) -> None:
    command = script(tmp_path, "echo 'zone not found'\nkill -TERM $$\n")
    with pytest.raises(ProviderError) as info:
        await build({"EXEC_COMMAND": str(command)}).add_txt("_acme-challenge.example.org",
                                                              make_value())
    assert str(info.value).endswith("killed by SIGTERM: zone not found")


async def test_output_is_bounded(tmp_path: Path) -> None:
    command = script(tmp_path, """\
head -c 3000000 /dev/zero | tr '\\0' 'x'
head -c 3000000 /dev/zero | tr '\\0' 'y' >&2
echo >&2
head -c 5000 /dev/zero | tr '\\0' 'z' >&2
echo " the end" >&2
exit 1
""")
    with pytest.raises(ProviderError) as info:
        await build({"EXEC_COMMAND": str(command)}).add_txt("_acme-challenge.example.org",
                                                              make_value())
    line = str(info.value).rsplit(": ", 1)[1]
    # A line longer than what is kept is shown by its end.
    assert line.endswith("zzz the end")
    assert len(line) <= LINE_CHARS + 3


# --- time limits: the process group is killed and reaped ----------------------

HANGER = """\
sleep 300 &
echo $$ $! > "$(dirname "$0")/pids"
wait
"""


@pytest.fixture
def hanger(tmp_path: Path) -> Iterator[Path]:
    command = script(tmp_path, HANGER)
    yield command
    pids = command.parent / "pids"
    if pids.exists():  # whatever happened, leave nothing running
        for pid in pids.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)


async def test_timeout_kills_and_reaps_the_group(hanger: Path) -> None:
    provider = build({"EXEC_COMMAND": str(hanger)}, timeout=1.0)
    with pytest.raises(ProviderTimeout) as info:
        await provider.add_txt("_acme-challenge.example.org", make_value())
    assert "did not finish within 1s" in str(info.value)
    leader, helper = pids_in(hanger.parent / "pids", 2)
    # The program itself is reaped (no zombie left), and its background helper is dead.
    assert not Path(f"/proc/{leader}").exists()
    wait_until_gone([helper])


async def test_a_call_the_gateway_gives_up_on_is_killed_too(hanger: Path) -> None:
    provider = build({"EXEC_COMMAND": str(hanger)}, timeout=60.0)
    call = asyncio.ensure_future(provider.add_txt("_acme-challenge.example.org", make_value()))
    leader, helper = await asyncio.to_thread(pids_in, hanger.parent / "pids", 2)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not Path(f"/proc/{leader}").exists()
    wait_until_gone([helper])


async def test_a_helper_left_behind_cannot_hold_the_call(tmp_path: Path) -> None:
    # The helper keeps stderr open after the program exits 0: reading to the end
    # of stderr would wait for it, so the gateway ends it instead.
    command = script(tmp_path, 'sleep 300 &\necho $! > "$(dirname "$0")/pids"\nexit 0\n')
    provider = build({"EXEC_COMMAND": str(command)}, timeout=60.0)
    try:
        await asyncio.wait_for(provider.add_txt("_acme-challenge.example.org", make_value()), 30)
    finally:
        (helper,) = pids_in(tmp_path / "pids", 1)
    wait_until_gone([helper])


# --- settings ----------------------------------------------------------------


def test_every_settings_problem_is_listed(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("#!/bin/sh\n")
    for command, problem in (
        ("hooks/dns", "is not an absolute path"),
        (str(tmp_path / "missing"), "no such file"),
        (str(not_executable), "is not executable"),
    ):
        settings = Settings({"EXEC_COMMAND": command, "EXEC_ENV": "GOOD, 9BAD, UNSET, BOTH",
                             "GOOD": "1", "BOTH": SECRET, "BOTH_FILE": str(not_executable)})
        ExecProvider.from_settings(settings, ProviderContext())
        text = "\n".join(settings.problems)
        assert problem in text
        assert "'9BAD' is not a variable name" in text
        assert "neither UNSET nor UNSET_FILE is set" in text
        assert "BOTH and BOTH_FILE are both set" in text
        assert len(settings.problems) == 4
        assert SECRET not in text
    settings = Settings({})
    ExecProvider.from_settings(settings, ProviderContext())
    assert settings.problems == [
        "EXEC_COMMAND is required: the absolute path of the program to run"]


async def test_loads_through_the_registry(tmp_path: Path) -> None:
    command = script(tmp_path, 'echo "$1 $2 $3" >> "$(dirname "$0")/calls"\n')
    settings = Settings({"PROVIDER": "exec", "EXEC_COMMAND": str(command)})
    provider = create_provider(settings, ProviderContext())
    assert settings.problems == []
    assert isinstance(provider, ExecProvider)
    value = make_value()
    await provider.add_txt("_acme-challenge.example.org", value)
    await provider.remove_txt("_acme-challenge.example.org", value)
    assert (tmp_path / "calls").read_text().splitlines() == [
        f"add _acme-challenge.example.org {value}", f"remove _acme-challenge.example.org {value}"]
