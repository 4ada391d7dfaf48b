"""The builtin server's zone data and answers, without the network: index, not scan.

Answers are checked by parsing their wire form with dnspython, the way a
client reads them; the network side (tests/providers/test_builtin.py) is where
queries travel over sockets.
"""

from __future__ import annotations

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from providers.builtin.network import Responder
from providers.builtin.serial import (
    FileSerialStore,
    first_serial,
    is_newer,
    next_serial,
)
from providers.builtin.store import (
    CHALLENGE,
    Answers,
    Labels,
    RecordStore,
    Served,
    labels_of,
)

MANAGED = (labels_of("example.test"), labels_of("example.org"))
ZONE = labels_of("acme.example.net")
NS = (labels_of("ns1.gw.example.net"),)
VALUE = b"v" * 43


class NoScan(dict[Labels, tuple[bytes, ...]]):
    """A dict that fails the test if anything walks through all of it."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")

    def items(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")

    def keys(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")

    def values(self):  # type: ignore[no-untyped-def]
        raise AssertionError("the store was scanned")


def ask(answers: Answers, name: str, rdtype: str = "TXT") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=False)
    wire = Responder(answers).tcp(query.to_wire(), "192.0.2.1")
    assert wire is not None
    return dns.message.from_wire(wire[0])


@pytest.fixture(scope="module")
def crowded() -> Answers:
    """100,000 names with values, in the delegation zone and as challenge zones."""
    answers = Answers(Served(MANAGED, ZONE), NS, 60, 7)
    for i in range(50_000):
        answers.store.set((b"a", f"n{i}".encode(), b"b", *ZONE), [VALUE])
        answers.store.set((CHALLENGE, f"h{i}".encode(), *MANAGED[0]), [VALUE])
    answers.store.values = NoScan(answers.store.values)
    return answers


def test_answers_among_100000_names_look_nothing_up_by_scanning(crowded: Answers) -> None:
    assert len(crowded.store) == 100_000
    found = ask(crowded, "a.n4711.b.acme.example.net")
    assert found.rcode() == dns.rcode.NOERROR
    assert [bytes(r.strings[0]) for r in found.answer[0]] == [VALUE]
    # Empty non-terminals: between a value's name and its zone's apex.
    for ent in ("n4711.b.acme.example.net", "b.acme.example.net"):
        reply = ask(crowded, ent)
        assert reply.rcode() == dns.rcode.NOERROR, ent
        assert reply.answer == []
        assert reply.authority[0].rdtype == dns.rdatatype.SOA
    assert ask(crowded, "x.n4711.b.acme.example.net").rcode() == dns.rcode.NXDOMAIN
    assert ask(crowded, "nothing.acme.example.net").rcode() == dns.rcode.NXDOMAIN
    assert ask(crowded, "_acme-challenge.h49999.example.test").answer
    reply = ask(crowded, "_acme-challenge.h50000.example.test")
    assert reply.rcode() == dns.rcode.NOERROR  # an apex: NODATA
    assert reply.answer == []
    assert ask(crowded, "x._acme-challenge.h1.example.test").rcode() == dns.rcode.NXDOMAIN


def test_empty_non_terminals_come_and_go_with_the_names_below() -> None:
    store = RecordStore()
    deep = (b"a", b"b", b"c", *ZONE)
    store.set(deep, [VALUE])
    store.set((b"x", b"b", b"c", *ZONE), [VALUE])
    assert store.exists((b"b", b"c", *ZONE))
    store.set(deep, [])
    assert store.exists((b"b", b"c", *ZONE))  # x.b.c is still there
    store.set((b"x", b"b", b"c", *ZONE), [])
    assert not store.exists((b"b", b"c", *ZONE))
    assert not store.exists(deep)
    assert store._below == {}


@pytest.mark.parametrize(
    ("name", "apex"),
    [
        ("_acme-challenge.example.test", "_acme-challenge.example.test"),
        ("x._acme-challenge.www.example.test", "_acme-challenge.www.example.test"),
        ("_acme-challenge.a._acme-challenge.example.org",
         "_acme-challenge.a._acme-challenge.example.org"),
        ("deep.er.acme.example.net", "acme.example.net"),
        ("_acme-challenge.acme.example.net", "acme.example.net"),
        ("example.test", None),
        ("_acme-challenge.example.com", None),
        ("_acme-challenge.evilexample.test", None),
        ("_acme-challenge", None),
    ],
)
def test_the_zone_of_a_name(name: str, apex: str | None) -> None:
    served = Served(MANAGED, ZONE)
    found = served.apex_of(labels_of(name))
    assert found == (labels_of(apex) if apex else None)


def test_junk_labels_make_no_zone() -> None:
    served = Served(MANAGED, None)
    junk = (CHALLENGE, b"x. 1 2 3 4 5;", b"example", b"test")
    assert served.apex_of(junk) is None
    # Below a real apex, junk is just a name that does not exist there.
    assert served.apex_of((b"x. 1 2;", CHALLENGE, b"example", b"test")) == (
        CHALLENGE, b"example", b"test")
    # The most specific apex with clean labels is the zone.
    assert served.apex_of((CHALLENGE, b"a b", CHALLENGE, b"www", b"example", b"test")) == (
        CHALLENGE, b"www", b"example", b"test")


def test_a_change_starts_a_new_cache() -> None:
    answers = Answers(Served(MANAGED, ZONE), NS, 60, 1)
    name = labels_of("_acme-challenge.example.test")
    before = ask(answers, "_acme-challenge.example.test")
    assert before.answer == []
    assert answers.cache
    answers.set_values(name, [VALUE], 2)
    after = ask(answers, "_acme-challenge.example.test")
    assert [bytes(r.strings[0]) for r in after.answer[0]] == [VALUE]
    soa = ask(answers, "_acme-challenge.example.test", "SOA")
    assert soa.answer[0][0].serial == 2


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from providers.builtin import store

    monkeypatch.setattr(store, "MAX_CACHED", 10)
    answers = Answers(Served(MANAGED, ZONE), NS, 60, 1)
    for i in range(25):
        ask(answers, f"n{i}.acme.example.net")
    assert 0 < len(answers.cache) <= 10


# -- the serial -------------------------------------------------------------------


def test_serial_arithmetic() -> None:
    assert is_newer(2, 1)
    assert not is_newer(1, 2)
    assert not is_newer(5, 5)
    assert is_newer(0, 0xFFFFFFFF)  # wraps
    assert next_serial(0xFFFFFFFF) == 0
    assert first_serial(None, now=1_700_000_000) == 1_700_000_000
    assert first_serial(1_800_000_000, now=1_700_000_000) == 1_800_000_001
    assert first_serial(1_600_000_000, now=1_700_000_000) == 1_700_000_000


def test_the_serial_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = FileSerialStore(tmp_path / "serial")
    assert store.load() is None
    store.save(42)
    assert FileSerialStore(tmp_path / "serial").load() == 42
    assert (tmp_path / "serial").stat().st_mode & 0o077 == 0
    (tmp_path / "serial").write_text("not a number\n")
    with pytest.raises(OSError, match="remove it"):
        store.load()
