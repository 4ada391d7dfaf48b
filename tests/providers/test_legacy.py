"""An original-gateway provider class, run through LegacyProvider, passes the contract.

The class is what a user of the original gateway may have written: a blocking
``acme_challenge(action, fqdn, token)`` that sends an RFC 2136 update with
dnspython, built as ``cls(DNSAPI_USERNAME, DNSAPI_PASSWORD)`` (here the TSIG key
name and secret). It updates a real BIND (tests/servers/bind.py), and ``served``
asks that server, so the contract sees what the adapter really got done.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import dns.query
import dns.rcode
import dns.rdata
import dns.tsig
import dns.update
import pytest

from lib.settings import Settings
from providers.base import Provider, ProviderContext
from providers.legacy import LegacyProvider
from tests.providers.contract import ProviderContract, Served
from tests.servers.bind import BindServer, bind_primary  # noqa: F401

pytestmark = pytest.mark.system


class NsUpdate:
    """An original-gateway class: one TXT value per call, through a TSIG-signed UPDATE."""

    server = "127.0.0.1"
    port = 53
    zones: tuple[str, ...] = ()

    def __init__(self, username: str, password: str) -> None:
        self.keyring = dns.tsig.Key(username, password, "hmac-sha256")

    def acme_challenge(self, action: str, fqdn: str, token: str) -> tuple[int, str]:
        zone = next(z for z in self.zones if fqdn == z or fqdn.endswith("." + z))
        update = dns.update.UpdateMessage(zone, keyring=self.keyring, keyname=self.keyring.name,
                                          keyalgorithm=self.keyring.algorithm)
        rdata = dns.rdata.from_text("IN", "TXT", f'"{token}"')
        if action == "setup":
            update.add(fqdn + ".", 60, rdata)
        else:
            update.delete(fqdn + ".", rdata)
        try:
            answer, _ = dns.query.udp_with_fallback(update, self.server, timeout=5, port=self.port)
        except dns.tsig.PeerError as exc:
            return 403, f"update refused: {exc}"
        if answer.rcode() != dns.rcode.NOERROR:
            return 500, f"update failed: {dns.rcode.to_text(answer.rcode())}"
        return 200, "ok"


def wrapped(server: BindServer, secret: str | None = None) -> Provider:
    klass = type("NsUpdate", (NsUpdate,), {"port": server.port, "zones": server.zones})
    settings = Settings({"DNSAPI_USERNAME": server.key.name,
                         "DNSAPI_PASSWORD": secret or server.key.secret})
    provider = LegacyProvider.wrap(klass, settings, ProviderContext(timeout=10))
    assert settings.problems == []
    assert provider is not None
    return provider


@pytest.fixture
def provider(bind_primary: BindServer) -> Iterator[Provider]:  # noqa: F811
    yield wrapped(bind_primary)


@pytest.fixture
def twin_provider(bind_primary: BindServer) -> Provider:  # noqa: F811
    return wrapped(bind_primary)


@pytest.fixture
def served(bind_primary: BindServer) -> Served:  # noqa: F811
    return bind_primary.query_txt


@pytest.fixture
def broken_provider(bind_primary: BindServer) -> Provider:  # noqa: F811
    raw = bytearray(base64.b64decode(bind_primary.key.secret))
    raw[0] ^= 0xFF
    return wrapped(bind_primary, base64.b64encode(bytes(raw)).decode())


class TestLegacyContract(ProviderContract):
    pass
