"""Attacks on the hook (issue 12), each replayed against the hook as a process of its own.

mod_md logs every line the hook prints, runs it with no time limit and hands it the
environment and files an administrator set up; these tests play the attacker (or the
confused administrator) on the wire and in the file system, and check what reaches
the proxy, the log, stderr and the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.hooks.conftest import (
    CLOSE_STDIN,
    PASSWORDS,
    PROXIED_NAME,
    GatewayFactory,
    RecordingProxy,
    bare_env,
    one_line,
    spawn,
)
from tests.system import need_program, unavailable

pytestmark = pytest.mark.usefixtures("no_etc_conf")


async def run_hook(*args: str, timeout: float = 30.0, **settings: str) -> tuple[int, str]:
    """The hook as mod_md runs it; its exit status and stderr (stdout must stay empty)."""
    status, out, err = await spawn(["-m", "hooks", *args], bare_env(**settings),
                                   timeout=timeout)
    assert out == ""
    return status, err


def setup_args() -> tuple[str, str, str]:
    return ("setup", "example.test", make_value())


# -- item 12: credentials in a URL are never printed ----------------------------------


@pytest.mark.parametrize("url", [
    "https://alice:Pw-1X9q@gw.example.net/",
    "https://alice:Pw-1X9q@gw.example.net:99999/",  # a bad port, shown with the URL
    "https://alice:Pw-1X9q@gw.example.net:x/",
    "https://alice:Pw-1X9q @gw.example.net/",  # a space
    "https://alice:Pw-1X9q@/",  # no host
    "https://alice:Pw-1X9q@[::1/",
    "ftp://alice:Pw-1X9q@gw.example.net/",  # not http
    "alice:Pw-1X9q@gw.example.net",  # no scheme
    "https://alice:Pw-1X9q/x@gw.example.net/",  # a "/" in the password ends the authority
    "https://alice:Pw-1X9q#x@gw.example.net/",
    "https://Pw-1X9q@gw.example.net/",  # a token as the user
])
async def test_a_url_with_credentials_is_refused_without_showing_them(
    url: str, tmp_path: Path,
) -> None:
    log = tmp_path / "hook.log"
    status, err = await run_hook(*setup_args(), ACMEGW_URL=url, ACMEGW_LOG=str(log))
    assert status == 2
    line = one_line(err)
    assert "Pw-1X9q" not in line
    assert "ACMEGW_URL holds a user name or password" in line
    assert "the password in the file named by ACMEGW_PASSWORD_FILE" in line
    assert not log.exists() or "Pw-1X9q" not in log.read_text()


# -- item 7: a password never passes a proxy in plaintext ---------------------------


@pytest.mark.parametrize("variable", ["http_proxy", "HTTP_PROXY", "all_proxy"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_loopback_gateway_is_never_reached_through_a_proxy(
    gateway: GatewayFactory, recording_proxy: RecordingProxy, variable: str, host: str,
) -> None:
    gw = await gateway()
    url = gw.url.replace("127.0.0.1", host)
    value = make_value()
    status, err = await run_hook("setup", "example.test", value, ACMEGW_URL=url,
                                 ACMEGW_USER="alice", ACMEGW_PASSWORD=PASSWORDS["alice"],
                                 **{variable: recording_proxy.url})
    assert (status, err) == (0, "")
    assert recording_proxy.connections == 0, recording_proxy.requests
    assert gw.provider.values("_acme-challenge.example.test") == [value]


async def test_plain_http_with_a_password_is_not_handed_to_a_proxy(
    recording_proxy: RecordingProxy,
) -> None:
    # ACMEGW_INSECURE_HTTP=1 says the path to the gateway is protected; the proxy is not.
    status, err = await run_hook(*setup_args(), ACMEGW_URL="http://gw.example.test/",
                                 ACMEGW_INSECURE_HTTP="1", ACMEGW_USER="alice",
                                 ACMEGW_PASSWORD="Pw-1X9q", HTTP_PROXY=recording_proxy.url)
    assert status == 2
    line = one_line(err)
    assert "would hand the password to the proxy" in line and "NO_PROXY" in line
    assert "Pw-1X9q" not in line
    assert recording_proxy.connections == 0, recording_proxy.requests


async def test_localhost_is_loopback_whatever_the_hosts_file_says(
    gateway: GatewayFactory, own_file: Callable[[str, str], tuple[list[str], str]],
) -> None:
    # Plain http with a password is allowed to localhost: a hosts file (or a resolver's
    # search domain) must not point it elsewhere. Here it names an address off this host.
    gw = await gateway()
    wrapper, shell = own_file("/etc/hosts", "192.0.2.1 localhost\n")
    value = make_value()
    env = bare_env(ACMEGW_URL=gw.url.replace("127.0.0.1", "localhost"), ACMEGW_USER="alice",
                   ACMEGW_PASSWORD=PASSWORDS["alice"], ACMEGW_TIMEOUT="5")
    status, out, err = await spawn(["-m", "hooks", "setup", "example.test", value], env,
                                   shell=shell, wrapper=wrapper, timeout=30)
    assert (status, out, err) == (0, "", "")
    assert gw.provider.values("_acme-challenge.example.test") == [value]


# -- item 11: ACMEGW_TIMEOUT bounds the whole run -------------------------------------


class Dripper:
    """A TCP server on loopback that reads a request head, then writes *answer* one byte
    every *interval* seconds (after it, *forever* over and over); ``sent`` counts the
    bytes written. ``answer`` may use ``{value}``, filled from the request's JSON body."""

    def __init__(self, answer: bytes, interval: float, forever: bytes = b"") -> None:
        self.answer, self.interval, self.forever = answer, interval, forever
        self.sent = 0
        self.heads: list[bytes] = []
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Dripper:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._stopped = True  # each writer stops after its next byte
        await asyncio.gather(*self._tasks)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            answer = self.answer
            if b"{value}" in answer:
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                value = json.loads(await reader.readexactly(length))["challenge_content"]
                answer = answer.replace(b"{value}", value.encode())
            while not self._stopped:
                for byte in answer:
                    if self._stopped:
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    self.sent += 1
                    await asyncio.sleep(self.interval)
                if not self.forever:
                    break
                answer = self.forever
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def dripped_201() -> bytes:
    body = b'{"fqdn": "_acme-challenge.example.test", "value": "{value}"}'
    return b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n" \
           b"Content-Length: %d\r\n\r\n%s" % (len(body) - len(b"{value}") + 43, body)


