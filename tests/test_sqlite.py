"""The one SQLite opener: WAL and a busy timeout, and a connection per process and thread (never across a fork)."""
from __future__ import annotations

import os
import threading

from skillbuild.store import sqlite
from skillbuild.store.audit import AuditDB


def test_connect_sets_wal_busy_timeout_and_synchronous(tmp_path):
    conn = sqlite.connect(tmp_path / "sub" / "state.sqlite3", busy_timeout=2.5, synchronous="NORMAL")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 2500
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    conn.execute("CREATE TABLE t (x)")
    ro = sqlite.connect(tmp_path / "sub" / "state.sqlite3", busy_timeout=1, read_only=True)
    assert ro.execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(tmp_path):
    path = tmp_path / "state.sqlite3"
    pool = sqlite.PerProcess(lambda: sqlite.connect(path, busy_timeout=5))
    parent = pool.get()
    parent.execute("CREATE TABLE t (who TEXT)")
    parent.execute("INSERT INTO t VALUES ('parent')")
    pid = os.fork()
    if pid == 0:  # the child: a new connection; the inherited one is neither used nor closed
        code = 0 if pool.get() is not parent else 1
        pool.get().execute("INSERT INTO t VALUES ('child')")
        pool.close_all()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    parent.execute("INSERT INTO t VALUES ('parent again')")  # still usable after the child closed its own
    assert [r[0] for r in parent.execute("SELECT who FROM t ORDER BY rowid")] == ["parent", "child", "parent again"]
    assert pool.get() is parent


def test_the_audit_db_can_be_written_from_worker_threads(tmp_path):
    """doit -P runs actions in threads: each gets its own connection to the one AuditDB."""
    db = AuditDB(tmp_path / "audit.sqlite3")
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            db.record("r1", f"p{i}", None, "analyse", "success")
        except BaseException as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert db.query("SELECT COUNT(*) FROM enhancements")[0][0] == 4


def test_the_audit_reader_creates_nothing_and_writes_nothing(tmp_path):
    import sqlite3

    import pytest

    missing = tmp_path / "none" / "audit.sqlite3"
    assert AuditDB.reader(missing) is None and not missing.parent.exists()
    AuditDB(tmp_path / "audit.sqlite3").record("r1", "p", None, "analyse", "success", output_tokens=10,
                                               provider="vertex", model="m")
    reader = AuditDB.reader(tmp_path / "audit.sqlite3")
    assert [tuple(r) for r in reader.output_averages("vertex", "m")] == [("analyse", 1, 10.0, None)]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.connection().execute("DELETE FROM enhancements")
