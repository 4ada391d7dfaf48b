"""Reading issued certificates: chains, names, lifetimes, ARI identifiers, chain choice.

A CA may offer the same certificate under several chains (RFC 8555 section
7.4.2, ``Link: <url>;rel="alternate"``). :func:`select_chain` picks the one
the user prefers by issuer common name, as certbot and lego do: first a chain
whose topmost certificate was issued by that name, then any chain that has a
certificate issued by it; otherwise the CA's default (the first).

:func:`ari_cert_id` is the ARI certificate identifier (RFC 9773 section 4.1):
base64url(Authority Key Identifier) "." base64url(DER serial number bytes).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from lib.acme.jws import b64url


def load_chain(pem: str | bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle, in order; raises ValueError when there is none."""
    data = pem.encode() if isinstance(pem, str) else pem
    return x509.load_pem_x509_certificates(data)


def to_pem(certs: Sequence[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certs)


def common_name(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.DNSName))


def ari_cert_id(cert: x509.Certificate) -> str | None:
    """The ARI identifier, or None when the certificate has no key identifier for its issuer."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    except x509.ExtensionNotFound:
        return None
    if aki.value.key_identifier is None:
        return None
    serial = cert.serial_number
    # DER INTEGER contents: minimal two's complement, so a set high bit gets a 0x00 in front.
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{b64url(aki.value.key_identifier)}.{b64url(serial_bytes)}"


@dataclass(frozen=True)
class CertificateInfo:
    """What the client remembers about an issued leaf certificate."""

    serial: str
    names: tuple[str, ...]
    not_before: datetime.datetime
    not_after: datetime.datetime
    issuer: str
    ari_id: str | None

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateInfo:
        return cls(serial=format(cert.serial_number, "x"), names=tuple(dns_names(cert)),
                   not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                   issuer=common_name(cert.issuer), ari_id=ari_cert_id(cert))


def chain_top_issuer(chain: Sequence[x509.Certificate]) -> str:
    """The issuer CN of the chain's topmost certificate: the root it leads to."""
    return common_name(chain[-1].issuer) if chain else ""


def select_chain(chains: Sequence[Sequence[x509.Certificate]], preferred: str | None) -> int:
    """The index of the chain to use among *chains* (the CA's default first)."""
    if not preferred or len(chains) < 2:
        return 0
    wanted = preferred.strip().casefold()
    for index, chain in enumerate(chains):
        if chain_top_issuer(chain).casefold() == wanted:
            return index
    for index, chain in enumerate(chains):
        if passes_through(chain, preferred):
            return index
    return 0


def passes_through(chain: Sequence[x509.Certificate], issuer: str) -> bool:
    """True if some certificate in *chain* was issued by *issuer* (a CN)."""
    wanted = issuer.strip().casefold()
    return any(common_name(c.issuer).casefold() == wanted for c in chain)


def key_matches(cert_pem: bytes, key_pem: bytes) -> bool:
    """Whether the first certificate in *cert_pem* is for the private key in *key_pem*.

    Raises ValueError when either cannot be read.
    """
    cert = load_chain(cert_pem)[0]
    key = serialization.load_pem_private_key(key_pem, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(cert.public_key().public_bytes(serialization.Encoding.DER, spki)
                == key.public_key().public_bytes(serialization.Encoding.DER, spki))
