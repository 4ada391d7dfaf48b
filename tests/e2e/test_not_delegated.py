"""A zone the public DNS does not know (a lab, a split horizon): the 502 says what to do.

Two real BIND servers: the primary of ``example.test``, which the gateway updates
(``PROVIDER=rfc2136``), and a stand-in for the public DNS that serves only the
top-level domain ``test`` and delegates nothing, so to it ``example.test`` does not
exist (``PROPAGATION_RESOLVERS`` points the gateway's discovery at it, as
``/etc/resolv.conf`` would at a public resolver). The gateway runs as a process
(``python -m gateway``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import make_value
from tests.gateway.procs import gateway_settings, running_gateway
from tests.servers.bind import BindServer, start_primary
from tests.system import free_port

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BindServer, BindServer]]:
    lab = start_primary(tmp_path_factory.mktemp("lab"))
    try:
        public = start_primary(tmp_path_factory.mktemp("public"), zones=("test",))
        try:
            yield lab, public
        finally:
            public.stop()
    finally:
        lab.stop()


def setup(tmp_path: Path, lab: BindServer, **settings: str) -> requests.Response:
    port = free_port()
    env = gateway_settings(tmp_path, port, **lab.rfc2136_settings(),
                           PROPAGATION_CHECK="authoritative", PROPAGATION_TIMEOUT="30", **settings)
    body = {"argument": "setup", "domain_name": "example.test", "challenge_content": make_value()}
    with running_gateway(tmp_path, env):
        return requests.post(f"http://127.0.0.1:{port}/", json=body, timeout=60)


def test_a_zone_public_dns_does_not_know_is_a_502_pointing_at_propagation_nameservers(
    servers: tuple[BindServer, BindServer], tmp_path: Path
) -> None:
    lab, public = servers
    answer = setup(tmp_path, lab, PROPAGATION_RESOLVERS=public.address)
    assert answer.status_code == 502, answer.text
    assert answer.json()["message"] == (
        "_acme-challenge.example.test: propagation check failed: no zone holds "
        "_acme-challenge.example.test: the resolvers asked know only the top-level domain "
        "test — if the zone is not delegated in public DNS (a lab, a split horizon), set "
        "PROPAGATION_NAMESERVERS to the servers that serve it"
    )

    # The fix it names works.
    answer = setup(tmp_path, lab, PROPAGATION_RESOLVERS=public.address,
                   PROPAGATION_NAMESERVERS=lab.address)
    assert answer.status_code == 201, answer.text
