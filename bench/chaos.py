"""Chaos run: SIGKILL the whole doit process tree at random moments, restart, then prove nothing was lost.

    python bench/chaos.py [--kills 20] [--corpus PATH | --synthetic N] [--seed S] [--latency 0.05-0.3]
                          [--workers 2] [--markdown] [--with-tests] [--keep DIR]

Against the fake Vertex server (latency, no faults) a temp copy of a marketplace is built with
`doit -n 2 provider=vertex`; the run's process group (doit and its workers) is killed with SIGKILL at a
random moment, at least --kills times, restarting after each kill. After every kill and at the end:

- partial files: every SKILL.md target holds its old bytes, or a complete new file that passes the
  gates and carries our provenance; `.skillbuild-*.tmp` files a kill left are counted, and the next run
  must remove them (none may remain at the end);
- the audit DB passes `PRAGMA integrity_check`; at the end every completed phase (an entry in the
  response cache) has a success row (rows lost = completed phases without one);
- calls paid twice: the fake server logs a digest of every prompt; a request for work whose answer was
  already in the response cache when the request arrived was paid twice. A request cut by the kill
  before its answer was stored is counted apart (in-flight, re-sent): that money is lost to the kill;
- the final marketplace is byte-compared with an uninterrupted run of a fresh copy against a fresh
  server; the server itself is checked to answer the same request identically twice.

`--markdown` prints docs/reliability.md (with `--with-tests`, the fault matrix and bad-input tables
come from running tests/test_faults.py and tests/test_bad_input.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path[:0] = [str(ROOT), str(ROOT / "rules")]

from skillbuild import discovery, build  # noqa: E402
from skillbuild.skill import skillmd  # noqa: E402
from skillbuild.store import writing  # noqa: E402
from skillbuild.config import load_settings  # noqa: E402
from skillbuild.testing.fakevertex import FakeVertex  # noqa: E402
from skillbuild.providers import vertex  # noqa: E402
from skillbuild.calls.response_cache import ResponseCache  # noqa: E402

# The shared corpus sits beside the checkout (../shared/corpus/...); pass another path as an argument.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "claude-code-plugins"
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


def expected_calls(settings, originals: dict[Path, bytes | None] | None = None) -> list[Call]:
    """Every call a full build makes, with its cache key and prompt digest, rebuilt the way the provider
    builds them (generation needs the stored analysis, so call this after the final run). `originals`: each
    target's bytes before the build, since a hand-written one was the first input of both calls."""
    provider = vertex.build(settings)
    calls = []
    prompts = {p: build.read_prompt(settings, p) for p in ("analysis", "generation")}
    analyse_config = provider._config(vertex.ANALYSIS_MAX_TOKENS, json_mode=True)
    generate_config = provider._config(vertex.GENERATION_MAX_TOKENS, json_mode=False)
    for plugin in targets(settings).values():
        from skillbuild.ui import status

        if status.is_kept(plugin, settings.keep_min_bytes, settings.provider):
            continue
        before = (originals or {}).get(plugin.target)
        hand = before.decode("utf-8", errors="replace") if before is not None else None
        hand = hand if hand is not None and skillmd.is_hand_written(hand) else None
        ctx = discovery.plugin_context(plugin, settings.input_file_budget, settings.input_total_budget, hand)
        message = vertex.analysis_message(ctx)
        calls.append(Call(plugin, "analyse", provider._cache_key(prompts["analysis"], message, analyse_config),
                          digest(message)))
        stored = build.analysis_path(settings, plugin)
        if stored.exists():
            message = vertex.generation_message(ctx, json.loads(stored.read_text(encoding="utf-8")), None)
            calls.append(Call(plugin, "generate",
                              provider._cache_key(prompts["generation"], message, generate_config), digest(message)))
    return calls


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


