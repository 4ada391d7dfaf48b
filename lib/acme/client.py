"""The protocol steps of RFC 8555, one method each, on top of :class:`Transport`.

This module says *what* to send; :mod:`lib.acme.transport` says *how*. Each
method is one exchange (or one polling loop) with the CA and returns the
parsed resource from :mod:`lib.acme.messages`; the issuance flow that strings
them together is :mod:`lib.acme.issuance`.

Quirks handled here:

* a finalize answer without ``Location`` is normal: the order keeps the URL
  that ``newOrder`` returned (mod_md once failed on exactly that);
* polling honours ``Retry-After`` (seconds or an HTTP date), otherwise backs
  off from ``POLL_FIRST`` to ``POLL_MAX``, and always stops at a deadline;
* resources a CA does not offer (``revokeCert``, ``keyChange``,
  ``renewalInfo``) give a clear :class:`NotOffered` instead of a crash.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from lib.acme import jws
from lib.acme.errors import NotOffered, OrderFailed, PollTimeout, ProblemError, TransportError
from lib.acme.messages import Account, Authorization, Challenge, Directory, Order, RenewalInfo
from lib.acme.transport import Transport, json_of, parse_links, parse_retry_after

log = logging.getLogger(__name__)

POLL_FIRST = 0.25
POLL_MAX = 5.0
# A CA that points to more alternates than this is broken, not generous.
MAX_ALTERNATES = 8
PEM_CHAIN = "application/pem-certificate-chain"

# RFC 5280 section 5.3.1 reason codes ACME accepts (7 is unused; 8, removeFromCRL, is not allowed).
REVOCATION_REASONS = {
    "unspecified": 0, "keyCompromise": 1, "affiliationChanged": 3, "superseded": 4,
    "cessationOfOperation": 5, "certificateHold": 6, "privilegeWithdrawn": 9,
}


@dataclass(frozen=True)
class ExternalAccount:
    """EAB credentials from the CA: the key id and the MAC key (never shown)."""

    kid: str
    mac_key: bytes = field(repr=False)
    alg: str = "HS256"


@dataclass(frozen=True)
class CertificateChain:
    """One way the CA offers the certificate: the PEM bundle and where it came from."""

    url: str
    pem: str


class AcmeClient:
    """One account's conversation with one CA."""

    def __init__(self, transport: Transport, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.net = transport
        self._sleep = sleep
        self._clock = clock

    @property
    def directory(self) -> Directory:
        return self.net.directory()

    @property
    def key(self) -> jws.AccountKey:
        if self.net.key is None:
            raise TransportError("no account key to sign with")
        return self.net.key

    # --- accounts (RFC 8555 section 7.3) ------------------------------------------------

    def register(self, *, contact: Sequence[str] = (), agree_tos: bool = False,
                 eab: ExternalAccount | None = None) -> tuple[Account, bool]:
        """Create the account (or find it, if the key has one). Returns (account, created)."""
        directory = self.directory
        payload: dict[str, Any] = {"contact": list(contact)}
        if agree_tos:
            payload["termsOfServiceAgreed"] = True
        if eab is not None:
            payload["externalAccountBinding"] = jws.eab_binding(
                eab.kid, eab.mac_key, self.key.jwk(), directory.new_account, eab.alg)
        response = self.net.post(directory.new_account, payload, use_jwk=True)
        account = self._account_from(response)
        return account, response.status_code == 201

    def find(self) -> Account | None:
        """The account of this key, or None when the CA knows none (``onlyReturnExisting``)."""
        try:
            response = self.net.post(self.directory.new_account, {"onlyReturnExisting": True},
                                     use_jwk=True)
        except ProblemError as problem:
            if problem.code == "accountDoesNotExist":
                return None
            raise
        return self._account_from(response)

    def _account_from(self, response: requests.Response) -> Account:
        url = response.headers.get("Location")
        if not url:
            raise TransportError("the CA answered newAccount without the account URL (Location)")
        self.net.account_url = url
        return Account.from_json(url, json_of(response, "account"))

    def account(self) -> Account:
        """The account resource; POST-as-GET, or the empty update that older CAs expect."""
        url = self._account_url()
        try:
            data, _ = self.net.post_json(url, None)
        except ProblemError as problem:
            if problem.code != "malformed" and problem.status != 405:
                raise
            data, _ = self.net.post_json(url, {})
        return Account.from_json(url, data)

    def update_contact(self, contact: Sequence[str]) -> Account:
        url = self._account_url()
        return Account.from_json(url, self.net.post_json(url, {"contact": list(contact)})[0])

    def deactivate(self) -> Account:
        url = self._account_url()
        return Account.from_json(url, self.net.post_json(url, {"status": "deactivated"})[0])

    def change_key(self, new_key: jws.AccountKey) -> None:
        """Roll the account over to *new_key* (section 7.3.5); the client then signs with it."""
        url = self.directory.key_change
        if url is None:
            raise NotOffered(f"{self.directory.url} does not offer key rollover (keyChange)")
        account_url = self._account_url()
        inner = jws.sign(new_key, {"account": account_url, "oldKey": self.key.jwk()}, url)
        self.net.post(url, inner)
        self.net.key = new_key

    def _account_url(self) -> str:
        if self.net.account_url is None:
            raise TransportError("no account URL yet; register or find the account first")
        return self.net.account_url

    # --- orders (section 7.4) -----------------------------------------------------------

    def new_order(self, names: Sequence[str], *, profile: str | None = None,
                  replaces: str | None = None) -> Order:
        payload: dict[str, Any] = {"identifiers": [{"type": "dns", "value": n} for n in names]}
        if profile:
            payload["profile"] = profile
        if replaces:
            payload["replaces"] = replaces
        data, response = self.net.post_json(self.directory.new_order, payload)
        url = response.headers.get("Location")
        if not url:
            raise TransportError("the CA answered newOrder without the order URL (Location)")
        return Order.from_json(url, data, _retry_after(response))

    def order(self, url: str) -> Order:
        data, response = self.net.post_json(url, None)
        return Order.from_json(url, data, _retry_after(response))

    def authorization(self, url: str) -> Authorization:
        data, response = self.net.post_json(url, None)
        return Authorization.from_json(url, data, _retry_after(response))

    def answer(self, challenge: Challenge) -> Challenge:
        """Tell the CA the challenge is ready to be validated (an empty JSON object)."""
        data, _ = self.net.post_json(challenge.url, {})
        return Challenge.from_json(data)

    def poll_authorization(self, url: str, deadline: float) -> Authorization:
        """Poll until the authorization leaves ``pending``; returns it whatever the outcome."""
        result: Authorization = self._poll(lambda: self.authorization(url), ("pending",),
                                           self.authorization(url), deadline,
                                           f"authorization {url}")
        return result

    def finalize(self, order: Order, csr_der: bytes) -> Order:
        """Send the CSR. The order keeps its URL from newOrder whatever the answer's headers."""
        data, response = self.net.post_json(order.finalize, {"csr": jws.b64url(csr_der)})
        location = response.headers.get("Location")
        if location and location != order.url:
            log.debug("finalize named the order %s (newOrder: %s)", location, order.url)
        return Order.from_json(location or order.url, data, _retry_after(response))

    def poll_order(self, order: Order, deadline: float,
                   waiting: Sequence[str] = ("pending", "processing")) -> Order:
        """Poll from *order* (a fresh answer) until its status is not in *waiting*."""
        result: Order = self._poll(lambda: self.order(order.url), waiting, order, deadline,
                                   f"order {order.url}")
        return result

    def _poll(self, fetch: Callable[[], Any], waiting: Sequence[str], current: Any,
              deadline: float, what: str) -> Any:
        interval = POLL_FIRST
        while current.status in waiting:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise PollTimeout(f"{what} is still {current.status} at its deadline")
            wait = current.retry_after if current.retry_after is not None else interval
            interval = min(interval * 1.5, POLL_MAX)
            # Never sleep past the deadline, but look once more when it comes.
            self._sleep(max(0.0, min(wait, remaining)))
            current = fetch()
        return current

    # --- certificates (section 7.4.2, 7.6) -----------------------------------------------

    def certificates(self, url: str) -> list[CertificateChain]:
        """The certificate chain at *url*, then every alternate chain the CA links to."""
        response = self.net.post(url, None, accept=PEM_CHAIN)
        chains = [CertificateChain(url, _pem_text(response))]
        for alternate in parse_links(response.headers, "alternate")[:MAX_ALTERNATES]:
            try:
                chains.append(CertificateChain(
                    alternate, _pem_text(self.net.post(alternate, None, accept=PEM_CHAIN))))
            except (ProblemError, TransportError) as exc:
                log.warning("alternate chain %s unavailable: %s", alternate, exc)
        return chains

    def renewal_info(self, cert_id: str) -> RenewalInfo:
        """ARI: the CA's suggested renewal window for a certificate (an unauthenticated GET)."""
        base = self.directory.renewal_info
        if base is None:
            raise NotOffered(f"{self.directory.url} does not offer renewal information (ARI)")
        response = self.net.get(f"{base.rstrip('/')}/{cert_id}")
        return RenewalInfo.from_json(json_of(response, "renewal info"),
                                     parse_retry_after(response.headers.get("Retry-After")))

    def revoke(self, cert_der: bytes, reason: int | None = None,
               cert_key: jws.AccountKey | None = None) -> None:
        """Revoke, signed by the account, or by the certificate's own key when given."""
        url = self.directory.revoke_cert
        if url is None:
            raise NotOffered(f"{self.directory.url} does not offer revocation (revokeCert)")
        payload: dict[str, Any] = {"certificate": jws.b64url(cert_der)}
        if reason is not None:
            payload["reason"] = reason
        if cert_key is not None:
            self.net.post(url, payload, use_jwk=True, key=cert_key)
        else:
            self.net.post(url, payload)


def _retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def _pem_text(response: requests.Response) -> str:
    text = response.text
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise TransportError(f"{response.url} sent no PEM certificate chain "
                             f"({response.headers.get('Content-Type', 'no content type')})")
    return text


def check_order_usable(order: Order) -> None:
    """Raise :class:`OrderFailed` for an order that can no longer lead to a certificate."""
    if order.status == "invalid":
        why = f": {order.error}" if order.error else ""
        raise OrderFailed(f"order {order.url} is invalid{why}")
    if order.status not in ("pending", "ready", "processing", "valid"):
        raise OrderFailed(f"order {order.url} has unknown status {order.status!r}")
