"""Real servers for tests (BIND, ...): start, wait until they serve, stop by pid."""
