"""Operator endpoints: ``/metrics``, ``/records`` and ``/openapi.json``.

``/metrics`` needs an authenticated user or an allowed host; ``/records`` (the
pending records with age and owner) needs an admin user or an allowed host.
Neither shows a TXT value: only its short tag, as the audit log does.
"""

from __future__ import annotations

import time

from aiohttp import web

from gateway.errors import Forbidden
from gateway.keys import AUTHENTICATOR, JOURNAL, METRICS
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import document
from lib.names import value_tag


async def metrics(request: web.Request) -> web.Response:
    await request.app[AUTHENTICATOR].authenticate(request)
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def records(request: web.Request) -> web.Response:
    identity = await request.app[AUTHENTICATOR].authenticate(request)
    if not (identity.admin or identity.user is None):
        raise Forbidden("only admin users or allowed hosts may list records")
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
