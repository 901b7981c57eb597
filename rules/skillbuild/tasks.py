"""doit task creators: plain dicts built from discovery; the work itself lives in skillbuild.build.

Dependencies are computed when tasks load (no calc_dep), so `doit list --status` is exact.
"""
from __future__ import annotations

import os
import sys
import time
from functools import lru_cache

from doit import get_var
from doit.exceptions import InvalidDodoFile
from doit.tools import config_changed

from skillbuild import build, maintenance, run, statedir
from skillbuild.calls import spend, workers
from skillbuild.safety import archive, interrupt
from skillbuild.ui import lint, progress, status
from skillbuild.config import ConfigError, load_settings
from skillbuild.discovery import DiscoveryError, Marketplace, Plugin, discover
from skillbuild.memo import memo_for
from skillbuild.fingerprints import (UPTODATE_SIGNATURE, TreeUnchanged, XXHashChecker, canonical_hash, file_xxh3,
                                     file_xxh3_once)

__all__ = ["doit_config", "task_analyse", "task_skill", "task_status", "task_backup", "task_restore_offsite",
           "task_backups", "task_restore", "task_report", "task_check",
           "task_plan", "task_quota", "task_lint", "task_routing", "task_batch", "task_prune"]


def arg(name: str, default: str | None = None) -> str | None:
    """A task argument given as `doit task name=value`."""
    value = get_var(name)  # None when not given, and outside a doit command (doit then ignores a default)
    return default if value is None else value


def flag(name: str) -> bool:
    return str(arg(name, "")).lower() in ("1", "true", "yes", "on")


def cli_vars() -> dict[str, str]:
    """Every `name=value` given on the doit command line.

    doit's public `get_var` answers for a name it is asked about; the names come from the command line by
    doit's own rule (an argument not starting with `-` that holds `=`), so an unknown setting is still named.
    Forked workers inherit both; the settings are resolved once, in the parent, before any fork.
    """
    names = [a.split("=", 1)[0] for a in sys.argv[1:] if a and a[0] != "-" and "=" in a]
    return {name: value for name in names if (value := get_var(name)) is not None}


# The marketplace root when the tasks are loaded by the installed `skillbuild` command (skillbuild/cli.py):
# settings then come from that marketplace and state lives in it. None: the checkout's dodo.py.
HOME: dict[str, object] = {"path": None}


@lru_cache(maxsize=1)
def settings():
    return load_settings(cli=cli_vars(), home=HOME["path"])


@lru_cache(maxsize=1)
def marketplace() -> Marketplace:
    s = settings()
    return discover(s.marketplace, s.skill_path, s.file_max_bytes, s.build_untracked, s.exclude,
                    memo_for(s.memo_file))


@lru_cache(maxsize=1)
def run_id() -> str:
    """One id per doit invocation; forked workers inherit it."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"


def doit_config() -> dict:
    """DOIT_CONFIG for dodo.py; a bad setting or catalog stops the load with a message naming the fix."""
    run.loading()
    try:
        s = settings()
        marketplace()
        build.prompt_path(s, "analysis"), build.prompt_path(s, "generation")
    except (ConfigError, DiscoveryError, FileNotFoundError) as exc:
        raise InvalidDodoFile(f"skillbuild: {exc}") from None
    statedir.prepare(s)
    run.prepare_state_file(s.state_file)  # a full cache disk: one line and exit 1, not doit's traceback and 3
    interrupt.install()  # SIGTERM ends the run like Ctrl-C, so doit saves its state
    # lock, audit run and log for any build run, whatever the reporter; the spending cap checked first
    run.install(s, run_id(), _skill_folders, refusal=lambda: spend.run_refusal(s, marketplace()))
    return {
        "backend": "sqlite3",
        "dep_file": str(s.state_file),
        "check_file_uptodate": XXHashChecker,
        # Each plugin's task by name, not the `skill` group: one failed plugin then exits 1, not 2.
        "default_tasks": default_tasks(s),
        "continue": True,  # one plugin's failure never stops the others
        "subtasks": True,  # `doit list` shows every plugin's tasks
        "reporter": progress.reporter_class(_make_progress),
        # Workers sized from the plan (calls/workers.py) for a build; `-n N` / `-P` on the command line override
        # these. Commands that only report run in one process, their output in order.
        **(workers.decide(s).doit_options() if workers.builds(sys.argv[1:]) and _has_plugins() else {}),
    }


def _has_plugins() -> bool:
    """Whether the default tasks are plugins' (an empty marketplace's default is `status`, run in one process)."""
    return default_tasks(settings()) != ["status"]


def _skill_folders() -> list:
    """Where each plugin's SKILL.md is written: the only marketplace folders a run start looks for temp files in."""
    return [p.target.parent for p in marketplace().plugins if p.target is not None]


