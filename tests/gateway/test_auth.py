"""Attempts to break each authentication rule."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.auth import FailureLimiter, PasswordStore, client_address
from gateway.config import AuthConfig, AuthMode
from gateway.errors import BadRequest, Busy
from lib.passwd import PasswordFile, UserEntry
from tests.conftest import make_value
from tests.gateway.conftest import PASSWORDS, GatewayFactory, basic

ALICE = basic("alice", PASSWORDS["alice"])


def setup_body(name: str = "example.test") -> str:
    return json.dumps({"argument": "setup", "domain_name": name, "challenge_content": make_value()})


def auth_config(**kw: object) -> AuthConfig:
    fields: dict[str, object] = {
        "mode": AuthMode.OFF,
        "allowed_hosts": (),
        "allowed_proxies": (),
        "proxy_header": None,
        "passwd_file": None,
    }
    fields.update(kw)
    return AuthConfig(**fields)  # type: ignore[arg-type]


def request_from(peer: str, headers: dict[str, str] | list[tuple[str, str]] | None = None):  # type: ignore[no-untyped-def]
    from multidict import CIMultiDict

    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 12345)
    hdrs = CIMultiDict(headers.items() if isinstance(headers, dict) else (headers or []))
    return make_mocked_request("POST", "/", headers=hdrs, transport=transport)


# -- client address and X-Forwarded-For --------------------------------------

PROXIES = (ipaddress.ip_network("10.0.0.0/30"),)


def test_forwarded_header_from_untrusted_peer_is_ignored() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    req = request_from("192.0.2.9", {"X-Forwarded-For": "127.0.0.1"})
    assert str(client_address(req, cfg)) == "192.0.2.9"


def test_forwarded_header_from_trusted_proxy_rightmost_untrusted() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    # A client may send its own spoofed entries at the left; our proxy appends the real one.
    req = request_from("10.0.0.1", {"X-Forwarded-For": "127.0.0.1, 203.0.113.7"})
    assert str(client_address(req, cfg)) == "203.0.113.7"


def test_forwarded_chain_of_trusted_proxies() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    req = request_from("10.0.0.1", {"X-Forwarded-For": "1.2.3.4, 198.51.100.3, 10.0.0.2"})
    assert str(client_address(req, cfg)) == "198.51.100.3"


def test_forwarded_several_header_lines_are_one_list() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    req = request_from(
        "10.0.0.1",
        [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "198.51.100.3, 10.0.0.2")],
    )
    assert str(client_address(req, cfg)) == "198.51.100.3"


def test_forwarded_ipv6_and_ports() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    assert (
        str(client_address(request_from("10.0.0.1", {"X-Forwarded-For": "[2001:db8::1]:443"}), cfg))
        == "2001:db8::1"
    )
    assert (
        str(client_address(request_from("10.0.0.1", {"X-Forwarded-For": "2001:db8::2"}), cfg))
        == "2001:db8::2"
    )
    assert (
        str(client_address(request_from("10.0.0.1", {"X-Forwarded-For": "198.51.100.3:5000"}), cfg))
        == "198.51.100.3"
    )


def test_forwarded_all_trusted_uses_leftmost() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    req = request_from("10.0.0.1", {"X-Forwarded-For": "10.0.0.2"})
    assert str(client_address(req, cfg)) == "10.0.0.2"


def test_forwarded_garbage_is_rejected() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Forwarded-For")
    with pytest.raises(BadRequest):
        client_address(request_from("10.0.0.1", {"X-Forwarded-For": "127.0.0.1, not-an-ip"}), cfg)


def test_custom_forwarding_header() -> None:
    cfg = auth_config(allowed_proxies=PROXIES, proxy_header="X-Real-IP")
    req = request_from("10.0.0.1", {"X-Real-IP": "198.51.100.3", "X-Forwarded-For": "127.0.0.1"})
    assert str(client_address(req, cfg)) == "198.51.100.3"


# -- modes through the app -------------------------------------------------------


async def test_sufficient_without_hosts_requires_password(gateway: GatewayFactory) -> None:
    client, provider = await gateway(BASIC_AUTH="sufficient")
    r = await client.post("/", data=setup_body())
    assert r.status == 401
    assert r.headers["WWW-Authenticate"].startswith("Basic ")
    assert provider.calls == []


async def test_sufficient_allowed_host_without_password(gateway: GatewayFactory) -> None:
    client, _ = await gateway(BASIC_AUTH="sufficient", ALLOWED_HOSTS="127.0.0.0/8")
    assert (await client.post("/", data=setup_body())).status == 201


async def test_sufficient_other_host_needs_password(gateway: GatewayFactory) -> None:
    client, _ = await gateway(BASIC_AUTH="sufficient", ALLOWED_HOSTS="192.0.2.0/24")
    assert (await client.post("/", data=setup_body())).status == 401
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 201


async def test_sufficient_wrong_password_from_allowed_host_is_refused(
    gateway: GatewayFactory,
) -> None:
    """Sent credentials are always checked, so user scoping cannot be bypassed."""
    client, _ = await gateway(BASIC_AUTH="sufficient", ALLOWED_HOSTS="127.0.0.1")
    r = await client.post("/", data=setup_body(), headers=basic("alice", "wrong"))
    assert r.status == 401


async def test_sufficient_allowed_host_with_user_keeps_user_scope(gateway: GatewayFactory) -> None:
    client, _ = await gateway(BASIC_AUTH="sufficient", ALLOWED_HOSTS="127.0.0.1")
    bob = basic("bob", PASSWORDS["bob"])
    assert (await client.post("/", data=setup_body("example.test"), headers=bob)).status == 403


async def test_required_needs_host_and_password(gateway: GatewayFactory) -> None:
    client, _ = await gateway(BASIC_AUTH="required", ALLOWED_HOSTS="192.0.2.0/24")
    r = await client.post("/", data=setup_body(), headers=ALICE)
    assert r.status == 403  # right password, wrong host
    client, _ = await gateway(BASIC_AUTH="required", ALLOWED_HOSTS="127.0.0.1")
    assert (await client.post("/", data=setup_body())).status == 401  # right host, no password
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 201


async def test_required_without_hosts_needs_password(gateway: GatewayFactory) -> None:
    client, _ = await gateway(BASIC_AUTH="REQUIRED")
    assert (await client.post("/", data=setup_body())).status == 401
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 201


async def test_off_allowlist_only(gateway: GatewayFactory) -> None:
    client, _ = await gateway(BASIC_AUTH="off", ALLOWED_HOSTS="::1, 127.0.0.1/32")
    assert (await client.post("/", data=setup_body())).status == 201
    client, _ = await gateway(BASIC_AUTH="none", ALLOWED_HOSTS="192.0.2.1")
    r = await client.post("/", data=setup_body(), headers=ALICE)
    assert r.status == 403


async def test_spoofed_xff_does_not_pass_allowlist(gateway: GatewayFactory) -> None:
    """The test client's peer is 127.0.0.1, which is not a trusted proxy here."""
    client, _ = await gateway(
        BASIC_AUTH="off", ALLOWED_HOSTS="192.0.2.1", ALLOWED_PROXIES="10.9.9.9"
    )
    r = await client.post("/", data=setup_body(), headers={"X-Forwarded-For": "192.0.2.1"})
    assert r.status == 403


