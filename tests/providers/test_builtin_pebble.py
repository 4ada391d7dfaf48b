"""A real ACME CA validates dns-01 against the builtin DNS server, with no other DNS involved.

pebble (the Let's Encrypt test CA, Debian ``pebble``) runs with
``-dnsserver 127.0.0.1:<builtin port>`` and *without* ``PEBBLE_VA_ALWAYS_VALID``,
so it really looks the TXT values up. The real ``lego`` (Debian ``lego``) drives
the ACME side through its ``exec`` DNS provider: lego runs a small script that
POSTs each value to an aiohttp server inside this test process, which calls
the provider's add_txt/remove_txt (the gateway will take that place later).

lego runs with ``--dns.disable-cp``: its own propagation check would look the
zone's NS hostnames up in the system DNS and query them on port 53, which
exists nowhere here. pebble's lookup is the check that matters.

Debian ships pebble without its test certificate, so the test makes a CA and
a certificate for 127.0.0.1 with ``cryptography``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from providers.base import ProviderError
from providers.builtin import BuiltinProvider, BuiltinSettings
from tests.system import Server, free_port, need_program, wait_for_port

pytestmark = pytest.mark.system

LEGO_TIMEOUT = 45.0


def _write_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1/localhost: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acmegw test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@dataclass
class Pebble:
    url: str
    ca_file: Path
    server: Server


@pytest.fixture
def pebble(tmp_path: Path, dns_port: int) -> Iterator[Pebble]:
    program = need_program("pebble", "pebble")
    ca_file, cert_file, key_file = _write_tls_files(tmp_path)
    port = free_port()
    config = tmp_path / "pebble-config.json"
    config.write_text(
        json.dumps(
            {
                "pebble": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "managementListenAddress": f"127.0.0.1:{free_port()}",
                    "certificate": str(cert_file),
                    "privateKey": str(key_file),
                    # Unused (dns-01 only) but must not clash with anything.
                    "httpPort": free_port(),
                    "tlsPort": free_port(),
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": False,
                }
            }
        )
    )
    # A clean environment: above all no PEBBLE_VA_ALWAYS_VALID.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
    }
    server = Server(
        [program, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
        tmp_path / "pebble.log",
        env=env,
        cwd=tmp_path,
    )
    try:
        wait_for_port(port, timeout=15, proc=server.proc)
        yield Pebble(f"https://127.0.0.1:{port}/dir", ca_file, server)
    finally:
        server.stop()


@pytest.fixture
def dns_port() -> int:
    return free_port()


@pytest.fixture
async def provider(dns_port: int) -> AsyncIterator[BuiltinProvider]:
    p = BuiltinProvider(
        BuiltinSettings(listen=(("127.0.0.1", dns_port),), nameservers=("gw.example.net",)),
        ("example.test",),
    )
    await p.open()
    try:
        yield p
    finally:
        await p.aclose()


@dataclass
class HookServer:
    """Stands in for the gateway: lego's exec script POSTs here."""

    provider: BuiltinProvider
    publish: bool = True
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        action = request.match_info["action"]
        body = await request.json()
        fqdn = str(body["fqdn"]).rstrip(".").lower()
        value = str(body["value"])
        self.calls.append((action, fqdn, value))
        try:
            if action == "present" and self.publish:
                await self.provider.add_txt(fqdn, value)
            elif action == "cleanup":
                await self.provider.remove_txt(fqdn, value)
        except ProviderError as exc:
            return web.Response(status=502, text=str(exc))
        return web.Response(text="ok")


@pytest.fixture
async def hook(provider: BuiltinProvider) -> AsyncIterator[tuple[HookServer, str]]:
    state = HookServer(provider)
    app = web.Application()
    app.router.add_post("/{action:present|cleanup}", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield state, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _exec_script(directory: Path, url: str) -> Path:
    script = directory / "lego-exec"
    script.write_text(f"""#!{sys.executable}
import json, sys, urllib.request
action, fqdn, value = sys.argv[1:4]
request = urllib.request.Request(
    {url!r} + "/" + action, method="POST",
    data=json.dumps({{"fqdn": fqdn, "value": value}}).encode(),
    headers={{"Content-Type": "application/json"}},
)
# No proxy from the environment: the hook server is on loopback.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
with opener.open(request, timeout=10) as response:
    sys.exit(0 if response.status == 200 else 1)
""")
    script.chmod(0o755)
    return script


async def _run_lego(
    tmp_path: Path,
    pebble: Pebble,
    dns_port: int,
    hook_url: str,
    domains: tuple[str, ...] = ("example.test", "*.example.test"),
) -> tuple[int, str, Path]:
    lego = need_program("lego", "lego")
    path = tmp_path / "lego"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LEGO_CA_CERTIFICATES": str(pebble.ca_file),
        "EXEC_PATH": str(_exec_script(tmp_path, hook_url)),
        "EXEC_POLLING_INTERVAL": "1",
        "EXEC_PROPAGATION_TIMEOUT": "20",
        "EXEC_SEQUENCE_INTERVAL": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        lego,
        "--server",
        pebble.url,
        "--accept-tos",
        "--email",
        "t@example.test",
        *(arg for domain in domains for arg in ("--domains", domain)),
        "--dns",
        "exec",
        "--dns.resolvers",
        f"127.0.0.1:{dns_port}",
        "--dns.disable-cp",
        "--http-timeout",
        "10",
        "--path",
        str(path),
        "run",
        env=env,
        cwd=tmp_path,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), LEGO_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    print(out.decode(errors="replace"))  # shown when the test fails
    return proc.returncode, out.decode(errors="replace"), path


async def test_pebble_validates_values_served_by_builtin(
    tmp_path: Path,
    pebble: Pebble,
    dns_port: int,
    provider: BuiltinProvider,
    hook: tuple[HookServer, str],
) -> None:
    state, url = hook
    status, output, path = await _run_lego(tmp_path, pebble, dns_port, url)
    assert status == 0, f"lego failed:\n{output}\npebble:\n{pebble.server.output()}"
    chain = x509.load_pem_x509_certificates(
        (path / "certificates" / "example.test.crt").read_bytes()
    )
    sans = chain[0].extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert set(sans.value.get_values_for_type(x509.DNSName)) == {"example.test", "*.example.test"}
    presented = {
        v
        for action, fqdn, v in state.calls
        if action == "present" and fqdn == "_acme-challenge.example.test"
    }
    assert len(presented) == 2, state.calls  # one value per authorization
    cleaned = {v for action, _, v in state.calls if action == "cleanup"}
    assert cleaned == presented
    assert provider.records == {}


async def test_pebble_refuses_when_the_value_is_not_served(
    tmp_path: Path,
    pebble: Pebble,
    dns_port: int,
    provider: BuiltinProvider,
    hook: tuple[HookServer, str],
) -> None:
    # The hook acknowledges without publishing: the CA must notice.
    state, url = hook
    state.publish = False
    status, output, path = await _run_lego(tmp_path, pebble, dns_port, url, ("example.test",))
    assert status != 0, output
    assert "urn:ietf:params:acme:error:unauthorized" in output, output
    assert not (path / "certificates" / "example.test.crt").exists()
    assert any(action == "present" for action, _, _ in state.calls)
