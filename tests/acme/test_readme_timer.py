"""The systemd service and timer the README gives for ``acmegw-acme renew``, checked by
systemd itself (``systemd-analyze verify`` in an alternate root holding systemd's own
units and a stand-in for the command, so nothing on this machine is touched): a user
copies them as they are, and systemd must find nothing to say about them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.gateway.procs import REPO_ROOT
from tests.system import systemd_verify


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
    done = systemd_verify(tmp_path / "root", readme_units(), ["/usr/local/bin/acmegw-acme"])
    # systemd-analyze exits 0 on unknown keys and bad values: its output counts.
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr
