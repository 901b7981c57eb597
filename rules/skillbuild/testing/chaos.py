"""The chaos check: SIGKILL a doit build at random moments, restart, then prove nothing was lost.

Shared by `bench/chaos.py` (the full run and docs/reliability.md) and tests/test_chaos.py (a small run).

Against the fake Vertex server (latency, no faults) a temp copy of a marketplace is built with
`doit -n 2 provider=vertex`; the run's process group (doit and its workers) is killed with SIGKILL at a
random moment, at least `kills` times, restarting after each kill. After every kill and at the end:

- partial files: every SKILL.md target holds its old bytes, or a complete new file that passes the
  gates and carries our provenance; `.skillbuild-*.tmp` files a kill left are counted, and the next run
  must remove them (none may remain at the end);
- the audit DB passes `PRAGMA integrity_check`; at the end every completed phase (an entry in the
  response cache) has its row: a success, or a failure of class gate or schema for an answer refused
  (rows lost = completed phases without one);
- calls paid twice: the fake server logs a digest of every prompt; a request for work whose answer was
  already in the response cache when the request arrived was paid twice. A request cut by the kill
  before its answer was stored is counted apart (in-flight, re-sent): that money is lost to the kill;
- the final marketplace is byte-compared with an uninterrupted run of a fresh copy against a fresh
  server; the server itself is checked to answer the same request identically twice.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from skillbuild import build, calls, discovery
from skillbuild.calls.response_cache import ResponseCache
from skillbuild.config import PROJECT_ROOT as ROOT, load_settings
from skillbuild.skill import skillmd
from skillbuild.store import writing
from skillbuild.store.audit import AuditDB
from skillbuild.testing import chaos_ops
from skillbuild.testing.fakevertex import FakeVertex

TOKEN = "chaos-token-7d1e"
PROJECT = "skillbuild-chaos"


# ----------------------------------------------------------------------------- the sandbox


@dataclass
class Sandbox:
    """A marketplace copy with its own cache/ and build/ roots, built against one server."""

    root: Path
    url: str = ""

    @property
    def market(self) -> Path:
        return self.root / "market"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_", "TURSO_"))}
        env.update({
            "SKILLBUILD_MARKETPLACE": str(self.market), "SKILLBUILD_CACHE_ROOT": str(self.root / "cache"),
            "SKILLBUILD_BUILD_ROOT": str(self.root / "build"), "SKILLBUILD_VERTEX_ENDPOINT": self.url,
            "SKILLBUILD_VERTEX_TOKEN": TOKEN, "GOOGLE_CLOUD_PROJECT": PROJECT, "SKILLBUILD_RPM": "100000",
            "SKILLBUILD_SAFETY_FACTOR": "1", "PYTHONUNBUFFERED": "1",
        })
        return env

    def settings(self):
        return load_settings(cli={"provider": "vertex"}, env=self.env())

    def command(self, workers: int) -> list[str]:
        return [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-n", str(workers), "provider=vertex"]


def copy_marketplace(source: Path, box: Sandbox) -> None:
    shutil.copytree(source, box.market, symlinks=True)


def synthetic_marketplace(dest: Path, count: int) -> Path:
    """A marketplace of `count` small plugins (tests must not depend on the corpus); every third one
    starts with a short hand-written SKILL.md, which the build replaces after backing it up."""
    entries = []
    for i in range(count):
        name = f"tool-{i:02d}"
        folder = dest / "plugins" / name
        (folder / ".claude-plugin").mkdir(parents=True)
        (folder / "commands").mkdir()
        manifest = {"name": name, "version": f"1.{i}.0", "keywords": ["chaos", f"topic{i}"],
                    "description": f"Helps with chores of kind {i}: checks, reports and fixes for projects."}
        (folder / ".claude-plugin" / "plugin.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (folder / "README.md").write_text(f"# {name}\n\nDoes chore {i}.\n\n## Usage\n\nRun /run-{i}.\n\n"
                                          f"## Configuration\n\nNothing to set.\n")
        (folder / "commands" / f"run-{i}.md").write_text(f"---\ndescription: Run chore {i} on the project\n"
                                                         f"---\nRun chore {i} and report.\n")
        if i % 3 == 0:
            skill = folder / "skills" / name / "SKILL.md"
            skill.parent.mkdir(parents=True)
            skill.write_text(f"---\nname: {name}\ndescription: Hand-written stub for chore {i}\n---\n\nStub.\n")
        entries.append({"name": name, "source": f"./plugins/{name}", "description": manifest["description"]})
    catalog = {"name": "chaos-synthetic", "owner": {"name": "skillbuild"}, "plugins": entries}
    (dest / ".claude-plugin").mkdir(parents=True)
    (dest / ".claude-plugin" / "marketplace.json").write_text(json.dumps(catalog, indent=2) + "\n")
    return dest


# ----------------------------------------------------------------------------- checks


def targets(settings) -> dict[Path, discovery.Plugin]:
    market = discovery.discover(settings.marketplace, settings.skill_path, settings.file_max_bytes,
                                settings.build_untracked)
    return {p.target: p for p in market.plugins if p.state == "ok" and p.target is not None}


def read_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def partial_files(settings, originals: dict[Path, bytes | None]) -> list[str]:
    """Targets that are neither their old bytes nor a complete, valid, provenance-carrying new file."""
    bad = []
    for path, plugin in targets(settings).items():
        now = read_or_none(path)
        if now == originals.get(path):
            continue
        if now is None:
            bad.append(f"{path}: removed")
            continue
        text = now.decode("utf-8", errors="replace")
        reasons = build.gate(settings, plugin, "vertex", text)
        made_by = (skillmd.provenance(text) or {}).get("generator")
        if reasons or made_by != "skillbuild-vertex":
            bad.append(f"{path}: {'; '.join(reasons) or f'no provenance (generator {made_by!r})'}")
    return bad


def integrity(db: Path) -> str:
    if not db.exists():
        return "ok"  # a kill before the first row: nothing to damage
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


@dataclass
class Call:
    plugin: discovery.Plugin
    phase: str  # analyse | generate
    key: str  # response cache key
    digest: str  # what the fake server logs for this prompt


def expected_calls(settings) -> list[Call]:
    """Every call a full build makes, with its cache key and prompt digest, rebuilt the way the provider
    builds them (generation needs the stored analysis, so call this after the final run)."""
    caller = calls.caller_for(settings, paced=False)
    found = []
    prompts = {p: build.read_prompt(settings, p) for p in ("analysis", "generation")}
    for plugin in targets(settings).values():
        from skillbuild.ui import status

        if status.is_kept(plugin, settings.keep_min_bytes, settings.provider):
            continue
        ctx, _ = build.prepared_context(settings, plugin)  # a replaced original is kept, so it is found again
        request = caller.analysis_request(ctx, prompts["analysis"])
        found.append(Call(plugin, "analyse", calls.cache_key(request), digest(request.message)))
        stored = build.analysis_path(settings, plugin)
        if stored.exists():
            request = caller.generation_request(ctx, json.loads(stored.read_text(encoding="utf-8")),
                                                prompts["generation"])
            found.append(Call(plugin, "generate", calls.cache_key(request), digest(request.message)))
    return found


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@dataclass
class Ledger:
    completed: int = 0  # calls whose answer is in the response cache
    rows_lost: list[str] = field(default_factory=list)
    paid_twice: list[str] = field(default_factory=list)
    resent_in_flight: int = 0
    unexpected_requests: int = 0
    requests_total: int = 0
    distinct_keys: int = 0


def ledger(settings, server_stats: dict) -> Ledger:
    """Compare the response cache, the audit DB and the server's request log."""
    expected = expected_calls(settings)
    cache = ResponseCache(settings.responses_dir)
    answered: dict[str, list[float]] = {}
    for req in server_stats["requests"]:
        if req["status"] == 200:
            answered.setdefault(req["digest"], []).append(req["time"])
    rows = _success_rows(settings.audit_db)
    out = Ledger(requests_total=server_stats["requests_total"], distinct_keys=len({c.key for c in expected}))
    known = {c.digest for c in expected}
    out.unexpected_requests = sum(len(t) for d, t in answered.items() if d not in known)
    for call in expected:
        entry = cache.get(call.key)
        if entry is None:
            continue
        out.completed += 1
        stored_at = epoch(entry["created"])
        times = sorted(answered.get(call.digest, []))
        after = [t for t in times if t > stored_at]
        if after:
            out.paid_twice.append(f"{call.plugin.name} {call.phase}: {len(after)} request(s) after it was cached")
        out.resent_in_flight += max(0, len(times) - len(after) - 1)
        if (call.plugin.name, call.phase) not in rows:
            out.rows_lost.append(f"{call.plugin.name} {call.phase}")
    return out


