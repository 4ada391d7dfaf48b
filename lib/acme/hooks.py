"""The commands a user hangs on a run: the deploy hook after each new certificate.

A hook runs through ``/bin/sh -c`` in a process group of its own, with stdin closed,
its output captured (the last line is shown), bounded by ``hook_timeout`` (past it,
the hook and all it started are killed; what it starts and leaves running when it
exits -- a service it restarts -- is left alone), and with certbot's variables in its
environment, so that hooks written for certbot work unchanged:
``RENEWED_LINEAGE`` (the certificate's folder) and ``RENEWED_DOMAINS`` (its names,
space-separated), plus ``ACMEGW_CERT_NAME``. A failure is a :class:`HookFailed`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Mapping

from lib.acme.errors import HookFailed
from lib.acme.progress import Progress


def run_hook(kind: str, command: str, progress: Progress, timeout: float,
             variables: Mapping[str, str] | None = None) -> None:
    """Run *command* (the *kind* hook: "deploy", ...) and report it; HookFailed if it fails."""
    env = dict(os.environ)
    env.update(variables or {})
    progress.step(f"{kind.capitalize()} hook: {command}")
    # Output to a file, not a pipe: a service the hook (re)starts may keep it open, and
    # waiting for the end of a pipe would wait for that service to end.
    with tempfile.TemporaryFile() as output:
        try:
            process = subprocess.Popen(["/bin/sh", "-c", command], env=env,
                                       stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise HookFailed(f"{kind} hook could not start: {exc.strerror}") from None
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _stop(process)
            raise HookFailed(f"{kind} hook ran longer than {timeout:g}s and was stopped"
                             ) from None
        except BaseException:
            _stop(process)  # interrupted (Ctrl-C, SIGTERM): the hook ends with the run
            raise
        output.seek(0)
        text = output.read().decode(errors="replace").strip()
    if status != 0:
        last = text.splitlines()[-1] if text else "no output"
        raise HookFailed(f"{kind} hook exited with status {status}: {last}")
    progress.step(f"{kind.capitalize()} hook: done"
                  + (f" ({text.splitlines()[-1]})" if text else ""))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the hook and everything it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
