"""Hooks that ACME clients call to reach the gateway."""
