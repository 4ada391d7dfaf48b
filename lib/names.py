"""Validation and normalisation of DNS names and dns-01 challenge values.

Every entry point (native API, hooks, future protocols) funnels names through
:func:`normalize_name` so that case, trailing dots, IDNA and ``*.`` prefixes are
handled once, and compares them on label boundaries with :func:`is_within`:
``evilexample.com`` is not inside ``example.com``.

Internationalised names are mapped as CAs and browsers map them: UTS #46 (case
folding, full-width forms, ideographic full stops), then IDNA 2008, with the
``idna`` package. ``straße`` becomes ``xn--strae-oqa``, not IDNA 2003's
``strasse``: a record written under the 2003 form is where no CA looks. ``idna``
is imported only for a name that needs it (a non-ASCII label or an ``xn--``
label), because the hook, a new process per call, imports this module.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re

CHALLENGE_LABEL = "_acme-challenge"

# Letters, digits, hyphen and underscore: hostnames plus the underscore labels of
# service names such as ``_acme-challenge``. Used with fullmatch: ``$`` with
# ``match`` would also take a final line break ("www\n", a value and "\n").
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_VALUE = re.compile(r"[A-Za-z0-9_-]{43}")
MAX_NAME = 253  # characters in a DNS name in text form, without the final dot
_ACE_PREFIX = "xn--"
_QUOTED = re.compile(r" (?:of|in) '.*'")


class InvalidName(ValueError):
    """A DNS name is malformed."""


class InvalidValue(ValueError):
    """A challenge value is not what dns-01 produces."""


def normalize_name(name: str) -> str:
    """Return *name* lower-cased, IDNA-encoded, without trailing dot or ``*.``.

    Raises :class:`InvalidName` for anything that is not a plain DNS name, such
    as a wildcard in the middle, empty labels, spaces, over-long labels, or a
    label that is not valid IDNA 2008.
    """
    if not isinstance(name, str):
        raise InvalidName("must be a string")
    text = name.strip()
    if text != name or not text:
        raise InvalidName("must be a non-empty name without surrounding spaces")
    if not text.isascii():
        # Before splitting: the mapping turns U+3002 and its kin into ".".
        text = _uts46_map(text)
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
        label = _a_label(label) if not label.isascii() else label.lower()
        if label.startswith(_ACE_PREFIX):
            _check_a_label(label)
        if not _LABEL.fullmatch(label):
            raise InvalidName(f"has an invalid label {label[:63]!r}")
        out.append(label)
    result = ".".join(out)
    if len(result) > MAX_NAME:
        raise InvalidName("is longer than 253 characters")
    return result


def _uts46_map(text: str) -> str:
    import idna  # only here: see the module docstring

    try:
        # std3_rules off: "_" (in _acme-challenge) is for _LABEL to judge, not UTS #46.
        mapped: str = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidName(f"is not valid IDNA 2008: {_reason(exc)}") from None
    return mapped


def _a_label(label: str) -> str:
    """The A-label (``xn--...``) of a mapped, non-ASCII *label* under IDNA 2008."""
    import idna

    try:
        return bytes(idna.alabel(label)).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidName(f"has a label that is not valid IDNA 2008 ({_reason(exc)})") from None


def _check_a_label(label: str) -> None:
    """An ``xn--`` label must be what IDNA 2008 makes of the name it stands for."""
    import idna

    try:
        unicode = idna.ulabel(label)
        if bytes(idna.alabel(unicode)).decode("ascii") != label:
            raise idna.IDNAError("not the canonical A-label")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidName(f"has a label {label[:63]!r} that is not valid IDNA 2008 "
                          f"({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    """idna's message without the text it quotes (the caller's bytes do not go back out)."""
    text = _QUOTED.sub("", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return text[:120]


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
    if not isinstance(value, str) or not _VALUE.fullmatch(value):
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
