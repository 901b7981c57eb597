"""Run output: plain lines off a terminal, a bar on one, whole lines in a shared log, an honest summary."""
from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skillbuild.ui.progress import Event, emit, estimate_eta, events_from_values, format_plain, summarise

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

RUN_SCRIPT = """
import sys
from skillbuild.ui.progress import Event, RunProgress
json_lines = sys.argv[2] == "json"
with RunProgress("run1", sys.argv[1], total=3, json_lines=json_lines, pace_seconds=4.0,
                 secrets=["hunter2-secret"]) as prog:
    prog.event(Event("alpha", "analyse", "success", 1.25, 100, 0, calls=1))
    prog.event(Event("alpha", "generate", "success", 3.5, 200, 900, calls=1))
    prog.event(Event("beta", "analyse", "failure", 0.5, calls=2, reason="403 key hunter2-secret\\nrejected"))
    prog.event(Event("gamma", "keep", "kept", reason="hand-written SKILL.md"))
summary = prog.finish()
sys.exit(summary.exit_code)
"""


def test_plain_lines_when_not_a_terminal(tmp_path):
    proc = subprocess.run([PY, "-c", RUN_SCRIPT, str(tmp_path), "plain"], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr  # a plugin failed
    out = proc.stdout
    assert "\x1b[" not in out  # no ANSI: readable in tail -f and CI logs
    lines = out.splitlines()
    assert lines[0].endswith("[0/3] alpha analyse success 1.2s in=100 out=0 calls=1")
    assert lines[1].endswith("[1/3] alpha generate success 3.5s in=200 out=900 calls=1")
    assert lines[2].endswith("[2/3] beta analyse failure 0.5s in=0 out=0 calls=2 - 403 key [REDACTED] rejected")
    assert lines[3].endswith("[3/3] gamma keep kept 0.0s in=0 out=0 calls=0 - hand-written SKILL.md")
    assert lines[4] == "built 1, kept 1, skipped 0, failed 1, fresh 0"
    assert lines[5].startswith("calls 4, tokens in 300 out 900, time 0:0")
    assert lines[6] == "FAILED beta (analyse): 403 key [REDACTED] rejected"
    log = (tmp_path / "run1.log").read_text()
    assert log.splitlines() == lines
    assert "hunter2" not in log


def test_json_lines_option(tmp_path):
    proc = subprocess.run([PY, "-c", RUN_SCRIPT, str(tmp_path), "json"], capture_output=True, text=True,
                          env=ENV, cwd=ROOT, timeout=60)
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [(r["plugin"], r["outcome"]) for r in records[:4]] == [
        ("alpha", "success"), ("alpha", "success"), ("beta", "failure"), ("gamma", "kept")]
    summary = records[4]["summary"]
    assert (summary["built"], summary["failed"], summary["calls"], summary["exit_code"]) == (1, 1, 4, 1)
    assert [json.loads(x) for x in (tmp_path / "run1.log").read_text().splitlines()] == records


def test_progress_bar_on_a_terminal(tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen([PY, "-c", RUN_SCRIPT, str(tmp_path), "plain"], stdout=slave, stderr=slave,
                            env={**ENV, "COLUMNS": "120", "TERM": "xterm"}, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 1
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "\x1b[" in out  # rich drew on the terminal
    assert "3/3" in out and "ETA" in out
    assert "beta analyse failure" in out
    # the log never gets terminal codes
    log = (tmp_path / "run1.log").read_text()
    assert "\x1b" not in log and len(log.splitlines()) == 7


def test_workers_share_one_log_without_mixing_lines(tmp_path):
    script = textwrap.dedent("""
        import sys, io
        from skillbuild.ui.progress import Event, emit
        sink = io.StringIO()
        for i in range(300):
            emit(Event(f"w{sys.argv[2]}-{i}", "generate", "success", reason="x" * 300), "run1", sys.argv[1],
                 json_lines=True, stream=sink)
    """)
    procs = [subprocess.Popen([PY, "-c", script, str(tmp_path), str(w)], env=ENV, cwd=ROOT) for w in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    records = [json.loads(line) for line in (tmp_path / "run1.log").read_text().splitlines()]
    assert len(records) == 1200
    assert {r["plugin"] for r in records} == {f"w{w}-{i}" for w in range(4) for i in range(300)}


def test_emit_for_a_task_action_writes_log_and_stream(tmp_path, capsys):
    line = emit(Event("p", "generate", "failure", 2.0, reason="token=abcdef123456 bad"), "r9", tmp_path)
    assert line.endswith("p generate failure 2.0s in=0 out=0 calls=0 - token=[REDACTED] bad")
    assert capsys.readouterr().err == line + "\n"
    assert (tmp_path / "r9.log").read_text() == line + "\n"


def test_eta_uses_the_slower_of_observed_rate_and_throttle_pace():
    # 10 of 110 done in 100 s: 10 s each observed; pace 4 s/call at 2 calls/plugin = 8 s: observed wins
    assert estimate_eta(10, 110, 100.0, pace_seconds=4.0, calls=20, worked=10) == 1000.0
    # cache hits made the first plugins quick, but the throttle admits one call per 30 s
    assert estimate_eta(10, 110, 10.0, pace_seconds=30.0, calls=20, worked=10) == 100 * 60.0
    # nothing measured yet: assume analyse + generate
    assert estimate_eta(0, 5, 0.0, pace_seconds=10.0) == 5 * 20.0
    assert estimate_eta(0, 5, 0.0) is None and estimate_eta(5, 5, 9.0) == 0.0


def test_summary_counts_each_plugin_once_by_its_final_event():
    events = [
        Event("a", "analyse", "success", calls=1, input_tokens=5),
        Event("a", "generate", "failure", reason="gate: too short"),
        Event("a", "repair", "success", calls=1, output_tokens=7),  # repaired: built, not failed
        Event("b", "analyse", "failure", reason="403"),
        Event("c", "analyse", "fresh"), Event("c", "generate", "fresh"),
        Event("d", "skip", "skipped", reason="external source"),
        Event("e", "keep", "kept"),
        Event("f", "restore", "success"),
    ]
    s = summarise(events, 61.0)
    assert (s.built, s.failed, s.fresh, s.skipped, s.kept, s.restored) == (1, 1, 1, 1, 1, 1)
    assert s.failures == [("b", "analyse", "403")]
    assert (s.calls, s.input_tokens, s.output_tokens, s.exit_code) == (2, 5, 7, 1)
    assert "time 1:01" in s.text()
    assert summarise(events[:3], 1.0).exit_code == 0


def test_bad_outcome_is_refused():
    with pytest.raises(ValueError, match="success, failure, skipped, kept, fresh"):
        Event("p", "generate", "done")
    assert format_plain(Event("p", "skip", "skipped", time="2026-11-29T10:15:03.000Z")).startswith("10:15:03 p skip")


def test_events_from_task_values():
    evs = events_from_values({"events": [{"phase": "generate", "outcome": "failure", "reason": "r"},
                                         {"phase": "repair", "outcome": "success", "calls": 1}]}, "p", "generate", 2.0)
    assert [(e.plugin, e.phase, e.outcome, e.seconds) for e in evs] == [
        ("p", "generate", "failure", 2.0), ("p", "repair", "success", 2.0)]
    (only,) = events_from_values(None, "p", "analyse", 1.5)
    assert (only.phase, only.outcome, only.seconds) == ("analyse", "success", 1.5)


DODO = """
import sys
from doit.exceptions import TaskFailed
from doit.tools import run_once
from skillbuild.ui.progress import RunProgress, reporter_class

LOGS = {logs!r}

def analyse(p):
    if p == "gamma":
        raise ValueError("analysis schema: missing 'commands'")
    return {{"outcome": "success", "calls": 1, "input_tokens": 10}}

def skill(p):
    if p == "beta":
        return TaskFailed("SKILL.md gate: description too long\\nsecond line")
    return {{"events": [{{"phase": "generate", "outcome": "failure", "reason": "gate: body too short"}},
                        {{"phase": "repair", "outcome": "success", "calls": 1, "output_tokens": 700}}]}}

def task_analyse():
    for p in ("alpha", "beta", "gamma"):
        yield {{"name": p, "actions": [(analyse, [p])], "uptodate": [run_once]}}

def task_skill():
    for p in ("alpha", "beta", "gamma"):
        yield {{"name": p, "actions": [(skill, [p])], "task_dep": ["analyse:" + p], "uptodate": [run_once]}}

DOIT_CONFIG = {{
    "reporter": reporter_class(lambda plugins: RunProgress("run7", LOGS, len(plugins))),
    "dep_file": {dep!r},
    "backend": "sqlite3",
}}
"""


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_doit_reporter_turns_tasks_into_events(tmp_path, workers):
    dodo = tmp_path / "dodo.py"
    dodo.write_text(DODO.format(logs=str(tmp_path / "logs"), dep=str(tmp_path / "doit.sqlite3")))
    cmd = [PY, "-m", "doit", "-f", str(dodo), "--continue", *workers]
    first = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert first.returncode != 0
    out = first.stdout
    assert "alpha generate failure" in out and "alpha repair success" in out
    assert "beta skill" not in out and "FAILED beta (generate): SKILL.md gate: description too long" in out
    assert "FAILED gamma (analyse): ValueError: analysis schema: missing 'commands'" in out
    assert "built 1, kept 0, skipped 0, failed 2, fresh 0" in out
    assert "calls 3, tokens in 20 out 700" in out  # gamma's analyse raised before reporting anything
    # second run: alpha is up to date, the failures run again
    second = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=120)
    assert "built 0, kept 0, skipped 0, failed 2, fresh 1" in second.stdout
    log = (tmp_path / "logs" / "run7.log").read_text()
    assert log.count("alpha repair success") == 1 and log.count("built ") == 2
