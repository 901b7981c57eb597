"""Trigger routing with BM25: self-routing accuracy, confusable pairs, eval files, the listing budget."""
from __future__ import annotations

import pytest

from skillbuild.skill.routing import read_evals, report_lines, route, stem

DESCRIPTIONS = {
    "deploy-checker": "Check Kubernetes deployments for drift and failed rollouts before a release.",
    "secret-sentry": "Scan repositories for leaked credentials, API keys and tokens before a push.",
    "changelog-lint": "Lint CHANGELOG.md files against Keep a Changelog conventions.",
}


def test_phrases_that_land_on_another_plugin_are_counted_and_paired():
    triggers = {"deploy-checker": ["check my kubernetes rollout", "is the deployment drifting"],
                "secret-sentry": ["find leaked api keys", "lint my changelog"],
                "changelog-lint": ["lint the changelog file"]}
    report = route(DESCRIPTIONS, triggers)
    assert (report.queries.top1, report.queries.top3, report.queries.total) == (4, 4, 5)
    assert report.misrouted == {"secret-sentry": [("lint my changelog", "changelog-lint")]}
    assert report.confusable == [("changelog-lint", "secret-sentry", 1)]
    assert report.summary() == "routing: top-1 0.80 (4/5), top-3 0.80 (4/5)"


def test_eval_file_is_scored_apart_including_queries_no_plugin_should_take(tmp_path):
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "triggers.jsonl").write_text(
        '{"query": "scan for leaked tokens", "plugin": "secret-sentry"}\n'
        '{"query": "bake a sourdough loaf", "plugin": null}\n'
        '{"query": "validate the changelog", "plugin": "deploy-checker"}\n')
    evals = read_evals(tmp_path)
    report = route(DESCRIPTIONS, {}, evals=evals)
    assert report.evals_summary() == "evals: top-1 0.67 (2/3)"
    assert report.eval_misses == [("validate the changelog", "deploy-checker", "changelog-lint")]
    assert report_lines(report)[-1] == "evals: top-1 0.67 (2/3)"


def test_a_malformed_eval_line_names_the_file_and_line(tmp_path):
    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "triggers.jsonl").write_text('{"query": "ok", "plugin": null}\n{"plugin": 3}\n')
    with pytest.raises(ValueError, match=r"triggers.jsonl:2: expected"):
        read_evals(tmp_path)
    assert read_evals(tmp_path / "nowhere") is None


def test_listing_budget_and_descriptions_claude_code_would_cut():
    long = {**DESCRIPTIONS, "verbose": "word " * 400}
    report = route(long, {}, description_limit=1536, listing_budget=1000)
    assert report.over_limit == [("verbose", 2000)]
    assert report.listing_chars > 1000
    assert any("over the budget of 1,000" in line for line in report_lines(report))


def test_stem_meets_users_phrasings():
    assert stem(["deployments", "deploying", "policies", "scan"]) == ["deploy", "deploy", "policy", "scan"]
