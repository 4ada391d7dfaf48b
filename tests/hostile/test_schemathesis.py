"""schemathesis against a live gateway, driven by the gateway's own /openapi.json.

The gateway runs as ``python -m gateway`` (``tests/gateway/procs.py``) on a
loopback port with ``BASIC_AUTH=required``, the in-memory provider, every API
switched on (native, httpreq under a prefix, acme-dns update and register) and
a pre-registered acme-dns account. schemathesis loads the document the running
gateway serves and, for every operation in it, sends generated requests
(valid and invalid, within and outside the schema) with basic auth: alice (a
user of every managed domain) everywhere, carol (an admin) for ``/register`` and
``/accounts``.
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
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
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
    accounts.write_text(
        json.dumps(
            {
                "example.test": {
                    "username": ACMEDNS_USER,
                    "password": ACMEDNS_KEY,
                    "subdomain": ACMEDNS_SUB,
                    "fulldomain": f"{ACMEDNS_SUB}.{ACMEDNS_ZONE}",
                    "allowfrom": [],
                }
            }
        )
    )
    accounts.chmod(0o600)  # it holds keys: the gateway wants it private
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


def operations(base_url: str) -> list[Any]:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def test_the_document_describes_every_api(live_gateway: str) -> None:
    document = requests.get(f"{live_gateway}/openapi.json", timeout=10).json()
    assert {"/", "/httpreq/present", "/httpreq/cleanup", "/update", "/register", "/healthz"} <= set(
        document["paths"]
    )


def make_check(operation: Any, mode: GenerationMode, base_url: str, auth: tuple[str, str]) -> Any:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(
            base_url=base_url, auth=auth, checks=[not_a_server_error], timeout=10
        )

    return check


# schemathesis' pytest plugin is not used: it reaches into pytest internals
# that change between minor releases (pytest 9.2 removed Function._nodeid).
# Its strategies and checks, driven by plain hypothesis, test the same thing.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_makes_a_server_error(live_gateway: str, mode: GenerationMode) -> None:
    ops = operations(live_gateway)
    assert len(ops) >= 9, [op.label for op in ops]
    tested = 0
    for operation in ops:
        admin = operation.path == "/register" or operation.path.startswith("/accounts")
        user = "carol" if admin else "alice"
        try:
            make_check(operation, mode, live_gateway, (user, PASSWORDS[user]))()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid form to send.
            if mode is GenerationMode.NEGATIVE:
                continue
            raise
        tested += 1
    # Every operation with a body or headers has negative cases.
    assert tested >= (9 if mode is GenerationMode.POSITIVE else 5)
