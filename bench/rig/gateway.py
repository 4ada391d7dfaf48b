"""A gateway process to measure: HTTPS with basic auth on the builtin provider.

Shared by ``bench/gateway_load.py``, ``bench/auth_flood.py`` and
``bench/startup_memory.py`` (this folder is not a bench itself, so ``make
bench`` does not run it). The gateway runs as ``python -m gateway`` in a
temporary folder with a clean environment (``tests/gateway/procs.py``), a
throw-away CA and server certificate (``tests/servers/certs.py``), a password
file with one user, and ``PROVIDER=builtin`` on a free loopback port. With the
builtin provider and no ``PROPAGATION_NAMESERVERS`` the gateway serves the
value itself and does not poll DNS, so a setup costs what the gateway costs.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from lib.passwd import PasswordFile
from tests.gateway.procs import GatewayProcess
from tests.servers.certs import TLSFiles, make_tls_files
from tests.system import free_port

USER, PASSWORD = "bench", "bench-password: not a secret"
DOMAIN = "example.test"


def basic_header(user: str = USER, password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Rig:
    """Files for one gateway: TLS, password file, settings."""

    directory: Path
    tls: TLSFiles
    port: int
    settings: dict[str, str]

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        return context


def make_rig(directory: Path, **extra: str) -> Rig:
    tls = make_tls_files(directory / "tls")
    PasswordFile(directory / "acmepasswd").set_user(USER, PASSWORD)
    port = free_port()
    settings = {
        "DNSAPI_DOMAINS": DOMAIN,
        "PROVIDER": "builtin",
        "BUILTIN_LISTEN": f"127.0.0.1:{free_port()}",
        "BUILTIN_NS": "ns.gateway.invalid",
        "BASIC_AUTH": "required",
        "PASSWD_FILE": str(directory / "acmepasswd"),
        "SSL_CERT": str(tls.cert),
        "SSL_KEY": str(tls.key),
        "LISTEN": f"127.0.0.1:{port}",
        "STATE_DIR": str(directory / "state"),
        # The load generator is one client address with many connections.
        "MAX_CONNECTIONS_PER_CLIENT": "1024",
    }
    settings.update(extra)
    return Rig(directory, tls, port, settings)


def healthz_once(rig: Rig, context: ssl.SSLContext, timeout: float = 1.0) -> bool:
    """One ``GET /healthz`` on a new TLS connection; True on 200."""
    import http.client

    conn = http.client.HTTPSConnection("127.0.0.1", rig.port, timeout=timeout, context=context)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def wait_healthy(rig: Rig, gw: GatewayProcess, timeout: float = 20.0) -> float:
    """Poll ``/healthz`` every 2 ms until it answers; returns the monotonic time it did."""
    context = rig.client_context()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthz_once(rig, context, timeout=0.5):
            return time.monotonic()
        if gw.proc.poll() is not None:
            raise RuntimeError(f"the gateway exited: {gw.describe()}")
        time.sleep(0.002)
    raise RuntimeError(f"the gateway did not answer /healthz within {timeout}s: {gw.describe()}")


@contextlib.contextmanager
def running(
    rig: Rig, env: Mapping[str, str] | None = None
) -> Iterator[tuple[GatewayProcess, float]]:
    """The gateway, started and answering; yields (process, seconds from start to /healthz)."""
    started = time.monotonic()
    gw = GatewayProcess(rig.directory, {**rig.settings, **(env or {})})
    try:
        answered = wait_healthy(rig, gw)
        yield gw, answered - started
    finally:
        gw.stop()


def memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (peak) of *pid* in KiB, from /proc."""
    result: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                result[key] = int(rest.split()[0])
    return result


@dataclass(frozen=True)
class ProcessMemory:
    """One process of a tree: what it runs and its memory in KiB."""

    pid: int
    command: str
    rss: int  # VmRSS: its resident pages, shared ones included
    pss: int  # Pss: shared pages split among the processes sharing them


def process_tree(pid: int) -> list[int]:
    """*pid* and its descendants (the builtin DNS server process is the gateway's child)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(sorted(children.get(current, ())))
    return tree


def tree_memory(pid: int) -> list[ProcessMemory]:
    """The memory of *pid* and of each of its descendants, *pid* first."""
    result = []
    for member in process_tree(pid):
        try:
            command = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ")
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {
            line.partition(":")[0]: int(line.split()[1])
            for line in rollup.splitlines()[1:]
            if line.endswith("kB")
        }
        result.append(
            ProcessMemory(member, command.decode(errors="replace").strip(), fields["Rss"],
                          fields["Pss"])
        )
    return result


def percentile(values: list[float], p: float) -> float:
    """The *p*-th percentile (0-100) by the nearest-rank method."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def describe_ms(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"n={len(ms)} min {min(ms):.1f} p50 {statistics.median(ms):.1f} "
        f"p99 {percentile(ms, 99):.1f} max {max(ms):.1f} ms"
    )


def machine() -> str:
    """One line about the machine the figures come from."""
    import os
    import platform

    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as info:
        kib = int(info.readline().split()[1])
        mem = f", {kib / 1024 / 1024:.0f} GiB"
    # Other work on the machine shows in every figure: say how busy it was.
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs ({cpu}){mem}, Linux {platform.release()}, "
        f"Python {platform.python_version()}, OpenSSL {ssl.OPENSSL_VERSION.split()[1]}; "
        f"load average {load}"
    )
