"""Failures the real gateway rarely produces, forced with a scripted stand-in.

The stand-in (``stub`` in conftest) is an aiohttp server on loopback that answers
from a script and records every request (method, JSON body, whether credentials
came); it fails the test on a request it did not expect. It checks what the hook sends and how
the hook copes: retries of 5xx and connection failures inside ACMEGW_TIMEOUT,
no retry of 4xx, no redirect following, answers that are not the gateway's,
slow servers, and TLS verification.
"""

from __future__ import annotations

import base64
import ssl
import time
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import make_value
from tests.hooks.conftest import (
    PASSWORDS,
    StubFactory,
    call,
    error,
    gateway_like,
    hook_env,
    one_line,
)
from tests.servers.certs import TLSFiles
from tests.system import free_port


async def test_what_the_hook_sends(stub: StubFactory) -> None:
    server = await stub(gateway_like(201), gateway_like(200), gateway_like(200))
    value = make_value()
    env = hook_env(server.url)
    assert (await call(["setup", "example.test", value], env)).status == 0
    assert (await call(["teardown", "example.test", value], env)).status == 0
    assert (await call(["teardown", "example.test"], env)).status == 0
    expected_auth = "Basic " + base64.b64encode(f"alice:{PASSWORDS['alice']}".encode()).decode()
    assert server.requests == [
        ("POST", {"argument": "setup", "domain_name": "example.test",
                  "challenge_content": value}, expected_auth),
        ("DELETE", {"argument": "teardown", "domain_name": "example.test",
                    "challenge_content": value}, expected_auth),
        ("DELETE", {"argument": "teardown", "domain_name": "example.test"}, expected_auth),
    ]


async def test_no_credentials_are_sent_without_a_user(stub: StubFactory) -> None:
    server = await stub(gateway_like(201))
    env = hook_env(server.url, ACMEGW_USER="", ACMEGW_PASSWORD="")
    assert (await call(["setup", "example.test", make_value()], env)).status == 0
    assert server.requests[0][2] is None


async def test_server_errors_are_retried_with_back_off(stub: StubFactory) -> None:
    server = await stub(error(503, "journal busy"), error(502, "provider hiccup"),
                        gateway_like(201))
    started = time.monotonic()
    result = await call(["setup", "example.test", make_value()], hook_env(server.url))
    assert (result.status, result.stderr) == (0, "")
    assert len(server.requests) == 3
    assert time.monotonic() - started >= 0.5 + 1.0  # back-off 0.5 s, then 1 s


@pytest.mark.parametrize(("status", "hint"), [
    (400, "check the arguments"), (401, "ACMEGW_USER=alice"),
    (403, "check the user's domains"), (404, "check ACMEGW_URL"),
    (429, "too many failed logins"), (413, "check the gateway's log"),
])
async def test_client_errors_are_not_retried(stub: StubFactory, status: int, hint: str) -> None:
    server = await stub(error(status, "refused\nwith a second line"))
    result = await call(["setup", "example.test", make_value()], hook_env(server.url))
    assert result.status == 1
    line = one_line(result.stderr)
    assert f"gateway answered {status}: refused with a second line" in line and hint in line
    assert len(server.requests) == 1


async def test_a_redirect_is_not_followed(stub: StubFactory) -> None:
    async def moved(body: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=301, headers={"Location": "https://elsewhere.example/"})
    server = await stub(moved)
    result = await call(["setup", "example.test", make_value()], hook_env(server.url))
    assert result.status == 1
    assert "301" in one_line(result.stderr) and "check ACMEGW_URL" in result.stderr


@pytest.mark.parametrize("reply", [
    "plain", "other-value", "no-fqdn",
])
async def test_a_2xx_that_is_not_the_gateways_confirmation_is_a_failure(
    stub: StubFactory, reply: str
) -> None:
    async def answer(body: dict[str, Any]) -> web.StreamResponse:
        if reply == "plain":
            return web.Response(status=201, text="OK")
        if reply == "other-value":
            return web.json_response({"fqdn": "x", "value": make_value()}, status=201)
        return web.json_response({"value": body["challenge_content"]}, status=201)
    server = await stub(answer)
    result = await call(["setup", "example.test", make_value()], hook_env(server.url))
    assert result.status == 1
    assert "not the answer an acmegw gateway gives" in one_line(result.stderr)


