"""End to end on tests/fixtures/messy-discovery: only real plugins are built, outcomes are filed by key,
doit and `doit status` give one answer to "is it stale?", and an empty plugin costs nothing."""
from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "messy-discovery"
BUILT = {"log-tail": "plugins/log-tail", "db-kit": "plugins/db-kit", "db-kit-legacy": "plugins/db-kit-legacy",
         "untracked-helper": "plugins/untracked-helper"}
NEVER_PLUGINS = [".cursor-plugin", "plugins/log-tail-copy", "plugins/wip-draft", "scratch/old-copy",
                 "backups/2026-01-05/log-tail", "templates/x-plugin", "tests/e2e/fixtures/test-plugin",
                 "plugins/empty-one"]


@pytest.fixture
def market(tmp_path: Path) -> Path:
    """Overrides conftest's `market`: a temp copy of the messy fixture (so `doit` runs on it)."""
    dest = tmp_path / "market"
    shutil.copytree(FIXTURE, dest, symlinks=True)
    return dest


def skill(market: Path, rel: str, key: str) -> Path:
    return market / rel / "skills" / key / "SKILL.md"


def status_lines(doit, extra_env: dict | None = None) -> dict[str, str]:
    proc = doit("status", extra_env=extra_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {line.split()[0]: line for line in proc.stdout.splitlines()[2:] if line.strip()}


def audit_rows(tmp_path: Path) -> list[sqlite3.Row]:
    db = next((tmp_path / "build").glob("*/audit.sqlite3"))
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT plugin_name, plugin_path, phase, status, backup_path FROM enhancements"
                            " ORDER BY id").fetchall()
    finally:
        conn.close()


def test_only_real_plugins_are_built_and_the_run_exits_0(doit, market):
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "built 4, kept 0, skipped 2, failed 0" in run.stdout
    for key, rel in BUILT.items():
        assert skill(market, rel, key).is_file(), key
    assert sorted(p.relative_to(market).as_posix() for p in market.rglob("SKILL.md")) == sorted(
        f"{rel}/skills/{key}/SKILL.md" for key, rel in BUILT.items())
    for rel in NEVER_PLUGINS:
        assert not (market / rel / "skills").exists(), rel
    lines = status_lines(doit)
    shadowed = lines["log-tail-2"]
    assert " skipped " in shadowed and "shadowed by catalog plugin 'log-tail' (plugins/log-tail)" in shadowed
    listed = "\n".join(lines.values())
    for rel in (".cursor-plugin", "backups/", "templates/", "tests/e2e", "scratch/", "wip-draft"):
        assert rel not in listed
    assert lines["total:"].startswith("total: 4 fresh, 2 skipped")


def test_build_untracked_off_still_exits_0(doit, market):
    off = {"SKILLBUILD_BUILD_UNTRACKED": "false"}
    run = doit(extra_env=off)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "failed 0" in run.stdout
    assert not skill(market, "plugins/untracked-helper", "untracked-helper").exists()
    lines = status_lines(doit, off)
    assert "build_untracked is off" in lines["untracked-helper"]
    assert "shadowed by catalog plugin 'log-tail'" in lines["log-tail-2"]


def test_the_exclude_setting_replaces_the_default_list(doit, market):
    run = doit(extra_env={"SKILLBUILD_EXCLUDE": "backups,tests"})  # templates/ is searched now
    assert run.returncode == 0, run.stdout + run.stderr
    assert skill(market, "templates/x-plugin", "x-plugin").is_file()
    assert not (market / "backups/2026-01-05/log-tail/skills").exists()


def test_outcomes_are_filed_by_key(doit, market, tmp_path):
    assert doit().returncode == 0
    rows = audit_rows(tmp_path)
    assert {r["plugin_name"] for r in rows} == set(BUILT) | {"log-tail-2", "empty-one"}
    by_key = {r["plugin_name"]: r for r in rows}
    assert by_key["db-kit-legacy"]["plugin_path"] == "plugins/db-kit-legacy"  # manifest name: db-kit
    assert by_key["log-tail-2"]["plugin_path"] == "plugins/log-tail-copy"
    assert [(r["phase"], r["status"]) for r in rows if r["plugin_name"] == "log-tail-2"] == [("skip", "skipped")]
    lines = status_lines(doit)
    assert "generate success" in lines["log-tail"] and "last error" not in lines["log-tail"]
    assert "generate success" in lines["db-kit"] and "generate success" in lines["db-kit-legacy"]
    report = doit("report")
    assert report.returncode == 0, report.stdout + report.stderr
    page = next((tmp_path / "build").glob("*/report.html")).read_text()
    assert re.search(r'id="built" data-value="4"', page)


def test_restore_status_plan_and_doit_agree(doit, market, prompts, tmp_path):
    assert doit().returncode == 0
    # A restore that brings back a SKILL.md made with an older prompt: stale for every view.
    prompt = prompts / "generation.md"
    original = prompt.read_text()
    prompt.write_text(original + "\nPrefer short sentences.\n")
    assert doit().returncode == 0
    prompt.write_text(original)
    assert doit().returncode == 0  # back to the first prompt: rebuilt, the backup holds the "short" version
    assert doit("restore", "plugin=log-tail").returncode == 0
    assert "changed: generation-prompt" in status_lines(doit)["log-tail"]
    assert re.search(r"^log-tail\s+\d", doit("plan").stdout, re.M)
    assert doit.list_status()["skill:log-tail"] == "R"
    rebuilt = doit()
    assert rebuilt.returncode == 0 and doit.executed(rebuilt) == {"skill:log-tail"}
    # A restore that puts older inputs and the SKILL.md made from them back: fresh for every view, nothing runs.
    command = market / "plugins/db-kit/commands/check-migration.md"
    command.write_text(command.read_text() + "\nAlso check that every new index is built concurrently.\n")
    assert doit.executed(doit()) == {"analyse:db-kit", "skill:db-kit"}
    backups = [r["backup_path"] for r in audit_rows(tmp_path) if r["plugin_name"] == "db-kit"
               and (r["phase"], r["status"]) == ("generate", "success")]
    second_run = Path(backups[1]).parent.name  # before the "short" rebuild: first inputs, first-prompt SKILL.md
    assert doit("restore", "plugin=db-kit", f"at={second_run}").returncode == 0
    assert " fresh " in status_lines(doit)["db-kit"]
    assert not re.search(r"^db-kit\s+\d", doit("plan").stdout, re.M)
    listed = doit.list_status()
    assert listed["skill:db-kit"] == "U" and listed["analyse:db-kit"] == "U"
    assert doit.executed(doit()) == set()


def test_an_empty_plugin_is_skipped_before_any_call(doit, market, tmp_path):
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"empty-one skip skipped .*empty plugin", run.stdout)
    assert not (market / "plugins/empty-one/skills").exists()
    phases = [(r["phase"], r["status"]) for r in audit_rows(tmp_path) if r["plugin_name"] == "empty-one"]
    assert phases == [("skip", "skipped")]  # no analyse, no generate: no call
    line = status_lines(doit)["empty-one"]
    assert " skipped " in line and "empty plugin: only a manifest" in line
