"""What a user of a deployed gateway does, and how the tests look inside a deployment.

Setup and teardown through the native API with basic auth, the TXT values that
a DNS server serves (UDP or TCP), a password file made with ``lib.passwd``, and
small scripts run inside a container or a service's namespace.
"""

from __future__ import annotations

import datetime
import ipaddress
import subprocess
import sys
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.gateway.procs import REPO_ROOT
from tests.servers.authoritative import served_txt

DOMAIN = "example.com"
CHALLENGE = f"_acme-challenge.{DOMAIN}"

# Try to create a file in each folder given; print errno names (or "ok") as JSON.
WRITE_PROBE = """
import errno, json, os, sys
result = {}
for folder in sys.argv[1:]:
    path = os.path.join(folder, ".acmegw-write-probe")
    try:
        with open(path, "x") as f:
            f.write("x")
        os.unlink(path)
        result[folder] = "ok"
    except OSError as exc:
        result[folder] = errno.errorcode.get(exc.errno, str(exc.errno))
print(json.dumps(result))
"""


def write_passwd(path: Path, user: str, password: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lib.passwd", "-f", str(path), "-i", user],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def served(port: int, tcp: bool = False) -> set[str]:
    """The TXT values at the challenge name, as the DNS server on 127.0.0.1:*port* answers."""
    return served_txt(CHALLENGE, port, tcp=tcp)


def change(
    port: int, method: str, argument: str, value: str, auth: tuple[str, str] | None
) -> requests.Response:
    """One native API request to the gateway on 127.0.0.1:*port*."""
    return requests.request(
        method,
        f"http://127.0.0.1:{port}/",
        json={"argument": argument, "domain_name": DOMAIN, "challenge_content": value},
        auth=auth,
        timeout=30,
    )


def proc_status(text: str) -> dict[str, str]:
    """``/proc/<pid>/status`` as a dict."""
    return {
        key: value.strip()
        for key, _, value in (line.partition(":\t") for line in text.splitlines())
        if value
    }


def self_signed(ip: str, folder: Path) -> tuple[Path, Path]:
    """A certificate for *ip* that the test trusts directly."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ip)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
