"""The original gateway's API: answers, validation, scoping, concurrency, failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from providers.base import ProviderError
from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic

ALICE = basic("alice", PASSWORDS["alice"])
BOB = basic("bob", PASSWORDS["bob"])


def body(argument: str, name: str, value: Any) -> str:
    return json.dumps({"argument": argument, "domain_name": name, "challenge_content": value})


async def test_setup_201_and_teardown_200(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    v = make_value()
    r = await client.post("/", data=body("setup", "example.test", v), headers=ALICE)
    assert r.status == 201
    assert await r.json() == {"fqdn": "_acme-challenge.example.test", "value": v}
    assert provider.values("_acme-challenge.example.test") == [v]
    r = await client.delete("/", data=body("teardown", "example.test", v), headers=ALICE)
    assert r.status == 200
    assert await r.json() == {"fqdn": "_acme-challenge.example.test", "value": v}
    assert provider.values("_acme-challenge.example.test") == []


@pytest.mark.parametrize(
    ("method", "argument"),
    [
        ("POST", "add"),
        ("PUT", "setup"),
        ("PUT", "add"),
        ("POST", "SETUP"),
    ],
)
async def test_setup_verbs(gateway: GatewayFactory, method: str, argument: str) -> None:
    client, provider = await gateway()
    v = make_value()
    r = await client.request(method, "/", data=body(argument, "example.test", v), headers=ALICE)
    assert r.status == 201
    assert v in provider.values("_acme-challenge.example.test")


async def test_teardown_by_post_and_remove(gateway: GatewayFactory) -> None:
    """The original's hook tears down with POST; "remove" is the alias."""
    client, provider = await gateway()
    v1, v2 = make_value(), make_value()
    for v in (v1, v2):
        assert (
            await client.post("/", data=body("setup", "example.test", v), headers=ALICE)
        ).status == 201
    r = await client.post("/", data=body("teardown", "example.test", v1), headers=ALICE)
    assert r.status == 200
    r = await client.put("/", data=body("remove", "example.test", v2), headers=ALICE)
    assert r.status == 200
    assert provider.values("_acme-challenge.example.test") == []


