"""JWS, JWK thumbprints, EAB MACs, keys and CSRs, checked against the RFCs' own examples
and against verification done here with ``cryptography`` directly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given
from hypothesis import strategies as st

from lib.acme import jws
from lib.acme.errors import UsageError
from lib.acme.keys import (
    KEY_TYPES,
    generate_key,
    key_type_of,
    load_private_key,
    make_csr,
    private_pem,
)


def b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify(key: jws.AccountKey, body: dict[str, str]) -> None:
    data = f"{body['protected']}.{body['payload']}".encode()
    sig = b64d(body["signature"])
    public = key.private_key.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        size = (public.curve.key_size + 7) // 8
        assert len(sig) == 2 * size
        digest = hashes.SHA256() if size == 32 else hashes.SHA384()
        der = encode_dss_signature(int.from_bytes(sig[:size], "big"),
                                   int.from_bytes(sig[size:], "big"))
        public.verify(der, data, ec.ECDSA(digest))
    else:
        assert isinstance(public, rsa.RSAPublicKey)
        public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.parametrize(("curve", "alg"), [(ec.SECP256R1(), "ES256"), (ec.SECP384R1(), "ES384")])
def test_ecdsa_signatures_are_fixed_length_r_s(curve: ec.EllipticCurve, alg: str) -> None:
    key = jws.AccountKey(ec.generate_private_key(curve))
    assert key.alg == alg
    for _ in range(20):  # short r or s must still be padded to full length
        body = jws.sign(key, {"hello": "world"}, "https://ca.example/x", nonce="abc")
        verify(key, body)
    header = json.loads(b64d(body["protected"]))
    assert header == {"alg": alg, "jwk": key.jwk(), "nonce": "abc", "url": "https://ca.example/x"}
    assert json.loads(b64d(body["payload"])) == {"hello": "world"}


def test_rs256_and_kid_and_post_as_get() -> None:
    key = jws.AccountKey(rsa.generate_private_key(65537, 2048))
    body = jws.sign(key, None, "https://ca.example/order/1", nonce="n1",
                    kid="https://ca.example/acct/1")
    verify(key, body)
    assert body["payload"] == ""
    header = json.loads(b64d(body["protected"]))
    assert header == {"alg": "RS256", "kid": "https://ca.example/acct/1", "nonce": "n1",
                      "url": "https://ca.example/order/1"}


def test_unsuitable_account_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 2048"):
        jws.AccountKey(rsa.generate_private_key(65537, 1024))  # noqa: S505 - the refusal is tested
    with pytest.raises(ValueError, match="P-256 or P-384"):
        jws.AccountKey(ec.generate_private_key(ec.SECP521R1()))


def test_jwk_coordinates_keep_leading_zeros() -> None:
    for _ in range(50):
        jwk = jws.AccountKey(ec.generate_private_key(ec.SECP256R1())).jwk()
        assert len(b64d(jwk["x"])) == 32 and len(b64d(jwk["y"])) == 32


def test_thumbprint_matches_rfc_7638_example() -> None:
    # RFC 7638 section 3.1.
    jwk = {
        "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
             "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-"
             "65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNL"
             "yrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJ"
             "zKnqDKgw",
    }
    assert jws.jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_dns01_value_is_the_hash_of_the_key_authorization() -> None:
    key = jws.AccountKey(ec.generate_private_key(ec.SECP256R1()))
    token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
    expected = base64.urlsafe_b64encode(
        hashlib.sha256(f"{token}.{key.thumbprint()}".encode()).digest()).rstrip(b"=").decode()
    value = jws.dns01_value(token, key)
    assert value == expected and len(value) == 43


@pytest.mark.parametrize(("alg", "digest"), [("HS256", hashlib.sha256), ("HS384", hashlib.sha384),
                                             ("HS512", hashlib.sha512)])
def test_eab_binding_is_a_mac_over_the_account_key(alg: str, digest: Any) -> None:
    account = jws.AccountKey(ec.generate_private_key(ec.SECP256R1()))
    mac_key = b"\x01" * 32
    body = jws.eab_binding("kid-1", mac_key, account.jwk(), "https://ca.example/new-acct", alg)
    header = json.loads(b64d(body["protected"]))
    assert header == {"alg": alg, "kid": "kid-1", "url": "https://ca.example/new-acct"}
    assert json.loads(b64d(body["payload"])) == account.jwk()
    mac = hmac.new(mac_key, f"{body['protected']}.{body['payload']}".encode(), digest).digest()
    assert b64d(body["signature"]) == mac
    assert "nonce" not in header


def test_eab_refuses_unknown_algorithms_and_empty_keys() -> None:
    jwk = jws.AccountKey(ec.generate_private_key(ec.SECP256R1())).jwk()
    with pytest.raises(ValueError, match="HS256"):
        jws.eab_binding("k", b"x", jwk, "u", "HS1")
    with pytest.raises(ValueError, match="empty"):
        jws.eab_binding("k", b"", jwk, "u")


@given(st.binary(max_size=80))
def test_base64url_round_trip(data: bytes) -> None:
    text = jws.b64url(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert jws.b64url_decode(text) == data
    # Padded and standard-alphabet copies, as CA consoles sometimes show keys, decode too.
    assert jws.b64url_decode(base64.b64encode(data).decode()) == data


def test_base64url_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        jws.b64url_decode("abc$def")


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_key_types_and_csrs(key_type: str) -> None:
    key = generate_key(key_type)
    assert key_type_of(key) == key_type
    assert key_type_of(load_private_key(private_pem(key))) == key_type
    names = ["example.test", "*.example.test", "a" * 60 + ".example.test"]
    csr = x509.load_der_x509_csr(make_csr(key, names))
    assert csr.is_signature_valid
    sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == names
    assert csr.subject.rfc4514_string() == "CN=example.test"
    assert csr.public_key() == key.public_key()


def test_a_long_first_name_stays_out_of_the_common_name() -> None:
    long_name = "a" * 60 + ".example.test"
    csr = x509.load_der_x509_csr(make_csr(generate_key("ec256"), [long_name]))
    assert csr.subject.rfc4514_string() == ""


def test_unknown_key_type_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="ec256"):
        generate_key("dsa1024")
