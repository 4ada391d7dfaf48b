"""The acmegw-acme command line as data: the parser, and what its arguments mean.

:func:`build_parser` knows every command and option (each command's own parser reports
its mistakes with its own usage line); :func:`options` turns the arguments into the
run's :class:`lib.acme.options.Options`, :func:`lineage` into the certificate that
``issue`` asks for, checked as renewals will load it. Every mistake is a
:class:`lib.acme.errors.UsageError` (exit status 2) raised before anything is sent.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lib.acme import jws
from lib.acme.cas import DEFAULT_CA, KNOWN_CAS, directory_url
from lib.acme.client import REVOCATION_REASONS, ExternalAccount
from lib.acme.dns01 import environment, provider_settings, read_password_file
from lib.acme.errors import UsageError
from lib.acme.identifiers import dns_identifier
from lib.acme.keys import DEFAULT_KEY_TYPE, KEY_TYPES, UserCsr, read_csr
from lib.acme.options import Options
from lib.acme.output import PROG
from lib.acme.store import (
    PROPAGATION_TIMEOUT,
    Lineage,
    Store,
    check_lineage_name,
    default_state_dir,
    lineage_name_for,
)
from lib.dnscheck import parse_server


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so main() decides the exit status."""

    def error(self, message: str) -> NoReturn:
        # This parser's own usage: a mistake in `renew` shows how to call `renew`.
        raise UsageError(message, usage=self.format_usage())

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: Any = None) -> tuple[Any, list[str]]:
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and self._subparsers is None:
            # A command's own parser has the last word on its arguments: what it does not
            # know is its error, not the top-level parser's (which knows no options).
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def _number(kind: type[float] | type[int], low: float, high: float,
            unit: str = "seconds") -> Callable[[str], float]:
    """An argparse type: a finite number from *low* to *high*; anything else is exit 2."""
    def convert(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{text} is not from {low:g} to {high:g} {unit}")
        return value
    return convert


SECONDS_TIMEOUT = _number(float, 1, 86400)
ATTEMPTS = _number(int, 1, 10, "tries")
RETRY_DELAY = _number(float, 0, 3600)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None,
                        help=f"state directory (default {default_state_dir()}, "
                             "or ACMEGW_ACME_STATE_DIR)")
    common.add_argument("--ca-file", help="CA certificate(s) to trust for the ACME server")
    common.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    common.add_argument("--json", action="store_true", help="print the result as JSON")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common.add_argument("--lock-timeout", type=_number(float, 0, 86400), default=60.0,
                        help="how long to wait for another run to finish (seconds, default 60)")
    common.add_argument("--http-timeout", type=_number(float, 1, 300), default=30.0,
                        help="bound on one answer from the CA (seconds, default 30; the "
                             "directory, the first request, at most 10)")
    common.add_argument("--timeout", type=SECONDS_TIMEOUT, default=300.0,
                        help="deadline for validation and for the order (seconds, default 300)")

    account_opts = _Parser(add_help=False)
    account_opts.add_argument("--email", action="append", default=[],
                              help="contact address (repeatable)")
    account_opts.add_argument("--agree-tos", action="store_true",
                              help="agree to the CA's terms of service")
    account_opts.add_argument("--eab-kid", help="external account binding key id")
    account_opts.add_argument("--eab-hmac-key",
                              help="EAB MAC key, base64url (visible in the process list: "
                                   "prefer --eab-hmac-key-file or ACMEGW_EAB_HMAC_KEY)")
    account_opts.add_argument("--eab-hmac-key-file", type=Path, help="file holding the MAC key")
    account_opts.add_argument("--eab-alg", choices=jws.EAB_ALGORITHMS, default="HS256")
    account_opts.add_argument("--account-key-type", choices=KEY_TYPES, default=DEFAULT_KEY_TYPE,
                              help=f"type of a new account key (default {DEFAULT_KEY_TYPE})")

    servers = ", ".join(KNOWN_CAS)
    parser = _Parser(prog=PROG, description="An ACME client for dns-01 through acmegw.",
                     epilog="exit status: 0 done or nothing due, 1 failed, 2 usage, 3 busy")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    issue = sub.add_parser("issue", parents=[common, account_opts],
                           help="obtain a certificate (skipped while one is not due)")
    issue.add_argument("-d", "--domain", action="append", default=[],
                       help="a name for the certificate, *.name for a wildcard (repeatable)")
    issue.add_argument("--csr", type=Path,
                       help="issue for this certificate signing request (PEM or DER) of "
                            "yours: its names, your key (no privkey.pem is written)")
    issue.add_argument("--must-staple", action="store_true",
                       help="ask for the OCSP must-staple feature (RFC 7633)")
    issue.add_argument("--name", help="certificate name (default: the first domain)")
    issue.add_argument("--server", action="append", default=[],
                       help=f"ACME directory URL or one of {servers} (default {DEFAULT_CA}); "
                            "repeat for failover, in order")
    issue.add_argument("--key-type", choices=KEY_TYPES,
                       help=f"type of the certificate key (default {DEFAULT_KEY_TYPE})")
    issue.add_argument("--reuse-key", action="store_true", help="keep the key when renewing")
    issue.add_argument("--gateway-url", help="the gateway's URL (native API)")
    issue.add_argument("--gateway-user", help="basic auth user at the gateway")
    issue.add_argument("--gateway-password-file", type=Path,
                       help="file with that user's password (mode 0600); "
                            "or ACMEGW_GATEWAY_PASSWORD_FILE")
    issue.add_argument("--gateway-ca-file", help="CA certificate(s) to trust for the gateway")
    issue.add_argument("--provider",
                       help="a DNS provider of ours in this process instead of the gateway "
                            "(its settings from the environment, as for the gateway)")
    issue.add_argument("--propagation-nameservers", action="append", default=[],
                       help="also wait until these servers (IP[:port]) serve every value")
    issue.add_argument("--propagation-timeout", type=_number(float, *PROPAGATION_TIMEOUT),
                       default=120.0, help="bound on waiting for the DNS (seconds, default 120)")
    issue.add_argument("--out", type=Path, help="folder for the certificate files")
    issue.add_argument("--deploy-hook", help="shell command run after each new certificate")
    issue.add_argument("--pre-hook", help="shell command run before the first certificate a "
                                          "run obtains (once per run), kept for renewals")
    issue.add_argument("--post-hook", help="shell command run at the end of a run that ran "
                                           "the pre-hooks (once), kept for renewals")
    issue.add_argument("--dry-run", action="store_true",
                       help="the whole flow against the CA (Let's Encrypt: its staging CA), "
                            "but nothing saved or deployed")
    issue.add_argument("--profile", help="certificate profile, when the CA offers profiles")
    issue.add_argument("--preferred-chain", help="issuer common name of the chain to prefer")
    issue.add_argument("--force", action="store_true", help="issue even when not due")
    issue.add_argument("--attempts", type=ATTEMPTS, default=2, help="tries per CA (default 2)")
    issue.add_argument("--retry-delay", type=RETRY_DELAY, default=5.0)

    renew = sub.add_parser("renew", parents=[common, account_opts],
                           help="renew every certificate that is due (for cron and timers)")
    renew.add_argument("--name", action="append", default=[], help="only this certificate")
    renew.add_argument("--force", action="store_true", help="renew even when not due")
    renew.add_argument("--dry-run", action="store_true",
                       help="every certificate through the whole flow against its CA (Let's "
                            "Encrypt: its staging CA), nothing saved or deployed")
    renew.add_argument("--pre-hook", help="also run this before the first certificate obtained")
    renew.add_argument("--post-hook", help="also run this at the end, if a pre-hook ran")
    renew.add_argument("--attempts", type=ATTEMPTS, default=2, help="tries per CA (default 2)")
    renew.add_argument("--retry-delay", type=RETRY_DELAY, default=5.0)

    revoke = sub.add_parser("revoke", parents=[common], help="revoke a certificate")
    revoke.add_argument("--cert", type=Path, required=True, help="the certificate (PEM)")
    revoke.add_argument("--reason", default="unspecified",
                        help="unspecified, keyCompromise, affiliationChanged, superseded, "
                             "cessationOfOperation (or the number)")
    revoke.add_argument("--server", help="the CA, when the certificate is not one of ours")
    revoke.add_argument("--key", type=Path,
                        help="sign with the certificate's private key instead of the account")

    account = sub.add_parser("account", help="manage the account at a CA")
    account_sub = account.add_subparsers(dest="action", required=True, parser_class=_Parser)
    for action, text in (("register", "create the account (or find it)"),
                         ("show", "show the account"),
                         ("rollover", "replace the account key"),
                         ("deactivate", "deactivate the account for good")):
        p = account_sub.add_parser(action, parents=[common, account_opts], help=text)
        p.add_argument("--server", default=DEFAULT_CA,
                       help=f"ACME directory URL or one of {servers}")
        if action == "deactivate":
            p.add_argument("--yes", action="store_true", help="really deactivate")

    sub.add_parser("list", parents=[common], help="list the certificates")
    return parser