async def test_two_values_coexist_and_teardown_is_per_value(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    v1, v2 = make_value(), make_value()
    # mod_md for example.test + *.example.test: two setups at one name.
    await client.post("/", data=body("setup", "example.test", v1), headers=ALICE)
    await client.post("/", data=body("setup", "*.example.test", v2), headers=ALICE)
    assert sorted(provider.values("_acme-challenge.example.test")) == sorted([v1, v2])
    await client.delete("/", data=body("teardown", "example.test", v1), headers=ALICE)
    assert provider.values("_acme-challenge.example.test") == [v2]
    # Repeated teardown: 200, nothing changes.
    r = await client.delete("/", data=body("teardown", "example.test", v1), headers=ALICE)
    assert r.status == 200
    assert provider.values("_acme-challenge.example.test") == [v2]


async def test_any_path_is_the_native_api(gateway: GatewayFactory) -> None:
    """The original accepted its requests on any path."""
    client, provider = await gateway()
    v = make_value()
    r = await client.post("/dns01/hook", data=body("setup", "example.test", v), headers=ALICE)
    assert r.status == 201
    assert provider.values("_acme-challenge.example.test") == [v]


async def test_form_content_type_is_accepted(gateway: GatewayFactory) -> None:
    """The original README's curl wrapper sends JSON as a form body."""
    client, _ = await gateway()
    r = await client.post(
        "/",
        data=body("setup", "example.test", make_value()),
        headers={**ALICE, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status == 201


@pytest.mark.parametrize(
    ("name", "fqdn"),
    [
        ("EXAMPLE.test", "_acme-challenge.example.test"),
        ("example.test.", "_acme-challenge.example.test"),
        ("*.example.test", "_acme-challenge.example.test"),
        ("_acme-challenge.example.test", "_acme-challenge.example.test"),
        ("_ACME-Challenge.Www.Example.Test.", "_acme-challenge.www.example.test"),
        ("*.sub.example.org", "_acme-challenge.sub.example.org"),
    ],
)
async def test_name_forms(gateway: GatewayFactory, name: str, fqdn: str) -> None:
    client, provider = await gateway()
    v = make_value()
    r = await client.post("/", data=body("setup", name, v), headers=ALICE)
    assert r.status == 201, await r.text()
    assert (await r.json())["fqdn"] == fqdn
    assert provider.values(fqdn) == [v]


async def test_idna_name(gateway: GatewayFactory) -> None:
    client, provider = await gateway(DNSAPI_DOMAINS="bücher.example")
    v = make_value()
    r = await client.post("/", data=body("setup", "www.BÜCHER.example", v), headers=ALICE)
    assert r.status == 201
    assert provider.values("_acme-challenge.www.xn--bcher-kva.example") == [v]


@pytest.mark.parametrize(
    "name",
    [
        "evilexample.test",  # suffix without label boundary
        "example.test.evil.com",  # managed name as a prefix
        "xexample.org",
        "test",  # parent of a managed domain
        "example.com",
        "_acme-challenge.evilexample.test",
    ],
)
async def test_foreign_names_403(gateway: GatewayFactory, name: str) -> None:
    client, provider = await gateway()
    r = await client.post("/", data=body("setup", name, make_value()), headers=ALICE)
    assert r.status == 403
    text = await r.text()
    # The refusal names no managed or per-user domain the caller did not send.
    for domain in ("example.org", "example.test"):
        if domain not in name:
            assert domain not in text
    assert provider.calls == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ("not json", "body"),
        ("", "body"),
        ("[1, 2]", "body"),
        ('"setup"', "body"),
        ('{"domain_name": "example.test", "challenge_content": "%s"}', "argument"),
        (
            '{"argument": "create", "domain_name": "example.test", "challenge_content": "%s"}',
            "argument",
        ),
        ('{"argument": 1, "domain_name": "example.test", "challenge_content": "%s"}', "argument"),
        ('{"argument": "setup", "challenge_content": "%s"}', "domain_name"),
        ('{"argument": "setup", "domain_name": 5, "challenge_content": "%s"}', "domain_name"),
        (
            '{"argument": "setup", "domain_name": "a..example.test", "challenge_content": "%s"}',
            "domain_name",
        ),
        (
            '{"argument": "setup", "domain_name": "a.*.example.test", "challenge_content": "%s"}',
            "domain_name",
        ),
        (
            '{"argument": "setup", "domain_name": "a b.example.test", "challenge_content": "%s"}',
            "domain_name",
        ),
        (
            '{"argument": "setup", "domain_name": " example.test", "challenge_content": "%s"}',
            "domain_name",
        ),
        ('{"argument": "setup", "domain_name": "example.test"}', "challenge_content"),
        (
            '{"argument": "setup", "domain_name": "example.test", "challenge_content": "short"}',
            "challenge_content",
        ),
        (
            '{"argument": "setup", "domain_name": "example.test", "challenge_content": "%s="}',
            "challenge_content",
        ),
        (
            '{"argument": "setup", "domain_name": "example.test", "challenge_content": "%s"}',
            "challenge_content",
        ),
        (
            '{"argument": "setup", "domain_name": "example.test", "challenge_content": 42}',
            "challenge_content",
        ),
    ],
)
async def test_bad_input_400_names_field(gateway: GatewayFactory, payload: str, field: str) -> None:
    client, provider = await gateway()
    v = make_value()
    if payload.count("%s") and field == "challenge_content" and "%s=" not in payload:
        v = v[:-1] + "+"  # standard base64, not base64url
    data = payload % v if "%s" in payload else payload
    r = await client.post("/", data=data, headers=ALICE)
    assert r.status == 400, await r.text()
    answer = await r.json()
    assert answer["error"] == "bad_request"
    assert answer["message"].startswith(field + ":")
    assert provider.calls == []


async def test_delete_with_setup_is_400(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    r = await client.delete("/", data=body("setup", "example.test", make_value()), headers=ALICE)
    assert r.status == 400
    assert (await r.json())["message"].startswith("argument:")
    assert provider.calls == []


@pytest.mark.parametrize("method", ["GET", "PATCH", "HEAD", "OPTIONS"])
async def test_other_methods_405_with_allow(gateway: GatewayFactory, method: str) -> None:
    client, _ = await gateway()
    r = await client.request(method, "/", headers=ALICE)
    assert r.status == 405
    assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"POST", "PUT", "DELETE"}


async def test_oversized_body_413(gateway: GatewayFactory) -> None:
    client, provider = await gateway(MAX_BODY="1024")
    big = json.dumps(
        {
            "argument": "setup",
            "domain_name": "example.test",
            "challenge_content": make_value(),
            "pad": "x" * 5000,
        }
    )
    r = await client.post("/", data=big, headers=ALICE)
    assert r.status == 413
    assert provider.calls == []


async def test_oversized_chunked_body_413(gateway: GatewayFactory) -> None:
    client, provider = await gateway(MAX_BODY="1024")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 500

    r = await client.post("/", data=chunks(), headers=ALICE)
    assert r.status == 413
    assert provider.calls == []


async def test_per_user_scope(gateway: GatewayFactory) -> None:
    """bob may only use example.org; the refusal does not list his or others' domains."""
    client, provider = await gateway()
    r = await client.post("/", data=body("setup", "www.example.org", make_value()), headers=BOB)
    assert r.status == 201
    r = await client.post("/", data=body("setup", "example.test", make_value()), headers=BOB)
    assert r.status == 403
    assert "example.org" not in await r.text()
    assert "_acme-challenge.example.test" not in provider.records


async def test_per_user_scope_label_boundary(gateway: GatewayFactory) -> None:
    client, _ = await gateway(DNSAPI_DOMAINS="example.test,example.org,badexample.org")
    r = await client.post("/", data=body("setup", "badexample.org", make_value()), headers=BOB)
    assert r.status == 403


async def test_version1_teardown_removes_only_own_values(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    mine1, mine2, theirs = make_value(), make_value(), make_value()
    await client.post("/", data=body("setup", "example.org", mine1), headers=BOB)
    await client.post("/", data=body("setup", "example.org", mine2), headers=BOB)
    await client.post("/", data=body("setup", "example.org", theirs), headers=ALICE)
    r = await client.delete(
        "/", data=json.dumps({"argument": "teardown", "domain_name": "example.org"}), headers=BOB
    )
    assert r.status == 200
    answer = await r.json()
    assert answer["fqdn"] == "_acme-challenge.example.org"
    assert sorted(answer["values"]) == sorted([mine1, mine2])
    assert provider.values("_acme-challenge.example.org") == [theirs]


async def test_concurrent_setups_of_one_name(gateway: GatewayFactory) -> None:
    """Concurrent changes to one name are serialised: nothing is lost."""
    client, provider = await gateway()
    active = 0
    overlap = False
    original = provider.add_txt

    async def slow_add(fqdn: str, value: str) -> None:
        nonlocal active, overlap
        active += 1
        overlap = overlap or active > 1
        await asyncio.sleep(0.01)
        await original(fqdn, value)
        active -= 1

    provider.add_txt = slow_add  # type: ignore[method-assign]
    values = [make_value() for _ in range(20)]
    answers = await asyncio.gather(
        *(client.post("/", data=body("setup", "example.test", v), headers=ALICE) for v in values)
    )
    assert [a.status for a in answers] == [201] * 20
    assert not overlap
    assert sorted(provider.values("_acme-challenge.example.test")) == sorted(values)


async def test_provider_failure_502_one_line(gateway: GatewayFactory) -> None:
    provider = MemoryProvider()

    async def fail(fqdn: str, value: str) -> None:
        raise ProviderError("memory", "zone is locked\nsecond line", hint="try later")

    provider.add_txt = fail  # type: ignore[method-assign]
    client, _ = await gateway(provider=provider)
    r = await client.post("/", data=body("setup", "example.test", make_value()), headers=ALICE)
    assert r.status == 502
    answer = await r.json()
    assert answer["error"] == "provider_error"
    assert answer["message"] == "memory: zone is locked"
    assert "\n" not in answer["message"]


async def test_provider_unexpected_exception_502(gateway: GatewayFactory) -> None:
    provider = MemoryProvider()

    async def boom(fqdn: str, value: str) -> None:
        raise RuntimeError("secret-ish internals")

    provider.add_txt = boom  # type: ignore[method-assign]
    client, _ = await gateway(provider=provider)
    r = await client.post("/", data=body("setup", "example.test", make_value()), headers=ALICE)
    assert r.status == 502
    assert "secret-ish" not in await r.text()


async def test_provider_timeout_504(gateway: GatewayFactory) -> None:
    provider = MemoryProvider()

    async def hang(fqdn: str, value: str) -> None:
        await asyncio.sleep(30)

    provider.add_txt = hang  # type: ignore[method-assign]
    client, _ = await gateway(provider=provider, PROVIDER_TIMEOUT="0.2")
    r = await client.post("/", data=body("setup", "example.test", make_value()), headers=ALICE)
    assert r.status == 504
    assert (await r.json())["error"] == "timeout"


async def test_hung_provider_does_not_block_other_names(gateway: GatewayFactory) -> None:
    provider = MemoryProvider()
    original = provider.add_txt

    async def maybe_hang(fqdn: str, value: str) -> None:
        if fqdn.endswith("example.test"):
            await asyncio.sleep(2)
        await original(fqdn, value)

    provider.add_txt = maybe_hang  # type: ignore[method-assign]
    client, _ = await gateway(provider=provider, PROVIDER_TIMEOUT="5")
    slow = asyncio.ensure_future(
        client.post("/", data=body("setup", "example.test", make_value()), headers=ALICE)
    )
    await asyncio.sleep(0.05)
    fast = await asyncio.wait_for(
        client.post("/", data=body("setup", "example.org", make_value()), headers=ALICE), 1.0
    )
    assert fast.status == 201
    assert not slow.done()
    assert (await slow).status == 201


async def test_healthz_without_auth(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    r = await client.get("/healthz")
    assert r.status == 200
    assert await r.json() == {"status": "ok"}


async def test_deeply_nested_json_is_400_not_500(gateway: GatewayFactory) -> None:
    client, provider = await gateway()
    r = await client.post("/", data="[" * 4000 + "]" * 4000, headers=ALICE)
    assert r.status == 400
    assert (await r.json())["message"].startswith("body:")
    assert provider.calls == []
