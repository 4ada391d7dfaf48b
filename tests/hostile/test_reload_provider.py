"""SIGHUP with changed provider settings: applied, or named as needing a restart.

Issue 12 item 16: a reload that changes a provider's settings (a rotated TSIG
secret or API token, a new ``BUILTIN_LISTEN``) logged "configuration reloaded"
and went on with the old ones. Against a real gateway with the builtin DNS
server, configured from a dotenv file as an admin does: after the reload
either the new settings are in force (the new address answers DNS queries),
or the log says which settings wait for a restart, naming them and no other,
and the old address still serves, with the rest of the new settings.
"""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

from tests.gateway.procs import builtin_settings, running_gateway, write_dotenv_file
from tests.system import free_port


def write_dotenv(folder: Path, port: int, dns_port: int, ttl: int) -> Path:
    settings = builtin_settings(folder, port, dns_port, BUILTIN_NS="ns.example.test",
                                BUILTIN_TTL=str(ttl))
    return write_dotenv_file(folder / ".env", settings)


def soa_ttl(dns_port: int) -> int | None:
    """The TTL of the SOA the server at *dns_port* answers with, None if none answers."""
    query = dns.message.make_query("_acme-challenge.example.test", "SOA")
    try:
        reply = dns.query.udp(query, "127.0.0.1", port=dns_port, timeout=2)
    except (dns.exception.Timeout, OSError):
        return None
    if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
        return None
    return int(reply.answer[0].ttl)


def answers(dns_port: int) -> bool:
    return soa_ttl(dns_port) is not None


def test_changed_provider_settings_are_applied_or_named(tmp_path: Path) -> None:
    port, old_dns, new_dns = free_port(), free_port(), free_port()
    dotenv = write_dotenv(tmp_path, port, old_dns, 60)
    with running_gateway(tmp_path, {}, args=["-e", str(dotenv)]) as gw:
        assert answers(old_dns)
        write_dotenv(tmp_path, port, new_dns, 120)
        gw.reload()
        said = [line for line in gw.stderr.splitlines() if "reload" in line]
        if answers(new_dns):
            return  # applied
        restart = [line for line in said if "restart to apply" in line]
        assert restart, f"the reload said: {said}"
        named = restart[0].upper().replace(" ", "_")  # "builtin listen" names it too
        assert "BUILTIN_LISTEN" in named, restart
        # What is named waits; the rest is in force on the old address.
        assert "BUILTIN_TTL" not in named, restart
        assert soa_ttl(old_dns) == 120, "the new BUILTIN_TTL is neither applied nor named"
