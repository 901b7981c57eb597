"""What keeps a marketplace safe: plugin backups and restore, archives, Turso off-site copies, run lock, signals."""
