"""Render the HTML report and take a PNG screenshot of it in headless Chromium, for a person to look at.

    .venv/bin/python bench/report_screenshot.py                       # demo data, 236 plugins, 3 runs
    .venv/bin/python bench/report_screenshot.py --db build/<m>/audit.sqlite3 --quota 1500

Writes report.html and report.png under --out (default build/bench-report/) and prints the paths and
timings. Needs Debian's chromium (`apt-get install -y chromium`).
"""
from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "rules")]

from skillbuild.store.audit import AuditDB, new_run_id  # noqa: E402
from skillbuild.ui.report import write_html  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def demo_db(path: Path, plugins: int = 236, runs: int = 3, seed: int = 7) -> AuditDB:
    """A plausible trail: a few runs over the same plugins, some failures, calls spread over days."""
    rnd = random.Random(seed)
    db = AuditDB(path)
    base = time.time() - runs * 86400
    for r in range(runs):
        run = db.start_run(["doit", "-n", "2"], run_id=new_run_id(base + r * 86400))
        built = failed = kept = skipped = 0
        for i in range(plugins):
            name = f"plugin-{i:03d}"
            if i % 37 == 0:
                db.record(run, name, None, "skip", "skipped", error_message="external source")
                skipped += 1
                continue
            if i % 53 == 0:
                db.record(run, name, None, "keep", "kept")
                kept += 1
                continue
            if r and rnd.random() < 0.6:
                continue  # up to date: no row
            t_an, t_gen = rnd.uniform(1, 12), rnd.uniform(3, 60)
            db.record(run, name, None, "analyse", "success", processing_time_seconds=t_an, input_tokens=4000)
            stamp = base + r * 86400 + i * 30
            db.record_api_calls(run, name, "analyse", [{"time": stamp, "status": 200, "latency_seconds": t_an,
                                                        "input_tokens": 4000, "output_tokens": 600}])
            calls = []
            if rnd.random() < 0.08:
                db.record(run, name, None, "generate", "failure", processing_time_seconds=t_gen,
                          error_class="GateError", error_message="body over 500 lines")
                failed += 1
            else:
                db.record(run, name, None, "generate", "success", processing_time_seconds=t_gen,
                          output_bytes=int(rnd.gauss(11000, 2500)), output_tokens=2800)
                built += 1
            if rnd.random() < 0.1:
                calls.append({"time": stamp + 5, "status": 429, "error": "RESOURCE_EXHAUSTED"})
            calls.append({"time": stamp + 10, "status": 200, "latency_seconds": t_gen, "input_tokens": 6000,
                          "output_tokens": 2800})
            db.record_api_calls(run, name, "generate", calls)
        db.end_run(run, {"built": built, "failed": failed, "kept": kept, "skipped": skipped}, int(failed > 0))
    return db


def screenshot(html: Path, png: Path, width: int, height: int) -> float:
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
             f"--window-size={width},{height}", f"--screenshot={png}", html.as_uri()],
            check=True, capture_output=True, timeout=120,
        )
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", type=Path, help="audit DB to report on (default: generated demo data)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench-report")
    ap.add_argument("--quota", type=int, default=1500, help="requests per day allowed (the dashed line)")
    ap.add_argument("--width", type=int, default=1000)
    ap.add_argument("--height", type=int, default=3000)
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} not found: install it with `apt-get install -y chromium`", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if args.db:
        if not args.db.is_file():
            print(f"{args.db}: no such audit DB (it lives at build/<marketplace>/audit.sqlite3)", file=sys.stderr)
            return 2
        db = AuditDB(args.db)
    else:
        demo = args.out / "demo-audit.sqlite3"
        for p in args.out.glob("demo-audit.sqlite3*"):
            p.unlink()
        db = demo_db(demo)
    t0 = time.monotonic()
    html = write_html(db, args.out / "report.html", args.quota)
    t_html = time.monotonic() - t0
    png = args.out / "report.png"
    t_shot = screenshot(html, png, args.width, args.height)
    print(f"report     {html} ({html.stat().st_size:,} bytes, {t_html:.2f} s)")
    print(f"screenshot {png} ({png.stat().st_size:,} bytes, {t_shot:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
