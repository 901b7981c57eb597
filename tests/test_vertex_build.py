"""End to end with the real SDK: `doit provider=vertex` on a temp copy of examples/ against the fake server.

What each run pays is read from the server's own counters; outcomes from doit's output, the files and the
audit DB. Test-sized settings: 2 s request timeout, 0.05 s backoff, a throttle that never slows a test.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import EVENT
from skillbuild.skill import skillmd
from skillbuild.calls.response_cache import ResponseCache
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
BUILT = {"deploy-checker": "plugins/devops/deploy-checker", "secret-sentry": "plugins/security/secret-sentry",
         "changelog-lint": "plugins/extras/changelog-lint"}
PHASES = 2 * len(BUILT)  # one analysis and one generation per built plugin
ONE = "deploy-checker"


def target(market: Path, name: str = ONE) -> Path:
    return market / BUILT[name] / "skills" / name / "SKILL.md"


class VertexBuild:
    """The fake server plus `doit provider=vertex` pointed at it."""

    def __init__(self, server, doit, tmp_path: Path):
        self.server, self.doit, self.tmp = server, doit, tmp_path
        self.env = {
            "SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server.url,
            "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT,
            "SKILLBUILD_RPM": "100000", "SKILLBUILD_SAFETY_FACTOR": "1", "SKILLBUILD_REQUEST_TIMEOUT": "2",
            "SKILLBUILD_RETRY_MAX_SECONDS": "15", "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05",
        }

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        return self.doit(*args, timeout=120, extra_env={**self.env, **env})

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        """doit in its own process group, output to `log` (read while it runs)."""
        cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args]
        with log.open("w") as out:
            return subprocess.Popen(cmd, env={**self.doit.env, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=ROOT, start_new_session=True)

    def requests(self) -> int:
        return self.server.stats()["requests_total"]

    def faults(self, *faults: str) -> None:
        """New scripted faults; the counters start from zero."""
        self.server.reset(list(faults))

    def audit(self, sql: str, params: tuple = ()) -> list[tuple]:
        (db,) = (self.tmp / "build").glob("*/audit.sqlite3")
        with sqlite3.connect(db) as conn:
            return conn.execute(sql, params).fetchall()

    def last_run(self) -> str:
        return self.audit("SELECT run_id FROM enhancements ORDER BY id DESC LIMIT 1")[0][0]

    def responses_cached(self) -> int:
        (folder,) = (self.tmp / "cache").glob("*/responses")
        return ResponseCache(folder).count()


@pytest.fixture
def vx(fake_vertex_factory, doit, tmp_path) -> VertexBuild:  # noqa: F811
    return VertexBuild(fake_vertex_factory(retry_delay=0.05, hang_seconds=8.0), doit, tmp_path)


def wait_for(log: Path, predicate, proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """The log text once `predicate(text)` holds; fails if doit ends or time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text()
        if predicate(text):
            return text
        assert proc.poll() is None, f"doit ended before the awaited point:\n{text}"
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting in:\n{log.read_text()}")


def finished(text: str) -> set[str]:
    """Per-plugin tasks a run's output reports as done (success, kept or skipped events)."""
    return {f"{'analyse' if phase == 'analyse' else 'skill'}:{plugin}"
            for plugin, phase, outcome in EVENT.findall(text) if outcome in ("success", "kept", "skipped")}


# ----------------------------------------------------------------------------- what each run pays


def test_two_calls_per_plugin_then_none_then_one_per_plugin_after_a_prompt_edit(vx, market, prompts):
    first = vx.run()
    assert first.returncode == 0, first.stdout + first.stderr
    stats = vx.server.stats()
    assert stats["requests_total"] == PHASES and stats["by_phase"] == {"analyse": 3, "generate": 3}
    per_plugin = vx.audit("SELECT plugin_name, phase, COUNT(*) FROM api_calls GROUP BY plugin_name, phase")
    assert sorted(per_plugin) == sorted((p, ph, 1) for p in BUILT for ph in ("analyse", "generate"))
    for name in BUILT:
        meta = skillmd.provenance(target(market, name).read_text())
        assert meta["generator"] == "skillbuild-vertex" and meta["model"] == "gemini-2.5-flash"
    assert f"calls {PHASES}," in first.stdout

    again = vx.run()
    assert again.returncode == 0 and vx.doit.executed(again) == set()
    assert vx.requests() == PHASES, "a no-change re-run makes no call"

    prompt = prompts / "generation.md"
    prompt.write_text(prompt.read_text() + "\nPrefer short sentences.\n")
    edited = vx.run()
    assert edited.returncode == 0, edited.stdout
    assert vx.doit.executed(edited) == {f"skill:{p}" for p in BUILT}
    assert vx.server.stats()["by_phase"] == {"analyse": 3, "generate": 6}, "one generation call per plugin"


