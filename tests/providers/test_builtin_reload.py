"""SIGHUP and the builtin DNS server: its settings are applied in place, not ignored.

Issue 12 item 16. The builtin provider keeps its records and its sockets
itself, so a reload used to report every changed setting of it as needing a
restart (and a changed ``DNSAPI_DOMAINS``, which decides the names it serves,
not at all: "configuration reloaded", and the old names went on being served).
Now only ``BUILTIN_LISTEN`` waits for a restart; the rest reaches the running
DNS server process over its control socket. Each test runs a real gateway
configured from a dotenv file, as an administrator does, changes the file,
sends SIGHUP, and asks the server over DNS what it serves now.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import pytest
import requests

from lib.passwd import PasswordFile
from tests.conftest import make_value
from tests.gateway.procs import GatewayProcess, running_gateway
from tests.servers.bind import TsigKey, make_key
from tests.system import free_port

pytestmark = pytest.mark.system

PASSWORD = "reload-pw"
TIMEOUT = 10.0
ZONE = "acme.example.test"


class Rig:
    """A gateway with the builtin provider, its dotenv and its ports."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.dns_port = free_port(), free_port()
        self.dotenv = folder / ".env"
        PasswordFile(folder / "acmepasswd").set_user("alice", PASSWORD)

    def write(self, **settings: str) -> None:
        lines = {
            "LISTEN": f"127.0.0.1:{self.port}",
            "PROVIDER": "builtin",
            "BUILTIN_LISTEN": f"127.0.0.1:{self.dns_port}",
            "BUILTIN_NS": "ns1.example.test",
            "BUILTIN_RATE_LIMIT": "0",
            "DNSAPI_DOMAINS": "example.test",
            "BASIC_AUTH": "required",
            "PASSWD_FILE": "acmepasswd",
            "STATE_DIR": "state",
            "PROPAGATION_CHECK": "off",
            **settings,
        }
        self.dotenv.write_text("".join(f"{key}={value}\n" for key, value in lines.items()))
        self.dotenv.chmod(0o600)  # it may hold a TSIG secret

    def setup(self, name: str, value: str) -> requests.Response:
        return requests.post(f"http://127.0.0.1:{self.port}/", auth=("alice", PASSWORD),
                             timeout=30, json={"argument": "setup", "domain_name": name,
                                               "challenge_content": value})

    def ask(self, name: str, rdtype: str) -> dns.message.Message:
        """Over TCP, which rate limiting never touches."""
        return dns.query.tcp(dns.message.make_query(name, rdtype), "127.0.0.1",
                             port=self.dns_port, timeout=TIMEOUT)

    def truncated(self, queries: int = 30) -> int:
        """How many of *queries* UDP answers in a row came back truncated (rate limited)."""
        count = 0
        for _ in range(queries):
            query = dns.message.make_query("_acme-challenge.example.test", "SOA")
            reply = dns.query.udp(query, "127.0.0.1", port=self.dns_port, timeout=TIMEOUT,
                                  ignore_trailing=True)
            count += bool(reply.flags & dns.flags.TC)
        return count