async def test_setup_wants_201_and_teardown_200(stub: StubFactory) -> None:
    server = await stub(gateway_like(200), gateway_like(201))
    value = make_value()
    assert (await call(["setup", "example.test", value], hook_env(server.url))).status == 1
    assert (await call(["teardown", "example.test", value], hook_env(server.url))).status == 1


async def test_an_unreachable_gateway_is_retried_within_the_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    started = time.monotonic()
    result = await call(["setup", "example.test", make_value()],
                        hook_env(url, ACMEGW_TIMEOUT="2"))
    elapsed = time.monotonic() - started
    assert result.status == 1
    line = one_line(result.stderr)
    assert f"cannot reach {url} (connection refused)" in line
    assert "gave up after 3 attempt(s)" in line  # at 0, 0.5 and 1.5 s
    assert "check that the gateway runs" in line
    assert 1.4 < elapsed < 2.5


async def test_a_silent_gateway_cannot_hold_the_hook_past_its_timeout(stub: StubFactory) -> None:
    async def hang(body: dict[str, Any]) -> web.StreamResponse:
        await server.release.wait()
        return web.Response(status=599)
    server = await stub(hang, hang)
    started = time.monotonic()
    result = await call(["setup", "example.test", make_value()],
                        hook_env(server.url, ACMEGW_TIMEOUT="1.5"))
    assert time.monotonic() - started < 2.5
    assert result.status == 1
    assert "no answer from" in one_line(result.stderr)


async def test_a_teardown_chain_tries_every_value_and_reports_the_first_failure(
    stub: StubFactory,
) -> None:
    server = await stub(error(403, "no"), gateway_like(200))
    v1, v2 = make_value(), make_value()
    result = await call(["clean_challenge", "a.example.test", "t", v1,
                         "example.test", "t", v2], hook_env(server.url))
    assert result.status == 1
    assert "teardown a.example.test: gateway answered 403" in one_line(result.stderr)
    assert len(server.requests) == 2


async def test_a_setup_chain_stops_at_the_first_failure(stub: StubFactory) -> None:
    server = await stub(error(403, "no"))
    result = await call(["deploy_challenge", "a.example.test", "t", make_value(),
                         "example.test", "t", make_value()], hook_env(server.url))
    assert result.status == 1
    assert len(server.requests) == 1


async def test_dns_delay_is_bounded_by_the_timeout(stub: StubFactory) -> None:
    server = await stub(gateway_like(201))
    started = time.monotonic()
    result = await call(["setup", "example.test", make_value()],
                        hook_env(server.url, DNS_DELAY="60", ACMEGW_TIMEOUT="1"))
    assert result.status == 0
    assert 0.8 < time.monotonic() - started < 2.0


async def test_tls_is_verified_with_the_ca_file(stub: StubFactory,
                                               tls: tuple[ssl.SSLContext, TLSFiles]) -> None:
    context, files = tls
    server = await stub(gateway_like(201), tls=context)
    env = hook_env(server.url, ACMEGW_CA_FILE=str(files.ca))
    assert (await call(["setup", "example.test", make_value()], env)).status == 0


async def test_an_unverifiable_certificate_is_a_failure_not_a_fallback(
    stub: StubFactory, tls: tuple[ssl.SSLContext, TLSFiles], monkeypatch: pytest.MonkeyPatch
) -> None:
    context, _ = tls
    server = await stub(tls=context)  # no answer is scripted: none may be asked for
    # OpenSSL would otherwise take the system store from these.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    result = await call(["setup", "example.test", make_value()], hook_env(server.url))
    assert result.status == 1
    line = one_line(result.stderr)
    assert "TLS with" in line and "certificate verify failed" in line
    assert "check ACMEGW_CA_FILE" in line
    assert server.requests == []
    # Plain http to a TLS port is no way around it either.
    plain = server.url.replace("https://", "http://")
    assert (await call(["setup", "example.test", make_value()],
                       hook_env(plain, ACMEGW_TIMEOUT="1"))).status == 1
    assert server.requests == []
