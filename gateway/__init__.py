"""The gateway service: authenticated callers add and remove ``_acme-challenge`` TXT records."""
