"""Validation and normalisation of DNS names and dns-01 challenge values.

Every entry point (native API, hooks, future protocols) funnels names through
:func:`normalize_name` so that case, trailing dots, IDNA and ``*.`` prefixes are
handled once, and compares them on label boundaries with :func:`is_within`:
``evilexample.com`` is not inside ``example.com``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re

CHALLENGE_LABEL = "_acme-challenge"

# Letters, digits, hyphen and underscore: hostnames plus the underscore labels of
# service names such as ``_acme-challenge``.
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_VALUE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_MAX_NAME = 253


class InvalidName(ValueError):
    """A DNS name is malformed."""


class InvalidValue(ValueError):
    """A challenge value is not what dns-01 produces."""


def normalize_name(name: str) -> str:
    """Return *name* lower-cased, IDNA-encoded, without trailing dot or ``*.``.

    Raises :class:`InvalidName` for anything that is not a plain DNS name, such
    as a wildcard in the middle, empty labels, spaces or over-long labels.
    """
    if not isinstance(name, str):
        raise InvalidName("must be a string")
    text = name.strip()
    if text != name or not text:
        raise InvalidName("must be a non-empty name without surrounding spaces")
    if text.endswith("."):
        text = text[:-1]
    # An identifier for a wildcard certificate arrives as "*.example.com" from
    # some clients; the challenge lives at the base name.
    if text.startswith("*."):
        text = text[2:]
    labels = text.split(".")
    out: list[str] = []
    for label in labels:
        if not label:
            raise InvalidName("has an empty label")
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError as exc:
                raise InvalidName("has a label that is not valid IDNA") from exc
        label = label.lower()
        if not _LABEL.match(label):
            raise InvalidName(f"has an invalid label {label[:63]!r}")
        out.append(label)
    result = ".".join(out)
    if len(result) > _MAX_NAME:
        raise InvalidName("is longer than 253 characters")
    return result


def is_within(name: str, domain: str) -> bool:
    """True if normalised *name* equals *domain* or lies below it (label boundary)."""
    return name == domain or name.endswith("." + domain)


def is_loopback_host(host: str) -> bool:
    """Whether *host* (a name or an address, no brackets) is this machine: ``localhost``
    or a loopback address, where a password may travel without TLS."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def challenge_name(name: str) -> str:
    """The ``_acme-challenge`` owner name for a normalised base or challenge name."""
    if name == CHALLENGE_LABEL or name.startswith(CHALLENGE_LABEL + "."):
        return name
    return f"{CHALLENGE_LABEL}.{name}"


def base_name(fqdn: str) -> str:
    """The name a challenge name validates (``_acme-challenge.`` removed)."""
    prefix = CHALLENGE_LABEL + "."
    return fqdn[len(prefix):] if fqdn.startswith(prefix) else fqdn


def validate_value(value: object) -> str:
    """Return *value* if it is a dns-01 TXT value: exactly 43 base64url characters."""
    if not isinstance(value, str) or not _VALUE.match(value):
        raise InvalidValue("must be exactly 43 base64url characters")
    return value


def txt_value(key_authorization: str) -> str:
    """The dns-01 TXT value for a key authorization: base64url(SHA-256), no padding
    (RFC 8555 section 8.4)."""
    digest = hashlib.sha256(key_authorization.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def value_tag(value: str) -> str:
    """A short, one-way tag that lets logs correlate a value without revealing it.

    The gateway's audit log and the hook's log both show it, so the two can be
    matched up.
    """
    return hashlib.sha256(value.encode()).hexdigest()[:10]