def _make_progress(plugins: list[str]) -> progress.RunProgress:
    """The console reporter's lines, log and summary: the build run's (skillbuild/run.py), else a plain one."""
    build_run = run.current()
    if build_run is not None:
        return build_run.tracker(echo=True)
    s = settings()  # status, backup, listings: no lock, no audit run, no summary
    return progress.RunProgress(run_id(), s.logs_dir, 0, json_lines=s.json_lines, secrets=build.secrets(s))


def default_tasks(s) -> list[str]:
    names = [f"skill:{p.key}" for p in marketplace().plugins if p.state in ("ok", "error", "external", "skipped")]
    return names or ["status"]  # an empty marketplace: say so rather than run every task


def _input_names(plugin: Plugin) -> dict[str, str]:
    """Names of inputs and scripts: adding or removing a file (even a script) must rebuild."""
    return {"inputs": "\n".join(plugin.relpath(p) for p in plugin.inputs), "scripts": "\n".join(plugin.scripts)}


def _analysis_config(s, plugin: Plugin) -> dict[str, str]:
    return {"provider": s.provider, "model": s.model_id, **_input_names(plugin),
            **s.fingerprint("input_file_budget", "input_total_budget")}


class AnalysisUpToDate:
    """doit `uptodate` of `analyse:<key>`: its analysis file exists, and the plugin is fresh (`status.judge`, the
    answer `doit status` gives) or the file was made from the current inputs, prompt and settings.

    No file_dep: a changed input file whose plugin is fresh all the same (inputs put back by `doit restore`)
    would make doit analyse and rebuild where `doit status` says there is nothing to do. A missing analysis
    (`doit clean`) is made again; it is a cache, the SKILL.md stays as it is while it is fresh.
    """
    __signature__ = UPTODATE_SIGNATURE

    def __init__(self, settings, plugin: Plugin):
        self.settings, self.plugin = settings, plugin

    def __call__(self, task, values) -> bool:
        made_from = canonical_hash({**_analysis_config(self.settings, self.plugin),
                                    "sources": build.source_hash(self.plugin),
                                    "prompt": file_xxh3_once(build.prompt_path(self.settings, "analysis"))})
        task.value_savers.append(lambda: {"made_from": made_from})  # saved when the task runs and succeeds
        if not build.analysis_path(self.settings, self.plugin).is_file():
            return False
        return values.get("made_from") == made_from or status.Judged(self.settings, self.plugin)(task, values)


def _plugins_to_build(market: Marketplace, s) -> list[Plugin]:
    fresh = fresh_at_load()
    return [p for p in market.buildable() if p.key not in fresh
            and not status.is_kept(p, s.keep_min_bytes, s.provider, build.saved_original_path(s, p))]


@lru_cache(maxsize=1)
def fresh_at_load() -> frozenset[str]:
    """The plugins a plain `doit` run (`workers.plain_run`) finds fresh as it loads, by `status.judge`, the one
    answer: such a run asks for nothing but the default tasks, so their skill task is up to date without
    another check and they get no analysis task. A no-op of a large marketplace then judges each plugin
    once, where doit would check two tasks of each (every other command line judges at check time)."""
    if not workers.plain_run(sys.argv[1:]):
        return frozenset()
    s, market = settings(), marketplace()
    expected = build.expected_provenance(s)
    return frozenset(p.key for p in market.buildable()
                     if build.analysis_path(s, p).is_file() and status.judge(s, p, expected)[0] == "fresh")


