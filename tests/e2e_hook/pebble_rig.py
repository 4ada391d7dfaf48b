"""Kept only for ``bench/modmd_chain.py``: the pebble rig now lives in :mod:`tests.servers.pebble`.

Tests use :mod:`tests.servers.pebble` directly. Delete this module once bench
imports it.
"""

from __future__ import annotations

from pathlib import Path

from tests.servers.pebble import Pebble
from tests.servers.pebble import start_pebble as _start

__all__ = ["Pebble", "start_pebble"]


def start_pebble(directory: Path, dns_port: int) -> Pebble:
    """pebble asking ``127.0.0.1:<dns_port>``; returns once it listens. The caller stops it."""
    return _start(directory, f"127.0.0.1:{dns_port}")