async def test_a_201_dripped_byte_by_byte_does_not_outlast_the_timeout() -> None:
    # The case: one byte every 0.5 s kept the hook 69 s, and then it exited 0.
    async with Dripper(dripped_201(), 0.5) as server:
        status, err = await run_hook(*setup_args(), ACMEGW_TIMEOUT="1",
                                     ACMEGW_URL=f"http://127.0.0.1:{server.port}/")
    assert status == 1
    line = one_line(err)
    assert "no answer from" in line and "(ACMEGW_TIMEOUT=1s)" in line, line
    assert len(server.heads) == 1 and server.sent < len(dripped_201())


async def test_a_header_that_never_ends_does_not_outlast_the_timeout() -> None:
    async with Dripper(b"HTTP/1.1 201 Created\r\nX-Drip: ", 0.1, forever=b"a") as server:
        status, err = await run_hook(*setup_args(), ACMEGW_TIMEOUT="1",
                                     ACMEGW_URL=f"http://127.0.0.1:{server.port}/")
    assert status == 1
    assert "(ACMEGW_TIMEOUT=1s)" in one_line(err)


async def test_endless_interim_answers_are_not_http() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    async with Dripper(interim, 0.0, forever=interim) as server:
        status, err = await run_hook(*setup_args(), ACMEGW_TIMEOUT="5",
                                     ACMEGW_URL=f"http://127.0.0.1:{server.port}/")
    assert status == 1
    line = one_line(err)
    assert "did not answer in HTTP (more than 5 interim (1xx) answers)" in line, line
    assert len(server.heads) == 1  # not tried again


async def test_a_proxy_dripping_its_connect_answer_does_not_outlast_the_timeout() -> None:
    async with Dripper(b"HTTP/1.1 200 Connection established\r\nX-Drip: ", 0.1,
                       forever=b"a") as proxy:
        status, err = await run_hook(*setup_args(), ACMEGW_TIMEOUT="1",
                                     ACMEGW_URL=f"https://{PROXIED_NAME}/",
                                     HTTPS_PROXY=f"http://127.0.0.1:{proxy.port}")
    assert status == 1
    line = one_line(err)
    assert "connecting timed out" in line and "(ACMEGW_TIMEOUT=1s)" in line, line
    assert proxy.heads[0].startswith(f"CONNECT {PROXIED_NAME}:443 ".encode())


