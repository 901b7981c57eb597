"""What a maintainer watches during a run: one line per event, a progress bar on a terminal, a summary.

Every event (plugin, phase, outcome, seconds, tokens) becomes one line, flushed at once, on the console
and appended to `<logs_dir>/<run_id>.log`. The log is opened in append mode and each line is written
with a single `os.write`, so several doit worker processes can share it without mixing lines.

On a terminal a rich progress bar shows plugins done/total and an ETA that respects the throttle's pace;
elsewhere (a pipe, `tail -f`, CI) the output is plain lines. `json_lines=True` writes JSON objects instead
of text, on both the console and the log.

Entry points: `emit()` for a doit task action (any process); `RunProgress` for the process that owns the
console, fed by a doit reporter (`reporter_class()`, the default) or, under any other reporter, by a
`Recorder` that writes the log only (skillbuild/run.py decides which).

Outcomes are the audit statuses (success, failure, skipped, kept) plus "fresh" (up to date, no work).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from skillbuild.store.audit import STATUSES, redact, utc_now

OUTCOMES = (*STATUSES, "fresh")
DEFAULT_CALLS_PER_PLUGIN = 2  # analyse + generate, until the run has measured its own


@dataclass
class Event:
    plugin: str
    phase: str
    outcome: str
    seconds: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0  # API requests sent for this event (cache hits are free)
    reason: str | None = None  # why it failed, was skipped or kept
    time: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"progress outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    @property
    def terminal(self) -> bool:
        """Whether this event settles the plugin: a successful or up-to-date analysis is only a step."""
        return not (self.phase == "analyse" and self.outcome in ("success", "fresh"))


def format_plain(event: Event, position: str = "") -> str:
    """`10:15:03 [3/236] my-plugin generate success 12.3s in=1200 out=800 calls=1 - reason`."""
    clock = event.time[11:19] if len(event.time) >= 19 else event.time
    parts = [clock]
    if position:
        parts.append(f"[{position}]")
    parts += [event.plugin, event.phase, event.outcome, f"{event.seconds:.1f}s",
              f"in={event.input_tokens}", f"out={event.output_tokens}", f"calls={event.calls}"]
    line = " ".join(parts)
    if event.reason:
        line += " - " + event.reason
    return line


def format_json(event: Event) -> str:
    return json.dumps(asdict(event), sort_keys=True)


def _one_line(text: str | None, secrets: Iterable[str]) -> str | None:
    """Reasons come from exceptions: keep them on one line and free of credentials."""
    if not text:
        return None
    return " ".join(redact(str(text), secrets).split())[:500]


def log_path(logs_dir: str | os.PathLike, run_id: str) -> Path:
    return Path(logs_dir) / f"{run_id}.log"


def append_line(path: Path, line: str) -> None:
    """Append one whole line; O_APPEND plus a single write keeps concurrent writers' lines apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


_UNWRITABLE_LOGS: set[Path] = set()


def log_line(path: Path, line: str) -> None:
    """`append_line` for a run's own log: a log that cannot be written (its disk full) is said once on stderr and
    the run goes on, its console output being the record, instead of ending it with a traceback."""
    try:
        append_line(path, line)
    except OSError as exc:
        if path not in _UNWRITABLE_LOGS:
            _UNWRITABLE_LOGS.add(path)
            from skillbuild.store.writing import write_failure

            stream = sys.__stderr__ or sys.stderr
            stream.write(f"skillbuild: cannot write the run log ({write_failure(exc, path)}); the console output "
                         "is this run's record\n")
            stream.flush()


def render(event: Event, json_lines: bool, position: str = "") -> str:
    return format_json(event) if json_lines else format_plain(event, position)


def emit(
    event: Event, run_id: str, logs_dir: str | os.PathLike, *, json_lines: bool = False,
    stream: IO[str] | None = None, secrets: Iterable[str] = (),
) -> str:
    """Write one event to the run log and to `stream` (stderr by default: doit shows it live). Returns the line."""
    event.reason = _one_line(event.reason, secrets)
    line = render(event, json_lines)
    append_line(log_path(logs_dir, run_id), line)
    out = stream if stream is not None else sys.stderr
    out.write(line + "\n")
    out.flush()
    return line


