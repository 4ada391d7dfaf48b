"""A loopback DNS world for the acme-dns tests: BIND as the CA's resolver.

acme-dns users CNAME ``_acme-challenge.<their name>`` to
``<subdomain>.<acme-dns zone>``, and a CA's resolver follows that CNAME into the
zone the acme-dns server (here: the gateway's builtin DNS) serves. This rig
builds that chain with a real BIND 9, all on 127.0.0.1:

* BIND is a **recursive resolver** for 127.0.0.1 (``recursion yes;
  allow-recursion { 127.0.0.1; }; dnssec-validation no;``), as the CA's
  resolver is;
* it is **authoritative for** ``example.test``, which holds
  ``_acme-challenge.example.test. CNAME <subdomain>.<acme zone>.`` and delegates
  the acme zone (``NS`` plus glue), as a user's zone does;
* the delegated zone is a ``forward only`` zone to the builtin DNS's port:
  a delegation can name no port, and the builtin DNS does not listen on 53;
* it is **authoritative for the root zone** too, so a name outside these
  zones ends in NXDOMAIN here instead of a query to the Internet's root
  servers; ``query-source 127.0.0.1`` and ``named -4`` make sure no query could
  leave the machine even so.

:func:`start_resolver` returns once BIND answers for ``example.test``; the
caller stops it (:meth:`Resolver.stop`) in a ``finally``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from tests.system import Server, free_port, need_program, wait_for_port

HOST = "127.0.0.1"
ZONE = "example.test"


@dataclass
class Resolver:
    """The running resolving ``named``: its port, and how to ask it and stop it."""

    port: int
    directory: Path
    process: Server

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def output(self) -> str:
        return self.process.output()

    def stop(self) -> None:
        self.process.stop()

    def resolve(self, name: str, rdtype: str = "TXT", timeout: float = 5.0) -> dns.message.Message:
        """A recursive query (RD set), as a CA's validation sends it."""
        query = dns.message.make_query(name, rdtype)
        response, _ = dns.query.udp_with_fallback(query, HOST, timeout=timeout, port=self.port)
        return response

    def txt(self, name: str) -> set[str]:
        """The TXT values the resolver finds at *name*, following CNAMEs."""
        values: set[str] = set()
        for rrset in self.resolve(name).answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                values.update(b"".join(r.strings).decode() for r in rrset)
        return values


def _config(directory: Path, port: int, acme_zone: str, forward_port: int) -> str:
    d = str(directory)
    return f"""options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ {HOST}; }};
    listen-on-v6 {{ none; }};
    query-source address {HOST};
    recursion yes;
    allow-recursion {{ {HOST}; }};
    allow-query {{ {HOST}; }};
    dnssec-validation no;
    notify no;
}};
zone "." {{ type primary; file "root.zone"; }};
zone "{ZONE}" {{ type primary; file "{ZONE}.zone"; }};
zone "{acme_zone}" {{ type forward; forward only; forwarders {{ {HOST} port {forward_port}; }}; }};
"""


def _zone_files(directory: Path, acme_zone: str, cname_target: str) -> None:
    (directory / "root.zone").write_text(
        "$TTL 60\n"
        ". IN SOA localhost. hostmaster.localhost. 1 3600 600 86400 60\n"
        ". IN NS localhost.\n"
        f"localhost. IN A {HOST}\n"
    )
    relative_acme = acme_zone.removesuffix("." + ZONE)
    (directory / f"{ZONE}.zone").write_text(
        "$TTL 60\n"
        f"@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60\n"
        f"@ IN NS ns1.{ZONE}.\n"
        f"@ IN A {HOST}\n"
        f"ns1 IN A {HOST}\n"
        # The delegation of the acme-dns zone to the gateway, with glue.
        f"{relative_acme} IN NS ns.{acme_zone}.\n"
        f"ns.{relative_acme} IN A {HOST}\n"
        f"_acme-challenge IN CNAME {cname_target}.\n"
    )


def start_resolver(
    directory: Path, *, acme_zone: str, forward_port: int, cname_target: str
) -> Resolver:
    """Start the resolving BIND in *directory*; *acme_zone* must lie under example.test.

    ``_acme-challenge.example.test`` is a CNAME to *cname_target*, and queries
    under *acme_zone* go to 127.0.0.1:*forward_port*.
    """
    if not acme_zone.endswith("." + ZONE):
        raise ValueError(f"{acme_zone} is not under {ZONE}")
    named = need_program("named", "bind9")
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    _zone_files(directory, acme_zone, cname_target)
    conf = directory / "named.conf"
    conf.write_text(_config(directory, port, acme_zone, forward_port))
    # -4: no IPv6 transport at all; -g: foreground, log to stderr (kept in named.log).
    process = Server([named, "-4", "-g", "-c", str(conf)], directory / "named.log", cwd=directory)
    resolver = Resolver(port, directory, process)
    try:
        wait_for_port(port, HOST, 20, proc=process.proc)
        _wait_authoritative(resolver, 20)
    except BaseException as exc:
        log = resolver.output()
        resolver.stop()
        raise RuntimeError(f"resolver named did not start: {exc}\n{log[-3000:]}") from exc
    return resolver


def _wait_authoritative(resolver: Resolver, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = resolver.resolve(ZONE, "SOA", timeout=1.0)
            if response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA:
                return
        except (dns.exception.DNSException, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ZONE} not served after {timeout}s")
        time.sleep(0.05)
