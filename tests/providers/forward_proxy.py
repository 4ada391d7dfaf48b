"""A tiny HTTP forward proxy on loopback, for provider tests of ALL_PROXY.

It accepts only absolute-form requests (``GET http://host:port/path HTTP/1.1``,
what a client sends to a proxy for a plain-http URL), forwards each to its
target and counts them. CONNECT tunnelling (https targets) is not supported, so
tests point providers at an ``http://`` fake API.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web

# Hop-by-hop headers (RFC 9110 section 7.6.1) are not forwarded.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


class ForwardProxy:
    def __init__(self) -> None:
        self.forwarded: list[str] = []
        self.refused: list[str] = []
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30), trust_env=False
        )
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        target = request.raw_path
        if not target.startswith("http://"):
            # An origin-form request means the client did not use us as a proxy.
            self.refused.append(target)
            return web.Response(status=400, text="absolute-form requests only")
        assert self._session is not None
        self.forwarded.append(f"{request.method} {target}")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = await request.read()
        async with self._session.request(
            request.method, target, headers=headers, data=body or None
        ) as answer:
            payload = await answer.read()
            return web.Response(
                status=answer.status, body=payload, content_type=answer.content_type
            )
