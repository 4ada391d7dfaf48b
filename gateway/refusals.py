"""One audit line per refusal, so that a refused name or login leaves a trace.

Every 401, 403 and 429 the gateway answers — a name outside the caller's domains,
a wrong password, a client address not allowed, a login flood — is logged on the
``acmegw.audit`` logger with who claimed to call (the user name sent, or ``-``),
the client address, the name asked for (``-`` when none was reached) and the
reason: ``action=refused``, with ``result`` as a change's audit line has it
(``403 outside the user's domains (shop.example.com)``). The reason may say more
than the answer, which never names anyone's domains; it never holds a secret.

A flood must not fill the disk: in each window of ``window`` seconds (60) at most
``per_client`` lines (10) are written per client address (per /64 for IPv6) and
``total`` lines (100) in all. The rest are counted; when the window ends (or the
gateway stops) one line per client says how many were suppressed, with the last
one's user, name and reason (``action=refusals-suppressed``): "27 more refusals
from 192.0.2.7 suppressed in the last 60s", for the ``top`` clients (10) with the
most, and one line more for all the others together. So a window writes at most
``total + top + 1`` lines, however many clients flood.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway.auth import client_address, client_key, parse_basic
from gateway.config import AuthConfig
from gateway.errors import GatewayError

audit = logging.getLogger("acmegw.audit")

# The statuses that refuse a caller (rather than a malformed or failed request).
REFUSED = frozenset({401, 403, 429})
_MAX_USER = 64
# Clients whose suppressed refusals are counted one by one; the rest count together.
_MAX_COUNTED = 10_000


@dataclass(frozen=True)
class Refusal:
    user: str
    client: str
    name: str
    result: str


class RefusalAudit:
    """Writes the refusal lines within the limits described in the module docstring."""

    def __init__(
        self,
        per_client: int = 10,
        total: int = 100,
        window: float = 60.0,
        top: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.total = total
        self.window = window
        self.top = top
        self._clock = clock
        self._start: float | None = None
        self._written = 0
        self._lines: dict[str, int] = {}
        self._suppressed: dict[str, tuple[int, Refusal]] = {}
        self._others = 0  # suppressed refusals of clients past _MAX_COUNTED
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, refusal: Refusal) -> None:
        now = self._clock()
        if self._start is None or now - self._start >= self.window:
            self.flush()
            self._start = now
        key = client_key(refusal.client)
        lines = self._lines.get(key, 0)
        if lines < self.per_client and self._written < self.total:
            self._lines[key] = lines + 1
            self._written += 1
            _write(refusal)
            return
        count, _ = self._suppressed.get(key, (0, refusal))
        if count or len(self._suppressed) < _MAX_COUNTED:
            self._suppressed[key] = (count + 1, refusal)
        else:
            self._others += 1
        self._flush_later(now)

    def _flush_later(self, now: float) -> None:
        """Say what was suppressed when the window ends, even if no refusal follows."""
        if self._timer is not None or self._start is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test with its own clock): flush() is called by hand
        self._timer = loop.call_later(max(0.0, self._start + self.window - now), self.flush)

    def flush(self) -> None:
        """Write the suppressed counts of the window that ends now, and start afresh."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        ranked = sorted(self._suppressed.items(), key=lambda item: -item[1][0])
        for key, (count, last) in ranked[: self.top]:
            _write_summary(key, count, last, self.window)
        rest = ranked[self.top :]
        others = self._others + sum(count for _, (count, _) in rest)
        if others:
            clients = f"{len(rest)} more clients" if not self._others else "other clients"
            audit.info(
                "%d more refusals from %s suppressed in the last %gs",
                others,
                clients,
                self.window,
                extra={
                    "audit": {
                        "action": "refusals-suppressed",
                        "client": clients,
                        "count": others,
                        "window": self.window,
                    }
                },
            )
        self._start = None
        self._written = 0
        self._lines.clear()
        self._suppressed.clear()
        self._others = 0


def refusal(request: web.Request, exc: GatewayError, auth: AuthConfig) -> Refusal:
    """What to log of *exc*, answered to *request*: never a password, never a value."""
    try:
        client = str(client_address(request, auth))
    except GatewayError:  # a garbled forwarding header: the peer is who we know
        peer = request.transport.get_extra_info("peername") if request.transport else None
        client = str(peer[0]) if peer else "-"
    try:
        basic = parse_basic(request)
    except GatewayError:
        basic = None
    user = basic[0] if basic else request.headers.get("X-Api-User", "")
    return Refusal(
        user=_shown(user) if user else "-",
        client=client,
        name=exc.name or "-",
        result=f"{exc.status} {exc.logged}",
    )


def _shown(user: str) -> str:
    """A claimed user name as a log field: short, and quoted when it could pass for
    more fields or lines."""
    user = user[:_MAX_USER]
    if user.isprintable() and not any(c in user for c in ' ="'):
        return user
    return json.dumps(user)


def _write(r: Refusal) -> None:
    audit.info(
        "user=%s client=%s action=refused fqdn=%s result=%s",
        r.user,
        r.client,
        r.name,
        r.result,
        extra={
            "audit": {
                "user": r.user,
                "client": r.client,
                "action": "refused",
                "fqdn": r.name,
                "result": r.result,
            }
        },
    )


def _write_summary(key: str, count: int, last: Refusal, window: float) -> None:
    audit.info(
        "%d more refusals from %s suppressed in the last %gs (last: user=%s fqdn=%s result=%s)",
        count,
        key,
        window,
        last.user,
        last.name,
        last.result,
        extra={
            "audit": {
                "action": "refusals-suppressed",
                "client": key,
                "count": count,
                "window": window,
                "user": last.user,
                "fqdn": last.name,
                "result": last.result,
            }
        },
    )
