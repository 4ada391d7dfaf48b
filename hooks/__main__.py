"""``python -m hooks``: the same as ``acmegw-hook``."""

import sys

from hooks.acmegw_hook import main

sys.exit(main())
