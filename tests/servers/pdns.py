"""A real PowerDNS Authoritative Server (Debian pdns-server + pdns-backend-sqlite3) for tests.

Everything lives in one temporary folder: the sqlite3 database made from the
schema Debian ships, ``pdns.conf``, the control socket and the log. The server
listens on loopback ports from :func:`tests.system.free_port`, answers from its
database without caching (so a query right after an API change sees it), and
is stopped by pid. Zones are created through the HTTP API.

Use :func:`running_pdns` in your own fixture, or import the module-scoped
``pdns_server`` fixture into a test module::

    from tests.servers.pdns import pdns_server  # noqa: F401 (a fixture)
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import requests

from tests.system import Server, free_port, need_program, unavailable, wait_for_port

SCHEMA_CANDIDATES = (
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
)
DEFAULT_ZONES = ("example.test", "example.org")
# Unix sockets have a ~108 byte path limit; deep pytest folders can exceed it.
_MAX_SOCKET_PATH = 100


@dataclass
class PowerDns:
    """A running pdns_server and what a test needs to talk to it."""

    api_url: str
    api_key: str
    dns_port: int
    server: Server
    server_id: str = "localhost"

    @property
    def zones_url(self) -> str:
        return f"{self.api_url}/api/v1/servers/{self.server_id}/zones"

    def api(self, method: str, path: str = "", json: Any = None) -> requests.Response:
        """A call to the zones API (path relative to ``.../zones``) with the right key."""
        return requests.request(
            method,
            self.zones_url + path,
            json=json,
            timeout=10,
            headers={"X-API-Key": self.api_key},
        )

    def create_zone(self, zone: str) -> None:
        response = self.api(
            "POST",
            json={
                "name": zone + ".",
                "kind": "Native",
                "nameservers": [f"ns1.{zone}."],
            },
        )
        if response.status_code != 201:
            raise RuntimeError(
                f"creating zone {zone}: HTTP {response.status_code} "
                f"{response.text}\n{self.server.output()}"
            )

    def rrsets(self, zone: str) -> list[dict[str, Any]]:
        """Every RRset of *zone* as the API shows it."""
        response = self.api("GET", f"/{zone}.")
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["rrsets"]
        return result

    async def query_txt(self, fqdn: str) -> set[str]:
        """The TXT values pdns serves at *fqdn*, asked over UDP like a resolver would."""
        query = dns.message.make_query(fqdn + ".", dns.rdatatype.TXT)
        answer = await dns.asyncquery.udp(query, "127.0.0.1", port=self.dns_port, timeout=3)
        if answer.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise RuntimeError(f"pdns answered {dns.rcode.to_text(answer.rcode())} for {fqdn}")
        values: set[str] = set()
        for rrset in answer.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    values.add(b"".join(rdata.strings).decode())
        return values


def _create_database(path: Path) -> None:
    schema = next((p for p in SCHEMA_CANDIDATES if p.is_file()), None)
    if schema is None:
        pytest.fail("pdns-backend-sqlite3 is installed but its schema.sqlite3.sql is missing")
    sqlite3_cli = shutil.which("sqlite3")
    if sqlite3_cli:
        with schema.open("rb") as sql:
            subprocess.run(
                [sqlite3_cli, str(path)], stdin=sql, check=True, timeout=30, capture_output=True
            )
        return
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(schema.read_text())
        db.commit()


@contextlib.contextmanager
def running_pdns(directory: Path, zones: Iterable[str] = DEFAULT_ZONES) -> Iterator[PowerDns]:
    """Run pdns_server with its files in *directory* and the given zones; stop it afterwards."""
    pdns_server = need_program("pdns_server", "pdns-server")
    if not any(Path("/usr/lib").glob("**/pdns/libgsqlite3backend.so")):
        unavailable("the gsqlite3 backend is not installed (Debian package pdns-backend-sqlite3)")
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / "pdns.sqlite3"
    _create_database(database)

    socket_dir = directory
    short_dir: str | None = None
    if len(str(directory / "pdns.controlsocket")) > _MAX_SOCKET_PATH:
        short_dir = tempfile.mkdtemp(prefix="pdns-")
        socket_dir = Path(short_dir)

    dns_port, web_port = free_port(), free_port()
    api_key = secrets.token_urlsafe(24)
    settings = {
        "launch": "gsqlite3",
        "gsqlite3-database": str(database),
        "local-address": "127.0.0.1",
        "local-port": str(dns_port),
        "webserver": "yes",
        "webserver-address": "127.0.0.1",
        "webserver-port": str(web_port),
        "webserver-allow-from": "127.0.0.0/8",
        "api": "yes",
        "api-key": api_key,
        "socket-dir": str(socket_dir),
        "guardian": "no",
        "daemon": "no",
        "disable-syslog": "yes",
        # Tests query right after each API change: no packet, query or negative
        # caching, and no zone cache (so new zones are served at once).
        "cache-ttl": "0",
        "negquery-cache-ttl": "0",
        "query-cache-ttl": "0",
        "zone-cache-refresh-interval": "0",
        # No security-status lookups on the internet.
        "security-poll-suffix": "",
        "receiver-threads": "1",
        "distributor-threads": "1",
    }
    (directory / "pdns.conf").write_text(
        "".join(f"{key}={value}\n" for key, value in settings.items())
    )
    server = Server(
        [pdns_server, f"--config-dir={directory}"], directory / "pdns.log", cwd=directory
    )
    try:
        wait_for_port(web_port, proc=server.proc)
        wait_for_port(dns_port, proc=server.proc)
        pdns = PowerDns(
            api_url=f"http://127.0.0.1:{web_port}",
            api_key=api_key,
            dns_port=dns_port,
            server=server,
        )
        for zone in zones:
            pdns.create_zone(zone)
        yield pdns
    except Exception:
        print(server.output())  # shown by pytest when the test fails
        raise
    finally:
        server.stop()
        if short_dir is not None:
            shutil.rmtree(short_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def pdns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDns]:
    """A pdns_server with zones example.test and example.org, shared by one test module."""
    with running_pdns(tmp_path_factory.mktemp("pdns")) as pdns:
        yield pdns
