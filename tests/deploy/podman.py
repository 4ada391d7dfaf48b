"""Running rootful podman from tests: one place for the flags this machine needs.

Two things differ from podman's defaults here, and both are harmless elsewhere:

* podman's default ``nofile`` limit (1048576) can exceed the machine's hard
  limit, and then runc cannot start any container ("error setting rlimits").
  Every ``build`` and ``run`` therefore gets ``nofile`` at the caller's hard
  limit (at most 65536) and ``nproc`` 4096.
* The OCI runtime is runc, which the test's package list installs, so that a
  machine with several runtimes behaves like the CI machine.
"""

from __future__ import annotations

import resource
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _limit(kind: int, most: int) -> int:
    hard = resource.getrlimit(kind)[1]
    return most if hard == resource.RLIM_INFINITY else min(hard, most)


@dataclass(frozen=True)
class Image:
    """An image a test built, with what it cost."""

    tag: str
    base: str
    size: int
    base_seconds: float
    base_built: bool
    build_seconds: float
    build_log: str


class Podman:
    def __init__(self, program: str) -> None:
        self.program = program
        runc = shutil.which("runc") or (
            "/usr/sbin/runc" if Path("/usr/sbin/runc").is_file() else None
        )
        self.global_args = ["--runtime", runc] if runc else []
        nofile = _limit(resource.RLIMIT_NOFILE, 65536)
        nproc = _limit(resource.RLIMIT_NPROC, 4096)
        self.limits = [
            "--ulimit",
            f"nofile={nofile}:{nofile}",
            "--ulimit",
            f"nproc={nproc}:{nproc}",
        ]

    def __call__(
        self, *args: str, timeout: float = 120.0, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.program, *self.global_args, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args[:2])} failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def build(
        self,
        context: Path,
        tag: str,
        build_args: dict[str, str],
        mounts: list[str],
        timeout: float = 900.0,
    ) -> subprocess.CompletedProcess[str]:
        # --layers=false: no intermediate images left behind in podman's store
        # (the builder stage would otherwise stay as an unnamed image per run).
        args = [
            "build",
            "--layers=false",
            "--format",
            "docker",
            *self.limits,
            "-f",
            str(context / "Containerfile"),
            "-t",
            tag,
        ]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for mount in mounts:
            args += ["-v", mount]
        return self(*args, str(context), timeout=timeout)

    def make_image(
        self, repo: Path, tag: str, base: str, timeout: float = 900.0
    ) -> subprocess.CompletedProcess[str]:
        """``make image`` in *repo*: the wheelhouse, then the build with no network.

        ``--pull=never`` on top, so the build cannot reach a registry for the
        base either: *base* must be in podman's store.
        """
        build_flags = ["--pull=never", "--layers=false"]
        done = subprocess.run(
            [
                "make", "--no-print-directory", "-C", str(repo), "image",
                f"BASE={base}", f"IMAGE={tag}",
                f"PODMAN={shlex.join([self.program, *self.global_args])}",
                f"PODMAN_BUILD_FLAGS={shlex.join(build_flags)}",
                f"PODMAN_ULIMITS={shlex.join(self.limits)}",
            ],
            capture_output=True, text=True, timeout=timeout, check=False,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise AssertionError(
                f"make image failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                f"{done.stderr[-3000:]}"
            )
        return done

    def run_detached(self, *args: str) -> str:
        """``podman run -d`` with this machine's limits; the container's id."""
        return self("run", "-d", *self.limits, *args, timeout=120).stdout.strip()
