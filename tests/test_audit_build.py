"""The audit trail, restore, report, clean and status through the real doit on a copy of examples/.

A module-scoped "night" runs the build three times against the fake Vertex server (real SDK over
loopback): run A with every analysis answered 503 (analysis fails), run B with a 5-line body limit (the
generation and its repair fail the gates), run C with a malformed plugin.json (input failure) while the
others build. Later tests read what those runs left: audit rows, runs, API calls, logs, the README
queries through the sqlite3 CLI, and the report page in headless Chromium. The other tests use the
offline provider or their own server.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import EVENT, ROOT, DoitRun, copy_examples
from skillbuild.store.audit import README_QUERIES, readme_queries_markdown
from skillbuild.testing.fakevertex import FakeVertex
from test_audit import parse_columns
from test_report import CHROMIUM, Figures
from vertex_server import PROJECT, TOKEN, fake_vertex_factory  # noqa: F401  (pytest fixture)

BUILT = ("deploy-checker", "secret-sentry", "changelog-lint")
DEPLOY = "plugins/devops/deploy-checker"
SUMMARY = re.compile(r"^(built \d+, kept \d+, skipped \d+, failed \d+, fresh \d+.*|calls \d+, tokens in .*|FAILED .*)$")
ANSI = "\x1b["


# --- helpers ------------------------------------------------------------------------------------------

def base_env(base: Path, market: Path, prompts: Path) -> dict[str, str]:
    """As conftest's doit_env, for a module-scoped fixture."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKILLBUILD_", "GOOGLE_CLOUD_", "TURSO_"))}
    env.update({"SKILLBUILD_MARKETPLACE": str(market), "SKILLBUILD_PROVIDER": "offline",
                "SKILLBUILD_CACHE_ROOT": str(base / "cache"), "SKILLBUILD_BUILD_ROOT": str(base / "build"),
                "SKILLBUILD_PROMPTS_DIR": str(prompts), "PYTHONUNBUFFERED": "1"})
    return env


def vertex_env(url: str, token: bool = True) -> dict[str, str]:
    """The vertex provider on the fake server, unthrottled, with test-sized retries."""
    env = {"SKILLBUILD_PROVIDER": "vertex", "SKILLBUILD_VERTEX_ENDPOINT": url, "GOOGLE_CLOUD_PROJECT": PROJECT,
           "SKILLBUILD_RPM": "100000", "SKILLBUILD_SAFETY_FACTOR": "1", "SKILLBUILD_MAX_ATTEMPTS": "2",
           "SKILLBUILD_RETRY_BACKOFF_SECONDS": "0.05", "SKILLBUILD_REQUEST_TIMEOUT": "10"}
    if token:
        env["SKILLBUILD_VERTEX_TOKEN"] = TOKEN
    return env


def build_dir(root: Path) -> Path:
    (found,) = [p for p in (root / "build").iterdir() if p.is_dir()]  # build/<marketplace id>/
    return found


