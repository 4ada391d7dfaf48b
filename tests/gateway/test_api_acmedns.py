"""acme-dns: /update with accounts, allowfrom, keeping the newest values, /register."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.acmedns import AccountError, check_key, hash_key, load_accounts_file
from gateway.journal import Journal
from gateway.keys import STATE
from tests.conftest import make_value
from tests.gateway.backends import Backend, both_backends  # noqa: F401 (a fixture)
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic

USER = "c36f50e8-4632-44f0-83fe-e070fef28a10"
KEY = "htB9mR9DYgcu9bX_afHF62erXaH2TS7bg9KW3F7Z"
SUB = "1f0ae44b-33ed-4f7a-b1a6-3d1b6b8a0b0a"


def accounts_file(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "acmedns.json"
    entry = {
        "username": USER,
        "password": KEY,
        "fulldomain": f"{SUB}.acme.example.test",
        "subdomain": SUB,
        "allowfrom": [],
    }
    entry.update(extra)
    path.write_text(json.dumps({"example.test": entry}))
    return path


def creds(user: str = USER, key: str = KEY) -> dict[str, str]:
    return {"X-Api-User": user, "X-Api-Key": key}


async def test_update_publishes_at_the_accounts_name(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    client, provider = await gateway(
        ACMEDNS_ZONE="acme.example.test", ACMEDNS_ACCOUNTS_FILE=str(accounts_file(tmp_path))
    )
    v = make_value()
    r = await client.post("/update", json={"subdomain": SUB, "txt": v}, headers=creds())
    assert r.status == 200
    assert await r.json() == {"txt": v}
    assert provider.values(f"{SUB}.acme.example.test") == [v]


async def test_keeps_newest_values(gateway: GatewayFactory, tmp_path: Path) -> None:
    client, provider = await gateway(
        ACMEDNS_ZONE="acme.example.test",
        ACMEDNS_KEEP="2",
        ACMEDNS_ACCOUNTS_FILE=str(accounts_file(tmp_path)),
    )
    values = [make_value() for _ in range(4)]
    for v in values:
        r = await client.post("/update", json={"subdomain": SUB, "txt": v}, headers=creds())
        assert r.status == 200
    assert sorted(provider.values(f"{SUB}.acme.example.test")) == sorted(values[-2:])


async def test_domain_account_writes_challenge_name(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    path = tmp_path / "accounts.json"
    path.write_text(
        json.dumps(
            {
                "accounts": [
                    {
                        "username": USER,
                        "password_hash": hash_key(KEY),
                        "subdomain": SUB,
                        "domain": "www.example.org",
                    }
                ]
            }
        )
    )
    client, provider = await gateway(ACMEDNS_ACCOUNTS_FILE=str(path))
    v = make_value()
    r = await client.post("/update", json={"subdomain": SUB, "txt": v}, headers=creds())
    assert r.status == 200
    assert provider.values("_acme-challenge.www.example.org") == [v]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-Api-User": USER}, 401),
        ({"X-Api-User": USER, "X-Api-Key": KEY[:-1] + "x"}, 401),
        ({"X-Api-User": "someone-else", "X-Api-Key": KEY}, 401),
        ({"X-Api-User": USER, "X-Api-Key": "k" * 1000}, 401),
    ],
)
async def test_bad_credentials(
    gateway: GatewayFactory, tmp_path: Path, headers: dict[str, str], status: int
) -> None:
    client, provider = await gateway(
        ACMEDNS_ZONE="acme.example.test", ACMEDNS_ACCOUNTS_FILE=str(accounts_file(tmp_path))
    )
    r = await client.post("/update", json={"subdomain": SUB, "txt": make_value()}, headers=headers)
    assert r.status == status
    assert provider.calls == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"subdomain": "other", "txt": make_value()}, "subdomain"),
        ({"txt": make_value()}, "subdomain"),
        ({"subdomain": SUB, "txt": "short"}, "txt"),
        ({"subdomain": SUB}, "txt"),
    ],
)
async def test_bad_body_400(
    gateway: GatewayFactory, tmp_path: Path, body: dict[str, str], field: str
) -> None:
    client, provider = await gateway(
        ACMEDNS_ZONE="acme.example.test", ACMEDNS_ACCOUNTS_FILE=str(accounts_file(tmp_path))
    )
    r = await client.post("/update", json=body, headers=creds())
    assert r.status == 400
    assert (await r.json())["message"].startswith(field)
    assert provider.calls == []


async def test_allowfrom_enforced(gateway: GatewayFactory, tmp_path: Path) -> None:
    client, provider = await gateway(
        ACMEDNS_ZONE="acme.example.test",
        ALLOWED_PROXIES="127.0.0.1",
        ACMEDNS_ACCOUNTS_FILE=str(accounts_file(tmp_path, allowfrom=["192.0.2.0/24"])),
    )
    body = {"subdomain": SUB, "txt": make_value()}
    r = await client.post("/update", json=body, headers=creds())
    assert r.status == 403  # the test client is 127.0.0.1: an address refused, as everywhere
    assert provider.calls == []
    r = await client.post("/update", json=body, headers={**creds(), "X-Forwarded-For": "192.0.2.5"})
    assert r.status == 200
    assert provider.values(f"{SUB}.acme.example.test") == [body["txt"]]


async def test_failures_rate_limited(gateway: GatewayFactory, tmp_path: Path) -> None:
    client, _ = await gateway(
        ACMEDNS_ZONE="acme.example.test",
        AUTH_MAX_FAILURES="2",
        ACMEDNS_ACCOUNTS_FILE=str(accounts_file(tmp_path)),
    )
    for _ in range(2):
        await client.post("/update", json={}, headers=creds(key="wrong"))
    r = await client.post("/update", json={}, headers=creds(key="wrong"))
    assert r.status == 429
    assert "Retry-After" in r.headers


async def test_health(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    assert (await client.get("/health")).status == 200


async def test_register_off_by_default(gateway: GatewayFactory) -> None:
    client, _ = await gateway(ACMEDNS_ZONE="acme.example.test")
    r = await client.post("/register", headers=basic("carol", PASSWORDS["carol"]))
    assert r.status == 404


async def test_register_admin_only_then_update(gateway: GatewayFactory) -> None:
    client, provider = await gateway(ACMEDNS_ZONE="acme.example.test", ACMEDNS_REGISTER="1")
    r = await client.post("/register", headers=basic("alice", PASSWORDS["alice"]))
    assert r.status == 403  # alice is no admin
    r = await client.post(
        "/register",
        json={"allowfrom": ["127.0.0.1/32"]},
        headers=basic("carol", PASSWORDS["carol"]),
    )
    assert r.status == 201
    acct = await r.json()
    assert set(acct) == {"username", "password", "fulldomain", "subdomain", "allowfrom"}
    assert acct["fulldomain"] == f"{acct['subdomain']}.acme.example.test"
    assert acct["allowfrom"] == ["127.0.0.1/32"]
    assert len(acct["password"]) == 40
    v = make_value()
    r = await client.post(
        "/update",
        json={"subdomain": acct["subdomain"], "txt": v},
        headers=creds(acct["username"], acct["password"]),
    )
    assert r.status == 200
    assert provider.values(acct["fulldomain"]) == [v]


async def test_register_by_allowed_host(gateway: GatewayFactory) -> None:
    client, _ = await gateway(
        ACMEDNS_ZONE="acme.example.test", ACMEDNS_REGISTER="1", ALLOWED_HOSTS="127.0.0.1"
    )
    r = await client.post("/register")
    assert r.status == 201


async def test_register_bad_allowfrom(gateway: GatewayFactory) -> None:
    client, _ = await gateway(
        ACMEDNS_ZONE="acme.example.test", ACMEDNS_REGISTER="1", ALLOWED_HOSTS="127.0.0.1"
    )
    r = await client.post("/register", json={"allowfrom": ["not-a-net"]})
    assert r.status == 400


async def test_keys_are_stored_hashed(
    gateway: GatewayFactory, tmp_path: Path, backend: Backend
) -> None:
    client, _ = await gateway(
        ACMEDNS_ZONE="acme.example.test", ACMEDNS_REGISTER="1", ALLOWED_HOSTS="127.0.0.1"
    )
    acct = await (await client.post("/register")).json()
    await client.close()
    rows = backend.sql("accounts", "SELECT * FROM accounts")
    assert acct["username"] in repr(rows) and acct["password"] not in repr(rows)
    if backend.name == "sqlite":  # nor anywhere in the files
        raw = (tmp_path / "state" / "acmedns.sqlite3").read_bytes()
        assert acct["password"].encode() not in raw
        wal = tmp_path / "state" / "acmedns.sqlite3-wal"
        if wal.exists():
            assert acct["password"].encode() not in wal.read_bytes()


async def test_an_account_registered_on_one_replica_works_on_every_one(
    gateway: GatewayFactory,
) -> None:
    """Two gateways on one state: what one registers, the other accepts at once; what
    one deletes, the other refuses at once."""
    env = {"ACMEDNS_ZONE": "acme.example.test", "ACMEDNS_REGISTER": "1"}
    a, _ = await gateway(**env)
    b, b_provider = await gateway(**env)
    carol = basic("carol", PASSWORDS["carol"])
    acct = await (await a.post("/register", headers=carol)).json()
    v = make_value()
    update = {"subdomain": acct["subdomain"], "txt": v}
    who = creds(acct["username"], acct["password"])
    assert (await b.post("/update", json=update, headers=who)).status == 200
    assert b_provider.values(acct["fulldomain"]) == [v]
    r = await b.delete(f"/accounts/{acct['username']}", headers=carol)
    assert r.status == 200
    assert (await a.post("/update", json=update, headers=who)).status == 401


def test_key_hash_roundtrip() -> None:
    stored = hash_key(KEY)
    assert check_key(KEY, stored)
    assert not check_key(KEY + "x", stored)
    assert not check_key(KEY, "md5$00$00")
    assert not check_key(KEY, "garbage")


def test_accounts_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    for content, needle in [
        ("not json", "a.json"),
        ("[]", "expected a JSON object"),
        (json.dumps({"example.test": {"password": "x", "subdomain": "s"}}), "username"),
        (json.dumps({"example.test": {"username": "u", "subdomain": "s"}}), "password"),
        (
            json.dumps({"accounts": [{"username": "u", "password": "p", "subdomain": "s"}]}),
            "domain or fulldomain",
        ),
        (
            json.dumps(
                {
                    "example.test": {
                        "username": "u",
                        "password": "p",
                        "subdomain": "s",
                        "allowfrom": ["bad"],
                    }
                }
            ),
            "allowfrom",
        ),
    ]:
        path.write_text(content)
        with pytest.raises(AccountError) as info:
            load_accounts_file(path, {})
        assert needle in str(info.value)
        assert '"p"' not in str(info.value)


async def test_account_outside_allowed_names_stops_startup(tmp_path: Path) -> None:
    from gateway.server import main

    path = tmp_path / "a.json"
    path.write_text(
        json.dumps(
            {
                "accounts": [
                    {
                        "username": "u",
                        "password": "p",
                        "subdomain": "s",
                        "fulldomain": "www.google.com",
                    }
                ]
            }
        )
    )
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"PROVIDER=memory\nDNSAPI_DOMAINS=example.test\nALLOWED_HOSTS=127.0.0.1\n"
        f"ACMEDNS_ACCOUNTS_FILE={path}\nSTATE_DIR={tmp_path}/s\n"
    )
    assert main(["-e", str(env_file), "--check-config"]) == 2


async def test_an_account_deleted_while_its_update_waits_for_the_name_writes_nothing(
    gateway: GatewayFactory,
) -> None:
    """Another replica deletes the account after this one judged the update but before
    it holds the name's lock: that replica's withdrawal found nothing to withdraw, so
    the update must not publish (its value would outlive the account)."""
    client, provider = await gateway(ACMEDNS_ZONE="acme.example.test", ACMEDNS_REGISTER="1")
    carol = basic("carol", PASSWORDS["carol"])
    acct = await (await client.post("/register", headers=carol)).json()
    state = client.server.app[STATE]
    real_hold = state.hold

    @asynccontextmanager
    async def hold_after_a_deletion(fqdn: str) -> AsyncIterator[Journal]:
        await state.accounts.delete(acct["username"])  # the other replica, just now
        async with real_hold(fqdn) as journal:
            yield journal

    state.hold = hold_after_a_deletion  # type: ignore[method-assign]
    update = {"subdomain": acct["subdomain"], "txt": make_value()}
    r = await client.post("/update", json=update, headers=creds(acct["username"], acct["password"]))
    assert r.status == 401, await r.text()
    assert provider.values(acct["fulldomain"]) == []
    assert await state.journal.all() == []
