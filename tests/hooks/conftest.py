"""Fixtures for the hook's tests: a real gateway (in-process, memory provider) on a port.

The hook is synchronous (requests), so tests run it in a worker thread
(:func:`call`) while the gateway answers on the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import load
from hooks import acmegw_hook
from providers.base import Provider
from providers.memory import MemoryProvider
from tests.passwords import copy_passwd_file, write_passwd_template

PASSWORDS = {"alice": "alice: correct horse battery", "bob": "bob-s3cret-pässword"}


@pytest.fixture(scope="session")
def passwd_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once: scrypt is deliberately slow. bob may only change example.org names."""
    return write_passwd_template(tmp_path_factory.mktemp("hook-passwd") / "acmepasswd",
                                 PASSWORDS)


@dataclass
class Gateway:
    url: str
    provider: MemoryProvider
    server: TestServer


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway(
    tmp_path: Path, passwd_template: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> GatewayFactory:
    """``await gateway(provider=None, **env)``: a started gateway and its URL."""

    async def start(provider: Provider | None = None, **env: str) -> Gateway:
        passwd = copy_passwd_file(passwd_template, tmp_path / "acmepasswd")
        settings = {
            "PROVIDER": "memory",
            "DNSAPI_DOMAINS": "example.test, example.org",
            "BASIC_AUTH": "required",
            "PASSWD_FILE": str(passwd),
            "STATE_DIR": str(tmp_path / "state"),
            "LISTEN": "127.0.0.1:0",
            "PROPAGATION_CHECK": "off",
            **env,
        }
        config, _ = load([], settings)
        prov = provider or MemoryProvider()
        server = await aiohttp_server(create_app(config, prov))
        return Gateway(f"http://127.0.0.1:{server.port}/", prov, server)  # type: ignore[arg-type]

    return start


def hook_env(url: str, user: str = "alice", **extra: str) -> dict[str, str]:
    """An environment with no hook.conf and the given gateway and user."""
    env = {
        "ACMEGW_HOOK_CONF": "",
        "ACMEGW_URL": url,
        "ACMEGW_USER": user,
        "ACMEGW_PASSWORD": PASSWORDS.get(user, "wrong"),
        "ACMEGW_TIMEOUT": "10",
    }
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def _captured() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out, err


async def call(argv: Sequence[str], env: Mapping[str, str]) -> Result:
    """Run the hook in a worker thread (it blocks) while the loop serves the gateway."""

    def work() -> Result:
        with _captured() as (out, err):
            status = acmegw_hook.run(list(argv), dict(env))
        return Result(status, out.getvalue(), err.getvalue())

    return await asyncio.to_thread(work)


def call_sync(argv: Sequence[str], env: Mapping[str, str]) -> Result:
    with _captured() as (out, err):
        status = acmegw_hook.run(list(argv), dict(env))
    return Result(status, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def no_default_conf(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the default /etc/acmegw/hook.conf somewhere this test controls (absent)."""
    path = tmp_path / "etc-hook.conf"
    monkeypatch.setattr(acmegw_hook, "DEFAULT_CONF", path)
    return path


def one_line(text: str) -> str:
    """The single line a failure prints; fails the test if there are more."""
    lines = text.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    return lines[0]

