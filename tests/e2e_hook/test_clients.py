"""The same chain driven by other ACME clients: Debian's certbot and lego, through acmegw-hook.

certbot (``certonly --manual --preferred-challenges dns``) runs the installed hook
as its auth and cleanup hook; lego runs it as its ``exec`` DNS provider. Both talk
to pebble, which validates for real against the test BIND that the gateway
(``rfc2136``, HTTPS, basic auth) writes to. Afterwards the certificate carries
``example.test`` and ``*.example.test``, and no TXT value is left in BIND or in the
gateway's journal.

lego runs with ``--dns.disable-cp``: its own propagation check would ask the zone's
NS hosts on port 53, which exist nowhere here; the gateway's check and pebble's
lookup are the ones that count.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e import journal_rows
from tests.e2e_hook.rig import dig_txt, gateway_files, sans, start_gateway, write_hook_conf
from tests.servers.bind import BindServer
from tests.servers.pebble import Pebble
from tests.system import need_program

pytestmark = pytest.mark.system

CLIENT_TIMEOUT = 90.0
NAMES = {"example.test", "*.example.test"}


def run_client(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=CLIENT_TIMEOUT, check=False)
    output = done.stdout + done.stderr
    print(output)  # shown when a test fails
    assert done.returncode == 0, f"{argv[0]} failed ({done.returncode}):\n{output}"
    return output


def client_env(tmp_path: Path, hook_conf: Path, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
            "LANG": "C.UTF-8", "ACMEGW_HOOK_CONF": str(hook_conf), **extra}


def test_certbot_manual_hooks(tmp_path: Path, shared: Path, hook_program: Path,
                              bind: BindServer, pebble: Pebble) -> None:
    certbot = need_program("certbot", "certbot")
    files = gateway_files(tmp_path / "gateway", shared, bind)
    hook_conf = write_hook_conf(tmp_path, files.url, files.ca_file, httpd=False)
    gateway = start_gateway(files)
    try:
        run_client(
            [certbot, "certonly", "--manual", "--preferred-challenges", "dns",
             "--manual-auth-hook", str(hook_program), "--manual-cleanup-hook", str(hook_program),
             "--server", pebble.url, "-d", "example.test", "-d", "*.example.test",
             "--non-interactive", "--agree-tos", "-m", "t@example.test",
             "--config-dir", str(tmp_path / "certbot/config"),
             "--work-dir", str(tmp_path / "certbot/work"),
             "--logs-dir", str(tmp_path / "certbot/logs")],
            # certbot trusts pebble through requests; the hook uses its own ACMEGW_CA_FILE.
            client_env(tmp_path, hook_conf, REQUESTS_CA_BUNDLE=str(pebble.ca_file)),
            tmp_path,
        )
        chain = (tmp_path / "certbot/config/live/example.test/fullchain.pem").read_bytes()
        assert sans(x509.load_pem_x509_certificates(chain)[0]) == NAMES
        hook_log = (tmp_path / "hook.log").read_text()
        assert hook_log.count("certbot setup example.test") == 2, hook_log
        assert hook_log.count("certbot teardown example.test") == 2, hook_log
        assert dig_txt(bind.port) == set()
        assert journal_rows(files.state_dir) == []
    finally:
        gateway.stop()


def test_lego_exec(tmp_path: Path, shared: Path, hook_program: Path,
                   bind: BindServer, pebble: Pebble) -> None:
    lego = need_program("lego", "lego")
    files = gateway_files(tmp_path / "gateway", shared, bind)
    hook_conf = write_hook_conf(tmp_path, files.url, files.ca_file, httpd=False)
    gateway = start_gateway(files)
    try:
        run_client(
            [lego, "--server", pebble.url, "--accept-tos", "--email", "t@example.test",
             "--domains", "example.test", "--domains", "*.example.test",
             "--dns", "exec", "--dns.resolvers", bind.address, "--dns.disable-cp",
             "--path", str(tmp_path / "lego"), "run"],
            client_env(tmp_path, hook_conf, LEGO_CA_CERTIFICATES=str(pebble.ca_file),
                       EXEC_PATH=str(hook_program), EXEC_SEQUENCE_INTERVAL="1",
                       EXEC_POLLING_INTERVAL="1", EXEC_PROPAGATION_TIMEOUT="20"),
            tmp_path,
        )
        chain = (tmp_path / "lego/certificates/example.test.crt").read_bytes()
        assert sans(x509.load_pem_x509_certificates(chain)[0]) == NAMES
        hook_log = (tmp_path / "hook.log").read_text()
        assert hook_log.count("lego setup _acme-challenge.example.test.") == 2, hook_log
        assert hook_log.count("lego teardown _acme-challenge.example.test.") == 2, hook_log
        assert dig_txt(bind.port) == set()
        assert journal_rows(files.state_dir) == []
    finally:
        gateway.stop()
