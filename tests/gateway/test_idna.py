"""Internationalised names reach a real gateway process and land where a CA looks.

CAs and browsers map names with UTS #46 and then IDNA 2008: ``straße`` is
``xn--strae-oqa``. A gateway that used IDNA 2003 wrote the record at
``strasse``, where no CA ever asks. The gateway runs as ``python -m gateway``
with its builtin DNS server, and the test asks that server over UDP, as the CA's
resolver would, for the name the CA validates.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import (
    GatewayProcess,
    builtin_settings,
    passwords_only,
    running_gateway,
)
from tests.servers.authoritative import served_txt
from tests.system import free_port

USER, PASSWORD = "alice", "idna: correct horse"
# What a CA validates for straße.example.test (RFC 8555 identifiers are A-labels).
CA_NAME = "_acme-challenge.xn--strae-oqa.example.test"


@dataclass
class Gateway:
    process: GatewayProcess
    url: str
    dns_port: int

    def post(self, path: str, body: object) -> requests.Response:
        return requests.post(f"{self.url}{path}", json=body, auth=(USER, PASSWORD), timeout=30)

    def txt(self, name: str) -> list[str]:
        return sorted(served_txt(name, self.dns_port))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("idna")
    # The administrator writes the names as people read them.
    PasswordFile(folder / "acmepasswd").set_user(USER, PASSWORD, domains=["straße.example.test"])
    port, dns_port = free_port(), free_port()
    settings = builtin_settings(folder, port, dns_port, DNSAPI_DOMAINS="straße.example.test",
                                **passwords_only(folder), PROPAGATION_CHECK="off")
    with running_gateway(folder, settings) as process:
        yield Gateway(process, f"http://127.0.0.1:{port}", dns_port)


@pytest.mark.parametrize("spelling", ["straße.example.test", "*.Straße.EXAMPLE.test.",
                                      "xn--strae-oqa.example.test"])
def test_native_setup_writes_the_idna_2008_name(gateway: Gateway, spelling: str) -> None:
    value = make_value()
    answer = gateway.post("/", {"argument": "setup", "domain_name": spelling,
                                "challenge_content": value})
    assert answer.status_code == 201, answer.text
    assert answer.json()["fqdn"] == CA_NAME
    assert value in gateway.txt(CA_NAME)
    assert gateway.post("/", {"argument": "teardown", "domain_name": spelling,
                              "challenge_content": value}).status_code == 200


def test_httpreq_present_with_a_unicode_fqdn(gateway: Gateway) -> None:
    value = make_value()
    answer = gateway.post("/present", {"fqdn": "_acme-challenge.straße.example.test.",
                                       "value": value})
    assert answer.status_code == 200, answer.text
    assert value in gateway.txt(CA_NAME)
    assert gateway.post("/cleanup", {"fqdn": "_acme-challenge.straße.example.test.",
                                     "value": value}).status_code == 200


def test_the_idna_2003_spelling_is_another_name(gateway: Gateway) -> None:
    answer = gateway.post("/", {"argument": "setup", "domain_name": "strasse.example.test",
                                "challenge_content": make_value()})
    assert answer.status_code == 403, answer.text


@pytest.mark.parametrize("name", ["\u2603.straße.example.test", "xn--n3h.straße.example.test",
                                  "a\u200db.straße.example.test"])
def test_a_name_that_is_not_idna_2008_is_a_400_naming_the_field(gateway: Gateway,
                                                               name: str) -> None:
    answer = gateway.post("/", {"argument": "setup", "domain_name": name,
                                "challenge_content": make_value()})
    assert answer.status_code == 400, answer.text
    message = answer.json()["message"]
    assert message.startswith("domain_name: ") and "IDNA 2008" in message
    assert gateway.process.proc.poll() is None
