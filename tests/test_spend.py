"""The spending cap `max_cost_usd`: `doit plan` shows it, a run or batch estimated above it does not start, an
online run stops sending once its recorded spend reaches it."""
from __future__ import annotations

from pathlib import Path

from doit.exceptions import TaskFailed

from skillbuild import build
from skillbuild.calls import spend
from skillbuild.config import load_settings
from skillbuild.discovery import discover
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (fixture)


def vertex_env(server_url: str) -> dict[str, str]:
    return {"SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server_url,
            "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_RPM": "100000",
            "SKILLBUILD_SAFETY_FACTOR": "1", "SKILLBUILD_REQUEST_TIMEOUT": "5"}


def test_plan_shows_the_cap_and_a_run_over_it_does_not_start(fake_vertex_factory, doit, market):
    server = fake_vertex_factory()
    env = vertex_env(server.url)
    plan = doit("plan", "max_cost_usd=0.001", extra_env=env)
    assert plan.returncode == 0, plan.stderr
    assert "spending cap: $0.001 per run (max_cost_usd)" in plan.stdout and "the run would not start" in plan.stdout
    before = {p: p.read_bytes() for p in market.rglob("SKILL.md")}
    run = doit("max_cost_usd=0.001", extra_env=env)
    assert run.returncode == 1 and "exceeds max_cost_usd ($0.001); nothing was sent" in run.stderr, run.stderr
    assert server.stats()["requests_total"] == 0
    assert {p: p.read_bytes() for p in market.rglob("SKILL.md")} == before
    batch = doit("batch", "max_cost_usd=0.001", extra_env={**env, "SKILLBUILD_BATCH_BUCKET": "gs://unused"})
    assert batch.returncode == 1 and "the batch's estimated cost" in batch.stdout + batch.stderr
    assert (server.stats()["requests_total"], server.stats()["batch_jobs"]) == (0, 0)
    within = doit("plan", "max_cost_usd=5", extra_env=env)
    assert "is within it" in within.stdout


def test_an_online_run_stops_sending_once_its_recorded_spend_reaches_the_cap(tmp_path: Path, market: Path):
    env = {**vertex_env("http://127.0.0.1:9"), "SKILLBUILD_MARKETPLACE": str(market),
           "SKILLBUILD_CACHE_ROOT": str(tmp_path / "cache"), "SKILLBUILD_BUILD_ROOT": str(tmp_path / "build")}
    s = load_settings(cli={"max_cost_usd": "0.25"}, env=env)
    plugin = next(p for p in discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked,
                                      s.exclude).buildable())
    audit = build.open_audit(s)
    audit.record_api_calls("run-1", "other", "generate",
                           [{"time": "2026-01-01T00:00:00Z", "status": 200, "input_tokens": 500_000,
                             "output_tokens": 0}])
    assert spend.stop_reason(s, "run-1") is None  # $0.15 of $0.25
    audit.record_api_calls("run-1", "other", "generate",
                           [{"time": "2026-01-01T00:00:01Z", "status": 200, "input_tokens": 0,
                             "output_tokens": 40_000, "mode": "batch", "cost_usd": 0.1}])
    reason = spend.stop_reason(s, "run-1")
    assert reason and "recorded spend $0.2500 reached max_cost_usd ($0.25)" in reason
    assert spend.stop_reason(s, "run-2") is None  # per run
    # The unreachable endpoint proves nothing is sent: a send would fail with a connection error instead.
    for result in (build.analyse(s, plugin, "run-1"), build.build_skill(s, plugin, "run-1")):
        assert isinstance(result, TaskFailed) and "reached max_cost_usd" in str(result), result