def _domains(values: Sequence[str], what: str = "-d") -> list[str]:
    names: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                name = dns_identifier(item)
            except UsageError as exc:
                raise UsageError(f"{what} {exc}") from None
            if name not in names:
                names.append(name)
    if not names:
        raise UsageError("give at least one -d/--domain NAME, or --csr FILE")
    return names


def _nameservers(values: Sequence[str]) -> list[str]:
    servers: list[str] = []
    for value in values:
        for item in value.replace(",", " ").split():
            try:
                parse_server(item)
            except ValueError as exc:
                raise UsageError(f"--propagation-nameservers: {exc}") from None
            servers.append(item)
    return servers


def _eab(args: argparse.Namespace) -> ExternalAccount | None:
    key_text = args.eab_hmac_key
    if args.eab_hmac_key_file is not None:
        if key_text:
            raise UsageError("give --eab-hmac-key or --eab-hmac-key-file, not both")
        try:
            key_text = args.eab_hmac_key_file.read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read {args.eab_hmac_key_file}: {exc.strerror}") from None
    key_text = key_text or os.environ.get("ACMEGW_EAB_HMAC_KEY")
    if not args.eab_kid and not key_text:
        return None
    if not args.eab_kid or not key_text:
        raise UsageError("external account binding needs both --eab-kid and the MAC key")
    try:
        mac_key = jws.b64url_decode(key_text)
    except ValueError:
        raise UsageError("the EAB MAC key is not base64url (copy it from the CA's console)"
                         ) from None
    if not mac_key:
        raise UsageError("the EAB MAC key is empty")
    return ExternalAccount(args.eab_kid, mac_key, args.eab_alg)