def _success_rows(db: Path) -> set[tuple[str, str]]:
    audit = AuditDB.reader(db)
    if audit is None:
        return set()
    try:
        return audit.answered_steps()  # an answer the gates refused has its row too (a failure of class gate)
    finally:
        audit.close()


def tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of the bytes (or the link target), for every file and symlink."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def tree_differences(a: Path, b: Path) -> list[str]:
    ta, tb = tree(a), tree(b)
    return sorted(rel for rel in set(ta) | set(tb) if ta.get(rel) != tb.get(rel))


def determinism(settings, count: int = 3) -> tuple[int, list[str]]:
    """Send the same analysis and generation requests twice (no cache) and compare the answers."""
    provider = calls.caller_for(settings, paced=False, cached=False)
    prompts = {p: build.read_prompt(settings, p) for p in ("analysis", "generation")}
    checked, differ = 0, []
    for plugin in list(targets(settings).values())[:count]:
        ctx, _ = build.prepared_context(settings, plugin)
        first = provider.analyse(ctx, prompts["analysis"]).value
        again = provider.analyse(ctx, prompts["analysis"]).value
        gen = [provider.generate(ctx, first, prompts["generation"]).value for _ in range(2)]
        checked += 2
        differ += [f"{plugin.name} analyse"] if first != again else []
        differ += [f"{plugin.name} generate"] if gen[0] != gen[1] else []
    return checked, differ


