"""``make run`` (``python -m gateway.demo``): the printed commands work as printed.

The demo runs as a child process in ``tmp_path`` on free ports; the test takes
the curl command from its output, runs it with the real ``curl`` (and the
printed ``dig`` line with the real ``dig``), and checks the demo password is
stored only as a hash.
"""

from __future__ import annotations

import json
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.gateway.procs import GatewayProcess, running_gateway
from tests.system import free_port, need_program


def printed_command(output: str, program: str) -> list[str]:
    """The first command line for *program* in *output*, with its ``\\`` continuations."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(program + " "))
    text = lines[start].strip()
    while text.endswith("\\"):
        start += 1
        text = text[:-1] + " " + lines[start].strip()
    return shlex.split(text)


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
    )


def curl(argv: list[str]) -> tuple[int, dict[str, object]]:
    """Run a printed curl command; return the HTTP status and the JSON body."""
    result = run([*argv, "-w", "\n%{http_code}"])
    assert result.returncode == 0, result
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[GatewayProcess]:
    settings = {"DEMO_PORT": str(free_port()), "DEMO_DNS_PORT": str(free_port())}
    with running_gateway(tmp_path, settings, module="gateway.demo") as gw:
        yield gw


def test_the_printed_curl_command_sets_up_and_tears_down(demo: GatewayProcess) -> None:
    curl_path = need_program("curl", "curl")
    argv = printed_command(demo.stdout, "curl")
    assert argv[0] == "curl"
    data = json.loads(argv[argv.index("-d") + 1])
    assert data["argument"] == "setup"
    value = data["challenge_content"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", value)

    status, body = curl([curl_path, *argv[1:]])
    assert status == 201, body
    assert body == {"fqdn": "_acme-challenge.example.test", "value": value}

    dig = printed_command(demo.stdout, "dig")
    served = run([need_program("dig", "bind9-dnsutils"), *dig[1:]])
    assert served.stdout.strip() == f'"{value}"', served

    # "the same with teardown removes it"
    teardown = [a.replace('"argument":"setup"', '"argument":"teardown"') for a in argv[1:]]
    assert teardown != argv[1:]
    status, body = curl([curl_path, *teardown])
    assert status == 200, body
    assert body == {"fqdn": "_acme-challenge.example.test", "value": value}
    served = run([need_program("dig", "bind9-dnsutils"), *dig[1:]])
    assert served.returncode == 0 and served.stdout.strip() == ""


def test_the_printed_password_works_and_is_stored_only_hashed(
    demo: GatewayProcess, tmp_path: Path
) -> None:
    match = re.search(r"user 'demo', password '([^']+)'", demo.stdout)
    assert match, demo.stdout
    password = match.group(1)
    assert len(password) >= 20

    url = next(a for a in printed_command(demo.stdout, "curl") if a.startswith("http"))
    assert url.startswith("http://127.0.0.1:")
    body = {"argument": "setup", "domain_name": "www.example.test", "challenge_content": "A" * 43}
    assert requests.post(url, json=body, auth=("demo", password), timeout=30).status_code == 201
    wrong = requests.post(url, json=body, auth=("demo", password + "x"), timeout=30)
    assert wrong.status_code == 401
    assert requests.post(url, json=body, timeout=30).status_code == 401

    stored = tmp_path / "run" / "acmepasswd"
    text = stored.read_text()
    assert text.startswith("demo:$") and password not in text
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    assert password not in demo.stderr  # shown once to the user, never logged


def test_each_start_makes_a_new_password(tmp_path: Path) -> None:
    passwords = []
    for _ in range(2):
        settings = {"DEMO_PORT": str(free_port()), "DEMO_DNS_PORT": str(free_port())}
        with running_gateway(tmp_path, settings, module="gateway.demo") as gw:
            match = re.search(r"password '([^']+)'", gw.stdout)
            assert match
            passwords.append(match.group(1))
            assert gw.stop() == 0
    assert passwords[0] != passwords[1]
    # The file holds one demo user, not one per start.
    lines = (tmp_path / "run" / "acmepasswd").read_text().splitlines()
    assert sum(line.startswith("demo:") for line in lines) == 1
