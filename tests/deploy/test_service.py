"""contrib/acmegw.service run by a real systemd (system test).

``systemd-analyze`` only reads the unit; whether the sandbox it describes lets
the gateway work (the system call filter, MemoryDenyWriteExecute, the dynamic
user, the credentials, the port-53 capability) shows only when systemd starts
it. This machine's init is not systemd, so the test boots one: a Debian base
with systemd (debootstrapped like the container test's, cached the same way),
the venv from the gateway's image, and the unit exactly as shipped, enabled.

That container is ``--privileged`` because here it plays a whole host: systemd
needs to set up the service's namespaces and mounts as it does on a machine of
its own. For the same reason its root is made a shared mount before systemd
starts (systemd does that itself at boot, but not when it finds itself in a
container): otherwise the credentials it mounts never appear in the service's
mount namespace. The configuration lives in a root-only ``/etc/acmegw``.

The test checks the service from outside, as its administrator would: setup
and teardown over the API with basic auth, the records over DNS from port 53
(bound by the dynamic user through its one capability), the process's uid,
capabilities, seccomp mode and no-new-privs, the DNS server process's lower CPU
priority (the system call filter lets it lower it), and, inside its own mount
namespace and as its own uid, that the state directory is the only lasting
place it can write to.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from providers.builtin.server import NICE
from tests.conftest import make_value
from tests.deploy.debian_base import PACKAGES, ensure_base_image
from tests.deploy.podman import Image, Podman
from tests.deploy.usage import (
    CHALLENGE,
    DOMAIN,
    WRITE_PROBE,
    change,
    proc_status,
    served,
    write_passwd,
)
from tests.gateway.procs import REPO_ROOT
from tests.system import free_port

pytestmark = pytest.mark.system

USER, PASSWORD = "webserver1", "service-test-password-41d0"
AUTH = (USER, PASSWORD)
UNIT = REPO_ROOT / "contrib" / "acmegw.service"
CAP_NET_BIND_SERVICE = 1 << 10
STATE = "/var/lib/private/acmegw"  # where /var/lib/acmegw leads for a DynamicUser
# The nice value of a process and of each of its children, with their command lines.
NICE_PROBE = """
import json, os, sys
main = int(sys.argv[1])
def nice(pid):
    return int(open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[16])
children = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        if int(open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[1]) == main:
            children[open(f"/proc/{pid}/cmdline").read().replace("\\0", " ")] = nice(pid)
    except OSError:
        pass
print(json.dumps({"main": nice(main), "children": children}))
"""

SYSTEM_IMAGE = """\
FROM {base}
COPY --from={app} /opt/acmegw /opt/acmegw
COPY acmegw.service /etc/systemd/system/acmegw.service
RUN systemctl enable acmegw.service
"""


@pytest.fixture(scope="module")
def system_image(
    podman: Podman, debootstrap: str, image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    # Same suite and interpreter as the gateway's image, so its venv runs as is.
    base = ensure_base_image(podman.program, debootstrap, (*PACKAGES, "systemd", "systemd-sysv"))
    context = tmp_path_factory.mktemp("system-image")
    (context / "Containerfile").write_text(SYSTEM_IMAGE.format(base=base.name, app=image.tag))
    (context / "acmegw.service").write_bytes(UNIT.read_bytes())
    tag = f"localhost/acmegw-systemd-test:{secrets.token_hex(4)}"
    podman.build(context, tag, {}, [])
    try:
        yield tag
    finally:
        podman("rmi", "--force", tag, check=False)


def write_config(folder: Path) -> None:
    """/etc/acmegw as the unit expects it: root's alone, handed over as credentials."""
    folder.mkdir(mode=0o700)
    dotenv = folder / "dotenv"
    dotenv.write_text(
        "PROVIDER = builtin\n"
        f"DNSAPI_DOMAINS = {DOMAIN}\n"
        "BASIC_AUTH = required\n"
        "INSECURE_HTTP = 1\n"  # the API port is published on the host's loopback only
        "BUILTIN_NS = ns.gateway.invalid\n"
        "BUILTIN_LISTEN = 0.0.0.0:53\n"
        "PROPAGATION_NAMESERVERS = 127.0.0.1:53\n"
        "PROPAGATION_TIMEOUT = 20s\n"
    )
    write_passwd(folder / "acmepasswd", USER, PASSWORD)
    for path in (dotenv, folder / "acmepasswd"):
        path.chmod(0o600)


