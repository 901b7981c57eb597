"""API calls per plugin with the vertex provider, counted by the fake Vertex server.

    python bench/vertex_calls.py MARKETPLACE [MARKETPLACE ...] [--workers 2] [--keep DIR]

For each marketplace (e.g. examples and ../shared/corpus/claude-code-plugins), on temporary copies: the
first run, a no-change re-run, a run after a generation-prompt edit, and a run killed with SIGKILL (the
whole process group, about halfway) then restarted. The fake server (rules/fakevertex.py, started here,
no latency, no quota) counts every request; its `digest` of each request's text tells a call paid twice
from two different calls. The marketplaces themselves are never touched.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "rules")]

from skillbuild.testing.fakevertex import FakeVertex  # noqa: E402
from skillbuild.calls.response_cache import ResponseCache  # noqa: E402
from skillbuild.store.audit import AuditDB  # noqa: E402

DOIT = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-d", str(ROOT)]
SUMMARY = re.compile(r"built (\d+), kept (\d+), skipped (\d+), failed (\d+), fresh (\d+)")
KILL_LATENCY = 0.05  # seconds per request in the killed run only, so the kill lands mid-run on small sets


class Workspace:
    """A temp copy of a marketplace and the prompts, with its own cache/ and build/ (and throttle DB)."""

    def __init__(self, source: Path, folder: Path, server: FakeVertex):
        self.market, self.prompts = folder / "marketplace", folder / "prompts"
        shutil.copytree(source, self.market, symlinks=True)
        shutil.copytree(ROOT / "rules" / "skillbuild" / "skill" / "prompts", self.prompts)
        self.cache, self.build = folder / "cache", folder / "build"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_"))}
        self.env = {**env, "SKILLBUILD_MARKETPLACE": str(self.market), "SKILLBUILD_PROMPTS_DIR": str(self.prompts),
                    "SKILLBUILD_CACHE_ROOT": str(self.cache), "SKILLBUILD_BUILD_ROOT": str(self.build),
                    "SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": server.url,
                    "SKILLBUILD_VERTEX_TOKEN": "bench", "GOOGLE_CLOUD_PROJECT": "skillbuild-bench",
                    "SKILLBUILD_RPM": "1000000", "SKILLBUILD_RPD": "10000000", "SKILLBUILD_SAFETY_FACTOR": "1",
                    "SKILLBUILD_REQUEST_TIMEOUT": "30", "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05",
                    "PYTHONUNBUFFERED": "1"}

    def run(self, args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(DOIT + args, env=self.env, capture_output=True, text=True)

    def start(self, args: list[str], log: Path) -> subprocess.Popen:
        with log.open("w") as out:
            return subprocess.Popen(DOIT + args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def cached(self) -> int:
        return sum(ResponseCache(d).count() for d in self.cache.glob("*/responses"))

    def calls_per_plugin(self) -> Counter:
        """HTTP attempts per plugin from the audit DB (every run so far)."""
        counts: Counter = Counter()
        for db in self.build.glob("*/audit.sqlite3"):
            audit = AuditDB(db, read_only=True)
            try:
                counts.update(audit.attempts_per_plugin())
            finally:
                audit.close()
        return counts


class Row:
    def __init__(self, scenario: str, stats: dict, output: str = "", note: str = ""):
        self.scenario, self.note = scenario, note
        self.calls = stats["requests_total"]
        self.analyse = stats["by_phase"].get("analyse", 0)
        self.generate = stats["by_phase"].get("generate", 0)
        self.repairs = stats["repairs"]
        digests = Counter(r.get("digest") for r in stats["requests"])
        self.twice = sum(digests.values()) - len(digests)
        found = SUMMARY.findall(output)
        self.outcome = "built {}, kept {}, skipped {}, failed {}, fresh {}".format(*found[-1]) if found else "-"


def measure(source: Path, work: Path, workers: int) -> tuple[list[Row], dict]:
    server = FakeVertex(hang_seconds=1.0).start()
    try:
        return _scenarios(source, work, workers, server)
    finally:
        server.stop()


def _scenarios(source: Path, work: Path, workers: int, server: FakeVertex) -> tuple[list[Row], dict]:
    ws = Workspace(source, work / "a", server)
    jobs = ["-n", str(workers)] if workers > 1 else []
    rows, info = [], {}

    began = time.monotonic()
    first = ws.run(jobs)
    info["first_seconds"] = time.monotonic() - began
    rows.append(Row("first run", server.stats(), first.stdout))
    per_plugin = ws.calls_per_plugin()
    info["plugins_called"], info["per_plugin"] = len(per_plugin), Counter(per_plugin.values())

    server.reset()
    rows.append(Row("no-change re-run", server.stats(), ws.run(jobs).stdout))

    server.reset()
    prompt = ws.prompts / "generation.md"
    prompt.write_text(prompt.read_text() + "\nPrefer short sentences.\n")
    edited = ws.run(jobs)
    rows.append(Row("generation-prompt edit", server.stats(), edited.stdout))

    rows += _killed(source, work / "b", jobs, server, rows[0].calls)
    return rows, info


def _killed(source: Path, folder: Path, jobs: list[str], server: FakeVertex, full: int) -> list[Row]:
    """A fresh build killed with SIGKILL once about half its calls are paid, then restarted."""
    ws = Workspace(source, folder, server)
    server.reset()
    server.config.latency = (KILL_LATENCY, KILL_LATENCY)
    proc = ws.start(jobs, folder / "killed.log")
    while server.stats()["requests_total"] < max(1, full // 2) and proc.poll() is None:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    server.config.latency = (0.0, 0.0)
    time.sleep(KILL_LATENCY * 4)  # requests in flight at the kill reach the counter
    before, cached = server.stats(), ws.cached()
    killed = Row("killed (SIGKILL) mid-run", before, note=f"{cached} answers in the response cache")
    restart = ws.run(jobs)
    after = server.stats()
    again = Row("restart after SIGKILL", after, restart.stdout)
    again.calls -= killed.calls
    again.analyse -= killed.analyse
    again.generate -= killed.generate
    again.repairs -= killed.repairs
    steps = re.findall(r" (?:analyse|generate|repair) success .* calls=(\d+)", restart.stdout)
    free = sum(1 for calls in steps if calls == "0")
    again.note = (f"doit re-ran {len(steps)} steps (its state was lost), {free} answered by the response cache; "
                  f"total {after['requests_total']} vs {full} uninterrupted; "
                  f"paid twice: {again.twice} (requests in flight at the kill: {before['requests_total'] - cached})")
    return [killed, again]


def report(source: Path, rows: list[Row], info: dict, workers: int) -> str:
    plugins = info["plugins_called"] or 1
    spread = ", ".join(f"{n} plugins x {calls} calls" for calls, n in sorted(info["per_plugin"].items()))
    lines = [f"marketplace: {source} ({plugins} plugins called the API; doit -n {workers}; fake Vertex, no latency,"
             f" no quota; first run {info['first_seconds']:.1f} s)",
             f"  first run per plugin: {spread or 'none'}",
             f"  {'scenario':<26}{'calls':>7}{'analyse':>9}{'generate':>10}{'repairs':>9}{'per plugin':>12}"
             f"{'twice':>7}  outcome"]
    for row in rows:
        lines.append(f"  {row.scenario:<26}{row.calls:>7}{row.analyse:>9}{row.generate:>10}{row.repairs:>9}"
                     f"{row.calls / plugins:>12.2f}{row.twice:>7}  {row.outcome}")
        if row.note:
            lines.append(f"  {'':<26}{row.note}")
    lines.append(f"  (per plugin = calls / {plugins} plugins of the first run; twice = requests whose text the "
                 f"server had already received in that scenario)")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("marketplaces", type=Path, nargs="+")
    parser.add_argument("--workers", type=int, default=2, help="doit -n N (default 2)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-vertex-calls-"))
    try:
        for i, source in enumerate(args.marketplaces):
            rows, info = measure(source.resolve(), root / f"m{i}", args.workers)
            print(report(source, rows, info, args.workers), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