def _contact(args: argparse.Namespace) -> tuple[str, ...]:
    out = []
    for email in getattr(args, "email", []):
        address = email.removeprefix("mailto:")
        if "@" not in address or any(c in address for c in " ,<>"):
            raise UsageError(f"--email {email!r} is not an e-mail address")
        out.append(f"mailto:{address}")
    return tuple(out)


def options(args: argparse.Namespace) -> Options:
    return Options(
        ca_file=args.ca_file,
        account_key_type=getattr(args, "account_key_type", DEFAULT_KEY_TYPE),
        contact=_contact(args),
        agree_tos=getattr(args, "agree_tos", False),
        eab=_eab(args) if hasattr(args, "eab_kid") else None,
        # Already bounded by their parsers (ATTEMPTS, RETRY_DELAY).
        attempts=getattr(args, "attempts", 2),
        retry_delay=getattr(args, "retry_delay", 5.0),
        validation_timeout=args.timeout,
        order_timeout=args.timeout,
        http_timeout=args.http_timeout,
        directory_timeout=min(10.0, args.http_timeout),
        env=environment(),
        dry_run=getattr(args, "dry_run", False),
        pre_hook=getattr(args, "pre_hook", None) if args.command == "renew" else None,
        post_hook=getattr(args, "post_hook", None) if args.command == "renew" else None,
    )


def state_store(args: argparse.Namespace) -> Store:
    if args.state_dir is not None:
        return Store(args.state_dir)
    env_dir = os.environ.get("ACMEGW_ACME_STATE_DIR")
    return Store(Path(env_dir) if env_dir else default_state_dir())


def _solver_config(args: argparse.Namespace, domains: Sequence[str]) -> dict[str, Any]:
    env = environment()
    if args.gateway_url:
        if args.provider:
            raise UsageError("give --gateway-url or --provider, not both")
        if not args.gateway_url.startswith(("https://", "http://")):
            raise UsageError("--gateway-url must be an http(s) URL")
        password_file = args.gateway_password_file or (
            Path(env["ACMEGW_GATEWAY_PASSWORD_FILE"])
            if env.get("ACMEGW_GATEWAY_PASSWORD_FILE") else None)
        if args.gateway_user and password_file is None:
            raise UsageError("--gateway-user needs --gateway-password-file")
        if password_file is not None and not args.gateway_user:
            raise UsageError("--gateway-password-file needs --gateway-user")
        if password_file is not None:
            read_password_file(password_file)  # refuse a readable or unreadable file now
        config: dict[str, Any] = {"kind": "gateway", "url": args.gateway_url,
                                  "user": args.gateway_user,
                                  "password_file": str(password_file.resolve())
                                  if password_file else None,
                                  "ca_file": str(Path(args.gateway_ca_file).resolve())
                                  if args.gateway_ca_file else None}
        return config
    provider = args.provider or env.get("PROVIDER")
    if provider or env.get("DNSAPI_MODULE"):
        # Checked now, and kept for renewals, which run without this environment (a
        # timer): every setting the provider read except secrets, kept as *_FILE paths.
        kept = provider_settings(env, domains, args.provider)
        for key in kept.secrets_from_environment:
            sys.stderr.write(f"{PROG}: warning: {key} is a secret and is not kept: renewals "
                             f"need it in their environment too; set {key}_FILE=/path/to/file "
                             "instead and it is read from there at each renewal\n")
        return {"kind": "provider", "provider": args.provider, "settings": kept.values}
    raise UsageError("say how to publish dns-01 values: --gateway-url URL, or --provider NAME "
                     "(PROVIDER=NAME in the environment) with that provider's settings")


