"""Offline build of a real marketplace: first-run time, no-op re-run time, outcomes, validator pass rate, and\nthe written skills' figures (bench/skill_figures.py: sizes, references, empty sections, coverage, links).

    python bench/corpus_run.py PATH/TO/claude-code-plugins [--keep DIR]

Works on a temporary copy (the corpus is never touched), with its own cache/ and build/ folders.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENT = re.compile(r"^\d\d:\d\d:\d\d \[\d+/\d+\] \S+ (analyse|generate|repair|keep|skip) ")
DOIT = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-d", str(ROOT)]


def run(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run(DOIT + args, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc


def status_rows(env: dict) -> list[tuple[str, str, str]]:
    _, proc = run(["status"], env)
    rows = []
    for line in proc.stdout.splitlines():
        match = re.match(r"^(\S+)\s+(fresh|stale|kept|skipped|failed)\s+(\S+)\s+(.*)$", line)
        if match:
            rows.append((match.group(1), match.group(2), match.group(4)))
    return rows


def validate(paths: list[Path]) -> tuple[int, list[str]]:
    from skills_ref import validate as ref_validate

    bad = []
    for path in paths:
        problems = ref_validate(path.parent)
        if problems:
            bad.append(f"{path}: {'; '.join(problems)}")
    return len(paths) - len(bad), bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-corpus-"))
    market = work / "marketplace"
    if market.exists():
        shutil.rmtree(market)
    shutil.copytree(args.corpus, market, symlinks=True)
    env = {**os.environ, "SKILLBUILD_MARKETPLACE": str(market), "SKILLBUILD_PROVIDER": "offline",
           "SKILLBUILD_CACHE_ROOT": str(work / "cache"), "SKILLBUILD_BUILD_ROOT": str(work / "build")}
    first, proc = run(["-n", "2"], env)
    noop, proc2 = run([], env)
    executed = [line for line in proc2.stdout.splitlines() if line.startswith(".") or EVENT.match(line)]
    rows = status_rows(env)
    states = Counter(state for _, state, _ in rows)
    targets = sorted(market.rglob("SKILL.md"))
    ours = [p for p in targets if "generator: \"skillbuild-" in p.read_text(errors="replace")]
    valid, bad = validate(ours)
    print(f"corpus: {args.corpus} ({len(rows)} plugins found)")
    print(f"first full offline run (doit -n 2): {first:.2f} s, exit {proc.returncode}")
    print(f"no-op re-run (doit): {noop:.2f} s, exit {proc2.returncode}, tasks executed: {len(executed)} "
          "(a plugin with bad input fails again on every run)")
    print("outcomes: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    summary = next((line for line in proc.stdout.splitlines() if line.startswith("built ")), "no summary line")
    print(f"first run's summary: {summary}")
    shadowed = [(key, detail) for key, state, detail in rows if state == "skipped" and "shadowed by" in detail]
    print(f"counts: built {states['fresh']}, kept {states['kept']}, shadowed {len(shadowed)}, "
          f"skipped {states['skipped'] - len(shadowed)}, failed {states['failed']}, stale {states['stale']}")
    print(f"generated SKILL.md passing `agentskills validate`: {valid}/{len(ours)}")
    for key, state, detail in rows:
        if state in ("failed", "skipped", "stale"):
            print(f"  {state:<7} {key}: {detail[:200]}")
    for line in bad[:20]:
        print("  invalid:", line)
    sys.path.insert(0, str(ROOT / "bench"))
    from skill_figures import figures, report

    print("\n".join(report(figures(market))))
    if not args.keep:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
