"""`doit lint` and `doit routing` through the real doit: exit codes, summary lines, the eval file, status, report."""
from __future__ import annotations

import json
import re

import pytest

from vertex_server import fake_vertex_factory  # noqa: F401  (fixture)

LINT = re.compile(r"^quality: mean (\d+\.\d), min (\d+), below threshold (\d+) of (\d+)$", re.M)
ROUTING = re.compile(r"^routing: top-1 (\d\.\d\d) \((\d+)/(\d+)\), top-3 (\d\.\d\d) \((\d+)/(\d+)\)$", re.M)
EVALS = re.compile(r"^evals: top-1 (\d\.\d\d) \((\d+)/(\d+)\)$", re.M)


@pytest.fixture
def built(doit):
    proc = doit()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return doit


def test_lint_scores_every_skill_and_fails_below_min_quality(built):
    proc = built("lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = LINT.findall(proc.stdout)
    assert len(summary) == 1 and proc.stdout.rstrip().endswith(LINT.search(proc.stdout).group(0))
    mean, low, below, total = summary[0]
    assert (below, total) == ("0", "4")  # the hand-written release-notes file is scored too
    for key in ("deploy-checker", "secret-sentry", "release-notes", "changelog-lint"):
        assert re.search(rf"^{key}: \d+", proc.stdout, re.M), key
    strict = built("lint", "min_quality=100")
    assert strict.returncode == 1
    scores = [int(s) for s in re.findall(r"^[a-z-]+: (\d+)", strict.stdout, re.M)]
    below = sum(score < 100 for score in scores)
    assert len(scores) == 4 and below >= 1
    assert LINT.search(strict.stdout).group(3, 4) == (str(below), "4")
    assert "score below min_quality 100" in strict.stdout + strict.stderr


def test_lint_caps_a_file_with_a_broken_link(built, market):
    target = market / "plugins/devops/deploy-checker/skills/deploy-checker/SKILL.md"
    target.write_text(target.read_text() + "\nSee [the runbook](docs/runbook.md).\n")
    proc = built("lint", "min_quality=61")
    assert proc.returncode == 1
    line = next(x for x in proc.stdout.splitlines() if x.startswith("deploy-checker: "))
    assert re.match(r"deploy-checker: (\d+) \(at most 60: a broken link\)", line)
    assert int(line.split()[1]) <= 60 and "links: broken: docs/runbook.md" in line


def test_lint_before_any_build_scores_the_hand_written_file_only(doit, market):
    proc = doit("lint")
    assert proc.returncode == 0 and LINT.search(proc.stdout).group(4) == "1"
    assert re.search(r"^release-notes: \d+", proc.stdout, re.M)
    (market / "plugins/docs/release-notes/skills/release-notes/SKILL.md").unlink()
    proc = doit("lint")
    assert proc.returncode == 0 and proc.stdout.rstrip().endswith("quality: mean -, min -, below threshold 0 of 0")


def test_routing_with_nothing_to_route_to(doit, market):
    (market / "plugins/docs/release-notes/skills/release-notes/SKILL.md").unlink()
    (market / "evals").mkdir()
    (market / "evals" / "triggers.jsonl").write_text('{"query": "bake bread", "plugin": null}\n')
    proc = doit("routing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.rstrip().splitlines()[-2:] == ["routing: top-1 0.00 (0/0), top-3 0.00 (0/0)",
                                                      "evals: top-1 1.00 (1/1)"]


def test_status_shows_the_score(built):
    proc = built("status")
    assert proc.returncode == 0
    header = next(x for x in proc.stdout.splitlines() if x.startswith("plugin "))
    assert header.split()[:4] == ["plugin", "state", "bytes", "score"]
    row = next(x.split() for x in proc.stdout.splitlines() if x.startswith("deploy-checker "))
    assert row[1] == "fresh" and 0 <= int(row[3]) <= 100
    skipped = next(x.split() for x in proc.stdout.splitlines() if x.startswith("remote-formatter "))
    assert skipped[3] == "-"


def test_routing_summary_and_the_eval_file(built, market):
    proc = built("routing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(ROUTING.findall(proc.stdout)) == 1 and not EVALS.search(proc.stdout)
    top1, a, n, top3, b, n3 = ROUTING.search(proc.stdout).groups()
    assert n == n3 and int(n) > 0 and int(a) <= int(b) <= int(n)
    assert "no trigger phrases (no analysis): release-notes" in proc.stdout  # kept: never analysed
    assert "within the budget of 8,000" in proc.stdout
    evals = market / "evals" / "triggers.jsonl"
    evals.parent.mkdir()
    evals.write_text('{"query": "check a kubernetes deployment before release", "plugin": "deploy-checker"}\n'
                     '{"query": "find leaked api keys and secrets", "plugin": "secret-sentry"}\n'
                     '{"query": "bake a sourdough loaf", "plugin": null}\n')
    proc = built("routing")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    assert ROUTING.match(lines[-2]) and EVALS.match(lines[-1])
    assert EVALS.match(lines[-1]).group(3) == "3"
    strict = built("routing", "min_eval_top1=1", "listing_budget_chars=100", "description_limit=50")
    hits = int(EVALS.search(strict.stdout).group(2))
    assert strict.returncode == (0 if hits == 3 else 1)
    assert "over the budget of 100" in strict.stdout and "is cut by Claude Code" in strict.stdout


def test_routing_fails_on_a_wrong_eval_label_and_a_malformed_file(built, market):
    evals = market / "evals" / "triggers.jsonl"
    evals.parent.mkdir()
    evals.write_text('{"query": "scan the repository for leaked secrets", "plugin": "changelog-lint"}\n')
    assert built("routing").returncode == 0  # min_eval_top1 defaults to 0: reported, never failed
    proc = built("routing", "min_eval_top1=0.5")
    assert proc.returncode == 1 and "evals: top-1 0.00 (0/1)" in proc.stdout
    assert "below min_eval_top1 0.5" in proc.stdout + proc.stderr
    evals.write_text("not json\n")
    proc = built("routing")
    assert proc.returncode == 1 and "triggers.jsonl:1: not JSON" in proc.stdout + proc.stderr


def test_report_shows_quality_and_confusable_pairs(built, tmp_path):
    routed = built("routing")
    assert routed.returncode == 0
    saved = json.loads(next((tmp_path / "build").glob("*/routing.json")).read_text())
    assert saved["summary"] == ROUTING.search(routed.stdout).group(0)
    proc = built("report")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    page = next((tmp_path / "build").glob("*/report.html")).read_text()
    assert 'id="chart-quality"' in page and 'id="quality-count">4<' in page
    counts = [int(c) for c in re.findall(r'<tr data-bin="[^"]+" data-count="(\d+)"><td>[^<]+ points', page)]
    assert sum(counts) == 4
    assert 'id="confusable"' in page and saved["summary"] in page


def test_lint_and_routing_read_vertex_output_the_same(fake_vertex_factory, doit, market, tmp_path):  # noqa: F811
    from test_vertex_build import BUILT, VertexBuild, target

    from skillbuild.skill import skillmd

    vx = VertexBuild(fake_vertex_factory(retry_delay=0.05), doit, tmp_path)
    assert vx.run().returncode == 0
    assert all(skillmd.provenance(target(market, n).read_text())["generator"] == "skillbuild-vertex" for n in BUILT)
    lint = vx.run("lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert LINT.search(lint.stdout).group(3, 4) == ("0", "4")
    routed = vx.run("routing")
    assert routed.returncode == 0 and len(ROUTING.findall(routed.stdout)) == 1
    assert int(ROUTING.search(routed.stdout).group(3)) > 0  # the fake analyses' trigger phrases were routed
