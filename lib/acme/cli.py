"""``acmegw-acme``: certificates for everything that is not Apache, through the gateway.

Commands::

    acmegw-acme issue -d example.com -d '*.example.com' --server letsencrypt --agree-tos \\
        --email admin@example.com --gateway-url https://gw.example.net:8000/ \\
        --gateway-user web1 --gateway-password-file /etc/acmegw/web1.password \\
        --deploy-hook 'systemctl reload nginx'
    acmegw-acme renew            # for cron / systemd timers: renews what is due
    acmegw-acme renew --dry-run  # every certificate through the CA, nothing saved
    acmegw-acme revoke --cert /var/lib/acmegw-acme/certificates/example.com/cert.pem \\
        --reason superseded
    acmegw-acme account register|show|rollover|deactivate --server letsencrypt
    acmegw-acme list

dns-01 values go through the gateway's native API (``--gateway-url``), or through
a provider of ours run in this process (``--provider NAME``, or ``PROVIDER=`` in
the environment, with that provider's settings in the environment too).

Exit status: 0 done (issued, renewed, or nothing was due); 1 something failed
(a certificate could not be obtained, a deploy hook failed, the CA refused);
2 usage or configuration error; 3 another run holds the state directory's lock;
128 + the signal when stopped by SIGTERM or SIGHUP (after withdrawing what it had
published, as on Ctrl-C, 130).

Progress goes to stderr, one line per protocol step with the elapsed time
(``--quiet``: errors only). Results go to stdout; ``--json`` makes them one
JSON document. Secrets (the EAB MAC key, the gateway password) are never
printed; prefer ``--eab-hmac-key-file`` or ``ACMEGW_EAB_HMAC_KEY`` to keep the
MAC key out of the process list.

This module is the entry point: it parses (:mod:`lib.acme.arguments`), runs the command
(:mod:`lib.acme.commands`) with SIGTERM and SIGHUP handled as Ctrl-C, and turns what
ends a run into its exit status and last words (:mod:`lib.acme.output`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from lib.acme.arguments import build_parser, command_of, redact
from lib.acme.commands import dispatch
from lib.acme.errors import AcmeError, LockBusy, UsageError
from lib.acme.output import EXIT_BUSY, EXIT_FAILED, EXIT_USAGE, PROG, Output, failure_document
from lib.acme.progress import Progress


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    wants_json = "--json" in arguments
    try:
        args = parser.parse_args(arguments)
    except UsageError as exc:
        sys.stderr.write(exc.usage or parser.format_usage())
        message = redact(str(exc), arguments)
        sys.stderr.write(f"{PROG}: error: {message}\n")
        if wants_json:
            failure_document(command_of(arguments), EXIT_USAGE, message)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format=f"{PROG}: %(levelname)s %(name)s: %(message)s")
    progress = Progress(quiet=args.quiet)
    out = Output(args, progress)
    command = args.command + (f" {args.action}" if args.command == "account" else "")
    status, message = EXIT_FAILED, ""
    try:
        with _stopped_as_on_ctrl_c():
            return dispatch(args, progress, out)
    except Terminated as exc:
        name = signal.Signals(exc.signum).name
        status, message = 128 + exc.signum, f"stopped by {name}"
        sys.stderr.write(f"{PROG}: {message}\n")
    except LockBusy as exc:
        status, message = EXIT_BUSY, str(exc)
        sys.stderr.write(f"{PROG}: {exc}\n")
    except UsageError as exc:
        status, message = EXIT_USAGE, str(exc)
        sys.stderr.write(f"{PROG}: error: {exc}\n")
    except AcmeError as exc:
        message = str(exc)
        sys.stderr.write(f"{PROG}: error: {exc}\n")
    except KeyboardInterrupt:
        status, message = 130, "interrupted"
        sys.stderr.write(f"{PROG}: interrupted\n")
    except Exception as exc:
        # A bug of ours: one line (the traceback with -v), and the exit status says so.
        logging.getLogger(__name__).debug("internal error", exc_info=True)
        message = f"internal error: {type(exc).__name__}: {exc}"
        sys.stderr.write(f"{PROG}: {message} (run with -v for the traceback)\n")
    if args.json:
        failure_document(command, status, message, progress.steps)
    return status


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (systemd stopping the unit, ``timeout``, a closed terminal)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _stopped_as_on_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run the way Ctrl-C does: every ``finally`` runs, so
    published values are withdrawn and the lock released. A second signal is ignored
    while that clean-up runs (the service manager's SIGKILL still ends it)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only (tests run main() in threads)
        return

    def stop(signum: int, _frame: object) -> None:
        for each in SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {each: signal.signal(each, stop) for each in SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


SIGNALS = (signal.SIGTERM, signal.SIGHUP)
