"""Keeping secrets out of the texts providers pass on: error messages, answers, log lines.

Programs and libraries a provider drives (an original-gateway class, lexicon,
an ``exec`` program) see the DNS API's credentials, and their messages often
carry them: a URL with credentials, a ``%r`` of their arguments, a debug line.
:func:`redact` replaces every common printed form of each secret with ``***``.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence

# Names of settings and variables whose values are credentials.
SECRET_NAME = re.compile(r"(?i)pass|secret|token|key|auth|cred|pwd|private|otp")
# Shorter values are left alone: replacing every "ab" in a message would hide
# more than it protects.
MIN_SECRET_LENGTH = 4


def _secret_forms(secret: str) -> list[str]:
    """*secret* as str(), repr(), JSON, bytes repr() and URLs show it; longest first."""
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret.encode("utf-8"))[2:-1],
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    return sorted((f for f in forms if f), key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    """*text* with every common printed form of each secret replaced by ``***``."""
    for secret in secrets:
        for form in _secret_forms(secret):
            text = text.replace(form, "***")
    return text


def worth_hiding(values: Iterable[str | None]) -> tuple[str, ...]:
    """The *values* long enough for :func:`redact` to hide, longest first, without repeats."""
    kept = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    return tuple(sorted(kept, key=len, reverse=True))
