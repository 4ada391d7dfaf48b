"""TLS for the gateway's listeners, picking up renewed certificate files.

The context is built once; a background task checks the files' modification
stamps and loads a renewed pair into the same context, so new connections get
the new certificate without a restart. A pair that fails to load is logged and
the old one stays in use. There is never a fallback to plaintext: a context
that cannot be built at start-up stops the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from gateway.config import TLSFiles

log = logging.getLogger(__name__)


def _stamp(files: TLSFiles) -> tuple[tuple[int, int], tuple[int, int]] | None:
    try:
        c, k = files.cert.stat(), files.key.stat()
    except OSError:
        return None
    return (c.st_mtime_ns, c.st_size), (k.st_mtime_ns, k.st_size)


class ReloadingTLS:
    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = _stamp(files)
        self.context.load_cert_chain(str(files.cert), str(files.key))  # raises on a bad pair
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def check(self) -> bool:
        """Load the files again if they changed; True if a new pair is in use."""
        stamp = _stamp(self.files)
        if stamp is None or stamp == self._stamp:
            return False
        try:
            self.context.load_cert_chain(str(self.files.cert), str(self.files.key))
        except (OSError, ssl.SSLError) as exc:
            # Often a half-written renewal (new cert, old key): try again next round.
            log.error("TLS certificate not reloaded from %s: %s", self.files.cert, exc)
            return False
        self._stamp = stamp
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files.cert)
        return True

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()

    def start(self, interval: float) -> None:
        self._task = asyncio.create_task(self._watch(interval), name="tls-reload")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