async def test_xff_from_trusted_proxy_passes_allowlist(gateway: GatewayFactory) -> None:
    client, _ = await gateway(
        BASIC_AUTH="off", ALLOWED_HOSTS="192.0.2.1", ALLOWED_PROXIES="127.0.0.1"
    )
    ok = await client.post("/", data=setup_body(), headers={"X-Forwarded-For": "192.0.2.1"})
    assert ok.status == 201
    # A client that prepends an allowed address gains nothing: the right-most counts.
    r = await client.post(
        "/", data=setup_body(), headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.50"}
    )
    assert r.status == 403


@pytest.mark.parametrize(
    "header",
    [
        "Bearer abc",
        "Basic !!!notbase64",
        "Basic " + base64.b64encode(b"no-colon-here").decode(),
        "Basic " + base64.b64encode(b":password-without-user").decode(),
        "Basic",
        "Basic " + "A" * 6000,
    ],
)
async def test_malformed_authorization_401(gateway: GatewayFactory, header: str) -> None:
    client, provider = await gateway()
    r = await client.post("/", data=setup_body(), headers={"Authorization": header})
    assert r.status == 401
    assert "WWW-Authenticate" in r.headers
    assert provider.calls == []


async def test_colon_and_non_ascii_password(gateway: GatewayFactory) -> None:
    client, _ = await gateway()
    bob = basic("bob", PASSWORDS["bob"])  # "p:ss:wörd with colons"
    assert (await client.post("/", data=setup_body("example.org"), headers=bob)).status == 201
    # Only the first ':' splits: a prefix of the password is not the password.
    assert (
        await client.post("/", data=setup_body("example.org"), headers=basic("bob", "p"))
    ).status == 401


