"""A skill's reference files: the answer format, provenance hashes, hand edits, their gates, size budgets."""
from __future__ import annotations

from pathlib import Path

from skillbuild.config import load_settings
from skillbuild.skill import references, skillmd, validation
from skillbuild.ui import status

SKILL = ('---\nname: "demo"\ndescription: "Checks demo files before a release. Commands: /check."\n---\n\n'
         "# Demo\n\nChecks demo files.\n\n## Commands\n\n- `/check`: check the files\n\n## Reference files\n\n"
         "- [references/commands.md](references/commands.md): read before running a command\n")
COMMANDS = "# Commands\n\n## /check\n\nChecks the files and reports each problem with its line.\n"


def check(text: str = SKILL, **opts) -> list[str]:
    base = dict(min_bytes=50, max_bytes=14000, max_body_lines=500, commands=["check"])
    return validation.check_skill(text, "demo", **{**base, **opts})


def reference(text: str, rel: str = "references/commands.md", **opts) -> list[str]:
    return validation.check_reference(rel, text, **{"max_bytes": 40000, "commands": ["check"], **opts})


def test_answer_splits_into_skill_and_reference_files_and_back():
    answer = references.join(SKILL, {"references/commands.md": COMMANDS})
    assert "<!-- file: references/commands.md -->" in answer
    assert references.split(answer) == (SKILL, {"references/commands.md": COMMANDS})
    assert references.split(SKILL) == (SKILL, {})  # an answer without markers is all SKILL.md


def test_provenance_records_each_file_and_a_hand_edit_makes_the_skill_hand_written(tmp_path: Path):
    files = {"references/commands.md": COMMANDS}
    text = skillmd.with_provenance(SKILL, {"generator": "skillbuild-offline",
                                           references.FIELD: references.field_value(files)})
    folder = tmp_path / "demo"
    (folder / "references").mkdir(parents=True)
    (folder / "SKILL.md").write_text(text)
    (folder / "references" / "commands.md").write_text(COMMANDS)
    mark = skillmd.provenance(text)
    assert references.recorded(mark) == {"references/commands.md": references.file_hash(COMMANDS)}
    assert status.target_paths(folder / "SKILL.md") == [folder / "SKILL.md", folder / "references" / "commands.md"]
    assert skillmd.read_hand_written(folder / "SKILL.md") is None
    (folder / "references" / "commands.md").write_text(COMMANDS + "\nA maintainer's note.\n")
    assert skillmd.read_hand_written(folder / "SKILL.md") == text
    (folder / "references" / "commands.md").unlink()  # removed by hand: hand-edited too
    assert skillmd.is_hand_written(text, folder)
    assert not skillmd.is_hand_written(text)  # without the folder only the SKILL.md is compared


def test_stale_names_the_files_the_previous_skill_wrote_and_the_new_one_does_not():
    mark = {references.FIELD: "commands.md=aaaa agents.md=bbbb"}
    assert references.stale(mark, {"references/commands.md": COMMANDS}) == ["references/agents.md"]
    assert references.stale(None, {}) == []


def test_a_link_to_a_reference_file_written_with_the_skill_resolves(tmp_path: Path):
    assert any(r.startswith("links:") for r in check(skill_dir=tmp_path))
    assert check(skill_dir=tmp_path, pending=["references/commands.md"]) == []


def test_reference_files_pass_the_same_gates():
    assert reference(COMMANDS) == []
    assert any("placeholder" in r for r in reference(COMMANDS + "\nTODO: write the rest.\n"))
    assert any("slash commands" in r for r in reference(COMMANDS + "\nThen run /publish.\n"))
    assert any("secrets" in r for r in reference(COMMANDS + "\nkey AKIAIOSFODNN7EXAMPLE\n"))
    assert any("empty sections" in r for r in reference(COMMANDS + "\n## Notes\n"))
    assert any("references/<name>.md" in r for r in reference(COMMANDS, rel="../outside.md"))
    assert any("references/<name>.md" in r for r in reference(COMMANDS, rel="references/deep/x.md"))
    assert any("size is" in r for r in reference(COMMANDS, max_bytes=20))
    assert all(r.startswith("references/commands.md: ") for r in reference(COMMANDS + "\nTODO\n"))


def test_a_reference_file_links_from_its_own_folder(tmp_path: Path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "run.sh").write_text("echo\n")
    linked = COMMANDS + "\nSee [the script](../scripts/run.sh).\n"
    assert reference(linked, skill_dir=tmp_path) == []
    assert any("links:" in r for r in reference(COMMANDS + "\nSee [x](scripts/run.sh).\n", skill_dir=tmp_path))


def test_body_budget_in_estimated_tokens():
    long = SKILL + "\n## Notes\n\n" + ("word " * 900) + "\n"
    assert validation.estimated_tokens("x" * 400) == 100
    assert check(long, max_body_tokens=5000) == []
    assert any("tokens" in r and "references/" in r for r in check(long, max_body_tokens=500))


def test_the_minimum_scales_with_what_the_plugin_holds_and_never_passes_half_the_maximum(tmp_path: Path):
    settings = load_settings({}, {}, tmp_path / "none.toml")
    low, high = settings.gate_bounds("vertex")
    assert (low, high) == (settings.min_bytes, settings.max_bytes)
    assert settings.gate_bounds("vertex", 10)[0] == settings.min_bytes + 10 * settings.per_item_min_bytes
    assert settings.gate_bounds("vertex", 10_000)[0] == settings.max_bytes // 2
    assert settings.gate_bounds("offline")[0] == settings.offline_min_bytes
    assert settings.min_bytes < settings.keep_min_bytes  # no AI output is padded to the keep rule's size
