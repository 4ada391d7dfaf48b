"""``make run``: the gateway on loopback with a demo user, ready to try with curl.

Creates ``run/`` in the working directory (a password file with user ``demo``
and a fresh random password, and the journal), prints a curl command that
works, then runs the server in the foreground until Ctrl-C. Nothing here is
for production: see README.md for a real configuration.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.server import main as server_main
from lib.passwd import PasswordFile

DEMO_USER = "demo"
DEMO_DOMAIN = "example.test"


def main(argv: Sequence[str] | None = None) -> int:
    port = os.environ.get("DEMO_PORT", "8000")
    dns = f"127.0.0.1:{os.environ.get('DEMO_DNS_PORT', '8053')}"
    run = Path("run")
    run.mkdir(mode=0o700, exist_ok=True)
    password = secrets.token_urlsafe(18)
    PasswordFile(run / "acmepasswd").set_user(DEMO_USER, password)
    value = secrets.token_urlsafe(32)[:43]
    env = {
        "LISTEN": f"127.0.0.1:{port}",
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": dns,
        "BUILTIN_NS": "ns.gateway.invalid",
        # Everything here talks over loopback: dig as often as you like.
        "BUILTIN_RATE_LIMIT_EXEMPT": "127.0.0.0/8",
        # Setup answers once the builtin server serves the value: the real check, on loopback.
        "PROPAGATION_NAMESERVERS": dns,
        "DNSAPI_DOMAINS": DEMO_DOMAIN,
        "BASIC_AUTH": "sufficient",
        "PASSWD_FILE": str(run / "acmepasswd"),
        "STATE_DIR": str(run / "state"),
    }
    os.environ.update(env)
    url = f"http://127.0.0.1:{port}/"
    body = f'{{"argument":"setup","domain_name":"{DEMO_DOMAIN}","challenge_content":"{value}"}}'
    print(
        f"""
acme-dns01-gateway demo: builtin DNS on {dns}, managed domain {DEMO_DOMAIN}
user {DEMO_USER!r}, password {password!r} (stored hashed in {run / "acmepasswd"})

Try it from another terminal:

  curl -sS -u '{DEMO_USER}:{password}' -X POST {url} \\
       -d '{body}'

  (201 {{"fqdn": "_acme-challenge.{DEMO_DOMAIN}", ...}}; the same with "teardown" removes it)

and see the record served by the gateway's own DNS server:

  dig @{dns.split(":")[0]} -p {dns.split(":")[1]} TXT _acme-challenge.{DEMO_DOMAIN} +short

Stop with Ctrl-C.
""",
        flush=True,
    )
    return server_main(list(argv) if argv is not None else [])


if __name__ == "__main__":
    sys.exit(main())
