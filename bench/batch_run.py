"""Batch prediction at marketplace scale: `doit batch` then `doit` on a synthetic marketplace of N copies of a
corpus, against the fake Vertex server (its batch endpoints) and a Cloud Storage emulator on loopback.

    python bench/batch_run.py ../shared/corpus/claude-code-plugins [--copies 10] [--batch-latency 3600]
                              [--time-scale 600] [--keep DIR]

Each copy renames every plugin (catalog entry and plugin.json: NAME-cK) and lives in its own folder, so the
copies are distinct plugins with distinct requests. Printed: the plan's online-only time at 15 requests a
minute and its cost, batch vs online; jobs and rows the fake received; online calls `doit` made afterwards
(0 apart from failed rows); wall times (the fake's turnaround is --batch-latency simulated seconds shrunk by
--time-scale).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "rules"))

from skillbuild.testing.fakevertex import spawn  # noqa: E402
from skillbuild.testing.gcs import start_emulator  # noqa: E402

DOIT = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-d", str(ROOT)]
BUCKET = "skillbuild-bench"


def synthetic(corpus: Path, dest: Path, copies: int) -> int:
    """dest/: one catalog listing `copies` renamed copies of every plugin of `corpus`; returns the entries."""
    catalog = json.loads((corpus / ".claude-plugin" / "marketplace.json").read_text())
    entries = []
    for k in range(copies):
        folder = dest / f"copy{k}"
        shutil.copytree(corpus / "plugins", folder / "plugins", symlinks=True)
        for manifest in folder.rglob(".claude-plugin/plugin.json"):
            try:
                data = json.loads(manifest.read_text())
            except ValueError:
                continue  # bad input stays bad input: discovery reports it
            if isinstance(data, dict) and isinstance(data.get("name"), str):
                data["name"] = f"{data['name']}-c{k}"
                manifest.write_text(json.dumps(data, indent=2))
        for entry in catalog["plugins"]:
            source = entry["source"]
            if isinstance(source, str) and source.startswith("./plugins/"):
                entries.append({**entry, "name": f"{entry['name']}-c{k}", "source": f"./copy{k}/{source[2:]}"})
    (dest / ".claude-plugin").mkdir(parents=True, exist_ok=True)
    (dest / ".claude-plugin" / "marketplace.json").write_text(json.dumps({**catalog, "plugins": entries}, indent=1))
    return len(entries)


def run(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(DOIT + args, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def stats(url: str) -> dict:
    return json.loads(urllib.request.urlopen(f"{url}/_stats", timeout=10).read())


def line(text: str, pattern: str) -> str:
    found = re.search(pattern, text, re.M)
    return found.group(0) if found else f"(no line matching {pattern!r})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--batch-latency", type=float, default=3600.0, help="simulated seconds per job")
    parser.add_argument("--time-scale", type=float, default=600.0)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-batch-"))
    market = work / "marketplace"
    shutil.rmtree(market, ignore_errors=True)
    entries = synthetic(args.corpus, market, args.copies)
    gcs, gcs_url = start_emulator(BUCKET)
    os.environ["STORAGE_EMULATOR_HOST"] = gcs_url  # the fake server inherits it
    fake, url = spawn("--batch-latency", str(args.batch_latency), "--time-scale", str(args.time_scale))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SKILLBUILD_")},
           "SKILLBUILD_MARKETPLACE": str(market), "SKILLBUILD_PROVIDER": "vertex",
           "SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": "bench", "GOOGLE_CLOUD_PROJECT": "bench",
           "SKILLBUILD_CACHE_ROOT": str(work / "cache"), "SKILLBUILD_BUILD_ROOT": str(work / "build"),
           "SKILLBUILD_BATCH_BUCKET": f"gs://{BUCKET}", "SKILLBUILD_BATCH_POLL_SECONDS": "1",
           "STORAGE_EMULATOR_HOST": gcs_url, "PYTHONPATH": str(ROOT / "rules")}
    try:
        _, plan = run(["plan", "mode=batch", "rpm=15", "safety_factor=1"], env)
        batch_s, batch = run(["batch"], env)
        after_batch = stats(url)
        build_s, build = run(["-n", "2", "rpm=100000", "safety_factor=1"], env)
        after_build = stats(url)
    finally:
        fake.terminate()
        gcs.kill()
    print(f"synthetic marketplace: {entries} catalog entries ({args.copies} renamed copies of {args.corpus})")
    print("plan (rpm=15): " + line(plan.stdout, r"^API calls: .*$"))
    print("plan: " + line(plan.stdout, r"^jobs: .*$"))
    print("plan: " + line(plan.stdout, r"^cost \(estimate\): batch .*$"))
    print("plan: " + line(plan.stdout, r"^online instead: .*$"))
    print(f"doit batch: exit {batch.returncode}, {batch_s:.1f} s wall (fake turnaround {args.batch_latency:g} "
          f"simulated s per job at time scale {args.time_scale:g}); " + line(batch.stdout, r"^batch: \d+ job.*$"))
    print(f"fake server after batch: batch_jobs {after_batch['batch_jobs']}, batch_rows {after_batch['batch_rows']}, "
          f"online requests {after_batch['requests_total']}")
    print(f"doit -n 2 after the batch: exit {build.returncode}, {build_s:.1f} s wall; "
          + line(build.stdout, r"^built .*$"))
    print(f"online generateContent requests made by doit: {after_build['requests_total'] - after_batch['requests_total']}"
          f" (repairs {after_build['repairs']})")
    if batch.returncode:
        print(batch.stdout[-2000:] + batch.stderr[-2000:])
    return 0 if batch.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
