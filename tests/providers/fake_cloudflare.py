"""An in-process stand-in for the Cloudflare API v4, for tests.

Built from Cloudflare's public API documentation (developers.cloudflare.com/api:
"List Zones", "Zone Details", "List DNS Records", "Create DNS Record", "Delete DNS
Record", the TXTRecord schema: "content must consist of quoted character strings
(RFC 1035)", "name: complete DNS record name, including the zone name", TTL "1
for automatic" or 60..86400) and the error answers Cloudflare is known to send
(81058 "An identical record already exists.", 81044 "Record does not exist.",
9109 "Invalid access token", 10000 "Authentication error"). It serves only:

* ``GET /client/v4/zones?name=`` -> the zone whose name equals the query; without
  ``name``, every zone, paged (counted in :attr:`FakeCloudflare.zone_listings`);
* ``GET /client/v4/zones/{zone_id}`` -> that zone;
* ``GET /client/v4/zones/{zone_id}/dns_records?type=&name=&page=&per_page=``;
* ``POST /client/v4/zones/{zone_id}/dns_records`` ``{type, name, content, ttl}``;
* ``DELETE /client/v4/zones/{zone_id}/dns_records/{id}``.

Answers have the documented envelope ``{success, errors, messages, result,
result_info}``. Every request is checked (bearer token, method, path, query
keys, JSON body keys and types, full record names inside the zone, quoted
content, TTL bounds); anything unexpected is appended to
:attr:`FakeCloudflare.failures`, which tests assert is empty.

Unquoted TXT content is accepted, as Cloudflare accepts it (lexicon and certbot
send it so), but noted in :attr:`FakeCloudflare.warnings` with the warning
Cloudflare's dashboard shows for such records ("The content field of TXT records
must be in quotation marks. Cloudflare may add quotation marks on your behalf,
which will not affect how the record works."); the native provider's tests
assert there is none. lexicon sends ``{}`` as the body of GET and DELETE
requests and ``"data": null`` on create, which Cloudflare ignores; so does this
fake.

Fault switches: :attr:`fail_next` (HTTP 500 for the next N requests),
:attr:`delay` (slow answers), :attr:`read_only` (zone ids where the token may
read but not edit DNS, as a token without Zone:DNS:Edit) and
:attr:`after_listing` (lets a test play a second writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/client/v4"
CREATE_KEYS = {"type", "name", "content", "ttl", "proxied", "comment", "tags", "data"}
UNQUOTED_WARNING = (
    "The content field of TXT records must be in quotation marks. Cloudflare may add "
    "quotation marks on your behalf, which will not affect how the record works."
)
LIST_KEYS = {
    "type",
    "name",
    "name.exact",
    "content",
    "content.exact",
    "page",
    "per_page",
    "match",
    "order",
    "direction",
    "proxied",
}


@dataclass
class Record:
    id: str
    name: str
    type: str
    content: str
    ttl: int


@dataclass
class Zone:
    name: str
    id: str
    records: dict[str, Record] = field(default_factory=dict)


def _envelope(
    result: object,
    status: int = 200,
    info: dict[str, int] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if info is not None:
        body["result_info"] = info
    return web.json_response(body, status=status)


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "success": False,
            "errors": [{"code": code, "message": message}],
            "messages": [],
            "result": None,
        },
        status=status,
    )


class FakeCloudflare:
    def __init__(
        self,
        *,
        token: str = "Ab0-test-token-with-forty-characters-xyz",  # noqa: S107
        zones: Iterable[str] = ("example.test", "example.org"),
    ) -> None:
        self.token = token
        self.zones: dict[str, Zone] = {}
        for name in zones:
            zone = Zone(name, secrets.token_hex(16))
            self.zones[zone.id] = zone
        self.failures: list[str] = []
        self.warnings: list[str] = []
        self.zone_listings = 0
        self.requests: list[tuple[str, str]] = []
        self.zone_queries: list[str] = []
        self.read_only: set[str] = set()
        self.fail_next = 0
        self.delay = 0.0
        # Called after each record listing: lets a test play a second writer.
        self.after_listing: Callable[[], object] | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(PREFIX + "/zones", self._list_zones)
        app.router.add_get(PREFIX + "/zones/{zone}", self._zone_details)
        app.router.add_get(PREFIX + "/zones/{zone}/dns_records", self._list_records)
        app.router.add_post(PREFIX + "/zones/{zone}/dns_records", self._create)
        app.router.add_delete(PREFIX + "/zones/{zone}/dns_records/{record}", self._delete)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{PREFIX}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test controls ---------------------------------------------------------

    def zone_named(self, name: str) -> Zone:
        return next(z for z in self.zones.values() if z.name == name)

    def add_record(self, fqdn: str, content: str, ttl: int = 1) -> str:
        zone = self._zone_for(fqdn)
        assert zone is not None
        record = Record(secrets.token_hex(16), fqdn, "TXT", content, ttl)
        zone.records[record.id] = record
        return record.id

    def served(self, fqdn: str) -> set[str]:
        zone = self._zone_for(fqdn)
        if zone is None:
            return set()
        return {
            _unquote(r.content) for r in zone.records.values() if r.type == "TXT" and r.name == fqdn
        }

    def _zone_for(self, fqdn: str) -> Zone | None:
        best = None
        for zone in self.zones.values():
            if (fqdn == zone.name or fqdn.endswith("." + zone.name)) and (
                best is None or len(zone.name) > len(best.name)
            ):
                best = zone
        return best

    # -- checks ----------------------------------------------------------------

    def _fail(
        self, request: web.Request, problem: str, status: int = 400, code: int = 1004
    ) -> web.Response:
        self.failures.append(f"{request.method} {request.path_qs}: {problem}")
        return _error(status, code, f"fake rejected the request: {problem}")

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(
                status=500, text="<html>500 Internal Server Error</html>", content_type="text/html"
            )
        if "X-Auth-Key" in request.headers or "X-Auth-Email" in request.headers:
            return self._fail(request, "Global API Key headers; tokens use Authorization")
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return self._fail(request, "no bearer token", 400, 9106)
        if auth[len("Bearer ") :] != self.token:
            return _error(403, 9109, "Invalid access token")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                return self._fail(
                    request, f"no such endpoint (HTTP {exc.status})", exc.status, 7000
                )
            raise

    def _zone(self, request: web.Request) -> Zone | None:
        return self.zones.get(request.match_info["zone"])

    # -- endpoints -------------------------------------------------------------

    async def _list_zones(self, request: web.Request) -> web.Response:
        extra = set(request.query) - {
            "name",
            "status",
            "page",
            "per_page",
            "match",
            "order",
            "direction",
            "account.id",
            "account.name",
        }
        if extra:
            return self._fail(request, f"unexpected query parameters {sorted(extra)}")
        name = request.query.get("name")
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", "20"))
        except ValueError:
            return self._fail(request, "page/per_page are not integers")
        if page < 1 or per_page < 5:
            return self._fail(request, f"page {page} or per_page {per_page} out of range")
        # The documented maximum is 50; lexicon asks for 100 and works against the real
        # API, whose answer to that is not documented: this fake clamps.
        per_page = min(per_page, 50)
        if name:
            self.zone_queries.append(name)
        else:
            self.zone_listings += 1
        chosen = [z for z in self.zones.values() if not name or z.name == name]
        shown = chosen[(page - 1) * per_page : page * per_page]
        return _envelope(
            [self._show_zone(z) for z in shown],
            info={
                "page": page,
                "per_page": per_page,
                "count": len(shown),
                "total_count": len(chosen),
                "total_pages": max(1, -(-len(chosen) // per_page)),
            },
        )

    def _show_zone(self, zone: Zone) -> dict[str, Any]:
        return {
            "id": zone.id,
            "name": zone.name,
            "status": "active",
            "paused": False,
            "type": "full",
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        }

    async def _zone_details(self, request: web.Request) -> web.Response:
        zone = self._zone(request)
        if zone is None:
            return _error(404, 7003, "Could not route to /zones/..., perhaps your object "
                          "identifier is invalid?")
        return _envelope(self._show_zone(zone))

    async def _list_records(self, request: web.Request) -> web.Response:
        zone = self._zone(request)
        if zone is None:
            return self._fail(request, "records of an unknown zone id", 404, 7003)
        extra = set(request.query) - LIST_KEYS
        if extra:
            return self._fail(request, f"unexpected query parameters {sorted(extra)}")
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", "100"))
        except ValueError:
            return self._fail(request, "page/per_page are not integers")
        if page < 1 or not 5 <= per_page <= 5_000_000:
            return self._fail(request, f"page {page} or per_page {per_page} out of range")
        name = request.query.get("name") or request.query.get("name.exact")
        if name is not None and not (name == zone.name or name.endswith("." + zone.name)):
            return self._fail(request, f"name {name!r} is not a full name in zone {zone.name}")
        content = request.query.get("content") or request.query.get("content.exact")
        chosen = [
            r
            for r in zone.records.values()
            if (name is None or r.name == name)
            and (request.query.get("type") in (None, r.type))
            and (content is None or r.content == content)
        ]
        shown = chosen[(page - 1) * per_page : page * per_page]
        pages = max(1, -(-len(chosen) // per_page))
        if self.after_listing is not None:
            self.after_listing()
        return _envelope(
            [self._show(zone, r) for r in shown],
            info={
                "page": page,
                "per_page": per_page,
                "count": len(shown),
                "total_count": len(chosen),
                "total_pages": pages,
            },
        )

    def _show(self, zone: Zone, record: Record) -> dict[str, Any]:
        return {
            "id": record.id,
            "zone_id": zone.id,
            "zone_name": zone.name,
            "name": record.name,
            "type": record.type,
            "content": record.content,
            "ttl": record.ttl,
            "proxiable": False,
            "proxied": False,
            "locked": False,
            "settings": {},
            "meta": {},
            "comment": None,
            "tags": [],
            "created_on": "2024-01-01T00:00:00Z",
            "modified_on": "2024-01-01T00:00:00Z",
        }

    async def _create(self, request: web.Request) -> web.Response:
        zone = self._zone(request)
        if zone is None:
            return self._fail(request, "create in an unknown zone id", 404, 7003)
        if request.query:
            return self._fail(request, "query parameters on create")
        if request.content_type != "application/json":
            return self._fail(request, f"content type {request.content_type!r}")
        try:
            body = await request.json()
        except ValueError:
            return self._fail(request, "body is not JSON")
        if not isinstance(body, dict):
            return self._fail(request, "body is not an object")
        if set(body) - CREATE_KEYS or not {"type", "name", "content"} <= set(body):
            return self._fail(request, f"keys {sorted(body)}: need type, name, content")
        name, content, ttl = body["name"], body["content"], body.get("ttl", 1)
        if body["type"] != "TXT":
            return self._fail(request, f"type {body['type']!r}")
        if not isinstance(name, str) or not (name == zone.name or name.endswith("." + zone.name)):
            return self._fail(request, f"name {name!r} is not a full name in zone {zone.name}")
        if name != name.lower() or name.endswith("."):
            return self._fail(request, f"name {name!r} is not lower case without a final dot")
        if not isinstance(content, str) or not content or '"' in content.strip('"'):
            return self._fail(request, f"content {content!r} is not one character string")
        if not (len(content) >= 2 and content[0] == content[-1] == '"'):
            self.warnings.append(f"{name}: {UNQUOTED_WARNING}")
        if body.get("data") is not None:
            return self._fail(request, "data on a TXT record")
        if (
            not isinstance(ttl, int)
            or isinstance(ttl, bool)
            or not (ttl == 1 or 60 <= ttl <= 86400)
        ):
            return self._fail(request, f"ttl {ttl!r} is not 1 or 60..86400")
        if body.get("proxied") not in (None, False):
            return self._fail(request, "TXT records cannot be proxied")
        if zone.id in self.read_only:
            return _error(403, 10000, "Authentication error")
        if any(
            r.name == name and r.type == "TXT" and r.content == content
            for r in zone.records.values()
        ):
            return _error(400, 81058, "An identical record already exists.")
        record = Record(secrets.token_hex(16), name, "TXT", content, ttl)
        zone.records[record.id] = record
        return _envelope(self._show(zone, record))

    async def _delete(self, request: web.Request) -> web.Response:
        zone = self._zone(request)
        if zone is None:
            return self._fail(request, "delete in an unknown zone id", 404, 7003)
        if request.query or (request.can_read_body and (await request.read()).strip() not in (
            b"", b"{}")):
            return self._fail(request, "query or body on delete")
        if zone.id in self.read_only:
            return _error(403, 10000, "Authentication error")
        record = zone.records.pop(request.match_info["record"], None)
        if record is None:
            return _error(404, 81044, "Record does not exist.")
        return _envelope({"id": record.id})


def _unquote(content: str) -> str:
    return content[1:-1] if len(content) >= 2 and content[0] == content[-1] == '"' else content


@contextlib.asynccontextmanager
async def running_fake(token: str) -> AsyncIterator[FakeCloudflare]:
    """A started fake with zones example.test, example.org and sub.example.org; when the
    test is done, it asserts that no request was unexpected, and stops the fake."""
    api = FakeCloudflare(token=token, zones=("example.test", "example.org", "sub.example.org"))
    await api.start()
    try:
        yield api
        assert api.failures == []
    finally:
        await api.close()
