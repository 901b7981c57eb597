"""The worker count of a plain `doit`: from the throttle's pace and the recorded latency, the cap, the cores
offline, `-n` on the command line; and end to end, a plain remote `doit` with calls in flight together."""
from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path

import pytest

from skillbuild.calls import workers
from skillbuild.calls.workers import DEFAULT_LATENCY_S, HEADROOM, Workers, decide, explicit_count, for_pace
from skillbuild.config import load_settings
from skillbuild.store.audit import AuditDB
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (fixture)


def settings(tmp_path: Path, **values: str):
    env = {"SKILLBUILD_BUILD_ROOT": str(tmp_path / "build"), "SKILLBUILD_CACHE_ROOT": str(tmp_path / "cache"),
           "SKILLBUILD_MARKETPLACE": str(tmp_path), "SKILLBUILD_PROVIDER": "vertex", "GOOGLE_CLOUD_PROJECT": "p"}
    env.update({f"SKILLBUILD_{k.upper()}": v for k, v in values.items()})
    return load_settings(env=env, pyproject=tmp_path / "none.toml")


def test_with_history_the_recorded_latency_sets_the_count(tmp_path):
    s = settings(tmp_path, rpm="15")  # one send every 4 s
    audit = AuditDB(s.audit_db)
    attempts = [{"time": datetime.now().isoformat(), "status": 200, "latency_s": lat} for lat in (10.0, 14.0)]
    audit.record_api_calls("r1", "p", "analyse", attempts)
    audit.record_api_calls("r1", "p", "generate", [{"time": datetime.now().isoformat(), "status": 429,
                                                     "latency_s": 90.0}])  # a refused call is no latency
    audit.close()
    w = decide(s, argv=[])
    assert w.count == for_pace(4.0, 12.0, s.max_workers) == 6  # ceil(1.5 * 12 / 4) + 1
    assert w.par_type == "thread" and "recorded mean" in w.why
    assert w.doit_options() == {"num_process": 6, "par_type": "thread"}


def test_without_history_a_default_latency_stands_in(tmp_path):
    s = settings(tmp_path, rpm="15")
    assert workers.recorded_latency(s.audit_db) is None  # no audit DB yet
    w = decide(s, argv=[])
    assert w.count == -(-HEADROOM * DEFAULT_LATENCY_S // 4) + 1 == 13
    assert "default" in w.why
    # the default latency is simulated time: a time-compressed run scales it like the interval
    assert decide(settings(tmp_path, rpm="15", time_scale="60"), argv=[]).count == 13


def test_max_workers_caps_the_count(tmp_path):
    assert decide(settings(tmp_path, rpm="60"), argv=[]).count == 46  # ceil(1.5 * 30 / 1) + 1
    w = decide(settings(tmp_path, rpm="60", max_workers="20"), argv=[])
    assert w.count == 20 and "max_workers" in w.why
    assert decide(settings(tmp_path, rpm="100000"), argv=[]).count == 64  # the default cap


def test_the_seed_pacing_needs_few_workers(tmp_path):
    # 45-60 s after each call: the gap, not the quota, sets the pace
    assert decide(settings(tmp_path, pace_preset="seed"), argv=[]).count == 2


def test_offline_uses_the_cores_in_processes(tmp_path):
    s = settings(tmp_path, provider="offline")
    assert decide(s, argv=[], ncores=3) == Workers(3, "offline provider: one process per CPU core (3)", "process")
    assert decide(s, argv=[]).count == workers.cores()
    assert Workers(1, "one core", "process").doit_options()["num_process"] == 0  # doit's plain runner, no fork


@pytest.mark.parametrize("argv, count", [(["-n", "3"], 3), (["-n3"], 3), (["--process", "7"], 7),
                                         (["--process=5", "skill:x"], 5), (["plan", "rpm=60"], None),
                                         (["-n"], None), (["-v", "2"], None)])
def test_explicit_count_reads_doits_option(argv, count):
    assert explicit_count(argv) == count


@pytest.mark.parametrize("argv, plain", [
    ([], True), (["-n", "2"], True), (["run", "-v", "2"], True), (["provider=vertex", "rpm=60"], True),
    (["-f", "/m/dodo.py", "-d", "/m"], True), (["-r", "json"], True),
    (["-a"], False), (["-an2"], False), (["--always-execute"], False), (["skill:x"], False), (["-n", "2", "skill"], False),
    (["list", "--status"], False), (["status"], False), (["--no-such-option"], False),
])
def test_plain_run_is_doit_naming_no_task_without_a(argv, plain):
    """The runs that judge plugins as they load (tasks.fresh_at_load): doit's own parser reads the options."""
    assert workers.plain_run(argv) is plain


def test_an_explicit_n_wins(tmp_path):
    for s in (settings(tmp_path, rpm="60"), settings(tmp_path, provider="offline")):
        w = decide(s, argv=["-n", "4"], latency_s=100.0, ncores=8)
        assert (w.count, w.par_type) == (4, "process") and "command line" in w.why


def test_bad_pacing_falls_back_to_one_worker(tmp_path):
    w = decide(settings(tmp_path, quota_tz="Mars/Olympus_Mons"), argv=[])
    assert w.count == 1 and "quota_tz" in w.why


# --- end to end ------------------------------------------------------------------------------------------

def _max_in_flight(audit_db: Path) -> int:
    conn = sqlite3.connect(audit_db)
    rows = conn.execute("SELECT time, latency_seconds FROM api_calls WHERE status = 200").fetchall()
    conn.close()
    spans = [(datetime.fromisoformat(t).timestamp(), lat) for t, lat in rows]
    return max(sum(1 for s, lat in spans if s <= start < s + lat) for start, _ in spans)


def test_plain_doit_runs_several_workers_with_calls_in_flight_together(doit, fake_vertex_factory, tmp_path):  # noqa: F811
    server = fake_vertex_factory(latency="0.5-0.6", token=TOKEN)
    env = {"SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server.url,
           "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_RPM": "600",
           "SKILLBUILD_REQUEST_TIMEOUT": "5", "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05"}
    plan = doit("plan", extra_env=env, timeout=120)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "workers: 64 (" in plan.stdout and "max_workers" in plan.stdout  # 30 s default / 0.1 s: the cap
    result = doit(extra_env=env, timeout=120)  # no -n
    assert result.returncode in (0, 1), result.stdout + result.stderr
    s = load_settings(env={**doit.env, **env})
    assert _max_in_flight(s.audit_db) >= 2  # calls overlapped: one worker has one call in flight at most
    assert server.stats()["requests_total"] >= 6


def test_the_configured_quota_is_the_limit_and_the_seed_keeps_a_third():
    from types import SimpleNamespace

    from skillbuild.calls.throttle import limits_from_settings

    assert limits_from_settings(SimpleNamespace(pace_preset=None)).safety_factor == 1
    for preset in ("seed", "seed-initial"):
        assert limits_from_settings(SimpleNamespace(pace_preset=preset)).safety_factor == 3


def test_only_command_lines_that_may_build_get_workers():
    from skillbuild.calls.workers import builds

    assert builds([]) and builds(["provider=vertex"]) and builds(["skill:deploy-checker"])
    assert builds(["run", "analyse"]) and builds(["-n", "2"])
    assert not builds(["lint"]) and not builds(["routing", "min_quality=3"]) and not builds(["list", "--status"])
    assert not builds(["-r", "json", "status"]) and not builds(["plan", "mode=batch"])
