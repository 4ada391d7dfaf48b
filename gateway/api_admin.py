"""Operator endpoints: ``/healthz``, ``/metrics``, ``/records``, ``/openapi.json``
and ``/accounts``.

Who may call each is declared in :mod:`gateway.routes`: ``/metrics`` any
admitted caller; ``/records`` (the pending records with age and owner) and
``/accounts`` admin users and allowed hosts; ``/healthz`` and the API
description anyone. No answer shows a TXT value: only its short tag, as the
audit log does.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web

from gateway.auth import Identity, caller
from gateway.errors import Conflict, NotFound
from gateway.keys import ACCOUNTS, JOURNAL, METRICS, SERVICE, STATE
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import document
from lib.names import value_tag

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """Liveness without authentication; says nothing about users or names.

    503 while the state's database cannot be used: no change could be
    journaled, so a load balancer should send requests to another replica.
    """
    await request.app[STATE].check()
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render()
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
        for r in await request.app[JOURNAL].all()
    ]
    return web.json_response({"records": rows})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


async def delete_account(request: web.Request) -> web.Response:
    """``DELETE /accounts/{username}``: the account stops working at once, and the
    values it published are withdrawn.

    The account API is ``/accounts`` (``GET`` to list and ``POST
    /accounts/{username}/key`` to rotate fit beside this).
    """
    admin = caller(request)
    username = request.match_info["username"]
    store = request.app[ACCOUNTS]
    if store.is_static(username):
        raise Conflict(
            f"account {username} comes from ACMEDNS_ACCOUNTS_FILE: remove it there and "
            "reload the gateway (SIGHUP)"
        )
    account = await store.delete(username)
    if account is None:
        raise NotFound(f"no acme-dns account {username}")
    # Its values go with it: nobody may tear them down any more.
    owner = Identity(admin.client, account.label, None, account=account)
    change = await request.app[SERVICE].remove_own(owner, account.fqdn)
    log.info(
        "acme-dns account %s (%s) deleted by %s; %d value(s) withdrawn",
        username,
        account.fqdn,
        admin.label,
        len(change.values),
    )
    return web.json_response(
        {"username": username, "fulldomain": account.fqdn, "withdrawn": len(change.values)}
    )
