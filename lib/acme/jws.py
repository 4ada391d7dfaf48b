"""JSON Web Signatures as ACME uses them (RFC 7515, 7517, 7518, 7638; RFC 8555 section 6.2).

Only what ACME needs, on ``cryptography``: account keys ES256 (P-256), ES384
(P-384) and RS256 (RSA), signed in the flattened JSON serialization; HS256,
HS384 and HS512 for external account binding (RFC 8555 section 7.3.4); JWK
thumbprints and the dns-01 TXT value (section 8.1 and 8.4).

ECDSA signatures are the fixed-length ``r || s`` that JWS requires, not the DER
that ``cryptography`` produces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from lib.names import txt_value

_EC_ALGORITHMS: dict[str, tuple[str, str, int, type[hashes.HashAlgorithm]]] = {
    # curve name: (JWS alg, JWK crv, coordinate bytes, hash)
    "secp256r1": ("ES256", "P-256", 32, hashes.SHA256),
    "secp384r1": ("ES384", "P-384", 48, hashes.SHA384),
}
_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
EAB_ALGORITHMS = tuple(_HMAC)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode base64url with or without padding; also accepts the standard alphabet.

    Raises ValueError for anything that is not base64.
    """
    cleaned = text.strip().replace("+", "-").replace("/", "_").rstrip("=")
    try:
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def json_bytes(value: Any) -> bytes:
    """Compact JSON, as signed."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _int_bytes(number: int, length: int | None = None) -> bytes:
    size = length if length is not None else max(1, (number.bit_length() + 7) // 8)
    return number.to_bytes(size, "big")


class AccountKey:
    """An account key pair: its JWK, thumbprint and JWS signatures."""

    def __init__(self, private_key: PrivateKey) -> None:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            spec = _EC_ALGORITHMS.get(private_key.curve.name)
            if spec is None:
                raise ValueError(f"unsupported curve {private_key.curve.name} (use P-256 or P-384)")
            self.alg = spec[0]
        elif isinstance(private_key, rsa.RSAPrivateKey):
            if private_key.key_size < 2048:
                raise ValueError("RSA account keys must have at least 2048 bits")
            self.alg = "RS256"
        else:
            raise ValueError("account keys must be EC (P-256, P-384) or RSA")
        self.private_key = private_key

    def jwk(self) -> dict[str, str]:
        """The public key as a JWK with exactly the required members."""
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            _, crv, size, _ = _EC_ALGORITHMS[key.curve.name]
            numbers = key.public_key().public_numbers()
            return {"crv": crv, "kty": "EC",
                    "x": b64url(_int_bytes(numbers.x, size)),
                    "y": b64url(_int_bytes(numbers.y, size))}
        rsa_numbers = key.public_key().public_numbers()
        return {"e": b64url(_int_bytes(rsa_numbers.e)), "kty": "RSA",
                "n": b64url(_int_bytes(rsa_numbers.n))}

    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint, base64url."""
        return jwk_thumbprint(self.jwk())

    def sign(self, data: bytes) -> bytes:
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            _, _, size, hash_class = _EC_ALGORITHMS[key.curve.name]
            r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hash_class())))
            return _int_bytes(r, size) + _int_bytes(s, size)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638: SHA-256 over the required members in lexicographic order, no blanks."""
    required = ("crv", "kty", "x", "y") if jwk.get("kty") == "EC" else ("e", "kty", "n")
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def sign(key: AccountKey, payload: Any, url: str, *, nonce: str | None = None,
         kid: str | None = None) -> dict[str, str]:
    """A flattened JWS over *payload* (None: POST-as-GET's empty payload).

    With *kid* the header names the account; without it, it carries the JWK
    (newAccount, revocation by certificate key, the inner key-change JWS).
    """
    protected: dict[str, Any] = {"alg": key.alg, "url": url}
    if nonce is not None:
        protected["nonce"] = nonce
    if kid is not None:
        protected["kid"] = kid
    else:
        protected["jwk"] = key.jwk()
    body = b"" if payload is None else json_bytes(payload)
    return _flattened(protected, body, key.sign)


def _flattened(protected: dict[str, Any], payload: bytes, signer: Any) -> dict[str, str]:
    header = b64url(json_bytes(protected))
    encoded = b64url(payload) if payload else ""
    signature = signer(f"{header}.{encoded}".encode("ascii"))
    return {"protected": header, "payload": encoded, "signature": b64url(signature)}


def eab_binding(kid: str, mac_key: bytes, account_jwk: dict[str, str], url: str,
                alg: str = "HS256") -> dict[str, str]:
    """The ``externalAccountBinding`` JWS: the account JWK, MACed with the CA's key."""
    digest = _HMAC.get(alg)
    if digest is None:
        raise ValueError(f"EAB algorithm {alg!r} is not one of {', '.join(_HMAC)}")
    if not mac_key:
        raise ValueError("the EAB MAC key is empty")

    def mac(data: bytes) -> bytes:
        return hmac.new(mac_key, data, digest).digest()

    return _flattened({"alg": alg, "kid": kid, "url": url}, json_bytes(account_jwk), mac)


def key_authorization(token: str, key: AccountKey) -> str:
    return f"{token}.{key.thumbprint()}"


def dns01_value(token: str, key: AccountKey) -> str:
    """The TXT value for a dns-01 challenge: base64url(SHA-256(key authorization))."""
    return txt_value(key_authorization(token, key))
