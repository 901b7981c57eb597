"""Storage: the one atomic write, the SQLite helper and the audit DB with all of its SQL."""
