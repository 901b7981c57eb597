"""End to end: the real doit on a temp copy of examples/ with the offline provider."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from skillbuild.skill import skillmd

BUILT = {"deploy-checker", "secret-sentry", "changelog-lint"}


def skill_file(market: Path, rel: str, name: str) -> Path:
    return market / rel / "skills" / name / "SKILL.md"


TARGETS = {
    "deploy-checker": "plugins/devops/deploy-checker",
    "secret-sentry": "plugins/security/secret-sentry",
    "changelog-lint": "plugins/extras/changelog-lint",
}


def test_first_run_builds_all_then_nothing(doit, market):
    first = doit()
    assert first.returncode == 0, first.stdout + first.stderr
    once = {"skill:release-notes", "skill:remote-formatter"}  # keep and skip: recorded once
    assert doit.executed(first) == {f"analyse:{p}" for p in BUILT} | {f"skill:{p}" for p in BUILT} | once
    assert "built 3, kept 1, skipped 1, failed 0" in first.stdout
    for name, rel in TARGETS.items():
        text = skill_file(market, rel, name).read_text()
        assert skillmd.provenance(text)["generator"] == "skillbuild-offline"
    second = doit()
    assert second.returncode == 0
    assert doit.executed(second) == set()


def test_touch_without_change_runs_nothing(doit, market):
    assert doit().returncode == 0
    later = time.time() + 5
    for path in market.rglob("*"):
        if path.is_file():
            os.utime(path, (later, later))
    assert doit.executed(doit()) == set()


def test_editing_one_command_rebuilds_only_that_plugin(doit, market):
    assert doit().returncode == 0
    command = market / "plugins/devops/deploy-checker/commands/check-deploy.md"
    command.write_text(command.read_text() + "\n6. Confirm the release notes mention every migration.\n")
    run = doit()
    assert run.returncode == 0
    assert doit.executed(run) == {"analyse:deploy-checker", "skill:deploy-checker"}


def test_editing_generation_prompt_reruns_generation_only(doit, prompts):
    assert doit().returncode == 0
    prompt = prompts / "generation.md"
    prompt.write_text(prompt.read_text() + "\nPrefer short sentences.\n")
    run = doit()
    assert run.returncode == 0
    assert doit.executed(run) == {f"skill:{p}" for p in BUILT}


def test_list_status_shows_fresh_and_stale(doit, market):
    before = doit.list_status()
    assert before["skill:deploy-checker"] == "R" and before["analyse:deploy-checker"] == "R"
    assert "analyse:release-notes" not in before  # hand-written and kept: never analysed
    assert doit().returncode == 0
    after = doit.list_status()
    assert all(after[f"{phase}:{p}"] == "U" for p in BUILT for phase in ("analyse", "skill"))
    assert after["skill:release-notes"] == "U" and after["skill:remote-formatter"] == "U"
    readme = market / "plugins/extras/changelog-lint/README.md"
    readme.write_text(readme.read_text() + "\nIt also checks link references at the bottom.\n")
    stale = doit.list_status()
    assert stale["analyse:changelog-lint"] == "R" and stale["skill:changelog-lint"] == "R"
    assert stale["skill:deploy-checker"] == "U"


def test_generated_files_pass_agentskills_validate(doit, market):
    assert doit().returncode == 0
    agentskills = Path(sys.executable).parent / "agentskills"
    for name, rel in TARGETS.items():
        proc = subprocess.run([str(agentskills), "validate", str(skill_file(market, rel, name).parent)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "Valid skill" in proc.stdout


def test_kept_and_skipped_are_reported_and_untouched(doit, market):
    kept = market / "plugins/docs/release-notes/skills/release-notes/SKILL.md"
    before = kept.read_bytes()
    assert doit().returncode == 0
    assert kept.read_bytes() == before
    status = doit("status")
    assert status.returncode == 0
    lines = {line.split()[0]: line for line in status.stdout.splitlines() if line.strip()}
    assert " kept " in lines["release-notes"]
    assert " skipped " in lines["remote-formatter"] and "external source (github" in lines["remote-formatter"]
    assert "not in the catalog" in lines["changelog-lint"]
    assert "skills/skill-adapter/SKILL.md" in lines["secret-sentry"]  # older skill listed, left in place
    assert (market / "plugins/security/secret-sentry/skills/skill-adapter/SKILL.md").exists()


def test_secret_file_never_reaches_outputs(doit, market, tmp_path):
    assert doit().returncode == 0
    token = "example-not-a-real-token"
    assert token in (market / "plugins/security/secret-sentry/.env.example").read_text()
    for folder in (market, tmp_path / "cache", tmp_path / "build"):
        for path in folder.rglob("*"):
            if path.is_file() and path.name != ".env.example":
                assert token.encode() not in path.read_bytes(), path


def test_malformed_plugin_json_fails_that_plugin_only(doit, market):
    manifest = market / "plugins/devops/deploy-checker/.claude-plugin/plugin.json"
    manifest.write_text('{\n  "name": "deploy-checker",\n  "version": 1.2.0\n}\n')
    run = doit()
    assert run.returncode == 1
    out = run.stdout + run.stderr
    assert f"{manifest}: invalid JSON at line 3, column" in out
    assert {"skill:secret-sentry", "skill:changelog-lint"} <= doit.executed(run)
    failure = [line for line in run.stdout.splitlines() if " deploy-checker " in line and " failure " in line]
    assert failure and "invalid JSON at line 3" in failure[0] and "failed 1" in run.stdout
    assert not (market / "plugins/devops/deploy-checker/skills/deploy-checker/SKILL.md").exists()


def test_source_outside_marketplace_is_rejected(doit, market, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(market / "plugins/extras/changelog-lint", outside)
    catalog = market / ".claude-plugin/marketplace.json"
    catalog.write_text(catalog.read_text().replace('"./plugins/docs/release-notes"', '"../elsewhere"'))
    run = doit()
    assert run.returncode == 1
    assert "catalog entry 'release-notes': source '../elsewhere' resolves outside the marketplace root" in run.stdout
    assert not (outside / "skills").exists()


def test_malformed_catalog_stops_with_file_line_column(doit, market):
    catalog = market / ".claude-plugin/marketplace.json"
    catalog.write_text(catalog.read_text().replace('"plugins": [', '"plugins": [,', 1))
    run = doit()
    assert run.returncode == 3
    assert f"{catalog}: invalid JSON at line" in run.stderr and "column" in run.stderr
    assert "Traceback" not in run.stderr


def test_gate_failure_keeps_candidate_and_old_file(doit, market, tmp_path):
    target = market / "plugins/devops/deploy-checker/skills/deploy-checker/SKILL.md"
    assert doit().returncode == 0
    original = target.read_bytes()
    command = market / "plugins/devops/deploy-checker/commands/check-deploy.md"
    command.write_text(command.read_text() + "\nAlso check DNS records.\n")
    run = doit(extra_env={"SKILLBUILD_MAX_BODY_LINES": "5"})
    assert run.returncode == 1
    assert "rejected by the gates" in run.stdout and "body has" in run.stdout
    assert target.read_bytes() == original
    rejected = list((tmp_path / "cache").rglob("rejected/deploy-checker.SKILL.md"))
    assert len(rejected) == 1 and rejected[0].with_name("deploy-checker.SKILL.md.reasons.txt").exists()


def test_replaced_file_is_backed_up_first(doit, market, tmp_path):
    target = market / "plugins/devops/deploy-checker/skills/deploy-checker/SKILL.md"
    target.parent.mkdir(parents=True)
    # A stale file of ours (a hand-written one is never replaced by the offline provider).
    target.write_text("---\nname: deploy-checker\ndescription: short stub\nmetadata:\n  generator: \"skillbuild-offline\"\n"
                      "  source-hash: \"old\"\n---\n\nStub.\n")
    original = target.read_bytes()
    assert doit().returncode == 0
    assert target.read_bytes() != original
    backups = [p for p in (tmp_path / "build").rglob("SKILL.md") if "backups" in p.parts]
    assert any(p.read_bytes() == original for p in backups)


def test_bad_setting_is_named(doit):
    run = doit("list", extra_env={"SKILLBUILD_MAX_BYTES": "lots"})
    assert run.returncode == 3
    assert "setting 'max_bytes' = 'lots' is invalid" in run.stderr
    unknown = doit("list", "colour=blue")
    assert unknown.returncode == 3 and "unknown setting 'colour'" in unknown.stderr


def test_empty_marketplace_builds_nothing_and_says_so(doit, market):
    catalog = market / ".claude-plugin/marketplace.json"
    catalog.write_text('{"name": "empty", "plugins": []}')
    shutil.rmtree(market / "plugins")
    run = doit()
    assert run.returncode == 0
    assert "total: no plugins found" in run.stdout
    assert doit.executed(run) == {"status"}
    assert "built 0" not in run.stdout  # no plugin run, no run summary


def test_examples_copy_leaves_out_what_a_build_wrote(doit, market, tmp_path):
    """The README's first command writes SKILL.md files into examples/; tests copy it without them."""
    from conftest import _generated_skills

    assert doit().returncode == 0
    written = [p for p in market.rglob("SKILL.md") if skillmd.provenance(p.read_text(encoding="utf-8"))]
    assert written, "the build wrote no SKILL.md to compare with"
    copy = tmp_path / "copy"
    shutil.copytree(market, copy, ignore=_generated_skills)
    assert not [p for p in copy.rglob("SKILL.md") if skillmd.provenance(p.read_text(encoding="utf-8"))]
    assert len(list(copy.rglob("SKILL.md"))) == len(list(market.rglob("SKILL.md"))) - len(written)
