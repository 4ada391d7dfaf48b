"""Fixtures for the hook's tests: a real gateway (in-process, memory provider) on a port,
and a scripted stand-in for answers the real one rarely gives (``stub``).

The hook is synchronous (http.client), so tests run it in a worker thread
(:func:`call`) while the gateway answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import load
from hooks import acmegw_hook
from providers.base import Provider
from providers.memory import MemoryProvider
from tests.passwords import copy_passwd_file, write_passwd_template
from tests.servers.certs import TLSFiles, make_tls_files
from tests.system import free_port

REPO = Path(__file__).resolve().parents[2]
# A gateway's name that is not loopback (loopback is never proxied), which the tests'
# proxies take for 127.0.0.1. It does not resolve: only a proxy can reach it.
PROXIED_NAME = "gw.example.test"
PASSWORDS = {"alice": "alice: correct horse battery", "bob": "bob-s3cret-pässword"}


@pytest.fixture(scope="session")
def passwd_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once: scrypt is deliberately slow. bob may only change example.org names."""
    return write_passwd_template(tmp_path_factory.mktemp("hook-passwd") / "acmepasswd",
                                 PASSWORDS)


@dataclass
class Gateway:
    url: str
    provider: MemoryProvider
    server: TestServer


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway(
    tmp_path: Path, passwd_template: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> GatewayFactory:
    """``await gateway(provider=None, **env)``: a started gateway and its URL."""

    async def start(provider: Provider | None = None, **env: str) -> Gateway:
        passwd = copy_passwd_file(passwd_template, tmp_path / "acmepasswd")
        settings = {
            "PROVIDER": "memory",
            "DNSAPI_DOMAINS": "example.test, example.org",
            "BASIC_AUTH": "required",
            "PASSWD_FILE": str(passwd),
            "STATE_DIR": str(tmp_path / "state"),
            "LISTEN": "127.0.0.1:0",
            "PROPAGATION_CHECK": "off",
            **env,
        }
        config, _ = load([], settings)
        prov = provider or MemoryProvider()
        server = await aiohttp_server(create_app(config, prov))
        return Gateway(f"http://127.0.0.1:{server.port}/", prov, server)  # type: ignore[arg-type]

    return start


def hook_env(url: str, user: str = "alice", **extra: str) -> dict[str, str]:
    """An environment with no hook.conf and the given gateway and user."""
    env = {
        "ACMEGW_HOOK_CONF": "",
        "ACMEGW_URL": url,
        "ACMEGW_USER": user,
        "ACMEGW_PASSWORD": PASSWORDS.get(user, "wrong"),
        "ACMEGW_TIMEOUT": "10",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


async def call(argv: Sequence[str], env: Mapping[str, str]) -> Result:
    """Run the hook in a worker thread (it blocks) while the loop serves the gateway."""

    def work() -> Result:
        with _captured() as (out, err):
            status = acmegw_hook.run(list(argv), dict(env))
        return Result(status, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(work)


def call_sync(argv: Sequence[str], env: Mapping[str, str]) -> Result:
    with _captured() as (out, err):
        status = acmegw_hook.run(list(argv), dict(env))
    return Result(status, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def no_default_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the default /etc/acmegw/hook.conf somewhere this test controls (absent)."""
    path = tmp_path / "etc-hook.conf"
    monkeypatch.setattr(acmegw_hook, "DEFAULT_CONF", str(path))
    return path


def one_line(text: str) -> str:
    """The single line a failure prints; fails the test if there are more."""
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    return lines[0]


# -- the hook as a process of its own, as the clients run it -------------------------------

# Run through sh only to close descriptors the way a daemon may leave them.
CLOSE_STDIN = 'exec "$0" "$@" <&-'
CLOSE_ALL = 'exec "$0" "$@" <&- >&- 2>&-'


def bare_env(**settings: str) -> dict[str, str]:
    """No PATH, no HOME: only what the hook needs."""
    return {"PYTHONPATH": str(REPO), "ACMEGW_HOOK_CONF": "", **settings}


@pytest.fixture
def no_etc_conf() -> None:
    """Skips a test of the hook as a process on a machine with a real hook.conf, which
    the process would read."""
    if Path("/etc/acmegw/hook.conf").exists():
        pytest.skip("this machine has an /etc/acmegw/hook.conf the subprocess would read")


async def spawn(args: list[str], env: dict[str, str], shell: str = CLOSE_STDIN,
                timeout: float = 20.0, wrapper: Sequence[str] = ()) -> tuple[int, str, str]:
    """Run ``python ARGS`` through ``sh -c SHELL`` (after *wrapper*, such as ``unshare``);
    its status, stdout and stderr. A hook still running after *timeout* fails the test."""
    proc = await asyncio.create_subprocess_exec(
        *wrapper, "/bin/sh", "-c", shell, sys.executable, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    # communicate() returns only at EOF on both pipes: a child left holding stderr
    # would make this time out, as it would block mod_md.
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"the hook was still running after {timeout:g}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# -- a proxy that records what it is handed -----------------------------------------------


@dataclass
class Seen:
    """One request a :class:`RecordingProxy` received: its first line and header fields."""

    line: str
    fields: dict[str, str]  # names lower-cased


class RecordingProxy:
    """A forward proxy on loopback that records every connection and request it gets and
    answers an absolute-form request as the gateway behind it would (201 to a setup,
    200 to a teardown, the JSON echo); it refuses CONNECT."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[Seen] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self.url

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            fields = {name.lower(): value.strip() for name, _, value in
                      (line.partition(":") for line in head[1:] if line)}
            self.requests.append(Seen(head[0], fields))
            if head[0].startswith("CONNECT "):
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            else:
                body = json.loads(await reader.readexactly(int(fields["content-length"])))
                answer = json.dumps({"fqdn": "_acme-challenge." + body["domain_name"],
                                     "value": body.get("challenge_content")}).encode()
                status = b"201 Created" if head[0].startswith("POST ") else b"200 OK"
                writer.write(b"HTTP/1.1 %s\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (status, len(answer), answer))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def recording_proxy() -> AsyncIterator[RecordingProxy]:
    proxy = RecordingProxy()
    await proxy.start()
    yield proxy
    await proxy.close()


# -- a scripted stand-in for the gateway ------------------------------------------------


Reply = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


def gateway_like(status: int) -> Reply:
    """What the gateway answers: ``{"fqdn", "value"}`` echoing the request."""
    async def reply(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"fqdn": "_acme-challenge." + body["domain_name"],
                                  "value": body.get("challenge_content")}, status=status)
    return reply


def error(status: int, message: str, **headers: str) -> Reply:
    async def reply(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": "x", "message": message}, status=status,
                                 headers=headers)
    return reply


@dataclass
class Stub:
    script: list[Reply]
    url: str = ""
    requests: list[tuple[str, dict[str, Any], str | None]] = field(default_factory=list)
    # Set when the test ends: lets a handler that never answers finish.
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        assert request.method in ("POST", "DELETE"), request.method
        assert set(body) <= {"argument", "domain_name", "challenge_content"}, body
        assert body["argument"] == ("setup" if request.method == "POST" else "teardown"), body
        self.requests.append((request.method, body, request.headers.get("Authorization")))
        assert self.script, f"unexpected request {request.method} {body}"
        return await self.script.pop(0)(body)


@pytest.fixture
async def stub() -> AsyncIterator[Callable[..., Awaitable[Stub]]]:
    runners: list[tuple[web.AppRunner, Stub]] = []

    async def start(*script: Reply, tls: ssl.SSLContext | None = None) -> Stub:
        state = Stub(list(script))
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", state.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        runners.append((runner, state))
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls).start()
        state.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/acme"
        return state

    yield start
    for runner, state in runners:
        state.release.set()
        await runner.cleanup()


StubFactory = Callable[..., Awaitable[Stub]]


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, TLSFiles]:
    """A server TLS context for ``stub(tls=...)``: a certificate for localhost,
    127.0.0.1 and :data:`PROXIED_NAME` from a throw-away CA (``files.ca``)."""
    files = make_tls_files(tmp_path / "tls", names=("localhost", PROXIED_NAME))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    return context, files
