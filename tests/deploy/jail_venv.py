"""An interpreter with the gateway's dependencies that an unprivileged user can run.

The jail test runs the gateway as ``nobody``, who cannot use the test's own
interpreter when it lives in root's home (pyenv, a venv in a checkout under
``/root``). So, as an administrator would on the jail host, the test makes a
venv from Debian's ``/usr/bin/python3`` in a world-readable place and installs
the project's dependencies (read from ``pyproject.toml``) into it with pip. It
is cached under ``ACMEGW_TEST_CACHE``, keyed by the dependency list and the
interpreter's version, so only the first run pays (about half a minute).
The project's own code is not installed there: each run copies the checkout's
packages next to the gateway's configuration, so the venv never goes stale.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

from tests.deploy.debian_base import CACHE, cache_lock

PIP_TIMEOUT = 600.0


def dependencies(pyproject: Path) -> list[str]:
    with pyproject.open("rb") as f:
        return list(tomllib.load(f)["project"]["dependencies"])


def ensure_jail_venv(python: str, pyproject: Path) -> Path:
    """The venv's interpreter, made (once) from *python* with the project's dependencies."""
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version)"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    deps = dependencies(pyproject)
    key = hashlib.sha256("\n".join([python, version, *deps]).encode()).hexdigest()[:12]
    venv = CACHE / f"jail-venv-{key}"
    complete = venv / ".complete"
    with cache_lock(CACHE / f"jail-venv-{key}.lock"):
        if complete.is_file():
            return venv / "bin" / "python"
        shutil.rmtree(venv, ignore_errors=True)
        old_umask = os.umask(0o022)
        try:
            CACHE.chmod(0o755)
            subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
            done = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                 "--disable-pip-version-check", "--no-cache-dir", *deps],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT,
                check=False,
            )  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"pip install into {venv} failed:\n{done.stderr[-3000:]}")
        finally:
            os.umask(old_umask)
        complete.write_text(version + "\n")
    return venv / "bin" / "python"
