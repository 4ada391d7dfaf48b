"""The network layer of the ACME client: HTTPS, the directory, nonces, JWS, problems.

Protocol steps live in :mod:`lib.acme.client`; this module only moves signed
requests and answers (certbot's ``ClientNetwork`` split):

* the directory is fetched once per :class:`Transport`;
* every answer's ``Replay-Nonce`` goes into a pool; a request takes one from the
  pool, or asks ``newNonce`` (HEAD) when it is empty;
* a ``badNonce`` problem is retried with a fresh nonce (up to
  ``BAD_NONCE_RETRIES`` times: CAs reject valid nonces on purpose, pebble 5 %
  of them, to catch clients that do not retry);
* a 503 or 429 with a short ``Retry-After`` (at most ``retry_after_limit``) is
  waited out and retried once; a longer one is reported;
* ``application/problem+json`` answers become :class:`ProblemError` with type
  and detail; network failures and non-ACME answers become
  :class:`TransportError`, one line each.

Every request has a timeout, and it bounds the whole answer (an answer that trickles
in is no answer). Nothing secret is logged: JWS bodies are not logged.
"""

from __future__ import annotations

import email.utils
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from lib.acme import jws
from lib.acme.errors import NoAnswer, ProblemError, TransportError, Unreachable
from lib.acme.messages import Directory, problem_from_json

log = logging.getLogger(__name__)

USER_AGENT = "acmegw-acme/0.1 (acme-dns01-gateway; python-requests)"
BAD_NONCE_RETRIES = 5
CONNECT_TIMEOUT = 10.0
RETRY_AFTER_MAX = 365 * 86400.0
_NONCE = re.compile(r"[A-Za-z0-9_-]+")  # used with fullmatch
_JOSE = "application/jose+json"
T = TypeVar("T")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), at
    most ``RETRY_AFTER_MAX`` (a wait longer than a year is a CA's bug, and past what
    dates can count)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(0.0, when.timestamp() - (time.time() if now is None else now)),
               RETRY_AFTER_MAX)


def parse_links(headers: requests.structures.CaseInsensitiveDict[str], rel: str) -> list[str]:
    """Every ``Link`` URL with relation *rel* (requests keeps only one per relation)."""
    found: list[str] = []
    for part in re.split(r",(?=\s*<)", headers.get("Link", "")):
        match = re.match(r"\s*<([^>]*)>(.*)$", part)
        if not match:
            continue
        params = match.group(2)
        rels = re.findall(r';\s*rel\s*=\s*(?:"([^"]*)"|([^;\s]+))', params)
        names = {name for pair in rels for item in pair if item for name in item.split()}
        if rel in names:
            found.append(match.group(1))
    return found


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


