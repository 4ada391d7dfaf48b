"""The commands a user hangs on a run: the deploy hook after each new certificate.

A hook runs through ``/bin/sh -c`` with stdin closed, its output captured (the last
line is shown), bounded by ``hook_timeout``, and with certbot's variables in its
environment, so that hooks written for certbot work unchanged:
``RENEWED_LINEAGE`` (the certificate's folder) and ``RENEWED_DOMAINS`` (its names,
space-separated), plus ``ACMEGW_CERT_NAME``. A failure is a :class:`HookFailed`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from lib.acme.errors import HookFailed
from lib.acme.progress import Progress


def run_hook(kind: str, command: str, progress: Progress, timeout: float,
             variables: Mapping[str, str] | None = None) -> None:
    """Run *command* (the *kind* hook: "deploy", ...) and report it; HookFailed if it fails."""
    env = dict(os.environ)
    env.update(variables or {})
    progress.step(f"{kind.capitalize()} hook: {command}")
    try:
        done = subprocess.run(["/bin/sh", "-c", command], env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise HookFailed(f"{kind} hook ran longer than {timeout:g}s and was stopped") from None
    except OSError as exc:
        raise HookFailed(f"{kind} hook could not start: {exc.strerror}") from None
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0:
        last = output.splitlines()[-1] if output else "no output"
        raise HookFailed(f"{kind} hook exited with status {done.returncode}: {last}")
    progress.step(f"{kind.capitalize()} hook: done"
                  + (f" ({output.splitlines()[-1]})" if output else ""))
