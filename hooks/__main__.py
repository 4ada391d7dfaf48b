"""``python -m hooks``: the same as ``acmegw-hook``."""

from hooks.acmegw_hook import console

console()
