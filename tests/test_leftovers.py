"""What killed runs leave outside the journal is released at the next run's start: unsent throttle reservations,
open runs (closed as killed), temp files in the folders the tool writes (and only there)."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

from skillbuild.calls.throttle import Throttle
from skillbuild.store.audit import AuditDB


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def audit_path(tmp_path: Path) -> Path:
    return next((tmp_path / "build").glob("*/audit.sqlite3"))


def test_unsent_reservations_of_killed_runs_are_released_at_run_start(doit, tmp_path):
    db = tmp_path / "build" / "throttle.sqlite3"
    Throttle(db)
    now, dead = time.time(), dead_pid()
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO calls (at, sent, gap, pid) VALUES (?, ?, 0, ?)",
                         [(now, 1, dead), (now, 0, dead), (now, 0, dead), (now, 0, os.getpid())])
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "released 2 throttle reservation(s) a killed run never sent" in run.stdout
    with sqlite3.connect(db) as conn:  # the sent call stays (it may have been billed); a live process keeps its own
        assert sorted(conn.execute("SELECT sent, pid FROM calls")) == sorted([(1, dead), (0, os.getpid())])
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO calls (at, sent, gap, pid) VALUES (?, 0, 0, ?)", (now, dead_pid()))
    quota = doit("quota")
    assert quota.returncode == 0, quota.stdout + quota.stderr
    assert "calls today: 1 sent (+1 waiting to be sent)" in quota.stdout  # only the live process's reservation


def test_runs_of_killed_processes_are_closed_as_killed_with_their_calls_in_flight_unknown(doit, tmp_path):
    first = doit()  # creates the audit DB
    assert first.returncode == 0, first.stdout + first.stderr
    db = AuditDB(audit_path(tmp_path))
    killed = f"20261101T000000Z-{dead_pid()}"
    db.start_run(["doit"], run_id=killed)
    db.record(killed, "deploy-checker", "plugins/devops/deploy-checker", "analyse", "failure", error_message="x")
    row = db.begin_attempt(killed, "deploy-checker", "generate", {"time": time.time()})
    db.close()
    run = doit("skill:deploy-checker")
    assert run.returncode == 0, run.stdout + run.stderr
    assert (f"closed run {killed} as killed (it ended without recording its end); 1 API call(s) in flight, "
            "outcome unknown (counted as possibly billed)") in run.stdout
    with sqlite3.connect(audit_path(tmp_path)) as conn:
        status, ended, exit_status = conn.execute("SELECT status, ended, exit_status FROM runs WHERE id = ?",
                                                  (killed,)).fetchone()
        assert (status, ended, exit_status) == ("killed", None, None)  # when it stopped is not known
        assert conn.execute("SELECT outcome FROM api_calls WHERE id = ?", (row,)).fetchone() == ("unknown",)
        assert conn.execute("SELECT COUNT(*) FROM runs WHERE ended IS NULL AND status IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT status FROM runs WHERE id != ?", (killed,)).fetchall() == [("ended",)] * 2
    shown = doit("status")
    assert f"runs killed before their end: 1 (last: {killed})" in shown.stdout
    report = doit("report")
    assert report.returncode == 0, report.stdout + report.stderr
    page = next((tmp_path / "build").glob("*/report.html")).read_text()
    assert f'<tr data-run="{killed}"' in page and "<td>killed</td>" in page


def test_run_start_removes_temps_in_the_folders_it_writes_and_never_walks_the_marketplace(doit, market, tmp_path):
    skill_dir = market / "plugins/devops/deploy-checker/skills/deploy-checker"
    skill_dir.mkdir(parents=True)
    ours = skill_dir / ".skillbuild-abc123.tmp"
    ours.write_text("half a SKILL.md")
    elsewhere = market / "plugins/devops/deploy-checker/docs/.skillbuild-theirs.tmp"
    elsewhere.parent.mkdir(parents=True, exist_ok=True)
    elsewhere.write_text("not ours: nothing of ours writes here")
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert not ours.exists() and "removed 1 temp file(s) left by an interrupted run" in run.stdout
    assert elsewhere.read_text().startswith("not ours")
