"""Property-based tests of name, value and body parsing for every API.

Hypothesis sends arbitrary and nearly-valid input through real HTTP requests
to the gateway app (:class:`tests.hostile.conftest.SyncGateway`, the in-memory
provider) on every API: the native API, lego httpreq in its default and RAW
modes, and acme-dns ``/update`` and ``/register``. Each answer is checked
against a small model of the rules in README "The API" (names case-insensitive,
trailing dot optional, UTS #46 then IDNA 2008, ``*.`` stripped, label boundaries,
values exactly 43 base64url characters), written here independently of ``lib/names.py``:

* never a 5xx, whatever the input;
* a 2xx only for valid input, and then the provider got exactly the expected
  ``_acme-challenge`` name (lower case, no trailing dot, at most 253 characters,
  inside the caller's domains) and value;
* no provider call, and no journal change, for invalid input (4xx).
"""

from __future__ import annotations

import base64
import hashlib
import re
import string
from dataclasses import dataclass
from typing import Any

import idna
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.hostile.conftest import (
    ACMEDNS_KEY,
    ACMEDNS_SUB,
    ACMEDNS_USER,
    ACMEDNS_ZONE,
    DOMAINS,
    PASSWORDS,
    SyncGateway,
    basic,
)

B64URL = string.ascii_letters + string.digits + "-_"
CHALLENGE = "_acme-challenge"
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")
# The users' own domains (None: every managed domain); see conftest.passwd_template.
USER_DOMAINS: dict[str, tuple[str, ...] | None] = {
    "alice": None,
    "bob": ("example.org",),
    "carol": ("shop.example.test",),
}

HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,  # a shared CI machine; the properties are about answers, not speed
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# -- the model ------------------------------------------------------------------


def model_name(text: object) -> str | None:
    """The normalised name, or None if the README's rules reject *text*."""
    if not isinstance(text, str) or not text or text != text.strip():
        return None
    if not text.isascii():
        # UTS #46 mapping, then IDNA 2008 (what CAs and browsers use): "straße" is
        # xn--strae-oqa, and U+3002 is a dot.
        try:
            text = idna.uts46_remap(text, std3_rules=False, transitional=False)
        except UnicodeError:  # idna.IDNAError included
            return None
    if text.endswith("."):
        text = text[:-1]
    if text.startswith("*."):
        text = text[2:]
    labels = []
    for label in text.split("."):
        if not label:
            return None
        label = label.lower()
        if not label.isascii() or label.startswith("xn--"):
            try:
                label = idna.alabel(label).decode("ascii")
            except UnicodeError:
                return None
        if not _LABEL.fullmatch(label):
            return None
        labels.append(label)
    name = ".".join(labels)
    return name if len(name) <= 253 else None