# ----------------------------------------------------------------------------- scripted faults


@pytest.mark.parametrize("status", ["429", "500", "503"])
def test_transient_errors_are_retried_and_the_build_succeeds(vx, market, status):
    vx.faults(f"{status}:first=2")
    run = vx.run(f"skill:{ONE}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert target(market).is_file() and f"{ONE} analyse success" in run.stdout
    assert vx.requests() == 4  # two refused analysis attempts, the third succeeds, one generation
    rows = vx.audit("SELECT status, retried FROM api_calls WHERE phase = 'analyse' ORDER BY id")
    assert rows == [(int(status), 1), (int(status), 1), (200, 0)]


def test_a_hang_times_out_and_is_retried(vx, market):
    vx.faults("hang:first=1")
    run = vx.run(f"skill:{ONE}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert target(market).is_file()
    (hung, ok) = vx.audit("SELECT status, retried, error, latency_seconds FROM api_calls WHERE phase = 'analyse' "
                          "ORDER BY id")
    assert hung[0] is None and hung[1] == 1 and "timeout" in hung[2].lower() and 1.5 < hung[3] < 6
    assert ok[:2] == (200, 0)


def test_truncated_json_is_retried_once_then_the_plugin_fails_cleanly(vx, market):
    vx.faults("truncated_json")
    run = vx.run(f"skill:{ONE}")
    assert run.returncode != 0, run.stdout + run.stderr  # 2: doit counts skill:<p>'s unmet dependency as an error
    assert vx.server.stats()["by_phase"] == {"analyse": 2}, "one retry, and no generation without an analysis"
    assert "not valid JSON for the analysis schema after 2 tries" in run.stdout
    assert f"FAILED {ONE} (analyse)" in run.stdout and "Traceback" not in run.stdout + run.stderr
    assert not target(market).exists()
    assert vx.audit("SELECT phase, status, error_class FROM enhancements") == [("analyse", "failure", "invalid_json")]
    failed = [line for line in run.stdout.splitlines() if f" {ONE} analyse failure " in line]
    assert failed and " calls=2 " in failed[0]  # what the failed step paid is in its line and the summary
    assert "calls 2," in run.stdout


def test_truncated_json_once_then_valid_succeeds(vx, market):
    vx.faults("truncated_json:first=1")
    run = vx.run(f"skill:{ONE}")
    assert run.returncode == 0, run.stdout
    assert vx.server.stats()["by_phase"] == {"analyse": 2, "generate": 1} and target(market).is_file()


@pytest.mark.parametrize("fault, kind, says", [
    ("empty_candidates", "empty", "the model returned no candidates"),
    ("safety", "safety", "the model refused the request (finishReason SAFETY)"),
])
def test_empty_and_safety_replies_fail_cleanly_without_retry(vx, market, fault, kind, says):
    vx.faults(fault)
    run = vx.run(f"skill:{ONE}")
    assert run.returncode != 0, run.stdout + run.stderr
    assert vx.requests() == 1 and says in run.stdout and f"FAILED {ONE} (analyse)" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr and TOKEN not in run.stdout + run.stderr
    assert not target(market).exists()
    assert vx.audit("SELECT phase, status, error_class FROM enhancements") == [("analyse", "failure", kind)]


def test_max_tokens_is_retried_once_with_a_larger_budget(vx, market):
    vx.faults("max_tokens:first=1")
    run = vx.run(f"skill:{ONE}")
    assert run.returncode == 0, run.stdout
    budgets = [(r["phase"], r["max_output_tokens"]) for r in vx.server.stats()["requests"]]
    assert budgets == [("analyse", 8192), ("analyse", 16384), ("generate", 16384)]
    rows = vx.audit("SELECT retried, error FROM api_calls WHERE phase = 'analyse' ORDER BY id")
    assert [r[0] for r in rows] == [1, 0] and rows[0][1].startswith("MAX_TOKENS at 8192 tokens; retrying with 16384")


@pytest.mark.parametrize("fault, reason", [
    ("dashes_in_description", "---"),
    ("fenced", "---"),
    ("too_short", "bytes"),
])
def test_gate_failures_get_one_repair_and_a_bad_repair_keeps_the_old_file(vx, market, prompts, fault, reason):
    # A bad first answer: the gates reject it, the repair call fixes it, the file is written.
    vx.faults(f"{fault}:first=1")
    first = vx.run(f"skill:{ONE}")
    assert first.returncode == 0, first.stdout
    assert vx.server.stats()["repairs"] == 1 and vx.requests() == 3
    assert vx.audit("SELECT phase, status, error_class FROM enhancements WHERE phase <> 'analyse'") == [
        ("generate", "failure", "gate"), ("repair", "success", None)]
    original = target(market).read_bytes()

    # Every answer bad: after the repair also fails, the old file stays and the candidate is kept.
    vx.faults(fault)
    prompt = prompts / "generation.md"
    prompt.write_text(prompt.read_text() + "\nUse the imperative mood.\n")
    run = vx.run(f"skill:{ONE}")
    assert run.returncode == 1
    assert target(market).read_bytes() == original
    assert vx.requests() == 2 and vx.server.stats()["repairs"] == 1, "one generation, one repair, no more"
    out = run.stdout
    assert "rejected by the gates" in out and reason in out.split("rejected by the gates", 1)[1]
    assert f"FAILED {ONE} (generate): {ONE}: SKILL.md rejected by the gates" in out, "the run summary names it"
    (candidate,) = (vx.tmp / "cache").glob(f"*/rejected/{ONE}.SKILL.md")
    assert candidate.read_bytes() != original
    assert candidate.with_name(f"{ONE}.SKILL.md.reasons.txt").read_text().strip()
    rows = vx.audit("SELECT phase, status, error_class FROM enhancements WHERE run_id = ? ORDER BY id",
                    (vx.last_run(),))
    assert rows == [("generate", "failure", "gate"), ("repair", "failure", "gate")]
    assert len(vx.audit("SELECT id FROM api_calls WHERE run_id = ?", (vx.last_run(),))) == 2


# ----------------------------------------------------------------------------- interrupted runs


def test_sigkill_and_restart_pays_no_finished_call_twice(vx, market, tmp_path):
    vx.server.config.latency = (0.25, 0.25)  # a window to kill in while plugins remain
    vx.env["SKILLBUILD_MAX_WORKERS"] = "1"  # one plugin at a time, so some remain after the first one finished
    log = tmp_path / "killed.log"
    proc = vx.popen(log=log)
    wait_for(log, lambda text: " generate success " in text, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: no chance to save doit's state
    proc.wait(timeout=10)
    time.sleep(0.4)  # let an in-flight request reach the server's counter
    paid, kept = vx.requests(), vx.responses_cached()
    assert 2 <= kept < PHASES, "killed after a plugin finished, before the last one did"
    assert paid - kept <= 1, "only the request in flight at the kill is lost"

    restart = vx.run()
    assert restart.returncode == 0, restart.stdout + restart.stderr
    again = vx.requests() - paid
    assert again == PHASES - kept, "every answer received before the kill is served from the response cache"
    assert vx.requests() == PHASES + (paid - kept)
    digests = Counter(r["digest"] for r in vx.server.stats()["requests"])
    assert len(digests) == PHASES and sum(digests.values()) - len(digests) == paid - kept
    # doit lost its state, but its up-to-date check asks what `doit status` asks (ui/status.py judge): the
    # SKILL.md written before the kill is fresh, so nothing of that plugin runs again, not even from the cache.
    assert not {f"analyse:{ONE}", f"skill:{ONE}"} & vx.doit.executed(restart), "a fresh SKILL.md is never redone"
    for name in BUILT:
        assert skillmd.provenance(target(market, name).read_text())["generator"] == "skillbuild-vertex"


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "two-workers"])
def test_sigterm_saves_doit_state(vx, market, tmp_path, workers):
    vx.server.config.latency = (0.25, 0.25)
    vx.env["SKILLBUILD_MAX_WORKERS"] = "1"  # "one-process": doit's plain runner, plugins one after another
    log = tmp_path / "terminated.log"
    proc = vx.popen(*workers, log=log)
    wait_for(log, lambda text: " generate success " in text, proc)
    if workers:
        os.killpg(proc.pid, signal.SIGTERM)  # a service manager stops the whole group
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143  # 128 + SIGTERM, not a death by signal
    text = log.read_text()
    assert "Traceback" not in text and "skillbuild: terminated (SIGTERM)" in text
    done = finished(text)
    assert any(t.startswith("skill:") for t in done)
    paid = vx.requests()
    # A worker may write a SKILL.md and be stopped before its event is reported: that plugin is fresh.
    written = {f"{phase}:{p}" for p in BUILT if target(market, p).is_file()
               and (skillmd.provenance(target(market, p).read_text()) or {}).get("generator") == "skillbuild-vertex"
               for phase in ("analyse", "skill")}

    restart = vx.run()
    assert restart.returncode == 0, restart.stdout + restart.stderr
    rerun = vx.doit.executed(restart)
    assert not rerun & done, f"tasks finished before SIGTERM ran again: {sorted(rerun & done)}"
    assert not rerun & written, f"plugins whose SKILL.md was written ran again: {sorted(rerun & written)}"
    assert rerun | done | written >= {f"{phase}:{p}" for p in BUILT for phase in ("analyse", "skill")}
    assert vx.requests() - paid <= PHASES - len({t for t in done if t.split(":")[1] in BUILT})


def test_ctrl_c_saves_state_and_exits_130_without_a_traceback(vx, tmp_path):
    vx.env["SKILLBUILD_MAX_WORKERS"] = "1"  # plugins one after another, so some remain at the signal
    vx.server.config.latency = (0.25, 0.25)
    log = tmp_path / "interrupted.log"
    proc = vx.popen(log=log)
    wait_for(log, lambda text: " generate success " in text, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the foreground group on Ctrl-C
    assert proc.wait(timeout=30) == 130
    text = log.read_text()
    assert "Traceback" not in text and "skillbuild: interrupted (Ctrl-C)" in text
    assert any(t.startswith("skill:") for t in finished(text))
    restart = vx.run()
    assert restart.returncode == 0 and not vx.doit.executed(restart) & finished(text)


# ----------------------------------------------------------------------------- doit check


def test_check_offline_needs_no_account(doit):
    run = doit("check")
    assert run.returncode == 0 and "no account is needed" in run.stdout


def test_check_reaches_the_fake_service_with_one_call(vx):
    run = vx.run("check")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Vertex AI reachable via {vx.server.url}: model gemini-2.5-flash in project {PROJECT}" in run.stdout
    assert vx.requests() == 1 and TOKEN not in run.stdout + run.stderr
    assert "static token set" in run.stdout
    with sqlite3.connect(vx.tmp / "build" / "throttle.sqlite3") as conn:
        assert conn.execute("SELECT COUNT(*), MAX(status) FROM calls").fetchone() == (1, 200), "paced and recorded"


def test_check_names_a_retired_model(vx):
    run = vx.run("check", SKILLBUILD_MODEL="gemini-1.5-flash")
    assert run.returncode == 1
    assert "model 'gemini-1.5-flash' not found" in run.stdout and "SKILLBUILD_MODEL" in run.stdout
    assert vx.requests() == 1, "a 404 is not retried"


def test_check_names_a_wrong_endpoint_path(vx):
    run = vx.run("check", SKILLBUILD_VERTEX_ENDPOINT=vx.server.url + "/v1beta1")
    assert run.returncode == 1
    assert "no such path at" in run.stdout and "base URL only" in run.stdout
    assert "model 'gemini-2.5-flash' not found" not in run.stdout


def test_check_names_the_project_without_permission(fake_vertex_factory, doit, tmp_path):  # noqa: F811
    vx = VertexBuild(fake_vertex_factory(project="another-project"), doit, tmp_path)
    run = vx.run("check")
    assert run.returncode == 1
    assert f"permission denied for project {PROJECT}" in run.stdout and "roles/aiplatform.user" in run.stdout


def test_sigterm_is_never_raised_inside_threading_code():
    import threading

    from skillbuild.safety import interrupt

    seen = []
    worker = threading.Thread(target=lambda: seen.append(interrupt.safe_to_interrupt(sys._getframe())))
    worker.start()
    worker.join()
    assert seen == [False], "a frame running under threading.py internals is not a safe point"
    assert interrupt.safe_to_interrupt(sys._getframe()), "plain project or test code is"


def test_a_call_in_flight_at_a_kill_is_in_the_audit_as_unknown_outcome(vx, tmp_path):
    """Every request the server received has its api_calls row: written before the send, not after the answer."""
    vx.env["SKILLBUILD_MAX_WORKERS"] = "1"  # one call in flight at a time, as the kill expects
    vx.server.config.latency = (1.5, 1.5)
    log = tmp_path / "killed.log"
    proc = vx.popen(log=log)
    wait_for(log, lambda text: " analyse success " in text, proc)
    deadline = time.monotonic() + 30
    while vx.requests() < 2 and time.monotonic() < deadline:  # the next request reached the server
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    paid = vx.requests()
    assert paid >= 2
    assert vx.audit("SELECT COUNT(*) FROM api_calls") == [(paid,)]
    assert vx.audit("SELECT COUNT(*) FROM api_calls WHERE outcome = 'sent'") == [(1,)]
    vx.server.config.latency = (0.0, 0.0)
    restart = vx.run()
    assert restart.returncode == 0, restart.stdout + restart.stderr
    assert "as killed (it ended without recording its end); 1 API call(s) in flight, outcome unknown" in restart.stdout
    assert vx.audit("SELECT COUNT(*) FROM api_calls") == [(vx.requests(),)]  # answered + unknown outcome
    assert vx.audit("SELECT outcome, COUNT(*) FROM api_calls GROUP BY 1 ORDER BY 1") == [
        ("answered", vx.requests() - 1), ("unknown", 1)]
    quota = vx.run("quota")
    assert "(1 of unknown outcome, possibly billed)" in quota.stdout, quota.stdout
