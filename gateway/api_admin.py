"""Operator endpoints: ``/healthz``, ``/metrics``, ``/records``, ``/openapi.json``
and ``/accounts``.

Who may call each is declared in :mod:`gateway.routes`: ``/metrics`` any
admitted caller; ``/records`` (the pending records with age and owner) and
``/accounts`` admin users and allowed hosts; ``/healthz`` and the API
description anyone. No answer shows a TXT value: only its short tag, as the
audit log does.

An admin user restricted to some domains sees, on ``/records``, only the
records for names within them and those of the accounts it administers.

``/accounts`` lists, rotates and deletes acme-dns accounts. An admin user
restricted to some domains sees only the accounts bound to names within them,
and the accounts under ``ACMEDNS_ZONE`` it registered itself
(:func:`gateway.acmedns.may_administer`); any other account is, to it, one that
does not exist (404, the answer for a name nobody has), so that it learns
nothing of others' accounts. No answer holds a key or a key's hash, except the
new key a rotation makes, once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import UTC, datetime

from aiohttp import web

from gateway.acmedns import Account, may_administer, names_answered
from gateway.auth import Identity, caller
from gateway.errors import BadRequest, Conflict, NotFound
from gateway.journal import Record
from gateway.keys import ACCOUNTS, JOURNAL, LIVE, METRICS, SERVICE, STATE
from gateway.metrics import CONTENT_TYPE
from gateway.openapi import document
from lib.names import InvalidName, is_within, normalize_name, value_tag

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
    """``GET /records``: the journaled records this admin may see. An admin restricted
    to some domains sees those for names within them, and those of the acme-dns
    accounts it administers; others' names stay unknown to it, as on ``/accounts``."""
    admin = caller(request)
    now = time.time()
    journaled = await request.app[JOURNAL].all()
    if admin.domains is not None:
        journaled = await _within_reach(request, admin, journaled)
    rows = [
        {
            "fqdn": r.fqdn,
            "value": value_tag(r.value),
            "owner": r.owner,
            "state": r.state,
            "age": round(now - r.created, 1),
        }
        for r in journaled
    ]
    return web.json_response({"records": rows})


async def _within_reach(
    request: web.Request, admin: Identity, journaled: list[Record]
) -> list[Record]:
    domains = admin.domains or ()
    delegations = request.app[LIVE].config.delegations
    administered = {
        account.label
        for account in await request.app[ACCOUNTS].all()
        if may_administer(domains, admin.label, account, delegations)
    }
    return [
        r
        for r in journaled
        if r.owner == admin.label
        or r.owner in administered
        or any(is_within(name, d) for name in names_answered(r.fqdn, delegations) for d in domains)
    ]


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


async def list_accounts(request: web.Request) -> web.Response:
    """``GET /accounts[?owner=LABEL][&name=NAME]``: the accounts this admin may
    administer, pre-registered ones first, then the registered ones oldest first."""
    admin = caller(request)
    owner, within = _account_filters(request)
    delegations = request.app[LIVE].config.delegations
    store = request.app[ACCOUNTS]
    published = Counter(record.owner for record in await request.app[JOURNAL].all())
    rows = [
        {
            "username": account.username,
            "fulldomain": account.fqdn,
            "subdomain": account.subdomain,
            "allowfrom": [str(n) for n in account.allowfrom],
            "owner": account.owner,
            "created": _timestamp(account.created),
            "source": "file" if store.is_static(account.username) else "registered",
            "values": published[account.label],
        }
        for account in await store.all(owner)
        if may_administer(admin.domains, admin.label, account, delegations)
        and (
            within is None
            or any(
                is_within(name, within)
                for name in (account.fqdn, *names_answered(account.fqdn, delegations))
            )
        )
    ]
    return web.json_response({"accounts": rows})


def _account_filters(request: web.Request) -> tuple[str | None, str | None]:
    """``owner`` (a registrant's label) and ``name`` (accounts for names within it).

    An unknown parameter is a 400, not ignored, and so is an empty one: a script
    that misspells a filter, or fills it from a variable that is empty, must not
    get (and act on) every account.
    """
    for key, value in request.query.items():
        if key not in ("owner", "name"):
            raise BadRequest(key, "unknown parameter; the filters are owner and name")
        if not value:
            raise BadRequest(key, "empty; leave the filter out to list every account")
    owner = request.query.get("owner")
    name = request.query.get("name")
    if name is None:
        return owner, None
    try:
        return owner, normalize_name(name)
    except InvalidName as exc:
        raise BadRequest("name", f"invalid name: {exc}") from None


def _timestamp(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _administered(request: web.Request, admin: Identity) -> Account:
    """The registered account the path names, if *admin* may administer it: 404
    when there is none it may see, 409 for a pre-registered one."""
    username = request.match_info["username"]
    store = request.app[ACCOUNTS]
    account = await store.get(username)
    if account is None:
        raise NotFound(f"no acme-dns account {username}")
    if not may_administer(
        admin.domains, admin.label, account, request.app[LIVE].config.delegations
    ):
        log.info(
            "acme-dns account %s (%s) is not one %s may administer: answered as unknown",
            username,
            account.fqdn,
            admin.label,
        )
        raise NotFound(f"no acme-dns account {username}")
    if store.is_static(username):
        raise Conflict(
            f"account {username} comes from ACMEDNS_ACCOUNTS_FILE: change it there and "
            "reload the gateway (SIGHUP)"
        )
    return account


async def rotate_account(request: web.Request) -> web.Response:
    """``POST /accounts/{username}/rotate``: a new key, shown in this answer only; the
    old one opens nothing from now on, on every replica. The values the account
    published stay."""
    admin = caller(request)
    account = await _administered(request, admin)
    rotated = await request.app[ACCOUNTS].rotate(account.username)
    if rotated is None:  # deleted meanwhile
        raise NotFound(f"no acme-dns account {account.username}")
    account, key = rotated
    log.info(
        "acme-dns account %s (%s) given a new key by %s", account.username, account.fqdn,
        admin.label,
    )
    return web.json_response(
        {
            "username": account.username,
            "password": key,
            "fulldomain": account.fqdn,
            "subdomain": account.subdomain,
            "allowfrom": [str(n) for n in account.allowfrom],
        },
        headers={"Cache-Control": "no-store"},
    )


async def delete_account(request: web.Request) -> web.Response:
    """``DELETE /accounts/{username}``: the account stops working at once, and the
    values it published are withdrawn."""
    admin = caller(request)
    account = await _administered(request, admin)
    if await request.app[ACCOUNTS].delete(account.username) is None:  # deleted meanwhile
        raise NotFound(f"no acme-dns account {account.username}")
    # Its values go with it: nobody may tear them down any more.
    owner = Identity(admin.client, account.label, None, account=account)
    change = await request.app[SERVICE].remove_own(owner, account.fqdn)
    log.info(
        "acme-dns account %s (%s) deleted by %s; %d value(s) withdrawn",
        account.username,
        account.fqdn,
        admin.label,
        len(change.values),
    )
    return web.json_response(
        {
            "username": account.username,
            "fulldomain": account.fqdn,
            "withdrawn": len(change.values),
        }
    )
