"""doit task creators: plain dicts built from discovery; the work itself lives in skillbuild.build.

Dependencies are computed when tasks load (no calc_dep), so `doit list --status` is exact.
"""
from __future__ import annotations

import os
import sys
import time
from functools import lru_cache

from doit import doit_cmd
from doit.exceptions import InvalidDodoFile
from doit.tools import config_changed

from skillbuild import maintenance, build
from skillbuild.safety import archive, interrupt, runlock
from skillbuild.ui import progress, status
from skillbuild.store.audit import redact
from skillbuild.config import ConfigError, load_settings
from skillbuild.discovery import DiscoveryError, Marketplace, Plugin, discover
from skillbuild.fingerprints import TreeUnchanged, XXHashChecker, file_xxh3

__all__ = ["doit_config", "task_analyse", "task_skill", "task_status", "task_backup", "task_restore_offsite",
           "task_backups", "task_restore", "task_report", "task_check",
           "task_plan", "task_quota"]


def arg(name: str, default: str | None = None) -> str | None:
    """A task argument given as `doit task name=value`."""
    return cli_vars().get(name, default)


def flag(name: str) -> bool:
    return str(arg(name, "")).lower() in ("1", "true", "yes", "on")


def cli_vars() -> dict[str, str]:
    """Every `name=value` given on the doit command line."""
    return dict(doit_cmd._CMDLINE_VARS or {})


@lru_cache(maxsize=1)
def settings():
    return load_settings(cli=cli_vars())


@lru_cache(maxsize=1)
def marketplace() -> Marketplace:
    s = settings()
    return discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked)


@lru_cache(maxsize=1)
def run_id() -> str:
    """One id per doit invocation; forked workers inherit it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"


def doit_config() -> dict:
    """DOIT_CONFIG for dodo.py; a bad setting or catalog stops the load with a message naming the fix."""
    try:
        s = settings()
        marketplace()
        build.prompt_path(s, "analysis"), build.prompt_path(s, "generation")
    except (ConfigError, DiscoveryError, FileNotFoundError) as exc:
        raise InvalidDodoFile(f"skillbuild: {exc}") from None
    s.cache_dir.mkdir(parents=True, exist_ok=True)
    interrupt.install()  # SIGTERM ends the run like Ctrl-C, so doit saves its state
    return {
        "backend": "sqlite3",
        "dep_file": str(s.state_file),
        "check_file_uptodate": XXHashChecker,
        # Each plugin's task by name, not the `skill` group: one failed plugin then exits 1, not 2.
        "default_tasks": default_tasks(s),
        "continue": True,  # one plugin's failure never stops the others
        "subtasks": True,  # `doit list` shows every plugin's tasks
        "reporter": progress.reporter_class(_make_progress),
    }


def _make_progress(plugins: list[str]) -> progress.RunProgress:
    """The run's console lines, log and summary; a run that may touch plugins is also an audit run."""
    s, rid = settings(), run_id()
    logs = s.build_dir / "logs"
    if not plugins:  # status, backup, listings: no lock, no audit run, no summary
        return progress.RunProgress(rid, logs, 0, json_lines=s.json_lines, secrets=build.secrets(s))
    _take_run_lock(s, rid)
    if s.provider != "offline":
        from skillbuild.providers import vertex

        vertex.preload()  # here, before doit forks its workers: each would import the SDK again
    build.open_audit(s).start_run(sys.argv[1:], run_id=rid, secrets=build.secrets(s))

    def on_finish(summary: progress.Summary) -> None:
        build.open_audit(s).end_run(rid, summary.counts(), summary.exit_code)
        runlock.release(s.cache_dir / runlock.LOCK_NAME)

    def usage_of(plugin: str) -> dict[str, int]:
        return build.open_audit(s).run_usage(rid, plugin)

    return progress.RunProgress(rid, logs, len(plugins), json_lines=s.json_lines, secrets=build.secrets(s),
                                on_finish=on_finish, usage_of=usage_of)


