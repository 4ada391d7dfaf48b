"""What tests do with an authoritative DNS server they started, whatever its make.

:class:`Authoritative` is mixed into :class:`tests.servers.bind.BindServer` and
:class:`tests.servers.knot.KnotServer`; it needs their ``host``, ``port``, ``key``
(a :class:`tests.servers.bind.TsigKey`), ``process`` (a :class:`tests.system.Server`)
and ``_stopped`` fields.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

if TYPE_CHECKING:
    from tests.servers.bind import TsigKey
    from tests.system import Server


class Authoritative:
    host: str
    port: int
    key: TsigKey
    process: Server
    _stopped: bool

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``, the form lib.dnscheck takes and reports."""
        return f"{self.host}:{self.port}"

    def rfc2136_settings(self) -> dict[str, str]:
        """The gateway's ``PROVIDER=rfc2136`` settings that update this server with :attr:`key`."""
        return {
            "PROVIDER": "rfc2136",
            "RFC2136_SERVER": self.host,
            "RFC2136_PORT": str(self.port),
            "RFC2136_TSIG_KEY_NAME": self.key.name,
            "RFC2136_TSIG_SECRET": self.key.secret,
            "RFC2136_TSIG_ALGORITHM": self.key.algorithm,
        }

    def output(self) -> str:
        return self.process.output()

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.process.stop()

    def query(self, name: str, rdtype: str = "TXT", timeout: float = 2.0) -> dns.message.Message:
        """A non-recursive query straight to this server (UDP, TCP when truncated)."""
        q = dns.message.make_query(name, rdtype)
        q.flags &= ~dns.flags.RD
        response, _ = dns.query.udp_with_fallback(q, self.host, timeout=timeout, port=self.port)
        return response

    def txt(self, name: str) -> set[str]:
        """The TXT values this server serves at *name* right now."""
        return _txt_values(self.query(name, "TXT"))

    def serial(self, zone: str) -> int | None:
        """The SOA serial served for *zone*, or None while the zone is not loaded."""
        with contextlib.suppress(dns.exception.DNSException, OSError):
            response = self.query(zone, "SOA", timeout=1.0)
            if response.rcode() == dns.rcode.NOERROR and response.flags & dns.flags.AA:
                for rrset in response.answer:
                    if rrset.rdtype == dns.rdatatype.SOA:
                        return int(rrset[0].serial)
        return None

    async def query_txt(self, name: str) -> set[str]:
        """:meth:`txt` for async tests: what a resolver asking this server sees (UDP)."""
        q = dns.message.make_query(name, dns.rdatatype.TXT)
        q.flags &= ~dns.flags.RD
        return _txt_values(await dns.asyncquery.udp(q, self.host, timeout=2.0, port=self.port))


def _txt_values(response: dns.message.Message) -> set[str]:
    qname = response.question[0].name
    return {b"".join(r.strings).decode()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT and rrset.name == qname
            for r in rrset}
