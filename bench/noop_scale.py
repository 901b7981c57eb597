"""No-op cost at scale: synthetic marketplaces of 236 x size plugins, each built once offline, then re-run.

    python bench/noop_scale.py --sizes 1,10,100 [--corpus PATH] [--runs 3] [--keep DIR]

Each plugin of the corpus (catalog entries and folders outside it) is copied `size` times under
`copies/<n>/`, renamed `<name>-<n>`, and listed in a new catalog. The first run builds everything offline
(`doit -n 2`); then the no-op (`doit`, nothing stale) is timed `--runs` times: the median wall time and the
largest peak RSS of the doit process are printed per size, and the last line sums them up. The runs keep
Python's bytecode cache as an installed tool does (PYTHONDONTWRITEBYTECODE is dropped for them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOIT = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-d", str(ROOT)]
sys.path.insert(0, str(ROOT / "rules"))

from skillbuild.discovery import CATALOG, discover  # noqa: E402


def corpus_plugins(corpus: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every plugin of the corpus that builds (236: a shadowed copy of another plugin and
    external sources are left out), each with a folder of its own."""
    market = discover(corpus)
    return [(p.name, p.path) for p in market.plugins
            if p.state == "ok" and p.path is not None and p.path != market.root]


def make_marketplace(corpus: Path, size: int, dest: Path) -> int:
    plugins = corpus_plugins(corpus)
    entries = []
    for n in range(size):
        for name, folder in plugins:
            rel = Path("copies") / str(n) / folder.relative_to(corpus.resolve())
            shutil.copytree(folder, dest / rel, symlinks=True, dirs_exist_ok=True)
            entries.append({"name": f"{name}-{n}", "source": f"./{rel.as_posix()}",
                            "description": f"copy {n} of {name}"})
    (dest / CATALOG).parent.mkdir(parents=True, exist_ok=True)
    (dest / CATALOG).write_text(json.dumps({"name": f"noop-scale-{size}", "owner": {"name": "bench"},
                                            "plugins": entries}, indent=1))
    return len(entries)


def doit(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(DOIT + args, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def measure(corpus: Path, size: int, work: Path, runs: int, jobs: int) -> tuple[int, float, int, float]:
    market = work / f"market-{size}"
    if not (market / CATALOG).is_file():
        if market.exists():
            shutil.rmtree(market)
        make_marketplace(corpus, size, market)
    env = {**os.environ, "SKILLBUILD_MARKETPLACE": str(market), "SKILLBUILD_PROVIDER": "offline",
           "SKILLBUILD_CACHE_ROOT": str(work / f"cache-{size}"), "SKILLBUILD_BUILD_ROOT": str(work / f"build-{size}")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: modules load from their bytecode, not compiled anew
    build, proc = doit(["-n", str(jobs)], env)
    times = []
    for _ in range(runs):
        wall, proc = doit([], env)
        times.append(wall)
        ran = [line for line in proc.stdout.splitlines() if " generate " in line or " analyse " in line]
        if ran:
            print(f"  warning: the no-op ran {len(ran)} build steps", file=sys.stderr)
    rss, cpu = _usage_of_noop(env)
    return _count_plugins(market), statistics.median(times), rss, cpu, build


def _usage_of_noop(env: dict) -> tuple[int, float]:
    """Peak RSS (KiB) and CPU seconds (user + system) of one more no-op, measured alone in a fresh child that
    runs it: CPU time says more than wall time on a busy machine."""
    code = ("import resource,subprocess,sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
            "stderr=subprocess.DEVNULL); u = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(u.ru_maxrss, u.ru_utime + u.ru_stime)")
    out = subprocess.run([sys.executable, "-c", code, *DOIT], env=env, capture_output=True, text=True)
    rss, cpu = out.stdout.split()
    return int(rss), float(cpu)


def _count_plugins(market: Path) -> int:
    return len(json.loads((market / CATALOG).read_text())["plugins"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,10", help="copies of the corpus, comma-separated (default 1,10)")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "claude-code-plugins")
    parser.add_argument("--runs", type=int, default=3, help="no-op runs per size; the median is printed")
    parser.add_argument("--jobs", type=int, default=2, help="-n for the first (building) run")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (reused on the next call)")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-noop-"))
    work.mkdir(parents=True, exist_ok=True)
    summary = []
    try:
        for size in sizes:
            plugins, noop, rss, cpu, build = measure(args.corpus.resolve(), size, work, args.runs, args.jobs)
            print(f"size {size}: {plugins} plugins, build {build:.1f} s, no-op {noop:.2f} s "
                  f"(median of {args.runs}; CPU {cpu:.2f} s), peak RSS {rss / 1024:.0f} MiB", flush=True)
            summary.append(f"{plugins} {noop:.2f} s")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("no-op: " + ", ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
