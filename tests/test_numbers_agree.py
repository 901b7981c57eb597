"""Finding 10: the run summary, `doit status` and the report use one vocabulary and show every run and failure."""
from __future__ import annotations

import re
import sqlite3

from skillbuild.store.audit import AuditDB
from skillbuild.ui.report import MIN_BAR_PX, svg_bars, write_html

SUMMARY = re.compile(r"^built (\d+), kept (\d+), skipped (\d+), failed (\d+), fresh (\d+)", re.M)
TOTAL = re.compile(r"^total: (.*)$", re.M)


def _status_counts(proc) -> dict[str, int]:
    line = TOTAL.search(proc.stdout).group(1)
    return {state: int(n) for n, state in (part.split() for part in line.split(", "))}


def test_rerun_summary_counts_kept_and_skipped_as_status_does(doit):
    first = doit()
    assert first.returncode in (0, 1), first.stderr
    second = doit()
    built, kept, skipped, failed, fresh = map(int, SUMMARY.search(second.stdout).groups())
    status = _status_counts(doit("status"))
    assert kept and skipped, second.stdout  # the examples hold a hand-written and a skipped plugin
    assert (kept, skipped, fresh) == (status.get("kept", 0), status.get("skipped", 0), status.get("fresh", 0))
    assert built == 0
    assert " keep kept" not in second.stdout  # up to date: counted, not a line per plugin on every run


def test_report_lists_every_run_and_a_failed_restore(doit, doit_env, tmp_path):
    from pathlib import Path

    assert doit().returncode in (0, 1)
    assert doit("restore", "plugin=no-such-plugin").returncode != 0  # a failed run with no plugin row
    assert doit("report").returncode == 0
    db = Path(doit_env["SKILLBUILD_BUILD_ROOT"])
    audit_file = next(db.rglob("audit.sqlite3"))
    runs = sqlite3.connect(audit_file).execute("SELECT id, exit_status FROM runs").fetchall()
    page = next(db.rglob("report.html")).read_text()
    assert f'data-value="{len(runs)}"' in page
    for run_id, exit_status in runs:
        assert f'<tr data-run="{run_id}"' in page
    failed = [r for r, status in runs if status not in (0, None)]
    assert failed and all(re.search(rf'<tr data-plugin="[^"]*" data-phase="run" data-run="{r}"', page) for r in failed)


def test_small_values_get_a_visible_bar():
    svg = svg_bars("c", ["run"], [("success", "#0f0", [236]), ("failure", "#f00", [1])])
    heights = [float(h) for h in re.findall(r'data-value="1" [^>]*height="([\d.]+)"', svg)]
    assert heights and heights[0] >= MIN_BAR_PX
    quota = svg_bars("q", ["day"], [("answered", "#0f0", [6])], hline=(500, "quota 500"))
    assert float(re.search(r'data-value="6" [^>]*height="([\d.]+)"', quota).group(1)) >= MIN_BAR_PX


def test_run_without_plugin_rows_and_interrupted_run_are_in_the_report(tmp_path):
    db = AuditDB(tmp_path / "audit.sqlite3")
    db.start_run(["doit", "restore", "plugin=x"], run_id="20261101T000000Z-1")
    db.end_run("20261101T000000Z-1", {"built": 0}, 1)
    db.start_run(["doit"], run_id="20261102T000000Z-2")  # killed: never ended
    db.start_run(["doit"], run_id="20261103T000000Z-3")
    db.end_run("20261103T000000Z-3", {"built": 0, "fresh": 4, "restored": 0}, 0)
    page = write_html(db, tmp_path / "r.html", quota_rpd=10).read_text()
    assert page.count("<tr data-run=") == 3
    assert 'data-phase="run" data-run="20261101T000000Z-1"' in page
    assert 'data-phase="run" data-run="20261102T000000Z-2"' in page
    assert 'data-phase="run" data-run="20261103T000000Z-3"' not in page
    assert '<td class="n" data-fresh="4">4</td>' in page
