"""``python -m gateway``: run the gateway server."""

import sys

from gateway.server import main

if __name__ == "__main__":
    sys.exit(main())
