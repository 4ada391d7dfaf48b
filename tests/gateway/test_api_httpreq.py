"""lego httpreq: both modes, prefix, delegation targets, and failure answers."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

from providers.memory import MemoryProvider, MemorySettings
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic

ALICE = basic("alice", PASSWORDS["alice"])
BOB = basic("bob", PASSWORDS["bob"])


@pytest.mark.parametrize(
    "fqdn",
    [
        "_acme-challenge.example.test.",
        "_acme-challenge.example.test",
        "_ACME-Challenge.Example.Test.",
    ],
)
async def test_default_mode_present_and_cleanup(gateway: GatewayFactory, fqdn: str) -> None:
    client, provider = await gateway()
    v = make_value()
    r = await client.post("/present", json={"fqdn": fqdn, "value": v}, headers=ALICE)
    assert r.status == 200
    assert await r.json() == {"fqdn": "_acme-challenge.example.test.", "value": v}
    assert provider.values("_acme-challenge.example.test") == [v]
    r = await client.post("/cleanup", json={"fqdn": fqdn, "value": v}, headers=ALICE)
    assert r.status == 200
    assert await r.json() == {"fqdn": "_acme-challenge.example.test.", "value": v}
    assert provider.values("_acme-challenge.example.test") == []


async def test_raw_mode_value_from_key_authorization(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    key_auth = "token-abc.thumbprint-xyz"
    expected = base64.urlsafe_b64encode(hashlib.sha256(key_auth.encode()).digest()).decode()
    expected = expected.rstrip("=")
    body = {"domain": "*.example.test", "token": "token-abc", "keyAuth": key_auth}
    r = await client.post("/present", json=body, headers=ALICE)
    assert r.status == 200
    assert await r.json() == {"fqdn": "_acme-challenge.example.test.", "value": expected}
    assert provider.values("_acme-challenge.example.test") == [expected]
    assert (await client.post("/cleanup", json=body, headers=ALICE)).status == 200
    assert provider.values("_acme-challenge.example.test") == []


async def test_two_values_coexist(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    v1, v2 = make_value(), make_value()
    for v in (v1, v2):
        await client.post(
            "/present", json={"fqdn": "_acme-challenge.example.test.", "value": v}, headers=ALICE
        )
    assert sorted(provider.values("_acme-challenge.example.test")) == sorted([v1, v2])


async def test_prefix(gateway: GatewayFactory) -> None:
    client, provider = await gateway(HTTPREQ_PREFIX="/lego/v1/")
    v = make_value()
    r = await client.post(
        "/lego/v1/present",
        json={"fqdn": "_acme-challenge.example.test.", "value": v},
        headers=ALICE,
    )
    assert r.status == 200
    assert provider.values("_acme-challenge.example.test") == [v]


async def test_delegation_target_accepted_for_that_names_users(gateway: GatewayFactory) -> None:
    client, provider = await gateway(
        DELEGATIONS="example.org=x1.validation.example.net, example.test=x2.validation.example.net"
    )
    v = make_value()
    # lego follows the CNAME and sends the target.
    r = await client.post(
        "/present", json={"fqdn": "x1.validation.example.net.", "value": v}, headers=BOB
    )
    assert r.status == 200
    assert provider.values("x1.validation.example.net") == [v]
    # bob may not use example.test, so its delegation target is refused too.
    r = await client.post(
        "/present", json={"fqdn": "x2.validation.example.net.", "value": v}, headers=BOB
    )
    assert r.status == 403
    # A name that is neither a challenge name nor a configured target.
    r = await client.post(
        "/present", json={"fqdn": "x3.validation.example.net.", "value": v}, headers=ALICE
    )
    assert r.status == 400
    # The challenge name of a delegated name is written at its target.
    r = await client.post(
        "/present", json={"fqdn": "_acme-challenge.example.org.", "value": v}, headers=BOB
    )
    assert r.status == 200
    assert (await r.json())["fqdn"] == "x1.validation.example.net."
    assert "_acme-challenge.example.org" not in provider.records


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"fqdn": "_acme-challenge.evilexample.test.", "value": make_value()}, 403),
        ({"fqdn": "_acme-challenge.example.test.", "value": "short"}, 400),
        ({"fqdn": "_acme-challenge.example.test."}, 400),
        ({"value": make_value()}, 400),
        ({"fqdn": "www.example.test.", "value": make_value()}, 400),
        ({"fqdn": "*.example.test.", "value": make_value()}, 400),
        ({"fqdn": 5, "value": make_value()}, 400),
        ({"domain": "example.test", "keyAuth": ""}, 400),
        ({"domain": "example.test", "keyAuth": "x" * 600}, 400),
        ({"domain": "example.test", "keyAuth": "bad\nvalue"}, 400),
        ({"keyAuth": "a.b"}, 400),
        ({"domain": "evilexample.test", "keyAuth": "a.b"}, 403),
    ],
)
async def test_failures_are_never_200(
    gateway: GatewayFactory, body: dict[str, object], status: int
) -> None:
    client, provider = await gateway()
    r = await client.post("/present", json=body, headers=ALICE)
    assert r.status == status
    assert "error" in await r.json()
    assert provider.calls == []


async def test_bad_credentials_401(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    r = await client.post(
        "/present",
        json={"fqdn": "_acme-challenge.example.test.", "value": make_value()},
        headers=basic("alice", "wrong"),
    )
    assert r.status == 401
    assert "WWW-Authenticate" in r.headers
    assert provider.calls == []


async def test_provider_down_502(gateway: GatewayFactory) -> None:
    client, _ = await gateway(provider=MemoryProvider(MemorySettings(fail="connection refused")))
    r = await client.post(
        "/present",
        data=json.dumps({"fqdn": "_acme-challenge.example.test.", "value": make_value()}),
        headers=ALICE,
    )
    assert r.status == 502


async def test_get_is_405(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    r = await client.get("/present", headers=ALICE)
    assert r.status == 405
