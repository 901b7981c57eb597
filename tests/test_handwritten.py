"""Hand-written SKILL.md files through `doit` end to end: kept by the offline provider, an input with the
never-worse gate under Vertex (the fake server), frontmatter keys carried over verbatim, hand edits seen."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import EVENT
from skillbuild.skill import skillmd
from test_vertex_build import VertexBuild
from vertex_server import fake_vertex_factory  # noqa: F401  (fixture)

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "handwritten"
PLAYGROUND = "plugins/playground/skills/playground/SKILL.md"
NOTES = "plugins/notes-helper/skills/notes-helper/SKILL.md"
CARRIED = ("allowed-tools: Read, Write, Bash(open:*)\n", "user-invocable: false\n",
           'argument-hint: "[topic or API name]"\n', "license: MIT\n")


@pytest.fixture
def market(tmp_path: Path) -> Path:
    """The hand-written fixture marketplace instead of examples/ (conftest's doit fixture builds on it)."""
    dest = tmp_path / "market"
    shutil.copytree(FIXTURE, dest)
    return dest


@pytest.fixture
def vx(fake_vertex_factory, doit, tmp_path) -> VertexBuild:  # noqa: F811
    return VertexBuild(fake_vertex_factory(retry_delay=0.05), doit, tmp_path)


def outcomes(proc) -> dict[tuple[str, str], str]:
    return {(m.group(1), m.group(2)): m.group(3) for m in EVENT.finditer(proc.stdout)}


def status_line(doit, key: str) -> str:
    proc = doit("status")
    assert proc.returncode == 0, proc.stderr
    return next(line for line in proc.stdout.splitlines() if line.startswith(key + " "))


def test_offline_keeps_hand_written_and_hand_edited_files(doit, market):
    before = {rel: (market / rel).read_bytes() for rel in (PLAYGROUND, NOTES)}
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert outcomes(run) == {("playground", "keep"): "kept", ("notes-helper", "keep"): "kept"}
    assert {rel: (market / rel).read_bytes() for rel in before} == before
    assert "kept: hand-written, the offline provider never replaces it" in status_line(doit, "playground")
    assert ("kept: hand-edited since skillbuild wrote it, the offline provider never replaces it"
            in status_line(doit, "notes-helper"))


def test_hand_edit_of_a_generated_file_is_never_overwritten(doit, market):
    target = market / NOTES
    target.unlink()
    assert doit().returncode == 0
    generated = target.read_text()
    assert not skillmd.is_hand_written(generated)
    assert "up to date" in status_line(doit, "notes-helper")
    target.write_text(generated.replace("## Commands", "A fix by the maintainer.\n\n## Commands"))
    edited = target.read_bytes()
    readme = market / "plugins/notes-helper/README.md"
    readme.write_text(readme.read_text() + "\nNotes older than a year move to notes/archive/.\n")
    run = doit()
    assert run.returncode == 0, run.stdout + run.stderr
    assert outcomes(run).get(("notes-helper", "keep")) == "kept"
    assert target.read_bytes() == edited
    assert "hand-edited since skillbuild wrote it" in status_line(doit, "notes-helper")


def test_vertex_keeps_the_original_and_its_frontmatter(vx, doit, market):
    original = (market / PLAYGROUND).read_text()
    run = vx.run()
    assert run.returncode == 0, run.stdout + run.stderr
    assert outcomes(run)[("playground", "generate")] == "success"
    written = (market / PLAYGROUND).read_text()
    assert skillmd.provenance(written)["generator"] == "skillbuild-vertex"
    assert not skillmd.is_hand_written(written)
    block, body = skillmd.split(written)
    for line in CARRIED:
        assert line in block.splitlines(keepends=True)
    assert skillmd.provenance(written)["author"] == "playground maintainers"
    assert "kept from the original: allowed-tools, user-invocable, argument-hint, license" in run.stdout
    # The fake answers with the hand-written body only when it found it in the request it received.
    assert skillmd.split(original)[1].strip() in body
    # A later rebuild (an input changed) still has the replaced original as input, gate and key source.
    readme = market / "plugins/playground/README.md"
    readme.write_text(readme.read_text() + "\nA fourth layout, compare-two, shows two previews side by side.\n")
    again = vx.run()
    assert again.returncode == 0, again.stdout + again.stderr
    assert outcomes(again)[("playground", "generate")] == "success"
    rebuilt = (market / PLAYGROUND).read_text()
    assert rebuilt != written and skillmd.split(original)[1].strip() in rebuilt
    assert all(line in skillmd.split(rebuilt)[0].splitlines(keepends=True) for line in CARRIED)
    notes = (market / NOTES).read_text()  # the hand-edited generated file: an input too, its fix kept
    assert skillmd.provenance(notes)["generator"] == "skillbuild-vertex"
    assert 'listed under "unassigned", never dropped' in notes
    # Back on the offline provider, a file made from a hand-written original is kept, not made thinner.
    offline = doit()
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert outcomes(offline)[("playground", "keep")] == "kept"
    assert (market / PLAYGROUND).read_text() == rebuilt
    assert ("made from a hand-written original, the offline provider never replaces it"
            in status_line(doit, "playground"))


def test_vertex_candidate_that_drops_the_original_is_rejected(vx, market, tmp_path):
    vx.faults("ignore_original")
    before = (market / PLAYGROUND).read_bytes()
    run = vx.run()
    assert run.returncode == 1
    assert (market / PLAYGROUND).read_bytes() == before
    assert "never-worse" in run.stdout
    rows = vx.audit("SELECT phase, error_class, error_message FROM enhancements WHERE plugin_name = 'playground' "
                    "AND status = 'failure'")
    assert {phase for phase, _, _ in rows} == {"generate", "repair"}
    assert all(cls == "gate" and "never-worse: the description drops" in msg for _, cls, msg in rows)
    assert "links of the hand-written original are gone" in rows[-1][2]
    assert list(tmp_path.glob("cache/*/rejected/playground.SKILL.md"))
