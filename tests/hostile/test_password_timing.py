"""Timing tells nothing of who exists, in a password file of mixed hash kinds too.

Issue 12 item 10's fix checks an unknown user against the slowest hash kind in the
file. In a file being migrated from the original gateway, some users are still on
its ``$7$`` (PBKDF2-SHA3, about 200 ms of CPU) and the ones who logged in since are
on scrypt (about 40 ms): a wrong password for a scrypt user is then answered in a
fifth of the time an unknown name takes, so the fast answers list exactly the
users who are active. Every failed check must cost the same, whoever it names.

CPU time of the real gateway process (all threads), as test_password_checks.py
measures it, so a busy machine does not decide the outcome.
"""

from __future__ import annotations

from tests.hostile.test_password_checks import (  # noqa: F401 - the fixture
    Gateway,
    failed_login_cpu,
    start,
)
from tests.hostile.wire import basic


def test_a_user_on_the_fast_hash_costs_what_an_unknown_user_costs(
    start: object,  # noqa: F811 - the fixture imported above
) -> None:
    gw: Gateway = start(AUTH_CACHE_TTL="0")  # type: ignore[operator]
    spent = failed_login_cpu(gw, known=basic("alice", "a guess"))
    assert spent["known"] > 0.7 * spent["unknown"], spent
    assert spent["unknown"] > 0.7 * spent["known"], spent
