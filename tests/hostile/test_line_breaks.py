"""A line break is never part of a name or a value, whichever API it comes through.

Python's ``$`` matches before a final ``\\n`` too, so a pattern written as
``^...$`` and used with ``re.match`` accepts ``"www\\n"`` as a host name label
and 43 base64url characters followed by ``"\\n"`` as a dns-01 value. Sent to a
real gateway process as JSON (``"www\\n.example.test"``), such a name was
answered 201, journaled, handed to the provider, and split the audit line in
two; such a value was published with its line break. Every API must answer
400 naming the field and write nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    gateway_settings,
    passwords_only,
    running_gateway,
    write_accounts_file,
)
from tests.hostile.wire import WireGateway, basic
from tests.system import free_port

ALICE = basic("alice", "alice's password")
ADMIN = basic("carol", "carol's password")
ZONE = "acme.example.test"
KEY_USER, KEY, KEY_SUB = "a7c0ffee-0000-4000-8000-000000000001", "k" * 40, "sub-lines"
ACMEDNS = {"X-Api-User": KEY_USER, "X-Api-Key": KEY}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WireGateway]:
    tmp = tmp_path_factory.mktemp("lines")
    users = PasswordFile(tmp / "acmepasswd")
    users.set_user("alice", "alice's password")
    users.set_user("carol", "carol's password", roles=["admin"])
    accounts = write_accounts_file(
        tmp / "accounts.json",
        {"username": KEY_USER, "password": KEY, "subdomain": KEY_SUB,
         "fulldomain": f"{KEY_SUB}.{ZONE}"},
    )
    port = free_port()
    settings = gateway_settings(
        tmp, port, **passwords_only(tmp),
        HTTPREQ_PREFIX="httpreq",
        ACMEDNS_ZONE=ZONE,
        ACMEDNS_REGISTER="1",
        ACMEDNS_ACCOUNTS_FILE=str(accounts),
    )
    with running_gateway(tmp, settings) as gw:
        yield WireGateway(gw, port)


def native(name: str, value: str) -> dict[str, str]:
    return {"argument": "setup", "domain_name": name, "challenge_content": value}


# (what, path, headers, body, the field the 400 must name)
CASES = [
    ("native name, label ending in a line break", "/", ALICE,
     native("www\n.example.test", make_value()), "domain_name"),
    ("native name, inner label ending in a line break", "/", ALICE,
     native("www.example\n.test", make_value()), "domain_name"),
    ("native value with a line break after it", "/", ALICE,
     native("www.example.test", make_value() + "\n"), "challenge_content"),
    ("httpreq fqdn", "/httpreq/present", ALICE,
     {"fqdn": "_acme-challenge.www\n.example.test.", "value": make_value()}, "fqdn"),
    ("httpreq value", "/httpreq/present", ALICE,
     {"fqdn": "_acme-challenge.www.example.test.", "value": make_value() + "\n"}, "value"),
    ("acme-dns txt", "/update", ACMEDNS,
     {"subdomain": KEY_SUB, "txt": make_value() + "\n"}, "txt"),
    ("acme-dns registration's domain", "/register", ADMIN,
     {"domain": "www\n.example.test"}, "domain"),
]


@pytest.mark.parametrize(("what", "path", "headers", "body", "field"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_line_break_is_refused(
    gateway: WireGateway, what: str, path: str, headers: dict[str, str],
    body: dict[str, str], field: str,
) -> None:
    answer = gateway.call("POST", path, headers=headers, body=body)
    assert answer.status == 400, f"{what}: {answer.status} {answer.body!r}"
    assert answer.json()["message"].startswith(f"{field}:"), answer.body


def test_nothing_was_written_and_every_log_line_is_whole(gateway: WireGateway) -> None:
    for _, path, headers, body, _ in CASES:
        gateway.call("POST", path, headers=headers, body=body)
    records = gateway.call("GET", "/records", headers=ADMIN)
    assert records.status == 200
    assert records.json()["records"] == []
    # Every line the gateway wrote starts as its log lines (or its ready line) do.
    lines = gateway.process.stderr.splitlines()
    broken = [line for line in lines if not line[:4].isdigit() and not line.startswith("acmegw")]
    assert not broken, broken
