"""A web page cannot make a browser on an allowed host write records (CSRF, DNS rebinding).

A caller admitted by its address (``BASIC_AUTH=off``, or ``sufficient`` without
credentials) needs nothing a browser would not send by itself, and the API
reads JSON whatever the ``Content-Type`` says (the original's curl wrapper
sends ``application/x-www-form-urlencoded``). So a page on any web site, opened
in a browser on an allowed host (an admin's workstation inside
``ALLOWED_HOSTS=10.0.0.0/8``), could ``fetch()`` a ``text/plain`` POST to the
gateway, a simple request no CORS preflight stops, and publish the attacker's
value at ``_acme-challenge.<any managed name>``: a certificate for it. A page
served from a name the attacker later re-points at the gateway (DNS rebinding)
could do the same and read the answers. Cached basic credentials are sent by
the browser too.

Browsers say who made a request: ``Origin`` on every cross-origin request and on
any POST, and ``Sec-Fetch-Site`` on every request. No API client sends them
(curl, lego, certbot, the hook, acme-dns clients). Against a real gateway: the
requests a browser sends for such a page are refused with 403 and write
nothing; the same request from a program, and a page the admin opens by hand
(``Sec-Fetch-Site: none``), still work.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import gateway_settings, running_gateway
from tests.hostile.conftest import Answer
from tests.hostile.wire import basic, send
from tests.system import free_port

# What Firefox and Chromium send with fetch(url, {method: "POST", body}) from a page
# on another site, and from a page on a name rebound to the gateway.
CROSS_SITE = {
    "Origin": "https://attacker.example",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "no-cors",
    "Sec-Fetch-Dest": "empty",
    "Content-Type": "text/plain;charset=UTF-8",
}
REBOUND = {
    "Origin": "http://rebound.attacker.example:8000",
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Dest": "empty",
    "Content-Type": "text/plain;charset=UTF-8",
}
# A form on another site posted to the gateway (a navigation).
FORM = {
    "Origin": "null",
    "Sec-Fetch-Site": "cross-site",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Content-Type": "text/plain",
}
# An admin typing the gateway's address into the browser's address bar.
TYPED = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp: Path = tmp_path_factory.mktemp("browsers")
    PasswordFile(tmp / "acmepasswd").set_user("ops", "ops password", roles=["admin"])
    port = free_port()
    settings = gateway_settings(
        tmp, port,
        BASIC_AUTH="sufficient",
        PASSWD_FILE=str(tmp / "acmepasswd"),
        HTTPREQ_PREFIX="httpreq",
        ACMEDNS_ZONE="acme.example.test",
        ACMEDNS_REGISTER="1",
    )
    with running_gateway(tmp, settings):
        yield port


def setup(port: int, headers: dict[str, str], name: str) -> Answer:
    body = {"argument": "setup", "domain_name": name, "challenge_content": make_value()}
    return send(port, "POST", "/", headers=headers, body=body)


def written(port: int) -> set[str]:
    records = send(port, "GET", "/records").json()["records"]
    return {r["fqdn"] for r in records}


@pytest.mark.parametrize(
    ("what", "headers"),
    [("cross-site fetch", CROSS_SITE), ("fetch after DNS rebinding", REBOUND),
     ("cross-site form", FORM),
     ("cross-site fetch with cached credentials", {**CROSS_SITE, **basic("ops", "ops password")})],
)
def test_a_browser_made_to_call_the_api_writes_nothing(
    port: int, what: str, headers: dict[str, str]
) -> None:
    name = f"{what.replace(' ', '-')}.example.test"
    answer = setup(port, headers, name)
    assert answer.status == 403, f"{what}: {answer}"
    httpreq = send(port, "POST", "/httpreq/present", headers=headers,
                   body={"fqdn": f"_acme-challenge.{name}.", "value": make_value()})
    assert httpreq.status == 403, f"{what}: {httpreq}"
    register = send(port, "POST", "/register", headers=headers, body={})
    assert register.status == 403, f"{what}: {register}"
    assert f"_acme-challenge.{name}" not in written(port)


def test_programs_and_an_admin_at_the_address_bar_are_served(port: int) -> None:
    assert setup(port, {}, "program.example.test").status == 201
    assert send(port, "GET", "/records", headers=TYPED).status == 200
    assert send(port, "GET", "/healthz", headers=CROSS_SITE).status == 200  # public