def reload(gw: GatewayProcess) -> str:
    """Send SIGHUP; the line that reports the reload."""
    said = [line for line in gw.stderr.splitlines() if "reload" in line]
    gw.send(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while True:
        now = [line for line in gw.stderr.splitlines() if "reload" in line]
        if len(now) > len(said):
            return now[len(said)]
        assert time.monotonic() < deadline, gw.describe()
        time.sleep(0.05)


def txt(reply: dns.message.Message) -> tuple[int, list[str]]:
    rrset = reply.answer[0]
    return int(rrset.ttl), sorted(b"".join(r.strings).decode() for r in rrset)


def test_ttl_ns_and_rate_limits_are_applied_in_place(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.write(BUILTIN_TTL="60")
    with running_gateway(tmp_path, {}, args=["-e", str(rig.dotenv)]) as gw:
        value = make_value()
        assert rig.setup("example.test", value).status_code == 201
        assert txt(rig.ask("_acme-challenge.example.test", "TXT")) == (60, [value])
        serial = rig.ask("_acme-challenge.example.test", "SOA").answer[0][0].serial
        assert rig.truncated() == 0

        rig.write(BUILTIN_TTL="120", BUILTIN_NS="ns2.example.test", BUILTIN_RATE_LIMIT="1",
                  BUILTIN_RATE_LIMIT_SLIP="1")
        line = reload(gw)
        assert line.endswith("configuration reloaded"), line
        assert ("builtin DNS: new BUILTIN_NS, BUILTIN_TTL, BUILTIN_RATE_LIMIT, "
                "BUILTIN_RATE_LIMIT_SLIP in force") in gw.stderr
        # The same server process, with its records, under the new settings.
        assert txt(rig.ask("_acme-challenge.example.test", "TXT")) == (120, [value])
        ns = rig.ask("_acme-challenge.example.test", "NS").answer[0]
        assert [r.target.to_text() for r in ns] == ["ns2.example.test."]
        soa = rig.ask("_acme-challenge.example.test", "SOA").answer[0][0]
        assert soa.mname.to_text() == "ns2.example.test."
        assert soa.serial > serial  # what the zone holds changed: secondaries must see it
        assert rig.truncated() > 0
        assert gw.stderr.count("builtin DNS: listening on") == 1
    assert "Traceback" not in gw.stderr, gw.stderr[-3000:]


def test_a_changed_dnsapi_domains_changes_the_names_served(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.write(DNSAPI_DOMAINS="example.test")
    with running_gateway(tmp_path, {}, args=["-e", str(rig.dotenv)]) as gw:
        assert rig.setup("example.test", make_value()).status_code == 201
        assert rig.ask("_acme-challenge.example.org", "SOA").rcode() == dns.rcode.REFUSED

        rig.write(DNSAPI_DOMAINS="example.org")
        line = reload(gw)
        reply = rig.ask("_acme-challenge.example.org", "SOA")
        assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
        value = make_value()
        answer = rig.setup("example.org", value)
        assert answer.status_code == 201, answer.text
        assert txt(rig.ask("_acme-challenge.example.org", "TXT"))[1] == [value]
        # A domain no longer managed is no longer served either.
        assert rig.ask("_acme-challenge.example.test", "TXT").rcode() == dns.rcode.REFUSED
        assert line.endswith("configuration reloaded"), line
        assert "builtin DNS: new DNSAPI_DOMAINS in force" in gw.stderr


def _transfer(port: int, key: TsigKey) -> dns.message.Message:
    """An AXFR signed with *key*; the answer unchecked (a refusal is not signed)."""
    query = dns.message.make_query(ZONE, dns.rdatatype.AXFR)
    query.use_tsig(key.dns_key())
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        dns.query.send_tcp(sock, query)
        reply, _ = dns.query.receive_tcp(sock, time.time() + TIMEOUT, keyring=False)
    return reply


def test_a_rotated_tsig_key_and_new_secondaries_are_in_force(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    old, new = make_key(name="gw-transfer."), make_key(name="gw-transfer.")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as secondary:
        secondary.bind(("127.0.0.1", 0))
        secondary.settimeout(TIMEOUT)
        rig.write(BUILTIN_ZONE=ZONE, BUILTIN_SECONDARIES=f"127.0.0.1:{free_port()}",
                  BUILTIN_TSIG_KEY_NAME=old.name, BUILTIN_TSIG_SECRET=old.secret)
        with running_gateway(tmp_path, {}, args=["-e", str(rig.dotenv)]) as gw:
            assert _transfer(rig.dns_port, old).rcode() == dns.rcode.NOERROR

            rig.write(BUILTIN_ZONE=ZONE,
                      BUILTIN_SECONDARIES=f"127.0.0.1:{secondary.getsockname()[1]}",
                      BUILTIN_TSIG_KEY_NAME=new.name, BUILTIN_TSIG_SECRET=new.secret)
            line = reload(gw)
            assert line.endswith("configuration reloaded"), line
            assert "builtin DNS: new BUILTIN_SECONDARIES, BUILTIN_TSIG_* in force" in gw.stderr
            assert _transfer(rig.dns_port, old).rcode() == dns.rcode.NOTAUTH
            # Signed with the new key, and checked with it.
            query = dns.message.make_query(ZONE, dns.rdatatype.AXFR)
            query.use_tsig(new.dns_key())
            reply = dns.query.tcp(query, "127.0.0.1", port=rig.dns_port, timeout=TIMEOUT)
            assert reply.rcode() == dns.rcode.NOERROR and reply.answer
            # The new secondary is told, with the new key.
            data, _ = secondary.recvfrom(4096)
            notify = dns.message.from_wire(data, keyring=new.dns_key())
            assert notify.opcode() == dns.opcode.NOTIFY
            assert notify.question[0].name.to_text() == ZONE + "."
