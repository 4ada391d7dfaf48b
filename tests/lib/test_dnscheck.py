"""lib.dnscheck against a real BIND primary and a secondary whose lag the test controls.

The secondary gets no NOTIFY and has an hour's refresh, so it keeps serving the
old zone until ``secondary.sync()`` (rndc retransfer): "the secondary lacks the
value" is a fact the test sets up, not a race it hopes to win.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from lib.dnscheck import (
    DiscoveryError,
    PropagationSettings,
    PropagationTimeout,
    authoritative_servers,
    format_server,
    parse_server,
    wait_for_txt,
)
from lib.settings import Settings
from tests.conftest import make_value
from tests.servers.bind import BindServer, bind_lagging_pair  # noqa: F401
from tests.system import free_port

Pair = tuple[BindServer, BindServer]
system = pytest.mark.system
NAME = "_acme-challenge.www.example.test"


def both(pair: Pair, *, timeout: float = 15.0, first_check: float = 0.05,
         max_interval: float = 2.0) -> PropagationSettings:
    primary, secondary = pair
    return PropagationSettings(nameservers=(primary.address, secondary.address),
                               timeout=timeout, first_check=first_check,
                               max_interval=max_interval)


async def still_waiting(task: asyncio.Task[list[str]], secondary: BindServer, name: str,
                        value: str, seconds: float = 0.6) -> None:
    """Assert that *task* keeps waiting for *seconds* while *secondary* lacks *value*."""
    await asyncio.sleep(seconds)
    assert value not in await asyncio.to_thread(secondary.txt, name)
    assert not task.done(), "returned while the secondary did not serve the value"


@system
async def test_returns_only_when_both_serve(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, secondary = bind_lagging_pair
    value = make_value()
    await asyncio.to_thread(primary.update_txt, NAME, value)
    task = asyncio.create_task(wait_for_txt(NAME, value, both(bind_lagging_pair)))
    await still_waiting(task, secondary, NAME, value)
    await asyncio.to_thread(secondary.sync)
    served = await asyncio.wait_for(task, 10)
    # Right after it returns, both answer with the value.
    assert value in primary.txt(NAME)
    assert value in secondary.txt(NAME)
    assert served == [primary.address, secondary.address]


@system
async def test_timeout_names_the_lagging_server(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, secondary = bind_lagging_pair
    value = make_value()
    await asyncio.to_thread(primary.update_txt, NAME, value)
    start = time.monotonic()
    with pytest.raises(PropagationTimeout) as info:
        await wait_for_txt(NAME, value, both(bind_lagging_pair, timeout=0.8))
    assert 0.7 < time.monotonic() - start < 3.0
    assert info.value.lagging == [secondary.address]
    assert info.value.served == [primary.address]
    assert info.value.fqdn == NAME
    assert secondary.address in str(info.value)


@system
async def test_follows_cname_to_the_target(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, secondary = bind_lagging_pair
    alias, target = next(iter(primary.cnames.items()))
    value = make_value()
    await asyncio.to_thread(primary.update_txt, target, value)
    task = asyncio.create_task(wait_for_txt(alias, value, both(bind_lagging_pair)))
    await still_waiting(task, secondary, target, value)
    await asyncio.to_thread(secondary.sync)
    assert await asyncio.wait_for(task, 10) == [primary.address, secondary.address]
    assert value in secondary.txt(target)


@system
async def test_value_already_served_returns_at_once(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, secondary = bind_lagging_pair
    value = make_value()
    await asyncio.to_thread(primary.update_txt, NAME, value)
    await asyncio.to_thread(secondary.sync)
    # A first look only after max_interval would take >= 5 s here.
    settings = both(bind_lagging_pair, max_interval=5.0, first_check=5.0)
    start = time.monotonic()
    assert await wait_for_txt(NAME, value, settings) == [primary.address, secondary.address]
    assert time.monotonic() - start < 1.0


@system
async def test_first_recheck_is_quick(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, _ = bind_lagging_pair
    value = make_value()
    settings = PropagationSettings(nameservers=(primary.address,), timeout=10,
                                   first_check=0.05, max_interval=5.0)
    task = asyncio.create_task(wait_for_txt(NAME, value, settings))
    await asyncio.sleep(0.02)  # the first look (at once) finds nothing
    await asyncio.to_thread(primary.update_txt, NAME, value)
    written = time.monotonic()
    await asyncio.wait_for(task, 10)
    # Rechecks after 50 ms, then a little longer each time: well before the 5 s max_interval.
    assert time.monotonic() - written < 1.0


@system
async def test_delay_is_added_after_serving(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, _ = bind_lagging_pair
    value = make_value()
    await asyncio.to_thread(primary.update_txt, NAME, value)
    settings = PropagationSettings(nameservers=(primary.address,), delay=0.4)
    start = time.monotonic()
    await wait_for_txt(NAME, value, settings)
    assert time.monotonic() - start >= 0.4


@system
async def test_discovery_finds_ns_set_through_the_resolver(bind_lagging_pair: Pair) -> None:  # noqa: F811
    primary, secondary = bind_lagging_pair
    # example.test carries glue for ns1/ns2; example.org's NS names live in example.test.
    for name, zone in ((NAME, "example.test"), ("_acme-challenge.www.example.org", "example.org"),
                       ("deep.below.example.org", "example.org")):
        authority = await authoritative_servers(name, resolver_nameservers=[primary.address],
                                                port=secondary.port)
        assert authority.zone == zone
        assert authority.ns_names == ("ns1.example.test", "ns2.example.test")
        assert authority.servers == (secondary.address,)
    with pytest.raises(DiscoveryError):
        await authoritative_servers("_acme-challenge.example.net",
                                    resolver_nameservers=[primary.address], query_timeout=1)


@system
async def test_discovered_servers_are_waited_for(bind_lagging_pair: Pair) -> None:  # noqa: F811
    """Discovery through the primary, with the port pointing at the lagging secondary."""
    primary, secondary = bind_lagging_pair
    alias, target = next(iter(primary.cnames.items()))
    value = make_value()
    await asyncio.to_thread(primary.update_txt, target, value)
    settings = PropagationSettings(timeout=15, port=secondary.port)
    task = asyncio.create_task(
        wait_for_txt(alias, value, settings, resolver_nameservers=[primary.address]))
    await still_waiting(task, secondary, target, value)
    await asyncio.to_thread(secondary.sync)
    assert await asyncio.wait_for(task, 10) == [secondary.address]


async def test_dead_server_times_out() -> None:
    dead = f"127.0.0.1:{free_port()}"
    settings = PropagationSettings(nameservers=(dead,), timeout=0.5, query_timeout=0.2)
    with pytest.raises(PropagationTimeout) as info:
        await wait_for_txt(NAME, make_value(), settings)
    assert info.value.lagging == [dead]


@pytest.mark.parametrize(("text", "expected"), [
    ("192.0.2.1", ("192.0.2.1", 53)),
    ("192.0.2.1:5353", ("192.0.2.1", 5353)),
    ("2001:db8::1", ("2001:db8::1", 53)),
    ("[2001:DB8::1]", ("2001:db8::1", 53)),
    ("[2001:db8::1]:5353", ("2001:db8::1", 5353)),
])
def test_parse_server(text: str, expected: tuple[str, int]) -> None:
    assert parse_server(text) == expected


@pytest.mark.parametrize("text", ["ns1.example.com", "192.0.2.1:0", "192.0.2.1:x",
                                  "[2001:db8::1", "[2001:db8::1]5353", ""])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"port|address|\]"):
        parse_server(text)


def test_format_server() -> None:
    assert format_server("192.0.2.1", 53) == "192.0.2.1:53"
    assert format_server("2001:db8::1", 5353) == "[2001:db8::1]:5353"


def test_settings_from_environment() -> None:
    settings = Settings({"PROPAGATION_NAMESERVERS": "192.0.2.1, [2001:db8::1]:53 bad",
                         "PROPAGATION_TIMEOUT": "30s", "DNS_DELAY": "2"})
    built = PropagationSettings.from_settings(settings)
    assert built.nameservers == ("192.0.2.1", "[2001:db8::1]:53")
    assert (built.timeout, built.delay) == (30.0, 2.0)
    assert len(settings.problems) == 1 and "'bad'" in settings.problems[0]


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        PropagationSettings(nameservers=("ns.example.com",))
    with pytest.raises(ValueError):
        PropagationSettings(timeout=0)
