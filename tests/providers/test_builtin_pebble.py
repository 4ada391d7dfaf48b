"""A real ACME CA validates dns-01 against the builtin DNS server, with no other DNS involved.

pebble (the Let's Encrypt test CA, Debian ``pebble``) runs with
``-dnsserver 127.0.0.1:<builtin port>`` and *without* ``PEBBLE_VA_ALWAYS_VALID``,
so it really looks the TXT values up. The real ``lego`` (Debian ``lego``) drives
the ACME side through its ``exec`` DNS provider: lego runs a small script that
POSTs each value to an aiohttp server inside this test process, which calls
the provider's add_txt/remove_txt (the gateway will take that place later).

lego runs with ``--dns.disable-cp``: its own propagation check would look the
zone's NS hostnames up in the system DNS and query them on port 53, which
exists nowhere here. pebble's lookup is the check that matters.

pebble itself (its test CA, clean environment) comes from tests/servers/pebble.py.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from providers.base import ProviderError
from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.e2e import certificate_names, run_client
from tests.servers.pebble import Pebble, pebble  # noqa: F401 (a fixture)
from tests.system import free_port, need_program

pytestmark = pytest.mark.system

LEGO_TIMEOUT = 45.0


@pytest.fixture
def dns_port() -> int:
    return free_port()


@pytest.fixture
async def provider(dns_port: int) -> AsyncIterator[BuiltinProvider]:
    p = BuiltinProvider(
        BuiltinSettings(listen=(("127.0.0.1", dns_port),), nameservers=("gw.example.net",)),
        ("example.test",),
    )
    await p.open()
    try:
        yield p
    finally:
        await p.aclose()


@dataclass
class HookServer:
    """Stands in for the gateway: lego's exec script POSTs here."""

    provider: BuiltinProvider
    publish: bool = True
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await request.json()
        fqdn = str(body["fqdn"]).rstrip(".").lower()
        value = str(body["value"])
        self.calls.append((action, fqdn, value))
        try:
            if action == "present" and self.publish:
                await self.provider.add_txt(fqdn, value)
            elif action == "cleanup":
                await self.provider.remove_txt(fqdn, value)
        except ProviderError as exc:
            return web.Response(status=502, text=str(exc))
        return web.Response(text="ok")


@pytest.fixture
async def hook(provider: BuiltinProvider) -> AsyncIterator[tuple[HookServer, str]]:
    state = HookServer(provider)
    app = web.Application()
    app.router.add_post("/{action:present|cleanup}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _exec_script(directory: Path, url: str) -> Path:
    script = directory / "lego-exec"
    script.write_text(f"""#!{sys.executable}
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
request = urllib.request.Request(
    {url!r} + "/" + action, method="POST",
    data=json.dumps({{"fqdn": fqdn, "value": value}}).encode(),
    headers={{"Content-Type": "application/json"}},
)
# No proxy from the environment: the hook server is on loopback.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
with opener.open(request, timeout=10) as response:
    sys.exit(0 if response.status == 200 else 1)
""")
    script.chmod(0o755)
    return script


async def _run_lego(
    tmp_path: Path,
    pebble: Pebble,  # noqa: F811
    dns_port: int,
    hook_url: str,
    domains: tuple[str, ...] = ("example.test", "*.example.test"),
) -> tuple[int, str, Path]:
    lego = need_program("lego", "lego")
    path = tmp_path / "lego"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LEGO_CA_CERTIFICATES": str(pebble.ca_file),
        "EXEC_PATH": str(_exec_script(tmp_path, hook_url)),
        "EXEC_POLLING_INTERVAL": "1",
        "EXEC_PROPAGATION_TIMEOUT": "20",
        "EXEC_SEQUENCE_INTERVAL": "1",
    }
    argv = [
        lego,
        "--server",
        pebble.url,
        "--accept-tos",
        "--email",
        "t@example.test",
        *(arg for domain in domains for arg in ("--domains", domain)),
        "--dns",
        "exec",
        "--dns.resolvers",
        f"127.0.0.1:{dns_port}",
        "--dns.disable-cp",
        "--http-timeout",
        "10",
        "--path",
        str(path),
        "run",
    ]
    status, output = await run_client(argv, env, tmp_path, LEGO_TIMEOUT)
    print(output)  # shown when the test fails
    return status, output, path


async def test_pebble_validates_values_served_by_builtin(
    tmp_path: Path,
    pebble: Pebble,  # noqa: F811
    dns_port: int,
    provider: BuiltinProvider,
    hook: tuple[HookServer, str],
) -> None:
    state, url = hook
    status, output, path = await _run_lego(tmp_path, pebble, dns_port, url)
    assert status == 0, f"lego failed:\n{output}\npebble:\n{pebble.server.output()}"
    cert = path / "certificates" / "example.test.crt"
    assert certificate_names(cert) == {"example.test", "*.example.test"}
    presented = {
        v
        for action, fqdn, v in state.calls
        if action == "present" and fqdn == "_acme-challenge.example.test"
    }
    assert len(presented) == 2, state.calls  # one value per authorization
    cleaned = {v for action, _, v in state.calls if action == "cleanup"}
    assert cleaned == presented
    assert provider.records == {}


async def test_pebble_refuses_when_the_value_is_not_served(
    tmp_path: Path,
    pebble: Pebble,  # noqa: F811
    dns_port: int,
    provider: BuiltinProvider,
    hook: tuple[HookServer, str],
) -> None:
    # The hook acknowledges without publishing: the CA must notice.
    state, url = hook
    state.publish = False
    status, output, path = await _run_lego(tmp_path, pebble, dns_port, url, ("example.test",))
    assert status != 0, output
    assert "urn:ietf:params:acme:error:unauthorized" in output, output
    assert not (path / "certificates" / "example.test.crt").exists()
    assert any(action == "present" for action, _, _ in state.calls)
