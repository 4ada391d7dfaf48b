"""``MAX_RECORDS_PER_USER`` for callers admitted by their address: one IPv6 host, one cap.

An allowed host without a password is capped as ``host:<address>``. One IPv6
machine owns a whole /64 and picks a new source address in it at will
(privacy addresses), so per address it has no cap at all: the flood of issue
12 item 4 again. The failure limiter and the connection limits already count
an IPv6 client per /64; the record cap must too.

A real gateway behind a trusted reverse proxy (the test, on 127.0.0.1, sends
``X-Forwarded-For`` as the proxy would for its IPv6 clients): four setups
from four addresses of one /64 with ``MAX_RECORDS_PER_USER=3`` must leave the
fourth refused with 429 and unwritten. Two IPv4 hosts stay two callers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_value
from tests.gateway.procs import gateway_settings, running_gateway
from tests.hostile.wire import send
from tests.system import free_port

NETWORK = "2001:db8:1:2::/64"


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp: Path = tmp_path_factory.mktemp("cap")
    port = free_port()
    settings = gateway_settings(
        tmp, port,
        BASIC_AUTH="off",
        ALLOWED_HOSTS=f"{NETWORK}, 192.0.2.0/24",
        ALLOWED_PROXIES="127.0.0.1",
        MAX_RECORDS_PER_USER="3",
    )
    with running_gateway(tmp, settings):
        yield port


def setup_from(port: int, client: str, name: str) -> int:
    body = {"argument": "setup", "domain_name": name, "challenge_content": make_value()}
    return send(port, "POST", "/", body=body, headers={"X-Forwarded-For": client}).status


def test_one_ipv6_host_is_one_caller_for_the_cap(port: int) -> None:
    statuses = [
        setup_from(port, f"2001:db8:1:2::{n}", f"h{n}.example.test") for n in range(1, 5)
    ]
    assert statuses == [201, 201, 201, 429]


def test_two_ipv4_hosts_are_two_callers(port: int) -> None:
    for host in ("192.0.2.1", "192.0.2.2"):
        statuses = [setup_from(port, host, f"{host}-{n}.example.test") for n in range(4)]
        assert statuses == [201, 201, 201, 429], host


def test_registering_accounts_does_not_lift_the_cap(tmp_path: Path) -> None:
    """An allowed host is an admin (README): it may register acme-dns accounts, and
    each one may publish ``ACMEDNS_KEEP`` values. Ten registrations and updates from
    one host, with ``MAX_RECORDS_PER_USER=3``, must not leave more than 3 x 2 values."""
    port = free_port()
    settings = gateway_settings(
        tmp_path, port,
        BASIC_AUTH="off",
        MAX_RECORDS_PER_USER="3",
        ACMEDNS_ZONE="acme.example.test",
        ACMEDNS_REGISTER="1",
    )
    with running_gateway(tmp_path, settings):
        for _ in range(10):
            registered = send(port, "POST", "/register", body={})
            if registered.status != 201:
                continue
            account = registered.json()
            send(port, "POST", "/update",
                 headers={"X-Api-User": account["username"], "X-Api-Key": account["password"]},
                 body={"subdomain": account["subdomain"], "txt": make_value()})
        records = send(port, "GET", "/records").json()["records"]
    assert len(records) <= 3 * 2, f"{len(records)} values published by one host"