def _take_run_lock(s, rid: str) -> None:
    """One build per marketplace at a time (exit 75 or wait: safety/runlock.py); then clear a killed run's temps."""
    command = redact(" ".join(sys.argv[1:]), build.secrets(s))
    runlock.acquire_or_exit(s.cache_dir / runlock.LOCK_NAME, rid, command.split(), s.lock_wait)
    swept = runlock.sweep_leftovers(s.marketplace, s.cache_dir)
    if swept:
        line = (f"removed {len(swept)} temp file(s) left by an interrupted run: "
                + ", ".join(str(p) for p in swept[:5]) + (" ..." if len(swept) > 5 else ""))
        progress.append_line(progress.log_path(s.build_dir / "logs", rid), line)
        print(line, flush=True)


def default_tasks(s) -> list[str]:
    names = [f"skill:{p.key}" for p in marketplace().plugins if p.state in ("ok", "error", "external")]
    return names or ["status"]  # an empty marketplace: say so rather than run every task


def _input_names(plugin: Plugin) -> dict[str, str]:
    """Names of inputs and scripts: adding or removing a file (even a script) must rebuild."""
    return {"inputs": "\n".join(plugin.relpath(p) for p in plugin.inputs), "scripts": "\n".join(plugin.scripts)}


def _analysis_config(s, plugin: Plugin) -> dict[str, str]:
    return {"provider": s.provider, "model": build.model_id(s), **_input_names(plugin),
            **s.fingerprint("input_file_budget", "input_total_budget")}


def _skill_config(s, plugin: Plugin) -> dict[str, str]:
    low, high = s.gate_bounds(s.provider)
    return {"provider": s.provider, "model": build.model_id(s), "bounds": f"{low}-{high}", **_input_names(plugin),
            **s.fingerprint("skill_path", "max_body_lines", "input_file_budget", "input_total_budget")}


def _plugins_to_build(market: Marketplace, s) -> list[Plugin]:
    return [p for p in market.buildable()
            if not status.is_kept(p, s.keep_min_bytes, s.provider, build.saved_original_path(s, p))]


def task_analyse():
    """Phase 1: analyse each plugin into cache/<marketplace>/analysis/<plugin>.json."""
    s, market = settings(), marketplace()
    yield {"basename": "analyse", "name": None, "doc": task_analyse.__doc__}
    for plugin in _plugins_to_build(market, s):
        yield {
            "name": plugin.key,
            "doc": f"analyse {plugin.rel}",
            "actions": [(build.analyse, [s, plugin, run_id()])],
            "file_dep": [str(p) for p in plugin.inputs] + [str(build.prompt_path(s, "analysis"))],
            "targets": [str(build.analysis_path(s, plugin))],
            "uptodate": [config_changed(_analysis_config(s, plugin))],
            "clean": True,
        }


def task_skill():
    """Phase 2: write each plugin's SKILL.md (default task: every stale plugin)."""
    s, market = settings(), marketplace()
    yield {"basename": "skill", "name": None, "doc": task_skill.__doc__}
    for plugin in market.plugins:
        task = _skill_task(s, plugin)
        if task:
            yield task


