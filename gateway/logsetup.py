"""Logging set-up: plain text or JSON lines (``LOG_FORMAT``), to stderr."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

# What of a parser's complaint may be logged: its words, never the bytes it quotes.
_REASON = re.compile(r"[A-Za-z0-9 ]{0,80}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; audit records carry their fields as keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "audit", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class MalformedRequests(logging.Filter):
    """One line, without the request's bytes, for the requests aiohttp cannot parse.

    aiohttp logs each at ERROR with a traceback and the offending bytes quoted: a
    malformed ``Authorization`` line reached the log with its credentials, and any
    client could write a kilobyte of log a request. What is left is at most one
    warning per *interval*, saying how many came since the last one and why the
    last was refused.
    """

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._last = -math.inf
        self._count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self._count += 1
        now = self._clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        match = _REASON.match(str(exc.message).strip())
        reason = match.group().strip() if match else ""
        peer = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
        record.msg = (
            "%d malformed HTTP request(s) answered 400 since the last such line (at most "
            "one every %gs); the last from %s: %s"
        )
        record.args = (self._count, self.interval, peer, reason or "unreadable")
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self._count = 0
        return True


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would print every request line; our audit line says what matters.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    server = logging.getLogger("aiohttp.server")
    for old in [f for f in server.filters if isinstance(f, MalformedRequests)]:
        server.removeFilter(old)
    server.addFilter(MalformedRequests())
