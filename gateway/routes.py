"""Every endpoint of the gateway and who may call it, in one table.

Each :class:`Endpoint` declares its :class:`gateway.auth.Access`; :func:`add_routes`
puts the table into the router, and :func:`access_middleware` applies the
declared access to every request before its handler runs. A route the table
did not declare is answered with an error, never served: a new endpoint cannot
forget the host and password rules, because no handler applies them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from gateway import api_acmedns, api_admin, api_httpreq, api_native
from gateway.auth import CALLER, Access
from gateway.bodies import read_body
from gateway.config import Config
from gateway.errors import Forbidden
from gateway.keys import AUTHENTICATOR, LIVE

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

@dataclass(frozen=True)
class Endpoint:
    method: str  # "*": every method (the original's API)
    path: str
    handler: Handler
    access: Access
    api: str | None = None  # the request counter's ``api`` label


ENDPOINTS = web.AppKey("endpoints", dict[AbstractRoute, Endpoint])


def endpoints(config: Config) -> tuple[Endpoint, ...]:
    """The gateway's endpoints, in the order the router tries them."""
    prefix = config.httpreq_prefix
    return (
        Endpoint("GET", "/healthz", api_admin.healthz, Access.PUBLIC),
        Endpoint("GET", "/openapi.json", api_admin.openapi, Access.PUBLIC),
        Endpoint("GET", "/metrics", api_admin.metrics, Access.CALLER),
        Endpoint("GET", "/records", api_admin.records, Access.ADMIN),
        Endpoint("GET", "/accounts", api_admin.list_accounts, Access.ADMIN),
        Endpoint("DELETE", "/accounts/{username}", api_admin.delete_account, Access.ADMIN),
        Endpoint(
            "POST", "/accounts/{username}/rotate", api_admin.rotate_account, Access.ADMIN
        ),
        Endpoint("POST", f"{prefix}/present", api_httpreq.present, Access.CALLER, "httpreq"),
        Endpoint("POST", f"{prefix}/cleanup", api_httpreq.cleanup, Access.CALLER, "httpreq"),
        Endpoint("POST", "/update", api_acmedns.update, Access.ACCOUNT, "acmedns"),
        Endpoint("POST", "/register", api_acmedns.register, Access.ADMIN, "acmedns"),
        Endpoint("GET", "/health", api_acmedns.health, Access.PUBLIC),
        # The original accepted its API on any path: keep that, after every other route.
        Endpoint("*", "/", api_native.handle, Access.CALLER, "native"),
        Endpoint("*", "/{tail:.*}", api_native.handle, Access.CALLER, "native"),
    )


def add_routes(app: web.Application, table: tuple[Endpoint, ...]) -> None:
    """Register *table* with *app*'s router, HEAD with each GET, each route with its endpoint."""
    declared: dict[AbstractRoute, Endpoint] = {}
    for endpoint in table:
        methods = ["GET", "HEAD"] if endpoint.method == "GET" else [endpoint.method]
        for method in methods:
            route = app.router.add_route(method, endpoint.path, endpoint.handler)
            declared[route] = endpoint
    app[ENDPOINTS] = declared


def endpoint_of(request: web.Request) -> Endpoint | None:
    """The declared endpoint *request* was routed to (None: no route, a 404 or 405)."""
    return request.app[ENDPOINTS].get(request.match_info.route)


def made_by_a_web_page(request: web.Request) -> bool:
    """Whether a browser sent *request* for a web page's script or form.

    A caller admitted by its address needs nothing a browser would not send by
    itself, and the API takes JSON under any Content-Type: any page opened on an
    allowed host could write records (cross-site, or from a name rebound to the
    gateway). Browsers mark such requests: ``Origin`` on cross-origin ones and on
    any POST, ``Sec-Fetch-Site`` on all (``none`` when the user typed the
    address). API clients send neither.
    """
    return "Origin" in request.headers or request.headers.get("Sec-Fetch-Site", "none") != "none"


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the access the request's route declared, before its handler runs."""
    endpoint = endpoint_of(request)
    if endpoint is None:
        if request.match_info.http_exception is not None:
            return await handler(request)  # 404 or 405: nothing is served
        raise RuntimeError(f"{request.method} {request.path}: route without declared access")
    if endpoint.access is not Access.PUBLIC and made_by_a_web_page(request):
        raise Forbidden(
            "this API is for programs: a request a web page made is refused",
            detail="a browser request (Origin or Sec-Fetch-Site): cross-site or DNS rebinding",
        )
    auth = request.app[AUTHENTICATOR]
    if endpoint.access is not Access.PUBLIC and request.can_read_body:
        # The caller is judged once its whole (bounded) request is in, not when the head
        # came, seconds before the body: a user deleted meanwhile writes nothing. A
        # refused address is refused before anything of its body is read.
        auth.check_address(request)
        await read_body(request, request.app[LIVE].config.max_body)
    identity = await auth.admit(request, endpoint.access)
    if identity is not None:
        request[CALLER] = identity
    return await handler(request)
