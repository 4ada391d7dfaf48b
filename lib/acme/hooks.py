"""The commands a user hangs on a run: pre- and post-hooks around it, the deploy hook
after each new certificate (:class:`RunHooks`).

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
from pathlib import Path

from lib.acme.errors import HookFailed
from lib.acme.options import Options
from lib.acme.progress import Progress
from lib.acme.store import Lineage


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


class RunHooks:
    """The hooks of one run, under certbot's rules: each pre-hook once, before the first
    certificate the run obtains (none when nothing is due); the post-hooks once, when the
    run ends; the deploy hook after each new certificate."""

    def __init__(self, progress: Progress, options: Options) -> None:
        self.progress = progress
        self.options = options
        # Pre-hooks run (command -> its failure, or None) and post-hooks due, in order.
        self._pre_hooks: dict[str, str | None] = {}
        self._post_hooks: list[str] = []

    def before_obtaining(self, lineage: Lineage) -> None:
        """Before the first certificate a run obtains: each pre-hook once (certbot's rule);
        the post-hooks then run when the run ends. A failed pre-hook fails every
        certificate that needs it, and none of them is ordered (the post-hooks still run:
        they undo what a pre-hook may have begun)."""
        for command in (lineage.post_hook, self.options.post_hook):
            if command and command not in self._post_hooks:
                self._post_hooks.append(command)
        for command in (self.options.pre_hook, lineage.pre_hook):
            if not command:
                continue
            if command not in self._pre_hooks:
                try:
                    run_hook("pre", command, self.progress, self.options.hook_timeout)
                    self._pre_hooks[command] = None
                except HookFailed as exc:
                    self._pre_hooks[command] = str(exc)
            if self._pre_hooks[command] is not None:
                raise HookFailed(f"{self._pre_hooks[command]}; nothing was ordered")

    def finish(self) -> list[str]:
        """Run the post-hooks that are due (each once); returns their failures."""
        problems = []
        for command in self._post_hooks:
            try:
                run_hook("post", command, self.progress, self.options.hook_timeout)
            except HookFailed as exc:
                self.progress.warn(str(exc))
                problems.append(str(exc))
        self._post_hooks.clear()
        return problems

    def deploy(self, lineage: Lineage, folder: Path) -> None:
        """Run the deploy hook with certbot's variables; bounded by ``hook_timeout``."""
        assert lineage.deploy_hook
        run_hook("deploy", lineage.deploy_hook, self.progress, self.options.hook_timeout,
                 {"RENEWED_LINEAGE": str(folder), "RENEWED_DOMAINS": " ".join(lineage.domains),
                  "ACMEGW_CERT_NAME": lineage.name})


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the hook and everything it started (its own process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
