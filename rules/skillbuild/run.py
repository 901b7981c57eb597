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
import gc
import sqlite3
import sys
from typing import Callable

from doit.runner import Runner

from skillbuild import build
from skillbuild.memo import memo_for
from skillbuild.safety import interrupt, leftovers, runlock
from skillbuild.store import writing
from skillbuild.store.audit import AuditError, redact
from skillbuild.ui import progress

EXIT_ERROR = 3  # what `DoitMain.run` returns when an exception escapes the runner
EXIT_FAILED = 1  # skillbuild's own failure (a full disk): never 3, which means invalid settings or an unknown task
_state: dict = {"settings": None, "run_id": None, "current": None, "skill_folders": list}


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
        audit = build.open_audit(s)
        for line in leftovers.close_dead_runs(audit, self.run_id):  # under the lock: no other run is writing
            progress.log_line(self.log, line)
            print(line, flush=True)
        audit.start_run(self.argv, run_id=self.run_id, secrets=build.secrets(s))
        return self

    def _take_lock(self) -> None:
        """One build per marketplace at a time (exit 75 or wait: safety/runlock.py); then clear a killed run's temps."""
        s = self.settings
        command = redact(" ".join(self.argv), build.secrets(s))
        # The real stderr: `-r json` has swapped sys.stderr for a buffer it prints only at the end.
        runlock.acquire_or_exit(s.lock_file, self.run_id, command.split(), s.lock_wait,
                                stream=sys.__stderr__ or sys.stderr)
        swept = runlock.sweep_leftovers(self._state_folders(), s.responses_dir, _state["skill_folders"](),
                                        memo_for(s.memo_file))
        lines = s.journal().reap()  # staging folders and unfinished restores of killed runs
        lines += leftovers.release_reservations(s)
        if swept:
            lines.append(f"removed {len(swept)} temp file(s) left by an interrupted run: "
                         + ", ".join(str(p) for p in swept[:5]) + (" ..." if len(swept) > 5 else ""))
        for line in lines:
            progress.log_line(self.log, line)
            print(line, flush=True)

    def _state_folders(self) -> list:
        """Our state folders atomic writes put temp files in (each plugin's skill folder is the other kind)."""
        s = self.settings
        return [s.analysis_dir, s.rejected_dir, s.cache_dir, s.originals_dir, s.journal_dir, s.build_dir,
                s.build_root]

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
        except (AuditError, OSError, sqlite3.Error) as exc:
            _say(f"skillbuild: the audit DB could not record this run's end (exit status {exit_status}): "
                 f"{_why(exc, self.settings.audit_db)}; the next run closes it as killed")
        finally:
            runlock.release(self.settings.lock_file)


def install(settings, run_id: str, skill_folders=None, refusal: Callable[[], str | None] | None = None) -> None:
    """Give every doit run of this process a lifecycle when it may touch plugins (see the module docstring).
    `skill_folders()`: the folders SKILL.md files are written to, where a killed run's temp files may be.
    `refusal`: asked once before a build run starts; a reason it gives stops the run before anything is sent."""
    _state.update(settings=settings, run_id=run_id, skill_folders=skill_folders or list, refusal=refusal)
    if getattr(Runner.run_all, "skillbuild_lifecycle", False):
        return
    Runner.run_all = _with_lifecycle(Runner.run_all)


def current() -> BuildRun | None:
    """The build run of this process while doit runs its tasks (None for status, backup, listings...)."""
    return _state["current"]


def loading() -> None:
    """Pause Python's cycle collector while doit loads the tasks: discovery, the memo and thousands of task
    dicts are objects that live for the whole run, and each collection would walk them all again (half a
    second of a 2,360-plugin no-op). `_with_lifecycle` freezes them (never walked again) and resumes it before
    any task runs; commands that run no task (list, info) end soon after loading."""
    gc.disable()


def _loaded() -> None:
    gc.freeze()
    gc.enable()


