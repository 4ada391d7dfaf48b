"""The original's deployment on Linux: a network jail, its own user, the world through a proxy.

The original gateway runs in a FreeBSD jail with one address, as its own user,
and reaches its DNS API only through a forward proxy. This system test builds
the same thing with Linux parts and shows it working:

* a network namespace joined to the host by a veth pair on a private /30
  (:mod:`tests.deploy.netns`): no default route, no other interface, so from
  inside only the host's end of the veth can be reached;
* the gateway inside it as ``nobody`` (``setpriv``: no groups, no capabilities,
  no-new-privs), over HTTPS with basic auth and the host's veth address as the
  only allowed client, using the ``cloudflare`` provider;
* the Cloudflare API is an in-process fake (Cloudflare's hosted API cannot run
  here: :mod:`tests.providers.fake_cloudflare`, built from Cloudflare's API
  documentation and checking every request it gets) listening on the host's
  loopback, which the namespace has no way to address;
* ``ALL_PROXY`` points at a forward proxy (:mod:`tests.providers.forward_proxy`)
  on the host's end of the veth.

Setup and teardown through the gateway succeed, the proxy forwarded every API
call, and a direct connection from inside the namespace to the fake API fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import make_value
from tests.deploy.jail_venv import ensure_jail_venv
from tests.deploy.netns import Jail, network_jail
from tests.deploy.usage import CHALLENGE, DOMAIN, self_signed, write_passwd
from tests.gateway.procs import READY, REPO_ROOT
from tests.providers.fake_cloudflare import FakeCloudflare
from tests.providers.forward_proxy import ForwardProxy
from tests.system import Server, need_program, unavailable

pytestmark = pytest.mark.system

TOKEN = "Ab0-test-token-with-forty-characters-xyz"
USER, PASSWORD = "webhost", "jail-test-password-2c9e"
GATEWAY_PORT = 8000  # the namespace is the gateway's alone: no port clash possible
PACKAGES = ("gateway", "providers", "hooks", "lib")
# The jail's interpreter: Debian's, which every user can run (see jail_venv).
DEBIAN_PYTHON = "/usr/bin/python3"

# Run inside the namespace as nobody: can it reach the fake API without the proxy?
DIRECT_PROBE = """
import errno, json, socket, sys
port = int(sys.argv[1])
result = {}
for host in sys.argv[2:]:
    try:
        socket.create_connection((host, port), timeout=3).close()
        result[host] = "connected"
    except OSError as exc:
        result[host] = errno.errorcode.get(exc.errno, str(exc))
print(json.dumps(result))
"""


class VethProxy(ForwardProxy):
    """The shared test forward proxy, listening on the host's end of the veth."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), trust_env=False
        )
        self.url = f"http://{self.host}:{self._runner.addresses[0][1]}"
        return self.url


@pytest.fixture
def tools() -> dict[str, str]:
    if os.geteuid() != 0:
        unavailable("the jail test needs root (network namespaces, veth, setpriv)")
    found = {
        "ip": need_program("ip", "iproute2"),
        "setpriv": need_program("setpriv", "util-linux"),
        "python3": DEBIAN_PYTHON,
    }
    venv_ok = (
        Path(DEBIAN_PYTHON).is_file()
        and subprocess.run(
            [DEBIAN_PYTHON, "-c", "import ensurepip, venv"],
            capture_output=True,
            timeout=30,
            check=False,
        ).returncode
        == 0
    )
    if not venv_ok:
        unavailable(f"{DEBIAN_PYTHON} with venv and ensurepip (Debian package python3-venv)")
    return found


@pytest.fixture
def jail(tools: dict[str, str]) -> Iterator[Jail]:
    with network_jail(tools["ip"]) as j:
        yield j


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A folder ``nobody`` can reach (pytest's tmp_path sits in a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="acmegw-jail-", dir="/tmp"))
    try:
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloudflare]:
    api = FakeCloudflare(token=TOKEN, zones=(DOMAIN,))
    await api.start()
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def proxy(jail: Jail) -> AsyncIterator[VethProxy]:
    p = VethProxy(jail.host_ip)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


def prepare(run: Path, jail: Jail, fake_url: str, proxy_url: str) -> dict[str, str]:
    """Code, configuration and state for the gateway's user; its environment."""
    nobody = pwd.getpwnam("nobody")
    app = run / "app"
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, app / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))  # fmt: skip
    etc = run / "etc"
    etc.mkdir(mode=0o755)
    cert, key = self_signed(jail.jail_ip, etc)
    passwd = etc / "acmepasswd"
    write_passwd(passwd, USER, PASSWORD)
    token = etc / "cloudflare.token"
    token.write_text(TOKEN + "\n")
    state = run / "state"
    state.mkdir(mode=0o700)
    # Secrets readable by the gateway's user alone; the certificate by anyone.
    for path in (passwd, key, token, state):
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        path.chmod(0o700 if path.is_dir() else 0o600)
    cert.chmod(0o644)
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(run),
        "PYTHONPATH": str(app),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "LISTEN": f"{jail.jail_ip}:{GATEWAY_PORT}",
        "SSL_CERT": str(cert),
        "SSL_KEY": str(key),
        "DNSAPI_DOMAINS": DOMAIN,
        "BASIC_AUTH": "required",
        "ALLOWED_HOSTS": f"{jail.host_ip}/32",
        "PASSWD_FILE": str(passwd),
        "STATE_DIR": str(state),
        "PROVIDER": "cloudflare",
        "CLOUDFLARE_API_URL": fake_url,
        "CLOUDFLARE_API_TOKEN_FILE": str(token),
        "ALL_PROXY": proxy_url,
        # The fake serves no DNS, and the jail can reach no nameserver anyway.
        "PROPAGATION_CHECK": "off",
    }


