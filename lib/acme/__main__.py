"""``python -m lib.acme``: the ``acmegw-acme`` command."""

import sys

from lib.acme.cli import main

sys.exit(main())
