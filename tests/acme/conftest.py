"""The fake-CA rig shared by the client's tests: fake CAs (:mod:`tests.acme.fake_ca`) on
loopback HTTPS, the builtin provider in-process as the client's DNS, and the command
line run in a worker thread while the CAs serve on the test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from lib.acme.cli import main
from lib.acme.store import Lineage, Store
from tests.acme.fake_ca import FakeCA, serve
from tests.servers.certs import TLSFiles, make_tls_files
from tests.system import free_port

NAMES = ("example.test", "*.example.test")


@dataclass
class Rig:
    tmp: Path
    tls: TLSFiles
    dns_port: int
    cas: list[FakeCA]
    urls: list[str]

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    async def cli(self, *args: str, servers: list[str] | None = None) -> tuple[int, str, str]:
        """Run acmegw-acme in a thread (the fake CA serves on this loop); (status, out, err)."""
        argv = [*args, "--state-dir", str(self.state), "--ca-file", str(self.tls.ca)]
        if args and args[0] == "issue":
            for url in servers or self.urls[:1]:
                argv += ["--server", url]
            argv += ["--provider", "builtin", "--agree-tos", "--retry-delay", "0"]
        return await asyncio.to_thread(_run_main, argv)

    def lineage(self, name: str = "example.test") -> Lineage:
        lineage = Store(self.state).load_lineage(name)
        assert lineage is not None
        return lineage

    def leaf(self, name: str = "example.test") -> x509.Certificate:
        return x509.load_pem_x509_certificate(
            (self.state / "certificates" / name / "cert.pem").read_bytes())


def _run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


RigFactory = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def make_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RigFactory]:
    runners: list[web.AppRunner] = []
    cas: list[FakeCA] = []
    tls = make_tls_files(tmp_path / "tls", ca_name="acmegw acme test CA")
    dns_port = free_port()
    monkeypatch.setenv("BUILTIN_LISTEN", f"127.0.0.1:{dns_port}")
    monkeypatch.setenv("BUILTIN_NS", "ns.example.test")
    monkeypatch.delenv("PROVIDER", raising=False)

    async def factory(*configs: FakeCA) -> Rig:
        urls = []
        for ca in configs or (FakeCA(),):
            ca.dns_server = ("127.0.0.1", dns_port)
            runner, url = await serve(ca, tls)
            runners.append(runner)
            cas.append(ca)
            urls.append(url)
        return Rig(tmp_path, tls, dns_port, list(configs) or cas[-1:], urls)

    try:
        yield factory
    finally:
        for ca in cas:
            ca.release()
        for runner in runners:
            await runner.cleanup()
    for ca in cas:
        assert ca.violations == [], ca.violations


def fast(**kwargs: object) -> FakeCA:
    """A fake CA without Retry-After delays unless asked for."""
    kwargs.setdefault("retry_after", None)
    return FakeCA(**kwargs)  # type: ignore[arg-type]


def domains() -> list[str]:
    return [arg for name in NAMES for arg in ("-d", name)]
