"""What a run start's reaping costs on a marketplace with nothing to reap, against the old marketplace-wide walk.

    PYTHONPATH=rules python bench/reap_cost.py PATH/TO/claude-code-plugins

Read-only on the marketplace (nothing there to remove); state folders are temporary. Best of 5, warm cache.
"""
import sys, time, tempfile
from pathlib import Path
from skillbuild.config import load_settings
from skillbuild.discovery import discover
from skillbuild.safety import leftovers, runlock
from skillbuild.store import writing
from skillbuild import build

corpus = Path(sys.argv[1])
tmp = Path(tempfile.mkdtemp())
s = load_settings(env={"SKILLBUILD_MARKETPLACE": str(corpus), "SKILLBUILD_CACHE_ROOT": str(tmp / "c"),
                       "SKILLBUILD_BUILD_ROOT": str(tmp / "b"), "SKILLBUILD_PROVIDER": "offline"})
market = discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked, s.exclude)
folders = [p.target.parent for p in market.plugins if p.target is not None]
s.responses_dir.mkdir(parents=True)
for i in range(256):
    (s.responses_dir / f"{i:02x}").mkdir()
audit = build.open_audit(s)
audit.start_run(["doit"], run_id="20261202T000000Z-1")
from skillbuild.calls.throttle import Throttle
Throttle(s.throttle_db)
def timed(fn, n=5):
    best = 1e9
    for _ in range(n):
        t = time.perf_counter(); fn(); best = min(best, time.perf_counter() - t)
    return best
old = timed(lambda: writing.leftover_temps(s.marketplace) + writing.leftover_temps(s.cache_dir))
new = timed(lambda: (runlock.sweep_leftovers([*folders, s.analysis_dir, s.rejected_dir, s.cache_dir, s.originals_dir,
                                                s.journal_dir, s.build_dir, s.build_root], s.responses_dir),
                     s.journal().reap(), leftovers.release_reservations(s),
                     leftovers.close_dead_runs(audit, "20261202T000000Z-1")))
print(f"plugins {len(market.plugins)}, skill folders {len(folders)}")
print(f"old marketplace-wide rglob: {old*1000:.1f} ms; new full reaping (sweep + journal + throttle + runs): {new*1000:.1f} ms")
