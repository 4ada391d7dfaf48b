"""/metrics, /records and /openapi.json."""

from __future__ import annotations

import json

from providers.memory import MemoryProvider, MemorySettings
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic

ALICE = basic("alice", PASSWORDS["alice"])
CAROL = basic("carol", PASSWORDS["carol"])  # admin, limited to shop.example.test


def body(argument: str, value: str, name: str = "example.test") -> str:
    return json.dumps({"argument": argument, "domain_name": name, "challenge_content": value})


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        head, _, number = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(number)
    return 0.0


async def test_metrics_need_authentication(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=ALICE)).status == 200


async def test_metrics_count_requests_failures_and_latency(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    v = make_value()
    await client.post("/", data=body("setup", v), headers=ALICE)
    await client.post("/", data=body("setup", v), headers=basic("alice", "wrong"))
    await client.post(
        "/present", json={"fqdn": "_acme-challenge.evilexample.test", "value": v}, headers=ALICE
    )
    text = await (await client.get("/metrics", headers=ALICE)).text()
    assert metric(text, "acmegw_requests_total", api="native", status="201") == 1
    assert metric(text, "acmegw_requests_total", api="native", status="401") == 1
    assert metric(text, "acmegw_requests_total", api="httpreq", status="403") == 1
    assert metric(text, "acmegw_auth_failures_total", reason="bad credentials") == 1
    assert metric(text, "acmegw_provider_seconds_count", operation="add_txt", result="ok") == 1
    assert metric(text, "acmegw_journal_records") == 1


async def test_metrics_provider_failures(gateway: GatewayFactory) -> None:
    client, _ = await gateway(provider=MemoryProvider(MemorySettings(fail="down")))
    await client.post("/", data=body("setup", make_value()), headers=ALICE)
    text = await (await client.get("/metrics", headers=ALICE)).text()
    assert metric(text, "acmegw_requests_total", api="native", status="502") == 1
    assert metric(text, "acmegw_provider_seconds_count", operation="add_txt", result="error") == 1


async def test_records_for_admins_without_values(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    v = make_value()
    await client.post("/", data=body("setup", v, "shop.example.test"), headers=ALICE)
    # Outside carol's domains: not for her to see (tests/hostile/test_account_admin.py).
    await client.post("/", data=body("setup", make_value()), headers=ALICE)
    assert (await client.get("/records", headers=ALICE)).status == 403
    r = await client.get("/records", headers=CAROL)
    assert r.status == 200
    text = await r.text()
    assert v not in text
    (record,) = json.loads(text)["records"]
    assert record["fqdn"] == "_acme-challenge.shop.example.test"
    assert record["owner"] == "alice"
    assert record["state"] == "present"
    assert 0 <= record["age"] < 60


async def test_records_for_allowed_hosts(gateway: GatewayFactory) -> None:
    client, _ = await gateway(ALLOWED_HOSTS="127.0.0.1")
    assert (await client.get("/records")).status == 200


async def test_openapi_document(gateway: GatewayFactory) -> None:
    client, _ = await gateway(HTTPREQ_PREFIX="lego")
    r = await client.get("/openapi.json")
    assert r.status == 200
    doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert {
        "/",
        "/lego/present",
        "/lego/cleanup",
        "/update",
        "/register",
        "/healthz",
        "/metrics",
        "/records",
    } <= set(doc["paths"])
    assert set(doc["paths"]["/"]) == {"post", "put", "delete"}