async def wait_ready(gateway: Server, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if READY in gateway.output():
            return
        if gateway.proc.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{gateway.output()}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway was not ready after {timeout}s:\n{gateway.output()}")


async def inside(jail: Jail, tools: dict[str, str], *argv: str) -> str:
    """*argv* run in the namespace as nobody; its standard output."""
    process = await asyncio.create_subprocess_exec(
        *jail.exec_argv(tools["ip"], *as_nobody(tools), *argv),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


def as_nobody(tools: dict[str, str]) -> list[str]:
    return [
        tools["setpriv"], "--reuid=nobody", "--regid=nogroup", "--clear-groups",
        "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
    ]  # fmt: skip


async def test_gateway_in_a_network_jail_reaches_its_api_only_through_the_proxy(
    tools: dict[str, str],
    jail: Jail,
    run_dir: Path,
    fake: FakeCloudflare,
    proxy: VethProxy,
    capsys: pytest.CaptureFixture[str],
) -> None:
    python = await asyncio.to_thread(
        ensure_jail_venv, tools["python3"], REPO_ROOT / "pyproject.toml"
    )
    env = prepare(run_dir, jail, fake.url, proxy.url)
    gateway = Server(
        jail.exec_argv(tools["ip"], *as_nobody(tools), str(python), "-m", "gateway"),
        run_dir / "gateway.log",
        env=env,
        cwd=run_dir,
    )
    try:
        await wait_ready(gateway)

        # The process: nobody, no capabilities, inside the namespace.
        status = dict(
            line.split(":\t", 1)
            for line in Path(f"/proc/{gateway.pid}/status").read_text().splitlines()
            if ":\t" in line
        )
        nobody = pwd.getpwnam("nobody")
        assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
        assert status["Groups"].strip() == ""
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"
        jail_net = os.stat(f"/run/netns/{jail.name}")
        gateway_net = os.stat(f"/proc/{gateway.pid}/ns/net")
        assert (gateway_net.st_dev, gateway_net.st_ino) == (jail_net.st_dev, jail_net.st_ino)

        # The namespace's only route is the veth's /30: nothing else is reachable.
        routes = (await inside(jail, tools, tools["ip"], "-4", "route", "show")).splitlines()
        assert len(routes) == 1 and routes[0].startswith(f"{jail.host_ip[:-1]}0/30 "), routes
        routes6 = await inside(jail, tools, tools["ip"], "-6", "route", "show")
        assert "default" not in routes6

        # No way to the API but the proxy: the fake listens on the host's
        # loopback, which the namespace cannot address (its 127.0.0.1 is its
        # own), and not on the veth.
        fake_port = int(fake.url.split(":")[2].split("/")[0])
        direct = json.loads(
            await inside(
                jail, tools, str(python), "-c", DIRECT_PROBE, str(fake_port),
                "127.0.0.1", jail.host_ip,
            )
        )  # fmt: skip
        assert direct == {"127.0.0.1": "ECONNREFUSED", jail.host_ip: "ECONNREFUSED"}, direct

        # The gateway works all the same, through the proxy.
        ca = ssl.create_default_context(cafile=env["SSL_CERT"])
        base = f"https://{jail.jail_ip}:{GATEWAY_PORT}/"
        value = make_value()
        body = {"argument": "setup", "domain_name": DOMAIN, "challenge_content": value}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.post(base, json=body, ssl=ca) as answer:
                assert answer.status == 401
            credentials = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            auth = {"Authorization": f"Basic {credentials}"}
            async with http.post(base, json=body, headers=auth, ssl=ca) as answer:
                assert answer.status == 201, f"{await answer.text()}\n{gateway.output()}"
                assert await answer.json() == {"fqdn": CHALLENGE, "value": value}
            assert fake.served(CHALLENGE) == {value}
            body["argument"] = "teardown"
            async with http.delete(base, json=body, headers=auth, ssl=ca) as answer:
                assert answer.status == 200, f"{await answer.text()}\n{gateway.output()}"
            assert fake.served(CHALLENGE) == set()

        # Every API call went through the proxy, and the fake saw nothing odd.
        assert fake.failures == []
        assert proxy.refused == []
        api_calls = [r for r in proxy.forwarded if r.split()[1].startswith(fake.url)]
        assert api_calls == proxy.forwarded
        methods = [r.split()[0] for r in api_calls]
        assert "POST" in methods and "DELETE" in methods, api_calls
        assert len(fake.requests) == len(api_calls)
        assert PASSWORD not in gateway.output() and TOKEN not in gateway.output()
    finally:
        await asyncio.to_thread(gateway.stop)
    assert gateway.proc.returncode == 0, gateway.output()
    through_proxy = len(proxy.forwarded)

    # The same gateway without ALL_PROXY cannot do its job: the proxy is the
    # only way out, not merely the one it was told to use.
    del env["ALL_PROXY"]
    gateway = Server(
        jail.exec_argv(tools["ip"], *as_nobody(tools), str(python), "-m", "gateway"),
        run_dir / "gateway-no-proxy.log",
        env=env,
        cwd=run_dir,
    )
    try:
        await wait_ready(gateway)
        body = {"argument": "setup", "domain_name": DOMAIN, "challenge_content": make_value()}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http,
            http.post(base, json=body, headers=auth, ssl=ca) as answer,
        ):
            assert answer.status == 502, await answer.text()
            assert "cloudflare" in (await answer.text()).lower()
    finally:
        await asyncio.to_thread(gateway.stop)
    assert len(proxy.forwarded) == through_proxy
    assert fake.served(CHALLENGE) == set()
    with capsys.disabled():
        print(f"\n[jail] {through_proxy} API calls through the proxy; none without it")
