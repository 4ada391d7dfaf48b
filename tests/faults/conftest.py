"""Fixtures for fault tests: the gateway app in-process, and file systems that fail.

The app is ``gateway.app.create_app`` behind aiohttp's test client, admitted
by host allowlist (127.0.0.1, no passwords: the faults under test are
elsewhere). :func:`small_tmpfs` mounts a tiny tmpfs in the test's folder (root
only; otherwise the test is skipped, or fails with ``REQUIRE_SYSTEM_TESTS=1``)
and always unmounts it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import load
from providers.base import Provider
from tests.system import need_program, unavailable

Client = TestClient[web.Request, web.Application]
GatewayFactory = Callable[..., Awaitable[Client]]


def body(argument: str, name: str, value: str) -> dict[str, str]:
    return {"argument": argument, "domain_name": name, "challenge_content": value}


@pytest.fixture
def fault_gateway(
    aiohttp_client: Callable[..., Awaitable[Client]], tmp_path: Path
) -> GatewayFactory:
    """``await fault_gateway(provider, **env)`` -> a test client of the app."""

    async def start(provider: Provider, **env: str) -> Client:
        settings = {
            "PROVIDER": "memory",
            "DNSAPI_DOMAINS": "example.test, example.org",
            "ALLOWED_HOSTS": "127.0.0.1",
            "STATE_DIR": str(tmp_path / "state"),
            "LISTEN": "127.0.0.1:0",
            "PROPAGATION_CHECK": "off",
        }
        settings.update(env)
        config, _ = load([], settings)
        return await aiohttp_client(create_app(config, provider))

    return start


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of *size* mounted at *where* (created), unmounted afterwards."""
    mount = need_program("mount", "mount")
    umount = need_program("umount", "mount")
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        unavailable("mounting a small tmpfs needs root")
    done = _run(mount, "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where))
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        done = _run(umount, str(where))
        if done.returncode != 0:  # still busy: detach it so the test's folder can go
            _run(umount, "-l", str(where))


def remount(where: Path, mode: str) -> None:
    """Remount *where* read-only (``ro``) or read-write (``rw``)."""
    done = _run(need_program("mount", "mount"), "-o", f"remount,{mode}", str(where))
    assert done.returncode == 0, done.stderr


def fill(where: Path) -> Path:
    """Fill the file system at *where* to the last byte; returns the filler file."""
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
    assert os.statvfs(where).f_bavail == 0
    return filler


@contextlib.contextmanager
def immutable(*paths: Path) -> Iterator[None]:
    """``chattr +i`` on *paths* (ext4 then refuses every write, even root's), undone after."""
    chattr = need_program("chattr", "e2fsprogs")
    names = [str(p) for p in paths]
    done = _run(chattr, "+i", *names)
    if done.returncode != 0:
        unavailable(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield
    finally:
        _run(chattr, "-i", *names)