# ----------------------------------------------------------------------------- the run


@dataclass
class Report:
    plugins: int = 0
    kills: int = 0
    kills_with_events: int = 0  # kills that landed after the run had settled at least one plugin
    completed_early: int = 0  # restarts that finished the build before their kill came
    partial: list[str] = field(default_factory=list)
    temps_after_kills: int = 0
    temps_at_end: list[str] = field(default_factory=list)
    integrity_failures: list[str] = field(default_factory=list)
    open_runs: int = 0
    ledger: Ledger = field(default_factory=Ledger)
    final_exit: int | None = None
    reference_exit: int | None = None
    noop_calls: int | None = None
    differences: list[str] = field(default_factory=list)
    files_compared: int = 0
    determinism_checked: int = 0
    determinism_differ: list[str] = field(default_factory=list)
    seconds: float = 0.0
    command: str = ""
    ops: chaos_ops.OpsReport | None = None  # kills around the build (backup, restore, off-site, full cache)

    @property
    def ok(self) -> bool:
        return not (self.partial or self.temps_at_end or self.integrity_failures or self.ledger.rows_lost
                    or self.ledger.paid_twice or self.differences or self.determinism_differ
                    or self.final_exit != self.reference_exit or self.noop_calls
                    or (self.ops is not None and self.ops.problems()))


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL doit and every worker it forked (they share its process group), then wait for all."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    raise RuntimeError(f"process group {proc.pid} still alive 10 s after SIGKILL")


