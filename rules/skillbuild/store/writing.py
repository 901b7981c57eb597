"""The one atomic write every writer uses (marketplace, cache, journal, reports), and what a killed write leaves.

Atomic means a temp file in the same folder, fsync, `os.replace`, fsync of the folder: a reader or a
crash sees the old file or the complete new one, never a part. Temp names start with `.skillbuild-`
(or the prefix a caller gives, e.g. the response cache's `.<key>.`) so a leftover from a power cut is
recognisable (and `leftover_temps` finds the default ones).
"""
from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from skillbuild.memo import Memo, deps_of

TEMP_PREFIX = ".skillbuild-"
NEW_FILE_MODE = 0o644


def atomic_write(path: str | os.PathLike, data: bytes | str, *, mode: int | None = None,
                 prefix: str = TEMP_PREFIX) -> Path:
    """Replace `path` with `data` (text is written as UTF-8). `mode`: the file's permission bits; None keeps
    an existing file's mode (NEW_FILE_MODE for a new file)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return _replace(Path(path), lambda handle: handle.write(payload), mode, prefix)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike, *, mode: int | None = None,
                prefix: str = TEMP_PREFIX) -> Path:
    """Replace `path` with a copy of the file `source`, streamed (a plugin file may be large)."""
    def fill(handle: BinaryIO) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, handle)

    return _replace(Path(path), fill, mode, prefix)


def _replace(path: Path, fill: Callable[[BinaryIO], object], mode: int | None, prefix: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(temp, mode)
        elif path.exists():
            shutil.copymode(path, temp)
        else:
            os.chmod(temp, NEW_FILE_MODE)
        os.replace(temp, path)
    except BaseException as exc:
        Path(temp).unlink(missing_ok=True)
        name_unnamed(exc, path)
        raise
    fsync_dir(path.parent)
    return path


def name_unnamed(exc: BaseException, path: str | os.PathLike) -> None:
    """Give an OSError raised by a write to an open file (which names no file) the path being written, so its
    one-line message says which disk refused it."""
    if isinstance(exc, OSError) and exc.filename is None:
        exc.filename = str(path)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def leftover_temps(root: Path) -> list[Path]:
    """Every default temp file under `root`, at any depth (a check after the fact; a run start uses `temps_in`)."""
    return sorted(root.rglob(f"{TEMP_PREFIX}*.tmp"))


def temps_in(folders, memo: Memo | None = None) -> list[Path]:
    """Default temp files directly in each of `folders`: the ones atomic writes go to, never a whole tree.
    `memo`: a folder found without any keeps saying so while its stat key is the same (creating a file in
    it changes the key), so a run start stats each plugin's skill folder instead of listing it."""
    found: set[Path] = set()
    for folder in folders:
        name = os.fspath(folder)
        if memo is not None and memo.get("no-temps", name):
            continue
        deps = deps_of(name, [""])  # before listing: a temp file made meanwhile is looked for next time
        try:
            with os.scandir(name) as entries:
                temps = [Path(e.path) for e in entries if e.name.startswith(TEMP_PREFIX) and e.name.endswith(".tmp")]
        except OSError:
            continue  # no such folder yet
        found.update(temps)
        if memo is not None and not temps:
            memo.put("no-temps", name, name, deps, True)
    return sorted(found)


NO_ROOM = (errno.ENOSPC, errno.EDQUOT)  # the filesystem (or the user's quota) is full


NEARLY_FULL_BYTES = 1 << 20


def no_room(exc: BaseException, path: str | os.PathLike | None = None) -> bool:
    """A write failed because its disk is full: ENOSPC or EDQUOT, or SQLite's SQLITE_FULL. SQLite reports some
    refused writes (its WAL index, a sync) as a plain I/O error: with the `path` it was writing, one on a disk
    with under a megabyte free counts as full too."""
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return True
    return path is not None and code is not None and code & 0xFF == sqlite3.SQLITE_IOERR and _nearly_full(path)


def _nearly_full(path: str | os.PathLike) -> bool:
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES


def write_failure(exc: BaseException, path: str | os.PathLike | None = None) -> str:
    """One line for a failed write: "disk full at PATH" when there was no room, else what failed and why."""
    # a two-path operation (link, rename, copy) names what it was making second
    where = path if path is not None else getattr(exc, "filename2", None) or getattr(exc, "filename", None)
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if no_room(exc, where):
        return f"disk full at {where}" + (f" ({reason})" if reason else "") if where else f"disk full ({reason})"
    return f"cannot write {where}: {reason}" if where else f"write failed: {reason}"
