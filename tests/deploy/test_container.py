"""The container image, built from ``Containerfile`` and run as the README says (system test).

The image is built by ``make image``, as the README says for a host without
a registry: on a Debian base that debootstrap makes from this machine's own
Debian mirror (:mod:`tests.deploy.debian_base`; cached between runs), from a
wheelhouse that the host's pip fills, with ``podman build --network=none
--pull=never``; the same build without the wheelhouse must fail for want of
PyPI (so the network really was off). The image is run by rootful podman
with every hardening flag the README recommends: ``--read-only`` without
podman's writable tmpfs mounts, ``--ipc=none`` (no ``/dev/shm``),
``--cap-drop=all``, ``no-new-privileges``, the configuration mounted
read-only, the journal on a named volume, and the API and the builtin DNS
server published on loopback ports only. Port 53 is bound without any
capability: ``--sysctl net.ipv4.ip_unprivileged_port_start=53`` lowers the
privileged-port floor inside the container's own network namespace (file
capabilities would not work: no-new-privileges ignores them).

The test then does what a user does: setup and teardown with basic auth against
the builtin provider, checking each with DNS queries (UDP and TCP) to the
published port, a restart that republishes the journaled record, and a clean
stop. It checks the uid, the capabilities, the read-only root and that the
state volume is the only writable place, and prints the image size and the
time from ``podman run`` to the first passing HEALTHCHECK.

Measured on the 2-core test machine: debootstrap of the base about 50 s (only
when it is not cached), the wheelhouse about 20 s (only when pyproject.toml or
the Containerfile changed), the image build about 17 s, ``podman run`` to
healthy about 1 s. All of
tests/deploy takes about 2.5 minutes cold (two debootstraps: this base and
test_service's systemd one) and under a minute once the bases are cached.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import tomllib
from pathlib import Path

import pytest
import requests

from tests.conftest import make_value
from tests.deploy.podman import Image, Podman
from tests.deploy.usage import (
    CHALLENGE,
    DOMAIN,
    WRITE_PROBE,
    change,
    proc_status,
    self_signed,
    served,
    write_passwd,
)
from tests.gateway.procs import REPO_ROOT
from tests.system import free_port

pytestmark = pytest.mark.system

UID = 10001
STATE = "/var/lib/acmegw"
USER, PASSWORD = "alice", "container-test-password-7f3a"
AUTH = (USER, PASSWORD)

# Run inside the container as its user: every directory it may create files in.
# /proc and /sys are kernel interfaces; /dev/mqueue only holds POSIX message
# queues (mode 1777 in every container), not files.
WRITABLE_WALK = """
import json, os
found = []
for root, dirs, files in os.walk("/"):
    if root in ("/proc", "/sys", "/dev/mqueue"):
        dirs[:] = []
        continue
    if os.access(root, os.W_OK):
        found.append(root)
print(json.dumps(found))
"""


def write_config(folder: Path, tls: bool = False) -> None:
    """The mounted /etc/acmegw: dotenv, password file and (with *tls*) cert.pem and key.pem."""
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    dotenv = folder / ".env"
    dotenv.write_text(
        "PROVIDER = builtin\n"
        f"DNSAPI_DOMAINS = {DOMAIN}\n"
        "BASIC_AUTH = required\n"
        # Plain HTTP is refused for basic auth on a non-loopback address; here
        # the port is published on the host's loopback only.
        + ("" if tls else "INSECURE_HTTP = 1\n")
        + "BUILTIN_NS = ns.gateway.invalid\n"
        # Setup answers once the gateway's own DNS server, inside the
        # container, serves the value.
        "PROPAGATION_NAMESERVERS = 127.0.0.1:53\n"
        "PROPAGATION_TIMEOUT = 20s\n"
    )
    dotenv.chmod(0o644)
    secrets_for_uid = [folder / "acmepasswd"]
    write_passwd(folder / "acmepasswd", USER, PASSWORD)
    if tls:
        cert, key = self_signed("127.0.0.1", folder)
        cert.chmod(0o644)
        secrets_for_uid.append(key)
    # Readable by the gateway's uid alone, as the README says.
    for path in secrets_for_uid:
        os.chown(path, UID, UID)
        path.chmod(0o600)


def wait_healthy(podman: Podman, name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if podman("healthcheck", "run", name, check=False, timeout=30).returncode == 0:
            return
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout
        if state.strip() not in ("running", "created", "configured"):
            logs = podman("logs", name, check=False)
            raise AssertionError(f"container is {state.strip()}:\n{logs.stdout}\n{logs.stderr}")
        time.sleep(0.1)
    logs = podman("logs", name, check=False)
    raise AssertionError(f"not healthy after {timeout}s:\n{logs.stdout}\n{logs.stderr}")


def exec_json(podman: Podman, name: str, script: str, *args: str) -> object:
    done = podman("exec", name, "python3", "-c", script, *args, timeout=60)
    return json.loads(done.stdout)


def run_gateway(
    podman: Podman,
    image: Image,
    name: str,
    config: Path,
    http_port: int,
    dns_port: int,
    volume: str,
) -> None:
    """The README's locked-down ``podman run``, with ports published on loopback only."""
    podman.run_detached(
        "--name", name,
        "--read-only", "--read-only-tmpfs=false", "--ipc=none",
        "--cap-drop=all", "--security-opt", "no-new-privileges",
        "--sysctl", "net.ipv4.ip_unprivileged_port_start=53",
        "-v", f"{config}:/etc/acmegw:ro",
        "-v", f"{volume}:{STATE}",
        "-p", f"127.0.0.1:{http_port}:8000",
        "-p", f"127.0.0.1:{dns_port}:53/udp",
        "-p", f"127.0.0.1:{dns_port}:53/tcp",
        image.tag,
    )  # fmt: skip