async def test_latin1_credentials_are_decoded(gateway: GatewayFactory, passwd_path) -> None:  # type: ignore[no-untyped-def]
    from lib.passwd import PasswordFile

    PasswordFile(passwd_path).set_user("dave", "gr\u00fc\u00dfe")
    client, _ = await gateway()
    token = base64.b64encode("dave:gr\u00fc\u00dfe".encode("latin-1")).decode()
    r = await client.post("/", data=setup_body(), headers={"Authorization": f"Basic {token}"})
    assert r.status == 201


async def test_failures_rate_limited_429(gateway: GatewayFactory) -> None:
    client, provider = await gateway(AUTH_MAX_FAILURES="3", AUTH_FAILURE_WINDOW="60")
    bad = basic("alice", "nope")
    statuses = [(await client.post("/", data=setup_body(), headers=bad)).status for _ in range(3)]
    assert statuses == [401, 401, 401]
    r = await client.post("/", data=setup_body(), headers=bad)
    assert r.status == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 61
    # Unknown users count too, and a correct but never-seen password is refused while limited.
    r = await client.post("/", data=setup_body(), headers=basic("carol", PASSWORDS["carol"]))
    assert r.status == 429
    assert provider.calls == []


async def test_rate_limit_is_per_client(gateway: GatewayFactory) -> None:
    client, _ = await gateway(AUTH_MAX_FAILURES="2", ALLOWED_PROXIES="127.0.0.1")
    bad = basic("alice", "nope")
    for _ in range(3):
        await client.post("/", data=setup_body(), headers={**bad, "X-Forwarded-For": "192.0.2.66"})
    r = await client.post("/", data=setup_body(), headers={**bad, "X-Forwarded-For": "192.0.2.66"})
    assert r.status == 429
    other = await client.post(
        "/", data=setup_body(), headers={**ALICE, "X-Forwarded-For": "192.0.2.77"}
    )
    assert other.status == 201


async def test_cached_good_credentials_pass_during_flood(gateway: GatewayFactory) -> None:
    """An honest client on the same address as a flood keeps working once verified."""
    client, _ = await gateway(AUTH_MAX_FAILURES="2")
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 201
    for _ in range(5):
        await client.post("/", data=setup_body(), headers=basic("alice", "wrong"))
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 201


def test_limiter_window_expires() -> None:
    now = [0.0]
    lim = FailureLimiter(2, 10.0, clock=lambda: now[0])
    a = ipaddress.ip_address("192.0.2.1")
    lim.failed(a)
    lim.failed(a)
    assert lim.retry_after(a) == 11
    now[0] = 10.5
    assert lim.retry_after(a) == 0


def test_limiter_groups_ipv6_by_64() -> None:
    lim = FailureLimiter(1, 10.0)
    lim.failed(ipaddress.ip_address("2001:db8:1:2::1"))
    assert lim.retry_after(ipaddress.ip_address("2001:db8:1:2:ffff::9")) > 0
    assert lim.retry_after(ipaddress.ip_address("2001:db8:1:3::1")) == 0


def test_limiter_memory_is_bounded() -> None:
    lim = FailureLimiter(5, 10.0, max_entries=100)
    for i in range(1000):
        lim.failed(ipaddress.ip_address(f"10.0.{i // 250}.{i % 250}"))
    assert len(lim._entries) <= 100


