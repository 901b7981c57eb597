"""The one way a SQLite state file is opened: WAL, a busy timeout, and a connection per process and thread.

doit runs its workers as forked processes (`-n N`) or threads (`-P`). A SQLite connection must not cross a
fork: closing an inherited one in the child can checkpoint (and delete) the parent's WAL file while the parent
still writes through it, because the child does not hold the parent's POSIX locks. `PerProcess` therefore
opens a new connection in each process (and thread) on first use and never touches one it inherited.
"""
from __future__ import annotations

import os
import sqlite3
import time
import threading
from collections.abc import Callable
from pathlib import Path


def connect(path: str | os.PathLike, *, busy_timeout: float, synchronous: str = "FULL", wal: bool = True,
            read_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (callers open their own transactions), rows as `sqlite3.Row`.

    `read_only` opens an existing file without creating or changing it (no WAL switch: that is a write).
    Usable from any one thread at a time: `PerProcess` hands a connection to a single thread.
    """
    if read_only:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=busy_timeout,
                               isolation_level=None, check_same_thread=False)
    else:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
    if wal and not read_only:
        _wal(conn, busy_timeout)
    if not read_only:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    return conn


def _wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch a new file to WAL (it stays WAL). The switch needs the file to itself and SQLite does not wait for
    that (no busy handler), so threads opening a new file at once retry until `busy_timeout`."""
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class PerProcess:
    """One connection per (process, thread), made by `opener` on first use.

    Connections are keyed by pid, so a forked child never sees its parent's entries as its own; those stay
    referenced here (never used, never closed) so garbage collection in the child cannot close them either.
    """

    def __init__(self, opener: Callable[[], sqlite3.Connection]):
        self._opener = opener
        self._conns: dict[tuple[int, int], sqlite3.Connection] = {}

    @staticmethod
    def _key() -> tuple[int, int]:
        return os.getpid(), threading.get_ident()

    def get(self) -> sqlite3.Connection:
        key = self._key()
        conn = self._conns.get(key)
        if conn is None:
            conn = self._conns[key] = self._opener()
        return conn

    def drop(self) -> None:
        """Close this process's and thread's connection (the next `get` opens a new one)."""
        conn = self._conns.pop(self._key(), None)
        if conn is not None:
            conn.close()

    def close_all(self) -> None:
        """Close every connection this process opened (any thread); inherited ones are left alone."""
        pid = os.getpid()
        for key in [k for k in self._conns if k[0] == pid]:
            self._conns.pop(key).close()