def test_read_only_non_root_container_serves_setup_and_teardown(
    podman: Podman, image: Image, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etc"
    write_config(config)
    http_port, dns_port = free_port(), free_port()
    name = f"acmegw-test-{secrets.token_hex(4)}"
    volume = f"{name}-state"
    try:
        started = time.monotonic()
        run_gateway(podman, image, name, config, http_port, dns_port, volume)
        wait_healthy(podman, name)
        to_healthy = time.monotonic() - started

        # Who runs, with what.
        inspected = json.loads(podman("inspect", name).stdout)[0]
        assert inspected["Config"]["User"] == f"{UID}:{UID}"
        assert inspected["HostConfig"]["ReadonlyRootfs"] is True
        assert podman("exec", name, "id", "-u").stdout.strip() == str(UID)
        status = proc_status(podman("exec", name, "cat", "/proc/1/status").stdout)
        assert status["Uid"].split() == [str(UID)] * 4
        assert status["Gid"].split() == [str(UID)] * 4
        assert int(status["CapEff"], 16) == 0 and int(status["CapBnd"], 16) == 0
        assert status["NoNewPrivs"].strip() == "1"

        # The API: health without auth, changes only with it.
        assert requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=10).status_code == 200
        first, second = make_value(), make_value()
        refused = change(http_port, "POST", "setup", first, auth=None)
        assert refused.status_code == 401
        refused = change(http_port, "POST", "setup", first, auth=(USER, "wrong-password"))
        assert refused.status_code == 401
        assert served(dns_port) == set()

        done = change(http_port, "POST", "setup", first, AUTH)
        assert done.status_code == 201, done.text
        assert done.json() == {"fqdn": CHALLENGE, "value": first}
        assert served(dns_port) == {first}
        assert served(dns_port, tcp=True) == {first}
        done = change(http_port, "POST", "setup", second, AUTH)
        assert done.status_code == 201, done.text
        assert served(dns_port) == {first, second}
        done = change(http_port, "DELETE", "teardown", first, AUTH)
        assert done.status_code == 200, done.text
        assert served(dns_port) == {second}
        assert served(dns_port, tcp=True) == {second}

        # Read-only root: the state volume is the one place the gateway can write.
        writable = exec_json(podman, name, WRITABLE_WALK)
        assert writable == [STATE], writable
        probes = exec_json(
            podman, name, WRITE_PROBE,
            "/", "/etc/acmegw", "/opt/acmegw", "/opt/acmegw/bin", "/tmp", "/var/tmp", "/run",
            STATE,
        )  # fmt: skip
        assert probes == {
            "/": "EROFS", "/etc/acmegw": "EROFS", "/opt/acmegw": "EROFS",
            "/opt/acmegw/bin": "EROFS", "/tmp": "EROFS", "/var/tmp": "EROFS", "/run": "EROFS",
            STATE: "ok",
        }, probes  # fmt: skip
        journal = podman("exec", name, "ls", STATE).stdout.split()
        assert "journal.sqlite3" in journal

        # The journal on the volume outlives the process: after a restart the
        # builtin server serves the value whose teardown has not come yet.
        podman("restart", "--time", "15", name, timeout=60)
        wait_healthy(podman, name)
        assert served(dns_port) == {second}
        done = change(http_port, "DELETE", "teardown", second, AUTH)
        assert done.status_code == 200, done.text
        assert served(dns_port) == set()

        # SIGTERM stops it cleanly (exit 0), well within podman's grace period.
        podman("stop", "--time", "15", name, timeout=60)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code == "0", podman("logs", name, check=False).stderr
        logs = podman("logs", name, check=False)
        assert PASSWORD not in logs.stdout + logs.stderr
    finally:
        podman("rm", "--force", "--time", "5", name, check=False, timeout=60)
        podman("volume", "rm", "--force", volume, check=False)

    with capsys.disabled():
        base = "debootstrapped" if image.base_built else "cached"
        print(
            f"\n[container] image {image.size / 1e6:.0f} MB; base image {base} in "
            f"{image.base_seconds:.1f} s; build {image.build_seconds:.1f} s; "
            f"podman run to healthy {to_healthy:.2f} s"
        )


