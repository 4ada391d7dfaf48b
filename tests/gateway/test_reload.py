"""SIGHUP: the configuration and password file are read again, nothing in flight is dropped."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import requests

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import running_gateway
from tests.system import free_port

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


def wait_for_log(gw, text: str, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while text not in gw.stderr:
        assert time.monotonic() < deadline, gw.describe()
        time.sleep(0.05)


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
