"""TLS for the gateway's listeners, picking up renewed certificate files.

The listeners are given one context for good. Each handshake is switched, in
the SNI callback (which OpenSSL runs for every handshake, with or without a
server name), to the context built from the newest certificate pair that
loaded. A background task checks the files' modification stamps and builds a
fresh context when they change; only a pair that loads completely replaces the
current one. So a half-written renewal (garbage, or a new certificate next to
the old key) is logged and the old pair keeps serving — loading a pair into a
context that is in use would leave it with a certificate and no matching key.
There is never a fallback to plaintext: a pair that cannot be loaded at
start-up stops the start, with a message naming the file at fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from gateway.config import TLSFiles

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


class TLSFilesError(Exception):
    """A certificate/key pair cannot be used; the message names the file at fault."""


def _stamp(files: TLSFiles) -> Stamp | None:
    try:
        c, k = files.cert.stat(), files.key.stat()
    except OSError:
        return None
    return (c.st_ino, c.st_mtime_ns, c.st_size), (k.st_ino, k.st_mtime_ns, k.st_size)


def _encrypted(files: TLSFiles) -> bytes:
    # Without a callback OpenSSL prompts on the terminal, blocking start-up.
    raise TLSFilesError(
        f"SSL_KEY: {files.key} is encrypted; the gateway needs a key without a passphrase"
    )


def load_context(files: TLSFiles) -> ssl.SSLContext:
    """A server context for the pair in *files*; :class:`TLSFilesError` if unusable."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(files.cert), str(files.key), password=lambda: _encrypted(files))
    except (OSError, ssl.SSLError) as exc:
        raise TLSFilesError(_diagnose(files, exc)) from None
    return context


def _diagnose(files: TLSFiles, exc: Exception) -> str:
    """Which of the two files is at fault, and how (OpenSSL's errors do not say)."""
    # Imported here, on the error path only: cryptography adds about 8 MiB to the
    # resident size of a gateway that never needs it (README "Performance").
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(files.cert.read_bytes())
    except OSError as err:
        return f"SSL_CERT: cannot read {files.cert}: {err.strerror}"
    except ValueError:
        return f"SSL_CERT: {files.cert} holds no PEM certificate"
    try:
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    except OSError as err:
        return f"SSL_KEY: cannot read {files.key}: {err.strerror}"
    except TypeError:
        return f"SSL_KEY: {files.key} is encrypted; the gateway needs a key without a passphrase"
    except (ValueError, UnsupportedAlgorithm):
        return f"SSL_KEY: {files.key} holds no usable PEM private key"
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != certs[0].public_key().public_bytes(*spki):
        return f"SSL_KEY: {files.key} does not match the certificate in {files.cert}"
    return f"SSL_CERT/SSL_KEY: cannot use {files.cert} with {files.key}: {exc}"


class ReloadingTLS:
    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._stamp = _stamp(files)
        self._failed: Stamp | None = None
        self._current = load_context(files)  # raises TLSFilesError: no start without TLS
        self.context = load_context(files)
        self.context.sni_callback = self._select
        self._task: asyncio.Task[None] | None = None
        self.reloads = 0

    def _select(self, conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        conn.context = self._current

    def check(self) -> bool:
        """Load the files again if they changed; True if a new pair is in use."""
        stamp = _stamp(self.files)
        if stamp is None or stamp == self._stamp:
            return False
        try:
            context = load_context(self.files)
        except TLSFilesError as exc:
            # Often a renewal caught halfway: try again next round, but say so once.
            if stamp != self._failed:
                log.error("TLS certificate not reloaded, the previous one stays: %s", exc)
                self._failed = stamp
            return False
        self._current = context
        self._stamp = stamp
        self._failed = None
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
