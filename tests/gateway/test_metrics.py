"""The metrics that contrib/prometheus/acmegw-rules.yml alerts on, produced by the code.

In-process (the app behind aiohttp's test client, the in-memory provider with
faults): a hung provider call counts as ``result="timeout"``, a setup that no
nameserver confirms as a propagation ``timeout``, a janitor removal that fails
in ``acmegw_janitor_failures_total``; the journal's oldest record and the
janitor's settings are exported; and every labelled series an alert reads
exists at zero before the first event (or ``increase()`` would miss it).
"""

from __future__ import annotations

import asyncio
import json
from typing import ClassVar

from gateway.keys import JANITOR
from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic
from tests.gateway.test_admin import metric
from tests.system import free_port

ALICE = basic("alice", PASSWORDS["alice"])


def body(argument: str, value: str) -> str:
    return json.dumps(
        {"argument": argument, "domain_name": "example.test", "challenge_content": value}
    )


class HangingProvider(MemoryProvider):
    async def add_txt(self, fqdn: str, value: str) -> None:
        await asyncio.Event().wait()


class VisibleProvider(MemoryProvider):
    """Claims its records are in public DNS, so setups wait for the nameservers."""

    dns_visible: ClassVar[bool] = True


class RemovalFails(MemoryProvider):
    async def remove_txt(self, fqdn: str, value: str) -> None:
        raise self.error("the API answered 500")


async def test_every_alerted_series_exists_at_zero_from_the_start(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    text = await (await client.get("/metrics", headers=ALICE)).text()
    for operation in ("add_txt", "remove_txt"):
        for result in ("ok", "error", "timeout"):
            line = f'acmegw_provider_seconds_count{{operation="{operation}",result="{result}"}} 0.0'
            assert line in text
    for result in ("ok", "error", "timeout"):
        assert f'acmegw_propagation_seconds_count{{result="{result}"}} 0.0' in text
    assert "acmegw_janitor_failures_total 0.0" in text
    assert "acmegw_journal_oldest_record_age_seconds 0.0" in text
    # Without TLS there is no certificate, and no zero for an expiry alert to fire on.
    assert "acmegw_tls_certificate" not in text


async def test_a_hung_provider_call_counts_as_timeout(gateway: GatewayFactory) -> None:
    client, _ = await gateway(provider=HangingProvider(), PROVIDER_TIMEOUT="0.2s")
    r = await client.post("/", data=body("setup", make_value()), headers=ALICE)
    assert r.status == 504
    text = await (await client.get("/metrics", headers=ALICE)).text()
    assert metric(text, "acmegw_provider_seconds_count", operation="add_txt", result="timeout") == 1


async def test_a_value_no_nameserver_confirms_counts_as_propagation_timeout(
    gateway: GatewayFactory,
) -> None:
    client, _ = await gateway(
        provider=VisibleProvider(),
        PROPAGATION_CHECK="authoritative",
        PROPAGATION_NAMESERVERS=f"127.0.0.1:{free_port()}",  # nothing answers there
        PROPAGATION_TIMEOUT="1s",
    )
    r = await client.post("/", data=body("setup", make_value()), headers=ALICE)
    assert r.status == 504, await r.text()
    text = await (await client.get("/metrics", headers=ALICE)).text()
    assert metric(text, "acmegw_propagation_seconds_count", result="timeout") == 1


async def test_janitor_failures_oldest_record_and_settings(gateway: GatewayFactory) -> None:
    client, _ = await gateway(provider=RemovalFails(), RECORD_MAX_AGE="2h", JANITOR_INTERVAL="90s")
    assert (await client.post("/", data=body("setup", make_value()), headers=ALICE)).status == 201
    await asyncio.sleep(0.05)
    text = await (await client.get("/metrics", headers=ALICE)).text()
    assert metric(text, "acmegw_record_max_age_seconds") == 7200
    assert metric(text, "acmegw_janitor_interval_seconds") == 90
    age = metric(text, "acmegw_journal_oldest_record_age_seconds")
    assert 0 < age < 60

    janitor = client.app[JANITOR]
    janitor.max_age = 0.0  # every record is now due
    assert await janitor.sweep() == 0
    text = await (await client.get("/metrics", headers=ALICE)).text()
    assert metric(text, "acmegw_janitor_failures_total") == 1
    assert metric(text, "acmegw_janitor_removals_total") == 0
    assert metric(text, "acmegw_record_max_age_seconds") == 0  # follows a reload's new value
    assert metric(text, "acmegw_journal_oldest_record_age_seconds") >= age
