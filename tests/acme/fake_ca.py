"""A small in-process ACME CA (aiohttp, HTTPS on loopback) for what pebble 2.4 lacks.

Built from RFC 8555, RFC 9773 (ARI) and the ACME profiles draft
(draft-aaron-acme-profiles: ``meta.profiles`` in the directory, ``profile`` in
newOrder), not from any client's code. It checks every request it receives
and records each deviation in :attr:`FakeCA.violations` (the fixtures assert
the list is empty): method and path, ``Content-Type: application/jose+json``,
the flattened JWS shape, ``alg`` matching the key, the signature (verified
here with ``cryptography``, independently of :mod:`lib.acme.jws`), a nonce
that it issued and that was never used, ``url`` equal to the request URL,
exactly one of ``jwk``/``kid``, and the payload shape of each resource.

Validation is real: answering a dns-01 challenge makes the fake look the TXT
value up at ``dns_server`` (the builtin provider of the client under test).

Knobs for the behaviour under test: which optional resources the directory
offers, profiles, ``badNonce`` rejections, failing or busy (503 +
``Retry-After``) newOrder answers, ``processing`` polls with ``Retry-After``,
a finalize answer without ``Location``, the ARI window, refusing ``replaces``, a
problem of any type on newOrder, and a CA that accepts requests and never answers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import itertools
import json
import secrets
import ssl
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdatatype
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

from tests.servers.certs import TLSFiles
from tests.system import free_port

ERR = "urn:ietf:params:acme:error:"
_CURVES = {"P-256": (ec.SECP256R1, hashes.SHA256, 32, "ES256"),
           "P-384": (ec.SECP384R1, hashes.SHA384, 48, "ES384")}


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: dict[str, str]) -> str:
    keys = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    text = json.dumps({k: jwk[k] for k in keys}, separators=(",", ":"), sort_keys=True)
    return b64e(hashlib.sha256(text.encode()).digest())


def public_key(jwk: dict[str, str]) -> Any:
    if jwk.get("kty") == "EC":
        curve = _CURVES[jwk["crv"]][0]()
        return ec.EllipticCurvePublicNumbers(int.from_bytes(b64d(jwk["x"]), "big"),
                                             int.from_bytes(b64d(jwk["y"]), "big"),
                                             curve).public_key()
    return rsa.RSAPublicNumbers(int.from_bytes(b64d(jwk["e"]), "big"),
                                int.from_bytes(b64d(jwk["n"]), "big")).public_key()


def verify_signature(jwk: dict[str, str], alg: str, data: bytes, sig: bytes) -> str | None:
    """None when the signature is right, else what is wrong."""
    key = public_key(jwk)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            _, hash_class, size, wanted = _CURVES[jwk["crv"]]
            if alg != wanted:
                return f"alg {alg} for a {jwk['crv']} key"
            if len(sig) != 2 * size:
                return f"ECDSA signature of {len(sig)} bytes, not {2 * size}"
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"),
                                       int.from_bytes(sig[size:], "big"))
            key.verify(der, data, ec.ECDSA(hash_class()))
        else:
            if alg != "RS256":
                return f"alg {alg} for an RSA key"
            key.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return "bad signature"
    return None


def ari_id(cert: x509.Certificate) -> str:
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier is not None
    serial = cert.serial_number
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{b64e(aki.key_identifier)}.{b64e(serial_bytes)}"


class Issuer:
    """A root pair and one intermediate key, cross-signed so there are two chains."""

    def __init__(self, roots: tuple[str, ...] = ("Fake Root X1", "Fake Root X2")) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fake Intermediate")])
        self.roots = roots
        self.intermediates: list[x509.Certificate] = []
        for root in roots:
            root_key = ec.generate_private_key(ec.SECP256R1())
            self.intermediates.append(
                x509.CertificateBuilder()
                .subject_name(self.name)
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, root)]))
                .public_key(self.key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(root_key, hashes.SHA256()))

    def issue(self, csr: x509.CertificateSigningRequest, days: float) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = x509.CertificateBuilder()
        # OCSP must-staple asked for in the CSR is copied, as Let's Encrypt did (pebble
        # 2.4 drops it).
        for extension in csr.extensions:
            if isinstance(extension.value, x509.TLSFeature):
                builder = builder.add_extension(extension.value, critical=False)
        return (
            builder
            .subject_name(x509.Name([]))
            .issuer_name(self.name)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(san, critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256()))


@dataclass
class FakeCA:
    """The CA's behaviour (set before the client runs) and what it saw."""

    dns_server: tuple[str, int] | None = None
    offer: frozenset[str] = frozenset({"revokeCert", "keyChange", "renewalInfo"})
    profiles: dict[str, str] = field(default_factory=dict)
    terms: str | None = "https://ca.example/terms"
    reject_nonces: int = 0
    fail_new_order: int = 0  # answer serverInternal this many times; -1: always
    busy_new_order: int = 0  # answer 503 with Retry-After this many times
    busy_retry_after: int = 1
    processing_polls: int = 1
    retry_after: int | None = 2
    finalize_location: bool = False
    ari_window: tuple[datetime.datetime, datetime.datetime] | None = None
    ari_retry_after: int = 21600
    refuse_replaces: bool = False
    lifetime_days: float = 90.0
    new_order_problem: tuple[str, int] | None = None  # (ACME error name, status), always
    hang: bool = False  # accept requests and never answer (until release())
    dribble: float = 0.0  # answer one byte every 0.2 s for this many seconds, then hang up
    # What happened.
    violations: list[str] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    new_orders: list[dict[str, Any]] = field(default_factory=list)
    finalize_answers: int = 0
    revoked: dict[str, int | None] = field(default_factory=dict)
    key_changes: int = 0
    ari_queries: list[str] = field(default_factory=list)
    validated: list[tuple[str, str]] = field(default_factory=list)
    base: str = ""
    issuer: Issuer = field(default_factory=Issuer)
    _nonces: set[str] = field(default_factory=set)
    _accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    _orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    _authzs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _certs: dict[str, x509.Certificate] = field(default_factory=dict)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def forget_accounts(self) -> None:
        """Lose every account, as a CA that was reset (or purged old accounts) does."""
        self._accounts.clear()

    def release(self) -> None:
        """End every request held by ``hang`` (the rig does, before stopping the server)."""
        self._released.set()

    # --- plumbing ---------------------------------------------------------------------------

    def _nonce(self) -> str:
        nonce = secrets.token_urlsafe(16)
        self._nonces.add(nonce)
        return nonce

    def _json(self, data: Any, status: int = 200, /, **headers: str) -> web.Response:
        return web.json_response(data, status=status,
                                 headers={"Replay-Nonce": self._nonce(), **headers})

    def problem(self, type_: str, detail: str, status: int = 400, /,
                **headers: str) -> web.Response:
        return web.Response(status=status, text=json.dumps({"type": ERR + type_,
                                                            "detail": detail}),
                            content_type="application/problem+json",
                            headers={"Replay-Nonce": self._nonce(), **headers})

    def violation(self, request: web.Request, text: str) -> web.Response:
        self.violations.append(f"{request.method} {request.path}: {text}")
        return self.problem("malformed", f"fake CA: {text}")

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def _signed(self, request: web.Request) -> tuple[dict[str, Any], Any, Any]:
        """(protected header, payload or None for POST-as-GET, account or jwk) or raise."""
        if request.content_type != "application/jose+json":
            raise _Bad(f"Content-Type {request.content_type!r}")
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise _Bad("body is not JSON") from None
        if not isinstance(body, dict) or set(body) != {"protected", "payload", "signature"}:
            raise _Bad(f"not a flattened JWS: {sorted(body) if isinstance(body, dict) else body}")
        header = json.loads(b64d(body["protected"]))
        if header.get("url") != self.url(request.path):
            raise _Bad(f"url {header.get('url')!r} is not {self.url(request.path)!r}")
        nonce = header.get("nonce")
        if nonce not in self._nonces:
            raise _Bad(f"nonce {nonce!r} was never issued or was used before")
        self._nonces.discard(nonce)
        if ("jwk" in header) == ("kid" in header):
            raise _Bad("needs exactly one of jwk and kid")
        if "kid" in header:
            account = self._accounts.get(header["kid"])
            if account is None:
                raise _Bad(f"unknown kid {header['kid']}")
            jwk = account["jwk"]
        else:
            account, jwk = None, header["jwk"]
        data = f"{body['protected']}.{body['payload']}".encode()
        problem = verify_signature(jwk, header.get("alg", ""), data, b64d(body["signature"]))
        if problem:
            raise _Bad(problem)
        payload = json.loads(b64d(body["payload"])) if body["payload"] else None
        return header, payload, account if account is not None else jwk

    # --- app ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/dir", self.directory)
        app.router.add_route("HEAD", "/nonce", self.new_nonce)
        app.router.add_get("/nonce", self.new_nonce, allow_head=False)
        app.router.add_get("/ari/{id}", self.renewal_info)
        for path, handler in (("/new-account", self.new_account), ("/new-order", self.new_order),
                              ("/acct/{id}", self.account), ("/order/{id}", self.order),
                              ("/authz/{id}", self.authz), ("/chall/{id}", self.challenge),
                              ("/finalize/{id}", self.finalize), ("/cert/{id}", self.cert),
                              ("/cert/{id}/alt", self.cert), ("/revoke", self.revoke),
                              ("/key-change", self.key_change)):
            app.router.add_post(path, handler)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        if self.hang:
            await self._released.wait()
        if self.dribble:
            return await self._dribble(request)
        try:
            return await handler(request)  # type: ignore[no-any-return]
        except _Bad as bad:
            return self.violation(request, str(bad))
        except web.HTTPNotFound:
            return self.violation(request, "no such resource")
        except web.HTTPMethodNotAllowed:
            return self.violation(request, "method not allowed")

    async def _dribble(self, request: web.Request) -> web.StreamResponse:
        """An answer that never ends in time: headers, then a byte now and then (every
        read is quick, so a per-read timeout never fires)."""
        response = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Content-Length": "100000"})
        await response.prepare(request)
        end = asyncio.get_running_loop().time() + self.dribble
        with contextlib.suppress(ConnectionError):
            while asyncio.get_running_loop().time() < end and not self._released.is_set():
                await response.write(b" ")
                await asyncio.sleep(0.2)
        request.transport and request.transport.close()  # type: ignore[func-returns-value]
        return response

    async def directory(self, request: web.Request) -> web.Response:
        doc: dict[str, Any] = {"newNonce": self.url("/nonce"),
                               "newAccount": self.url("/new-account"),
                               "newOrder": self.url("/new-order")}
        optional = {"revokeCert": "/revoke", "keyChange": "/key-change", "renewalInfo": "/ari"}
        for name, path in optional.items():
            if name in self.offer:
                doc[name] = self.url(path)
        meta: dict[str, Any] = {}
        if self.terms:
            meta["termsOfService"] = self.terms
        if self.profiles:
            meta["profiles"] = self.profiles
        if meta:
            doc["meta"] = meta
        return web.json_response(doc)

    async def new_nonce(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if request.method == "HEAD" else 204,
                            headers={"Replay-Nonce": self._nonce(), "Cache-Control": "no-store"})

    async def _checked(self, request: web.Request
                       ) -> tuple[dict[str, Any], Any, Any] | web.Response:
        if self.reject_nonces > 0:
            self.reject_nonces -= 1
            await request.read()
            return self.problem("badNonce", "JWS has an invalid anti-replay nonce")
        return await self._signed(request)

    async def new_account(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        header, payload, jwk = checked
        if "jwk" not in header or not isinstance(payload, dict):
            raise _Bad("newAccount must carry a jwk and a JSON object")
        unknown = set(payload) - {"contact", "termsOfServiceAgreed", "onlyReturnExisting",
                                  "externalAccountBinding"}
        if unknown:
            raise _Bad(f"unknown newAccount fields {sorted(unknown)}")
        existing = next((url for url, a in self._accounts.items()
                         if thumbprint(a["jwk"]) == thumbprint(jwk)), None)
        if existing:
            acct = self._accounts[existing]
            return self._json(self._account_doc(acct), 200, Location=existing)
        if payload.get("onlyReturnExisting"):
            return self.problem("accountDoesNotExist", "no account for this key")
        if self.terms and payload.get("termsOfServiceAgreed") is not True:
            return self.problem("userActionRequired", "agree to the terms first")
        url = self.url(f"/acct/{next(self._ids)}")
        self._accounts[url] = {"jwk": jwk, "status": "valid",
                               "contact": payload.get("contact", [])}
        return self._json(self._account_doc(self._accounts[url]), 201, Location=url)

    def _account_doc(self, acct: dict[str, Any]) -> dict[str, Any]:
        return {"status": acct["status"], "contact": acct["contact"], "orders": self.url("/x")}

    async def account(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        header, payload, acct = checked
        if header.get("kid") != self.url(request.path):
            raise _Bad("an account may only be changed by itself")
        if payload:
            if "contact" in payload:
                acct["contact"] = payload["contact"]
            if payload.get("status") == "deactivated":
                acct["status"] = "deactivated"
        return self._json(self._account_doc(acct))

    async def new_order(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        header, payload, _ = checked
        if "kid" not in header or not isinstance(payload, dict):
            raise _Bad("newOrder must be signed by an account")
        unknown = set(payload) - {"identifiers", "profile", "replaces", "notBefore", "notAfter"}
        if unknown:
            raise _Bad(f"unknown newOrder fields {sorted(unknown)}")
        self.new_orders.append(payload)
        if self.fail_new_order:
            self.fail_new_order -= 1 if self.fail_new_order > 0 else 0
            return self.problem("serverInternal", "the fake CA is broken today", 500)
        if self.busy_new_order > 0:
            self.busy_new_order -= 1
            return self.problem("rateLimited", "busy, come back soon", 503,
                                **{"Retry-After": str(self.busy_retry_after)})
        if self.new_order_problem is not None:
            type_, status = self.new_order_problem
            return self.problem(type_, f"the fake CA says {type_}", status)
        if payload.get("replaces") and self.refuse_replaces:
            return self.problem("alreadyReplaced", "that certificate was replaced already", 409)
        if payload.get("replaces") and payload["replaces"] not in {
                ari_id(c) for c in self._certs.values()}:
            raise _Bad(f"replaces {payload['replaces']!r} names no certificate of ours")
        profile = payload.get("profile")
        if profile is not None and profile not in self.profiles:
            return self.problem("invalidProfile", f"no profile {profile!r}")
        names = [i["value"] for i in payload.get("identifiers", []) if i.get("type") == "dns"]
        order_id = str(next(self._ids))
        authz_urls = []
        for name in names:
            authz_id = str(next(self._ids))
            wildcard = name.startswith("*.")
            self._authzs[authz_id] = {
                "status": "pending", "wildcard": wildcard,
                "identifier": {"type": "dns", "value": name.removeprefix("*.")},
                "account": header["kid"],
                "challenges": [{"type": "dns-01", "url": self.url(f"/chall/{authz_id}"),
                                "status": "pending", "token": secrets.token_urlsafe(32)}]}
            authz_urls.append(self.url(f"/authz/{authz_id}"))
        self._orders[order_id] = {"status": "pending", "identifiers": payload["identifiers"],
                                  "authorizations": authz_urls, "polls": 0,
                                  "finalize": self.url(f"/finalize/{order_id}"),
                                  "profile": profile, "replaces": payload.get("replaces")}
        return self._json(self._order_doc(order_id), 201, Location=self.url(f"/order/{order_id}"))

    def _order_doc(self, order_id: str) -> dict[str, Any]:
        order = self._orders[order_id]
        if order["status"] == "pending" and all(
                self._authzs[u.rsplit("/", 1)[1]]["status"] == "valid"
                for u in order["authorizations"]):
            order["status"] = "ready"
        doc = {k: order[k] for k in ("status", "identifiers", "authorizations", "finalize")}
        for k in ("profile", "replaces"):
            if order.get(k):
                doc[k] = order[k]
        if order.get("certificate"):
            doc["certificate"] = order["certificate"]
        return doc

    async def order(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        _, payload, _ = checked
        if payload is not None:
            raise _Bad("an order is fetched with POST-as-GET")
        order_id = request.match_info["id"]
        order = self._orders[order_id]
        headers = {}
        if order["status"] == "processing":
            order["polls"] += 1
            if order["polls"] > self.processing_polls:
                order["status"] = "valid"
            elif self.retry_after is not None:
                headers["Retry-After"] = str(self.retry_after)
        return self._json(self._order_doc(order_id), **headers)

    async def authz(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        _, payload, _ = checked
        if payload is not None:
            raise _Bad("an authorization is fetched with POST-as-GET")
        authz = self._authzs[request.match_info["id"]]
        headers = {"Retry-After": str(self.retry_after)} \
            if authz["status"] == "pending" and self.retry_after is not None else {}
        return self._json({k: authz[k] for k in ("status", "identifier", "challenges",
                                                 "wildcard")}, **headers)

    async def challenge(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        _, payload, acct = checked
        if payload != {}:
            raise _Bad(f"a challenge is answered with {{}}, not {payload!r}")
        authz = self._authzs[request.match_info["id"]]
        challenge = authz["challenges"][0]
        expected = b64e(hashlib.sha256(
            f"{challenge['token']}.{thumbprint(acct['jwk'])}".encode()).digest())
        fqdn = f"_acme-challenge.{authz['identifier']['value']}"
        served = await self._lookup(fqdn)
        if expected in served:
            challenge["status"] = authz["status"] = "valid"
            self.validated.append((fqdn, expected))
        else:
            challenge["status"] = authz["status"] = "invalid"
            challenge["error"] = {"type": ERR + "unauthorized",
                                  "detail": f"no TXT {expected} at {fqdn} (saw {sorted(served)})"}
        return self._json(challenge)

    async def _lookup(self, fqdn: str) -> set[str]:
        if self.dns_server is None:
            return set()
        query = dns.message.make_query(fqdn, dns.rdatatype.TXT)
        host, port = self.dns_server
        answer = await dns.asyncquery.udp(query, host, port=port, timeout=3)
        return {b"".join(r.strings).decode() for rrset in answer.answer
                if rrset.rdtype == dns.rdatatype.TXT for r in rrset}

    async def finalize(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        _, payload, _ = checked
        if not isinstance(payload, dict) or set(payload) != {"csr"}:
            raise _Bad(f"finalize takes {{'csr'}}, not {payload!r}")
        order_id = request.match_info["id"]
        self._order_doc(order_id)
        order = self._orders[order_id]
        if order["status"] != "ready":
            return self.problem("orderNotReady", f"the order is {order['status']}", 403)
        csr = x509.load_der_x509_csr(b64d(payload["csr"]))
        if not csr.is_signature_valid:
            raise _Bad("the CSR's signature is wrong")
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        wanted = {i["value"] for i in order["identifiers"]}
        if set(san.get_values_for_type(x509.DNSName)) != wanted:
            raise _Bad(f"CSR names {san.get_values_for_type(x509.DNSName)} != {wanted}")
        days = 6.0 if order.get("profile") == "shortlived" else self.lifetime_days
        cert = self.issuer.issue(csr, days)
        cert_id = str(next(self._ids))
        self._certs[cert_id] = cert
        order["certificate"] = self.url(f"/cert/{cert_id}")
        order["status"] = "processing"
        self.finalize_answers += 1
        headers = {"Location": self.url(f"/order/{order_id}")} if self.finalize_location else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return self._json(self._order_doc(order_id), **headers)

    async def cert(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        _, payload, _ = checked
        if payload is not None:
            raise _Bad("a certificate is fetched with POST-as-GET")
        if request.headers.get("Accept") != "application/pem-certificate-chain":
            raise _Bad(f"Accept {request.headers.get('Accept')!r}")
        cert_id = request.match_info["id"]
        alternate = request.path.endswith("/alt")
        chain = [self._certs[cert_id], self.issuer.intermediates[1 if alternate else 0]]
        pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in chain)
        headers = {"Replay-Nonce": self._nonce()}
        if not alternate:
            headers["Link"] = f'<{self.url(f"/cert/{cert_id}/alt")}>;rel="alternate", ' \
                              f'<{self.url("/dir")}>;rel="index"'
        return web.Response(text=pem, content_type="application/pem-certificate-chain",
                            headers=headers)

    async def renewal_info(self, request: web.Request) -> web.Response:
        if "renewalInfo" not in self.offer:
            raise _Bad("renewalInfo is not offered")
        cert_id = request.match_info["id"]
        self.ari_queries.append(cert_id)
        if cert_id not in {ari_id(c) for c in self._certs.values()}:
            return self.problem("malformed", f"no certificate {cert_id}", 404)
        assert self.ari_window is not None
        start, end = self.ari_window
        doc = {"suggestedWindow": {"start": start.isoformat().replace("+00:00", "Z"),
                                   "end": end.isoformat().replace("+00:00", "Z")}}
        return web.json_response(doc, headers={"Retry-After": str(self.ari_retry_after)})

    async def revoke(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        _, payload, _ = checked
        if not isinstance(payload, dict) or "certificate" not in payload:
            raise _Bad(f"revokeCert needs a certificate, not {payload!r}")
        cert = x509.load_der_x509_certificate(b64d(payload["certificate"]))
        self.revoked[format(cert.serial_number, "x")] = payload.get("reason")
        return web.Response(status=200, headers={"Replay-Nonce": self._nonce()})

    async def key_change(self, request: web.Request) -> web.Response:
        checked = await self._checked(request)
        if isinstance(checked, web.Response):
            return checked
        header, inner, acct = checked
        if not isinstance(inner, dict) or set(inner) != {"protected", "payload", "signature"}:
            raise _Bad("keyChange carries a flattened JWS")
        inner_header = json.loads(b64d(inner["protected"]))
        if "nonce" in inner_header or "jwk" not in inner_header \
                or inner_header.get("url") != self.url(request.path):
            raise _Bad(f"bad inner keyChange header {inner_header}")
        problem = verify_signature(inner_header["jwk"], inner_header.get("alg", ""),
                                   f"{inner['protected']}.{inner['payload']}".encode(),
                                   b64d(inner["signature"]))
        if problem:
            raise _Bad(f"inner JWS: {problem}")
        body = json.loads(b64d(inner["payload"]))
        if body.get("account") != header["kid"] or body.get("oldKey") != acct["jwk"]:
            raise _Bad(f"keyChange payload {body} does not match the account")
        acct["jwk"] = inner_header["jwk"]
        self.key_changes += 1
        return self._json(self._account_doc(acct))


class _Bad(Exception):
    """A request the fake CA must not have received."""


async def serve(ca: FakeCA, tls: TLSFiles) -> tuple[web.AppRunner, str]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls.cert), str(tls.key))
    runner = web.AppRunner(ca.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    ca.base = f"https://127.0.0.1:{port}"
    return runner, f"{ca.base}/dir"
