"""When is a certificate due? ARI when the CA offers it, else a third of its lifetime left.

ARI (RFC 9773): the CA suggests a window; the client picks a moment uniformly
at random inside it, once per window (kept in the lineage, so that cron runs
do not re-draw until one lands early), and renews once that moment has come.
A window that has already ended means "renew now" (the CA may be about to
revoke). The CA's ``Retry-After`` says when to ask again; until then the kept
window is used without asking.

Without ARI (or when asking fails), a certificate is due when less than a
third of its lifetime is left: day 60 of Let's Encrypt's 90, day 4 of a
6-day certificate.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass

from lib.acme.messages import RenewalInfo
from lib.acme.store import Lineage, iso, parse_iso

# Bounds on the CA's Retry-After for ARI: ask at least daily, at most hourly.
ARI_RECHECK_MIN = datetime.timedelta(hours=1)
ARI_RECHECK_MAX = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str


def by_lifetime(lineage: Lineage, now: datetime.datetime) -> Decision:
    if not lineage.not_after or not lineage.not_before:
        return Decision(True, "no certificate yet")
    not_before, not_after = parse_iso(lineage.not_before), parse_iso(lineage.not_after)
    left = not_after - now
    lifetime = not_after - not_before
    if left <= lifetime / 3:
        return Decision(True, f"{_days(left)} of {_days(lifetime)} left (less than a third)")
    return Decision(False, f"{_days(left)} of {_days(lifetime)} left; due at "
                           f"{iso(not_after - lifetime / 3)}")


def remember_window(lineage: Lineage, info: RenewalInfo, now: datetime.datetime,
                    rng: random.Random | None = None) -> None:
    """Keep the CA's window in *lineage*, drawing a new moment only for a new window."""
    window = {"start": info.start, "end": info.end}
    if lineage.ari_window != window or not lineage.ari_chosen:
        start, end = parse_iso(info.start), parse_iso(info.end)
        span = max(0.0, (end - start).total_seconds())
        offset = (rng or random.SystemRandom()).uniform(0.0, span)
        lineage.ari_window = window
        lineage.ari_chosen = iso(start + datetime.timedelta(seconds=offset))
    wait = datetime.timedelta(seconds=info.retry_after) if info.retry_after else ARI_RECHECK_MAX
    lineage.ari_next_check = iso(now + min(max(wait, ARI_RECHECK_MIN), ARI_RECHECK_MAX))


def ari_check_due(lineage: Lineage, now: datetime.datetime) -> bool:
    """Whether to ask the CA again (no window kept, or its Retry-After has passed)."""
    if not lineage.ari_window or not lineage.ari_next_check:
        return True
    return now >= parse_iso(lineage.ari_next_check)


def by_window(lineage: Lineage, now: datetime.datetime) -> Decision:
    assert lineage.ari_window is not None and lineage.ari_chosen is not None
    end = parse_iso(lineage.ari_window["end"])
    chosen = parse_iso(lineage.ari_chosen)
    if now >= end:
        return Decision(True, f"the CA's renewal window ended at {iso(end)} (ARI)")
    if now >= chosen:
        return Decision(True, f"inside the CA's renewal window, past the chosen moment "
                              f"{iso(chosen)} (ARI)")
    return Decision(False, f"the CA suggests renewing at {iso(chosen)} "
                           f"(window {lineage.ari_window['start']} to "
                           f"{lineage.ari_window['end']}, ARI)")


def _days(delta: datetime.timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.1f} days" if abs(days) < 10 else f"{days:.0f} days"
