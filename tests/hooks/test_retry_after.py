"""``Retry-After``: the hook waits as long as the gateway asks, when that may help.

The gateway sheds load with 503 and ``Retry-After`` (its password-check queue is
full: ``AUTH_QUEUE_SIZE``, ``AUTH_QUEUE_WAIT``; too many connections), and its
failure limiter answers 429 with ``Retry-After`` to an address with too many
failed logins. The hook used to retry a 503 on its own back-off (0.5 s, then 1 s,
... — knocking again while told to stay away) and to give up on such a 429 at
once. Each test runs the hook as mod_md does, a process of its own, against a
stand-in on loopback (``stub`` in conftest) that counts the requests it gets; a
stand-in that answers 503 to every request that comes sooner than it asked makes
a hook that does not wait visible as extra requests, however slow the machine.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from hooks.acmegw_hook import MAX_ASKED_RETRIES, _retry_after
from hooks.transport import Reply
from tests.conftest import make_value
from tests.hooks.conftest import PASSWORDS, StubFactory, bare_env, gateway_like, spawn
from tests.hooks.conftest import Reply as Answer

SETUP = ["-m", "hooks.acmegw_hook", "setup", "example.test"]


def hook_env(url: str, timeout: str, log: Path) -> dict[str, str]:
    return bare_env(ACMEGW_URL=url, ACMEGW_USER="alice", ACMEGW_PASSWORD=PASSWORDS["alice"],
                    ACMEGW_TIMEOUT=timeout, ACMEGW_LOG=str(log))


def refusal(status: int, code: str, message: str, retry_after: str) -> Answer:
    """An answer as the gateway's error middleware makes it, with ``Retry-After``."""
    async def reply(body: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"error": code, "message": message}, status=status,
                                 headers={"Retry-After": retry_after})
    return reply


def insisting(status: int, code: str, seconds: int, count: int) -> list[Answer]:
    """*count* answers: *status* with ``Retry-After: seconds`` to every request that
    comes sooner than *seconds* after the first refusal, the confirmation after."""
    first: list[float] = []

    async def reply(body: dict[str, Any]) -> web.StreamResponse:
        now = time.monotonic()
        if not first:
            first.append(now)
        if now - first[0] < seconds:
            return await refusal(status, code, "too many password checks waiting; retry "
                                 f"in {seconds}s", str(seconds))(body)
        return await gateway_like(201)(body)

    return [reply] * count


@pytest.mark.usefixtures("no_etc_conf")
async def test_a_503_is_tried_again_after_the_wait_it_asks_for(
    stub: StubFactory, tmp_path: Path
) -> None:
    server = await stub(*insisting(503, "busy", 2, 8))
    log = tmp_path / "hook.log"
    status, out, err = await spawn([*SETUP, make_value()], hook_env(server.url, "30", log))
    assert (status, out, err) == (0, "", "")
    # Once turned away, once confirmed: no request while it was asked to stay away.
    assert len(server.requests) == 2
    assert "gateway answered 503: too many password checks waiting" in log.read_text()


@pytest.mark.usefixtures("no_etc_conf")
async def test_the_failure_limiters_429_is_waited_out(stub: StubFactory, tmp_path: Path) -> None:
    server = await stub(*insisting(429, "too_many_requests", 1, 8))
    status, out, err = await spawn([*SETUP, make_value()],
                                   hook_env(server.url, "30", tmp_path / "hook.log"))
    assert (status, out, err) == (0, "", "")
    assert len(server.requests) == 2


@pytest.mark.usefixtures("no_etc_conf")
@pytest.mark.parametrize(("status", "code"), [
    (401, "unauthorized"),  # a wrong password is never tried again, whatever the headers say
    (429, "too_many_records"),  # MAX_RECORDS_PER_USER: waiting is not what ends it
    (403, "forbidden"),
])
async def test_other_refusals_are_not_tried_again_even_with_retry_after(
    stub: StubFactory, tmp_path: Path, status: int, code: str
) -> None:
    server = await stub(refusal(status, code, "no", "1"), gateway_like(201))
    result, _, err = await spawn([*SETUP, make_value()],
                                 hook_env(server.url, "30", tmp_path / "hook.log"))
    assert result == 1 and f"gateway answered {status}: no" in err
    assert len(server.requests) == 1


@pytest.mark.usefixtures("no_etc_conf")
async def test_a_wait_past_the_deadline_is_not_waited_for(
    stub: StubFactory, tmp_path: Path
) -> None:
    server = await stub(*insisting(503, "busy", 30, 8))
    status, out, err = await spawn([*SETUP, make_value()],
                                   hook_env(server.url, "5", tmp_path / "hook.log"))
    assert status == 1 and out == ""
    assert err.count("\n") == 1, err
    assert "gateway answered 503: too many password checks waiting; retry in 30s" in err
    assert "not tried again: the gateway asks for a wait of 30s, and ACMEGW_TIMEOUT=5s" in err
    assert "AUTH_QUEUE_SIZE" in err
    assert len(server.requests) == 1


@pytest.mark.usefixtures("no_etc_conf")
async def test_the_waits_asked_for_are_a_few_at_most(stub: StubFactory, tmp_path: Path) -> None:
    server = await stub(*[refusal(503, "busy", "busy", "0")] * 10)
    status, _, err = await spawn([*SETUP, make_value()],
                                 hook_env(server.url, "30", tmp_path / "hook.log"))
    assert status == 1
    attempts = MAX_ASKED_RETRIES + 1
    assert f"gave up after {attempts} attempt(s)" in err, err
    assert len(server.requests) == attempts


def test_retry_after_as_seconds_or_as_a_date() -> None:
    def seconds(text: str | None) -> float | None:
        return _retry_after(Reply(503, "Service Unavailable", b"", text))

    assert seconds("7") == 7.0 and seconds(" 0 ") == 0.0
    later = format_datetime(datetime.fromtimestamp(time.time() + 100, UTC), usegmt=True)
    found = seconds(later)
    assert found is not None and 98 <= found <= 101
    assert seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: at once
    for junk in (None, "", "soon", "-5", "1.5", "٣"):
        assert seconds(junk) is None, junk