def within(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def may_change(user: str, fqdn: str) -> bool:
    own = USER_DOMAINS[user]
    return any(within(fqdn, d) for d in DOMAINS) and (
        own is None or any(within(fqdn, d) for d in own)
    )


def challenge_of(base: str) -> str:
    return base if base == CHALLENGE or base.startswith(CHALLENGE + ".") else f"{CHALLENGE}.{base}"


def model_value(value: object) -> str | None:
    return value if isinstance(value, str) and _VALUE.fullmatch(value) else None


def key_authorization_value(key_auth: str) -> str:
    digest = hashlib.sha256(key_auth.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True)
class Expect:
    """What the model says a request must get."""

    status: int | frozenset[int]  # one status, or any of several refusals
    fqdn: str | None = None
    value: str | None = None

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300


REFUSED = frozenset({400, 403})


def refuse(name_ok: bool) -> Expect:
    """A refusal: 400 when the name was fine (then only the rest can be wrong)."""
    return Expect(400 if name_ok else REFUSED)


def expect_native(method: str, body: object, user: str) -> Expect:
    if method not in ("POST", "PUT", "DELETE"):
        return Expect(405)
    if not isinstance(body, dict):
        return Expect(400)
    argument = body.get("argument")
    if not isinstance(argument, str) or argument.lower() not in (
        "setup", "add", "teardown", "remove"
    ):
        return Expect(400)
    setup = argument.lower() in ("setup", "add")
    if method == "DELETE" and setup:
        return Expect(400)
    base = model_name(body.get("domain_name"))
    if base is None:
        return Expect(400)
    fqdn = challenge_of(base)
    if len(fqdn) > 253:
        return Expect(400)
    if not may_change(user, fqdn):
        return Expect(403)
    content = body.get("challenge_content")
    if not setup and content in (None, ""):
        return Expect(200, fqdn)  # remove every value this user set there
    value = model_value(content)
    if value is None:
        return Expect(400)
    return Expect(201 if setup else 200, fqdn, value)


def expect_httpreq(body: object, user: str) -> Expect:
    if not isinstance(body, dict):
        return Expect(400)
    if "keyAuth" in body or ("domain" in body and "fqdn" not in body):
        key_auth = body.get("keyAuth")
        if not (
            isinstance(key_auth, str)
            and 1 <= len(key_auth) <= 512
            and key_auth.isascii()
            and key_auth.isprintable()
        ):
            return refuse(False)
        base = model_name(body.get("domain"))
        if base is None or len(challenge_of(base)) > 253:
            return Expect(400)
        fqdn = challenge_of(base)
        if not may_change(user, fqdn):
            return Expect(403)
        return Expect(200, fqdn, key_authorization_value(key_auth))
    raw = body.get("fqdn")
    record = model_name(raw)
    if record is None or not isinstance(raw, str) or raw.startswith("*"):
        return Expect(400)
    if not record.startswith(CHALLENGE + "."):
        return Expect(400)
    if not may_change(user, record):
        return refuse(False)  # the value may be checked before or after the name's owner
    value = model_value(body.get("value"))
    if value is None:
        return Expect(400)
    return Expect(200, record, value)


def expect_update(body: object) -> Expect:
    if not isinstance(body, dict) or body.get("subdomain") != ACMEDNS_SUB:
        return Expect(400)
    value = model_value(body.get("txt"))
    if value is None:
        return Expect(400)
    return Expect(200, f"{ACMEDNS_SUB}.{ACMEDNS_ZONE}", value)


# -- strategies -----------------------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)
labels = st.from_regex(r"\A[a-z0-9](?:[a-z0-9-]{0,8}[a-z0-9])?\Z")
# IDN labels, one in fullwidth letters (NFKC maps it to ASCII), one already in A-label form.
unicode_labels = st.sampled_from(
    ["bücher", "пример", "例え", "straße", "\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45",
     "xn--bcher-kva"]
)


@st.composite
def good_names(draw: st.DrawFn, domains: tuple[str, ...] = DOMAINS) -> str:
    """Valid names under *domains*, spelled every way a client may."""
    parts = draw(st.lists(labels | unicode_labels, max_size=3))
    name = ".".join([*parts, draw(st.sampled_from(domains))])
    name = "".join(c.upper() if draw(st.booleans()) else c for c in name)
    if draw(st.booleans()):
        name = f"{CHALLENGE}.{name}"
    elif draw(st.booleans()):
        name = f"*.{name}"
    return name + ("." if draw(st.booleans()) else "")


@st.composite
def bad_names(draw: st.DrawFn) -> str:
    """Names that are malformed or outside the managed domains, some very nearly right."""
    good = draw(good_names())
    return draw(
        st.sampled_from(
            [
                "evil" + DOMAINS[0],
                "example.test.evil.net",
                "example.com",
                f"a..{DOMAINS[0]}",
                f" {DOMAINS[0]}",
                f"{DOMAINS[0]} ",
                f"*.*.{DOMAINS[0]}",
                f"a.*.{DOMAINS[0]}",
                f"{DOMAINS[0]}..",
                f"a/b.{DOMAINS[0]}",
                f"a b.{DOMAINS[0]}",
                "-a." + DOMAINS[0],
                "a-." + DOMAINS[0],
                "x" * 64 + "." + DOMAINS[0],
                ".".join(["abcdefghi"] * 25) + "." + DOMAINS[0],
                ".".join(["abcdefghi"] * 24) + "." + DOMAINS[0],  # fine alone, too long prefixed
                "",
                ".",
                "*",
                good + "\x00",
                good.replace(".", "\u3002", 1),
                good + "\ud800",
            ]
        )
    )


any_names = good_names() | bad_names() | st.text(max_size=80) | json_values
good_values = st.text(alphabet=B64URL, min_size=43, max_size=43)


@st.composite
def bad_values(draw: st.DrawFn) -> str:
    value = draw(good_values)
    size = draw(st.sampled_from([0, 1, 42, 44, 86]))
    if size != 43 and draw(st.booleans()):
        return (value * 3)[:size]
    position = draw(st.integers(0, 42))
    intruder = draw(st.characters().filter(lambda c: c not in B64URL))
    return value[:position] + intruder + value[position + 1:]


any_values = good_values | bad_values() | st.text(max_size=60) | json_values
users = st.sampled_from(sorted(USER_DOMAINS))


def maybe_missing(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return strategy | st.just(MISSING)


MISSING = object()


def body_of(**fields: object) -> dict[str, object]:
    return {k: v for k, v in fields.items() if v is not MISSING}


native_bodies = st.builds(
    body_of,
    argument=maybe_missing(
        st.sampled_from(["setup", "add", "teardown", "remove", "SETUP", "Remove", "delete"])
        | json_values
    ),
    domain_name=maybe_missing(any_names),
    challenge_content=maybe_missing(any_values),
) | json_values


# -- checks ---------------------------------------------------------------------


def check(gw: SyncGateway, expect: Expect, status: int, calls_before: int,
          journal_before: int, answer: bytes) -> None:
    assert status < 500, answer
    calls = gw.provider.calls[calls_before:]
    if isinstance(expect.status, int):
        assert status == expect.status, (answer, expect)
    else:
        assert status in expect.status, (answer, expect)
    if not expect.ok:
        assert calls == [], (answer, expect)
        assert gw.journal_count() == journal_before
        return
    for _, fqdn, value in calls:
        assert fqdn == expect.fqdn or fqdn.startswith(CHALLENGE + ".")
        assert len(fqdn) <= 253 and all(_LABEL.fullmatch(label) for label in fqdn.split("."))
        assert _VALUE.fullmatch(value)
    if expect.value is not None:
        assert calls, "a 2xx for a change that never reached the provider"
        assert calls[0][1:] == (expect.fqdn, expect.value), (calls, expect)


def send(gw: SyncGateway, method: str, path: str, body: object,
         headers: dict[str, str], expect: Expect) -> bytes:
    calls, journal = len(gw.provider.calls), gw.journal_count()
    answer = gw.request(method, path, body=body, headers=headers)
    check(gw, expect, answer.status, calls, journal, answer.body)
    if answer.status == 401:
        assert answer.headers.get("WWW-Authenticate", "").startswith("Basic")
    return answer.body


# -- native API -----------------------------------------------------------------


def test_native_api_any_body(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(method=st.sampled_from(["POST", "PUT", "DELETE"]), body=native_bodies, user=users)
    def run(method: str, body: object, user: str) -> None:
        send(hostile_gateway, method, "/", body, basic(user, PASSWORDS[user]),
             expect_native(method, body, user))

    run()


def test_native_api_names_spelled_every_way_are_accepted(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(name=good_names(), value=good_values, argument=st.sampled_from(["setup", "teardown"]))
    def run(name: str, value: str, argument: str) -> None:
        body = {"argument": argument, "domain_name": name, "challenge_content": value}
        expect = expect_native("POST", body, "alice")
        if len(expect.fqdn or "") <= 253:
            assert expect.ok, (name, expect)
        send(hostile_gateway, "POST", "/", body, basic("alice", PASSWORDS["alice"]), expect)

    run()


def test_native_api_nearly_right_input_is_refused(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(name=good_names() | bad_names(), value=good_values | bad_values(), user=users)
    def run(name: str, value: str, user: str) -> None:
        body = {"argument": "setup", "domain_name": name, "challenge_content": value}
        send(hostile_gateway, "POST", "/", body, basic(user, PASSWORDS[user]),
             expect_native("POST", body, user))

    run()


def test_native_api_on_any_path_and_method(hostile_gateway: SyncGateway) -> None:
    paths = st.text(alphabet=string.ascii_letters + string.digits + "-._~/%", max_size=30)

    @HYPOTHESIS
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
        path=paths,
        body=native_bodies,
    )
    def run(method: str, path: str, body: object) -> None:
        path = "/" + path.lstrip("/")
        answer = hostile_gateway.request(method, path, body=body,
                                         headers=basic("alice", PASSWORDS["alice"]))
        assert answer.status < 500, answer

    run()


# -- lego httpreq ---------------------------------------------------------------

key_auths = st.text(max_size=40) | st.text(
    alphabet=string.ascii_letters + string.digits + "-_.", min_size=1, max_size=600
)
httpreq_bodies = (
    st.builds(body_of, fqdn=maybe_missing(any_names), value=maybe_missing(any_values))
    | st.builds(
        body_of,
        domain=maybe_missing(any_names),
        token=maybe_missing(json_values),
        keyAuth=maybe_missing(key_auths | json_values),
    )
    | json_values
)


def test_httpreq_any_body(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(endpoint=st.sampled_from(["present", "cleanup"]), body=httpreq_bodies, user=users)
    def run(endpoint: str, body: object, user: str) -> None:
        send(hostile_gateway, "POST", f"/httpreq/{endpoint}", body,
             basic(user, PASSWORDS[user]), expect_httpreq(body, user))

    run()


def test_httpreq_record_names_spelled_every_way(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(name=good_names(), value=good_values, raw=st.booleans())
    def run(name: str, value: str, raw: bool) -> None:
        if raw:
            body: dict[str, object] = {"domain": name, "token": "t", "keyAuth": value + ".thumb"}
        else:
            base = name.removeprefix("*.")
            if not base.lower().startswith(CHALLENGE):
                base = f"{CHALLENGE}.{base}"
            body = {"fqdn": base, "value": value}
        expect = expect_httpreq(body, "alice")
        assume(expect.ok)
        send(hostile_gateway, "POST", "/httpreq/present", body,
             basic("alice", PASSWORDS["alice"]), expect)

    run()


# -- acme-dns ------------------------------------------------------------------

update_bodies = (
    st.builds(
        body_of,
        subdomain=maybe_missing(st.just(ACMEDNS_SUB) | st.text(max_size=40) | json_values),
        txt=maybe_missing(any_values),
    )
    | json_values
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300
)


def test_acmedns_update_any_body(hostile_gateway: SyncGateway) -> None:
    headers = {"X-Api-User": ACMEDNS_USER, "X-Api-Key": ACMEDNS_KEY}

    @HYPOTHESIS
    @given(body=update_bodies)
    def run(body: object) -> None:
        send(hostile_gateway, "POST", "/update", body, headers, expect_update(body))

    run()


def test_acmedns_update_any_credentials(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(user=st.just(ACMEDNS_USER) | header_text, key=st.just(ACMEDNS_KEY) | header_text,
           value=good_values)
    def run(user: str, key: str, value: str) -> None:
        body = {"subdomain": ACMEDNS_SUB, "txt": value}
        ok = user == ACMEDNS_USER and key == ACMEDNS_KEY
        expect = expect_update(body) if ok else Expect(401)
        send(hostile_gateway, "POST", "/update", body, {"X-Api-User": user, "X-Api-Key": key},
             expect)

    run()


register_bodies = (
    st.builds(
        body_of,
        allowfrom=maybe_missing(
            st.lists(st.sampled_from(["192.0.2.0/24", "2001:db8::/32", "10.1.2.3"])
                     | st.text(max_size=20), max_size=3)
            | json_values
        ),
        domain=maybe_missing(any_names),
    )
    | json_values
)


def expect_register(body: object, user: str) -> Expect:
    if user != "carol":  # the only admin
        return Expect(403)
    if not isinstance(body, dict):
        return Expect(400)
    allowfrom = body.get("allowfrom", [])
    if not isinstance(allowfrom, list) or not all(isinstance(a, str) for a in allowfrom):
        return Expect(400)
    import ipaddress

    try:
        for a in allowfrom:
            ipaddress.ip_network(a, strict=False)
    except ValueError:
        return Expect(400)
    if "domain" in body:
        base = model_name(body["domain"])
        if base is None or len(challenge_of(base)) > 253:
            return Expect(400)
        if not may_change(user, challenge_of(base)):
            return Expect(403)
    return Expect(201)


def test_acmedns_register_any_body(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(body=register_bodies, user=users)
    def run(body: object, user: str) -> None:
        answer = send(hostile_gateway, "POST", "/register", body, basic(user, PASSWORDS[user]),
                      expect_register(body, user))
        assert ACMEDNS_KEY.encode() not in answer

    run()


# -- bodies and headers that are not even JSON -----------------------------------------

ENDPOINTS = ["/", "/httpreq/present", "/httpreq/cleanup", "/update", "/register"]


def test_any_bytes_as_body(hostile_gateway: SyncGateway) -> None:
    @HYPOTHESIS
    @given(path=st.sampled_from(ENDPOINTS), data=st.binary(max_size=300)
           | st.text(max_size=200).map(str.encode)
           | st.sampled_from([b"[" * 5000, b"{\"a\":" * 2000, b"1" * 5000, b"\xff\xfe{}",
                              b'{"argument": "setup", "domain_name": "\\ud800"}']))
    def run(path: str, data: bytes) -> None:
        headers = {**basic("carol", PASSWORDS["carol"]), "X-Api-User": ACMEDNS_USER,
                   "X-Api-Key": ACMEDNS_KEY}
        calls = len(hostile_gateway.provider.calls)
        answer = hostile_gateway.request("POST", path, data=data, headers=headers)
        assert answer.status < 500, answer
        if answer.status >= 400:
            assert hostile_gateway.provider.calls[calls:] == []

    run()


def test_oversized_bodies_are_413(hostile_gateway: SyncGateway) -> None:
    for path in ENDPOINTS:
        answer = hostile_gateway.request(
            "POST", path, data=b'{"x": "' + b"a" * 10_000 + b'"}',
            headers={**basic("carol", PASSWORDS["carol"]), "X-Api-User": ACMEDNS_USER,
                     "X-Api-Key": ACMEDNS_KEY},
        )
        assert answer.status == 413, (path, answer)
    assert hostile_gateway.provider.calls == []


def test_any_authorization_header(hostile_gateway: SyncGateway) -> None:
    credentials = st.builds(lambda u, p: f"{u}:{p}", st.text(max_size=20), st.text(max_size=20))

    @settings(HYPOTHESIS, max_examples=60)  # a well-formed wrong password costs a scrypt check
    @given(header=header_text
           | credentials.map(lambda c: "Basic " + base64.b64encode(c.encode()).decode())
           | credentials.map(lambda c: "basic  " + base64.b64encode(c.encode()).decode() + " ")
           | st.binary(max_size=40).map(lambda b: "Basic " + base64.b64encode(b).decode()),
           path=st.sampled_from(["/", "/httpreq/present", "/register", "/metrics", "/records"]),
           forwarded=st.none() | header_text)
    def run(header: str, path: str, forwarded: str | None) -> None:
        headers = {"Authorization": header}
        if forwarded is not None:
            headers["X-Forwarded-For"] = forwarded
        body = {"argument": "setup", "domain_name": DOMAINS[0], "challenge_content": "A" * 43}
        send(hostile_gateway, "POST" if path not in ("/metrics", "/records") else "GET", path,
             body, headers, Expect(frozenset({400, 401, 403})))

    run()
