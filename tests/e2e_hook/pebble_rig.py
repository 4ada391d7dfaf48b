"""pebble, the ACME test CA, validating dns-01 for real against a test DNS server.

:func:`start_pebble` runs Debian's ``pebble`` on loopback ports with
``-dnsserver 127.0.0.1:<port>`` and a clean environment: no
``PEBBLE_VA_ALWAYS_VALID``, so every dns-01 value is really looked up;
``PEBBLE_VA_NOSLEEP=1`` skips its artificial validation delay and
``PEBBLE_WFE_NONCEREJECT=0`` its random bad-nonce answers (both only slow tests
down). Debian ships pebble without its test certificate, so its HTTPS uses a CA
made by :mod:`tests.e2e_hook.certs`; :attr:`Pebble.ca_file` is what ACME clients
must trust. :meth:`Pebble.issuer_roots` fetches the root that signs the
certificates pebble issues (new at every start) from its management port.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.e2e_hook.certs import make_tls_files
from tests.system import Server, free_port, need_program, wait_for_port


@dataclass
class Pebble:
    url: str
    management_url: str
    ca_file: Path
    server: Server

    def issuer_roots(self, timeout: float = 10.0) -> str:
        """PEM of the root pebble signs issued certificates with."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
        with opener.open(f"{self.management_url}/roots/0", timeout=timeout) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        self.server.stop()


def start_pebble(directory: Path, dns_port: int) -> Pebble:
    """Start pebble in *directory*; returns once it listens. The caller stops it."""
    program = need_program("pebble", "pebble")
    directory.mkdir(parents=True, exist_ok=True)
    tls = make_tls_files(directory / "tls", ca_name="pebble HTTPS test CA")
    port, management = free_port(), free_port()
    config = directory / "pebble-config.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{port}",
        "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(tls.cert),
        "privateKey": str(tls.key),
        # Unused (dns-01 only) but must not clash with anything.
        "httpPort": free_port(),
        "tlsPort": free_port(),
        "ocspResponderURL": "",
        "externalAccountBindingRequired": False,
    }}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PEBBLE_VA_NOSLEEP": "1",
           "PEBBLE_WFE_NONCEREJECT": "0"}
    server = Server([program, "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
                    directory / "pebble.log", env=env, cwd=directory)
    try:
        wait_for_port(port, timeout=15, proc=server.proc)
        wait_for_port(management, timeout=15, proc=server.proc)
    except BaseException:
        server.stop()
        raise
    return Pebble(f"https://127.0.0.1:{port}/dir", f"https://127.0.0.1:{management}",
                  tls.ca, server)
