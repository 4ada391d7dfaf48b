"""The acme-dns protocol: ``POST /update``, ``POST /register``, ``GET /health``.

Spoken by lego's ``acme-dns`` provider, acme.sh ``dns_acmedns``, cert-manager,
Caddy, Posh-ACME and win-acme. ``/update`` is for an acme-dns account
(``X-Api-User``/``X-Api-Key``, within its ``allowfrom``; the access middleware
checks them with the host rule every API has), and publishes ``{"txt"}`` at the
account's one name, if the configuration in force still lets accounts write
there; acme-dns has no delete, so the newest ``ACMEDNS_KEEP`` values stay and
older ones are removed (and the janitor expires the rest by age). ``/register``
is off unless ``ACMEDNS_REGISTER=1``, and then only for admin users or allowed
hosts.
"""

from __future__ import annotations

import logging
from typing import NoReturn

from aiohttp import web

from gateway.acmedns import Account, account_name_allowed
from gateway.auth import caller
from gateway.bodies import read_json_object
from gateway.config import Config, parse_network
from gateway.errors import BadRequest, Forbidden, NotFound, TooManyRecords, Unauthorized
from gateway.keys import ACCOUNTS, LIVE, SERVICE
from lib.names import InvalidValue, validate_value

log = logging.getLogger(__name__)


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def update(request: web.Request) -> web.Response:
    identity = caller(request)
    account = identity.account
    assert account is not None  # Access.ACCOUNT
    # The account was made under some configuration; it writes only while the
    # one in force now still lets accounts write its name.
    _check_name(request.app[LIVE].config, account.fqdn)
    body = await read_json_object(request, request.app[LIVE].config.max_body)
    # The body may come seconds after the head was judged: the name may have been
    # taken away by a reload meanwhile.
    config = request.app[LIVE].config
    _check_name(config, account.fqdn)
    if body.get("subdomain") != account.subdomain:
        raise BadRequest("subdomain", "does not belong to this account")
    try:
        value = validate_value(body.get("txt"))
    except InvalidValue as exc:
        raise BadRequest("txt", str(exc)) from None
    service = request.app[SERVICE]
    # The account may have been deleted or given a new key since the head was
    # judged, on this replica or another: it is looked at again once the name's
    # lock is held, so that a deletion's withdrawal of its values (under the same
    # lock) comes either after this value or never sees it written.
    await service.add(identity, account.fqdn, value, lambda: _unchanged(request, account))
    await service.trim(identity, account.fqdn, config.acmedns.keep)
    return web.json_response({"txt": value})


async def register(request: web.Request) -> web.Response:
    config = request.app[LIVE].config
    if not config.acmedns.register:
        raise NotFound("registration is disabled (ACMEDNS_REGISTER)")
    identity = caller(request)
    body = await _optional_body(request, config.max_body)
    allowfrom_raw = body.get("allowfrom", [])
    if not isinstance(allowfrom_raw, list) or not all(isinstance(a, str) for a in allowfrom_raw):
        raise BadRequest("allowfrom", "must be a list of addresses or networks")
    try:
        allowfrom = tuple(parse_network(a) for a in allowfrom_raw)
    except ValueError as exc:
        raise BadRequest("allowfrom", str(exc)) from None
    service = request.app[SERVICE]
    domain_fqdn = None
    if "domain" in body:  # our extension: bind the account to one managed name
        domain_fqdn = service.challenge_fqdn(identity, body["domain"], field="domain")
        _check_name(config, domain_fqdn)
    elif config.acmedns.zone is None:
        raise BadRequest("domain", "no ACMEDNS_ZONE is configured: name the domain")
    registered = await request.app[ACCOUNTS].register(
        identity.label, config.acmedns.zone, domain_fqdn, allowfrom, _account_cap(config)
    )
    if registered is None:
        _refuse_past_cap(config, identity.label)
    account, key = registered
    log.info(
        "acme-dns account %s registered by %s for %s",
        account.username,
        identity.label,
        account.fqdn,
    )
    return web.json_response(
        {
            "username": account.username,
            "password": key,
            "fulldomain": account.fqdn,
            "subdomain": account.subdomain,
            "allowfrom": [str(n) for n in allowfrom],
        },
        status=201,
    )


async def _optional_body(request: web.Request, limit: int) -> dict[str, object]:
    if request.content_length == 0 or (
        request.content_length is None and not request.can_read_body
    ):
        return {}
    return await read_json_object(request, limit)


async def _unchanged(request: web.Request, account: Account) -> None:
    """401 unless *account* still exists with the key the request sent, as it was."""
    now = await request.app[ACCOUNTS].verify(
        account.username, request.headers.get("X-Api-Key", "")
    )
    if now is None or (now.fqdn, now.subdomain, now.allowfrom) != (
        account.fqdn,
        account.subdomain,
        account.allowfrom,
    ):
        raise Unauthorized("this acme-dns account was deleted or changed during the request")


def _check_name(config: Config, fqdn: str) -> None:
    """403 unless *config* lets acme-dns accounts write *fqdn*."""
    targets = (t for _, t in config.delegations)
    if not account_name_allowed(fqdn, config.acmedns.zone, config.managed_domains, targets):
        raise Forbidden(
            f"{fqdn} is not a name acme-dns accounts may write",
            name=fqdn,
            detail="outside ACMEDNS_ZONE, DELEGATIONS and DNSAPI_DOMAINS",
        )


def _account_cap(config: Config) -> int:
    """How many acme-dns accounts one caller may register (0: no limit).

    Each account may keep ``ACMEDNS_KEEP`` values published, each under its own
    label: without a cap, registering one account per name would publish without
    end. So the accounts one caller registers may publish no more, together, than
    ``MAX_RECORDS_PER_USER`` lets that caller publish itself. The state layer
    counts and inserts in one step, so registrations at once cannot both take
    the last place.
    """
    if not config.max_records_per_user:
        return 0
    return max(1, config.max_records_per_user // config.acmedns.keep)


def _refuse_past_cap(config: Config, owner: str) -> NoReturn:
    raise TooManyRecords(
        f"{owner} already holds {_account_cap(config)} acme-dns accounts, which may publish "
        f"as many values as MAX_RECORDS_PER_USER allows ({config.max_records_per_user}, "
        f"ACMEDNS_KEEP={config.acmedns.keep} each); delete ones no longer needed first"
    )