def estimate_eta(
    done: int, total: int, elapsed: float, pace_seconds: float = 0.0, calls: int = 0, worked: int = 0,
) -> float | None:
    """Seconds left: remaining plugins times the slower of the observed rate and the throttle's pace.

    The throttle admits one call every `pace_seconds`, so a plugin needing k calls cannot finish faster
    than k * pace_seconds however many workers run. `worked` counts plugins that made calls.
    """
    remaining = max(total - done, 0)
    if remaining == 0:
        return 0.0
    observed = elapsed / done if done else 0.0
    calls_per_plugin = calls / worked if worked else DEFAULT_CALLS_PER_PLUGIN
    per_plugin = max(observed, pace_seconds * calls_per_plugin)
    return remaining * per_plugin if per_plugin > 0 else None


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Summary:
    built: int = 0
    kept: int = 0
    skipped: int = 0
    failed: int = 0
    fresh: int = 0
    restored: int = 0
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (plugin, phase, reason)

    @property
    def exit_code(self) -> int:
        """Non-zero when any plugin failed, so cron and CI notice."""
        return 1 if self.failed else 0

    def counts(self) -> dict[str, int]:
        """The counts `AuditDB.end_run()` stores."""
        return {"built": self.built, "kept": self.kept, "skipped": self.skipped, "failed": self.failed,
                "fresh": self.fresh, "restored": self.restored}

    def text(self) -> str:
        lines = [
            f"built {self.built}, kept {self.kept}, skipped {self.skipped}, failed {self.failed}, "
            f"fresh {self.fresh}" + (f", restored {self.restored}" if self.restored else ""),
            f"calls {self.calls}, tokens in {self.input_tokens} out {self.output_tokens}, "
            f"time {format_duration(self.seconds)}",
        ]
        lines += [f"FAILED {p} ({phase}): {reason or 'no reason given'}" for p, phase, reason in self.failures]
        return "\n".join(lines)


def summarise(events: Iterable[Event], seconds: float) -> Summary:
    """Each plugin counts once, by its last settling event; calls and tokens count every event."""
    final: dict[str, Event] = {}
    summary = Summary(seconds=seconds)
    for ev in events:
        summary.calls += ev.calls
        summary.input_tokens += ev.input_tokens
        summary.output_tokens += ev.output_tokens
        if ev.terminal or ev.plugin not in final:
            final[ev.plugin] = ev
    for ev in final.values():
        if ev.phase == "restore" and ev.outcome == "success":
            summary.restored += 1
        elif ev.outcome == "success" and ev.terminal:
            summary.built += 1
        elif ev.outcome == "failure":
            summary.failed += 1
            summary.failures.append((ev.plugin, ev.phase, ev.reason or ""))
        elif ev.outcome in ("kept", "skipped"):
            setattr(summary, ev.outcome, getattr(summary, ev.outcome) + 1)
        elif ev.outcome == "fresh" or not ev.terminal:
            summary.fresh += 1
    return summary


