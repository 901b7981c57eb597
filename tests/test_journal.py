"""The staging journal: what a killed process created is removed by the next run, a live one's is left alone."""
from __future__ import annotations

import json
import subprocess
import sys

from skillbuild.safety.journal import Journal

KILLED = """
import os, signal, sys
from pathlib import Path
from skillbuild.safety.journal import Journal
with Journal(Path(sys.argv[1])).staging(Path(sys.argv[2])) as path:
    path.mkdir()
    (path / "half-written.bin").write_bytes(b"x" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_dead_process_staging_folder_is_reaped(tmp_path):
    journal, staged = Journal(tmp_path / "journal"), tmp_path / "market" / ".partial-folder"
    staged.parent.mkdir()
    proc = subprocess.run([sys.executable, "-c", KILLED, str(journal.folder), str(staged)], capture_output=True)
    assert proc.returncode == -9 and staged.is_dir()
    assert journal.reap() == [f"removed {staged} (left by a killed run)"]
    assert not staged.exists() and not list(journal.folder.iterdir())
    assert journal.reap() == []


def test_a_live_process_staging_is_left_alone_and_removed_on_error(tmp_path):
    journal = Journal(tmp_path / "journal")
    with journal.staging(tmp_path / "mine") as path:
        path.mkdir()
        assert journal.reap() == [] and path.is_dir()  # this process is alive
        [entry] = journal.folder.glob("*.json")
        assert json.loads(entry.read_text())["path"] == str(path)
    assert not list(journal.folder.glob("*.json"))
    try:
        with journal.staging(tmp_path / "failing") as path:
            path.mkdir()
            raise OSError("disk full")
    except OSError:
        pass
    assert not (tmp_path / "failing").exists() and not list(journal.folder.glob("*.json"))


def test_a_reused_pid_does_not_keep_a_dead_entry(tmp_path):
    journal = Journal(tmp_path / "journal")
    journal.folder.mkdir()
    (tmp_path / "stale").mkdir()
    import os

    record = {"kind": "staging", "path": str(tmp_path / "stale"), "pid": os.getpid(), "started": "1"}
    (journal.folder / "old.json").write_text(json.dumps(record))  # this pid, but another process's start time
    assert journal.reap() and not (tmp_path / "stale").exists()
