"""Gather the wheels the container image needs, for the base image's own Python.

``make image`` builds with ``--network=none``: pip in the build installs from
``./wheelhouse`` alone. Those wheels must suit the interpreter of the image's
base, not the host's: Debian 12's python3 is 3.11.2, while a host venv may run
3.11.7, and a dependency's newest release may need 3.11.5 (soupsieve did), so
wheels resolved by the host's pip can leave the build without an installable
set. This script asks the base image which Python, machine and C library it
has (``podman run --network=none BASE python3``), then lets pip resolve for
exactly that (``pip download --only-binary=:all: --python-version ...
--platform manylinux_2_<glibc>_<machine>``), so what it gathers always
installs there. Only this step may use PyPI.

The requirements are the project's dependencies, the extras named on the
Containerfile's ``ARG EXTRAS=`` line, and the build backend that builds the
project's own wheel in the image. The folder is remade only when any of these
or the base's interpreter changes (a fingerprint in ``.complete``).

    python tools/wheelhouse.py --base localhost/acmegw-base:bookworm-... [--dest wheelhouse]
    make wheelhouse BASE=...         # the same
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
STAMP = ".complete"
_PROBE = (
    "import json, platform, sys; "
    "print(json.dumps([platform.python_version(), platform.machine(), *platform.libc_ver()]))"
)


class Target(NamedTuple):
    """The interpreter the wheels are for."""

    python: str  # "3.11.2"
    machine: str  # "x86_64"
    libc: str  # "glibc"
    libc_version: str  # "2.36"

    @property
    def abi(self) -> str:
        major, minor = self.python.split(".")[:2]
        return f"cp{major}{minor}"

    @property
    def platform(self) -> str:
        major, minor = self.libc_version.split(".")[:2]
        return f"manylinux_{major}_{minor}_{self.machine}"

    @property
    def platforms(self) -> list[str]:
        """Every manylinux tag this C library runs, newest first: pip takes a
        ``--platform`` literally and does not widen ``manylinux_2_36`` to older ones."""
        major, minor = (int(n) for n in self.libc_version.split(".")[:2])
        if major != 2:
            return [self.platform]
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, 4, -1)]
        # The older names of manylinux_2_17, _2_12 and _2_5.
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{self.machine}" for m, name in legacy.items() if m <= minor]
        return tags


class WheelhouseError(Exception):
    """The wheelhouse cannot be made; the message says why."""


def image_extras(containerfile: Path) -> list[str]:
    """The extras on the Containerfile's ``ARG EXTRAS=`` line."""
    match = re.search(r"^ARG EXTRAS=(.*)$", containerfile.read_text(), re.MULTILINE)
    if match is None:
        raise WheelhouseError(f"{containerfile} has no ARG EXTRAS= line")
    return [e.strip() for e in match.group(1).split(",") if e.strip()]


def requirements(pyproject: Path, extras: Sequence[str]) -> list[str]:
    """The project's dependencies, those of *extras* and the build backend's."""
    project = tomllib.loads(pyproject.read_text())
    optional = project["project"].get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise WheelhouseError(f"ARG EXTRAS names extras pyproject.toml lacks: {', '.join(unknown)}")
    wanted = list(project["project"]["dependencies"])
    for extra in extras:
        wanted += optional[extra]
    wanted += project["build-system"]["requires"]
    return wanted


def probe(podman: Sequence[str], flags: Sequence[str], base: str) -> Target:
    """Ask *base* which Python, machine and C library it has."""
    done = subprocess.run(
        [*podman, "run", "--rm", "--network=none", *flags, base, "python3", "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise WheelhouseError(
            f"cannot run python3 in the base image {base} (BASE must provide python3): "
            f"{done.stderr.strip()[-500:]}"
        )
    try:
        target = Target(*json.loads(done.stdout.strip().splitlines()[-1]))
    except (ValueError, TypeError, IndexError):
        raise WheelhouseError(f"unexpected answer from {base}: {done.stdout[-200:]!r}") from None
    if target.libc != "glibc":
        raise WheelhouseError(f"{base} has {target.libc or 'no known C library'}, not glibc")
    return target


def fingerprint(target: Target, wanted: Sequence[str]) -> str:
    text = json.dumps([list(target), sorted(wanted)])
    return hashlib.sha256(text.encode()).hexdigest()


def gather(dest: Path, target: Target, wanted: Sequence[str], python: str) -> None:
    """Download every wheel *wanted* needs for *target* into *dest*, replacing it."""
    staging = dest.with_name(dest.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [
        python, "-m", "pip", "download", "-q", "--disable-pip-version-check",
        "--only-binary=:all:", "--dest", str(staging),
        "--python-version", target.python, "--implementation", "cp",
        "--abi", target.abi,
        *(arg for tag in target.platforms for arg in ("--platform", tag)),
        *wanted,
    ]  # fmt: skip
    done = subprocess.run(command, check=False, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise WheelhouseError(
            f"pip could not gather wheels for Python {target.python} on {target.platform} "
            f"(command: {shlex.join(command[:4])} ...); see pip's message above"
        )
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the image the container is built on")
    parser.add_argument("--podman", default="podman", help="the podman command (may hold flags)")
    parser.add_argument(
        "--run-flags", default="", help="podman run flags, e.g. --ulimit within the host's limits"
    )
    parser.add_argument("--dest", type=Path, default=ROOT / "wheelhouse")
    parser.add_argument("--python", default=sys.executable, help="whose pip downloads")
    args = parser.parse_args(argv)
    try:
        wanted = requirements(ROOT / "pyproject.toml", image_extras(ROOT / "Containerfile"))
        target = probe(shlex.split(args.podman), shlex.split(args.run_flags), args.base)
        stamp = fingerprint(target, wanted)
        complete = args.dest / STAMP
        if complete.is_file() and complete.read_text().strip() == stamp:
            print(f"wheelhouse: up to date for Python {target.python} ({target.platform})")
            return 0
        gather(args.dest, target, wanted, args.python)
        complete.write_text(stamp + "\n")
    except WheelhouseError as exc:
        print(f"wheelhouse: {exc}", file=sys.stderr)
        return 1
    count = len(list(args.dest.glob("*.whl")))
    print(f"wheelhouse: {count} wheels for Python {target.python} ({target.platform})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