async def test_unknown_user_costs_as_much_as_known(gateway: GatewayFactory) -> None:
    client, _ = await gateway(AUTH_MAX_FAILURES="1000", AUTH_CACHE_TTL="0")

    async def timed(user: str) -> float:
        start = time.perf_counter()
        r = await client.post("/", data=setup_body(), headers=basic(user, "wrong password"))
        assert r.status == 401
        return time.perf_counter() - start

    await timed("nobody-warmup")
    known, unknown = [], []
    for _ in range(5):
        known.append(await timed("alice"))
        unknown.append(await timed("mallory"))
    ratio = statistics.median(unknown) / statistics.median(known)
    assert 0.5 < ratio < 2.0, (known, unknown)


async def test_password_file_change_is_picked_up(gateway: GatewayFactory, passwd_path) -> None:  # type: ignore[no-untyped-def]
    from lib.passwd import PasswordFile

    client, _ = await gateway()
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 201
    PasswordFile(passwd_path).set_user("alice", "a brand new password")
    await asyncio.sleep(1.1)  # the file is looked at no more than once a second
    # The cache was emptied by the change: the old password no longer works.
    assert (await client.post("/", data=setup_body(), headers=ALICE)).status == 401
    assert (
        await client.post("/", data=setup_body(), headers=basic("alice", "a brand new password"))
    ).status == 201


async def test_legacy_hash_upgraded_on_login(gateway: GatewayFactory, passwd_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import os

    salt = os.urandom(16)
    digest = hashlib.scrypt(b"legacy pass", salt=salt, n=16384, r=8, p=1, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode().rstrip("=")  # noqa: E731
    with passwd_path.open("a") as f:
        f.write(f"olduser:$8${b64(salt)}${b64(digest)}\n")
    client, _ = await gateway()
    r = await client.post("/", data=setup_body(), headers=basic("olduser", "legacy pass"))
    assert r.status == 201
    line = next(ln for ln in passwd_path.read_text().splitlines() if ln.startswith("olduser:"))
    assert line.startswith("olduser:$scrypt$")
    assert oct(passwd_path.stat().st_mode & 0o777) == "0o600"


# -- the password store: generations and the bounded queue --------------------------------


def held_checks(store: PasswordStore) -> tuple[threading.Event, threading.Event]:
    """Make *store*'s hash checks wait for ``release``; ``started`` is set when one runs."""
    started, release = threading.Event(), threading.Event()
    real: Callable[..., UserEntry | None] = store.file.verify

    def held(users: dict[str, UserEntry], name: str, password: str) -> UserEntry | None:
        started.set()
        release.wait(30)
        return real(users, name, password)

    store.file.verify = held  # type: ignore[method-assign]
    return started, release


async def test_a_check_of_an_older_file_is_neither_believed_nor_cached(passwd_path: Path) -> None:
    store = PasswordStore(passwd_path, cache_ttl=60)
    store.load()
    started, release = held_checks(store)
    alice, bob = ("alice", PASSWORDS["alice"]), ("bob", PASSWORDS["bob"])
    checks = [asyncio.ensure_future(store.verify(*who)) for who in (alice, bob)]
    await asyncio.to_thread(started.wait, 10)
    PasswordFile(passwd_path).delete_user("alice")  # while her check runs
    release.set()
    alice_entry, bob_entry = await asyncio.gather(*checks)
    assert alice_entry is None  # she is gone from the file in force now
    assert store.cached(*alice) is None
    assert bob_entry is not None and bob_entry.name == "bob"  # his hash did not change
    assert store.cached(*bob) == bob_entry
    store.close()


async def test_password_checks_are_shed_when_the_queue_is_full_or_slow(passwd_path: Path) -> None:
    store = PasswordStore(passwd_path, cache_ttl=0, workers=1, queue_size=1, queue_wait=0.2)
    store.load()
    started, release = held_checks(store)
    running = asyncio.ensure_future(store.verify("alice", "guess 1"))
    await asyncio.to_thread(started.wait, 10)
    waiting = asyncio.ensure_future(store.verify("alice", "guess 2"))
    await asyncio.sleep(0)
    with pytest.raises(Busy, match="waiting") as full:
        await store.verify("alice", "guess 3")  # the one place in the queue is taken
    assert full.value.headers == {"Retry-After": "1"} and full.value.status == 503
    with pytest.raises(Busy, match=r"within 0\.2s"):
        await waiting  # the thread stayed busy longer than it may wait
    release.set()
    assert await running is None
    store.close()
