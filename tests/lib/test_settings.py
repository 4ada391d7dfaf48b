"""Settings reading: every problem collected, secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.settings import ConfigError, Settings


def test_problems_are_collected_not_raised() -> None:
    s = Settings({"A": "x", "B": "70000", "C": "soon", "D": "maybe", "E": "blue"})
    s.integer("A", 1, 0, 10)
    s.integer("B", 1, 0, 65535)
    s.duration("C", 1.0, 0, 10)
    s.boolean("D")
    s.choice("E", {"red": 1, "green": 2}, 0)
    assert len(s.problems) == 5
    with pytest.raises(ConfigError) as info:
        s.raise_problems()
    assert len(info.value.problems) == 5


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("30s", 30),
        ("5m", 300),
        ("1h", 3600),
        ("1d", 86400),
        (" 2 H ", 7200),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert Settings({"X": text}).duration("X", 0, 0, 10**6) == seconds


def test_empty_means_unset() -> None:
    s = Settings({"A": "", "B": "  "})
    assert s.get("A", "d") == "d"
    assert s.get("B") is None
    assert s.items("A") == []


def test_items_split_on_commas_and_blanks() -> None:
    assert Settings({"L": " a, b  c,,d "}).items("L") == ["a", "b", "c", "d"]


def test_keys_with_prefix_lists_the_set_keys_in_order() -> None:
    settings = Settings({"LEXICON_X_B": "1", "LEXICON_X_A": "2", "LEXICON_X_EMPTY": " ",
                         "LEXICON_Y": "3", "OTHER": "4"})
    assert settings.keys_with_prefix("LEXICON_X_") == ["LEXICON_X_A", "LEXICON_X_B"]


def test_secret_from_file_keeps_inner_whitespace(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("  pass word \n")
    assert Settings({"PW_FILE": str(f)}).secret("PW") == "  pass word "


def test_secret_both_set_is_a_problem(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("x")
    s = Settings({"PW": "y", "PW_FILE": str(f)})
    assert s.secret("PW") is None
    assert s.problems == ["PW and PW_FILE are both set; keep one"]


def test_secret_missing_file_names_file_not_content(tmp_path: Path) -> None:
    s = Settings({"PW_FILE": str(tmp_path / "nope")})
    assert s.secret("PW") is None
    assert "nope" in s.problems[0]


def test_secret_empty_file_is_a_problem(tmp_path: Path) -> None:
    f = tmp_path / "secret"
    f.write_text("\n")
    s = Settings({"PW_FILE": str(f)})
    assert s.secret("PW") is None
    assert s.problems


def test_choice_is_case_insensitive() -> None:
    assert Settings({"M": "SuFFicient"}).choice("M", {"sufficient": 1}, 0) == 1


@pytest.mark.parametrize(("text", "zone"), [
    ("Example.Test.", "example.test"),
    ("Bücher.Example", "xn--bcher-kva.example"),
])
def test_zone_is_written_as_every_name(text: str, zone: str) -> None:
    settings = Settings({"Z": text})
    assert settings.zone("Z") == zone
    assert settings.problems == []
    assert Settings({}).zone("Z") is None


@pytest.mark.parametrize(("text", "why"), [
    ("*.example.test", "is a wildcard"),
    ("a..example.test", "empty label"),
])
def test_a_zone_that_is_no_zone_name_is_a_problem(text: str, why: str) -> None:
    settings = Settings({"Z": text})
    assert settings.zone("Z") is None
    assert len(settings.problems) == 1
    assert settings.problems[0].startswith(f"Z={text!r} is not a zone name: it ")
    assert why in settings.problems[0]


def test_the_same_problem_is_listed_once() -> None:
    # The gateway's acme-dns settings and the builtin provider both read BUILTIN_ZONE.
    settings = Settings({"BUILTIN_ZONE": "*.acme.example.test"})
    settings.zone("BUILTIN_ZONE")
    settings.zone("BUILTIN_ZONE")
    assert len(settings.problems) == 1