@pytest.fixture
def own_file(tmp_path: Path) -> Callable[[str, str], tuple[list[str], str]]:
    """``own_file(path, text)``: a wrapper command and a shell line that run the hook in
    a mount namespace of its own where *path* (such as /etc/resolv.conf) holds *text*."""
    unshare = need_program("unshare", "util-linux")
    mount = need_program("mount", "mount")

    def make(path: str, text: str) -> tuple[list[str], str]:
        replacement = tmp_path / Path(path).name
        replacement.write_text(text)
        probe = subprocess.run([unshare, "-m", mount, "--bind", str(replacement), path],
                               capture_output=True, text=True, check=False)
        if probe.returncode != 0:
            unavailable(f"unshare -m with a bind mount is not permitted here: {probe.stderr}")
        return [unshare, "-m"], f'{mount} --bind {replacement} {path} && exec "$0" "$@" <&-'

    return make


@pytest.fixture
def silent_resolver(own_file: Callable[[str, str], tuple[list[str], str]],
                    ) -> Iterator[tuple[list[str], str]]:
    """The hook where /etc/resolv.conf names a nameserver on loopback that never answers
    (with long timeouts and retries, as a resolver may be configured)."""
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.53"
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((address, 53))  # bound, never read: queries just wait
    try:
        yield own_file("/etc/resolv.conf",
                       f"nameserver {address}\noptions timeout:30 attempts:5\n")
    finally:
        silent.close()


async def test_a_resolver_that_never_answers_does_not_outlast_the_timeout(
    silent_resolver: tuple[list[str], str],
) -> None:
    # getaddrinfo has no timeout: with this resolv.conf it would wait 30 s x 5 attempts.
    wrapper, shell = silent_resolver
    status, out, err = await spawn(
        ["-m", "hooks", *setup_args()], bare_env(ACMEGW_TIMEOUT="1",
                                                 ACMEGW_URL="https://gw.acmegw.test/"),
        shell=shell, wrapper=wrapper, timeout=30)
    assert (status, out) == (1, "")
    line = one_line(err)
    assert "resolving gw.acmegw.test took longer than the time left" in line, line
    assert "(ACMEGW_TIMEOUT=1s)" in line


async def test_a_log_that_is_a_fifo_nobody_reads_does_not_block(
    gateway: GatewayFactory, tmp_path: Path,
) -> None:
    gw = await gateway()
    fifo = tmp_path / "hook.log"
    os.mkfifo(fifo)
    status, err = await run_hook(*setup_args(), ACMEGW_URL=gw.url, ACMEGW_USER="alice",
                                 ACMEGW_PASSWORD=PASSWORDS["alice"], ACMEGW_LOG=str(fifo))
    assert status == 0
    assert one_line(err).startswith(f"acmegw-hook: cannot write the log {fifo}: ")


# -- item 13: files others may change or read ------------------------------------------
#
# The tests run as root, so the hook does too: root and its group (root) are the hook's
# own, and "someone else" is a user or group id that has no entry (4242). The usual
# mod_md setup (root:www-data 640, the hook as www-data) is run for real in
# tests/e2e_hook/test_installed_hook.py.

SOMEONE = 4242


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("giving files to other users takes root")


def write(path: Path, text: str, mode: int, owner: tuple[int, int] = (-1, -1)) -> Path:
    path.write_text(text)
    os.chown(path, *owner)
    path.chmod(mode)
    return path


def hook_conf(directory: Path, url: str, mode: int = 0o600, **settings: str) -> Path:
    lines = [f"ACMEGW_URL={url}", "ACMEGW_USER=alice",
             f"ACMEGW_PASSWORD='{PASSWORDS['alice']}'",
             *(f"{key}={value}" for key, value in settings.items())]
    directory.mkdir(parents=True, exist_ok=True)
    return write(directory / "hook.conf", "\n".join(lines) + "\n", mode)


