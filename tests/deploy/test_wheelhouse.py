"""tools/wheelhouse.py: the wheels are resolved for the base image's interpreter.

The container tests build the image from the wheelhouse for real; these check
the two rules that made an earlier wheelhouse unusable: wheels resolved for the
host's newer Python (soupsieve needed 3.11.5; Debian's python3 is 3.11.2), and
pip taking ``--platform manylinux_2_36`` literally (no older manylinux wheel).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.wheelhouse import Target, WheelhouseError, image_extras, requirements

ROOT = Path(__file__).resolve().parents[2]


def test_every_older_manylinux_tag_is_offered_for_the_base_c_library() -> None:
    target = Target("3.11.2", "x86_64", "glibc", "2.36")
    assert target.abi == "cp311"
    tags = target.platforms
    assert tags[0] == "manylinux_2_36_x86_64"
    for tag in ("manylinux_2_34_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
        assert tag in tags
    assert "manylinux_2_37_x86_64" not in tags


def test_requirements_are_the_dependencies_the_image_extras_and_the_build_backend(
    tmp_path: Path,
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[build-system]\nrequires = ["setuptools>=77"]\n'
        '[project]\nname = "x"\ndependencies = ["aiohttp>=3"]\n'
        '[project.optional-dependencies]\nlexicon = ["dns-lexicon>=3"]\ntest = ["pytest"]\n'
    )
    wanted = requirements(pyproject, ["lexicon"])
    assert wanted == ["aiohttp>=3", "dns-lexicon>=3", "setuptools>=77"]
    with pytest.raises(WheelhouseError, match="nosuch"):
        requirements(pyproject, ["nosuch"])


def test_the_image_extras_are_read_from_the_containerfile() -> None:
    extras = image_extras(ROOT / "Containerfile")
    text = (ROOT / "Containerfile").read_text()
    assert f"ARG EXTRAS={','.join(extras)}" in text