class RunProgress:
    """The console side of a run: lines (or a rich bar on a TTY), the run log, the final summary."""

    def __init__(
        self, run_id: str, logs_dir: str | os.PathLike, total: int, *, json_lines: bool = False,
        stream: IO[str] | None = None, pace_seconds: float = 0.0, tty: bool | None = None,
        log_fresh: bool = False, secrets: Iterable[str] = (), echo: bool = True,
        usage_of: Callable[[str], dict[str, int]] | None = None,
    ):
        self.run_id, self.total, self.json_lines = run_id, total, json_lines
        self.echo = echo  # False: the log only (another doit reporter owns the console)
        self.summary: Summary | None = None  # set by finish()
        self.usage_of = usage_of  # a plugin's calls and tokens so far in this run, from the audit DB
        self.log = log_path(logs_dir, run_id)
        self.stream = stream if stream is not None else sys.stdout
        self.pace_seconds, self.log_fresh, self.secrets = pace_seconds, log_fresh, list(secrets)
        self.tty = self.stream.isatty() if tty is None else tty
        self.events: list[Event] = []
        self.settled: set[str] = set()
        self.worked: set[str] = set()
        self.started = time.monotonic()
        self._bar = None
        self._bar_task = None

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> RunProgress:
        if self.echo and self.tty and not self.json_lines:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream, force_terminal=True)
            self._bar = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("ETA {task.fields[eta]}"), TimeElapsedColumn(), console=console, transient=False,
            )
            self._bar_task = self._bar.add_task(self.run_id, total=self.total, eta="?")
            self._bar.start()
        return self

    def __enter__(self) -> RunProgress:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    # events ---------------------------------------------------------------------------------------

    def event(self, event: Event, up_to_date: bool = False) -> str | None:
        """Record one event: count it, log it, show it. Returns the line written (None if not shown).

        `up_to_date`: doit found the task up to date (a fresh, kept or skipped plugin): counted, shown only
        with `log_fresh`."""
        event.reason = _one_line(event.reason, self.secrets)
        self.events.append(event)
        if event.calls:
            self.worked.add(event.plugin)
        if event.terminal:
            self.settled.add(event.plugin)
        if (up_to_date or event.outcome == "fresh") and not self.log_fresh:
            self._refresh()
            return None
        line = render(event, self.json_lines, f"{len(self.settled)}/{self.total}")
        log_line(self.log, line)
        self._show(line)
        self._refresh()
        return line

    def unreported_usage(self, plugin: str) -> dict[str, int]:
        """What a failed task spent: doit hands a failed task's values to no one, the audit DB has them."""
        if self.usage_of is None:
            return {}
        total = self.usage_of(plugin)
        shown = [e for e in self.events if e.plugin == plugin]
        return {key: max(0, total.get(key, 0) - sum(getattr(e, key) for e in shown))
                for key in ("calls", "input_tokens", "output_tokens")}

    def eta_seconds(self) -> float | None:
        calls = sum(e.calls for e in self.events)
        return estimate_eta(len(self.settled), self.total, time.monotonic() - self.started, self.pace_seconds,
                            calls, len(self.worked))

    def _show(self, line: str) -> None:
        if not self.echo:
            return
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.update(self._bar_task, completed=len(self.settled), eta=format_duration(self.eta_seconds()))

    # end ------------------------------------------------------------------------------------------

    def finish(self) -> Summary:
        """Stop the bar, write the summary to the console and the log, return it."""
        self.stop()
        summary = self.summary = summarise(self.events, time.monotonic() - self.started)
        if self.total == 0 and not self.events:
            return summary  # a run of other tasks (status, backup): no plugin summary to give
        if self.json_lines:
            text = json.dumps({"summary": {**asdict(summary), "exit_code": summary.exit_code}}, sort_keys=True)
        else:
            text = summary.text()
        for line in text.splitlines():
            log_line(self.log, line)
        if self.echo:
            self.stream.write(text + "\n")
            self.stream.flush()
        return summary


# --- doit reporter -------------------------------------------------------------------------------------

# doit task basename -> the phase its events belong to when the action does not say.
TASK_PHASES = {"analyse": "analyse", "skill": "generate", "restore": "restore"}
BUILD_GROUPS = ("analyse", "skill")  # selecting one of these groups may touch every plugin
SINGLE_PLUGIN_TASKS = ("restore",)  # tasks without a subtask that act on one plugin


def events_from_values(values: dict[str, Any] | None, plugin: str, phase: str, seconds: float) -> list[Event]:
    """Events a task action returned: {"events": [...]} or one event's keys at top level."""
    values = values or {}
    raw = values.get("events")
    if raw is None:
        raw = [values] if "outcome" in values else [{"outcome": "success", "seconds": seconds}]
    keys = set(Event.__dataclass_fields__) - {"time"}
    out = []
    for item in raw:
        data = {k: v for k, v in item.items() if k in keys}
        data.setdefault("plugin", plugin)
        data.setdefault("phase", phase)
        data.setdefault("seconds", seconds)
        out.append(Event(**data))
    return out


