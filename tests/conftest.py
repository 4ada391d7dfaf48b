"""Shared fixtures."""

from __future__ import annotations

import secrets
import string

import pytest

# Fixtures for every test: one PostgreSQL per session, and a fresh database in it.
from tests.servers.postgres import postgres_database, postgres_server  # noqa: F401

_B64URL = string.ascii_letters + string.digits + "-_"


def make_value() -> str:
    """A random dns-01 TXT value: 43 base64url characters."""
    return "".join(secrets.choice(_B64URL) for _ in range(43))


@pytest.fixture
def value() -> str:
    return make_value()
