"""Code shared by the gateway, the providers, the hook and the ACME driver."""