def connect(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return conn


def rows(db: Path, sql: str, params: tuple = ()) -> list[dict]:
    conn = connect(db)
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def outcomes(db: Path, run_id: str) -> set[tuple]:
    return {(r["plugin_name"], r["phase"], r["status"], r["error_class"])
            for r in rows(db, "SELECT * FROM enhancements WHERE run_id = ?", (run_id,))}


def snapshot(folder: Path) -> dict[str, object]:
    """Every file's bytes and mode and every directory: equal snapshots mean byte-identical folders."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "<dir>" if p.is_dir() else (p.read_bytes(), p.stat().st_mode & 0o777)
    return out


def digest_files(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(paths) if p.is_file()}


def audit_dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def event_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if EVENT.match(line)]


def plain_output(proc: subprocess.CompletedProcess) -> list[str]:
    """A build run's stdout when it is a pipe: event lines and summary lines only, no escape codes."""
    assert ANSI not in proc.stdout and ANSI not in proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    odd = [line for line in lines if not (EVENT.match(line) or SUMMARY.match(line))]
    assert not odd, odd
    return lines


PLUGINS = (*BUILT, "release-notes", "remote-formatter")


def status_states(stdout: str) -> dict[str, str]:
    """plugin -> state from the `doit status` table."""
    return {parts[0]: parts[1] for parts in (line.split() for line in stdout.splitlines())
            if len(parts) > 1 and parts[0] in PLUGINS}


def chromium_dom(page: Path, profile: Path) -> str:
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", "--dump-dom",
         page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


# --- the night: three vertex runs against the fake server ----------------------------------------------

@dataclass
class Night:
    base: Path
    market: Path
    db: Path
    doit: DoitRun
    server: FakeVertex
    procs: dict[str, subprocess.CompletedProcess] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    base = tmp_path_factory.mktemp("night")
    market, prompts = base / "market", base / "prompts"
    copy_examples(market)
    shutil.copytree(ROOT / "rules" / "skillbuild" / "skill" / "prompts", prompts)
    # Only this token is accepted: the runs prove they sent it, the files prove they did not keep it.
    server = FakeVertex(token=TOKEN, hang_seconds=10.0, faults=["503:1,phase=analyse"]).start()
    try:
        doit = DoitRun({**base_env(base, market, prompts), **vertex_env(server.url, token=False)})
        n = Night(base, market, Path(), doit, server)
        # A: the token on the command line this time (it must not reach runs.arguments); analyses fail.
        n.procs["A"] = doit(f"vertex_token={TOKEN}")
        server.reset(faults=[])
        n.procs["B"] = doit(extra_env={"SKILLBUILD_VERTEX_TOKEN": TOKEN, "SKILLBUILD_MAX_BODY_LINES": "5"})
        manifest = market / DEPLOY / ".claude-plugin/plugin.json"
        manifest.write_text('{\n  "name": "deploy-checker",\n  "version": 1.2.0\n}\n')
        n.procs["C"] = doit(extra_env={"SKILLBUILD_VERTEX_TOKEN": TOKEN})
        n.procs["report"] = doit("report")
        n.procs["status"] = doit("status")
        n.db = build_dir(base) / "audit.sqlite3"
        started = [r["id"] for r in rows(n.db, "SELECT id FROM runs ORDER BY started")]
        assert len(started) == 3, started  # report and status are not build runs
        n.run_ids = dict(zip("ABC", started))
        yield n
    finally:
        server.stop()


def test_night_exit_codes_and_summaries(night):
    # A: doit counts a skill task whose analysis failed as an error (2), the others as failures (1)
    for name in "ABC":
        assert night.procs[name].returncode != 0, night.procs[name].stdout + night.procs[name].stderr
    assert night.procs["B"].returncode == night.procs["C"].returncode == 1
    assert "secret-sentry: analysis failed (server)" in night.procs["A"].stdout  # a plugin name is not a secret
    assert "built 0, kept 1, skipped 1, failed 3, fresh 0" in night.procs["A"].stdout
    # B and C: the kept and the skipped plugin are up to date, and counted as kept and skipped, as `doit status`
    # counts them (finding 10: they were counted as fresh)
    assert "built 0, kept 1, skipped 1, failed 3, fresh 0" in night.procs["B"].stdout
    assert "built 2, kept 1, skipped 1, failed 1, fresh 0" in night.procs["C"].stdout
    assert night.procs["report"].returncode == 0 and night.procs["status"].returncode == 0


def test_rows_for_every_outcome(night):
    a, b, c = (night.run_ids[k] for k in "ABC")
    assert outcomes(night.db, a) == {(p, "analyse", "failure", "server") for p in BUILT} | {
        ("release-notes", "keep", "kept", None), ("remote-formatter", "skip", "skipped", None)}
    assert outcomes(night.db, b) == {(p, phase, status, cls) for p in BUILT for phase, status, cls in (
        ("analyse", "success", None), ("generate", "failure", "gate"), ("repair", "failure", "gate"))}
    assert outcomes(night.db, c) == {("deploy-checker", "analyse", "failure", "input"),
                                     ("secret-sentry", "generate", "success", None),
                                     ("changelog-lint", "generate", "success", None)}
    work = rows(night.db, "SELECT * FROM enhancements WHERE phase IN ('analyse', 'generate', 'repair')"
                          " AND error_class IS NOT 'input'")
    assert work and all(r["provider"] == "vertex" and r["model"] == "gemini-2.5-flash" and r["prompt_hash"]
                        and r["input_hash"] and r["processing_time_seconds"] is not None for r in work)
    failed_analysis = [r for r in work if r["run_id"] == a]
    assert all(r["attempts"] == 2 and "503" in r["error_message"] for r in failed_analysis)
    gate = [r for r in work if r["error_class"] == "gate"]
    assert all("body has" in r["error_message"] and r["output_bytes"] > 0 for r in gate)
    (bad_input,) = rows(night.db, "SELECT * FROM enhancements WHERE error_class = 'input'")
    assert str(night.market / DEPLOY / ".claude-plugin/plugin.json") in bad_input["error_message"]
    assert "invalid JSON at line 3" in bad_input["error_message"]
    for r in rows(night.db, "SELECT * FROM enhancements WHERE run_id = ? AND status = 'success'", (c,)):
        target = night.market / ("plugins/security/secret-sentry" if r["plugin_name"] == "secret-sentry"
                                 else "plugins/extras/changelog-lint") / "skills" / r["plugin_name"] / "SKILL.md"
        assert r["output_bytes"] == target.stat().st_size
        assert r["output_hash"] and (Path(r["backup_path"]) / "MANIFEST.sha256.json").is_file()
        # B's answer, from the response cache: no request, no tokens spent
        assert (r["attempts"], r["input_tokens"], r["output_tokens"]) == (0, 0, 0)
    answered = rows(night.db, "SELECT * FROM enhancements WHERE run_id = ? AND phase = 'analyse'", (b,))
    assert len(answered) == 3
    assert all(r["attempts"] == 1 and r["input_tokens"] > 0 and r["output_tokens"] > 0 for r in answered)


def test_runs_rows_have_start_end_counts_and_exit_status(night):
    runs = {r["id"]: r for r in rows(night.db, "SELECT * FROM runs")}
    want = {"A": (0, 1, 1, 3), "B": (0, 1, 1, 3), "C": (2, 1, 1, 1)}  # up-to-date kept/skipped count as such
    for name, (built, kept, skipped, failed) in want.items():
        r = runs[night.run_ids[name]]
        assert r["started"] < r["ended"] and r["exit_status"] == night.procs[name].returncode  # the exit code
        assert (r["built"], r["kept"], r["skipped"], r["failed"]) == (built, kept, skipped, failed)
        assert json.loads(r["counts"])["failed"] == failed
    dodo = ["-f", str(ROOT / "dodo.py")]
    assert json.loads(runs[night.run_ids["A"]]["arguments"]) == [*dodo, "vertex_token=[REDACTED]"]
    assert json.loads(runs[night.run_ids["B"]]["arguments"]) == dodo


def test_api_calls_match_what_the_server_received(night):
    stats = night.server.stats()  # since the reset before run B
    calls = rows(night.db, "SELECT * FROM api_calls ORDER BY id")
    a = [c for c in calls if c["run_id"] == night.run_ids["A"]]
    later = [c for c in calls if c["run_id"] != night.run_ids["A"]]
    # A: each analysis tried twice, both answered 503; the first attempt is marked retried
    assert len(a) == 6 and {c["status"] for c in a} == {503} and all(c["error"] for c in a)
    for plugin in BUILT:
        assert [c["retried"] for c in a if c["plugin_name"] == plugin] == [1, 0]
    # B and C: every request the server answered after the reset has its row, tokens included
    assert len(later) == stats["requests_total"] > 0
    assert {str(c["status"]) for c in later} == set(stats["by_status"]) == {"200"}
    assert sum(c["input_tokens"] for c in later) == stats["input_tokens"]
    assert sum(c["output_tokens"] for c in later) == stats["output_tokens"]
    assert {c["phase"] for c in later} == {"analyse", "generate", "repair"}
    assert all(c["latency_seconds"] is not None and c["latency_seconds"] >= 0 for c in calls)


def test_no_secret_anywhere(night):
    secret = TOKEN.encode()
    for folder in (night.base / "build", night.base / "cache", night.market):
        for path in folder.rglob("*"):
            if path.is_file():
                assert secret not in path.read_bytes(), path
    for proc in night.procs.values():
        assert TOKEN not in proc.stdout + proc.stderr


def test_progress_is_plain_and_the_log_has_one_line_per_event(night):
    logs = build_dir(night.base) / "logs"
    for name in "ABC":
        proc = night.procs[name]
        lines = plain_output(proc)
        log = (logs / f"{night.run_ids[name]}.log").read_text().splitlines()
        assert log == lines  # the console and the log say the same, line for line
        events = [line.split() for line in event_lines("\n".join(log))]
        # one line per plugin task that did work, as the audit rows tell: generate and repair are one
        # task; bad input is reported by the skill task; a skill task whose analysis failed adds nothing
        tasks = sorted((r["plugin_name"], "skill" if r["phase"] != "analyse" or r["error_class"] == "input"
                        else "analyse") for r in rows(night.db, "SELECT DISTINCT plugin_name, phase, error_class"
                                                                " FROM enhancements WHERE run_id = ?",
                                                      (night.run_ids[name],)))
        tasks = sorted(set(tasks))
        shown = sorted((e[2], "analyse" if e[3] == "analyse" else "skill") for e in events)
        assert shown == tasks
    assert sum(1 for _ in logs.iterdir()) == 3


def test_status_after_the_night(night):
    table = status_states(night.procs["status"].stdout)
    assert table == {"deploy-checker": "failed", "secret-sentry": "fresh", "changelog-lint": "fresh",
                     "release-notes": "kept", "remote-formatter": "skipped"}


def readme_blocks(base: Path) -> list[list[dict[str, str]]]:
    """Each README query as a maintainer runs it: in the project folder, after the README's `export AUDIT_DB`."""
    setup, *queries = re.findall(r"```sh\n(.*?)\n```", readme_queries_markdown(), re.S)
    env = {k: v for k, v in os.environ.items() if k != "AUDIT_DB"}
    out = []
    for block in queries:
        proc = subprocess.run(["bash", "-c", f"set -e\n{setup}\n{block}"], capture_output=True, text=True,
                              timeout=60, cwd=base, env=env)
        assert proc.returncode == 0 and not proc.stderr, proc.stderr
        out.append(parse_columns(proc.stdout) if proc.stdout.strip() else [])
    return out


@pytest.mark.skipif(not shutil.which("sqlite3"), reason="apt-get install -y sqlite3")
def test_readme_queries_give_the_nights_figures(night):
    found = subprocess.run(["bash", "-c", re.findall(r"```sh\n(.*?)\n```", readme_queries_markdown(), re.S)[0]
                            + '\necho "$AUDIT_DB"'], capture_output=True, text=True, cwd=night.base, timeout=30)
    assert (night.base / found.stdout.strip()).resolve() == night.db.resolve()
    results = readme_blocks(night.base)
    assert len(results) == len(README_QUERIES)
    rate, times, today, failures = results
    # final outcomes: A 3 failed (+ kept, skipped), B 3 failed, C 1 failed and 2 built
    assert rate == [{"built": "2", "failed": "7", "success_pct": "22.2"}]
    by_phase = {r["phase"]: r for r in times}
    assert set(by_phase) == {"analyse", "generate"}  # every repair failed: no successful repair step
    assert by_phase["analyse"]["steps"] == "3" and by_phase["generate"]["steps"] == "2"
    for phase, r in by_phase.items():
        secs = [x["processing_time_seconds"] for x in
                rows(night.db, "SELECT processing_time_seconds FROM enhancements WHERE status = 'success'"
                               " AND phase = ?", (phase,))]
        assert float(r["avg_seconds"]) == pytest.approx(sum(secs) / len(secs), abs=0.006)
    stats = night.server.stats()
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    sent_today = 6 + sum(1 for t in stats["request_times"]
                         if datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d") == day)
    assert today == [{"calls": str(sent_today), "errors": "6", "input_tokens": str(stats["input_tokens"]),
                      "output_tokens": str(stats["output_tokens"])}]
    assert int(today[0]["calls"]) > 0
    assert failures == [{"plugin_name": "deploy-checker", "phase": "analyse", "error_class": "input",
                         "error_message": failures[0]["error_message"]}]
    assert "invalid JSON at line 3" in failures[0]["error_message"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="apt-get install -y chromium")
def test_report_page_shows_the_db_numbers(night, tmp_path):
    page = build_dir(night.base) / "report.html"
    latest = night.base / "build" / "report.html"
    assert page.is_file() and latest.read_bytes() == page.read_bytes()
    assert f"report written to {page} (latest report: {latest})" in night.procs["report"].stdout
    f = Figures(chromium_dom(latest, tmp_path / "profile"))
    conn = connect(night.db)
    final = conn.execute(
        "SELECT status, COUNT(*) AS n FROM enhancements WHERE id IN (SELECT MAX(id) FROM enhancements"
        " WHERE phase <> 'restore' AND NOT (phase = 'analyse' AND status = 'success') GROUP BY run_id,"
        " plugin_name) GROUP BY status").fetchall()
    counts = {r["status"]: r["n"] for r in final}
    calls = conn.execute("SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens),"
                         " SUM(date(time) = date('now')) FROM api_calls").fetchone()
    failures = conn.execute("SELECT COUNT(*) FROM enhancements WHERE status = 'failure'").fetchone()[0]
    conn.close()
    built, failed = counts.get("success", 0), counts.get("failure", 0)
    assert (built, failed) == (2, 7)
    assert f.ids["built"]["text"] == str(built) and f.ids["failed"]["text"] == str(failed)
    assert f.ids["success-rate"]["value"] == f"{round(100 * built / (built + failed), 1)}"
    assert f.ids["success-rate"]["text"] == f"{round(100 * built / (built + failed), 1):g}%"
    assert f.ids["runs-count"]["text"] == "3"
    assert f.ids["calls-total"]["text"] == str(calls[0]) and f.ids["calls-today"]["text"] == str(calls[3])
    assert f.ids["tokens-in"]["text"] == str(calls[1]) and f.ids["tokens-out"]["text"] == str(calls[2])
    per_run = {r["run"]: r for r in f.rows["outcomes-per-run"]}
    assert per_run[night.run_ids["C"]] == {"run": night.run_ids["C"], "success": "2", "failure": "1",
                                           "skipped": "0", "kept": "0"}
    assert per_run[night.run_ids["A"]]["kept"] == "1" and per_run[night.run_ids["A"]]["failure"] == "3"
    assert len(f.rows["failures"]) == failures == 3 + 6 + 1
    assert {r["plugin"] for r in f.rows["failures"]} == set(BUILT)


# --- SIGKILL of the whole doit process group mid-run ----------------------------------------------------

def test_sigkill_mid_run_loses_no_committed_row(doit, doit_env, tmp_path, fake_vertex_factory):  # noqa: F811
    server = fake_vertex_factory(latency="0.3-0.4", token=TOKEN)
    env = {**doit_env, **vertex_env(server.url), "SKILLBUILD_MAX_WORKERS": "1"}  # at most one call in flight
    db = tmp_path / "build"
    out = (tmp_path / "doit.out").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py")], env=env, cwd=ROOT,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        seen = wait_for_rows(db, 3, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # doit and every child it started
        proc.wait(timeout=30)
        out.close()
    assert proc.returncode == -signal.SIGKILL
    audit = build_dir(tmp_path) / "audit.sqlite3"
    conn = connect(audit)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after = {r["id"]: dict(r) for r in conn.execute("SELECT * FROM enhancements")}
    (run,) = [dict(r) for r in conn.execute("SELECT * FROM runs")]
    conn.close()
    assert all(after.get(i) == r for i, r in seen.items()), "a committed row changed or vanished"
    assert run["ended"] is None and run["exit_status"] is None  # killed: never closed, shown as interrupted
    assert len(after) < 3 * 2 + 2  # it really stopped mid-run
    # the next run finishes the work; the response cache spares the calls already answered
    again = doit(extra_env=vertex_env(server.url), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows(audit, "SELECT COUNT(*) AS n FROM runs WHERE ended IS NOT NULL")[0]["n"] == 1
    # 6 calls in all, plus at most the one in flight when the kill came (its answer was never kept)
    assert 6 <= server.stats()["requests_total"] <= 7


def wait_for_rows(build_root: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> dict[int, dict]:
    """Poll the audit DB (a reader beside the writer, as WAL allows) until `count` rows are committed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "doit ended before it could be killed"
        found = list(build_root.glob("*/audit.sqlite3")) if build_root.is_dir() else []
        if found:
            try:
                got = {r["id"]: r for r in rows(found[0], "SELECT * FROM enhancements")}
            except sqlite3.OperationalError:  # the schema is being created
                got = {}
            if len(got) >= count:
                return got
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit rows after {timeout} s")


# --- restore through doit -------------------------------------------------------------------------------

def generate_backups(db: Path, plugin: str) -> list[Path]:
    return [Path(r["backup_path"]) for r in rows(
        db, "SELECT backup_path FROM enhancements WHERE plugin_name = ? AND phase IN ('generate', 'repair')"
            " AND status = 'success' ORDER BY id", (plugin,))]


def edit_command(market: Path, text: str) -> None:
    command = market / DEPLOY / "commands/check-deploy.md"
    command.write_text(command.read_text() + f"\n{text}\n")


def test_restore_round_trip_is_byte_identical(doit, market, tmp_path):
    plugin = market / DEPLOY
    original = snapshot(plugin)
    assert doit().returncode == 0  # run 1 writes SKILL.md v1
    built = snapshot(plugin)
    edit_command(market, "6. Confirm the release notes mention every migration.")
    before_change = snapshot(plugin)
    second = doit()  # run 2 backs up the folder, then writes SKILL.md v2
    assert second.returncode == 0 and "skill:deploy-checker" in doit.executed(second)
    assert snapshot(plugin) != before_change and built != original
    db = build_dir(tmp_path) / "audit.sqlite3"
    run1, run2 = (p.parent.name for p in generate_backups(db, "deploy-checker"))
    restored = doit("restore", "plugin=deploy-checker")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert snapshot(plugin) == before_change  # the state before the last change, byte for byte
    # two files changed: the SKILL.md and references/commands.md, which holds the edited command's text
    assert re.search(r"deploy-checker: restored 2 file\(s\), \d+ unchanged, 0 removed, verified in [\d.]+ s",
                     restored.stdout)
    assert re.search(r"^\d\d:\d\d:\d\d \[1/1\] deploy-checker restore success ", restored.stdout, re.M)
    assert "built 0, kept 0, skipped 0, failed 0, fresh 0, restored 1" in restored.stdout
    older = doit("restore", "plugin=deploy-checker", f"at={run1}")
    assert older.returncode == 0, older.stdout + older.stderr
    assert snapshot(plugin) == original  # before run 1: no skills/ folder at all
    rows_ = rows(db, "SELECT * FROM enhancements WHERE phase = 'restore' ORDER BY id")
    assert [(r["plugin_name"], r["status"]) for r in rows_] == [("deploy-checker", "success")] * 2
    assert [Path(r["backup_path"]).parent.name for r in rows_] == [run2, run1]
    assert all(r["processing_time_seconds"] is not None for r in rows_)
    runs = rows(db, "SELECT * FROM runs WHERE id IN (SELECT run_id FROM enhancements WHERE phase = 'restore')")
    assert len(runs) == 2 and all(json.loads(r["counts"])["restored"] == 1 and r["exit_status"] == 0 for r in runs)


def test_tampered_backup_is_refused_and_nothing_changes(doit, market, tmp_path):
    assert doit().returncode == 0
    edit_command(market, "Also check DNS records.")
    assert doit().returncode == 0
    db = build_dir(tmp_path) / "audit.sqlite3"
    backup = generate_backups(db, "deploy-checker")[-1]
    readme = backup / "files" / "README.md"
    readme.write_text(readme.read_text() + "\nInjected line.\n")
    plugin, backups = market / DEPLOY, build_dir(tmp_path) / "backups"
    before, kept = snapshot(plugin), snapshot(backups)
    run = doit("restore", "plugin=deploy-checker")
    assert run.returncode == 1
    assert (f"deploy-checker: restore failed: backup {backup} failed verification: {readme}: content differs "
            f"from the manifest (SHA-256 mismatch)") in run.stdout
    assert "Traceback" not in run.stdout + run.stderr
    assert "failed 1, fresh 0\n" in run.stdout and "FAILED deploy-checker (restore): " in run.stdout
    assert snapshot(plugin) == before and snapshot(backups) == kept  # no file touched, no backup made
    (row,) = rows(db, "SELECT * FROM enhancements WHERE phase = 'restore'")
    assert (row["status"], row["error_class"]) == ("failure", "BackupError")
    assert "SHA-256 mismatch" in row["error_message"]
    unknown = doit("restore", "plugin=deploy-checker", "at=20000101T000000Z-1")
    assert unknown.returncode == 1 and "no backup of plugin 'deploy-checker' from run" in unknown.stdout
    assert snapshot(plugin) == before


# --- doit clean -----------------------------------------------------------------------------------------

def kept_state(market: Path, tmp_path: Path) -> tuple:
    """What clean must never touch: every SKILL.md in the marketplace, the backups, the audit DB's rows."""
    bdir = build_dir(tmp_path)
    return (digest_files(market.rglob("SKILL.md")), digest_files((bdir / "backups").rglob("*")),
            audit_dump(bdir / "audit.sqlite3"))


def test_clean_removes_rebuildables_only(doit, market, tmp_path):
    assert doit().returncode == 0
    failing = doit(extra_env={"SKILLBUILD_MAX_BODY_LINES": "5"})  # every new candidate rejected by the gates
    assert failing.returncode == 1
    cache = next((tmp_path / "cache").iterdir())
    rejected, analysis = cache / "rejected", cache / "analysis"
    assert {p.name.split(".")[0] for p in rejected.iterdir()} == set(BUILT)
    assert {p.stem for p in analysis.iterdir()} == set(BUILT)
    protected = kept_state(market, tmp_path)
    assert len(protected[0]) == 5 and protected[1] and protected[2]  # 3 built, 1 hand-written, 1 older skill

    one = doit("clean", "skill:deploy-checker")  # only that task: its rejected candidates
    assert one.returncode == 0, one.stderr
    assert {p.name.split(".")[0] for p in rejected.iterdir()} == {"secret-sentry", "changelog-lint"}
    assert {p.stem for p in analysis.iterdir()} == set(BUILT)
    assert kept_state(market, tmp_path) == protected

    with_deps = doit("clean", "-c", "skill:secret-sentry")  # --clean-dep: its analysis as well
    assert with_deps.returncode == 0, with_deps.stderr
    assert {p.name.split(".")[0] for p in rejected.iterdir()} == {"changelog-lint"}
    assert {p.stem for p in analysis.iterdir()} == {"deploy-checker", "changelog-lint"}
    assert kept_state(market, tmp_path) == protected

    everything = doit("clean")  # default tasks and what they depend on: every analysis goes too
    assert everything.returncode == 0, everything.stderr
    assert list(rejected.iterdir()) == [] and list(analysis.iterdir()) == []
    assert kept_state(market, tmp_path) == protected
    assert doit("clean", "--clean-all").returncode == 0  # every task, maintenance ones included
    assert kept_state(market, tmp_path) == protected

    rebuilt = doit()  # rebuildable indeed: the analyses come back
    assert rebuilt.returncode == 0, rebuilt.stdout
    assert {p.stem for p in analysis.iterdir()} == set(BUILT)


# --- doit status ----------------------------------------------------------------------------------------

def test_status_shows_every_state(doit, market):
    assert doit().returncode == 0
    edit_command(market, "Also check DNS records.")  # deploy-checker: stale
    lint = market / "plugins/extras/changelog-lint/commands/lint-changelog.md"
    lint.write_text(lint.read_text() + "\nAlso check link references.\n")
    failed = doit("skill:changelog-lint", extra_env={"SKILLBUILD_MAX_BODY_LINES": "5"})
    assert failed.returncode == 1
    run = doit("status")
    assert run.returncode == 0
    table = {line.split()[0]: line for line in run.stdout.splitlines() if line.strip()}
    states = status_states(run.stdout)
    assert states == {"deploy-checker": "stale", "changelog-lint": "failed", "secret-sentry": "fresh",
                      "release-notes": "kept", "remote-formatter": "skipped"}
    assert "generate failure" in table["changelog-lint"] and "last error:" in table["changelog-lint"]
    assert "changed: source-hash" in table["deploy-checker"]
    assert table["total:"] == "total: 1 failed, 1 fresh, 1 kept, 1 skipped, 1 stale"


def test_restores_never_push_out_the_backups_taken_before_a_change(tmp_path):
    from skillbuild.safety.backup import REASON_RESTORE, backup_plugin, list_backups, prune

    plugin, root = tmp_path / "demo", tmp_path / "backups"
    plugin.mkdir()
    (plugin / "README.md").write_text("demo\n")
    for day in (1, 2):
        backup_plugin(root, f"202611{day:02d}T000000Z-1", "demo", plugin)
    for day in range(3, 9):  # six restores in a row, each saving the state it replaced
        backup_plugin(root, f"202611{day:02d}T000000Z-1", "demo", plugin, reason=REASON_RESTORE)
    removed = prune(root, "demo", keep_last=2)
    assert [p.parent.name for p in removed] == [f"202611{d:02d}T000000Z-1" for d in range(3, 7)]
    left = list_backups(root, "demo")
    assert [(b.run_id[6:8], b.reason) for b in left] == [("01", "before-change"), ("02", "before-change"),
                                                         ("07", REASON_RESTORE), ("08", REASON_RESTORE)]
