"""Every refusal leaves one audit line, and a flood leaves a bounded number (gateway/refusals.py).

The process test runs ``python -m gateway`` (tests.gateway.procs) with JSON logs and
reads its ``acmegw.audit`` lines: a name outside the user's domains, a name outside
``DNSAPI_DOMAINS``, a wrong password, no credentials, then a wrong-password flood
from the same address (401 until the failure limit, 429 after). The limits themselves
are tested with a hand-driven clock.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests

from gateway.refusals import Refusal, RefusalAudit
from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import gateway_settings, passwords_only, running_gateway
from tests.system import free_port

USER, PASSWORD = "webshop", "correct horse: battery"


def audit_lines(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line["logger"] == "acmegw.audit"]


def test_refusals_are_audit_lines_and_a_flood_is_summarised(tmp_path: Path) -> None:
    PasswordFile(tmp_path / "acmepasswd").set_user(USER, PASSWORD, domains=["shop.example.test"])
    port = free_port()
    settings = gateway_settings(tmp_path, port, **passwords_only(tmp_path), LOG_FORMAT="json")
    url = f"http://127.0.0.1:{port}/"

    def setup(name: str, auth: tuple[str, str] | None) -> int:
        body = {"argument": "setup", "domain_name": name, "challenge_content": make_value()}
        return requests.post(url, json=body, auth=auth, timeout=30).status_code

    with running_gateway(tmp_path, settings) as gw:
        assert setup("shop.example.test", (USER, PASSWORD)) == 201
        assert setup("www.example.test", (USER, PASSWORD)) == 403
        assert setup("example.net", (USER, PASSWORD)) == 403
        assert setup("shop.example.test", (USER, "not the password")) == 401
        assert setup("shop.example.test", None) == 401
        flood = [setup("shop.example.test", ("mallory", f"guess {n}")) for n in range(30)]
        assert set(flood) == {401, 429}  # 429 once the failure limit is reached
        assert gw.stop() == 0
    sent = 4 + len(flood)
    entries = audit_lines(gw.stderr)
    assert [e["action"] for e in entries if not e["action"].startswith("refus")] == ["add"]
    refused = [e for e in entries if e["action"] == "refused"]
    assert [(e["user"], e["client"], e["fqdn"], e["result"]) for e in refused[:4]] == [
        (USER, "127.0.0.1", "_acme-challenge.www.example.test",
         "403 outside the user's domains (shop.example.test)"),
        (USER, "127.0.0.1", "_acme-challenge.example.net", "403 outside DNSAPI_DOMAINS"),
        (USER, "127.0.0.1", "-", "401 invalid user name or password"),
        ("-", "127.0.0.1", "-", "401 authentication required"),
    ]
    assert {(e["user"], e["result"].partition(";")[0]) for e in refused[4:]} <= {
        ("mallory", "401 invalid user name or password"),
        ("mallory", "429 too many failed attempts"),
    }
    summaries = [e for e in entries if e["action"] == "refusals-suppressed"]
    assert summaries, gw.stderr
    assert all(e["client"] == "127.0.0.1" and e["user"] == "mallory" for e in summaries)
    assert "more refusals from 127.0.0.1 suppressed in the last 60s" in summaries[0]["message"]
    # Every refusal is either a line or counted in a summary; at most 10 lines a window
    # (the flood fits one window unless the machine is very slow: then one more).
    assert len(refused) + sum(e["count"] for e in summaries) == sent
    assert len(refused) <= 10 * (len(summaries) + 1)
    if len(summaries) == 1:
        assert len(refused) == 10 and summaries[0]["count"] == sent - 10
    assert PASSWORD not in gw.stderr and "guess 1" not in gw.stderr


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusal(client: str, n: int = 0) -> Refusal:
    name = f"_acme-challenge.n{n}.example.test"
    return Refusal("bob", client, name, "403 outside DNSAPI_DOMAINS")


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "acmegw.audit"]


def test_per_client_limit_and_the_summary_when_the_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="acmegw.audit")
    clock = Clock()
    log = RefusalAudit(per_client=3, total=100, window=60, clock=clock)
    for n in range(5):
        log.refused(refusal("192.0.2.7", n))
    log.refused(refusal("192.0.2.8"))
    assert len(messages(caplog)) == 4
    clock.now += 61  # the next refusal starts a new window, after the old one's summary
    log.refused(refusal("192.0.2.7", 9))
    assert messages(caplog)[4:] == [
        "2 more refusals from 192.0.2.7 suppressed in the last 60s (last: user=bob "
        "fqdn=_acme-challenge.n4.example.test result=403 outside DNSAPI_DOMAINS)",
        "user=bob client=192.0.2.7 action=refused fqdn=_acme-challenge.n9.example.test "
        "result=403 outside DNSAPI_DOMAINS",
    ]


def test_a_flood_from_many_addresses_is_bounded_too(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="acmegw.audit")
    log = RefusalAudit(per_client=10, total=20, window=60, top=3, clock=Clock())
    clients = [f"198.51.100.{n}" for n in range(30)] + [f"2001:db8::{n:x}" for n in range(50)]
    for client in clients:
        log.refused(refusal(client))
    log.flush()
    lines = messages(caplog)
    assert len(lines) == 20 + 3 + 1
    # Each remaining IPv4 address counts alone; the IPv6 ones are one /64.
    assert lines[20] == ("50 more refusals from 2001:db8::/64 suppressed in the last 60s "
                         "(last: user=bob fqdn=_acme-challenge.n0.example.test "
                         "result=403 outside DNSAPI_DOMAINS)")
    assert lines[-1] == "8 more refusals from 8 more clients suppressed in the last 60s"


def test_a_user_name_cannot_forge_fields_or_lines() -> None:
    from gateway.refusals import _shown

    assert _shown("alice") == "alice"
    assert _shown("x client=10.0.0.1\nuser=root") == '"x client=10.0.0.1\\nuser=root"'
    assert len(_shown("a" * 500)) == 64
