"""``acmegw-server`` as a process: check mode, health, signals, and crash safety.

The gateway runs as ``python -m gateway`` in ``tmp_path`` (tests.gateway.procs).
Providers are original-gateway classes written into ``tmp_path`` by the test:
one whose setup is slow (to have a request in flight at SIGTERM), and
tests.gateway.filedns, which keeps its records in a JSON file and so remembers
what was written across a ``kill -9`` of the gateway.
"""

from __future__ import annotations

import json
import signal
import socket
import textwrap
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway import filedns
from tests.gateway.filedns import JournalFile, Zone
from tests.gateway.procs import (
    GatewayProcess,
    builtin_settings,
    gateway_settings,
    run_gateway,
    running_gateway,
)
from tests.system import free_port, wait_until

USER, PASSWORD = "alice", "correct horse: battery"

SLOW_PROVIDER = """
import json
import time

LOG = {log!r}


class SlowDNS:
    def __init__(self, username, password):
        pass

    def acme_challenge(self, action, fqdn, token):
        with open(LOG, "a") as f:
            f.write(json.dumps({{"event": "start", "action": action}}) + "\\n")
        time.sleep(1.0)
        with open(LOG, "a") as f:
            f.write(json.dumps({{"event": "done", "action": action}}) + "\\n")
        return 200, "OK"
"""

HUNG_PROVIDER = """
import time


class HungDNS:
    def __init__(self, username, password):
        pass

    def acme_challenge(self, action, fqdn, token):
        time.sleep(120)  # a DNS API call without a timeout, as the original's urlopen
        return 200, "OK"
"""


def write_provider(path: Path, source: str, **values: object) -> Path:
    path.write_text(textwrap.dedent(source).format(**values))
    return path


def setup_body(name: str = "example.test", value: str | None = None) -> dict[str, str]:
    return {
        "argument": "setup",
        "domain_name": name,
        "challenge_content": value or make_value(),
    }


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


# --- check mode, health, exit statuses ----------------------------------------------------


def test_check_config_prints_a_summary_and_exits_without_listening(tmp_path: Path) -> None:
    port = free_port()
    settings = gateway_settings(tmp_path, port, DNSAPI_DOMAINS="Example.TEST.")
    started = time.monotonic()
    result = run_gateway(tmp_path, settings, ["--check-config"], timeout=20)
    assert result.returncode == 0, result
    assert time.monotonic() - started < 15
    assert "configuration OK" in result.stdout
    assert f"127.0.0.1:{port}" in result.stdout
    assert "memory" in result.stdout and "example.test" in result.stdout
    assert "ready" not in result.stderr
    assert not listening(port)
    assert not (tmp_path / "state").exists()  # not even the journal was opened


def test_check_config_with_problems_exits_2(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path, free_port(), RECORD_MAX_AGE="soon", ALLOWED_HOSTS=None)
    result = run_gateway(tmp_path, settings, ["--check-config"], timeout=20)
    assert result.returncode == 2
    assert "RECORD_MAX_AGE" in result.stderr and "no authentication" in result.stderr
    assert "configuration OK" not in result.stdout


