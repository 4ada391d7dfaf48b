"""Revoking a certificate (RFC 8555 section 7.6), signed by the account or the certificate's key.

A certificate of ours is found by its serial among the lineages, so its CA need not be
named and the lineage remembers the revocation: it is no longer renewed, and after
``keyCompromise`` its key is never reused.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization

from lib.acme import jws
from lib.acme.accounts import Accounts, load_key
from lib.acme.certificates import dns_names, load_chain
from lib.acme.client import REVOCATION_REASONS
from lib.acme.errors import NotOffered, StateError, UsageError
from lib.acme.progress import Progress
from lib.acme.store import Lineage, Store


def revoke(store: Store, accounts: Accounts, progress: Progress, cert_pem: bytes,
           reason: int | None, *, directory_url: str | None,
           cert_key_pem: bytes | None = None) -> Lineage | None:
    """Revoke the certificate in *cert_pem*; returns its lineage when we keep one."""
    try:
        leaf = load_chain(cert_pem)[0]
    except ValueError:
        raise UsageError("the file holds no PEM certificate") from None
    serial = format(leaf.serial_number, "x")
    lineage = _lineage_of(store, serial)
    if lineage is not None:
        accounts.remember_ca_file(lineage)
    server = directory_url or (lineage.issuer_directory if lineage else None)
    if server is None:
        raise UsageError("this certificate is not one of ours: name its CA with --server")
    der = leaf.public_bytes(serialization.Encoding.DER)
    progress.step(f"Revoking serial {serial} ({', '.join(dns_names(leaf))}) at {server}")
    try:
        if cert_key_pem is not None:
            client = accounts.anonymous(server)
            try:
                accounts.describe_directory(client)
                client.revoke(der, reason, cert_key=jws.AccountKey(
                    load_key(cert_key_pem, "certificate key")))
            finally:
                client.net.close()
            progress.step("Revoked (signed with the certificate's key)")
        else:
            accounts.client(server, create=False).revoke(der, reason)
            progress.step("Revoked (signed with the account key)")
    except NotOffered as exc:
        raise UsageError(str(exc)) from None
    if lineage is not None:
        lineage.revoked = reason_name(reason)
        store.save_meta(lineage)
    return lineage


def _lineage_of(store: Store, serial: str) -> Lineage | None:
    for name in store.lineage_names():
        try:
            lineage = store.load_lineage(name)
        except StateError:
            continue  # a damaged certificate is not the one being revoked
        if lineage is not None and lineage.serial == serial:
            return lineage
    return None


def reason_name(reason: int | None) -> str:
    names = {number: name for name, number in REVOCATION_REASONS.items()}
    return names.get(reason if reason is not None else 0, str(reason))
