"""Fixtures for the deployment tests: rootful podman and the gateway's image.

The image is built once per test session by ``make image`` (the wheelhouse on
the host, then ``podman build --network=none --pull=never``) on the Debian base
of :mod:`tests.deploy.debian_base`, and removed at the end.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator

import pytest

from tests.deploy.debian_base import NoDebianMirror, ensure_base_image
from tests.deploy.podman import Image, Podman
from tests.gateway.procs import REPO_ROOT
from tests.system import need_program, unavailable


@pytest.fixture(scope="session")
def podman() -> Podman:
    if os.geteuid() != 0:
        unavailable("the container tests need root (rootful podman, debootstrap)")
    program = need_program("podman", "podman")
    need_program("runc", "runc")
    need_program("iptables", "iptables")  # netavark sets up port forwarding with it
    return Podman(program)


@pytest.fixture(scope="session")
def debootstrap() -> str:
    return need_program("debootstrap", "debootstrap")


@pytest.fixture(scope="session")
def image(podman: Podman, debootstrap: str) -> Iterator[Image]:
    """``make image`` on the Debian base: from the wheelhouse, with no network and no registry."""
    try:
        base = ensure_base_image(podman.program, debootstrap)
    except NoDebianMirror as exc:
        unavailable(f"cannot make the Debian base image: {exc}")
        raise
    tag = f"localhost/acmegw-test:{secrets.token_hex(4)}"
    started = time.monotonic()
    built = podman.make_image(REPO_ROOT, tag, base.name)
    build_seconds = time.monotonic() - started
    try:
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
        yield Image(tag, base.name, size, base.seconds, base.built, build_seconds, built.stdout)
    finally:
        podman("rmi", "--force", tag, check=False)
