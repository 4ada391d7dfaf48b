"""TSIG keys in settings, shared by the providers that sign DNS messages (rfc2136, builtin).

:func:`tsig_settings` reads ``<PREFIX>_TSIG_KEY_NAME``, ``<PREFIX>_TSIG_SECRET``
(or ``<PREFIX>_TSIG_SECRET_FILE``) and ``<PREFIX>_TSIG_ALGORITHM`` (default
``hmac-sha256``), recording every problem; the secret never appears in a
message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.tsig

from lib.settings import Settings

ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha384": dns.tsig.HMAC_SHA384,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}


@dataclass(frozen=True)
class TsigSettings:
    key_name: str
    # repr=False: settings printed in a traceback or debug log must not show the secret.
    secret: str = field(repr=False)
    algorithm: str = "hmac-sha256"

    def key(self) -> dns.tsig.Key:
        return dns.tsig.Key(self.key_name, self.secret, ALGORITHMS[self.algorithm])


def tsig_settings(settings: Settings, prefix: str) -> TsigSettings | None:
    """The key ``<prefix>_TSIG_*`` describe, or None (unset, or with problems recorded)."""
    name_key, secret_key = f"{prefix}_TSIG_KEY_NAME", f"{prefix}_TSIG_SECRET"
    key_name = settings.get(name_key)
    secret = settings.secret(secret_key)
    secret_given = secret is not None or settings.has(f"{secret_key}_FILE")
    algorithm = settings.choice(
        f"{prefix}_TSIG_ALGORITHM", {a: a for a in ALGORITHMS}, "hmac-sha256"
    )
    ok = True
    if key_name is not None:
        try:
            dns.name.from_text(key_name)
        except dns.exception.SyntaxError:
            settings.problem(f"{name_key}={key_name!r} is not a valid key name")
            ok = False
    if key_name is not None and not secret_given:
        settings.problem(f"{name_key} is set but {secret_key} (or {secret_key}_FILE) is not")
        ok = False
    if secret_given and key_name is None:
        settings.problem(f"{secret_key} is set but {name_key} is not")
        ok = False
    if secret is not None:
        # Never echo the secret: the message names the setting only.
        try:
            raw = base64.b64decode(secret.strip(), validate=True)
        except (binascii.Error, ValueError):
            settings.problem(
                f"{secret_key} is not valid base64 "
                "(use the secret exactly as tsig-keygen prints it)"
            )
            ok = False
        else:
            if not raw:
                settings.problem(f"{secret_key} is empty")
                ok = False
    if not ok or key_name is None or secret is None:
        return None
    return TsigSettings(key_name=key_name, secret=secret.strip(), algorithm=algorithm)
