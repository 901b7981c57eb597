"""`doit batch` end to end: the real google-genai and google-cloud-storage clients against the fake Vertex
server (its batch endpoints) and a Cloud Storage emulator, both on loopback.

What each run paid is read from the fake's counters (`requests_total` counts online calls only,
`batch_jobs`/`batch_rows` the batch side); what was recorded from the audit DB.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import skills_ref

from skillbuild.testing.gcs import start_emulator
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "skillbuild-batch-test"
BUILT = {"deploy-checker": "plugins/devops/deploy-checker", "secret-sentry": "plugins/security/secret-sentry",
         "changelog-lint": "plugins/extras/changelog-lint"}


@pytest.fixture(scope="module")
def emulator():
    """One in-memory emulator for the module (each test's marketplace id keeps its objects apart); the
    in-process fake server reads STORAGE_EMULATOR_HOST from this process's environment."""
    proc, url = start_emulator(BUCKET)
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    yield url
    if before is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = before
    proc.kill()
    proc.wait()


class Batch:
    def __init__(self, server, doit, tmp_path: Path, emulator_url: str):
        self.server, self.doit, self.tmp = server, doit, tmp_path
        self.env = {
            "SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server.url,
            "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT,
            "SKILLBUILD_RPM": "100000", "SKILLBUILD_SAFETY_FACTOR": "1", "SKILLBUILD_REQUEST_TIMEOUT": "5",
            "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05", "STORAGE_EMULATOR_HOST": emulator_url,
            "SKILLBUILD_BATCH_BUCKET": f"gs://{BUCKET}", "SKILLBUILD_BATCH_POLL_SECONDS": "0.2",
        }

    def run(self, *args: str) -> subprocess.CompletedProcess:
        proc = self.doit(*args, timeout=180, extra_env=self.env)
        return proc

    def popen(self, *args: str, log: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *args]
        with log.open("w") as out:
            return subprocess.Popen(cmd, env={**self.doit.env, **self.env}, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=ROOT, start_new_session=True)

    def stats(self) -> dict:
        return self.server.stats()

    def audit(self, sql: str) -> list[tuple]:
        (db,) = (self.tmp / "build").glob("*/audit.sqlite3")
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()


def make(factory, doit, tmp_path, emulator, **options) -> Batch:
    options.setdefault("batch_latency", 1.0)
    return Batch(factory(retry_delay=0.05, **options), doit, tmp_path, emulator)


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def written(market: Path) -> list[Path]:
    return [market / rel / "skills" / name / "SKILL.md" for name, rel in BUILT.items()]


def test_batch_then_doit_writes_every_skill_with_no_online_call(fake_vertex_factory, doit, tmp_path, market,
                                                                 emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator)
    out = ok(b.run("batch"))
    assert "SUCCEEDED" in out and "RUNNING" in out, out  # progress was shown while it ran
    stats = b.stats()
    assert (stats["requests_total"], stats["batch_jobs"], stats["batch_rows"]) == (0, 2, 6)
    jobs = b.audit("SELECT phase, request_count, state, job_name IS NOT NULL, succeeded, failed FROM batch_jobs")
    assert sorted(jobs) == [("analyse", 3, "JOB_STATE_SUCCEEDED", 1, 3, 0),
                            ("generate", 3, "JOB_STATE_SUCCEEDED", 1, 3, 0)]
    rows = b.audit("SELECT mode, COUNT(*), SUM(cost_usd > 0), SUM(input_tokens > 0) FROM api_calls GROUP BY mode")
    assert rows == [("batch", 6, 6, 6)]

    ok(b.run())
    assert b.stats()["requests_total"] == 0  # every answer came from the cache the batch filled
    for path in written(market):
        assert 'generator: "skillbuild-vertex"' in path.read_text(), path
        assert skills_ref.validate(path.parent) == [], path

    again = ok(b.run("batch"))  # nothing stale: no job, nothing uploaded
    assert "0 job(s) created" in again and b.stats()["batch_jobs"] == 2


def kill_once_submitted(b, log) -> None:
    """Start `doit batch` and SIGKILL it as soon as its job exists (it is then polling)."""
    proc = b.popen("batch", log=log)
    deadline = time.monotonic() + 60
    while "created projects/" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def test_sigkill_while_polling_then_rerun_resumes_the_same_job(fake_vertex_factory, doit, tmp_path, market,
                                                               emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator, batch_latency=6.0)
    kill_once_submitted(b, tmp_path / "batch.log")
    before = b.audit("SELECT id, phase, request_hash, job_name, input_uri FROM batch_jobs")
    assert len(before) == 1 and before[0][3], before

    out = ok(b.run("batch"))
    assert f"resuming analyse job {before[0][3]}" in out, out
    after = b.audit("SELECT id, phase, request_hash, job_name, input_uri FROM batch_jobs WHERE phase = 'analyse'")
    assert after == before  # the same row and job: nothing submitted twice
    assert b.stats()["batch_jobs"] == 2  # the resumed analysis job and the generation job, no third
    ok(b.run())
    assert b.stats()["requests_total"] == 0


def test_intent_row_without_a_job_name_adopts_the_job_by_display_name(fake_vertex_factory, doit, tmp_path,
                                                                      market, emulator):
    """A run killed between create and storing the job name: the next run finds the job by its display name."""
    b = make(fake_vertex_factory, doit, tmp_path, emulator)
    ok(b.run("batch"))
    # Forget the generation job's name and collection, as if the run had died right after creating it.
    b.audit("UPDATE batch_jobs SET job_name = NULL, state = 'submitting', succeeded = NULL, failed = NULL "
            "WHERE phase = 'generate'")
    out = ok(b.run("batch"))
    assert "adopted projects/" in out, out
    assert b.stats()["batch_jobs"] == 2 and len(b.audit("SELECT id FROM batch_jobs")) == 2


def test_partial_job_sends_only_the_failed_rows_online(fake_vertex_factory, doit, tmp_path, market, emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator, faults=["batch_partial:1,first=2"])
    out = ok(b.run("batch"))
    assert "PARTIALLY_SUCCEEDED" in out, out
    # The first two analysis rows failed: their plugins have no analysis, so no generation row in the batch.
    assert sorted(b.audit("SELECT phase, request_count, succeeded, failed FROM batch_jobs")) == [
        ("analyse", 3, 1, 2), ("generate", 1, 1, 0)]
    ok(b.run())
    stats = b.stats()
    assert stats["requests_total"] == 4 and stats["by_phase"] == {"analyse": 2, "generate": 2}
    assert all(skills_ref.validate(p.parent) == [] for p in written(market))


def test_batch_answer_failing_the_gates_takes_the_online_repair_path(fake_vertex_factory, doit, tmp_path, market,
                                                                     emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator, faults=["too_short:first=1"])
    ok(b.run("batch"))
    failed = b.audit("SELECT error FROM api_calls WHERE mode = 'batch' AND error IS NOT NULL")
    assert len(failed) == 1 and failed[0][0].startswith("gate:"), failed
    ok(b.run())
    stats = b.stats()
    assert stats["requests_total"] == 1 and stats["repairs"] == 1  # only the repair call went online
    assert all(skills_ref.validate(p.parent) == [] for p in written(market))


def test_failed_job_leaves_everything_to_the_online_path(fake_vertex_factory, doit, tmp_path, market, emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator, faults=["batch_failed"])
    out = ok(b.run("batch"))
    assert "FAILED (scripted fault batch_failed)" in out, out
    assert b.audit("SELECT phase, state, succeeded FROM batch_jobs") == [("analyse", "JOB_STATE_FAILED", 0)]
    ok(b.run())
    assert b.stats()["requests_total"] == 6


def test_cancel_cancels_the_running_job(fake_vertex_factory, doit, tmp_path, market, emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator, batch_latency=60.0)
    kill_once_submitted(b, tmp_path / "batch.log")
    out = ok(b.run("batch", "cancel=1"))
    assert "1 job(s) cancelled" in out, out
    assert b.audit("SELECT state FROM batch_jobs") == [("JOB_STATE_CANCELLED",)]
    (job,) = b.server.batch.jobs.values()
    assert job["state"] == "JOB_STATE_CANCELLED"


def test_plan_mode_batch_sends_nothing(fake_vertex_factory, doit, tmp_path, market, emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator)
    out = ok(b.run("plan", "mode=batch"))
    assert "jobs: 2 (analysis: 3 request(s), generation: 3 request(s))" in out, out
    assert "cost (estimate): batch $" in out and "; online $" in out
    assert "batch is not worth it: 3 stale plugin(s) is below batch_min_plugins (50)" in out
    stats = b.stats()
    assert (stats["requests_total"], stats["batch_jobs"]) == (0, 0)
    b.env["SKILLBUILD_BATCH_MIN_PLUGINS"] = "2"
    assert "not worth it" not in ok(b.run("plan", "mode=batch"))


def test_missing_bucket_fails_with_what_to_check(fake_vertex_factory, doit, tmp_path, market, emulator):
    b = make(fake_vertex_factory, doit, tmp_path, emulator)
    b.env["SKILLBUILD_BATCH_BUCKET"] = "no-such-bucket"  # a bare name is accepted too
    proc = b.run("batch")
    assert proc.returncode == 1 and "check batch_bucket" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert b.stats()["batch_jobs"] == 0
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_transient_poll_error_is_retried_and_a_permanent_one_named():
    from google.genai import errors

    from skillbuild.calls.batch import BatchRun
    from skillbuild.calls.path import Caller
    from skillbuild.providers.base import ProviderError
    from skillbuild.providers.vertex import VertexProvider

    class Flaky:
        def __init__(self, code: int):
            self.code = code

        def get(self, name):
            raise (errors.ServerError if self.code >= 500 else errors.ClientError)(
                self.code, {"error": {"code": self.code, "message": "scripted", "status": "X"}})

    said: list[str] = []
    run = BatchRun.__new__(BatchRun)
    run.caller, run.say = Caller(VertexProvider(model="gemini-2.5-flash", project="p")), said.append
    run.service = Flaky(503)
    assert run._get("projects/p/locations/l/batchPredictionJobs/1") is None and "polling again" in said[0]
    run.service = Flaky(403)
    with pytest.raises(ProviderError, match="permission denied"):
        run._get("projects/p/locations/l/batchPredictionJobs/1")
