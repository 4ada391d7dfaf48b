"""A network "jail" on Linux: a network namespace joined to this host by one veth pair.

The namespace gets loopback and one end of the veth with the second address of
a private /30 (``10.200.<n>.0/30``, ``<n>`` picked at random among those this
host does not use); the host keeps the first. There is no default route and no
other interface, so the only peer the namespace can reach is this host's
address on that /30: traffic never leaves the machine. Like a FreeBSD jail with
a single address, anything the process inside wants from the world has to go
through a service the host offers on that address (here: a forward proxy).

:func:`network_jail` removes the namespace and the veth pair however the test
ends, killing first whatever still runs inside (only processes the test
started can be there: the namespace is new and named at random).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

PREFIX = "10.200"


@dataclass(frozen=True)
class Jail:
    name: str
    host_if: str
    jail_if: str
    host_ip: str
    jail_ip: str

    def exec_argv(self, ip: str, *argv: str) -> list[str]:
        """*argv* run inside the namespace (``ip netns exec`` execs, keeping the pid)."""
        return [ip, "netns", "exec", self.name, *argv]


def _run(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def _free_subnet(ip: str) -> ipaddress.IPv4Network:
    used = [
        ipaddress.ip_interface(word).network
        for line in _run(ip, "-4", "-o", "addr", "show").splitlines()
        for word in line.split()
        if "/" in word and word[0].isdigit()
    ]
    routes = [
        ipaddress.ip_network(line.split()[0], strict=False)
        for line in _run(ip, "-4", "route", "show", "table", "all").splitlines()
        if line and line[0].isdigit()
    ]
    for _ in range(64):
        candidate = ipaddress.IPv4Network(f"{PREFIX}.{secrets.randbelow(256)}.0/30")
        if not any(candidate.overlaps(net) for net in [*used, *routes]):
            return candidate
    raise RuntimeError(f"no free /30 in {PREFIX}.0.0/16 on this host")


def _kill_inside(ip: str, name: str) -> None:
    done = subprocess.run(
        [ip, "netns", "pids", name], capture_output=True, text=True, timeout=30, check=False
    )
    for pid in done.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def network_jail(ip: str) -> Iterator[Jail]:
    tag = secrets.token_hex(3)
    net = _free_subnet(ip)
    host_addr, jail_addr = (str(a) for a in net.hosts())
    jail = Jail(f"acmegw-test-{tag}", f"agw{tag}h", f"agw{tag}j", host_addr, jail_addr)
    created_ns = created_link = False
    try:
        _run(ip, "netns", "add", jail.name)
        created_ns = True
        _run(ip, "link", "add", jail.host_if, "type", "veth", "peer", "name", jail.jail_if)
        created_link = True
        _run(ip, "link", "set", jail.jail_if, "netns", jail.name)
        _run(ip, "addr", "add", f"{host_addr}/{net.prefixlen}", "dev", jail.host_if)
        _run(ip, "link", "set", jail.host_if, "up")
        inside = ("netns", "exec", jail.name, ip)
        _run(ip, *inside, "addr", "add", f"{jail_addr}/{net.prefixlen}", "dev", jail.jail_if)
        _run(ip, *inside, "link", "set", jail.jail_if, "up")
        _run(ip, *inside, "link", "set", "lo", "up")
        yield jail
    finally:
        if created_ns:
            _kill_inside(ip, jail.name)
        if created_link:
            # Deleting one end of a veth pair deletes both.
            with contextlib.suppress(RuntimeError):
                _run(ip, "link", "del", jail.host_if)
        if created_ns:
            _run(ip, "netns", "del", jail.name)
