"""The same chain driven by other ACME clients: Debian's certbot, lego, dehydrated and
uacme, through acmegw-hook.

certbot (``certonly --manual --preferred-challenges dns``) runs the installed hook
as its auth and cleanup hook; lego runs it as its ``exec`` DNS provider; dehydrated
as its ``HOOK`` with ``CHALLENGETYPE="dns-01"`` (with and without ``HOOK_CHAIN``);
uacme runs it with ``-h``, and the hook declines the challenge types other than dns-01.
All talk to pebble, which validates for real against the test BIND that the gateway
(``rfc2136``, HTTPS, basic auth) writes to. Afterwards the certificate carries
``example.test`` and ``*.example.test``, and no TXT value is left in BIND or in the
gateway's journal.

lego runs with ``--dns.disable-cp``: its own propagation check would ask the zone's
NS hosts on port 53, which exist nowhere here; the gateway's check and pebble's
lookup are the ones that count.

uacme has no option for the CA to trust, and its libcurl (GnuTLS) reads its roots only
from ``/etc/ssl/certs``; it runs in a mount namespace of its own where that directory
holds pebble's CA alone (:func:`trusting_only`), so it verifies pebble's certificate
and the machine's trust store is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tests.e2e import journal_rows
from tests.e2e_hook.rig import dig_txt, gateway_files, sans, start_gateway, write_hook_conf
from tests.servers.bind import BindServer
from tests.servers.pebble import Pebble
from tests.system import need_program, unavailable

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



def hook_runs(hook_log: str, client: str, action: str) -> list[tuple[str, str]]:
    """(pid, value tag) of each *action* (setup/teardown) the hook logged for *client*."""
    return re.findall(rf"acmegw-hook\[(\d+)\] INFO {client} {action} example\.test "
                      r"\(value (\w+)\)", hook_log)


def two_values_set_and_removed(hook_log: str, client: str) -> tuple[list[tuple[str, str]],
                                                                    list[tuple[str, str]]]:
    """The hook's (pid, value tag) setups and teardowns for *client*, checked: the
    wildcard's authorization is for example.test too, so two values at one name, each
    set up once and torn down once."""
    setups = hook_runs(hook_log, client, "setup")
    teardowns = hook_runs(hook_log, client, "teardown")
    assert len(setups) == 2, hook_log
    assert len(teardowns) == 2, hook_log
    assert {tag for _, tag in setups} == {tag for _, tag in teardowns}, hook_log
    assert len({tag for _, tag in setups}) == 2, hook_log
    return setups, teardowns


def write_dehydrated_config(tmp_path: Path, hook: Path, pebble: Pebble, chain: bool) -> Path:
    config = tmp_path / "dehydrated/config"
    config.parent.mkdir()
    config.write_text(
        f'BASEDIR="{config.parent}"\n'
        f'CA="{pebble.url}"\n'
        'CHALLENGETYPE="dns-01"\n'
        f'HOOK="{hook}"\n'
        f'HOOK_CHAIN="{"yes" if chain else "no"}"\n'
        'CONTACT_EMAIL="t@example.test"\n'
        # dehydrated runs curl for every request; this is how it trusts pebble.
        f'CURL_OPTS="--cacert {pebble.ca_file}"\n'
    )
    return config


@pytest.mark.parametrize("chain", [True, False], ids=["hook-chain", "no-hook-chain"])
def test_dehydrated_hook(tmp_path: Path, shared: Path, hook_program: Path,
                         bind: BindServer, pebble: Pebble, chain: bool) -> None:
    dehydrated = need_program("dehydrated", "dehydrated")
    need_program("curl", "curl")
    files = gateway_files(tmp_path / "gateway", shared, bind)
    hook_conf = write_hook_conf(tmp_path, files.url, files.ca_file, httpd=False)
    config = write_dehydrated_config(tmp_path, hook_program, pebble, chain)
    env = client_env(tmp_path, hook_conf)
    gateway = start_gateway(files)
    try:
        run_client([dehydrated, "--config", str(config), "--register", "--accept-terms"],
                   env, tmp_path)
        run_client([dehydrated, "--config", str(config), "--cron",
                    "--domain", "example.test", "--domain", "*.example.test"], env, tmp_path)
        chain_pem = (tmp_path / "dehydrated/certs/example.test/fullchain.pem").read_bytes()
        assert sans(x509.load_pem_x509_certificates(chain_pem)[0]) == NAMES
        hook_log = (tmp_path / "hook.log").read_text()
        setups, teardowns = two_values_set_and_removed(hook_log, "dehydrated")
        # HOOK_CHAIN=yes hands both values to one run of the hook, else one run each.
        runs = 1 if chain else 2
        assert len({pid for pid, _ in setups}) == runs, hook_log
        assert len({pid for pid, _ in teardowns}) == runs, hook_log
        # dehydrated's other events (startup_hook, deploy_cert, exit_hook ...) are ignored.
        assert "dehydrated event deploy_cert: nothing to do" in hook_log, hook_log
        assert dig_txt(bind.port) == set()
        assert journal_rows(files.state_dir) == []
    finally:
        gateway.stop()


def trusting_only(ca_file: Path, directory: Path, argv: list[str]) -> list[str]:
    """*argv* run in a mount namespace of its own whose ``/etc/ssl/certs`` holds only *ca_file*.

    uacme reads no ``CURL_CA_BUNDLE`` or ``SSL_CERT_FILE`` (tried); this keeps its
    verification on without touching the machine's trust store.
    """
    unshare = need_program("unshare", "util-linux")
    need_program("mount", "mount")
    certs = directory / "certs"
    certs.mkdir(parents=True)
    shutil.copy(ca_file, certs / "ca-certificates.crt")
    namespaces = ["--mount"] if os.geteuid() == 0 else ["--user", "--map-root-user", "--mount"]
    wrapper = [unshare, *namespaces, "--propagation", "private", "--",
               "/bin/sh", "-c", 'mount --bind "$0" /etc/ssl/certs && exec "$@"', str(certs)]
    probe = subprocess.run([*wrapper, "true"], capture_output=True, text=True, timeout=30,
                           check=False)
    if probe.returncode != 0:
        unavailable("cannot give uacme pebble's CA in a private mount namespace (needs root "
                    f"or user namespaces): {probe.stderr.strip()}")
    return [*wrapper, *argv]


def test_uacme_hook(tmp_path: Path, shared: Path, hook_program: Path,
                    bind: BindServer, pebble: Pebble) -> None:
    uacme = need_program("uacme", "uacme")
    files = gateway_files(tmp_path / "gateway", shared, bind)
    hook_conf = write_hook_conf(tmp_path, files.url, files.ca_file, httpd=False)
    confdir = tmp_path / "uacme"
    common = [uacme, "-v", "-c", str(confdir), "-h", str(hook_program), "-a", pebble.url]
    env = client_env(tmp_path, hook_conf)
    gateway = start_gateway(files)
    try:
        run_client(trusting_only(pebble.ca_file, tmp_path / "new",
                                 [*common, "-y", "new", "t@example.test"]), env, tmp_path)
        output = run_client(trusting_only(pebble.ca_file, tmp_path / "issue",
                                          [*common, "issue", "example.test", "*.example.test"]),
                            env, tmp_path)
        chain_pem = (confdir / "example.test/cert.pem").read_bytes()
        assert sans(x509.load_pem_x509_certificates(chain_pem)[0]) == NAMES
        hook_log = (tmp_path / "hook.log").read_text()
        two_values_set_and_removed(hook_log, "uacme")
        # uacme offers example.test's challenges in pebble's order until one is taken;
        # whatever came before dns-01 the hook declined, and uacme saw the decline.
        offered = re.findall(r"acmegw-hook begin (\S+) example\.test ", output)
        assert offered.count("dns-01") == 2, output
        declined = re.findall(r"uacme: challenge (\S+) declined", output)
        assert declined == [kind for kind in offered if kind != "dns-01"], output
        logged = re.findall(r"INFO uacme: declining (\S+) challenge for example\.test "
                            r"\(only dns-01\)", hook_log)
        assert logged == declined, hook_log
        assert dig_txt(bind.port) == set()
        assert journal_rows(files.state_dir) == []
    finally:
        gateway.stop()
