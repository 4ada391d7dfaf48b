"""The hook's HTTP on the standard library: proxies, TLS, and answers that are not HTTP.

Proxies are real ones on loopback: the shared absolute-form forward proxy
(:mod:`tests.providers.forward_proxy`) for an ``http://`` gateway, and a small
CONNECT proxy defined here, which records each tunnel it is asked for and its
``Proxy-Authorization``, for an ``https://`` one. Broken servers are raw asyncio
servers that write what a test tells them to.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from hooks.transport import (
    MAX_REPLY,
    NotHTTP,
    Proxy,
    Reply,
    Unreachable,
    bypasses_proxy,
    exchange,
    parse_proxy,
    proxy_for,
)
from tests.conftest import make_value
from tests.hooks.conftest import (
    PROXIED_NAME,
    RecordingProxy,
    StubFactory,
    call,
    gateway_like,
    hook_env,
    one_line,
)
from tests.servers.certs import TLSFiles, make_tls_files
from tests.system import free_port

HTTPS = urlsplit("https://gw.example.net:8443/acme")
HTTP = urlsplit("http://gw.example.net/")


# -- which proxy, if any ---------------------------------------------------------------


def test_no_proxy_settings_mean_a_direct_connection() -> None:
    assert proxy_for(HTTPS, {}) is None
    assert proxy_for(HTTPS, {"HTTPS_PROXY": "  ", "PATH": "/bin"}) is None


def test_the_proxy_follows_the_gateways_scheme_then_all_proxy() -> None:
    env = {"HTTPS_PROXY": "http://tls-proxy:3128", "HTTP_PROXY": "http://plain-proxy:3128"}
    assert proxy_for(HTTPS, env) == Proxy("tls-proxy", 3128)
    assert proxy_for(HTTP, env) == Proxy("plain-proxy", 3128)
    assert proxy_for(HTTPS, {"HTTP_PROXY": "http://plain-proxy:3128"}) is None
    assert proxy_for(HTTPS, {"ALL_PROXY": "http://any:8080"}) == Proxy("any", 8080)
    assert proxy_for(HTTPS, {"ALL_PROXY": "http://any:8080",
                             "https_proxy": "http://tls:1"}) == Proxy("tls", 1)


@pytest.mark.parametrize("order", ["lower first", "upper first"])
def test_a_lower_case_name_wins_over_its_upper_case_one(order: str) -> None:
    pairs = [("https_proxy", "http://lower:1"), ("HTTPS_PROXY", "http://upper:2")]
    env = dict(pairs if order == "lower first" else reversed(pairs))
    assert proxy_for(HTTPS, env) == Proxy("lower", 1)


def test_http_proxy_from_a_cgi_request_header_is_not_trusted() -> None:
    # httpoxy: in a CGI environment a client's "Proxy:" header arrives as HTTP_PROXY.
    assert proxy_for(HTTP, {"HTTP_PROXY": "http://evil:80", "REQUEST_METHOD": "GET"}) is None
    assert proxy_for(HTTP, {"http_proxy": "http://ok:80", "REQUEST_METHOD": "GET"}) \
        == Proxy("ok", 80)


@pytest.mark.parametrize(("host", "port", "no_proxy", "bypass"), [
    ("gw.example.net", 443, "*", True),
    ("gw.example.net", 443, "gw.example.net", True),
    ("gw.example.net", 443, "example.net", True),
    ("gw.example.net", 443, ".example.net", True),
    ("GW.Example.Net.", 443, "example.net.", True),
    ("gw.example.net", 443, "other.test, example.net", True),
    ("gw.example.net", 443, "example.net:443", True),
    ("gw.example.net", 443, "example.net:8443", False),
    # A suffix is matched at a label boundary only.
    ("gw.notexample.net", 443, "example.net", False),
    ("example.net.evil.test", 443, "example.net", False),
    ("gw.example.net", 443, "net.example", False),
    ("1password.example", 443, "1password.example", True),
    ("10.1.2.3", 443, "10.1.2.3", True),
    ("10.1.2.3", 443, "10.0.0.0/8", True),
    ("11.1.2.3", 443, "10.0.0.0/8", False),
    ("::1", 443, "::1", True),
    ("::1", 8000, "[::1]:8000", True),
    ("::1", 443, "[::1]:8000", False),
    ("fd00::5", 443, "fd00::/8", True),
    ("gw.example.net", 443, "10.0.0.0/8", False),
    ("gw.example.net", 443, "", False),
    ("gw.example.net", 443, " , ", False),
])
def test_no_proxy_entries(host: str, port: int, no_proxy: str, bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass


def test_no_proxy_applies_to_the_gateways_host_and_port() -> None:
    env = {"HTTPS_PROXY": "http://proxy:3128"}
    assert proxy_for(HTTPS, {**env, "NO_PROXY": "example.net"}) is None
    assert proxy_for(HTTPS, {**env, "no_proxy": "gw.example.net:8443"}) is None
    assert proxy_for(HTTPS, {**env, "NO_PROXY": "gw.example.net:443"}) == Proxy("proxy", 3128)
    # The default port counts when the URL names none.
    assert proxy_for(HTTP, {"HTTP_PROXY": "http://p:1", "NO_PROXY": "gw.example.net:80"}) is None


def test_proxy_urls() -> None:
    assert parse_proxy("proxy.lan:3128") == Proxy("proxy.lan", 3128)
    assert parse_proxy("http://proxy.lan") == Proxy("proxy.lan", 80)
    assert parse_proxy("http://[fd00::1]:3128") == Proxy("fd00::1", 3128)
    with_user = parse_proxy("http://us%40er:p%3Ass@proxy.lan:3128")
    token = base64.b64encode(b"us@er:p:ss").decode()
    assert with_user.authorization == f"Basic {token}"
    assert "p:ss" not in repr(with_user) and token not in repr(with_user)
    for bad, why in [("https://proxy.lan:3128", "https:// proxies are not supported"),
                     ("socks5://proxy.lan:1080", "socks5:// proxies are not supported"),
                     ("http://proxy.lan:99999", "port"),
                     ("http://:3128", "no host")]:
        with pytest.raises(ValueError, match=why):
            parse_proxy(bad)


async def test_an_unusable_proxy_setting_is_a_settings_error() -> None:
    env = hook_env("https://gw.example.net/", HTTPS_PROXY="socks5://proxy.lan:1080")
    result = await call(["setup", "example.test", make_value()], env)
    assert result.status == 2
    line = one_line(result.stderr)
    assert "HTTPS_PROXY" in line and "socks5:// proxies are not supported" in line


def proxied(url: str) -> str:
    """*url* of a test server on 127.0.0.1, by a name only the test proxies resolve."""
    return url.replace("127.0.0.1", PROXIED_NAME)


# -- through real proxies ------------------------------------------------------------


class ConnectProxy:
    """An HTTP CONNECT proxy on loopback that records each tunnel asked for; it takes
    :data:`PROXIED_NAME` for 127.0.0.1."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.tunnels: list[str] = []
        self.authorizations: list[str | None] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ")
            fields = dict(line.split(": ", 1) for line in head[1:] if line)
            assert method == "CONNECT", head[0]
            self.tunnels.append(target)
            self.authorizations.append(fields.get("Proxy-Authorization"))
            if self.refuse:
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            host, port = target.rsplit(":", 1)
            host = "127.0.0.1" if host == PROXIED_NAME else host.strip("[]")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def connect_proxy() -> AsyncIterator[Callable[..., Awaitable[ConnectProxy]]]:
    proxies: list[ConnectProxy] = []

    async def start(refuse: bool = False) -> ConnectProxy:
        proxy = ConnectProxy(refuse)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        await proxy.close()