def image_extras() -> list[str]:
    """The extras the Containerfile's ``ARG EXTRAS=`` line names."""
    text = (REPO_ROOT / "Containerfile").read_text()
    (line,) = re.findall(r"^ARG EXTRAS=(.*)$", text, re.MULTILINE)
    return [e.strip() for e in line.split(",") if e.strip()]


def test_the_image_names_every_extra_but_the_tests() -> None:
    # An optional part added to pyproject.toml (a provider's library, say) is
    # in the image only once the Containerfile's ARG EXTRAS= line names it.
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        optional = set(tomllib.load(f)["project"].get("optional-dependencies", {}))
    missing = optional - {"test"} - set(image_extras())
    assert not missing, f"add {','.join(sorted(missing))} to ARG EXTRAS= in the Containerfile"


def test_the_image_is_built_from_the_wheelhouse_without_network(
    podman: Podman, image: Image
) -> None:
    log = image.build_log
    command = next(line for line in log.splitlines() if " build " in line)
    assert "--network=none" in command and "--pull=never" in command, command
    assert "--build-arg WHEELS=wheelhouse" in log
    assert "Looking in links: /src/wheelhouse" in log
    assert "Downloading" not in log
    wheels = {p.name.split("-")[0].lower() for p in (REPO_ROOT / "wheelhouse").glob("*.whl")}
    assert {"aiohttp", "cryptography", "setuptools"} <= wheels
    assert not any(w.startswith("acme_dns01_gateway") for w in wheels)  # built from the sources

    # Every extra the Containerfile names is installed, with its requirements.
    with (REPO_ROOT / "pyproject.toml").open("rb") as f:
        optional = tomllib.load(f)["project"].get("optional-dependencies", {})
    wanted = ["acme-dns01-gateway"]
    for extra in image_extras():
        wanted += [re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0] for req in optional[extra]]
    check = "import importlib.metadata as m, sys; print(*(m.version(d) for d in sys.argv[1:]))"
    done = podman(
        "run", "--rm", *podman.limits, "--network=none", "--entrypoint", "python3", image.tag,
        "-c", check, *wanted, timeout=120,
    )  # fmt: skip
    assert len(done.stdout.split()) == len(wanted), done.stdout


def test_without_a_wheelhouse_the_offline_build_fails_for_want_of_pypi(
    podman: Podman, image: Image
) -> None:
    tag = f"localhost/acmegw-test-offline:{secrets.token_hex(4)}"
    try:
        done = podman(
            "build", "--network=none", "--pull=never", "--layers=false", *podman.limits,
            "--build-arg", f"BASE={image.base}", "-t", tag, str(REPO_ROOT),
            check=False, timeout=600,
        )  # fmt: skip
    finally:
        podman("rmi", "--force", tag, check=False)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-3000:]
    assert "cannot fetch the dependencies from PyPI" in output, output[-3000:]
    assert "make image" in output


def test_https_container_passes_its_healthcheck_and_serves_over_tls(
    podman: Podman, image: Image, tmp_path: Path
) -> None:
    config = tmp_path / "etc"
    write_config(config, tls=True)
    http_port, dns_port = free_port(), free_port()
    name = f"acmegw-test-{secrets.token_hex(4)}"
    volume = f"{name}-state"
    try:
        run_gateway(podman, image, name, config, http_port, dns_port, volume)
        # The HEALTHCHECK's first try, HTTPS without checking the certificate.
        wait_healthy(podman, name)
        base = f"https://127.0.0.1:{http_port}/"
        cert = str(config / "cert.pem")
        assert requests.get(base + "healthz", verify=cert, timeout=10).status_code == 200
        value = make_value()
        body = {"argument": "setup", "domain_name": DOMAIN, "challenge_content": value}
        done = requests.post(base, json=body, auth=AUTH, verify=cert, timeout=30)
        assert done.status_code == 201, done.text
        assert served(dns_port) == {value}
        # No plaintext next to TLS on the same port.
        with pytest.raises(requests.ConnectionError):
            requests.post(f"http://127.0.0.1:{http_port}/", json=body, auth=AUTH, timeout=10)
    finally:
        podman("rm", "--force", "--time", "5", name, check=False, timeout=60)
        podman("volume", "rm", "--force", volume, check=False)
