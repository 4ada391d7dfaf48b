"""The configuration in force, which SIGHUP may replace while requests are served.

Handlers read ``request.app[LIVE].config`` for every request, so a reload takes
effect for the next request without dropping the ones in flight. What cannot
change without a restart (listeners, TLS files, the state directory, route
prefixes, the provider) is kept and reported.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from gateway.config import Config

log = logging.getLogger(__name__)

# Fields a reload cannot apply to a running process.
RESTART_ONLY = ("listeners", "tls", "tls_acme", "state_dir", "httpreq_prefix", "config_dir")


class Live:
    def __init__(self, config: Config) -> None:
        self.config = config

    def replace(self, new: Config) -> list[str]:
        """Adopt *new*; returns the fields that still need a restart."""
        old = self.config
        pending = [f for f in RESTART_ONLY if getattr(old, f) != getattr(new, f)]
        self.config = replace(new, **{f: getattr(old, f) for f in RESTART_ONLY})
        return pending
