"""DNS providers: one module per provider, on the contract in :mod:`providers.base`."""
