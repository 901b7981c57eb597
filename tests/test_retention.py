"""Retention: `doit prune` / `doit clean prune` remove unreachable cache entries and old logs and rejected candidates,
never the audit DB, a backup or a reachable answer."""
from __future__ import annotations

import os
import time
from pathlib import Path

from test_vertex_build import VertexBuild, target, vx  # noqa: F401  (fixture)
from vertex_server import fake_vertex_factory  # noqa: F401  (fixture)


def _entries(tmp: Path) -> set[str]:
    return {p.stem for p in (tmp / "cache").glob("*/responses/??/*.json")}


def _state_files(tmp: Path) -> dict[str, int]:
    """The audit DB and every backup file, with their sizes: none may go."""
    build = tmp / "build"
    found = list(build.glob("*/audit.sqlite3")) + [p for p in build.glob("*/backups/**/*") if p.is_file()]
    return {str(p): p.stat().st_size for p in found}


def test_prune_removes_only_entries_no_current_input_reaches(vx, market, tmp_path):  # noqa: F811
    assert vx.run().returncode == 0
    before = _entries(tmp_path)
    assert len(before) >= 6
    readme = target(market).parent.parent.parent / "README.md"
    readme.write_text(readme.read_text() + "\nA new section about rollbacks.\n")
    assert vx.run().returncode == 0
    assert before < _entries(tmp_path)  # a build adds entries, never removes one
    old = before | _entries(tmp_path)
    kept_state = _state_files(tmp_path)

    dry = vx.run("prune", "cache=1", "dry=1")
    assert dry.returncode == 0 and "cache: would remove 2 file(s)" in dry.stdout, dry.stdout
    assert _entries(tmp_path) == old
    done = vx.run("prune", "cache=1")
    assert done.returncode == 0 and "cache: removed 2 file(s)" in done.stdout, done.stdout
    gone = old - _entries(tmp_path)
    assert len(gone) == 2 and gone <= before  # the changed plugin's old analysis and generation
    assert _state_files(tmp_path) == kept_state

    # every answer still reachable is still there: rebuilding everything from scratch pays nothing
    for name in ("deploy-checker", "secret-sentry", "changelog-lint"):
        target(market, name).unlink()
    for analysis in (tmp_path / "cache").glob("*/analysis/*.json"):
        analysis.unlink()
    vx.faults()
    assert vx.run().returncode == 0
    assert vx.requests() == 0


def test_clean_prune_removes_old_logs_and_rejected_only(doit, tmp_path):
    assert doit().returncode in (0, 1)
    (logs,) = (tmp_path / "build").glob("*/logs")
    rejected = next((tmp_path / "cache").glob("*")) / "rejected"
    rejected.mkdir(exist_ok=True)
    month_ago = time.time() - 31 * 86400
    old_log, old_rejected = logs / "20200101T000000Z-1.log", rejected / "alpha.SKILL.md"
    new_rejected = rejected / "beta.SKILL.md"
    for path in (old_log, old_rejected, new_rejected):
        path.write_text("x")
    for path in (old_log, old_rejected):
        os.utime(path, (month_ago, month_ago))
    recent_logs = {p for p in logs.iterdir() if p != old_log}
    state = _state_files(tmp_path)

    proc = doit("clean", "prune", "logs=1", "rejected=1")
    assert proc.returncode == 0, proc.stderr
    assert not old_log.exists() and not old_rejected.exists()
    assert new_rejected.exists() and recent_logs <= set(logs.iterdir())
    assert _state_files(tmp_path) == state

    # a shorter retention reaches the newer files too
    os.utime(new_rejected, (time.time() - 3 * 86400,) * 2)
    assert doit("prune", "rejected=1", "retain_days=2").returncode == 0
    assert not new_rejected.exists()


def test_offline_prune_leaves_another_providers_cache(doit, tmp_path):
    assert doit().returncode in (0, 1)
    (responses,) = [p.parent / "responses" for p in (tmp_path / "cache").glob("*/analysis")]
    entry = responses / "ab" / ("ab" * 32 + ".json")
    entry.parent.mkdir(parents=True)
    entry.write_text("{}")
    proc = doit("prune", "cache=1")
    assert proc.returncode == 0 and "keeps no response cache" in proc.stdout
    assert entry.exists()