async def test_https_through_a_connect_proxy_with_credentials(
    stub: StubFactory, connect_proxy: Callable[..., Awaitable[ConnectProxy]],
    tls: tuple[ssl.SSLContext, TLSFiles],
) -> None:
    context, files = tls
    server = await stub(gateway_like(201), tls=context)
    proxy = await connect_proxy()
    env = hook_env(proxied(server.url), ACMEGW_CA_FILE=str(files.ca),
                   HTTPS_PROXY=f"http://hook:pr%C3%B6xy@127.0.0.1:{proxy.port}")
    result = await call(["setup", "example.test", make_value()], env)
    assert result.status == 0, result.stderr
    port = urlsplit(server.url).port
    assert proxy.tunnels == [f"{PROXIED_NAME}:{port}"]
    assert proxy.authorizations == ["Basic " + base64.b64encode("hook:pröxy".encode()).decode()]
    # The gateway's credentials went inside the tunnel, the proxy's never to the gateway.
    assert server.requests[0][2] is not None and server.requests[0][2].startswith("Basic ")
    assert len(server.requests) == 1


async def test_the_gateways_certificate_is_checked_through_the_tunnel(
    stub: StubFactory, connect_proxy: Callable[..., Awaitable[ConnectProxy]],
    tls: tuple[ssl.SSLContext, TLSFiles], tmp_path: Path,
) -> None:
    context, _ = tls
    server = await stub(tls=context)
    proxy = await connect_proxy()
    other_ca = make_tls_files(tmp_path / "other").ca
    env = hook_env(proxied(server.url), ACMEGW_CA_FILE=str(other_ca),
                   HTTPS_PROXY=f"http://127.0.0.1:{proxy.port}")
    result = await call(["setup", "example.test", make_value()], env)
    assert result.status == 1
    assert "certificate verify failed" in one_line(result.stderr)
    assert len(proxy.tunnels) == 1 and server.requests == []


