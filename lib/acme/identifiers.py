"""Which names a certificate can hold when it is validated with dns-01.

:func:`lib.names.normalize_name` accepts every name the gateway may write a record
under, ``_acme-challenge`` labels included. A certificate identifier is narrower (RFC
8555 section 7.1.4, RFC 5280 and the CA/Browser Forum's rules, which every public CA
enforces): a host name of at least two labels made of letters, digits and hyphens, with
a top label that is not a number, and no "reserved" ``ab--`` label except an IDNA
``xn--`` one, and short enough that ``_acme-challenge.`` in front of it is still a DNS
name. Anything else would travel to the CA only to come back ``malformed`` or
``rejectedIdentifier``; an IP address cannot be validated with dns-01 at all.
"""

from __future__ import annotations

import ipaddress
import re

from lib.acme.errors import UsageError
from lib.names import MAX_NAME, InvalidName, challenge_name, normalize_name

# Used with fullmatch, as lib.names does.
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def dns_identifier(text: str) -> str:
    """*text* as the identifier to order (``*.`` kept for a wildcard), or UsageError."""
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        raise UsageError(f"{text!r} is an IP address: dns-01 validates DNS names only")
    wildcard = text.startswith("*.")
    try:
        base = normalize_name(text)
    except InvalidName as exc:
        raise UsageError(f"{text!r}: {exc}") from None
    labels = base.split(".")
    why = None
    bad = next((label for label in labels if not _HOST_LABEL.fullmatch(label)), None)
    if bad is not None:
        why = f"the label {bad!r} is not letters, digits and inner hyphens"
    elif len(labels) < 2:
        why = "a certificate name has at least two labels"
    elif labels[-1].isdigit():
        why = "its top label is a number"
    elif any(label[2:4] == "--" and not label.startswith("xn--") for label in labels):
        why = "a label with '--' in third and fourth place is reserved (only xn-- is used)"
    elif len(challenge_name(base)) > MAX_NAME:
        # The CA looks the value up there; no DNS name is that long, delegated or not.
        why = (f"its dns-01 record, _acme-challenge.<name>, would be longer than {MAX_NAME} "
               "characters")
    if why:
        raise UsageError(f"{text!r} cannot be in a certificate: {why}")
    return f"*.{base}" if wildcard else base