def ledger(settings, server_stats: dict, originals: dict[Path, bytes | None] | None = None) -> Ledger:
    """Compare the response cache, the audit DB and the server's request log."""
    calls = expected_calls(settings, originals)
    cache = ResponseCache(settings.cache_dir / "responses")
    answered: dict[str, list[float]] = {}
    for req in server_stats["requests"]:
        if req["status"] == 200:
            answered.setdefault(req["digest"], []).append(req["time"])
    rows = _success_rows(build.audit_path(settings))
    out = Ledger(requests_total=server_stats["requests_total"], distinct_keys=len({c.key for c in calls}))
    known = {c.digest for c in calls}
    out.unexpected_requests = sum(len(t) for d, t in answered.items() if d not in known)
    for call in calls:
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
    conn = sqlite3.connect(db)
    try:
        return {(r[0], r[1]) for r in conn.execute(
            "SELECT DISTINCT plugin_name, phase FROM enhancements WHERE status = 'success'")}
    finally:
        conn.close()


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
    provider = vertex.build(settings)
    provider.cache = None
    prompts = {p: build.read_prompt(settings, p) for p in ("analysis", "generation")}
    checked, differ = 0, []
    for plugin in list(targets(settings).values())[:count]:
        ctx = discovery.plugin_context(plugin, settings.input_file_budget, settings.input_total_budget)
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

    @property
    def ok(self) -> bool:
        return not (self.partial or self.temps_at_end or self.integrity_failures or self.ledger.rows_lost
                    or self.ledger.paid_twice or self.differences or self.determinism_differ
                    or self.final_exit != self.reference_exit or self.noop_calls)


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
          say=print) -> Report:
    """The whole experiment; `source` is a marketplace folder (copied, never touched)."""
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
        report.ledger = ledger(settings, stats, originals)
        report.open_runs = _open_runs(build.audit_path(settings))
    say("uninterrupted reference run on a fresh copy and a fresh server ...")
    with FakeVertex(latency=latency, seed=seed + 1) as server:
        ref.url = server.url
        report.reference_exit, _ = run_to_end(ref, workers, work / "reference-run.log")
        report.determinism_checked, report.determinism_differ = determinism(ref.settings(), probe)
    report.differences = tree_differences(box.market, ref.market)
    report.files_compared = len(tree(ref.market))
    report.seconds = time.monotonic() - started
    return report


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
    state = integrity(build.audit_path(settings))
    if state != "ok":
        report.integrity_failures.append(state)


def _open_runs(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("SELECT COUNT(*) FROM runs WHERE ended IS NULL").fetchone()[0]
    finally:
        conn.close()


# ----------------------------------------------------------------------------- output


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
        ("audit rows lost (completed phases without a success row)", f"{len(led.rows_lost)} of {led.completed}"),
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
    ]


def plain(report: Report) -> str:
    width = max(len(k) for k, _ in rows(report))
    lines = [f"{k:<{width}}  {v}" for k, v in rows(report)]
    lines.append(f"{'result':<{width}}  {'PASS' if report.ok else 'FAIL'} in {report.seconds:.0f} s")
    for label, items in (("partial", report.partial), ("rows lost", report.ledger.rows_lost),
                         ("paid twice", report.ledger.paid_twice), ("differs", report.differences),
                         ("temp left", report.temps_at_end)):
        lines += [f"  {label}: {item}" for item in items[:10]]
    return "\n".join(lines)