async def test_no_proxy_goes_direct(
    stub: StubFactory, connect_proxy: Callable[..., Awaitable[ConnectProxy]],
    tls: tuple[ssl.SSLContext, TLSFiles],
) -> None:
    context, files = tls
    server = await stub(gateway_like(201), tls=context)
    proxy = await connect_proxy()
    env = hook_env(server.url, ACMEGW_CA_FILE=str(files.ca),
                   HTTPS_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY="127.0.0.0/8")
    assert (await call(["setup", "example.test", make_value()], env)).status == 0
    assert proxy.tunnels == [] and len(server.requests) == 1
    # NO_PROXY names the proxied name: straight to it (which does not resolve).
    env = hook_env(proxied(server.url), ACMEGW_CA_FILE=str(files.ca), ACMEGW_TIMEOUT="1",
                   HTTPS_PROXY=f"http://127.0.0.1:{proxy.port}", NO_PROXY="example.test")
    assert (await call(["setup", "example.test", make_value()], env)).status == 1
    assert proxy.tunnels == []


async def test_a_proxy_that_refuses_the_tunnel_is_retried_then_named(
    stub: StubFactory, connect_proxy: Callable[..., Awaitable[ConnectProxy]],
    tls: tuple[ssl.SSLContext, TLSFiles],
) -> None:
    context, files = tls
    server = await stub(tls=context)
    proxy = await connect_proxy(refuse=True)
    env = hook_env(proxied(server.url), ACMEGW_CA_FILE=str(files.ca), ACMEGW_TIMEOUT="1",
                   HTTPS_PROXY=f"http://127.0.0.1:{proxy.port}")
    result = await call(["setup", "example.test", make_value()], env)
    assert result.status == 1
    line = one_line(result.stderr)
    assert f"through the proxy 127.0.0.1:{proxy.port}" in line
    assert "403" in line and "gave up after 2 attempt(s)" in line
    assert len(proxy.tunnels) == 2 and server.requests == []


async def test_plain_http_through_a_forward_proxy(recording_proxy: RecordingProxy) -> None:
    # Without a password: with one, plain http through a proxy is refused (test_attacks).
    url = f"http://{PROXIED_NAME}:8000/acme"
    value = make_value()
    env = {**hook_env(url), "ACMEGW_USER": "", "ACMEGW_PASSWORD": "",
           "HTTP_PROXY": recording_proxy.url}
    assert (await call(["setup", "example.test", value], env)).status == 0
    assert (await call(["teardown", "example.test", value], env)).status == 0
    assert [seen.line for seen in recording_proxy.requests] == [
        f"POST {url} HTTP/1.1", f"DELETE {url} HTTP/1.1"]
    assert all("authorization" not in seen.fields for seen in recording_proxy.requests)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/", "https://127.0.0.5/",
                                 "http://[::1]:8000/", "https://localhost/"])
