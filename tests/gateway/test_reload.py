"""SIGHUP: the configuration and password file are read again, nothing in flight is dropped.

Provider settings too: a rotated DNS API password (an original-gateway class)
or TSIG secret (rfc2136 against a real BIND) is in force for the requests after
the reload while the one in flight finishes with the old; what only a restart
can change (the builtin DNS server's listening address) is said to need one,
and the server keeps running as it was.
"""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
import requests

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, running_gateway, write_dotenv_file
from tests.servers.bind import start_primary
from tests.system import free_port, wait_until

SLOW_PROVIDER = """
import time
class Slow:
    def __init__(self, username, password):
        pass
    def acme_challenge(self, action, fqdn, token):
        if token.startswith("slow"):
            time.sleep(1.5)
        return 200, "ok"
"""


def write_env(path: Path, port: int, domains: str, extra: str = "") -> None:
    path.write_text(
        f"LISTEN=127.0.0.1:{port}\nDNSAPI_MODULE=slowprov.py\nDNSAPI_CLASS=Slow\n"
        f"DNSAPI_DOMAINS={domains}\nBASIC_AUTH=required\nPASSWD_FILE=acmepasswd\n"
        f"STATE_DIR=state\nPROPAGATION_CHECK=off\n{extra}"
    )


def setup(port: int, name: str, password: str, value: str | None = None) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{port}/",
        data=json.dumps(
            {"argument": "setup", "domain_name": name, "challenge_content": value or make_value()}
        ),
        auth=("alice", password),
        timeout=10,
    )


def wait_for_log(gw: GatewayProcess, text: str) -> None:
    wait_until(lambda: text in gw.stderr, f"{text!r} in the log", describe=gw.describe)


def test_sighup_reloads_domains_and_passwords_without_dropping(tmp_path: Path) -> None:
    (tmp_path / "slowprov.py").write_text(SLOW_PROVIDER)
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "first-password")
    port = free_port()
    env_file = tmp_path / ".env"
    write_env(env_file, port, "example.test")
    with running_gateway(tmp_path, {}, args=["-e", str(env_file)]) as gw:
        assert setup(port, "example.org", "first-password").status_code == 403
        # A request in flight while the reload happens still gets its answer.
        slow_value = "slow" + make_value()[4:]
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(
                setup(port, "example.test", "first-password", slow_value).status_code
            )
        )
        slow.start()
        time.sleep(0.3)
        write_env(env_file, port, "example.test, example.org")
        PasswordFile(tmp_path / "acmepasswd").set_user("alice", "second-password")
        gw.send(signal.SIGHUP)
        wait_for_log(gw, "configuration reloaded")
        slow.join(10)
        assert answers == [201]
        assert setup(port, "example.org", "second-password").status_code == 201
        assert setup(port, "example.org", "first-password").status_code == 401


def test_bad_configuration_on_reload_keeps_the_running_one(tmp_path: Path) -> None:
    (tmp_path / "slowprov.py").write_text(SLOW_PROVIDER)
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "pw-1")
    port = free_port()
    env_file = tmp_path / ".env"
    write_env(env_file, port, "example.test")
    with running_gateway(tmp_path, {}, args=["-e", str(env_file)]) as gw:
        write_env(env_file, port, "example.test", extra="BASIC_AUTH=maybe\nALLOWED_HOSTS=x\n")
        gw.send(signal.SIGHUP)
        wait_for_log(gw, "reload refused")
        assert "BASIC_AUTH" in gw.stderr
        assert setup(port, "example.test", "pw-1").status_code == 201
        assert gw.proc.poll() is None


def test_reload_reports_what_needs_a_restart(tmp_path: Path) -> None:
    (tmp_path / "slowprov.py").write_text(SLOW_PROVIDER)
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "pw-1")
    port = free_port()
    env_file = tmp_path / ".env"
    write_env(env_file, port, "example.test")
    with running_gateway(tmp_path, {}, args=["-e", str(env_file)]) as gw:
        write_env(env_file, free_port(), "example.test")
        gw.send(signal.SIGHUP)
        wait_for_log(gw, "restart to apply: listeners")
        assert setup(port, "example.test", "pw-1").status_code == 201


RECORDING_PROVIDER = """
import json
import time
LOG = {log!r}
class Recording:
    def __init__(self, username, password):
        self.password = password
    def acme_challenge(self, action, fqdn, token):
        if token.startswith("slow"):
            time.sleep(1.5)
        with open(LOG, "a") as f:
            f.write(json.dumps({{"password": self.password, "token": token}}) + "\\n")
        return 200, "ok"
"""


