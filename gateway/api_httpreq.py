"""lego's ``httpreq`` protocol: ``POST <prefix>/present`` and ``<prefix>/cleanup``.

Used by lego, Traefik, Caddy, acme.sh ``dns_acmeproxy`` and certbot-dns-multi.
Two body shapes:

* default: ``{"fqdn": "_acme-challenge.example.com.", "value": "..."}``; lego
  follows CNAMEs first, so ``fqdn`` may be a configured delegation target;
* ``HTTPREQ_MODE=RAW``: ``{"domain": "example.com", "token": "...", "keyAuth": "..."}``,
  where the TXT value is base64url(SHA-256(keyAuth)).

Both answer ``200 {"fqdn": ..., "value": ...}`` (Caddy wants exactly 200,
acme.sh wants the value echoed). Authentication, scoping, validation, the
per-name lock, the journal and the propagation wait are the native API's.
"""

from __future__ import annotations

from aiohttp import web

from gateway.auth import caller
from gateway.bodies import read_json_object
from gateway.errors import BadRequest
from gateway.keys import LIVE, SERVICE
from lib.names import InvalidValue, txt_value, validate_value

_MAX_KEY_AUTH = 512


async def present(request: web.Request) -> web.Response:
    return await _change(request, setup=True)


async def cleanup(request: web.Request) -> web.Response:
    return await _change(request, setup=False)


async def _change(request: web.Request, *, setup: bool) -> web.Response:
    identity = caller(request)
    service = request.app[SERVICE]
    body = await read_json_object(request, request.app[LIVE].config.max_body)
    if "keyAuth" in body or ("domain" in body and "fqdn" not in body):
        key_auth = body.get("keyAuth")
        if not isinstance(key_auth, str) or not key_auth or len(key_auth) > _MAX_KEY_AUTH:
            raise BadRequest("keyAuth", f"must be a string of 1 to {_MAX_KEY_AUTH} characters")
        if not key_auth.isascii() or not key_auth.isprintable():
            raise BadRequest("keyAuth", "must be printable ASCII")
        if "domain" not in body:
            raise BadRequest("domain", "missing")
        fqdn = service.challenge_fqdn(identity, body["domain"], field="domain")
        value = txt_value(key_auth)
    else:
        if "fqdn" not in body:
            raise BadRequest("fqdn", "missing")
        fqdn = service.record_fqdn(identity, body["fqdn"], field="fqdn")
        try:
            value = validate_value(body.get("value"))
        except InvalidValue as exc:
            raise BadRequest("value", str(exc)) from None
    if setup:
        await service.add(identity, fqdn, value)
    else:
        await service.remove(identity, fqdn, value)
    return web.json_response({"fqdn": fqdn + ".", "value": value})
