"""A permission taken away while a request's body is still coming must stop its write.

The access middleware judges the caller when the request head has arrived;
the body may come up to ``HTTP_BODY_TIMEOUT`` later (10 s by default, up to
300 s), in as many pieces as the client likes. Against a real gateway process,
each test sends a request head and half its body, takes the caller's
permission away as an admin would, waits until a fresh request of that caller
is refused, and only then sends the rest:

* an acme-dns account deleted through ``DELETE /accounts/<username>`` (which
  promises the account "is refused at once and the values it published are
  withdrawn"): its update wrote anyway, and the value stayed journaled under an
  owner nobody can act for, until the janitor's ``RECORD_MAX_AGE``;
* an acme-dns account whose name a reload took out of the configuration;
* a password user deleted from the password file.

The write must be refused, and nothing of that caller may be journaled.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    gateway_settings,
    passwords_only,
    running_gateway,
    write_dotenv_file,
)
from tests.gateway.rawhttp import connect, read_response
from tests.hostile.wire import WireGateway, basic, send, unread
from tests.system import free_port, wait_until

ADMIN = basic("carol", "carol's password")
ZONE = "acme.example.test"


@dataclass
class Gateway(WireGateway):
    folder: Path

    def reload(self, **changes: str) -> None:
        """Rewrite the dotenv file with *changes*, SIGHUP, wait until it is applied."""
        write_dotenv(self.folder, self.port, **changes)
        self.process.reload()
        assert "reload refused" not in self.process.stderr, self.process.describe()

    def records_of(self, owner: str) -> list[dict[str, object]]:
        records = self.call("GET", "/records", headers=ADMIN)
        assert records.status == 200, records
        return [r for r in records.json()["records"] if r["owner"] == owner]


def write_dotenv(folder: Path, port: int, **changes: str) -> None:
    settings = gateway_settings(
        folder, port, **passwords_only(folder),
        DNSAPI_DOMAINS="example.test, example.org",
        ACMEDNS_ZONE=ZONE,
        ACMEDNS_REGISTER="1",
        # The test holds a body half-sent for as long as the admin takes.
        HTTP_BODY_TIMEOUT="120",
    ) | changes
    write_dotenv_file(folder / ".env", settings)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("in-flight")
    users = PasswordFile(folder / "acmepasswd")
    users.set_user("carol", "carol's password", roles=["admin"])
    users.set_user("alice", "alice's password")
    port = free_port()
    write_dotenv(folder, port)
    with running_gateway(folder, {}, args=["-e", str(folder / ".env")]) as gw:
        yield Gateway(gw, port, folder)


class HalfSent:
    """A POST whose head and first half of the body are on the wire, and which the
    gateway has admitted; :meth:`finish` sends the rest and returns the answer.

    Admitted, not merely sent: once the gateway has read the bytes, the
    request's task runs before anything that reaches the gateway later; so when a
    later request is answered, the access middleware has judged this one (the
    caller's credentials must be cached, or it would still be hashing).
    """

    def __init__(self, port: int, path: str, headers: dict[str, str], body: object) -> None:
        self.data = json.dumps(body).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock: socket.socket = connect(port)
        self.sock.settimeout(60)
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n{head}"
            f"Content-Length: {len(self.data)}\r\n\r\n".encode() + self.data[:10]
        )
        wait_until(lambda: unread(port, self.sock) == 0, "the gateway to read the head")
        assert send(port, "GET", "/healthz").status == 200

    def finish(self) -> int:
        try:
            self.sock.sendall(self.data[10:])
            status, _, _ = read_response(self.sock)
            return status
        finally:
            self.sock.close()


def register(gw: Gateway, **body: object) -> dict[str, str]:
    answer = gw.call("POST", "/register", headers=ADMIN, body=body)
    assert answer.status == 201, answer
    data: dict[str, str] = answer.json()
    return data


def update(gw: Gateway, account: dict[str, str]) -> HalfSent:
    return HalfSent(gw.port, "/update",
                    {"X-Api-User": account["username"], "X-Api-Key": account["password"]},
                    {"subdomain": account["subdomain"], "txt": make_value()})


def test_an_account_deleted_while_its_update_arrives_writes_nothing(gateway: Gateway) -> None:
    account = register(gateway)
    pending = update(gateway, account)
    deleted = gateway.call("DELETE", f"/accounts/{account['username']}", headers=ADMIN)
    assert deleted.status == 200, deleted
    assert pending.finish() == 401
    assert gateway.records_of(f"acmedns:{account['username']}") == []


def test_an_account_whose_name_a_reload_took_away_writes_nothing(gateway: Gateway) -> None:
    account = register(gateway, domain="www.example.org")
    pending = update(gateway, account)
    gateway.reload(DNSAPI_DOMAINS="example.test")
    try:
        assert pending.finish() == 403
        assert gateway.records_of(f"acmedns:{account['username']}") == []
    finally:
        gateway.reload()


def test_a_user_deleted_while_a_setup_arrives_writes_nothing(gateway: Gateway) -> None:
    alice = basic("alice", "alice's password")
    value = make_value()
    warm = {"argument": "setup", "domain_name": "warm.example.test",
            "challenge_content": make_value()}
    assert gateway.call("POST", "/", headers=alice, body=warm).status == 201  # now cached
    pending = HalfSent(gateway.port, "/", alice, {
        "argument": "setup", "domain_name": "www.example.test", "challenge_content": value,
    })
    PasswordFile(gateway.folder / "acmepasswd").delete_user("alice")
    probe = {"argument": "setup", "domain_name": "probe.example.test",
             "challenge_content": make_value()}
    wait_until(lambda: gateway.call("POST", "/", headers=alice, body=probe).status == 401,
               "alice's deletion to be seen", describe=gateway.process.describe)
    try:
        assert pending.finish() == 401
        assert [r["fqdn"] for r in gateway.records_of("alice")] == [
            "_acme-challenge.warm.example.test"
        ]
    finally:
        PasswordFile(gateway.folder / "acmepasswd").set_user("alice", "alice's password")
