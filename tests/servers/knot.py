"""A real Knot DNS for tests: a primary taking TSIG-signed updates of TXT at ``_acme-challenge``
names, or a secondary of another server's zone (:func:`start_knot_secondary`).

:func:`start_knot` runs ``knotd`` in the foreground from its own folder (config,
rundir, storage, journal, control socket all inside it; no root paths) on a free
port of 127.0.0.1, serving ``example.test`` and ``example.org``. One hmac-sha256
key may change **only TXT records at the listed ``_acme-challenge`` names**
(an ``acl`` with ``action: update``, ``update-type: [TXT]`` and
``update-owner: name`` / ``update-owner-match: equal``, the tight policy a
careful Knot admin writes); anything else is denied.

Zone content (for each zone ``Z``; ``ns1`` lives in the first zone)::

    Z        SOA  ns1.<first>. hostmaster.<first>. 1 3600 600 86400 60
    Z        NS   ns1.<first>.
    Z        A    127.0.0.1
    www.Z    A    127.0.0.1
    ns1      A    127.0.0.1          (first zone only)

The :func:`knot_primary` fixture is shared by a module and stopped by pid in a
``finally``; modules using it mark themselves ``pytest.mark.system``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.authoritative import Authoritative
from tests.servers.bind import TsigKey, make_key, start_secondary_of
from tests.system import Server, free_port, need_program

ZONES = ("example.test", "example.org")
# Relative owner names (under each zone) at which the key may change TXT.
CHALLENGE_LABELS = ("_acme-challenge", "_acme-challenge.www", "_acme-challenge.nothing-here",
                    "_acme-challenge.sub")
HOST = "127.0.0.1"


@dataclass
class KnotServer(Authoritative):
    """A running ``knotd``: where it listens, its key and zones, and how to stop it."""

    port: int
    directory: Path
    zones: tuple[str, ...]
    key: TsigKey
    update_names: tuple[str, ...]
    process: Server
    _stopped: bool = field(default=False, repr=False)

    host: str = HOST
    title = "knotd"


def _zone_text(zone: str, zones: Sequence[str], extra: Sequence[str] = ()) -> str:
    first = zones[0]
    lines = [
        "$TTL 60",
        f"@ IN SOA ns1.{first}. hostmaster.{first}. 1 3600 600 86400 60",
        f"@ IN NS ns1.{first}.",
        f"@ IN A {HOST}",
        f"www IN A {HOST}",
    ]
    if zone == first:
        lines.append(f"ns1 IN A {HOST}")
    lines += list(extra)
    return "\n".join(lines) + "\n"


def _common(directory: Path, port: int, key: TsigKey) -> str:
    """What every knotd of ours has: its folder, its port, stderr logging, one key."""
    d = str(directory)
    # No `user`: knotd runs as whoever starts it.
    return f"""server:
    rundir: "{d}/run"
    listen: {HOST}@{port}

log:
  - target: stderr
    any: info

database:
    storage: "{d}/db"

control:
    listen: "{d}/run/knot.sock"

key:
  - id: {key.name}
    algorithm: {key.algorithm}
    secret: {key.secret}

"""


def _config(directory: Path, port: int, key: TsigKey, zones: Sequence[str],
            labels: Sequence[str]) -> str:
    d = str(directory)
    owners = ", ".join(labels)  # relative: Knot appends each zone's name
    zone_list = "".join(f"  - domain: {zone}\n" for zone in zones)
    # zonefile-sync -1 keeps updates in the journal only, so the zone files stay
    # as written.
    return _common(directory, port, key) + f"""acl:
  - id: acme_txt
    key: {key.name}
    action: update
    update-type: [TXT]
    update-owner: name
    update-owner-match: equal
    update-owner-name: [{owners}]

template:
  - id: default
    storage: "{d}"
    file: "%s.zone"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: changes
    acl: acme_txt

