"""``acmegw-server --check-delegation NAME`` against a real BIND standing in for the public DNS.

One BIND (tests/servers/bind.py) serves ``example.test`` and ``example.org`` and is
what the checker takes for the public DNS (``PROPAGATION_RESOLVERS``). It holds:

* ``_acme-challenge.alias.example.test CNAME _acme-challenge.www.example.org``;
* ``_acme-challenge.d.example.test NS gw.example.test`` with ``gw`` at 127.0.0.2, where
  the builtin DNS server of the configuration under test listens (same port as BIND);
* ``_acme-challenge.bad.example.test NS other.example.test`` (127.0.0.3: nobody).

``PROVIDER=rfc2136`` writes the probe into that BIND with its TSIG key, as the
gateway would. Most cases run the check in-process (``gateway.delegation.run``) so
that discovered nameservers are asked on BIND's port; the command line itself (exit
statuses 0, 1, 2) runs as ``python -m gateway --check-delegation`` with
``PROPAGATION_NAMESERVERS`` naming BIND's address and port.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.delegation import PROBE_OWNER, run
from gateway.server import prepare
from tests.gateway.procs import run_gateway
from tests.servers.bind import BindServer, start_primary
from tests.system import free_port

pytestmark = pytest.mark.system

GW = "127.0.0.2"  # the builtin server's address, delegated to by BIND

RECORDS = {
    "example.test": [
        "_acme-challenge.d IN NS gw.example.test.",
        f"gw IN A {GW}",
        "_acme-challenge.bad IN NS other.example.test.",
        "other IN A 127.0.0.3",
    ]
}


@pytest.fixture(scope="module")
def bind(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    # The builtin servers under test listen at GW on BIND's port number.
    server = start_primary(tmp_path_factory.mktemp("public-dns"), records=RECORDS,
                           port=free_port(also=[GW]))
    try:
        yield server
    finally:
        server.stop()


def settings(bind: BindServer, tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "DNSAPI_DOMAINS": "example.test, example.org",
        "ALLOWED_HOSTS": "127.0.0.1",
        "STATE_DIR": str(tmp_path / "state"),
        "PROPAGATION_RESOLVERS": bind.address,
        "PROPAGATION_TIMEOUT": "10",
        **more,
    }


def rfc2136(bind: BindServer, tmp_path: Path, **more: str) -> dict[str, str]:
    return settings(bind, tmp_path, **bind.rfc2136_settings(), **more)


def builtin(bind: BindServer, tmp_path: Path, **more: str) -> dict[str, str]:
    return settings(bind, tmp_path, PROVIDER="builtin", BUILTIN_LISTEN=f"{GW}:{bind.port}",
                    BUILTIN_NS="gw.example.test", **more)


async def check(name: str, env: dict[str, str], bind: BindServer) -> tuple[int, list[str]]:
    config, provider, _, _ = prepare(["--check-delegation", name], env)
    lines: list[str] = []
    status = await run(name, config, provider, lines.append, port=bind.port)
    return status, lines


def wrong(lines: list[str]) -> list[tuple[str, str]]:
    """Each WRONG finding with its fix."""
    return [(line.strip().removeprefix("WRONG").strip(),
             lines[i + 1].strip().removeprefix("fix:").strip())
            for i, line in enumerate(lines) if line.startswith("  WRONG")]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env or acmepasswd of the checkout


# --- a CNAME, written by rfc2136 --------------------------------------------------------


async def test_a_right_cname_and_a_probe_every_server_serves(
    bind: BindServer, tmp_path: Path
) -> None:
    env = rfc2136(bind, tmp_path, DELEGATIONS="alias.example.test=_acme-challenge.www.example.org")
    status, lines = await check("alias.example.test", env, bind)
    assert status == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert ("ok     _acme-challenge.alias.example.test is a CNAME to "
            "_acme-challenge.www.example.org, as DELEGATIONS says") in text
    assert "_acme-challenge.www.example.org is in zone example.org, served by " \
        "ns1.example.test, ns2.example.test" in text
    assert (f"ok     rfc2136 wrote a probe value at _acme-challenge.www.example.org; "
            f"served by {bind.address}") in text
    assert "ok     the probe value is removed" in text
    assert lines[-1] == "right: the CA will find the values this gateway writes"
    assert bind.txt("_acme-challenge.www.example.org") == set()  # nothing left behind
    assert not any(PROBE_OWNER in line for line in lines)


async def test_a_cname_to_the_wrong_place_says_what_to_change(
    bind: BindServer, tmp_path: Path
) -> None:
    env = rfc2136(bind, tmp_path, DELEGATIONS="alias.example.test=_acme-challenge.sub.example.org")
    status, lines = await check("alias.example.test", env, bind)
    assert status == 1, "\n".join(lines)
    assert wrong(lines) == [(
        "_acme-challenge.alias.example.test is a CNAME to _acme-challenge.www.example.org, "
        "but DELEGATIONS says _acme-challenge.sub.example.org",
        "change it to `_acme-challenge.alias.example.test. CNAME "
        "_acme-challenge.sub.example.org.` (or DELEGATIONS to "
        "alias.example.test=_acme-challenge.www.example.org)",
    )]
    assert lines[-1] == "wrong: 1 thing(s) to change, above"


async def test_a_missing_cname_says_which_record_to_add(bind: BindServer, tmp_path: Path) -> None:
    env = rfc2136(bind, tmp_path, DELEGATIONS="www.example.test=_acme-challenge.www.example.org")
    status, lines = await check("www.example.test", env, bind)
    assert status == 1, "\n".join(lines)
    assert wrong(lines) == [(
        "_acme-challenge.www.example.test is not a CNAME, but DELEGATIONS sends its values to "
        "_acme-challenge.www.example.org",
        "add `_acme-challenge.www.example.test. CNAME _acme-challenge.www.example.org.`",
    )]


async def test_a_cname_the_configuration_does_not_know(bind: BindServer, tmp_path: Path) -> None:
    status, lines = await check("alias.example.test", rfc2136(bind, tmp_path), bind)
    assert status == 1, "\n".join(lines)
    assert wrong(lines)[0] == (
        "_acme-challenge.alias.example.test is a CNAME to _acme-challenge.www.example.org, "
        "but the gateway writes _acme-challenge.alias.example.test itself (DELEGATIONS names "
        "no target for alias.example.test)",
        "set DELEGATIONS=alias.example.test=_acme-challenge.www.example.org if the gateway may "
        "write _acme-challenge.www.example.org, or remove the CNAME",
    )


async def test_a_name_in_the_zone_itself(bind: BindServer, tmp_path: Path) -> None:
    status, lines = await check("*.www.example.test", rfc2136(bind, tmp_path), bind)
    assert status == 0, "\n".join(lines)
    assert "  ok     _acme-challenge.www.example.test is not a CNAME: the gateway writes it " \
        "itself" in lines


async def test_a_name_the_provider_may_not_write(bind: BindServer, tmp_path: Path) -> None:
    # BIND's update policy lets the key write a few _acme-challenge names only.
    status, lines = await check("other.example.test", rfc2136(bind, tmp_path), bind)
    assert status == 1, "\n".join(lines)
    ((finding, _),) = wrong(lines)
    assert finding.startswith("rfc2136 cannot write _acme-challenge.other.example.test: rfc2136:")
    assert "refused" in finding


# --- an NS delegation to the builtin server -----------------------------------------------


async def test_a_right_ns_delegation_to_the_builtin_server(
    bind: BindServer, tmp_path: Path
) -> None:
    status, lines = await check("d.example.test", builtin(bind, tmp_path), bind)
    assert status == 0, "\n".join(lines)
    text = "\n".join(lines)
    assert ("ok     _acme-challenge.d.example.test is delegated to gw.example.test "
            "(BUILTIN_NS): the gateway's own DNS server") in text
    assert f"ok     builtin wrote a probe value at _acme-challenge.d.example.test; served by " \
        f"{GW}:{bind.port}" in text


async def test_with_the_gateway_running_its_servers_are_asked_instead(
    bind: BindServer, tmp_path: Path
) -> None:
    env = builtin(bind, tmp_path)
    _, running, _, _ = prepare([], env)  # the gateway's own builtin server holds the port
    await running.open()
    try:
        status, lines = await check("d.example.test", env, bind)
    finally:
        await running.aclose()
    assert status == 0, "\n".join(lines)
    (line,) = [line for line in lines if "no probe" in line]
    assert line.startswith("  ok     no probe: builtin: cannot listen on ")
    assert line.endswith(
        "(a running gateway?); every nameserver of _acme-challenge.d.example.test answers "
        f"for it with authority ({GW}:{bind.port})"
    )


async def test_an_ns_delegation_elsewhere_names_both_sides(
    bind: BindServer, tmp_path: Path
) -> None:
    status, lines = await check("bad.example.test", builtin(bind, tmp_path), bind)
    assert status == 1, "\n".join(lines)
    assert wrong(lines) == [(
        "the NS for _acme-challenge.bad.example.test points at other.example.test but "
        "BUILTIN_NS says gw.example.test",
        "make the delegation `_acme-challenge.bad.example.test. NS gw.example.test.` (or, if "
        "other.example.test is this gateway, set BUILTIN_NS=other.example.test)",
    )]
    assert "no probe value written" in "\n".join(lines)


async def test_no_delegation_at_all(bind: BindServer, tmp_path: Path) -> None:
    status, lines = await check("www.example.test", builtin(bind, tmp_path), bind)
    assert status == 1, "\n".join(lines)
    assert wrong(lines) == [(
        "_acme-challenge.www.example.test is not delegated to the gateway: it lies in zone "
        "example.test, served by ns1.example.test, ns2.example.test",
        "add `_acme-challenge.www.example.test. NS gw.example.test.` to zone example.test",
    )]


# --- the command ----------------------------------------------------------------------


def command(name: str, env: dict[str, str], tmp_path: Path) -> tuple[int, str, str]:
    result = run_gateway(tmp_path, env, ["--check-delegation", name], timeout=60)
    return result.returncode, result.stdout, result.stderr


def test_the_command_exits_0_1_and_2(bind: BindServer, tmp_path: Path) -> None:
    env = rfc2136(bind, tmp_path, PROPAGATION_NAMESERVERS=bind.address,
                  DELEGATIONS="alias.example.test=_acme-challenge.www.example.org")
    status, out, err = command("alias.example.test", env, tmp_path)
    assert status == 0, out + err
    assert out.splitlines()[-1] == "right: the CA will find the values this gateway writes"
    assert f"the gateway waits for PROPAGATION_NAMESERVERS ({bind.address}) instead" in out

    status, out, err = command("www.example.test", {
        **env, "DELEGATIONS": "www.example.test=_acme-challenge.www.example.org"}, tmp_path)
    assert status == 1, out + err
    assert "fix: add `_acme-challenge.www.example.test. CNAME _acme-challenge.www.example.org.`" \
        in out

    status, out, err = command("www.example.net", env, tmp_path)
    assert status == 2, out + err
    assert err.strip() == ("acmegw-server: --check-delegation: www.example.net is not a name "
                           "this gateway manages (DNSAPI_DOMAINS: example.test, example.org)")
