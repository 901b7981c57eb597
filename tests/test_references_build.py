"""End to end: reference files written with the SKILL.md, recorded, targets of the skill task, validated,
kept when edited by hand, removed (only after the plugin's backup) when no longer written, and gated."""
from __future__ import annotations

from pathlib import Path

from skillbuild.skill import references, skillmd
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (fixture)

DEPLOY = Path("plugins/devops/deploy-checker")
CHANGELOG = Path("plugins/extras/changelog-lint")


def skill(market: Path, rel: Path) -> Path:
    return market / rel / "skills" / rel.name / "SKILL.md"


def test_references_are_written_recorded_validated_and_targets(doit, market):
    first = doit()
    assert first.returncode == 0, first.stdout + first.stderr
    target = skill(market, DEPLOY)
    mark = skillmd.provenance(target.read_text())
    written = sorted(p.relative_to(target.parent).as_posix() for p in (target.parent / "references").glob("*.md"))
    assert written and sorted(references.recorded(mark)) == written
    for rel in written:
        assert f"]({rel})" in target.read_text()  # linked from the body, one level deep
    from skills_ref import validate

    assert validate(target.parent) == []
    info = doit("info", "skill:deploy-checker")
    assert all(rel in info.stdout for rel in written), info.stdout
    assert doit.executed(doit()) == set()


def test_a_hand_edited_reference_file_makes_the_skill_hand_written_and_kept(doit, market):
    assert doit().returncode == 0
    edited = skill(market, CHANGELOG).parent / "references" / "commands.md"
    edited.write_text(edited.read_text() + "\nA maintainer's note on ordering entries.\n")
    status = doit("status")
    line = next(line for line in status.stdout.splitlines() if line.startswith("changelog-lint"))
    assert " kept " in line and "hand-edited" in line, status.stdout
    assert doit().returncode == 0
    assert "A maintainer's note" in edited.read_text()


def test_a_reference_file_no_longer_written_is_removed_after_the_backup(doit, market, tmp_path):
    assert doit().returncode == 0
    folder = skill(market, DEPLOY).parent
    setup = folder / "references" / "setup.md"
    old = setup.read_text()
    readme = market / DEPLOY / "README.md"
    text = readme.read_text()
    for heading in ("## Installation", "## Troubleshooting"):  # the README no longer has setup sections
        start = text.index(heading)
        end = text.find("\n## ", start + 1)
        text = text[:start] + (text[end + 1:] if end >= 0 else "")
    readme.write_text(text)
    second = doit()
    assert second.returncode == 0, second.stdout + second.stderr
    assert not setup.exists()
    assert "references/setup.md" not in skill(market, DEPLOY).read_text()
    saved = [p for p in (tmp_path / "build").rglob("setup.md") if "backups" in p.parts]
    assert any(p.read_text() == old for p in saved), saved  # the removed file is in the plugin's backup


def test_vertex_answers_with_a_reference_file_that_is_gated_and_written(fake_vertex_factory, doit, market):  # noqa: F811
    server = fake_vertex_factory(retry_delay=0.05)
    env = {"SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server.url,
           "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_RPM": "100000",
           "SKILLBUILD_SAFETY_FACTOR": "1", "SKILLBUILD_REQUEST_TIMEOUT": "2",
           "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05"}
    run = doit(timeout=120, extra_env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    target = skill(market, DEPLOY)
    commands = target.parent / "references" / "commands.md"
    assert "## /check-deploy" in commands.read_text()
    assert references.recorded(skillmd.provenance(target.read_text())) == {
        "references/commands.md": references.file_hash(commands.read_text())}
    assert "<!-- file:" not in target.read_text()
    # A tighter reference cap: the same answer is now rejected by the reference gate, and nothing changes.
    commands.unlink()
    target.unlink()
    capped = doit(timeout=120, extra_env={**env, "SKILLBUILD_MAX_REFERENCE_BYTES": "10"})
    assert capped.returncode != 0
    assert "references/commands.md: size is" in capped.stdout + capped.stderr
    assert not target.exists() and not commands.exists()
