"""A provider class written for the original ACME-dns01-gateway runs unchanged.

Each test writes such a class (``mydns.py``: ``MyDNS(username, password)`` with
``acme_challenge(action, fqdn, token) -> (status, message)``) into ``tmp_path``,
loads it the three ways a migrating user may have it (a module on
``sys.path``, a ``.py`` path, ``providers/mydns.py`` next to the dotenv file),
and drives it through the real app with ``aiohttp_client``. The class logs
every call to a JSON-lines file so the test sees exactly what it received.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway import server
from gateway.app import create_app
from gateway.config import load
from lib.settings import ConfigError
from providers.base import ProviderContext
from providers.legacy import LegacyProvider
from providers.registry import create_provider
from tests.conftest import make_value
from tests.gateway.procs import write_secret_file

API_USER = "api-user"
# Quotes, a backslash and non-ASCII: repr() and URL quoting change how it looks.
API_PASSWORD = "Sup3r'se\\cret\"wörd"
PASSWORD_FORMS = (API_PASSWORD, repr(API_PASSWORD)[1:-1], "Sup3r%27se%5Ccret%22w%C3%B6rd")

SOURCE = '''
"""An original-gateway DNS API class, as users wrote them."""
import ast
import json
import threading
import time

LOG = {log!r}
BEHAVIOUR = {behaviour!r}


def _log(**entry):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\\n")


class MyDNS:
    def __init__(self, username, password):
        _log(event="init", username=username, password=password)
        self.username = username
        self.password = password
        if BEHAVIOUR == "refuse-login":
            raise PermissionError(
                "login refused for %s with password %s (%r)" % (username, password, password)
            )

    def acme_challenge(self, action, fqdn, token):
        thread = threading.current_thread().name
        _log(event="start", action=action, fqdn=fqdn, token=token, thread=thread)
        if BEHAVIOUR == "fail":
            return 503, "zone is locked\\nby another update"
        if BEHAVIOUR == "raise":
            raise ConnectionError("api.example.net refused the connection")
        if BEHAVIOUR == "leak":
            raise ConnectionError(
                "https://%s:%s@api.example.net/ refused; password=%r"
                % (self.username, self.password, self.password)
            )
        if BEHAVIOUR.startswith("sleep "):
            time.sleep(float(BEHAVIOUR.split()[1]))
        if BEHAVIOUR.startswith("return "):
            result = ast.literal_eval(BEHAVIOUR[len("return "):])
        else:
            result = (200, "OK")
        _log(event="done", action=action, fqdn=fqdn, token=token)
        return result
'''


def write_class(path: Path, log: Path, behaviour: str = "ok") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(SOURCE).format(log=str(log), behaviour=behaviour))
    return path


class Calls:
    """What the class logged, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [c for c in self.all() if c["event"] == event]

    async def wait_for(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(event)
            if found:
                return found[0]
            await asyncio.sleep(0.01)
        raise AssertionError(f"the provider never logged {event!r}: {self.all()}")


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "DNSAPI_DOMAINS": "example.test",
        "ALLOWED_HOSTS": "127.0.0.1, ::1",
        "LISTEN": "127.0.0.1:0",
        "STATE_DIR": str(tmp_path / "state"),
        "PROPAGATION_CHECK": "off",
        "DNSAPI_USERNAME": API_USER,
        "DNSAPI_PASSWORD": API_PASSWORD,
    }
    env.update(extra)
    return env


