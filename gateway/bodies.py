"""Reading request bodies safely: bounded size, JSON objects only."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gateway.errors import BadRequest, PayloadTooLarge


async def read_json_object(request: web.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past *limit* bytes, 400 for anything else wrong.

    The Content-Type is not checked: the original gateway's documented curl
    wrapper sends JSON as ``application/x-www-form-urlencoded``.
    """
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"body is larger than {limit} bytes")
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


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:120]
