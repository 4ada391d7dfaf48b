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

When the gateway keeps its own certificate (``SSL_ACME_SERVER``,
:mod:`gateway.tls_acme`) it may start before it has one: the listeners are
bound (a port taken by another process still stops the start) and every
handshake is refused with a TLS alert until the first pair loads. Neither
plaintext nor a stand-in certificate is ever served: a temporary self-signed
certificate would teach clients to skip verification (or get their password
to whoever answers while they do), and its notAfter would be exported as if it
were the gateway's. The builtin DNS server is up by then, so the CA's queries
for that first certificate are answered.

The validity of the certificate in use is kept (for ``/metrics``), and the log
says when it is in the last fifth of its lifetime or expired: at start, after
each reload, and once a day while it lasts. A fifth is past the point where
ACME clients renew (a third left), so the warning means a renewal failed.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config import TLSFiles
from gateway.shutdown import stop_tasks

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], tuple[int, int, int]]


# Say "expires soon" when less than this share of the lifetime is left.
EXPIRY_WARNING_SHARE = 0.2
EXPIRY_REPEAT = 86400.0


class TLSFilesError(Exception):
    """A certificate/key pair cannot be used; the message names the file at fault."""


@dataclass(frozen=True)
class Validity:
    """A certificate's notBefore and notAfter, in Unix time."""

    not_before: float
    not_after: float


def _der_element(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start, end) of the contents of the DER element at *pos*."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(der[pos : pos + size], "big")
        pos += size
    if pos + length > len(der):
        raise ValueError("truncated DER element")
    return tag, pos, pos + length


def _der_time(tag: int, text: bytes) -> float:
    # RFC 5280 4.1.2.5: UTCTime YYMMDDHHMMSSZ (YY < 50 is 20YY), GeneralizedTime YYYYMMDDHHMMSSZ.
    digits = text.decode("ascii").removesuffix("Z")
    if tag == 0x17:
        year = int(digits[:2])
        digits = str(year + (2000 if year < 50 else 1900)) + digits[2:]
    elif tag != 0x18:
        raise ValueError(f"not a time (tag {tag:#x})")
    fields = [int(digits[i : i + 2]) for i in range(4, 14, 2)]
    return float(calendar.timegm((int(digits[:4]), *fields, 0, 0, 0)))


def certificate_validity(pem: str) -> Validity:
    """notBefore and notAfter of the first certificate in *pem*; ValueError if there is none.

    Read from the DER structure (Certificate > TBSCertificate > Validity)
    rather than with ``cryptography``, which is imported only on error paths
    (it costs about 8 MiB of resident memory; README "Performance").
    """
    begin = pem.find(ssl.PEM_HEADER)
    end = pem.find(ssl.PEM_FOOTER, begin)
    if begin < 0 or end < 0:
        raise ValueError("no PEM certificate")
    der = ssl.PEM_cert_to_DER_cert(pem[begin : end + len(ssl.PEM_FOOTER)])
    _, tbs, _ = _der_element(der, 0)
    _, pos, _ = _der_element(der, tbs)
    tag, _, after = _der_element(der, pos)
    if tag == 0xA0:  # [0] version; then serialNumber, signature, issuer
        pos = after
    for _ in range(3):
        pos = _der_element(der, pos)[2]
    _, pos, _ = _der_element(der, pos)  # validity
    tag, start, end = _der_element(der, pos)
    not_before = _der_time(tag, der[start:end])
    tag, start, end = _der_element(der, end)
    return Validity(not_before, _der_time(tag, der[start:end]))


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


