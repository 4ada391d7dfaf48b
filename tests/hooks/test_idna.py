"""Internationalised names through the hook, as CAs and browsers spell them (IDNA 2008).

A client may hand the hook ``straße.example.test``; the CA validates
``_acme-challenge.xn--strae-oqa.example.test`` (UTS #46 mapping, then IDNA 2008),
not IDNA 2003's ``strasse``. The hook passes the name to a real gateway
(in-process, memory provider), which maps it; a name that is not valid IDNA 2008
ends the run with one line saying so. The gateway's own host name in
``ACMEGW_URL`` is looked up under its IDNA 2008 form too.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from tests.conftest import make_value
from tests.hooks.conftest import GatewayFactory, call, hook_env, one_line

CA_NAME = "_acme-challenge.xn--strae-oqa.example.test"


async def test_mod_md_setup_of_a_unicode_name_lands_at_the_idna_2008_name(
    gateway: GatewayFactory,
) -> None:
    gw = await gateway(DNSAPI_DOMAINS="straße.example.test")
    value = make_value()
    result = await call(["setup", "straße.example.test", value], hook_env(gw.url))
    assert (result.status, result.stderr) == (0, "")
    assert gw.provider.values(CA_NAME) == [value]
    assert gw.provider.values("_acme-challenge.strasse.example.test") == []
    assert (await call(["teardown", "straße.example.test", value], hook_env(gw.url))).status == 0
    assert gw.provider.records == {}


async def test_a_name_that_is_not_idna_2008_is_one_clear_line(gateway: GatewayFactory) -> None:
    gw = await gateway(DNSAPI_DOMAINS="example.test")
    result = await call(["setup", "\u2603.example.test", make_value()], hook_env(gw.url))
    assert result.status == 1
    line = one_line(result.stderr)
    assert "answered 400: domain_name:" in line and "not valid IDNA 2008" in line
    assert gw.provider.records == {}


async def test_a_unicode_gateway_host_is_looked_up_as_its_idna_2008_name(
    gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    gw = await gateway()
    port = int(gw.url.rsplit(":", 1)[1].strip("/"))
    asked: list[object] = []
    real = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        # Only the IDNA 2008 name resolves (to the gateway): as in the DNS, where the
        # IDNA 2003 name would be another host or none.
        asked.append(host)
        if host in (b"gw.xn--strae-oqa.example.test", "gw.xn--strae-oqa.example.test"):
            return real("127.0.0.1", *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    value = make_value()
    env = hook_env(f"http://gw.Straße.example.test:{port}/", ACMEGW_INSECURE_HTTP="1")
    result = await call(["setup", "example.test", value], env)
    assert (result.status, result.stderr) == (0, ""), asked
    assert gw.provider.values("_acme-challenge.example.test") == [value]