def run_to_end(box: Sandbox, workers: int, log: Path, timeout: float = 1800) -> tuple[int, str]:
    with open(log, "a") as out:
        out.write(f"\n=== run to the end ({time.strftime('%H:%M:%S')})\n")
        out.flush()
        proc = subprocess.run(box.command(workers), env=box.env(), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        out.write(proc.stdout)
    return proc.returncode, proc.stdout


def chaos(source: Path, work: Path, kills: int, *, seed: int = 7, latency: str = "0.05-0.3", workers: int = 2,
          min_delay: float = 0.0, max_delay: float = 4.0, startup_seconds: float = 3.0, probe: int = 3,
          backup_kills: int = 0, restore_kills: int = 0, sqld_upload: bool = False, tmpfs_plugins: int = 0,
          say=print) -> Report:
    """The whole experiment; `source` is a marketplace folder (copied, never touched). With `backup_kills`,
    `restore_kills`, `sqld_upload` or `tmpfs_plugins` the kills around the build follow (testing/chaos_ops.py)."""
    started = time.monotonic()
    rng = random.Random(seed)
    report = Report(command=f"doit -n {workers} provider=vertex")
    box, ref = Sandbox(work / "chaos"), Sandbox(work / "reference")
    copy_marketplace(source, box)
    copy_marketplace(source, ref)
    log = work / "chaos-runs.log"
    with FakeVertex(latency=latency, seed=seed) as server:
        box.url = server.url
        settings = box.settings()
        originals = {path: read_or_none(path) for path in targets(settings)}
        report.plugins = len(originals)
        while report.kills < kills:
            startup = report.kills % 4 == 3  # one kill in four lands while doit is still starting
            delay = rng.uniform(0.2, startup_seconds) if startup else rng.uniform(min_delay, max_delay)
            outcome = _one_killed_run(box, workers, delay, log, startup)
            if outcome is None:
                report.completed_early += 1
                if report.completed_early >= 3:
                    say(f"the build finished {report.completed_early} times before its kill; stopping at "
                        f"{report.kills} kills (use a larger marketplace or shorter delays)")
                    break
                continue
            report.kills += 1
            report.kills_with_events += int(outcome > 0)
            _after_kill(report, settings, originals)
            say(f"kill {report.kills}/{kills}: {outcome} event(s) before the kill; "
                f"partial files so far {len(report.partial)}, temps left {report.temps_after_kills}")
        report.final_exit, _ = run_to_end(box, workers, log)
        _after_kill(report, settings, originals)
        report.temps_at_end = [str(p) for p in writing.leftover_temps(box.market)]
        before = server.stats()["requests_total"]
        run_to_end(box, workers, log)
        report.noop_calls = server.stats()["requests_total"] - before
        stats = server.stats()
        stats["requests_total"] = before
        stats["requests"] = stats["requests"][:before]
        report.ledger = ledger(settings, stats)
        report.open_runs = _open_runs(settings.audit_db)
        built_tree = tree(box.market)  # compared with the reference: the operations below change the folder
        if backup_kills or restore_kills or sqld_upload or tmpfs_plugins:
            report.ops = _operations(box, settings, server, work, rng, latency, seed, backup_kills, restore_kills,
                                     sqld_upload, tmpfs_plugins, say)
            report.ops.ledger = ledger(settings, server.stats())  # every request, the operations' reruns included
    say("uninterrupted reference run on a fresh copy and a fresh server ...")
    with FakeVertex(latency=latency, seed=seed + 1) as server:
        ref.url = server.url
        report.reference_exit, _ = run_to_end(ref, workers, work / "reference-run.log")
        report.determinism_checked, report.determinism_differ = determinism(ref.settings(), probe)
    ref_tree = tree(ref.market)
    report.differences = sorted(rel for rel in set(built_tree) | set(ref_tree)
                                if built_tree.get(rel) != ref_tree.get(rel))
    report.files_compared = len(tree(ref.market))
    report.seconds = time.monotonic() - started
    return report


def _operations(box: Sandbox, settings, server, work: Path, rng: random.Random, latency: str, seed: int,
                backup_kills: int, restore_kills: int, sqld_upload: bool, tmpfs_plugins: int,
                say) -> chaos_ops.OpsReport:
    """Kills during `doit backup` (and an off-site upload whose sqld dies), `doit restore`, a full cache disk."""
    ops, log = chaos_ops.OpsReport(), work / "chaos-ops.log"
    if backup_kills or sqld_upload:
        from skillbuild.testing.sqld import SqldServer, find_sqld

        (work / "sqld").mkdir(exist_ok=True)
        sqld = SqldServer(find_sqld(), work / "sqld").start()
        try:
            say(f"{backup_kills} kill(s) during `doit backup` ...")
            chaos_ops.backup_kills(box, sqld, backup_kills, rng, log, ops)
            if sqld_upload:
                say("sqld killed mid-upload, restarted, backup rerun ...")
                chaos_ops.sqld_dies_mid_upload(box, settings, sqld, rng, log, ops)
        finally:
            sqld.stop()
    if restore_kills:
        say(f"{restore_kills} kill(s) during `doit restore` ...")
        chaos_ops.restore_kills(box, settings, restore_kills, rng, log, ops)
    if tmpfs_plugins:
        say(f"a build of {tmpfs_plugins} plugins with its cache on a {chaos_ops.TMPFS_SIZE} tmpfs ...")
        chaos_ops.tmpfs_cache(work, tmpfs_plugins, latency, seed, log, ops)
    chaos_ops.final(box, settings, server, log, ops)
    return ops


def _one_killed_run(box: Sandbox, workers: int, delay: float, log: Path, during_startup: bool) -> int | None:
    """Start doit and SIGKILL its process group; the number of events it printed, or None when it finished
    before the kill. The kill comes `delay` s after the first event line (mid-work), or, with
    `during_startup`, `delay` s after the start whatever it is doing (loading, importing the SDK)."""
    out_path = log.with_suffix(".current")
    with open(out_path, "w") as out:
        proc = subprocess.Popen(box.command(workers), env=box.env(), cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        if not during_startup:
            _wait_for_first_event(proc, out_path)
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            kill_group(proc)
            finished = False
    text = out_path.read_text(errors="replace")
    when = "during start-up" if during_startup else "after the first event"
    with open(log, "a") as all_runs:
        all_runs.write(f"\n=== run {'finished' if finished else f'killed {delay:.2f} s {when}'}\n{text}")
    out_path.unlink()
    if finished:
        return None
    return len(_events(text))


def _events(text: str) -> list[str]:
    return [line for line in text.splitlines() if line[:2].isdigit() and " [" in line[:20]]


def _wait_for_first_event(proc: subprocess.Popen, out_path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if _events(out_path.read_text(errors="replace")):
            return
        time.sleep(0.05)


def _after_kill(report: Report, settings, originals: dict[Path, bytes | None]) -> None:
    report.partial += partial_files(settings, originals)
    report.temps_after_kills += len(writing.leftover_temps(settings.marketplace))
    state = integrity(settings.audit_db)
    if state != "ok":
        report.integrity_failures.append(state)


def _open_runs(db: Path) -> int:
    audit = AuditDB.reader(db)
    if audit is None:
        return 0
    try:
        return audit.open_runs()
    finally:
        audit.close()


# ----------------------------------------------------------------------------- figures


def rows(report: Report) -> list[tuple[str, str]]:
    led = report.ledger
    same = "identical" if not report.differences else f"{len(report.differences)} file(s) differ"
    return [
        ("plugins with a SKILL.md target", str(report.plugins)),
        ("kills survived (SIGKILL of doit and its workers)", f"{report.kills} ({report.kills_with_events} after "
                                                             "at least one plugin had settled)"),
        ("partial or invalid SKILL.md files found (after every kill and at the end)", str(len(report.partial))),
        ("temp files left by kills / left after the final run", f"{report.temps_after_kills} / "
                                                                f"{len(report.temps_at_end)}"),
        ("audit DB `PRAGMA integrity_check` failures", str(len(report.integrity_failures))),
        ("audit rows lost (completed phases without their row)", f"{len(led.rows_lost)} of {led.completed}"),
        ("calls paid twice for a completed phase", str(len(led.paid_twice))),
        ("in-flight calls cut by a kill and sent again", str(led.resent_in_flight)),
        ("requests the server answered / distinct calls needed", f"{led.requests_total} / {led.distinct_keys}"),
        ("runs left open in the audit DB by kills (no end time)", str(report.open_runs)),
        ("calls made by a rerun after recovery", str(report.noop_calls)),
        ("final marketplace vs an uninterrupted run", f"{same} ({report.files_compared} files compared)"),
        ("exit status: recovered run / uninterrupted run", f"{report.final_exit} / {report.reference_exit}"),
        ("fake server deterministic (same request twice, same answer)",
         f"{'yes' if not report.determinism_differ else 'NO: ' + ', '.join(report.determinism_differ)} "
         f"({report.determinism_checked} requests)"),
    ] + (chaos_ops.rows(report.ops) if report.ops is not None else [])
