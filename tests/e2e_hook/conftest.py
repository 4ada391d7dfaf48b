"""Fixtures of the mod_md chain: the installed hook, BIND, pebble and the www-data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e_hook.rig import build_hook_venv, shared_directory
from tests.servers.bind import BindServer, start_primary
from tests.servers.pebble import Pebble, running_pebble


@pytest.fixture(scope="session")
def hook_program() -> Iterator[Path]:
    """``bin/acmegw-hook`` of this checkout, installed for Debian's python3, readable by all."""
    with shared_directory("acmegw-hook-venv-") as directory:
        yield build_hook_venv(directory)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory www-data can enter: MDStoreDir, hook.conf, the gateway's CA."""
    with shared_directory("acmegw-e2e-") as directory:
        yield directory


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[BindServer]:
    server = start_primary(tmp_path / "bind")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pebble(tmp_path: Path, bind: BindServer) -> Iterator[Pebble]:
    with running_pebble(tmp_path / "pebble", bind.address) as ca:
        yield ca
