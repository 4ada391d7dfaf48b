"""Real BIND 9 servers for tests: a primary that takes TSIG-signed updates and a secondary.

:func:`start_secondary_of` runs a secondary of any primary (the gateway's builtin
server, say) for one zone, with a TSIG key.

:func:`start_primary` runs ``named -g`` from its own folder on a free loopback
port, serving ``example.test`` and ``example.org`` as dynamic zones. One TSIG key
per requested algorithm may change **only TXT records at the listed
``_acme-challenge`` names** (``update-policy`` ``name`` rules, the tight policy a
careful BIND admin writes); anything else is REFUSED.

:func:`start_secondary` runs a second ``named`` that transfers both zones from a
primary. With ``follow=False`` (the default) the primary never NOTIFYs it and the
SOA refresh is an hour, so the secondary keeps serving the old zone until the
test calls :meth:`BindServer.sync` (``rndc retransfer`` and a wait for the
primary's serial): a lag the test controls exactly. With ``follow=True`` the
primary NOTIFYs it and it catches up within moments on its own.

Zone content (for each zone ``Z``; ``ns1``/``ns2`` live in the first zone)::

    Z            SOA  ns1.<first>. hostmaster.<first>. 1 3600 600 86400 60
    Z            NS   ns1.<first>.  and  ns2.<first>.
    Z            A    127.0.0.1
    Z            TXT  "v=spf1 -all"
    www.Z        A    127.0.0.1
    ns1/ns2      A    127.0.0.1          (first zone only: glue for discovery)
    _acme-challenge.alias.<first>  CNAME  _acme-challenge.www.<second>.

Other test modules reuse the fixtures by importing them
(``from tests.servers.bind import bind_primary  # noqa: F401``); they must mark
themselves ``pytest.mark.system``. Every server is stopped by pid in a
``finally``, so a failing test leaves no ``named`` behind.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdatatype
import dns.tsig
import dns.update
import pytest

from tests.servers.authoritative import Authoritative
from tests.system import Server, free_port, need_program

ZONES = ("example.test", "example.org")
ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha1")
# Secret length = the hash's output length, as tsig-keygen makes them.
_SECRET_BYTES = {"hmac-sha1": 20, "hmac-sha224": 28, "hmac-sha256": 32,
                 "hmac-sha384": 48, "hmac-sha512": 64, "hmac-md5": 16}
# Relative owner names (under each zone) at which the keys may change TXT.
CHALLENGE_LABELS = ("_acme-challenge", "_acme-challenge.www", "_acme-challenge.nothing-here",
                    "_acme-challenge.sub")
HOST = "127.0.0.1"


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key as BIND knows it; ``secret`` is base64."""

    name: str
    secret: str
    algorithm: str

    def statement(self) -> str:
        return f'key "{self.name}" {{ algorithm {self.algorithm}; secret "{self.secret}"; }};\n'

    def dns_key(self) -> dns.tsig.Key:
        """This key for dnspython, to sign or check messages with."""
        return dns.tsig.Key(self.name, self.secret, self.algorithm)


def make_key(algorithm: str = "hmac-sha256", name: str | None = None) -> TsigKey:
    raw = secrets.token_bytes(_SECRET_BYTES.get(algorithm, 32))
    return TsigKey(name or f"acme-{algorithm}.", base64.b64encode(raw).decode(), algorithm)