def test_healthz_without_auth_and_json_audit_lines(tmp_path: Path) -> None:
    PasswordFile(tmp_path / "acmepasswd").set_user(USER, PASSWORD)
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, BASIC_AUTH="sufficient", LOG_FORMAT="json",
        ALLOWED_HOSTS=None,  # passwords only: nothing is open by address
    )
    url = f"http://127.0.0.1:{port}"
    value = make_value()
    with running_gateway(tmp_path, settings) as gw:
        health = requests.get(f"{url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        denied = requests.post(f"{url}/", json=setup_body(), timeout=10)
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        answer = requests.post(
            f"{url}/", json=setup_body(value=value), auth=(USER, PASSWORD), timeout=10
        )
        assert answer.status_code == 201
        assert gw.stop() == 0
    lines = [json.loads(line) for line in gw.stderr.splitlines() if line.startswith("{")]
    audit = [line for line in lines if line.get("action") == "add"]
    assert len(audit) == 1, gw.stderr
    assert audit[0]["user"] == USER and audit[0]["client"] == "127.0.0.1"
    assert audit[0]["fqdn"] == "_acme-challenge.example.test" and audit[0]["result"] == "ok"
    assert value not in gw.stderr and PASSWORD not in gw.stderr


def test_a_listener_that_cannot_be_opened_exits_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_gateway(tmp_path, gateway_settings(tmp_path, port))
    assert result.returncode == 1, result
    assert "cannot listen" in result.stderr


def test_a_journal_that_cannot_be_opened_exits_1_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    settings = gateway_settings(
        tmp_path, free_port(), STATE_DIR=str(tmp_path / "not-a-folder" / "s")
    )
    result = run_gateway(tmp_path, settings)
    assert result.returncode == 1, result
    assert "cannot open the journal" in result.stderr and "Traceback" not in result.stderr


def test_a_provider_that_cannot_start_exits_1_with_a_message(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        dns_port = taken.getsockname()[1]
        settings = builtin_settings(tmp_path, free_port(), dns_port, PROPAGATION_CHECK="off")
        result = run_gateway(tmp_path, settings)
    assert result.returncode == 1, result
    assert f"127.0.0.1:{dns_port}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_idle_gateway_stops_cleanly_on_a_signal(tmp_path: Path, sig: int) -> None:
    port = free_port()
    with running_gateway(tmp_path, gateway_settings(tmp_path, port)) as gw:
        started = time.monotonic()
        assert gw.stop(sig) == 0
        assert time.monotonic() - started < 5
        assert not listening(port)


def test_sigterm_lets_the_request_in_flight_finish(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    provider = write_provider(tmp_path / "slowdns.py", SLOW_PROVIDER, log=str(log))
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, PROVIDER=None, DNSAPI_MODULE=str(provider), DNSAPI_CLASS="SlowDNS"
    )
    with running_gateway(tmp_path, settings) as gw, ThreadPoolExecutor(1) as pool:
        pending = pool.submit(
            requests.post, f"http://127.0.0.1:{port}/", json=setup_body(), timeout=20
        )
        wait_until(lambda: log.exists() and "start" in log.read_text(),
                   "the provider to be called", timeout=10)
        gw.send(signal.SIGTERM)
        answer = pending.result(timeout=20)
        assert answer.status_code == 201, answer.text
        assert gw.wait(20) == 0
        assert "done" in log.read_text()
        assert not listening(port)


def test_a_hung_provider_call_does_not_hold_up_the_exit(tmp_path: Path) -> None:
    provider = write_provider(tmp_path / "hungdns.py", HUNG_PROVIDER)
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, PROVIDER=None, DNSAPI_MODULE=str(provider), DNSAPI_CLASS="HungDNS",
        PROVIDER_TIMEOUT="0.5",
    )
    with running_gateway(tmp_path, settings) as gw:
        answer = requests.post(f"http://127.0.0.1:{port}/", json=setup_body(), timeout=20)
        assert answer.status_code == 504
        started = time.monotonic()
        assert gw.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - started < 5


# --- kill -9 during a burst, then the janitor ------------------------------------------


def post(url: str, body: dict[str, str], method: str = "POST") -> int | None:
    """The status, or None when the gateway died before answering."""
    try:
        return requests.request(method, url, json=body, timeout=15).status_code
    except requests.exceptions.ConnectionError:
        return None


def test_kill_9_during_a_burst_loses_nothing_and_the_janitor_leaves_nothing_stale(
    tmp_path: Path,
) -> None:
    zone = Zone(tmp_path / "zone.json")
    provider = filedns.write_provider(tmp_path / "filedns.py", zone.path, delay=0.03)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    settings = gateway_settings(tmp_path, port, **filedns.settings(provider))
    journal = JournalFile(tmp_path / "state" / "journal.sqlite3")

    # Some records set up calmly, to be torn down during the burst.
    early = [(f"early{i}.example.test", make_value()) for i in range(6)]
    burst = [(f"n{i % 20}.example.test", make_value()) for i in range(80)]
    answered: dict[tuple[str, str], int | None] = {}
    lock = threading.Lock()

    def send(name: str, value: str, method: str = "POST") -> None:
        argument = "setup" if method == "POST" else "teardown"
        body = {"argument": argument, "domain_name": name, "challenge_content": value}
        status = post(url, body, method)
        with lock:
            answered[(f"_acme-challenge.{name}", value)] = status

    gw = GatewayProcess(tmp_path, settings)
    try:
        gw.wait_ready()
        for name, value in early:
            assert post(url, setup_body(name, value)) == 201
        with ThreadPoolExecutor(12) as pool:
            futures: list[Future[None]] = [
                pool.submit(send, name, value) for name, value in burst[:20]
            ]
            futures += [pool.submit(send, name, value, "DELETE") for name, value in early]
            futures += [pool.submit(send, name, value) for name, value in burst[20:]]

            def enough() -> bool:
                with lock:
                    statuses = list(answered.values())
                return statuses.count(201) >= 10 and statuses.count(200) >= 2

            wait_until(enough, "the first answers of the burst", timeout=20)
            gw.kill()
            for future in futures:
                future.result(timeout=30)
    finally:
        gw.kill()

    setups_ok = {k for k, s in answered.items() if s == 201}
    teardowns_ok = {k for k, s in answered.items() if s == 200}
    unanswered = {k for k, s in answered.items() if s is None}
    assert unanswered, "the kill should have cut some requests off"
    assert all(s in (200, 201, None) for s in answered.values()), answered

    # Nothing lost: every confirmed setup is in DNS and journaled; every
    # confirmed teardown is gone from both; DNS holds nothing the journal forgot.
    dns, records = zone.values(), journal.records()
    assert setups_ok <= dns
    assert all(records.get(k) == "present" for k in setups_ok)
    assert not teardowns_ok & dns and not teardowns_ok & records.keys()
    assert dns <= records.keys(), dns - records.keys()

    # Age half of the journaled records past RECORD_MAX_AGE; the rest stay young.
    ordered = sorted(records)
    old, young = set(ordered[::2]), set(ordered[1::2])
    assert old & dns and young & dns, "both halves should hold values that are in DNS"
    journal.age(old, 7200)
    # A teardown in flight at the kill is not wanted any more: the janitor finishes it.
    young_in_dns = {k for k in young & dns if records[k] != "removing"}

    settings.update(RECORD_MAX_AGE="60s", JANITOR_INTERVAL="0.2s")
    with running_gateway(tmp_path, settings) as gw:
        wait_until(lambda: journal.older_than(60) == 0, "the janitor to remove old records", 15)
        wait_until(
            lambda: "removing" not in journal.records().values(),
            "interrupted removals to finish",
            timeout=15,
        )
        time.sleep(0.6)  # a few more janitor rounds must not touch the young records
        late = ("late.example.test", make_value())
        assert post(url, setup_body(*late)) == 201
        time.sleep(0.6)
        dns, records = zone.values(), journal.records()
        assert not old & dns, "a stale record survived the janitor"
        assert not old & records.keys()
        assert young_in_dns <= dns, "the janitor removed a record that is still wanted"
        assert young_in_dns <= records.keys()
        assert ("_acme-challenge.late.example.test", late[1]) in dns
        assert dns <= records.keys()
        assert gw.stop() == 0
    assert "janitor: removed stale" in gw.stderr
