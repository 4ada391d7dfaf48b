"""A provider call the gateway stopped waiting for may still write: nothing is left behind.

The gateway runs as ``python -m gateway`` with an original-gateway provider
class (tests.gateway.filedns) whose setup sleeps past ``PROVIDER_TIMEOUT``
before it writes the value into its zone file; its teardown is quick. Python
threads cannot be stopped, so the setup answers 504 and the write lands
seconds later. What must hold: a value whose write may still land stays
journaled (a teardown in the meantime does not drop it, nor does the janitor,
which runs every 0.2 s here), and it is removed as soon as the late call ends.
"""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.conftest import make_value
from tests.gateway import filedns
from tests.gateway.filedns import JournalFile, Zone
from tests.gateway.procs import gateway_settings, running_gateway
from tests.system import free_port, wait_until

SLOW_SETUP = 5.0  # seconds the setup sleeps before it writes; the deadline is 1 s


def test_a_late_write_stays_journaled_and_is_removed_when_its_call_ends(tmp_path: Path) -> None:
    zone = Zone(tmp_path / "zone.json")
    provider = filedns.write_provider(
        tmp_path / "filedns.py", zone.path, before={"setup": SLOW_SETUP}
    )
    port = free_port()
    settings = gateway_settings(
        tmp_path, port, **filedns.settings(provider),
        PROVIDER_TIMEOUT="1s",
        JANITOR_INTERVAL="0.2s",
    )
    journal = JournalFile(tmp_path / "state" / "journal.sqlite3")
    url = f"http://127.0.0.1:{port}/"
    # "torn": the client tears down after the 504; "left": it never does (mod_md).
    torn = ("_acme-challenge.torn.example.test", make_value())
    left = ("_acme-challenge.left.example.test", make_value())

    def send(method: str, argument: str, key: tuple[str, str]) -> requests.Response:
        name = key[0].removeprefix("_acme-challenge.")
        body = {"argument": argument, "domain_name": name, "challenge_content": key[1]}
        return requests.request(method, url, json=body, timeout=30)

    def setups_done() -> int:
        return sum(1 for c in zone.calls("done") if c["action"] == "setup")

    with running_gateway(tmp_path, settings) as gw:
        for key in (torn, left):
            answer = send("POST", "setup", key)
            assert answer.status_code == 504, answer.text
        assert send("DELETE", "teardown", torn).status_code == 200
        time.sleep(1.0)  # several janitor rounds
        assert setups_done() == 0, "the slow setups ended too soon for this test to mean much"
        # Both writes may still land: both values stay journaled, whatever came meanwhile.
        assert torn in journal.records() and left in journal.records()

        wait_until(lambda: setups_done() == 2, "the slow setups to write")
        wait_until(lambda: not zone.values(), "the late values to be removed")
        wait_until(lambda: not journal.records(), "the journal to be empty")
        assert gw.stop() == 0
    teardowns = [(c["fqdn"], c["token"]) for c in zone.calls() if c["action"] == "teardown"]
    assert torn in teardowns and left in teardowns
