"""One host and password policy for every API: the same caller gets the same verdict everywhere.

For every ``BASIC_AUTH`` x ``ALLOWED_HOSTS`` x ``ALLOWED_PROXIES`` combination the
gateway accepts, one real gateway process (``python -m gateway``) is started and
every endpoint its router has is called by every kind of caller: with no
credentials, a user, an admin, a wrong password, an unknown user, an acme-dns
key (right, wrong, and one whose ``allowfrom`` leaves the caller out), each from
an allowed and a refused address, directly, through a trusted proxy, and with a
forged ``X-Forwarded-For``. Each answer's verdict (admitted, 401 or 403) must be
what the rules in README "Security model" say, written here independently of
``gateway/auth.py``:

* the host rule is the same for every endpoint that is not public: ``off``
  refuses every address outside ``ALLOWED_HOSTS``, ``required`` too when hosts
  are set; ``sufficient`` refuses no address by itself;
* then basic-auth endpoints want a valid password, except that an allowed
  host needs none under ``sufficient`` and nobody needs one under ``off``;
  admin endpoints want an admin user or a caller admitted by its address;
* the acme-dns endpoint wants a valid account key in every mode, and the
  account's ``allowfrom`` only ever takes callers away.

The endpoints come from the app's router, not from a list kept here: a route
this module has no expectation for fails :func:`test_every_route_is_in_the_table`,
so a new endpoint cannot go untested, and the access middleware refuses to
serve a route without declared access (:func:`test_a_route_without_declared_access_is_not_served`).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.auth import Access
from gateway.config import load
from lib.passwd import PasswordFile
from providers.memory import MemoryProvider
from tests.conftest import make_value
from tests.gateway.procs import running_gateway, write_accounts_file
from tests.hostile.conftest import ACMEDNS_ZONE, PASSWORDS
from tests.hostile.wire import basic, send
from tests.system import free_port

ALLOWED = "127.0.0.2"  # in ALLOWED_HOSTS whenever hosts are set
REFUSED = "127.0.0.3"  # never in ALLOWED_HOSTS
PROXY = "127.0.0.9"  # in ALLOWED_PROXIES whenever proxies are set
PREFIX = "/httpreq"

KEY_USER, KEY, KEY_SUB = "6c1d7a0e-acc0-4e1f-9d5e-8b1b0d1c0001", "k" * 40, "sub-open"
NARROW_USER, NARROW_KEY, NARROW_SUB = "6c1d7a0e-acc0-4e1f-9d5e-8b1b0d1c0002", "n" * 40, "sub-narrow"

# Who may call each route, as README says; keyed by (method, path in the router).
EXPECTED_ACCESS = {
    ("GET", "/healthz"): Access.PUBLIC,
    ("HEAD", "/healthz"): Access.PUBLIC,
    ("GET", "/openapi.json"): Access.PUBLIC,
    ("HEAD", "/openapi.json"): Access.PUBLIC,
    ("GET", "/health"): Access.PUBLIC,
    ("HEAD", "/health"): Access.PUBLIC,
    ("GET", "/metrics"): Access.CALLER,
    ("HEAD", "/metrics"): Access.CALLER,
    ("GET", "/records"): Access.ADMIN,
    ("HEAD", "/records"): Access.ADMIN,
    ("POST", f"{PREFIX}/present"): Access.CALLER,
    ("POST", f"{PREFIX}/cleanup"): Access.CALLER,
    ("POST", "/update"): Access.ACCOUNT,
    ("POST", "/register"): Access.ADMIN,
    ("GET", "/accounts"): Access.ADMIN,
    ("HEAD", "/accounts"): Access.ADMIN,
    ("DELETE", "/accounts/{username}"): Access.ADMIN,
    ("POST", "/accounts/{username}/rotate"): Access.ADMIN,
    ("*", "/"): Access.CALLER,
    ("*", "/{tail}"): Access.CALLER,
}


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str]
    basic: str | None = None  # "user", "admin" or "wrong" for basic credentials
    key: str | None = None  # "open", "narrow" or "wrong" for acme-dns credentials


CALLERS = (
    Caller("anonymous", {}),
    Caller("alice", basic("alice", PASSWORDS["alice"]), basic="user"),
    Caller("carol (admin)", basic("carol", PASSWORDS["carol"]), basic="admin"),
    Caller("alice, wrong password", basic("alice", "not her password"), basic="wrong"),
    Caller("unknown user", basic("mallory", "whatever"), basic="wrong"),
    Caller("acme-dns key", {"X-Api-User": KEY_USER, "X-Api-Key": KEY}, key="open"),
    Caller("acme-dns wrong key", {"X-Api-User": KEY_USER, "X-Api-Key": "x" * 40}, key="wrong"),
    Caller(
        "acme-dns key, allowfrom elsewhere",
        {"X-Api-User": NARROW_USER, "X-Api-Key": NARROW_KEY},
        key="narrow",
    ),
)


@dataclass(frozen=True)
class Via:
    """How a caller reaches the gateway: its socket's address and a forwarding header."""

    name: str
    source: str
    forwarded: str | None
    effective: str  # the client address the rules must see


