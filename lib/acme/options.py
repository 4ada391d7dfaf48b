"""How a run of acmegw-acme behaves, whatever the certificate: one frozen dataclass.

The command line builds it once (:func:`lib.acme.arguments.options`); every part of a run reads it.
Tests replace ``sleep`` to see the waits without waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lib.acme.client import ExternalAccount
from lib.acme.keys import DEFAULT_KEY_TYPE


@dataclass(frozen=True)
class Options:
    """How the run behaves."""

    ca_file: str | None = None
    account_key_type: str = DEFAULT_KEY_TYPE
    contact: tuple[str, ...] = ()
    agree_tos: bool = False
    eab: ExternalAccount | None = None
    # Tries per CA for errors another try may fix (see lib.acme.failover).
    attempts: int = 2
    retry_delay: float = 5.0
    validation_timeout: float = 300.0
    order_timeout: float = 300.0
    # Bound on one answer from the CA; the directory, the first request to a CA, gets
    # the shorter bound, so that a CA that accepts connections and never answers is
    # reported (and skipped for the rest of the run) within seconds.
    http_timeout: float = 30.0
    directory_timeout: float = 10.0
    hook_timeout: float = 300.0
    # The whole flow against the CA, but nothing saved or deployed (a production CA with
    # a staging twin is replaced by the twin).
    dry_run: bool = False
    # Run-wide hooks (renew --pre-hook/--post-hook), besides each certificate's own.
    pre_hook: str | None = None
    post_hook: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    sleep: Callable[[float], None] = time.sleep
