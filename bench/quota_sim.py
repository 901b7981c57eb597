"""Quota benchmark: skillbuild's throttle against the seed's pacing, time-compressed, on the fake Vertex server.

    python bench/quota_sim.py [--corpus DIR] [--rows f1-n1,f1-n4,...] [--plugins N] [--seed-plugins N]

One simulated minute lasts one real second: the throttle runs with time_scale=60 and the fake server with
--time-scale 60, both with a free-tier quota (15 requests per minute, 1,500 per day). API latency is
15-40 simulated seconds per call (0.25-0.67 real seconds). Every row builds a fresh temporary copy of
the corpus with `doit provider=vertex` and its own state folders and its own server, so no row sees
another's quota.

Rows: f<factor>-n<workers> is skillbuild's throttle at that safety factor with `doit -n <workers>`;
`seed` and `seed-initial` are the seed script's pacing presets (45-60 s or 90-120 s after each call, a
rest every 10 plugins), run sequentially like the seed. The seed rows take hours of simulated time, so
they build the first --seed-plugins plugins and the table extrapolates them to the full corpus (marked).

Wall time is the whole `doit` run (process start to exit) in simulated minutes; `span` is first to last
request as the server saw them. The theoretical minimum is calls / (rpm / safety factor). The latency
floor is what the workers alone allow: calls x mean latency / workers; a row cannot beat the larger of
the two. 429s and quota violations are the server's counts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "rules")]
from skillbuild.testing import fakevertex  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "claude-code-plugins"
SCALE = 60.0  # simulated seconds per real second
RPM, RPD = 15, 1500
LATENCY = (15.0, 40.0)  # simulated seconds per call
ROWS = {
    "f1-n1": {"factor": 1, "workers": 1},
    "f1-n4": {"factor": 1, "workers": 4},
    "f1-n10": {"factor": 1, "workers": 10},
    "f3-n1": {"factor": 3, "workers": 1},
    "f3-n4": {"factor": 3, "workers": 4},
    "seed": {"factor": 3, "workers": 1, "preset": "seed"},
    "seed-initial": {"factor": 3, "workers": 1, "preset": "seed-initial"},
}


@dataclass
class Outcome:
    name: str
    factor: float
    workers: int
    preset: str
    plugins: int  # plugins built in this run
    total_plugins: int  # plugins in the corpus
    wall_s: float  # real seconds = simulated minutes
    span_s: float
    calls: int  # admitted requests (HTTP 200)
    http_429: int
    violations: int
    exit_code: int

    @property
    def extrapolated(self) -> bool:
        return self.plugins < self.total_plugins

    def scale_up(self, value: float) -> float:
        return value * self.total_plugins / self.plugins

    @property
    def full_calls(self) -> float:
        return self.scale_up(self.calls) if self.extrapolated else self.calls

    @property
    def full_wall(self) -> float:
        """Startup and shutdown (wall minus span) once, plus the span scaled to the whole corpus."""
        return self.wall_s - self.span_s + self.scale_up(self.span_s) if self.extrapolated else self.wall_s

    def minimum(self) -> float:
        """Theoretical minimum in simulated minutes: calls / allowed requests per minute."""
        return self.full_calls / (RPM / self.factor)

    def latency_floor(self) -> float:
        return self.full_calls * (sum(LATENCY) / 2 / 60) / self.workers


def start_server(log: Path) -> tuple[subprocess.Popen, str]:
    low, high = (x / SCALE for x in LATENCY)
    return fakevertex.spawn("--rpm", str(RPM), "--rpd", str(RPD), "--time-scale", str(SCALE),
                            "--latency", f"{low:.4f}-{high:.4f}", "--seed", "1", stderr=log.open("w"))


def stats(url: str) -> dict:
    with urllib.request.urlopen(url + "/_stats", timeout=10) as response:  # loopback only
        return json.loads(response.read())


def buildable_keys(market: Path) -> list[str]:
    """Keys of the plugins a default `doit` builds (those with calls to make), in discovery order."""
    from skillbuild.config import load_settings
    from skillbuild.discovery import discover
    from skillbuild.ui.status import is_kept

    s = load_settings(env={"SKILLBUILD_MARKETPLACE": str(market)})
    market_ = discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked)
    return [p.key for p in market_.buildable() if not is_kept(p, s.keep_min_bytes, s.provider)]


def run_row(name: str, spec: dict, corpus: Path, work: Path, limit: int | None, timeout: float) -> Outcome:
    row_dir = work / name
    market = row_dir / "marketplace"
    shutil.copytree(corpus, market, symlinks=True)
    keys = buildable_keys(market)
    chosen = keys[:limit] if limit else keys
    server, url = start_server(row_dir / "server.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_"))}
    env.update({
        "SKILLBUILD_MARKETPLACE": str(market), "SKILLBUILD_CACHE_ROOT": str(row_dir / "cache"),
        "SKILLBUILD_BUILD_ROOT": str(row_dir / "build"), "SKILLBUILD_PROVIDER": "vertex",
        "SKILLBUILD_VERTEX_ENDPOINT": url, "SKILLBUILD_VERTEX_TOKEN": "bench", "GOOGLE_CLOUD_PROJECT": "bench",
        "SKILLBUILD_RPM": str(RPM), "SKILLBUILD_RPD": str(RPD), "SKILLBUILD_SAFETY_FACTOR": str(spec["factor"]),
        "SKILLBUILD_TIME_SCALE": str(SCALE), "SKILLBUILD_PACE_PRESET": spec.get("preset", "default"),
        # retry backoff scaled like everything else: 1 s becomes 1/60 s
        "SKILLBUILD_RETRY_BACKOFF_SECONDS": f"{1 / SCALE:.4f}", "PYTHONUNBUFFERED": "1",
    })
    tasks = [f"skill:{k}" for k in chosen] if limit else []
    cmd = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-n", str(spec["workers"]), *tasks]
    began = time.monotonic()
    try:
        with (row_dir / "doit.log").open("w") as out:
            code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        code = -1  # subprocess.run killed it; the row is reported as such
    wall = time.monotonic() - began
    try:
        st = stats(url)
        (row_dir / "server-stats.json").write_text(json.dumps(st))
    finally:
        server.terminate()
        server.wait(timeout=10)
    times = st["request_times"]
    return Outcome(name, spec["factor"], spec["workers"], spec.get("preset", "skillbuild"), len(chosen),
                   len(keys), wall, (max(times) - min(times)) if times else 0.0,
                   st["by_status"].get("200", 0), st["responses_429"], st["quota_violations"], code)


def table(rows: list[Outcome]) -> str:
    head = ("| run | pacing | safety | -n | plugins | calls | 429s | violations | wall (sim min) | span | "
            "theoretical min | x min | latency floor | exit |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        mark = "*" if r.extrapolated else ""
        span = r.scale_up(r.span_s) if r.extrapolated else r.span_s
        lines.append(
            f"| {r.name} | {r.preset} | {r.factor:g} | {r.workers} | "
            f"{r.plugins}{f' of {r.total_plugins}' if r.extrapolated else ''} | "
            f"{r.full_calls:.0f}{mark} | {r.http_429} | {r.violations} | {r.full_wall:.1f}{mark} | {span:.1f}{mark} | "
            f"{r.minimum():.1f} | {r.full_wall / r.minimum():.2f} | {r.latency_floor():.1f} | {r.exit_code} |")
    for factor in sorted({r.factor for r in rows}):
        calls = max((r.full_calls for r in rows if not r.extrapolated), default=0)
        if calls:
            lines.append(f"| theoretical minimum | calls / (rpm {RPM} / {factor:g}) | {factor:g} | - | - | "
                         f"{calls:.0f} | - | - | {calls / (RPM / factor):.1f} | - | - | 1.00 | - | - |")
    return "\n".join(lines)


def verdicts(rows: list[Outcome]) -> list[str]:
    out = []
    bad = [r.name for r in rows if r.violations]
    out.append(f"0 quota violations: {'yes' if not bad else 'NO (' + ', '.join(bad) + ')'}")
    ours = [r for r in rows if r.preset == "skillbuild" and not r.extrapolated and r.exit_code != -1]
    for factor in sorted({r.factor for r in ours}):
        best = min((r for r in ours if r.factor == factor), key=lambda r: r.full_wall / r.minimum())
        ratio = best.full_wall / best.minimum()
        out.append(f"<= 1.25x the theoretical minimum at safety factor {factor:g}: "
                   f"{'yes' if ratio <= 1.25 else 'NO'} ({best.name}: {ratio:.2f}x)")
    for seed in (r for r in rows if r.preset != "skillbuild"):
        for r in ours:
            speedup = seed.full_wall / r.full_wall
            out.append(f"{r.name} vs {seed.name}: {speedup:.1f}x faster "
                       f"{'(>= 10x: yes)' if speedup >= 10 else '(>= 10x: NO)'}")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--plugins", type=int, help="build only the first N plugins in skillbuild's rows")
    p.add_argument("--seed-plugins", type=int, default=20, help="plugins the seed rows build (extrapolated)")
    p.add_argument("--timeout", type=float, default=900, help="real seconds one row may take before it is killed")
    p.add_argument("--keep", type=Path, help="work here and keep the folders (logs, audit DBs)")
    args = p.parse_args()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        p.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not (args.corpus / ".claude-plugin" / "marketplace.json").is_file():
        p.error(f"{args.corpus} is not a marketplace (no .claude-plugin/marketplace.json); pass --corpus DIR")
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-quota-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"corpus {args.corpus}; 1 simulated minute = 1 real second; quota {RPM} rpm, {RPD} rpd; latency "
          f"{LATENCY[0]:g}-{LATENCY[1]:g} s simulated; work folder {work}", flush=True)
    rows = []
    try:
        for name in names:
            spec = ROWS[name]
            limit = args.seed_plugins if "preset" in spec else args.plugins
            row = run_row(name, spec, args.corpus, work, limit, args.timeout)
            rows.append(row)
            print(f"{name}: {row.plugins} plugins, {row.calls} calls, {row.http_429} 429s, {row.violations} "
                  f"violations, {row.wall_s:.1f} simulated min, exit {row.exit_code}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    if any(r.extrapolated for r in rows):
        print("\n* extrapolated from the plugins built: calls and the span (first to last request, the seed's "
              "rest every 10 plugins included) scale with the plugin count; startup and shutdown count once")
    print()
    for line in verdicts(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
