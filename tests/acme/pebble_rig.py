"""Kept only for ``bench/acme_issue.py``: the pebble rig now lives in :mod:`tests.servers.pebble`.

The names below keep that script's calls working unchanged (pebble's default
5 % of rejected nonces, as before); tests use :mod:`tests.servers.pebble` and
:mod:`tests.servers.certs` directly. Delete this module once bench imports those.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from tests.servers.certs import TLSFiles, make_tls_files
from tests.servers.pebble import Pebble, running_pebble

__all__ = ["Pebble", "start_pebble", "write_tls_files"]


def write_tls_files(directory: Path, name: str = "acmegw acme test CA") -> TLSFiles:
    return make_tls_files(directory, ca_name=name)


@contextmanager
def start_pebble(directory: Path, dns_server: str, *,
                 eab_keys: Mapping[str, str] | None = None,
                 alternate_roots: int = 0,
                 extra_env: Mapping[str, str] | None = None) -> Iterator[Pebble]:
    with running_pebble(directory, dns_server, eab_keys=eab_keys,
                        alternate_roots=alternate_roots, reject_nonces=True,
                        extra_env=extra_env) as ca:
        yield ca