def reloaded(gw, before: int) -> str:  # type: ignore[no-untyped-def]
    """Wait for the reload after the *before*-th one to be reported; its log line."""
    deadline = time.monotonic() + 20
    while True:
        lines = [ln for ln in gw.stderr.splitlines() if "reloaded" in ln]
        if len(lines) > before:
            return lines[before]
        assert time.monotonic() < deadline, gw.describe()
        time.sleep(0.05)


def test_a_rotated_provider_password_is_used_after_a_reload(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    (tmp_path / "recording.py").write_text(RECORDING_PROVIDER.format(log=str(log)))
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "pw")
    port = free_port()
    env_file = tmp_path / ".env"

    def write(password: str) -> None:
        env_file.write_text(
            f"LISTEN=127.0.0.1:{port}\nDNSAPI_MODULE=recording.py\nDNSAPI_CLASS=Recording\n"
            f"DNSAPI_PASSWORD={password}\nDNSAPI_DOMAINS=example.test\nBASIC_AUTH=required\n"
            "PASSWD_FILE=acmepasswd\nSTATE_DIR=state\nPROPAGATION_CHECK=off\n"
        )
        env_file.chmod(0o600)

    write("api-password-1")
    with running_gateway(tmp_path, {}, args=["-e", str(env_file)]) as gw:
        slow_value = "slow" + make_value()[4:]
        answers: list[int] = []
        slow = threading.Thread(
            target=lambda: answers.append(setup(port, "example.test", "pw", slow_value).status_code)
        )
        slow.start()
        time.sleep(0.3)
        write("api-password-2")
        gw.send(signal.SIGHUP)
        assert "configuration reloaded" in reloaded(gw, 0)
        fast_value = make_value()
        assert setup(port, "example.test", "pw", fast_value).status_code == 201
        slow.join(10)
        assert answers == [201]
    used = {c["token"]: c["password"] for c in map(json.loads, log.read_text().splitlines())}
    # The call in flight finished with the instance it started on; the next used the new.
    assert used[slow_value] == "api-password-1"
    assert used[fast_value] == "api-password-2"


def test_builtin_listen_changes_need_a_restart_and_the_server_keeps_serving(
    tmp_path: Path,
) -> None:
    PasswordFile(tmp_path / "acmepasswd").set_user("alice", "pw")
    port, dns_port, other_port = free_port(), free_port(), free_port()
    env_file = tmp_path / ".env"

    def write(listen: int) -> None:
        env_file.write_text(
            f"LISTEN=127.0.0.1:{port}\nPROVIDER=builtin\nBUILTIN_LISTEN=127.0.0.1:{listen}\n"
            "BUILTIN_RATE_LIMIT=0\nDNSAPI_DOMAINS=example.test\nBASIC_AUTH=required\n"
            "PASSWD_FILE=acmepasswd\nSTATE_DIR=state\nPROPAGATION_CHECK=off\n"
        )

    write(dns_port)
    with running_gateway(tmp_path, {}, args=["-e", str(env_file)]) as gw:
        write(other_port)
        gw.send(signal.SIGHUP)
        line = reloaded(gw, 0)
        assert line.endswith("restart to apply: BUILTIN_LISTEN"), line
        value = make_value()
        assert setup(port, "example.test", "pw", value).status_code == 201
        query = dns.message.make_query("_acme-challenge.example.test", dns.rdatatype.TXT)
        answer = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=5)
        assert [b"".join(r.strings).decode() for rr in answer.answer for r in rr] == [value]


@pytest.mark.system
def test_a_rotated_tsig_secret_is_used_after_a_reload(tmp_path: Path) -> None:
    bind = start_primary(tmp_path / "bind")
    try:
        PasswordFile(tmp_path / "acmepasswd").set_user("alice", "pw")
        port = free_port()
        env_file = tmp_path / ".env"

        def write(secret: str) -> None:
            write_dotenv_file(env_file, {
                **bind.rfc2136_settings(), "RFC2136_TSIG_SECRET": secret,
                "LISTEN": f"127.0.0.1:{port}", "DNSAPI_DOMAINS": "example.test",
                "BASIC_AUTH": "required", "PASSWD_FILE": "acmepasswd", "STATE_DIR": "state",
                "PROPAGATION_CHECK": "off",
            })

        # The server's key was rotated; the gateway still has the old secret.
        write(base64.b64encode(b"the secret before the rotation!!").decode())
        with running_gateway(tmp_path, {}, args=["-e", str(env_file)]) as gw:
            before = make_value()
            refused = setup(port, "example.test", "pw", before)
            assert refused.status_code == 502 and "BADSIG" in refused.text, refused.text
            write(bind.key.secret)
            gw.send(signal.SIGHUP)
            assert "configuration reloaded" in reloaded(gw, 0)
            value = make_value()
            assert setup(port, "example.test", "pw", value).status_code == 201
            assert bind.txt("_acme-challenge.example.test") == {value}
    finally:
        bind.stop()