def task_analyse():
    """Phase 1: analyse each plugin into cache/<marketplace>/analysis/<plugin>.json."""
    s, market = settings(), marketplace()
    yield {"basename": "analyse", "name": None, "doc": task_analyse.__doc__}
    for plugin in _plugins_to_build(market, s):
        yield {
            "name": plugin.key,
            "doc": f"analyse {plugin.rel}",
            "actions": [(build.analyse, [s, plugin, run_id()])],
            "uptodate": [AnalysisUpToDate(s, plugin)],
            "clean": [(build.clean_analysis, [s, plugin])],
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
    if plugin.state in ("external", "skipped"):  # external source, shadowed copy, empty plugin
        return {"name": plugin.key, "doc": f"skipped: {plugin.reason}", "actions": [(build.skip, [s, plugin, rid])],
                "uptodate": [config_changed({"skipped": plugin.reason})],
                "meta": {"phase": "skip", "outcome_when_up_to_date": "skipped"}}  # summary counts it as status does
    if plugin.state != "ok":
        return None  # untracked and build_untracked is off: listed by `doit status`, never built
    if plugin.key in fresh_at_load():  # judged fresh as this plain run loaded
        return {"name": plugin.key, "doc": f"write {plugin.rel}/{plugin.relpath(plugin.target)}",
                "actions": [(build.build_skill, [s, plugin, rid])], "uptodate": [True]}
    kept = status.keep_reason(plugin, s.keep_min_bytes, s.provider, build.saved_original_path(s, plugin))
    if kept:
        return {"name": plugin.key, "doc": f"kept: {plugin.relpath(plugin.target)}, {kept}",
                "actions": [(build.keep, [s, plugin, rid, kept])],
                "uptodate": [config_changed({"kept": file_xxh3(plugin.target), "why": kept})],
                "meta": {"phase": "keep", "outcome_when_up_to_date": "kept"}}
    return {
        "name": plugin.key,
        "doc": f"write {plugin.rel}/{plugin.relpath(plugin.target)}",
        "actions": [(build.build_skill, [s, plugin, rid])],
        "task_dep": [f"analyse:{plugin.key}"],
        "targets": [str(p) for p in status.target_paths(plugin.target)],
        # The one answer `doit status` and `doit plan` give: the SKILL.md's provenance against the inputs,
        # prompts, provider, model and settings it would be made from now (no file_dep, which could disagree).
        "uptodate": [status.Judged(s, plugin)],
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
        "actions": [(maintenance.restore_offsite, [s, market, arg("backup"), arg("dest"), flag("live")])],
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


def task_prune():
    """Remove response cache entries no current input reaches, and logs and rejected candidates older than
    retain_days: [cache=1] [logs=1] [rejected=1] (none given: all three) [dry=1]; `doit clean prune ...` too."""
    from skillbuild import retention

    action = (retention.run, [settings(), marketplace(), [k for k in retention.KINDS if flag(k)], flag("dry")])
    return {"actions": [action], "clean": [action], "uptodate": [False], "verbosity": 2}


def task_check():
    """Preflight: with Vertex, one cheap call proves credentials, project, location and model."""
    return {"actions": [(maintenance.check, [settings()])], "uptodate": [False], "verbosity": 2}


def task_plan():
    """Dry run: stale plugins and why, API calls (cache hits excluded), tokens, cost, quota left, ETA;
    mode=batch: batch jobs and their cost."""
    return {"actions": [(maintenance.print_plan, [settings(), marketplace(), arg("mode")])], "uptodate": [False],
            "verbosity": 2}


def task_batch():
    """Send every stale plugin's requests as Vertex AI batch jobs into the response cache; cancel=1 cancels."""
    from skillbuild.calls import batch

    return {"actions": [(batch.run_batch, [settings(), marketplace(), run_id(), flag("cancel")])],
            "uptodate": [False], "verbosity": 2}


def task_quota():
    """Today's API calls and tokens, budget left, 429s, the current pace and a recommendation."""
    return {"actions": [(maintenance.print_quota, [settings()])], "uptodate": [False], "verbosity": 2}


def task_lint():
    """Quality score (0-100) of every SKILL.md and what cost points; fails when one is below min_quality."""
    return {"actions": [(lint.print_lint, [settings(), marketplace()])], "uptodate": [False], "verbosity": 2}


def task_routing():
    """Do plugins' trigger phrases pick their own description? Top-1/top-3, confusable pairs, eval file, listing."""
    return {"actions": [(lint.print_routing, [settings(), marketplace()])], "uptodate": [False], "verbosity": 2}
