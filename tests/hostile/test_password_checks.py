"""Password checks under attack, against real gateway processes.

Checking a password is deliberately slow (scrypt, or an original ``$7$``
PBKDF2-SHA3 hash several times slower), so it is where an attacker leans:

* a flood of wrong logins from many addresses, each under its failure limit,
  must be shed (503 with ``Retry-After``) once ``AUTH_QUEUE_SIZE`` checks wait
  (a quarter of that for one user name, so that others still get in), or once
  one has waited ``AUTH_QUEUE_WAIT``, not queued without end;
* concurrent guesses from one client get no more checks than its failure
  limit, and every address in an IPv6 /64 shares one limit, for passwords and
  acme-dns keys alike;
* a check that started before its user was deleted must not let that user in
  afterwards (it used to refill the cache for ``AUTH_CACHE_TTL``);
* an unknown user must cost what the slowest hash in the file costs: the
  gateway's CPU time for logins of unknown users is compared with that for a
  ``$7$`` user (CPU work, not wall-clock time, so a busy machine does not
  blur it).

Source addresses come from 127.0.0.0/8 (tests.hostile.wire); IPv6 clients
arrive through a trusted proxy's ``X-Forwarded-For``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    GatewayProcess,
    gateway_settings,
    passwords_only,
    running_gateway,
    write_accounts_file,
)
from tests.hostile.conftest import Answer
from tests.hostile.wire import basic, send
from tests.system import free_port

ALICE = basic("alice", "alice's password")
CAROL = basic("carol", "carol's password")  # an admin
SLOWPOKE_PASSWORD = "slowpoke's password"


def legacy_pbkdf2_sha3(password: str) -> str:
    """An original gateway's ``$7$`` hash (PBKDF2-HMAC-SHA3-512, 262144 rounds), made here
    as its ``passwd.py`` made it."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha3_512", password.encode(), salt, 262144, 32)
    b64 = base64.b64encode
    return f"$7${b64(salt).decode().rstrip('=')}${b64(digest).decode().rstrip('=')}"


@dataclass
class Gateway:
    process: GatewayProcess
    port: int
    folder: Path

    def login(self, headers: dict[str, str], source: str = "127.0.0.1",
              forwarded: str | None = None) -> Answer:
        if forwarded is not None:
            headers = {**headers, "X-Forwarded-For": forwarded}
        body = {"argument": "setup", "domain_name": "example.test",
                "challenge_content": make_value()}
        return send(self.port, "POST", "/", source=source, headers=headers, body=body)

    def cpu_seconds(self) -> float:
        """The process's CPU time so far, all threads."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    """``start(**settings)`` -> a running :class:`Gateway` with alice, carol and slowpoke."""
    running: list[Iterator[GatewayProcess]] = []

    def starter(**settings: str) -> Gateway:
        users = PasswordFile(tmp_path / "acmepasswd")
        users.set_user("alice", "alice's password")
        users.set_user("carol", "carol's password", roles=["admin"])
        with (tmp_path / "acmepasswd").open("a") as f:  # still on the original's hash
            f.write(f"slowpoke:{legacy_pbkdf2_sha3(SLOWPOKE_PASSWORD)}\n")
        port = free_port()
        env = gateway_settings(tmp_path, port, **passwords_only(tmp_path),
                               AUTH_MAX_FAILURES="100000", LOG_LEVEL="WARNING") | settings
        context = running_gateway(tmp_path, env)
        running.append(context)
        return Gateway(context.__enter__(), port, tmp_path)

    yield starter
    for context in running:
        context.__exit__(None, None, None)


def failed_login_cpu(gw: Gateway, known: dict[str, str]) -> dict[str, float]:
    """The gateway's CPU seconds for wrong passwords of *known* and of an unknown user,
    interleaved so that both see the same machine; every login must be refused."""
    unknown = basic("nobody-at-all", "a guess")
    for headers in (known, unknown):  # warm up: calibration, imports
        assert gw.login(headers).status == 401
    spent = {"known": 0.0, "unknown": 0.0}
    for _ in range(4):
        for name, headers in (("known", known), ("unknown", unknown)):
            before = gw.cpu_seconds()
            for _ in range(2):
                assert gw.login(headers).status == 401
            spent[name] += gw.cpu_seconds() - before
    return spent


def flood(gw: Gateway, count: int, headers_for: object, sources: list[str]) -> list[Answer]:
    """*count* concurrent logins, the i-th with ``headers_for(i)`` from ``sources[i]``."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: gw.login(headers_for(i), sources[i]), range(count)))  # type: ignore[operator]


def many_addresses(count: int) -> list[str]:
    return [f"127.0.{1 + i // 250}.{1 + i % 250}" for i in range(count)]


# -- the queue ----------------------------------------------------------------------------------


def test_a_flood_from_many_addresses_is_shed_not_queued(start: object) -> None:
    gw: Gateway = start(AUTH_QUEUE_SIZE="8", AUTH_QUEUE_WAIT="60s")  # type: ignore[operator]
    admin: list[Answer] = []

    def admin_login() -> None:
        time.sleep(0.2)  # while the flood is at its height
        admin.append(gw.login(CAROL, "127.0.0.2"))

    helper = threading.Thread(target=admin_login)
    helper.start()
    # Each guess different (the same credentials at once would share one check).
    answers = flood(gw, 60, lambda i: basic("slowpoke", f"guess {i}"), many_addresses(60))
    helper.join(120)
    statuses = sorted({a.status for a in answers})
    assert set(statuses) <= {401, 503}, statuses
    shed = [a for a in answers if a.status == 503]
    assert shed, "60 slow checks at once, with room for 8 to wait: none was shed"
    assert all(a.headers.get("Retry-After") == "1" for a in shed)
    assert "waiting" in shed[0].json()["message"]
    # Guesses at one account take at most a quarter of the queue: the admin finds room.
    assert admin and admin[0].status == 201, admin


