"""``python -m providers.builtin FD``: the builtin DNS server process (see .server)."""

import sys

from providers.builtin.server import main

sys.exit(main())
