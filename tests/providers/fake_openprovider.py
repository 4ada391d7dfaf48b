"""An in-process stand-in for the OpenProvider REST API (v1beta), for tests.

Built from OpenProvider's public documentation (the swagger files of
github.com/openprovider/api-documentation: ``auth.swagger.json`` and
``dns.swagger.json``, and the knowledge-base articles "Getting started with
Openprovider API" and "Zones API: How to modify a zone"). It serves only what
the provider uses:

* ``POST /v1beta/auth/login`` ``{"username", "password", "ip"}`` ->
  ``{"code": 0, "data": {"token", "reseller_id"}, "desc": ""}``;
  bad credentials -> 401 with error code 196.
* ``GET /v1beta/dns/zones?name_pattern=...`` -> ``data.results`` (zones) + ``total``.
* ``GET /v1beta/dns/zones/{name}/records?type=&limit=&offset=`` -> records with
  their full names, paged.
* ``PUT /v1beta/dns/zones/{name}`` with ``records.add`` / ``records.remove``:
  names relative to the zone; a duplicate add -> error 817 "Duplicate record".

Every request is checked (bearer token, method, path, query keys, JSON body keys
and types, relative record names, TTL bounds). Anything unexpected is appended
to :attr:`FakeOpenProvider.failures`, which tests assert is empty; the reply to
it is an error, so the provider also sees it fail.

Fault switches: :meth:`expire_tokens` (the next authenticated request gets 401
once per token, as after the documented 48 h lifetime), :attr:`fail_next` (HTTP
500 for the next N requests), :attr:`delay` (slow answers, for timeouts) and
:attr:`quote_listing` (listings show TXT values in double quotes); and
:attr:`before_update` lets a test play a second writer.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PREFIX = "/v1beta"
MIN_TTL = 600
MAX_TTL = 86400
RECORD_KEYS = {"name", "type", "value", "ttl", "prio"}


@dataclass
class Record:
    name: str  # relative to the zone, "" for the apex
    type: str
    value: str
    ttl: int


@dataclass
class Zone:
    name: str
    id: int
    records: list[Record] = field(default_factory=list)

    def full(self, relative: str) -> str:
        return f"{relative}.{self.name}" if relative else self.name


def _answer(data: object, status: int = 200) -> web.Response:
    return web.json_response({"code": 0, "data": data, "desc": ""}, status=status)


def _error(status: int, code: int, desc: str) -> web.Response:
    # The API sends its error JSON as text/plain; the provider must cope.
    return web.Response(
        status=status,
        text=json.dumps({"code": code, "desc": desc, "data": ""}),
        content_type="text/plain",
    )


class FakeOpenProvider:
    def __init__(
        self,
        *,
        username: str = "gateway",
        password: str = "correct horse:battery",  # noqa: S107
        zones: Iterable[str] = ("example.test", "example.org"),
    ) -> None:
        self.username = username
        self.password = password
        self.zones: dict[str, Zone] = {name: Zone(name, 1000 + i) for i, name in enumerate(zones)}
        self.failures: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.zone_queries: list[str] = []
        self.logins = 0
        self.rejected_tokens = 0
        self.fail_next = 0
        self.delay = 0.0
        self.quote_listing = False
        # Called before each zone update: lets a test change the zone meanwhile.
        self.before_update: Callable[[], None] | None = None
        self._issued: set[str] = set()
        self._valid: set[str] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle -------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post(PREFIX + "/auth/login", self._login)
        app.router.add_get(PREFIX + "/dns/zones", self._list_zones)
        app.router.add_get(PREFIX + "/dns/zones/{zone}/records", self._list_records)
        app.router.add_put(PREFIX + "/dns/zones/{zone}", self._update_zone)
        return app

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}{PREFIX}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- test controls ---------------------------------------------------------

    def expire_tokens(self) -> None:
        self._valid.clear()

    def add_record(
        self, zone: str, relative: str, value: str, ttl: int = 900, rtype: str = "TXT"
    ) -> None:
        self.zones[zone].records.append(Record(relative, rtype, value, ttl))

    def zone_for(self, fqdn: str) -> Zone | None:
        best = None
        for zone in self.zones.values():
            if (fqdn == zone.name or fqdn.endswith("." + zone.name)) and (
                best is None or len(zone.name) > len(best.name)
            ):
                best = zone
        return best

    def served(self, fqdn: str) -> set[str]:
        zone = self.zone_for(fqdn)
        if zone is None:
            return set()
        return {r.value for r in zone.records if r.type == "TXT" and zone.full(r.name) == fqdn}

    # -- checks ----------------------------------------------------------------

    def _fail(self, request: web.Request, problem: str, status: int = 400) -> web.Response:
        self.failures.append(f"{request.method} {request.path_qs}: {problem}")
        return _error(status, 400, f"fake rejected the request: {problem}")

    def _query_ok(self, request: web.Request, allowed: set[str]) -> str | None:
        extra = set(request.query) - allowed
        if extra:
            return f"unexpected query parameters {sorted(extra)}"
        return None

    async def _json_body(self, request: web.Request) -> tuple[dict[str, Any] | None, str]:
        if request.content_type != "application/json":
            return None, f"content type {request.content_type!r}, want application/json"
        try:
            body = await request.json()
        except ValueError:
            return None, "body is not JSON"
        if not isinstance(body, dict):
            return None, "body is not a JSON object"
        return body, ""

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_next > 0:
            self.fail_next -= 1
            return _error(500, 500, "Internal server error")
        if request.path != PREFIX + "/auth/login":
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return self._fail(request, "no bearer token in Authorization", 401)
            token = auth[len("Bearer ") :]
            if token not in self._issued:
                return self._fail(request, "a token this server never issued", 401)
            if token not in self._valid:
                self.rejected_tokens += 1
                return _error(401, 196, "Authentication/Authorization Failed")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status in (404, 405):
                return self._fail(request, f"no such endpoint (HTTP {exc.status})", exc.status)
            raise

    # -- endpoints -------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        body, problem = await self._json_body(request)
        if body is None:
            return self._fail(request, problem)
        if set(body) - {"username", "password", "ip"}:
            return self._fail(request, f"unexpected login keys {sorted(set(body))}")
        if not all(isinstance(body.get(k), str) for k in ("username", "password")):
            return self._fail(request, "username and password must be strings")
        if "ip" in body and not isinstance(body["ip"], str):
            return self._fail(request, "ip must be a string")
        if body["username"] != self.username or body["password"] != self.password:
            return _error(401, 196, "Authentication/Authorization Failed")
        self.logins += 1
        token = secrets.token_hex(16)
        self._issued.add(token)
        self._valid.add(token)
        return _answer({"token": token, "reseller_id": 123915})

    async def _list_zones(self, request: web.Request) -> web.Response:
        problem = self._query_ok(
            request,
            {
                "name_pattern",
                "limit",
                "offset",
                "type",
                "with_records",
                "with_history",
                "with_dnskey",
            },
        )
        if problem:
            return self._fail(request, problem)
        pattern = request.query.get("name_pattern")
        if not pattern:
            return self._fail(request, "listing every zone of the account (no name_pattern)")
        self.zone_queries.append(pattern)
        results = [
            {
                "id": z.id,
                "name": z.name,
                "type": "master",
                "active": True,
                "is_deleted": False,
                "is_shadow": False,
                "reseller_id": 123915,
            }
            for z in self.zones.values()
            if fnmatch.fnmatchcase(z.name, pattern.lower())
        ]
        return _answer({"results": results, "total": len(results)})

    def _zone(self, request: web.Request) -> Zone | None:
        return self.zones.get(request.match_info["zone"])

    async def _list_records(self, request: web.Request) -> web.Response:
        problem = self._query_ok(
            request,
            {
                "zone_id",
                "limit",
                "offset",
                "type",
                "prio",
                "ttl",
                "record_name_pattern",
                "value_pattern",
                "order_by.name",
                "order_by.type",
            },
        )
        if problem:
            return self._fail(request, problem)
        zone = self._zone(request)
        if zone is None:
            return self._fail(request, "records of a zone that does not exist")
        try:
            limit = int(request.query.get("limit", "100"))
            offset = int(request.query.get("offset", "0"))
        except ValueError:
            return self._fail(request, "limit/offset are not integers")
        if not 1 <= limit <= 500 or offset < 0:
            return self._fail(request, f"limit {limit} outside 1..500 or negative offset")
        rtype = request.query.get("type")
        chosen = [r for r in zone.records if rtype is None or r.type == rtype]
        page = chosen[offset : offset + limit]
        results = [
            {
                "name": zone.full(r.name),
                "type": r.type,
                "ttl": r.ttl,
                "prio": 0,
                "value": f'"{r.value}"' if self.quote_listing and r.type == "TXT" else r.value,
                "creation_date": "2024-01-01 00:00:00",
                "modification_date": "2024-01-01 00:00:00",
            }
            for r in page
        ]
        return _answer({"results": results, "total": len(chosen)})

    def _record(self, zone: Zone, item: object) -> tuple[Record | None, str]:
        if not isinstance(item, dict):
            return None, "a record is not an object"
        if set(item) - RECORD_KEYS:
            return None, f"unexpected record keys {sorted(set(item) - RECORD_KEYS)}"
        name, rtype, value, ttl = (item.get(k) for k in ("name", "type", "value", "ttl"))
        if not isinstance(name, str) or not isinstance(value, str) or rtype != "TXT":
            return None, "record needs string name and value and type TXT"
        if name.endswith(".") or name == zone.name or name.endswith("." + zone.name):
            return None, f"record name {name!r} is not relative to zone {zone.name}"
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not MIN_TTL <= ttl <= MAX_TTL:
            return None, f"ttl {ttl!r} is not an integer in {MIN_TTL}..{MAX_TTL}"
        return Record(name.lower(), rtype, value, ttl), ""

    async def _update_zone(self, request: web.Request) -> web.Response:
        if self.before_update is not None:
            self.before_update()
        if request.query:
            return self._fail(request, "query parameters on a zone update")
        zone = self._zone(request)
        if zone is None:
            return self._fail(request, "update of a zone that does not exist")
        body, problem = await self._json_body(request)
        if body is None:
            return self._fail(request, problem)
        if set(body) - {"id", "name", "records", "domain", "type"}:
            return self._fail(request, f"unexpected keys {sorted(body)}")
        if "name" in body and body["name"] != zone.name:
            return self._fail(request, f"name {body['name']!r} differs from the path")
        if "id" in body and body["id"] != zone.id:
            return self._fail(request, f"id {body['id']!r} is not zone {zone.name}'s id")
        records = body.get("records")
        if not isinstance(records, dict) or not records:
            return self._fail(request, "records must be an object of actions")
        if set(records) - {"add", "remove"}:
            # The API also has replace/update; a gateway must never rewrite
            # records it did not create, so their use is a defect here.
            return self._fail(request, f"record actions {sorted(records)}: only add/remove")
        adds: list[Record] = []
        removes: list[Record] = []
        for action, target in (("add", adds), ("remove", removes)):
            items = records.get(action, [])
            if not isinstance(items, list):
                return self._fail(request, f"records.{action} is not a list")
            for item in items:
                record, problem = self._record(zone, item)
                if record is None:
                    return self._fail(request, problem)
                target.append(record)
        for record in adds:
            if any(_same(record, r) for r in zone.records):
                return _error(400, 817, "Duplicate record")
        for record in removes:
            if not any(_same(record, r) for r in zone.records):
                return self._fail(request, f"remove of a record that is not there: {record}")
        for record in removes:
            zone.records = [r for r in zone.records if not _same(record, r)]
        zone.records.extend(adds)
        return _answer({"success": True})


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value


def _same(a: Record, b: Record) -> bool:
    return a.name == b.name and a.type == b.type and _unquote(a.value) == _unquote(b.value)
