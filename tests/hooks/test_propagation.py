"""The optional client-side propagation wait, against a real authoritative DNS server.

The gateway's builtin provider is an authoritative DNS server on loopback: with
``ACMEGW_PROPAGATION_NAMESERVERS`` pointing at it the hook returns only once it
serves the value, and fails with one line when a server never does.
"""

from __future__ import annotations

from pathlib import Path

from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.conftest import make_value
from tests.hooks.conftest import GatewayFactory, call, hook_env, one_line
from tests.system import free_port


def builtin(port: int) -> BuiltinProvider:
    return BuiltinProvider(
        BuiltinSettings(listen=(("127.0.0.1", port),), nameservers=("gw.example.net",),
                        close_timeout=0.5),
        ("example.test", "example.org"),
    )


async def test_the_hook_confirms_from_here_that_the_value_is_served(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    port = free_port()
    gw = await gateway(provider=builtin(port))
    log = tmp_path / "hook.log"
    env = hook_env(gw.url, ACMEGW_PROPAGATION_NAMESERVERS=f"127.0.0.1:{port}",
                   ACMEGW_LOG=str(log))
    result = await call(["setup", "example.test", make_value()], env)
    assert (result.status, result.stderr) == (0, "")
    assert f"_acme-challenge.example.test served by 127.0.0.1:{port}" in log.read_text()


async def test_a_server_that_never_serves_the_value_fails_the_setup(
    gateway: GatewayFactory,
) -> None:
    # The gateway writes to memory only; the DNS server the hook asks never learns the value.
    dns_port = free_port()
    silent = builtin(dns_port)
    await silent.open()
    try:
        gw = await gateway()
        env = hook_env(gw.url, ACMEGW_PROPAGATION_NAMESERVERS=f"127.0.0.1:{dns_port}",
                       ACMEGW_TIMEOUT="2")
        result = await call(["setup", "example.test", make_value()], env)
    finally:
        await silent.aclose()
    assert result.status == 1
    line = one_line(result.stderr)
    assert "the gateway confirmed, but from here" in line
    assert f"127.0.0.1:{dns_port}" in line and "ACMEGW_PROPAGATION_NAMESERVERS" in line
