"""``acmegw-accounts``: administer the acme-dns accounts that ``POST /register`` made.

    acmegw-accounts [-e DOTENV] [--state-dir DIR] delete USERNAME

It finds ``STATE_DIR`` as the server does (command line > environment > dotenv
file) and changes the account store there directly, so it works whether the
gateway runs or not; a running gateway looks an account up in the store on
every request, so a deleted account is refused from its next request on. The
values the account published stay until the janitor removes them
(``RECORD_MAX_AGE``); the admin API's ``DELETE /accounts/{username}`` withdraws
them at once. Accounts from ``ACMEDNS_ACCOUNTS_FILE`` are not in the store:
remove them from that file and reload the gateway.

Exit status: 0 done, 1 no such account or the store cannot be used, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.acmedns import Account, AccountStore
from gateway.config import gather
from gateway.errors import GatewayError
from gateway.state import State
from gateway.state.sqlite import ACCOUNTS_FILE_NAME, SqliteState

PROG = "acmegw-accounts"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description="Administer the gateway's registered acme-dns accounts."
    )
    p.add_argument("-e", "--dotenv", type=Path, metavar="FILE", help="the gateway's dotenv file")
    p.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="STATE_DIR (default: as the gateway finds it)"
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    delete = commands.add_parser("delete", help="delete a registered account")
    delete.add_argument("username", metavar="USERNAME")
    return p


def state(args: argparse.Namespace) -> State:
    """The gateway's state, as the server finds it."""
    if args.state_dir is not None:
        state_dir = Path(args.state_dir)
    else:
        settings, _, _ = gather(["-e", str(args.dotenv)] if args.dotenv else [], os.environ)
        if settings.problems:
            raise GatewayError("; ".join(settings.problems))
        state_dir = Path(settings.get("STATE_DIR") or "state")
    path = state_dir / ACCOUNTS_FILE_NAME
    if not path.is_file():
        raise GatewayError(
            f"no acme-dns account store at {path} (is STATE_DIR right? has the gateway "
            "registered any account there?)"
        )
    return SqliteState(state_dir)


async def delete(store: State, username: str) -> Account | None:
    await store.open()
    try:
        return await AccountStore(store.accounts).delete(username)
    finally:
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        account = asyncio.run(delete(state(args), args.username))
    except GatewayError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    if account is None:
        print(f"{PROG}: no registered acme-dns account {args.username}", file=sys.stderr)
        return 1
    print(f"deleted acme-dns account {args.username} ({account.fqdn})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
