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
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.hooks.conftest import (
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
def silent_resolver(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``unshare`` and a shell command that runs the hook in a mount namespace of its own
    where /etc/resolv.conf names a nameserver on loopback that never answers (with long
    timeouts and retries, as a resolver may be configured)."""
    unshare = need_program("unshare", "util-linux")
    mount = need_program("mount", "mount")
    address = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}.53"
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind((address, 53))  # bound, never read: queries just wait
    conf = tmp_path / "resolv.conf"
    conf.write_text(f"nameserver {address}\noptions timeout:30 attempts:5\n")
    probe = subprocess.run([unshare, "-m", mount, "--bind", str(conf), "/etc/resolv.conf"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        unavailable(f"unshare -m with a bind mount is not permitted here: {probe.stderr}")
    try:
        yield unshare, f'{mount} --bind {conf} /etc/resolv.conf && exec "$0" "$@" <&-'
    finally:
        silent.close()


async def test_a_resolver_that_never_answers_does_not_outlast_the_timeout(
    silent_resolver: tuple[str, str],
) -> None:
    # getaddrinfo has no timeout: with this resolv.conf it would wait 30 s x 5 attempts.
    unshare, shell = silent_resolver
    status, out, err = await spawn(
        ["-m", "hooks", *setup_args()], bare_env(ACMEGW_TIMEOUT="1",
                                                 ACMEGW_URL="https://gw.acmegw.test/"),
        shell=shell, wrapper=[unshare, "-m"], timeout=30)
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