class Watcher:
    """Turns doit's calls about our per-plugin tasks into RunProgress events; says False for other tasks.

    Tasks named `<basename>:<plugin>` with a basename in TASK_PHASES produce events; an action reports
    details by returning a dict (see `events_from_values`). The traceback of a task that raised (a bug, not
    a reported failure) is kept for after the summary.
    """

    def __init__(self, progress: RunProgress):
        self.progress = progress
        self.tracebacks: list[str] = []
        self._began: dict[str, float] = {}

    def started(self, task) -> bool:
        if not _ours(task.name):
            return False
        self._began[task.name] = time.monotonic()
        return True

    def _took(self, task) -> float:
        began = self._began.get(task.name)
        return time.monotonic() - began if began is not None else 0.0

    def succeeded(self, task) -> bool:
        if not _ours(task.name):
            return False
        base, plugin = _split(task)
        for ev in events_from_values(task.values, plugin, TASK_PHASES[base], self._took(task)):
            self.progress.event(ev)
        return True

    def failed(self, task, fail) -> bool:
        if task.name in TASK_PHASES and fail.get_name() == "UnmetDependency":
            return True  # the group task of our per-plugin tasks: each failure was reported already
        if not _ours(task.name):
            return False
        base, plugin = _split(task)
        if fail.get_name() == "UnmetDependency":
            if any(e.plugin == plugin and e.outcome == "failure" for e in self.progress.events):
                return True  # its own earlier step failed and was reported
            reason = f"not run: {' '.join(fail.message.split())} failed"
        else:
            reason = _failure_reason(fail)
            if getattr(fail, "traceback", None):
                self.tracebacks.append(f"{task.name}: " + "".join(fail.traceback))
        spent = self.progress.unreported_usage(plugin)
        self.progress.event(Event(plugin, TASK_PHASES[base], "failure", self._took(task), reason=reason, **spent))
        return True

    def fresh(self, task) -> bool:
        if not _ours(task.name):
            return False
        base, plugin = _split(task)
        phase, outcome = up_to_date_outcome(task, TASK_PHASES[base])
        self.progress.event(Event(plugin, phase, outcome), up_to_date=True)
        return True

    def finish(self) -> tuple[Summary, list[str]]:
        """The summary (console and log), then the tracebacks, redacted and logged; returns both."""
        summary = self.progress.finish()
        traces = [redact(trace, self.progress.secrets).rstrip() for trace in self.tracebacks]
        for text in traces:
            log_line(self.progress.log, text)
        return summary, traces


def reporter_class(make_progress: Callable[[list[str]], RunProgress]) -> type:
    """A doit ConsoleReporter subclass feeding RunProgress; `make_progress(plugins)` builds it.

    Our per-plugin tasks become event lines (see `Watcher`); other tasks keep doit's usual output. The
    traceback of a task that raised is printed and logged after the summary.
    """
    from doit.reporter import ConsoleReporter

    class ProgressReporter(ConsoleReporter):
        shows_progress = True  # skillbuild/run.py: this reporter prints the run's events itself

        def initialize(self, tasks, selected_tasks):
            super().initialize(tasks, selected_tasks)
            self.watcher = Watcher(make_progress(run_plugins(tasks, selected_tasks)).start())
            self.progress = self.watcher.progress
            self.summary: Summary | None = None

        def execute_task(self, task):
            if not self.watcher.started(task):
                super().execute_task(task)

        def add_success(self, task):
            if not self.watcher.succeeded(task):
                super().add_success(task)

        def add_failure(self, task, fail):
            if not self.watcher.failed(task, fail):
                super().add_failure(task, fail)

        def skip_uptodate(self, task):
            if not self.watcher.fresh(task):
                super().skip_uptodate(task)

        def complete_run(self):
            self.summary, traces = self.watcher.finish()
            for text in traces:
                self.write(text + "\n")
            super().complete_run()  # other tasks' failures and doit's own errors

    return ProgressReporter


