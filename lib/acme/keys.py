"""Private keys and certificate signing requests.

Key types by name: ``ec256`` (P-256, the default), ``ec384`` (P-384),
``rsa2048``, ``rsa3072`` and ``rsa4096``. Keys are stored as unencrypted PKCS#8
PEM (the files are 0600, see :mod:`lib.acme.store`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from lib.acme.errors import UsageError
from lib.acme.jws import PrivateKey

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")
DEFAULT_KEY_TYPE = "ec256"
_CURVES = {"ec256": ec.SECP256R1, "ec384": ec.SECP384R1}
_RSA_BITS = {"rsa2048": 2048, "rsa3072": 3072, "rsa4096": 4096}
# RFC 5280 ub-common-name: longer names go only into the SAN extension.
_MAX_CN = 64
_SAN_KINDS: dict[type, str] = {x509.IPAddress: "IP address", x509.RFC822Name: "e-mail address",
                               x509.UniformResourceIdentifier: "URI"}


def generate_key(key_type: str) -> PrivateKey:
    if key_type in _CURVES:
        return ec.generate_private_key(_CURVES[key_type]())
    if key_type in _RSA_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS[key_type])
    raise UsageError(f"unknown key type {key_type!r} (use one of: {', '.join(KEY_TYPES)})")


def key_type_of(key: PrivateKey) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"secp256r1": "ec256", "secp384r1": "ec384"}.get(key.curve.name, key.curve.name)
    return f"rsa{key.key_size}"


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(data: bytes) -> PrivateKey:
    """Parse a PEM private key; raises ValueError when it is not an EC or RSA key."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("not an EC or RSA private key")
    return key


def make_csr(key: PrivateKey, names: Sequence[str], must_staple: bool = False) -> bytes:
    """A DER CSR for *names* (all in the SAN extension; the first short one also as CN),
    asking for the OCSP must-staple feature (RFC 7633) when *must_staple*."""
    if not names:
        raise UsageError("a certificate needs at least one name")
    builder = x509.CertificateSigningRequestBuilder()
    common = next((n for n in names if len(n) <= _MAX_CN), None)
    subject = [x509.NameAttribute(NameOID.COMMON_NAME, common)] if common else []
    builder = builder.subject_name(x509.Name(subject)).add_extension(
        x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    if must_staple:
        builder = builder.add_extension(
            x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
    digest = (hashes.SHA384() if isinstance(key, ec.EllipticCurvePrivateKey)
              and key.curve.name == "secp384r1" else hashes.SHA256())
    return builder.sign(key, digest).public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class UserCsr:
    """A CSR the user made (``--csr``): its names, its key's type, its DER form."""

    der: bytes
    names: tuple[str, ...]
    key_type: str

    def public_key_der(self) -> bytes:
        csr = x509.load_der_x509_csr(self.der)
        return csr.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)


def read_csr(data: bytes) -> UserCsr:
    """Parse a PEM or DER CSR and check what a CA will check; UsageError saying what is wrong."""
    try:
        csr = (x509.load_pem_x509_csr(data) if data.lstrip().startswith(b"-----")
               else x509.load_der_x509_csr(data))
    except ValueError:
        raise UsageError("not a certificate signing request (PEM or DER)") from None
    if not csr.is_signature_valid:
        raise UsageError("the CSR's signature does not match its key")
    key = csr.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key_type = {"secp256r1": "ec256", "secp384r1": "ec384"}.get(key.curve.name, "")
    elif isinstance(key, rsa.RSAPublicKey):
        key_type = f"rsa{key.key_size}"
    else:
        key_type = ""
    if key_type not in KEY_TYPES:
        raise UsageError(f"the CSR's key is not one of {', '.join(KEY_TYPES)}")
    names: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        for entry in san:
            # A CA signs all that a CSR asks for or nothing: one IP address (or e-mail
            # address, URI) beside the DNS names is refused at finalize, after validation.
            if not isinstance(entry, x509.DNSName):
                raise UsageError(f"the CSR asks for the {_SAN_KINDS.get(type(entry), 'entry')} "
                                 f"{entry.value}: dns-01 validates DNS names only")
            names.append(entry.value)
    for attribute in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        value = attribute.value if isinstance(attribute.value, str) else ""
        if value and value not in names:
            names.append(value)
    if not names:
        raise UsageError("the CSR names no DNS name")
    return UserCsr(csr.public_bytes(serialization.Encoding.DER), tuple(names), key_type)
