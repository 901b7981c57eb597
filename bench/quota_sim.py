"""Quota benchmark: plain `doit` (and `doit -n N`) against the quota minimum and the seed's pacing, time-compressed.

    python bench/quota_sim.py [--corpus DIR] [--rpm 15] [--scale 60] [--plugins N] [--safety-factor 1]
                              [--workers default,10] [--seed-rows seed] [--seed-plugins 20] [--repeat 3]

Every row builds a fresh temporary copy of the corpus with `doit provider=vertex` against its own fake Vertex
server (same quota, `--time-scale` = `--scale`), with its own state folders, so no row sees another's quota.
One simulated minute lasts 60/scale real seconds. API latency is 15-40 simulated seconds per call.

Rows: `--workers default` is plain `doit` (no `-n`: the worker count skillbuild picks, calls/workers.py);
a number N is `doit -n N`. `--seed-rows` adds the seed script's pacing presets (`seed`, `seed-initial`: a
sleep after each call, a rest every 10 plugins, a third of the quota), run with one worker like the seed; they
take hours of simulated time, so they build the first --seed-plugins plugins and are extrapolated (marked *).

What is measured: the span from the first request sent to the last answer received (the audit DB's
attempt records: start time plus latency), in simulated minutes. Start-up (process start to first
request: imports, discovery, forks) and shutdown are reported apart, in real seconds. The quota minimum is
2 calls per plugin / the configured rpm; violations are the server's count of admitted requests beyond the
quota. Peak PSS is the memory of doit's whole process tree (shared pages counted once), sampled 4 times a
second. The last line is `default doit: X.XXx the quota minimum, N violations` for the row with no `-n`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "rules")]
from skillbuild.testing import fakevertex  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "claude-code-plugins"
RPD = 100_000  # the per-day quota is not what this bench measures
LATENCY = (15.0, 40.0)  # simulated seconds per call
SEED_PRESETS = ("seed", "seed-initial")


@dataclass
class Row:
    name: str  # "default", "n10", "seed"...
    workers: str  # "default" or a number
    preset: str
    factor: float | None  # None: the preset's own
    par_type: str = "process"


@dataclass
class Outcome:
    row: Row
    plugins: int  # plugins built in this run
    total_plugins: int  # buildable plugins in the corpus
    calls: int  # answers with status 200, as the server counted them
    violations: int
    http_429: int
    span_s: float  # real seconds, first request sent to last answer received
    wall_s: float  # real seconds, process start to exit
    in_flight: int  # most calls in flight at once (attempt records): how many workers really overlapped
    peak_pss_mb: float
    exit_code: int

    @property
    def extrapolated(self) -> bool:
        return self.plugins < self.total_plugins


class Bench:
    def __init__(self, args):
        self.args = args
        self.minute = 60.0 / args.scale  # real seconds per simulated minute

    def minimum(self, plugins: int) -> float:
        """The quota minimum in simulated minutes: 2 calls per plugin / the configured rpm."""
        return 2 * plugins / self.args.rpm

    def span_min(self, o: Outcome) -> float:
        """The span in simulated minutes, scaled to the whole corpus when the row built fewer plugins."""
        return o.span_s / self.minute * o.total_plugins / max(1, o.plugins)

    def ratio(self, o: Outcome) -> float:
        return self.span_min(o) / self.minimum(o.total_plugins)

    def start_server(self, log: Path) -> tuple[subprocess.Popen, str]:
        low, high = (x / self.args.scale for x in LATENCY)
        return fakevertex.spawn("--rpm", f"{self.args.rpm:g}", "--rpd", str(RPD), "--time-scale",
                                f"{self.args.scale:g}", "--latency", f"{low:.4f}-{high:.4f}", "--seed", "1",
                                stderr=log.open("w"))

    def env(self, row: Row, row_dir: Path, market: Path, url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_"))}
        env.update({
            "SKILLBUILD_MARKETPLACE": str(market), "SKILLBUILD_CACHE_ROOT": str(row_dir / "cache"),
            "SKILLBUILD_BUILD_ROOT": str(row_dir / "build"), "SKILLBUILD_PROVIDER": "vertex",
            "SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": "bench", "GOOGLE_CLOUD_PROJECT": "bench",
            "SKILLBUILD_RPM": f"{self.args.rpm:g}", "SKILLBUILD_RPD": str(RPD),
            "SKILLBUILD_TIME_SCALE": f"{self.args.scale:g}", "SKILLBUILD_PACE_PRESET": row.preset,
            # retry backoff scaled like everything else
            "SKILLBUILD_RETRY_BACKOFF_SECONDS": f"{1 / self.args.scale:.4f}", "PYTHONUNBUFFERED": "1",
        })
        if row.factor is not None:
            env["SKILLBUILD_SAFETY_FACTOR"] = f"{row.factor:g}"
        return env

    def run(self, row: Row, work: Path, limit: int | None) -> Outcome:
        row_dir = Path(tempfile.mkdtemp(prefix=f"{row.name}-", dir=work))
        market = row_dir / "marketplace"
        shutil.copytree(self.args.corpus, market, symlinks=True)
        keys = buildable_keys(market)
        chosen = keys[:limit] if limit else keys
        server, url = self.start_server(row_dir / "server.log")
        env = self.env(row, row_dir, market, url)
        workers = [] if row.workers == "default" else ["-n", row.workers]
        par = ["-P", row.par_type] if row.par_type != "process" else []
        tasks = [f"skill:{k}" for k in chosen] if limit else []
        cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *workers, *par, *tasks]
        try:
            code, wall, peak = run_measured(cmd, env, row_dir / "doit.log", self.args.timeout)
            st = stats(url)
        finally:
            server.terminate()
            server.wait(timeout=10)
        span, used = client_span(env)
        return Outcome(row, len(chosen), len(keys), st["by_status"].get("200", 0), st["quota_violations"],
                       st["responses_429"], span, wall, used, peak, code)


def buildable_keys(market: Path) -> list[str]:
    """Keys of the plugins a default `doit` builds (those with calls to make), in discovery order."""
    from skillbuild.config import load_settings
    from skillbuild.discovery import discover
    from skillbuild.ui.status import is_kept

    s = load_settings(env={"SKILLBUILD_MARKETPLACE": str(market)})
    market_ = discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked)
    return [p.key for p in market_.buildable() if not is_kept(p, s.keep_min_bytes, s.provider)]


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_stats", timeout=10) as response:  # loopback only
        return json.loads(response.read())


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its descendants, in MB: shared pages split among their users."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # the process ended between two reads
    return total / 1024


def run_measured(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int, float, float]:
    """(exit code, wall seconds, peak PSS MB of the process tree); -1 when killed at the timeout."""
    began = time.monotonic()
    peak = [0.0]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample():
            while not done.wait(0.25):
                peak[0] = max(peak[0], tree_pss_mb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = -1
        finally:
            done.set()
            sampler.join()
    return code, time.monotonic() - began, peak[0]


def client_span(env: dict) -> tuple[float, int]:
    """(real seconds from the first request sent to the last answer received, most calls in flight at once)."""
    from skillbuild.config import load_settings

    s = load_settings(env=env)
    conn = sqlite3.connect(f"file:{s.audit_db}?mode=ro", uri=True)
    rows = conn.execute("SELECT time, latency_seconds FROM api_calls").fetchall()
    conn.close()
    starts = [datetime.fromisoformat(t).timestamp() for t, _ in rows]
    ends = [a + (lat or 0) for a, (_, lat) in zip(starts, rows)]
    span = (max(ends) - min(starts)) if rows else 0.0
    in_flight = max((sum(1 for a, b in zip(starts, ends) if a <= t < b) for t in starts), default=0)
    return span, in_flight


def median_outcome(outcomes: list[Outcome], bench: Bench) -> Outcome:
    """The run with the median ratio (a real run, not a mix of figures from several)."""
    ordered = sorted(outcomes, key=bench.ratio)
    return ordered[(len(ordered) - 1) // 2]


def table(rows: list[tuple[Outcome, list[Outcome]]], bench: Bench) -> str:
    head = ("| run | pacing | safety | workers | plugins | calls | 429s | violations | span (sim min) | "
            "quota min | x quota min (all runs) | start-up+shutdown (real s) | peak PSS MB | exit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for o, runs in rows:
        r, mark = o.row, "*" if o.extrapolated else ""
        others = ", ".join(f"{bench.ratio(x):.2f}" for x in sorted(runs, key=bench.ratio))
        lines.append(
            f"| {r.name} | {r.preset} | {r.factor if r.factor is not None else 'preset'} | "
            f"{'-n ' + r.workers if r.workers != 'default' else 'default'}{'' if r.par_type == 'process' else ' ' + r.par_type} "
            f"({o.in_flight} in flight) | "
            f"{o.plugins}{f' of {o.total_plugins}' if o.extrapolated else ''} | {o.calls} | {o.http_429} | "
            f"{o.violations} | {bench.span_min(o):.1f}{mark} | {bench.minimum(o.total_plugins):.1f} | "
            f"{bench.ratio(o):.2f}{mark} ({others}) | {o.wall_s - o.span_s:.1f} | {o.peak_pss_mb:.0f} | "
            f"{o.exit_code} |")
    return "\n".join(lines)


def parse_rows(args) -> list[Row]:
    rows = []
    for w in filter(None, (x.strip() for x in args.workers.split(","))):
        if w != "default" and not w.isdigit():
            raise SystemExit(f"--workers takes 'default' or numbers, not {w!r}")
        rows.append(Row("default" if w == "default" else f"n{w}", w, "default", args.safety_factor, args.par_type))
    for name in filter(None, (x.strip() for x in args.seed_rows.split(","))):
        if name not in SEED_PRESETS:
            raise SystemExit(f"--seed-rows takes {', '.join(SEED_PRESETS)}, not {name!r}")
        rows.append(Row(name, "1", name, None))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--rpm", type=float, default=15.0, help="the quota (server) and the configured rpm")
    p.add_argument("--scale", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--plugins", type=int, help="build only the first N plugins in the non-seed rows")
    p.add_argument("--safety-factor", type=float, default=None, help="SKILLBUILD_SAFETY_FACTOR (default: unset)")
    p.add_argument("--workers", default="default", help="comma-separated: 'default' (plain doit) or N (doit -n N)")
    p.add_argument("--par-type", default="process", choices=("process", "thread"), help="doit -P for --workers rows")
    p.add_argument("--seed-rows", default="seed", help=f"comma-separated from {', '.join(SEED_PRESETS)}; '' for none")
    p.add_argument("--seed-plugins", type=int, default=20, help="plugins the seed rows build (extrapolated)")
    p.add_argument("--repeat", type=int, default=1, help="runs per non-seed row; the median is reported")
    p.add_argument("--timeout", type=float, default=900, help="real seconds one run may take before it is killed")
    p.add_argument("--keep", type=Path, help="work here and keep the folders (logs, audit DBs)")
    args = p.parse_args()
    if not (args.corpus / ".claude-plugin" / "marketplace.json").is_file():
        p.error(f"{args.corpus} is not a marketplace (no .claude-plugin/marketplace.json); pass --corpus DIR")
    bench, rows = Bench(args), parse_rows(args)
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-quota-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"corpus {args.corpus}; quota {args.rpm:g} rpm; 1 simulated minute = {bench.minute:.3g} real s; latency "
          f"{LATENCY[0]:g}-{LATENCY[1]:g} s simulated; work folder {work}", flush=True)
    results = []
    try:
        for row in rows:
            seed = row.preset in SEED_PRESETS
            runs = []
            for _ in range(1 if seed else args.repeat):
                o = bench.run(row, work, args.seed_plugins if seed else args.plugins)
                runs.append(o)
                print(f"{row.name}: {o.plugins} plugins, {o.calls} calls, {o.violations} violations, "
                      f"{bench.ratio(o):.2f}x the quota minimum, {o.in_flight} calls in flight at most, "
                      f"peak PSS {o.peak_pss_mb:.0f} MB, exit {o.exit_code}", flush=True)
            results.append((median_outcome(runs, bench), runs))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(results, bench))
    if any(o.extrapolated for o, _ in results):
        print("\n* extrapolated to the whole corpus: the span scales with the plugin count")
    ours = [o for o, _ in results if o.row.preset not in SEED_PRESETS]
    for seed in (o for o, _ in results if o.row.preset in SEED_PRESETS):
        for o in ours:
            print(f"{o.row.name} vs {seed.row.name}: {bench.span_min(seed) / bench.span_min(o):.1f}x faster")
    default = next((o for o in ours if o.row.workers == "default"), None)
    if default is not None:
        print(f"default doit: {bench.ratio(default):.2f}x the quota minimum, {default.violations} violations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