class Transport:
    """Signed requests to one CA, identified by its directory URL."""

    def __init__(self, directory_url: str, key: jws.AccountKey | None = None, *,
                 ca_file: str | None = None, timeout: float = 30.0, retry_after_limit: float = 30.0,
                 directory_timeout: float | None = None,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.directory_url = directory_url
        self.key = key
        self.account_url: str | None = None
        self.timeout = timeout
        # The first request to a CA: a small static document, so a short bound tells a
        # hung CA from a slow answer early.
        self.directory_timeout = min(timeout, directory_timeout or timeout)
        self.retry_after_limit = retry_after_limit
        self._sleep = sleep
        self._session = session or requests.Session()
        # Passed with every request: a session's own verify loses to REQUESTS_CA_BUNDLE.
        self._verify: str | bool = ca_file or True
        self._session.headers["User-Agent"] = USER_AGENT
        self._nonces: deque[str] = deque(maxlen=32)
        self._directory: Directory | None = None

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plain HTTP ------------------------------------------------------------------------

    def _send(self, method: str, url: str, timeout: float | None = None,
              **kwargs: Any) -> requests.Response:
        wait = timeout or self.timeout
        try:
            # Redirects only for GET (a directory URL that moved); a signed request names
            # its URL inside the JWS, so following a redirect could only fail.
            response = _within(wait, lambda: self._session.request(
                method, url, timeout=(min(CONNECT_TIMEOUT, wait), wait), verify=self._verify,
                allow_redirects=method == "GET", **kwargs))
        except requests.exceptions.SSLError as exc:
            detail = describe_request_error(exc)
            hint = ("; for a private CA pass its certificate with --ca-file"
                    if untrusted_certificate(detail) else "")
            raise Unreachable(f"TLS with {host_of(url)} failed ({detail}){hint}") from None
        except (requests.exceptions.Timeout, TimeoutError):
            raise NoAnswer(f"{host_of(url)} did not answer within {wait:g}s") from None
        except requests.exceptions.ConnectionError as exc:
            raise Unreachable(
                f"cannot reach {host_of(url)}: {describe_request_error(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise TransportError(
                f"cannot reach {host_of(url)}: {describe_request_error(exc)}") from None
        log.debug("%s %s -> %s", method, url, response.status_code)
        nonce = response.headers.get("Replay-Nonce")
        if nonce and _NONCE.fullmatch(nonce):
            self._nonces.append(nonce)
        return response

    def _check(self, response: requests.Response) -> requests.Response:
        if response.status_code < 400:
            return response
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in ("application/problem+json", "application/json"):
            try:
                doc = response.json()
            except ValueError:
                doc = None
            if isinstance(doc, dict) and "type" in doc:
                raise problem_from_json(doc, status=response.status_code,
                                        retry_after=retry_after, url=response.url)
        raise ProblemError("about:blank", f"HTTP {response.status_code} {response.reason} "
                           f"from {response.url}", status=response.status_code,
                           retry_after=retry_after, url=response.url)

    def _short_wait(self, problem: ProblemError) -> float | None:
        if problem.status in (429, 503) and problem.retry_after is not None \
                and problem.retry_after <= self.retry_after_limit:
            return problem.retry_after
        return None

    def get(self, url: str, *, accept: str | None = None,
            timeout: float | None = None) -> requests.Response:
        """An unauthenticated GET (directory, ARI), with one wait on a short Retry-After."""
        headers = {"Accept": accept} if accept else {}
        for attempt in range(2):
            try:
                return self._check(self._send("GET", url, timeout, headers=headers))
            except ProblemError as problem:
                wait = self._short_wait(problem)
                if wait is None or attempt:
                    raise
                log.info("%s asks to retry after %.0fs", host_of(url), wait)
                self._sleep(wait)
        raise AssertionError("unreachable")

    # --- ACME ------------------------------------------------------------------------------

    def directory(self) -> Directory:
        if self._directory is None:
            response = self.get(self.directory_url, timeout=self.directory_timeout)
            self._directory = Directory.from_json(self.directory_url,
                                                  json_of(response, "directory"))
        return self._directory

    def nonce(self) -> str:
        if self._nonces:
            return self._nonces.popleft()
        # _send pools the answer's Replay-Nonce.
        self._check(self._send("HEAD", self.directory().new_nonce))
        if not self._nonces:
            raise TransportError(f"{host_of(self.directory_url)} sent no usable Replay-Nonce")
        return self._nonces.popleft()

    def post(self, url: str, payload: Any, *, use_jwk: bool = False,
             key: jws.AccountKey | None = None, accept: str | None = None) -> requests.Response:
        """A signed POST; *payload* None is POST-as-GET.

        The account URL is the ``kid`` unless *use_jwk* (newAccount, revocation by
        certificate key). *key* overrides the account key for that one request.
        """
        signer = key or self.key
        if signer is None:
            raise TransportError("no account key to sign with")
        kid = None if use_jwk else self.account_url
        if kid is None and not use_jwk:
            raise TransportError("no account URL yet; register or find the account first")
        headers = {"Content-Type": _JOSE}
        if accept:
            headers["Accept"] = accept
        waited = False
        for attempt in range(BAD_NONCE_RETRIES + 1):
            body = jws.sign(signer, payload, url, nonce=self.nonce(), kid=kid)
            try:
                return self._check(self._send("POST", url, data=jws.json_bytes(body),
                                              headers=headers))
            except ProblemError as problem:
                if problem.code == "badNonce" and attempt < BAD_NONCE_RETRIES:
                    log.info("%s rejected a nonce; retrying with a fresh one", host_of(url))
                    continue
                wait = self._short_wait(problem)
                if wait is not None and not waited:
                    waited = True
                    log.info("%s asks to retry after %.0fs", host_of(url), wait)
                    self._sleep(wait)
                    continue
                raise
        raise AssertionError("unreachable")

    def post_json(self, url: str, payload: Any, **kwargs: Any) -> tuple[Any, requests.Response]:
        response = self.post(url, payload, **kwargs)
        return json_of(response, url), response


def _within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``, or TimeoutError once *seconds* have passed without its end.

    requests' timeout bounds each read from the socket, not the answer: one that trickles
    in a byte every few seconds would never end. The call runs on a helper thread that
    is left behind when it is given up (the CA is then not asked again in this run, and
    the thread ends with the connection, or with the process)."""
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # handed to the caller below
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, name="acmegw-acme-http", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError
    ok, value = outcome[0]
    if not ok:
        raise value
    result: T = value
    return result


def json_of(response: requests.Response, what: str) -> Any:
    try:
        return response.json()
    except ValueError:
        content_type = response.headers.get("Content-Type", "no content type")
        raise TransportError(f"{response.url} sent no JSON for the {what} "
                             f"(HTTP {response.status_code}, {content_type})") from None


def untrusted_certificate(detail: str) -> bool:
    """Whether a TLS failure (:func:`describe_request_error`'s *detail*) is a certificate
    this system does not trust, which a CA file fixes; a dropped handshake is not."""
    return "certificate verify failed" in detail.lower()


def describe_request_error(exc: BaseException) -> str:
    """The innermost cause of a requests error, short (urllib3 nests them deeply)."""
    while exc.__context__ is not None and not str(exc).strip():
        exc = exc.__context__
    text = str(exc)
    for marker in ("Caused by ", "] "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    text = text.strip(" ()'\"")[:200]
    # The strip may take the closing parenthesis of "(_ssl.c:1006)": give it back.
    text += ")" * max(0, text.count("(") - text.count(")"))
    return text or type(exc).__name__
