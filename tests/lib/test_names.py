"""Name and value rules, including property-based checks."""

from __future__ import annotations

import string
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lib.names import (
    InvalidName,
    InvalidValue,
    base_name,
    challenge_name,
    is_loopback_host,
    is_within,
    normalize_name,
    validate_value,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),
        ("*.example.com", "example.com"),
        ("*.Example.com.", "example.com"),
        ("_acme-challenge.example.com", "_acme-challenge.example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        # IDNA 2008 keeps ß (IDNA 2003 made it "ss"), as CAs and browsers do.
        ("straße.example.com", "xn--strae-oqa.example.com"),
        ("*.Straße.Example.COM.", "xn--strae-oqa.example.com"),
        ("XN--STRAE-OQA.example.com", "xn--strae-oqa.example.com"),
        ("_acme-challenge.straße.example.com", "_acme-challenge.xn--strae-oqa.example.com"),
        # UTS #46 mapping: full-width letters and the ideographic full stop.
        ("\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com", "example.com"),
        ("bücher\u3002example", "xn--bcher-kva.example"),
        ("WWW.BÜCHER.example", "www.xn--bcher-kva.example"),
        ("a-b.c_d.example", "a-b.c_d.example"),
    ],
)
def test_normalize(raw: str, norm: str) -> None:
    assert normalize_name(raw) == norm


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ".",
        "..",
        "example..com",
        ".example.com",
        "a.*.example.com",
        "*example.com",
        "**.example.com",
        "exa mple.com",
        " example.com",
        "example.com ",
        "exa\tmple.com",
        "-bad.example",
        "bad-.example",
        "a" * 64 + ".example",
        ("a" * 63 + ".") * 4 + "com",
        "ex@mple.com",
        "example.com/x",
        "example.com\x00",
        "*.",
        "*",
        # Valid in IDNA 2003, not in IDNA 2008: no CA issues for these.
        "\u2603.example",
        "xn--n3h.example",
        "a\u200db.example",
        # An A-label that decodes to nothing, or is not the canonical form.
        "xn--a.example",
        "xn--ss-.example",
        "a\ud800.example",
        "\u00df" * 60 + ".example",
    ],
)
def test_reject(raw: str) -> None:
    with pytest.raises(InvalidName):
        normalize_name(raw)


def test_idna_errors_do_not_echo_the_name() -> None:
    with pytest.raises(InvalidName, match="not valid IDNA 2008") as caught:
        normalize_name("\u2603\x1b[2J.example")
    assert "\u2603" not in str(caught.value) and "\x1b" not in str(caught.value)


def test_ascii_names_do_not_load_idna() -> None:
    """The hook imports this module in a new process per call: idna only when needed."""
    code = ("import sys; from lib.names import normalize_name; "
            "normalize_name('_acme-challenge.Example.COM.'); "
            "assert 'idna' not in sys.modules; "
            "assert normalize_name('stra\u00dfe.test') == 'xn--strae-oqa.test'; "
            "assert 'idna' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr


def test_reject_non_string() -> None:
    with pytest.raises(InvalidName):
        normalize_name(5)  # type: ignore[arg-type]


def test_within_label_boundary() -> None:
    assert is_within("example.com", "example.com")
    assert is_within("_acme-challenge.www.example.com", "example.com")
    assert not is_within("evilexample.com", "example.com")
    assert not is_within("example.com.evil", "example.com")
    assert not is_within("com", "example.com")


def test_challenge_and_base_names() -> None:
    assert challenge_name("example.com") == "_acme-challenge.example.com"
    assert challenge_name("_acme-challenge.example.com") == "_acme-challenge.example.com"
    assert base_name("_acme-challenge.example.com") == "example.com"
    assert base_name("example.com") == "example.com"


def test_values() -> None:
    good = "A" * 20 + "-_" + "z9" * 10 + "x"
    assert len(good) == 43
    assert validate_value(good) == good
    for bad in [
        good[:-1],
        good + "A",
        good[:-1] + "+",
        good[:-1] + "=",
        good[:-1] + "/",
        good[:-1] + " ",
        good[:-1] + "\n",
        "",
        None,
        43,
        good.encode(),
    ]:
        with pytest.raises(InvalidValue):
            validate_value(bad)


_B64URL = string.ascii_letters + string.digits + "-_"


@given(st.text(alphabet=_B64URL, min_size=43, max_size=43))
def test_every_base64url_value_is_accepted(value: str) -> None:
    assert validate_value(value) == value


@given(st.text(max_size=60))
def test_values_are_exactly_43_base64url(value: str) -> None:
    ok = len(value) == 43 and all(c in _B64URL for c in value)
    try:
        validate_value(value)
    except InvalidValue:
        assert not ok
    else:
        assert ok


@given(st.text(max_size=80))
def test_normalize_never_crashes_and_is_idempotent(raw: str) -> None:
    try:
        norm = normalize_name(raw)
    except InvalidName:
        return
    assert norm == normalize_name(norm)
    assert norm == norm.lower()
    assert norm.isascii()
    assert not norm.endswith(".")
    assert "*" not in norm
    assert all(0 < len(label) <= 63 for label in norm.split("."))


@given(
    st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), min_size=1, max_size=4),
    st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
)
def test_suffix_without_boundary_is_never_within(labels: list[str], prefix: str) -> None:
    domain = ".".join(labels)
    assert not is_within(prefix + domain, domain)
    assert is_within(prefix + "." + domain, domain)


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
    ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("localhost.example.com", False),
    ("gw.example.net", False), ("[::1]", False),
])
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
