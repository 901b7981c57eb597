"""Nothing is lost: SIGKILLed builds, two builds at once, and the run lock behind them.

The chaos test is bench/chaos.py's check (skillbuild/testing/chaos.py) in small (a 12-plugin synthetic
marketplace, 3 kills); the lock tests start two real doit processes against the fake Vertex server.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skillbuild.safety import runlock
from skillbuild.testing import chaos
from skillbuild.skill import skillmd
from tests.conftest import ROOT
from vertex_server import fake_vertex_factory  # noqa: F401  (pytest fixture)

TARGETS = {
    "deploy-checker": "plugins/devops/deploy-checker",
    "secret-sentry": "plugins/security/secret-sentry",
    "changelog-lint": "plugins/extras/changelog-lint",
}


# ----------------------------------------------------------------------------- chaos


def test_sigkilled_builds_lose_nothing_and_end_like_an_uninterrupted_run(tmp_path):
    source = chaos.synthetic_marketplace(tmp_path / "source", 12)
    report = chaos.chaos(source, tmp_path / "work", kills=3, latency="0.1-0.2", max_delay=1.0,
                         startup_seconds=1.5, probe=2, say=lambda _: None)
    assert report.kills == 3
    assert report.kills_with_events >= 1  # at least one kill hit a run that was mid-work
    assert report.partial == []
    assert report.temps_at_end == []
    assert report.integrity_failures == []
    led = report.ledger
    assert led.completed == 24 and led.distinct_keys == 24  # 12 plugins x (analyse, generate)
    assert led.rows_lost == [] and led.paid_twice == [] and led.unexpected_requests == 0
    assert led.requests_total <= 24 + led.resent_in_flight  # every extra request is one cut by a kill
    assert report.noop_calls == 0
    assert report.final_exit == report.reference_exit == 0
    assert report.differences == [] and report.files_compared > 12
    assert report.determinism_differ == [] and report.determinism_checked == 4
    assert report.ok


def test_partial_file_check_catches_a_torn_skill_md(tmp_path):
    """The chaos check itself can fail: a SKILL.md cut in half is reported, the old bytes are not."""
    box = chaos.Sandbox(tmp_path / "box", url="http://127.0.0.1:9")
    chaos.copy_marketplace(chaos.synthetic_marketplace(tmp_path / "source", 3), box)
    settings = box.settings()
    originals = {path: chaos.read_or_none(path) for path in chaos.targets(settings)}
    assert chaos.partial_files(settings, originals) == []
    stub = box.market / "plugins/tool-00/skills/tool-00/SKILL.md"
    stub.write_bytes(stub.read_bytes()[:20])
    new = box.market / "plugins/tool-01/skills/tool-01/SKILL.md"
    new.parent.mkdir(parents=True)
    new.write_text("---\nname: tool-01\n")
    found = chaos.partial_files(settings, originals)
    assert len(found) == 2 and any("tool-00" in f for f in found) and any("tool-01" in f for f in found)


# ----------------------------------------------------------------------------- two runs at once


def vertex_env(doit_env: dict, url: str) -> dict:
    return {**doit_env, "SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": "lock-test-token",
            "GOOGLE_CLOUD_PROJECT": "p", "SKILLBUILD_RPM": "100000", "SKILLBUILD_SAFETY_FACTOR": "1"}


def doit_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args]


def start(env: dict, *args: str, out: Path) -> subprocess.Popen:
    return subprocess.Popen(doit_cmd(*args), env=env, cwd=ROOT, stdout=open(out, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def lock_file(tmp_path: Path) -> Path:
    found = list((tmp_path / "cache").glob(f"*/{runlock.LOCK_NAME}"))
    return found[0] if found else tmp_path / "cache" / "none" / runlock.LOCK_NAME


def wait_until_holding(proc: subprocess.Popen, tmp_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the first run ended before it could be raced"
        if runlock.read_holder(lock_file(tmp_path)).pid == proc.pid:
            return
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def finish(proc: subprocess.Popen, timeout: float = 120) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def assert_built_and_sound(market: Path, tmp_path: Path) -> None:
    for name, rel in TARGETS.items():
        text = (market / rel / "skills" / name / "SKILL.md").read_text()
        assert skillmd.provenance(text)["generator"] == "skillbuild-vertex"
    db = next((tmp_path / "build").glob("*/audit.sqlite3"))
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_second_run_exits_75_naming_the_first_while_list_and_status_still_work(
        doit_env, market, tmp_path, fake_vertex_factory):
    server = fake_vertex_factory(latency="1.0-1.2")  # the first run must outlast three doit commands
    env = vertex_env(doit_env, server.url)
    first = start(env, "-n", "2", "provider=vertex", out=tmp_path / "first.out")
    try:
        wait_until_holding(first, tmp_path)
        began = time.monotonic()
        second = subprocess.run(doit_cmd("provider=vertex"), env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == runlock.EXIT_LOCKED, second.stdout + second.stderr
        assert f"another build of this marketplace is running (pid {first.pid}" in second.stderr
        assert "-n 2 provider=vertex`" in second.stderr and "SKILLBUILD_LOCK_WAIT" in second.stderr
        assert "Traceback" not in second.stderr and second.stdout == ""
        for args in (("list", "--status"), ("status",)):  # read-only commands never wait for the lock
            proc = subprocess.run(doit_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
        assert first.poll() is None, "the first run should still be going: the race was not tested"
        assert time.monotonic() - began < 30
    finally:
        code = finish(first)
    assert code == 0, (tmp_path / "first.out").read_text()
    assert "built 3" in (tmp_path / "first.out").read_text()
    assert_built_and_sound(market, tmp_path)
    db = next((tmp_path / "build").glob("*/audit.sqlite3"))
    with sqlite3.connect(db) as conn:  # the refused run left no trace: one run, ended
        assert conn.execute("SELECT COUNT(*), COUNT(ended) FROM runs").fetchone() == (1, 1)


def test_second_run_with_lock_wait_waits_then_finds_everything_fresh(doit_env, market, tmp_path,
                                                                     fake_vertex_factory):
    server = fake_vertex_factory(latency="0.3-0.4")
    env = vertex_env(doit_env, server.url)
    first = start(env, "-n", "2", "provider=vertex", out=tmp_path / "first.out")
    try:
        wait_until_holding(first, tmp_path)
        second = subprocess.run(doit_cmd("provider=vertex"), env={**env, "SKILLBUILD_LOCK_WAIT": "120"}, cwd=ROOT,
                                capture_output=True, text=True, timeout=150)
        first_code = first.poll()
    finally:
        finish(first)
    assert first_code == 0, "the waiting run must start only after the first one ended"
    assert second.returncode == 0, second.stdout + second.stderr
    assert "waiting up to 120 s for the other build of this marketplace" in second.stderr
    assert "built 0" in second.stdout and "calls 0" in second.stdout  # the first run's work was kept
    assert server.stats()["requests_total"] == 6  # 3 plugins x 2 phases, paid once
    assert_built_and_sound(market, tmp_path)


def test_lock_is_released_by_the_kernel_when_its_holder_is_sigkilled(tmp_path):
    path = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from skillbuild.safety.runlock import RunLock; "
         "lock = RunLock(sys.argv[1]).acquire('run-1', 'doit -n 2'); print('held', flush=True); time.sleep(120)",
         str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(runlock.RunLocked) as refused:
            runlock.RunLock(path).acquire("run-2", "doit")
        assert refused.value.holder.pid == holder.pid and refused.value.holder.run_id == "run-1"
        assert f"pid {holder.pid}" in str(refused.value) and "doit -n 2" in str(refused.value)
    finally:
        holder.kill()
        holder.wait()
    lock = runlock.RunLock(path).acquire("run-3", "doit")  # no stale lock after a SIGKILL
    assert json.loads(path.read_text())["run_id"] == "run-3"
    lock.release()


def test_wait_gives_up_after_lock_wait_seconds(tmp_path):
    path = tmp_path / "run.lock"
    held = runlock.RunLock(path).acquire("run-1", "doit")
    seen = []
    began = time.monotonic()
    with pytest.raises(runlock.RunLocked, match=r"after waiting 1 s"):
        # flock locks belong to the open file: a second open in this process is refused like another run
        runlock.RunLock(path).acquire("run-2", "doit", wait_seconds=1.0, on_wait=seen.append)
    assert 1.0 <= time.monotonic() - began < 5
    assert [h.run_id for h in seen] == ["run-1"]
    held.release()


def test_run_start_removes_temp_files_a_killed_run_left(doit, market, tmp_path):
    """A SIGKILL between an atomic write's temp file and its rename leaves `.skillbuild-*.tmp`; the next run
    (holding the lock, so nobody else is writing) removes it."""
    stray = market / "plugins/devops/deploy-checker/skills/deploy-checker/.skillbuild-k1ll3d.tmp"
    stray.parent.mkdir(parents=True)
    stray.write_text("---\nname: deploy-checker\ndescription: half a fi")
    cache_stray = tmp_path / "cache" / "x" / "responses" / "ab" / ".ab12cd34ef56.k1ll3d.tmp"
    run = doit("list")  # creates nothing to sweep; the cache folder's name comes from settings
    assert run.returncode == 0
    cache_dir = next((tmp_path / "cache").iterdir())
    cache_stray = cache_dir / "responses" / "ab" / cache_stray.name
    cache_stray.parent.mkdir(parents=True)
    cache_stray.write_text("{")
    status = doit("status")  # a read-only run does not sweep (it does not hold the lock)
    assert status.returncode == 0 and stray.exists()
    build = doit()
    assert build.returncode == 0, build.stdout + build.stderr
    assert "removed 2 temp file(s) left by an interrupted run" in build.stdout
    assert not stray.exists() and not cache_stray.exists()
    assert list(market.rglob(".skillbuild-*.tmp")) == []
    log = next((tmp_path / "build").glob("*/logs/*.log")).read_text()
    assert "removed 2 temp file(s)" in log


# ----------------------------------------------------------------------------- kills around the build


def test_kills_during_backup_restore_and_an_offsite_upload_leave_nothing_behind(tmp_path):
    import re

    source = chaos.synthetic_marketplace(tmp_path / "source", 9)
    report = chaos.chaos(source, tmp_path / "work", kills=1, latency="0.1-0.2", max_delay=1.0, startup_seconds=1.5,
                         probe=1, backup_kills=2, restore_kills=2, sqld_upload=True, say=lambda _: None)
    ops = report.ops
    assert ops.backup_kills == 2 and (ops.backup_exit, ops.verify_exit) == (0, 0)
    assert ops.sqld_killed_exit == 1  # the off-site copy failed when sqld died
    assert (ops.resume_exit, ops.resume_verify_exit) == (0, 0)
    uploaded, there = map(int, re.search(r"\((\d+) uploaded, (\d+) already there\)", ops.resume_line).groups())
    assert there > 0 and uploaded > 0  # resumed: the chunks committed before the kill were not sent again
    assert ops.restore_kills == 2 and ops.restore_plugin == "tool-00"
    assert ops.half_restored_after_rerun == [] and set(ops.restore_exits) == {0}
    assert ops.leftovers == [] and ops.journal_entries == 0
    assert report.differences == [] and report.partial == [] and report.ledger.paid_twice == []
    assert ops.billed == ops.ledger.requests_total > 0 and ops.ledger.rows_lost == [] == ops.ledger.paid_twice


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_full_cache_disk_run_is_measured_and_unmounted(tmp_path):
    from skillbuild.testing import chaos_ops

    ops = chaos_ops.OpsReport()
    chaos_ops.tmpfs_cache(tmp_path, 12, "0.05-0.1", 3, tmp_path / "ops.log", ops)
    t = ops.tmpfs
    assert t["ran"] and t["billed"] > 0 and t["rerun_exit"] == 0
    assert not os.path.ismount(tmp_path / "tmpfs" / "cache")


def test_operation_checks_can_fail(tmp_path):
    """The leftover and billing checks report what they find."""
    from skillbuild.testing import chaos_ops

    (tmp_path / "p").mkdir()
    for name in (".tool.partial-12", ".skillbuild-restore-tool-34", ".m.restore-56", "kept.md"):
        (tmp_path / "p" / name).mkdir()
    assert [Path(p).name for p in chaos_ops.leftovers(tmp_path)] == [
        ".m.restore-56", ".skillbuild-restore-tool-34", ".tool.partial-12"]
    ops = chaos_ops.OpsReport(billed=10, api_calls_rows=7, open_runs=1, half_restored_after_rerun=["after kill 1"])
    problems = ops.problems()
    assert "3 billed call(s) missing from api_calls" in problems and "1 open run(s)" in problems
    assert "half-restored after the next run: after kill 1" in problems


def test_an_answer_the_gates_refused_is_not_a_lost_row(tmp_path):
    from skillbuild.store.audit import AuditDB

    db = AuditDB(tmp_path / "audit.sqlite3")
    db.record("r1", "alpha", None, "generate", "failure", error_class="gate", error_message="placeholder")
    db.record("r1", "beta", None, "generate", "failure", error_class="ProviderError", error_message="503")
    db.record("r1", "gamma", None, "analyse", "success")
    assert db.answered_steps() == {("alpha", "generate"), ("gamma", "analyse")}
    assert chaos._success_rows(tmp_path / "audit.sqlite3") == {("alpha", "generate"), ("gamma", "analyse")}