def wait_active(podman: Podman, name: str, timeout: float = 60.0) -> None:
    """Until the service's current run says it is ready."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        done = podman("exec", name, "systemctl", "is-active", "acmegw", check=False)
        state = done.stdout.strip()
        if state == "active" and "acmegw-server: ready" in journal(podman, name, current=True):
            return
        time.sleep(0.2)
    raise AssertionError(f"acmegw.service is {state!r} after {timeout}s:\n{journal(podman, name)}")


def journal(podman: Podman, name: str, current: bool = False) -> str:
    """The service's log: all of it, or its current run's."""
    which = (
        "_SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value acmegw)"
        if current
        else "-u acmegw"
    )
    done = podman("exec", name, "sh", "-c", f"journalctl --no-pager {which}", check=False)
    return done.stdout + done.stderr


def test_systemd_runs_the_hardened_unit_and_it_serves(
    podman: Podman, system_image: str, tmp_path: Path
) -> None:
    config = tmp_path / "etc"
    write_config(config)
    http_port, dns_port = free_port(), free_port()
    name = f"acmegw-systemd-test-{secrets.token_hex(4)}"
    try:
        podman.run_detached(
            "--name", name, "--privileged", "--systemd=always",
            "-v", f"{config}:/etc/acmegw:ro",
            "-p", f"127.0.0.1:{http_port}:8000",
            "-p", f"127.0.0.1:{dns_port}:53/udp",
            "-p", f"127.0.0.1:{dns_port}:53/tcp",
            system_image,
            "/bin/sh", "-c", "mount --make-rshared / && exec /sbin/init",
        )  # fmt: skip
        wait_active(podman, name)

        pid = podman("exec", name, "systemctl", "show", "-p", "MainPID", "--value", "acmegw")
        main_pid = pid.stdout.strip()
        status = proc_status(podman("exec", name, "cat", f"/proc/{main_pid}/status").stdout)
        uid = status["Uid"].split()[0]
        assert int(uid) != 0 and status["Uid"].split() == [uid] * 4
        for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[caps], 16) == CAP_NET_BIND_SERVICE, (caps, status[caps])
        assert status["NoNewPrivs"] == "1"
        assert status["Seccomp"] == "2"  # a filter is installed

        # The DNS server process runs at its lower priority: the filter lets it
        # lower its own (and, without CAP_SYS_NICE, it can do nothing else with it).
        probe = podman("exec", name, "/opt/acmegw/bin/python3", "-c", NICE_PROBE, main_pid)
        nices = json.loads(probe.stdout)
        assert nices["main"] == 0, nices
        dns_server = [n for cmd, n in nices["children"].items() if "-m providers.builtin" in cmd]
        assert dns_server == [NICE], nices

        first, second = make_value(), make_value()
        assert change(http_port, "POST", "setup", first, None).status_code == 401
        done = change(http_port, "POST", "setup", first, AUTH)
        assert done.status_code == 201, f"{done.text}\n{journal(podman, name)}"
        assert done.json() == {"fqdn": CHALLENGE, "value": first}
        done = change(http_port, "POST", "setup", second, AUTH)
        assert done.status_code == 201, done.text
        assert served(dns_port) == {first, second}
        assert served(dns_port, tcp=True) == {first, second}
        done = change(http_port, "DELETE", "teardown", first, AUTH)
        assert done.status_code == 200, done.text
        assert served(dns_port) == {second}

        # As the service sees the file system: read-only but for its state
        # (and the private /tmp that PrivateTmp gives it, gone when it stops).
        probe = podman(
            "exec", name, "nsenter", f"--target={main_pid}", "--mount",
            f"--setuid={uid}", f"--setgid={uid}",
            "/opt/acmegw/bin/python3", "-c", WRITE_PROBE,
            "/", "/etc", "/etc/acmegw", "/opt/acmegw", "/usr", "/var/lib", "/root", STATE,
        )  # fmt: skip
        # /etc/acmegw is root's alone (the service gets its files as
        # credentials) and ProtectHome= hides /root: both refuse access.
        assert json.loads(probe.stdout) == {
            "/": "EROFS", "/etc": "EROFS", "/etc/acmegw": "EACCES", "/opt/acmegw": "EROFS",
            "/usr": "EROFS", "/var/lib": "EROFS", "/root": "EACCES", STATE: "ok",
        }, probe.stdout  # fmt: skip

        # The journal is in the state directory and survives a restart.
        podman("exec", name, "systemctl", "restart", "acmegw", timeout=90)
        wait_active(podman, name)
        assert served(dns_port) == {second}
        done = change(http_port, "DELETE", "teardown", second, AUTH)
        assert done.status_code == 200, done.text
        assert served(dns_port) == set()

        podman("exec", name, "systemctl", "stop", "acmegw", timeout=90)
        result = podman("exec", name, "systemctl", "show", "-p", "Result", "--value", "acmegw")
        assert result.stdout.strip() == "success", journal(podman, name)
        log = journal(podman, name)
        assert PASSWORD not in log
        assert "Permission denied" not in log and "Operation not permitted" not in log, log
    finally:
        podman("rm", "--force", "--time", "5", name, check=False, timeout=60)