async def test_a_hook_conf_others_may_write_is_refused(
    gateway: GatewayFactory, recording_proxy: RecordingProxy, tmp_path: Path,
) -> None:
    # The case: mode 602, and an appended ACMEGW_URL took the password elsewhere.
    gw = await gateway()
    conf = hook_conf(tmp_path / "etc", gw.url, 0o602)
    with conf.open("a") as attacker:
        attacker.write(f"ACMEGW_URL={recording_proxy.url}/\n")
    status, err = await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(conf))
    assert status == 2
    assert one_line(err) == (f"acmegw-hook: {conf} may be changed by others (mode 602) — run "
                             f"`chmod 600 {conf}`")
    assert recording_proxy.connections == 0


@pytest.mark.parametrize(("mode", "who", "fixed"), [
    (0o620, "its group", "600"), (0o666, "its group and others", "644"),
])
async def test_a_hook_conf_its_group_may_write_is_refused(
    tmp_path: Path, mode: int, who: str, fixed: str,
) -> None:
    conf = write(tmp_path / "hook.conf", "ACMEGW_URL=https://gw.example.net/\n", mode)
    status, err = await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(conf))
    assert status == 2
    assert f"{conf} may be changed by {who} (mode {mode:o}) — run `chmod {fixed} {conf}`" \
        in one_line(err)


async def test_a_hook_conf_someone_else_owns_is_refused(tmp_path: Path) -> None:
    need_root()
    conf = hook_conf(tmp_path, "https://gw.example.net/")
    os.chown(conf, SOMEONE, -1)
    status, err = await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(conf))
    assert status == 2
    assert one_line(err) == (f"acmegw-hook: {conf} belongs to uid {SOMEONE}, who could rewrite "
                             f"it — run `chown root {conf}`")


@pytest.mark.parametrize(("mode", "refused"), [(0o777, True), (0o775, True), (0o1777, False)])
async def test_a_hook_conf_in_a_directory_others_may_write_to(
    gateway: GatewayFactory, tmp_path: Path, mode: int, refused: bool,
) -> None:
    # Others could rename their own file over it; in a sticky directory (/tmp) they cannot.
    gw = await gateway()
    shared = tmp_path / "shared"
    conf = hook_conf(shared, gw.url)
    shared.chmod(mode)
    status, err = await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(conf))
    if not refused:
        assert (status, err) == (0, "")
        return
    assert status == 2
    line = one_line(err)
    assert f"{conf} is in {shared}, which may be changed by" in line
    assert f"could replace what is in it — run `chmod 755 {shared}`" in line


async def test_a_hook_conf_in_a_directory_someone_else_owns(tmp_path: Path) -> None:
    need_root()
    home = tmp_path / "home"
    conf = hook_conf(home / "acmegw", "https://gw.example.net/")
    os.chown(home, SOMEONE, -1)  # they may not write to acmegw/, but may rename it
    status, err = await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(conf))
    assert status == 2
    assert f"{conf} is in {home}, which belongs to uid {SOMEONE}" in one_line(err)


@pytest.mark.parametrize("link_in", ["open directory", "safe directory"])
async def test_a_symbolic_link_does_not_hide_an_open_directory(
    tmp_path: Path, link_in: str,
) -> None:
    safe, open_ = tmp_path / "safe", tmp_path / "open"
    for directory in (safe, open_):
        directory.mkdir()
    open_.chmod(0o777)
    # Either the link or the file it names sits where others may write.
    target = hook_conf(safe if link_in == "open directory" else open_,
                       "https://gw.example.net/")
    link = (open_ if link_in == "open directory" else safe) / "link.conf"
    link.symlink_to(target)
    status, err = await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(link))
    assert status == 2
    assert f"{link} is in {open_}, which may be changed by" in one_line(err)


async def test_a_password_file_another_group_may_read_is_refused(
    gateway: GatewayFactory, tmp_path: Path,
) -> None:
    need_root()
    gw = await gateway()
    secret = write(tmp_path / "pw", PASSWORDS["alice"], 0o640, owner=(-1, SOMEONE))
    env = {"ACMEGW_URL": gw.url, "ACMEGW_USER": "alice", "ACMEGW_PASSWORD_FILE": str(secret)}
    status, err = await run_hook(*setup_args(), **env)
    assert status == 2
    assert one_line(err) == (f"acmegw-hook: ACMEGW_PASSWORD_FILE: {secret} holds a password but "
                             f"group {SOMEONE} may read it (mode 640) — run `chmod 600 {secret}`")
    # In the hook's own group it is fine: the way www-data is usually handed the file.
    os.chown(secret, -1, os.getegid())
    assert await run_hook(*setup_args(), **env) == (0, "")