def test_a_loopback_gateway_is_never_proxied(url: str) -> None:
    everything = {"HTTP_PROXY": "http://p:1", "HTTPS_PROXY": "http://p:1",
                  "ALL_PROXY": "http://p:1"}
    assert proxy_for(urlsplit(url), everything) is None


# -- TLS and what answers -------------------------------------------------------------


async def test_a_certificate_for_another_name_is_refused(
    stub: StubFactory, tls: tuple[ssl.SSLContext, TLSFiles], tmp_path: Path,
) -> None:
    # A certificate from the right CA, for names other than the one in ACMEGW_URL.
    files = make_tls_files(tmp_path / "elsewhere", names=("gw.example.net",), addresses=())
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.cert, files.key)
    server = await stub(tls=context)
    result = await call(["setup", "example.test", make_value()],
                        hook_env(server.url, ACMEGW_CA_FILE=str(files.ca)))
    assert result.status == 1
    line = one_line(result.stderr)
    assert "certificate verify failed" in line and "127.0.0.1" in line
    assert server.requests == []


async def test_a_directory_of_hashed_cas_works_as_the_ca_file(
    stub: StubFactory, tls: tuple[ssl.SSLContext, TLSFiles], tmp_path: Path,
) -> None:
    # What requests accepted as "verify", and what c_rehash / openssl rehash make.
    context, files = tls
    server = await stub(gateway_like(201), tls=context)
    certs = tmp_path / "certs"
    certs.mkdir()
    subject_hash = subprocess.run(["openssl", "x509", "-noout", "-subject_hash", "-in",
                                   str(files.ca)], capture_output=True, text=True,
                                  check=True).stdout.strip()
    shutil.copy(files.ca, certs / f"{subject_hash}.0")
    env = hook_env(server.url, ACMEGW_CA_FILE=str(certs))
    assert (await call(["setup", "example.test", make_value()], env)).status == 0
    # An empty directory trusts nothing.
    empty = tmp_path / "empty"
    empty.mkdir()
    result = await call(["setup", "example.test", make_value()],
                        hook_env(server.url, ACMEGW_CA_FILE=str(empty)))
    assert result.status == 1 and "certificate verify failed" in one_line(result.stderr)