def _skill_task(s, plugin: Plugin) -> dict | None:
    rid = run_id()
    if plugin.state == "error":
        return {"name": plugin.key, "doc": f"FAILED: {plugin.reason}", "actions": [(build.fail, [s, plugin, rid])]}
    if plugin.state == "external":
        return {"name": plugin.key, "doc": f"skipped: {plugin.reason}", "actions": [(build.skip, [s, plugin, rid])],
                "uptodate": [config_changed({"skipped": plugin.reason})]}
    if plugin.state != "ok":
        return None  # untracked and build_untracked is off: listed by `doit status`, never built
    kept = status.keep_reason(plugin, s.keep_min_bytes, s.provider, build.saved_original_path(s, plugin))
    if kept:
        return {"name": plugin.key, "doc": f"kept: {plugin.relpath(plugin.target)}, {kept}",
                "actions": [(build.keep, [s, plugin, rid, kept])],
                "uptodate": [config_changed({"kept": file_xxh3(plugin.target), "why": kept})]}
    return {
        "name": plugin.key,
        "doc": f"write {plugin.rel}/{plugin.relpath(plugin.target)}",
        "actions": [(build.build_skill, [s, plugin, rid])],
        "file_dep": [str(build.analysis_path(s, plugin)), str(build.prompt_path(s, "generation"))]
        + [str(p) for p in plugin.inputs],
        "targets": [str(plugin.target)],
        "uptodate": [config_changed(_skill_config(s, plugin))],
        # `doit clean` removes rejected candidates only: never the SKILL.md, backups or the audit DB.
        "clean": [(build.clean_rejected, [s, plugin])],
    }


def task_status():
    """Show every plugin: fresh, stale, kept (hand-written), skipped (external/untracked) or failed."""
    return {"actions": [(maintenance.print_status, [settings(), marketplace()])], "uptodate": [False], "verbosity": 2}


def task_backup():
    """Hashed archive of the marketplace into build/<m>/backups/archive/, then off-site to Turso if configured."""
    s, market = settings(), marketplace()

    def files():
        return archive.archive_files(s.marketplace, [p["path"] for p in archive.plugins_for_backup(market)])

    url, token = maintenance.turso(s)
    return {
        "actions": [(maintenance.backup, [s, market, run_id()])],
        # Not file_dep: listing the SKILL.md targets would make doit build them before backing up.
        "uptodate": [TreeUnchanged(files), config_changed({"offsite": str(bool(url and token))})],
        "verbosity": 2,
    }


def task_restore_offsite():
    """Restore the marketplace from Turso into a new folder: [backup=ID] [dest=DIR] [live=1 to overwrite]."""
    s, market = settings(), marketplace()
    return {
        "actions": [(maintenance.restore_offsite, [s, market.name, arg("backup"), arg("dest"), flag("live")])],
        "uptodate": [False],
        "verbosity": 2,
    }


def task_backups():
    """List local and off-site backups with their state; verify=1 re-checks every hash."""
    return {"actions": [(maintenance.list_backups, [settings(), flag("verify")])], "uptodate": [False], "verbosity": 2}


def task_restore():
    """Put one plugin's files back from a backup, verified: plugin=NAME [at=RUN]."""
    s, market = settings(), marketplace()
    wanted = arg("plugin")
    found = [p for p in market.plugins if wanted in (p.key, p.name) and p.path is not None]
    if not found:
        reason = (f"restore needs plugin=NAME naming a plugin of {s.marketplace}" if wanted is None
                  else f"no plugin named {wanted!r} in {s.marketplace}; `doit status` lists them")
        return {"actions": [(build.fail_plain, [reason])], "uptodate": [False], "verbosity": 2}
    plugin = found[0]
    return {"actions": [(build.restore, [s, plugin, run_id(), arg("at")])], "uptodate": [False], "verbosity": 2}


def task_report():
    """Write build/<marketplace>/report.html and copy it to build/report.html: success rate, runs, times,
    sizes, calls against the quota."""
    return {"actions": [(maintenance.write_report, [settings(), marketplace()])], "uptodate": [False], "verbosity": 2}


def task_check():
    """Preflight: with Vertex, one cheap call proves credentials, project, location and model."""
    return {"actions": [(maintenance.check, [settings()])], "uptodate": [False], "verbosity": 2}


def task_plan():
    """Dry run: stale plugins and why, API calls (cache hits excluded), tokens, cost, quota left, ETA."""
    return {"actions": [(maintenance.print_plan, [settings(), marketplace()])], "uptodate": [False], "verbosity": 2}


def task_quota():
    """Today's API calls and tokens, budget left, 429s, the current pace and a recommendation."""
    return {"actions": [(maintenance.print_quota, [settings()])], "uptodate": [False], "verbosity": 2}