async def test_a_hook_conf_with_a_password_in_the_hooks_group_is_accepted(
    gateway: GatewayFactory, tmp_path: Path,
) -> None:
    gw = await gateway()
    conf = hook_conf(tmp_path, gw.url, 0o640)
    assert await run_hook(*setup_args(), ACMEGW_HOOK_CONF=str(conf)) == (0, "")


@pytest.mark.parametrize("setting", ["ACMEGW_HOOK_CONF", "ACMEGW_PASSWORD_FILE"])
async def test_a_fifo_is_refused_not_waited_on(tmp_path: Path, setting: str) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    env = {setting: str(fifo), "ACMEGW_URL": "https://gw.example.net/", "ACMEGW_USER": "alice"}
    status, err = await run_hook(*setup_args(), **env)
    assert status == 2
    assert f"{fifo} is not a regular file" in one_line(err)


async def test_a_ca_file_others_may_change_is_refused(tmp_path: Path) -> None:
    # Whoever may write it may add their own CA, and take the password by posing as the
    # gateway.
    ca = write(tmp_path / "ca.pem", "-----BEGIN CERTIFICATE-----\n", 0o646)
    status, err = await run_hook(*setup_args(), ACMEGW_URL="https://gw.example.net/",
                                 ACMEGW_CA_FILE=str(ca))
    assert status == 2
    assert one_line(err) == (f"acmegw-hook: ACMEGW_CA_FILE: {ca} may be changed by others "
                             f"(mode 646) — run `chmod 644 {ca}`")
    # A c_rehash directory: the directory itself, and each file in it.
    certs = tmp_path / "certs"
    certs.mkdir()
    hashed = write(certs / "0123abcd.0", "-----BEGIN CERTIFICATE-----\n", 0o664)
    status, err = await run_hook(*setup_args(), ACMEGW_URL="https://gw.example.net/",
                                 ACMEGW_CA_FILE=str(certs))
    assert status == 2
    assert f"{hashed} may be changed by its group (mode 664)" in one_line(err)
    hashed.chmod(0o644)
    certs.chmod(0o1777)  # sticky does not help here: others could add a CA
    status, err = await run_hook(*setup_args(), ACMEGW_URL="https://gw.example.net/",
                                 ACMEGW_CA_FILE=str(certs))
    assert status == 2
    assert f"{certs} may be changed by its group and others (mode 1777)" in one_line(err)


# -- the log: written only to a file of its own that others cannot change --------------
#
# A link put where ACMEGW_LOG points would have the hook append its lines to any file
# its user may write (a web page); a file someone else made there is theirs to rewrite.
# mod_md's events need no gateway and still open the log.

PAGE = "<p>a page the hook's user may write</p>\n"


async def log_an_event(log: Path, umask: str = "022") -> tuple[int, str]:
    shell = f"umask {umask}; {CLOSE_STDIN}"
    status, out, err = await spawn(["-m", "hooks", "renewed", "example.test"],
                                   bare_env(ACMEGW_URL="https://gw.example.net/",
                                            ACMEGW_LOG=str(log)), shell=shell)
    assert out == ""
    return status, err


@pytest.mark.parametrize("target", ["a file", "no file yet"])
async def test_a_log_that_is_a_symbolic_link_is_not_followed(tmp_path: Path, target: str) -> None:
    page = tmp_path / "www" / "index.html"
    page.parent.mkdir()
    if target == "a file":
        write(page, PAGE, 0o644)
    log = tmp_path / "hook.log"
    log.symlink_to(page)
    status, err = await log_an_event(log)
    assert status == 0  # the run goes on without its log
    assert one_line(err) == (f"acmegw-hook: ACMEGW_LOG: {log} is a symbolic link, and the log "
                             f"is not written through one — set ACMEGW_LOG to the file it "
                             f"names; going on without it")
    assert page.read_text() == PAGE if target == "a file" else not page.exists()


async def test_a_log_with_another_name_is_refused(tmp_path: Path) -> None:
    page = write(tmp_path / "index.html", PAGE, 0o644)
    log = tmp_path / "hook.log"
    os.link(page, log)
    status, err = await log_an_event(log)
    assert status == 0
    assert one_line(err) == (f"acmegw-hook: ACMEGW_LOG: {log} has 2 names (hard links), and "
                             f"the log would go to the file behind the others too — give the "
                             f"log a file of its own; going on without it")
    assert page.read_text() == PAGE


