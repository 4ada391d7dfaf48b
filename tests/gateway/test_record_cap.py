"""``MAX_RECORDS_PER_USER``: what one caller may have published at once, on a real process.

The gateway runs as ``python -m gateway`` with an original-gateway provider
class whose zone is a JSON file (tests.gateway.filedns), so the test sees every
provider call and every value written. Callers: two password users, the
allowed host 127.0.0.1 without a password, and an acme-dns account; each is
counted on its own. Past the cap a setup answers 429 and neither the journal
nor the provider sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests

from gateway.acmedns import hash_key
from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway import filedns
from tests.gateway.filedns import JournalFile, Zone
from tests.gateway.procs import gateway_settings, running_gateway, write_accounts_file
from tests.system import free_port

CAP = 3
USERS = {"alice": "alice-secret", "bob": "bob: secret"}
ACME_USER, ACME_KEY, ACME_SUB = "acct-1", "acme-dns-key-" + "k" * 27, "acct1"
ACME_FQDN = "_acme-challenge.acme.example.test"


@dataclass
class Gateway:
    url: str
    zone: Zone
    journal: JournalFile

    def setup(self, name: str, value: str, user: str | None = None) -> requests.Response:
        return self._send("POST", "setup", name, value, user)

    def teardown(self, name: str, value: str, user: str | None = None) -> requests.Response:
        return self._send("DELETE", "teardown", name, value, user)

    def _send(
        self, method: str, argument: str, name: str, value: str, user: str | None
    ) -> requests.Response:
        body = {"argument": argument, "domain_name": name, "challenge_content": value}
        auth = (user, USERS[user]) if user else None
        return requests.request(method, f"{self.url}/", json=body, auth=auth, timeout=30)

    def acmedns_update(self, value: str) -> requests.Response:
        headers = {"X-Api-User": ACME_USER, "X-Api-Key": ACME_KEY}
        body = {"subdomain": ACME_SUB, "txt": value}
        return requests.post(f"{self.url}/update", json=body, headers=headers, timeout=30)

    def owned_by(self, owner: str) -> set[tuple[str, str]]:
        return {key for key, who in self.journal.owners().items() if who == owner}

    def provider_saw(self, value: str) -> bool:
        return any(call["token"] == value for call in self.zone.calls())


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    where = tmp_path_factory.mktemp("cap")
    passwd = PasswordFile(where / "acmepasswd")
    for user, password in USERS.items():
        passwd.set_user(user, password)
    accounts = write_accounts_file(
        where / "accounts.json",
        {"username": ACME_USER, "password_hash": hash_key(ACME_KEY), "subdomain": ACME_SUB,
         "domain": "acme.example.test"},
    )
    zone = Zone(where / "zone.json")
    provider = filedns.write_provider(where / "filedns.py", zone.path, delay=0.1)
    port = free_port()
    settings = gateway_settings(
        where, port, **filedns.settings(provider),
        BASIC_AUTH="sufficient",
        PASSWD_FILE=str(passwd.path),
        ACMEDNS_ACCOUNTS_FILE=str(accounts),
        MAX_RECORDS_PER_USER=str(CAP),
    )
    with running_gateway(where, settings):
        yield Gateway(
            f"http://127.0.0.1:{port}", zone, JournalFile(where / "state" / "journal.sqlite3")
        )


def test_past_the_cap_a_setup_is_429_and_nothing_is_written(gateway: Gateway) -> None:
    values = [make_value() for _ in range(CAP)]
    for n, value in enumerate(values):
        assert gateway.setup(f"a{n}.example.test", value, "alice").status_code == 201
    # Setting a value again is no new value: it does not count twice.
    assert gateway.setup("a0.example.test", values[0], "alice").status_code == 201
    assert len(gateway.owned_by("alice")) == CAP

    extra = make_value()
    refused = gateway.setup("a9.example.test", extra, "alice")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"] == "too_many_records"
    assert "MAX_RECORDS_PER_USER" in refused.json()["message"]
    assert not gateway.provider_saw(extra)
    assert ("_acme-challenge.a9.example.test", extra) not in gateway.journal.records()
    assert ("_acme-challenge.a9.example.test", extra) not in gateway.zone.values()

    # Every other caller counts on their own: the allowed host, and an acme-dns account
    # (whose older values go as it updates, so it never reaches the cap).
    host_value = make_value()
    assert gateway.setup("h.example.test", host_value).status_code == 201
    assert gateway.owned_by("host:127.0.0.1") == {("_acme-challenge.h.example.test", host_value)}
    for _ in range(CAP + 2):
        answer = gateway.acmedns_update(make_value())
        assert answer.status_code == 200, answer.text

    # A teardown makes room again.
    assert gateway.teardown("a1.example.test", values[1], "alice").status_code == 200
    assert gateway.setup("a9.example.test", extra, "alice").status_code == 201
    assert ("_acme-challenge.a9.example.test", extra) in gateway.zone.values()


def test_setups_racing_each_other_let_exactly_the_cap_through(gateway: Gateway) -> None:
    values = [make_value() for _ in range(3 * CAP)]
    with ThreadPoolExecutor(len(values)) as pool:
        answers = list(
            pool.map(
                lambda nv: gateway.setup(f"b{nv[0]}.example.test", nv[1], "bob"),
                enumerate(values),
            )
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * CAP + [429] * (len(values) - CAP), [a.text for a in answers]
    published = {v for v, a in zip(values, answers, strict=True) if a.status_code == 201}
    assert {value for _, value in gateway.owned_by("bob")} == published
    assert {v for v in values if gateway.provider_saw(v)} == published