def vias(proxies: bool) -> list[Via]:
    found = [
        Via("direct from an allowed address", ALLOWED, None, ALLOWED),
        Via("direct from a refused address", REFUSED, None, REFUSED),
        # Nobody but a trusted proxy may claim an address.
        Via("refused address forging X-Forwarded-For", REFUSED, ALLOWED, REFUSED),
    ]
    if proxies:
        found += [
            Via("trusted proxy for an allowed address", PROXY, ALLOWED, ALLOWED),
            Via("trusted proxy for a refused address", PROXY, REFUSED, REFUSED),
        ]
    return found


def expected(mode: str, hosts: bool, effective: str, caller: Caller, access: Access) -> str:
    """The verdict README's rules give: "in", "401" or "403"."""
    if access is Access.PUBLIC:
        return "in"
    allowed = hosts and effective == ALLOWED
    if not allowed and (mode == "off" or (mode == "required" and hosts)):
        return "403"
    if access is Access.ACCOUNT:
        if caller.key in ("open", "narrow"):
            return "in" if caller.key == "open" or effective == ALLOWED else "403"
        return "401"
    if mode == "off":
        return "in"  # admitted by address; there are no passwords
    if caller.basic is None:
        return "in" if mode == "sufficient" and allowed else "401"
    if caller.basic == "wrong":
        return "401"
    if access is Access.ADMIN and caller.basic == "user":
        return "403"
    return "in"


def request_for(method: str, path: str) -> tuple[str, str, dict[str, object] | None]:
    """A request that an admitted caller of the route gets a 2xx for (404 for a
    deletion of an account that does not exist)."""
    name = "shop.example.test"  # inside every test user's domains
    value = make_value()
    native = {"argument": "setup", "domain_name": name, "challenge_content": value}
    concrete = path.replace("{tail}", "any/path/at/all").replace("{username}", "no-such-one")
    bodies: dict[str, dict[str, object] | None] = {
        f"{PREFIX}/present": {"fqdn": f"_acme-challenge.{name}.", "value": value},
        f"{PREFIX}/cleanup": {"fqdn": f"_acme-challenge.{name}.", "value": value},
        "/update": {"txt": value},  # the subdomain is the caller's (see probe)
        "/register": {},
        "/": native,
        "/{tail}": native,
    }
    return ("POST" if method == "*" else method), concrete, bodies.get(path)


def settings_for(tmp: Path, mode: str, hosts: bool, proxies: bool, port: int) -> dict[str, str]:
    env = {
        "PROVIDER": "memory",
        "DNSAPI_DOMAINS": "example.test, example.org",
        "BASIC_AUTH": mode,
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(tmp / "state"),
        "PROPAGATION_CHECK": "off",
        "HTTPREQ_PREFIX": PREFIX.strip("/"),
        "ACMEDNS_ZONE": ACMEDNS_ZONE,
        "ACMEDNS_ACCOUNTS_FILE": str(tmp / "accounts.json"),
        "ACMEDNS_REGISTER": "1",
        "AUTH_MAX_FAILURES": "100000",  # wrong credentials are sent on purpose
        "LOG_LEVEL": "ERROR",
    }
    if mode != "off":
        env["PASSWD_FILE"] = str(tmp / "acmepasswd")
    if hosts:
        env["ALLOWED_HOSTS"] = f"{ALLOWED}/32"
    if proxies:
        env["ALLOWED_PROXIES"] = f"{PROXY}/32"
    return env


def write_files(tmp: Path) -> None:
    users = PasswordFile(tmp / "acmepasswd")
    users.set_user("alice", PASSWORDS["alice"])
    users.set_user("carol", PASSWORDS["carol"], domains=["shop.example.test"], roles=["admin"])
    write_accounts_file(
        tmp / "accounts.json",
        {"username": KEY_USER, "password": KEY, "subdomain": KEY_SUB,
         "fulldomain": f"{KEY_SUB}.{ACMEDNS_ZONE}"},
        {"username": NARROW_USER, "password": NARROW_KEY, "subdomain": NARROW_SUB,
         "fulldomain": f"{NARROW_SUB}.{ACMEDNS_ZONE}", "allowfrom": [f"{ALLOWED}/32"]},
    )


