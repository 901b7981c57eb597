"""Every write into the marketplace: back up the old file, then write atomically.

Atomic means a temp file in the same folder, fsync, `os.replace`, fsync of the folder: a reader or a
crash sees the old file or the complete new one, never a part. Temp names start with `.skillbuild-`
so a leftover from a power cut is recognisable (and `leftover_temps` finds them).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

TEMP_PREFIX = ".skillbuild-"


def atomic_write(path: Path, data: bytes | str) -> None:
    payload = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            shutil.copymode(path, temp)
        else:
            os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_file(path: Path, backup_root: Path, run_id: str, plugin_key: str, rel: str) -> Path | None:
    """Copy `path` to backup_root/<run>/<plugin>/<rel> before it changes; None when there is nothing to keep."""
    if not path.exists():
        return None
    dest = backup_root / run_id / plugin_key / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, dest)
    if dest.read_bytes() != path.read_bytes():
        raise OSError(f"backup of {path} to {dest} does not match the original; nothing was written")
    return dest


def write_with_backup(path: Path, text: str, backup_root: Path, run_id: str, plugin_key: str, rel: str) -> Path | None:
    """Back up the current file (if any), then replace it atomically. Returns the backup path."""
    saved = backup_file(path, backup_root, run_id, plugin_key, rel)
    atomic_write(path, text)
    return saved


def leftover_temps(root: Path) -> list[Path]:
    return sorted(root.rglob(f"{TEMP_PREFIX}*.tmp"))
