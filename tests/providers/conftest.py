"""Fixtures shared by the provider test modules."""

from __future__ import annotations

import pytest

from providers.base import Provider


@pytest.fixture
def names() -> list[str]:
    """Challenge names in two zones, which every test server and fake serves."""
    return ["_acme-challenge.example.test", "_acme-challenge.www.example.org"]


@pytest.fixture
def twin_provider() -> Provider:
    """A second gateway's provider on the same DNS data; modules that have one override this."""
    pytest.skip("no second provider on the same DNS data (each builtin server serves its own)")
