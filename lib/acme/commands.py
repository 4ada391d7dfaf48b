"""The commands of acmegw-acme, each from its parsed arguments to an exit status.

``issue`` and ``renew`` (through :class:`lib.acme.issuance.Driver`, under the state
directory's lock, after withdrawing what an interrupted run left published), ``revoke``,
``account`` and ``list`` (read-only, without the lock).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from typing import Any

from lib.acme import arguments
from lib.acme.cas import directory_url
from lib.acme.errors import StateError, UsageError
from lib.acme.issuance import Driver
from lib.acme.keys import key_type_of
from lib.acme.output import EXIT_FAILED, EXIT_OK, Output, report_outcomes
from lib.acme.progress import Progress
from lib.acme.renewal import by_lifetime, by_window
from lib.acme.store import Store, check_lineage_name, now_utc, parse_iso


def dispatch(args: argparse.Namespace, progress: Progress, out: Output) -> int:
    """Run the command *args* name; its exit status (failures the caller reports)."""
    store = arguments.state_store(args)
    if args.command == "list":
        return list_certificates(store, out)
    options = arguments.options(args)
    if args.command == "account" and args.action != "register":
        # Only registering changes the contact; showing or rolling over must not.
        options = dataclasses.replace(options, contact=())
    if args.command == "issue":
        lineage = arguments.lineage(args)
    with store.locked(args.lock_timeout, progress.waiting):
        driver = Driver(store, progress, options)
        try:
            if args.command in ("issue", "renew"):
                driver.publishing.withdraw_leftovers()
                try:
                    if args.command == "issue":
                        outcomes = [driver.issue(lineage, force=args.force)]
                    else:
                        names = [check_lineage_name(n) for n in args.name]
                        outcomes = driver.renew(names or None, force=args.force)
                finally:
                    # Post-hooks run however the run ends, as certbot's do.
                    hook_problems = driver.hooks.finish()
                return report_outcomes(args.command, outcomes, out, hook_problems)
            if args.command == "revoke":
                return _revoke(args, driver, out)
            return _account(args, driver, out)
        finally:
            driver.close()


def list_certificates(store: Store, out: Output) -> int:
    """Every certificate and its state, without changing anything (no lock taken)."""
    now = now_utc()
    rows: list[dict[str, Any]] = []
    for name in store.lineage_names():
        try:
            row = _list_row(store, name, now)
        except StateError as exc:
            # One damaged certificate is reported with the others, not instead of them.
            row = {"name": name, "domains": [], "state": f"unreadable: {exc}", "ok": False,
                   "not_after": None, "serial": None, "directory": None, "key_type": None,
                   "files": None, "chain_issuer": None}
        if row is not None:
            rows.append(row)
    broken = any(not row.pop("ok") for row in rows)
    lines = [f"{r['name']}: {r['state']}" if r["files"] is None else
             f"{r['name']}: {r['state']}, until {r['not_after']}, {' '.join(r['domains'])}, "
             f"{r['key_type']}, from {r['directory']}, files in {r['files']}" for r in rows]
    out.result(lines or ["no certificates"],
               {"command": "list", "ok": not broken, "certificates": rows})
    return EXIT_FAILED if broken else EXIT_OK


def _list_row(store: Store, name: str, now: datetime.datetime) -> dict[str, Any] | None:
    lineage = store.load_lineage(name)
    if lineage is None:
        return None
    # Read-only: what an interrupted run left is reported here, repaired by renew.
    check = store.check_lineage(lineage, repair=False)
    if check.problems:
        state = f"broken: {'; '.join(check.problems)}"
    elif check.renew:
        state = f"due ({check.renew}; renew issues it again)"
    elif lineage.revoked:
        state = f"revoked ({lineage.revoked})"
    elif lineage.not_after and parse_iso(lineage.not_after) <= now:
        state = "expired"
    elif lineage.ari_window and lineage.ari_chosen:
        state = "due" if by_window(lineage, now).due else "valid"
    else:
        state = "due" if by_lifetime(lineage, now).due else "valid"
    if check.repaired and not check.problems:
        state += f" (an interrupted run left: {'; '.join(check.repaired)}; renew repairs it)"
    if lineage.deploy_pending and lineage.deploy_hook:
        state += " (deploy hook pending)"
    return {"name": name, "domains": lineage.domains, "state": state, "ok": not check.problems,
            "not_after": lineage.not_after, "serial": lineage.serial,
            "directory": lineage.issuer_directory, "key_type": lineage.key_type,
            "files": str(store.files_dir(lineage)), "chain_issuer": lineage.chain_issuer}


def _account(args: argparse.Namespace, driver: Driver, out: Output) -> int:
    server = directory_url(args.server)
    if args.action == "register":
        client = driver.client(server, create=True)
        account = client.account()
    elif args.action == "show":
        client = driver.client(server, create=False)
        account = client.account()
    elif args.action == "rollover":
        driver.rollover(server, args.account_key_type)
        client = driver.client(server, create=False)
        account = client.account()
    else:
        if not args.yes:
            raise UsageError("deactivation cannot be undone: add --yes to confirm")
        url = driver.deactivate(server)
        out.result([f"{url}: deactivated"], {"command": "account deactivate", "ok": True,
                                               "account": url, "directory": server})
        return EXIT_OK
    key = client.key
    doc = {"command": f"account {args.action}", "ok": True, "directory": server,
           "account": account.url, "status": account.status, "contact": list(account.contact),
           "key_type": key_type_of(key.private_key), "thumbprint": key.thumbprint()}
    out.result([f"{account.url}: {account.status}",
                f"  directory  {server}",
                f"  contact    {', '.join(account.contact) or '-'}",
                f"  key        {doc['key_type']}, thumbprint {doc['thumbprint']}"], doc)
    return EXIT_OK


def _revoke(args: argparse.Namespace, driver: Driver, out: Output) -> int:
    reason = arguments.revocation_reason(args.reason)
    try:
        cert_pem = args.cert.read_bytes()
        key_pem = args.key.read_bytes() if args.key else None
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    server = directory_url(args.server) if args.server else None
    lineage = driver.revoke(cert_pem, reason, directory_url=server, cert_key_pem=key_pem)
    name = lineage.name if lineage else str(args.cert)
    out.result([f"{name}: revoked ({args.reason})"],
               {"command": "revoke", "ok": True, "name": name, "reason": reason,
                "revoked_at": datetime.datetime.now(datetime.UTC).isoformat()})
    return EXIT_OK