def markdown_table(report: Report) -> str:
    lines = ["| Figure | Value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows(report)]
    return "\n".join(lines)


def run_tests(files: list[str]) -> dict[str, str]:
    """Run pytest on `files`; test id (name[param]) -> passed | failed | skipped."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                        *files], cwd=ROOT, capture_output=True, text=True)
        results = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome = "passed"
            for child in case:
                outcome = {"failure": "failed", "error": "failed", "skipped": "skipped"}.get(child.tag, outcome)
            results[case.get("name")] = outcome
    return results


def _load_test_module(name: str):
    import importlib.util

    for path in (ROOT, ROOT / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _verdict(results: dict[str, str], prefix: str) -> str:
    found = [v for k, v in results.items() if k.startswith(prefix)]
    if not found:
        return "not run"
    return "passed" if all(v == "passed" for v in found) else ", ".join(sorted(set(found)))


def verdict_tables(results: dict[str, str] | None) -> str:
    faults, bad = _load_test_module("test_faults"), _load_test_module("test_bad_input")
    show = (lambda prefix: _verdict(results, prefix)) if results is not None else (lambda prefix: "see tests")
    lines = ["## Fault matrix", "",
             "`pytest tests/test_faults.py` runs each row through the real `doit provider=vertex` on a copy of "
             "examples/ (three plugins to build, `deploy-checker` starting with a hand-written stub) with "
             "`request_timeout=1`, `max_attempts=3` and short backoff. A failure row passes only if the stub is "
             "byte-for-byte unchanged, every plugin has an audit row with the named error class, and the run "
             "summary has a `FAILED <plugin> (<phase>): <reason>` line for each; a retry row only if an "
             "`api_calls` row records the fault and all three plugins were built.", "",
             "| Fault | Scripted as | Outcome | Evidence in the audit DB | Test |", "|---|---|---|---|---|"]
    for f in faults.FAULTS:
        lines.append(f"| {f.name} | `--fault {f.spec}` | {f.expect}: {f.outcome} | `{f.evidence}` | "
                     f"{show('test_fault_ends_in_retry_or_clean_failure[' + f.name + ']')} |")
    for name, outcome, evidence, test in faults.OTHER_FAULTS:
        lines.append(f"| {name} | real process | {outcome} | {evidence} | {show(test)} |")
    lines += ["", "## Bad input", "",
              "`pytest tests/test_bad_input.py` builds one hostile marketplace (examples/ plus every bad input "
              "below) with `doit -n 2 provider=vertex`, recording every request body the fake server receives; "
              "the model obeys the injection once (its first SKILL.md for the injected plugin is named "
              "`../../pwned`, its repair echoes the injected sentence).", "",
              "| Bad input | Outcome | Test |", "|---|---|---|"]
    lines += [f"| {what} | {outcome} | {show(test)} |" for what, outcome, test in bad.BAD_INPUTS]
    return "\n".join(lines)


def document(report: Report, command: str, source: Path, with_tests: bool) -> str:
    results = run_tests(["tests/test_faults.py", "tests/test_bad_input.py"]) if with_tests else None
    led = report.ledger
    parts = [
        "# Reliability: what a kill, a fault or bad input can do to a build",
        "",
        f"Generated by `{command}` (the fault and bad-input verdicts come from running their tests; "
        "`pytest tests/test_chaos.py tests/test_faults.py tests/test_bad_input.py` checks the same claims in "
        "about two minutes).",
        "",
        "## Kills",
        "",
        f"A temp copy of `{source}` ({report.plugins} plugins with a SKILL.md target) was built with "
        f"`{report.command}` against the fake Vertex server (0.05-0.3 s latency, no faults). The whole process "
        f"group (doit and its workers) got SIGKILL {report.kills} times at random moments, restarting after "
        "each: most kills come a random 0-4 s after the run printed its first event, one in four during "
        "start-up. After every kill the targets, the temp files and the audit DB were checked; then the build "
        "ran to the end, a second run checked that nothing was left to pay for, and the result was "
        "byte-compared with an uninterrupted build of a fresh copy against a fresh server.",
        "",
        markdown_table(report),
        "",
        f"Result: **{'PASS' if report.ok else 'FAIL'}** in {report.seconds:.0f} s.",
        "",
        "How to read it:",
        "",
        "- *Partial files*: a target must hold its old bytes or a complete file that passes the gates and "
        "carries `generator: skillbuild-vertex` provenance. Writes go through a temp file, fsync and "
        "`os.replace`, so a kill leaves the old file or the new one.",
        "- *Temp files*: a kill between creating the temp file and renaming it leaves `.skillbuild-*.tmp`. The "
        "next build removes them as soon as it holds the run lock (nothing else can be writing then).",
        f"- *Rows lost*: each of the {led.completed} completed phases (answers in the response cache) must have "
        "a `success` row in `enhancements`. A kill between an answer and its row is healed by the restart: "
        "doit forgot the task (its state is saved only when a run ends), reruns it, the answer comes from the "
        "cache free of charge, and the row is written then.",
        "- *Paid twice*: the fake server logs a digest of each prompt; a request that arrives after its answer "
        "was already stored in the response cache would be a second payment for finished work. Requests cut "
        "by a kill before their answer was stored must be sent again: they are counted apart, at most one per "
        "worker per kill.",
        "- *Runs left open*: the kills that came after the run was opened in the audit DB leave a run without "
        "an end time, which is the honest record of a killed run.",
        "",
        "## Two builds at once",
        "",
        "A build takes `cache/<marketplace>/run.lock` (`fcntl.flock`, released by the kernel however the "
        "process ends, SIGKILL included) before it touches anything. A second build exits at once with status "
        "**75** (EX_TEMPFAIL) and names the holder (pid, run id, start time, command); with `lock_wait=SECONDS` "
        "(`SKILLBUILD_LOCK_WAIT`) it waits that long first. `doit list`, `doit status` and other runs that "
        "cannot touch plugins never take the lock. Tested with two real doit processes in tests/test_chaos.py.",
        "",
        verdict_tables(results),
    ]
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to survive (default 20)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="marketplace to copy (default: the corpus)")
    parser.add_argument("--synthetic", type=int, help="build N synthetic plugins instead of --corpus")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--latency", default="0.05-0.3", help="fake server seconds per request, A-B")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-delay", type=float, default=4.0,
                        help="longest wait after the first event before a kill, seconds")
    parser.add_argument("--markdown", action="store_true", help="print docs/reliability.md")
    parser.add_argument("--with-tests", action="store_true",
                        help="with --markdown: run the fault and bad-input tests and add their tables")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="skillbuild-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    source = args.corpus
    if args.synthetic:
        source = synthetic_marketplace(work / "source", args.synthetic)
    say = (lambda text: print(text, file=sys.stderr, flush=True))
    report = chaos(source, work, args.kills, seed=args.seed, latency=args.latency, workers=args.workers,
                   max_delay=args.max_delay, say=say)
    command = (f"python bench/chaos.py --kills {args.kills}" + (f" --synthetic {args.synthetic}" if args.synthetic
               else "" if args.corpus == CORPUS else f" --corpus {args.corpus}")
               + (" --markdown" if args.markdown else "") + (" --with-tests" if args.with_tests else ""))
    if args.markdown:
        print(document(report, command, source, args.with_tests))
    else:
        print(plain(report))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
