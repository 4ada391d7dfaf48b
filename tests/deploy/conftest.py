"""Fixtures for the deployment tests: rootful podman and the gateway's image.

The image is built once per test session from ``Containerfile`` on the Debian
base of :mod:`tests.deploy.debian_base`, and removed at the end.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.debian_base import NoDebianMirror, ensure_base_image
from tests.deploy.podman import Image, Podman
from tests.gateway.procs import REPO_ROOT
from tests.system import need_program, unavailable

CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


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
    try:
        base = ensure_base_image(podman.program, debootstrap)
    except NoDebianMirror as exc:
        unavailable(f"cannot make the Debian base image: {exc}")
        raise
    tag = f"localhost/acmegw-test:{secrets.token_hex(4)}"
    build_args = {"BASE": base.name}
    mounts = []
    if CA_BUNDLE.is_file():
        # pip in the build trusts what this machine trusts (a TLS-inspecting
        # proxy's CA, say), without baking the bundle into the image.
        mounts.append(f"{CA_BUNDLE}:{CA_BUNDLE}:ro")
        build_args["PIP_CERT"] = str(CA_BUNDLE)
    started = time.monotonic()
    podman.build(REPO_ROOT, tag, build_args, mounts)
    build_seconds = time.monotonic() - started
    try:
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
        yield Image(tag, size, base.seconds, base.built, build_seconds)
    finally:
        podman("rmi", "--force", tag, check=False)
