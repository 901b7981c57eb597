"""One worker process for the cross-process throttle tests.

Usage: throttle_worker.py JSON, where JSON holds db, limits (Limits fields), calls, start_at
(epoch: all workers start together) and optionally wait_for_reset. For each call it acquires,
then records a 200, and prints one JSON line: {"ok": <time acquire returned>} or, when the
budget is spent, {"exhausted": <message>, "resets_at": <iso>} and stops.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skillbuild.calls.throttle import Limits, QuotaExhausted, Throttle  # noqa: E402


def main() -> None:
    job = json.loads(sys.argv[1])
    limits = Limits(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["limits"].items()})
    throttle = Throttle(job["db"], limits, wait_for_reset=job.get("wait_for_reset", False))
    time.sleep(max(0.0, job["start_at"] - time.time()))
    for _ in range(job["calls"]):
        try:
            throttle.acquire(job.get("est_tokens", 0))
        except QuotaExhausted as exc:
            print(json.dumps({"pid": os.getpid(), "exhausted": str(exc),
                              "resets_at": exc.resets_at.isoformat()}), flush=True)
            return
        print(json.dumps({"pid": os.getpid(), "ok": time.time()}), flush=True)
        throttle.record(200, tokens=job.get("est_tokens", 0))


if __name__ == "__main__":
    main()