def router_routes(env: dict[str, str]) -> list[tuple[str, str]]:
    """(method, path) of every route the app built from *env* has."""
    config, _ = load([], env)
    app = create_app(config, MemoryProvider())
    return [(route.method, route.resource.canonical) for route in app.router.routes()
            if route.resource is not None]


# (BASIC_AUTH, ALLOWED_HOSTS set, ALLOWED_PROXIES set): every combination start-up accepts
# (BASIC_AUTH=off without hosts is refused: nobody could ever be let in).
CONFIGURATIONS = [
    (mode, hosts, proxies)
    for mode in ("off", "sufficient", "required")
    for hosts in (False, True)
    for proxies in (False, True)
    if hosts or mode != "off"
]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("policy")
    write_files(tmp)
    return tmp


def test_every_route_is_in_the_table(files: Path) -> None:
    env = settings_for(files, "required", True, True, 0)
    routes = router_routes(env)
    missing = [r for r in routes if r not in EXPECTED_ACCESS]
    assert not missing, f"routes without an expected access in this test: {missing}"
    assert set(EXPECTED_ACCESS) == set(routes)


@pytest.mark.parametrize(
    ("mode", "hosts", "proxies"),
    CONFIGURATIONS,
    ids=[f"{m}-{'hosts' if h else 'nohosts'}-{'proxy' if p else 'noproxy'}"
         for m, h, p in CONFIGURATIONS],
)
def test_one_verdict_per_caller_on_every_endpoint(
    files: Path, tmp_path: Path, mode: str, hosts: bool, proxies: bool
) -> None:
    port = free_port()
    env = settings_for(files, mode, hosts, proxies, port)
    env["STATE_DIR"] = str(tmp_path / "state")
    routes = router_routes(env)
    cases = [
        (route, caller, via)
        for route in routes
        for caller in CALLERS
        for via in vias(proxies)
    ]

    def probe(case: tuple[tuple[str, str], Caller, Via]) -> str | None:
        (method, route_path), caller, via = case
        access = EXPECTED_ACCESS[(method, route_path)]
        verb, concrete, body = request_for(method, route_path)
        if route_path == "/update" and body is not None:
            body = {**body, "subdomain": NARROW_SUB if caller.key == "narrow" else KEY_SUB}
        headers = dict(caller.headers)
        if via.forwarded is not None:
            headers["X-Forwarded-For"] = via.forwarded
        answer = send(port, verb, concrete, source=via.source, headers=headers, body=body)
        who = f"{verb} {concrete} by {caller.name}, {via.name}"
        if 200 <= answer.status < 300 or (answer.status == 404 and "{username}" in route_path):
            verdict = "in"
        elif answer.status in (401, 403):
            verdict = str(answer.status)
        else:
            return f"{who}: {answer.status} {answer.body!r}"
        want = expected(mode, hosts, via.effective, caller, access)
        return None if verdict == want else f"{who}: {answer.status}, expected {want}"

    with running_gateway(tmp_path, env) as gw:
        with ThreadPoolExecutor(4) as pool:
            wrong = [w for w in pool.map(probe, cases) if w is not None]
        assert "Traceback" not in gw.stderr, gw.stderr[-3000:]
    assert not wrong, f"{len(wrong)} of {len(cases)} answers break the policy:\n" + "\n".join(
        wrong[:40]
    )


async def test_a_route_without_declared_access_is_not_served(files: Path) -> None:
    """A handler added to the router behind the table's back answers 500, never its content."""
    config, _ = load([], settings_for(files, "sufficient", True, False, 0))
    app = create_app(config, MemoryProvider())
    reached: list[bool] = []

    async def undeclared(request: web.Request) -> web.Response:
        reached.append(True)
        return web.json_response({"secret": "everything"})

    app.router.add_get("/undeclared", undeclared)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        r = await client.get("/undeclared")
        assert r.status == 500
        assert "everything" not in await r.text()
        assert reached == []
    finally:
        await client.close()


def test_expected_verdicts_are_not_all_alike() -> None:
    """The model must tell callers apart, or the table test would prove nothing."""
    verdicts = {
        expected(m, h, p.effective, c, a)
        for m, h, _ in CONFIGURATIONS
        for p in vias(True)
        for c in CALLERS
        for a in Access
    }
    assert verdicts == {"in", "401", "403"}