class Recorder:
    """Any other doit reporter (`-r executed-only`, `-r json`, ...), unchanged, plus the run's log.

    Every call goes on to the wrapped reporter as doit made it; our per-plugin tasks also become event lines
    and a summary in the run's log (a RunProgress made with `echo=False`). Each reporter method is defined
    here, not looked up on the fly: under `-n N` doit's workers ask the reporter's class which calls exist.
    """

    def __init__(self, reporter: Any, progress: RunProgress):
        self.reporter, self.watcher = reporter, Watcher(progress)

    def _pass(self, method: str, *args: Any) -> None:
        call = getattr(self.reporter, method, None)
        if call is not None:
            call(*args)

    def initialize(self, tasks, selected_tasks):
        self.watcher.progress.start()
        self._pass("initialize", tasks, selected_tasks)

    def get_status(self, task):
        self._pass("get_status", task)

    def execute_task(self, task):
        self.watcher.started(task)
        self._pass("execute_task", task)

    def add_success(self, task):
        self.watcher.succeeded(task)
        self._pass("add_success", task)

    def add_failure(self, task, fail):
        self.watcher.failed(task, fail)
        self._pass("add_failure", task, fail)

    def skip_uptodate(self, task):
        self.watcher.fresh(task)
        self._pass("skip_uptodate", task)

    def skip_ignore(self, task):
        self._pass("skip_ignore", task)

    def cleanup_error(self, exception):
        self._pass("cleanup_error", exception)

    def runtime_error(self, msg):
        self._pass("runtime_error", msg)

    def teardown_task(self, task):
        self._pass("teardown_task", task)

    def complete_run(self):
        self.watcher.finish()
        self._pass("complete_run")


def run_plugins(tasks: dict[str, Any], selected: Iterable[str] | None) -> list[str]:
    """Plugins a doit run may touch: its selected per-plugin tasks' plugins, or the one a `restore` acts on."""
    plugins = _selected_plugins(tasks, selected)
    if "restore" in (selected or ()) and "restore" in tasks:
        plugins.append(_task_plugin(tasks["restore"]) or "restore")  # a restore is a run of one plugin
    return plugins


def _selected_plugins(tasks: Iterable[str], selected: Iterable[str] | None) -> list[str]:
    """Plugins this run may build: all of ours when a group (`skill`) is selected, else the named ones."""
    chosen = set(selected or ())
    names = [n for n in tasks if _ours(n) and ":" in n]
    if not chosen or chosen & set(BUILD_GROUPS):
        return sorted({n.split(":", 1)[1] for n in names})
    return sorted({n.split(":", 1)[1] for n in names if n in chosen})


def up_to_date_outcome(task: Any, phase: str) -> tuple[str, str]:
    """(phase, outcome) of a task doit found up to date: a kept or skipped plugin's task says so in its
    `meta` (tasks.py), so the summary counts it as `doit status` does, not as fresh."""
    meta = getattr(task, "meta", None) or {}
    return meta.get("phase", phase), meta.get("outcome_when_up_to_date", "fresh")


def _failure_reason(fail: Any) -> str:
    """An exception's last traceback line ("ValueError: ..."), or a TaskFailed message's first line."""
    trace = "".join(getattr(fail, "traceback", "") or "").strip()
    if trace:
        return trace.splitlines()[-1]
    message = (getattr(fail, "message", "") or "").strip()
    return message.splitlines()[0] if message else "failed"


def _ours(task_name: str) -> bool:
    """Per-plugin tasks (`skill:<p>`), and `restore`, which acts on the one plugin named by plugin=NAME."""
    if task_name in SINGLE_PLUGIN_TASKS:
        return True
    base, sep, plugin = task_name.partition(":")
    return bool(sep and plugin) and base in TASK_PHASES


def _task_plugin(task: Any) -> str | None:
    """The plugin a single-plugin task acts on: the Plugin among its action's arguments."""
    for action in getattr(task, "actions", None) or ():
        for arg in getattr(action, "args", None) or ():
            if hasattr(arg, "rel") and isinstance(getattr(arg, "key", None), str):
                return arg.key  # the plugin's identity everywhere: task names, audit rows, backups
    return None


def _split(task: Any) -> tuple[str, str]:
    """(basename, plugin) of one of our tasks."""
    if task.name in SINGLE_PLUGIN_TASKS:
        return task.name, _task_plugin(task) or task.name
    base, _, plugin = task.name.partition(":")
    return base, plugin
