"""hook.conf: the hook's quick reading of plain lines is python-dotenv's reading.

The hook reads a hook.conf of plain lines itself and hands anything else to
python-dotenv (loading it costs each run some 5 ms). These tests hold the quick
path to python-dotenv's results: hypothesis writes files from the characters that
matter to the dotenv syntax, and wherever the quick path answers, python-dotenv
(the installed version) must give the same settings and no complaint.
"""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hooks.acmegw_hook import SettingsError, _plain_dotenv, read_conf
from tests.e2e_hook.rig import write_hook_conf

README = Path(__file__).resolve().parents[2] / "README.md"


def python_dotenv(text: str) -> tuple[dict[str, str], list[str]]:
    complaints: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            complaints.append(record.getMessage())

    logger = logging.getLogger("dotenv.main")
    handler = Collect()
    logger.addHandler(handler)
    try:
        parsed = dotenv_values(stream=io.StringIO(text), interpolate=False)
    finally:
        logger.removeHandler(handler)
    return {k: v for k, v in parsed.items() if v is not None}, complaints


# What each part of a line is made of: the characters the dotenv syntax cares about.
SYNTAX = " \t=#'\"\\$\f\r\xa0é:"
pieces = st.text(alphabet=st.sampled_from(list(SYNTAX) + list("aZ_09.-/")), max_size=12)
keys = st.one_of(st.sampled_from(["ACMEGW_URL", "API_PASSWD", "_k", "k9", "export"]), pieces)
spacing = st.sampled_from(["", " ", "\t", "  "])


@st.composite
def lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["binding", "binding", "binding", "comment", "blank", "raw"]))
    if kind == "comment":
        return draw(spacing) + "#" + draw(pieces)
    if kind == "blank":
        return draw(spacing)
    if kind == "raw":
        return draw(pieces)
    quote = draw(st.sampled_from(["", "'", '"']))
    value = quote + draw(pieces) + quote
    tail = draw(st.sampled_from(["", " ", " # comment", "#c", draw(pieces)]))
    export = draw(st.sampled_from(["", "export ", "export\t"]))
    return (f"{draw(spacing)}{export}{draw(keys)}{draw(spacing)}={draw(spacing)}"
            f"{value}{tail}")


files = st.lists(lines(), max_size=6).map("\n".join)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files)
@example("ACMEGW_URL=https://gw.example.net:8000/\nACMEGW_PASSWORD='p w: &x'\n")
@example("export KEY = \"quoted # not a comment\" # a comment")
@example("KEY=\nOTHER=  \nKEY=last wins")
@example("KEY='unterminated")
@example("  export  =  ")  # python-dotenv takes "export " as the prefix, then finds no key
@example("export=x")
@example("KEY=a #comment")
@example("KEY=a\\b")
def test_the_quick_path_reads_as_python_dotenv_does(text: str) -> None:
    quick = _plain_dotenv(text)
    if quick is None:
        return  # python-dotenv reads it
    expected, complaints = python_dotenv(text)
    assert complaints == []
    assert quick == expected


@pytest.mark.parametrize("text", [
    "KEY=a #comment",  # python-dotenv versions differ on what follows an unquoted value
    "KEY=\"a\\tb\"",  # escapes
    "KEY=two words",
    "KEY=jürgen",
    "KEY='multi\nline'",
    "KEY=a\r\nOTHER=b",
    "'QUOTED_KEY'=x",
    "KEY",
])
def test_anything_else_goes_to_python_dotenv(text: str) -> None:
    assert _plain_dotenv(text) is None


def test_the_files_the_readme_and_the_tests_write_are_plain(tmp_path: Path) -> None:
    block = re.search(r"```sh\n(# /etc/acmegw/hook\.conf.*?)```", README.read_text(), re.S)
    assert block is not None, "the README's hook.conf example moved"
    readme = _plain_dotenv(block.group(1))
    assert readme is not None and readme["ACMEGW_URL"] == "https://gw.example.net:8000/"
    assert readme["ACMEGW_PASSWORD"] == "the password acmegw-passwd generated"
    rig = write_hook_conf(tmp_path, "https://127.0.0.1:8443/", tmp_path / "ca.pem", httpd=False)
    assert _plain_dotenv(rig.read_text()) == python_dotenv(rig.read_text())[0]


def test_both_paths_through_read_conf(tmp_path: Path) -> None:
    conf = tmp_path / "hook.conf"
    conf.write_text('acmegw_url=https://gw/\nACMEGW_USER="with \\"escapes\\""  # c\n')
    conf.chmod(0o600)
    assert read_conf(str(conf), required=True) == {
        "ACMEGW_URL": "https://gw/", "ACMEGW_USER": 'with "escapes"'}
    conf.write_text("ACMEGW_URL=https://gw/\nnot a setting\n")
    with pytest.raises(SettingsError, match=r"line 2 cannot be parsed"):
        read_conf(str(conf), required=True)