class Setup:
    """Where the class lives and how the configuration names it."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp_path = tmp_path
        self.monkeypatch = monkeypatch
        self.calls = Calls(tmp_path / "calls.jsonl")
        # Each test writes its own mydns; never reuse another test's module.
        monkeypatch.delitem(sys.modules, "mydns", raising=False)

    def as_module(self, behaviour: str = "ok") -> tuple[list[str], dict[str, str]]:
        folder = self.tmp_path / "site"
        write_class(folder / "mydns.py", self.calls.path, behaviour)
        self.monkeypatch.syspath_prepend(str(folder))
        return [], base_env(self.tmp_path, DNSAPI_MODULE="mydns", DNSAPI_CLASS="MyDNS")

    def as_path(self, behaviour: str = "ok") -> tuple[list[str], dict[str, str]]:
        path = write_class(self.tmp_path / "dns api" / "mydns.py", self.calls.path, behaviour)
        return [], base_env(self.tmp_path, DNSAPI_MODULE=str(path), DNSAPI_CLASS="MyDNS")

    def next_to_dotenv(self, behaviour: str = "ok") -> tuple[list[str], dict[str, str]]:
        conf = self.tmp_path / "etc"
        write_class(conf / "providers" / "mydns.py", self.calls.path, behaviour)
        env = base_env(self.tmp_path)
        (conf / "gw.env").write_text("DNSAPI_MODULE=providers.mydns\nDNSAPI_CLASS=MyDNS\n")
        return ["-e", str(conf / "gw.env")], env


Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[[Sequence[str], Mapping[str, str]], Awaitable[Client]]


@pytest.fixture
def where(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.chdir(tmp_path)
    return Setup(tmp_path, monkeypatch)


@pytest.fixture
def start(aiohttp_client: Callable[..., Awaitable[Client]]) -> ClientFactory:
    """Build the configuration and provider as the server does, and serve the app."""

    async def build(argv: Sequence[str], env: Mapping[str, str]) -> Client:
        config, settings = load(list(argv), env)
        context = ProviderContext(
            managed_domains=config.managed_domains,
            state_dir=config.state_dir,
            config_dir=config.config_dir,
            timeout=config.provider_timeout,
        )
        provider = create_provider(settings, context)
        settings.raise_problems()
        assert isinstance(provider, LegacyProvider)
        return await aiohttp_client(create_app(config, provider))

    return build


def body(argument: str, name: str, value: str) -> dict[str, str]:
    return {"argument": argument, "domain_name": name, "challenge_content": value}


@pytest.mark.parametrize("how", ["as_module", "as_path", "next_to_dotenv"])
async def test_original_class_gets_credentials_actions_and_challenge_names(
    where: Setup, start: ClientFactory, how: str, value: str
) -> None:
    argv, env = getattr(where, how)()
    client = await start(argv, env)
    assert where.calls.events("init") == [
        {"event": "init", "username": API_USER, "password": API_PASSWORD}
    ]

    answer = await client.post("/", json=body("setup", "*.WWW.Example.Test.", value))
    assert answer.status == 201, await answer.text()
    assert await answer.json() == {"fqdn": "_acme-challenge.www.example.test", "value": value}

    answer = await client.delete("/", json=body("teardown", "www.example.test", value))
    assert answer.status == 200, await answer.text()

    calls = [(c["action"], c["fqdn"], c["token"]) for c in where.calls.events("done")]
    assert calls == [
        ("setup", "_acme-challenge.www.example.test", value),
        ("teardown", "_acme-challenge.www.example.test", value),
    ]
    # The original's API words "add"/"remove" map to the same two actions.
    assert (await client.put("/", json=body("add", "example.test", value))).status == 201
    assert (await client.post("/", json=body("remove", "example.test", value))).status == 200
    assert [c["action"] for c in where.calls.events("done")][2:] == ["setup", "teardown"]


async def test_non_2xx_status_is_a_502_with_a_one_line_reason(
    where: Setup, start: ClientFactory, value: str
) -> None:
    client = await start(*where.as_module("fail"))
    answer = await client.post("/", json=body("setup", "example.test", value))
    assert answer.status == 502
    message = (await answer.json())["message"]
    assert "503" in message and "zone is locked" in message
    assert "\n" not in message and "another update" not in message


@pytest.mark.parametrize(
    ("result", "status"),
    [
        ("(201, 'created')", 201),
        ("204", 201),
        ("(299,)", 201),
        ("('200', 'OK')", 201),
        ("(300, 'redirect')", 502),
        ("(199, 'early')", 502),
        ("None", 502),
        ("(True, 'yes')", 502),
        ("'done'", 502),
        ("()", 502),
    ],
)
async def test_only_a_2xx_status_counts_as_success(
    where: Setup, start: ClientFactory, value: str, result: str, status: int
) -> None:
    client = await start(*where.as_module(f"return {result}"))
    answer = await client.post("/", json=body("setup", "example.test", value))
    assert answer.status == status, await answer.text()


@pytest.mark.parametrize("message", ["''", "None", "'\\n'"])
async def test_a_failure_without_a_message_still_names_the_status(
    where: Setup, start: ClientFactory, value: str, message: str
) -> None:
    client = await start(*where.as_module(f"return (500, {message})"))
    answer = await client.post("/", json=body("setup", "example.test", value))
    assert answer.status == 502
    assert "setup answered status 500" in (await answer.json())["message"]


async def test_an_exception_is_a_502(where: Setup, start: ClientFactory, value: str) -> None:
    client = await start(*where.as_module("raise"))
    answer = await client.post("/", json=body("setup", "example.test", value))
    assert answer.status == 502
    message = (await answer.json())["message"]
    assert "ConnectionError" in message and "refused" in message
    answer = await client.delete("/", json=body("teardown", "example.test", value))
    assert answer.status == 502


async def test_a_hung_call_is_a_504_within_the_provider_timeout(
    where: Setup, start: ClientFactory, value: str
) -> None:
    argv, env = where.as_module("sleep 3")
    client = await start(argv, {**env, "PROVIDER_TIMEOUT": "300ms"})
    started = time.monotonic()
    answer = await client.post("/", json=body("setup", "example.test", value))
    elapsed = time.monotonic() - started
    assert answer.status == 504, await answer.text()
    assert elapsed < 1.5
    assert "0.3s" in (await answer.json())["message"]


async def test_calls_run_in_a_worker_thread_and_do_not_block_other_requests(
    where: Setup, start: ClientFactory, value: str
) -> None:
    client = await start(*where.as_module("sleep 1.0"))
    setup = asyncio.create_task(client.post("/", json=body("setup", "example.test", value)))
    started = await where.calls.wait_for("start")
    assert started["thread"] != "MainThread"

    t0 = time.monotonic()
    health = await client.get("/healthz")
    assert health.status == 200
    assert time.monotonic() - t0 < 0.5
    # Answered while the provider was still inside its blocking sleep.
    assert where.calls.events("done") == []

    answer = await setup
    assert answer.status == 201
    assert where.calls.events("done")


async def test_at_most_four_calls_run_at_once_and_the_rest_wait_their_turn(
    where: Setup, start: ClientFactory
) -> None:
    client = await start(*where.as_module("sleep 0.3"))
    names = [f"n{i}.example.test" for i in range(8)]
    answers = await asyncio.gather(
        *(client.post("/", json=body("setup", name, make_value())) for name in names)
    )
    assert [a.status for a in answers] == [201] * len(names)
    running = peak = 0
    for call in where.calls.all():
        running += {"start": 1, "done": -1}.get(call["event"], 0)
        peak = max(peak, running)
    assert peak == 4


def assert_no_password(text: str) -> None:
    for form in PASSWORD_FORMS:
        assert form not in text, f"the DNS API password leaked as {form!r}: {text!r}"


def test_password_stays_out_of_problems_when_the_constructor_raises(
    where: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    argv, env = where.as_module("refuse-login")
    with pytest.raises(ConfigError) as info:
        server.prepare(argv, env)
    (problem,) = info.value.problems
    assert "MyDNS" in problem and "PermissionError" in problem and API_USER in problem
    assert_no_password(problem)
    assert_no_password(caplog.text)
    # The class did receive the password: the redaction, not luck, kept it out.
    assert where.calls.events("init")[0]["password"] == API_PASSWORD


def test_password_stays_out_of_main_output_when_the_constructor_raises(
    where: Setup,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    argv, env = where.as_module("refuse-login")
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    assert server.main(argv) == 2
    out, err = capsys.readouterr()
    assert "MyDNS" in err
    for text in (out, err, caplog.text):
        assert_no_password(text)


async def test_password_stays_out_of_answers_and_logs_when_a_call_raises(
    where: Setup, start: ClientFactory, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = await start(*where.as_module("leak"))
    answer = await client.post("/", json=body("setup", "example.test", value))
    assert answer.status == 502
    text = await answer.text()
    assert "ConnectionError" in text
    assert_no_password(text)
    assert_no_password(caplog.text)


def test_password_from_a_file(where: Setup, tmp_path: Path) -> None:
    argv, env = where.as_module()
    del env["DNSAPI_PASSWORD"]
    secret = write_secret_file(tmp_path / "dnsapi-password", API_PASSWORD + "\n")
    env["DNSAPI_PASSWORD_FILE"] = str(secret)
    server.prepare(argv, env)
    assert where.calls.events("init")[0]["password"] == API_PASSWORD


def test_password_and_password_file_together_is_a_problem(where: Setup, tmp_path: Path) -> None:
    argv, env = where.as_module()
    (tmp_path / "dnsapi-password").write_text("other\n")
    env["DNSAPI_PASSWORD_FILE"] = str(tmp_path / "dnsapi-password")
    with pytest.raises(ConfigError) as info:
        server.prepare(argv, env)
    assert any("DNSAPI_PASSWORD_FILE" in p for p in info.value.problems)
    for problem in info.value.problems:
        assert_no_password(problem)


@pytest.mark.parametrize(
    ("module", "klass", "expected"),
    [
        ("mydns", "NoSuchClass", "AttributeError"),
        ("no_such_dns_module", "MyDNS", "no_such_dns_module"),
        ("json", "JSONDecoder", "acme_challenge"),  # a class, but not a provider
        ("json", "dumps", "not a class"),
    ],
)
def test_a_class_that_cannot_be_used_is_a_problem(
    where: Setup, module: str, klass: str, expected: str
) -> None:
    argv, env = where.as_module()
    env.update(DNSAPI_MODULE=module, DNSAPI_CLASS=klass)
    with pytest.raises(ConfigError) as info:
        server.prepare(argv, env)
    (problem,) = info.value.problems
    assert expected in problem and klass in problem


def test_module_and_class_from_the_command_line(where: Setup) -> None:
    _, env = where.as_module()
    env.update(DNSAPI_MODULE="no_such_dns_module", DNSAPI_CLASS="Nope")
    _, provider, _, _ = server.prepare(["-m", "mydns", "-c", "MyDNS"], env)
    assert isinstance(provider, LegacyProvider)
    assert provider.label == "mydns.MyDNS"
