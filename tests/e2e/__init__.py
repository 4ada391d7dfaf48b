"""End-to-end tests: the real gateway in front of real DNS servers and a real ACME CA.

Shared by the modules of this package (so each reads the same way): the real
``dig`` to see what a DNS server serves, a password file for basic auth, the
journal's rows as the gateway left them on disk, the gateway's audit log lines,
an ACME client run to its end, the names of the certificate it got, and the
gateway built in-process the way ``acmegw-server`` builds it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from cryptography import x509

from gateway.app import create_app
from gateway.server import prepare
from lib.passwd import PasswordFile
from providers.base import Provider
from tests.system import need_program

CHALLENGE = "_acme-challenge.example.test"
USER = "alice"
PASSWORD = "e2e: a password with a colon"  # ':' must survive basic auth
DIG_TIMEOUT = 15.0

Client = TestClient[web.Request, web.Application]


def write_passwd_file(directory: Path) -> Path:
    """A password file with :data:`USER`, made the way an administrator does."""
    path = directory / "acmepasswd"
    PasswordFile(path).set_user(USER, PASSWORD)
    return path


def basic_auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def dig_txt(port: int, name: str = CHALLENGE) -> set[str]:
    """The TXT values the server on 127.0.0.1:*port* serves at *name*, as ``dig`` shows them.

    Async because some servers (the builtin DNS) answer from this test's own
    event loop. A server that does not answer fails the test: an empty set
    means "answered, without TXT".
    """
    dig = need_program("dig", "bind9-dnsutils")
    proc = await asyncio.create_subprocess_exec(
        dig,
        "@127.0.0.1",
        "-p",
        str(port),
        "+norecurse",
        "+short",
        "+time=2",
        "+tries=2",
        "TXT",
        name,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), DIG_TIMEOUT)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"dig failed ({proc.returncode}): {text}{err.decode()}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # +short still prints ";; ..." lines for errors such as a REFUSED answer.
    assert not any(line.startswith(";") for line in lines), text
    values: set[str] = set()
    for line in lines:
        assert line.startswith('"') and line.endswith('"'), f"not a TXT string: {line!r}"
        values.add(line[1:-1])
    return values


def journal_rows(state_dir: Path) -> list[tuple[str, str, str]]:
    """``(fqdn, value, state)`` of every record the gateway's journal holds on disk."""
    path = state_dir / "journal.sqlite3"
    assert path.is_file(), f"no journal at {path}"
    # Read-only: the gateway may still have it open (WAL mode allows a reader).
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute("SELECT fqdn, value, state FROM records ORDER BY fqdn, value")
        return [(str(f), str(v), str(s)) for f, v, s in rows.fetchall()]


def audit_entries(stderr: str, *, refusals: bool = False) -> list[dict[str, Any]]:
    """The ``acmegw.audit`` lines of a gateway's ``LOG_FORMAT=json`` log, parsed: the
    changes, and with *refusals* also the refused requests (gateway/refusals.py)."""
    entries = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("logger") == "acmegw.audit" and (
                refusals or not entry.get("action", "").startswith("refus")
            ):
                entries.append(entry)
    return entries


async def run_client(argv: Sequence[str], env: Mapping[str, str], cwd: Path,
                     timeout: float) -> tuple[int, str]:
    """Run an ACME client (lego, certbot) to its end: its exit status and output.

    stdout and stderr come as one text. A client still running after *timeout*
    seconds is killed, and the test fails with the timeout.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=dict(env),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


def certificate_names(path: Path) -> set[str]:
    """The DNS names in the subjectAltName of the first certificate in PEM file *path*."""
    leaf = x509.load_pem_x509_certificates(path.read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(sans.value.get_values_for_type(x509.DNSName))


async def in_process_gateway(aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path,
                             settings: Mapping[str, str]) -> tuple[Client, Provider]:
    """The gateway built by ``acmegw-server``'s start-up path, served by ``aiohttp_client``.

    It manages ``example.test`` and requires basic auth as :data:`USER`; *settings*
    (the provider, the propagation check, ...) come on top.
    """
    dotenv = tmp_path / "gateway.env"
    dotenv.write_text("")  # so no .env from the working directory leaks in
    env = {
        "DOTENV": str(dotenv),
        "DNSAPI_DOMAINS": "example.test",
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(write_passwd_file(tmp_path)),
        "LISTEN": "127.0.0.1:0",
        "STATE_DIR": str(tmp_path / "state"),
        **settings,
    }
    config, provider, passwords, _ = prepare([], env)
    client = await aiohttp_client(create_app(config, provider, passwords))
    return client, provider