def _user_csr(args: argparse.Namespace) -> tuple[str, UserCsr] | None:
    """The --csr file, checked: (its PEM, what it says), or None without --csr."""
    if args.csr is None:
        return None
    for given, option in ((args.key_type, "--key-type"), (args.reuse_key, "--reuse-key"),
                          (args.must_staple, "--must-staple")):
        if given:
            raise UsageError(f"--csr and {option} do not go together: your CSR decides the "
                             "key and its extensions")
    try:
        data = args.csr.read_bytes()
    except OSError as exc:
        raise UsageError(f"--csr: cannot read {args.csr}: {exc.strerror}") from None
    try:
        csr = read_csr(data)
    except UsageError as exc:
        raise UsageError(f"--csr {args.csr}: {exc}") from None
    pem = x509.load_der_x509_csr(csr.der).public_bytes(serialization.Encoding.PEM).decode()
    return pem, csr


def lineage(args: argparse.Namespace) -> Lineage:
    user_csr = _user_csr(args)
    if user_csr is not None:
        csr_names = _domains(user_csr[1].names, f"--csr {args.csr}: the name")
        given = _domains(args.domain) if args.domain else None
        if given and set(given) != set(csr_names):
            raise UsageError(f"-d names {' '.join(given)} but the CSR names "
                             f"{' '.join(csr_names)}: leave out -d, or make them agree")
        domains = csr_names
    else:
        domains = _domains(args.domain)
    name = check_lineage_name(args.name or lineage_name_for(domains))
    servers = [directory_url(s) for s in (args.server or [DEFAULT_CA])]
    solver = _solver_config(args, domains)
    lineage = Lineage(
        name=name, domains=domains, servers=list(dict.fromkeys(servers)),
        key_type=user_csr[1].key_type if user_csr else args.key_type or DEFAULT_KEY_TYPE,
        reuse_key=args.reuse_key, must_staple=args.must_staple,
        csr=user_csr[0] if user_csr else None,
        ca_file=str(Path(args.ca_file).resolve()) if args.ca_file else None,
        solver=solver, propagation_nameservers=_nameservers(args.propagation_nameservers),
        propagation_timeout=args.propagation_timeout, deploy_hook=args.deploy_hook,
        pre_hook=args.pre_hook, post_hook=args.post_hook,
        profile=args.profile, preferred_chain=args.preferred_chain,
        out=str(args.out.resolve()) if args.out else None)
    # What is saved must load again: never store a lineage that renew would refuse.
    problems = lineage.problems()
    if problems:
        raise UsageError("; ".join(problems))
    return lineage


def revocation_reason(text: str) -> int:
    if text.isdigit():
        number = int(text)
        if number in REVOCATION_REASONS.values():
            return number
    else:
        by_name = {name.lower(): number for name, number in REVOCATION_REASONS.items()}
        if text.lower() in by_name:
            return by_name[text.lower()]
    raise UsageError(f"--reason {text!r} is not a revocation reason "
                     "(unspecified, keyCompromise, affiliationChanged, superseded, "
                     "cessationOfOperation)")


SECRET_OPTIONS = ("--eab-hmac-key",)


def redact(text: str, argv: Sequence[str]) -> str:
    """*text* without the values of secret options (argparse echoes unknown arguments)."""
    secrets: list[str] = []
    for index, arg in enumerate(argv):
        for option in SECRET_OPTIONS:
            if arg == option and index + 1 < len(argv):
                secrets.append(argv[index + 1])
            elif arg.startswith(option + "="):
                secrets.append(arg.split("=", 1)[1])
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def command_of(arguments: Sequence[str]) -> str:
    commands = ("issue", "renew", "revoke", "account", "list")
    return next((a for a in arguments if a in commands), "")
