"""Kept only for ``bench/rig/gateway.py``: the test CA now lives in :mod:`tests.servers.certs`.

Tests use :mod:`tests.servers.certs` directly. Delete this module once bench
imports it.
"""

from __future__ import annotations

from tests.servers.certs import TLSFiles, make_tls_files

__all__ = ["TLSFiles", "make_tls_files"]
