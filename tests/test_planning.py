"""`doit plan` and `doit quota` through the real doit, against the fake Vertex server on loopback."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path


from vertex_server import PROJECT, TOKEN, fake_vertex, fake_vertex_factory  # noqa: F401

BUILT = ("deploy-checker", "secret-sentry", "changelog-lint")  # the buildable plugins of examples/
BUILD_TASKS = {f"{kind}:{p}" for p in BUILT for kind in ("analyse", "skill")}


def vertex_env(server, **extra: str) -> dict[str, str]:
    """Settings for a vertex build on the fake server; the throttle must not slow the test down."""
    env = {"SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server.url,
           "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_RPM": "6000",
           "SKILLBUILD_SAFETY_FACTOR": "1", "SKILLBUILD_REQUEST_TIMEOUT": "5", "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05"}
    env.update(extra)
    return env


def tree_hashes(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: content hash and mtime, so even a rewrite with the same bytes shows."""
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def planned_calls(proc) -> int:
    match = re.search(r"^API calls: (\d+)", proc.stdout, re.M)
    assert match, proc.stdout + proc.stderr
    return int(match.group(1))


def plugin_calls(proc) -> dict[str, int]:
    """The per-plugin rows of the plan table: plugin -> calls."""
    rows = re.findall(r"^(\S+)\s+(\d+)\s+\d+\s+\d+\s+(?:changed|no SKILL|hand-written)", proc.stdout, re.M)
    return {name: int(n) for name, n in rows}


def test_plan_sends_nothing_writes_nothing_and_the_build_then_makes_exactly_the_planned_calls(
        doit, market, fake_vertex):
    env = vertex_env(fake_vertex)
    before, status_before = tree_hashes(market), doit.list_status()
    proc = doit("plan", extra_env=env)
    assert proc.returncode == 0, proc.stderr
    assert fake_vertex.stats()["requests_total"] == 0, "a plan must never reach the API"
    assert tree_hashes(market) == before, "a plan must not write to the marketplace"
    assert doit.list_status() == status_before, "a plan must leave doit's state of the build tasks alone"
    assert plugin_calls(proc) == {p: 2 for p in BUILT}
    assert planned_calls(proc) == 6 and "0 answer(s) already in the response cache" in proc.stdout
    assert "no SKILL.md yet" in proc.stdout and "cost (estimate): $" in proc.stdout
    assert "quota today: 0 of 1500 calls used, 1500 left (rpd 1500 / safety factor 1)" in proc.stdout
    assert re.search(r"ETA under the current limits: \d", proc.stdout)

    build = doit(extra_env=env)
    assert build.returncode == 0, build.stdout + build.stderr
    assert BUILD_TASKS <= doit.executed(build), "the plan must not have marked any build task done"
    assert fake_vertex.stats()["requests_total"] == 6


def test_plan_excludes_cached_answers_exactly(doit, market, prompts, fake_vertex):
    env = vertex_env(fake_vertex)
    partial = doit("analyse:deploy-checker", extra_env=env)
    assert partial.returncode == 0, partial.stderr
    assert fake_vertex.stats()["requests_total"] == 1

    proc = doit("plan", extra_env=env)
    assert plugin_calls(proc) == {"deploy-checker": 1, "secret-sentry": 2, "changelog-lint": 2}
    assert planned_calls(proc) == 5 and "(cached: analysis)" in proc.stdout
    assert doit(extra_env=env).returncode == 0
    assert fake_vertex.stats()["requests_total"] == 1 + 5, "the build must make exactly the planned calls"

    # A new generation prompt: every SKILL.md is stale, every analysis answer is cached.
    (prompts / "generation.md").write_text((prompts / "generation.md").read_text() + "\nBe concise.\n")
    proc = doit("plan", extra_env=env)
    assert plugin_calls(proc) == {p: 1 for p in BUILT} and "changed: generation-prompt" in proc.stdout
    assert doit(extra_env=env).returncode == 0
    assert fake_vertex.stats()["requests_total"] == 6 + 3

    proc = doit("plan", extra_env=env)
    assert "nothing to build" in proc.stdout and fake_vertex.stats()["requests_total"] == 9


def test_offline_plan_needs_no_calls(doit):
    proc = doit("plan")
    assert proc.returncode == 0, proc.stderr
    assert "API calls: 0 (the offline provider calls nothing); 3 plugin(s) to build" in proc.stdout
    assert set(plugin_calls(proc)) == set(BUILT)


def test_spent_budget_stops_the_run_with_the_reset_time_and_never_sends_more(doit, fake_vertex):
    env = vertex_env(fake_vertex, SKILLBUILD_RPD="3")
    proc = doit(extra_env=env)
    assert proc.returncode != 0
    assert fake_vertex.stats()["requests_total"] == 3, "not one call beyond the daily budget"
    out = proc.stdout + proc.stderr
    assert "Today's API budget is spent: 3 of 3 calls" in out and "The quota resets at " in out
    assert "SKILLBUILD_WAIT_FOR_RESET" in out

    again = doit(extra_env=env)
    assert again.returncode != 0 and fake_vertex.stats()["requests_total"] == 3
    plan = doit("plan", extra_env=env)
    assert "quota today: 3 of 3 calls used, 0 left" in plan.stdout and "must wait for quota resets" in plan.stdout

    quota = doit("quota", extra_env=env)
    assert quota.returncode == 0, quota.stderr
    assert "calls today: 3 sent; budget 3 (rpd 3 / safety factor 1); 0 left" in quota.stdout
    assert "The daily budget ran out" in quota.stdout


def test_quota_shows_todays_calls_tokens_429s_and_advice(doit, fake_vertex_factory):
    server = fake_vertex_factory(faults=["429:first=1"], retry_delay=0.2)
    env = vertex_env(server)
    assert doit(extra_env=env).returncode == 0
    stats = server.stats()
    assert stats["requests_total"] == 7 and stats["responses_429"] == 1  # 6 calls plus one retried 429

    proc = doit("quota", extra_env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "calls today: 7 sent; budget 1500 (rpd 1500 / safety factor 1); 1493 left" in out
    assert "429s today: 1" in out and "got 429" in out
    tokens = int(re.search(r"tokens today: ([\d,]+)", out).group(1).replace(",", ""))
    assert tokens == stats["input_tokens"] + stats["output_tokens"]
    assert f"this marketplace: 7 call(s), input {stats['input_tokens']:,}, output {stats['output_tokens']:,}" in out
    assert re.search(r"pace: rate factor 0\.\d\d, effective rpm", out), "a 429 cuts the rate"
    assert server.stats()["requests_total"] == 7, "`doit quota` sends nothing"


def test_a_bad_throttle_setting_is_named_by_plan_and_quota(doit, fake_vertex):
    env = vertex_env(fake_vertex, SKILLBUILD_QUOTA_TZ="Mars/Olympus_Mons")
    for task in ("plan", "quota"):
        proc = doit(task, extra_env=env)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert "quota_tz='Mars/Olympus_Mons' is not an IANA time zone" in proc.stdout + proc.stderr
    assert fake_vertex.stats()["requests_total"] == 0