def _with_lifecycle(run_all):
    @functools.wraps(run_all)
    def wrapper(runner, task_dispatcher):
        _loaded()
        plugins = progress.run_plugins(task_dispatcher.tasks, task_dispatcher.selected_tasks)
        if not plugins or _state["settings"] is None:
            return run_all(runner, task_dispatcher)  # status, backup, report...: no lock, no audit run
        refused = _state.get("refusal") and _state["refusal"]()
        if refused:  # e.g. the spending cap: the run does not start, every plugin stays as it is
            print(f"skillbuild: {refused}", file=sys.stderr, flush=True)
            return 1  # a task-level failure (exit 3 is for invalid settings only)
        settings = _state["settings"]
        try:
            run = BuildRun(settings, _state["run_id"], plugins, sys.argv[1:]).open()
        except (AuditError, OSError, sqlite3.Error) as exc:
            runlock.release(settings.lock_file)
            _say(f"skillbuild: the run could not start: {_why(exc, settings.audit_db)}; nothing was built or "
                 f"recorded (exit status {EXIT_FAILED}). Free space there and run again")
            return EXIT_FAILED
        _state["current"] = run
        if not getattr(runner.reporter, "shows_progress", False):
            runner.reporter = progress.Recorder(runner.reporter, run.tracker(echo=False))
        unsaved = _guard_state_save(runner)
        status = EXIT_ERROR
        _streams_back_before_finish(runner)
        try:
            status = run_all(runner, task_dispatcher)
            if unsaved:
                _say(f"skillbuild: doit could not save its state ({writing.write_failure(unsaved[0], settings.state_file)}"
                     "); the next run checks each task again and redoes nothing that is done (each SKILL.md's "
                     "provenance and the response cache say what is)")
                status = status or EXIT_FAILED
            return status
        except (OSError, sqlite3.Error) as exc:  # the reporter or doit itself could not write: one line, never 3
            status = EXIT_FAILED
            _say(f"skillbuild: the run stopped: {_why(exc, settings.build_root)}")
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



def prepare_state_file(path) -> None:
    """Make sure doit can open its state file before doit tries: doit creates its table on open, and on a full
    disk reports a "corrupted" file with a traceback and exit status 3. Ours: one line, exit status 1."""
    from pathlib import Path

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            return  # made before: doit only reads it at the start
        conn = sqlite3.connect(path)
        try:  # doit's own table (doit.dependency.SqliteDB), so doit finds it made
            conn.execute("create table if not exists doit (task_id text not null primary key, task_data json)")
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        _say(f"skillbuild: cannot create doit's state file: {writing.write_failure(exc, path)}; nothing was run "
             f"(exit status {EXIT_FAILED}). Free space there and run again")
        sys.exit(EXIT_FAILED)


def _guard_state_save(runner) -> list[BaseException]:
    """Let doit's end of run go on when its state cannot be saved (the cache disk full): doit's `finish` saves
    the state first, and an error there would skip the summary and end the process with a traceback and 3.
    Returns the list the error is put in."""
    errors: list[BaseException] = []
    close = runner.dep_manager.close

    def close_or_note() -> None:
        try:
            close()
        except (OSError, sqlite3.Error) as exc:
            errors.append(exc)

    runner.dep_manager.close = close_or_note
    return errors


def _why(exc: BaseException, path) -> str:
    """One line naming what could not be written: an AuditError names its file already."""
    return str(exc).split(". Check ")[0] if isinstance(exc, AuditError) else writing.write_failure(exc, path)


def _say(line: str) -> None:
    """One line on the real stderr (`-r json` has swapped sys.stderr for a buffer it prints only at the end)."""
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()


def _streams_back_before_finish(runner) -> None:
    """doit's thread workers swap `sys.stdout`/`sys.stderr` per action and restore what they found, so two
    overlapping actions can leave a finished action's capture in place. Put the run's own streams back before
    `finish()` reports: `-r json` reads its buffer there, and doit prints its errors to them."""
    streams, finish = (sys.stdout, sys.stderr), runner.finish

    def finish_with_streams():
        sys.stdout, sys.stderr = streams
        return finish()

    runner.finish = finish_with_streams

