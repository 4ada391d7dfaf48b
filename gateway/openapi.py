"""The OpenAPI 3 document of the gateway's HTTP API, served at ``/openapi.json``.

Built from the running configuration (the httpreq prefix), so what it
describes is what this instance serves; schemathesis tests the gateway
against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway.keys import LIVE

VALUE = {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$", "minLength": 43, "maxLength": 43}
NAME = {"type": "string", "minLength": 1, "maxLength": 255}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_FAILURES = {
    "400": _error("malformed request; the message starts with the field name"),
    "401": _error("missing or wrong credentials"),
    "403": _error("client not allowed, or a name the caller may not change"),
    "413": _error("body too large"),
    "429": _error("too many failed attempts from this address"),
    "502": _error("the DNS provider failed"),
    "503": _error("the journal cannot be written, or too many password checks wait"),
    "504": _error("the DNS provider or the propagation wait timed out"),
}

_RECORD = {
    "type": "object",
    "required": ["fqdn", "value"],
    "properties": {"fqdn": {"type": "string"}, "value": {"type": "string"}},
}


_ADMIN_FAILURES = {
    "400": _error("an unknown or malformed parameter"),
    "401": _error("authentication required"),
    "403": _error("not an admin user or allowed host"),
    "429": _error("too many failed attempts"),
    "503": _error("the state cannot be used"),
}
_ACCOUNT_FAILURES = {
    "404": _error("no such account, or none this admin may administer"),
    "409": _error("the account comes from ACMEDNS_ACCOUNTS_FILE"),
}
_USERNAME = {"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}


def _native_op(summary: str, ok: str, ok_description: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "security": [{"basic": []}, {}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/NativeRequest"}}
            },
        },
        "responses": {ok: _json(_RECORD, ok_description), **_FAILURES},
    }


def document(app: web.Application) -> dict[str, Any]:
    prefix = app[LIVE].config.httpreq_prefix
    httpreq_body = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/HttpreqRequest"},
                        {"$ref": "#/components/schemas/HttpreqRawRequest"},
                    ]
                }
            }
        },
    }
    httpreq_op = {
        "security": [{"basic": []}, {}],
        "requestBody": httpreq_body,
        "responses": {"200": _json(_RECORD, "done"), **_FAILURES},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "acme-dns01-gateway",
            "version": "1",
            "description": "Add and remove _acme-challenge TXT records for ACME dns-01.",
        },
        "paths": {
            "/": {
                "post": _native_op(
                    "Set up a challenge value (or tear down with argument teardown)",
                    "201",
                    "set up and served",
                ),
                "put": _native_op("Set up a challenge value", "201", "set up and served"),
                "delete": _native_op("Tear down a challenge value", "200", "torn down"),
            },
            f"{prefix}/present": {"post": {"summary": "lego httpreq: publish", **httpreq_op}},
            f"{prefix}/cleanup": {"post": {"summary": "lego httpreq: withdraw", **httpreq_op}},
            "/update": {
                "post": {
                    "summary": "acme-dns: publish a value for the account's name",
                    "parameters": [
                        {
                            "name": "X-Api-User",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "X-Api-Key",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["subdomain", "txt"],
                                    "properties": {"subdomain": {"type": "string"}, "txt": VALUE},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json({"type": "object", "properties": {"txt": VALUE}}, "done"),
                        **_FAILURES,
                    },
                }
            },
            "/register": {
                "post": {
                    "summary": "acme-dns: register an account (admin users, allowed hosts)",
                    "security": [{"basic": []}, {}],
                    "requestBody": {
                        "required": False,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "allowfrom": {"type": "array", "items": {"type": "string"}},
                                        "domain": NAME,
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json({"$ref": "#/components/schemas/Account"}, "registered"),
                        "404": _error("registration is disabled"),
                        **_FAILURES,
                    },
                }
            },
            "/accounts": {
                "get": {
                    "summary": "List the acme-dns accounts this admin may administer, never "
                    "a key (admin users, allowed hosts)",
                    "security": [{"basic": []}, {}],
                    "parameters": [
                        {
                            "name": "owner",
                            "in": "query",
                            "required": False,
                            "description": "only the accounts this caller registered",
                            "schema": {"type": "string", "minLength": 1},
                        },
                        {
                            "name": "name",
                            "in": "query",
                            "required": False,
                            "description": "only the accounts for names within this one",
                            "schema": NAME,
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["accounts"],
                                "properties": {
                                    "accounts": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/ListedAccount"},
                                    }
                                },
                            },
                            "the accounts",
                        ),
                        **_ADMIN_FAILURES,
                    },
                }
            },
            "/accounts/{username}": {
                "delete": {
                    "summary": "Delete a registered acme-dns account and withdraw its values "
                    "(admin users, allowed hosts)",
                    "security": [{"basic": []}, {}],
                    "parameters": [_USERNAME],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "username": {"type": "string"},
                                    "fulldomain": {"type": "string"},
                                    "withdrawn": {"type": "integer"},
                                },
                            },
                            "deleted",
                        ),
                        **_ACCOUNT_FAILURES,
                        **_FAILURES,
                    },
                }
            },
            "/accounts/{username}/rotate": {
                "post": {
                    "summary": "Give a registered acme-dns account a new key, shown in this "
                    "answer only; the old key stops working, published values stay "
                    "(admin users, allowed hosts)",
                    "security": [{"basic": []}, {}],
                    "parameters": [_USERNAME],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Account"}, "the new key"),
                        **_ACCOUNT_FAILURES,
                        **_ADMIN_FAILURES,
                    },
                }
            },
            "/health": {
                "get": {"summary": "acme-dns health", "responses": {"200": {"description": "up"}}}
            },
            "/healthz": {
                "get": {
                    "summary": "liveness",
                    "responses": {
                        "200": _json(
                            {"type": "object", "properties": {"status": {"type": "string"}}}, "up"
                        )
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (authenticated or allowed host)",
                    "security": [{"basic": []}, {}],
                    "responses": {
                        "200": {
                            "description": "metrics",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        },
                        "401": _error("authentication required"),
                        "403": _error("not allowed"),
                        "429": _error("too many failed attempts"),
                    },
                }
            },
            "/records": {
                "get": {
                    "summary": "Pending records with age and owner (admin users, allowed hosts)",
                    "security": [{"basic": []}, {}],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "records": {"type": "array", "items": {"type": "object"}}
                                },
                            },
                            "records",
                        ),
                        "401": _error("authentication required"),
                        "403": _error("not allowed"),
                        "429": _error("too many failed attempts"),
                        "503": _error("journal unreadable"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
                },
                "NativeRequest": {
                    "type": "object",
                    "required": ["argument", "domain_name"],
                    "properties": {
                        "argument": {
                            "type": "string",
                            "enum": ["setup", "add", "teardown", "remove"],
                        },
                        "domain_name": NAME,
                        "challenge_content": VALUE,
                    },
                },
                "HttpreqRequest": {
                    "type": "object",
                    "required": ["fqdn", "value"],
                    "properties": {"fqdn": NAME, "value": VALUE},
                },
                "HttpreqRawRequest": {
                    "type": "object",
                    "required": ["domain", "token", "keyAuth"],
                    "properties": {
                        "domain": NAME,
                        "token": {"type": "string"},
                        "keyAuth": {"type": "string", "minLength": 1, "maxLength": 512},
                    },
                },
                "ListedAccount": {
                    "type": "object",
                    "required": [
                        "username", "fulldomain", "subdomain", "allowfrom", "owner", "created",
                        "source", "values",
                    ],
                    "properties": {
                        "username": {"type": "string"},
                        "fulldomain": {"type": "string"},
                        "subdomain": {"type": "string"},
                        "allowfrom": {"type": "array", "items": {"type": "string"}},
                        "owner": {
                            "type": "string",
                            "description": "who registered it (file: ACMEDNS_ACCOUNTS_FILE)",
                        },
                        "created": {
                            "type": "string",
                            "format": "date-time",
                            "nullable": True,
                            "description": "when it was registered (null: from the file)",
                        },
                        "source": {"type": "string", "enum": ["registered", "file"]},
                        "values": {
                            "type": "integer",
                            "description": "TXT values it has published now",
                        },
                    },
                },
                "Account": {
                    "type": "object",
                    "required": ["username", "password", "fulldomain", "subdomain", "allowfrom"],
                    "properties": {
                        "username": {"type": "string"},
                        "password": {"type": "string"},
                        "fulldomain": {"type": "string"},
                        "subdomain": {"type": "string"},
                        "allowfrom": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }
