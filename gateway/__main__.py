"""``python -m gateway`` and ``acmegw-server``: run the gateway server.

The signals are caught before anything else is imported (gateway.early_signals):
the server's imports alone take most of a second.
"""

from __future__ import annotations

import sys

from gateway.early_signals import EarlySignals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    early = EarlySignals.catch()
    from gateway.server import main as serve_main

    return serve_main(argv, early)


if __name__ == "__main__":
    sys.exit(main())