def _refusing_context() -> ssl.SSLContext:
    """A server context without a certificate: its SNI callback ends every handshake."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _refuse(conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int:
    return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR


def _validity(files: TLSFiles) -> Validity:
    try:
        return certificate_validity(files.cert.read_text(errors="replace"))
    except (OSError, ValueError, IndexError) as exc:
        raise TLSFilesError(f"SSL_CERT: cannot read the validity of {files.cert}: {exc}") from None


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    return f"{max(seconds, 0) / 60:.0f} minutes"


RENEW_BY_HAND = "renew it (the renewed files are picked up without a restart)"


class ReloadingTLS:
    """The pair of *files* in use, reloaded when they change.

    With *awaited*, the pair may be missing (or unusable) at start: handshakes are
    refused until it loads, and :attr:`validity` is None until then.
    """

    def __init__(
        self,
        files: TLSFiles,
        clock: Callable[[], float] = time.time,
        *,
        awaited: bool = False,
        renewal_hint: str = RENEW_BY_HAND,
    ) -> None:
        self.files = files
        self._clock = clock
        self.renewal_hint = renewal_hint
        self._failed: Stamp | None = None
        self._current: ssl.SSLContext | None = None
        self.validity: Validity | None = None
        self._loaded: list[Callable[[], None]] = []
        self._stamp = _stamp(files)
        if awaited and self._stamp is None:
            self.context = _refusing_context()
        else:
            try:
                self._current = load_context(files)  # TLSFilesError: no start without TLS
                self.validity = _validity(files)
                self.context = load_context(files)
            except TLSFilesError as exc:
                if not awaited:
                    raise
                log.error("TLS certificate not loaded, a new one is awaited: %s", exc)
                self._failed, self._stamp = self._stamp, None
                self.context = _refusing_context()
        self.context.sni_callback = self._select
        self._refusal = _refusing_context()
        self._refusal.sni_callback = _refuse
        self._task: asyncio.Task[None] | None = None
        self._expiry_said: tuple[float, float] | None = None  # (notAfter, when)
        self.reloads = 0

    def _select(
        self, conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        if self._current is None:
            # No certificate yet: end the handshake with an alert, never a stand-in.
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        conn.context = self._current
        return None

    def refusal(self) -> ssl.SSLContext | None:
        """While no pair is in use, a context whose every handshake ends in an alert.

        The listeners run such handshakes themselves (:mod:`gateway.listeners`):
        asyncio's TLS transport drops the alert of a failed handshake, and the
        client would see a reset instead of the reason.
        """
        return self._refusal if self._current is None else None

    def when_loaded(self, callback: Callable[[], None]) -> None:
        """Call *callback* once a pair is in use: now, or when the first one loads."""
        if self.validity is not None:
            callback()
        else:
            self._loaded.append(callback)

    @property
    def not_before(self) -> float:
        assert self.validity is not None, "no certificate loaded yet"
        return self.validity.not_before

    @property
    def not_after(self) -> float:
        assert self.validity is not None, "no certificate loaded yet"
        return self.validity.not_after

    def check(self) -> bool:
        """Load the files again if they changed; True if a new pair is in use."""
        stamp = _stamp(self.files)
        if stamp is None or stamp == self._stamp:
            return False
        try:
            context = load_context(self.files)
            validity = _validity(self.files)
        except TLSFilesError as exc:
            # Often a renewal caught halfway: try again next round, but say so once.
            if stamp != self._failed:
                log.error("TLS certificate not reloaded, the previous one stays: %s", exc)
                self._failed = stamp
            return False
        first = self._current is None
        self._current = context
        self.validity = validity
        self._stamp = stamp
        self._failed = None
        self.reloads += 1
        log.info("TLS certificate %s from %s", "loaded" if first else "reloaded", self.files.cert)
        loaded, self._loaded = self._loaded, []
        for callback in loaded:
            callback()
        self.check_expiry()
        return True

    def check_expiry(self) -> None:
        """Log when the certificate in use is expired or close to it (once a day at most)."""
        now, validity = self._clock(), self.validity
        if validity is None:
            return
        left = validity.not_after - now
        if left > (validity.not_after - validity.not_before) * EXPIRY_WARNING_SHARE:
            return
        said = self._expiry_said
        if said is not None and said[0] == validity.not_after and now - said[1] < EXPIRY_REPEAT:
            return
        self._expiry_said = (validity.not_after, now)
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(validity.not_after))
        if left <= 0:
            log.error(
                "TLS certificate %s expired %s ago (%s): clients refuse the gateway until "
                "it is renewed",
                self.files.cert,
                _duration(-left),
                until,
            )
        else:
            log.warning(
                "TLS certificate %s expires in %s (%s): %s",
                self.files.cert,
                _duration(left),
                until,
                self.renewal_hint,
            )

    async def _watch(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.check()
            self.check_expiry()

    def start(self, interval: float) -> None:
        self.check_expiry()
        self._task = asyncio.create_task(self._watch(interval), name="tls-reload")

    async def stop(self) -> None:
        if self._task is not None:
            # Bounded, and a cancellation of the caller itself is not taken for the
            # watcher's (gateway.shutdown).
            await stop_tasks([self._task], "the TLS file watcher")
            self._task = None