async def test_a_ca_file_that_holds_no_certificate(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    result = await call(["setup", "example.test", make_value()],
                        hook_env("https://127.0.0.1:1/", ACMEGW_CA_FILE=str(bogus)))
    assert result.status == 1
    line = one_line(result.stderr)
    assert f"ACMEGW_CA_FILE: {bogus} holds no usable CA certificate" in line


@contextlib.asynccontextmanager
async def raw_server(answer: bytes) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that reads a request, writes *answer* and closes; counts connections."""
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/", connections
    finally:
        server.close()
        await server.wait_closed()


async def test_a_server_that_does_not_speak_http_is_not_retried() -> None:
    async with raw_server(b"SSH-2.0-OpenSSH_9.2\r\n") as (url, connections):
        result = await call(["setup", "example.test", make_value()], hook_env(url))
    assert result.status == 1
    line = one_line(result.stderr)
    assert f"{url} did not answer in HTTP" in line and "check ACMEGW_URL" in line
    assert connections == [1]


async def test_an_answer_cut_short_is_retried() -> None:
    cut = b"HTTP/1.1 201 Created\r\nContent-Length: 400\r\n\r\n{\"fqdn\": "
    async with raw_server(cut) as (url, connections):
        result = await call(["setup", "example.test", make_value()],
                            hook_env(url, ACMEGW_TIMEOUT="1"))
    assert result.status == 1
    assert "connection closed before the answer was complete" in one_line(result.stderr)
    assert len(connections) == 2


async def answer_to(raw: bytes) -> tuple[Reply, bytes]:
    """What :func:`exchange` makes of *raw* as the answer, and the request it sent."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        requests.append(head + await reader.readexactly(length))
        writer.write(raw)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = urlsplit(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/acme?x=1")
    try:
        reply = await asyncio.to_thread(
            exchange, "POST", url, b'{"a": 1}', {"User-Agent": "test"}, context=None,
            proxy=None, deadline=time.monotonic() + 5, connect_timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    return reply, requests[0]


async def test_the_request_on_the_wire() -> None:
    _, request = await answer_to(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    head, body = request.split(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /acme?x=1 HTTP/1.1"
    assert {"Connection: close", "Content-Length: 8", "Content-Type: application/json",
            "User-Agent: test"} <= set(lines[1:])
    assert any(line.startswith("Host: 127.0.0.1:") for line in lines)
    assert body == b'{"a": 1}'


@pytest.mark.parametrize(("raw", "status", "body"), [
    (b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello", 201, b"hello"),
    (b"HTTP/1.0 200 OK\r\ncontent-length:2\r\n\r\nhi", 200, b"hi"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nhel\r\n2;ext=1\r\nlo\r\n0\r\n\r\n", 200, b"hello"),
    (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 200, b"until the end"),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201\r\nContent-Length: 2\r\n\r\nok",
     201, b"ok"),
    # Only the announced length counts.
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA", 200, b"ok"),
])
async def test_answers_of_every_framing(raw: bytes, status: int, body: bytes) -> None:
    reply, _ = await answer_to(raw)
    assert (reply.status, reply.body) == (status, body)


@pytest.mark.parametrize(("raw", "error", "message"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", Unreachable,
     "before the answer was complete"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", Unreachable,
     "before the answer was complete"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", Unreachable, "in the middle of the answer's header"),
    (b"", Unreachable, "connection closed"),
    (b"220 smtp.example ESMTP\r\n", NotHTTP, "the answer begins"),
    (b"HTTP/1.1 OK\r\n\r\n", NotHTTP, "the answer begins"),
    (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", NotHTTP, "a header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", NotHTTP, "Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_REPLY + 1), NotHTTP,
     "where a gateway's are a few hundred"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", NotHTTP,
     "a chunk size"),
    (b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (3 * MAX_REPLY), NotHTTP, "larger than any"),
])
async def test_answers_that_are_cut_or_not_http(raw: bytes, error: type[Exception],
                                                message: str) -> None:
    with pytest.raises(error, match=message):
        await answer_to(raw)


@pytest.mark.parametrize("host", ["gw.invalid", "bücher.invalid"])
async def test_a_name_that_does_not_resolve(host: str) -> None:
    url = urlsplit(f"http://{host}:8000/")
    with pytest.raises(Unreachable):
        await asyncio.to_thread(exchange, "POST", url, b"{}", {}, context=None, proxy=None,
                                deadline=time.monotonic() + 2, connect_timeout=2)


async def test_a_gateway_on_ipv6_loopback(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append({"host": request.host, **body})
        return web.json_response({"fqdn": "_acme-challenge.example.test",
                                  "value": body["challenge_content"]}, status=201)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "::1", port).start()
        result = await call(["setup", "example.test", make_value()],
                            hook_env(f"http://[::1]:{port}/"))
    finally:
        await runner.cleanup()
    assert result.status == 0, result.stderr
    assert seen[0]["host"] == f"[::1]:{port}"


async def test_a_password_beyond_latin_1_is_sent_as_utf_8(stub: StubFactory) -> None:
    server = await stub(gateway_like(201))
    password = "пароль ✓ 🔑"
    env = hook_env(server.url, ACMEGW_PASSWORD=password)
    assert (await call(["setup", "example.test", make_value()], env)).status == 0
    header = server.requests[0][2]
    assert header is not None
    assert base64.b64decode(header.removeprefix("Basic ")).decode("utf-8") == f"alice:{password}"
