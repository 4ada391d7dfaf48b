"""A real pebble (Debian ``pebble``, Let's Encrypt's test CA) for the ACME client's tests.

:func:`start_pebble` runs pebble in its own folder with its own config, on free
loopback ports, with ``-dnsserver`` pointing at the test's DNS server, and
returns once it listens. Validation is real: the environment is built from
scratch, so ``PEBBLE_VA_ALWAYS_VALID`` is never set, and
``PEBBLE_WFE_NONCEREJECT`` is left at pebble's default (5 % of good nonces are
rejected, so the client's ``badNonce`` retry is exercised).
``PEBBLE_VA_NOSLEEP=1`` only skips pebble's artificial validation delay.

Debian ships pebble without its test certificate, so :func:`write_tls_files`
makes a CA and a certificate for 127.0.0.1 with ``cryptography`` (also used by
the in-process fake CA and the HTTPS gateway). ``eab_keys`` turns on
``externalAccountBindingRequired``; ``alternate_roots`` sets
``PEBBLE_ALTERNATE_ROOTS``. The management interface tells the issuer names of
every root (:meth:`Pebble.root_names`) and the revocation status of a serial
(:meth:`Pebble.cert_status`).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.system import Server, free_port, need_program, wait_for_port


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def write_tls_files(directory: Path, name: str = "acmegw acme test CA") -> TlsFiles:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


@dataclass
class Pebble:
    url: str
    management: str
    ca_file: Path
    server: Server

    def _get(self, path: str) -> requests.Response:
        response = requests.get(f"{self.management}{path}", verify=str(self.ca_file), timeout=10)
        response.raise_for_status()
        return response

    def root_names(self, count: int) -> list[str]:
        """The subject CN of root 0 .. count-1 (chains lead to these issuers)."""
        names = []
        for index in range(count):
            cert = x509.load_pem_x509_certificate(self._get(f"/roots/{index}").content)
            value = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
            names.append(value if isinstance(value, str) else value.decode())
        return names

    def cert_status(self, serial_hex: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/cert-status-by-serial/{serial_hex}").json()
        return result


@contextmanager
def start_pebble(directory: Path, dns_server: str, *,
                 eab_keys: Mapping[str, str] | None = None,
                 alternate_roots: int = 0,
                 extra_env: Mapping[str, str] | None = None) -> Iterator[Pebble]:
    """Run pebble validating against *dns_server* (``ip:port``); stopped by pid afterwards.

    *extra_env* adds pebble settings such as ``PEBBLE_AUTHZREUSE``; never use it to
    switch validation off.
    """
    program = need_program("pebble", "pebble")
    directory.mkdir(parents=True, exist_ok=True)
    tls = write_tls_files(directory / "tls")
    port, management = free_port(), free_port()
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
    config = directory / "pebble-config.json"
    config.write_text(json.dumps({"pebble": settings}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1"}
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
        yield Pebble(f"https://127.0.0.1:{port}/dir", f"https://127.0.0.1:{management}",
                     tls.ca, server)
    finally:
        server.stop()