zone:
{zone_list}"""


def start_knot(directory: Path, *, zones: Sequence[str] = ZONES,
               challenge_labels: Sequence[str] = CHALLENGE_LABELS,
               records: Mapping[str, Sequence[str]] | None = None,
               bare: bool = False, port: int | None = None,
               key: TsigKey | None = None) -> KnotServer:
    """Start ``knotd`` in *directory* and wait until it serves every zone.

    *records* adds zone-file lines per zone (``{"example.test": ["x TXT \"v\""]}``);
    with *bare* they are the whole zone (SOA and NS included). *key* is its TSIG
    key (default: a new hmac-sha256 key ``acme-knot.``).
    """
    knotd = _prepare(directory)
    port = port or free_port()
    key = key or make_key("hmac-sha256", "acme-knot.")
    for zone in zones:
        extra = (records or {}).get(zone, ())
        (directory / f"{zone}.zone").write_text(
            "\n".join(extra) + "\n" if bare else _zone_text(zone, zones, extra))
    conf = directory / "knot.conf"
    conf.write_text(_config(directory, port, key, zones, challenge_labels))
    update_names = tuple(f"{label}.{zone}" for zone in zones for label in challenge_labels)
    server = KnotServer(port, directory, tuple(zones), key, update_names,
                        Server([knotd, "-c", str(conf)], directory / "knotd.log", cwd=directory))
    server.wait_ready()
    return server


def _prepare(directory: Path) -> str:
    """The knotd program, and *directory* with the folders its configuration names."""
    knotd = need_program("knotd", "knot")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "run").mkdir(exist_ok=True)
    (directory / "db").mkdir(exist_ok=True)
    return knotd


@pytest.fixture(scope="module")
def knot_primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """A Knot primary shared by a module, with one hmac-sha256 key."""
    server = start_knot(tmp_path_factory.mktemp("knot"))
    try:
        yield server
    finally:
        server.stop()


def start_knot_secondary(directory: Path, zone: str, primary: tuple[str, int], key: TsigKey,
                         port: int | None = None, wait: bool = True) -> KnotServer:
    """Start ``knotd`` as a secondary of *zone* from *primary* (host, port), TSIG *key*.

    It transfers the zone at start, takes NOTIFY from the primary's address signed
    with *key*, and signs its own queries and transfer requests with it. With
    *wait* it returns once it serves the zone.
    """
    knotd = _prepare(directory)
    port = port or free_port()
    d = str(directory)
    host, primary_port = primary
    conf = directory / "knot.conf"
    conf.write_text(_common(directory, port, key) + f"""remote:
  - id: primary
    address: {host}@{primary_port}
    key: {key.name}

acl:
  - id: notify_from_primary
    address: {host}
    key: {key.name}
    action: notify

template:
  - id: default
    storage: "{d}"
    file: "%s.zone"

zone:
  - domain: {zone}
    master: primary
    acl: notify_from_primary
""")
    server = KnotServer(port, directory, (zone,), key, (),
                        Server([knotd, "-c", str(conf)], directory / "knotd.log", cwd=directory))
    if wait:
        server.wait_ready()
    return server


@contextlib.contextmanager
def secondaries_of(directory: Path, zone: str, primary: tuple[str, int], key: TsigKey, *,
                   knot_port: int | None = None,
                   bind_port: int | None = None) -> Iterator[list[Authoritative]]:
    """A Knot and a BIND secondary of *zone* from *primary* (host, port), TSIG *key*, in
    *directory* (``knot``, ``bind``); each serves the zone when the block starts and is
    stopped by pid when it ends."""
    with contextlib.ExitStack() as stack:
        knot = start_knot_secondary(directory / "knot", zone, primary, key, port=knot_port)
        stack.callback(knot.stop)
        bind = start_secondary_of(directory / "bind", zone, primary, key, port=bind_port)
        stack.callback(bind.stop)
        yield [knot, bind]
