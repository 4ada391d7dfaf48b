"""Shared fixtures."""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Generator

import pytest

from tests import hangs

# Fixtures for every test: one PostgreSQL per session, and a fresh database in it.
from tests.servers.postgres import postgres_database, postgres_server  # noqa: F401

_B64URL = string.ascii_letters + string.digits + "-_"


def make_value() -> str:
    """A random dns-01 TXT value: 43 base64url characters."""
    return "".join(secrets.choice(_B64URL) for _ in range(43))


@pytest.fixture
def value() -> str:
    return make_value()


# -- a test that hangs says where (faulthandler_timeout in pyproject.toml) --------

_TERMINAL = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    # Output capture is off while pytest configures: this is the terminal, as
    # pytest's faulthandler plugin takes it too.
    config.stash[_TERMINAL] = os.dup(2)


def pytest_unconfigure(config: pytest.Config) -> None:
    os.close(config.stash[_TERMINAL])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    timeout = float(item.config.getini("faulthandler_timeout") or 0)
    if timeout <= 0:
        return (yield)
    timer = hangs.arm(timeout, item.nodeid, item.config.stash[_TERMINAL])
    try:
        return (yield)
    finally:
        timer.cancel()