def test_a_check_that_cannot_start_in_time_is_shed(start: object) -> None:
    gw: Gateway = start(AUTH_QUEUE_SIZE="1000", AUTH_QUEUE_WAIT="300ms")  # type: ignore[operator]
    # 30 checks of a hash that takes far more than 20 ms, on two threads: most must
    # wait longer than 300 ms.
    answers = flood(gw, 30, lambda i: basic("slowpoke", f"guess {i}"), many_addresses(30))
    shed = [a for a in answers if a.status == 503]
    assert {a.status for a in answers} <= {401, 503}
    assert shed and all("within 0.3s" in a.json()["message"] for a in shed), [
        a.status for a in answers
    ]


# -- one failure budget per client ----------------------------------------------------------------


def test_concurrent_guesses_from_one_client_get_no_more_checks_than_its_limit(
    start: object,
) -> None:
    gw: Gateway = start(AUTH_MAX_FAILURES="5")  # type: ignore[operator]
    answers = flood(gw, 30, lambda i: basic("alice", f"guess {i}"), ["127.0.0.5"] * 30)
    statuses = [a.status for a in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(401) <= 5, statuses
    # The same credentials sent at once share one check: a client in a hurry is no guesser.
    together = flood(gw, 20, lambda i: ALICE, ["127.0.0.6"] * 20)
    assert [a.status for a in together] == [201] * 20


def test_an_ipv6_client_has_one_budget_for_its_64(start: object, tmp_path: Path) -> None:
    accounts = write_accounts_file(
        tmp_path / "accounts.json",
        {"username": "acct", "password": "k" * 40, "subdomain": "s",
         "fulldomain": "s.acme.example.test"},
    )
    gw: Gateway = start(  # type: ignore[operator]
        AUTH_MAX_FAILURES="3", ALLOWED_PROXIES="127.0.0.1", ACMEDNS_ZONE="acme.example.test",
        ACMEDNS_ACCOUNTS_FILE=str(accounts),
    )
    wrong = basic("alice", "not it")
    for n in (1, 2, 3):
        assert gw.login(wrong, forwarded=f"2001:db8:1:2::{n}").status == 401
    # A new address in the same /64 is the same client; the next /64 is another.
    assert gw.login(ALICE, forwarded="2001:db8:1:2:ffff:ffff:ffff:1").status in (201, 429)
    assert gw.login(wrong, forwarded="2001:db8:1:2:abcd::9").status == 429
    assert gw.login(wrong, forwarded="2001:db8:1:3::1").status == 401

    def update(key: str, address: str) -> int:
        headers = {"X-Api-User": "acct", "X-Api-Key": key, "X-Forwarded-For": address}
        body = {"subdomain": "s", "txt": make_value()}
        return send(gw.port, "POST", "/update", headers=headers, body=body).status

    for n in (1, 2, 3):
        assert update("x" * 40, f"2001:db8:9:9::{n}") == 401
    assert update("x" * 40, "2001:db8:9:9:8000::1") == 429
    assert update("k" * 40, "2001:db8:9:9:8000::2") == 429  # locked out, right key or not
    assert update("k" * 40, "2001:db8:9:a::1") == 200


# -- results of an older password file ------------------------------------------------------------


def test_a_user_deleted_while_a_check_of_theirs_waits_is_refused(start: object) -> None:
    gw: Gateway = start(AUTH_QUEUE_SIZE="1000", AUTH_QUEUE_WAIT="120s",  # type: ignore[operator]
                        AUTH_CACHE_TTL="300s")
    # Slow checks ahead of alice's keep hers waiting for seconds.
    filler = threading.Thread(
        target=flood,
        args=(gw, 16, lambda i: basic("slowpoke", f"guess {i}"), many_addresses(16)),
    )
    filler.start()
    time.sleep(0.3)
    answer: list[Answer] = []
    alice = threading.Thread(target=lambda: answer.append(gw.login(ALICE, "127.0.0.3")))
    alice.start()
    time.sleep(0.3)
    PasswordFile(gw.folder / "acmepasswd").delete_user("alice")
    # Another login more than a second later makes the gateway look at the file again
    # while alice's check still waits: it learns that she is gone.
    time.sleep(1.2)
    still_waiting = alice.is_alive()
    gw.login(basic("carol", "wrong"), "127.0.0.4")
    alice.join(120)
    filler.join(120)
    assert still_waiting, "alice's check ended before the file was read again; add filler"
    # Whatever her own request got, nothing may let her in now.
    assert gw.login(ALICE, "127.0.0.3").status == 401


# -- timing -------------------------------------------------------------------------------------


def test_an_unknown_user_costs_what_the_slowest_hash_costs(start: object) -> None:
    gw: Gateway = start(AUTH_CACHE_TTL="0")  # type: ignore[operator]
    spent = failed_login_cpu(gw, known=basic("slowpoke", "a guess"))
    # Equal work, up to measuring noise; an unknown user checked against scrypt only
    # spent a fifth to a third of a $7$ user's.
    assert spent["unknown"] > 0.7 * spent["known"], spent
