"""Operator endpoints: ``/healthz``, ``/metrics``, ``/records``, ``/openapi.json``
and ``/accounts``.

Who may call each is declared in :mod:`gateway.routes`: ``/metrics`` any
admitted caller; ``/records`` (the pending records with age and owner) and
``/accounts`` admin users and allowed hosts; ``/healthz`` and the API
description anyone. No answer shows a TXT value: only its short tag, as the
audit log does.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.keys import JOURNAL, METRICS
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import document
from lib.names import value_tag


async def healthz(request: web.Request) -> web.Response:
    """Liveness without authentication; says nothing about users or names."""
    request.app[JOURNAL].count()
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def records(request: web.Request) -> web.Response:
    now = time.time()
    rows = [
        {
            "fqdn": r.fqdn,
            "value": value_tag(r.value),
            "owner": r.owner,
            "state": r.state,
            "age": round(now - r.created, 1),
        }
        for r in request.app[JOURNAL].all()
    ]
    return web.json_response({"records": rows})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))
