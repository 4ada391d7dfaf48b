"""A provider that hangs, fails, crashes or is slow.

:class:`FaultyProvider` is the in-memory provider with faults switched on per
call: a value starting with ``HANG`` never returns (until the gateway's
``PROVIDER_TIMEOUT`` cancels it), ``FAIL`` raises a provider error, ``BOOM``
raises an unexpected exception, ``SLOW`` takes 0.3 s, and an added ``LATE``
value is written but its answer never comes (a request that reached the API
before the connection hung). Every fault can be switched off later
(``healed``), as when an API comes back.

What must hold (README "Security model", "Nothing false, nothing left behind"):
other names keep being served while one call hangs; the answers are 504 for a
timeout and 502 for a failure, with one line naming the provider; the journal
keeps every value that may be in DNS (``adding``/``removing``), so once the
provider works again the janitor removes them and nothing is left over.
"""

from __future__ import annotations

import asyncio
import time

from gateway.keys import JANITOR, JOURNAL
from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.faults.conftest import Client, GatewayFactory, body


class FaultyProvider(MemoryProvider):
    def __init__(self) -> None:
        super().__init__()
        self.healed = False
        self.started: list[str] = []  # values whose call began
        self.cancelled: list[str] = []

    async def _fault(self, value: str) -> None:
        self.started.append(value)
        if self.healed:
            return
        if value.startswith("HANG"):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.append(value)
                raise
        if value.startswith("FAIL"):
            raise self.error("the API answered 500 Internal Server Error")
        if value.startswith("BOOM"):
            raise RuntimeError("a bug in the provider\nwith a second line")
        if value.startswith("SLOW"):
            await asyncio.sleep(0.3)

    async def add_txt(self, fqdn: str, value: str) -> None:
        await self._fault(value)
        await super().add_txt(fqdn, value)
        if value.startswith("LATE") and not self.healed:
            await asyncio.Event().wait()

    async def remove_txt(self, fqdn: str, value: str) -> None:
        await self._fault(value)
        await super().remove_txt(fqdn, value)


def value(kind: str) -> str:
    return (kind + make_value())[:43]


async def post(client: Client, argument: str, name: str, val: str) -> tuple[int, dict[str, str]]:
    r = await client.post("/", json=body(argument, name, val))
    return r.status, await r.json()


async def journal_states(client: Client) -> dict[str, str]:
    return {r.value: r.state for r in await client.app[JOURNAL].all()}


async def sweep_everything(client: Client) -> int:
    janitor = client.app[JANITOR]
    janitor.max_age = 0.0
    await asyncio.sleep(0.01)  # every record is now older than max_age
    return await janitor.sweep()


async def test_a_hung_call_is_504_while_other_names_are_served(
    fault_gateway: GatewayFactory,
) -> None:
    provider = FaultyProvider()
    client = await fault_gateway(provider, PROVIDER_TIMEOUT="1.5")
    hung_value = value("HANG")
    started = time.monotonic()
    hung = asyncio.create_task(post(client, "setup", "hung.example.test", hung_value))
    while hung_value not in provider.started:
        await asyncio.sleep(0.01)

    # While it hangs, other names go through at full speed, one after another.
    others: list[float] = []
    for i in range(10):
        t0 = time.monotonic()
        status, _ = await post(client, "setup", f"other{i}.example.test", make_value())
        assert status == 201
        others.append(time.monotonic() - t0)
    assert not hung.done()
    assert max(others) < 0.5, others
    assert (await client.get("/healthz")).status == 200

    status, answer = await hung
    took = time.monotonic() - started
    assert status == 504
    assert answer["error"] == "timeout" and "memory" in answer["message"]
    assert "\n" not in answer["message"]
    assert 1.4 < took < 5, took
    assert provider.cancelled == [hung_value]  # the call was cancelled, not left running
    # The value may have reached DNS before the deadline: it stays journaled, never
    # present, and its removal starts as soon as the cancelled call has ended.
    assert (await journal_states(client))[hung_value] in ("adding", "removing")