async def test_a_new_log_is_created_mode_640_whatever_the_umask(tmp_path: Path) -> None:
    log = tmp_path / "hook.log"
    status, err = await log_an_event(log, umask="000")
    assert (status, err) == (0, "")
    assert stat.S_IMODE(log.stat().st_mode) == 0o640
    assert "renewed" in log.read_text()


async def test_a_log_someone_else_owns_is_refused(tmp_path: Path) -> None:
    need_root()
    log = write(tmp_path / "hook.log", "", 0o644, owner=(SOMEONE, -1))
    status, err = await log_an_event(log)
    assert status == 0
    assert one_line(err) == (f"acmegw-hook: ACMEGW_LOG: {log} belongs to uid {SOMEONE}, who "
                             f"could rewrite the log — run `chown root {log}`; going on "
                             f"without it")
    assert log.read_text() == ""


@pytest.mark.parametrize(("mode", "group", "refused"), [
    (0o602, "own", "others (mode 602) — run `chmod 600"),
    (0o620, "another", "group 4242 (mode 620) — run `chmod 600"),
    (0o666, "another", "group 4242 and others (mode 666) — run `chmod 644"),
    (0o660, "own", ""),  # root:www-data 660 for a www-data hook: its own group writes it
])
async def test_a_log_others_may_change_is_refused(
    tmp_path: Path, mode: int, group: str, refused: str,
) -> None:
    need_root()
    log = write(tmp_path / "hook.log", "", mode,
                owner=(-1, SOMEONE if group == "another" else os.getegid()))
    status, err = await log_an_event(log)
    assert status == 0
    if not refused:
        assert err == ""
        assert "renewed" in log.read_text()
        return
    assert one_line(err) == (f"acmegw-hook: ACMEGW_LOG: {log} may be changed by {refused} "
                             f"{log}`; going on without it")
    assert log.read_text() == ""


async def test_a_log_to_dev_null_is_fine() -> None:
    assert await log_an_event(Path(os.devnull)) == (0, "")


# -- more of the same kinds: what settings and arguments may smuggle into the output ----


async def test_a_password_that_is_not_utf_8_is_not_shown_in_the_error(tmp_path: Path) -> None:
    # os.environ keeps the byte 0xff as a lone surrogate; encoding it failed with a message
    # naming the byte and its place in the password, printed as an internal error.
    log = tmp_path / "hook.log"
    status, err = await run_hook(*setup_args(), ACMEGW_URL="https://gw.example.net/",
                                 ACMEGW_USER="alice", ACMEGW_PASSWORD="Pw-1X9q\udcff",
                                 ACMEGW_LOG=str(log))
    assert status == 2
    line = one_line(err)
    assert "password" in line and "not UTF-8" in line
    assert "internal error" not in line and "xff" not in line and "position" not in line


@pytest.mark.parametrize("user", ["alice:Pw-1X9q", "alice\tPw-1X9q", "alice\udcff"])
async def test_a_user_basic_auth_cannot_carry_is_refused_without_showing_it(user: str) -> None:
    status, err = await run_hook(*setup_args(), ACMEGW_URL="https://gw.example.net/",
                                 ACMEGW_USER=user, ACMEGW_PASSWORD="pw")
    assert status == 2
    line = one_line(err)
    assert "ACMEGW_USER holds" in line and "Pw-1X9q" not in line and "internal" not in line


async def test_a_name_with_a_line_break_cannot_forge_a_line(
    gateway: GatewayFactory, tmp_path: Path,
) -> None:
    # mod_md logs each stderr line on its own: a name from the arguments must not start one.
    gw = await gateway()
    log = tmp_path / "hook.log"
    forged = "example.test\nacmegw-hook: setup example.test: confirmed"
    status, err = await run_hook("setup", forged, make_value(), ACMEGW_URL=gw.url,
                                 ACMEGW_USER="alice", ACMEGW_PASSWORD=PASSWORDS["alice"],
                                 ACMEGW_LOG=str(log))
    assert status == 1
    assert one_line(err).startswith("acmegw-hook: setup example.test acmegw-hook: setup ")
    assert all(" acmegw-hook[" in line for line in log.read_text().splitlines())
