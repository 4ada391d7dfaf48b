"""Logs: one audit line per change, JSON on request, and never a secret."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.logsetup import JsonFormatter
from gateway.service import value_tag
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic


def body(argument: str, value: str) -> str:
    return json.dumps(
        {"argument": argument, "domain_name": "example.test", "challenge_content": value}
    )


async def test_no_secret_at_any_level(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = await gateway(AUTH_CACHE_TTL="0")
    v = make_value()
    await client.post("/", data=body("setup", v), headers=basic("alice", PASSWORDS["alice"]))
    await client.post("/", data=body("setup", v), headers=basic("alice", "wrong-Pa55word!"))
    await client.post("/", data=body("setup", v), headers=basic("nobody", "other-Secret-9"))
    await client.delete("/", data=body("teardown", v), headers=basic("alice", PASSWORDS["alice"]))
    text = "\n".join(r.getMessage() for r in caplog.records)
    text += "\n".join(str(r.__dict__) for r in caplog.records)
    for secret in (PASSWORDS["alice"], "wrong-Pa55word!", "other-Secret-9", v):
        assert secret not in text
    assert "$scrypt$" not in text


async def test_audit_line_per_change(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="acmegw.audit")
    client, _ = await gateway()
    v = make_value()
    await client.post("/", data=body("setup", v), headers=basic("alice", PASSWORDS["alice"]))
    await client.delete("/", data=body("teardown", v), headers=basic("alice", PASSWORDS["alice"]))
    audits = [r for r in caplog.records if r.name == "acmegw.audit"]
    assert len(audits) == 2
    first = audits[0].audit  # type: ignore[attr-defined]
    assert first["user"] == "alice"
    assert first["client"] == "127.0.0.1"
    assert first["action"] == "add"
    assert first["fqdn"] == "_acme-challenge.example.test"
    assert first["value"] == value_tag(v)
    assert first["result"] == "ok"
    assert isinstance(first["ms"], int)
    assert audits[1].audit["action"] == "remove"  # type: ignore[attr-defined]


async def test_failed_change_is_audited_with_reason(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from providers.memory import MemoryProvider, MemorySettings

    caplog.set_level(logging.INFO, logger="acmegw.audit")
    client, _ = await gateway(provider=MemoryProvider(MemorySettings(fail="zone locked")))
    await client.post(
        "/", data=body("setup", make_value()), headers=basic("alice", PASSWORDS["alice"])
    )
    (record,) = [r for r in caplog.records if r.name == "acmegw.audit"]
    assert record.audit["result"].startswith("502 memory: zone locked")  # type: ignore[attr-defined]


def test_json_formatter_lines() -> None:
    record = logging.LogRecord("acmegw.audit", logging.INFO, __file__, 1, "user=%s", ("bob",), None)
    record.audit = {"user": "bob", "result": "ok"}
    line = JsonFormatter().format(record)
    data = json.loads(line)
    assert data["message"] == "user=bob"
    assert data["user"] == "bob"
    assert data["level"] == "info"
    assert data["time"].endswith("Z")
    assert "\n" not in line