async def test_a_request_behind_a_hung_call_for_the_same_name_goes_through_after_it(
    fault_gateway: GatewayFactory,
) -> None:
    """Changes to one name are serialised; a timeout releases the name."""
    provider = FaultyProvider()
    client = await fault_gateway(provider, PROVIDER_TIMEOUT="1")
    hung_value, good = value("HANG"), make_value()
    hung = asyncio.create_task(post(client, "setup", "same.example.test", hung_value))
    while hung_value not in provider.started:
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    status, _ = await post(client, "setup", "same.example.test", good)
    assert status == 201
    assert (await hung)[0] == 504
    assert 0.5 < time.monotonic() - t0 < 4  # it waited for the hung call's deadline
    assert provider.values("_acme-challenge.same.example.test") == [good]


async def test_failures_are_502_one_line_and_the_janitor_cleans_up_once_healed(
    fault_gateway: GatewayFactory,
) -> None:
    provider = FaultyProvider()
    client = await fault_gateway(provider, PROVIDER_TIMEOUT="5")
    fail_add, boom_add, fail_remove = value("FAIL"), value("BOOM"), value("FAIL")

    status, answer = await post(client, "setup", "a.example.test", fail_add)
    assert status == 502 and answer["error"] == "provider_error"
    assert answer["message"].startswith("memory")
    assert "500 Internal Server Error" in answer["message"]
    status, answer = await post(client, "setup", "b.example.test", boom_add)
    assert status == 502 and answer["message"] == "memory: unexpected RuntimeError"

    # A value that was added while the API worked, whose removal then fails.
    provider.healed = True
    assert (await post(client, "setup", "c.example.test", fail_remove))[0] == 201
    provider.healed = False
    status, answer = await post(client, "teardown", "c.example.test", fail_remove)
    assert status == 502
    assert provider.values("_acme-challenge.c.example.test") == [fail_remove]

    # The journal holds all three: they may be in DNS.
    assert await journal_states(client) == {
        fail_add: "adding", boom_add: "adding", fail_remove: "removing"
    }
    # While the API still fails, the janitor keeps them for the next round.
    assert await sweep_everything(client) == 0
    assert len(await journal_states(client)) == 3

    provider.healed = True
    assert await sweep_everything(client) == 3
    assert await journal_states(client) == {}
    assert provider.records == {}


async def test_slow_calls_for_different_names_overlap(fault_gateway: GatewayFactory) -> None:
    provider = FaultyProvider()
    client = await fault_gateway(provider, PROVIDER_TIMEOUT="5")
    t0 = time.monotonic()
    answers = await asyncio.gather(
        *(post(client, "setup", f"slow{i}.example.test", value("SLOW")) for i in range(20))
    )
    took = time.monotonic() - t0
    assert [status for status, _ in answers] == [201] * 20
    assert took < 3.0, f"20 calls of 0.3 s took {took:.1f} s: they ran one after another"


async def test_a_slow_provider_past_its_deadline_is_504_and_then_recovers(
    fault_gateway: GatewayFactory,
) -> None:
    provider = FaultyProvider()
    client = await fault_gateway(provider, PROVIDER_TIMEOUT="0.1")
    slow = value("SLOW")
    status, answer = await post(client, "setup", "late.example.test", slow)
    assert status == 504 and "0.1s" in answer["message"]
    provider.healed = True
    assert (await post(client, "setup", "late.example.test", slow))[0] == 201
    assert await journal_states(client) == {slow: "present"}
    assert (await post(client, "teardown", "late.example.test", slow))[0] == 200
    assert await journal_states(client) == {} and provider.records == {}


async def test_a_write_whose_answer_never_came_is_removed_once_the_call_is_cancelled(
    fault_gateway: GatewayFactory,
) -> None:
    provider = FaultyProvider()
    client = await fault_gateway(provider, PROVIDER_TIMEOUT="0.3")
    late = value("LATE")
    status, _ = await post(client, "setup", "late.example.test", late)
    assert status == 504
    deadline = time.monotonic() + 10
    while await journal_states(client) or provider.records:
        assert time.monotonic() < deadline, (await journal_states(client), provider.records)
        await asyncio.sleep(0.02)
