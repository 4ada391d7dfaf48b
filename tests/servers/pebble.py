"""pebble (Debian ``pebble``, Let's Encrypt's test CA) validating dns-01 for real.

:func:`start_pebble` runs pebble in its own folder with its own config, on free
loopback ports, with ``-dnsserver`` at the test's DNS server, and returns once
both its ACME and management ports listen; the caller stops it by pid
(:meth:`Pebble.stop`), or uses :func:`running_pebble` or the :func:`pebble`
fixture, which stop it in a ``finally``.

Validation is real: the environment is built from scratch, so
``PEBBLE_VA_ALWAYS_VALID`` is never set (and refused in *extra_env*).
``PEBBLE_VA_NOSLEEP=1`` only skips pebble's artificial validation delay.
``PEBBLE_WFE_NONCEREJECT=0`` turns off its random ``badNonce`` answers, unless
``reject_nonces=True`` keeps pebble's default (5 % of good nonces rejected) to
exercise a client's retry. ``eab_keys`` turns on
``externalAccountBindingRequired``; ``alternate_roots`` sets
``PEBBLE_ALTERNATE_ROOTS``.

Debian ships pebble without its test certificate, so its HTTPS uses a CA made by
:mod:`tests.servers.certs`; :attr:`Pebble.ca_file` is what ACME clients must
trust. The management interface gives the roots that sign issued certificates
(new at every start: :meth:`Pebble.root_pem`, :meth:`Pebble.root_names`) and the
revocation status of a serial (:meth:`Pebble.cert_status`).

Other test modules reuse the fixture by importing it
(``from tests.servers.pebble import pebble  # noqa: F401``) and define a
``dns_port`` fixture: the loopback port of the DNS server pebble asks.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.servers.certs import TLSFiles, make_tls_files
from tests.system import Server, free_port, need_program, wait_for_port

MANAGEMENT_TIMEOUT = 10.0


@dataclass
class Pebble:
    url: str
    """The ACME directory URL."""
    management_url: str
    ca_file: Path
    """The CA of pebble's HTTPS certificate (ACME and management)."""
    server: Server

    def stop(self) -> None:
        self.server.stop()

    def _get(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        # No proxy from the environment: pebble is on loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        with opener.open(f"{self.management_url}{path}", timeout=MANAGEMENT_TIMEOUT) as response:
            body: bytes = response.read()
            return body

    def root_pem(self, index: int = 0) -> str:
        """PEM of root *index*, which signs (the chains of) the certificates pebble issues."""
        return self._get(f"/roots/{index}").decode()

    def root_names(self, count: int) -> list[str]:
        """The subject CN of root 0 .. count-1 (chains lead to these issuers)."""
        names = []
        for index in range(count):
            cert = x509.load_pem_x509_certificate(self._get(f"/roots/{index}"))
            value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            names.append(value if isinstance(value, str) else value.decode())
        return names

    def cert_status(self, serial_hex: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self._get(f"/cert-status-by-serial/{serial_hex}"))
        return result


def start_pebble(directory: Path, dns_server: str, *,
                 eab_keys: Mapping[str, str] | None = None,
                 alternate_roots: int = 0,
                 reject_nonces: bool = False,
                 extra_env: Mapping[str, str] | None = None,
                 port: int | None = None,
                 tls: TLSFiles | None = None,
                 config: Mapping[str, Any] | None = None) -> Pebble:
    """Run pebble in *directory*, validating against *dns_server* (``ip:port``).

    Returns once it listens; the caller stops it. *extra_env* adds pebble settings
    such as ``PEBBLE_AUTHZREUSE``; never use it to switch validation off. *port*
    and *tls* (its HTTPS files, from :func:`tests.servers.certs.make_tls_files`)
    let a client be configured before pebble starts (a CA that is down at first);
    *config* adds keys to its configuration (``certificateValidityPeriod``: the
    lifetime of what it issues, in seconds).
    """
    program = need_program("pebble", "pebble")
    directory.mkdir(parents=True, exist_ok=True)
    tls = tls or make_tls_files(directory / "tls", ca_name="pebble HTTPS test CA")
    port, management = port or free_port(), free_port()
    settings: dict[str, Any] = {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(tls.cert),
        "privateKey": str(tls.key),
        # Unused (dns-01 only) but must not clash with anything.
        "httpPort": free_port(),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": bool(eab_keys),
    }
    if eab_keys:
        settings["externalAccountMACKeys"] = dict(eab_keys)
    settings.update(config or {})
    config = directory / "pebble-config.json"
    config.write_text(json.dumps({"pebble": settings}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1"}
    if not reject_nonces:
        env["PEBBLE_WFE_NONCEREJECT"] = "0"
    if alternate_roots:
        env["PEBBLE_ALTERNATE_ROOTS"] = str(alternate_roots)
    env.update(extra_env or {})
    if "PEBBLE_VA_ALWAYS_VALID" in env:
        raise ValueError("these tests validate for real")
    server = Server([program, "-config", str(config), "-dnsserver", dns_server],
                    directory / "pebble.log", env=env, cwd=directory)
    try:
        wait_for_port(port, timeout=15, proc=server.proc)
        wait_for_port(management, timeout=15, proc=server.proc)
    except BaseException:
        server.stop()
        raise
    return Pebble(f"https://127.0.0.1:{port}/dir", f"https://127.0.0.1:{management}",
                  tls.ca, server)


@contextmanager
def running_pebble(directory: Path, dns_server: str, *,
                   eab_keys: Mapping[str, str] | None = None,
                   alternate_roots: int = 0,
                   reject_nonces: bool = False,
                   extra_env: Mapping[str, str] | None = None,
                   port: int | None = None,
                   tls: TLSFiles | None = None,
                   config: Mapping[str, Any] | None = None) -> Iterator[Pebble]:
    """:func:`start_pebble`, stopped by pid when the block ends."""
    ca = start_pebble(directory, dns_server, eab_keys=eab_keys, alternate_roots=alternate_roots,
                      reject_nonces=reject_nonces, extra_env=extra_env, port=port, tls=tls,
                      config=config)
    try:
        yield ca
    finally:
        ca.stop()


@pytest.fixture
def pebble(tmp_path: Path, dns_port: int) -> Iterator[Pebble]:
    """pebble asking the DNS server at ``127.0.0.1:<dns_port>`` (a fixture of the user)."""
    with running_pebble(tmp_path / "pebble", f"127.0.0.1:{dns_port}") as ca:
        yield ca
