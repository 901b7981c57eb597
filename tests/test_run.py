"""A build run's lifecycle (skillbuild/run.py) under every doit reporter: the lock, the `runs` row, the log."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import EVENT, ROOT
from test_chaos import doit_cmd, finish, start, vertex_env, wait_until_holding
from test_faults import run_doit, vertex_env as faults_env
from vertex_server import fake_vertex_factory  # noqa: F401  (pytest fixture)
from skillbuild.safety import runlock

REPORTERS = {"default": [], "executed-only": ["-r", "executed-only"], "json": ["-r", "json"]}


def runs(tmp_path) -> list[dict]:
    db = next((tmp_path / "build").glob("*/audit.sqlite3"), None)
    if db is None:
        return []
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM runs ORDER BY started")]


def log_of(tmp_path, run_id: str) -> str:
    return next((tmp_path / "build").glob(f"*/logs/{run_id}.log")).read_text()


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "two-workers"])
@pytest.mark.parametrize("reporter", list(REPORTERS))
def test_every_reporter_locks_records_and_logs_the_run(reporter, workers, doit_env, market, tmp_path,
                                                      fake_vertex_factory):
    server = fake_vertex_factory(latency="0.5-0.6")  # the first run must outlast the second's start-up
    env = vertex_env(doit_env, server.url)
    args = [*REPORTERS[reporter], *workers, "provider=vertex"]
    first = start(env, *args, out=tmp_path / "first.out")
    try:
        wait_until_holding(first, tmp_path)
        second = subprocess.run(doit_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert second.returncode == runlock.EXIT_LOCKED, second.stdout + second.stderr
        assert f"another build of this marketplace is running (pid {first.pid}" in second.stderr
        assert first.poll() is None, "the first run ended before the second started: the lock was not tested"
    finally:
        code = finish(first)
    out = (tmp_path / "first.out").read_text()
    assert code == 0, out
    (run,) = runs(tmp_path)  # the refused run left no row
    assert run["ended"] and run["exit_status"] == code
    assert (run["built"], run["kept"], run["skipped"], run["failed"]) == (3, 1, 1, 0)
    log = log_of(tmp_path, run["id"])
    assert {m.group(1) for m in EVENT.finditer(log) if m.group(3) == "success" and m.group(2) == "generate"} == {
        "deploy-checker", "secret-sentry", "changelog-lint"}
    assert "built 3, kept 1, skipped 1, failed 0, fresh 0" in log
    if reporter == "json":
        assert json.loads(out)["tasks"], "stdout stays doit's JSON document alone"
    if reporter == "default":
        assert "built 3, kept 1, skipped 1, failed 0, fresh 0" in out


@pytest.mark.parametrize("reporter", list(REPORTERS))
def test_one_plugin_run_is_a_build_run_and_read_only_commands_are_not(reporter, doit, tmp_path):
    for args in (["list", "--status"], ["status"], ["plan"]):
        assert doit(*args).returncode == 0
    assert runs(tmp_path) == []
    one = doit(*REPORTERS[reporter], "skill:deploy-checker")
    assert one.returncode == 0, one.stdout + one.stderr
    (run,) = runs(tmp_path)
    assert run["ended"] and run["exit_status"] == 0 and run["built"] == 1
    assert " deploy-checker generate success " in log_of(tmp_path, run["id"])


@pytest.mark.parametrize("reporter", list(REPORTERS))
def test_stored_exit_status_is_the_process_exit_status(reporter, doit, doit_env, market, tmp_path,
                                                       fake_vertex_factory):
    # A broken manifest fails its plugin's one task: exit 1.
    manifest = market / "plugins/devops/deploy-checker/.claude-plugin/plugin.json"
    manifest.write_text('{\n  "name": "deploy-checker",\n  "version": 1.2.0\n}\n')
    failed = doit(*REPORTERS[reporter])
    # Every analysis answer cut short: no generation runs, which doit counts as an error: exit 2 (README).
    server = fake_vertex_factory(faults=["truncated_json"], retry_delay=0.1)
    errored = run_doit(faults_env(doit_env, server.url), *REPORTERS[reporter], "provider=vertex")
    assert (failed.returncode, errored.returncode) == (1, 2), errored.stdout + errored.stderr
    assert [(r["exit_status"], r["failed"]) for r in runs(tmp_path)] == [(1, 1), (2, 3)]


def test_command_line_vars_come_through_doits_public_get_var(monkeypatch, doit, market):
    from doit import doit_cmd

    from skillbuild import tasks

    monkeypatch.setattr(sys, "argv", ["doit", "-f", "dodo.py", "skill", "plugin=p", "-n", "2", "model=m"])
    monkeypatch.setattr(doit_cmd, "_CMDLINE_VARS", None)  # outside a doit command: get_var knows nothing
    assert tasks.cli_vars() == {} and tasks.arg("plugin", "fallback") == "fallback"
    monkeypatch.setattr(doit_cmd, "_CMDLINE_VARS", {"plugin": "p", "model": "m"})  # as doit parsed them
    assert tasks.cli_vars() == {"plugin": "p", "model": "m"} and tasks.arg("at") is None and not tasks.flag("live")
    # through real doit, -n 2: a task argument and a setting given on the command line both arrive
    restore = doit("-n", "2", "restore", "plugin=nope", "provider=offline")
    assert restore.returncode == 1 and "no plugin named 'nope'" in restore.stdout
