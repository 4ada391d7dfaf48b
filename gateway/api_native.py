"""The original gateway's API, unchanged for its users.

``POST``/``PUT`` (or ``DELETE`` for teardown) with the JSON body
``{"argument": "setup"|"add"|"teardown"|"remove", "domain_name": "...",
"challenge_content": "..."}``. ``domain_name`` is the name being validated
(``example.com``; ``*.`` and a leading ``_acme-challenge.`` are accepted).
Setup answers 201, teardown 200, both ``{"fqdn": ..., "value": ...}``. A
teardown without ``challenge_content`` (mod_md's ``MDChallengeDns01Version 1``)
removes every value the caller set at that name and answers
``{"fqdn": ..., "values": [...]}``.

The original accepted these requests on any path; so do we, after the paths
of the other APIs.
"""

from __future__ import annotations

from aiohttp import web

from gateway.auth import caller
from gateway.bodies import read_json_object
from gateway.errors import BadRequest, MethodNotAllowed
from gateway.keys import LIVE, SERVICE
from lib.names import InvalidValue, validate_value

METHODS = ["POST", "PUT", "DELETE"]
_SETUP = {"setup", "add"}
_TEARDOWN = {"teardown", "remove"}


async def handle(request: web.Request) -> web.Response:
    if request.method not in METHODS:
        raise MethodNotAllowed(METHODS)
    identity = caller(request)
    service = request.app[SERVICE]
    body = await read_json_object(request, request.app[LIVE].config.max_body)

    argument = body.get("argument")
    if not isinstance(argument, str) or argument.lower() not in _SETUP | _TEARDOWN:
        raise BadRequest("argument", "must be one of setup, add, teardown, remove")
    setup = argument.lower() in _SETUP
    if request.method == "DELETE" and setup:
        raise BadRequest("argument", "DELETE only tears down; use teardown or remove")
    if "domain_name" not in body:
        raise BadRequest("domain_name", "missing")
    fqdn = service.challenge_fqdn(identity, body["domain_name"])

    content = body.get("challenge_content")
    if not setup and content in (None, ""):
        change = await service.remove_own(identity, fqdn)
        return web.json_response({"fqdn": change.fqdn, "values": list(change.values)})
    if content is None:
        raise BadRequest("challenge_content", "missing")
    try:
        value = validate_value(content)
    except InvalidValue as exc:
        raise BadRequest("challenge_content", str(exc)) from None
    if setup:
        change = await service.add(identity, fqdn, value)
        return web.json_response({"fqdn": change.fqdn, "value": value}, status=201)
    change = await service.remove(identity, fqdn, value)
    return web.json_response({"fqdn": change.fqdn, "value": value})
