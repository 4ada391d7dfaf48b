"""``acmegw-accounts``: list, rotate and delete acme-dns accounts through the admin API.

    acmegw-accounts [--url URL] [--user USER] [--password-file FILE] [--ca-file FILE]
                    [--json] list [--owner OWNER] [--name NAME]
                                | rotate USERNAME
                                | delete USERNAME

It is a client of the running gateway (``GET /accounts``,
``POST /accounts/{username}/rotate``, ``DELETE /accounts/{username}``), with the
credentials of an admin user, or none from an allowed host. It does not open the
gateway's state itself, because through the API:

* the gateway's rules hold as for any caller: who may administer accounts, and
  which ones a domain-restricted admin may see; each change is logged with who
  made it;
* a deleted account's values are withdrawn at once, through the provider and
  under the name's lock, which only a gateway can do;
* it works the same with replicas on PostgreSQL, from any machine that can
  reach one, with no database credentials and no access to ``STATE_DIR``, and
  never writes to a database a gateway of another version has migrated.

Settings: the options, else the environment, with the names ``acmegw-hook``
uses: ``ACMEGW_URL``, ``ACMEGW_USER``, ``ACMEGW_PASSWORD`` or
``ACMEGW_PASSWORD_FILE``, ``ACMEGW_CA_FILE``, ``ACMEGW_INSECURE_HTTP``. The
password is never an option (it would be in ``ps``); without one, a user gets
asked on the terminal. Proxies come from ``HTTPS_PROXY``/``NO_PROXY`` as usual,
except that a loopback gateway is reached directly. A password is sent over
plain http only to a loopback gateway, or with ``ACMEGW_INSECURE_HTTP=1``.

``--json`` prints the gateway's answer as JSON, for scripts; ``rotate`` prints
the new key, which the gateway shows this once.

Exit status: 0 done, 1 the gateway refused or could not be reached, 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import ssl
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from lib.names import is_loopback_host
from lib.settings import Settings

PROG = "acmegw-accounts"
TIMEOUT = 60.0


class Failed(Exception):
    """The request did not do what was asked; the message says why, in one line."""


class UsageError(Exception):
    """The settings cannot work; the message says which."""


def _add_options(p: argparse.ArgumentParser, *, after: bool) -> None:
    """The options that say how to reach the gateway; *after*: their copies that
    each command accepts too (where one tends to type them), which leave the
    ones given before the command alone unless given themselves."""

    def add(*names: str, **kw: Any) -> None:
        if after:
            kw |= {"default": argparse.SUPPRESS, "help": argparse.SUPPRESS}
        p.add_argument(*names, **kw)

    add("--url", metavar="URL", help="the gateway (default: ACMEGW_URL)")
    add("--user", metavar="USER",
        help="an admin user (default: ACMEGW_USER; none: rely on an allowed host)")
    add("--password-file", metavar="FILE",
        help="a file holding its password (default: ACMEGW_PASSWORD_FILE)")
    add("--ca-file", metavar="FILE",
        help="CA bundle (or c_rehash directory) for the gateway's certificate "
        "(default: ACMEGW_CA_FILE, else the system's)")
    add("--json", action="store_true", help="print the answer as JSON")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="List, rotate and delete the gateway's acme-dns accounts, through its "
        "admin API.",
        epilog="The password comes from ACMEGW_PASSWORD, ACMEGW_PASSWORD_FILE or "
        "--password-file, or is asked for; never from the command line.",
    )
    _add_options(p, after=False)
    after = argparse.ArgumentParser(add_help=False)
    _add_options(after, after=True)
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = commands.add_parser("list", parents=[after], help="list the accounts (never a key)")
    listing.add_argument("--owner", help="only those this user (or host:ADDRESS) registered")
    listing.add_argument("--name", help="only those for names within NAME")
    rotate = commands.add_parser(
        "rotate", parents=[after],
        help="give an account a new key (printed once); the old one stops working",
    )
    rotate.add_argument("username", metavar="USERNAME")
    delete = commands.add_parser(
        "delete", parents=[after], help="delete an account and withdraw the values it published"
    )
    delete.add_argument("username", metavar="USERNAME")
    return p


class AdminClient:
    """Requests to the gateway's ``/accounts`` endpoints, as one admin."""

    def __init__(
        self,
        url: str,
        authorization: str | None,
        context: ssl.SSLContext | None,
        timeout: float = TIMEOUT,
    ) -> None:
        self.base = url.rstrip("/")
        self.authorization = authorization
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = [_NoRedirects()]
        if context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=context))
        if is_loopback_host(urlsplit(url).hostname or ""):
            # No proxy can reach this machine's loopback; plain http may carry a password there.
            handlers.append(urllib.request.ProxyHandler({}))
        # Otherwise urllib's own ProxyHandler reads HTTPS_PROXY, NO_PROXY, ...
        self.opener = urllib.request.build_opener(*handlers)

    def call(self, method: str, path: str) -> dict[str, Any]:
        # The scheme was checked to be http or https (client_from).
        request = urllib.request.Request(f"{self.base}{path}", method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        if self.authorization is not None:
            request.add_header("Authorization", self.authorization)
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            raise Failed(_refusal(exc)) from None
        except urllib.error.URLError as exc:
            raise Failed(f"cannot reach {self.base}: {_reason(exc.reason)}") from None
        except (TimeoutError, OSError) as exc:
            raise Failed(f"cannot reach {self.base}: {_reason(exc)}") from None
        try:
            data = json.loads(body)
        except ValueError:
            raise Failed(f"{self.base} answered something that is not JSON: is it the "
                         "gateway?") from None
        if not isinstance(data, dict):
            raise Failed(f"{self.base} answered JSON that is not an object")
        return data

    def list(self, owner: str | None, name: str | None) -> dict[str, Any]:
        # An empty filter goes to the gateway, which refuses it: listing every
        # account for `--owner "$EMPTY"` would hand a script all of them.
        query = urlencode({k: v for k, v in (("owner", owner), ("name", name)) if v is not None})
        return self.call("GET", "/accounts" + (f"?{query}" if query else ""))

    def rotate(self, username: str) -> dict[str, Any]:
        return self.call("POST", f"/accounts/{quote(username, safe='')}/rotate")

    def delete(self, username: str) -> dict[str, Any]:
        return self.call("DELETE", f"/accounts/{quote(username, safe='')}")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: the password must not go elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _refusal(exc: urllib.error.HTTPError) -> str:
    """One line for an error answer: its status and the gateway's message."""
    try:
        data = json.loads(exc.read())
        message = data.get("message") if isinstance(data, dict) else None
    except (ValueError, OSError):
        message = None
    text = f"{exc.code} {message or exc.reason}"
    if exc.code == 401:
        text += " (is ACMEGW_USER an admin user, with its password?)"
    elif exc.code == 403 and message and "admin" in message:
        text += " (give the user the admin role: acmegw-passwd --roles admin)"
    return text


def _reason(reason: object) -> str:
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {reason.verify_message} (ACMEGW_CA_FILE?)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def client_from(args: argparse.Namespace, environ: Mapping[str, str]) -> AdminClient:
    """The client the options and the environment describe; raises UsageError."""
    values = dict(environ)
    for option, key in (
        (args.url, "ACMEGW_URL"),
        (args.user, "ACMEGW_USER"),
        (args.password_file, "ACMEGW_PASSWORD_FILE"),
        (args.ca_file, "ACMEGW_CA_FILE"),
    ):
        if option is not None:
            values[key] = option
    if args.password_file is not None:
        values.pop("ACMEGW_PASSWORD", None)  # the option wins over the environment
    settings = Settings(values)
    url = settings.get("ACMEGW_URL")
    user = settings.get("ACMEGW_USER")
    password = settings.secret("ACMEGW_PASSWORD") if user else None
    insecure = settings.boolean("ACMEGW_INSECURE_HTTP")
    ca_file = settings.get("ACMEGW_CA_FILE")
    if settings.problems:
        raise UsageError("; ".join(settings.problems))
    if url is None:
        raise UsageError("which gateway? give --url or ACMEGW_URL (https://host:port/)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url: {url!r} is not an http:// or https:// URL")
    if parts.username is not None or parts.query or parts.fragment:
        raise UsageError("--url: give the gateway's address alone, without credentials, "
                         "query or fragment")
    authorization = None
    if user is not None:
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            if not insecure:
                raise UsageError(
                    f"a password would cross the network in plain http to {parts.hostname}: "
                    "use https, or ACMEGW_INSECURE_HTTP=1 if the path is private"
                )
            if urllib.request.getproxies().get("http") and not urllib.request.proxy_bypass(
                parts.hostname
            ):
                raise UsageError(
                    "a password would go through the http proxy in plain http: use https, "
                    "or name the gateway in NO_PROXY"
                )
        if password is None:
            password = _ask(user)
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    context = None
    if parts.scheme == "https":
        # Given a CA file or directory, that and nothing else is trusted.
        if ca_file is not None and os.path.isdir(ca_file):
            context = ssl.create_default_context(capath=ca_file)
        else:
            context = ssl.create_default_context(cafile=ca_file)
    return AdminClient(url, authorization, context)


def _ask(user: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            f"no password for {user}: set ACMEGW_PASSWORD or ACMEGW_PASSWORD_FILE, or "
            "give --password-file"
        )
    return getpass.getpass(f"password for {user}: ")


def show_list(data: dict[str, Any]) -> None:
    rows = data.get("accounts", [])
    if not rows:
        print("no acme-dns accounts")
        return
    table = [("USERNAME", "FULLDOMAIN", "OWNER", "CREATED", "SOURCE", "VALUES")] + [
        (
            str(row.get("username")),
            str(row.get("fulldomain")),
            str(row.get("owner")),
            row.get("created") or "-",
            str(row.get("source")),
            str(row.get("values")),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
              .rstrip())


def show_rotated(data: dict[str, Any]) -> None:
    for key in ("username", "password", "fulldomain", "subdomain"):
        print(f"{key + ':':<12}{data.get(key)}")
    print(
        f"{PROG}: the old key no longer works; give this one to the account's client "
        "(the gateway will not show it again)",
        file=sys.stderr,
    )


def show_deleted(data: dict[str, Any]) -> None:
    print(
        f"deleted acme-dns account {data.get('username')} ({data.get('fulldomain')}); "
        f"{data.get('withdrawn')} value(s) withdrawn"
    )


def run(args: argparse.Namespace, client: AdminClient) -> dict[str, Any]:
    if args.command == "list":
        return client.list(args.owner, args.name)
    if args.command == "rotate":
        return client.rotate(args.username)
    return client.delete(args.username)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        data = run(args, client_from(args, os.environ))
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except Failed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    elif args.command == "list":
        show_list(data)
    elif args.command == "rotate":
        show_rotated(data)
    else:
        show_deleted(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
