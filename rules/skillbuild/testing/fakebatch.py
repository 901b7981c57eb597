"""The fake Vertex server's batch prediction endpoints, reading and writing a Cloud Storage emulator.

REST as the google-genai SDK calls it on Vertex:
  POST /v1beta1/projects/{p}/locations/{l}/batchPredictionJobs            create
  GET  /v1beta1/projects/{p}/locations/{l}/batchPredictionJobs[?...]      list
  GET  /v1beta1/projects/{p}/locations/{l}/batchPredictionJobs/{id}       get
  POST /v1beta1/projects/{p}/locations/{l}/batchPredictionJobs/{id}:cancel
A job is QUEUED for the first tenth of `--batch-latency` (simulated seconds, shrunk by `--time-scale`),
RUNNING until it has passed, then answers every row at once with the same answers (and content faults) as the
online endpoint, writing `prediction-model-<time>/predictions.jsonl` under the output prefix; each line repeats
the request and carries `response` or `status`. Faults: `batch_failed` and `batch_expired` end a job without
output; `batch_partial:RATE` fails that share of rows. Storage is reached through google-cloud-storage, at
`STORAGE_EMULATOR_HOST` when set.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import threading
import time
from datetime import datetime, timezone
from typing import Any

JOBS_RE = re.compile(r"^/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/batchPredictionJobs(?:/(\d+))?(:cancel)?$")
BATCH_FAULTS = ("batch_failed", "batch_partial", "batch_expired")
QUEUED_SHARE = 0.1  # of the latency spent queued before running


def is_batch_path(path: str) -> bool:
    return bool(JOBS_RE.match(path.split("?", 1)[0]))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


class BatchJobs:
    """Jobs of one FakeVertex (its config, faults, counters and answers)."""

    def __init__(self, server: Any, latency: float = 60.0):
        self.server, self.latency = server, latency
        self.jobs: dict[str, dict] = {}
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        self._storage = None

    # -- HTTP
    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes):
        from skillbuild.testing.fakevertex import Reply, error_reply

        if not headers.get("authorization", "").startswith("Bearer "):
            return error_reply(401, "Request had invalid authentication credentials.")
        _, project, location, job_id, cancel = JOBS_RE.match(path.split("?", 1)[0]).groups()
        parent = f"projects/{project}/locations/{location}"
        if method == "POST" and job_id is None:
            return self._create(parent, json.loads(raw or b"{}"))
        if job_id is None:
            with self._lock:
                found = [j for j in self.jobs.values() if j["name"].startswith(parent)]
            jobs = [self._view(j) for j in found]
            return Reply(200, {"batchPredictionJobs": jobs})
        job = self.jobs.get(f"{parent}/batchPredictionJobs/{job_id}")
        if job is None:
            return error_reply(404, f"BatchPredictionJob {job_id} not found.")
        if cancel:
            with self._lock:
                if job["state"] not in ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_EXPIRED"):
                    job["state"], job["endTime"] = "JOB_STATE_CANCELLED", _iso(time.time())
            return Reply(200, {})
        return Reply(200, self._view(job))

    def _create(self, parent: str, body: dict):
        from skillbuild.testing.fakevertex import Reply, error_reply

        uris = ((body.get("inputConfig") or {}).get("gcsSource") or {}).get("uris") or []
        prefix = ((body.get("outputConfig") or {}).get("gcsDestination") or {}).get("outputUriPrefix")
        if not uris or not prefix:
            return error_reply(400, "inputConfig.gcsSource.uris and outputConfig.gcsDestination are required.")
        now = time.time()
        name = f"{parent}/batchPredictionJobs/{next(self._ids)}"
        job = {"name": name, "displayName": body.get("displayName", ""), "model": body.get("model"),
               "inputConfig": body["inputConfig"], "outputConfig": body["outputConfig"],
               "state": "JOB_STATE_QUEUED", "createTime": _iso(now), "updateTime": _iso(now), "_created": now,
               "_rows": self._count_rows(uris)}
        with self._lock:
            self.jobs[name] = job
        with self.server._lock:
            self.server._stats["batch_jobs"] += 1
        return Reply(200, self._view(job))

    # -- the job's clock
    def _view(self, job: dict) -> dict:
        self._advance(job)
        out = {k: v for k, v in job.items() if not k.startswith("_")}
        done = job.get("_done") or (0, 0)
        if job["state"] == "JOB_STATE_RUNNING":  # rows finish at a steady pace while running
            share = min(1.0, self._elapsed(job) / max(self.latency, 1e-9))
            done = (int(job["_rows"] * share), 0)
        out["completionStats"] = {"successfulCount": str(done[0]), "failedCount": str(done[1]),
                                  "incompleteCount": str(max(0, job["_rows"] - sum(done)))}
        return out

    def _elapsed(self, job: dict) -> float:
        return (time.time() - job["_created"]) * self.server.config.time_scale

    def _advance(self, job: dict) -> None:
        with self._lock:
            if job["state"] not in ("JOB_STATE_QUEUED", "JOB_STATE_RUNNING"):
                return
            elapsed = self._elapsed(job)
            if elapsed < QUEUED_SHARE * self.latency:
                return
            if job["state"] == "JOB_STATE_QUEUED":
                job["state"], job["startTime"] = "JOB_STATE_RUNNING", _iso(time.time())
            if elapsed < self.latency:
                return
            self._finish(job)

    def _finish(self, job: dict) -> None:
        ending = self._job_fault()
        job["endTime"] = job["updateTime"] = _iso(time.time())
        if ending:
            job["state"] = {"batch_failed": "JOB_STATE_FAILED", "batch_expired": "JOB_STATE_EXPIRED"}[ending]
            job["error"] = {"code": 4 if ending == "batch_expired" else 13,
                            "message": f"scripted fault {ending}"}
            job["_done"] = (0, 0)
            return
        ok, failed = self._run_rows(job)
        job["_done"] = (ok, failed)
        job["state"] = "JOB_STATE_PARTIALLY_SUCCEEDED" if failed and ok else (
            "JOB_STATE_SUCCEEDED" if ok or not failed else "JOB_STATE_FAILED")

    # -- faults
    def _faults(self, name: str) -> list:
        return [f for f in self.server.config.faults if f.name == name]

    def _fires(self, name: str) -> bool:
        """One of the scripted `name` faults fires (its rate, within its `first=N`), counted if it does."""
        for fault in self._faults(name):
            fault.eligible += 1
            if fault.first is not None and fault.eligible > fault.first:
                continue
            if fault.rate >= 1.0 or self.server._rng.random() < fault.rate:
                self.server._count("faults", name)
                return True
        return False

    def _job_fault(self) -> str | None:
        return next((name for name in ("batch_failed", "batch_expired") if self._fires(name)), None)

    def _row_fails(self) -> bool:
        return self._fires("batch_partial")

    # -- rows, through Cloud Storage
    def storage(self) -> Any:
        if self._storage is None:
            from google.cloud import storage

            if os.environ.get("STORAGE_EMULATOR_HOST"):
                from google.auth.credentials import AnonymousCredentials

                self._storage = storage.Client(project="fake", credentials=AnonymousCredentials())
            else:
                self._storage = storage.Client()
        return self._storage

    def _lines(self, uris: list[str]) -> list[dict]:
        lines = []
        for uri in uris:
            bucket, name = split_uri(uri)
            text = self.storage().bucket(bucket).blob(name).download_as_bytes().decode("utf-8")
            lines += [json.loads(line) for line in text.splitlines() if line.strip()]
        return lines

    def _count_rows(self, uris: list[str]) -> int:
        return len(self._lines(uris))

    def _run_rows(self, job: dict) -> tuple[int, int]:
        from skillbuild.testing.fakevertex import build_reply, phase_of

        model = (job.get("model") or "").rsplit("/", 1)[-1]
        out, ok, failed = [], 0, 0
        for line in self._lines(job["inputConfig"]["gcsSource"]["uris"]):
            request = line.get("request") or {}
            phase = phase_of(request)
            reply = None if self._row_fails() else build_reply(request, model, phase, self.server._pick_fault(phase), 0)
            if reply is not None and reply.status == 200:
                out.append({"request": request, "response": reply.body, "processed_time": _iso(time.time())})
                ok += 1
            else:
                message = reply.body["error"]["message"] if reply is not None else "scripted fault batch_partial"
                out.append({"request": request, "status": message, "processed_time": _iso(time.time())})
                failed += 1
        with self.server._lock:
            self.server._stats["batch_rows"] += len(out)
        prefix = job["outputConfig"]["gcsDestination"]["outputUriPrefix"].rstrip("/")
        bucket, folder = split_uri(prefix)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        blob = self.storage().bucket(bucket).blob(f"{folder}/prediction-model-{stamp}/predictions.jsonl")
        blob.upload_from_string("".join(json.dumps(o) + "\n" for o in out), content_type="application/jsonl")
        return ok, failed
