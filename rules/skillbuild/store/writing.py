"""Atomic writes into the marketplace (build._write backs the plugin up first), and a killed write's temp files.

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
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leftover_temps(root: Path) -> list[Path]:
    return sorted(root.rglob(f"{TEMP_PREFIX}*.tmp"))
