"""Issue 3, done when: a real ACME CA validates dns-01 values that the real gateway published.

``python -m gateway`` runs as a child process, as an administrator runs it:
``PROVIDER=builtin`` (its own authoritative DNS on a loopback port),
``DNSAPI_DOMAINS=example.test``, ``BASIC_AUTH=required`` with a password file.
pebble (Debian ``pebble``) runs with ``-dnsserver`` at that DNS port and without
``PEBBLE_VA_ALWAYS_VALID``, so its validation really looks the TXT values up,
with no other DNS server involved. lego (Debian ``lego``) orders a certificate for
``example.test`` and ``*.example.test`` through its ``exec`` DNS provider: the
script it runs POSTs each value to the gateway's native API with basic auth, and
fails unless the gateway answers 201 (setup) or 200 (teardown).

The pebble fixture (CA, TLS files, clean environment) is the one of
tests/servers/pebble.py. lego's own propagation check is off for the reason
given in tests/providers/test_builtin_pebble.py; the gateway's check
(``PROPAGATION_NAMESERVERS`` at its own DNS port) and pebble's lookup are the
ones that matter here.

Afterwards the certificate carries both names, the gateway's journal is empty
and ``dig`` finds no TXT left at the challenge name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import (
    CHALLENGE,
    PASSWORD,
    USER,
    audit_entries,
    certificate_names,
    dig_txt,
    journal_rows,
    run_client,
    write_passwd_file,
)
from tests.gateway.procs import GatewayProcess, running_gateway
from tests.servers.pebble import Pebble, pebble  # noqa: F401 (a fixture)
from tests.system import free_port, need_program

pytestmark = pytest.mark.system

LEGO_TIMEOUT = 60.0

# lego's exec provider runs `<script> present|cleanup <fqdn.> <value>`.
EXEC_SCRIPT = """\
import json, os, sys, urllib.error, urllib.request, base64
action, fqdn, value = sys.argv[1:4]
argument = {"present": "setup", "cleanup": "teardown"}[action]
wanted = 201 if argument == "setup" else 200
credentials = os.environ["GATEWAY_USER"] + ":" + os.environ["GATEWAY_PASSWORD"]
request = urllib.request.Request(
    os.environ["GATEWAY_URL"], method="POST",
    data=json.dumps({"argument": argument, "domain_name": fqdn.rstrip("."),
                     "challenge_content": value}).encode(),
    headers={"Content-Type": "application/json",
             "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()},
)
# No proxy from the environment: the gateway is on loopback.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(request, timeout=30) as response:
        status, body = response.status, response.read()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read()
print(f"gateway answered {status} to {argument}: {body.decode(errors='replace')}",
      file=sys.stderr)
sys.exit(0 if status == wanted else 1)
"""


@pytest.fixture
def dns_port() -> int:
    """The builtin DNS port: where the gateway serves and pebble asks."""
    return free_port()


@pytest.fixture
def gateway(tmp_path: Path, dns_port: int) -> Iterator[tuple[GatewayProcess, str, Path]]:
    """The running gateway, its native API URL and its state directory."""
    port = free_port()
    state = tmp_path / "state"
    settings = {
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": f"127.0.0.1:{dns_port}",
        "BUILTIN_NS": "gw.example.net",
        "DNSAPI_DOMAINS": "example.test",
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(write_passwd_file(tmp_path)),
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(state),
        "PROPAGATION_CHECK": "authoritative",
        "PROPAGATION_NAMESERVERS": f"127.0.0.1:{dns_port}",
        "PROPAGATION_TIMEOUT": "10",
        "LOG_FORMAT": "json",
    }
    with running_gateway(tmp_path, settings) as gw:
        yield gw, f"http://127.0.0.1:{port}/", state


async def run_lego(tmp_path: Path, ca: Pebble, dns_port: int, url: str) -> tuple[int, str]:
    lego = need_program("lego", "lego")
    script = tmp_path / "lego-exec"
    script.write_text(f"#!{sys.executable}\n{EXEC_SCRIPT}")
    script.chmod(0o755)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LEGO_CA_CERTIFICATES": str(ca.ca_file),
        "EXEC_PATH": str(script),
        "EXEC_POLLING_INTERVAL": "1",
        "EXEC_PROPAGATION_TIMEOUT": "30",
        "EXEC_SEQUENCE_INTERVAL": "1",
        "GATEWAY_URL": url,
        "GATEWAY_USER": USER,
        "GATEWAY_PASSWORD": PASSWORD,
    }
    argv = [
        lego,
        "--server", ca.url,
        "--accept-tos",
        "--email", "t@example.test",
        "--domains", "example.test",
        "--domains", "*.example.test",
        "--dns", "exec",
        "--dns.resolvers", f"127.0.0.1:{dns_port}",
        "--dns.disable-cp",
        "--http-timeout", "10",
        "--path", str(tmp_path / "lego"),
        "run",
    ]  # fmt: skip
    return await run_client(argv, env, tmp_path, LEGO_TIMEOUT)


async def test_pebble_validates_values_the_gateway_published(
    tmp_path: Path,
    pebble: Pebble,  # noqa: F811
    dns_port: int,
    gateway: tuple[GatewayProcess, str, Path],
) -> None:
    gw, url, state = gateway
    status, output = await run_lego(tmp_path, pebble, dns_port, url)
    assert status == 0, (
        f"lego failed:\n{output}\npebble:\n{pebble.server.output()}\ngateway:\n{gw.describe()}"
    )

    assert certificate_names(tmp_path / "lego" / "certificates" / "example.test.crt") == {
        "example.test",
        "*.example.test",
    }

    # Both values went through the gateway: two setups, two teardowns, all confirmed.
    changes = [(e["action"], e["fqdn"], e["value"], e["result"]) for e in audit_entries(gw.stderr)]
    added = {tag for action, fqdn, tag, result in changes if action == "add" and result == "ok"}
    removed = {tag for action, _, tag, result in changes if action == "remove" and result == "ok"}
    assert len(added) == 2, changes
    assert removed == added, changes
    assert all(fqdn == CHALLENGE for _, fqdn, _, _ in changes), changes

    assert journal_rows(state) == []
    assert await dig_txt(dns_port) == set()
