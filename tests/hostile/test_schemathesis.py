"""schemathesis against a live gateway, driven by the gateway's own /openapi.json.

The gateway runs as ``python -m gateway`` (``tests/gateway/procs.py``) on a
loopback port with ``BASIC_AUTH=required``, the in-memory provider, every API
switched on (native, httpreq under a prefix, acme-dns update and register) and
a pre-registered acme-dns account. schemathesis loads the document the running
gateway serves and, for every operation in it, sends generated requests
(valid and invalid, within and outside the schema) with basic auth: alice (a
user of every managed domain) everywhere, carol (an admin) for ``/register``.
The only check is schemathesis' ``not_a_server_error``: no 5xx, whatever the
request. Examples are bounded (``max_examples=40`` per operation and phase)
so the module stays well under a minute.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from lib.passwd import PasswordFile
from tests.gateway.procs import running_gateway
from tests.hostile.conftest import (
    ACMEDNS_KEY,
    ACMEDNS_SUB,
    ACMEDNS_USER,
    ACMEDNS_ZONE,
    DOMAINS,
    PASSWORDS,
)
from tests.system import free_port


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running gateway; stopped (by pid) when the module ends."""
    tmp = tmp_path_factory.mktemp("live-gateway")
    passwd = PasswordFile(tmp / "acmepasswd")
    passwd.set_user("alice", PASSWORDS["alice"])
    passwd.set_user("carol", PASSWORDS["carol"], domains=["shop.example.test"], roles=["admin"])
    accounts = tmp / "acmedns.json"
    accounts.write_text(json.dumps({"example.test": {
        "username": ACMEDNS_USER, "password": ACMEDNS_KEY, "subdomain": ACMEDNS_SUB,
        "fulldomain": f"{ACMEDNS_SUB}.{ACMEDNS_ZONE}", "allowfrom": [],
    }}))
    port = free_port()
    settings_ = {
        "PROVIDER": "memory",
        "DNSAPI_DOMAINS": ",".join(DOMAINS),
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(tmp / "acmepasswd"),
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(tmp / "state"),
        "PROPAGATION_CHECK": "off",
        "HTTPREQ_PREFIX": "httpreq",
        "ACMEDNS_ZONE": ACMEDNS_ZONE,
        "ACMEDNS_ACCOUNTS_FILE": str(accounts),
        "ACMEDNS_REGISTER": "1",
        "AUTH_MAX_FAILURES": "100000",  # generated X-Api-Key values are wrong by design
        "LOG_LEVEL": "WARNING",
    }
    with running_gateway(tmp, settings_) as gw:
        yield f"http://127.0.0.1:{port}"
        assert "Traceback" not in gw.stderr, gw.stderr[-3000:]


@pytest.fixture(scope="module")
def api_schema(live_gateway: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_gateway}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def test_the_document_describes_every_api(live_gateway: str) -> None:
    document = requests.get(f"{live_gateway}/openapi.json", timeout=10).json()
    assert {"/", "/httpreq/present", "/httpreq/cleanup", "/update", "/register",
            "/healthz"} <= set(document["paths"])


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=None,
)
def test_no_request_makes_a_server_error(case: schemathesis.Case[Any], live_gateway: str) -> None:
    user = "carol" if case.path == "/register" else "alice"
    case.call_and_validate(
        base_url=live_gateway,
        auth=(user, PASSWORDS[user]),
        checks=[not_a_server_error],
        timeout=10,
    )

