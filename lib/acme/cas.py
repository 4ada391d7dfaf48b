"""Well-known ACME CAs by short name, for ``--server NAME``.

ZeroSSL and Google Trust Services require external account binding: get the
key id and MAC key from their consoles (``--eab-kid``, ``--eab-hmac-key``).
"""

from __future__ import annotations

from lib.acme.errors import UsageError

KNOWN_CAS = {
    "letsencrypt": "https://acme-v02.api.letsencrypt.org/directory",
    "letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
    "buypass": "https://api.buypass.com/acme/directory",
    "zerossl": "https://acme.zerossl.com/v2/DV90",
    "google": "https://dv.acme-v02.api.pki.goog/directory",
}
DEFAULT_CA = "letsencrypt"


def directory_url(server: str) -> str:
    """A known CA's directory URL, or *server* itself when it is an https URL."""
    if server.lower() in KNOWN_CAS:
        return KNOWN_CAS[server.lower()]
    if server.startswith("https://"):
        return server
    raise UsageError(f"--server {server!r} is neither an https URL nor a known CA "
                     f"({', '.join(KNOWN_CAS)})")


# What a dry run asks instead of a production CA: its staging twin (same software, same
# checks, certificates nobody trusts, generous rate limits).
STAGING = {KNOWN_CAS["letsencrypt"]: KNOWN_CAS["letsencrypt-staging"]}
