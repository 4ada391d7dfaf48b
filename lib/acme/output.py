"""What acmegw-acme prints, and the exit status it ends with.

Results go to stdout, as lines of text or, with ``--json``, as one JSON document (also
for a run that ends in an error: :func:`failure_document`); progress and errors go to
stderr. ``--quiet`` silences progress, never failures: cron mails what reaches stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any

from lib.acme.issuance import Outcome
from lib.acme.progress import Progress

PROG = "acmegw-acme"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY = 0, 1, 2, 3


def outcome_text(outcome: Outcome) -> str:
    """One certificate's outcome as one line."""
    if outcome.action in ("issued", "renewed"):
        text = (f"{outcome.name}: {outcome.action}, serial {outcome.serial}, valid until "
                f"{outcome.not_after}, files in {outcome.files}")
        return text + (f" (but: {outcome.error})" if outcome.error else "")
    if outcome.action == "failed":
        return f"{outcome.name}: FAILED: {outcome.error}"
    text = f"{outcome.name}: {outcome.action}: {outcome.detail}"
    # A kept certificate fails too when its pending deploy hook fails again.
    return text + (f" (but: {outcome.error})" if outcome.error else "")


class Output:
    """Where a command's result goes: text lines, or one JSON document with the steps."""

    def __init__(self, args: argparse.Namespace, progress: Progress) -> None:
        self.json = args.json
        self.quiet = args.quiet
        self.progress = progress

    def result(self, text_lines: Sequence[str], document: dict[str, Any]) -> None:
        if self.json:
            document["steps"] = self.progress.steps
            sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        elif not self.quiet:
            for line in text_lines:
                sys.stdout.write(line + "\n")
        sys.stdout.flush()


def report_outcomes(command: str, outcomes: list[Outcome], out: Output,
                    hook_problems: Sequence[str] = ()) -> int:
    """Print what happened to each certificate (and the post-hooks); the exit status."""
    failed = [o for o in outcomes if o.failed]
    if out.quiet:
        # --quiet silences progress, never failures: cron mails what reaches stderr.
        for outcome in failed:
            sys.stderr.write(f"{PROG}: error: {outcome_text(outcome)}\n")
        for problem in hook_problems:
            sys.stderr.write(f"{PROG}: error: {problem}\n")
    lines = [outcome_text(o) for o in outcomes] or ["no certificates"]
    out.result(lines + [f"FAILED: {p}" for p in hook_problems],
               {"command": command, "ok": not failed and not hook_problems,
                "certificates": [dataclasses.asdict(o) for o in outcomes],
                "post_hook_failures": list(hook_problems)})
    return EXIT_FAILED if failed or hook_problems else EXIT_OK


def failure_document(command: str, status: int, message: str,
                     steps: Sequence[dict[str, object]] = ()) -> None:
    """--json: a run that ends without a result still prints one document."""
    document = {"command": command, "ok": False, "exit_status": status, "error": message,
                "steps": list(steps)}
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()
