"""README's "Which provider for my DNS host" table agrees with the installed dns-lexicon.

``make test`` installs the lexicon extra, so a lexicon upgrade that adds, drops
or renames a provider fails here until ``make provider-table`` is run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.system import unavailable
from tools import provider_table


@pytest.fixture(autouse=True)
def lexicon_installed() -> None:
    try:
        import lexicon  # noqa: F401
    except ImportError:
        unavailable("dns-lexicon is not installed (pip install -e '.[test,lexicon]')")


def test_the_readme_table_is_the_installed_lexicons() -> None:
    assert provider_table.main(["--check"]) == 0


def test_every_lexicon_provider_has_a_row_and_the_rest_too() -> None:
    text = provider_table.README.read_text()
    for name in provider_table.lexicon_providers():
        assert f"`LEXICON_PROVIDER={name}`" in text
    for provider in ("`rfc2136`", "`powerdns`", "`cloudflare`", "`openprovider`",
                     "`exec` or `builtin`"):
        assert f"| {provider} |" in text


def test_check_fails_on_a_table_that_disagrees(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    readme = tmp_path / "README.md"
    text = provider_table.README.read_text()
    # As if the installed lexicon had gained a provider: the README lacks its row.
    readme.write_text("\n".join(line for line in text.splitlines()
                                if "LEXICON_PROVIDER=hetzner`" not in line) + "\n")
    monkeypatch.setattr(provider_table, "README", readme)
    assert provider_table.main(["--check"]) == 1
    assert provider_table.main([]) == 0  # rewrites it
    assert provider_table.main(["--check"]) == 0
    assert readme.read_text() == text
