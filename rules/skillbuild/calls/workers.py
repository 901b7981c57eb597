"""How many doit workers a build runs when the command line names none, and why.

A remote provider's build is paced by the throttle, and each worker has one call in flight, so one worker
leaves the quota mostly idle while it waits for an answer. Little's law gives the workers that keep the
throttle's pace: calls in flight = latency / interval between sends. The latency is the mean the audit DB
recorded for successful calls; before there is any, `DEFAULT_LATENCY_S` stands in for it.

Threads for a remote build, processes offline, by measurement (`bench/quota_sim.py --rpm 60 --scale 15
--plugins 60 --workers 30 [--par-type thread]`, README "Workers"): 30 process workers peaked at 1,428 MB PSS
(about 45 MB each: every forked worker makes its own SDK client and touches its own pages) and reached only
3.37x the quota minimum on 2 cores; 30 threads peaked at 119 MB and 1.56x. A remote worker waits on the
network almost all the time, so the interpreter lock costs nothing; the throttle (SQLite, a connection per
process and thread), the SDK client (one per process, `on_sent` per thread) and the audit DB are
thread-safe. The offline provider is CPU work: one process per core, which the lock would serialise.
doit swaps `sys.stdout` per action, which threads race on: run.py puts the streams back after the run.
"""
from __future__ import annotations

import math
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# Simulated seconds one Gemini call takes before the audit DB has recorded any: a generation of 8-14 KB
# takes 15-40 s on gemini-2.5-flash. Too high only costs idle workers; too low leaves the quota unused.
DEFAULT_LATENCY_S = 30.0
# Workers per call in flight: latency varies call to call and a worker spends time between calls (gates,
# writes, doit's dispatch), so exactly latency / interval workers fall behind the pace (measured 1.36x the
# quota minimum at 15 rpm, 1.40x at 60, before the throttle chained planned slots). More does not help:
# 2.0 instead of 1.5 gave the same 1.22x at 15 rpm (bench/quota_sim.py --repeat 3, 16 threads instead of 13,
# 10-11 calls in flight either way); the rest of the gap to the minimum is the fake server's repairs, the
# throttle's window guard and the last answer's latency. An idle thread costs about a megabyte.
HEADROOM = 1.5


@dataclass(frozen=True)
class Workers:
    count: int  # 1: doit's plain runner, no fork
    why: str
    par_type: str = "thread"  # doit's -P: "thread" or "process"

    def doit_options(self) -> dict:
        """DOIT_CONFIG entries: defaults of `doit run`'s options, which `-n`/`-P` on the command line override."""
        return {"num_process": self.count if self.count > 1 else 0, "par_type": self.par_type}


def explicit_count(argv: Sequence[str]) -> int | None:
    """The worker count given with `-n N`, `-nN`, `--process N` or `--process=N` (doit's option), else None."""
    for i, arg in enumerate(argv):
        value = None
        if arg in ("-n", "--process"):
            value = argv[i + 1] if i + 1 < len(argv) else None
        elif arg.startswith("--process="):
            value = arg.split("=", 1)[1]
        elif arg.startswith("-n") and arg[2:].isdigit():
            value = arg[2:]
        if value is not None and value.isdigit():
            return int(value)
    return None


# doit commands other than `run`, and skillbuild's tasks that build nothing: they run in one process, so their
# output keeps its order and nothing is forked for them.
DOIT_COMMANDS = {"list", "info", "clean", "forget", "ignore", "dumpdb", "strace", "tabcompletion", "reset-dep", "help",
                 "auto"}
NOT_BUILDS = DOIT_COMMANDS | {"status", "backup", "restore_offsite", "backups", "restore", "report", "check", "plan",
                              "quota", "lint", "routing", "batch", "prune"}


def builds(argv: Sequence[str]) -> bool:
    """Whether a command line may build plugins: it names no task (the default tasks are the plugins'), or a
    `skill`/`analyse` task, or no task or command that only reports."""
    words = [a for a in argv if not a.startswith("-") and "=" not in a]
    if any(w.split(":")[0] in ("skill", "analyse") for w in words):
        return True
    return not any(w in NOT_BUILDS for w in words)


def plain_run(argv: Sequence[str]) -> bool:
    """`doit` or `doit run` naming no task and without `-a`: it runs the default tasks, each plugin's.
    The options are read with doit's own parser (`-n 2`'s value is no task name)."""
    from doit.cmd_base import DodoTaskLoader, DoitCmdBase
    from doit.cmd_run import Run
    from doit.cmdparse import CmdOption, CmdParse, CmdParseError

    args = list(argv)
    if args and args[0] in DOIT_COMMANDS:
        return False
    if args and args[0] == "run":
        args = args[1:]
    # `doit run`'s options as its command assembles them (`-f`/`-d`: the dodo loader's), without making one
    options = (*DoitCmdBase.base_options, *DodoTaskLoader.cmd_options, *Run.cmd_options)
    try:
        params, words = CmdParse([CmdOption(opt) for opt in options]).parse(args)
    except CmdParseError:
        return False  # doit says what is wrong with the command line
    return not params.get("always") and not [w for w in words if "=" not in w]


def cores() -> int:
    """CPUs this process may run on (an affinity mask or a container's limit can be below the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def for_pace(interval_s: float, latency_s: float, max_workers: int) -> int:
    """Workers that keep one send every `interval_s` going while each call takes `latency_s` (real seconds):
    the calls in flight with HEADROOM, plus one."""
    needed = math.ceil(HEADROOM * latency_s / interval_s) + 1 if interval_s > 0 else max_workers
    return max(1, min(max_workers, needed))


def recorded_latency(audit_db) -> float | None:
    """Mean real seconds of a successful call in the audit DB, or None before any is recorded."""
    from skillbuild.store.audit import AuditDB

    audit = AuditDB.reader(audit_db)
    if audit is None:
        return None
    try:
        return audit.mean_latency()
    except sqlite3.Error:
        return None  # an older or foreign DB: the default stands in
    finally:
        audit.close()


def decide(settings, argv: Sequence[str] | None = None, *, latency_s: float | None = None,
           ncores: int | None = None) -> Workers:
    """The worker count of a `doit` run: `-n N` when given, the machine's cores for the offline provider, else
    enough to keep up with the throttle's pace at the recorded latency, at most `max_workers`."""
    given = explicit_count(sys.argv[1:] if argv is None else argv)
    if given is not None:
        return Workers(max(1, given), f"-n {given} on the command line", "process")
    if settings.provider == "offline":
        n = ncores or cores()
        return Workers(n, f"offline provider: one process per CPU core ({n})", "process")
    from skillbuild.calls.throttle import limits_from_settings

    try:
        lim = limits_from_settings(settings)
    except ValueError as exc:  # named again, and fatal, by the first call, `doit plan` and `doit quota`
        return Workers(1, f"pacing settings invalid: {exc}")
    # A preset's minimum gap (the seed's pacing) can be slower than the quota: it sets the pace then.
    interval = max(lim.interval(), (lim.min_gap + lim.jitter / 2) / lim.time_scale)
    measured = latency_s if latency_s is not None else recorded_latency(settings.audit_db)
    latency = measured if measured else DEFAULT_LATENCY_S / lim.time_scale
    n = for_pace(interval, latency, settings.max_workers)
    source = "recorded mean" if measured else "default before any is recorded"
    capped = " (max_workers)" if n == settings.max_workers else ""
    return Workers(n, f"{latency:.2f} s per call ({source}) / one send every {interval:.2f} s "
                      f"= {n} thread(s){capped}")
