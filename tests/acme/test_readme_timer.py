"""The systemd service and timer the README gives for ``acmegw-acme renew``, checked by
systemd itself (``systemd-analyze verify`` in an alternate root holding systemd's own
units and a stand-in for the command, so nothing on this machine is touched): a user
copies them as they are, and systemd must find nothing to say about them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.gateway.procs import REPO_ROOT
from tests.system import need_program

SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def readme_units() -> dict[str, str]:
    """Each file of the README's ``ini`` block, by name (``# /etc/systemd/system/X``)."""
    text = (REPO_ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```ini\n(.*?)```", text, re.S)
                 if "acmegw-acme.timer" in b)
    units: dict[str, str] = {}
    name = ""
    for line in block.splitlines(keepends=True):
        match = re.match(r"# /etc/systemd/system/(\S+)$", line.strip())
        if match:
            name = match.group(1)
            units[name] = ""
        elif name:
            units[name] += line
    return units


def test_the_readme_gives_a_service_and_its_timer() -> None:
    units = readme_units()
    assert set(units) == {"acmegw-acme.service", "acmegw-acme.timer"}
    assert "ExecStart=/usr/local/bin/acmegw-acme renew --quiet" in units["acmegw-acme.service"]


@pytest.mark.system
def test_systemd_accepts_the_readme_units(tmp_path: Path) -> None:
    analyze = need_program("systemd-analyze", "systemd")
    root = tmp_path / "root"
    shutil.copytree(SYSTEMD_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    folder = root / "etc/systemd/system"
    folder.mkdir(parents=True)
    for name, text in readme_units().items():
        (folder / name).write_text(text)
    command = root / "usr/local/bin/acmegw-acme"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    done = subprocess.run([analyze, "verify", f"--root={root}", "acmegw-acme.service",
                           "acmegw-acme.timer"],
                          capture_output=True, text=True, timeout=60, check=False)
    # systemd-analyze exits 0 on unknown keys and bad values: its output counts.
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr
