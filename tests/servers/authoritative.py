"""What tests do with an authoritative DNS server they started, whatever its make.

:class:`Authoritative` is mixed into :class:`tests.servers.bind.BindServer` and
:class:`tests.servers.knot.KnotServer`; it needs their ``host``, ``port``, ``key``
(a :class:`tests.servers.bind.TsigKey`), ``process`` (a :class:`tests.system.Server`)
and ``_stopped`` fields. :func:`served_txt` asks any server on a known port, such
as a gateway's builtin DNS server.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype

from tests.system import wait_for_port

if TYPE_CHECKING:
    from tests.servers.bind import TsigKey
    from tests.system import Server


class Authoritative:
    host: str
    port: int
    zones: tuple[str, ...]
    key: TsigKey
    process: Server
    _stopped: bool

    @property
    def title(self) -> str:
        """What error messages call this server."""
        return type(self).__name__

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

    def wait_for_serials(self, wanted: Mapping[str, int | None], timeout: float = 10.0) -> None:
        """Until every zone in *wanted* is served, with that serial where one is given."""
        deadline = time.monotonic() + timeout
        while True:
            now = {zone: self.serial(zone) for zone in wanted}
            if all(now[z] is not None and (wanted[z] is None or now[z] == wanted[z])
                   for z in wanted):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.title} serves serials {now}, wanted {dict(wanted)}\n"
                                   + self.output()[-3000:])
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 20.0,
                   wanted: Mapping[str, int | None] | None = None) -> None:
        """Until it listens and serves every zone (*wanted* serials, if given); a server
        that does not get there is stopped, and its log is in the error."""
        try:
            wait_for_port(self.port, self.host, timeout, proc=self.process.proc)
            self.wait_for_serials(wanted or dict.fromkeys(self.zones), timeout)
        except BaseException as exc:
            log = self.output()
            self.stop()
            raise RuntimeError(f"{self.title} did not start: {exc}\n{log[-3000:]}") from exc

    async def query_txt(self, name: str) -> set[str]:
        """:meth:`txt` for async tests: what a resolver asking this server sees (UDP)."""
        q = dns.message.make_query(name, dns.rdatatype.TXT)
        q.flags &= ~dns.flags.RD
        return _txt_values(await dns.asyncquery.udp(q, self.host, timeout=2.0, port=self.port))


def served_txt(name: str, port: int, host: str = "127.0.0.1", tcp: bool = False) -> set[str]:
    """The TXT values the DNS server on *host*:*port* serves at *name* (over UDP, or TCP)."""
    query = dns.message.make_query(name, dns.rdatatype.TXT)
    ask = dns.query.tcp if tcp else dns.query.udp
    return _txt_values(ask(query, host, port=port, timeout=5))


def _txt_values(response: dns.message.Message) -> set[str]:
    qname = response.question[0].name
    return {b"".join(r.strings).decode()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT and rrset.name == qname
            for r in rrset}
