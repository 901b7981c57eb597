"""One build run's lifecycle, whatever doit reporter prints it: run lock, leftover sweep, SDK preload, audit run, log.

Where it hooks into doit (0.37) and why there. A run that may touch plugins must, before any task runs and
before `doit -n N` forks a worker: take the run lock (or exit 75), sweep a killed run's temp files, import the
SDK once, open its `runs` row; and after the last task: close the row with the process's exit status and
release the lock. A dodo file gets three kinds of hooks from doit, and only one fits:
- The reporter (`DOIT_CONFIG["reporter"]`): `-r executed-only` or `-r json` replaces it, so a build run that
  way had no lock, no `runs` row and no log. The console output stays there, the lifecycle cannot.
- Task hooks (an action, `uptodate`, `setup`, `teardown`): actions run in the workers under `-n N`; `uptodate`
  callables run in the parent but also for `doit list --status` and `doit info`; none sees the exit status.
- The runner: `Runner.run_all(dispatcher)` is the one call every reporter and every runner (`Runner`,
  `MRunner` for `-n N`, `MThreadRunner`) goes through, only for commands that execute tasks. It runs in the
  parent, after doit resolved the selection (defaults, groups, targets) into `dispatcher.selected_tasks`
  and before it starts a worker; it returns doit's result, which `DoitMain.run` returns as the exit status
  (an exception escaping it becomes 3). No public doit API gives that point to a dodo file (commands are
  chosen before dodo.py is read; plugin commands come only from a config file in the current folder), so
  `install()` wraps that one method, once per process, from `doit_config()`; doit is pinned below 0.38.
Inside the wrapper the default reporter (ui/progress.py) is handed this run's tracker for its console lines;
any other reporter is wrapped in `progress.Recorder`, which passes every call on unchanged and writes the
same event lines and summary to the run's log only (stdout stays the reporter's: `-r json` prints only JSON).
"""
from __future__ import annotations

import functools
import sys
from typing import Callable

from doit.runner import Runner

from skillbuild import build
from skillbuild.safety import interrupt, runlock
from skillbuild.store.audit import redact
from skillbuild.ui import progress

EXIT_ERROR = 3  # what `DoitMain.run` returns when an exception escapes the runner
_state: dict = {"settings": None, "run_id": None, "current": None}


class BuildRun:
    """A run that may touch plugins: `open()` before the first task, `close(status)` after the last."""

    def __init__(self, settings, run_id: str, plugins: list[str], argv: list[str]):
        self.settings, self.run_id, self.plugins, self.argv = settings, run_id, plugins, argv
        self.log = settings.log_file(run_id)
        self._tracker: progress.RunProgress | None = None

    def open(self) -> BuildRun:
        s = self.settings
        self._take_lock()
        if s.provider != "offline":
            from skillbuild.providers import vertex

            vertex.preload()  # here, before doit forks its workers: each would import the SDK again
        build.open_audit(s).start_run(self.argv, run_id=self.run_id, secrets=build.secrets(s))
        return self

    def _take_lock(self) -> None:
        """One build per marketplace at a time (exit 75 or wait: safety/runlock.py); then clear a killed run's temps."""
        s = self.settings
        command = redact(" ".join(self.argv), build.secrets(s))
        # The real stderr: `-r json` has swapped sys.stderr for a buffer it prints only at the end.
        runlock.acquire_or_exit(s.lock_file, self.run_id, command.split(), s.lock_wait,
                                stream=sys.__stderr__ or sys.stderr)
        swept = runlock.sweep_leftovers(s.marketplace, s.cache_dir, s.responses_dir)
        lines = s.journal().reap()  # staging folders and unfinished restores of killed runs
        if swept:
            lines.append(f"removed {len(swept)} temp file(s) left by an interrupted run: "
                         + ", ".join(str(p) for p in swept[:5]) + (" ..." if len(swept) > 5 else ""))
        for line in lines:
            progress.append_line(self.log, line)
            print(line, flush=True)

    def tracker(self, echo: bool = True) -> progress.RunProgress:
        """The run's events and summary (made once): on the console too when `echo`, always in the log."""
        if self._tracker is None:
            s = self.settings
            audit = build.open_audit(s)
            self._tracker = progress.RunProgress(
                self.run_id, self.log.parent, len(self.plugins), json_lines=s.json_lines, echo=echo,
                secrets=build.secrets(s), usage_of=lambda plugin: audit.run_usage(self.run_id, plugin))
        return self._tracker

    def close(self, exit_status: int) -> None:
        """Record the counts and the process's exit status, then let the next build in."""
        tracker = self.tracker(echo=False)
        summary = tracker.summary or progress.summarise(tracker.events, 0.0)
        try:
            build.open_audit(self.settings).end_run(self.run_id, summary.counts(), exit_status)
        finally:
            runlock.release(self.settings.lock_file)


def install(settings, run_id: str, refusal: Callable[[], str | None] | None = None) -> None:
    """Give every doit run of this process a lifecycle when it may touch plugins (see the module docstring).
    `refusal`: asked once before a build run starts; a reason it gives stops the run before anything is sent."""
    _state.update(settings=settings, run_id=run_id, refusal=refusal)
    if getattr(Runner.run_all, "skillbuild_lifecycle", False):
        return
    Runner.run_all = _with_lifecycle(Runner.run_all)


def current() -> BuildRun | None:
    """The build run of this process while doit runs its tasks (None for status, backup, listings...)."""
    return _state["current"]


def _with_lifecycle(run_all):
    @functools.wraps(run_all)
    def wrapper(runner, task_dispatcher):
        plugins = progress.run_plugins(task_dispatcher.tasks, task_dispatcher.selected_tasks)
        if not plugins or _state["settings"] is None:
            return run_all(runner, task_dispatcher)  # status, backup, report...: no lock, no audit run
        refused = _state.get("refusal") and _state["refusal"]()
        if refused:  # e.g. the spending cap: the run does not start, every plugin stays as it is
            print(f"skillbuild: {refused}", file=sys.stderr, flush=True)
            return 1  # a task-level failure (exit 3 is for invalid settings only)
        run = BuildRun(_state["settings"], _state["run_id"], plugins, sys.argv[1:]).open()
        _state["current"] = run
        if not getattr(runner.reporter, "shows_progress", False):
            runner.reporter = progress.Recorder(runner.reporter, run.tracker(echo=False))
        status = EXIT_ERROR
        try:
            status = run_all(runner, task_dispatcher)
            return status
        except KeyboardInterrupt:
            status = interrupt.exit_status()  # 143 after SIGTERM, 130 after Ctrl-C: what the process exits with
            raise
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
            raise
        finally:
            _state["current"] = None
            run.close(status)

    wrapper.skillbuild_lifecycle = True
    return wrapper

