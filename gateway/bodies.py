"""Reading request bodies safely: bounded size, JSON objects only."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge, RequestTimeout
from gateway.keys import LIVE

_BODY = web.RequestKey("body", bytes)


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past *limit* bytes, 400 for anything else wrong.

    The Content-Type is not checked: the original gateway's documented curl
    wrapper sends JSON as ``application/x-www-form-urlencoded``.
    """
    raw = await read_body(request, limit)
    if not raw.strip():
        raise BadRequest("body", "empty; expected a JSON object")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("body", f"not valid JSON ({_short(exc)})") from None
    except RecursionError:
        # A few kilobytes of "[[[[..." would otherwise end as a 500.
        raise BadRequest("body", "JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "expected a JSON object")
    return data


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however many segments or chunks it came in; 413 past *limit*,
    408 when it does not come within ``HTTP_BODY_TIMEOUT``. Read once: a second call
    (the access middleware reads it before judging the caller) returns the same."""
    if _BODY in request:
        return request[_BODY]
    request[_BODY] = raw = await _read(request, limit)
    return raw


async def _read(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    timeout = request.app[LIVE].config.connections.body_timeout
    # One read() returns what has arrived so far, which may be part of the body.
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(limit + 1 - size):
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is larger than {limit} bytes")
    except TimeoutError:
        raise RequestTimeout(
            f"body: not received within {timeout:g}s (HTTP_BODY_TIMEOUT)"
        ) from None
    return b"".join(parts)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120]