@dataclass
class BindServer(Authoritative):
    """A running ``named``: where it listens, its keys and zones, and how to stop it."""

    role: str
    port: int
    control_port: int
    directory: Path
    zones: tuple[str, ...]
    key: TsigKey
    keys: dict[str, TsigKey]
    update_names: tuple[str, ...]
    cnames: dict[str, str]
    process: Server
    primary: BindServer | None = None
    _stopped: bool = field(default=False, repr=False)

    host: str = HOST

    @property
    def title(self) -> str:
        return f"{self.role} named"

    def update_txt(self, name: str, value: str, *, add: bool = True, zone: str | None = None,
                   timeout: float = 5.0) -> None:
        """Add (or delete) one TXT value with the main key, as a test's own writer.

        Independent of providers/rfc2136.py, so tests of other code need not trust it.
        """
        zone = zone or next(z for z in sorted(self.zones, key=len, reverse=True)
                            if name == z or name.endswith("." + z))
        keyring = self.key.dns_key()
        update = dns.update.UpdateMessage(zone, keyring=keyring, keyname=keyring.name,
                                          keyalgorithm=keyring.algorithm)
        rdata = dns.rdata.from_text("IN", "TXT", '"' + value + '"')
        if add:
            update.add(name + ".", 60, rdata)
        else:
            update.delete(name + ".", rdata)
        host = self.primary.host if self.primary else self.host
        port = self.primary.port if self.primary else self.port
        response = dns.query.tcp(update, host, timeout=timeout, port=port)
        if response.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"update of {name} failed: {dns.rcode.to_text(response.rcode())}")

    def rndc(self, *args: str, timeout: float = 10.0) -> str:
        rndc = need_program("rndc", "bind9")
        done = subprocess.run(
            [rndc, "-c", str(self.directory / "rndc.conf"), *args],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rndc {' '.join(args)} failed: {done.stderr or done.stdout}")
        return done.stdout

    def sync(self, timeout: float = 10.0) -> None:
        """Secondary only: transfer every zone now and wait until it serves the primary's serial."""
        if self.primary is None:
            raise RuntimeError("sync() is for a secondary")
        wanted = {zone: self.primary.serial(zone) for zone in self.zones}
        for zone in self.zones:
            self.rndc("retransfer", zone)
        self.wait_for_serials(wanted, timeout)



def _zone_text(zone: str, zones: Sequence[str], extra: Sequence[str]) -> str:
    first = zones[0]
    lines = [
        "$TTL 60",
        f"@ IN SOA ns1.{first}. hostmaster.{first}. 1 3600 600 86400 60",
        f"@ IN NS ns1.{first}.",
        f"@ IN NS ns2.{first}.",
        f"@ IN A {HOST}",
        '@ IN TXT "v=spf1 -all"',
        f"www IN A {HOST}",
    ]
    if zone == first:
        lines += [f"ns1 IN A {HOST}", f"ns2 IN A {HOST}"]
        if len(zones) > 1:
            lines.append(f"_acme-challenge.alias IN CNAME _acme-challenge.www.{zones[1]}.")
    lines += list(extra)
    return "\n".join(lines) + "\n"


def _options(directory: Path, port: int, notify: str) -> str:
    d = str(directory)
    return f"""options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ {HOST}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    minimal-responses no;
    allow-transfer {{ {HOST}; }};
    allow-notify {{ {HOST}; }};
    {notify}
}};
"""


def _controls(directory: Path, control_port: int) -> str:
    rndc_key = make_key("hmac-sha256", "rndc-key")
    (directory / "rndc.conf").write_text(
        rndc_key.statement()
        + f'options {{ default-key "rndc-key"; default-server {HOST}; '
        f"default-port {control_port}; }};\n"
    )
    return (rndc_key.statement()
            + f'controls {{ inet {HOST} port {control_port} allow {{ {HOST}; }} '
            f'keys {{ "rndc-key"; }}; }};\n')


def _launch(role: str, directory: Path, conf: str, port: int) -> Server:
    named = need_program("named", "bind9")
    (directory / "named.conf").write_text(conf)
    # -g: foreground, log to stderr (kept in named.log); no -u: run as whoever we are.
    return Server([named, "-g", "-c", str(directory / "named.conf")],
                  directory / "named.log", cwd=directory)


def start_primary(directory: Path, *, algorithm: str = "hmac-sha256",
                  extra_algorithms: Sequence[str] = (), zones: Sequence[str] = ZONES,
                  challenge_labels: Sequence[str] = CHALLENGE_LABELS,
                  records: Mapping[str, Sequence[str]] | None = None,
                  notify_ports: Sequence[int] = (), port: int | None = None) -> BindServer:
    """Start a primary in *directory* and wait until it serves every zone.

    The key for *algorithm* is :attr:`BindServer.key`; each of *extra_algorithms*
    gets another key with the same rights (``keys`` maps algorithm to key).
    *records* adds zone-file lines per zone. *notify_ports* are secondaries on
    127.0.0.1 that get NOTIFY after each change (none: secondaries lag).
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    control_port = free_port()
    keys = {a: make_key(a) for a in dict.fromkeys([algorithm, *extra_algorithms])}
    update_names = tuple(f"{label}.{zone}" for zone in zones for label in challenge_labels)
    if notify_ports:
        targets = " ".join(f"{HOST} port {p};" for p in notify_ports)
        notify = f"notify explicit; also-notify {{ {targets} }};"
    else:
        notify = "notify no;"
    conf = _options(directory, port, notify) + _controls(directory, control_port)
    conf += "".join(k.statement() for k in keys.values())
    for zone in zones:
        (directory / f"{zone}.zone").write_text(
            _zone_text(zone, zones, (records or {}).get(zone, ())))
        grants = "".join(
            f'grant "{k.name}" name {name}. TXT; '
            for k in keys.values() for name in update_names if name.endswith("." + zone))
        conf += (f'zone "{zone}" {{ type primary; file "{zone}.zone"; '
                 f"update-policy {{ {grants}}}; }};\n")
    first = zones[0]
    cnames = ({f"_acme-challenge.alias.{first}": f"_acme-challenge.www.{zones[1]}"}
              if len(zones) > 1 else {})
    server = BindServer("primary", port, control_port, directory, tuple(zones),
                        keys[algorithm], keys, update_names, cnames,
                        _launch("primary", directory, conf, port))
    server.wait_ready()
    return server


def start_secondary(directory: Path, primary: BindServer, *, port: int | None = None) -> BindServer:
    """Start a secondary of *primary* in *directory*; returns once it serves the primary's zones.

    Whether it follows changes on its own depends on the primary's *notify_ports*
    (see :func:`start_pair`); otherwise call :meth:`BindServer.sync`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    control_port = free_port()
    conf = _options(directory, port, "notify no;") + _controls(directory, control_port)
    for zone in primary.zones:
        conf += (f'zone "{zone}" {{ type secondary; file "{zone}.sec"; '
                 f"primaries {{ {HOST} port {primary.port}; }}; }};\n")
    server = BindServer("secondary", port, control_port, directory, primary.zones,
                        primary.key, primary.keys, primary.update_names, primary.cnames,
                        _launch("secondary", directory, conf, port), primary=primary)
    server.wait_ready(wanted={z: primary.serial(z) for z in primary.zones})
    return server


def start_secondary_of(directory: Path, zone: str, primary: tuple[str, int], key: TsigKey,
                       *, port: int | None = None, wait: bool = True) -> BindServer:
    """Start ``named`` as a secondary of *zone* from *primary* (host, port), TSIG *key*:
    it transfers the zone at start and on NOTIFY from the primary's address, and signs
    its SOA queries and transfer requests with *key*. With *wait* it returns once it
    serves the zone."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    control_port = free_port()
    host, primary_port = primary
    conf = _options(directory, port, "notify no;") + _controls(directory, control_port)
    conf += key.statement()
    conf += (f'zone "{zone}" {{ type secondary; file "{zone}.sec"; '
             f'primaries {{ {host} port {primary_port} key "{key.name}"; }}; '
             f"allow-notify {{ {host}; }}; }};\n")
    server = BindServer("secondary", port, control_port, directory, (zone,), key, {}, (), {},
                        _launch("secondary", directory, conf, port))
    if wait:
        server.wait_ready()
    return server


@contextlib.contextmanager
def bind_pair(directory: Path, *, follow: bool = False,
              algorithm: str = "hmac-sha256") -> Iterator[tuple[BindServer, BindServer]]:
    """A primary and its secondary; with ``follow=False`` the secondary lags until ``sync()``."""
    secondary_port = free_port()
    primary = start_primary(directory / "primary", algorithm=algorithm,
                            notify_ports=[secondary_port] if follow else ())
    try:
        secondary = start_secondary(directory / "secondary", primary, port=secondary_port)
        try:
            yield primary, secondary
        finally:
            secondary.stop()
    finally:
        primary.stop()


@pytest.fixture(scope="module")
def bind_primary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    """A primary shared by a module, with one key per algorithm in ALGORITHMS (main: sha256)."""
    server = start_primary(tmp_path_factory.mktemp("bind"), extra_algorithms=ALGORITHMS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bind_lagging_pair(tmp_path: Path) -> Iterator[tuple[BindServer, BindServer]]:
    """A fresh primary and a secondary that serves nothing new until ``secondary.sync()``."""
    with bind_pair(tmp_path, follow=False) as pair:
        yield pair


@pytest.fixture
def bind_following_pair(tmp_path: Path) -> Iterator[tuple[BindServer, BindServer]]:
    """A fresh primary and a secondary that follows it through NOTIFY."""
    with bind_pair(tmp_path, follow=True) as pair:
        yield pair
